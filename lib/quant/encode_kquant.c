/* K-quant encoders (Q2_K … Q6_K): importance-weighted search per super-block (dsq_kquant.h states
 * the search; the byte layouts are ggml's, the search is ours). */
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "dsq_kquant.h"

/* One k-quant type: codes q in [qlo, qhi] multiply the sub-block scale (symmetric types) or are
 * offset by the sub-block min (mhi > 0); integer scales in [slo, shi], mins in [0, mhi]. */
typedef struct kq_spec {
    dsq_encoding enc;
    int bytes, sub, ggml;
    int qlo, qhi, slo, shi, mhi;
    bool nl;   /* codes index the IQ4_NL codebook: the code VALUE is kv_iq4nl[index] (int8) */
    bool avx2; /* set per call: sub_eval's AVX2 twin (same bytes) */
} kq_spec;

/* ggml's kvalues_iq4nl: the values of the 16 IQ4_XS codes (ascending) */
static const int8_t kv_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
/* iq4nl_mid[c] = (kv[c] + kv[c+1]) / 2, exact in f32 */
static const float iq4nl_mid[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                    7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};

static const kq_spec specs[] = {
    {DSQ_ENC_Q2_K, 84, 16, 10, 0, 3, 0, 15, 15, false, false},
    {DSQ_ENC_Q3_K, 110, 16, 11, -4, 3, -32, 31, 0, false, false},
    {DSQ_ENC_Q4_K, 144, 32, 12, 0, 15, 0, 63, 63, false, false},
    {DSQ_ENC_Q5_K, 176, 32, 13, 0, 31, 0, 63, 63, false, false},
    {DSQ_ENC_Q6_K, 210, 16, 14, -32, 31, -128, 127, 0, false, false},
    {DSQ_ENC_IQ4_XS, 136, 32, 23, -127, 113, -32, 31, 0, true, false},
};
enum { MAX_SUB = DSQ_KQ_BLOCK / 16 };

static const kq_spec *spec_of(dsq_encoding enc) {
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        if (specs[i].enc == enc) return &specs[i];
    return NULL;
}

int dsq_kquant_block_bytes(dsq_encoding enc) {
    const kq_spec *k = spec_of(enc);
    return k ? k->bytes : 0;
}
int dsq_kquant_ggml_type(dsq_encoding enc) {
    const kq_spec *k = spec_of(enc);
    return k ? k->ggml : -1;
}

/* ---- error of one sub-block for a dequantized scale S and min M ------------------------------------
 * Codes are the nearest for the decoded value S·q − M; the value is evaluated as the decoder does.
 * The weighted squared error is summed in f64 in four lanes (element i into lane i % 4), added
 * (l0 + l1) + (l2 + l3): the AVX2 twin performs the same IEEE operations, so the encoded bytes do not
 * depend on the CPU. */
