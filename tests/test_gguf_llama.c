/* The llama.cpp proof: GGUFs that dsq writes load in llama.cpp's `deepseek4` (libllama of
 * @node-llama-cpp/linux-x64@3.22.1, installed by `make test` into .cache/npm), and llama.cpp's
 * next-token distributions at every position of a few hundred teacher-forced tokens agree with dsq's
 * evaluator reading the SAME GGUF.  Why this route: libllama's C API gives the logits of every
 * position of one llama_decode (teacher forcing), which checks the whole distribution everywhere;
 * the Node binding only completes text.
 *
 * Settings: flash attention off, F32 KV cache, CPU.  Bounds (docs/interop.md gives the measured
 * values): all-F32 GGUF: same arg-max everywhere and mean KL ≤ 1e-6.  Block types: llama.cpp's CPU
 * quantizes activations for its dot products (Q8_0/Q4_0/MXFP4 weights: activations to Q8; BF16:
 * activations to BF16), so its logits move; each recipe asserts a stated bound.  The weights are
 * checked exactly: every tensor of every block type decodes through ggml's own to_float to the same
 * floats as dsq's decoder.  The MTP block is loaded (load_mtp) so the loader checks its shapes.
 *
 * libllama is opened with dlopen; its structs are declared here by layout (llama.h of that build)
 * and the layout is checked against the library's defaults before use. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_ggml.h"
#include "dsq_gguf.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"

#define LLAMA_DIR ".cache/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"

/* ---- the C API of that libllama (llama.h), by layout ----------------------------------------- */
struct ll_model_params {
    void *devices;
    const void *tensor_buft_overrides;
    int32_t n_gpu_layers, split_mode, load_mode, lazy_mode, main_gpu;
    const float *tensor_split;
    void *progress_callback, *progress_callback_user_data;
    const void *kv_overrides;
    bool vocab_only, check_tensors, use_extra_bufts, no_host, no_alloc, load_mtp;
};
struct ll_context_params {
    uint32_t n_ctx, n_batch, n_ubatch, n_seq_max, n_rs_seq, n_outputs_max, n_outputs_max_per_seq;
    int32_t n_threads, n_threads_batch;
    int32_t ctx_type, rope_scaling_type, pooling_type, attention_type, flash_attn_type;
    float rope_freq_base, rope_freq_scale, yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
    uint32_t yarn_orig_ctx;
    float defrag_thold;
    void *cb_eval, *cb_eval_user_data;
    int32_t type_k, type_v;
    void *abort_callback, *abort_callback_data;
    bool embeddings, offload_kqv, no_perf, op_offload, swa_full, kv_unified;
    void *samplers;
    size_t n_samplers;
    void *ctx_other;
};
struct ll_batch {
    int32_t n_tokens;
    int32_t *token;
    float *embd;
    int32_t *pos;
    int32_t *n_seq_id;
    int32_t **seq_id;
    int8_t *logits;
};
struct ll_type_traits { /* ggml_type_traits */
    const char *type_name;
    int64_t blck_size, blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    void (*to_float)(const void *x, float *y, int64_t k);
    void *from_float_ref;
};

static struct {
    void *ggml, *base, *llama;
    void (*load_all_from_path)(const char *);
    void (*backend_init)(void);
    struct ll_model_params (*model_default)(void);
    struct ll_context_params (*context_default)(void);
    void *(*model_load)(const char *, struct ll_model_params);
    void (*model_free)(void *);
    void *(*init_from_model)(void *, struct ll_context_params);
    void (*ctx_free)(void *);
    struct ll_batch (*batch_init)(int32_t, int32_t, int32_t);
    void (*batch_free)(struct ll_batch);
    int32_t (*decode)(void *, struct ll_batch);
    float *(*get_logits)(void *);
    const void *(*get_vocab)(const void *);
    int32_t (*n_tokens)(const void *);
    void (*log_set)(void (*)(int, const char *, void *), void *);
    const struct ll_type_traits *(*type_traits)(int);
} L;

static void quiet(int level, const char *text, void *ud) {
    (void)ud;
    if (level == 4 /* GGML_LOG_LEVEL_ERROR */) fputs(text, stderr);
}

