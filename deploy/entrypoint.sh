#!/bin/bash
# Entry point of the service image. Started as root only to do what needs root, then runs
# the command (by default JupyterHub, which starts the proxy and the remoteapp service) as
# the unprivileged `remoteapp` user:
#   1. unset empty settings (compose passes unset optional variables as ""), refuse the
#      example env file's placeholder secrets;
#   2. give `remoteapp` access to the Docker socket: the socket's group id is only known at
#      run time (it is the host's), so a group with that id is created if needed and
#      `remoteapp` joins it;
#   3. hand the state folders (hub state, workspaces) to `remoteapp`;
#   4. migrate the database (`remoteappmanager db upgrade`, retried while it is starting);
#   5. exec the command through `setpriv --reuid --regid --init-groups`.
# Started as another user (docker run --user, with --group-add for the socket), it skips
# the steps that need root.
set -Eeuo pipefail

readonly APP_USER=remoteapp
readonly PLACEHOLDER=change-me
readonly DEFAULT_SOCKET=/var/run/docker.sock

say() { printf 'remoteapp-entrypoint: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

drop_empty_settings() {
    local name
    while read -r name; do
        case $name in
            REMOTEAPP_* | JUPYTERHUB_* | JPY_* | CONFIGPROXY_* | DOCKER_*)
                [[ -n ${!name} ]] || unset "$name"
                ;;
        esac
    done < <(compgen -e)
}

refuse_placeholders() {
    local name
    for name in CONFIGPROXY_AUTH_TOKEN REMOTEAPP_COOKIE_SECRET JPY_COOKIE_SECRET \
        JUPYTERHUB_CRYPT_KEY REMOTEAPP_DATABASE_URL REMOTEAPP_DEMO_PASSWORD \
        REMOTEAPP_DEMO_ADMIN_PASSWORD; do
        if [[ ${!name:-} == *"$PLACEHOLDER"* ]]; then
            die "$name still holds the example's placeholder ($PLACEHOLDER...): set a secret of your own (openssl rand -hex 32)"
        fi
    done
}

# The local socket the service will use, if it uses one.
docker_socket() {
    local host=${REMOTEAPP_DOCKER_HOST:-${DOCKER_HOST:-unix://$DEFAULT_SOCKET}}
    [[ $host == unix://* ]] && echo "${host#unix://}"
    return 0
}

join_socket_group() {
    local socket gid group
    socket=$(docker_socket)
    [[ -n $socket ]] || return 0
    if [[ ! -S $socket ]]; then
        say "warning: no Docker socket at $socket; mount the engine's (-v /var/run/docker.sock:/var/run/docker.sock)"
        return 0
    fi
    gid=$(stat -c %g "$socket")
    if id -G "$APP_USER" | tr ' ' '\n' | grep -qx "$gid"; then
        return 0
    fi
    if ((gid == 0)); then
        # The socket already gives root's power over the host; joining group 0 adds nothing
        # to that, but a dedicated group (dockerd's `docker` group) is the better set-up.
        say "warning: the Docker socket belongs to group 0; $APP_USER joins it"
    fi
    group=$(getent group "$gid" | cut -d: -f1) || true
    if [[ -z $group ]]; then
        group=docker-host
        getent group "$group" >/dev/null && group="docker-host-$gid"
        groupadd --gid "$gid" "$group"
    fi
    usermod --append --groups "$group" "$APP_USER"
    say "$APP_USER joined group $group ($gid), which owns $socket"
}

own_folder() {
    local folder=$1
    [[ -n $folder ]] || return 0
    mkdir -p "$folder"
    if [[ $(stat -c %U "$folder") != "$APP_USER" ]]; then
        chown "$APP_USER:$APP_USER" "$folder"
    fi
}

# How commands are run as the app user: through setpriv when root, as they are otherwise.
run_as=()
prepare_run_as() {
    ((EUID == 0)) || return 0
    run_as=(setpriv --reuid="$APP_USER" --regid="$APP_USER" --init-groups --
        env HOME="$(getent passwd "$APP_USER" | cut -d: -f6)" USER="$APP_USER" LOGNAME="$APP_USER")
}

# The database may still be starting (a fresh PostgreSQL initialises its cluster first).
migrate() {
    local deadline=$((SECONDS + ${REMOTEAPP_DB_WAIT:-90})) output
    until output=$("${run_as[@]}" remoteappmanager db upgrade 2>&1); do
        if ((SECONDS >= deadline)); then
            printf '%s\n' "$output" >&2
            die "the database could not be migrated (REMOTEAPP_DB_WAIT=${REMOTEAPP_DB_WAIT:-90} s)"
        fi
        say "waiting for the database: $(tail -n 1 <<<"$output")"
        sleep 2
    done
    say "$output"
}

# Only the service (alone or under JupyterHub) needs the current schema; other commands
# (remoteappdb, `remoteappmanager db ...`, a shell) run as they are.
runs_the_service() {
    [[ ${1:-} == jupyterhub || (${1:-} == remoteappmanager && $# -eq 1) ]]
}

main() {
    (($#)) || set -- jupyterhub -f /srv/remoteapp/jupyterhub_config.py
    drop_empty_settings
    refuse_placeholders
    if ((EUID == 0)); then
        join_socket_group
        own_folder "${REMOTEAPP_HUB_DATA_DIR:-}"
        own_folder "${REMOTEAPP_WORKSPACE_ROOT:-}"
    fi
    prepare_run_as
    if runs_the_service "$@"; then
        # Left by a container that was killed: its proxy is gone with it, and the hub would
        # otherwise signal whatever process now has that id.
        "${run_as[@]}" rm -f "${REMOTEAPP_HUB_DATA_DIR:-.}/jupyterhub-proxy.pid"
        migrate
    fi
    exec "${run_as[@]}" "$@"
}

main "$@"
