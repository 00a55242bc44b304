/* The reference DeepSeek-V4 forward pass on CPU (spec §4), in two numerics (spec §5).
 *
 *   dsq_v4_model_open     a checkpoint (directory + config.json) → model (weights stay in their
 *                         stored encodings, dequantized block by block inside the GEMV/GEMM kernels)
 *   dsq_v4_seq_create     the caches of one sequence (window ring, compressed entries, indexer keys,
 *                         compressor states) for every main block and MTP block
 *   dsq_v4_forward        feed tokens to one or several sequences; layer-major: every item goes
 *                         through block i before any item touches block i+1
 *   dsq_v4_mtp_forward    the MTP block(s) on main-model streams
 *
 * A call may feed any number of tokens to a sequence at any position: the first call of a
 * sequence is the prefill, later calls are decode steps (or chunks).  Window index lists and
 * compressed-entry visibility follow spec §4.4/§4.5 for every split, so exact numerics give the
 * same logits whatever the split.  No global state: everything lives in the options and objects. */
#ifndef DSQ_V4_H
#define DSQ_V4_H

#include "dsq_config.h"
#include "dsq_core.h"
#include "dsq_wsrc.h"

typedef enum dsq_numerics {
    DSQ_NUMERICS_EXACT = 0,   /* dequantized weights, f32 activations, no activation quantization */
    DSQ_NUMERICS_RELEASE = 1, /* the official arithmetic: bf16 activations, FP8/FP4 simulation (spec §5) */
} dsq_numerics;

/* Where the forward pass runs: `--device cpu|cuda[:N]`.  The cpu backend is the reference; the cuda
 * backend (kernels/) exists when dsq was built with nvcc on the PATH and a device is present. */
typedef enum dsq_device_kind {
    DSQ_DEVICE_CPU = 0,
    DSQ_DEVICE_CUDA = 1,
} dsq_device_kind;
typedef struct dsq_device {
    dsq_device_kind kind; /* default CPU */
    int index;            /* CUDA device ordinal, default 0 */
} dsq_device;
enum { DSQ_MAX_CUDA_DEVICES = 16 };
/* "cpu", "cuda" (= cuda:0) or "cuda:N" (0 ≤ N < DSQ_MAX_CUDA_DEVICES) → device; false if malformed. */
bool dsq_device_from_name(const char *s, dsq_device *out);
/* "cpu" / "cuda:N" into buf (≥ 16 bytes); returns buf. */
const char *dsq_device_name(const dsq_device *d, char *buf, size_t cap);
/* Whether the device can run here: always for cpu; cuda needs CUDA built in, a driver, and a device
 * with that index (DSQ_ERR_UNSUPPORTED with one line saying which is missing). */
dsq_status dsq_device_check(const dsq_device *d, dsq_err *err);

/* Calibration hook: called with the input of every linear layer that multiplies a whole weight
 * matrix, before it runs: `weight` is the checkpoint name of the matrix (a routed expert's own name,
 * `layers.L.ffn.experts.E.w1.weight`), x holds n rows of `cols` inputs (row stride ldx).  Called
 * from the thread running the forward pass, one call at a time; linears run over row windows (the
 * grouped output projection wo_a) are reported to observe_rows instead. */
typedef void (*dsq_linear_observer)(void *user, const char *weight, const float *x, size_t ldx, int64_t n,
                                    uint64_t cols);
/* Calibration hook for the linears run over row windows (the grouped output projection wo_a: rows
 * [row0, row0 + n_rows) of `weight` multiply the attention output of their group): x holds n rows of
 * `cols` inputs (the weight's width) for that window only.  Same threading as dsq_linear_observer. */
typedef void (*dsq_linear_rows_observer)(void *user, const char *weight, uint64_t row0, uint64_t n_rows, const float *x,
                                         size_t ldx, int64_t n, uint64_t cols);

/* How much of the stored data a model trusts.  Defaults (all false, as dsq_v4_model_open):
 *   - at load, every scale (and min, and NVFP4 tensor scale) of every weight matrix is scanned:
 *     a NaN/Inf one fails with DSQ_ERR_NONFINITE naming the file and tensor;
 *   - the first time a forward pass uses a block (or the embedding/head), the stored bytes of its
 *     weights are checked once: the XXH3 checksum of every .dsq part they lie in (DSQ_ERR_CHECKSUM;
 *     safetensors checkpoints have no checksums) and, in the same pass, NaN/Inf codes (e4m3
 *     0x7F/0xFF, F16/BF16/F32 values: DSQ_ERR_NONFINITE). */
