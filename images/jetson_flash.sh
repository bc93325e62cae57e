#!/usr/bin/env bash
# Moltbot Edge: install the appliance into YOUR Linux_for_Tegra BSP's own Ubuntu sample root
# file system and flash it to a Jetson's internal eMMC with NVIDIA's tools (NVIDIA's licence
# forbids shipping the BSP, CUDA or TensorRT).
#
#   sudo ./flash.sh /path/to/Linux_for_Tegra            # checks, asks, then flashes
#   ./flash.sh /path/to/Linux_for_Tegra --check-only    # every check, touches nothing
#   sudo ./flash.sh /path/to/Linux_for_Tegra --yes      # no question (re-runs are safe)
#   sudo ./flash.sh /path/to/Linux_for_Tegra --rootfs-ab
#       # NVIDIA's rootfs A/B: two root partitions, APP and APP_b (ROOTFS_AB=1 to NVIDIA's
#       # l4t_initrd_flash.sh), for RAUC updates through nvbootctrl; each slot gets half the room
#
# Before it touches anything it checks: the BSP's files, its Jetson Linux release against the
# recipe's, that rootfs/ holds NVIDIA's sample root file system of the Ubuntu release the recipe
# expects, that arm64 programs can run here (qemu-user-static), the board in recovery mode on
# USB, free space, and that the rootfs + JetPack packages + appliance + data + models fit the
# board's eMMC. Every run is logged beside this script (USB flashing fails now and then:
# put the board back in recovery mode and run it again).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/bundle.env"

usage() {
    echo "usage: $0 LINUX_FOR_TEGRA_DIR [--check-only] [--yes] [--rootfs-ab]" >&2
    exit 2
}

bsp=""
check_only=0
assume_yes=0
rootfs_ab=0
for arg in "$@"; do
    case "$arg" in
        --check-only) check_only=1 ;;
        --yes) assume_yes=1 ;;
        --rootfs-ab) rootfs_ab=1 ;;
        -h|--help) usage ;;
        -*) echo "error: unknown option $arg" >&2; usage ;;
        *) bsp="$arg" ;;
    esac
done
[ -n "$bsp" ] || usage

log="$here/flash-$(date -u +%Y%m%dT%H%M%SZ).log"
exec > >(tee -a "$log") 2>&1
echo "== moltbot flash: $BUNDLE_NAME for $BOARD ($BOARD_CONFIG), Jetson Linux R$L4T_VERSION (JetPack $JETPACK, Ubuntu $UBUNTU); log: $log"
layout="one root partition (APP)"
if [ "$rootfs_ab" -eq 1 ]; then layout="NVIDIA's rootfs A/B (APP and APP_b, ROOTFS_AB=1)"; fi
echo "   layout: $layout"

problems=()
problem() { problems+=("$1"); echo "  ✗ $1"; }
ok() { echo "  ✓ $1"; }

# 1. The BSP's own tools and the board's config.
if [ ! -d "$bsp" ]; then
    problem "BSP directory $bsp does not exist: unpack NVIDIA's Jetson Linux R$L4T_RELEASE BSP (Jetson_Linux_R$L4T_RELEASE.*_aarch64.tbz2) and pass its Linux_for_Tegra folder"
