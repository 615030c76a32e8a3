"""The OCapN node: netlayers, one session per peer, objects at swiss numbers, handoffs.

::

    async with Node(tcp_testing_only()) as node:
        sturdyref = node.publish(Greeter())        # print(sturdyref) -> ocapn://...
        remote = await node.enliven("ocapn://.../s/...")
        print(await E(remote).greet("world"))

A node owns a task group: its netlayers listen in it, every session and
every handoff runs in it, and leaving the ``async with`` aborts the sessions
and cancels what is left.

Sessions are found by peer, that is by transport and designator
(:attr:`PeerLocation.key`); :meth:`Node.connect` reuses a live one and
otherwise dials.  At most one session per peer stands: an inbound hello
from a peer we already have a live session with is refused (after a short
grace period, in case the old one is being torn down), and when both sides
dial each other at once ("crossed hellos", spec section 4.1) the connection
whose initiator has the lower public ID is aborted.

Each session's bootstrap object (export 0) answers ``fetch`` from the
node's registry, and ``deposit-gift`` / ``withdraw-gift`` for third-party
handoffs.  The node plays all three handoff roles: as gifter it replaces a
reference from another session with a signed give (and deposits the gift);
as receiver it swaps a signed give for a promise and withdraws the gift; as
exporter it checks withdrawals.  The roles live in :mod:`ocapn.handoffs`;
sessions reach the node only through the public methods of
:class:`ocapn.session.SessionHost`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc

from captp import Channel, E, RemoteRef
from captp._connection import BufferBudget, Trace, transport_error_text
from captp._vat import Vat, _current_vat
from captp.errors import ConnectionLost
from captp.limits import DEFAULT_LIMITS, LimitExceeded, Limits
from ocapn.certificates import GiftTable
from ocapn.errors import (
    PeerUnreachable,
    UnknownSwissNum,
    UnsupportedTransport,
)
from ocapn.handoffs import Handoffs
from ocapn.identity import NodeIdentity
from ocapn.locators import PeerLocation, Sturdyref, parse_uri
from ocapn.netlayer import Netlayer
from ocapn.session import OCapNSession
from ocapn.wire import SPEC_PROFILE, WireProfile

if TYPE_CHECKING:  # ocapn.persist (and sqlite3) is imported only by nodes with state
    from ocapn.persist.persistent import Restorers
    from ocapn.persist.state import NodeState
    from ocapn.persist.store import StateStore

__all__ = ["Node"]

log = logging.getLogger("ocapn")

# How long an inbound hello from a peer we already have a live session with
# waits for that session to end before it is refused.  A peer that closes a
# session and opens a new one at once (the conformance suite does, between
# tests) has its old session's op:abort and FIN in flight on another socket.
DUPLICATE_GRACE_SECONDS: Final = 2.0

# How long closing a node waits for its sessions to close gracefully (their
# op:abort flushed, FIN sent, the peer's FIN seen) before cancelling them.
SHUTDOWN_GRACE_SECONDS: Final = 3.0

# How long closing a node waits for promises it passed to peers to settle,
# so that the handoffs they make reach the peers (spec-notes/0039).
HANDOFF_GRACE_SECONDS: Final = 2.0

# Swiss numbers made by publish(): 32 random bytes, as Goblins makes them.
SWISS_NUM_BYTES: Final = 32


_MISSING: Final = object()


class _Dial:
    """An outbound connection in progress, and who waits for its session."""

    __slots__ = ("connected", "done", "error", "result", "session")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.connected = anyio.Event()  # set once `session` is (or the dial failed)
        self.session: OCapNSession | None = None  # the outbound session, once connected
        self.result: OCapNSession | None = None  # the session that came of it
        self.error: BaseException | None = None


class Node:
    """An OCapN node over one or more netlayers.  Use ``async with``.

    ``profile`` is the wire profile for sessions (``spec`` by default; see
    :data:`ocapn.wire.PROFILES`); :meth:`connect` and :meth:`enliven` take a
    profile for one peer.

    ``trace``: a hook called as ``trace(direction, connection, message)`` for
    every message in ("in") and out ("out") of every session, handshakes
    included (off by default, and then it costs nothing).

    ``limits``: what peers may make the node hold and how long it waits
    for them (:class:`~captp.limits.Limits`; defaults for the open internet).

    ``state``: a state directory (or an open :class:`~ocapn.persist.StateStore`)
    where the node keeps its netlayers' identities, its sturdyrefs and its
    persistent objects, so its URIs answer after a restart; ``restorers``
    rebuild persistent objects (:mod:`ocapn.persist`).
    """

    def __init__(
        self,
        *netlayers: Netlayer,
        profile: WireProfile = SPEC_PROFILE,
        state: str | os.PathLike[str] | StateStore | None = None,
        restorers: Restorers | None = None,
        identity: NodeIdentity | None = None,
        limits: Limits = DEFAULT_LIMITS,
        trace: Trace | None = None,
    ) -> None:
        self._trace = trace
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a captp.Limits, not {type(limits).__name__}")
        self.limits = limits
        self._budget = BufferBudget(limits.max_node_buffer)
        self.refused = 0  # connections refused at a limit
        self._past_limit_hits = 0  # of sessions that ended
        if not netlayers:
            raise ValueError("a node needs at least one netlayer")
        # The identity (websocket and np designators) for every netlayer that has one.
        self.identity = identity
        if identity is not None:
            for netlayer in netlayers:
                use_identity = getattr(netlayer, "use_identity", None)
                if use_identity is not None:
                    use_identity(identity)
        self._netlayers: dict[str, Netlayer] = {}
        for netlayer in netlayers:
            if netlayer.transport in self._netlayers:
                raise ValueError(f"two netlayers for transport {netlayer.transport!r}")
            self._netlayers[netlayer.transport] = netlayer
        self.profile = profile
        self._objects: dict[bytes, Any] = {}
        self._sessions: dict[tuple[str, str], OCapNSession] = {}
        self._dials: dict[tuple[str, str], _Dial] = {}
        self._by_id: dict[bytes, OCapNSession] = {}
        self._by_engine: dict[Any, OCapNSession] = {}
        self._all: set[OCapNSession] = set()
        self._open_channels = 0
        self._channels: set[Channel] = set()
        self._all_closed = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._vat: Vat | None = None
        self._vat_token: Any = None
        self._closed = False
        # -- persistence seam (ocapn/persist): None without a state directory
        self.state: NodeState | None = None
        if state is not None:
            from ocapn.persist.state import NodeState

            self.state = NodeState(state, restorers)
        elif restorers is not None:
            raise ValueError("restorers need a state directory: Node(..., state=DIR)")
        self.handoffs = Handoffs(
            max_gifts=limits.max_gifts,
            connect=self.connect,
            is_self=self.is_self,
            session_of=self.session_of,
            session_by_id=self._by_id.get,
            spawn=self._spawn,
        )

    def __repr__(self) -> str:
        where = ", ".join(str(n.location) for n in self._netlayers.values()) if self._vat else ""
        return f"<Node {where}>"

    # == lifetime =======================================================================

    async def __aenter__(self) -> Node:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._task_group = tg
        self._vat = Vat(tg)
        self._vat_token = _current_vat.set(self._vat)
        try:
            if self.state is not None:  # persistence seam: identities before serving
                self.state.open()
                for netlayer in self._netlayers.values():
                    self.state.restore_identity(netlayer)
            for netlayer in self._netlayers.values():
                handler = functools.partial(self._accepted, netlayer)
                await tg.start(functools.partial(netlayer.serve, handler))
            if self.state is not None:  # persistence seam: and kept once they are known
                for netlayer in self._netlayers.values():
                    self.state.record_identity(netlayer)
                self.state.record_location(self.location)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closed = True
        tg = self._task_group
        assert tg is not None
        try:
            await self._settle_handoffs()
        except anyio.get_cancelled_exc_class():
            pass  # the caller's deadline: close at once
        for session in list(self._all):
            session.abort("node shutting down")
        try:
            # Not shielded: a caller's deadline or cancellation cuts the grace short.
            with anyio.move_on_after(SHUTDOWN_GRACE_SECONDS):
                while self._open_channels:
                    await self._all_closed.wait()
        except anyio.get_cancelled_exc_class():
            pass  # the caller's own cancellation goes on as it is (exc, or at its next await)
        for channel in list(self._channels):  # what did not close in time closes now
            abort = getattr(channel, "abort", None)
            if abort is not None:
                abort()
        tg.cancel_scope.cancel()
        try:
            # The node's own tasks end quietly; an error from the body of the
            # `async with` goes on as it is, not wrapped in an ExceptionGroup.
            await tg.__aexit__(None, None, None)
            return None
        finally:
            if self.state is not None:  # persistence seam
                self.state.close()
            if self._vat is not None:
                self._vat.close()
            if self._vat_token is not None:
                _current_vat.reset(self._vat_token)
                self._vat_token = None

    async def _settle_handoffs(self) -> None:
        # Promises we passed to peers and still owe: once they settle, their
        # resolutions (and the handoffs they make) go out before we leave.
        # Bounded, and cut short by the caller's deadline.
        owed = [p for s in list(self._all) if s.alive for p in s.engine.exported_pending()]
        if not owed:
            return
        with anyio.move_on_after(HANDOFF_GRACE_SECONDS):
            for promise in owed:
                with contextlib.suppress(Exception):
                    await promise
            for _ in range(3):  # the turns that send the resolutions
                await anyio.sleep(0)

    @property
    def vat(self) -> Vat:
        """The vat where this node's local objects run."""
        if self._vat is None:
            raise RuntimeError("the node is not running: use `async with node:`")
        return self._vat

    @property
    def gifts(self) -> GiftTable:
        """The gifts deposited here that wait for their receivers (we are the exporter)."""
        return self.handoffs.gifts

    @property
    def locations(self) -> list[PeerLocation]:
        """Where peers reach this node, one location per netlayer."""
        return [netlayer.location for netlayer in self._netlayers.values()]

    @property
    def location(self) -> PeerLocation:
        """Where peers reach this node (its first netlayer)."""
        return next(iter(self._netlayers.values())).location

    def is_self(self, location: PeerLocation) -> bool:
        """True if ``location`` names this node (same transport and designator)."""
        netlayer = self._netlayers.get(location.transport)
        return netlayer is not None and netlayer.location == location

    # == objects at swiss numbers =========================================================

    def publish(
        self,
        obj: Any,
        swiss_num: bytes | None = None,
        *,
        name: str | None = None,
        transport: str | None = None,
    ) -> Sturdyref:
        """Make ``obj`` fetchable; its sturdyref (``str()`` of it is the ``ocapn://`` URI).

        ``swiss_num``: the swiss number to use (default: 32 random bytes).
        On a node with a state directory, a :class:`~ocapn.persist.Persistent`
        object is stored and its sturdyref survives restarts; ``name`` keeps
        the swiss number under that name, so publishing under the same name
        in a later run gives the same sturdyref.  Other objects are ephemeral.
        ``transport``: the netlayer the sturdyref names (default: the first);
        :meth:`sturdyref` gives the same object's sturdyref on another.
        """
        if swiss_num is not None and (type(swiss_num) is not bytes or not swiss_num):
            raise TypeError("a swiss number is non-empty bytes")
        if transport is not None:
            self._netlayer_for(transport)  # an unknown transport publishes nothing
        if self.state is not None:  # persistence seam
            swiss_num = self.state.publish(obj, swiss_num, name) or swiss_num
        elif name is not None:
            raise ValueError("a named sturdyref needs a state directory: Node(..., state=DIR)")
        if swiss_num is None:
            swiss_num = secrets.token_bytes(SWISS_NUM_BYTES)
        sturdyref = self.sturdyref(swiss_num, transport=transport)
        self._objects[swiss_num] = obj
        return sturdyref

    def sturdyref(self, swiss_num: bytes, *, transport: str | None = None) -> Sturdyref:
        """The sturdyref of ``swiss_num`` on the netlayer for ``transport`` (default: the first)."""
        if transport is None:
            return Sturdyref(self.location, swiss_num)
        return Sturdyref(self._netlayer_for(transport).location, swiss_num)

    def _netlayer_for(self, transport: str) -> Netlayer:
        netlayer = self._netlayers.get(transport)
        if netlayer is None:
            raise UnsupportedTransport(
                f"this node has no {transport!r} netlayer (it has {sorted(self._netlayers)})"
            )
        return netlayer

    def unpublish(self, swiss_num: bytes) -> None:
        """Stop answering ``fetch`` for ``swiss_num`` in this run (live references stay live).

        A stored sturdyref answers again after a restart; :meth:`revoke` ends it for good.
        """
        self._objects.pop(swiss_num, None)

    def revoke(self, sturdyref: Sturdyref | str | bytes) -> bool:
        """End a sturdyref (or URI, or swiss number) for good, stored or not; True if known.

        References already enlivened stay live until their sessions end.
        """
        if type(sturdyref) is str:
            sturdyref = Sturdyref.from_uri(sturdyref)
        if type(sturdyref) is Sturdyref:
            if not self.is_self(sturdyref.peer):
                raise UnknownSwissNum(f"{sturdyref.peer} is not this node")
            sturdyref = sturdyref.swiss_num
        if type(sturdyref) is not bytes:
            raise TypeError("revoke takes a Sturdyref, an ocapn:// URI or a swiss number")
        known = self._objects.pop(sturdyref, None) is not None
        if self.state is not None:  # persistence seam
            known = self.state.revoke(sturdyref) or known
        return known

    def lookup(self, swiss_num: bytes | str) -> Any:
        """The object published at ``swiss_num``; :class:`UnknownSwissNum` if none."""
        if type(swiss_num) is str:
            swiss_num = swiss_num.encode("utf-8")
        if type(swiss_num) is not bytes:
            raise UnknownSwissNum(f"a swiss number is bytes, not {type(swiss_num).__name__}")
        obj = self._objects.get(swiss_num, _MISSING)
        if obj is not _MISSING:
            if self.state is None or self.state.still_stored(swiss_num):
                return obj
            del self._objects[swiss_num]  # persistence seam: revoked by another process
        if self.state is None:
            raise UnknownSwissNum("no object at that swiss number")
        obj = self.state.lookup(swiss_num)  # persistence seam: restored on first use
        self._objects[swiss_num] = obj
        return obj

    # == sessions =========================================================================

    def stats(self) -> dict[str, Any]:
        """What the node holds and has refused, and each established session's :meth:`stats`."""
        sessions = self.sessions
        return {
            "connections": self._open_channels,
            "handshakes": sum(1 for s in self._all if not s.established),
            "sessions": len(sessions),
            "gifts": len(self.handoffs.gifts),
            "buffered_bytes": self._budget.held,
            "refused_connections": self.refused,
            "limit_hits": self.refused + self._past_limit_hits + sum(
                s.engine.limit_hits for s in self._all
            ),
            "per_session": [s.stats() for s in sessions],
        }

    @property
    def sessions(self) -> list[OCapNSession]:
        """The established sessions, one per peer."""
        return [s for s in self._sessions.values() if s.alive]

    async def connect(
        self, location: PeerLocation, *, profile: WireProfile | None = None
    ) -> OCapNSession:
        """The session with the peer at ``location``: a live one, or a new one dialed now."""
        if self.is_self(location):
            raise PeerUnreachable(f"{location} is this node")
        key = location.key
        while True:
            session = self._sessions.get(key)
            if session is not None and session.alive:
                return session
            if self._closed:
                raise PeerUnreachable("the node is shutting down")
            dial = self._dials.get(key)
            if dial is None:
                netlayer = self._netlayers.get(location.transport)
                if netlayer is None:
                    raise UnsupportedTransport(
                        f"no netlayer for transport {location.transport!r} "
                        f"(this node speaks {sorted(self._netlayers)})"
                    )
                dial = self._dials[key] = _Dial()
                self._spawn(self._dial, netlayer, location, dial, profile or self.profile)
            await dial.done.wait()
            if dial.result is None:
                why = transport_error_text(dial.error) if dial.error else "no reason given"
                raise PeerUnreachable(f"no session with {location}: {why}") from dial.error

    async def enliven(
        self, sturdyref: Sturdyref | str, *, profile: WireProfile | None = None
    ) -> Any:
        """A live reference to the object a sturdyref (or its ``ocapn://`` URI) names."""
        if type(sturdyref) is str:
            parsed = parse_uri(sturdyref)
            if type(parsed) is not Sturdyref:
                raise TypeError(f"not a sturdyref URI (no /s/<swiss>): {sturdyref!r}")
            sturdyref = parsed
        if type(sturdyref) is not Sturdyref:
            raise TypeError(f"enliven takes a Sturdyref or a URI, not {type(sturdyref).__name__}")
        if self.is_self(sturdyref.peer):
            return self.lookup(sturdyref.swiss_num)
        session = await self.connect(sturdyref.peer, profile=profile)
        return await E(session.bootstrap()).fetch(sturdyref.swiss_num)

    def session_of(self, ref: Any) -> OCapNSession | None:
        """The session a remote reference (or remote promise) travels over, if it is ours."""
        if type(ref) is RemoteRef:
            return self._by_engine.get(ref.engine)
        return None

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._task_group is None:
            raise RuntimeError("the node is not running: use `async with node:`")
        self._task_group.start_soon(fn, *args)

    async def _run_session(self, session: OCapNSession, channel: Channel) -> None:
        self._all.add(session)
        self._channels.add(channel)
        self._open_channels += 1
        try:
            await session.run()
        finally:
            self._all.discard(session)
            try:
                with anyio.CancelScope(shield=True):
                    await channel.aclose()  # flush, FIN, drain: the peer sees an orderly end
            finally:
                self._channels.discard(channel)
                self._open_channels -= 1
                if not self._open_channels:
                    self._all_closed.set()
                    self._all_closed = anyio.Event()

    async def _dial(
        self, netlayer: Netlayer, location: PeerLocation, dial: _Dial, profile: WireProfile
    ) -> None:
        error: BaseException | None = None
        try:
            async with netlayer.connect(location) as channel:
                session = OCapNSession(
                    self, channel, netlayer, outbound=True, profile=profile, expected=location,
                    limits=self.limits, budget=self._budget, trace=self._trace,
                )
                dial.session = session
                dial.connected.set()
                await self._run_session(session, channel)
                if not session.established:
                    error = session.engine.dead
        except Exception as exc:  # refused, unreachable, reset: the dial fails, nothing else
            error = exc
        finally:
            if self._dials.get(location.key) is dial:
                del self._dials[location.key]
            if dial.result is None:
                dial.error = error or PeerUnreachable("the connection ended before the handshake")
            dial.connected.set()
            dial.done.set()

    async def _accepted(self, netlayer: Netlayer, channel: Channel) -> None:
        session = OCapNSession(
            self, channel, netlayer, outbound=False, profile=self.profile,
            limits=self.limits, budget=self._budget, trace=self._trace,
        )
        limits = self.limits
        refusal: LimitExceeded | None = None
        if self._open_channels >= limits.max_connections:
            refusal = LimitExceeded("max_connections", limits.max_connections, "open connections")
        elif sum(1 for s in self._all if not s.established) >= limits.max_handshakes:
            refusal = LimitExceeded(
                "max_handshakes", limits.max_handshakes, "connections still in their handshake"
            )
        if refusal is not None:  # refused: an op:abort naming the limit, then FIN
            self.refused += 1
            log.warning("refusing a connection on %s: %s", netlayer.transport, refusal)
            # A netlayer may hand us the channel a turn before its transport is
            # connected (asyncio: connection_made is the next callback).
            await anyio.sleep(0)
            session.abort(str(refusal))
        await self._run_session(session, channel)

    async def admit_session(self, session: OCapNSession) -> None:
        """A peer's hello checked out: decide whether its session may stand.

        Aborts ``session`` if it may not (one session per peer, crossed hellos).
        """
        location = session.peer_location
        assert location is not None
        if self.is_self(location):
            session.abort("that is this node's own location")
            return
        key = location.key
        if len(self._by_id) >= self.limits.max_sessions:
            session.engine.limit_hits += 1
            session.abort(str(LimitExceeded(
                "max_sessions", self.limits.max_sessions, "established sessions"
            )))
            return
        if session.outbound:
            existing = self._sessions.get(key)
            if existing is not None and existing.alive:
                session.abort("a session with this peer is already open")
                return
            self._establish(session)
            return
        dial = self._dials.get(key)
        if dial is not None and dial.session is None:
            # Our dial to this peer is still connecting: its hello will cross
            # this one, and both sides must settle the crossing alike, which
            # takes its rank.  Wait for it (or for the dial to fail).
            with anyio.move_on_after(DUPLICATE_GRACE_SECONDS):
                await dial.connected.wait()
            if not session.alive:
                return
        existing = self._sessions.get(key)
        if existing is not None and existing.alive:
            # Perhaps the peer is replacing a session whose end is still in flight.
            with anyio.move_on_after(DUPLICATE_GRACE_SECONDS):
                await existing.ended.wait()
            existing = self._sessions.get(key)
            if existing is not None and existing.alive:
                session.abort("a session with this peer is already open")
                return
        dial = self._dials.get(key)
        outbound = dial.session if dial is not None else None
        if outbound is not None and not outbound.established and outbound.alive:
            # Crossed hellos: both of us dialed.  Keep the connection whose
            # initiator has the higher public ID (spec section 4.1).
            mine = outbound.initiator_rank
            theirs = session.initiator_rank
            if mine > theirs:
                session.abort("crossed hellos mitigated")
                return
            self._establish(session)
            outbound.abort("crossed hellos mitigated")
            return
        self._establish(session)

    def _establish(self, session: OCapNSession) -> None:
        assert session.peer_location is not None
        key = session.peer_location.key
        self._sessions[key] = session
        self._by_id[session.session_id] = session
        self._by_engine[session.engine] = session
        dial = self._dials.pop(key, None)
        if dial is not None:
            dial.result = session
            dial.done.set()
        log.info("session with %s established", session.peer_location)

    def session_ended(self, session: OCapNSession, error: ConnectionLost) -> None:
        """A session ended (for any reason): forget it and the gifts it deposited."""
        if session.peer_location is not None:
            key = session.peer_location.key
            if self._sessions.get(key) is session:
                del self._sessions[key]
        if self._by_id.get(session.session_id) is session:
            del self._by_id[session.session_id]
            self.handoffs.session_ended(session, str(error))
        self._by_engine.pop(session.engine, None)
        self._past_limit_hits += session.engine.limit_hits
        log.info("session %r ended: %s", session, error.reason)
