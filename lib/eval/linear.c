/* Linear layers over weights in their stored encoding: rows are dequantized tile by tile into a
 * per-thread scratch buffer and reduced against every token with an 8-lane FMA dot product.
 * AVX2/FMA twins are chosen at run time; the scalar twins compute the same bits (fmaf per lane,
 * the same final lane sum) so tests can compare them exactly. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "dsq_core.h"
#include "dsq_numeric.h"
#include "v4_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

enum { ROW_TILE = 4, TOK_TILE = 3 };

bool dsq__cpu_has_avx2(void) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

/* ---- dequantization --------------------------------------------------------------------------- */

static void dequant_fp8_b128(const dsq_wview *w, uint64_t r, float *out) {
    uint64_t cols = w->shape[1], nbk = dsq_ceil_div(cols, 128);
    const uint8_t *codes = w->data + r * cols;
    for (uint64_t bk = 0; bk < nbk; bk++) {
        uint64_t si = (r / 128) * nbk + bk;
        float s = w->enc == DSQ_ENC_FP8_B128 ? dsq_e8m0_to_f32(w->scale[si]) : dsq__ld_f32(w->scale + 4 * si);
        uint64_t c1 = (bk + 1) * 128 < cols ? (bk + 1) * 128 : cols;
        for (uint64_t c = bk * 128; c < c1; c++) out[c] = dsq_e4m3_lut[codes[c]] * s;
    }
}

static void dequant_mxfp4(const dsq_wview *w, uint64_t r, float *out) {
    uint64_t cols = w->shape[1], nb = cols / 32;
    const uint8_t *codes = w->data + r * (cols / 2);
    const uint8_t *sc = w->scale + r * nb;
    for (uint64_t b = 0; b < nb; b++) {
        float s = dsq_e8m0_to_f32(sc[b]);
        for (uint64_t j = 0; j < 16; j++) {
            uint8_t byte = codes[b * 16 + j];
            out[b * 32 + 2 * j] = dsq_e2m1_lut[byte & 15] * s;      /* low nibble = even column */
            out[b * 32 + 2 * j + 1] = dsq_e2m1_lut[byte >> 4] * s;
        }
    }
}

#ifdef HAVE_X86
/* AVX2 twins of the row dequantizers: exact conversions, so the same floats as the LUT paths
 * (except NaN codes, which model loading never lets through to the kernels' results). */
__attribute__((target("avx2,fma"))) static void dequant_fp8_b128_avx2(const dsq_wview *w, uint64_t r, float *out) {
    uint64_t cols = w->shape[1], nbk = dsq_ceil_div(cols, 128);
    const uint8_t *codes = w->data + r * cols;
    const __m256 bias = _mm256_set1_ps(0x1p120f);
    const __m256i m7f = _mm256_set1_epi32(0x7f), m80 = _mm256_set1_epi32(0x80);
    for (uint64_t bk = 0; bk < nbk; bk++) {
        uint64_t si = (r / 128) * nbk + bk;
        float s = w->enc == DSQ_ENC_FP8_B128 ? dsq_e8m0_to_f32(w->scale[si]) : dsq__ld_f32(w->scale + 4 * si);
        __m256 sv = _mm256_set1_ps(s);
        uint64_t c = bk * 128, c1 = (bk + 1) * 128 < cols ? (bk + 1) * 128 : cols;
        for (; c + 8 <= c1; c += 8) {
            __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + c)));
            __m256i mag = _mm256_slli_epi32(_mm256_and_si256(b, m7f), 20);
            __m256i sign = _mm256_slli_epi32(_mm256_and_si256(b, m80), 24);
            __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(mag), bias); /* e4m3 → f32, subnormals included */
            f = _mm256_or_ps(f, _mm256_castsi256_ps(sign));
            _mm256_storeu_ps(out + c, _mm256_mul_ps(f, sv));
        }
        for (; c < c1; c++) out[c] = dsq_e4m3_lut[codes[c]] * s;
    }
}

