/* GGML block types ↔ dsq encodings (dsq_ggml.h).  Block layouts learned from ggml-common.h; the
 * code is ours. */
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "dsq_ggml.h"
#include "dsq_kquant.h"
#include "dsq_numeric.h"

enum { GBLOCK = 32 }; /* Q8_0, Q4_0 and MXFP4 blocks hold 32 values */

/* The twins: one row per (encoding, group) whose values a GGML type holds exactly.  group -1 means
 * "any group value the encoding accepts" (0 or its fixed block). */
static const struct {
    dsq_encoding enc;
    int group;
    uint32_t type;
} TWINS[] = {
    {DSQ_ENC_F32, -1, DSQ_GGMLT_F32},  {DSQ_ENC_F16, -1, DSQ_GGMLT_F16},    {DSQ_ENC_BF16, -1, DSQ_GGMLT_BF16},
    {DSQ_ENC_MXFP4, -1, DSQ_GGMLT_MXFP4}, {DSQ_ENC_INT8_G, 32, DSQ_GGMLT_Q8_0}, {DSQ_ENC_INT4_G, 32, DSQ_GGMLT_Q4_0},
    {DSQ_ENC_I32, -1, DSQ_GGMLT_I32},
    /* k-quants: dsq stores ggml's own super-blocks (dsq_kquant.h), so the twin is the same bytes */
    {DSQ_ENC_Q2_K, -1, DSQ_GGMLT_Q2_K}, {DSQ_ENC_Q3_K, -1, DSQ_GGMLT_Q3_K}, {DSQ_ENC_Q4_K, -1, DSQ_GGMLT_Q4_K},
    {DSQ_ENC_Q5_K, -1, DSQ_GGMLT_Q5_K}, {DSQ_ENC_Q6_K, -1, DSQ_GGMLT_Q6_K}, {DSQ_ENC_IQ4_XS, -1, DSQ_GGMLT_IQ4_XS},
};

bool dsq_ggml_is_kquant(uint32_t type) {
    return (type >= DSQ_GGMLT_Q2_K && type <= DSQ_GGMLT_Q6_K) || type == DSQ_GGMLT_IQ4_XS;
}

bool dsq_ggml_twin_of(dsq_encoding enc, int group, uint32_t *type) {
    for (size_t i = 0; i < sizeof TWINS / sizeof TWINS[0]; i++)
        if (TWINS[i].enc == enc && (TWINS[i].group < 0 || TWINS[i].group == group)) {
            *type = TWINS[i].type;
            return true;
        }
    return false;
}

bool dsq_ggml_encoding_of(uint32_t type, dsq_encoding *enc, int *group) {
    for (size_t i = 0; i < sizeof TWINS / sizeof TWINS[0]; i++)
        if (TWINS[i].type == type) {
            *enc = TWINS[i].enc;
            *group = TWINS[i].group < 0 ? 0 : TWINS[i].group;
            return true;
        }
    return false;
}

static bool block_of(uint32_t type, uint32_t *block, uint32_t *bytes) {
    switch (type) {
    case DSQ_GGMLT_F32: case DSQ_GGMLT_I32: *block = 1, *bytes = 4; return true;
    case DSQ_GGMLT_F16: case DSQ_GGMLT_BF16: *block = 1, *bytes = 2; return true;
    case DSQ_GGMLT_Q8_0: *block = GBLOCK, *bytes = 34; return true;
    case DSQ_GGMLT_Q4_0: *block = GBLOCK, *bytes = 18; return true;
    case DSQ_GGMLT_MXFP4: *block = GBLOCK, *bytes = 17; return true;
    /* ggml-common.h block_q2_K … block_q6_K, block_iq4_xs (QK_K = 256) */
    case DSQ_GGMLT_Q2_K: *block = DSQ_KQ_BLOCK, *bytes = 84; return true;
    case DSQ_GGMLT_Q3_K: *block = DSQ_KQ_BLOCK, *bytes = 110; return true;
    case DSQ_GGMLT_Q4_K: *block = DSQ_KQ_BLOCK, *bytes = 144; return true;
    case DSQ_GGMLT_Q5_K: *block = DSQ_KQ_BLOCK, *bytes = 176; return true;
    case DSQ_GGMLT_Q6_K: *block = DSQ_KQ_BLOCK, *bytes = 210; return true;
    case DSQ_GGMLT_IQ4_XS: *block = DSQ_KQ_BLOCK, *bytes = 136; return true;
    default: return false;
    }
}