else
    bsp=$(cd "$bsp" && pwd)
    for needed in flash.sh apply_binaries.sh tools/kernel_flash/l4t_initrd_flash.sh "$BOARD_CONFIG.conf"; do
        if [ -e "$bsp/$needed" ]; then ok "$needed"; else problem "missing $bsp/$needed: this is not a complete Linux_for_Tegra BSP for $BOARD"; fi
    done

    # 2. Its release must be the one the recipe was built for (R35 = JetPack 5, R36 = JetPack 6).
    found=""
    core=$(find "$bsp/nv_tegra/l4t_deb_packages" -maxdepth 1 -name 'nvidia-l4t-core_*_arm64.deb' 2>/dev/null | sort | head -n 1 || true)
    if [ -n "$core" ]; then
        found=$(basename "$core" | sed -E 's/^nvidia-l4t-core_([0-9]+)\..*/\1/')
    elif [ -f "$bsp/rootfs/etc/nv_tegra_release" ]; then
        found=$(sed -nE '1s/^# R([0-9]+) .*/\1/p' "$bsp/rootfs/etc/nv_tegra_release")
    fi
    if [ -z "$found" ]; then
        problem "cannot tell the BSP's release: no nv_tegra/l4t_deb_packages/nvidia-l4t-core_*.deb in $bsp"
    elif [ "$found" != "$L4T_RELEASE" ]; then
        problem "BSP is Jetson Linux R$found but this bundle was built for R$L4T_RELEASE (JetPack $JETPACK): use the R$L4T_RELEASE BSP, or build the bundle from the recipe for R$found"
    else
        ok "BSP release R$found matches the recipe"
    fi

    # 3. NVIDIA's sample root file system, of the Ubuntu release this JetPack is built on: the
    #    appliance is installed into it (its Python is the one JetPack's TensorRT bindings need).
    sample="Tegra_Linux_Sample-Root-Filesystem_R$L4T_VERSION.*_aarch64.tbz2"
    os_release="$bsp/rootfs/etc/os-release"
    if [ ! -f "$os_release" ]; then
        problem "no sample root file system in $bsp/rootfs: unpack NVIDIA's $sample into it (sudo tar xpf $sample -C $bsp/rootfs)"
    else
        os_id=$(sed -nE 's/^ID="?([^"]*)"?$/\1/p' "$os_release")
        os_version=$(sed -nE 's/^VERSION_ID="?([^"]*)"?$/\1/p' "$os_release")
        if [ "$os_id" != "ubuntu" ] || [ "$os_version" != "$UBUNTU" ]; then
            problem "$bsp/rootfs is ${os_id:-unknown} ${os_version:-?}, but JetPack $JETPACK needs NVIDIA's Ubuntu $UBUNTU sample root file system: empty it and unpack $sample into it"
        else
            ok "sample root file system: Ubuntu $os_version"
        fi
    fi
fi

# 4. arm64 programs run here (the install step runs inside the arm64 root file system).
case "$(uname -m)" in
    aarch64|arm64) ok "this host runs arm64 programs natively" ;;
    *)
        if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
            ok "arm64 programs run here (qemu-user-static)"
        else
            problem "this host cannot run arm64 programs: sudo apt-get install qemu-user-static binfmt-support"
        fi
        ;;
esac

# 5. The board, in recovery mode, on USB.
lsusb_tool=${MOLTBOT_LSUSB:-lsusb}
if ! command -v "$lsusb_tool" >/dev/null 2>&1; then
    problem "lsusb is not installed (apt-get install usbutils)"
else
    usb=$("$lsusb_tool" || true)
    recovery=""
    for id in $RECOVERY_USB_IDS; do
        if grep -qi "ID $id" <<<"$usb"; then recovery=$id; fi
    done
    if [ -n "$recovery" ]; then
        ok "$BOARD in recovery mode (USB $recovery)"
    else
        problem "no $BOARD in recovery mode on USB (looked for $RECOVERY_USB_IDS): connect the USB-C flashing port, hold REC, press RESET, release REC, then check lsusb"
    fi
fi

# 6. The bundle is intact.
if (cd "$here" && sha256sum --check --quiet --ignore-missing SHA256SUMS); then
    ok "bundle checksums"
else
    problem "bundle files do not match SHA256SUMS: copy the bundle again"
fi

# 7. Room to install and flash here, and room on the board.
sample_mib=0
if [ -d "$bsp/rootfs" ]; then
    sample_mib=$(du -sm "$bsp/rootfs" 2>/dev/null | cut -f1 || true)
    sample_mib=${sample_mib:-0}
