"""The np netlayer (Noise IK over TCP): Endo's bytes, sessions, and every way a peer can fail."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from captp import E, far
from netlayers.memory import memory_pipe
from netlayers.np import (
    MAX_PLAINTEXT,
    SYRUP,
    SYRUP_CHUNKED,
    Initiator,
    NoiseTransport,
    NpChannel,
    NpNetlayer,
    Responder,
    _Frames,
    address_of,
    designator_of,
    encodings_field,
    key_of_designator,
    netstring,
    parse_encodings_field,
)
from ocapn.errors import (
    FrameError,
    LocatorError,
    NetlayerTimeout,
    NoiseError,
    PeerAuthError,
    PeerUnreachable,
)
from ocapn.identity import NodeIdentity, SessionBinding, ed25519_public_to_x25519
from ocapn.locators import PeerLocation, Sturdyref
from ocapn.node import Node

pytestmark = pytest.mark.anyio

VECTORS = json.loads((Path(__file__).parent / "data" / "np_endo_vectors.json").read_text())


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


# == bytes recorded from a live run against Endo's wasm (spec-notes/0036) ==================


def test_python_initiator_matches_endo_responder_bytes() -> None:
    v = VECTORS["python_initiator"]
    responder = NodeIdentity.from_seed(bytes.fromhex(v["responder_seed"]))
    initiator = Initiator(
        NodeIdentity.from_seed(bytes.fromhex(v["initiator_seed"])), responder.public.raw,
        v["offered"], ephemeral=bytes.fromhex(v["initiator_ephemeral"]),
    )
    syn = initiator.syn()
    assert len(syn) == 164 and syn.hex() == v["syn"]
    assert initiator.read_synack(bytes.fromhex(v["synack"])) == v["encoding"] == SYRUP
    assert initiator.noise.get_handshake_hash().hex() == v["handshake_hash"]
    transport = NoiseTransport(initiator.noise)
    assert transport.encrypt(v["message"].encode()).hex() == v["message_ct"]
    assert transport.decrypt(bytes.fromhex(v["reply_ct"])).decode() == v["reply"]


def test_python_responder_matches_endo_initiator_bytes() -> None:
    v = VECTORS["python_responder"]
    identity = NodeIdentity.from_seed(bytes.fromhex(v["responder_seed"]))
    ephemeral = bytes.fromhex(v["responder_ephemeral"])
    responder = Responder(identity, v["accepted"], ephemeral=ephemeral)
    synack = responder.read_syn(bytes.fromhex(v["syn"]))
    assert len(synack) == 49 and synack.hex() == v["synack"]
    assert responder.encoding == v["encoding"] == SYRUP  # Endo offers [0] only
    initiator_key = NodeIdentity.from_seed(bytes.fromhex(v["initiator_seed"])).public
    assert responder.initiator_key == initiator_key
    assert responder.noise.get_handshake_hash().hex() == v["handshake_hash"]
    transport = NoiseTransport(responder.noise)
    assert transport.decrypt(bytes.fromhex(v["message_ct"])).decode() == v["message"]
    assert transport.encrypt(v["reply"].encode()).hex() == v["reply_ct"]


def test_encodings_field_vectors() -> None:
    """The vectors of Endo's test/encodings.test.js."""
    assert encodings_field([0]) == bytes.fromhex("00000000")
    assert encodings_field([1]) == bytes.fromhex("00010000")
    assert encodings_field([1, 2]) == bytes.fromhex("00010001")
    assert parse_encodings_field(encodings_field([SYRUP, SYRUP_CHUNKED])) == [0, 15]
    with pytest.raises(ValueError):
        encodings_field([0, 17])


def test_key_conversion_matches_x25519() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    identity = NodeIdentity.from_seed(bytes(range(32)))
    derived = X25519PrivateKey.from_private_bytes(identity.x25519_private()).public_key()
    assert derived.public_bytes_raw() == ed25519_public_to_x25519(identity.public.raw)


def test_designators_and_hints() -> None:
    identity = NodeIdentity()
    designator = designator_of(identity.public)
    assert len(designator) == 64 and key_of_designator(designator) == identity.public.raw
    for bad in ["", designator[:-2], designator.upper(), "zz" * 32]:
        with pytest.raises(LocatorError):
            key_of_designator(bad)
    assert address_of(PeerLocation("np", designator, {"tcp:host": "h", "tcp:port": "7"})) == (
        "h", 7)
    with pytest.raises(LocatorError, match="tcp:host"):
        address_of(PeerLocation("np", designator, {"ws:url": "ws://h:1"}))


# == channel-level failures: nothing that fails to decrypt is delivered =====================


