"""The schema: what another node needs to carry a call on (DESIGN "State and persistence").

Declared with the ORM (``DeclarativeBase``, ``Mapped[...]``) so that Alembic autogenerate and
``compare_metadata`` see one source of truth; the write-behind store uses the tables through
SQLAlchemy Core (``Model.__table__``) on its hot path.

Conventions, one per concern:

- **Time** is float epoch seconds in Python and ``timestamp with time zone`` in the database
  (UTC text in SQLite) -- the ``EpochSeconds`` type converts at the boundary, so every caller
  passes and receives ``time.time()``-style floats and ``psql`` shows readable times.
- **JSON** is ``JSON`` (SQLite) / ``JSONB`` (PostgreSQL); Python ``None`` is SQL ``NULL``.
- **SDP** is stored as the bytes on the wire (``bytea`` / ``BLOB``).
- **Enumerations** are text with a ``CheckConstraint`` (no native enum types: they make
  migrations harder and buy nothing here).
- **Constraint names** follow ``NAMING_CONVENTION`` so migrations can refer to them.

Ownership fencing: every call row carries ``(owner_node, owner_epoch)``; every write of a call
is conditional on it (see ``ng911.store.store``). ``owner_node`` deliberately has no foreign key
to ``nodes``: the fence is the pair, checked at every write, not the referential link.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CALL_KINDS = ("emergency", "test", "other")
#: ng911.call.state.CallState's words (the store sits below the call layer: a unit test keeps
#: the two equal)
CALL_STATES = ("routing", "ringing", "queued", "talking", "moving", "ended")
LEG_ROLES = ("upstream", "psap", "moving")


class EpochSeconds(sa.TypeDecorator[float]):
    """Float epoch seconds in Python; ``timestamptz`` in PostgreSQL, UTC text in SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[float]:
        return float

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("naive datetime: pass epoch seconds or an aware datetime")
            return value.astimezone(timezone.utc)
        return datetime.fromtimestamp(float(value), tz=timezone.utc)

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no offset; we only ever write UTC
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


# BIGSERIAL in PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class ModelBase(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Node(ModelBase):
    __tablename__ = "nodes"
    __table_args__ = (sa.CheckConstraint("epoch >= 1", name="epoch_positive"),)

    name: Mapped[str] = mapped_column(
        sa.Text, primary_key=True, comment="node name from the config; stable across restarts")
    epoch: Mapped[int] = mapped_column(
        sa.BigInteger, comment="bumped at every start; (name, epoch) fences call ownership")
    started_at: Mapped[float] = mapped_column(
        EpochSeconds, comment="when this epoch began")
    heartbeat_at: Mapped[float] = mapped_column(
        EpochSeconds, comment="last heartbeat written by the node")
    lease_expires_at: Mapped[float | None] = mapped_column(
        EpochSeconds, comment="after this, survivors may claim the node's calls; NULL: no lease yet")
    sip_uri: Mapped[str | None] = mapped_column(
        sa.Text, comment="the node's own SIP address (its Contact)")


