"""``shadowflow reservations``: the reservations held right now, as a resource manager following
``shadow.reservations`` would hold them (``streams.shadow.ledger``)."""

from __future__ import annotations

import json
import time
from collections import Counter

from streams.runtime.kafka import follow_topic
from streams.shadow.ledger import ReservationLedger
from topology import topics
from topology.settings import Settings

GIB = 2**30


def run_reservations(settings: Settings, follow: bool = False, json_out: bool = False,
                     every_seconds: float = 2.0) -> int:
    """Read the commands from the topic's start and print what is held; with ``follow``, keep
    reading and print again every ``every_seconds`` while something changed. Exit code 1 when
    the stream holds an inconsistency (see ``ReservationLedger.problems``)."""
    ledger = ReservationLedger()
    shown, last = -1, 0.0
    for decoded in follow_topic(settings, topics.RESERVATIONS, skip_undecodable=True,
                                follow=follow, idle_seconds=min(every_seconds, 2.0)):
        if decoded is not None and decoded.type_name == "ReservationCommand":
            ledger.apply(decoded.record)
        if follow and ledger.commands != shown and time.monotonic() - last >= every_seconds:
            print(render(ledger, json_out), flush=True)
            shown, last = ledger.commands, time.monotonic()
    print(render(ledger, json_out))
    return 1 if ledger.problems else 0


def summary(ledger: ReservationLedger) -> dict[str, object]:
    """The ledger's figures as plain values."""
    return {"commands": ledger.commands, "duplicates": ledger.duplicates,
            "held": len(ledger.held), "reserved": ledger.reserved, "released": ledger.released,
            "totals": dict(ledger.totals), "peaks": dict(ledger.peaks),
            "held_by_workflow": dict(Counter(h.workflow_id for h in ledger.held.values())),
            "problems": ledger.problems[:100]}


def render(ledger: ReservationLedger, json_out: bool = False) -> str:
    """The figures as one JSON line, or as lines for the terminal."""
    if json_out:
        return json.dumps(summary(ledger), sort_keys=True)
    totals, peaks = ledger.totals, ledger.peaks
    lines = [f"{ledger.commands} commands ({ledger.duplicates} repeated, ignored): "
             f"{ledger.reserved} reserved, {ledger.released} released, {len(ledger.held)} held",
             f"  held now: {totals['memory_bytes'] / GIB:.2f} GiB memory, "
             f"{totals['cpu_cores']:.2f} cores (at most {peaks['memory_bytes'] / GIB:.2f} GiB, "
             f"{peaks['cpu_cores']:.2f} cores)"]
    lines += [f"  inconsistent: {p}" for p in ledger.problems[:20]]
    return "\n".join(lines)
