"""The slot map of a Redis Cluster: which master serves each of its 16384 slots.

Read with ``CLUSTER SLOTS`` from the node of ``redis_url`` first, then from
any master it named; read again (in the background, at most every
:data:`MIN_REFRESH_SECONDS`) after a ``MOVED``, a node that does not answer,
or ``CLUSTERDOWN``: a failover or a resharding shows up in the next read, and
until then a ``MOVED`` patches its one slot. Each master is a :class:`Node`:
the hot path's own client of it (pool, pipelining, scripts) and its breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from spendgate.errors import ConfigurationError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from spendgate.core.scripts import Scripts
    from spendgate.durability.breaker import CircuitBreaker

#: the slots of a Redis Cluster
SLOTS = 16384

#: the shortest time between two reads of the slot map asked for by errors
MIN_REFRESH_SECONDS = 0.25


@dataclass(eq=False)
class Node:
    """One master of the cluster, as the hot path talks to it."""

    #: ``host:port``
    name: str
    host: str
    port: int
    #: its own client: the pool, waiting and hiredis packing of a single Redis
    client: Redis
    #: its scripts: pipelining and the single-flight NOSCRIPT reload, per node
    scripts: Scripts
    #: its circuit breaker: its outage is its slots' only
    breaker: CircuitBreaker
    #: known not to answer (logged once per outage)
    down: bool = False


#: builds the :class:`Node` of ``(host, port)``
MakeNode = Callable[[str, int], Node]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Topology:
    """Who serves each slot, and one :class:`Node` per master met.

    :param seed: ``(host, port)`` of the node named by ``redis_url``
    :param make_node: builds a node's client, scripts and breaker
    """

    def __init__(self, seed: tuple[str, int], make_node: MakeNode) -> None:
        #: slot -> its master; read by the hot path, changed in place
        self.owners: list[Node | None] = [None] * SLOTS
        #: name -> node, every node met (kept until closed)
        self.nodes: dict[str, Node] = {}
        self._seed = seed
        self._make_node = make_node
        #: the read of the slot map in flight, awaited by every caller
        self._reading: asyncio.Future[None] | None = None
        self._later: asyncio.Task[None] | None = None
        self._last_read = float("-inf")
        self._known = False

    def node(self, host: str, port: int) -> Node:
        """The node at ``host:port`` (made on first use)."""
        name = f"{host}:{port}"
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = self._make_node(host, port)
        return node

    async def owner(self, slot: int) -> Node:
        """The master of ``slot``, reading the slot map first when it is not
        known (the first call, or a slot no master served at the last read).

        :raise RedisError: no node answered, or no master serves ``slot``
        """
        if not self._known or self.owners[slot] is None:
            await self.refresh()
        node = self.owners[slot]
        if node is None:
            raise RedisError(f"no master of the cluster serves slot {slot}")
        return node

    def moved(self, slot: int, host: str, port: int) -> Node:
        """A ``MOVED``: ``slot`` is served at ``host:port`` now. The whole map
        is read again soon (a resharding moves more than one slot)."""
        node = self.owners[slot] = self.node(host, port)
        self.refresh_soon()
        return node

    async def refresh(self) -> None:
        """Read the slot map now: one read for every caller asking meanwhile.

        :raise redis.exceptions.ConnectionError: no node answered (the map
            read before stays)
        :raise ConfigurationError: the node named is not a cluster node
        """
        if self._reading is None:
            reading = self._reading = asyncio.ensure_future(self._read())
            reading.add_done_callback(self._read_done)
        # shield: a caller cancelled must not cancel the others' read
        await asyncio.shield(self._reading)

    def _read_done(self, reading: asyncio.Future[None]) -> None:
        if self._reading is reading:
            self._reading = None
        if not reading.cancelled():
            reading.exception()  # (retrieved: awaited or not, never "never retrieved")

    def refresh_soon(self) -> None:
        """Read the slot map again in the background, no sooner than
        :data:`MIN_REFRESH_SECONDS` after the last read."""
        if self._reading is not None or self._later is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_read + MIN_REFRESH_SECONDS - loop.time())
        self._later = loop.create_task(self._refresh_later(delay))

    async def _refresh_later(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            await self.refresh()
        except (RedisError, OSError, ConfigurationError) as exc:
            logger.debug("spendgate: reading the cluster's slot map failed: {}", exc)
        finally:
            self._later = None

    async def _read(self) -> None:
        self._last_read = asyncio.get_running_loop().time()
        # The node of redis_url first, the first time; then the nodes met,
        # those that answered last first (a dead one costs a refused
        # connection, a stalled one a connect timeout), the seed last.
        seed = self.node(*self._seed)
        met = sorted(self.nodes.values(), key=lambda n: n.down)
        candidates = [n for n in met if n is not seed] + [seed]
        if not self._known:
            candidates = [seed]
        failure: BaseException | None = None
        for node in candidates:
            try:
                raw = await node.client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                if "cluster support disabled" in str(exc):
                    raise ConfigurationError(
                        f"redis_cluster=True, but {node.name} is not a cluster node"
                    ) from None
                failure = exc
            except (RedisError, OSError) as exc:
                failure = exc
            else:
                self._apply(raw, node)
                return
        raise RedisConnectionError(f"no node of the cluster answered: {failure}")

    def _apply(self, raw: Any, asked: Node) -> None:
        owners: list[Node | None] = [None] * SLOTS
        for entry in raw:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            # No host (NULL: the endpoint is unknown, as behind a load
            # balancer, cluster-preferred-endpoint-type unknown-endpoint),
            # an empty or "?" one: the host we asked, as Redis means it.
            host = "" if master[0] is None else _text(master[0])
            if host in ("", "?"):
                host = asked.host
            node = self.node(host, int(master[1]))
            owners[start : end + 1] = [node] * (end + 1 - start)
        self.owners[:] = owners
        self._known = True

    async def aclose(self) -> None:
        """Stop reading and close every node's client."""
        for task in (self._later, self._reading):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for node in self.nodes.values():
            await node.client.aclose()