class Call(ModelBase):
    __tablename__ = "calls"
    __table_args__ = (
        sa.CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in CALL_KINDS) + ")", name="kind_known"),
        sa.CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in CALL_STATES) + ")", name="state_known"),
        sa.Index(None, "state"),
        sa.Index(None, "created_at"),
        sa.Index(None, "owner_node", "owner_epoch"),
    )

    call_id: Mapped[str] = mapped_column(
        sa.Text, primary_key=True, comment="our internal call id")
    sip_call_id: Mapped[str] = mapped_column(
        sa.Text, comment="Call-ID of the upstream leg's INVITE")
    nena_call_id: Mapped[str | None] = mapped_column(
        sa.Text, comment="NENA Call-Info purpose=emergency-CallId (made when absent)")
    nena_incident_id: Mapped[str | None] = mapped_column(
        sa.Text, comment="NENA Call-Info purpose=emergency-IncidentId (made when absent)")
    kind: Mapped[str] = mapped_column(
        sa.Text, comment="emergency | test (urn:service:test.sos, never counted) | other")
    state: Mapped[str] = mapped_column(
        sa.Text, comment="controller's call state name")
    caller: Mapped[str] = mapped_column(sa.Text, comment="From URI of the caller")
    caller_display: Mapped[str | None] = mapped_column(
        sa.Text, comment="From display name, if any")
    request_uri: Mapped[str] = mapped_column(
        sa.Text, comment="Request-URI of the upstream INVITE")
    queue: Mapped[str | None] = mapped_column(sa.Text, comment="current PSAP queue")
    location: Mapped[Any | None] = mapped_column(
        _json(), comment="caller location (PIDF-LO digest or by-reference URIs)")
    additional_data: Mapped[Any] = mapped_column(
        _json(), comment="Call-Info additional data entries (JSON list)")
    headers: Mapped[Any] = mapped_column(
        _json(), comment="NG9-1-1 headers of the INVITE (JSON object)")
    answer_point: Mapped[str | None] = mapped_column(
        sa.Text, comment="answer point currently holding the PSAP leg")
    created_at: Mapped[float] = mapped_column(EpochSeconds, comment="INVITE arrival")
    updated_at: Mapped[float] = mapped_column(EpochSeconds, comment="last write of this row")
    answered_at: Mapped[float | None] = mapped_column(
        EpochSeconds, comment="first answer by an answer point")
    ended_at: Mapped[float | None] = mapped_column(
        EpochSeconds, comment="end of the upstream leg; NULL while the call is live")
    outcome: Mapped[str | None] = mapped_column(
        sa.Text, comment="answered | abandoned | rejected | failed ...")
    end_reason: Mapped[str | None] = mapped_column(
        sa.Text, comment="who or what ended it (caller BYE, operator, error)")
    owner_node: Mapped[str] = mapped_column(
        sa.Text, comment="node driving the call; every write is conditional on owner_node+owner_epoch")
    owner_epoch: Mapped[int] = mapped_column(
        sa.BigInteger, comment="owner node's epoch when it took the call")
    upstream_invite: Mapped[bytes | None] = mapped_column(
        sa.LargeBinary, comment="the caller's INVITE as received (Via stack, body)")
    upstream_flow: Mapped[Any | None] = mapped_column(
        _json(), comment="transport and address the caller's INVITE came from")
    move: Mapped[Any | None] = mapped_column(
        _json(), comment="the move in progress (cause, target, started); NULL: none")


class Leg(ModelBase):
    __tablename__ = "legs"
    __table_args__ = (
        sa.CheckConstraint(
            "role IN (" + ", ".join(f"'{r}'" for r in LEG_ROLES) + ")", name="role_known"),
    )

    call_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(
        sa.Text, primary_key=True,
        comment="upstream (caller side) | psap (answer point side) | moving (a move's new leg)")
    dialog: Mapped[Any | None] = mapped_column(
        _json(), comment="serialised dialog: Call-ID, tags, CSeqs, route set, target, transport")
    local_sdp: Mapped[bytes | None] = mapped_column(
        sa.LargeBinary, comment="last SDP we sent on this leg")
    remote_sdp: Mapped[bytes | None] = mapped_column(
        sa.LargeBinary, comment="last SDP the peer sent on this leg")
    answer_point: Mapped[str | None] = mapped_column(
        sa.Text, comment="psap leg: the answer point it reaches")
    updated_at: Mapped[float] = mapped_column(EpochSeconds, comment="last save of this leg")


