"""The subject folder: what preprocessing writes and training, rendering and evaluation read."""
from .format import Subject, SubjectWriter, expression_file, frame_name
from .schema import FORMAT, VERSION, CropBox, ExpressionRecord, HeadRecord, Source, Split, SubjectMeta

__all__ = ["Subject", "SubjectWriter", "SubjectMeta", "CropBox", "Source", "Split", "HeadRecord", "ExpressionRecord",
           "expression_file", "frame_name", "FORMAT", "VERSION"]
