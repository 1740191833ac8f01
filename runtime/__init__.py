"""deepfake-edge: a torch-free ONNX runtime for SigLIP deepfake-image classifiers.

The base install needs numpy, Pillow and onnxruntime only; importing this
package never imports torch, transformers or optimum.
"""

from __future__ import annotations

from .detector import Detector
from .errors import (
    BundleError,
    BundleFileMissingError,
    BundleMismatchError,
    ChecksumMismatchError,
    DeepfakeEdgeError,
    ExtraNotInstalledError,
    ImageDecodeError,
    ImageError,
    ImageReadError,
    ImageTooLargeError,
    ModelOutputError,
    UnsupportedBundleError,
    UnsupportedInputError,
)
from .images import DEFAULT_MAX_PIXELS
from .preprocess import PreprocessConfig
from .results import BatchError, Failure, Prediction


def __getattr__(name: str) -> str:
    # importlib.metadata costs tens of milliseconds to import, and predict never needs the version.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("deepfake-edge")
        except PackageNotFoundError:  # running from a source tree
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "BatchError",
    "BundleError",
    "BundleFileMissingError",
    "BundleMismatchError",
    "ChecksumMismatchError",
    "DeepfakeEdgeError",
    "Detector",
    "ExtraNotInstalledError",
    "Failure",
    "ImageDecodeError",
    "ImageError",
    "ImageReadError",
    "ImageTooLargeError",
    "ModelOutputError",
    "Prediction",
    "PreprocessConfig",
    "UnsupportedBundleError",
    "UnsupportedInputError",
    "__version__",
]
