"""History-Info (RFC 7044): reading entries and appending ours when the call is retargeted."""
from __future__ import annotations

import pytest

from ng911.emergency.history import append_history, parse_history_info, simple_reason
from ng911.sip.headers import parse_name_addr

UPSTREAM = ["<urn:service:sos>;index=1", "<sip:psap@psap.example.net>;index=1.1;mp=1"]


def test_parse_entries() -> None:
    entries = parse_history_info([
        "<sip:UserA@ims.example.com?Reason=SIP%3Bcause%3D302%3Btext%3D%22Moved%22&Privacy=history>;index=1.1;rc=1, "
        "<urn:service:sos>;index=1",
        "<sip:x@y>;index=bad", "junk",
    ])
    a, b, c, d = entries
    assert (a.target, a.index, a.retargeted_from, a.reason) == (
        "sip:UserA@ims.example.com", "1.1", "1", 'SIP;cause=302;text="Moved"')
    assert (b.target, b.index, b.reason, b.retargeted_from, b.error) == ("urn:service:sos", "1", None, None, None)
    assert c.error == "missing or bad index" and c.index is None
    assert d.error == "not of the form <URI>"
    assert a.to_dict() == {"uri": "sip:UserA@ims.example.com", "index": "1.1", "reason": 'SIP;cause=302;text="Moved"',
                           "params": {"rc": "1"}}
    assert d.to_dict()["raw"] == "junk"


def test_first_routing_is_a_child_of_the_incoming_target() -> None:
    assert append_history(UPSTREAM, "sip:ap1@10.0.0.7") == UPSTREAM + ["<sip:ap1@10.0.0.7>;index=1.1.1;mp=1.1"]
    assert append_history([], "sip:ap1@10.0.0.7") == ["<sip:ap1@10.0.0.7>;index=1"]
    assert append_history(["<urn:service:sos>;index=1"], "sip:ap1@h", mapping="rc") == [
        "<urn:service:sos>;index=1", "<sip:ap1@h>;index=1.1;rc=1"]


def test_hunting_marks_the_failed_target_and_adds_a_sibling() -> None:
    one = append_history(UPSTREAM, "sip:ap1@10.0.0.7")
    two = append_history(one, "sip:ap2@10.0.0.8", 408)
    assert two == UPSTREAM + ["<sip:ap1@10.0.0.7?Reason=SIP%3Bcause%3D408>;index=1.1.1;mp=1.1",
                              "<sip:ap2@10.0.0.8>;index=1.1.2;mp=1.1"]
    three = append_history(two, "sip:ap3@10.0.0.9", 'SIP ; cause=480 ; text="Temporarily Unavailable"')
    assert three[-2] == ("<sip:ap2@10.0.0.8?Reason=SIP%3Bcause%3D480%3Btext%3D%22Temporarily%20Unavailable%22>"
                         ";index=1.1.2;mp=1.1")
    assert three[-1] == "<sip:ap3@10.0.0.9>;index=1.1.3;mp=1.1"
    assert three[:3] == two[:3]  # earlier entries unchanged
    # what the stack parses back (RFC 3261 URI headers) is what we wrote
    assert parse_name_addr(three[-2]).uri.headers == (
        ("Reason", "SIP%3Bcause%3D480%3Btext%3D%22Temporarily%20Unavailable%22"),)
    assert parse_history_info(three)[-2].reason == 'SIP;cause=480;text="Temporarily Unavailable"'


