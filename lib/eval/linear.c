/* Linear layers over weights in their stored encoding: rows are dequantized tile by tile into a
 * per-thread scratch buffer and reduced against every token with an 8-lane FMA dot product.
 * AVX2/FMA twins are chosen at run time; the scalar twins compute the same bits (fmaf per lane,
 * the same final lane sum) so tests can compare them exactly. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_kquant.h"
#include "dsq_core.h"
#include "dsq_cpu.h"
#include "dsq_numeric.h"
#include "v4_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

enum { ROW_TILE = 4, TOK_TILE = 3 };
/* One-token kernels: rows of a BF16 tile; how far ahead in each row weights are prefetched. */
enum { BF16_TILE = 8, PF_BYTES = 1024 };
/* MXFP4 kernels decoding in registers: tokens per pass, and the most tokens for which decoding the
 * weights once per pass beats dequantizing them once into a tile (an expert's share of a prefill). */
enum { FP4_NT = 4, FP4_FUSED_MAX_TOK = 8 };

/* UE8M0 byte → 2^(b-127) from the bits (ldexpf goes through a slow libm call).  255 is NaN, as in
 * lib/quant's decoder: model load rejects it unless allowed, and an allowed view takes the exact
 * scalar decoder anyway (dsq_wview.nonfinite). */
static inline float e8m0(uint8_t b) {
    if (b == 0) return 0x1p-127f;
    if (b == 255) return NAN;
    uint32_t u = (uint32_t)b << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

bool dsq__cpu_has_avx2(void) {
#ifdef HAVE_X86
    return dsq__cpu_avx2_fma_f16c();
#else
    return false;
#endif
}

#ifdef HAVE_X86
/* 8 e4m3 codes (one per 32-bit lane) → f32, exactly.  Normal codes get their exponent rebased in the
 * integer domain; subnormal codes (exponent 0) are m·2^-9.  No denormal f32 operand ever reaches a
 * multiply (those take a microcode assist of ~100 cycles each). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 e4m3x8(__m256i b) {
    __m256i mag = _mm256_and_si256(b, _mm256_set1_epi32(0x7f));
    __m256 normal = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
    __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(7))), _mm256_set1_ps(0x1p-9f));
    __m256i is_sub = _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x78)), _mm256_setzero_si256());
    __m256 f = _mm256_blendv_ps(normal, sub, _mm256_castsi256_ps(is_sub));
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24);
    return _mm256_or_ps(f, _mm256_castsi256_ps(sign));
}
#endif

#ifdef HAVE_X86
/* 16 packed e2m1 bytes → 32 values × s in out[0..3] (column order, low nibble first).  The nibble
 * table holds 2·value as int8 (exact), multiplied by s/2 (exact: a power of two): the same
 * floats as the LUT path, except that code 8 (-0) gives +0, which changes no sum. */
__attribute__((target("avx2,fma"), always_inline)) static inline void fp4x32(const uint8_t *p, float s, __m256 out[4]) {
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m128i lo = _mm_and_si128(b, _mm_set1_epi8(15)), hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(15));
    __m128i v0 = _mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi)); /* columns 0..15 */
    __m128i v1 = _mm_shuffle_epi8(lut, _mm_unpackhi_epi8(lo, hi)); /* columns 16..31 */
    __m256 hs = _mm256_set1_ps(s * 0.5f);
    out[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v0)), hs);
    out[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v0, 8))), hs);
    out[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v1)), hs);
    out[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v1, 8))), hs);
}
#endif

/* ---- dequantization --------------------------------------------------------------------------- */

#ifdef HAVE_X86
/* AVX2 twins of the row dequantizers: exact conversions, so the same floats as the LUT paths, except
 * e4m3 NaN codes (they read as 480 here): views holding any NaN/Inf code or scale are marked at load
 * (dsq_wview.nonfinite, only when allowed; else loading fails) and never reach these kernels. */
__attribute__((target("avx2,fma"))) static void dequant_fp8_b128_avx2(const dsq_wview *w, uint64_t r, float *out) {
    uint64_t cols = w->shape[1], nbk = dsq_ceil_div(cols, 128);
    const uint8_t *codes = w->data + r * cols;
    for (uint64_t bk = 0; bk < nbk; bk++) {
        uint64_t si = (r / 128) * nbk + bk;
        float s = w->enc == DSQ_ENC_FP8_B128 ? e8m0(w->scale[si]) : dsq__ld_f32(w->scale + 4 * si);
        __m256 sv = _mm256_set1_ps(s);
        uint64_t c = bk * 128, c1 = (bk + 1) * 128 < cols ? (bk + 1) * 128 : cols;
        for (; c + 8 <= c1; c += 8) {
            __m256 f = e4m3x8(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + c))));
            _mm256_storeu_ps(out + c, _mm256_mul_ps(f, sv));
        }
        for (; c < c1; c++) out[c] = dsq_e4m3_lut[codes[c]] * s;
    }
}

__attribute__((target("avx2,fma"))) static void dequant_mxfp4_avx2(const dsq_wview *w, uint64_t r, float *out) {
    uint64_t cols = w->shape[1], nb = cols / 32;
    const uint8_t *codes = w->data + r * (cols / 2), *sc = w->scale + r * nb;
    for (uint64_t b = 0; b < nb; b++) {
        __m256 v[4];
        fp4x32(codes + b * 16, e8m0(sc[b]), v);
        for (int i = 0; i < 4; i++) _mm256_storeu_ps(out + b * 32 + (uint64_t)i * 8, v[i]);
    }
}

__attribute__((target("avx2,fma"))) static void dequant_bf16_avx2(const uint8_t *src, uint64_t cols, float *out) {
    uint64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + 2 * c)));
        _mm256_storeu_ps(out + c, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; c < cols; c++) out[c] = dsq_bf16_to_f32(dsq__ld_u16(src + 2 * c));
}

static void dequant_rows_avx2(const dsq_wview *w, uint64_t row0, uint64_t n, float *out) {
    uint64_t cols = w->shape[1];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = row0 + i;
        float *o = out + i * cols;
        switch (w->enc) {
        case DSQ_ENC_BF16:
            dequant_bf16_avx2(w->data + 2 * r * cols, cols, o);
            break;
        case DSQ_ENC_FP8_B128:
        case DSQ_ENC_FP8_B128_F32:
            dequant_fp8_b128_avx2(w, r, o);
            break;
        case DSQ_ENC_MXFP4:
            dequant_mxfp4_avx2(w, r, o);
            break;
        case DSQ_ENC_Q2_K: /* k-quants: lib/quant/kernels_kquant.c, the scalar decoder's floats */
        case DSQ_ENC_Q3_K:
        case DSQ_ENC_Q4_K:
        case DSQ_ENC_Q5_K:
        case DSQ_ENC_Q6_K:
            dsq_kquant_decode_rows(w->enc, w->data, cols, r, 1, o, true);
            break;
        default:
            dsq__dequant_rows(w, r, 1, o);
            break; /* the other codecs: lib/quant */
        }
    }
}
#endif

dsq_qtensor dsq__qtensor_of(const dsq_wview *w) {
    dsq_qtensor q = {w->enc, w->shape[0], w->shape[1], w->group, w->data, w->scale, w->mins, w->tensor_scale};
    return q;
}

/* The portable path: lib/quant's decoder (exact for every encoding, NaN codes and scales included,
 * so the same values as the AVX2 twins on finite data).  Non-finite checks happen once per view
 * (scales at load, codes at first use), not here. */
void dsq__dequant_rows(const dsq_wview *w, uint64_t row0, uint64_t n, float *out) {
    dsq_qtensor q = dsq__qtensor_of(w);
    dsq_codec_options o = {.allow_nonfinite = true, .name = w->name, .isa = DSQ_ISA_SCALAR};
    (void)dsq_codec_decode(&q, row0, n, out, &o, NULL); /* descriptor validated at load */
}

/* ---- dot products ------------------------------------------------------------------------------ */

/* Fixed lane-sum order shared by both twins. */
static inline float hsum8(const float *l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

static float dot_scalar(const float *a, const float *b, size_t n) {
    float acc[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) acc[l] = fmaf(a[k + l], b[k + l], acc[l]);
    float s = hsum8(acc);
    for (; k < n; k++) s = fmaf(a[k], b[k], s);
    return s;
}

#ifdef HAVE_X86
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, size_t n) {
    __m256 acc = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= n; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
    float l[8];
    _mm256_storeu_ps(l, acc);
    float s = hsum8(l);
    for (; k < n; k++) s = fmaf(a[k], b[k], s);
    return s;
}

