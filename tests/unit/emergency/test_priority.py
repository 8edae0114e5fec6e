"""Resource-Priority (RFC 4412) and the esnet namespace (RFC 7135)."""
from __future__ import annotations

import pytest

from ng911.emergency.priority import (
    PriorityError,
    ResourcePriority,
    esnet_level,
    highest,
    ordered,
    parse_resource_priorities,
    parse_resource_priority,
)


@pytest.mark.parametrize(("value", "namespace", "priority", "rank"), [
    ("esnet.0", "esnet", "0", 0),
    ("esnet.4", "esnet", "4", 4),
    (" ESNET.2 ", "esnet", "2", 2),
    ("esnet.5", "esnet", "5", None),
    ("wps.0", "wps", "0", 4),          # wps/ets/q735: 0 is the highest
    ("ets.4", "ets", "4", 0),
    ("dsn.flash-override", "dsn", "flash-override", 4),
    ("DRSN.Routine", "drsn", "routine", 0),
    ("mcpttp.15", "mcpttp", "15", None),  # a namespace we do not rank: kept all the same
])
def test_parse(value: str, namespace: str, priority: str, rank: int | None) -> None:
    rp = parse_resource_priority(value)
    assert (rp.namespace, rp.priority, rp.rank, rp.known) == (namespace, priority, rank, rank is not None)
    assert str(rp) == f"{namespace}.{priority}" and rp.to_dict()["rank"] == rank


@pytest.mark.parametrize("value", ["test_incorrect", "esnet", ".1", "esnet.", "es net.1", "esnet.1.2x;",
                                   "a" * 33 + ".1", "esnet." + "1" * 33, ""])
def test_bad_values(value: str) -> None:
    with pytest.raises(PriorityError, match="Bad Resource-Priority value"):
        parse_resource_priority(value)


def test_parse_lines_keeps_order_drops_repeats_and_collects_bad_ones() -> None:
    good, bad = parse_resource_priorities(["esnet.1, wps.2", "Esnet.1", "bogus", "dsn.flash,,"])
    assert [str(r) for r in good] == ["esnet.1", "wps.2", "dsn.flash"]
    assert bad == ("bogus",)
    assert parse_resource_priorities([]) == ((), ())


def test_ordering() -> None:
    values = [ResourcePriority(*v.split(".")) for v in
              ["dsn.routine", "x.1", "esnet.1", "wps.3", "esnet.4", "esnet.9", "zz.a", "abc.b", "wps.0"]]
    assert [str(r) for r in ordered(values)] == [
        "esnet.4", "esnet.1", "wps.0", "wps.3", "dsn.routine", "x.1", "esnet.9", "zz.a", "abc.b"]
    assert [str(r) for r in ordered(values, ["wps"])][:4] == ["wps.0", "wps.3", "dsn.routine", "esnet.4"]
    assert str(highest(values)) == "esnet.4"
    assert highest([ResourcePriority("x", "1")]) is None and highest([]) is None
    assert esnet_level(values) == 4 and esnet_level([ResourcePriority("wps", "0")]) is None
