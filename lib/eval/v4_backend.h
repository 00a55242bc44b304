/* Internal to lib/eval: the evaluator's backend seam (docs/architecture.md, "Backends").
 *
 * v4_forward.c reads like spec §4 and calls its operations through a dsq__backend function table,
 * never through `#ifdef CUDA`.  What stays in v4_forward.c is bookkeeping on host arrays: buffers, the
 * embedding row copy, index lists over the caches, the window-ring copy, the MoE gather/scatter and the
 * MTP input sum (docs/architecture.md, "Backends").  One table per device kind:
 *   cpu   lib/eval/backend_cpu.c   the reference kernels (linear.c, ops.c); the bits of the golden tests
 *   cuda  lib/eval/backend_cuda.c  host side (weight descriptors, device choice, errors) over
 *         kernels/cuda_backend.cu  device buffers, weight upload in the stored encoding, GEMV/GEMM
 *
 * Activations and the per-sequence KV/compressor state (dsq_v4_seq) are host f32 arrays in this
 * revision: an op receives host pointers and a backend that computes elsewhere copies in and out.
 * A backend fills every entry; it may point entries at the cpu backend's functions (the cuda
 * backend does for the ops it has no kernel for yet, see dsq__backend_cuda_open). */
#ifndef DSQ_V4_BACKEND_H
#define DSQ_V4_BACKEND_H

#include "dsq_v4.h"
#include "v4_model.h"

typedef struct dsq__backend dsq__backend;

/* One job of linear1_multi: y[i] = W[row0 + i] · x for i < n_rows (one token; y dense). */
typedef struct dsq__lin_job {
    const dsq_wview *w;
    uint64_t row0, n_rows;
    const float *x;
    float *y;
} dsq__lin_job;

/* One forward call's settings: what every op needs besides its arrays. */
typedef struct dsq__run {
    const dsq_v4_model *m;
    const dsq_v4_config *c;
    dsq__kern k;
    bool rel;          /* release numerics */
    bool shared_clamp; /* spec §8.30 */
    dsq_kv_cache kv;   /* cache encoding of every sequence in the call */
    size_t kv_bytes;   /* bytes of one packed kv entry [hd] */
    size_t idx_bytes;  /* bytes of one packed indexer key [ihd] */
    const dsq__backend *be;
    dsq_linear_observer observe; /* calibration hook (dsq_eval_options) */
    void *observe_user;
    dsq_linear_rows_observer observe_rows;
    dsq_err *err;
} dsq__run;

struct dsq__backend {
    const char *name; /* "cpu", "cuda:N" */
    void *impl;       /* backend state (device context, uploaded weights); NULL for cpu */

    /* ---- linear layers on a stored-encoding view (weights never expanded whole) ---- */
    /* y[t][i] = W[row0+i] · x[t], i < n_rows, t < n; x rows ldx floats apart, y rows ldy apart. */
    dsq_status (*linear)(const dsq__run *r, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *x,
                         size_t ldx, int64_t n, float *y, size_t ldy);
    /* Release FP8-linear (spec §5): q [n][cols] e4m3 values, sa [n][ceil(cols/128)] scales; y as above. */
    dsq_status (*fp8_linear)(const dsq__run *r, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *q,
                             const float *sa, int64_t n, float *y, size_t ldy);

