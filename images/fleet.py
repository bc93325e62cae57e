"""``moltbot balena generate``: a balena fleet project from an image recipe.

The same recipe that builds the raw images names the models; the same wheel of this repo and
the same model folders go into the project, and its ``manifest.json`` records the application
version and model sha256s exactly as an image's manifest does (one source of truth).

One ``Dockerfile.template`` serves every device type: ``%%BALENA_MACHINE_NAME%%`` picks
balena's base image for the device and ``%%BALENA_ARCH%%`` is recorded in the image. Two
stages: the build stage has pip and compilers, the final stage only the venv.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from edge import __version__
from edge.board import BoardProfile, load_board_profiles
from edge.config.model import MoltbotConfig
from edge.errors import InputError
from images.app import REPO_ROOT, SOURCE_ONLY
from images.outputs import models as model_components
from images.recipe import Recipe, load_recipe, recipe_hash
from images.run import run

SERVICE = "moltbot"
DATA_IN_CONTAINER = "/data"
API_PORT = 8080
# Balena-wide settings that fleets usually set first; every other MOLTBOT_* works the same way.
FLEET_VARIABLES: tuple[tuple[str, str], ...] = (
    ("MOLTBOT_UPLINK__HOST", "mqtt.plant.example"),
    ("MOLTBOT_UPLINK__PORT", "8883"),
    ("MOLTBOT_UPLINK__TLS__ENABLED", "true"),
    ("MOLTBOT_DEVICE__SITE", "plant-1"),
    ("MOLTBOT_LOGGING__LEVEL", "INFO"),
)

DOCKERFILE_TEMPLATE = """\
# Moltbot Edge on balena: one template for every device type of the fleet.
# %%BALENA_MACHINE_NAME%% picks balena's base image for the device; %%BALENA_ARCH%% is recorded.
FROM balenalib/%%BALENA_MACHINE_NAME%%-debian-python:3.11-bookworm-build AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/moltbot/venv \\
    && /opt/moltbot/venv/bin/pip install --find-links /tmp/wheels \\
        "moltbot-edge[voice]=={version}" \\
    && /opt/moltbot/venv/bin/python -m compileall -q /opt/moltbot/venv \\
    && echo "%%BALENA_ARCH%%" > /opt/moltbot/arch

FROM balenalib/%%BALENA_MACHINE_NAME%%-debian-python:3.11-bookworm-run
RUN install_packages libportaudio2 alsa-utils ca-certificates
COPY --from=build /opt/moltbot /opt/moltbot
COPY models/ /opt/moltbot/seed/models/
COPY manifest.json /opt/moltbot/manifest.json
COPY entrypoint.sh /usr/local/bin/moltbot-entrypoint
ENV MOLTBOT_DEVICE__DATA_DIR={data} \\
    MOLTBOT_LOGGING__FORMAT=json \\
    UDEV=on
EXPOSE {port}
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \\
    CMD ["/opt/moltbot/venv/bin/python", "-c", \\
         "import urllib.request as r; r.urlopen('http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/moltbot-entrypoint"]
CMD ["/opt/moltbot/venv/bin/moltbot", "run"]
"""

ENTRYPOINT = """\
#!/bin/sh
# First start on a device: install the models shipped in the container into the data volume's
# registry (verified, reference-checked); later releases add their versions beside the old ones.
set -eu
for folder in /opt/moltbot/seed/models/*/*/; do
    [ -d "$folder" ] || continue
    name=$(basename "$(dirname "$folder")")
    version=$(basename "$folder")
    if [ ! -d "$MOLTBOT_DEVICE__DATA_DIR/models/$name/$version" ]; then
        /opt/moltbot/venv/bin/moltbot model install "$folder" --activate
    fi
