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
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating virtualenv .venv"
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: done ($(.venv/bin/python --version), sipp $(sipp -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1))"
