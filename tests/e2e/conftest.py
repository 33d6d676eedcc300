"""Starts the real `leanlm` binary against the real `leanlm-mock` upstream, both on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path(__file__).resolve().parents[2] / "target"))
LEANLM = Path(os.environ.get("LEANLM_BIN", TARGET / "debug" / "leanlm"))
MOCK = Path(os.environ.get("LEANLM_MOCK_BIN", TARGET / "debug" / "leanlm-mock"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} never became ready")


class Gateway:
    def __init__(self, tmp: Path, mock_url: str, extra: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "calls.db"
        self.config = tmp / "leanlm.toml"
        self.config.write_text(
            f"""
[retry]
base_backoff_ms = 10
[providers.openai]
kind = "openai"
base_url = "{mock_url}/v1"
api_key = "sk-gateway-owned-key-42"
timeout_secs = 3
[providers.anthropic]
kind = "anthropic"
base_url = "{mock_url}"
[providers.gemini]
kind = "gemini"
base_url = "{mock_url}"
[models.fast]
provider = "openai"
upstream = "gpt-4o-mini"
fallbacks = ["claude-haiku-4-5"]
{extra}
"""
        )
        self.log = open(tmp / "gateway.log", "w")
        self.proc = subprocess.Popen(
            [str(LEANLM), "serve", "--config", str(self.config), "--listen", f"127.0.0.1:{self.port}",
             "--db", f"sqlite://{self.db}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_ready(self.url + "/healthz")

    def cli(self, *args: str) -> str:
        out = subprocess.run([str(LEANLM), *args, "--db", f"sqlite://{self.db}"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def call(self, call_id: str, timeout: float = 5.0) -> dict:
        """One call from the log, waiting for the asynchronous writer."""
        deadline = time.time() + timeout
        while True:
            out = subprocess.run([str(LEANLM), "call", call_id, "--db", f"sqlite://{self.db}"], capture_output=True, text=True)
            if out.returncode == 0:
                return json.loads(out.stdout)
            if time.time() > deadline:
                raise AssertionError(out.stderr)
            time.sleep(0.05)

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.cli("calls", "--json", "--limit", "1000").splitlines()]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self.log.close()
        return code


@pytest.fixture(scope="session")
def mock_url():
    proc = subprocess.Popen([str(MOCK), "--listen", "127.0.0.1:0", "--record"], stdout=subprocess.PIPE, text=True)
    addr = proc.stdout.readline().strip()
    yield f"http://{addr}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def gateway(mock_url, tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("gw"), mock_url)
    yield gw
    gw.stop()


@pytest.fixture
def fresh_gateway(mock_url, tmp_path):
    """A gateway of the test's own, for tests that stop it."""
    gw = Gateway(tmp_path, mock_url)
    yield gw
    if gw.proc.poll() is None:
        gw.stop()
