"""The engine's messages: small records, the same for every wire dialect.

They are immutable by convention, not frozen: a frozen dataclass costs four
times as much to build (each field goes through ``object.__setattr__``), and
a round trip builds four messages and two or three descriptors
(``spec-notes/0041-message-path-speed.md``).  Nobody changes a message once
it is made.  The messages built once per call or more (``Deliver``,
``Listen``, ``Get``, ``Return``, ``Resolve``, ``Desc``) write their own
``__init__``: compiled (``python -m ocapn.compile``), the one the dataclass
decorator generates would stay interpreted Python, and it cost a tenth of a
compiled round trip (``spec-notes/0040``).

Values inside messages are live Python values: far objects, imported
references and promises appear as themselves.  A wire dialect turns them into
its descriptors while encoding (``Engine.describe``) and back while decoding
(``Engine.import_*``), in the same single pass that handles the data.

Positions (export, import and answer positions) are opaque hashable keys
chosen by the dialect's :class:`~captp.engine.Positions`: integers for OCapN,
slot strings such as ``"o+3"`` for Endo.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Abort",
    "BootstrapQuestion",
    "Deliver",
    "Desc",
    "DescKind",
    "GcAnswers",
    "GcExports",
    "Get",
    "Listen",
    "Message",
    "Position",
    "Resolve",
    "Return",
]

Position = Hashable


@dataclass(slots=True)
class Deliver:
    """Send ``method(*args)`` (``method`` ``None``: apply ``target`` as a function).

    ``answer``: a position at which the receiver keeps the result as an answer
    promise (for pipelining), or ``None``.  ``resolver``: a resolver the
    receiver notifies with ``fulfill``/``break`` when the result settles, or
    ``None``.  Both ``None``: nobody hears about the result.
    """

    target: Any
    method: str | None
    args: tuple[Any, ...]
    answer: Position | None = None
    resolver: Any = None

    def __init__(
        self,
        target: Any,
        method: str | None,
        args: tuple[Any, ...],
        answer: Position | None = None,
        resolver: Any = None,
    ) -> None:
        self.target = target
        self.method = method
        self.args = args
        self.answer = answer
        self.resolver = resolver


@dataclass(slots=True)
class Listen:
    """Notify ``resolver`` when the promise ``target`` settles."""

    target: Any
    resolver: Any
    wants_partial: bool = False

    def __init__(self, target: Any, resolver: Any, wants_partial: bool = False) -> None:
        self.target = target
        self.resolver = resolver
        self.wants_partial = wants_partial


@dataclass(slots=True)
class Get:
    """Keep at ``answer`` the ``kind`` part of ``target``'s eventual value.

    ``kind`` is ``"get"`` (a struct field named ``key``), ``"index"`` (list
    element ``key``) or ``"untag"`` (the payload of a tagged value whose tag is
    ``key``).
    """

    target: Any
    kind: Literal["get", "index", "untag"]
    key: Any
    answer: Position

    def __init__(
        self, target: Any, kind: Literal["get", "index", "untag"], key: Any, answer: Position
    ) -> None:
        self.target = target
        self.kind = kind
        self.key = key
        self.answer = answer


@dataclass(slots=True)
class GcExports:
    """The sender dropped its imports: subtract ``deltas[i]`` from export ``positions[i]``."""

    positions: tuple[Position, ...]
    deltas: tuple[int, ...]


@dataclass(slots=True)
class GcAnswers:
    """The sender no longer needs these answer positions."""

    positions: tuple[Position, ...]


@dataclass(slots=True)
class Abort:
    """The sender ends the session."""

    reason: str


@dataclass(slots=True)
class BootstrapQuestion:
    """Endo only: keep the receiver's bootstrap object at ``answer`` and return it."""

    answer: Position


@dataclass(slots=True)
class Return:
    """Endo only: the question at ``answer`` settled (``ok``: fulfilled) with ``value``."""

    answer: Position
    ok: bool
    value: Any

    def __init__(self, answer: Position, ok: bool, value: Any) -> None:
        self.answer = answer
        self.ok = ok
        self.value = value


@dataclass(slots=True)
class Resolve:
    """Endo only: the receiver's import ``position`` (a promise) settled with ``value``."""

    position: Position
    ok: bool
    value: Any

    def __init__(self, position: Position, ok: bool, value: Any) -> None:
        self.position = position
        self.ok = ok
        self.value = value


Message = (
    Deliver | Listen | Get | GcExports | GcAnswers | Abort | BootstrapQuestion | Return | Resolve
)

DescKind = Literal["import-object", "import-promise", "export", "answer"]


@dataclass(slots=True)
class Desc:
    """How a reference is written on the wire, from the receiver's point of view.

    ``import-object`` / ``import-promise``: "the sender exports this to you at
    ``position``"; ``export``: "your own export at ``position``"; ``answer``:
    "the answer you keep at ``position`` for me".  ``first`` is true the first
    time an export goes out (dialects that send an interface name once use it).
    """

    kind: DescKind
    position: Position
    first: bool = False

    def __init__(self, kind: DescKind, position: Position, first: bool = False) -> None:
        self.kind = kind
        self.position = position
        self.first = first
