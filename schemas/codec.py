"""Avro single-object encoding of shadowflow's records, on fastavro.

Every message is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint (little endian, as the
Avro spec fixes it) + the Avro binary body. Any Avro library can read it without a registry, and a
consumer tells record types and schema versions apart by fingerprint. The ``.avsc`` files beside
this module are the one source of truth; each is parsed once, when the codec is built.

A file may use named types defined in another file. The fingerprint covers the self-contained
schema: every named type fully defined at its first use and named in full at later uses, which is
what any other Avro library parses and fingerprints; it never depends on the order of the files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException, fingerprint

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8
SCHEMA_DIR = Path(__file__).resolve().parent
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})

# Until issue 15 the codec fingerprinted a canonical form in which a use of these types from another
# file stayed a bare name instead of their definition (an accident of the order the files were
# parsed in): HistoryEnvelope and MirrorRecord got fingerprints no other Avro library computes.
# Messages written then carry those fingerprints, so the codec still reads them.
LEGACY_BARE_NAMES = frozenset({"shadowflow.HistoryEvent"})


class CodecError(ValueError):
    """A message could not be encoded or decoded: unknown fingerprint, bad marker, truncated or
    corrupt body, trailing bytes, or a record that does not fit its schema. The one error the
    codec raises."""


@dataclass(frozen=True)
class RecordType:
    """One schema: its short name (``HistoryEvent``), parsed form and fingerprint, and the
    fingerprints earlier codecs wrote for the same schema (read, never written)."""

    name: str
    schema: Any
    fingerprint: bytes
    legacy_fingerprints: tuple[bytes, ...] = ()

    @property
    def header(self) -> bytes:
        """The bytes every message of this type starts with."""
        return MARKER + self.fingerprint


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message: which record type it was, and the record as Avro gives it."""

    type_name: str
    record: dict[str, Any]


def _full_name(name: str, namespace: str) -> str:
    """``name`` resolved in ``namespace`` as the Avro spec does: a dotted name is already full."""
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _namespace_of(full_name: str) -> str:
    """The namespace that names nested in the named type ``full_name`` are resolved in."""
    return full_name.rpartition(".")[0]


