"""Turning frames upright from their display matrix, the way the ``ffmpeg`` command line does (autorotate).

Phones record sensor-oriented frames and store how to show them in a display matrix
(side data of the stream). The transposes and flips below only move pixels, so applying
them to the RGB image gives the pixels ffmpeg's filters would.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image

__all__ = ["autorotate", "display_matrix", "frame_matrix"]


# ffmpeg's command line (fftools, autorotate on by default) turns the display matrix into
# filters: theta = -round(av_display_rotation_get(m)), normalised to [0, 360), then
#   90: transpose=clock, or cclock_flip if m[3] > 0;   270: transpose=cclock, or clock_flip if m[3] < 0;
#   180: hflip if m[0] < 0, vflip if m[4] < 0;          0: vflip if m[4] < 0;   other: rotate=theta.
_CLOCK, _CCLOCK = Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_90  # PIL's angles are counter-clockwise
_CLOCK_FLIP, _CCLOCK_FLIP = Image.Transpose.TRANSVERSE, Image.Transpose.TRANSPOSE
_HFLIP, _VFLIP = Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM


def display_matrix(degrees: float) -> tuple[int, ...]:
    """The 16.16 fixed-point matrix rotating ``degrees`` counter-clockwise, as FFmpeg's
    ``av_display_rotation_set(m, -degrees)`` writes it (that function's angle is clockwise)."""
    radians = math.radians(degrees)
    c, s = math.cos(radians), math.sin(radians)
    fixed = [round(v * (1 << 16)) for v in (c, -s, 0, s, c, 0)]
    return (*fixed, 0, 0, 1 << 30)


def frame_matrix(frame: Any) -> tuple[int, ...] | None:
    """The frame's display matrix, rebuilt from its rotation.

    PyAV 18 exposes the raw matrix only through ``frame.side_data``, whose container forms a
    reference cycle with the frame that crashes the garbage collector (seen as a segfault
    on PNG and H.264 frames), so only ``frame.rotation`` is read: rotations are exact, a
    mirrored matrix is taken as its rotation part.
    """
    degrees = frame.rotation
    return display_matrix(degrees) if degrees else None


def _theta(matrix: tuple[int, ...]) -> float:
    """fftools' get_rotation: the clockwise rotation in [0, 360) that displays the frame upright."""
    # av_display_rotation_get: the counter-clockwise angle of the 16.16 fixed-point matrix
    scale0, scale1 = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if scale0 == 0 or scale1 == 0:
        return math.nan  # a degenerate matrix: ffmpeg applies nothing
    ccw = -math.degrees(math.atan2(matrix[1] / scale1, matrix[0] / scale0))
    theta = -round(ccw)
    return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def autorotate(image: Image.Image, matrix: tuple[int, ...] | None) -> Image.Image:
    """``image`` as ffmpeg's command line would show it, given the frame's display matrix (or None)."""
    theta = math.nan if matrix is None else _theta(matrix)
    if matrix is None or math.isnan(theta):
        return image
    if abs(theta - 90) < 1:
        steps = [_CCLOCK_FLIP if matrix[3] > 0 else _CLOCK]
    elif abs(theta - 180) < 1:
        steps = [s for s, flip in ((_HFLIP, matrix[0] < 0), (_VFLIP, matrix[4] < 0)) if flip]
    elif abs(theta - 270) < 1:
        steps = [_CLOCK_FLIP if matrix[3] < 0 else _CCLOCK]
    elif abs(theta) > 1:
        # ffmpeg's rotate filter: same size, bilinear, black corners. PIL's angle is counter-clockwise.
        return image.rotate(-theta, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))
    else:
        steps = [_VFLIP] if matrix[4] < 0 else []
    for step in steps:
        image = image.transpose(step)
    return image