static void *sym(void *h, const char *name) {
    void *p = dlsym(h, name);
    if (!p) fail_msg("libllama: no symbol %s", name);
    return p;
}

static char *g_dir, *g_ck, *g_ids;
static int g_n; /* tokens */
static int32_t g_tok[512];

static int setup(void **state) {
    (void)state;
    L.ggml = dlopen(LLAMA_DIR "/libggml.v0.5.0.so", RTLD_NOW | RTLD_GLOBAL);
    L.base = dlopen(LLAMA_DIR "/libggml-base.so", RTLD_NOW | RTLD_GLOBAL);
    L.llama = dlopen(LLAMA_DIR "/libllama.v0.5.0.so", RTLD_NOW);
    if (!L.ggml || !L.base || !L.llama) {
        fprintf(stderr, "cannot load libllama from " LLAMA_DIR " (make test installs it): %s\n", dlerror());
        return -1;
    }
    g_dir = dsq_test_tmpdir();
    g_ck = dsq_test_join(g_dir, "ck");
    g_ids = dsq_test_join(g_dir, "ids.txt");
    if (dsq_test_run(NULL, NULL, "synth --config tests/gguf/v4-llama.json --out '%s' --tokenizer samples/tokenizer/tokenizer.json "
                     "--threads 2", g_ck) != 0)
        return -1;
    /* a few hundred tokens of real text (the sample tokenizer's ids) */
    char *out = NULL;
    if (dsq_test_run(&out, NULL, "tokenize samples/tokenizer/tokenizer.json - < docs/architecture.md") != 0) return -1;
    g_n = dsq_test_asan() ? 64 : 256;
    const char *p = out + 1;
    FILE *f = fopen(g_ids, "w");
    for (int i = 0; i < g_n; i++) {
        g_tok[i] = (int32_t)strtol(p, (char **)&p, 10);
        p++;
        fprintf(f, "%d ", g_tok[i]);
    }
    fclose(f);
    free(out);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    dsq_test_rmdir(g_dir);
    free(g_dir), free(g_ck), free(g_ids);
    return 0;
}

static void bind(void) {
    if (L.decode) return;
    L.load_all_from_path = sym(L.ggml, "ggml_backend_load_all_from_path");
    L.type_traits = sym(L.base, "ggml_get_type_traits");
    L.backend_init = sym(L.llama, "llama_backend_init");
    L.model_default = sym(L.llama, "llama_model_default_params");
    L.context_default = sym(L.llama, "llama_context_default_params");
    L.model_load = sym(L.llama, "llama_model_load_from_file");
    L.model_free = sym(L.llama, "llama_model_free");
    L.init_from_model = sym(L.llama, "llama_init_from_model");
    L.ctx_free = sym(L.llama, "llama_free");
    L.batch_init = sym(L.llama, "llama_batch_init");
    L.batch_free = sym(L.llama, "llama_batch_free");
    L.decode = sym(L.llama, "llama_decode");
    L.get_logits = sym(L.llama, "llama_get_logits");
    L.get_vocab = sym(L.llama, "llama_model_get_vocab");
    L.n_tokens = sym(L.llama, "llama_vocab_n_tokens");
    L.log_set = sym(L.llama, "llama_log_set");
    L.log_set(quiet, NULL);
    L.load_all_from_path(LLAMA_DIR);
    L.backend_init();
    /* the declared layout matches this build: its defaults land where llama.h puts them */
    struct ll_model_params mp = L.model_default();
    struct ll_context_params cp = L.context_default();
    assert_int_equal(mp.n_gpu_layers, -1);
    assert_true(mp.use_extra_bufts && !mp.vocab_only && !mp.load_mtp && !mp.no_alloc);
    assert_int_equal(cp.n_ctx, 512);
    assert_int_equal(cp.n_batch, 2048);
    assert_int_equal(cp.n_ubatch, 512);
    assert_int_equal(cp.n_seq_max, 1);
    assert_int_equal(cp.flash_attn_type, -1);
    assert_int_equal(cp.type_k, 1);
    assert_int_equal(cp.type_v, 1);
    assert_true(cp.offload_kqv && !cp.embeddings && !cp.kv_unified);
    assert_true(cp.yarn_ext_factor == -1.0f && cp.defrag_thold == -1.0f);
    const struct ll_type_traits *q8 = L.type_traits(DSQ_GGMLT_Q8_0);
    assert_string_equal(q8->type_name, "q8_0");
    assert_int_equal(q8->blck_size, 32);
    assert_int_equal(q8->type_size, 34);
}

