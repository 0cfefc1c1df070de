"""A trigger wakes WatchOrder on every replica when an order's status changes, instead of a
``pg_notify`` statement after each history row. An order's first status (previous status
UNSPECIFIED) wakes nobody: nobody can be watching it yet, and NOTIFYs serialise commits.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION order_changed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('order_gateway_order_changed', NEW.order_id);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER order_changed_notify AFTER INSERT ON order_status_change
        FOR EACH ROW WHEN (NEW.previous_status <> 0)
        EXECUTE FUNCTION order_changed_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS order_changed_notify ON order_status_change")
    op.execute("DROP FUNCTION IF EXISTS order_changed_notify()")
