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

from images import jetson_target
from images.fleet import (
    DOCKERFILE_TEMPLATE,
    ENTRYPOINT_TEMPLATE,
    JETSON_DOCKERFILE_TEMPLATE,
    README_TEMPLATE,
    dockerfiles,
    service_routes,
    supported_boards,
)
from images.jetson_target import application_requires_python, python_runs_application
from images.paths import BALENA_TEMPLATES, REPO_ROOT
from images.templates import TemplateError, fill, render

DOCKERFILES = sorted(BALENA_TEMPLATES.glob("Dockerfile*"))
DEVICE_TYPES = [b.balena_device_type for b in supported_boards(None)]
JETSON_SCRIPTS = sorted((REPO_ROOT / "images").glob("jetson*.sh")) + sorted(
    (REPO_ROOT / "images" / "jetson").glob("*.sh")
)
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


def resolved_for(device_type: str, files: dict[str, str]) -> str:
    """The name of the Dockerfile balena's builder picks for ``device_type`` among ``files``:
    ``Dockerfile.<device type>``, then ``Dockerfile.<arch>``, then ``Dockerfile.template``."""
    for name in (f"Dockerfile.{device_type}", "Dockerfile.aarch64", "Dockerfile.template"):
        if name in files:
            return name
    raise AssertionError(f"no Dockerfile for {device_type} in {sorted(files)}")


def generated_for(device_type: str) -> str:
    """The Dockerfile balena's builder gets for ``device_type``: our placeholders filled by the
    generator, balena's own by the device type's."""
    files = dockerfiles(supported_boards(None))
    text = files[resolved_for(device_type, files)]
    return text.replace("%%BALENA_MACHINE_NAME%%", device_type).replace(
        "%%BALENA_ARCH%%", "aarch64"
    )


def base_images(text: str) -> list[str]:
    """Each stage's base image, with the ARG defaults it names filled in."""
    commands = dockerfile.parse_string(text)
    defaults = dict(
        c.value[0].split("=", 1) for c in commands if c.cmd == "ARG" and "=" in c.value[0]
    )
    return [
        ARG_REFERENCE.sub(lambda m: defaults[m.group(1)], c.value[0])
        for c in commands
        if c.cmd == "FROM"
    ]


def python_of(text: str) -> str:
    """The Python a generated Dockerfile's venv is made on: balena's ``-python:3.N-`` base, or
    the ``pythonN.M -m venv`` of a JetPack's system Python."""
    found = re.search(r"-python:(3\.\d+)-", text) or re.search(r"python(3\.\d+) -m venv", text)
    assert found, "no Python named in the Dockerfile"
    return found.group(1)


def test_every_template_in_the_folder_is_one_the_generator_renders() -> None:
    templates = {p for p in BALENA_TEMPLATES.iterdir() if p.name != "README.md"}
    assert templates == {
        DOCKERFILE_TEMPLATE,
        JETSON_DOCKERFILE_TEMPLATE,
        ENTRYPOINT_TEMPLATE,
        README_TEMPLATE,
    }
    assert BALENA_TEMPLATES == REPO_ROOT / "balena"


def test_the_orin_gets_its_own_dockerfile_and_the_pi_and_xavier_the_template() -> None:
    files = dockerfiles(supported_boards(None))
    assert set(files) == {"Dockerfile.template", "Dockerfile.jetson-agx-orin-devkit"}
    assert resolved_for("jetson-agx-orin-devkit", files) == "Dockerfile.jetson-agx-orin-devkit"
    assert resolved_for("raspberrypi4-64", files) == "Dockerfile.template"
    assert resolved_for("jetson-xavier", files) == "Dockerfile.template"


def test_xavier_builds_on_balenas_debian_python_base_for_its_device_type() -> None:
    text = generated_for("jetson-xavier")
    assert base_images(text) == [
        "balenalib/jetson-xavier-debian-python:3.11-bookworm-build",
        "balenalib/jetson-xavier-debian-python:3.11-bookworm-run",
    ]
    assert "nvidia" not in text.lower() and "python3.8" not in text


