"""The test vectors of spec/ocapn.md sections 4 (handshake), 5 (crypto) and 11 (handoffs)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from captp import Promise, Record, Symbol, make_promise
from captp._vat import ManualVat
from captp.engine import Engine
from ocapn import syrup
from ocapn.certificates import HandoffGive, HandoffReceive, SignedEnvelope, encode_value
from ocapn.crypto import (
    KeyPair,
    PublicKey,
    encode_signature,
    my_location_bytes,
    parse_signature,
    session_id,
)
from ocapn.errors import SignatureError
from ocapn.locators import PeerLocation
from ocapn.wire import OCapNWire, StartSession

# RFC 8032 section 7.1, tests 1 and 2.
SEED_A = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC_A = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
SEED_B = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")

A = KeyPair.from_seed(SEED_A)
B = KeyPair.from_seed(SEED_B)

HELLO_LOCATION = PeerLocation("tcp-testing-only", "abc", {"host": "127.0.0.1", "port": "22045"})
EXPORTER = PeerLocation("tcp-testing-only", "exporter", {"host": "127.0.0.1", "port": "9000"})


# -- section 5 ----------------------------------------------------------------------------


def test_public_key_descriptor_bytes() -> None:
    assert A.public.raw == PUBLIC_A
    expected = bytes.fromhex(
        "5b3130277075626c69632d6b65795b33276563635b352763757276653727456432353531395d"
        "5b3527666c616773352765646473615d5b31277133323a"
    ) + PUBLIC_A + bytes.fromhex("5d5d5d")
    assert A.public.encoded() == expected
    assert len(expected) == 96
    assert syrup.encode(A.public.descriptor()) == expected
    assert PublicKey.from_descriptor(syrup.decode(expected)) == A.public


def test_public_ids_and_session_id() -> None:
    id_a = bytes.fromhex("1759110845e57d2058d531c139077e9cac59b03f118a42f7e83dd2259ec3038c")
    id_b = bytes.fromhex("12ce5287a57bb3ab1aded4cff62fc2cbb0a329181d0e21c720b318a63674c07e")
    assert A.public.public_id == id_a
    assert B.public.public_id == id_b
    expected = bytes.fromhex("57a5b2c5ee611789dc4abbeefbf52443055a397d98aa7cc43bb2e5c7f4c492c7")
    assert session_id(id_a, id_b) == expected
    assert session_id(id_b, id_a) == expected  # the order of the two sides does not matter


def test_signature_encoding_round_trip() -> None:
    signature = A.sign(b"data")
    value = encode_signature(signature)
    encoded = syrup.encode(value)
    assert encoded == (
        b"[7'sig-val[5'eddsa[1'r32:" + signature[:32] + b"][1's32:" + signature[32:] + b"]]]"
    )
    assert parse_signature(syrup.decode(encoded)) == signature
    assert A.public.verify(signature, b"data")
    assert not A.public.verify(signature, b"other data")
    assert not B.public.verify(signature, b"data")


@pytest.mark.parametrize(
    "bad",
    [
        [Symbol("sig-val"), [Symbol("eddsa"), [Symbol("r"), b"x" * 31], [Symbol("s"), b"y" * 32]]],
        [Symbol("sig-val"), [Symbol("rsa"), [Symbol("r"), b"x" * 32], [Symbol("s"), b"y" * 32]]],
        [Symbol("sig-val")],
        "sig",
        {"r": b"x"},
    ],
)
def test_malformed_signatures_are_refused(bad: object) -> None:
    with pytest.raises(SignatureError):
        parse_signature(bad)


@pytest.mark.parametrize(
    "bad",
    [
        [Symbol("public-key"), [Symbol("ecc"), [Symbol("curve"), Symbol("ed25519")],
                                [Symbol("flags"), Symbol("eddsa")], [Symbol("q"), PUBLIC_A]]],
        [Symbol("public-key"), [Symbol("ecc"), [Symbol("curve"), Symbol("Ed25519")],
                                [Symbol("flags"), Symbol("eddsa")], [Symbol("q"), b"short"]]],
        [Symbol("public-key")],
        PUBLIC_A,
    ],
)
def test_malformed_public_keys_are_refused(bad: object) -> None:
    with pytest.raises(SignatureError):
        PublicKey.from_descriptor(bad)


# -- section 4 ----------------------------------------------------------------------------


def test_my_location_signature() -> None:
    data = my_location_bytes(HELLO_LOCATION.to_record())
    assert data == (
        b"<11'my-location<10'ocapn-peer16'tcp-testing-only3\"abc"
        b"{4\"host9\"127.0.0.14\"port5\"22045}>>"
    )
    signature = A.sign(data)
    assert signature[:32].hex() == (
        "4cbfd05f591809ab9aa7b3a30f5633d1fd3e76500c171399d82f3251e1aebdca"
    )
    assert signature[32:].hex() == (
        "f026532b6470b4ca0c977f407fc2e0cabe22abe07bfdade41133443f187a640f"
    )


def test_start_session_bytes() -> None:
    wire = OCapNWire(Engine(lambda m: None, ManualVat()), framing="none")
    signature = A.sign(my_location_bytes(HELLO_LOCATION.to_record()))
    data = wire.encode(StartSession("1.0", A.public, HELLO_LOCATION, signature))
    assert len(data) == 293
    assert data.startswith(
        b"<16'op:start-session3\"1.0[10'public-key[3'ecc[5'curve7'Ed25519][5'flags5'eddsa]"
        b"[1'q32:" + PUBLIC_A + b"]]]<10'ocapn-peer"
    )
    assert data.endswith(
        b"[7'sig-val[5'eddsa[1'r32:" + signature[:32] + b"][1's32:" + signature[32:] + b"]]]>"
    )
    [hello] = wire.feed(data)
    assert hello == StartSession("1.0", A.public, HELLO_LOCATION, signature)
    assert hello.location.hints == {"host": "127.0.0.1", "port": "22045"}


# -- section 11 ---------------------------------------------------------------------------


def _give() -> SignedEnvelope:
    give = HandoffGive(
        receiver_key=B.public,
        exporter_location=EXPORTER,
        session=session_id(A.public.public_id, B.public.public_id),
        gifter_side=A.public.public_id,
        gift_id=b"\x01" * 32,
    )
    return SignedEnvelope.sign(give.to_record(), A)


def test_handoff_give_vector() -> None:
    envelope = _give()
    data = encode_value(envelope.signed)
    assert len(data) == 298
    assert data.startswith(b"<17'desc:handoff-give[10'public-key")
    assert hashlib.sha256(data).hexdigest() == (
        "5a9f61af023f8071db543020e667ac6ce55959de780356b853bb75f119124696"
    )
    assert envelope.signature.hex() == (
        "9da27a88694c2224308f852c52870d31279dc8c06e6bf480d50762a63ae5610b"
        "bfdc722e3721ca1254dcde73bc598b3a3decd0ba1eb60c4619d74a9b3fce3400"
    )
    assert envelope.verify(A.public)
    assert not envelope.verify(B.public)


def test_handoff_receive_vector() -> None:
    receive = HandoffReceive(
        receiving_session=session_id(A.public.public_id, B.public.public_id),
        receiving_side=B.public.public_id,
        handoff_count=0,
        signed_give=_give(),
    )
    envelope = SignedEnvelope.sign(receive.to_record(), B)
    data = encode_value(envelope.signed)
    assert len(data) == 517
    assert hashlib.sha256(data).hexdigest() == (
        "d306fb34db122d4a7d7638ba2bb3510e2bb453bec36bf7cd11041daeaf011ecb"
    )
    assert envelope.signature.hex() == (
        "2953425ed5a97b8ab54ec44d457d2d0db70bdafae43f68724f189b60e103c54d"
        "e17d8e7525f1e8f6045cb84a87dc492c62ccc6d70e2eb10c68108f52b4f48502"
    )


def test_certificates_read_back_from_the_wire_verify() -> None:
    """Decoded certificates re-encode to the bytes that were signed (locators included)."""
    receive = HandoffReceive(session_id(b"a" * 32, b"b" * 32), b"s" * 32, 7, _give())
    envelope = SignedEnvelope.sign(receive.to_record(), B)
    noticed: list[SignedEnvelope] = []

    def on_give(give: SignedEnvelope) -> tuple[Promise, Callable[[], None]]:
        noticed.append(give)
        return make_promise()[0], lambda: None

    wire = OCapNWire(Engine(lambda m: None, ManualVat()), framing="none", on_give=on_give)
    data = encode_value(envelope.to_record())
    decoded = syrup.decode(data, record_hook=wire._hook)
    assert type(decoded) is SignedEnvelope
    assert decoded.verify(B.public)
    back = HandoffReceive.from_record(decoded.signed)
    assert back.handoff_count == 7
    assert back.signed_give.verify(A.public)
    give = HandoffGive.from_record(back.signed_give.signed)
    assert give.exporter_location == EXPORTER and give.gift_id == b"\x01" * 32
    assert len(noticed) == 1  # the give inside the receive was noticed (and left alone)
    tampered = Record(decoded.signed.label, (b"x" * 32, *decoded.signed.fields[1:]))
    assert not SignedEnvelope(tampered, decoded.signature).verify(B.public)
