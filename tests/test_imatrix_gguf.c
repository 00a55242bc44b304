/* llama.cpp's imatrix GGUF (lib/eval/imatrix_gguf.c):
 *   - round trip: a dsq imatrix with main-layer weights, shared and routed experts (one expert never
 *     routed to) → GGUF → dsq gives the same names, rows and sums (as f32, the file's precision);
 *     the file has llama.cpp's keys, GGUF names and the stacked expert layout;
 *   - ggml's own GGUF reader (libggml-base of the llama.cpp package) opens the file and finds the
 *     keys and tensors under the names llama-quantize looks up;
 *   - one malformed file per class, each failing with its status;
 *   - the CLI: `dsq calibrate --out F.gguf` then `dsq inspect` and `dsq convert --imatrix` read it,
 *     and a k-quant GGUF made with it is byte-identical to one made with the safetensors imatrix of
 *     the same run. */
#include <dirent.h>
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_ggml.h"
#include "dsq_gguf.h"
#include "dsq_imatrix.h"
#include "dsq_imatrix_gguf.h"
#include "dsq_fuzz.h"
#include "dsq_test.h"

enum { COLS = 256, ROWS_X = 20 };

static void add_rows(dsq_imatrix *m, const char *name, uint64_t cols, int n, float seed) {
    float *x = malloc(sizeof *x * cols * (size_t)n);
    for (size_t i = 0; i < cols * (size_t)n; i++) x[i] = sinf(seed + 0.37f * (float)i);
    assert_int_equal(dsq_imatrix_add(m, name, x, cols, n, cols, NULL), DSQ_OK);
    free(x);
}

static dsq_imatrix *sample(void) {
    dsq_imatrix *m;
    assert_int_equal(dsq_imatrix_create(&m, NULL), DSQ_OK);
    add_rows(m, "layers.0.attn.wq_a.weight", COLS, ROWS_X, 1.0f);
    add_rows(m, "layers.0.ffn.shared_experts.w2.weight", 128, ROWS_X, 2.0f);
    add_rows(m, "layers.1.attn.indexer.compressor.wkv.weight", COLS, ROWS_X, 3.0f);
    add_rows(m, "head.weight", COLS, ROWS_X, 4.0f);
    add_rows(m, "hc_head_fn", 1024, ROWS_X, 5.0f);
    /* experts 0, 1 and 3 of 4 (expert 2 never routed to) */
    add_rows(m, "layers.1.ffn.experts.0.w1.weight", COLS, 17, 6.0f);
    add_rows(m, "layers.1.ffn.experts.1.w1.weight", COLS, 3, 7.0f);
    add_rows(m, "layers.1.ffn.experts.3.w1.weight", COLS, 30, 8.0f);
    add_rows(m, "layers.1.ffn.experts.3.w2.weight", 128, 30, 9.0f);
    return m;
}

static void same(const dsq_imatrix *a, const dsq_imatrix *b) {
    assert_int_equal(dsq_imatrix_count(a), dsq_imatrix_count(b));
    for (size_t i = 0; i < dsq_imatrix_count(a); i++) {
        size_t j = 0;
        while (j < dsq_imatrix_count(b) && strcmp(dsq_imatrix_name(a, i), dsq_imatrix_name(b, j))) j++;
        if (j == dsq_imatrix_count(b)) fail_msg("%s lost in the round trip", dsq_imatrix_name(a, i));
        assert_int_equal(dsq_imatrix_cols(a, i), dsq_imatrix_cols(b, j));
        assert_int_equal(dsq_imatrix_rows(a, i), dsq_imatrix_rows(b, j));
        for (uint64_t c = 0; c < dsq_imatrix_cols(a, i); c++)
            if ((float)dsq_imatrix_sum2(a, i)[c] != (float)dsq_imatrix_sum2(b, j)[c])
                fail_msg("%s[%llu] differs", dsq_imatrix_name(a, i), (unsigned long long)c);
    }
}

