/* AVX2/FMA/F16C kernels, compiled with function-level target attributes so the build flags stay
 * baseline x86-64; kernels.c calls them only when dsq_codec_best_isa() says the CPU has them.
 *
 * Decode is bit-identical to the scalar twin (same products, no FMA contraction).  The dot kernels
 * accumulate in 8 lanes and per block, so they differ from the scalar twin by f32 rounding only.
 *
 * Tricks used:
 *  - e4m3 → f32: the byte's 7 magnitude bits shifted left by 7 form an IEEE half of value
 *    e4m3·2^-8 (normals and subnormals alike); F16C converts 8 at once and the block scale absorbs
 *    the 2^8.  NaN codes (0x7F/0xFF) would read as 480, so decode takes them through the scalar path.
 *  - e2m1 / int4 / uint4 → f32: pshufb on a 16-entry int8 table (e2m1 as 2·value), then
 *    sign-extend and convert; the factor 1/2 is applied separately so products match the scalar
 *    code bit for bit. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "codec_internal.h"

#if defined(__x86_64__) || defined(__i386__)

#define AVX2 __attribute__((target("avx2,fma,f16c")))

static const int8_t lut_e2m1x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
static const int8_t lut_int4[16] = {0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1};
static const int8_t lut_uint4[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

AVX2 static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

/* 16 e4m3 bytes → 2×8 floats of value e4m3·2^-8. */
AVX2 static inline void e4m3x16(const uint8_t *p, __m256 *a, __m256 *b) {
    __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p));
    __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x7f)), 7),
                                _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x80)), 8));
    *a = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    *b = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}
AVX2 static inline bool has_e4m3_nan(const uint8_t *p) {
    __m128i b = _mm_and_si128(_mm_loadu_si128((const __m128i *)(const void *)p), _mm_set1_epi8(0x7f));
    return _mm_movemask_epi8(_mm_cmpeq_epi8(b, _mm_set1_epi8(0x7f))) != 0;
}

/* 16 packed bytes (32 nibbles, low nibble first) → 32 int8 table values in element order. */
AVX2 static inline void nib32(const uint8_t *p, __m128i lut, __m128i *e0, __m128i *e1) {
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    *e0 = _mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi));
    *e1 = _mm_shuffle_epi8(lut, _mm_unpackhi_epi8(lo, hi));
}
/* 8 packed bytes → the 16 raw nibbles in element order. */
AVX2 static inline __m128i nib16_raw(const uint8_t *p) {
    __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);
    __m128i m = _mm_set1_epi8(0x0f);
    return _mm_unpacklo_epi8(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
}
/* e2m1 sign (nibble bit 3) of lanes 0-7 / 8-15 of raw nibbles, as f32 sign bits: keeps -0. */
AVX2 static inline __m256 sign_lo(__m128i raw) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu8_epi32(_mm_and_si128(raw, _mm_set1_epi8(8))), 28));
}
AVX2 static inline __m256 sign_hi(__m128i raw) { return sign_lo(_mm_srli_si128(raw, 8)); }
/* 8 packed bytes (16 nibbles) → 16 int8 table values. */
AVX2 static inline __m128i nib16(const uint8_t *p, __m128i lut) {
    __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    return _mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi));
}
/* 8 packed bytes (32 two-bit codes) → 32 uint8 in element order. */
AVX2 static inline void crumb32(const uint8_t *p, __m128i *e0, __m128i *e1) {
    __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);
    __m128i m = _mm_set1_epi8(3);
    __m128i c0 = _mm_and_si128(b, m), c1 = _mm_and_si128(_mm_srli_epi16(b, 2), m);
    __m128i c2 = _mm_and_si128(_mm_srli_epi16(b, 4), m), c3 = _mm_and_si128(_mm_srli_epi16(b, 6), m);
    __m128i p01 = _mm_unpacklo_epi8(c0, c1), p23 = _mm_unpacklo_epi8(c2, c3);
    *e0 = _mm_unpacklo_epi16(p01, p23);
    *e1 = _mm_unpackhi_epi16(p01, p23);
}
/* int8 lanes 0-7 / 8-15 of v → floats. */
AVX2 static inline __m256 i8lo(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }
AVX2 static inline __m256 i8hi(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))); }

/* ---- decode ------------------------------------------------------------------------------------- */

