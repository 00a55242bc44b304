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
static double sub_eval_nl(const kq_spec *k, const float *x, const float *w, float S, int8_t *q);
/* the eight f32 lanes of sub_eval, added in one fixed order (the AVX2 twin stores its lanes and calls it) */
static double lanes8(const float l[8]) { return (double)(((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))); }

static double sub_eval_scalar(const kq_spec *k, const float *x, const float *w, float S, float M, int8_t *q) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f, qlo = (float)k->qlo, qhi = (float)k->qhi;
    float acc[8] = {0};
    for (int i = 0; i < k->sub; i++) {
        float t = (x[i] + M) * inv;
        t = t > qlo ? t : qlo;                  /* _mm256_max_ps(t, qlo): NaN → qlo */
        t = t < qhi ? t : qhi;                  /* _mm256_min_ps(t, qhi) */
        float qi = (t + 0x1.8p23f) - 0x1.8p23f; /* RNE for |t| ≤ 2^22 (t is clamped to ±32): no libm call */
        float y = S * qi - M, dd = x[i] - y;
        acc[i & 7] += (w[i] * dd) * dd;
        if (q) q[i] = (int8_t)qi;
    }
    return lanes8(acc);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
/* sub_eval_scalar's code: t clamped to [lo, hi], RNE by the magic number */
__attribute__((target("avx2"))) static inline __m256 rne_clamped8(__m256 t, __m256 lo, __m256 hi, __m256 magic) {
    t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
    return _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
}
/* sub_eval_nl's value: kv[b] with b = the number of midpoints t exceeds (NaN exceeds none), summed as
 * kv[0] + Σ (kv[c+1] − kv[c]) over the midpoints exceeded: small integers, exact in f32 */
__attribute__((target("avx2"))) static inline __m256 nl_value8(__m256 t) {
    __m256 v = _mm256_set1_ps((float)kv_iq4nl[0]);
    for (int c = 0; c < 15; c++) {
        __m256 gt = _mm256_cmp_ps(t, _mm256_set1_ps(iq4nl_mid[c]), _CMP_GT_OQ);
        v = _mm256_add_ps(v, _mm256_and_ps(gt, _mm256_set1_ps((float)(kv_iq4nl[c + 1] - kv_iq4nl[c]))));
    }
    return v;
}
__attribute__((target("avx2"))) static double sub_eval_avx2(const kq_spec *k, const float *x, const float *w, float S,
                                                            float M, int8_t *q) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f;
    __m256 vinv = _mm256_set1_ps(inv), vS = _mm256_set1_ps(S), vM = _mm256_set1_ps(M);
    __m256 lo = _mm256_set1_ps((float)k->qlo), hi = _mm256_set1_ps((float)k->qhi), magic = _mm256_set1_ps(0x1.8p23f);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < k->sub; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256 t = _mm256_mul_ps(_mm256_add_ps(xv, vM), vinv);
        __m256 qi = k->nl ? nl_value8(t) : rne_clamped8(t, lo, hi, magic);
        __m256 y = _mm256_sub_ps(_mm256_mul_ps(vS, qi), vM);
        __m256 d = _mm256_sub_ps(xv, y);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(w + i), d), d));
        if (q) {
            int32_t qq[8];
            _mm256_storeu_si256((__m256i *)(void *)qq, _mm256_cvtps_epi32(qi));
            for (int j = 0; j < 8; j++) q[i + j] = (int8_t)qq[j];
        }
    }
    float l[8];
    _mm256_storeu_ps(l, acc);
    return lanes8(l);
}
#else
static double sub_eval_avx2(const kq_spec *k, const float *x, const float *w, float S, float M, int8_t *q) {
    return k->nl ? sub_eval_nl(k, x, w, S, q) : sub_eval_scalar(k, x, w, S, M, q);
}
#endif