/* ROW_TILE (4) rows × 3 tokens with twelve named accumulators (arrays of __m256 get spilled to the
 * stack); each (row, token) pair keeps its own lane accumulator, so the result does not depend on
 * the tiling. */
__attribute__((target("avx2,fma"))) static void tile4x3_avx2(const float *w, size_t ldw, const float *x, size_t ldx,
                                                             size_t n, float *y, size_t ldy) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw;
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k), v2 = _mm256_loadu_ps(x2 + k), wv;
        wv = _mm256_loadu_ps(w0 + k);
        a00 = _mm256_fmadd_ps(wv, v0, a00), a01 = _mm256_fmadd_ps(wv, v1, a01), a02 = _mm256_fmadd_ps(wv, v2, a02);
        wv = _mm256_loadu_ps(w1 + k);
        a10 = _mm256_fmadd_ps(wv, v0, a10), a11 = _mm256_fmadd_ps(wv, v1, a11), a12 = _mm256_fmadd_ps(wv, v2, a12);
        wv = _mm256_loadu_ps(w2 + k);
        a20 = _mm256_fmadd_ps(wv, v0, a20), a21 = _mm256_fmadd_ps(wv, v1, a21), a22 = _mm256_fmadd_ps(wv, v2, a22);
        wv = _mm256_loadu_ps(w3 + k);
        a30 = _mm256_fmadd_ps(wv, v0, a30), a31 = _mm256_fmadd_ps(wv, v1, a31), a32 = _mm256_fmadd_ps(wv, v2, a32);
    }
    __m256 acc[12] = {a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32};
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 3; t++) {
            float l[8];
            _mm256_storeu_ps(l, acc[r * 3 + t]);
            float s = hsum8(l);
            const float *wr = w + r * ldw, *xt = x + t * ldx;
            for (size_t kk = k; kk < n; kk++) s = fmaf(wr[kk], xt[kk], s);
            y[t * ldy + r] = s;
        }
}

__attribute__((target("avx2,fma"))) static void tile_avx2(const float *w, size_t ldw, int nr, const float *x,
                                                          size_t ldx, int nt, size_t n, float *y, size_t ldy) {
    if (nr == ROW_TILE && nt == TOK_TILE) {
        tile4x3_avx2(w, ldw, x, ldx, n, y, ldy);
        return;
    }
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) y[t * ldy + r] = dot_avx2(w + r * ldw, x + t * ldx, n);
}
#endif

#ifdef HAVE_X86
/* One token (decode): ROW_TILE rows dequantized in registers and reduced at once, no scratch.
 * Same weight values and the same per-lane FMA order as dequantize-then-dot, so the same bits. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 wvec(const dsq_wview *w, uint64_t r,
                                                                             uint64_t c) {
    uint64_t cols = w->shape[1];
    switch (w->enc) {
    case DSQ_ENC_F32:
        return _mm256_loadu_ps((const float *)(const void *)(w->data + 4 * (r * cols + c)));
    case DSQ_ENC_BF16: {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w->data + 2 * (r * cols + c))));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
    case DSQ_ENC_FP8_B128:
    case DSQ_ENC_FP8_B128_F32: {
        uint64_t si = (r / 128) * dsq_ceil_div(cols, 128) + c / 128;
        float s = w->enc == DSQ_ENC_FP8_B128 ? e8m0(w->scale[si]) : dsq__ld_f32(w->scale + 4 * si);
        __m256 f = e4m3x8(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w->data + r * cols + c))));
        return _mm256_mul_ps(f, _mm256_set1_ps(s));
    }
    default: { /* MXFP4 */
        const __m256 mags = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
        uint32_t four;
        memcpy(&four, w->data + r * (cols / 2) + c / 2, 4);
        __m128i v = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)four));
        __m128i lo = _mm_and_si128(v, _mm_set1_epi32(15)), hi = _mm_srli_epi32(v, 4);
        __m256i idx = _mm256_set_m128i(_mm_unpackhi_epi32(lo, hi), _mm_unpacklo_epi32(lo, hi));
        __m256 f = _mm256_permutevar8x32_ps(mags, idx);
        __m256i sign = _mm256_slli_epi32(_mm256_and_si256(idx, _mm256_set1_epi32(8)), 28);
        f = _mm256_or_ps(f, _mm256_castsi256_ps(sign));
        return _mm256_mul_ps(f, _mm256_set1_ps(e8m0(w->scale[r * (cols / 32) + c / 32])));
    }
    }
}

/* FP8 128x128, four rows, one token: 16 codes at a time become fp16 bit patterns (e4m3 value ·
 * 2^-8, subnormals included) converted by F16C, then ·256·s — exact, so the same weights as the
 * other paths, and the same per-lane FMA order. */
__attribute__((target("avx2,fma,f16c"))) static void fp8_rows4(const dsq_wview *w, uint64_t r0, const float *x,
                                                               __m256 *a0, __m256 *a1, __m256 *a2, __m256 *a3) {
    uint64_t cols = w->shape[1], nbk = cols / 128, si0 = (r0 / 128) * nbk;
    const uint8_t *base = w->data + r0 * cols;
    /* byte s.eeee.mmm → fp16 bits s.0.eeee.mmm.0000000: (b << 8) >> 1 arithmetically, bit 14 cleared */
    const __m256i mbf = _mm256_set1_epi16((short)0xbfff);
    const __m256 k256 = _mm256_set1_ps(256.0f);
    __m256 A0 = *a0, A1 = *a1, A2 = *a2, A3 = *a3;
    for (uint64_t bk = 0; bk < nbk; bk++) {
        float sc = w->enc == DSQ_ENC_FP8_B128 ? e8m0(w->scale[si0 + bk]) : dsq__ld_f32(w->scale + 4 * (si0 + bk));
        /* the next four rows' bytes in address order, 512 per 128-column block: the whole next tile by
         * the end of this one (see fp8_vbmi_body) */
        for (int i = 0; i < 8; i++)
            _mm_prefetch((const char *)(base + 4 * cols + (bk * 8 + (uint64_t)i) * 64), _MM_HINT_T0);
        /* v·2^-8 exact, then one product with 256·s (exact unless it overflows, so the same rounding
         * as (v·2^-8·256)·s); absurd scales ≥ 2^119 keep the two products */
        bool one = sc <= 0x1p119f;
        __m256 sv = _mm256_set1_ps(sc), kv = _mm256_set1_ps(256.0f * sc);
#define FP8_W(v) (one ? _mm256_mul_ps(v, kv) : _mm256_mul_ps(_mm256_mul_ps(v, k256), sv))
        for (uint64_t c = bk * 128; c < bk * 128 + 128; c += 16) {
            __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
#define FP8_ROW(r, A)                                                                                                  \
    do {                                                                                                               \
        __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(base + (uint64_t)(r)*cols + c)));           \
        __m256i h = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(b, 8), 1), mbf);                            \
        __m256 f0 = FP8_W(_mm256_cvtph_ps(_mm256_castsi256_si128(h)));                                                 \
        __m256 f1 = FP8_W(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));                                            \
        A = _mm256_fmadd_ps(f0, x0, A);                                                                                \
        A = _mm256_fmadd_ps(f1, x1, A);                                                                                \
    } while (0)
            FP8_ROW(0, A0);
            FP8_ROW(1, A1);
            FP8_ROW(2, A2);
            FP8_ROW(3, A3);
#undef FP8_ROW
        }
#undef FP8_W
    }
    *a0 = A0, *a1 = A1, *a2 = A2, *a3 = A3;
}

/* ---- AVX-512 twins of the one-token kernels ---------------------------------------------------------
 * A zmm register holds two rows × the same 8 columns: lanes 0-7 are row A's 8-lane accumulator,
 * lanes 8-15 row B's.  Each row thus keeps exactly its AVX2 accumulator (column order, one FMA per
 * lane per 8 columns) and the same final lane sum, so the bits are those of the AVX2 and scalar
 * twins, with half the decode instructions per weight. */

bool dsq__cpu_has_avx512(void) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return false;
#endif
}