def test_reason_goes_only_where_it_is_safe() -> None:
    # not simple: left out, but the entry is still a sibling (the target was given up)
    out = append_history(UPSTREAM + ["<sip:ap1@h>;index=1.1.1;mp=1.1"], "sip:ap2@h", "something odd")
    assert out[2] == "<sip:ap1@h>;index=1.1.1;mp=1.1" and out[3] == "<sip:ap2@h>;index=1.1.2;mp=1.1"
    # a URI with headers already gets &Reason; one with a Reason keeps its own
    out = append_history(["<sip:a@h?Privacy=history>;index=1"], "sip:b@h", 486)
    assert out[0] == "<sip:a@h?Privacy=history&Reason=SIP%3Bcause%3D486>;index=1"
    out = append_history(["<sip:a@h?Reason=SIP%3Bcause%3D302>;index=1"], "sip:b@h", 486)
    assert out[0] == "<sip:a@h?Reason=SIP%3Bcause%3D302>;index=1"
    # a URN or tel: URI has no header part: no Reason
    out = append_history(["<urn:service:sos>;index=1"], "sip:b@h", 408)
    assert out == ["<urn:service:sos>;index=1", "<sip:b@h>;index=1.1;mp=1"]  # top level: a child


@pytest.mark.parametrize(("reason", "simple"), [
    (408, "SIP;cause=408"), ("486", "SIP;cause=486"), (99, None), ("700", None),
    ("SIP;cause=503", "SIP;cause=503"), ('Q.850 ; cause = 16 ; text="Normal call clearing"',
                                         'Q.850;cause=16;text="Normal call clearing"'),
    ("SIP;cause=408;text=\"a\\\"b\"", None), ("SIP;text=\"x\"", None), ("SIP;cause=408;foo=1", None),
    ("SIP;cause=408\r\nVia: x", None), ("", None), (None, None), ("²", None), (" 480 ", "SIP;cause=480"),
])
def test_simple_reason(reason: object, simple: str | None) -> None:
    assert simple_reason(reason) == simple  # type: ignore[arg-type]


def test_parent_index_override_and_gaps() -> None:
    existing = UPSTREAM + ["<sip:ap1@h>;index=1.1.1;mp=1.1", "<sip:ap2@h>;index=1.1.5;mp=1.1"]
    assert append_history(existing, "sip:ap3@h", parent_index="1.1")[-1] == "<sip:ap3@h>;index=1.1.6;mp=1.1"
    assert append_history(existing, "sip:ap3@h")[-1] == "<sip:ap3@h>;index=1.1.5.1;mp=1.1.5"


def test_entries_without_index() -> None:
    assert append_history(["<sip:a@h>"], "sip:b@h") == ["<sip:a@h>", "<sip:b@h>;index=1"]
    assert append_history(["<sip:a@h>;index=1", "junk"], "sip:b@h")[-1] == "<sip:b@h>;index=1.1;mp=1"


def test_bad_arguments() -> None:
    for target in ("not a uri", "urn:x>y", 'urn:"x"'):
        with pytest.raises(ValueError, match="bad History-Info target"):
            append_history([], target)
    with pytest.raises(ValueError, match="bad History-Info index"):
        append_history([], "sip:a@h", parent_index="1..2")
    with pytest.raises(ValueError, match="mapping"):
        append_history([], "sip:a@h", mapping="np")


def test_endless_hunting_keeps_the_header_bounded() -> None:
    values = append_history(UPSTREAM, "sip:ap0@h", max_entries=10)
    for n in range(1, 100):
        values = append_history(values, f"sip:ap{n}@h", 408, max_entries=10)
    assert len(values) == 10
    assert values[:2] == UPSTREAM  # the ancestors of the current entry stay
    assert values[-1] == "<sip:ap99@h>;index=1.1.100;mp=1.1"
    assert [e.index for e in parse_history_info(values)][2:] == [f"1.1.{n}" for n in range(93, 101)]
    # the same with the parent named: every attempt is a sibling whatever the reasons
    values = list(UPSTREAM)
    for n in range(5):
        values = append_history(values, f"sip:ap{n}@h", 408 if n else None, parent_index="1.1")
    assert [e.index for e in parse_history_info(values)] == ["1", "1.1", "1.1.1", "1.1.2", "1.1.3", "1.1.4", "1.1.5"]
