"""The OCapN message codec: engine messages to ``op:``/``desc:`` records in Syrup, and back.

Each record is declared once, as a :class:`RecordType` (label, fields in
wire order with the reader that checks each, meaning): the encoder builds it
with ``make`` and the decoder reads it with ``read``, and a table maps each
operation to the engine message it makes.  Values
are converted in the codec's own single pass: ``default`` turns references,
``None``, ``null``, tagged values and errors into records while encoding, and
``record_hook`` turns descriptor records back into live values while decoding.

Peers disagree on a few shapes (``spec/ocapn.md`` section 15): the
:class:`WireProfile` says which one to *write*; every known variant is *read*.
:data:`PROFILES` names the three we ship: ``spec`` (the default), ``suite-main``
and ``endo``; ``spec-notes/0020-ocapn-node.md`` says why each is what it is.

Besides the engine's messages, the codec knows the records of the OCapN
layer: ``op:start-session`` (:class:`StartSession`), locators
(``ocapn-peer`` -> :class:`~ocapn.locators.PeerLocation`, ``ocapn-sturdyref``
-> :class:`~ocapn.locators.Sturdyref`) and signed envelopes
(``desc:sig-envelope`` -> :class:`~ocapn.certificates.SignedEnvelope`), in both
directions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from captp._passable import (
    Null,
    Record,
    Symbol,
    Tagged,
    decode_tagged,
    describe_error,
    is_remotable,
    make_record,
    null,
)
from captp._promise import Promise
from captp._refs import RemoteRef
from captp.engine import Engine
from captp.errors import EncodeError, ProtocolError, RemoteError
from captp.limits import LimitExceeded
from captp.messages import (
    Abort,
    Deliver,
    Desc,
    GcAnswers,
    GcExports,
    Get,
    Listen,
    Message,
)
from ocapn import cbor, syrup
from ocapn.certificates import DESC_SIG_ENVELOPE, SignedEnvelope
from ocapn.crypto import PublicKey, encode_signature, parse_signature
from ocapn.errors import HandshakeError, LocatorError, SignatureError
from ocapn.locators import OCAPN_PEER, OCAPN_STURDYREF, PeerLocation, Sturdyref

__all__ = [
    "CBOR_PROFILE",
    "ENDO_CBOR_PROFILE",
    "ENDO_PROFILE",
    "PROFILES",
    "SPEC_PROFILE",
    "SUITE_MAIN_PROFILE",
    "OCapNWire",
    "StartSession",
    "WireProfile",
]

SyrupFraming = Literal["message", "none", "len"]
Encoding = Literal["syrup", "cbor"]


@dataclass(frozen=True, slots=True)
class WireProfile:
    """Which variant of each disputed shape to write (all variants are always read).

    ``deliver_only``: write fire-and-forget sends as ``op:deliver-only``
    (legacy; the conformance suite at 6c146dc needs it) instead of
    ``op:deliver ... false false``.  ``gc_plural``: ``op:gc-exports`` /
    ``op:gc-answers`` (spec, Goblins, Endo) instead of the singular labels with
    lists (the suite).  ``listen_fields``: 3 (``wants-partial`` flag, as every
    implementation sends) or 2 (the spec text).  ``stream_framing``: on byte
    streams, ``"none"`` (back-to-back records) or ``"len"`` (``<len>:<bytes>``,
    the 2026 consensus).  ``struct_key_order``: how to sort the keys of a
    struct (a dictionary of strings): ``"syrup"``, by encoded bytes (the
    spec), or ``"js"``, JavaScript's order of strings (what ``@endo/ocapn``
    requires); the two differ only for keys of different lengths or with
    characters beyond U+FFFF.  ``negative_zero``: write ``-0.0`` as it is
    (the OCapN model) or as ``0.0`` (Endo's reader refuses ``-0.0`` and drops
    the connection).  ``encoding``: the encoding to write, ``"syrup"`` or
    ``"cbor"`` (the draft CBOR mapping, :mod:`ocapn.cbor`; on byte streams
    always ``len:`` framed); both are always read.
    """

    name: str = "spec"
    deliver_only: bool = False
    gc_plural: bool = True
    listen_fields: Literal[2, 3] = 3
    stream_framing: Literal["none", "len"] = "none"
    struct_key_order: syrup.KeyOrder = "syrup"
    negative_zero: bool = True
    encoding: Encoding = "syrup"


SPEC_PROFILE: Final = WireProfile()
"""The current spec draft (9279671), which Spritely Goblins 0.18 also speaks."""

SUITE_MAIN_PROFILE: Final = WireProfile(
    name="suite-main", deliver_only=True, gc_plural=False, listen_fields=3, stream_framing="none"
)
"""The conformance suite's main branch (6c146dc): ``op:deliver-only``, singular GC labels."""

ENDO_PROFILE: Final = WireProfile(
    name="endo", stream_framing="len", struct_key_order="js", negative_zero=False
)
"""Endo's ``@endo/ocapn`` (master 1fa6c22): the spec's shapes, ``len:`` framing on TCP,
struct keys in JavaScript's order, ``-0.0`` written as ``0.0``."""

