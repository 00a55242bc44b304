/* K-quant decoders (layouts in dsq_kquant.h) and the codec kernels' k-quant spans and dot products.
 * Each value is the float expression of ggml's dequantize_row_*: the sub-block scale is f32(d·sc)
 * (and the min f32(dmin·m)), the element f32(scale·q) (minus the min), with no fused multiply-add
 * (this file is compiled as ISO C, where GCC does not contract). */
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "dsq_kquant.h"

static inline float half_at(const uint8_t *p) {
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    return dsq_f16_to_f32(h);
}

/* 6-bit scale and min j (0..7) of Q4_K/Q5_K's 12 packed bytes (ggml get_scale_min_k4). */
static inline void scale_min_k4(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* 6-bit scale j (0..15) of Q3_K's 12 packed bytes, as stored (0..63; the value is sc − 32). */
static inline int scale_q3(const uint8_t *s, int j) {
    int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return lo | (hi << 4);
}

static void decode_q2k(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *qs = b + 16;
    float d = half_at(b + 80), dmin = half_at(b + 82);
    for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
        int j = e / 16;
        float dl = d * (float)(sc[j] & 15), ml = dmin * (float)(sc[j] >> 4);
        int q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        y[e] = dl * (float)q - ml;
    }
}

static void decode_q3k(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    float d = half_at(b + 108);
    for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
        float dl = d * (float)(scale_q3(sc, e / 16) - 32);
        int lo = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        int q = lo - ((hm[e % 32] >> (e / 32)) & 1 ? 0 : 4);
        y[e] = dl * (float)q;
    }
}

static void decode_q45k(const uint8_t *b, float *y, bool five) {
    float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t *sc = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
    for (int j = 0; j < 8; j++) {
        int s, m;
        scale_min_k4(sc, j, &s, &m);
        float dl = d * (float)s, ml = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            int e = 32 * j + l;
            int q = (qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 15;
            if (five) q += ((qh[l] >> j) & 1) << 4;
            y[e] = dl * (float)q - ml;
        }
    }
}

static void decode_q6k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half_at(b + 208);
    for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
        int n = e / 128, t = (e % 128) / 32, l = e % 32;
        int lo = (ql[64 * n + l + 32 * (t & 1)] >> (4 * (t >> 1))) & 15;
        int hi = (qh[32 * n + l] >> (2 * t)) & 3;
        int q = (lo | (hi << 4)) - 32;
        y[e] = d * (float)sc[e / 16] * (float)q;
    }
}

static const int8_t kv_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void decode_iq4xs(const uint8_t *b, float *y) {
    float d = half_at(b);
    int sh = b[2] | (b[3] << 8);
    for (int j = 0; j < 8; j++) {
        int ls = ((b[4 + j / 2] >> (4 * (j & 1))) & 15) | (((sh >> (2 * j)) & 3) << 4);
        float dl = d * (float)(ls - 32);
        for (int l = 0; l < 32; l++)
            y[32 * j + l] = dl * (float)kv_iq4nl[(b[8 + 16 * j + (l & 15)] >> (4 * (l >> 4))) & 15];
    }
}

void dsq_kquant_decode_block(dsq_encoding enc, const void *blk, float out[DSQ_KQ_BLOCK]) {
    const uint8_t *b = blk;
    switch (enc) {
    case DSQ_ENC_Q2_K:
        decode_q2k(b, out);
        return;
    case DSQ_ENC_Q3_K:
        decode_q3k(b, out);
        return;
    case DSQ_ENC_Q4_K:
        decode_q45k(b, out, false);
        return;
    case DSQ_ENC_Q5_K:
        decode_q45k(b, out, true);
        return;
    case DSQ_ENC_Q6_K:
        decode_q6k(b, out);
        return;
    case DSQ_ENC_IQ4_XS:
        decode_iq4xs(b, out);
        return;
    default:
        memset(out, 0, sizeof(float) * DSQ_KQ_BLOCK);
        return;
    }
}

/* Offsets of the F16 super-scales in a block (for the non-finite scan), -1 where none. */
static void half_offsets(dsq_encoding enc, int *a, int *b) {
    switch (enc) {
    case DSQ_ENC_Q2_K:
        *a = 80, *b = 82;
        return;
    case DSQ_ENC_Q3_K:
        *a = 108, *b = -1;
        return;
    case DSQ_ENC_Q4_K:
    case DSQ_ENC_Q5_K:
        *a = 0, *b = 2;
        return;
    case DSQ_ENC_Q6_K:
        *a = 208, *b = -1;
        return;
    case DSQ_ENC_IQ4_XS:
        *a = 0, *b = -1;
        return;
    default:
        *a = *b = -1;
        return;
    }
}

