"""The asyncio protocol channel: bytes in order, end of stream, graceful close."""

from __future__ import annotations

import anyio
import pytest

from netlayers.asyncio_tcp import Listener, ProtocolChannel, connect, listen


@pytest.fixture(params=["asyncio", ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param  # this channel exists only under asyncio (and uvloop)


async def pair() -> tuple[ProtocolChannel, ProtocolChannel, Listener]:
    listener = await listen("127.0.0.1", 0)
    client = await connect("127.0.0.1", listener.port)
    server = await listener.accept()
    return client, server, listener


async def read_all(channel: ProtocolChannel) -> bytes:
    data = b""
    try:
        while True:
            data += await channel.receive()
    except anyio.EndOfStream:
        return data


@pytest.mark.anyio
async def test_bytes_arrive_in_order_and_close_is_graceful() -> None:
    client, server, listener = await pair()
    chunks = [bytes([i % 256]) * (i * 37 % 5000 + 1) for i in range(300)]
    for chunk in chunks:
        client.send_nowait(chunk)
    async with anyio.create_task_group() as tg:
        received: list[bytes] = []

        async def reader() -> None:
            received.append(await read_all(server))
            await server.aclose()

        tg.start_soon(reader)
        await client.aclose()  # flushes, sends FIN, waits for the server's FIN
    assert received == [b"".join(chunks)]
    with pytest.raises(anyio.ClosedResourceError):
        client.send_nowait(b"late")
    listener.close()


@pytest.mark.anyio
async def test_peer_closing_ends_the_stream_and_aclose_is_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Closing ends on the peer's FIN, not on the grace period: make the grace
    # period long enough that waiting it out would trip the hang guard.
    monkeypatch.setattr("netlayers.asyncio_tcp.CLOSE_GRACE_SECONDS", 60.0)
    client, server, listener = await pair()
    server.send_nowait(b"last words")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.aclose)
            assert await read_all(client) == b"last words"
            await client.aclose()
        await client.aclose()
    with pytest.raises((anyio.ClosedResourceError, anyio.EndOfStream)):
        await client.receive()
    listener.close()


@pytest.mark.anyio
async def test_listen_picks_a_free_port() -> None:
    a, b = await listen("127.0.0.1", 0), await listen("127.0.0.1", 0)
    assert a.port > 0 and b.port > 0 and a.port != b.port
    a.close()
    b.close()


def fill(channel: ProtocolChannel, data: bytes) -> int:
    """Play the transport: one read of ``data`` (at most the room offered); its length."""
    room = channel.get_buffer(-1)
    n = min(len(room), len(data))
    room[:n] = data[:n]
    room.release()
    channel.buffer_updated(n)
    return n


@pytest.mark.anyio
async def test_the_receive_buffer_starts_small_grows_for_bulk_data_and_shrinks_back() -> None:
    from netlayers.asyncio_tcp import INITIAL_BUFFER, MAX_READ

    channel = ProtocolChannel()
    got: list[bytes] = []
    channel.push(got.append, lambda exc: None)
    assert channel.buffer_size == INITIAL_BUFFER  # an idle connection holds little
    # Small messages: the buffer stays as it is.
    for _ in range(10):
        assert fill(channel, b"<4'ping>") == 8
    assert channel.buffer_size == INITIAL_BUFFER
    # Bulk data: while reads fill the room they are offered, the room doubles.
    steps = (MAX_READ // INITIAL_BUFFER).bit_length() - 1  # doublings up to MAX_READ
    ramp = INITIAL_BUFFER * (2**steps - 1)  # then every read is offered MAX_READ
    bulk = bytes(range(256)) * ((ramp + 16 * MAX_READ) // 256)
    offered, sizes = [], []
    pos = 0
    while pos < len(bulk):
        offered.append(len(channel.get_buffer(-1)))
        pos += fill(channel, bulk[pos:])
        sizes.append(channel.buffer_size)
    assert offered[:steps] == [INITIAL_BUFFER * 2**k for k in range(steps)]
    assert offered[steps:] == [MAX_READ] * 16 and sizes[-1] == MAX_READ
    # A burst of messages that each hand over a few KiB keeps the buffer (no
    # shrinking and growing again for every read).
    for _ in range(10):
        fill(channel, b"<4'ping>" * 512)
        assert channel.buffer_size == MAX_READ
    # A small read after the bulk data: the big buffer is given back.
    fill(channel, b"<4'ping>")
    assert channel.buffer_size == INITIAL_BUFFER and len(channel.get_buffer(-1)) == INITIAL_BUFFER
    assert b"".join(got) == b"<4'ping>" * 10 + bulk + b"<4'ping>" * 5120 + b"<4'ping>"


@pytest.mark.anyio
async def test_a_consumer_that_is_behind_makes_the_buffer_grow_and_reading_pause() -> None:
    from netlayers.asyncio_tcp import BUFFER_SIZE

    class Transport:
        paused = False

        def pause_reading(self) -> None:
            self.paused = True

        def resume_reading(self) -> None:
            self.paused = False

    channel = ProtocolChannel()
    transport = Transport()
    channel._transport = transport  # type: ignore[assignment]
    data = bytes(range(256)) * 1024
    sent = 0
    while not transport.paused:
        sent += fill(channel, data[sent % len(data) :] or data)
    assert channel.buffered == sent >= BUFFER_SIZE and channel.buffer_size >= sent
    received = await channel.receive()  # everything at once, and reading resumes
    assert len(received) == sent and not transport.paused
    fill(channel, b"x")
    assert await channel.receive() == b"x"
    assert channel.buffer_size < BUFFER_SIZE  # and the buffer was given back


@pytest.mark.anyio
async def test_a_large_message_crosses_intact_in_push_mode() -> None:
    client, server, listener = await pair()
    received = bytearray()
    ended = anyio.Event()
    server.push(received.extend, lambda exc: ended.set())
    blob = bytes(range(251)) * 20_000  # about 5 MB, not a multiple of any read size
    client.send_nowait(blob)
    client.send_nowait(b"tail")
    with anyio.fail_after(60):
        await client.aclose()
        await ended.wait()
    assert bytes(received) == blob + b"tail"
    await server.aclose()
    listener.close()


@pytest.mark.anyio
async def test_writes_from_a_pushed_read_and_from_tasks_arrive_in_the_order_made() -> None:
    # A reply written while a pushed read is handled goes out at once; a write
    # from a task opens a batch that the next loop iteration flushes.  Mixed,
    # the peer must still see every byte in the order send_nowait was called.
    client, server, listener = await pair()
    sent: list[bytes] = []

    def send(data: bytes) -> None:
        sent.append(data)
        server.send_nowait(data)

    asked = bytearray()

    def on_data(data: bytes) -> None:
        asked.extend(data)
        send(b"<" + data + b">")

    server.push(on_data, lambda exc: None)
    questions = [b"%d," % i for i in range(200)]
    received = bytearray()
    for i, question in enumerate(questions):
        client.send_nowait(question)
        send(b"(%d)" % i)
        send(b"[%d]" % i)  # a second write in the same turn: batched
        if i % 7 == 0:
            await anyio.lowlevel.checkpoint()
    with anyio.fail_after(30):
        while len(asked) < len(b"".join(questions)) or len(received) < sum(map(len, sent)):
            received += await client.receive()
    assert bytes(received) == b"".join(sent)
    await client.aclose()
    await server.aclose()
    listener.close()


@pytest.mark.anyio
async def test_replies_from_a_pushed_read_to_a_peer_that_does_not_read_are_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("netlayers.asyncio_tcp.MAX_WRITE_BUFFER", 1024 * 1024)
    client, server, listener = await pair()
    client.pause_reading()  # it asks, and never reads the answers
    server.push(lambda data: server.send_nowait(bytes(256 * 1024)), lambda exc: None)
    with anyio.fail_after(60):
        # Each question is answered inside the read; once the answers the
        # client leaves unread pass the cap, the server drops the connection.
        with pytest.raises(anyio.BrokenResourceError):
            while True:
                client.send_nowait(b"?")
                await anyio.sleep(0)
    with pytest.raises(anyio.BrokenResourceError) as refused:
        server.send_nowait(b"more")
    assert "has not read" in str(refused.value.__cause__)
    client.abort()
    await server.aclose()
    listener.close()