bool dsq_ggml_row_bytes(uint32_t type, uint64_t cols, uint64_t *out) {
    uint32_t block, bytes;
    if (!block_of(type, &block, &bytes) || cols % block) return false;
    return dsq_mul_u64(cols / block, bytes, out);
}

/* ---- the reorders (one row) ------------------------------------------------------------------- */
/* int8 codes [cols] + f16 scales [cols/32] → Q8_0 blocks */
static void pack_q8_0(const int8_t *q, const uint8_t *s, uint64_t cols, uint8_t *out) {
    for (uint64_t b = 0; b < cols / GBLOCK; b++, out += 34) {
        memcpy(out, s + 2 * b, 2);
        memcpy(out + 2, q + b * GBLOCK, GBLOCK);
    }
}
static void unpack_q8_0(const uint8_t *in, uint64_t cols, int8_t *q, uint8_t *s) {
    for (uint64_t b = 0; b < cols / GBLOCK; b++, in += 34) {
        memcpy(s + 2 * b, in, 2);
        memcpy(q + b * GBLOCK, in + 2, GBLOCK);
    }
}
/* packed nibbles (byte k: col 2k low, 2k+1 high) → GGML order (qs[j]: col j low, j+16 high);
 * `bias` is added to each nibble mod 16 (8 turns a two's-complement int4 into Q4_0's u = q + 8).
 * qs[2k] takes the low nibbles of p[k] and p[k+8], qs[2k+1] their high nibbles; bias is 0 or 8, and
 * adding 8 mod 16 is xor 8: byte operations only, which the compiler vectorises. */
static void pack_nibbles(const uint8_t *p, uint8_t bias, uint8_t *qs) {
    const uint8_t x = bias ? 0x88 : 0;
    for (int k = 0; k < GBLOCK / 4; k++) {
        uint8_t a = p[k], b = p[k + GBLOCK / 4];
        qs[2 * k] = (uint8_t)(((a & 15) | (b << 4)) ^ x);
        qs[2 * k + 1] = (uint8_t)(((a >> 4) | (b & 0xF0)) ^ x);
    }
}
static void unpack_nibbles(const uint8_t *qs, uint8_t bias, uint8_t *p) {
    uint8_t v[GBLOCK];
    for (int j = 0; j < GBLOCK / 2; j++) {
        v[j] = (uint8_t)((qs[j] + bias) & 15);
        v[j + 16] = (uint8_t)(((qs[j] >> 4) + bias) & 15);
    }
    for (int k = 0; k < GBLOCK / 2; k++) p[k] = (uint8_t)(v[2 * k] | v[2 * k + 1] << 4);
}

/* One row of the twin encoding's parts (codes row + its scale row) → GGML blocks. */
static void pack_row(uint32_t type, const uint8_t *codes, const uint8_t *scales, uint64_t cols, uint8_t *out) {
    switch (type) {
    case DSQ_GGMLT_Q8_0: pack_q8_0((const int8_t *)codes, scales, cols, out); break;
    case DSQ_GGMLT_Q4_0:
        for (uint64_t b = 0; b < cols / GBLOCK; b++, out += 18) {
            memcpy(out, scales + 2 * b, 2);
            pack_nibbles(codes + b * 16, 8, out + 2);
        }
        break;
    case DSQ_GGMLT_MXFP4:
        for (uint64_t b = 0; b < cols / GBLOCK; b++, out += 17) {
            out[0] = scales[b];
            pack_nibbles(codes + b * 16, 0, out + 1);
        }
        break;
    default: break;
    }
}

static dsq_status lossless_rows(const dsq_qtensor *src, const dsq_codec_layout *L, uint64_t row0, uint64_t nrows,
                                uint32_t type, uint8_t *out, uint64_t orow) {
    const uint8_t *d = src->data;
    if (type == DSQ_GGMLT_F32 || type == DSQ_GGMLT_F16 || type == DSQ_GGMLT_BF16 || type == DSQ_GGMLT_I32 ||
        dsq_ggml_is_kquant(type)) {
        memcpy(out, d + row0 * L->row_bytes, (size_t)(nrows * L->row_bytes));
        return DSQ_OK;
    }
    for (uint64_t r = 0; r < nrows; r++)
        pack_row(type, d + (row0 + r) * L->row_bytes, (const uint8_t *)src->scales + (row0 + r) * L->scale_cols * L->scale_size,
                 src->cols, out + r * orow);
    return DSQ_OK;
}

