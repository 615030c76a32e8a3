"""The wire against the 153 frames a live Node peer produced (``endo-captp-transcript.txt``).

* Every frame decodes: a Python session standing in for the receiver, with
  the exports, answers and questions the frame names, turns it into the
  right engine message and handles it.
* Byte-exactness: for every frame Python can produce, a Python session
  standing in for the sender, holding the same references, writes exactly
  the frame's bytes (netstring length included).  The frames it cannot
  produce are listed below with the reason.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import pytest
from endo_transcript import Frame, load

from captp import RemoteError, RemoteRef, Symbol, Tagged, null, same_value
from captp._far import FarFunction
from captp._promise import Promise, make_promise
from captp._vat import ManualVat
from captp.endo import EndoPositions, EndoWire, Marshal, UnknownReference, reverse_slot
from captp.engine import ENDO_POLICY, Engine
from captp.errors import EncodeError
from captp.messages import (
    Abort,
    BootstrapQuestion,
    Deliver,
    GcAnswers,
    GcExports,
    Get,
    Message,
    Resolve,
    Return,
)

FRAMES = load().frames

# (part, section, direction, index) -> why Python does not write that frame.
NOT_PRODUCED = {
    ("A", "9", "C->S", 0): "JS abort(Error) sends reason {}; Python sends {\"message\": ...}",
    ("A", "9", "S->C", 0): "the echo of a {} reason: see test_disconnect_echo_is_byte_exact",
    ("B", "R1", "C->S", 1): "pipelines on the pending bootstrap question: refused (G1)",
    ("B", "R3", "C->S", 0): "hand-written smallcaps with unsorted record keys",
    ("B", "R5", "C->S", 0): "a question id in slots: refused",
    ("B", "R8", "C->S", 0): "a slot the body never mentions",
    ("B", "R10", "C->S", 0): "hand-written smallcaps error with keys out of marshal's order",
    ("B", "R11", "C->S", 1): "a message without epoch",
    ("B", "R13", "C->S", 0): "an unknown message type",
}


def frame_id(frame: Frame) -> tuple[str, str, str, int]:
    return (frame.part, frame.section, frame.direction, frame.index)


class ScriptedPositions(EndoPositions):
    """Endo positions, except the ones a test asks for next."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: deque[str] = deque()
        self.questions: deque[str] = deque()

    def next_export(self, is_promise: bool) -> str:
        return self.exports.popleft() if self.exports else super().next_export(is_promise)

    def next_question(self) -> str:
        return self.questions.popleft() if self.questions else super().next_question()


class Side:
    """A Python session standing in for one side of the transcript."""

    def __init__(self, name: str, *, epoch: int = 0, smallcaps: bool = False) -> None:
        self.sent: list[Message] = []
        self.vat = ManualVat()
        self.positions = ScriptedPositions()
        self.engine = Engine(
            self.sent.append, self.vat, policy=ENDO_POLICY, positions=self.positions, name=name
        )
        self.wire = EndoWire(
            self.engine, epoch=epoch, body_format="smallcaps" if smallcaps else "capdata",
        )
        self.values: dict[str, Any] = {}

    def export(self, slot: str, iface: str | None = None) -> Any:
        """Our object (``o+N``) or promise (``p+N``) at exactly ``slot``."""
        if slot not in self.values:
            value: Any
            if slot[0] == "p":
                value = make_promise()[0]
            else:
                name = iface or "Alleged: Stub"
                value = FarFunction(lambda *args: None, name)
            self.positions.exports.append(slot)
            assert self.engine.describe(value).position == slot
            self.values[slot] = value
        return self.values[slot]

    def value_for_slot(self, slot: str, iface: str | None) -> Any:
        """A slot in this side's own namespace, as this side holds it."""
        if slot[1] == "+":
            return self.export(slot, iface)
        if slot not in self.values:
            self.values[slot] = (
                self.engine.import_promise(slot) if slot[0] == "p"
                else self.engine.import_object(slot, iface)
            )
        return self.values[slot]

    def question(self, question: str) -> Promise:
        """A pending question of ours at ``question``."""
        self.positions.questions.append(question)
        with self.vat:
            promise = self.engine.bootstrap()
        assert isinstance(promise, Promise) and not promise.done()
        return promise

    def answer(self, answer: str) -> None:
        """An answer we hold for the peer's question ``answer``."""
        with self.vat:
            self.engine.receive(BootstrapQuestion(answer))

    def decode_capdata(self, capdata: dict[str, Any]) -> Any:
        """The value of a CapData the frame's *sender* (this side) wrote."""
        return Marshal(value_for_slot=self.value_for_slot).decode(
            capdata["body"], capdata["slots"]
        )


