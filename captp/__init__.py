"""CapTP: the transport-agnostic capability engine.

What lives here:

* eventual send and references: :data:`E`, :func:`far`, :class:`Promise`,
  :class:`Resolver`, :func:`make_promise`, :class:`RemoteRef`;
* the vat that runs local objects in turns: :func:`open_vat`;
* the session state machine (:class:`Engine`, no I/O) and the anyio driver
  that runs it over a transport (:class:`Connection`);
* the passable data model (:class:`Symbol`, :class:`Record`, :class:`Tagged`,
  :data:`null`, :func:`pass_style`, :func:`same_value`) and the error types.
"""

from captp import _native as _native  # first: chooses the build (compiled or pure)
from captp._connection import Channel, Connection, Wire
from captp._eventual import E
from captp._far import FarFunction, far
from captp._lifecycle import when_broken
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
    register_passable,
    same_value,
    unregister_passable,
)
from captp._promise import Promise, Resolver, make_promise
from captp._refs import RemoteRef
from captp._vat import Vat, current_vat, open_vat
from captp.engine import ENDO_POLICY, OCAPN_POLICY, Engine, Policy, Positions
from captp.errors import (
    BrokenPromise,
    CapTPError,
    ConnectionLost,
    DecodeError,
    EncodeError,
    ProtocolError,
    RemoteError,
    WrongThread,
)
from captp.limits import LimitExceeded, Limits

__all__ = [
    "LimitExceeded",
    "Limits",
    "ENDO_POLICY",
    "OCAPN_POLICY",
    "BrokenPromise",
    "Channel",
    "Connection",
    "E",
    "FarFunction",
    "Policy",
    "Positions",
    "Promise",
    "RemoteRef",
    "Resolver",
    "Engine",
    "Vat",
    "Wire",
    "current_vat",
    "far",
    "make_promise",
    "open_vat",
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
    "register_passable",
    "same_value",
    "unregister_passable",
    "when_broken",
    "WrongThread",
]
