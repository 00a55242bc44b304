#!/usr/bin/env bash
# Issue 13 §5 quality table on the trained tiny V4 (samples/models/v4-tiny-trained): calibration on
# calib.txt, scoring on the first 100 KB of valid.txt (ctx 512, CHUNKS chunks, default 16) by `dsq compare`
# (KL, top-1 agreement, PPL ratio against the source).
#   1. round-to-nearest vs imatrix k-quants of the routed experts' w1/w3 at q4_k, q3_k, q2_k (w2 has 128
#      columns, not a whole 256-value super-block: it stays in the release's MXFP4);
#   2. uniform builds (every quantizable matrix of `dsq plan`'s groups in one k-type, the 128-column ones in
#      the integer fallback) against `dsq plan` mixes of the same stored bytes, and plan mixes at 4.0, 3.0
#      and 2.5 bits per quantizable weight (bpw over the plan groups' matrices, as `dsq plan` counts it).
#      Every plan shares one sensitivity measurement (--table) on PLAN_CHUNKS chunks of calib.txt.
# GPTQ rows: bench/gptq_quality.sh (the gptq helper's) writes its builds into the same OUTDIR and adds
# them to the comparison with GPTQ_BUILDS (space-separated .dsq paths), so one report holds every row.
# Usage: DSQ_BIN=build/dsq bench/quality.sh [OUTDIR]      (prints the report path; table in REPORT.md)
set -euo pipefail
DSQ=${DSQ_BIN:-build/dsq}
M=${MODEL:-samples/models/v4-tiny-trained}
OUT=${1:-/tmp/dsq-quality}
CHUNKS=${CHUNKS:-16}
PLAN_CHUNKS=${PLAN_CHUNKS:-2}
mkdir -p "$OUT"
head -c 100000 "$M/valid.txt" > "$OUT/valid100k.txt"
"$DSQ" calibrate "$M" "$M/calib.txt" --out "$OUT/calib.imatrix" --chunks "$CHUNKS" --overwrite 2>/dev/null | tail -5
builds=()

# 1. round-to-nearest vs imatrix (routed experts' w1/w3)
for e in q4_k q3_k q2_k; do
  "$DSQ" convert "$M" "$OUT/rtn-$e.dsq" --recipe release --override "*experts.*.w[13]*=$e" --overwrite >/dev/null
  "$DSQ" convert "$M" "$OUT/imatrix-$e.dsq" --recipe release --override "*experts.*.w[13]*=$e" \
    --imatrix "$OUT/calib.imatrix" --overwrite >/dev/null
  builds+=("$OUT/rtn-$e.dsq" "$OUT/imatrix-$e.dsq")
done

# 2. uniform builds vs plan mixes of equal size
uniform_recipe() { # NAME KTYPE FALLBACK: the plan groups' matrices, 128-column ones (wq_b, w2) in FALLBACK
  cat > "$OUT/uniform-$1.json" <<EOF
{"name": "uniform-$1", "description": "every plan-group matrix in $2 ($3 where rows are not whole super-blocks)",
 "rules": [{"match": "*.attn.wq_b.weight", "encoding": "$3"}, {"match": "*.w2.weight", "encoding": "$3"},
  {"match": "embed.weight", "encoding": "$2"}, {"match": "head.weight", "encoding": "$2"},
  {"match": "*.attn.wq_a.weight", "encoding": "$2"}, {"match": "*.attn.wkv.weight", "encoding": "$2"},
  {"match": "*.attn.wo_a.weight", "encoding": "$2"}, {"match": "*.attn.wo_b.weight", "encoding": "$2"},
  {"match": "*.e_proj.weight", "encoding": "$2"}, {"match": "*.h_proj.weight", "encoding": "$2"},
  {"match": "*.ffn.shared_experts.w[13].weight", "encoding": "$2"},
  {"match": "*.ffn.experts.*.w[13].weight", "encoding": "$2"}]}
EOF
}
plan() { # NAME BUDGET-OPTION VALUE
  "$DSQ" plan "$M" "$M/calib.txt" --imatrix "$OUT/calib.imatrix" --chunks "$PLAN_CHUNKS" --table "$OUT/plan-table.json" \
    "$2" "$3" --out "$OUT/plan-$1.json" --overwrite --json > "$OUT/plan-$1.out"
  "$DSQ" convert "$M" "$OUT/plan-$1.dsq" --recipe "$OUT/plan-$1.json" --imatrix "$OUT/calib.imatrix" --overwrite >/dev/null
  builds+=("$OUT/plan-$1.dsq")
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('plan %-12s %9d bytes  %.3f bpw  predicted KL %.4g  measured (calib) %.4g' % (sys.argv[2], j['total_bytes'], j['bpw'], j['predicted_kl'], j['measured_kl']))" "$OUT/plan-$1.out" "$1" 2>/dev/null || true
}
rm -f "$OUT/plan-table.json"
for u in "q4_k int4-g32" "q3_k int2-g32-asym" "q2_k int2-g64-asym"; do
  set -- $u
  uniform_recipe "$1" "$1" "$2"
  "$DSQ" convert "$M" "$OUT/uniform-$1.dsq" --recipe "$OUT/uniform-$1.json" --imatrix "$OUT/calib.imatrix" --overwrite >/dev/null
  size=$("$DSQ" convert "$M" "$OUT/x.dsq" --recipe "$OUT/uniform-$1.json" --dry-run --json | grep -o '"bytes_out": [0-9]*' |
    head -1 | grep -o '[0-9]*$')
  builds+=("$OUT/uniform-$1.dsq")
  plan "size-of-$1" --target-size "$size"
  echo "uniform $1: $size bytes"
done
for b in 4.0 3.0 2.5; do plan "$b-bpw" --target-bpw "$b"; done

# shellcheck disable=SC2206
builds+=(${GPTQ_BUILDS:-})
"$DSQ" compare "$M" "${builds[@]}" --text "$OUT/valid100k.txt" --ctx 512 --chunks "$CHUNKS" \
  --out "$OUT/report" --title "issue 13 quality on the trained tiny V4" --overwrite
