"""Kafka and ClickHouse security settings reach every client, and secrets never reach output.

The broker of the test stack (Tansu) has no TLS or SASL listener here, so these tests check the
clients' configuration: every confluent-kafka client is built from ``Settings.kafka_config``,
Faust gets the same protocol, mechanism, user and certificates, and ClickHouse's client its
TLS options. A self-signed certificate made with ``openssl`` stands in for a real CA.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from sinks.clickhouse import connect
from tests.support import ROOT
from topology import redaction
from topology.app import faust_credentials
from topology.settings import MASK, Settings, SettingsError

SECURE_KEYS = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
               "sasl.username": "svc-shadowflow", "sasl.password": "kafka-pass-123"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def secure(cert: Path, key: Path, **more: Any) -> Settings:
    return Settings.from_env({
        "SHADOWFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SHADOWFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SHADOWFLOW_KAFKA_SASL_USERNAME": "svc-shadowflow",
        "SHADOWFLOW_KAFKA_SASL_PASSWORD": "kafka-pass-123",
        "SHADOWFLOW_KAFKA_SSL_CA_FILE": str(cert), "SHADOWFLOW_KAFKA_SSL_CERT_FILE": str(cert),
        "SHADOWFLOW_KAFKA_SSL_KEY_FILE": str(key), **more})


def test_plaintext_by_default() -> None:
    assert Settings().kafka_config == {"bootstrap.servers": "127.0.0.1:19092",
                                       "security.protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


def test_sasl_ssl_reaches_confluent_and_faust_alike(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    settings = secure(cert, key)
    config = settings.kafka_config
    assert SECURE_KEYS.items() <= config.items()
    assert config["ssl.ca.location"] == str(cert) and config["ssl.key.location"] == str(key)
    assert config["ssl.certificate.location"] == str(cert)
    aiokafka = credentials_to_aiokafka_auth(faust_credentials(settings))
    assert aiokafka["security_protocol"] == "SASL_SSL"
    assert aiokafka["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (aiokafka["sasl_plain_username"], aiokafka["sasl_plain_password"]) == (
        "svc-shadowflow", "kafka-pass-123")
    assert aiokafka["ssl_context"] is not None


def test_ssl_alone_and_sasl_plaintext(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    tls = Settings.from_env({"SHADOWFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
                             "SHADOWFLOW_KAFKA_SSL_CA_FILE": str(cert)})
    assert "sasl.username" not in tls.kafka_config
    assert credentials_to_aiokafka_auth(faust_credentials(tls))["security_protocol"] == "SSL"
    sasl = Settings.from_env({"SHADOWFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                              "SHADOWFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                              "SHADOWFLOW_KAFKA_SASL_USERNAME": "u",
                              "SHADOWFLOW_KAFKA_SASL_PASSWORD": "p",
                              "SHADOWFLOW_KAFKA_SSL_CA_FILE": str(cert)})
    assert "ssl.ca.location" not in sasl.kafka_config  # no TLS: no certificates used
    auth = credentials_to_aiokafka_auth(faust_credentials(sasl))
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_PLAINTEXT",
                                                                   "SCRAM-SHA-256")


@pytest.mark.parametrize(("environ", "message"), [
    ({"SHADOWFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"}, "one of PLAINTEXT, SSL"),
    ({"SHADOWFLOW_KAFKA_SASL_MECHANISM": "GSSAPI"}, "one of PLAIN, SCRAM"),
    ({"SHADOWFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs SHADOWFLOW_KAFKA_SASL_USERNAME"),
    ({"SHADOWFLOW_KAFKA_SSL_CA_FILE": "/no/such/ca.pem"}, "KAFKA_SSL_CA_FILE.*no such file"),
    ({"SHADOWFLOW_KAFKA_SSL_KEY_FILE": __file__}, "give both"),
    ({"SHADOWFLOW_API_TOKEN": "a", "SHADOWFLOW_API_TOKEN_FILE": __file__}, "not both"),
    ({"SHADOWFLOW_CLICKHOUSE_SECURE": "maybe"}, "CLICKHOUSE_SECURE"),
])
def test_bad_security_settings_are_refused_by_name(environ: dict[str, str],
                                                   message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(environ)


def test_clickhouse_tls_options_reach_its_client(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    settings = Settings.from_env({"SHADOWFLOW_CLICKHOUSE_SECURE": "true",
                                  "SHADOWFLOW_CLICKHOUSE_VERIFY": "false",
                                  "SHADOWFLOW_CLICKHOUSE_CA_FILE": str(cert),
                                  "SHADOWFLOW_CLICKHOUSE_PASSWORD": "ch-pass"})
    connection = connect(settings).connection
    assert connection.secure_socket and not connection.verify_cert
    assert connection.ssl_options == {"ca_certs": str(cert)}
    assert connection.password == "ch-pass"
    assert not connect(Settings()).connection.secure_socket


CLIENTS = {"Consumer", "Producer", "AdminClient"}


def test_every_confluent_client_is_built_from_kafka_config() -> None:
    """Every confluent-kafka client the pipeline makes (not the tests' or benchmarks') starts
    from ``kafka_config``, so no client can miss the security settings."""
    made = 0
    for package in ("streams", "topology", "sinks", "infra"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in CLIENTS):
                    made += 1
                    assert "kafka_config" in ast.unparse(node.args[0]), (
                        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert made >= 6  # readers, restore, producer, admin (topics, health), feeds


def test_kafka_config_reaches_the_clients_as_built(certificate: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The clients built by the pipeline's own functions get the security settings."""
    import streams.mirror.definition_feed as definition_feed
    import streams.runtime.kafka as kafka
    import topology.topics as topics
    from streams.mirror.definitions import DefinitionRegistry

    seen: list[dict[str, Any]] = []

    class Refused(Exception):
        pass

    def record(config: dict[str, Any], *_: Any, **__: Any) -> Any:
        seen.append(config)
        raise Refused

    for module, names in ((kafka, ("Consumer", "Producer")), (topics, ("AdminClient",)),
                          (definition_feed, ("Consumer",))):
        for name in names:
            monkeypatch.setattr(module, name, record)
    settings = secure(*certificate)
    attempts = [lambda: kafka.read_partition_to_end(settings, "t", 0),
                lambda: list(kafka.follow_topic(settings, "t", follow=False)),
                lambda: kafka.Publisher(settings), lambda: topics.ensure_topics(settings),
                lambda: definition_feed.DefinitionFeed(settings.kafka_config, "t",
                                                       DefinitionRegistry())._run()]
    for attempt in attempts:
        with pytest.raises(Refused):
            attempt()
    assert len(seen) == len(attempts)
    assert all(SECURE_KEYS.items() <= config.items() for config in seen)


