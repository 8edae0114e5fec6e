"""ng911.logs: JSON lines with bound call fields; Twisted's logger lands in the same stream."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from twisted.logger import Logger

from ng911.logs import bind, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sip_level = logging.getLogger("ng911.sip").level
    try:
        yield
    finally:
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
        root.setLevel(level)
        logging.getLogger("ng911.sip").setLevel(sip_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_bound_fields_appear_on_every_json_line(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("info", "json", out, bridge_twisted=False)
    log = bind(logging.getLogger("ng911.call"), call_id="a84b4c76e66710@pc33", nena_call_id="urn:emergency:uid:callid:1")
    log.info("routed to %s", "ap1", queue="main")
    log.warning("no answer", attempt=2)
    log.debug("not shown")
    first, second = lines(out)
    assert first["level"] == "info" and first["logger"] == "ng911.call" and first["msg"] == "routed to ap1"
    assert str(first["ts"]).endswith("Z") and "T" in str(first["ts"])
    for line in (first, second):
        assert line["call_id"] == "a84b4c76e66710@pc33"
        assert line["nena_call_id"] == "urn:emergency:uid:callid:1"
    assert first["queue"] == "main" and "queue" not in second
    assert second["attempt"] == 2 and second["level"] == "warning"


def test_one_record_is_one_line_even_with_newlines_and_exceptions(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("debug", "json", out, bridge_twisted=False)
    log = bind("ng911.sip.stack", call_id="c1")
    log.debug("send:\nINVITE sip:ap1@127.0.0.1 SIP/2.0\r\nVia: x\r\n")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler failed", extra={"msg": "collides"})
    a, b = lines(out)
    assert a["msg"].startswith("send:\nINVITE")  # type: ignore[union-attr]
    assert b["level"] == "error" and "RuntimeError: boom" in b["exc"]  # type: ignore[operator]
    assert b["msg"] == "handler failed" and b["msg_"] == "collides"


def test_bind_nests_and_replaces(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("info", "json", out, bridge_twisted=False)
    call = bind("ng911.call", call_id="c1", nena_call_id="n1")
    leg = bind(call, leg="psap", call_id="c1b")
    leg.info("x")
    (line,) = lines(out)
    assert (line["call_id"], line["nena_call_id"], line["leg"]) == ("c1b", "n1", "psap")
    assert call.fields == {"call_id": "c1", "nena_call_id": "n1"}


def test_text_format_is_one_readable_line(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("info", "text", out, bridge_twisted=False)
    bind("ng911.call", call_id="c 1").info("answered by %s", "ap2", seconds=3.5)
    text = out.getvalue().strip()
    assert " INFO    ng911.call answered by ap2 " in text
    assert text.endswith('call_id="c 1" seconds=3.5')


def test_setting_up_again_replaces_our_handler_only(restore_logging: None) -> None:
    root = logging.getLogger()
    others = [h for h in root.handlers]
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "json", first, bridge_twisted=False)
    setup_logging("info", "json", second, levels={"ng911.sip": "debug"}, bridge_twisted=False)
    logging.getLogger("ng911.x").info("hello")
    assert first.getvalue() == "" and lines(second)[0]["msg"] == "hello"
    assert [h for h in root.handlers if h in others] == others
    assert logging.getLogger("ng911.sip").level == logging.DEBUG
    with pytest.raises(ValueError):
        setup_logging("loud", "json", io.StringIO(), bridge_twisted=False)
    with pytest.raises(ValueError):
        setup_logging("info", "xml", io.StringIO(), bridge_twisted=False)


def test_twisted_logger_events_reach_the_same_json_stream(restore_logging: None) -> None:
    out = io.StringIO()
    setup_logging("info", "json", out)
    Logger(namespace="ng911.test.bridge").info("UDP listening on {host}:{port}", host="127.0.0.1", port=5060)
    Logger(namespace="ng911.test.bridge").debug("below the level {x}", x=1)
    mine = [line for line in lines(out) if line["logger"] == "ng911.test.bridge"]
    assert len(mine) == 1
    assert mine[0]["msg"] == "UDP listening on 127.0.0.1:5060"
    assert (mine[0]["host"], mine[0]["port"], mine[0]["level"]) == ("127.0.0.1", 5060, "info")
    Logger(namespace="ng911.test.bridge").failure("it broke {what}", what="here", failure=_failure())
    (broken,) = [line for line in lines(out) if line["logger"] == "ng911.test.bridge" and line["level"] == "critical"]
    assert broken["what"] == "here" and "ZeroDivisionError" in broken["exc"]  # type: ignore[operator]


def _failure():  # type: ignore[no-untyped-def]
    from twisted.python.failure import Failure

    try:
        1 / 0
    except ZeroDivisionError:
        return Failure()
