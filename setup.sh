#!/usr/bin/env bash
# Installs everything the engine, the Blender extension and the tests need into ./.venv.
# Needs Python 3.11 (Blender's Python). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# bpy (Blender as a Python module) needs the system's X11 and GL libraries, even headless.
libs=(libx11-6 libxrender1 libxfixes3 libxi6 libxkbcommon0 libsm6 libice6 libgl1 libxext6 libxcb1)
missing=()
for lib in "${libs[@]}"; do
  dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "setup: please install these system packages first: ${missing[*]}" >&2
    exit 1
  fi
fi

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is needed (bpy 5.0.1 is built for it); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch==2.13.0: on a machine without a GPU, point pip at a CPU build (the project's machines
# keep one in their local wheel folder); the CUDA build works too but is several GB.
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt

# Blender 4.5 LTS as a second bpy module in its own venv, for the tests of the extension's 4.2-4.5
# code paths (tests/test_blender_45.py): about 1 minute and 1 GB. SYNCTALK_SKIP_BPY45=1 skips it.
if [ "${SYNCTALK_SKIP_BPY45:-0}" != 1 ] && [ ! -x .venv-bpy45/bin/python ]; then
  "$python" -m venv .venv-bpy45
  .venv-bpy45/bin/python -m pip install --disable-pip-version-check -q \
    bpy==4.5.15 numpy==1.26.4 safetensors==0.8.0 pytest==9.2.0 || rm -rf .venv-bpy45
fi