CBOR_PROFILE: Final = WireProfile(name="cbor", encoding="cbor")
"""The spec's shapes in the draft CBOR encoding (``spec-notes/0033``)."""

ENDO_CBOR_PROFILE: Final = WireProfile(
    name="endo-cbor", encoding="cbor", stream_framing="len", struct_key_order="js"
)
"""``@endo/ocapn`` with its CBOR codec: struct keys in JavaScript's order; ``-0.0``
as it is (Endo's CBOR reader keeps it).  Checked live (``spec-notes/0033``)."""

PROFILES: Final[dict[str, WireProfile]] = {
    p.name: p
    for p in (SPEC_PROFILE, SUITE_MAIN_PROFILE, ENDO_PROFILE, CBOR_PROFILE, ENDO_CBOR_PROFILE)
}
"""The profiles by name, as the command line and the test-suite peer take them."""


@dataclass(frozen=True, slots=True)
class StartSession:
    """``<op:start-session version session-pubkey acceptable-location location-sig>``.

    ``signature`` signs ``<my-location location>`` (spec section 4) with
    ``public_key``; the node checks it.
    """

    version: str
    public_key: PublicKey
    location: PeerLocation
    signature: bytes


# -- records ------------------------------------------------------------------------
#
# Each op: and desc: record is declared once below (as Goblins declares its
# record structs): its label, its fields in wire order, what each means and
# how a field sent by a peer is checked.  Encoding builds a record with
# ``make``; decoding reads one with ``read``, which checks the arity and every
# field and names the field in its complaint.

Reader = Callable[["OCapNWire", Any, str], Any]
"""Checks one field a peer sent (``what`` names it) and gives its value; ProtocolError if bad."""


class RecordType:
    """One ``op:``/``desc:`` record: its label, fields (name and reader) and meaning.

    ``optional``: how many trailing fields a peer may leave out (older drafts).
    """

    __slots__ = ("_arities", "_read_all", "_readers", "fields", "label", "meaning", "name")

    def __init__(
        self, name: str, fields: Sequence[tuple[str, Reader]], meaning: str, optional: int = 0
    ) -> None:
        self.name = name
        self.label = Symbol(name)
        self.fields = tuple(field for field, _ in fields)
        self.meaning = meaning
        self._readers = tuple((read, f"{name} {field}") for field, read in fields)
        self._arities = range(len(fields) - optional, len(fields) + 1)
        self._read_all = _unrolled(self._readers)

    def __repr__(self) -> str:
        return f"<{self.name} {' '.join(self.fields)}>".replace(" >", ">")

    def make(self, *values: Any) -> Record:
        """The record with these field values (live values; the codec converts them)."""
        return make_record(self.label, values)

    def read(self, wire: OCapNWire, fields: Sequence[Any]) -> Sequence[Any]:
        """The checked values of the fields a peer sent."""
        n = len(fields)
        if n == len(self._readers):
            return self._read_all(wire, fields)
        if n not in self._arities:
            want = " or ".join(str(n) for n in self._arities)
            raise ProtocolError(f"<{self.name}> takes {want} fields, got {len(fields)}")
        return [read(wire, value, what) for (read, what), value in zip(self._readers, fields)]  # noqa: B905

    def decoder(self, build: Callable[..., Any]) -> Callable[[OCapNWire, Sequence[Any]], Any]:
        """``decode(wire, fields)``: ``build(*checked fields)``, for the operation's message."""
        read_all, read, n = self._read_all, self.read, len(self._readers)

        def decode(wire: OCapNWire, f: Sequence[Any]) -> Any:
            return build(*(read_all(wire, f) if len(f) == n else read(wire, f)))

        return decode


def _unrolled(
    readers: tuple[tuple[Reader, str], ...],
) -> Callable[[OCapNWire, Sequence[Any]], Sequence[Any]]:
    """Read every field with its reader: unrolled for the short records of every message."""
    if len(readers) == 1:
        ((r0, w0),) = readers
        return lambda wire, f: (r0(wire, f[0], w0),)
    if len(readers) == 2:
        (r0, w0), (r1, w1) = readers
        return lambda wire, f: (r0(wire, f[0], w0), r1(wire, f[1], w1))
    if len(readers) == 3:
        (r0, w0), (r1, w1), (r2, w2) = readers
        return lambda wire, f: (r0(wire, f[0], w0), r1(wire, f[1], w1), r2(wire, f[2], w2))
    if len(readers) == 4:
        (r0, w0), (r1, w1), (r2, w2), (r3, w3) = readers
        return lambda wire, f: (
            r0(wire, f[0], w0), r1(wire, f[1], w1), r2(wire, f[2], w2), r3(wire, f[3], w3)
        )
    return lambda wire, f: [read(wire, value, what) for (read, what), value in zip(readers, f)]  # noqa: B905


# -- field readers --------------------------------------------------------------------

