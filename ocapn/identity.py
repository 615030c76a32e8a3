"""A node's long-lived identity: the Ed25519 key pair its designators name.

The ``websocket`` designator is this public key in lowercase unpadded
base32, the ``np`` designator the same key in hex; so a node that keeps its
identity across restarts keeps its URIs valid.  ::

    identity = NodeIdentity.load_or_create("node.key")   # 0600, PEM (PKCS #8)
    node = Node(websocket_netlayer(identity=identity))

A key file is refused when anyone but its owner may read or write it (as
OpenSSH refuses such keys): the key is the node's authority.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ocapn.crypto import KeyPair, PublicKey
from ocapn.errors import KeyFileError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# cryptography is imported where a key is made, saved or loaded, not with
# this module (which every node imports): it is a large part of start-up.

__all__ = [
    "NodeIdentity",
    "SessionBinding",
    "ed25519_public_to_x25519",
    "ed25519_seed_to_x25519",
]

# Permission bits a key file must not have: any access by group or others.
_UNSAFE_BITS: Final = stat.S_IRWXG | stat.S_IRWXO
_FIELD_PRIME: Final = 2**255 - 19


class NodeIdentity:
    """An Ed25519 key pair that names a node (its designator key), kept across restarts."""

    __slots__ = ("_private", "key_pair", "public")

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        if private is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            private = Ed25519PrivateKey.generate()
        self._private = private
        self.key_pair = KeyPair(self._private)
        self.public: PublicKey = self.key_pair.public

    def __repr__(self) -> str:
        return f"<NodeIdentity {self.public.raw[:4].hex()}...>"

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A fresh random identity."""
        return cls()

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeIdentity:
        """The identity with this 32-byte Ed25519 seed (RFC 8032)."""
        if type(seed) is not bytes or len(seed) != 32:
            raise KeyFileError("an Ed25519 seed is 32 bytes")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed."""
        return self._private.private_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data`` with the identity key."""
        return self._private.sign(data)

    def x25519_private(self) -> bytes:
        """The X25519 private key derived from this identity (the Noise static key)."""
        return ed25519_seed_to_x25519(self.seed)

    # -- files ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to ``path`` (PEM, PKCS #8), readable by its owner only (0600).

        An existing file is replaced atomically.
        """
        from cryptography.hazmat.primitives import serialization

        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        target = Path(path)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(pem)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeIdentity:
        """Read a key file written by :meth:`save`.

        :class:`KeyFileError` if it is missing, not an Ed25519 private key, or
        open to group or others (fix with ``chmod 600``).
        """
        target = Path(path)
        try:
            fd = os.open(target, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyFileError(f"no key file at {target}") from None
        except OSError as exc:
            raise KeyFileError(f"cannot open key file {target}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if os.name == "posix" and mode & _UNSAFE_BITS:
                raise KeyFileError(
                    f"key file {target} is open to others (mode {stat.S_IMODE(mode):04o}); "
                    f"refusing to use it: run `chmod 600 {target}`"
                )
            data = file.read()
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{target} is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyFileError(f"{target} holds a {type(private).__name__}, not an Ed25519 key")
        return cls(private)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> NodeIdentity:
        """The identity in ``path``; a new one saved there if the file does not exist."""
        if not Path(path).exists():
            identity = cls.generate()
            identity.save(path)
            return identity
        return cls.load(path)


def ed25519_seed_to_x25519(seed: bytes) -> bytes:
    """The X25519 private key of an Ed25519 seed: SHA-512(seed)[:32], clamped (RFC 7748)."""
    scalar = bytearray(hashlib.sha512(seed).digest()[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return bytes(scalar)


def ed25519_public_to_x25519(public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 public key: u = (1 + y) / (1 - y) mod p.

    The same map as libsodium's ``crypto_sign_ed25519_pk_to_curve25519``.
    """
    if len(public) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    if y >= _FIELD_PRIME or (1 - y) % _FIELD_PRIME == 0:
        raise ValueError("not a valid Ed25519 public key")
    u = (1 + y) * pow(1 - y, _FIELD_PRIME - 2, _FIELD_PRIME) % _FIELD_PRIME
    return u.to_bytes(32, "little")


# == binding a session to its netlayer's authentication ====================================

_LOCATION_V1: Final = b"ocapn-location-v1\x00"


class SessionBinding:
    """What a netlayer that authenticates its peer (np) tells the OCapN session above it.

    The session then uses ``key_pair`` (our identity key, which the netlayer
    proved) as its session key, requires the peer's ``op:start-session`` to
    carry ``peer_key`` and claim ``peer`` (transport, designator), and signs
    and checks locations bound to ``value`` (the Noise handshake hash).
    ``initiator_rank`` settles crossed hellos: the connection whose rank is
    higher stands.
    """

    __slots__ = ("initiator_rank", "key_pair", "peer", "peer_key", "value")

    def __init__(
        self, key_pair: KeyPair, peer_key: PublicKey, peer: tuple[str, str], value: bytes,
        initiator_rank: bytes,
    ) -> None:
        self.key_pair = key_pair
        self.peer_key = peer_key
        self.peer = peer
        self.value = value
        self.initiator_rank = initiator_rank

    def location_bytes(self, unbound: bytes) -> bytes:
        """What a location signature covers on this channel, given the unbound bytes.

        ``"ocapn-location-v1\\0" || u32be(len(value)) || value || unbound``
        (Endo's np design); the unbound bytes alone when ``value`` is empty.
        """
        if not self.value:
            return unbound
        return _LOCATION_V1 + len(self.value).to_bytes(4, "big") + self.value + unbound
