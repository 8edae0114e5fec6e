#!/usr/bin/env bash
# Run the whole test suite (unit + integration with real SIPp and ng911 processes).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