/* Σ (y−x)², Σ x² and max |y−x| of n values into stats, in four interleaved double lanes (independent
 * chains; a fixed order, so the sums depend only on the rows given). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* the four lanes of add_err as one 256-bit vector each: the same IEEE operations per lane (convert,
 * subtract, multiply, add; max(|d|, m) is d > m ? d : m, NaN never taken); ~4x the scalar loop */
__attribute__((target("avx2"))) static uint64_t add_err4_avx2(const float *x, const float *y, uint64_t n, double *e,
                                                               double *r, double *m) {
    __m256d ev = _mm256_setzero_pd(), rv = ev, mv = ev, sign = _mm256_set1_pd(-0.0);
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(y + i)), v);
        ev = _mm256_add_pd(ev, _mm256_mul_pd(d, d)), rv = _mm256_add_pd(rv, _mm256_mul_pd(v, v));
        mv = _mm256_max_pd(_mm256_andnot_pd(sign, d), mv); /* (a > b) ? a : b, b when either is NaN */
    }
    _mm256_storeu_pd(e, ev), _mm256_storeu_pd(r, rv), _mm256_storeu_pd(m, mv);
    return i;
}
#endif

static void add_err_isa(const float *x, const float *y, uint64_t n, dsq_ggml_stats *stats, dsq_isa isa) {
    double e[4] = {0, 0, 0, 0}, r[4] = {0, 0, 0, 0}, m[4] = {0, 0, 0, 0};
    uint64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (dsq__isa_resolve(isa) == DSQ_ISA_AVX2) i = add_err4_avx2(x, y, n, e, r, m);
#endif
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) {
            double v = x[i + k], d = (double)y[i + k] - v;
            e[k] += d * d, r[k] += v * v;
            d = d < 0 ? -d : d;
            m[k] = d > m[k] ? d : m[k]; /* NaN never taken, as before */
        }
    for (; i < n; i++) {
        double v = x[i], d = (double)y[i] - v;
        e[0] += d * d, r[0] += v * v;
        d = d < 0 ? -d : d;
        m[0] = d > m[0] ? d : m[0];
    }
    stats->sum_sq_err += (e[0] + e[1]) + (e[2] + e[3]);
    stats->sum_sq_ref += (r[0] + r[1]) + (r[2] + r[3]);
    for (int k = 0; k < 4; k++) stats->max_abs_err = m[k] > stats->max_abs_err ? m[k] : stats->max_abs_err;
}
static void add_err(const float *x, const float *y, uint64_t n, dsq_ggml_stats *stats) {
    add_err_isa(x, y, n, stats, DSQ_ISA_AUTO);
}
void dsq__ggml_err_stats(const float *x, const float *y, uint64_t n, dsq_ggml_stats *stats, dsq_isa isa) {
    add_err_isa(x, y, n, stats, isa);
}

/* Q8_0 by ggml's rule (quantize_row_q8_0_ref in ggml-quants.c): per 32 values d = amax/127, stored as
 * F16 (saturated at 65504), codes the nearest integers to x/d clamped to ±127, with d the stored F16
 * value (ggml divides by the unrounded d: here a code never misses its value by more than half the
 * stored step).  No scale search: on gaussian rows the int8-g32 search (10 candidates + 2 least-squares
 * steps) gave a 5% lower relative RMS error (0.51% vs 0.53%), not worth its 13 passes at 8 bits; the
 * bytes are what llama-quantize writes up to that rounding of d (docs/interop.md).
 *
 * Two twins with the same IEEE operations per element: q8_0_rows_scalar and q8_0_rows_avx2 (eight
 * values per instruction).  The stats of the stored values are summed in eight f64 lanes (value i of
 * a block into lane i % 8, blocks in order) over the whole slab and added to *stats once, so both
 * twins give the same bytes and the same sums (tests/test_gguf_export.c compares them). */
typedef struct q8_lanes {
    double e[8], r[8], m[8];
} q8_lanes;

static void q8_lanes_add(const q8_lanes *l, dsq_ggml_stats *stats) {
    stats->sum_sq_err += ((l->e[0] + l->e[4]) + (l->e[1] + l->e[5])) + ((l->e[2] + l->e[6]) + (l->e[3] + l->e[7]));
    stats->sum_sq_ref += ((l->r[0] + l->r[4]) + (l->r[1] + l->r[5])) + ((l->r[2] + l->r[6]) + (l->r[3] + l->r[7]));
    for (int k = 0; k < 8; k++) stats->max_abs_err = l->m[k] > stats->max_abs_err ? l->m[k] : stats->max_abs_err;
}

