"""Persistence: a node's identity, its sturdyrefs and persistent objects in a state directory.

::

    from ocapn.persist import Persistent

    async with Node(tcp_testing_only(), state="var/node", restorers=[Counter]) as node:
        print(node.publish(Counter()))      # the same URI answers after a restart

What lives here:

* :mod:`ocapn.persist.store`: :class:`StateStore`, the SQLite database and
  its lock, schema versions and migrations;
* :mod:`ocapn.persist.persistent`: :class:`Persistent`, the contract of an
  object that survives restarts, and restorer tables;
* :mod:`ocapn.persist.state`: :class:`NodeState`, what the node consults when
  it starts, publishes, answers ``fetch`` and revokes;
* :mod:`ocapn.persist.commands`: ``ocapn refs`` and ``ocapn revoke``;
* :mod:`ocapn.persist.errors`: the named failures.

Design and durability argument: ``spec-notes/0037-persistence.md``.
"""

from __future__ import annotations

from ocapn.persist.errors import (
    CorruptState,
    ForeignState,
    NotSupplied,
    RestoreFailed,
    RestorerMissing,
    StateError,
    StateInUse,
    UnsupportedStateVersion,
)
from ocapn.persist.persistent import Persistent, Restorer, Restorers
from ocapn.persist.state import NodeState, PersistentIdentity
from ocapn.persist.store import SCHEMA_VERSION, StateStore, StoredRef

__all__ = [
    "SCHEMA_VERSION",
    "CorruptState",
    "ForeignState",
    "NodeState",
    "NotSupplied",
    "Persistent",
    "PersistentIdentity",
    "RestoreFailed",
    "Restorer",
    "RestorerMissing",
    "Restorers",
    "StateError",
    "StateInUse",
    "StateStore",
    "StoredRef",
    "UnsupportedStateVersion",
]
