"""Inventory: available-to-promise, reservations, allocation, ledger and reconciliation."""
