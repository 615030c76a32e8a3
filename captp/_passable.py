"""The passable data model shared by every wire dialect.

CapTP passes a small, closed set of value kinds (a *pass style* each).  Python
has most of them built in; the few it lacks are defined here:

=============  ==========================================================
pass style     Python type
=============  ==========================================================
``undefined``  ``None``
``null``       :data:`null` (the only instance of :class:`Null`)
``boolean``    ``bool``
``integer``    ``int`` (any size; JS ``bigint``)
``float``      ``float`` (IEEE-754 double; JS ``number``)
``string``     ``str`` (valid Unicode, no lone surrogates)
``bytes``      ``bytes``
``symbol``     :class:`Symbol`
``list``       ``list`` or ``tuple``
``struct``     ``dict`` with ``str`` keys (JS copyRecord)
``record``     :class:`Record` (a label and positional fields)
``tagged``     :class:`Tagged` (a string tag and a payload)
``error``      any ``BaseException`` instance (only its type name and
               message travel)
``remotable``  far objects and imported references (by reference)
``promise``    :class:`captp.Promise` (by reference)
=============  ==========================================================

``None`` is *undefined* because that is what a Python function returns when it
has nothing to say, exactly as a JavaScript function returns ``undefined``;
``null`` is a separate value so that JSON's ``null`` and OCapN's ``<null>``
survive a round trip.  See ``spec-notes/0002-passable-model.md``.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any, ClassVar, Final, Literal, TypeVar

from captp._native import COMPILED
from captp._typing import mypyc_attr
from captp.errors import DecodeError, EncodeError

__all__ = [
    "Null",
    "PassStyle",
    "PassStyleError",
    "Record",
    "Symbol",
    "Tagged",
    "check_passable",
    "decode_tagged",
    "describe_error",
    "encode_custom",
    "error_message",
    "error_name",
    "is_remotable",
    "map_leaves",
    "null",
    "pass_style",
    "register_passable",
    "same_value",
    "unpassable_message",
    "unregister_passable",
]

T = TypeVar("T")

PassStyle = Literal[
    "undefined",
    "null",
    "boolean",
    "integer",
    "float",
    "string",
    "bytes",
    "symbol",
    "list",
    "struct",
    "record",
    "tagged",
    "error",
    "remotable",
    "promise",
]


# Compiled (``python -m ocapn.compile``), ``Symbol``, ``Record`` and ``Null`` are
# native classes: the codecs build and read them by direct C calls and field
# reads (a record in about 170 ns instead of 500; see make_record), and their
# ``__setattr__`` guard still refuses from Python.  Python code cannot subclass
# a native class (TypeError); pure, it still can.  ``Tagged`` and
# ``PassStyleError`` stay Python classes with compiled methods
# (``native_class=False``): ``PassStyleError`` subclasses an interpreted
# exception, and ``Tagged`` is built and read far less often.


@mypyc_attr(native_class=False)
class PassStyleError(EncodeError):
    """A value cannot be passed over CapTP (or is malformed for its style)."""


class Symbol:
    """A symbol (OCapN *selector*, JS registered symbol): a name, distinct from a string.

    ``Symbol("fetch") == Symbol("fetch")`` but ``Symbol("fetch") != "fetch"``.
    """

    __slots__ = ("_hash", "name")

    name: str
    _hash: int

    def __init__(self, name: str) -> None:
        if type(name) is not str:
            raise TypeError(f"Symbol name must be a str, not {type(name).__name__}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_hash", hash(("captp.Symbol", name)))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Symbol is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is Symbol and other.name == self.name

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Symbol({self.name!r})"

    def __reduce__(self) -> tuple[type[Symbol], tuple[str]]:
        return (Symbol, (self.name,))


class Record:
    """A record: a label (usually a :class:`Symbol`) and a tuple of fields.

    This is Syrup's ``<label field ...>``.  CapTP messages and descriptors are
    records; a record the codec does not recognise stays a ``Record`` value.
    """

    __slots__ = ("fields", "label")

    label: Any
    fields: tuple[Any, ...]

    def __init__(self, label: Any, fields: tuple[Any, ...] | list[Any] = ()) -> None:
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "fields", tuple(fields))

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Record is immutable")

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Record and self.label == other.label and self.fields == other.fields
        )

    def __hash__(self) -> int:
        return hash((Record, self.label, self.fields))

    def __repr__(self) -> str:
        inner = ", ".join(repr(f) for f in self.fields)
        return f"Record({self.label!r}, ({inner}{',' if len(self.fields) == 1 else ''}))"

    def __reduce__(self) -> tuple[type[Record], tuple[Any, tuple[Any, ...]]]:
        return (Record, (self.label, self.fields))


# The codecs build records many times per message.  Compiled, Record is a
# native class whose constructor stores its two fields directly (a call from
# Python takes about 170 ns, against 500 through the slot descriptors); pure,
# the two slot stores skip __init__'s two object.__setattr__ calls.
_new_object: Final = object.__new__
_set_label: Final = vars(Record)["label"].__set__
_set_fields: Final = vars(Record)["fields"].__set__


def make_record(label: Any, fields: tuple[Any, ...]) -> Record:
    """``Record(label, fields)`` for a ``fields`` that is a tuple already: the codecs' way."""
    if COMPILED:
        return Record(label, fields)
    record: Record = _new_object(Record)
    _set_label(record, label)
    _set_fields(record, fields)
    return record


