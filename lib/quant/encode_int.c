/* Integer group encoders (INT8 per row / per group, INT4 symmetric and asymmetric, INT2 asymmetric):
 * round-to-nearest with a per-group scale search that minimises the squared error of the decoded
 * group, F16 rounding of scale and min included.
 *
 * Search (dsq__int_search_scalar defines it; the AVX2 twin runs eight groups at once, one per lane,
 * with the same IEEE operations in the same order, so the bytes do not depend on the CPU):
 * candidate scales (amax/qmax)·f for the factors below (the asymmetric search shrinks the [min, max]
 * range by the same factors), each evaluated exactly; then up to two least-squares steps from the
 * best one (codes fixed → best scale Σxq/Σq², or the 2x2 fit of scale and min), each kept only if it
 * lowers the error.  Candidate 0 is the plain amax/qmax (or (max-min)/qmax) rule, so the result is
 * never worse than that rule, group by group.
 *
 * The error of a candidate over a group is accumulated element by element in one f32 sum:
 *   t = x·inv (or (x − m)·inv), clamped to [qmin, qmax], q = RNE(t),
 *   d = fma(−q, s, x) (or x − fma(q, s, m)), err = fma(d, d, err)
 * and the least-squares sums likewise (Σxq and Σq² by fma, Σq and Σx by addition). */
#include <math.h>
#include <string.h>

#include "codec_internal.h"

const float dsq__int_factors[DSQ__INT_FACTORS] = {1.0f, 1.03f, 0.97f, 0.94f, 0.91f, 0.88f, 0.85f, 0.82f, 0.79f, 0.76f};


/* ---- the scalar definition of one group's search ------------------------------------------------ */

typedef struct gsum {
    float err, sxq, sqq, sq, sx;
} gsum;

static gsum geval(const float *x, int n, float s, float m, const dsq__int_spec *sp, bool sums) {
    float inv = s > 0.0f ? 1.0f / s : 0.0f, qmin = (float)sp->qmin, qmax = (float)sp->qmax;
    gsum g = {0, 0, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        float xv = x[i];
        float t = sp->asym ? (xv - m) * inv : xv * inv;
        t = t > qmin ? t : qmin; /* _mm256_max_ps(t, qmin) */
        t = t < qmax ? t : qmax; /* _mm256_min_ps(t, qmax) */
        float q = nearbyintf(t);
        float d = sp->asym ? xv - fmaf(q, s, m) : fmaf(-q, s, xv);
        g.err = fmaf(d, d, g.err);
        if (!sums) continue;
        g.sxq = fmaf(xv, q, g.sxq);
        g.sqq = fmaf(q, q, g.sqq);
        g.sq = g.sq + q;
        g.sx = g.sx + xv;
    }
    return g;
}

void dsq__int_search_scalar(const float *x, int n, const dsq__int_spec *sp, float *s_out, float *m_out) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo; /* _mm256_min_ps(x, lo) */
        hi = x[i] > hi ? x[i] : hi;
    }
    float qmaxf = (float)sp->qmax;
    if (!sp->asym) {
        float nlo = -lo, amax = hi > nlo ? hi : nlo;
        bool neg = nlo == amax && -sp->qmin > sp->qmax; /* a negative extreme can map onto qmin (int4: -8) */
        *m_out = 0.0f;
        if (amax == 0.0f) {
            *s_out = 0.0f;
            return;
        }
        float base = amax / qmaxf, best_s = 0, best_e = 0;
        for (int k = 0; k <= DSQ__INT_FACTORS; k++) {
            if (k == DSQ__INT_FACTORS && !neg) break;
            float s = dsq__f16r(k < DSQ__INT_FACTORS ? base * dsq__int_factors[k] : amax / (float)-sp->qmin);
            if (s == 0.0f) s = 0x1p-24f;
            float e = geval(x, n, s, 0, sp, false).err;
            if (k == 0 || e < best_e) best_e = e, best_s = s; /* k = 0 even if Inf */
        }
        gsum best = geval(x, n, best_s, 0, sp, true);
        for (int it = 0; it < 2; it++) { /* codes fixed: the best scale is Σxq / Σq² */
            if (!(best.sqq > 0.0f)) break;
            float s = dsq__f16r((float)((double)best.sxq / (double)best.sqq));
            if (!(s > 0.0f) || s == best_s) break;
            gsum g = geval(x, n, s, 0, sp, true);
            if (!(g.err < best_e)) break;
            best_e = g.err, best_s = s, best = g;
        }
        *s_out = best_s;
        return;
    }
    if (lo == 0.0f && hi == 0.0f) {
        *s_out = 0, *m_out = 0;
        return;
    }
    if (hi == lo) { /* a constant group needs no scale */
        *s_out = 0, *m_out = dsq__f16r(lo);
        return;
    }
    float best_s = 0, best_m = 0, best_e = 0;
    float mid = 0.5f * (lo + hi), range = hi - lo, half0 = 0.5f * range;
    for (int k = 0; k < DSQ__INT_FACTORS; k++) {
        float f = dsq__int_factors[k] > 1.0f ? 1.0f : dsq__int_factors[k];
        float half = half0 * f;
        float m = dsq__f16r(k == 0 ? lo : mid - half);
        float s = dsq__f16r((k == 0 ? range : 2.0f * half) / qmaxf);
        if (s == 0.0f) s = 0x1p-24f;
        float e = geval(x, n, s, m, sp, false).err;
        if (k == 0 || e < best_e) best_e = e, best_s = s, best_m = m; /* k = 0 even if Inf */
    }
    gsum best = geval(x, n, best_s, best_m, sp, true);
    for (int it = 0; it < 2; it++) { /* codes fixed: least squares for (s, m) */
        double N = n, sq = best.sq, sqq = best.sqq, sx = best.sx, sxq = best.sxq;
        double det = N * sqq - sq * sq;
        if (!(det > 0)) break;
        double s = (N * sxq - sq * sx) / det, m = (sx - s * sq) / N;
        if (!(s > 0)) break;
        float s16 = dsq__f16r((float)s), m16 = dsq__f16r((float)m);
        if (s16 == 0.0f || (s16 == best_s && m16 == best_m)) break;
        gsum g = geval(x, n, s16, m16, sp, true);
        if (!(g.err < best_e)) break;
        best_e = g.err, best_s = s16, best_m = m16, best = g;
    }
    *s_out = best_s, *m_out = best_m;
}

