"""Input preprocessing: any image (+ mask) -> RGBA cut-out -> multiview 768 views and the 518 DINO crop."""

from .framing import (
    DINO_SIZE,
    FACE_BOX,
    MIN_SUBJECT_SIZE,
    MV_SIZE,
    PreparedInput,
    dino_input,
    multiview_input,
    prepare_input,
)
from .image import to_rgba

__all__ = [
    "DINO_SIZE",
    "FACE_BOX",
    "MIN_SUBJECT_SIZE",
    "MV_SIZE",
    "PreparedInput",
    "dino_input",
    "multiview_input",
    "prepare_input",
    "to_rgba",
]
