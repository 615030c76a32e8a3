"""Framing for Endo CapTP messages on byte streams: netstrings.

The Endo daemon writes each ``JSON.stringify``-ed message as a netstring,
``<decimal UTF-8 byte length>:<bytes>,`` (``packages/netstring``, used by
``makeNetstringCapTP``), on TCP and on Unix sockets alike.  Message
transports (WebSocket, in-memory pipes) carry one JSON message per frame and
need no framing.
"""

from __future__ import annotations

from typing import Final

from captp.errors import DecodeError

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "NetstringDecoder", "netstring"]

# @endo/netstring accepts up to 999,999,999 bytes.  A peer that announces a
# larger frame than we are willing to buffer is cut off early; 64 MiB is far
# above any message the daemon sends and keeps a hostile length cheap.
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024

_MAX_DIGITS: Final = 10
# Frames up to this size are decoded from a slice, larger ones from a view (no copy).
_SMALL_FRAME: Final = 4096


def netstring(payload: bytes) -> bytes:
    """``payload`` framed as a netstring."""
    return b"%d:%b," % (len(payload), payload)


class NetstringDecoder:
    """Splits a byte stream into netstring payloads, decoded as UTF-8 text."""

    __slots__ = ("_max", "_pending")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max = max_frame_size
        self._pending = b""

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[str]:
        """The payloads completed by ``data``; DecodeError on a malformed stream."""
        buf = self._pending + data if self._pending else bytes(data)
        frames: list[str] = []
        pos = 0
        size = len(buf)
        while pos < size:
            colon = buf.find(b":", pos, pos + _MAX_DIGITS + 1)
            if colon < 0:
                head = buf[pos:]
                if len(head) > _MAX_DIGITS or not head.isdigit():
                    raise DecodeError(f"netstring length expected, got {head[:16]!r}")
                break
            digits = buf[pos:colon]
            if not digits.isdigit():
                raise DecodeError(f"netstring length must be decimal digits, not {digits!r}")
            length = int(digits)
            if length > self._max:
                raise DecodeError(
                    f"netstring of {length} bytes exceeds the limit of {self._max}"
                )
            end = colon + 1 + length
            if end >= size:
                break
            if buf[end] != 0x2C:  # ','
                found = buf[end : end + 1]
                raise DecodeError(f"netstring not terminated by ',' (found {found!r})")
            try:
                if length <= _SMALL_FRAME:  # slicing copies, but costs less than a view
                    frames.append(buf[colon + 1 : end].decode("utf-8"))
                else:
                    with memoryview(buf) as view:
                        frames.append(str(view[colon + 1 : end], "utf-8"))
            except UnicodeDecodeError as exc:
                raise DecodeError(f"frame is not valid UTF-8: {exc}") from None
            pos = end + 1
        self._pending = buf[pos:] if pos < size else b""
        return frames
