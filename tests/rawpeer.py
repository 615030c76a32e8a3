"""A hand-driven OCapN peer over TCP, for tests: write any record, read what comes back.

It keeps no tables and makes no decisions: a test says what to send, in
what order, and checks the records it gets.  Incoming records are plain
:class:`captp.Record` values (descriptors are not interpreted).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from captp import Record, Symbol
from ocapn import cbor, syrup
from ocapn.certificates import encode_value
from ocapn.crypto import KeyPair, PublicKey, encode_signature, my_location_bytes, session_id
from ocapn.locators import PeerLocation


def sym(name: str) -> Symbol:
    return Symbol(name)


def desc(kind: str, position: int) -> Record:
    return Record(Symbol(f"desc:{kind}"), (position,))


def deliver(to: Record, args: list[Any], answer: Any = False, resolver: Any = False) -> Record:
    return Record(sym("op:deliver"), (to, args, answer, resolver))


def deliver_only(to: Record, args: list[Any]) -> Record:
    return Record(sym("op:deliver-only"), (to, args))


class RawPeer:
    """One TCP connection, spoken by hand.  ``location`` is the peer we claim to be.

    ``encoding``: ``"syrup"`` (unframed) or ``"cbor"`` (``len:`` framed, as CBOR
    on a stream always is).
    """

    def __init__(
        self, stream: anyio.abc.SocketStream, location: PeerLocation, encoding: str = "syrup"
    ) -> None:
        self.stream = stream
        self.location = location
        self.encoding = encoding
        self._frames = syrup.FrameDecoder()
        self.key = KeyPair()
        self.their_key: PublicKey | None = None
        self.their_location: Any = None
        self._decoder = syrup.StreamDecoder()
        self._ready: deque[Any] = deque()
        self._next_export = 0
        self._next_answer = 0

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, where: PeerLocation, designator: str | None = None, encoding: str = "syrup"
    ) -> AsyncIterator[RawPeer]:
        hints = where.hints or {}
        stream = await anyio.connect_tcp(hints["host"], int(hints["port"]))
        me = PeerLocation(
            "tcp-testing-only", designator or secrets.token_hex(8),
            {"host": "127.0.0.1", "port": "9"},
        )
        async with stream:
            yield cls(stream, me, encoding)

    # -- writing -------------------------------------------------------------------------

    async def send(self, message: Record | bytes) -> None:
        if isinstance(message, bytes):
            data = message
        elif self.encoding == "cbor":
            data = syrup.frame(encode_value(message, "cbor"))
        else:
            data = encode_value(message)
        await self.stream.send(data)

    def hello_record(
        self, version: str = "1.0", key: KeyPair | None = None, signed: bytes | None = None
    ) -> Record:
        key = key or self.key
        location = self.location.to_record()
        data = my_location_bytes(location, self.encoding) if signed is None else signed
        return Record(
            sym("op:start-session"),
            (version, key.public.descriptor(), self.location.to_record(),
             encode_signature(key.sign(data))),
        )

    async def hello(self, **kwargs: Any) -> None:
        await self.send(self.hello_record(**kwargs))

    async def handshake(self) -> None:
        """Send our hello and read theirs."""
        await self.hello()
        theirs = await self.expect("op:start-session")
        self.their_key = PublicKey.from_descriptor(theirs.fields[1])
        self.their_location = theirs.fields[2]

    @property
    def session_id(self) -> bytes:
        assert self.their_key is not None
        return session_id(self.key.public.public_id, self.their_key.public_id)

    def export(self) -> Record:
        """A new ``desc:import-object`` of ours (positions from 0, as the suite does)."""
        position = self._next_export
        self._next_export += 1
        return desc("import-object", position)

    def answer(self) -> int:
        position = self._next_answer
        self._next_answer += 1
        return position

    async def fetch(self, swiss: bytes) -> int:
        """Fetch an object; the export position it came back at."""
        resolver = self.export()
        await self.send(deliver(desc("export", 0), [sym("fetch"), swiss], False, resolver))
        reply = await self.expect_to(resolver.fields[0])
        args = reply.fields[1]
        assert args[0] == sym("fulfill"), reply
        assert args[1].label == sym("desc:import-object"), reply
        return int(args[1].fields[0])

    # -- reading -------------------------------------------------------------------------

    async def receive(self) -> Any:
        """The next record; :class:`anyio.EndOfStream` when the peer has closed."""
        while not self._ready:
            data = await self.stream.receive()
            if self.encoding == "cbor":
                self._ready.extend(cbor.decode(frame) for frame in self._frames.feed(data))
            else:
                self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()

    async def expect(self, label: str) -> Record:
        """Skip records until one with this label."""
        while True:
            record = await self.receive()
            if record.label == sym(label):
                assert type(record) is Record
                return record

    async def expect_to(self, position: int) -> Record:
        """Skip records until a deliver (or deliver-only) to our export ``position``."""
        while True:
            record = await self.receive()
            if record.label in (sym("op:deliver"), sym("op:deliver-only")) and record.fields[
                0
            ] == desc("export", position):
                assert type(record) is Record
                return record

    async def expect_abort(self) -> str:
        """The reason of the op:abort that must come, then a clean end of stream."""
        record = await self.expect("op:abort")
        await self.expect_eof()
        return str(record.fields[0])

    async def expect_eof(self) -> None:
        """Read until the peer closes; a reset (not a FIN) fails the test."""
        while True:
            try:
                await self.receive()
            except anyio.EndOfStream:
                return
