/* Single operations of the V4 forward pass: RoPE, hyper-connection split (Sinkhorn), RMS norms,
 * activation block formats, Hadamard, sparse attention with sink.  Spec §4 and §5. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_numeric.h"
#include "dsq_v4_ops.h"
#include "v4_internal.h"

static inline float rnd(float x, bool release) { return release ? dsq_bf16_round(x) : x; }

void dsq_v4_round_bf16(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = dsq_bf16_round(x[i]);
}

/* ---- RoPE ------------------------------------------------------------------------------------- */

/* spec §4.3: corr(n) = rd·ln(orig/(n·2π)) / (2·ln(base)) */
static double yarn_corr(double n_rot, int rd, double base, double orig) {
    return rd * log(orig / (n_rot * 2.0 * M_PI)) / (2.0 * log(base));
}

void dsq_v4_rope_freqs(const dsq_v4_rope *rope, float *freqs) {
    int rd = rope->rope_dim, half = rd / 2;
    for (int i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)rd;
        freqs[i] = 1.0f / powf((float)rope->base, e); /* f32 as the reference computes it */
    }
    if (!rope->yarn) return;
    double low = floor(yarn_corr(rope->beta_fast, rd, rope->base, rope->original_seq_len));
    double high = ceil(yarn_corr(rope->beta_slow, rd, rope->base, rope->original_seq_len));
    if (low < 0) low = 0;
    if (high > rd - 1) high = rd - 1;
    float lo = (float)low, hi = (float)high;
    if (lo == hi) hi += 0.001f;
    float factor = (float)rope->factor;
    for (int i = 0; i < half; i++) {
        float ramp = ((float)i - lo) / (hi - lo);
        if (ramp < 0) ramp = 0;
        if (ramp > 1) ramp = 1;
        /* spec §4.3: f ← f/factor·ramp + f·(1-ramp) */
        freqs[i] = freqs[i] / factor * ramp + freqs[i] * (1.0f - ramp);
    }
}

void dsq_v4_rope_cos_sin(const float *freqs, int rope_dim, int64_t pos, float *cos_sin) {
    float p = (float)pos;
    for (int i = 0; i < rope_dim / 2; i++) {
        float theta = p * freqs[i];
        cos_sin[2 * i] = (float)cos((double)theta);
        cos_sin[2 * i + 1] = (float)sin((double)theta);
    }
}

void dsq_v4_rope_apply(float *x, int dim, int rope_dim, const float *cos_sin, bool inverse, bool release) {
    float *r = x + (dim - rope_dim); /* spec §8.1: the LAST rd dims, interleaved pairs */
    for (int i = 0; i < rope_dim / 2; i++) {
        float c = cos_sin[2 * i], s = inverse ? -cos_sin[2 * i + 1] : cos_sin[2 * i + 1];
        float a = r[2 * i], b = r[2 * i + 1];
        r[2 * i] = rnd(a * c - b * s, release);
        r[2 * i + 1] = rnd(a * s + b * c, release);
    }
}

/* ---- hyper-connections -------------------------------------------------------------------------- */

static inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

void dsq_v4_hc_split(const float *m, const float *scale, const float *base, int hc, int iters, float eps, float *pre,
                     float *post, float *comb) {
    for (int j = 0; j < hc; j++) {
        pre[j] = sigmoidf_(m[j] * scale[0] + base[j]) + eps;
        post[j] = 2.0f * sigmoidf_(m[hc + j] * scale[1] + base[hc + j]); /* spec §8.11: no eps */
    }
    float *C = comb;
    for (int i = 0; i < hc * hc; i++) C[i] = m[2 * hc + i] * scale[2] + base[2 * hc + i];
    /* spec §8.13: softmax rows (+eps) → columns → (iters-1) × (rows, columns) */
    for (int i = 0; i < hc; i++) {
        float mx = -INFINITY, sum = 0;
        for (int j = 0; j < hc; j++) mx = fmaxf(mx, C[i * hc + j]);
        for (int j = 0; j < hc; j++) {
            C[i * hc + j] = expf(C[i * hc + j] - mx);
            sum += C[i * hc + j];
        }
        for (int j = 0; j < hc; j++) C[i * hc + j] = C[i * hc + j] / sum + eps;
    }
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int i = 0; i < hc; i++) {
                float sum = 0;
                for (int j = 0; j < hc; j++) sum += C[i * hc + j];
                for (int j = 0; j < hc; j++) C[i * hc + j] /= sum + eps;
            }
        }
        for (int j = 0; j < hc; j++) {
            float sum = 0;
            for (int i = 0; i < hc; i++) sum += C[i * hc + j];
            for (int i = 0; i < hc; i++) C[i * hc + j] /= sum + eps;
        }
    }
}

/* ---- norms -------------------------------------------------------------------------------------- */

void dsq_v4_rms_norm(const float *x, const float *w, int64_t n, float eps, bool release, float *y) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] * r;
        if (w) v *= w[i];
        y[i] = rnd(v, release);
    }
}

void dsq_v4_head_norm(float *q, int hd, float eps, bool release) {
    if (!release) {
        dsq_v4_rms_norm(q, NULL, hd, eps, false, q);
        return;
    }
    /* spec §5 row 7: bf16(q²), f32 sum, mean → bf16, +eps → bf16, rsqrt → bf16, q·r → bf16 */
    float sum = 0;
    for (int i = 0; i < hd; i++) sum += dsq_bf16_round(q[i] * q[i]);
    float mean = dsq_bf16_round(sum / (float)hd);
    float v = dsq_bf16_round(mean + eps);
    float r = dsq_bf16_round(1.0f / sqrtf(v));
    for (int i = 0; i < hd; i++) q[i] = dsq_bf16_round(q[i] * r);
}