/* [v | v]: the same 8 columns of x for both rows of a pair. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 dup8(const float *x) {
    __m256 v = _mm256_loadu_ps(x);
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(v)), _mm256_castps_pd(v), 1));
}

/* [v | v] as one broadcast load. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 bcast8(const float *x) {
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x))));
}

/* [a × 8 | b × 8] */
__attribute__((target("avx512f"), always_inline)) static inline __m512 pair_scale(float a, float b) {
    return _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b));
}

/* Two rows' final lane sums. */
__attribute__((target("avx512f"), always_inline)) static inline void pair_sums(__m512 acc, float *y) {
    float l[16];
    _mm512_storeu_ps(l, acc);
    y[0] = hsum8(l);
    y[1] = hsum8(l + 8);
}

/* MXFP4, four rows: the nibble of column 8k+j sits at bit 4j of the k-th 32-bit word of a 16-byte
 * block; a 16-entry permute maps it to its e2m1 value (code 8, -0, gives +0 as in fp4x32), times
 * the block's power-of-two scale (exact: the same float as 2v·s/2). */
__attribute__((target("avx512f,avx512bw"))) static void fp4_rows4_avx512(const dsq_wview *w, uint64_t r0, const float *x,
                                                                          float *y) {
    uint64_t cols = w->shape[1], nb = cols / 32, lb = cols / 2;
    const uint8_t *c0 = w->data + r0 * lb, *s0 = w->scale + r0 * nb;
    const __m512 tab = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, 0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
                                      -3.0f, -4.0f, -6.0f);
    const __m512i sh = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    const __m512i i0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 a01 = _mm512_setzero_ps(), a23 = a01;
    for (uint64_t b = 0; b < nb; b++) {
        const uint8_t *p = c0 + b * 16;
        __m512i q01 = _mm512_inserti32x4(_mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p)),
                                         _mm_loadu_si128((const __m128i *)(p + lb)), 1);
        __m512i q23 = _mm512_inserti32x4(_mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p + 2 * lb))),
                                         _mm_loadu_si128((const __m128i *)(p + 3 * lb)), 1);
        __m512 s01 = pair_scale(e8m0(s0[b]), e8m0(s0[nb + b]));
        __m512 s23 = pair_scale(e8m0(s0[2 * nb + b]), e8m0(s0[3 * nb + b]));
        __m512i idx = i0;
        for (int k = 0; k < 4; k++, idx = _mm512_add_epi32(idx, one)) {
            __m512 xv = dup8(x + b * 32 + (uint64_t)k * 8);
            __m512i n01 = _mm512_srlv_epi32(_mm512_permutexvar_epi32(idx, q01), sh);
            __m512i n23 = _mm512_srlv_epi32(_mm512_permutexvar_epi32(idx, q23), sh);
            a01 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_permutexvar_ps(n01, tab), s01), xv, a01);
            a23 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_permutexvar_ps(n23, tab), s23), xv, a23);
        }
    }
    pair_sums(a01, y);
    pair_sums(a23, y + 2);
}

/* FP8 128x128, four rows (cols a multiple of 128): 16 columns of the four rows become 64 fp16 bit
 * patterns (e4m3 · 2^-8, as fp8_rows4), each row pair's arranged [A c..c+7 | B c..c+7] and
 * [A c+8..c+15 | B c+8..c+15], then ·256·s and one FMA each: fp8_rows4's values and order. */
__attribute__((target("avx512f,avx512bw"))) static void fp8_rows4_avx512(const dsq_wview *w, uint64_t r0, const float *x,
                                                                          float *y) {
    uint64_t cols = w->shape[1], nbk = cols / 128, si0 = (r0 / 128) * nbk;
    const uint8_t *base = w->data + r0 * cols;
    const __m512i mbf = _mm512_set1_epi16((short)0xbfff); /* see fp8_rows4 */
    const __m512 k256 = _mm512_set1_ps(256.0f);
    const bool e8 = w->enc == DSQ_ENC_FP8_B128;
    __m512 a01 = _mm512_setzero_ps(), a23 = a01;
    for (uint64_t bk = 0; bk < nbk; bk++) {
        /* rows r0 … r0+3 share their 128-row scale block (checked by the caller) */
        float sc = e8 ? e8m0(w->scale[si0 + bk]) : dsq__ld_f32(w->scale + 4 * (si0 + bk));
        bool one = sc <= 0x1p119f; /* see fp8_rows4 */
        __m512 sv = _mm512_set1_ps(sc), kv = _mm512_set1_ps(256.0f * sc);
        /* the next tile in address order, as fp8_rows4 */
        for (int i = 0; i < 8; i++)
            _mm_prefetch((const char *)(base + 4 * cols + (bk * 8 + (uint64_t)i) * 64), _MM_HINT_T0);
#define FP8_W(v) (one ? _mm512_mul_ps(v, kv) : _mm512_mul_ps(_mm512_mul_ps(v, k256), sv))
        for (uint64_t c = bk * 128; c < bk * 128 + 128; c += 16) {
            __m512 x0 = bcast8(x + c), x1 = bcast8(x + c + 8);
            /* the four rows' 16 codes in the 128-bit lanes of one zmm; a byte unpack against zero
             * makes the words b << 8 of columns c..c+7 (lo) and c+8..c+15 (hi) of every row, so a
             * 256-bit half is a row pair's [A | B] */
            __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(base + c)));
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(base + cols + c)), 1);
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(base + 2 * cols + c)), 2);
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(base + 3 * cols + c)), 3);
            __m512i lo = _mm512_unpacklo_epi8(_mm512_setzero_si512(), z);
            __m512i hi = _mm512_unpackhi_epi8(_mm512_setzero_si512(), z);
            lo = _mm512_and_si512(_mm512_srai_epi16(lo, 1), mbf);
            hi = _mm512_and_si512(_mm512_srai_epi16(hi, 1), mbf);
            a01 = _mm512_fmadd_ps(FP8_W(_mm512_cvtph_ps(_mm512_castsi512_si256(lo))), x0, a01);
            a23 = _mm512_fmadd_ps(FP8_W(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(lo, 1))), x0, a23);
            a01 = _mm512_fmadd_ps(FP8_W(_mm512_cvtph_ps(_mm512_castsi512_si256(hi))), x1, a01);
            a23 = _mm512_fmadd_ps(FP8_W(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(hi, 1))), x1, a23);
        }
#undef FP8_W
    }
    pair_sums(a01, y);
    pair_sums(a23, y + 2);
}

/* FP8 128x128, 4 or 16 rows, one token, with VBMI + GFNI (no float conversion, no scale product per
 * weight).  The scale is moved onto x: xs[c] = x[c]·2^120·s (fp8_prescale, checked exact), and each
 * code b = s.eeee.mmm becomes the f32 whose bits are s·2^31 | eeee·2^23 | mmm·2^20, i.e. the value
 * v·2^-120 (an f32 subnormal when eeee = 0: m·2^-129 = v·2^-120 too).  The product (v·2^-120)·xs is
 * the exact real v·s·x, the same real as the other twins' (v·s)·x (v·s is exact for e ≤ 134), so each
 * FMA rounds the same value into the same 8-lane accumulator in the same column order: the bits of
 * fp8_rows4_avx512 and of the scalar twin.  Two affine bit transforms (gf2p8affineqb) make bytes 2
 * and 3 of those f32s for 64 codes at once; one two-source byte permute per 16 weights places them
 * as [row A c..c+7 | row B c..c+7]. */
enum { FP8_XS_MAX_E = 134 }; /* 2^120·2^(e-127) = 2^(e-7) is finite for e ≤ 134 */

/* GF(2) 8×8 matrices, row of output bit i in byte 7-i: byte 3 of the f32 = s000 0eee (bits 7, 6..4
 * of the code), byte 2 = emmm 0000 (bits 3, 2..0). */
#define FP8_GF_B3 ((0x80ull << 0) | (0x40ull << 40) | (0x20ull << 48) | (0x10ull << 56))
#define FP8_GF_B2 ((0x08ull << 0) | (0x04ull << 8) | (0x02ull << 16) | (0x01ull << 24))

