"""Preprocessing: a clip of one person talking becomes a subject folder (../shared/REFERENCE.md, preprocessing)."""
from .pipeline import preprocess

__all__ = ["preprocess"]