@mypyc_attr(native_class=False)
class Tagged:
    """A tagged value: a string tag and a passable payload (Endo's ``makeTagged``)."""

    __slots__ = ("payload", "tag")

    tag: str
    payload: Any

    def __init__(self, tag: str, payload: Any) -> None:
        if type(tag) is not str:
            raise TypeError(f"Tagged tag must be a str, not {type(tag).__name__}")
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "payload", payload)

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError("Tagged is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is Tagged and self.tag == other.tag and self.payload == other.payload

    def __hash__(self) -> int:
        return hash((Tagged, self.tag))

    def __repr__(self) -> str:
        return f"Tagged({self.tag!r}, {self.payload!r})"

    def __reduce__(self) -> tuple[type[Tagged], tuple[str, Any]]:
        return (Tagged, (self.tag, self.payload))


class Null:
    """The type of :data:`null`, the passable ``null`` (distinct from ``None``)."""

    __slots__ = ()
    _instance: ClassVar[Null | None] = None

    def __new__(cls) -> Null:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "null"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "null"


null: Final = Null()
"""The passable ``null``: JSON's ``null``, OCapN's ``<null>``.  ``None`` is *undefined*."""


# -- pass styles ---------------------------------------------------------------

# Classes whose instances pass by reference set this attribute on the class
# (``@far`` classes, imported references) or ``_captp_promise_`` (promises).
# Looking the attribute up on the type keeps this module free of imports from
# the rest of the engine.
_FAR_ATTR: Final = "_captp_far_"
_PROMISE_ATTR: Final = "_captp_promise_"

_STYLE_BY_TYPE: Final[dict[type, PassStyle]] = {
    type(None): "undefined",
    Null: "null",
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    bytes: "bytes",
    Symbol: "symbol",
    list: "list",
    tuple: "list",
    dict: "struct",
    Record: "record",
    Tagged: "tagged",
}


def is_remotable(value: object) -> bool:
    """True for values that pass by reference as objects (far objects, imports)."""
    return getattr(type(value), _FAR_ATTR, None) is not None


def map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with its copy containers (list, tuple, dict, Record, Tagged) rebuilt
    around ``leaf`` applied to each of the other values in it."""
    t = type(value)
    if t is list or t is tuple:
        return t(map_leaves(v, leaf) for v in value)
    if t is dict:
        return {k: map_leaves(v, leaf) for k, v in value.items()}
    if t is Record:
        return Record(value.label, tuple(map_leaves(v, leaf) for v in value.fields))
    if t is Tagged:
        return Tagged(value.tag, map_leaves(value.payload, leaf))
    return leaf(value)


def pass_style(value: object) -> PassStyle:
    """Name the pass style of ``value``'s top level, or raise :class:`PassStyleError`.

    Only the top level is checked; use :func:`check_passable` for a deep check.
    A type registered with :func:`register_passable` passes as ``tagged``.
    """
    style = _STYLE_BY_TYPE.get(type(value))
    if style is not None:
        return style
    cls = type(value)
    if getattr(cls, _FAR_ATTR, None) is not None:
        return "remotable"
    if getattr(cls, _PROMISE_ATTR, False):
        return "promise"
    if isinstance(value, BaseException):
        return "error"
    if isinstance(value, float):  # Syrup's Float32, numpy.float64: a float by value
        return "float"
    if cls in _CUSTOM_BY_TYPE:
        return "tagged"
    raise PassStyleError(unpassable_message(value))


def unpassable_message(value: object) -> str:
    """Why ``value`` cannot travel, and what to do about it (for error messages)."""
    cls = type(value)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    if cls in (set, frozenset):
        hint = "send a list (sorted, if order matters to the receiver)"
    elif cls is bytearray or cls is memoryview:
        hint = "send bytes(...)"
    elif dataclasses.is_dataclass(value):
        hint = (
            "send its fields as a dict (dataclasses.asdict), mark the class @far to "
            "pass it by reference, or register it with captp.register_passable"
        )
    elif cls.__module__ in ("datetime", "decimal", "uuid", "fractions", "pathlib"):
        hint = (
            "convert it to a str, int or float first (e.g. .isoformat()), or register the "
            "type with captp.register_passable(cls, tag, encode=..., decode=...)"
        )
    else:
        hint = (
            "mark the class with @far to pass it by reference, convert it to plain data "
            "(None, null, bool, int, float, str, bytes, Symbol, list, dict, Record, Tagged), "
            "or register the type with captp.register_passable(cls, tag, encode=..., decode=...)"
        )
    return f"{name} is not passable: {hint}"


# -- custom passable types ----------------------------------------------------------------

_CUSTOM_BY_TYPE: dict[type, tuple[str, Callable[[Any], Any]]] = {}
_CUSTOM_BY_TAG: dict[str, tuple[type, Callable[[Any], Any]]] = {}


def register_passable(
    cls: type[T], tag: str, *, encode: Callable[[T], Any], decode: Callable[[Any], T]
) -> None:
    """Let instances of ``cls`` travel as a :class:`Tagged` value ``tag`` and come back.

    ``encode(obj)`` gives the payload (any passable); ``decode(payload)``
    rebuilds the object on the receiving side, which must have registered the
    same tag (a peer that has not sees a plain :class:`Tagged`).  Only
    instances of exactly ``cls`` are encoded (not subclasses).  A payload the
    decoder refuses is bad input from the peer (a :class:`~captp.DecodeError`).

    ::

        register_passable(datetime, "datetime",
                          encode=datetime.isoformat, decode=datetime.fromisoformat)
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_passable takes a class, not {cls!r}")
    if type(tag) is not str or not tag:
        raise TypeError(f"the tag is a non-empty str, not {tag!r}")
    if cls in _STYLE_BY_TYPE or getattr(cls, _FAR_ATTR, None) is not None:
        raise ValueError(f"{cls.__qualname__} is already passable")
    known = _CUSTOM_BY_TAG.get(tag)
    if known is not None and known[0] is not cls:
        raise ValueError(f"tag {tag!r} is already registered for {known[0].__qualname__}")
    old = _CUSTOM_BY_TYPE.get(cls)
    if old is not None and old[0] != tag:
        raise ValueError(f"{cls.__qualname__} is already registered with tag {old[0]!r}")
    _CUSTOM_BY_TYPE[cls] = (tag, encode)
    _CUSTOM_BY_TAG[tag] = (cls, decode)


def unregister_passable(cls: type) -> None:
    """Undo :func:`register_passable` for ``cls`` (if it was registered)."""
    entry = _CUSTOM_BY_TYPE.pop(cls, None)
    if entry is not None:
        _CUSTOM_BY_TAG.pop(entry[0], None)


def encode_custom(value: object) -> Tagged | None:
    """``value`` as the :class:`Tagged` its registered type gives, or ``None`` if unregistered."""
    entry = _CUSTOM_BY_TYPE.get(type(value)) if _CUSTOM_BY_TYPE else None
    if entry is None:
        return None
    tag, encode = entry
    return Tagged(tag, encode(value))


def decode_tagged(tag: str, payload: Any) -> Any:
    """A received tagged value: the registered type's object for ``tag``, else a :class:`Tagged`."""
    entry = _CUSTOM_BY_TAG.get(tag) if _CUSTOM_BY_TAG else None
    if entry is None:
        return Tagged(tag, payload)
    try:
        return entry[1](payload)
    except Exception as exc:
        error = DecodeError(f"tagged {tag!r}: the registered decoder refused it: {exc!r}")
        error.__cause__ = exc  # (as `from exc` does, which the compiled build ignores)
        raise error from exc


def check_passable(value: object, *, max_depth: int = 1000) -> PassStyle:
    """Check ``value`` deeply and return its top-level pass style.

    Raises :class:`PassStyleError` naming the first offending part: an
    unpassable type, a struct key that is not a string, a string with a lone
    surrogate, or nesting deeper than ``max_depth`` levels.
    """
    top = pass_style(value)
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise PassStyleError(f"passable nested deeper than {max_depth} levels")
        style = pass_style(item)
        if style == "string":
            _check_string(item)  # type: ignore[arg-type]
        elif style == "symbol":
            _check_string(item.name)  # type: ignore[attr-defined]
        elif style == "list":
            stack.extend((x, depth + 1) for x in item)  # type: ignore[attr-defined]
        elif style == "struct":
            for key, x in item.items():  # type: ignore[attr-defined]
                if type(key) is not str:
                    raise PassStyleError(
                        f"struct keys must be str, found {type(key).__name__} key {key!r}"
                    )
                _check_string(key)
                stack.append((x, depth + 1))
        elif style == "record":
            stack.append((item.label, depth + 1))  # type: ignore[attr-defined]
            stack.extend((x, depth + 1) for x in item.fields)  # type: ignore[attr-defined]
        elif style == "tagged":
            tagged = item if type(item) is Tagged else encode_custom(item)
            assert tagged is not None
            stack.append((tagged.payload, depth + 1))
    return top


def _check_string(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PassStyleError(
            f"string contains a lone surrogate at index {exc.start}: {s!r}"
        ) from None


# -- pass-invariant equality ---------------------------------------------------

_pack_double = struct.Struct(">d").pack


def _same_float(a: float, b: float) -> bool:
    if a != a:  # NaN equals NaN, whatever its payload
        return b != b
    return _pack_double(a) == _pack_double(b)  # separates 0.0 and -0.0


def same_value(a: object, b: object) -> bool:
    """Pass-invariant equality: what a peer sees as the same value.

    Unlike ``==``: ``1``, ``1.0`` and ``True`` all differ; ``-0.0`` differs from
    ``0.0``; NaN equals NaN; ``"a"`` differs from ``Symbol("a")`` and ``b"a"``;
    lists and tuples with equal items are equal; references compare by identity.
    """
    if a is b:
        return True
    try:
        sa, sb = pass_style(a), pass_style(b)
    except PassStyleError:
        return False
    if sa != sb:
        return False
    compare = _SAME_BY_STYLE.get(sa)
    if compare is None:  # remotable, promise: identity only
        return False
    return compare(a, b)


def _same_list(a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))


def _same_struct(a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(
        key in b and same_value(value, b[key]) for key, value in a.items()
    )


def _same_error(a: Any, b: Any) -> bool:
    return error_name(a) == error_name(b) and error_message(a) == error_message(b)


_SAME_BY_STYLE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "undefined": lambda a, b: True,
    "null": lambda a, b: True,
    "boolean": lambda a, b: a is b,
    "integer": lambda a, b: a == b,
    "float": _same_float,
    "string": lambda a, b: a == b,
    "bytes": lambda a, b: a == b,
    "symbol": lambda a, b: a.name == b.name,
    "list": _same_list,
    "struct": _same_struct,
    "record": lambda a, b: same_value(a.label, b.label) and _same_list(a.fields, b.fields),
    "tagged": lambda a, b: a.tag == b.tag and same_value(a.payload, b.payload),
    "error": _same_error,
}


def error_name(exc: BaseException) -> str | None:
    """The name an error travels under: a remote error's own name (maybe none), else its type's."""
    if hasattr(exc, "remote_message"):
        name = getattr(exc, "remote_name", None)
        return name if isinstance(name, str) else None
    return type(exc).__name__


def error_message(exc: BaseException) -> str:
    """The message an error travels with (never a traceback)."""
    message = getattr(exc, "remote_message", None)
    if isinstance(message, str):
        return message
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return repr(exc.args[0])
    return str(exc)


def describe_error(exc: BaseException) -> str:
    """``"Name: message"`` (or just the message when the name is unknown)."""
    name, message = error_name(exc), error_message(exc)
    return f"{name}: {message}" if name else message
