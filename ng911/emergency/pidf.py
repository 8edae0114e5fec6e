"""PIDF-LO location objects by value (RFC 4119; RFC 5491 profile and shapes; RFC 5139 civic).

    <presence entity="pres:caller@example.net">           RFC 3863 PIDF
      <tuple id="t1"> <status> <gp:geopriv>                RFC 4119 (or dm:device / dm:person,
        <gp:location-info>                                  RFC 4479, with geopriv directly in)
          <gml:Point srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>38.9 -77.0</gml:pos></gml:Point>
          <ca:civicAddress><ca:country>US</ca:country><ca:A1>DC</ca:A1>…</ca:civicAddress>
        </gp:location-info>
        <gp:usage-rules/> <gp:method>GPS</gp:method> <gp:provided-by>…</gp:provided-by>
      </gp:geopriv> </status> <timestamp>2026-05-09T12:00:00Z</timestamp> </tuple>
    </presence>

`parse_pidf(data)` returns a `Location`: the presentity, and one `LocationInfo` per geopriv
found in a tuple, device or person (in document order), each with its shapes, civic addresses,
method, provided-by, timestamp, device id and usage rules. Shapes (RFC 5491 §5.2): Point,
Circle, Ellipse, ArcBand, Polygon, Sphere, Ellipsoid, Prism — centre/vertex coordinates and
measures (radius, axes, angles, height, each with its unit) are read; a shape of another name
is still recognised by name, and every shape keeps its XML as ``raw``.

A body that is not a well-formed PIDF document raises `PidfError` with a short reason. The
caller (`ng911.emergency.content`) notes it and carries on: the call is routed all the same
and the body forwarded unchanged. XML safety: a DOCTYPE (hence any ENTITY declaration, and
with it every external or expanding entity) is refused outright, the size and the number of
elements are bounded; the parser is expat driven directly, never a resolver.
Pure: no I/O.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable
from xml.parsers import expat

__all__ = [
    "MAX_ELEMENTS",
    "MAX_PIDF_BYTES",
    "NS",
    "Location",
    "LocationInfo",
    "Measure",
    "PidfError",
    "Shape",
    "parse_pidf",
    "parse_xml",
]

NS = {
    "pidf": "urn:ietf:params:xml:ns:pidf",
    "dm": "urn:ietf:params:xml:ns:pidf:data-model",
    "gp": "urn:ietf:params:xml:ns:pidf:geopriv10",
    "ca": "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr",
    "gml": "http://www.opengis.net/gml",
    "gs": "http://www.opengis.net/pidflo/1.0",
    "bp": "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy",
    "con": "urn:ietf:params:xml:ns:geopriv:conf",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
MAX_PIDF_BYTES = 256 * 1024  # a PIDF-LO is a few kB; a SIP message is at most 1 MiB anyway
MAX_ELEMENTS = 4096

_P = "{%s}" % NS["pidf"]
_DM = "{%s}" % NS["dm"]
_GP = "{%s}" % NS["gp"]
_CA = "{%s}" % NS["ca"]
_GML = "{%s}" % NS["gml"]
_GS = "{%s}" % NS["gs"]
_CON = "{%s}" % NS["con"]
_XML_LANG = "{%s}lang" % NS["xml"]

# RFC 5491 §5.2.*: the measures each shape carries (all gs: elements with a uom attribute).
_MEASURES = ("radius", "semiMajorAxis", "semiMinorAxis", "semiVerticalAxis", "orientation",
             "innerRadius", "outerRadius", "startAngle", "openingAngle", "height")
# Shapes with a centre (one gml:pos); Polygon and Prism have a ring of vertices instead.
_CENTRED = {"Point", "Circle", "Ellipse", "ArcBand", "Sphere", "Ellipsoid"}
KNOWN_SHAPES = frozenset(_CENTRED | {"Polygon", "Prism"})


class PidfError(ValueError):
    """A body that is not a usable PIDF-LO document; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- XML ---------------------------------------------------------------------------------------


def _qname(name: str) -> str:
    # expat with namespace_separator=" " gives "uri local"; ElementTree spells it "{uri}local".
    uri, sep, local = name.rpartition(" ")
    return f"{{{uri}}}{local}" if sep else name


