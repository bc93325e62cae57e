"""The built image as the boot tests use it: a configured, sparse copy per test, and the serial
console kept as an artifact under images/out/ whatever the outcome."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from images.configure import configure_image
from images.qemu import QemuBoot

REPO = Path(__file__).parents[2]
RPI4B_RECIPE = REPO / "images" / "recipes" / "rpi4b.yaml"
GROW_CARD_BYTES = 512 * 2**20  # a bigger card than the image: first boot grows the data fs


def configured_copy(
    built_image: Path, folder: Path, site: dict[str, object], name: str = "boot.img"
) -> Path:
    """A copy of ``built_image`` on a bigger card, with ``site`` as its site file. The copy
    stays sparse (the image is 5 GiB raw, about 1 GiB of data)."""
    image = folder / name
    subprocess.run(["cp", "--sparse=always", str(built_image), str(image)], check=True)
    with image.open("r+b") as stream:
        stream.truncate(image.stat().st_size + GROW_CARD_BYTES)
    site_file = folder / f"{name}.site.yaml"
    site_file.write_text(yaml.safe_dump(site))
    configure_image(image, site_file)
    return image


def keep_console(boot: QemuBoot, name: str) -> None:
    """The serial log as a test artifact under images/out/, kept whatever the outcome."""
    (REPO / "images" / "out").mkdir(parents=True, exist_ok=True)
    (REPO / "images" / "out" / name).write_text(boot.console())


@dataclass(frozen=True)
class GuestApi:
    """The appliance's local API in the guest, through the port QEMU forwards to loopback."""

    port: int
    token: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout_s: float = 30) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.url(path), headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())

    def post(self, path: str, body: bytes, content_type: str, timeout_s: float = 60) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.url(path),
            data=body,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return json.loads(response.read())

    def post_json(self, path: str, document: Any, timeout_s: float = 60) -> Any:
        return self.post(path, json.dumps(document).encode(), "application/json", timeout_s)

    def wait_healthy(self, timeout_s: float) -> dict[str, Any] | None:
        """``/healthz``'s answer once the appliance serves it; None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                answer: dict[str, Any] = self.get("/healthz", timeout_s=10)
                return answer
            except (OSError, ValueError):  # not up yet (refused, reset, half an answer)
                time.sleep(2)
        return None
