/* AVX-512 twins of the two kernels long contexts spend their time in (docs/long-context.md): sparse
 * attention with sinks over one query's key list for a group of heads (the keys are shared by all heads,
 * spec §4.4), and indexer scoring of a block of 16 compressed keys (spec §4.6).  Each gives the bits of its
 * scalar twin in ops.c / backend_cpu.c exactly:
 *   - q·k in exact numerics and every indexer dot: dsq__dot's order (8 FMA lanes over k, k+8, …, then
 *     hsum8 ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7))).  Two keys share a register ([key a lanes | key b
 *     lanes]) and the lane sums of 8 such registers are a 3-level permute/add tree in hsum8's order;
 *   - q·k in release numerics: dot_seq's sequential mul-then-add over d, sixteen keys per register
 *     (a transposed key block);
 *   - P·V: per output dim, the same sequence of separate multiplies and adds over the keys in list order
 *     (and, in release, per 64-key chunk: pv, then out·alpha + pv), sixteen dims per register;
 *   - softmax, exp/expf, bf16 roundings: the scalar code's expressions, one (head, key) at a time.
 * The reference keeps the arithmetic; these only reorder which independent (head, key, dim) is computed
 * when.  Heads are processed in groups of 4 (H % 4 == 0) and dims in 16s (hd % 16 == 0); other shapes take
 * the scalar path (dsq__attn_fast_ok). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_numeric.h"
#include "v4_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

enum { ATTN_CHUNK = 64, KB = 16 }; /* release softmax chunk (ops.c), keys per block */

bool dsq__attn_fast_ok(const dsq__kern *k, int n_heads, int hd) {
#ifdef HAVE_X86
    return k && k->avx2 && dsq__cpu_has_avx512() && n_heads > 0 && n_heads % 4 == 0 && hd > 0 && hd % 16 == 0;
#else
    (void)k, (void)n_heads, (void)hd;
    return false;
#endif
}

bool dsq__indexer_fast_ok(const dsq__kern *k, int nih, int ihd) {
#ifdef HAVE_X86
    return k && k->avx2 && dsq__cpu_has_avx512() && nih > 0 && nih % 2 == 0 && ihd > 0 && ihd % 8 == 0;
#else
    (void)k, (void)nih, (void)ihd;
    return false;
#endif
}

#ifdef HAVE_X86

/* ---- 8-lane dots of 2 heads × 16 keys (dsq__dot's bits) ------------------------------------------- */

/* Kp [8 pairs][hd/8][16]: pair p, step s holds key 2p dims 8s…8s+7 then key 2p+1 (zeros for a missing key). */
static void pack_pairs(const float *const *rows, int nk, int hd, float *Kp) {
    int steps = hd / 8;
    for (int p = 0; p < KB / 2; p++)
        for (int half = 0; half < 2; half++) {
            int key = 2 * p + half;
            const float *row = key < nk ? rows[key] : NULL;
            for (int s = 0; s < steps; s++) {
                float *dst = Kp + ((size_t)p * steps + s) * 16 + half * 8;
                if (row)
                    memcpy(dst, row + 8 * s, 8 * sizeof(float));
                else
                    memset(dst, 0, 8 * sizeof(float));
            }
        }
}

