"""Local confinement: compartments that really confine, and the wrappers that attenuate.

Python cannot confine code inside one interpreter (``gc``, frames and
``ctypes`` reach everything), so the boundary is a process:

* :class:`Compartment`: one worker process per compartment, locked down by
  the kernel (namespaces, Landlock, seccomp, rlimits, an empty environment,
  no inherited file) and reached only through a CapTP session whose host
  side exports nothing but the endowments; :class:`Policy` declares what it
  gets (``Policy.load`` reads TOML or JSON, one entry per compartment);
* :func:`caretaker`, :func:`membrane`, :func:`attenuate`: far functions on
  the host side that revoke, log and narrow capabilities;
* interface guards (:data:`M`, :func:`guarded`, :func:`guard`): declared
  methods and argument shapes, checked before a method runs;
* :func:`harden`: deep-frozen copies of data, for integrity; *not* a boundary.

What a compartment stops and what it does not: ``captp/confine/README.md``.
"""

# The names are imported on first use (PEP 562): a confined worker imports
# this package for its channel and kernel layers only, and starts faster
# without the host's side (subprocess, tempfile, policies, guards).
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from captp.confine._compartment import Compartment, Report
    from captp.confine._errors import (
        CompartmentClosed,
        ConfinementError,
        GuardError,
        GuestError,
        LayerUnavailable,
        LimitExceeded,
        PolicyError,
        Revoked,
        WorkerDied,
    )
    from captp.confine._guards import Interface, M, MethodGuard, Pattern, guard, guarded
    from captp.confine._harden import FrozenDict, harden, is_hardened
    from captp.confine._kernel import LAYERS, Layer, landlock_abi, probe
    from captp.confine._policy import Limits, Loop, Mode, Policy
    from captp.confine._wrappers import Invocation, attenuate, caretaker, membrane

__all__ = [
    "LAYERS",
    "Compartment",
    "CompartmentClosed",
    "ConfinementError",
    "FrozenDict",
    "GuardError",
    "GuestError",
    "Interface",
    "Invocation",
    "Layer",
    "LayerUnavailable",
    "LimitExceeded",
    "Limits",
    "Loop",
    "M",
    "MethodGuard",
    "Mode",
    "Pattern",
    "Policy",
    "PolicyError",
    "Report",
    "Revoked",
    "WorkerDied",
    "attenuate",
    "caretaker",
    "guard",
    "guarded",
    "harden",
    "is_hardened",
    "landlock_abi",
    "membrane",
    "probe",
]

_WHERE: dict[str, str] = {
    "Compartment": "captp.confine._compartment",
    "CompartmentClosed": "captp.confine._errors",
    "ConfinementError": "captp.confine._errors",
    "FrozenDict": "captp.confine._harden",
    "GuardError": "captp.confine._errors",
    "GuestError": "captp.confine._errors",
    "Interface": "captp.confine._guards",
    "Invocation": "captp.confine._wrappers",
    "LAYERS": "captp.confine._kernel",
    "Layer": "captp.confine._kernel",
    "LayerUnavailable": "captp.confine._errors",
    "LimitExceeded": "captp.confine._errors",
    "Limits": "captp.confine._policy",
    "Loop": "captp.confine._policy",
    "M": "captp.confine._guards",
    "MethodGuard": "captp.confine._guards",
    "Mode": "captp.confine._policy",
    "Pattern": "captp.confine._guards",
    "Policy": "captp.confine._policy",
    "PolicyError": "captp.confine._errors",
    "Report": "captp.confine._compartment",
    "Revoked": "captp.confine._errors",
    "WorkerDied": "captp.confine._errors",
    "attenuate": "captp.confine._wrappers",
    "caretaker": "captp.confine._wrappers",
    "guard": "captp.confine._guards",
    "guarded": "captp.confine._guards",
    "harden": "captp.confine._harden",
    "is_hardened": "captp.confine._harden",
    "landlock_abi": "captp.confine._kernel",
    "membrane": "captp.confine._wrappers",
    "probe": "captp.confine._kernel",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'captp.confine' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