static bool cpu_has_vbmi_gfni(void) {
    static int cached = -1;
    int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (c < 0) {
        __builtin_cpu_init();
        c = dsq__cpu_has_avx512() && __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return c;
}

/* xs = x·2^120·s over the scale row rb of an e8m0 FP8 view (cols a multiple of 128).  False when
 * some product is not exact (a scale byte above FP8_XS_MAX_E, x non-finite, a product that overflows
 * or loses bits in the subnormal range): those rows take fp8_rows4_avx512.  (Powers of two: x·k is
 * exact iff (x·k)·(1/k) == x.) */
__attribute__((target("avx512f"))) static bool fp8_prescale(const dsq_wview *w, uint64_t rb, const float *x,
                                                             float *xs) {
    uint64_t cols = w->shape[1], nbk = cols / 128;
    const uint8_t *sc = w->scale + rb * nbk;
    const __m512 fmax = _mm512_set1_ps(FLT_MAX);
    __mmask16 bad = 0;
    for (uint64_t bk = 0; bk < nbk; bk++) {
        if (sc[bk] > FP8_XS_MAX_E) return false;
        uint32_t ku = (uint32_t)(sc[bk] + 120) << 23, iu = (uint32_t)(134 - sc[bk]) << 23;
        float k, ik; /* 2^(e-7) and 2^(7-e) (a subnormal for e = 134: 2^-127 is 0x00400000) */
        memcpy(&k, &ku, 4);
        if (sc[bk] == 134) iu = 0x00400000u;
        memcpy(&ik, &iu, 4);
        __m512 kv = _mm512_set1_ps(k), ikv = _mm512_set1_ps(ik);
        for (uint64_t c = bk * 128; c < bk * 128 + 128; c += 16) {
            __m512 xv = _mm512_loadu_ps(x + c), v = _mm512_mul_ps(xv, kv);
            _mm512_storeu_ps(xs + c, v);
            /* exact iff scaling back gives x (NaN fails); x = ±inf would pass that, so x must be finite */
            bad |= (__mmask16)~_mm512_cmp_ps_mask(_mm512_mul_ps(v, ikv), xv, _CMP_EQ_OQ);
            bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(xv), fmax, _CMP_GT_OQ);
        }
    }
    return bad == 0;
}

/* NP row pairs (2 rows each) from r0: NP = 8 keeps eight independent FMA chains in flight (each row's
 * accumulator is one serial chain, so two pairs leave the FMA units waiting on its latency). */
__attribute__((target("avx512f,avx512bw,avx512vbmi,gfni"), always_inline)) static inline void
fp8_vbmi_body(const dsq_wview *w, uint64_t r0, const float *xs, float *y, const int NP) {
    uint64_t cols = w->shape[1];
    const uint8_t *p = w->data + r0 * cols;
    const __m512i g3 = _mm512_set1_epi64((long long)FP8_GF_B3), g2 = _mm512_set1_epi64((long long)FP8_GF_B2);
    /* dword j of output k: bytes 2, 3 = byte (8k + j) of B2, B3 for row A (j < 8), byte 32 + 8k + j - 8 for
     * row B; index bit 6 picks B3; bytes 0, 1 zeroed by the mask */
    __m512i ctl[4];
    for (int k = 0; k < 4; k++) {
        uint32_t d[16];
        for (int j = 0; j < 16; j++) {
            uint32_t i = (uint32_t)(j < 8 ? 8 * k + j : 32 + 8 * k + j - 8);
            d[j] = (i << 16) | ((i | 64u) << 24);
        }
        ctl[k] = _mm512_loadu_si512(d);
    }
    const __mmask64 b23 = 0xCCCCCCCCCCCCCCCCull;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int q = 0; q < NP; q++) acc[q] = _mm512_setzero_ps();
    /* 64 columns (one cache line of each row) per step.  The prefetch runs one tile ahead and walks
     * the next tile's bytes in address order (2·NP lines per step, so the whole next tile by the end
     * of this one): one sequential stream instead of 2·NP row streams, measured 1.2-1.6x faster
     * cold than a per-row prefetch PF_BYTES ahead (one and two threads); a prefetch never faults, so the
     * last tile's reaching past the view is harmless. */
    const uint8_t *next = p + (uint64_t)(2 * NP) * cols;
    for (uint64_t c = 0; c < cols; c += 64) {
#pragma GCC unroll 16
        for (int i = 0; i < 2 * NP; i++)
            _mm_prefetch((const char *)(next + (c / 64 * 2 * NP + (uint64_t)i) * 64), _MM_HINT_T0);
        __m512 xv[8];
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) xv[k] = bcast8(xs + c + 8 * k);
#pragma GCC unroll 8
        for (int q = 0; q < NP; q++)
#pragma GCC unroll 2
            for (int hf = 0; hf < 2; hf++) {
                const uint8_t *pa = p + (uint64_t)(2 * q) * cols + c + 32 * (uint64_t)hf;
                __m512i raw = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)pa)),
                                                 _mm256_loadu_si256((const __m256i *)(pa + cols)), 1);
                __m512i h = _mm512_gf2p8affine_epi64_epi8(raw, g3, 0), l = _mm512_gf2p8affine_epi64_epi8(raw, g2, 0);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++)
                    acc[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(b23, l, ctl[k], h)),
                                             xv[4 * hf + k], acc[q]);
            }
    }
#pragma GCC unroll 8
    for (int q = 0; q < NP; q++) pair_sums(acc[q], y + 2 * q);
}

__attribute__((target("avx512f,avx512bw,avx512vbmi,gfni"))) static void fp8_rows4_vbmi(const dsq_wview *w, uint64_t r0,
                                                                                       const float *xs, float *y) {
    fp8_vbmi_body(w, r0, xs, y, 2);
}

__attribute__((target("avx512f,avx512bw,avx512vbmi,gfni"))) static void fp8_rows16_vbmi(const dsq_wview *w, uint64_t r0,
                                                                                        const float *xs, float *y) {
    fp8_vbmi_body(w, r0, xs, y, 8);
}

/* Software prefetch of the eight-row tile after the one at c0 (codes) / s0 (scales), during block b of
 * the current one: the next tile's scales at its first block, one line of each of its rows every four
 * blocks.  A tile's rows are eight short streams (1-2 KB) that the hardware prefetcher barely starts on
 * before they end, so an expert read once per decode step from memory ran at 2/3 of its cached rate.
 * (Past the matrix's end the addresses are only prefetched, never read.) */
__attribute__((always_inline)) static inline void fp4_prefetch_next(const uint8_t *c0, const uint8_t *s0, uint64_t lb, uint64_t nb, uint64_t b) {
    if (b == 0)
        for (uint64_t o = 0; o < 8 * nb; o += 64) _mm_prefetch((const char *)(s0 + 8 * nb + o), _MM_HINT_T0);
    if (b % 4 == 0)
#pragma GCC unroll 8
        for (int r = 8; r < 16; r++) _mm_prefetch((const char *)(c0 + (uint64_t)r * lb + b * 16), _MM_HINT_T0);
}

/* A row pair's 16-byte blocks (row A at pa, row B at pa + lb) as [A | A | B | B] (128-bit lanes). */
__attribute__((target("avx512f"), always_inline)) static inline __m512i fp4_pair_aabb(const uint8_t *pa, uint64_t lb) {
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)pa))),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(pa + lb))), 1);
}

/* The block scales of eight rows (row r at s + r·nb), nbk ≤ 16 blocks, as floats: 16 at a time (a
 * scalar decode per block and row costs a third of an MXFP4 kernel's time), e8m0()'s values. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void
fp4_scales8(const uint8_t *s, uint64_t nb, uint64_t nbk, float sc[8][16]) {
    for (int r = 0; r < 8; r++) {
        const uint8_t *sr = s + (uint64_t)r * nb;
        if (nbk < 16) {
            for (uint64_t i = 0; i < nbk; i++) sc[r][i] = e8m0(sr[i]);
            continue;
        }
        __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)sr));
        __m512i f = _mm512_slli_epi32(e, 23); /* 2^(e-127) for 1 ≤ e ≤ 254, as e8m0() */
        f = _mm512_mask_mov_epi32(f, _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512()),
                                  _mm512_set1_epi32(0x00400000)); /* 2^-127 */
        f = _mm512_mask_mov_epi32(f, _mm512_cmpeq_epi32_mask(e, _mm512_set1_epi32(255)),
                                  _mm512_set1_epi32(0x7fc00000)); /* NaN */
        _mm512_storeu_si512(sc[r], f);
    }
}

