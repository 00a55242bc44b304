/* The V4 forward pass, written to read like spec §4:
 *   embed → for every block: hc_pre, norm, attention, hc_post, hc_pre, norm, moe, hc_post → head.
 * Activations are f32 arrays; release numerics (spec §5) round them to bf16 at the listed points.
 *
 * Batching: a call carries several "segments" (one per sequence), each feeding T tokens at
 * positions p0 … p0+T-1 of its sequence.  Linear layers run over all tokens of all segments at
 * once; attention, compressors and caches are per segment.  The window/compressed index lists are
 * those of spec §4.4 for a prefill (p0 = 0) or a decode step, and the natural generalisation for
 * chunks, so any split of a sequence gives the same math. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_numeric.h"
#include "dsq_v4_ops.h"
#include "v4_backend.h"

enum { Q_CHUNK = 64 }; /* tokens per pass of the q path / attention (bounds the [T][H·hd] buffers) */
enum { WO_GROUPS_MAX = 64 }; /* wo_a groups run as one linear1_multi call (o_groups is 8 in V4-Flash and V4-Pro) */

/* The spec's operations go through r->be (v4_backend.h): the cpu backend unless opt->device says otherwise. */
typedef dsq__run run;

typedef struct seg {
    dsq_v4_seq *seq;
    int64_t p0;  /* position of the first token */
    int64_t T;   /* tokens */
    int64_t off; /* first row in the batch */
} seg;

static inline float R(const run *r, float x) { return r->rel ? dsq_bf16_round(x) : x; }
#define BE (r->be)

