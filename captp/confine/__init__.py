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
from captp.confine._policy import Limits, Mode, Policy
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