bool dsq__kq_block_finite(dsq_encoding enc, const uint8_t *blk) {
    int a, b;
    half_offsets(enc, &a, &b);
    if (a >= 0 && ((blk[a] | (blk[a + 1] << 8)) & 0x7c00) == 0x7c00) return false;
    if (b >= 0 && ((blk[b] | (blk[b + 1] << 8)) & 0x7c00) == 0x7c00) return false;
    return true;
}

uint64_t dsq_kquant_find_nonfinite(dsq_encoding enc, const void *p, uint64_t n_bytes) {
    int bb = dsq_kquant_block_bytes(enc);
    if (bb <= 0 || !p) return UINT64_MAX;
    const uint8_t *d = p;
    for (uint64_t b = 0; b < n_bytes / (uint64_t)bb; b++)
        if (!dsq__kq_block_finite(enc, d + b * (uint64_t)bb)) return b;
    return UINT64_MAX;
}

/* ---- codec kernels (dsq__qv views of k-quant tensors) ----------------------------------------- */

void dsq__kq_decode_span(const dsq__qv *v, uint64_t r, uint64_t c0, uint64_t n, float *out) {
    const uint8_t *row = (const uint8_t *)v->t->data + r * v->row_bytes;
    int bb = dsq_kquant_block_bytes(v->t->enc);
    float tmp[DSQ_KQ_BLOCK];
    uint64_t c = c0, end = c0 + n;
    while (c < end) {
        uint64_t blk = c / DSQ_KQ_BLOCK, off = c % DSQ_KQ_BLOCK;
        uint64_t take = DSQ_KQ_BLOCK - off < end - c ? DSQ_KQ_BLOCK - off : end - c;
        if (off == 0 && take == DSQ_KQ_BLOCK) {
            dsq_kquant_decode_block(v->t->enc, row + blk * (uint64_t)bb, out + (c - c0));
        } else {
            dsq_kquant_decode_block(v->t->enc, row + blk * (uint64_t)bb, tmp);
            memcpy(out + (c - c0), tmp + off, take * sizeof(float));
        }
        c += take;
    }
}

/* Σ_c W[r,c]·x[c]: one f32 sum per super-block (eight lanes in column order, the lane sum of the
 * AVX2 twin), super-block sums added in order. */
float dsq__kq_dot_row(const dsq__qv *v, uint64_t r, const float *x) {
    const uint8_t *row = (const uint8_t *)v->t->data + r * v->row_bytes;
    int bb = dsq_kquant_block_bytes(v->t->enc);
    float w[DSQ_KQ_BLOCK], acc = 0;
    for (uint64_t c0 = 0; c0 < v->t->cols; c0 += DSQ_KQ_BLOCK) {
        dsq_kquant_decode_block(v->t->enc, row + (c0 / DSQ_KQ_BLOCK) * (uint64_t)bb, w);
        float l[8] = {0};
        for (int i = 0; i < DSQ_KQ_BLOCK; i += 8)
            for (int k = 0; k < 8; k++) l[k] = fmaf(w[i + k], x[c0 + (uint64_t)i + (uint64_t)k], l[k]);
        acc += ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    }
    return acc;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* The scalar twin with the eight lanes in one register: the same fmaf per lane, the same lane sum. */
__attribute__((target("avx2,fma"))) float dsq__kq_dot_row_avx2(const dsq__qv *v, uint64_t r, const float *x) {
    const uint8_t *row = (const uint8_t *)v->t->data + r * v->row_bytes;
    int bb = dsq_kquant_block_bytes(v->t->enc);
    float w[DSQ_KQ_BLOCK] __attribute__((aligned(32))), acc = 0;
    for (uint64_t c0 = 0; c0 < v->t->cols; c0 += DSQ_KQ_BLOCK) {
        dsq__kq_decode_block_avx2(v->t->enc, row + (c0 / DSQ_KQ_BLOCK) * (uint64_t)bb, w);
        __m256 a = _mm256_setzero_ps();
        for (int i = 0; i < DSQ_KQ_BLOCK; i += 8)
            a = _mm256_fmadd_ps(_mm256_load_ps(w + i), _mm256_loadu_ps(x + c0 + (uint64_t)i), a);
        float l[8];
        _mm256_storeu_ps(l, a);
        acc += ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    }
    return acc;
}
#else
float dsq__kq_dot_row_avx2(const dsq__qv *v, uint64_t r, const float *x) { return dsq__kq_dot_row(v, r, x); }
#endif

/* ---- AVX2 block decoders: the same float expressions (one multiply, one subtract per element, no
 * FMA), sixteen codes at a time ------------------------------------------------------------------- */
#if defined(__x86_64__) || defined(__i386__)
#define KQ_AVX2 __attribute__((target("avx2,fma")))

/* 16 unsigned codes u (one per byte) → (u − off)·dl − ml (asym) or (u − off)·dl. */
KQ_AVX2 static inline void emit16(__m128i u, int off, float dl, float ml, bool asym, float *out) {
    __m256i o = _mm256_set1_epi32(off);
    __m256 vd = _mm256_set1_ps(dl), vm = _mm256_set1_ps(ml);
    __m256 a = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(u), o));
    __m256 b = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(u, 8)), o));
    a = _mm256_mul_ps(a, vd), b = _mm256_mul_ps(b, vd);
    if (asym) a = _mm256_sub_ps(a, vm), b = _mm256_sub_ps(b, vm);
    _mm256_storeu_ps(out, a);
    _mm256_storeu_ps(out + 8, b);
}
KQ_AVX2 static inline __m128i bits16(const uint8_t *p, int shift, int mask) {
    return _mm_and_si128(_mm_srli_epi16(_mm_loadu_si128((const __m128i *)(const void *)p), shift),
                         _mm_set1_epi8((char)mask));
}

