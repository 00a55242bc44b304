#!/usr/bin/env bash
# Issue 13 §5 quality table on the trained tiny V4: routed experts' w1/w3 (the w2 matrices have 128
# columns, not a whole 256-value k-quant super-block) at q2_k..q6_k and iq4_xs by plain squared error and with an
# imatrix from calib.txt, against int4-g32 / int2-g32-asym round-to-nearest, scored by `dsq compare`
# on the first 100 KB of valid.txt (ctx 512; CHUNKS chunks, default 16).
# Usage: DSQ_BIN=build/dsq bench/kquant_quality.sh [OUTDIR]
set -euo pipefail
DSQ=${DSQ_BIN:-build/dsq}
M=${MODEL:-../shared/models/v4-tiny-trained}
OUT=${1:-/tmp/dsq-kquant-quality}
CHUNKS=${CHUNKS:-16}
mkdir -p "$OUT"
head -c 100000 "$M/valid.txt" > "$OUT/valid100k.txt"
"$DSQ" calibrate "$M" "$M/calib.txt" --out "$OUT/calib.imatrix" --chunks "$CHUNKS" --overwrite 2>/dev/null | tail -6
builds=()
for e in int4-g32 int2-g32-asym q2_k q3_k q4_k q5_k q6_k iq4_xs; do
  "$DSQ" convert "$M" "$OUT/$e.dsq" --recipe release --override "*experts.*.w1*=$e" --override "*experts.*.w3*=$e" --overwrite
  builds+=("$OUT/$e.dsq")
done
for e in q2_k q3_k q4_k; do
  "$DSQ" convert "$M" "$OUT/$e-imatrix.dsq" --recipe release --override "*experts.*.w1*=$e" \
    --override "*experts.*.w3*=$e" --imatrix "$OUT/calib.imatrix" --overwrite
  builds+=("$OUT/$e-imatrix.dsq")
done
"$DSQ" compare "$M" "${builds[@]}" --text "$OUT/valid100k.txt" --ctx 512 --chunks "$CHUNKS" \
  --out "$OUT/report" --title "k-quant experts on the trained tiny V4" --overwrite