static void test_round_trip(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *p = dsq_test_join(dir, "im.gguf"), *p2 = dsq_test_join(dir, "im2.gguf");
    dsq_imatrix *m = sample(), *r = NULL, *r2 = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_imatrix_gguf_options o = {.n_experts = 4, .dataset = "calib.txt", .chunk_count = 5, .chunk_size = 512};
    if (dsq_imatrix_save_gguf(m, p, &o, &e)) fail_msg("%s", e.msg);
    assert_int_equal(dsq_imatrix_save_gguf(m, p, &o, &e), DSQ_ERR_EXISTS); /* no silent replace */
    dsq_err_clear(&e);
    if (dsq_imatrix_load_any(p, &r, &e)) fail_msg("%s", e.msg);
    same(m, r);
    assert_true(dsq_imatrix_gguf_sniff(p));
    /* the file itself: llama.cpp's keys, names and layout */
    dsq_gguf *g;
    assert_int_equal(dsq_gguf_open(p, &g, NULL), DSQ_OK);
    char *type = dsq_gguf_get_str(g, "general.type");
    assert_string_equal(type, "imatrix");
    free(type);
    uint64_t v;
    assert_true(dsq_gguf_get_u64(g, "imatrix.chunk_count", &v) && v == 5);
    assert_true(dsq_gguf_get_u64(g, "imatrix.chunk_size", &v) && v == 512);
    const dsq_gguf_kv *ds = dsq_gguf_find_kv(g, "imatrix.datasets");
    const char *s;
    uint64_t len;
    assert_true(ds && dsq_gguf_kv_arr_str(g, ds, 0, &s, &len) && len == 9 && !memcmp(s, "calib.txt", 9));
    assert_int_equal(dsq_gguf_n_tensors(g), 2 * 7); /* 9 entries: 5 plain, 2 stacks */
    const dsq_gguf_tensor *t = dsq_gguf_find_tensor(g, "blk.1.ffn_gate_exps.weight.in_sum2");
    assert_non_null(t);
    assert_int_equal(t->ne[0], COLS);
    assert_int_equal(t->ne[1], 4);
    const dsq_gguf_tensor *c = dsq_gguf_find_tensor(g, "blk.1.ffn_gate_exps.weight.counts");
    assert_non_null(c);
    assert_int_equal(c->ne[0], 1);
    assert_int_equal(c->ne[1], 4);
    float cnt[4];
    memcpy(cnt, c->data, sizeof cnt);
    assert_true(cnt[0] == 17 && cnt[1] == 3 && cnt[2] == 0 && cnt[3] == 30);
    for (int k = 0; k < COLS; k++) assert_true(((const float *)t->data)[2 * COLS + k] == 0.0f);
    assert_non_null(dsq_gguf_find_tensor(g, "blk.1.ffn_down_exps.weight.in_sum2"));
    assert_non_null(dsq_gguf_find_tensor(g, "blk.0.attn_q_a.weight.counts"));
    assert_non_null(dsq_gguf_find_tensor(g, "blk.0.ffn_down_shexp.weight.in_sum2"));
    assert_non_null(dsq_gguf_find_tensor(g, "blk.1.indexer_compressor_kv.weight.in_sum2"));
    assert_non_null(dsq_gguf_find_tensor(g, "output.weight.in_sum2"));
    assert_non_null(dsq_gguf_find_tensor(g, "output_hc_fn.weight.in_sum2"));
    /* name order, as llama.cpp writes */
    for (size_t i = 1; i < dsq_gguf_n_tensors(g); i++)
        assert_true(strcmp(dsq_gguf_tensor_at(g, i - 1)->name, dsq_gguf_tensor_at(g, i)->name) < 0 ||
                    strstr(dsq_gguf_tensor_at(g, i)->name, ".counts"));
    dsq_gguf_close(g);
    /* re-saving what was read gives the same file (the expert count inferred: 4) */
    if (dsq_imatrix_save_gguf(r, p2, &(dsq_imatrix_gguf_options){.dataset = "calib.txt", .chunk_count = 5, .chunk_size = 512},
                              &e))
        fail_msg("%s", e.msg);
    size_t n1, n2;
    char *b1 = dsq_test_read(p, &n1), *b2 = dsq_test_read(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1), free(b2);
    if (dsq_imatrix_load_gguf(p2, &r2, &e)) fail_msg("%s", e.msg);
    same(m, r2);
    /* an entry with no GGUF name: one line naming it, nothing written */
    dsq_imatrix *u;
    assert_int_equal(dsq_imatrix_create(&u, NULL), DSQ_OK);
    add_rows(u, "mtp.0.e_proj.weight", COLS, ROWS_X, 1.0f);
    char *p3 = dsq_test_join(dir, "u.gguf");
    assert_int_equal(dsq_imatrix_save_gguf(u, p3, NULL, &e), DSQ_ERR_UNSUPPORTED);
    assert_non_null(strstr(e.msg, "mtp.0.e_proj.weight"));
    assert_false(dsq_path_exists(p3));
    dsq_err_clear(&e);
    dsq_imatrix_free(u), dsq_imatrix_free(m), dsq_imatrix_free(r), dsq_imatrix_free(r2);
    dsq_test_rmdir(dir);
    free(dir), free(p), free(p2), free(p3);
}

