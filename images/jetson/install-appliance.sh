#!/usr/bin/env bash
# Moltbot Edge: install the appliance INTO a Jetson's root file system — NVIDIA's own Ubuntu
# sample rootfs in Linux_for_Tegra/rootfs, after apply_binaries.sh — from this bundle.
#
#   sudo ./install-appliance.sh --root /path/to/Linux_for_Tegra/rootfs [--skip-packages]
#
# On the flashing host it unpacks the bundle's overlay (units, config, models) into the tree,
# then runs itself inside the tree (chroot; arm64 binaries run under qemu-user-static on an x86
# host) with --inside, which:
#   1. installs the JetPack runtime packages (CUDA runtime, cuDNN, TensorRT and its Python
#      bindings) from NVIDIA's L4T apt source that apply_binaries.sh configured
#      (--skip-packages leaves them out: a tree without NVIDIA's sources, as in the tests);
#   2. creates the appliance's user and the admins (locked passwords: SSH keys only);
#   3. makes /opt/moltbot/venv on the system's Python with --system-site-packages (so JetPack's
#      tensorrt module is importable) and installs the application from the bundle's wheelhouse,
#      offline;
#   4. enables the units, masks NVIDIA's first-boot wizard, removes SSH host keys (first boot
#      makes them) and checks that the venv imports the application.
# Safe to re-run: the venv is made anew, users and packages are kept.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/bundle.env"
STAGE=/var/tmp/moltbot-install
VENV=/opt/moltbot/venv

usage() {
    echo "usage: $0 --root ROOTFS [--skip-packages]" >&2
    exit 2
}

root=""
inside=0
skip_packages=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --root) [ "$#" -ge 2 ] || usage; root=$2; shift ;;
        --inside) inside=1 ;;
        --skip-packages) skip_packages=1 ;;
        *) usage ;;
    esac
    shift
done

install_packages() {
    if [ "$skip_packages" -eq 1 ]; then
        echo "   JetPack packages skipped (--skip-packages)"
        return
    fi
    if ! grep -rqs "repo.download.nvidia.com/jetson" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "error: NVIDIA's L4T apt source is not configured in this root file system:" >&2
        echo "       run the BSP's apply_binaries.sh first (it installs nvidia-l4t-apt-source)," >&2
        echo "       or add: $APT_SOURCES" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # shellcheck disable=SC2086 # a list of package names
    apt-get install -y --no-install-recommends $JETPACK_PACKAGES
    apt-get clean
    rm -rf /var/lib/apt/lists/*
}

create_users() {
    if ! getent passwd "$APP_USER" >/dev/null; then
        uid_option=()
        if ! getent passwd "$APP_UID" >/dev/null; then uid_option=(--uid "$APP_UID"); fi
        useradd --system "${uid_option[@]}" --user-group --home-dir /var/lib/moltbot \
            --no-create-home --shell /usr/sbin/nologin "$APP_USER"
    fi
    for group in audio video render; do
        if getent group "$group" >/dev/null; then usermod -aG "$group" "$APP_USER"; fi
    done
    for admin in $ADMIN_USERS; do
        if ! getent passwd "$admin" >/dev/null; then
            useradd --create-home --shell /bin/bash --groups sudo "$admin"
        fi
        passwd --lock "$admin" >/dev/null
        if [ -d "/home/$admin/.ssh" ]; then chown -R "$admin:$admin" "/home/$admin/.ssh"; fi
    done
    chown -R "$APP_USER:$APP_USER" /var/lib/moltbot
    chmod 750 /var/lib/moltbot
}

make_venv() {
    rm -rf "$VENV"
    "$SYSTEM_PYTHON" -m venv --without-pip --system-site-packages "$VENV"
    pip_wheel=$(ls "$STAGE"/wheelhouse/pip-*.whl)
    "$VENV/bin/python" "$pip_wheel/pip" install --no-index --no-cache-dir \
        --disable-pip-version-check --find-links "$STAGE/wheelhouse" "$APP_REQUIREMENT"
}

finish_system() {
    for unit in $ENABLED_UNITS; do
        if [ -e "/lib/systemd/system/$unit" ] || [ -e "/usr/lib/systemd/system/$unit" ]; then
            systemctl enable "$unit"
        fi
    done
    for unit in /etc/systemd/system/nv-oem-config* /lib/systemd/system/nv-oem-config*; do
        # NVIDIA's first-boot wizard asks for a user and a password: the appliance has neither.
        if [ -e "$unit" ]; then systemctl mask "$(basename "$unit")"; fi
    done
    rm -f /etc/ssh/ssh_host_*
    "$VENV/bin/python" -c 'import edge.cli, edge.doctor; print("   application imports: ok")'
    "$VENV/bin/python" -c 'import tensorrt; print("   tensorrt", tensorrt.__version__, "from", tensorrt.__file__)' \
        || echo "   warning: tensorrt is not importable from the venv (the tensorrt backend will be skipped)"
}

if [ "$inside" -eq 1 ]; then
    system=$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')
    echo "== inside the root file system: $system, $("$SYSTEM_PYTHON" --version)"
    install_packages
    create_users
    make_venv
    finish_system
    exit 0
fi

[ -n "$root" ] || usage
[ "$(id -u)" -eq 0 ] || { echo "error: installing into a root file system needs root: sudo $0 --root $root" >&2; exit 2; }
[ -x "$root/usr/bin/$SYSTEM_PYTHON" ] || [ -x "$root/bin/$SYSTEM_PYTHON" ] || {
    echo "error: $root has no $SYSTEM_PYTHON: is it NVIDIA's Ubuntu $UBUNTU sample root file system?" >&2
    exit 1
}
root=$(cd "$root" && pwd)
echo "== installing $BUNDLE_NAME into $root"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$here/$OVERLAY_TARBALL" -C "$root"
rm -rf "${root:?}$STAGE"
mkdir -p "$root$STAGE"
cp -a "$here/wheelhouse" "$here/bundle.env" "$here/install-appliance.sh" "$root$STAGE/"

mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}"
    done
    if [ -e "$root/etc/resolv.conf.moltbot" ] || [ -L "$root/etc/resolv.conf.moltbot" ]; then
        rm -f "$root/etc/resolv.conf"
        mv "$root/etc/resolv.conf.moltbot" "$root/etc/resolv.conf"
    fi
    rm -rf "${root:?}$STAGE"
}
trap cleanup EXIT
for fs in proc dev sys; do
    mkdir -p "$root/$fs"
    mount --bind "/$fs" "$root/$fs"
    mounted+=("$root/$fs")
done
if [ "$skip_packages" -eq 0 ]; then
    # apt inside the tree resolves names with the host's resolver while it runs.
    if [ -e "$root/etc/resolv.conf" ] || [ -L "$root/etc/resolv.conf" ]; then
        mv "$root/etc/resolv.conf" "$root/etc/resolv.conf.moltbot"
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf"
fi
inside_args=(--inside)
if [ "$skip_packages" -eq 1 ]; then inside_args+=(--skip-packages); fi
chroot "$root" /bin/bash "$STAGE/install-appliance.sh" "${inside_args[@]}"
echo "== the appliance is installed in $root"
