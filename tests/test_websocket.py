"""The websocket netlayer: byte layouts, Python <-> Python sessions, every way a peer can fail."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from captp import E, Record, Symbol, far
from netlayers.websocket import (
    WebSocketNetlayer,
    answer_challenge,
    challenge_message,
    check_answer,
    designator_of,
    key_of_designator,
    self_signed_client_context,
)
from ocapn import syrup
from ocapn.errors import (
    FrameError,
    LocatorError,
    NetlayerTimeout,
    PeerAuthError,
    PeerUnreachable,
)
from ocapn.identity import NodeIdentity
from ocapn.locators import PeerLocation, Sturdyref
from ocapn.node import Node

pytestmark = pytest.mark.anyio

SEED = bytes(range(32))


@far
class Echo:
    def echo(self, x: Any) -> Any:
        return x

    async def call_back(self, callback: Any, x: Any) -> Any:
        return await E(callback).answer(x)


@far
class Answerer:
    def answer(self, x: Any) -> str:
        return f"answer {x}"


# == byte layouts ======================================================================


def test_designator_is_lowercase_unpadded_base32_of_the_key() -> None:
    identity = NodeIdentity.from_seed(SEED)
    designator = designator_of(identity.public)
    assert len(designator) == 52 and designator == designator.lower()
    assert "=" not in designator
    assert key_of_designator(designator) == identity.public
    for bad in ["", designator[:-1], designator.upper()[:-1] + "1", designator + "a"]:
        with pytest.raises(LocatorError):
            key_of_designator(bad)


def test_peer_auth_bytes_match_goblins_and_endo() -> None:
    """54 bytes of <init:peer-auth 32:...>, answered by a 176-byte sig-envelope over them."""
    payload = bytes(range(100, 132))
    challenge = challenge_message(payload)
    assert challenge == b"<14'init:peer-auth32:" + payload + b">"
    assert len(challenge) == 54
    identity = NodeIdentity.from_seed(SEED)
    answer = answer_challenge(identity, challenge)
    assert len(answer) == 176
    assert answer.startswith(b"<17'desc:sig-envelope" + challenge + b"[7'sig-val[5'eddsa[1'r32:")
    check_answer(identity.public, challenge, answer)
    signature = identity.sign(challenge)
    assert signature[:32] in answer and signature[32:] in answer


def test_server_signs_nothing_but_a_canonical_peer_auth() -> None:
    identity = NodeIdentity.from_seed(SEED)
    for bad in [
        b"",
        b"not syrup",
        syrup.encode(Record(Symbol("op:start-session"), (b"x" * 32,))),
        syrup.encode(Record(Symbol("init:peer-auth"), ("a string" * 4,))),
        syrup.encode(Record(Symbol("init:peer-auth"), (b"short",))),
        challenge_message(b"x" * 32) + b"trailing",
    ]:
        with pytest.raises(PeerAuthError):
            answer_challenge(identity, bad)


def test_client_refuses_forged_and_replayed_answers() -> None:
    server = NodeIdentity.from_seed(SEED)
    impostor = NodeIdentity()
    challenge = challenge_message(os.urandom(32))
    with pytest.raises(PeerAuthError, match="does not hold the key"):
        check_answer(server.public, challenge, answer_challenge(impostor, challenge))
    old = answer_challenge(server, challenge_message(os.urandom(32)))
    with pytest.raises(PeerAuthError, match="another challenge"):
        check_answer(server.public, challenge, old)
    with pytest.raises(PeerAuthError):
        check_answer(server.public, challenge, b"<3'foo>")


# == sessions ==========================================================================


async def test_python_to_python_session() -> None:
    """Calls, pipelining, a callback, many at once and a 3 MB message."""
    async with Node(WebSocketNetlayer()) as server, Node(WebSocketNetlayer()) as client:
        sturdyref = server.publish(Echo())
        assert sturdyref.peer.transport == "websocket"
        assert sturdyref.peer.hints is not None
        assert sturdyref.peer.hints["url"].startswith("ws://127.0.0.1:")
        echo = await client.enliven(str(sturdyref))
        assert await E(echo).echo("hi") == "hi"
        assert await E(E(echo).echo(echo)).echo(7) == 7  # pipelined on an answer
        assert await E(echo).call_back(Answerer(), 1) == "answer 1"
        promises = [E(echo).echo(i) for i in range(200)]
        assert [await p for p in promises] == list(range(200))
        big = os.urandom(3_000_000)
        assert await E(echo).echo(big) == big


async def test_identity_keeps_the_designator(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    NodeIdentity.load_or_create(key_file)
    first = NodeIdentity.load(key_file)
    async with Node(WebSocketNetlayer(identity=first)) as node:
        designator = node.location.designator
    async with Node(WebSocketNetlayer(identity=NodeIdentity.load(key_file))) as node:
        assert node.location.designator == designator == designator_of(first.public)


async def test_public_url_and_path_are_advertised_and_dialed() -> None:
    """Behind a reverse proxy: the advertised URL (with a path) is what peers dial."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        real = probe.getsockname()[1]
    netlayer = WebSocketNetlayer(port=int(real), public_url=f"ws://127.0.0.1:{real}/ocapn/node")
    async with Node(netlayer) as server, Node(WebSocketNetlayer()) as client:
        assert server.location.hints == {"url": f"ws://127.0.0.1:{real}/ocapn/node"}
        echo = await client.enliven(server.publish(Echo()))
        assert await E(echo).echo(1) == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CapTP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_wss_with_a_self_signed_certificate(tmp_path: Path) -> None:
    """wss://: refused by default (unknown CA), accepted when the client trusts the cert."""
    cert_file, key_file = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    async with Node(WebSocketNetlayer(ssl_context=server_context)) as server:
        sturdyref = server.publish(Echo())
        assert sturdyref.peer.hints is not None
        assert sturdyref.peer.hints["url"].startswith("wss://127.0.0.1:")
        async with Node(WebSocketNetlayer()) as client:
            with pytest.raises(PeerUnreachable) as info:
                await client.enliven(sturdyref)
            assert isinstance(info.value.__cause__, ssl.SSLError)
        for context in [self_signed_client_context(str(cert_file)), self_signed_client_context()]:
            async with Node(WebSocketNetlayer(client_ssl_context=context)) as client:
                echo = await client.enliven(sturdyref)
                assert await E(echo).echo(b"tls") == b"tls"
        # the server carried on through the failed handshake
        assert len(server.sessions) == 0 or all(s.alive for s in server.sessions)


