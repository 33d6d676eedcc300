#!/usr/bin/env python3
"""Learned routing and cascades on MMLU, end to end through `leanlm serve`.

The in-process benchmark (`cargo run --profile dist -p leanlm-route --example mmlu`) measures the router's
cost/accuracy curve on all of RouteLLM's MMLU data. This one runs the product's own path instead, with the
same data behind a replay upstream: `leanlm-mock --routellm` answers each MMLU question as the logged model
did (right exactly where Mixtral-8x7B-Instruct or GPT-4-1106-preview was right; the files hold correctness,
not answers, so the true letter is a stand-in fixed per question and a wrong answer is another letter),
both models priced from the bundled table (Mixtral on Together; GPT-4-1106-preview under its current name,
gpt-4-turbo). Then, as a user would:

  1. a validation split is logged through the gateway to GPT-4 (task `mmlu`);
  2. Mixtral is deployed to shadow on the task with every call checked, and a training split is logged: each
     call is served by GPT-4 and also answered by Mixtral off the hot path, scored against GPT-4's answer;
  3. `leanlm train-cascade` (cheap Mixtral, strong GPT-4) and, for each bound, `leanlm train-router` learn
     from that traffic; `leanlm validate` replays held-out calls through each; `leanlm deploy` puts each live;
  4. the test split (questions never logged before) goes through `leanlm serve`, and every answer is scored
     against the truth: accuracy, cost, and the share sent to GPT-4, next to all-GPT-4 and all-Mixtral
     measured through the same gateway on the same questions.

A router keeps the agreement with the reference (GPT-4) at its bound; what is reported is accuracy against
the truth, where GPT-4 is wrong on a fifth of the questions.

    python3 bench/mmlu.py                     # ~15 min on a 2-core VM, mostly MiniLM embeddings
    TRAIN=2400 VALIDATE=600 TEST=1500 BOUNDS="0.8 0.9" python3 bench/mmlu.py

Data: ../shared/data/routellm-mmlu (lm-sys/RouteLLM, Apache-2.0); prompts RouteLLM lists as contaminated
are left out. Needs the local embedding model (scripts/fetch-model).
"""

import concurrent.futures as cf
import csv
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Gateway, Report, post

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LEANLM_SHARED_DATA", ROOT.parent / "shared" / "data"))
MMLU = SHARED / "routellm-mmlu"
TRAIN = int(os.environ.get("TRAIN", "2400"))
VALIDATE = int(os.environ.get("VALIDATE", "600"))
TEST = int(os.environ.get("TEST", "1500"))
BOUNDS = [float(b) for b in os.environ.get("BOUNDS", "0.8 0.9").split()]
CASCADE_BOUND = float(os.environ.get("CASCADE_BOUND", "0.85"))
CASCADE_SAMPLE = int(os.environ.get("CASCADE_SAMPLE", "1500"))
SEED = int(os.environ.get("SEED", "7"))
CHEAP, STRONG = "mixtral", "gpt-4-turbo"
CHEAP_RECORDED, STRONG_RECORDED = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def questions() -> list[str]:
    contaminated = set()
    for line in (MMLU / "contaminated_prompts.jsonl").read_text().splitlines():
        if line.strip():
            contaminated.add(json.loads(line)["eval_prompt"])
    seen, out = set(), []
    for f in sorted((MMLU / "responses").glob("*.csv")):
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                p = row["prompt"]
                key = " ".join(p.split()).lower()
                if p not in contaminated and key not in seen:
                    seen.add(key)
                    out.append(p)
    return out


