"""PIDF-LO by value: RFC 5491 shapes, RFC 5139 civic addresses, the RFC 4119/4479 wrappers, and
the documents a parser must refuse (DOCTYPE and entities, garbage, size)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ng911.emergency.pidf import MAX_ELEMENTS, MAX_PIDF_BYTES, Measure, PidfError, parse_pidf, parse_xml

HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"\n'
    ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:gml="http://www.opengis.net/gml"\n'
    ' xmlns:gs="http://www.opengis.net/pidflo/1.0" xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"\n'
    ' xmlns:con="urn:ietf:params:xml:ns:geopriv:conf"\n'
    ' xmlns:bp="urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy" entity="pres:alice@example.net">\n'
)
M = 'uom="urn:ogc:def:uom:EPSG::9001"'
DEG = 'uom="urn:ogc:def:uom:EPSG::9102"'
CRS2 = 'srsName="urn:ogc:def:crs:EPSG::4326"'
CRS3 = 'srsName="urn:ogc:def:crs:EPSG::4979"'


def doc(location: str, extra: str = "<gp:method>GPS</gp:method>") -> bytes:
    return (HEAD + '<tuple id="t1"><status><gp:geopriv><gp:location-info>' + location
            + "</gp:location-info><gp:usage-rules/>" + extra
            + "</gp:geopriv></status><timestamp>2026-05-09T12:00:00Z</timestamp></tuple></presence>").encode()


def one_shape(location: str):  # type: ignore[no-untyped-def]
    loc = parse_pidf(doc(location))
    (shape,) = loc.shapes
    return shape


# --- shapes (RFC 5491 §5.2) ------------------------------------------------------------------------


def test_point_2d_and_3d() -> None:
    p = one_shape(f"<gml:Point {CRS2}><gml:pos>-34.407 150.883</gml:pos></gml:Point>")
    assert (p.kind, p.srs, p.points, p.latitude, p.longitude, p.known) == (
        "Point", "urn:ogc:def:crs:EPSG::4326", ((-34.407, 150.883),), -34.407, 150.883, True)
    p = one_shape(f"<gml:Point {CRS3}><gml:pos>-34.407 150.883 24.8</gml:pos></gml:Point>")
    assert p.points == ((-34.407, 150.883, 24.8),) and p.radius is None


def test_circle() -> None:
    c = one_shape(f'<gs:Circle {CRS2}><gml:pos>42.5463 -73.2512</gml:pos><gs:radius {M}>850.24</gs:radius></gs:Circle>')
    assert c.kind == "Circle" and c.center == (42.5463, -73.2512)
    assert c.radius == Measure(850.24, "urn:ogc:def:uom:EPSG::9001")
    assert c.raw == (f'<gs:Circle {CRS2}><gml:pos>42.5463 -73.2512</gml:pos>'
                     f'<gs:radius {M}>850.24</gs:radius></gs:Circle>')  # as received


def test_ellipse_arcband_sphere_ellipsoid() -> None:
    e = one_shape(f"<gs:Ellipse {CRS2}><gml:pos>42.5463 -73.2512</gml:pos><gs:semiMajorAxis {M}>1275</gs:semiMajorAxis>"
                  f"<gs:semiMinorAxis {M}>670</gs:semiMinorAxis><gs:orientation {DEG}>43.2</gs:orientation></gs:Ellipse>")
    assert e.kind == "Ellipse" and {k: m.value for k, m in e.measures.items()} == {
        "semiMajorAxis": 1275.0, "semiMinorAxis": 670.0, "orientation": 43.2}
    a = one_shape(f"<gs:ArcBand {CRS2}><gml:pos>-43.5723 153.21760</gml:pos><gs:innerRadius {M}>3594</gs:innerRadius>"
                  f"<gs:outerRadius {M}>4148</gs:outerRadius><gs:startAngle {DEG}>20</gs:startAngle>"
                  f"<gs:openingAngle {DEG}>20</gs:openingAngle></gs:ArcBand>")
    assert a.kind == "ArcBand" and a.center == (-43.5723, 153.2176)
    assert sorted(a.measures) == ["innerRadius", "openingAngle", "outerRadius", "startAngle"]
    s = one_shape(f"<gs:Sphere {CRS3}><gml:pos>42.5463 -73.2512 26.3</gml:pos><gs:radius {M}>850.24</gs:radius></gs:Sphere>")
    assert s.center == (42.5463, -73.2512, 26.3) and s.radius is not None
    el = one_shape(f"<gs:Ellipsoid {CRS3}><gml:pos>42.5463 -73.2512 26.3</gml:pos>"
                   f"<gs:semiMajorAxis {M}>7.7156</gs:semiMajorAxis><gs:semiMinorAxis {M}>3.31</gs:semiMinorAxis>"
                   f"<gs:semiVerticalAxis {M}>28.7</gs:semiVerticalAxis><gs:orientation {DEG}>90</gs:orientation>"
                   "</gs:Ellipsoid>")
    assert el.measures["semiVerticalAxis"].value == 28.7


RING = "43.311 -73.422 43.111 -73.322 43.111 -73.222 43.311 -73.122 43.411 -73.222 43.311 -73.422"


def test_polygon_pos_list_and_pos() -> None:
    p = one_shape(f"<gml:Polygon {CRS2}><gml:exterior><gml:LinearRing><gml:posList>{RING}</gml:posList>"
                  "</gml:LinearRing></gml:exterior></gml:Polygon>")
    assert p.kind == "Polygon" and len(p.points) == 6 and p.points[0] == (43.311, -73.422) == p.points[-1]
    assert p.center is None and p.latitude is None
    pos = "".join(f"<gml:pos>{a} {b} 2.0</gml:pos>" for a, b in zip(RING.split()[::2], RING.split()[1::2]))
    p3 = one_shape(f"<gml:Polygon {CRS3}><gml:exterior><gml:LinearRing>{pos}</gml:LinearRing></gml:exterior></gml:Polygon>")
    assert len(p3.points) == 6 and p3.points[1] == (43.111, -73.322, 2.0)
    listed = one_shape(f'<gml:Polygon {CRS3}><gml:exterior><gml:LinearRing><gml:posList srsDimension="3">'
                       "1 2 3 4 5 6 7 8 9 1 2 3</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon>")
    assert listed.points == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7.0, 8.0, 9.0), (1.0, 2.0, 3.0))


def test_prism() -> None:
    p = one_shape(f"<gs:Prism {CRS3}><gs:base><gml:Polygon><gml:exterior><gml:LinearRing><gml:posList>"
                  "42.556844 -73.248157 36.6 42.656844 -73.248157 36.6 42.656844 -73.348157 36.6 "
                  "42.556844 -73.248157 36.6</gml:posList></gml:LinearRing></gml:exterior></gml:Polygon></gs:base>"
                  f"<gs:height {M}>2.4</gs:height></gs:Prism>")
    assert p.kind == "Prism" and len(p.points) == 4 and p.points[0] == (42.556844, -73.248157, 36.6)
    assert p.measures["height"] == Measure(2.4, "urn:ogc:def:uom:EPSG::9001")


def test_an_unknown_shape_is_recognised_by_name_with_its_xml() -> None:
    s = one_shape('<gml:LineString><gml:posList>1 2 3 4</gml:posList></gml:LineString>')
    assert (s.kind, s.known, s.points, s.raw) == (
        "LineString", False, (), "<gml:LineString><gml:posList>1 2 3 4</gml:posList></gml:LineString>")
    empty = one_shape(f"<gs:Circle {CRS2}/>".replace("<gs:Circle", "<gs:Unknown"))
    assert empty.kind == "Unknown" and "Unknown" in empty.raw


@pytest.mark.parametrize(("location", "reason"), [
    ("<gml:Point><gml:pos>north east</gml:pos></gml:Point>", "bad number in gml:pos"),
    ("<gml:Point><gml:pos>1 nan</gml:pos></gml:Point>", "bad number in gml:pos"),
    ("<gml:Point><gml:pos></gml:pos></gml:Point>", "empty gml:pos"),
    ("<gml:Point><gml:pos>1</gml:pos></gml:Point>", "gml:pos needs 2 or 3 coordinates"),
    ("<gml:Point><gml:pos>1 2 3 4</gml:pos></gml:Point>", "gml:pos needs 2 or 3 coordinates"),
    (f"<gml:Point {CRS2}><gml:pos>91 0</gml:pos></gml:Point>", "gml:pos out of range"),
    (f"<gml:Point {CRS2}><gml:pos>0 -180.5</gml:pos></gml:Point>", "gml:pos out of range"),
    ("<gml:Point/>", "Point without gml:pos"),
    ("<gs:Circle><gml:pos>1 2</gml:pos></gs:Circle>", "Circle without gs:radius"),
    (f"<gs:Circle><gml:pos>1 2</gml:pos><gs:radius {M}>ten</gs:radius></gs:Circle>", "bad number in gs:radius"),
    (f"<gs:Circle><gml:pos>1 2</gml:pos><gs:radius {M}>1 2</gs:radius></gs:Circle>", "gs:radius is not one number"),
    ("<gml:Polygon/>", "Polygon without exterior LinearRing"),
    ("<gml:Polygon><gml:exterior><gml:LinearRing><gml:posList>1 2 3</gml:posList></gml:LinearRing>"
     "</gml:exterior></gml:Polygon>", "not a multiple"),
    ("<gml:Polygon><gml:exterior><gml:LinearRing><gml:posList>1 2 3 4 1 2</gml:posList></gml:LinearRing>"
     "</gml:exterior></gml:Polygon>", "fewer than 4"),
    ("<gs:Prism/>", "Prism without base Polygon"),
])
def test_bad_shapes(location: str, reason: str) -> None:
    with pytest.raises(PidfError, match=reason):
        parse_pidf(doc(location))


# --- civic (RFC 5139) ------------------------------------------------------------------------------

CIVIC = """<ca:civicAddress xml:lang="en-AU">
  <ca:country>AU</ca:country><ca:A1>NSW</ca:A1><ca:A3>     Wollongong
  </ca:A3><ca:A4>North Wollongong</ca:A4><ca:RD>Flinders</ca:RD><ca:STS>Street</ca:STS>
  <ca:RDBR>Campbell Street</ca:RDBR><ca:LMK>Gilligan's Island</ca:LMK><ca:LOC>Corner</ca:LOC>
  <ca:NAM>Video Rental Store</ca:NAM><ca:PC>2500</ca:PC><ca:ROOM>Westerns and Classics</ca:ROOM>
  <ca:PLC>store</ca:PLC><ca:POBOX>Private Box 15</ca:POBOX><ca:HNO>123</ca:HNO><ca:HNS>A</ca:HNS>
  <ca:FLR>2</ca:FLR><ca:A2/><ca:HNO>999</ca:HNO>
