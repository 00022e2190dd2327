"""Build the Blender extension zips: `python build.py [--blender 4.2-5.0|5.1+] [--platform linux-x64 ...]
[--torch-variant cpu|cuda]`.

An extension's wheels are built for one Python, and Blender changed its Python: 4.2 to 5.0 run 3.11,
5.1 and later run 3.13. So there is one zip per Blender line and platform, and each zip's manifest
keeps it off the other line (`blender_version_min` / `blender_version_max`).

1. Downloads each platform's wheels (torch, mediapipe, OpenCV, ... and their dependencies)
   with `pip download --only-binary=:all: --platform ... --python-version 3.11|3.13` into
   wheels/PYTHON-PLATFORM-VARIANT/. numpy is left out: Blender bundles it (and its version must stay
   the one Blender ships).
2. Stages the extension in build/extension/: the Blender side (synctalk_blender/*) at the root, the
   engine package beside it (the extension runs `python -m engine` from its own folder), the
   wheels, and a copy of blender_manifest.toml with the platforms, the Blender versions and the
   wheel list written in.
3. Validates and zips it with the line's own Blender tool (blender_ext.py, shipped in the bpy wheel:
   no Blender binary needed; bpy 5.0.1 in .venv for 4.2-5.0, bpy 5.3.0 in .venv-bpy53 for 5.1+),
   one zip per platform, into dist/.

`--no-wheels` skips step 1 (a small zip for a machine that already has the dependencies, and for
tests).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker

ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BlenderLine:
    """Blender versions that share one Python, and so one set of wheels."""
    name: str
    python: str             # the Python those Blenders run (pip's --python-version)
    version_min: str
    version_max: str | None  # the first Blender version it refuses (exclusive), None: open-ended
    venv: str               # the venv holding this line's bpy, whose blender_ext.py validates the zip

    @property
    def tag(self) -> str:
        """The zip name's part that says which Blender it is for."""
        return "blender" + self.name.replace("+", "-and-later")


BLENDER_LINES = {
    "4.2-5.0": BlenderLine("4.2-5.0", "3.11", "4.2.0", "5.1.0", ".venv"),
    "5.1+": BlenderLine("5.1+", "3.13", "5.1.0", None, ".venv-bpy53"),
}

# pip platform tags for each Blender platform (newest first; pip accepts any of them).
PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                  "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64",
                    "macosx_11_0_universal2", "macosx_10_9_universal2"],
}
TORCH_VERSION = "2.13.0"
# Where each torch build lives: PyPI's Linux torch is the CUDA build, its Windows and macOS ones are CPU.
TORCH = {
    ("cpu", "linux-x64"): (f"torch=={TORCH_VERSION}+cpu", "https://download.pytorch.org/whl/cpu"),
    ("cpu", "windows-x64"): (f"torch=={TORCH_VERSION}", None),
    ("cpu", "macos-arm64"): (f"torch=={TORCH_VERSION}", None),
    ("cuda", "linux-x64"): (f"torch=={TORCH_VERSION}", None),
    ("cuda", "windows-x64"): (f"torch=={TORCH_VERSION}+cu128", "https://download.pytorch.org/whl/cu128"),
    ("cuda", "macos-arm64"): (f"torch=={TORCH_VERSION}", None),  # no CUDA on macOS: the CPU/MPS build
}
# torch's own dependencies (those of every platform). pip evaluates environment markers for the machine
# it runs on, not for --platform, so resolving torch for Windows on Linux asks for its Linux-only CUDA
# libraries: torch is downloaded alone and these beside it. (The Linux CUDA build needs its nvidia-*
# wheels, so it is resolved with its dependencies, which is right on a Linux build machine.)
TORCH_DEPENDENCIES = ["filelock", "typing-extensions>=4.10", "sympy>=1.13.3", "networkx>=2.5.1", "jinja2",
                      "fsspec>=0.8.5"]
