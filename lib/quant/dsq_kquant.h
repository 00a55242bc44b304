/* GGML k-quant block encodings (Q2_K … Q6_K, and IQ4_XS): byte-compatible with ggml's block_q2_K … block_q6_K
 * (ggml-common.h), so a GGUF exporter passes the blocks through unchanged and llama.cpp runs them.
 *
 * A row of `cols` values (cols a multiple of 256) is cols/256 super-blocks stored back to back; a
 * tensor is rows of those, row-major.  Every super-block holds 256 values in sub-blocks of 16 or 32,
 * each with an integer scale (and min) that is itself scaled by the F16 super-scale d (and dmin):
 *
 * | encoding | name | bytes | sub-block | value of element i in sub-block j              | ggml type |
 * |----------|------|-------|-----------|------------------------------------------------|-----------|
 * | Q2_K     | q2_k |  84   | 16        | f32(d·sc_j)·q − f32(dmin·m_j), q 0..3, sc,m 0..15  | 10 |
 * | Q3_K     | q3_k | 110   | 16        | f32(d·(sc_j−32))·(q−4), q 0..7, sc 0..63           | 11 |
 * | Q4_K     | q4_k | 144   | 32        | f32(d·sc_j)·q − f32(dmin·m_j), q 0..15, sc,m 0..63 | 12 |
 * | Q5_K     | q5_k | 176   | 32        | f32(d·sc_j)·q − f32(dmin·m_j), q 0..31, sc,m 0..63 | 13 |
 * | Q6_K     | q6_k | 210   | 16        | f32(d·sc_j)·(q−32), q 0..63, sc int8               | 14 |
 * | IQ4_XS   | iq4_xs | 136 | 32        | f32(d·(sc_j−32))·kv[q], q 0..15, sc 0..63          | 23 |
 *
 * Byte layouts (offsets within a block; element e = 0..255 of the block):
 *   Q2_K  scales[16] (low nibble sc, high nibble m; sub-block e/16) | qs[64] | d | dmin
 *         q = (qs[32·(e/128) + e%32] >> 2·((e%128)/32)) & 3
 *   Q3_K  hmask[32] | qs[64] | scales[12] | d
 *         low two bits as Q2_K; bit 2 = bit (e/32) of hmask[e%32]; 6-bit sc_j: low nibble in
 *         scales[j] (j < 8) or the high nibble of scales[j−8], high two bits at bit 2·(j/4) of
 *         scales[8 + j%4]
 *   Q4_K  d | dmin | scales[12] | qs[128]; element e: qs[32·(e/64) + e%32], low nibble when
 *         e%64 < 32; sub-block e/32; 6-bit sc/m packed as ggml's get_scale_min_k4
 *   Q5_K  d | dmin | scales[12] | qh[32] | qs[128]; as Q4_K plus bit 4 = bit (e/32) of qh[e%32]
 *   Q6_K  ql[128] | qh[64] | scales[16] (int8) | d; with n = e/128, t = (e%128)/32, l = e%32:
 *         low nibble of ql[64n + l + 32·(t&1)] (t < 2) or its high nibble (t ≥ 2),
 *         bits 4-5 = (qh[32n + l] >> 2t) & 3; sub-block e/16
 *   IQ4_XS d | scales_h (u16) | scales_l[4] | qs[128]; 6-bit sc_j: low nibble of scales_l[j/2]
 *         (high nibble for odd j), bits 4-5 = (scales_h >> 2j) & 3; element 32j + l: nibble
 *         (l < 16 low, else high) of qs[16j + l%16]; kv = ggml's kvalues_iq4nl {-127 … 113}
 * d and dmin are little-endian IEEE half.  The decoders below evaluate exactly the float
 * expressions of the table (no fused multiply-add), which is what ggml's dequantize_row_* compute:
 * tests/test_kquant_ggml.c checks bit equality against ggml's own to_float.
 *
 * Encoders (ours): per super-block, minimise Σ w_c·(x_c − x̂_c)² over codes, integer scales/mins and
 * the F16 super-scales, where w_c = imp_c·sqrt(σ² + x_c²) with an importance imp_c of input column c
 * (an imatrix's Σx²/count per column) and σ² the super-block's mean x² (ggml's weighting), or 1
 * without one (plain squared error).  Search, per super-block:
 *   1. each sub-block: real-valued scale (and min ≥ 0) from sixteen candidate ranges (the plain max/min
 *      rule and shrunk/stretched ones; symmetric types eight per sign), each in one pass that computes
 *      its nearest codes' sums, then weighted least squares with the codes fixed (f32), a second pass
 *      from every candidate's least-squares point; the lowest error (from the expanded sums) kept;
 *   2. super-scales: all zero, or the largest sub-block scale (and min) onto the top integer scale (and
 *      min) (symmetric types: also the negative-range twin), sub-block scales rounded to integers;
 *   3. one coordinate round (each sub-block's integer scale/min to its best ±1 neighbour), then least
 *      squares for (d, dmin) with the integer scales and codes fixed (F16-rounded), kept if better.
 * Steps 2 and 3 evaluate the decoded values exactly (f32, as the decoder).  Every error and code sum is
 * an f32 sum within one lane of a sixteen-lane pass: in step 1 the lanes are sixteen sub-blocks (two
 * super-blocks of 32-value sub-blocks, one of 16-value ones) and the candidates a loop, so the range
 * scans, the least-squares step and the pick of the best are lane-wise too; in steps 2-3 the lanes
 * are the sub-blocks of one or two super-block states.  Sub-blocks shaped like a decoded FP4 expert
 * (zeros and values with a 1-bit mantissa over four binades: s·e2m1) enter those passes as (value,
 * summed weight) pairs, ~14 instead of 32 per lane on the V4-Flash experts (the final codes pass reads
 * every element).  Weights are scaled per super-block to a largest of 1, so no finite importance
 * overflows them.  The scalar loops are the reference; the AVX-512 and AVX2 twins (picked at run time)
 * perform the same IEEE operations per lane, so the bytes do not depend on the CPU (tests/test_kquant.c
 * compares all three).
 * Codes are always the nearest for the final dequantized sub-block scale and min.  All-zero blocks
 * store zeros.  Non-finite inputs (only with allow_nonfinite) take no part in the fit (weight 0); NaN
 * is stored as the code nearest 0 and ±Inf as the block's largest finite magnitude.
 * Reentrant; no global state. */
