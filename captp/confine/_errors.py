"""The errors of local confinement, all rooted at :class:`captp.errors.CapTPError`."""

from __future__ import annotations

from captp.errors import CapTPError

__all__ = [
    "CompartmentClosed",
    "ConfinementError",
    "GuardError",
    "GuestError",
    "LayerUnavailable",
    "LimitExceeded",
    "PolicyError",
    "Revoked",
    "WorkerDied",
]


class ConfinementError(CapTPError):
    """Base class of the errors :mod:`captp.confine` raises."""


class PolicyError(ConfinementError, ValueError):
    """A policy (or policy file) is malformed: ``str()`` names the entry and the field."""


class LayerUnavailable(ConfinementError):
    """A ``strict`` compartment refused to start: a kernel layer it needs does not apply.

    ``layer`` names it (``"landlock"``, ``"seccomp"``, ``"netns"``, ...), ``reason`` says why.
    """

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        super().__init__(f"strict confinement needs {layer}: {reason}")


class GuestError(ConfinementError):
    """The guest code raised: ``name`` and ``message`` are its error's (no traceback)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        self.name = name
        self.guest_message = message
        super().__init__(f"guest raised {name}: {message}" if name else f"guest failed: {message}")


class LimitExceeded(ConfinementError):
    """The guest overran a limit (``limit`` names it: ``wall_s``, ``max_message``, ...).

    The worker was killed; the compartment is closed.
    """

    def __init__(self, limit: str, detail: str) -> None:
        self.limit = limit
        super().__init__(f"limit {limit} exceeded: {detail}")


class WorkerDied(ConfinementError):
    """The worker process ended (or its session was aborted) while it was needed."""


class CompartmentClosed(ConfinementError):
    """The compartment is closed: its worker is gone and every capability it held with it."""


class GuardError(ConfinementError, TypeError):
    """A call did not match the interface guard of its target; the method did not run."""


class Revoked(ConfinementError):
    """The capability was revoked by its caretaker or membrane."""
