"""One OCapN session: the handshake, then the CapTP engine, over one netlayer connection.

An :class:`OCapNSession` owns a fresh Ed25519 key pair and a
:class:`captp.Connection` (the one driver every session runs in: channel,
wire codec and engine).  The session is the connection's *gate*, the small
state machine in front of the engine:

1. it sends our ``op:start-session`` at once (on a connection we *accepted*,
   right after the peer's first bytes, on a stream in the framing it used);
2. the first message must be the peer's ``op:start-session`` (or an
   ``op:abort``): version ``"1.0"``, a location signature that verifies, and
   on a connection we dialed, the peer we dialed.  The node then decides
   whether the session may stand (one session per peer, crossed hellos);
3. every later message goes to the engine; a second ``op:start-session``
   aborts the session.

Whatever goes wrong with one session (a malformed message, a bad signature, a
reset connection) aborts that session only.  When it ends the channel is
closed gracefully: flush, FIN, drain.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from captp import Channel, E, Promise, far
from captp._connection import BufferBudget, Connection, Trace
from captp._vat import Timer, Vat
from captp.engine import OCAPN_POLICY, Engine
from captp.errors import ConnectionLost
from captp.limits import DEFAULT_LIMITS, LimitExceeded, Limits
from captp.messages import Abort
from ocapn import syrup
from ocapn.certificates import SignedEnvelope
from ocapn.crypto import KeyPair, PublicKey, my_location_bytes, session_id
from ocapn.errors import HandshakeError
from ocapn.identity import SessionBinding
from ocapn.locators import PeerLocation
from ocapn.wire import OCapNWire, StartSession, WireProfile

if TYPE_CHECKING:
    from ocapn.netlayer import Netlayer

__all__ = [
    "CAPTP_VERSION",
    "HANDSHAKE_TIMEOUT_SECONDS",
    "HandoffRoles",
    "OCapNBootstrap",
    "OCapNSession",
    "SessionHost",
]

log = logging.getLogger("ocapn")

CAPTP_VERSION: Final = "1.0"

# A connection that has not completed its handshake after this long is
# aborted, so idle sockets cannot pile up.  The conformance suite waits up to
# 60 s for a reply but always completes its handshakes in milliseconds.
HANDSHAKE_TIMEOUT_SECONDS: Final = DEFAULT_LIMITS.handshake_timeout

# The liveness probe fetches this swiss number, which no node is expected to
# publish: the fetch breaks at once on any OCapN peer (see spec-notes/0039).
PROBE_SWISS_NUM: Final = b"ocapn-python:liveness-probe"


class HandoffRoles(Protocol):
    """The handoff roles a session calls on (see :class:`ocapn.handoffs.Handoffs`)."""

    def give(
        self, receiver: OCapNSession, ref: Any
    ) -> tuple[SignedEnvelope, Callable[[], None]] | None:
        """What to write instead of ``ref`` (and the deposit to make once sent), or None."""

    def receive(
        self, gifter: OCapNSession, envelope: SignedEnvelope
    ) -> tuple[Promise, Callable[[], None]]:
        """A promise for what a signed give hands us, and what starts the withdrawal."""

    def deposit(self, gifter: OCapNSession, gift_id: Any, gift: Any) -> None:
        """The gifter leaves ``gift`` for the receiver of ``gift_id``."""

    def withdraw(self, receiver: OCapNSession, envelope: Any) -> Promise:
        """A promise for the gift a signed handoff-receive names (checked first)."""


class SessionHost(Protocol):
    """What a session needs of the node that runs it: the whole interface between them."""

    @property
    def vat(self) -> Vat:
        """Where local objects run."""

    @property
    def handoffs(self) -> HandoffRoles:
        """The node's handoff roles."""

    def lookup(self, swiss_num: bytes | str) -> Any:
        """The object published at ``swiss_num`` (UnknownSwissNum if none)."""

    async def admit_session(self, session: OCapNSession) -> None:
        """The peer's hello checked out: let the session stand, or abort it."""

    def session_ended(self, session: OCapNSession, error: ConnectionLost) -> None:
        """The session ended, for any reason (called once)."""


@far(name="OCapNBootstrap")
class OCapNBootstrap:
    """The object each session exports at position 0 (spec section 10)."""

    def __init__(self, host: SessionHost, session: OCapNSession) -> None:
        self._host = host
        self._session = session

    def fetch(self, swiss_num: bytes) -> Any:
        """The object published at ``swiss_num`` (UnknownSwissNum if none)."""
        return self._host.lookup(swiss_num)

    def deposit_gift(self, gift_id: Any, gift: Any) -> None:
        """Gifter: leave ``gift`` (our own object) for the receiver it gives ``gift_id`` to."""
        self._host.handoffs.deposit(self._session, gift_id, gift)

    def withdraw_gift(self, envelope: Any) -> Any:
        """Receiver: the gift a signed ``desc:handoff-receive`` names (maybe a promise)."""
        return self._host.handoffs.withdraw(self._session, envelope)


