"""Requests about a workflow reach the worker that owns it.

Pure decisions first; then the forwarding step against a real HTTP server in process (method,
path, query, headers and body intact; bounded waits); then two real workers on the test stack:
every route through either worker, through a crash of one and right after it rejoined.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from schemas.records import HistoryEvent
from streams.mirror.definitions import DEFAULT
from streams.mirror.run import rebuild
from streams.runtime.forwarding import (
    FORWARDED_BY,
    SERVED_BY,
    Forwarding,
    Local,
    Remote,
    Unavailable,
    forward_headers,
    forward_target,
    locate,
    owner_of,
    partition_of,
    relayed_headers,
)
from streams.runtime.kafka import Publisher
from streams.traces.formats import load_wfformat
from streams.traces.playback import history_from_trace
from tests.streams.runtime.test_openapi import assert_documented
from tests.support import (
    TRACES,
    Answer,
    Owners,
    WorkerProcess,
    call,
    free_port,
    one_per_partition,
    owners,
    quote_id,
    wait_for,
)
from topology.settings import Settings

TRACE = TRACES / "makeflow" / "blast" / "blast-chameleon-small-001.json"
ME, PEER = "http://a:1", "http://b:2"


# --- pure decisions -----------------------------------------------------------------------------

@pytest.mark.parametrize(("facts", "expected"), [
    (dict(rebalancing=True, owned=True, owner=ME), Unavailable),
    (dict(owned=True, owner=ME), Local(3)),
    (dict(owned=True, owner=ME, forwarded_by=PEER), Local(3)),
    (dict(owner=PEER), Remote(3, PEER)),
    (dict(owner=PEER, forwarded_by=PEER), Unavailable),  # never a second hop
    (dict(owner=None), Unavailable),
    (dict(owner=ME + "/"), Unavailable),  # another member advertises this worker's URL
])
def test_where_a_request_is_served(facts: dict[str, Any], expected: Any) -> None:
    given: dict[str, Any] = dict(rebalancing=False, owned=False, forwarded_by=None) | facts
    decision = locate(3, own_url=ME, retry_after=6, **given)
    if expected is Unavailable:
        assert isinstance(decision, Unavailable) and decision.retry_after >= 1
        assert decision.reason
    else:
        assert decision == expected


def test_owner_of_a_partition_in_the_assignment() -> None:
    distribution = {ME: {"wf.history": [0, 1], "wf.state": [0, 1]},
                    PEER: {"wf.history": [2, 3], "wf.state": [2, 3]}}
    assert [owner_of(distribution, "wf.history", p) for p in range(5)] == [
        ME, ME, PEER, PEER, None]
    assert owner_of({}, "wf.history", 0) is None


# murmur2 of keys as the Java client computes it (Kafka's UtilsTest.testMurmur2).
JAVA_MURMUR2 = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
                "a-little-bit-longer-string": -1486304829, "abc": 479470107,
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}


@pytest.mark.parametrize("partitions", [1, 4, 7, 12])
def test_partition_is_kafkas_default_for_the_key(partitions: int) -> None:
    for key, hashed in JAVA_MURMUR2.items():
        assert partition_of(key, partitions) == (hashed & 0x7FFFFFFF) % partitions


def test_forwarded_headers_drop_per_connection_ones_and_name_the_forwarder() -> None:
    sent = [("Host", "a:1"), ("Content-Length", "12"), ("Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"), ("Content-Type", "application/json"),
            ("Authorization", "Bearer x"), ("X-Tag", "1"), ("X-Tag", "2"),
            (FORWARDED_BY, "http://spoofed:9")]
    assert forward_headers(sent, ME) == [
        ("Content-Type", "application/json"), ("Authorization", "Bearer x"), ("X-Tag", "1"),
        ("X-Tag", "2"), (FORWARDED_BY, ME)]


def test_forward_target_keeps_the_raw_path_and_query() -> None:
    assert forward_target("http://b:2/", "/shadow/a%20%C3%BC/state?x=1&y=%2F") == (
        "http://b:2/shadow/a%20%C3%BC/state?x=1&y=%2F")
    assert relayed_headers({"Retry-After": "3", SERVED_BY: PEER, "Server": "x"}) == {
        SERVED_BY: PEER, "Retry-After": "3"}


# --- the forwarding step against real HTTP servers, in process ---------------------------------

class _View:
    """What the forwarding step needs of a Faust view: JSON and bytes responses."""

    def json(self, value: Any, *, status: int = 200,
             headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(value, status=status, headers=headers)

    def bytes(self, value: bytes, *, content_type: str | None = None, status: int = 200,
              headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(body=value, content_type=content_type, status=status,
                            headers=headers)


def _echo(release: asyncio.Event) -> Callable[[web.Request], Any]:
    """The owner: echoes what reached it; ``/slow`` waits for ``release``."""

    async def echo(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.wait_for(release.wait(), 5)
        body = await request.read()
        return web.json_response(
            {"method": request.method, "raw_path": request.raw_path, "body": body.hex(),
             "headers": [[k, v] for k, v in request.headers.items()]},
            status=207, headers={"Retry-After": "9", SERVED_BY: PEER, "X-Private": "x"})

    return echo


async def _serve(handler: Callable[..., Any]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _forwarding_exchanges() -> list[tuple[int, dict[str, str], Any, float]]:
    release = asyncio.Event()
    owner, owner_url = await _serve(_echo(release))
    async with aiohttp.ClientSession() as session:
        app = SimpleNamespace(http_client=session,
                              conf=SimpleNamespace(canonical_url="http://front:1"))
        topic = SimpleNamespace(get_topic_name=lambda: "wf.history")
        forwarding = Forwarding(app, topic, partitions=4,  # type: ignore[arg-type]
                                timeout_seconds=0.5, retry_after_seconds=6)
        dead_url = f"http://127.0.0.1:{free_port()}"

        async def front(request: web.Request) -> web.Response:
            target = dead_url if request.path == "/dead" else owner_url
            return await forwarding.forward(_View(), request, Remote(2, target))  # type: ignore[arg-type]

        runner, front_url = await _serve(front)
        results = []
        calls = [("PUT", "/shadow/w%20%C3%BC/x?q=1&r=%2F", b"\x00binary\xff" * 1000),
                 ("GET", "/shadow/w/state", b""), ("POST", "/slow", b"{}"), ("GET", "/dead", b"")]
        for method, path, body in calls:
            started = time.monotonic()
            async with session.request(method, URL(front_url + path, encoded=True),
                                       data=body or None,
                                       headers={"Authorization": "Bearer t", "X-Tag": "7"}
                                       ) as answer:
                payload = await answer.json()
                results.append((answer.status, dict(answer.headers), payload,
                                time.monotonic() - started))
        release.set()
        await runner.cleanup()
    await owner.cleanup()
    return results


def test_forwarding_keeps_method_path_query_headers_and_body_and_bounds_the_wait() -> None:
    put, get, slow, dead = asyncio.run(_forwarding_exchanges())

    status, headers, echoed, _ = put
    assert status == 207 and echoed["method"] == "PUT"
    assert echoed["raw_path"] == "/shadow/w%20%C3%BC/x?q=1&r=%2F"
    assert bytes.fromhex(echoed["body"]) == b"\x00binary\xff" * 1000
    sent = dict((k.lower(), v) for k, v in echoed["headers"])
    assert sent["authorization"] == "Bearer t" and sent["x-tag"] == "7"
    assert sent[FORWARDED_BY.lower()] == "http://front:1"
    assert sent["content-length"] == str(8 * 1000)
    assert headers["Retry-After"] == "9" and headers[SERVED_BY] == PEER
    assert "X-Private" not in headers
    assert get[0] == 207 and get[2]["method"] == "GET" and get[2]["body"] == ""

    status, headers, body, seconds = slow
    assert status == 504 and "did not answer within 0.5s" in body["reason"] and seconds < 3
    status, headers, body, seconds = dead
    assert status == 503 and headers["Retry-After"] == "6" and "cannot be reached" in body["reason"]
    assert seconds < 3


# --- two real workers --------------------------------------------------------------------------

def publish_runs(settings: Settings, ids: Iterable[str],
                 workflow_type: str) -> dict[str, list[HistoryEvent]]:
    """A real trace's history for each id (no telemetry, no usage in the completions: feedback
    comes from the API)."""
    trace = load_wfformat(TRACE)
    runs = {}
    publisher = Publisher(settings)
    for workflow_id in ids:
        events = [dataclasses.replace(e, workflow_type=workflow_type) for e in
                  history_from_trace(trace, workflow_id, "run-1", 1_700_000_000_000,
                                     report_usage=False)]
        publisher.send_history(events, per_message=50)
        runs[workflow_id] = events
    publisher.flush()
    return runs


def call_as(token: str | None, method: str, url: str, body: object = None,
            raw: bytes | None = None) -> Answer:
    """``call`` with the API token, when the workers require one."""
    return call(method, url, body, raw=raw, token=token)


def documented(method: str, path: str, answer: Answer) -> None:
    """Fail unless the API document describes the answer's status and shape."""
    assert_documented(method, path, answer.status, answer.body)


