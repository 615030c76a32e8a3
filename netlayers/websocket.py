"""The ``websocket`` netlayer: OCapN over WebSocket (ws:// and wss://), as Goblins and Endo do.

Byte-compatible with Spritely Goblins 0.18 and Endo's ``@endo/ocapn``
websocket netlayer (``spec-notes/0035-websocket-netlayer.md``):

* locator ``<ocapn-peer 'websocket "<designator>" {"url": "ws://host:port"}>``,
  the designator being the node's Ed25519 public key in lowercase unpadded
  base32 (52 characters), ``url`` the one hint;
* RFC 6455, no subprotocol, any path; one OCapN message per *binary*
  WebSocket message (a text message ends the connection);
* the server proves it holds the designator's key: the client sends
  ``<init:peer-auth 32-random-bytes>``, the server answers
  ``<desc:sig-envelope <init:peer-auth ...> sig>`` signing the exact bytes it
  received, and the client checks the signature against the designator it
  dialed.  Only then does the OCapN ``op:start-session`` exchange begin.

The client is not authenticated here (its hello's signature is, as on every
netlayer).  ``ws://`` is unencrypted; for ``wss://`` give the server an
:class:`ssl.SSLContext` and say, on the dialing side, which certificates to
trust (``client_ssl_context``; see :func:`self_signed_client_context` for
Goblins' self-signed servers).

The HTTP upgrade is :mod:`wsproto`'s (sans-IO); the frames after it are read
and written by :class:`WebSocketChannel` itself (wsproto's frame parser
costs some 40 us a message, masking byte by byte).  It runs over the TCP
channels of :mod:`netlayers.tcp` (``ws://``) or anyio TLS streams
(``wss://``), so under asyncio, uvloop and trio alike.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.abc import TaskStatus
from anyio.streams.tls import TLSListener
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.utilities import RemoteProtocolError

from captp import Channel, Record, Symbol
from netlayers._framed import FramedChannel
from netlayers._keyed import KeyedNetlayer
from netlayers.stream import StreamChannel
from netlayers.tcp import connect_channel, serve_channels
from ocapn import syrup
from ocapn.crypto import PublicKey, encode_signature, parse_signature
from ocapn.errors import (
    FrameError,
    LocatorError,
    NetlayerTimeout,
    PeerAuthError,
    SignatureError,
)
from ocapn.identity import NodeIdentity
from ocapn.locators import PeerLocation
from ocapn.netlayer import ConnectionHandler

__all__ = [
    "MAX_MESSAGE_BYTES",
    "TRANSPORT",
    "WebSocketChannel",
    "WebSocketNetlayer",
    "designator_of",
    "key_of_designator",
    "self_signed_client_context",
    "websocket_netlayer",
]

log = logging.getLogger("netlayers")

TRANSPORT: Final = "websocket"

# The largest OCapN message (one WebSocket message) we accept by default.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
# How long a peer has to upgrade and finish the peer-auth exchange.
HANDSHAKE_TIMEOUT_SECONDS: Final = 30.0

_INIT_PEER_AUTH: Final = Symbol("init:peer-auth")
_SIG_ENVELOPE: Final = Symbol("desc:sig-envelope")
_CHALLENGE_BYTES: Final = 32
_B32_LENGTH: Final = 52  # 32 bytes in unpadded base32

# Opcodes (RFC 6455 section 5.2) and close codes (section 7.4.1).
_CONTINUATION: Final = 0x0
_TEXT: Final = 0x1
_BINARY: Final = 0x2
_CLOSE: Final = 0x8
_PING: Final = 0x9
_PONG: Final = 0xA
_HEAD16: Final = struct.Struct("!BBH")
_HEAD64: Final = struct.Struct("!BBQ")
_MAX_HEAD: Final = 16384
_NORMAL: Final = 1000
_PROTOCOL_ERROR: Final = 1002
_UNSUPPORTED_DATA: Final = 1003
_POLICY: Final = 1008
_TOO_BIG: Final = 1009


# == designators ===========================================================================


def designator_of(public: PublicKey | bytes) -> str:
    """The ``websocket`` designator of an Ed25519 public key: lowercase unpadded base32."""
    raw = public.raw if isinstance(public, PublicKey) else public
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def key_of_designator(designator: str) -> PublicKey:
    """The Ed25519 key a ``websocket`` designator names; :class:`LocatorError` if malformed."""
    if type(designator) is not str or len(designator) != _B32_LENGTH:
        raise LocatorError(
            f"a {TRANSPORT} designator is 52 base32 characters (an Ed25519 key): {designator!r}"
        )
    try:
        raw = base64.b32decode(designator.upper() + "====")
    except ValueError:
        raise LocatorError(f"a {TRANSPORT} designator is base32: {designator!r}") from None
    try:
        return PublicKey(raw)
    except SignatureError as exc:
        raise LocatorError(str(exc)) from None


def _url_of(location: PeerLocation) -> str:
    hints = location.hints or {}
    url = hints.get("url")
    if type(url) is not str or not url:
        raise LocatorError(f"a {TRANSPORT} locator needs a url hint: {location}")
    scheme = urlsplit(url).scheme
    if scheme not in ("ws", "wss"):
        raise LocatorError(f"a {TRANSPORT} url is ws:// or wss://, not {url!r}")
    return url


# == peer-auth (the designator check) =======================================================


def challenge_message(payload: bytes) -> bytes:
    """The client's first message: the Syrup bytes of ``<init:peer-auth payload>``."""
    return syrup.encode(Record(_INIT_PEER_AUTH, (payload,)))