void dsq__int_group_codes_scalar(const float *x, int n, const dsq__grp_param *p, int8_t *q) {
    for (int i = 0; i < n; i++) {
        float t = p->asym ? (x[i] - p->m) * p->inv : x[i] * p->inv;
        t = t > p->qmin ? t : p->qmin;
        t = t < p->qmax ? t : p->qmax;
        q[i] = (int8_t)nearbyintf(t);
    }
}

/* ---- rows --------------------------------------------------------------------------------------- */

typedef struct enc_ctx {
    const dsq__qv *v;
    dsq_qtensor_buf *dst;
    const float *xc; /* what is encoded: NaN → 0, ±Inf → ±3e38 (saturates) */
    uint64_t row0, cols;
    dsq__int_spec sp;
    dsq__kind kind;
    bool avx2;
} enc_ctx;

/* Store the scale (and min) of group b of chunk row i and its codes. */
static void emit(const enc_ctx *C, uint64_t i, uint64_t b, float s, float m) {
    const dsq__qv *v = C->v;
    uint64_t g = v->bcols, c0 = b * g, n = C->cols - c0 < g ? C->cols - c0 : g, r = C->row0 + i;
    uint64_t si = r * v->scale_cols + b;
    uint16_t hs = dsq_f16_from_f32(s), hm = dsq_f16_from_f32(m); /* s, m are F16 values already */
    memcpy((uint8_t *)C->dst->scales + 2 * si, &hs, 2);
    if (C->sp.asym) memcpy((uint8_t *)C->dst->mins + 2 * si, &hm, 2);
    uint8_t *row = (uint8_t *)C->dst->data + r * v->row_bytes;
    const float *xc = C->xc + i * C->cols;
    dsq__grp_param p = {s, s > 0.0f ? 1.0f / s : 0.0f, m, (float)C->sp.qmin, (float)C->sp.qmax, C->sp.asym};
    int8_t q[DSQ_CODEC_MAX_GROUP];
    for (uint64_t k0 = 0; k0 < n; k0 += DSQ_CODEC_MAX_GROUP) {
        int nk = (int)(n - k0 < DSQ_CODEC_MAX_GROUP ? n - k0 : DSQ_CODEC_MAX_GROUP);
        uint64_t cb = c0 + k0;
        if (C->avx2 && (nk & 7) == 0) dsq__int_group_codes_avx2(xc + cb, nk, &p, q);
        else dsq__int_group_codes_scalar(xc + cb, nk, &p, q);
        if (C->avx2 && C->kind != DSQ__K_INT8 && C->kind != DSQ__K_INT2A && (nk & 15) == 0) {
            dsq__pack_nibbles_avx2(q, nk, row + (cb >> 1));
        } else if (C->kind == DSQ__K_INT8) {
            memcpy(row + cb, q, (size_t)nk);
        } else if (C->kind == DSQ__K_INT2A) {
            for (int j = 0; j < nk; j++) row[(cb + j) >> 2] |= (uint8_t)(q[j] << (((cb + j) & 3) * 2));
        } else { /* two's-complement or unsigned nibbles, low nibble first (cb is even: groups are) */
            for (int j = 0; j + 1 < nk; j += 2) row[(cb + j) >> 1] = (uint8_t)((q[j] & 15) | ((q[j + 1] & 15) << 4));
            if (nk & 1) row[(cb + nk - 1) >> 1] |= (uint8_t)(q[nk - 1] & 15);
        }
    }
}

