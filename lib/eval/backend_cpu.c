/* The cpu backend: the reference kernels behind the backend seam (v4_backend.h).  Linear layers are
 * linear.c's (dsq__linear, dsq__fp8_linear, with their AVX2/scalar twins); the block operations are
 * the loops v4_forward.c ran before the seam existed, moved here unchanged, so the golden tests see
 * the same bits.  OpenMP across tokens (or tokens × heads) with r->k.threads threads. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_numeric.h"
#include "dsq_v4_ops.h"
#include "v4_backend.h"

static inline float R(const dsq__run *r, float x) { return r->rel ? dsq_bf16_round(x) : x; }

/* ---- linear ------------------------------------------------------------------------------------- */

static dsq_status cpu_linear(const dsq__run *r, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *x,
                             size_t ldx, int64_t n, float *y, size_t ldy) {
    return dsq__linear(&r->k, w, row0, n_rows, x, ldx, n, y, ldy, r->err);
}

static dsq_status cpu_fp8_linear(const dsq__run *r, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *q,
                                 const float *sa, int64_t n, float *y, size_t ldy) {
    dsq__fp8_linear(&r->k, w, row0, n_rows, q, sa, n, y, ldy);
    return DSQ_OK;
}

/* ---- norms and hyper-connections (spec §4.2) ----------------------------------------------------- */

static void cpu_norm_rows(const dsq__run *r, float *a, const float *w, int64_t n, int64_t width, size_t ld) {
#pragma omp parallel for num_threads(r->k.threads) if (n > 1)
    for (int64_t t = 0; t < n; t++)
        dsq_v4_rms_norm(a + (size_t)t * ld, w, width, (float)r->c->norm_eps, r->rel, a + (size_t)t * ld);
}

static void cpu_hc_pre(const dsq__run *r, const float *scale, const float *base, const float *X, float *mixes,
                       int64_t n, float *a, float *post, float *comb) {
    const dsq_v4_config *c = r->c;
    int hc = c->hc_mult, mix = (2 + hc) * hc;
    size_t D = (size_t)c->dim, HD = (size_t)hc * D;
#pragma omp parallel for num_threads(r->k.threads) if (n > 1)
    for (int64_t t = 0; t < n; t++) {
        const float *v = X + (size_t)t * HD;
        double ss = 0;
        for (size_t i = 0; i < HD; i++) ss += (double)v[i] * v[i];
        float rho = 1.0f / sqrtf((float)(ss / (double)HD) + (float)c->norm_eps);
        float *m = mixes + (size_t)t * mix, pre[64];
        for (int i = 0; i < mix; i++) m[i] *= rho;
        dsq_v4_hc_split(m, scale, base, hc, c->hc_sinkhorn_iters, (float)c->hc_eps, pre, post + (size_t)t * hc,
                        comb + (size_t)t * hc * hc);
        float *at = a + (size_t)t * D;
        for (size_t d = 0; d < D; d++) {
            float s = 0;
            for (int j = 0; j < hc; j++) s += pre[j] * v[(size_t)j * D + d];
            at[d] = R(r, s);
        }
    }
}

/* X'[j] = post_j·o + Σ_i C[i][j]·X[i]  (spec §8.12: the column index selects the output stream). */
static void cpu_hc_post(const dsq__run *r, const float *o, float *X, const float *post, const float *comb, int64_t n) {
    int hc = r->c->hc_mult;
    size_t D = (size_t)r->c->dim;
#pragma omp parallel for num_threads(r->k.threads) if (n > 1)
    for (int64_t t = 0; t < n; t++) {
        float *x = X + (size_t)t * hc * D;
        const float *C = comb + (size_t)t * hc * hc, *p = post + (size_t)t * hc, *ot = o + (size_t)t * D;
        for (size_t d = 0; d < D; d++) {
            float in[64], outv[64];
            for (int i = 0; i < hc; i++) in[i] = x[(size_t)i * D + d];
            for (int j = 0; j < hc; j++) {
                float s = p[j] * ot[d];
                for (int i = 0; i < hc; i++) s += C[i * hc + j] * in[i];
                outv[j] = s;
            }
            for (int j = 0; j < hc; j++) x[(size_t)j * D + d] = R(r, outv[j]);
        }
    }
}

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

static void cpu_hc_head(const dsq__run *r, const float *base, float hscale, const float *normw, const float *X,
                        const float *m, int64_t n, float *h) {
    const dsq_v4_config *c = r->c;
    int hc = c->hc_mult;
    size_t D = (size_t)c->dim, HD = (size_t)hc * D;
    for (int64_t t = 0; t < n; t++) {
        const float *v = X + (size_t)t * HD;
        double ss = 0;
        for (size_t i = 0; i < HD; i++) ss += (double)v[i] * v[i];
        float rho = 1.0f / sqrtf((float)(ss / (double)HD) + (float)c->norm_eps), pre[64];
        for (int j = 0; j < hc; j++) pre[j] = sigm(m[(size_t)t * hc + j] * rho * hscale + base[j]) + (float)c->hc_eps;
        float *ht = h + (size_t)t * D;
        for (size_t d = 0; d < D; d++) {
            float s = 0;
            for (int j = 0; j < hc; j++) s += pre[j] * v[(size_t)j * D + d];
            ht[d] = R(r, s);
        }
        dsq_v4_rms_norm(ht, normw, (int64_t)D, (float)c->norm_eps, r->rel, ht);
    }
}

