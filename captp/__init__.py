"""CapTP: the transport-agnostic capability engine.

What lives here: the passable data model (:class:`Symbol`, :class:`Record`,
:class:`Tagged`, :data:`null`, :func:`pass_style`, :func:`same_value`), the
error types, and (as they land) eventual send, far objects, promises and the
session state machine, plus the Endo JSON dialect in :mod:`captp.endo`.
"""

from captp._passable import (
    Null,
    PassStyle,
    PassStyleError,
    Record,
    Symbol,
    Tagged,
    check_passable,
    is_remotable,
    null,
    pass_style,
    same_value,
)
from captp.errors import (
    BrokenPromise,
    CapTPError,
    ConnectionLost,
    DecodeError,
    EncodeError,
    ProtocolError,
    RemoteError,
)

__all__ = [
    "BrokenPromise",
    "CapTPError",
    "ConnectionLost",
    "DecodeError",
    "EncodeError",
    "Null",
    "PassStyle",
    "PassStyleError",
    "ProtocolError",
    "Record",
    "RemoteError",
    "Symbol",
    "Tagged",
    "check_passable",
    "is_remotable",
    "null",
    "pass_style",
    "same_value",
]
