"""A node's state directory: identity, sturdyrefs and persistent objects across restarts.

Each test restarts a node in this process (a new Node on the same directory)
and talks to it from a second node over real tcp-testing-only sockets.  The
crash tests (a real second process killed with SIGKILL) are in
``test_persist_crash.py``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from _persist_util import ACounter, ACounter2, Boom, PCounter, PDir, PLog

from captp import E, far
from captp.errors import RemoteError
from netlayers import tcp_testing_only
from ocapn import Node, Sturdyref, UnknownSwissNum
from ocapn.cli import main as cli_main
from ocapn.persist import (
    SCHEMA_VERSION,
    CorruptState,
    ForeignState,
    NotSupplied,
    Persistent,
    RestoreFailed,
    RestorerMissing,
    StateError,
    StateInUse,
    StateStore,
    UnsupportedStateVersion,
)
from ocapn.persist.store import APPLICATION_ID, DATABASE_NAME, MIGRATIONS

pytestmark = pytest.mark.anyio

RESTORERS = [PCounter, PLog, PDir, ACounter, ACounter2]


@far
class Plain:
    def hello(self) -> str:
        return "hello"


def stateful(directory: Path, restorers: Any = RESTORERS) -> Node:
    return Node(tcp_testing_only(), state=directory, restorers=restorers)


async def call(uri: str | Sturdyref, method: str, *args: Any) -> Any:
    """Enliven ``uri`` from a fresh client node and call it (errors come back raised)."""
    async with Node(tcp_testing_only()) as client:
        with anyio.fail_after(30):
            target = await client.enliven(str(uri))
            return await E(target)[method](*args)


# == the store ===========================================================================


def test_a_fresh_directory_gets_the_current_schema(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s") as store:
        assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        assert store.count() == 0
        assert store.check() == []
    assert (tmp_path / "s" / DATABASE_NAME).stat().st_mode & 0o077 == 0  # keys inside
    assert (tmp_path / "s").stat().st_mode & 0o077 == 0
    db = sqlite3.connect(tmp_path / "s" / DATABASE_NAME)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_second_opener_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = StateStore(tmp_path)
    with pytest.raises(StateInUse, match="in use by process"):
        StateStore(tmp_path)
    first.close()
    StateStore(tmp_path).close()


def test_identity_material_is_kept_per_transport(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        assert store.get_identity("np") is None
        store.put_identity("np", b"\x00key")
        store.put_identity("websocket", b"other")
        store.put_identity("np", b"\x01key")
    with StateStore(tmp_path) as store:
        assert store.get_identity("np") == b"\x01key"
        assert store.get_identity("websocket") == b"other"


def _v1_database(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO objects (id, restorer, state) VALUES (7, 'test-counter', ?)",
               (b"{1\"n5+}",))
    db.execute("INSERT INTO sturdyrefs (swiss, object, created) VALUES (?, 7, 0)", (b"s1",))
    db.close()


def test_migrations_take_v0_and_v1_databases_to_the_current_version(tmp_path: Path) -> None:
    v0 = tmp_path / "v0"
    v0.mkdir()
    sqlite3.connect(v0 / DATABASE_NAME).close()  # an empty file: version 0
    with StateStore(v0) as store:
        assert store.schema_version == SCHEMA_VERSION
    v1 = tmp_path / "v1"
    v1.mkdir()
    _v1_database(v1 / DATABASE_NAME)
    with StateStore(v1) as store:
        assert store.schema_version == SCHEMA_VERSION
        row = store.find(b"s1")
        assert row is not None and row.object_id == 7 and row.name is None
        assert row.restorer == "test-counter" and row.state == b'{1"n5+}'
        assert store.object_state(7) == ("test-counter", b'{1"n5+}', 0)  # v4: version 0
        store.add_sturdyref(b"s2", None, "named")  # the v2 column works
        assert store.swiss_for_name("named") == b"s2"


async def test_a_migrated_v1_database_serves_its_objects(tmp_path: Path) -> None:
    _v1_database(tmp_path / DATABASE_NAME)
    async with stateful(tmp_path) as node:
        assert await call(Sturdyref(node.location, b"s1"), "incr") == 6


def test_foreign_databases_are_refused_untouched(tmp_path: Path) -> None:
    cases = {
        "other-app": ("CREATE TABLE t (x)", "PRAGMA application_id = 42"),
        "no-app-id": ("CREATE TABLE t (x)",),
    }
    for name, statements in cases.items():
        directory = tmp_path / name
        directory.mkdir()
        db = sqlite3.connect(directory / DATABASE_NAME)
        for statement in statements:
            db.execute(statement)
        db.commit()
        db.close()
        before = (directory / DATABASE_NAME).read_bytes()
        with pytest.raises(ForeignState, match="not an ocapn state database"):
            StateStore(directory)
        assert (directory / DATABASE_NAME).read_bytes() == before
        StateStore(tmp_path / "free").close()  # and the lock was released
        with pytest.raises(ForeignState):
            StateStore(directory)  # the refused opener released its lock too


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    StateStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(UnsupportedStateVersion, match="reads up to"):
        StateStore(tmp_path)


def test_a_file_that_is_not_sqlite_is_corrupt_state(tmp_path: Path) -> None:
    garbage = b"this is not a database, it is a shopping list\n" * 100
    (tmp_path / DATABASE_NAME).write_bytes(garbage)
    with pytest.raises(CorruptState, match="not a readable SQLite database"):
        StateStore(tmp_path)
    assert (tmp_path / DATABASE_NAME).read_bytes() == garbage


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        with pytest.raises(RuntimeError), store.transaction():
            object_id = store.add_object("test-counter", b"{1\"n1+}")
            store.add_sturdyref(b"x", object_id)
            raise RuntimeError("crash in the middle")
        assert store.find(b"x") is None and store.count() == 0


def test_a_name_given_twice_is_a_state_error(tmp_path: Path) -> None:
    with StateStore(tmp_path) as store:
        store.add_sturdyref(b"a", None, "main")
        with pytest.raises(StateError, match="UNIQUE"):
            store.add_sturdyref(b"b", None, "main")


# == a node across restarts ===============================================================


async def test_a_persistent_object_comes_back_with_its_state(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        counter_uri = str(node.publish(PCounter()))
        log_uri = str(node.publish(PLog()))
        assert await call(counter_uri, "incr") == 1
        assert await call(counter_uri, "incr") == 2
        assert await call(log_uri, "add", [b"x", {"k": 1}]) == 1
        location = node.location
    async with stateful(tmp_path) as node:
        assert node.location == location and node.location.hints == location.hints
        assert await call(counter_uri, "incr") == 3  # same URI, state kept
        assert await call(log_uri, "all") == [[b"x", {"k": 1}]]


async def test_nothing_is_loaded_at_start_and_restored_objects_are_shared(
    tmp_path: Path,
) -> None:
    async with stateful(tmp_path) as node:
        counter = PCounter()
        first = node.publish(counter)
        second = node.publish(counter)  # one object, two sturdyrefs
        assert first != second
        await call(first, "incr")
    async with stateful(tmp_path) as node:
        assert node._objects == {}  # lazily: nothing restored yet
        assert await call(second, "incr") == 2
        assert await call(first, "incr") == 3  # the same restored object
        assert node.lookup(first.swiss_num) is node.lookup(second.swiss_num)


async def test_plain_objects_are_ephemeral(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        uri = str(node.publish(Plain()))
        assert await call(uri, "hello") == "hello"
        assert node.state is not None and node.state.store.count() == 0
    async with stateful(tmp_path) as node:
        with pytest.raises(RemoteError, match="no object at that swiss number"):
            await call(uri, "hello")


async def test_a_named_sturdyref_keeps_its_swiss_number(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        uri = str(node.publish(Plain(), name="main"))
    async with stateful(tmp_path) as node:
        with pytest.raises(RemoteError, match=r"NotSupplied.*'main'"):
            await call(uri, "hello")  # not published again yet
        with pytest.raises(NotSupplied):
            node.lookup(Sturdyref.from_uri(uri).swiss_num)
        assert str(node.publish(Plain(), name="main")) == uri
        assert await call(uri, "hello") == "hello"


async def test_a_missing_restorer_breaks_that_sturdyref_only(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        log_uri = str(node.publish(PLog()))
        counter_uri = str(node.publish(PCounter()))
        await call(counter_uri, "incr")
    async with stateful(tmp_path, restorers=[PCounter]) as node:
        with pytest.raises(RemoteError, match=r"RestorerMissing.*'test-log'"):
            await call(log_uri, "all")
        with pytest.raises(RestorerMissing):
            node.lookup(Sturdyref.from_uri(log_uri).swiss_num)
        assert await call(counter_uri, "incr") == 2  # everything else is served
    async with stateful(tmp_path) as node:
        assert await call(log_uri, "all") == []  # the row was kept, not guessed away


async def test_a_restorer_that_raises_is_restore_failed(tmp_path: Path) -> None:
    async with stateful(tmp_path, restorers=[Boom, PCounter]) as node:
        boom_uri = str(node.publish(Boom()))
        counter_uri = str(node.publish(PCounter()))
    async with stateful(tmp_path, restorers=[Boom, PCounter]) as node:
        with pytest.raises(RemoteError, match=r"RestoreFailed.*the restorer is broken"):
            await call(boom_uri, "anything")
        with pytest.raises(RestoreFailed) as info:
            node.lookup(Sturdyref.from_uri(boom_uri).swiss_num)
        assert type(info.value.__cause__) is RuntimeError
        assert await call(counter_uri, "incr") == 1


async def test_corrupt_state_bytes_break_that_sturdyref_only(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        bad = node.publish(PCounter())
        good = str(node.publish(PCounter()))
        store = node.state.store if node.state else None
        assert store is not None
        row = store.find(bad.swiss_num)
        assert row is not None and row.object_id is not None
        store.set_state(row.object_id, b"\xff not syrup")
    async with stateful(tmp_path) as node:
        with pytest.raises(RemoteError, match=r"CorruptState.*does not decode"):
            await call(bad, "incr")
        assert await call(good, "incr") == 1


async def test_revoke_ends_a_sturdyref_for_good(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        kept = str(node.publish(PCounter()))
        gone = node.publish(PCounter())
        plain = node.publish(Plain())
        await call(gone, "incr")
        assert node.revoke(str(gone)) is True
        assert node.revoke(plain) is True
        assert node.revoke(gone.swiss_num) is False
        with pytest.raises(UnknownSwissNum):
            node.lookup(gone.swiss_num)
        with pytest.raises(RemoteError, match="no object at that swiss number"):
            await call(plain, "hello")
        assert node.state is not None and node.state.store.count() == 1
    async with stateful(tmp_path) as node:
        with pytest.raises(RemoteError, match="no object at that swiss number"):
            await call(gone, "incr")
        assert await call(kept, "incr") == 1


async def test_a_second_node_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        uri = str(node.publish(PCounter()))
        with pytest.raises(StateInUse):
            async with stateful(tmp_path):
                pass  # pragma: no cover
        assert await call(uri, "incr") == 1  # the first node is unharmed


async def test_saves_in_one_transaction_commit_together_or_not_at_all(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        a, b = PCounter(), PCounter()
        uri_a, uri_b = str(node.publish(a)), str(node.publish(b))
        assert node.state is not None
        with pytest.raises(RuntimeError), node.state.transaction():
            a.incr()
            b.incr()
            raise RuntimeError("crash before the end of the transaction")
    async with stateful(tmp_path) as node:
        assert await call(uri_a, "value") == 0 and await call(uri_b, "value") == 0
        a, b = node.lookup(Sturdyref.from_uri(uri_a).swiss_num), node.lookup(
            Sturdyref.from_uri(uri_b).swiss_num
        )
        assert node.state is not None
        with node.state.transaction():
            a.incr()
            b.incr()
    async with stateful(tmp_path) as node:
        assert await call(uri_a, "value") == 1 and await call(uri_b, "value") == 1


def test_persistent_classes_must_name_a_restorer() -> None:
    class Nameless(Persistent):
        pass

    with pytest.raises(TypeError, match="names no restorer"):
        Node(tcp_testing_only(), state="/nonexistent", restorers=[Nameless])
    with pytest.raises(TypeError, match="non-empty string"):
        type("Bad", (Persistent,), {}, restorer="")


def test_restorers_without_state_are_refused() -> None:
    with pytest.raises(ValueError, match="state directory"):
        Node(tcp_testing_only(), restorers=[PCounter])


async def test_autosave_commits_after_each_method_and_only_changes(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        assert node.state is not None
        store = node.state.store
        writes = []
        original = store.set_state

        def counting(object_id: int, *args: Any, **kwargs: Any) -> Any:
            writes.append(object_id)
            return original(object_id, *args, **kwargs)

        store.set_state = counting  # type: ignore[method-assign]
        uri = str(node.publish(ACounter()))
        uri2 = str(node.publish(ACounter2(5)))
        writes.clear()
        assert await call(uri, "incr") == 1
        assert await call(uri, "add-later", 10) == 11  # a coroutine: saved once it returned
        assert len(writes) == 2
        assert await call(uri, "value") == 11
        assert len(writes) == 2  # a read writes nothing
        with pytest.raises(RemoteError, match="refused"):
            await call(uri, "fail")
        assert len(writes) == 2  # a method that raised saved nothing
        assert await call(uri2, "double") == 10 and await call(uri2, "incr") == 11
        assert len(writes) == 4
    async with stateful(tmp_path) as node:
        assert await call(uri, "value") == 11  # not 1011
        assert await call(uri2, "value") == 11


def test_autosave_wraps_only_public_functions() -> None:
    assert getattr(ACounter.incr, "_ocapn_saving", False)
    assert getattr(ACounter2.double, "_ocapn_saving", False)
    assert ACounter2.incr is ACounter.incr  # not wrapped twice
    assert not getattr(PCounter.incr, "_ocapn_saving", False)
    assert not getattr(ACounter.__persist_state__, "_ocapn_saving", False)


@far
@dataclass
class Release1(Persistent, restorer="versioned"):
    n: int = 0

    def value(self) -> Any:
        return self.n


@far
@dataclass
class Release3(Persistent, restorer="versioned", version=2):
    count: int = 0
    label: str = ""

    @classmethod
    def __persist_upgrade__(cls, version: int, state: Any) -> Any:
        if version == 0:
            return {"count": state["n"]}
        return {**state, "label": f"was {state['count']}"}

    def value(self) -> Any:
        return [self.count, self.label]

    def incr(self) -> int:
        self.count += 1
        self._save()
        return self.count


async def test_a_newer_release_upgrades_old_states_step_by_step(tmp_path: Path) -> None:
    async with stateful(tmp_path, restorers=[Release1]) as node:
        uri = str(node.publish(Release1(7)))
    async with stateful(tmp_path, restorers=[Release3]) as node:
        assert await call(uri, "value") == [7, "was 7"]
        assert node.state is not None
        swiss = Sturdyref.from_uri(uri).swiss_num
        row = node.state.store.find(swiss)
        assert row is not None and row.object_id is not None
        stored = node.state.store.object_state(row.object_id)
        assert stored is not None and stored[2] == 0  # not rewritten on read
        assert await call(uri, "incr") == 8
        stored = node.state.store.object_state(row.object_id)
        assert stored is not None and stored[2] == 2  # the save wrote v2
    async with stateful(tmp_path, restorers=[Release3]) as node:
        assert await call(uri, "value") == [8, "was 7"]
    async with stateful(tmp_path, restorers=[Release1]) as node:  # an older release
        with pytest.raises(RemoteError, match=r"RestoreFailed.*stored at version 2 by newer"):
            await call(uri, "value")
    async with stateful(tmp_path, restorers={"versioned": lambda state: Release1(0)}) as node:
        with pytest.raises(RemoteError, match=r"RestoreFailed.*reads version 0 only"):
            await call(uri, "value")
    async with stateful(tmp_path, restorers={"versioned": Release3}) as node:
        assert await call(uri, "value") == [8, "was 7"]  # a class in a mapping upgrades


def test_state_versions_are_checked() -> None:
    with pytest.raises(TypeError, match="int >= 0"):
        type("Bad", (Persistent,), {}, restorer="bad", version=-1)


# == persistent objects that hold persistent objects ========================================


async def test_objects_held_in_a_state_come_back_with_theirs(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        directory = PDir()
        uri = str(node.publish(directory))
        async with Node(tcp_testing_only()) as client:
            remote = await client.enliven(uri)
            assert await E(E(remote).make("a")).incr() == 1
            shared = directory.entries["a"]
            directory.put("also-a", shared)  # one object held twice
            assert await E(E(remote).make("b")).incr() == 1
        assert node.state is not None and node.state.store.object_count() == 3
    async with stateful(tmp_path) as node, Node(tcp_testing_only()) as client:
        remote = await client.enliven(uri)
        assert await E(E(remote).get("a")).incr() == 2  # restored, bound: it saves
        assert await E(E(remote).get("also-a")).incr() == 3  # the same object
        assert await E(E(remote).get("b")).value() == 1
    async with stateful(tmp_path) as node:
        restored = node.lookup(Sturdyref.from_uri(uri).swiss_num)
        assert restored.entries["a"] is restored.entries["also-a"]
        assert restored.entries["a"].n == 3


async def test_live_references_in_a_state_are_refused(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        uri = str(node.publish(PDir()))
        plain = node.publish(Plain())
        async with Node(tcp_testing_only()) as client:
            remote = await client.enliven(uri)
            ephemeral = await client.enliven(plain)
            with pytest.raises(RemoteError, match=r"StateError.*not passable data"):
                await E(remote).put("x", ephemeral)  # a reference from a live session
            with pytest.raises(RemoteError, match=r"StateError.*not passable data"):
                await E(remote).put("x", await client.enliven(plain))
    async with stateful(tmp_path) as node, Node(tcp_testing_only()) as client:
        with pytest.raises(RemoteError, match="KeyError"):
            await E(await client.enliven(uri)).get("x")  # nothing was written


async def test_a_cycle_of_persistent_objects_is_refused_at_save(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        a, b = PDir(), PDir()
        uri = str(node.publish(a))
        a.put("b", b)
        with pytest.raises(StateError, match="cycle"):
            b.put("a", a)
        with pytest.raises(StateError, match="cycle"):
            a.put("self", a)
        c = PDir({"a": a})  # new, holding its holder: refused, and left unbound
        with pytest.raises(StateError, match="cycle"):
            b.put("c", c)
        assert c._ocapn_binding is None
        assert node.state is not None and node.state.store.object_count() == 2
    async with stateful(tmp_path) as node:
        restored = node.lookup(Sturdyref.from_uri(uri).swiss_num)
        assert list(restored.entries) == ["b"] and restored.entries["b"].entries == {}


async def test_revoking_deletes_what_only_that_sturdyref_kept(tmp_path: Path) -> None:
    async with stateful(tmp_path) as node:
        directory = PDir()
        uri = node.publish(directory)
        directory.make("only-here")
        kept = directory.make("published-too")
        kept_uri = node.publish(kept)
        inner = PDir()
        directory.put("inner", inner)
        inner.make("deep")
        assert node.state is not None and node.state.store.object_count() == 5
        only_here = directory.entries["only-here"]
        directory.drop("only-here")  # nothing holds it any more: deleted
        assert node.state.store.object_count() == 4 and only_here._ocapn_binding is None
        assert node.revoke(uri) is True
        assert node.state.store.object_count() == 1  # what kept_uri names
        assert directory._ocapn_binding is None
        directory.make("after")  # a live reference may go on; it saves nothing
        assert node.state.store.object_count() == 1
    async with stateful(tmp_path) as node:
        assert await call(kept_uri, "incr") == 1


async def test_a_revoke_from_another_process_never_lets_an_old_object_save_over_a_new(
    tmp_path: Path,
) -> None:
    async with stateful(tmp_path) as node:
        old = PCounter()
        old_uri = str(node.publish(old))  # the newest object: the highest id
        with StateStore(tmp_path, exclusive=False) as tool:  # as ocapn revoke does
            assert tool.remove_sturdyref(Sturdyref.from_uri(old_uri).swiss_num) == [1]
        new = PCounter(100)
        new_uri = str(node.publish(new))
        old.incr()  # its row is gone: the save finds nothing to update
        assert await call(new_uri, "value") == 100
    async with stateful(tmp_path) as node:
        assert await call(new_uri, "value") == 100


def test_the_object_reference_label_is_reserved(tmp_path: Path) -> None:
    from captp import Record
    from ocapn.persist.state import OBJECT_REF, NodeState

    with StateStore(tmp_path) as store:
        state = NodeState(store, RESTORERS)
        with pytest.raises(StateError, match="reserved"):
            state.publish(PDir({"x": Record(OBJECT_REF, (1,))}), None, None)
        assert store.object_count() == 0


# == ocapn refs, ocapn revoke, ocapn serve --state ===========================================


async def test_refs_and_revoke_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path)
    async with stateful(tmp_path) as node:
        counter = str(node.publish(PCounter()))
        named = str(node.publish(Plain(), name="main"))
        other = str(node.publish(PCounter()))
        await call(counter, "incr")
        await call(named, "hello")
        capsys.readouterr()
        assert cli_main(["refs", "--state", state, "--check"]) == 0  # read-only, while running
        listed = capsys.readouterr().out.splitlines()
        assert [line.split("\t")[0] for line in listed] == [counter, named, other]
        assert "restorer=test-counter" in listed[0] and "name=main" in listed[1]
        # Beside the running node: it refuses the revoked ones from the next fetch on.
        assert cli_main(["revoke", "--state", state, counter, named]) == 0
        with pytest.raises(RemoteError, match="no object at that swiss number"):
            await call(counter, "incr")
        with pytest.raises(RemoteError, match="no object at that swiss number"):
            await call(named, "hello")
        assert await call(other, "incr") == 1
    assert cli_main(["revoke", "--state", state, counter]) == 1  # already gone
    assert "not kept here" in capsys.readouterr().err
    assert cli_main(["revoke", "--state", state, other]) == 0  # with the node stopped
    capsys.readouterr()
    assert cli_main(["refs", "--state", state]) == 0
    assert capsys.readouterr().out == ""
    async with stateful(tmp_path) as node:
        for uri in (counter, named, other):
            with pytest.raises(RemoteError, match="no object at that swiss number"):
                await call(uri, "incr")


def test_revoke_refuses_a_uri_of_another_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with StateStore(tmp_path) as store:
        store.put_meta("location", b"ocapn://me.tcp-testing-only?host=127.0.0.1&port=1")
    other = "ocapn://someone-else.tcp-testing-only/s/AAAA?host=127.0.0.1&port=1"
    assert cli_main(["revoke", "--state", str(tmp_path), other]) == 1
    assert "names another node" in capsys.readouterr().err


def test_refs_on_a_foreign_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / DATABASE_NAME).write_bytes(b"nope" * 1000)
    assert cli_main(["refs", "--state", str(tmp_path)]) == 1
    assert "CorruptState" in capsys.readouterr().err


async def test_a_damaged_page_breaks_the_sturdyrefs_on_it_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with stateful(tmp_path) as node:
        assert node.state is not None
        with node.state.transaction():
            refs = [node.publish(PCounter(i)) for i in range(3000)]
    # The node closed: the WAL is checkpointed into the database file.
    data = bytearray((tmp_path / DATABASE_NAME).read_bytes())
    page = 4096
    assert not (tmp_path / (DATABASE_NAME + "-wal")).exists() and len(data) % page == 0
    # A sturdyref whose swiss number sits on leaf pages only (index and table, twice).
    # An index b-tree keeps some keys in its interior pages: zeroing one of those
    # would cut off every key under it, so the page's type byte must say "leaf".
    def on_leaves(swiss: bytes) -> set[int] | None:
        if data.count(swiss) != 2:
            return None
        numbers = {data.find(swiss) // page, data.rfind(swiss) // page}
        leaf = all(data[n * page + (100 if n == 0 else 0)] in (0x0A, 0x0D) for n in numbers)
        return numbers if leaf else None

    victim = next(r for r in refs[1000:] if on_leaves(r.swiss_num))
    pages = on_leaves(victim.swiss_num)
    assert pages is not None
    for number in pages:
        data[number * page:(number + 1) * page] = bytes(page)
    (tmp_path / DATABASE_NAME).write_bytes(bytes(data))
    elsewhere = [
        r for r in refs
        if all(data[n * page:(n + 1) * page].find(r.swiss_num) < 0 for n in pages)
        and data.count(r.swiss_num) == 2
    ]
    assert len(elsewhere) > 2000
    async with stateful(tmp_path) as node:  # starts: its identity is elsewhere
        with pytest.raises(RemoteError, match=r"CorruptState.*malformed"):
            await call(victim, "value")
        with pytest.raises(CorruptState):
            node.lookup(victim.swiss_num)
        for ref in (elsewhere[0], elsewhere[len(elsewhere) // 2], elsewhere[-1]):
            assert await call(ref, "value") == refs.index(ref)
    capsys.readouterr()
    assert cli_main(["refs", "--state", str(tmp_path), "--check"]) == 1
    assert "integrity:" in capsys.readouterr().err
