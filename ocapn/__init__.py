"""OCapN for Python: sessions, sturdyrefs and handoffs over the CapTP engine.

The public surface::

    from ocapn import Node
    from netlayers import tcp_testing_only

    async with Node(tcp_testing_only()) as node:
        print(node.publish(my_far_object))        # ocapn://...tcp-testing-only/s/...
        ref = await node.enliven("ocapn://...")   # a live reference

What lives here:

* :mod:`ocapn.node`: :class:`Node`, one session per peer, objects at swiss
  numbers;
* :mod:`ocapn.session`: :class:`OCapNSession`, the handshake (a gate in front
  of the engine), the bootstrap object, and :class:`~ocapn.session.SessionHost`,
  all a session asks of its node;
* :mod:`ocapn.handoffs`: the three roles of third-party handoffs (gifter,
  receiver, exporter);
* :mod:`ocapn.locators`: :class:`PeerLocation`, :class:`Sturdyref`, ``ocapn://`` URIs;
* :mod:`ocapn.crypto`: Ed25519 keys, signatures, public and session IDs;
* :mod:`ocapn.certificates`: handoff certificates and the gift table;
* :mod:`ocapn.wire`: the ``op:``/``desc:`` codec and the wire profiles;
* :mod:`ocapn.syrup`: the Syrup codec;
* :mod:`ocapn.netlayer`: the interface netlayers implement (they live in
  :mod:`netlayers`, the layer above this one);
* :mod:`ocapn.cli`: the ``ocapn`` command, a program on top of every layer
  (the one module here that imports :mod:`netlayers`; nothing imports it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ocapn import _native as _native  # first: the build chosen by captp._native
from ocapn._version import __version__

if TYPE_CHECKING:
    from captp.limits import LimitExceeded, Limits
    from ocapn.certificates import SignedEnvelope
    from ocapn.crypto import KeyPair, PublicKey
    from ocapn.errors import (
        HandoffError,
        HandshakeError,
        LocatorError,
        PeerUnreachable,
        SignatureError,
        UnknownSwissNum,
        UnsupportedTransport,
    )
    from ocapn.locators import PeerLocation, Sturdyref, parse_uri
    from ocapn.netlayer import Netlayer
    from ocapn.node import Node
    from ocapn.session import OCapNSession
    from ocapn.wire import ENDO_PROFILE, PROFILES, SPEC_PROFILE, SUITE_MAIN_PROFILE, WireProfile

# The names below are imported when first used (PEP 562), so that importing
# one part (``ocapn.syrup``, say) does not load the whole stack.
_HOMES = {
    "KeyPair": "crypto", "PublicKey": "crypto",
    "HandoffError": "errors", "HandshakeError": "errors", "LocatorError": "errors",
    "PeerUnreachable": "errors", "SignatureError": "errors", "UnknownSwissNum": "errors",
    "UnsupportedTransport": "errors",
    "SignedEnvelope": "certificates",
    "PeerLocation": "locators", "Sturdyref": "locators", "parse_uri": "locators",
    "Netlayer": "netlayer", "Node": "node", "OCapNSession": "session",
    "ENDO_PROFILE": "wire", "PROFILES": "wire", "SPEC_PROFILE": "wire",
    "SUITE_MAIN_PROFILE": "wire", "WireProfile": "wire",
}  # fmt: skip
_SUBMODULES = frozenset(
    {"cbor", "certificates", "crypto", "errors", "handoffs", "identity", "locators", "netlayer",
     "node", "notation", "persist", "session", "syrup", "wire"}
)  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if name in ("Limits", "LimitExceeded"):  # one configuration object for captp and ocapn
        value = getattr(importlib.import_module("captp.limits"), name)
    elif home is not None:
        value = getattr(importlib.import_module(f"ocapn.{home}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"ocapn.{name}")
    else:
        raise AttributeError(f"module 'ocapn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES) | _SUBMODULES | {"LimitExceeded", "Limits"})


__all__ = [
    "__version__",
    "LimitExceeded",
    "Limits",
    "ENDO_PROFILE",
    "PROFILES",
    "SPEC_PROFILE",
    "SUITE_MAIN_PROFILE",
    "HandoffError",
    "HandshakeError",
    "KeyPair",
    "LocatorError",
    "Netlayer",
    "Node",
    "OCapNSession",
    "PeerLocation",
    "PeerUnreachable",
    "PublicKey",
    "SignatureError",
    "SignedEnvelope",
    "Sturdyref",
    "UnknownSwissNum",
    "UnsupportedTransport",
    "WireProfile",
    "parse_uri",
]