/* ggml's own reader (gguf_init_from_file in libggml-base) opens what dsq writes and finds llama.cpp's
 * keys and the stacked expert tensor. */
#define GGML_BASE ".cache/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so"
struct gguf_init_params_ {
    bool no_alloc;
    void **ctx;
};
static void test_ggml_reads_it(void **state) {
    (void)state;
    void *h = dlopen(GGML_BASE, RTLD_NOW | RTLD_LOCAL);
    if (!h) fail_msg("cannot load %s (make test installs it): %s", GGML_BASE, dlerror());
    void *(*init)(const char *, struct gguf_init_params_) = (void *(*)(const char *, struct gguf_init_params_))dlsym(h, "gguf_init_from_file");
    int64_t (*find_key)(const void *, const char *) = (int64_t(*)(const void *, const char *))dlsym(h, "gguf_find_key");
    int64_t (*find_tensor)(const void *, const char *) = (int64_t(*)(const void *, const char *))dlsym(h, "gguf_find_tensor");
    int64_t (*n_tensors)(const void *) = (int64_t(*)(const void *))dlsym(h, "gguf_get_n_tensors");
    const char *(*val_str)(const void *, int64_t) = (const char *(*)(const void *, int64_t))dlsym(h, "gguf_get_val_str");
    uint32_t (*val_u32)(const void *, int64_t) = (uint32_t(*)(const void *, int64_t))dlsym(h, "gguf_get_val_u32");
    void (*gfree)(void *) = (void (*)(void *))dlsym(h, "gguf_free");
    assert_true(init && find_key && find_tensor && n_tensors && val_str && val_u32 && gfree);
    char *dir = dsq_test_tmpdir(), *p = dsq_test_join(dir, "im.gguf");
    dsq_imatrix *m = sample();
    dsq_imatrix_gguf_options o = {.n_experts = 4, .dataset = "calib.txt", .chunk_count = 5, .chunk_size = 512};
    assert_int_equal(dsq_imatrix_save_gguf(m, p, &o, NULL), DSQ_OK);
    void *g = init(p, (struct gguf_init_params_){.no_alloc = true, .ctx = NULL});
    assert_non_null(g);
    assert_int_equal(n_tensors(g), 14);
    assert_string_equal(val_str(g, find_key(g, "general.type")), "imatrix");
    assert_int_equal(val_u32(g, find_key(g, "imatrix.chunk_count")), 5);
    assert_int_equal(val_u32(g, find_key(g, "imatrix.chunk_size")), 512);
    assert_true(find_key(g, "imatrix.datasets") >= 0);
    assert_true(find_tensor(g, "blk.1.ffn_gate_exps.weight.in_sum2") >= 0);
    assert_true(find_tensor(g, "blk.1.ffn_gate_exps.weight.counts") >= 0);
    assert_true(find_tensor(g, "blk.0.attn_q_a.weight.in_sum2") >= 0);
    gfree(g);
    dlclose(h);
    dsq_imatrix_free(m);
    dsq_test_rmdir(dir);
    free(dir), free(p);
}