/* IQ4_XS: the nearest codebook value to x/S (ties to the lower value); q receives the VALUE. */
static double sub_eval_nl(const kq_spec *k, const float *x, const float *w, float S, int8_t *q) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f;
    float acc[8] = {0};
    for (int i = 0; i < k->sub; i++) {
        float t = x[i] * inv;
        int b = 0; /* the last code whose lower midpoint t exceeds (midpoints ascend): binary search */
        for (int step = 8; step; step >>= 1)
            if (b + step < 16 && t > iq4nl_mid[b + step - 1]) b += step;
        float y = S * (float)kv_iq4nl[b], dd = x[i] - y; /* the AVX2 twin's S·q − 0: the same float */
        acc[i & 7] += (w[i] * dd) * dd;
        if (q) q[i] = kv_iq4nl[b];
    }
    return lanes8(acc);
}

static inline double sub_eval(const kq_spec *k, const float *x, const float *w, float S, float M, int8_t *q) {
    if (k->avx2) return sub_eval_avx2(k, x, w, S, M, q);
    return k->nl ? sub_eval_nl(k, x, w, S, q) : sub_eval_scalar(k, x, w, S, M, q);
}

/* For the codes nearest to (S, M), as sub_eval chooses them: out[0] = Σwq², out[1] = Σwq, out[3] = Σwqx
 * (out[2] = Σw and out[4] = Σwx do not depend on the codes: the caller fills them), in f64, four lanes
 * (element i into lane i % 4, lanes added (l0 + l1) + (l2 + l3)), as the AVX2 twin. */
static void code_sums_scalar(const kq_spec *k, const float *x, const float *w, float S, float M, double out[5]) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f, qlo = (float)k->qlo, qhi = (float)k->qhi;
    double a[3][4] = {{0}};
    for (int i = 0; i < k->sub; i++) {
        float qi;
        if (k->nl) {
            float t = x[i] * inv;
            int b = 0;
            for (int step = 8; step; step >>= 1)
                if (b + step < 16 && t > iq4nl_mid[b + step - 1]) b += step;
            qi = (float)kv_iq4nl[b];
        } else {
            float t = (x[i] + M) * inv;
            t = t > qlo ? t : qlo;
            t = t < qhi ? t : qhi;
            qi = (t + 0x1.8p23f) - 0x1.8p23f;
        }
        double wq = (double)w[i] * (double)qi;
        a[0][i & 3] += wq * (double)qi, a[1][i & 3] += wq, a[2][i & 3] += wq * (double)x[i];
    }
    out[0] = (a[0][0] + a[0][1]) + (a[0][2] + a[0][3]);
    out[1] = (a[1][0] + a[1][1]) + (a[1][2] + a[1][3]);
    out[3] = (a[2][0] + a[2][1]) + (a[2][2] + a[2][3]);
}
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static void code_sums_avx2(const kq_spec *k, const float *x, const float *w, float S,
                                                           float M, double out[5]) {
    float inv = S != 0.0f ? 1.0f / S : 0.0f;
    __m256 vinv = _mm256_set1_ps(inv), vM = _mm256_set1_ps(M);
    __m256 lo = _mm256_set1_ps((float)k->qlo), hi = _mm256_set1_ps((float)k->qhi), magic = _mm256_set1_ps(0x1.8p23f);
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a3 = a0;
    for (int i = 0; i < k->sub; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i), wv = _mm256_loadu_ps(w + i);
        __m256 t = k->nl ? _mm256_mul_ps(xv, vinv) : _mm256_mul_ps(_mm256_add_ps(xv, vM), vinv);
        __m256 qi = k->nl ? nl_value8(t) : rne_clamped8(t, lo, hi, magic);
        for (int h = 0; h < 2; h++) {
            __m128 qh = h ? _mm256_extractf128_ps(qi, 1) : _mm256_castps256_ps128(qi);
            __m128 wh = h ? _mm256_extractf128_ps(wv, 1) : _mm256_castps256_ps128(wv);
            __m128 xh = h ? _mm256_extractf128_ps(xv, 1) : _mm256_castps256_ps128(xv);
            __m256d qd = _mm256_cvtps_pd(qh), wq = _mm256_mul_pd(_mm256_cvtps_pd(wh), qd);
            a0 = _mm256_add_pd(a0, _mm256_mul_pd(wq, qd));
            a1 = _mm256_add_pd(a1, wq);
            a3 = _mm256_add_pd(a3, _mm256_mul_pd(wq, _mm256_cvtps_pd(xh)));
        }
    }
    double l[4];
    _mm256_storeu_pd(l, a0);
    out[0] = (l[0] + l[1]) + (l[2] + l[3]);
    _mm256_storeu_pd(l, a1);
    out[1] = (l[0] + l[1]) + (l[2] + l[3]);
    _mm256_storeu_pd(l, a3);
    out[3] = (l[0] + l[1]) + (l[2] + l[3]);
}
#else
static void code_sums_avx2(const kq_spec *k, const float *x, const float *w, float S, float M, double out[5]) {
    code_sums_scalar(k, x, w, S, M, out);
}
#endif

