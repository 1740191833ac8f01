"""Turn whatever the caller passed into one RGB ``PIL.Image``, safely.

Accepted sources: a path (``str``/``os.PathLike``), ``bytes``-like data, a
binary file object, a ``PIL.Image.Image``, or an HWC (or HW) ``uint8`` numpy
array. Every failure becomes an :class:`~deepfake_edge.errors.ImageError`
subclass that names the input; PIL and numpy exceptions never escape.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from contextlib import ExitStack
from typing import IO, Union

import numpy as np
from PIL import Image

from .errors import ImageDecodeError, ImageError, ImageReadError, ImageTooLargeError, UnsupportedInputError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInput", "describe_source", "is_single_input", "load_rgb", "to_rgb"]

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]

#: Images declaring more pixels than this are refused before any pixel is decoded.
#: 100 Mpx covers every phone/DSLR photo; a 1.4 KB "bomb" can claim 4 Gpx.
DEFAULT_MAX_PIXELS = 100_000_000

# What PIL's plugins raise on hostile data. Image.open() documents OSError
# (incl. UnidentifiedImageError), ValueError and TypeError; the decoders also
# let SyntaxError (PNG chunk checks), EOFError, struct.error and IndexError
# through on truncated or inconsistent headers. Listing them keeps real bugs
# (AttributeError, NameError, ...) visible instead of hiding them.
_DECODER_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    ZeroDivisionError,
)


def describe_source(source: object, index: int = 0) -> str:
    """A printable name for an input: its path, or ``<kind #index>``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes #{index}>"
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "")
        return name if isinstance(name, str) and name else f"<PIL image #{index}>"
    if isinstance(source, np.ndarray):
        return f"<array #{index}>"
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"<{type(source).__name__} #{index}>"


def is_single_input(value: object) -> bool:
    """True when ``value`` is one image rather than a sequence of images."""
    if isinstance(value, np.ndarray):
        return value.ndim in (2, 3)
    return isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)) or hasattr(value, "read")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")``, exactly as the model card's code does it.

    A palette image with a transparency entry goes through RGBA first: PIL warns
    on the direct conversion, and the palette colours (hence the RGB pixels) are
    identical either way; the test suite checks that bit for bit.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def _rgb(image: Image.Image, name: str) -> Image.Image:
    try:
        return to_rgb(image)
    except (ValueError, OSError) as exc:  # e.g. PIL has no "La" -> RGB conversion
        raise ImageDecodeError(name, f"cannot convert PIL mode {image.mode!r} to RGB ({exc})") from exc


def _check_pixels(image: Image.Image, name: str, max_pixels: int | None) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(name, f"image has an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            name, f"image declares {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )


def _decode(fp: IO[bytes] | str | os.PathLike[str], name: str, max_pixels: int | None) -> Image.Image:
    """Open, check the declared size, then decode the first frame and convert it."""
    try:
        with warnings.catch_warnings():
            # We enforce our own (configurable) limit right below; PIL's warning
            # for images between its limit and twice it would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # No ``with``: closing a PIL image frees its pixels, and ``fp`` is
            # either caller-owned or closed by ``load_rgb``'s ExitStack.
            image = Image.open(fp)
            _check_pixels(image, name, max_pixels)
            image.seek(0)  # animated formats: always the first frame
            image.load()
    except ImageError:
        raise  # our own checks above (ImageError refines ValueError, listed below)
    except Image.DecompressionBombError as exc:
        # PIL refuses > 2 x Image.MAX_IMAGE_PIXELS inside Image.open, before our
        # own check can run; its message carries the declared size.
        raise ImageTooLargeError(name, f"refused before decoding: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(name, "not a recognised image format") from exc
    except _DECODER_FAILURES as exc:
        raise ImageDecodeError(name, f"corrupt or truncated image data ({type(exc).__name__}: {exc})") from exc
    return _rgb(image, name)


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise UnsupportedInputError(name, f"numpy images must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
    else:
        raise UnsupportedInputError(name, f"numpy images must be HW or HWC with 1, 3 or 4 channels, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(name, f"image has an empty shape {array.shape}")
    return _rgb(Image.fromarray(np.ascontiguousarray(array), mode), name)


def load_rgb(source: ImageInput, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` into an RGB image, or raise an ``ImageError`` naming it.

    Paths we open are closed again; caller-owned file objects are left open.
    """
    name = name if name is not None else describe_source(source)
    if isinstance(source, Image.Image):
        try:
            source.load()
        except _DECODER_FAILURES as exc:
            raise ImageDecodeError(name, f"PIL image could not be loaded ({type(exc).__name__}: {exc})") from exc
        return _rgb(source, name)
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError(name, "empty input (0 bytes)")
        return _decode(io.BytesIO(bytes(source)), name, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        with ExitStack() as stack:
            try:
                if os.path.isdir(source):
                    raise ImageReadError(name, "is a directory, not an image file")
                fp = stack.enter_context(open(source, "rb"))
            except OSError as exc:
                raise ImageReadError(name, f"cannot read file ({exc.strerror or exc})") from exc
            if os.fstat(fp.fileno()).st_size == 0:
                raise ImageDecodeError(name, "empty file (0 bytes)")
            return _decode(fp, name, max_pixels)
    if hasattr(source, "read"):
        try:
            seekable = bool(getattr(source, "seekable", lambda: False)())
            fp = source if seekable else io.BytesIO(source.read())
        except (OSError, ValueError) as exc:
            raise ImageReadError(name, f"cannot read stream ({exc})") from exc
        return _decode(fp, name, max_pixels)
    raise UnsupportedInputError(
        name, f"expected a path, bytes, binary file, PIL image or uint8 numpy array, got {type(source).__name__}"
    )
