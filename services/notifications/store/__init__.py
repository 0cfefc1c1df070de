"""Persistence of the notifications service: tables and Alembic migrations."""