/* Malformed files, one class each, written with dsq's GGUF writer. */
typedef struct mt {
    const char *name;
    uint32_t type;
    uint64_t ne0, ne1;
    float fill;
} mt;
static void write_case(const char *path, const char *gtype, const mt *t, int nt) {
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, NULL), DSQ_OK);
    if (gtype) assert_int_equal(dsq_gguf_writer_kv_str(w, "general.type", gtype, NULL), DSQ_OK);
    for (int i = 0; i < nt; i++) {
        uint64_t ne[2] = {t[i].ne0, t[i].ne1};
        assert_int_equal(dsq_gguf_writer_tensor(w, t[i].name, t[i].type, 2, ne, NULL), DSQ_OK);
    }
    dsq_gguf_writer_options wo = {.overwrite = true};
    dsq_gguf_plan pl;
    assert_int_equal(dsq_gguf_writer_begin(w, path, &wo, &pl, NULL), DSQ_OK);
    for (int i = 0; i < nt; i++) {
        size_t n = (size_t)(t[i].ne0 * t[i].ne1);
        if (t[i].type == DSQ_GGMLT_F16) {
            uint16_t *h = calloc(n, 2);
            assert_int_equal(dsq_gguf_writer_write(w, h, n * 2, NULL), DSQ_OK);
            free(h);
            continue;
        }
        float *b = malloc(n * 4);
        for (size_t k = 0; k < n; k++) b[k] = t[i].fill;
        assert_int_equal(dsq_gguf_writer_write(w, b, n * 4, NULL), DSQ_OK);
        free(b);
    }
    assert_int_equal(dsq_gguf_writer_finish(w, NULL), DSQ_OK);
    dsq_gguf_writer_free(w);
}

static void test_malformed(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "bad.gguf");
    const uint32_t F = DSQ_GGMLT_F32;
    static const char S[] = "blk.0.attn_q_a.weight.in_sum2", C[] = "blk.0.attn_q_a.weight.counts";
    static const char XS[] = "blk.2.ffn_up_exps.weight.in_sum2", XC[] = "blk.2.ffn_up_exps.weight.counts";
    struct {
        const char *what, *gtype;
        mt t[3];
        int nt;
        dsq_status want;
    } cases[] = {
        {"valid", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, 4.0f}}, 2, DSQ_OK},
        {"valid experts", "imatrix", {{XS, F, 8, 3, 1.0f}, {XC, F, 1, 3, 4.0f}}, 2, DSQ_OK},
        {"no general.type", NULL, {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"a model, not an imatrix", "model", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"no tensors", "imatrix", {{S, F, 8, 1, 1.0f}}, 0, DSQ_ERR_FORMAT},
        {"missing counts", "imatrix", {{S, F, 8, 1, 1.0f}}, 1, DSQ_ERR_FORMAT},
        {"orphan counts", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, 4.0f}, {XC, F, 1, 3, 4.0f}}, 3, DSQ_ERR_FORMAT},
        {"orphan in_sum", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, 4.0f}, {"x.weight.in_sum", F, 8, 1, 0.0f}}, 3, DSQ_ERR_FORMAT},
        {"other tensor", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, 4.0f}, {"blk.0.attn_q_a.weight", F, 8, 1, 0.0f}}, 3,
         DSQ_ERR_FORMAT},
        {"F16 sums", "imatrix", {{S, DSQ_GGMLT_F16, 8, 1, 0.0f}, {C, F, 1, 1, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"counts of another n_mat", "imatrix", {{XS, F, 8, 3, 1.0f}, {XC, F, 1, 2, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"counts 2 wide", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 2, 1, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"fractional counts", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, 2.5f}}, 2, DSQ_ERR_FORMAT},
        {"negative counts", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, -1.0f}}, 2, DSQ_ERR_FORMAT},
        {"NaN counts", "imatrix", {{S, F, 8, 1, 1.0f}, {C, F, 1, 1, NAN}}, 2, DSQ_ERR_FORMAT},
        {"negative sum", "imatrix", {{S, F, 8, 1, -1.0f}, {C, F, 1, 1, 4.0f}}, 2, DSQ_ERR_NONFINITE},
        {"infinite sum", "imatrix", {{S, F, 8, 1, INFINITY}, {C, F, 1, 1, 4.0f}}, 2, DSQ_ERR_NONFINITE},
        {"unknown weight", "imatrix", {{"blk.0.attn_q.weight.in_sum2", F, 8, 1, 1.0f}, {"blk.0.attn_q.weight.counts", F, 1, 1, 4.0f}},
         2, DSQ_ERR_UNSUPPORTED},
        {"layer index past 7 digits", "imatrix",
         {{"blk.99999999999.attn_q_a.weight.in_sum2", F, 8, 1, 1.0f}, {"blk.99999999999.attn_q_a.weight.counts", F, 1, 1, 4.0f}}, 2,
         DSQ_ERR_UNSUPPORTED},
        {"signed layer index", "imatrix",
         {{"blk.-1.attn_q_a.weight.in_sum2", F, 8, 1, 1.0f}, {"blk.-1.attn_q_a.weight.counts", F, 1, 1, 4.0f}}, 2,
         DSQ_ERR_UNSUPPORTED},
        {"stack on a plain weight", "imatrix", {{S, F, 8, 2, 1.0f}, {C, F, 1, 2, 4.0f}}, 2, DSQ_ERR_SHAPE},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_case(path, cases[k].gtype, cases[k].t, cases[k].nt);
        dsq_imatrix *m = NULL;
        dsq_err e = DSQ_ERR_INIT;
        dsq_status st = dsq_imatrix_load_any(path, &m, &e);
        if (st != cases[k].want)
            fail_msg("%s: status %d (want %d): %s", cases[k].what, (int)st, (int)cases[k].want, e.msg);
        if (st == DSQ_OK) {
            assert_int_equal(dsq_imatrix_count(m), cases[k].t[0].ne1);
            assert_int_equal(dsq_imatrix_rows(m, 0), 4);
        } else {
            assert_null(m);
            assert_non_null(strstr(e.msg, path)); /* one line naming the file */
        }
        dsq_imatrix_free(m);
        dsq_err_clear(&e);
    }
    dsq_test_rmdir(dir);
    free(dir), free(path);
}

