/* Internal to lib/eval: the linear-layer kernel over stored encodings and shared helpers. */
#ifndef DSQ_V4_INTERNAL_H
#define DSQ_V4_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsq_codec.h"
#include "dsq_core.h"
#include "dsq_wsrc.h"

/* Kernel settings taken from dsq_eval_options for one call. */
typedef struct dsq__kern {
    bool avx2;   /* use the AVX2/FMA twins (only when the CPU has them) */
    int threads; /* ≥ 1 */
} dsq__kern;

/* True when this CPU runs the AVX2+FMA kernels. */
bool dsq__cpu_has_avx2(void);
/* True when this CPU also runs the AVX-512 (F+BW) twins of the one-token kernels (same bits). */
bool dsq__cpu_has_avx512(void);

/* y[t][i] = Σ_k W[row0+i][k] · x[t][k] for t < n_tok, i < n_rows, k < cols(W).
 * x rows are ldx floats apart, y rows ldy floats apart.  W is dequantized block by block on the fly
 * (never expanded whole); OpenMP across row tiles.  Each output is the same 8-lane FMA reduction
 * whatever n_tok, the tiling, the thread count or the AVX2/scalar choice, so results are
 * bit-identical between those. */
dsq_status dsq__linear(const dsq__kern *k, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *x,
                       size_t ldx, int64_t n_tok, float *y, size_t ldy, dsq_err *err);

/* Tests: allow (default) or forbid the VBMI twin of the MXFP4 few-token kernel, so the AVX-512 F+BW
 * kernel it replaces stays covered on CPUs that have VBMI (both give the same bits). */
void dsq__linear_fp4_vbmi(bool allow);

/* Release FP8-linear (spec §5) through lib/quant: q [n_tok][cols] e4m3 values and sa
 * [n_tok][ceil(cols/128)] scales of the 1×128-quantized input; y as in dsq__linear.  OpenMP across rows. */
void dsq__fp8_linear(const dsq__kern *k, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *q,
                     const float *sa, int64_t n_tok, float *y, size_t ldy);

/* The lib/quant descriptor of a 2-D view. */
dsq_qtensor dsq__qtensor_of(const dsq_wview *w);
/* Dequantize rows [row0, row0+n) of a 2-D view into out[n][cols] f32 (lib/quant's decoder). */
void dsq__dequant_rows(const dsq_wview *w, uint64_t row0, uint64_t n, float *out);

/* The 8-lane FMA dot product used by dsq__linear (same bits in both twins). */
float dsq__dot(const dsq__kern *k, const float *a, const float *b, size_t n);

/* dsq_v4_sparse_attention with the kernel's dot product (kern NULL = scalar). */
void dsq__sparse_attention(const dsq__kern *kern, const float *q, const float *const *keys, int64_t n_keys, int hd,
                           float sink, float scale, bool release, float *out);

/* AVX-512 twins of long-context attention and indexer scoring (attn_avx512.c), bit-identical to
 * dsq__sparse_attention and the cpu backend's indexer scores.  *_fast_ok: the kernel settings ask for
 * SIMD (k->avx2), the CPU has AVX-512 and the shape fits (heads % 4, hd % 16; indexer heads % 2, ihd % 8). */
bool dsq__attn_fast_ok(const dsq__kern *k, int n_heads, int hd);
bool dsq__indexer_fast_ok(const dsq__kern *k, int nih, int ihd);
/* Attention with sinks of one query for nh heads (q, out [nh][hd]; sink [nh]) over a shared key list
 * keys [n_keys] of f32 rows (NULL = empty slot): for each head the bits of dsq__sparse_attention.
 * DSQ_ERR_NOMEM (nothing set in an err) when its scratch cannot be allocated. */
dsq_status dsq__attn_heads_avx512(const float *q, int nh, int hd, const float *const *keys, int64_t n_keys,
                                  const float *sink, float scale, bool release, float *out);
/* Indexer scores (spec §4.6 step 3) of one query qi [nih][ihd] with head weights w [nih] against nk ≤ 16
 * f32 key rows → scores[nk].  Scratch: Kp [16·ihd], dots [nih·16]. */
void dsq__indexer_block16(const float *qi, const float *w, int nih, int ihd, bool release, const float *const *rows,
                          int nk, float *Kp, float *dots, float *scores);

/* An index_fp4 key (n % 32 == 0 e2m1 codes, two per byte, low nibble first, UE8M0 per 32) → x [n]: the
 * scalar unpack's values (AVX-512; only where dsq__indexer_fast_ok). */
void dsq__unpack_fp4_avx512(const uint8_t *codes, const uint8_t *scales, int n, float *x);

/* Little-endian unaligned loads. */
static inline float dsq__ld_f32(const uint8_t *p) {
    float f;
    __builtin_memcpy(&f, p, 4);
    return f;
}
static inline uint16_t dsq__ld_u16(const uint8_t *p) {
    uint16_t v;
    __builtin_memcpy(&v, p, 2);
    return v;
}
static inline int64_t dsq__ld_i64(const uint8_t *p) {
    int64_t v;
    __builtin_memcpy(&v, p, 8);
    return v;
}

#endif
