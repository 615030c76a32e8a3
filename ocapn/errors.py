"""The named failures of the OCapN layer (all are :class:`captp.errors.CapTPError`)."""

from __future__ import annotations

from captp.errors import CapTPError, ProtocolError

__all__ = [
    "HandoffError",
    "HandshakeError",
    "LocatorError",
    "PeerUnreachable",
    "SignatureError",
    "UnknownSwissNum",
    "UnsupportedTransport",
]


class HandshakeError(ProtocolError):
    """An ``op:start-session`` we cannot accept: bad version, bad signature, bad shape."""


class SignatureError(CapTPError):
    """An Ed25519 key or signature that is malformed, or a signature that does not verify."""


class LocatorError(CapTPError, ValueError):
    """A malformed ``ocapn://`` URI or ``ocapn-peer`` / ``ocapn-sturdyref`` record."""


class HandoffError(CapTPError):
    """A third-party handoff was refused: the withdraw (or the give) does not check out.

    It breaks the promise of that handoff only; the sessions involved carry on.
    """


class UnknownSwissNum(CapTPError, LookupError):
    """``fetch`` (or ``enliven``) named a swiss number this node has nothing at."""


class UnsupportedTransport(CapTPError):
    """A locator names a transport none of the node's netlayers speaks."""


class PeerUnreachable(CapTPError, ConnectionError):
    """No session could be set up with a peer (dial failed, handshake refused or cut)."""
