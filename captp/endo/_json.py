"""JSON text exactly as JavaScript's ``JSON.stringify`` writes it.

Python's ``json`` module agrees with V8 on almost everything when called with
``ensure_ascii=False`` and compact separators (``spec/endo-captp.md`` section
6.1).  It differs in two places, both handled here:

* numbers: JS writes ``Number#toString`` (shortest round-trip digits, no
  ``.0`` on integers, exponent only from ``1e21`` up and ``1e-7`` down, as
  ``1e+21`` / ``1e-7``); Python's ``repr`` writes ``100.0``, ``1e+16``, ``1e-07``;
* lone surrogates: JS (ES2019 well-formed ``JSON.stringify``) writes them as
  ``\\udXXX`` escapes; Python leaves them raw, which UTF-8 cannot encode.

The fast path of the codec uses the C encoder and only takes the slow path
here for the rare floats whose Python text differs (see :func:`float_token`).
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "MAX_SAFE_INTEGER",
    "dumps",
    "escape_surrogates",
    "float_token",
    "js_number",
    "loads",
    "quote",
    "stringify",
    "utf16_key",
]

# Number.MAX_SAFE_INTEGER: integers up to this size are exact as JS numbers.
MAX_SAFE_INTEGER: Final = 2**53 - 1

quote: Final[Callable[[str], str]] = json.encoder.encode_basestring
"""A JSON string literal, non-ASCII left raw (the C encoder; lone surrogates stay raw)."""

_encoder: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
)


def _make_fast_dumps() -> Callable[[Any], str] | None:
    """The C encoder called directly: ``JSONEncoder.encode`` makes a new one per call.

    None if this Python has no C accelerator (then ``JSONEncoder.encode`` is used).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return None
    # The arguments JSONEncoder.iterencode passes for the settings above.
    c_encode = make(
        None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False,
        False,
    )  # fmt: skip

    def fast_dumps(value: Any) -> str:
        if type(value) is str:
            return json.encoder.encode_basestring(value)
        return "".join(c_encode(value, 0))

    return fast_dumps


_dumps: Final[Callable[[Any], str]] = _make_fast_dumps() or _encoder.encode



def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder: Final = json.JSONDecoder(parse_constant=_reject_constant)
# (typeshed types make_scanner's argument as the scanner class itself.)
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = json.scanner.make_scanner(
    _decoder  # type: ignore[arg-type]
)


def loads(text: str) -> Any:
    """``JSON.parse``: like ``json.loads`` on a ``str``, but rejects ``NaN`` and ``Infinity``."""
    # The scanner at once (what JSONDecoder.decode does, less two regex matches):
    # when the text is exactly one value, without surrounding whitespace.
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _decoder.decode(text)  # leading whitespace, or an error worded by json
    if end != len(text):
        return _decoder.decode(text)
    return value

_SURROGATES: Final = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def _surrogate(m: re.Match[str]) -> str:
    s = m.group()
    if len(s) == 2:  # a pair kept as two code points: JS sees one astral character
        return chr(0x10000 + ((ord(s[0]) - 0xD800) << 10) + (ord(s[1]) - 0xDC00))
    return f"\\u{ord(s):04x}"


def escape_surrogates(text: str) -> str:
    """``text`` with lone surrogates written as JS does (``\\ud800``); pairs joined."""
    return _SURROGATES.sub(_surrogate, text)


def js_number(x: float) -> str:
    """``String(x)`` in JavaScript (``Number::toString``, radix 10)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"  # and -0, as JS prints it
    sign = "-" if x < 0 else ""
    r = repr(abs(x))  # shortest round-trip digits, like V8
    mantissa, _, exp = r.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    s = stripped.rstrip("0")
    k, n = len(s), point  # x = 0.s * 10**n, as in ECMA-262 Number::toString
    if k <= n <= 21:
        return sign + s + "0" * (n - k)
    if 0 < n <= 21:
        return sign + s[:n] + "." + s[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + s
    e = n - 1
    exponent = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + (s if k == 1 else s[0] + "." + s[1:]) + exponent


def float_token(x: float) -> float | int | None:
    """What to hand the C encoder for a finite float so that it prints JS's text.

    An ``int`` for integral values that are exact (``100.0`` -> ``100``, and
    ``-0.0`` -> ``0`` as marshal normalizes it), the float itself when
    Python's ``repr`` already matches JS, else ``None``: the caller must use
    :func:`js_number` (the slow path).
    """
    if x.is_integer():
        if -MAX_SAFE_INTEGER <= x <= MAX_SAFE_INTEGER:
            return int(x)
        return None
    if "e" in repr(x):
        return None
    return x


def utf16_key(key: str) -> bytes:
    """Sort key giving JS's ``Array.prototype.sort`` order (UTF-16 code units)."""
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    t = type(value)
    if t is str:
        out.append(quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif t is int:
        out.append(str(value) if abs(value) <= MAX_SAFE_INTEGER else js_number(float(value)))
    elif t is float:
        # JSON.stringify writes null for NaN and the infinities.
        out.append(js_number(value) if value - value == 0 else "null")
    elif t is list or t is tuple:
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif t is dict:
        out.append("{")
        for i, (k, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(quote(k))
            out.append(":")
            _write(item, out)
        out.append("}")
    else:
        raise TypeError(f"not JSON data: {t.__name__}")


def stringify(value: Any) -> str:
    """``JSON.stringify(value)`` for JSON data (dicts keep their insertion order).

    Works for any JSON data, including floats whose Python text differs from
    JS's; slower than :func:`dumps`.
    """
    out: list[str] = []
    _write(value, out)
    return _fix_surrogates("".join(out))


def dumps(value: Any) -> str:
    """``JSON.stringify(value)`` with the C encoder.

    The caller guarantees every float in ``value`` went through
    :func:`float_token` (so the C encoder prints JS's text); lone surrogates
    are escaped here.
    """
    return _fix_surrogates(_dumps(value))


def _fix_surrogates(text: str) -> str:
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return escape_surrogates(text)
    return text
