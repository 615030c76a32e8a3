"""Incremental Syrup decoding and the ``len:`` message framing (spec section 13.2).

:class:`StreamDecoder` reads back-to-back Syrup values from a byte stream
(the unframed ``tcp-testing-only`` netlayer).  When a chunk holds whole
values it decodes them at once.  When a value is cut short it switches to a
light scanner that only tracks nesting and skips over length-prefixed
payloads, remembering where it stopped; the value is decoded once the
scanner has found its end.  So a value that arrives in many pieces costs
a constant number of passes over its bytes, not one pass per piece, and a
large bytestring costs O(1) per chunk while its payload streams in.

Copies: a ``bytes`` chunk is parsed where it is (only the bytes of a value it
leaves incomplete are kept, in one growing buffer); a value that arrived in
pieces is parsed in place from that buffer (through a ``memoryview`` once it
is large), so each bytestring in it is copied once, into its ``bytes`` value.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Final

from ocapn._syrup_decode import (
    VIEW_THRESHOLD,
    WHITESPACE,
    Config,
    DecodeKeyOrder,
    HookFailed,
    TooDeep,
    Truncated,
    decode_one,
    out_of_memory,
    parse_digits,
)
from ocapn._syrup_types import DEFAULT_LIMITS, Limits, SyrupDecodeError

__all__ = ["FrameDecoder", "StreamDecoder", "frame"]

RecordHook = Callable[[object, list[object]], object]

_OPENERS: Final = frozenset(b"[{<#")
_CLOSERS: Final = frozenset(b"]}>$")
_LENGTH_MARKERS: Final = frozenset(b":\"'")


class StreamDecoder:
    """Decode a stream of back-to-back Syrup values fed in arbitrary chunks.

    Takes the same options as :func:`ocapn.syrup.decode`; ``limits.max_size``
    bounds each value.  Error offsets count bytes from the start of the
    stream.  ``record_hook`` is called exactly once for each record of each
    value, possibly before the value's last bytes have arrived, and always
    before :meth:`feed` returns the values decoded before it.

    After an error (or an exception from ``record_hook``) the decoder is
    spent: every later call raises the same exception.
    """

    def __init__(
        self,
        *,
        lenient: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        record_hook: RecordHook | None = None,
        key_order: DecodeKeyOrder = "syrup",
    ) -> None:
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
        self._config = Config(lenient, limits, record_hook, key_order)
        if record_hook is not None:
            self._config.hook_log = []
        self._buffer = bytearray()
        # A bytes chunk fed while the buffer was empty: parsed where it is, and
        # only its unparsed tail is copied into the buffer.
        self._chunk: bytes | None = None
        self._consumed = 0  # stream offset of the first unparsed byte
        self._error: BaseException | None = None
        # Scanner state for a value that did not arrive whole (None: not scanning).
        self._scan_pos: int | None = None  # next buffer index to look at
        self._scan_depth = 0
        self._scan_digits = 0  # digits of a number seen so far at _scan_pos
        self._lazy: Generator[object, None, None] | None = None  # from feed_lazily

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete value are held."""
        return len(self._buffer)

    def _add(self, chunk: bytes | bytearray | memoryview) -> None:
        if not self._buffer and self._scan_pos is None and type(chunk) is bytes:
            self._chunk = chunk
        else:
            self._buffer += chunk

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[object]:
        """Add bytes; return every value they complete, in order.

        If the bytes hold good values followed by a fault, the good values
        are returned and the fault is raised by the next call.
        """
        if self._error is not None:
            raise self._error
        self._finish_lazy()
        self._add(chunk)
        out: list[object] = []
        failure: BaseException
        try:
            # One by one, not out.extend(...): compiled (mypyc), extend keeps
            # nothing of a generator that raises part-way.
            for value in self._values():
                out.append(value)
            return out
        except SyrupDecodeError as exc:
            failure = exc
        except HookFailed as wrapper:
            failure = wrapper.args[0]
        self._error = failure
        if out:
            return out
        raise failure

    def feed_lazily(self, chunk: bytes | bytearray | memoryview) -> Iterator[object]:
        """Add bytes; return an iterator that decodes each completed value only when asked.

        For a consumer whose handling of one value changes how the next is
        decoded (a message that refers to what the previous one created):
        nothing of value N+1, not even its ``record_hook`` calls, happens
        before the consumer asks for it.  A fault is raised when it is
        reached.  Abandoning the iterator is fine: the next call resumes at
        the first value not yet returned.
        """
        if self._error is not None:
            raise self._error
        self._finish_lazy()
        self._add(chunk)
        self._lazy = self._lazy_chunk() if self._chunk is not None else self._lazy_values()
        return self._lazy

    def _lazy_chunk(self) -> Generator[object, None, None]:
        """:meth:`_lazy_values` for a chunk parsed where it is, in one generator.

        The common case of a read (whole messages, perhaps the start of the
        next), with one generator frame less per value than the general path.
        """
        chunk, self._chunk = self._chunk, None
        assert chunk is not None
        n = len(chunk)
        lenient = self._config.lenient
        pos = 0
        try:
            try:
                while pos < n:
                    if lenient and chunk[pos] in WHITESPACE:
                        pos += 1
                        continue
                    try:
                        value, end = self._decode_at(chunk, pos)
                    except (IndexError, Truncated):
                        break  # incomplete: the scanner takes over from pos
                    pos = end
                    yield value
            finally:
                if pos < n:
                    with memoryview(chunk) as rest:
                        self._buffer += rest[pos:]
                self._consumed += pos
            if self._buffer:  # the chunk ends inside a value: scan it, do not parse it again
                self._scan_pos, self._scan_depth, self._scan_digits = 0, 0, 0
                yield from self._values()
        except SyrupDecodeError as exc:
            self._error = exc
            raise
        except HookFailed as wrapper:
            self._error = wrapper.args[0]
            raise wrapper.args[0] from None

    def _lazy_values(self) -> Generator[object, None, None]:
        try:
            yield from self._values()
        except SyrupDecodeError as exc:
            self._error = exc
            raise
        except HookFailed as wrapper:
            self._error = wrapper.args[0]
            raise wrapper.args[0] from None

    def _finish_lazy(self) -> None:
        lazy, self._lazy = self._lazy, None
        if lazy is not None:
            lazy.close()  # runs its cleanup: the buffer drops what it returned
        chunk, self._chunk = self._chunk, None
        if chunk is not None:  # fed to an iterator that was never started
            self._buffer += chunk

    def close(self) -> None:
        """Declare the end of the stream; raise if it ends in the middle of a value."""
        if self._error is not None:
            raise self._error
        self._finish_lazy()
        buffer = self._buffer
        if self._config.lenient and not buffer.strip():  # strip() removes WHITESPACE
            buffer.clear()
        if not buffer:
            return
        failure: BaseException = SyrupDecodeError(
            f"stream ends in the middle of a value ({len(buffer)} bytes buffered)",
            self._consumed + len(buffer),
        )
        try:
            # A value still being scanned has not been checked in full yet:
            # report its first real fault, as decode() would, if it has one.
            self._decode_at(bytes(buffer), 0)
        except SyrupDecodeError as exc:
            failure = exc
        except HookFailed as wrapper:
            failure = wrapper.args[0]
        except (IndexError, Truncated):
            pass
        self._error = failure
        raise failure

    # -- internals ---------------------------------------------------------------

    def _values(self) -> Iterator[object]:
        """Decode values from the front of the input, one per step, until it runs dry."""
        buffer = self._buffer
        chunk, self._chunk = self._chunk, None
        if chunk is not None:
            yield from self._whole_values(chunk)
            if buffer:  # the chunk ends inside a value: scan it, do not parse it again
                self._scan_pos, self._scan_depth, self._scan_digits = 0, 0, 0
        while buffer:
            if self._scan_pos is None:
                yield from self._whole_values(None)
                if not buffer:
                    break
                self._scan_pos, self._scan_depth, self._scan_digits = 0, 0, 0
            end = self._scan()
            if end is None:
                break
            self._scan_pos = None
            value = self._decode_scanned(end)
            del buffer[:end]  # cheap: a bytearray drops its front without moving the rest
            self._consumed += end
            yield value

    def _decode_scanned(self, end: int) -> object:
        """Decode the value the scanner found in ``buffer[:end]``, in place if it is large."""
        with memoryview(self._buffer) as view:
            data: bytes | memoryview = view[:end].tobytes() if end < VIEW_THRESHOLD else view[:end]
            try:
                value, stop = self._decode_at(data, 0)
            except (IndexError, Truncated):
                stop = -1
            finally:
                if type(data) is memoryview:
                    data.release()  # before the buffer is resized
            if stop != end:  # the scanner and the parser disagree: a bug, not bad input
                raise AssertionError(f"scanner found a value of {end} bytes, parser {stop}")
            return value

    def _whole_values(self, chunk: bytes | None) -> Iterator[object]:
        """Decode the complete values at the front of ``chunk`` (None: of the buffer).

        What is left of a chunk goes to the buffer, or the buffer is trimmed,
        once, when the generator ends or is closed, so that error offsets
        (``_consumed``) stay put while it runs.
        """
        buffer = self._buffer
        data = bytes(buffer) if chunk is None else chunk
        n = len(data)
        lenient = self._config.lenient
        pos = 0
        try:
            while pos < n:
                if lenient and data[pos] in WHITESPACE:
                    pos += 1
                    continue
                try:
                    value, end = self._decode_at(data, pos)
                except (IndexError, Truncated):
                    break  # incomplete: the scanner takes over from pos
                pos = end
                yield value
        finally:
            # The values before a fault, or before a pause, are done.
            if chunk is None:
                del buffer[:pos]
            elif pos < n:
                with memoryview(chunk) as rest:
                    buffer += rest[pos:]
            self._consumed += pos

    def _decode_at(self, data: bytes | memoryview, pos: int) -> tuple[object, int]:
        """Decode the value at ``pos``; errors get stream offsets.

        Raises ``IndexError`` or :class:`Truncated` if the value is incomplete,
        and :class:`HookFailed` if ``record_hook`` raised.
        """
        config = self._config
        config.base = self._consumed
        try:
            value, end = decode_one(data, pos, config)
        except (IndexError, Truncated):
            # Incomplete: keep the hook results for when the rest has arrived.
            log = config.hook_log
            if log:
                config.hook_results.update(log)
                log.clear()
            raise
        except TooDeep as deep:
            raise SyrupDecodeError(
                "nesting too deep for the Python stack (lower max_depth)",
                self._consumed + deep.args[0],
            ) from None
        except SyrupDecodeError as exc:
            raise SyrupDecodeError(exc.message, self._consumed + (exc.offset or 0)) from None
        except MemoryError:
            raise out_of_memory(len(data) - pos) from None
        else:
            if end - pos > config.max_size:
                raise SyrupDecodeError(
                    f"value of {end - pos} bytes is over the size limit of {config.max_size}",
                    self._consumed + pos + config.max_size,
                )
            if config.hook_log:
                config.hook_log.clear()  # the value is whole: its records are done
            if config.hook_results:
                config.hook_results.clear()
            return value, end

    def _first_fault(self, error: SyrupDecodeError) -> SyrupDecodeError:
        """``error``, found by the scanner, or an earlier fault the parser finds first.

        The scanner does not check canonical form, so the bytes before the
        point where it gave up may hold a fault that :func:`decode` would
        report instead; report the same one.
        """
        try:
            self._decode_at(bytes(self._buffer), 0)
        except SyrupDecodeError as earlier:
            if earlier.offset is not None and earlier.offset <= (error.offset or 0):
                return earlier
        except (IndexError, Truncated):
            pass
        return error

    def _scan(self) -> int | None:
        """Advance over the incomplete value at the front of the buffer.

        Returns the value's length once its last byte has arrived, else None.
        Only structure is checked here (nesting, lengths, limits); anything
        odd ends the scan early so that the parser reports it properly.
        """
        buffer = self._buffer
        config = self._config
        n = len(buffer)
        i = self._scan_pos
        assert i is not None
        depth = self._scan_depth
        if i > n:
            return None  # still waiting for the rest of a payload
        if depth == 0 and i > 0:
            return i  # the value was one atom, now complete
        lenient = config.lenient
        max_digits = config.max_int_digits
        while i < n:
            c = buffer[i]
            if 47 < c < 58:
                j = i + self._scan_digits
                while j < n and 47 < buffer[j] < 58:
                    j += 1
                if j - i > max_digits:
                    return j  # the parser reports the over-long number
                if j == n:
                    self._scan_digits = j - i
                    break
                self._scan_digits = 0
                m = buffer[j]
                if m == 43 or m == 45:  # + -
                    i = j + 1
                elif m in _LENGTH_MARKERS:
                    length = parse_digits(bytes(buffer[i:j]))
                    if length > config.max_size:
                        raise self._first_fault(
                            SyrupDecodeError(
                                f"length {length} is over the size limit of {config.max_size}",
                                self._consumed + i,
                            )
                        )
                    i = j + 1 + length
                else:
                    return j + 1
            elif c in _OPENERS:
                depth += 1
                if depth > config.max_depth:
                    return i + 1
                i += 1
                continue
            elif c in _CLOSERS:
                depth -= 1
                i += 1
                if depth <= 0:
                    return i  # the value's last byte (a stray closer: the parser objects)
                continue
            elif c == 116 or c == 102:  # t f
                i += 1
            elif c == 68:  # D
                i += 9
            elif c == 70:  # F
                i += 5
            elif lenient and c in WHITESPACE:
                i += 1
                continue
            else:
                return i + 1
            if depth == 0:
                break  # one atom: complete once its last byte is in
        if depth == 0 and i <= n and i > 0 and self._scan_digits == 0:
            return i
        if max(i, n) > config.max_size:
            raise self._first_fault(
                SyrupDecodeError(
                    f"value is over the size limit of {config.max_size} bytes",
                    self._consumed + config.max_size,
                )
            )
        self._scan_pos = i
        self._scan_depth = depth
        return None