def sender_message(side: Side, m: dict[str, Any]) -> Message:
    """The engine message the sender's session would hand its wire for frame ``m``."""
    kind = m["type"]
    if kind == "CTP_BOOTSTRAP":
        return BootstrapQuestion(m["questionID"])
    if kind == "CTP_CALL":
        target_slot = m["target"]
        target = (
            side.question(target_slot) if target_slot[0] == "q"
            else side.value_for_slot(target_slot, None)
        )
        method = side.decode_capdata(m["method"])
        if len(method) == 1:
            return Get(target, "get", method[0], m["questionID"])
        prop, args = method
        return Deliver(target, None if prop is null else prop, tuple(args), m["questionID"])
    if kind == "CTP_RETURN":
        ok = "result" in m
        return Return(m["answerID"], ok, side.decode_capdata(m["result" if ok else "exception"]))
    if kind == "CTP_RESOLVE":
        ok = "res" in m
        value = side.decode_capdata(m["res" if ok else "rej"])
        return Resolve(reverse_slot(m["promiseID"]), ok, value)
    if kind == "CTP_DROP":
        return GcExports((m["slotID"],), (m["decRefs"],))
    if kind == "CTP_DISCONNECT":
        return Abort(m["reason"]["message"])
    raise AssertionError(f"unexpected {kind}")


def first_error_number(frame: Frame) -> int | None:
    text = frame.text
    at = text.find("errorId\\\":\\\"error:captp:")
    if at < 0:
        return None
    hash_at = text.index("#", at)
    return int(text[hash_at + 1 : text.index("\\", hash_at)])


SENDER_NAMES = {("A", "C"): "client", ("A", "S"): "server-conn1", ("B", "S"): "server-conn1",
                ("B", "C"): "raw", ("C", "S"): "server-conn1", ("C", "C"): "client"}


def test_transcript_has_153_wellformed_frames() -> None:
    assert len(FRAMES) == 153
    for frame in FRAMES:
        length, _, rest = frame.raw.partition(b":")
        assert int(length) == len(rest) - 1 and rest.endswith(b","), frame
        assert isinstance(frame.message["type"], str)


PRODUCED = [f for f in FRAMES if frame_id(f) not in NOT_PRODUCED]


@pytest.mark.parametrize("frame", PRODUCED, ids=str)
def test_python_writes_the_frame_byte_for_byte(frame: Frame) -> None:
    m = frame.message
    smallcaps = any(
        isinstance(v, dict) and str(v.get("body", "")).startswith("#") for v in m.values()
    )
    side = Side(SENDER_NAMES[frame.part, frame.sender], epoch=m.get("epoch", 0),
                smallcaps=smallcaps)
    error_number = first_error_number(frame)
    if error_number is not None:
        side.wire.marshal._error_id = error_number - 1
    message = sender_message(side, m)
    assert side.wire.encode(message) == frame.raw


def test_python_writes_all_but_the_listed_frames() -> None:
    assert len(PRODUCED) == 144  # plus the {} echo of section 9: 145 of 153
    assert {frame_id(f) for f in FRAMES} >= set(NOT_PRODUCED)


def test_refused_frames_are_refused() -> None:
    # R1: a call pipelined on the pending bootstrap question.
    side = Side("raw")
    with side.vat:
        boot = side.engine.bootstrap()
    side.wire.encode(side.sent[-1])  # the CTP_BOOTSTRAP marks q-1 as the bootstrap question
    with pytest.raises(EncodeError, match="pipeline on the pending Endo bootstrap"):
        side.wire.encode(Deliver(boot, "ping", (), "q-2"))
    # R5: a question passed in an argument goes out as a fresh promise instead.
    side = Side("raw")
    question = side.question("q-5")
    target = side.engine.import_object("o-1")
    text = side.wire.to_json(Deliver(target, "echo", (question,), "q-7"))[0]
    assert '"slots":["p+1"]' in text


def test_disconnect_echo_is_byte_exact() -> None:
    for part, section in (("A", "9"), ("B", "R15")):
        sent, echoed = (f for f in FRAMES if (f.part, f.section) == (part, section))
        side = Side("server-conn1")
        (message,) = side.wire.feed(sent.raw)
        assert isinstance(message, Abort)
        assert side.engine.data_to_send() == [echoed.raw]


# -- decoding every frame -------------------------------------------------------------


def prepare_receiver(side: Side, m: dict[str, Any]) -> None:
    """Give the receiving side whatever frame ``m`` refers to."""
    kind = m["type"]
    for key in ("method", "result", "exception", "res", "rej"):
        capdata = m.get(key)
        if isinstance(capdata, dict):
            for slot in capdata["slots"]:
                if len(slot) > 2 and slot[1] == "-" and slot[0] in "op":
                    side.export(reverse_slot(slot))  # our export, named by the sender
    if kind == "CTP_CALL":
        target = m["target"]
        if target[0] == "q":
            side.answer(target)
        elif target != "o-99":  # R6: a target that was never exported
            side.export(reverse_slot(target))
    elif kind == "CTP_RETURN":
        side.question(m["answerID"])
    elif kind == "CTP_RESOLVE":
        side.value_for_slot(m["promiseID"], None)


