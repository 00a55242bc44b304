/* Helpers shared by the tests/test_eval*.c suites (header-only: each suite is its own binary). */
#ifndef DSQ_EVAL_UTIL_H
#define DSQ_EVAL_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_test.h"
#include "dsq_numeric.h"
#include "dsq_safetensors.h"
#include "dsq_v4.h"

/* Open shared/<rel> as safetensors (asserts). */
static inline dsq_st *eu_open_st(const char *rel) {
    char *p = dsq_test_shared_path(rel);
    dsq_st *st = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = dsq_st_open(p, NULL, &st, &e);
    if (s) fprintf(stderr, "%s: %s\n", p, e.msg);
    assert_int_equal(s, DSQ_OK);
    dsq_err_clear(&e);
    free(p);
    return st;
}

/* Tensor `name` as a new f32 array (F32, or I16/BF16 holding bf16 bits, or I32/U8 converted); *n = elements. */
static inline float *eu_f32(const dsq_st *st, const char *name, size_t *n) {
    const dsq_st_tensor *t = dsq_st_find(st, name);
    if (!t) fprintf(stderr, "missing tensor %s\n", name);
    assert_non_null(t);
    float *f = malloc(sizeof(float) * (t->n_elements ? t->n_elements : 1));
    assert_non_null(f);
    const uint8_t *d = t->data;
    for (uint64_t i = 0; i < t->n_elements; i++) {
        switch (t->dtype) {
        case DSQ_DTYPE_F32: memcpy(&f[i], d + 4 * i, 4); break;
        case DSQ_DTYPE_I16:
        case DSQ_DTYPE_BF16: {
            uint16_t h;
            memcpy(&h, d + 2 * i, 2);
            f[i] = dsq_bf16_to_f32(h);
            break;
        }
        case DSQ_DTYPE_I32: {
            int32_t v;
            memcpy(&v, d + 4 * i, 4);
            f[i] = (float)v;
            break;
        }
        case DSQ_DTYPE_U8: f[i] = d[i]; break;
        default: fail_msg("%s: unexpected dtype", name);
        }
    }
    if (n) *n = (size_t)t->n_elements;
    return f;
}

static inline int32_t *eu_i32(const dsq_st *st, const char *name, size_t *n) {
    const dsq_st_tensor *t = dsq_st_find(st, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, DSQ_DTYPE_I32);
    int32_t *v = malloc(t->n_bytes ? t->n_bytes : 1);
    assert_non_null(v);
    memcpy(v, t->data, t->n_bytes);
    if (n) *n = (size_t)t->n_elements;
    return v;
}

/* Largest per-row relative L2 error ‖a−b‖/‖b‖ over rows of `w`; *argmax_mismatch counts rows whose
 * arg-max differs (may be NULL). */
static inline double eu_max_rel_l2(const float *a, const float *b, size_t rows, size_t w, size_t *argmax_mismatch) {
    double worst = 0;
    size_t mism = 0;
    for (size_t r = 0; r < rows; r++) {
        double num = 0, den = 0;
        size_t ia = 0, ib = 0;
        for (size_t i = 0; i < w; i++) {
            double d = (double)a[r * w + i] - b[r * w + i];
            num += d * d;
            den += (double)b[r * w + i] * b[r * w + i];
            if (a[r * w + i] > a[r * w + ia]) ia = i;
            if (b[r * w + i] > b[r * w + ib]) ib = i;
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (!(rel <= worst)) worst = rel; /* NaN propagates as failure */
        mism += ia != ib;
    }
    if (argmax_mismatch) *argmax_mismatch = mism;
    return worst;
}

/* Mean KL(p ‖ q) over rows, p = softmax(golden), q = softmax(ours); *top1 = arg-max agreement. */
static inline double eu_mean_kl(const float *golden, const float *ours, size_t rows, size_t w, double *top1) {
    double kl_sum = 0;
    size_t agree = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *g = golden + r * w, *o = ours + r * w;
        double mg = -INFINITY, mo = -INFINITY;
        size_t ig = 0, io = 0;
        for (size_t i = 0; i < w; i++) {
            if (g[i] > mg) mg = g[i], ig = i;
            if (o[i] > mo) mo = o[i], io = i;
        }
        double zg = 0, zo = 0;
        for (size_t i = 0; i < w; i++) {
            zg += exp(g[i] - mg);
            zo += exp(o[i] - mo);
        }
        double lzg = log(zg) + mg, lzo = log(zo) + mo, kl = 0;
        for (size_t i = 0; i < w; i++) {
            double lp = g[i] - lzg, lq = o[i] - lzo;
            kl += exp(lp) * (lp - lq);
        }
        kl_sum += kl;
        agree += ig == io;
    }
    if (top1) *top1 = (double)agree / (double)rows;
    return kl_sum / (double)rows;
}

