"""Workflow definitions: how a workflow type's state is compared and how its results map to state.

A definition is a JSON document (see ``infra/definitions/example.json`` and the README):

    {
      "workflow_type": "blast",
      "tolerance": 0.0,                     # deviation scores up to this raise no anomaly
      "default_weight": 1.0,                # weight of a variable no pattern names
      "missing_weight": 20.0,               # fixed weight of a variable missing on one side
      "weights": {"wf.status": 50, "action.*": 1},   # exact names or fnmatch patterns
      "critical": ["wf.status", "balance"],          # names or patterns; lift severity to HIGH
      "severity": {"low": 0.0, "medium": 5, "high": 20, "critical": 100},
      "results": {"blastall": {"hits": {"variable": "total_hits", "mode": "add"}}}
    }

Every field but ``workflow_type`` is optional; a workflow type without a definition uses
``DEFAULT``'s values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Any

from schemas.records import SEVERITIES, is_number

RESERVED_PREFIXES = ("wf.", "action.")
"""Variables the mirror keeps itself (status, counters, actions' statuses): a definition's
results cannot be mapped onto them."""


class DefinitionError(ValueError):
    """A definition document is malformed; the message names the field."""


@dataclass(frozen=True)
class ResultMapping:
    """Where one result key of an action type goes: a state variable, set or added to."""

    variable: str
    mode: str = "set"  # "set" replaces the variable; "add" adds a number to it


@dataclass(frozen=True, eq=False)
class WorkflowDefinition:
    """Comparison and mapping rules of one workflow type (compared by identity, so lookups can
    be cached per definition; compare ``to_json()`` for equal content)."""

    workflow_type: str
    tolerance: float = 0.0
    default_weight: float = 1.0
    missing_weight: float = 20.0
    weights: Mapping[str, float] = field(default_factory=dict)
    critical: tuple[str, ...] = ()
    severity: Mapping[str, float] = field(
        default_factory=lambda: {"LOW": 0.0, "MEDIUM": 5.0, "HIGH": 20.0, "CRITICAL": 100.0})
    results: Mapping[str, Mapping[str, ResultMapping]] = field(default_factory=dict)

    def weight(self, variable: str) -> float:
        """The weight of ``variable``: an exact entry, else the first matching pattern, else
        the default."""
        return _weight(self, variable)

    def is_critical(self, variable: str) -> bool:
        """Whether ``variable`` is named critical (exactly or by pattern)."""
        return _critical(self, variable)

    def severity_of(self, score: float, critical: bool) -> str:
        """The severity of a deviation with ``score`` (the highest level whose threshold it
        reaches); a critical variable lifts it to HIGH."""
        level = "INFO"
        for name in SEVERITIES[1:]:
            if score >= self.severity.get(name, float("inf")):
                level = name
        if critical and SEVERITIES.index(level) < SEVERITIES.index("HIGH"):
            level = "HIGH"
        return level

    def result_mapping(self, action_type: str | None, action_id: str,
                       key: str) -> ResultMapping:
        """Where result ``key`` of an action goes; by default ``result.<action_id>.<key>``."""
        mapping = self.results.get(action_type or "", {}).get(key)
        return mapping or ResultMapping(f"result.{action_id}.{key}")

    def to_json(self) -> dict[str, Any]:
        """The document form of this definition."""
        return {
            "workflow_type": self.workflow_type, "tolerance": self.tolerance,
            "default_weight": self.default_weight, "missing_weight": self.missing_weight,
            "weights": dict(self.weights), "critical": list(self.critical),
            "severity": {k.lower(): v for k, v in self.severity.items()},
            "results": {a: {k: {"variable": m.variable, "mode": m.mode} for k, m in keys.items()}
                        for a, keys in self.results.items()},
        }


DEFAULT = WorkflowDefinition("*")
"""What applies to a workflow type nobody defined."""


@lru_cache(maxsize=65536)
def _weight(definition: WorkflowDefinition, variable: str) -> float:
    if variable in definition.weights:
        return definition.weights[variable]
    for pattern, weight in definition.weights.items():
        if fnmatchcase(variable, pattern):
            return weight
    return definition.default_weight


@lru_cache(maxsize=65536)
def _critical(definition: WorkflowDefinition, variable: str) -> bool:
    return any(variable == p or fnmatchcase(variable, p) for p in definition.critical)


def parse_definition(document: Any, workflow_type: str | None = None) -> WorkflowDefinition:
    """A definition from its JSON document; ``DefinitionError`` naming the bad field.

    ``workflow_type``, when given (the API's path), must match the document's if it has one.
    """
    if not isinstance(document, Mapping):
        raise DefinitionError("a definition is a JSON object")
    unknown = set(document) - {"workflow_type", "tolerance", "default_weight", "missing_weight",
                               "weights", "critical", "severity", "results"}
    if unknown:
        raise DefinitionError(f"unknown fields {sorted(unknown)}")
    name = document.get("workflow_type", workflow_type)
    if not isinstance(name, str) or not name:
        raise DefinitionError("workflow_type must be a non-empty string")
    if workflow_type is not None and name != workflow_type:
        raise DefinitionError(f"workflow_type {name!r} does not match the path's "
                              f"{workflow_type!r}")
    base = replace(DEFAULT, workflow_type=name)
    return replace(
        base,
        tolerance=_number(document, "tolerance", base.tolerance),
        default_weight=_number(document, "default_weight", base.default_weight),
        missing_weight=_number(document, "missing_weight", base.missing_weight),
        weights=_weights(document.get("weights", {})),
        critical=tuple(_strings(document.get("critical", []), "critical")),
        severity=_severity(document.get("severity"), base.severity),
        results=_results(document.get("results", {})),
    )


def load_definitions(paths: Iterable[Path]) -> list[WorkflowDefinition]:
    """Definitions from JSON files (one definition, or a list of them, per file)."""
    found: list[WorkflowDefinition] = []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DefinitionError(f"{path}: {exc}") from exc
        for item in document if isinstance(document, list) else [document]:
            try:
                found.append(parse_definition(item))
            except DefinitionError as exc:
                raise DefinitionError(f"{path}: {exc}") from exc
    return found


class DefinitionRegistry:
    """Definitions by workflow type, with ``DEFAULT`` for the rest."""

    def __init__(self, definitions: Iterable[WorkflowDefinition] = ()) -> None:
        self._by_type = {d.workflow_type: d for d in definitions}

    def get(self, workflow_type: str) -> WorkflowDefinition:
        """The definition of ``workflow_type``, or the default one."""
        return self._by_type.get(workflow_type) or DEFAULT

    def register(self, definition: WorkflowDefinition) -> None:
        """Add or replace a definition."""
        self._by_type[definition.workflow_type] = definition

    def known(self) -> list[str]:
        """Workflow types with a definition of their own."""
        return sorted(self._by_type)


def _number(document: Mapping[str, Any], name: str, default: float) -> float:
    value = document.get(name, default)
    if not is_number(value) or not math.isfinite(value) or value < 0:
        raise DefinitionError(f"{name} must be a number >= 0 (and finite), got {value!r}")
    return float(value)


def _weights(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise DefinitionError("weights must map variable names or patterns to numbers")
    return {str(k): _number(value, k, 0.0) for k in value}


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DefinitionError(f"{name} must be a list of strings")
    return value


def _severity(value: Any, default: Mapping[str, float]) -> dict[str, float]:
    if value is None:
        return dict(default)
    if not isinstance(value, Mapping):
        raise DefinitionError("severity must map low/medium/high/critical to score thresholds")
    levels = dict(default)
    for key in value:
        if key.upper() not in SEVERITIES[1:]:
            raise DefinitionError(f"severity level {key!r} is not one of low, medium, high, "
                                  "critical")
        levels[key.upper()] = _number(value, key, 0.0)
    ordered = [levels[s] for s in SEVERITIES[1:]]
    if ordered != sorted(ordered):
        raise DefinitionError("severity thresholds must not decrease from low to critical")
    return levels


def _results(value: Any) -> dict[str, dict[str, ResultMapping]]:
    if not isinstance(value, Mapping):
        raise DefinitionError("results must map action types to {result key: mapping}")
    out: dict[str, dict[str, ResultMapping]] = {}
    for action_type, keys in value.items():
        if not isinstance(keys, Mapping):
            raise DefinitionError(f"results.{action_type} must be an object")
        out[action_type] = {}
        for key, spec in keys.items():
            if isinstance(spec, str):
                spec = {"variable": spec}
            if not isinstance(spec, Mapping) or not isinstance(spec.get("variable"), str):
                raise DefinitionError(f"results.{action_type}.{key} needs a variable name")
            if spec["variable"].startswith(RESERVED_PREFIXES) or not spec["variable"]:
                raise DefinitionError(
                    f"results.{action_type}.{key}.variable {spec['variable']!r} is reserved: "
                    f"names starting with {' or '.join(RESERVED_PREFIXES)} are the mirror's own")
            mode = spec.get("mode", "set")
            if mode not in ("set", "add"):
                raise DefinitionError(f"results.{action_type}.{key}.mode must be set or add")
            out[action_type][key] = ResultMapping(spec["variable"], mode)
    return out
