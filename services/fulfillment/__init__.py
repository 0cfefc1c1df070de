"""Fulfillment: the durable order workflow from ERP booking to invoice."""