/* hsum8 of both halves of 8 accumulators acc[p] = [key 2p lanes | key 2p+1 lanes] → the 16 dots in key order. */
__attribute__((target("avx512f"))) static __m512 reduce16(const __m512 *acc) {
    const __m512i i1p = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i i1q = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    const __m512i i2p = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    const __m512i i2q = _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    const __m512i i3p = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i i3q = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i fix = _mm512_setr_epi32(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
    __m512 s1[4], s2[2];
    for (int i = 0; i < 4; i++) /* lanes (l0+l4, l1+l5, l2+l6, l3+l7) of keys 4i, 4i+2, 4i+1, 4i+3 */
        s1[i] = _mm512_add_ps(_mm512_permutex2var_ps(acc[2 * i], i1p, acc[2 * i + 1]),
                              _mm512_permutex2var_ps(acc[2 * i], i1q, acc[2 * i + 1]));
    for (int i = 0; i < 2; i++) /* pairs ((l0+l4)+(l2+l6), (l1+l5)+(l3+l7)) */
        s2[i] = _mm512_add_ps(_mm512_permutex2var_ps(s1[2 * i], i2p, s1[2 * i + 1]),
                              _mm512_permutex2var_ps(s1[2 * i], i2q, s1[2 * i + 1]));
    __m512 s3 = _mm512_add_ps(_mm512_permutex2var_ps(s2[0], i3p, s2[1]), _mm512_permutex2var_ps(s2[0], i3q, s2[1]));
    return _mm512_permutexvar_ps(fix, s3); /* lanes held keys 0 2 1 3 4 6 5 7 …: back to key order */
}

/* dots[h][16] (16 floats apart) = dsq__dot(q_h, key) for heads h0, h0+1 of q [..][hd] and the packed block. */
__attribute__((target("avx512f"))) static void dots_2x16(const float *qa, const float *qb, const float *Kp, int hd,
                                                           float *da, float *db) {
    int steps = hd / 8;
    __m512 a[8], b[8];
    for (int p = 0; p < 8; p++) a[p] = b[p] = _mm512_setzero_ps();
    for (int s = 0; s < steps; s++) {
        /* [q0…q7 | q0…q7] as one broadcast load */
        __m512 xa = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(qa + 8 * s))));
        __m512 xb = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(qb + 8 * s))));
        for (int p = 0; p < 8; p++) {
            __m512 k = _mm512_loadu_ps(Kp + ((size_t)p * steps + s) * 16);
            a[p] = _mm512_fmadd_ps(xa, k, a[p]);
            b[p] = _mm512_fmadd_ps(xb, k, b[p]);
        }
    }
    _mm512_storeu_ps(da, reduce16(a));
    _mm512_storeu_ps(db, reduce16(b));
}

/* ---- indexer: one query against 16 keys (backend_cpu.c cpu_indexer_topk's scores) ----------------- */

__attribute__((target("avx512f"))) void dsq__indexer_block16(const float *qi, const float *w, int nih, int ihd,
                                                              bool release, const float *const *rows, int nk,
                                                              float *Kp, float *dots, float *scores) {
    pack_pairs(rows, nk, ihd, Kp);
    for (int h = 0; h < nih; h += 2) {
        const float *qb = h + 1 < nih ? qi + (size_t)(h + 1) * ihd : qi + (size_t)h * ihd;
        dots_2x16(qi + (size_t)h * ihd, qb, Kp, ihd, dots + (size_t)h * KB, dots + (size_t)(h + 1) * KB);
    }
    if (!release) {
        /* s += max(dot, 0)·w_h, heads in order (a NaN dot gives 0, as fmaxf) */
        __m512 s = _mm512_setzero_ps(), zero = _mm512_setzero_ps();
        for (int h = 0; h < nih; h++)
            s = _mm512_add_ps(s, _mm512_mul_ps(_mm512_max_ps(_mm512_loadu_ps(dots + (size_t)h * KB), zero),
                                               _mm512_set1_ps(w[h])));
        float o[KB];
        _mm512_storeu_ps(o, s);
        for (int j = 0; j < nk; j++) scores[j] = o[j];
        return;
    }
    for (int j = 0; j < nk; j++) { /* spec §5 row 12 */
        float s = 0;
        for (int h = 0; h < nih; h++) {
            float dot = dsq_bf16_round(dots[(size_t)h * KB + j]);
            s += dsq_bf16_round(fmaxf(dot, 0.0f) * w[h]);
        }
        scores[j] = dsq_bf16_round(s);
    }
}

/* ---- dequantizing an index_fp4 key (backend_cpu.c unpack_row's values: e2m1 · UE8M0, one f32 multiply) ---- */

