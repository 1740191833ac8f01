"""Turn whatever the caller passed into one RGB ``PIL.Image``, safely.

Accepted sources: a path (``str``/``os.PathLike``), ``bytes``-like data, a
binary file object, a ``PIL.Image.Image``, or an HWC (or HW) ``uint8`` numpy
array. Every failure becomes an :class:`~deepfake_edge.errors.ImageError`
subclass that names the input; PIL and numpy exceptions never escape.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from contextlib import ExitStack
from functools import lru_cache
from typing import IO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageDecodeError, ImageError, ImageReadError, ImageTooLargeError, UnsupportedInputError

__all__ = [
    "DEFAULT_MAX_PIXELS", "REFUSED_FORMATS", "Box", "ImageInput", "Size", "describe_source", "is_single_input",
    "load_rgb", "load_rgb_scaled", "to_rgb",
]

Size = tuple[int, int]  # (width, height), as PIL takes it
Box = tuple[float, float, float, float]  # (left, upper, right, lower), as Image.resize takes it
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]

#: Images declaring more pixels than this are refused before any pixel is decoded.
#: 100 Mpx covers every phone/DSLR photo; a 1.4 KB "bomb" can claim 4 Gpx.
DEFAULT_MAX_PIXELS = 100_000_000

# What PIL's plugins raise on hostile data. Image.open() documents OSError
# (incl. UnidentifiedImageError), ValueError and TypeError; the decoders also
# let SyntaxError (PNG chunk checks), EOFError, struct.error and IndexError
# through on truncated or inconsistent headers, and NotImplementedError for
# pixel formats a plugin does not handle (DDS, BLP; found by tests/test_fuzz.py).
# Listing them keeps real bugs (AttributeError, NameError, ...) visible instead
# of hiding them.
_DECODER_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    ArithmeticError,  # ZeroDivisionError, OverflowError on absurd header fields
    NotImplementedError,
    Warning,  # PIL's warnings (e.g. truncated data) when the caller's filters turn them into errors
)

# Formats never decoded: PIL renders EPS/PostScript by running Ghostscript on
# the file (an external interpreter, no timeout) -- not something to point at
# untrusted uploads. Such files get an ImageDecodeError saying so.
REFUSED_FORMATS = frozenset({"EPS"})
_POSTSCRIPT_MAGIC = (b"%!PS", b"\xc5\xd0\xd3\xc6")  # PIL's EpsImagePlugin._accept


@lru_cache(maxsize=1)
def _accepted_formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin; ``Image.ID`` is then complete
    return tuple(fmt for fmt in Image.ID if fmt not in REFUSED_FORMATS)


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


def _decode(fp: IO[bytes], name: str, max_pixels: int | None, draft: Size | None) -> tuple[Image.Image, Box | None]:
    """Open, check the declared size, then decode the first frame and convert it.

    ``draft``: see :func:`load_rgb_scaled`; the limit is checked on the declared size first.

    No ``warnings.catch_warnings`` here: it swaps process-global state and is not
    thread-safe (``Detector`` is). PIL's warnings therefore follow the host's
    filters: shown by default, and if the host turns them into errors they become
    ``ImageDecodeError`` (``ImageTooLargeError`` for PIL's bomb warning) like any
    other decoder complaint. The CLI silences them: its output already says
    what happened to every input.
    """
    try:
        # No ``with``: closing a PIL image frees its pixels, and ``fp`` is
        # either caller-owned or closed by ``load_rgb``'s ExitStack.
        image = _open(fp)
        _check_pixels(image, name, max_pixels)
        image.seek(0)  # animated formats: always the first frame
        box = _draft(image, draft) if draft is not None else None
        image.load()
    except ImageError:
        raise  # our own checks above (ImageError refines ValueError, listed below)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL refuses > 2 x Image.MAX_IMAGE_PIXELS (about 179 Mpx) inside
        # Image.open, before our own check can run, whatever max_pixels says;
        # its message carries the declared pixel count.
        raise ImageTooLargeError(name, f"refused before decoding: {exc}") from exc
    except UnidentifiedImageError as exc:
        if _is_postscript(fp):
            raise ImageDecodeError(name, "EPS/PostScript is not accepted (decoding it would run Ghostscript)") from exc
        raise ImageDecodeError(name, "not a recognised image format") from exc
    except MemoryError as exc:
        # Under the pixel limit but still more than this machine can hold.
        raise ImageTooLargeError(name, f"not enough memory to decode it ({exc or 'MemoryError'})") from exc
    except _DECODER_FAILURES as exc:
        raise ImageDecodeError(name, f"corrupt or truncated image data ({type(exc).__name__}: {exc})") from exc
    return _rgb(image, name), box


def _draft(image: Image.Image, size: Size) -> Box | None:
    """Make a JPEG decode at the smallest of 1/2, 1/4, 1/8 scale that stays >= ``size``; its box, or None.

    An image less than twice ``size`` in either dimension is left alone (draft would pick 1/1), so
    it decodes exactly as without a draft.
    """
    if image.format not in _DRAFT_FORMATS or image.width < 2 * size[0] or image.height < 2 * size[1]:
        return None
    reduced = image.draft(None, size)  # mode None: only the size changes; mode conversion stays _rgb's
    return reduced[1] if reduced is not None else None


# The formats whose PIL plugin implements Image.draft (an MPO is a JPEG with more frames).
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})


@lru_cache(maxsize=1)
def _common_formats() -> tuple[str, ...]:
    Image.preinit()  # BMP, GIF, JPEG, PPM, PNG: a handful of plugins, not all of them
    return tuple(fmt for fmt in Image.ID if fmt not in REFUSED_FORMATS)


def _open(fp: IO[bytes]) -> Image.Image:
    """``Image.open`` over the accepted formats, the common ones first.

    Listing every accepted format means ``Image.init()``, which imports some 40 plugins (about
    0.1 s of start-up) that a JPEG or PNG never needs. The common plugins are registered before
    all others, so trying them first picks the plugin the whole ordered list would have picked.
    """
    try:
        return Image.open(fp, formats=_common_formats())
    except UnidentifiedImageError:
        return Image.open(fp, formats=_accepted_formats())  # Image.open seeks to the start itself


def _is_postscript(fp: IO[bytes]) -> bool:
    try:
        fp.seek(0)
        return fp.read(4) in _POSTSCRIPT_MAGIC
    except (OSError, ValueError):
        return False


# Generous for any encoding of an image within the pixel limit: 16-bit RGBA, uncompressed, is 8 bytes a pixel.
_STREAM_BYTES_PER_PIXEL = 8
_STREAM_SLACK = 1 << 20
_CHUNK = 1 << 20


def _read_bytes(stream: IO[bytes], name: str, max_pixels: int | None) -> bytes:
    """Read a non-seekable stream whole, but no further than an image within the pixel limit could need."""
    limit = None if max_pixels is None else max_pixels * _STREAM_BYTES_PER_PIXEL + _STREAM_SLACK
    buffer = bytearray()
    while True:
        try:
            chunk = stream.read(_CHUNK)
        except TypeError:  # a file-like object whose read() takes no size: all it offers is everything
            chunk = stream.read()
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise UnsupportedInputError(name, f"stream.read() returned {type(chunk).__name__}, expected bytes")
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if limit is not None and len(buffer) > limit:
            raise ImageTooLargeError(name, f"stream is larger than {limit:,} bytes (8 bytes per pixel of the "
                                           f"{max_pixels:,}-pixel limit); pass a seekable file, or raise max_pixels")


def _open_regular_file(path: str | os.PathLike[str], name: str, stack: ExitStack) -> IO[bytes]:
    """Open a path for reading, refusing anything but a regular, non-empty file.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting
    forever for a writer; the ``fstat`` on the opened descriptor (not the path,
    which could be swapped in between) then refuses FIFOs, devices and sockets,
    whose reads could block or never end. It has no effect on regular files.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except IsADirectoryError as exc:
        raise ImageReadError(name, "is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageReadError(name, f"cannot read file ({exc.strerror or exc})") from exc
    stack.callback(os.close, fd)
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(name, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(name, "is not a regular file (a FIFO, device or socket), refused")
    if info.st_size == 0:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    # closefd=False: the callback above owns the descriptor, whatever happens next
    return stack.enter_context(os.fdopen(fd, "rb", closefd=False))


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
        raise UnsupportedInputError(
            name, f"numpy images must be HW or HWC with 1, 3 or 4 channels, got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(name, f"image has an empty shape {array.shape}")
    return _rgb(Image.fromarray(np.ascontiguousarray(array), mode), name)


def load_rgb(
    source: ImageInput, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode ``source`` into an RGB image, or raise an ``ImageError`` naming it.

    Paths we open are closed again; caller-owned file objects are left open.
    """
    return load_rgb_scaled(source, name=name, max_pixels=max_pixels, draft=None)[0]


def load_rgb_scaled(
    source: ImageInput, *, name: str | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft: Size | None = None,
) -> tuple[Image.Image, Box | None]:
    """:func:`load_rgb`, but a large JPEG may be decoded at a reduced scale; also returns where the image lies.

    With ``draft=(width, height)``, a JPEG read from a path, bytes or a stream that is at least twice
    that size is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (``Image.draft``, DCT scaling), the
    smallest that stays at least ``draft``: far less work and memory, but not the exact pixels.
    The box is the region the full image covers in the reduced one (its last block row and column
    may be partial), to be passed to ``Image.resize(box=...)`` as ``Image.thumbnail`` does; it is
    None whenever the image was decoded at full size: other formats, smaller JPEGs, PIL images,
    arrays, and ``draft=None``.
    """
    name = name if name is not None else describe_source(source)
    if isinstance(source, Image.Image):
        # A caller's Image.open() result is still undecoded: the limit guards it too.
        _check_pixels(source, name, max_pixels)
        try:
            source.load()
        except MemoryError as exc:
            raise ImageTooLargeError(name, f"not enough memory to decode it ({exc or 'MemoryError'})") from exc
        except _DECODER_FAILURES as exc:
            raise ImageDecodeError(name, f"PIL image could not be loaded ({type(exc).__name__}: {exc})") from exc
        return _rgb(source, name), None
    if isinstance(source, np.ndarray):
        return _from_array(source, name), None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageDecodeError(name, "empty input (0 bytes)")
        return _decode(io.BytesIO(bytes(source)), name, max_pixels, draft)
    if isinstance(source, (str, os.PathLike)):
        with ExitStack() as stack:
            return _decode(_open_regular_file(source, name, stack), name, max_pixels, draft)
    if hasattr(source, "read"):
        if isinstance(source, io.TextIOBase):
            raise UnsupportedInputError(name, "file object is open in text mode; open it with 'rb'")
        try:
            seekable = bool(getattr(source, "seekable", lambda: False)())
            # A non-seekable stream (pipe, socket, upload) is read whole (PIL seeks), up to a size cap.
            fp = source if seekable else io.BytesIO(_read_bytes(source, name, max_pixels))
        except ImageError:
            raise
        except (OSError, ValueError) as exc:
            raise ImageReadError(name, f"cannot read stream ({exc})") from exc
        return _decode(fp, name, max_pixels, draft)
    raise UnsupportedInputError(
        name, f"expected a path, bytes, binary file, PIL image or uint8 numpy array, got {type(source).__name__}"
    )
