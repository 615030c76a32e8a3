"""The ``np`` netlayer: OCapN over Noise over TCP.  **Experimental.**

It follows Endo's "np" design (an unmerged Endo branch; see
``spec-notes/0036-np-netlayer.md``), which may still change:

* ``Noise_IK_25519_ChaChaPoly_BLAKE2s``, the Noise static keys derived from
  the nodes' Ed25519 identities, prologue ``"OCapN/np/1\\0" || responder key``;
* the initiator sends a *prefixed SYN* (the responder's Ed25519 key in clear,
  then Noise message 1 carrying its own Ed25519 key and the encodings it
  offers); the responder answers with Noise message 2 carrying the chosen
  encoding; every Noise message travels as a netstring ``len:bytes,``;
* locator ``<ocapn-peer 'np "<hex Ed25519 key>" {"tcp:host": ..., "tcp:port": ...}>``;
* each side then sends its ``op:start-session`` with its identity key as
  session key and a location signature bound to the Noise handshake hash.

On top of Endo's checks we require that the responder is the key we
dialed and that the initiator's Ed25519 key maps to its Noise static key.
A ciphertext that fails to decrypt (tampered, replayed, reordered,
truncated) ends the connection; nothing from it reaches the session.

Noise caps a message at 65,535 bytes (65,519 of plaintext).  Between two
nodes that both offer it (encoding :data:`SYRUP_CHUNKED`), larger OCapN
messages travel in pieces; otherwise sending one fails the session with a
:class:`~ocapn.errors.FrameError` that says so (never a silent break).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, Literal

import anyio
from anyio.abc import TaskStatus
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from noise.connection import Keypair, NoiseConnection  # type: ignore[import-untyped]

from captp import Channel
from netlayers._framed import FramedChannel
from netlayers._keyed import KeyedNetlayer
from netlayers.tcp import connect_channel, serve_channels
from ocapn.crypto import PublicKey
from ocapn.errors import (
    FrameError,
    LocatorError,
    NetlayerTimeout,
    NoiseError,
    PeerAuthError,
)
from ocapn.identity import NodeIdentity, SessionBinding, ed25519_public_to_x25519
from ocapn.locators import PeerLocation
from ocapn.netlayer import ConnectionHandler

__all__ = [
    "ENCODINGS",
    "MAX_PLAINTEXT",
    "SYRUP",
    "SYRUP_CHUNKED",
    "TRANSPORT",
    "NpChannel",
    "NoiseTransport",
    "NpNetlayer",
    "encodings_field",
    "np_netlayer",
    "parse_encodings_field",
]

log = logging.getLogger("netlayers")

TRANSPORT: Final = "np"
PROTOCOL_NAME: Final = b"Noise_IK_25519_ChaChaPoly_BLAKE2s"
PROLOGUE_PREFIX: Final = b"OCapN/np/1\x00"

# Encoding numbers for the SYN's encodings field.  0 is what Endo offers by
# default; its np sessions then speak Syrup.  SYRUP_CHUNKED is ours: Syrup,
# with OCapN messages over MAX_PLAINTEXT bytes split across Noise messages.
SYRUP: Final = 0
SYRUP_CHUNKED: Final = 15
ENCODINGS: Final = (SYRUP, SYRUP_CHUNKED)

MAX_NOISE_MESSAGE: Final = 65535
MAX_PLAINTEXT: Final = MAX_NOISE_MESSAGE - 16  # 65,519
_PIECE: Final = MAX_PLAINTEXT - 1  # a chunked piece: one flag byte, then data
_MORE: Final = 1
_LAST: Final = 0
SYN_LENGTH: Final = 164
SYNACK_LENGTH: Final = 49
_MAX_FRAME_DIGITS: Final = 5  # 65535
_NONCE_PAD: Final = b"\x00\x00\x00\x00"

# The largest reassembled OCapN message (chunked encoding) we accept by default.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
HANDSHAKE_TIMEOUT_SECONDS: Final = 30.0


# == designators and hints ==================================================================


def designator_of(public: PublicKey | bytes) -> str:
    """The ``np`` designator of an Ed25519 public key: 64 lowercase hex digits."""
    raw = public.raw if isinstance(public, PublicKey) else public
    return raw.hex()


def key_of_designator(designator: str) -> bytes:
    """The 32-byte Ed25519 key an ``np`` designator names; :class:`LocatorError` if malformed."""
    if type(designator) is not str or len(designator) != 64 or designator != designator.lower():
        raise LocatorError(f"an np designator is 64 lowercase hex digits: {designator!r}")
    try:
        return bytes.fromhex(designator)
    except ValueError:
        raise LocatorError(f"an np designator is hex: {designator!r}") from None


def address_of(location: PeerLocation) -> tuple[str, int]:
    """``(host, port)`` from an ``np`` locator's ``tcp:host`` / ``tcp:port`` hints."""
    hints = location.hints or {}
    host, port = hints.get("tcp:host"), hints.get("tcp:port")
    if type(host) is not str or type(port) is not str:
        other = ", ".join(sorted(hints)) or "none"
        raise LocatorError(f"an np locator needs tcp:host and tcp:port hints (has {other})")
    try:
        number = int(port)
    except ValueError:
        raise LocatorError(f"bad tcp:port in {location}") from None
    if not 0 < number < 65536:
        raise LocatorError(f"tcp:port out of range in {location}")
    return host, number


