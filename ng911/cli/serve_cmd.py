"""`ng911 serve | migrate | status`: run a controller node, bring its schema to head, look at it.

Exit status: 0 fine; 2 bad configuration (one line naming the key); 3 database schema not at
the code's head (run `ng911 migrate`); 1 anything else.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_CONFIG, EXIT_SCHEMA = 2, 3


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="run a controller node",
        description="Run an ng911 controller node: SIP on the configured address, metrics on "
                    "/metrics, calls persisted to the configured database.",
    )
    p.add_argument("--config", required=True, help="TOML file (see deploy/examples/ and deploy/README.md)")
    p.add_argument("--log-level", default="info", help="debug | info | warning (default info)")
    p.add_argument("--log-format", default="json", choices=("json", "text"), help="log line format (default json)")
    p.set_defaults(func=serve)

    m = sub.add_parser("migrate", help="bring the database schema to head (Alembic)",
                       description="Apply every pending migration to the configured database. "
                                   "Safe to run from several nodes at once (advisory lock).")
    m.add_argument("--config", required=True, help="TOML file naming the database (or NG911_DATABASE_URL)")
    m.set_defaults(func=migrate)

    s = sub.add_parser("status", help="live calls and answer point health, read from the store",
                       description="Print the live calls and the answer points' health as the "
                                   "database has them (what every node of the cluster wrote).")
    s.add_argument("--config", required=True, help="TOML file naming the database")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=status)


def _settings(path: str) -> Any:
    from ng911.config import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"ng911: config error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    from twisted.internet import reactor

    from ng911.logs import setup_logging
    from ng911.service import SchemaBehind, make_service, prepare_database

    setup_logging(args.log_level, args.log_format, sys.stderr)
    try:
        prepare_database(settings)
    except SchemaBehind as exc:
        print(f"ng911: {exc}", file=sys.stderr)
        return EXIT_SCHEMA
    service = make_service(settings, reactor)
    service.start()
    print(json.dumps({"event": "serving", "node": settings.node.name, "epoch": service.epoch,
                      "sip": {"host": settings.sip.host, **{k.lower(): v for k, v in service.stack.ports.items()}},
                      "metrics": f"http://{settings.metrics.host}:{settings.metrics.port}/metrics"}), flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", service.stop)
    reactor.run()
    return 0


def migrate(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    from ng911.store import db

    if settings.database.url.startswith("sqlite"):
        settings.database.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    db.migrate(settings.database.url)
    state = db.schema_status(settings.database.url)
    print(f"ng911: schema {state.state} at {state.current}")
    return 0 if state.state == "current" else 1


def status(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    from ng911.store import db
    from ng911.store.store import SqlStore

    state = db.schema_status(settings.database.url)
    if state.state != "current":
        print(f"ng911: database schema is {state.state}: run `ng911 migrate --config {args.config}`", file=sys.stderr)
        return EXIT_SCHEMA
    store = SqlStore(settings.database.url)
    try:
        calls = store.live_calls()
        aps = store.answer_points()
    finally:
        store.stop(timeout=1.0)
    if args.json:
        print(json.dumps({"calls": calls, "answer_points": aps}, default=str))
        return 0
    now = time.time()
    print(f"live calls: {len(calls)}")
    for c in calls:
        created = c.get("created_at")
        age = f"{now - created.timestamp():.0f}s" if hasattr(created, "timestamp") else "?"
        print(f"  {c['call_id']:<22} {c.get('kind', ''):<9} {c.get('state', ''):<8} {age:>6}  "
              f"ap={c.get('answer_point') or '-':<6} caller={c.get('caller')}  nena={c.get('nena_call_id')}")
    print(f"answer points: {len(aps)}")
    for ap in aps:
        print(f"  {ap['name']:<8} {'up' if ap.get('up') else 'DOWN':<5} {ap.get('uri')}")
    return 0
