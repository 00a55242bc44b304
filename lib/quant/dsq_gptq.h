/* GPTQ: error-compensating rounding of one linear layer (Frantar et al., "GPTQ", 2022), for every lossy
 * block encoding of dsq_codec.h.
 *
 * For a weight W [rows][cols] whose inputs x (cols values per token) have the Gram matrix
 * H = Σ_tokens x·xᵀ [cols][cols], the output error of a quantized Q over the calibration tokens is
 * ‖(W − Q)X‖² = tr((W − Q) H (W − Q)ᵀ).  GPTQ quantizes the columns one at a time and spreads each
 * column's rounding error over the columns not yet quantized, weighted by the inverse Hessian:
 *
 *   H ← H + damp·mean(diag H)·I            (columns no token touched get H[c][c] = 1)
 *   U ← upper Cholesky factor of H⁻¹        (H⁻¹ = Uᵀ·U)
 *   for each column i (in order, or by decreasing H[c][c] with act_order):
 *       q = quantize(w_i) with the fixed parameters of its group;  e = (w_i − q) / U[i][i]
 *       w_j −= e·U[i][j] for the later columns j of the current lazy block of `block` columns,
 *       and for every later column once the block is done (one rank-`block` update).
 *
 * Block formats.  Every encoding stores parameters (scales, mins, k-quant sub-block scales) that cover
 * a fixed group of columns: 16 (nvfp4), 32 (mxfp4), G (int*-gG), 128 (fp8 1x128 / 128x128), 256 (a
 * k-quant super-block), the whole row (fp8-row, int8-row).  When the quantizer reaches the first column
 * of a group it has not seen (the group's first column in order; with act_order, whichever of its
 * columns comes first), it chooses the group's parameters by encoding the group's CURRENT (error-
 * updated) weights with the codec's own encoder (k-quants with importance diag(H)/n), then quantizes
 * each column of the group with those fixed parameters: every element goes to the nearest value its
 * stored parameters can represent.  Two small pieces per encoding make that generic: "which code
 * bits belong to element (r, c)" (set a code) and "which columns share one set of values" (k-quant
 * sub-blocks of 16 or 32); the representable values are read back through the codec's own decoder,
 * so they are exactly what the evaluator will compute.  NVFP4's tensor scale is fixed beforehand from
 * the original weights' largest |value|.
 *
 * Numbers: H and U in double (H sums up to millions of products of activations, and the Cholesky of
 * the damped inverse loses about log10(cond) digits); the weights being updated in f32.  Results are
 * deterministic: each row is updated by one thread in a fixed order, so the bytes do not depend on the
 * thread count. */
#ifndef DSQ_GPTQ_H
#define DSQ_GPTQ_H

#include "dsq_codec.h"
#include "dsq_core.h"

enum {
    DSQ_GPTQ_DEFAULT_BLOCK = 128,
    DSQ_GPTQ_MAX_BLOCK = 4096,
    /* routed experts (any weight) seen over fewer than this many token rows per input column fall back to
     * importance-weighted rounding: H = XᵀX has rank ≤ rows, so with rows < 2·cols the damped H is
     * mostly damping and GPTQ fits the few calibration tokens instead of the input distribution */
    DSQ_GPTQ_MIN_ROWS_PER_COL = 2,
};
#define DSQ_GPTQ_DEFAULT_DAMP 0.3 /* measured: docs/commands.md, GPTQ quality (bench/gptq_quality.sh) */

typedef struct dsq_gptq_options {
    double damp;    /* fraction of mean(diag H) added to the diagonal (default 0.3; 0 < damp ≤ 10) */
    int block;      /* lazy-batch columns (default 128; 1 … DSQ_GPTQ_MAX_BLOCK) */
    bool act_order; /* columns by decreasing H[c][c] (default false: in order) */
    const char *name; /* tensor name for messages (may be NULL) */
    int threads;    /* OpenMP threads over rows (0: the OpenMP default); the output does not depend on it */
} dsq_gptq_options;
void dsq_gptq_options_default(dsq_gptq_options *o);

/* True when GPTQ handles encoding e (every lossy float encoding: fp8*, mxfp4, nvfp4, int*, k-quants);
 * false for f32/f16/bf16/i64/i32. */
bool dsq_gptq_supports(dsq_encoding e);

/* In place: A [n][n] symmetric positive definite (row-major, double; only its lower triangle is read) ←
 * the upper triangular U with A⁻¹ = Uᵀ·U (lower triangle zeroed).  Without forming A⁻¹: one blocked
 * Cholesky of the reversed A (J·A·J = L·Lᵀ) and one blocked triangular inverse, U = J·L⁻¹·J; OpenMP over
 * cache tiles, the result independent of the thread count; 64·n doubles of scratch.  DSQ_ERR_RANGE when
 * A is not positive definite (A is then unspecified). */
dsq_status dsq_gptq_chol_inverse_upper(double *a, uint64_t n, dsq_err *err);

/* The factor of one damped Hessian: the column order (act_order), diag(H)/n_rows, and U.  Every linear
 * with the same input (an expert's w1 and w3, ...) is quantized from one factor: the factorisation, the
 * O(cols³) part, is done once.  Memory: cols²·8 B (U) + 64·cols·8 B of scratch while it is made; h is
 * not modified (nor kept).  A non-positive-definite damped H is retried with 10× the damping (up to
 * three times) before DSQ_ERR_RANGE; non-finite h: DSQ_ERR_NONFINITE.  Uses o's damp, act_order,
 * threads and name. */
typedef struct dsq_gptq_factor dsq_gptq_factor;
dsq_status dsq_gptq_factor_create(const dsq_gptq_options *o, const double *h, uint64_t cols, uint64_t n_rows,
                                  dsq_gptq_factor **out, dsq_err *err);
void dsq_gptq_factor_free(dsq_gptq_factor *f);
double dsq_gptq_factor_damp(const dsq_gptq_factor *f); /* the damping used (the option's, or a retry's 10^k×) */
uint64_t dsq_gptq_factor_cols(const dsq_gptq_factor *f);

/* Quantize w [rows][cols] (f32, row-major) into dst (enc/rows/cols/group set, buffers sized by
 * dsq_codec_layout_of; NVFP4: tensor_scale 0 = chosen from w's largest |value|) with the GPTQ update
 * against the factor f of its inputs' H (f's cols = dst->cols).  On success w holds the dequantized
 * result (what dst decodes to, bit for bit).  Memory: the parameter groups in flight (one or two in
 * order; with act_order up to all of them) hold their representable values, at most
 * rows·cols·(codes per sub-block)/(sub-block width)·4 bytes, plus w's permuted copy.  Non-finite w:
 * DSQ_ERR_NONFINITE.  f is only read: several threads may share it. */
dsq_status dsq_gptq_quantize_factored(const dsq_gptq_options *o, const dsq_gptq_factor *f, float *w,
                                      dsq_qtensor_buf *dst, dsq_err *err);

/* dsq_gptq_factor_create + dsq_gptq_quantize_factored + free, for one matrix: h [cols][cols] (H = Σ x·xᵀ
 * over n_rows ≥ 1 token rows, symmetric, double) is not modified. */
dsq_status dsq_gptq_quantize(const dsq_gptq_options *o, double *h, uint64_t n_rows, float *w, dsq_qtensor_buf *dst,
                             dsq_err *err);

/* ‖(W − Q)X‖² = tr((W−Q) H (W−Q)ᵀ) for w, q [rows][cols] and h [cols][cols] (double sums). */
double dsq_gptq_output_error(const float *w, const float *q, uint64_t rows, uint64_t cols, const double *h);

#endif
