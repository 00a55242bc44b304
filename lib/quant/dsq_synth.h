/* Synthetic DeepSeek-V4 checkpoints: random weights in the exact release layout and dtypes (spec §3),
 * quantized like real weights (spec §2.6), written as safetensors shards with config.json.
 *
 * Lives in lib/quant because it quantizes (FP8 128x128 blocks, FP4 1x32 blocks); it writes through
 * lib/format (inventory, safetensors writer).
 *
 * Values (documented choices that keep activations healthy through every layer):
 *   linear weights [N, K] (FP8, FP4, BF16 compressor / gate / weights_proj / head)  N(0, 1/K)
 *   embed.weight                                                                     N(0, 1)
 *   every *norm weight                                                               1 + 0.02·N(0,1)
 *   hc_*_fn [m, hc·D]                                                                N(0, 0.01/(hc·D))
 *   hc_attn/ffn_base: pre -ln(hc-1) (sigmoid = 1/hc), post 0 (2·sigmoid = 1),
 *                     comb 4 on the diagonal, 0 off it (Sinkhorn mixing ≈ identity)   + 0.01·N(0,1)
 *   hc_head_base -ln(hc-1); every hc_*_scale 1                                        + 0.01·N(0,1)
 *   attn_sink, gate.bias  0.01·N(0,1);   compressor / indexer ape  0.02·N(0,1)
 *   tid2eid [V, k] I64: k distinct expert ids in [0, E) per token
 * N(0,1) values come from a 2^16-entry quantile table indexed by 16 random bits (|x| ≤ 4.2).
 *
 * Determinism: element i of tensor NAME is a function of (seed, NAME, i) only (splitmix64 on a
 * counter), and quantization blocks are independent, so the bytes do not depend on the thread count
 * or chunking.  Memory is bounded: one chunk (≤ DSQ_SYNTH_CHUNK bytes) plus one tensor's scales. */
#ifndef DSQ_SYNTH_H
#define DSQ_SYNTH_H

#include "dsq_config.h"
#include "dsq_core.h"
#include "dsq_inventory.h"
#include "dsq_safetensors.h"

#define DSQ_SYNTH_DEFAULT_SHARD (4ull << 30) /* 4 GiB */
#define DSQ_SYNTH_CHUNK         (32u << 20)  /* bytes generated per step */

typedef struct dsq_synth_options {
    uint64_t seed;       /* default 0 */
    int first_layer;     /* first main layer kept (0): a slice of the model's depth, renumbered from 0 */
    int layers;          /* keep N main layers from first_layer (0 = all to the end): compress_ratios =
                            entries first_layer … first_layer+N-1 + the MTP (and later) entries,
                            num_hash_layers = how many of the kept layers were hash layers */
    uint64_t shard_size; /* split into model-0000i-of-0000n.safetensors + index when the total exceeds
                            this (0 = DSQ_SYNTH_DEFAULT_SHARD); otherwise one model.safetensors */
    bool overwrite;      /* replace existing outputs (and remove stale model*.safetensors / index) */
    int threads;         /* OpenMP threads (0 = OpenMP default) */
    bool progress;       /* progress on stderr when it is a terminal */
} dsq_synth_options;

typedef struct dsq_synth_result {
    size_t n_tensors, n_shards;
    uint64_t bytes; /* tensor data bytes written */
    double seconds; /* wall time of generation + writing */
} dsq_synth_result;

/* The config.json text synth writes for the slice of `layers` main layers from `first` (layers 0: to the
 * end; a verbatim copy for the whole model): heap, NUL-terminated, freed with dsq_free.  Fails if the
 * slice is out of range or the result does not parse as a V4 config. */
dsq_status dsq_synth_config_text(const char *json, size_t len, const char *what, int first, int layers, char **out,
                                 dsq_err *err);

/* Write a random checkpoint for the config at `config_path` into directory `out_dir` (created if
 * missing): config.json, model.safetensors or shards + model.safetensors.index.json, each file
 * published atomically.  SIGINT/SIGTERM (dsq_signals_install) stop it between chunks with
 * DSQ_ERR_INTERRUPTED and no partial file left.  opt may be NULL; res may be NULL. */
dsq_status dsq_synth_write(const char *config_path, const char *out_dir, const dsq_synth_options *opt,
                           dsq_synth_result *res, dsq_err *err);

/* ---- generating tensors one slice at a time (synth, tests, converters' fixtures) ---------------- */
typedef struct dsq_synth_gen dsq_synth_gen;
/* A generator for config c (borrowed: must outlive it) and seed, using `threads` OpenMP threads
 * (0 = default).  Holds a 256 KiB normal quantile table.  Free with dsq_synth_gen_free. */
dsq_status dsq_synth_gen_create(const dsq_v4_config *c, uint64_t seed, int threads, dsq_synth_gen **out, dsq_err *err);
void dsq_synth_gen_free(dsq_synth_gen *g);

/* Write rows [row0, row0 + rows) (rows of shape[0]; elements for rank 1) of expected tensor `e` into
 * dst, exactly the bytes dsq_synth_write stores.  For a quantized weight `scale_out` (may be NULL)
 * receives the scales of those rows in `scale_dtype` (F8_E8M0 or F32): FP8 needs row0 a multiple of
 * 128 and gets [ceil(rows/128), ceil(K/128)]; packed FP4 gets [rows, K/32].  Scale entries themselves
 * are produced with their weight, not by this function.  Thread-safe for distinct dst. */
void dsq_synth_rows(const dsq_synth_gen *g, const dsq_inv_entry *e, uint64_t row0, uint64_t rows, void *dst,
                    void *scale_out, dsq_dtype scale_dtype);

/* Internal, exported for tests: the fast encoders synth uses, bit-identical to dsq_e4m3_from_f32 and
 * dsq_e2m1_from_f32. */
uint8_t dsq__synth_e4m3(float x);
uint8_t dsq__synth_e2m1(float x);

#endif
