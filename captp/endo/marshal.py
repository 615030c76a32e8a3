"""Endo's marshal: passable values <-> CapData ``{body, slots}``, byte for byte as JS writes it.

Two body formats exist (``spec/endo-captp.md`` section 6):

* **capdata** (legacy, ``@qclass`` objects): what ``@endo/captp`` sends, so
  what this module writes by default;
* **smallcaps** (body prefixed with ``#``): accepted by ``@endo/captp``;
  this module reads it always and writes it on request.

Value mapping (Python <-> JS), lossless in both directions:

=====================  ==========================================
Python                 JS
=====================  ==========================================
``None``               ``undefined``
:data:`captp.null`     ``null``
``bool``               boolean
``float``              number (``-0.0`` is sent as ``0``, as JS does)
``int``                bigint (JS numbers are doubles: an ``int``
                       is never silently rounded)
``str``                string (lone surrogates travel as JS writes them)
:class:`captp.Symbol`  registered or well-known symbol, by its wire
                       name (``Symbol("@@asyncIterator")`` is
                       ``Symbol.asyncIterator``)
``list`` / ``tuple``   array (decoded as ``list``)
``dict`` (str keys)    copyRecord (keys in UTF-16 code-unit order)
:class:`captp.Tagged`  tagged (``copySet``, ``copyBag``, ...)
exception              error: name and message only (see :func:`error_fields`)
far object, reference  remotable (a slot)
:class:`captp.Promise` promise (a slot)
=====================  ==========================================

``bytes`` and :class:`captp.Record` have no capdata form (marshal 1.10
cannot send byte arrays) and raise :class:`~captp.errors.EncodeError`.

References are turned into slot strings by the ``slot_for_value`` hook and
back by ``value_for_slot``, in the same single pass that converts the data;
the CapTP wire gives hooks bound to its session.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final, Literal

from captp._passable import (
    Null,
    PassStyleError,
    Record,
    Symbol,
    Tagged,
    decode_tagged,
    encode_custom,
    error_message,
    null,
    pass_style,
)
from captp.endo import _json
from captp.errors import CapTPError, DecodeError, EncodeError, RemoteError

__all__ = [
    "JS_ERROR_NAMES",
    "BodyFormat",
    "Marshal",
    "SlotForValue",
    "UnknownReference",
    "ValueForSlot",
    "error_fields",
]

BodyFormat = Literal["capdata", "smallcaps"]

SlotForValue = Callable[[Any], tuple[str, "str | None"]]
"""``hook(value) -> (slot, iface or None)`` for a reference being sent."""

ValueForSlot = Callable[[str, "str | None"], Any]
"""``hook(slot, iface or None) -> value`` for a slot being received."""

QCLASS: Final = "@qclass"

# The constructors a JS receiver knows by name; any other name decodes as Error.
JS_ERROR_NAMES: Final = frozenset(
    {
        "Error",
        "EvalError",
        "RangeError",
        "ReferenceError",
        "SyntaxError",
        "TypeError",
        "URIError",
        "AggregateError",
    }
)

_UNDEFINED: Final = {QCLASS: "undefined"}
_NAN: Final = {QCLASS: "NaN"}
_INF: Final = {QCLASS: "Infinity"}
_NINF: Final = {QCLASS: "-Infinity"}
_BIGINT_DIGITS: Final = re.compile(r"[+-]?[0-9]+")


class UnknownReference(CapTPError):
    """A slot or target names no export or answer here.

    ``@endo/captp`` peers produce it legitimately in one race (an export freed
    by an inflated ``CTP_DROP`` while a copy was in flight).  The wire answers
    the message that carried it with this error instead of ending the session.
    """

    js_error_name: Final = "ReferenceError"


def error_fields(exc: BaseException) -> tuple[str, str]:
    """The ``(name, message)`` a Python exception travels with.

    An error received from a peer keeps its name and message.  A class may
    choose its JS name with a ``js_error_name`` attribute.  Exceptions whose
    type name is a JS constructor name (``TypeError``, ``SyntaxError``) keep
    it, plain ``Exception`` becomes ``Error``; any other type becomes an
    ``Error`` whose message starts with the Python type name
    (``ValueError("bad")`` -> ``Error: ValueError: bad``), since a JS receiver
    turns unknown names into ``Error`` anyway.
    """
    if isinstance(exc, RemoteError):
        return exc.remote_name or "Error", exc.remote_message
    message = error_message(exc)
    explicit = getattr(type(exc), "js_error_name", None)
    if isinstance(explicit, str):
        return explicit, message
    name = type(exc).__name__
    if name in JS_ERROR_NAMES:
        return name, message
    if type(exc) is Exception:
        return "Error", message
    return "Error", f"{name}: {message}" if message else name


def _starts_special(s: str) -> bool:
    # smallcaps: strings starting with '!' .. '-' are escaped or encodings
    return s != "" and "!" <= s[0] <= "-"


class Marshal:
    """Serializes and unserializes passables for one CapTP connection.

    ``marshal_name`` goes into error ids (``error:<name>#20001``; CapTP uses
    ``captp:<ourId>``); the error counter starts after ``error_id_start``, as
    in ``@endo/captp``.  Without hooks, references cannot be sent or received.
    """

    def __init__(
        self,
        slot_for_value: SlotForValue | None = None,
        value_for_slot: ValueForSlot | None = None,
        *,
        marshal_name: str = "captp:python",
        error_id_start: int = 20_000,
        body_format: BodyFormat = "capdata",
    ) -> None:
        if body_format not in ("capdata", "smallcaps"):
            raise ValueError(f"unknown body format {body_format!r}")
        self.slot_for_value = slot_for_value or _no_slot_for_value
        self.value_for_slot = value_for_slot or _no_value_for_slot
        self.marshal_name = marshal_name
        self.body_format: BodyFormat = body_format
        self._error_id = error_id_start

    def release(self) -> None:
        """Drop the slot hooks (the owner is done with this marshal; they may refer back to it)."""
        self.slot_for_value = _no_slot_for_value
        self.value_for_slot = _no_value_for_slot

    # == encoding ======================================================================

    def encode(self, value: Any) -> tuple[str, list[str]]:
        """``(body, slots)`` for ``value`` in this marshal's body format.

        Raises :class:`~captp.errors.EncodeError` (or ``PassStyleError``) for a
        value that cannot be sent; nothing is half-sent then, but references
        met before the failure were already counted by the hook.
        """
        if self.body_format == "smallcaps":
            return self._encode_smallcaps(value)
        if type(value) is str:  # the commonest result; non-ASCII text may need escapes
            body = _json.quote(value)
            if body.isascii():
                return body, []
        return self._encode_capdata(value)

    def next_error_id(self) -> str:
        """A fresh error id (``error:captp:python#20001``, ...)."""
        self._error_id += 1
        return f"error:{self.marshal_name}#{self._error_id}"

    def _encode_capdata(self, root: Any) -> tuple[str, list[str]]:
        # Most bodies are undefined, a string, or lists of strings and numbers
        # (a method name and its arguments): those need no references, no closures.
        t = type(root)
        if t is str:
            return _json.dumps(root), []
        if root is None:
            return _UNDEFINED_BODY, []
        if t is list or t is tuple:
            try:
                plain = _plain_out(root)
            except RecursionError:
                raise EncodeError("value nested too deeply to encode") from None
            if plain is not None:
                return _json.dumps(plain), []
        slots: list[str] = []
        index_of: dict[int, int] = {}  # id(reference) -> slot index, for this message
        slow = False
        slot_for_value = self.slot_for_value

        def enc(v: Any) -> Any:
            nonlocal slow
            t = type(v)
            if t is str or t is bool:
                return v
            if t is float:
                if v - v != 0:  # NaN or an infinity
                    return _NAN if v != v else (_INF if v > 0 else _NINF)
                token = _json.float_token(v)
                if token is None:
                    slow = True
                    return v
                return token
            if t is list or t is tuple:
                return [enc(x) for x in v]
            if t is dict:
                return record(v)
            if t is int:
                return {QCLASS: "bigint", "digits": str(v)}
            if v is None:
                return _UNDEFINED
            if t is Null:
                return None
            if t is Symbol:
                return {QCLASS: "symbol", "name": v.name}
            if t is Tagged:
                return {QCLASS: "tagged", "tag": v.tag, "payload": enc(v.payload)}
            if isinstance(v, BaseException):
                name, message = error_fields(v)
                return {
                    QCLASS: "error",
                    "errorId": self.next_error_id(),
                    "message": message,
                    "name": name,
                }
            custom = encode_custom(v)  # a type registered with register_passable
            if custom is not None:
                return enc(custom)
            return reference(v)

        def record(d: dict[Any, Any]) -> Any:
            keys = _sorted_keys(d)
            if QCLASS in d:  # the Hilbert hotel
                result: dict[str, Any] = {QCLASS: "hilbert", "original": enc(d[QCLASS])}
                rest = {k: d[k] for k in keys if k != QCLASS}
                if rest:
                    result["rest"] = record(rest)
                return result
            return {k: enc(d[k]) for k in keys}

        def reference(v: Any) -> Any:
            index = index_of.get(id(v))
            if index is not None:
                return {QCLASS: "slot", "index": index}
            _check_reference(v)
            slot, iface = slot_for_value(v)
            index = index_of[id(v)] = len(slots)
            slots.append(slot)
            if iface is None:
                return {QCLASS: "slot", "index": index}
            return {QCLASS: "slot", "iface": iface, "index": index}

        try:
            tree = enc(root)
        except RecursionError:
            raise EncodeError("value nested too deeply to encode") from None
        finally:
            enc = record = _spent  # they call themselves: break the cycle, do not wait for gc
        body = _json.stringify(tree) if slow else _json.dumps(tree)
        return body, slots

    def _encode_smallcaps(self, root: Any) -> tuple[str, list[str]]:
        slots: list[str] = []
        index_of: dict[int, int] = {}
        slow = False
        slot_for_value = self.slot_for_value

        def string(s: str) -> str:
            return "!" + s if _starts_special(s) else s

        def enc(v: Any) -> Any:
            nonlocal slow
            t = type(v)
            if t is str:
                return "!" + v if _starts_special(v) else v
            if t is bool:
                return v
            if t is float:
                if v - v != 0:
                    return "#NaN" if v != v else ("#Infinity" if v > 0 else "#-Infinity")
                token = _json.float_token(v)
                if token is None:
                    slow = True
                    return v
                return token
            if t is list or t is tuple:
                return [enc(x) for x in v]
            if t is dict:
                return {string(k): enc(v[k]) for k in _sorted_keys(v)}
            if t is int:
                return str(v) if v < 0 else f"+{v}"
            if v is None:
                return "#undefined"
            if t is Null:
                return None
            if t is Symbol:
                return "%" + v.name
            if t is Tagged:
                return {"#tag": string(v.tag), "payload": enc(v.payload)}
            if isinstance(v, BaseException):
                name, message = error_fields(v)
                return {
                    "#error": string(message),
                    "errorId": string(self.next_error_id()),
                    "name": string(name),
                }
            custom = encode_custom(v)  # a type registered with register_passable
            if custom is not None:
                return enc(custom)
            index = index_of.get(id(v))
            if index is not None:
                return f"{'&' if slots[index][0] == 'p' else '$'}{index}"
            _check_reference(v)
            slot, iface = slot_for_value(v)
            index = index_of[id(v)] = len(slots)
            slots.append(slot)
            prefix = "&" if slot[0] == "p" else "$"
            return f"{prefix}{index}" if iface is None else f"{prefix}{index}.{iface}"

        try:
            tree = enc(root)
        except RecursionError:
            raise EncodeError("value nested too deeply to encode") from None
        finally:
            enc = _spent  # it calls itself: break the cycle, do not wait for gc
        body = _json.stringify(tree) if slow else _json.dumps(tree)
        return "#" + body, slots

    # == decoding ======================================================================

    def decode(self, body: str, slots: list[str]) -> Any:
        """The value in a CapData body (either format).

        Raises :class:`~captp.errors.DecodeError` for a malformed body, and
        lets :class:`UnknownReference` from the hook pass through.
        """
        if type(body) is not str:
            raise DecodeError(f"CapData body must be a string, not {type(body).__name__}")
        if type(slots) is not list:
            raise DecodeError(f"CapData slots must be a list, not {type(slots).__name__}")
        smallcaps = body[:1] == "#"
        try:
            tree = _json.loads(body[1:] if smallcaps else body)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"CapData body is not JSON: {exc}") from None
        try:
            if smallcaps:
                return self._decode_smallcaps(tree, slots)
            t = type(tree)
            if t is list:  # the common case: a method name and plain arguments
                plain = _plain_in(tree)
                if plain is not None:
                    return plain
            elif t is str or t is float or t is bool:
                return tree
            return self._decode_capdata(tree, slots)
        except RecursionError:
            raise DecodeError("CapData body nested too deeply") from None

    def _slot_decoder(self, slots: list[str]) -> Callable[[Any, Any], Any]:
        seen: dict[int, Any] = {}
        value_for_slot = self.value_for_slot

        def slot(index: Any, iface: Any) -> Any:
            if type(index) is not int or not 0 <= index < len(slots):
                raise DecodeError(f"slot index {index!r} out of range for {len(slots)} slots")
            if index in seen:
                return seen[index]
            name = slots[index]
            if type(name) is not str or len(name) < 3 or name[1] not in "+-":
                raise DecodeError(f"malformed slot {name!r}")
            if iface is not None and type(iface) is not str:
                raise DecodeError(f"slot iface must be a string, not {iface!r}")
            value = seen[index] = value_for_slot(name, iface)
            return value

        return slot

    def _decode_capdata(self, tree: Any, slots: list[str]) -> Any:
        slot = self._slot_decoder(slots)

        def dec(v: Any) -> Any:
            t = type(v)
            if t is str or t is float or t is bool:
                return v
            if t is int:
                return float(v)  # every JSON number is a JS number (a double)
            if t is list:
                return [dec(x) for x in v]
            if v is None:
                return null
            qclass = v.get(QCLASS, _MISSING)
            if qclass is _MISSING:
                return {k: dec(x) for k, x in v.items()}
            return special(v, qclass)

        def special(v: dict[str, Any], qclass: Any) -> Any:
            if qclass == "slot":
                if not v.keys() <= {QCLASS, "index", "iface"}:
                    extra = sorted(v.keys() - {QCLASS, "index", "iface"})
                    raise DecodeError(f"unexpected encoded slot properties {extra}")
                return slot(v.get("index"), v.get("iface"))
            if qclass == "undefined":
                return None
            if qclass == "bigint":
                return _bigint(v.get("digits"))
            if qclass == "error":
                return _error(v.get("message"), v.get("name"), v.get("errorId"))
            if qclass == "symbol":
                name = v.get("name")
                if type(name) is not str:
                    raise DecodeError(f"symbol name must be a string, not {name!r}")
                return Symbol(name)
            if qclass == "tagged":
                tag = v.get("tag")
                if type(tag) is not str:
                    raise DecodeError(f"tag must be a string, not {tag!r}")
                return decode_tagged(tag, dec(v.get("payload", _UNDEFINED)))
            if qclass == "NaN":
                return math.nan
            if qclass == "Infinity":
                return math.inf
            if qclass == "-Infinity":
                return -math.inf
            if qclass == "hilbert":
                if "original" not in v:
                    raise DecodeError(f"Hilbert hotel encoding without 'original': {v!r}")
                result = {QCLASS: dec(v["original"])}
                if "rest" in v:
                    rest = v["rest"]
                    if type(rest) is not dict or not rest:
                        raise DecodeError("Hilbert hotel 'rest' must be a non-empty object")
                    decoded = dec(rest)
                    if type(decoded) is not dict or QCLASS in decoded:
                        raise DecodeError("Hilbert hotel 'rest' must not define '@qclass'")
                    result.update(decoded)
                return result
            if qclass == "@@asyncIterator":  # deprecated form of the well-known symbol
                return Symbol("@@asyncIterator")
            if type(qclass) is not str:
                raise DecodeError(f"'@qclass' must be a string, not {qclass!r}")
            if qclass == "ibid":
                raise DecodeError("the capData protocol no longer supports '@qclass' 'ibid'")
            raise DecodeError(f"unrecognized '@qclass' {qclass!r}")

        try:
            return dec(tree)
        finally:
            dec = special = _spent  # they call each other: break the cycle, do not wait for gc

    def _decode_smallcaps(self, tree: Any, slots: list[str]) -> Any:
        slot = self._slot_decoder(slots)

        def string(s: Any) -> Any:
            if type(s) is str and _starts_special(s):
                return dec_string(s)
            return s

        def dec_string(s: str) -> Any:
            c = s[0]
            if c == "!":
                return s[1:]
            if c == "$" or c == "&":
                dot = s.find(".")
                digits = s[1:] if dot < 0 else s[1:dot]
                if not digits.isdigit() or not digits.isascii():
                    raise DecodeError(f"malformed smallcaps reference {s!r}")
                return slot(int(digits), None if dot < 0 else s[dot + 1 :])
            if c == "+" or c == "-":
                return _bigint(s)
            if c == "%":
                return Symbol(s[1:])
            if c == "#":
                constant = _SMALLCAPS_CONSTANTS.get(s, _MISSING)
                if constant is _MISSING:
                    raise DecodeError(f"unknown smallcaps constant {s!r}")
                return constant
            raise DecodeError(f"special character {c!r} is reserved for future use: {s!r}")

        def dec(v: Any) -> Any:
            t = type(v)
            if t is str:
                return dec_string(v) if v and "!" <= v[0] <= "-" else v
            if t is float or t is bool:
                return v
            if t is int:
                return float(v)
            if t is list:
                return [dec(x) for x in v]
            if v is None:
                return null
            if "#tag" in v:
                tag = v["#tag"]
                if type(tag) is not str:
                    raise DecodeError(f"'#tag' must be a string, not {tag!r}")
                if not v.keys() <= {"#tag", "payload"}:
                    raise DecodeError(f"#tag record with unexpected properties {sorted(v)}")
                return decode_tagged(string(tag), dec(v.get("payload", "#undefined")))
            if "#error" in v:
                if "message" in v:
                    raise DecodeError("unexpected encoded error property 'message'")
                error_id = v.get("errorId")
                return _error(
                    string(v["#error"]),
                    string(v.get("name")),
                    string(error_id) if error_id is not None else None,
                )
            result = {}
            for k, x in v.items():
                if k[:1] == "#":
                    raise DecodeError(f"unrecognized smallcaps record type {k!r}")
                name = string(k)
                if type(name) is not str:
                    raise DecodeError(f"record key {k!r} does not decode to a string")
                result[name] = dec(x)
            return result

        try:
            return dec(tree)
        finally:
            dec = _spent  # it calls itself: break the cycle, do not wait for gc