def answer_challenge(identity: NodeIdentity, message: bytes) -> bytes:
    """The server's reply to a client's ``init:peer-auth``: a sig-envelope over its exact bytes.

    Anything but a canonical ``<init:peer-auth bytes>`` is refused
    (:class:`PeerAuthError`), so the server never signs other data.
    """
    try:
        record = syrup.decode(message)
    except syrup.SyrupDecodeError as exc:
        raise PeerAuthError(f"the first message is not Syrup: {exc}") from None
    if (
        type(record) is not Record
        or record.label != _INIT_PEER_AUTH
        or len(record.fields) != 1
        or type(record.fields[0]) is not bytes
        or not 16 <= len(record.fields[0]) <= 256
    ):
        raise PeerAuthError(f"expected <init:peer-auth bytes> first, got {record!r:.120}")
    if syrup.encode(record) != message:
        raise PeerAuthError("the init:peer-auth is not in canonical Syrup")
    signature = identity.sign(message)
    return syrup.encode(Record(_SIG_ENVELOPE, (record, encode_signature(signature))))


def check_answer(expected: PublicKey, challenge: bytes, answer: bytes) -> None:
    """Check the server's sig-envelope; :class:`PeerAuthError` unless ``expected`` signed ours."""
    try:
        envelope = syrup.decode(answer)
    except syrup.SyrupDecodeError as exc:
        raise PeerAuthError(f"the peer-auth answer is not Syrup: {exc}") from None
    if type(envelope) is not Record or envelope.label != _SIG_ENVELOPE or len(envelope.fields) != 2:
        raise PeerAuthError(f"expected a desc:sig-envelope, got {envelope!r:.120}")
    signed, sig_value = envelope.fields
    try:
        signature = parse_signature(sig_value)
    except SignatureError as exc:
        raise PeerAuthError(str(exc)) from None
    if syrup.encode(signed) != challenge:
        raise PeerAuthError("the peer-auth answer signs another challenge than ours (a replay?)")
    if not expected.verify(signature, challenge):
        raise PeerAuthError(
            "the server does not hold the key its designator names "
            "(the peer-auth signature does not verify)"
        )


