"""The scripts on a Redis Cluster: each call straight to the master of its keys.

:class:`ClusterScripts` has the interface of
:class:`~spendgate.core.scripts.Scripts` (``handles``, ``send``,
``reload_and_call``, ``load_all``), so :meth:`spendgate.core.store.Store.run`
is the same one round trip on a cluster. A call goes to the master that owns
its first key's slot (:class:`~spendgate.core.topology.Topology`), through
that master's own ``redis.asyncio.Redis``: the pool that waits, the hiredis
packing and the automatic pipelining of a single Redis, per node, so a call
costs what it costs on one Redis plus the slot of its key. redis-py's
``RedisCluster`` has no pool to pipeline on; it serves the rest (the
flusher, reconcile, scans: :func:`spendgate.core.connection.client_for`).

What the cluster answers:

- ``MOVED``: the slot is served elsewhere now: the slot map is patched, the
  call sent there (and the whole map read again soon);
- ``ASK``: the slot is being moved and this key is already at the target:
  ``ASKING`` and the call, on one connection of the target, once;
- ``TRYAGAIN``, ``CLUSTERDOWN``: retried after a short pause, up to
  :data:`PAUSES`; then the call is *unavailable*;
- ``NOSCRIPT``: the script is loaded on that node (once for every call that
  met it together, :meth:`Scripts.reload_and_call`) and the call retried.

A master that does not answer (refused, timed out, ``LOADING``, ...) counts
against its own breaker (:class:`~spendgate.durability.breaker.NodeBreakers`):
calls for its slots are unavailable (admission fails closed, facts are
spooled, as on a single Redis), calls for other masters' slots go on. The
slot map is read again meanwhile, so a replica promoted in its place (or its
slots given to another master) is found.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MaxConnectionsError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from spendgate.config import BudgetConfig
from spendgate.core.connection import cluster_node_options, node_client
from spendgate.core.scripts import SCRIPT_NAMES, Scripts, configured_source
from spendgate.core.topology import Node, Topology
from spendgate.durability.breaker import BreakerState, NodeBreakers
from spendgate.errors import BudgetUnavailableError

#: the pause before each retry of a call the cluster answered ``TRYAGAIN`` or
#: ``CLUSTERDOWN`` (a slot being moved, a failover under way), seconds; and
#: of a ``MOVED`` after the second in a row. Then the call is unavailable.
PAUSES = (0.0, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.2)

_CLOSED = BreakerState.CLOSED

#: errors that mean "this node did not answer"
_NODE_DOWN = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
#: error replies that mean the same (the node is there but cannot serve)
_NODE_CANNOT_SERVE = (ReadOnlyError, OutOfMemoryError)


def _unavailable(message: str, cause: BaseException | None) -> BudgetUnavailableError:
    error = BudgetUnavailableError(message)
    error.__cause__ = cause
    return error


class ClusterScripts:
    """The scripts of one configuration on every master of a cluster.

    :param config: the settings (``redis_url``: any node; the pools' sizes
        and timeouts, per node)
    :param constants: the scripts' configuration, see
        :func:`~spendgate.core.scripts.configured_source`
    :param breakers: the nodes' breakers
    :param pipelining: batch concurrent calls per node
        (:class:`~spendgate.core.pipeline.AutoPipeline`)
    """

    def __init__(
        self,
        config: BudgetConfig,
        constants: Mapping[str, str],
        breakers: NodeBreakers,
        *,
        pipelining: bool,
    ) -> None:
        self._config = config
        self._constants = constants
        self._breakers = breakers
        self._pipelining = pipelining
        self._options = options = cluster_node_options(config)
        self.topology = Topology(
            (options.get("host") or "localhost", int(options.get("port") or 6379)),
            self._make_node,
        )
        self._owners = self.topology.owners
        #: operation name -> its script (the SHA and the source are the same
        #: on every node: each node's Scripts registers its own)
        self.handles: dict[str, AsyncScript] = {
            name: AsyncScript(None, configured_source(name, constants))  # type: ignore[arg-type]
            for name in SCRIPT_NAMES
        }
        self._operations = {script.sha: name for name, script in self.handles.items()}
        #: how often the cluster answered each redirection or retry
        #: (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``)
        self.redirections: Counter[str] = Counter()
        self._sources = {script.sha: script.script for script in self.handles.values()}

    def _make_node(self, host: str, port: int) -> Node:
        client: Redis = node_client(self._config, self._options, host, port)
        name = f"{host}:{port}"
        return Node(
            name,
            host,
            port,
            client,
            Scripts(client, self._constants, pipelining=self._pipelining),
            self._breakers.node(name),
        )

    async def send(self, *command: Any) -> Any:
        """Send one script call (``EVALSHA sha numkeys key...``) to the master
        of its first key, following the cluster's redirections.

        :raise BudgetUnavailableError: the master does not answer (its
            breaker is open), or the cluster kept answering ``TRYAGAIN``,
            ``CLUSTERDOWN`` or redirections
        """
        key = command[3]
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        node = self._owners[slot]
        # The hot path: a known master, up, that answers.
        if node is None or node.down or node.breaker.state is not _CLOSED:
            return await self._send_carefully(slot, command, None)
        try:
            reply = await node.scripts.send(*command)
        except BaseException as exc:
            return await self._send_carefully(slot, command, (node, exc))
        node.breaker.success()
        return reply

    async def _send_carefully(
        self,
        slot: int,
        command: tuple[Any, ...],
        failed: tuple[Node, BaseException] | None,
    ) -> Any:
        """:meth:`send` for a slot whose master is unknown or was down, or
        after ``failed``: the first attempt's node and error."""
        asking: Node | None = None
        reload = False
        last: BaseException | None = None
        for pause in PAUSES:
            if failed is not None:
                node = failed[0]
            else:
                node = asking or self._owners[slot] or await self._find_owner(slot)
                self._pass_breaker(node)
            breaker = node.breaker
            try:
                if failed is not None:
                    error, failed = failed[1], None
                    raise error
                if reload:
                    reload = False
                    reply = await self._reload_and_call(node, command)
                elif asking is None:
                    reply = await node.scripts.send(*command)
                else:
                    asking = None
                    reply = await self._send_asking(node, command)
            except NoScriptError:
                breaker.success()
                reload = True  # (the node loads it, once for all who met it)
                continue
            except MovedError as exc:
                breaker.success()
                self.redirections["MOVED"] += 1
                self.topology.moved(slot, exc.host or node.host, exc.port)
                if last is not None and pause:
                    await asyncio.sleep(pause)  # redirected back and forth
                last = exc
                continue
            except AskError as exc:
                breaker.success()
                self.redirections["ASK"] += 1
                asking = self.topology.node(exc.host or node.host, exc.port)
                last = exc
                continue
            except (TryAgainError, ClusterDownError) as exc:
                breaker.success()
                retry = "TRYAGAIN" if isinstance(exc, TryAgainError) else "CLUSTERDOWN"
                self.redirections[retry] += 1
                self.topology.refresh_soon()
                await asyncio.sleep(pause or 0.005)
                last = exc
                continue
            except BaseException as exc:
                instead = self._failed(node, exc)
                if instead is not None:
                    raise instead from exc
                raise
            breaker.success()
            if node.down:
                self._node_up(node)
            return reply
        raise _unavailable(
            f"the cluster kept redirecting or refusing slot {slot}: {last}", last
        )

    def _pass_breaker(self, node: Node) -> None:
        breaker = node.breaker
        if breaker.state is not _CLOSED and not breaker.allow():
            self.topology.refresh_soon()  # its slots may be served elsewhere now
            raise BudgetUnavailableError(
                f"Redis node {node.name} unavailable: circuit breaker open "
                "after repeated failures"
            )

    async def _find_owner(self, slot: int) -> Node:
        try:
            return await self.topology.owner(slot)
        except (RedisError, OSError) as exc:
            raise _unavailable(f"no master found for slot {slot}: {exc}", exc) from None

    async def _reload_and_call(self, node: Node, command: tuple[Any, ...]) -> Any:
        # NOSCRIPT: that node lost its scripts (restarted, failed over,
        # flushed): load it there, once for every call waiting on it.
        sha, count = command[1], int(command[2])
        keys, args = command[3 : 3 + count], command[3 + count :]
        return await node.scripts.reload_and_call(self._operations[sha], keys, args)

    async def _send_asking(self, node: Node, command: tuple[Any, ...]) -> Any:
        # ASKING holds for the next command of the same connection only: the
        # two go out together. The target may not have loaded the script
        # yet, so the whole source goes (rare: only while a slot moves).
        pipe = node.client.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        if command[0] == "EVALSHA":
            command = ("EVAL", self._sources[command[1]], *command[2:])
        pipe.execute_command(*command)
        _, reply = await pipe.execute(raise_on_error=False)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _failed(self, node: Node, exc: BaseException) -> BudgetUnavailableError | None:
        """Count a call that failed on ``node``: against its breaker when it
        did not answer or cannot serve, as an answer when it did. Returns
        the error to raise instead, if any."""
        breaker = node.breaker
        if isinstance(exc, MaxConnectionsError):
            breaker.abandon()  # this process is busy: the node is not down
        elif isinstance(exc, _NODE_DOWN + _NODE_CANNOT_SERVE):
            breaker.failure()
            self.topology.refresh_soon()
            if not node.down:
                node.down = True
                logger.warning(
                    "spendgate: Redis node {} unavailable ({}: {}); its keys are "
                    "unavailable until it answers",
                    node.name,
                    type(exc).__name__,
                    exc,
                )
            if isinstance(exc, _NODE_CANNOT_SERVE):
                return _unavailable(f"Redis node {node.name}: {exc}", exc)
        elif isinstance(exc, ResponseError):
            if str(exc).startswith("BUSY"):
                breaker.failure()  # (a script still running: the store says so)
            else:
                breaker.success()  # it answered: a bug, not an outage
        else:
            breaker.abandon()  # cancelled: the outcome is unknown
        return None

    def _node_up(self, node: Node) -> None:
        node.down = False
        logger.info("spendgate: Redis node {} reachable again", node.name)

    async def reload_and_call(
        self, operation: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run ``operation`` (:meth:`send` reloads a script a node lacks
        itself: kept for :class:`~spendgate.core.scripts.Scripts`' interface)."""
        sha = self.handles[operation].sha
        return await self.send("EVALSHA", sha, len(keys), *keys, *args)

    async def load_all(self) -> None:
        """Load every script on every master now (a master down now loads
        its scripts on its first call once it is back).

        :raise RedisError: no node of the cluster answered
        """
        await self.topology.refresh()
        masters = {id(n): n for n in self.topology.owners if n is not None}
        for node in masters.values():
            try:
                await node.scripts.load_all()
            except _NODE_DOWN as exc:
                self._failed(node, exc)

    async def aclose(self) -> None:
        """Close every node's client."""
        await self.topology.aclose()