fi
df_tool=${MOLTBOT_DF:-df}
if [ -d "$bsp" ]; then
    free_mib=$(( $("$df_tool" --output=avail -k "$bsp" | tail -n 1) / 1024 ))
    want_mib=$(( (sample_mib + JETPACK_PACKAGES_MIB + APP_MIB) * 2 + 4096 ))
    if [ "$free_mib" -lt "$want_mib" ]; then
        problem "only $free_mib MiB free under $bsp; installing and flashing need $want_mib MiB"
    else
        ok "$free_mib MiB free for installing and flashing (need $want_mib)"
    fi
fi
needed_mib=$(( sample_mib + JETPACK_PACKAGES_MIB + APP_MIB + DATA_MIB + MODELS_MIB ))
emmc_mib=$(( STORAGE_GB * 1000 * 1000 * 1000 / 1048576 ))
usable_mib=$(( emmc_mib - NVIDIA_RESERVED_MIB ))
room="the $STORAGE_GB GB eMMC ($usable_mib MiB after NVIDIA's boot partitions)"
if [ "$rootfs_ab" -eq 1 ]; then
    # Each slot holds a whole root file system, the data dir with it.
    usable_mib=$(( usable_mib / 2 ))
    room="one of the two A/B root partitions ($usable_mib MiB each on the $STORAGE_GB GB eMMC)"
fi
if [ "$needed_mib" -gt "$usable_mib" ]; then
    problem "sample rootfs $sample_mib MiB + JetPack packages $JETPACK_PACKAGES_MIB MiB + appliance $APP_MIB MiB + data $DATA_MIB MiB + models $MODELS_MIB MiB = $needed_mib MiB do not fit $room; shrink the recipe's data or models"
else
    ok "$needed_mib MiB fit $room"
fi

if [ "${#problems[@]}" -gt 0 ]; then
    echo "== ${#problems[@]} problem(s); nothing was changed:"
    printf '   - %s\n' "${problems[@]}"
    exit 3
fi
if [ "$check_only" -eq 1 ]; then
    echo "== every check passed (--check-only: nothing was changed)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: flashing needs root: sudo $0 $*" >&2
    exit 2
fi
if [ "$assume_yes" -ne 1 ]; then
    read -r -p "Erase the eMMC of the $BOARD in recovery mode and flash $BUNDLE_NAME? [y/N] " answer
    [ "$answer" = "y" ] || [ "$answer" = "Y" ] || { echo "aborted"; exit 1; }
fi

# Safe to re-run: NVIDIA's rootfs is kept; apply_binaries.sh and the install step repeat cleanly.
echo "== NVIDIA apply_binaries.sh (the L4T user space and NVIDIA's apt source from your BSP)"
(cd "$bsp" && ./apply_binaries.sh)
echo "== installing the appliance into $bsp/rootfs (JetPack packages, venv, units, models)"
"$here/install-appliance.sh" --root "$bsp/rootfs"
# NVIDIA's rootfs A/B is chosen at flash time by ROOTFS_AB=1 in the flash tool's environment.
flash_env=()
if [ "$rootfs_ab" -eq 1 ]; then flash_env=(ROOTFS_AB=1); fi
echo "== NVIDIA ${flash_env[*]+${flash_env[*]} }l4t_initrd_flash.sh $BOARD_CONFIG $ROOT_DEVICE"
if ! (cd "$bsp" && env "${flash_env[@]}" ./tools/kernel_flash/l4t_initrd_flash.sh "$BOARD_CONFIG" "$ROOT_DEVICE"); then
    echo "error: NVIDIA's flash failed (see $log). USB flashing is known to fail now and then:" >&2
    echo "       put the board back in recovery mode and run this script again." >&2
    exit 1
fi
echo "== flashed $BUNDLE_NAME; the board boots into the appliance (first boot builds TensorRT engines)"
