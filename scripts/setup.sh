#!/usr/bin/env bash
# Set up everything ng911 and its tests need on a fresh Debian machine, root or not:
# the Debian packages the tests use (installed only when missing), a virtualenv in .venv,
# and the package with its test extras. Idempotent: a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
# PostgreSQL binaries: tests use the server at 127.0.0.1:5432 when one answers, else start a
# throwaway cluster with initdb/pg_ctl from Debian's postgresql package.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# Kamailio: the cluster's front (deploy/kamailio/kamailio.cfg), run by tests/integration/cluster.
# It lives in /usr/sbin, which a non-root PATH may lack.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
# openssl: scripts/make-test-certs.sh makes the TLS tests' certificates with it.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
    # Debian's own kamailio.service (its sample config on port 5060, node1's port) is not ours:
    # the front runs as ng911-kamailio.service (deploy/systemd/). Stop the stock one we just
    # installed, where systemd runs at all.
    if [[ " ${need[*]} " == *" kamailio "* ]] && [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now kamailio.service >/dev/null 2>&1 || true
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating virtualenv .venv"
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
kamailio_bin="$(command -v kamailio || echo /usr/sbin/kamailio)"
echo "setup: done ($(.venv/bin/python --version), sipp $(sipp -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1)," \
     "kamailio $("$kamailio_bin" -v 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1))"
