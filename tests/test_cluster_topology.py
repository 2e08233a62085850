"""The slot map as :class:`spendgate.core.topology.Topology` reads it from
``CLUSTER SLOTS``, without a cluster.

How: a topology whose nodes' clients are stand-ins answering ``CLUSTER
SLOTS`` with a reply written here, as Redis 7 writes it. Checked: a master
whose endpoint is NULL (unknown: the nodes behind a load balancer,
``cluster-preferred-endpoint-type unknown-endpoint``), empty or ``?`` is
reached at the host that was asked and the port the reply names, as the
command's documentation says a client must.
"""

from __future__ import annotations

from typing import Any

import pytest

from spendgate.core.topology import SLOTS, Node, Topology


class _Client:
    """Answers ``CLUSTER SLOTS`` with ``reply``."""

    def __init__(self, reply: list[Any]) -> None:
        self.reply = reply

    async def execute_command(self, *command: Any) -> Any:
        assert command == ("CLUSTER", "SLOTS")
        return self.reply


def _topology(reply: list[Any]) -> Topology:
    def make_node(host: str, port: int) -> Node:
        client: Any = _Client(reply)
        return Node(f"{host}:{port}", host, port, client, None, None)  # type: ignore[arg-type]

    return Topology(("lb.example.com", 7000), make_node)


@pytest.mark.parametrize("endpoint", [None, b"", b"?"])
async def test_a_master_of_unknown_endpoint_is_the_host_asked(endpoint: Any) -> None:
    reply = [
        [0, 8191, [endpoint, 7001, b"a" * 40]],
        [8192, SLOTS - 1, [b"10.0.0.2", 7002, b"b" * 40]],
    ]
    topology = _topology(reply)
    await topology.refresh()
    first, second = topology.owners[0], topology.owners[SLOTS - 1]
    assert first is not None and second is not None
    assert (first.host, first.port, first.name) == (
        "lb.example.com",
        7001,
        "lb.example.com:7001",
    )
    assert (second.host, second.port) == ("10.0.0.2", 7002)
    assert topology.owners[8191] is first and topology.owners[8192] is second
    assert sorted(topology.nodes) == [
        "10.0.0.2:7002",
        "lb.example.com:7000",
        "lb.example.com:7001",
    ]
