"""Head tracking and the Head-Sync stabilizer: rigid keypoints tracked by optical flow, then a bundle
adjustment of per-frame head poses, keypoint positions and the focal length."""
from .stabilizer import StabilizerResult, stabilize

__all__ = ["stabilize", "StabilizerResult"]
