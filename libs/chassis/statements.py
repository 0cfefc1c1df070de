"""Statements built once per shape, executed with parameters.

Building a SQLAlchemy Core statement and its cache key on every call costs more than running
it (an UPDATE of five columns: ~70 µs to build, well under 1 µs to look up here). Hot paths
(every event, every workflow step) take their INSERT / UPDATE / SELECT-by-key from these
memoised builders and pass the values as parameters.

Parameter names: a column's value is passed under the column's own name; the WHERE keys of
:func:`update_where` and :func:`select_where` under ``where_<column>`` (so an UPDATE may also
set its key column).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql import Select, Update
from sqlalchemy.sql.dml import ReturningInsert


def where_params(**keys: Any) -> dict[str, Any]:
    """``where_<column>`` parameters for the key columns of a built statement."""
    return {f"where_{column}": value for column, value in keys.items()}


@cache
def update_where(table: Table, keys: tuple[str, ...], columns: frozenset[str]) -> Update:
    """UPDATE ``table`` SET each of ``columns`` WHERE each of ``keys`` equals its parameter."""
    return (
        update(table)
        .where(*_equal_to_parameters(table, keys))
        .values({column: bindparam(column) for column in sorted(columns)})
    )


@cache
def insert_row(
    table: Table,
    columns: frozenset[str],
    *,
    on_conflict: Literal["error", "nothing"] = "error",
    returning: str | None = None,
) -> Any:
    """INSERT one row of ``columns``; ``on_conflict="nothing"`` skips a duplicate, and
    ``returning`` names a column to return (none when the row was skipped)."""
    statement: Any = insert(table).values({column: bindparam(column) for column in sorted(columns)})
    if on_conflict == "nothing":
        statement = statement.on_conflict_do_nothing()
    if returning is not None:
        returned: ReturningInsert[Any] = statement.returning(table.c[returning])
        return returned
    return statement


@cache
def select_where(
    table: Table, keys: tuple[str, ...], *, columns: tuple[str, ...] = (), for_update: bool = False
) -> Select[Any]:
    """SELECT ``columns`` (all when empty) of ``table`` WHERE each of ``keys`` equals its
    parameter; ``for_update`` locks the rows."""
    selected = [table.c[column] for column in columns] if columns else [table]
    statement = select(*selected).where(*_equal_to_parameters(table, keys))
    return statement.with_for_update() if for_update else statement


def _equal_to_parameters(table: Table, keys: tuple[str, ...]) -> list[Any]:
    return [table.c[key] == bindparam(f"where_{key}") for key in keys]
