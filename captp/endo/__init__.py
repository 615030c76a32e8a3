"""The Endo CapTP dialect: talk to ``@endo/captp`` peers (the Endo daemon, Agoric, Node).

Over TCP (netstring framing, as the daemon speaks), use
:func:`netlayers.endo_tcp.connect_tcp` and :func:`netlayers.endo_tcp.serve_tcp`;
this package holds the dialect itself, with no sockets:

* :func:`open_connection` (an Endo session over any channel) and
  :class:`EndoConnection`: the public surface;
* :mod:`captp.endo.marshal`: passables <-> CapData (``@qclass`` capdata
  written and read, smallcaps read and optionally written), with the value
  mapping table (``int`` is a JS bigint, ``float`` a JS number, ``None``
  is ``undefined``, :data:`captp.null` is ``null``);
* :mod:`captp.endo.wire`: the seven ``CTP_*`` messages with JS's key order,
  slot naming (:class:`EndoPositions`), and the guards against the JS peer's
  traps;
* :mod:`captp.endo.framing`: netstrings for byte streams.

Differences from a JS peer that a user can see: a question the peer never
answers breaks with :class:`QuestionTimeout` after ``question_timeout``
seconds (default 60; ``None`` waits forever); a call naming an export we no
longer have is answered with a ``ReferenceError`` instead of being dropped.
Decisions where the Endo sources are silent are in
``spec-notes/0012-endo-dialect.md``.
"""

from captp.endo._connection import (
    DEFAULT_QUESTION_TIMEOUT,
    BootstrapArg,
    EndoConnection,
    QuestionTimeout,
    open_connection,
)
from captp.endo.marshal import Marshal, UnknownReference, error_fields
from captp.endo.wire import EndoPositions, EndoWire, reverse_slot

__all__ = [
    "DEFAULT_QUESTION_TIMEOUT",
    "BootstrapArg",
    "EndoConnection",
    "EndoPositions",
    "EndoWire",
    "Marshal",
    "QuestionTimeout",
    "UnknownReference",
    "error_fields",
    "open_connection",
    "reverse_slot",
]