AVX2 void dsq__decode_span_avx2(const dsq__qv *v, uint64_t r, uint64_t c0, uint64_t n, float *out) {
    const uint8_t *row = (const uint8_t *)v->t->data + r * v->row_bytes;
    dsq__kind k = v->info->kind;
    uint64_t end = c0 + n, c = c0;
    switch (k) {
    case DSQ__K_F32: memcpy(out, row + 4 * c0, n * 4); return;
    case DSQ__K_F16:
        for (; c + 8 <= end; c += 8)
            _mm256_storeu_ps(out + (c - c0), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(row + 2 * c))));
        if (c < end) dsq__decode_span_scalar(v, r, c, end - c, out + (c - c0));
        return;
    case DSQ__K_BF16:
        for (; c + 8 <= end; c += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(row + 2 * c)));
            _mm256_storeu_ps(out + (c - c0), _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
        if (c < end) dsq__decode_span_scalar(v, r, c, end - c, out + (c - c0));
        return;
    case DSQ__K_RAW:
    case DSQ__K_KQUANT: dsq__decode_span_scalar(v, r, c0, n, out); return;
    default: break;
    }
    while (c < end) {
        uint64_t bend = (c / v->bcols + 1) * v->bcols;
        if (bend > end) bend = end;
        float s = dsq__scale_at(v, r, c);
        float *o = out + (c - c0);
        switch (k) {
        case DSQ__K_FP8: {
            float s8 = s * 256.0f;
            if (!(s8 - s8 == 0.0f)) break; /* scale too large to fold 2^8 in: scalar below */
            __m256 vs = _mm256_set1_ps(s8);
            for (; c + 16 <= bend; c += 16, o += 16) {
                if (has_e4m3_nan(row + c)) {
                    dsq__decode_span_scalar(v, r, c, 16, o);
                    continue;
                }
                __m256 a, b;
                e4m3x16(row + c, &a, &b);
                _mm256_storeu_ps(o, _mm256_mul_ps(a, vs));
                _mm256_storeu_ps(o + 8, _mm256_mul_ps(b, vs));
            }
            break;
        }
        case DSQ__K_MXFP4:
        case DSQ__K_NVFP4:
        case DSQ__K_INT4:
        case DSQ__K_INT4A: {
            if (c & 1) break;
            __m128i lut = _mm_loadu_si128((const __m128i *)(const void *)(k == DSQ__K_INT4    ? lut_int4
                                                                         : k == DSQ__K_INT4A ? lut_uint4
                                                                                             : lut_e2m1x2));
            bool fp4 = k == DSQ__K_MXFP4 || k == DSQ__K_NVFP4;
            __m256 vs = _mm256_set1_ps(s), half = _mm256_set1_ps(fp4 ? 0.5f : 1.0f);
            __m256 vm = _mm256_set1_ps(k == DSQ__K_INT4A ? dsq__min_at(v, r, c) : 0.0f);
            __m256 sbit = _mm256_set1_ps(-0.0f), ssign = _mm256_and_ps(vs, sbit);
            for (; c + 16 <= bend; c += 16, o += 16) {
                __m128i raw = nib16_raw(row + c / 2), e = _mm_shuffle_epi8(lut, raw);
                __m256 f0 = _mm256_mul_ps(_mm256_mul_ps(i8lo(e), half), vs);
                __m256 f1 = _mm256_mul_ps(_mm256_mul_ps(i8hi(e), half), vs);
                if (k == DSQ__K_INT4A) f0 = _mm256_add_ps(f0, vm), f1 = _mm256_add_ps(f1, vm);
                if (fp4) { /* sign = code sign ^ scale sign, also for ±0 (int8 tables have no -0) */
                    f0 = _mm256_or_ps(_mm256_andnot_ps(sbit, f0), _mm256_xor_ps(sign_lo(raw), ssign));
                    f1 = _mm256_or_ps(_mm256_andnot_ps(sbit, f1), _mm256_xor_ps(sign_hi(raw), ssign));
                }
                _mm256_storeu_ps(o, f0);
                _mm256_storeu_ps(o + 8, f1);
            }
            break;
        }
        case DSQ__K_INT8: {
            __m256 vs = _mm256_set1_ps(s);
            for (; c + 8 <= bend; c += 8, o += 8)
                _mm256_storeu_ps(o, _mm256_mul_ps(i8lo(_mm_loadl_epi64((const __m128i *)(const void *)(row + c))), vs));
            break;
        }
        case DSQ__K_INT2A: {
            if (c & 3) break;
            __m256 vs = _mm256_set1_ps(s), vm = _mm256_set1_ps(dsq__min_at(v, r, c));
            for (; c + 32 <= bend; c += 32, o += 32) {
                __m128i e0, e1;
                crumb32(row + c / 4, &e0, &e1);
                __m256 f[4] = {i8lo(e0), i8hi(e0), i8lo(e1), i8hi(e1)};
                for (int q = 0; q < 4; q++) _mm256_storeu_ps(o + 8 * q, _mm256_add_ps(_mm256_mul_ps(f[q], vs), vm));
            }
            break;
        }
        default: break;
        }
        if (c < bend) {
            dsq__decode_span_scalar(v, r, c, bend - c, out + (c - c0));
            c = bend;
        }
    }
}

/* ---- dot products ----------------------------------------------------------------------------- */

AVX2 float dsq__dot_f32_avx2(const float *a, const float *b, uint64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float acc = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) acc += a[i] * b[i];
    return acc;
}

