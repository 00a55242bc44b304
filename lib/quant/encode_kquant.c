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
 * else error mode (o0; codes into q[i·16 + l] when q) */
static void lanes_scalar(const kq_spec *k, int n, const float *x, const float *w, bool bc, const kq_lanes *L,
                         bool sums, float *o0, float *o1, float *o2, int8_t *q) {
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
                if (q) q[i * KQ_LANES + l] = (int8_t)qi;
            }
        }
        o0[l] = a;
        if (sums) o1[l] = b, o2[l] = c;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
typedef float kq_vf __attribute__((vector_size(64)));
typedef int32_t kq_vi __attribute__((vector_size(64)));
/* the body of a vector twin: XI/WI are the element's x and w (a float, broadcast by the vector
 * operators, or a vector of sixteen lanes); a macro, not a function, so that no 64-byte vector crosses a
 * call (its ABI differs between the AVX2 and AVX-512 instantiations) */
#define KQ_LANES_BODY(XI, WI)                                                                                   \
    do {                                                                                                        \
        kq_vf S, M, inv, a = {0}, b = {0}, c = {0}, z = {0};                                                    \
        memcpy(&S, L->S, sizeof S), memcpy(&M, L->M, sizeof M);                                                 \
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
                    for (int l = 0; l < KQ_LANES; l++) q[i * KQ_LANES + l] = (int8_t)qq[l];                     \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        memcpy(o0, &a, sizeof a);                                                                               \
        if (sums) memcpy(o1, &b, sizeof b), memcpy(o2, &c, sizeof c);                                           \
    } while (0)
#define KQ_LOADV(p) ({ kq_vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define KQ_LANES_FN(name, tgt)                                                                                   \
    __attribute__((target(tgt))) static void name(const kq_spec *k, int n, const float *x, const float *w, bool bc, \
                                                  const kq_lanes *L, bool sums, float *o0, float *o1, float *o2,     \
                                                  int8_t *q) {                                                       \
        if (bc)                                                                                                      \
            KQ_LANES_BODY(x[i], w[i]);                                                                               \
        else                                                                                                         \
            KQ_LANES_BODY(KQ_LOADV(x + i * KQ_LANES), KQ_LOADV(w + i * KQ_LANES));                                   \
    }
KQ_LANES_FN(lanes_avx512, "avx512f")
KQ_LANES_FN(lanes_avx2, "avx2")
#else
#define lanes_avx512 lanes_scalar
#define lanes_avx2 lanes_scalar
#endif

static inline void lanes_run(const kq_spec *k, int n, const float *x, const float *w, bool bc, const kq_lanes *L,
                             bool sums, float *o0, float *o1, float *o2, int8_t *q) {
    if (k->path == KQ_PATH_AVX512)
        lanes_avx512(k, n, x, w, bc, L, sums, o0, o1, o2, q);
    else if (k->path == KQ_PATH_AVX2)
        lanes_avx2(k, n, x, w, bc, L, sums, o0, o1, o2, q);
    else
        lanes_scalar(k, n, x, w, bc, L, sums, o0, o1, o2, q);
}

/* One least-squares step for the sixteen lanes of a fit pass (sums A = Σwq², B = Σwq, D = Σwqx of each
 * lane's codes; C = Σw, E = Σwx, xx = Σwx² of the sub-block): e = the error of the lane's (S, M) from the
 * expanded sums, (s2, m2) = the weighted least-squares point (m ≥ 0 for the asymmetric types, else 0)
 * and e2 its error, ok = that point exists and is finite (asymmetric: s2 > 0).  In f32 (the fit only
 * seeds the exact integer search); the vector twins perform the same IEEE operations per lane (both
 * branches computed, one selected), so they give the same numbers as the scalar loop. */
