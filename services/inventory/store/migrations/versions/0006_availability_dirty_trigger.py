"""Availability is marked dirty by the database: a trigger on stock_position marks every
position whose on-hand, reserved, allocated or safety stock changed, in the changing
transaction, instead of a statement from each writing path.

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
        CREATE FUNCTION mark_availability_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO availability_dirty (sku, warehouse)
            VALUES (NEW.sku, NEW.warehouse)
            ON CONFLICT DO NOTHING;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER availability_dirty_on_update AFTER UPDATE ON stock_position
        FOR EACH ROW
        WHEN ((OLD.on_hand, OLD.reserved, OLD.allocated, OLD.safety_stock)
              IS DISTINCT FROM (NEW.on_hand, NEW.reserved, NEW.allocated, NEW.safety_stock))
        EXECUTE FUNCTION mark_availability_dirty()
        """
    )
    op.execute(
        """
        CREATE TRIGGER availability_dirty_on_insert AFTER INSERT ON stock_position
        FOR EACH ROW
        WHEN (NEW.on_hand <> 0 OR NEW.reserved <> 0 OR NEW.allocated <> 0
              OR NEW.safety_stock <> 0)
        EXECUTE FUNCTION mark_availability_dirty()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS availability_dirty_on_insert ON stock_position")
    op.execute("DROP TRIGGER IF EXISTS availability_dirty_on_update ON stock_position")
    op.execute("DROP FUNCTION IF EXISTS mark_availability_dirty()")
