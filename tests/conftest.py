"""Shared test set-up: real footage and models from ../shared, found the way the product finds them."""
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DATA = SHARED / "data"

# Tests find the models the way the product does: through the environment variable.
os.environ.setdefault("SYNCTALK_MODELS", str(SHARED / "models"))
os.environ.setdefault("SYNCTALK_OFFLINE", "1")


def shared_file(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (tests read real footage from ../shared)")
    return path
