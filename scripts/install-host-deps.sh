#!/usr/bin/env bash
# Install the Debian packages named on the command line when they are missing.
# Used by `make test` and `make image` so a fresh machine sets itself up.
#
# A name written NAME/bookworm-backports comes from Debian's bookworm-backports suite: the
# suite is added to apt's sources (on the same mirror as the system's), and an apt preference
# pins exactly those packages to it, so nothing else on the machine moves to backports.
set -euo pipefail

BACKPORTS=bookworm-backports
SOURCES_FILE=/etc/apt/sources.list.d/moltbot-backports.list
PIN_FILE=/etc/apt/preferences.d/moltbot-backports

missing=()
backports=()
for package in "$@"; do
    case "$package" in
    */"$BACKPORTS")
        name="${package%/*}"
        version="$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)"
        if [[ "$version" != "install ok installed "*"~bpo12"* ]]; then
            backports+=("$name")
        fi
        ;;
    *)
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
        ;;
    esac
done
if [ "${#missing[@]}" -eq 0 ] && [ "${#backports[@]}" -eq 0 ]; then
    exit 0
fi

echo "installing host packages: ${missing[*]} ${backports[*]/%//$BACKPORTS}"
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "error: missing Debian packages: ${missing[*]} ${backports[*]/%//$BACKPORTS}" >&2
    echo "hint: run as root (this script adds $BACKPORTS for: ${backports[*]:-none})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_install=("${as_root[@]}" apt-get install -y -q --no-install-recommends)

if [ "${#missing[@]}" -gt 0 ]; then
    if ! "${apt_install[@]}" "${missing[@]}"; then
        "${as_root[@]}" apt-get update -q
        "${apt_install[@]}" "${missing[@]}"
    fi
fi

if [ "${#backports[@]}" -gt 0 ]; then
    # The system's own Debian mirror (deb822 or one-line sources), else deb.debian.org.
    mirror="$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list 2>/dev/null | grep -o -E 'https?://[^ ]+/debian/?( |$)' |
        head -n 1 | tr -d ' ' || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "deb ${mirror%/} $BACKPORTS main" | "${as_root[@]}" tee "$SOURCES_FILE" >/dev/null
    # Keep every pinned package of earlier runs, add this run's.
    read -r -a pinned <<<"$(sed -n 's/^Package: //p' "$PIN_FILE" 2>/dev/null || true)"
    all="$(printf '%s\n' "${pinned[@]}" "${backports[@]}" | sort -u | tr '\n' ' ')"
    printf 'Package: %s\nPin: release n=%s\nPin-Priority: 990\n' "${all% }" "$BACKPORTS" |
        "${as_root[@]}" tee "$PIN_FILE" >/dev/null
    "${as_root[@]}" apt-get update -q
    "${apt_install[@]}" "${backports[@]/%//$BACKPORTS}"
fi
