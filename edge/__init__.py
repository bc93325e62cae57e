"""Moltbot Edge device runtime.

Importing ``edge`` is cheap: no inference backend, audio library or MQTT client is imported
until the part that needs it runs.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("moltbot-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
