#!/usr/bin/env bash
# Instructions per request, counted by callgrind: the gateway (call logging on, one worker) and a bare
# reverse proxy (hyper, no parsing, no logging) on the same load, in one run. Instruction counts do not
# depend on what else the machine is doing, so this tracks the gateway's own work from one VM to the next,
# where bench/overhead.sh's timings move with the VM. Kernel time (system calls, wake-ups) is not counted.
#
#   bench/instructions.sh             # 1,000 requests each, ~1 minute
#   N=2000 bench/instructions.sh
#   KEEP=/tmp/ins bench/instructions.sh   # keeps the callgrind files and their annotations there
#   LEANLM=/tmp/leanlm-before bench/instructions.sh   # another build of the gateway (the mock is this tree's)
#
# Prints instructions per request for each, their ratio, and the gateway's heaviest parts (inclusive).
# Needs valgrind. SHA-256 runs in software under valgrind (no SHA extensions), so the call-log writer's
# hashing is counted at several times its cost on a CPU with them; it is shown apart.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "bench/instructions.sh needs valgrind" >&2; exit 1; }
N="${N:-1000}"
RATE=200
. bench/common.sh
bench_setup

bench_body "$work/body.json" 2>/dev/null

"$bin/leanlm-mock" --listen 127.0.0.1:0 --threads 1 > "$work/mock.addr" & pids+=($!)
for _ in $(seq 50); do [ -s "$work/mock.addr" ] && break; sleep 0.1; done
mock="http://$(head -1 "$work/mock.addr")"

# Runs one server under callgrind, counting only the measured requests; prints instructions per request.
measure() { # label port command...
    local label=$1 port=$2; shift 2
    valgrind --tool=callgrind --callgrind-out-file="$work/$label.out" "$@" \
        > "$work/$label.log" 2>&1 &
    local pid=$!; pids+=($pid)
    local url="http://127.0.0.1:$port/v1/chat/completions"
    for _ in $(seq 300); do
        curl -sf -o /dev/null -H 'content-type: application/json' --data @"$work/body.json" "$url" && break
        sleep 0.2
    done
    "$bin/leanlm-loadgen" --url "$url" --body "$work/body.json" --rate "$RATE" --duration-secs 2 --warmup-secs 0 > /dev/null
    callgrind_control -z "$pid" > /dev/null 2>&1
    "$bin/leanlm-loadgen" --url "$url" --body "$work/body.json" --rate "$RATE" \
        --duration-secs "$(python3 -c "print($N / $RATE)")" --warmup-secs 0 > "$work/$label.load"
    # Let the call-log writer commit what the measured requests queued (it commits every 100 ms).
    sleep 1
    callgrind_control -d "$pid" > /dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local f="$work/$label.out.1"
    local requests; requests=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$work/$label.load")
    callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null > "$work/$label.txt"
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$f" "$work/$label.txt" "$KEEP/"; fi
    python3 - "$work/$label.txt" "$requests" "$label" <<'PY'
import re, sys
text, n, label = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3]
total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
def incl(name):
    best = 0
    for m in re.finditer(r"^\s*([\d,]+) \([ \d.]+%\)\s+\S*:" + re.escape(name) + r" \[", text, re.M):
        best = max(best, int(m.group(1).replace(",", "")))
    return best
sha = incl("leanlm_store::sqlite::short_hash")
print(f"{label}\t{n}\t{total / n:.0f}\t{sha / n:.0f}")
if label == "gateway":
    handler = max(incl("leanlm_gateway::proxy::chat::chat::{{closure}}"), incl("leanlm_gateway::proxy::chat::{{closure}}"))
    parts = [("request handler", None),
             ("  reqwest (send and receive)", "<reqwest::async_impl::client::Pending as core::future::future::Future>::poll"),
             ("  reqwest (building the request)", "reqwest::async_impl::request::RequestBuilder::send"),
             ("  parsing the request", "leanlm_wire::openai::ChatRequest::parse"),
             ("  task discovery", "leanlm_profile::identify::Discoverer::identify"),
             ("  finishing the call and its record", "leanlm_gateway::proxy::Recorder::succeed"),
             ("call-log writer (per record)", "leanlm_store::writer::write"),
             ("  of which SHA-256 in software", "leanlm_store::sqlite::short_hash")]
    with open(sys.argv[1] + ".parts", "w") as f:
        for what, fn in parts:
            count = handler if fn is None else incl(fn)
            f.write(f"| {what} | {count / n / 1000:.1f}k |\n")
PY
}

gw_port=$(free_port); bare_port=$(free_port)
bench_config "$work/leanlm.toml" "$mock" "$work/calls.db" '[server]
workers = 1'
{
    LEANLM_LOG=warn measure gateway "$gw_port" "${LEANLM:-$bin/leanlm}" serve --config "$work/leanlm.toml" --listen "127.0.0.1:$gw_port"
    measure bare-proxy "$bare_port" "$bin/leanlm-mock" --listen "127.0.0.1:$bare_port" --threads 1 --forward "$mock"
} > "$work/results.tsv"

python3 - "$work/results.tsv" "$work/gateway.txt.parts" <<'PY'
import sys
rows = {l.split("\t")[0]: l.split("\t") for l in open(sys.argv[1]).read().splitlines()}
g, b = rows["gateway"], rows["bare-proxy"]
gi, gs, bi = float(g[2]), float(g[3]), float(b[2])
print(f"instructions per request (user space, callgrind; {g[1]} and {b[1]} requests):\n")
print("| server | instructions per request | ratio to the bare proxy |")
print("|---|---|---|")
print(f"| bare proxy (hyper) | {bi / 1000:.1f}k | 1.00 |")
print(f"| LeanLM, call logging on | {gi / 1000:.1f}k | {gi / bi:.2f} |")
print(f"| LeanLM, without SHA-256 in software | {(gi - gs) / 1000:.1f}k | {(gi - gs) / bi:.2f} |")
print("\nLeanLM's heaviest parts (inclusive, per request):\n")
print("| part | instructions |")
print("|---|---|")
print(open(sys.argv[2]).read(), end="")
PY
