"""Reads on the hot path, where building an ORM query costs more than running it.

A client's poll reads one instance row and its status history. Compiling those ORM queries was
half of the poll's CPU, and RawQuerySet's per-call column matching a fifth of what was left, so
each statement here is written once per database connection from the model's own metadata, and
its values go through the converters the ORM itself would apply (from_db_value, the backend's
datetime and JSON handling)."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

from .models import Instance, InstanceEvent


class Statement:
    """A SELECT of some of a model's fields. `where` and `order_by` name fields in braces
    ("{instance} = %s"); only the model's quoted column names are formatted in, values are
    always query parameters."""

    def __init__(self, model, fields: list[str], where: str, order_by: str = ""):
        self.model, self.fields, self.where, self.order_by = model, fields, where, order_by
        # One prepared form per connection object (one per thread).
        self._prepared: WeakKeyDictionary = WeakKeyDictionary()

    def _prepare(self, conn) -> tuple[str, list[tuple]]:
        meta = self.model._meta
        quote = conn.ops.quote_name
        fields = [meta.get_field(name) for name in self.fields]
        names = {f.name: quote(f.column) for f in meta.concrete_fields}
        sql = (
            f"SELECT {', '.join(quote(f.column) for f in fields)} "  # noqa: S608
            f"FROM {quote(meta.db_table)} WHERE {self.where.format(**names)}"
        )
        if self.order_by:
            sql += f" ORDER BY {self.order_by.format(**names)}"
        converters = []
        for index, field in enumerate(fields):
            column = field.get_col(meta.db_table)
            found = conn.ops.get_db_converters(column) + field.get_db_converters(conn)
            if found:
                converters.append((index, found, column))
        return sql, converters

    def rows(self, params: list) -> list[list]:
        conn = connections[DEFAULT_DB_ALIAS]  # this thread's connection
        prepared = self._prepared.get(conn)
        if prepared is None:
            prepared = self._prepared[conn] = self._prepare(conn)
        sql, converters = prepared
        if conn.health_check_enabled and not conn.health_check_done and not conn.in_atomic_block:
            # CONN_HEALTH_CHECKS would first send SELECT 1 on a reused connection: half of a
            # PostgreSQL poll's round trips. This read is the check instead: when it fails on a
            # connection that turns out unusable, it runs once more on a new one, which is what
            # the check would have done. Reads only, so running one twice changes nothing.
            conn.health_check_done = True
            try:
                rows = self._fetch(conn, sql, params)
            except (OperationalError, InterfaceError):
                if conn.connection is not None and conn.is_usable():
                    raise  # the connection is fine: the error is the statement's own
                conn.close()
                rows = self._fetch(conn, sql, params)
        else:
            rows = self._fetch(conn, sql, params)
        for values in rows:
            for index, functions, column in converters:
                for convert in functions:
                    values[index] = convert(values[index], column, conn)
        return rows

    @staticmethod
    def _fetch(conn, sql: str, params: list) -> list[list]:
        if conn.queries_logged or conn.execute_wrappers or conn.needs_rollback:
            # Through Django's cursor: counted and logged (DEBUG, tests), wrapped, and refused
            # with Django's own error in a transaction that must roll back.
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return [list(row) for row in cursor.fetchall()]
        # Otherwise one driver cursor per connection serves every statement: creating and
        # wrapping a cursor per query was a twentieth of a PostgreSQL poll. Errors still become
        # Django's (OperationalError answers 503) and mark the connection for a check.
        conn.close_if_health_check_failed()
        conn.ensure_connection()
        with conn.wrap_database_errors:
            cursor = _driver_cursor(conn)
            cursor.execute(sql, params)
            return [list(row) for row in cursor.fetchall()]


def _driver_cursor(conn):
    """The driver cursor kept for this connection, made anew when the connection is."""
    kept = getattr(conn, "_lookups_cursor", None)
    if kept is not None and kept[0] is conn.connection:
        return kept[1]
    cursor = conn.create_cursor()
    conn._lookups_cursor = (conn.connection, cursor)
    return cursor


_INSTANCE = Statement(
    Instance, [f.attname for f in Instance._meta.concrete_fields], where="{id} = %s"
)
# What a poll's body (InstanceDetailOut) and its billing figures (history.billing) read: fewer than
# half of the model's columns, so the poll fetches and converts only these. A field missing here
# would be loaded by a second query on first use (tests count the poll's queries).
POLL_FIELDS = [
    "id",
    "name",
    "status",
    "desired_status",
    "gpu_num",
    "region",
    "product_name",
    "template_id",
    "rootfs_size",
    "novita_instance_id",
    "port_mappings",
    "connection_details",
    "auto_stop_enabled",
    "auto_stop_minutes",
    "auto_stop_at",
    "failure_reason",
    "price_per_hour",
    "created_at",
    "updated_at",
    "ready_at",
    "last_used_at",
    "stopped_at",
]
# In the model's order: Model.from_db takes a partial row's values in that order.
_POLL = Statement(
    Instance,
    [f.attname for f in Instance._meta.concrete_fields if f.attname in POLL_FIELDS],
    where="{id} = %s",
)
_STATUS_CHANGES = Statement(
    InstanceEvent,
    ["created_at", "to_status", "reason"],
    where="{instance} = %s AND {from_status} <> {to_status}",
    order_by="{created_at}, {id}",
)


def instance_by_id(instance_id: str) -> Instance | None:
    """The instance with this id (every field loaded), or None."""
    rows = _INSTANCE.rows([instance_id])
    if not rows:
        return None
    return Instance.from_db(DEFAULT_DB_ALIAS, _INSTANCE.fields, rows[0])


# A set: Model.from_db asks, for each of the model's 51 fields, whether it is among these.
_POLL_LOADED = frozenset(_POLL.fields)


def instance_for_poll(instance_id: str) -> Instance | None:
    """The instance with this id, only POLL_FIELDS loaded (for GET /api/instances/{id}), or None."""
    rows = _POLL.rows([instance_id])
    if not rows:
        return None
    return Instance.from_db(DEFAULT_DB_ALIAS, _POLL_LOADED, rows[0])


def status_changes(instance_id: str) -> list[tuple]:
    """(when, new status, reason) of each of the instance's status changes, oldest first."""
    return [tuple(row) for row in _STATUS_CHANGES.rows([instance_id])]