def _pair(chunked: bool = False) -> tuple[NpChannel, NpChannel, Any, Any]:
    a_id, b_id = NodeIdentity(), NodeIdentity()
    initiator = Initiator(a_id, b_id.public.raw, [SYRUP, SYRUP_CHUNKED] if chunked else [SYRUP])
    responder = Responder(b_id)
    initiator.read_synack(responder.read_syn(initiator.syn()))
    raw_a, raw_b = memory_pipe()
    binding = SessionBinding(a_id.key_pair, b_id.public, ("np", "x"), b"", b"")
    a = NpChannel(raw_a, _Frames(), initiator.noise, chunked=chunked, binding=binding)
    b = NpChannel(raw_b, _Frames(), responder.noise, chunked=chunked, binding=binding)
    return a, b, raw_a, initiator.noise


async def test_tampered_ciphertext_is_refused() -> None:
    _, b, raw_a, noise = _pair()
    frame = bytearray(noise.encrypt(b"<op:deliver-only ...>"))
    frame[5] ^= 1
    raw_a.send_nowait(netstring(bytes(frame)))
    with pytest.raises(NoiseError):
        await b.receive()
    with pytest.raises(NoiseError):  # and stays refused
        await b.receive()


async def test_replayed_and_reordered_ciphertexts_are_refused() -> None:
    _, b, raw_a, noise = _pair()
    first = netstring(bytes(noise.encrypt(b"one")))
    raw_a.send_nowait(first)
    assert await b.receive() == b"one"
    raw_a.send_nowait(first)  # replay
    with pytest.raises(NoiseError):
        await b.receive()
    _, b, raw_a, noise = _pair()
    _one, two = netstring(bytes(noise.encrypt(b"1"))), netstring(bytes(noise.encrypt(b"2")))
    raw_a.send_nowait(two)
    with pytest.raises(NoiseError):
        await b.receive()


async def test_truncated_frame_is_refused() -> None:
    _, b, raw_a, noise = _pair()
    frame = netstring(bytes(noise.encrypt(b"whole message")))
    raw_a.send_nowait(frame[:-5])
    await raw_a.aclose()
    with pytest.raises(NoiseError, match="inside a message"):
        await b.receive()
    _, b, raw_a, noise = _pair()
    ct = bytes(noise.encrypt(b"whole message"))
    raw_a.send_nowait(netstring(ct[:-3]))  # a well-framed but cut ciphertext
    with pytest.raises(NoiseError):
        await b.receive()


async def test_bad_frames_are_refused() -> None:
    for bad in [b"70000:" + b"x" * 10, b"123456", b"5:abcdeX", b"x:abc,"]:
        _, b, raw_a, _noise = _pair()
        raw_a.send_nowait(bad)
        with pytest.raises(FrameError):
            await b.receive()


async def test_chunked_messages_reassemble() -> None:
    a, b, _, _ = _pair(chunked=True)
    for size in [0, 1, MAX_PLAINTEXT - 1, MAX_PLAINTEXT, 3 * MAX_PLAINTEXT + 7]:
        data = os.urandom(size)
        a.send_nowait(data)
        assert await b.receive() == data


async def test_unchunked_channel_refuses_a_large_message() -> None:
    a, _, _, _ = _pair(chunked=False)
    a.send_nowait(b"x" * MAX_PLAINTEXT)
    with pytest.raises(FrameError, match="did not agree to chunking"):
        a.send_nowait(b"x" * (MAX_PLAINTEXT + 1))


def test_handshake_failures_are_named() -> None:
    alice, bob, mallory = NodeIdentity(), NodeIdentity(), NodeIdentity()
    # a SYN for someone else
    with pytest.raises(PeerAuthError, match="different responder"):
        Responder(bob).read_syn(Initiator(alice, mallory.public.raw).syn())
    # an initiator claiming a key that is not its Noise static key
    liar = Initiator(alice, bob.public.raw)
    liar.identity = mallory
    with pytest.raises(PeerAuthError, match="does not match its Noise static key"):
        Responder(bob).read_syn(liar.syn())
    # a SYN for bob, re-addressed to mallory: only bob's key opens it
    syn = Initiator(alice, bob.public.raw).syn()
    with pytest.raises(NoiseError, match="does not decrypt"):
        Responder(mallory).read_syn(mallory.public.raw + syn[32:])
    # a tampered SYNACK
    initiator = Initiator(alice, bob.public.raw)
    synack = bytearray(Responder(bob).read_syn(initiator.syn()))
    synack[40] ^= 1
    with pytest.raises(PeerAuthError):
        initiator.read_synack(bytes(synack))
    # no common encoding
    with pytest.raises(NoiseError, match="no common encoding"):
        Responder(bob, [3]).read_syn(Initiator(alice, bob.public.raw, [SYRUP]).syn())


# == sessions over real sockets ==========================================================


