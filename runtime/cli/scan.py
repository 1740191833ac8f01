"""``deepfake-edge scan``: classify sampled frames of videos and streams, JSON lines on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_bundle_argument,
    add_detector_options,
    load_detector,
    non_negative_float,
    positive_float,
    positive_int,
)
from .live import EPILOG as LIVE_EPILOG
from .live import add_live_options, check_mqtt_options, watch_sources

if TYPE_CHECKING:
    from ..credentials import Source
    from ..video import ScanItem, ScanOptions
    from ..video.evidence import PeakFrame

HELP = "classify sampled frames of video files and streams (JSON lines on stdout)"
DESCRIPTION = """\
Classify video files, folders of videos (searched recursively) and streams FFmpeg
reads (rtsp://, http(s)://, udp://, tcp://, /dev/videoN). Needs the [video] extra.
Frames are sampled by presentation time (--fps a second of video) and each goes
through exactly the image path. Prints JSON lines:
  {"source": ..., "time": 12.0, "label": "fake", "scores": {...}}         a sampled frame
  {"source": ..., "frames": 30, "duration": 30.0, "label": "fake",
   "score": 0.91, "aggregate": "mean", "segments": [{"start", "end",
   "frames", "max_score", "mean_score"}, ...]}                            each source, at its end
  {"source": ..., "error": "VideoDecodeError", "message": ...}            a source that failed
Frames classified before a source broke stay reported. Rotation metadata is
applied as the ffmpeg command line does. The exit code is 1 if any source failed.
With --evidence DIR, frame lines get "hotspots" (the cells leaning most toward
the positive label, boxes in the frame's pixels) and each segment of a video
file gets "evidence": the overlay of its peak frame, written to
DIR/<video>-<time>s.evidence.png, and that frame's "hotspots". For live
streams, alert lines (and MQTT alert payloads) get the peak frame's "hotspots",
and its overlay is written to DIR/<camera>-alert<id>-<event>.evidence.png."""


def configure(parser: argparse.ArgumentParser) -> None:
    from ..video.aggregate import AGGREGATES

    add_bundle_argument(parser)
    parser.add_argument("sources", nargs="*", metavar="SOURCE",
                        help="video files, folders, or stream URLs (${DEEPFAKE_EDGE_*} placeholders are filled "
                             "from the environment)")
    parser.add_argument("--sources-file", action="append", default=[], metavar="FILE",
                        help="read more sources from FILE, one a line, '#' comments (it may hold camera passwords, "
                             "so it must not be readable by group or others: chmod 600)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--fps", type=positive_float, default=1.0,
                          help="sampled frames per second of video time (default: 1)")
    sampling.add_argument("--keyframes", action="store_true",
                          help="decode only keyframes, at most --fps a second: the fastest scan of long files")
    sampling.add_argument("--start", type=non_negative_float, default=0.0, help="skip to this time, in s (default: 0)")
    sampling.add_argument("--duration", type=positive_float, default=None,
                          help="scan at most this many s of video (live streams: watch this many s)")
    sampling.add_argument("--max-frames", type=positive_int, default=None,
                          help="stop each source after N sampled frames")
    sampling.add_argument("--decoder-threads", type=positive_int, default=1,
                          help="FFmpeg decoding threads per source (default: 1, leaving the cores to the model)")
    sampling.add_argument("--timeout", type=positive_float, default=10.0,
                          help="give up on a source that opens or sends nothing for this many s (default: 10)")
    add_detector_options(parser)
    verdict = parser.add_argument_group("per-video verdict")
    verdict.add_argument("--aggregate", choices=sorted(AGGREGATES), default="mean",
                         help="'mean': mean manipulation score over sampled frames (DeepfakeBench); 'confident': "
                              "the DFDC winner's rule, the mean of confident frames when enough agree (default: mean)")
    verdict.add_argument("--min-segment", type=non_negative_float, default=0.0,
                         help="report runs of frames at or over the threshold lasting at least this many s "
                              "(default: 0, every run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--evidence", type=Path, metavar="DIR",
                        help="frame lines get 'hotspots'; each segment's peak frame (each alert's, for live streams) "
                             "is drawn with its evidence map into DIR (bundles exported with patch_logits)")
    add_live_options(parser)
    parser.epilog = LIVE_EPILOG


def scan_options(args: argparse.Namespace) -> ScanOptions:
    """The command line's options as the Python API's."""
    from ..video import Sampling, ScanOptions

    sampling = Sampling(fps=args.fps, keyframes=args.keyframes, start=args.start, duration=args.duration,
                        max_frames=args.max_frames, decoder_threads=args.decoder_threads,
                        open_timeout_s=args.timeout, read_timeout_s=args.timeout)
    return ScanOptions(sampling=sampling, aggregate=args.aggregate, min_segment=args.min_segment,
                       evidence=getattr(args, "evidence", None) is not None)


def expand_sources(sources: list[str]) -> Iterator[Source]:
    """URLs and devices as given; files as given; folders expanded to their videos, recursively."""
    from ..credentials import Source
    from ..paths import expand_paths
    from ..video.frames import VIDEO_SUFFIXES, is_url

    for source in sources:
        if is_url(source):
            yield Source.of(source)  # never through Path, which would fold 'rtsp://' into 'rtsp:/'
        else:
            yield from (Source.of(str(p)) for p in expand_paths([source], VIDEO_SUFFIXES, recursive=True))


def given_sources(args: argparse.Namespace) -> list[Source]:
    """SOURCE arguments and --sources-file lines, expanded; every placeholder checked now, so an unset
    variable is one clear error before the model loads. Raises ``CredentialError``."""
    from ..credentials import read_private_lines
    from ..errors import CredentialError

    given = list(args.sources)
    for path in args.sources_file:
        given += read_private_lines(path, "sources file")
    sources = list(expand_sources(given))
    shown: dict[str, Source] = {}
    for source in sources:
        source.secret_url()  # the value is not kept: it is filled again when the source is opened
        if shown.setdefault(source.name, source) != source:  # same URL, other credentials
            raise CredentialError(source.name, "given twice with different credentials; its lines and MQTT "
                                               "topics could not be told apart")
    return sources


def print_item(item: ScanItem, evidence_dir: Path | None = None, positive: str = "fake") -> None:
    from ..video import VideoSummary

    line = item.to_dict()
    if evidence_dir is not None and isinstance(item, VideoSummary) and item.peak_frames:
        line["segments"] = [{**segment, **_peak_evidence(item.source, peak, evidence_dir, positive)}
                            for segment, peak in zip(line["segments"], item.peak_frames, strict=True)]  # type: ignore[call-overload]
    print(json.dumps(line), flush=True)


def _peak_evidence(source: str, peak: PeakFrame | None, directory: Path, positive: str) -> dict[str, object]:
    """The overlay of a segment's peak frame, written into ``directory``, and the fields that point to it."""
    from ..evidence import evidence_fields, save_overlay

    if peak is None:
        return {}
    path = save_overlay(peak.prediction, peak.image, directory, f"{Path(source).stem}-{peak.time:.3f}s",
                        positive_label=positive)
    return {"evidence": str(path), "peak_time": round(peak.time, 3), **evidence_fields(peak.prediction)}


def run(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("video")
    from ..errors import CredentialError
    from ..progress import progress
    from ..video import VideoError, scan
    from ..video.frames import expected_samples, is_url
    from ..video.live import is_live

    options = scan_options(args)
    problem = check_mqtt_options(args)
    if problem is None and not args.sources and not args.sources_file:
        problem = "give at least one SOURCE or --sources-file"
    if problem is not None:
        print(f"deepfake-edge scan: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sources = given_sources(args)
    except CredentialError as exc:
        print(f"deepfake-edge scan: {exc}", file=sys.stderr)
        return EXIT_USAGE
    detector = load_detector(args)
    positive = detector.require_evidence() if args.evidence is not None else "fake"  # an old bundle: refused now
    if not sources:
        print("deepfake-edge scan: no video files found", file=sys.stderr)
        return EXIT_INPUT_FAILED
    live = [source for source in sources if is_live(source.name)]
    failed = 0
    for source in (source for source in sources if source not in live):
        show = not args.no_progress and not is_url(source.name)
        expected = expected_samples(source, options.sampling) if show else None
        items = scan(detector, source, options)
        # total + 1: the summary line is the last item
        for item in progress(items, total=None if expected is None else expected + 1, desc=source.name,
                             enabled=show, unit="frame"):
            failed += isinstance(item, VideoError)
            print_item(item, args.evidence, positive)
    if args.mqtt is not None and not live:
        print("deepfake-edge scan: --mqtt publishes live streams only; no source is a stream", file=sys.stderr)
    if live:
        failed += watch_sources(args, detector, live)
    if failed:
        print(f"deepfake-edge scan: {failed} of {len(sources)} sources failed", file=sys.stderr)
        return EXIT_INPUT_FAILED
    return EXIT_OK