/* End to end: calibrate writes both formats from the same run; inspect reads the GGUF one; a k-quant
 * GGUF made with either imatrix is byte-identical in its tensor data. */
static void test_cli(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *ck = dsq_test_join(dir, "ck"), *out = NULL, *errs = NULL;
    if (dsq_test_run(NULL, &errs, "synth --config tests/gguf/v4-llama.json --out '%s' --tokenizer samples/tokenizer/tokenizer.json --threads 2",
                     ck))
        fail_msg("%s", errs);
    free(errs);
    if (dsq_test_run(NULL, &errs, "calibrate '%s' docs/architecture.md --out '%s/im.gguf' --ctx 128 --chunks 2 --threads 2", ck, dir))
        fail_msg("%s", errs);
    free(errs);
    if (dsq_test_run(NULL, &errs, "calibrate '%s' docs/architecture.md --out '%s/im.st' --format st --ctx 128 --chunks 2 --threads 2", ck,
                     dir))
        fail_msg("%s", errs);
    free(errs);
    if (dsq_test_run(&out, &errs, "inspect '%s/im.gguf' --json", dir)) fail_msg("%s", errs);
    assert_non_null(strstr(out, "\"weights\": 152"));
    free(out), free(errs);
    char *pg = dsq_test_join(dir, "im.gguf"), *ps = dsq_test_join(dir, "im.st");
    dsq_imatrix *a, *b;
    assert_int_equal(dsq_imatrix_load_any(pg, &a, NULL), DSQ_OK);
    assert_int_equal(dsq_imatrix_load_any(ps, &b, NULL), DSQ_OK);
    same(b, a);
    dsq_imatrix_free(a), dsq_imatrix_free(b);
    for (int k = 0; k < 2; k++) {
        if (dsq_test_run(NULL, &errs, "convert '%s' '%s/q%d.gguf' --recipe gguf-q4_k-moe --imatrix '%s'", ck, dir, k, k ? ps : pg))
            fail_msg("%s", errs);
        free(errs);
    }
    char *q0 = dsq_test_join(dir, "q0.gguf"), *q1 = dsq_test_join(dir, "q1.gguf");
    dsq_gguf *g0, *g1;
    assert_int_equal(dsq_gguf_open(q0, &g0, NULL), DSQ_OK);
    assert_int_equal(dsq_gguf_open(q1, &g1, NULL), DSQ_OK);
    assert_int_equal(dsq_gguf_n_tensors(g0), dsq_gguf_n_tensors(g1));
    for (size_t i = 0; i < dsq_gguf_n_tensors(g0); i++) {
        const dsq_gguf_tensor *t0 = dsq_gguf_tensor_at(g0, i), *t1 = dsq_gguf_tensor_at(g1, i);
        assert_int_equal(t0->n_bytes, t1->n_bytes);
        if (memcmp(t0->data, t1->data, t0->n_bytes)) fail_msg("%s differs", t0->name);
    }
    dsq_gguf_close(g0), dsq_gguf_close(g1);
    dsq_test_rmdir(dir);
    free(dir), free(ck), free(pg), free(ps), free(q0), free(q1);
}

