"""The cluster (issue 8): what a survivor needs to carry on a dead node's calls, and what a
node says about itself.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

- ``nodes.sip_uri``: the node's own SIP address (its Contact), shown by ``ng911 status`` and
  used to relay a request for a call to its owner.
- ``calls.upstream_invite``: the caller's INVITE as it arrived (bytes on the wire: Via stack,
  branch, body), so that a survivor can still answer a call that was ringing or queued when
  its node died, on the caller's original transaction.
- ``calls.upstream_flow``: where that INVITE came from (transport, address, port), where the
  responses go.
- ``calls.move``: the move in progress (cause, target, when it started); NULL when none.
- ``legs.role`` may be ``moving``: the new answer point's leg of a move not yet finished.
"""
from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ROLE_COMMENT = "upstream (caller side) | psap (answer point side)"
ROLE_COMMENT = "upstream (caller side) | psap (answer point side) | moving (a move's new leg)"


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("sip_uri", sa.Text(), nullable=True,
                                   comment="the node's own SIP address (its Contact)"))
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("upstream_invite", sa.LargeBinary(), nullable=True,
                                   comment="the caller's INVITE as received (Via stack, body)"))
        batch.add_column(sa.Column("upstream_flow", _json(), nullable=True,
                                   comment="transport and address the caller's INVITE came from"))
        batch.add_column(sa.Column("move", _json(), nullable=True,
                                   comment="the move in progress (cause, target, started); NULL: none"))
    with op.batch_alter_table("legs") as batch:
        batch.drop_constraint(op.f("ck_legs_role_known"), type_="check")
        batch.create_check_constraint("role_known", "role IN ('upstream', 'psap', 'moving')")
        batch.alter_column("role", existing_type=sa.Text(), existing_nullable=False,
                           comment=ROLE_COMMENT, existing_comment=OLD_ROLE_COMMENT)


def downgrade() -> None:
    with op.batch_alter_table("legs") as batch:
        batch.drop_constraint(op.f("ck_legs_role_known"), type_="check")
        batch.create_check_constraint("role_known", "role IN ('upstream', 'psap')")
        batch.alter_column("role", existing_type=sa.Text(), existing_nullable=False,
                           comment=OLD_ROLE_COMMENT, existing_comment=ROLE_COMMENT)
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("move")
        batch.drop_column("upstream_flow")
        batch.drop_column("upstream_invite")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("sip_uri")
