"""Resident start-up: how long after ``deepfake-edge serve`` starts does its first ``/v1/classify`` answer?

An appliance's service is started once and then answers for days, so its start-up cost is
the time to its *first answer*, not a one-shot process's. Each round starts a new server
process on a free loopback port (auth off: the key is not what is timed), posts one photo
until the first 200 arrives, and stops the server::

    python -m deepfake_edge.benchmarks.first_answer --bundle BUNDLE --runs 3

Every wait is bounded: a server that never answers fails the round after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .inputs import write_jpeg
from .load_test import stop_server
from .machine import describe_machine, summary_line

__all__ = ["first_answer", "main"]

POLL_S = 0.01


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(port: int, body: bytes, timeout: float) -> int | None:
    """The status of one classify request, or None while nothing listens yet."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": "image/jpeg"})
        return conn.getresponse().status
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    finally:
        conn.close()


def first_answer(bundle: Path, photo: Path, *, variant: str | None, timeout: float) -> float:
    """Seconds from starting ``deepfake-edge serve`` to its first 200 on ``/v1/classify``."""
    port = _free_port()
    argv = [sys.executable, "-m", "deepfake_edge.cli", "serve", str(bundle), "--host", "127.0.0.1",
            "--port", str(port), "--no-auth", *(["--variant", variant] if variant else [])]
    body = photo.read_bytes()
    start = time.perf_counter()
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            if server.poll() is not None:
                raise RuntimeError(f"{' '.join(argv)} exited {server.returncode} before answering")
            status = _post(port, body, timeout)
            if status == 200:
                return time.perf_counter() - start
            time.sleep(POLL_S)  # refused (not listening yet) or 503 (warming up): ask again
        raise TimeoutError(f"no answer from {' '.join(argv)} within {timeout:.0f} s")
    finally:
        stop_server(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle to serve (base-512 default bundle)")
    parser.add_argument("--variant", default=None, help="pass --variant to serve (default: serve's own default)")
    parser.add_argument("--runs", type=int, default=3, help="server starts to time (default: 3)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one start may take (default: 120)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.timeout > 0:
        parser.error("--runs and --timeout must be positive")
    with tempfile.TemporaryDirectory(prefix="first-answer-") as tmp:
        photo = Path(tmp) / "1080p.jpg"
        write_jpeg(photo, (1920, 1080))
        times = [first_answer(args.bundle, photo, variant=args.variant, timeout=args.timeout)
                 for _ in range(args.runs)]
    result: dict[str, Any] = {"machine": describe_machine(), "bundle": str(args.bundle), "runs": args.runs,
                              "first_answer_s": statistics.median(times), "samples_s": times}
    print(f"machine: {summary_line(result['machine'])}")
    print(f"serve: first /v1/classify answer {result['first_answer_s']:.2f} s after start "
          f"(median of {args.runs}: {', '.join(f'{t:.2f}' for t in times)})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