/* ---- attention (spec §4.4) ----------------------------------------------------------------------- */

static void cpu_kv_rows(const dsq__run *r, const v4_block_w *B, float *kv, int64_t p0, int64_t T) {
    const dsq_v4_config *c = r->c;
    int hd = c->head_dim, rd = c->rope_head_dim, nd = hd - rd;
    float eps = (float)c->norm_eps;
#pragma omp parallel for num_threads(r->k.threads) if (T > 1)
    for (int64_t t = 0; t < T; t++) {
        float *x = kv + (size_t)t * hd, cs[DSQ_V4_MAX_HEAD_DIM];
        dsq_v4_rms_norm(x, B->kv_norm, hd, eps, r->rel, x);
        dsq_v4_rope_cos_sin(B->freqs, rd, p0 + t, cs);
        dsq_v4_rope_apply(x, hd, rd, cs, false, r->rel);
        if (r->rel) dsq_act_fp8_sim(x, (uint64_t)nd, DSQ_KV_FP8_BLOCK);
    }
}

static void cpu_q_rows(const dsq__run *r, const v4_block_w *B, float *q, float *qi, float *iw, int64_t pos0,
                       int64_t tc) {
    const dsq_v4_config *c = r->c;
    int H = c->n_heads, hd = c->head_dim, rd = c->rope_head_dim;
    int nih = c->index_n_heads, ihd = c->index_head_dim;
    bool csa = B->kind == DSQ_ATTN_CSA;
    size_t Hhd = (size_t)H * hd;
    float eps = (float)c->norm_eps;
#pragma omp parallel for num_threads(r->k.threads) if (tc > 1)
    for (int64_t t = 0; t < tc; t++) {
        float cs[DSQ_V4_MAX_HEAD_DIM];
        dsq_v4_rope_cos_sin(B->freqs, rd, pos0 + t, cs);
        for (int h = 0; h < H; h++) {
            float *qh = q + (size_t)t * Hhd + (size_t)h * hd;
            dsq_v4_head_norm(qh, hd, eps, r->rel);
            dsq_v4_rope_apply(qh, hd, rd, cs, false, r->rel);
        }
        if (csa) {
            for (int h = 0; h < nih; h++) {
                float *x = qi + ((size_t)t * nih + h) * ihd;
                dsq_v4_rope_apply(x, ihd, rd, cs, false, r->rel);
                dsq_v4_hadamard(x, ihd, r->rel);
                if (r->rel) dsq_act_fp4_sim(x, (uint64_t)ihd, DSQ_FP4_BLOCK);
            }
            float ws = (float)(1.0 / sqrt((double)ihd) / sqrt((double)nih));
            for (int h = 0; h < nih; h++) iw[t * nih + h] = R(r, iw[t * nih + h] * ws);
        }
    }
}

/* ---- the KV cache (dsq_kv_cache) ----------------------------------------------------------------
 * Byte layouts of one entry (formats/spec/dsq.md §6.1).  An f32 kv entry is [nd non-rope][rd rope] in
 * memory order (kv_rows puts RoPE on the last rd dims); every packed form but bf16 puts the rope part first:
 *   f32           [hd] f32                      (indexer key [ihd] f32)
 *   bf16          [hd] bf16                     (indexer key [ihd] bf16)
 *   compact       kv_compact: [rd] bf16 rope | [nd] e4m3 non-rope | [ceil(nd/64)] UE8M0 scales
 *                 index_fp4:  [ihd/2] e2m1, two per byte, low nibble = even dim | [ihd/32] UE8M0 scales
 *   fp4           kv_fp4:     [rd] bf16 rope | [nd/2] e2m1x2 (low nibble = even dim) | [nd/32] UE8M0;  index_fp4
 *   int4          kv_int4:    [rd] bf16 rope | [nd/2] int4x2 two's complement in [-7, 7] | [nd/32] bf16 scales;
 *                 index_fp4
 *   compact-idx8  kv_compact; index_fp8: [ihd] e4m3 | [ihd/32] UE8M0 scales
 * Scale rules: UE8M0 ones are the release simulation's (lib/quant dsq_act_fp8_quant / dsq_act_fp4_quant);
 * int4: s = bf16(amax/7) per 32, q = clamp(rint(x/s), ±7) (s = 0: all codes 0). */

static void int4_quant(const float *x, int n, uint8_t *codes, uint8_t *scales) {
    memset(codes, 0, (size_t)(n + 1) / 2);
    for (int b0 = 0, bi = 0; b0 < n; b0 += DSQ_KV_Q4_BLOCK, bi++) {
        int len = n - b0 < DSQ_KV_Q4_BLOCK ? n - b0 : DSQ_KV_Q4_BLOCK;
        float amax = 0;
        for (int i = 0; i < len; i++) amax = fmaxf(amax, fabsf(x[b0 + i]));
        uint16_t sb = dsq_bf16_from_f32(amax / 7.0f);
        float s = dsq_bf16_to_f32(sb);
        memcpy(scales + 2 * bi, &sb, 2);
        if (!(s > 0)) continue; /* all-zero block: codes stay 0, nothing is divided by 0 */
        for (int i = b0; i < b0 + len; i++) {
            float q = rintf(x[i] / s);
            q = q > 7.0f ? 7.0f : q < -7.0f ? -7.0f : q;
            codes[i >> 1] |= (uint8_t)(((unsigned)(int)q & 15u) << ((i & 1) * 4));
        }
    }
}

