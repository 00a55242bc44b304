/* Integer group encoders (INT8 per row / per group, INT4 symmetric and asymmetric, INT2 asymmetric):
 * round-to-nearest with a per-group scale search that minimises the squared error of the decoded
 * group, F16 rounding of scale and min included.
 *
 * Search: candidate scales (amax/qmax)·f for the factors below (the asymmetric search shrinks the
 * [min, max] range by the same factors), each evaluated exactly; then up to two least-squares steps
 * from the best one (codes fixed → best scale Σxq/Σq², or the 2x2 fit of scale and min), each kept
 * only if it lowers the error.  Candidate 0 is the plain amax/qmax (or (max-min)/qmax) rule, so the
 * result is never worse than that rule, group by group. */
#include <math.h>
#include <string.h>

#include "codec_internal.h"

enum { N_FACTORS = 10 };
/* 1.0 = the plain rule; below 1 clips the largest elements to shrink the step for all others */
static const float factors[N_FACTORS] = {1.0f, 1.03f, 0.97f, 0.94f, 0.91f, 0.88f, 0.85f, 0.82f, 0.79f, 0.76f};

static inline bool finite_f(float v) { return (dsq_f32_bits(v) & 0x7f800000u) != 0x7f800000u; }
static inline uint16_t f16_sat(float v) {
    if (v > DSQ_F16_MAX) v = DSQ_F16_MAX;
    if (v < -DSQ_F16_MAX) v = -DSQ_F16_MAX;
    return dsq_f16_from_f32(v);
}
static inline float f16r(float v) { return dsq_f16_to_f32(f16_sat(v)); }

/* RNE of t for |t| < 2^22: the same two IEEE additions the AVX2 twin performs. */
static inline float rne_small(float t) { return (t + 0x1.8p23f) - 0x1.8p23f; }
static inline float lane_sum(const float l[8]) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

void dsq__int_group_eval_scalar(const float *x, int n, const dsq__grp_param *p, dsq__grp_eval *out) {
    float e[8] = {0}, a[8] = {0}, b[8] = {0}, c[8] = {0}, d[8] = {0};
    for (int i = 0; i < n; i++) {
        int l = i & 7;
        float xv = x[i];
        float t = p->asym ? (xv - p->m) * p->inv : xv * p->inv;
        t = t > p->qmin ? t : p->qmin; /* _mm256_max_ps(t, qmin) */
        t = t < p->qmax ? t : p->qmax; /* _mm256_min_ps(t, qmax) */
        float q = rne_small(t);
        float w = p->asym ? q * p->s + p->m : q * p->s;
        float df = xv - w;
        e[l] = e[l] + df * df;
        if (!p->sums) continue;
        a[l] = a[l] + xv * q;
        b[l] = b[l] + q * q;
        c[l] = c[l] + q;
        d[l] = d[l] + xv;
    }
    out->err = lane_sum(e), out->sxq = lane_sum(a), out->sqq = lane_sum(b), out->sq = lane_sum(c), out->sx = lane_sum(d);
}

