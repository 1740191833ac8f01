"""``deepfake-edge serve``: the HTTP service for appliances (needs the [serve] extra)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..serve.config import ServeConfig
from .auth_options import add_auth_options, add_tls_options, api_keys_from, describe_keys, is_loopback, tls_files_from
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    add_bundle_argument,
    add_detector_options,
    load_detector,
    non_negative_float,
    port,
    positive_float,
    positive_int,
)

HELP = "run the HTTP API, browser page and Prometheus metrics (needs [serve])"
DESCRIPTION = """\
Serve a bundle over HTTP on a CPU-only box. Binds to 127.0.0.1 by default.
  POST /v1/classify          one image: raw body (image/*) or one multipart file part   [key]
  POST /v1/classify/batch    several multipart file parts -> a list, per-item errors    [key]
  POST /v1/classify/video    one clip (needs [video])                                   [key]
  GET  /v1/info  /metrics    model and limits; Prometheus text format                   [key]
  GET  /healthz  /readyz     liveness; readiness (model loaded and warmed up)
  GET  /docs  /openapi.json  API documentation
  GET  /                     a small page to try an image in the browser (asks for the key)
[key]: needs an API key, 'Authorization: Bearer <key>' (see --api-key-file; 401
without one, 429 with Retry-After after 10 wrong keys from an address in a minute).
Concurrent requests are batched into one model call (--max-batch, --max-wait-ms).
Errors are JSON {"error": code, "message": ...}: 400 bad image, 408 slow upload,
413 too large, 415 media type, 503 queue full or not ready (Retry-After),
504 per-request timeout. Access logs are JSON lines on stderr. SIGTERM/SIGINT
stop accepting, let in-flight requests finish, then exit."""


def configure(parser: argparse.ArgumentParser) -> None:
    d = ServeConfig()
    add_bundle_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=port, default=8000, help="TCP port (default: 8000)")
    add_detector_options(parser)
    parser.add_argument("--max-batch", type=positive_int, default=d.max_batch,
                        help=f"images per model call (default: {d.max_batch})")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=d.max_wait_ms,
                        help=f"how long an idle model waits to fill a batch (default: {d.max_wait_ms:g})")
    parser.add_argument("--max-queue", type=positive_int, default=d.max_queue,
                        help=f"images in flight before 503 (default: {d.max_queue})")
    parser.add_argument("--max-body-bytes", type=positive_int, default=d.max_body_bytes,
                        help=f"largest request body (default: {d.max_body_bytes:,})")
    parser.add_argument("--max-batch-items", type=positive_int, default=d.max_batch_items,
                        help=f"most images in one batch request (default: {d.max_batch_items})")
    parser.add_argument("--timeout", type=positive_float, default=d.timeout_s,
                        help=f"per-request deadline in seconds, then 504 (default: {d.timeout_s:g})")
    parser.add_argument("--read-timeout", type=positive_float, default=d.read_timeout_s,
                        help=f"seconds allowed to upload a body, then 408 (default: {d.read_timeout_s:g})")
    parser.add_argument("--decode-workers", type=positive_int, default=d.decode_workers,
                        help=f"threads decoding uploads (default: {d.decode_workers})")
    parser.add_argument("--max-video-seconds", type=positive_float, default=d.max_video_seconds,
                        help="seconds of an uploaded video scanned at most; the answer says when it was capped "
                             f"(default: {d.max_video_seconds:g})")
    parser.add_argument("--video-memory-mb", type=positive_int, default=d.video_memory_mb,
                        help="memory the child process decoding an uploaded video may use beyond its own start; "
                             f"a video needing more fails alone with 500 (default: {d.video_memory_mb})")
    parser.add_argument("--max-connections", type=positive_int, default=512,
                        help="open connections before uvicorn answers 503 (default: 512)")
    add_auth_options(parser, applies="required on every endpoint marked [key] above")
    add_tls_options(parser)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level of the JSON logs on stderr (default: info)")


def run(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("serve")  # ExtraNotInstalledError -> exit 3 with the pip hint
    from ..serve.accesslog import configure_json_logging
    from ..serve.app import create_app
    from ..serve.server import serve

    try:
        config = ServeConfig(
            max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
            max_body_bytes=args.max_body_bytes, max_batch_items=args.max_batch_items, timeout_s=args.timeout,
            read_timeout_s=args.read_timeout, decode_workers=args.decode_workers,
            max_video_seconds=args.max_video_seconds, video_memory_mb=args.video_memory_mb,
        )
        tls = tls_files_from(args)
        api_keys = api_keys_from(args)  # before the model loads: a refused key file fails fast
    except ValueError as exc:  # CredentialError too: it names the file and the fix, never a key
        print(f"deepfake-edge serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    level = getattr(logging, args.log_level.upper())
    configure_json_logging(level)
    log = logging.getLogger("deepfake_edge.serve")
    detector = load_detector(args)
    if api_keys is None:
        log.warning("authentication is off (--no-auth): anyone who can reach %s:%s can use the API",
                    args.host, args.port, extra={"fields": {"event": "auth_off", "host": args.host}})
    else:
        log.info(describe_keys(api_keys), extra={"fields": {
            "event": "api_keys", "keys": len(api_keys), "origin": api_keys.origin, "generated": api_keys.generated,
        }})
        if tls is None and not is_loopback(args.host):
            log.warning("binding to %s without TLS: API keys cross the network in clear text; use --tls-cert and "
                        "--tls-key, or a TLS reverse proxy", args.host,
                        extra={"fields": {"event": "no_tls", "host": args.host}})
    log.info("starting", extra={"fields": {
        "event": "starting", "bundle": str(args.bundle), "variant": detector.variant_name,
        "variant_reason": detector.choice.reason if detector.choice else "requested",
        "host": args.host, "port": args.port, "tls": tls is not None, "auth": api_keys is not None,
        "threads": args.threads, "threshold": detector.threshold,
        "max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms, "max_queue": config.max_queue,
    }})
    serve(create_app(detector, config, api_keys=api_keys), host=args.host, port=args.port, log_level=args.log_level,
          ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None, proxy_headers=args.behind_proxy,
          # in-flight requests get their full deadline (plus upload time) to finish on shutdown
          graceful_timeout_s=config.timeout_s + 5, max_connections=args.max_connections)
    return EXIT_OK
