#!/usr/bin/env bash
# `make test-faults`: the fault campaigns of issue #12, with their figures.
#   flips   FLIPS random single-bit flips across the golden model's .dsq (header, directory, table,
#           metadata, data, padding): `dsq verify` must reject every one; inspect/verify/eval must
#           never crash or hang (timeout).  The same number across its .dsqz: `dsq unpack` must
#           reject the flip or restore bytes identical to the original (a zstd bit the decoder
#           ignores); a different restored file is a failure.
#   kills   KILLS SIGKILLs at random moments of a convert of a ~1.4 GB synth: the final name never
#           holds an incomplete file, and `--resume` gives bytes identical to an uninterrupted run.
#   sigbus  inputs truncated while mapped (eval ppl of a .dsq, eval ppl of a safetensors
#           checkpoint; the run is stopped once the file shows in /proc/PID/maps, the file cut,
#           the run continued): a one-line I/O error naming the file, exit status 1, no crash.
#   valgrind  memcheck of convert, verify and eval ppl on the golden model: no error, no leak.
# Usage: DSQ_BIN=build/dsq tests/faults/run-faults.sh [SHARED]   (env: FLIPS, KILLS, SEED, PARTS)
set -uo pipefail
D=$(readlink -f "${DSQ_BIN:-build/dsq}")
S=$(readlink -f "${1:-../shared}")
FLIPS=${FLIPS:-1000}
KILLS=${KILLS:-20}
PARTS=${PARTS:-flips kills sigbus valgrind}
RANDOM=${SEED:-12}
G=$S/golden/v4-tiny/model
M=$S/models/v4-tiny-trained
W=$(mktemp -d "${TMPDIR:-/tmp}/dsq-faults.XXXXXX")
FW=""
trap 'rm -rf "$W" ${FW:+"$FW"}' EXIT
summary=()
bad=0
say() { echo "faults: $*"; }
fail() { echo "FAIL: $*"; bad=$((bad + 1)); }