/* The v4-tiny config (shared/golden/v4-tiny/model/config.json). */
static inline void eu_tiny_config(dsq_v4_config *c) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = dsq_config_load(p, c, NULL, &e);
    if (s) dsq_err_print(&e, stderr, "tiny config: ");
    assert_int_equal(s, DSQ_OK);
    dsq_err_clear(&e);
    free(p);
}

/* Open the shared v4-tiny model. */
static inline dsq_v4_model *eu_open_tiny(void) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model");
    dsq_v4_model *m = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = dsq_v4_model_open(p, &m, &e);
    if (s) dsq_err_print(&e, stderr, "open tiny: ");
    assert_int_equal(s, DSQ_OK);
    dsq_err_clear(&e);
    free(p);
    return m;
}

/* ---- synthetic models ------------------------------------------------------------------------
 * A random V4 model of any shape, quantized like the release (FP8 128×128 UE8M0, routed experts
 * FP4 1×32), written with dsq_st_write_file.  Used to test shapes other than the golden one. */
typedef struct eu_synth {
    dsq_st_item *items;
    size_t n, cap;
    uint64_t rng;
    float shared_gain; /* multiplies the shared experts' w3 (to make the SwiGLU clamp bite) */
} eu_synth;

static inline float eu_rand(eu_synth *s) { /* uniform [-1, 1) */
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return (float)((s->rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static inline void eu_add(eu_synth *s, const char *name, dsq_dtype dt, int rank, const uint64_t *shape, void *data) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->items = realloc(s->items, sizeof *s->items * s->cap);
    }
    dsq_st_item *it = &s->items[s->n++];
    memset(it, 0, sizeof *it);
    it->name = strdup(name);
    it->dtype = dt;
    it->rank = rank;
    for (int i = 0; i < rank; i++) it->shape[i] = shape[i];
    it->data = data;
}

static inline float *eu_rand_f32(eu_synth *s, size_t n, float center, float amp) {
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) f[i] = center + amp * eu_rand(s);
    return f;
}

static inline void eu_vec(eu_synth *s, const char *name, dsq_dtype dt, size_t n, float center, float amp) {
    float *f = eu_rand_f32(s, n, center, amp);
    uint64_t shape[1] = {n};
    if (dt == DSQ_DTYPE_BF16) {
        uint16_t *h = malloc(2 * (n ? n : 1));
        for (size_t i = 0; i < n; i++) h[i] = dsq_bf16_from_f32(f[i]);
        free(f);
        eu_add(s, name, dt, 1, shape, h);
    } else {
        eu_add(s, name, dt, 1, shape, f);
    }
}

static inline void eu_f32_mat(eu_synth *s, const char *name, size_t rows, size_t cols, float amp) {
    uint64_t shape[2] = {rows, cols};
    eu_add(s, name, DSQ_DTYPE_F32, 2, shape, eu_rand_f32(s, rows * cols, 0, amp));
}

static inline void eu_bf16_mat(eu_synth *s, const char *name, size_t rows, size_t cols) {
    float amp = sqrtf(3.0f / (float)cols);
    uint16_t *h = malloc(2 * rows * cols);
    for (size_t i = 0; i < rows * cols; i++) h[i] = dsq_bf16_from_f32(amp * eu_rand(s));
    uint64_t shape[2] = {rows, cols};
    eu_add(s, name, DSQ_DTYPE_BF16, 2, shape, h);
}