# == failures ==========================================================================


async def _upgrade(host: str, port: int) -> tuple[anyio.abc.SocketStream, WSConnection]:
    stream = await anyio.connect_tcp(host, port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send(ws.send(Request(host=f"{host}:{port}", target="/")))
    while True:
        ws.receive_data(await stream.receive())
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            return stream, ws


async def _read_until_closed(stream: anyio.abc.SocketStream, ws: WSConnection) -> list[Any]:
    events: list[Any] = []
    with anyio.fail_after(20):
        while True:
            try:
                data = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return events
            ws.receive_data(data)
            events.extend(ws.events())


@asynccontextmanager
async def _server(**options: Any) -> AsyncIterator[tuple[Node, Sturdyref, str, int]]:
    async with Node(WebSocketNetlayer(**options)) as node:
        sturdyref = node.publish(Echo())
        url = sturdyref.peer.hints["url"] if sturdyref.peer.hints else ""
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        yield node, sturdyref, host, int(port)


async def _still_serves(sturdyref: Sturdyref) -> None:
    async with Node(WebSocketNetlayer()) as client:
        echo = await client.enliven(sturdyref)
        assert await E(echo).echo("still here") == "still here"


async def test_wrong_designator_is_refused() -> None:
    async with _server() as (_, sturdyref, _host, _port), Node(WebSocketNetlayer()) as client:
        impostor = designator_of(NodeIdentity().public)
        wrong = Sturdyref(PeerLocation("websocket", impostor, sturdyref.peer.hints),
                          sturdyref.swiss_num)
        with pytest.raises(PeerUnreachable) as info:
            await client.enliven(wrong)
        assert type(info.value.__cause__) is PeerAuthError
        assert not client.sessions
        await _still_serves(sturdyref)


async def test_text_frame_ends_the_connection_not_the_node() -> None:
    async with _server() as (node, sturdyref, host, port):
        stream, ws = await _upgrade(host, port)
        await stream.send(ws.send(TextMessage(data="hello")))
        events = await _read_until_closed(stream, ws)
        closes = [e for e in events if type(e).__name__ == "CloseConnection"]
        assert closes and closes[0].code == 1003
        assert not node.sessions
        await _still_serves(sturdyref)


async def test_text_frame_after_the_session_started_aborts_it() -> None:
    """A text message inside a session: FrameError on the channel, the session ends."""
    async with _server() as (_node, sturdyref, host, port):
        stream, ws = await _upgrade(host, port)
        challenge = challenge_message(os.urandom(32))
        await stream.send(ws.send(BytesMessage(data=challenge)))
        messages: list[bytes] = []
        with anyio.fail_after(20):
            while not messages:  # the peer-auth answer
                ws.receive_data(await stream.receive())
                messages += [bytes(e.data) for e in ws.events() if isinstance(e, BytesMessage)]
        await stream.send(ws.send(TextMessage(data="not binary")))
        events = await _read_until_closed(stream, ws)
        codes = [e.code for e in events if type(e).__name__ == "CloseConnection"]
        assert codes == [1003]
        check_answer(key_of_designator(sturdyref.peer.designator), challenge, messages[0])
        await _still_serves(sturdyref)


async def test_oversized_message_ends_the_connection() -> None:
    async with _server(max_message=1000) as (node, sturdyref, host, port):
        stream, ws = await _upgrade(host, port)
        await stream.send(ws.send(BytesMessage(data=challenge_message(os.urandom(32)))))
        await stream.send(ws.send(BytesMessage(data=b"x" * 1001)))
        events = await _read_until_closed(stream, ws)
        codes = [e.code for e in events if type(e).__name__ == "CloseConnection"]
        assert codes == [1009]
        assert not node.sessions
        await _still_serves(sturdyref)


async def test_peer_that_upgrades_and_says_nothing_is_dropped() -> None:
    async with _server(handshake_timeout=0.5) as (_, sturdyref, host, port):
        stream, ws = await _upgrade(host, port)
        events = await _read_until_closed(stream, ws)  # the server hangs up on us
        assert not [e for e in events if isinstance(e, BytesMessage)]
        await _still_serves(sturdyref)


async def test_server_that_upgrades_and_says_nothing_times_out() -> None:
    identity = NodeIdentity()

    async with anyio.create_task_group() as tg:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def silent(stream: anyio.abc.SocketStream) -> None:
            ws = WSConnection(ConnectionType.SERVER)
            while True:
                try:
                    data = await stream.receive()
                except anyio.EndOfStream:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        await stream.send(ws.send(AcceptConnection()))

        tg.start_soon(listener.serve, silent)
        location = PeerLocation(
            "websocket", designator_of(identity.public), {"url": f"ws://127.0.0.1:{port}"}
        )
        async with Node(WebSocketNetlayer(handshake_timeout=0.5)) as client:
            with pytest.raises(PeerUnreachable) as info:
                await client.connect(location)
            assert type(info.value.__cause__) is NetlayerTimeout
        tg.cancel_scope.cancel()


async def test_non_websocket_request_is_refused() -> None:
    async with _server() as (_, sturdyref, host, port):
        stream = await anyio.connect_tcp(host, port)
        await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with anyio.fail_after(20):
            while True:
                try:
                    await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        await _still_serves(sturdyref)


def test_frame_error_is_a_named_connection_error() -> None:
    assert issubclass(FrameError, ConnectionError)
    assert issubclass(NetlayerTimeout, TimeoutError)


# == our frame codec against wsproto's ====================================================


async def _wsproto_client_and_our_server() -> tuple[Any, WSConnection, Any]:
    from netlayers.memory import memory_pipe
    from netlayers.websocket import WebSocketChannel

    theirs, ours = memory_pipe()
    channel = WebSocketChannel(ours, client=False, max_message=100_000)
    ws = WSConnection(ConnectionType.CLIENT)
    theirs.send_nowait(ws.send(Request(host="h", target="/any/path?x=1")))
    request = await channel.open_server()
    assert request.target == "/any/path?x=1"
    ws.receive_data(await theirs.receive())
    assert any(isinstance(e, AcceptConnection) for e in ws.events())
    return theirs, ws, channel


async def test_frames_interoperate_with_wsproto() -> None:
    from wsproto.events import CloseConnection, Ping, Pong

    theirs, ws, channel = await _wsproto_client_and_our_server()
    # wsproto's masked frames, whole and fragmented, reach us as whole messages
    for size in [0, 1, 125, 126, 65535, 65536, 99_000]:
        data = os.urandom(size)
        theirs.send_nowait(ws.send(BytesMessage(data=data)))
        assert await channel.receive() == data
    theirs.send_nowait(ws.send(BytesMessage(data=b"one ", message_finished=False))
                       + ws.send(BytesMessage(data=b"message")))
    assert await channel.receive() == b"one message"
    # our unmasked frames reach wsproto whole, and a ping is answered
    for size in [0, 5, 70_000]:
        data = os.urandom(size)
        channel.send_nowait(data)
        ws.receive_data(await theirs.receive())
        (event,) = ws.events()
        assert isinstance(event, BytesMessage) and event.data == data
    theirs.send_nowait(ws.send(Ping(payload=b"hi")) + ws.send(BytesMessage(data=b"after")))
    assert await channel.receive() == b"after"
    ws.receive_data(await theirs.receive())
    assert [type(e) for e in ws.events()] == [Pong]
    # a close from the client ends the channel, answered in kind
    theirs.send_nowait(ws.send(CloseConnection(code=1000)))
    with pytest.raises(anyio.EndOfStream):
        await channel.receive()
    ws.receive_data(await theirs.receive())
    closes = list(ws.events())
    assert [type(e) for e in closes] == [CloseConnection]
    assert [e.code for e in closes if isinstance(e, CloseConnection)] == [1000]


async def test_bad_frames_are_refused() -> None:
    from netlayers.websocket import encode_frame

    cases = [
        (encode_frame(2, b"unmasked", mask=False), "unmasked"),
        (bytes([0x82 | 0x40, 0x80]) + b"\0\0\0\0", "reserved bits"),
        (bytes([0x09, 0x80]) + b"\0\0\0\0", "fragmented or long control"),
        (encode_frame(0, b"x", mask=True), "out of sequence"),
        (encode_frame(1, b"text", mask=True), "text WebSocket message"),
        (encode_frame(2, b"x" * 100_001, mask=True), "over 100000 bytes"),
        (encode_frame(5, b"", mask=True), "unknown WebSocket opcode"),
    ]
    for frame, reason in cases:
        theirs, _ws, channel = await _wsproto_client_and_our_server()
        theirs.send_nowait(frame)
        with pytest.raises(FrameError, match=reason):
            await channel.receive()
