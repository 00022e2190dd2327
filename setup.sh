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
# The project itself, editable (pyproject.toml): scripts/ and the tests import `engine` from this checkout.
.venv/bin/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .

# Blender 4.5 LTS as a second bpy module in its own venv, for the tests of the extension's 4.2-4.5
# code paths (tests/test_blender_45.py): about 1 minute and 1 GB. SYNCTALK_SKIP_BPY45=1 skips it.
if [ "${SYNCTALK_SKIP_BPY45:-0}" != 1 ] && [ ! -x .venv-bpy45/bin/python ]; then
  "$python" -m venv .venv-bpy45
  .venv-bpy45/bin/python -m pip install --disable-pip-version-check -q \
    bpy==4.5.15 numpy==1.26.4 safetensors==0.8.0 pytest==9.2.0 || rm -rf .venv-bpy45
fi

# Blender 5.1 and later run Python 3.13, which these machines do not have: CPython 3.13 is built from
# Debian's source package into .python313 (a private apt configuration adds trixie's deb-src line;
# a minimal configure, no --enable-optimizations: a few minutes on 2 cores), then .venv-bpy53 holds
# bpy 5.3 for the tests of the 5.1+ zip (tests/test_blender_5x.py), and .venv-bpy51 and .venv-bpy52 the
# releases of that line before it: 5.1 (where strip timing was renamed) and 5.2 LTS. All are reused when
# present. SYNCTALK_SKIP_BPY53=1 skips them.
build_python313() {
  local work=build/python313 prefix
  prefix="$(pwd)/.python313"
  rm -rf "$work" && mkdir -p "$work/lists/partial"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$work/sources.list"
  local apt=(apt-get -qq -o "Dir::Etc::sourcelist=$(pwd)/$work/sources.list" -o Dir::Etc::sourceparts=- -o APT::Sandbox::User=root
             -o "Dir::State::Lists=$(pwd)/$work/lists")
  "${apt[@]}" update && (cd "$work" && "${apt[@]}" source --download-only python3.13) || return 1
  # The upstream tarball (Debian's patches target Debian's own layout, not a private prefix).
  tar -xf "$work"/python3.13_*.orig.tar.?z -C "$work" || return 1
  local src=("$work"/Python-3.13*/)
  (cd "${src[0]}" && ./configure -q --prefix="$prefix" && make -s -j2 && make -s install) >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; rm -rf "$prefix"; return 1; }
  rm -rf "$work"
}
if [ "${SYNCTALK_SKIP_BPY53:-0}" != 1 ] && [ ! -x .venv-bpy53/bin/python ]; then
  if [ -x .python313/bin/python3.13 ] || build_python313; then
    .python313/bin/python3.13 -m venv .venv-bpy53
    # The pins of requirements.txt for Python 3.13 (bpy 5.3.0 and its numpy 2); the engine children of
    # these tests run in .venv (torch has no CPU build for Python 3.13 on PyPI's Linux).
    .venv-bpy53/bin/python -m pip install --disable-pip-version-check -q -c requirements.txt \
      bpy numpy safetensors soundfile soxr imageio-ffmpeg pytest || rm -rf .venv-bpy53
  else
    echo "setup: could not build CPython 3.13 (see above); the Blender 5.1+ tests will be skipped" >&2
  fi
fi
for release in 5.1.2 5.2.4; do
  venv=".venv-bpy${release:0:1}${release:2:1}"
  if [ "${SYNCTALK_SKIP_BPY53:-0}" != 1 ] && [ -x .python313/bin/python3.13 ] && [ ! -x "$venv/bin/python" ]; then
    .python313/bin/python3.13 -m venv "$venv"
    grep -v '^bpy==' requirements.txt > "$venv/constraints.txt"   # the other pins for Python 3.13, this bpy
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$venv/constraints.txt" \
      "bpy==$release" numpy safetensors soundfile soxr imageio-ffmpeg pytest || rm -rf "$venv"
  fi
done