def parse_xml(data: bytes, *, max_bytes: int = MAX_PIDF_BYTES, max_elements: int = MAX_ELEMENTS) -> ET.Element:
    """Parse an XML document into an ElementTree element, refusing any DOCTYPE (and so every
    entity declaration) and bounding size and element count. Raises `PidfError`."""
    return _parse(data, max_bytes, max_elements)[0]


_Spans = dict[ET.Element, tuple[int, int]]


def _parse(data: bytes, max_bytes: int, max_elements: int) -> tuple[ET.Element, _Spans, bytes]:
    """The root, each element's octet span in ``data`` (as stripped), and ``data``."""
    if len(data) > max_bytes:
        raise PidfError(f"document larger than {max_bytes} octets")
    data = data.lstrip(b" \t\r\n")  # some peers put a line end before the XML declaration
    if not data:
        raise PidfError("empty body")
    builder = ET.TreeBuilder()
    spans: _Spans = {}
    count = 0
    parser = expat.ParserCreate(namespace_separator=" ")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > max_elements:
            raise PidfError(f"more than {max_elements} elements")
        elem = builder.start(_qname(name), {_qname(k): v for k, v in attrs.items()})
        spans[elem] = (parser.CurrentByteIndex, -1)

    def end(name: str) -> None:
        elem = builder.end(_qname(name))
        begin = spans[elem][0]
        at = parser.CurrentByteIndex
        # "</name>" ends at the next ">"; an empty-element tag reports its own start here, and
        # its end is not findable without re-lexing attributes, so it gets no span.
        spans[elem] = (begin, data.find(b">", at) + 1 if at > begin else -1)

    def refuse_doctype(*_: object) -> None:
        raise PidfError("DOCTYPE not allowed")

    def refuse_entity(*_: object) -> None:
        raise PidfError("ENTITY declaration not allowed")

    def refuse_external(*_: object) -> int:
        raise PidfError("external entity not allowed")

    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_external
    try:
        parser.Parse(data, True)
    except PidfError:
        raise
    except expat.ExpatError as exc:
        message = expat.errors.messages.get(exc.code, "syntax error")
        raise PidfError(f"not well-formed XML ({message}, line {exc.lineno})") from None
    except (ValueError, LookupError):  # e.g. an encoding expat does not know
        raise PidfError("not well-formed XML") from None
    finally:
        # The handlers close over ``parser`` (parser → handler → cell → parser): a cycle per
        # call that only the cyclic GC would free, and full collections are off (runtime.py).
        parser = None
    return builder.close(), spans, data


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _ns(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def _text(elem: ET.Element | None) -> str | None:
    if elem is None:
        return None
    text = " ".join("".join(elem.itertext()).split())
    return text or None


# --- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measure:
    """A length or angle with its unit (``urn:ogc:def:uom:EPSG::9001`` metres,
    ``urn:ogc:def:uom:EPSG::9102`` degrees)."""

    value: float
    uom: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "uom": self.uom}


@dataclass(frozen=True)
class Shape:
    """One geodetic shape: its name (``Point``, ``Circle``, …), its CRS, its points — the
    centre for centred shapes, the vertices of the exterior ring for Polygon and Prism, each
    ``(lat, lon)`` or ``(lat, lon, alt)`` — its measures, and its XML as received."""

    kind: str
    srs: str | None
    points: tuple[tuple[float, ...], ...] = ()
    measures: dict[str, Measure] = field(default_factory=dict)
    raw: str = ""

    @property
    def known(self) -> bool:
        return self.kind in KNOWN_SHAPES

    @property
    def center(self) -> tuple[float, ...] | None:
        return self.points[0] if self.points and self.kind in _CENTRED else None

    @property
    def latitude(self) -> float | None:
        return self.center[0] if self.center else None

    @property
    def longitude(self) -> float | None:
        return self.center[1] if self.center else None

    @property
    def radius(self) -> Measure | None:
        return self.measures.get("radius")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "srs": self.srs,
            "points": [list(p) for p in self.points],
            "measures": {k: m.to_dict() for k, m in self.measures.items()},
            "raw": self.raw,
        }


