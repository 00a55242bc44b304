/* K-quant encoders (Q2_K … Q6_K): importance-weighted search per super-block (dsq_kquant.h states
 * the search; the byte layouts are ggml's, the search is ours). */
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "codec_internal.h"
#include "dsq_kquant.h"

/* One k-quant type: codes q in [qlo, qhi] multiply the sub-block scale (symmetric types) or are
 * offset by the sub-block min (mhi > 0); integer scales in [slo, shi], mins in [0, mhi]. */
typedef struct kq_spec {
    dsq_encoding enc;
    int bytes, sub, ggml;
    int qlo, qhi, slo, shi, mhi;
    bool nl;   /* codes index the IQ4_NL codebook: the code VALUE is kv_iq4nl[index] (int8) */
    int path; /* set per call: KQ_PATH_* of the lane passes (same bytes) */
} kq_spec;

/* ggml's kvalues_iq4nl: the values of the 16 IQ4_XS codes (ascending) */
static const int8_t kv_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
/* iq4nl_mid[c] = (kv[c] + kv[c+1]) / 2, exact in f32 */
static const float iq4nl_mid[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                    7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};

static const kq_spec specs[] = {
    {DSQ_ENC_Q2_K, 84, 16, 10, 0, 3, 0, 15, 15, false, 0},
    {DSQ_ENC_Q3_K, 110, 16, 11, -4, 3, -32, 31, 0, false, 0},
    {DSQ_ENC_Q4_K, 144, 32, 12, 0, 15, 0, 63, 63, false, 0},
    {DSQ_ENC_Q5_K, 176, 32, 13, 0, 31, 0, 63, 63, false, 0},
    {DSQ_ENC_Q6_K, 210, 16, 14, -32, 31, -128, 127, 0, false, 0},
    {DSQ_ENC_IQ4_XS, 136, 32, 23, -127, 113, -32, 31, 0, true, 0},
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

/* ---- exact sub-block errors and code sums, sixteen lanes per pass ---------------------------------------
 * Lane l of a pass has its own dequantized scale S, min M (inv = 1/S, or 0 for S = 0) and reads its
 * sub-block either from x/w directly (every lane the same sub-block: the candidates of one fit) or from
 * the transposed copy xt[i·16 + l] (each lane its own sub-block: whole super-block states).  Per element
 * the code is the nearest for S·q − M (t = (x + M)·inv clamped to [qlo, qhi], rounded half-to-even by the
 * magic number; IQ4_XS: the codebook value whose midpoints t exceeds), and each lane sums, in f32, in
 * element order (one sequential chain per lane):
 *   error mode: Σ (w·(x − (S·q − M)))·(x − (S·q − M)), as the decoder evaluates S·q − M;
 *   sums mode:  Σ (w·q)·q, Σ w·q, Σ (w·q)·x.
 * The scalar loop is the reference; the AVX-512 and AVX2 twins (GCC vector extensions, no fused
 * multiply-add: C11 mode contracts nothing) perform the same IEEE operations lane by lane, so the encoded
 * bytes do not depend on the CPU (tests/test_kquant.c compares all three). */
enum { KQ_LANES = 16 };
enum { KQ_PATH_SCALAR = 0, KQ_PATH_AVX2 = 1, KQ_PATH_AVX512 = 2 };
typedef struct kq_lanes {
    float S[KQ_LANES], M[KQ_LANES];
} kq_lanes;
static inline void lane_set(kq_lanes *L, int l, float S, float M) { L->S[l] = S, L->M[l] = M; }

/* IQ4_XS: the codebook value of t (ties to the lower value; NaN → the lowest) */
static inline float nl_value(float t) {
    int b = 0; /* the last code whose lower midpoint t exceeds (midpoints ascend): binary search */
    for (int step = 8; step; step >>= 1)
        if (b + step < 16 && t > iq4nl_mid[b + step - 1]) b += step;
    return (float)kv_iq4nl[b];
}

/* n elements per lane; bc: every lane reads x[i], w[i] (else xt[i·16 + l]); sums: sums mode (o0, o1, o2)
 * else error mode (o0; with q, the codes of lanes l < nq into q[l·n + i]: element order when lane l is
 * sub-block l) */
static void lanes_scalar(const kq_spec *k, int n, const float *x, const float *w, bool bc, const kq_lanes *L,
                         bool sums, float *o0, float *o1, float *o2, int8_t *q, int nq) {
    float qlo = (float)k->qlo, qhi = (float)k->qhi;
    for (int l = 0; l < KQ_LANES; l++) {
        float S = L->S[l], M = L->M[l], inv = S != 0.0f ? 1.0f / S : 0.0f, a = 0, b = 0, c = 0;
        for (int i = 0; i < n; i++) {
            float xi = bc ? x[i] : x[i * KQ_LANES + l], wi = bc ? w[i] : w[i * KQ_LANES + l];
            float t = (xi + M) * inv, qi;
            if (k->nl)
                qi = nl_value(t);
            else {
                t = t > qlo ? t : qlo; /* NaN → qlo */
                t = t < qhi ? t : qhi;
                qi = (t + 0x1.8p23f) - 0x1.8p23f; /* RNE for |t| ≤ 2^22 (t is clamped to ±128): no libm call */
            }
            if (sums) {
                float wq = wi * qi;
                a += wq * qi, b += wq, c += wq * xi;
            } else {
                float y = S * qi - M, dd = xi - y;
                a += (wi * dd) * dd;
                if (q && l < nq) q[l * n + i] = (int8_t)qi;
            }
        }
        o0[l] = a;
        if (sums) o1[l] = b, o2[l] = c;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The vector twins declare kq_vf/kq_vi locally: sixteen lanes (AVX-512) or eight (AVX2, the sixteen
 * lanes as two halves at offset off: the lanes are independent, and 64-byte vectors were lowered
 * badly for AVX2, slower than the scalar loop).
 * The body of a vector twin: XI/WI are the element's x and w (a float, broadcast by the vector
 * operators, or a vector of NL lanes from lane off); a macro, not a function, so that no vector crosses
 * a call (its ABI differs between the instantiations) */
#define KQ_VTYPES(VB)                                                                                           \
    typedef float kq_vf __attribute__((vector_size(VB)));                                                      \
    typedef int32_t kq_vi __attribute__((vector_size(VB)));                                                    \
    enum { NL = (VB) / 4 }
#define KQ_LANES_BODY(XI, WI)                                                                                   \
    do {                                                                                                        \
        kq_vf S, M, inv, a = {0}, b = {0}, c = {0}, z = {0};                                                    \
        memcpy(&S, L->S + off, sizeof S), memcpy(&M, L->M + off, sizeof M);                                     \
        kq_vi nz = S != 0.0f;                                                                                   \
        inv = (kq_vf)((kq_vi)(1.0f / S) & nz); /* 1/S, or 0 for S = 0 */                                        \
        kq_vf lo = z + (float)k->qlo, hi = z + (float)k->qhi;                                                   \
        for (int i = 0; i < n; i++) {                                                                           \
            kq_vf t = ((XI) + M) * inv, qi;                                                                     \
            if (k->nl) {                                                                                        \
                qi = z + (float)kv_iq4nl[0];                                                                    \
                for (int cc = 0; cc < 15; cc++) {                                                               \
                    kq_vi gt = t > iq4nl_mid[cc];                                                               \
                    qi = qi + (kq_vf)(gt & (kq_vi)(z + (float)(kv_iq4nl[cc + 1] - kv_iq4nl[cc])));              \
                }                                                                                               \
            } else {                                                                                            \
                kq_vi m1 = t > lo;                                                                              \
                t = (kq_vf)(((kq_vi)t & m1) | ((kq_vi)lo & ~m1));                                               \
                kq_vi m2 = t < hi;                                                                              \
                t = (kq_vf)(((kq_vi)t & m2) | ((kq_vi)hi & ~m2));                                               \
                qi = (t + 0x1.8p23f) - 0x1.8p23f;                                                               \
            }                                                                                                   \
            if (sums) {                                                                                         \
                kq_vf wq = (WI) * qi;                                                                           \
                a = a + wq * qi, b = b + wq, c = c + wq * (XI);                                                 \
            } else {                                                                                            \
                kq_vf y = S * qi - M, dd = (XI) - y;                                                            \
                a = a + ((WI) * dd) * dd;                                                                       \
                if (q) {                                                                                        \
                    kq_vi qq = __builtin_convertvector(qi, kq_vi);                                              \
                    for (int l = 0; l < NL && l + off < nq; l++) q[(l + off) * n + i] = (int8_t)qq[l];          \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        memcpy(o0 + off, &a, sizeof a);                                                                         \
        if (sums) memcpy(o1 + off, &b, sizeof b), memcpy(o2 + off, &c, sizeof c);                               \
    } while (0)
#define KQ_LOADV(p) ({ kq_vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define KQ_LANES_FN(name, tgt, VB)                                                                               \
    __attribute__((target(tgt))) static void name(const kq_spec *k, int n, const float *x, const float *w, bool bc, \
                                                  const kq_lanes *L, bool sums, float *o0, float *o1, float *o2,     \
                                                  int8_t *q, int nq) {                                               \
        KQ_VTYPES(VB);                                                                                               \
        for (int off = 0; off < KQ_LANES; off += NL) {                                                               \
            if (bc)                                                                                                  \
                KQ_LANES_BODY(x[i], w[i]);                                                                           \
            else                                                                                                     \
                KQ_LANES_BODY(KQ_LOADV(x + i * KQ_LANES + off), KQ_LOADV(w + i * KQ_LANES + off));                   \
        }                                                                                                            \
    }
KQ_LANES_FN(lanes_avx512, "avx512f", 64)
KQ_LANES_FN(lanes_avx2, "avx2", 32)
#else
#define lanes_avx512 lanes_scalar
#define lanes_avx2 lanes_scalar
#endif

static inline void lanes_run(const kq_spec *k, int n, const float *x, const float *w, bool bc, const kq_lanes *L,
                             bool sums, float *o0, float *o1, float *o2, int8_t *q, int nq) {
    if (k->path == KQ_PATH_AVX512)
        lanes_avx512(k, n, x, w, bc, L, sums, o0, o1, o2, q, nq);
    else if (k->path == KQ_PATH_AVX2)
        lanes_avx2(k, n, x, w, bc, L, sums, o0, o1, o2, q, nq);
    else
        lanes_scalar(k, n, x, w, bc, L, sums, o0, o1, o2, q, nq);
}

/* the weighted error of (s, m) from the sums of a sub-block's codes (A = Σwq², B = Σwq, D = Σwqx) and
 * of the sub-block (C = Σw, E = Σwx, xx = Σwx²) */
#define KQ_LSQ_ERR(A, B, D, s, m) (xx + (s) * (s) * (A) + (m) * (m) * C - 2.0f * (s) * (D) + 2.0f * (m) * E - 2.0f * (s) * (m) * (B))
#if defined(__x86_64__) && defined(__GNUC__)
#define KQ_SEL(m, a, b) ((kq_vf)(((kq_vi)(a) & (m)) | ((kq_vi)(b) & ~(m))))
#endif

/* the sixteen starting scales of the sub-block fit, as factors of the plain range rule: asymmetric types
 * take all sixteen, symmetric ones the first eight on each side (extreme onto qlo, onto qhi) */
static const float fit_factors[KQ_LANES] = {1.0f,  0.96f, 0.92f, 0.88f, 0.84f, 0.80f, 0.76f, 0.72f,
                                            0.68f, 0.64f, 0.60f, 1.04f, 1.08f, 0.56f, 0.52f, 1.12f};
static const float fit_factors_sym[KQ_LANES / 2] = {1.0f, 0.94f, 0.88f, 0.82f, 0.76f, 0.70f, 0.64f, 1.06f};
enum { SUB_ITERS = 2 };

/* Real-valued scale (and min ≥ 0) of sixteen sub-blocks at once, lane l = sub-block l of the transposed
 * copy xt[i·16 + l], wt[i·16 + l] (i < k->sub): per lane the sums Σwx², Σw, Σwx and the range (min(0,
 * min x), max x; symmetric types the extreme value) in element order, then sixteen candidate starting
 * ranges in turn (asymmetric: factors 0.52-1.12 of max−min; symmetric: eight per sign), each pass the
 * nearest codes' sums and one weighted least-squares step (min ≥ 0), then a second pass from every
 * candidate's least-squares point; the first lowest error in the order e(c), e2(c) of pass one, then of
 * pass two, is kept.  Every step is the same IEEE operation per lane, so the scalar loop (the reference)
 * and the vector twins give the same numbers.  The result only seeds the exact integer search of
 * encode_super, which evaluates the decoded values exactly. */
typedef struct kq_fitres {
    float s[KQ_LANES], m[KQ_LANES], cw[KQ_LANES], cwx[KQ_LANES];
} kq_fitres;
static inline float fit_factor(const kq_spec *k, int c) {
    return k->mhi ? fit_factors[c] : fit_factors_sym[c % (KQ_LANES / 2)];
}
static void fit_subs_scalar(const kq_spec *k, const float *xt, const float *wt, int n, kq_fitres *o) {
    bool asym = k->mhi > 0;
    float qlo = (float)k->qlo, qhi = (float)k->qhi;
    for (int l = 0; l < KQ_LANES; l++) {
        float lo = 0, hi = xt[l], xm = 0, xx = 0, C = 0, E = 0;
        for (int i = 0; i < n; i++) {
            float xi = xt[i * KQ_LANES + l], wi = wt[i * KQ_LANES + l];
            lo = xi < lo ? xi : lo;
            hi = xi > hi ? xi : hi;
            xm = fabsf(xi) > fabsf(xm) ? xi : xm;
            float wx = wi * xi;
            xx = xx + wx * xi, C = C + wi, E = E + wx;
        }
        float iC = 1.0f / C, best_s = 0, best_m = 0, best_e = INFINITY, S1[KQ_LANES], M1[KQ_LANES];
        int mvd[KQ_LANES];
        for (int it = 0; it < SUB_ITERS; it++)
            for (int c = 0; c < KQ_LANES; c++) {
                float S, M;
                if (it == 0) {
                    float base = asym ? (hi - lo) / qhi : xm / (c < KQ_LANES / 2 ? qlo : qhi);
                    S = base * fit_factor(k, c), M = asym ? -lo : 0.0f;
                } else {
                    if (!mvd[c]) continue; /* the same point again: nothing new */
                    S = S1[c], M = M1[c];
                }
                float inv = S != 0.0f ? 1.0f / S : 0.0f, a = 0, b = 0, d = 0;
                for (int i = 0; i < n; i++) {
                    float xi = xt[i * KQ_LANES + l], wi = wt[i * KQ_LANES + l];
                    float t = (xi + M) * inv, qi;
                    if (k->nl)
                        qi = nl_value(t);
                    else {
                        t = t > qlo ? t : qlo;
                        t = t < qhi ? t : qhi;
                        qi = (t + 0x1.8p23f) - 0x1.8p23f;
                    }
                    float wq = wi * qi;
                    a = a + wq * qi, b = b + wq, d = d + wq * xi;
                }
                float e = KQ_LSQ_ERR(a, b, d, S, M);
                float ia = 1.0f / a, sv = d * ia, mv = 0;
                bool ok = a > 0;
                if (asym) {
                    float det = a * C - b * b;
                    if (det > 0 && C > 0) {
                        sv = (d * C - b * E) * (1.0f / det);
                        mv = (sv * b - E) * iC;
                    }
                    if (mv < 0) mv = 0, sv = d * ia;
                    ok = ok && sv > 0;
                }
                ok = ok && sv - sv == 0.0f && mv - mv == 0.0f; /* finite */
                float e2 = KQ_LSQ_ERR(a, b, d, sv, mv);
                if (e < best_e) best_e = e, best_s = S, best_m = M;
                if (ok && e2 < best_e) best_e = e2, best_s = sv, best_m = mv;
                if (it == 0) mvd[c] = ok && (sv != S || mv != M), S1[c] = ok ? sv : S, M1[c] = ok ? mv : M;
            }
        if (asym ? !(hi > lo) : xm == 0.0f) /* a constant (or all-zero) sub-block */
            best_s = 0, best_m = asym ? -lo : 0.0f;
        o->s[l] = best_s, o->m[l] = best_m, o->cw[l] = C, o->cwx[l] = E;
    }
}
#if defined(__x86_64__) && defined(__GNUC__)
#define KQ_ABS(v) ((kq_vf)((kq_vi)(v) & 0x7fffffff))
#define KQ_FITS_FN(name, tgt, VB)                                                                                    \
    __attribute__((target(tgt))) static void name(const kq_spec *k, const float *xt, const float *wt, int n,          \
                                                  kq_fitres *o) {                                                    \
        KQ_VTYPES(VB);                                                                                               \
        bool asym = k->mhi > 0;                                                                                      \
        for (int off = 0; off < KQ_LANES; off += NL) {                                                               \
        kq_vf z = {0}, lo = z, hi = KQ_LOADV(xt + off), xm = z, xx = z, C = z, E = z;                                \
        kq_vf qlo = z + (float)k->qlo, qhi = z + (float)k->qhi;                                                      \
        for (int i = 0; i < n; i++) {                                                                                \
            kq_vf xi = KQ_LOADV(xt + i * KQ_LANES + off), wi = KQ_LOADV(wt + i * KQ_LANES + off);                    \
            lo = KQ_SEL(xi < lo, xi, lo);                                                                            \
            hi = KQ_SEL(xi > hi, xi, hi);                                                                            \
            xm = KQ_SEL(KQ_ABS(xi) > KQ_ABS(xm), xi, xm);                                                            \
            kq_vf wx = wi * xi;                                                                                      \
            xx = xx + wx * xi, C = C + wi, E = E + wx;                                                               \
        }                                                                                                            \
        kq_vf iC = 1.0f / C, bs = z, bm = z, be = z + INFINITY, S1[KQ_LANES], M1[KQ_LANES];                          \
        kq_vi Cpos = C > 0.0f;                                                                                       \
        int mvd[KQ_LANES];                                                                                           \
        for (int it = 0; it < SUB_ITERS; it++)                                                                       \
            for (int c = 0; c < KQ_LANES; c++) {                                                                     \
                kq_vf S, M;                                                                                          \
                if (it == 0) {                                                                                       \
                    kq_vf base;                                                                                      \
                    if (asym)                                                                                        \
                        base = (hi - lo) / qhi, M = -lo;                                                             \
                    else                                                                                             \
                        base = xm / (c < KQ_LANES / 2 ? qlo : qhi), M = z;                                           \
                    S = base * fit_factor(k, c);                                                                     \
                } else {                                                                                             \
                    if (!mvd[c]) continue;                                                                           \
                    S = S1[c], M = M1[c];                                                                            \
                }                                                                                                    \
                kq_vf inv = (kq_vf)((kq_vi)(1.0f / S) & (S != 0.0f)), a = z, b = z, d = z;                           \
                for (int i = 0; i < n; i++) {                                                                        \
                    kq_vf xi = KQ_LOADV(xt + i * KQ_LANES + off), wi = KQ_LOADV(wt + i * KQ_LANES + off);            \
                    kq_vf t = (xi + M) * inv, qi;                                                                    \
                    if (k->nl) {                                                                                     \
                        qi = z + (float)kv_iq4nl[0];                                                                 \
                        for (int cc = 0; cc < 15; cc++) {                                                            \
                            kq_vi gt = t > iq4nl_mid[cc];                                                            \
                            qi = qi + (kq_vf)(gt & (kq_vi)(z + (float)(kv_iq4nl[cc + 1] - kv_iq4nl[cc])));           \
                        }                                                                                            \
                    } else {                                                                                         \
                        t = KQ_SEL(t > qlo, t, qlo);                                                                 \
                        t = KQ_SEL(t < qhi, t, qhi);                                                                 \
                        qi = (t + 0x1.8p23f) - 0x1.8p23f;                                                            \
                    }                                                                                                \
                    kq_vf wq = wi * qi;                                                                              \
                    a = a + wq * qi, b = b + wq, d = d + wq * xi;                                                    \
                }                                                                                                    \
                kq_vf e = KQ_LSQ_ERR(a, b, d, S, M);                                                                 \
                kq_vf ia = 1.0f / a, sv = d * ia, mv = z;                                                            \
                kq_vi ok = a > 0.0f;                                                                                 \
                if (asym) {                                                                                          \
                    kq_vf det = a * C - b * b;                                                                       \
                    kq_vf sv1 = (d * C - b * E) * (1.0f / det);                                                      \
                    kq_vf mv1 = (sv1 * b - E) * iC;                                                                  \
                    kq_vi use = (det > 0.0f) & Cpos;                                                                 \
                    sv = KQ_SEL(use, sv1, sv), mv = KQ_SEL(use, mv1, mv);                                            \
                    kq_vi neg = mv < 0.0f;                                                                           \
                    mv = KQ_SEL(neg, z, mv), sv = KQ_SEL(neg, d * ia, sv);                                           \
                    ok = ok & (sv > 0.0f);                                                                           \
                }                                                                                                    \
                ok = ok & (sv - sv == 0.0f) & (mv - mv == 0.0f);                                                     \
                kq_vf e2 = KQ_LSQ_ERR(a, b, d, sv, mv);                                                              \
                kq_vi lt = e < be;                                                                                   \
                be = KQ_SEL(lt, e, be), bs = KQ_SEL(lt, S, bs), bm = KQ_SEL(lt, M, bm);                              \
                lt = ok & (e2 < be);                                                                                 \
                be = KQ_SEL(lt, e2, be), bs = KQ_SEL(lt, sv, bs), bm = KQ_SEL(lt, mv, bm);                           \
                if (it == 0) {                                                                                       \
                    kq_vi mm = ok & ((sv != S) | (mv != M));                                                         \
                    int any = 0;                                                                                     \
                    for (int l = 0; l < NL; l++) any |= mm[l];                                                       \
                    mvd[c] = any != 0, S1[c] = KQ_SEL(ok, sv, S), M1[c] = KQ_SEL(ok, mv, M);                         \
                }                                                                                                    \
            }                                                                                                        \
        kq_vi cst = asym ? ~(hi > lo) : (xm == 0.0f);                                                                \
        bs = KQ_SEL(cst, z, bs), bm = KQ_SEL(cst, asym ? -lo : z, bm);                                               \
        memcpy(o->s + off, &bs, sizeof bs), memcpy(o->m + off, &bm, sizeof bm);                                      \
        memcpy(o->cw + off, &C, sizeof C), memcpy(o->cwx + off, &E, sizeof E);                                       \
        }                                                                                                            \
    }
KQ_FITS_FN(fit_subs_avx512, "avx512f", 64)
KQ_FITS_FN(fit_subs_avx2, "avx2", 32)
#else
#define fit_subs_avx512 fit_subs_scalar
#define fit_subs_avx2 fit_subs_scalar
#endif
static void fit_subs(const kq_spec *k, const float *xt, const float *wt, int n, kq_fitres *o) {
    if (k->path == KQ_PATH_AVX512)
        fit_subs_avx512(k, xt, wt, n, o);
    else if (k->path == KQ_PATH_AVX2)
        fit_subs_avx2(k, xt, wt, n, o);
    else
        fit_subs_scalar(k, xt, wt, n, o);
}

/* ---- super-block ---------------------------------------------------------------------------------- */

typedef struct kq_state {
    float d, dmin; /* F16 values */
    int sc[MAX_SUB], m[MAX_SUB];
    double e[MAX_SUB];
} kq_state;

/* the super-block for state passes: ax/aw[i·16 + l] = pair i of sub-block l % ns, na pairs per lane
 * (aggregate()), or (no aggregation) ax/aw = xt/wt, element i of sub-block l % ns, na = the sub-block
 * size; the final codes come from the fit layout (encode_blocks) */
typedef struct kq_block {
    int ns, na;
    float xt[32 * KQ_LANES], wt[32 * KQ_LANES];
    float at[32 * KQ_LANES], awt[32 * KQ_LANES];
    const float *ax, *aw;
    float cw[MAX_SUB], cwx[MAX_SUB]; /* Σw, Σwx of each sub-block (fit_subs) */
} kq_block;

/* Exact errors of n states (st[s]->e[j] and tot[s] = Σ_j e[j] in order, in double), 16/ns states per
 * pass, over the aggregated pairs. */
static void eval_states(const kq_spec *k, const kq_block *bk, kq_state *const *st, int n, double *tot) {
    int ns = bk->ns, per = KQ_LANES / ns;
    kq_lanes L;
    float e[KQ_LANES];
    for (int s0 = 0; s0 < n; s0 += per) {
        for (int p = 0; p < per; p++) {
            const kq_state *t = st[s0 + p < n ? s0 + p : s0];
            for (int j = 0; j < ns; j++) lane_set(&L, p * ns + j, t->d * (float)t->sc[j], t->dmin * (float)t->m[j]);
        }
        lanes_run(k, bk->na, bk->ax, bk->aw, false, &L, false, e, NULL, NULL, NULL, 0);
        for (int s = s0; s < s0 + per && s < n; s++) {
            double t = 0;
            for (int j = 0; j < ns; j++) t += st[s]->e[j] = e[(s - s0) * ns + j];
            if (tot) tot[s] = t;
        }
    }
}
static double eval_state(const kq_spec *k, const kq_block *bk, kq_state *st) {
    double t;
    eval_states(k, bk, &st, 1, &t);
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

enum { COORD_ROUNDS = 1 };
/* Each sub-block's integer scale (and min) moved to its best ±1 neighbour (scale-major order, first
 * best kept) while its error drops, at most COORD_ROUNDS times; all sub-blocks of a neighbour offset in
 * one state pass. */
static void coord_search(const kq_spec *k, const kq_block *bk, kq_state *st) {
    int ns = bk->ns, no = 0, off[8][2];
    for (int ds = -1; ds <= 1; ds++)
        for (int dm = k->mhi ? -1 : 0; dm <= (k->mhi ? 1 : 0); dm++)
            if (ds || dm) off[no][0] = ds, off[no++][1] = dm;
    kq_state nb[8], *pn[8];
    for (int round = 0; round < COORD_ROUNDS; round++) {
        for (int o = 0; o < no; o++) {
            nb[o].d = st->d, nb[o].dmin = st->dmin, pn[o] = &nb[o]; /* eval_states fills e */
            for (int j = 0; j < ns; j++) {
                nb[o].sc[j] = clampi(st->sc[j] + off[o][0], k->slo, k->shi);
                nb[o].m[j] = clampi(st->m[j] + off[o][1], 0, k->mhi);
            }
        }
        eval_states(k, bk, pn, no, NULL);
        bool moved = false;
        int bs[MAX_SUB], bm[MAX_SUB];
        for (int j = 0; j < ns; j++) {
            bs[j] = st->sc[j], bm[j] = st->m[j];
            for (int o = 0; o < no; o++) {
                int s = st->sc[j] + off[o][0], mm = st->m[j] + off[o][1];
                if (s < k->slo || s > k->shi || mm < 0 || mm > k->mhi) continue;
                if (nb[o].e[j] < st->e[j]) st->e[j] = nb[o].e[j], bs[j] = s, bm[j] = mm, moved = true;
            }
        }
        for (int j = 0; j < ns; j++) st->sc[j] = bs[j], st->m[j] = bm[j];
        if (!moved) break;
    }
}

/* Least squares of (d, dmin) with the integer scales and mins fixed and the codes those give: one
 * sums-mode state pass gives each sub-block's Σwq², Σwq, Σwqx of the state's codes (the codes the
 * error pass gives for the same S, M); with the sub-block's Σw, Σwx (fit_sub) they combine in f64
 * into the five sums of the (d, dmin) normal equations (decoded value d·sc·q − dmin·m). */
static bool super_lsq(const kq_spec *k, const kq_block *bk, const kq_state *st, float *d, float *dmin) {
    int ns = bk->ns;
    kq_lanes L;
    float sa[KQ_LANES], sb[KQ_LANES], sd[KQ_LANES];
    for (int l = 0; l < KQ_LANES; l++) {
        int j = l % ns;
        lane_set(&L, l, st->d * (float)st->sc[j], st->dmin * (float)st->m[j]);
    }
    lanes_run(k, bk->na, bk->ax, bk->aw, false, &L, true, sa, sb, sd, NULL, 0);
    double A = 0, B = 0, C = 0, D = 0, E = 0;
    for (int j = 0; j < ns; j++) {
        double a = st->sc[j], b = st->m[j];
        A += a * a * sa[j], B += a * b * sb[j], C += b * b * bk->cw[j], D += a * sd[j], E += b * bk->cwx[j];
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

enum { SUPER_ITERS = 1 };

/* The search of one super-block: bk its transposed copy (with the sub-blocks' Σw, Σwx), s/m the
 * sub-blocks' real-valued fit (fit_subs); the chosen state into out, its codes into q. */
static void encode_super(const kq_spec *k, const kq_block *bk, const float *s, const float *m, kq_state *out) {
    int ns = DSQ_KQ_BLOCK / k->sub;
    float smax = 0, mmax = 0, sext = 0;
    for (int j = 0; j < ns; j++) {
        smax = s[j] > smax ? s[j] : smax;
        mmax = m[j] > mmax ? m[j] : mmax;
        if (fabsf(s[j]) > fabsf(sext)) sext = s[j];
    }
    /* candidates: all zero, then the largest sub-block scale (and min) onto the top integer scale (and
     * min); symmetric types also the negative super-scale that puts the extreme scale onto slo; the
     * first lowest kept.  (The 3×3 grid of super-scales around these that this replaced moved
     * bench/kquant's worst error ratios by < 0.5%.) */
    kq_state cand[3], *pc[3];
    double ce[3];
    int nc = 0;
    memset(&cand[0], 0, sizeof cand[0]);
    pc[nc++] = &cand[0];
    for (int side = 0; side < (k->mhi ? 1 : 2); side++) {
        kq_state *st = &cand[nc];
        st->d = dsq__f16r(k->mhi ? smax / (float)k->shi : sext / (float)(side == 0 ? k->shi : k->slo));
        st->dmin = k->mhi ? dsq__f16r(mmax / (float)k->mhi) : 0.0f;
        round_scales(k, st, s, m);
        pc[nc++] = st;
    }
    eval_states(k, bk, pc, nc, ce);
    kq_state best = cand[0], st;
    double best_e = ce[0];
    for (int c = 1; c < nc; c++)
        if (ce[c] < best_e) best_e = ce[c], best = cand[c];
    /* refine: integer scales by coordinate search (from the errors the candidate pass left in best.e),
     * then (d, dmin) by least squares */
    st = best;
    for (int it = 0; it < SUPER_ITERS; it++) {
        coord_search(k, bk, &st);
        double e = eval_state(k, bk, &st);
        if (e < best_e) best_e = e, best = st;
        kq_state t = st;
        if (!super_lsq(k, bk, &st, &t.d, &t.dmin) || (t.d == st.d && t.dmin == st.dmin)) break;
        double e2 = eval_state(k, bk, &t);
        if (!(e2 < best_e)) break;
        best_e = e2, best = t, st = t;
        if (it + 1 < SUPER_ITERS) eval_state(k, bk, &st);
    }
    *out = best;
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
        for (int jj = 0; jj < 4; jj++) /* sub-blocks 2jj (low nibbles) and 2jj + 1 (high) */
            for (int l = 0; l < 32; l++)
                qs[32 * jj + l] = (uint8_t)((q[64 * jj + l] & 15) | ((q[64 * jj + 32 + l] & 15) << 4));
        if (five)
            for (int l = 0; l < 32; l++) {
                unsigned h = 0;
                for (int j = 0; j < 8; j++) h |= (unsigned)((q[32 * j + l] >> 4) & 1) << j;
                qh[l] = (uint8_t)h;
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
        uint8_t index_of[256] = {0}; /* code value + 128 → its index */
        for (int c = 0; c < 16; c++) index_of[kv_iq4nl[c] + 128] = (uint8_t)c;
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
            int idx = index_of[q[e] + 128];
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

/* The weights of one super-block (importance or 1; non-finite values get weight 0 and are replaced by 0
 * or the block's largest finite magnitude) into x, w.  The sums run over eight fixed lanes (element i
 * into lane i % 8, as eight-wide vector operations here: the same IEEE operations on every CPU),
 * combined in one order. */
#define KQ_SUM8(l) ((((l)[0] + (l)[4]) + ((l)[1] + (l)[5])) + (((l)[2] + (l)[6]) + ((l)[3] + (l)[7])))
/* 128-bit generic vectors (the library's baseline x86-64 code lowers wider ones element by element):
 * lanes 0-3 of the eight in h[0], 4-7 in h[1] (doubles: two per vector, h[0] … h[3]) */
typedef float kq_v4 __attribute__((vector_size(16)));
typedef int32_t kq_v4i __attribute__((vector_size(16)));
typedef double kq_v2d __attribute__((vector_size(16)));
#define KQ_LD4(p) ({ kq_v4 v_; memcpy(&v_, (p), sizeof v_); v_; })
static inline void kq_add_d(kq_v2d *h, kq_v4 lo, kq_v4 hi) { /* h[0..3] += (double) of the 8 lanes */
    h[0] += __builtin_convertvector(__builtin_shufflevector(lo, lo, 0, 1), kq_v2d);
    h[1] += __builtin_convertvector(__builtin_shufflevector(lo, lo, 2, 3), kq_v2d);
    h[2] += __builtin_convertvector(__builtin_shufflevector(hi, hi, 0, 1), kq_v2d);
    h[3] += __builtin_convertvector(__builtin_shufflevector(hi, hi, 2, 3), kq_v2d);
}
static inline void kq_add_dsq(kq_v2d *h, kq_v4 lo, kq_v4 hi) { /* h[0..3] += (double)x · (double)x */
    kq_v2d d0 = __builtin_convertvector(__builtin_shufflevector(lo, lo, 0, 1), kq_v2d);
    kq_v2d d1 = __builtin_convertvector(__builtin_shufflevector(lo, lo, 2, 3), kq_v2d);
    kq_v2d d2 = __builtin_convertvector(__builtin_shufflevector(hi, hi, 0, 1), kq_v2d);
    kq_v2d d3 = __builtin_convertvector(__builtin_shufflevector(hi, hi, 2, 3), kq_v2d);
    h[0] += d0 * d0, h[1] += d1 * d1, h[2] += d2 * d2, h[3] += d3 * d3;
}
static inline void kq_unpack_d(const kq_v2d *h, double *l8) {
    for (int l = 0; l < 8; l++) l8[l] = h[l / 2][l % 2];
}
/* returns whether every value of the block is finite */
static bool prep_block_generic(const kq_spec *k, const float *src, const float *imp, float *x, float *w) {
    kq_v4i bad = {0};
    for (int i = 0; i < DSQ_KQ_BLOCK; i += 4) {
        kq_v4i b;
        memcpy(&b, src + i, sizeof b);
        bad |= (b & 0x7f800000) == 0x7f800000;
    }
    bool all_fin = (bad[0] | bad[1] | bad[2] | bad[3]) == 0;
    double l8[8] = {0};
    if (all_fin) {
        memcpy(x, src, DSQ_KQ_BLOCK * sizeof(float));
        if (imp) {
            memcpy(w, imp, DSQ_KQ_BLOCK * sizeof(float));
            kq_v2d h[4] = {{0}};
            for (int i = 0; i < DSQ_KQ_BLOCK; i += 8) kq_add_dsq(h, KQ_LD4(x + i), KQ_LD4(x + i + 4));
            kq_unpack_d(h, l8);
        } else
            for (int i = 0; i < DSQ_KQ_BLOCK; i++) w[i] = 1.0f;
    } else {
        bool fin[DSQ_KQ_BLOCK];
        float amax = 0;
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
            fin[i] = dsq__finite(src[i]);
            if (fin[i] && fabsf(src[i]) > amax) amax = fabsf(src[i]);
        }
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
            w[i] = imp ? imp[i] : 1.0f;
            x[i] = src[i];
            if (!fin[i]) {
                x[i] = src[i] != src[i] ? 0.0f : copysignf(amax, src[i]);
                w[i] = 0.0f;
            }
            l8[i & 7] += fin[i] ? (double)x[i] * x[i] : 0.0;
        }
    }
    /* with an imatrix, w = importance · sqrt(σ² + x²), σ² the block's mean x² (ggml's weighting in
     * quantize_row_q*_K_impl): on the trained tiny V4 the plain importance lowered the weighted
     * error but raised KL at q2_k/q3_k (the fit gave up large weights of quiet columns); this form
     * lowered KL at q2_k, q3_k and q4_k (docs/interop.md).  The square root is correctly rounded
     * (IEEE) in both forms below. */
    if (imp) {
        float sig2 = (float)(KQ_SUM8(l8) / DSQ_KQ_BLOCK);
#if defined(__x86_64__)
        __m128 s2 = _mm_set1_ps(sig2);
        for (int i = 0; i < DSQ_KQ_BLOCK; i += 4) {
            __m128 xv = _mm_loadu_ps(x + i);
            _mm_storeu_ps(w + i, _mm_mul_ps(_mm_loadu_ps(w + i), _mm_sqrt_ps(_mm_add_ps(s2, _mm_mul_ps(xv, xv)))));
        }
#else
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) w[i] *= sqrtf(sig2 + x[i] * x[i]);
#endif
    }
    kq_v4 m4 = {0}; /* the largest weight: w > m ? w : m per lane (an order-free maximum) */
    for (int i = 0; i < DSQ_KQ_BLOCK; i += 4) {
        kq_v4 wv = KQ_LD4(w + i);
        kq_v4i gt = wv > m4;
        m4 = (kq_v4)(((kq_v4i)wv & gt) | ((kq_v4i)m4 & ~gt));
    }
    float wmax = 0;
    for (int l = 0; l < 4; l++) wmax = m4[l] > wmax ? m4[l] : wmax;
    /* weights scaled to a largest of 1: the f32 error sums of the lane passes neither overflow nor
     * underflow for any finite importance (the minimiser does not change) */
    float wscale = wmax > 0 ? 1.0f / wmax : 1.0f;
    if (!isfinite(wscale)) wscale = 0x1p126f; /* wmax subnormal */
    /* a sub-block without weight still gets a sensible fit, at a weight too small to sway the rest */
    kq_v2d s8[4] = {{0}};
    double jsum[MAX_SUB];
    int ns = DSQ_KQ_BLOCK / k->sub;
    for (int j = 0; j < ns; j++) {
        kq_v2d j8[4] = {{0}};
        for (int i = j * k->sub; i < (j + 1) * k->sub; i += 8) {
            kq_v4 lo = KQ_LD4(w + i) * wscale, hi = KQ_LD4(w + i + 4) * wscale;
            memcpy(w + i, &lo, sizeof lo), memcpy(w + i + 4, &hi, sizeof hi);
            kq_add_d(s8, lo, hi), kq_add_d(j8, lo, hi);
        }
        double t[8];
        kq_unpack_d(j8, t);
        jsum[j] = KQ_SUM8(t);
    }
    double t8[8];
    kq_unpack_d(s8, t8);
    double wsum = KQ_SUM8(t8);
    float tiny = wsum > 0 ? (float)(wsum / DSQ_KQ_BLOCK * 1e-6) : 1.0f;
    for (int j = 0; j < ns; j++)
        if (!(jsum[j] > 0))
            for (int i = j * k->sub; i < (j + 1) * k->sub; i++) w[i] = tiny;
    return all_fin;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* prep_block_generic of an all-finite block in 256-bit vectors: the same IEEE operations per element and
 * per f64 lane (lane i % 8 of the eight: lanes 0-3 from x[i..i+3], 4-7 from x[i+4..i+7]; the
 * largest weight is the same value whatever the lanes); a block holding NaN/Inf goes to the generic
 * code.  ~9% of a q4_k FP4 convert was this prep in 128-bit vectors. */
__attribute__((target("avx2"))) static bool prep_block_avx2(const kq_spec *k, const float *src, const float *imp,
                                                            float *x, float *w) {
    __m256i bad = _mm256_setzero_si256(), inf = _mm256_set1_epi32(0x7f800000);
    for (int i = 0; i < DSQ_KQ_BLOCK; i += 8) {
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i));
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(b, inf), inf));
    }
    if (!_mm256_testz_si256(bad, bad)) return prep_block_generic(k, src, imp, x, w);
    memcpy(x, src, DSQ_KQ_BLOCK * sizeof(float));
    if (imp) {
        __m256d h0 = _mm256_setzero_pd(), h1 = h0;
        for (int i = 0; i < DSQ_KQ_BLOCK; i += 8) {
            __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), b = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
            h0 = _mm256_add_pd(h0, _mm256_mul_pd(a, a)), h1 = _mm256_add_pd(h1, _mm256_mul_pd(b, b));
        }
        double l8[8];
        _mm256_storeu_pd(l8, h0), _mm256_storeu_pd(l8 + 4, h1);
        __m256 s2 = _mm256_set1_ps((float)(KQ_SUM8(l8) / DSQ_KQ_BLOCK));
        for (int i = 0; i < DSQ_KQ_BLOCK; i += 8) {
            __m256 xv = _mm256_loadu_ps(x + i);
            _mm256_storeu_ps(w + i, _mm256_mul_ps(_mm256_loadu_ps(imp + i),
                                                  _mm256_sqrt_ps(_mm256_add_ps(s2, _mm256_mul_ps(xv, xv)))));
        }
    } else
        for (int i = 0; i < DSQ_KQ_BLOCK; i += 8) _mm256_storeu_ps(w + i, _mm256_set1_ps(1.0f));
    __m256 m8 = _mm256_setzero_ps(); /* w > m ? w : m (NaN never taken) */
    for (int i = 0; i < DSQ_KQ_BLOCK; i += 8) m8 = _mm256_max_ps(_mm256_loadu_ps(w + i), m8);
    float m[8], wmax = 0;
    _mm256_storeu_ps(m, m8);
    for (int l = 0; l < 8; l++) wmax = m[l] > wmax ? m[l] : wmax;
    float wscale = wmax > 0 ? 1.0f / wmax : 1.0f;
    if (!isfinite(wscale)) wscale = 0x1p126f;
    __m256 ws = _mm256_set1_ps(wscale);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    double jsum[MAX_SUB];
    int ns = DSQ_KQ_BLOCK / k->sub;
    for (int j = 0; j < ns; j++) {
        __m256d j0 = _mm256_setzero_pd(), j1 = j0;
        for (int i = j * k->sub; i < (j + 1) * k->sub; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(w + i), ws);
            _mm256_storeu_ps(w + i, v);
            __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
            s0 = _mm256_add_pd(s0, lo), s1 = _mm256_add_pd(s1, hi), j0 = _mm256_add_pd(j0, lo), j1 = _mm256_add_pd(j1, hi);
        }
        double t[8];
        _mm256_storeu_pd(t, j0), _mm256_storeu_pd(t + 4, j1);
        jsum[j] = KQ_SUM8(t);
    }
    double t8[8];
    _mm256_storeu_pd(t8, s0), _mm256_storeu_pd(t8 + 4, s1);
    double wsum = KQ_SUM8(t8);
    float tiny = wsum > 0 ? (float)(wsum / DSQ_KQ_BLOCK * 1e-6) : 1.0f;
    for (int j = 0; j < ns; j++)
        if (!(jsum[j] > 0))
            for (int i = j * k->sub; i < (j + 1) * k->sub; i++) w[i] = tiny;
    return true;
}
#endif

/* the weights of one super-block (prep_block_generic; the AVX2 twin on the vector paths: same floats) */
static bool prep_block(const kq_spec *k, const float *src, const float *imp, float *x, float *w) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (k->path != KQ_PATH_SCALAR) return prep_block_avx2(k, src, imp, x, w);
#endif
    return prep_block_generic(k, src, imp, x, w);
}

/* Few distinct values (issue 13: an FP4 expert decodes to at most 15 values, s·e2m1, per 32 columns):
 * every pass except the codes pass sums per element terms that depend on x only through the code of x,
 * so the sub-block's elements of one value can enter as one (value, summed weight) pair.  When every
 * one of the sixteen lanes (sub-blocks, xt[i·16 + l], i < n) holds only zeros and normal values whose
 * mantissa is 0 or 0.5 (e2m1's 1 and 1.5) over four binades, each value has one of 17 keys (zero; sign,
 * binade above the lane's lowest, mantissa bit) and the lane's pairs are written in key order to
 * at/aw[c·16 + l] (weights summed in element order; a short lane padded with its first value at
 * weight 0, which adds nothing and moves no range), cnt[l] = its count.  Returns the longest count, or
 * 0 (no aggregation) when some lane does not qualify or nothing would be saved.  The same operations
 * on every CPU (no vector twin: its output is the input of the twins). */
enum { KQ_BINS = 17 };
/* the bits of key k's value less the lane's lowest binade: 0 (zero), else sign (k−1)/8, binade
 * ((k−1) % 8)/2 above the lowest, mantissa bit (k−1) % 2 */
#define KQ_KB(k) ((uint32_t)(((k) - 1) / 8) << 31 | (uint32_t)((((k) - 1) % 8) / 2) << 23 | (uint32_t)(((k) - 1) % 2) << 22)
static const uint32_t key_bits[KQ_BINS] = {0,       KQ_KB(1),  KQ_KB(2),  KQ_KB(3),  KQ_KB(4),  KQ_KB(5),
                                           KQ_KB(6), KQ_KB(7),  KQ_KB(8),  KQ_KB(9),  KQ_KB(10), KQ_KB(11),
                                           KQ_KB(12), KQ_KB(13), KQ_KB(14), KQ_KB(15), KQ_KB(16)};
#undef KQ_KB
static int aggregate(int n, const float *xt, const float *wt, float *at, float *aw, int *cnt) {
    kq_v4i bad[4], emin[4], emax[4];
    for (int g = 0; g < 4; g++) bad[g] = (kq_v4i){0}, emin[g] = (kq_v4i){0} + 255, emax[g] = (kq_v4i){0};
    for (int i = 0; i < n; i++)
        for (int g = 0; g < 4; g++) {
            kq_v4i b;
            memcpy(&b, xt + i * KQ_LANES + 4 * g, sizeof b);
            kq_v4i nz = (b & 0x7fffffff) != 0, E = (b >> 23) & 0xff;
            bad[g] |= nz & (((b & 0x3fffff) != 0) | (E == 0));
            kq_v4i lt = nz & (E < emin[g]), gt = nz & (E > emax[g]);
            emin[g] = (E & lt) | (emin[g] & ~lt), emax[g] = (E & gt) | (emax[g] & ~gt);
        }
    for (int l = 0; l < KQ_LANES; l++) {
        int g = l / 4, r = l % 4;
        if (bad[g][r] || (emax[g][r] >= emin[g][r] && emax[g][r] - emin[g][r] > 3)) return 0;
    }
    /* keys, four lanes at a time; then the weights into their bins in element order */
    int32_t key[32 * KQ_LANES]; /* whole vectors stored: extracting bytes lane by lane cost more */
    for (int i = 0; i < n; i++)
        for (int g = 0; g < 4; g++) {
            kq_v4i b;
            memcpy(&b, xt + i * KQ_LANES + 4 * g, sizeof b);
            kq_v4i nz = (b & 0x7fffffff) != 0;
            kq_v4i kk = (1 + ((b >> 31) & 1) * 8 + (((b >> 23) & 0xff) - emin[g]) * 2 + ((b >> 22) & 1)) & nz;
            memcpy(key + i * KQ_LANES + 4 * g, &kk, sizeof kk);
        }
    float W[KQ_LANES][KQ_BINS] = {{0}};
    uint32_t seen[KQ_LANES] = {0};
    for (int i = 0; i < n; i++)
        for (int l = 0; l < KQ_LANES; l++) {
            int kk = key[i * KQ_LANES + l];
            W[l][kk] += wt[i * KQ_LANES + l];
            seen[l] |= 1u << kk;
        }
    int nmax = 0;
    for (int l = 0; l < KQ_LANES; l++) {
        int c = 0;
        uint32_t e0 = (uint32_t)emin[l / 4][l % 4] << 23;
        for (uint32_t m = seen[l]; m; m &= m - 1, c++) {
            int kk = __builtin_ctz(m);
            uint32_t bits = key_bits[kk] + (kk ? e0 : 0); /* the value of key kk */
            float v;
            memcpy(&v, &bits, 4);
            at[c * KQ_LANES + l] = v, aw[c * KQ_LANES + l] = W[l][kk];
        }
        cnt[l] = c;
        nmax = c > nmax ? c : nmax;
    }
    if (nmax >= n) return 0;
    for (int l = 0; l < KQ_LANES; l++)
        for (int c = cnt[l]; c < nmax; c++) at[c * KQ_LANES + l] = at[l], aw[c * KQ_LANES + l] = 0.0f;
    return nmax;
}

/* src [ns][sub] (a block in element order) into dst[i·16 + j] = src[j·sub + i], by 4×4 transposes of
 * 128-bit vectors (ns and sub are multiples of 4; the scalar gather was ~3% of a convert) */
static void transpose_in(const float *src, int ns, int sub, float *dst) {
    for (int j = 0; j < ns; j += 4)
        for (int i = 0; i < sub; i += 4) {
            kq_v4 r0 = KQ_LD4(src + j * sub + i), r1 = KQ_LD4(src + (j + 1) * sub + i);
            kq_v4 r2 = KQ_LD4(src + (j + 2) * sub + i), r3 = KQ_LD4(src + (j + 3) * sub + i);
            kq_v4 t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5), t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
            kq_v4 t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5), t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
            kq_v4 c[4] = {__builtin_shufflevector(t0, t2, 0, 1, 4, 5), __builtin_shufflevector(t0, t2, 2, 3, 6, 7),
                          __builtin_shufflevector(t1, t3, 0, 1, 4, 5), __builtin_shufflevector(t1, t3, 2, 3, 6, 7)};
            for (int r = 0; r < 4; r++) memcpy(dst + (i + r) * KQ_LANES + j, &c[r], sizeof c[r]);
        }
}