async def test_python_to_python_session() -> None:
    """Calls, pipelining, a callback, 200 at once and a 3 MB message (chunked)."""
    async with Node(NpNetlayer()) as server, Node(NpNetlayer()) as client:
        sturdyref = server.publish(Echo())
        assert sturdyref.peer.transport == "np"
        echo = await client.enliven(str(sturdyref))
        assert await E(echo).echo("hi") == "hi"
        assert await E(E(echo).echo(echo)).echo(7) == 7
        assert await E(echo).call_back(Answerer(), 1) == "answer 1"
        promises = [E(echo).echo(i) for i in range(200)]
        assert [await p for p in promises] == list(range(200))
        big = os.urandom(3_000_000)
        assert await E(echo).echo(big) == big
        (session,) = client.sessions
        assert session.key_pair.public.raw.hex() == client.location.designator
        assert session.peer_key is not None
        assert session.peer_key.raw.hex() == server.location.designator


async def test_large_message_without_chunking_aborts_with_a_reason() -> None:
    """A peer that offers Syrup only (as Endo does): over 65,519 bytes ends the session, loudly."""
    async with Node(NpNetlayer(encodings=[SYRUP])) as server, Node(NpNetlayer()) as client:
        sturdyref = server.publish(Echo())
        echo = await client.enliven(sturdyref)
        assert await E(echo).echo(b"x" * 60_000) == b"x" * 60_000
        with pytest.raises(Exception, match="did not agree to chunking"):
            await E(echo).echo(b"x" * 70_000)
        echo = await client.enliven(sturdyref)  # a new session works
        assert await E(echo).echo(1) == 1


async def test_wrong_designator_is_refused_and_the_node_carries_on() -> None:
    async with Node(NpNetlayer()) as server, Node(NpNetlayer()) as client:
        sturdyref = server.publish(Echo())
        wrong = Sturdyref(
            PeerLocation("np", designator_of(NodeIdentity().public), sturdyref.peer.hints),
            sturdyref.swiss_num,
        )
        with pytest.raises(PeerUnreachable) as info:
            await client.enliven(wrong)
        assert type(info.value.__cause__) is PeerAuthError
        assert await E(await client.enliven(sturdyref)).echo(2) == 2


async def test_tampered_session_message_never_reaches_the_engine() -> None:
    """After a real handshake, a tampered op:start-session: the server ends it, unheard."""
    identity = NodeIdentity()
    async with Node(NpNetlayer()) as server:
        sturdyref = server.publish(Echo())
        host, port = address_of(sturdyref.peer)
        responder_key = key_of_designator(sturdyref.peer.designator)
        stream = await anyio.connect_tcp(host, port)
        initiator = Initiator(identity, responder_key)
        await stream.send(netstring(initiator.syn()))
        frames = _Frames()
        while (synack := frames.next()) is None:
            frames.buffer += await stream.receive()
        initiator.read_synack(synack)
        bad = bytearray(initiator.noise.encrypt(b"<16'op:start-session ...>"))
        bad[-1] ^= 0x80
        await stream.send(netstring(bytes(bad)))
        with anyio.fail_after(20):
            while True:  # the server's hello, then the end of the connection
                try:
                    frames.buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        assert not server.sessions
        async with Node(NpNetlayer()) as client:
            assert await E(await client.enliven(sturdyref)).echo(3) == 3


async def test_silent_peer_times_out() -> None:
    async with Node(NpNetlayer(handshake_timeout=0.5)) as server:
        host, port = address_of(server.location)
        stream = await anyio.connect_tcp(host, port)
        with anyio.fail_after(20):  # the server hangs up on a peer that sends no SYN
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
    async with anyio.create_task_group() as tg:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def silent(stream: anyio.abc.SocketStream) -> None:
            await anyio.sleep_forever()

        tg.start_soon(listener.serve, silent)
        peer = PeerLocation("np", designator_of(NodeIdentity().public),
                            {"tcp:host": "127.0.0.1", "tcp:port": str(port)})
        async with Node(NpNetlayer(handshake_timeout=0.5)) as client:
            with pytest.raises(PeerUnreachable) as info:
                await client.connect(peer)
            assert type(info.value.__cause__) is NetlayerTimeout
        tg.cancel_scope.cancel()


async def test_crossed_hellos_leave_one_session() -> None:
    async with Node(NpNetlayer()) as a, Node(NpNetlayer()) as b:
        results: dict[str, Any] = {}

        async def dial(name: str, node: Node, other: Node) -> None:
            results[name] = await node.connect(other.location)

        async with anyio.create_task_group() as tg:
            tg.start_soon(dial, "a", a, b)
            tg.start_soon(dial, "b", b, a)
        assert len(a.sessions) == 1 and len(b.sessions) == 1
        assert results["a"].session_id == results["b"].session_id
        echo = await a.enliven(b.publish(Echo()))
        assert await E(echo).echo("crossed") == "crossed"
