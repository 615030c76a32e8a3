"""One node on several netlayers: sturdyrefs per transport, identity, handoffs across them."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from captp import E, Promise, RemoteRef, far
from netlayers import websocket
from netlayers.np import NpNetlayer
from netlayers.tcp_testing import TcpTestingNetlayer
from netlayers.websocket import WebSocketNetlayer
from ocapn.errors import HandoffError, KeyFileError, UnsupportedTransport
from ocapn.identity import NodeIdentity
from ocapn.locators import Sturdyref
from ocapn.netlayer import Netlayer
from ocapn.node import Node

pytestmark = pytest.mark.anyio


@far
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


@far
class Holder:
    def __init__(self) -> None:
        self.kept: list[Any] = []

    def keep(self, x: Any) -> int:
        self.kept.append(x)
        return len(self.kept)


async def test_one_node_serves_three_netlayers() -> None:
    identity = NodeIdentity()
    server = Node(WebSocketNetlayer(), NpNetlayer(), TcpTestingNetlayer(), identity=identity)
    async with server:
        counter = Counter()
        first = server.publish(counter)
        assert first.peer.transport == "websocket"
        assert first.peer.designator == websocket.designator_of(identity.public)
        np_ref = server.sturdyref(first.swiss_num, transport="np")
        assert np_ref.peer.designator == identity.public.raw.hex()
        tcp_ref = server.sturdyref(first.swiss_num, transport="tcp-testing-only")
        assert server.publish(counter, first.swiss_num, transport="np") == np_ref
        with pytest.raises(UnsupportedTransport, match="no 'onion' netlayer"):
            server.sturdyref(first.swiss_num, transport="onion")
        clients: list[tuple[Netlayer, Sturdyref]] = [
            (WebSocketNetlayer(), first), (NpNetlayer(), np_ref), (TcpTestingNetlayer(), tcp_ref),
        ]
        for client_netlayer, ref in clients:
            async with Node(client_netlayer) as client:
                assert await E(await client.enliven(str(ref))).incr() == counter.n
        assert counter.n == 3


async def test_a_client_on_several_netlayers_dials_each_transport() -> None:
    async with Node(WebSocketNetlayer()) as ws_server, Node(NpNetlayer()) as np_server:
        a, b = Counter(), Counter()
        async with Node(NpNetlayer(), WebSocketNetlayer()) as client:
            assert await E(await client.enliven(ws_server.publish(a))).incr() == 1
            assert await E(await client.enliven(np_server.publish(b))).incr() == 1
            assert sorted(s.peer_location.transport for s in client.sessions
                          if s.peer_location) == ["np", "websocket"]


async def test_handoff_across_netlayers() -> None:
    """Exporter on np; gifter on np and websocket; receivers on websocket (+ np or not)."""
    async with (
        Node(NpNetlayer()) as exporter,
        Node(NpNetlayer(), WebSocketNetlayer()) as gifter,
        Node(WebSocketNetlayer(), NpNetlayer()) as receiver,
        Node(WebSocketNetlayer()) as stranded,
    ):
        counter = Counter()
        on_exporter = await gifter.enliven(exporter.publish(counter))
        holder = Holder()
        on_receiver = await gifter.enliven(receiver.publish(holder))  # over websocket
        assert receiver.sessions[0].peer_location is not None
        assert await E(on_receiver).keep(on_exporter) == 1
        kept = holder.kept[0]
        assert isinstance(kept, Promise)
        got = await kept
        assert type(got) is RemoteRef
        direct = receiver.session_of(got)
        assert direct is not None and direct.peer_location == exporter.location  # over np
        assert await E(got).incr() == 1

        lonely = Holder()
        on_stranded = await gifter.enliven(stranded.publish(lonely))
        assert await E(on_stranded).keep(on_exporter) == 1
        with pytest.raises(HandoffError, match=r"cannot reach the exporter .*no netlayer"):
            await lonely.kept[0]
        assert await E(on_stranded).keep(1) == 2  # the session carries on


def test_key_file_is_private_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    identity = NodeIdentity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = NodeIdentity.load_or_create(path)
    assert again.public == identity.public and again.seed == identity.seed
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        NodeIdentity.load(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"not a key")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        NodeIdentity.load(path)
    with pytest.raises(KeyFileError, match="no key file"):
        NodeIdentity.load(tmp_path / "missing.key")


async def test_node_identity_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    designators = []
    for _ in range(2):
        identity = NodeIdentity.load_or_create(path)
        async with Node(WebSocketNetlayer(), NpNetlayer(), identity=identity) as node:
            designators.append([loc.designator for loc in node.locations])
    assert designators[0] == designators[1]


async def test_state_directory_keeps_websocket_and_np_identities(tmp_path: Path) -> None:
    """With Node(state=DIR), the websocket and np designators and ports survive a restart."""
    state = tmp_path / "state"
    runs = []
    for _ in range(2):
        async with Node(WebSocketNetlayer(), NpNetlayer(), state=state) as node:
            runs.append([str(location) for location in node.locations])
    assert runs[0] == runs[1]
    explicit = NodeIdentity()
    async with Node(WebSocketNetlayer(identity=explicit), state=state) as node:
        assert node.location.designator == websocket.designator_of(explicit.public)


@pytest.mark.parametrize("kind", [WebSocketNetlayer, NpNetlayer, TcpTestingNetlayer])
async def test_crossed_hellos_leave_one_working_session(kind: Any) -> None:
    import anyio

    async with Node(kind()) as a, Node(kind()) as b:
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.connect, b.location)
            tg.start_soon(b.connect, a.location)
        assert len(a.sessions) == 1 and len(b.sessions) == 1
        counter = Counter()
        assert await E(await a.enliven(b.publish(counter))).incr() == 1
        assert await E(await b.enliven(a.publish(counter))).incr() == 2
