#!/usr/bin/env bash
# Compares gateway builds (or settings) on the same load, alternating them in one run so that a VM's drift
# hits every variant alike: added latency at a fixed rate and throughput at saturation, with each process's
# CPU time per request, next to the direct run and a bare proxy.
#
#   bench/compare.sh new=target/release/leanlm old=/tmp/leanlm-before
#   ENV_one="LEANLM_WORKERS=1" bench/compare.sh two=target/release/leanlm one=target/release/leanlm
#   REPS=3 CONCS="1 32" RATES="1000 0" DURATION=4 bench/compare.sh ...
#
# Each argument is label=binary; ENV_<label> (with characters other than letters, digits and _ as _) holds
# extra environment for that variant. Call logging is on (SQLite) and the exact cache off, as in
# bench/overhead.sh. Prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/compare.sh label=path/to/leanlm ..." >&2; exit 2; }
. bench/common.sh
bench_setup

bench_body "$work/body.json" 2>/dev/null

start() { # file-for-address command...
    "${@:2}" > "$1" & pids+=($!)
    for _ in $(seq 50); do [ -s "$1" ] && break; sleep 0.1; done
}
start "$work/mock.addr" "$bin/leanlm-mock" --listen 127.0.0.1:0 --threads 1
mock_pid=${pids[-1]}; mock="http://$(head -1 "$work/mock.addr")"
start "$work/bare.addr" "$bin/leanlm-mock" --listen 127.0.0.1:0 --forward "$mock"
bare_pid=${pids[-1]}; bare="http://$(head -1 "$work/bare.addr")"

labels=(); declare -A url pid
for v in "$@"; do
    label=${v%%=*}; gw=${v#*=}
    port=$(free_port)
    bench_config "$work/$label.toml" "$mock" "$work/$label.db"
    envname="ENV_${label//[^A-Za-z0-9_]/_}"
    # shellcheck disable=SC2086
    env ${!envname:-} LEANLM_LOG=warn "$gw" serve --config "$work/$label.toml" --listen "127.0.0.1:$port" \
        > "$work/$label.log" 2>&1 &
    pids+=($!); pid[$label]=$!; url[$label]="http://127.0.0.1:$port"; labels+=("$label")
    for _ in $(seq 100); do curl -sf "${url[$label]}/healthz" >/dev/null && break; sleep 0.1; done
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# CPU ticks of the process's call-log writer thread (0 for processes without one).
writer_ticks() {
    for t in /proc/"$1"/task/*; do
        if [ "$(cat "$t/comm" 2>/dev/null)" = leanlm-call-log ]; then awk '{print $14 + $15}' "$t/stat"; return; fi
    done
    echo 0
}
one() { # label url pid concurrency rate
    "$bin/leanlm-loadgen" --url "$2/v1/chat/completions" --body "$work/body.json" --concurrency "$4" \
        --rate "$5" --duration-secs 1 --warmup-secs 0 > /dev/null
    local t0 t1 w0 w1 out
    t0=$(ticks "$3"); w0=$(writer_ticks "$3")
    out=$("$bin/leanlm-loadgen" --url "$2/v1/chat/completions" --body "$work/body.json" --concurrency "$4" \
        --rate "$5" --duration-secs "${DURATION:-4}" --warmup-secs 0)
    t1=$(ticks "$3"); w1=$(writer_ticks "$3")
    python3 - "$out" "$1" "$t0" "$t1" "$4" "$5" "$(getconf CLK_TCK)" "$w0" "$w1" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); n = max(r["requests"], 1)
cpu = (int(sys.argv[4]) - int(sys.argv[3])) * 1e6 / int(sys.argv[7]) / n
writer = (int(sys.argv[9]) - int(sys.argv[8])) * 1e6 / int(sys.argv[7]) / n
rate = "max" if float(sys.argv[6]) == 0 else sys.argv[6]
print(f"{sys.argv[2]:>12}  c={sys.argv[5]:>3}  rate={rate:>5}  p50={r['p50_us']:>6} µs  p99={r['p99_us']:>6} µs  "
      f"{r['rps']:>8.0f} req/s  cpu/request={cpu:6.1f} µs  writer={writer:5.1f} µs", flush=True)
PY
}
for _ in $(seq "${REPS:-2}"); do
    for c in ${CONCS:-1 32}; do
        for rate in ${RATES:-1000 0}; do
            one direct "$mock" "$mock_pid" "$c" "$rate"
            one bare-proxy "$bare" "$bare_pid" "$c" "$rate"
            for l in "${labels[@]}"; do one "$l" "${url[$l]}" "${pid[$l]}" "$c" "$rate"; done
        done
    done
done