typedef struct kq_fit {
    float e[KQ_LANES], s2[KQ_LANES], m2[KQ_LANES], e2[KQ_LANES];
    int32_t ok[KQ_LANES];
} kq_fit;
#define KQ_LSQ_ERR(A, B, D, s, m) (xx + (s) * (s) * (A) + (m) * (m) * C - 2.0f * (s) * (D) + 2.0f * (m) * E - 2.0f * (s) * (m) * (B))
static void fit_step_scalar(bool asym, const float *A, const float *B, const float *D, const kq_lanes *L, float C,
                            float E, float xx, kq_fit *o) {
    float iC = 1.0f / C;
    for (int l = 0; l < KQ_LANES; l++) {
        float a = A[l], b = B[l], d = D[l], s = L->S[l], m = L->M[l];
        o->e[l] = KQ_LSQ_ERR(a, b, d, s, m);
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
        o->s2[l] = sv, o->m2[l] = mv, o->ok[l] = ok ? -1 : 0, o->e2[l] = KQ_LSQ_ERR(a, b, d, sv, mv);
    }
}
#if defined(__x86_64__) && defined(__GNUC__)
#define KQ_SEL(m, a, b) ((kq_vf)(((kq_vi)(a) & (m)) | ((kq_vi)(b) & ~(m))))
#define KQ_FIT_FN(name, tgt)                                                                                     \
    __attribute__((target(tgt))) static void name(bool asym, const float *A, const float *B, const float *D,       \
                                                  const kq_lanes *L, float C, float E, float xx, kq_fit *o) {     \
        float iC = 1.0f / C;                                                                                     \
        kq_vf a, b, d, s, m, z = {0};                                                                            \
        memcpy(&a, A, sizeof a), memcpy(&b, B, sizeof b), memcpy(&d, D, sizeof d);                              \
        memcpy(&s, L->S, sizeof s), memcpy(&m, L->M, sizeof m);                                                  \
        kq_vf e = KQ_LSQ_ERR(a, b, d, s, m);                                                                     \
        kq_vf ia = 1.0f / a, sv = d * ia, mv = z;                                                                \
        kq_vi ok = a > 0.0f;                                                                                     \
        if (asym) {                                                                                              \
            kq_vf det = a * C - b * b;                                                                           \
            kq_vf sv1 = (d * C - b * E) * (1.0f / det);                                                          \
            kq_vf mv1 = (sv1 * b - E) * iC;                                                                      \
            kq_vi use = (det > 0.0f) & (kq_vi)((z + (C > 0 ? 1.0f : 0.0f)) != 0.0f);                             \
            sv = KQ_SEL(use, sv1, sv), mv = KQ_SEL(use, mv1, mv);                                                \
            kq_vi neg = mv < 0.0f;                                                                               \
            mv = KQ_SEL(neg, z, mv), sv = KQ_SEL(neg, d * ia, sv);                                               \
            ok = ok & (sv > 0.0f);                                                                               \
        }                                                                                                        \
        ok = ok & (sv - sv == 0.0f) & (mv - mv == 0.0f);                                                         \
        kq_vf e2 = KQ_LSQ_ERR(a, b, d, sv, mv);                                                                  \
        memcpy(o->e, &e, sizeof e), memcpy(o->s2, &sv, sizeof sv), memcpy(o->m2, &mv, sizeof mv);                \
        memcpy(o->e2, &e2, sizeof e2), memcpy(o->ok, &ok, sizeof ok);                                            \
    }
KQ_FIT_FN(fit_step_avx512, "avx512f")
KQ_FIT_FN(fit_step_avx2, "avx2")
#else
#define fit_step_avx512 fit_step_scalar
#define fit_step_avx2 fit_step_scalar
#endif

/* the sixteen starting scales of the sub-block fit, as factors of the plain range rule: asymmetric types
 * take all sixteen, symmetric ones the first eight on each side (extreme onto qlo, onto qhi) */
static const float fit_factors[KQ_LANES] = {1.0f,  0.96f, 0.92f, 0.88f, 0.84f, 0.80f, 0.76f, 0.72f,
                                            0.68f, 0.64f, 0.60f, 1.04f, 1.08f, 0.56f, 0.52f, 1.12f};
static const float fit_factors_sym[KQ_LANES / 2] = {1.0f, 0.94f, 0.88f, 0.82f, 0.76f, 0.70f, 0.64f, 1.06f};
enum { SUB_ITERS = 2 };

/* Real-valued scale (and min ≥ 0) of one sub-block: sixteen candidate ranges in the lanes of one pass,
 * each refined by least squares with the codes fixed (up to SUB_ITERS passes: nearest codes and their
 * sums → least squares), the lowest weighted error kept; the errors come from the sums (lsq_err).  The
 * result only seeds the integer search of encode_super, which evaluates the decoded values exactly. */
