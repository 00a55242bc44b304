#!/usr/bin/env bash
# `make demo`: the main job on the bundled sample, a small DeepSeek-V4 *trained* on text
# (samples/models/v4-tiny-trained: release layout, FP8/FP4 weights, its own tokenizer, calibration and
# validation text; see its README).  The steps a user shrinking V4 takes:
#   1. check the checkpoint and measure the source's perplexity on held-out text;
#   2. calibrate: an importance matrix (Σx² per input column of every linear) from calib.txt;
#   3. plan a mix for a budget: `dsq plan` measures each tensor group's KL under each candidate encoding
#      and picks the encodings with the least predicted KL at 4 bits per quantizable weight;
#   4. convert under several recipes: the release bytes, round-to-nearest int4 experts, GGML k-quant
#      experts (q4_k, q2_k) weighted by the imatrix, and the planned mix; verify every container;
#   5. export llama.cpp GGUFs (deepseek4) of the q4_k build and of the planned mix, check they read back;
#   6. compare the builds with the source on valid.txt: KL, top-1 agreement, PPL ratio
#      (REPORT.md and REPORT.html in out/demo/report/).
# Outputs go to out/demo/.  DEMO_CHUNKS (default 16) sets how many 512-token chunks each step scores.
set -euo pipefail
cd "$(dirname "$0")/.."
DSQ=${DSQ_BIN:-build/dsq}
MODEL=samples/models/v4-tiny-trained
OUT=out/demo
CHUNKS=${DEMO_CHUNKS:-16}
mkdir -p "$OUT"

echo "== dsq inspect --check: the checkpoint's inventory matches its config"
"$DSQ" inspect "$MODEL" --check

echo
echo "== dsq eval ppl: the source's perplexity on held-out text ($CHUNKS chunks of 512 tokens)"
"$DSQ" eval ppl "$MODEL" "$MODEL/valid.txt" --ctx 512 --chunks "$CHUNKS"

echo
echo "== dsq calibrate: importance matrix from calib.txt, with routed-expert coverage"
"$DSQ" calibrate "$MODEL" "$MODEL/calib.txt" --ctx 512 --chunks "$CHUNKS" --out "$OUT/calib.imatrix" --overwrite

echo
echo "== dsq plan: per-group sensitivity, then the least predicted KL at 4.0 bits per quantizable weight"
# candidates that all have lossless GGUF twins, so the planned build exports as it is
"$DSQ" plan "$MODEL" "$MODEL/calib.txt" --imatrix "$OUT/calib.imatrix" --target-bpw 4.0 \
  --candidates q2_k,q4_k,int4-g32,int8-g32 --ctx 128 --chunks 1 --out "$OUT/plan-4bpw.json" --overwrite \
  2>/dev/null

echo
echo "== dsq convert: re-encode, streaming, atomically, with checksums"
# The routed experts' w1/w3 have 256 input columns (one k-quant super-block); w2 has 128, so it stays
# in the release's MXFP4 (k-quants need a multiple of 256 columns).
"$DSQ" convert "$MODEL" "$OUT/release.dsq" --recipe release --overwrite
"$DSQ" convert "$MODEL" "$OUT/int4.dsq" --recipe int4 --overwrite
"$DSQ" convert "$MODEL" "$OUT/q4k.dsq" --recipe release --override '*experts.*.w[13]*=q4_k' \
  --imatrix "$OUT/calib.imatrix" --overwrite
"$DSQ" convert "$MODEL" "$OUT/q2k.dsq" --recipe release --override '*experts.*.w[13]*=q2_k' \
  --imatrix "$OUT/calib.imatrix" --overwrite
"$DSQ" convert "$MODEL" "$OUT/plan-4bpw.dsq" --recipe "$OUT/plan-4bpw.json" --imatrix "$OUT/calib.imatrix" --overwrite

echo
echo "== dsq verify: checksums, metadata, NaN/Inf, and the re-encoding error against the source"
for b in release int4 q4k q2k plan-4bpw; do
  "$DSQ" verify "$OUT/$b.dsq" --source "$MODEL"
done

echo
echo "== dsq export: the q4_k build and the planned mix as llama.cpp GGUFs (blocks copied as they are)"
"$DSQ" export "$OUT/q4k.dsq" "$OUT/q4k.gguf" --overwrite
"$DSQ" verify "$OUT/q4k.gguf" --source "$MODEL"
"$DSQ" export "$OUT/plan-4bpw.dsq" "$OUT/plan-4bpw.gguf" --overwrite
"$DSQ" verify "$OUT/plan-4bpw.gguf" --source "$MODEL"

echo
echo "== dsq compare: KL, top-1 agreement and PPL ratio of each build against the source"
"$DSQ" compare "$MODEL" "$OUT/release.dsq" "$OUT/int4.dsq" "$OUT/q4k.dsq" "$OUT/q2k.dsq" "$OUT/q4k.gguf" \
  "$OUT/plan-4bpw.dsq" "$OUT/plan-4bpw.gguf" \
  --text "$MODEL/valid.txt" --ctx 512 --chunks "$CHUNKS" --out "$OUT/report" \
  --title "dsq demo: the trained tiny V4" --overwrite

echo
echo "== dsq generate: greedy text from the q4_k GGUF"
"$DSQ" generate "$OUT/q4k.gguf" --prompt "This program is free software" -n 24

echo
echo "demo outputs are in $OUT/ (report: $OUT/report/REPORT.md, REPORT.html)"
