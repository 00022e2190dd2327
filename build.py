"""Build the Blender extension zips: `python build.py [--platform linux-x64 ...] [--torch-variant cpu|cuda]`.

1. Downloads each platform's wheels (torch, mediapipe, OpenCV, librosa, ... and their dependencies)
   with `pip download --only-binary=:all: --platform ... --python-version 3.11` into wheels/PLATFORM/.
   numpy is left out: Blender bundles it (and its version must stay the one Blender ships).
2. Stages the extension in build/extension/: the Blender side (synctalk_blender/*) at the root, the
   engine package beside it (the extension runs `python -m engine` from its own folder), the
   wheels, and a copy of blender_manifest.toml with the platforms and the wheel list written in.
3. Validates and zips it with Blender's own tool (blender_ext.py, shipped in the bpy wheel: no
   Blender binary needed), one zip per platform (--split-platforms), into dist/.

`--no-wheels` skips step 1 (a small zip for a machine that already has the dependencies, and for
tests).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PYTHON_VERSION = "3.11"  # Blender 4.2 to 5.0 ship Python 3.11

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


def runtime_requirements() -> list[str]:
    """The pinned engine dependencies from requirements.txt (torch is added per platform)."""
    reqs = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and re.split(r"[=<>!~\[ ]", line)[0].lower() not in NOT_SHIPPED:
            reqs.append(line)
    return reqs


def numpy_pin() -> str:
    """Resolve against the numpy Blender ships (the pin in requirements.txt), though it is not shipped."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip().startswith("numpy"):
            return line.strip()
    return "numpy<2"


def download_wheels(platform: str, torch_variant: str, dest: Path, torch_index: str | None = None) -> list[Path]:
    """`torch_index` overrides where the torch build is found (a mirror; "" for pip's own configuration)."""
    shutil.rmtree(dest, ignore_errors=True)   # only this run's wheels (pip's cache keeps re-downloads cheap)
    dest.mkdir(parents=True)
    torch_req, default_index = TORCH[(torch_variant, platform)]
    torch_index = default_index if torch_index is None else torch_index
    pip = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--implementation", "cp", "-d", str(dest)]
    for tag in PLATFORM_TAGS[platform]:
        pip += ["--platform", tag]
    print(f"build: downloading wheels for {platform} ({torch_variant} torch)", flush=True)
    with_deps = (torch_variant, platform) == ("cuda", "linux-x64")
    subprocess.run(pip + [torch_req] + ([] if with_deps else ["--no-deps"])
                   + (["--extra-index-url", torch_index] if torch_index else []), check=True)
    subprocess.run(pip + [numpy_pin(), *runtime_requirements(), *TORCH_DEPENDENCIES], check=True)
    wheels = sorted(dest.glob("*.whl"))
    return [w for w in wheels if _project(w) not in BLENDER_BUNDLES]


def _project(wheel: Path) -> str:
    return wheel.name.split("-")[0].lower().replace("_", "-")


def blender_ext() -> Path:
    """Blender's extension tool, from the installed bpy wheel."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("build: the bpy module is not installed (run ./setup.sh); it ships Blender's extension tool")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    sys.exit("build: blender_ext.py not found inside the bpy module")


def staged_manifest(platforms: list[str], wheels: list[str]) -> str:
    """The repository's manifest with `platforms` and `wheels` written in (top-level keys go
    before the first [table])."""
    text = (ROOT / "blender_manifest.toml").read_text()
    text = re.sub(r"(?m)^(platforms|wheels)\s*=.*$\n?", "", text)
    table = re.search(r"(?m)^\[", text)
    lines = f"platforms = {_toml_list(platforms)}\n"
    if wheels:
        lines += "wheels = [\n" + "".join(f'  "{w}",\n' for w in wheels) + "]\n"
    text = text[:table.start()] + lines + "\n" + text[table.start():]
    tomllib.loads(text)  # fail here, not in Blender, if the edit broke the TOML
    return text


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def stage(platforms: list[str], wheels: list[Path], staging: Path) -> Path:
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
    (staging / "blender_manifest.toml").write_text(staged_manifest(platforms, names))
    return staging


def run_tool(*args: str) -> None:
    subprocess.run([sys.executable, str(blender_ext()), *args], check=True)


def build(platforms: list[str], torch_variant: str = "cpu", with_wheels: bool = True,
          output_dir: Path = ROOT / "dist", staging: Path = ROOT / "build" / "extension",
          torch_index: str | None = None) -> list[Path]:
    wheels: list[Path] = []
    if with_wheels:
        for platform in platforms:
            wheels += download_wheels(platform, torch_variant, ROOT / "wheels" / f"{platform}-{torch_variant}",
                                      torch_index)
    stage(platforms, wheels, staging)
    run_tool("validate", str(staging))
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = tomllib.loads((staging / "blender_manifest.toml").read_text())
    for old in output_dir.glob(f"{manifest['id']}-{manifest['version']}-*.zip"):
        old.unlink()
    run_tool("build", "--source-dir", str(staging), "--output-dir", str(output_dir), "--split-platforms")
    zips = [output_dir / f"{manifest['id']}-{manifest['version']}-{p.replace('-', '_')}.zip" for p in platforms]
    missing = [z for z in zips if not z.is_file()]
    if missing:
        sys.exit(f"build: expected {', '.join(map(str, missing))} from blender_ext.py build")
    return zips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    zips = build(args.platform or list(PLATFORM_TAGS), args.torch_variant, not args.no_wheels, args.output_dir,
                 torch_index=args.torch_index)
    for z in zips:
        print(f"{z}  {z.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
