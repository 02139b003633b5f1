"""Sending the agents' own records: straight to the app's producer.

Faust's ``Topic.send`` wraps every record in a ``FutureMessage`` and routes it through its
channel and sensor callbacks; on the hot path (a command, an outcome and a record per action)
that machinery cost more than the send itself (py-spy, ``bench/bench_first_path.py``). Keys and
values here are bytes shadowflow encoded itself, so nothing of it is needed."""

from __future__ import annotations

import asyncio
from typing import Any

import faust


async def send_raw(topic: faust.TopicT, key: bytes | None, value: bytes | None,
                   partition: int | None = None) -> asyncio.Future[Any]:
    """Hand one record to the producer (``partition`` ``None``: the key's, as for any Kafka
    client); returns the future of its delivery. The producer's flush covers it."""
    return await topic.app.producer.send(topic.get_topic_name(), key, value, partition, None,
                                         None)
