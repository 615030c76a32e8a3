"""A reader for ``spec/endo-captp-transcript.txt``: 153 frames from a live Node peer.

The file is split on ``\\n`` only (a frame in section 7c holds a raw U+2028,
which ``str.splitlines`` would split at).  Frames are ``C->S``/``S->C`` lines
whose rest is the exact netstring; Part D holds marshal test vectors and
decoder acceptance checks.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

# A copy of spec/endo-captp-transcript.txt, so the tests need nothing outside the repository.
TRANSCRIPT = Path(
    os.environ.get(
        "ENDO_TRANSCRIPT", Path(__file__).resolve().parent / "data" / "endo-captp-transcript.txt"
    )
)

_SECTION = re.compile(r"^### ([0-9]+[a-z]?|[RE][0-9]+)\. ")
_PART = re.compile(r"^# PART ([A-Z])\. ")
_VECTOR = re.compile(r"^ {4}(capdata|smallcaps)\s*: (\".*\")  slots=(\[.*\])$")


@dataclass(frozen=True)
class Frame:
    """One frame as it crossed the socket."""

    part: str  # "A", "B" or "C"
    section: str  # "1", "7c", "R5", "E2"; "" before the first section header
    direction: str  # "C->S" or "S->C"
    index: int  # position among this section's frames in this direction
    raw: bytes  # the netstring, exactly
    line: int

    @property
    def text(self) -> str:
        """The JSON message inside the netstring."""
        _, _, rest = self.raw.partition(b":")
        return rest[:-1].decode("utf-8")

    @property
    def message(self) -> dict[str, Any]:
        """The parsed JSON message."""
        parsed: dict[str, Any] = json.loads(self.text)
        return parsed

    @property
    def sender(self) -> str:
        """``"C"`` or ``"S"``."""
        return self.direction[0]

    def __str__(self) -> str:
        return f"{self.part}/{self.section or '-'} {self.direction}#{self.index} (line {self.line})"


@dataclass(frozen=True)
class Vector:
    """A Part D marshal vector: one value's capdata and smallcaps CapData."""

    name: str
    capdata: tuple[str, list[str]]
    smallcaps: tuple[str, list[str]]


@dataclass(frozen=True)
class DecodeCheck:
    """A Part D decoder check: does JS's unserialize accept this CapData?"""

    label: str
    capdata: dict[str, Any]
    accepted: bool


@dataclass(frozen=True)
class Transcript:
    frames: list[Frame]
    vectors: list[Vector]
    checks: list[DecodeCheck]


@cache
def load() -> Transcript:
    """Parse the transcript file."""
    lines = TRANSCRIPT.read_bytes().split(b"\n")
    frames: list[Frame] = []
    vectors: list[Vector] = []
    checks: list[DecodeCheck] = []
    part = section = ""
    counts: dict[tuple[str, str, str], int] = {}
    pending: dict[str, tuple[str, list[str]]] = {}
    vector_name = ""
    in_checks = False
    for number, raw_line in enumerate(lines, 1):
        line = raw_line.decode("utf-8")
        if m := _PART.match(line):
            part, section = m.group(1), ""
            continue
        if m := _SECTION.match(line):
            section = m.group(1)
            continue
        if line.startswith(("C->S ", "S->C ")):
            direction = line[:4]
            key = (part, section, direction)
            counts[key] = counts.get(key, 0) + 1
            frames.append(Frame(part, section, direction, counts[key] - 1, raw_line[5:], number))
            continue
        if part != "D":
            continue
        if line.startswith("- Decoding checks"):
            in_checks = True
        elif in_checks and line.startswith("    ") and " -> " in line:
            left, _, verdict = line.strip().rpartition(" -> ")
            label, _, data = left.partition(": {")
            checks.append(DecodeCheck(label, json.loads("{" + data), verdict.startswith("OK")))
        elif line.startswith("- "):
            vector_name = line[2:]
        elif m := _VECTOR.match(line):
            pending[m.group(1)] = (json.loads(m.group(2)), json.loads(m.group(3)))
            if len(pending) == 2:
                vectors.append(Vector(vector_name, pending["capdata"], pending["smallcaps"]))
                pending = {}
    return Transcript(frames, vectors, checks)