def _named_definitions(documents: Iterable[Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Every named type the documents define, by full name, with the namespace around it."""
    found: dict[str, tuple[dict[str, Any], str]] = {}

    def visit(schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                visit(branch, namespace)
            return
        if not isinstance(schema, dict):
            return
        kind = schema["type"]
        if kind in NAMED_KINDS:
            full = _full_name(schema["name"], schema.get("namespace", namespace))
            if full in found:
                raise SchemaParseException(f"named type {full} is defined twice")
            found[full] = (schema, namespace)
            for field in schema.get("fields", ()):
                visit(field["type"], _namespace_of(full))
            return
        for child in (kind, schema.get("items"), schema.get("values")):
            visit(child, namespace)

    for document in documents:
        visit(document, "")
    return found


def _self_contained(document: Any, definitions: Mapping[str, tuple[dict[str, Any], str]],
                    keep_bare: frozenset[str] = frozenset()) -> Any:
    """``document`` with every named type it uses defined at its first use and named in full
    (``shadowflow.Resources``) at later uses; uses of the ``keep_bare`` types stay names."""
    defined: set[str] = set()

    def expand(schema: Any, namespace: str) -> Any:
        if isinstance(schema, list):
            return [expand(branch, namespace) for branch in schema]
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return schema
            full = _full_name(schema, namespace)
            if full in defined or full in keep_bare:
                return full
            if full not in definitions:
                raise SchemaParseException(f"unknown named type {full}")
            definition, outer = definitions[full]
            return expand(definition, outer)
        kind = schema["type"]
        if kind in NAMED_KINDS:
            full = _full_name(schema["name"], schema.get("namespace", namespace))
            if full in defined:
                return full
            defined.add(full)
            inner = _namespace_of(full)
            out = {k: v for k, v in schema.items() if k != "namespace"} | {"name": full}
            if "fields" in schema:
                out["fields"] = [field | {"type": expand(field["type"], inner)}
                                 for field in schema["fields"]]
            return out
        if kind == "array":
            return schema | {"items": expand(schema["items"], namespace)}
        if kind == "map":
            return schema | {"values": expand(schema["values"], namespace)}
        if kind in PRIMITIVES:
            return dict(schema)
        return expand(kind, namespace)  # {"type": "Resources"} is the same as "Resources"

    return expand(document, "")


def _canonical_form(schema: Any) -> str:
    """The Avro spec's Parsing Canonical Form of ``schema``: full names, a named type defined at
    its first use only, only the attributes that matter for reading, in the spec's order, no
    whitespace."""
    defined: set[str] = set()

    def canonical(schema: Any, namespace: str) -> Any:
        if isinstance(schema, list):
            return [canonical(branch, namespace) for branch in schema]
        if isinstance(schema, str):
            return schema if schema in PRIMITIVES else _full_name(schema, namespace)
        kind = schema["type"]
        if kind in NAMED_KINDS:
            full = _full_name(schema["name"], schema.get("namespace", namespace))
            if full in defined:
                return full
            defined.add(full)
            inner = _namespace_of(full)
            out: dict[str, Any] = {"name": full, "type": kind}
            if "fields" in schema:
                out["fields"] = [{"name": f["name"], "type": canonical(f["type"], inner)}
                                 for f in schema["fields"]]
            if "symbols" in schema:
                out["symbols"] = list(schema["symbols"])
            if "size" in schema:
                out["size"] = int(schema["size"])
            return out
        if kind == "array":
            return {"type": "array", "items": canonical(schema["items"], namespace)}
        if kind == "map":
            return {"type": "map", "values": canonical(schema["values"], namespace)}
        return canonical(kind, namespace)  # a primitive with attributes, or {"type": <schema>}

    return json.dumps(canonical(schema, ""), ensure_ascii=False, separators=(",", ":"))


def _schema_fingerprint(schema: Any) -> bytes:
    """The CRC-64-AVRO fingerprint of a self-contained schema, in wire (little-endian) order."""
    # fastavro returns the CRC-64-AVRO value as hex of its little-endian bytes, which is the
    # byte order single-object encoding puts on the wire.
    return bytes.fromhex(fingerprint(_canonical_form(schema), "CRC-64-AVRO"))


def _parse_all(documents: Mapping[str, Any]) -> dict[str, RecordType]:
    """Parse schema documents that may name types defined in one another, in any order."""
    definitions = _named_definitions(documents.values())
    parsed: dict[str, RecordType] = {}
    for name, document in documents.items():
        schema = _self_contained(document, definitions)
        current = _schema_fingerprint(schema)
        legacy = _schema_fingerprint(_self_contained(document, definitions, LEGACY_BARE_NAMES))
        parsed[name] = RecordType(name, fastavro.parse_schema(schema), current,
                                  () if legacy == current else (legacy,))
    return parsed


class Codec:
    """Encodes records to and decodes them from single-object-encoded bytes."""

    def __init__(self, types: Iterable[RecordType]) -> None:
        self._by_name = {t.name: t for t in types}
        self._by_fingerprint = {fp: t for t in self._by_name.values()
                                for fp in (t.fingerprint, *t.legacy_fingerprints)}
        if len(self._by_fingerprint) != sum(1 + len(t.legacy_fingerprints)
                                            for t in self._by_name.values()):
            raise SchemaParseException("two schemas share one fingerprint")

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> Codec:
        """Build a codec from every ``*.avsc`` file in ``directory`` (file stem = type name)."""
        documents = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.avsc"))}
        return cls(_parse_all(documents).values())

    @property
    def type_names(self) -> list[str]:
        """Names of the record types this codec knows."""
        return sorted(self._by_name)

    def record_type(self, name: str) -> RecordType:
        """The record type called ``name``; ``CodecError`` if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise CodecError(f"unknown record type {name!r}") from None

    def encode(self, type_name: str, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` as a message of ``type_name``."""
        record_type = self.record_type(type_name)
        out = io.BytesIO()
        out.write(record_type.header)
        try:
            fastavro.schemaless_writer(out, record_type.schema, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise CodecError(f"{type_name} record does not fit its schema: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes) -> Decoded:
        """Decode one message; ``CodecError`` for anything that is not a whole, known message."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CodecError(f"expected bytes, got {type(data).__name__}")
        if len(data) < HEADER_SIZE:
            raise CodecError(f"message of {len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MARKER:
            raise CodecError(f"not Avro single-object encoding: marker {bytes(data[:2]).hex()}")
        record_type = self._by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        if record_type is None:
            raise CodecError(f"unknown schema fingerprint {bytes(data[2:HEADER_SIZE]).hex()}")
        body = io.BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(body, record_type.schema, None)
        except Exception as exc:  # corrupt bodies surface as many exception types
            raise CodecError(f"corrupt or truncated {record_type.name}: {exc!r}") from exc
        if body.tell() != len(data):
            raise CodecError(
                f"{record_type.name} has {len(data) - body.tell()} trailing bytes after its body"
            )
        return Decoded(record_type.name, record)


@cache
def default_codec() -> Codec:
    """The codec over the schemas shipped with shadowflow, built once per process."""
    return Codec.from_directory()