# == the handshake (sans-IO) ================================================================


def encodings_field(encodings: Sequence[int]) -> bytes:
    """The SYN's 4-byte encodings field: ``u16be first || u16be mask`` (bit k: first+1+k)."""
    if not encodings:
        raise ValueError("offer at least one encoding")
    first = min(encodings)
    mask = 0
    for encoding in encodings:
        offset = encoding - first - 1
        if encoding != first:
            if not 0 <= offset < 16:
                raise ValueError(f"encodings must lie within {first}..{first + 16}: {encodings}")
            mask |= 1 << offset
    if not 0 <= first <= 0xFFFF:
        raise ValueError(f"an encoding is 0..65535: {first}")
    return first.to_bytes(2, "big") + mask.to_bytes(2, "big")


def parse_encodings_field(field: bytes) -> list[int]:
    """The encodings a SYN offers, lowest first."""
    first = int.from_bytes(field[:2], "big")
    mask = int.from_bytes(field[2:4], "big")
    return [first] + [first + 1 + k for k in range(16) if mask >> k & 1]


def _noise(identity: NodeIdentity, responder: bytes, *, initiator: bool) -> Any:
    noise = NoiseConnection.from_name(PROTOCOL_NAME)
    if initiator:
        noise.set_as_initiator()
        noise.set_keypair_from_public_bytes(
            Keypair.REMOTE_STATIC, ed25519_public_to_x25519(responder)
        )
    else:
        noise.set_as_responder()
    noise.set_keypair_from_private_bytes(Keypair.STATIC, identity.x25519_private())
    noise.set_prologue(PROLOGUE_PREFIX + responder)
    return noise


