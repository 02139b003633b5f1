"""Batches close once nothing more is queued, not after the whole window (Faust's agent test
context: the take's logic, no broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import faust

from streams.runtime.take import take_batches

WINDOW, LINGER = 5.0, 0.05


def _run(scenario: Callable[[object, list[tuple[float, int]]], Awaitable[None]],
         max_: int = 100, linger: float = LINGER) -> list[tuple[float, int]]:
    # The broker is never reached: the test context feeds the agent's channel directly.
    app = faust.App(f"take-test-{time.monotonic_ns()}", broker="kafka://localhost:1")
    batches: list[tuple[float, int]] = []

    @app.agent(app.topic("t", value_serializer="raw"))
    async def agent(stream: faust.StreamT) -> None:
        async for batch in take_batches(stream, max_, WINDOW, linger):
            batches.append((time.monotonic(), len(batch)))
            for event in batch:
                await stream.ack(event)

    async def main() -> None:
        async with agent.test_context() as context:
            await scenario(context, batches)

    asyncio.run(main())
    return batches


def test_a_lone_message_is_handed_over_at_once_not_after_the_window() -> None:
    async def scenario(context: object, batches: list[tuple[float, int]]) -> None:
        start = time.monotonic()
        for _ in range(3):
            await context.put(b"x")  # type: ignore[attr-defined]
        while not batches and time.monotonic() - start < WINDOW:
            await asyncio.sleep(0.01)
        assert batches and batches[0][1] == 3
        assert batches[0][0] - start < WINDOW / 5, batches

    _run(scenario)


def test_a_backlog_fills_batches_to_the_maximum() -> None:
    async def scenario(context: object, batches: list[tuple[float, int]]) -> None:
        for _ in range(250):
            await context.put(b"y")  # type: ignore[attr-defined]
        while sum(n for _, n in batches) < 250:
            await asyncio.sleep(0.01)
        assert [n for _, n in batches] == [100, 100, 50]

    _run(scenario)


def test_a_steady_trickle_within_the_linger_stays_in_one_batch() -> None:
    async def scenario(context: object, batches: list[tuple[float, int]]) -> None:
        for _ in range(30):  # gaps far shorter than a check: one batch
            await context.put(b"z")  # type: ignore[attr-defined]
            await asyncio.sleep(0.005)
        while not batches:
            await asyncio.sleep(0.01)
        assert batches[0][1] == 30, batches

    _run(scenario, linger=2.0)
