"""The conformance suite's exchanges, replayed byte by byte against our peer in another process.

The suite itself is not a dependency (spec-notes/0021 says how to run it);
these tests drive ``python -m interop.testsuite_peer`` with the hand-driven
:class:`rawpeer.RawPeer`, sending what the suite sends and checking what the
suite checks: exact GC deltas, crossed hellos with chosen keys, and the
handoff certificates in each role.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from procs import spawn
from rawpeer import RawPeer, deliver, deliver_only, desc, sym

from captp import Record
from interop.testsuite_peer import SWISS_NUMS
from ocapn.certificates import (
    HandoffGive,
    HandoffReceive,
    SignedEnvelope,
    encode_value,
)
from ocapn.crypto import KeyPair, PublicKey
from ocapn.locators import PeerLocation, Sturdyref

pytestmark = [pytest.mark.anyio, pytest.mark.interop]

DELIVERS = (sym("op:deliver"), sym("op:deliver-only"))


@pytest.fixture(scope="module", params=["spec", "suite-main"])
def peer(request: pytest.FixtureRequest) -> Iterator[tuple[PeerLocation, str]]:
    args = ["-m", "interop.testsuite_peer", "--port", "0", "--profile", request.param]
    with spawn(*args) as uri:
        yield PeerLocation.from_uri(uri), str(request.param)


@asynccontextmanager
async def session(where: PeerLocation, designator: str | None = None) -> AsyncIterator[RawPeer]:
    async with RawPeer.connect(where, designator) as raw:
        await raw.handshake()
        yield raw
        await raw.send(Record(sym("op:abort"), ("session closed",)))


class RawListener:
    """A tcp-testing-only location of our own that the peer can dial."""

    def __init__(self, listener: anyio.abc.SocketListener) -> None:
        self._listener = listener
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.location = PeerLocation(
            "tcp-testing-only", secrets.token_hex(8), {"host": "127.0.0.1", "port": str(port)}
        )

    async def accept(self) -> RawPeer:
        stream = await self._listener.accept()
        return RawPeer(stream, self.location)


@asynccontextmanager
async def listening() -> AsyncIterator[RawListener]:
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        socket_listener = listener.listeners[0]
        assert isinstance(socket_listener, anyio.abc.SocketListener)
        yield RawListener(socket_listener)


def check_profile(record: Record, profile: str) -> None:
    """What a no-reply send looks like in each profile."""
    if profile == "suite-main":
        assert record.label in (sym("op:deliver-only"), sym("op:deliver"))
        if record.label == sym("op:deliver"):
            assert record.fields[3] is not False  # that suite cannot read a false resolver


# -- op:start-session and op:abort --------------------------------------------------------


async def test_hello_version_and_signature(peer: tuple[PeerLocation, str]) -> None:
    where, _ = peer
    async with RawPeer.connect(where) as raw:
        await raw.hello()
        theirs = await raw.expect("op:start-session")
        assert theirs.fields[0] == "1.0"
        their_location = PeerLocation.from_record(theirs.fields[2])
        assert their_location == where
        key = PublicKey.from_descriptor(theirs.fields[1])
        signature = bytes(theirs.fields[3][1][1][1]) + bytes(theirs.fields[3][1][2][1])
        signed = encode_value(Record(sym("my-location"), (theirs.fields[2],)))
        assert key.verify(signature, signed)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"version": "invalid-version-number"}, "unsupported CapTP version"),
     ({"signed": b"i am invalid"}, "does not verify")],
)
async def test_bad_hello_is_aborted(
    peer: tuple[PeerLocation, str], kwargs: dict[str, Any], reason: str
) -> None:
    async with RawPeer.connect(peer[0]) as raw:
        await raw.hello(**kwargs)
        with anyio.fail_after(20):
            assert reason in await raw.expect_abort()


async def test_abort_before_setup_ends_with_a_fin(peer: tuple[PeerLocation, str]) -> None:
    async with RawPeer.connect(peer[0]) as raw:
        await raw.send(Record(sym("op:abort"), ("test-abort-before-setup",)))
        await raw.hello()
        with anyio.fail_after(20):
            await raw.expect_eof()


# -- delivering, pipelining, listening ----------------------------------------------------


async def test_deliver_only_greeting_then_gc_answer(peer: tuple[PeerLocation, str]) -> None:
    where, profile = peer
    async with session(where) as raw:
        greeter = await raw.fetch(SWISS_NUMS["greeter"])
        target = raw.export()
        await raw.send(deliver_only(desc("export", greeter), [target]))
        with anyio.fail_after(20):
            greeting = await raw.expect_to(target.fields[0])
            assert greeting.label == sym("op:deliver")
            assert greeting.fields[1] == ["Hello"]
            answer, resolver = greeting.fields[2], greeting.fields[3]
            assert type(answer) is int and resolver.label == sym("desc:import-object")
            await raw.send(deliver_only(desc("export", resolver.fields[0]),
                                        [sym("fulfill"), "Hello"]))
            label = sym("op:gc-answers" if profile == "spec" else "op:gc-answer")
            released: set[int] = set()
            while answer not in released:
                released.update((await raw.expect(label.name)).fields[0])


async def test_pipeline_and_break(peer: tuple[PeerLocation, str]) -> None:
    where, profile = peer
    async with session(where) as raw:
        for spec, expected in [
            ([sym("red"), sym("zoomracer")], "fulfill"),
            ([1, 2, 3, 4, 5], "break"),
        ]:
            fetched = raw.answer()
            await raw.send(deliver(desc("export", 0), [sym("fetch"),
                                   SWISS_NUMS["car-factory-builder"]], fetched, raw.export()))
            factory = raw.answer()
            await raw.send(deliver(desc("answer", fetched), [], factory, raw.export()))
            car = raw.answer()
            await raw.send(deliver(desc("answer", factory), [spec], car, raw.export()))
            resolver = raw.export()
            await raw.send(deliver(desc("answer", car), [], False, resolver))
            with anyio.fail_after(20):
                reply = await raw.expect_to(resolver.fields[0])
            check_profile(reply, profile)
            assert reply.fields[1][0] == sym(expected)
            assert len(reply.fields[1]) == 2
            if expected == "fulfill":
                assert reply.fields[1][1] == "Vroom! I am a red zoomracer car!"


async def test_echo_with_resolver(peer: tuple[PeerLocation, str]) -> None:
    async with session(peer[0]) as raw:
        echo = await raw.fetch(SWISS_NUMS["echo-gc"])
        resolver = raw.export()
        args = ["foo", 1, False, b"bar", ["baz"]]
        await raw.send(deliver(desc("export", echo), args, False, resolver))
        with anyio.fail_after(20):
            reply = await raw.expect_to(resolver.fields[0])
        assert reply.fields[1] == [sym("fulfill"), args]
        assert [type(a) for a in reply.fields[1][1]] == [str, int, bool, bytes, list]


@pytest.mark.parametrize("order", ["listen first", "resolve first"])
@pytest.mark.parametrize("outcome", ["fulfill", "break"])
async def test_listen(peer: tuple[PeerLocation, str], order: str, outcome: str) -> None:
    async with session(peer[0]) as raw:
        maker = await raw.fetch(SWISS_NUMS["promise-resolver"])
        resolver = raw.export()
        await raw.send(deliver(desc("export", maker), [], False, resolver))
        reply = await raw.expect_to(resolver.fields[0])
        promise, settle = reply.fields[1][1]
        assert promise.label == sym("desc:import-promise")
        assert settle.label == sym("desc:import-object")
        listener = raw.export()
        listen = Record(sym("op:listen"), (desc("export", promise.fields[0]), listener, False))
        resolve = deliver_only(desc("export", settle.fields[0]), [sym(outcome), sym("oh-no")])
        for message in [listen, resolve] if order == "listen first" else [resolve, listen]:
            await raw.send(message)
        with anyio.fail_after(20):
            heard = await raw.expect_to(listener.fields[0])
        assert heard.fields[1] == [sym(outcome), sym("oh-no")]  # forwarded as it was sent


@pytest.mark.parametrize("count", [1, 4, -4])
async def test_gc_exports_sum_to_what_was_sent(peer: tuple[PeerLocation, str], count: int) -> None:
    """count 4: four references in one message; -4: four messages of one reference each."""
    where, profile = peer
    async with session(where) as raw:
        echo = await raw.fetch(SWISS_NUMS["echo-gc"])
        mine = raw.export()
        if count > 0:
            await raw.send(deliver_only(desc("export", echo), [mine] * count))
        else:
            for _ in range(-count):
                await raw.send(deliver_only(desc("export", echo), [mine]))
        label = "op:gc-exports" if profile == "spec" else "op:gc-export"
        total = 0
        with anyio.fail_after(20):
            while total < abs(count):
                positions, deltas = (await raw.expect(label)).fields
                total += sum(d for p, d in zip(positions, deltas, strict=True)
                             if p == mine.fields[0])
        assert total == abs(count)


# -- crossed hellos -----------------------------------------------------------------------


@pytest.mark.parametrize("loser", ["their outbound", "their inbound"])
async def test_crossed_hellos(peer: tuple[PeerLocation, str], loser: str) -> None:
    where, _ = peer
    async with session(where) as raw, listening() as other:
        enlivener = await raw.fetch(SWISS_NUMS["sturdyref-enlivener"])
        sturdyref = Sturdyref(other.location, b"my-object")
        await raw.send(deliver_only(desc("export", enlivener), [sturdyref.to_record()]))
        with anyio.fail_after(20):
            inbound = await other.accept()  # the peer dials us ...
            async with inbound.stream:
                hello = await inbound.expect("op:start-session")
                their_id = PublicKey.from_descriptor(hello.fields[1]).public_id
                async with RawPeer.connect(where) as outbound:  # ... while we dial it
                    outbound.location = other.location
                    while True:  # a key that makes the chosen connection the loser
                        outbound.key = KeyPair()
                        ours_lower = outbound.key.public.public_id < their_id
                        if ours_lower == (loser == "their inbound"):
                            break
                    await outbound.hello()
                    aborted = outbound if loser == "their inbound" else inbound
                    assert "crossed hellos" in await aborted.expect_abort()


# -- third-party handoffs -----------------------------------------------------------------


async def test_exporter_checks_withdrawals(peer: tuple[PeerLocation, str]) -> None:
    where, _ = peer
    async with session(where) as g2e, session(where, secrets.token_hex(8)) as r2e:
        greeter = await g2e.fetch(SWISS_NUMS["greeter"])
        r2g = KeyPair()  # the receiver's key in its (pretend) session with the gifter

        def give(gift_id: bytes) -> SignedEnvelope:
            signed = HandoffGive(r2g.public, where, g2e.session_id, g2e.key.public.public_id,
                                 gift_id)
            return SignedEnvelope.sign(signed.to_record(), g2e.key)

        def receive(signed_give: SignedEnvelope, count: int, key: KeyPair = r2g) -> Record:
            signed = HandoffReceive(r2e.session_id, r2e.key.public.public_id, count, signed_give)
            return SignedEnvelope.sign(signed.to_record(), key).to_record()

        async def deposit(gift_id: bytes) -> None:
            await g2e.send(deliver_only(desc("export", 0),
                                        [sym("deposit-gift"), gift_id, desc("export", greeter)]))

        async def withdraw(envelope: Record) -> list[Any]:
            resolver = r2e.export()
            await r2e.send(deliver(desc("export", 0), [sym("withdraw-gift"), envelope],
                                   False, resolver))
            reply = await r2e.expect_to(resolver.fields[0])
            args: list[Any] = reply.fields[1]
            return args

        with anyio.fail_after(30):
            await deposit(b"my-gift")  # deposit, then withdraw
            result = await withdraw(receive(give(b"my-gift"), 0))
            assert result[0] == sym("fulfill") and result[1].label == sym("desc:import-object")
            await deposit(b"my-gift")  # the same gift id again, the same count again
            result = await withdraw(receive(give(b"my-gift"), 0))
            assert result[0] == sym("break") and "already used" in result[1].fields[0]
            result = await withdraw(receive(give(b"my-gift"), 1, key=KeyPair()))
            assert result[0] == sym("break") and "does not verify" in result[1].fields[0]
            withdrawal = withdraw(receive(give(b"later"), 2))  # withdraw first, deposit after
            async with anyio.create_task_group() as tg:
                found: list[Any] = []

                async def collect() -> None:
                    found.extend(await withdrawal)

                tg.start_soon(collect)
                await anyio.sleep(0.05)
                await deposit(b"later")
            assert found[0] == sym("fulfill") and found[1].label == sym("desc:import-object")


async def test_gifter_reuses_the_exporters_session_and_signs_a_give(
    peer: tuple[PeerLocation, str],
) -> None:
    where, _ = peer
    async with (
        listening() as other,
        session(where) as r2g,
        RawPeer.connect(where, other.location.designator) as e2g,
    ):
        e2g.location = other.location  # the exporter session comes from "other"
        await e2g.handshake()
        enlivener = await r2g.fetch(SWISS_NUMS["sturdyref-enlivener"])
        swiss = secrets.token_hex(16).encode()
        resolver = r2g.export()
        await r2g.send(deliver(desc("export", enlivener),
                               [Sturdyref(other.location, swiss).to_record()],
                               False, resolver))
        with anyio.fail_after(20):
            fetch = await e2g.expect_to(0)  # reused: no new connection to "other"
            assert fetch.fields[1] == [sym("fetch"), swiss]
            await e2g.send(deliver_only(desc("export", fetch.fields[3].fields[0]),
                                        [sym("fulfill"), e2g.export()]))
            deposit = await e2g.expect_to(0)
            reply = await r2g.expect_to(resolver.fields[0])
        assert deposit.fields[1][0] == sym("deposit-gift")
        assert deposit.fields[1][2] == desc("export", 0)
        assert reply.fields[1][0] == sym("fulfill")
        envelope = reply.fields[1][1]
        assert envelope.label == sym("desc:sig-envelope")
        give = HandoffGive.from_record(envelope.fields[0])
        assert give.receiver_key == r2g.key.public
        assert encode_value(give.exporter_location.to_record()) == encode_value(
            other.location.to_record()
        )  # byte-identical to the location in the exporter session's hello
        assert e2g.their_key is not None
        assert give.session == e2g.session_id
        assert give.gifter_side == e2g.their_key.public_id
        assert give.gift_id == deposit.fields[1][1]
        signature = bytes(envelope.fields[1][1][1][1]) + bytes(envelope.fields[1][1][2][1])
        assert e2g.their_key.verify(signature, encode_value(envelope.fields[0]))


async def test_receiver_withdraws_from_the_exporter(peer: tuple[PeerLocation, str]) -> None:
    where, _ = peer
    async with listening() as exporter, session(where) as g2r:
        greeter = await g2r.fetch(SWISS_NUMS["greeter"])
        assert g2r.their_key is not None
        give = HandoffGive(
            g2r.their_key, exporter.location,
            hashlib.sha256(b"Gifter <-> exporter session ID").digest(),
            hashlib.sha256(b"Gifter side ID").digest(), b"my-gift",
        )
        signed_give = SignedEnvelope.sign(give.to_record(), KeyPair())  # unrelated key
        await g2r.send(deliver_only(desc("export", greeter), [signed_give.to_record()]))
        with anyio.fail_after(20):
            e2r = await exporter.accept()
            async with e2r.stream:
                await e2r.handshake()
                withdraw = await e2r.expect_to(0)
        assert withdraw.fields[1][0] == sym("withdraw-gift")
        envelope = withdraw.fields[1][1]
        receive = envelope.fields[0]
        assert receive.label == sym("desc:handoff-receive")
        assert receive.fields[0] == e2r.session_id
        assert e2r.their_key is not None
        assert receive.fields[1] == e2r.their_key.public_id
        assert type(receive.fields[2]) is int
        assert encode_value(receive.fields[3]) == encode_value(signed_give.to_record())
        signature = bytes(envelope.fields[1][1][1][1]) + bytes(envelope.fields[1][1][2][1])
        assert g2r.their_key.verify(signature, encode_value(receive))  # the G-R key signs