# == the channel ==========================================================================


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final WebSocket frame (RFC 6455 section 5.2); masked with a random key if ``mask``."""
    size = len(payload)
    first = 0x80 | opcode
    flag = 0x80 if mask else 0
    if size < 126:
        header = bytes((first, flag | size))
    elif size < 65536:
        header = _HEAD16.pack(first, flag | 126, size)
    else:
        header = _HEAD64.pack(first, flag | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + _xor(payload, key)


def _xor(data: bytes | bytearray, key: bytes | bytearray) -> bytes:
    size = len(data)
    if not size:
        return b""
    stream = (bytes(key) * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        size, "little"
    )


class WebSocketChannel(FramedChannel):
    """One WebSocket connection as a message channel: one OCapN message per binary message.

    It sits on a byte channel (``raw``: TCP or TLS).  wsproto does the HTTP
    upgrade; the frames after it are read and written here (RFC 6455,
    no extensions), strictly: a text message, a message over
    ``max_message`` bytes, a frame masked the wrong way or with reserved bits
    set ends the connection with the close code that says why, and
    :meth:`receive` raises :class:`FrameError`; :class:`anyio.EndOfStream`
    once the peer closed.  Sends never block.  When the byte channel offers
    ``push`` so does this one (``None`` if not).
    """

    def __init__(self, raw: Channel, *, client: bool, max_message: int = MAX_MESSAGE_BYTES):
        super().__init__(raw)
        self._client = client
        self._ws = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._max = max_message
        self._head = bytearray()  # bytes before the upgrade is done
        self._buffer = bytearray()  # frame bytes after it
        self._open = False
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._in_message = False
        self._request: Request | None = None
        self._close_sent = False
        self._closing = False

    # -- opening ------------------------------------------------------------------------

    async def open_client(self, host: str, target: str) -> None:
        """Send the upgrade request; wait until the server accepts it."""
        self._raw.send_nowait(self._ws.send(Request(host=host, target=target)))
        while not self._open:
            await self._pump()

    async def open_server(self) -> Request:
        """Wait for the client's upgrade request and accept it (any path, no subprotocol)."""
        while self._request is None:
            await self._pump()
        self._raw.send_nowait(self._ws.send(AcceptConnection()))
        self._open = True
        self._parse()
        return self._request

    # -- the Channel interface ------------------------------------------------------------

    def send_nowait(self, data: bytes) -> None:
        """Send ``data`` as one binary WebSocket message."""
        if self._closing or self._close_sent or not self._open:
            raise anyio.ClosedResourceError
        self._raw.send_nowait(encode_frame(_BINARY, data, mask=self._client))

    async def aclose(self) -> None:
        """Send a close frame (if none was sent), then close the byte channel gracefully."""
        if self._closing:
            return
        self._closing = True
        self._close_frame(_NORMAL, "")
        await self._raw.aclose()

    # -- reading ---------------------------------------------------------------------------

    def _close_frame(self, code: int, reason: str) -> None:
        if self._close_sent or not self._open:
            return
        self._close_sent = True
        payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:120]
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            self._raw.send_nowait(encode_frame(_CLOSE, payload, mask=self._client))

    def _fail(self, error: BaseException, code: int) -> None:
        if self._ended is None:
            self._close_frame(code, str(error))
            self._ended = error

    def _feed(self, data: bytes) -> None:
        """Take bytes from the peer: the upgrade first, then frames."""
        if self._ended is not None:
            return
        if self._open:
            self._buffer += data
            self._parse()
            return
        head = self._head
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > _MAX_HEAD:
                self._ended = FrameError("an HTTP upgrade head over 16 KiB")
            return
        rest = head[end + 4 :]
        try:
            self._ws.receive_data(bytes(head[: end + 4]))
        except RemoteProtocolError as exc:
            self._ended = FrameError(f"bad WebSocket upgrade: {exc}")
            return
        head.clear()
        self._buffer += rest
        for event in self._ws.events():
            if isinstance(event, Request):
                self._request = event  # open once open_server accepts it
            elif isinstance(event, AcceptConnection):
                self._open = True
                self._parse()
            elif isinstance(event, RejectConnection):
                self._ended = FrameError(
                    f"the server refused the WebSocket upgrade ({event.status_code})"
                )

    def _parse(self) -> None:
        """Act on every whole frame in the buffer."""
        buffer = self._buffer
        masked_in = not self._client  # clients mask, servers do not
        while self._ended is None and len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            opcode = first & 0x0F
            size = second & 0x7F
            at = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size = int.from_bytes(buffer[2:4], "big")
                at = 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size = int.from_bytes(buffer[2:10], "big")
                at = 10
            if first & 0x70:
                self._fail(FrameError("a WebSocket frame with reserved bits set"), _PROTOCOL_ERROR)
                return
            if bool(second & 0x80) != masked_in:
                self._fail(
                    FrameError(f"a{'n un' if masked_in else ' '}masked WebSocket frame"),
                    _PROTOCOL_ERROR,
                )
                return
            if opcode >= 8:
                if not first & 0x80 or size > 125:
                    self._fail(FrameError("a fragmented or long control frame"), _PROTOCOL_ERROR)
                    return
            elif opcode == _TEXT:
                self._fail(
                    FrameError("a text WebSocket message (OCapN messages are binary)"),
                    _UNSUPPORTED_DATA,
                )
                return
            elif self._partial_size + size > self._max:
                self._fail(FrameError(f"a WebSocket message over {self._max} bytes"), _TOO_BIG)
                return
            if masked_in:
                total = at + 4 + size
                if len(buffer) < total:
                    return
                payload = _xor(buffer[at + 4 : total], buffer[at : at + 4])
            else:
                total = at + size
                if len(buffer) < total:
                    return
                payload = bytes(buffer[at:total])
            del buffer[:total]
            if opcode in (_BINARY, _CONTINUATION):
                if (opcode == _BINARY) == self._in_message:
                    self._fail(FrameError("a WebSocket message out of sequence"), _PROTOCOL_ERROR)
                    return
                if first & 0x80:
                    if self._partial:
                        self._partial.append(payload)
                        payload = b"".join(self._partial)
                        self._partial = []
                    self._messages.append(payload)
                    self._partial_size = 0
                    self._in_message = False
                else:
                    self._partial.append(payload)
                    self._partial_size += size
                    self._in_message = True
            elif opcode == _CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if code in (_NORMAL, 1001, 1005):
                    self._ended = anyio.EndOfStream()
                else:
                    reason = payload[2:].decode("utf-8", "replace")
                    self._ended = FrameError(f"the peer closed the WebSocket: {code} {reason}")
                self._close_frame(_NORMAL if code == 1005 else code, "")
            elif opcode == _PING:
                if not self._close_sent:
                    self._raw.send_nowait(encode_frame(_PONG, payload, mask=self._client))
            elif opcode != _PONG:
                self._fail(FrameError(f"an unknown WebSocket opcode {opcode}"), _PROTOCOL_ERROR)


