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

enum { ROW_TILE = 4, TOK_TILE = 2 };

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

/* ROW_TILE rows × TOK_TILE tokens; each (row, token) pair keeps its own lane accumulator. */
__attribute__((target("avx2,fma"))) static void tile_avx2(const float *w, size_t ldw, int nr, const float *x,
                                                          size_t ldx, int nt, size_t n, float *y, size_t ldy) {
    if (nr != ROW_TILE || nt != TOK_TILE) {
        for (int t = 0; t < nt; t++)
            for (int r = 0; r < nr; r++) y[t * ldy + r] = dot_avx2(w + r * ldw, x + t * ldx, n);
        return;
    }
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    const float *w0 = w, *w1 = w + ldw, *w2 = w + 2 * ldw, *w3 = w + 3 * ldw, *x0 = x, *x1 = x + ldx;
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 xv0 = _mm256_loadu_ps(x0 + k), xv1 = _mm256_loadu_ps(x1 + k);
        __m256 wv = _mm256_loadu_ps(w0 + k);
        a00 = _mm256_fmadd_ps(wv, xv0, a00);
        a01 = _mm256_fmadd_ps(wv, xv1, a01);
        wv = _mm256_loadu_ps(w1 + k);
        a10 = _mm256_fmadd_ps(wv, xv0, a10);
        a11 = _mm256_fmadd_ps(wv, xv1, a11);
        wv = _mm256_loadu_ps(w2 + k);
        a20 = _mm256_fmadd_ps(wv, xv0, a20);
        a21 = _mm256_fmadd_ps(wv, xv1, a21);
        wv = _mm256_loadu_ps(w3 + k);
        a30 = _mm256_fmadd_ps(wv, xv0, a30);
        a31 = _mm256_fmadd_ps(wv, xv1, a31);
    }
    __m256 acc[8] = {a00, a01, a10, a11, a20, a21, a30, a31};
    for (int r = 0; r < 4; r++)
        for (int t = 0; t < 2; t++) {
            float l[8];
            _mm256_storeu_ps(l, acc[2 * r + t]);
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