/* Scalar tail of a block: Σ code·x over [c, end) using the scalar decoder (one element at a time). */
static float tail_dot(const dsq__qv *v, uint64_t r, uint64_t c, uint64_t end, const float *x, float *sum_x) {
    float buf[32], acc = 0, sx = 0;
    while (c < end) {
        uint64_t n = end - c < 32 ? end - c : 32;
        dsq__decode_span_scalar(v, r, c, n, buf);
        for (uint64_t i = 0; i < n; i++) acc += buf[i] * x[c + i], sx += x[c + i];
        c += n;
    }
    if (sum_x) *sum_x = sx;
    return acc;
}

AVX2 float dsq__dot_row_avx2(const dsq__qv *v, uint64_t r, const float *x) {
    const uint8_t *row = (const uint8_t *)v->t->data + r * v->row_bytes;
    uint64_t cols = v->t->cols, c = 0;
    dsq__kind k = v->info->kind;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float tail = 0;
    switch (k) {
    case DSQ__K_F32: return dsq__dot_f32_avx2((const float *)(const void *)row, x, cols);
    case DSQ__K_F16:
        for (; c + 16 <= cols; c += 16) {
            __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(row + 2 * c)));
            __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(row + 2 * c + 16)));
            acc0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + c), acc0);
            acc1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + c + 8), acc1);
        }
        for (; c < cols; c++) {
            uint16_t h;
            memcpy(&h, row + 2 * c, 2);
            tail += dsq_f16_to_f32(h) * x[c];
        }
        return hsum(_mm256_add_ps(acc0, acc1)) + tail;
    case DSQ__K_BF16:
        for (; c + 16 <= cols; c += 16) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(const void *)(row + 2 * c));
            __m256 a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(w)), 16));
            __m256 b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(w, 1)), 16));
            acc0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + c), acc0);
            acc1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + c + 8), acc1);
        }
        for (; c < cols; c++) {
            uint16_t h;
            memcpy(&h, row + 2 * c, 2);
            tail += dsq_bf16_to_f32(h) * x[c];
        }
        return hsum(_mm256_add_ps(acc0, acc1)) + tail;
    case DSQ__K_RAW: return 0.0f;
    case DSQ__K_KQUANT: return dsq__kq_dot_row_avx2(v, r, x);
    default: break;
    }
    bool fp4 = k == DSQ__K_MXFP4 || k == DSQ__K_NVFP4;
    __m128i lut = _mm_loadu_si128((const __m128i *)(const void *)(k == DSQ__K_INT4    ? lut_int4
                                                                 : k == DSQ__K_INT4A ? lut_uint4
                                                                                     : lut_e2m1x2));
    for (uint64_t c0 = 0; c0 < cols; c0 += v->bcols) {
        uint64_t bend = c0 + v->bcols < cols ? c0 + v->bcols : cols;
        float s = dsq__scale_at(v, r, c0);
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(); /* Σ code·x */
        __m256 x0 = _mm256_setzero_ps(), x1 = _mm256_setzero_ps(); /* Σ x (asymmetric kinds) */
        float mul = s;  /* what the block sum of (vector code values)·x is multiplied by */
        c = c0;
        switch (k) {
        case DSQ__K_FP8:
            mul = s * 256.0f;
            for (; c + 16 <= bend; c += 16) {
                __m256 a, b;
                e4m3x16(row + c, &a, &b);
                if (has_e4m3_nan(row + c)) a = _mm256_set1_ps(NAN); /* NaN codes read as 480: the scalar twin's NaN */
                b0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(x + c), b0);
                b1 = _mm256_fmadd_ps(b, _mm256_loadu_ps(x + c + 8), b1);
            }
            break;
        case DSQ__K_MXFP4:
        case DSQ__K_NVFP4:
        case DSQ__K_INT4:
        case DSQ__K_INT4A:
            if (fp4) mul = s * 0.5f;
            for (; c + 32 <= bend; c += 32) {
                __m128i e0, e1;
                nib32(row + c / 2, lut, &e0, &e1);
                __m256 xa = _mm256_loadu_ps(x + c), xb = _mm256_loadu_ps(x + c + 8);
                __m256 xc = _mm256_loadu_ps(x + c + 16), xd = _mm256_loadu_ps(x + c + 24);
                b0 = _mm256_fmadd_ps(i8lo(e0), xa, b0);
                b1 = _mm256_fmadd_ps(i8hi(e0), xb, b1);
                b0 = _mm256_fmadd_ps(i8lo(e1), xc, b0);
                b1 = _mm256_fmadd_ps(i8hi(e1), xd, b1);
                if (k == DSQ__K_INT4A) x0 = _mm256_add_ps(x0, _mm256_add_ps(xa, xc)), x1 = _mm256_add_ps(x1, _mm256_add_ps(xb, xd));
            }
            for (; c + 16 <= bend; c += 16) {
                __m128i e = nib16(row + c / 2, lut);
                __m256 xa = _mm256_loadu_ps(x + c), xb = _mm256_loadu_ps(x + c + 8);
                b0 = _mm256_fmadd_ps(i8lo(e), xa, b0);
                b1 = _mm256_fmadd_ps(i8hi(e), xb, b1);
                if (k == DSQ__K_INT4A) x0 = _mm256_add_ps(x0, xa), x1 = _mm256_add_ps(x1, xb);
            }
            break;
        case DSQ__K_INT8:
            for (; c + 16 <= bend; c += 16) {
                __m128i e = _mm_loadu_si128((const __m128i *)(const void *)(row + c));
                b0 = _mm256_fmadd_ps(i8lo(e), _mm256_loadu_ps(x + c), b0);
                b1 = _mm256_fmadd_ps(i8hi(e), _mm256_loadu_ps(x + c + 8), b1);
            }
            break;
        case DSQ__K_INT2A:
            for (; c + 32 <= bend; c += 32) {
                __m128i e0, e1;
                crumb32(row + c / 4, &e0, &e1);
                __m256 xa = _mm256_loadu_ps(x + c), xb = _mm256_loadu_ps(x + c + 8);
                __m256 xc = _mm256_loadu_ps(x + c + 16), xd = _mm256_loadu_ps(x + c + 24);
                b0 = _mm256_fmadd_ps(i8lo(e0), xa, b0);
                b1 = _mm256_fmadd_ps(i8hi(e0), xb, b1);
                b0 = _mm256_fmadd_ps(i8lo(e1), xc, b0);
                b1 = _mm256_fmadd_ps(i8hi(e1), xd, b1);
                x0 = _mm256_add_ps(x0, _mm256_add_ps(xa, xc)), x1 = _mm256_add_ps(x1, _mm256_add_ps(xb, xd));
            }
            break;
        default: break;
        }
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(mul), _mm256_add_ps(b0, b1), acc0);
        if (v->info->mins) acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dsq__min_at(v, r, c0)), _mm256_add_ps(x0, x1), acc1);
        if (c < bend) {
            /* scalar remainder of this block: decoded values already include scale (and min) */
            tail += tail_dot(v, r, c, bend, x, NULL);
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1)) + tail;
}

