"""Byte-exact OCapN CBOR vectors, transcribed from Endo's tests.

Source: endojs/endo, branch ``agent/iroh-preserve-native-datagram-receivers``
at 1ef30c2599a3d323959148a00f47c450cd681223 (the branch that also carries the
np netlayer; ``kriskowal-ocapn-cbor`` at bac01ff has the same codec):

- ``packages/ocapn/test/cbor/encode.test.js`` and
  ``packages/ocapn/docs/cbor-encoding.md``: the atom hex strings in ``ATOMS``;
- ``packages/ocapn/test/codecs/snapshots/{operations,passable,descriptors,
  components}.test.js.md``: the ``[cbor]`` snapshots, in Endo's diagnostic
  notation, in ``MESSAGES`` (the Python value beside each is ours).

Only the data is transcribed; no Endo code.
"""

from __future__ import annotations

from typing import Any

from captp import Record, Symbol

S = Symbol


def R(label: str, *fields: Any) -> Record:
    return Record(Symbol(label), fields)


# (value, hex of its CBOR encoding)
ATOMS: list[tuple[Any, str]] = [
    (True, "f5"),
    (False, "f4"),
    (0, "c240"),
    (1, "c24101"),
    (5, "c24105"),
    (255, "c241ff"),
    (256, "c2420100"),
    (65535, "c242ffff"),
    (0x123456789ABCDEF0, "c248123456789abcdef0"),
    (-1, "c340"),
    (-2, "c34101"),
    (-256, "c341ff"),
    (-257, "c3420100"),
    (0.0, "fb0000000000000000"),
    (-0.0, "fb8000000000000000"),
    (1.0, "fb3ff0000000000000"),
    (-1.0, "fbbff0000000000000"),
    (1.5, "fb3ff8000000000000"),
    (float("inf"), "fb7ff0000000000000"),
    (float("-inf"), "fbfff0000000000000"),
    (float("nan"), "fb7ff8000000000000"),
    ("", "60"),
    ("a", "6161"),
    ("hello", "6568656c6c6f"),
    ("héllo", "6668c3a96c6c6f"),
    (b"", "40"),
    (b"\xde\xad\xbe\xef", "44deadbeef"),
    (S("method"), "d90118666d6574686f64"),
    (S("x"), "d901186178"),
    ([], "80"),
    ([1, 2], "82c24101c24102"),
    ({}, "a0"),
    ({"a": 1}, "a16161c24101"),
    ({"a": 1, "b": 2}, "a26161c241016162c24102"),
    (R("import-object", 5), "d81b826d696d706f72742d6f626a656374c24105"),
    ("a" * 23, "77" + "61" * 23),
    ("a" * 24, "7818" + "61" * 24),
    ("a" * 255, "78ff" + "61" * 255),
    ("a" * 256, "790100" + "61" * 256),
]

# Endo's example key and signature bytes (test/codecs/_codecs_util.js).
Q = bytes(range(0, 64, 2))
SIG = bytes(range(32))
SIG_VAL = [S("sig-val"), [S("eddsa"), [S("r"), SIG], [S("s"), SIG]]]
PUBKEY = [
    S("public-key"),
    [S("ecc"), [S("curve"), S("Ed25519")], [S("flags"), S("eddsa")], [S("q"), Q]],
]
TCP_PEER = R("ocapn-peer", S("tcp"), "1234", {"host": "127.0.0.1", "port": "54822"})
TEST_PEER = R(
    "ocapn-peer", S("tcp-test-only"), "exporter", {"host": "127.0.0.1", "port": "54822"}
)
EXPORT0 = R("desc:export", 0)
IMPORT1 = R("desc:import-object", 1)

_PY_SIG = (
    "[280(\"sig-val\"), [280(\"eddsa\"), [280(\"r\"), "
    "h'000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'], [280(\"s\"), "
    "h'000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f']]]"
)
_PY_PUBKEY = (
    "[280(\"public-key\"), [280(\"ecc\"), [280(\"curve\"), 280(\"Ed25519\")], [280(\"flags\"), "
    "280(\"eddsa\")], [280(\"q\"), h'00020406080a0c0e10121416181a1c1e20222426282a2c2e30323436383a"
    "3c3e']]]"
)
_TCP_PEER = '27(["ocapn-peer", 280("tcp"), "1234", {"host": "127.0.0.1", "port": "54822"}])'
_TEST_PEER = (
    '27(["ocapn-peer", 280("tcp-test-only"), "exporter", {"host": "127.0.0.1", "port": "54822"}])'
)

