#!/usr/bin/env bash
# Creates .venv/ with everything edgedet needs (training, device and test extras). Idempotent:
# a stamp keyed on setup.py skips the pip step when nothing changed. With --system it also
# installs the Debian packages the tests use (Xvfb, screenshots, headless Chromium,
# systemd-analyze, the mosquitto broker of the MQTT tests).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, each checked by its package, not by a command name on PATH
# (a machine can have an unrelated program of the same name, as one here has a `convert`).
TEST_PACKAGES=(xvfb x11-apps chromium systemd mosquitto)
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

if [[ "${1:-}" == "--system" ]]; then
  need=()
  for pkg in "${TEST_PACKAGES[@]}"; do installed "$pkg" || need+=("$pkg"); done
  if (( ${#need[@]} )); then
    echo "setup: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
stamp=.venv/.edgedet-setup
want=$(cat setup.py scripts/setup.sh | sha256sum | cut -c1-16)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[train,device,dev]"
  # tf-models-official pulls in opencv-python-headless, which installs the same cv2 module as
  # opencv-python. Reinstall the GUI build last so the preview window works.
  ver=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('opencv-python'))")
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "opencv-python==$ver"
  .venv/bin/python -c "import cv2, sys; sys.exit(0 if 'QT' in cv2.getBuildInformation().split('GUI:')[1][:300] or 'GTK' in cv2.getBuildInformation().split('GUI:')[1][:300] else 'setup: cv2 has no GUI backend')"
  echo "$want" > "$stamp"
fi
