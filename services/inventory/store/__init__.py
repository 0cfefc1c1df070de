"""Persistence of the inventory service: tables and Alembic migrations."""
