"""Hostile peers: each bad message aborts the offending session only, with a clear reason.

A node serves over tcp-testing-only; a well-behaved node holds a session with
it; a hand-driven raw peer misbehaves on a second session.  After every
abort the raw peer must see an orderly end of stream (FIN, not RST), and the
good session must still work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from rawpeer import RawPeer, deliver, desc, sym

from captp import E, Record, Symbol, far
from captp.limits import DEFAULT_LIMITS, Limits
from netlayers import tcp_testing_only
from ocapn import Node
from ocapn.certificates import HandoffGive, HandoffReceive, SignedEnvelope
from ocapn.crypto import KeyPair, encode_signature, my_location_bytes
from ocapn.syrup import frame

pytestmark = pytest.mark.anyio


@far
class Echo:
    def echo(self, *args: Any) -> list[Any]:
        return list(args)

    def slow(self) -> Any:
        return anyio.sleep(3600)


@asynccontextmanager
async def served(limits: Limits = DEFAULT_LIMITS) -> AsyncIterator[tuple[Node, Any]]:
    """A node serving Echo at b"echo", and a good client's live reference to it."""
    async with (
        Node(tcp_testing_only(), limits=limits) as server,
        Node(tcp_testing_only()) as client,
    ):
        server.publish(Echo(), b"echo")
        server.publish(Echo(), b"other")
        good = await client.enliven(f"{server.location.to_uri().replace('?', '/s/ZWNobw?')}")
        assert await E(good).echo(1) == [1]
        yield server, good


async def still_good(server: Node, good: Any, sessions: int = 1) -> None:
    assert await E(good).echo("still here") == ["still here"]
    assert len(server.sessions) == sessions


Build = Callable[[RawPeer], Record | bytes]

AFTER_HANDSHAKE: list[tuple[str, Build, str]] = [
    ("malformed record", lambda r: Record(sym("op:deliver"), (desc("export", 0), [], False)),
     "<op:deliver> takes 4 fields, got 3"),
    ("unknown label", lambda r: Record(sym("op:frobnicate"), (1,)),
     "unknown operation <op:frobnicate>"),
    ("unknown descriptor position", lambda r: deliver(desc("export", 99), [sym("x")]),
     "no export at position 99"),
    ("never-created answer", lambda r: deliver(desc("export", 0), [desc("answer", 5)]),
     "no answer at position 5"),
    ("imported object as a target", lambda r: deliver(desc("import-object", 3), []),
     "target must be <desc:export> or <desc:answer>"),
    ("args not a list", lambda r: Record(sym("op:deliver"), (desc("export", 0), 5, False, False)),
     "args must be a list"),
    ("resolver not a reference", lambda r: deliver(desc("export", 0), [], False, 7),
     "resolve-me-desc must be a reference"),
    ("zero gc delta", lambda r: Record(sym("op:gc-exports"), ([0], [0])),
     "wire delta must be a positive integer"),
    ("negative position", lambda r: deliver(desc("export", -1), []),
     "position must be a non-negative integer"),
    ("second start-session", lambda r: r.hello_record(),
     "a second op:start-session on an established session"),
    ("non-canonical syrup", lambda r: b"<10'op:deliver<11'desc:export00+>[]ff>",
     "leading zero (not canonical)"),
    ("not syrup at all", lambda r: b"<10'op:deliver\xff\xff>", "at byte"),
    ("frame over the size limit", lambda r: b"<999999999999:", "size limit"),
    ("malformed sig-envelope", lambda r: deliver(
        desc("export", 0), [Record(sym("desc:sig-envelope"), (Record(sym("x"), ()), [1]))]
    ), "not an Ed25519 sig-val"),
    ("malformed sturdyref", lambda r: deliver(
        desc("export", 0), [Record(sym("ocapn-sturdyref"), (1, 2))]
    ), "<ocapn-sturdyref> swiss number must be bytes"),
    ("sturdyref without a peer", lambda r: deliver(
        desc("export", 0), [Record(sym("ocapn-sturdyref"), (1, b"swiss"))]
    ), "expected an <ocapn-peer> record"),
]