# Needed by the tests, the development set-up or Blender itself, not by the engine inside Blender.
NOT_SHIPPED = {"bpy", "pytest", "matplotlib", "torch", "numpy"}
BLENDER_BUNDLES = {"numpy"}


def pins(python: str) -> list[str]:
    """requirements.txt's pins for a Python version: a pin with a `python_version` marker counts only
    for the Python it names (pip would test the marker against the Python running it, not the target)."""
    found = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement, _, marker = line.split("#")[0].partition(";")
        if requirement.strip() and (not marker.strip() or Marker(marker).evaluate({"python_version": python})):
            found.append(requirement.strip())
    return found


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ]", requirement)[0].lower()


def runtime_requirements(python: str = "3.11") -> list[str]:
    """The pinned engine dependencies (torch is added per platform)."""
    return [r for r in pins(python) if _name(r) not in NOT_SHIPPED]


def numpy_pin(python: str = "3.11") -> str:
    """Resolve against the numpy Blender ships (the bpy module's, pinned in requirements.txt), though
    it is not shipped."""
    return next(r for r in pins(python) if _name(r) == "numpy")


def download_wheels(line: BlenderLine, platform: str, torch_variant: str, dest: Path,
                    torch_index: str | None = None) -> list[Path]:
    """`torch_index` overrides where the torch build is found (a mirror; "" for pip's own configuration)."""
    shutil.rmtree(dest, ignore_errors=True)   # only this run's wheels (pip's cache keeps re-downloads cheap)
    dest.mkdir(parents=True)
    torch_req, default_index = TORCH[(torch_variant, platform)]
    torch_index = default_index if torch_index is None else torch_index
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", line.python, "--implementation", "cp", "-d", str(dest)]
    for tag in PLATFORM_TAGS[platform]:
        pip += ["--platform", tag]
    print(f"build: downloading Python {line.python} wheels for {platform} ({torch_variant} torch)", flush=True)
    with_deps = (torch_variant, platform) == ("cuda", "linux-x64")
    subprocess.run(pip + [torch_req] + ([] if with_deps else ["--no-deps"])
                   + (["--extra-index-url", torch_index] if torch_index else []), check=True)
    subprocess.run(pip + [numpy_pin(line.python), *runtime_requirements(line.python), *TORCH_DEPENDENCIES],
                   check=True)
    wheels = sorted(dest.glob("*.whl"))
    return [w for w in wheels if _project(w) not in BLENDER_BUNDLES]


