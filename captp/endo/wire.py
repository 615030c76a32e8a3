"""The Endo CapTP wire: engine messages <-> the seven ``CTP_*`` JSON messages.

Each message is written with exactly the key order ``@endo/captp`` 4.5 uses
(``spec/endo-captp.md`` section 2), its CapData built by :mod:`.marshal`, and
framed as a netstring (byte streams) or sent as one frame (message
transports).  Mapping to the engine:

=====================  ==================================================
engine                 wire
=====================  ==================================================
``Deliver``            ``CTP_CALL`` with method ``[prop, args]`` (``[null,
                       args]`` applies a far function)
``Get``                ``CTP_CALL`` with method ``[prop]``
``BootstrapQuestion``  ``CTP_BOOTSTRAP``
``Return``             ``CTP_RETURN`` (``result`` / ``exception``)
``Resolve``            ``CTP_RESOLVE`` (``res`` / ``rej``; no ``epoch``)
``GcExports``          one ``CTP_DROP`` per position (``epoch`` last)
``GcAnswers``          nothing is sent (JS never frees answers); a received
                       ``CTP_DROP`` of a ``q-N`` frees our answer
``Abort``              ``CTP_DISCONNECT``, echoed back when the peer sends it
=====================  ==================================================

Positions are slot strings (see :class:`EndoPositions`): ours are ``o+N`` /
``p+N`` / ``q-N``; the peer's exports are kept under the names we write them
with (``o-N`` / ``p-N``).  A slot received as ``o+3`` is our import ``o-3``;
``o-5`` is our export ``o+5``.

The wire also guards against the JS peer's traps (section 11 of the spec):
it refuses to pipeline on a pending bootstrap question (JS drops such a call
silently), never writes a question id in ``slots`` (the engine exports a
fresh promise instead), and answers a call that names an export we no longer
have with an error instead of ending the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal

from captp._far import interface_name
from captp._passable import Symbol, null
from captp._promise import broken
from captp._refs import RemoteRef
from captp.endo import _json
from captp.endo.framing import DEFAULT_MAX_FRAME_SIZE, NetstringDecoder
from captp.endo.marshal import BodyFormat, Marshal, UnknownReference
from captp.engine import Engine, Positions
from captp.errors import CapTPError, DecodeError, EncodeError, ProtocolError
from captp.messages import (
    Abort,
    BootstrapQuestion,
    Deliver,
    Desc,
    GcAnswers,
    GcExports,
    Get,
    Listen,
    Message,
    Resolve,
    Return,
)

__all__ = ["EndoFraming", "EndoPositions", "EndoWire", "reverse_slot"]

log = logging.getLogger("captp.endo")

EndoFraming = Literal["netstring", "message"]
Trace = Callable[[str, str], None]

_quote: Final = _json.quote
_NO_SLOTS: Final[list[str]] = []  # never changed


def reverse_slot(slot: str) -> str:
    """The same slot in the other side's namespace: ``o+3`` <-> ``o-3``."""
    return f"{slot[0]}{'-' if slot[1] == '+' else '+'}{slot[2:]}"


class EndoPositions(Positions):
    """Slot names as ``@endo/captp`` allocates them.

    Objects ``o+1, o+2, ...`` and promises ``p+1, ...`` on separate counters;
    questions ``q-1, q-2, ...``.  Every counter starts at 1 and never reuses
    a number.
    """

    def __init__(self) -> None:
        self._objects = 0
        self._promises = 0
        self._question_count = 0

    def next_export(self, is_promise: bool) -> str:
        """``p+N`` for a promise, ``o+N`` for anything else."""
        if is_promise:
            self._promises += 1
            return f"p+{self._promises}"
        self._objects += 1
        return f"o+{self._objects}"

    def next_question(self) -> str:
        """``q-N``: questions are written with ``-`` even by the side that asks."""
        self._question_count += 1
        return f"q-{self._question_count}"


