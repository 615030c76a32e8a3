"""Which of :class:`captp.limits.Limits` an Endo CapTP connection enforces, and the checks.

An :class:`~captp.endo.EndoConnection` given ``limits`` enforces, with the
same :class:`~captp.limits.LimitExceeded` (and a ``CTP_DISCONNECT`` whose
reason names the field):

* ``max_message_bytes``: one netstring frame (or one message on a message
  transport); a frame announced larger is refused before it is buffered;
* ``max_depth``: the nesting of the value in a CapData body;
* ``max_connection_buffer``, ``idle_timeout`` and the per-session table caps
  (``max_exports``, ``max_imports``, ``max_questions``, ``max_answers``): as on
  an OCapN session (:class:`captp._connection.Connection`);
* ``max_node_buffer``, ``max_connections``, ``max_sessions``: for the
  connections of one :func:`netlayers.endo_tcp.serve_tcp` together.

Not applicable: ``max_handshakes`` and ``handshake_timeout`` (Endo CapTP has
no handshake), ``max_gifts`` (no third-party handoffs), ``liveness_timeout``
(the connection's ``question_timeout`` already breaks a silent peer's
questions, and a probe would make @endo/captp hold an answer for ever: it
never frees one).  See spec-notes/0039.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from captp.errors import DecodeError
from captp.limits import LimitExceeded, Limits

if TYPE_CHECKING:
    from captp.endo.wire import EndoWire
    from captp.messages import Message

__all__ = ["json_depth", "limit_wire"]

# A JSON string (skipped whole) or a bracket.
_TOKENS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (not counting brackets in strings)."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        c = text[match.start()]
        if c == "[" or c == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif c == "]" or c == "}":
            depth -= 1
    return deepest


def limit_wire(wire: EndoWire, limits: Limits) -> None:
    """Make ``wire`` refuse messages over ``limits.max_message_bytes`` and values over
    ``limits.max_depth`` with :class:`LimitExceeded` (its netstring decoder must already
    be limited to the same size)."""
    feed = wire.feed
    netstring = not wire.message_framing
    size = limits.max_message_bytes

    def limited_feed(data: bytes) -> Iterator[Message]:
        if not netstring and len(data) > size:
            raise LimitExceeded("max_message_bytes", size, f"a message of {len(data)} bytes")
        try:
            yield from feed(data)
        except DecodeError as exc:
            if netstring and "exceeds the limit" in str(exc):  # the netstring decoder's words
                raise LimitExceeded("max_message_bytes", size, str(exc)) from None
            raise

    decode = wire.marshal.decode
    depth = limits.max_depth

    def limited_decode(body: str, slots: list[str]) -> Any:
        # A body with at most `depth` brackets cannot nest deeper: one count, in C.
        if type(body) is str and len(body) > 2 * depth and (
            body.count("[") + body.count("{") > depth
        ):
            found = json_depth(body)
            if found > depth:
                raise LimitExceeded("max_depth", depth, f"a CapData body nested {found} deep")
        return decode(body, slots)

    wire.feed = limited_feed  # type: ignore[method-assign]
    wire.marshal.decode = limited_decode  # type: ignore[method-assign]