class CallEvent(ModelBase):
    __tablename__ = "call_events"
    __table_args__ = (sa.Index(None, "call_id", "id"),)

    id: Mapped[int] = mapped_column(
        _BigId, primary_key=True, autoincrement=True, comment="append order")
    call_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("calls.call_id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(EpochSeconds, comment="when it happened (node clock)")
    kind: Mapped[str] = mapped_column(sa.Text, comment="event name, e.g. psap_answered")
    data: Mapped[Any] = mapped_column(_json(), comment="event details (JSON object)")


class AnswerPointRow(ModelBase):
    __tablename__ = "answer_points"

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    uri: Mapped[str] = mapped_column(sa.Text, comment="SIP URI of the position")
    up: Mapped[bool] = mapped_column(sa.Boolean, comment="last reported health")
    changed_at: Mapped[float] = mapped_column(
        EpochSeconds, comment="when `up` last changed (first report for a new row)")


class ApHealthEvent(ModelBase):
    __tablename__ = "ap_health_events"
    __table_args__ = (sa.Index(None, "name", "id"),)

    id: Mapped[int] = mapped_column(_BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("answer_points.name", ondelete="CASCADE"))
    uri: Mapped[str] = mapped_column(sa.Text)
    up: Mapped[bool] = mapped_column(sa.Boolean)
    at: Mapped[float] = mapped_column(EpochSeconds, comment="when the health report was made")


class AbandonedCall(ModelBase):
    __tablename__ = "abandoned_calls"

    call_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("calls.call_id", ondelete="CASCADE"), primary_key=True)
    caller: Mapped[str] = mapped_column(sa.Text, comment="URI to call back")
    location: Mapped[Any | None] = mapped_column(_json(), comment="caller location, if known")
    at: Mapped[float] = mapped_column(EpochSeconds, comment="when the caller hung up")
    called_back_at: Mapped[float | None] = mapped_column(
        EpochSeconds, comment="when a call-taker called back; NULL: still on the list")


COMMAND_ACTIONS = ("release", "move")


class Command(ModelBase):
    """An operator's command on a call, addressed to the call (not to a node): whichever node
    owns the call when it beats takes it, runs it and writes the outcome (``ng911.cluster.commands``)."""

    __tablename__ = "commands"
    __table_args__ = (
        sa.CheckConstraint(
            "action IN (" + ", ".join(f"'{a}'" for a in COMMAND_ACTIONS) + ")", name="action_known"),
        # the owner's query at every heartbeat: the commands not done yet, by call
        sa.Index("ix_commands_pending", "call_id", "id",
                 postgresql_where=sa.text("done_at IS NULL"), sqlite_where=sa.text("done_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(
        _BigId, primary_key=True, autoincrement=True, comment="issue order")
    call_id: Mapped[str] = mapped_column(
        sa.Text, sa.ForeignKey("calls.call_id", ondelete="CASCADE"), comment="the call it acts on")
    action: Mapped[str] = mapped_column(sa.Text, comment="release | move")
    args: Mapped[Any | None] = mapped_column(_json(), comment="the action's arguments (JSON object), if any")
    issued_by: Mapped[str] = mapped_column(sa.Text, comment="who asked (an operator's name)")
    issued_at: Mapped[float] = mapped_column(EpochSeconds, comment="when it was issued (database clock)")
    taken_by: Mapped[str | None] = mapped_column(
        sa.Text, comment="node that took it to run it; NULL: not taken yet")
    taken_epoch: Mapped[int | None] = mapped_column(sa.BigInteger, comment="that node's epoch")
    taken_at: Mapped[float | None] = mapped_column(
        EpochSeconds, comment="when it was taken (database clock); taken long ago and not done: taken again")
    done_at: Mapped[float | None] = mapped_column(
        EpochSeconds, comment="when its outcome was written; NULL: not done yet")
    ok: Mapped[bool | None] = mapped_column(sa.Boolean, comment="done: carried out (true) or refused (false)")
    result: Mapped[str | None] = mapped_column(sa.Text, comment="what happened, in the node's words")


metadata = ModelBase.metadata
calls = Call.__table__
legs = Leg.__table__
call_events = CallEvent.__table__
nodes = Node.__table__
answer_points = AnswerPointRow.__table__
ap_health_events = ApHealthEvent.__table__
abandoned_calls = AbandonedCall.__table__
commands = Command.__table__
