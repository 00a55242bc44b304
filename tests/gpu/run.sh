#!/usr/bin/env bash
# Everything issue 10 checks on a GPU, in one run of a few minutes (the GPU machine is lent for minutes at a
# time; only the repository travels there).  Run `make gpu-data` beforehand where ../shared exists: the
# golden files are read from the ignored .gpu-data/ only; nothing outside the checkout is read.
#
#   tests/gpu/run.sh [OUTDIR]        (default: $OUT, else gpu-results/)
#
# .gpu-data/ is git-ignored: a tool that copies the working tree to the GPU machine must be told to take it
# along (for the device `run` tool of these sessions: carry [".gpu-data"], and "build" too if the GPU
# machine may lack the -dev packages: 43 + 15 MB).  Budget: about 5 minutes on a
# 16-core H100 host (build ~1 min, GPU suite ~1-2 min, CLI suite, bench ~1 min); each step has a timeout.
#
# Writes into OUTDIR: env.txt (nvidia-smi, toolchain, ldd), build.log, test-gpu.log (the cuda vs cpu suite),
# test_eval_cli.log (the CLI suite, whose --device cuda test compares with golden when a GPU is present),
# speed-cpu.json / speed-cuda.json (dsq eval logits on the tiny golden model), bench-gpu.txt (copy/H2D/BF16
# GEMM/GEMV/prefill rates), summary.txt.  Exit 0 only when every step passed;
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

# 1. build (the CUDA kernels with nvcc -Werror).  Where the build cannot run (no -dev packages on the GPU
# machine) but a build/ made elsewhere was carried along and runs here, that one is used, and said so.
jobs=$(nproc 2>/dev/null || echo 4)
gpu_tests=$(ls tests/gpu/test_*.c | sed 's#^tests/\(.*\)\.c$#build/tests/\1#')
if timeout 300 make -j"$jobs" all build/bench/gpu build/tests/test_eval_cli build/tests/test_cuda_decode $gpu_tests \
     > "$out/build.log" 2>&1; then
  log "build: ok ($(( $(date +%s) - start )) s)"
elif [ -x build/dsq ] && build/dsq version > /dev/null 2>&1 && [ -x build/bench/gpu ]; then
  log "build: FAILED here (see build.log); using the prebuilt build/ that came with the checkout"
  fail=1
else
  log "build: FAILED (last lines of build.log follow)"
  tail -20 "$out/build.log" | tee -a "$sum"
  exit 1
fi
ldd build/dsq >> "$out/env.txt" 2>&1
if ! nm build/libdsq.a 2>/dev/null | grep -q dsq_cuda_open; then
  log "build: libdsq.a has no CUDA backend (nvcc not on the PATH?)"
  exit 1
fi

# 2. the GPU suite: cuda backend vs cpu backend (what `make test-gpu` runs; exit 77 = skipped)
t0=$(date +%s)
: > "$out/test-gpu.log"
for t in $gpu_tests; do
  DSQ_SHARED="$PWD/.gpu-data" DSQ_BIN="$PWD/build/dsq" DSQ_BUILD="$PWD/build" timeout 300 "$t" >> "$out/test-gpu.log" 2>&1
  rc=$?
  if [ $rc -eq 77 ]; then
    log "$(basename "$t"): SKIPPED on this machine (a failure here): $(grep SKIPPED "$out/test-gpu.log" | tail -1)"; fail=1
  elif [ $rc -ne 0 ]; then
    log "$(basename "$t"): FAILED (rc $rc; see test-gpu.log)"; fail=1
  else
    log "$(basename "$t"): passed ($(( $(date +%s) - t0 )) s)"
  fi
done
grep -E "rel L2|KL" "$out/test-gpu.log" | grep -v "^  linear" >> "$sum"

# 3. the decoders on the CPU and the CLI (its --device cuda test meets the golden tolerance on a GPU)
for t in test_cuda_decode test_eval_cli; do
  DSQ_SHARED="$PWD/.gpu-data" DSQ_BIN="$PWD/build/dsq" DSQ_BUILD="$PWD/build" timeout 120 build/tests/$t > "$out/$t.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then log "$t: FAILED (rc $rc)"; fail=1; else log "$t: passed"; fi
done

# 4. end-to-end speed on the golden tiny model (tiny: launch and transfer bound, not a bandwidth figure)
for dev in cpu cuda; do
  timeout 120 build/dsq eval logits .gpu-data/golden/v4-tiny/model --tokens .gpu-data/golden/v4-tiny/golden-exact.safetensors \
    --out "$out/logits-$dev.safetensors" --overwrite --decode-from 100 --device $dev --json > "$out/speed-$dev.json" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then log "eval logits --device $dev: FAILED (rc $rc): $(head -c 300 "$out/speed-$dev.json")"; fail=1
  else log "eval logits --device $dev (golden tiny, prefill 100 + 60 decode steps): $(cat "$out/speed-$dev.json")"; fi
done

# 5. bench/gpu
timeout 180 build/bench/gpu > "$out/bench-gpu.txt" 2>&1
rc=$?
if [ $rc -ne 0 ] || grep -q SKIPPED "$out/bench-gpu.txt"; then log "bench/gpu: FAILED or skipped (rc $rc)"; fail=1; fi
cat "$out/bench-gpu.txt" >> "$sum"
log "total: $(( $(date +%s) - start )) s"
exit $fail