def _any(wire: OCapNWire, value: Any, what: str) -> Any:
    return value


def _position(wire: OCapNWire | None, value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ProtocolError(f"{what}: position must be a non-negative integer, not {value!r}")
    return value


def _answer_or_false(wire: OCapNWire, value: Any, what: str) -> int | None:
    if value is False:
        return None
    if type(value) is int and value >= 0:
        return value
    return _position(wire, value, what)


def _is_reference(value: Any) -> bool:
    return is_remotable(value) or isinstance(value, Promise)


def _reference(wire: OCapNWire, value: Any, what: str) -> Any:
    if not (is_remotable(value) or isinstance(value, Promise)):
        raise ProtocolError(f"{what} must be a reference, not {value!r}")
    return value


def _reference_or_false(wire: OCapNWire, value: Any, what: str) -> Any:
    if value is False:
        return None
    if not (is_remotable(value) or isinstance(value, Promise)):
        raise ProtocolError(f"{what} must be a reference, not {value!r}")
    return value


def _target(wire: OCapNWire, value: Any, what: str) -> Any:
    # The record hook already turned <desc:export N> / <desc:answer N> into our
    # object or answer promise; anything else (data, or the peer's own object
    # written as <desc:import-object>) cannot be a target.
    if is_remotable(value):
        if type(value) is not RemoteRef or value.engine is not wire.engine:
            return value
    elif isinstance(value, Promise):
        return value
    raise ProtocolError(
        f"{what}: message target must be <desc:export> or <desc:answer>: {value!r}"
    )


def _method_and_args(wire: OCapNWire, value: Any, what: str) -> tuple[str | None, tuple[Any, ...]]:
    if type(value) is not list:
        raise ProtocolError(f"{what}: args must be a list, not {type(value).__name__}")
    if value and type(value[0]) is Symbol:
        return value[0].name, tuple(value[1:])
    return None, tuple(value)


def _string(wire: OCapNWire, value: Any, what: str) -> str:
    if type(value) is not str:
        raise ProtocolError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _boolean(wire: OCapNWire, value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise ProtocolError(f"{what} must be a boolean")
    return value


def _positions(wire: OCapNWire, value: Any, what: str) -> tuple[int, ...]:
    if type(value) is int:  # pre-2025-12 single form
        value = [value]
    if type(value) is not list:
        raise ProtocolError(f"{what}: expected a list")
    return tuple(_position(wire, p, what) for p in value)


def _deltas(wire: OCapNWire, value: Any, what: str) -> tuple[int, ...]:
    if type(value) is int:  # pre-2025-12 single form
        value = [value]
    if type(value) is not list:
        raise ProtocolError(f"{what}: expected a list")
    for d in value:
        if type(d) is not int or d <= 0:
            raise ProtocolError(f"{what}: wire delta must be a positive integer: {d!r}")
    return tuple(value)


def _reason(wire: OCapNWire, value: Any, what: str) -> str:
    return value if type(value) is str else repr(value)


def _tag(wire: OCapNWire, value: Any, what: str) -> str:
    if type(value) is Symbol:
        return value.name
    if type(value) is str:
        return value
    raise ProtocolError(f"{what} must be a symbol, not {type(value).__name__}")


def _handshake(read: Callable[[Any], Any]) -> Reader:
    def reader(wire: OCapNWire, value: Any, what: str) -> Any:
        try:
            return read(value)
        except SignatureError as exc:
            raise HandshakeError(f"{what}: {exc}") from None

    return reader


def _peer_location(wire: OCapNWire, value: Any, what: str) -> PeerLocation:
    if type(value) is not PeerLocation:
        raise HandshakeError(f"{what} must be <ocapn-peer>")
    return value


# -- the declarations -------------------------------------------------------------------

DELIVER: Final = RecordType(
    "op:deliver",
    [("to-desc", _target), ("args", _method_and_args), ("answer-pos", _answer_or_false),
     ("resolve-me-desc", _reference_or_false)],
    "call the method args[0] (a symbol; none: apply the target) with the other args; "
    "keep the result at answer-pos (false: none) and tell resolve-me-desc (false: nobody)",
)
DELIVER_ONLY: Final = RecordType(
    "op:deliver-only",
    [("to-desc", _target), ("args", _method_and_args)],
    "legacy: op:deliver with no answer and nobody to tell",
)
LISTEN: Final = RecordType(
    "op:listen",
    [("to-desc", _target), ("listen-desc", _reference), ("wants-partial", _boolean)],
    "tell listen-desc (fulfill/break) when the promise to-desc settles",
    optional=1,  # the spec text has 2 fields; every implementation sends 3
)
GET: Final = RecordType(
    "op:get",
    [("receiver-desc", _target), ("field-name", _string), ("new-answer-pos", _position)],
    "keep at new-answer-pos the field field-name of the struct the receiver settles to",
)
INDEX: Final = RecordType(
    "op:index",
    [("receiver-desc", _target), ("index", _position), ("new-answer-pos", _position)],
    "keep at new-answer-pos the element index of the list the receiver settles to",
)
UNTAG: Final = RecordType(
    "op:untag",
    [("receiver-desc", _target), ("tag", _string), ("new-answer-pos", _position)],
    "keep at new-answer-pos the payload of the tagged value (with this tag) the receiver is",
)
GC_EXPORTS: Final = RecordType(
    "op:gc-exports",
    [("export-positions", _positions), ("wire-deltas", _deltas)],
    "the sender dropped its imports: subtract each wire delta from the export's count",
)
GC_EXPORT: Final = RecordType(
    "op:gc-export", [("export-positions", _positions), ("wire-deltas", _deltas)],
    "the conformance suite's singular label of op:gc-exports",
)
GC_ANSWERS: Final = RecordType(
    "op:gc-answers", [("answer-positions", _positions)],
    "the sender no longer needs these answers",
)
GC_ANSWER: Final = RecordType(
    "op:gc-answer", [("answer-positions", _positions)],
    "the conformance suite's singular label of op:gc-answers",
)
ABORT: Final = RecordType("op:abort", [("reason", _reason)], "the sender ends the session")
START_SESSION: Final = RecordType(
    "op:start-session",
    [("captp-version", _string), ("session-pubkey", _handshake(PublicKey.from_descriptor)),
     ("acceptable-location", _peer_location),
     ("acceptable-location-sig", _handshake(parse_signature))],
    "the handshake: our session key, and our location signed with it",
)
IMPORT_OBJECT: Final = RecordType(
    "desc:import-object", [("position", _position)], "the sender's object at its export position"
)
IMPORT_PROMISE: Final = RecordType(
    "desc:import-promise", [("position", _position)], "the sender's promise at its export position"
)
EXPORT: Final = RecordType(
    "desc:export", [("position", _position)], "the receiver's own export at this position"
)
ANSWER: Final = RecordType(
    "desc:answer", [("position", _position)], "the answer the receiver keeps at this position"
)
TAGGED: Final = RecordType(
    "desc:tagged", [("tag", _tag), ("payload", _any)], "a tagged value (Endo's shape)"
)
TAG: Final = RecordType(
    "desc:tag", [("label", _string), ("payload", _any)], "a tagged value (PR #247's shape)"
)
ERROR: Final = RecordType(
    "desc:error", [("message", _string), ("identifier", _any), ("data", _any)],
    "an error, by its message (PR #248 adds an identifier and a data struct)",
    optional=2,
)
VOID: Final = RecordType("void", [], "nothing (Python's None)")
NULL: Final = RecordType("null", [], "the null value")


# Method names as symbols, made once each (bounded: names may come from peers).
_METHOD_SYMBOLS: Final[dict[str, Symbol]] = {}


_ERROR_NAME: Final = re.compile(
    r"([A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt|Warning)): (.*)\Z",
    re.DOTALL,
)


def _session_ended(value: Any) -> bytes:
    raise EncodeError("the session has ended")


def _drop_frames(exc: BaseException) -> None:
    # The frames of a kept exception (and of its causes) hold what they ran on.
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if id(e) not in seen:
            seen.add(id(e))
            e.__traceback__ = None
            todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def _method_symbol(name: str) -> Symbol:
    symbol = _METHOD_SYMBOLS.get(name)
    if symbol is None:
        symbol = Symbol(name)
        if len(_METHOD_SYMBOLS) < 4096 and len(name) <= 64:
            _METHOD_SYMBOLS[name] = symbol
    return symbol


_END: Final = object()
_VOID_RECORD: Final = VOID.make()
_NULL_RECORD: Final = NULL.make()
_DESC_LABELS: Final[dict[str, Symbol]] = {
    "import-object": IMPORT_OBJECT.label,
    "import-promise": IMPORT_PROMISE.label,
    "export": EXPORT.label,
    "answer": ANSWER.label,
}


class OCapNWire:
    """Engine messages <-> Syrup or CBOR bytes for one session, with the profile's framing.

    ``framing``: ``"message"`` when the transport keeps message boundaries
    (in-memory pipe, WebSocket); otherwise the stream framing of the profile.
    ``encoding``, if given, overrides the profile's (a netlayer negotiated it).
    Incoming stream framing is detected from the first byte (``<`` unframed,
    a digit ``len:``), so either kind of peer is understood.
    """

    def __init__(
        self,
        session: Engine,
        profile: WireProfile = SPEC_PROFILE,
        *,
        framing: SyrupFraming = "message",
        limits: syrup.Limits = syrup.DEFAULT_LIMITS,
        extra_records: dict[Symbol, Callable[[list[Any]], Any]] | None = None,
        encoding: Encoding | None = None,
        on_give: Callable[[SignedEnvelope], tuple[Promise, Callable[[], None]]] | None = None,
    ) -> None:
        self.engine = session
        self.profile = profile
        self._framing: SyrupFraming = framing
        self._out_framing: SyrupFraming = (
            framing if framing == "message" else profile.stream_framing
        )
        # The codec we write with, and the encoding the peer writes (known from
        # its first message).  On a stream, :meth:`detect` also makes us answer
        # in the peer's encoding if we have not written yet, as with framing.
        encoding = encoding or profile.encoding
        if encoding not in ("syrup", "cbor"):
            raise ValueError(f"encoding must be 'syrup' or 'cbor', not {encoding!r}")
        self._codec: Any = cbor if encoding == "cbor" else syrup
        if self._codec is cbor and framing != "message":
            self._out_framing = "len"
        self.in_encoding: Encoding | None = None
        self._written = False
        self._limits = limits
        self._key_order = profile.struct_key_order
        self._negative_zero = profile.negative_zero
        self._encode_value = self._encoder()
        self._stream: syrup.StreamDecoder | None = None
        self._frames: syrup.FrameDecoder | None = None
        self._cut = False  # the stream ended inside a message whose imports are staged
        # A read of a stream that holds exactly one whole message (the usual
        # case) is decoded at once, not through the stream decoder; it then
        # never saw those bytes, so its error offsets are moved by as many.
        self._whole: syrup.Decoder | None = (
            None if extra_records else
            syrup.Decoder(limits=limits, record_hook=self._hook, key_order="either")
        )
        self._values: Iterator[object] | None = None  # the stream decoder's read under way
        self._skipped = 0  # stream bytes decoded without the stream decoder
        self._detected = framing == "message"
        # By the label's name: a str is hashed and compared in C, a Symbol in Python.
        self._records: dict[str, Callable[[list[Any]], Any]] = {
            IMPORT_OBJECT.name: self._in_import_object,
            IMPORT_PROMISE.name: self._in_import_promise,
            EXPORT.name: self._in_export,
            ANSWER.name: self._in_answer,
            VOID.name: self._in_void,
            NULL.name: self._in_null,
            TAGGED.name: self._in_tagged,
            TAG.name: self._in_tag,
            ERROR.name: self._in_error,
            OCAPN_PEER.name: self._in_peer,
            OCAPN_STURDYREF.name: self._in_sturdyref,
            DESC_SIG_ENVELOPE.name: self._in_sig_envelope,
        }
        if extra_records:
            self._records.update((label.name, convert) for label, convert in extra_records.items())
        # A hook for values the application writes itself.
        self.extra_default: Callable[[Any], Any] | None = None
        # Signed handoff gives become promises as they are decoded: on_give
        # gives the promise and what starts the withdrawal, which runs once the
        # message carrying it is received.  A give inside another envelope (a
        # handoff-receive) stays an envelope.
        self._on_give = on_give
        self._gives: dict[int, tuple[Promise, SignedEnvelope, Callable[[], None]]] = {}

    # == framing =======================================================================

    @property
    def in_framing(self) -> SyrupFraming | None:
        """How incoming messages are framed (None: not known until the first bytes)."""
        return self._framing if self._detected else None

    @property
    def message_framing(self) -> bool:
        """True when each message goes out in a send of its own (a message transport)."""
        return self._framing == "message"

    @property
    def out_framing(self) -> SyrupFraming:
        """How outgoing messages are framed."""
        return self._out_framing

    @out_framing.setter
    def out_framing(self, framing: SyrupFraming) -> None:
        if (framing == "message") != (self._framing == "message"):
            raise ValueError("a stream needs stream framing, a message channel 'message'")
        self._out_framing = framing

    def detect(self, data: bytes) -> SyrupFraming:
        """Learn the incoming framing from the first bytes of a stream (``<`` or a digit).

        Until we have written, the peer's encoding also becomes ours.
        """
        if not self._detected and data:
            self._detected = True
            if data[:1] == b"<":
                self._framing = "none"
            elif data[:1].isdigit():
                self._framing = "len"
            elif data[:1] == b"\xd8":
                raise ProtocolError("CBOR on a byte stream must be len: framed")
            else:
                raise ProtocolError(f"stream starts with {data[:1]!r}: neither a record nor len:")
            if not self._written:
                colon = data.find(b":", 0, 12) if self._framing == "len" else -1
                cbor_first = 0 <= colon < len(data) - 1 and data[colon + 1] == 0xD8
                self._codec = cbor if cbor_first else syrup
                self._encode_value = self._encoder()
        return self._framing

    # == encoding ====================================================================

    def encode(self, message: Message | StartSession) -> bytes:
        """The framed bytes of one message."""
        encoder = _ENCODERS.get(type(message))
        if encoder is None:
            raise EncodeError(f"no OCapN encoding for {type(message).__name__}")
        record = encoder(self, message)
        self._written = True
        data = self._encode_value(record)
        if self._out_framing == "len":
            return syrup.frame(data)
        return data

    def _encoder(self) -> Callable[[Any], bytes]:
        # Syrup's Encoder checks the options once, not on every message.
        if self._codec is syrup:
            return syrup.Encoder(
                default=self._default, key_order=self._key_order,
                negative_zero=self._negative_zero,
            ).encode
        return functools.partial(
            cbor.encode, default=self._default, key_order=self._key_order,
            negative_zero=self._negative_zero,
        )

    def to_record(self, message: Message | StartSession) -> Record:
        """The ``op:`` record for an engine message (values still live)."""
        encoder = _ENCODERS.get(type(message))
        if encoder is None:
            raise EncodeError(f"no OCapN encoding for {type(message).__name__}")
        return encoder(self, message)

    def _target(self, target: Any) -> Record:
        desc = self.engine.describe_target(target)
        return make_record(_DESC_LABELS[desc.kind], (desc.position,))

    def _default(self, value: Any) -> Any:
        if value is None:
            return _VOID_RECORD
        t = type(value)
        if t is Null:
            return _NULL_RECORD
        if t is Tagged:
            return TAGGED.make(Symbol(value.tag), value.payload)
        if isinstance(value, BaseException):
            return ERROR.make(describe_error(value))
        if t is SignedEnvelope or t is PeerLocation or t is Sturdyref:
            return value.to_record()
        if self.extra_default is not None:
            replacement = self.extra_default(value)
            if replacement is not None:
                return replacement
        desc = self.engine.describe(value)
        if type(desc) is Desc:
            return make_record(_DESC_LABELS[desc.kind], (desc.position,))
        return desc

    def _enc_deliver(self, msg: Deliver) -> Record:
        method = msg.method
        args = list(msg.args) if method is None else [_method_symbol(method), *msg.args]
        target = self._target(msg.target)
        if msg.answer is None and msg.resolver is None and self.profile.deliver_only:
            return DELIVER_ONLY.make(target, args)
        answer = False if msg.answer is None else msg.answer
        # (described here, not by the codec's call of _default: one dispatch less)
        resolver = False if msg.resolver is None else self._default(msg.resolver)
        return DELIVER.make(target, args, answer, resolver)

    def _enc_listen(self, msg: Listen) -> Record:
        target = self._target(msg.target)
        if self.profile.listen_fields == 3:
            return LISTEN.make(target, msg.resolver, msg.wants_partial)
        return LISTEN.make(target, msg.resolver)

    def _enc_get(self, msg: Get) -> Record:
        kind = {"get": GET, "index": INDEX, "untag": UNTAG}[msg.kind]
        return kind.make(self._target(msg.target), msg.key, msg.answer)

    def _enc_gc_exports(self, msg: GcExports) -> Record:
        kind = GC_EXPORTS if self.profile.gc_plural else GC_EXPORT
        return kind.make(list(msg.positions), list(msg.deltas))

    def _enc_gc_answers(self, msg: GcAnswers) -> Record:
        kind = GC_ANSWERS if self.profile.gc_plural else GC_ANSWER
        return kind.make(list(msg.positions))

    def _enc_abort(self, msg: Abort) -> Record:
        return ABORT.make(msg.reason)

    def release(self) -> None:
        """The session has ended: drop the decoders and the callbacks (they tie it into cycles)."""
        self._records = {}
        self._whole = None  # its hook is ours
        self._on_give = None
        self._encode_value = _session_ended  # its encoder calls back into this wire
        stream, self._stream = self._stream, None
        if stream is not None:
            # A read the session ended in the middle of leaves the decoder's
            # generator suspended (it refers back to us): end it.
            try:
                stream.close()
            except Exception as exc:  # the error the decoder keeps (and its causes): no frames
                _drop_frames(exc)
        self._frames = None
        self._gives.clear()

    # == decoding ====================================================================

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held until the rest arrives."""
        if self._stream is not None:
            return self._stream.buffered
        if self._frames is not None:
            return self._frames.buffered
        return 0

    def feed(self, data: bytes) -> Iterable[Any]:
        """The messages completed by ``data`` (a whole message, or a slice of a stream).

        On a stream, lazy: each message is decoded only when the previous one
        has been handled, because a message may name an answer the previous
        one made.  On a message transport ``data`` is one message, decoded now.
        """
        if self._framing == "message":
            if not data:
                return ()
            try:
                return (self.decode_message(data),)
            except syrup.SyrupDecodeError as exc:
                raise self._named(exc) from exc
        if (
            self._framing == "none" and data[-1:] == b">" and self._stream is not None
            and self._values is None and not self._cut
        ):  # perhaps one whole record, and nothing of an earlier read left: decode it at once
            message = self._decode_whole(data)
            if message is not _END:
                return (message,)
        return self._feed(data)

    def _decode_whole(self, data: bytes) -> Any:
        """The message ``data`` holds if it is exactly one whole record, else ``_END``.

        Anything else (several messages, a part of one, a fault) is left to
        the stream decoder: what this attempt staged is dropped when it
        begins (imports, gives: the decoder's hooks only stage), so it acts
        as if this had not run.
        """
        whole = self._whole
        if whole is None or self.in_encoding != "syrup":
            return _END
        self._begin()
        try:
            value = whole.decode(data)
        except Exception:  # the stream decoder finds it again, and says what it is
            return _END
        self._skipped += len(data)
        return self.from_record(value)

    def _named(self, exc: syrup.SyrupDecodeError) -> Exception:
        # A decoding limit was hit: say which of the node's Limits it was.
        # (The cause is set here too: the compiled build ignores `raise ... from`.)
        named: Exception = exc
        if self._skipped and exc.offset is not None:
            # Offsets in the whole stream, with the reads decoded at once.
            named = syrup.SyrupDecodeError(exc.message, exc.offset + self._skipped)
        text = str(named)
        if "size limit" in text:
            named = LimitExceeded("max_message_bytes", self._limits.max_size, text)
        elif "nesting deeper" in text:
            named = LimitExceeded("max_depth", self._limits.max_depth, text)
        if named is not exc:
            named.__cause__ = exc
        return named

    def _feed(self, data: bytes) -> Iterator[Any]:
        # One generator (with the limit naming of feed) per read of a stream.
        try:
            if not data:
                return
            if not self._detected:
                self.detect(data)
            if self._framing == "len":
                if self._frames is None:
                    self._frames = syrup.FrameDecoder(max_frame_size=self._limits.max_size)
                for frame in self._frames.feed(data):
                    yield self.decode_message(frame)
                return
            if self._framing == "message":  # (a message transport fed through _feed)
                yield self.decode_message(data)
                return
            if self._stream is None:
                self._stream = syrup.StreamDecoder(
                    limits=self._limits, record_hook=self._hook, key_order="either"
                )
            if self.in_encoding is None:
                self._set_in_encoding("syrup")
            stream = self._stream
            values = self._values = stream.feed_lazily(data)
            engine = self.engine
            while True:
                # The imports of a message wait until it is whole.  One cut by
                # the end of the last read goes on: its records were reported.
                if self._cut:
                    self._cut = False
                    engine.resume_decoding()
                else:
                    self._begin()
                value = next(values, _END)
                if value is _END:
                    self._values = None  # done with this read: the next may go at once
                    if stream.buffered:
                        self._cut = True
                        engine.pause_decoding()
                    else:
                        engine.end_decoding()
                    return
                yield self.from_record(value)
        except syrup.SyrupDecodeError as exc:
            raise self._named(exc) from exc

    def decode_message(self, data: bytes) -> Any:
        """The message in one complete Syrup or CBOR record (told apart by the first byte)."""
        if data and data[0] == 0xD8:
            codec: Any = cbor
            encoding: Encoding = "cbor"
        else:
            codec = syrup
            encoding = "syrup"
        if self.in_encoding != encoding:
            self._set_in_encoding(encoding)
        self._begin()
        value = codec.decode(data, limits=self._limits, record_hook=self._hook, key_order="either")
        return self.from_record(value)

    def _begin(self) -> None:
        self.engine.begin_decoding()
        if self._gives:
            self._gives.clear()

    @property
    def out_encoding(self) -> Encoding:
        """The encoding this wire writes."""
        return "cbor" if self._codec is cbor else "syrup"

    def _set_in_encoding(self, encoding: Encoding) -> None:
        if self.in_encoding is not None:
            raise ProtocolError(f"a {encoding} message in a {self.in_encoding} session")
        self.in_encoding = encoding

    def from_record(self, value: Any) -> Any:
        """The engine message for a decoded top-level ``op:`` record."""
        if type(value) is not Record or type(value.label) is not Symbol:
            raise ProtocolError(f"expected an op: record, got {type(value).__name__}")
        record: Record = value  # (typed: compiled, its fields are read directly)
        label: Symbol = record.label
        decoder = _DECODERS.get(label.name)
        if decoder is None:
            raise ProtocolError(f"unknown operation <{label.name}>")
        message = decoder(self, record.fields)
        if self._gives:  # the message is whole: its gives start once it is received
            for _, _, start in self._gives.values():
                self.engine.when_received(start)
            self._gives.clear()
        return message

    def _hook(self, label: Any, fields: list[Any]) -> Any:
        if type(label) is Symbol:
            symbol: Symbol = label  # (typed: compiled, its name is read directly)
            convert = self._records.get(symbol.name)
            if convert is not None:
                return convert(fields)
        return make_record(label, tuple(fields))

    def _in_import_object(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.import_object(fields[0])
        return self.engine.import_object(*IMPORT_OBJECT.read(self, fields))

    def _in_import_promise(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.import_promise(fields[0])
        return self.engine.import_promise(*IMPORT_PROMISE.read(self, fields))

    def _in_export(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.lookup_export(fields[0])
        return self.engine.lookup_export(*EXPORT.read(self, fields))

    def _in_answer(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.lookup_answer(fields[0])
        return self.engine.lookup_answer(*ANSWER.read(self, fields))

    def _in_void(self, fields: list[Any]) -> Any:
        if fields:
            VOID.read(self, fields)  # says what is wrong
        return None

    def _in_null(self, fields: list[Any]) -> Any:
        if fields:
            NULL.read(self, fields)
        return null

    def _in_tagged(self, fields: list[Any]) -> Any:
        return decode_tagged(*TAGGED.read(self, fields))

    def _in_tag(self, fields: list[Any]) -> Any:
        return decode_tagged(*TAG.read(self, fields))

    def _in_error(self, fields: list[Any]) -> Any:
        message = ERROR.read(self, fields)[0]
        # desc:error carries a message only; peers that name the error (this
        # library, Endo) write "Name: message" (spec-notes/0039).
        named = _ERROR_NAME.match(message)
        if named is not None:
            return RemoteError(named.group(2), named.group(1))
        return RemoteError(message)

    def _in_peer(self, fields: list[Any]) -> PeerLocation:
        try:
            return PeerLocation.from_record(Record(OCAPN_PEER, fields))
        except LocatorError as exc:
            raise ProtocolError(str(exc)) from None

    def _in_sturdyref(self, fields: list[Any]) -> Sturdyref:
        if len(fields) == 2 and type(fields[0]) is PeerLocation:
            fields = [fields[0].to_record(), fields[1]]
        try:
            return Sturdyref.from_record(Record(OCAPN_STURDYREF, fields))
        except LocatorError as exc:
            raise ProtocolError(str(exc)) from None

    def _in_sig_envelope(self, fields: list[Any]) -> Any:
        if self._gives and fields:  # a give inside this envelope stays as it was signed
            fields = [self._ungive(fields[0]), *fields[1:]]
        try:
            envelope = SignedEnvelope.from_fields(fields)
        except SignatureError as exc:
            raise ProtocolError(str(exc)) from None
        if envelope.is_give and self._on_give is not None:
            promise, start = self._on_give(envelope)
            self._gives[id(promise)] = (promise, envelope, start)
            return promise
        return envelope

    def _ungive(self, value: Any) -> Any:
        """``value`` with the gives decoded inside it back as envelopes."""
        t = type(value)
        if t is Promise:
            give = self._gives.pop(id(value), None)
            return value if give is None else give[1]
        if t is Record:
            return make_record(value.label, tuple(self._ungive(f) for f in value.fields))
        if t is list:
            return [self._ungive(v) for v in value]
        if t is dict:
            return {k: self._ungive(v) for k, v in value.items()}
        return value

    def _enc_start_session(self, msg: StartSession) -> Record:
        return START_SESSION.make(
            msg.version,
            msg.public_key.descriptor(),
            msg.location.to_record(),
            encode_signature(msg.signature),
        )


def _start_session(wire: OCapNWire, fields: Sequence[Any]) -> StartSession:
    if not fields or type(fields[0]) is not str:
        raise HandshakeError("op:start-session: the first field must be the version string")
    try:
        return StartSession(*START_SESSION.read(wire, fields))
    except HandshakeError:
        raise
    except ProtocolError as exc:
        raise HandshakeError(str(exc)) from None


def _gc_exports(positions: tuple[int, ...], deltas: tuple[int, ...]) -> GcExports:
    if len(positions) != len(deltas):
        raise ProtocolError("gc-exports: positions and deltas differ in length")
    return GcExports(positions, deltas)


_ENCODERS: Final[dict[type, Callable[[OCapNWire, Any], Record]]] = {
    Deliver: OCapNWire._enc_deliver,
    Listen: OCapNWire._enc_listen,
    Get: OCapNWire._enc_get,
    GcExports: OCapNWire._enc_gc_exports,
    GcAnswers: OCapNWire._enc_gc_answers,
    Abort: OCapNWire._enc_abort,
    StartSession: OCapNWire._enc_start_session,
}

# Each operation we read, and the engine message it makes of its checked fields.
_DECODERS: Final[dict[str, Callable[[OCapNWire, Sequence[Any]], Any]]] = {
    DELIVER.name: DELIVER.decoder(lambda to, m, answer, resolver: Deliver(
        to, m[0], m[1], answer, resolver)),
    DELIVER_ONLY.name: DELIVER_ONLY.decoder(lambda to, m: Deliver(to, m[0], m[1])),
    LISTEN.name: LISTEN.decoder(lambda to, resolver, wants_partial=False: Listen(
        to, resolver, wants_partial)),
    GET.name: GET.decoder(lambda to, key, answer: Get(to, "get", key, answer)),
    INDEX.name: INDEX.decoder(lambda to, key, answer: Get(to, "index", key, answer)),
    UNTAG.name: UNTAG.decoder(lambda to, key, answer: Get(to, "untag", key, answer)),
    GC_EXPORTS.name: GC_EXPORTS.decoder(_gc_exports),
    GC_EXPORT.name: GC_EXPORT.decoder(_gc_exports),
    GC_ANSWERS.name: GC_ANSWERS.decoder(GcAnswers),
    GC_ANSWER.name: GC_ANSWER.decoder(GcAnswers),
    ABORT.name: ABORT.decoder(Abort),
    START_SESSION.name: _start_session,
}
