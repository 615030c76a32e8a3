"""The asyncio socket channel: bytes in order, end of stream, graceful close, flow control."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from netlayers.asyncio_tcp import Listener, SocketChannel, connect, listen


@pytest.fixture(params=["asyncio", ("asyncio", {"use_uvloop": True})], ids=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param  # this channel exists only under asyncio (and uvloop)


async def pair() -> tuple[SocketChannel, SocketChannel, Listener]:
    listener = await listen("127.0.0.1", 0)
    client = await connect("127.0.0.1", listener.port)
    server = await listener.accept()
    return client, server, listener


async def read_all(channel: SocketChannel) -> bytes:
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


async def wait_until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(30):
        while not condition():
            await anyio.sleep(0.001)


@pytest.mark.anyio
async def test_reads_ask_for_more_while_bulk_data_fills_them_and_for_little_again_after() -> None:
    from netlayers.asyncio_tcp import INITIAL_READ, MAX_READ

    client, server, listener = await pair()
    got: list[bytes] = []
    server.push(got.append, lambda exc: None)
    assert server.read_size == INITIAL_READ  # an idle connection holds no buffer
    for i in range(1, 11):  # small messages: reads stay small
        client.send_nowait(b"<4'ping>")
        await wait_until(lambda: sum(map(len, got)) == 8 * i)  # noqa: B023 - awaited here
    assert server.read_size == INITIAL_READ
    # Bulk data, queued in the kernel before the server reads it: a read that
    # fills what it asked for is followed by one that asks for twice as much.
    server.pause_reading()
    got.clear()
    bulk = bytes(range(256)) * (4 * MAX_READ // 256)
    client.send_nowait(bulk)
    await anyio.sleep(0.1)
    server.resume_reading()
    await wait_until(lambda: sum(map(len, got)) == len(bulk))
    sizes = [len(chunk) for chunk in got]
    assert sizes[:3] == [INITIAL_READ, 2 * INITIAL_READ, 4 * INITIAL_READ]
    assert max(sizes) <= MAX_READ
    assert b"".join(got) == bulk
    # A small read after it: the next read asks for little again.
    client.send_nowait(b"<4'ping>")
    await wait_until(lambda: got[-1] == b"<4'ping>")
    assert server.read_size == INITIAL_READ
    await client.aclose()
    await server.aclose()
    listener.close()


@pytest.mark.anyio
async def test_a_consumer_that_is_behind_makes_reading_pause_and_tcp_push_back() -> None:
    from netlayers.asyncio_tcp import BUFFER_SIZE, MAX_READ

    client, server, listener = await pair()
    data = bytes(range(251)) * (64 * BUFFER_SIZE // 251)  # more than the kernels hold
    client.send_nowait(data)
    # Nobody calls receive: the server reads up to BUFFER_SIZE, then stops,
    # and what the kernels cannot hold stays queued on the client.
    await wait_until(lambda: server.buffered >= BUFFER_SIZE)
    await anyio.sleep(0.1)
    assert BUFFER_SIZE <= server.buffered < BUFFER_SIZE + MAX_READ
    assert client.unsent > 0
    received = bytearray()
    with anyio.fail_after(30):
        while len(received) < len(data):  # taking it resumes reading
            received += await server.receive()
    assert bytes(received) == data and client.unsent == 0
    await client.aclose()
    await server.aclose()
    listener.close()


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
    assert f"has not read the {1024 * 1024} bytes" in str(refused.value.__cause__)  # patched
    client.abort()
    await server.aclose()
    listener.close()


@pytest.mark.anyio
async def test_a_consumer_that_fails_on_a_read_ends_the_connection() -> None:
    client, server, listener = await pair()
    ended: list[BaseException] = []

    def on_data(data: bytes) -> None:
        raise ValueError("the consumer is broken")

    server.push(on_data, ended.append)
    client.send_nowait(b"hello")
    await wait_until(lambda: bool(ended))
    assert type(ended[0]) is anyio.BrokenResourceError and "consumer is broken" in str(ended[0])
    with pytest.raises(anyio.BrokenResourceError) as refused:
        server.send_nowait(b"more")
    assert type(refused.value.__cause__) is ValueError
    with anyio.fail_after(10):  # the client sees the end of the stream
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            while True:
                await client.receive()
    await client.aclose()
    await server.aclose()
    listener.close()


@pytest.mark.anyio
async def test_a_listener_accepts_for_one_caller_at_a_time_and_close_ends_the_wait() -> None:
    listener = await listen("127.0.0.1", 0)
    async with anyio.create_task_group() as tg:
        outcome: list[BaseException] = []

        async def accept() -> None:
            try:
                await listener.accept()
            except anyio.ClosedResourceError as exc:
                outcome.append(exc)

        tg.start_soon(accept)
        await anyio.sleep(0.01)
        with pytest.raises(anyio.BusyResourceError):
            await listener.accept()
        listener.close()
    assert len(outcome) == 1
    with pytest.raises(anyio.ClosedResourceError):
        await listener.accept()