/* MXFP4, eight rows × NT tokens (NT ≤ FP4_NT): four row pairs, each decoded once per 32-column block
 * and applied to every token, so the few tokens an expert sees in a prefill cost one decode.  A pair's
 * 16-byte blocks are broadcast as [A | A | B | B] (128-bit lanes); an in-lane byte shuffle puts the byte
 * of column c+j in dword j's low byte, a shift by 0 or 4 brings its nibble to the bottom, and a
 * 16-entry permute maps it to its e2m1 value (code 8, -0, gives +0 as in fp4x32), times the block's
 * power-of-two scale (exact: the same float as 2v·s/2).  One cross-lane permute per 16 weights (the
 * four-row kernel needs two, and that port bounds it).  Each (row, token) keeps its 8-lane accumulator
 * in column order and the same final lane sum: the bits of the scalar twin. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void
fp4_rows8_body(const dsq_wview *w, uint64_t r0, const float *x, size_t ldx, float *y, size_t ldy, const int NT) {
    uint64_t cols = w->shape[1], nb = cols / 32, lb = cols / 2;
    const uint8_t *c0 = w->data + r0 * lb, *s0 = w->scale + r0 * nb;
    const __m512 tab = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, 0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
                                      -3.0f, -4.0f, -6.0f);
    /* dword j of 128-bit lane L (L = 0, 1 row A; 2, 3 row B) holds column 8k + 4(L&1) + j: byte
     * 4k + 2(L&1) + j/2 of the block, nibble j&1 */
    const __m512i sh = _mm512_set4_epi32(4, 0, 4, 0);
#define SEL(byte) ((int)(0x80808000u | (byte))) /* byte `byte` to the dword's low byte, zeros above */
    const __m512i sel0 = _mm512_set_epi32(SEL(3), SEL(3), SEL(2), SEL(2), SEL(1), SEL(1), SEL(0), SEL(0), /* B */
                                          SEL(3), SEL(3), SEL(2), SEL(2), SEL(1), SEL(1), SEL(0), SEL(0)); /* A */
#undef SEL
    const __m512i four = _mm512_set1_epi32(4);
    __m512 acc[4][FP4_NT];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[p][t] = _mm512_setzero_ps();
    float sc[8][16]; /* the eight rows' block scales, 16 blocks at a time */
    for (uint64_t b0 = 0; b0 < nb; b0 += 16) {
        uint64_t nbk = nb - b0 < 16 ? nb - b0 : 16;
        fp4_scales8(s0 + b0, nb, nbk, sc);
        for (uint64_t bb = 0; bb < nbk; bb++) {
            uint64_t b = b0 + bb;
            const float *xb = x + b * 32;
            fp4_prefetch_next(c0, s0, lb, nb, b);
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                const uint8_t *pa = c0 + (uint64_t)(2 * p) * lb + b * 16;
                __m512i q = fp4_pair_aabb(pa, lb);
                __m512 sv = pair_scale(sc[2 * p][bb], sc[2 * p + 1][bb]);
                __m512i sel = sel0;
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++, sel = _mm512_add_epi32(sel, four)) {
                    __m512i nib = _mm512_srlv_epi32(_mm512_shuffle_epi8(q, sel), sh);
                    __m512 wv = _mm512_mul_ps(_mm512_permutexvar_ps(nib, tab), sv);
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++)
                        acc[p][t] = _mm512_fmadd_ps(wv, bcast8(xb + t * ldx + k * 8), acc[p][t]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) pair_sums(acc[p][t], y + (size_t)t * ldy + 2 * p);
}

#define FP4_ROWS8(nt)                                                                                                  \
    __attribute__((target("avx512f,avx512bw"))) static void fp4_rows8_##nt(const dsq_wview *w, uint64_t r0,            \
                                                                           const float *x, size_t ldx, float *y,     \
                                                                           size_t ldy) {                             \
        fp4_rows8_body(w, r0, x, ldx, y, ldy, nt);                                                                     \
    }
FP4_ROWS8(1)
FP4_ROWS8(2)
FP4_ROWS8(3)
FP4_ROWS8(4)
#undef FP4_ROWS8

/* The same eight rows × NT tokens with VBMI: per 16 weights one two-table float permute and (three
 * times in four) a 32-bit shift, no byte shuffle, no nibble shift and no scale product.  Per row pair
 * and block, [A | A | B | B] (A, B the pair's 16-byte blocks) becomes the nibble bytes
 * N = [A lo | A hi | B lo | B hi] (a 64-bit shift by 0 or 4 and a mask; 16 is added to row B's), one
 * vpermb gathers them so that byte k of dword j is the index of row A's column 8k+j (dword 8+j: row B's),
 * and the two tables [e2m1 · s_A] and [e2m1 · s_B] are made (two products per 64 weights, not four).
 * Per 8 columns k, vpermt2ps reads the weights from the 32 table entries by index bits 0-4 of the
 * dwords shifted right by 8k.  tab[n]·s is the float the other kernel makes (code 8, -0, gives +0 as
 * before), applied in the same FMA order: the same bits.  (A vpermb per 8 columns in place of the
 * shift measured 6% slower; the shuffle-and-shift kernel above 15-25% slower.) */
__attribute__((target("avx512f,avx512bw,avx512vbmi"), always_inline)) static inline void
fp4v_rows8_body(const dsq_wview *w, uint64_t r0, const float *x, size_t ldx, float *y, size_t ldy, const int NT) {
    uint64_t cols = w->shape[1], nb = cols / 32, lb = cols / 2;
    const uint8_t *c0 = w->data + r0 * lb, *s0 = w->scale + r0 * nb;
    const __m512 tab = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, 0.0f, -0.5f, -1.0f, -1.5f, -2.0f,
                                      -3.0f, -4.0f, -6.0f);
    const __m512i sh = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
    const __m512i m0f = _mm512_set1_epi8(15);
    const __m512i rb = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi8(16), 1);
    /* byte k of dword j: the index of column 8k + j (j < 8: row A, else row B's column 8k + j - 8), the
     * low nibble of byte c/2 (N[c/2]) when c is even, else the high one (N[16 + c/2]); row B from 32 on */
    uint8_t d[64];
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 16; j++) {
            int c = 8 * k + (j & 7);
            d[4 * j + k] = (uint8_t)((c & 1 ? 16 : 0) + c / 2 + (j >= 8 ? 32 : 0));
        }
    const __m512i ctl = _mm512_loadu_si512(d);
    __m512 acc[4][FP4_NT];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[p][t] = _mm512_setzero_ps();
    float sc[8][16]; /* the eight rows' block scales, 16 blocks at a time */
    for (uint64_t b0 = 0; b0 < nb; b0 += 16) {
        uint64_t nbk = nb - b0 < 16 ? nb - b0 : 16;
        fp4_scales8(s0 + b0, nb, nbk, sc);
        for (uint64_t bb = 0; bb < nbk; bb++) {
            uint64_t b = b0 + bb;
            const float *xb = x + b * 32;
            fp4_prefetch_next(c0, s0, lb, nb, b);
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                const uint8_t *pa = c0 + (uint64_t)(2 * p) * lb + b * 16;
                __m512i q = fp4_pair_aabb(pa, lb);
                /* (q >> sh) & 15 | rb */
                __m512i n = _mm512_ternarylogic_epi32(_mm512_srlv_epi64(q, sh), m0f, rb, 0xEA);
                __m512 ta = _mm512_mul_ps(tab, _mm512_set1_ps(sc[2 * p][bb]));
                __m512 tb = _mm512_mul_ps(tab, _mm512_set1_ps(sc[2 * p + 1][bb]));
                __m512i ix = _mm512_permutexvar_epi8(ctl, n); /* byte k of dword j: see ctl */
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    __m512 wv = _mm512_permutex2var_ps(ta, k ? _mm512_srli_epi32(ix, 8 * k) : ix, tb);
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++)
                        acc[p][t] = _mm512_fmadd_ps(wv, bcast8(xb + t * ldx + k * 8), acc[p][t]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) pair_sums(acc[p][t], y + (size_t)t * ldy + 2 * p);
}

#define FP4V_ROWS8(nt)                                                                                                 \
    __attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void fp4v_rows8_##nt(                                \
        const dsq_wview *w, uint64_t r0, const float *x, size_t ldx, float *y, size_t ldy) {                           \
        fp4v_rows8_body(w, r0, x, ldx, y, ldy, nt);                                                                    \
    }
FP4V_ROWS8(1)
FP4V_ROWS8(2)
FP4V_ROWS8(3)
FP4V_ROWS8(4)
#undef FP4V_ROWS8

static int fp4_vbmi_forbidden; /* dsq__linear_fp4_vbmi */

