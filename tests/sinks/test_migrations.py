"""Migrations apply once, are recorded, and create the columns the sink inserts."""

from __future__ import annotations

from sinks.clickhouse import connect
from sinks.migrations import MIGRATIONS, migrate
from sinks.tables import WORKFLOW_EVENTS
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
