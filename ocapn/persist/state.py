"""What a node with a state directory asks of it: :class:`NodeState`.

The node keeps its live objects in memory as before and consults this class
at four points: before and after its netlayers start (their identities),
when it publishes (persistent objects and named sturdyrefs are written),
when ``fetch`` misses its memory (the sturdyref table is read, one row, and
the object restored), and when it revokes.  Nothing is loaded at start-up:
a node with 100,000 sturdyrefs opens as fast as one with none.

What survives a restart:

* a :class:`~ocapn.persist.Persistent` object published on the node, or
  held in the state of one that is: its sturdyrefs and its state as of its
  last ``_save()``;
* a sturdyref published with ``name=``: its swiss number; the application
  publishes the object under the same name again at each start;
* the identity of each netlayer that offers one (``identity_material`` /
  ``restore_identity``; tcp-testing-only keeps its designator and port).

What does not: any other published object, and every object reachable only
through a live session (passed as an argument, returned from a call).  Those
are ephemeral, as in every CapTP: their references break when the process
ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Protocol, cast, runtime_checkable

from captp import Record, Symbol, Tagged
from ocapn import syrup
from ocapn.errors import UnknownSwissNum
from ocapn.locators import PeerLocation, Sturdyref
from ocapn.persist.errors import (
    CorruptState,
    NotSupplied,
    RestoreFailed,
    RestorerMissing,
    StateError,
)
from ocapn.persist.persistent import (
    Persistent,
    Restorer,
    Restorers,
    restorer_name,
    restorer_table,
)
from ocapn.persist.store import StateStore, StoredRef, Synchronous

__all__ = ["OBJECT_REF", "Binding", "NodeState", "PersistentIdentity"]

log = logging.getLogger("ocapn.persist")

# The meta key under which the node's location (its first netlayer's) is kept,
# so that `ocapn refs` can print full URIs without starting a node.
LOCATION_KEY: Final = "location"

SWISS_NUM_BYTES: Final = 32

# In a stored state, a persistent object the state holds: <ocapn-persist-object id>.
OBJECT_REF: Final = Symbol("ocapn-persist-object")


@runtime_checkable
class PersistentIdentity(Protocol):
    """A netlayer whose identity a state directory keeps (optional netlayer methods)."""

    @property
    def transport(self) -> str:
        """The transport the identity is kept under."""

    def identity_material(self) -> bytes:
        """The bytes to keep: read back by :meth:`restore_identity` at the next start."""

    def restore_identity(self, material: bytes) -> None:
        """Take up the identity kept from an earlier run (called before ``serve``)."""


class Binding:
    """Ties a live persistent object to its row: ``Persistent._save`` goes through it."""

    __slots__ = ("last", "node_state", "object_id")

    def __init__(self, node_state: NodeState, object_id: int, last: bytes | None = None) -> None:
        self.node_state = node_state
        self.object_id = object_id
        self.last = last  # the state bytes last committed (or read), to skip rewriting them

    def save(self, obj: Persistent) -> None:
        """Commit ``obj``'s current state (and any persistent object it newly holds)."""
        with self.node_state.store.transaction():
            self.node_state._write_state(obj, self.object_id)


