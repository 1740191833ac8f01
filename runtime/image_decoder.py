"""One input -> the model's float32 CHW tensor, as picklable data (``ImageDecoder``), and where that
tensor lies on the original image (``Placement``, for evidence maps)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .evidence import orientation_of
from .images import DEFAULT_MAX_PIXELS, ImageInput, Size, load_rgb_scaled
from .preprocess import PreprocessConfig, resize, to_model_input
from .session import (
    release_freed_memory,
)

__all__ = ["ImageDecoder", "Placement"]

Placement = tuple[tuple[int, int], int]  # the stored image's (width, height) and its EXIF orientation


def _stored_size(source: ImageInput, rgb: Image.Image, box: tuple[float, float, float, float] | None
                 ) -> tuple[int, int]:
    """The original's (width, height): the decoded size, unless a JPEG was decoded at a reduced
    scale (``fast_decode``), whose header then gives the full size (paths and bytes; else the box's)."""
    if box is None:
        return rgb.size
    try:
        if isinstance(source, (str, Path)):
            with Image.open(source) as header:
                return header.size
        if isinstance(source, (bytes, bytearray, memoryview)):
            with Image.open(io.BytesIO(bytes(source))) as header:
                return header.size
    except OSError:
        pass
    return round(box[2] - box[0]), round(box[3] - box[1])


@dataclass(frozen=True)
class ImageDecoder:
    """One input -> the model's float32 CHW tensor: :meth:`Detector.decode`'s step as picklable data,
    so a child process can run it on untrusted input without the model."""

    preprocess: PreprocessConfig
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    draft: Size | None = None

    def __call__(self, image: ImageInput, *, name: str) -> np.ndarray:
        return self.placed(image, name=name)[0]

    def placed(self, image: ImageInput, *, name: str) -> tuple[np.ndarray, Placement]:
        """The tensor, and where it lies on the original: its stored (width, height) and EXIF
        orientation, which evidence maps need to land on the image a viewer shows."""
        rgb, box = load_rgb_scaled(image, name=name, max_pixels=self.max_pixels, draft=self.draft)
        placement = (_stored_size(image, rgb, box), orientation_of(rgb))
        try:
            resized = resize(rgb, self.preprocess, box)
        finally:
            if rgb is not image:  # ours, not the caller's: free the full-size pixels before the float math
                rgb.close()
        tensor = to_model_input(resized, self.preprocess)
        release_freed_memory()
        return tensor, placement