def check_mirror_routes(bases: list[str], owner: Owners, runs: dict[str, list[HistoryEvent]],
                        latencies: dict[bool, list[float]] | None = None,
                        token: str | None = None) -> None:
    """State, promote and what-if (its body) answer alike through every worker, as the API
    document describes; the state's latency goes to ``latencies`` (by whether it was
    forwarded)."""
    for workflow_id, events in runs.items():
        url, last = quote_id(workflow_id), events[-1].sequence
        expected = rebuild(events, DEFAULT).variables
        for i, base in enumerate(bases):
            state = call_as(token, "GET", f"{base}/shadow/{url}/state")
            assert (state.status, state.served_by) == (200, owner.of(workflow_id)), state
            assert state.body["sequence"] == last and state.body["variables"] == expected
            documented("GET", "/shadow/{workflow_id}/state", state)
            if latencies is not None:
                latencies[state.served_by != base].append(state.seconds)
            promoted = call_as(token, "POST", f"{base}/shadow/{url}/promote")
            assert promoted.status == 200 and promoted.body["sequence"] == last
            documented("POST", "/shadow/{workflow_id}/promote", promoted)
            own = call_as(token, "POST", f"{base}/shadow/{url}/promote?variables=own")
            assert own.status == 200 and own.body["variables"] == {
                k: v for k, v in expected.items() if not k.startswith(("action.", "result."))}
            documented("POST", "/shadow/{workflow_id}/promote", own)
            lean = call_as(token, "POST",
                           f"{base}/shadow/{url}/promote?variables=own&tail=none")
            assert lean.status == 200 and lean.body["variables"] == own.body["variables"]
            assert "events_since_snapshot" not in lean.body
            assert "events_since_snapshot" in promoted.body
            documented("POST", "/shadow/{workflow_id}/promote", lean)
            budget = 10.5 + i
            what_if = call_as(token, "POST", f"{base}/shadow/{url}/what-if", {"events": [
                {"kind": "STATE_UPDATED", "values": {"budget": budget}}]})
            assert (what_if.status, what_if.served_by) == (200, owner.of(workflow_id)), what_if
            assert what_if.body["changed"] == {"budget": {"before": None, "after": budget}}
            assert what_if.body["from_sequence"] == last
            documented("POST", "/shadow/{workflow_id}/what-if", what_if)


