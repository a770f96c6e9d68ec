"""Writing a batch to a Redis Cluster: the sink's commands grouped by the node that owns
each key's slot, each group pipelined on a connection the writer keeps for that node.

The slot map is redis-py's (`RedisCluster.nodes_manager`). A `MOVED` reply (a resharded
slot) refreshes it and sends the moved commands again to their new node; an `ASK` reply
(a slot being migrated) sends them to the node named, after `ASKING`. Only redirected
commands are sent again; after MAX_REDIRECT_ROUNDS the batch fails and the pipeline
retries it whole (at-least-once: the same ids). A connection error drops that node's
connection and refreshes the map before the next write (a node failed over).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, ResponseError

from relay.errors import SinkError

MAX_REDIRECT_ROUNDS = 3
_ASKING = b"*1\r\n$6\r\nASKING\r\n"

# One command: the key (its slot picks the node) and the command in RESP.
Command = tuple[bytes, bytes]


class ClusterWriter:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._conns: dict[str, tuple[ClusterNode, Connection]] = {}
        self._started = False
        self._refresh = False  # reload the slot map before the next write
        self.redirects = 0  # MOVED and ASK replies followed (tests, logs)

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        """Every command's reply in order (error replies as exceptions)."""
        if not self._started:  # the client's own start: its aclose() closes only then
            await self._cluster.initialize()
            self._started = True
        if self._refresh:
            await self._cluster.nodes_manager.initialize()
            self._refresh = False
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        asking: dict[int, ClusterNode] = {}
        for _ in range(MAX_REDIRECT_ROUNDS):
            groups: dict[str, tuple[ClusterNode, list[int]]] = {}
            for index in pending:
                node = asking.get(index) or self._node_for(commands[index][0])
                groups.setdefault(node.name, (node, []))[1].append(index)
            sent = [
                self._send_to(node, indexes, commands, asking) for node, indexes in groups.values()
            ]
            for indexes, group_replies in zip(
                (i for _, i in groups.values()), await asyncio.gather(*sent), strict=True
            ):
                for index, reply in zip(indexes, group_replies, strict=True):
                    replies[index] = reply
            redirected = [i for i in pending if isinstance(replies[i], AskError)]
            if not redirected:
                return replies
            self.redirects += len(redirected)
            if any(isinstance(replies[i], MovedError) for i in redirected):
                await self._cluster.nodes_manager.initialize()
            asking = {
                i: await self._ask_target(replies[i])
                for i in redirected
                if not isinstance(replies[i], MovedError)
            }
            pending = redirected
        raise SinkError(
            f"still redirected after {MAX_REDIRECT_ROUNDS} rounds: {replies[pending[0]]}"
        )

    def _node_for(self, key: bytes) -> ClusterNode:
        return self._cluster.nodes_manager.get_node_from_slot(key_slot(key))

    async def _ask_target(self, error: AskError) -> ClusterNode:
        node = self._cluster.nodes_manager.get_node(host=error.host, port=error.port)
        if node is None:
            await self._cluster.nodes_manager.initialize()
            node = self._cluster.nodes_manager.get_node(host=error.host, port=error.port)
        if node is None:
            raise SinkError(f"ASK to {error.host}:{error.port}, a node not in the slot map")
        return node

    async def _send_to(
        self,
        node: ClusterNode,
        indexes: Sequence[int],
        commands: Sequence[Command],
        asking: dict[int, ClusterNode],
    ) -> list[Any]:
        payload = b"".join((_ASKING if i in asking else b"") + commands[i][1] for i in indexes)
        conn = self._connection(node)
        try:
            await conn.send_packed_command(payload)
            replies: list[Any] = []
            for index in indexes:
                if index in asking:
                    await conn.read_response()  # ASKING's +OK
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the others follow
                    replies.append(exc)
        except BaseException:
            await self._drop(node)
            self._refresh = True  # perhaps the node failed over: reload the map
            raise
        return replies

    def _connection(self, node: ClusterNode) -> Connection:
        kept = self._conns.get(node.name)
        if kept is None:
            kept = (node, node.acquire_connection())
            self._conns[node.name] = kept
        return kept[1]

    async def _drop(self, node: ClusterNode) -> None:
        kept = self._conns.pop(node.name, None)
        if kept is not None:
            await kept[1].disconnect(nowait=True)
            kept[0].release(kept[1])

    async def aclose(self) -> None:
        # Closed here: a node the slot map has replaced since is not closed by the client.
        for node, conn in self._conns.values():
            await conn.disconnect()
            node.release(conn)
        self._conns.clear()
