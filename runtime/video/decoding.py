"""Sampled frames of a video as model-ready tensors: in this process, or in a child process with a memory limit.

:func:`decoded_samples` is the decode half of every scan: open, sample, convert, preprocess.
Each of those steps is driven by the video's bytes, so for untrusted files (the service's
uploads) :func:`isolated_samples` runs that same function in a child process:

- forked from a forkserver that has imported PyAV and this package once (a few ms a child,
  and no threads or model of the caller copied into it);
- with its address space limited (``RLIMIT_AS``) to what it has mapped at its start (the
  interpreter, PyAV, numpy: whatever the forkserver holds by then) plus ``memory_mb``, and no
  core dumps;
- sending plain bytes, never pickles: a tensor of the shape the parent expects, or JSON for
  the end and for errors, so a child subverted by a hostile file cannot make the parent
  unpickle anything.

The parent only runs the model on the tensors. It kills the child when the caller stops,
when the child sends nothing for ``stall_s``, and at the end in any case. A child killed by
a signal (a decoder crash) is a ``VideoDecoderCrashError``; one that ran out of its memory,
``VideoDecoderMemoryError``; a silent one, ``VideoTimeoutError``: that source fails, the
caller goes on.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import struct
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..credentials import Source
from ..errors import (
    DeepfakeEdgeError,
    ImageDecodeError,
    ImageError,
    ImageReadError,
    ImageTooLargeError,
    VideoDecodeError,
    VideoDecoderCrashError,
    VideoDecoderMemoryError,
    VideoOpenError,
    VideoSourceError,
    VideoTimeoutError,
)
from ..image_decoder import ImageDecoder
from .frames import Sampling, VideoReader, frame_name

__all__ = ["CHILD_NAME", "FAULT_ENV", "Isolation", "ReadEnd", "decoded_samples", "isolated_samples", "prepare"]

#: Test hook, read in the parent as each child starts: ``segv`` makes the child kill itself with
#: SIGSEGV and ``hang`` makes it sleep, as a crashing or looping decoder would.
FAULT_ENV = "DEEPFAKE_EDGE_TEST_DECODER_FAULT"
#: The name of every decoding child process (``multiprocessing.active_children()``).
CHILD_NAME = "deepfake-edge-decoder"

_POLL_S = 0.1  # how often the parent looks at ``stop`` while it waits for the child
_HANG_S = 3600.0
_FRAME_HEAD = struct.Struct("<d")  # a frame message: b"F", its time, then the float32 tensor
_MAX_JSON = 1 << 16
# Errors a child may report, rebuilt by name in the parent; anything else is a VideoDecodeError.
_ERRORS: dict[str, type[VideoSourceError] | type[ImageError]] = {cls.__name__: cls for cls in (
    VideoSourceError, VideoOpenError, VideoDecodeError, VideoTimeoutError,
    ImageError, ImageReadError, ImageDecodeError, ImageTooLargeError,
)}


@dataclass(frozen=True)
class ReadEnd:
    """How a read ended: ``position`` seconds of video seen; ``capped`` when it stopped at
    ``Sampling.end`` while the video went on."""

    position: float
    capped: bool = False


@dataclass(frozen=True)
class Isolation:
    """Decode in a child process that may map ``memory_mb`` more than at its start (frames, buffers,
    decoder state); stop it after ``stall_s`` without a frame."""

    memory_mb: int = 2048
    stall_s: float = 60.0

    def __post_init__(self) -> None:
        if self.memory_mb <= 0 or not (self.stall_s > 0 and math.isfinite(self.stall_s)):
            raise ValueError(f"invalid isolation options {self}")


def decoded_samples(
    decoder: ImageDecoder, source: str | Source, sampling: Sampling, *, keep_frames: bool = False
) -> Generator[tuple[Any, ...], None, ReadEnd]:
    """(time in s, model-ready tensor) of each sampled frame of ``source``; returns how the read ended.
    ``keep_frames`` adds the tensor's placement on the frame and the frame itself (for evidence overlays).

    Raises ``VideoSourceError`` or ``ImageError`` (naming the source or frame) after the frames before.
    """
    location = Source.of(source)
    with VideoReader(location, sampling, max_pixels=decoder.max_pixels) as reader:
        for time_s, image in reader.samples():
            name = frame_name(location.name, time_s)
            if keep_frames:
                tensor, placement = decoder.placed(image, name=name)
                yield time_s, tensor, placement, image
            else:
                yield time_s, decoder(image, name=name)
        return ReadEnd(min(reader.position, sampling.end), reader.capped)  # the frame past the end is not read


@functools.cache
def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["av", __name__])  # a module that fails to import is skipped
    return context


def prepare() -> None:
    """Start the forkserver now (once per process: it imports PyAV and this package) rather than on the first
    isolated decode."""
    _context()
    multiprocessing.forkserver.ensure_running()


def isolated_samples(
    decoder: ImageDecoder, given: str | Source, sampling: Sampling, isolation: Isolation, stop: threading.Event,
) -> Generator[tuple[float, np.ndarray], None, ReadEnd | None]:
    """:func:`decoded_samples` run in a child process (see the module docstring); returns None when
    ``stop`` was set. Closing the generator kills the child."""
    location = Source.of(given)
    source = location.name  # errors name the masked source
    context = _context()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child, name=CHILD_NAME, daemon=True,
        args=(sender, decoder, location, sampling, isolation.memory_mb * 2**20, os.environ.get(FAULT_ENV)),
    )
    shape = (3, decoder.preprocess.height, decoder.preprocess.width)
    frame_bytes = 1 + _FRAME_HEAD.size + 4 * math.prod(shape)
    try:
        child.start()
        sender.close()  # the child's copy is now the only writer: its death is our EOF
        while True:
            message = _receive(receiver, child, source, isolation.stall_s, stop, max(frame_bytes, _MAX_JSON))
            if message is None:
                return None
            kind, body = message[:1], message[1:]
            if kind == b"F" and len(message) == frame_bytes:
                time_s = _FRAME_HEAD.unpack_from(body)[0]
                if math.isfinite(time_s):
                    yield time_s, np.frombuffer(body, np.float32, offset=_FRAME_HEAD.size).reshape(shape)
                    continue
            elif kind in (b"E", b"X"):
                return _end_or_raise(kind, body, source, isolation)
            raise VideoDecoderCrashError(source, "the decoding process sent a malformed message")
    finally:
        receiver.close()
        sender.close()
        if child.pid is not None:
            child.kill()  # a no-op on a child that has exited
            child.join()
            child.close()  # its sentinel's file descriptor, now rather than at garbage collection


def _receive(
    receiver: multiprocessing.connection.Connection, child: multiprocessing.process.BaseProcess, source: str,
    stall_s: float, stop: threading.Event, max_bytes: int,
) -> bytes | None:
    """The child's next message; None once ``stop`` is set."""
    deadline = time.monotonic() + stall_s
    while not stop.is_set():
        if receiver.poll(_POLL_S):
            try:
                return receiver.recv_bytes(max_bytes)
            except EOFError:
                raise _died(child, source) from None
            except OSError as exc:  # longer than any message we expect
                raise VideoDecoderCrashError(source, f"the decoding process sent a malformed message ({exc})") from exc
        if time.monotonic() > deadline:
            raise VideoTimeoutError(source, f"the decoding process sent nothing for {stall_s:g} s (a hang?); "
                                            "it was stopped")
    return None


