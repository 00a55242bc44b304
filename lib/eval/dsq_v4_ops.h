/* The single operations of the V4 forward pass (spec §4, §5), exposed for the per-op golden tests
 * (shared/golden/v4-tiny/ops.safetensors) and used by the model code.  All functions are pure and
 * thread-safe; `release` selects the bf16 rounding points of spec §5, otherwise f32 throughout. */
#ifndef DSQ_V4_OPS_H
#define DSQ_V4_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSQ_V4_MAX_HEAD_DIM 1024 /* hd and ihd limit of this implementation */

/* ---- RoPE (spec §4.3) ------------------------------------------------------------------------ */
typedef struct dsq_v4_rope {
    int rope_dim;  /* rd (even) */
    double base;   /* rope_theta or compress_rope_theta */
    bool yarn;     /* apply the YaRN frequency ramp */
    double factor; /* rope_factor */
    double original_seq_len;
    double beta_fast, beta_slow;
} dsq_v4_rope;
/* freqs[rd/2]: f_i = 1/base^(2i/rd), YaRN-ramped when rope->yarn. */
void dsq_v4_rope_freqs(const dsq_v4_rope *rope, float *freqs);
/* cos_sin[rd/2][2] at position pos: angle = f32(pos · f_i). */
void dsq_v4_rope_cos_sin(const float *freqs, int rope_dim, int64_t pos, float *cos_sin);
/* Rotate the LAST rd dims of x[dim] as interleaved pairs by the angles of cos_sin (inverse: -θ).
 * release: result rounded to bf16. */
void dsq_v4_rope_apply(float *x, int dim, int rope_dim, const float *cos_sin, bool inverse, bool release);

/* ---- hyper-connections (spec §4.2) --------------------------------------------------------- */
/* From mixes m[(2+hc)·hc] (already (fn·v)·ρ): pre[hc], post[hc], comb[hc][hc] (Sinkhorn-normalised). */
void dsq_v4_hc_split(const float *mixes, const float *scale /*[3]*/, const float *base /*[mix]*/, int hc,
                     int sinkhorn_iters, float eps, float *pre, float *post, float *comb);

/* ---- norms ------------------------------------------------------------------------------------ */
/* y[n] = w ⊙ x·rsqrt(mean(x²)+eps); w may be NULL (no weight); y may alias x. release → bf16. */
void dsq_v4_rms_norm(const float *x, const float *w, int64_t n, float eps, bool release, float *y);
/* Per-head parameterless norm of spec §4.4 step 1; release uses the bf16 arithmetic of spec §5 row 7. */
void dsq_v4_head_norm(float *q, int hd, float eps, bool release);

/* ---- activation formats: lib/quant (dsq_act_fp8_sim, dsq_act_fp4_sim, dsq_hadamard) ---------- */
/* In-place Walsh–Hadamard transform of x[n] (n a power of two) scaled by n^-1/2; release → bf16. */
void dsq_v4_hadamard(float *x, int n, bool release);

/* ---- sparse attention with sink (spec §4.4 step 6, release kernel of §5) -------------------- */
/* One query head: q[hd], key/value rows keys[i] (NULL = empty slot, index -1), n_keys of them in
 * list order, sink logit, softmax scale.  out[hd].  Release: bf16 q/kv assumed, chunks of 64,
 * bf16 P in P·V, output bf16.  Exact: f32 softmax with the sink as an extra logit. */
void dsq_v4_sparse_attention(const float *q, const float *const *keys, int64_t n_keys, int hd, float sink, float scale,
                             bool release, float *out);

/* ---- selection ------------------------------------------------------------------------------ */
/* out[k] = indices of the k largest of v[n] (k ≤ n), best first; equal values: lower index first
 * (spec §8.23, our fixed rule for both the router and the indexer).  NaN ranks below everything. */
void dsq_v4_topk(const float *v, int64_t n, int64_t k, int64_t *out);

/* ---- small helpers --------------------------------------------------------------------------- */
void dsq_v4_round_bf16(float *x, int64_t n);

#endif