# rc 124 = timeout, ≥ 128 = killed by a signal (crash): never acceptable
crashed() { [ "$1" -eq 124 ] || [ "$1" -ge 128 ]; }
rand64() { echo $(( (RANDOM << 45) ^ (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM )); }
flip_bit() { # FILE BYTE BIT: xor one bit in place
  local v; v=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $(( v ^ (1 << $3) )))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# Which region of the .dsq a byte is in (header / directory / table / metadata / data / padding).
regions() { # prints "start end name" lines for the .dsq $1 (from its fixed header and directory)
  local f=$1 u64; u64() { od -An -tu8 -j "$2" -N8 "$1" | tr -d ' '; }
  local data_off data_bytes dir_off n ent
  data_off=$(u64 "$f" 32); data_bytes=$(u64 "$f" 40); dir_off=$(u64 "$f" 48)
  n=$(od -An -tu4 -j 56 -N4 "$f" | tr -d ' '); ent=$(od -An -tu4 -j 60 -N4 "$f" | tr -d ' ')
  echo "0 128 header"; echo "128 $data_off padding"; echo "$data_off $((data_off + data_bytes)) data"
  echo "$((data_off + data_bytes)) $dir_off padding"; echo "$dir_off $((dir_off + n * ent)) directory"
  for ((i = 0; i < n; i++)); do
    local e=$((dir_off + i * ent)) kind off sz
    kind=$(od -An -tu4 -j $e -N4 "$f" | tr -d ' '); off=$(u64 "$f" $((e + 8))); sz=$(u64 "$f" $((e + 16)))
    echo "$off $((off + sz)) $([ "$kind" = 1 ] && echo metadata || echo table)"
  done
}

part_flips() {
  local t0=$SECONDS W=$W
  # on tmpfs when there is one: the campaign is thousands of short runs that each fsync an output
  [ -d /dev/shm ] && [ -w /dev/shm ] && FW=$(mktemp -d /dev/shm/dsq-flips.XXXXXX) && W=$FW
  "$D" convert "$G" "$W/g.dsq" --recipe release >/dev/null || { fail "flips: convert of the golden model"; return; }
  "$D" pack "$W/g.dsq" "$W/g.dsqz" >/dev/null || { fail "flips: pack"; return; }
  regions "$W/g.dsq" > "$W/regions"
  echo "1 2 3 4 5 6 7 8" > "$W/ids.txt"
  local size caught=0 crashes=0 i byte bit rc r rs re nreg
  nreg=$(awk '$2 > $1' "$W/regions" | wc -l)
  declare -A tried=() hit=()
  size=$(stat -c %s "$W/g.dsq")
  for ((i = 0; i < FLIPS; i++)); do
    # every region gets its share: pick the region first (round robin), then a byte in it
    read -r rs re r <<< "$(awk -v k=$((i % nreg)) '$2 > $1 {if (n++ == k) {print; exit}}' "$W/regions")"
    byte=$(( rs + $(rand64) % (re - rs) )); bit=$((RANDOM % 8))
    tried[$r]=$(( ${tried[$r]:-0} + 1 ))
    flip_bit "$W/g.dsq" $byte $bit
    timeout 20 "$D" verify "$W/g.dsq" >/dev/null 2>&1; rc=$?
    if crashed $rc; then fail "verify rc $rc on flip of byte $byte bit $bit ($r)"; crashes=$((crashes + 1));
    elif [ $rc -ne 0 ]; then caught=$((caught + 1)); hit[$r]=$(( ${hit[$r]:-0} + 1 ));
    else fail "verify passed a flip of byte $byte bit $bit ($r)"; fi
    timeout 20 "$D" inspect "$W/g.dsq" >/dev/null 2>&1; rc=$?
    crashed $rc && { fail "inspect rc $rc on flip of byte $byte bit $bit ($r)"; crashes=$((crashes + 1)); }
    timeout 60 "$D" eval logits "$W/g.dsq" --tokens "$W/ids.txt" --out "$W/l.safetensors" --overwrite --threads 1 \
      >/dev/null 2>&1; rc=$?
    crashed $rc && { fail "eval rc $rc on flip of byte $byte bit $bit ($r)"; crashes=$((crashes + 1)); }
    flip_bit "$W/g.dsq" $byte $bit
  done
  local by=""; for r in header directory table metadata data padding; do by="$by $r ${hit[$r]:-0}/${tried[$r]:-0},"; done
  summary+=("flips .dsq:  verify caught $caught/$FLIPS (${by%,}); crashes or hangs of verify/inspect/eval: $crashes")
  local zsize zc=0 zsame=0 zcr=0
  zsize=$(stat -c %s "$W/g.dsqz")
  for ((i = 0; i < FLIPS; i++)); do
    byte=$(( $(rand64) % zsize )); bit=$((RANDOM % 8))
    flip_bit "$W/g.dsqz" $byte $bit
    rm -f "$W/u.dsq"
    timeout 20 "$D" unpack "$W/g.dsqz" "$W/u.dsq" >/dev/null 2>&1; rc=$?
    if crashed $rc; then fail "unpack rc $rc on flip of byte $byte bit $bit"; zcr=$((zcr + 1));
    elif [ $rc -ne 0 ]; then
      zc=$((zc + 1)); [ -e "$W/u.dsq" ] && fail "unpack failed but left $W/u.dsq (byte $byte)"
    elif cmp -s "$W/u.dsq" "$W/g.dsq"; then zsame=$((zsame + 1));
    else fail "unpack restored different bytes without error (flip of byte $byte bit $bit)"; fi
    flip_bit "$W/g.dsqz" $byte $bit
  done
  summary+=("flips .dsqz: unpack caught $zc/$FLIPS, restored identical bytes $zsame/$FLIPS (bits zstd ignores), wrong output 0 unless listed above, crashes or hangs: $zcr")
  summary+=("flips took $((SECONDS - t0)) s")
  [ -n "$FW" ] && rm -rf "$FW"
}

part_kills() {
  local t0=$SECONDS
  sed -e 's/"n_routed_experts": 256/"n_routed_experts": 32/' -e 's/"vocab_size": 129280/"vocab_size": 16384/' \
    "$(dirname "$0")/../../samples/configs/deepseek-v4-flash.json" > "$W/mid.json"
  "$D" synth --config "$W/mid.json" --out "$W/src" --layers 1 >/dev/null || { fail "kills: synth"; return; }
  local s0 ms
  s0=$(date +%s%N)
  "$D" convert "$W/src" "$W/ref.dsq" --recipe release >/dev/null || { fail "kills: reference convert"; return; }
  ms=$(( ($(date +%s%N) - s0) / 1000000 ))
  local bytes; bytes=$(stat -c %s "$W/ref.dsq")
  local ok=0 i at rc incomplete=0 before=0 after=0
  for ((i = 0; i < KILLS; i++)); do
    rm -f "$W/k.dsq" "$W/.k.dsq.partial" "$W/.k.dsq.journal"
    at=$(( RANDOM % (ms + 1) ))
    "$D" convert "$W/src" "$W/k.dsq" --recipe release >/dev/null 2>&1 &
    local pid=$!
    sleep "$(printf '%d.%03d' $((at / 1000)) $((at % 1000)))"
    kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
    if [ -e "$W/k.dsq" ]; then # published before the kill: it must be the whole file
      after=$((after + 1))
      cmp -s "$W/k.dsq" "$W/ref.dsq" || { incomplete=$((incomplete + 1)); fail "kill at $at ms: k.dsq differs"; }
    else
      before=$((before + 1))
    fi
    # resume (a kill before the journal existed leaves nothing to resume: then it is a fresh run)
    if [ ! -e "$W/k.dsq" ]; then
      "$D" convert "$W/src" "$W/k.dsq" --recipe release --resume >/dev/null 2>"$W/err"; rc=$?
      [ $rc -eq 0 ] || { fail "kill at $at ms: resume rc $rc: $(head -1 "$W/err")"; continue; }
    fi
    if [ -e "$W/.k.dsq.partial" ] || [ -e "$W/.k.dsq.journal" ]; then fail "kill at $at ms: temp files left"; fi
    if cmp -s "$W/k.dsq" "$W/ref.dsq"; then ok=$((ok + 1)); else fail "kill at $at ms: resumed bytes differ"; fi
  done
  summary+=("kills: resumed to identical bytes $ok/$KILLS ($before killed before publication, $after after; incomplete files at the final name: $incomplete); synth $bytes bytes, uninterrupted convert $ms ms; took $((SECONDS - t0)) s")
}

# Start CMD in the background, wait until it maps FILE, stop it, truncate FILE, let it go on.
truncate_while_mapped() { # FILE KEEP_BYTES CMD...
  local f=$1 keep=$2; shift 2
  "$@" >/dev/null 2>"$W/sigbus.err" &
  local pid=$! i
  for ((i = 0; i < 4000; i++)); do grep -qF "$f" /proc/$pid/maps 2>/dev/null && break; sleep 0.005; done
  kill -STOP $pid 2>/dev/null; truncate -s "$keep" "$f"; kill -CONT $pid 2>/dev/null
  wait $pid
}

part_sigbus() {
  local n=0 ok=0 rc
  check() { # NAME FILE RC
    n=$((n + 1))
    if [ "$3" -eq 1 ] && grep -qF "$2: I/O error" "$W/sigbus.err"; then ok=$((ok + 1));
    else fail "sigbus $1: rc $3, stderr: $(head -c 300 "$W/sigbus.err")"; fi
  }
  "$D" convert "$M" "$W/t.dsq" --recipe release >/dev/null || { fail "sigbus: convert"; return; }
  cp "$W/t.dsq" "$W/e.dsq"
  truncate_while_mapped "$W/e.dsq" 4096 "$D" eval ppl "$W/e.dsq" "$M/test.txt" --ctx 64 --chunks 8 --threads 1; rc=$?
  check "eval ppl of a .dsq" "$W/e.dsq" $rc
  mkdir -p "$W/m"; cp "$M"/* "$W/m/"
  truncate_while_mapped "$W/m/model.safetensors" 65536 "$D" eval ppl "$W/m" "$M/test.txt" --ctx 64 --chunks 8 --threads 1
  rc=$?; check "eval ppl of a safetensors checkpoint" "$W/m/model.safetensors" $rc
  summary+=("sigbus: inputs truncated while mapped reported as I/O errors naming the file $ok/$n")
}

part_valgrind() {
  command -v valgrind >/dev/null || { fail "valgrind not installed (make deps-fuzz)"; return; }
  local t0=$SECONDS n=0 ok=0 vg=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible --show-leak-kinds=definite,indirect,possible)
  run_vg() { # NAME CMD...
    local name=$1; shift; n=$((n + 1))
    if "${vg[@]}" "$@" >/dev/null 2>"$W/vg.err"; then ok=$((ok + 1)); else fail "valgrind $name: $(grep -m3 -E '==[0-9]+==' "$W/vg.err")"; fi
  }
  run_vg "convert" "$D" convert "$G" "$W/v.dsq" --recipe int4 --threads 1
  run_vg "verify" "$D" verify "$W/v.dsq"
  head -c 2000 "$M/test.txt" > "$W/short.txt"
  run_vg "eval ppl" "$D" eval ppl "$M" "$W/short.txt" --ctx 32 --chunks 2 --threads 1
  summary+=("valgrind: clean $ok/$n (convert int4, verify, eval ppl on the tiny models); took $((SECONDS - t0)) s")
}

for p in $PARTS; do "part_$p"; done
echo "== fault campaign summary"
for l in "${summary[@]}"; do echo "faults: $l"; done
[ $bad -eq 0 ] || { echo "faults: $bad failures"; exit 1; }
echo "faults: all campaigns passed"
