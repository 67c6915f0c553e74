# shellcheck shell=bash
# Shared by images/build.sh and scripts/build-base-image: Debian root file systems made with
# debootstrap and turned into images with `docker import`, so that nothing comes from a
# container registry. Sourced, not run; the caller has `set -Eeuo pipefail`.
#
# The caller sets LIB_NAME (the prefix of messages) and calls install_traps once. These
# globals are shared with the caller on purpose (the traps need them):
#   step       what is being done, named when it fails
#   rootfs     the root file system being assembled (in_root runs commands inside it)
#   build_log  where `logged` sends the output of commands (shown when one fails)
#
# Environment:
#   DEBIAN_MIRROR    Debian mirror (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY  Debian security mirror (default http://deb.debian.org/debian-security)
#   TMPDIR           where root file systems are assembled (default /var/tmp)

readonly DEBIAN_SUITE=bookworm
readonly DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

step=""
child=0
tmp_dirs=()
tmp_dir=""
rootfs=""
build_log=/dev/null

log() {
    echo "${LIB_NAME:-build}: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

on_error() {
    local status=$? line=$1 command=$2
    log "error: ${step:-build} failed (exit status $status) at line $line: $command"
}

# Remove the temporary directories, unmounting anything left mounted below
# them first (an interrupted debootstrap can leave /proc or /sys mounted).
cleanup() {
    local dir mnt
    for dir in "${tmp_dirs[@]}"; do
        [[ -d "$dir" ]] || continue
        while read -r mnt; do
            umount -l "$mnt" 2>/dev/null || log "warning: could not unmount $mnt"
        done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
        rm -rf --one-file-system "$dir"
    done
    tmp_dirs=()
}

# On Ctrl-C or SIGTERM, stop the running step (its whole process group)
# before the EXIT trap cleans up.
on_signal() {
    log "$1, stopping"
    if ((child)); then
        kill -TERM -- "-$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    exit "$2"
}

install_traps() {
    trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR
    trap cleanup EXIT
    trap 'on_signal interrupted 130' INT
    trap 'on_signal terminated 143' TERM
}

# Create a temporary directory, removed on exit, and put its path in $tmp_dir.
# (Not for $(...): the directory must be registered in this shell.)
make_tmp_dir() {
    tmp_dir=$(mktemp -d "${TMPDIR:-/var/tmp}/remoteapp-$1.XXXXXX")
    tmp_dirs+=("$tmp_dir")
}

image_id() {
    docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true
}

require_docker() {
    step="checking the Docker engine"
    command -v docker >/dev/null || die "the docker command is not installed"
    docker info >/dev/null 2>&1 ||
        die "the Docker engine is not reachable (is dockerd running? is DOCKER_HOST right?)"
}

# Seconds since $1 (an $EPOCHREALTIME), with one decimal.
seconds_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# Run a command, its output going to the build log (shown if it fails).
# It runs as a background job in its own process group (set -m), so that
# signals reach this script at once and on_signal can stop the whole step.
logged() {
    local status=0
    set -m
    (
        trap - ERR
        "$@"
    ) >>"$build_log" 2>&1 </dev/null &
    child=$!
    set +m
    wait "$child" || status=$?
    child=0
    if ((status != 0)); then
        tail -n 25 "$build_log" >&2
        die "$step failed: $* (exit status $status; last lines of the log above)"
    fi
}

# Run a command inside the root file system being assembled.
in_root() {
    chroot "$rootfs" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# debian_rootfs NAME [PACKAGE...]: a minimal Debian root file system with the packages
# (and their dependencies) and the current security updates, in a fresh temporary
# directory; sets $rootfs, and $build_log beside it.
debian_rootfs() {
    local name=$1 packages
    shift
    ((EUID == 0)) || die "building $name needs root (debootstrap, chroot)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    make_tmp_dir "$name"
    rootfs="$tmp_dir/rootfs"
    build_log="$tmp_dir/build.log"

    step="$name: debootstrap"
    packages=$(IFS=,; echo "$*")
    log "debootstrap $DEBIAN_SUITE${packages:+ ($packages)} from $DEBIAN_MIRROR"
    logged debootstrap --variant=minbase ${packages:+"--include=$packages"} \
        "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR"

    step="$name: installing updates"
    # debootstrap lists only the release itself; updates and security fixes are separate
    # suites, and images built FROM this one must see them too.
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb $DEBIAN_SECURITY $DEBIAN_SUITE-security main
EOF
    logged in_root apt-get update
    logged in_root apt-get upgrade -y -o Dpkg::Use-Pty=0
}

# Files Docker provides at run time: do not ship the build host's.
rootfs_reset_host_files() {
    : >"$rootfs/etc/resolv.conf"
    echo localhost >"$rootfs/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
}

# apt's package lists and caches, logs and backups: rebuilt by `apt-get update` when needed.
rootfs_clean() {
    logged in_root apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
        "$rootfs"/var/log/apt/* "$rootfs"/var/log/*.log "$rootfs"/root/.cache
}

# rootfs_import REF DOCKER-IMPORT-OPTION...: the root file system as image REF.
rootfs_import() {
    local ref=$1
    shift
    tar --numeric-owner -C "$rootfs" -c . | docker import "$@" - "$ref" >/dev/null
}

# report_built REF OLD-ID STARTED: check that REF exists, drop the image it replaced
# (unless something still uses it) and say how long it took.
report_built() {
    local ref=$1 old_id=$2 started=$3 new_id size
    new_id=$(image_id "$ref")
    [[ -n "$new_id" ]] || die "$ref was not created"
    if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    size=$(docker image inspect --format '{{.Size}}' "$ref" | awk '{ printf "%.1f", $1 / 1e6 }')
    log "built $ref in $(seconds_since "$started")s (${size} MB)"
}
