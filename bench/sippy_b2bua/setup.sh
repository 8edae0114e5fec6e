#!/bin/sh
# The tools bench/bench_controller.py borrows, in a throwaway venv outside the project
# (never .venv, never pyproject): the sippy B2BUA (PyPI `sippy`, its `b2bua` console script,
# run with RADIUS off and a static route) and the py-spy sampling profiler (--profile).
#
#   bench/sippy_b2bua/setup.sh            # into /tmp/ng911-bench-tools
#   NG911_BENCH_TOOLS=/elsewhere bench/sippy_b2bua/setup.sh   # (bench_controller.py reads it too)
#   rm -rf /tmp/ng911-bench-tools         # when done
set -eu
VENV=${NG911_BENCH_TOOLS:-/tmp/ng911-bench-tools}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check sippy py-spy
"$VENV/bin/pip" list --disable-pip-version-check 2>/dev/null | grep -Ei '^(sippy|py-spy) '
