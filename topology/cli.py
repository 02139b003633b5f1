"""The ``shadowflow`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from topology import redaction
from topology.settings import Settings, SettingsError, describe

log = logging.getLogger("shadowflow")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shadowflow`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"shadowflow: configuration error: {exc}", file=sys.stderr)
        return 2
    redaction.install(settings.secrets())
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(settings, args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Expected failures (service missing, broker down) carry their fix in the message.
        from infra.stack import StackError
        from sinks.migrations import SchemaMismatch
        from topology.topics import TopologyError
        if isinstance(exc, StackError | TopologyError | TimeoutError | SettingsError
                      | SchemaMismatch):
            print(redaction.redact(f"shadowflow: {exc}"), file=sys.stderr)
            return 1
        log.critical("%s failed", " ".join(sys.argv[:2]), exc_info=True)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shadowflow", description="Shadow running workflows: forecast their resources "
        "and mirror their state from Kafka events. Configured by SHADOWFLOW_* variables "
        "(see `shadowflow config`).")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    stack = commands.add_parser("stack", help="start, inspect or stop the local broker and "
                                "ClickHouse")
    stack.add_argument("action", choices=("up", "status", "down"))
    stack.add_argument("--purge", action="store_true",
                       help="with down: also delete ClickHouse's data and the logs")
    stack.set_defaults(run=_stack)

    worker = commands.add_parser("worker", help="run a pipeline worker (Faust)")
    worker.set_defaults(run=_worker)

    topics = commands.add_parser("topics", help="create the Kafka topics that are missing")
    topics.set_defaults(run=_topics)

    migrate = commands.add_parser("migrate", help="apply missing ClickHouse migrations")
    migrate.set_defaults(run=_migrate)

    config = commands.add_parser("config", help="print the settings in force")
    config.set_defaults(run=_config)

    evaluation = commands.add_parser(
        "evaluate", help="size every task of real traces with the forecaster and the baselines, "
        "offline, and compare memory wastage and failures")
    evaluation.add_argument("paths", nargs="+", metavar="PATH",
                            help="WfFormat JSON or Nextflow trace files, or folders of them "
                            "(runs are taken in the order given, folders sorted)")
    evaluation.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    evaluation.add_argument("--order", action="append", choices=("name", "size", "random"),
                            help="run order: by file name, by size (fewest tasks first), or "
                            "shuffled with --seed (default name; with --lofo: name and random; "
                            "repeat for several)")
    evaluation.add_argument("--seed", type=int, default=0, help="seed of the random order")
    evaluation.add_argument("--lofo", action="store_true",
                            help="leave one family (trace folder) out: choose the forecaster's "
                            "parameters without it, score it, beside the in-sample choice")
    evaluation.set_defaults(run=_evaluate)

    replay = commands.add_parser(
        "replay", help="publish what live engines would have for real traces: history, "
        "telemetry and the primary's snapshots, optionally with injected faults")
    replay.add_argument("paths", nargs="+", metavar="PATH",
                        help="WfFormat JSON or Nextflow trace files, or folders of them")
    replay.add_argument("--speed", type=float, default=0.0,
                        help="trace seconds per wall second (0: as fast as possible)")
    replay.add_argument("--workflows", type=int, default=0,
                        help="how many workflows to run, cycling through the traces, "
                        "interleaved with distinct ids (default: one per trace)")
    replay.add_argument("--seed", type=int, default=0, help="for repeatable replays")
    replay.add_argument("--slots", type=int, default=None,
                        help="actions at once per workflow (default: the trace's core count; "
                        "0: unbounded); traces with real start times use them")
    replay.add_argument("--faults-per-workflow", type=int, default=0,
                        help="random faults injected into each workflow (corrupted or missing "
                        "variable, dropped event, duplicated side effect)")
    replay.add_argument("--duplicates", type=int, default=0,
                        help="history events delivered twice per workflow (harmless noise)")
    replay.add_argument("--reorder", type=int, default=0,
                        help="history events moved up to this many places (harmless noise)")
    replay.add_argument("--snapshot-every", type=int, default=10,
                        help="the primary's state snapshot every this many events")
    replay.add_argument("--faults-out", metavar="FILE",
                        help="write the injected faults as JSON lines (workflow_id, run_id, "
                        "sequence, kind)")
    replay.set_defaults(run=_replay)

    reservations = commands.add_parser(
        "reservations", help="the reservations held now, as a resource manager following "
        "shadow.reservations holds them (deduplicated on command_id), with any inconsistency")
    reservations.add_argument("--follow", action="store_true",
                              help="keep following the topic, printing again as it changes")
    reservations.add_argument("--json", action="store_true", help="print JSON lines")
    reservations.set_defaults(run=_reservations)

    report = commands.add_parser(
        "report", help="what was predicted, reserved and detected, from ClickHouse: tables, "
        "JSON, PNG charts, and detection scored against a replay's faults file")
    report.add_argument("--since", help="only rows from this long ago (30m, 2h, 1d) or this "
                        "date-time (2026-11-21 08:00); default: everything")
    report.add_argument("--faults", metavar="FILE",
                        help="a replay's faults file: score detection against it")
    report.add_argument("--window", type=int, default=10,
                        help="sequences after a fault an anomaly may come and still be explained "
                        "by it (the snapshot interval; default 10)")
    report.add_argument("--out", metavar="DIR", help="write PNG charts here")
    report.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    report.set_defaults(run=_report)

    temporal = commands.add_parser(
        "temporal", help="shadow a Temporal server: follow its histories, promote a workflow "
        "from its mirror, or run the end-to-end demo")
    temporal.add_argument("action", choices=("follow", "promote", "demo"))
    temporal.add_argument("workflow_id", nargs="?", help="with promote: the workflow to resume")
    temporal.add_argument("--task-queue", help="with promote: where the resumed run goes "
                          "(default SHADOWFLOW_TEMPORAL_TASK_QUEUE)")
    temporal.add_argument("--full-state", action="store_true",
                          help="with promote: resume with every variable, per-action ones too")
    temporal.add_argument("--events", type=int, default=1000,
                          help="with demo: about how many history events the pipeline makes")
    temporal.add_argument("--json", metavar="FILE", help="with demo: also write the figures")
    temporal.add_argument("--keep", action="store_true",
                          help="with demo: leave the broker and ClickHouse running")
    temporal.set_defaults(run=_temporal)

    demo = commands.add_parser("demo", help="bring the stack up, run a worker, feed it real "
                               "traces and report what it stored")
    demo.add_argument("traces", nargs="*", help="trace files (default: a mix of the shared "
                      "traces)")
    demo.add_argument("--keep", action="store_true",
                      help="leave the stack running afterwards")
    demo.add_argument("--json", metavar="FILE", help="also write the final report as JSON")
    demo.set_defaults(run=_demo)
    return parser


def _stack(settings: Settings, args: argparse.Namespace) -> int:
    from infra.stack import LocalStack
    stack = LocalStack(settings)
    if args.action == "up":
        statuses = stack.up()
    elif args.action == "down":
        stopped = stack.down(purge=args.purge)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        statuses = stack.status()
    else:
        statuses = stack.status()
    for status in statuses:
        print(status.describe())
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from topology.worker import run_worker
    run_worker(settings)
    return 0


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from topology.topics import ensure_topics
    created = ensure_topics(settings)
    print("created: " + (", ".join(created) if created else "none (all exist)"))
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from sinks.clickhouse import wait_until_ready
    from sinks.migrations import migrate
    wait_until_ready(settings)
    applied = migrate(settings)
    print("applied: " + (", ".join(map(str, applied)) if applied else "none (up to date)"))
    return 0


def _config(settings: Settings, args: argparse.Namespace) -> int:
    values = settings.masked()
    for name, default, doc in describe():
        value = values[name.removeprefix("SHADOWFLOW_").lower()]
        print(f"{name}={value}\n    {doc} (default: {default})")
    return 0


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from topology.evaluate import run_evaluation
    return run_evaluation(args.paths, args.json, orders=args.order, seed=args.seed,
                          lofo=args.lofo)


def _reservations(settings: Settings, args: argparse.Namespace) -> int:
    from topology.reservations import run_reservations
    return run_reservations(settings, follow=args.follow, json_out=args.json)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from topology.replay import run_replay
    return run_replay(settings, args.paths, speed=args.speed, workflows=args.workflows,
                      seed=args.seed, slots=args.slots,
                      faults_per_workflow=args.faults_per_workflow, duplicates=args.duplicates,
                      reorder=args.reorder, snapshot_every=args.snapshot_every,
                      faults_out=args.faults_out)


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from topology.report import run_report
    return run_report(settings, args.since, args.faults, args.out, args.json, args.window)


def _temporal(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    try:
        from topology import temporal
    except ImportError as exc:
        print(f"shadowflow: {exc}; install the temporal extra: pip install -e '.[temporal]'",
              file=sys.stderr)
        return 2
    if args.action == "demo":
        from topology.temporal_demo import run_temporal_demo
        return run_temporal_demo(settings, args.events, args.json, args.keep)
    if args.action == "follow":
        async def follow() -> None:
            client = await temporal.connect(settings)
            print(f"following {settings.temporal_address} ({settings.temporal_namespace}), "
                  f"query {settings.temporal_query or '(all)'}; Ctrl-C stops")
            await temporal.Adapter(settings, client).run()
        asyncio.run(follow())
        return 0
    if not args.workflow_id:
        print("shadowflow: promote needs a WORKFLOW_ID", file=sys.stderr)
        return 2

    async def resume() -> None:
        client = await temporal.connect(settings)
        run_id, state = await temporal.promote(settings, client, args.workflow_id,
                                               args.task_queue, args.full_state)
        print(f"{args.workflow_id} resumed as run {run_id} from the mirror's state at sequence "
              f"{state['sequence']}")
    asyncio.run(resume())
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from topology.demo import run_demo
    return run_demo(settings, args.traces, keep=args.keep, json_path=args.json)


if __name__ == "__main__":
    sys.exit(main())
