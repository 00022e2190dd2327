"""The 52 ARKit blendshape names in Apple's ARFaceAnchor order, and MediaPipe's mapping into it."""
import numpy as np

ARKIT_NAMES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward",
    "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
    "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)
ARKIT_INDEX = {name: i for i, name in enumerate(ARKIT_NAMES)}

# SyncTalk's default expression code: brows and eye blinks (upper face only).
UPPER_FACE = ("eyeBlinkLeft", "eyeBlinkRight", "browDownLeft", "browDownRight",
              "browInnerUp", "browOuterUpLeft", "browOuterUpRight")
# The blendshapes that move the mouth and jaw, used to score audio-driven curves.
MOUTH_AND_JAW = tuple(n for n in ARKIT_NAMES if n.startswith(("jaw", "mouth")))


def from_mediapipe(categories) -> np.ndarray:
    """ARKit-ordered weights (52,) from MediaPipe's blendshape categories.

    MediaPipe lists `_neutral` first and has no `tongueOut`; names are matched, not positions,
    so a change of order in MediaPipe cannot scramble the curves. Missing names stay 0.
    """
    weights = np.zeros(len(ARKIT_NAMES), np.float32)
    for category in categories:
        index = ARKIT_INDEX.get(category.category_name)
        if index is not None:
            weights[index] = category.score
    return weights