/* The rope dims x[nd … hd) as bf16 at p[0 … 2·rd). */
static void pack_rope(const float *x, int nd, int rd, uint8_t *p) {
    for (int i = 0; i < rd; i++) {
        uint16_t h = dsq_bf16_from_f32(x[nd + i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

static void pack_row(const dsq__run *r, bool index, const float *x, uint8_t *p) {
    int hd = index ? r->c->index_head_dim : r->c->head_dim, rd = r->c->rope_head_dim, nd = hd - rd;
    switch (r->kv) {
    case DSQ_KV_CACHE_F32:
        memcpy(p, x, sizeof(float) * (size_t)hd);
        break;
    case DSQ_KV_CACHE_BF16:
        for (int i = 0; i < hd; i++) {
            uint16_t h = dsq_bf16_from_f32(x[i]);
            memcpy(p + 2 * i, &h, 2);
        }
        break;
    case DSQ_KV_CACHE_COMPACT:
    case DSQ_KV_CACHE_FP4:
    case DSQ_KV_CACHE_INT4:
    case DSQ_KV_CACHE_COMPACT_IDX8:
        if (index && r->kv == DSQ_KV_CACHE_COMPACT_IDX8) {
            dsq_act_fp8_quant(x, (uint64_t)hd, DSQ_KV_IDX8_BLOCK, p, NULL, p + hd);
        } else if (index) {
            dsq_act_fp4_quant(x, (uint64_t)hd, DSQ_FP4_BLOCK, p, p + (hd + 1) / 2);
        } else {
            pack_rope(x, nd, rd, p);
            uint8_t *q = p + 2 * rd;
            if (r->kv == DSQ_KV_CACHE_FP4)
                dsq_act_fp4_quant(x, (uint64_t)nd, DSQ_KV_Q4_BLOCK, q, q + (nd + 1) / 2);
            else if (r->kv == DSQ_KV_CACHE_INT4)
                int4_quant(x, nd, q, q + (nd + 1) / 2);
            else
                dsq_act_fp8_quant(x, (uint64_t)nd, DSQ_KV_FP8_BLOCK, q, NULL, q + nd);
        }
        break;
    }
}

static void unpack_row(const dsq__run *r, bool index, const uint8_t *p, float *x) {
    int hd = index ? r->c->index_head_dim : r->c->head_dim, rd = r->c->rope_head_dim, nd = hd - rd;
    switch (r->kv) {
    case DSQ_KV_CACHE_F32:
        memcpy(x, p, sizeof(float) * (size_t)hd);
        break;
    case DSQ_KV_CACHE_BF16:
        for (int i = 0; i < hd; i++) x[i] = dsq_bf16_to_f32(dsq__ld_u16(p + 2 * i));
        break;
    case DSQ_KV_CACHE_COMPACT:
    case DSQ_KV_CACHE_FP4:
    case DSQ_KV_CACHE_INT4:
    case DSQ_KV_CACHE_COMPACT_IDX8:
        if (index && r->kv == DSQ_KV_CACHE_COMPACT_IDX8) {
            const uint8_t *sc = p + hd;
            for (int i = 0; i < hd; i++) x[i] = dsq_e4m3_to_f32(p[i]) * dsq_e8m0_to_f32(sc[i / DSQ_KV_IDX8_BLOCK]);
        } else if (index) {
            const uint8_t *sc = p + (hd + 1) / 2;
            for (int i = 0; i < hd; i++)
                x[i] = dsq_e2m1_to_f32((uint8_t)(p[i >> 1] >> ((i & 1) * 4))) * dsq_e8m0_to_f32(sc[i / DSQ_FP4_BLOCK]);
        } else {
            const uint8_t *q = p + 2 * rd, *sc = q + (nd + 1) / 2;
            if (r->kv == DSQ_KV_CACHE_FP4) {
                for (int i = 0; i < nd; i++)
                    x[i] = dsq_e2m1_to_f32((uint8_t)(q[i >> 1] >> ((i & 1) * 4))) *
                           dsq_e8m0_to_f32(sc[i / DSQ_KV_Q4_BLOCK]);
            } else if (r->kv == DSQ_KV_CACHE_INT4) {
                for (int i = 0; i < nd; i++) {
                    int v = (int)((q[i >> 1] >> ((i & 1) * 4)) & 15u);
                    x[i] = (float)((v ^ 8) - 8) * dsq_bf16_to_f32(dsq__ld_u16(sc + 2 * (i / DSQ_KV_Q4_BLOCK)));
                }
            } else {
                sc = q + nd;
                for (int i = 0; i < nd; i++) x[i] = dsq_e4m3_to_f32(q[i]) * dsq_e8m0_to_f32(sc[i / DSQ_KV_FP8_BLOCK]);
            }
            for (int i = 0; i < rd; i++) x[nd + i] = dsq_bf16_to_f32(dsq__ld_u16(p + 2 * i));
        }
        break;
    }
}

static void cpu_cache_pack(const dsq__run *r, bool index, const float *src, int64_t n, uint8_t *dst) {
    size_t dims = (size_t)(index ? r->c->index_head_dim : r->c->head_dim), bytes = index ? r->idx_bytes : r->kv_bytes;
    for (int64_t t = 0; t < n; t++) pack_row(r, index, src + (size_t)t * dims, dst + (size_t)t * bytes);
}

static void cpu_cache_unpack(const dsq__run *r, bool index, const uint8_t *src, int64_t n, float *dst) {
    size_t dims = (size_t)(index ? r->c->index_head_dim : r->c->head_dim), bytes = index ? r->idx_bytes : r->kv_bytes;
    for (int64_t t = 0; t < n; t++) unpack_row(r, index, src + (size_t)t * bytes, dst + (size_t)t * dims);
}

static void attend_heads(const dsq__run *r, const v4_block_w *B, const float *qt, const float *const *keys,
                         int64_t n_keys, int64_t pos, float *ot, int h) {
    const dsq_v4_config *c = r->c;
    int hd = c->head_dim, rd = c->rope_head_dim;
    float *o = ot + (size_t)h * hd, cs[DSQ_V4_MAX_HEAD_DIM];
    dsq__sparse_attention(&r->k, qt + (size_t)h * hd, keys, n_keys, hd, B->attn_sink[h], 1.0f / sqrtf((float)hd),
                          r->rel, o);
    dsq_v4_rope_cos_sin(B->freqs, rd, pos, cs);
    dsq_v4_rope_apply(o, hd, rd, cs, true, r->rel);
}

/* The key lists of attention: f32 entries are read in place through kp [tc][n_keys]; packed ones are
 * dequantized per query token into kbuf [n_keys][hd] (kp [n_keys] points into it). */
static dsq_status key_lists_alloc(const dsq__run *r, bool f32, int64_t tc, int64_t n_keys, int hd, const float ***kp,
                                  float **kbuf) {
    size_t nk = (size_t)(n_keys > 0 ? n_keys : 1);
    *kp = dsq_malloc(sizeof **kp * nk * (size_t)(f32 ? tc : 1));
    *kbuf = f32 ? NULL : dsq_malloc(sizeof(float) * (size_t)hd * nk);
    if (*kp && (f32 || *kbuf)) return DSQ_OK;
    dsq_free(*kbuf);
    dsq_free((void *)*kp);
    return dsq_err_set(r->err, DSQ_ERR_NOMEM, "no memory to read %lld cache entries", (long long)n_keys);
}

/* AVX-512 path (attn_avx512.c, same bits): one task per (token, group of G heads); each task scores its
 * heads against the token's key list in blocks of 16 keys, then P·V over the list. */
static dsq_status attention_fast(const dsq__run *r, const v4_block_w *B, const float *q, const uint8_t *const *keys,
                                 int64_t n_keys, int64_t pos0, int64_t tc, float *oh) {
    const dsq_v4_config *c = r->c;
    int H = c->n_heads, hd = c->head_dim, rd = c->rope_head_dim, G = H % 16 == 0 ? 16 : 4, ng = H / G;
    size_t Hhd = (size_t)H * hd;
    bool f32 = r->kv == DSQ_KV_CACHE_F32, failed = false;
    float scale = 1.0f / sqrtf((float)hd);
    const float **kp;
    float *kbuf;
    DSQ_TRY(key_lists_alloc(r, f32, tc, n_keys, hd, &kp, &kbuf));
    for (int64_t t0 = 0; t0 < tc; t0 += f32 ? tc : 1) {
        int64_t t1 = f32 ? tc : t0 + 1;
        if (f32) {
            for (size_t i = 0; i < (size_t)n_keys * (size_t)tc; i++) kp[i] = (const float *)(const void *)keys[i];
        } else { /* packed: the token's keys dequantized once, shared by its H heads */
            const uint8_t *const *kt = keys + (size_t)t0 * n_keys;
#pragma omp parallel for num_threads(r->k.threads) if (n_keys > 16)
            for (int64_t j = 0; j < n_keys; j++) {
                kp[j] = kt[j] ? kbuf + (size_t)j * hd : NULL;
                if (kt[j]) unpack_row(r, false, kt[j], kbuf + (size_t)j * hd);
            }
        }
#pragma omp parallel for num_threads(r->k.threads) if ((t1 - t0) * ng > 1) collapse(2) schedule(dynamic)
        for (int64_t t = t0; t < t1; t++)
            for (int g = 0; g < ng; g++) {
                const float *const *kl = f32 ? kp + (size_t)t * n_keys : kp;
                float *ot = oh + (size_t)t * Hhd + (size_t)g * G * hd, cs[DSQ_V4_MAX_HEAD_DIM];
                if (dsq__attn_heads_avx512(q + (size_t)t * Hhd + (size_t)g * G * hd, G, hd, kl, n_keys,
                                           B->attn_sink + g * G, scale, r->rel, ot)) {
#pragma omp atomic write
                    failed = true;
                    continue;
                }
                dsq_v4_rope_cos_sin(B->freqs, rd, pos0 + t, cs);
                for (int h = 0; h < G; h++) dsq_v4_rope_apply(ot + (size_t)h * hd, hd, rd, cs, true, r->rel);
            }
        if (failed) break;
    }
    dsq_free(kbuf);
    dsq_free((void *)kp);
    if (failed) return dsq_err_set(r->err, DSQ_ERR_NOMEM, "no memory for attention scores (%lld keys)", (long long)n_keys);
    return DSQ_OK;
}

static dsq_status cpu_attention(const dsq__run *r, const v4_block_w *B, const float *q, const uint8_t *const *keys,
                                int64_t n_keys, int64_t pos0, int64_t tc, float *oh) {
    const dsq_v4_config *c = r->c;
    int H = c->n_heads, hd = c->head_dim;
    if (dsq__attn_fast_ok(&r->k, H, hd)) return attention_fast(r, B, q, keys, n_keys, pos0, tc, oh);
    size_t Hhd = (size_t)H * hd;
    bool f32 = r->kv == DSQ_KV_CACHE_F32;
    /* f32 entries are read in place through kp [tc][n_keys]; packed ones: each query token's key list is
     * dequantized once into kbuf [n_keys][hd] and shared by its H heads (keys are shared, spec §4.4) */
    const float **kp;
    float *kbuf;
    DSQ_TRY(key_lists_alloc(r, f32, tc, n_keys, hd, &kp, &kbuf));
    /* sparse attention with sink, then inverse RoPE at the query position */
    if (f32) {
        for (size_t i = 0; i < (size_t)n_keys * (size_t)tc; i++) kp[i] = (const float *)(const void *)keys[i];
#pragma omp parallel for num_threads(r->k.threads) if (tc * H > 1) collapse(2)
        for (int64_t t = 0; t < tc; t++)
            for (int h = 0; h < H; h++)
                attend_heads(r, B, q + (size_t)t * Hhd, kp + (size_t)t * n_keys, n_keys, pos0 + t, oh + (size_t)t * Hhd,
                             h);
    } else {
        for (int64_t t = 0; t < tc; t++) {
            const uint8_t *const *kt = keys + (size_t)t * n_keys;
#pragma omp parallel for num_threads(r->k.threads) if (n_keys > 16)
            for (int64_t j = 0; j < n_keys; j++) {
                kp[j] = kt[j] ? kbuf + (size_t)j * hd : NULL;
                if (kt[j]) unpack_row(r, false, kt[j], kbuf + (size_t)j * hd);
            }
#pragma omp parallel for num_threads(r->k.threads) if (H > 1)
            for (int h = 0; h < H; h++)
                attend_heads(r, B, q + (size_t)t * Hhd, kp, n_keys, pos0 + t, oh + (size_t)t * Hhd, h);
        }
    }
    dsq_free(kbuf);
    dsq_free((void *)kp);
    return DSQ_OK;
}

/* ---- compressor (spec §4.5) ---------------------------------------------------------------------- */

/* Post-process a pooled entry at compressed slot k (spec §4.5): RMSNorm(bf16(c)) → RoPE at k·r →
 * FP8 simulation of the non-rope dims (attention) or Hadamard + FP4 simulation (indexer). */
static void compressed_entry(const dsq__run *r, const v4_block_w *B, const v4_compressor_w *cw, bool indexer, int64_t k,
                             float *e) {
    const dsq_v4_config *c = r->c;
    int d = cw->d, rd = c->rope_head_dim;
    for (int i = 0; i < d; i++) e[i] = R(r, e[i]);
    dsq_v4_rms_norm(e, cw->norm, d, (float)c->norm_eps, r->rel, e);
    float cs[DSQ_V4_MAX_HEAD_DIM];
    dsq_v4_rope_cos_sin(B->freqs, rd, k * cw->ratio, cs);
    dsq_v4_rope_apply(e, d, rd, cs, false, r->rel);
    if (!indexer) {
        if (r->rel) dsq_act_fp8_sim(e, (uint64_t)(d - rd), DSQ_KV_FP8_BLOCK);
    } else {
        dsq_v4_hadamard(e, d, r->rel);
        if (r->rel) dsq_act_fp4_sim(e, (uint64_t)d, DSQ_FP4_BLOCK);
    }
}

static void cpu_compressor(const dsq__run *r, const v4_block_w *B, const v4_compressor_w *cw, bool indexer,
                           v4_comp_state *s, const float *kvp, const float *g, int64_t p0, int64_t T, int64_t k0,
                           float *dst) {
    int ratio = cw->ratio, d = cw->d, cd = cw->c * d;
    int rows = cw->c * ratio;
    for (int64_t t = 0; t < T; t++) {
        int64_t p = p0 + t;
        int i = (int)(p % ratio);
        int slot = (cw->overlap ? ratio : 0) + i;
        float *kv_row = s->kv + (size_t)slot * cd, *sc_row = s->sc + (size_t)slot * cd;
        const float *ape = cw->ape + (size_t)i * cd;
        for (int ch = 0; ch < cd; ch++) {
            kv_row[ch] = kvp[(size_t)t * cd + ch];
            sc_row[ch] = g[(size_t)t * cd + ch] + ape[ch];
        }
        if ((p + 1) % ratio != 0) continue;
        int64_t k = p / ratio;
        float *e = dst + (size_t)(k - k0) * d;
        /* spec §4.5: per-channel softmax over the window's rows; overlap: rows 0..r-1 use the first
         * half of slots 0..r-1 (previous window), rows r..2r-1 the second half of slots r..2r-1 */
        for (int ch = 0; ch < d; ch++) {
            float mx = -INFINITY;
            for (int row = 0; row < rows; row++) {
                int col = cw->overlap && row >= ratio ? d + ch : ch;
                mx = fmaxf(mx, s->sc[(size_t)row * cd + col]);
            }
            float den = 0, num = 0;
            for (int row = 0; row < rows; row++) {
                int col = cw->overlap && row >= ratio ? d + ch : ch;
                float w = expf(s->sc[(size_t)row * cd + col] - mx);
                den += w;
                num += w * s->kv[(size_t)row * cd + col];
            }
            e[ch] = num / den;
        }
        if (cw->overlap) {
            memcpy(s->kv, s->kv + (size_t)ratio * cd, sizeof(float) * (size_t)ratio * cd);
            memcpy(s->sc, s->sc + (size_t)ratio * cd, sizeof(float) * (size_t)ratio * cd);
        }
        compressed_entry(r, B, cw, indexer, k, e);
    }
}

/* ---- indexer (spec §4.6) ------------------------------------------------------------------------- */

/* The scalar twin: the score of key j (dsq__dot per head; AVX-512 twin dsq__indexer_block16). */
static float index_score_scalar(const dsq__run *r, const float *qi, const float *w, const uint8_t *keys, int64_t j) {
    int nih = r->c->index_n_heads, ihd = r->c->index_head_dim;
    float kf[DSQ_V4_MAX_HEAD_DIM]; /* [ihd] the key being scored, dequantized */
    const uint8_t *kp = keys + (size_t)j * r->idx_bytes;
    const float *kj = kf;
    if (r->kv == DSQ_KV_CACHE_F32)
        kj = (const float *)(const void *)kp; /* read in place */
    else
        unpack_row(r, true, kp, kf);
    float s = 0;
    for (int h = 0; h < nih; h++) {
        float dot = dsq__dot(&r->k, qi + (size_t)h * ihd, kj, (size_t)ihd);
        if (r->rel) {
            /* spec §5 row 12: bf16(q·K), relu, bf16(·w_h), f32 head sum → bf16 */
            dot = dsq_bf16_round(dot);
            s += dsq_bf16_round(fmaxf(dot, 0.0f) * w[h]);
        } else {
            s += fmaxf(dot, 0.0f) * w[h];
        }
    }
    return R(r, s);
}

static void cpu_indexer_topk(const dsq__run *r, const float *qi, const float *w, const uint8_t *keys, int64_t n_valid,
                             int64_t k_sel, float *buf, int64_t *out) {
    const dsq_v4_config *c = r->c;
    int nih = c->index_n_heads, ihd = c->index_head_dim;
    bool scored = false;
    /* one score per key, independent of the others: a decode token (not already inside the per-token
     * parallel loop of attention_seg) splits the keys over the threads; the scores do not depend on it */
    if (dsq__indexer_fast_ok(&r->k, nih, ihd)) {
        /* AVX-512 (same bits): blocks of 16 keys, each dequantized once and scored for all heads */
        int64_t n_blk = (n_valid + 15) / 16;
        bool f32 = r->kv == DSQ_KV_CACHE_F32, failed = false;
        /* index_fp4 keys (compact, fp4, int4 caches): the AVX-512 dequantizer when whole 32-blocks */
        bool fp4 = !f32 && r->kv != DSQ_KV_CACHE_BF16 && r->kv != DSQ_KV_CACHE_COMPACT_IDX8 && ihd % DSQ_FP4_BLOCK == 0;
#pragma omp parallel num_threads(r->k.threads) if (n_valid >= 512 && !omp_in_parallel())
        {
            /* scratch Kp [16·ihd], rows [16·ihd], dots [nih·16]: on the stack for small shapes */
            float small[2 * 16 * 64 + 16 * 16], *big = NULL, *scr = small;
            size_t need = (size_t)16 * ihd * 2 + (size_t)16 * nih;
            if (need > sizeof small / sizeof small[0]) scr = big = dsq_malloc(sizeof(float) * need);
            if (!scr) {
#pragma omp atomic write
                failed = true;
            }
#pragma omp for schedule(static)
            for (int64_t b = 0; b < n_blk; b++) {
                if (!scr) continue;
                float *Kp = scr, *rowbuf = scr + (size_t)16 * ihd, *dots = rowbuf + (size_t)16 * ihd;
                int64_t j0 = b * 16;
                int nk = n_valid - j0 < 16 ? (int)(n_valid - j0) : 16;
                const float *rows[16];
                for (int i = 0; i < nk; i++) {
                    const uint8_t *kp = keys + (size_t)(j0 + i) * r->idx_bytes;
                    if (f32) {
                        rows[i] = (const float *)(const void *)kp; /* read in place */
                    } else {
                        if (fp4)
                            dsq__unpack_fp4_avx512(kp, kp + ihd / 2, ihd, rowbuf + (size_t)i * ihd);
                        else
                            unpack_row(r, true, kp, rowbuf + (size_t)i * ihd);
                        rows[i] = rowbuf + (size_t)i * ihd;
                    }
                }
                dsq__indexer_block16(qi, w, nih, ihd, r->rel, rows, nk, Kp, dots, buf + j0);
            }
            dsq_free(big);
        }
        scored = !failed; /* no scratch: the scalar twin below gives the same scores */
    }
    if (!scored) {
#pragma omp parallel for num_threads(r->k.threads) if (n_valid >= 512 && !omp_in_parallel()) schedule(static)
        for (int64_t j = 0; j < n_valid; j++) buf[j] = index_score_scalar(r, qi, w, keys, j);
    }
    int64_t take = n_valid < k_sel ? n_valid : k_sel;
    dsq_v4_topk(buf, n_valid, take, out); /* spec §4.6 step 5: invalid entries (-inf) come last as -1 */
    for (int64_t i = take; i < k_sel; i++) out[i] = -1;
}

/* ---- MoE (spec §4.7) ----------------------------------------------------------------------------- */

static inline float softplus(float z) { return z > 20.0f ? z : log1pf(expf(z)); }

static void cpu_route(const dsq__run *r, const v4_block_w *B, float *z, const int32_t *tok, int64_t n, int *isel,
                      float *wsel, float *biased, int64_t *top) {
    const dsq_v4_config *c = r->c;
    int E = c->n_routed_experts, K = c->n_activated_experts;
    /* router in f32: score = sqrt(softplus(gate·a)) */
    for (int64_t t = 0; t < n; t++) {
        float *sc = z + (size_t)t * E;
        for (int e = 0; e < E; e++) sc[e] = sqrtf(softplus(sc[e]));
        int *ids = isel + (size_t)t * K;
        if (B->hash) {
            for (int k = 0; k < K; k++) ids[k] = (int)dsq__ld_i64(B->tid2eid.data + 8 * ((size_t)tok[t] * K + k));
        } else {
            /* top-k of score + bias (spec §4.7 step 2; ties: spec §8.23) */
            for (int e = 0; e < E; e++) biased[e] = sc[e] + B->gate_bias[e];
            dsq_v4_topk(biased, E, K, top);
            for (int k = 0; k < K; k++) ids[k] = (int)top[k];
        }
        float sum = 0;
        for (int k = 0; k < K; k++) sum += sc[ids[k]];
        for (int k = 0; k < K; k++) wsel[(size_t)t * K + k] = sc[ids[k]] / sum * (float)c->route_scale;
    }
}

/* SwiGLU with clamp (spec §8.18): h = silu(min(g, L)) · clamp(u, -L, L) · weight. */
static inline float swiglu(float g, float u, float lim, bool clamp) {
    if (clamp) {
        g = fminf(g, lim);
        u = fminf(fmaxf(u, -lim), lim);
    }
    return g / (1.0f + expf(-g)) * u;
}

static void cpu_swiglu_rows(const dsq__run *r, float *g, const float *u, int64_t n, size_t I, const float *weight,
                            bool clamp) {
    float lim = (float)r->c->swiglu_limit;
    for (int64_t t = 0; t < n; t++)
        for (size_t i = 0; i < I; i++) {
            float h = swiglu(g[t * I + i], u[t * I + i], lim, clamp);
            if (weight) h *= weight[t];
            g[t * I + i] = R(r, h);
        }
}

/* Where threads split n rows: row `row` rounded to the nearest 16-row step (whole one-token tiles), at
 * most n. */
static uint64_t step16(uint64_t row, uint64_t n) {
    uint64_t c = (row + 8) / 16 * 16;
    return c < n ? c : n;
}

/* The first row of thread i of T over n rows (n for i = T). */
static uint64_t row_cut(uint64_t n, int i, int T) { return i >= T ? n : step16(n * (uint64_t)i / (uint64_t)T, n); }

/* One token's routed experts (decode), then the shared expert when `shared`: with T threads dividing k,
 * each thread runs whole routed experts (w1, w3, SwiGLU, w2) one after another with a one-thread linear,
 * then its share of the shared expert's w1 and w3 rows (and SwiGLU on them), and after a barrier its
 * share of w2's rows, all in one parallel region, instead of one region and a row split per linear (3k + 3
 * regions per layer, each a fork, a join and a barrier); otherwise the experts run in turn with every
 * thread.  The routed experts are handed out one at a time (a preempted thread's share goes to the
 * other).  dsq__linear's bits do not depend on the thread count, the token count or the row range, and
 * SwiGLU is per element, so ys[i] is what the generic path gives that row. */
static dsq_status cpu_routed1(const dsq__run *r, const v4_block_w *B, const int *ids, const float *wts, int k,
                              bool shared, const float *x, float *scratch, float *ys) {
    size_t D = (size_t)r->c->dim, I = (size_t)r->c->moe_inter_dim;
    size_t Is = shared ? (size_t)B->sw1.shape[0] : 0;
    int T = r->k.threads;
    bool split = T > 1 && k % T == 0;
    dsq__kern k1 = r->k;
    k1.threads = 1;
    const dsq__kern *kk = split ? &k1 : &r->k;
    float *sg = scratch + (size_t)k * 2 * I, *su = sg + Is, *sy = ys + (size_t)k * D;
    dsq_status st = DSQ_OK;
#pragma omp parallel num_threads(split ? T : 1)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        dsq_err err = DSQ_ERR_INIT;
        dsq_status s = DSQ_OK;
#pragma omp for schedule(dynamic, 1) nowait
        for (int i = 0; i < k; i++) {
            const int e = ids[i];
            float *g = scratch + (size_t)i * 2 * I, *u = g + I, *y = ys + (size_t)i * D;
            if (!s) s = dsq__linear(kk, &B->w1[e], 0, I, x, D, 1, g, I, &err);
            if (!s) s = dsq__linear(kk, &B->w3[e], 0, I, x, D, 1, u, I, &err);
            if (!s) {
                cpu_swiglu_rows(r, g, u, 1, I, &wts[i], true);
                s = dsq__linear(kk, &B->w2[e], 0, D, g, I, 1, y, D, &err);
            }
        }
        uint64_t a = row_cut(Is, t, nt), b = row_cut(Is, t + 1, nt);
        if (shared && !s && b > a) {
            s = dsq__linear(kk, &B->sw1, a, b - a, x, D, 1, sg + a, b - a, &err);
            if (!s) s = dsq__linear(kk, &B->sw3, a, b - a, x, D, 1, su + a, b - a, &err);
            if (!s) cpu_swiglu_rows(r, sg + a, su + a, 1, b - a, NULL, r->shared_clamp);
        }
#pragma omp barrier
        a = row_cut(D, t, nt), b = row_cut(D, t + 1, nt);
        if (shared && !s && b > a) s = dsq__linear(kk, &B->sw2, a, b - a, sg, Is, 1, sy + a, b - a, &err);
        if (s) {
#pragma omp critical(dsq_routed1)
            if (!st) st = dsq_err_set(r->err, s, "%s", err.msg);
        }
        dsq_err_clear(&err);
    }
    return st;
}

/* Several one-token linear jobs in one parallel region: the jobs' rows, laid end to end and weighted
 * by their column counts, are cut into T equal parts at 16-row steps (whole one-token tiles), and each
 * thread runs its part with a one-thread linear, in job order.  A run of consecutive rows of one view
 * (wo_a's groups) becomes one contiguous stream per thread instead of a fork, a row split and a join per
 * job.  dsq__linear gives a row the same bits whichever call or thread computes it. */
static dsq_status cpu_linear1_multi(const dsq__run *r, const dsq__lin_job *jobs, int n_jobs) {
    double total = 0;
    for (int j = 0; j < n_jobs; j++) total += (double)jobs[j].n_rows * (double)jobs[j].w->shape[1];
    int T = r->k.threads > 1 && total >= 65536.0 ? r->k.threads : 1;
    dsq__kern k1 = r->k;
    k1.threads = 1;
    dsq_status st = DSQ_OK;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double lo = total * t / nt, hi = t == nt - 1 ? INFINITY : total * (t + 1) / nt, base = 0;
        dsq_err err = DSQ_ERR_INIT;
        dsq_status s = DSQ_OK;
        for (int j = 0; j < n_jobs && !s; j++) {
            const dsq__lin_job *jb = &jobs[j];
            double c = (double)jb->w->shape[1], end = base + (double)jb->n_rows * c;
            if (hi > base && lo < end) {
                /* the cuts at cost positions lo and hi: the same expression for the thread that ends at a
                 * position and the one that starts there */
                uint64_t a = lo <= base ? 0 : step16((uint64_t)((lo - base) / c), jb->n_rows);
                uint64_t b = hi >= end ? jb->n_rows : step16((uint64_t)((hi - base) / c), jb->n_rows);
                if (b > a) s = dsq__linear(&k1, jb->w, jb->row0 + a, b - a, jb->x, (size_t)jb->w->shape[1], 1,
                                           jb->y + a, b - a, &err);
            }
            base = end;
        }
        if (s) {
#pragma omp critical(dsq_linear1_multi)
            if (!st) st = dsq_err_set(r->err, s, "%s", err.msg);
        }
        dsq_err_clear(&err);
    }
    return st;
}

const dsq__backend dsq__backend_cpu = {
    .name = "cpu",
    .impl = NULL,
    .linear = cpu_linear,
    .fp8_linear = cpu_fp8_linear,
    .norm_rows = cpu_norm_rows,
    .hc_pre = cpu_hc_pre,
    .hc_post = cpu_hc_post,
    .hc_head = cpu_hc_head,
    .kv_rows = cpu_kv_rows,
    .q_rows = cpu_q_rows,
    .compressor = cpu_compressor,
    .cache_pack = cpu_cache_pack,
    .cache_unpack = cpu_cache_unpack,
    .indexer_topk = cpu_indexer_topk,
    .attention = cpu_attention,
    .route = cpu_route,
    .swiglu_rows = cpu_swiglu_rows,
    .routed1 = cpu_routed1,
    .linear1_multi = cpu_linear1_multi,
    .close = NULL,
};
