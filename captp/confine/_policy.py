"""Policies: what a compartment may have and use, declared (LavaMoat-style, one entry each).

A policy file (TOML or JSON) holds one entry per compartment under
``compartments``::

    [compartments.summarizer]
    endowments = { chat = "chat-mini" }   # guest global -> the host's pet name
    modules = ["json", "re"]              # preloaded: nothing is read from disk later
    fs_read = []                          # read-only paths (none by default)
    mode = "strict"                       # or "best_effort", "unconfined" (tests only)
    loop = "auto"                         # the worker's event loop: uvloop if installed

    [compartments.summarizer.limits]
    wall_s = 5.0

There is no network entry: the network is a capability the host endows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Literal

from captp.confine._errors import PolicyError

__all__ = ["Limits", "Loop", "Mode", "Policy"]

Mode = Literal["strict", "best_effort", "unconfined"]
MODES: Final = ("strict", "best_effort", "unconfined")
Start = Literal["zygote", "cold"]
Loop = Literal["auto", "asyncio", "uvloop"]
LOOPS: Final = ("auto", "asyncio", "uvloop")

# Modules a guest may import unless its policy says otherwise: pure computation.
DEFAULT_MODULES: Final = ("json", "math", "re")


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one worker.

    ``cpu_s``: CPU seconds for its whole life (the kernel kills it past them);
    ``memory_bytes``: its address space (an allocation past it raises
    ``MemoryError`` in the guest); ``wall_s``: seconds one ``evaluate`` may
    take before the host kills the worker; ``log_bytes``: the most its
    stdout and stderr may write; ``max_message``: the largest CapTP message
    the host accepts from it (a larger one aborts the session).
    """

    cpu_s: float = 30.0
    memory_bytes: int = 2 << 30
    wall_s: float = 30.0
    log_bytes: int = 1 << 20
    max_message: int = 16 << 20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) not in (int, float) or not value > 0:
                raise PolicyError(f"limits.{f.name} must be a positive number, not {value!r}")
        for name in ("memory_bytes", "log_bytes", "max_message"):
            if type(getattr(self, name)) is not int:
                raise PolicyError(f"limits.{name} must be an integer number of bytes")


