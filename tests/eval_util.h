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

/* The v4-tiny config.json of shared/golden/v4-tiny/model, by hand (until config.c is on main). */
static inline void eu_tiny_config(dsq_v4_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 512;
    c->dim = 256;
    c->n_layers = 4;
    c->n_mtp_layers = 1;
    c->n_hash_layers = 1;
    c->n_heads = 4;
    c->n_kv_heads = 1;
    c->head_dim = 128;
    c->rope_head_dim = 64;
    c->q_lora_rank = 128;
    c->o_lora_rank = 128;
    c->o_groups = 2;
    c->moe_inter_dim = 128;
    c->n_routed_experts = 8;
    c->n_shared_experts = 1;
    c->n_activated_experts = 2;
    strcpy(c->score_func, "sqrtsoftplus");
    c->route_scale = 1.5;
    c->swiglu_limit = 10.0;
    c->window_size = 16;
    int cr[5] = {0, 4, 32, 4, 0};
    memcpy(c->compress_ratios, cr, sizeof cr);
    c->n_compress_ratios = 5;
    c->rope_theta = 10000.0;
    c->compress_rope_theta = 160000.0;
    c->has_yarn = true;
    c->rope_factor = 4.0;
    c->original_seq_len = 64;
    c->beta_fast = 32;
    c->beta_slow = 1;
    c->index_n_heads = 8;
    c->index_head_dim = 64;
    c->index_topk = 8;
    c->hc_mult = 4;
    c->hc_sinkhorn_iters = 20;
    c->hc_eps = 1e-6;
    c->norm_eps = 1e-6;
    c->expert_fp4 = true;
    c->weight_block_n = c->weight_block_k = 128;
    c->scale_ue8m0 = true;
    c->has_quant_config = true;
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    c->max_position_embeddings = 256;
}

/* Open the shared v4-tiny model. */
static inline dsq_v4_model *eu_open_tiny(void) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model");
    dsq_v4_model *m = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_v4_config cfg;
    eu_tiny_config(&cfg);
    dsq_wsrc *src = NULL;
    dsq_status s = dsq_wsrc_open_safetensors(p, &src, &e);
    if (!s) s = dsq_v4_model_create(src, &cfg, &m, &e);
    if (s) dsq_err_print(&e, stderr, "open tiny: ");
    assert_int_equal(s, DSQ_OK);
    dsq_err_clear(&e);
    free(p);
    return m;
}

#endif
