"""`ng911 call release | move CALL_ID`: an operator's command on a live call, from any host.

The command goes through the database the config names (``ng911.cluster.commands``): the node
that owns the call takes it at its next heartbeat, runs it and writes the outcome, which this
command waits for (``--timeout``, default 10 s) and prints as one line (``--json``: one object).
The owning node need not be this host's: any config naming the cluster's database will do.

Exit status: 0 done; 1 refused or failed (the node's reason is printed), or the database
unreachable; 2 bad arguments, bad configuration, or no such live call; 3 database schema not at
the code's head (run `ng911 migrate`); 4 not done in time: the owner may be down — the command
stays issued and runs once a survivor has taken the call over (`ng911 status` shows the nodes).
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

EXIT_DONE, EXIT_REFUSED, EXIT_USAGE, EXIT_SCHEMA, EXIT_PENDING = 0, 1, 2, 3, 4
POLL_INTERVAL = 0.1

ACTIONS = {
    "release": "end the call: the caller and the position both get a BYE (end reason operator_release)",
    "move": "move a talking call to another position of its queue (the caller is re-INVITEd, never sent a BYE)",
}


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without passwd entry): say so
        return "unknown"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "call", help="an operator's command on a live call (release, move), run by the node that owns it",
        description="Act on a live call of the cluster, from any host: the command goes through the "
                    "database, the node that owns the call runs it at its next heartbeat, and this "
                    "waits for the outcome. Call ids are in `ng911 status`.",
        epilog="Exit status: 0 done; 1 refused or failed (with the node's reason); 2 bad arguments or "
               "no such live call; 3 schema behind (run `ng911 migrate`); 4 not done within --timeout "
               "(its node may be down: the command runs once a survivor has taken the call over).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    for action, text in ACTIONS.items():
        a = actions.add_parser(action, help=text, description=f"{text[0].upper()}{text[1:]}.")
        a.add_argument("call_id", metavar="CALL_ID", help="the call's id (as `ng911 status` lists it)")
        a.add_argument("--config", required=True,
                       help="TOML file naming the cluster's database (or NG911_DATABASE_URL)")
        a.add_argument("--by", default=_default_user(),
                       help="who asks, recorded in the call's event log (default: your OS user name)")
        a.add_argument("--timeout", type=float, default=10.0,
                       help="seconds to wait for the owning node to carry it out (default 10)")
        a.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
        a.set_defaults(func=run)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    from sqlalchemy import exc

    from ng911.cli.serve_cmd import _settings
    from ng911.cluster import commands
    from ng911.store import db

    if not args.call_id.strip() or not args.by.strip():
        return _fail(args, EXIT_USAGE, "bad arguments: CALL_ID and --by must not be empty")
    if not args.timeout >= 0:
        return _fail(args, EXIT_USAGE, f"bad arguments: --timeout must be 0 or more seconds, got {args.timeout}")
    settings = _settings(args.config)
    url = settings.database.url
    engine = None
    try:
        state = db.schema_status(url)
        if state.state != "current":
            print(f"ng911: database schema is {state.state}: run `ng911 migrate --config {args.config}`",
                  file=sys.stderr)
            return EXIT_SCHEMA
        engine = db.engine_for(url, pool_size=1, max_overflow=0) if not url.startswith("sqlite") \
            else db.engine_for(url)
        started = time.monotonic()
        try:
            with engine.begin() as conn:
                command_id = commands.issue(conn, args.call_id, args.action, issued_by=args.by)
        except LookupError as e:
            return _fail(args, EXIT_USAGE, str(e).strip("'\""))
        deadline = started + args.timeout
        while True:
            with engine.connect() as conn:
                row = commands.get(conn, command_id)
            if row is not None and row["done_at"] is not None:
                break
            if time.monotonic() >= deadline:
                return _pending(args, command_id, row, engine, time.monotonic() - started)
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        waited = time.monotonic() - started
    except (exc.OperationalError, exc.InterfaceError) as e:
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0]
        return _fail(args, EXIT_REFUSED, f"database unreachable ({reason})")
    finally:
        if engine is not None:
            engine.dispose()
    by = f"{row['taken_by']}/{row['taken_epoch']}"
    if row["ok"]:
        text = f"call {args.call_id}: {row['result']} (command {command_id} run by node {by} in {waited:.2f} s)"
        status, rc = "done", EXIT_DONE
    else:
        text = f"call {args.call_id}: {args.action} refused by node {by}: {row['result']} (command {command_id})"
        status, rc = "refused", EXIT_REFUSED
    _print(args, text, status, row, waited)
    return rc


def _pending(args: argparse.Namespace, command_id: int, row: dict[str, Any] | None, engine: Any,
             waited: float) -> int:
    import sqlalchemy as sa

    from ng911.cluster.commands import RETAKE_AFTER
    from ng911.store import models as m

    c = m.calls.c
    with engine.connect() as conn:
        call = conn.execute(sa.select(c.owner_node, c.owner_epoch, c.ended_at, c.end_reason)
                            .where(c.call_id == args.call_id)).first()
    if call is not None and call.ended_at is not None:
        why = f"the call ended meanwhile ({call.end_reason})"
    elif row is not None and row["taken_by"] is not None:
        why = (f"taken by node {row['taken_by']}/{row['taken_epoch']}, outcome not written yet: it is taken "
               f"again after {RETAKE_AFTER:.0f} s if that node is gone")
    else:
        owner = f"{call.owner_node}/{call.owner_epoch}" if call is not None else "?"
        why = (f"its owner {owner} has not taken it: the node may be down (or not in a cluster); it runs "
               f"once the owner or a survivor that takes the call over beats")
    text = f"call {args.call_id}: {args.action} not done in {args.timeout:g} s (command {command_id}): {why}"
    _print(args, text, "pending", row or {"id": command_id}, waited)
    return EXIT_PENDING


def _print(args: argparse.Namespace, text: str, status: str, row: dict[str, Any], waited: float) -> None:
    if args.json:
        out = {"status": status, "call_id": args.call_id, "action": args.action, "message": text,
               "waited": round(waited, 3), "command": row}
        print(json.dumps(out, default=str))
    else:
        print(f"ng911: {text}")


def _fail(args: argparse.Namespace, rc: int, text: str) -> int:
    if args.json:
        print(json.dumps({"status": "error", "call_id": args.call_id, "action": args.action, "message": text}))
    else:
        print(f"ng911: {text}", file=sys.stderr)
    return rc
