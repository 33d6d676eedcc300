"""What the Python benchmarks share: a mock upstream and `leanlm serve` in a scratch folder, a JSON POST, and
a report printed as it is written."""

import datetime
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# The binaries: the dist build (whole-program optimised) unless LEANLM_BIN_DIR names another (a debug build will do where speed is
# not what is measured).
BIN = Path(os.environ.get("LEANLM_BIN_DIR", TARGET / "dist"))
LEANLM = BIN / "leanlm"
MOCK = BIN / "leanlm-mock"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, headers: dict | None = None, timeout: float = 120) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


class Gateway:
    """`leanlm-mock MOCK_ARGS` as provider `mock`, and `leanlm serve` with a SQLite store in `work`; `config` is
    appended to the generated leanlm.toml (models, catalog, policies)."""

    def __init__(self, work: Path, mock_args: list[str], config: str):
        self.work = work
        self.mock = subprocess.Popen([str(MOCK), "--listen", "127.0.0.1:0", *mock_args], stdout=subprocess.PIPE,
                                     text=True)
        self.mock_url = "http://" + self.mock.stdout.readline().strip()
        self.config = work / "leanlm.toml"
        self.config.write_text(f"""
[store]
url = "sqlite://{work / 'calls.db'}"
[cache]
exact = "off"
[providers.mock]
kind = "openai"
base_url = "{self.mock_url}/v1"
api_key = "sk-mock"
{config}""")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.gateway = subprocess.Popen(
            [str(LEANLM), "serve", "--config", str(self.config), "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(work / "gateway.log", "w"), env={**os.environ, "LEANLM_LOG": "warn"})
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)

    def close(self) -> None:
        for p in (self.gateway, self.mock):
            p.terminate()
            p.wait()

    def leanlm(self, *args: str, check: bool = True) -> str:
        r = subprocess.run([str(LEANLM), *args, "--config", str(self.config)], capture_output=True, text=True,
                           env={**os.environ, "LEANLM_LOG": "warn"})
        if check and r.returncode != 0:
            sys.exit(f"leanlm {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout + r.stderr


class Report:
    """Lines printed as they come (`say(line)`) and kept for bench/results/NAME-<date>.md."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def write(self, name: str) -> None:
        path = ROOT / "bench" / "results" / f"{name}-{datetime.date.today():%Y%m%d}.md"
        path.write_text("\n".join(self.lines) + "\n")
        print(f"\nwritten to {path.relative_to(ROOT)}")