void dsq__minmax_scalar(const float *x, int n, float *lo, float *hi) {
    float a = x[0], b = x[0];
    for (int i = 1; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a, *hi = b;
}

void dsq__int_group_codes_scalar(const float *x, int n, const dsq__grp_param *p, int8_t *q) {
    for (int i = 0; i < n; i++) {
        float t = p->asym ? (x[i] - p->m) * p->inv : x[i] * p->inv;
        t = t > p->qmin ? t : p->qmin;
        t = t < p->qmax ? t : p->qmax;
        q[i] = (int8_t)rne_small(t);
    }
}

typedef struct searcher {
    bool avx2;
} searcher;

static void eval(const searcher *S, const float *x, int n, float s, float m, int qmin, int qmax, bool asym,
                 bool sums, dsq__grp_eval *out) {
    dsq__grp_param p = {s, s > 0.0f ? 1.0f / s : 0.0f, m, (float)qmin, (float)qmax, asym, sums};
    if (S->avx2 && (n & 7) == 0) dsq__int_group_eval_avx2(x, n, &p, out);
    else dsq__int_group_eval_scalar(x, n, &p, out);
}

/* Best F16 scale of a symmetric group (q ∈ [qmin, qmax]); 0 for an all-zero group. */
static float sym_search(const searcher *S, const float *x, int n, float lo, float hi, int qmin, int qmax) {
    float amax = hi > -lo ? hi : -lo, sgn = -lo == amax ? -1.0f : 1.0f; /* sgn < 0: a negative extreme */
    if (amax == 0.0f) return 0.0f;
    float best_s = 0, best_e = INFINITY;
    dsq__grp_eval best_ev = {0}, ev;
    for (int k = 0; k <= N_FACTORS; k++) {
        /* the extra last candidate maps a negative extreme onto qmin (int4: -8) */
        if (k == N_FACTORS && !(sgn < 0 && -qmin > qmax)) break;
        float s = k < N_FACTORS ? f16r(amax / (float)qmax * factors[k]) : f16r(amax / (float)-qmin);
        if (s == 0.0f) s = 0x1p-24f;
        eval(S, x, n, s, 0, qmin, qmax, false, false, &ev);
        if (k == 0 || ev.err < best_e) best_e = ev.err, best_s = s; /* k = 0 even if Inf */
    }
    for (int it = 0; it < 2; it++) { /* codes fixed: the best scale is Σxq / Σq² */
        if (it == 0) eval(S, x, n, best_s, 0, qmin, qmax, false, true, &best_ev);
        if (!(best_ev.sqq > 0.0f)) break;
        float s = f16r((float)((double)best_ev.sxq / (double)best_ev.sqq));
        if (!(s > 0.0f) || s == best_s) break;
        eval(S, x, n, s, 0, qmin, qmax, false, true, &ev);
        if (!(ev.err < best_e)) break;
        best_e = ev.err, best_s = s, best_ev = ev;
    }
    return best_s;
}

/* Best F16 (scale, min) of an asymmetric group x ≈ u·s + m, u ∈ [0, qmax]. */
static void asym_search(const searcher *S, const float *x, int n, float lo, float hi, int qmax, float *s_out,
                        float *m_out) {
    if (lo == 0.0f && hi == 0.0f) {
        *s_out = 0, *m_out = 0;
        return;
    }
    dsq__grp_eval ev, best_ev = {0};
    float best_s = 0, best_m = f16r(lo), best_e = INFINITY;
    if (hi == lo) { /* a constant group needs no scale */
        *s_out = 0, *m_out = best_m;
        return;
    }
    for (int k = 0; k < N_FACTORS; k++) {
        float f = factors[k] > 1.0f ? 1.0f : factors[k];
        float mid = 0.5f * (lo + hi), half = 0.5f * (hi - lo) * f;
        float m = f16r(k == 0 ? lo : mid - half);
        float s = f16r((k == 0 ? hi - lo : 2.0f * half) / (float)qmax);
        if (s == 0.0f) s = 0x1p-24f;
        eval(S, x, n, s, m, 0, qmax, true, false, &ev);
        if (k == 0 || ev.err < best_e) best_e = ev.err, best_s = s, best_m = m; /* k = 0 even if Inf */
    }
    for (int it = 0; it < 2; it++) { /* codes fixed: least squares for (s, m) */
        if (it == 0) eval(S, x, n, best_s, best_m, 0, qmax, true, true, &best_ev);
        double N = n, sq = best_ev.sq, sqq = best_ev.sqq, sx = best_ev.sx, sxq = best_ev.sxq;
        double det = N * sqq - sq * sq;
        if (!(det > 0)) break;
        double s = (N * sxq - sq * sx) / det, m = (sx - s * sq) / N;
        if (!(s > 0)) break;
        float s16 = f16r((float)s), m16 = f16r((float)m);
        if (s16 == 0.0f || (s16 == best_s && m16 == best_m)) break;
        eval(S, x, n, s16, m16, 0, qmax, true, true, &ev);
        if (!(ev.err < best_e)) break;
        best_e = ev.err, best_s = s16, best_m = m16, best_ev = ev;
    }
    *s_out = best_s, *m_out = best_m;
}

dsq_status dsq__encode_int_rows(const dsq__qv *v, dsq_qtensor_buf *dst, const float *x, uint64_t row0,
                                uint64_t nrows, dsq_isa isa, const char *name, dsq_err *err) {
    dsq__kind k = v->info->kind;
    uint64_t cols = dst->cols, g = v->bcols;
    searcher S = {isa == DSQ_ISA_AVX2};
    bool asym = k == DSQ__K_INT4A || k == DSQ__K_INT2A;
    int qmin = k == DSQ__K_INT8 ? -127 : k == DSQ__K_INT4 ? -8 : 0;
    int qmax = k == DSQ__K_INT8 ? 127 : k == DSQ__K_INT4 ? 7 : k == DSQ__K_INT4A ? 15 : 3;
    /* row_f: the row with NaN/Inf set to 0 for the search (they take no part in choosing scales);
     * row_c: what is encoded (NaN → 0, ±Inf → ±3e38, which saturates); both 32-byte aligned */
    uint64_t bytes;
    DSQ_RETURN_IF(!dsq_mul_u64(cols, 2 * sizeof(float), &bytes), err, DSQ_ERR_OVERFLOW, "%s: row too long", name);
    float *row_f = dsq_malloc_aligned((size_t)bytes);
    DSQ_RETURN_IF(!row_f, err, DSQ_ERR_NOMEM, "%s: cannot allocate a row of %llu floats", name, (unsigned long long)cols);
    float *row_c = row_f + cols;
    int8_t q[DSQ_CODEC_MAX_GROUP];
    for (uint64_t i = 0; i < nrows; i++) {
        uint64_t r = row0 + i;
        const float *xr = x + i * cols, *xf = xr, *xc = xr;
        bool clean = true;
        for (uint64_t c = 0; c < cols; c++) clean &= finite_f(xr[c]);
        if (!clean) {
            for (uint64_t c = 0; c < cols; c++) {
                row_f[c] = finite_f(xr[c]) ? xr[c] : 0.0f;
                row_c[c] = finite_f(xr[c]) || xr[c] != xr[c] ? row_f[c] : copysignf(3e38f, xr[c]);
            }
            xf = row_f, xc = row_c;
        }
        uint8_t *row = (uint8_t *)dst->data + r * v->row_bytes;
        memset(row, 0, v->row_bytes);
        for (uint64_t b = 0; b * g < cols; b++) {
            uint64_t c0 = b * g, n = cols - c0 < g ? cols - c0 : g;
            uint64_t si = r * v->scale_cols + b;
            bool vec = S.avx2 && (n & 7) == 0;
            float s, m = 0.0f, lo, hi;
            if (vec) dsq__minmax_avx2(xf + c0, (int)n, &lo, &hi);
            else dsq__minmax_scalar(xf + c0, (int)n, &lo, &hi);
            if (asym) asym_search(&S, xf + c0, (int)n, lo, hi, qmax, &s, &m);
            else s = sym_search(&S, xf + c0, (int)n, lo, hi, qmin, qmax);
            uint16_t hs = f16_sat(s), hm = f16_sat(m);
            memcpy((uint8_t *)dst->scales + 2 * si, &hs, 2);
            if (asym) memcpy((uint8_t *)dst->mins + 2 * si, &hm, 2);
            /* codes with exactly the arithmetic of the evaluation, a chunk of ≤ 256 at a time */
            dsq__grp_param p = {s, s > 0.0f ? 1.0f / s : 0.0f, m, (float)qmin, (float)qmax, asym, false};
            for (uint64_t k0 = 0; k0 < n; k0 += DSQ_CODEC_MAX_GROUP) {
                int nk = (int)(n - k0 < DSQ_CODEC_MAX_GROUP ? n - k0 : DSQ_CODEC_MAX_GROUP);
                uint64_t cb = c0 + k0;
                if (S.avx2 && (nk & 7) == 0) dsq__int_group_codes_avx2(xc + cb, nk, &p, q);
                else dsq__int_group_codes_scalar(xc + cb, nk, &p, q);
                if (k == DSQ__K_INT8) {
                    memcpy(row + cb, q, (size_t)nk);
                } else if (k == DSQ__K_INT2A) {
                    for (int j = 0; j < nk; j++) row[(cb + j) >> 2] |= (uint8_t)(q[j] << (((cb + j) & 3) * 2));
                } else { /* two's-complement or unsigned nibbles, low nibble first (cb is even: groups are) */
                    for (int j = 0; j + 1 < nk; j += 2) row[(cb + j) >> 1] = (uint8_t)((q[j] & 15) | ((q[j + 1] & 15) << 4));
                    if (nk & 1) row[(cb + nk - 1) >> 1] |= (uint8_t)(q[nk - 1] & 15);
                }
            }
        }
    }
    dsq_free_aligned(row_f);
    return DSQ_OK;
}