_MISSING: Final = object()
_UNDEFINED_BODY: Final = _json.dumps(_UNDEFINED)


def _plain_out(items: list[Any] | tuple[Any, ...]) -> list[Any] | None:
    """The CapData tree of a list of strings, booleans, floats and such lists.

    None if it holds anything else (or a float whose JSON text needs the
    slow path): the caller then takes the general path.
    """
    out: list[Any] = []
    for x in items:
        t = type(x)
        if t is str or t is bool:
            out.append(x)
        elif t is float:
            if x - x != 0:  # NaN or an infinity
                return None
            token = _json.float_token(x)
            if token is None:
                return None
            out.append(token)
        elif t is list or t is tuple:
            sub = _plain_out(x)
            if sub is None:
                return None
            out.append(sub)
        else:
            return None
    return out


def _plain_in(items: list[Any]) -> list[Any] | None:
    """The value of a CapData list of strings, numbers, booleans, nulls and such lists.

    None if it holds an object (a record or a special value): the caller
    then takes the general path.
    """
    out: list[Any] = []
    for x in items:
        t = type(x)
        if t is str or t is float or t is bool:
            out.append(x)
        elif t is int:
            out.append(float(x))  # every JSON number is a JS number (a double)
        elif t is list:
            sub = _plain_in(x)
            if sub is None:
                return None
            out.append(sub)
        elif x is None:
            out.append(null)
        else:
            return None
    return out

