"""shadowflow's configuration: one typed object, read from ``SHADOWFLOW_*`` environment variables.

Every setting has a default that works with the local stack (``shadowflow stack up``), so nothing
needs to be set to try shadowflow; production sets the addresses. ``shadowflow config`` prints the
values in force. The README's configuration table lists the same names and documentation.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PREFIX = "SHADOWFLOW_"


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def _setting(default: Any, doc: str, secret: bool = False) -> Any:
    # Secrets never show in repr(), `shadowflow config`, logs or error messages (``masked``).
    return field(default=default, metadata={"doc": doc, "secret": secret}, repr=not secret)


MASK = "****"
"""What a secret that is set shows as."""

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Settings:
    """All of shadowflow's settings. The environment name of ``x_y`` is ``SHADOWFLOW_X_Y``."""

    broker: str = _setting(
        "127.0.0.1:19092", "Kafka bootstrap servers, comma-separated host:port.")
    app_id: str = _setting(
        "shadowflow", "Faust application id: the consumer group and internal topic prefix.")
    partitions: int = _setting(
        4, "Partitions of every wf.* and shadow.* topic (wf.* must match: co-partitioned).")
    replication_factor: int = _setting(1, "Replication factor of the topics shadowflow creates.")
    clickhouse_host: str = _setting("127.0.0.1", "ClickHouse server host.")
    clickhouse_port: int = _setting(19000, "ClickHouse native-protocol (TCP) port.")
    clickhouse_user: str = _setting("default", "ClickHouse user.")
    clickhouse_password: str = _setting("", "ClickHouse password.", secret=True)
    clickhouse_database: str = _setting("shadowflow", "ClickHouse database holding the tables.")
    clickhouse_secure: bool = _setting(
        False, "Connect to ClickHouse over TLS (its secure native port, usually 9440).")
    clickhouse_ca_file: str = _setting(
        "", "CA certificate file (PEM) to verify ClickHouse's TLS certificate with (empty: the "
        "system's CAs).")
    clickhouse_verify: bool = _setting(
        True, "Verify ClickHouse's TLS certificate (turn off only for a test server).")
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", "How every Kafka client (Faust's and confluent-kafka's) connects: "
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", "SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str = _setting("", "SASL user name (required with SASL_*).")
    kafka_sasl_password: str = _setting("", "SASL password (required with SASL_*).",
                                        secret=True)
    kafka_ssl_ca_file: str = _setting(
        "", "CA certificate file (PEM) to verify the brokers with, with SSL or SASL_SSL "
        "(empty: the system's CAs).")
    kafka_ssl_cert_file: str = _setting(
        "", "Client certificate file (PEM) for TLS client authentication (needs the key file).")
    kafka_ssl_key_file: str = _setting("", "Private key file (PEM) of the client certificate.")
    kafka_ssl_key_password: str = _setting(
        "", "Password of the client key file, if it is encrypted.", secret=True)
    web_host: str = _setting("127.0.0.1", "Address the worker's HTTP API binds.")
    web_port: int = _setting(6066, "Port of the worker's HTTP API.")
    web_advertised_url: str = _setting(
        "", "URL the other workers reach this worker's HTTP API at, when they forward it a "
        "request about a workflow it owns (`http://host:port`; empty: "
        "`http://SHADOWFLOW_WEB_HOST:SHADOWFLOW_WEB_PORT`, with this host's name when "
        "SHADOWFLOW_WEB_HOST binds every interface, `0.0.0.0` or `::`). Each worker needs its "
        "own.")
    api_token: str = _setting(
        "", "Bearer token every HTTP route but /metrics and /healthz requires "
        "(`Authorization: Bearer <token>`); the same on every worker, since forwarded requests "
        "keep it. Empty (and no token file): the API is open to anyone who can reach it.",
        secret=True)
    api_token_file: str = _setting(
        "", "File whose first line is the API token, read at start (in place of "
        "SHADOWFLOW_API_TOKEN, which must then be empty).")
    web_forward_timeout_seconds: float = _setting(
        10.0, "Longest a worker waits for the owning worker's answer to a forwarded request "
        "before it answers 504.")
    consumer_batch: int = _setting(
        2000, "Kafka messages an agent takes at a time before it processes and stores them.")
    consumer_batch_seconds: float = _setting(
        0.5, "Longest a batch stays open after its first message while more messages are "
        "queued behind it (a backlog: the batch fills to SHADOWFLOW_CONSUMER_BATCH first).")
    consumer_batch_linger_seconds: float = _setting(
        0.05, "Longest a batch stays open after its first message once nothing more is queued "
        "(light load; it closes sooner when no message arrives for a fifth of this, twice): "
        "what an event waits for its batch (README, Benchmarks: reservation latency).")
    consumer_fetch_wait_ms: int = _setting(
        100, "Longest the agents' consumer lets the broker hold a fetch while little is waiting "
        "(Faust's own is 1,500 ms, which delays every event when the load is light).")
    sink_batch_rows: int = _setting(
        20000, "Rows buffered per ClickHouse table before an insert is started.")
    sink_flush_seconds: float = _setting(
        1.0, "Longest a row waits in the buffer before its insert is started.")
    sink_max_pending_rows: int = _setting(
        100_000, "Rows handed to the sink but not yet stored before agents wait (back-pressure).")
    sink_retry_max_seconds: float = _setting(
        10.0, "Ceiling of the exponential back-off between retries of a failed insert.")
    session_timeout_seconds: float = _setting(
        10.0, "Kafka consumer session timeout: how soon a crashed worker's partitions move.")
    stop_timeout_seconds: float = _setting(
        60.0, "Longest a stopping worker waits for unstored batches (ClickHouse down, a stuck "
        "rebalance) before it exits anyway; their messages stay unacknowledged, nothing is lost.")
    stack_dir: Path = _setting(
        Path.home() / ".cache" / "shadowflow" / "stack",
        "Where `shadowflow stack` keeps the local broker's and ClickHouse's pid files, "
        "configuration, data and logs.")
    stack_clickhouse_http_port: int = _setting(
        18123, "HTTP port of the local stack's ClickHouse (its TCP port is clickhouse_port).")
    mirror_reorder_window: int = _setting(
        10_000, "Most out-of-order events a mirror holds for one run before it declares the gap "
        "before them missing.")
    mirror_gap_seconds: float = _setting(
        30.0, "How long a gap in a run's history may stay open before it is declared missing "
        "(a MISSING_EVENTS anomaly) and skipped.")
    mirror_compare_wait_seconds: float = _setting(
        30.0, "How long a primary snapshot waits for the mirror to reach its sequence.")
    mirror_retention_seconds: float = _setting(
        300.0, "How long a finished run's mirror stays in memory (and answers the API).")
    confidence_threshold: float = _setting(
        0.8, "Below this confidence a forecast falls back to the historical percentile of the "
        "action type's past peaks.")
    likely_next_probability: float = _setting(
        0.3, "Reserve ahead for the action types at least this likely to be scheduled next.")
    pool_memory_gib: float = _setting(
        512.0, "Memory capacity of the reservation pool, in GiB: the whole deployment's, shared "
        "out equally among the partitions.")
    pool_cpu_cores: float = _setting(
        256.0, "CPU capacity of the reservation pool, in cores: the whole deployment's, shared "
        "out equally among the partitions.")
    reservation_ttl_seconds: float = _setting(
        600.0, "A reservation whose action has not started after this long lapses.")
    reservation_max_lifetime_seconds: float = _setting(
        86_400.0, "A reservation whose action started this long ago is released even though its "
        "completion never arrived (a lost event must not hold capacity for ever).")
    shadow_seal_every: int = _setting(
        50, "Completed actions a run's shadow record gathers before they are written once in a "
        "sealed chunk of their own: a run's record, rewritten at each step touching it, stays "
        "bounded however many actions the run has (larger: fewer chunks, dearer steps).")
    telemetry_window_seconds: float = _setting(
        10.0, "Width of the tumbling windows telemetry is aggregated into (action_usage).")
    feedback_grace_seconds: float = _setting(
        5.0, "How long after an action completes its telemetry may still arrive before its "
        "forecast is scored.")
    feedback_max_wait_seconds: float = _setting(
        600.0, "How long a completed action waits for any telemetry before its forecast is "
        "given up unscored (nothing learned): without telemetry, waiting actions would pile up "
        "and their runs' records grow.")
    miss_alert_ratio: float = _setting(
        2.0, "Alert when an action used more than this times, or less than 1/this of, its "
        "forecast (and always when it exceeded its memory allocation).")
    definitions_path: str = _setting(
        "", "A workflow-definition JSON file, or a folder of them, loaded at start "
        "(empty: none; definitions registered through the API are kept on shadow.definitions).")
    traces_dir: Path = _setting(
        Path("../shared/traces"),
        "Folder of real workflow traces (WfFormat JSON) the demo replays when given no files.")
    temporal_address: str = _setting(
        "127.0.0.1:7233", "Temporal frontend (host:port) `shadowflow temporal` follows.")
    temporal_namespace: str = _setting("default", "Temporal namespace to follow.")
    temporal_query: str = _setting(
        "", "Visibility query selecting the executions to follow, for example "
        "`WorkflowType='ShadowedPipeline'` or `TaskQueue='orders'` (empty: every execution).")
    temporal_task_queue: str = _setting(
        "shadowflow-demo", "Task queue a promoted workflow is started on.")
    temporal_checkpoint_file: Path = _setting(
        Path.home() / ".cache" / "shadowflow" / "temporal-checkpoints.json",
        "Where the adapter records the last event published per run, to resume after a "
        "restart.")
    temporal_snapshot_every: int = _setting(
        20, "Ask a followed workflow for its state (the shadowflow_state query) at the end of "
        "a workflow task once this many events arrived since the last time.")
    temporal_poll_seconds: float = _setting(
        2.0, "How often the adapter lists the executions to follow.")
    temporal_shadowflow_url: str = _setting(
        "", "The shadowflow worker `shadowflow temporal promote` asks for the mirror's state "
        "(empty: this host's, SHADOWFLOW_WEB_HOST:SHADOWFLOW_WEB_PORT).")
    log_level: str = _setting("info", "Log level of the worker and the CLI.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default: ``os.environ``); unset names keep their default."""
        environ = os.environ if environ is None else environ
        overrides: dict[str, Any] = {}
        for f in fields(cls):
            name = env_name(f.name)
            if name in environ:
                overrides[f.name] = _parse(name, environ[name], type(f.default))
        settings = cls(**overrides)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``SettingsError`` for values no deployment can run with: the name of the first
        bad setting's variable. Every number must be finite (``nan``, ``inf`` parse as floats)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingsError(f"{env_name(f.name)} must be a finite number, got {value!r}")
        for name in ("partitions", "replication_factor", "consumer_batch", "sink_batch_rows",
                     "sink_max_pending_rows", "mirror_reorder_window", "temporal_snapshot_every",
                     "shadow_seal_every"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{env_name(name)} must be at least 1")
        for name in ("consumer_batch_seconds", "consumer_batch_linger_seconds",
                     "sink_flush_seconds", "sink_retry_max_seconds", "session_timeout_seconds",
                     "stop_timeout_seconds", "mirror_gap_seconds",
                     "mirror_compare_wait_seconds", "mirror_retention_seconds",
                     "pool_memory_gib", "pool_cpu_cores", "reservation_ttl_seconds",
                     "reservation_max_lifetime_seconds",
                     "telemetry_window_seconds", "miss_alert_ratio",
                     "web_forward_timeout_seconds", "temporal_poll_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be positive")
        for name in ("confidence_threshold", "likely_next_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise SettingsError(f"{env_name(name)} must be between 0 and 1")
        for name in ("web_port", "clickhouse_port", "stack_clickhouse_http_port"):
            if not 1 <= getattr(self, name) <= 65535:
                raise SettingsError(f"{env_name(name)} must be a port number (1-65535)")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise SettingsError(f"{env_name(f.name)} must not be negative, got {value!r}")
        if not self.broker.strip():
            raise SettingsError(f"{env_name('broker')} must name at least one host:port")
        self._validate_security()
        if self.web_advertised_url:
            problem = url_problem(self.web_advertised_url)
            if problem:
                raise SettingsError(f"{env_name('web_advertised_url')}="
                                    f"{self.web_advertised_url!r}: {problem}")

    def _validate_security(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(f"{env_name('kafka_security_protocol')}={protocol!r}: one of "
                                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}")
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise SettingsError(f"{env_name('kafka_sasl_mechanism')}={mechanism!r}: one of "
                                f"{', '.join(KAFKA_SASL_MECHANISMS)}")
        if protocol.startswith("SASL_") and not (self.kafka_sasl_username
                                                 and self.kafka_sasl_password):
            raise SettingsError(f"{env_name('kafka_security_protocol')}={protocol} needs "
                                f"{env_name('kafka_sasl_username')} and "
                                f"{env_name('kafka_sasl_password')}")
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise SettingsError(f"give both {env_name('kafka_ssl_cert_file')} and "
                                f"{env_name('kafka_ssl_key_file')}, or neither")
        for name in ("kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file",
                     "clickhouse_ca_file", "api_token_file"):
            path = getattr(self, name)
            if path and not Path(path).expanduser().is_file():
                raise SettingsError(f"{env_name(name)}={path!r}: no such file")
        if self.api_token_file and self.api_token:
            raise SettingsError(f"give {env_name('api_token')} or {env_name('api_token_file')}, "
                                "not both")

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some settings changed (for tests and the CLI)."""
        settings = replace(self, **changes)
        settings.validate()
        return settings

    @property
    def mirror_retention_ms(self) -> int:
        """``mirror_retention_seconds`` in milliseconds."""
        return int(self.mirror_retention_seconds * 1000)

    @property
    def advertised_url(self) -> str:
        """The URL peers forward requests to: ``web_advertised_url``, or one made of the web
        host (this host's name when it binds every interface) and port."""
        if self.web_advertised_url:
            return self.web_advertised_url.rstrip("/")
        host = self.web_host
        if host in BIND_ALL:
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    @property
    def retry_after_seconds(self) -> int:
        """What a 503 tells clients to wait: a lost worker's partitions move to the live ones
        within the session timeout."""
        return max(1, math.ceil(self.session_timeout_seconds))

    @property
    def broker_hosts(self) -> list[str]:
        """The bootstrap servers as a list of ``host:port``."""
        return [h.strip() for h in self.broker.split(",") if h.strip()]

    @property
    def faust_broker(self) -> list[str]:
        """The bootstrap servers as Faust URLs."""
        return [f"kafka://{h}" for h in self.broker_hosts]

    @property
    def kafka_config(self) -> dict[str, str]:
        """The bootstrap servers and security settings as confluent-kafka (librdkafka)
        configuration: every confluent-kafka client (producer, consumers, admin) starts from
        it."""
        config = {"bootstrap.servers": self.broker,
                  "security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL_"):
            config.update({"sasl.mechanism": self.kafka_sasl_mechanism,
                           "sasl.username": self.kafka_sasl_username,
                           "sasl.password": self.kafka_sasl_password})
        if self.kafka_security_protocol.endswith("SSL"):
            for key, value in (("ssl.ca.location", self.kafka_ssl_ca_file),
                               ("ssl.certificate.location", self.kafka_ssl_cert_file),
                               ("ssl.key.location", self.kafka_ssl_key_file),
                               ("ssl.key.password", self.kafka_ssl_key_password)):
                if value:
                    config[key] = str(Path(value).expanduser())
        return config

    def api_token_value(self) -> str:
        """The API token in force: ``api_token``, or the first line of ``api_token_file``
        (read now); empty when the API is open."""
        if self.api_token_file:
            lines = Path(self.api_token_file).expanduser().read_text().splitlines()
            token = lines[0].strip() if lines else ""
            if not token:
                raise SettingsError(f"{env_name('api_token_file')}={self.api_token_file!r} "
                                    "holds no token on its first line")
            return token
        return self.api_token

    def secrets(self) -> list[str]:
        """The secret values in force (passwords, the token), for masking in output."""
        values = [getattr(self, f.name) for f in fields(self) if f.metadata.get("secret")]
        if self.api_token_file:
            with contextlib.suppress(OSError, SettingsError):
                values.append(self.api_token_value())
        return [v for v in values if v]

    def masked(self) -> dict[str, str]:
        """Every setting's value as text, secrets that are set shown as ``MASK``."""
        return {f.name: (MASK if f.metadata.get("secret") and getattr(self, f.name)
                         else str(getattr(self, f.name))) for f in fields(self)}


BIND_ALL = ("", "0.0.0.0", "::")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an advertised URL (``http(s)://host[:port]``), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected http://host:port or https://host:port"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "give the worker's root URL, without a path, query or fragment"
    if port == 0:
        return "port 0 is not a port peers can reach"
    if parts.hostname in BIND_ALL:
        return "other workers cannot reach a worker at 0.0.0.0 or ::; give its host name or IP"
    return None


def env_name(setting: str) -> str:
    """The environment variable of a setting: ``web_port`` -> ``SHADOWFLOW_WEB_PORT``."""
    return PREFIX + setting.upper()


def describe() -> Iterator[tuple[str, str, str]]:
    """(environment name, default, documentation) of every setting, in declaration order."""
    for f in fields(Settings):
        yield env_name(f.name), str(f.default), f.metadata["doc"]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(name: str, raw: str, kind: type) -> Any:
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
        if issubclass(kind, Path):
            return Path(text).expanduser()
        return kind(text)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a valid {kind.__name__.lower()}") from None
