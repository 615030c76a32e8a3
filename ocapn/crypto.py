"""Ed25519 keys, signatures and the identifiers derived from them (spec section 5).

OCapN writes keys and signatures as gcrypt-style s-expressions in Syrup lists:

* public key: ``['public-key ['ecc ['curve 'Ed25519] ['flags 'eddsa] ['q <32 bytes>]]]``
* signature: ``['sig-val ['eddsa ['r <32 bytes>] ['s <32 bytes>]]]``

A *public ID* (the spec's "side ID") is ``SHA256(SHA256(syrup(public-key)))``;
a *session ID* is ``SHA256(SHA256(b"prot0" + min(id_a, id_b) + max(id_a, id_b)))``.
Every signature covers the canonical Syrup bytes of a value, so signing and
verifying both re-encode what they are given.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final

from captp import Record, Symbol
from ocapn import cbor, syrup
from ocapn.errors import SignatureError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

# ``cryptography`` is imported when a key is first made or checked, not with
# this module: it is a fifth of the time ``import ocapn`` took.

__all__ = [
    "KeyPair",
    "PublicKey",
    "encode_signature",
    "my_location_bytes",
    "parse_signature",
    "session_id",
    "sha256d",
]

_PUBLIC_KEY: Final = Symbol("public-key")
_ECC: Final = Symbol("ecc")
_CURVE_ED25519: Final = [Symbol("curve"), Symbol("Ed25519")]
_FLAGS_EDDSA: Final = [Symbol("flags"), Symbol("eddsa")]
_Q: Final = Symbol("q")
_SIG_VAL: Final = Symbol("sig-val")
_EDDSA: Final = Symbol("eddsa")
_R: Final = Symbol("r")
_S: Final = Symbol("s")
_MY_LOCATION: Final = Symbol("my-location")

# The bytes of a public-key descriptor before the 32 key bytes (spec section 5.1).
_PUBLIC_KEY_PREFIX: Final = b"[10'public-key[3'ecc[5'curve7'Ed25519][5'flags5'eddsa][1'q32:"
_PUBLIC_KEY_SUFFIX: Final = b"]]]"


def sha256d(data: bytes) -> bytes:
    """SHA-256 applied twice, as every OCapN identifier is made."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


class PublicKey:
    """An Ed25519 public key as OCapN passes it around: 32 raw bytes."""

    __slots__ = ("_key", "_public_id", "raw")

    def __init__(self, raw: bytes) -> None:
        if type(raw) is not bytes or len(raw) != 32:
            raise SignatureError("an Ed25519 public key is 32 bytes")
        self.raw = raw
        self._key: Ed25519PublicKey | None = None
        self._public_id: bytes | None = None

    def __eq__(self, other: object) -> bool:
        return type(other) is PublicKey and other.raw == self.raw

    def __hash__(self) -> int:
        return hash((PublicKey, self.raw))

    def __repr__(self) -> str:
        return f"<PublicKey {self.raw[:4].hex()}...>"

    def descriptor(self) -> list[Any]:
        """The Syrup value of the key: ``['public-key ['ecc ... ['q <raw>]]]``."""
        return [_PUBLIC_KEY, [_ECC, _CURVE_ED25519, _FLAGS_EDDSA, [_Q, self.raw]]]

    def encoded(self) -> bytes:
        """The canonical Syrup bytes of :meth:`descriptor` (96 bytes)."""
        return _PUBLIC_KEY_PREFIX + self.raw + _PUBLIC_KEY_SUFFIX

    @property
    def public_id(self) -> bytes:
        """The 32-byte public ID ("side ID"): SHA256d of the encoded descriptor."""
        if self._public_id is None:
            self._public_id = sha256d(self.encoded())
        return self._public_id

    @classmethod
    def from_descriptor(cls, value: Any) -> PublicKey:
        """Read a public-key descriptor; :class:`SignatureError` if it is not one."""
        try:
            head, (ecc, curve, flags, (q, raw)) = value
            ok = (
                type(value) is list
                and head == _PUBLIC_KEY
                and ecc == _ECC
                and curve == _CURVE_ED25519
                and flags == _FLAGS_EDDSA
                and q == _Q
                and type(raw) is bytes
            )
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise SignatureError(f"not an Ed25519 public-key descriptor: {value!r:.200}")
        return cls(raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if ``signature`` (64 bytes) is this key's signature of ``data``."""
        from cryptography.exceptions import InvalidSignature

        if self._key is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            try:
                self._key = Ed25519PublicKey.from_public_bytes(self.raw)
            except ValueError:
                return False
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def verify_value(self, signature: bytes, value: Any) -> bool:
        """True if ``signature`` signs the canonical Syrup bytes of ``value``."""
        try:
            data = syrup.encode(value)
        except syrup.SyrupEncodeError:
            return False
        return self.verify(signature, data)


class KeyPair:
    """An Ed25519 key pair.  OCapN makes a fresh one for every session."""

    __slots__ = ("_private", "public")

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        if private is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            private = Ed25519PrivateKey.generate()
        self._private = private
        self.public = PublicKey(self._private.public_key().public_bytes_raw())

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair with this 32-byte secret seed (RFC 8032); for tests and vectors."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def __repr__(self) -> str:
        return f"<KeyPair {self.public!r}>"

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def sign_value(self, value: Any) -> bytes:
        """The signature of the canonical Syrup bytes of ``value``."""
        return self._private.sign(syrup.encode(value))


def encode_signature(signature: bytes) -> list[Any]:
    """The Syrup value of a signature: ``['sig-val ['eddsa ['r R] ['s S]]]``."""
    if len(signature) != 64:
        raise SignatureError("an Ed25519 signature is 64 bytes")
    return [_SIG_VAL, [_EDDSA, [_R, signature[:32]], [_S, signature[32:]]]]


def parse_signature(value: Any) -> bytes:
    """The 64 signature bytes of a ``sig-val`` value; :class:`SignatureError` if malformed."""
    try:
        head, (eddsa, (r_label, r), (s_label, s)) = value
        ok = (
            type(value) is list
            and head == _SIG_VAL
            and eddsa == _EDDSA
            and r_label == _R
            and s_label == _S
            and type(r) is bytes
            and type(s) is bytes
            and len(r) == 32
            and len(s) == 32
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SignatureError(f"not an Ed25519 sig-val: {value!r:.200}")
    return bytes(r) + bytes(s)


def session_id(id_a: bytes, id_b: bytes) -> bytes:
    """The session ID of a session whose two keys have public IDs ``id_a`` and ``id_b``."""
    low, high = sorted((id_a, id_b))
    return sha256d(b"prot0" + low + high)


def my_location_bytes(location: Record, encoding: str = "syrup") -> bytes:
    """What a hello's location signature covers: ``<my-location <ocapn-peer ...>>``.

    In the encoding the hello travels in (``"syrup"`` or ``"cbor"``), as Endo
    signs the bytes of its session's codec (``spec-notes/0033``).
    """
    codec: Any = cbor if encoding == "cbor" else syrup
    return bytes(codec.encode(Record(_MY_LOCATION, (location,))))