/* ---- integer scale search, eight groups at once (lane j = group j; see encode_int.c) ------------- */

AVX2 static inline __m256 f16r8(__m256 v) {
    v = _mm256_max_ps(_mm256_set1_ps(-65504.0f), _mm256_min_ps(_mm256_set1_ps(65504.0f), v)); /* NaN passes */
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
AVX2 void dsq__f16r8_avx2(const float in[8], float out[8]) { _mm256_storeu_ps(out, f16r8(_mm256_loadu_ps(in))); }

typedef struct gsum8 {
    __m256 err, sxq, sqq, sq, sx;
} gsum8;

/* Error and least-squares sums of one candidate (s, m) in each lane (geval8x4: errors only). */
AVX2 static inline gsum8 geval8(const float *xt, int n, __m256 s, __m256 m, __m256 qmin, __m256 qmax, bool asym) {
    __m256 inv = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), s), _mm256_cmp_ps(s, _mm256_setzero_ps(), _CMP_GT_OQ));
    gsum8 g = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int i = 0; i < n; i++) {
        __m256 xv = _mm256_load_ps(xt + 8 * i);
        __m256 t = asym ? _mm256_mul_ps(_mm256_sub_ps(xv, m), inv) : _mm256_mul_ps(xv, inv);
        t = _mm256_min_ps(_mm256_max_ps(t, qmin), qmax);
        __m256 q = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 d = asym ? _mm256_sub_ps(xv, _mm256_fmadd_ps(q, s, m)) : _mm256_fnmadd_ps(q, s, xv);
        g.err = _mm256_fmadd_ps(d, d, g.err);
        g.sxq = _mm256_fmadd_ps(xv, q, g.sxq);
        g.sqq = _mm256_fmadd_ps(q, q, g.sqq);
        g.sq = _mm256_add_ps(g.sq, q);
        g.sx = _mm256_add_ps(g.sx, xv);
    }
    return g;
}

/* Errors of four candidates (s_c, m_c) at once: four independent accumulation chains per pass over
 * the data; each chain is exactly geval8's error. */