KQ_AVX2 void dsq__kq_decode_block_avx2(dsq_encoding enc, const uint8_t *b, float *y) {
    switch (enc) {
    case DSQ_ENC_Q2_K: {
        float d = half_at(b + 80), dmin = half_at(b + 82);
        for (int j = 0; j < 16; j++) {
            const uint8_t *q = b + 16 + 32 * (j / 8) + 16 * (j & 1);
            emit16(bits16(q, 2 * ((j % 8) / 2), 3), 0, d * (float)(b[j] & 15), dmin * (float)(b[j] >> 4), true,
                   y + 16 * j);
        }
        return;
    }
    case DSQ_ENC_Q3_K: {
        float d = half_at(b + 108);
        for (int j = 0; j < 16; j++) {
            int l0 = 16 * (j & 1);
            __m128i lo = bits16(b + 32 + 32 * (j / 8) + l0, 2 * ((j % 8) / 2), 3);
            __m128i hb = bits16(b + l0, j / 2, 1);
            emit16(_mm_or_si128(lo, _mm_slli_epi16(hb, 2)), 4, d * (float)(scale_q3(b + 96, j) - 32), 0, false,
                   y + 16 * j);
        }
        return;
    }
    case DSQ_ENC_Q4_K:
    case DSQ_ENC_Q5_K: {
        bool five = enc == DSQ_ENC_Q5_K;
        float d = half_at(b), dmin = half_at(b + 2);
        const uint8_t *qs = five ? b + 48 : b + 16;
        for (int j = 0; j < 8; j++) {
            int s, m;
            scale_min_k4(b + 4, j, &s, &m);
            float dl = d * (float)s, ml = dmin * (float)m;
            for (int h = 0; h < 2; h++) {
                __m128i u = bits16(qs + 32 * (j / 2) + 16 * h, 4 * (j & 1), 15);
                if (five) u = _mm_or_si128(u, _mm_slli_epi16(bits16(b + 16 + 16 * h, j, 1), 4));
                emit16(u, 0, dl, ml, true, y + 32 * j + 16 * h);
            }
        }
        return;
    }
    case DSQ_ENC_Q6_K: {
        float d = half_at(b + 208);
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int j = 0; j < 16; j++) {
            int n = j / 8, t = (j % 8) / 2, l0 = 16 * (j & 1);
            __m128i lo = bits16(b + 64 * n + l0 + 32 * (t & 1), 4 * (t >> 1), 15);
            __m128i hi = bits16(b + 128 + 32 * n + l0, 2 * t, 3);
            emit16(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), 32, d * (float)sc[j], 0, false, y + 16 * j);
        }
        return;
    }
    default:
        dsq_kquant_decode_block(enc, b, y);
        return;
    }
}
#else
void dsq__kq_decode_block_avx2(dsq_encoding enc, const uint8_t *b, float *y) { dsq_kquant_decode_block(enc, b, y); }
#endif

void dsq_kquant_decode_rows(dsq_encoding enc, const void *data, uint64_t cols, uint64_t row0, uint64_t nrows,
                            float *out, bool avx2) {
    uint64_t bb = (uint64_t)dsq_kquant_block_bytes(enc), nb = cols / DSQ_KQ_BLOCK;
    const uint8_t *p = (const uint8_t *)data + row0 * nb * bb;
    for (uint64_t k = 0; k < nrows * nb; k++) {
        if (avx2)
            dsq__kq_decode_block_avx2(enc, p + k * bb, out + k * DSQ_KQ_BLOCK);
        else
            dsq_kquant_decode_block(enc, p + k * bb, out + k * DSQ_KQ_BLOCK);
    }
}