_SMALLCAPS_CONSTANTS: Final[dict[str, Any]] = {
    "#undefined": None,
    "#NaN": math.nan,
    "#Infinity": math.inf,
    "#-Infinity": -math.inf,
}


def _sorted_keys(d: dict[Any, Any]) -> list[str]:
    for k in d:
        if type(k) is not str:
            raise EncodeError(f"record keys must be strings, found {type(k).__name__} key {k!r}")
    keys = sorted(d)
    joined = "".join(keys)
    if joined and max(joined) >= "\ud800":
        # Code-point order differs from JS's UTF-16 order only here.
        keys.sort(key=_json.utf16_key)
    return keys


def _bigint(digits: Any) -> int:
    if type(digits) is not str or not _BIGINT_DIGITS.fullmatch(digits):
        raise DecodeError(f"bigint digits must be a decimal integer string, not {digits!r}")
    try:
        return int(digits)
    except ValueError as exc:  # more digits than int() accepts
        raise DecodeError(f"bigint too large: {exc}") from None


def _error(message: Any, name: Any, error_id: Any) -> RemoteError:
    if type(message) is not str:
        raise DecodeError(f"error message must be a string, not {message!r}")
    if type(name) is not str:
        raise DecodeError(f"error name must be a string, not {name!r}")
    if error_id is not None and type(error_id) is not str:
        raise DecodeError(f"errorId must be a string, not {error_id!r}")
    return RemoteError(message, name)


def _check_reference(v: Any) -> None:
    """Raise a clear error for values that are neither data nor references."""
    t = type(v)
    if t is bytes or t is bytearray:
        raise EncodeError(
            "bytes cannot be sent in the Endo CapTP dialect: @endo/marshal 1.10 has no "
            "byteArray encoding in capdata"
        )
    if t is Record:
        raise EncodeError(
            f"Record {v!r} cannot be sent in the Endo CapTP dialect (OCapN only); "
            "use a dict or a Tagged value"
        )
    style = pass_style(v)  # raises PassStyleError for unpassable types
    if style not in ("remotable", "promise"):  # pragma: no cover - data styles are handled
        raise PassStyleError(f"{style} value is not a reference")


def _spent(*args: Any, **kwargs: Any) -> Any:
    """What a nested encoder or decoder becomes after its call (it referred to itself)."""
    raise AssertionError("a marshal's nested function was called after its use")


def _no_slot_for_value(value: Any) -> tuple[str, str | None]:
    raise EncodeError(f"this marshal cannot send references: {value!r}")


def _no_value_for_slot(slot: str, iface: str | None) -> Any:
    raise DecodeError(f"this marshal cannot receive references: slot {slot!r}")
