"""Persistence of the fulfillment service: tables and Alembic migrations."""
