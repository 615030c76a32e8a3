"""The three roles a node plays in third-party handoffs (spec section 11).

The *gifter* G holds a reference to an object on the *exporter* E and sends
it to the *receiver* R.  :class:`Handoffs` plays whichever role falls to this
node; the certificates and the gift table are in :mod:`ocapn.certificates`.

* gifter (:meth:`Handoffs.give`): a reference from another session about to
  be sent becomes a signed give; the gift is deposited with E once the
  message carrying the give has encoded;
* receiver (:meth:`Handoffs.receive`): a signed give that arrives becomes a
  promise, settled by withdrawing the gift from E (dialed if need be);
* exporter (:meth:`Handoffs.deposit`, :meth:`Handoffs.withdraw`): deposits
  wait in the gift table; a withdrawal is checked (both signatures, the
  sessions named, the handoff count) before it gets the gift.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio

from captp import E, Promise, make_promise
from captp._promise import Resolver, broken
from captp.limits import LimitExceeded
from ocapn.certificates import GiftTable, HandoffGive, HandoffReceive, SignedEnvelope
from ocapn.errors import HandoffError, UnsupportedTransport
from ocapn.locators import PeerLocation
from ocapn.session import OCapNSession

__all__ = ["GIFT_ID_BYTES", "Handoffs"]

# Gift IDs made by the gifter (spec section 5: random, 32 bytes recommended).
GIFT_ID_BYTES: Final = 32

# How long the gifts of a gifter session that ended stay withdrawable: an
# introducer may hand off and leave at once (its deposit and its give are on
# their way); the receiver then has this long to withdraw (spec-notes/0039).
GIFT_GRACE_SECONDS: Final = 30.0


class Handoffs:
    """The gifter, receiver and exporter roles of one node.

    ``connect(location)`` gives the session with a peer (dialing it if need
    be); ``is_self(location)`` says whether a location is this node;
    ``session_of(ref)`` is the session a remote reference travels over;
    ``session_by_id(id)`` the established session with that session ID;
    ``spawn(fn, *args)`` runs a task the node owns.
    """

    def __init__(
        self,
        *,
        connect: Callable[[PeerLocation], Awaitable[OCapNSession]],
        is_self: Callable[[PeerLocation], bool],
        session_of: Callable[[Any], OCapNSession | None],
        session_by_id: Callable[[bytes], OCapNSession | None],
        spawn: Callable[..., None],
        max_gifts: int | None = None,
    ) -> None:
        self.gifts = GiftTable()
        self._max_gifts = max_gifts
        # Gifter sessions that ended with gifts still here: id -> (session, why it ended).
        self._departed: dict[bytes, tuple[OCapNSession, str]] = {}
        self._connect = connect
        self._is_self = is_self
        self._session_of = session_of
        self._session_by_id = session_by_id
        self._spawn = spawn

    # == gifter ==========================================================================

    def give(
        self, receiver: OCapNSession, ref: Any
    ) -> tuple[SignedEnvelope, Callable[[], None]] | None:
        """``ref`` (from another session) is about to be sent to ``receiver``.

        Returns the signed give to write instead, and the deposit to make once
        the message carrying it has encoded; None: send ``ref`` as a proxy.
        """
        exporter = self._session_of(ref)
        if exporter is None or not exporter.established or not exporter.alive:
            return None  # not one of our OCapN sessions: pass it as a proxy
        assert receiver.peer_key is not None and exporter.peer_location is not None
        gift_id = os.urandom(GIFT_ID_BYTES)

        def deposit() -> None:
            E.send_only(exporter.bootstrap())["deposit-gift"](gift_id, ref)

        give = HandoffGive(
            receiver_key=receiver.peer_key,
            exporter_location=exporter.peer_location,
            session=exporter.session_id,
            gifter_side=exporter.my_public_id,
            gift_id=gift_id,
        )
        envelope = SignedEnvelope.sign(
            give.to_record(), exporter.key_pair, exporter.wire.out_encoding
        )
        return envelope, deposit

    # == receiver ========================================================================

    def receive(
        self, gifter: OCapNSession, envelope: SignedEnvelope
    ) -> tuple[Promise, Callable[[], None]]:
        """A signed give arrived from ``gifter``: a promise for the object it hands us.

        The second item starts the withdrawal; run it once the message that
        carried the give has been received whole.
        """
        try:
            give = HandoffGive.from_record(envelope.signed)
        except HandoffError as exc:
            return broken(exc), _nothing
        if give.receiver_key != gifter.key_pair.public:
            return broken(HandoffError("this handoff names another receiver")), _nothing
        if self._is_self(give.exporter_location):
            return broken(HandoffError("this handoff names this node as the exporter")), _nothing
        promise, resolver = make_promise()

        def start() -> None:
            self._spawn(self._collect, gifter, envelope, give, resolver)

        return promise, start

    async def _collect(
        self, gifter: OCapNSession, envelope: SignedEnvelope, give: HandoffGive,
        resolver: Resolver,
    ) -> None:
        try:
            try:
                exporter = await self._connect(give.exporter_location)
            except UnsupportedTransport as exc:
                raise HandoffError(
                    f"cannot reach the exporter at {give.exporter_location}: {exc}"
                ) from exc
            receive = HandoffReceive(
                receiving_session=exporter.session_id,
                receiving_side=exporter.my_public_id,
                handoff_count=exporter.next_handoff_count(),
                signed_give=envelope,
            )
            # Signed with our key from the gifter's session: the give names it.
            signed = SignedEnvelope.sign(
                receive.to_record(), gifter.key_pair, gifter.wire.out_encoding
            )
            resolver.resolve(E(exporter.bootstrap())["withdraw-gift"](signed))
        except Exception as exc:
            resolver.break_(exc)

    # == exporter ========================================================================

    def deposit(self, gifter: OCapNSession, gift_id: Any, gift: Any) -> None:
        """The gifter leaves ``gift`` (our own object) for the receiver of ``gift_id``."""
        if not gifter.established:
            raise HandoffError("deposit-gift before the handshake")
        if not gifter.alive:  # it left in the read that brought this: the grace applies
            dead = gifter.engine.dead
            self._depart(gifter, dead.reason if dead is not None else "ended")
        limit = self._max_gifts
        if limit is not None and self.gifts.held_for(gifter.session_id) >= limit:
            gifter.engine.limit_hits += 1
            error = LimitExceeded("max_gifts", limit, "gifts deposited and not withdrawn")
            gifter.abort(str(error))
            raise error
        self.gifts.deposit(gifter.session_id, gift_id, gift)

    def withdraw(self, receiver: OCapNSession, envelope: Any) -> Promise:
        """Check a withdrawal (spec section 11.3); a promise for the gift, or HandoffError."""
        if type(envelope) is not SignedEnvelope:
            raise HandoffError("withdraw-gift takes a signed desc:handoff-receive")
        receive = HandoffReceive.from_record(envelope.signed)
        give = HandoffGive.from_record(receive.signed_give.signed)
        gifter = self._session_by_id(give.session)
        if gifter is None or not gifter.alive:
            departed = self._departed.get(give.session)
            if departed is None:
                raise HandoffError(
                    "the introducer left: the give names no session this node has open "
                    "(the gifter's session ended, and its gifts with it, or never was)"
                )
            gifter = departed[0]
        if gifter.peer_key is None:
            raise HandoffError("the give names a session whose handshake is not done")
        if give.gifter_side != gifter.peer_public_id:
            raise HandoffError("the give's gifter-side is not the gifter's public ID")
        if not receive.signed_give.verify(gifter.peer_key):
            raise HandoffError("the give's signature does not verify with the gifter's key")
        if give.exporter_location != gifter.my_location:
            raise HandoffError(f"the give names another exporter: {give.exporter_location}")
        if not envelope.verify(give.receiver_key):
            raise HandoffError("the receive's signature does not verify with the receiver key")
        if (
            receive.receiving_session != receiver.session_id
            or receive.receiving_side != receiver.peer_public_id
        ):
            raise HandoffError("the receive names another session than the one it came on")
        if receive.handoff_count in receiver.used_handoff_counts:
            raise HandoffError(f"handoff count {receive.handoff_count} was already used")
        receiver.used_handoff_counts.add(receive.handoff_count)
        return self.gifts.withdraw(give.session, give.gift_id)

    def session_ended(self, session: OCapNSession, reason: str) -> None:
        """A gifter session ended: its gifts stay withdrawable for a grace, then go.

        Withdrawals waiting for a deposit of it wait through the grace too: the
        deposit may be in the read that ended the session, handled right after.
        """
        session_id = session.session_id
        if self.gifts.held_for(session_id) or self.gifts.waiting_for(session_id):
            self._depart(session, reason)

    def _depart(self, session: OCapNSession, reason: str) -> None:
        if session.session_id not in self._departed:
            self._departed[session.session_id] = (session, reason)
            self._spawn(self._forget_later, session.session_id, reason)

    async def _forget_later(self, session_id: bytes, reason: str) -> None:
        try:
            await anyio.sleep(GIFT_GRACE_SECONDS)
        finally:
            self._departed.pop(session_id, None)
            self.gifts.drop_session(session_id, lambda: HandoffError(
                f"the introducer left: its session ended ({reason}) and the gift was "
                f"not deposited within {GIFT_GRACE_SECONDS:g} s"
            ))


def _nothing() -> None:
    return None
