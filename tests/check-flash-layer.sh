#!/usr/bin/env bash
# The full-size round trip of issue 2: `dsq synth --layers 1` of the released V4-Flash config
# (~9.3 GB: one main layer, the MTP block with its own 256 experts, embed and head), then
# `dsq inspect --check --json`.  Too slow (disk-bound, ~2.5 min here) for every CI run; run with
# `make check-flash-layer`.  Exits non-zero on any mismatch.
set -euo pipefail
DSQ=${DSQ_BIN:-build/dsq}
dir=$(mktemp -d /tmp/dsq-flash-layer-XXXXXX)
trap 'rm -rf "$dir"' EXIT
start=$(date +%s.%N)
"$DSQ" synth --config samples/configs/deepseek-v4-flash.json --out "$dir/m" --layers 1 --json > "$dir/synth.json"
mid=$(date +%s.%N)
"$DSQ" inspect "$dir/m" --check --json > "$dir/inspect.json"
end=$(date +%s.%N)
node -e '
const s = require(process.argv[1]), i = require(process.argv[2]);
const want = {n_layers: 1, n_mtp_layers: 1, tensors: 3146};
for (const k in want) if (i[k] !== want[k]) { console.error(`inspect ${k} = ${i[k]}, want ${want[k]}`); process.exit(1); }
if (!i.check || i.check.ok !== true) { console.error("inventory check failed"); process.exit(1); }
if (i.bytes !== s.bytes) { console.error(`bytes ${i.bytes} vs synth ${s.bytes}`); process.exit(1); }
console.log(`flash --layers 1: ${s.tensors} tensors, ${(s.bytes / 1e9).toFixed(2)} GB in ${s.shards} shards; inventory ok`);
' "$dir/synth.json" "$dir/inspect.json"
awk -v a="$start" -v b="$mid" -v c="$end" 'BEGIN { printf "synth %.1f s, inspect --check %.3f s\n", b - a, c - b }'