static double sub_eval_scalar(const kq_spec *k, const float *x, const float *w, float S, float M, int8_t *q) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f, qlo = (float)k->qlo, qhi = (float)k->qhi;
    double acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < k->sub; i++) {
        float t = (x[i] + M) * inv;
        t = t > qlo ? t : qlo;                  /* _mm256_max_ps(t, qlo): NaN → qlo */
        t = t < qhi ? t : qhi;                  /* _mm256_min_ps(t, qhi) */
        float qi = (t + 0x1.8p23f) - 0x1.8p23f; /* RNE for |t| ≤ 2^22 (t is clamped to ±32): no libm call */
        float y = S * qi - M;
        double dd = (double)x[i] - (double)y;
        acc[i & 3] += (double)w[i] * dd * dd;
        if (q) q[i] = (int8_t)qi;
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
__attribute__((target("avx2"))) static double sub_eval_avx2(const kq_spec *k, const float *x, const float *w, float S,
                                                            float M, int8_t *q) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f;
    __m256 vinv = _mm256_set1_ps(inv), vS = _mm256_set1_ps(S), vM = _mm256_set1_ps(M);
    __m256 lo = _mm256_set1_ps((float)k->qlo), hi = _mm256_set1_ps((float)k->qhi), magic = _mm256_set1_ps(0x1.8p23f);
    __m256d acc = _mm256_setzero_pd();
    for (int i = 0; i < k->sub; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256 t = _mm256_mul_ps(_mm256_add_ps(xv, vM), vinv);
        t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
        __m256 qi = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
        __m256 y = _mm256_sub_ps(_mm256_mul_ps(vS, qi), vM);
        __m256 wv = _mm256_loadu_ps(w + i);
        __m256d d0 =
            _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xv)), _mm256_cvtps_pd(_mm256_castps256_ps128(y)));
        __m256d d1 =
            _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
        __m256d w0 = _mm256_cvtps_pd(_mm256_castps256_ps128(wv)), w1 = _mm256_cvtps_pd(_mm256_extractf128_ps(wv, 1));
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_mul_pd(w0, d0), d0));
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_mul_pd(w1, d1), d1));
        if (q) {
            int32_t qq[8];
            _mm256_storeu_si256((__m256i *)(void *)qq, _mm256_cvtps_epi32(qi));
            for (int j = 0; j < 8; j++) q[i + j] = (int8_t)qq[j];
        }
    }
    double l[4];
    _mm256_storeu_pd(l, acc);
    return (l[0] + l[1]) + (l[2] + l[3]);
}
#else
static double sub_eval_avx2(const kq_spec *k, const float *x, const float *w, float S, float M, int8_t *q) {
    return sub_eval_scalar(k, x, w, S, M, q);
}
#endif

/* IQ4_XS: the nearest codebook value to x/S (ties to the lower value); q receives the VALUE. */
static double sub_eval_nl(const kq_spec *k, const float *x, const float *w, float S, int8_t *q) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f;
    double acc[4] = {0, 0, 0, 0};
    for (int i = 0; i < k->sub; i++) {
        float t = x[i] * inv;
        int b = 0; /* the last code whose lower midpoint t exceeds (midpoints ascend): binary search */
        for (int step = 8; step; step >>= 1)
            if (b + step < 16 && t > iq4nl_mid[b + step - 1]) b += step;
        float y = S * (float)kv_iq4nl[b];
        double dd = (double)x[i] - (double)y;
        acc[i & 3] += (double)w[i] * dd * dd;
        if (q) q[i] = kv_iq4nl[b];
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static inline double sub_eval(const kq_spec *k, const float *x, const float *w, float S, float M, int8_t *q) {
    if (k->nl) return sub_eval_nl(k, x, w, S, q);
    return k->avx2 ? sub_eval_avx2(k, x, w, S, M, q) : sub_eval_scalar(k, x, w, S, M, q);
}

/* The sums of the sub-block least squares: Σwq², Σwq, Σw, Σwqx, Σwx in f64, four lanes each
 * (element i into lane i % 4, lanes added (l0 + l1) + (l2 + l3)), as the AVX2 twin. */
static void lsq_sums_scalar(int n, const float *x, const float *w, const int8_t *q, double out[5]) {
    double a[5][4] = {{0}};
    for (int i = 0; i < n; i++) {
        double wi = w[i], qi = q[i], xi = x[i];
        a[0][i & 3] += wi * qi * qi, a[1][i & 3] += wi * qi, a[2][i & 3] += wi, a[3][i & 3] += wi * qi * xi,
            a[4][i & 3] += wi * xi;
    }
    for (int s = 0; s < 5; s++) out[s] = (a[s][0] + a[s][1]) + (a[s][2] + a[s][3]);
}
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static void lsq_sums_avx2(int n, const float *x, const float *w, const int8_t *q,
                                                          double out[5]) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, a4 = a0;
    for (int i = 0; i < n; i += 4) {
        int32_t qi;
        memcpy(&qi, q + i, 4);
        __m256d qv = _mm256_cvtepi32_pd(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(qi)));
        __m256d wv = _mm256_cvtps_pd(_mm_loadu_ps(w + i)), xv = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        __m256d wq = _mm256_mul_pd(wv, qv);
        a0 = _mm256_add_pd(a0, _mm256_mul_pd(wq, qv));
        a1 = _mm256_add_pd(a1, wq);
        a2 = _mm256_add_pd(a2, wv);
        a3 = _mm256_add_pd(a3, _mm256_mul_pd(wq, xv));
        a4 = _mm256_add_pd(a4, _mm256_mul_pd(wv, xv));
    }
    __m256d v[5] = {a0, a1, a2, a3, a4};
    for (int s = 0; s < 5; s++) {
        double l[4];
        _mm256_storeu_pd(l, v[s]);
        out[s] = (l[0] + l[1]) + (l[2] + l[3]);
    }
}
#else
static void lsq_sums_avx2(int n, const float *x, const float *w, const int8_t *q, double out[5]) {
    lsq_sums_scalar(n, x, w, q, out);
}
#endif

