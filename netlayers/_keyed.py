"""What the netlayers whose designator names the node's Ed25519 key share (websocket, np).

Their identity can be given, or kept in a node's state directory
(:mod:`ocapn.persist`) with the port, so their URIs survive restarts; what
the constructor was given wins over what the state directory kept.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ocapn import syrup
from ocapn.crypto import PublicKey
from ocapn.errors import KeyFileError, LocatorError
from ocapn.identity import NodeIdentity
from ocapn.locators import PeerLocation

__all__ = ["KeyedNetlayer"]


class KeyedNetlayer:
    """Base of a netlayer keyed by a :class:`NodeIdentity`.

    Subclasses set ``transport`` and write :meth:`designator_of` for it.
    """

    transport: ClassVar[str]

    def __init__(self, identity: NodeIdentity | None, port: int) -> None:
        self.port = port
        self.identity = identity if identity is not None else NodeIdentity.generate()
        self.designator = self.designator_of(self.identity.public)
        # What a state directory may not override: a given identity, a given port.
        self._chosen = (identity is not None, port != 0)
        self._location: PeerLocation | None = None

    def designator_of(self, public: PublicKey) -> str:
        """The designator that names ``public`` in this transport."""
        raise NotImplementedError

    def use_identity(self, identity: NodeIdentity) -> None:
        """Make ``identity`` the key our designator names (the node's; before serving)."""
        if self._location is not None:
            raise RuntimeError("the netlayer is already serving under another identity")
        self.identity = identity
        self.designator = self.designator_of(identity.public)
        self._chosen = (True, self._chosen[1])

    @property
    def location(self) -> PeerLocation:
        """Our locator (the port is known once :meth:`serve` has started)."""
        if self._location is None:
            raise RuntimeError("the netlayer is not listening yet")
        return self._location

    # -- identity kept in a node's state directory (ocapn.persist) -----------------------

    def identity_material(self) -> bytes:
        """What a state directory keeps: the identity's seed and our port (Syrup)."""
        return syrup.encode({"seed": self.identity.seed, "port": self.port})

    def restore_identity(self, material: bytes) -> None:
        """Take up a kept identity and port, except those given to the constructor."""
        transport = self.transport
        try:
            kept: Any = syrup.decode(material)
            seed, port = kept["seed"], kept["port"]
            identity = NodeIdentity.from_seed(seed)
        except (syrup.SyrupDecodeError, TypeError, KeyError, KeyFileError) as exc:
            raise LocatorError(f"bad {transport} identity in the state directory: {exc}") from exc
        if type(port) is not int:
            raise LocatorError(f"bad {transport} port in the state directory: {port!r}")
        if not self._chosen[0]:
            self.use_identity(identity)
            self._chosen = (False, self._chosen[1])
        if not self._chosen[1] and 0 < port < 65536:
            self.port = port