void dsq__linear_fp4_vbmi(bool allow) { __atomic_store_n(&fp4_vbmi_forbidden, !allow, __ATOMIC_RELAXED); }

static bool fp4_use_vbmi(void) {
    static int cached = -1;
    int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (c < 0) {
        __builtin_cpu_init();
        c = dsq__cpu_has_avx512() && __builtin_cpu_supports("avx512vbmi");
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return c && !__atomic_load_n(&fp4_vbmi_forbidden, __ATOMIC_RELAXED);
}

/* Eight rows, any token count: groups of up to FP4_NT tokens, each group decoding the weights again. */
static void fp4_rows8(const dsq_wview *w, uint64_t r0, const float *x, size_t ldx, int64_t n_tok, float *y, size_t ldy,
                      bool vbmi) {
    for (int64_t t0 = 0; t0 < n_tok; t0 += FP4_NT) {
        int64_t nt = n_tok - t0 < FP4_NT ? n_tok - t0 : FP4_NT;
        const float *xt = x + (size_t)t0 * ldx;
        float *yt = y + (size_t)t0 * ldy;
        if (vbmi) {
            switch (nt) {
            case 1: fp4v_rows8_1(w, r0, xt, ldx, yt, ldy); break;
            case 2: fp4v_rows8_2(w, r0, xt, ldx, yt, ldy); break;
            case 3: fp4v_rows8_3(w, r0, xt, ldx, yt, ldy); break;
            default: fp4v_rows8_4(w, r0, xt, ldx, yt, ldy); break;
            }
            continue;
        }
        switch (nt) {
        case 1: fp4_rows8_1(w, r0, xt, ldx, yt, ldy); break;
        case 2: fp4_rows8_2(w, r0, xt, ldx, yt, ldy); break;
        case 3: fp4_rows8_3(w, r0, xt, ldx, yt, ldy); break;
        default: fp4_rows8_4(w, r0, xt, ldx, yt, ldy); break;
        }
    }
}

/* ---- AVX-512 GEMM for several tokens (prefill) -----------------------------------------------------
 * Rows are dequantized once per block of GEMM_RB rows into a panel in row-pair layout: for pair p and
 * column group g, 16 floats [row 2p cols 8g..8g+7 | row 2p+1 cols 8g..8g+7].  The microkernel runs
 * four pairs (eight rows) × NT tokens with 4·NT zmm accumulators, each holding two (row, token) 8-lane
 * accumulators in column order; x rows are read with a 256-bit broadcast.  Same weights, same per-lane
 * FMA order and the same final lane sum as the scalar twin (tile_scalar): the same bits, for any token
 * count, tiling or thread count. */
enum { GEMM_RB = 16, GEMM_NT = 6 };

__attribute__((target("avx512f"), always_inline)) static inline void gemm8_body(const float *P, const float *x,
                                                                                size_t ldx, size_t groups, float *out,
                                                                                const int NT) {
    __m512 acc[4][GEMM_NT];
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
#pragma GCC unroll 6
        for (int t = 0; t < NT; t++) acc[p][t] = _mm512_setzero_ps();
    const float *P1 = P + 16 * groups, *P2 = P + 32 * groups, *P3 = P + 48 * groups;
    for (size_t g = 0; g < groups; g++) {
        __m512 w0 = _mm512_loadu_ps(P + 16 * g), w1 = _mm512_loadu_ps(P1 + 16 * g);
        __m512 w2 = _mm512_loadu_ps(P2 + 16 * g), w3 = _mm512_loadu_ps(P3 + 16 * g);
#pragma GCC unroll 6
        for (int t = 0; t < NT; t++) {
            __m512 xv = bcast8(x + (size_t)t * ldx + 8 * g);
            acc[0][t] = _mm512_fmadd_ps(w0, xv, acc[0][t]);
            acc[1][t] = _mm512_fmadd_ps(w1, xv, acc[1][t]);
            acc[2][t] = _mm512_fmadd_ps(w2, xv, acc[2][t]);
            acc[3][t] = _mm512_fmadd_ps(w3, xv, acc[3][t]);
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++)
#pragma GCC unroll 6
        for (int t = 0; t < NT; t++) pair_sums(acc[p][t], out + t * 8 + 2 * p);
}

#define GEMM8(nt)                                                                                                      \
    __attribute__((target("avx512f"))) static void gemm8_##nt(const float *P, const float *x, size_t ldx,             \
                                                              size_t groups, float *out) {                             \
        gemm8_body(P, x, ldx, groups, out, nt);                                                                        \
    }
GEMM8(1)
GEMM8(2)
GEMM8(3)
GEMM8(4)
GEMM8(5)
GEMM8(6)
#undef GEMM8

/* out [nt][8]: the eight rows of panel P (groups column groups) against nt ≤ GEMM_NT tokens. */
static void gemm8(const float *P, const float *x, size_t ldx, size_t groups, int nt, float *out) {
    switch (nt) {
    case 1: gemm8_1(P, x, ldx, groups, out); break;
    case 2: gemm8_2(P, x, ldx, groups, out); break;
    case 3: gemm8_3(P, x, ldx, groups, out); break;
    case 4: gemm8_4(P, x, ldx, groups, out); break;
    case 5: gemm8_5(P, x, ldx, groups, out); break;
    default: gemm8_6(P, x, ldx, groups, out); break;
    }
}

/* Rows [r0, r0+n) (n ≤ GEMM_RB) of w into panel P in row-pair layout, rows n … GEMM_RB-1 zero (their
 * outputs are dropped); tmp holds two dequantized rows. */
__attribute__((target("avx512f"))) static void gemm_panel(const dsq_wview *w, uint64_t r0, uint64_t n, bool exact,
                                                          float *tmp, float *P) {
    size_t cols = (size_t)w->shape[1], groups = cols / 8;
    for (uint64_t p = 0; p < GEMM_RB / 2; p++) {
        float *Pp = P + (size_t)p * 16 * groups;
        uint64_t ra = 2 * p, nr = ra >= n ? 0 : n - ra >= 2 ? 2 : 1;
        if (nr == 0) {
            memset(Pp, 0, sizeof(float) * 16 * groups);
            continue;
        }
        if (exact)
            dsq__dequant_rows(w, r0 + ra, nr, tmp);
        else
            dequant_rows_avx2(w, r0 + ra, nr, tmp);
        if (nr == 1) memset(tmp + cols, 0, sizeof(float) * cols);
        for (size_t g = 0; g < groups; g++) {
            _mm256_storeu_ps(Pp + 16 * g, _mm256_loadu_ps(tmp + 8 * g));
            _mm256_storeu_ps(Pp + 16 * g + 8, _mm256_loadu_ps(tmp + cols + 8 * g));
        }
    }
}

/* The GEMM over all rows: OpenMP across blocks of GEMM_RB rows; per block the panel is built once and
 * every token tile runs over it.  Returns false when a thread found no memory for its panel. */
static bool gemm_linear(const dsq__kern *k, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *x,
                        size_t ldx, int64_t n_tok, float *y, size_t ldy, bool exact, int threads) {
    size_t cols = (size_t)w->shape[1], groups = cols / 8;
    int64_t n_blocks = (int64_t)dsq_ceil_div(n_rows, GEMM_RB);
    bool failed = false;
    (void)k;
#pragma omp parallel num_threads(threads)
    {
        float *P = dsq_malloc_aligned(sizeof(float) * (GEMM_RB * cols + 2 * cols));
        if (!P) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for schedule(static)
        for (int64_t bi = 0; bi < n_blocks; bi++) {
            if (!P) continue;
            uint64_t b0 = (uint64_t)bi * GEMM_RB, nb = n_rows - b0 < GEMM_RB ? n_rows - b0 : GEMM_RB;
            gemm_panel(w, row0 + b0, nb, exact, P + GEMM_RB * cols, P);
            for (int64_t t0 = 0; t0 < n_tok; t0 += GEMM_NT) {
                int nt = (int)(n_tok - t0 < GEMM_NT ? n_tok - t0 : GEMM_NT);
                for (uint64_t m = 0; m < nb; m += 8) {
                    float out[GEMM_NT * 8];
                    gemm8(P + (size_t)m * cols, x + (size_t)t0 * ldx, ldx, groups, nt, out);
                    uint64_t mr = nb - m < 8 ? nb - m : 8;
                    for (int t = 0; t < nt; t++)
                        memcpy(y + (size_t)(t0 + t) * ldy + b0 + m, out + t * 8, sizeof(float) * mr);
                }
            }
        }
        dsq_free_aligned(P);
    }
    return !failed;
}

#define FUSED_BODY()                                                                                                   \
    do {                                                                                                               \
        for (uint64_t c = 0; c < cols; c += 8) {                                                                       \
            __m256 xv = _mm256_loadu_ps(x + c);                                                                        \
            a0 = _mm256_fmadd_ps(wvec(&we, r0, c), xv, a0);                                                            \
            a1 = _mm256_fmadd_ps(wvec(&we, r0 + 1, c), xv, a1);                                                        \
            a2 = _mm256_fmadd_ps(wvec(&we, r0 + 2, c), xv, a2);                                                        \
            a3 = _mm256_fmadd_ps(wvec(&we, r0 + 3, c), xv, a3);                                                        \
        }                                                                                                              \
    } while (0)

__attribute__((target("avx2,fma"))) static void fused1_avx2(const dsq_wview *w, uint64_t r0, const float *x, float *y,
                                                            bool avx512) {
    uint64_t cols = w->shape[1];
    if (avx512 && w->enc == DSQ_ENC_MXFP4) {
        fp4_rows4_avx512(w, r0, x, y);
        return;
    }
    if (avx512 && (w->enc == DSQ_ENC_FP8_B128 || w->enc == DSQ_ENC_FP8_B128_F32) && cols % 128 == 0 &&
        r0 / 128 == (r0 + 3) / 128) {
        fp8_rows4_avx512(w, r0, x, y);
        return;
    }
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0; /* ROW_TILE = 4 chains, kept in registers */
    dsq_wview we = *w;
    /* one loop per encoding so wvec's switch folds away */
    switch (w->enc) {
    case DSQ_ENC_F32:
        we.enc = DSQ_ENC_F32;
        FUSED_BODY();
        break;
    case DSQ_ENC_BF16:
        we.enc = DSQ_ENC_BF16;
        FUSED_BODY();
        break;
    case DSQ_ENC_FP8_B128:
    case DSQ_ENC_FP8_B128_F32:
        if (cols % 128 == 0 && r0 / 128 == (r0 + 3) / 128) { /* the four rows share their scale row */
            fp8_rows4(w, r0, x, &a0, &a1, &a2, &a3);
            break;
        }
        we.enc = w->enc;
        if (we.enc == DSQ_ENC_FP8_B128)
            FUSED_BODY();
        else
            FUSED_BODY();
        break;
    default: { /* MXFP4: 32 columns per scale byte */
        uint64_t nb = cols / 32;
        const uint8_t *c0 = w->data + r0 * (cols / 2), *s0 = w->scale + r0 * nb;
#define FP4_ROW(r, acc)                                                                                                \
    do {                                                                                                               \
        __m256 v[4];                                                                                                   \
        fp4x32(c0 + (uint64_t)(r) * (cols / 2) + b * 16, e8m0(s0[(uint64_t)(r)*nb + b]), v);                           \
        acc = _mm256_fmadd_ps(v[0], x0, acc);                                                                          \
        acc = _mm256_fmadd_ps(v[1], x1, acc);                                                                          \
        acc = _mm256_fmadd_ps(v[2], x2, acc);                                                                          \
        acc = _mm256_fmadd_ps(v[3], x3, acc);                                                                          \
    } while (0)
        for (uint64_t b = 0; b < nb; b++) {
            __m256 x0 = _mm256_loadu_ps(x + b * 32), x1 = _mm256_loadu_ps(x + b * 32 + 8);
            __m256 x2 = _mm256_loadu_ps(x + b * 32 + 16), x3 = _mm256_loadu_ps(x + b * 32 + 24);
            FP4_ROW(0, a0);
            FP4_ROW(1, a1);
            FP4_ROW(2, a2);
            FP4_ROW(3, a3);
        }
#undef FP4_ROW
        break;
    }
    }
    __m256 acc[4] = {a0, a1, a2, a3};
    for (int r = 0; r < ROW_TILE; r++) {
        float l[8];
        _mm256_storeu_ps(l, acc[r]);
        y[r] = hsum8(l);
    }
}
#undef FUSED_BODY

/* BF16, eight rows, one token (the output head: 1 GB read per decode token).  Eight row streams in
 * flight and a software prefetch PF_BYTES ahead in each row keep enough cache-line misses
 * outstanding to run at the memory's streaming rate; each row keeps its own 8-lane accumulator in
 * column order and the same final lane sum, so the bits are those of fused1_avx2 and the scalar
 * twin. */
__attribute__((target("avx2,fma"))) static void bf16_rows8(const dsq_wview *w, uint64_t r0, const float *x,
                                                           float *y) {
    uint64_t cols = w->shape[1];
    const uint8_t *p = w->data + 2 * r0 * cols;
    size_t ld = (size_t)(2 * cols);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
#define BF16_LD(r, c) \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + (r)*ld + 2 * (c)))), 16))
#define BF16_STEP(c)                                                                                                   \
    do {                                                                                                               \
        __m256 xv = _mm256_loadu_ps(x + (c));                                                                          \
        a0 = _mm256_fmadd_ps(BF16_LD(0, c), xv, a0);                                                                   \
        a1 = _mm256_fmadd_ps(BF16_LD(1, c), xv, a1);                                                                   \
        a2 = _mm256_fmadd_ps(BF16_LD(2, c), xv, a2);                                                                   \
        a3 = _mm256_fmadd_ps(BF16_LD(3, c), xv, a3);                                                                   \
        a4 = _mm256_fmadd_ps(BF16_LD(4, c), xv, a4);                                                                   \
        a5 = _mm256_fmadd_ps(BF16_LD(5, c), xv, a5);                                                                   \
        a6 = _mm256_fmadd_ps(BF16_LD(6, c), xv, a6);                                                                   \
        a7 = _mm256_fmadd_ps(BF16_LD(7, c), xv, a7);                                                                   \
    } while (0)
    uint64_t c = 0;
    for (; c + 32 <= cols; c += 32) { /* one 64-byte line per row per step */
        /* PF_BYTES ahead in each row; near a row's end, ahead in the same row of the next tile (the
         * tile this thread reads next: the static split keeps its range contiguous), whose first lines
         * would otherwise start cold: 10-17% less CPU per head pass, one and two threads */
        size_t off = 2 * c + PF_BYTES;
        const uint8_t *pf = p + off + (off >= ld ? (BF16_TILE - 1) * ld : 0);
        for (size_t r = 0; r < BF16_TILE; r++) _mm_prefetch((const char *)(pf + r * ld), _MM_HINT_T0);
        BF16_STEP(c);
        BF16_STEP(c + 8);
        BF16_STEP(c + 16);
        BF16_STEP(c + 24);
    }
    for (; c < cols; c += 8) BF16_STEP(c);
#undef BF16_STEP
#undef BF16_LD
    __m256 acc[BF16_TILE] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int r = 0; r < BF16_TILE; r++) {
        float l[8];
        _mm256_storeu_ps(l, acc[r]);
        y[r] = hsum8(l);
    }
}