/* Weighted least squares of (s, m) in x ≈ s·q − m with the codes fixed; m ≥ 0 (asymmetric) or 0. */
static bool sub_lsq(const kq_spec *k, const float *x, const float *w, const int8_t *q, float *s, float *m) {
    double sums[5];
    if (k->avx2)
        lsq_sums_avx2(k->sub, x, w, q, sums);
    else
        lsq_sums_scalar(k->sub, x, w, q, sums);
    double A = sums[0], B = sums[1], C = sums[2], D = sums[3], E = sums[4];
    if (!(A > 0)) return false;
    double sv = D / A, mv = 0;
    if (k->mhi) {
        double det = A * C - B * B;
        if (det > 0 && C > 0) {
            sv = (D * C - B * E) / det;
            mv = (sv * B - E) / C;
        }
        if (mv < 0) mv = 0, sv = D / A;
        if (!(sv > 0)) return false;
    }
    *s = (float)sv, *m = (float)mv;
    return isfinite(*s) && isfinite(*m);
}

static const float sub_factors[] = {1.0f, 0.96f, 0.92f, 0.88f, 0.84f, 0.80f, 0.76f, 0.72f, 0.68f, 0.64f, 1.04f, 1.08f};

/* Real-valued scale (and min ≥ 0) of one sub-block: candidate ranges, each refined by least squares
 * with the codes fixed, the lowest weighted error kept. */
static void fit_sub(const kq_spec *k, const float *x, const float *w, float *s_out, float *m_out) {
    int8_t q[32];
    float best_s = 0, best_m = 0;
    double best_e = INFINITY;
    int nb = k->mhi ? 1 : 2;
    float lo = 0, hi = x[0], xm = 0; /* lo = min(0, min x): the min is never positive */
    for (int i = 0; i < k->sub; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        if (fabsf(x[i]) > fabsf(xm)) xm = x[i];
    }
    if (k->mhi) {
        if (!(hi > lo)) { /* a constant block */
            *s_out = 0, *m_out = -lo;
            return;
        }
    } else if (xm == 0.0f) {
        *s_out = 0, *m_out = 0;
        return;
    }
    for (int b = 0; b < nb; b++) {
        /* asymmetric: [lo, hi] onto [0, qhi]; symmetric: the extreme onto qlo (b = 0) or qhi */
        float base = k->mhi ? (hi - lo) / (float)k->qhi : xm / (float)(b == 0 ? k->qlo : k->qhi);
        for (size_t f = 0; f < sizeof sub_factors / sizeof sub_factors[0]; f++) {
            float s = base * sub_factors[f], m = k->mhi ? -lo : 0.0f;
            double e = sub_eval(k, x, w, s, m, q);
            for (int it = 0; it < 3; it++) {
                if (e < best_e) best_e = e, best_s = s, best_m = m;
                float s2, m2;
                if (!sub_lsq(k, x, w, q, &s2, &m2) || (s2 == s && m2 == m)) break;
                double e2 = sub_eval(k, x, w, s2, m2, q);
                if (!(e2 < e)) break;
                s = s2, m = m2, e = e2;
            }
            if (e < best_e) best_e = e, best_s = s, best_m = m;
        }
    }
    *s_out = best_s, *m_out = best_m;
}

