"""``deepfake-edge serve`` with keys and TLS as a user runs it: a real process on loopback.

Every channel a key could leak through (stdout, stderr with the access log, each
response's headers and body) is captured and grepped for every key, the wrong
ones included.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="the service tests need httpx ([test] extra)")
trustme = pytest.importorskip("trustme", reason="the TLS tests need trustme ([test] extra)")

from deepfake_edge import Detector
from deepfake_edge.apikeys import ENV_VAR, generate_key
from deepfake_edge.cli import main

from live_servers import free_port
from serve_helpers import assert_matches

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without any key of the caller's, and a state directory of the test's own."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    return {**env, "XDG_STATE_HOME": str(tmp_path / "state"), **extra}


@contextmanager
def serving(bundle: Path, tmp_path: Path, args: list[str], env: dict[str, str],
            verify: ssl.SSLContext | bool = True) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The command on a free port until ready; SIGTERM and a clean exit (0) on leaving."""
    port = free_port()
    scheme = "https" if "--tls-cert" in args else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    with (tmp_path / "stdout").open("wb") as out, (tmp_path / "stderr").open("wb") as err:
        proc = subprocess.Popen([*CLI, "serve", str(bundle), "--port", str(port), "--variant", "fp32",
                                 "--threads", "1", *args], stdout=out, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            try:
                if httpx.get(f"{url}/readyz", verify=verify, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        yield url, proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _log(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "stderr").read_text().splitlines() if line.startswith("{")]


def _private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_key_file_env_and_tls_and_no_key_in_any_channel(binary_bundle: Path, fp32: Detector, photos,
                                                        tmp_path: Path) -> None:
    in_file, rotated_in, in_env = generate_key(), generate_key(), generate_key()
    wrong = [in_file[:-1] + ("A" if in_file[-1] != "A" else "B"), generate_key()]
    keyfile = _private(tmp_path / "api-keys", f"# appliance keys\n{in_file}\n{rotated_in}\n")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    tls_key = tmp_path / "key.pem"
    tls_key.touch(0o600)
    cert.private_key_pem.write_to_path(str(tls_key))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    args = ["--api-key-file", str(keyfile), "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tls_key),
            "--log-level", "debug"]  # the most verbose logs, and still no key
    responses: list[httpx.Response] = []
    data = photos[0][1]
    env = _clean_env(tmp_path, **{ENV_VAR: in_env})
    with serving(binary_bundle, tmp_path, args, env, trusting) as (url, _), \
            httpx.Client(base_url=url, verify=trusting, timeout=30) as client:
        def call(method: str, path: str, key: str | None, **kwargs: object) -> httpx.Response:
            headers = {"authorization": f"Bearer {key}"} if key else {}
            response = client.request(method, path, headers={**headers, **kwargs.pop("headers", {})},
                                      **kwargs)
            responses.append(response)
            return response

        assert call("GET", "/v1/info", None).status_code == 401
        for key in wrong:
            assert call("GET", "/v1/info", key).status_code == 401
            assert call("POST", "/v1/classify", key, content=data,
                        headers={"content-type": "image/png"}).status_code == 401
        answer = call("POST", "/v1/classify", in_file, content=data, headers={"content-type": "image/png"})
        expected = fp32.predict_one(data)
        assert answer.status_code == 200
        assert_matches(answer.json(), expected.label, expected.scores)
        assert call("POST", "/v1/classify", rotated_in, content=b"junk",
                    headers={"content-type": "image/png"}).status_code == 400
        assert call("GET", "/v1/info", in_env).status_code == 200
        assert call("GET", "/v1/nothing", in_env).status_code == 404
        metrics = call("GET", "/metrics", rotated_in)
        assert 'deepfake_edge_auth_failures_total{reason="wrong"} 4.0' in metrics.text
    channels = {"stdout": (tmp_path / "stdout").read_text(), "stderr": (tmp_path / "stderr").read_text()}
    for number, response in enumerate(responses):
        channels[f"response {number}"] = f"{response.headers}\n{response.text}"
    for secret in (in_file, rotated_in, in_env, *wrong):
        leaks = [name for name, text in channels.items() if secret in text]
        assert leaks == [], f"a key appears in {leaks}"
    log = _log(tmp_path)
    keys_line = next(line for line in log if line.get("event") == "api_keys")
    assert keys_line["keys"] == 3 and keys_line["origin"] == f"file {keyfile} and environment variable {ENV_VAR}"
    assert next(line for line in log if line.get("event") == "starting")["tls"] is True
    access = [line for line in log if line.get("event") == "access" and line["path"] == "/v1/info"]
    assert [line["status"] for line in access] == [401, 401, 401, 200]  # logged, without any header
    assert not [line for line in log if line["level"] == "warning"]


def test_first_start_generates_a_private_key_file_and_prints_only_its_path(binary_bundle: Path,
                                                                            tmp_path: Path) -> None:
    keyfile = tmp_path / "state" / "deepfake-edge" / "api-keys"
    with serving(binary_bundle, tmp_path, [], _clean_env(tmp_path)) as (url, _):
        (key,) = [line for line in keyfile.read_text().splitlines() if line and not line.startswith("#")]
        assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600 and len(key) >= 43
        assert httpx.get(f"{url}/v1/info", timeout=10).status_code == 401
        answer = httpx.get(f"{url}/v1/info", headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200 and key not in answer.text
    stderr = (tmp_path / "stderr").read_text()
    assert key not in stderr and key not in (tmp_path / "stdout").read_text()
    (line,) = [entry for entry in _log(tmp_path) if entry.get("event") == "api_keys"]
    assert line["generated"] is True and str(keyfile) in str(line["message"])


def test_no_auth_is_today_behaviour_with_one_warning_line(binary_bundle: Path, tmp_path: Path) -> None:
    with serving(binary_bundle, tmp_path, ["--no-auth"], _clean_env(tmp_path)) as (url, _):
        assert httpx.get(f"{url}/v1/info", timeout=10).status_code == 200
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
    warnings = [line for line in _log(tmp_path) if line["level"] == "warning"]
    assert len(warnings) == 1 and "--no-auth" in str(warnings[0]["message"])
    assert not (tmp_path / "state").exists()  # no key file made


def test_unsafe_files_and_contradictory_options_are_refused_before_loading(
        binary_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    key = generate_key()
    shared = _private(tmp_path / "shared-keys", key + "\n", 0o644)
    good = _private(tmp_path / "keys", key + "\n")
    tls_key = _private(tmp_path / "tls.key", "-----BEGIN PRIVATE KEY-----\n", 0o640)
    cert = _private(tmp_path / "tls.crt", "-----BEGIN CERTIFICATE-----\n", 0o644)
    cases = [
        (["--api-key-file", str(shared)], f"{shared}: the API key file is accessible by group or others (mode 0644)"),
        (["--api-key-file", str(good), "--tls-cert", str(cert), "--tls-key", str(tls_key)],
         f"{tls_key}: the TLS key file is accessible by group or others (mode 0640)"),
        (["--api-key-file", str(good), "--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
        (["--api-key-file", str(tmp_path / "nowhere")], "cannot read the API key file (No such file or directory)"),
    ]
    for args, expected in cases:
        assert main(["serve", str(binary_bundle), "--variant", "fp32", *args]) == 2
        err = capsys.readouterr().err
        assert expected in err and key not in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        main(["serve", str(binary_bundle), "--no-auth", "--api-key-file", str(good)])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
