"""The balena fleet project, checked with real parsers: the Compose specification's JSON schema,
balena.yml's documented fields, and every Dockerfile.template expanded per device type and parsed
by the dockerfile package (Docker's own Go parser)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Literal

import dockerfile
import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge import __version__
from edge.errors import InputError
from images.fleet import environment_variables, generate

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[2]
RECIPE = REPO / "images" / "recipes" / "rpi4b.yaml"
DEVICE_TYPES = ("raspberrypi4-64", "jetson-agx-orin-devkit", "jetson-xavier")


@pytest.fixture(scope="session")
def compose_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Compose specification's schema, as docker-compose 1.29.2 ships it (from the registry)."""
    folder = tmp_path_factory.mktemp("compose-schema")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "docker-compose==1.29.2",
            "-d",
            str(folder),
        ],
        check=True,
    )
    wheel = next(folder.glob("docker_compose-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        schema: dict[str, Any] = json.loads(archive.read("compose/config/compose_spec.json"))
    return schema


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(RECIPE, tmp_path_factory.mktemp("fleet") / "project")


class BalenaData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaultDeviceType: str  # noqa: N815 - balena's field names
    supportedDeviceTypes: list[str] = Field(min_length=1)  # noqa: N815
    applicationEnvironmentVariables: list[dict[str, str]] = []  # noqa: N815
    applicationConfigVariables: list[dict[str, str]] = []  # noqa: N815

    @field_validator("applicationEnvironmentVariables", "applicationConfigVariables")
    @classmethod
    def one_name_each(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        assert all(len(item) == 1 for item in value), "each entry names one variable"
        return value


class BalenaYml(BaseModel):
    """The fields balena documents for balena.yml (deploy-with-balena / balenaHub)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    type: Literal["sw.application", "sw.block"]
    description: str | None = None
    version: str = Field(pattern=r"^\d+\.\d+\.\d+([-+].+)?$")
    joinable: bool | None = None
    post_provisioning: str | None = Field(None, alias="post-provisioning")
    assets: dict[str, Any] | None = None
    data: BalenaData


def expanded(template: str, device_type: str) -> str:
    text = template.replace("%%BALENA_MACHINE_NAME%%", device_type)
    return text.replace("%%BALENA_ARCH%%", "aarch64")


def test_compose_file_is_valid_against_the_compose_specification(
    project: Path, compose_schema: dict[str, Any]
) -> None:
    document = yaml.safe_load((project / "docker-compose.yml").read_text())
    # The file names draft/2019-09 without the trailing '#': pick the validator explicitly.
    jsonschema.Draft201909Validator(compose_schema).validate(document)
    service = document["services"]["moltbot"]
    assert service["restart"] == "always"
    assert "moltbot-data:/data" in service["volumes"]
    assert (project / service["build"]).is_dir()


def test_compose_schema_check_rejects_a_misspelt_service_key(
    project: Path, compose_schema: dict[str, Any]
) -> None:
    document = yaml.safe_load((project / "docker-compose.yml").read_text())
    document["services"]["moltbot"]["restrat"] = "always"
    with pytest.raises(jsonschema.ValidationError, match="restrat"):
        jsonschema.Draft201909Validator(compose_schema).validate(document)


def test_balena_yml_has_only_documented_fields_and_every_device_type(project: Path) -> None:
    parsed = BalenaYml.model_validate(yaml.safe_load((project / "balena.yml").read_text()))
    assert set(parsed.data.supportedDeviceTypes) == set(DEVICE_TYPES)
    assert parsed.data.defaultDeviceType == "raspberrypi4-64"
    assert parsed.version == __version__
    for item in parsed.data.applicationEnvironmentVariables:
        assert next(iter(item)) in environment_variables()


def balena_dockerfile(service: Path, device_type: str, arch: str = "aarch64") -> Path:
    """The file balena's builder uses for ``device_type``, in its documented order:
    Dockerfile.<device type>, Dockerfile.<arch>, Dockerfile.template, Dockerfile."""
    for name in (f"Dockerfile.{device_type}", f"Dockerfile.{arch}", "Dockerfile.template"):
        if (service / name).is_file():
            return service / name
    return service / "Dockerfile"


@pytest.mark.parametrize("device_type", DEVICE_TYPES)
def test_project_resolves_to_a_two_stage_dockerfile_for_each_device_type(
    project: Path, device_type: str
) -> None:
    service = project / "moltbot"
    chosen = balena_dockerfile(service, device_type)
    template = chosen.read_text()
    assert "%%BALENA_ARCH%%" in template
    commands = dockerfile.parse_string(expanded(template, device_type))
    assert "%%" not in "".join(c.original for c in commands)
    assert not re.search(r"@[A-Z_]+@", template), "an unfilled placeholder"
    stages = [c for c in commands if c.cmd == "FROM"]
    assert len(stages) == 2
    defaults = dict(
        c.value[0].split("=", 1) for c in commands[: commands.index(stages[0])] if c.cmd == "ARG"
    )
    build_base, run_base = (
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], stage.value[0]) for stage in stages
    )
    assert build_base.startswith(f"balenalib/{device_type}-") and build_base.endswith("-build")
    assert run_base.endswith("-run"), "the final stage must not carry build tools"
    final = commands[commands.index(stages[1]) :]
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in final)
    for copy in (c for c in commands if c.cmd == "COPY" and not c.flags):
        for source in copy.value[:-1]:
            assert (service / source).exists(), f"COPY {source}: not in the project"


JETSONS = {
    # device type: (Ubuntu base, L4T apt release + SoC, system Python, TensorRT bindings' package)
    # Only Jetsons whose JetPack's Python runs the application: the Xavier (JetPack 5, Python
    # 3.8) builds from Dockerfile.template instead and infers on the CPU.
    "jetson-agx-orin-devkit": ("ubuntu:jammy", "r36.4", "t234", "3.10", "libnvinfer10"),
}


def test_pi_keeps_the_debian_python_base(project: Path) -> None:
    chosen = balena_dockerfile(project / "moltbot", "raspberrypi4-64")
    assert chosen.name == "Dockerfile.template"
    assert "-debian-python:3.11-bookworm-run" in expanded(chosen.read_text(), "raspberrypi4-64")


@pytest.mark.parametrize("device_type", sorted(JETSONS))
def test_jetson_service_is_built_on_ubuntu_with_nvidias_l4t_source_and_tensorrt(
    project: Path, device_type: str
) -> None:
    base, release, soc, python, libnvinfer = JETSONS[device_type]
    chosen = balena_dockerfile(project / "moltbot", device_type)
    assert chosen.name == f"Dockerfile.{device_type}"
    commands = dockerfile.parse_string(expanded(chosen.read_text(), device_type))
    args = " ".join(c.original for c in commands if c.cmd == "ARG")
    assert f"balenalib/{device_type}-{base}-run" in args
    runs = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN")
    for component in ("common", soc):
        assert f"deb https://repo.download.nvidia.com/jetson/{component} {release} main" in runs
    for package in (libnvinfer, "python3-libnvinfer", "libcudnn", "cuda-cudart-"):
        assert package in runs, package
    assert f"python{python} -m venv --system-site-packages /opt/moltbot/venv" in runs
    adds = [c for c in commands if c.cmd == "ADD"]
    assert adds and adds[0].value[0].startswith("https://repo.download.nvidia.com/jetson/")


def test_xavier_resolves_to_the_template_on_balenas_debian_python_base(project: Path) -> None:
    service = project / "moltbot"
    assert not (service / "Dockerfile.jetson-xavier").exists()
    chosen = balena_dockerfile(service, "jetson-xavier")
    assert chosen.name == "Dockerfile.template"
    text = expanded(chosen.read_text(), "jetson-xavier")
    assert "ARG BUILD_BASE=balenalib/jetson-xavier-debian-python:3.11-bookworm-build" in text
    assert "ARG RUN_BASE=balenalib/jetson-xavier-debian-python:3.11-bookworm-run" in text


def test_fleet_manifest_records_the_jetpack_and_tensorrt_each_device_type_targets(
    project: Path,
) -> None:
    manifest = json.loads((project / "moltbot" / "manifest.json").read_text())
    assert manifest["jetpack"]["jetson-agx-orin-devkit"]["jetpack"] == "6.2"
    assert manifest["jetpack"]["jetson-agx-orin-devkit"]["tensorrt"] == "10.3"
    assert set(manifest["jetpack"]) == {"jetson-agx-orin-devkit"}, "the Xavier targets no JetPack"
    assert manifest["device_types"]["jetson-agx-orin-devkit"] == {
        "dockerfile": "Dockerfile.jetson-agx-orin-devkit"
    }
    assert manifest["device_types"]["raspberrypi4-64"] == {"dockerfile": "Dockerfile.template"}


def test_fleet_manifest_and_readme_say_the_xavier_runs_on_the_cpu_and_why(project: Path) -> None:
    manifest = json.loads((project / "moltbot" / "manifest.json").read_text())
    xavier = manifest["device_types"]["jetson-xavier"]
    assert xavier["dockerfile"] == "Dockerfile.template"
    assert xavier["inference_backend"] == "ort-cpu"
    assert "JetPack 5.1.4" in xavier["why"] and "Python 3.8" in xavier["why"]
    readme = (project / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith("- `jetson-xavier`"))
    assert "ort-cpu" in line and "Python 3.8" in line
    assert "Dockerfile.jetson-agx-orin-devkit" in readme


def test_generate_warns_that_the_xavier_runs_inference_on_the_cpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="images.fleet"):
        xavier = generate(RECIPE, tmp_path / "xavier", ("jetson-xavier",))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("jetson-xavier:") and "ort-cpu" in w for w in warnings), warnings
    assert sorted(p.name for p in (xavier / "moltbot").glob("Dockerfile*")) == [
        "Dockerfile.template"
    ]
    service = yaml.safe_load((xavier / "docker-compose.yml").read_text())["services"]["moltbot"]
    assert "privileged" not in service, "no GPU nodes to reach on the CPU route"
    assert "/dev/snd:/dev/snd" in service["devices"]


def test_every_setting_maps_onto_a_moltbot_variable_documented_in_the_project(
    project: Path,
) -> None:
    names = environment_variables()
    assert "MOLTBOT_UPLINK__HOST" in names and "MOLTBOT_UPLINK__TLS__CA_FILE" in names
    readme = (project / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in names)
    assert "balena preload" in readme and "balena os configure" in readme


def test_pi_only_fleet_gets_sound_devices_not_a_privileged_container(tmp_path: Path) -> None:
    pi = generate(RECIPE, tmp_path / "pi", ("raspberrypi4-64",))
    service = yaml.safe_load((pi / "docker-compose.yml").read_text())["services"]["moltbot"]
    assert "privileged" not in service
    assert "/dev/snd:/dev/snd" in service["devices"]


def test_unknown_device_type_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="raspberrypi4-64"):
        generate(RECIPE, tmp_path / "x", ("raspberrypi3",))


def test_project_ships_the_recipes_models_with_their_sha256(project: Path) -> None:
    manifest = json.loads((project / "moltbot" / "manifest.json").read_text())
    assert manifest["version"] == __version__
    shipped = json.loads((REPO / "models/defect/1/manifest.json").read_text())
    for entry in manifest["models"]:
        precision = entry["name"].rsplit("-", 1)[1]
        file = project / "moltbot/models/defect/1" / shipped["variants"][precision]["file"]
        digest = subprocess.run(
            ["sha256sum", str(file)], capture_output=True, text=True, check=True
        )
        assert re.match(entry["sha256"], digest.stdout)


def test_generate_refuses_to_replace_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a project this command made"):
        generate(RECIPE, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    project = generate(RECIPE, tmp_path / "fleet")
    assert generate(RECIPE, project) == project  # its own project is regenerated in place