__attribute__((target("avx2,fma"))) static void dequant_mxfp4_avx2(const dsq_wview *w, uint64_t r, float *out) {
    uint64_t cols = w->shape[1], nb = cols / 32;
    const uint8_t *codes = w->data + r * (cols / 2);
    const uint8_t *sc = w->scale + r * nb;
    const __m256 mags = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m128i m15 = _mm_set1_epi32(15);
    const __m256i m8 = _mm256_set1_epi32(8);
    for (uint64_t b = 0; b < nb; b++) {
        __m256 sv = _mm256_set1_ps(dsq_e8m0_to_f32(sc[b]));
        for (int q = 0; q < 4; q++) { /* 4 bytes → 8 values, low nibble first */
            uint32_t four;
            memcpy(&four, codes + b * 16 + (uint64_t)q * 4, 4);
            __m128i v = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)four));
            __m128i lo = _mm_and_si128(v, m15), hi = _mm_srli_epi32(v, 4);
            __m256i idx = _mm256_set_m128i(_mm_unpackhi_epi32(lo, hi), _mm_unpacklo_epi32(lo, hi));
            __m256 f = _mm256_permutevar8x32_ps(mags, idx);
            __m256i sign = _mm256_slli_epi32(_mm256_and_si256(idx, m8), 28);
            f = _mm256_or_ps(f, _mm256_castsi256_ps(sign));
            _mm256_storeu_ps(out + b * 32 + (uint64_t)q * 8, _mm256_mul_ps(f, sv));
        }
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
        case DSQ_ENC_BF16: dequant_bf16_avx2(w->data + 2 * r * cols, cols, o); break;
        case DSQ_ENC_FP8_B128:
        case DSQ_ENC_FP8_B128_F32: dequant_fp8_b128_avx2(w, r, o); break;
        case DSQ_ENC_MXFP4: dequant_mxfp4_avx2(w, r, o); break;
        default: dsq__dequant_rows(w, r, 1, o); break;
        }
    }
}
#endif

void dsq__dequant_rows(const dsq_wview *w, uint64_t row0, uint64_t n, float *out) {
    uint64_t cols = w->shape[1];
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = row0 + i;
        float *o = out + i * cols;
        switch (w->enc) {
        case DSQ_ENC_F32: memcpy(o, w->data + r * cols * 4, cols * 4); break;
        case DSQ_ENC_BF16:
            for (uint64_t c = 0; c < cols; c++) o[c] = dsq_bf16_to_f32(dsq__ld_u16(w->data + 2 * (r * cols + c)));
            break;
        case DSQ_ENC_FP8_B128:
        case DSQ_ENC_FP8_B128_F32: dequant_fp8_b128(w, r, o); break;
        case DSQ_ENC_MXFP4: dequant_mxfp4(w, r, o); break;
        default: memset(o, 0, cols * 4); break; /* rejected at model load */
        }
    }
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

/* ROW_TILE rows × TOK_TILE tokens; each (row, token) pair keeps its own lane accumulator, so the
 * result does not depend on the tiling. */
__attribute__((target("avx2,fma"))) static void tile_avx2(const float *w, size_t ldw, int nr, const float *x,
                                                          size_t ldx, int nt, size_t n, float *y, size_t ldy) {
    if (nr != ROW_TILE || nt != TOK_TILE) {
        for (int t = 0; t < nt; t++)
            for (int r = 0; r < nr; r++) y[t * ldy + r] = dot_avx2(w + r * ldw, x + t * ldx, n);
        return;
    }
    __m256 acc[ROW_TILE][TOK_TILE];
    for (int r = 0; r < ROW_TILE; r++)
        for (int t = 0; t < TOK_TILE; t++) acc[r][t] = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 xv[TOK_TILE];
        for (int t = 0; t < TOK_TILE; t++) xv[t] = _mm256_loadu_ps(x + t * ldx + k);
        for (int r = 0; r < ROW_TILE; r++) {
            __m256 wv = _mm256_loadu_ps(w + r * ldw + k);
            for (int t = 0; t < TOK_TILE; t++) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < ROW_TILE; r++)
        for (int t = 0; t < TOK_TILE; t++) {
            float l[8];
            _mm256_storeu_ps(l, acc[r][t]);
            float s = hsum8(l);
            const float *wr = w + r * ldw, *xt = x + t * ldx;
            for (size_t kk = k; kk < n; kk++) s = fmaf(wr[kk], xt[kk], s);
            y[t * ldy + r] = s;
        }
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

dsq_status dsq__linear(const dsq__kern *k, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *x,
                       size_t ldx, int64_t n_tok, float *y, size_t ldy, dsq_err *err) {
    size_t cols = (size_t)w->shape[1];
    int64_t n_tiles = (int64_t)dsq_ceil_div(n_rows, ROW_TILE);
    double work = (double)n_rows * (double)cols * (double)(n_tok > 0 ? n_tok : 1);
    int nt = work < 65536.0 ? 1 : k->threads;
    bool avx2 = k->avx2, failed = false;
#pragma omp parallel num_threads(nt)
    {
        float *buf = dsq_malloc_aligned(sizeof(float) * ROW_TILE * cols);
        if (!buf) {
#pragma omp atomic write
            failed = true;
        }
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < n_tiles; tile++) {
            if (!buf) continue;
            uint64_t r0 = (uint64_t)tile * ROW_TILE;
            int nr = (int)(n_rows - r0 < ROW_TILE ? n_rows - r0 : ROW_TILE);
#ifdef HAVE_X86
            if (avx2) dequant_rows_avx2(w, row0 + r0, (uint64_t)nr, buf);
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
        dsq_free_aligned(buf);
    }
    if (failed) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: no memory for a %zu-column dequantization tile", w->name, cols);
    return DSQ_OK;
}