AVX2 static inline void geval8x4(const float *xt, int n, const __m256 s[4], const __m256 m[4], __m256 qmin,
                                 __m256 qmax, bool asym, __m256 err[4]) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    __m256 s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3], m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3];
    __m256 i0 = _mm256_and_ps(_mm256_div_ps(one, s0), _mm256_cmp_ps(s0, zero, _CMP_GT_OQ));
    __m256 i1 = _mm256_and_ps(_mm256_div_ps(one, s1), _mm256_cmp_ps(s1, zero, _CMP_GT_OQ));
    __m256 i2 = _mm256_and_ps(_mm256_div_ps(one, s2), _mm256_cmp_ps(s2, zero, _CMP_GT_OQ));
    __m256 i3 = _mm256_and_ps(_mm256_div_ps(one, s3), _mm256_cmp_ps(s3, zero, _CMP_GT_OQ));
    __m256 e0 = zero, e1 = zero, e2 = zero, e3 = zero;
    for (int i = 0; i < n; i++) {
        __m256 xv = _mm256_load_ps(xt + 8 * i);
#define ONE(S, M, I, E)                                                                                                \
    do {                                                                                                               \
        __m256 t = asym ? _mm256_mul_ps(_mm256_sub_ps(xv, M), I) : _mm256_mul_ps(xv, I);                               \
        t = _mm256_min_ps(_mm256_max_ps(t, qmin), qmax);                                                               \
        __m256 q = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                                  \
        __m256 d = asym ? _mm256_sub_ps(xv, _mm256_fmadd_ps(q, S, M)) : _mm256_fnmadd_ps(q, S, xv);                    \
        E = _mm256_fmadd_ps(d, d, E);                                                                                  \
    } while (0)
        ONE(s0, m0, i0, e0);
        ONE(s1, m1, i1, e1);
        ONE(s2, m2, i2, e2);
        ONE(s3, m3, i3, e3);
#undef ONE
    }
    err[0] = e0, err[1] = e1, err[2] = e2, err[3] = e3;
}

AVX2 static inline __m256 blend(__m256 a, __m256 b, __m256 mask) { return _mm256_blendv_ps(a, b, mask); }
AVX2 static inline gsum8 blend_sum(gsum8 a, gsum8 b, __m256 mask) {
    return (gsum8){blend(a.err, b.err, mask), blend(a.sxq, b.sxq, mask), blend(a.sqq, b.sqq, mask),
                   blend(a.sq, b.sq, mask), blend(a.sx, b.sx, mask)};
}
/* (float)((double)a / (double)b) in each lane */
AVX2 static inline __m256 div_d(__m256 a, __m256 b) {
    __m256d lo = _mm256_div_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_castps256_ps128(b)));
    __m256d hi = _mm256_div_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
    return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

AVX2 static void search8_sym(const float *xt, int n, const dsq__int_spec *sp, __m256 lo, __m256 hi, float *s_out) {
    const __m256 zero = _mm256_setzero_ps(), tiny = _mm256_set1_ps(0x1p-24f);
    const __m256 qmin = _mm256_set1_ps((float)sp->qmin), qmax = _mm256_set1_ps((float)sp->qmax);
    __m256 nlo = _mm256_xor_ps(lo, _mm256_set1_ps(-0.0f)), amax = _mm256_max_ps(hi, nlo);
    __m256 neg = -sp->qmin > sp->qmax ? _mm256_cmp_ps(nlo, amax, _CMP_EQ_OQ) : zero;
    __m256 base = _mm256_div_ps(amax, qmax), best_s = zero, best_e = zero;
    int nk = _mm256_movemask_ps(neg) ? DSQ__INT_FACTORS + 1 : DSQ__INT_FACTORS;
    __m256 cs[12], cm[12] = {zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero}, ce[12];
    for (int k = 0; k < 12; k++) {
        int kk = k < nk ? k : nk - 1; /* padding: repeats the last candidate, never taken */
        __m256 s = f16r8(kk < DSQ__INT_FACTORS ? _mm256_mul_ps(base, _mm256_set1_ps(dsq__int_factors[kk]))
                                               : _mm256_div_ps(amax, _mm256_set1_ps((float)-sp->qmin)));
        cs[k] = blend(s, tiny, _mm256_cmp_ps(s, zero, _CMP_EQ_OQ));
    }
    for (int k = 0; k < nk; k += 4) geval8x4(xt, n, cs + k, cm + k, qmin, qmax, false, ce + k);
    for (int k = 0; k < nk; k++) {
        if (k == 0) {
            best_e = ce[0], best_s = cs[0];
            continue;
        }
        __m256 take = _mm256_cmp_ps(ce[k], best_e, _CMP_LT_OQ);
        if (k == DSQ__INT_FACTORS) take = _mm256_and_ps(take, neg);
        best_e = blend(best_e, ce[k], take), best_s = blend(best_s, cs[k], take);
    }
    gsum8 best = geval8(xt, n, best_s, zero, qmin, qmax, false);
    __m256 live = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int it = 0; it < 2; it++) {
        live = _mm256_and_ps(live, _mm256_cmp_ps(best.sqq, zero, _CMP_GT_OQ));
        __m256 s = f16r8(div_d(best.sxq, best.sqq));
        live = _mm256_and_ps(live, _mm256_cmp_ps(s, zero, _CMP_GT_OQ));
        live = _mm256_and_ps(live, _mm256_cmp_ps(s, best_s, _CMP_NEQ_UQ));
        if (_mm256_movemask_ps(live) == 0) break;
        gsum8 g = geval8(xt, n, s, zero, qmin, qmax, false);
        live = _mm256_and_ps(live, _mm256_cmp_ps(g.err, best_e, _CMP_LT_OQ));
        best_e = blend(best_e, g.err, live), best_s = blend(best_s, s, live), best = blend_sum(best, g, live);
    }
    best_s = _mm256_andnot_ps(_mm256_cmp_ps(amax, zero, _CMP_EQ_OQ), best_s); /* all-zero group: scale 0 */
    _mm256_storeu_ps(s_out, best_s);
}

