"""Moltbot Edge device runtime.

Importing ``edge`` is cheap: no inference backend, audio library or MQTT client is imported
until the part that needs it runs, and the version is read from the package metadata only when
someone asks for ``edge.__version__``.
"""

from __future__ import annotations

from functools import cache


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - ~30 ms

    try:
        return version("moltbot-edge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__"]  # provided by __getattr__
