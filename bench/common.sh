# Shared by the benchmark scripts (sourced, not run): dist builds (whole-program optimised), a scratch directory whose servers are
# stopped on exit, and the benchmark's chat request.
#
#   . "$(dirname "$0")/common.sh"     # after `cd` to the repository root
#   bench_setup                       # sets $bin, $work, $pids (append every server's pid), and the exit trap
#   bench_body "$work/body.json"      # the ~1 KB chat request every overhead benchmark sends
#   bench_config "$work/leanlm.toml" "$mock" "$work/calls.db" [more TOML]
#   port=$(free_port)

bench_setup() {
    target="${CARGO_TARGET_DIR:-$PWD/target}"
    local profile="${PROFILE:-dist}"
    cargo build --profile "$profile" -q -p leanlm -p leanlm-mock
    bin="$target/$profile"
    work="$(mktemp -d)"
    pids=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}

# A ~1 KB chat request, as a classification or extraction call might send.
bench_body() {
    python3 - "$1" <<'PY'
import json, sys
system = ("You are a support assistant for a retail bank. Classify the customer's message into exactly one "
          "intent from the list and answer with the intent name only. Intents: card_arrival, card_linking, "
          "exchange_rate, card_payment_wrong_exchange_rate, extra_charge_on_statement, pending_cash_withdrawal, "
          "fiat_currency_support, card_delivery_estimate, automatic_top_up, card_not_working, "
          "exchange_via_app, lost_or_stolen_card, age_limit, pin_blocked, contactless_not_working, "
          "top_up_by_bank_transfer_charge, pending_top_up, cancel_transfer, top_up_limits, wrong_amount_of_cash_received.")
body = {"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 16,
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": "I ordered my card two weeks ago and it still has not arrived, when will I get it? " * 3}]}
s = json.dumps(body)
open(sys.argv[1], "w").write(s)
print(f"request body: {len(s)} bytes", file=sys.stderr)
PY
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The gateway's configuration for a benchmark: the mock as the OpenAI provider, the call log in SQLite, and
# no exact cache (the request is deterministic, at temperature 0: every call after the first would be a
# hit). More TOML, if given, is appended.
bench_config() { # file mock-url db-path [more TOML]
    cat > "$1" <<TOML
[providers.openai]
kind = "openai"
base_url = "$2/v1"
api_key = "sk-bench"
[store]
url = "sqlite://$3"
queue_capacity = ${QUEUE:-10000}
[cache]
exact = "off"
${4:-}
TOML
}
