#!/usr/bin/env bash
# `make demo`: the main job on the bundled sample.  Synthesizes the tiny V4 sample model from
# samples/configs/v4-tiny.json, checks and inspects it, then runs the reference forward pass on a
# short token sequence (exact numerics, prefill and step-by-step decode), converts it under the
# release, fp8 and int4 recipes and verifies the containers.  Outputs go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
DSQ=${DSQ_BIN:-build/dsq}
OUT=out/demo
mkdir -p "$OUT"

echo "== dsq synth: a random V4 checkpoint in the release layout (samples/configs/v4-tiny.json)"
"$DSQ" synth --config samples/configs/v4-tiny.json --out "$OUT/model" --seed 1 --overwrite

echo
echo "== dsq inspect --check: the inventory matches the config"
"$DSQ" inspect "$OUT/model" --check

echo
echo "== dsq eval logits: prefill vs step-by-step decode (exact numerics)"
echo "0 17 42 7 99 3 250 11 64 128 5 301 77 19 200 45 8 511 36 90 2 150 33 404" > "$OUT/tokens.txt"
"$DSQ" eval logits "$OUT/model" --tokens "$OUT/tokens.txt" --out "$OUT/prefill.safetensors" --overwrite
"$DSQ" eval logits "$OUT/model" --tokens "$OUT/tokens.txt" --out "$OUT/decode.safetensors" --decode-from 10 --overwrite
"$DSQ" inspect "$OUT/prefill.safetensors" --tensors | tail -n 2

echo
echo "== dsq convert: re-encode under three recipes, streaming, atomically, with checksums"
for r in release fp8 int4; do
  "$DSQ" convert "$OUT/model" "$OUT/sample-$r.dsq" --recipe "$r" --overwrite
done

echo
echo "== dsq verify: checksums, metadata, and the re-encoding error against the source"
for r in release int4; do
  "$DSQ" verify "$OUT/sample-$r.dsq" --source "$OUT/model"
done

echo
echo "demo outputs are in $OUT/"