@dataclass(frozen=True)
class LocationInfo:
    """What one ``gp:geopriv`` says, and where it sits: ``owner`` is ``tuple``, ``device`` or
    ``person`` (``presence`` for a geopriv elsewhere), ``owner_id`` that element's id."""

    owner: str
    owner_id: str | None = None
    shapes: tuple[Shape, ...] = ()
    civic: tuple[dict[str, str], ...] = ()
    method: str | None = None
    provided_by: str | None = None
    timestamp: str | None = None
    device_id: str | None = None
    usage_rules: dict[str, str] = field(default_factory=dict)
    confidence: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.shapes and not self.civic

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "owner_id": self.owner_id,
            "shapes": [s.to_dict() for s in self.shapes],
            "civic": [dict(c) for c in self.civic],
            "method": self.method,
            "provided_by": self.provided_by,
            "timestamp": self.timestamp,
            "device_id": self.device_id,
            "usage_rules": dict(self.usage_rules),
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class Location:
    """A parsed PIDF-LO document: its ``entity`` and every `LocationInfo` in it."""

    entity: str | None
    infos: tuple[LocationInfo, ...] = ()

    @property
    def shapes(self) -> tuple[Shape, ...]:
        return tuple(s for info in self.infos for s in info.shapes)

    @property
    def shape(self) -> Shape | None:
        """The first geodetic shape, if any."""
        shapes = self.shapes
        return shapes[0] if shapes else None

    @property
    def civic(self) -> dict[str, str] | None:
        """The first civic address, if any."""
        for info in self.infos:
            if info.civic:
                return info.civic[0]
        return None

    @property
    def method(self) -> str | None:
        return next((i.method for i in self.infos if i.method), None)

    @property
    def timestamp(self) -> str | None:
        return next((i.timestamp for i in self.infos if i.timestamp), None)

    @property
    def is_empty(self) -> bool:
        """True when no geopriv held a shape or a civic address."""
        return all(info.is_empty for info in self.infos)

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "infos": [i.to_dict() for i in self.infos]}


# --- parsing -----------------------------------------------------------------------------------


def parse_pidf(data: bytes) -> Location:
    """Parse a PIDF-LO body (``application/pidf+xml``). Raises `PidfError`."""
    root, spans, text = _parse(data, MAX_PIDF_BYTES, MAX_ELEMENTS)

    def raw(elem: ET.Element) -> str:
        """The element's XML as received; re-serialised when that cannot be cut out as UTF-8
        (an empty-element tag, a UTF-16 document)."""
        begin, end = spans.get(elem, (0, -1))
        chunk = text[begin:end] if end > begin else b""
        if chunk and b"\x00" not in chunk:
            return chunk.decode("utf-8", "replace")
        return ET.tostring(elem, encoding="unicode")

    if root.tag != _P + "presence":
        raise PidfError(f"not a PIDF document (root element {_local(root.tag)[:40]!r})")
    infos: list[LocationInfo] = []
    for child in root:
        if child.tag == _GP + "geopriv":
            infos.append(_info(child, "presence", None, None, None, raw))
            continue
        owner = {_P + "tuple": "tuple", _DM + "device": "device", _DM + "person": "person"}.get(child.tag)
        if owner is None:
            continue
        if owner == "tuple":
            timestamp = _text(child.find(_P + "timestamp"))
        else:
            timestamp = _text(child.find(_DM + "timestamp"))
        device_id = _text(child.find(_DM + "deviceID"))  # RFC 4479: a device's, or a tuple's link to one
        for geopriv in child.iter(_GP + "geopriv"):
            infos.append(_info(geopriv, owner, child.get("id"), timestamp, device_id, raw))
    return Location(root.get("entity"), tuple(infos))


def _info(geopriv: ET.Element, owner: str, owner_id: str | None, timestamp: str | None,
          device_id: str | None, raw: Callable[[ET.Element], str]) -> LocationInfo:
    shapes: list[Shape] = []
    civic: list[dict[str, str]] = []
    confidence = None
    for location_info in geopriv.findall(_GP + "location-info"):
        for obj in location_info:
            if obj.tag == _CA + "civicAddress":
                civic.append(_civic(obj))
            elif obj.tag == _CON + "confidence":
                confidence = _text(obj)
            elif _ns(obj.tag) in (NS["gml"], NS["gs"]):
                shapes.append(_shape(obj, raw(obj)))
    rules = geopriv.find(_GP + "usage-rules")
    usage = {_local(r.tag): _text(r) or "" for r in rules} if rules is not None else {}
    return LocationInfo(
        owner=owner,
        owner_id=owner_id,
        shapes=tuple(shapes),
        civic=tuple(civic),
        method=_text(geopriv.find(_GP + "method")),
        provided_by=_provided_by(geopriv.find(_GP + "provided-by")),
        timestamp=timestamp,
        device_id=device_id,
        usage_rules=usage,
        confidence=confidence,
    )


