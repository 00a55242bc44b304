/* `dsq convert --method gptq`: GPTQ for a whole checkpoint, layer by layer (lib/quant/dsq_gptq.h does
 * one matrix).
 *
 * For each main-model layer L in order:
 *   1. open the model over a weight source that serves every weight already quantized (layers < L)
 *      in its target encoding from memory and the rest from the checkpoint, so layer L's inputs are
 *      those of the partially quantized model;
 *   2. run the reference forward pass over the calibration chunks (dsq_score_ppl) with a linear
 *      observer that sums H = Σ x·xᵀ (double) for every linear of layer L whose recipe target is lossy
 *      (routed experts per expert from the tokens routed to it; w1 and w3 take the same input, so w3
 *      uses w1's H: one Hessian per expert for the pair; the grouped output projection wo_a, run over
 *      row windows, gets one H per output group from the rows observer);
 *   3. quantize each such weight: GPTQ when it saw at least DSQ_GPTQ_MIN_ROWS_PER_COL·cols token
 *      rows (one dsq_gptq_factor per H: w1 and w3 share it; wo_a one per group, quantized into that
 *      group's rows), otherwise importance-weighted rounding (the imatrix path: the codec's encoder
 *      with diag(H)/rows as importance when rows ≥ DSQ_IMATRIX_MIN_ROWS, plain squared error below);
 *      then free layer L's statistics.
 * Then MTP block 0 (when the model has one): per chunk the quantized main model gives its last hidden
 * stream and dsq_v4_mtp_forward runs the block with the observer; its weights are quantized as a
 * layer's (counted in `layers`).  Experts no token reached (and MTP blocks after the first) are left
 * to the converter's usual encoder; the forward pass for later layers reads those from the checkpoint.
 *
 * Memory: one layer's Hessians at a time (cols²·8 bytes each; with expert_batch, the non-expert ones and
 * expert_batch experts' at a time) and the matrix being quantized.  With a spill file (options.spill)
 * each quantized weight is appended to it as soon as it is encoded and its heap copy freed: the heap
 * holds at most one quantized weight (dsq_gptq_memory.held_peak), and the forward passes and the
 * converter read the earlier weights through a read-only mapping of the file (page cache, reclaimable,
 * like the checkpoint's own mapping).  Without one they stay on the heap (their stored size: ~110 GB
 * at 3 bits for V4-Flash).  Results are deterministic: same checkpoint, recipe, tokens and options give
 * the same bytes whatever the thread count, spilled or not. */
#ifndef DSQ_GPTQ_CALIB_H
#define DSQ_GPTQ_CALIB_H

#include "dsq_codec.h"
#include "dsq_gptq.h"
#include "dsq_recipe.h"
#include "dsq_score.h"

typedef enum dsq_gptq_method {
    DSQ_GPTQ_METHOD_GPTQ = 0,     /* error-compensating rounding */
    DSQ_GPTQ_METHOD_IMATRIX = 1,  /* too few rows for GPTQ: importance-weighted rounding */
    DSQ_GPTQ_METHOD_PLAIN = 2,    /* too few rows even for importance (< DSQ_IMATRIX_MIN_ROWS): plain squared error */
} dsq_gptq_method;
const char *dsq_gptq_method_name(dsq_gptq_method m); /* "gptq", "imatrix", "plain" */

typedef struct dsq_gptq_calib_options {
    dsq_gptq_options gptq;   /* damp, block, act_order, threads */
    dsq_score_options score; /* calibration chunks: n_ctx, max_chunks, eval threads */
    /* routed experts whose Hessians one forward pass collects (0 = all of a layer in one pass): a layer
     * with E experts then takes ceil(E / expert_batch) passes and holds at most expert_batch experts'
     * Hessians; the bytes do not depend on it */
    int expert_batch;
    /* spill file for the quantized weights (NULL: keep them on the heap).  Created with O_EXCL and
     * O_NOFOLLOW (a stale file or symbolic link of that name, left by a killed run, is removed first;
     * anything else there is an error) and unlinked at once, so it never outlives the process; its
     * directory needs room for the quantized weights' stored size. */
    const char *spill;
    /* one line per layer done (may be NULL) */
    void (*progress)(void *user, int layer, int n_layers, double seconds, size_t weights);
    void *user;
} dsq_gptq_calib_options;

typedef struct dsq_gptq_result dsq_gptq_result;

/* One quantized weight of the result. */
typedef struct dsq_gptq_entry {
    const char *name;        /* checkpoint name */
    dsq_gptq_method method;
    uint64_t rows_seen;      /* calibration token rows of its input */
    int layer;
    dsq_qtensor tensor;      /* the stored form (owned by the result) */
} dsq_gptq_entry;

/* Run the layer-by-layer pass over checkpoint `src` (a directory or .safetensors) with `recipe`
 * (borrowed) on text tokens[0..n_tokens).  *out owns the quantized weights (dsq_gptq_result_free). */
dsq_status dsq_gptq_calibrate(const char *src, const dsq_recipe *recipe, const int32_t *tokens, uint64_t n_tokens,
                              const dsq_gptq_calib_options *o, dsq_gptq_result **out, dsq_err *err);
void dsq_gptq_result_free(dsq_gptq_result *r); /* accepts NULL */
size_t dsq_gptq_result_count(const dsq_gptq_result *r);
const dsq_gptq_entry *dsq_gptq_result_at(const dsq_gptq_result *r, size_t i); /* name order */
/* The stored form of weight `name`, or NULL (matches dsq_convert_options.pre_encoded; user = result). */
const dsq_qtensor *dsq_gptq_result_lookup(void *user, const char *name);
/* Bytes of quantized weights: held = on the heap now; held_peak = most ever on the heap at once;
 * held_after_layer = most on the heap at the end of a layer; largest = the largest single weight's
 * stored bytes; spill_bytes = the spill file's size (0 without one).  With a spill file held and
 * held_after_layer are 0 and held_peak = largest. */
typedef struct dsq_gptq_memory {
    uint64_t held, held_peak, held_after_layer, largest, spill_bytes;
} dsq_gptq_memory;
void dsq_gptq_result_memory(const dsq_gptq_result *r, dsq_gptq_memory *m);
/* Calibration tokens per forward pass (chunks × ctx, BOS included: every one feeds the Hessians),
 * layers run, and seconds per layer (forward passes + quantization). */
void dsq_gptq_result_stats(const dsq_gptq_result *r, uint64_t *tokens, int *layers, double *seconds_per_layer);
/* Hessians factored (one per distinct input: an expert's w1 and w3 share one factor; weights that fall
 * back to importance need none), and the seconds spent factoring and quantizing (encoding included)
 * over all layers; the rest of the per-layer time is the calibration forward passes and H sums. */
void dsq_gptq_result_timing(const dsq_gptq_result *r, uint64_t *factorisations, double *factor_seconds,
                            double *quantize_seconds);

#endif