/* llama.cpp's logits [n][V] for the teacher-forced tokens (one decode, logits at every position). */
static float *llama_logits(const char *gguf, int *V) {
    struct ll_model_params mp = L.model_default();
    mp.n_gpu_layers = 0;
    mp.load_mtp = true; /* the loader then checks the nextn tensors' names and shapes */
    void *m = L.model_load(gguf, mp);
    if (!m) fail_msg("llama.cpp refused %s", gguf);
    struct ll_context_params cp = L.context_default();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 512;
    cp.flash_attn_type = 0; /* disabled */
    cp.type_k = cp.type_v = DSQ_GGMLT_F32;
    cp.n_threads = cp.n_threads_batch = 2;
    void *c = L.init_from_model(m, cp);
    if (!c) fail_msg("llama.cpp: no context for %s", gguf);
    *V = L.n_tokens(L.get_vocab(m));
    struct ll_batch b = L.batch_init(g_n, 0, 1);
    for (int i = 0; i < g_n; i++) {
        b.token[i] = g_tok[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = g_n;
    assert_int_equal(L.decode(c, b), 0);
    float *out = malloc((size_t)g_n * (size_t)*V * sizeof *out);
    memcpy(out, L.get_logits(c), (size_t)g_n * (size_t)*V * sizeof *out);
    L.batch_free(b);
    L.ctx_free(c);
    L.model_free(m);
    return out;
}

static float *dsq_logits(const char *gguf, int V) {
    char *out = dsq_test_join(g_dir, "logits.safetensors"), *errs = NULL;
    int rc = dsq_test_run(NULL, &errs, "eval logits '%s' --tokens '%s' --out '%s' --threads 2 --overwrite", gguf, g_ids, out);
    if (rc) fail_msg("dsq eval logits %s: %s", gguf, errs);
    free(errs);
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(out, NULL, &st, NULL), DSQ_OK);
    const dsq_st_tensor *t = dsq_st_find(st, "logits");
    assert_non_null(t);
    assert_int_equal(t->shape[0], g_n);
    assert_int_equal(t->shape[1], V);
    float *l = malloc(t->n_bytes);
    memcpy(l, t->data, t->n_bytes);
    dsq_st_close(st);
    free(out);
    return l;
}

typedef struct agreement {
    int argmax_same;
    int small_kl; /* positions with KL ≤ 1e-4 */
    double median_kl;
    double mean_kl, max_kl, max_rel; /* KL(p_dsq || p_llama); max |Δlogit| / max |logit| per row */
} agreement;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static agreement compare(const float *a, const float *b, int V) {
    agreement r = {0};
    double kls[512];
    for (int i = 0; i < g_n; i++) {
        const float *x = a + (size_t)i * V, *y = b + (size_t)i * V;
        int ax = 0, ay = 0;
        double mx = x[0], my = y[0], amax = 0, dmax = 0;
        for (int v = 0; v < V; v++) {
            if (x[v] > x[ax]) ax = v;
            if (y[v] > y[ay]) ay = v;
            mx = fmax(mx, x[v]), my = fmax(my, y[v]);
            amax = fmax(amax, fabs(x[v])), dmax = fmax(dmax, fabs((double)x[v] - y[v]));
        }
        double zx = 0, zy = 0;
        for (int v = 0; v < V; v++) zx += exp(x[v] - mx), zy += exp(y[v] - my);
        double kl = 0;
        for (int v = 0; v < V; v++) {
            double lp = x[v] - mx - log(zx), lq = y[v] - my - log(zy);
            kl += exp(lp) * (lp - lq);
        }
        r.argmax_same += ax == ay;
        r.small_kl += kl <= 1e-4;
        kls[i] = kl;
        r.mean_kl += kl / g_n;
        r.max_kl = fmax(r.max_kl, kl);
        r.max_rel = fmax(r.max_rel, dmax / amax);
    }
    qsort(kls, (size_t)g_n, sizeof kls[0], cmp_double);
    r.median_kl = kls[g_n / 2];
    return r;
}

/* Every tensor of a block type decodes through ggml's to_float exactly as through dsq's decoder. */
static size_t weights_exact(const char *gguf) {
    dsq_gguf *g;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_gguf_open(gguf, &g, &e)) fail_msg("%s", e.msg);
    size_t checked = 0;
    for (size_t i = 0; i < dsq_gguf_n_tensors(g); i++) {
        const dsq_gguf_tensor *t = dsq_gguf_tensor_at(g, i);
        dsq_encoding enc;
        int group;
        if (t->type == DSQ_GGMLT_F32 || t->type == DSQ_GGMLT_I32 || !dsq_ggml_encoding_of(t->type, &enc, &group)) continue;
        uint64_t cols = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
        dsq_codec_layout lay;
        assert_int_equal(dsq_codec_layout_of(enc, rows, cols, group, &lay, NULL), DSQ_OK);
        uint8_t *codes = malloc(lay.data_bytes + 1), *scales = malloc(lay.scale_bytes + 1);
        dsq_qtensor_buf b = {enc, rows, cols, group, codes, scales, NULL, 0};
        assert_int_equal(dsq_ggml_unpack(t->type, t->data, rows, cols, &b, &e), DSQ_OK);
        float *x = malloc(rows * cols * sizeof *x), *y = malloc(rows * cols * sizeof *y);
        dsq_qtensor q = dsq_qtensor_view(&b);
        if (dsq_codec_decode(&q, 0, rows, x, NULL, &e)) fail_msg("%s: %s", t->name, e.msg);
        L.type_traits((int)t->type)->to_float(t->data, y, (int64_t)(rows * cols));
        /* equal values (ggml's MXFP4 table decodes code 8, e2m1 -0, as +0; dsq as -0) */
        for (uint64_t k = 0; k < rows * cols; k++)
            if (x[k] != y[k] || isnan(x[k]))
                fail_msg("%s [%llu]: ggml's %s to_float gives %.9g, dsq's decoder %.9g", t->name, (unsigned long long)k,
                         dsq_ggml_type_name(t->type), y[k], x[k]);
        checked++;
        free(codes), free(scales), free(x), free(y);
    }
    dsq_gguf_close(g);
    return checked;
}