#ifndef DSQ_KQUANT_H
#define DSQ_KQUANT_H

#include "dsq_core.h"
#include "dsq_encoding.h"

enum { DSQ_KQ_BLOCK = 256 }; /* values per super-block (ggml QK_K) */

/* Bytes of one super-block of enc, or 0 when enc is not a k-quant encoding. */
int dsq_kquant_block_bytes(dsq_encoding enc);
/* ggml_type value of enc (GGML_TYPE_Q2_K = 10 … Q6_K = 14), or -1. */
int dsq_kquant_ggml_type(dsq_encoding enc);
/* Index of the first super-block of the n_bytes at p (whole blocks of enc) whose F16 d or dmin is NaN or
 * infinite, or UINT64_MAX when every one is finite (also when enc is not a k-quant encoding).  The
 * codes themselves are integers: these scales are the only values that can be non-finite. */
uint64_t dsq_kquant_find_nonfinite(dsq_encoding enc, const void *p, uint64_t n_bytes);

/* Encode rows × cols values (x row-major, cols a multiple of 256) into dst (rows · cols/256 ·
 * block_bytes bytes).  importance: NULL (plain squared error) or cols non-negative finite weights,
 * one per input column.  Non-finite x are rejected with DSQ_ERR_NONFINITE naming [row, col] unless
 * allow_nonfinite.  Errors: DSQ_ERR_ARG (not a k-quant encoding, cols % 256, bad importance). */
dsq_status dsq_kquant_encode(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                             bool allow_nonfinite, void *dst, dsq_err *err);

/* Decode one super-block (block_bytes bytes at blk) into out[256]. */
void dsq_kquant_decode_block(dsq_encoding enc, const void *blk, float out[DSQ_KQ_BLOCK]);

/* Decode rows [row0, row0+nrows) of a k-quant matrix with `cols` columns (data: the whole tensor)
 * into out[nrows][cols]; avx2 picks the AVX2 block decoders (call only where the CPU has AVX2 and
 * FMA), which give the same floats as the scalar ones. */
void dsq_kquant_decode_rows(dsq_encoding enc, const void *data, uint64_t cols, uint64_t row0, uint64_t nrows,
                            float *out, bool avx2);

/* The quantity the encoder minimises, summed over rows × cols in double: Σ w·(x − decoded)² with
 * w = importance_c·sqrt(σ² + x²), σ² the mean x² of the value's super-block (importance NULL: w = 1,
 * the same as dsq_kquant_weighted_sse). */
double dsq_kquant_objective(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                            const void *blocks);

/* Σ_c importance_c·(x_c − decoded_c)² over rows × cols (importance NULL: weight 1), in double. */
double dsq_kquant_weighted_sse(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                               const void *blocks);

#endif
