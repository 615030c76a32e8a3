"""A small text notation for passable values, used by the ``ocapn`` command line.

=================  ==================================  ===================
written            value                               Python
=================  ==================================  ===================
``42``, ``-7``     integer                             ``int``
``2.5``, ``1e3``   float                               ``float``
``"hi there"``     string (``\\"``, ``\\\\``, ``\\n``,   ``str``
                   ``\\t``, ``\\uXXXX`` escapes)
``hello``          a bare word is a string too         ``str``
``'red``           symbol                              :class:`captp.Symbol`
``b"\\x00ab"``     bytes (``\\xHH`` escapes)            ``bytes``
``[1, 'a, "b"]``   list (commas optional)              ``list``
``{"k": 1}``       struct (string keys)                ``dict``
``true`` ``false`` booleans                            ``bool``
``null``           null                                :data:`captp.null`
``undefined``      undefined                           ``None``
=================  ==================================  ===================

In a shell, quote anything with spaces, quotes or brackets:
``ocapn call URI make-car "['red 'zoomracer]"``.  :func:`format_value`
writes values back in the same notation (references as ``<ref ...>``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from captp import Promise, Record, RemoteRef, Symbol, Tagged, is_remotable, null
from captp._passable import Null, describe_error
from ocapn.locators import PeerLocation, Sturdyref

__all__ = ["NotationError", "format_value", "parse_value"]

_NUMBER: Final = re.compile(r"-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)")
_INTEGER: Final = re.compile(r"-?\d+")
_WORD: Final = re.compile(r"[^\s\[\]{},:\"']+")
_DELIMITERS: Final = " \t\n,]}:"
_WORDS: Final[dict[str, Any]] = {"true": True, "false": False, "null": null, "undefined": None}


class NotationError(ValueError):
    """Text that is not a value in the notation; the message says where."""


def parse_value(text: str) -> Any:
    """The value ``text`` writes (see the module docstring)."""
    parser = _Parser(text)
    value = parser.value()
    parser.skip_space()
    if parser.pos != len(text):
        raise NotationError(f"unexpected {text[parser.pos:]!r} after the value in {text!r}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> NotationError:
        return NotationError(f"{what} at position {self.pos} of {self.text!r}")

    def skip_space(self, commas: bool = False) -> None:
        while self.pos < len(self.text) and (
            self.text[self.pos].isspace() or (commas and self.text[self.pos] == ",")
        ):
            self.pos += 1

    def value(self) -> Any:
        self.skip_space()
        text, pos = self.text, self.pos
        if pos >= len(text):
            raise self.fail("a value is missing")
        c = text[pos]
        if c == "[":
            return self.sequence()
        if c == "{":
            return self.struct()
        if c == '"':
            return self.string()
        if c == "b" and text.startswith('b"', pos):
            self.pos += 1
            return self.bytes_()
        if c == "'":
            self.pos += 1
            match = _WORD.match(text, self.pos)
            if match is None:
                raise self.fail("a symbol needs a name")
            self.pos = match.end()
            return Symbol(match.group())
        match = _NUMBER.match(text, pos)
        if match is not None and (match.end() == len(text) or text[match.end()] in _DELIMITERS):
            self.pos = match.end()
            number = match.group()
            return int(number) if _INTEGER.fullmatch(number) else float(number)
        match = _WORD.match(text, pos)
        if match is None:
            raise self.fail(f"unexpected {c!r}")
        self.pos = match.end()
        word = match.group()
        return _WORDS.get(word, word)

    def sequence(self) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip_space(commas=True)
            if self.pos >= len(self.text):
                raise self.fail("a list is not closed with ]")
            if self.text[self.pos] == "]":
                self.pos += 1
                return items
            items.append(self.value())

    def struct(self) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        while True:
            self.skip_space(commas=True)
            if self.pos >= len(self.text):
                raise self.fail("a struct is not closed with }")
            if self.text[self.pos] == "}":
                self.pos += 1
                return result
            key = self.value()
            if type(key) is not str:
                raise self.fail("struct keys are strings")
            self.skip_space()
            if not self.text.startswith(":", self.pos):
                raise self.fail("expected ':' after a struct key")
            self.pos += 1
            result[key] = self.value()

    def _quoted(self) -> str:
        # From the opening quote to the closing one, escapes left in place.
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\":
                self.pos += 2
            elif c == '"':
                self.pos += 1
                return self.text[start : self.pos]
            else:
                self.pos += 1
        raise self.fail("a string is not closed with \"")

    def string(self) -> str:
        quoted = self._quoted()
        try:
            value = json.loads(quoted)
        except json.JSONDecodeError as exc:
            raise self.fail(f"bad string escape ({exc.msg})") from None
        assert type(value) is str
        return value

    def bytes_(self) -> bytes:
        body = self._quoted()[1:-1]
        try:
            return body.encode("latin-1").decode("unicode_escape").encode("latin-1")
        except (UnicodeEncodeError, UnicodeDecodeError) as exc:
            raise self.fail(f"bytes are ASCII with \\xHH escapes ({exc.reason})") from None


def format_value(value: Any) -> str:
    """``value`` written in the notation (references and promises in angle brackets).

    A sturdyref or a peer locator is written as its ``ocapn://`` URI.
    """
    t = type(value)
    if value is None:
        return "undefined"
    if t is Null:
        return "null"
    if t is bool:
        return "true" if value else "false"
    if t is int or t is float:
        return repr(value)
    if t is str:
        return json.dumps(value, ensure_ascii=False)
    if t is bytes:
        return 'b"' + "".join(
            chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in value
        ) + '"'
    if t is Symbol:
        return f"'{value.name}"
    if t is list or t is tuple:
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if t is dict:
        items = ", ".join(f"{format_value(k)}: {format_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    if t is Tagged:
        return f"<tagged {value.tag} {format_value(value.payload)}>"
    if t is Record:
        return "<" + " ".join(format_value(v) for v in (value.label, *value.fields)) + ">"
    if t is Sturdyref or t is PeerLocation:
        return str(value)  # its ocapn:// URI
    if isinstance(value, BaseException):
        return f"<error {describe_error(value)}>"
    if t is RemoteRef:
        return f"<ref at {value.position} on {value.engine.name}>"
    if isinstance(value, Promise):
        return "<promise>"
    if is_remotable(value):
        return f"<far {type(value).__name__}>"
    return f"<{t.__name__}>"
