"""The Endo CapTP dialect: talk to ``@endo/captp`` peers (the Endo daemon, Agoric, Node).

Quick start::

    from captp import E, far
    from captp.endo import connect_tcp, serve_tcp

    async with connect_tcp("127.0.0.1", port) as conn:      # a client
        boot = await conn.bootstrap()
        assert await E(boot).ping() == "pong"

    async with serve_tcp(MyBootstrap(), port=0) as server:  # a server
        print("listening", server.port)
        await anyio.sleep_forever()

What lives here:

* :func:`connect_tcp`, :func:`serve_tcp`, :func:`open_connection` (any
  channel) and :class:`EndoConnection`: the public surface;
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
    EndoConnection,
    EndoServer,
    QuestionTimeout,
    connect_tcp,
    open_connection,
    serve_tcp,
)
from captp.endo.marshal import Marshal, UnknownReference, error_fields
from captp.endo.wire import EndoPositions, EndoWire, reverse_slot

__all__ = [
    "DEFAULT_QUESTION_TIMEOUT",
    "EndoConnection",
    "EndoPositions",
    "EndoServer",
    "EndoWire",
    "Marshal",
    "QuestionTimeout",
    "UnknownReference",
    "connect_tcp",
    "error_fields",
    "open_connection",
    "reverse_slot",
    "serve_tcp",
]
