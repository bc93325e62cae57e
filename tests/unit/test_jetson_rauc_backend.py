"""The Jetson's RAUC custom bootloader backend (images/jetson/rauc-nvbootctrl-backend.sh), run
for real by bash against a stand-in ``nvbootctrl`` on PATH.

NVIDIA's nvbootctrl exists only on a Jetson: the stand-in keeps the rootfs slots' state in a
JSON file, records every call and answers like NVIDIA's tool (``dump-slots-info`` in the format
Jetson Linux prints: "Active rootfs slot: A", "slot: 0, retry_count: 3, status: normal").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from images.jetson_overlay import RAUC_BACKEND_SCRIPT

FAKE_NVBOOTCTRL = """\
import json, os, sys
state_path = os.environ["FAKE_NVBOOTCTRL_STATE"]
state = json.load(open(state_path))
args = sys.argv[1:]
with open(state_path + ".calls", "a") as log:
    log.write(" ".join(args) + "\\n")
if state.get("broken"):
    sys.exit("nvbootctrl: cannot read the boot control data")
if args[:2] != ["-t", "rootfs"]:
    sys.exit("stand-in: only -t rootfs is modelled")
command, rest = args[2], args[3:]
letter = "AB"
if command == "get-current-slot":
    print(state["current"])
elif command == "get-number-slots":
    print(state["slots"])
elif command == "dump-slots-info":
    print(f"Current rootfs slot: {letter[state['current']]}")
    print(f"Active rootfs slot: {letter[state['active']]}")
    print(f"num_slots: {state['slots']}")
    for n, status in enumerate(state["status"]):
        print(f"slot: {n},             retry_count: 3,             status: {status}")
elif command == "set-active-boot-slot" and rest in (["0"], ["1"]):
    state["active"] = int(rest[0])
elif command == "mark-boot-successful":
    state["status"][state["current"]] = "normal"
else:
    sys.exit(f"nvbootctrl: invalid command {' '.join(args[2:])}")