def check_shadow_routes(bases: list[str], owner: Owners,
                        runs: dict[str, list[HistoryEvent]], token: str | None = None) -> None:
    """Prediction and feedback of each run's actions through every worker."""
    for workflow_id, events in runs.items():
        url = quote_id(workflow_id)
        actions = sorted({e.action_id for e in events if e.action_id})
        for i, base in enumerate(bases):
            action = actions[i]
            prediction = call_as(token, "GET", f"{base}/shadow/{url}/prediction/{action}")
            assert (prediction.status, prediction.served_by) == (200, owner.of(workflow_id))
            assert prediction.body["workflow_id"] == workflow_id
            documented("GET", "/shadow/{workflow_id}/prediction/{action_id}", prediction)
            feedback = call_as(token, "PUT", f"{base}/shadow/{url}/feedback/{action}/"
                                   f"cpu=0.5,memory={100 + i}MiB")
            assert (feedback.status, feedback.served_by) == (200, owner.of(workflow_id)), feedback
            assert feedback.body["actual"]["memory_bytes"] == (100 + i) * 2**20
            documented("PUT", "/shadow/{workflow_id}/feedback/{action_id}/{usage}", feedback)
            again = call_as(token, "PUT", f"{base}/shadow/{url}/feedback/{action}/cpu=1")
            assert again.status == 409 and "already" in again.body["reason"]
            documented("PUT", "/shadow/{workflow_id}/feedback/{action_id}/{usage}", again)