typedef struct dsq_v4_load_options {
    bool allow_nonfinite; /* let NaN/Inf codes and scales of weight matrices through: such views are then
                             decoded by the exact scalar decoder on every path (same results whatever the
                             CPU or kernel) */
    bool no_verify_data;  /* skip the checksums (the non-finite scan still runs) */
} dsq_v4_load_options;

/* How a sequence stores its KV state (window ring, compressed entries, indexer keys): `--kv-cache`.
 * Entry layouts are those of formats/spec/dsq.md §6.1 (rope dims are the last rope_head_dim of an entry
 * in memory order; the packed entry puts them first).  Every packed form keeps the rope dims bf16; the
 * non-rope dims (nd = hd - rd) and the indexer keys take the form below:
 *   f32           hd·4 B per kv entry, ihd·4 B per indexer key: today's reference, bit-exact
 *   bf16          hd·2 / ihd·2 B: every value rounded to bf16 (kv_bf16 / index_bf16)
 *   compact       the release form: non-rope e4m3 with one UE8M0 scale per 64 (kv_compact), indexer keys
 *                 e2m1 with one UE8M0 scale per 32 (index_fp4)
 *   fp4           non-rope e2m1 with one UE8M0 scale per 32 (kv_fp4), indexer keys index_fp4
 *   int4          non-rope symmetric int4 in [-7, 7] with one bf16 scale per 32 (kv_int4), index_fp4
 *   compact-idx8  kv_compact, indexer keys e4m3 with one UE8M0 scale per 32 (index_fp8)
 * Attention and the indexer read the packed entries and dequantize them as they go.  The values are
 * fixed (never renumbered); only the names appear in files (container metadata kv_cache.encoding). */
typedef enum dsq_kv_cache {
    DSQ_KV_CACHE_F32 = 0,
    DSQ_KV_CACHE_BF16 = 1,
    DSQ_KV_CACHE_COMPACT = 2,
    DSQ_KV_CACHE_FP4 = 3,
    DSQ_KV_CACHE_INT4 = 4,
    DSQ_KV_CACHE_COMPACT_IDX8 = 5,
} dsq_kv_cache;
enum { DSQ_KV_CACHE_COUNT = 6 };
/* Block of one scale in kv_fp4 / kv_int4 (non-rope dims) and index_fp8 (formats/spec/dsq.md §6.1). */
enum { DSQ_KV_Q4_BLOCK = 32, DSQ_KV_IDX8_BLOCK = 32 };
/* Names of every encoding in enum order, separated by ", " (for usage messages). */
#define DSQ_KV_CACHE_NAMES "f32, bf16, compact, fp4, int4, compact-idx8"
/* "f32" / "bf16" / "compact" / "fp4" / "int4" / "compact-idx8" → encoding; false if unknown. */
bool dsq_kv_cache_from_name(const char *s, dsq_kv_cache *out);
const char *dsq_kv_cache_name(dsq_kv_cache k);
/* Bytes of one kv entry / one indexer key in encoding k for config c. */
uint64_t dsq_kv_entry_bytes(const dsq_v4_config *c, dsq_kv_cache k);
uint64_t dsq_kv_index_bytes(const dsq_v4_config *c, dsq_kv_cache k);
/* The declared footprint of one sequence in encoding k (all main and MTP blocks): fixed bytes (window rings
 * + compressor states) and bytes per token (compressed entries + indexer keys, averaged over the ratio).
 * Matches lib/format's dsq_config_kv_bytes for bf16 and compact. */
void dsq_kv_declared(const dsq_v4_config *c, dsq_kv_cache k, double *bytes_per_token, uint64_t *fixed_bytes);

