"""The named failures of the OCapN layer (all are :class:`captp.errors.CapTPError`)."""

from __future__ import annotations

from captp.errors import CapTPError, ProtocolError

__all__ = [
    "FrameError",
    "HandoffError",
    "HandshakeError",
    "KeyFileError",
    "LocatorError",
    "NetlayerError",
    "NetlayerTimeout",
    "NoiseError",
    "PeerAuthError",
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


class KeyFileError(CapTPError):
    """A node identity key file that is missing, malformed or readable by others."""


class NetlayerError(CapTPError, ConnectionError):
    """A connection failed below OCapN: its netlayer handshake or framing went wrong.

    It ends that one connection (the session is refused or aborted); the node
    carries on.
    """


class PeerAuthError(NetlayerError):
    """The peer could not prove it holds the key its designator names (or forged the proof)."""


class FrameError(NetlayerError):
    """The peer broke the netlayer's framing: a text frame, an oversized message, bad bytes."""


class NoiseError(NetlayerError):
    """A Noise handshake or transport message failed (bad MAC, tampering, replay, truncation)."""


class NetlayerTimeout(NetlayerError, TimeoutError):
    """The peer connected and then did not complete the netlayer handshake in time."""
