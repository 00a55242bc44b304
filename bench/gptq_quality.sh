#!/usr/bin/env bash
# GPTQ vs importance-weighted (imatrix) vs round-to-nearest builds of the trained tiny V4.
#
# Calibration: calib.txt (the first CHUNKS chunks of CTX tokens) for both the imatrix and GPTQ.
# Scoring: the first 100 KB of valid.txt, ctx 512, `dsq compare` against the source checkpoint
# (KL(ref || build), top-1, PPL ratio).  Routed experts: w1/w3 in TYPE, w2 in int4-g32 (its 128 input
# columns are less than a 256-value k-quant super-block); int4-g32 puts all three in int4-g32.  The
# imatrix builds use importance for the k-quant tensors only (the int encoders take none), so for
# int4-g32 and every w2 "imatrix" equals round-to-nearest.  GPTQ runs on every expert tensor.
#
# GPTQ damping: DAMPS, a list of --gptq-damp values, one GPTQ build per type and value ("default": no
# --gptq-damp, the converter's default; the default list).  Builds are named TYPE-gptq-dDAMP.dsq.
#
# usage: bench/gptq_quality.sh [OUTDIR]   (env: DSQ, MODEL, CHUNKS, CTX, THREADS, TYPES, DAMPS, ACT_ORDER=1)
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} # a shared machine: spinning OpenMP threads cost more than they save
DSQ=${DSQ:-build/dsq}
MODEL=${MODEL:-../shared/models/v4-tiny-trained}
OUT=${1:-/tmp/dsq-gptq-quality}
CHUNKS=${CHUNKS:-16}
CTX=${CTX:-512}
THREADS=${THREADS:-2}
TYPES=${TYPES:-"q4_k q3_k q2_k int4-g32"}
ACT=${ACT_ORDER:+--act-order}
DAMPS=${DAMPS:-default}
mkdir -p "$OUT"
head -c 100000 "$MODEL/valid.txt" >"$OUT/valid100k.txt"
imx="$OUT/calib.imatrix"
[ -f "$imx" ] || "$DSQ" calibrate "$MODEL" "$MODEL/calib.txt" --out "$imx" --ctx "$CTX" --chunks "$CHUNKS" \
    --threads "$THREADS" >/dev/null
builds=()
for t in $TYPES; do
    if [ "$t" = int4-g32 ]; then ov=(--recipe int4); else
        ov=(--recipe int4 --override "*.experts.*.w1.weight=$t" --override "*.experts.*.w3.weight=$t"); fi
    "$DSQ" convert "$MODEL" "$OUT/$t-rtn.dsq" "${ov[@]}" --threads "$THREADS" --overwrite >/dev/null
    "$DSQ" convert "$MODEL" "$OUT/$t-imatrix.dsq" "${ov[@]}" --imatrix "$imx" --threads "$THREADS" --overwrite >/dev/null
    builds+=("$OUT/$t-rtn.dsq" "$OUT/$t-imatrix.dsq")
    for d in $DAMPS; do
        dopt=()
        [ "$d" = default ] || dopt=(--gptq-damp "$d")
        b="$OUT/$t-gptq-d$d"
        start=$(date +%s.%N)
        "$DSQ" convert "$MODEL" "$b.dsq" "${ov[@]}" --method gptq --calib "$MODEL/calib.txt" --calib-ctx "$CTX" \
            --calib-chunks "$CHUNKS" "${dopt[@]}" $ACT --threads "$THREADS" --overwrite --json >"$b.json"
        end=$(date +%s.%N)
        echo "$t gptq damp $d convert: $(echo "$end - $start" | bc) s; $(grep -o '"calibration_tokens": [0-9]*, "layers": [0-9]*, "seconds_per_layer": [0-9.]*, "gptq": [0-9]*, "imatrix": [0-9]*, "plain": [0-9]*, "factorisations": [0-9]*, "factor_seconds": [0-9.]*, "quantize_seconds": [0-9.]*' "$b.json")"
        builds+=("$b.dsq")
    done
done
"$DSQ" compare "$MODEL" "${builds[@]}" --text "$OUT/valid100k.txt" --ctx 512 --out "$OUT/report" --overwrite \
    --threads "$THREADS" --json >"$OUT/compare.json"
grep "^|" "$OUT/report/REPORT.md" || true