def check_create(bases: list[str], owner: Owners, workflow_type: str,
                 latencies: dict[bool, list[float]], token: str | None = None) -> None:
    """The issue's case: new ids alternating between the workers, with bodies."""
    # Each partition once through each worker: the second round in reverse order.
    ids = (one_per_partition(f"new-{uuid.uuid4().hex[:6]}", len(owner))
           + one_per_partition(f"new-{uuid.uuid4().hex[:6]}", len(owner))[::-1])
    for n, workflow_id in enumerate(ids):
        base, other = bases[n % 2], bases[(n + 1) % 2]
        body = {"run_id": f"run-{n}", "workflow_type": workflow_type}
        made = call_as(token, "POST", f"{base}/shadow/create/{quote_id(workflow_id)}", body)
        assert (made.status, made.served_by) == (201, owner.of(workflow_id)), made
        assert made.seconds < 5
        assert made.body == {"workflow_id": workflow_id, "created": True, **body}
        documented("POST", "/shadow/create/{workflow_id}", made)
        latencies[made.served_by != base].append(made.seconds)
        again = call_as(token, "POST", f"{other}/shadow/create/{quote_id(workflow_id)}", body)
        assert (again.status, again.body["created"], again.served_by) == (
            200, False, made.served_by)
        bad = call_as(token, "POST", f"{other}/shadow/create/{quote_id(workflow_id)}", raw=b"[1]")
        assert bad.status == 400 and "JSON object" in bad.body["reason"]
        documented("POST", "/shadow/create/{workflow_id}", bad)


def wait_for_runs(bases: list[str], runs: dict[str, list[HistoryEvent]],
                  token: str | None = None) -> None:
    """Until every run is mirrored to its last event and shadowed to its last action (the
    mirrors and the shadows each restore a partition taken over before applying its events,
    so one may be a moment ahead of the other)."""
    def mirrored() -> bool:
        return all(call("GET", f"{bases[0]}/shadow/{quote_id(w)}/state", token=token
                        ).body.get("sequence") == events[-1].sequence
                   for w, events in runs.items())

    def shadowed() -> bool:
        return all(call("GET", f"{bases[0]}/shadow/{quote_id(w)}/prediction/"
                               f"{[e.action_id for e in events if e.action_id][-1]}",
                        token=token).status == 200
                   for w, events in runs.items())
    wait_for(mirrored, what="every run mirrored", timeout=60)
    wait_for(shadowed, what="every run shadowed", timeout=60)