class Bench(Gateway):
    def __init__(self, work: Path):
        super().__init__(work, ["--routellm", str(MMLU), "--alias", f"{STRONG}={STRONG_RECORDED}"], f"""
# Priced from the bundled table by upstream name.
[models."{STRONG}"]
provider = "mock"
upstream = "{STRONG}"
[models."{CHEAP}"]
provider = "mock"
upstream = "{CHEAP_RECORDED}"
[catalog]
allow = ["{CHEAP}"]
""")
        self.truth_of: dict[str, str] = {}

    def truth(self, prompts: list[str]) -> None:
        with cf.ThreadPoolExecutor(8) as pool:
            for p, (_, _, body) in zip(prompts, pool.map(lambda p: post(f"{self.mock_url}/mock/truth", {"prompt": p}),
                                                         prompts)):
                self.truth_of[p] = body["truth"]

    def send(self, prompts: list[str], model: str, task: str, concurrency: int = 8) -> list[dict]:
        """Each question through the gateway; what served it, what it cost, and whether it was right."""

        def one(p: str) -> dict:
            status, headers, body = post(f"{self.url}/v1/chat/completions",
                                         {"model": model, "temperature": 0, "max_tokens": 1,
                                          "messages": [{"role": "user", "content": p}]},
                                         {"x-leanlm-task": task})
            h = {k.lower(): v for k, v in headers.items()}
            answer = (body.get("choices") or [{}])[0].get("message", {}).get("content", "")
            return {"prompt": p, "answer": answer, "status": status, "model": h.get("x-leanlm-model", ""),
                    "task": h.get("x-leanlm-task", ""), "cost": float(h.get("x-leanlm-cost-usd", "0") or 0),
                    "right": answer == self.truth_of.get(p), "cascade": h.get("x-leanlm-cascade", "")}

        with cf.ThreadPoolExecutor(concurrency) as pool:
            out = list(pool.map(one, prompts))
        bad = [o for o in out if o["status"] != 200]
        if bad:
            sys.exit(f"{len(bad)} calls failed, e.g. {bad[0]}")
        return out

    def online(self) -> dict:
        return json.loads(self.leanlm("policies", "--json"))[0]["online"]


def summary(rows: list[dict], reference: dict[str, str] | None = None) -> dict:
    n = len(rows)
    out = {"accuracy": sum(r["right"] for r in rows) / n, "cost": sum(r["cost"] for r in rows),
           "strong_share": sum(r["model"] == STRONG for r in rows) / n}
    if reference is not None:
        out["agreement"] = sum(r["answer"] == reference.get(r["prompt"]) for r in rows) / n
    return out