# (name, value, Endo's diagnostic of its CBOR bytes)
MESSAGES: list[tuple[str, Any, str]] = [
    (
        "op:start-session",
        R("op:start-session", "captp-v1", PUBKEY, TCP_PEER, SIG_VAL),
        f'27(["op:start-session", "captp-v1", {_PY_PUBKEY}, {_TCP_PEER}, {_PY_SIG}])',
    ),
    (
        "op:deliver fulfill (fire-and-forget)",
        R(
            "op:deliver",
            R("desc:export", 1),
            [S("fulfill"), R("desc:import-object", 2)],
            False,
            False,
        ),
        '27(["op:deliver", 27(["desc:export", 2(h\'01\')]), [280("fulfill"), '
        "27([\"desc:import-object\", 2(h'02')])], false, false])",
    ),
    (
        "op:deliver deposit-gift (fire-and-forget)",
        R("op:deliver", EXPORT0, [S("deposit-gift"), 42, IMPORT1], False, False),
        "27([\"op:deliver\", 27([\"desc:export\", 2(h'')]), [280(\"deposit-gift\"), 2(h'2a'), "
        "27([\"desc:import-object\", 2(h'01')])], false, false])",
    ),
    (
        "op:deliver make-car-factory",
        R("op:deliver", R("desc:export", 5), [S("make-car-factory")], 3,
          R("desc:import-object", 15)),
        "27([\"op:deliver\", 27([\"desc:export\", 2(h'05')]), [280(\"make-car-factory\")], "
        "2(h'03'), 27([\"desc:import-object\", 2(h'0f')])])",
    ),
    (
        "op:deliver beep",
        R("op:deliver", R("desc:export", 1), [S("beep")], False, R("desc:import-object", 2)),
        "27([\"op:deliver\", 27([\"desc:export\", 2(h'01')]), [280(\"beep\")], false, "
        "27([\"desc:import-object\", 2(h'02')])])",
    ),
    (
        "op:deliver fetch",
        R("op:deliver", EXPORT0, [S("fetch"), b"swiss-number"], 3, R("desc:import-object", 5)),
        "27([\"op:deliver\", 27([\"desc:export\", 2(h'')]), [280(\"fetch\"), "
        "h'73776973732d6e756d626572'], 2(h'03'), 27([\"desc:import-object\", 2(h'05')])])",
    ),
    ("op:abort", R("op:abort", "explode"), '27(["op:abort", "explode"])'),
    (
        "op:listen",
        R("op:listen", R("desc:export", 1), R("desc:import-object", 2), False),
        "27([\"op:listen\", 27([\"desc:export\", 2(h'01')]), "
        "27([\"desc:import-object\", 2(h'02')]), false])",
    ),
    (
        "op:gc-exports",
        R("op:gc-exports", [1], [2]),
        "27([\"op:gc-exports\", [2(h'01')], [2(h'02')]])",
    ),
    ("op:gc-answers", R("op:gc-answers", [1]), "27([\"op:gc-answers\", [2(h'01')]])"),
    (
        "python op:deliver foo",
        R("op:deliver", EXPORT0, [S("foo"), 1, False, b"bar", ["baz"]], False, IMPORT1),
        "27([\"op:deliver\", 27([\"desc:export\", 2(h'')]), [280(\"foo\"), 2(h'01'), false, "
        "h'626172', [\"baz\"]], false, 27([\"desc:import-object\", 2(h'01')])])",
    ),
    (
        "python op:deliver make-car",
        R("op:deliver", R("desc:export", 1), [[S("red"), S("zoomracer")]], 2,
          R("desc:import-object", 2)),
        "27([\"op:deliver\", 27([\"desc:export\", 2(h'01')]), "
        "[[280(\"red\"), 280(\"zoomracer\")]], 2(h'02'), 27([\"desc:import-object\", 2(h'02')])])",
    ),
    (
        "op:get with desc:answer",
        R("op:get", R("desc:answer", 5), "someField", 10),
        "27([\"op:get\", 27([\"desc:answer\", 2(h'05')]), \"someField\", 2(h'0a')])",
    ),
    (
        "op:index with desc:answer",
        R("op:index", R("desc:answer", 5), 0, 10),
        "27([\"op:index\", 27([\"desc:answer\", 2(h'05')]), 2(h''), 2(h'0a')])",
    ),
    (
        "op:untag with desc:export",
        R("op:untag", R("desc:export", 3), "myTag", 7),
        "27([\"op:untag\", 27([\"desc:export\", 2(h'03')]), \"myTag\", 2(h'07')])",
    ),
    # passables
    ("undefined", R("void"), '27(["void"])'),
    ("null", R("null"), '27(["null"])'),
    ("integer 123", 123, "2(h'7b')"),
    ("byte array hello", b"hello", "h'68656c6c6f'"),
    ("array of selectors", [S("hello"), S("world")], '[280("hello"), 280("world")]'),
    ("struct with bigint and boolean", {"xyz": True, "abc": 123},
     "{\"abc\": 2(h'7b'), \"xyz\": true}"),
    ("struct with empty string key", {"i": 20, "": 10}, "{\"\": 2(h'0a'), \"i\": 2(h'14')}"),
    ("struct with out of order keys", {"b": 10, "a": 20}, "{\"a\": 2(h'14'), \"b\": 2(h'0a')}"),
    ("tagged value", R("desc:tagged", S("hello"), ["world"]),
     '27(["desc:tagged", 280("hello"), ["world"]])'),
    ("float64 positive", 3.2, "3.2"),
    ("float64 zero", 0.0, "0.0"),
    ("float64 negative", -42.5, "-42.5"),
    ("float64 infinity", float("inf"), "Infinity"),
    ("float64 negative infinity", float("-inf"), "-Infinity"),
    ("float64 NaN", float("nan"), "NaN"),
    ("error simple", R("desc:error", "Test error"), '27(["desc:error", "Test error"])'),
    (
        "error with special chars",
        R("desc:error", "Error: \"quoted\" and 'single' with\nnewline and\ttab"),
        '27(["desc:error", "Error: \\"quoted\\" and \'single\' with\\nnewline and\\ttab"])',
    ),
    (
        "error in record",
        {"text": "hello", "error": R("desc:error", "Message")},
        '{"error": 27(["desc:error", "Message"]), "text": "hello"}',
    ),
    (
        "sturdyRef",
        R("ocapn-sturdyref", TEST_PEER, b"123"),
        f"27([\"ocapn-sturdyref\", {_TEST_PEER}, h'313233'])",
    ),
    (
        "tagged with reference in list",
        R("desc:tagged", S("listTag"), [R("desc:import-object", 102), "hello"]),
        "27([\"desc:tagged\", 280(\"listTag\"), [27([\"desc:import-object\", 2(h'66')]), "
        "\"hello\"]])",
    ),
    # descriptors and components
    ("export (promise)", R("desc:export", 456), "27([\"desc:export\", 2(h'01c8')])"),
    ("import-promise", R("desc:import-promise", 123), "27([\"desc:import-promise\", 2(h'7b')])"),
    ("sig-val", SIG_VAL, _PY_SIG),
    (
        "handoff receive",
        R(
            "desc:sig-envelope",
            R(
                "desc:handoff-receive",
                b"123",
                b"456",
                1,
                R(
                    "desc:sig-envelope",
                    R("desc:handoff-give", PUBKEY, TCP_PEER, b"exporter-session-id",
                      b"gifter-side-id", b"gift-id"),
                    SIG_VAL,
                ),
            ),
            SIG_VAL,
        ),
        "27([\"desc:sig-envelope\", 27([\"desc:handoff-receive\", h'313233', h'343536', "
        f"2(h'01'), 27([\"desc:sig-envelope\", 27([\"desc:handoff-give\", {_PY_PUBKEY}, "
        f"{_TCP_PEER}, h'6578706f727465722d73657373696f6e2d6964', h'6769667465722d736964652d6964', "
        f"h'676966742d6964']), {_PY_SIG}])]), {_PY_SIG}])",
    ),
]
