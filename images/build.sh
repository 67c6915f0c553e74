#!/bin/bash
# Build the demo application images, locally, without any container registry.
#
#   images/build.sh [--force] [webapp] [vncapp]
#
# With no name, builds every image. An image that already exists is skipped
# unless --force is given. Needs a reachable Docker engine; the vncapp image
# also needs root, debootstrap and access to a Debian mirror.
#
# Environment:
#   BUSYBOX          static busybox binary for webapp (default /bin/busybox,
#                    from Debian's busybox-static package)
#   DEBIAN_MIRROR    Debian mirror (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY  Debian security mirror (default http://deb.debian.org/debian-security)
#   TMPDIR           where the vncapp root file system is assembled (default /var/tmp)
set -Eeuo pipefail

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly IMAGES_DIR
readonly ALL_IMAGES=(webapp vncapp)
readonly NS=eu.simphony-project.docker
readonly REPOSITORY=remoteapp-demo
readonly SUITE=bookworm
readonly BUSYBOX=${BUSYBOX:-/bin/busybox}
readonly DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

# Packages of the vncapp root file system (their dependencies come along).
# noVNC's static files are taken from the novnc package separately: installing
# it would pull in nodejs and OpenStack libraries the image does not use.
readonly VNCAPP_PACKAGES=(
    tigervnc-standalone-server # Xvnc
    python3-websockify         # WebSocket relay and web server
    x11-apps                   # xclock
)
# Installed only as dependencies of Xvnc's OpenGL support (Mesa's DRI drivers
# and LLVM): their files are removed to keep the image small. X11 programs
# such as xclock do not use OpenGL; an image whose program does must keep them.
readonly VNCAPP_PRUNED_PACKAGES=(
    'libgl1-mesa-dri'
    'libllvm[0-9]*'
    'libz3-[0-9]*'
    'libxml2'
    'libicu[0-9]*'
)

step=""
child=0
tmp_dirs=()
tmp_dir=""
rootfs=""
build_log=/dev/null

log() {
    echo "build.sh: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

usage() {
    cat <<EOF
Usage: $0 [--force] [IMAGE...]

Build the demo application images (default: ${ALL_IMAGES[*]}).
Images that already exist are skipped unless --force is given.
EOF
}

on_error() {
    local status=$? line=$1 command=$2
    log "error: ${step:-build} failed (exit status $status) at line $line: $command"
}
trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR

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
}
trap cleanup EXIT

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
trap 'on_signal interrupted 130' INT
trap 'on_signal terminated 143' TERM

# Create a temporary directory, removed on exit, and put its path in $tmp_dir.
# (Not for $(...): the directory must be registered in this shell.)
make_tmp_dir() {
    tmp_dir=$(mktemp -d "${TMPDIR:-/var/tmp}/remoteapp-$1.XXXXXX")
    tmp_dirs+=("$tmp_dir")
}

image_ref() {
    echo "$REPOSITORY/$1:latest"
}

image_id() {
    docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true
}

icon_base64() {
    local icon="$IMAGES_DIR/$1/icon.png"
    [[ -s "$icon" ]] || die "missing icon $icon (python3 images/tools/make_icons.py draws it)"
    base64 -w0 "$icon"
}

# --- webapp -------------------------------------------------------------------

build_webapp() {
    local ref=$1 context icon
    step="webapp: checking busybox"
    [[ -x "$BUSYBOX" ]] || die "no busybox at $BUSYBOX (apt-get install busybox-static, or set BUSYBOX)"
    if LC_ALL=C readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        die "$BUSYBOX is dynamically linked; the image is FROM scratch and needs a static busybox (busybox-static)"
    fi

    step="webapp: preparing the build context"
    make_tmp_dir webapp
    context=$tmp_dir
    install -m 0644 "$IMAGES_DIR/webapp/Dockerfile" "$context/Dockerfile"
    install -m 0755 "$IMAGES_DIR/webapp/start-webapp" "$context/start-webapp"
    install -m 0755 "$BUSYBOX" "$context/busybox"

    step="webapp: docker build"
    icon=$(icon_base64 webapp)
    docker build --quiet \
        --label "$NS.icon_128=$icon" \
        --tag "$ref" "$context" >/dev/null
}

# --- vncapp -------------------------------------------------------------------

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