AVX2 static void search8_asym(const float *xt, int n, const dsq__int_spec *sp, __m256 lo, __m256 hi, float *s_out,
                              float *m_out) {
    const __m256 zero = _mm256_setzero_ps(), tiny = _mm256_set1_ps(0x1p-24f), half_c = _mm256_set1_ps(0.5f);
    const __m256 qmin = _mm256_set1_ps((float)sp->qmin), qmax = _mm256_set1_ps((float)sp->qmax);
    __m256 best_s = zero, best_m = zero, best_e = zero;
    __m256 mid = _mm256_mul_ps(half_c, _mm256_add_ps(lo, hi)), range = _mm256_sub_ps(hi, lo);
    __m256 half0 = _mm256_mul_ps(half_c, range);
    __m256 cs[12], cm[12], ce[12];
    for (int k = 0; k < 12; k++) {
        int kk = k < DSQ__INT_FACTORS ? k : DSQ__INT_FACTORS - 1; /* padding, never taken */
        float f = dsq__int_factors[kk] > 1.0f ? 1.0f : dsq__int_factors[kk];
        __m256 half = _mm256_mul_ps(half0, _mm256_set1_ps(f));
        cm[k] = f16r8(kk == 0 ? lo : _mm256_sub_ps(mid, half));
        __m256 s = f16r8(_mm256_div_ps(kk == 0 ? range : _mm256_mul_ps(_mm256_set1_ps(2.0f), half), qmax));
        cs[k] = blend(s, tiny, _mm256_cmp_ps(s, zero, _CMP_EQ_OQ));
    }
    for (int k = 0; k < DSQ__INT_FACTORS; k += 4) geval8x4(xt, n, cs + k, cm + k, qmin, qmax, true, ce + k);
    for (int k = 0; k < DSQ__INT_FACTORS; k++) {
        if (k == 0) {
            best_e = ce[0], best_s = cs[0], best_m = cm[0];
            continue;
        }
        __m256 take = _mm256_cmp_ps(ce[k], best_e, _CMP_LT_OQ);
        best_e = blend(best_e, ce[k], take), best_s = blend(best_s, cs[k], take), best_m = blend(best_m, cm[k], take);
    }
    gsum8 best = geval8(xt, n, best_s, best_m, qmin, qmax, true);
    __m256 live = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    const __m256d N = _mm256_set1_pd((double)n), dz = _mm256_setzero_pd();
    for (int it = 0; it < 2; it++) {
        __m256 s16v, m16v;
        __m256d sv[2], mv[2];
        __m256 ok = zero;
        for (int h = 0; h < 2; h++) { /* lanes 0-3, then 4-7, in double */
#define HALF(v) _mm256_cvtps_pd(h ? _mm256_extractf128_ps(v, 1) : _mm256_castps256_ps128(v))
            __m256d sq = HALF(best.sq), sqq = HALF(best.sqq), sx = HALF(best.sx), sxq = HALF(best.sxq);
#undef HALF
            __m256d det = _mm256_sub_pd(_mm256_mul_pd(N, sqq), _mm256_mul_pd(sq, sq));
            __m256d s = _mm256_div_pd(_mm256_sub_pd(_mm256_mul_pd(N, sxq), _mm256_mul_pd(sq, sx)), det);
            __m256d m = _mm256_div_pd(_mm256_sub_pd(sx, _mm256_mul_pd(s, sq)), N);
            __m256d good = _mm256_and_pd(_mm256_cmp_pd(det, dz, _CMP_GT_OQ), _mm256_cmp_pd(s, dz, _CMP_GT_OQ));
            __m128 g4 = _mm256_cvtpd_ps(_mm256_and_pd(good, _mm256_set1_pd(1.0)));
            ok = h ? _mm256_insertf128_ps(ok, g4, 1) : _mm256_castps128_ps256(g4);
            sv[h] = s, mv[h] = m;
        }
        s16v = f16r8(_mm256_set_m128(_mm256_cvtpd_ps(sv[1]), _mm256_cvtpd_ps(sv[0])));
        m16v = f16r8(_mm256_set_m128(_mm256_cvtpd_ps(mv[1]), _mm256_cvtpd_ps(mv[0])));
        live = _mm256_and_ps(live, _mm256_cmp_ps(ok, zero, _CMP_NEQ_OQ));
        __m256 same = _mm256_and_ps(_mm256_cmp_ps(s16v, best_s, _CMP_EQ_OQ), _mm256_cmp_ps(m16v, best_m, _CMP_EQ_OQ));
        live = _mm256_andnot_ps(_mm256_or_ps(_mm256_cmp_ps(s16v, zero, _CMP_EQ_OQ), same), live);
        if (_mm256_movemask_ps(live) == 0) break;
        gsum8 g = geval8(xt, n, s16v, m16v, qmin, qmax, true);
        live = _mm256_and_ps(live, _mm256_cmp_ps(g.err, best_e, _CMP_LT_OQ));
        best_e = blend(best_e, g.err, live), best_s = blend(best_s, s16v, live), best_m = blend(best_m, m16v, live);
        best = blend_sum(best, g, live);
    }
    /* constant groups need no scale (min = the value; +0 for a group of zeros, whatever their signs) */
    __m256 cst = _mm256_cmp_ps(hi, lo, _CMP_EQ_OQ);
    __m256 zeros = _mm256_and_ps(_mm256_cmp_ps(lo, zero, _CMP_EQ_OQ), _mm256_cmp_ps(hi, zero, _CMP_EQ_OQ));
    best_s = _mm256_andnot_ps(cst, best_s);
    best_m = _mm256_andnot_ps(zeros, blend(best_m, f16r8(lo), cst));
    _mm256_storeu_ps(s_out, best_s);
    _mm256_storeu_ps(m_out, best_m);
}

