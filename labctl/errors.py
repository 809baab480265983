"""The error tree and its one mapping to exit codes.

Every error labctl raises on purpose derives from :class:`LabctlError` and carries
the data a user needs (the file, key or host), not just a sentence. The CLI maps the
class to an exit code through :data:`EXIT_CODES`, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LabctlError(Exception):
    """Base class. ``exit_code`` follows the design contract (0/1/2/3)."""

    exit_code = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = {k: v for k, v in details.items() if v is not None}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "kind": type(self).__name__, **self.details}


class InputError(LabctlError):
    """Invalid input: bad flag, bad YAML, unknown host, schema error. Nothing was touched."""

    exit_code = 2

    def __init__(
        self, message: str, *, file: str | None = None, key: str | None = None, host: str | None = None
    ) -> None:
        where = ": ".join(str(p) for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message, file=file, key=key, host=host)


class EnvironmentProblem(LabctlError):
    """The controller lacks something (root, a binary, a free port)."""

    exit_code = 1


class HostError(LabctlError):
    """One or more hosts failed or were unreachable."""

    exit_code = 1

    def __init__(self, message: str, *, hosts: Mapping[str, str] | None = None) -> None:
        super().__init__(message, hosts=dict(hosts) if hosts else None)
        self.hosts = dict(hosts or {})


class RunFailed(LabctlError):
    """An experiment run could not complete."""

    exit_code = 1


class BookingRefused(LabctlError):
    """A booking was refused: conflict, not the owner, or not booked."""

    exit_code = 3


class BookingConflict(BookingRefused):
    def __init__(self, message: str, *, conflicting: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, conflicting=dict(conflicting) if conflicting else None)


class NotOwner(BookingRefused):
    pass


class NotBooked(BookingRefused):
    pass


EXIT_CODES: dict[type[LabctlError], int] = {
    cls: cls.exit_code
    for cls in (
        LabctlError,
        InputError,
        EnvironmentProblem,
        HostError,
        RunFailed,
        BookingRefused,
        BookingConflict,
        NotOwner,
        NotBooked,
    )
}


def exit_code_for(exc: BaseException) -> int:
    """Exit code for any exception: the class's code, 1 for unexpected errors."""
    if isinstance(exc, LabctlError):
        for cls in type(exc).__mro__:
            if cls in EXIT_CODES:
                return EXIT_CODES[cls]
    return 1
