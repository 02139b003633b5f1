"""Nextflow trace files as users have them: tab- or comma-separated, raw or human-readable."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.traces.formats import TraceError, load_trace, parse_percent, parse_size

COLUMNS = ["task_id", "hash", "process", "name", "status", "exit", "start", "realtime", "%cpu",
           "peak_rss", "memory", "rchar", "wchar", "workdir"]
"""Includes columns the reader does not use (hash, exit, workdir)."""

HUMAN = [
    ["1", "ab/cdef12", "FASTQC", "FASTQC (s1)", "COMPLETED", "0", "2023-03-21 11:10:21.000",
     "1m", "150.5%", "512 MB", "2 GB", "1.5 GB", "10 MB", "/work/ab/cdef12"],
    ["2", "ab/cdef13", "FASTQC", "FASTQC (s2)", "FAILED", "1", "2023-03-21 11:10:22.000", "-",
     "-", "-", "2 GB", "-", "-", "/work/ab/cdef13"],
    ["3", "ab/cdef14", "ALIGN", "ALIGN (s1)", "CACHED", "0", "2023-03-21 11:11:31.500",
     "1h 1m 2s", "98%", "3.5 GB", "4 GB", "2 GB", "1 GB", "/work/ab/cdef14"],
]
START = 1679397021000  # any epoch: only differences between starts matter
RAW = [
    ["1", "ab/cdef12", "FASTQC", "FASTQC (s1)", "COMPLETED", "0", str(START), "60000", "150.5",
     str(512 * 1024**2), str(2 * 1024**3), str(3 * 1024**3 // 2), str(10 * 1024**2),
     "/work/ab/cdef12"],
    ["2", "ab/cdef13", "FASTQC", "FASTQC (s2)", "FAILED", "1", str(START + 1000), "-", "-", "-",
     str(2 * 1024**3), "-", "-", "/work/ab/cdef13"],
    ["3", "ab/cdef14", "ALIGN", "ALIGN (s1)", "CACHED", "0", str(START + 70500), "3662000",
     "98.0", str(7 * 1024**3 // 2), str(4 * 1024**3), str(2 * 1024**3), str(1024**3),
     "/work/ab/cdef14"],
]


def _write(path: Path, rows: list[list[str]], delimiter: str) -> Path:
    path.write_text("\n".join(delimiter.join(r) for r in [COLUMNS, *rows]) + "\n")
    return path


@pytest.mark.parametrize("delimiter", ["\t", ","], ids=["tsv", "csv"])
@pytest.mark.parametrize("rows", [HUMAN, RAW], ids=["human", "raw"])
def test_csv_and_tsv_raw_and_human_readable_read_to_the_same_tasks(
        tmp_path: Path, rows: list[list[str]], delimiter: str) -> None:
    reference = load_trace(_write(tmp_path / "reference-trace.txt", HUMAN, "\t")).tasks
    tasks = load_trace(_write(tmp_path / "run-trace.txt", rows, delimiter)).tasks
    assert tasks == reference
    fastqc, align = tasks  # the failed row is left out
    assert (fastqc.task_type, fastqc.runtime_s, fastqc.memory_bytes) == (
        "FASTQC", 60.0, 512 * 1024**2)
    assert fastqc.cpu_cores == pytest.approx(1.505)
    assert (align.start_s, align.runtime_s, align.requested_memory_bytes) == (
        70.5, 3662.0, 4 * 1024**3)
    # What a task read while running is a measurement, never its (pre-start) input size.
    assert (fastqc.read_bytes, fastqc.input_bytes) == (3 * 1024**3 // 2, 0)


def test_a_quoted_csv_field_may_hold_the_delimiter(tmp_path: Path) -> None:
    rows = [list(HUMAN[0])]
    rows[0][3] = '"FASTQC (s1, lane 2)"'
    assert load_trace(_write(tmp_path / "q-trace.txt", rows, ",")).tasks[0].task_type == "FASTQC"


@pytest.mark.parametrize(("column", "value", "message"), [
    ("peak_rss", "lots", "line 3: not a size: 'lots'"),
    ("realtime", "1 fortnight", "line 3: not a duration: '1 fortnight'"),
    ("%cpu", "high%", "line 3: not a percentage: 'high%'"),
    ("start", "yesterday", "line 3: not a timestamp: 'yesterday'"),
])
def test_an_unreadable_value_names_its_line(tmp_path: Path, column: str, value: str,
                                            message: str) -> None:
    rows = [list(r) for r in HUMAN]
    rows[1][COLUMNS.index(column)] = value
    rows[1][COLUMNS.index("status")] = "COMPLETED"
    with pytest.raises(TraceError, match=message):
        load_trace(_write(tmp_path / "bad-trace.txt", rows, "\t"))


def test_a_row_with_the_wrong_number_of_fields_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "short-trace.txt", HUMAN, "\t")
    path.write_text(path.read_text() + "\n4\tab/cdef15\tALIGN\n")
    with pytest.raises(TraceError, match="line 6: 3 fields where the header has 14"):
        load_trace(path)


def test_a_file_without_a_nextflow_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other-trace.txt"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match="line 1: not a Nextflow trace header"):
        load_trace(path)


@pytest.mark.parametrize(("text", "value"), [("1.5GB", int(1.5 * 1024**3)), ("4096", 4096),
                                             ("2 TB", 2 * 1024**4), ("0.5 kb", 512)])
def test_sizes(text: str, value: int | None) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "value"), [("85.2%", 85.2), ("85.2", 85.2), ("-", None)])
def test_percentages(text: str, value: float | None) -> None:
    assert parse_percent(text) == value
