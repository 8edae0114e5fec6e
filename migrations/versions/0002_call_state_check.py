"""calls.state holds one of the call state machine's words (ng911.call.state.CallState), so
that a stored row maps back to exactly one state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

Earlier rows already use these words (the store wrote routing/queued/ringing/talking/moving/
ended before the state machine made them one enum).
"""
from __future__ import annotations

from typing import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("routing", "ringing", "queued", "talking", "moving", "ended")


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:  # SQLite cannot ALTER TABLE ADD CONSTRAINT
        batch.create_check_constraint(
            "state_known", "state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")")


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_constraint(op.f("ck_calls_state_known"), type_="check")
