"""Requests about a workflow go to the worker that owns its partition.

Every worker answers every route. A request about a workflow (the route's ``workflow_id``) is
served where the workflow's partition of ``wf.history`` is consumed: here, or forwarded to the
owner at the URL the owner advertised to the consumer group (``SHADOWFLOW_WEB_ADVERTISED_URL``,
Faust's ``canonical_url``), keeping method, path, query, headers and body, and relaying the
owner's status, body and ``Retry-After``. Forwarding waits at most
``SHADOWFLOW_WEB_FORWARD_TIMEOUT_SECONDS`` (then 504). While the group rebalances, when no owner is
known yet, when the owner cannot be reached, or when a peer forwarded a request here that this
worker does not own (the two disagree while ownership changes), the answer is 503 with
``Retry-After`` and a JSON reason: never a wait without end, and never a second hop.

Every answer names the worker that served it in ``X-Shadowflow-Served-By``.

Faust's own ``topic_route`` forwards neither body nor a bounded wait: it copied the
``Content-Length`` header without the body, so the owner waited for bytes that never came.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import faust
from aiokafka.partitioner import murmur2
from faust.types import TP
from faust.web import Request, Response, View
from yarl import URL

from streams.runtime.http import Handler, RetryLater

log = logging.getLogger(__name__)

SERVED_BY = "X-Shadowflow-Served-By"
FORWARDED_BY = "X-Shadowflow-Forwarded-By"

# Headers about one connection (RFC 9110, 7.6.1), and those the client library sets itself.
_NOT_FORWARDED = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
_RELAYED = (SERVED_BY, "Retry-After")


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as producers must use) gives
    ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Local:
    """Serve the request here: this worker owns the partition."""

    partition: int


@dataclass(frozen=True)
class Remote:
    """Forward the request to the owner of the partition, at ``url``."""

    partition: int
    url: str


@dataclass(frozen=True)
class Unavailable:
    """Nobody can serve the request now: 503, retry after ``retry_after`` seconds."""

    reason: str
    retry_after: int


Decision = Local | Remote | Unavailable


def owner_of(distribution: Mapping[str, Mapping[str, Iterable[int]]], topic: str,
             partition: int) -> str | None:
    """The URL owning ``topic``'s ``partition`` in the group's assignment (URL -> topic ->
    partitions), or None when no member has it."""
    for url, topics in distribution.items():
        if partition in topics.get(topic, ()):
            return url
    return None


def locate(partition: int, *, rebalancing: bool, owned: bool, owner: str | None, own_url: str,
           forwarded_by: str | None, retry_after: int) -> Decision:
    """Where a request about a key of ``partition`` is served.

    ``owned``: this worker consumes the partition; ``owner``: the URL the assignment names for
    it; ``forwarded_by``: the peer that forwarded the request here, if any."""
    if rebalancing:
        return Unavailable("the workers are rebalancing their partitions; retry shortly", 1)
    if owned:
        return Local(partition)
    if forwarded_by is not None:
        return Unavailable(
            f"{forwarded_by} forwarded this request here, but this worker ({own_url}) does not "
            f"own partition {partition}: ownership is changing; retry shortly", retry_after)
    if owner is None:
        return Unavailable(f"no worker owns partition {partition} yet (the group has not "
                           "assigned it); retry shortly", retry_after)
    if _same_url(owner, own_url):
        return Unavailable(
            f"partition {partition} belongs to another worker advertising this worker's own URL "
            f"{own_url}: each worker needs a URL of its own (SHADOWFLOW_WEB_ADVERTISED_URL), "
            "or a restarted worker's old membership has not expired yet", retry_after)
    return Remote(partition, owner)


def forward_headers(headers: Iterable[tuple[str, str]], own_url: str) -> list[tuple[str, str]]:
    """The request headers to send on to the owner: all but the per-connection ones and those
    the client sets itself, plus who forwarded it."""
    kept = [(name, value) for name, value in headers
            if name.lower() not in _NOT_FORWARDED and name.lower() != FORWARDED_BY.lower()]
    return [*kept, (FORWARDED_BY, own_url)]


def forward_target(owner_url: str, raw_path_and_query: str) -> str:
    """The owner's URL for a request's raw (still percent-encoded) path and query."""
    return owner_url.rstrip("/") + raw_path_and_query


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The owner's response headers passed back to the client (the body's type is set apart)."""
    return {name: headers[name] for name in _RELAYED if name in headers}


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


