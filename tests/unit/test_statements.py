"""The chassis's built-once statements: the SQL they make, and that each shape is built once."""

from __future__ import annotations

import re

from sqlalchemy import Column, Integer, MetaData, Table, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from chassis.statements import insert_row, select_where, update_where, where_params

DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
ITEM = Table(
    "item",
    MetaData(),
    Column("item_id", Text, primary_key=True),
    Column("owner", Text),
    Column("quantity", Integer),
    Column("note", Text),
)


def sql(statement: ClauseElement) -> str:
    """The statement's SQL with its parameter names (casts left out)."""
    compiled = str(statement.compile(dialect=DIALECT))
    return re.sub(r"::[A-Z]+", "", " ".join(compiled.split()))


def test_update_where_sets_the_columns_by_name_and_matches_the_keys_by_where_names() -> None:
    statement = update_where(ITEM, ("item_id", "owner"), frozenset({"quantity", "owner"}))
    assert sql(statement) == (
        "UPDATE item SET owner=%(owner)s, quantity=%(quantity)s "
        "WHERE item.item_id = %(where_item_id)s AND item.owner = %(where_owner)s"
    )


def test_insert_row_skips_duplicates_and_returns_a_column_when_asked() -> None:
    plain = insert_row(ITEM, frozenset({"item_id", "quantity"}))
    assert sql(plain) == "INSERT INTO item (item_id, quantity) VALUES (%(item_id)s, %(quantity)s)"
    skipping = insert_row(
        ITEM, frozenset({"item_id", "quantity"}), on_conflict="nothing", returning="item_id"
    )
    assert sql(skipping) == (
        "INSERT INTO item (item_id, quantity) VALUES (%(item_id)s, %(quantity)s) "
        "ON CONFLICT DO NOTHING RETURNING item.item_id"
    )


def test_select_where_selects_all_or_some_columns_and_may_lock() -> None:
    assert sql(select_where(ITEM, ("item_id",))) == (
        "SELECT item.item_id, item.owner, item.quantity, item.note FROM item "
        "WHERE item.item_id = %(where_item_id)s"
    )
    assert sql(select_where(ITEM, ("owner",), columns=("note",), for_update=True)) == (
        "SELECT item.note FROM item WHERE item.owner = %(where_owner)s FOR UPDATE"
    )


def test_each_shape_is_built_once() -> None:
    columns = frozenset({"quantity"})
    assert update_where(ITEM, ("item_id",), columns) is update_where(
        ITEM, ("item_id",), frozenset({"quantity"})
    )
    assert update_where(ITEM, ("item_id",), columns) is not update_where(ITEM, ("owner",), columns)
    assert insert_row(ITEM, columns) is insert_row(ITEM, frozenset({"quantity"}))
    assert select_where(ITEM, ("item_id",)) is select_where(ITEM, ("item_id",))


def test_where_params_name_the_key_parameters() -> None:
    assert where_params(item_id="A-1", owner="me") == {"where_item_id": "A-1", "where_owner": "me"}
