"""The commands other installed packages add to ``moltbot`` (the ``moltbot.commands`` entry
points: the host-side builder's ``image``, ``flash`` and ``balena``).

Two ways a plugin can fail to load, told apart here:

- its package is not installed (a device has the runtime without the builder, and the device
  wheel keeps the entry points): the command is simply absent;
- its package is installed but cannot be imported on this Python (the builder needs 3.11+,
  the runtime runs on 3.10) or is broken: the command stays listed, and running it says what
  failed and what to do, rather than click's "No such command".
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Container
from importlib.metadata import EntryPoint, entry_points

import click

from edge.errors import DependencyMissingError

logger = logging.getLogger(__name__)
GROUP = "moltbot.commands"
# The builder (package images) uses 3.11's standard library (tomllib, datetime.UTC); the runtime
# (package edge) supports the older Python that requires-python in pyproject.toml names.
BUILDER_PYTHON = (3, 11)
RUNNING_PYTHON = (sys.version_info.major, sys.version_info.minor, sys.version_info.micro)


def installed(skip: Container[str] = ()) -> dict[str, EntryPoint]:
    """The plugin commands by name, except those in ``skip`` (the runtime's own)."""
    return {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in skip}


def load(plugin: EntryPoint) -> click.Command | None:
    """The plugin's command; a stand-in that explains the failure when it is installed but
    cannot be imported; ``None`` when its package is not installed here."""
    try:
        command = plugin.load()
    except Exception as exc:  # noqa: BLE001 - any import failure becomes an explained command
        if _not_installed(plugin, exc):
            logger.debug("command %s is not installed here: %s", plugin.name, exc)
            return None
        return unloadable_command(plugin, exc)
    if not isinstance(command, click.Command):
        logger.warning("%s (%s) is not a click command: ignored", plugin.name, plugin.value)
        return None
    return command


def _not_installed(plugin: EntryPoint, exc: Exception) -> bool:
    """Whether ``exc`` says the plugin's own module (or a package above it) is absent, as
    opposed to something that module imports."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return False
    return plugin.module == exc.name or plugin.module.startswith(f"{exc.name}.")


def _too_old(python: tuple[int, int, int]) -> bool:
    return python[:2] < BUILDER_PYTHON


def load_failure_hint(plugin: EntryPoint, python: tuple[int, int, int] | None = None) -> str:
    """What to do about a plugin that is installed but cannot be imported on ``python``."""
    major, minor, micro = python or RUNNING_PYTHON
    if _too_old((major, minor, micro)):
        wanted = ".".join(str(part) for part in BUILDER_PYTHON)
        return (
            f"the image builder needs Python {wanted}+ (this is {major}.{minor}.{micro}); "
            f"the device runtime runs on {major}.{minor}: run `moltbot {plugin.name}` from a "
            f"venv on Python {wanted} or newer"
        )
    return (
        f"reinstall the package that provides it ({plugin.value}) in this environment; "
        "rerun with --debug for the traceback"
    )


def unloadable_command(
    plugin: EntryPoint, exc: Exception, python: tuple[int, int, int] | None = None
) -> click.Command:
    """A command named like the plugin that takes any arguments and fails with what went wrong
    importing it (the original exception chained, so ``--debug`` shows its traceback)."""
    what = f"`moltbot {plugin.name}` cannot load ({plugin.value}): {type(exc).__name__}: {exc}"
    hint = load_failure_hint(plugin, python)
    running = python or RUNNING_PYTHON
    listed = (
        f"(needs Python {'.'.join(map(str, BUILDER_PYTHON))}+; this is "
        f"{'.'.join(map(str, running))})"
        if _too_old(running)
        else f"(cannot load: {type(exc).__name__}; run it for why)"
    )

    def fail(args: tuple[str, ...]) -> None:
        del args
        raise DependencyMissingError(what, hint=hint) from exc

    return click.Command(
        plugin.name,
        callback=fail,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
        short_help=listed,
        help=f"{what}\n\nhint: {hint}",
    )
