"""Load test of ``deepfake-edge serve`` on loopback: does dynamic batching pay off?

For each variant and each ``--max-batch`` setting it starts the service in a
subprocess on a free loopback port, sends ``--requests`` images from
``--clients`` concurrent keep-alive connections, and reports throughput,
p50/p95 latency, errors and the batch sizes the server actually formed (from
its /metrics). An overload phase then floods a service with a small queue and
counts the 503s, checking that every request still gets a clean answer and that
/healthz keeps answering. Everything is bounded in count and time, and the servers it starts bind to
127.0.0.1 only.

    python -m deepfake_edge.benchmarks.load_test BUNDLE --quick
    python -m deepfake_edge.benchmarks.load_test BUNDLE --variants fp32 int8 --max-batch 1 8 \\
        --clients 8 --requests 200 --threads 2 --json load.json

The client uses only the standard library (http.client in threads), so it
needs nothing beyond the [serve] extra the server needs. Client and server
share the machine: on a small box the client's own CPU use is part of what
is measured, the same for every setting compared.
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepfake_edge.apikeys import ENV_VAR, generate_key
from deepfake_edge.export.sample_images import synthetic_image

__all__ = ["PhaseResult", "main", "run_clients", "synthetic_jpeg"]

EXIT_OK, EXIT_ERRORS = 0, 1
# The server runs as users run it, with authentication on: a fresh key, given through the environment.
_KEY = generate_key()
_AUTH = {"Authorization": f"Bearer {_KEY}"}


# -- the request body ------------------------------------------------------------
def synthetic_jpeg(width: int = 1280, height: int = 720, seed: int = 0) -> bytes:
    """A camera-frame-sized JPEG of a photo-like synthetic image, so decoding costs what it would."""
    buffer = io.BytesIO()
    synthetic_image("smooth", (width, height), np.random.default_rng(seed)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# -- the server ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=_AUTH)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn drains and exits), then SIGKILL if it has not within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


@contextmanager
def spawned_server(
    bundle: Path, serve_args: Sequence[str], *, startup_timeout_s: float = 120.0
) -> Iterator[tuple[str, int]]:
    """``deepfake-edge serve BUNDLE`` on a free loopback port; yields (host, port) once /readyz is 200."""
    host, port = "127.0.0.1", _free_port()
    command = [sys.executable, "-m", "deepfake_edge.cli", "serve", str(bundle), "--host", host, "--port", str(port),
               "--log-level", "warning", *serve_args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, ENV_VAR: _KEY})
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                stderr = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"the server exited with {proc.returncode}: {stderr}")
            try:
                if _get(host, port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready within {startup_timeout_s:g} s")
            time.sleep(0.1)
        yield host, port
    finally:
        stop_server(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def _batch_stats(host: str, port: int) -> tuple[float, float]:
    """(model calls, images) from the server's batch-size histogram."""
    status, body = _get(host, port, "/metrics")
    if status != 200:
        return 0.0, 0.0
    values = {}
    for line in body.decode().splitlines():
        if line.startswith(("deepfake_edge_batch_size_count ", "deepfake_edge_batch_size_sum ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("deepfake_edge_batch_size_count", 0.0), values.get("deepfake_edge_batch_size_sum", 0.0)


# -- the clients -----------------------------------------------------------------
@dataclass
class PhaseResult:
    """What one load phase measured; latencies are client-side, in milliseconds."""

    name: str
    clients: int
    sent: int = 0
    ok: int = 0
    rejected_503: int = 0
    errors: int = 0  # anything but 200 and 503, including transport errors
    seconds: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None
    mean_batch: float | None = None
    healthz_max_ms: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def run_clients(host: str, port: int, body: bytes, *, clients: int, requests: int, time_limit_s: float,
                name: str, watch_health: bool = False) -> PhaseResult:
    """``clients`` threads with one keep-alive connection each send ``requests`` images in total."""
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + time_limit_s
    health_ms: list[float] = []
    stop_health = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=max(5.0, time_limit_s))
        try:
            while next(counter) < requests and time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": "image/jpeg", **_AUTH})
                    response = conn.getresponse()
                    response.read()
                    status = str(response.status)
                except (OSError, http.client.HTTPException) as exc:
                    status = type(exc).__name__
                    conn.close()  # reconnects on the next request
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == "200":
                        latencies.append(elapsed)
        finally:
            conn.close()

    def health() -> None:
        while not stop_health.wait(0.05):
            started = time.perf_counter()
            try:
                _get(host, port, "/healthz")
            except OSError:
                health_ms.append(float("inf"))
                continue
            health_ms.append((time.perf_counter() - started) * 1000)

    calls_before, images_before = _batch_stats(host, port)
    watcher = threading.Thread(target=health, daemon=True) if watch_health else None
    if watcher:
        watcher.start()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    stop_health.set()
    if watcher:
        watcher.join()
    calls_after, images_after = _batch_stats(host, port)
    calls = calls_after - calls_before
    ok = statuses.get("200", 0)
    return PhaseResult(
        name=name, clients=clients, sent=sum(statuses.values()), ok=ok, rejected_503=statuses.get("503", 0),
        errors=sum(n for s, n in statuses.items() if s not in ("200", "503")), seconds=round(seconds, 2),
        throughput_rps=round(ok / seconds, 2) if seconds else 0.0,
        p50_ms=_percentile(latencies, 50), p95_ms=_percentile(latencies, 95),
        max_ms=round(max(latencies), 1) if latencies else None,
        mean_batch=round((images_after - images_before) / calls, 2) if calls else None,
        healthz_max_ms=round(max(health_ms), 1) if health_ms else None, statuses=statuses,
    )


# -- the command -----------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deepfake_edge.benchmarks.load_test",
        description="Load-test 'deepfake-edge serve' on loopback: throughput and latency with and without "
                    "dynamic batching, then an overload phase counting 503s.",
    )
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="variants to serve (default: every variant of the bundle)")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8],
                        help="--max-batch settings to compare (default: 1 8; 1 = no batching)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="server --max-wait-ms (default: 5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--requests", type=int, default=200, help="requests per phase (default: 200)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per phase at most (default: 120)")
    parser.add_argument("--threads", type=int, default=None, help="server onnxruntime threads (default: all cores)")
    parser.add_argument("--decode-workers", type=int, default=None,
                        help="server decode threads (default: the server's)")
    parser.add_argument("--image", type=Path, default=None,
                        help="image to send (default: a synthetic 1280x720 JPEG, the size of a camera frame)")
    parser.add_argument("--overload-queue", type=int, default=4,
                        help="max-queue of the overload phase's server (default: 4; 0 skips the phase)")
    parser.add_argument("--overload-clients", type=int, default=16, help="clients in the overload phase (default: 16)")
    parser.add_argument("--quick", action="store_true", help="a short run: 4 clients, 32 requests per phase")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return parser


def _serve_args(args: argparse.Namespace, variant: str, max_batch: int, max_queue: int) -> list[str]:
    serve_args = ["--variant", variant, "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
                  "--max-queue", str(max_queue), "--max-batch-items", str(min(32, max_queue))]
    if args.threads is not None:
        serve_args += ["--threads", str(args.threads)]
    if args.decode_workers is not None:
        serve_args += ["--decode-workers", str(args.decode_workers)]
    return serve_args


def _print_table(results: list[PhaseResult]) -> None:
    header = (f"{'phase':<28} {'clients':>7} {'ok':>5} {'503':>5} {'err':>4} {'req/s':>7} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'batch':>6} {'healthz max':>11}")
    print(header)
    print("-" * len(header))
    for r in results:
        def cell(value: float | None, width: int) -> str:
            return f"{value:>{width}}" if value is not None else f"{'-':>{width}}"
        print(f"{r.name:<28} {r.clients:>7} {r.ok:>5} {r.rejected_503:>5} {r.errors:>4} {r.throughput_rps:>7} "
              f"{cell(r.p50_ms, 8)} {cell(r.p95_ms, 8)} {cell(r.mean_batch, 6)} {cell(r.healthz_max_ms, 11)}")


def _machine() -> dict[str, object]:
    import onnxruntime

    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "onnxruntime": onnxruntime.__version__,
            "platform": sys.platform}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.clients, args.requests = 4, 32
    if min(args.clients, args.requests, *args.max_batch) < 1:
        print("load_test: --clients, --requests and --max-batch must be >= 1", file=sys.stderr)
        return 2
    from ..bundle import Bundle

    bundle = Bundle.open(args.bundle)
    variants = args.variants or sorted(bundle.manifest.variants)
    body = args.image.read_bytes() if args.image else synthetic_jpeg()
    # The measured phases must never see a 503: the queue holds every client's request.
    queue = max(64, 2 * args.clients)
    results: list[PhaseResult] = []
    for variant in variants:
        for max_batch in args.max_batch:
            name = f"{variant} max-batch {max_batch}"
            print(f"[load_test] {name}: {args.clients} clients, {args.requests} requests", file=sys.stderr)
            with spawned_server(args.bundle, _serve_args(args, variant, max_batch, queue)) as (host, port):
                # warm the connections and onnxruntime's per-shape plans; not measured
                run_clients(host, port, body, clients=args.clients, requests=2 * args.clients,
                            time_limit_s=args.time_limit, name="warm-up")
                results.append(run_clients(host, port, body, clients=args.clients, requests=args.requests,
                                           time_limit_s=args.time_limit, name=name))
    if args.overload_queue > 0:
        variant = variants[-1]
        name = f"overload {variant} queue {args.overload_queue}"
        print(f"[load_test] {name}: {args.overload_clients} clients", file=sys.stderr)
        serve_args = _serve_args(args, variant, max(args.max_batch), args.overload_queue)
        with spawned_server(args.bundle, serve_args) as (host, port):
            results.append(run_clients(host, port, body, clients=args.overload_clients, requests=args.requests,
                                       time_limit_s=args.time_limit, name=name, watch_health=True))
    _print_table(results)
    if args.json:
        args.json.write_text(json.dumps({"machine": _machine(), "bundle": str(args.bundle), "image_bytes": len(body),
                                         "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": [asdict(r) for r in results]}, indent=2))
    errors = sum(r.errors for r in results)
    if errors:
        print(f"[load_test] {errors} requests failed with something other than 200 or 503", file=sys.stderr)
        return EXIT_ERRORS
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