@dataclass(frozen=True, slots=True)
class Policy:
    """What one compartment gets.

    ``endowments``: guest global name -> the host's name for a capability (a
    pet name), resolved against the capabilities given to the compartment;
    empty means every endowment given, under its own name.  ``modules``: what
    to preload for the guest.  After confinement nothing is read from disk:
    the guest can import these and what the worker's runtime had loaded
    already (``os``, ``socket``, ``asyncio``, ...; importing grants no power
    the kernel layers do not stop), nothing else.  ``fs_read``:
    read-only paths (none by default; under a root host the worker runs as
    uid 65534, which must be able to read them).  ``mode``: ``strict`` refuses to start
    unless every kernel layer applies; ``best_effort`` runs with what applies
    and reports the rest; ``unconfined`` applies nothing (tests only: it
    warns loudly).  ``start``: fork from the zygote (fast) or start ``cold``.
    ``loop``: the worker's event loop; ``auto`` runs uvloop when it is
    installed (a guest's calls then cost the worker less CPU), else asyncio's.
    """

    endowments: Mapping[str, str] = field(default_factory=dict)
    modules: tuple[str, ...] = DEFAULT_MODULES
    limits: Limits = field(default_factory=Limits)
    fs_read: tuple[str, ...] = ()
    mode: Mode = "strict"
    start: Start = "zygote"
    name: str = "compartment"
    loop: Loop = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PolicyError(f"{self.name}: mode must be one of {list(MODES)}, not {self.mode!r}")
        if self.start not in ("zygote", "cold"):
            raise PolicyError(f"{self.name}: start must be 'zygote' or 'cold', not {self.start!r}")
        if self.loop not in LOOPS:
            raise PolicyError(f"{self.name}: loop must be one of {list(LOOPS)}, not {self.loop!r}")
        for module in self.modules:
            if type(module) is not str or not all(p.isidentifier() for p in module.split(".")):
                raise PolicyError(f"{self.name}: not a module name: {module!r}")
        for path in self.fs_read:
            if type(path) is not str or not os.path.isabs(path):
                raise PolicyError(f"{self.name}: fs_read paths must be absolute: {path!r}")
        for guest, pet in self.endowments.items():
            if type(guest) is not str or not guest.isidentifier() or type(pet) is not str:
                raise PolicyError(f"{self.name}: endowment {guest!r} = {pet!r} is not name = name")

    def with_(self, **changes: Any) -> Policy:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def select(self, capabilities: Mapping[str, Any]) -> dict[str, Any]:
        """The guest's endowments: ``capabilities`` picked and renamed as this policy says."""
        if not self.endowments:
            return dict(capabilities)
        missing = sorted(pet for pet in self.endowments.values() if pet not in capabilities)
        if missing:
            raise PolicyError(f"{self.name}: no capability named {missing} was given")
        return {guest: capabilities[pet] for guest, pet in self.endowments.items()}

    def for_worker(self) -> dict[str, Any]:
        """What the worker needs to know, as JSON-able data."""
        limits = self.limits
        return {
            "modules": list(self.modules),
            "fs_read": list(self.fs_read),
            "mode": self.mode,
            "loop": self.loop,
            "limits": {
                "cpu_s": max(1, int(limits.cpu_s + 0.999)),
                "memory_bytes": limits.memory_bytes,
                "log_bytes": limits.log_bytes,
                "max_message": limits.max_message,
            },
        }

    @classmethod
    def from_dict(cls, name: str, entry: Mapping[str, Any]) -> Policy:
        """The policy of compartment ``name`` from its entry in a policy file."""
        if not isinstance(entry, Mapping):
            raise PolicyError(f"{name}: an entry must be a table, not {type(entry).__name__}")
        known = {"endowments", "modules", "limits", "fs_read", "mode", "start", "loop"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise PolicyError(f"{name}: unknown fields {unknown} (known: {sorted(known)})")
        raw_limits = entry.get("limits", {})
        if not isinstance(raw_limits, Mapping):
            raise PolicyError(f"{name}: limits must be a table")
        limit_names = {f.name for f in fields(Limits)}
        bad = sorted(set(raw_limits) - limit_names)
        if bad:
            raise PolicyError(f"{name}: unknown limits {bad} (known: {sorted(limit_names)})")
        try:
            limits = Limits(**raw_limits)
        except PolicyError as exc:
            raise PolicyError(f"{name}: {exc}") from None
        endowments = entry.get("endowments", {})
        if isinstance(endowments, list):  # a list of names: each under its own name
            endowments = {n: n for n in endowments}
        if not isinstance(endowments, Mapping):
            raise PolicyError(f"{name}: endowments must be a table or a list of names")
        for key in ("modules", "fs_read"):
            if not isinstance(entry.get(key, []), list):
                raise PolicyError(f"{name}: {key} must be a list")
        return cls(
            endowments=dict(endowments),
            modules=tuple(entry.get("modules", DEFAULT_MODULES)),
            limits=limits,
            fs_read=tuple(entry.get("fs_read", ())),
            mode=entry.get("mode", "strict"),
            start=entry.get("start", "zygote"),
            name=name,
            loop=entry.get("loop", "auto"),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> dict[str, Policy]:
        """Every compartment's policy in a TOML (``.toml``) or JSON file, by name."""
        import tomllib  # only policy files need it

        file = Path(path)
        text = file.read_bytes()
        try:
            if file.suffix == ".toml":
                data: Any = tomllib.loads(text.decode())
            else:
                data = json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = "TOML" if file.suffix == ".toml" else "JSON"
            raise PolicyError(f"{file}: not valid {kind}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("compartments"), dict):
            raise PolicyError(f"{file}: expected a 'compartments' table, one entry per compartment")
        extra = sorted(set(data) - {"compartments"})
        if extra:
            raise PolicyError(f"{file}: unknown top-level keys {extra}")
        return {name: cls.from_dict(name, entry) for name, entry in data["compartments"].items()}
