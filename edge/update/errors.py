"""What can go wrong with an over-the-air update, as errors the CLI turns into exit codes.

Every one of them leaves the running system as it was: a download that fails keeps its
``.part`` file for the next try (unless the bytes are wrong), an install that fails leaves the
booted slot primary, and a slot that cannot be marked says so loudly instead of rebooting into
an unknown state. (These could join ``edge/errors.py`` once the update feature settles.)
"""

from __future__ import annotations

from edge.errors import InputError, MoltbotError


class UpdateSourceError(InputError):
    """The bundle named on the command line cannot be used: bad URL, missing file, bad hash."""


class UpdateError(MoltbotError):
    """An update could not be fetched, checked or installed; the running slot is unchanged."""


class DownloadError(UpdateError):
    """The server refused the bundle, or the link stayed down for every retry."""


class BundleVerificationError(UpdateError):
    """The bundle's bytes are not the ones announced: wrong size or sha256. Nothing was kept."""


class InsufficientSpaceError(UpdateError):
    """The data partition has too little free space for the bundle; nothing was written."""


class UpdateConflictError(UpdateError):
    """The update cannot start in the state the device is in (the API answers 409)."""


class UpdateBusyError(UpdateConflictError):
    """An update job is already running; one at a time."""


class NoSlotsError(UpdateConflictError):
    """This system has no A/B slots: RAUC has no system.conf."""


class RaucError(UpdateError):
    """``rauc`` failed or answered something we cannot read; ``output`` holds what it said."""

    def __init__(
        self,
        what: str,
        *,
        output: str = "",
        where: str | None = None,
        hint: str | None = None,
        quote_output: bool = True,
    ) -> None:
        said = last_lines(output) if quote_output else ""
        super().__init__(f"{what}: {said}" if said else what, where=where, hint=hint)
        self.output = output


class BootStateError(RaucError):
    """A slot could not be marked good or bad: the bootloader environment was not written."""


def last_lines(output: str, count: int = 4) -> str:
    """The last few non-empty lines of a tool's output, joined into one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return " | ".join(lines[-count:])