def _set_ephemeral(noise: Any, ephemeral: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "OK for testing": it is for tests
        noise.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
        noise.start_handshake()


class Initiator:
    """The initiator's side of the handshake: :meth:`syn`, then :meth:`read_synack`."""

    def __init__(
        self, identity: NodeIdentity, responder: bytes, encodings: Sequence[int] = ENCODINGS,
        *, ephemeral: bytes | None = None,
    ) -> None:
        self.identity = identity
        self.responder = responder
        self.encodings = list(encodings)
        self.noise = _noise(identity, responder, initiator=True)
        if ephemeral is not None:  # fixed ephemerals: byte-level test vectors only
            _set_ephemeral(self.noise, ephemeral)
        else:
            self.noise.start_handshake()

    def syn(self) -> bytes:
        """The prefixed SYN: responder key (clear) || Noise message 1 (164 bytes)."""
        payload = self.identity.public.raw + encodings_field(self.encodings)
        return self.responder + bytes(self.noise.write_message(payload))

    def read_synack(self, synack: bytes) -> int:
        """Finish the handshake; the encoding the responder chose."""
        if len(synack) != SYNACK_LENGTH:
            raise NoiseError(f"a SYNACK is {SYNACK_LENGTH} bytes, not {len(synack)}")
        try:
            payload = bytes(self.noise.read_message(synack))
        except Exception as exc:  # noiseprotocol raises several kinds
            raise PeerAuthError(
                f"the SYNACK does not decrypt: the responder does not hold the dialed key "
                f"({type(exc).__name__})"
            ) from None
        finished = self.noise.handshake_finished
        if len(payload) != 1 or payload[0] not in self.encodings or not finished:
            raise NoiseError(f"the responder chose an encoding we did not offer: {payload!r}")
        return payload[0]


class Responder:
    """The responder's side: :meth:`read_syn` gives the SYNACK to send back."""

    def __init__(
        self, identity: NodeIdentity, encodings: Sequence[int] = ENCODINGS,
        *, ephemeral: bytes | None = None,
    ) -> None:
        self.identity = identity
        self.encodings = list(encodings)
        self.noise = _noise(identity, identity.public.raw, initiator=False)
        if ephemeral is not None:
            _set_ephemeral(self.noise, ephemeral)
        else:
            self.noise.start_handshake()
        self.initiator_key: PublicKey | None = None
        self.initiator_ephemeral = b""
        self.encoding = -1

    def read_syn(self, syn: bytes) -> bytes:
        """Check the SYN (for us; keys consistent); choose an encoding; the SYNACK."""
        if len(syn) != SYN_LENGTH:
            raise NoiseError(f"a prefixed SYN is {SYN_LENGTH} bytes, not {len(syn)}")
        if syn[:32] != self.identity.public.raw:
            raise PeerAuthError("SYN intended for a different responder")
        try:
            payload = bytes(self.noise.read_message(syn[32:]))
        except Exception as exc:
            raise NoiseError(f"the SYN does not decrypt ({type(exc).__name__})") from None
        if len(payload) != 36:
            raise NoiseError(f"a SYN payload is 36 bytes, not {len(payload)}")
        initiator = payload[:32]
        remote_static = bytes(self.noise.noise_protocol.handshake_state.rs.public_bytes)
        try:
            mapped = ed25519_public_to_x25519(initiator)
        except ValueError:
            mapped = b""
        if mapped != remote_static:
            raise PeerAuthError("the initiator's Ed25519 key does not match its Noise static key")
        offered = parse_encodings_field(payload[32:])
        common = [e for e in offered if e in self.encodings and e <= 255]
        if not common:
            raise NoiseError(f"no common encoding: offered {offered}, we speak {self.encodings}")
        self.encoding = max(common)
        self.initiator_key = PublicKey(initiator)
        self.initiator_ephemeral = syn[32:64]
        return bytes(self.noise.write_message(bytes([self.encoding])))


# == the channel ==========================================================================


def netstring(data: bytes) -> bytes:
    """``<decimal length>:<data>,``."""
    return b"%d:%b," % (len(data), data)


class _Frames:
    """Netstring frames out of a byte stream (at most 65,535 bytes each)."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def next(self) -> bytes | None:
        buffer = self.buffer
        colon = buffer.find(b":", 0, _MAX_FRAME_DIGITS + 1)
        if colon < 0:
            if len(buffer) > _MAX_FRAME_DIGITS:
                raise FrameError("a netstring length longer than 5 digits (np frames are < 64 KiB)")
            return None
        digits = bytes(buffer[:colon])
        if not digits.isdigit():
            raise FrameError(f"a malformed netstring length: {digits[:8]!r}")
        length = int(digits)
        if length > MAX_NOISE_MESSAGE:
            raise FrameError(f"an np frame of {length} bytes (at most {MAX_NOISE_MESSAGE})")
        end = colon + 1 + length
        if len(buffer) <= end:
            return None
        if buffer[end] != 0x2C:
            raise FrameError("a netstring without its trailing comma")
        frame = bytes(buffer[colon + 1 : end])
        del buffer[: end + 1]
        return frame


class NoiseTransport:
    """The two ChaCha20-Poly1305 transport ciphers a finished Noise handshake split into.

    Noise's transport messages, exactly: empty associated data, the nonce
    ``0^32 || u64le(n)`` counting from 0 in each direction, no rekey.  Taken
    from ``noiseprotocol``'s cipher states and run on ``cryptography``
    directly (it saves a few layers of calls per message).
    """

    __slots__ = ("_receive", "_receive_n", "_send", "_send_n")

    def __init__(self, noise: Any) -> None:
        protocol = noise.noise_protocol
        sending, receiving = protocol.cipher_state_encrypt, protocol.cipher_state_decrypt
        self._send = ChaCha20Poly1305(bytes(sending.k))
        self._receive = ChaCha20Poly1305(bytes(receiving.k))
        self._send_n = sending.n
        self._receive_n = receiving.n

    def encrypt(self, plaintext: bytes) -> bytes:
        """The next transport message carrying ``plaintext`` (at most 65,519 bytes)."""
        nonce = _NONCE_PAD + self._send_n.to_bytes(8, "little")
        self._send_n += 1
        return self._send.encrypt(nonce, plaintext, None)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """The plaintext of the next transport message; :class:`NoiseError` if it is not."""
        nonce = _NONCE_PAD + self._receive_n.to_bytes(8, "little")
        try:
            plaintext = self._receive.decrypt(nonce, ciphertext, None)
        except Exception:
            raise NoiseError("a Noise message failed to decrypt (tampered, replayed)") from None
        self._receive_n += 1
        return plaintext


class NpChannel(FramedChannel):
    """A Noise transport over a byte channel: one OCapN message per (chunked) Noise message.

    ``session_binding`` tells the OCapN session above which keys the Noise
    handshake proved and what its location signatures bind to.  When the
    byte channel offers ``push`` so does this one (``None`` if not).
    """

    def __init__(
        self, raw: Channel, frames: _Frames, noise: Any, *, chunked: bool,
        binding: SessionBinding, max_message: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(raw)
        self._frames = frames
        transport = NoiseTransport(noise)
        self._encrypt = transport.encrypt
        self._decrypt = transport.decrypt
        self.chunked = chunked
        self.session_binding = binding
        self._max = max_message
        self._pieces: list[bytes] = []
        self._size = 0

    def send_nowait(self, data: bytes) -> None:
        """Encrypt and send one OCapN message (in pieces when chunking was agreed)."""
        if self._ended is not None:
            raise anyio.ClosedResourceError
        encrypt = self._encrypt
        if not self.chunked:
            if len(data) > MAX_PLAINTEXT:
                raise FrameError(
                    f"an OCapN message of {len(data)} bytes does not fit one Noise message "
                    f"({MAX_PLAINTEXT}), and this peer did not agree to chunking"
                )
            self._raw.send_nowait(netstring(encrypt(data)))
            return
        if len(data) <= _PIECE:
            self._raw.send_nowait(netstring(encrypt(b"\x00" + data)))
            return
        view = memoryview(data)
        out = []
        for start in range(0, len(data), _PIECE):
            flag = _LAST if start + _PIECE >= len(data) else _MORE
            out.append(netstring(encrypt(bytes([flag]) + view[start : start + _PIECE])))
        self._raw.send_nowait(b"".join(out))

    async def receive(self) -> bytes:
        """The next OCapN message; :class:`NoiseError` if a ciphertext does not decrypt."""
        return await super().receive()

    async def aclose(self) -> None:
        """Close the byte channel gracefully."""
        await self._raw.aclose()

    def _end(self, exc: BaseException) -> None:
        inside = bool(self._frames.buffer or self._pieces)
        if self._ended is None and isinstance(exc, anyio.EndOfStream) and inside:
            exc = NoiseError("the connection ended inside a message")
        super()._end(exc)

    def _feed(self, data: bytes) -> None:
        """Decrypt the whole frames ``data`` completes; queue the whole messages."""
        if self._ended is not None:
            return
        leftover = self._frames.buffer
        if leftover:
            leftover += data
            data = bytes(leftover)
            leftover.clear()
        size = len(data)
        at = 0
        decrypt = self._decrypt
        while at < size:
            colon = data.find(b":", at, at + _MAX_FRAME_DIGITS + 1)
            if colon < 0:
                if size - at > _MAX_FRAME_DIGITS:
                    self._ended = FrameError("a netstring length longer than 5 digits")
                    return
                break
            digits = data[at:colon]
            if not digits.isdigit():
                self._ended = FrameError(f"a malformed netstring length: {digits[:8]!r}")
                return
            length = int(digits)
            if length > MAX_NOISE_MESSAGE:
                self._ended = FrameError(f"an np frame of {length} bytes (at most 65535)")
                return
            end = colon + 1 + length
            if end >= size:
                break
            if data[end] != 0x2C:
                self._ended = FrameError("a netstring without its trailing comma")
                return
            at = end + 1
            try:
                plain = decrypt(data[colon + 1 : end])
            except NoiseError as exc:
                self._ended = exc
                return
            if not self.chunked:
                self._messages.append(plain)
            elif not self._take_piece(plain):
                return
        if at < size:
            leftover += data[at:]

    def _take_piece(self, plain: bytes) -> bool:
        if not plain or plain[0] not in (_MORE, _LAST):
            self._ended = FrameError("a chunked np message without its flag byte")
            return False
        self._size += len(plain) - 1
        if self._size > self._max:
            self._ended = FrameError(f"an OCapN message over {self._max} bytes")
            return False
        if plain[0] == _LAST and not self._pieces:
            self._messages.append(plain[1:])
            self._size = 0
            return True
        self._pieces.append(plain[1:])
        if plain[0] == _LAST:
            self._messages.append(b"".join(self._pieces))
            self._pieces = []
            self._size = 0
        return True


async def _read_frame(raw: Channel, frames: _Frames) -> bytes:
    while True:
        frame = frames.next()
        if frame is not None:
            return frame
        frames.buffer += await raw.receive()


# == the netlayer ==========================================================================


class NpNetlayer(KeyedNetlayer):
    """Listen for ``np`` peers on TCP ``host:port`` and dial them.  Experimental.

    ``identity``: the key pair the designator names (default: a fresh one).
    ``encodings``: what we offer and accept in the handshake (default
    Syrup, and Syrup with chunked large messages).  ``advertise``: the host
    to put in our locator.
    """

    transport = TRANSPORT
    framing: Literal["message"] = "message"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        identity: NodeIdentity | None = None,
        encodings: Sequence[int] = ENCODINGS,
        advertise: str | None = None,
        max_message: int = MAX_MESSAGE_BYTES,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS,
        fast_path: bool = True,
    ) -> None:
        encodings_field(encodings)  # check them now
        super().__init__(identity, port)
        self.host = host
        self.encodings = list(encodings)
        self.advertise = advertise or host
        self.max_message = max_message
        self.handshake_timeout = handshake_timeout
        self.fast_path = fast_path

    def designator_of(self, public: PublicKey) -> str:
        """The designator that names ``public``."""
        return designator_of(public)

    def __repr__(self) -> str:
        return f"<NpNetlayer {self.host}:{self.port}>"

    async def serve(
        self, handler: ConnectionHandler, *, task_status: TaskStatus[PeerLocation]
    ) -> None:
        """Listen, report our location, and serve each connection in a task of its own."""
        accepted = partial(self._accepted, handler)
        async with anyio.create_task_group() as tg:
            serve = partial(
                serve_channels, self.host, self.port, accepted, fast_path=self.fast_path
            )
            self.port = await tg.start(serve)
            self._location = PeerLocation(
                TRANSPORT, self.designator,
                {"tcp:host": self.advertise, "tcp:port": str(self.port)},
            )
            task_status.started(self._location)

    async def _accepted(self, handler: ConnectionHandler, raw: Channel) -> None:
        frames = _Frames()
        responder = Responder(self.identity, self.encodings)
        try:
            with anyio.fail_after(self.handshake_timeout):
                synack = responder.read_syn(await _read_frame(raw, frames))
        except TimeoutError:
            log.info("np: a peer did not send its SYN in time")
            return
        except (NoiseError, PeerAuthError, FrameError) as exc:
            log.info("np: refusing a connection: %s", exc)
            return
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return
        raw.send_nowait(netstring(synack))
        assert responder.initiator_key is not None
        initiator = responder.initiator_key
        binding = SessionBinding(
            self.identity.key_pair, initiator, (TRANSPORT, designator_of(initiator)),
            bytes(responder.noise.get_handshake_hash()), _rank(responder.initiator_ephemeral),
        )
        channel = NpChannel(
            raw, frames, responder.noise, chunked=responder.encoding == SYRUP_CHUNKED,
            binding=binding, max_message=self.max_message,
        )
        await handler(channel)

    @asynccontextmanager
    async def connect(self, location: PeerLocation) -> AsyncIterator[Channel]:
        """A channel to the ``np`` peer at ``location``; the Noise handshake done."""
        if location.transport != TRANSPORT:
            raise LocatorError(f"not an {TRANSPORT} locator: {location}")
        responder = key_of_designator(location.designator)
        host, port = address_of(location)
        async with connect_channel(host, port, fast_path=self.fast_path) as raw:
            frames = _Frames()
            initiator = Initiator(self.identity, responder, self.encodings)
            syn = initiator.syn()
            raw.send_nowait(netstring(syn))
            try:
                with anyio.fail_after(self.handshake_timeout):
                    encoding = initiator.read_synack(await _read_frame(raw, frames))
            except TimeoutError:
                raise NetlayerTimeout(
                    f"{location} did not answer the Noise handshake in "
                    f"{self.handshake_timeout:g} s"
                ) from None
            except anyio.EndOfStream:
                raise PeerAuthError(f"{location} closed the connection during the handshake") \
                    from None
            binding = SessionBinding(
                self.identity.key_pair, PublicKey(responder), location.key,
                bytes(initiator.noise.get_handshake_hash()), _rank(syn[32:64]),
            )
            yield NpChannel(
                raw, frames, initiator.noise, chunked=encoding == SYRUP_CHUNKED,
                binding=binding, max_message=self.max_message,
            )


def _rank(initiator_ephemeral: bytes) -> bytes:
    # Crossed hellos: Endo keeps the session whose initiator ephemeral is
    # bytewise smaller; the node keeps the higher rank.
    return bytes(255 - b for b in initiator_ephemeral)


def np_netlayer(
    host: str = "127.0.0.1", port: int = 0, *, identity: NodeIdentity | None = None,
    encodings: Sequence[int] = ENCODINGS, advertise: str | None = None, **options: Any,
) -> NpNetlayer:
    """An ``np`` (Noise over TCP, experimental) netlayer on ``host:port`` (0: any free port)."""
    return NpNetlayer(
        host, port, identity=identity, encodings=encodings, advertise=advertise, **options
    )
