"""Which way imports go (the README's package map): ``schemas`` at the bottom, then ``sinks``,
then ``streams``, with ``topology`` on top; ``infra`` stands beside them and imports none of
them. The pure logic imports no Kafka, Faust or ClickHouse client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("schemas", "sinks", "streams", "topology", "infra")
MAY_IMPORT = {
    "schemas": {"schemas"},
    "sinks": {"schemas", "sinks"},
    "streams": {"schemas", "sinks", "streams"},
    "topology": set(PROJECT),
    "infra": {"infra"},
}
PURE = ("streams/mirror/run.py", "streams/mirror/undo.py", "streams/mirror/registry.py",
        "streams/mirror/deviation.py",
        "streams/mirror/definitions.py", "streams/mirror/changelog.py",
        "streams/shadow/workflows.py", "streams/shadow/pool.py", "streams/shadow/telemetry.py",
        "streams/forecasting", "streams/traces")
CLIENTS = {"faust", "aiokafka", "confluent_kafka", "clickhouse_driver", "sinks"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def _modules(*folders: str) -> list[Path]:
    paths: list[Path] = []
    for folder in folders:
        target = ROOT / folder
        paths += [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))
    return paths


@pytest.mark.parametrize("package", PROJECT)
def test_imports_go_one_way(package: str) -> None:
    wrong = {str(path.relative_to(ROOT)): sorted(bad)
             for path in _modules(package)
             if (bad := (_imports(path) & set(PROJECT)) - MAY_IMPORT[package])}
    assert not wrong, f"{package} must not import {wrong}"


def test_pure_logic_imports_no_clients() -> None:
    wrong = {str(path.relative_to(ROOT)): sorted(bad)
             for path in _modules(*PURE) if (bad := _imports(path) & CLIENTS)}
    assert not wrong