def test_config_masks_secrets(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("file-token-789\n")
    env = {**os.environ, "SHADOWFLOW_CLICKHOUSE_PASSWORD": "ch-pass-456",
           "SHADOWFLOW_KAFKA_SASL_PASSWORD": "kafka-pass-123",
           "SHADOWFLOW_KAFKA_SSL_KEY_PASSWORD": "key-pass-000",
           "SHADOWFLOW_API_TOKEN_FILE": str(token)}
    out = subprocess.run([sys.executable, "-m", "topology.cli", "config"], env=env,
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    for secret in ("ch-pass-456", "kafka-pass-123", "key-pass-000", "file-token-789"):
        assert secret not in out
    assert f"SHADOWFLOW_CLICKHOUSE_PASSWORD={MASK}" in out
    assert f"SHADOWFLOW_API_TOKEN_FILE={token}" in out  # a path is no secret
    assert "ch-pass-456" not in repr(Settings(clickhouse_password="ch-pass-456"))


def test_log_records_and_errors_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test-redaction")
    logger.addHandler(handler)
    original = logging.getLogRecordFactory()
    try:
        redaction.install(["hunter2", "hunter2-long"])
        logger.error("connecting as admin:%s to %s", "hunter2-long", "db")
        try:
            raise RuntimeError("login refused for password hunter2")
        except RuntimeError:
            logger.exception("failed")
        assert redaction.redact("token hunter2!") == f"token {MASK}!"
    finally:
        redaction.install([])
        logging.setLogRecordFactory(original)
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "hunter2" not in text
    assert f"admin:{MASK} to db" in text and f"password {MASK}" in text