def main() -> None:
    subprocess.run(["cargo", "build", "--profile", "dist", "-q", "-p", "leanlm", "-p", "leanlm-mock"], cwd=ROOT, check=True)
    qs = questions()
    random.Random(SEED).shuffle(qs)
    if TRAIN + VALIDATE + TEST > len(qs):
        sys.exit(f"TRAIN + VALIDATE + TEST is more than the {len(qs)} questions")
    val, train, test = qs[:VALIDATE], qs[VALIDATE:VALIDATE + TRAIN], qs[VALIDATE + TRAIN:VALIDATE + TRAIN + TEST]
    work = Path(tempfile.mkdtemp(prefix="leanlm-mmlu-"))
    b = Bench(work)
    started = time.time()
    say = Report()

    try:
        b.truth(test)
        # The ends of the curve, through the same gateway, on a task of their own.
        strong_rows = b.send(test, STRONG, "mmlu-baseline")
        reference = {r["prompt"]: r["answer"] for r in strong_rows}
        strong = summary(strong_rows, reference)
        cheap = summary(b.send(test, CHEAP, "mmlu-baseline"), reference)

        def pgr(acc: float) -> float:
            return (acc - cheap["accuracy"]) / (strong["accuracy"] - cheap["accuracy"])

        # 1. A validation split, served by the reference.
        task = b.send(val[:1], STRONG, "mmlu")[0]["task"]
        b.send(val[1:], STRONG, "mmlu")
        # 2. Mixtral in shadow, every call checked; a bound it cannot breach, so shadow keeps learning.
        b.leanlm("deploy", "--task", task, "--replacement", CHEAP, "--stage", "shadow", "--audit-rate", "1",
                 "--bound", "0.05", "--min-samples", "1000000", "--scorer", "label")
        time.sleep(2.5)
        b.send(train, STRONG, "mmlu")
        for _ in range(600):
            scored = b.online().get("scored", 0)
            if scored >= TRAIN:
                break
            time.sleep(0.5)
        online = b.online()
        b.leanlm("rollback", "--task", task, "--reason", "shadow outcomes collected")
        say(f"# MMLU through `leanlm serve` ({datetime.date.today()})")
        say()
        say(f"{len(qs)} questions (contaminated left out), seed {SEED}: {VALIDATE} logged for validation, {TRAIN} "
            f"logged with Mixtral in shadow ({online.get('scored')} checked online, agreement with GPT-4 "
            f"{online.get('agreed', 0) / max(online.get('scored', 1), 1):.1%}), {TEST} held out for the test.")
        say()
        say("| on the test split | agreement with GPT-4 | accuracy | PGR (random router at that share) | cost | "
            "on GPT-4 | saved vs all-GPT-4 | validation |")
        say("|---|---|---|---|---|---|---|---|")
        say(f"| all GPT-4 | 100% | {strong['accuracy']:.1%} | 1.00 | ${strong['cost']:.3f} | 100% | 0% | |")
        say(f"| all Mixtral | {cheap['agreement']:.1%} | {cheap['accuracy']:.1%} | 0.00 | ${cheap['cost']:.3f} | 0% | "
            f"{1 - cheap['cost'] / strong['cost']:.1%} | |")

        chances: list[tuple[str, dict]] = []

        def deploy_and_test(name: str, spec: str, bound: float) -> None:
            out = b.leanlm("validate", "--task", task, "--candidate", spec, "--sample", str(VALIDATE),
                           "--bound", f"{bound - 0.05:.2f}", "--scorer", "label", "--seed", str(SEED), "--json",
                           check=False)
            try:
                report = json.loads(out[out.index("{"):])
            except ValueError:
                sys.exit(f"validate {spec} gave no report:\n{out}")
            verdict = report["verdict"]["reason"]
            passed = report["verdict"]["passed"]
            if report.get("chance"):
                chances.append((name, report["chance"]))
            args = ["deploy", "--task", task, "--replacement", spec, "--stage", "canary", "--share", "1",
                    "--audit-rate", "0"]
            if not passed:
                args += ["--force", f"benchmark: held-out accuracy against the truth is the measure ({verdict})"]
            b.leanlm(*args)
            time.sleep(2.5)
            rows = b.send(test, STRONG, "mmlu")
            s = summary(rows, reference)
            say(f"| {name} | {s['agreement']:.1%} | {s['accuracy']:.1%} | {pgr(s['accuracy']):.2f} "
                f"({s['strong_share']:.2f}) | ${s['cost']:.3f} | {s['strong_share']:.0%} | "
                f"{1 - s['cost'] / strong['cost']:.1%} | {'pass' if passed else 'fail'} at {bound - 0.05:.0%} |")
            if spec.startswith("cascade"):
                outcomes = {}
                for r in rows:
                    outcomes[r["cascade"]] = outcomes.get(r["cascade"], 0) + 1
                say(f"|   cascade decisions | {outcomes} | | | | | | |")

        out = b.leanlm("train-cascade", "--task", task, "--cheap", CHEAP, "--strong", STRONG, "--bound",
                       str(CASCADE_BOUND), "--sample", str(CASCADE_SAMPLE), "--scorer", "label")
        print(out, file=sys.stderr)
        deploy_and_test(f"cascade, bound {CASCADE_BOUND:.0%}", f"cascade:{CHEAP},{STRONG}", CASCADE_BOUND)
        for bound in BOUNDS:
            out = b.leanlm("train-router", "--task", task, "--cheap", CHEAP, "--bound", str(bound))
            print(out, file=sys.stderr)
            deploy_and_test(f"router, bound {bound:.0%}", f"router:{CHEAP},{STRONG}", bound)
        say()
        if chances:
            say("What each validation said against chance (`leanlm validate`'s `chance`, on the held-out logged "
                "calls, before the test split was sent):")
            say()
            say("| replacement | share on Mixtral | agreement | random split at that share | Mixtral agrees on "
                "the calls it got / on the others | better than chance |")
            say("|---|---|---|---|---|---|")
            for name, c in chances:
                say(f"| {name} | {c['cheap_share']:.0%} | {c['agreement']:.1%} | {c['random_agreement']:.1%} | "
                    f"{c['cheap_agreement_on_kept']:.1%} / {c['cheap_agreement_on_others']:.1%} | "
                    f"{'yes' if c['better_than_chance'] else 'no'} |")
            say()
        say(f"Agreement is with GPT-4's answer to the same question (what a router or cascade is trained and "
            f"bounded on: production traffic has no truth); accuracy is against the truth. A random router that "
            f"sends a share s of the questions to GPT-4 has PGR s. Validation: `leanlm validate` on held-out "
            f"logged calls at 5 points under the bound. Wall time {time.time() - started:.0f} s. "
            f"Reproduce: `python3 bench/mmlu.py`.")
    finally:
        b.close()
    say.write("mmlu-gateway")


if __name__ == "__main__":
    main()