/* Blocks b0 … b0+n−1 (n ≤ 16/ns) of the flat block list (nb blocks per row): weights, one fit of all
 * their sub-blocks (lane u·ns + j = sub-block j of block u; a missing block's lanes repeat the first
 * block), the searches and the packing.  A block's state passes read bk[u].xt[i·16 + l] = element i of
 * its sub-block l % ns.  Without allow_nonfinite, a block holding NaN/Inf stops the call before its bytes
 * are written: returns its index (else -1). */
static int64_t encode_blocks(const kq_spec *k, const float *x, const float *importance, uint64_t nb, uint64_t b0,
                             int n, bool allow_nonfinite, uint8_t *dst) {
    int ns = DSQ_KQ_BLOCK / k->sub, per = KQ_LANES / ns, sub = k->sub;
    float xb[2][DSQ_KQ_BLOCK], wb[2][DSQ_KQ_BLOCK];
    kq_block bk[2];
    float *fx = bk[0].xt, *fw = bk[0].wt, fxb[32 * KQ_LANES], fwb[32 * KQ_LANES];
    if (per > 1) fx = fxb, fw = fwb;
    for (int u = 0; u < per; u++) {
        int v = u < n ? u : 0;
        if (u == v) {
            uint64_t b = b0 + (uint64_t)u;
            if (!prep_block(k, x + b * DSQ_KQ_BLOCK, importance ? importance + (b % nb) * DSQ_KQ_BLOCK : NULL, xb[u],
                            wb[u]) &&
                !allow_nonfinite)
                return (int64_t)b;
        }
        transpose_in(xb[v], ns, sub, fx + u * ns), transpose_in(wb[v], ns, sub, fw + u * ns);
    }
    kq_fitres fr;
    float ax[32 * KQ_LANES], aw[32 * KQ_LANES];
    int cnt[KQ_LANES], na = aggregate(sub, fx, fw, ax, aw, cnt);
    fit_subs(k, na ? ax : fx, na ? aw : fw, na ? na : sub, &fr);
    kq_state st[2];
    for (int u = 0; u < n; u++) {
        kq_block *bu = &bk[u];
        bu->ns = ns;
        if (per > 1 && !na)
            for (int i = 0; i < sub; i++) {
                memcpy(bu->xt + i * KQ_LANES, fx + i * KQ_LANES + u * ns, 8 * sizeof(float));
                memcpy(bu->xt + i * KQ_LANES + 8, fx + i * KQ_LANES + u * ns, 8 * sizeof(float));
                memcpy(bu->wt + i * KQ_LANES, fw + i * KQ_LANES + u * ns, 8 * sizeof(float));
                memcpy(bu->wt + i * KQ_LANES + 8, fw + i * KQ_LANES + u * ns, 8 * sizeof(float));
            }
        bu->ax = bu->xt, bu->aw = bu->wt, bu->na = sub;
        if (na && per == 1)
            bu->ax = ax, bu->aw = aw, bu->na = na;
        else if (na) { /* this block's lanes of the pairs, duplicated as its state layout */
            int nu = 0;
            for (int j = 0; j < ns; j++) nu = cnt[u * ns + j] > nu ? cnt[u * ns + j] : nu;
            for (int i = 0; i < nu; i++) {
                memcpy(bu->at + i * KQ_LANES, ax + i * KQ_LANES + u * ns, 8 * sizeof(float));
                memcpy(bu->at + i * KQ_LANES + 8, ax + i * KQ_LANES + u * ns, 8 * sizeof(float));
                memcpy(bu->awt + i * KQ_LANES, aw + i * KQ_LANES + u * ns, 8 * sizeof(float));
                memcpy(bu->awt + i * KQ_LANES + 8, aw + i * KQ_LANES + u * ns, 8 * sizeof(float));
            }
            bu->ax = bu->at, bu->aw = bu->awt, bu->na = nu;
        }
        memcpy(bu->cw, fr.cw + u * ns, (size_t)ns * sizeof(float));
        memcpy(bu->cwx, fr.cwx + u * ns, (size_t)ns * sizeof(float));
        encode_super(k, bu, fr.s + u * ns, fr.m + u * ns, &st[u]);
    }
    /* the codes of every block's chosen state in one pass over the fit layout (lane u·ns + j: block u's
     * sub-block j, codes to q[(u·ns + j)·sub + i], i.e. block u's in element order at q + 256u) */
    kq_lanes L;
    float e[KQ_LANES];
    int8_t q[KQ_LANES * 32];
    for (int l = 0; l < KQ_LANES; l++) {
        const kq_state *t = &st[l / ns < n ? l / ns : 0];
        int j = l % ns;
        lane_set(&L, l, t->d * (float)t->sc[j], t->dmin * (float)t->m[j]);
    }
    lanes_run(k, sub, fx, fw, false, &L, false, e, NULL, NULL, q, KQ_LANES);
    for (int u = 0; u < n; u++) pack(k, &st[u], q + u * DSQ_KQ_BLOCK, dst + (b0 + (uint64_t)u) * (uint64_t)k->bytes);
    return -1;
}