class Forwarding:
    """Routes requests about a key of ``topic`` to the worker that owns the key's partition."""

    def __init__(self, app: faust.App, topic: faust.TopicT, *, partitions: int,
                 timeout_seconds: float, retry_after_seconds: int) -> None:
        self.app = app
        self.topic_name = topic.get_topic_name()
        self.partitions = partitions
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.timeout_seconds = timeout_seconds
        self.retry_after = retry_after_seconds

    @property
    def own_url(self) -> str:
        """The URL this worker advertises to its peers."""
        return str(self.app.conf.canonical_url).rstrip("/")

    def partition_of(self, key: str) -> int:
        """The partition of ``topic`` that ``key`` belongs to."""
        return partition_of(key, self.partitions)

    async def restored(self, key: str,
                       ensure: Callable[[Iterable[int]], Awaitable[set[int]]]) -> int:
        """The partition of ``key``, once its state is restored here (``ensure``); a request
        whose partition was revoked while it waited gets 503 (``RetryLater``)."""
        partition = self.partition_of(key)
        if partition not in await ensure({partition}):
            raise RetryLater(f"partition {partition} is moving to another worker; retry shortly",
                             self.retry_after)
        return partition

    def locate(self, key: str, request: Request) -> Decision:
        """Where the request about ``key`` is served, from the group's current assignment."""
        partition = self.partition_of(key)
        assignor = self.app.assignor
        return locate(
            partition, rebalancing=bool(self.app.rebalancing),
            owned=TP(self.topic_name, partition) in assignor.assigned_actives(),
            owner=owner_of(self.app.router.external_topics_metadata(), self.topic_name,
                           partition),
            own_url=self.own_url, forwarded_by=request.headers.get(FORWARDED_BY),
            retry_after=self.retry_after)

    def route(self, match_info: str = "workflow_id") -> Callable[[Handler], Handler]:
        """Decorate a view method: serve it here when this worker owns the key (the path's
        ``match_info`` part), forward it to the owner otherwise."""

        def decorate(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def routed(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
                decision = self.locate(request.match_info[match_info], request)
                if isinstance(decision, Remote):
                    return await self.forward(view, request, decision)
                if isinstance(decision, Unavailable):
                    return self.unavailable(view, decision)
                response = await handler(view, request, *args, **kwargs)
                response.headers[SERVED_BY] = self.own_url
                return response

            return routed

        return decorate

    def unavailable(self, view: View, decision: Unavailable) -> Response:
        """503 with ``Retry-After`` and the reason."""
        return view.json({"reason": decision.reason}, status=503,
                         headers={"Retry-After": str(decision.retry_after),
                                  SERVED_BY: self.own_url})

    async def forward(self, view: View, request: Request, remote: Remote) -> Response:
        """The owner's answer to the same request, or 503/504 with a reason."""
        body = await request.read()
        target = URL(forward_target(remote.url, request.raw_path), encoded=True)
        headers = forward_headers(request.headers.items(), self.own_url)
        try:
            async with self.app.http_client.request(
                    request.method, target, headers=headers, data=body or None,
                    timeout=self.timeout, allow_redirects=False) as answer:
                payload = await answer.read()
                return view.bytes(payload, content_type=answer.content_type,
                                  status=answer.status, headers=relayed_headers(answer.headers))
        except TimeoutError:
            log.warning("%s %s: owner %s did not answer in %.1fs", request.method,
                        request.path, remote.url, self.timeout_seconds)
            return view.json({"reason": f"the worker owning partition {remote.partition} "
                                        f"({remote.url}) did not answer within "
                                        f"{self.timeout_seconds:g}s"}, status=504,
                             headers={SERVED_BY: self.own_url})
        except aiohttp.ClientError as exc:
            log.warning("%s %s: owner %s unreachable: %s", request.method, request.path,
                        remote.url, exc)
            return self.unavailable(view, Unavailable(
                f"the worker owning partition {remote.partition} ({remote.url}) cannot be "
                f"reached ({exc.__class__.__name__}); its partitions move to the live workers "
                "within the session timeout", self.retry_after))
