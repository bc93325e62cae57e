"""Commands other packages add to ``moltbot`` through the ``moltbot.commands`` entry points.

The builder cannot be made to fail to import here (this Python runs it), so the plugins are
small real modules written to a temporary folder: one whose import fails the way the builder's
does on Python 3.10 (a name the standard library lacks), one whose package is absent (a device,
which has the runtime without the builder).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import click
import pytest

import edge.cli
from edge.cli import main, plugins

GROUP = plugins.GROUP


def _forget_fake_builder() -> None:
    """Each test writes its own ``fake_builder``: none imported by an earlier one (from a
    folder that may be gone) stays in ``sys.modules``."""
    for name in [n for n in sys.modules if n == "fake_builder" or n.startswith("fake_builder.")]:
        del sys.modules[name]


@pytest.fixture
def installed_plugins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[list[EntryPoint]]:
    """The entry points ``moltbot`` finds: whatever the test appends to the returned list."""
    _forget_fake_builder()
    package = tmp_path / "fake_builder"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # What images.cli does on Python 3.10: a 3.11-only name from the standard library.
    (package / "needs_new_python.py").write_text(
        "from datetime import NOT_IN_THIS_PYTHON\n"
        "import click\n\n@click.command()\ndef image() -> None:\n    pass\n"
    )
    (package / "works.py").write_text(
        "import click\n\n@click.command()\ndef hello() -> None:\n    click.echo('hello')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found: list[EntryPoint] = []
    monkeypatch.setattr(plugins, "entry_points", lambda group: found if group == GROUP else [])
    yield found
    _forget_fake_builder()


def _plugin(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=GROUP)


def test_a_builder_command_that_cannot_import_fails_with_what_and_the_python_hint(
    installed_plugins: list[EntryPoint],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    installed_plugins.append(_plugin("image", "fake_builder.needs_new_python:image"))
    monkeypatch.setattr(plugins, "RUNNING_PYTHON", (3, 10, 14))
    code = main(["image", "build", "--recipe", "images/recipes/rpi4b.yaml"])
    err = capsys.readouterr().err
    assert code == 1
    assert "No such command" not in err
    assert "`moltbot image` cannot load (fake_builder.needs_new_python:image)" in err
    assert "NOT_IN_THIS_PYTHON" in err
    assert (
        "the image builder needs Python 3.11+ (this is 3.10.14); the device runtime runs on 3.10"
        in err
    )


def test_an_unloadable_builder_command_stays_listed_in_help_with_the_python_it_needs(
    installed_plugins: list[EntryPoint],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    installed_plugins.append(_plugin("image", "fake_builder.needs_new_python:image"))
    monkeypatch.setattr(plugins, "RUNNING_PYTHON", (3, 10, 14))
    assert main(["--help"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    image = next(line for line in listed if line.split()[0] == "image")
    assert "(needs Python 3.11+; this is 3.10.14)" in image


def test_debug_shows_the_original_import_error(
    installed_plugins: list[EntryPoint], capsys: pytest.CaptureFixture[str]
) -> None:
    installed_plugins.append(_plugin("image", "fake_builder.needs_new_python:image"))
    assert main(["--debug", "image"]) == 1
    err = capsys.readouterr().err
    assert "ImportError: cannot import name 'NOT_IN_THIS_PYTHON'" in err
    assert "Traceback" in err


def test_a_plugin_whose_package_is_not_installed_is_absent_as_on_a_device(
    installed_plugins: list[EntryPoint], capsys: pytest.CaptureFixture[str]
) -> None:
    installed_plugins.append(_plugin("image", "not_installed_builder.cli:image"))
    assert main(["--help"]) == 0
    assert "image" not in [
        line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()
    ]
    assert main(["image"]) == 2  # click's usage error: no such command


def test_a_plugin_that_loads_runs_as_its_own_command(
    installed_plugins: list[EntryPoint], capsys: pytest.CaptureFixture[str]
) -> None:
    installed_plugins.append(_plugin("hello", "fake_builder.works:hello"))
    assert main(["hello"]) == 0
    assert capsys.readouterr().out == "hello\n"


def test_on_the_builders_python_the_hint_asks_for_a_reinstall_not_a_newer_python() -> None:
    plugin = _plugin("image", "images.cli:image")
    hint = plugins.load_failure_hint(plugin, (3, 12, 1))
    assert "reinstall" in hint and "3.11+" not in hint
    assert "needs Python 3.11+ (this is 3.10.12)" in plugins.load_failure_hint(plugin, (3, 10, 12))


def test_the_runtimes_own_command_names_are_never_replaced_by_a_plugin(
    installed_plugins: list[EntryPoint],
) -> None:
    installed_plugins.append(_plugin("run", "fake_builder.works:hello"))
    command = edge.cli.cli.get_command(click.Context(edge.cli.cli), "run")
    assert command is not None and command.name == "run"
