"""Reconciliation of a WMS snapshot: drift report, corrections through the ledger."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dwf.inventory.v1 import inventory_pb2 as pb
from tests.integration.inventory.conftest import Inventory, stamp

pytestmark = pytest.mark.integration


async def test_reconcile_reports_and_corrects_drift_as_of_the_snapshot(
    inventory: Inventory,
) -> None:
    a, b, c, d = await inventory.new_skus(4)
    for sku, qty in ((a, 10), (b, 5), (c, 7), (d, 100)):
        await inventory.receive(sku, "WEST-1", qty)
    taken_at = datetime.now(UTC) + timedelta(milliseconds=1)
    # A receipt after the snapshot must not count as drift.
    await inventory.stub.RecordStockMovement(
        pb.RecordStockMovementRequest(
            request_id=str(uuid.uuid4()),
            sku=a,
            warehouse_id="WEST-1",
            kind=pb.MOVEMENT_KIND_RECEIPT,
            quantity_delta=3,
            reference="PO-after",
            occurred_at=stamp(taken_at + timedelta(minutes=5)),
        )
    )
    snapshot_id = f"snap-{uuid.uuid4().hex[:6]}"
    request = pb.ReconcileRequest(
        request_id=str(uuid.uuid4()),
        warehouse_id="WEST-1",
        snapshot_id=snapshot_id,
        snapshot_taken_at=stamp(taken_at),
        apply_corrections=True,
        max_correction_quantity=50,
        lines=[
            pb.SnapshotLine(sku=a, on_hand=10),  # agrees (the later receipt excluded)
            pb.SnapshotLine(sku=b, on_hand=3),  # 2 missing
            pb.SnapshotLine(sku=c, on_hand=9),  # 2 found
            pb.SnapshotLine(sku=d, on_hand=10),
        ],  # 90 missing: above the limit
    )
    report = (await inventory.stub.Reconcile(request)).report
    drifts = {line.sku: (line.drift, line.corrected) for line in report.drifts}
    assert drifts == {b: (-2, True), c: (2, True), d: (-90, False)}
    assert (report.skus_compared, report.skus_with_drift) == (4, 3)
    assert (await inventory.level(b, "WEST-1")).on_hand == 3
    assert (await inventory.level(c, "WEST-1")).on_hand == 9
    assert (await inventory.level(d, "WEST-1")).on_hand == 100
    assert (await inventory.level(a, "WEST-1")).on_hand == 13
    ledger = await inventory.stub.ListLedger(
        pb.ListLedgerRequest(sku=b, kinds=[pb.MOVEMENT_KIND_RECONCILIATION])
    )
    assert [(e.quantity_delta, e.reference) for e in ledger.entries] == [(-2, snapshot_id)]
    # The same snapshot again (even under a new request_id) returns the first report.
    request.request_id = str(uuid.uuid4())
    again = (await inventory.stub.Reconcile(request)).report
    assert again.reconciliation_id == report.reconciliation_id
    assert (await inventory.level(b, "WEST-1")).on_hand == 3


async def test_complete_snapshot_counts_missing_skus_as_zero(inventory: Inventory) -> None:
    a, b = await inventory.new_skus(2)
    await inventory.receive(a, "B2B-ONLY", 4)
    await inventory.receive(b, "B2B-ONLY", 6)
    report = (
        await inventory.stub.Reconcile(
            pb.ReconcileRequest(
                request_id=str(uuid.uuid4()),
                warehouse_id="B2B-ONLY",
                snapshot_id=f"snap-{uuid.uuid4().hex[:6]}",
                snapshot_taken_at=stamp(datetime.now(UTC)),
                complete_snapshot=True,
                apply_corrections=False,
                lines=[pb.SnapshotLine(sku=a, on_hand=4)],
            )
        )
    ).report
    mine = [line for line in report.drifts if line.sku in (a, b)]
    assert [(line.sku, line.drift, line.corrected) for line in mine] == [(b, -6, False)]
    assert (await inventory.level(b, "B2B-ONLY")).on_hand == 6