def _died(child: multiprocessing.process.BaseProcess, source: str) -> VideoDecoderCrashError:
    child.join(_POLL_S * 50)  # the pipe closes as the process exits: it is (nearly) gone
    code = child.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return VideoDecoderCrashError(source, f"the decoding process was killed by {name} (a decoder crash)")
    return VideoDecoderCrashError(source, f"the decoding process ended without an answer (exit code {code})")


def _end_or_raise(kind: bytes, body: bytes, source: str, isolation: Isolation) -> ReadEnd:
    try:
        fields = json.loads(body)
        if kind == b"E":
            return ReadEnd(float(fields["position"]), bool(fields["capped"]))
        name, reason, memory = str(fields["source"]), str(fields["reason"]), bool(fields["memory"])
        kind_name = str(fields["type"])
    except (ValueError, KeyError, TypeError) as exc:
        raise VideoDecoderCrashError(source, "the decoding process sent a malformed message") from exc
    if memory:
        raise VideoDecoderMemoryError(source, f"decoding needs more than the decoder's memory limit of "
                                              f"{isolation.memory_mb} MB ({reason})")
    raise _ERRORS.get(kind_name, VideoDecodeError)(name, reason)


def _mapped_bytes() -> int:
    """This process's address space now (0 without ``/proc``)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _child(
    sender: multiprocessing.connection.Connection, decoder: ImageDecoder, source: Source, sampling: Sampling,
    memory_bytes: int, fault: str | None,
) -> None:
    """The child process: limits, then :func:`decoded_samples`, each item sent as bytes."""
    import resource  # POSIX only, as the forkserver is: imported where it runs

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file holding the upload
    # Relative to the start: the forkserver's own mappings vary (thread arenas it made are inherited).
    limit = _mapped_bytes() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        time.sleep(_HANG_S)
    samples = decoded_samples(decoder, source, sampling)
    try:
        while True:
            time_s, tensor = next(samples)
            sender.send_bytes(b"F" + _FRAME_HEAD.pack(time_s) + np.ascontiguousarray(tensor, np.float32).tobytes())
    except StopIteration as done:
        end: ReadEnd = done.value
        sender.send_bytes(b"E" + json.dumps({"position": end.position, "capped": end.capped}).encode())
    except (DeepfakeEdgeError, MemoryError) as exc:
        # The limit shows as a MemoryError, or as our error wrapping one (PIL, FFmpeg's ENOMEM).
        memory = isinstance(exc, MemoryError) or isinstance(exc.__cause__, MemoryError)
        report = {"type": type(exc).__name__, "source": getattr(exc, "source", source.name),
                  "reason": getattr(exc, "reason", None) or str(exc) or type(exc).__name__, "memory": memory}
        sender.send_bytes(b"X" + json.dumps(report).encode())
    finally:
        samples.close()
        sender.close()
