"""Persistence of the order_gateway service: tables and Alembic migrations."""
