"""Where a worker's time goes on the first path: py-spy attached to a worker while it consumes
``bench_first_path``'s 100,000 pre-produced history events (``EVENTS_PER_MESSAGE`` per message,
default 1), then the frames that took the most samples, by their own time and inclusive.
Not a benchmark (py-spy slows what it samples); it is how the profiles in the notes were taken.
    .venv/bin/python bench/profile_first_path.py [EVENTS_PER_MESSAGE] [TOP]
Needs py-spy (``pip install py-spy``).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_stack, processed_at
from bench.bench_first_path import LOGS, _produce
from topology import topics
from topology.worker import prepare
from topology.worker_process import WorkerProcess


def record(per_message: int, out: Path) -> float:
    """Profile a fresh worker on a fresh stack into ``out`` (py-spy's raw format); returns the
    seconds it took to commit everything."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with bench_stack() as settings:
        prepare(settings)
        messages = _produce(settings, per_message)
        worker = WorkerProcess(settings.with_overrides(app_id="profile"), LOGS / "profile.log")
        worker.start(120)
        assert worker.process is not None
        sampler = subprocess.Popen([spy, "record", "-r", "50", "-f", "raw", "-o", str(out),
                                    "-p", str(worker.process.pid), "-d", "600"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            started = time.time()
            processed_at(settings, "profile", {topics.HISTORY: messages})
            return time.time() - started
        finally:
            sampler.send_signal(signal.SIGINT)
            sampler.wait(30)
            worker.stop()


Shares = list[tuple[str, float]]


def top_frames(raw: Path, count: int) -> tuple[int, Shares, Shares]:
    """Samples, and the ``count`` frames with most samples by own time and inclusive (shares)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        n = int(samples)
        total += n
        frames = [_name(frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return (total, [(f, c / total) for f, c in own.most_common(count)],
            [(f, c / total) for f, c in inclusive.most_common(count)])


def _name(frame: str) -> str:
    # "function (path/file.py:line)" -> "function (file.py)"
    function, _, where = frame.partition(" (")
    return f"{function} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else frame


def main() -> None:
    per_message = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    out = Path(tempfile.mkdtemp(prefix="shadowflow-profile-")) / "first_path.txt"
    seconds = record(per_message, out)
    total, own, inclusive = top_frames(out, count)
    print(f"{per_message} event(s) per message: all committed in {seconds:.1f} s under py-spy, "
          f"{total} samples ({out})")
    for title, frames in (("own time", own), ("inclusive", inclusive)):
        print(f"-- {title}")
        for frame, share in frames:
            print(f"  {share * 100:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