/* d of one block: f16(amax/127) saturated; returns the stored F16 bits, *d its value */
static inline uint16_t q8_0_scale(float amax, float *d) {
    float d0 = amax / 127.0f;
    uint16_t h = dsq_f16_from_f32(d0 < 65504.0f ? d0 : 65504.0f);
    *d = dsq_f16_to_f32(h);
    return h;
}

/* x: [nrows][cols] (cols a multiple of 32), all finite (dsq_codec_decode checked); out rows orow
 * bytes apart; l receives the stats lanes (NULL: none). */
static void q8_0_rows_scalar(const float *x, uint64_t nrows, uint64_t cols, uint8_t *out, uint64_t orow, q8_lanes *l) {
    for (uint64_t r = 0; r < nrows; r++)
        for (uint64_t c0 = 0; c0 < cols; c0 += GBLOCK) {
            const float *v = x + r * cols + c0;
            uint8_t *o = out + r * orow + c0 / GBLOCK * 34;
            float amax = 0;
            for (int i = 0; i < GBLOCK; i++) {
                float a = fabsf(v[i]);
                amax = a > amax ? a : amax;
            }
            float d;
            uint16_t h = q8_0_scale(amax, &d);
            float id = d > 0.0f ? 1.0f / d : 0.0f;
            o[0] = (uint8_t)h, o[1] = (uint8_t)(h >> 8);
            for (int i = 0; i < GBLOCK; i++) {
                float t = v[i] * id;
                t = t > -127.0f ? t : -127.0f;
                t = t < 127.0f ? t : 127.0f;
                float q = (t + 0x1.8p23f) - 0x1.8p23f; /* RNE for |t| ≤ 2^22 */
                o[2 + i] = (uint8_t)(int8_t)q;
                if (l) {
                    double xv = v[i], dd = (double)(q * d) - xv;
                    l->e[i & 7] += dd * dd, l->r[i & 7] += xv * xv;
                    dd = dd < 0 ? -dd : dd;
                    l->m[i & 7] = dd > l->m[i & 7] ? dd : l->m[i & 7];
                }
            }
        }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* f64 lanes k..k+3 of the stats from four values (x, stored y) */
__attribute__((target("avx2"), always_inline)) static inline void q8_acc4(__m128 xv, __m128 yv, __m256d *e, __m256d *r,
                                                                         __m256d *m) {
    __m256d xd = _mm256_cvtps_pd(xv), dd = _mm256_sub_pd(_mm256_cvtps_pd(yv), xd);
    *e = _mm256_add_pd(*e, _mm256_mul_pd(dd, dd));
    *r = _mm256_add_pd(*r, _mm256_mul_pd(xd, xd));
    __m256d a = _mm256_andnot_pd(_mm256_set1_pd(-0.0), dd);
    *m = _mm256_max_pd(a, *m); /* the scalar twin's a > m ? a : m (no NaN here) */
}

/* codes of eight values x·id (clamped, RNE) as int32; *y the stored values q·d */
__attribute__((target("avx2"), always_inline)) static inline __m256i q8_codes8(__m256 xv, __m256 vid, __m256 vd,
                                                                             __m256 *y) {
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f), magic = _mm256_set1_ps(0x1.8p23f);
    __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(xv, vid), lo), hi);
    __m256 q = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
    *y = _mm256_mul_ps(q, vd);
    return _mm256_cvtps_epi32(q); /* q is an integer: exact */
}

