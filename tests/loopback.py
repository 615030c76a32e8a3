"""Two sessions wired directly, with no bytes in between: for engine unit tests.

Sending walks the message on the sender's side (references become
:class:`~captp.messages.Desc`), queues it, and delivery walks it again on the
receiver's side (descriptors become references), as a wire dialect would.
Nothing runs until :meth:`Loopback.run` is called.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

from captp._passable import describe_error, error_name, is_remotable, map_leaves, pass_style
from captp._promise import Promise
from captp._vat import ManualVat
from captp.engine import OCAPN_POLICY, Engine, Policy, Positions
from captp.errors import RemoteError
from captp.messages import Abort, Desc, Message

_TARGET_FIELDS = {"target"}


class Loopback:
    def __init__(
        self,
        bootstrap_a: Any = None,
        bootstrap_b: Any = None,
        policy: Policy = OCAPN_POLICY,
        positions: type[Positions] = Positions,
    ) -> None:
        self.vat = ManualVat()
        self.wire: deque[tuple[Engine, Message]] = deque()
        self.log: list[tuple[str, Message]] = []
        self.a = Engine(
            lambda m: self._send(self.a, self.b, m), self.vat, bootstrap=bootstrap_a,
            policy=policy, positions=positions(), name="a",
        )
        self.b = Engine(
            lambda m: self._send(self.b, self.a, m), self.vat, bootstrap=bootstrap_b,
            policy=policy, positions=positions(), name="b",
        )

    def _send(self, src: Engine, dst: Engine, msg: Message) -> None:
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(msg):
            value = getattr(msg, f.name)
            if f.name in _TARGET_FIELDS:
                fields[f.name] = src.describe_target(value)
            else:
                fields[f.name] = _out(src, value)
        wire_msg = type(msg)(**fields)
        self.log.append((src.name, wire_msg))
        self.wire.append((dst, wire_msg))

    def deliver_one(self) -> None:
        dst, wire_msg = self.wire.popleft()
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(wire_msg):
            value = getattr(wire_msg, f.name)
            if f.name in _TARGET_FIELDS:
                fields[f.name] = _target_in(dst, value)
            else:
                fields[f.name] = _in(dst, value)
        dst.receive(type(wire_msg)(**fields))

    def run(self, limit: int = 1_000_000) -> None:
        """Deliver messages and run turns until both are exhausted."""
        with self.vat:
            n = 0
            while self.wire or self.vat.turns or self.vat.later:
                n += 1
                if n > limit:
                    raise RuntimeError("runaway")
                if self.wire:
                    self.deliver_one()
                else:
                    self.vat.run()

    def sent(self, name: str) -> list[Message]:
        return [m for who, m in self.log if who == name]


def _out(src: Engine, value: Any) -> Any:
    def leaf(value: Any) -> Any:
        if isinstance(value, BaseException):
            return RemoteError(describe_error(value)) if error_name(value) else value
        if isinstance(value, Promise) or is_remotable(value):
            return src.describe(value)
        pass_style(value)  # raises PassStyleError, as a real codec would
        return value

    return map_leaves(value, leaf)


def _in(dst: Engine, value: Any) -> Any:
    def leaf(value: Any) -> Any:
        if type(value) is not Desc:
            return value
        if value.kind == "import-object":
            return dst.import_object(value.position)
        if value.kind == "import-promise":
            return dst.import_promise(value.position)
        return _target_in(dst, value)

    return map_leaves(value, leaf)


def _target_in(dst: Engine, desc: Desc) -> Any:
    if desc.kind == "export":
        return dst.lookup_export(desc.position)
    if desc.kind == "answer":
        return dst.lookup_answer(desc.position)
    raise AssertionError(f"bad target {desc}")


__all__ = ["Abort", "Loopback"]