class NodeState:
    """A node's state directory, opened by the node (``Node(..., state=...)``).

    ``state`` is a directory (created if missing) or a :class:`StateStore`
    the caller opened (and closes).  ``restorers``: see
    :mod:`ocapn.persist.persistent`; more can be added to :attr:`restorers`.
    """

    def __init__(
        self,
        state: str | os.PathLike[str] | StateStore,
        restorers: Restorers | None = None,
        *,
        synchronous: Synchronous = "full",
    ) -> None:
        self._source = state
        self._synchronous: Synchronous = synchronous
        self._store: StateStore | None = state if isinstance(state, StateStore) else None
        self.restorers: dict[str, Restorer] = restorer_table(restorers)
        self._live: dict[int, Any] = {}  # object id -> the object restored or published
        # Stored swiss numbers the node answers from memory, and those of them
        # checked against the store since another process last wrote to it.
        self._stored: set[bytes] = set()
        self._verified: set[bytes] = set()
        self._data_version = -1

    def __repr__(self) -> str:
        return f"<NodeState {self._source}>"

    @property
    def store(self) -> StateStore:
        """The open store."""
        if self._store is None or self._store.closed:
            raise StateError("the state directory is not open (the node is not running)")
        return self._store

    def open(self) -> None:
        """Open (and lock) the state directory, unless the caller gave an open store."""
        if self._store is None or self._store.closed:
            if isinstance(self._source, StateStore):
                raise StateError(f"{self._source!r} is closed")
            self._store = StateStore(self._source, synchronous=self._synchronous)

    def close(self) -> None:
        """Close the store if this class opened it; forget live objects."""
        if self._store is not None and not isinstance(self._source, StateStore):
            self._store.close()
            self._store = None
        self._live.clear()
        self._stored.clear()
        self._verified.clear()

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """One transaction for every write in the block (publishes, saves)."""
        return self.store.transaction()

    # -- identities ------------------------------------------------------------------

    def restore_identity(self, netlayer: Any) -> None:
        """Before ``serve``: give the netlayer the identity kept from an earlier run."""
        if not isinstance(netlayer, PersistentIdentity):
            return
        material = self.store.get_identity(netlayer.transport)
        if material is not None:
            netlayer.restore_identity(material)

    def record_identity(self, netlayer: Any) -> None:
        """After ``serve`` started: keep the netlayer's identity (if it changed)."""
        if not isinstance(netlayer, PersistentIdentity):
            return
        material = netlayer.identity_material()
        if self.store.get_identity(netlayer.transport) != material:
            self.store.put_identity(netlayer.transport, material)

    def record_location(self, location: PeerLocation) -> None:
        """Keep the node's location, so tools can print full URIs."""
        uri = location.to_uri().encode("utf-8")
        if self.store.get_meta(LOCATION_KEY) != uri:
            self.store.put_meta(LOCATION_KEY, uri)

    # -- publish, lookup, revoke -------------------------------------------------------

    def publish(self, obj: Any, swiss_num: bytes | None, name: str | None) -> bytes | None:
        """Write what survives of publishing ``obj``; its swiss number, or None if ephemeral.

        With ``swiss_num`` None a fresh one is made (or the one ``name`` already has).
        """
        if name is not None and (type(name) is not str or not name):
            raise TypeError(f"a sturdyref name is a non-empty string, not {name!r}")
        store = self.store
        persistable = restorer_name(obj)
        if isinstance(obj, Persistent) and persistable is None:
            raise TypeError(
                f"{type(obj).__name__} is Persistent but names no restorer: "
                f"class {type(obj).__name__}(Persistent, restorer='...')"
            )
        if name is None and persistable is None:
            return None
        with store.transaction():
            if name is not None:
                existing = store.swiss_for_name(name)
                if existing is not None and swiss_num is not None and swiss_num != existing:
                    raise StateError(f"the name {name!r} already has another swiss number")
                swiss_num = existing or swiss_num
            fresh = swiss_num is None
            if swiss_num is None:
                swiss_num = secrets.token_bytes(SWISS_NUM_BYTES)
            object_id = None
            if persistable is not None:
                object_id = self._persist(obj, persistable)
            old = None if fresh else store.find(swiss_num)
            if old is not None and old.object_id is not None and old.object_id != object_id:
                # The object it named is dropped if nothing else holds it.
                self._unbind(store.remove_sturdyref(swiss_num) or ())
            store.add_sturdyref(swiss_num, object_id, name)
        self._stored.add(swiss_num)
        self._verified.add(swiss_num)
        return swiss_num

    def _persist(self, obj: Persistent, restorer: str) -> int:
        """``obj``'s object id, storing it first if it is new (inside a transaction)."""
        binding = obj._ocapn_binding
        if binding is not None:
            if binding.node_state is not self:
                raise StateError(f"{type(obj).__name__} is persisted by another node's state")
            return binding.object_id
        store = self.store
        # The row first, so that objects holding each other find it bound.
        object_id = store.add_object(restorer, b"", type(obj)._ocapn_version)
        obj._ocapn_binding = Binding(self, object_id)
        self._live[object_id] = obj
        store.on_rollback(lambda: self._forget(obj, object_id))
        self._write_state(obj, object_id, fresh=True)
        return object_id

    def _forget(self, obj: Persistent, object_id: int) -> None:
        if obj._ocapn_binding is not None and obj._ocapn_binding.object_id == object_id:
            obj._ocapn_binding = None
        if self._live.get(object_id) is obj:
            del self._live[object_id]

    def _write_state(self, obj: Persistent, object_id: int, *, fresh: bool = False) -> None:
        holds: set[int] = set()
        value = self._encode_refs(obj.__persist_state__(), holds)
        try:
            data = syrup.encode(value)
        except (syrup.SyrupEncodeError, TypeError, ValueError) as exc:
            raise StateError(
                f"the state of {type(obj).__name__} is not passable data: {exc}"
            ) from exc
        binding = obj._ocapn_binding
        if binding is not None and binding.last == data:
            return  # unchanged (so is what it holds: references are in the bytes)
        if holds and self.store.reaches(holds, object_id):
            raise StateError(
                f"the state of {type(obj).__name__} holds, directly or not, the object "
                "itself: a cycle of persistent objects cannot be restored"
            )
        version = type(obj)._ocapn_version
        deleted = self.store.set_state(object_id, data, holds, fresh=fresh, version=version)
        self._unbind(deleted or ())
        if binding is not None:
            binding.last = data
            self.store.on_rollback(lambda: setattr(binding, "last", None))

    def _encode_refs(self, value: Any, holds: set[int]) -> Any:
        """``value`` with each persistent object in it replaced by a reference to its row."""
        kind = type(value)
        if kind is list or kind is tuple:
            return [self._encode_refs(v, holds) for v in value]
        if kind is dict:
            return {k: self._encode_refs(v, holds) for k, v in value.items()}
        if kind is Record:
            if value.label == OBJECT_REF:
                raise StateError(f"the record label {OBJECT_REF} is reserved in states")
            return Record(value.label, tuple(self._encode_refs(f, holds) for f in value.fields))
        if kind is Tagged:
            return Tagged(value.tag, self._encode_refs(value.payload, holds))
        if isinstance(value, Persistent):
            name = restorer_name(value)
            if name is None:
                raise TypeError(f"{type(value).__name__} in a state names no restorer")
            object_id = self._persist(value, name)
            holds.add(object_id)
            return Record(OBJECT_REF, (object_id,))
        return value

    def _decode_refs(self, value: Any, restoring: frozenset[int]) -> Any:
        kind = type(value)
        if kind is list:
            return [self._decode_refs(v, restoring) for v in value]
        if kind is dict:
            return {k: self._decode_refs(v, restoring) for k, v in value.items()}
        if kind is Record:
            if value.label == OBJECT_REF:
                (object_id,) = value.fields
                if type(object_id) is not int:
                    raise CorruptState(f"a bad object reference in a state: {value!r:.100}")
                return self._object(object_id, restoring)
            return Record(value.label, tuple(self._decode_refs(f, restoring) for f in value.fields))
        if kind is Tagged:
            return Tagged(value.tag, self._decode_refs(value.payload, restoring))
        return value

    def lookup(self, swiss_num: bytes) -> Any:
        """The object a stored sturdyref names, restored on first use; a named error if not."""
        row = self.store.find(swiss_num)
        if row is None:
            raise UnknownSwissNum("no object at that swiss number")
        if row.object_id is None:
            raise NotSupplied(
                f"the sturdyref named {row.name!r} has no object: the application has not "
                "published one under that name since the node started"
            )
        obj = self._object(row.object_id, frozenset())
        self._stored.add(swiss_num)
        self._verified.add(swiss_num)  # just read: good until another process writes
        return obj

    def still_stored(self, swiss_num: bytes) -> bool:
        """On a hit in the node's memory: False if another process revoked this sturdyref.

        Costs one ``PRAGMA data_version`` per hit on a stored sturdyref, and one
        row read per such sturdyref after another process wrote to the store.
        """
        if swiss_num not in self._stored:
            return True
        version = self.store.data_version()
        if version != self._data_version:
            self._data_version = version
            self._verified.clear()
        if swiss_num in self._verified:
            return True
        if self.store.find(swiss_num) is None:
            self._stored.discard(swiss_num)
            return False
        self._verified.add(swiss_num)
        return True

    def _object(self, object_id: int, restoring: frozenset[int]) -> Any:
        """The live object for a row: in memory, or restored now (with what it holds)."""
        obj = self._live.get(object_id)
        if obj is not None:
            return obj
        if object_id in restoring:  # saving refuses cycles; a foreign edit could make one
            raise CorruptState(f"persistent object {object_id} holds itself")
        found = self.store.object_state(object_id)
        if found is None:
            raise CorruptState(f"persistent object {object_id} is held but not stored")
        restorer_name_, data, version = found
        restorer = self.restorers.get(restorer_name_)
        if restorer is None:
            known = ", ".join(sorted(self.restorers)) or "none"
            raise RestorerMissing(
                f"no restorer {restorer_name_!r} is registered with this node (it has: {known})"
            )
        try:
            state = syrup.decode(data)
        except syrup.SyrupDecodeError as exc:
            raise CorruptState(
                f"the stored state of a {restorer_name_!r} object does not decode: {exc}"
            ) from exc
        state = self._decode_refs(state, restoring | {object_id})
        try:
            obj = _restore(restorer, state, version)
        except RestoreFailed:
            raise
        except Exception as exc:
            log.warning("restorer %r raised: %r", restorer_name_, exc)
            raise RestoreFailed(
                f"the restorer {restorer_name_!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(obj, Persistent):
            obj._ocapn_binding = Binding(self, object_id, data)
        self._live[object_id] = obj
        return obj

    def revoke(self, swiss_num: bytes) -> bool:
        """Forget a stored sturdyref (and the objects only it kept); True if there was one."""
        self._stored.discard(swiss_num)
        deleted = self.store.remove_sturdyref(swiss_num)
        self._unbind(deleted or ())
        return deleted is not None

    def _unbind(self, object_ids: Iterable[int]) -> None:
        for object_id in object_ids:
            obj = self._live.pop(object_id, None)
            if isinstance(obj, Persistent):
                obj._ocapn_binding = None  # live references may go on; saves do nothing

    def refs(self, location: PeerLocation) -> Iterator[tuple[Sturdyref, StoredRef]]:
        """Every stored sturdyref, with its row."""
        for row in self.store.refs():
            yield Sturdyref(location, row.swiss), row


def _restore(restorer: Restorer, state: Any, version: int) -> Any:
    """Run a restorer on a state stored at ``version`` (upgrading it for a class)."""
    if isinstance(restorer, type) and issubclass(restorer, Persistent):
        current = restorer._ocapn_version
        if version > current:
            raise RestoreFailed(
                f"the state was stored at version {version} by newer code; "
                f"{restorer.__name__} reads up to version {current}"
            )
        for step in range(version, current):
            state = restorer.__persist_upgrade__(step, state)
        return restorer.__persist_restore__(state)
    if version != 0:
        raise RestoreFailed(
            f"the state was stored at version {version}; a restorer function reads "
            "version 0 only (register the Persistent class to upgrade it)"
        )
    return cast("Callable[[Any], Any]", restorer)(state)