/* ---- super-block ---------------------------------------------------------------------------------- */

typedef struct kq_state {
    float d, dmin; /* F16 values */
    int sc[MAX_SUB], m[MAX_SUB];
    double e[MAX_SUB];
} kq_state;

static inline float sub_scale(const kq_state *st, int j) { return st->d * (float)st->sc[j]; }
static inline float sub_min(const kq_state *st, int j) { return st->dmin * (float)st->m[j]; }

static double state_eval(const kq_spec *k, const float *x, const float *w, kq_state *st, int8_t *q) {
    double t = 0;
    int ns = DSQ_KQ_BLOCK / k->sub;
    for (int j = 0; j < ns; j++) {
        st->e[j] =
            sub_eval(k, x + j * k->sub, w + j * k->sub, sub_scale(st, j), sub_min(st, j), q ? q + j * k->sub : NULL);
        t += st->e[j];
    }
    return t;
}

static int clampi(long v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

/* Integer scales/mins for super-scales (d, dmin): nearest, clamped. */
static void round_scales(const kq_spec *k, kq_state *st, const float *s, const float *m) {
    int ns = DSQ_KQ_BLOCK / k->sub;
    for (int j = 0; j < ns; j++) {
        st->sc[j] = st->d != 0.0f ? clampi(lrintf(s[j] / st->d), k->slo, k->shi) : 0;
        st->m[j] = k->mhi && st->dmin != 0.0f ? clampi(lrintf(m[j] / st->dmin), 0, k->mhi) : 0;
    }
}

/* Each sub-block's integer scale (and min) moved by ±1 while its error drops. */
static bool coord_search(const kq_spec *k, const float *x, const float *w, kq_state *st) {
    int ns = DSQ_KQ_BLOCK / k->sub;
    bool any = false;
    for (int j = 0; j < ns; j++) {
        const float *xj = x + j * k->sub, *wj = w + j * k->sub;
        for (int round = 0; round < 4; round++) {
            int bs = st->sc[j], bm = st->m[j];
            bool moved = false;
            for (int ds = -1; ds <= 1; ds++)
                for (int dm = k->mhi ? -1 : 0; dm <= (k->mhi ? 1 : 0); dm++) {
                    int s = bs + ds, mm = bm + dm;
                    if ((ds == 0 && dm == 0) || s < k->slo || s > k->shi || mm < 0 || mm > k->mhi) continue;
                    double e = sub_eval(k, xj, wj, st->d * (float)s, st->dmin * (float)mm, NULL);
                    if (e < st->e[j]) st->e[j] = e, st->sc[j] = s, st->m[j] = mm, moved = true;
                }
            if (!moved) break;
            any = true;
        }
    }
    return any;
}

/* Least squares of (d, dmin) with the integer scales, mins and codes fixed. */
static bool super_lsq(const kq_spec *k, const float *x, const float *w, const kq_state *st, const int8_t *q, float *d,
                      float *dmin) {
    double A = 0, B = 0, C = 0, D = 0, E = 0;
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
        int j = i / k->sub;
        double a = (double)st->sc[j] * q[i], b = st->m[j], wi = w[i];
        A += wi * a * a, B += wi * a * b, C += wi * b * b, D += wi * a * x[i], E += wi * b * x[i];
    }
    if (!(A > 0)) return false;
    double dv = D / A, mv = st->dmin;
    if (k->mhi && C > 0) {
        double det = A * C - B * B;
        if (det > 0) {
            dv = (D * C - B * E) / det;
            mv = (dv * B - E) / C;
        }
    }
    *d = dsq__f16r((float)dv);
    *dmin = dsq__f16r((float)mv);
    return isfinite(*d) && isfinite(*dmin);
}

