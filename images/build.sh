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
readonly BUSYBOX=${BUSYBOX:-/bin/busybox}
readonly LIB_NAME=build.sh
# shellcheck source=images/lib.sh
source "$IMAGES_DIR/lib.sh"

# Packages of the vncapp root file system (their dependencies come along).
# noVNC's static files are taken from the novnc package separately: installing
# it would pull in nodejs and OpenStack libraries the image does not use.
readonly VNCAPP_PACKAGES=(
    tigervnc-standalone-server # Xvnc
    python3-websockify         # WebSocket relay and web server
    x11-apps                   # xclock
    xterm                      # a terminal that shows what is typed
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

usage() {
    cat <<EOF
Usage: $0 [--force] [IMAGE...]

Build the demo application images (default: ${ALL_IMAGES[*]}).
Images that already exist are skipped unless --force is given.
EOF
}

install_traps

image_ref() {
    echo "$REPOSITORY/$1:latest"
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

build_vncapp() {
    local ref=$1 missing pruned pkg path icon
    debian_rootfs vncapp "${VNCAPP_PACKAGES[@]}"

    step="vncapp: adding noVNC"
    logged in_root sh -c 'cd /tmp && apt-get download novnc &&
        dpkg-deb --fsys-tarfile novnc_*.deb | tar -x -C / ./usr/share/novnc &&
        rm -f novnc_*.deb'
    [[ -f "$rootfs/usr/share/novnc/vnc.html" ]] || die "noVNC's vnc.html is missing"

    step="vncapp: configuring"
    logged in_root useradd --create-home --uid 1000 --user-group --shell /bin/bash app
    install -d -m 1777 "$rootfs/tmp/.X11-unix" "$rootfs/tmp/.ICE-unix"
    install -m 0755 "$IMAGES_DIR/vncapp/start-vncapp" "$rootfs/usr/local/bin/start-vncapp"
    rootfs_reset_host_files

    step="vncapp: slimming"
    rootfs_clean
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
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian
    # Keep the licences (copyright files), drop the rest of the documentation.
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete

    step="vncapp: checking the root file system"
    missing=$(in_root sh -c 'ldd /usr/bin/Xvnc /usr/bin/xclock /usr/bin/xterm /usr/bin/xkbcomp' | grep 'not found' || true)
    [[ -z "$missing" ]] || die "pruning removed libraries still in use: $missing"
    in_root python3 -c 'import websockify.websocketproxy' ||
        die "websockify cannot be imported"

    step="vncapp: docker import"
    icon=$(icon_base64 vncapp)
    rootfs_import "$ref" \
        --change "LABEL $NS.ui_name=\"Demo desktop (xclock)\"" \
        --change "LABEL $NS.description=\"A minimal X11 desktop in the browser: xclock and an xterm on TigerVNC's Xvnc, shown with noVNC.\"" \
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
        --message "SimPhoNy-Remote demo desktop ($DEBIAN_SUITE)"
}

# --- main ---------------------------------------------------------------------

main() {
    local force=0 name ref old_id started
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

    require_docker

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
        step="$name: tidying up"
        # The image replaced by --force is removed unless something still uses it.
        report_built "$ref" "$old_id" "$started"
        cleanup
        step=""
    done
}

main "$@"
