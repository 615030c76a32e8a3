"""Whole messages cut from a byte channel: what the websocket and np channels share.

A framed channel reads bytes from the channel below it (TCP or TLS), cuts
them into whole OCapN messages, and hands those out either when asked
(:meth:`FramedChannel.receive`) or, when the byte channel can push, as they
arrive (``push``).  Subclasses say only how bytes become messages.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import anyio

from captp import Channel

__all__ = ["FramedChannel"]

OnData = Callable[[bytes], None]
OnEnd = Callable[[BaseException], None]


class FramedChannel:
    """Base of a message channel over a byte channel.

    Subclasses write :meth:`_feed`, which appends every whole message the new
    bytes complete to ``_messages``, or sets ``_ended`` to the error that ends
    the channel; that error is raised once the messages before it are read.
    """

    def __init__(self, raw: Channel) -> None:
        self._raw = raw
        self._messages: collections.deque[bytes] = collections.deque()
        self._ended: BaseException | None = None
        self._on_data: OnData | None = None
        self._on_end: OnEnd | None = None
        self.push: Callable[[OnData, OnEnd], None] | None
        self.push = self._push if getattr(raw, "push", None) is not None else None

    def _feed(self, data: bytes) -> None:
        """Take bytes from the peer: queue the messages they complete."""
        raise NotImplementedError

    def _end(self, exc: BaseException) -> None:
        """The byte channel ended with ``exc`` (:class:`anyio.EndOfStream` when it closed)."""
        if self._ended is None:
            self._ended = exc

    async def _pump(self) -> None:
        """Read from the byte channel once and act on what it brings."""
        if self._ended is not None:
            raise self._ended
        try:
            data = await self._raw.receive()
        except anyio.EndOfStream as exc:
            self._end(exc)
            return
        self._feed(data)

    async def receive(self) -> bytes:
        """The next whole message."""
        messages = self._messages
        while not messages:
            if self._ended is not None:
                raise self._ended
            await self._pump()
        return messages.popleft()

    def _push(self, on_data: OnData, on_end: OnEnd) -> None:
        """From now on hand each message to ``on_data`` (from the transport's callback)."""
        self._on_data = on_data
        self._on_end = on_end
        self._deliver()
        if self._ended is None:
            raw_push: Any = getattr(self._raw, "push")  # noqa: B009
            raw_push(self._pushed, self._end_pushed)

    def _pushed(self, data: bytes) -> None:
        self._feed(data)
        self._deliver()

    def _end_pushed(self, exc: BaseException) -> None:
        self._end(exc)
        self._deliver()

    def _deliver(self) -> None:
        on_data = self._on_data
        messages = self._messages
        while messages and on_data is not None:
            on_data(messages.popleft())
        if self._ended is not None and self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self._ended)
