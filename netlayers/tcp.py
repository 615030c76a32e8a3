"""TCP channels, dialled or accepted: the one place that picks the fast path or the generic one.

Under asyncio a connection is a :class:`~netlayers.asyncio_tcp.SocketChannel`
(a socket the event loop watches, written straight from ``send_nowait``);
under trio, or with ``fast_path=False``, it is an anyio socket stream in a
:class:`~netlayers.stream.StreamChannel`.  Both behave the same: sends never
block, each accepted connection is served in its own task (no connection can
hold up another), and closing is graceful (FIN, not RST).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from captp import Channel
from captp._vat import running_loop
from netlayers import asyncio_tcp
from netlayers.stream import StreamChannel

__all__ = ["BACKLOG", "connect_channel", "serve_channels", "use_fast_path"]

log = logging.getLogger("netlayers")

# Pending connections the kernel queues before we accept them.  The suite and
# our benchmarks open bursts of connections; 512 is what asyncio's servers
# default to on Linux's somaxconn of old (and below today's 4096).
BACKLOG: Final = 512

ChannelHandler = Callable[[Channel], Awaitable[None]]


def use_fast_path(fast_path: bool = True) -> bool:
    """True when the asyncio socket channel can be used here (asyncio or uvloop)."""
    return fast_path and running_loop() is not None


@asynccontextmanager
async def connect_channel(
    host: str, port: int, *, fast_path: bool = True
) -> AsyncIterator[Channel]:
    """A channel to ``host:port`` for the body of the ``async with``; closed gracefully after."""
    if use_fast_path(fast_path):
        channel = await asyncio_tcp.connect(host, port)
        try:
            yield channel
        finally:
            with anyio.CancelScope(shield=True):
                await channel.aclose()
    else:
        stream = await anyio.connect_tcp(host, port)
        async with StreamChannel(stream) as stream_channel:
            yield stream_channel


async def serve_channels(
    host: str,
    port: int,
    handler: ChannelHandler,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    fast_path: bool = True,
    backlog: int = BACKLOG,
) -> None:
    """Listen on ``host:port``, report the bound port, run ``handler(channel)`` per connection.

    Each handler runs in a task of its own; its channel is closed gracefully
    when it returns, and an exception from it is logged, never fatal to the
    listener.  Runs until cancelled.
    """
    async with anyio.create_task_group() as tg:

        async def run(channel: Channel) -> None:
            try:
                await handler(channel)
            except Exception:
                log.exception("error while serving a TCP connection")
            finally:
                with anyio.CancelScope(shield=True):
                    await channel.aclose()

        if use_fast_path(fast_path):
            accepting = await asyncio_tcp.listen(host, port, backlog)
            try:
                task_status.started(accepting.port)
                while True:
                    tg.start_soon(run, await accepting.accept())
            finally:
                accepting.close()
        else:
            listener = await anyio.create_tcp_listener(
                local_host=host, local_port=port, backlog=backlog
            )
            async with listener:

                async def wrap(stream: anyio.abc.SocketStream) -> None:
                    async with StreamChannel(stream) as channel:
                        await run(channel)

                task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
                await listener.serve(wrap, task_group=tg)