def test_every_route_through_either_worker_and_after_a_rebalance(
        settings: Settings, worker_factory: Callable[..., WorkerProcess]) -> None:
    first = worker_factory(web_forward_timeout_seconds=3.0).start()
    second = worker_factory(web_forward_timeout_seconds=3.0).start()
    bases = [first.settings.advertised_url, second.settings.advertised_url]
    workflow_type = f"fw-{uuid.uuid4().hex[:6]}"
    latencies: dict[bool, list[float]] = {False: [], True: []}
    creates: dict[bool, list[float]] = {False: [], True: []}

    # Both up: each owns two partitions; every route answers through either.
    ids = one_per_partition(f"fw-{uuid.uuid4().hex[:6]}", settings.partitions)
    runs = publish_runs(settings, ids, workflow_type)
    owner = wait_for(lambda: owners(bases, ids), what="both workers owning partitions")
    wait_for_runs(bases, runs)
    check_mirror_routes(bases, owner, runs)
    check_shadow_routes(bases, owner, runs)
    check_create(bases, owner, workflow_type, creates)
    definition = {"tolerance": 4.5, "weights": {"wf.actions.*": 2.0}}
    for i, (base, other) in enumerate([bases, bases[::-1]]):
        name = f"{workflow_type}-def-{i}"
        assert call("PUT", f"{base}/shadow/definitions/{name}", definition).status == 200
        wait_for(lambda url=f"{other}/shadow/definitions/{name}": call(  # type: ignore[misc]
            "GET", url).body.get("registered"),
            what="a definition registered through the other worker")

    # The second worker crashes: its workflows answer 503 with Retry-After, promptly, until
    # the first owns them (restored from shadow.mirror), then correctly.
    second.kill()
    moved = [w for w in ids if owner.of(w) == bases[1]]
    seen: list[Answer] = []

    def taken_over() -> bool:
        seen.append(call("GET", f"{bases[0]}/shadow/{quote_id(moved[0])}/state"))
        return seen[-1].status == 200
    wait_for(taken_over, what="the first worker taking over", timeout=40)
    assert seen[0].status == 503 and seen[0].retry_after and seen[0].body["reason"]
    slow_or_wrong = [a for a in seen if a.status not in (200, 503) or a.seconds >= 5]
    assert not slow_or_wrong, (slow_or_wrong, len(seen))
    assert all(a.retry_after for a in seen if a.status == 503)
    for answer in seen:
        documented("GET", "/shadow/{workflow_id}/state", answer)
    check_mirror_routes(bases[:1], Owners(dict.fromkeys(owner, bases[0])), runs)

    # It starts again: while the group rebalances, answers stay prompt (503 or correct);
    # right after, every route answers through either worker again.
    second.start()
    during: list[Answer] = []

    def settled() -> Owners | None:
        during.extend(call("GET", f"{base}/shadow/{quote_id(moved[0])}/state") for base in bases)
        return owners(bases, ids)
    owner = wait_for(settled, what="the partitions split again", timeout=60)
    assert all(a.status in (200, 503) and a.seconds < 5 for a in during), during
    check_mirror_routes(bases, owner, runs)
    later = publish_runs(settings, one_per_partition(f"fw2-{uuid.uuid4().hex[:6]}",
                                                     settings.partitions), workflow_type)
    wait_for_runs(bases, later)
    for _ in range(5):
        check_mirror_routes(bases, owner, later, latencies)
    check_shadow_routes(bases, owner, later)
    check_create(bases, owner, workflow_type, creates)
    for i, base in enumerate(bases):
        got = call("GET", f"{base}/shadow/definitions/{workflow_type}-def-{1 - i}")
        assert got.status == 200 and got.body["registered"] and got.body["tolerance"] == 4.5

    for route, seconds in (("GET state", latencies), ("POST create", creates)):
        print(f"{route} latency, median: local {statistics.median(seconds[False]) * 1000:.1f} "
              f"ms ({len(seconds[False])}), forwarded "
              f"{statistics.median(seconds[True]) * 1000:.1f} ms ({len(seconds[True])})")