RECEIVER_NAMES = {"C": "client", "S": "server-conn1"}


@pytest.mark.parametrize("frame", FRAMES, ids=str)
def test_every_frame_decodes(frame: Frame) -> None:
    m = frame.message
    side = Side(RECEIVER_NAMES["S" if frame.sender == "C" else "C"])
    prepare_receiver(side, m)
    message = side.wire.decode_json(frame.text)
    expected_type = {
        "CTP_BOOTSTRAP": BootstrapQuestion, "CTP_RETURN": Return, "CTP_RESOLVE": Resolve,
        "CTP_DISCONNECT": Abort,
    }.get(m["type"])
    if m["type"] == "CTP_CALL":
        assert isinstance(message, Deliver | Get)
        assert message.answer == m["questionID"]
    elif m["type"] == "CTP_DROP":
        kind = GcAnswers if m["slotID"][0] == "q" else GcExports
        assert isinstance(message, kind)
    elif m["type"] == "CTP_BOGUS":
        assert message is None
        return
    else:
        assert expected_type is not None and isinstance(message, expected_type)
    assert message is not None
    with side.vat:
        side.engine.receive(message)
    side.vat.run()


def decoded(section: str, direction: str, index: int = 0) -> Message | None:
    key = (section, direction, index)
    (frame,) = (f for f in FRAMES if (f.section, f.direction, f.index) == key)
    side = Side(RECEIVER_NAMES["S" if frame.sender == "C" else "C"])
    prepare_receiver(side, frame.message)
    return side.wire.decode_json(frame.text)


def test_decoded_values() -> None:
    call = decoded("2b", "C->S")
    assert isinstance(call, Deliver) and call.method == "echo"
    assert same_value(call.args, ({"a": "x", "m": [True, null], "z": 1.0},))

    call = decoded("7b", "C->S")
    assert isinstance(call, Deliver)
    assert same_value(call.args[0], [1, -1, None, math.nan, 0.0, Symbol("s"), "!x"])

    call = decoded("7c", "C->S")
    assert isinstance(call, Deliver)
    assert same_value(call.args[0], [
        0.1, 1e21, 1e-7, 2.0**53, -1.5e300, 5e-324, 100.0, "h\u00e9llo \u2713 \U0001f600",
        '\x00\x1f"\\/\u2028\t', "\ud800",
    ])

    ret = decoded("7", "S->C")
    assert isinstance(ret, Return) and ret.ok
    assert same_value(ret.value, {
        "@qclass": "hilbert", "arr": [1.0, 1.5, "two", null, True], "big": 12345678901234567890,
        "err": RemoteError("nested error", "RangeError"), "inf": math.inf, "nan": math.nan,
        "negBig": -7, "negZero": 0.0, "ninf": -math.inf, "special": "#hash $dollar &amp !bang",
        "sym": Symbol("foo"), "tagged": Tagged("copySet", ["a", "b"]), "undef": None,
        "wellKnown": Symbol("@@asyncIterator"),
    })

    ret = decoded("5b", "S->C")
    assert isinstance(ret, Return) and not ret.ok and str(ret.value) == "TypeError: bad type"

    call = decoded("3d", "C->S", 1)
    assert isinstance(call, Deliver) and call.method is None and call.args == (1.0, 2.0)
    get = decoded("3c", "C->S", 1)
    assert isinstance(get, Get) and get.key == "foo"

    smallcaps = decoded("R3", "C->S")
    assert isinstance(smallcaps, Deliver)
    assert same_value(smallcaps.args[0], {
        "big": 10, "neg": -3, "u": None, "n": math.nan, "s": Symbol("foo"), "bang": "#x",
        "t": Tagged("copySet", ["a"]),
    })

    call = decoded("4", "C->S")
    assert isinstance(call, Deliver)
    (presence,) = call.args
    assert type(presence) is RemoteRef and presence.iface == "Alleged: ClientObj"

    drop = decoded("8b", "S->C", 2)  # the inflated count is passed on
    assert drop == GcExports(("o+1",), (21,))


def test_calls_the_js_peer_would_drop_are_answered_with_an_error() -> None:
    for section in ("R5", "R6"):  # a q-N slot; an unknown target
        call = decoded(section, "C->S")
        assert isinstance(call, Deliver)
        assert isinstance(call.target, Promise) and call.target.is_broken()
        assert isinstance(call.target.reason(), UnknownReference)