/* FP8 e4m3 with 128×128 UE8M0 block scales (spec §2.6), partial edge blocks allowed. */
static inline void eu_fp8_mat(eu_synth *s, const char *name, size_t rows, size_t cols, float gain) {
    float amp = gain * sqrtf(3.0f / (float)cols);
    float *w = eu_rand_f32(s, rows * cols, 0, amp);
    size_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
    uint8_t *codes = malloc(rows * cols), *sc = malloc(br * bc);
    for (size_t bi = 0; bi < br; bi++)
        for (size_t bj = 0; bj < bc; bj++) {
            float amax = 0;
            for (size_t r = bi * 128; r < rows && r < bi * 128 + 128; r++)
                for (size_t c = bj * 128; c < cols && c < bj * 128 + 128; c++) amax = fmaxf(amax, fabsf(w[r * cols + c]));
            uint8_t b = dsq_fp8_scale_e8m0(amax);
            sc[bi * bc + bj] = b;
            float sv = dsq_e8m0_to_f32(b);
            for (size_t r = bi * 128; r < rows && r < bi * 128 + 128; r++)
                for (size_t c = bj * 128; c < cols && c < bj * 128 + 128; c++)
                    codes[r * cols + c] = dsq_e4m3_from_f32(w[r * cols + c] / sv);
        }
    free(w);
    uint64_t shape[2] = {rows, cols}, sshape[2] = {br, bc};
    char sname[256];
    snprintf(sname, sizeof sname, "%.*s.scale", (int)(strlen(name) - 7), name);
    eu_add(s, name, DSQ_DTYPE_F8_E4M3, 2, shape, codes);
    eu_add(s, sname, DSQ_DTYPE_F8_E8M0, 2, sshape, sc);
}

/* Packed FP4 e2m1 (I8 [rows, cols/2]) with UE8M0 [rows, cols/32]. */
static inline void eu_fp4_mat(eu_synth *s, const char *name, size_t rows, size_t cols) {
    float amp = sqrtf(3.0f / (float)cols);
    uint8_t *codes = calloc(rows * cols / 2, 1), *sc = malloc(rows * cols / 32);
    for (size_t r = 0; r < rows; r++)
        for (size_t b = 0; b < cols / 32; b++) {
            float v[32], amax = 0;
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i] = amp * eu_rand(s)));
            uint8_t sb = dsq_fp4_scale_e8m0(amax);
            sc[r * (cols / 32) + b] = sb;
            float sv = dsq_e8m0_to_f32(sb);
            for (int i = 0; i < 32; i++) {
                uint8_t nib = dsq_e2m1_from_f32(v[i] / sv);
                size_t c = b * 32 + (size_t)i;
                codes[r * cols / 2 + c / 2] |= (uint8_t)(c % 2 ? nib << 4 : nib);
            }
        }
    uint64_t shape[2] = {rows, cols / 2}, sshape[2] = {rows, cols / 32};
    char sname[256];
    snprintf(sname, sizeof sname, "%.*s.scale", (int)(strlen(name) - 7), name);
    eu_add(s, name, DSQ_DTYPE_I8, 2, shape, codes);
    eu_add(s, sname, DSQ_DTYPE_F8_E8M0, 2, sshape, sc);
}

static inline void eu_compressor(eu_synth *s, const char *prefix, int ratio, int d, size_t D) {
    char n[256];
    int c = ratio == 4 ? 2 : 1;
    snprintf(n, sizeof n, "%scompressor.ape", prefix);
    eu_f32_mat(s, n, (size_t)ratio, (size_t)(c * d), 0.5f);
    snprintf(n, sizeof n, "%scompressor.wkv.weight", prefix);
    eu_bf16_mat(s, n, (size_t)(c * d), D);
    snprintf(n, sizeof n, "%scompressor.wgate.weight", prefix);
    eu_bf16_mat(s, n, (size_t)(c * d), D);
    snprintf(n, sizeof n, "%scompressor.norm.weight", prefix);
    eu_vec(s, n, DSQ_DTYPE_BF16, (size_t)d, 1.0f, 0.2f);
}

