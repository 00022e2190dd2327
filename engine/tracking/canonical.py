"""MediaPipe's canonical face model and the camera its facial transforms imply.

The facial transform maps the canonical face model (468 vertices, centimetres, x towards the subject's
left, y up, z out of the face) into an OpenGL camera space (looking down -z) of a perspective camera
with a 63 degree vertical field of view centred on the image MediaPipe saw. The preprocessing may have
run MediaPipe on the full source frame and then cropped and scaled, so the camera is re-measured in
crop pixels by projecting the canonical model through the transforms onto the observed landmarks.
"""
from __future__ import annotations

import zipfile
from functools import lru_cache

import numpy as np

from ..errors import EngineError
from ..models import find_model

MEDIAPIPE_VERTICAL_FOV_DEG = 63.0
_GEOMETRY_ENTRY = "geometry_pipeline_metadata_landmarks.binarypb"


def _protobuf_fields(buf: bytes):
    """Yield (field number, wire type, value) of one protobuf message (enough for the geometry metadata)."""
    i = 0

    def varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(buf):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, wire, varint()
        elif wire == 2:
            n = varint()
            yield field, wire, buf[i:i + n]
            i += n
        elif wire == 5:
            yield field, wire, buf[i:i + 4]
            i += 4
        elif wire == 1:
            yield field, wire, buf[i:i + 8]
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


@lru_cache(maxsize=1)
def _geometry_metadata() -> tuple[np.ndarray, np.ndarray]:
    """(468, 3) canonical vertices (cm) and the ids of MediaPipe's Procrustes landmarks, from the model file.

    GeometryPipelineMetadata: canonical_mesh (field 1) is a Mesh3d whose vertex_buffer (field 3) holds
    x, y, z, u, v per vertex; procrustes_landmark_basis (field 2) lists the landmarks MediaPipe treats
    as rigid when it fits the transform (landmark_id is field 1).
    """
    path = find_model("face_landmarker")
    hint = "replace face_landmarker.task with MediaPipe's official model file"
    try:
        with zipfile.ZipFile(path) as bundle:
            metadata = list(_protobuf_fields(bundle.read(_GEOMETRY_ENTRY)))
        mesh = next(value for field, wire, value in metadata if field == 1 and wire == 2)
        floats = [value for field, wire, value in _protobuf_fields(mesh) if field == 3]
        buffer = np.frombuffer(b"".join(floats), "<f4")  # packed or not, the bytes are the same floats
        vertices = buffer.reshape(-1, 5)[:, :3].astype(np.float64)
        rigid = np.array([next(v for f, w, v in _protobuf_fields(value) if f == 1)
                          for field, wire, value in metadata if field == 2 and wire == 2], np.int64)
    except (KeyError, StopIteration, ValueError, IndexError, zipfile.BadZipFile) as exc:
        raise EngineError(f"{path}: no canonical face model inside ({exc})", hint, path=path) from exc
    if len(vertices) != 468 or len(rigid) == 0 or rigid.max() >= 468:
        raise EngineError(f"{path}: unexpected canonical face model ({len(vertices)} vertices)", hint, path=path)
    return vertices, rigid


def canonical_face() -> np.ndarray:
    """(468, 3) float64 canonical face vertices in centimetres."""
    return _geometry_metadata()[0]


def rigid_landmarks() -> np.ndarray:
    """Ids of the landmarks MediaPipe fits its transform to (nose, forehead, eye corners, cheekbones)."""
    return _geometry_metadata()[1]


def mediapipe_camera(landmarks: np.ndarray, transforms: np.ndarray, valid: np.ndarray, size: int) -> dict:
    """Intrinsics (fx = fy, cx, cy) in crop pixels that best map the transformed canonical face onto the
    observed landmarks (linear least squares over all valid frames)."""
    rigid = rigid_landmarks()
    vertices = canonical_face()[rigid]
    tf = np.asarray(transforms, np.float64)[valid]
    camera = np.einsum("nij,kj->nki", tf[:, :3, :3], vertices) + tf[:, None, :3, 3]
    depth = -camera[..., 2]
    if len(tf) == 0 or np.any(depth <= 0):
        # No usable transform: MediaPipe's own camera for an image the size of the crop.
        f = size / 2 / np.tan(np.radians(MEDIAPIPE_VERTICAL_FOV_DEG / 2))
        return {"fx": f, "fy": f, "cx": size / 2, "cy": size / 2}
    x = (camera[..., 0] / depth).ravel()
    y = (-camera[..., 1] / depth).ravel()  # image v grows downwards
    observed = np.asarray(landmarks, np.float64)[valid][:, rigid, :2]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    # u = cx + f x, v = cy + f y with one shared f.
    design = np.concatenate([np.stack([x, ones, zeros], 1), np.stack([y, zeros, ones], 1)])
    target = np.concatenate([observed[..., 0].ravel(), observed[..., 1].ravel()])
    f, cx, cy = np.linalg.lstsq(design, target, rcond=None)[0]
    return {"fx": float(f), "fy": float(f), "cx": float(cx), "cy": float(cy)}