</ca:civicAddress>"""


def test_civic_address() -> None:
    loc = parse_pidf(doc(CIVIC))
    assert loc.shape is None
    assert loc.civic == {
        "xml:lang": "en-AU", "country": "AU", "A1": "NSW", "A3": "Wollongong", "A4": "North Wollongong",
        "RD": "Flinders", "STS": "Street", "RDBR": "Campbell Street", "LMK": "Gilligan's Island",
        "LOC": "Corner", "NAM": "Video Rental Store", "PC": "2500", "ROOM": "Westerns and Classics",
        "PLC": "store", "POBOX": "Private Box 15", "HNO": "123", "HNS": "A", "FLR": "2",
    }  # empty elements dropped, the first of a repeated one kept, blanks collapsed


def test_civic_extension_elements_are_kept_by_name() -> None:
    loc = parse_pidf(doc('<ca:civicAddress xmlns:cae="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr:ext">'
                         "<ca:country>US</ca:country><cae:MP>Mile 7</cae:MP></ca:civicAddress>"))
    assert loc.civic == {"country": "US", "MP": "Mile 7"}


# --- the wrappers: tuples, devices, persons ---------------------------------------------------------


def test_geopriv_metadata() -> None:
    extra = ("<gp:method>Wiremap</gp:method><gp:provided-by><e:ProviderInfo xmlns:e='urn:x'>"
             "<e:Name>Telco</e:Name></e:ProviderInfo></gp:provided-by>")
    loc = parse_pidf(doc(f"<gml:Point {CRS2}><gml:pos>1 2</gml:pos></gml:Point>"
                         '<con:confidence pdf="normal">95</con:confidence>', extra))
    (info,) = loc.infos
    assert (info.method, info.provided_by, info.timestamp, info.confidence) == (
        "Wiremap", "Telco", "2026-05-09T12:00:00Z", "95")
    assert (loc.method, loc.timestamp, loc.entity) == ("Wiremap", "2026-05-09T12:00:00Z", "pres:alice@example.net")


def test_usage_rules() -> None:
    xml = doc(f"<gml:Point {CRS2}><gml:pos>1 2</gml:pos></gml:Point>").replace(
        b"<gp:usage-rules/>",
        b"<gp:usage-rules><bp:retransmission-allowed>false</bp:retransmission-allowed>"
        b"<bp:retention-expiry>2026-05-10T12:00:00Z</bp:retention-expiry></gp:usage-rules>")
    (info,) = parse_pidf(xml).infos
    assert info.usage_rules == {"retransmission-allowed": "false", "retention-expiry": "2026-05-10T12:00:00Z"}


def test_devices_persons_and_several_tuples_in_order() -> None:
    geo = f'<gp:geopriv><gp:location-info><gml:Point {CRS2}><gml:pos>%s</gml:pos></gml:Point></gp:location-info></gp:geopriv>'
    body = (HEAD
            + '<dm:device id="d1">' + geo % "1 1" + "<dm:deviceID>mac:9a514281aa3d</dm:deviceID>"
            + "<dm:timestamp>2026-01-01T00:00:00Z</dm:timestamp></dm:device>"
            + '<tuple id="t1"><status>' + geo % "2 2" + "</status><dm:deviceID>mac:1</dm:deviceID></tuple>"
            + '<dm:person id="p1">' + geo % "3 3" + "</dm:person>"
            + '<tuple id="t2"><status>' + geo % "4 4" + geo % "5 5" + "</status></tuple>"
            + "<note>ignored</note></presence>").encode()
    loc = parse_pidf(body)
    assert [(i.owner, i.owner_id, i.shapes[0].points[0]) for i in loc.infos] == [
        ("device", "d1", (1.0, 1.0)), ("tuple", "t1", (2.0, 2.0)), ("person", "p1", (3.0, 3.0)),
        ("tuple", "t2", (4.0, 4.0)), ("tuple", "t2", (5.0, 5.0))]
    assert loc.infos[0].device_id == "mac:9a514281aa3d" and loc.infos[0].timestamp == "2026-01-01T00:00:00Z"
    assert loc.infos[1].device_id == "mac:1" and loc.infos[2].device_id is None
    assert loc.shape is loc.infos[0].shapes[0]
    assert len(loc.shapes) == 5 and not loc.is_empty


def test_geodetic_and_civic_together_and_to_dict() -> None:
    loc = parse_pidf(doc(f"<gml:Point {CRS2}><gml:pos>1 2</gml:pos></gml:Point><ca:civicAddress>"
                         "<ca:country>US</ca:country></ca:civicAddress>"))
    assert loc.shape is not None and loc.civic == {"country": "US"}
    stored = json.loads(json.dumps(loc.to_dict()))
    info = stored["infos"][0]
    assert info["shapes"][0]["points"] == [[1.0, 2.0]] and info["civic"] == [{"country": "US"}]
    assert info["owner"] == "tuple" and info["method"] == "GPS" and stored["entity"] == "pres:alice@example.net"


def test_empty_documents_are_not_errors() -> None:
    loc = parse_pidf(b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"/>')
    assert loc.infos == () and loc.is_empty and loc.shape is None and loc.civic is None and loc.method is None
    loc = parse_pidf(doc(""))
    assert len(loc.infos) == 1 and loc.is_empty


def test_encodings_and_leading_blank_lines() -> None:
    latin = ('\r\n<?xml version="1.0" encoding="ISO-8859-1"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
             'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr">'
             '<tuple id="x"><status><gp:geopriv><gp:location-info><ca:civicAddress><ca:A3>Montréal</ca:A3>'
             "</ca:civicAddress></gp:location-info></gp:geopriv></status></tuple></presence>").encode("iso-8859-1")
    assert parse_pidf(latin).civic == {"A3": "Montréal"}
    utf16 = doc(f"<gml:Point {CRS2}><gml:pos>1 2</gml:pos></gml:Point>").decode().replace(
        'encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    shape = parse_pidf(utf16).shape
    assert shape is not None and shape.points == ((1.0, 2.0),) and "pos>1 2</" in shape.raw  # re-serialised


# --- what must be refused --------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "reason"), [
    (b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     b'<presence xmlns="urn:ietf:params:xml:ns:pidf">&b;</presence>', "DOCTYPE not allowed"),
    (b'<!DOCTYPE presence SYSTEM "file:///etc/passwd"><presence xmlns="urn:ietf:params:xml:ns:pidf"/>',
     "DOCTYPE not allowed"),
    (b'<!DOCTYPE presence [<!ENTITY x SYSTEM "http://evil.example/x">]><presence>&x;</presence>',
     "DOCTYPE not allowed"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf">&x;</presence>', "undefined entity"),
    (b"", "empty body"),
    (b"   \r\n", "empty body"),
    (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n", "not well-formed XML"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple></presence>', "mismatched tag"),
    (b'<presence xmlns="urn:ietf:params:xml:ns:pidf">', "no element found"),
    (b"<presence/>", "not a PIDF document"),
    (b'<x:presence xmlns:x="urn:ietf:params:xml:ns:cpim-pidf"/>', "not a PIDF document"),
    (b'<?xml version="1.0" encoding="x-no-such"?><presence/>', "not well-formed XML"),
    (b"\xff\xfe\x00garbage", "not well-formed XML"),
])
def test_refused(data: bytes, reason: str) -> None:
    with pytest.raises(PidfError, match=reason):
        parse_pidf(data)


def test_size_and_element_bounds() -> None:
    with pytest.raises(PidfError, match="larger than"):
        parse_pidf(b"<presence>" + b" " * MAX_PIDF_BYTES + b"</presence>")
    many = b'<presence xmlns="urn:ietf:params:xml:ns:pidf">' + b"<note/>" * MAX_ELEMENTS + b"</presence>"
    with pytest.raises(PidfError, match="more than"):
        parse_pidf(many)
    assert parse_xml(b"<a><b/></a>").tag == "a"


def test_pidf_error_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError) as info:
        parse_pidf(b"<")
    assert isinstance(info.value, PidfError) and info.value.reason.startswith("not well-formed XML")


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([
        "<presence xmlns='urn:ietf:params:xml:ns:pidf'>", "</presence>", "<tuple id='a'>", "</tuple>",
        "<gp:geopriv xmlns:gp='urn:ietf:params:xml:ns:pidf:geopriv10'>", "</gp:geopriv>", "<gp:location-info>",
        "</gp:location-info>", "<gml:Point xmlns:gml='http://www.opengis.net/gml'>", "</gml:Point>", "<gml:pos>",
        "</gml:pos>", "1 2", "-91 x", "<gs:Circle xmlns:gs='http://www.opengis.net/pidflo/1.0'>", "</gs:Circle>",
        "<gs:radius>", "</gs:radius>", "&amp;", "&x;", "<![CDATA[<]]>", "<!-- c -->",
    ]), max_size=30).map(lambda parts: "".join(parts).encode()),
))
def test_only_pidf_errors_escape(data: bytes) -> None:
    try:
        loc = parse_pidf(data)
    except PidfError as exc:
        assert exc.reason
    else:
        json.dumps(loc.to_dict())
