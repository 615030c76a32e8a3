"""A node's state directory: one SQLite database, one lock file.

::

    DIR/state.sqlite3      identities, persistent objects, sturdyrefs (WAL mode)
    DIR/lock               held (flock) by the one process using DIR; holds its pid

Tables (schema version :data:`SCHEMA_VERSION`, in ``PRAGMA user_version``):

* ``meta(key, value)``: the node's location URI, for ``ocapn refs``;
* ``identities(transport, material)``: each netlayer's identity, opaque bytes
  only the netlayer reads (tcp-testing-only: its designator and port; key
  pairs for authenticated transports);
* ``objects(id, restorer, state, version)``: persistent objects, a restorer
  name, the Syrup bytes of their state and the version of its format;
* ``object_refs(holder, held)``: which objects an object's state holds, so
  that an object is deleted only when no sturdyref and no object holds it;
* ``sturdyrefs(swiss, object, name, created)``: what ``fetch`` answers; a row
  names an object, or a ``name`` under which the application publishes an
  object afresh at each start.

Every write is a transaction committed before the call returns, with
``synchronous=FULL`` by default: a change the caller saw acknowledged survives
kill -9 and power loss; a crash loses at most the transaction in flight.
Why, and what ``normal`` gives up, is in ``spec-notes/0037-persistence.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from ocapn.persist.errors import (
    CorruptState,
    ForeignState,
    StateError,
    StateInUse,
    UnsupportedStateVersion,
)

__all__ = [
    "APPLICATION_ID",
    "DATABASE_NAME",
    "LOCK_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "StateStore",
    "StoredRef",
    "Synchronous",
]

DATABASE_NAME: Final = "state.sqlite3"
LOCK_NAME: Final = "lock"
# PRAGMA application_id of our databases: "OCnP".  A database with another
# (non-zero) id, or with tables and no id, belongs to someone else.
APPLICATION_ID: Final = 0x4F436E50

Synchronous = Literal["full", "normal"]


class StoredRef(NamedTuple):
    """One row of the sturdyref table, joined with its object (if it has one)."""

    swiss: bytes
    object_id: int | None
    restorer: str | None
    state: bytes | None
    name: str | None
    created: float


# == schema and its migrations =============================================================


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    """Version 1: identities, persistent objects, sturdyrefs naming them."""
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.execute("CREATE TABLE identities (transport TEXT PRIMARY KEY, material BLOB NOT NULL)")
    # AUTOINCREMENT: an id is never reused, so a live object whose row another
    # process deleted (ocapn revoke) can never save over a newer object's row.
    db.execute(
        "CREATE TABLE objects (id INTEGER PRIMARY KEY AUTOINCREMENT, restorer TEXT NOT NULL, "
        "state BLOB NOT NULL)"
    )
    db.execute(
        "CREATE TABLE sturdyrefs (swiss BLOB PRIMARY KEY, object INTEGER REFERENCES objects(id), "
        "created REAL NOT NULL)"
    )
    db.execute("CREATE INDEX sturdyrefs_object ON sturdyrefs (object)")


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Version 2: named sturdyrefs (the object is supplied by the application at each start)."""
    db.execute("ALTER TABLE sturdyrefs ADD COLUMN name TEXT")
    db.execute("CREATE UNIQUE INDEX sturdyrefs_name ON sturdyrefs (name)")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    """Version 3: persistent objects that hold other persistent objects in their state."""
    db.execute(
        "CREATE TABLE object_refs (holder INTEGER NOT NULL REFERENCES objects(id), "
        "held INTEGER NOT NULL REFERENCES objects(id), PRIMARY KEY (holder, held)) "
        "WITHOUT ROWID"
    )
    db.execute("CREATE INDEX object_refs_held ON object_refs (held)")


def _migrate_3_to_4(db: sqlite3.Connection) -> None:
    """Version 4: the version of each object's state (objects stored before were version 0)."""
    db.execute("ALTER TABLE objects ADD COLUMN version INTEGER NOT NULL DEFAULT 0")


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _migrate_0_to_1,
    _migrate_1_to_2,
    _migrate_2_to_3,
    _migrate_3_to_4,
)
"""``MIGRATIONS[n]`` takes a database from schema version ``n`` to ``n + 1``."""