/* Convert, compare, report one line, assert the bounds. */
static void check_recipe(const char *recipe, int min_argmax, double max_mean_kl, double max_median_kl, size_t min_exact) {
    bind();
    char *gguf = dsq_test_join(g_dir, "m.gguf"), *errs = NULL;
    if (dsq_test_run(NULL, &errs, "convert '%s' '%s' --recipe %s --overwrite", g_ck, gguf, recipe))
        fail_msg("convert %s: %s", recipe, errs);
    free(errs);
    size_t exact = weights_exact(gguf);
    int V;
    float *ll = llama_logits(gguf, &V);
    float *ds = dsq_logits(gguf, V);
    agreement a = compare(ds, ll, V);
    printf("llama.cpp vs dsq on the same GGUF, %-16s %d tokens: arg-max %d/%d, KL mean %.3g median %.3g max %.3g, "
           "KL<=1e-4 at %d, "
           "max |dlogit|/max|logit| %.3g; %zu block-type tensors exact through ggml to_float\n",
           recipe, g_n, a.argmax_same, g_n, a.mean_kl, a.median_kl, a.max_kl, a.small_kl, a.max_rel, exact);
    assert_true(exact >= min_exact);
    if (a.argmax_same < min_argmax * g_n / 256) fail_msg("%s: arg-max agrees at %d of %d positions", recipe, a.argmax_same, g_n);
    if (!(a.mean_kl <= max_mean_kl)) fail_msg("%s: mean KL %.3g above %.3g", recipe, a.mean_kl, max_mean_kl);
    if (!(a.median_kl <= max_median_kl)) fail_msg("%s: median KL %.3g above %.3g", recipe, a.median_kl, max_median_kl);
    free(ll), free(ds), free(gguf);
}

/* All F32: llama.cpp's forward equals dsq's exact numerics to f32 rounding (measured: arg-max
 * 256/256, mean KL 3.3e-13, max relative logit error 2.1e-6). */
