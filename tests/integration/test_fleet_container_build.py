"""The fleet project's Pi service image, built for arm64 with podman from a base made here.

No registry can be reached, so balena's base images cannot be pulled: the base is a Debian
bookworm arm64 tree made with mmdebstrap and imported into podman, passed to the template's
BUILD_BASE/RUN_BASE arguments. What runs is our template, our wheel and our entrypoint: the
image builds under qemu-user-static, carries the models and the application, and answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge import __version__
from images.fleet import generate

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]
REPO = Path(__file__).parents[2]
BASE = "localhost/moltbot-test-base:bookworm-arm64"
TAG = "localhost/moltbot-fleet-test:arm64"


def podman(*args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=False, timeout=timeout_s
    )


@pytest.fixture(scope="session")
def local_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: `make test` installs Debian's podman package")
    if os.geteuid() != 0:
        pytest.skip("building arm64 images needs root here (CI runs as root)")
    from images.rootfs import ensure_binfmt

    ensure_binfmt()
    if podman("image", "exists", BASE).returncode == 0:
        return BASE
    tarball = tmp_path_factory.mktemp("base") / "base.tar"
    subprocess.run(
        [
            "mmdebstrap",
            "--arch=arm64",
            "--variant=apt",
            "--format=tar",
            "--include=python3,python3-venv,ca-certificates",
            # This workplace reaches PyPI through a proxy with its own CA: the stand-in base
            # trusts what the host trusts (balena's real bases reach PyPI directly).
            '--customize-hook=mkdir -p "$1/etc/ssl/certs/host"',
            "--customize-hook=copy-in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/host",
            "--customize-hook=printf '[global]\\ncert = /etc/ssl/certs/host/ca-certificates.crt\\n'"
            ' > "$1/etc/pip.conf"',
            "bookworm",
            str(tarball),
            "http://deb.debian.org/debian",
        ],
        check=True,
        capture_output=True,
    )
    imported = podman("import", "--arch", "arm64", str(tarball), BASE)
    assert imported.returncode == 0, imported.stderr
    return BASE


def test_pi_service_image_builds_for_arm64_and_runs_the_application(
    local_base: str, tmp_path: Path
) -> None:
    project = generate(REPO / "images/recipes/rpi4b.yaml", tmp_path / "fleet", ("raspberrypi4-64",))
    service = project / "moltbot"
    template = (service / "Dockerfile.template").read_text()
    dockerfile = service / "Dockerfile"
    dockerfile.write_text(
        template.replace("%%BALENA_MACHINE_NAME%%", "raspberrypi4-64").replace(
            "%%BALENA_ARCH%%", "aarch64"
        )
    )
    built = podman(
        "build",
        # chroot isolation: no OCI runtime, so no cgroup setup (this VM's hybrid cgroups stop
        # crun); the RUN steps still run the arm64 binaries under qemu-user-static.
        "--isolation",
        "chroot",
        "--platform",
        "linux/arm64",
        "--build-arg",
        f"BUILD_BASE={local_base}",
        "--build-arg",
        f"RUN_BASE={local_base}",
        "-t",
        TAG,
        "-f",
        str(dockerfile),
        str(service),
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # Run it the way the build ran its steps (chroot isolation): this VM's crun cannot set
    # rlimits or cgroups for `podman run`.
    container = subprocess.run(
        ["buildah", "from", "--platform", "linux/arm64", TAG],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        ran = subprocess.run(
            [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                container,
                "--",
                "/bin/sh",
                "-c",
                "uname -m; cat /opt/moltbot/arch; /opt/moltbot/venv/bin/moltbot --version; "
                "ls /opt/moltbot/seed/models/defect/1/manifest.json; "
                # onnxruntime is not imported: under qemu-user (not a real arm64 CPU) its
                # cpuinfo probe segfaults; the image boot test runs it under qemu-system.
                "/opt/moltbot/venv/bin/python -c "
                "'import numpy, fastapi, paho.mqtt.client, diskcache, vosk, edge.config; "
                'print("imports ok")\'; '
                "test ! -e /tmp/wheels && echo 'no build leftovers'",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        lines = ran.stdout.splitlines()
        assert lines[:2] == ["aarch64", "aarch64"]
        assert __version__ in lines[2]
        assert "imports ok" in ran.stdout and "no build leftovers" in ran.stdout
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        podman("rmi", "-f", TAG)