def frame(payload: bytes | bytearray | memoryview) -> bytes:
    """Wrap one message as ``<decimal length>:<payload>`` (spec section 13.2)."""
    data = bytes(payload)
    return b"%d:%s" % (len(data), data)


class FrameDecoder:
    """Split a byte stream of ``len:payload`` frames into payloads.

    The length is ASCII decimal without leading zeros (``0:`` is an empty
    frame) and at most ``max_frame_size``.  Error offsets count bytes from
    the start of the stream; after an error the decoder is spent.
    """

    def __init__(self, *, max_frame_size: int = DEFAULT_LIMITS.max_size) -> None:
        if type(max_frame_size) is not int or max_frame_size < 0:
            raise ValueError(f"max_frame_size must be a non-negative int, not {max_frame_size!r}")
        self._max = max_frame_size
        self._max_digits = len(str(max_frame_size))
        self._buffer = bytearray()
        self._consumed = 0  # stream offset of self._buffer[0]
        self._need: int | None = None  # header + payload length of the frame being read
        self._header = 0  # header length (digits and colon) of that frame
        self._error: SyrupDecodeError | None = None

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are held."""
        return len(self._buffer)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes; return the payload of every frame they complete."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += chunk
        out: list[bytes] = []
        try:
            while True:
                need = self._need
                if need is None:
                    need = self._read_header()
                    if need is None:
                        break
                if len(buffer) < need:
                    break
                with memoryview(buffer) as view:
                    out.append(view[self._header : need].tobytes())  # one copy, not two
                del buffer[:need]
                self._consumed += need
                self._need = None
        except SyrupDecodeError as exc:
            self._error = exc
            raise
        return out

    def close(self) -> None:
        """Declare the end of the stream; raise if it ends inside a frame."""
        if self._error is not None:
            raise self._error
        if self._buffer:
            self._error = SyrupDecodeError(
                f"stream ends inside a frame ({len(self._buffer)} bytes buffered)",
                self._consumed + len(self._buffer),
            )
            raise self._error

    def _read_header(self) -> int | None:
        buffer = self._buffer
        colon = buffer.find(b":", 0, self._max_digits + 1)
        digits = bytes(buffer[: self._max_digits + 1] if colon < 0 else buffer[:colon])
        for k, c in enumerate(digits):
            if not 47 < c < 58:
                raise SyrupDecodeError(
                    f"frame length has {_show(c)}; expected a decimal digit or ':'",
                    self._consumed + k,
                )
        if len(digits) > 1 and digits[0] == 48:
            raise SyrupDecodeError("frame length has a leading zero", self._consumed)
        if colon < 0:
            if len(digits) > self._max_digits:
                raise self._too_big(int(digits))
            return None
        if colon == 0:
            raise SyrupDecodeError("frame length is empty", self._consumed)
        length = int(digits)
        if length > self._max:
            raise self._too_big(length)
        self._header = colon + 1
        self._need = colon + 1 + length
        return self._need

    def _too_big(self, length: int) -> SyrupDecodeError:
        return SyrupDecodeError(
            f"frame length {length} is over the limit of {self._max}", self._consumed
        )


def _show(byte: int) -> str:
    return repr(chr(byte)) if 32 < byte < 127 else f"byte 0x{byte:02x}"