__attribute__((target("avx2,fma,f16c"))) static void q8_0_rows_avx2(const float *x, uint64_t nrows, uint64_t cols,
                                                                    uint8_t *out, uint64_t orow, q8_lanes *l) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256d e0 = _mm256_setzero_pd(), e1 = e0, r0 = e0, r1 = e0, m0 = e0, m1 = e0;
    if (l) {
        e0 = _mm256_loadu_pd(l->e), e1 = _mm256_loadu_pd(l->e + 4);
        r0 = _mm256_loadu_pd(l->r), r1 = _mm256_loadu_pd(l->r + 4);
        m0 = _mm256_loadu_pd(l->m), m1 = _mm256_loadu_pd(l->m + 4);
    }
    for (uint64_t r = 0; r < nrows; r++)
        for (uint64_t c0 = 0; c0 < cols; c0 += GBLOCK) {
            const float *v = x + r * cols + c0;
            uint8_t *o = out + r * orow + c0 / GBLOCK * 34;
            __m256 x0 = _mm256_loadu_ps(v), x1 = _mm256_loadu_ps(v + 8), x2 = _mm256_loadu_ps(v + 16),
                   x3 = _mm256_loadu_ps(v + 24);
            __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(x0, absmask), _mm256_and_ps(x1, absmask)),
                                     _mm256_max_ps(_mm256_and_ps(x2, absmask), _mm256_and_ps(x3, absmask)));
            __m128 a4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            a4 = _mm_max_ps(a4, _mm_movehl_ps(a4, a4));
            a4 = _mm_max_ss(a4, _mm_shuffle_ps(a4, a4, 1));
            float amax = _mm_cvtss_f32(a4); /* the max is exact: any order */
            /* d = f16(min(amax/127, 65504)) by the F16C instruction (RNE, as dsq_f16_from_f32) */
            float d0 = amax / 127.0f;
            __m128i h8 = _mm_cvtps_ph(_mm_set_ss(d0 < 65504.0f ? d0 : 65504.0f), _MM_FROUND_TO_NEAREST_INT);
            float d = _mm_cvtss_f32(_mm_cvtph_ps(h8)), id = d > 0.0f ? 1.0f / d : 0.0f;
            uint16_t h = (uint16_t)_mm_extract_epi16(h8, 0);
            o[0] = (uint8_t)h, o[1] = (uint8_t)(h >> 8);
            __m256 vid = _mm256_set1_ps(id), vd = _mm256_set1_ps(d), y0, y1, y2, y3;
            __m256i q0 = q8_codes8(x0, vid, vd, &y0), q1 = q8_codes8(x1, vid, vd, &y1);
            __m256i q2 = q8_codes8(x2, vid, vd, &y2), q3 = q8_codes8(x3, vid, vd, &y3);
            if (l) {
#define Q8_ACC(X, Y)                                                                                                  \
    q8_acc4(_mm256_castps256_ps128(X), _mm256_castps256_ps128(Y), &e0, &r0, &m0);                                     \
    q8_acc4(_mm256_extractf128_ps(X, 1), _mm256_extractf128_ps(Y, 1), &e1, &r1, &m1)
                Q8_ACC(x0, y0);
                Q8_ACC(x1, y1);
                Q8_ACC(x2, y2);
                Q8_ACC(x3, y3);
#undef Q8_ACC
            }
            /* 32 int32 codes in ±127 → 32 int8 in order (the packs interleave 128-bit halves: a permute) */
            __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
            _mm256_storeu_si256((__m256i *)(void *)(o + 2), _mm256_permutevar8x32_epi32(b, perm));
        }
    if (l) {
        _mm256_storeu_pd(l->e, e0), _mm256_storeu_pd(l->e + 4, e1);
        _mm256_storeu_pd(l->r, r0), _mm256_storeu_pd(l->r + 4, r1);
        _mm256_storeu_pd(l->m, m0), _mm256_storeu_pd(l->m + 4, m1);
    }
}
#else
static void q8_0_rows_avx2(const float *x, uint64_t nrows, uint64_t cols, uint8_t *out, uint64_t orow, q8_lanes *l) {
    q8_0_rows_scalar(x, nrows, cols, out, orow, l);
}
#endif

void dsq__ggml_q8_0_rows(const float *x, uint64_t nrows, uint64_t cols, uint8_t *out, uint64_t orow,
                         dsq_ggml_stats *stats, dsq_isa isa) {
    q8_lanes l;
    memset(&l, 0, sizeof l);
    if (dsq__isa_resolve(isa) == DSQ_ISA_AVX2)
        q8_0_rows_avx2(x, nrows, cols, out, orow, stats ? &l : NULL);
    else
        q8_0_rows_scalar(x, nrows, cols, out, orow, stats ? &l : NULL);
    if (stats) q8_lanes_add(&l, stats);
}

/* Grow scratch buffer *p (capacity *cap bytes) to at least n bytes; the old contents are dropped. */
static void *grow(void **p, size_t *cap, size_t n) {
    if (*p && *cap >= n) return *p;
    dsq_free(*p);
    *p = dsq_malloc(n + 1);
    *cap = *p ? n : 0;
    return *p;
}

void dsq_ggml_scratch_free(dsq_ggml_scratch *s) {
    if (!s) return;
    dsq_free(s->x), dsq_free(s->y), dsq_free(s->codes), dsq_free(s->scales);
    memset(s, 0, sizeof *s);
}

