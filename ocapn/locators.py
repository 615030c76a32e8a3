"""Locators: where a peer is (:class:`PeerLocation`) and how to name an object there.

Both have an in-band form (Syrup records) and a URI form::

    <ocapn-peer transport designator hints>        ocapn://<designator>.<transport>?k=v
    <ocapn-sturdyref <ocapn-peer ...> swiss-num>   ocapn://<designator>.<transport>/s/<swiss>?k=v

The host part is split at its *last* dot (designators may hold dots).  The
swiss number in a URI path is base64url without padding, as Spritely Goblins
writes it (padding is accepted on reading), so a URI printed by either
implementation works in the other.  Hints are kept exactly as they arrived,
so a location re-sent to a peer is byte-identical to the one it sent us.

Two locations name the same peer when their transport and designator match;
hints do not count (Locators.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final
from urllib.parse import quote, unquote

from captp import Record, Symbol
from ocapn.errors import LocatorError

__all__ = ["PeerLocation", "Sturdyref", "parse_uri"]

OCAPN_PEER: Final = Symbol("ocapn-peer")
OCAPN_STURDYREF: Final = Symbol("ocapn-sturdyref")

_SCHEME: Final = "ocapn://"
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# Characters left as they are in the designator and in hints (RFC 3986 unreserved).
_SAFE: Final = "-._~"


class PeerLocation:
    """An OCapN peer locator: a transport, a designator and (optional) hints.

    ``hints`` is a dict of strings (or ``False`` when there are none); it is
    kept as given.  ``==`` and ``hash`` follow peer identity: transport and
    designator only.
    """

    __slots__ = ("_record", "designator", "hints", "transport")

    def __init__(
        self, transport: str, designator: str, hints: dict[str, Any] | None = None
    ) -> None:
        if type(transport) is not str or not transport or "." in transport:
            raise LocatorError(f"transport must be a non-empty name without '.': {transport!r}")
        if type(designator) is not str or not designator:
            raise LocatorError(f"designator must be a non-empty string: {designator!r}")
        if hints:
            if type(hints) is not dict or any(type(k) is not str for k in hints):
                raise LocatorError(f"hints must be a struct with string keys: {hints!r}")
            hints = dict(hints)
        self.transport = transport
        self.designator = designator
        self.hints: dict[str, Any] | None = hints or None
        self._record: Record | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(transport, designator)``: what identifies the peer."""
        return (self.transport, self.designator)

    def __eq__(self, other: object) -> bool:
        return type(other) is PeerLocation and other.key == self.key

    def __hash__(self) -> int:
        return hash((PeerLocation, self.transport, self.designator))

    def __repr__(self) -> str:
        return f"PeerLocation({self.to_uri()!r})"

    def __str__(self) -> str:
        return self.to_uri()

    # -- in-band form ------------------------------------------------------------

    def to_record(self) -> Record:
        """``<ocapn-peer 'transport "designator" hints-or-false>``."""
        if self._record is None:
            hints: Any = self.hints if self.hints is not None else False
            self._record = Record(OCAPN_PEER, (Symbol(self.transport), self.designator, hints))
        return self._record

    @classmethod
    def from_record(cls, record: Any) -> PeerLocation:
        """Read an ``ocapn-peer`` record; :class:`LocatorError` if it is malformed.

        The record itself is kept, so :meth:`to_record` gives it back unchanged.
        """
        if type(record) is not Record or record.label != OCAPN_PEER:
            raise LocatorError(f"expected an <ocapn-peer> record, got {record!r:.200}")
        if len(record.fields) != 3:
            raise LocatorError(f"<ocapn-peer> takes 3 fields, got {len(record.fields)}")
        transport, designator, hints = record.fields
        if type(transport) is not Symbol:
            raise LocatorError(f"<ocapn-peer> transport must be a symbol: {transport!r}")
        if hints is not False and type(hints) is not dict:
            raise LocatorError(f"<ocapn-peer> hints must be a struct or false: {hints!r:.200}")
        location = cls(transport.name, designator, hints or None)
        location._record = record
        return location

    # -- URI form ------------------------------------------------------------------

    def to_uri(self) -> str:
        """``ocapn://<designator>.<transport>[?hints]``."""
        return f"{_SCHEME}{self._host()}{_query(self.hints)}"

    def _host(self) -> str:
        return f"{quote(self.designator, safe=_SAFE)}.{quote(self.transport, safe=_SAFE)}"

    @classmethod
    def from_uri(cls, uri: str) -> PeerLocation:
        """Parse ``ocapn://<designator>.<transport>[?hints]``."""
        location = parse_uri(uri)
        if type(location) is not PeerLocation:
            raise LocatorError(f"a sturdyref URI, not a peer URI: {uri!r}")
        return location


