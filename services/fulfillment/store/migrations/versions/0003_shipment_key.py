"""A WMS shipment id is unique within its release, not across warehouses and WMSs (each
numbers its own): one shipment per (fulfillment order, WMS shipment id).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE shipment DROP CONSTRAINT shipment_wms_id")
    op.execute(
        "ALTER TABLE shipment ADD CONSTRAINT shipment_wms_id "
        "UNIQUE (fulfillment_order_id, wms_shipment_id)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE shipment DROP CONSTRAINT shipment_wms_id")
    op.execute("ALTER TABLE shipment ADD CONSTRAINT shipment_wms_id UNIQUE (wms_shipment_id)")
