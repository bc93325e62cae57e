#!/usr/bin/env bash
# Moltbot Edge: RAUC's custom bootloader backend on a Jetson flashed with NVIDIA's rootfs A/B
# (ROOTFS_AB=1). RAUC runs it (system.conf: bootloader=custom, [handlers]
# bootloader-custom-backend) and it answers through NVIDIA's nvbootctrl, on the rootfs slots:
#
#   bootname A = nvbootctrl rootfs slot 0 = partition APP
#   bootname B = nvbootctrl rootfs slot 1 = partition APP_b
#
#   get-primary        prints the slot the next boot starts ("Active rootfs slot" of
#                      nvbootctrl -t rootfs dump-slots-info)
#   set-primary A|B    nvbootctrl -t rootfs set-active-boot-slot 0|1
#   get-state A|B      prints good (the slot's status in dump-slots-info is "normal") or bad
#   set-state A|B good the running slot: nvbootctrl -t rootfs mark-boot-successful; another
#                      slot is good only if NVIDIA already counts it normal (nvbootctrl marks
#                      only the running slot)
#   set-state A|B bad  if that slot boots next, make the other slot active (nvbootctrl cannot
#                      mark a rootfs slot unbootable; UEFI's retry count does that on its own)
#   get-current        prints the running slot (nvbootctrl -t rootfs get-current-slot)
#
# Errors go to stderr with a non-zero exit; RAUC logs them and fails the operation.
set -euo pipefail
# A failing $(...) inside a function stops it too, not only at the top level.
shopt -s inherit_errexit

me=${0##*/}

fail() {
    echo "$me: $*" >&2
    exit 1
}

usage() {
    echo "usage: $me get-primary | set-primary A|B | get-state A|B | set-state A|B good|bad | get-current" >&2
    exit 2
}

nv() {
    local out
    if ! out=$(nvbootctrl -t rootfs "$@"); then
        fail "nvbootctrl -t rootfs $* failed: is this Jetson flashed with NVIDIA's rootfs A/B (ROOTFS_AB=1)? 'sudo nvbootctrl -t rootfs dump-slots-info' shows its slots"
    fi
    printf '%s\n' "$out"
}

slot_of() {
    case "$1" in
        A) echo 0 ;;
        B) echo 1 ;;
        *) fail "unknown bootname '$1': the slots in /etc/rauc/system.conf are A (APP, rootfs slot 0) and B (APP_b, rootfs slot 1)" ;;
    esac
}

bootname_of() {
    case "$1" in
        0|A) echo A ;;
        1|B) echo B ;;
        *) fail "nvbootctrl reported rootfs slot '$1'; expected 0 or 1 (A or B)" ;;
    esac
}

require_two_slots() {
    local slots
    slots=$(nv get-number-slots)
    if [ "$slots" != 2 ]; then
        fail "nvbootctrl reports ${slots:-no} rootfs slot(s), not 2: this Jetson was flashed without ROOTFS_AB=1; re-flash it with the bundle's flash.sh --rootfs-ab"
    fi
}

current() {
    local slot
    slot=$(nv get-current-slot)
    bootname_of "$slot"
}

primary() {
    local info active
    info=$(nv dump-slots-info)
    active=$(sed -nE 's/^Active rootfs slot: *([AB01]) *$/\1/p' <<<"$info")
    [ -n "$active" ] || fail "no 'Active rootfs slot' in the output of nvbootctrl -t rootfs dump-slots-info: $info"
    bootname_of "$active"
}

status_of() {
    local slot info status
    slot=$(slot_of "$1")
    info=$(nv dump-slots-info)
    status=$(sed -nE "s/^slot: *$slot,.*status: *([a-z_]+).*$/\\1/p" <<<"$info")
    [ -n "$status" ] || fail "no line for rootfs slot $slot in the output of nvbootctrl -t rootfs dump-slots-info: $info"
    echo "$status"
}

other_than() {
    if [ "$1" = A ]; then echo B; else echo A; fi
}

[ "$#" -ge 1 ] || usage
command -v nvbootctrl >/dev/null 2>&1 ||
    fail "nvbootctrl is not installed: it comes with NVIDIA's L4T tools (nvidia-l4t-tools) on Jetson Linux"

case "$1" in
    get-primary)
        [ "$#" -eq 1 ] || usage
        primary
        ;;
    set-primary)
        [ "$#" -eq 2 ] || usage
        slot=$(slot_of "$2")
        require_two_slots
        nv set-active-boot-slot "$slot" >/dev/null
        ;;
    get-state)
        [ "$#" -eq 2 ] || usage
        status=$(status_of "$2")
        if [ "$status" = normal ]; then echo good; else echo bad; fi
        ;;
    set-state)
        [ "$#" -eq 3 ] || usage
        slot_of "$2" >/dev/null
        require_two_slots
        case "$3" in
            good)
                running=$(current)
                if [ "$running" = "$2" ]; then
                    nv mark-boot-successful >/dev/null
                else
                    status=$(status_of "$2")
                    [ "$status" = normal ] ||
                        fail "cannot mark $2 good from the other slot: nvbootctrl marks only the running slot successful, and NVIDIA counts $2 '$status'; boot $2 and let its health gate mark it"
                fi
                ;;
            bad)
                next=$(primary)
                if [ "$next" = "$2" ]; then
                    other=$(slot_of "$(other_than "$2")")
                    nv set-active-boot-slot "$other" >/dev/null
                fi
                ;;
            *) fail "unknown state '$3' for set-state: RAUC sets good or bad" ;;
        esac
        ;;
    get-current)
        [ "$#" -eq 1 ] || usage
        current
        ;;
    *)
        fail "unknown command '$1': RAUC calls get-primary, set-primary, get-state, set-state and get-current"
        ;;
esac