SCHEMA_VERSION: Final = len(MIGRATIONS)

# How long a write waits for another process's write transaction (ocapn
# revoke beside a running node) before it fails.
BUSY_TIMEOUT_MS: Final = 10_000


# == the store =============================================================================


class StateStore:
    """A state directory, open and locked by this process.  Close it (or use ``with``).

    ``synchronous``: ``"full"`` (default) makes every commit durable before it
    returns, across power loss; ``"normal"`` keeps commits across a crash of
    the process (kill -9) but may lose the last ones on power loss.
    ``readonly``: open without the lock and without migrating, to list what a
    (possibly running) node has published.  ``exclusive=False``: open for
    writing without the lock and without migrating, as ``ocapn revoke`` does
    beside a running node (SQLite's own locking orders the two writers; the
    node notices the change at its next ``fetch``, see :meth:`data_version`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "full",
        readonly: bool = False,
        exclusive: bool = True,
    ) -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous is 'full' or 'normal', not {synchronous!r}")
        self.directory = Path(directory)
        self.readonly = readonly
        self.exclusive = exclusive and not readonly
        self._depth = 0
        self._rollback_hooks: list[Callable[[], None]] = []
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        path = self.directory / DATABASE_NAME
        if not self.exclusive:
            if not path.exists():
                raise StateError(f"no state database in {self.directory}")
        else:
            # The database holds private keys: only its owner reads it (SQLite
            # gives the -wal and -shm files the database file's permissions).
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock()
            if not path.exists():
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            if readonly:
                db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                     isolation_level=None, check_same_thread=False)
            else:
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db = db
            self._open(db, synchronous)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<StateStore {self.directory}>"

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._db is None

    def close(self) -> None:
        """Close the database and release the lock (both also end with the process)."""
        db, self._db = self._db, None
        if db is not None:
            db.close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    # -- opening ---------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateInUse(
                f"state directory {self.directory} is in use by process {holder}; "
                "one node at a time may open it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock_fd = fd

    def _open(self, db: sqlite3.Connection, synchronous: Synchronous) -> None:
        where = self.directory / DATABASE_NAME
        try:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise CorruptState(f"{where} is not a readable SQLite database: {exc}") from exc
        fresh = app_id == 0 and version == 0 and tables == 0
        if not fresh and app_id != APPLICATION_ID:
            raise ForeignState(
                f"{where} is not an ocapn state database (application_id {app_id:#x}); "
                "refusing to touch it"
            )
        if version > SCHEMA_VERSION:
            raise UnsupportedStateVersion(
                f"{where} has schema version {version}; this software reads up to "
                f"{SCHEMA_VERSION}"
            )
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not self.exclusive:
            if version != SCHEMA_VERSION:
                raise UnsupportedStateVersion(
                    f"{where} has schema version {version}; open it with a node once to "
                    f"migrate it to {SCHEMA_VERSION}"
                )
            if not self.readonly:
                db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            return
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StateError(f"{where}: SQLite refused WAL mode ({mode})")
            db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            db.execute("PRAGMA foreign_keys = ON")
            self.migrate(version)
        except sqlite3.DatabaseError as exc:
            raise CorruptState(f"{where} cannot be opened: {exc}") from exc

    def migrate(self, version: int) -> None:
        """Run the migrations from ``version`` to :data:`SCHEMA_VERSION`, one transaction each."""
        while version < SCHEMA_VERSION:
            with self.transaction() as db:
                MIGRATIONS[version](db)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")

    @property
    def schema_version(self) -> int:
        """The database's schema version (``PRAGMA user_version``)."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def data_version(self) -> int:
        """A number that changes when another connection (process) commits to the database."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError(f"the state store {self.directory} is closed")
        return self._db

    # -- transactions ----------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction around the block; nested blocks join the outermost one.

        Committed (and, with ``synchronous="full"``, on disk) when the
        outermost block ends; rolled back if it raises.
        """
        db = self._conn
        if self.readonly:
            raise StateError(f"the state store {self.directory} is open read-only")
        if self._depth:
            self._depth += 1
            try:
                yield db
            finally:
                self._depth -= 1
            return
        db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield db
            self._depth = 0
            db.execute("COMMIT")
            self._rollback_hooks.clear()
        except BaseException as exc:
            self._depth = 0
            if db.in_transaction:
                db.execute("ROLLBACK")
            hooks, self._rollback_hooks = self._rollback_hooks, []
            for hook in reversed(hooks):
                hook()
            if type(exc) is sqlite3.DatabaseError:  # "malformed", "not a database"
                raise CorruptState(f"writing {self.directory / DATABASE_NAME}: {exc}") from exc
            if isinstance(exc, sqlite3.Error):  # full disk, I/O error, constraint
                raise StateError(f"writing {self.directory / DATABASE_NAME}: {exc}") from exc
            raise

    def on_rollback(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` if the transaction in progress rolls back (undo memory to match)."""
        if not self._depth:
            raise StateError("on_rollback outside a transaction")
        self._rollback_hooks.append(hook)

    # -- identities and meta ---------------------------------------------------------

    def get_identity(self, transport: str) -> bytes | None:
        """The identity material a netlayer stored for ``transport``, or None."""
        row = self._read("SELECT material FROM identities WHERE transport = ?", (transport,))
        return None if row is None else bytes(row[0])

    def put_identity(self, transport: str, material: bytes) -> None:
        """Store ``transport``'s identity material (opaque bytes), replacing any."""
        if type(material) is not bytes:
            raise TypeError("identity material is bytes")
        with self.transaction() as db:
            db.execute(
                "INSERT INTO identities (transport, material) VALUES (?, ?) "
                "ON CONFLICT (transport) DO UPDATE SET material = excluded.material",
                (transport, material),
            )

    def get_meta(self, key: str) -> bytes | None:
        """A value of the ``meta`` table, or None."""
        row = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    def put_meta(self, key: str, value: bytes) -> None:
        """Set a value of the ``meta`` table."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- objects and sturdyrefs ------------------------------------------------------

    def add_object(self, restorer: str, state: bytes, version: int = 0) -> int:
        """Store a persistent object; its id."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO objects (restorer, state, version) VALUES (?, ?, ?)",
                (restorer, state, version),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def set_state(
        self, object_id: int, state: bytes, holds: Iterable[int] | None = None,
        *, fresh: bool = False, version: int | None = None,
    ) -> list[int] | None:
        """Replace an object's state and what it holds; the ids of objects no longer kept.

        None if the object is not stored (revoked meanwhile: a live reference
        saving is harmless).  ``holds`` None leaves what it holds unchanged;
        ``fresh``: the object was just added and holds nothing yet;
        ``version``: the state's format version, if it changes.
        """
        with self.transaction() as db:
            if version is None:
                cursor = db.execute(
                    "UPDATE objects SET state = ? WHERE id = ?", (state, object_id)
                )
            else:
                cursor = db.execute(
                    "UPDATE objects SET state = ?, version = ? WHERE id = ?",
                    (state, version, object_id),
                )
            if cursor.rowcount == 0:
                return None
            if holds is None:
                return []
            new = set(holds)
            old = set() if fresh else {
                int(r[0]) for r in db.execute(
                    "SELECT held FROM object_refs WHERE holder = ?", (object_id,)
                )
            }
            if old - new:
                db.executemany(
                    "DELETE FROM object_refs WHERE holder = ? AND held = ?",
                    ((object_id, held) for held in old - new),
                )
            if new - old:
                db.executemany(
                    "INSERT INTO object_refs (holder, held) VALUES (?, ?)",
                    ((object_id, held) for held in new - old),
                )
            return self._collect(db, list(old - new)) if old - new else []

    def reaches(self, start: Iterable[int], target: int) -> bool:
        """True if ``target`` is one of ``start`` or held, directly or not, by one of them."""
        ids = list(start)
        if target in ids:
            return True
        if not ids:
            return False
        marks = ",".join("?" * len(ids))
        row = self._read(
            "WITH RECURSIVE reach(id) AS ("
            f"SELECT held FROM object_refs WHERE holder IN ({marks}) "
            "UNION SELECT r.held FROM object_refs r JOIN reach ON r.holder = reach.id"
            ") SELECT 1 FROM reach WHERE id = ? LIMIT 1",
            (*ids, target),
        )
        return row is not None

    def add_sturdyref(
        self, swiss: bytes, object_id: int | None = None, name: str | None = None
    ) -> None:
        """Answer ``fetch(swiss)`` with an object (or with what is published under ``name``)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sturdyrefs (swiss, object, name, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (swiss) DO UPDATE SET object = excluded.object, "
                "name = excluded.name",
                (swiss, object_id, name, time.time()),
            )

    _SELECT: Final = (
        "SELECT s.swiss, s.object, o.restorer, o.state, s.name, s.created "
        "FROM sturdyrefs s LEFT JOIN objects o ON o.id = s.object"
    )

    def find(self, swiss: bytes) -> StoredRef | None:
        """The sturdyref at ``swiss``, or None."""
        row = self._read(f"{self._SELECT} WHERE s.swiss = ?", (swiss,))
        return None if row is None else _stored(row)

    def swiss_for_name(self, name: str) -> bytes | None:
        """The swiss number of the sturdyref named ``name``, or None."""
        row = self._read("SELECT swiss FROM sturdyrefs WHERE name = ?", (name,))
        return None if row is None else bytes(row[0])

    def object_state(self, object_id: int) -> tuple[str, bytes, int] | None:
        """``(restorer, state, version)`` of a persistent object, or None."""
        row = self._read(
            "SELECT restorer, state, version FROM objects WHERE id = ?", (object_id,)
        )
        return None if row is None else (str(row[0]), bytes(row[1]), int(row[2]))

    def remove_sturdyref(self, swiss: bytes) -> list[int] | None:
        """Forget a sturdyref; None if there was none, else the ids of the objects deleted.

        An object is deleted when no sturdyref and no other object holds it
        (then what it held is considered in turn).  Objects that hold each
        other in a cycle are never deleted: saving such a cycle is refused.
        """
        with self.transaction() as db:
            row = db.execute("SELECT object FROM sturdyrefs WHERE swiss = ?", (swiss,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM sturdyrefs WHERE swiss = ?", (swiss,))
            return self._collect(db, [] if row[0] is None else [int(row[0])])

    @staticmethod
    def _collect(db: sqlite3.Connection, candidates: list[int]) -> list[int]:
        """Delete the candidates no sturdyref and no object holds, then what they held."""
        deleted: list[int] = []
        while candidates:
            object_id = candidates.pop()
            held = db.execute(
                "SELECT (SELECT count(*) FROM sturdyrefs WHERE object = ?) + "
                "(SELECT count(*) FROM object_refs WHERE held = ?)",
                (object_id, object_id),
            ).fetchone()[0]
            if held:
                continue
            children = [
                int(r[0]) for r in db.execute(
                    "SELECT held FROM object_refs WHERE holder = ?", (object_id,)
                )
            ]
            db.execute("DELETE FROM object_refs WHERE holder = ?", (object_id,))
            db.execute("DELETE FROM objects WHERE id = ?", (object_id,))
            deleted.append(object_id)
            candidates.extend(children)
        return deleted

    def object_count(self) -> int:
        """How many persistent objects there are."""
        row = self._read("SELECT count(*) FROM objects", ())
        assert row is not None
        return int(row[0])

    def refs(self) -> Iterator[StoredRef]:
        """Every sturdyref, oldest first."""
        try:
            for row in self._conn.execute(f"{self._SELECT} ORDER BY s.created, s.swiss"):
                yield _stored(row)
        except sqlite3.DatabaseError as exc:
            raise CorruptState(f"reading {self.directory / DATABASE_NAME}: {exc}") from exc

    def count(self) -> int:
        """How many sturdyrefs there are."""
        row = self._read("SELECT count(*) FROM sturdyrefs", ())
        assert row is not None
        return int(row[0])

    def check(self) -> list[str]:
        """SQLite's integrity check: the problems found (empty when the database is sound)."""
        try:
            rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

    def _read(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        try:
            row: tuple[Any, ...] | None = self._conn.execute(sql, params).fetchone()
        except sqlite3.DatabaseError as exc:
            raise CorruptState(f"reading {self.directory / DATABASE_NAME}: {exc}") from exc
        return row


def _stored(row: tuple[Any, ...]) -> StoredRef:
    swiss, object_id, restorer, state, name, created = row
    return StoredRef(
        bytes(swiss),
        None if object_id is None else int(object_id),
        None if restorer is None else str(restorer),
        None if state is None else bytes(state),
        None if name is None else str(name),
        float(created),
    )