json.dump(state, open(state_path, "w"))
"""


class Jetson:
    """A stand-in nvbootctrl on PATH over a slot state file, and the backend run against it."""

    def __init__(self, folder: Path, **state: object) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.state_path = folder / "nvbootctrl.json"
        self.state_path.write_text(
            json.dumps({"current": 0, "active": 0, "slots": 2, "status": ["normal"] * 2} | state)
        )
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        tool = bin_dir / "nvbootctrl"
        tool.write_text(f"#!{sys.executable}\n{FAKE_NVBOOTCTRL}")
        tool.chmod(0o755)
        self.env = os.environ | {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "FAKE_NVBOOTCTRL_STATE": str(self.state_path),
        }

    def backend(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(RAUC_BACKEND_SCRIPT), *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            timeout=30,
        )

    def state(self) -> dict[str, object]:
        return dict(json.loads(self.state_path.read_text()))

    def calls(self) -> list[str]:
        path = Path(f"{self.state_path}.calls")
        return path.read_text().splitlines() if path.exists() else []


def test_get_current_is_nvbootctrls_running_rootfs_slot_as_a_bootname(tmp_path: Path) -> None:
    jetson = Jetson(tmp_path, current=1, active=1)
    result = jetson.backend("get-current")
    assert (result.returncode, result.stdout) == (0, "B\n")
    assert jetson.calls() == ["-t rootfs get-current-slot"]


def test_get_primary_is_the_active_slot_the_next_boot_starts(tmp_path: Path) -> None:
    jetson = Jetson(tmp_path, current=0, active=1)
    result = jetson.backend("get-primary")
    assert (result.returncode, result.stdout) == (0, "B\n")
    assert jetson.calls() == ["-t rootfs dump-slots-info"]


def test_set_primary_sets_nvidias_active_rootfs_slot(tmp_path: Path) -> None:
    jetson = Jetson(tmp_path)
    result = jetson.backend("set-primary", "B")
    assert result.returncode == 0, result.stderr
    assert jetson.state()["active"] == 1
    assert jetson.calls() == ["-t rootfs get-number-slots", "-t rootfs set-active-boot-slot 1"]


def test_get_state_is_good_for_a_normal_slot_and_bad_for_an_unbootable_one(
    tmp_path: Path,
) -> None:
    jetson = Jetson(tmp_path, status=["normal", "unbootable"])
    assert jetson.backend("get-state", "A").stdout == "good\n"
    assert jetson.backend("get-state", "B").stdout == "bad\n"
    assert set(jetson.calls()) == {"-t rootfs dump-slots-info"}


def test_set_state_good_on_the_running_slot_marks_the_boot_successful(tmp_path: Path) -> None:
    jetson = Jetson(tmp_path, current=1, active=1, status=["normal", "unbootable"])
    result = jetson.backend("set-state", "B", "good")
    assert result.returncode == 0, result.stderr
    assert jetson.state()["status"] == ["normal", "normal"]
    assert jetson.calls()[-1] == "-t rootfs mark-boot-successful"


def test_set_state_good_on_the_other_slot_is_refused_unless_nvidia_counts_it_normal(
    tmp_path: Path,
) -> None:
    assert Jetson(tmp_path / "a").backend("set-state", "B", "good").returncode == 0
    jetson = Jetson(tmp_path / "b", status=["normal", "unbootable"])
    result = jetson.backend("set-state", "B", "good")
    assert result.returncode == 1
    assert "nvbootctrl marks only the running slot successful" in result.stderr
    assert "mark-boot-successful" not in " ".join(jetson.calls())


def test_set_state_bad_on_the_slot_that_boots_next_makes_the_other_one_active(
    tmp_path: Path,
) -> None:
    """A slot that failed its health gate: the next boot is the other slot."""
    jetson = Jetson(tmp_path, current=1, active=1)
    result = jetson.backend("set-state", "B", "bad")
    assert result.returncode == 0, result.stderr
    assert jetson.state()["active"] == 0
    assert jetson.calls()[-1] == "-t rootfs set-active-boot-slot 0"


def test_set_state_bad_on_a_slot_that_does_not_boot_next_changes_nothing(tmp_path: Path) -> None:
    """What RAUC does before writing the other slot: never switch away from the running one."""
    jetson = Jetson(tmp_path)
    result = jetson.backend("set-state", "B", "bad")
    assert result.returncode == 0, result.stderr
    assert jetson.state()["active"] == 0
    assert not [call for call in jetson.calls() if "set-active-boot-slot" in call]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("reboot",), "unknown command 'reboot'"),
        (("set-primary", "C"), "unknown bootname 'C'"),
        (("get-state", "slot0"), "unknown bootname 'slot0'"),
        (("set-state", "A", "maybe"), "unknown state 'maybe'"),
    ],
)
def test_unknown_commands_bootnames_and_states_fail_saying_which(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    jetson = Jetson(tmp_path)
    result = jetson.backend(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""
    assert not [call for call in jetson.calls() if "set-active" in call or "mark-" in call]


def test_a_missing_argument_prints_the_usage(tmp_path: Path) -> None:
    result = Jetson(tmp_path).backend("set-primary")
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_a_failing_nvbootctrl_fails_the_call_and_asks_about_rootfs_ab(tmp_path: Path) -> None:
    jetson = Jetson(tmp_path, broken=True)
    for args in (("get-current",), ("get-primary",), ("get-state", "A"), ("set-primary", "A")):
        result = jetson.backend(*args)
        assert result.returncode == 1, args
        assert "ROOTFS_AB=1" in result.stderr, args
        assert result.stdout == "", args


def test_a_jetson_flashed_without_rootfs_ab_is_never_switched(tmp_path: Path) -> None:
    jetson = Jetson(tmp_path, slots=1, status=["normal"])
    result = jetson.backend("set-primary", "B")
    assert result.returncode == 1
    assert "flashed without ROOTFS_AB=1" in result.stderr
    assert jetson.calls() == ["-t rootfs get-number-slots"]


def test_without_nvbootctrl_the_backend_says_where_it_comes_from(tmp_path: Path) -> None:
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(RAUC_BACKEND_SCRIPT), "get-current"],
        capture_output=True,
        text=True,
        env=os.environ | {"PATH": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 1
    assert "nvbootctrl is not installed" in result.stderr


def test_backend_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package: shellcheck)")
    result = subprocess.run(
        [shellcheck, str(RAUC_BACKEND_SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