build_vncapp() {
    local ref=$1 work packages missing pruned pkg path icon
    step="vncapp: checking prerequisites"
    ((EUID == 0)) || die "building vncapp needs root (debootstrap, chroot)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

    make_tmp_dir vncapp
    work=$tmp_dir
    rootfs="$work/rootfs"
    build_log="$work/build.log"
    packages=$(IFS=,; echo "${VNCAPP_PACKAGES[*]}")

    step="vncapp: debootstrap"
    log "debootstrap $SUITE ($packages) from $DEBIAN_MIRROR"
    logged debootstrap --variant=minbase --include="$packages" "$SUITE" "$rootfs" "$DEBIAN_MIRROR"

    step="vncapp: installing updates"
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb $DEBIAN_SECURITY $SUITE-security main
EOF
    logged in_root apt-get update
    logged in_root apt-get upgrade -y -o Dpkg::Use-Pty=0

    step="vncapp: adding noVNC"
    logged in_root sh -c 'cd /tmp && apt-get download novnc &&
        dpkg-deb --fsys-tarfile novnc_*.deb | tar -x -C / ./usr/share/novnc &&
        rm -f novnc_*.deb'
    [[ -f "$rootfs/usr/share/novnc/vnc.html" ]] || die "noVNC's vnc.html is missing"

    step="vncapp: configuring"
    logged in_root useradd --create-home --uid 1000 --user-group --shell /bin/bash app
    install -d -m 1777 "$rootfs/tmp/.X11-unix" "$rootfs/tmp/.ICE-unix"
    install -m 0755 "$IMAGES_DIR/vncapp/start-vncapp" "$rootfs/usr/local/bin/start-vncapp"
    # Docker provides these at run time; do not ship the build host's.
    : >"$rootfs/etc/resolv.conf"
    echo localhost >"$rootfs/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"

    step="vncapp: slimming"
    logged in_root apt-get clean
    # dpkg-query fails when a pattern matches nothing: that is fine here.
    # shellcheck disable=SC2016 # ${Package} is dpkg-query's format, not shell
    pruned=$(in_root dpkg-query --showformat '${Package}\n' --show "${VNCAPP_PRUNED_PACKAGES[@]}" 2>/dev/null || true)
    for pkg in $pruned; do
        while read -r path; do
            if [[ -f "$rootfs$path" || -L "$rootfs$path" ]]; then
                rm -f "$rootfs$path"
            fi
        done < <(in_root dpkg-query --listfiles "$pkg")
    done
    logged in_root ldconfig
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian \
        "$rootfs"/var/log/apt/* "$rootfs"/var/log/*.log "$rootfs"/root/.cache
    # Keep the licences (copyright files), drop the rest of the documentation.
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete

    step="vncapp: checking the root file system"
    missing=$(in_root sh -c 'ldd /usr/bin/Xvnc /usr/bin/xclock /usr/bin/xkbcomp' | grep 'not found' || true)
    [[ -z "$missing" ]] || die "pruning removed libraries still in use: $missing"
    in_root python3 -c 'import websockify.websocketproxy' ||
        die "websockify cannot be imported"

    step="vncapp: docker import"
    icon=$(icon_base64 vncapp)
    tar --numeric-owner -C "$rootfs" -c . |
        docker import \
            --change "LABEL $NS.ui_name=\"Demo desktop (xclock)\"" \
            --change "LABEL $NS.description=\"A minimal X11 desktop in the browser: xclock on TigerVNC's Xvnc, shown with noVNC.\"" \
            --change "LABEL $NS.type=\"vncapp\"" \
            --change "LABEL $NS.icon_128=\"$icon\"" \
            --change "LABEL $NS.env.x11-width=\"\" $NS.env.x11-height=\"\" $NS.env.x11-depth=\"\"" \
            --change "LABEL $NS.env.startupdata=\"\"" \
            --change 'ENV LANG=C.UTF-8' \
            --change 'ENV HOME=/home/app' \
            --change 'USER app' \
            --change 'WORKDIR /home/app' \
            --change 'EXPOSE 8888' \
            --change 'CMD ["/usr/local/bin/start-vncapp"]' \
            --message "SimPhoNy-Remote demo desktop ($SUITE)" \
            - "$ref" >/dev/null
}

# --- main ---------------------------------------------------------------------

main() {
    local force=0 name ref old_id new_id started elapsed size
    local -a names=()
    while (($#)); do
        case "$1" in
            -f | --force) force=1 ;;
            -h | --help)
                usage
                return 0
                ;;
            -*)
                usage >&2
                die "unknown option $1"
                ;;
            *)
                [[ " ${ALL_IMAGES[*]} " == *" $1 "* ]] ||
                    die "unknown image '$1' (known: ${ALL_IMAGES[*]})"
                names+=("$1")
                ;;
        esac
        shift
    done
    ((${#names[@]})) || names=("${ALL_IMAGES[@]}")

    step="checking the Docker engine"
    command -v docker >/dev/null || die "the docker command is not installed"
    docker info >/dev/null 2>&1 ||
        die "the Docker engine is not reachable (is dockerd running? is DOCKER_HOST right?)"

    for name in "${names[@]}"; do
        ref=$(image_ref "$name")
        old_id=$(image_id "$ref")
        if [[ -n "$old_id" ]] && ((!force)); then
            log "$ref exists, skipping (use --force to rebuild)"
            continue
        fi
        log "building $ref"
        started=$EPOCHREALTIME
        "build_$name" "$ref"
        elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
        step="$name: tidying up"
        new_id=$(image_id "$ref")
        [[ -n "$new_id" ]] || die "$ref was not created"
        # The image replaced by --force: remove it unless something still uses it.
        if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
            docker image rm "$old_id" >/dev/null 2>&1 || true
        fi
        size=$(docker image inspect --format '{{.Size}}' "$ref" | awk '{ printf "%.1f", $1 / 1e6 }')
        log "built $ref in ${elapsed}s (${size} MB)"
        cleanup
        tmp_dirs=()
        step=""
    done
}

main "$@"
