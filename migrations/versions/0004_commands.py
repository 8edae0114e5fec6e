"""Operator commands (release, move) addressed to a call, run by whichever node owns it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08

- ``commands``: one row per command. Issued from any host (``ng911 call release|move``); the
  node owning the call takes it at its heartbeat (``taken_*``), runs it and writes the outcome
  (``done_at``, ``ok``, ``result``). A command taken long ago and still not done (its node died,
  or the database blipped before the outcome was written) is taken again by the call's owner.
- ``ix_commands_pending``: the owner's query at every heartbeat, the commands not done yet by
  call (partial: done commands, the history, are not in it).
"""
from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)  # (plain types, never the models': see 0001)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "commands",
        sa.Column("id", BIGID, autoincrement=True,
                  nullable=False, comment="issue order"),
        sa.Column("call_id", sa.Text(), nullable=False, comment="the call it acts on"),
        sa.Column("action", sa.Text(), nullable=False, comment="release | move"),
        sa.Column("args", _json(), nullable=True, comment="the action's arguments (JSON object), if any"),
        sa.Column("issued_by", sa.Text(), nullable=False, comment="who asked (an operator's name)"),
        sa.Column("issued_at", TS, nullable=False, comment="when it was issued (database clock)"),
        sa.Column("taken_by", sa.Text(), nullable=True,
                  comment="node that took it to run it; NULL: not taken yet"),
        sa.Column("taken_epoch", sa.BigInteger(), nullable=True, comment="that node's epoch"),
        sa.Column("taken_at", TS, nullable=True,
                  comment="when it was taken (database clock); taken long ago and not done: taken again"),
        sa.Column("done_at", TS, nullable=True,
                  comment="when its outcome was written; NULL: not done yet"),
        sa.Column("ok", sa.Boolean(), nullable=True, comment="done: carried out (true) or refused (false)"),
        sa.Column("result", sa.Text(), nullable=True, comment="what happened, in the node's words"),
        sa.CheckConstraint("action IN ('release', 'move')", name=op.f("ck_commands_action_known")),
        sa.ForeignKeyConstraint(["call_id"], ["calls.call_id"], name=op.f("fk_commands_call_id_calls"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index("ix_commands_pending", "commands", ["call_id", "id"], unique=False,
                    postgresql_where=sa.text("done_at IS NULL"), sqlite_where=sa.text("done_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_commands_pending", table_name="commands",
                  postgresql_where=sa.text("done_at IS NULL"), sqlite_where=sa.text("done_at IS NULL"))
    op.drop_table("commands")
