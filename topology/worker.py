"""Running one pipeline worker: prepare topics and tables, then hand over to Faust."""

from __future__ import annotations

import logging
import os
import threading

import faust

from schemas.codec import default_codec
from sinks.clickhouse import wait_until_ready
from sinks.migrations import migrate, verify_tables
from sinks.tables import ALL_TABLES
from streams.shadow.outcome_feed import read_outcomes
from topology import topics
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
    outcomes, ends = read_outcomes(settings, topics.OUTCOMES, default_codec())
    app = create_app(settings, outcomes, ends)
    log.info("worker %s: broker %s, HTTP on %s:%d", settings.app_id, settings.broker,
             settings.web_host, settings.web_port)
    BoundedStopWorker(app, loglevel=settings.log_level,
                      stop_timeout=settings.stop_timeout_seconds).execute_from_commandline()


class BoundedStopWorker(faust.Worker):
    """A Faust worker that stops within ``stop_timeout`` seconds of being told to.

    Faust's stop waits, without a limit, for every message taken to be acked; a batch whose rows
    cannot be stored (ClickHouse down) is never acked, so the stop would never end. A watchdog
    thread started when the stop begins exits the process after ``stop_timeout``: what was not
    stored stays unacknowledged and is consumed again after a restart, so nothing is lost."""

    def __init__(self, *args: object, stop_timeout: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._stop_timeout = stop_timeout

    async def on_stop(self) -> None:
        """Start the watchdog, then stop as Faust does."""
        watchdog = threading.Timer(self._stop_timeout, _exit_stuck, (self._stop_timeout,))
        watchdog.daemon = True
        watchdog.start()
        await super().on_stop()


def _exit_stuck(timeout: float) -> None:
    log.critical("the worker did not stop within %.0fs (unstored batches: ClickHouse down?); "
                 "exiting now, their messages stay unacknowledged and will be consumed again",
                 timeout)
    logging.shutdown()
    os._exit(75)
