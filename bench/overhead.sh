#!/usr/bin/env bash
# Gateway overhead benchmark: the same load sent straight to a fast mock upstream and through LeanLM
# (call logging on, SQLite), measured in one run. Reports added latency at p50/p99, throughput and peak
# memory as ratios against the direct run.
#
#   bench/overhead.sh                 # ~2 minutes
#   DURATION=20 bench/overhead.sh     # longer, steadier runs
#   LITELLM=1 bench/overhead.sh       # also measure the LiteLLM proxy where `pip install 'litellm[proxy]'` works
#   POLICY=1 bench/overhead.sh        # also measure with a deployment policy on the task (a 50% canary)
#   OUT=bench/results/x.json ...      # where the raw results go (default: bench/results/overhead-<date>.json)
#
# For scale, each load also goes through a bare reverse proxy (hyper, no parsing, no logging: `leanlm-mock
# --forward`), the floor cost of one more HTTP hop on this machine.
#
# The gateway's CPU time per request is read from /proc for each run (the mock's too, for the direct runs).
# Everything binds to 127.0.0.1. Results go to bench/results/overhead-<date>.json and a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-8}"
RATE="${RATE:-1000}"
. bench/common.sh
bench_setup

bench_body "$work/body.json"

"$bin/leanlm-mock" --listen 127.0.0.1:0 --threads 1 > "$work/mock.addr" &
pids+=($!); mock_pid=$!
for _ in $(seq 50); do [ -s "$work/mock.addr" ] && break; sleep 0.1; done
mock="http://$(head -1 "$work/mock.addr")"

# A do-nothing reverse proxy: the floor cost of one more HTTP hop on this machine, for scale.
"$bin/leanlm-mock" --listen 127.0.0.1:0 --forward "$mock" > "$work/floor.addr" &
pids+=($!); floor_pid=$!
for _ in $(seq 50); do [ -s "$work/floor.addr" ] && break; sleep 0.1; done
floor="http://$(head -1 "$work/floor.addr")"

