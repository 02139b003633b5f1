"""Settings come from SHADOWFLOW_* variables, fail clearly, and are all documented."""

from __future__ import annotations

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
])
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name, _, _ in describe() if f"`{name}`" not in readme]
    assert not missing, f"README lacks {missing}"


def test_env_name() -> None:
    assert env_name("web_port") == "SHADOWFLOW_WEB_PORT"