/* Weighted least squares of (s, m) in x ≈ s·q − m from code_sums (and Σw, Σwx); m ≥ 0 (asymmetric) or 0. */
static bool lsq_solve(const kq_spec *k, const double sums[5], double *s, double *m) {
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
    *s = sv, *m = mv;
    return isfinite(sv) && isfinite(mv) && isfinite((float)sv) && isfinite((float)mv);
}

/* Σw(x − (s·q − m))² for the codes whose sums these are (xx = Σwx²), expanded: no pass over the data. */
static double lsq_err(const double sums[5], double xx, double s, double m) {
    double A = sums[0], B = sums[1], C = sums[2], D = sums[3], E = sums[4];
    return xx + s * s * A + m * m * C - 2.0 * s * D + 2.0 * m * E - 2.0 * s * m * B;
}

static const float sub_factors[] = {1.0f, 0.96f, 0.92f, 0.88f, 0.84f, 0.80f, 0.76f, 0.72f, 0.68f, 0.64f, 1.04f, 1.08f};
enum { SUB_ITERS = 3 };

/* Real-valued scale (and min ≥ 0) of one sub-block: candidate ranges, each refined by least squares
 * with the codes fixed (up to SUB_ITERS rounds of nearest codes → least squares), the lowest weighted
 * error kept.  One pass over the values per round: the codes and their sums; the errors of the
 * candidate and of its least-squares point come from the sums (lsq_err).  The result only seeds the
 * integer search of encode_super, which evaluates the decoded values exactly. */
static void fit_sub(const kq_spec *k, const float *x, const float *w, float *s_out, float *m_out) {
    double best_s = 0, best_m = 0, best_e = INFINITY, sums[5];
    enum { MAX_SEEN = 48 };
    double seen_sums[MAX_SEEN][3];
    int n_seen = 0;
    int nb = k->mhi ? 1 : 2;
    float lo = 0, hi = x[0], xm = 0; /* lo = min(0, min x): the min is never positive */
    double l[3][4] = {{0}}; /* Σwx², Σw, Σwx: four lanes as code_sums */
    for (int i = 0; i < k->sub; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        if (fabsf(x[i]) > fabsf(xm)) xm = x[i];
        double wx = (double)w[i] * (double)x[i];
        l[0][i & 3] += wx * (double)x[i], l[1][i & 3] += (double)w[i], l[2][i & 3] += wx;
    }
    double xx = (l[0][0] + l[0][1]) + (l[0][2] + l[0][3]);
    sums[2] = (l[1][0] + l[1][1]) + (l[1][2] + l[1][3]);
    sums[4] = (l[2][0] + l[2][1]) + (l[2][2] + l[2][3]);
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
            double s = base * sub_factors[f], m = k->mhi ? -lo : 0.0f;
            for (int it = 0; it < SUB_ITERS; it++) {
                if (k->avx2)
                    code_sums_avx2(k, x, w, (float)s, (float)m, sums);
                else
                    code_sums_scalar(k, x, w, (float)s, (float)m, sums);
                /* codes seen before (same sums) lead where that chain led: nothing new to find */
                bool seen = false;
                for (int v = 0; v < n_seen && !seen; v++)
                    seen = seen_sums[v][0] == sums[0] && seen_sums[v][1] == sums[1] && seen_sums[v][2] == sums[3];
                if (seen) break;
                if (n_seen < MAX_SEEN)
                    seen_sums[n_seen][0] = sums[0], seen_sums[n_seen][1] = sums[1], seen_sums[n_seen++][2] = sums[3];
                double e = lsq_err(sums, xx, (float)s, (float)m), s2, m2;
                if (e < best_e) best_e = e, best_s = (float)s, best_m = (float)m;
                if (!lsq_solve(k, sums, &s2, &m2)) break;
                double e2 = lsq_err(sums, xx, (float)s2, (float)m2);
                if (!(e2 < best_e) && it > 0) break;
                if (e2 < best_e) best_e = e2, best_s = (float)s2, best_m = (float)m2;
                if ((float)s2 == (float)s && (float)m2 == (float)m) break;
                s = s2, m = m2;
            }
        }
    }
    *s_out = (float)best_s, *m_out = (float)best_m;
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

