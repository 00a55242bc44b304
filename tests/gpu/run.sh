#!/usr/bin/env bash
# Everything issue 10 checks on a GPU, in one run of a few minutes (the GPU machine is lent for minutes at a
# time; only the repository travels there).  Run `make gpu-data` beforehand where ../shared exists: the
# golden files are read from the ignored .gpu-data/ only; nothing outside the checkout is read.
#
#   tests/gpu/run.sh [OUTDIR]        (default: $OUT, else gpu-results/)
#
# .gpu-data/ is git-ignored: a tool that copies the working tree to the GPU machine must be told to take it
# along (for the device `run` tool of these sessions: carry [".gpu-data"]).  Budget: about 5 minutes on a
# 16-core H100 host (build ~1 min, GPU suite ~1-2 min, CLI suite, bench ~1 min); each step has a timeout.
#
# Writes into OUTDIR: env.txt (nvidia-smi, toolchain, ldd), build.log, test-gpu.log (the cuda vs cpu suite),
# test_eval_cli.log (the CLI suite, whose --device cuda test compares with golden when a GPU is present),
# bench-gpu.txt (copy/H2D/BF16 GEMM/GEMV/prefill rates), summary.txt.  Exit 0 only when every step passed;
# a SKIPPED GPU suite on this machine counts as a failure here.
set -u
cd "$(dirname "$0")/../.." || exit 1
out=${1:-${OUT:-gpu-results}}
mkdir -p "$out" || exit 1
sum="$out/summary.txt"
: > "$sum"
log() { echo "$*" | tee -a "$sum"; }
start=$(date +%s)
fail=0

{ date -u; uname -a; echo; nvidia-smi 2>&1; echo; command -v nvcc && nvcc --version; gcc --version | head -1; } > "$out/env.txt" 2>&1
log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
if [ ! -f .gpu-data/golden/v4-tiny/model/model.safetensors ]; then
  log "run.sh: .gpu-data/ is missing: run 'make gpu-data' in a checkout next to ../shared first"
  exit 1
fi

# 1. build (the CUDA kernels with nvcc -Werror); a stale build/ from another machine is rebuilt
jobs=$(nproc 2>/dev/null || echo 4)
if ! timeout 300 make -j"$jobs" all build/bench/gpu build/tests/test_eval_cli build/tests/test_cuda_decode \
       $(ls tests/gpu/test_*.c | sed 's#^tests/\(.*\)\.c$#build/tests/\1#') > "$out/build.log" 2>&1; then
  log "build: FAILED (last lines of build.log follow)"
  tail -20 "$out/build.log" | tee -a "$sum"
  exit 1
fi
ldd build/dsq >> "$out/env.txt" 2>&1
if ! nm build/libdsq.a 2>/dev/null | grep -q dsq_cuda_open; then
  log "build: libdsq.a has no CUDA backend (nvcc not on the PATH?)"
  exit 1
fi
log "build: ok ($(( $(date +%s) - start )) s)"

# 2. the GPU suite: cuda backend vs cpu backend
t0=$(date +%s)
timeout 300 make --no-print-directory test-gpu > "$out/test-gpu.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  log "test-gpu: FAILED (rc $rc; see test-gpu.log)"; fail=1
elif grep -q "SKIPPED" "$out/test-gpu.log"; then
  log "test-gpu: SKIPPED on this machine: $(grep SKIPPED "$out/test-gpu.log" | head -1)"; fail=1
else
  log "test-gpu: passed ($(( $(date +%s) - t0 )) s)"
fi
grep -E "rel L2|KL" "$out/test-gpu.log" | grep -v "^  linear" >> "$sum"

# 3. the decoders on the CPU and the CLI (its --device cuda test meets the golden tolerance on a GPU)
for t in test_cuda_decode test_eval_cli; do
  DSQ_SHARED="$PWD/.gpu-data" DSQ_BIN="$PWD/build/dsq" DSQ_BUILD="$PWD/build" timeout 120 build/tests/$t > "$out/$t.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then log "$t: FAILED (rc $rc)"; fail=1; else log "$t: passed"; fi
done

# 4. bench/gpu
timeout 180 build/bench/gpu > "$out/bench-gpu.txt" 2>&1
rc=$?
if [ $rc -ne 0 ] || grep -q SKIPPED "$out/bench-gpu.txt"; then log "bench/gpu: FAILED or skipped (rc $rc)"; fail=1; fi
cat "$out/bench-gpu.txt" >> "$sum"
log "total: $(( $(date +%s) - start )) s"
exit $fail