#define ALLOC(ptr, count)                                                                                              \
    do {                                                                                                               \
        (ptr) = dsq_malloc(sizeof *(ptr) * (size_t)((count) > 0 ? (count) : 1));                                       \
        if (!(ptr)) {                                                                                                  \
            st = dsq_err_set(r->err, DSQ_ERR_NOMEM, "no memory for %s (%lld elements)", #ptr, (long long)(count));     \
            goto done;                                                                                                 \
        }                                                                                                              \
    } while (0)
#define CHECK(expr)                                                                                                    \
    do {                                                                                                               \
        st = (expr);                                                                                                   \
        if (st) goto done;                                                                                             \
    } while (0)

/* SIGINT/SIGTERM (dsq_signals_install) stop a forward pass within a fraction of a second: polled per
 * layer, per query chunk of attention and per routed expert, never inside a parallel region.  An
 * interrupted pass leaves its sequences' caches half-advanced: they are only fit to be freed. */
static dsq_status poll_stop(const run *r) {
    return dsq_interrupted() ? dsq_err_set(r->err, DSQ_ERR_INTERRUPTED, "interrupted") : DSQ_OK;
}

/* ---- linear layers in the two numerics ----------------------------------------------------------- */

typedef enum lin_mode {
    LIN_F32,  /* f32 GEMM, f32 output (compressor, router, head, hc mixes) */
    LIN_BF16, /* release: input as is (bf16), output bf16 (wo_a, weights_proj) */
    LIN_FP8,  /* release: input quantized 1×128 FP8, output bf16 (spec §5 "FP8-linear") */
} lin_mode;

/* y[t][i] = W[row0+i] · x[t] for i < n_rows. */
static dsq_status lin_rows(const run *r, lin_mode mode, const dsq_wview *w, uint64_t row0, uint64_t n_rows,
                           const float *x, size_t ldx, int64_t n, float *y, size_t ldy) {
    dsq_status st = DSQ_OK;
    float *q = NULL, *sa = NULL;
    size_t K = (size_t)w->shape[1], nb = (size_t)dsq_ceil_div(K, DSQ_FP8_BLOCK);
    if (r->rel && mode == LIN_FP8 && n > 0) {
        /* spec §5 FP8-linear: the input quantized per token in 1×128 blocks, Σ_b s_a·Σ q_a·w */
        ALLOC(q, (int64_t)K * n);
        ALLOC(sa, (int64_t)nb * n);
        for (int64_t t = 0; t < n; t++)
            dsq_act_fp8_quant_values(x + (size_t)t * ldx, K, DSQ_FP8_BLOCK, q + (size_t)t * K, sa + (size_t)t * nb);
        CHECK(BE->fp8_linear(r, w, row0, n_rows, q, sa, n, y, ldy));
    } else {
        CHECK(BE->linear(r, w, row0, n_rows, x, ldx, n, y, ldy));
    }
    if (r->rel && mode != LIN_F32)
        for (int64_t t = 0; t < n; t++) dsq_v4_round_bf16(y + (size_t)t * ldy, (int64_t)n_rows);
done:
    dsq_free(q);
    dsq_free(sa);
    return st;
}

static dsq_status lin(const run *r, lin_mode mode, const dsq_wview *w, const float *x, int64_t n, float *y) {
    if (r->observe && n > 0) r->observe(r->observe_user, w->name, x, (size_t)w->shape[1], n, w->shape[1]);
    return lin_rows(r, mode, w, 0, w->shape[0], x, (size_t)w->shape[1], n, y, (size_t)w->shape[0]);
}

/* One-token linear jobs in one backend call (exact numerics, where every mode is the plain linear; not
 * with an observer, so a calibration pass and the tests see the one-linear-at-a-time path). */
static bool multi_ok(const run *r) { return BE->linear1_multi && !r->rel && !r->observe && !r->observe_rows; }

/* ---- hyper-connections (spec §4.2) ------------------------------------------------------------------ */

/* X [n][hc][D] → a [n][D], post [n][hc], comb [n][hc][hc]. */
static dsq_status hc_pre(const run *r, const dsq_wview *fn, const float *scale, const float *base, const float *X,
                         int64_t n, float *a, float *post, float *comb) {
    const dsq_v4_config *c = r->c;
    int hc = c->hc_mult, mix = (2 + hc) * hc;
    dsq_status st = DSQ_OK;
    float *mixes = NULL;
    ALLOC(mixes, (int64_t)mix * n);
    CHECK(lin(r, LIN_F32, fn, X, n, mixes));
    BE->hc_pre(r, scale, base, X, mixes, n, a, post, comb);
done:
    dsq_free(mixes);
    return st;
}

/* ---- compressor (spec §4.5) -------------------------------------------------------------------------- */

/* Feed tokens p0 … p0+T-1 (block input a [T][D]) through a compressor's decode state machine;
 * the windows it completes (entries k0 … n_comp-1) are pooled, post-processed, packed in the cache
 * encoding and stored at dst[k][bytes] (kv entries, or indexer keys when `indexer`). */
static dsq_status compressor_run(const run *r, const v4_block_w *B, const v4_compressor_w *cw, bool indexer,
                                 v4_comp_state *s, const float *a, int64_t p0, int64_t T, int64_t k0, int64_t n_comp,
                                 uint8_t *dst) {
    int cd = cw->c * cw->d;
    dsq_status st = DSQ_OK;
    float *kvp = NULL, *g = NULL, *ent = NULL;
    ALLOC(kvp, (int64_t)cd * T);
    ALLOC(g, (int64_t)cd * T);
    ALLOC(ent, (int64_t)cw->d * (n_comp - k0));
    /* spec §8.27: f32 GEMM on the (bf16) input, no activation quantization */
    CHECK(lin(r, LIN_F32, &cw->wkv, a, T, kvp));
    CHECK(lin(r, LIN_F32, &cw->wgate, a, T, g));
    BE->compressor(r, B, cw, indexer, s, kvp, g, p0, T, k0, ent);
    BE->cache_pack(r, indexer, ent, n_comp - k0, dst + (size_t)k0 * (indexer ? r->idx_bytes : r->kv_bytes));
done:
    dsq_free(kvp);
    dsq_free(g);
    dsq_free(ent);
    return st;
}

/* Room for `need` compressed entries: grows by 1/64 (+ 8 entries), so the spare capacity stays a small
 * fraction of the declared per-token bytes. */
static dsq_status cache_reserve(const run *r, const v4_block_w *B, v4_layer_cache *lc, int64_t need) {
    if (need <= lc->cap) return DSQ_OK;
    int64_t cap = need + need / 64 + 8;
    uint64_t kvb = 0, ib = 0;
    DSQ_RETURN_IF(!dsq_mul_u64((uint64_t)cap, r->kv_bytes, &kvb) || !dsq_mul_u64((uint64_t)cap, r->idx_bytes, &ib) ||
                      kvb > SIZE_MAX || ib > SIZE_MAX,
                  r->err, DSQ_ERR_RANGE, "%lld compressed entries do not fit in memory", (long long)cap);
    uint8_t *nc = dsq_realloc(lc->comp, (size_t)kvb);
    if (!nc) return dsq_err_set(r->err, DSQ_ERR_NOMEM, "no memory for %lld compressed entries", (long long)cap);
    lc->comp = nc;
    if (B->kind == DSQ_ATTN_CSA) {
        uint8_t *nk = dsq_realloc(lc->idx_keys, (size_t)ib);
        if (!nk) return dsq_err_set(r->err, DSQ_ERR_NOMEM, "no memory for %lld indexer keys", (long long)cap);
        lc->idx_keys = nk;
    }
    lc->cap = cap;
    return DSQ_OK;
}

/* ---- attention (spec §4.4) ------------------------------------------------------------------------------ */

/* Attention of one segment: a [T][D] → out [T][D]; updates the segment's caches. */
static dsq_status attention_seg(const run *r, const v4_block_w *B, v4_layer_cache *lc, int64_t p0, int64_t T,
                                const float *a, float *out) {
    const dsq_v4_config *c = r->c;
    int H = c->n_heads, hd = c->head_dim, W = c->window_size;
    int ql = c->q_lora_rank, G = c->o_groups, ol = c->o_lora_rank;
    int nih = c->index_n_heads, ihd = c->index_head_dim, ratio = B->ratio;
    bool csa = B->kind == DSQ_ATTN_CSA;
    size_t D = (size_t)c->dim, Hhd = (size_t)H * hd;
    dsq_status st = DSQ_OK;
    float *kv = NULL, *qa = NULL, *q = NULL, *oh = NULL, *u = NULL, *qi = NULL, *iw = NULL;
    uint8_t *kvc = NULL; /* [T][kv_bytes] this segment's kv rows packed like the cache */
    const uint8_t **keys = NULL;
    size_t kvb = r->kv_bytes;
    int64_t *sel = NULL;

    /* kv path: wkv → kv_norm → RoPE → (release) FP8 simulation of the non-rope dims */
    ALLOC(kv, (int64_t)hd * T);
    ALLOC(qa, (int64_t)ql * (T < Q_CHUNK ? T : Q_CHUNK));
    /* one token: wkv and wq_a (both on a) in one call; the q path below skips wq_a */
    bool qa_done = T == 1 && multi_ok(r);
    if (qa_done) {
        dsq__lin_job jobs[2] = {{&B->wkv, 0, B->wkv.shape[0], a, kv}, {&B->wq_a, 0, B->wq_a.shape[0], a, qa}};
        CHECK(BE->linear1_multi(r, jobs, 2));
    } else {
        CHECK(lin(r, LIN_FP8, &B->wkv, a, T, kv));
    }
    BE->kv_rows(r, B, kv, p0, T);
    /* every split reads the same packed entries: the segment's own rows go through the cache encoding too */
    ALLOC(kvc, (int64_t)kvb * T);
    BE->cache_pack(r, false, kv, T, kvc);

    /* compressors: entries completed by this segment become visible to the tokens that complete them */
    int64_t n_comp = ratio > 0 ? (p0 + T) / ratio : 0;
    if (ratio > 0) {
        CHECK(cache_reserve(r, B, lc, n_comp));
        CHECK(compressor_run(r, B, &B->comp, false, &lc->cs, a, p0, T, lc->n_comp, n_comp, lc->comp));
        if (csa) CHECK(compressor_run(r, B, &B->idx_comp, true, &lc->ics, a, p0, T, lc->n_comp, n_comp, lc->idx_keys));
        lc->n_comp = n_comp;
    }

    /* list lengths (spec §4.4 steps 3–4): window part min(S, W) in a prefill, W in decode */
    int64_t n_win = p0 == 0 ? (T < W ? T : W) : W;
    int64_t n_cl = ratio == 0 ? 0 : csa ? (n_comp < c->index_topk ? n_comp : c->index_topk) : n_comp;
    int64_t n_keys = n_win + n_cl;
    int64_t TC = T < Q_CHUNK ? T : Q_CHUNK;
    ALLOC(q, (int64_t)Hhd * TC);
    ALLOC(oh, (int64_t)Hhd * TC);
    ALLOC(u, (int64_t)G * ol * TC);
    ALLOC(keys, n_keys * TC);
    if (csa) {
        ALLOC(qi, (int64_t)nih * ihd * TC);
        ALLOC(iw, (int64_t)nih * TC);
        ALLOC(sel, n_cl * TC);
    }
    for (int64_t t0 = 0; t0 < T; t0 += TC) {
        CHECK(poll_stop(r));
        int64_t tc = T - t0 < TC ? T - t0 : TC;
        const float *at = a + (size_t)t0 * D;
        /* q path: wq_a → q_norm (qr) → wq_b → per-head norm → RoPE */
        if (!qa_done) CHECK(lin(r, LIN_FP8, &B->wq_a, at, tc, qa));
        BE->norm_rows(r, qa, B->q_norm, tc, ql, (size_t)ql);
        CHECK(lin(r, LIN_FP8, &B->wq_b, qa, tc, q));
        if (csa) {
            CHECK(lin(r, LIN_FP8, &B->idx_wq_b, qa, tc, qi));
            CHECK(lin(r, LIN_BF16, &B->idx_weights_proj, at, tc, iw));
        }
        BE->q_rows(r, B, q, qi, iw, p0 + t0, tc);
        /* index lists: window (ascending positions) then compressed */
        bool failed = false;
#pragma omp parallel num_threads(r->k.threads) if (tc > 1)
        {
            float *buf = NULL;
            if (csa && n_comp > 0) {
                buf = dsq_malloc(sizeof *buf * (size_t)(n_comp + ihd));
                if (!buf) {
#pragma omp atomic write
                    failed = true;
                }
            }
#pragma omp for schedule(static)
            for (int64_t t = 0; t < tc; t++) {
                int64_t pos = p0 + t0 + t;
                const uint8_t **kl = keys + (size_t)t * n_keys;
                int64_t lo = pos - W + 1 > 0 ? pos - W + 1 : 0, i = 0;
                for (int64_t qp = lo; qp <= pos; qp++, i++)
                    kl[i] = qp >= p0 ? kvc + (size_t)(qp - p0) * kvb : lc->ring + (size_t)(qp % W) * kvb;
                for (; i < n_win; i++) kl[i] = NULL;
                int64_t n_valid = ratio > 0 ? (pos + 1) / ratio : 0; /* spec §8.21 */
                if (ratio > 0 && !csa) {
                    for (int64_t j = 0; j < n_cl; j++) kl[n_win + j] = j < n_valid ? lc->comp + (size_t)j * kvb : NULL;
                } else if (csa && n_cl > 0) {
                    if (!buf) continue;
                    int64_t *s = sel + (size_t)t * n_cl;
                    BE->indexer_topk(r, qi + (size_t)t * nih * ihd, iw + (size_t)t * nih, lc->idx_keys, n_valid, n_cl,
                                   buf, s);
                    for (int64_t j = 0; j < n_cl; j++) kl[n_win + j] = s[j] >= 0 ? lc->comp + (size_t)s[j] * kvb : NULL;
                }
            }
            dsq_free(buf);
        }
        if (failed) CHECK(dsq_err_set(r->err, DSQ_ERR_NOMEM, "no memory for indexer scores"));
        /* sparse attention with sink, then inverse RoPE at the query position */
        CHECK(BE->attention(r, B, q, keys, n_keys, p0 + t0, tc, oh));
        /* grouped low-rank output: u_g = wo_a_g · o_g (bf16 GEMM in release, input not quantized) */
        size_t gw = Hhd / (size_t)G;
        for (int g = 0; g < G; g++)
            if (r->observe_rows && tc > 0)
                r->observe_rows(r->observe_user, B->wo_a.name, (uint64_t)g * ol, (uint64_t)ol, oh + g * gw, Hhd, tc,
                                B->wo_a.shape[1]);
        if (tc == 1 && multi_ok(r) && G <= WO_GROUPS_MAX) {
            /* one token: the G groups in one call (u is [G·ol], the groups' rows are contiguous) */
            dsq__lin_job jobs[WO_GROUPS_MAX];
            for (int g = 0; g < G; g++)
                jobs[g] = (dsq__lin_job){&B->wo_a, (uint64_t)g * ol, (uint64_t)ol, oh + g * gw, u + (size_t)g * ol};
            CHECK(BE->linear1_multi(r, jobs, G));
        } else {
            for (int g = 0; g < G; g++)
                CHECK(lin_rows(r, LIN_BF16, &B->wo_a, (uint64_t)g * ol, (uint64_t)ol, oh + g * gw, Hhd, tc,
                               u + (size_t)g * ol, (size_t)G * ol));
        }
        CHECK(lin(r, LIN_FP8, &B->wo_b, u, tc, out + (size_t)t0 * D));
    }
    /* window ring: the last min(T, W) kv rows at slot pos mod W (after the queries used the old ones) */
    for (int64_t t = T - W > 0 ? T - W : 0; t < T; t++)
        memcpy(lc->ring + (size_t)((p0 + t) % W) * kvb, kvc + (size_t)t * kvb, kvb);
done:
    dsq_free(kv);
    dsq_free(kvc);
    dsq_free(qa);
    dsq_free(q);
    dsq_free(oh);
    dsq_free(u);
    dsq_free(keys);
    dsq_free(qi);
    dsq_free(iw);
    dsq_free(sel);
    return st;
}

/* ---- MoE (spec §4.7) ----------------------------------------------------------------------------------- */

static dsq_status expert_ffn(const run *r, const dsq_wview *w1, const dsq_wview *w2, const dsq_wview *w3,
                             const float *x, int64_t n, const float *weight, bool clamp, float *gbuf, float *ubuf,
                             float *y) {
    dsq_status st;
    size_t I = (size_t)w1->shape[0];
    if (n == 1 && multi_ok(r)) { /* one token: w1 and w3 in one call */
        dsq__lin_job jobs[2] = {{w1, 0, w1->shape[0], x, gbuf}, {w3, 0, w3->shape[0], x, ubuf}};
        DSQ_TRY(BE->linear1_multi(r, jobs, 2));
    } else {
        DSQ_TRY(lin(r, LIN_FP8, w1, x, n, gbuf));
        DSQ_TRY(lin(r, LIN_FP8, w3, x, n, ubuf));
    }
    BE->swiglu_rows(r, gbuf, ubuf, n, I, weight, clamp);
    st = lin(r, LIN_FP8, w2, gbuf, n, y);
    return st;
}

/* a [n][D] → f [n][D]; tok[n] for hash routing. */
static dsq_status moe(const run *r, const v4_block_w *B, const float *a, const int32_t *tok, int64_t n, float *f) {
    const dsq_v4_config *c = r->c;
    int E = c->n_routed_experts, K = c->n_activated_experts;
    size_t D = (size_t)c->dim, I = (size_t)c->moe_inter_dim;
    dsq_status st = DSQ_OK;
    float *z = NULL, *wsel = NULL, *xg = NULL, *gb = NULL, *ub = NULL, *yb = NULL, *wg = NULL, *ys = NULL, *scr = NULL,
          *wts = NULL;
    int *isel = NULL, *ids = NULL;
    int64_t *rows = NULL, *top = NULL;
    float *biased = NULL;
    ALLOC(top, K);
    ALLOC(biased, E);
    ALLOC(z, (int64_t)E * n);
    ALLOC(isel, (int64_t)K * n);
    ALLOC(wsel, (int64_t)K * n);
    CHECK(lin(r, LIN_F32, &B->gate, a, n, z));
    BE->route(r, B, z, tok, n, isel, wsel, biased, top);
    memset(f, 0, sizeof(float) * D * (size_t)n);
    bool one = n == 1 && BE->routed1 && !r->rel && !r->observe;
    if (!one) {
        /* gather buffers sized for the busiest expert (a token may list an expert twice: two rows) */
        int64_t most = n;
        for (int e = 0; e < E; e++) {
            int64_t ne = 0;
            for (int64_t i = 0; i < (int64_t)K * n; i++) ne += isel[i] == e;
            if (ne > most) most = ne;
        }
        ALLOC(xg, (int64_t)D * most);
        ALLOC(gb, (int64_t)I * most);
        ALLOC(ub, (int64_t)I * most);
        ALLOC(yb, (int64_t)D * most);
        ALLOC(wg, most);
        ALLOC(rows, most);
    } else {
        /* one token (decode): its K experts in one backend call, in the order below (ascending id, a
         * repeated id twice); ys[i] are the rows expert_ffn would give, summed in the same order */
        ALLOC(ids, K);
        ALLOC(wts, K);
        ALLOC(ys, (int64_t)(K + 1) * (int64_t)D);
        ALLOC(scr, (int64_t)K * 2 * (int64_t)I + 2 * (int64_t)B->sw1.shape[0]);
        int k1 = 0;
        for (int e = 0; e < E; e++)
            for (int k = 0; k < K; k++)
                if (isel[k] == e) ids[k1] = e, wts[k1++] = wsel[k];
        CHECK(poll_stop(r));
        CHECK(BE->routed1(r, B, ids, wts, k1, true, a, scr, ys));
        for (int i = 0; i < k1; i++)
            for (size_t d = 0; d < D; d++) f[d] += ys[(size_t)i * D + d];
        for (size_t d = 0; d < D; d++) f[d] = R(r, f[d] + ys[(size_t)k1 * D + d]); /* the shared expert last */
    }
    /* routed experts in ascending id order: each token accumulates its experts in that order */
    for (int e = 0; e < E && !one; e++) {
        int64_t ne = 0;
        for (int64_t t = 0; t < n; t++)
            for (int k = 0; k < K; k++)
                if (isel[(size_t)t * K + k] == e) {
                    rows[ne] = t;
                    wg[ne] = wsel[(size_t)t * K + k];
                    memcpy(xg + (size_t)ne * D, a + (size_t)t * D, sizeof(float) * D);
                    ne++;
                }
        if (!ne) continue;
        CHECK(poll_stop(r));
        CHECK(expert_ffn(r, &B->w1[e], &B->w2[e], &B->w3[e], xg, ne, wg, true, gb, ub, yb));
        for (int64_t i = 0; i < ne; i++) {
            float *ft = f + (size_t)rows[i] * D;
            const float *yt = yb + (size_t)i * D;
            for (size_t d = 0; d < D; d++) ft[d] += yt[d];
        }
    }
    /* shared expert last (routed1 ran it with the routed ones) */
    if (!one) {
        CHECK(expert_ffn(r, &B->sw1, &B->sw2, &B->sw3, a, n, NULL, r->shared_clamp, gb, ub, yb));
        for (size_t i = 0; i < D * (size_t)n; i++) f[i] = R(r, f[i] + yb[i]);
    }
done:
    dsq_free(z);
    dsq_free(isel);
    dsq_free(wsel);
    dsq_free(xg);
    dsq_free(gb);
    dsq_free(ub);
    dsq_free(yb);
    dsq_free(wg);
    dsq_free(rows);
    dsq_free(top);
    dsq_free(biased);
    dsq_free(ids);
    dsq_free(wts);
    dsq_free(ys);
    dsq_free(scr);
    return st;
}

/* ---- block (spec §4.2) --------------------------------------------------------------------------------- */

static dsq_status block_forward(const run *r, const v4_block_w *B, const seg *segs, int n_segs, int64_t n, float *X,
                                const int32_t *tok) {
    const dsq_v4_config *c = r->c;
    int hc = c->hc_mult;
    size_t D = (size_t)c->dim;
    dsq_status st = DSQ_OK;
    float *a = NULL, *post = NULL, *comb = NULL, *o = NULL;
    ALLOC(a, (int64_t)D * n);
    ALLOC(o, (int64_t)D * n);
    ALLOC(post, (int64_t)hc * n);
    ALLOC(comb, (int64_t)hc * hc * n);

    CHECK(hc_pre(r, &B->hc_attn_fn, B->hc_attn_scale, B->hc_attn_base, X, n, a, post, comb));
    BE->norm_rows(r, a, B->attn_norm, n, (int64_t)D, D);
    for (int s = 0; s < n_segs; s++)
        CHECK(attention_seg(r, B, &segs[s].seq->lc[B->id], segs[s].p0, segs[s].T, a + (size_t)segs[s].off * D,
                            o + (size_t)segs[s].off * D));
    BE->hc_post(r, o, X, post, comb, n);
    CHECK(poll_stop(r));

    CHECK(hc_pre(r, &B->hc_ffn_fn, B->hc_ffn_scale, B->hc_ffn_base, X, n, a, post, comb));
    BE->norm_rows(r, a, B->ffn_norm, n, (int64_t)D, D);
    CHECK(moe(r, B, a, tok, n, o));
    BE->hc_post(r, o, X, post, comb, n);
done:
    dsq_free(a);
    dsq_free(o);
    dsq_free(post);
    dsq_free(comb);
    return st;
}

/* ---- output head (spec §4.8) ----------------------------------------------------------------------------- */

static dsq_status head(const run *r, const dsq_wview *fn, const float *base, float hscale, const float *normw,
                       const float *X, int64_t n, float *logits) {
    const dsq_v4_config *c = r->c;
    int hc = c->hc_mult;
    size_t D = (size_t)c->dim;
    dsq_status st = DSQ_OK;
    float *m = NULL, *h = NULL;
    ALLOC(m, (int64_t)hc * n);
    ALLOC(h, (int64_t)D * n);
    CHECK(lin(r, LIN_F32, fn, X, n, m));
    BE->hc_head(r, base, hscale, normw, X, m, n, h);
    if (logits) CHECK(lin(r, LIN_F32, &r->m->head, h, n, logits));
done:
    dsq_free(m);
    dsq_free(h);
    return st;
}

/* ---- drivers --------------------------------------------------------------------------------------------- */

/* Settings of one call and its backend (cpu unless opt->device says otherwise). */
static dsq_status run_init(run *r, const dsq_v4_model *m, const dsq_eval_options *opt, dsq_err *err) {
    dsq_eval_options def;
    if (!opt) {
        dsq_eval_options_default(&def);
        opt = &def;
    }
    r->m = m;
    r->c = &m->cfg;
    r->rel = opt->numerics == DSQ_NUMERICS_RELEASE;
    r->shared_clamp = !opt->no_shared_clamp;
    r->observe = opt->observe;
    r->observe_user = opt->observe_user;
    r->observe_rows = opt->observe_rows;
    DSQ_RETURN_IF((unsigned)opt->kv_cache >= DSQ_KV_CACHE_COUNT, err, DSQ_ERR_ARG, "unknown kv cache encoding %d",
                  (int)opt->kv_cache);
    r->kv = dsq_v4_eval_kv_cache(m, opt); /* the model's declared encoding unless --kv-cache chose one */
    r->kv_bytes = (size_t)dsq_kv_entry_bytes(&m->cfg, r->kv);
    r->idx_bytes = (size_t)dsq_kv_index_bytes(&m->cfg, r->kv);
    r->k.avx2 = m->cpu_avx2 && !opt->force_scalar;
    r->k.threads = opt->threads > 0 ? opt->threads : omp_get_max_threads();
    r->err = err;
    return dsq__backend_for(m, &opt->device, &r->be, err);
}

static void embed_rows(const run *r, const int32_t *tok, int64_t n, float *out, size_t ld) {
    for (int64_t t = 0; t < n; t++) dsq__dequant_rows(&r->m->embed, (uint64_t)tok[t], 1, out + (size_t)t * ld);
}

static dsq_status check_tokens(const run *r, const int32_t *tok, int64_t n) {
    for (int64_t t = 0; t < n; t++)
        DSQ_RETURN_IF(tok[t] < 0 || (uint64_t)tok[t] >= r->c->vocab_size, r->err, DSQ_ERR_TOKEN,
                      "token %lld (position %lld) is outside the vocabulary [0, %llu)", (long long)tok[t], (long long)t,
                      (unsigned long long)r->c->vocab_size);
    return DSQ_OK;
}

/* A sequence takes the call's cache encoding at position 0; later calls must use the same one. */
static dsq_status seq_adopt_kv(const run *r, dsq_v4_seq *s, int64_t pos) {
    if (s->kv == r->kv && s->lc[0].ring) return DSQ_OK;
    DSQ_RETURN_IF(pos != 0, r->err, DSQ_ERR_ARG,
                  "forward: the sequence's cache is %s, this call asks for %s (reset the sequence to change it)",
                  dsq_kv_cache_name(s->kv), dsq_kv_cache_name(r->kv));
    return dsq__seq_set_kv(s, r->kv, r->err);
}

/* Run a group of items layer-major; prefetch/release hints when `stream` is set. */
static dsq_status forward_group(const run *r, dsq_v4_item *items, int n_items, bool stream, int start,
                                const float *const *start_streams) {
    const dsq_v4_config *c = r->c;
    const dsq_v4_model *m = r->m;
    size_t D = (size_t)c->dim, HD = (size_t)c->hc_mult * D;
    dsq_status st = DSQ_OK;
    int64_t n = 0;
    for (int i = 0; i < n_items; i++) {
        DSQ_TRY(check_tokens(r, items[i].tokens, items[i].n_tokens));
        DSQ_TRY(seq_adopt_kv(r, items[i].seq, items[i].seq->pos));
        n += items[i].n_tokens;
    }
    DSQ_TRY(dsq_v4_model_check_block(m, -1, r->err)); /* first use: checksums, NaN codes */
    seg *segs = NULL;
    float *X = NULL;
    int32_t *tok = NULL;
    ALLOC(segs, n_items);
    ALLOC(X, (int64_t)HD * n);
    ALLOC(tok, n);
    int64_t off = 0;
    for (int i = 0; i < n_items; i++) {
        segs[i] = (seg){items[i].seq, items[i].seq->pos, items[i].n_tokens, off};
        memcpy(tok + off, items[i].tokens, sizeof(int32_t) * (size_t)items[i].n_tokens);
        off += items[i].n_tokens;
    }
    /* spec §4.1: h = embed[token], copied to every stream */
    for (int64_t t = 0; t < n && !start; t++) {
        float *x = X + (size_t)t * HD;
        embed_rows(r, tok + t, 1, x, D);
        for (int j = 1; j < c->hc_mult; j++) memcpy(x + (size_t)j * D, x, sizeof(float) * D);
    }
    for (int i = 0; i < n_items && start; i++)
        memcpy(X + (size_t)segs[i].off * HD, start_streams[i], sizeof(float) * HD * (size_t)segs[i].T);
    for (int b = start; b < c->n_layers; b++) {
        CHECK(poll_stop(r));
        if (stream && b + 1 < c->n_layers) dsq_v4_block_prefetch(m, b + 1);
        CHECK(dsq_v4_model_check_block(m, b, r->err));
        CHECK(block_forward(r, &m->blocks[b], segs, n_items, n, X, tok));
        if (stream) dsq_v4_block_release(m, b);
        for (int i = 0; i < n_items; i++)
            if (items[i].layer_out && items[i].layer_out[b])
                memcpy(items[i].layer_out[b], X + (size_t)segs[i].off * HD, sizeof(float) * HD * (size_t)segs[i].T);
    }
    for (int i = 0; i < n_items; i++) {
        const float *Xi = X + (size_t)segs[i].off * HD;
        if (items[i].hidden) memcpy(items[i].hidden, Xi, sizeof(float) * HD * (size_t)segs[i].T);
        if (items[i].logits)
            CHECK(head(r, &m->hc_head_fn, m->hc_head_base, m->hc_head_scale, m->norm, Xi, segs[i].T, items[i].logits));
        items[i].seq->pos += segs[i].T;
        for (int b = 0; b < c->n_layers; b++) items[i].seq->lc[b].pos += segs[i].T;
    }
done:
    dsq_free(segs);
    dsq_free(X);
    dsq_free(tok);
    return st;
}

dsq_status dsq_v4_forward(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_item *items, int n_items,
                          dsq_err *err) {
    run r;
    DSQ_TRY(run_init(&r, m, opt, err));
    for (int i = 0; i < n_items; i++)
        DSQ_RETURN_IF(items[i].n_tokens < 0 || !items[i].seq || (items[i].n_tokens > 0 && !items[i].tokens), err,
                      DSQ_ERR_ARG, "forward: item %d is malformed", i);
    return forward_group(&r, items, n_items, false, 0, NULL);
}

dsq_status dsq_v4_forward_from(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_item *items, int n_items,
                               int start_block, const float *const *start_streams, dsq_err *err) {
    DSQ_RETURN_IF(start_block < 0 || start_block > m->cfg.n_layers || (start_block > 0 && !start_streams), err,
                  DSQ_ERR_ARG, "forward: start block %d is not in [0, %d] or has no streams", start_block,
                  m->cfg.n_layers);
    for (int i = 0; i < n_items && start_block > 0; i++)
        DSQ_RETURN_IF(!start_streams[i], err, DSQ_ERR_ARG, "forward: item %d has no start streams", i);
    if (start_block == 0) return dsq_v4_forward(m, opt, items, n_items, err);
    run r;
    DSQ_TRY(run_init(&r, m, opt, err));
    for (int i = 0; i < n_items; i++)
        DSQ_RETURN_IF(items[i].n_tokens < 0 || !items[i].seq || (items[i].n_tokens > 0 && !items[i].tokens), err,
                      DSQ_ERR_ARG, "forward: item %d is malformed", i);
    return forward_group(&r, items, n_items, false, start_block, start_streams);
}

uint64_t dsq_v4_item_bytes(const dsq_v4_model *m, int64_t n_tokens) {
    const dsq_v4_config *c = &m->cfg;
    uint64_t t = (uint64_t)n_tokens, per_tok = 0;
    /* streams, a, o, post/comb, MoE gathers, kv, compressor projections */
    per_tok += ((uint64_t)c->hc_mult + 6) * c->dim * 4;
    per_tok += (uint64_t)c->head_dim * 4 * 3;
    per_tok += (uint64_t)c->n_routed_experts * 4 * 2;
    uint64_t fixed = (uint64_t)Q_CHUNK * ((uint64_t)c->n_heads * c->head_dim * 2 + (uint64_t)c->q_lora_rank) * 4;
    uint64_t cache = 0;
    for (int b = 0; b < m->n_blocks; b++) {
        const v4_block_w *B = &m->blocks[b];
        cache += (uint64_t)c->window_size * c->head_dim * 4;
        if (B->ratio > 0) {
            cache += t / (uint64_t)B->ratio * 2 * ((uint64_t)c->head_dim + (uint64_t)c->index_head_dim) * 4;
            cache += 8ull * B->comp.ratio * B->comp.d * 4;
        }
    }
    return per_tok * t + fixed + cache;
}

dsq_status dsq_v4_forward_streaming(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_item *items, int n_items,
                                    uint64_t memory_budget, dsq_err *err) {
    run r;
    DSQ_TRY(run_init(&r, m, opt, err));
    uint64_t wmax = 0;
    for (int b = 0; b < m->cfg.n_layers; b++)
        if (m->blocks[b].bytes > wmax) wmax = m->blocks[b].bytes;
    if (m->global_bytes > wmax) wmax = m->global_bytes; /* the head stage: embed/head + activations */
    int i = 0;
    while (i < n_items) {
        int j = i;
        uint64_t used = wmax;
        while (j < n_items) {
            uint64_t need = dsq_v4_item_bytes(m, items[j].n_tokens);
            if (memory_budget && used + need > memory_budget && j > i) break;
            DSQ_RETURN_IF(memory_budget && used + need > memory_budget, err, DSQ_ERR_RANGE,
                          "memory budget %llu bytes is below one block's weights (%llu) plus one sequence of %lld "
                          "tokens (%llu)",
                          (unsigned long long)memory_budget, (unsigned long long)wmax, (long long)items[j].n_tokens,
                          (unsigned long long)need);
            used += need;
            j++;
        }
        dsq_v4_block_prefetch(m, 0);
        DSQ_TRY(forward_group(&r, items + i, j - i, true, 0, NULL));
        i = j;
    }
    return DSQ_OK;
}

dsq_status dsq_v4_mtp_forward(const dsq_v4_model *m, const dsq_eval_options *opt, dsq_v4_seq *seq, int mtp,
                              const float *hidden, const int32_t *next_tokens, int64_t n, float *logits,
                              float *out_hidden, dsq_err *err) {
    run rr, *r = &rr;
    DSQ_TRY(run_init(r, m, opt, err));
    const dsq_v4_config *c = &m->cfg;
    DSQ_RETURN_IF(mtp < 0 || mtp >= c->n_mtp_layers, err, DSQ_ERR_ARG, "MTP block %d: the model has %d", mtp,
                  c->n_mtp_layers);
    DSQ_TRY(check_tokens(r, next_tokens, n));
    DSQ_TRY(dsq_v4_model_check_block(m, -1, err));
    DSQ_TRY(dsq_v4_model_check_block(m, c->n_layers + mtp, err));
    const v4_block_w *B = &m->blocks[c->n_layers + mtp];
    DSQ_TRY(seq_adopt_kv(r, seq, seq->pos + seq->lc[B->id].pos));
    int hc = c->hc_mult;
    size_t D = (size_t)c->dim, HD = (size_t)hc * D;
    dsq_status st = DSQ_OK;
    float *X = NULL, *e = NULL, *ep = NULL, *x = NULL;
    ALLOC(X, (int64_t)HD * n);
    ALLOC(e, (int64_t)D * n);
    ALLOC(ep, (int64_t)D * n);
    ALLOC(x, (int64_t)HD * n);
    /* spec §4.9: e = enorm(embed[next]); x_j = hnorm(Xh_j); X_j = e_proj·e + h_proj·x_j */
    embed_rows(r, next_tokens, n, e, D);
    BE->norm_rows(r, e, B->enorm, n, (int64_t)D, D);
    CHECK(lin(r, LIN_FP8, &B->e_proj, e, n, ep));
    memcpy(x, hidden, sizeof(float) * HD * (size_t)n);
    BE->norm_rows(r, x, B->hnorm, n * hc, (int64_t)D, D);
    CHECK(lin(r, LIN_FP8, &B->h_proj, x, n * hc, X));
    for (int64_t t = 0; t < n; t++)
        for (int j = 0; j < hc; j++)
            for (size_t d = 0; d < D; d++) {
                float *xv = X + (size_t)t * HD + (size_t)j * D + d;
                *xv = R(r, *xv + ep[(size_t)t * D + d]);
            }
    seg s = {seq, seq->lc[B->id].pos, n, 0};
    CHECK(block_forward(r, B, &s, 1, n, X, next_tokens));
    if (out_hidden) memcpy(out_hidden, X, sizeof(float) * HD * (size_t)n);
    if (logits) CHECK(head(r, &B->hc_head_fn, B->hc_head_base, B->hc_head_scale, B->mtp_norm, X, n, logits));
    seq->lc[B->id].pos += n;
done:
    dsq_free(X);
    dsq_free(e);
    dsq_free(ep);
    dsq_free(x);
    return st;
}