# The same checks for a peer that speaks CBOR: the Syrup byte cases become CBOR ones.
_SYRUP_BYTES = {"non-canonical syrup", "not syrup at all", "frame over the size limit"}
AFTER_HANDSHAKE_CBOR: list[tuple[str, Build, str]] = [
    case for case in AFTER_HANDSHAKE if case[0] not in _SYRUP_BYTES
] + [
    ("non-canonical cbor", lambda r: frame(bytes.fromhex("d81b82") + b"\x68op:abort\x78\x01x"),
     "non-canonical head"),
    ("cbor integer not a bignum", lambda r: frame(bytes.fromhex("d81b82") + b"\x68op:abort\x05"),
     "bignum"),
    ("unknown cbor tag", lambda r: frame(bytes.fromhex("d81b82") + b"\x68op:abort\xc1\xf4"),
     "unknown tag 1"),
    ("indefinite cbor array", lambda r: frame(bytes.fromhex("d81b9f") + b"\x68op:abort\xff"),
     "indefinite"),
    ("cbor then syrup", lambda r: frame(b"<8'op:abort1\"x>"), "a syrup message in a cbor session"),
    ("frame over the size limit", lambda r: b"999999999999:", "is over the limit"),
]


@pytest.mark.parametrize(
    ("encoding", "case", "build", "reason"),
    [("syrup", *c) for c in AFTER_HANDSHAKE] + [("cbor", *c) for c in AFTER_HANDSHAKE_CBOR],
)
async def test_bad_message_after_the_handshake(
    encoding: str, case: str, build: Build, reason: str
) -> None:
    async with served() as (server, good):
        async with RawPeer.connect(server.location, encoding=encoding) as raw:
            await raw.handshake()
            assert len(server.sessions) == 2
            await raw.send(build(raw))
            with anyio.fail_after(10):
                got = await raw.expect_abort()
            assert reason in got, (case, got)
        await still_good(server, good)


async def test_reused_answer_position() -> None:
    async with served() as (server, good):
        async with RawPeer.connect(server.location) as raw:
            await raw.handshake()
            slow = raw.export()
            fetched = await raw.fetch(b"echo")
            await raw.send(deliver(desc("export", fetched), [sym("slow")], 0, slow))
            await raw.send(deliver(desc("export", fetched), [sym("slow")], 0, raw.export()))
            with anyio.fail_after(10):
                got = await raw.expect_abort()
            assert "answer position 0 is already in use" in got
        await still_good(server, good)


BEFORE_HANDSHAKE: list[tuple[str, Build, str]] = [
    ("forged location signature", lambda r: r.hello_record(signed=b"something else"),
     "the location signature does not verify"),
    ("signature by another key", lambda r: Record(
        sym("op:start-session"),
        ("1.0", r.key.public.descriptor(), r.location.to_record(),
         encode_signature(KeyPair().sign(b"x"))),
    ), "the location signature does not verify"),
    ("wrong version", lambda r: r.hello_record(version="0.9"),
     "unsupported CapTP version '0.9'"),
    ("message before the hello", lambda r: deliver(desc("export", 0), [sym("fetch"), b"echo"]),
     "expected op:start-session"),
    ("hello without a version", lambda r: Record(sym("op:start-session"), ()),
     "the first field must be the version string"),
    ("hello with a bad key", lambda r: Record(
        sym("op:start-session"), ("1.0", [sym("public-key")], r.location.to_record(), [])
    ), "not an Ed25519 public-key descriptor"),
    ("not OCapN", lambda r: b"GET / HTTP/1.1\r\n\r\n", "neither a record nor len:"),
    # (the node cannot tell what such a peer reads, so it aborts in plain Syrup)
    ("unframed cbor", lambda r: bytes.fromhex("d81b81") + b"\x68op:abort", "must be len: framed"),
]