/* Write a random model for config c to dir/model.safetensors; returns the path of dir. */
static inline void eu_synth_write(const char *dir, const dsq_v4_config *c, uint64_t seed, float shared_gain) {
    eu_synth s = {NULL, 0, 0, seed * 2654435761u + 1, shared_gain};
    size_t D = c->dim, V = c->vocab_size, hc = (size_t)c->hc_mult, mix = (2 + hc) * hc;
    size_t H = (size_t)c->n_heads, hd = (size_t)c->head_dim, ql = (size_t)c->q_lora_rank, G = (size_t)c->o_groups;
    size_t ol = (size_t)c->o_lora_rank, I = (size_t)c->moe_inter_dim, E = (size_t)c->n_routed_experts;
    size_t K = (size_t)c->n_activated_experts;
    char n[256];
    uint64_t shp[2];
    {
        uint16_t *h = malloc(2 * V * D);
        for (size_t i = 0; i < V * D; i++) h[i] = dsq_bf16_from_f32(eu_rand(&s));
        shp[0] = V, shp[1] = D;
        eu_add(&s, "embed.weight", DSQ_DTYPE_BF16, 2, shp, h);
    }
    eu_bf16_mat(&s, "head.weight", V, D);
    eu_vec(&s, "norm.weight", DSQ_DTYPE_BF16, D, 1.0f, 0.2f);
    for (int b = 0; b < c->n_layers + c->n_mtp_layers; b++) {
        char P[64];
        bool mtp = b >= c->n_layers;
        if (mtp) snprintf(P, sizeof P, "mtp.%d.", b - c->n_layers);
        else snprintf(P, sizeof P, "layers.%d.", b);
        int ratio = c->compress_ratios[b];
#define NM(fmt) (snprintf(n, sizeof n, "%s" fmt, P), n)
        eu_vec(&s, NM("attn_norm.weight"), DSQ_DTYPE_BF16, D, 1.0f, 0.2f);
        eu_vec(&s, NM("ffn_norm.weight"), DSQ_DTYPE_BF16, D, 1.0f, 0.2f);
        eu_f32_mat(&s, NM("hc_attn_fn"), mix, hc * D, 0.05f);
        eu_f32_mat(&s, NM("hc_ffn_fn"), mix, hc * D, 0.05f);
        eu_vec(&s, NM("hc_attn_base"), DSQ_DTYPE_F32, mix, 0.0f, 0.5f);
        eu_vec(&s, NM("hc_ffn_base"), DSQ_DTYPE_F32, mix, 0.0f, 0.5f);
        eu_vec(&s, NM("hc_attn_scale"), DSQ_DTYPE_F32, 3, 1.0f, 0.3f);
        eu_vec(&s, NM("hc_ffn_scale"), DSQ_DTYPE_F32, 3, 1.0f, 0.3f);
        eu_fp8_mat(&s, NM("attn.wq_a.weight"), ql, D, 1);
        eu_vec(&s, NM("attn.q_norm.weight"), DSQ_DTYPE_BF16, ql, 1.0f, 0.2f);
        eu_fp8_mat(&s, NM("attn.wq_b.weight"), H * hd, ql, 1);
        eu_fp8_mat(&s, NM("attn.wkv.weight"), hd, D, 1);
        eu_vec(&s, NM("attn.kv_norm.weight"), DSQ_DTYPE_BF16, hd, 1.0f, 0.2f);
        eu_fp8_mat(&s, NM("attn.wo_a.weight"), G * ol, H * hd / G, 1);
        eu_fp8_mat(&s, NM("attn.wo_b.weight"), D, G * ol, 1);
        eu_vec(&s, NM("attn.attn_sink"), DSQ_DTYPE_F32, H, 0.0f, 1.0f);
        if (ratio > 0) eu_compressor(&s, NM("attn."), ratio, (int)hd, D);
        if (ratio == 4) {
            size_t nih = (size_t)c->index_n_heads, ihd = (size_t)c->index_head_dim;
            eu_compressor(&s, NM("attn.indexer."), 4, (int)ihd, D);
            eu_fp8_mat(&s, NM("attn.indexer.wq_b.weight"), nih * ihd, ql, 1);
            eu_bf16_mat(&s, NM("attn.indexer.weights_proj.weight"), nih, D);
        }
        eu_bf16_mat(&s, NM("ffn.gate.weight"), E, D);
        if (!mtp && b < c->n_hash_layers) {
            int64_t *t = malloc(8 * V * K);
            for (size_t v = 0; v < V; v++)
                for (size_t k = 0; k < K; k++) t[v * K + k] = (int64_t)((v * 7 + k * 2 + (size_t)b) % E);
            shp[0] = V, shp[1] = K;
            eu_add(&s, NM("ffn.gate.tid2eid"), DSQ_DTYPE_I64, 2, shp, t);
        } else {
            eu_vec(&s, NM("ffn.gate.bias"), DSQ_DTYPE_F32, E, 0.0f, 0.3f);
        }
        for (size_t e = 0; e < E; e++) {
            snprintf(n, sizeof n, "%sffn.experts.%zu.w1.weight", P, e);
            eu_fp4_mat(&s, n, I, D);
            snprintf(n, sizeof n, "%sffn.experts.%zu.w2.weight", P, e);
            eu_fp4_mat(&s, n, D, I);
            snprintf(n, sizeof n, "%sffn.experts.%zu.w3.weight", P, e);
            eu_fp4_mat(&s, n, I, D);
        }
        eu_fp8_mat(&s, NM("ffn.shared_experts.w1.weight"), I, D, shared_gain);
        eu_fp8_mat(&s, NM("ffn.shared_experts.w2.weight"), D, I, 1);
        eu_fp8_mat(&s, NM("ffn.shared_experts.w3.weight"), I, D, shared_gain);
        if (mtp) {
            eu_fp8_mat(&s, NM("e_proj.weight"), D, D, 1);
            eu_fp8_mat(&s, NM("h_proj.weight"), D, D, 1);
            eu_vec(&s, NM("enorm.weight"), DSQ_DTYPE_BF16, D, 1.0f, 0.2f);
            eu_vec(&s, NM("hnorm.weight"), DSQ_DTYPE_BF16, D, 1.0f, 0.2f);
            eu_vec(&s, NM("norm.weight"), DSQ_DTYPE_BF16, D, 1.0f, 0.2f);
            eu_f32_mat(&s, NM("hc_head_fn"), hc, hc * D, 0.05f);
            eu_vec(&s, NM("hc_head_base"), DSQ_DTYPE_F32, hc, 0.0f, 0.5f);
            eu_vec(&s, NM("hc_head_scale"), DSQ_DTYPE_F32, 1, 1.0f, 0.3f);
        }
#undef NM
    }
    eu_f32_mat(&s, "hc_head_fn", hc, hc * D, 0.05f);
    eu_vec(&s, "hc_head_base", DSQ_DTYPE_F32, hc, 0.0f, 0.5f);
    eu_vec(&s, "hc_head_scale", DSQ_DTYPE_F32, 1, 1.0f, 0.3f);
    char *path = dsq_test_join(dir, "model.safetensors");
    dsq_err e = DSQ_ERR_INIT;
    dsq_status st = dsq_st_write_file(path, s.items, s.n, true, &e);
    if (st) fprintf(stderr, "synth: %s\n", e.msg);
    assert_int_equal(st, DSQ_OK);
    dsq_err_clear(&e);
    free(path);
    for (size_t i = 0; i < s.n; i++) {
        free((void *)s.items[i].name);
        free((void *)s.items[i].data);
    }
    free(s.items);
}

