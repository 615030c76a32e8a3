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
