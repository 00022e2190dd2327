"""ARKit blendshape names -> a rig's shape-key names.

Presets:
  ARKIT   exact ARKit names (Apple's list; also Ready Player Me avatars exported with the ARKit
          morph targets, VRoid/VRM models given ARKit blendshapes, Faceit rigs)
  AUTO    exact names first, then names that differ only in spelling: case, `_`/`.`/`-`/spaces
          (eye_blink_left, EyeBlinkLeft), a side suffix (eyeBlink_L, Eye_Blink.R), a prefix
          ("Face.", "CC_", Character Creator's numbered "A01_Brow_Inner_Up") and an extra prefix
          the user types (e.g. "Genesis8_").
Names with no shape key are reported, never dropped silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PRESETS = (
    ("AUTO", "Automatic", "Exact ARKit names, then case, separators, side suffixes and prefixes ignored"),
    ("ARKIT", "ARKit names only", "Shape keys named exactly as ARKit (Ready Player Me, VRoid ARKit, Faceit)"),
)

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
    targets: dict          # ARKit name -> shape-key name
    missing: list          # ARKit names with no shape key

    def report(self) -> str:
        if not self.missing:
            return f"all {len(self.targets)} ARKit shapes found"
        return f"{len(self.targets)} of 52 ARKit shapes keyed; no shape key for: {', '.join(self.missing)}"


def map_names(arkit_names, shape_keys, preset: str = "AUTO", extra_prefix: str = "") -> Mapping:
    """Match each ARKit name to one of `shape_keys` (the rig's shape-key names, Basis included)."""
    keys = [k for k in shape_keys]
    exact = set(keys)
    by_canonical: dict[str, str] = {}
    if preset == "AUTO":
        for key in keys:
            by_canonical.setdefault(_canonical(key, extra_prefix), key)
    elif preset != "ARKIT":
        raise ValueError(f"unknown mapping preset {preset!r}")
    targets, missing = {}, []
    used = set()
    for name in arkit_names:
        key = name if name in exact else by_canonical.get(_canonical(name)) if by_canonical else None
        if key is None or key in used:
            missing.append(name)
            continue
        targets[name] = key
        used.add(key)
    return Mapping(targets, missing)
