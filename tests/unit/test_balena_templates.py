"""The fleet project's templates in ``balena/``: rendered by ``images.templates``, every
Dockerfile linted with hadolint's main rules (over Docker's own parser, the ``dockerfile``
package), every shell script parsed by its shell and, where installed, by shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest

from images.fleet import (
    DOCKERFILE_TEMPLATE,
    DOCKERFILE_VALUES,
    ENTRYPOINT_TEMPLATE,
    README_TEMPLATE,
    supported_boards,
)
from images.paths import BALENA_TEMPLATES, REPO_ROOT
from images.templates import TemplateError, fill, render

DOCKERFILES = sorted(BALENA_TEMPLATES.glob("Dockerfile*"))
SCRIPTS = sorted(BALENA_TEMPLATES.glob("*.sh"))
INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
ARG_REFERENCE = re.compile(r"\$\{?(\w+)\}?")
PIP_INSTALL = re.compile(r"\bpip3?\s+install\b")
APT_INSTALL = re.compile(r"\bapt\s+(?:-\S+\s+)*install\b")
APT_GET_INSTALL = re.compile(r"\bapt-get\s+(?:-\S+\s+)*install\b")
Finding = tuple[str, str]  # hadolint's rule code, what is wrong


@dataclass
class Stages:
    """What the rules remember while reading a Dockerfile from the top."""

    arg_defaults: dict[str, str] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)  # this stage's ENV
    run_forms: set[str] = field(default_factory=set)  # CMD / ENTRYPOINT seen in this stage


def dockerfile_findings(text: str) -> list[str]:
    """What hadolint would report for ``text`` under the rules this project holds to, each as
    ``DLnnnn line N: what``."""
    stages = Stages()
    findings: list[str] = []
    for command in dockerfile.parse_string(text):
        if command.cmd not in INSTRUCTIONS:
            found = [("parse", f"unknown instruction {command.cmd}")]
        else:
            found = _check(command, stages)
        findings += [f"{code} line {command.start_line}: {what}" for code, what in found]
    return findings


def _check(command: dockerfile.Command, stages: Stages) -> list[Finding]:
    value = command.value
    match command.cmd:
        case "ARG":
            name, _, default = value[0].partition("=")
            if default:
                stages.arg_defaults[name] = default
        case "FROM":
            stages.env, stages.run_forms = {}, set()
            return _from(value, stages)
        case "ENV":
            stages.env.update(zip(value[::2], value[1::2], strict=True))
        case "RUN":
            return _run(" ".join(value), stages.env)
        case "CMD" | "ENTRYPOINT":
            return _run_form(command, stages)
        case "WORKDIR" if not value[0].startswith(("/", "$")):
            return [("DL3000", f"WORKDIR {value[0]} is not absolute")]
        case "ADD":
            local = [s for s in value[:-1] if not s.startswith(("http://", "https://"))]
            return [("DL3020", f"ADD {' '.join(local)}: use COPY for files")] if local else []
        case "COPY":
            return _copy_from(command.flags, stages)
        case "EXPOSE":
            return [("DL3011", f"EXPOSE {p}: not a port number") for p in value if not _port(p)]
    return []


def _from(value: tuple[str, ...], stages: Stages) -> list[Finding]:
    if len(value) >= 3 and value[1].upper() == "AS":
        stages.names.add(value[2])
    unset = [name for name in ARG_REFERENCE.findall(value[0]) if name not in stages.arg_defaults]
    if unset:
        return [("DL3006", f"FROM {value[0]}: ARG {', '.join(unset)} has no default")]
    image = ARG_REFERENCE.sub(lambda match: stages.arg_defaults[match.group(1)], value[0])
    if image in stages.names or image == "scratch" or "@sha256:" in image:
        return []
    tag = image.rpartition("/")[2].partition(":")[2]
    if not tag:
        return [("DL3006", f"FROM {image}: name a tag")]
    if tag == "latest":
        return [("DL3007", f"FROM {image}: pin a version, not latest")]
    return []


def _run(shell: str, stage_env: dict[str, str]) -> list[Finding]:
    findings = []
    if re.search(r"\bsudo\b", shell):
        findings.append(("DL3004", "no sudo (the build runs as root; use USER)"))
    if re.search(r"(?:^|&&|;|\|\|)\s*cd\s", shell):
        findings.append(("DL3003", "use WORKDIR, not cd"))
    if APT_INSTALL.search(shell):
        findings.append(("DL3027", "use apt-get, not apt"))
    if APT_GET_INSTALL.search(shell):
        if "--no-install-recommends" not in shell:
            findings.append(("DL3015", "apt-get install without --no-install-recommends"))
        if not re.search(r"\s(?:-\w*y\w*|--yes|--assume-yes)\b", shell):
            findings.append(("DL3014", "apt-get install without -y"))
        if not re.search(r"\brm\s+-\w+\s+/var/lib/apt/lists", shell):
            findings.append(("DL3009", "apt-get install leaves /var/lib/apt/lists behind"))
    pip_cache_off = stage_env.get("PIP_NO_CACHE_DIR", "").lower() in {"1", "true", "yes", "on"}
    if PIP_INSTALL.search(shell) and "--no-cache-dir" not in shell and not pip_cache_off:
        findings.append(("DL3042", "pip install without --no-cache-dir or PIP_NO_CACHE_DIR"))
    return findings


def _run_form(command: dockerfile.Command, stages: Stages) -> list[Finding]:
    findings = []
    if not command.json:
        findings.append(("DL3025", f"{command.cmd} in JSON form, not shell form"))
    if command.cmd in stages.run_forms:
        findings.append(("DL4003", f"more than one {command.cmd} in a stage"))
    stages.run_forms.add(command.cmd)
    return findings


def _copy_from(flags: tuple[str, ...], stages: Stages) -> list[Finding]:
    sources = [f.removeprefix("--from=") for f in flags if f.startswith("--from=")]
    return [
        ("DL3022", f"COPY --from={source}: no such stage")
        for source in sources
        if source not in stages.names and not source.isdigit() and ":" not in source
    ]


def _port(port: str) -> bool:
    number = port.partition("/")[0]
    return number.isdigit() and 0 < int(number) <= 65535


def expanded(template: Path, device_type: str) -> str:
    """A Dockerfile as balena's builder gets it for ``device_type``: our placeholders filled by
    the generator's values, balena's own by the device type's."""
    text = render(template, DOCKERFILE_VALUES)
    return text.replace("%%BALENA_MACHINE_NAME%%", device_type).replace(
        "%%BALENA_ARCH%%", "aarch64"
    )