/* The chunk the Q8_0 and k-quant paths decode and encode while it is in cache: *rc rows (<= 64 KiB of
 * f32, at least one row, at most nrows) in scr's f32 buffer *xc; one pass over the slab instead of a
 * decode pass and an encode pass over memory. */
static dsq_status chunk_buf(uint64_t cols, uint64_t nrows, dsq_ggml_scratch *scr, uint64_t *rc, float **xc,
                            const char *nm, dsq_err *err) {
    uint64_t r = ((uint64_t)64 << 10) / (cols * sizeof(float)), xb;
    r = r ? r : 1;
    r = r < nrows ? r : nrows;
    DSQ_RETURN_IF(!dsq_mul_u64(r * cols, sizeof(float), &xb), err, DSQ_ERR_OVERFLOW, "%s: slab too big", nm);
    *xc = grow((void **)&scr->x, &scr->x_cap, (size_t)xb);
    DSQ_RETURN_IF(!*xc, err, DSQ_ERR_NOMEM, "%s: out of memory", nm);
    *rc = r;
    return DSQ_OK;
}

/* k-quant re-quantization of x [nrows][cols] (decoded source) into out; error sums into stats. */
static dsq_status kquant_rows(uint32_t type, const float *x, uint64_t nrows, uint64_t cols, const float *importance,
                              uint8_t *out, dsq_ggml_stats *stats, dsq_ggml_scratch *scr, const char *nm, dsq_err *err) {
    dsq_encoding e;
    int g;
    if (!dsq_ggml_encoding_of(type, &e, &g)) return dsq_err_set(err, DSQ_ERR_DTYPE, "%s: ggml type %u", nm, type);
    dsq_err sub = DSQ_ERR_INIT;
    dsq_status st = dsq_kquant_encode(e, x, nrows, cols, importance, false, out, &sub);
    if (st != DSQ_OK) {
        st = dsq_err_set(err, st, "%s: %s", nm, sub.msg);
        dsq_err_clear(&sub);
        return st;
    }
    if (!stats) return DSQ_OK;
    float *y = grow((void **)&scr->y, &scr->y_cap, (size_t)(cols * sizeof(float)));
    DSQ_RETURN_IF(!y, err, DSQ_ERR_NOMEM, "%s: out of memory", nm);
    bool avx2 = dsq_codec_best_isa() == DSQ_ISA_AVX2; /* the same floats as the scalar decoder */
    for (uint64_t r = 0; r < nrows; r++) {
        dsq_kquant_decode_rows(e, out, cols, r, 1, y, avx2);
        add_err(x + r * cols, y, cols, stats);
    }
    return DSQ_OK;
}

dsq_status dsq_ggml_encode_rows(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, uint32_t type, uint8_t *out,
                                dsq_ggml_stats *stats, const char *name, dsq_err *err) {
    return dsq_ggml_encode_rows_w(src, row0, nrows, type, NULL, out, stats, name, err);
}

dsq_status dsq_ggml_encode_rows_w(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, uint32_t type,
                                  const float *importance, uint8_t *out, dsq_ggml_stats *stats, const char *name,
                                  dsq_err *err) {
    dsq_ggml_scratch scr = {0};
    dsq_status st = dsq_ggml_encode_rows_s(src, row0, nrows, type, importance, out, stats, &scr, name, err);
    dsq_ggml_scratch_free(&scr);
    return st;
}

