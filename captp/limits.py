"""What a node (or one connection) lets its peers make it hold: one configuration object.

::

    Node(tcp_testing_only(), limits=Limits(max_sessions=100, idle_timeout=600))

Every bound a peer could otherwise push without end is a field of
:class:`Limits`; the defaults are meant for a node on the open internet (the
table is in spec-notes/0039).  Exceeding a bound aborts the one session that
exceeded it (or refuses the one connection) with a reason naming the field;
nothing else is touched.  ``ocapn serve`` takes each as a flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from captp.errors import ProtocolError

__all__ = ["DEFAULT_LIMITS", "LimitExceeded", "Limits"]

KIB: Final = 1024
MIB: Final = 1024 * 1024


class LimitExceeded(ProtocolError):
    """A peer went past one of the node's :class:`Limits`; ``limit`` names the field."""

    def __init__(self, limit: str, value: float, detail: str = "") -> None:
        self.limit = limit
        self.value = value
        more = f": {detail}" if detail else ""
        shown = str(value) if type(value) is int else f"{value:g}"
        super().__init__(f"limit {limit}={shown} exceeded{more}")


@dataclass(frozen=True)
class Limits:
    """Bounds on what peers may make a node hold, and how long it waits for them.

    Sizes are bytes, times seconds; ``None`` turns a timeout off.
    """

    # -- decoding
    max_message_bytes: int = 8 * MIB
    """The largest message (a partial message is held up to this size)."""
    max_depth: int = 64
    """How deeply lists, dictionaries, records and sets may nest in a message."""
    # -- memory
    max_connection_buffer: int = 16 * MIB
    """Bytes queued for one peer that it has not read yet."""
    max_node_buffer: int = 256 * MIB
    """Bytes of partial messages held for all connections together."""
    # -- connections and sessions
    max_connections: int = 1000
    """Open connections (inbound); more are refused."""
    max_sessions: int = 1000
    """Established sessions; a further handshake is refused."""
    max_handshakes: int = 256
    """Inbound connections whose handshake is not done yet; more are refused."""
    handshake_timeout: float = 30.0
    """A connection without a completed handshake after this long is aborted."""
    idle_timeout: float | None = None
    """A session that carried no message either way for this long is aborted."""
    liveness_timeout: float | None = 30.0
    """While our calls wait, a peer that sent nothing for half this long is
    probed; silent for this long, its session ends and the calls break with
    ConnectionLost (found within 1.25 times this: the check runs every quarter)."""
    # -- per session
    max_exports: int = 100_000
    """Objects and promises one session exports (peers hold references to them)."""
    max_imports: int = 100_000
    """References one peer has given this session."""
    max_questions: int = 100_000
    """Our calls waiting for one peer's answers."""
    max_answers: int = 100_000
    """One peer's calls whose answers we keep."""
    max_gifts: int = 1000
    """Gifts one gifter session has deposited and no one has withdrawn yet."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_timeout"):
                if value is not None and (
                    type(value) not in (int, float) or not value > 0
                ):
                    raise ValueError(f"Limits.{field.name} must be positive seconds or None")
            elif type(value) is not int or value < 1:
                raise ValueError(f"Limits.{field.name} must be a positive int, not {value!r}")

    def replace(self, **changes: float | int | None) -> Limits:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_LIMITS: Final = Limits()
"""The limits a node uses unless told otherwise."""