    /* ---- block operations (spec §4) ---- */
    /* RMSNorm of n rows a[t·ld … +width] in place with weight w[width]. */
    void (*norm_rows)(const dsq__run *r, float *a, const float *w, int64_t n, int64_t width, size_t ld);
    /* hc_pre after the mix GEMM (spec §4.2): X [n][hc][D], mixes [n][(2+hc)·hc] (scaled in place by ρ)
     * → a [n][D], post [n][hc], comb [n][hc][hc] (Sinkhorn). */
    void (*hc_pre)(const dsq__run *r, const float *scale, const float *base, const float *X, float *mixes, int64_t n,
                   float *a, float *post, float *comb);
    /* hc_post: X'[j] = post_j·o + Σ_i comb[i][j]·X[i] for n tokens (X [n][hc][D] in place). */
    void (*hc_post)(const dsq__run *r, const float *o, float *X, const float *post, const float *comb, int64_t n);
    /* Output head mix (spec §4.8) after its mix GEMM: m [n][hc] → pre = σ(m·ρ·hscale + base) + eps,
     * h [n][D] = RMSNorm(Σ_j pre_j·X[j]) with weight normw. */
    void (*hc_head)(const dsq__run *r, const float *base, float hscale, const float *normw, const float *X,
                    const float *m, int64_t n, float *h);
    /* kv path after wkv (spec §4.4): kv [T][hd] ← kv_norm, RoPE at p0+t, release FP8 simulation. */
    void (*kv_rows)(const dsq__run *r, const v4_block_w *B, float *kv, int64_t p0, int64_t T);
    /* q path after wq_b (and the indexer's q/weights for CSA): per-head norm + RoPE of q [tc][H][hd];
     * CSA: RoPE + Hadamard (+ FP4 simulation) of qi [tc][nih][ihd], scaled head weights iw [tc][nih]. */
    void (*q_rows)(const dsq__run *r, const v4_block_w *B, float *q, float *qi, float *iw, int64_t pos0, int64_t tc);
    /* Compressor state machine after its two GEMMs (spec §4.5): kvp/g [T][c·d] for tokens p0 … p0+T-1;
     * every completed window k (always ≥ k0) is pooled, post-processed and written to dst[k - k0][d]. */
    void (*compressor)(const dsq__run *r, const v4_block_w *B, const v4_compressor_w *cw, bool indexer,
                       v4_comp_state *s, const float *kvp, const float *g, int64_t p0, int64_t T, int64_t k0,
                       float *dst);
    /* ---- the KV cache in encoding r->kv (dsq_kv_cache; byte layouts in backend_cpu.c) ---- */
    /* Pack n f32 rows src [n][dims] → dst [n][bytes] (dims/bytes = hd/kv_bytes, or ihd/idx_bytes when
     * `index`); unpack is the inverse (exact for f32, the encoding's rounding otherwise). */
    void (*cache_pack)(const dsq__run *r, bool index, const float *src, int64_t n, uint8_t *dst);
    void (*cache_unpack)(const dsq__run *r, bool index, const uint8_t *src, int64_t n, float *dst);
    /* Indexer top-k (spec §4.6) of one query: qi [nih][ihd], head weights w [nih], packed keys
     * [n_valid][idx_bytes]; buf [n_valid + ihd] scratch; out[k_sel] entry ids, -1 past the valid ones. */
    void (*indexer_topk)(const dsq__run *r, const float *qi, const float *w, const uint8_t *keys, int64_t n_valid,
                         int64_t k_sel, float *buf, int64_t *out);
    /* Sparse attention with sinks + inverse RoPE (spec §4.4 step 6) for tc tokens × H heads:
     * q [tc][H][hd], keys [tc][n_keys] pointers to packed entries [kv_bytes] (NULL = empty slot), read in
     * place (dequantized as they are used) → oh [tc][H][hd].  DSQ_ERR_NOMEM for its scratch. */
    dsq_status (*attention)(const dsq__run *r, const v4_block_w *B, const float *q, const uint8_t *const *keys,
                            int64_t n_keys, int64_t pos0, int64_t tc, float *oh);
    /* Routing (spec §4.7): router logits z [n][E] (→ scores in place), tok [n] for hash blocks →
     * isel [n][k] expert ids, wsel [n][k] weights; biased [E] and top [k] are scratch. */
    void (*route)(const dsq__run *r, const v4_block_w *B, float *z, const int32_t *tok, int64_t n, int *isel,
                  float *wsel, float *biased, int64_t *top);
    /* MoE expert activation (spec §8.18): g[t][i] ← round(swiglu(g, u) · weight[t]) for n rows of I. */
    void (*swiglu_rows)(const dsq__run *r, float *g, const float *u, int64_t n, size_t I, const float *weight,
                        bool clamp);
    /* Optional (NULL: moe runs every routed expert through linear and swiglu_rows): one token's k routed
     * experts of block B, ids[i] ascending (a repeated id runs again), weights wts[i], input x [D]:
     * ys[i][D] = w2 · round(swiglu(w1·x, w3·x, clamped) · wts[i]), the bits the generic path gives each row;
     * with `shared`, also the shared expert in ys[k][D] (clamped as r->shared_clamp says, no weight).
     * scratch [k][2·I] (+ 2·I_shared).  Not called in release numerics or with an observer. */
    dsq_status (*routed1)(const dsq__run *r, const v4_block_w *B, const int *ids, const float *wts, int k,
                          bool shared, const float *x, float *scratch, float *ys);
    /* Optional (NULL: the caller runs each job through linear): several one-token linear jobs at once
     * (wkv with wq_a, wo_a's G groups, an expert's w1 with w3 when it sees one token), each with the bits
     * linear gives it.  Not called in release numerics or with an observer. */
    dsq_status (*linear1_multi)(const dsq__run *r, const dsq__lin_job *jobs, int n_jobs);

    void (*close)(dsq__backend *be); /* accepts NULL; not called for the static cpu table */
};

/* The cpu backend (static, never closed). */
extern const dsq__backend dsq__backend_cpu;

/* The cuda backend on device `index` for model m: fails with one line (DSQ_ERR_UNSUPPORTED) when dsq
 * was built without CUDA, no device is present, or the index is out of range.  Close with be->close. */
dsq_status dsq__backend_cuda_open(const dsq_v4_model *m, int index, dsq__backend **out, dsq_err *err);

/* The backend the options ask for (cpu, or the model's cached cuda backend for that index, created
 * on first use). */
dsq_status dsq__backend_for(const dsq_v4_model *m, const dsq_device *dev, const dsq__backend **out, dsq_err *err);

#endif