static void test_f32(void **state) {
    (void)state;
    check_recipe("gguf-f32", 256, 1e-6, 1e-6, 0);
}

/* Block types.  The weights are exact (to_float above); llama.cpp rounds the activations of each
 * product (Q8_0 blocks for Q8_0/Q4_0/MXFP4 weights, BF16 for BF16 weights) and on this random synth
 * model that moves a position's distribution by a median KL of 3e-5..3e-4; where a router top-k or an
 * indexer top-k choice is close, the choice flips and that position moves by up to KL 0.2.  Measured
 * (256 tokens): arg-max 234..247 of 256, mean KL 1.9e-3..5.6e-3, median KL 2.6e-5..2.9e-4
 * (docs/interop.md; 56..62 of 64 under ASan).  Bounds: arg-max ≥ 210/256, mean KL ≤ 1.5e-2, median KL ≤ 1e-3. */
#define BLOCK_BOUNDS 210, 1.5e-2, 1e-3
/* MXFP4 experts + BF16 rest (lossless from the release layout) */
static void test_bf16_mxfp4(void **state) {
    (void)state;
    check_recipe("gguf-bf16-mxfp4", BLOCK_BOUNDS, 72);
}
/* MXFP4 experts + Q8_0 rest (llama-quantize MXFP4_MOE) */
static void test_mxfp4_q8_0(void **state) {
    (void)state;
    check_recipe("gguf-mxfp4-moe", BLOCK_BOUNDS, 72);
}
/* Q4_0 experts + Q8_0 rest */
static void test_q4_0(void **state) {
    (void)state;
    check_recipe("gguf-q4_0-moe", BLOCK_BOUNDS, 72);
}
/* MXFP4 experts, F32 rest: the expert kernels alone */
static void test_mxfp4_f32(void **state) {
    (void)state;
    check_recipe("gguf-f32-mxfp4", BLOCK_BOUNDS, 15);
}
/* all BF16 and all Q8_0 */
static void test_bf16(void **state) {
    (void)state;
    check_recipe("gguf-bf16", BLOCK_BOUNDS, 72);
}
static void test_q8_0(void **state) {
    (void)state;
    check_recipe("gguf-q8_0", BLOCK_BOUNDS, 72);
}

/* K-quant routed experts, Q8_0 rest (the gguf-q*_k-moe recipes; ffn_down_exps has 128 columns here,
 * not a multiple of 256, so it takes the documented Q8_0 fallback and the Q4_K/Q2_K tensors are the
 * gate and up stacks).  llama.cpp's CPU dot products round the activations to Q8_K for these types.
 * Same bounds as the other block types (measured values in docs/interop.md). */
static size_t count_type(uint32_t type) {
    char *gguf = dsq_test_join(g_dir, "m.gguf");
    dsq_gguf *g;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_gguf_open(gguf, &g, &e)) fail_msg("%s", e.msg);
    size_t n = 0;
    for (size_t i = 0; i < dsq_gguf_n_tensors(g); i++) n += dsq_gguf_tensor_at(g, i)->type == type;
    dsq_gguf_close(g);
    free(gguf);
    return n;
}
/* Measured (256 tokens): Q4_K arg-max 240/256, KL mean 4.0e-3 median 2.5e-4; Q2_K 241/256, 2.0e-3,
 * 2.1e-4.  The k-quant stacks are among the tensors checked exact through ggml's to_float. */
static void test_q4_k(void **state) {
    (void)state;
    check_recipe("gguf-q4_k-moe", BLOCK_BOUNDS, 72);
    assert_int_equal(count_type(DSQ_GGMLT_Q4_K), 10); /* gate + up of 4 layers and the MTP block */
}
static void test_q2_k(void **state) {
    (void)state;
    check_recipe("gguf-q2_k-moe", BLOCK_BOUNDS, 72);
    assert_int_equal(count_type(DSQ_GGMLT_Q2_K), 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32),
        cmocka_unit_test(test_bf16_mxfp4),
        cmocka_unit_test(test_mxfp4_q8_0),
        cmocka_unit_test(test_q4_0),
        cmocka_unit_test(test_mxfp4_f32),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_q8_0),
        cmocka_unit_test(test_q4_k),
        cmocka_unit_test(test_q2_k),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