dsq_status dsq__encode_int_rows(const dsq__qv *v, dsq_qtensor_buf *dst, const float *x, uint64_t row0,
                                uint64_t nrows, dsq_isa isa, bool finite, const char *name, dsq_err *err) {
    dsq__kind k = v->info->kind;
    uint64_t cols = dst->cols, g = v->bcols, gpr = dsq_ceil_div(cols, g), full = cols / g;
    enc_ctx C = {v, dst, x, row0, cols, {0, 0, false}, k, isa == DSQ_ISA_AVX2};
    C.sp.asym = k == DSQ__K_INT4A || k == DSQ__K_INT2A;
    C.sp.qmin = k == DSQ__K_INT8 ? -127 : k == DSQ__K_INT4 ? -8 : 0;
    C.sp.qmax = k == DSQ__K_INT8 ? 127 : k == DSQ__K_INT4 ? 7 : k == DSQ__K_INT4A ? 15 : 3;
    uint64_t total, bytes;
    DSQ_RETURN_IF(!dsq_mul_u64(nrows, cols, &total), err, DSQ_ERR_OVERFLOW, "%s: chunk too large", name);
    /* xf: the values with NaN/Inf set to 0 for the search (they take no part in choosing scales); xc:
     * what is encoded.  Both are x itself unless the chunk holds a non-finite value (rare). */
    float *clean = NULL, *xt = NULL;
    const float *xf = x;
    if (!finite) {
        DSQ_RETURN_IF(!dsq_mul_u64(total, 2 * sizeof(float), &bytes), err, DSQ_ERR_OVERFLOW, "%s: chunk too large", name);
        clean = dsq_malloc_aligned((size_t)bytes);
        DSQ_RETURN_IF(!clean, err, DSQ_ERR_NOMEM, "%s: cannot allocate %llu bytes of scratch", name,
                      (unsigned long long)bytes);
        for (uint64_t i = 0; i < total; i++) {
            clean[i] = dsq__finite(x[i]) ? x[i] : 0.0f;
            clean[total + i] = dsq__finite(x[i]) || x[i] != x[i] ? clean[i] : copysignf(3e38f, x[i]);
        }
        xf = clean, C.xc = clean + total;
    }
    for (uint64_t i = 0; i < nrows; i++) memset((uint8_t *)dst->data + (row0 + i) * v->row_bytes, 0, v->row_bytes);
    /* Full-length groups go eight at a time through the AVX2 search (transposed: lane j = group j),
     * taken in (row, group) order across rows; short tail groups and the last < 8 go one by one. */
    uint64_t n_full = nrows * full, done = 0;
    if (C.avx2 && n_full >= 8) {
        DSQ_RETURN_IF(!dsq_mul_u64(g, 8 * sizeof(float), &bytes), err, DSQ_ERR_OVERFLOW, "%s: group too long", name);
        xt = dsq_malloc_aligned((size_t)bytes);
        if (!xt) {
            dsq_free_aligned(clean);
            return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: cannot allocate a search tile", name);
        }
        uint64_t ri = 0, bi = 0; /* (row, group) of group number `done` */
        for (; done + 8 <= n_full; done += 8) {
            const float *p[8];
            uint64_t gi[8], gb[8];
            for (int j = 0; j < 8; j++) {
                gi[j] = ri, gb[j] = bi;
                p[j] = xf + ri * cols + bi * g;
                if (++bi == full) bi = 0, ri++;
            }
            dsq__transpose8_avx2(p, (int)g, xt);
            float s[8], m[8];
            dsq__int_search8_avx2(xt, (int)g, &C.sp, s, m);
            for (int j = 0; j < 8; j++) emit(&C, gi[j], gb[j], s[j], m[j]);
        }
        dsq_free_aligned(xt);
    }
    for (uint64_t id = done; id < nrows * gpr; id++) {
        /* the remaining full groups (ids < n_full in full-group numbering) and every tail group */
        uint64_t i, b;
        if (id < n_full) i = id / full, b = id % full;
        else if (gpr == full) break;
        else i = id - n_full, b = full; /* row i's tail group */
        uint64_t c0 = b * g, n = cols - c0 < g ? cols - c0 : g;
        float s, m;
        dsq__int_search_scalar(xf + i * cols + c0, (int)n, &C.sp, &s, &m);
        emit(&C, i, b, s, m);
    }
    dsq_free_aligned(clean);
    return DSQ_OK;
}
