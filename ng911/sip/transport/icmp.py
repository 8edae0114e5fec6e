"""ICMP errors for an unconnected UDP socket: Linux ``IP_RECVERR`` and the socket error queue.

RFC 3261 §18.4: the transport layer SHOULD watch for ICMP errors; host, network, port or
protocol unreachable and parameter problem errors SHOULD be reported to the transport user as a
failure to send; source quench and TTL exceeded SHOULD be ignored. A dead position (its process
killed, its socket closed) answers the next datagram with an ICMP port unreachable within one
round trip: the earliest sign of its death a UDP peer gives.

Linux drops ICMP errors for an unconnected UDP socket unless ``IP_RECVERR`` (``IPV6_RECVERR``)
is set. With it, every error is queued on the socket: ``recvmsg(MSG_ERRQUEUE)`` returns the
original datagram's payload, its destination in ``msg_name``, and one control message holding a
``struct sock_extended_err``::

    struct sock_extended_err {
        __u32 ee_errno;   /* ECONNREFUSED for a port unreachable, ... */
        __u8  ee_origin;  /* SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_LOCAL, ... */
        __u8  ee_type;    /* ICMP type */
        __u8  ee_code;    /* ICMP code */
        __u8  ee_pad;
        __u32 ee_info;    /* e.g. the MTU of a "fragmentation needed" */
        __u32 ee_data;
    };                    /* followed by the offender: the sockaddr of the ICMP's sender */

The kernel also sets the socket's pending error (``SO_ERROR``): the next ``recvfrom`` or
``sendto`` on the socket, to any address, fails once with that errno. The Twisted shell
(:mod:`.udp`) deals with that; this module is the pure part — constants, parsing, the §18.4
classification, and draining a socket's queue — with no Twisted import.
"""
from __future__ import annotations

import errno
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ExtendedError",
    "IcmpError",
    "drain_error_queue",
    "enable_recverr",
    "parse_extended_err",
    "parse_sockaddr",
    "recverr_supported",
]

# Linux values (include/uapi/linux/in.h, in6.h, errqueue.h, socket.h); Python's socket module
# has some of them only on some versions.
SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)

SO_EE_ORIGIN_NONE = 0
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3

_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err, native byte order (16 octets)

#: errnos a pending ICMP error surfaces as on the next send/receive of an unconnected socket
ASYNC_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
    errno.ENONET if hasattr(errno, "ENONET") else errno.EHOSTUNREACH,
    errno.ENOPROTOOPT, errno.EPROTO, errno.EMSGSIZE, errno.EOPNOTSUPP,
})

_ICMP_NAMES = {
    (3, 0): "network unreachable", (3, 1): "host unreachable", (3, 2): "protocol unreachable",
    (3, 3): "port unreachable", (3, 4): "fragmentation needed", (3, 9): "network prohibited",
    (3, 10): "host prohibited", (3, 13): "administratively prohibited",
    (11, 0): "TTL exceeded", (12, 0): "parameter problem",
}
_ICMP6_NAMES = {
    (1, 0): "no route", (1, 1): "administratively prohibited", (1, 3): "address unreachable",
    (1, 4): "port unreachable", (2, 0): "packet too big", (3, 0): "hop limit exceeded",
    (4, 0): "parameter problem",
}