AVX2 void dsq__int_search8_avx2(const float *xt, int n, const dsq__int_spec *sp, float s[8], float m[8]) {
    __m256 lo = _mm256_load_ps(xt), hi = lo;
    for (int i = 1; i < n; i++) {
        __m256 v = _mm256_load_ps(xt + 8 * i);
        lo = _mm256_min_ps(v, lo), hi = _mm256_max_ps(v, hi);
    }
    if (sp->asym) {
        search8_asym(xt, n, sp, lo, hi, s, m);
        return;
    }
    search8_sym(xt, n, sp, lo, hi, s);
    _mm256_storeu_ps(m, _mm256_setzero_ps());
}

AVX2 void dsq__transpose8_avx2(const float *const p[8], int n, float *xt) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r0 = _mm256_loadu_ps(p[0] + i), r1 = _mm256_loadu_ps(p[1] + i), r2 = _mm256_loadu_ps(p[2] + i);
        __m256 r3 = _mm256_loadu_ps(p[3] + i), r4 = _mm256_loadu_ps(p[4] + i), r5 = _mm256_loadu_ps(p[5] + i);
        __m256 r6 = _mm256_loadu_ps(p[6] + i), r7 = _mm256_loadu_ps(p[7] + i);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float *o = xt + 8 * i;
        _mm256_store_ps(o + 0, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_store_ps(o + 8, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_store_ps(o + 16, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_store_ps(o + 24, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_store_ps(o + 32, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_store_ps(o + 40, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_store_ps(o + 48, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_store_ps(o + 56, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; i < n; i++)
        for (int j = 0; j < 8; j++) xt[8 * i + j] = p[j][i];
}

AVX2 void dsq__int_group_codes_avx2(const float *x, int n, const dsq__grp_param *p, int8_t *q) {
    __m256 inv = _mm256_set1_ps(p->inv), m = _mm256_set1_ps(p->m);
    __m256 lo = _mm256_set1_ps(p->qmin), hi = _mm256_set1_ps(p->qmax), magic = _mm256_set1_ps(0x1.8p23f);
    for (int i = 0; i < n; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256 t = p->asym ? _mm256_mul_ps(_mm256_sub_ps(xv, m), inv) : _mm256_mul_ps(xv, inv);
        t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
        __m256i qi = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(t, magic), magic)); /* exact integers */
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
        _mm_storel_epi64((__m128i *)(void *)(q + i), _mm_packs_epi16(w, w));
    }
}

/* Low nibbles of n (multiple of 16) int8 codes, two per byte, low nibble first. */
AVX2 void dsq__pack_nibbles_avx2(const int8_t *q, int n, uint8_t *out) {
    const __m128i m = _mm_set1_epi16(0x0f0f), lo8 = _mm_set1_epi16(0x00ff);
    for (int i = 0; i < n; i += 32) {
        __m128i a = _mm_and_si128(_mm_loadu_si128((const __m128i *)(const void *)(q + i)), m);
        a = _mm_and_si128(_mm_or_si128(a, _mm_srli_epi16(a, 4)), lo8); /* byte pair → one byte */
        __m128i b = a;
        if (i + 16 < n) {
            b = _mm_and_si128(_mm_loadu_si128((const __m128i *)(const void *)(q + i + 16)), m);
            b = _mm_and_si128(_mm_or_si128(b, _mm_srli_epi16(b, 4)), lo8);
        }
        __m128i r = _mm_packus_epi16(a, b);
        if (i + 16 < n) _mm_storeu_si128((__m128i *)(void *)(out + i / 2), r);
        else _mm_storel_epi64((__m128i *)(void *)(out + i / 2), r);
    }
}

/* Whether all n values are finite. */
AVX2 bool dsq__all_finite_avx2(const float *x, uint64_t n) {
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    uint64_t i = 0;
    while (i + 8 <= n) {
        __m256i bad = _mm256_setzero_si256();
        uint64_t end = n - i > 4096 ? i + 4096 : n;
        for (; i + 8 <= end; i += 8) {
            __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)), e);
            bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(v, e));
        }
        if (!_mm256_testz_si256(bad, bad)) return false;
    }
    for (; i < n; i++)
        if (!dsq__finite(x[i])) return false;
    return true;
}

