"""The one error hierarchy of the runtime.

Every user-facing error says *what* was wrong, *where* (file, field, device, topic) and *what to
do*. The CLI turns them into a message and an exit code in one place (``edge.cli``):
``InputError`` and its children exit 2 (bad input or config), everything else exits 1.
"""

from __future__ import annotations


class MoltbotError(Exception):
    """Base of every error the runtime raises on purpose."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"where: {self.where}")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n  ".join(parts)


class InputError(MoltbotError):
    """The user gave us something we cannot use: a file, a flag, a value."""

    exit_code = 2


class ConfigError(InputError):
    """A config file or ``MOLTBOT_*`` variable holds a value the config model refuses."""


class BoardProfileError(InputError):
    """A board profile in ``hw/`` is missing or malformed, or no profile matches this board."""


class DependencyMissingError(MoltbotError):
    """An optional library or host tool that this feature needs is not installed."""


class MessageRejectedError(InputError):
    """A message offered to the outbox is malformed: bad kind, payload or size."""


class OutboxError(MoltbotError):
    """The outbox could not store or read a message (disk, database)."""


class OutboxFullError(OutboxError):
    """The disk is full: the newest message was refused, everything stored is kept."""


class UplinkError(MoltbotError):
    """The broker refused us (credentials, certificate) or cannot be reached."""


class ModelRejectedError(InputError):
    """A model version failed verification; the model that was serving keeps serving."""


class BackendUnavailableError(MoltbotError):
    """An inference backend cannot run here (library missing, no GPU); says why."""


class InvalidImageError(InputError):
    """A frame could not be decoded or does not fit the model's input."""


class ImageTooLargeError(InvalidImageError):
    """A frame's header declares more pixels than we decode (a decompression bomb)."""


class VoiceError(MoltbotError):
    """The voice service cannot hear or recognise: no microphone, no model, bad audio."""


class AudioInputError(InputError):
    """An audio file or stream is in a format we cannot use."""
