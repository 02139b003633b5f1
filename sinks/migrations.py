"""Versioned, idempotent ClickHouse migrations.

Each migration is a version, a name and its statements; applied versions are recorded in
``schema_migrations``. A released migration is never edited: a change is a new version. Every
statement is idempotent on its own (``IF NOT EXISTS``), so a migration interrupted half-way, or
run by two workers at once, converges. SQL here must run on ClickHouse 18.16 and current releases:
no Map, DateTime64 or TTL; epoch milliseconds in integer columns beside DEFAULT-computed DateTime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sinks.clickhouse import ClickHouseAddress, connect
from sinks.tables import TableSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One step of the ClickHouse schema."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "workflow events: the shadow workflow repository", (
        """
        CREATE TABLE IF NOT EXISTS workflow_events (
            workflow_id String,
            run_id String,
            workflow_type String,
            sequence UInt64,
            row_id UInt64 DEFAULT cityHash64(workflow_id, run_id, sequence),
            kind String,
            timestamp_ms UInt64,
            event_time DateTime DEFAULT toDateTime(intDiv(timestamp_ms, 1000)),
            event_date Date DEFAULT toDate(toDateTime(intDiv(timestamp_ms, 1000))),
            action_id String,
            action_type String,
            attempt UInt32,
            attributes Nested(key String, value Float64),
            labels Nested(key String, value String),
            declared_cpu_cores Nullable(Float64),
            declared_memory_bytes Nullable(Int64),
            declared_network_bytes Nullable(Int64),
            declared_cost Nullable(Float64),
            state Nested(name String, value String),
            error String,
            source_partition UInt32,
            source_offset UInt64
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(event_date)
        ORDER BY (workflow_id, run_id, sequence)
        """,
    )),
    Migration(2, "anomalies found by the mirrors and the forecasts", (
        """
        CREATE TABLE IF NOT EXISTS anomalies (
            row_id UInt64,
            anomaly_id String,
            workflow_id String,
            run_id String,
            sequence UInt64,
            kind String,
            severity String,
            score Float64,
            detected_ms UInt64,
            detected_time DateTime DEFAULT toDateTime(intDiv(detected_ms, 1000)),
            detected_date Date DEFAULT toDate(toDateTime(intDiv(detected_ms, 1000))),
            message String,
            action_id String,
            variables Nested(
                name String, status String, primary_value String, mirror_value String,
                weight Float64, contribution Float64)
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(detected_date)
        ORDER BY (workflow_id, run_id, kind, sequence, action_id)
        """,
    )),
    Migration(3, "shadow workflows: predictions, feedback, telemetry windows, reservations", (
        """
        CREATE TABLE IF NOT EXISTS predictions (
            workflow_id String,
            run_id String,
            workflow_type String,
            action_id String,
            action_type String,
            predicted_next UInt8,
            source String,
            confidence Float64,
            memory_bytes Float64,
            cpu_cores Float64,
            network_bytes Float64,
            cost Float64,
            reservation_id String,
            issued_ms UInt64,
            issued_date Date DEFAULT toDate(toDateTime(intDiv(issued_ms, 1000)))
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(issued_date)
        ORDER BY (workflow_id, run_id, action_id)
        """,
        """
        CREATE TABLE IF NOT EXISTS feedback (
            workflow_id String,
            run_id String,
            workflow_type String,
            action_id String,
            action_type String,
            source String,
            confidence Float64,
            predicted_memory_bytes Float64,
            predicted_cpu_cores Float64,
            predicted_network_bytes Float64,
            predicted_cost Float64,
            actual_memory_bytes Float64,
            actual_cpu_cores Float64,
            actual_network_bytes Float64,
            actual_cost Float64,
            deviation Float64,
            underprovisioned UInt8,
            runtime_s Float64,
            lead_time_ms Int64,
            recorded_ms UInt64,
            recorded_date Date DEFAULT toDate(toDateTime(intDiv(recorded_ms, 1000)))
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(recorded_date)
        ORDER BY (workflow_id, run_id, action_id)
        """,
        """
        CREATE TABLE IF NOT EXISTS action_usage (
            workflow_id String,
            run_id String,
            action_id String,
            action_type String,
            attempt UInt32,
            window_start_ms UInt64,
            window_start DateTime DEFAULT toDateTime(intDiv(window_start_ms, 1000)),
            window_date Date DEFAULT toDate(toDateTime(intDiv(window_start_ms, 1000))),
            batch_first_ms UInt64,
            samples UInt32,
            cpu_peak Float64,
            cpu_mean Float64,
            memory_peak Float64,
            memory_mean Float64,
            network_bytes Float64,
            cost Float64
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(window_date)
        ORDER BY (workflow_id, run_id, action_id, attempt, window_start_ms, batch_first_ms)
        """,
        """
        CREATE TABLE IF NOT EXISTS reservations (
            command_id String,
            op String,
            reservation_id String,
            workflow_id String,
            run_id String,
            action_id String,
            action_type String,
            memory_bytes Float64,
            cpu_cores Float64,
            network_bytes Float64,
            cost Float64,
            confidence Float64,
            source String,
            issued_ms UInt64,
            expires_ms UInt64,
            reason String,
            issued_date Date DEFAULT toDate(toDateTime(intDiv(issued_ms, 1000)))
        ) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(issued_date)
        ORDER BY (workflow_id, run_id, command_id)
        """,
    )),
)


def migrate(settings: ClickHouseAddress,
            migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Create the configured database if needed and apply the migrations it lacks; return the
    versions applied."""
    database = settings.clickhouse_database
    bootstrap = connect(settings, database="default")
    try:
        bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    finally:
        bootstrap.disconnect()
    client = connect(settings)
    try:
        client.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
            "ENGINE = ReplacingMergeTree() ORDER BY version")
        done = {v for (v,) in client.execute("SELECT version FROM schema_migrations")}
        applied: list[int] = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            for statement in migration.statements:
                client.execute(statement)
            client.execute("INSERT INTO schema_migrations (version, name) VALUES",
                           [(migration.version, migration.name)])
            log.info("applied ClickHouse migration %d: %s", migration.version, migration.name)
            applied.append(migration.version)
        return applied
    finally:
        client.disconnect()


class SchemaMismatch(RuntimeError):
    """A table lacks columns this version of shadowflow writes."""


def verify_tables(settings: ClickHouseAddress, specs: Iterable[TableSpec]) -> None:
    """Fail fast, naming table and columns, when the database's tables lack what the sink
    inserts (a database made by another version): a stalled sink retrying a doomed insert is
    harder to read at 3 a.m. than a refusal to start."""
    client = connect(settings)
    try:
        for spec in specs:
            present = {name for name, *_ in client.execute(f"DESCRIBE TABLE {spec.name}")}
            missing = [c for c in spec.columns if c not in present]
            if missing:
                raise SchemaMismatch(
                    f"table {settings.clickhouse_database}.{spec.name} lacks columns {missing}: "
                    "it was created by another version of shadowflow. Drop the database (or "
                    "migrate it by hand) and start again.")
    finally:
        client.disconnect()
