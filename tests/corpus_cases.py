"""The hostile-image corpus of tests/test_corpus.py: expected outcomes as data, the files it makes,
and Pillow's own verdict as the independent reference.

Every Debian file's expected outcome is in ``DEBIAN``; the files the test makes, with theirs, come
from ``synthetic_corpus``.
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

from deepfake_edge import ImageDecodeError, ImageError, ImageReadError, ImageTooLargeError
from deepfake_edge.images import DEFAULT_MAX_PIXELS

from image_factory import animated_gif, mode_samples, png_claiming_size

CORPUS = Path(__file__).parent / "corpora" / "debian"


# -- expected outcomes, as data ---------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """What the runtime must say about one file."""

    error: type[ImageError] | None  # None: a prediction
    message: str = ""  # regex searched in the error message
    pixels: int | None = None  # bombs: the pixel count the header declares
    pil_oracle: bool = True  # False where Pillow alone is not the reference (EPS, FIFO, missing path)

    @property
    def kind(self) -> str:
        return "prediction" if self.error is None else self.error.__name__


PREDICTION = Expect(None)
EMPTY = Expect(ImageDecodeError, r": empty file \(0 bytes\)$")
NOT_IMAGE = Expect(ImageDecodeError, r": not a recognised image format$")


def corrupt(detail: str) -> Expect:
    """PIL found the format but the data is broken; ``detail`` names PIL's complaint."""
    return Expect(ImageDecodeError, r": corrupt or truncated image data \(" + detail)


def bomb(pixels: int) -> Expect:
    """Over 2 x PIL's MAX_IMAGE_PIXELS: PIL itself refuses it inside Image.open."""
    return Expect(ImageTooLargeError, rf"refused before decoding: Image size \({pixels} pixels\)", pixels)


def over_limit(width: int, height: int) -> Expect:
    """Over our 100 Mpx limit but under PIL's hard one: our own check refuses it."""
    return Expect(ImageTooLargeError, rf"declares {width}x{height} = {width * height:,} pixels, "
                  rf"over the limit of {DEFAULT_MAX_PIXELS:,}", width * height)


