"""NG9-1-1 content of a call: pure functions over parsed SIP messages, no I/O.

    classify.py   emergency / test / other (urn:service:sos*, test.sos*, PSAP URIs)
    content.py    extract(request) -> EmergencyContent (what the store keeps);
                  ensure_ids(headers, domain, mint); headers_to_forward(request)
    pidf.py       PIDF-LO by value -> Location (shapes, civic address, method, timestamp)
    callinfo.py   Call-Info entries; the shared ``<URI>;params`` splitter
    ids.py        NENA urn:emergency:uid:callid / incidentid: parse and mint
    priority.py   Resource-Priority (esnet.0–4 and the RFC 4412 namespaces), ordering
    history.py    History-Info entries; append_history when retargeting (RFC 7044)
"""
from ng911.emergency.classify import EMERGENCY, OTHER, TEST, CallKind, classify
from ng911.emergency.content import EmergencyContent, ensure_ids, extract, headers_to_forward
from ng911.emergency.history import append_history
from ng911.emergency.ids import IdMinter, new_call_id, new_incident_id
from ng911.emergency.pidf import Location, PidfError, parse_pidf

__all__ = [
    "EMERGENCY",
    "OTHER",
    "TEST",
    "CallKind",
    "EmergencyContent",
    "IdMinter",
    "Location",
    "PidfError",
    "append_history",
    "classify",
    "ensure_ids",
    "extract",
    "headers_to_forward",
    "new_call_id",
    "new_incident_id",
    "parse_pidf",
]
