"""API keys and TLS of the HTTP service, against a real uvicorn server on loopback.

Which endpoints need a key is read from the app's own route table, so an
endpoint added later without a decision fails here. Other clients are real
ones from another loopback address (127.0.0.2); certificates come from trustme.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="the service tests need httpx ([test] extra)")
trustme = pytest.importorskip("trustme", reason="the TLS tests need trustme ([test] extra)")

from fastapi.routing import APIRoute
from starlette.requests import Request

from deepfake_edge import Detector
from deepfake_edge.apikeys import ENV_VAR, ApiKeys, default_key_file, generate_key, load_api_keys, read_key_file
from deepfake_edge.errors import CredentialError
from deepfake_edge.serve import ServeConfig, ServerThread, create_app
from deepfake_edge.serve.auth import FailureLimiter, client_address

from serve_helpers import AUTH, FAST, KEY, KEYS, wait_ready

PROTECTED = {("POST", "/v1/classify"), ("POST", "/v1/classify/batch"), ("POST", "/v1/classify/video"),
             ("GET", "/v1/info"), ("GET", "/metrics")}
OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/docs"), ("GET", "/redoc"),
        ("GET", "/openapi.json"), ("GET", "/docs/oauth2-redirect")}


@pytest.fixture(scope="module")
def app(fp32: Detector):  # noqa: ANN201 - a FastAPI app
    return create_app(fp32, FAST, api_keys=KEYS)


@pytest.fixture(scope="module")
def url(app) -> Iterator[str]:
    with ServerThread(app) as server:
        wait_ready(server.url)
        yield server.url


def _routes(app) -> set[tuple[str, str]]:
    return {(method, route.path) for route in app.routes if isinstance(route, APIRoute)
            for method in route.methods if method != "HEAD"}


# -- which endpoints need a key ------------------------------------------------------
def test_every_endpoint_is_either_protected_or_deliberately_open(app, url: str, photos) -> None:
    routes = _routes(app)
    assert routes >= PROTECTED and routes - PROTECTED <= OPEN, routes - PROTECTED - OPEN  # nothing undecided
    wrong = generate_key()
    for method, path in sorted(PROTECTED):
        missing = httpx.request(method, url + path, timeout=10)
        assert missing.status_code == 401, (path, missing.text)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"error": "unauthorized",
                                  "message": "this endpoint needs an API key: send 'Authorization: Bearer <key>'"}
        refused = httpx.request(method, url + path, headers={"authorization": f"Bearer {wrong}"}, timeout=10)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert refused.json()["error"] == "unauthorized"
        other_scheme = httpx.request(method, url + path, headers={"authorization": f"Basic {KEY}"}, timeout=10)
        assert other_scheme.status_code == 401
    for method, path in sorted(OPEN):
        assert httpx.request(method, url + path, timeout=10).status_code == 200, path
    assert httpx.get(f"{url}/static/app.js", timeout=10).status_code == 200  # the page's own script
    # with the key: the real answers
    assert httpx.get(f"{url}/v1/info", headers=AUTH, timeout=10).json()["variant"] == "fp32"
    assert "deepfake_edge_auth_failures_total" in httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
    answer = httpx.post(f"{url}/v1/classify", content=photos[0][1], headers={"content-type": "image/png", **AUTH},
                        timeout=30)
    assert answer.status_code == 200 and set(answer.json()["scores"]) == {"fake", "real"}


def test_a_refused_upload_is_not_read(url: str) -> None:
    # 401 comes before the body is read: a client that never sends its announced body still gets it
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 50000000\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 401"), head


def test_openapi_declares_the_bearer_scheme_on_protected_operations(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API key of the service, sent as `Authorization: Bearer <key>`."}
    for method, path in PROTECTED:
        operation = spec["paths"][path][method.lower()]
        assert operation["security"] == [{"apiKey": []}], path
        assert {"401", "429"} <= set(operation["responses"])
    for path in ("/healthz", "/readyz"):
        assert "security" not in spec["paths"][path]["get"]
    assert "Authorize" in spec["info"]["description"]


def test_without_keys_nothing_asks_for_one(fp32: Detector) -> None:
    with ServerThread(create_app(fp32, FAST, api_keys=None)) as server:
        wait_ready(server.url)
        assert httpx.get(f"{server.url}/v1/info", timeout=10).status_code == 200
        assert "securitySchemes" not in httpx.get(f"{server.url}/openapi.json", timeout=10).json().get("components", {})


def test_several_keys_each_work(fp32: Detector) -> None:
    old, new = generate_key(), generate_key()  # rotation: both valid while clients move over
    with ServerThread(create_app(fp32, FAST, api_keys=ApiKeys.of([old, new]))) as server:
        wait_ready(server.url)
        for key in (old, new):
            assert httpx.get(f"{server.url}/v1/info", headers={"authorization": f"Bearer {key}"},
                             timeout=10).status_code == 200
        for near in (old[:-1], old + "x", new.upper(), f"{old},{new}"):
            assert httpx.get(f"{server.url}/v1/info", headers={"authorization": f"Bearer {near}"},
                             timeout=10).status_code == 401


# -- brute force ------------------------------------------------------------------------
def test_ten_wrong_keys_lock_out_that_address_only_until_the_window_passes(fp32: Detector) -> None:
    config = ServeConfig(max_batch=8, max_wait_ms=2, auth_failures=10, auth_window_s=2.0)
    with ServerThread(create_app(fp32, config, api_keys=KEYS)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as attacker, \
            httpx.Client(base_url=server.url, timeout=10, headers=AUTH,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2")) as neighbour:
        wait_ready(server.url)
        for attempt in range(10):
            # claiming other addresses does not help: X-Forwarded-For is ignored without --behind-proxy
            guess = attacker.get("/v1/info", headers={"authorization": f"Bearer wrong-guess-number-{attempt:04d}",
                                                      "x-forwarded-for": f"10.0.0.{attempt}"})
            assert guess.status_code == 401
            if attempt == 8:  # no key at all is not a guess: these do not count
                assert all(attacker.get("/v1/info").status_code == 401 for _ in range(5))
        locked = attacker.get("/v1/info", headers=AUTH)  # even the right key: guessing cannot go on
        assert locked.status_code == 429
        assert 1 <= int(locked.headers["retry-after"]) <= 2
        assert locked.json()["error"] == "too_many_failures" and "127.0.0.1" in locked.json()["message"]
        assert attacker.get("/healthz").status_code == 200  # probes are not locked out
        assert neighbour.get("/v1/info").status_code == 200  # another address is unaffected
        assert neighbour.get("/v1/info", headers={"authorization": "Bearer another-wrong-guess"}).status_code == 401
        time.sleep(int(locked.headers["retry-after"]))
        assert attacker.get("/v1/info", headers=AUTH).status_code == 200
        counts = neighbour.get("/metrics").text
    assert 'deepfake_edge_auth_failures_total{reason="wrong"} 11.0' in counts
    assert 'deepfake_edge_auth_failures_total{reason="locked_out"} 1.0' in counts


def test_behind_a_proxy_the_lockout_counts_forwarded_clients(fp32: Detector) -> None:
    with ServerThread(create_app(fp32, FAST, api_keys=KEYS), proxy_headers=True) as server, \
            httpx.Client(base_url=server.url, timeout=10) as proxy:  # a proxy on loopback, forwarding two clients
        wait_ready(server.url)
        for attempt in range(10):
            assert proxy.get("/v1/info", headers={"authorization": f"Bearer wrong-guess-number-{attempt:04d}",
                                                  "x-forwarded-for": "192.0.2.66"}).status_code == 401
        locked = proxy.get("/v1/info", headers={**AUTH, "x-forwarded-for": "192.0.2.66"})
        assert locked.status_code == 429 and "192.0.2.66" in locked.json()["message"]
        assert proxy.get("/v1/info", headers={**AUTH, "x-forwarded-for": "192.0.2.7"}).status_code == 200


def test_failure_window_slides_and_memory_stays_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(10, 60.0, max_clients=100, clock=lambda: now[0])
    for second in range(10):
        now[0] = float(second)
        assert limiter.retry_after("a") is None
        limiter.fail("a")
    now[0] = 9.5
    assert limiter.retry_after("a") == 51  # until the first failure (t=0) leaves the 60 s window
    assert limiter.retry_after("b") is None
    now[0] = 59.9
    assert limiter.retry_after("a") == 1
    now[0] = 60.0
    assert limiter.retry_after("a") is None  # one more try: the failure at t=1 leaves at 61
    limiter.fail("a")
    assert limiter.retry_after("a") == 1
    for client in range(10_000):  # a flood of addresses: the table keeps the most recent 100
        limiter.fail(f"10.0.{client // 256}.{client % 256}")
        assert len(limiter) <= 100
    for _ in range(10):
        limiter.fail("last")
    assert limiter.retry_after("last") == 60


def test_ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    def address(host: str) -> str:
        return client_address(Request({"type": "http", "client": (host, 1234), "headers": []}))

    assert address("2001:db8:1:2:aaaa::1") == address("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address("2001:db8:1:3::1") != address("2001:db8:1:2::1")
    assert address("::ffff:192.0.2.7") == "192.0.2.7"
    assert address("192.0.2.7") == "192.0.2.7"


# -- where keys come from ---------------------------------------------------------------
def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_file_comments_blank_lines_and_env(tmp_path: Path) -> None:
    one, two, three = generate_key(), generate_key(), generate_key()
    keyfile = _private(tmp_path / "keys", f"# the office\n{one}\n\n  {two}  \n# revoked: none\n")
    assert read_key_file(keyfile) == [one, two]
    keys = load_api_keys(keyfile, environ={ENV_VAR: f"{three}, {one}"})
    assert len(keys) == 4 and all(keys.matches(k) for k in (one, two, three))
    assert not keys.matches(None) and not keys.matches("") and not keys.matches("é" * 43)
    assert keys.origin == f"file {keyfile} and environment variable {ENV_VAR}"
    for shown in (repr(keys), str(keys)):
        assert one not in shown and two not in shown and three not in shown


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o666])
def test_key_file_open_to_group_or_others_is_refused_as_ssh_does(tmp_path: Path, mode: int) -> None:
    key = generate_key()
    keyfile = _private(tmp_path / "keys", key + "\n", mode)
    with pytest.raises(CredentialError) as info:
        read_key_file(keyfile)
    message = str(info.value)
    assert message.startswith(str(keyfile)) and f"mode {mode:04o}" in message
    assert f"chmod 600 {keyfile}" in message and key not in message


def test_bad_key_files_name_the_problem_never_the_key(tmp_path: Path) -> None:
    short = "abc123"
    cases = {
        "empty": ("# nothing yet\n\n", "holds no key"),
        "short": (f"{generate_key()}\n{short}\n", "key 2 is shorter than 16 characters"),
        "spaces": ("a key with spaces in it\n", "key 1 has a character a bearer token cannot carry"),
    }
    for name, (text, expected) in cases.items():
        with pytest.raises(CredentialError, match=expected) as info:
            read_key_file(_private(tmp_path / name, text))
        assert short not in str(info.value)
    with pytest.raises(CredentialError, match="cannot read the API key file"):
        read_key_file(tmp_path / "missing")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(CredentialError, match="not a regular file"):  # refused, never waited on
        read_key_file(fifo)
    with pytest.raises(CredentialError, match=f"the environment variable {ENV_VAR}: key 1 is shorter"):
        load_api_keys(environ={ENV_VAR: short})


def test_first_use_generates_a_private_key_file_and_later_uses_reuse_it(tmp_path: Path) -> None:
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    path = default_key_file(environ)
    assert path == tmp_path / "state" / "deepfake-edge" / "api-keys"
    first = load_api_keys(environ=environ)
    assert first.generated and first.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (key,) = read_key_file(path)
    assert len(key) == 43 and first.matches(key)  # 32 random bytes, URL-safe base64
    content = path.read_bytes()
    second = load_api_keys(environ=environ)
    assert not second.generated and second.matches(key) and path.read_bytes() == content
    assert default_key_file({"XDG_STATE_HOME": "relative/dir"}) == Path.home() / ".local/state/deepfake-edge/api-keys"


# -- TLS ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(folder / "cert.pem"), append=True)
    key = folder / "key.pem"
    key.touch(0o600)
    cert.private_key_pem.write_to_path(str(key))
    return ca, folder / "cert.pem", key


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_https_with_the_right_ca_and_refusals_otherwise(fp32: Detector, tls_files, photos) -> None:
    ca, cert, key = tls_files
    app = create_app(fp32, FAST, api_keys=KEYS)
    with ServerThread(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=server.url, verify=_trusting(ca), headers=AUTH, timeout=30) as client:
            deadline = time.monotonic() + 20
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "service never became ready"
                time.sleep(0.02)
            answer = client.post("/v1/classify", content=photos[0][1], headers={"content-type": "image/png"})
            assert answer.status_code == 200
            assert answer.json()["scores"] == pytest.approx(fp32.predict_one(photos[0][1]).scores, abs=1e-6)
            assert client.get("/v1/info", headers={"authorization": "Bearer not-the-right-key-at-all"}
                              ).status_code == 401
        # a client trusting another CA refuses the server's certificate
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{server.url}/healthz", verify=_trusting(trustme.CA()), timeout=10)
        # plain HTTP to the TLS port gets no HTTP answer: the handshake fails and the connection ends
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(f"GET /v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        assert b"HTTP/" not in received and b"fake" not in received
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{server.host}:{server.port}/healthz", timeout=5)
        # and the server still serves HTTPS after all that
        assert httpx.get(f"{server.url}/healthz", verify=_trusting(ca), timeout=10).status_code == 200
