#!/usr/bin/env python3
"""What the call log keeps on a bad day: `leanlm serve` under load from 32 client threads against the mock,
then (1) SIGTERM mid-load, (2) SIGKILL mid-load, (3) another process holding the SQLite store's write lock
for 12 s mid-load. For each: calls the clients got an answer for (with a call id) against the records in
the store, and what the gateway counted as dropped or stripped of bodies.

    python3 bench/durability.py                          # release binaries (built if missing)
    LEANLM_BIN_DIR=target/debug python3 bench/durability.py

Needs no data. Writes bench/results/durability-<date>.md.
"""

import concurrent.futures as cf
import json
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from harness import BIN, ROOT, Gateway, Report

say = Report()


def load(gw: Gateway, stop: threading.Event, answered: list, threads: int = 32) -> None:
    """Sends chat calls until `stop`, recording the call id of each answer."""

    def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            body = json.dumps({"model": "mock/m", "messages": [{"role": "user", "content": f"w{n} call {i} " + "x" * 2000}]})
            req = urllib.request.Request(gw.url + "/v1/chat/completions", data=body.encode(),
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                    if r.status == 200:
                        answered.append(r.headers["x-leanlm-call-id"])
            except OSError:
                time.sleep(0.01)

    with cf.ThreadPoolExecutor(threads) as ex:
        for n in range(threads):
            ex.submit(worker, n)


def logged(work: Path) -> set[str]:
    with sqlite3.connect(work / "calls.db", timeout=30) as db:
        return {r[0] for r in db.execute("SELECT id FROM calls")}


def metric(gw: Gateway, name: str) -> float:
    try:
        text = urllib.request.urlopen(gw.url + "/metrics", timeout=5).read().decode()
    except OSError:
        return float("nan")
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))


def run(case: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"leanlm-durability-{case}-"))
    gw = Gateway(work, [], "")
    stop = threading.Event()
    answered: list[str] = []
    loader = threading.Thread(target=load, args=(gw, stop, answered))
    loader.start()
    time.sleep(3)
    counted = {}
    if case == "sigterm":
        gw.gateway.send_signal(signal.SIGTERM)
        gw.gateway.wait(timeout=60)
    elif case == "sigkill":
        gw.gateway.send_signal(signal.SIGKILL)
        gw.gateway.wait(timeout=60)
    elif case == "contention":
        holder = sqlite3.connect(work / "calls.db", timeout=30, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        time.sleep(12)
        holder.execute("COMMIT")
        holder.close()
        time.sleep(3)
        counted = {m: metric(gw, m) for m in ("leanlm_call_log_dropped_total", "leanlm_call_log_bodies_dropped_total",
                                              "leanlm_call_log_failed_total", "leanlm_call_log_retries_total")}
        stop.set()
        time.sleep(1)
        gw.gateway.send_signal(signal.SIGTERM)
        gw.gateway.wait(timeout=60)
    stop.set()
    loader.join()
    gw.mock.terminate()
    kept = logged(work)
    missing = [c for c in answered if c not in kept]
    return {"case": case, "answered": len(answered), "logged": len(kept), "missing": len(missing), **counted}


def main() -> None:
    if not (BIN / "leanlm").exists():
        subprocess.run(["cargo", "build", "--profile", "dist", "-q", "-p", "leanlm", "-p", "leanlm-mock"], cwd=ROOT, check=True)
    say("# Call-log durability under load")
    say("")
    say(f"`python3 bench/durability.py` with the binaries in `{BIN.relative_to(ROOT) if BIN.is_relative_to(ROOT) else BIN}`; "
        "32 client threads, 2 KB prompts, the mock upstream; 3 s of load before each event.")
    say("")
    say("| event | calls answered | records in the store | answered calls missing from the store | counted |")
    say("|---|---|---|---|---|")
    for case in ("sigterm", "sigkill", "contention"):
        r = run(case)
        extra = ", ".join(f"{k.removeprefix('leanlm_call_log_')} {v:.0f}" for k, v in r.items()
                          if k.startswith("leanlm_"))
        share = 100 * r["missing"] / max(r["answered"], 1)
        say(f"| {case} | {r['answered']} | {r['logged']} | {r['missing']} ({share:.2f}%) | {extra or '-'} |")
    say.write("durability")


if __name__ == "__main__":
    main()