static const float d_factors[] = {1.0f, 0.97f, 1.03f, 0.94f, 0.91f};
static const float dmin_factors[] = {1.0f, 0.95f, 1.05f};

static void encode_super(const kq_spec *k, const float *x, const float *w, kq_state *out, int8_t *q) {
    int ns = DSQ_KQ_BLOCK / k->sub;
    float s[MAX_SUB], m[MAX_SUB];
    float smax = 0, mmax = 0, sext = 0;
    for (int j = 0; j < ns; j++) {
        fit_sub(k, x + j * k->sub, w + j * k->sub, &s[j], &m[j]);
        smax = s[j] > smax ? s[j] : smax;
        mmax = m[j] > mmax ? m[j] : mmax;
        if (fabsf(s[j]) > fabsf(sext)) sext = s[j];
    }
    kq_state best, st;
    memset(&best, 0, sizeof best);
    double best_e = state_eval(k, x, w, &best, NULL); /* all zero */
    memset(&st, 0, sizeof st);
    int nd = sizeof d_factors / sizeof d_factors[0];
    int nm = k->mhi ? (int)(sizeof dmin_factors / sizeof dmin_factors[0]) : 1;
    for (int side = 0; side < (k->mhi ? 1 : 2); side++) {
        /* symmetric types: the largest scale onto shi or onto slo (a negative super-scale) */
        float dbase = k->mhi ? smax / (float)k->shi : sext / (float)(side == 0 ? k->shi : k->slo);
        for (int a = 0; a < nd; a++)
            for (int b = 0; b < nm; b++) {
                st.d = dsq__f16r(dbase * d_factors[a]);
                st.dmin = k->mhi ? dsq__f16r(mmax / (float)k->mhi * dmin_factors[b]) : 0.0f;
                round_scales(k, &st, s, m);
                double e = state_eval(k, x, w, &st, NULL);
                if (e < best_e) best_e = e, best = st;
            }
    }
    /* refine: integer scales by coordinate search, then (d, dmin) by least squares */
    st = best;
    state_eval(k, x, w, &st, q);
    for (int it = 0; it < 4; it++) {
        coord_search(k, x, w, &st);
        double e = state_eval(k, x, w, &st, q);
        if (e < best_e) best_e = e, best = st;
        kq_state t = st;
        if (!super_lsq(k, x, w, &st, q, &t.d, &t.dmin) || (t.d == st.d && t.dmin == st.dmin)) break;
        double e2 = state_eval(k, x, w, &t, NULL);
        if (!(e2 < best_e)) break;
        best_e = e2, best = t, st = t;
        state_eval(k, x, w, &st, q);
    }
    *out = best;
    state_eval(k, x, w, out, q);
}

/* ---- packing (layouts in dsq_kquant.h) ------------------------------------------------------------ */

static void put_half(uint8_t *p, float v) {
    uint16_t h = dsq_f16_from_f32(v);
    p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
}