# In CBOR: the hello's signature covers the CBOR bytes of <my-location ...>, so a
# hello signed over its Syrup bytes does not verify.
BEFORE_HANDSHAKE_CBOR: list[tuple[str, Build, str]] = [
    case for case in BEFORE_HANDSHAKE if case[0] not in ("not OCapN", "unframed cbor")
] + [
    ("hello signed over its syrup bytes", lambda r: r.hello_record(
        signed=my_location_bytes(r.location.to_record(), "syrup")
    ), "the location signature does not verify"),
]


@pytest.mark.parametrize(
    ("encoding", "case", "build", "reason"),
    [("syrup", *c) for c in BEFORE_HANDSHAKE] + [("cbor", *c) for c in BEFORE_HANDSHAKE_CBOR],
)
async def test_bad_handshake(encoding: str, case: str, build: Build, reason: str) -> None:
    async with served() as (server, good):
        async with RawPeer.connect(server.location, encoding=encoding) as raw:
            await raw.send(build(raw))
            with anyio.fail_after(10):
                got = await raw.expect_abort()
            assert reason in got, (case, got)
        await still_good(server, good)


async def test_abort_before_the_handshake_closes_cleanly() -> None:
    async with served() as (server, good):
        async with RawPeer.connect(server.location) as raw:
            await raw.send(Record(sym("op:abort"), ("changed my mind",)))
            await raw.hello()  # too late: the node is closing; this is read and dropped
            with anyio.fail_after(10):
                await raw.expect_eof()  # a FIN: a reset would raise here
        await still_good(server, good)


async def test_idle_connection_times_out_without_disturbing_others() -> None:
    async with served(Limits(handshake_timeout=0.2)) as (server, good):
        async with RawPeer.connect(server.location) as raw:
            with anyio.fail_after(10):
                got = await raw.expect_abort()
            assert "limit handshake_timeout=0.2 exceeded: no op:start-session" in got
        await still_good(server, good)


async def test_stalled_reader_does_not_stall_other_sessions() -> None:
    """A peer that sends a lot and never reads must not hold up the node's other sessions."""
    async with served() as (server, good), RawPeer.connect(server.location) as raw:
        await raw.handshake()
        fetched = await raw.fetch(b"echo")
        big = b"x" * 100_000
        for _ in range(200):  # 20 MB of echoes we never read
            await raw.send(deliver(desc("export", fetched), [sym("echo"), big], False,
                                   raw.export()))
        for _ in range(20):
            await still_good(server, good, sessions=2)


async def test_forged_withdrawal_breaks_the_promise_not_the_session() -> None:
    async with served() as (server, good):
        async with RawPeer.connect(server.location) as raw:
            await raw.handshake()
            echo = await raw.fetch(b"echo")
            await raw.send(deliver(desc("export", 0), [sym("deposit-gift"), b"g",
                                                       desc("export", echo)]))
            assert raw.their_key is not None
            receiver = KeyPair()
            give = HandoffGive(receiver.public, server.location, raw.session_id,
                               raw.key.public.public_id, b"g")
            signed_give = SignedEnvelope.sign(give.to_record(), raw.key)
            receive = HandoffReceive(raw.session_id, raw.key.public.public_id, 0, signed_give)
            forged = SignedEnvelope.sign(receive.to_record(), KeyPair())  # not the receiver key
            resolver = raw.export()
            await raw.send(deliver(desc("export", 0), [sym("withdraw-gift"), forged.to_record()],
                                   False, resolver))
            reply = await raw.expect_to(resolver.fields[0])
            assert reply.fields[1][0] == Symbol("break")
            assert "the receive's signature does not verify" in reply.fields[1][1].fields[0]
            # The session is still up: the same peer may withdraw with a good signature.
            good_receive = SignedEnvelope.sign(receive.to_record(), receiver)
            resolver = raw.export()
            await raw.send(deliver(desc("export", 0), [sym("withdraw-gift"),
                                                       good_receive.to_record()], False, resolver))
            reply = await raw.expect_to(resolver.fields[0])
            assert reply.fields[1][0] == Symbol("fulfill")
            assert reply.fields[1][1] == desc("import-object", echo)
        await still_good(server, good)