/* The fuzz seed (tests/fuzz/corpus/imatrix_gguf/seed-imatrix.gguf): what the writer makes for a
 * small imatrix, pinned byte for byte (DSQ_WRITE_SEEDS=1 rewrites it); then the fuzz target over
 * every seed and deterministic mutations of each (bytes set, u64 fields blown up, truncations). */
static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static void test_fuzz_seed_replay(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *p = dsq_test_join(dir, "seed.gguf");
    dsq_imatrix *m;
    assert_int_equal(dsq_imatrix_create(&m, NULL), DSQ_OK);
    add_rows(m, "layers.0.attn.wq_a.weight", 32, ROWS_X, 1.0f);
    add_rows(m, "layers.0.ffn.experts.0.w3.weight", 32, ROWS_X, 2.0f);
    add_rows(m, "layers.0.ffn.experts.2.w3.weight", 32, 5, 3.0f);
    dsq_imatrix_gguf_options o = {.n_experts = 3, .dataset = "seed", .chunk_count = 1, .chunk_size = 32};
    assert_int_equal(dsq_imatrix_save_gguf(m, p, &o, NULL), DSQ_OK);
    dsq_imatrix_free(m);
    const char *want = "tests/fuzz/corpus/imatrix_gguf/seed-imatrix.gguf";
    size_t n, w;
    char *a = dsq_test_read(p, &n);
    if (getenv("DSQ_WRITE_SEEDS")) dsq_test_write(want, a, n);
    char *b = dsq_test_read(want, &w);
    if (n != w || memcmp(a, b, n)) fail_msg("%s differs from what the writer makes (DSQ_WRITE_SEEDS=1 rewrites it)", want);
    dsq_imatrix *r = NULL;
    assert_int_equal(dsq_imatrix_parse_gguf(a, n, "seed", &r, NULL), DSQ_OK); /* the seed is valid */
    assert_int_equal(dsq_imatrix_count(r), 3);
    dsq_imatrix_free(r);
    free(a), free(b);
    DIR *d = opendir("tests/fuzz/corpus/imatrix_gguf");
    assert_non_null(d);
    int seeds = 0, rounds = dsq_test_asan() ? 400 : 3000;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char *sp = dsq_test_join("tests/fuzz/corpus/imatrix_gguf", de->d_name);
        size_t sn;
        uint8_t *sb = (uint8_t *)dsq_test_read(sp, &sn), *mb = malloc(sn + 1);
        assert_int_equal(dsq_fuzz_imatrix_gguf(sb, sn), 0);
        for (int k = 0; k < rounds; k++) {
            memcpy(mb, sb, sn);
            size_t len = sn, at = (size_t)(rng() % sn);
            switch (rng() % 6) {
            case 0: mb[at] = (uint8_t)rng(); break;
            case 1: mb[at] = 0; break;
            case 2: mb[at] = 0xff; break;
            case 3: if (at + 8 <= sn) dsq_put_u64le(mb + at, rng() >> (rng() % 64)); break;
            case 4: len = at; break;
            case 5: for (int j = 0; j < 4; j++) mb[rng() % sn] = (uint8_t)rng(); break;
            }
            assert_int_equal(dsq_fuzz_imatrix_gguf(mb, len), 0);
        }
        free(sb), free(mb), free(sp);
        seeds++;
    }
    closedir(d);
    assert_true(seeds >= 1);
    dsq_test_rmdir(dir);
    free(dir), free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_ggml_reads_it),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_fuzz_seed_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