# First matching glob wins (paths relative to tests/corpora/debian/). The bomb sizes
# are what file(1) reports for each header (e.g. large.jpg: 22500 x 33300).
DEBIAN: list[tuple[str, Expect]] = [
    # decompression bombs
    ("gdk-pixbuf/large.jpg", bomb(22500 * 33300)),  # 8.8 MB progressive JPEG, 749 Mpx
    ("gdk-pixbuf/large.png", bomb(25200 * 33300)),  # 2.5 MB PNG, 839 Mpx
    ("gdk-pixbuf/issue205.jpg", bomb(64250 * 64250)),  # 1.4 KB claiming 4.1 Gpx
    ("gdk-pixbuf/cve-2015-4491.bmp", bomb(1 * 1509949441)),
    ("*/fail/bug776694.bmp", bomb(537264128)),
    ("*/fail/bug785973.gif", bomb(4270228888)),
    ("*/fail/bug793470-crasher.png", bomb(799708724280)),
    ("*/fail/invalid.1.gif", bomb(3682209732)),
    ("*/fail/invalid.2.gif", bomb(1719840326)),
    ("*/fail/invalid.3.gif", bomb(2002555744)),
    ("*/fail/overflow.tga", bomb(598144745)),
    ("*/randomly-modified/bmp-line-overflow.bmp", bomb(1073741825)),
    ("*/randomly-modified/bug775232.pnm", bomb(22222222200)),
    ("*/randomly-modified/crash.ico", bomb(1073741830)),
    ("*/randomly-modified/invalid.2.ico", bomb(2137791776)),
    # empty files
    ("*/fail/empty-file.tga", EMPTY),
    ("*/gif-test-suite/empty.*", EMPTY),
    # truncated data
    ("gdk-pixbuf/premature-end.jpg", corrupt(r"OSError: image file is truncated")),
    ("*/fail/androstanRezeptor.tga", corrupt(r"OSError: image file is truncated")),
    ("*/reftests/bug696331.png", corrupt(r"OSError: image file is truncated")),
    ("*/fail/invalid.4.png", corrupt(r"OSError: Truncated File Read")),
    ("*/overflow-codes.gif", corrupt(r"OSError: image file is truncated")),  # in fail/ and gif-test-suite/
    # corrupt compressed streams
    ("*/overflow-codes-max.gif", corrupt(r"OSError: codec configuration error")),
    ("*/fail/hang_114.gif", corrupt(r"OSError: broken data stream")),
    ("*/fail/invalid.4.gif", corrupt(r"OSError: broken data stream")),
    ("*/gif-test-suite/invalid-code.gif", corrupt(r"OSError: broken data stream")),
    ("*/randomly-modified/bug775697.jpg", corrupt(r"OSError: broken data stream")),
    ("golang/png-testdata/invalid-zlib.png", corrupt(r"OSError: broken data stream")),
    ("*/fail/invalid.2.png", corrupt(r"OSError: unrecognized data stream")),
    ("*/reftests/rle-too-many-pixels-2.tga", corrupt(r"OSError: buffer overrun")),
    # headers PIL understands but refuses
    ("*/fail/bug777315.bmp", corrupt(r"OSError: Unsupported BMP bitfields layout")),
    ("*/randomly-modified/bug775242.bmp", corrupt(r"OSError: Unsupported BMP bitfields layout")),
    ("*/randomly-modified/decodecolormap.bmp", corrupt(r"OSError: Unsupported BMP Palette size")),
    ("*/fail/invalid.1.bmp", corrupt(r"OSError: Unsupported BMP compression")),
    ("*/fail/invalid.1.ico", corrupt(r"OSError: Unsupported BMP compression")),
    ("*/fail/bug779016-infinite.icns", corrupt(r"ValueError: Unsupported icon subimage format")),
    ("*/fail/issue-95*.xpm", corrupt(r"ValueError: cannot read this XPM file")),
    ("*/randomly-modified/invalid.1.xpm", corrupt(r"ValueError: cannot read this XPM file")),
    ("*/fail/invalid.[12].ppm", corrupt(r"ValueError: invalid literal for int")),
    ("*/fail/invalid.[378].ppm", corrupt(r"ValueError: maxval must be greater than 0")),
    ("*/fail/DoS.tga", corrupt(r"ValueError: unknown raw mode")),
    ("*/fail/colormap-image-without-colormap.tga", corrupt(r"ValueError: unknown raw mode")),
    ("*/reftests/colormap-too-small.tga", corrupt(r"ValueError: unrecognized raw mode")),
    ("*/gif-test-suite/image-zero-width.gif", corrupt(r"ValueError: tile cannot extend outside image")),
    # not identified as any image format (broken magic/headers, or not images at all)
    ("gdk-pixbuf/bug775218.jpg", NOT_IMAGE),
    ("gdk-pixbuf/*.pixdata", NOT_IMAGE),  # GdkPixdata: gdk-pixbuf's own format, not an image file format
    ("gdk-pixbuf/test-animation.ani", NOT_IMAGE),  # Windows animated cursor
    ("*/fail/CVE-2017-2862.jpg", NOT_IMAGE),
    ("*/fail/bug778204.ico", NOT_IMAGE),
    ("*/fail/bug778584.gif", NOT_IMAGE),
    ("*/fail/bug779012.ico", NOT_IMAGE),
    ("*/fail/bug780269.tif", NOT_IMAGE),
    ("*/fail/bug784903-overflow-dimensions.tiff", NOT_IMAGE),
    ("*/fail/invalid.[13].png", NOT_IMAGE),
    ("*/fail/invalid.3.ico", NOT_IMAGE),
    ("*/fail/invalid.[56].ppm", NOT_IMAGE),
    ("*/randomly-modified/bad-header.ico", NOT_IMAGE),
    ("*/randomly-modified/bug775648.qtif", NOT_IMAGE),
    ("*/randomly-modified/bug776040.ico", NOT_IMAGE),
    ("*/randomly-modified/valid.1.ppm", NOT_IMAGE),  # "valid" before the random modification
    ("*/gif-test-suite/zero-*.gif", NOT_IMAGE),  # zero width/height/size screens
    ("*/gif-test-suite/image-zero-*.gif", NOT_IMAGE),  # zero height/size images
    ("*/gif-test-suite/max-size.gif", NOT_IMAGE),
    ("*/gif-test-suite/no-data.gif", NOT_IMAGE),
    ("*/gif-test-suite/*.conf", NOT_IMAGE),  # the suite's text descriptions
    ("*/gif-test-suite/*.rgba", NOT_IMAGE),  # raw reference pixels, no header
    ("*/gif-test-suite/*.icc", NOT_IMAGE),
    ("*/gif-test-suite/*.xmp", NOT_IMAGE),
    ("*/gif-test-suite/TESTS", NOT_IMAGE),
    ("golang/png-testdata/invalid-crc32.png", NOT_IMAGE),  # PIL checks the IHDR crc while identifying
    ("golang/png-testdata/pngsuite/*.sng", NOT_IMAGE),  # PngSuite's text sources
    ("golang/png-testdata/pngsuite/README*", NOT_IMAGE),
    # Everything else decodes: the reference images, the PngSuite subset, Go's
    # JPEG/PNG/GIF variants (progressive, CMYK, 4:1:0 ... 4:4:4), and files that
    # only gdk-pixbuf rejects or that survive their "random modification"
    # (golang's invalid-trunc/-noend/-palette PNGs decode in PIL too).
    ("*", PREDICTION),
]


