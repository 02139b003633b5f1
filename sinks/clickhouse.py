"""Connections to ClickHouse and the columnar insert the batching sink calls."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError


class ClickHouseAddress(Protocol):
    """Where ClickHouse is and who to be there: what the sinks need of the settings."""

    clickhouse_host: str
    clickhouse_port: int
    clickhouse_user: str
    clickhouse_password: str
    clickhouse_database: str
    clickhouse_secure: bool
    clickhouse_ca_file: str
    clickhouse_verify: bool


def connect(settings: ClickHouseAddress, database: str | None = None) -> Client:
    """A client for the configured server; ``database`` defaults to the configured one.

    The client connects lazily, on its first query, and reconnects after a network error. With
    ``clickhouse_secure`` it speaks TLS, verifying the server against ``clickhouse_ca_file``
    (else the system's CAs) unless ``clickhouse_verify`` is off.
    """
    tls: dict[str, Any] = {}
    if settings.clickhouse_secure:
        tls = {"secure": True, "verify": settings.clickhouse_verify}
        if settings.clickhouse_ca_file:
            tls["ca_certs"] = settings.clickhouse_ca_file
    return Client(
        host=settings.clickhouse_host, port=settings.clickhouse_port,
        user=settings.clickhouse_user, password=settings.clickhouse_password,
        database=settings.clickhouse_database if database is None else database,
        connect_timeout=5, send_receive_timeout=60, sync_request_timeout=5,
        client_name="shadowflow", **tls,
    )


def wait_until_ready(settings: ClickHouseAddress, timeout: float = 30.0) -> str:
    """Wait until ClickHouse answers a query; return its version. ``TimeoutError`` if it never
    does, naming the address and the last error."""
    client = connect(settings, database="default")
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(client.execute("SELECT version()")[0][0])
        except (ClickHouseError, OSError, EOFError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"ClickHouse at {settings.clickhouse_host}:{settings.clickhouse_port} did not "
                    f"answer within {timeout:.0f}s: {exc}") from exc
            time.sleep(0.2)
        finally:
            client.disconnect()


class ColumnarWriter:
    """Inserts column batches with one client. Not thread-safe: the sink calls it from one
    dedicated thread."""

    def __init__(self, settings: ClickHouseAddress) -> None:
        self._client = connect(settings)

    def insert(self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]) -> None:
        """Insert ``data`` (one sequence per column, equal lengths) into ``table``."""
        self._client.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES", data, columnar=True)

    def close(self) -> None:
        """Close the connection."""
        self._client.disconnect()