# == the netlayer ==========================================================================


class WebSocketNetlayer(KeyedNetlayer):
    """Listen for ``websocket`` peers on ``host:port`` and dial them.

    ``identity``: the key pair the designator names (default: a fresh one;
    give a saved :class:`~ocapn.identity.NodeIdentity` to keep URIs across
    restarts).  ``ssl_context``: serve ``wss://`` with it.  ``public_url``:
    the URL to advertise (behind a reverse proxy; any path); ``advertise``:
    only the host to put in our URL.
    ``client_ssl_context``: what to trust when dialing ``wss://`` (default:
    the system's CA store, hostnames checked).
    """

    transport = TRANSPORT
    framing: Literal["message"] = "message"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        identity: NodeIdentity | None = None,
        public_url: str | None = None,
        advertise: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        max_message: int = MAX_MESSAGE_BYTES,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS,
        fast_path: bool = True,
    ) -> None:
        if public_url is not None and urlsplit(public_url).scheme not in ("ws", "wss"):
            raise LocatorError(f"a {TRANSPORT} url is ws:// or wss://, not {public_url!r}")
        super().__init__(identity, port)
        self.host = host
        self.public_url = public_url
        self.advertise = advertise or host
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context
        self.max_message = max_message
        self.handshake_timeout = handshake_timeout
        self.fast_path = fast_path

    def designator_of(self, public: PublicKey) -> str:
        """The designator that names ``public``."""
        return designator_of(public)

    def __repr__(self) -> str:
        return f"<WebSocketNetlayer {self.host}:{self.port}>"

    # -- serving -------------------------------------------------------------------------

    async def serve(
        self, handler: ConnectionHandler, *, task_status: TaskStatus[PeerLocation]
    ) -> None:
        """Listen, report our location, and serve each connection in a task of its own."""
        accepted = partial(self._accepted, handler)
        async with anyio.create_task_group() as tg:
            if self.ssl_context is None:
                serve = partial(
                    serve_channels, self.host, self.port, accepted, fast_path=self.fast_path
                )
                port = await tg.start(serve)
            else:
                port = await tg.start(self._serve_tls, accepted)
            self.port = port
            scheme = "wss" if self.ssl_context else "ws"
            url = self.public_url or f"{scheme}://{_netloc(self.advertise, port)}"
            self._location = PeerLocation(TRANSPORT, self.designator, {"url": url})
            task_status.started(self._location)

    async def _serve_tls(
        self, accepted: ConnectionHandler, *, task_status: TaskStatus[int]
    ) -> None:
        assert self.ssl_context is not None
        listener = TLSListener(
            await anyio.create_tcp_listener(local_host=self.host, local_port=self.port),
            self.ssl_context,
            standard_compatible=False,
        )
        async with listener:

            async def wrap(stream: anyio.abc.ByteStream) -> None:
                async with StreamChannel(_TLSClosing(stream)) as channel:
                    try:
                        await accepted(channel)
                    except Exception:
                        log.exception("error while serving a wss connection")

            task_status.started(listener.listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(wrap)

    async def _accepted(self, handler: ConnectionHandler, raw: Channel) -> None:
        channel = WebSocketChannel(raw, client=False, max_message=self.max_message)
        try:
            with anyio.fail_after(self.handshake_timeout):
                await channel.open_server()
                challenge = await channel.receive()
                channel.send_nowait(answer_challenge(self.identity, challenge))
        except TimeoutError:
            log.info("websocket: a peer did not finish its handshake in time")
            await channel.aclose()
            return
        except PeerAuthError as exc:
            log.info("websocket: refusing a peer: %s", exc)
            channel._close_frame(_POLICY, str(exc)[:120])
            await channel.aclose()
            return
        except (FrameError, *_TRANSPORT_ERRORS) as exc:
            log.info("websocket: a connection failed before its session: %r", exc)
            await channel.aclose()
            return
        try:
            await handler(channel)
        finally:
            await channel.aclose()

    # -- dialing ---------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, location: PeerLocation) -> AsyncIterator[Channel]:
        """A channel to the ``websocket`` peer at ``location``, its key checked."""
        if location.transport != TRANSPORT:
            raise LocatorError(f"not a {TRANSPORT} locator: {location}")
        expected = key_of_designator(location.designator)
        url = _url_of(location)
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname
        if not host:
            raise LocatorError(f"no host in {url!r}")
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError:
            raise LocatorError(f"bad port in {url!r}") from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        async with self._raw_connect(host, port, secure) as raw:
            channel = WebSocketChannel(raw, client=True, max_message=self.max_message)
            try:
                try:
                    with anyio.fail_after(self.handshake_timeout):
                        await channel.open_client(parts.netloc, target)
                        challenge = challenge_message(os.urandom(_CHALLENGE_BYTES))
                        channel.send_nowait(challenge)
                        check_answer(expected, challenge, await channel.receive())
                except TimeoutError:
                    raise NetlayerTimeout(
                        f"{url} did not finish the WebSocket handshake in "
                        f"{self.handshake_timeout:g} s"
                    ) from None
                except anyio.EndOfStream:
                    raise PeerAuthError(f"{url} closed the connection during peer-auth") from None
                yield channel
            finally:
                with anyio.CancelScope(shield=True):
                    await channel.aclose()

    @asynccontextmanager
    async def _raw_connect(self, host: str, port: int, secure: bool) -> AsyncIterator[Channel]:
        if not secure:
            async with connect_channel(host, port, fast_path=self.fast_path) as raw:
                yield raw
            return
        context = self.client_ssl_context or ssl.create_default_context()
        stream = await anyio.connect_tcp(
            host, port, tls=True, ssl_context=context, tls_hostname=host,
            tls_standard_compatible=False,
        )
        async with StreamChannel(_TLSClosing(stream)) as channel:
            yield channel


class _TLSClosing(anyio.abc.ByteStream):
    """A TLS stream whose ``send_eof`` closes it (close_notify, then FIN).

    TLS has no half-close; by the time a channel sends its end of stream the
    WebSocket close frames have said all there is to say, and waiting for the
    peer's end instead would make both sides wait out the close grace.
    """

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Any:
        return self._stream.extra_attributes


_TRANSPORT_ERRORS: Final = (
    anyio.EndOfStream,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    OSError,
)


def _netloc(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def self_signed_client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client context for ``wss://`` servers with self-signed certificates (as Goblins makes).

    With ``cafile`` (the server's certificate), that certificate is trusted and
    nothing else (hostnames are not checked: such certificates name no host).
    Without it, **no certificate is checked at all**: the connection is still
    encrypted, and the peer-auth exchange still proves the server holds the
    designator's key, but a man in the middle can read the traffic.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if cafile is not None:
        context.load_verify_locations(cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def websocket_netlayer(
    host: str = "127.0.0.1", port: int = 0, *, identity: NodeIdentity | None = None,
    public_url: str | None = None, ssl_context: ssl.SSLContext | None = None,
    client_ssl_context: ssl.SSLContext | None = None, **options: Any,
) -> WebSocketNetlayer:
    """A ``websocket`` netlayer listening on ``host:port`` (0: any free port)."""
    return WebSocketNetlayer(
        host, port, identity=identity, public_url=public_url, ssl_context=ssl_context,
        client_ssl_context=client_ssl_context, **options,
    )
