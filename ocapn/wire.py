"""The OCapN message codec: engine messages to ``op:``/``desc:`` records in Syrup, and back.

Each record is declared once (label, arity, field meaning) in the tables at
the end of this module; the encoder and the decoder both read them.  Values
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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from captp._passable import Null, Record, Symbol, Tagged, describe_error, is_remotable, null
from captp._promise import Promise
from captp._refs import RemoteRef
from captp.engine import Engine
from captp.errors import EncodeError, ProtocolError, RemoteError
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


# -- labels -------------------------------------------------------------------------

def _sym(name: str) -> Symbol:
    return Symbol(name)


OP_DELIVER: Final = _sym("op:deliver")
OP_DELIVER_ONLY: Final = _sym("op:deliver-only")
OP_LISTEN: Final = _sym("op:listen")
OP_GET: Final = _sym("op:get")
OP_INDEX: Final = _sym("op:index")
OP_UNTAG: Final = _sym("op:untag")
OP_ABORT: Final = _sym("op:abort")
OP_GC_EXPORTS: Final = _sym("op:gc-exports")
OP_GC_EXPORT: Final = _sym("op:gc-export")
OP_GC_ANSWERS: Final = _sym("op:gc-answers")
OP_GC_ANSWER: Final = _sym("op:gc-answer")
OP_START_SESSION: Final = _sym("op:start-session")
DESC_IMPORT_OBJECT: Final = _sym("desc:import-object")
DESC_IMPORT_PROMISE: Final = _sym("desc:import-promise")
DESC_EXPORT: Final = _sym("desc:export")
DESC_ANSWER: Final = _sym("desc:answer")
DESC_TAGGED: Final = _sym("desc:tagged")
DESC_TAG: Final = _sym("desc:tag")
DESC_ERROR: Final = _sym("desc:error")
VOID: Final = _sym("void")
NULL: Final = _sym("null")

# Records are built many times per message: skip Record.__init__ (its checks
# are for user code) and set the two slots directly, as the Syrup decoder does.
_new_object: Final = object.__new__
_set_label: Final = Record.__dict__["label"].__set__
_set_fields: Final = Record.__dict__["fields"].__set__


def _record(label: Any, fields: tuple[Any, ...]) -> Record:
    record: Record = _new_object(Record)
    _set_label(record, label)
    _set_fields(record, fields)
    return record


# Method names as symbols, made once each (bounded: names may come from peers).
_METHOD_SYMBOLS: dict[str, Symbol] = {}


def _method_symbol(name: str) -> Symbol:
    symbol = _METHOD_SYMBOLS.get(name)
    if symbol is None:
        symbol = Symbol(name)
        if len(_METHOD_SYMBOLS) < 4096 and len(name) <= 64:
            _METHOD_SYMBOLS[name] = symbol
    return symbol


_VOID_RECORD: Final = Record(VOID, ())
_NULL_RECORD: Final = Record(NULL, ())
_DESC_LABELS: Final[dict[str, Symbol]] = {
    "import-object": DESC_IMPORT_OBJECT,
    "import-promise": DESC_IMPORT_PROMISE,
    "export": DESC_EXPORT,
    "answer": DESC_ANSWER,
}


_END: Final = object()


def _position(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ProtocolError(f"{what}: position must be a non-negative integer, not {value!r}")
    return value


def _arity(label: Symbol, fields: Sequence[Any], *counts: int) -> None:
    if len(fields) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise ProtocolError(f"<{label.name}> takes {want} fields, got {len(fields)}")


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
        self._stream: syrup.StreamDecoder | None = None
        self._frames: syrup.FrameDecoder | None = None
        self._detected = framing == "message"
        self._records: dict[Symbol, Callable[[list[Any]], Any]] = {
            DESC_IMPORT_OBJECT: self._in_import_object,
            DESC_IMPORT_PROMISE: self._in_import_promise,
            DESC_EXPORT: self._in_export,
            DESC_ANSWER: self._in_answer,
            VOID: self._in_void,
            NULL: self._in_null,
            DESC_TAGGED: self._in_tagged,
            DESC_TAG: self._in_tag,
            DESC_ERROR: self._in_error,
            OCAPN_PEER: self._in_peer,
            OCAPN_STURDYREF: self._in_sturdyref,
            DESC_SIG_ENVELOPE: self._in_sig_envelope,
        }
        if extra_records:
            self._records.update(extra_records)
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
        return self._framing

    # == encoding ====================================================================

    def encode(self, message: Message | StartSession) -> bytes:
        """The framed bytes of one message."""
        record = self.to_record(message)
        self._written = True
        data: bytes = self._codec.encode(
            record,
            default=self._default,
            key_order=self._key_order,
            negative_zero=self._negative_zero,
        )
        if self._out_framing == "len":
            return syrup.frame(data)
        return data

    def to_record(self, message: Message | StartSession) -> Record:
        """The ``op:`` record for an engine message (values still live)."""
        encoder = _ENCODERS.get(type(message))
        if encoder is None:
            raise EncodeError(f"no OCapN encoding for {type(message).__name__}")
        return encoder(self, message)

    def _target(self, target: Any) -> Record:
        desc = self.engine.describe_target(target)
        return _record(_DESC_LABELS[desc.kind], (desc.position,))

    def _default(self, value: Any) -> Any:
        if value is None:
            return _VOID_RECORD
        t = type(value)
        if t is Null:
            return _NULL_RECORD
        if t is Tagged:
            return Record(DESC_TAGGED, (Symbol(value.tag), value.payload))
        if isinstance(value, BaseException):
            return Record(DESC_ERROR, (describe_error(value),))
        if t is SignedEnvelope or t is PeerLocation or t is Sturdyref:
            return value.to_record()
        if self.extra_default is not None:
            replacement = self.extra_default(value)
            if replacement is not None:
                return replacement
        desc = self.engine.describe(value)
        if type(desc) is Desc:
            return _record(_DESC_LABELS[desc.kind], (desc.position,))
        return desc

    def _enc_deliver(self, msg: Deliver) -> Record:
        method = msg.method
        args = list(msg.args) if method is None else [_method_symbol(method), *msg.args]
        target = self._target(msg.target)
        if msg.answer is None and msg.resolver is None and self.profile.deliver_only:
            return _record(OP_DELIVER_ONLY, (target, args))
        answer = False if msg.answer is None else msg.answer
        resolver = False if msg.resolver is None else msg.resolver
        return _record(OP_DELIVER, (target, args, answer, resolver))

    def _enc_listen(self, msg: Listen) -> Record:
        fields: tuple[Any, ...] = (self._target(msg.target), msg.resolver)
        if self.profile.listen_fields == 3:
            fields += (msg.wants_partial,)
        return Record(OP_LISTEN, fields)

    def _enc_get(self, msg: Get) -> Record:
        label = {"get": OP_GET, "index": OP_INDEX, "untag": OP_UNTAG}[msg.kind]
        return Record(label, (self._target(msg.target), msg.key, msg.answer))

    def _enc_gc_exports(self, msg: GcExports) -> Record:
        label = OP_GC_EXPORTS if self.profile.gc_plural else OP_GC_EXPORT
        return Record(label, (list(msg.positions), list(msg.deltas)))

    def _enc_gc_answers(self, msg: GcAnswers) -> Record:
        label = OP_GC_ANSWERS if self.profile.gc_plural else OP_GC_ANSWER
        return Record(label, (list(msg.positions),))

    def _enc_abort(self, msg: Abort) -> Record:
        return Record(OP_ABORT, (msg.reason,))

    # == decoding ====================================================================

    def feed(self, data: bytes) -> Iterator[Any]:
        """The messages completed by ``data`` (a whole message, or a slice of a stream).

        Lazy: each message is decoded only when the previous one has been
        handled, because a message may name an answer the previous one made.
        """
        if not data:
            return
        if not self._detected:
            self.detect(data)
        if self._framing == "message":
            yield self.decode_message(data)
        elif self._framing == "len":
            if self._frames is None:
                self._frames = syrup.FrameDecoder(max_frame_size=self._limits.max_size)
            for frame in self._frames.feed(data):
                yield self.decode_message(frame)
        else:
            if self._stream is None:
                self._stream = syrup.StreamDecoder(
                    limits=self._limits, record_hook=self._hook, key_order="either"
                )
            if self.in_encoding is None:
                self._set_in_encoding("syrup")
            values = self._stream.feed_lazily(data)
            begin = self._begin
            while True:
                begin()  # the imports of the next message wait until it is whole
                value = next(values, _END)
                if value is _END:
                    self.engine.end_decoding()
                    return
                yield self.from_record(value)

    def decode_message(self, data: bytes) -> Any:
        """The message in one complete Syrup or CBOR record (told apart by the first byte)."""
        codec: Any = cbor if data[:1] == b"\xd8" else syrup
        encoding: Encoding = "cbor" if codec is cbor else "syrup"
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
        decoder = _DECODERS.get(value.label)
        if decoder is None:
            raise ProtocolError(f"unknown operation <{value.label.name}>")
        message = decoder(self, value.fields)
        if self._gives:  # the message is whole: its gives start once it is received
            for _, _, start in self._gives.values():
                self.engine.when_received(start)
            self._gives.clear()
        return message

    def _hook(self, label: Any, fields: list[Any]) -> Any:
        if type(label) is Symbol:
            convert = self._records.get(label)
            if convert is not None:
                return convert(fields)
        return _record(label, tuple(fields))

    def _in_import_object(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.import_object(fields[0])
        _arity(DESC_IMPORT_OBJECT, fields, 1)
        return self.engine.import_object(_position(fields[0], "desc:import-object"))

    def _in_import_promise(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.import_promise(fields[0])
        _arity(DESC_IMPORT_PROMISE, fields, 1)
        return self.engine.import_promise(_position(fields[0], "desc:import-promise"))

    def _in_export(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.lookup_export(fields[0])
        _arity(DESC_EXPORT, fields, 1)
        return self.engine.lookup_export(_position(fields[0], "desc:export"))

    def _in_answer(self, fields: list[Any]) -> Any:
        if len(fields) == 1 and type(fields[0]) is int and fields[0] >= 0:  # the usual case
            return self.engine.lookup_answer(fields[0])
        _arity(DESC_ANSWER, fields, 1)
        return self.engine.lookup_answer(_position(fields[0], "desc:answer"))

    def _in_void(self, fields: list[Any]) -> Any:
        _arity(VOID, fields, 0)
        return None

    def _in_null(self, fields: list[Any]) -> Any:
        _arity(NULL, fields, 0)
        return null

    def _in_tagged(self, fields: list[Any]) -> Any:
        # Endo: <desc:tagged 'tag payload>
        _arity(DESC_TAGGED, fields, 2)
        tag = fields[0]
        if type(tag) is Symbol:
            return Tagged(tag.name, fields[1])
        if type(tag) is str:
            return Tagged(tag, fields[1])
        raise ProtocolError(f"desc:tagged: tag must be a symbol, not {type(tag).__name__}")

    def _in_tag(self, fields: list[Any]) -> Any:
        # PR #247 proposal: <desc:tag "label" payload>
        _arity(DESC_TAG, fields, 2)
        if type(fields[0]) is not str:
            raise ProtocolError("desc:tag: label must be a string")
        return Tagged(fields[0], fields[1])

    def _in_error(self, fields: list[Any]) -> Any:
        # Endo: <desc:error "message">; PR #248 adds an identifier and a data struct.
        if not 1 <= len(fields) <= 3 or type(fields[0]) is not str:
            raise ProtocolError("desc:error: expected a message string (and optional fields)")
        return RemoteError(fields[0])

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
            return _record(value.label, tuple(self._ungive(f) for f in value.fields))
        if t is list:
            return [self._ungive(v) for v in value]
        if t is dict:
            return {k: self._ungive(v) for k, v in value.items()}
        return value

    def _dec_start_session(self, f: Sequence[Any]) -> StartSession:
        if not f or type(f[0]) is not str:
            raise HandshakeError("op:start-session: the first field must be the version string")
        _arity(OP_START_SESSION, f, 4)
        version, key, location, signature = f
        try:
            public_key = PublicKey.from_descriptor(key)
            sig = parse_signature(signature)
        except SignatureError as exc:
            raise HandshakeError(f"op:start-session: {exc}") from None
        if type(location) is not PeerLocation:
            raise HandshakeError("op:start-session: acceptable-location must be <ocapn-peer>")
        return StartSession(version, public_key, location, sig)

    def _enc_start_session(self, msg: StartSession) -> Record:
        return Record(
            OP_START_SESSION,
            (
                msg.version,
                msg.public_key.descriptor(),
                msg.location.to_record(),
                encode_signature(msg.signature),
            ),
        )

    def _dec_deliver(self, f: Sequence[Any]) -> Deliver:
        _arity(OP_DELIVER, f, 4)
        target, args, answer, resolver = f
        method, args = _method_and_args(args)
        answer = None if answer is False else _position(answer, "op:deliver answer")
        if resolver is False:
            resolver = None
        elif not _is_reference(resolver):
            raise ProtocolError(
                f"op:deliver: resolve-me-desc must be a reference, not {resolver!r}"
            )
        return Deliver(_checked_target(target, self.engine), method, args, answer, resolver)

    def _dec_deliver_only(self, f: Sequence[Any]) -> Deliver:
        _arity(OP_DELIVER_ONLY, f, 2)
        method, args = _method_and_args(f[1])
        return Deliver(_checked_target(f[0], self.engine), method, args)

    def _dec_listen(self, f: Sequence[Any]) -> Listen:
        _arity(OP_LISTEN, f, 2, 3)
        if not _is_reference(f[1]):
            raise ProtocolError(f"op:listen: listen-desc must be a reference, not {f[1]!r}")
        wants_partial = f[2] if len(f) == 3 else False
        if type(wants_partial) is not bool:
            raise ProtocolError("op:listen: wants-partial must be a boolean")
        return Listen(_checked_target(f[0], self.engine), f[1], wants_partial)

    def _dec_get(self, f: Sequence[Any]) -> Get:
        _arity(OP_GET, f, 3)
        if type(f[1]) is not str:
            raise ProtocolError("op:get: field name must be a string")
        target = _checked_target(f[0], self.engine)
        return Get(target, "get", f[1], _position(f[2], "op:get answer"))

    def _dec_index(self, f: Sequence[Any]) -> Get:
        _arity(OP_INDEX, f, 3)
        return Get(_checked_target(f[0], self.engine), "index", _position(f[1], "op:index"),
                   _position(f[2], "op:index answer"))

    def _dec_untag(self, f: Sequence[Any]) -> Get:
        _arity(OP_UNTAG, f, 3)
        if type(f[1]) is not str:
            raise ProtocolError("op:untag: tag must be a string")
        target = _checked_target(f[0], self.engine)
        return Get(target, "untag", f[1], _position(f[2], "op:untag answer"))

    def _dec_gc_exports(self, f: Sequence[Any]) -> GcExports:
        _arity(OP_GC_EXPORTS, f, 2)
        positions, deltas = f
        if type(positions) is int and type(deltas) is int:  # pre-2025-12 single form
            positions, deltas = [positions], [deltas]
        if type(positions) is not list or type(deltas) is not list:
            raise ProtocolError("gc-exports: expected two lists")
        if len(positions) != len(deltas):
            raise ProtocolError("gc-exports: positions and deltas differ in length")
        for d in deltas:
            if type(d) is not int or d <= 0:
                raise ProtocolError(f"gc-exports: wire delta must be a positive integer: {d!r}")
        return GcExports(
            tuple(_position(p, "gc-exports") for p in positions), tuple(deltas)
        )

    def _dec_gc_answers(self, f: Sequence[Any]) -> GcAnswers:
        _arity(OP_GC_ANSWERS, f, 1)
        positions = f[0]
        if type(positions) is int:  # pre-2025-12 single form
            positions = [positions]
        if type(positions) is not list:
            raise ProtocolError("gc-answers: expected a list")
        return GcAnswers(tuple(_position(p, "gc-answers") for p in positions))

    def _dec_abort(self, f: Sequence[Any]) -> Abort:
        _arity(OP_ABORT, f, 1)
        reason = f[0]
        return Abort(reason if type(reason) is str else repr(reason))


def _method_and_args(args: Any) -> tuple[str | None, tuple[Any, ...]]:
    if type(args) is not list:
        raise ProtocolError(f"op:deliver: args must be a list, not {type(args).__name__}")
    if args and type(args[0]) is Symbol:
        return args[0].name, tuple(args[1:])
    return None, tuple(args)


def _is_reference(value: Any) -> bool:
    return isinstance(value, Promise) or is_remotable(value)


def _checked_target(target: Any, session: Engine) -> Any:
    # The record hook already turned <desc:export N> / <desc:answer N> into our
    # object or answer promise; anything else (data, or the peer's own object
    # written as <desc:import-object>) cannot be a target.
    if not _is_reference(target) or (type(target) is RemoteRef and target.engine is session):
        raise ProtocolError(f"message target must be <desc:export> or <desc:answer>: {target!r}")
    return target


_ENCODERS: Final[dict[type, Callable[[OCapNWire, Any], Record]]] = {
    Deliver: OCapNWire._enc_deliver,
    Listen: OCapNWire._enc_listen,
    Get: OCapNWire._enc_get,
    GcExports: OCapNWire._enc_gc_exports,
    GcAnswers: OCapNWire._enc_gc_answers,
    Abort: OCapNWire._enc_abort,
    StartSession: OCapNWire._enc_start_session,
}

_DECODERS: Final[dict[Symbol, Callable[[OCapNWire, Sequence[Any]], Any]]] = {
    OP_DELIVER: OCapNWire._dec_deliver,
    OP_DELIVER_ONLY: OCapNWire._dec_deliver_only,
    OP_LISTEN: OCapNWire._dec_listen,
    OP_GET: OCapNWire._dec_get,
    OP_INDEX: OCapNWire._dec_index,
    OP_UNTAG: OCapNWire._dec_untag,
    OP_GC_EXPORTS: OCapNWire._dec_gc_exports,
    OP_GC_EXPORT: OCapNWire._dec_gc_exports,
    OP_GC_ANSWERS: OCapNWire._dec_gc_answers,
    OP_GC_ANSWER: OCapNWire._dec_gc_answers,
    OP_ABORT: OCapNWire._dec_abort,
    OP_START_SESSION: OCapNWire._dec_start_session,
}