static bool fusable(const dsq_wview *w) {
    return w->shape[1] % 8 == 0 && (w->enc == DSQ_ENC_F32 || w->enc == DSQ_ENC_BF16 || w->enc == DSQ_ENC_FP8_B128 ||
                                    w->enc == DSQ_ENC_FP8_B128_F32 || w->enc == DSQ_ENC_MXFP4);
}
#endif

float dsq__dot(const dsq__kern *k, const float *a, const float *b, size_t n) {
#ifdef HAVE_X86
    if (k && k->avx2) return dot_avx2(a, b, n);
#endif
    (void)k;
    return dot_scalar(a, b, n);
}

static void tile_scalar(const float *w, size_t ldw, int nr, const float *x, size_t ldx, int nt, size_t n, float *y,
                        size_t ldy) {
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) y[t * ldy + r] = dot_scalar(w + r * ldw, x + t * ldx, n);
}

/* ---- linear ------------------------------------------------------------------------------------ */

static dsq_status linear_tiles(const dsq__kern *k, const dsq_wview *w, uint64_t row0, uint64_t n_rows,
                               const float *x, size_t ldx, int64_t n_tok, float *y, size_t ldy, dsq_err *err) {
    size_t cols = (size_t)w->shape[1];
    double work = (double)n_rows * (double)cols * (double)(n_tok > 0 ? n_tok : 1);
    int nt = work < 65536.0 ? 1 : k->threads;
    /* a view with NaN/Inf let through (allow_nonfinite) is decoded by the exact scalar decoder on
     * every path, so fast and scalar twins give the same bits on it too */
    bool avx2 = k->avx2, failed = false, exact_decode = !avx2 || w->nonfinite;
    bool fused = false;
#ifdef HAVE_X86
    fused = avx2 && n_tok == 1 && fusable(w) && !w->nonfinite;
#endif
    /* rows per scheduling unit: BF16 one-token tiles stream eight rows at once */
    bool bf16 = false;
#ifdef HAVE_X86
    bf16 = fused && w->enc == DSQ_ENC_BF16;
#endif
    bool avx512 = fused && dsq__cpu_has_avx512();
    /* e8m0 FP8, one token: x pre-scaled per 128-row scale block, 16-row tiles (fp8_rows16_vbmi) */
    bool fp8x = false;
#ifdef HAVE_X86
    fp8x = avx512 && w->enc == DSQ_ENC_FP8_B128 && cols % 128 == 0 && cpu_has_vbmi_gfni();
#endif
    int tile_rows = bf16 ? 8 : fp8x ? 16 : ROW_TILE;
    size_t tile_floats = ROW_TILE * (fused && n_rows % ROW_TILE == 0 ? 1 : cols);
    int64_t n_tiles = (int64_t)dsq_ceil_div(n_rows, (uint64_t)tile_rows);
#pragma omp parallel num_threads(nt)
    {
        /* the fused one-token path needs no scratch except for a last partial tile (and xs) */
        float *buf = dsq_malloc_aligned(sizeof(float) * (tile_floats + (fp8x ? cols : 0)));
        float *xs = buf ? buf + tile_floats : NULL;
        uint64_t xs_rb = UINT64_MAX; /* the scale row xs holds */
        bool xs_ok = false;
        (void)xs, (void)xs_rb, (void)xs_ok; /* x86 only */
        if (!buf) {
#pragma omp atomic write
            failed = true;
        }
        /* guided: each thread streams large contiguous runs of tiles first (the next-tile prefetch keeps
         * working), then smaller ones, so a thread the OS preempts for a while (on a 2-vCPU VM, 20-40 ms
         * stalls were seen) leaves its last tiles to the other instead of holding the region */
#pragma omp for schedule(guided)
        for (int64_t tile = 0; tile < n_tiles; tile++) {
            if (!buf) continue;
            uint64_t t0r = (uint64_t)tile * (uint64_t)tile_rows;
            uint64_t t1r = n_rows - t0r < (uint64_t)tile_rows ? n_rows : t0r + (uint64_t)tile_rows;
#ifdef HAVE_X86
            if (bf16 && t1r - t0r == BF16_TILE) {
                bf16_rows8(w, row0 + t0r, x, y + t0r);
                continue;
            }
            uint64_t ta = row0 + t0r;
            if (fp8x && t1r - t0r == 16 && ta / 128 == (ta + 15) / 128) {
                if (ta / 128 != xs_rb) xs_rb = ta / 128, xs_ok = fp8_prescale(w, xs_rb, x, xs);
                if (xs_ok) {
                    fp8_rows16_vbmi(w, ta, xs, y + t0r);
                    continue;
                }
            }
#endif
            for (uint64_t r0 = t0r; r0 < t1r; r0 += ROW_TILE) {
                int nr = (int)(t1r - r0 < ROW_TILE ? t1r - r0 : ROW_TILE);
#ifdef HAVE_X86
                if (avx2 && fused && nr == ROW_TILE) {
                    uint64_t ra = row0 + r0;
                    if (fp8x && ra / 128 == (ra + 3) / 128) {
                        if (ra / 128 != xs_rb) xs_rb = ra / 128, xs_ok = fp8_prescale(w, xs_rb, x, xs);
                        if (xs_ok) {
                            fp8_rows4_vbmi(w, ra, xs, y + r0);
                            continue;
                        }
                    }
                    fused1_avx2(w, row0 + r0, x, y + r0, avx512);
                    continue;
                }
#endif
#ifdef HAVE_X86
                if (!exact_decode)
                    dequant_rows_avx2(w, row0 + r0, (uint64_t)nr, buf);
                else
#endif
                    dsq__dequant_rows(w, row0 + r0, (uint64_t)nr, buf);
                for (int64_t t0 = 0; t0 < n_tok; t0 += TOK_TILE) {
                    int ntk = (int)(n_tok - t0 < TOK_TILE ? n_tok - t0 : TOK_TILE);
                    const float *xt = x + (size_t)t0 * ldx;
                    float *yt = y + (size_t)t0 * ldy + r0;
#ifdef HAVE_X86
                    if (avx2) {
                        tile_avx2(buf, cols, nr, xt, ldx, ntk, cols, yt, ldy);
                        continue;
                    }
#endif
                    tile_scalar(buf, cols, nr, xt, ldx, ntk, cols, yt, ldy);
                }
            }
        }
        dsq_free_aligned(buf);
    }
    if (failed)
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: no memory for a %zu-column dequantization tile", w->name, cols);
    return DSQ_OK;
}