def test_xavier_runs_on_the_cpu_because_jetpack5s_python_cannot_run_the_application() -> None:
    routes = {r.device_type: r for r in service_routes(supported_boards(None))}
    xavier = routes["jetson-xavier"]
    assert xavier.jetpack is None
    assert xavier.manifest_entry()["inference_backend"] == "ort-cpu"
    assert xavier.cpu_because is not None
    assert "Python 3.8" in xavier.cpu_because
    assert application_requires_python() in xavier.cpu_because
    for device_type in ("jetson-agx-orin-devkit", "raspberrypi4-64"):
        assert routes[device_type].cpu_because is None
        assert "inference_backend" not in routes[device_type].manifest_entry()


def test_a_jetpack_whose_python_fits_requires_python_gets_its_own_dockerfile_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The route follows requires-python (the single source the bundle check uses too), not a
    list of device types."""
    monkeypatch.setattr(jetson_target, "application_requires_python", lambda: ">=3.8")
    files = dockerfiles(supported_boards(None))
    assert resolved_for("jetson-xavier", files) == "Dockerfile.jetson-xavier"
    assert "python3.8 -m venv --system-site-packages" in files["Dockerfile.jetson-xavier"]


@pytest.mark.parametrize("device_type", DEVICE_TYPES, ids=str)
def test_the_dockerfile_each_device_type_resolves_to_parses_and_builds_on_its_own_base(
    device_type: str,
) -> None:
    text = generated_for(device_type)
    commands = dockerfile.parse_string(text)
    assert [c.cmd for c in commands if c.cmd not in INSTRUCTIONS] == []
    build_base, run_base = base_images(text)
    assert build_base.startswith(f"balenalib/{device_type}-") and build_base.endswith("-build")
    assert run_base.startswith(f"balenalib/{device_type}-") and run_base.endswith("-run")
    assert python_runs_application(python_of(text), application_requires_python()), (
        f"{device_type}'s venv Python {python_of(text)} is outside requires-python"
    )


@pytest.mark.parametrize("name", sorted(dockerfiles(supported_boards(None))), ids=str)
def test_every_generated_dockerfile_parses_with_only_known_instructions(name: str) -> None:
    commands = dockerfile.parse_string(dockerfiles(supported_boards(None))[name])
    assert [c.cmd for c in commands if c.cmd not in INSTRUCTIONS] == []
    assert sum(c.cmd == "FROM" for c in commands) == 2


@pytest.mark.parametrize("template", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_template_parses_with_only_known_instructions(template: Path) -> None:
    commands = dockerfile.parse_file(str(template))
    assert [c.cmd for c in commands if c.cmd not in INSTRUCTIONS] == []
    assert sum(c.cmd == "FROM" for c in commands) >= 1


@pytest.mark.parametrize("device_type", DEVICE_TYPES, ids=str)
def test_generated_dockerfile_passes_the_lint_rules_for_each_device_type(
    device_type: str,
) -> None:
    text = generated_for(device_type)
    assert not re.search(r"@[A-Z_]+@", text), "an unfilled placeholder"
    assert dockerfile_findings(text) == [], device_type


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


@pytest.mark.parametrize("script", SCRIPTS + JETSON_SCRIPTS, ids=lambda p: p.name)
def test_shell_script_parses_and_stops_on_errors(script: Path) -> None:
    text = render(script, {})
    shebang = text.splitlines()[0]
    assert shebang in {"#!/bin/sh", "#!/bin/bash", "#!/usr/bin/env bash"}, shebang
    assert re.search(r"^set -eu(o pipefail)?$", text, re.MULTILINE), "set -eu near the top"
    shells = ("sh", "bash") if shebang == "#!/bin/sh" else ("bash",)
    for shell in shells:
        subprocess.run([shell, "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS + JETSON_SCRIPTS, ids=lambda p: p.name)
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
