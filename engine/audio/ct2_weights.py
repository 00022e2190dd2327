"""Reading tensors out of a CTranslate2 model file (`model.bin`), without CTranslate2.

CTranslate2 runs Whisper fast but only hands out the encoder's last layer; the layers in between carry
more of how the mouth moves (engine.audio.whisper.WhisperLayerEncoder), so they are computed in torch
from the same weights. The file is a flat list of named tensors (CTranslate2's `ModelSpec._serialize`):

    uint32 binary version, string spec name, uint32 spec revision, uint32 count,
    count x (string name, uint8 rank, rank x uint32 dims, uint8 dtype id, uint32 bytes, data),
    then aliases. Strings are a uint16 length (with the trailing NUL) and UTF-8 bytes.

Only plain data is read (no pickle, no code), only the tensors asked for are kept, and every length is
checked against the file, so a damaged or foreign file gives an EngineError, not a crash or a huge read.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import EngineError

# CTranslate2's dtype ids (the DataType enum of ctranslate2/types.h); bfloat16 (5) is not read.
_FLOATS = {0: np.float32, 4: np.float16}
_INTEGERS = {1: np.int8, 2: np.int16, 3: np.int32}
_KNOWN_VERSIONS = range(1, 7)


def read_tensors(path: str | Path, prefix: str) -> dict[str, np.ndarray]:
    """The tensors whose names start with `prefix` (e.g. "encoder/"), as float32 arrays."""
    path = Path(path)
    size = path.stat().st_size
    tensors = {}
    try:
        with path.open("rb") as f:
            def number(fmt: str) -> int:
                data = f.read(struct.calcsize(fmt))
                if len(data) != struct.calcsize(fmt):
                    raise ValueError("the file ends early")
                return struct.unpack("<" + fmt, data)[0]

            def string() -> str:
                return f.read(number("H"))[:-1].decode("utf-8")

            version = number("I")
            if version not in _KNOWN_VERSIONS:
                raise ValueError(f"binary version {version}")
            string(), number("I")  # the spec's name and revision
            for _ in range(number("I")):
                name = string()
                shape = [number("I") for _ in range(number("B"))]
                dtype, n_bytes = number("B"), number("I")
                if f.tell() + n_bytes > size:
                    raise ValueError(f"{name} runs past the end of the file")
                if not name.startswith(prefix):
                    f.seek(n_bytes, 1)
                    continue
                if dtype not in _FLOATS and dtype not in _INTEGERS:
                    raise ValueError(f"{name} has the dtype id {dtype}")
                array = np.frombuffer(f.read(n_bytes), _FLOATS.get(dtype) or _INTEGERS[dtype])
                if array.size != int(np.prod(shape)):
                    raise ValueError(f"{name}: {array.size} values for the shape {shape}")
                tensors[name] = array.reshape(shape).astype(np.float32)
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise EngineError(f"{path}: not a readable CTranslate2 model ({exc})",
                          "delete it so that it is fetched again, or point --models at a good copy",
                          path=str(path)) from exc
    if not tensors:
        raise EngineError(f"{path}: holds no '{prefix}' tensors", "use the Whisper base model the engine fetches",
                          path=str(path))
    return tensors
