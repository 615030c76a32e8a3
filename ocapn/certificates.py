"""Third-party handoff certificates and the exporter's gift table (spec section 11).

The roles that use them live in :mod:`ocapn.handoffs`.

Three peers take part: the *gifter* G holds a reference to an object that
lives on the *exporter* E, and passes it to the *receiver* R.

* G deposits the object with E under a fresh gift ID (``deposit-gift`` on
  G-E) and sends R, in place of the reference, a :class:`HandoffGive` signed
  with G's G-E session key.
* R wraps that signed give in a :class:`HandoffReceive` (signed with R's G-R
  key, with a handoff count never used before on E-R) and asks E for the gift
  (``withdraw-gift`` on E-R).
* E checks both signatures and the count, and answers with the object.

Everything here is pure: building, signing, reading and checking the
certificates, and the table where deposits wait for withdrawals.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

from captp import Promise, Record, Symbol, make_promise
from captp._promise import Resolver, fulfilled
from ocapn import cbor, syrup
from ocapn.crypto import KeyPair, PublicKey, encode_signature, parse_signature
from ocapn.errors import HandoffError, LocatorError, SignatureError
from ocapn.locators import PeerLocation, Sturdyref

__all__ = [
    "DESC_HANDOFF_GIVE",
    "DESC_HANDOFF_RECEIVE",
    "DESC_SIG_ENVELOPE",
    "GiftTable",
    "HandoffGive",
    "HandoffReceive",
    "SignedEnvelope",
    "encode_value",
]

DESC_SIG_ENVELOPE: Final = Symbol("desc:sig-envelope")
DESC_HANDOFF_GIVE: Final = Symbol("desc:handoff-give")
DESC_HANDOFF_RECEIVE: Final = Symbol("desc:handoff-receive")


def _to_record(value: Any) -> Any:
    t = type(value)
    if t is SignedEnvelope or t is PeerLocation or t is Sturdyref:
        return value.to_record()
    raise syrup.SyrupEncodeError(f"{t.__name__} cannot be signed")


def encode_value(value: Any, encoding: str = "syrup") -> bytes:
    """The canonical Syrup (or CBOR) bytes of a certificate (what its signature covers).

    Locators and envelopes decoded from the wire re-encode exactly as they
    arrived, so a certificate read from a peer gives back the bytes it signed.
    """
    if encoding == "cbor":
        try:
            return cbor.encode(value, default=_to_record)
        except cbor.CBOREncodeError as exc:
            raise syrup.SyrupEncodeError(str(exc)) from None
    return syrup.encode(value, default=_to_record)


class SignedEnvelope:
    """``<desc:sig-envelope signed sig-val>``: a record and a signature of its bytes.

    It travels by copy: re-sending it writes the same record and signature.
    """

    __slots__ = ("signature", "signed")

    def __init__(self, signed: Record, signature: bytes) -> None:
        if type(signed) is not Record:
            raise SignatureError("a sig-envelope signs a record")
        if type(signature) is not bytes or len(signature) != 64:
            raise SignatureError("an Ed25519 signature is 64 bytes")
        self.signed = signed
        self.signature = signature

    def __repr__(self) -> str:
        label = self.signed.label
        return f"<SignedEnvelope {label.name if type(label) is Symbol else label!r}>"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is SignedEnvelope
            and other.signature == self.signature
            and encode_value(other.signed) == encode_value(self.signed)
        )

    def __hash__(self) -> int:
        return hash((SignedEnvelope, self.signature))

    @property
    def is_give(self) -> bool:
        """True if it wraps a ``desc:handoff-give``."""
        return bool(self.signed.label == DESC_HANDOFF_GIVE)

    def to_record(self) -> Record:
        """The ``desc:sig-envelope`` record."""
        return Record(DESC_SIG_ENVELOPE, (self.signed, encode_signature(self.signature)))

    @classmethod
    def from_fields(cls, fields: list[Any]) -> SignedEnvelope:
        """Read the fields of a decoded ``desc:sig-envelope``; SignatureError if malformed."""
        if len(fields) != 2:
            raise SignatureError(f"<desc:sig-envelope> takes 2 fields, got {len(fields)}")
        return cls(fields[0], parse_signature(fields[1]))

    @classmethod
    def sign(cls, record: Record, key: KeyPair, encoding: str = "syrup") -> SignedEnvelope:
        """``record`` signed by ``key``, over its bytes in ``encoding`` (``spec-notes/0033``)."""
        return cls(record, key.sign(encode_value(record, encoding)))

    def verify(self, key: PublicKey) -> bool:
        """True if ``key`` signed this record, in Syrup or in CBOR (``spec-notes/0033``)."""
        for encoding in ("syrup", "cbor"):
            try:
                data = encode_value(self.signed, encoding)
            except syrup.SyrupEncodeError:
                continue
            if key.verify(self.signature, data):
                return True
        return False


@dataclass(frozen=True, slots=True)
class HandoffGive:
    """What the gifter signs: "the holder of ``receiver_key`` may collect gift ``gift_id``"."""

    receiver_key: PublicKey
    exporter_location: PeerLocation
    session: bytes
    gifter_side: bytes
    gift_id: Any

    def to_record(self) -> Record:
        """``<desc:handoff-give receiver-key exporter-location session gifter-side gift-id>``."""
        return Record(
            DESC_HANDOFF_GIVE,
            (
                self.receiver_key.descriptor(),
                self.exporter_location.to_record(),
                self.session,
                self.gifter_side,
                self.gift_id,
            ),
        )

    @classmethod
    def from_record(cls, record: Record) -> HandoffGive:
        """Read a ``desc:handoff-give``; :class:`HandoffError` if it is malformed."""
        if record.label != DESC_HANDOFF_GIVE or len(record.fields) != 5:
            raise HandoffError("expected <desc:handoff-give> with 5 fields")
        key, location, session, gifter_side, gift_id = record.fields
        try:
            receiver_key = PublicKey.from_descriptor(key)
            if type(location) is not PeerLocation:
                location = PeerLocation.from_record(location)
        except (SignatureError, LocatorError) as exc:
            raise HandoffError(f"malformed handoff-give: {exc}") from None
        if type(session) is not bytes or type(gifter_side) is not bytes:
            raise HandoffError("handoff-give: session and gifter-side must be bytes")
        return cls(receiver_key, location, session, gifter_side, gift_id)


@dataclass(frozen=True, slots=True)
class HandoffReceive:
    """What the receiver signs to withdraw a gift from the exporter."""

    receiving_session: bytes
    receiving_side: bytes
    handoff_count: int
    signed_give: SignedEnvelope

    def to_record(self) -> Record:
        """``<desc:handoff-receive receiving-session receiving-side handoff-count signed-give>``."""
        return Record(
            DESC_HANDOFF_RECEIVE,
            (self.receiving_session, self.receiving_side, self.handoff_count, self.signed_give),
        )

    @classmethod
    def from_record(cls, record: Record) -> HandoffReceive:
        """Read a ``desc:handoff-receive``; :class:`HandoffError` if it is malformed."""
        if record.label != DESC_HANDOFF_RECEIVE or len(record.fields) != 4:
            raise HandoffError("expected <desc:handoff-receive> with 4 fields")
        session, side, count, give = record.fields
        if type(session) is not bytes or type(side) is not bytes:
            raise HandoffError("handoff-receive: receiving-session and -side must be bytes")
        if type(count) is not int or count < 0:
            raise HandoffError(f"handoff-receive: bad handoff count {count!r}")
        if type(give) is not SignedEnvelope or not give.is_give:
            raise HandoffError("handoff-receive: signed-give must be a signed handoff-give")
        return cls(session, side, count, give)


def _gift_key(gift_id: Any) -> Hashable:
    # Keep 1, True and 1.0 apart, as OCapN does.
    try:
        hash(gift_id)
    except TypeError:
        kind = type(gift_id).__name__
        raise HandoffError(f"a gift id must be a plain value, not {kind}") from None
    return (type(gift_id), gift_id)


class GiftTable:
    """The exporter's deposited gifts, keyed by (gifter session ID, gift ID).

    Deposit and withdrawal arrive on different sessions, so either may come
    first: a withdrawal that finds nothing waits for the deposit.  A gift is
    removed when withdrawn (the same gift ID may be deposited again later).
    """

    def __init__(self) -> None:
        self._gifts: dict[tuple[bytes, Hashable], Any] = {}
        self._waiting: dict[tuple[bytes, Hashable], list[Resolver]] = {}
        self._held: dict[bytes, int] = {}  # gifts held per gifter session

    def held_for(self, session_id: bytes) -> int:
        """How many gifts the gifter session ``session_id`` has left here."""
        return self._held.get(session_id, 0)

    def __len__(self) -> int:
        return len(self._gifts) + sum(len(w) for w in self._waiting.values())

    def deposit(self, session_id: bytes, gift_id: Any, gift: Any) -> None:
        """Leave ``gift`` for whoever withdraws ``gift_id`` (or hand it to a waiting one)."""
        key = (session_id, _gift_key(gift_id))
        waiting = self._waiting.get(key)
        if waiting:
            resolver = waiting.pop(0)
            if not waiting:
                del self._waiting[key]
            resolver.resolve(gift)
            return
        if key in self._gifts:
            raise HandoffError("a gift with this id is already waiting to be withdrawn")
        self._gifts[key] = gift
        self._held[session_id] = self._held.get(session_id, 0) + 1

    def withdraw(self, session_id: bytes, gift_id: Any) -> Promise:
        """A promise for the gift: settled now if it was deposited, else at the deposit."""
        key = (session_id, _gift_key(gift_id))
        if key in self._gifts:
            held = self._held[session_id] - 1
            if held:
                self._held[session_id] = held
            else:
                del self._held[session_id]
            return fulfilled(self._gifts.pop(key))
        promise, resolver = make_promise()
        self._waiting.setdefault(key, []).append(resolver)
        return promise

    def waiting_for(self, session_id: bytes) -> bool:
        """True if a withdrawal waits for a deposit of the gifter session ``session_id``."""
        return any(k[0] == session_id for k in self._waiting)

    def drop_session(self, session_id: bytes, reason: Callable[[], BaseException]) -> None:
        """Forget the gifts of a gifter session that ended; break withdrawals still waiting."""
        if self._held.pop(session_id, 0):
            for key in [k for k in self._gifts if k[0] == session_id]:
                del self._gifts[key]
        for key in [k for k in self._waiting if k[0] == session_id]:
            for resolver in self._waiting.pop(key):
                resolver.break_(reason())
