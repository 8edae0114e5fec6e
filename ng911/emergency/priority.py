"""Resource-Priority values (RFC 4412 §3.1; the ``esnet`` namespace of RFC 7135).

    Resource-Priority: esnet.1
    Resource-Priority: esnet.0, wps.2

A value is ``namespace.priority``, both case-insensitive tokens of at most 32 characters. Each
namespace orders its own priorities (RFC 4412 §9, the IANA registry); namespaces are not
comparable with each other, so `ordered` ranks namespaces by local preference — ``esnet``
first in an emergency service — and priorities within one by the namespace's registered order.
Values of namespaces we do not know are kept (and forwarded) but rank below every known one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ng911.sip.headers import split_values

__all__ = [
    "DEFAULT_NAMESPACE_ORDER",
    "NAMESPACES",
    "PriorityError",
    "ResourcePriority",
    "esnet_level",
    "highest",
    "ordered",
    "parse_resource_priority",
    "parse_resource_priorities",
]

# Registered priority values, lowest first (RFC 4412 §12.6; RFC 7135 §2 for esnet).
NAMESPACES: dict[str, tuple[str, ...]] = {
    "esnet": ("0", "1", "2", "3", "4"),
    "dsn": ("routine", "priority", "immediate", "flash", "flash-override"),
    "drsn": ("routine", "priority", "immediate", "flash", "flash-override", "flash-override-override"),
    "q735": ("4", "3", "2", "1", "0"),
    "ets": ("4", "3", "2", "1", "0"),
    "wps": ("4", "3", "2", "1", "0"),
}
DEFAULT_NAMESPACE_ORDER: tuple[str, ...] = ("esnet", "wps", "ets", "drsn", "dsn", "q735")
# RFC 4412 §3.1: namespace and r-priority are 1*32 of these characters.
_PART = r"[A-Za-z0-9\-!%*_+`'~]{1,32}"
_VALUE = re.compile(rf"[ \t]*({_PART})\.({_PART})[ \t]*\Z")


class PriorityError(ValueError):
    """A Resource-Priority value that is not ``namespace.priority``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ResourcePriority:
    """One r-value, namespace and priority lower-cased."""

    namespace: str
    priority: str

    @property
    def levels(self) -> tuple[str, ...] | None:
        """The namespace's priorities lowest first, or None for a namespace we do not know."""
        return NAMESPACES.get(self.namespace)

    @property
    def rank(self) -> int | None:
        """0 for the namespace's lowest priority, up to len(levels) - 1 for its highest; None
        when the namespace or the value is unknown."""
        levels = self.levels
        if levels is None or self.priority not in levels:
            return None
        return levels.index(self.priority)

    @property
    def known(self) -> bool:
        return self.rank is not None

    def __str__(self) -> str:
        return f"{self.namespace}.{self.priority}"

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "priority": self.priority, "rank": self.rank}


def parse_resource_priority(value: str) -> ResourcePriority:
    """Parse one r-value; raise `PriorityError` when it is not ``namespace.priority``."""
    m = _VALUE.match(value)
    if m is None:
        raise PriorityError("Bad Resource-Priority value")
    return ResourcePriority(m.group(1).lower(), m.group(2).lower())


def parse_resource_priorities(values: Iterable[str]) -> tuple[tuple[ResourcePriority, ...], tuple[str, ...]]:
    """Every r-value of the header lines ``values``: (the good ones in order, the bad ones as
    written). Duplicates are dropped (RFC 4412 §3.1 forbids repeating a namespace.priority)."""
    good: list[ResourcePriority] = []
    bad: list[str] = []
    for line in values:
        for element in split_values(line):
            if not element:
                continue
            try:
                rp = parse_resource_priority(element)
            except PriorityError:
                bad.append(element)
                continue
            if rp not in good:
                good.append(rp)
    return tuple(good), tuple(bad)


def ordered(
    values: Iterable[ResourcePriority], namespace_order: Sequence[str] = DEFAULT_NAMESPACE_ORDER
) -> list[ResourcePriority]:
    """Highest first: namespaces in ``namespace_order``, then other known namespaces by name,
    then unknown namespaces or values in their original order; within a namespace, by rank."""
    preference = {ns: i for i, ns in enumerate(namespace_order)}

    def key(item: tuple[int, ResourcePriority]) -> tuple[int, int, str, int, int]:
        pos, rp = item
        rank = rp.rank
        if rank is None:
            return (2, 0, "", 0, pos)
        if rp.namespace in preference:
            return (0, preference[rp.namespace], "", -rank, pos)
        return (1, 0, rp.namespace, -rank, pos)

    return [rp for _, rp in sorted(enumerate(values), key=key)]


def highest(
    values: Iterable[ResourcePriority], namespace_order: Sequence[str] = DEFAULT_NAMESPACE_ORDER
) -> ResourcePriority | None:
    """The value `ordered` puts first, if it is a known one; else None."""
    best = ordered(values, namespace_order)
    return best[0] if best and best[0].known else None


def esnet_level(values: Iterable[ResourcePriority]) -> int | None:
    """The highest ``esnet`` priority present (0–4), or None: what queueing looks at."""
    ranks = [rp.rank for rp in values if rp.namespace == "esnet" and rp.rank is not None]
    return max(ranks) if ranks else None