def _provided_by(elem: ET.Element | None) -> str | None:
    if elem is None:
        return None
    text = _text(elem)
    if text:
        return text
    children = [_local(c.tag) for c in elem]
    return " ".join(children) or None


def _civic(elem: ET.Element) -> dict[str, str]:
    """RFC 5139 (and RFC 6848 extension) elements by local name: country, A1–A6, PRD, POD,
    STS, HNO, HNS, LMK, LOC, FLR, NAM, PC, BLD, UNIT, ROOM, SEAT, PLC, PCN, POBOX, ADDCODE,
    RD, RDSEC, RDBR, RDSUBBR, PRM, POM … The first of a repeated element is kept."""
    out: dict[str, str] = {}
    lang = elem.get(_XML_LANG)
    if lang:
        out["xml:lang"] = lang
    for child in elem:
        name = _local(child.tag)
        value = _text(child)
        if value is not None and name not in out:
            out[name] = value
    return out


def _numbers(text: str | None, what: str) -> list[float]:
    if not text or not text.split():
        raise PidfError(f"empty {what}")
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise PidfError(f"bad number in {what}") from None
    if not all(math.isfinite(v) for v in values):
        raise PidfError(f"bad number in {what}")
    return values


def _dimension(srs: str | None, elem: ET.Element) -> int:
    dim = elem.get("srsDimension")
    if dim in ("2", "3"):
        return int(dim)
    return 3 if srs and srs.endswith("4979") else 2


def _point(values: list[float], srs: str | None, what: str) -> tuple[float, ...]:
    if len(values) not in (2, 3):
        raise PidfError(f"{what} needs 2 or 3 coordinates")
    if srs is None or srs.endswith(("4326", "4979")):
        lat, lon = values[0], values[1]
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise PidfError(f"{what} out of range")
    return tuple(values)


def _ring(polygon: ET.Element, srs: str | None) -> tuple[tuple[float, ...], ...]:
    ring = polygon.find(f"{_GML}exterior/{_GML}LinearRing")
    if ring is None:
        raise PidfError("Polygon without exterior LinearRing")
    pos_list = ring.find(_GML + "posList")
    if pos_list is not None:
        values = _numbers(pos_list.text, "gml:posList")
        dim = _dimension(srs, pos_list)
        if len(values) % dim:
            raise PidfError("gml:posList length is not a multiple of its dimension")
        points = [_point(values[i : i + dim], srs, "gml:posList") for i in range(0, len(values), dim)]
    else:
        points = [_point(_numbers(p.text, "gml:pos"), srs, "gml:pos") for p in ring.findall(_GML + "pos")]
    if len(points) < 4:
        raise PidfError("Polygon ring with fewer than 4 positions")
    return tuple(points)


def _shape(elem: ET.Element, raw: str) -> Shape:
    kind = _local(elem.tag)
    srs = elem.get("srsName")
    points: tuple[tuple[float, ...], ...] = ()
    if kind in _CENTRED:
        pos = elem.find(_GML + "pos")
        if pos is None:
            raise PidfError(f"{kind} without gml:pos")
        points = (_point(_numbers(pos.text, "gml:pos"), srs, "gml:pos"),)
    elif kind == "Polygon":
        points = _ring(elem, srs)
    elif kind == "Prism":
        polygon = elem.find(f"{_GS}base/{_GML}Polygon")
        if polygon is None:
            raise PidfError("Prism without base Polygon")
        points = _ring(polygon, srs or polygon.get("srsName"))
    measures: dict[str, Measure] = {}
    for name in _MEASURES:
        child = elem.find(_GS + name)
        if child is not None:
            value = _numbers(child.text, f"gs:{name}")
            if len(value) != 1:
                raise PidfError(f"gs:{name} is not one number")
            measures[name] = Measure(value[0], child.get("uom"))
    if kind == "Circle" or kind == "Sphere":
        if "radius" not in measures:
            raise PidfError(f"{kind} without gs:radius")
    return Shape(kind, srs, points, measures, raw)
