"""The subject folder: what preprocessing writes and training, rendering and evaluation read."""
from .format import Subject, SubjectWriter, atomic_write_json, atomic_write_tensors, FORMAT, VERSION

__all__ = ["Subject", "SubjectWriter", "atomic_write_json", "atomic_write_tensors", "FORMAT", "VERSION"]