/* 32 bytes of elements of kind k → non-zero lanes where an element is NaN/Inf. */
AVX2 static inline __m256i nf_mask(dsq_nf_kind k, __m256i v) {
    switch (k) {
    case DSQ_NF_E4M3: {
        const __m256i m = _mm256_set1_epi8(0x7f);
        return _mm256_cmpeq_epi8(_mm256_and_si256(v, m), m);
    }
    case DSQ_NF_E8M0: return _mm256_cmpeq_epi8(v, _mm256_set1_epi8((char)0xff));
    case DSQ_NF_F16: {
        const __m256i m = _mm256_set1_epi16(0x7c00);
        return _mm256_cmpeq_epi16(_mm256_and_si256(v, m), m);
    }
    case DSQ_NF_BF16: {
        const __m256i m = _mm256_set1_epi16(0x7f80);
        return _mm256_cmpeq_epi16(_mm256_and_si256(v, m), m);
    }
    default: {
        const __m256i m = _mm256_set1_epi32(0x7f800000);
        return _mm256_cmpeq_epi32(_mm256_and_si256(v, m), m);
    }
    }
}

/* 128 bytes per step (four masks OR-ed, one test); the block holding a hit is rescanned by the
 * scalar definition for the exact index. */
AVX2 uint64_t dsq__find_nonfinite_avx2(dsq_nf_kind k, const uint8_t *p, uint64_t n) {
    if (k == DSQ_NF_NONE) return UINT64_MAX;
    uint64_t es = k == DSQ_NF_F32 ? 4 : k == DSQ_NF_F16 || k == DSQ_NF_BF16 ? 2 : 1, bytes = n * es, b = 0;
    for (; b + 128 <= bytes; b += 128) {
        __m256i m0 = nf_mask(k, _mm256_loadu_si256((const __m256i *)(const void *)(p + b)));
        __m256i m1 = nf_mask(k, _mm256_loadu_si256((const __m256i *)(const void *)(p + b + 32)));
        __m256i m2 = nf_mask(k, _mm256_loadu_si256((const __m256i *)(const void *)(p + b + 64)));
        __m256i m3 = nf_mask(k, _mm256_loadu_si256((const __m256i *)(const void *)(p + b + 96)));
        __m256i any = _mm256_or_si256(_mm256_or_si256(m0, m1), _mm256_or_si256(m2, m3));
        if (!_mm256_testz_si256(any, any)) return dsq__find_nonfinite_scalar(k, p, b / es, (b + 128) / es);
    }
    return dsq__find_nonfinite_scalar(k, p, b / es, n);
}

#else /* not x86: the scalar twins stand in (dsq_codec_best_isa never returns AVX2 there) */

void dsq__decode_span_avx2(const dsq__qv *v, uint64_t r, uint64_t c0, uint64_t n, float *out) {
    dsq__decode_span_scalar(v, r, c0, n, out);
}
float dsq__dot_f32_avx2(const float *a, const float *b, uint64_t n) { return dsq__dot_f32_scalar(a, b, n); }
float dsq__dot_row_avx2(const dsq__qv *v, uint64_t r, const float *x) { return dsq__dot_row_scalar(v, r, x); }
void dsq__int_search8_avx2(const float *xt, int n, const dsq__int_spec *sp, float s[8], float m[8]) {
    float col[DSQ_CODEC_MAX_GROUP];
    for (int j = 0; j < 8; j++) { /* (only the tests call it here: dsq_codec_best_isa is scalar) */
        for (int i = 0; i < n && i < DSQ_CODEC_MAX_GROUP; i++) col[i] = xt[8 * i + j];
        dsq__int_search_scalar(col, n < DSQ_CODEC_MAX_GROUP ? n : DSQ_CODEC_MAX_GROUP, sp, s + j, m + j);
    }
}
void dsq__transpose8_avx2(const float *const p[8], int n, float *xt) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 8; j++) xt[8 * i + j] = p[j][i];
}
void dsq__f16r8_avx2(const float in[8], float out[8]) {
    for (int j = 0; j < 8; j++) out[j] = dsq__f16r(in[j]);
}
void dsq__int_group_codes_avx2(const float *x, int n, const dsq__grp_param *p, int8_t *q) {
    dsq__int_group_codes_scalar(x, n, p, q);
}
void dsq__pack_nibbles_avx2(const int8_t *q, int n, uint8_t *out) {
    for (int j = 0; j + 1 < n; j += 2) out[j / 2] = (uint8_t)((q[j] & 15) | ((q[j + 1] & 15) << 4));
}
bool dsq__all_finite_avx2(const float *x, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (!dsq__finite(x[i])) return false;
    return true;
}
uint64_t dsq__find_nonfinite_avx2(dsq_nf_kind k, const uint8_t *p, uint64_t n) {
    return dsq__find_nonfinite_scalar(k, p, 0, n);
}

#endif