def _project(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def blender_ext(line: BlenderLine) -> tuple[Path, Path]:
    """The line's Python with its bpy, and Blender's extension tool from that bpy wheel."""
    python = ROOT / line.venv / "bin" / "python"
    if not python.is_file():
        sys.exit(f"build: {python} is missing (run ./setup.sh): its bpy ships the extension tool that "
                 f"checks the zips for Blender {line.name}")
    located = subprocess.run([str(python), "-c", "import importlib.util; "
                              "print(*importlib.util.find_spec('bpy').submodule_search_locations, sep='\\n')"],
                             capture_output=True, text=True)
    for location in located.stdout.splitlines():
        found = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return python, found[-1]
    sys.exit(f"build: blender_ext.py not found inside the bpy module of {python}")


def staged_manifest(platforms: list[str], wheels: list[str], line: BlenderLine = BLENDER_LINES["4.2-5.0"]) -> str:
    """The repository's manifest with the line's Blender versions, `platforms` and `wheels` written
    in (top-level keys go before the first [table])."""
    text = (ROOT / "blender_manifest.toml").read_text()
    text = re.sub(r"(?m)^(platforms|wheels|blender_version_min|blender_version_max)\s*=.*$\n?", "", text)
    table = re.search(r"(?m)^\[", text)
    lines = f'blender_version_min = "{line.version_min}"\n'
    if line.version_max:
        lines += f'blender_version_max = "{line.version_max}"\n'
    lines += f"platforms = {_toml_list(platforms)}\n"
    if wheels:
        lines += "wheels = [\n" + "".join(f'  "{w}",\n' for w in wheels) + "]\n"
    text = text[:table.start()] + lines + "\n" + text[table.start():]
    tomllib.loads(text)  # fail here, not in Blender, if the edit broke the TOML
    return text


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def stage(platforms: list[str], wheels: list[Path], staging: Path,
          line: BlenderLine = BLENDER_LINES["4.2-5.0"]) -> Path:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for item in (ROOT / "synctalk_blender").iterdir():
        if item.name.startswith((".", "__pycache__")):
            continue
        if item.is_dir():
            shutil.copytree(item, staging / item.name, ignore=ignore)
        else:
            shutil.copy2(item, staging / item.name)
    shutil.copytree(ROOT / "engine", staging / "engine", ignore=ignore)
    names = []
    if wheels:
        (staging / "wheels").mkdir()
        for wheel in wheels:
            if not (staging / "wheels" / wheel.name).exists():  # pure wheels are shared by platforms
                shutil.copy2(wheel, staging / "wheels" / wheel.name)
                names.append(f"./wheels/{wheel.name}")
    (staging / "blender_manifest.toml").write_text(staged_manifest(platforms, names, line))
    return staging


def build(platforms: list[str], torch_variant: str = "cpu", with_wheels: bool = True,
          output_dir: Path = ROOT / "dist", staging: Path = ROOT / "build" / "extension",
          torch_index: str | None = None, blender: str = "4.2-5.0") -> list[Path]:
    """The zips of one Blender line, one a platform: dist/synctalk-VERSION-PLATFORM-blenderLINE.zip."""
    line = BLENDER_LINES[blender]
    python, tool = blender_ext(line)
    wheels: list[Path] = []
    if with_wheels:
        for platform in platforms:
            wheels += download_wheels(line, platform, torch_variant,
                                      ROOT / "wheels" / f"{line.python}-{platform}-{torch_variant}", torch_index)
    stage(platforms, wheels, staging, line)
    subprocess.run([str(python), str(tool), "validate", str(staging)], check=True)
    manifest = tomllib.loads((staging / "blender_manifest.toml").read_text())
    # The tool names its zips ID-VERSION-PLATFORM.zip; each line builds into a folder of its own, then
    # the zips get the line in their names.
    raw = staging.parent / f"{staging.name}-zips"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    subprocess.run([str(python), str(tool), "build", "--source-dir", str(staging), "--output-dir", str(raw),
                    "--split-platforms"], check=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    zips = []
    for platform in platforms:
        built = raw / f"{manifest['id']}-{manifest['version']}-{platform.replace('-', '_')}.zip"
        if not built.is_file():
            sys.exit(f"build: expected {built} from blender_ext.py build")
        zips.append(built.replace(output_dir / f"{built.stem}-{line.tag}.zip"))
    shutil.rmtree(raw)
    return zips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blender", action="append", choices=list(BLENDER_LINES),
                        help="build for this Blender line only (repeatable); default: both")
    parser.add_argument("--platform", action="append", choices=list(PLATFORM_TAGS),
                        help="build for this platform only (repeatable); default: all three")
    parser.add_argument("--torch-variant", choices=["cpu", "cuda"], default="cpu",
                        help="torch build to bundle: cpu (default, smaller) or cuda (Linux and Windows)")
    parser.add_argument("--no-wheels", action="store_true",
                        help="bundle no wheels (for a Blender whose Python already has the dependencies)")
    parser.add_argument("--torch-index", default=None, metavar="URL",
                        help="where to find the torch build instead of download.pytorch.org (a mirror); "
                             "'' uses pip's own index configuration")
    parser.add_argument("-o", "--output-dir", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    for blender in args.blender or list(BLENDER_LINES):
        zips = build(args.platform or list(PLATFORM_TAGS), args.torch_variant, not args.no_wheels, args.output_dir,
                     torch_index=args.torch_index, blender=blender)
        for z in zips:
            print(f"{z}  {z.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