typedef struct dsq_eval_options {
    dsq_numerics numerics;    /* default EXACT */
    dsq_kv_cache kv_cache;    /* default F32; a sequence takes it at its first forward call (position 0) */
    bool kv_cache_from_model; /* default true: a model that declares a cache encoding (a .dsq made with a
                                 recipe "kv_cache", dsq_v4_model_kv_cache) uses it instead of kv_cache;
                                 `--kv-cache` sets this false */
    dsq_device device;        /* default cpu */
    int threads;              /* OpenMP threads; 0 (default) = the OpenMP default */
    bool no_shared_clamp;     /* default false: the shared expert is clamped like routed ones (spec §8.30) */
    bool force_scalar;        /* default false: use AVX2/FMA kernels when the CPU has them */
    dsq_linear_observer observe; /* default NULL: see dsq_linear_observer */
    void *observe_user;
    dsq_linear_rows_observer observe_rows; /* default NULL; user = observe_user */
    dsq_v4_load_options load; /* what the commands open models with (dsq_v4_model_open_ex) */
} dsq_eval_options;
void dsq_eval_options_default(dsq_eval_options *o);
/* "exact" / "release" → numerics; false if unknown. */
bool dsq_numerics_from_name(const char *s, dsq_numerics *out);
const char *dsq_numerics_name(dsq_numerics n);

typedef struct dsq_v4_model dsq_v4_model;

/* Open PATH (a checkpoint directory holding config.json and safetensors shards, or a .dsq container
 * whose metadata carries the config).  Validates every
 * tensor the config requires (presence, encoding, shape) before returning.  Close with
 * dsq_v4_model_close. */
dsq_status dsq_v4_model_open(const char *path, dsq_v4_model **out, dsq_err *err);
/* Build a model over an already open source and a parsed config.  Takes ownership of `src` (closed
 * by dsq_v4_model_close, also on failure). */
dsq_status dsq_v4_model_create(dsq_wsrc *src, const dsq_v4_config *cfg, dsq_v4_model **out, dsq_err *err);

/* dsq_v4_model_open / _create with options (NULL = defaults). */
dsq_status dsq_v4_model_open_ex(const char *path, const dsq_v4_load_options *lo, dsq_v4_model **out, dsq_err *err);
dsq_status dsq_v4_model_create_ex(dsq_wsrc *src, const dsq_v4_config *cfg, const dsq_v4_load_options *lo,
                                  dsq_v4_model **out, dsq_err *err);
/* Run the first-use checks of block b (0 … n_layers + n_mtp_layers - 1; -1: embedding, head and the
 * other global tensors) now; later calls return at once.  Forward passes call this themselves;
 * thread-safe. */
dsq_status dsq_v4_model_check_block(const dsq_v4_model *m, int b, dsq_err *err);
void dsq_v4_model_close(dsq_v4_model *m); /* accepts NULL */
const dsq_v4_config *dsq_v4_model_config(const dsq_v4_model *m);
/* The cache encoding the model declares for evaluation (its .dsq recipe's "kv_cache"): true and *out,
 * or false when it declares none (safetensors, GGUF, containers without it). */
bool dsq_v4_model_kv_cache(const dsq_v4_model *m, dsq_kv_cache *out);
/* The encoding a forward call with options o uses on model m (o->kv_cache, or the declared one when
 * o->kv_cache_from_model); o may be NULL (defaults). */
dsq_kv_cache dsq_v4_eval_kv_cache(const dsq_v4_model *m, const dsq_eval_options *o);
/* Stored bytes of block b's weights (b < n_layers + n_mtp_layers), and of the global tensors. */
uint64_t dsq_v4_block_bytes(const dsq_v4_model *m, int b);
uint64_t dsq_v4_global_bytes(const dsq_v4_model *m);
/* What one token costs in the main model (MTP excluded): the weight bytes it reads (all non-routed
 * weights, k routed experts per block at their average size, the head, one embedding row) and the
 * multiply-adds of its linear layers (attention scores excluded). */
void dsq_v4_token_cost(const dsq_v4_model *m, uint64_t *weight_bytes, uint64_t *macs);
/* Page-cache hints for block b's weights. */
void dsq_v4_block_prefetch(const dsq_v4_model *m, int b);
void dsq_v4_block_release(const dsq_v4_model *m, int b);

/* ---- sequences (caches) ---------------------------------------------------------------------- */
typedef struct dsq_v4_seq dsq_v4_seq;
/* A sequence with an f32 cache; its first forward call (at position 0) switches it to that call's
 * opt->kv_cache.  A later call with another encoding fails (DSQ_ERR_ARG) until dsq_v4_seq_reset. */
