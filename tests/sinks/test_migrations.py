"""Migrations apply once, are recorded, and create the columns the sink inserts."""

from __future__ import annotations

import pytest

from sinks.clickhouse import connect
from sinks.migrations import MIGRATIONS, SchemaMismatch, migrate, verify_tables
from sinks.tables import ALL_TABLES, WORKFLOW_EVENTS
from topology.settings import Settings


def test_migrations_are_versioned_and_idempotent(settings: Settings) -> None:
    isolated = settings.with_overrides(clickhouse_database=f"mig_{settings.app_id[-8:]}")
    assert migrate(isolated) == [m.version for m in MIGRATIONS]
    assert migrate(isolated) == []
    client = connect(isolated)
    recorded = client.execute("SELECT version, name FROM schema_migrations FINAL ORDER BY version")
    assert recorded == [(m.version, m.name) for m in MIGRATIONS]
    columns = {name for name, *_ in client.execute(f"DESCRIBE TABLE {WORKFLOW_EVENTS.name}")}
    assert set(WORKFLOW_EVENTS.columns) <= columns
    client.execute(f"DROP DATABASE {isolated.clickhouse_database}")


def test_a_table_lacking_a_column_stops_the_worker_with_its_name(settings: Settings) -> None:
    isolated = settings.with_overrides(clickhouse_database=f"old_{settings.app_id[-8:]}")
    migrate(isolated)
    verify_tables(isolated, ALL_TABLES)
    client = connect(isolated)
    client.execute("ALTER TABLE anomalies DROP COLUMN message")
    with pytest.raises(SchemaMismatch, match=r"anomalies lacks columns \[.message.\]"):
        verify_tables(isolated, ALL_TABLES)
    client.execute(f"DROP DATABASE {isolated.clickhouse_database}")