dsq_status dsq_ggml_encode_rows_s(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, uint32_t type,
                                  const float *importance, uint8_t *out, dsq_ggml_stats *stats, dsq_ggml_scratch *scr,
                                  const char *name, dsq_err *err) {
    const char *nm = name ? name : "tensor";
    uint64_t orow;
    DSQ_RETURN_IF(!dsq_ggml_row_bytes(type, src->cols, &orow), err, DSQ_ERR_SHAPE,
                  "%s: %llu columns cannot be stored as ggml type %u (block of %d values)", nm,
                  (unsigned long long)src->cols, type, dsq_ggml_is_kquant(type) ? DSQ_KQ_BLOCK : GBLOCK);
    dsq_codec_layout L;
    DSQ_TRY(dsq_codec_layout_of(src->enc, src->rows, src->cols, src->group, &L, err));
    DSQ_RETURN_IF(row0 > src->rows || nrows > src->rows - row0, err, DSQ_ERR_RANGE, "%s: rows out of range", nm);
    uint64_t n = nrows * src->cols;
    uint32_t twin;
    if (dsq_ggml_twin_of(src->enc, src->group, &twin) && twin == type) {
        if (stats) stats->values += n, stats->lossless_values += n;
        return lossless_rows(src, &L, row0, nrows, type, out, orow);
    }
    if (src->enc == DSQ_ENC_I64 && type == DSQ_GGMLT_I32) {
        const uint8_t *d = (const uint8_t *)src->data + row0 * L.row_bytes;
        for (uint64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, d + 8 * i, 8);
            DSQ_RETURN_IF(v < INT32_MIN || v > INT32_MAX, err, DSQ_ERR_RANGE, "%s: value %lld does not fit I32", nm,
                          (long long)v);
            int32_t w = (int32_t)v;
            memcpy(out + 4 * i, &w, 4);
        }
        if (stats) stats->values += n, stats->lossless_values += n;
        return DSQ_OK;
    }
    DSQ_RETURN_IF(!dsq_codec_is_float(src->enc) || type == DSQ_GGMLT_I32, err, DSQ_ERR_DTYPE,
                  "%s: integer tensor cannot become ggml type %u", nm, type);
    uint64_t bytes;
    DSQ_RETURN_IF(!dsq_mul_u64(n, sizeof(float), &bytes) || bytes > SIZE_MAX / 2, err, DSQ_ERR_OVERFLOW, "%s: slab too big", nm);
    dsq_codec_options co = {.name = name};
    if (type == DSQ_GGMLT_Q8_0 && src->cols % GBLOCK == 0) {
        uint64_t rc;
        float *xc;
        DSQ_TRY(chunk_buf(src->cols, nrows, scr, &rc, &xc, nm, err));
        for (uint64_t r = 0; r < nrows; r += rc) {
            uint64_t m = nrows - r < rc ? nrows - r : rc;
            DSQ_TRY(dsq_codec_decode(src, row0 + r, m, xc, &co, err)); /* refuses NaN/Inf */
            dsq__ggml_q8_0_rows(xc, m, src->cols, out + r * orow, orow, stats, DSQ_ISA_AUTO);
        }
        if (stats) stats->values += n;
        return DSQ_OK;
    }
    if (dsq_ggml_is_kquant(type)) {
        uint64_t rc;
        float *xc;
        DSQ_TRY(chunk_buf(src->cols, nrows, scr, &rc, &xc, nm, err));
        /* the decode skips its own NaN/Inf scan: the encoder's weight prep refuses non-finite values
         * anyway, and on that refusal the rows are decoded again with the scan, whose error (the
         * element and what it decodes to) is the one reported, as before (the scan was ~1.4% of a
         * q4_k FP4 convert) */
        dsq_codec_options cn = co;
        cn.allow_nonfinite = true;
        for (uint64_t r = 0; r < nrows; r += rc) {
            uint64_t m = nrows - r < rc ? nrows - r : rc;
            DSQ_TRY(dsq_codec_decode(src, row0 + r, m, xc, &cn, err));
            dsq_err kerr = DSQ_ERR_INIT;
            dsq_status st = kquant_rows(type, xc, m, src->cols, importance, out + r * orow, stats, scr, nm, &kerr);
            if (st == DSQ_ERR_NONFINITE) {
                dsq_err_clear(&kerr);
                DSQ_TRY(dsq_codec_decode(src, row0 + r, m, xc, &co, err)); /* refuses NaN/Inf */
                return dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: non-finite values", nm); /* not reached */
            }
            if (st != DSQ_OK) {
                st = dsq_err_set(err, st, "%s", kerr.msg);
                dsq_err_clear(&kerr);
                return st;
            }
        }
        if (stats) stats->values += n;
        return DSQ_OK;
    }
    float *x = grow((void **)&scr->x, &scr->x_cap, (size_t)bytes);
    DSQ_RETURN_IF(!x, err, DSQ_ERR_NOMEM, "%s: out of memory", nm);
    dsq_status st = dsq_codec_decode(src, row0, nrows, x, &co, err);
    uint8_t *codes = NULL, *scales = NULL;
    if (st == DSQ_OK && (type == DSQ_GGMLT_Q8_0 || type == DSQ_GGMLT_Q4_0 || type == DSQ_GGMLT_MXFP4)) {
        dsq_encoding e = type == DSQ_GGMLT_Q8_0 ? DSQ_ENC_INT8_G : type == DSQ_GGMLT_Q4_0 ? DSQ_ENC_INT4_G : DSQ_ENC_MXFP4;
        int g = e == DSQ_ENC_MXFP4 ? 0 : GBLOCK;
        dsq_codec_layout T;
        st = dsq_codec_layout_of(e, nrows, src->cols, g, &T, err);
        if (st == DSQ_OK) {
            codes = grow((void **)&scr->codes, &scr->codes_cap, (size_t)T.data_bytes);
            scales = grow((void **)&scr->scales, &scr->scales_cap, (size_t)T.scale_bytes);
            if (!codes || !scales) st = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", nm);
        }
        if (st == DSQ_OK) {
            dsq_qtensor_buf b = {e, nrows, src->cols, g, codes, scales, NULL, 0};
            st = dsq_codec_encode(&b, x, 0, nrows, &co, err);
            if (st == DSQ_OK) {
                for (uint64_t r = 0; r < nrows; r++)
                    pack_row(type, codes + r * T.row_bytes, scales + r * T.scale_cols * T.scale_size, src->cols, out + r * orow);
                if (stats) { /* error of the re-quantization, against the decoded source */
                    float *y = grow((void **)&scr->y, &scr->y_cap, (size_t)bytes);
                    if (!y) st = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", nm);
                    else if ((st = dsq_codec_decode(&(dsq_qtensor){e, nrows, src->cols, g, codes, scales, NULL, 0}, 0, nrows, y,
                                                    &co, err)) == DSQ_OK)
                        add_err(x, y, n, stats);
                }
            }
        }
    } else if (st == DSQ_OK) {
        /* F32 / F16 / BF16 by RNE, one loop per type, in chunks whose stored values (y, on the stack)
         * feed the stats */
        enum { CHUNK = 512 };
        float y[CHUNK];
        for (uint64_t i0 = 0; i0 < n; i0 += CHUNK) {
            uint64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
            const float *xs = x + i0;
            if (type == DSQ_GGMLT_F32) memcpy(out + 4 * i0, xs, (size_t)m * 4);
            else if (type == DSQ_GGMLT_F16)
                for (uint64_t i = 0; i < m; i++) {
                    uint16_t h = dsq_f16_from_f32(xs[i]);
                    memcpy(out + 2 * (i0 + i), &h, 2);
                    y[i] = dsq_f16_to_f32(h);
                }
            else
                for (uint64_t i = 0; i < m; i++) {
                    uint16_t h = dsq_bf16_from_f32(xs[i]);
                    memcpy(out + 2 * (i0 + i), &h, 2);
                    y[i] = dsq_bf16_to_f32(h);
                }
            if (stats) add_err(xs, type == DSQ_GGMLT_F32 ? xs : y, m, stats);
        }
    }
    if (st == DSQ_OK && stats) stats->values += n;
    return st;
}