dsq_status dsq__linear(const dsq__kern *k, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *x,
                       size_t ldx, int64_t n_tok, float *y, size_t ldy, dsq_err *err) {
#ifdef HAVE_X86
    /* MXFP4 with a few tokens (decode, an expert's tokens in a prefill): eight-row tiles decoded in
     * registers (AVX-512); the last n_rows % 8 rows go the common way */
    if (k->avx2 && !w->nonfinite && w->enc == DSQ_ENC_MXFP4 && n_tok >= 1 && n_tok <= FP4_FUSED_MAX_TOK &&
        w->shape[1] % 32 == 0 && n_rows >= 8 && dsq__cpu_has_avx512()) {
        int64_t n8 = (int64_t)(n_rows / 8);
        bool vbmi = fp4_use_vbmi();
        double work = (double)n_rows * (double)w->shape[1] * (double)n_tok;
#pragma omp parallel for num_threads(work < 65536.0 ? 1 : k->threads) schedule(guided)
        for (int64_t i = 0; i < n8; i++)
            fp4_rows8(w, row0 + (uint64_t)i * 8, x, ldx, n_tok, y + (size_t)i * 8, ldy, vbmi);
        uint64_t done = (uint64_t)n8 * 8;
        if (done == n_rows) return DSQ_OK;
        return linear_tiles(k, w, row0 + done, n_rows - done, x, ldx, n_tok, y + done, ldy, err);
    }
    /* several tokens: the AVX-512 GEMM over a row-pair panel (column counts that are multiples of 8) */
    if (k->avx2 && n_tok >= 2 && w->shape[1] % 8 == 0 && w->rank == 2 && dsq__cpu_has_avx512()) {
        double work = (double)n_rows * (double)w->shape[1] * (double)n_tok;
        if (!gemm_linear(k, w, row0, n_rows, x, ldx, n_tok, y, ldy, w->nonfinite, work < 65536.0 ? 1 : k->threads))
            return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: no memory for a %llu-column GEMM panel", w->name,
                               (unsigned long long)w->shape[1]);
        return DSQ_OK;
    }
#endif
    return linear_tiles(k, w, row0, n_rows, x, ldx, n_tok, y, ldy, err);
}

void dsq__fp8_linear(const dsq__kern *k, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *q,
                     const float *sa, int64_t n_tok, float *y, size_t ldy) {
    dsq_qtensor qt = dsq__qtensor_of(w);
    dsq_isa isa = k->avx2 && !w->nonfinite ? DSQ_ISA_AUTO : DSQ_ISA_SCALAR;
    enum { CHUNK = 16 };
    int64_t n_chunks = (int64_t)dsq_ceil_div(n_rows, CHUNK);
    double work = (double)n_rows * (double)w->shape[1] * (double)(n_tok > 0 ? n_tok : 1);
#pragma omp parallel for num_threads(work < 65536.0 ? 1 : k->threads) schedule(static)
    for (int64_t c = 0; c < n_chunks; c++) {
        uint64_t r0 = (uint64_t)c * CHUNK, nr = n_rows - r0 < CHUNK ? n_rows - r0 : CHUNK;
        dsq_codec_fp8_linear_rows_isa(&qt, q, sa, (uint64_t)n_tok, row0 + r0, nr, y + r0, ldy, isa);
    }
}