__attribute__((target("avx512f"))) void dsq__unpack_fp4_avx512(const uint8_t *codes, const uint8_t *scales, int n,
                                                                float *x) {
    const __m512 lut = _mm512_loadu_ps(dsq_e2m1_lut);
    const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int b = 0; b < n / DSQ_FP4_BLOCK; b++) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(codes + 16 * b)));
        __m512 lo = _mm512_permutexvar_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)), lut); /* even dims */
        __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);                      /* odd dims */
        __m512 sc = _mm512_set1_ps(dsq_e8m0_to_f32(scales[b]));
        _mm512_storeu_ps(x + 32 * b, _mm512_mul_ps(_mm512_permutex2var_ps(lo, lo_idx, hi), sc));
        _mm512_storeu_ps(x + 32 * b + 16, _mm512_mul_ps(_mm512_permutex2var_ps(lo, hi_idx, hi), sc));
    }
}

/* ---- attention: one query, heads h0 … h0+nh-1 (nh % 4 == 0), shared key list -------------------- */

/* z[h][j] = q_h · k_j in release order (sequential mul-then-add over d): Kt [hd][16] transposed block. */
__attribute__((target("avx512f"))) static void seq_dots_4x16(const float *q, int hd, const float *Kt, float *z0,
                                                              size_t ldz) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const float *q1 = q + hd, *q2 = q + 2 * hd, *q3 = q + 3 * hd;
    for (int d = 0; d < hd; d++) {
        __m512 k = _mm512_loadu_ps(Kt + (size_t)d * KB);
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_set1_ps(q[d]), k));
        a1 = _mm512_add_ps(a1, _mm512_mul_ps(_mm512_set1_ps(q1[d]), k));
        a2 = _mm512_add_ps(a2, _mm512_mul_ps(_mm512_set1_ps(q2[d]), k));
        a3 = _mm512_add_ps(a3, _mm512_mul_ps(_mm512_set1_ps(q3[d]), k));
    }
    _mm512_storeu_ps(z0, a0);
    _mm512_storeu_ps(z0 + ldz, a1);
    _mm512_storeu_ps(z0 + 2 * ldz, a2);
    _mm512_storeu_ps(z0 + 3 * ldz, a3);
}

/* out[4 heads][64 dims at d0] (+)= Σ_j P[h][j]·k_j[d0…] over keys j0 … j1-1 of the list (NULL skipped), each
 * product rounded, then added: the scalar loop's order per dim.  P rows ldp apart. */
__attribute__((target("avx512f"))) static void pv_4x64(const float *P, size_t ldp, const float *const *keys,
                                                        int64_t j0, int64_t j1, int d0, __m512 acc[16]) {
    for (int64_t j = j0; j < j1; j++) {
        const float *k = keys[j];
        if (!k) continue;
        __m512 k0 = _mm512_loadu_ps(k + d0), k1 = _mm512_loadu_ps(k + d0 + 16);
        __m512 k2 = _mm512_loadu_ps(k + d0 + 32), k3 = _mm512_loadu_ps(k + d0 + 48);
        for (int h = 0; h < 4; h++) {
            __m512 p = _mm512_set1_ps(P[(size_t)h * ldp + j]);
            acc[4 * h + 0] = _mm512_add_ps(acc[4 * h + 0], _mm512_mul_ps(p, k0));
            acc[4 * h + 1] = _mm512_add_ps(acc[4 * h + 1], _mm512_mul_ps(p, k1));
            acc[4 * h + 2] = _mm512_add_ps(acc[4 * h + 2], _mm512_mul_ps(p, k2));
            acc[4 * h + 3] = _mm512_add_ps(acc[4 * h + 3], _mm512_mul_ps(p, k3));
        }
    }
}

/* Same for 16 dims (hd % 64 != 0 tails): acc[h]. */
__attribute__((target("avx512f"))) static void pv_4x16(const float *P, size_t ldp, const float *const *keys,
                                                        int64_t j0, int64_t j1, int d0, __m512 acc[4]) {
    for (int64_t j = j0; j < j1; j++) {
        const float *k = keys[j];
        if (!k) continue;
        __m512 kv = _mm512_loadu_ps(k + d0);
        for (int h = 0; h < 4; h++)
            acc[h] = _mm512_add_ps(acc[h], _mm512_mul_ps(_mm512_set1_ps(P[(size_t)h * ldp + j]), kv));
    }
}

