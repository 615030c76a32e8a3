"""Locators: ocapn:// URIs and ocapn-peer / ocapn-sturdyref records, both ways."""

from __future__ import annotations

import base64

import pytest

from captp import Record, Symbol
from captp._vat import ManualVat
from captp.engine import Engine
from captp.errors import ProtocolError
from ocapn import syrup
from ocapn.errors import LocatorError
from ocapn.locators import PeerLocation, Sturdyref, parse_uri
from ocapn.wire import OCapNWire


def test_peer_uri_round_trip() -> None:
    uri = "ocapn://abc123.tcp-testing-only?host=127.0.0.1&port=22045"
    peer = PeerLocation.from_uri(uri)
    assert peer.transport == "tcp-testing-only"
    assert peer.designator == "abc123"
    assert peer.hints == {"host": "127.0.0.1", "port": "22045"}
    assert peer.to_uri() == uri
    assert syrup.encode(peer.to_record()) == (
        b"<10'ocapn-peer16'tcp-testing-only6\"abc123{4\"host9\"127.0.0.14\"port5\"22045}>"
    )


def test_peer_without_hints_writes_false() -> None:
    peer = PeerLocation.from_uri("ocapn://wy46gxdweyqn5m7ntzwlxinhdia2jjanlsh37gxklwhfec7yxqr4k3qd.onion")
    assert peer.hints is None
    assert peer.to_record().fields[2] is False
    assert peer.to_uri() == "ocapn://wy46gxdweyqn5m7ntzwlxinhdia2jjanlsh37gxklwhfec7yxqr4k3qd.onion"


def test_designator_may_hold_dots_transport_is_after_the_last() -> None:
    peer = PeerLocation.from_uri("ocapn://my.host.example.websocket")
    assert (peer.designator, peer.transport) == ("my.host.example", "websocket")
    assert parse_uri(peer.to_uri()) == peer


def test_hints_keep_plus_and_escapes() -> None:
    peer = PeerLocation.from_uri("ocapn://d.t?token=a+b%2Fc&empty=")
    assert peer.hints == {"token": "a+b/c", "empty": ""}
    assert PeerLocation.from_uri(peer.to_uri()).hints == peer.hints


def test_sturdyref_uri_is_base64url_like_goblins() -> None:
    swiss = bytes(range(250, 256)) + b"\x00\x01?"
    peer = PeerLocation("tcp-testing-only", "abc", {"host": "127.0.0.1", "port": "9"})
    sturdyref = Sturdyref(peer, swiss)
    uri = sturdyref.to_uri()
    encoded = base64.urlsafe_b64encode(swiss).rstrip(b"=").decode()
    assert uri == f"ocapn://abc.tcp-testing-only/s/{encoded}?host=127.0.0.1&port=9"
    assert "=" not in uri.split("?")[0]  # Goblins writes no padding
    assert Sturdyref.from_uri(uri) == sturdyref
    # A Goblins URI from its own docs' shape; padding is accepted too.
    padded = f"ocapn://abc.tcp-testing-only/s/{base64.urlsafe_b64encode(swiss).decode()}"
    assert Sturdyref.from_uri(padded).swiss_num == swiss


def test_sturdyref_record_round_trip_and_repr_hides_the_swiss_number() -> None:
    peer = PeerLocation("tcp-testing-only", "abc", {"host": "127.0.0.1", "port": "9"})
    sturdyref = Sturdyref(peer, b"secret-swiss")
    data = syrup.encode(sturdyref.to_record())
    assert data.startswith(b"<15'ocapn-sturdyref<10'ocapn-peer")
    assert data.endswith(b"12:secret-swiss>")
    assert Sturdyref.from_record(syrup.decode(data)) == sturdyref
    assert "secret" not in repr(sturdyref)
    assert str(sturdyref) == sturdyref.uri


def test_swiss_number_as_string_is_read_as_utf8() -> None:
    record = Record(Symbol("ocapn-sturdyref"), (PeerLocation("t", "d").to_record(), "abc"))
    assert Sturdyref.from_record(record).swiss_num == b"abc"


def test_peer_identity_is_transport_and_designator() -> None:
    a = PeerLocation("tcp-testing-only", "x", {"host": "127.0.0.1", "port": "1"})
    b = PeerLocation("tcp-testing-only", "x", {"host": "10.0.0.1", "port": "2"})
    c = PeerLocation("onion", "x")
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a.key == ("tcp-testing-only", "x")


def test_received_location_is_resent_byte_identical() -> None:
    """Hints keep the types a peer sent (an integer port here), so re-sending is exact."""
    original = (
        b"<10'ocapn-peer16'tcp-testing-only3\"abc{4\"host9\"127.0.0.14\"port5\"22045"
        b"5\"extra[1+]}>"
    )
    wire = OCapNWire(Engine(lambda m: None, ManualVat()), framing="none")
    decoded = syrup.decode(original, record_hook=wire._hook)
    assert type(decoded) is PeerLocation
    assert syrup.encode(decoded.to_record()) == original


@pytest.mark.parametrize(
    "uri",
    [
        "http://abc.tcp-testing-only",
        "ocapn://nodot",
        "ocapn://.transport",
        "ocapn://designator.",
        "ocapn://d.t/x/abc",
        "ocapn://d.t/s/not+base64",
        "ocapn://d.t/s/abc/def",
        "ocapn://d.t?novalue",
        "ocapn://d.t?a=1&a=2",
        "ocapn://d.t#frag",
        "ocapn://d%ff.t",
    ],
)
def test_bad_uris_are_locator_errors(uri: str) -> None:
    with pytest.raises(LocatorError):
        parse_uri(uri)


def test_peer_uri_is_not_a_sturdyref_and_back() -> None:
    with pytest.raises(LocatorError):
        Sturdyref.from_uri("ocapn://d.t")
    with pytest.raises(LocatorError):
        PeerLocation.from_uri("ocapn://d.t/s/AAAA")


@pytest.mark.parametrize(
    "record",
    [
        b"<10'ocapn-peer16'tcp-testing-only3\"abc>",
        b"<10'ocapn-peer3\"tcp3\"abcf>",
        b"<10'ocapn-peer3'tcp3:abcf>",
        b"<10'ocapn-peer3'tcp3\"abc[]>",
        b"<15'ocapn-sturdyref1+2+>",
        b"<15'ocapn-sturdyref<10'ocapn-peer3'tcp3\"abcf>5+>",
    ],
)
def test_malformed_locator_records_are_protocol_errors(record: bytes) -> None:
    wire = OCapNWire(Engine(lambda m: None, ManualVat()), framing="none")
    with pytest.raises(ProtocolError):
        syrup.decode(record, record_hook=wire._hook)