# A second name for the same upstream model: the replacement of the POLICY=1 runs.
bench_config "$work/leanlm.toml" "$mock" "$work/calls.db" '[models."gpt-4o-mini-b"]
provider = "openai"
upstream = "gpt-4o-mini"'
port=$(free_port)
LEANLM_LOG=warn "$bin/leanlm" serve --config "$work/leanlm.toml" --listen "127.0.0.1:$port" > "$work/gw.log" 2>&1 &
pids+=($!); gw_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of the process's call-log writer thread (0 for processes without one).
writer_ticks() {
    for t in /proc/"$1"/task/*; do
        if [ "$(cat "$t/comm" 2>/dev/null)" = leanlm-call-log ]; then awk '{print $14 + $15}' "$t/stat"; return; fi
    done
    echo 0
}
hz=$(getconf CLK_TCK)
run() { # label url concurrency rate server-pid
    # A short warm-up run first, so connections are open and CPU time is counted for measured requests only.
    "$bin/leanlm-loadgen" --url "$2/v1/chat/completions" --body "$work/body.json" --concurrency "$3" \
        --rate "$4" --duration-secs 1 --warmup-secs 0 > /dev/null
    local t0 t1 w0 w1 out
    t0=$(ticks "$5"); w0=$(writer_ticks "$5")
    out=$("$bin/leanlm-loadgen" --url "$2/v1/chat/completions" --body "$work/body.json" --label "$1" \
        --concurrency "$3" --rate "$4" --duration-secs "$DURATION" --warmup-secs 0)
    t1=$(ticks "$5"); w1=$(writer_ticks "$5")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); n=max(r["requests"],1); hz=int(sys.argv[4]); r["server_cpu_us_per_request"]=(int(sys.argv[3])-int(sys.argv[2]))*1e6/hz/n; r["writer_cpu_us_per_request"]=(int(sys.argv[6])-int(sys.argv[5]))*1e6/hz/n; print(json.dumps(r))' "$out" "$t0" "$t1" "$hz" "$w0" "$w1"
}

results="$work/results.jsonl"
for c in 1 32 128; do
    # Latency at a fixed rate (open loop), then throughput (closed loop), direct and through LeanLM.
    for mode in "$RATE" 0; do
        run direct "$mock" "$c" "$mode" "$mock_pid" >> "$results"
        run leanlm "http://127.0.0.1:$port" "$c" "$mode" "$gw_pid" >> "$results"
        run bare-proxy "$floor" "$c" "$mode" "$floor_pid" >> "$results"
    done
done

if [ "${POLICY:-0}" = 1 ]; then
    # A 50% canary with no audit: every call looks up its task's policy and draws its route.
    task=$("$bin/leanlm" tasks --db "sqlite://$work/calls.db" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["task"]["id"])')
    "$bin/leanlm" deploy --db "sqlite://$work/calls.db" --task "$task" --replacement gpt-4o-mini-b --stage canary \
        --share 0.5 --audit-rate 0 --force "overhead benchmark" > /dev/null
    sleep 2
    for c in 1 32 128; do
        for mode in "$RATE" 0; do
            run direct-policy "$mock" "$c" "$mode" "$mock_pid" >> "$results"
            run leanlm-policy "http://127.0.0.1:$port" "$c" "$mode" "$gw_pid" >> "$results"
        done
    done
fi

rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
gw_rss=$(rss "$gw_pid"); mock_rss=$(rss "$mock_pid")
dropped=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^leanlm_call_log_dropped_total/ {print $2}')
logged=$("$bin/leanlm" calls --db "sqlite://$work/calls.db" --json --limit 100000000 | wc -l)
logged="$logged (dropped by a full queue: ${dropped:-0})"
# The gateway's own time per call as it logs it (everything but the wait on the upstream), over all runs:
# what the gateway adds beyond the extra HTTP hop that the bare-proxy rows measure.
own=$(python3 - "$work/calls.db" <<'PY'
import sqlite3, sys
v = sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute(
    "SELECT overhead_us FROM calls WHERE overhead_us IS NOT NULL AND status = 'ok'"))
q = lambda p: round(v[min(len(v) - 1, int(len(v) * p))]) if v else 0
print(f"p50 {q(0.5)} µs, p90 {q(0.9)} µs, p99 {q(0.99)} µs over {len(v)} calls")
PY
)

litellm_note="not measured (set LITELLM=1)"
if [ "${LITELLM:-0}" = 1 ]; then
    venv="${LITELLM_VENV:-$target/litellm-venv}"
    if { [ -x "$venv/bin/litellm" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'litellm[proxy]'; }; } 2>"$work/litellm-install.log"; then
        lport=$(free_port)
        cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_base: "$mock/v1", api_key: sk-bench}
general_settings:
  master_key: sk-bench
YAML
        "$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$lport" > "$work/litellm.log" 2>&1 &
        pids+=($!); ll_pid=$!
        for _ in $(seq 600); do curl -sf "http://127.0.0.1:$lport/health/liveliness" >/dev/null && break; sleep 0.2; done
        if kill -0 "$ll_pid" 2>/dev/null; then
            for c in 1 32; do
                run litellm "http://127.0.0.1:$lport" "$c" "$RATE" "$ll_pid" >> "$results"
                run litellm "http://127.0.0.1:$lport" "$c" 0 "$ll_pid" >> "$results"
            done
            litellm_note="LiteLLM $("$venv/bin/pip" show litellm | awk '/^Version/ {print $2}'), peak RSS $(( $(rss "$ll_pid") / 1024 )) MB"
        else
            litellm_note="the LiteLLM proxy did not start: $(tail -3 "$work/litellm.log" | tr '\n' ' ')"
        fi
    else
        litellm_note="pip install 'litellm[proxy]' failed here: $(tail -1 "$work/litellm-install.log")"
    fi
fi

mkdir -p bench/results
out="${OUT:-bench/results/overhead-$(date -u +%Y%m%d).json}"
python3 - "$results" "$gw_rss" "$mock_rss" "$logged" "$litellm_note" "$out" "$own" <<'PY'
import json, sys, platform, os
rows = [json.loads(l) for l in open(sys.argv[1])]
gw_rss, mock_rss, logged, note, out, own = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
def get(label, c, rate):
    return next((r for r in rows if r["label"] == label and r["concurrency"] == c and r["rate"] == rate), None)
print(f"machine: {os.cpu_count()} cores, {platform.machine()}; gateway peak RSS {gw_rss/1024:.1f} MB "
      f"(mock {mock_rss/1024:.1f} MB); calls logged: {logged}; LiteLLM: {note}")
print(f"gateway's own time per call (call log, upstream wait excluded): {own}\n")
print("| concurrency | load | direct p50 / p99 (µs) | via gateway p50 / p99 (µs) | added p50 / p99 (µs) | throughput via gateway / direct | CPU per request: gateway / mock (µs) |")
print("|---|---|---|---|---|---|---|")
summary = []
for r in rows:
    if r["label"] not in ("direct", "direct-policy"):
        continue
    c, rate = r["concurrency"], r["rate"]
    others = ("leanlm-policy",) if r["label"] == "direct-policy" else ("leanlm", "bare-proxy", "litellm")
    for other in others:
        g = get(other, c, rate)
        if not g:
            continue
        load = f"{rate:.0f} req/s" if rate else "max"
        ratio = g["rps"] / r["rps"]
        added50, added99 = g["p50_us"] - r["p50_us"], g["p99_us"] - r["p99_us"]
        name = {"leanlm": "", "bare-proxy": " (bare proxy)", "litellm": " (LiteLLM)", "leanlm-policy": " (50% canary policy)"}[other]
        print(f"| {c}{name} | {load} | {r['p50_us']} / {r['p99_us']} | {g['p50_us']} / {g['p99_us']} | "
              f"{added50} / {added99} | {g['rps']:.0f} / {r['rps']:.0f} = {ratio:.2f} | {g['server_cpu_us_per_request']:.0f} / {r['server_cpu_us_per_request']:.0f} |")
        summary.append({"via": other, "concurrency": c, "rate": rate, "added_p50_us": added50, "added_p99_us": added99,
                        "throughput_ratio": ratio, "direct": r, "proxied": g})
writer = [f"c={g['concurrency']} {g['proxied']['writer_cpu_us_per_request']:.0f} µs" for g in summary
          if g["via"] == "leanlm" and g["rate"]]
print(f"\nof the gateway's CPU per request at the fixed rate, its call-log writer thread: {', '.join(writer)}")
json.dump({"rows": rows, "summary": summary, "gateway_peak_rss_kb": gw_rss, "mock_peak_rss_kb": mock_rss,
           "calls_logged": logged, "litellm": note, "gateway_own_time": own}, open(out, "w"), indent=1)
print(f"\nraw results: {out}")
PY
