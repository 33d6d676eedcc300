#!/usr/bin/env bash
# Deployment stages end to end (crates/cli/tests/deploy.rs): Banking77 traffic through the gateway, a cheap
# model (99% right) deployed to shadow with every call checked, validated, promoted to a 50% canary with
# every replacement-served call audited, then degraded at the mock to 30% right. Reports, per run, how long
# and how many calls the automatic rollback took, and how many calls the replacement served wrongly in
# between; and how long two gateways sharing a store took to see a policy change.
#
#   bench/stages.sh            # 3 runs
#   RUNS=10 bench/stages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
cargo test --release -q -p leanlm --test deploy --no-run 2>/dev/null
for i in $(seq "$RUNS"); do
    cargo test --release -q -p leanlm --test deploy -- --nocapture --test-threads 1 2>&1 | grep -E "^(rolled back|the change reached)"
done