static void pack(const kq_spec *k, const kq_state *st, const int8_t *q, uint8_t *b) {
    memset(b, 0, (size_t)k->bytes);
    switch (k->enc) {
    case DSQ_ENC_Q2_K:
    case DSQ_ENC_Q3_K: {
        bool q3 = k->enc == DSQ_ENC_Q3_K;
        uint8_t *qs = q3 ? b + 32 : b + 16;
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
            int u = q[e] - k->qlo; /* Q3_K: stored code q + 4 */
            qs[32 * (e / 128) + e % 32] |= (uint8_t)((u & 3) << (2 * ((e % 128) / 32)));
            if (q3) b[e % 32] |= (uint8_t)(((u >> 2) & 1) << (e / 32));
        }
        if (!q3) {
            for (int j = 0; j < 16; j++) b[j] = (uint8_t)(st->sc[j] | (st->m[j] << 4));
            put_half(b + 80, st->d);
            put_half(b + 82, st->dmin);
        } else {
            uint8_t *sc = b + 96;
            for (int j = 0; j < 16; j++) {
                int u = st->sc[j] + 32;
                if (j < 8)
                    sc[j] |= (uint8_t)(u & 15);
                else
                    sc[j - 8] |= (uint8_t)((u & 15) << 4);
                sc[8 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
            }
            put_half(b + 108, st->d);
        }
        return;
    }
    case DSQ_ENC_Q4_K:
    case DSQ_ENC_Q5_K: {
        bool five = k->enc == DSQ_ENC_Q5_K;
        put_half(b, st->d);
        put_half(b + 2, st->dmin);
        uint8_t *sc = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
        for (int j = 0; j < 4; j++) {
            sc[j] = (uint8_t)(st->sc[j] | ((st->sc[j + 4] >> 4) << 6));
            sc[j + 4] = (uint8_t)(st->m[j] | ((st->m[j + 4] >> 4) << 6));
            sc[j + 8] = (uint8_t)((st->sc[j + 4] & 15) | ((st->m[j + 4] & 15) << 4));
        }
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
            int j = e / 32, l = e % 32;
            qs[32 * (j / 2) + l] |= (uint8_t)((q[e] & 15) << (4 * (j & 1)));
            if (five) qh[l] |= (uint8_t)(((q[e] >> 4) & 1) << j);
        }
        return;
    }
    case DSQ_ENC_IQ4_XS: {
        put_half(b, st->d);
        uint16_t sh = 0;
        for (int j = 0; j < 8; j++) {
            int u = st->sc[j] + 32;
            b[4 + j / 2] |= (uint8_t)((u & 15) << (4 * (j & 1)));
            sh |= (uint16_t)((u >> 4) << (2 * j));
        }
        b[2] = (uint8_t)sh, b[3] = (uint8_t)(sh >> 8);
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
            int idx = 0;
            while (idx < 15 && kv_iq4nl[idx] != q[e]) idx++;
            int j = e / 32, l = e % 32;
            b[8 + 16 * j + (l & 15)] |= (uint8_t)(idx << (4 * (l >> 4)));
        }
        return;
    }
    case DSQ_ENC_Q6_K: {
        uint8_t *ql = b, *qh = b + 128;
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
            int n = e / 128, t = (e % 128) / 32, l = e % 32, u = q[e] + 32;
            ql[64 * n + l + 32 * (t & 1)] |= (uint8_t)((u & 15) << (4 * (t >> 1)));
            qh[32 * n + l] |= (uint8_t)((u >> 4) << (2 * t));
        }
        for (int j = 0; j < 16; j++) b[192 + j] = (uint8_t)(int8_t)st->sc[j];
        put_half(b + 208, st->d);
        return;
    }
    default:
        return;
    }
}

/* ---- driver ----------------------------------------------------------------------------------------- */

/* One super-block: weights (importance or 1; non-finite values get weight 0 and are replaced by 0 or
 * the block's largest finite magnitude), then the search and the packing. */