class EndoWire:
    """Engine messages <-> ``CTP_*`` messages for one session.

    ``framing``: ``"netstring"`` on byte streams (TCP, Unix sockets, as the
    daemon does), ``"message"`` when the transport keeps message boundaries.
    ``body_format``: the CapData format to write (JS writes ``"capdata"``;
    both are always read).  ``our_id`` names this side in error ids
    (``error:captp:<our_id>#20001``); default: the session's name.
    The wire does no I/O: :meth:`encode` returns the frames to write (a
    list when one engine message makes several ``CTP_DROP`` frames on a
    message transport), and the echo of a received ``CTP_DISCONNECT`` is
    queued in the session's outbox.  ``trace(direction,
    json_text)`` sees every message sent (``"send"``) and received
    (``"recv"``).
    """

    def __init__(
        self,
        session: Engine,
        *,
        framing: EndoFraming = "netstring",
        body_format: BodyFormat = "capdata",
        epoch: int = 0,
        our_id: str | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        trace: Trace | None = None,
    ) -> None:
        if framing not in ("netstring", "message"):
            raise ValueError(f"unknown framing {framing!r}")
        if type(epoch) is not int:
            raise TypeError("epoch must be an int")
        self.engine = session
        self.framing: EndoFraming = framing
        self.marshal = Marshal(
            self._slot_for_value,
            self._value_for_slot,
            marshal_name=f"captp:{our_id if our_id is not None else session.name}",
            body_format=body_format,
        )
        self.trace = trace
        self._epoch = str(epoch)
        # The constant heads of the messages sent most.
        self._call_head = '{"type":"CTP_CALL","epoch":' + self._epoch + ',"questionID":'
        self._return_head = '{"type":"CTP_RETURN","epoch":' + self._epoch + ',"answerID":'
        self._netstring = framing == "netstring"
        self._max_frame_size = max_frame_size
        self._frames = NetstringDecoder(max_frame_size) if self._netstring else None
        self._bootstrap_questions: set[str] = set()
        self._encoders: dict[type, Callable[[Any], str | list[str]]] = {
            Deliver: self._enc_deliver,
            Return: self._enc_return,
            Resolve: self._enc_resolve,
            GcExports: self._enc_gc_exports,
            Get: self._enc_get,
            BootstrapQuestion: self._enc_bootstrap,
            Abort: self._enc_abort,
            GcAnswers: self._enc_nothing,
            Listen: self._enc_listen,
        }
        self._decoders: dict[str, Callable[[dict[str, Any]], Message | None]] = {
            "CTP_CALL": self._dec_call,
            "CTP_RETURN": self._dec_return,
            "CTP_RESOLVE": self._dec_resolve,
            "CTP_DROP": self._dec_drop,
            "CTP_BOOTSTRAP": self._dec_bootstrap,
            "CTP_DISCONNECT": self._dec_disconnect,
            "CTP_TRAP_ITERATE": self._dec_trap_iterate,
        }

    def release(self) -> None:
        """The session has ended: drop the dispatch tables and the marshal's hooks.

        They are bound methods of this wire, so they tie it into cycles; without
        them a closed connection is freed as soon as nobody holds it.
        """
        self._encoders = {}
        self._decoders = {}
        self.marshal.release()

    # == encoding ====================================================================

    @property
    def message_framing(self) -> bool:
        """True when each frame goes out in a send of its own (a message transport)."""
        return not self._netstring

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held until the rest arrives."""
        return self._frames.buffered if self._frames is not None else 0

    def encode(self, message: Message) -> bytes | list[bytes]:
        """The framed bytes of ``message`` (empty when nothing is to be sent).

        On a message transport, a message that makes several frames gives a
        list of them (one send each).
        """
        encoder = self._encoders.get(type(message))
        if encoder is None:
            raise EncodeError(f"no Endo CapTP encoding for {type(message).__name__}")
        texts = encoder(message)
        if type(texts) is str:
            return self._frame(texts)
        if not texts:
            return b""
        if self._netstring:
            return b"".join(self._frame(t) for t in texts)
        return [self._frame(t) for t in texts]  # a message transport: one frame each

    def to_json(self, message: Message) -> list[str]:
        """The JSON texts (usually one) for ``message``, unframed; for tests and tools."""
        encoder = self._encoders.get(type(message))
        if encoder is None:
            raise EncodeError(f"no Endo CapTP encoding for {type(message).__name__}")
        texts = encoder(message)
        return [texts] if type(texts) is str else list(texts)

    def _frame(self, text: str) -> bytes:
        if self.trace is not None:
            self.trace("send", text)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a peer-chosen id with a lone surrogate
            data = _json.escape_surrogates(text).encode("utf-8")
        return b"%d:%b," % (len(data), data) if self._netstring else data

    def _capdata(self, value: Any) -> str:
        body, slots = self.marshal.encode(value)
        if not slots:
            return f'{{"body":{_quote(body)},"slots":[]}}'
        return f'{{"body":{_quote(body)},"slots":[{",".join(map(_quote, slots))}]}}'

    def _target(self, target: Any) -> str:
        desc = self.engine.describe_target(target)
        position: str = desc.position  # type: ignore[assignment]
        if desc.kind == "answer" and position in self._bootstrap_questions:
            # G1: JS records the bootstrap answer a microtask late and drops,
            # without a reply, a call that arrives before that.
            raise EncodeError(
                "cannot pipeline on the pending Endo bootstrap question: @endo/captp "
                "drops such a call without answering; await the bootstrap first"
            )
        return position

    def _enc_deliver(self, m: Deliver) -> str:
        target = self._target(m.target)
        method = self._capdata((null if m.method is None else m.method, m.args))
        answer = _quote(m.answer)  # type: ignore[arg-type]
        return f'{self._call_head}{answer},"target":{_quote(target)},"method":{method}}}'

    def _enc_get(self, m: Get) -> str:
        if m.kind == "untag":
            raise EncodeError("the Endo CapTP dialect has no untag operation")
        target = self._target(m.target)
        prop = m.key if m.kind == "get" else str(m.key)  # JS property keys are strings
        return (
            '{"type":"CTP_CALL","epoch":' + self._epoch
            + ',"questionID":' + _quote(m.answer)  # type: ignore[arg-type]
            + ',"target":' + _quote(target)
            + ',"method":' + self._capdata((prop,)) + "}"
        )

    def _enc_bootstrap(self, m: BootstrapQuestion) -> str:
        self._bootstrap_questions.add(m.answer)  # type: ignore[arg-type]
        return (
            '{"type":"CTP_BOOTSTRAP","epoch":' + self._epoch
            + ',"questionID":' + _quote(m.answer) + "}"  # type: ignore[arg-type]
        )

    def _enc_return(self, m: Return) -> str:
        answer = _quote(m.answer)  # type: ignore[arg-type]
        outcome = ',"result":' if m.ok else ',"exception":'
        return f"{self._return_head}{answer}{outcome}{self._capdata(m.value)}}}"

    def _enc_resolve(self, m: Resolve) -> str:
        # promiseID is the importer's name for the promise: our p+2 is its p-2.
        return (
            '{"type":"CTP_RESOLVE","promiseID":' + _quote(reverse_slot(m.position))  # type: ignore[arg-type]
            + (',"res":' if m.ok else ',"rej":') + self._capdata(m.value) + "}"
        )

    def _enc_gc_exports(self, m: GcExports) -> list[str]:
        # The slotID is our (the importer's) name for the peer's export.
        return [
            '{"type":"CTP_DROP","slotID":' + _quote(position)  # type: ignore[arg-type]
            + ',"decRefs":' + str(delta) + ',"epoch":' + self._epoch + "}"
            for position, delta in zip(m.positions, m.deltas, strict=True)
        ]

    def _enc_abort(self, m: Abort) -> str:
        # JS puts the abort reason through plain JSON.stringify (an Error
        # becomes {}); we send an object with a message a JS catch can read.
        reason = _json.stringify({"message": m.reason})
        return '{"type":"CTP_DISCONNECT","epoch":' + self._epoch + ',"reason":' + reason + "}"

    def _enc_nothing(self, m: Message) -> list[str]:
        return []

    def _enc_listen(self, m: Listen) -> str:
        raise EncodeError("the Endo CapTP dialect reports promise settlement unasked (no listen)")

    # -- references -------------------------------------------------------------------

    def _slot_for_value(self, value: Any) -> tuple[str, str | None]:
        desc = self.engine.describe(value)
        if type(desc) is not Desc:
            raise EncodeError(f"{value!r} cannot be sent in the Endo CapTP dialect")
        kind = desc.kind
        position: str = desc.position  # type: ignore[assignment]
        if kind == "import-object":
            return position, _iface(value)
        if kind == "import-promise":
            return position, None
        if kind == "export":  # the peer's own object, under the name we import it as
            if type(value) is RemoteRef:
                return position, value.iface
            return position, None
        # Never reached with ENDO_POLICY (questions go out as fresh promises):
        # JS would reverse q-N to q+N and drop the message as "Unknown export".
        raise EncodeError(f"question {position} cannot be written in slots")

    def _value_for_slot(self, slot: str, iface: str | None) -> Any:
        kind = slot[0]
        if slot[1] == "+":  # the sender's export: our import, named with '-'
            if kind == "o" or kind == "t":
                return self.engine.import_object(f"{kind}-{slot[2:]}", iface)
            if kind == "p":
                return self.engine.import_promise(f"p-{slot[2:]}")
        elif kind == "o" or kind == "p":  # our own export, named with '-' by the sender
            return self._lookup_export(f"{kind}+{slot[2:]}")
        elif kind == "q":
            raise UnknownReference(
                f"slot {slot!r} names a question; only objects and promises travel in slots"
            )
        raise DecodeError(f"unknown slot kind {slot!r}")

    def _lookup_export(self, position: str) -> Any:
        try:
            return self.engine.lookup_export(position)
        except ProtocolError:
            raise UnknownReference(
                f"no export {position} here (never exported, or already freed after "
                "the peer dropped it)"
            ) from None

    def _target_in(self, target: str) -> Any:
        if len(target) > 2 and target[0] in "opt":
            sign = target[1]
            if sign == "-":
                return self._lookup_export(f"{target[0]}+{target[2:]}")
            if sign == "+":
                raise UnknownReference(f"target {target!r} is the sender's own export")
        try:
            return self.engine.lookup_answer(target)
        except ProtocolError:
            raise UnknownReference(f"no answer {target!r} here") from None

    # == decoding ====================================================================

    def feed(self, data: bytes) -> Iterator[Message]:
        """The messages in ``data``, decoded one at a time as they are consumed.

        Decoding is lazy on purpose: a message may target an answer that the
        previous message in the same read creates (pipelining), so each
        message must be handled before the next is decoded.
        """
        if self._frames is not None:
            texts = self._frames.feed(data)
        else:
            try:
                texts = [str(data, "utf-8")]
            except UnicodeDecodeError as exc:
                raise DecodeError(f"message is not valid UTF-8: {exc}") from None
        decode = self.decode_json
        for text in texts:
            message = decode(text)
            if message is not None:
                yield message
            else:
                self.engine.end_decoding()

    def decode_json(self, text: str) -> Message | None:
        """The engine message for one ``CTP_*`` JSON text (``None``: nothing to do)."""
        if self.trace is not None:
            self.trace("recv", text)
        self.engine.begin_decoding()
        try:
            obj = _json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"message is not JSON: {exc}") from None
        if type(obj) is not dict:
            raise DecodeError(f"message must be a JSON object, not {type(obj).__name__}")
        kind = obj.get("type")
        if kind == "CTP_CALL":  # most messages are calls
            return self._dec_call(obj)
        decoder = self._decoders.get(kind) if type(kind) is str else None
        if decoder is None:
            # @endo/captp ignores unknown types too (onReject, no reply); a
            # newer peer may send types we do not know yet.
            log.warning("%s: ignoring unknown message type %r", self.engine.name, kind)
            return None
        return decoder(obj)

    def _capdata_in(self, data: Any, what: str) -> Any:
        if type(data) is not dict:
            raise DecodeError(f"{what} must be a CapData object, not {data!r}")
        slots = data.get("slots", _NO_SLOTS)
        if type(slots) is not list or (slots and any(type(s) is not str for s in slots)):
            raise DecodeError(f"{what}.slots must be a list of strings")
        body = data.get("body")
        if type(body) is not str:
            raise DecodeError(f"{what}.body must be a string, not {body!r}")
        return self.marshal.decode(body, slots)

    def _dec_call(self, obj: dict[str, Any]) -> Message:
        question = obj.get("questionID")
        if type(question) is not str:
            raise ProtocolError(f"CTP_CALL.questionID must be a string, not {question!r}")
        target = obj.get("target")
        if type(target) is not str:
            raise ProtocolError(f"CTP_CALL.target must be a string, not {target!r}")
        if obj.get("trap"):
            refusal = CapTPError("Trap() needs a guest and host sharing memory; not over a network")
            return _refused(question, refusal)
        try:
            method = self._capdata_in(obj.get("method"), "CTP_CALL.method")
            receiver = self._target_in(target)
        except UnknownReference as exc:
            # JS drops such a call silently and the caller hangs; we answer.
            return _refused(question, exc)
        if type(method) is list and len(method) == 2:  # [prop, args]: a method call
            prop, args = method
            if type(args) is not list:
                raise ProtocolError(f"CTP_CALL arguments must be an array, not {args!r}")
            if type(prop) is str:
                return Deliver(receiver, prop, tuple(args), question)
            if prop is null:
                return Deliver(receiver, None, tuple(args), question)
            if type(prop) is Symbol:  # [Symbol.asyncIterator]() calls "@@asyncIterator"
                return Deliver(receiver, prop.name, tuple(args), question)
            raise ProtocolError(f"CTP_CALL method name must be a string or null, not {prop!r}")
        if type(method) is list and len(method) == 1:  # [prop]: a property get
            prop = method[0]
            if type(prop) is not str:
                raise ProtocolError(f"CTP_CALL property get needs a string key, not {prop!r}")
            return Get(receiver, "get", prop, question)
        raise ProtocolError(f"CTP_CALL.method must be [prop] or [prop, args], not {method!r}")

    def _dec_return(self, obj: dict[str, Any]) -> Message:
        answer = _string(obj, "answerID", "CTP_RETURN")
        self._bootstrap_questions.discard(answer)
        return Return(answer, *self._outcome(obj, "result", "exception", "CTP_RETURN"))

    def _dec_resolve(self, obj: dict[str, Any]) -> Message:
        promise = _string(obj, "promiseID", "CTP_RESOLVE")  # already our name for it
        return Resolve(promise, *self._outcome(obj, "res", "rej", "CTP_RESOLVE"))

    def _outcome(
        self, obj: dict[str, Any], fulfilled: str, rejected: str, what: str
    ) -> tuple[bool, Any]:
        """Whether a settlement fulfils, and with what (naming a reference we lack breaks it)."""
        ok = rejected not in obj
        try:
            return ok, self._capdata_in(obj.get(fulfilled if ok else rejected), what)
        except UnknownReference as exc:
            return False, exc

    def _dec_drop(self, obj: dict[str, Any]) -> Message | None:
        slot = _string(obj, "slotID", "CTP_DROP")
        dec_refs = obj.get("decRefs", 0)
        if type(dec_refs) is float and dec_refs.is_integer():
            dec_refs = int(dec_refs)
        if type(dec_refs) is not int or dec_refs < 0:
            raise ProtocolError(f"CTP_DROP.decRefs must be a non-negative int, not {dec_refs!r}")
        if len(slot) < 3 or slot[1] != "-":
            raise ProtocolError(f"CTP_DROP of {slot!r}: only our exports (x-N) can be dropped")
        if slot[0] == "q":
            # The peer let go of its question: it can no longer pipeline on it.
            return GcAnswers((slot,))
        if dec_refs == 0:
            return None
        # decRefs may be larger than our count (JS counts message targets and
        # questions under the same keys); the engine frees the export then.
        return GcExports((reverse_slot(slot),), (dec_refs,))

    def _dec_bootstrap(self, obj: dict[str, Any]) -> Message:
        return BootstrapQuestion(_string(obj, "questionID", "CTP_BOOTSTRAP"))

    def _dec_disconnect(self, obj: dict[str, Any]) -> Message:
        # JS echoes the disconnect back to its sender; so do we.
        self.engine.write_raw(self._frame(_json.stringify(obj)))
        return Abort(_disconnect_reason(obj))

    def _dec_trap_iterate(self, obj: dict[str, Any]) -> None:
        log.warning("%s: ignoring CTP_TRAP_ITERATE (Trap() is not supported)", self.engine.name)
        return None


def _string(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if type(value) is not str:
        raise ProtocolError(f"{what}.{key} must be a string, not {value!r}")
    return value


def _refused(question: str, error: BaseException) -> Deliver:
    # A call whose target is a broken promise is answered with its reason.
    return Deliver(broken(error), None, (), question)


def _iface(value: Any) -> str:
    name = interface_name(value)
    if name == "Remotable" or name.startswith(("Alleged: ", "DebugName: ")):
        return name
    return f"Alleged: {name}"


def _disconnect_reason(obj: dict[str, Any]) -> str:
    if "reason" not in obj:
        return "peer disconnected"
    reason = obj["reason"]
    if type(reason) is str:
        return reason
    if type(reason) is dict and type(reason.get("message")) is str:
        return str(reason["message"])
    return f"peer disconnected (reason: {_json.stringify(reason)})"
