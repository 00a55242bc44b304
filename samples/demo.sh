#!/usr/bin/env bash
# `make demo`: the main job on the bundled sample.  Synthesizes the tiny V4 sample model from
# samples/configs/v4-tiny.json, checks and inspects it, then runs the reference forward pass on a
# short token sequence (exact numerics, prefill and step-by-step decode), converts it under the
# release, fp8 and int4 recipes, verifies the containers, and compares the three builds with the
# source on samples/text/sample.txt (tokenized with the sample's byte-level BPE tokenizer, which
# the containers carry in their metadata): REPORT.md and REPORT.html.  Outputs go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
DSQ=${DSQ_BIN:-build/dsq}
OUT=out/demo
mkdir -p "$OUT"

echo "== dsq synth: a random V4 checkpoint in the release layout (samples/configs/v4-tiny.json)"
"$DSQ" synth --config samples/configs/v4-tiny.json --out "$OUT/model" --seed 1 --overwrite \
  --tokenizer samples/tokenizer/tokenizer.json

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
echo "== dsq tokenize: the sample text with the tokenizer stored in a container"
"$DSQ" tokenize "$OUT/sample-int4.dsq" - --json < samples/text/sample.txt | cut -c 1-60
echo

echo "== dsq compare: KL, top-1 agreement, PPL ratio of each build against the source, on the sample text"
"$DSQ" compare "$OUT/model" "$OUT/sample-release.dsq" "$OUT/sample-fp8.dsq" "$OUT/sample-int4.dsq" \
  --text samples/text/sample.txt --ctx 256 --out "$OUT/report" --title "dsq demo: the tiny V4 sample" --overwrite

echo
echo "demo outputs are in $OUT/"