dsq_status dsq_kquant_encode(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols, const float *importance,
                             bool allow_nonfinite, void *dst, dsq_err *err) {
    return dsq__kquant_encode_isa(enc, x, rows, cols, importance, allow_nonfinite, dst, dsq_codec_best_isa(), err);
}

dsq_status dsq__kquant_encode_isa(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols,
                                  const float *importance, bool allow_nonfinite, void *dst, dsq_isa isa, dsq_err *err) {
    int path = KQ_PATH_SCALAR;
#if defined(__x86_64__) && defined(__GNUC__)
    if (dsq__isa_resolve(isa) == DSQ_ISA_AVX2)
        path = __builtin_cpu_supports("avx512f") ? KQ_PATH_AVX512 : KQ_PATH_AVX2;
#endif
    return dsq__kquant_encode_path(enc, x, rows, cols, importance, allow_nonfinite, dst, path, err);
}

dsq_status dsq__kquant_encode_path(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols,
                                   const float *importance, bool allow_nonfinite, void *dst, int path, dsq_err *err) {
    const kq_spec *spec = spec_of(enc);
    kq_spec ks;
    const kq_spec *k = NULL;
    if (spec) {
        ks = *spec;
        ks.path = path;
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
    /* the flat list of blocks (rows are contiguous), 16/ns per fit */
    uint64_t total = rows * nb, per = (uint64_t)(KQ_LANES / (DSQ_KQ_BLOCK / k->sub));
    for (uint64_t b0 = 0; b0 < total; b0 += per) {
        int64_t bad = encode_blocks(k, x, importance, nb, b0, (int)(total - b0 < per ? total - b0 : per),
                                    allow_nonfinite, (uint8_t *)dst);
        if (bad >= 0) /* the first non-finite element (blocks run in row order) */
            for (uint64_t i = (uint64_t)bad * DSQ_KQ_BLOCK;; i++)
                DSQ_RETURN_IF(!dsq__finite(x[i]), err, DSQ_ERR_NONFINITE, "element [%llu, %llu] is %s",
                              (unsigned long long)(i / cols), (unsigned long long)(i % cols),
                              x[i] != x[i] ? "NaN" : "infinite");
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