class OCapNSession:
    """One session with one peer.  The node makes them; :meth:`run` drives one."""

    def __init__(
        self,
        node: SessionHost,
        channel: Channel,
        netlayer: Netlayer,
        *,
        outbound: bool,
        profile: WireProfile,
        expected: PeerLocation | None = None,
        limits: Limits | None = None,
        budget: BufferBudget | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.node = node
        self.limits = limits = limits or DEFAULT_LIMITS
        self.outbound = outbound
        self.profile = profile
        # A netlayer that authenticates its peer (np) binds the session to that:
        # our identity key as session key, and location signatures bound to it.
        self.binding: SessionBinding | None = getattr(channel, "session_binding", None)
        self.key_pair = self.binding.key_pair if self.binding is not None else KeyPair()
        self.my_location = netlayer.location
        self.expected = expected
        self.peer_location: PeerLocation | None = None
        self.peer_key: PublicKey | None = None
        self.session_id = b""
        self.established = False
        stream = netlayer.framing == "stream"
        # The side that accepted answers: it sends its hello once the node has
        # let the dialer's hello stand (on a stream, in the framing the dialer's
        # first bytes use).  So a dialer's session is established only once the
        # other side has admitted it, and on crossed hellos both sides decide
        # between the same two connections, neither of which is established.
        self._framing_unknown = not outbound and stream
        self._handshake_timer: Timer | None = None
        self._handoff_counts = itertools.count()
        self.used_handoff_counts: set[int] = set()
        name = f"{'to' if outbound else 'from'} {netlayer.transport}"

        decoding = syrup.Limits(max_depth=limits.max_depth, max_size=limits.max_message_bytes)

        def make_wire(engine: Engine) -> OCapNWire:
            return OCapNWire(
                engine,
                profile,
                framing="none" if stream else "message",
                encoding=getattr(channel, "encoding", None),  # negotiated by the netlayer
                on_give=self._give,
                limits=decoding,
            )

        self.connection = Connection(
            channel, make_wire, node.vat, bootstrap=OCapNBootstrap(node, self),
            policy=OCAPN_POLICY, name=name, gate=self, on_lost=self._lost,
            handoff=self._handoff, limits=limits, budget=budget, probe=self._probe,
            trace=trace,
        )
        self.engine = self.connection.engine
        self.wire: OCapNWire = self.connection.wire  # type: ignore[assignment]
        self.ended = self.connection.ended

    def __repr__(self) -> str:
        peer = self.peer_location.to_uri() if self.peer_location else "(handshake)"
        state = "" if self.engine.dead is None else " ended"
        return f"<OCapNSession {'to' if self.outbound else 'from'} {peer}{state}>"

    # -- what the node and users see ------------------------------------------------

    @property
    def my_public_id(self) -> bytes:
        """Our public ID ("side ID") in this session."""
        return self.key_pair.public.public_id

    @property
    def peer_public_id(self) -> bytes:
        """The peer's public ID in this session."""
        if self.peer_key is None:
            raise RuntimeError("the handshake is not done")
        return self.peer_key.public_id

    @property
    def initiator_rank(self) -> bytes:
        """Crossed hellos: of two connections between the same peers, the higher rank stands."""
        if self.binding is not None:
            return self.binding.initiator_rank
        return self.my_public_id if self.outbound else self.peer_public_id

    @property
    def alive(self) -> bool:
        """True until the session ends."""
        return self.engine.dead is None

    def bootstrap(self) -> Any:
        """The peer's bootstrap object (export 0): fetch, deposit-gift, withdraw-gift."""
        return self.engine.bootstrap()

    def next_handoff_count(self) -> int:
        """A handoff count never used before on this session (we are the receiver)."""
        return next(self._handoff_counts)

    def abort(self, reason: str) -> None:
        """Send ``op:abort`` and end the session (the channel then closes gracefully)."""
        self.engine.abort(reason)

    async def run(self) -> None:
        """Handshake, then read and act on messages until the session ends."""
        await self.connection.run()

    # -- the gate: the handshake in front of the engine ---------------------------------

    @property
    def open(self) -> bool:
        """True once the handshake is done and the node let the session stand."""
        return self.established

    def start(self, connection: Connection) -> None:
        """Speak first (the dialer; the other side answers); start the clock."""
        if self.outbound:
            self._send_hello()
        # Cancelled once the handshake is done or the session ends (most end
        # sooner): a timer waiting 30 s per connection kept megabytes.
        if self.alive:
            self._handshake_timer = self.node.vat.call_later(
                self.limits.handshake_timeout, _handshake_expired, weakref.ref(self)
            )

    def received(self, connection: Connection, data: bytes) -> None:
        """Bytes before the handshake is done: the first ones tell a stream's framing."""
        if self._framing_unknown:
            self._framing_unknown = False
            self.wire.out_framing = self.wire.detect(data)

    def _send_hello(self) -> None:
        location = self.my_location.to_record()
        signed = my_location_bytes(location, self.wire.out_encoding)
        if self.binding is not None:
            signed = self.binding.location_bytes(signed)
        signature = self.key_pair.sign(signed)
        self.connection.send_control(
            StartSession(CAPTP_VERSION, self.key_pair.public, self.my_location, signature)
        )

    def handshake_expired(self) -> None:
        """The handshake timer fired: abort the session unless it is established."""
        if not self.established and self.alive:
            self.engine.limit_hits += 1
            self.abort(str(LimitExceeded(
                "handshake_timeout", self.limits.handshake_timeout, "no op:start-session"
            )))

    async def admit(self, connection: Connection, message: Any) -> None:
        """The first message must be the peer's ``op:start-session`` (or ``op:abort``)."""
        if type(message) is Abort:
            self.engine.receive(message)
            return
        if type(message) is not StartSession:
            raise HandshakeError(
                f"expected op:start-session, got {type(message).__name__} before the handshake"
            )
        if message.version != CAPTP_VERSION:
            raise HandshakeError(
                f"unsupported CapTP version {message.version!r} (this node speaks "
                f"{CAPTP_VERSION!r})"
            )
        location = message.location
        signed = my_location_bytes(location.to_record(), self.wire.in_encoding or "syrup")
        if self.binding is not None:
            if message.public_key != self.binding.peer_key:
                raise HandshakeError("the session key is not the key the netlayer authenticated")
            if location.key != self.binding.peer:
                raise HandshakeError(f"{location} is not the peer the netlayer authenticated")
            signed = self.binding.location_bytes(signed)
        if not message.public_key.verify(message.signature, signed):
            raise HandshakeError("the location signature does not verify")
        if self.expected is not None and location != self.expected:
            raise HandshakeError(f"dialed {self.expected} but the peer says it is {location}")
        self.peer_key = message.public_key
        self.peer_location = location
        direction = "to" if self.outbound else "from"
        self.engine.name = f"{direction} {location.designator[:12]}.{location.transport}"
        self.session_id = session_id(self.my_public_id, message.public_key.public_id)
        await self.node.admit_session(self)
        if self.engine.dead is None:
            if not self.outbound:
                self._send_hello()  # the answer: the node let the session stand
            self.established = True
            self._stop_handshake_timer()

    def check(self, message: Any) -> Any:
        """A message after the handshake: there is no second hello."""
        if type(message) is StartSession:
            raise HandshakeError("a second op:start-session on an established session")
        return message

    def _handoff(self, ref: Any) -> Any:
        # A reference from another session is about to be sent here.
        return self.node.handoffs.give(self, ref) if self.established else None

    def _probe(self) -> None:
        # Liveness: a question every OCapN peer answers at once (a fetch of a
        # swiss number nobody publishes: it breaks); any reply shows it is there.
        E(self.engine.bootstrap()).fetch(PROBE_SWISS_NUM)

    def stats(self) -> dict[str, Any]:
        """What this session holds and has done: tables, traffic, last activity, limit hits."""
        return {"peer": self.peer_location.to_uri() if self.peer_location else None,
                **self.connection.stats()}

    def _lost(self, error: ConnectionLost) -> None:
        # Called once, whatever ended the session.
        self._stop_handshake_timer()
        self.node.session_ended(self, error)

    def _stop_handshake_timer(self) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None:
            timer.cancel()

    # -- handoffs: gives we receive become promises -------------------------------------

    def _give(self, envelope: SignedEnvelope) -> tuple[Promise, Callable[[], None]]:
        # The decoder met a signed give: a promise stands for it, and the
        # withdrawal starts once the message that carried it is received.
        if not self.established:
            raise HandshakeError("a signed handoff inside op:start-session")
        return self.node.handoffs.receive(self, envelope)


def _handshake_expired(ref: weakref.ref[OCapNSession]) -> None:
    session = ref()
    if session is not None:
        session.handshake_expired()
