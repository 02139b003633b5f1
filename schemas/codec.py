"""Avro single-object encoding of shadowflow's records, on fastavro.

Every message is ``C3 01`` + the schema's 8-byte CRC-64-AVRO fingerprint (little endian, as the
Avro spec fixes it) + the Avro binary body. Any Avro library can read it without a registry, and a
consumer tells record types and schema versions apart by fingerprint. The ``.avsc`` files beside
this module are the one source of truth; each is parsed once, when the codec is built.
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
from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    fingerprint,
    to_parsing_canonical_form,
)

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8
SCHEMA_DIR = Path(__file__).resolve().parent


class CodecError(ValueError):
    """A message could not be encoded or decoded: unknown fingerprint, bad marker, truncated or
    corrupt body, trailing bytes, or a record that does not fit its schema. The one error the
    codec raises."""


@dataclass(frozen=True)
class RecordType:
    """One schema: its short name (``HistoryEvent``), parsed form and fingerprint."""

    name: str
    schema: Any
    fingerprint: bytes

    @property
    def header(self) -> bytes:
        """The bytes every message of this type starts with."""
        return MARKER + self.fingerprint


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message: which record type it was, and the record as Avro gives it."""

    type_name: str
    record: dict[str, Any]


def _schema_fingerprint(parsed: Any) -> bytes:
    # fastavro returns the CRC-64-AVRO value as hex of its little-endian bytes, which is the
    # byte order single-object encoding puts on the wire.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def _parse_all(documents: Mapping[str, Any]) -> dict[str, RecordType]:
    """Parse schema documents that may name types defined in one another, in any order."""
    named: dict[str, Any] = {}
    pending = dict(documents)
    parsed: dict[str, RecordType] = {}
    while pending:
        progressed = False
        for name, document in list(pending.items()):
            try:
                schema = fastavro.parse_schema(document, named)
            except UnknownType:
                continue
            # The fingerprint must cover the whole schema, not references to names defined in
            # other files; fastavro reads and writes with the parsed (unexpanded) form.
            expanded = fastavro.parse_schema(document, dict(named), expand=True)
            parsed[name] = RecordType(name, schema, _schema_fingerprint(expanded))
            del pending[name]
            progressed = True
        if not progressed:
            raise SchemaParseException(f"unresolvable named types in schemas: {sorted(pending)}")
    return parsed


class Codec:
    """Encodes records to and decodes them from single-object-encoded bytes."""

    def __init__(self, types: Iterable[RecordType]) -> None:
        self._by_name = {t.name: t for t in types}
        self._by_fingerprint = {t.fingerprint: t for t in self._by_name.values()}
        if len(self._by_fingerprint) != len(self._by_name):
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