static void fit_sub(const kq_spec *k, const float *x, const float *w, float *s_out, float *m_out) {
    float best_s = 0, best_m = 0, best_e = INFINITY;
    float lo = 0, hi = x[0], xm = 0; /* lo = min(0, min x): the min is never positive */
    if (k->mhi)
        for (int i = 0; i < k->sub; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
    else
        for (int i = 0; i < k->sub; i++)
            if (fabsf(x[i]) > fabsf(xm)) xm = x[i];
    /* Σwx², Σw, Σwx in f32, element i into lane i % 8 (the same operations wherever this runs) */
    typedef float v8 __attribute__((vector_size(32)));
    v8 sxx = {0}, sw = {0}, swx = {0};
    for (int i = 0; i < k->sub; i += 8) {
        v8 xv, wv;
        memcpy(&xv, x + i, sizeof xv), memcpy(&wv, w + i, sizeof wv);
        v8 wx = wv * xv;
        sxx = sxx + wx * xv, sw = sw + wv, swx = swx + wx;
    }
#define KQ_SUM8(v) ((((v)[0] + (v)[4]) + ((v)[1] + (v)[5])) + (((v)[2] + (v)[6]) + ((v)[3] + (v)[7])))
    float xx = KQ_SUM8(sxx), C = KQ_SUM8(sw), E = KQ_SUM8(swx);
#undef KQ_SUM8
    if (k->mhi) {
        if (!(hi > lo)) { /* a constant block */
            *s_out = 0, *m_out = -lo;
            return;
        }
    } else if (xm == 0.0f) {
        *s_out = 0, *m_out = 0;
        return;
    }
    kq_lanes L;
    for (int c = 0; c < KQ_LANES; c++) {
        /* asymmetric: [lo, hi] onto [0, qhi]; symmetric: the extreme onto qlo (c < 8) or qhi */
        float base = k->mhi ? (hi - lo) / (float)k->qhi : xm / (float)(c < KQ_LANES / 2 ? k->qlo : k->qhi);
        lane_set(&L, c, base * (k->mhi ? fit_factors[c] : fit_factors_sym[c % (KQ_LANES / 2)]), k->mhi ? -lo : 0.0f);
    }
    kq_fit o;
    float A[KQ_LANES], B[KQ_LANES], D[KQ_LANES];
    for (int it = 0; it < SUB_ITERS; it++) {
        lanes_run(k, k->sub, x, w, true, &L, true, A, B, D, NULL);
        if (k->path == KQ_PATH_AVX512)
            fit_step_avx512(k->mhi > 0, A, B, D, &L, C, E, xx, &o);
        else if (k->path == KQ_PATH_AVX2)
            fit_step_avx2(k->mhi > 0, A, B, D, &L, C, E, xx, &o);
        else
            fit_step_scalar(k->mhi > 0, A, B, D, &L, C, E, xx, &o);
        /* the lowest error in the order e[0], e2[0], e[1], e2[1], … (e2 only where ok; the first of
         * equal ones; NaN never), if below the best so far: branch-free scans, then one search */
        float lo_e = INFINITY;
        int moved = 0;
        for (int c = 0; c < KQ_LANES; c++) {
            float e2 = o.ok[c] ? o.e2[c] : INFINITY;
            lo_e = o.e[c] < lo_e ? o.e[c] : lo_e;
            lo_e = e2 < lo_e ? e2 : lo_e;
        }
        if (lo_e < best_e)
            for (int c = 0; c < KQ_LANES; c++) {
                if (o.e[c] == lo_e) {
                    best_e = lo_e, best_s = L.S[c], best_m = L.M[c];
                    break;
                }
                if (o.ok[c] && o.e2[c] == lo_e) {
                    best_e = lo_e, best_s = o.s2[c], best_m = o.m2[c];
                    break;
                }
            }
        for (int c = 0; c < KQ_LANES; c++) {
            int ok = o.ok[c] != 0;
            moved |= ok & ((o.s2[c] != L.S[c]) | (o.m2[c] != L.M[c]));
            L.S[c] = ok ? o.s2[c] : L.S[c], L.M[c] = ok ? o.m2[c] : L.M[c];
        }
        if (!moved) break;
    }
    *s_out = best_s, *m_out = best_m;
}

/* ---- super-block ---------------------------------------------------------------------------------- */

typedef struct kq_state {
    float d, dmin; /* F16 values */
    int sc[MAX_SUB], m[MAX_SUB];
    double e[MAX_SUB];
} kq_state;

/* the super-block transposed for state passes: xt[i·16 + l] = element i of sub-block l % ns */
typedef struct kq_block {
    int ns;
    float xt[32 * KQ_LANES], wt[32 * KQ_LANES];
} kq_block;

/* Exact errors of n states (st[s]->e[j] and tot[s] = Σ_j e[j] in order, in double), 16/ns states per
 * pass; codes q (element order) of st[0] when q (n = 1). */
static void eval_states(const kq_spec *k, const kq_block *bk, kq_state *const *st, int n, double *tot, int8_t *q) {
    int ns = bk->ns, per = KQ_LANES / ns;
    kq_lanes L;
    float e[KQ_LANES];
    int8_t qt[32 * KQ_LANES];
    for (int s0 = 0; s0 < n; s0 += per) {
        for (int p = 0; p < per; p++) {
            const kq_state *t = st[s0 + p < n ? s0 + p : s0];
            for (int j = 0; j < ns; j++) lane_set(&L, p * ns + j, t->d * (float)t->sc[j], t->dmin * (float)t->m[j]);
        }
        lanes_run(k, k->sub, bk->xt, bk->wt, false, &L, false, e, NULL, NULL, q ? qt : NULL);
        for (int s = s0; s < s0 + per && s < n; s++) {
            double t = 0;
            for (int j = 0; j < ns; j++) t += st[s]->e[j] = e[(s - s0) * ns + j];
            if (tot) tot[s] = t;
        }
    }
    if (q)
        for (int j = 0; j < ns; j++)
            for (int i = 0; i < k->sub; i++) q[j * k->sub + i] = qt[i * KQ_LANES + j];
}
static double eval_state(const kq_spec *k, const kq_block *bk, kq_state *st, int8_t *q) {
    double t;
    eval_states(k, bk, &st, 1, &t, q);
    return t;
}

static bool same_scales(int ns, const kq_state *a, const kq_state *b) {
    if (a->d != b->d || a->dmin != b->dmin) return false;
    for (int j = 0; j < ns; j++)
        if (a->sc[j] != b->sc[j] || a->m[j] != b->m[j]) return false;
    return true;
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
            nb[o] = *st, pn[o] = &nb[o];
            for (int j = 0; j < ns; j++) {
                nb[o].sc[j] = clampi(st->sc[j] + off[o][0], k->slo, k->shi);
                nb[o].m[j] = clampi(st->m[j] + off[o][1], 0, k->mhi);
            }
        }
        eval_states(k, bk, pn, no, NULL, NULL);
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

/* Least squares of (d, dmin) with the integer scales, mins and codes fixed. */
static bool super_lsq(const kq_spec *k, const float *x, const float *w, const kq_state *st, const int8_t *q, float *d,
                      float *dmin) {
    /* five sums in f64, element i into lane i % 4, lanes added (l0 + l1) + (l2 + l3) */
    double l[5][4] = {{0}};
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
        int j = i / k->sub, r = i & 3;
        double a = (double)st->sc[j] * q[i], b = st->m[j], wi = w[i];
        l[0][r] += wi * a * a, l[1][r] += wi * a * b, l[2][r] += wi * b * b, l[3][r] += wi * a * x[i];
        l[4][r] += wi * b * x[i];
    }
    double A = (l[0][0] + l[0][1]) + (l[0][2] + l[0][3]), B = (l[1][0] + l[1][1]) + (l[1][2] + l[1][3]);
    double C = (l[2][0] + l[2][1]) + (l[2][2] + l[2][3]), D = (l[3][0] + l[3][1]) + (l[3][2] + l[3][3]);
    double E = (l[4][0] + l[4][1]) + (l[4][2] + l[4][3]);
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

static void encode_super(const kq_spec *k, const float *x, const float *w, kq_state *out, int8_t *q) {
    int ns = DSQ_KQ_BLOCK / k->sub;
    kq_block bk;
    bk.ns = ns;
    for (int j = 0; j < ns; j++)
        for (int i = 0; i < k->sub; i++)
            for (int l = j; l < KQ_LANES; l += ns)
                bk.xt[i * KQ_LANES + l] = x[j * k->sub + i], bk.wt[i * KQ_LANES + l] = w[j * k->sub + i];
    float s[MAX_SUB], m[MAX_SUB];
    float smax = 0, mmax = 0, sext = 0;
    for (int j = 0; j < ns; j++) {
        fit_sub(k, x + j * k->sub, w + j * k->sub, &s[j], &m[j]);
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
    eval_states(k, &bk, pc, nc, ce, NULL);
    kq_state best = cand[0], st;
    double best_e = ce[0];
    for (int c = 1; c < nc; c++)
        if (ce[c] < best_e) best_e = ce[c], best = cand[c];
    /* refine: integer scales by coordinate search (from the errors the candidate pass left in best.e),
     * then (d, dmin) by least squares; qs is the state whose codes q holds */
    st = best;
    kq_state qs;
    bool have_q = false;
    for (int it = 0; it < SUPER_ITERS; it++) {
        coord_search(k, &bk, &st);
        double e = eval_state(k, &bk, &st, q);
        qs = st, have_q = true;
        if (e < best_e) best_e = e, best = st;
        kq_state t = st;
        if (!super_lsq(k, x, w, &st, q, &t.d, &t.dmin) || (t.d == st.d && t.dmin == st.dmin)) break;
        double e2 = eval_state(k, &bk, &t, NULL);
        if (!(e2 < best_e)) break;
        best_e = e2, best = t, st = t;
        if (it + 1 < SUPER_ITERS) eval_state(k, &bk, &st, q), qs = st;
    }
    *out = best;
    if (!have_q || !same_scales(ns, &qs, out)) eval_state(k, &bk, out, q);
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

/* One super-block: weights (importance or 1; non-finite values get weight 0 and are replaced by 0 or
 * the block's largest finite magnitude), then the search and the packing. */
/* the sums here run over eight fixed lanes (element i into lane i % 8), combined in one order */
#define KQ_SUM8(l) ((((l)[0] + (l)[4]) + ((l)[1] + (l)[5])) + (((l)[2] + (l)[6]) + ((l)[3] + (l)[7])))
static void encode_block(const kq_spec *k, const float *src, const float *imp, uint8_t *dst) {
    float x[DSQ_KQ_BLOCK], w[DSQ_KQ_BLOCK];
    bool fin[DSQ_KQ_BLOCK], all_fin = true;
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) all_fin &= fin[i] = dsq__finite(src[i]);
    if (all_fin) {
        memcpy(x, src, sizeof x);
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) w[i] = imp ? imp[i] : 1.0f;
    } else {
        float amax = 0;
        for (int i = 0; i < DSQ_KQ_BLOCK; i++)
            if (fin[i] && fabsf(src[i]) > amax) amax = fabsf(src[i]);
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
            w[i] = imp ? imp[i] : 1.0f;
            x[i] = src[i];
            if (!fin[i]) {
                x[i] = src[i] != src[i] ? 0.0f : copysignf(amax, src[i]);
                w[i] = 0.0f;
            }
        }
    }
    /* with an imatrix, w = importance · sqrt(σ² + x²), σ² the block's mean x² (ggml's weighting in
     * quantize_row_q*_K_impl): on the trained tiny V4 the plain importance lowered the weighted
     * error but raised KL at q2_k/q3_k (the fit gave up large weights of quiet columns); this form
     * lowered KL at q2_k, q3_k and q4_k (docs/interop.md) */
    if (imp) {
        double l8[8] = {0};
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) l8[i & 7] += fin[i] ? (double)x[i] * x[i] : 0.0;
        float sig2 = (float)(KQ_SUM8(l8) / DSQ_KQ_BLOCK);
        for (int i = 0; i < DSQ_KQ_BLOCK; i++) w[i] *= sqrtf(sig2 + x[i] * x[i]);
    }
    float m8[8] = {0};
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) m8[i & 7] = w[i] > m8[i & 7] ? w[i] : m8[i & 7];
    float wmax = 0;
    for (int l = 0; l < 8; l++) wmax = m8[l] > wmax ? m8[l] : wmax;
    /* weights scaled to a largest of 1: the f32 error sums of the lane passes neither overflow nor
     * underflow for any finite importance (the minimiser does not change) */
    float wscale = wmax > 0 ? 1.0f / wmax : 1.0f;
    if (!isfinite(wscale)) wscale = 0x1p126f; /* wmax subnormal */
    double s8[8] = {0}, wsum;
    for (int i = 0; i < DSQ_KQ_BLOCK; i++) {
        w[i] *= wscale;
        s8[i & 7] += w[i];
    }
    wsum = KQ_SUM8(s8);
    /* a sub-block without weight still gets a sensible fit, at a weight too small to sway the rest */
    float tiny = wsum > 0 ? (float)(wsum / DSQ_KQ_BLOCK * 1e-6) : 1.0f;
    for (int j = 0; j < DSQ_KQ_BLOCK; j += k->sub) {
        double j8[8] = {0};
        for (int i = 0; i < k->sub; i++) j8[i & 7] += w[j + i];
        if (!(KQ_SUM8(j8) > 0))
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