__attribute__((target("avx512f"))) dsq_status dsq__attn_heads_avx512(const float *q, int nh, int hd,
                                                                        const float *const *keys, int64_t n_keys,
                                                                        const float *sink, float scale, bool release,
                                                                        float *out) {
    int64_t nk = n_keys > 0 ? n_keys : 1, n_chunks = (nk + ATTN_CHUNK - 1) / ATTN_CHUNK;
    /* z/P [nh][nk]; Kp/Kt one key block; alpha [nh][n_chunks] (NaN: chunk skipped); l [nh] */
    size_t zb = (size_t)nh * (size_t)nk, blk = (size_t)KB * (size_t)hd, ab = (size_t)nh * (size_t)n_chunks;
    float *z = dsq_malloc(sizeof(float) * (zb + blk + ab + 2 * KB));
    double *l = dsq_malloc(sizeof(double) * (size_t)nh);
    if (!z || !l) {
        dsq_free(z);
        dsq_free(l);
        return DSQ_ERR_NOMEM;
    }
    float *Kb = z + zb, *alpha = Kb + blk, *tmp = alpha + ab;
    /* ---- scores ---- */
    for (int64_t j0 = 0; j0 < n_keys; j0 += KB) {
        int nb = n_keys - j0 < KB ? (int)(n_keys - j0) : KB;
        if (!release) {
            pack_pairs(keys + j0, nb, hd, Kb);
            for (int h = 0; h < nh; h += 2) {
                dots_2x16(q + (size_t)h * hd, q + (size_t)(h + 1) * hd, Kb, hd, tmp, tmp + KB);
                memcpy(z + (size_t)h * nk + j0, tmp, sizeof(float) * (size_t)nb);
                memcpy(z + (size_t)(h + 1) * nk + j0, tmp + KB, sizeof(float) * (size_t)nb);
            }
        } else {
            for (int j = 0; j < KB; j++)
                for (int d = 0; d < hd; d++) Kb[(size_t)d * KB + j] = j < nb && keys[j0 + j] ? keys[j0 + j][d] : 0.0f;
            for (int h = 0; h < nh; h += 4) {
                float zz[4 * KB];
                seq_dots_4x16(q + (size_t)h * hd, hd, Kb, zz, KB);
                for (int i = 0; i < 4; i++) memcpy(z + (size_t)(h + i) * nk + j0, zz + i * KB, sizeof(float) * (size_t)nb);
            }
        }
    }
    /* ---- softmax, one head at a time, the scalar twin's expressions (ops.c dsq__sparse_attention) ---- */
    for (int h = 0; h < nh; h++) {
        float *zh = z + (size_t)h * nk, *ah = alpha + (size_t)h * n_chunks;
        if (!release) {
            float m = sink[h];
            for (int64_t j = 0; j < n_keys; j++)
                if (keys[j]) m = fmaxf(m, scale * zh[j]);
            double lh = exp((double)sink[h] - m);
            for (int64_t j = 0; j < n_keys; j++) {
                if (!keys[j]) continue;
                double p = exp((double)(scale * zh[j]) - m);
                lh += p;
                zh[j] = (float)p;
            }
            l[h] = lh;
        } else {
            float m = -INFINITY, lf = 0;
            for (int64_t c0 = 0, ci = 0; c0 < n_keys; c0 += ATTN_CHUNK, ci++) {
                int64_t cn = n_keys - c0 < ATTN_CHUNK ? n_keys - c0 : ATTN_CHUNK;
                float cmax = -INFINITY;
                for (int64_t j = c0; j < c0 + cn; j++) {
                    zh[j] = keys[j] ? scale * zh[j] : -INFINITY;
                    cmax = fmaxf(cmax, zh[j]);
                }
                float m_new = fmaxf(m, cmax);
                if (m_new == -INFINITY) {
                    ah[ci] = NAN; /* nothing valid yet: acc and l stay 0 */
                    continue;
                }
                float a = expf(m - m_new), psum = 0;
                for (int64_t j = c0; j < c0 + cn; j++) {
                    if (!keys[j]) continue;
                    float p = expf(zh[j] - m_new);
                    psum += p;
                    zh[j] = dsq_bf16_round(p);
                }
                lf = lf * a + psum;
                ah[ci] = a;
                m = m_new;
            }
            lf += expf(sink[h] - m);
            l[h] = lf;
        }
    }
    /* ---- P·V ---- */
    for (int h = 0; h < nh; h += 4) {
        const float *P = z + (size_t)h * nk;
        for (int d0 = 0; d0 < hd; d0 += 64) {
            bool wide = d0 + 64 <= hd;
            int nv = wide ? 4 : 1;
            for (int dd = d0; dd < (wide ? d0 + 64 : hd); dd += 16 * nv) {
                __m512 acc[16], pv[16];
                for (int i = 0; i < 16; i++) acc[i] = _mm512_setzero_ps();
                if (!release) {
                    if (wide)
                        pv_4x64(P, (size_t)nk, keys, 0, n_keys, dd, acc);
                    else
                        pv_4x16(P, (size_t)nk, keys, 0, n_keys, dd, acc);
                } else {
                    for (int64_t c0 = 0, ci = 0; c0 < n_keys; c0 += ATTN_CHUNK, ci++) {
                        int64_t c1 = n_keys - c0 < ATTN_CHUNK ? n_keys : c0 + ATTN_CHUNK;
                        for (int i = 0; i < 16; i++) pv[i] = _mm512_setzero_ps();
                        if (wide)
                            pv_4x64(P, (size_t)nk, keys, c0, c1, dd, pv);
                        else
                            pv_4x16(P, (size_t)nk, keys, c0, c1, dd, pv);
                        for (int hh = 0; hh < 4; hh++) {
                            float a = alpha[(size_t)(h + hh) * n_chunks + ci];
                            if (a != a) continue; /* skipped chunk */
                            __m512 av = _mm512_set1_ps(a);
                            for (int v = 0; v < nv; v++)
                                acc[hh * nv + v] = _mm512_add_ps(_mm512_mul_ps(acc[hh * nv + v], av), pv[hh * nv + v]);
                        }
                    }
                }
                for (int hh = 0; hh < 4; hh++)
                    for (int v = 0; v < nv; v++) {
                        float o[16], *dst = out + (size_t)(h + hh) * hd + dd + 16 * v;
                        _mm512_storeu_ps(o, acc[hh * nv + v]);
                        if (!release) {
                            float inv = (float)(1.0 / l[h + hh]);
                            for (int i = 0; i < 16; i++) dst[i] = o[i] * inv;
                        } else {
                            float lf = (float)l[h + hh];
                            for (int i = 0; i < 16; i++) dst[i] = dsq_bf16_round(o[i] / lf);
                        }
                    }
            }
        }
    }
    dsq_free(z);
    dsq_free(l);
    return DSQ_OK;
}

#else /* not x86: dsq__attn_fast_ok is false, these are never called */

void dsq__unpack_fp4_avx512(const uint8_t *codes, const uint8_t *scales, int n, float *x) {
    (void)codes, (void)scales, (void)n, (void)x;
}

void dsq__indexer_block16(const float *qi, const float *w, int nih, int ihd, bool release, const float *const *rows,
                          int nk, float *Kp, float *dots, float *scores) {
    (void)qi, (void)w, (void)nih, (void)ihd, (void)release, (void)rows, (void)nk, (void)Kp, (void)dots, (void)scores;
}
dsq_status dsq__attn_heads_avx512(const float *q, int nh, int hd, const float *const *keys, int64_t n_keys,
                                  const float *sink, float scale, bool release, float *out) {
    (void)q, (void)nh, (void)hd, (void)keys, (void)n_keys, (void)sink, (void)scale, (void)release, (void)out;
    return DSQ_ERR_UNSUPPORTED;
}

#endif
