"""Name presets: for each ARKit curve, the shape keys a rig family gives it.

A preset is {ARKit name: (shape-key name, ...)}: several names key one curve onto several shape keys
(Character Creator 4 Extended's Brow_Raise_Inner_L and _R both take browInnerUp); an ARKit name left
out has no counterpart in that family. Names are matched to a rig's shape keys ignoring spelling
(case, separators, side suffixes, known prefixes: see mapping.py), so one preset covers a family's
exports. Sources of the names: Apple's ARKit list; Face Cap's and iFacialMocap's `_L`/`_R` names;
Ready Player Me and Rokoko (ARKit names); Reallusion's profiles as listed by the CC tools for Unity
(CC3+ `A01_Brow_Inner_Up` ... `A52_Tongue_Out`, CC4 Extended `Brow_Raise_Inner_L` ...); VRoid
Studio's `Fcl_*` expressions; MetaHuman's `CTRL_expressions_*` face-rig curves.

User presets are JSON files ({"name": ..., "targets": {ARKit: [names]}}) in a folder the caller gives.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .jobs import import_engine

import_engine()   # installed as an extension, the engine package sits in the extension's folder
from engine.arkit import ARKIT_NAMES  # noqa: E402


def _side(name: str, left: str, right: str) -> str:
    return name.replace("Left", left).replace("Right", right)


def _identity() -> dict:
    return {name: (name,) for name in ARKIT_NAMES}


def _face_cap() -> dict:
    # Face Cap (and iFacialMocap) export the ARKit shapes with _L/_R for Left/Right: eyeBlink_L.
    return {name: (_side(name, "_L", "_R"),) for name in ARKIT_NAMES}


def _cc3_plus() -> dict:
    # Character Creator 3+ (ExPlus): the 52 ARKit shapes numbered in ARKit's documentation order.
    order = ("browInnerUp browDownLeft browDownRight browOuterUpLeft browOuterUpRight eyeLookUpLeft eyeLookUpRight "
             "eyeLookDownLeft eyeLookDownRight eyeLookOutLeft eyeLookInLeft eyeLookInRight eyeLookOutRight eyeBlinkLeft "
             "eyeBlinkRight eyeSquintLeft eyeSquintRight eyeWideLeft eyeWideRight cheekPuff cheekSquintLeft "
             "cheekSquintRight noseSneerLeft noseSneerRight jawOpen jawForward jawLeft jawRight mouthFunnel mouthPucker "
             "mouthLeft mouthRight mouthRollUpper mouthRollLower mouthShrugUpper mouthShrugLower mouthClose "
             "mouthSmileLeft mouthSmileRight mouthFrownLeft mouthFrownRight mouthDimpleLeft mouthDimpleRight "
             "mouthUpperUpLeft mouthUpperUpRight mouthLowerDownLeft mouthLowerDownRight mouthPressLeft mouthPressRight "
             "mouthStretchLeft mouthStretchRight tongueOut").split()
    words = lambda n: "_".join(w.capitalize() for w in re.findall(r"[a-z]+|[A-Z][a-z]*", n))  # noqa: E731
    return {name: (f"A{i:02d}_{words(name)}",) for i, name in enumerate(order, start=1)}


def _lr(stem: str) -> tuple:
    return (f"{stem}_L", f"{stem}_R")


def _cc4_extended() -> dict:
    # Character Creator 4 Extended profile: its own vocabulary, several shapes per ARKit curve.
    table = {
        "browDownLeft": "Brow_Drop_L", "browDownRight": "Brow_Drop_R", "browInnerUp": _lr("Brow_Raise_Inner"),
        "browOuterUpLeft": "Brow_Raise_Outer_L", "browOuterUpRight": "Brow_Raise_Outer_R",
        "cheekPuff": _lr("Cheek_Puff"), "cheekSquintLeft": "Cheek_Raise_L", "cheekSquintRight": "Cheek_Raise_R",
        "eyeBlinkLeft": "Eye_Blink_L", "eyeBlinkRight": "Eye_Blink_R",
        "eyeLookDownLeft": "Eye_L_Look_Down", "eyeLookDownRight": "Eye_R_Look_Down",
        "eyeLookInLeft": "Eye_L_Look_R", "eyeLookInRight": "Eye_R_Look_L",
        "eyeLookOutLeft": "Eye_L_Look_L", "eyeLookOutRight": "Eye_R_Look_R",
        "eyeLookUpLeft": "Eye_L_Look_Up", "eyeLookUpRight": "Eye_R_Look_Up",
        "eyeSquintLeft": "Eye_Squint_L", "eyeSquintRight": "Eye_Squint_R",
        "eyeWideLeft": "Eye_Wide_L", "eyeWideRight": "Eye_Wide_R",
        "jawForward": "Jaw_Forward", "jawLeft": "Jaw_L", "jawRight": "Jaw_R", "jawOpen": "Jaw_Open",
        "mouthClose": "Mouth_Close", "mouthDimpleLeft": "Mouth_Dimple_L", "mouthDimpleRight": "Mouth_Dimple_R",
        "mouthFrownLeft": "Mouth_Frown_L", "mouthFrownRight": "Mouth_Frown_R",
        "mouthFunnel": _lr("Mouth_Funnel_Up") + _lr("Mouth_Funnel_Down"),
        "mouthPucker": _lr("Mouth_Pucker_Up") + _lr("Mouth_Pucker_Down"),
        "mouthLeft": "Mouth_L", "mouthRight": "Mouth_R",
        "mouthLowerDownLeft": "Mouth_Down_Lower_L", "mouthLowerDownRight": "Mouth_Down_Lower_R",
        "mouthUpperUpLeft": "Mouth_Up_Upper_L", "mouthUpperUpRight": "Mouth_Up_Upper_R",
        "mouthPressLeft": "Mouth_Press_L", "mouthPressRight": "Mouth_Press_R",
        "mouthRollLower": _lr("Mouth_Roll_In_Lower"), "mouthRollUpper": _lr("Mouth_Roll_In_Upper"),
        "mouthShrugLower": "Mouth_Shrug_Lower", "mouthShrugUpper": "Mouth_Shrug_Upper",
        "mouthSmileLeft": "Mouth_Smile_L", "mouthSmileRight": "Mouth_Smile_R",
        "mouthStretchLeft": "Mouth_Stretch_L", "mouthStretchRight": "Mouth_Stretch_R",
        "noseSneerLeft": "Nose_Sneer_L", "noseSneerRight": "Nose_Sneer_R", "tongueOut": "Tongue_Out",
    }
    return {k: (v,) if isinstance(v, str) else v for k, v in table.items()}


def _vroid() -> dict:
    # VRoid Studio / VRM models have a few whole-face expressions, not ARKit shapes: the nearest one
    # for each curve that has one. A shape named by both sides (Fcl_MTH_Joy for the left and the right
    # smile) is driven by their mean.
    table = {
        "eyeBlinkLeft": "Fcl_EYE_Close_L", "eyeBlinkRight": "Fcl_EYE_Close_R",
        "eyeSquintLeft": "Fcl_EYE_Joy_L", "eyeSquintRight": "Fcl_EYE_Joy_R",
        "eyeWideLeft": "Fcl_EYE_Surprised", "eyeWideRight": "Fcl_EYE_Surprised",
        "browInnerUp": "Fcl_BRW_Sorrow", "browDownLeft": "Fcl_BRW_Angry", "browDownRight": "Fcl_BRW_Angry",
        "browOuterUpLeft": "Fcl_BRW_Surprised", "browOuterUpRight": "Fcl_BRW_Surprised",
        "jawOpen": "Fcl_MTH_A", "mouthFunnel": "Fcl_MTH_O", "mouthPucker": "Fcl_MTH_U", "mouthClose": "Fcl_MTH_Close",
        "mouthStretchLeft": "Fcl_MTH_I", "mouthStretchRight": "Fcl_MTH_I",
        "mouthSmileLeft": "Fcl_MTH_Joy", "mouthSmileRight": "Fcl_MTH_Joy",
        "mouthFrownLeft": "Fcl_MTH_Sorrow", "mouthFrownRight": "Fcl_MTH_Sorrow",
        "mouthUpperUpLeft": "Fcl_MTH_Up", "mouthUpperUpRight": "Fcl_MTH_Up",
        "mouthLowerDownLeft": "Fcl_MTH_Down", "mouthLowerDownRight": "Fcl_MTH_Down",
    }
    return {k: (v,) for k, v in table.items()}


def _metahuman() -> dict:
    # MetaHuman's face-rig curves (CTRL_expressions_*), as rigs built to MetaHuman's scheme name them.
    quad = lambda stem: tuple(f"CTRL_expressions_{stem}{p}" for p in ("UL", "UR", "DL", "DR"))  # noqa: E731
    table = {
        "browDownLeft": "browDownL", "browDownRight": "browDownR", "browInnerUp": ("browRaiseInL", "browRaiseInR"),
        "browOuterUpLeft": "browRaiseOuterL", "browOuterUpRight": "browRaiseOuterR",
        "eyeBlinkLeft": "eyeBlinkL", "eyeBlinkRight": "eyeBlinkR",
        "eyeLookUpLeft": "eyeLookUpL", "eyeLookUpRight": "eyeLookUpR",
        "eyeLookDownLeft": "eyeLookDownL", "eyeLookDownRight": "eyeLookDownR",
        "eyeLookOutLeft": "eyeLookLeftL", "eyeLookInLeft": "eyeLookRightL",
        "eyeLookInRight": "eyeLookLeftR", "eyeLookOutRight": "eyeLookRightR",
        "eyeSquintLeft": "eyeSquintInnerL", "eyeSquintRight": "eyeSquintInnerR",
        "eyeWideLeft": "eyeWidenL", "eyeWideRight": "eyeWidenR",
        "cheekSquintLeft": "eyeCheekRaiseL", "cheekSquintRight": "eyeCheekRaiseR",
        "cheekPuff": ("mouthCheekBlowL", "mouthCheekBlowR"),
        "noseSneerLeft": "noseWrinkleL", "noseSneerRight": "noseWrinkleR",
        "jawOpen": "jawOpen", "jawForward": "jawFwd", "jawLeft": "jawLeft", "jawRight": "jawRight",
        "mouthLeft": "mouthLeft", "mouthRight": "mouthRight",
        "mouthRollUpper": ("mouthUpperLipRollInL", "mouthUpperLipRollInR"),
        "mouthRollLower": ("mouthLowerLipRollInL", "mouthLowerLipRollInR"),
        "mouthShrugUpper": ("mouthUpperLipRollOutL", "mouthUpperLipRollOutR"),
        "mouthShrugLower": ("mouthLowerLipRollOutL", "mouthLowerLipRollOutR"),
        "mouthDimpleLeft": "mouthDimpleL", "mouthDimpleRight": "mouthDimpleR",
        "mouthSmileLeft": "mouthCornerPullL", "mouthSmileRight": "mouthCornerPullR",
        "mouthFrownLeft": "mouthCornerDepressL", "mouthFrownRight": "mouthCornerDepressR",
        "mouthUpperUpLeft": "mouthUpperLipRaiseL", "mouthUpperUpRight": "mouthUpperLipRaiseR",
        "mouthLowerDownLeft": "mouthLowerLipDepressL", "mouthLowerDownRight": "mouthLowerLipDepressR",
        "mouthPressLeft": ("mouthPressUL", "mouthPressDL"), "mouthPressRight": ("mouthPressUR", "mouthPressDR"),
        "mouthStretchLeft": "mouthStretchL", "mouthStretchRight": "mouthStretchR",
        "tongueOut": "tongueOut",
    }
    out = {k: tuple(f"CTRL_expressions_{n}" for n in ((v,) if isinstance(v, str) else v)) for k, v in table.items()}
    out["mouthFunnel"] = quad("mouthFunnel")
    out["mouthPucker"] = quad("mouthLipsPurse")
    out["mouthClose"] = quad("mouthLipsTogether")
    return out


# id -> (label, description, table). "AUTO" (mapping.py) tries every one of these in this order.
BUILTIN = {
    "ARKIT": ("ARKit", "Apple's ARKit names (Faceit, Live Link Face rigs)", _identity()),
    "FACECAP": ("Face Cap", "Face Cap / iFacialMocap: eyeBlink_L, mouthSmile_R...", _face_cap()),
    "RPM": ("Ready Player Me", "Ready Player Me avatars with ARKit morph targets", _identity()),
    "ROKOKO": ("Rokoko", "Rokoko Face Capture / Studio Live (ARKit names)", _identity()),
    "CC3": ("Character Creator 3+", "CC3+ ARKit profile: A01_Brow_Inner_Up ... A52_Tongue_Out", _cc3_plus()),
    "CC4": ("Character Creator 4 Extended", "CC4 Extended: Brow_Raise_Inner_L, Cheek_Raise_L, Mouth_Up_Upper_L...",
            _cc4_extended()),
    "VROID": ("VRoid / VRM", "VRoid Studio's Fcl_* expressions (the nearest one per curve; about half of ARKit)",
              _vroid()),
    "METAHUMAN": ("MetaHuman-style", "MetaHuman face-rig curves: CTRL_expressions_jawOpen, ..._browRaiseInL",
                  _metahuman()),
}


def user_presets(folder: Path) -> dict:
    """{file stem: (label, description, table)} for the JSON presets in `folder` (unreadable ones skipped)."""
    found = {}
    for path in sorted(Path(folder).glob("*.json")) if folder and Path(folder).is_dir() else ():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            table = {k: tuple(v) for k, v in data["targets"].items() if k in ARKIT_NAMES}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        found[path.stem] = (data.get("name", path.stem), f"Your preset ({path.name})", table)
    return found


def save_user_preset(folder: Path, name: str, table: dict) -> Path:
    """Write `table` ({ARKit: [names]}) as a user preset, atomically; returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w-]+", "_", name).strip("_") or "preset"
    path = folder / f"{stem}.json"
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps({"name": name, "targets": {k: list(v) for k, v in table.items() if v}}, indent=1),
                   encoding="utf-8")
    os.replace(tmp, path)
    return path