dsq_status dsq_ggml_unpack(uint32_t type, const uint8_t *in, uint64_t rows, uint64_t cols, dsq_qtensor_buf *dst,
                           dsq_err *err) {
    uint64_t irow;
    DSQ_RETURN_IF(!dsq_ggml_row_bytes(type, cols, &irow), err, DSQ_ERR_SHAPE, "ggml type %u: bad row of %llu values",
                  type, (unsigned long long)cols);
    dsq_codec_layout L;
    DSQ_TRY(dsq_codec_layout_of(dst->enc, rows, cols, dst->group, &L, err));
    uint8_t *codes = dst->data, *scales = dst->scales;
    if (type == DSQ_GGMLT_F32 || type == DSQ_GGMLT_F16 || type == DSQ_GGMLT_BF16 || type == DSQ_GGMLT_I32 ||
        dsq_ggml_is_kquant(type)) {
        memcpy(codes, in, (size_t)(rows * irow));
        return DSQ_OK;
    }
    for (uint64_t r = 0; r < rows; r++) {
        const uint8_t *b = in + r * irow;
        uint8_t *c = codes + r * L.row_bytes, *s = scales + r * L.scale_cols * L.scale_size;
        for (uint64_t k = 0; k < cols / GBLOCK; k++) {
            if (type == DSQ_GGMLT_Q8_0) unpack_q8_0(b + 34 * k, GBLOCK, (int8_t *)c + k * GBLOCK, s + 2 * k);
            else if (type == DSQ_GGMLT_Q4_0) {
                memcpy(s + 2 * k, b + 18 * k, 2);
                unpack_nibbles(b + 18 * k + 2, 8, c + 16 * k);
            } else {
                s[k] = b[17 * k];
                unpack_nibbles(b + 17 * k + 1, 0, c + 16 * k);
            }
        }
    }
    return DSQ_OK;
}
