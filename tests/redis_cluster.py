"""A private Redis Cluster for the cluster tests: started, broken and torn down
by the tests themselves.

:class:`LocalCluster` runs three masters (no replicas), each its own
``redis-server --cluster-enabled yes`` on a free port with its data in a
temporary folder (see :class:`redis_server.RedisServer`), and joins them with
``redis-cli --cluster create``: the standard slot split, so the one slot
every spendgate key is in today (``{sg}``, slot 331) and slot 0 are on the
first master. ``cluster-require-full-coverage no``: a master that is down
takes only its own slots with it, the others keep serving. Fewer than three
masters (``redis-cli`` refuses them), or any number without replicas when
asked (``join_by_hand``), are joined by hand, with the same slot split: the
benchmark compares one master with three.

Joined either way, a cluster serves about 2 s after its nodes start, no
sooner: a Redis master waits ``CLUSTER_WRITABLE_DELAY`` (2000 ms, fixed in
the server, counted from its start) before it says ``cluster_state:ok``.
By hand the wait is in :meth:`LocalCluster.wait_ok` rather than in
``redis-cli``, and it is not shorter (median 2.09 s both ways, 8 starts
each, Redis 7.0): what saves time is starting clusters side by side.

The machine's shared Redis (port 6379) is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from redis import Redis as SyncRedis
from redis.crc import key_slot

from redis_server import RedisServer, free_port

#: the slot of every spendgate key today: the ``{sg}`` hash tag
SG_SLOT = key_slot(b"{sg}")

_NODE_ARGS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    # A dead master is noticed (and its slots reported down) in about a second.
    "--cluster-node-timeout",
    "1000",
    "--cluster-require-full-coverage",
    "no",
)


def redis_cli_binary() -> str | None:
    """The ``redis-cli`` executable, or ``None`` when it is not installed."""
    return shutil.which("redis-cli")


class LocalCluster:
    """Three cluster masters of the tests' own (or as many as asked).

    :param directory: where each node keeps its AOF, log and ``nodes.conf``
    :param masters: how many masters, at least 1 (3 or more with replicas)
    :param replicas: replicas per master
    :param node_args: more ``redis-server`` options for every node
    :param join_by_hand: meet the nodes and give out the slots with
        ``CLUSTER`` commands rather than ``redis-cli --cluster create``
        (always so for fewer than 3 masters; no faster: see the module)
    :raise ValueError: no master, or replicas for fewer than 3 masters or
        joined by hand
    """

    def __init__(
        self,
        directory: Path,
        masters: int = 3,
        replicas: int = 0,
        node_args: Sequence[str] = (),
        join_by_hand: bool = False,
    ) -> None:
        self.join_by_hand = join_by_hand or masters < 3
        if masters < 1 or (replicas and self.join_by_hand):
            raise ValueError(
                "at least 1 master; replicas need 3 masters and redis-cli's join"
            )
        self.replicas = replicas
        # (the cluster bus on a free port of its own too: the default, the
        # node's port + 10000, may be taken or out of range)
        self._bus_ports = [free_port() for _ in range(masters * (1 + replicas))]
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                extra_args=(*_NODE_ARGS, "--cluster-port", str(bus), *node_args),
            )
            for i, bus in enumerate(self._bus_ports)
        ]
        self._ids: dict[int, str] = {}

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start every node, join them into one cluster, wait until it serves."""
        cli = redis_cli_binary()
        if cli is None:
            raise RuntimeError("redis-cli is not installed")
        for node in self.nodes:
            node.start()
        if self.join_by_hand:
            self._join_by_hand()
        else:
            self._create(cli)
        self.wait_ok()

    def _create(self, cli: str) -> None:
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                "redis-cli --cluster create failed:\n"
                + created.stdout.decode(errors="replace")
                + created.stderr.decode(errors="replace")
            )

    def _join_by_hand(self) -> None:
        """What ``redis-cli --cluster create`` does for masters alone: meet,
        then each master its share of the slots, in order, split as
        ``redis-cli`` splits them (the first master has slot 0 and
        ``{sg}``'s). ``ADDSLOTSRANGE`` is Redis 7's, as the tests need."""
        first, count = self.nodes[0], len(self.nodes)
        with first.client() as client:
            for node, bus in zip(self.nodes[1:], self._bus_ports[1:], strict=True):
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        low = 0
        for i, node in enumerate(self.nodes):
            high = round(16384 * (i + 1) / count) - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
            low = high + 1

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every running node says ``cluster_state:ok`` and all of them
        agree on who owns every slot."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._settled():
                    return
            except Exception:  # a node still starting: ask again
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not settle")
            time.sleep(0.05)

    def _settled(self) -> bool:
        maps = []
        for node in self.nodes:
            if node.process is None:
                continue
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
                maps.append(self._slot_map(client))
        return all(m == maps[0] for m in maps)

    @staticmethod
    def _slot_map(client: SyncRedis) -> list[tuple[int, int, int]]:
        slots = client.execute_command("CLUSTER", "SLOTS")
        if isinstance(slots, dict):  # redis-py parsed it: {(start, end): {...}}
            return sorted(
                (int(start), int(end), int(info["primary"][1]))
                for (start, end), info in slots.items()
            )
        return sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)

    # -- who is who ------------------------------------------------------------

    def node_id(self, node: RedisServer) -> str:
        with node.client() as client:
            raw = client.execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def owner(self, slot: int = SG_SLOT) -> RedisServer:
        """The master that owns ``slot``, as the first running node sees it."""
        for node in self.nodes:
            if node.process is None:
                continue
            with node.client() as client:
                for start, end, port in self._slot_map(client):
                    if start <= slot <= end:
                        return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node owns slot {slot}")

    def masters(self) -> list[RedisServer]:
        """The running masters that own slots."""
        node = next(n for n in self.nodes if n.process is not None)
        with node.client() as client:
            ports = {port for _, _, port in self._slot_map(client)}
        return [n for n in self.nodes if n.port in ports and n.process is not None]

    def not_owning(self, slot: int = SG_SLOT) -> RedisServer:
        """A running master that does not own ``slot``."""
        owner = self.owner(slot)
        return next(n for n in self.masters() if n is not owner)

    def wait_replicated(self, master: RedisServer, timeout: float = 10) -> None:
        """Until every replica of ``master`` has all of its writes."""
        deadline = time.monotonic() + timeout
        while True:
            with master.client() as client:
                info = client.info("replication")
            offset = int(info["master_repl_offset"])
            replicas = [v for k, v in info.items() if k.startswith("slave")]
            if replicas and all(int(r["offset"]) >= offset for r in replicas):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replicas of {master.port} did not catch up")
            time.sleep(0.02)

    def wait_owner_changes(
        self, slot: int, old: RedisServer, timeout: float = 30
    ) -> None:
        """Until a running master other than ``old`` owns ``slot`` (a replica
        promoted by the cluster's failover) and the cluster serves again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.owner(slot) is not old:
                    self.wait_ok(timeout=max(1.0, deadline - time.monotonic()))
                    return
            except Exception:  # a node in the middle of the failover
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"slot {slot} was not taken over")
            time.sleep(0.05)

    def url(self, node: RedisServer) -> str:
        return f"redis://127.0.0.1:{node.port}"

    # -- resharding ----------------------------------------------------------

    def migrate_slot(self, slot: int, target: RedisServer) -> int:
        """Move ``slot`` and its keys to ``target`` while clients keep using
        it: ``SETSLOT IMPORTING`` on the target, then on the source, in one
        script, ``SETSLOT MIGRATING``, one ``MIGRATE`` of every key and
        ``SETSLOT NODE``, then ``SETSLOT NODE`` on every other master.
        Returns how many keys moved.

        The source goes from serving the slot with all its keys to answering
        ``MOVED`` in one step: no client's script runs while the slot is
        half moved (the scripts of this round touch keys they do not
        declare, which an ``ASK`` window would split; see the README's
        "Redis Cluster"). Until the target is told it owns the slot, a
        client is sent back and forth between the two (``MOVED``).
        """
        moved = self.open_migration(slot, target, finish=True)
        self.finish_migration(slot, target)
        return moved

    def open_migration(self, slot: int, target: RedisServer, *, finish: bool) -> int:
        """Move every key of ``slot`` from its owner to ``target``; the source
        then answers ``ASK`` (the slot left migrating), or, with ``finish``,
        ``MOVED`` (the slot given to the target)."""
        source = self.owner(slot)
        assert source is not target, "the target already owns the slot"
        source_id, target_id = self.node_id(source), self.node_id(target)
        with target.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        with source.client() as client:
            moved = client.eval(
                _MIGRATE_ALL,
                0,
                slot,
                target_id,
                "127.0.0.1",
                target.port,
                "1" if finish else "",
            )
        return int(moved)

    def finish_migration(self, slot: int, target: RedisServer) -> None:
        """Tell every master that ``target`` owns ``slot`` now, the target
        first; wait until they agree."""
        target_id = self.node_id(target)
        for node in [target, *self.nodes]:
            if node.process is not None:
                with node.client() as client:
                    client.execute_command(
                        "CLUSTER", "SETSLOT", slot, "NODE", target_id
                    )
        self.wait_ok()


#: on the source master: open the slot, move all of its keys, and (ARGV[5]
#: not empty) give it to the target, atomically
_MIGRATE_ALL = """
local slot, target_id, host, port = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', target_id)
local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', slot, 1000000)
if #keys > 0 then
  redis.call('MIGRATE', host, port, '', 0, 10000, 'KEYS', unpack(keys))
end
if ARGV[5] ~= '' then
  redis.call('CLUSTER', 'SETSLOT', slot, 'NODE', target_id)
end
return #keys
"""


def start_cluster(
    directory: Path,
    masters: int = 3,
    node_args: Sequence[str] = (),
    join_by_hand: bool = False,
    attempts: int = 3,
) -> LocalCluster:
    """A started :class:`LocalCluster` of masters alone, started again on new
    ports when it fails: free ports are found by binding and letting go, so
    another process can take one before a node binds it.

    :raise RuntimeError: the last attempt's failure
    """
    failure: Exception | None = None
    for attempt in range(attempts):
        cluster = LocalCluster(
            directory / f"try{attempt}",
            masters=masters,
            node_args=node_args,
            join_by_hand=join_by_hand,
        )
        try:
            cluster.start()
        except Exception as exc:
            cluster.stop()
            failure = exc
        else:
            return cluster
    raise RuntimeError(f"the cluster did not start: {failure}")
