/* Helpers shared by the tests/test_eval*.c suites (header-only: each suite is its own binary). */
#ifndef DSQ_EVAL_UTIL_H
#define DSQ_EVAL_UTIL_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_numeric.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"
#include "dsq_v4.h"

/* Default options for the suites: one thread (results do not depend on the thread count — a test
 * checks that — and spinning OpenMP teams crawl on a shared, oversubscribed CI machine). */
static inline void eu_opts(dsq_eval_options *o) {
    dsq_eval_options_default(o);
    o->threads = 1;
}

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
        case DSQ_DTYPE_F32:
            memcpy(&f[i], d + 4 * i, 4);
            break;
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
        case DSQ_DTYPE_U8:
            f[i] = d[i];
            break;
        default:
            fail_msg("%s: unexpected dtype", name);
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
 * arg-max differs (may be NULL).  A NaN in any row makes the result NaN (it fails every `<= tol`)
 * and counts that row as a mismatch. */
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
        worst = dsq_test_worse(worst, rel);
        mism += ia != ib || rel != rel;
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
        agree += ig == io && kl == kl; /* a NaN row never agrees */
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

/* ---- synthetic models (`dsq synth`) --------------------------------------------------------------
 * A shape unlike the golden one: 2 hash layers, ratios 128 / 4 / 8 and SWA, an MTP block with
 * ratio 4, hc = 2, dim 384, head_dim 192, window 8, 6 experts top-3.  `layers` main layers, no MTP when mtp is false.
 */
static inline char *eu_synth_config_json(const char *dir, int layers, bool mtp) {
    char *base = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    char *text = dsq_test_read(base, NULL);
    free(base);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    struct {
        const char *k;
        double v;
    } nums[] = {
        {"vocab_size", 300},
        {"hidden_size", 384},
        {"num_hidden_layers", layers},
        {"num_nextn_predict_layers", mtp},
        {"num_hash_layers", 2},
        {"num_attention_heads", 2},
        {"head_dim", 192},
        {"qk_rope_head_dim", 64},
        {"q_lora_rank", 128},
        {"o_lora_rank", 64},
        {"o_groups", 2},
        {"moe_intermediate_size", 128},
        {"n_routed_experts", 6},
        {"num_experts_per_tok", 3},
        {"sliding_window", 8},
        {"index_n_heads", 4},
        {"index_head_dim", 64},
        {"index_topk", 5},
        {"hc_mult", 2},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        cJSON_ReplaceItemInObject(j, nums[i].k, cJSON_CreateNumber(nums[i].v));
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "rope_scaling"), "original_max_position_embeddings",
                              cJSON_CreateNumber(32));
    const int all[6] = {0, 128, 4, 8, 4, 4};
    int cr[7], n = 0;
    for (int i = 0; i < layers; i++) cr[n++] = all[i % 5];
    if (mtp) cr[n++] = 4;
    cJSON_ReplaceItemInObject(j, "compress_ratios", cJSON_CreateIntArray(cr, n));
    char *out = cJSON_Print(j);
    cJSON_Delete(j);
    char *path = dsq_test_join(dir, "synth-config.json");
    dsq_test_write(path, out, strlen(out));
    free(out);
    return path;
}

/* `dsq synth` that shape into a new temp dir and open it; *dir gets the dir (free + rmdir by caller). */
static inline dsq_v4_model *eu_open_synth(int layers, bool mtp, uint64_t seed, char **dir) {
    *dir = dsq_test_tmpdir();
    char *cfg = eu_synth_config_json(*dir, layers, mtp), *mdir = dsq_test_join(*dir, "model"), *se = NULL;
    int rc = dsq_test_run(NULL, &se, "synth --config %s --out %s --seed %llu --threads 1", cfg, mdir,
                          (unsigned long long)seed);
    if (rc) fprintf(stderr, "dsq synth: %s\n", se ? se : "");
    assert_int_equal(rc, 0);
    free(se);
    dsq_v4_model *m = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_status st = dsq_v4_model_open(mdir, &m, &e);
    if (st) dsq_err_print(&e, stderr, "synth open: ");
    assert_int_equal(st, DSQ_OK);
    dsq_err_clear(&e);
    free(cfg);
    free(mdir);
    return m;
}

#endif
