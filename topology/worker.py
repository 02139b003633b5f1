"""Running one pipeline worker: prepare topics and tables, then hand over to Faust."""

from __future__ import annotations

import logging

import faust

from sinks.clickhouse import stored_feedback, wait_until_ready
from sinks.migrations import migrate, verify_tables
from sinks.tables import ALL_TABLES
from topology.app import create_app
from topology.settings import Settings
from topology.topics import ensure_topics

log = logging.getLogger(__name__)


def prepare(settings: Settings) -> None:
    """Create missing topics and apply missing migrations; both are idempotent."""
    ensure_topics(settings)
    version = wait_until_ready(settings)
    migrate(settings)
    verify_tables(settings, ALL_TABLES)
    log.info("ClickHouse %s at %s:%d ready, database %s", version, settings.clickhouse_host,
             settings.clickhouse_port, settings.clickhouse_database)


def run_worker(settings: Settings) -> None:
    """Run a worker until it is stopped (SIGTERM or Ctrl-C); does not return normally."""
    prepare(settings)
    app = create_app(settings, stored_feedback(settings))
    log.info("worker %s: broker %s, HTTP on %s:%d", settings.app_id, settings.broker,
             settings.web_host, settings.web_port)
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()
