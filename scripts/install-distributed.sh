#!/usr/bin/env bash
# Install Debian's Redis and PostgreSQL for the distributed end-to-end test (tests/e2e/distributed):
# Redis is the Celery broker, PostgreSQL the Airflow metadata database. The test runs its own
# servers (own data folders, free ports); nothing here starts or enables a system service.
# Idempotent and quiet: does nothing when redis-server and PostgreSQL's initdb are present.
# Uses sudo when not run as root.
set -euo pipefail

have_redis() { command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; }
have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

packages=()
have_redis || packages+=(redis-server)
have_postgres || packages+=(postgresql)
if [ ${#packages[@]} -eq 0 ]; then
    echo "redis-server and postgresql already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-distributed: need root or sudo to apt-get install ${packages[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Debian's packages start their service on install; the test starts its own servers instead.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=1
fi
log=$(mktemp)
cleanup() {
    if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi
    rm -f "$log"
}
trap cleanup EXIT
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-distributed: apt-get install ${packages[*]} failed" >&2
    exit 1
fi
have_redis && have_postgres || { echo "install-distributed: ${packages[*]} did not install" >&2; exit 1; }
echo "installed: ${packages[*]}"
