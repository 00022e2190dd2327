"""ARKit blendshape names -> a rig's shape-key names.

Rules (the Names setting):
  AUTO    the exact ARKit name, else the first preset (mapping_presets.BUILTIN) whose names the rig
          has, each matched ignoring spelling: case, `_`/`.`/`-`/spaces (eye_blink_left, EyeBlinkLeft),
          a side suffix (eyeBlink_L, Eye_Blink.R), a prefix ("Face.", "CC_", Character Creator's
          numbered "A01_") and an extra prefix the user types (e.g. "Genesis8_").
  ARKIT   exact ARKit names only.
  a preset id, or a table {ARKit name: [shape-key names]} (the panel's mapping table, a user preset).
One ARKit curve may key several shape keys (CC4's Brow_Raise_Inner_L and _R for browInnerUp); a shape
key named for several curves (VRoid's Fcl_MTH_Joy for both smiles) gets their mean.
Names with no shape key are reported, never dropped silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .mapping_presets import BUILTIN

PRESETS = (
    ("AUTO", "Automatic", "Exact ARKit names, then every preset's names, ignoring case, separators, "
                          "side suffixes and prefixes"),
    *((key, label, description) for key, (label, description, _) in BUILTIN.items()),
    ("TABLE", "Mapping Table", "The table below, as you edited it"),
)
# AUTO tries these (Ready Player Me and Rokoko use the ARKit names, so ARKIT covers them).
_AUTO_ORDER = ("ARKIT", "FACECAP", "CC3", "CC4", "VROID", "METAHUMAN")

_SIDE_SUFFIX = re.compile(r"(?:[_.\- ]|(?<=[a-z]))(L|R|Left|Right|left|right|LEFT|RIGHT)$")
_KNOWN_PREFIX = re.compile(r"^(?:face[._ ]|head[._ ]|cc[._ ]|a\d\d[._ ]|bs[._ ]|blendshape\d*[._ ]|arkit[._ ])+",
                           re.IGNORECASE)


def _canonical(name: str, extra_prefix: str = "") -> str:
    """A spelling-free key: 'Face.Eye_Blink_L' and 'eyeBlinkLeft' both become 'eyeblinkleft'."""
    if extra_prefix and name.startswith(extra_prefix):
        name = name[len(extra_prefix):]
    name = _KNOWN_PREFIX.sub("", name)
    side = ""
    match = _SIDE_SUFFIX.search(name)
    # A bare 'L'/'R' needs a separator or a lowercase letter before it ("eyeBlinkL" / "blink_L").
    if match:
        side = "left" if match.group(1)[0] in "Ll" else "right"
        name = name[:match.start()]
    return re.sub(r"[^0-9a-z]", "", name.lower()) + side


@dataclass
class Mapping:
    targets: dict          # ARKit name -> [shape-key names]
    missing: list          # ARKit names with no shape key

    def shapes(self) -> dict:
        """Shape-key name -> the ARKit names that drive it (usually one)."""
        out: dict[str, list[str]] = {}
        for arkit, shapes in self.targets.items():
            for shape in shapes:
                out.setdefault(shape, []).append(arkit)
        return out

    def report(self) -> str:
        total = len(self.targets) + len(self.missing)
        text = f"{len(self.targets)} of {total} ARKit curves keyed on {len(self.shapes())} shape keys"
        return text + (f"; {len(self.missing)} with no shape key" if self.missing else "")


def map_names(arkit_names, shape_keys, preset: str = "AUTO", extra_prefix: str = "",
              table: dict | None = None) -> Mapping:
    """Match each ARKit name to `shape_keys` (the rig's shape-key names) by `preset`, or by `table`."""
    keys = list(shape_keys)
    exact = set(keys)
    by_canonical: dict[str, str] = {}
    for key in keys:
        by_canonical.setdefault(_canonical(key, extra_prefix), key)
    strict = table is None and preset == "ARKIT"
    if table is not None:
        tables = [table]
    elif preset == "AUTO":
        tables = [BUILTIN[p][2] for p in _AUTO_ORDER]
    elif preset in BUILTIN:
        tables = [BUILTIN[preset][2]]
    else:
        raise ValueError(f"unknown mapping preset {preset!r}")

    def find(name):
        if name in exact:
            return name
        return None if strict else by_canonical.get(_canonical(name))

    targets, missing = {}, []
    for arkit in arkit_names:
        found = []
        for rules in tables:
            found = list(dict.fromkeys(k for k in map(find, rules.get(arkit, ())) if k))
            if found:
                break
        if found:
            targets[arkit] = found
        else:
            missing.append(arkit)
    return Mapping(targets, missing)
