"""Settings come from SHADOWFLOW_* variables, fail clearly, and are all documented."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import ROOT
from topology.settings import Settings, SettingsError, describe, env_name


def test_defaults_work_with_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.broker == "127.0.0.1:19092"
    assert settings.faust_broker == ["kafka://127.0.0.1:19092"]


def test_environment_overrides_and_types() -> None:
    settings = Settings.from_env({
        "SHADOWFLOW_BROKER": "a:9092, b:9092", "SHADOWFLOW_PARTITIONS": "12",
        "SHADOWFLOW_SINK_FLUSH_SECONDS": "0.25", "SHADOWFLOW_STACK_DIR": "~/x",
        "UNRELATED": "ignored"})
    assert settings.broker_hosts == ["a:9092", "b:9092"]
    assert settings.partitions == 12
    assert settings.sink_flush_seconds == 0.25
    assert settings.stack_dir == Path.home() / "x"


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SHADOWFLOW_PARTITIONS", "four", "SHADOWFLOW_PARTITIONS='four' is not a valid int"),
    ("SHADOWFLOW_PARTITIONS", "0", "SHADOWFLOW_PARTITIONS must be at least 1"),
    ("SHADOWFLOW_SINK_FLUSH_SECONDS", "-1", "must be positive"),
    ("SHADOWFLOW_BROKER", " ", "must name at least one"),
    ("SHADOWFLOW_WEB_ADVERTISED_URL", "worker-2:6066", "expected http://host:port"),
    ("SHADOWFLOW_WEB_ADVERTISED_URL", "http://worker-2:6066/api", "without a path"),
    ("SHADOWFLOW_WEB_ADVERTISED_URL", "http://0.0.0.0:6066", "cannot reach"),
    ("SHADOWFLOW_WEB_ADVERTISED_URL", "http://worker-2:port", "Port could not be cast"),
    ("SHADOWFLOW_WEB_FORWARD_TIMEOUT_SECONDS", "0", "must be positive"),
])
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


def test_advertised_url_defaults_to_a_reachable_host_and_port() -> None:
    assert Settings.from_env({"SHADOWFLOW_WEB_PORT": "6071"}).advertised_url == (
        "http://127.0.0.1:6071")
    everywhere = Settings.from_env({"SHADOWFLOW_WEB_HOST": "0.0.0.0"})
    assert everywhere.advertised_url == f"http://{socket.gethostname()}:6066"
    assert Settings(web_host="::1", web_port=7).advertised_url == "http://[::1]:7"
    given = Settings.from_env({"SHADOWFLOW_WEB_HOST": "0.0.0.0",
                               "SHADOWFLOW_WEB_ADVERTISED_URL": "https://worker-2.internal:443/"})
    assert given.advertised_url == "https://worker-2.internal:443"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _, _ in describe() if f"`{name}`" not in readme]
    assert not missing, f"README lacks {missing}"


def test_env_name() -> None:
    assert env_name("web_port") == "SHADOWFLOW_WEB_PORT"