def debian_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and not p.name.startswith("."))


def expect_debian(path: Path) -> Expect:
    rel = path.relative_to(CORPUS).as_posix()
    return next(expect for pattern, expect in DEBIAN if fnmatch.fnmatchcase(rel, pattern))


# -- files the test makes ----------------------------------------------------------------
def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _jpeg_claiming_size(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header declares ``width`` x ``height``."""
    data = bytearray(_encode(Image.new("RGB", (8, 8), (90, 120, 30)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _gif_claiming_size(width: int, height: int) -> bytes:
    """A small GIF whose screen and image descriptor declare ``width`` x ``height``."""
    data = bytearray(_encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    image = data.index(b"\x2c")  # image descriptor: ',' left top width height
    data[image + 5 : image + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def _png_rgb48(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), from 8-bit pixels."""
    height, width, _ = rgb.shape
    wide = (rgb.astype(">u2") * 257).reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in wide)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"


def synthetic_corpus(root: Path, photo: Path) -> dict[Path, Expect]:
    """Write the made-up cases into ``root``; returns path -> expected outcome."""
    with Image.open(photo) as im:
        rgb = im.convert("RGB").resize((160, 120), Image.Resampling.BILINEAR)
    jpeg = _encode(rgb, "JPEG", quality=90)
    png = _encode(rgb, "PNG")
    rng = np.random.default_rng(7)
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT), rgb.rotate(180)]
    cases: dict[str, tuple[bytes, Expect]] = {
        "empty.jpg": (b"", EMPTY),
        "random.jpg": (rng.bytes(4096), NOT_IMAGE),
        "text.jpg": (b"just some text with a .jpg name\n" * 40, NOT_IMAGE),
        "page.html": (b"<!doctype html><html><head><title>x</title></head><body><img src=a.jpg></body></html>",
                      NOT_IMAGE),
        "document.pdf": (b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n", NOT_IMAGE),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], corrupt(r"OSError: image file is truncated")),
        "truncated.png": (png[: len(png) // 2], corrupt(r"OSError: image file is truncated")),
        "png-named.jpg": (png, PREDICTION),  # the content decides, not the name
        "bomb-70000x70000.png": (png_claiming_size(70_000, 70_000), bomb(70_000 * 70_000)),
        "bomb-65500x65500.jpg": (_jpeg_claiming_size(65_500, 65_500), bomb(65_500 * 65_500)),
        "bomb-65535x65535.gif": (_gif_claiming_size(65_535, 65_535), bomb(65_535 * 65_535)),
        "bomb-12000x12000.png": (png_claiming_size(12_000, 12_000), over_limit(12_000, 12_000)),
        "aspect-1x20000.png": (_encode(Image.new("RGB", (1, 20_000), (10, 200, 30)), "PNG"), PREDICTION),
        "aspect-20000x1.png": (_encode(Image.linear_gradient("L").resize((20_000, 1)), "PNG"), PREDICTION),
        "rgb48.png": (_png_rgb48(np.asarray(rgb)), PREDICTION),
        "progressive.jpg": (_encode(rgb, "JPEG", progressive=True, quality=80), PREDICTION),
        "animated.gif": (animated_gif()[0], PREDICTION),
        "photo.webp": (_encode(rgb, "WEBP", quality=80), PREDICTION),
        "alpha-lossless.webp": (_encode(rgb.convert("RGBA"), "WEBP", lossless=True), PREDICTION),
        "animated.webp": (_encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50),
                          PREDICTION),
        "photo.tiff": (_encode(rgb, "TIFF", compression="tiff_deflate"), PREDICTION),
        "photo.bmp": (_encode(rgb, "BMP"), PREDICTION),
        "drawing.eps": (EPS, Expect(ImageDecodeError, r"EPS/PostScript is not accepted", pil_oracle=False)),
    }
    if features.check("avif"):
        cases["photo.avif"] = (_encode(rgb, "AVIF"), PREDICTION)
    # every PIL mode users meet: 16-bit gray, palette + transparency, LA, CMYK, 1-bit, 1x1, 7x300
    for name, data in mode_samples(photo).items():
        cases[f"mode-{name}"] = (data, PREDICTION)
    out: dict[Path, Expect] = {}
    for name, (data, expect) in cases.items():
        (root / name).write_bytes(data)
        out[root / name] = expect
    if hasattr(os, "mkfifo"):  # a named pipe: opening it for reading would block forever
        os.mkfifo(root / "pipe.jpg")
        out[root / "pipe.jpg"] = Expect(ImageReadError, r"is not a regular file \(a FIFO", pil_oracle=False)
    out[root / "missing.jpg"] = Expect(ImageReadError, r"cannot read file \(No such file or directory\)",
                                       pil_oracle=False)
    return out


# -- the independent reference: Pillow alone, then transformers + torch -------------------
_PIL_BOMB = re.compile(r"Image size \((\d+) pixels\) exceeds limit")


def pil_reference(path: Path) -> tuple[str, int | None, Image.Image | None]:
    """Pillow's own verdict, with its default settings and none of our code.

    ('prediction', pixels, rgb) | ('ImageTooLargeError', pixels, None) | ('error', None, None).
    Too large means PIL's DecompressionBombError (its message carries the
    declared pixel count) or a declared size over our 100 Mpx limit.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return "error", None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this test is single-threaded; PIL's chatter is irrelevant here
        try:
            with Image.open(path) as image:
                pixels = image.width * image.height
                if pixels > DEFAULT_MAX_PIXELS:
                    return "ImageTooLargeError", pixels, None
                image.seek(0)
                image.load()
                return "prediction", pixels, image.convert("RGB")  # the model card's conversion
        except Image.DecompressionBombError as exc:
            match = _PIL_BOMB.search(str(exc))
            return "ImageTooLargeError", int(match.group(1)) if match else None, None
        except Exception:  # noqa: BLE001 - any other PIL failure means "not decodable", the point here
            return "error", None, None


