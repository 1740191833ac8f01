"""Every error deepfake-edge raises on purpose.

The tree, with the built-in each one refines (so ``except ValueError`` keeps
working for callers who do not know this package)::

    DeepfakeEdgeError
    ├── ImageError (ValueError)                an input could not be classified
    │   ├── ImageReadError (OSError)           missing/unreadable file, bad file object
    │   ├── ImageDecodeError                   not an image, truncated, corrupt
    │   ├── ImageTooLargeError                 over the pixel limit (decompression bomb)
    │   └── UnsupportedInputError (TypeError)  an object that is not an image source
    ├── BundleError (ValueError)               a bundle cannot be used
    │   ├── BundleFileMissingError (FileNotFoundError)
    │   ├── ChecksumMismatchError              a file differs from its manifest sha256
    │   ├── UnsupportedBundleError             unknown format version / processor type
    │   └── BundleMismatchError                files that disagree with each other
    ├── VideoSourceError (ValueError)          a video file or stream could not be (fully) read
    │   ├── VideoOpenError (OSError)           missing file, unreachable host, refused connection
    │   ├── VideoDecodeError                   not a video, no video stream, no frames, corrupt/truncated
    │   └── VideoTimeoutError (TimeoutError)   no data within the open or read timeout
    ├── ModelOutputError (ArithmeticError)     the model gave NaN/inf scores for an input
    ├── CredentialError (ValueError)           an unset ${DEEPFAKE_EDGE_*} placeholder, a secrets file
    │                                          that group or others can read, an unreadable one
    ├── BatchError (in ``results``)            ``predict(on_error="raise")`` had failures;
    │                                          carries every result, nothing is lost
    └── ExtraNotInstalledError (ImportError)   an optional extra is missing

Messages name the input or file and say what was expected.
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "BundleFileMissingError",
    "BundleMismatchError",
    "ChecksumMismatchError",
    "CredentialError",
    "DeepfakeEdgeError",
    "ExtraNotInstalledError",
    "ImageDecodeError",
    "ImageError",
    "ImageReadError",
    "ImageTooLargeError",
    "ModelOutputError",
    "UnsupportedBundleError",
    "UnsupportedInputError",
    "VideoDecodeError",
    "VideoOpenError",
    "VideoSourceError",
    "VideoTimeoutError",
]


class DeepfakeEdgeError(Exception):
    """Base class of every error raised on purpose by deepfake-edge."""


class ImageError(DeepfakeEdgeError, ValueError):
    """An input image could not be turned into model input.

    ``source`` is a printable name for the input (its path, or ``<bytes #3>``).
    """

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message


class ImageReadError(ImageError, OSError):
    """The input's bytes could not be read (missing file, permissions, closed stream)."""


class ImageDecodeError(ImageError):
    """The bytes are not a decodable image (unknown format, truncated or corrupt data)."""


class ImageTooLargeError(ImageError):
    """The image declares more pixels than allowed; refused before decoding."""


class UnsupportedInputError(ImageError, TypeError):
    """The object is not a path, bytes, binary file, PIL image or HWC uint8 array."""


class BundleError(DeepfakeEdgeError, ValueError):
    """A model bundle cannot be loaded; raised by ``Detector.load``, never during inference."""


class BundleFileMissingError(BundleError, FileNotFoundError):
    """A file the bundle needs is absent."""


class ChecksumMismatchError(BundleError):
    """A bundle file's sha256 differs from the one recorded in ``manifest.json``."""


class UnsupportedBundleError(BundleError):
    """The bundle uses a format version or image processor this runtime does not know."""


class BundleMismatchError(BundleError):
    """Bundle files disagree (e.g. label count vs. model output width)."""


class VideoSourceError(DeepfakeEdgeError, ValueError):
    """A video source (file, URL or device) could not be opened or broke while being read.

    ``source`` is the path or URL as given.
    """

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message


class VideoOpenError(VideoSourceError, OSError):
    """The source could not be opened: a missing file, an unreachable host, a refused connection."""


class VideoDecodeError(VideoSourceError):
    """The data is not a usable video: not a container, no video stream, no frames, corrupt or truncated."""


class VideoTimeoutError(VideoSourceError, TimeoutError):
    """The source sent nothing within the open or read timeout."""


class ModelOutputError(DeepfakeEdgeError, ArithmeticError):
    """The model returned non-finite scores (NaN/inf) for an input: a damaged model file, typically
    one loaded without verification. Reported as that input's failure, never printed as a score."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class CredentialError(DeepfakeEdgeError, ValueError):
    """A credential cannot be used: an unset ``${DEEPFAKE_EDGE_*}`` placeholder, a secrets file
    readable by group or others, or an unreadable one. ``source`` is the masked source or the file;
    the message names the variable or file, never a secret."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message


class ExtraNotInstalledError(DeepfakeEdgeError, ImportError):
    """An optional dependency group is missing; the message gives the pip command."""

    def __init__(self, extra: str, missing: str) -> None:
        super().__init__(
            f"this feature needs the [{extra}] extra ({missing} is not installed); "
            f"install it with: pip install 'deepfake-edge[{extra}]'"
        )
        self.extra = extra
        self.missing = missing
