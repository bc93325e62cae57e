"""``moltbot system setup``: what the operating system takes from the site config, at every boot.

Run as root by ``moltbot-setup.service`` before the appliance starts. Idempotent: the first boot
grows the data partition to the card, generates the device id and API token and the SSH host
keys; every boot applies the host name, Wi-Fi and SSH keys from the site file on the boot
partition, so re-running ``moltbot image configure`` on the card (or editing the file) takes
effect at the next boot.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edge.config.model import MoltbotConfig
from edge.errors import MoltbotError
from edge.files import write_text_atomically
from edge.identity import api_token, device_id

logger = logging.getLogger(__name__)

SECTOR = 512
GROW_MIN_BYTES = 16 * 1024 * 1024
ADMIN_KEYS_MARK = "# managed by moltbot system setup (site file system.ssh_authorized_keys)"
APP_USER = "moltbot"


class SetupError(MoltbotError):
    """A first-boot step failed; the appliance still starts, the step is retried next boot."""


@dataclass(frozen=True)
class PartitionSpan:
    disk: str  # e.g. mmcblk0, vda
    number: int
    start_sectors: int
    size_sectors: int
    disk_sectors: int
    is_last: bool = True


def grown_size(span: PartitionSpan, *, reserve_sectors: int = 0) -> int | None:
    """Pure: the partition's new size in sectors when the disk has room after it, else None.

    Only the disk's last partition grows; MBR needs the end within the disk (minus ``reserve``).
    """
    if not span.is_last:
        return None
    available = span.disk_sectors - reserve_sectors - span.start_sectors
    aligned = available - available % 2048  # keep the end on a 1 MiB boundary
    if (aligned - span.size_sectors) * SECTOR < GROW_MIN_BYTES:
        return None
    return aligned


def partition_span(device: Path, sys_block: Path = Path("/sys/class/block")) -> PartitionSpan:
    """Where ``device`` (a partition's /dev node) lies on its disk, from sysfs."""
    name = device.resolve().name
    part = sys_block / name
    if not (part / "partition").exists():
        raise SetupError(
            f"{device} is not a partition", where=str(part), hint="check /etc/fstab's data entry"
        )
    disk_dir = part.resolve().parent
    start = int((part / "start").read_text())
    later = [
        sibling
        for sibling in disk_dir.iterdir()
        if (sibling / "partition").exists() and int((sibling / "start").read_text()) > start
    ]
    return PartitionSpan(
        disk=disk_dir.name,
        number=int((part / "partition").read_text()),
        start_sectors=start,
        size_sectors=int((part / "size").read_text()),
        disk_sectors=int((sys_block / disk_dir.name / "size").read_text()),
        is_last=not later,
    )


def _tool(*argv: str, input_text: str | None = None) -> str:
    found = shutil.which(argv[0], path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise SetupError(
            f"{argv[0]} is not installed", where=argv[0], hint="the image is missing a package"
        )
    result = subprocess.run(  # noqa: S603 - fixed argv
        [found, *argv[1:]], input=input_text, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SetupError(
            f"{' '.join(argv)} failed: {result.stderr.strip()[-500:]}",
            where=argv[0],
            hint="see the journal of moltbot-setup.service",
        )
    return result.stdout


def grow_data_partition(mountpoint: Path) -> int | None:
    """Grow the data partition (the disk's last) and its ext4 to fill the card, online."""
    source, _, target = (
        _tool("findmnt", "-n", "-o", "SOURCE,TARGET", "--target", str(mountpoint))
        .strip()
        .partition(" ")
    )
    if not source.startswith("/dev/") or Path(target.strip()) != mountpoint:
        logger.info("data dir %s is not a partition of its own; nothing to grow", mountpoint)
        return None
    span = partition_span(Path(source))
    new_size = grown_size(span)
    if new_size is None:
        return None
    disk = f"/dev/{span.disk}"
    _tool(
        "sfdisk",
        "--no-reread",
        "--no-tell-kernel",
        "-N",
        str(span.number),
        disk,
        input_text=f"{span.start_sectors},{new_size}\n",
    )
    _tool("partx", "-u", "--nr", str(span.number), disk)
    _tool("resize2fs", source)
    logger.info(
        "grew %s from %d to %d MiB",
        source,
        span.size_sectors * SECTOR >> 20,
        new_size * SECTOR >> 20,
    )
    return new_size


def hostname_for(config: MoltbotConfig, identity: str) -> str:
    if config.system.hostname:
        return config.system.hostname
    name = identity.lower().replace("_", "-")
    return name if name.startswith("moltbot") else f"moltbot-{name}"


def apply_hostname(root: Path, name: str) -> bool:
    hostname_file = root / "etc/hostname"
    current = hostname_file.read_text().strip() if hostname_file.exists() else ""
    if current == name:
        return False
    write_text_atomically(hostname_file, name + "\n")
    hosts = root / "etc/hosts"
    lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
    lines = [line for line in lines if not line.startswith("127.0.1.1")] + [f"127.0.1.1\t{name}"]
    write_text_atomically(hosts, "\n".join(lines) + "\n")
    return True


def wpa_supplicant_conf(config: MoltbotConfig) -> str | None:
    system = config.system
    if not system.wifi_ssid:
        return None
    psk = system.wifi_psk.get_secret_value() if system.wifi_psk else None
    lines = ["ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev", "update_config=0"]
    if system.wifi_country:
        lines.append(f"country={system.wifi_country}")
    lines += ["network={", f'    ssid="{_quoted(system.wifi_ssid)}"']
    lines += [f'    psk="{_quoted(psk)}"'] if psk else ["    key_mgmt=NONE"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    if '"' in value or "\n" in value:
        raise SetupError(
            "a Wi-Fi SSID or passphrase contains a double quote or a line break",
            where="system.wifi_ssid / system.wifi_psk",
            hint="wpa_supplicant cannot take those in a quoted string; change the value",
        )
    return value


def apply_wifi(root: Path, config: MoltbotConfig) -> bool:
    """wpa_supplicant for wlan0 when the site names a network; removed when it no longer does."""
    conf = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    wanted = wpa_supplicant_conf(config)
    current = conf.read_text() if conf.exists() else None
    if wanted == current:
        return False
    if wanted is None:
        conf.unlink()
    else:
        write_text_atomically(conf, wanted)
        conf.chmod(0o600)
    return True


def apply_ssh_keys(root: Path, config: MoltbotConfig, admin: str | None) -> bool:
    """The site's keys for the admin user, kept in a marked block beside the recipe's keys."""
    if admin is None:
        return False
    authorized = root / "home" / admin / ".ssh/authorized_keys"
    existing = authorized.read_text().splitlines() if authorized.exists() else []
    if ADMIN_KEYS_MARK in existing:
        existing = existing[: existing.index(ADMIN_KEYS_MARK)]
    keys = [key.strip() for key in config.system.ssh_authorized_keys if key.strip()]
    wanted = existing + ([ADMIN_KEYS_MARK, *keys] if keys else [])
    if wanted == (authorized.read_text().splitlines() if authorized.exists() else []):
        return False
    authorized.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_text_atomically(authorized, "\n".join(wanted) + "\n")
    authorized.chmod(0o600)
    if os.geteuid() == 0:
        stat = authorized.parent.parent.stat()
        for path in (authorized.parent, authorized):
            os.chown(path, stat.st_uid, stat.st_gid)
    return True


def admin_user(root: Path) -> str | None:
    """The first member of the sudo group: recipes make it, with keys and no password."""
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, members = line.split(":", 3)
        if name == "sudo" and members:
            return members.split(",")[0]
    return None


def ensure_identity(config: MoltbotConfig) -> str:
    """Device id and API token, generated once in the data dir, owned by the appliance user."""
    data_dir = config.device.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = device_id(config)
    api_token(config)
    if os.geteuid() == 0 and _user_exists(APP_USER):
        shutil.chown(data_dir, APP_USER, APP_USER)
        for name in ("device-id", "api-token"):
            if (data_dir / name).exists():
                shutil.chown(data_dir / name, APP_USER, APP_USER)
    return identity


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class SetupReport:
    steps: dict[str, str]
    failed: list[str]


def run_setup(config: MoltbotConfig, root: Path = Path("/"), *, grow: bool = True) -> SetupReport:
    """Every step; one that fails is reported and the rest still run."""
    report = SetupReport({}, [])

    def step(name: str, action: object) -> None:
        try:
            outcome = action() if callable(action) else action
            report.steps[name] = "changed" if outcome else "ok"
        except (MoltbotError, OSError) as exc:
            logger.error("setup step %s failed: %s", name, exc)
            report.steps[name] = f"failed: {exc}"
            report.failed.append(name)

    if grow:
        step("grow data partition", lambda: grow_data_partition(config.device.data_dir))
    identity: list[str] = []
    step("device id and API token", lambda: identity.append(ensure_identity(config)))
    if identity:
        step("hostname", lambda: _hostname(root, hostname_for(config, identity[0])))
    step("wifi", lambda: _wifi(root, config))
    step("ssh keys", lambda: apply_ssh_keys(root, config, admin_user(root)))
    if root == Path("/"):
        step("ssh host keys", _host_keys)
    return report


def _host_keys() -> bool:
    missing = not list(Path("/etc/ssh").glob("ssh_host_*_key"))
    _tool("ssh-keygen", "-A")
    return missing


def _wifi(root: Path, config: MoltbotConfig) -> bool:
    changed = apply_wifi(root, config)
    if changed and root == Path("/"):
        verb = "enable" if config.system.wifi_ssid else "disable"
        _tool("systemctl", "--no-block", verb, "--now", "wpa_supplicant@wlan0.service")
    return changed


def _hostname(root: Path, name: str) -> bool:
    changed = apply_hostname(root, name)
    if changed and root == Path("/"):
        _tool("hostname", name)
    return changed
