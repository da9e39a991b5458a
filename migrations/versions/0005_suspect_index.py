"""An index for the claim of suspect runs (recovered twice in a row without progress).

Workers look for a suspect before every ordinary claim (``executor_service.store.sql``
``CLAIM_SUSPECT``). Without an index that query scanned every runnable run, so its cost grew
with the backlog (about 10 ms at 6,000 queued runs, 40 ms with 20,000 leased; ``make bench``
L2). The partial index holds only suspect runs, usually none.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``executor.runs_suspect``."""
    op.execute(
        "CREATE INDEX runs_suspect ON executor.runs (created_at)"
        " WHERE status IN ('pending', 'running', 'paused') AND recovery_attempts >= 2"
    )


def downgrade() -> None:
    """Drop ``executor.runs_suspect``."""
    op.execute("DROP INDEX executor.runs_suspect")
