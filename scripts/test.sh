#!/usr/bin/env bash
# Runs the default test suite (not slow, not edgetpu) plus the Python 3.7 syntax check of app/.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/vermin -t=3.7- --violations --no-tips app/
if [[ $# -eq 0 ]]; then set -- -m "not slow and not edgetpu"; fi
.venv/bin/python -m pytest "$@"
