"""Initial schema: nodes, calls, legs, call_events, answer_points, ap_health_events,
abandoned_calls.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Migrations freeze the schema as it was: they use plain SQLAlchemy types, never the models.
Times are ``timestamptz`` (``ng911.store.models.EpochSeconds`` maps them to float epochs);
JSON is JSONB on PostgreSQL.
"""
from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY


def upgrade() -> None:
    op.create_table(
        "answer_points",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False, comment="SIP URI of the position"),
        sa.Column("up", sa.Boolean(), nullable=False, comment="last reported health"),
        sa.Column("changed_at", TS, nullable=False, comment="when `up` last changed (first report for a new row)"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_answer_points"))
    )
    op.create_table(
        "calls",
        sa.Column("call_id", sa.Text(), nullable=False, comment="our internal call id"),
        sa.Column("sip_call_id", sa.Text(), nullable=False, comment="Call-ID of the upstream leg's INVITE"),
        sa.Column("nena_call_id", sa.Text(), nullable=True, comment="NENA Call-Info purpose=emergency-CallId (made when absent)"),
        sa.Column("nena_incident_id", sa.Text(), nullable=True, comment="NENA Call-Info purpose=emergency-IncidentId (made when absent)"),
        sa.Column("kind", sa.Text(), nullable=False, comment="emergency | test (urn:service:test.sos, never counted) | other"),
        sa.Column("state", sa.Text(), nullable=False, comment="controller's call state name"),
        sa.Column("caller", sa.Text(), nullable=False, comment="From URI of the caller"),
        sa.Column("caller_display", sa.Text(), nullable=True, comment="From display name, if any"),
        sa.Column("request_uri", sa.Text(), nullable=False, comment="Request-URI of the upstream INVITE"),
        sa.Column("queue", sa.Text(), nullable=True, comment="current PSAP queue"),
        sa.Column("location", JSON, nullable=True, comment="caller location (PIDF-LO digest or by-reference URIs)"),
        sa.Column("additional_data", JSON, nullable=False, comment="Call-Info additional data entries (JSON list)"),
        sa.Column("headers", JSON, nullable=False, comment="NG9-1-1 headers of the INVITE (JSON object)"),
        sa.Column("answer_point", sa.Text(), nullable=True, comment="answer point currently holding the PSAP leg"),
        sa.Column("created_at", TS, nullable=False, comment="INVITE arrival"),
        sa.Column("updated_at", TS, nullable=False, comment="last write of this row"),
        sa.Column("answered_at", TS, nullable=True, comment="first answer by an answer point"),
        sa.Column("ended_at", TS, nullable=True, comment="end of the upstream leg; NULL while the call is live"),
        sa.Column("outcome", sa.Text(), nullable=True, comment="answered | abandoned | rejected | failed ..."),
        sa.Column("end_reason", sa.Text(), nullable=True, comment="who or what ended it (caller BYE, operator, error)"),
        sa.Column("owner_node", sa.Text(), nullable=False, comment="node driving the call; every write is conditional on owner_node+owner_epoch"),
        sa.Column("owner_epoch", sa.BigInteger(), nullable=False, comment="owner node's epoch when it took the call"),
        sa.CheckConstraint("kind IN ('emergency', 'test', 'other')", name=op.f("ck_calls_kind_known")),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_calls"))
    )
    op.create_index(op.f("ix_calls_created_at"), "calls", ["created_at"], unique=False)
    op.create_index(op.f("ix_calls_owner_node_owner_epoch"), "calls", ["owner_node", "owner_epoch"], unique=False)
    op.create_index(op.f("ix_calls_state"), "calls", ["state"], unique=False)
    op.create_table(
        "nodes",
        sa.Column("name", sa.Text(), nullable=False, comment="node name from the config; stable across restarts"),
        sa.Column("epoch", sa.BigInteger(), nullable=False, comment="bumped at every start; (name, epoch) fences call ownership"),
        sa.Column("started_at", TS, nullable=False, comment="when this epoch began"),
        sa.Column("heartbeat_at", TS, nullable=False, comment="last heartbeat written by the node"),
        sa.Column("lease_expires_at", TS, nullable=True, comment="after this, survivors may claim the node's calls; NULL: no lease yet"),
        sa.CheckConstraint("epoch >= 1", name=op.f("ck_nodes_epoch_positive")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nodes"))
    )
    op.create_table(
        "abandoned_calls",
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("caller", sa.Text(), nullable=False, comment="URI to call back"),
        sa.Column("location", JSON, nullable=True, comment="caller location, if known"),
        sa.Column("at", TS, nullable=False, comment="when the caller hung up"),
        sa.Column("called_back_at", TS, nullable=True, comment="when a call-taker called back; NULL: still on the list"),
        sa.ForeignKeyConstraint(["call_id"], ["calls.call_id"], name=op.f("fk_abandoned_calls_call_id_calls"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_abandoned_calls"))
    )
    op.create_table(
        "ap_health_events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("at", TS, nullable=False, comment="when the health report was made"),
        sa.ForeignKeyConstraint(["name"], ["answer_points.name"], name=op.f("fk_ap_health_events_name_answer_points"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ap_health_events"))
    )
    op.create_index(op.f("ix_ap_health_events_name_id"), "ap_health_events", ["name", "id"], unique=False)
    op.create_table(
        "call_events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False, comment="append order"),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("at", TS, nullable=False, comment="when it happened (node clock)"),
        sa.Column("kind", sa.Text(), nullable=False, comment="event name, e.g. psap_answered"),
        sa.Column("data", JSON, nullable=False, comment="event details (JSON object)"),
        sa.ForeignKeyConstraint(["call_id"], ["calls.call_id"], name=op.f("fk_call_events_call_id_calls"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_events"))
    )
    op.create_index(op.f("ix_call_events_call_id_id"), "call_events", ["call_id", "id"], unique=False)
    op.create_table(
        "legs",
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False, comment="upstream (caller side) | psap (answer point side)"),
        sa.Column("dialog", JSON, nullable=True, comment="serialised dialog: Call-ID, tags, CSeqs, route set, target, transport"),
        sa.Column("local_sdp", sa.LargeBinary(), nullable=True, comment="last SDP we sent on this leg"),
        sa.Column("remote_sdp", sa.LargeBinary(), nullable=True, comment="last SDP the peer sent on this leg"),
        sa.Column("answer_point", sa.Text(), nullable=True, comment="psap leg: the answer point it reaches"),
        sa.Column("updated_at", TS, nullable=False, comment="last save of this leg"),
        sa.CheckConstraint("role IN ('upstream', 'psap')", name=op.f("ck_legs_role_known")),
        sa.ForeignKeyConstraint(["call_id"], ["calls.call_id"], name=op.f("fk_legs_call_id_calls"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id", "role", name=op.f("pk_legs"))
    )


def downgrade() -> None:
    op.drop_table("legs")
    op.drop_index(op.f("ix_call_events_call_id_id"), table_name="call_events")
    op.drop_table("call_events")
    op.drop_index(op.f("ix_ap_health_events_name_id"), table_name="ap_health_events")
    op.drop_table("ap_health_events")
    op.drop_table("abandoned_calls")
    op.drop_table("nodes")
    op.drop_index(op.f("ix_calls_state"), table_name="calls")
    op.drop_index(op.f("ix_calls_owner_node_owner_epoch"), table_name="calls")
    op.drop_index(op.f("ix_calls_created_at"), table_name="calls")
    op.drop_table("calls")
    op.drop_table("answer_points")