static void encode_block(const kq_spec *k, const float *src, const float *imp, uint8_t *dst) {
    float x[DSQ_KQ_BLOCK], w[DSQ_KQ_BLOCK], amax = 0;
    for (int i = 0; i < DSQ_KQ_BLOCK; i++)
        if (dsq__finite(src[i]) && fabsf(src[i]) > amax) amax = fabsf(src[i]);
    double wsum = 0;
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
        w[i] = imp ? imp[i] : 1.0f;
        x[i] = src[i];
        if (!dsq__finite(src[i])) {
            x[i] = src[i] != src[i] ? 0.0f : copysignf(amax, src[i]);
            w[i] = 0.0f;
        }
        wsum += w[i];
    }
    /* a sub-block without weight still gets a sensible fit, at a weight too small to sway the rest */
    float tiny = wsum > 0 ? (float)(wsum / DSQ_KQ_BLOCK * 1e-6) : 1.0f;
    for (int j = 0; j < DSQ_KQ_BLOCK; j += k->sub) {
        double sw = 0;
        for (int i = j; i < j + k->sub; i++) sw += w[i];
        if (!(sw > 0))
            for (int i = j; i < j + k->sub; i++) w[i] = tiny;
    }
    kq_state st;
    int8_t q[DSQ_KQ_BLOCK];
    encode_super(k, x, w, &st, q);
    pack(k, &st, q, dst);
}

dsq_status dsq_kquant_encode(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                             bool allow_nonfinite, void *dst, dsq_err *err) {
    return dsq__kquant_encode_isa(enc, x, rows, cols, importance, allow_nonfinite, dst, dsq_codec_best_isa(), err);
}

dsq_status dsq__kquant_encode_isa(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols,
                                  const float *importance, bool allow_nonfinite, void *dst, dsq_isa isa, dsq_err *err) {
    const kq_spec *spec = spec_of(enc);
    kq_spec ks;
    const kq_spec *k = NULL;
    if (spec) {
        ks = *spec;
        ks.avx2 = dsq__isa_resolve(isa) == DSQ_ISA_AVX2;
        k = &ks;
    }
    DSQ_RETURN_IF(!k, err, DSQ_ERR_ARG, "encoding %d is not a k-quant encoding", (int)enc);
    DSQ_RETURN_IF(cols % DSQ_KQ_BLOCK != 0, err, DSQ_ERR_SHAPE, "k-quant rows need a multiple of %d columns (got %llu)",
                  DSQ_KQ_BLOCK, (unsigned long long)cols);
    if (rows == 0 || cols == 0) return DSQ_OK;
    DSQ_RETURN_IF(!x || !dst, err, DSQ_ERR_ARG, "k-quant encode: no input or output");
    if (importance)
        for (uint64_t c = 0; c < cols; c++)
            DSQ_RETURN_IF(!(importance[c] >= 0.0f) || !dsq__finite(importance[c]), err, DSQ_ERR_ARG,
                          "importance of column %llu is %g (must be finite and >= 0)", (unsigned long long)c,
                          (double)importance[c]);
    uint64_t nb = cols / DSQ_KQ_BLOCK;
    for (uint64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        if (!allow_nonfinite)
            for (uint64_t c = 0; c < cols; c++)
                DSQ_RETURN_IF(!dsq__finite(xr[c]), err, DSQ_ERR_NONFINITE, "element [%llu, %llu] is %s",
                              (unsigned long long)r, (unsigned long long)c, xr[c] != xr[c] ? "NaN" : "infinite");
        for (uint64_t b = 0; b < nb; b++)
            encode_block(k, xr + b * DSQ_KQ_BLOCK, importance ? importance + b * DSQ_KQ_BLOCK : NULL,
                         (uint8_t *)dst + (r * nb + b) * (uint64_t)k->bytes);
    }
    return DSQ_OK;
}

double dsq_kquant_weighted_sse(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                               const void *blocks) {
    int bb = dsq_kquant_block_bytes(enc);
    float y[DSQ_KQ_BLOCK];
    double e = 0;
    uint64_t nb = cols / DSQ_KQ_BLOCK;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t b = 0; b < nb; b++) {
            dsq_kquant_decode_block(enc, (const uint8_t *)blocks + (r * nb + b) * (uint64_t)bb, y);
            for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
                double d = (double)x[r * cols + b * DSQ_KQ_BLOCK + (uint64_t)i] - (double)y[i];
                e += (importance ? (double)importance[b * DSQ_KQ_BLOCK + (uint64_t)i] : 1.0) * d * d;
            }
        }
    return e;
}
