"""A trigger wakes the task engines when a step becomes due, instead of a ``pg_notify``
statement after every schedule: a claim-ready row (PENDING, no lease) notifies at commit.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION workflow_task_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('fulfillment_tasks', '');
            RETURN NULL;
        END $$
        """
    )
    # Claims set a lease and completions leave PENDING: neither wakes anyone. Notifications
    # with the same payload collapse within a transaction, so a step scheduling several
    # tasks still sends one.
    op.execute(
        """
        CREATE TRIGGER workflow_task_notify AFTER INSERT OR UPDATE ON workflow_task
        FOR EACH ROW WHEN (NEW.state = 'PENDING' AND NEW.lease_id IS NULL)
        EXECUTE FUNCTION workflow_task_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS workflow_task_notify ON workflow_task")
    op.execute("DROP FUNCTION IF EXISTS workflow_task_notify()")
