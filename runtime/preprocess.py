"""A numpy + Pillow replica of transformers' ``SiglipImageProcessor`` and ``ViTImageProcessor`` (the slow ones).

They are what ``AutoImageProcessor`` returns when torchvision is absent, i.e. the
model card's code path, and our output is required to be *bit-identical* to it.
Both run the same steps (``ViTImageProcessor.resize`` calls the same ``resize`` with
``(height, width)``); only their defaults differ (``PROCESSOR_DEFAULTS``). The steps and
their exact dtypes follow ``SiglipImageProcessor.preprocess``, ``ViTImageProcessor.preprocess``
and ``transformers.image_transforms`` (4.4x-4.57):

1. ``resize``: PIL ``Image.resize((width, height), resample, reducing_gap=None)``
   on the uint8 RGB image;
2. ``rescale``: ``image.astype(float64) * rescale_factor``, then cast to float32;
3. ``normalize``: ``(image - mean) / std`` with mean/std as float32 arrays, so the
   arithmetic stays in float32 (uint8 input is cast to float32 first);
4. HWC -> CHW.

Everything is read from ``preprocessor_config.json``; nothing is hard-coded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import BundleMismatchError, UnsupportedBundleError
from .jsonfile import read_json_object

__all__ = [
    "FAST_DECODE_FACTOR", "SUPPORTED_PROCESSORS", "PreprocessConfig", "draft_size", "normalize", "preprocess",
    "rescale", "resize", "to_model_input",
]

#: ``image_processor_type`` values whose behaviour this module reproduces. The
#: fast (torchvision) variant is accepted because checkpoints saved with it keep
#: the same settings; we reproduce the slow path, which the model card uses.
SUPPORTED_PROCESSORS = frozenset({"SiglipImageProcessor", "SiglipImageProcessorFast", "ViTImageProcessor",
                                  "ViTImageProcessorFast"})

#: Each processor's ``__init__`` defaults that differ from SigLIP's (used when a key is absent):
#: ViT resizes bilinearly (``PILImageResampling.BILINEAR``); its mean/std (IMAGENET_STANDARD, 0.5) and
#: size (224) are SigLIP's.
PROCESSOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "ViTImageProcessor": {"resample": 2},
    "ViTImageProcessorFast": {"resample": 2},
}


#: Fast decoding reduces a JPEG by 1/2, 1/4 or 1/8 (DCT scaling) but never below this many times the
#: model input in either dimension, so an antialiasing resize of at least 2x always follows (the
#: factor ``Image.thumbnail`` uses). On 12 MP JPEGs of the shipped photos at 512 px, 2x keeps the
#: tensor within 4 grey levels of the exact one at 2.4x the exact speed; 1x drifts by up to 11 levels
#: for 3.6x (README, "Fast JPEG decoding").
FAST_DECODE_FACTOR = 2


def _channels(value: float | Sequence[float], key: str, source: str) -> tuple[float, ...]:
    # transformers accepts a scalar and repeats it per channel.
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise BundleMismatchError(f"{source}: {key} must have 3 values (RGB), got {len(values)}")
    return values


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or int(value) < 1:
        raise ValueError(f"size must hold positive integers, got {value!r}")
    return int(value)


def _flag(value: object) -> bool:
    # bool("false") is True: accept only what JSON true/false (or 0/1) decode to.
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class PreprocessConfig:
    """The settings of ``SiglipImageProcessor`` / ``ViTImageProcessor`` that shape the model input."""

    height: int
    width: int
    do_resize: bool = True
    resample: int = 3  # PIL.Image.Resampling.BICUBIC, SiglipImageProcessor's default
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "preprocessor_config.json") -> PreprocessConfig:
        kind = data.get("image_processor_type", "SiglipImageProcessor")
        if kind not in SUPPORTED_PROCESSORS:
            raise UnsupportedBundleError(
                f"{source}: image_processor_type {kind!r} is not supported; "
                f"expected one of {sorted(SUPPORTED_PROCESSORS)}"
            )
        data = {**PROCESSOR_DEFAULTS.get(kind, {}), **data}
        size = data.get("size", {"height": 224, "width": 224})
        if isinstance(size, int) and not isinstance(size, bool):  # transformers' get_size_dict: an int is square
            size = {"height": size, "width": size}
        if not isinstance(size, Mapping) or "height" not in size or "width" not in size:
            raise UnsupportedBundleError(f"{source}: size must be {{'height': H, 'width': W}}, got {size!r}")
        # Defaults are the processor's __init__'s, used when a key is absent.
        # Every value is checked here, so a damaged file fails at load and never
        # as a numpy/PIL error in the middle of a batch.
        try:
            mean = _channels(data.get("image_mean", 0.5), "image_mean", source)
            std = _channels(data.get("image_std", 0.5), "image_std", source)
            config = cls(
                height=_positive_int(size["height"]),
                width=_positive_int(size["width"]),
                do_resize=_flag(data.get("do_resize", True)),
                resample=int(Image.Resampling(data.get("resample", 3))),
                do_rescale=_flag(data.get("do_rescale", True)),
                rescale_factor=float(data.get("rescale_factor", 1 / 255)),
                do_normalize=_flag(data.get("do_normalize", True)),
                image_mean=mean,  # type: ignore[arg-type]
                image_std=std,  # type: ignore[arg-type]
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, BundleMismatchError):
                raise
            raise UnsupportedBundleError(f"{source}: malformed preprocessor config ({exc})") from exc
        if not all(math.isfinite(v) for v in (config.rescale_factor, *mean, *std)):
            raise UnsupportedBundleError(f"{source}: rescale_factor, image_mean and image_std must be finite numbers")
        if any(s == 0 for s in std):
            raise BundleMismatchError(f"{source}: image_std must be non-zero, got {std}")
        return config

    @classmethod
    def from_file(cls, path: Path) -> PreprocessConfig:
        return cls.from_dict(read_json_object(path, "preprocessor config"), source=str(path))


def draft_size(config: PreprocessConfig, factor: int = FAST_DECODE_FACTOR) -> tuple[int, int]:
    """The smallest (width, height) fast decoding may reduce an image to: ``factor`` times the model input."""
    return factor * config.width, factor * config.height


def resize(image: Image.Image, config: PreprocessConfig,
           box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """HWC uint8; PIL takes ``(width, height)``, the config stores height first.

    ``box``: the region of ``image`` to resize (from ``images.load_rgb_scaled``); None, all of it.
    """
    if config.do_resize:
        image = image.resize((config.width, config.height), resample=Image.Resampling(config.resample),
                             box=box, reducing_gap=None)
    array = np.asarray(image)
    return array if array.ndim == 3 else array[:, :, None]


def rescale(array: np.ndarray, factor: float) -> np.ndarray:
    """transformers ``rescale``: multiply in float64, then downcast to float32."""
    return (array.astype(np.float64) * factor).astype(np.float32)


def normalize(array: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """transformers ``normalize``: float32 arithmetic with float32 mean/std."""
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return (array - np.asarray(mean, dtype=array.dtype)) / np.asarray(std, dtype=array.dtype)


def preprocess(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """One RGB image -> the float32 CHW tensor the model receives."""
    return to_model_input(resize(image, config), config)


def to_model_input(array: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The steps after :func:`resize`: rescale, normalize, HWC uint8 -> CHW float32."""
    if config.do_rescale:
        array = rescale(array, config.rescale_factor)
    if config.do_normalize:
        array = normalize(array, config.image_mean, config.image_std)
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)