done
exec "$@"
"""


def supported_boards(device_types: tuple[str, ...] | None) -> list[BoardProfile]:
    boards = [p for p in load_board_profiles().values() if p.balena_device_type]
    if device_types:
        known = {b.balena_device_type or "": b for b in boards}
        unknown = [t for t in device_types if t not in known]
        if unknown:
            raise InputError(
                f"unknown balena device type(s): {', '.join(unknown)}",
                where="--device-type",
                hint=f"use any of {', '.join(sorted(known))}",
            )
        boards = [known[t] for t in device_types]
    return sorted(boards, key=lambda b: b.name)


def compose(boards: list[BoardProfile]) -> dict[str, Any]:
    gpu = any(b.accelerator.kind == "nvidia-gpu" for b in boards)
    service: dict[str, Any] = {
        "build": f"./{SERVICE}",
        "restart": "always",
        "volumes": [f"moltbot-data:{DATA_IN_CONTAINER}"],
        "ports": [f"{API_PORT}:{API_PORT}"],
        "stop_grace_period": "30s",
        "labels": {"io.balena.update.strategy": "download-then-kill"},
    }
    if gpu:
        # A Jetson's GPU nodes (/dev/nvhost-*, /dev/nvmap, …) differ between L4T releases;
        # balena's Jetson guidance is a privileged container, which also covers audio.
        service["privileged"] = True
    else:
        service["devices"] = ["/dev/snd:/dev/snd"]
        service["group_add"] = ["audio", "video"]
    return {
        "version": "2.4",
        "services": {SERVICE: service},
        "volumes": {"moltbot-data": {}},
    }


def balena_yml(recipe: Recipe, boards: list[BoardProfile]) -> dict[str, Any]:
    default = next((b for b in boards if b.name == recipe.board), boards[0])
    return {
        "name": f"moltbot-edge-{recipe.name}",
        "type": "sw.application",
        "description": "Moltbot Edge: defect inference, voice commands, store-and-forward MQTT.",
        "version": __version__,
        "joinable": False,
        "data": {
            "defaultDeviceType": default.balena_device_type,
            "supportedDeviceTypes": [b.balena_device_type for b in boards],
            "applicationEnvironmentVariables": [{name: value} for name, value in FLEET_VARIABLES],
        },
    }


def environment_variables() -> list[str]:
    """Every setting as its MOLTBOT_SECTION__KEY name (what fleet and device variables set)."""
    names: list[str] = []

    def walk(model: type[Any], prefix: str) -> None:
        for key, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation, f"{prefix}{key.upper()}__")
            else:
                names.append(f"{prefix}{key.upper()}")

    walk(MoltbotConfig, "MOLTBOT_")
    return names


def generate(recipe_path: Path, out: Path, device_types: tuple[str, ...] | None = None) -> Path:
    recipe, _board = load_recipe(recipe_path, base_dir=REPO_ROOT)
    boards = supported_boards(device_types)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    service_dir = out / SERVICE
    (service_dir / "wheels").mkdir(parents=True)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            service_dir / "wheels",
            REPO_ROOT,
            *SOURCE_ONLY,
        ],
        step="build the moltbot wheel for the fleet project",
    )
    for ref in recipe.models:
        manifest = json.loads((REPO_ROOT / ref.path / "manifest.json").read_text())
        shutil.copytree(
            REPO_ROOT / ref.path, service_dir / "models" / manifest["name"] / manifest["version"]
        )
    manifest = {
        "application": "moltbot-edge",
        "version": __version__,
        "recipe_sha256": recipe_hash(recipe),
        "models": [
            {"name": c.name, "version": c.version, "sha256": c.sha256}
            for c in model_components(service_dir / "models")
        ],
    }
    (service_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (service_dir / "Dockerfile.template").write_text(
        DOCKERFILE_TEMPLATE.format(version=__version__, data=DATA_IN_CONTAINER, port=API_PORT)
    )
    entry = service_dir / "entrypoint.sh"
    entry.write_text(ENTRYPOINT)
    entry.chmod(0o755)
    header = "# Generated by `moltbot balena generate`; regenerate rather than edit.\n"
    (out / "docker-compose.yml").write_text(
        header + yaml.safe_dump(compose(boards), sort_keys=False)
    )
    (out / "balena.yml").write_text(
        header + yaml.safe_dump(balena_yml(recipe, boards), sort_keys=False)
    )
    (out / "README.md").write_text(project_readme(recipe, boards))
    return out


def project_readme(recipe: Recipe, boards: list[BoardProfile]) -> str:
    types = ", ".join(f"`{b.balena_device_type}`" for b in boards)
    variables = "\n".join(f"- `{name}`" for name in environment_variables())
    return f"""# Moltbot Edge fleet project ({recipe.name})

Generated by `moltbot balena generate`. Device types: {types}.

    balena push <fleet>          # build on balena's builders and release to the fleet
    balena build --fleet <fleet> # or build locally (needs a Docker engine)

## A flashable balenaOS image with this fleet preloaded
    balena os download <device-type> -o balena.img
    balena os configure balena.img --fleet <fleet> --config-network ethernet
    balena preload balena.img --fleet <fleet> --commit current

## Configuration
Every appliance setting is an environment variable: set it as a fleet variable (all devices)
or a device variable (one device) in balenaCloud/openBalena. Secrets (broker password, API
token) belong in device or fleet variables, never in this repository.

{variables}
"""