class Sturdyref:
    """A peer location and a swiss number: the durable name of one object there."""

    __slots__ = ("peer", "swiss_num")

    def __init__(self, peer: PeerLocation, swiss_num: bytes) -> None:
        if type(peer) is not PeerLocation:
            raise LocatorError(f"a sturdyref needs a PeerLocation, not {type(peer).__name__}")
        if type(swiss_num) is not bytes:
            raise LocatorError("a swiss number is bytes")
        self.peer = peer
        self.swiss_num = swiss_num

    def __eq__(self, other: object) -> bool:
        return type(other) is Sturdyref and other.peer == self.peer and (
            other.swiss_num == self.swiss_num
        )

    def __hash__(self) -> int:
        return hash((Sturdyref, self.peer, self.swiss_num))

    def __repr__(self) -> str:
        # The swiss number is the capability: keep it out of logs and tracebacks.
        return f"<Sturdyref at {self.peer.to_uri()}>"

    def __str__(self) -> str:
        return self.to_uri()

    @property
    def uri(self) -> str:
        """The ``ocapn://.../s/<swiss>`` URI (same as ``str(sturdyref)``)."""
        return self.to_uri()

    def to_record(self) -> Record:
        """``<ocapn-sturdyref <ocapn-peer ...> swiss-num>``."""
        return Record(OCAPN_STURDYREF, (self.peer.to_record(), self.swiss_num))

    @classmethod
    def from_record(cls, record: Any) -> Sturdyref:
        """Read an ``ocapn-sturdyref`` record; :class:`LocatorError` if it is malformed.

        The Locators draft says the swiss number is a string; every
        implementation sends bytes.  A string is taken as its UTF-8 bytes.
        """
        if type(record) is not Record or record.label != OCAPN_STURDYREF:
            raise LocatorError(f"expected an <ocapn-sturdyref> record, got {record!r:.200}")
        if len(record.fields) != 2:
            raise LocatorError(f"<ocapn-sturdyref> takes 2 fields, got {len(record.fields)}")
        peer, swiss = record.fields
        if type(swiss) is str:
            swiss = swiss.encode("utf-8")
        if type(swiss) is not bytes:
            raise LocatorError(f"<ocapn-sturdyref> swiss number must be bytes: {type(swiss)}")
        return cls(PeerLocation.from_record(peer), swiss)

    def to_uri(self) -> str:
        """``ocapn://<designator>.<transport>/s/<base64url swiss>[?hints]``."""
        swiss = base64.urlsafe_b64encode(self.swiss_num).rstrip(b"=").decode("ascii")
        return f"{_SCHEME}{self.peer._host()}/s/{swiss}{_query(self.peer.hints)}"

    @classmethod
    def from_uri(cls, uri: str) -> Sturdyref:
        """Parse ``ocapn://<designator>.<transport>/s/<swiss>[?hints]``."""
        sturdyref = parse_uri(uri)
        if type(sturdyref) is not Sturdyref:
            raise LocatorError(f"a peer URI, not a sturdyref URI: {uri!r}")
        return sturdyref


def parse_uri(uri: str) -> PeerLocation | Sturdyref:
    """A :class:`PeerLocation` or :class:`Sturdyref` from its ``ocapn://`` URI."""
    try:
        return _parse_uri(uri)
    except UnicodeDecodeError as exc:
        raise LocatorError(f"bad percent-escape in {uri!r}: {exc}") from None


def _parse_uri(uri: str) -> PeerLocation | Sturdyref:
    if type(uri) is not str or not uri.startswith(_SCHEME):
        raise LocatorError(f"not an ocapn:// URI: {uri!r}")
    rest = uri[len(_SCHEME):]
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise LocatorError(f"an ocapn URI has no fragment: {uri!r}")
    rest, has_query, query = rest.partition("?")
    host, slash, path = rest.partition("/")
    designator, dot, transport = unquote(host, errors="strict").rpartition(".")
    if not dot or not designator or not transport:
        raise LocatorError(f"the host of an ocapn URI is <designator>.<transport>: {uri!r}")
    hints = _parse_query(query, uri) if has_query else None
    peer = PeerLocation(transport, designator, hints)
    if not slash or not path:
        return peer
    kind, _, swiss = path.partition("/")
    if kind != "s" or "/" in swiss:
        raise LocatorError(f"unknown ocapn URI path /{path!r}; sturdyrefs are /s/<swiss>")
    return Sturdyref(peer, _decode_swiss(swiss, uri))


def _decode_swiss(text: str, uri: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise LocatorError(f"the swiss number in a sturdyref URI is base64url: {uri!r}")
    padded = text.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        return base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise LocatorError(f"bad base64url swiss number in {uri!r}: {exc}") from None


def _parse_query(query: str, uri: str) -> dict[str, str]:
    # Not urllib's parse_qsl: it turns '+' into a space, and a hint may hold '+'.
    hints: dict[str, str] = {}
    for item in query.split("&") if query else ():
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise LocatorError(f"hints are key=value pairs: {item!r} in {uri!r}")
        key = unquote(key, errors="strict")
        if key in hints:
            raise LocatorError(f"hint {key!r} given twice in {uri!r}")
        hints[key] = unquote(value, errors="strict")
    return hints


def _query(hints: dict[str, Any] | None) -> str:
    if not hints:
        return ""
    parts = []
    for key, value in hints.items():
        if type(value) is not str:
            raise LocatorError(f"hint {key!r} is not a string and has no URI form: {value!r}")
        parts.append(f"{quote(key, safe=_SAFE)}={quote(value, safe=_SAFE)}")
    return "?" + "&".join(parts)