/* A shape unlike the golden one: 2 hash layers, ratios 128/4/8 and SWA, hc = 2, partial FP8 blocks. */
static inline void eu_synth_config(dsq_v4_config *c) {
    eu_tiny_config(c);
    c->vocab_size = 300;
    c->dim = 160;
    c->n_layers = 5;
    c->n_mtp_layers = 1;
    c->n_hash_layers = 2;
    c->n_heads = 2;
    c->head_dim = 64;
    c->rope_head_dim = 32;
    c->q_lora_rank = 96;
    c->o_lora_rank = 48;
    c->o_groups = 2;
    c->moe_inter_dim = 96;
    c->n_routed_experts = 6;
    c->n_activated_experts = 3;
    c->window_size = 8;
    int cr[6] = {0, 128, 4, 8, 4, 4};
    memcpy(c->compress_ratios, cr, sizeof cr);
    c->n_compress_ratios = 6;
    c->original_seq_len = 32;
    c->index_n_heads = 4;
    c->index_head_dim = 32;
    c->index_topk = 5;
    c->hc_mult = 2;
}

/* Write a synth model to a new temp dir and open it; *dir gets the dir (free + rmdir by caller). */
static inline dsq_v4_model *eu_open_synth(const dsq_v4_config *c, uint64_t seed, float shared_gain, char **dir) {
    *dir = dsq_test_tmpdir();
    eu_synth_write(*dir, c, seed, shared_gain);
    dsq_wsrc *src = NULL;
    dsq_v4_model *m = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_status st = dsq_wsrc_open_safetensors(*dir, &src, &e);
    if (!st) st = dsq_v4_model_create(src, c, &m, &e);
    if (st) dsq_err_print(&e, stderr, "synth open: ");
    assert_int_equal(st, DSQ_OK);
    dsq_err_clear(&e);
    return m;
}

#endif