@dataclass(frozen=True, slots=True)
class ExtendedError:
    """One ``struct sock_extended_err`` and its offender address (when the kernel gave one)."""

    errno: int
    origin: int
    type: int
    code: int
    info: int
    data: int
    offender: tuple[str, int] | None = None

    @property
    def is_icmp(self) -> bool:
        return self.origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6)

    @property
    def is_send_failure(self) -> bool:
        """RFC 3261 §18.4: unreachable (host, network, port, protocol) and parameter problem
        errors are failures to send; source quench, TTL/hop limit exceeded and "fragmentation
        needed"/"packet too big" (a path MTU update, not an absent peer) are not."""
        if self.origin == SO_EE_ORIGIN_ICMP:
            return (self.type == 3 and self.code != 4) or self.type == 12
        if self.origin == SO_EE_ORIGIN_ICMP6:
            return self.type in (1, 4)
        return False

    def describe(self) -> str:
        if self.origin == SO_EE_ORIGIN_ICMP:
            what = _ICMP_NAMES.get((self.type, self.code)) or _ICMP_NAMES.get((self.type, 0), "error")
            kind = "ICMP %s (type %d code %d)" % (what, self.type, self.code)
        elif self.origin == SO_EE_ORIGIN_ICMP6:
            what = _ICMP6_NAMES.get((self.type, self.code)) or _ICMP6_NAMES.get((self.type, 0), "error")
            kind = "ICMPv6 %s (type %d code %d)" % (what, self.type, self.code)
        else:
            kind = "local error (origin %d)" % self.origin
        name = errno.errorcode.get(self.errno, str(self.errno))
        by = " from %s" % self.offender[0] if self.offender else ""
        return "%s, %s%s" % (kind, name, by)


@dataclass(frozen=True, slots=True)
class IcmpError:
    """One entry of a socket's error queue: the error, the original datagram's destination
    (``msg_name``: (host, port), IPv6 without brackets) and its payload (possibly truncated)."""

    error: ExtendedError
    destination: tuple[str, int] | None
    payload: bytes


def parse_sockaddr(raw: bytes) -> tuple[str, int] | None:
    """A raw ``struct sockaddr_in`` / ``sockaddr_in6`` as (host, port); None for AF_UNSPEC or
    anything too short to be one."""
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return None


def parse_extended_err(level: int, ctype: int, data: bytes) -> ExtendedError | None:
    """The ``sock_extended_err`` of one control message, or None when it is not one."""
    if (level, ctype) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
        return None
    if len(data) < _EE.size:
        return None
    ee_errno, origin, etype, code, _pad, info, edata = _EE.unpack_from(data)
    offender = parse_sockaddr(data[_EE.size:]) if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6) else None
    return ExtendedError(ee_errno, origin, etype, code, info, edata, offender)


def parse_error_message(payload: bytes, ancdata: list[tuple[int, int, bytes]],
                        address: Any) -> IcmpError | None:
    """One ``recvmsg(MSG_ERRQUEUE)`` result as an :class:`IcmpError` (None: no extended error)."""
    for level, ctype, data in ancdata:
        err = parse_extended_err(level, ctype, data)
        if err is not None:
            dest = (str(address[0]), int(address[1])) if address else None
            return IcmpError(err, dest, payload)
    return None


def recverr_supported() -> bool:
    return sys.platform.startswith("linux")


def enable_recverr(sock: socket.socket) -> bool:
    """Ask the kernel to queue ICMP errors on this UDP socket. False where it cannot."""
    if not recverr_supported():
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(SOL_IPV6, IPV6_RECVERR, 1)
            try:  # IPv4-mapped peers of a dual-stack socket report through IP_RECVERR
                sock.setsockopt(SOL_IP, IP_RECVERR, 1)
            except OSError:
                pass
        else:
            sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    except OSError:
        return False
    return True


#: payload octets read back per error: enough for a SIP start line and the top Via
ERROR_PAYLOAD = 2048
_ANCILLARY = 512


def drain_error_queue(sock: Any, limit: int = 64) -> list[IcmpError]:
    """Read (and so clear) up to ``limit`` queued errors; never blocks, never raises for an
    empty queue. Reading the queue also clears the socket's pending error (SO_ERROR)."""
    out: list[IcmpError] = []
    for _ in range(limit):
        try:
            payload, ancdata, _flags, address = sock.recvmsg(ERROR_PAYLOAD, _ANCILLARY, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                break
            raise
        item = parse_error_message(payload, ancdata, address)
        if item is not None:
            out.append(item)
    return out