/* ---- block formats ------------------------------------------------------------------------------- */

void dsq_v4_hadamard(float *x, int n, bool release) {
    dsq_hadamard(x, (uint64_t)n);
    if (release) dsq_v4_round_bf16(x, n);
}

/* ---- sparse attention ------------------------------------------------------------------------------ */

enum { ATTN_CHUNK = 64 };

void dsq_v4_sparse_attention(const float *q, const float *const *keys, int64_t n_keys, int hd, float sink, float scale,
                             bool release, float *out) {
    dsq__sparse_attention(NULL, q, keys, n_keys, hd, sink, scale, release, out);
}

/* Sequential f32 accumulation: the release kernel's order (bf16 products are exact in f32, so
 * this matches an FMA chain too); the 8-lane order changes P by an ulp and flips bf16(P). */
static float dot_seq(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void dsq__sparse_attention(const dsq__kern *kern, const float *q, const float *const *keys, int64_t n_keys, int hd,
                           float sink, float scale, bool release, float *out) {
#define dotf(a, b, n) dsq__dot(kern, (a), (b), (size_t)(n))
    for (int d = 0; d < hd; d++) out[d] = 0;
    if (!release) {
        /* exact: softmax over the valid keys with the sink as an extra logit */
        float m = sink;
        for (int64_t j = 0; j < n_keys; j++)
            if (keys[j]) m = fmaxf(m, scale * dotf(q, keys[j], hd));
        double l = exp((double)sink - m);
        for (int64_t j = 0; j < n_keys; j++) {
            if (!keys[j]) continue;
            double p = exp((double)(scale * dotf(q, keys[j], hd)) - m);
            l += p;
            float pf = (float)p;
            for (int d = 0; d < hd; d++) out[d] += pf * keys[j][d];
        }
        float inv = (float)(1.0 / l);
        for (int d = 0; d < hd; d++) out[d] *= inv;
        return;
    }
    /* release kernel, spec §5: chunks of 64 keys in list order, online softmax, bf16 P in P·V,
     * f32 accumulation; the chunk's P·V is summed first, then added to the rescaled accumulator */
    float m = -INFINITY, l = 0;
    float z[ATTN_CHUNK], pv[DSQ_V4_MAX_HEAD_DIM];
    for (int64_t c0 = 0; c0 < n_keys; c0 += ATTN_CHUNK) {
        int64_t cn = n_keys - c0 < ATTN_CHUNK ? n_keys - c0 : ATTN_CHUNK;
        float cmax = -INFINITY;
        for (int64_t j = 0; j < cn; j++) {
            const float *k = keys[c0 + j];
            z[j] = k ? scale * dot_seq(q, k, hd) : -INFINITY;
            cmax = fmaxf(cmax, z[j]);
        }
        float m_new = fmaxf(m, cmax);
        if (m_new == -INFINITY) continue; /* nothing valid yet: acc and l stay 0 */
        float alpha = expf(m - m_new);
        float psum = 0;
        for (int d = 0; d < hd; d++) pv[d] = 0;
        for (int64_t j = 0; j < cn; j++) {
            const float *k = keys[c0 + j];
            if (!k) continue;
            float p = expf(z[j] - m_new);
            psum += p;
            float pb = dsq_bf16_round(p);
            for (int d = 0; d < hd; d++) pv[d] += pb * k[d];
        }
        l = l * alpha + psum;
        for (int d = 0; d < hd; d++) out[d] = out[d] * alpha + pv[d];
        m = m_new;
    }
    l += expf(sink - m);
    for (int d = 0; d < hd; d++) out[d] = dsq_bf16_round(out[d] / l);
#undef dotf
}

/* ---- selection ---------------------------------------------------------------------------------- */

/* a ranks before b */
static inline bool better(const float *v, int64_t a, int64_t b) {
    float x = v[a] != v[a] ? -INFINITY : v[a], y = v[b] != v[b] ? -INFINITY : v[b];
    return x > y || (x == y && a < b);
}

/* heap of k indices with the WORST at the root */
static void sift_down(const float *v, int64_t *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && better(v, h[w], h[l])) w = l;
        if (r < n && better(v, h[w], h[r])) w = r;
        if (w == i) return;
        int64_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

void dsq_v4_topk(const float *v, int64_t n, int64_t k, int64_t *out) {
    if (k > n) k = n;
    if (k <= 0) return;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (m < k) {
            out[m] = i;
            for (int64_t c = m++; c > 0;) { /* sift up */
                int64_t p = (c - 1) / 2;
                if (!better(v, out[p], out[c])) break;
                int64_t t = out[p];
                out[p] = out[c];
                out[c] = t;
                c = p;
            }
        } else if (better(v, i, out[0])) {
            out[0] = i;
            sift_down(v, out, k, 0);
        }
    }
    /* heap sort: move the worst to the end repeatedly → best first */
    for (int64_t end = k - 1; end > 0; end--) {
        int64_t t = out[0];
        out[0] = out[end];
        out[end] = t;
        sift_down(v, out, end, 0);
    }
}
