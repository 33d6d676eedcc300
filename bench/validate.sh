#!/usr/bin/env bash
# Validation benchmark: Banking77 (../shared/data/banking77, CC BY 4.0, PolyAI) as an intent-classification
# task. All 3,080 test queries go through LeanLM to a reference model (gpt-4o, always right); then
# `leanlm validate` judges cheaper models whose accuracy is known in advance (the mock answers each query
# with its true intent at the model's accuracy, deterministically per query). Models are priced from the
# bundled price table. Reports, per candidate: the verdict and the rule that decided it, agreement with its
# interval, the control run, how many scored calls the verdict needed, what the validation itself cost,
# projected monthly savings and wall time.
#
#   bench/validate.sh                      # ~1 minute after the build
#   SEEDS="1 2 3 4 5" bench/validate.sh    # repeat over seeds (which queries each model gets wrong)
#   SAMPLE=2000 bench/validate.sh          # a bigger sample decides candidates close to the bound
#
# Everything binds to 127.0.0.1. Results go to bench/results/validate-<date>.json and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS="${SEEDS:-1 2 3}"
SAMPLE="${SAMPLE:-400}"
data="${LEANLM_SHARED_DATA:-$PWD/../shared/data}/banking77"
[ -f "$data/test.csv" ] || { echo "Banking77 not found at $data (set LEANLM_SHARED_DATA)" >&2; exit 1; }
. bench/common.sh
bench_setup

# name accuracy
CANDIDATES="gpt-4o-mini 0.99
gpt-4.1-nano 0.97
gemini-2.0-flash-lite 0.90"

results="[]"
for seed in $SEEDS; do
    acc=()
    while read -r m a; do acc+=(--accuracy "$m=$a"); done <<< "$CANDIDATES"
    "$bin/leanlm-mock" --listen 127.0.0.1:0 --labels "$data/test.csv" --seed "$seed" "${acc[@]}" > "$work/mock.addr" &
    pids+=($!); mock_pid=$!
    for _ in $(seq 50); do [ -s "$work/mock.addr" ] && break; sleep 0.1; done
    mock="http://$(head -1 "$work/mock.addr")"
    rm -f "$work"/calls.db*
    {
        echo '[store]'
        echo "url = \"sqlite://$work/calls.db\""
        echo '[providers.mock]'
        echo 'kind = "openai"'
        echo "base_url = \"$mock/v1\""
        echo 'api_key = "sk-bench"'
        for m in gpt-4o $(cut -d' ' -f1 <<< "$CANDIDATES"); do
            printf '[models."%s"]\nprovider = "mock"\nupstream = "%s"\n' "$m" "$m"
        done
        echo '[catalog]'
        echo "allow = [$(cut -d' ' -f1 <<< "$CANDIDATES" | sed 's/.*/"&"/' | paste -sd,)]"
    } > "$work/leanlm.toml"
    port=$(free_port)
    LEANLM_LOG=warn "$bin/leanlm" serve --config "$work/leanlm.toml" --listen "127.0.0.1:$port" > "$work/gw.log" 2>&1 &
    gw_pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/gw.log" >&2; exit 1; }

    python3 - "$data" "http://127.0.0.1:$port" <<'PY'
import csv, json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
data, url = sys.argv[1], sys.argv[2]
intents = json.load(open(f"{data}/categories.json"))
system = ("You are a support assistant for a retail bank. Classify the customer's message into exactly one of "
          "these intents and answer with the intent name only: " + ", ".join(intents) + ".")
texts = [row["text"] for row in csv.DictReader(open(f"{data}/test.csv", newline=""))]
def send(text):
    body = {"model": "gpt-4o", "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]}
    req = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    return urllib.request.urlopen(req).status
with ThreadPoolExecutor(16) as pool:
    statuses = list(pool.map(send, texts))
assert all(s == 200 for s in statuses), statuses
print(f"logged {len(texts)} calls", file=sys.stderr)
PY
    kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
    task=$("$bin/leanlm" tasks --config "$work/leanlm.toml" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["task"]["id"])')
    while read -r m a; do
        t0=$(date +%s.%N)
        set +e
        LEANLM_LOG=warn "$bin/leanlm" validate --config "$work/leanlm.toml" --task "$task" --candidate "$m" \
            --seed "$seed" --sample "$SAMPLE" --json > "$work/report.json"
        code=$?
        set -e
        t1=$(date +%s.%N)
        [ "$code" -le 2 ] || { echo "validate failed with exit code $code" >&2; exit 1; }
        results=$(python3 - "$work/report.json" "$m" "$a" "$seed" "$(echo "$t1 - $t0" | bc)" "$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rows = json.loads(sys.argv[6])
rows.append({"seed": int(sys.argv[4]), "candidate": sys.argv[2], "true_accuracy": float(sys.argv[3]),
             "passed": r["verdict"]["passed"], "rule": r["verdict"]["rule"],
             "agreement": r["agreement"]["rate"], "low": r["agreement"]["low"], "high": r["agreement"]["high"],
             "interval_confidence": r["agreement"]["confidence"],
             "control": r["control"]["rate"] if r["control"] else None, "bound": r["bound"],
             "scored": r["scored"], "available": r["available_calls"],
             "validation_cost_usd": r["validation_cost_usd"],
             "reference_cost_per_call_usd": r["reference_cost_per_call_usd"],
             "candidate_cost_per_call_usd": r["candidate_cost_per_call_usd"],
             "projected_monthly_savings_usd": r["projected_monthly_savings_usd"],
             "monthly_calls": r["monthly_calls"], "wall_s": float(sys.argv[5])})
print(json.dumps(rows))
PY
)
    done <<< "$CANDIDATES"
    kill "$mock_pid" 2>/dev/null || true
done

mkdir -p bench/results
out="bench/results/validate-$(date -u +%Y%m%d)-sample$SAMPLE.json"
python3 - "$results" "$out" <<'PY'
import json, sys
rows = json.loads(sys.argv[1])
json.dump({"benchmark": "validate", "data": "banking77 test (3,080 queries)", "rows": rows},
          open(sys.argv[2], "w"), indent=1)
print("| seed | candidate (true accuracy) | verdict | agreement [interval] | control | bound | scored calls | validation cost | saves / month |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['seed']} | {r['candidate']} ({r['true_accuracy']:.0%}) | {'PASS' if r['passed'] else 'FAIL'} ({r['rule']}) "
          f"| {r['agreement']:.1%} [{r['low']:.1%}–{r['high']:.1%}] at {r['interval_confidence']:.2%} "
          f"| {r['control']:.1%} | {r['bound']:.1%} | {r['scored']} of {r['available']} "
          f"| ${r['validation_cost_usd']:.4f} in {r['wall_s']:.1f} s | ${r['projected_monthly_savings_usd']:.2f} |")
print(f"\nwritten to {sys.argv[2]}")
PY
