"""The named failures of a state directory (all are :class:`captp.errors.CapTPError`).

Whole-store failures (:class:`StateInUse`, :class:`CorruptState` at open,
:class:`ForeignState`, :class:`UnsupportedStateVersion`) stop the node from
starting: its identity lives in the store, and starting with a fresh one
would silently kill every URI it ever printed.  Failures of one sturdyref
(:class:`RestorerMissing`, :class:`RestoreFailed`, :class:`CorruptState` of
one row, :class:`NotSupplied`) break only the promises of that sturdyref's
callers; the node serves everything else.
"""

from __future__ import annotations

from captp.errors import CapTPError

__all__ = [
    "CorruptState",
    "ForeignState",
    "NotSupplied",
    "RestoreFailed",
    "RestorerMissing",
    "StateError",
    "StateInUse",
    "UnsupportedStateVersion",
]


class StateError(CapTPError):
    """Something is wrong with a node's state directory or with what it holds."""


class StateInUse(StateError):
    """Another process (or another node in this one) holds the state directory's lock."""


class CorruptState(StateError):
    """The database, or one row of it, cannot be read: not SQLite, malformed, bad state bytes."""


class ForeignState(StateError):
    """The database belongs to another application (its SQLite application_id is not ours)."""


class UnsupportedStateVersion(StateError):
    """The database has a schema version newer than this software knows how to read."""


class RestorerMissing(StateError):
    """A persistent object's restorer name has no restorer registered with the node."""


class RestoreFailed(StateError):
    """The restorer registered for a persistent object raised; the cause is chained."""


class NotSupplied(StateError):
    """A named sturdyref whose object the application has not published yet in this run."""