def test_every_template_in_the_folder_is_one_the_generator_renders() -> None:
    templates = {p for p in BALENA_TEMPLATES.iterdir() if p.name != "README.md"}
    assert templates == {DOCKERFILE_TEMPLATE, ENTRYPOINT_TEMPLATE, README_TEMPLATE}
    assert BALENA_TEMPLATES == REPO_ROOT / "balena"


@pytest.mark.parametrize("template", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_template_parses_with_only_known_instructions(template: Path) -> None:
    commands = dockerfile.parse_file(str(template))
    assert [c.cmd for c in commands if c.cmd not in INSTRUCTIONS] == []
    assert sum(c.cmd == "FROM" for c in commands) >= 1


@pytest.mark.parametrize("template", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_template_passes_the_lint_rules_for_every_device_type(template: Path) -> None:
    device_types = [b.balena_device_type for b in supported_boards(None)]
    assert device_types, "no board profile names a balena device type"
    for device_type in device_types:
        assert dockerfile_findings(expanded(template, device_type)) == [], device_type


@pytest.mark.parametrize(
    ("snippet", "rule"),
    [
        ("FROM debian\n", "DL3006"),
        ("ARG BASE\nFROM ${BASE}\n", "DL3006"),
        ("FROM debian:latest\n", "DL3007"),
        ("FROM debian:12\nRUN apt-get install -y x && rm -rf /var/lib/apt/lists/*\n", "DL3015"),
        ("FROM debian:12\nRUN apt-get install -y --no-install-recommends x\n", "DL3009"),
        (
            "FROM debian:12\nRUN apt-get install --no-install-recommends x"
            " && rm -rf /var/lib/apt/lists/*\n",
            "DL3014",
        ),
        ("FROM debian:12\nRUN apt install -y x\n", "DL3027"),
        ("FROM debian:12\nRUN sudo make install\n", "DL3004"),
        ("FROM debian:12\nRUN cd /src && make\n", "DL3003"),
        ("FROM debian:12\nWORKDIR app\n", "DL3000"),
        ("FROM debian:12\nADD src/ /app/\n", "DL3020"),
        ("FROM debian:12\nRUN /venv/bin/pip install x\n", "DL3042"),
        (
            "FROM debian:12 AS one\nENV PIP_NO_CACHE_DIR=1\nFROM debian:12\nRUN pip install x\n",
            "DL3042",
        ),
        ("FROM debian:12\nCOPY --from=builder /a /b\n", "DL3022"),
        ("FROM debian:12\nCMD moltbot run\n", "DL3025"),
        ('FROM debian:12\nCMD ["a"]\nCMD ["b"]\n', "DL4003"),
        ("FROM debian:12\nEXPOSE @API_PORT@\n", "DL3011"),
        ("FROM debian:12\nBOGUS x\n", "unknown instruction"),
    ],
)
def test_lint_rules_catch_each_mistake(snippet: str, rule: str) -> None:
    findings = dockerfile_findings(snippet)
    assert any(rule in finding for finding in findings), findings


def test_lint_rules_accept_what_they_should() -> None:
    clean = (
        "ARG BASE=debian:12-slim\n"
        "FROM ${BASE} AS build\n"
        "ENV PIP_NO_CACHE_DIR=1\n"
        "RUN pip install x\n"
        "FROM debian@sha256:" + "0" * 64 + "\n"
        "WORKDIR /app\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends x"
        " && rm -rf /var/lib/apt/lists/*\n"
        "ADD https://example.org/x.tar /tmp/\n"
        "COPY --from=build /opt /opt\n"
        'ENTRYPOINT ["/opt/run"]\n'
        'CMD ["serve"]\n'
    )
    assert dockerfile_findings(clean) == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_script_parses_and_stops_on_errors(script: Path) -> None:
    text = render(script, {})
    shebang = text.splitlines()[0]
    assert shebang in {"#!/bin/sh", "#!/bin/bash", "#!/usr/bin/env bash"}, shebang
    assert re.search(r"^set -eu(o pipefail)?$", text, re.MULTILINE), "set -eu near the top"
    for shell in ("sh", "bash"):
        subprocess.run([shell, "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_script_passes_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package: shellcheck)")
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_placeholders_are_replaced_and_everything_else_is_left_alone() -> None:
    text = 'FROM ${BASE}\nRUN echo "$@" {x} %%BALENA_ARCH%% v@VERSION@\n'
    assert fill(text, {"VERSION": "1.2@X@"}, where="t") == (
        'FROM ${BASE}\nRUN echo "$@" {x} %%BALENA_ARCH%% v1.2@X@\n'
    )


def test_a_placeholder_without_a_value_names_it_and_the_template() -> None:
    with pytest.raises(TemplateError, match="@PORT@") as caught:
        fill("EXPOSE @PORT@\n", {}, where="balena/Dockerfile.template")
    assert caught.value.where == "balena/Dockerfile.template"


def test_a_value_the_template_does_not_use_is_refused() -> None:
    with pytest.raises(TemplateError, match="@VERSION@"):
        fill("no placeholders\n", {"VERSION": "1"}, where="t")


def test_a_missing_template_says_where_the_builder_looks(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"nope\.sh is missing") as caught:
        render(tmp_path / "nope.sh", {})
    assert caught.value.where == str(tmp_path / "nope.sh")