dsq_status dsq_v4_seq_create(const dsq_v4_model *m, dsq_v4_seq **out, dsq_err *err);
/* The sequence's cache encoding now. */
dsq_kv_cache dsq_v4_seq_kv_cache(const dsq_v4_seq *s);
void dsq_v4_seq_free(dsq_v4_seq *s); /* accepts NULL */
/* Forget everything (spec §8.31): positions back to 0, rings/compressed entries emptied,
 * compressor states 0 / -inf. */
void dsq_v4_seq_reset(dsq_v4_seq *s);
/* Tokens fed so far to the main model / to the MTP block(s). */
int64_t dsq_v4_seq_pos(const dsq_v4_seq *s);
int64_t dsq_v4_seq_mtp_pos(const dsq_v4_seq *s);
/* Bytes of cache the sequence holds now: window rings (W entries each) + compressor states + the
 * compressed entries and indexer keys stored so far, in its encoding.  Equals the declared
 * fixed_bytes + bytes_per_token × tokens (dsq_kv_declared) up to the ratio's rounding (the compressed
 * arrays' spare capacity, at most 1/64 of them + 8 entries per layer, is not counted). */
uint64_t dsq_v4_seq_bytes(const dsq_v4_seq *s);

/* ---- forward --------------------------------------------------------------------------------- */
/* One sequence's part of a batch: feed `n_tokens` ids at positions seq_pos … seq_pos + n - 1.
 * Outputs (each may be NULL, caller-owned):
 *   logits     [n_tokens][vocab_size] f32
 *   hidden     [n_tokens][hc][dim]    f32, streams entering the output head (final_hidden)
 *   layer_out  array of n_layers pointers (entries may be NULL), each [n_tokens][hc][dim]: streams
 *              after block i */
typedef struct dsq_v4_item {
    dsq_v4_seq *seq;
    const int32_t *tokens;
    int64_t n_tokens;
    float *logits;
    float *hidden;
    float **layer_out;
} dsq_v4_item;

/* Run items through the main model, layer-major.  Token ids are checked against the vocabulary
 * first (DSQ_ERR_TOKEN).  DSQ_ERR_INTERRUPTED once dsq_interrupted() is true (SIGINT/SIGTERM after
 * dsq_signals_install), polled per layer, per attention query chunk and per routed expert, so a
 * signal stops even a large batch within a fraction of a second.  On error the sequences' caches
 * are unspecified: reset them. */
dsq_status dsq_v4_forward(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_item *items, int n_items,
                          dsq_err *err);

/* dsq_v4_forward resumed at block `start_block` (0 < start_block <= n_layers; n_layers runs the head
 * alone): start_streams[i] [n_tokens][hc][dim] are the streams entering that block for item i (the
 * layer_out[start_block - 1] of an earlier pass over the same tokens).  Blocks before it are skipped and
 * their caches stay empty, so sequences fed this way are only good for this one call (dsq plan's
 * sensitivity runs).  start_block 0 is dsq_v4_forward. */
dsq_status dsq_v4_forward_from(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_item *items, int n_items,
                               int start_block, const float *const *start_streams, dsq_err *err);

/* Layer-streaming evaluation with a memory cap: groups the items so that the activations and caches
 * of a group plus the largest block's weights (or the embedding + head) fit in `memory_budget` bytes (0 = no cap: one
 * group), then runs each group layer-major, prefetching block i+1 (madvise WILLNEED) while block i runs and releasing
 * block i (DONTNEED) when the group is done with it.  Same results as dsq_v4_forward. DSQ_ERR_RANGE when even one item
 * does not fit. */
dsq_status dsq_v4_forward_streaming(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_item *items, int n_items,
                                    uint64_t memory_budget, dsq_err *err);
/* Bytes of activations + caches that dsq_v4_forward needs for an item of n_tokens (fresh seq). */
uint64_t dsq_v4_item_bytes(const dsq_v4_model *m, int64_t n_tokens);

/* MTP block `mtp` (0 ≤ mtp < n_mtp_layers) of spec §4.9 on `n` positions of one sequence, continuing
 * its MTP caches: hidden [n][hc][dim] = main-model streams at positions t, next_tokens[n] = ids at t+1.
 * logits [n][vocab] (may be NULL), out_hidden [n][hc][dim] (may be NULL). */
dsq_status dsq_v4_mtp_forward(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_seq *seq, int mtp,
                              const float *hidden, const int32_t *next_tokens, int64_t n, float *logits,
                              float *out_hidden, dsq_err *err);

#endif