static const float d_factors[] = {1.0f, 0.97f, 1.03f};
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
    float wmax = 0;
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
        w[i] = imp ? imp[i] : 1.0f;
        x[i] = src[i];
        if (!dsq__finite(src[i])) {
            x[i] = src[i] != src[i] ? 0.0f : copysignf(amax, src[i]);
            w[i] = 0.0f;
        }
    }
    /* with an imatrix, w = importance · sqrt(σ² + x²), σ² the block's mean x² (ggml's weighting in
     * quantize_row_q*_K_impl): on the trained tiny V4 the plain importance lowered the weighted
     * error but raised KL at q2_k/q3_k (the fit gave up large weights of quiet columns); this form
     * lowered KL at q2_k, q3_k and q4_k (docs/interop.md) */
    if (imp) {
        double sx2 = 0;
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) sx2 += dsq__finite(src[i]) ? (double)x[i] * x[i] : 0.0;
        float sig2 = (float)(sx2 / DSQ_KQ_BLOCK);
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) w[i] *= sqrtf(sig2 + x[i] * x[i]);
    }
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) wmax = w[i] > wmax ? w[i] : wmax;
    /* weights scaled to a largest of 1: the f32 error sums of sub_eval neither overflow nor underflow
     * for any finite importance (the minimiser does not change) */
    float wscale = wmax > 0 ? 1.0f / wmax : 1.0f;
    if (!isfinite(wscale)) wscale = 0x1p126f; /* wmax subnormal */
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
        w[i] *= wscale;
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

/* Σ w·(x − decoded)² over every block; w = importance (1 without), times sqrt(σ² + x²) with `sigma`
 * (σ² = the block's mean x²: the encoder's objective). */
static double block_error(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                          const void *blocks, bool sigma) {
    int bb = dsq_kquant_block_bytes(enc);
    float y[DSQ_KQ_BLOCK];
    double e = 0;
    uint64_t nb = cols / DSQ_KQ_BLOCK;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t b = 0; b < nb; b++) {
            const float *xb = x + r * cols + b * DSQ_KQ_BLOCK;
            dsq_kquant_decode_block(enc, (const uint8_t *)blocks + (r * nb + b) * (uint64_t)bb, y);
            double sx2 = 0;
            if (sigma)
                for (int i = 0; i < DSQ_KQ_BLOCK; i++) sx2 += (double)xb[i] * xb[i];
            for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
                double d = (double)xb[i] - (double)y[i];
                double w = importance ? (double)importance[b * DSQ_KQ_BLOCK + (uint64_t)i] : 1.0;
                if (importance && sigma) w *= sqrt(sx2 / DSQ_KQ_BLOCK + (double)xb[i] * xb[i]);
                e += w * d * d;
            }
        }
    return e;
}

double dsq_kquant_objective(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                            const void *blocks) {
    return block_error(enc, x, rows, cols, importance, blocks, true);
}

double dsq_kquant_weighted_sse(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                               const void *blocks) {
    return block_error(enc, x, rows, cols, importance, blocks, false);
}
