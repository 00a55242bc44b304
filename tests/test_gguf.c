/* GGUF reader and writer (lib/format/gguf.c): write → read round trips (one file and split sets),
 * and a named list of malformation classes, each expected to fail with a specific status. */
#include <dirent.h>
#include <malloc.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_fuzz.h"
#include "dsq_gguf.h"
#include "dsq_numeric.h"
#include "dsq_wsrc.h"
#include "dsq_test.h"

/* A small file: a few kv of each kind, an F32 [3,32] matrix, a Q8_0 [2,64] and an I32 vector. */
static void build(dsq_gguf_writer *w) {
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_gguf_writer_kv_str(w, "general.architecture", "deepseek4", &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_u32(w, "deepseek4.block_count", 3, &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_f32(w, "deepseek4.rope.freq_base", 10000.0f, &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_bool(w, "deepseek4.expert_weights_norm", true, &e), 0);
    int32_t ratios[3] = {0, 4, 128};
    assert_int_equal(dsq_gguf_writer_kv_arr(w, "deepseek4.attention.compress_ratios", DSQ_GGUF_V_I32, ratios, 3, &e), 0);
    const char *toks[3] = {"a", "", "xyz"};
    uint64_t lens[3] = {1, 0, 3};
    assert_int_equal(dsq_gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", toks, lens, 3, &e), 0);
    uint64_t ne0[2] = {32, 3}, ne1[2] = {64, 2}, ne2[1] = {5};
    assert_int_equal(dsq_gguf_writer_tensor(w, "a.weight", DSQ_GGML_F32, 2, ne0, &e), 0);
    assert_int_equal(dsq_gguf_writer_tensor(w, "b.weight", DSQ_GGML_Q8_0, 2, ne1, &e), 0);
    assert_int_equal(dsq_gguf_writer_tensor(w, "c", DSQ_GGML_I32, 1, ne2, &e), 0);
    dsq_err_clear(&e);
}

static void fill(uint8_t *b, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 5));
}

/* Write the three tensors (a in two pieces) and finish. */
static void write_all(dsq_gguf_writer *w) {
    dsq_err e = DSQ_ERR_INIT;
    uint8_t a[384], b[136], c[20];
    fill(a, sizeof a, 1), fill(b, sizeof b, 2), fill(c, sizeof c, 3);
    assert_int_equal(dsq_gguf_writer_write(w, a, 100, &e), 0);
    assert_int_equal(dsq_gguf_writer_write(w, a + 100, 284, &e), 0);
    assert_int_equal(dsq_gguf_writer_write(w, b, sizeof b, &e), 0);
    assert_int_equal(dsq_gguf_writer_write(w, c, sizeof c, &e), 0);
    assert_int_equal(dsq_gguf_writer_finish(w, &e), 0);
    dsq_err_clear(&e);
}

static void check_tensors(dsq_gguf **set, uint32_t n) {
    const char *names[3] = {"a.weight", "b.weight", "c"};
    size_t sizes[3] = {384, 136, 20};
    for (int k = 0; k < 3; k++) {
        const dsq_gguf_tensor *t = NULL;
        for (uint32_t i = 0; i < n && !t; i++) t = dsq_gguf_find_tensor(set[i], names[k]);
        assert_non_null(t);
        assert_int_equal(t->n_bytes, sizes[k]);
        uint8_t ref[384];
        fill(ref, sizes[k], (unsigned)k + 1);
        assert_memory_equal(t->data, ref, sizes[k]);
    }
}

static void test_round_trip(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "m.gguf");
    dsq_err e = DSQ_ERR_INIT;
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    dsq_gguf_plan p;
    assert_int_equal(dsq_gguf_writer_begin(w, path, NULL, &p, &e), 0);
    assert_int_equal(p.n_files, 1);
    assert_int_equal(p.tensor_bytes, 384 + 136 + 20);
    write_all(w);
    dsq_gguf_writer_free(w);

    dsq_gguf *g;
    assert_int_equal(dsq_gguf_open(path, &g, &e), 0);
    assert_int_equal(dsq_gguf_file_size(g), p.total_bytes);
    assert_int_equal(dsq_gguf_n_kv(g), 6);
    assert_int_equal(dsq_gguf_n_tensors(g), 3);
    char *arch = dsq_gguf_get_str(g, "general.architecture");
    assert_string_equal(arch, "deepseek4");
    dsq_free(arch);
    uint64_t u;
    double f;
    assert_true(dsq_gguf_get_u64(g, "deepseek4.block_count", &u));
    assert_int_equal(u, 3);
    assert_true(dsq_gguf_get_f64(g, "deepseek4.rope.freq_base", &f));
    assert_true(f == 10000.0);
    const dsq_gguf_kv *kv = dsq_gguf_find_kv(g, "deepseek4.attention.compress_ratios");
    assert_non_null(kv);
    assert_int_equal(kv->n, 3);
    assert_true(dsq_gguf_kv_arr_u64(kv, 2, &u));
    assert_int_equal(u, 128);
    kv = dsq_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const char *s;
    uint64_t len;
    assert_true(dsq_gguf_kv_arr_str(g, kv, 2, &s, &len));
    assert_int_equal(len, 3);
    assert_memory_equal(s, "xyz", 3);
    assert_true(dsq_gguf_kv_arr_str(g, kv, 1, &s, &len));
    assert_int_equal(len, 0);
    for (size_t i = 0; i < 3; i++) assert_int_equal(dsq_gguf_tensor_at(g, i)->offset % DSQ_GGUF_DEFAULT_ALIGN, 0);
    check_tensors(&g, 1);
    dsq_gguf_close(g);

    /* the output exists: a second writer without overwrite refuses and leaves it intact */
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    assert_int_equal(dsq_gguf_writer_begin(w, path, NULL, NULL, &e), DSQ_ERR_EXISTS);
    dsq_gguf_writer_free(w);
    dsq_err_clear(&e);
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
}

static void test_split(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "m.gguf");
    dsq_err e = DSQ_ERR_INIT;
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    dsq_gguf_writer_options o = {.split_max_bytes = 1}; /* every tensor in its own file */
    dsq_gguf_plan p;
    assert_int_equal(dsq_gguf_writer_begin(w, path, &o, &p, &e), 0);
    assert_int_equal(p.n_files, 3);
    write_all(w);
    dsq_gguf_writer_free(w);
    assert_false(dsq_path_exists(path)); /* only the -0000N-of-00003 names */
    char *first = dsq_gguf_split_path(path, 1, 3), *third = dsq_gguf_split_path(path, 3, 3);
    assert_true(strstr(first, "m-00001-of-00003.gguf") != NULL);
    dsq_gguf **set;
    uint32_t n;
    assert_int_equal(dsq_gguf_open_set(first, &set, &n, &e), 0);
    assert_int_equal(n, 3);
    uint64_t u;
    assert_true(dsq_gguf_get_u64(set[2], "split.no", &u));
    assert_int_equal(u, 2);
    assert_true(dsq_gguf_get_u64(set[1], "split.tensors.count", &u));
    assert_int_equal(u, 3);
    assert_null(dsq_gguf_find_kv(set[1], "general.architecture"));
    check_tensors(set, n);
    dsq_gguf_close_set(set, n);
    /* a missing member fails the whole set with the file's name */
    assert_int_equal(remove(third), 0);
    assert_int_not_equal(dsq_gguf_open_set(first, &set, &n, &e), 0);
    assert_non_null(strstr(e.msg, "00003-of-00003"));
    dsq_free(first);
    dsq_free(third);
    /* a size that fits two tensors per file */
    dsq_err_clear(&e);
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    assert_int_equal(dsq_gguf_writer_plan(w, NULL, &p, &e), 0);
    assert_int_equal(p.n_files, 1);
    o.split_max_bytes = p.total_bytes - 1;
    assert_int_equal(dsq_gguf_writer_plan(w, &o, &p, &e), 0);
    assert_int_equal(p.n_files, 2);
    dsq_gguf_writer_free(w);
    dsq_err_clear(&e);
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
}

/* ---- malformation classes ---------------------------------------------------------------------- */
static uint8_t *image(size_t *n) {
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "m.gguf");
    dsq_err e = DSQ_ERR_INIT;
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    assert_int_equal(dsq_gguf_writer_begin(w, path, NULL, NULL, &e), 0);
    write_all(w);
    dsq_gguf_writer_free(w);
    uint8_t *b = (uint8_t *)dsq_test_read(path, n);
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
    return b;
}

/* Byte offset of the first occurrence of a string in the image. */
static size_t find(const uint8_t *b, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(b + i, s, k)) return i;
    fail_msg("'%s' not in image", s);
    return 0;
}

static void expect(const uint8_t *b, size_t n, dsq_status want, const char *what) {
    dsq_gguf *g = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_status st = dsq_gguf_parse(b, n, what, &g, &e);
    if (st != want) fail_msg("%s: status %d (%s), want %d", what, st, e.msg, want);
    assert_null(g);
    assert_non_null(strstr(e.msg, what));
    dsq_err_clear(&e);
}

static void test_malformed(void **state) {
    (void)state;
    size_t n;
    uint8_t *ok = image(&n), *b = malloc(n + 64);
    dsq_gguf *g;
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_gguf_parse(ok, n, "ok", &g, &e), 0);
    dsq_gguf_close(g);
    size_t k_arch = find(ok, n, "general.architecture") - 8;       /* key length field */
    size_t t_a = find(ok, n, "a.weight") - 8;                      /* first tensor info */
    size_t t_b = find(ok, n, "b.weight") - 8;
    size_t a_type = t_a + 8 + 8 + 4 + 16, a_off = a_type + 4;       /* 2 dims */
    size_t b_ne0 = t_b + 8 + 8 + 4, b_off = b_ne0 + 16 + 4;
    size_t arr = find(ok, n, "deepseek4.attention.compress_ratios") + 35 + 4; /* element type */
    size_t toks = find(ok, n, "tokenizer.ggml.tokens") + 21;

#define MUT(stmt, want, label)                                                                     \
    do {                                                                                           \
        memcpy(b, ok, n);                                                                          \
        size_t len = n;                                                                            \
        stmt;                                                                                      \
        (void)len;                                                                                 \
        expect(b, len, want, label);                                                               \
    } while (0)
    MUT(len = 20, DSQ_ERR_TRUNCATED, "short-header");
    MUT(b[0] = 'X', DSQ_ERR_MAGIC, "bad-magic");
    MUT(dsq_put_u32le(b + 4, 2), DSQ_ERR_VERSION, "version-2");
    MUT(dsq_put_u64le(b + 8, DSQ_GGUF_MAX_TENSORS + 1ull), DSQ_ERR_RANGE, "tensor-count-limit");
    MUT(dsq_put_u64le(b + 16, DSQ_GGUF_MAX_KV + 1ull), DSQ_ERR_RANGE, "kv-count-limit");
    MUT(dsq_put_u64le(b + 8, 40000), DSQ_ERR_TRUNCATED, "counts-past-file");
    MUT(dsq_put_u64le(b + k_arch, UINT64_MAX - 3), DSQ_ERR_TRUNCATED, "key-length-wraps");
    MUT(dsq_put_u64le(b + k_arch, 0), DSQ_ERR_FORMAT, "empty-key");
    MUT(memcpy(b + find(ok, n, "deepseek4.block_count"), "tokenizer.ggml.tokens", 21), DSQ_ERR_DUPLICATE,
        "duplicate-key");
    MUT(dsq_put_u32le(b + arr, 77), DSQ_ERR_DTYPE, "unknown-array-type");
    MUT(dsq_put_u32le(b + arr, DSQ_GGUF_V_ARRAY), DSQ_ERR_FORMAT, "nested-array");
    MUT(dsq_put_u64le(b + arr + 4, (1ull << 62)), DSQ_ERR_RANGE, "array-count-limit");
    MUT(dsq_put_u64le(b + arr + 4, (1ull << 29)), DSQ_ERR_TRUNCATED, "array-past-end");
    MUT(dsq_put_u64le(b + toks + 4 + 4, (1ull << 29)), DSQ_ERR_TRUNCATED, "string-array-past-end");
    MUT(dsq_put_u64le(b + toks + 4 + 4 + 8, UINT64_MAX), DSQ_ERR_TRUNCATED, "string-length-wraps");
    MUT(dsq_put_u64le(b + t_a, 64), DSQ_ERR_RANGE, "name-too-long");
    MUT(memcpy(b + t_b + 8, "a.weight", 8), DSQ_ERR_DUPLICATE, "duplicate-tensor");
    MUT(dsq_put_u32le(b + t_a + 16, 5), DSQ_ERR_SHAPE, "too-many-dims");
    MUT(dsq_put_u32le(b + t_a + 16, 0), DSQ_ERR_SHAPE, "zero-dims");
    MUT(dsq_put_u32le(b + a_type, 4), DSQ_ERR_DTYPE, "removed-type");
    MUT(dsq_put_u32le(b + a_type, 99), DSQ_ERR_DTYPE, "unknown-type");
    MUT(dsq_put_u64le(b + b_ne0, 48), DSQ_ERR_SHAPE, "ne0-not-block-multiple");
    MUT(dsq_put_u64le(b + b_ne0, 1ull << 63), DSQ_ERR_SHAPE, "negative-ne");
    MUT(dsq_put_u64le(b + b_ne0 + 8, 1ull << 61), DSQ_ERR_OVERFLOW, "size-overflows");
    MUT(dsq_put_u64le(b + b_ne0 + 8, 1ull << 30), DSQ_ERR_TRUNCATED, "data-past-end");
    MUT(dsq_put_u64le(b + a_off, 3), DSQ_ERR_RANGE, "misaligned-offset");
    MUT(dsq_put_u64le(b + a_off, UINT64_MAX - 31), DSQ_ERR_TRUNCATED, "offset-wraps");
    MUT(dsq_put_u64le(b + b_off, 32), DSQ_ERR_OVERLAP, "overlap");
    MUT(len = n - 1, DSQ_ERR_TRUNCATED, "truncated-data");
    MUT(dsq_put_u32le(b + k_arch + 8 + 20, DSQ_GGUF_V_COUNT), DSQ_ERR_DTYPE, "kv-value-type");
    MUT(dsq_put_u32le(b + k_arch + 8 + 20, DSQ_GGUF_V_BOOL), DSQ_ERR_FORMAT, "bool-not-0-or-1");
#undef MUT
    /* alignment: not a power of two, zero, and above the bound */
    {
        char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "a.gguf");
        dsq_gguf_writer *w;
        assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
        assert_int_equal(dsq_gguf_writer_kv_u32(w, "general.alignment", 64, &e), 0);
        assert_int_equal(dsq_gguf_writer_kv_u32(w, "x", 0, &e), 0);
        assert_int_equal(dsq_gguf_writer_begin(w, path, NULL, NULL, &e), 0);
        assert_int_equal(dsq_gguf_writer_finish(w, &e), 0);
        dsq_gguf_writer_free(w);
        size_t an;
        uint8_t *a = (uint8_t *)dsq_test_read(path, &an);
        size_t at = find(a, an, "general.alignment") + 17 + 4;
        assert_int_equal(dsq_gguf_parse(a, an, "align-ok", &g, &e), 0);
        assert_int_equal(dsq_gguf_alignment(g), 64);
        dsq_gguf_close(g);
        uint32_t bad[3] = {0, 48, 1u << 21};
        for (int i = 0; i < 3; i++) {
            dsq_put_u32le(a + at, bad[i]);
            expect(a, an, DSQ_ERR_RANGE, "alignment");
        }
        free(a);
        free(path);
        dsq_test_rmdir(dir);
        free(dir);
    }
    /* the writer refuses what the reader refuses */
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    uint64_t ne[2] = {48, 2};
    assert_int_equal(dsq_gguf_writer_tensor(w, "q", DSQ_GGML_Q8_0, 2, ne, &e), DSQ_ERR_SHAPE);
    assert_int_equal(dsq_gguf_writer_kv_u32(w, "k", 1, &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_u32(w, "k", 2, &e), DSQ_ERR_DUPLICATE);
    assert_int_equal(dsq_gguf_writer_kv_u32(w, "general.alignment", 3, &e), DSQ_ERR_RANGE);
    char longname[80];
    memset(longname, 'n', 64);
    longname[64] = 0;
    assert_int_equal(dsq_gguf_writer_tensor(w, longname, DSQ_GGML_F32, 1, ne, &e), DSQ_ERR_ARG);
    dsq_gguf_writer_free(w);
    dsq_err_clear(&e);
    free(ok);
    free(b);
}

/* An unfinished writer (error mid-way) leaves no file behind, neither final nor partial. */
static void test_abort_leaves_nothing(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "m.gguf");
    dsq_err e = DSQ_ERR_INIT;
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    dsq_gguf_writer_options o = {.split_max_bytes = 1};
    assert_int_equal(dsq_gguf_writer_begin(w, path, &o, NULL, &e), 0);
    uint8_t a[384] = {0};
    assert_int_equal(dsq_gguf_writer_write(w, a, sizeof a, &e), 0);
    assert_int_equal(dsq_gguf_writer_finish(w, &e), DSQ_ERR_STATE); /* b and c missing */
    assert_non_null(strstr(e.msg, "b.weight"));
    dsq_gguf_writer_free(w);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int files = 0;
    for (struct dirent *de; (de = readdir(d));) files += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    assert_int_equal(files, 0);
    dsq_err_clear(&e);
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
}

/* Opening a file allocates for its header, not for its size: a 2 GiB (sparse) file whose data section
 * is mostly trailing bytes costs well under 1 MiB of heap while open.  (The names arena was once
 * sized by the file.) */
static void test_heap_not_file_sized(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "big.gguf");
    dsq_err e = DSQ_ERR_INIT;
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    assert_int_equal(dsq_gguf_writer_begin(w, path, NULL, NULL, &e), 0);
    write_all(w);
    dsq_gguf_writer_free(w);
    assert_int_equal(truncate(path, (off_t)2 << 30), 0);
    struct mallinfo2 before = mallinfo2();
    dsq_gguf *g;
    assert_int_equal(dsq_gguf_open(path, &g, &e), 0);
    struct mallinfo2 during = mallinfo2();
    size_t heap = (during.uordblks + during.hblkhd) - (before.uordblks + before.hblkhd);
    dsq_gguf_close(g);
    if (heap > (1u << 20)) fail_msg("open took %zu bytes of heap for a 2 GiB file", heap);
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
}

/* ---- fuzz seeds: tests/fuzz/corpus/gguf/ --------------------------------------------------------
 * Small GGUFs made by the writer: seed-basic (the file above), seed-deepseek4 (deepseek4 hparams of
 * a tiny geometry, a short tokenizer, one tensor of each type dsq reads) and seed-split-2 (the
 * second file of a split set).  The committed seeds must equal what the writer makes today (the
 * byte layout is pinned); DSQ_WRITE_SEEDS=1 rewrites them. */
static void seed_deepseek4(dsq_gguf_writer *w) {
    dsq_err e = DSQ_ERR_INIT;
    static const struct { const char *k; uint32_t v; } U[] = {
        {"deepseek4.vocab_size", 16}, {"deepseek4.context_length", 64}, {"deepseek4.embedding_length", 256},
        {"deepseek4.block_count", 2}, {"deepseek4.nextn_predict_layers", 1}, {"deepseek4.expert_feed_forward_length", 128},
        {"deepseek4.expert_count", 2}, {"deepseek4.expert_used_count", 1}, {"deepseek4.expert_shared_count", 1},
        {"deepseek4.expert_gating_func", 4}, {"deepseek4.hash_layer_count", 1}, {"deepseek4.attention.head_count", 4},
        {"deepseek4.attention.head_count_kv", 1}, {"deepseek4.attention.key_length", 128},
        {"deepseek4.attention.q_lora_rank", 128}, {"deepseek4.attention.output_lora_rank", 128},
        {"deepseek4.attention.output_group_count", 2}, {"deepseek4.attention.sliding_window", 8},
        {"deepseek4.attention.indexer.head_count", 2}, {"deepseek4.attention.indexer.key_length", 64},
        {"deepseek4.attention.indexer.top_k", 4}, {"deepseek4.rope.dimension_count", 64},
        {"deepseek4.hyper_connection.count", 2}, {"deepseek4.hyper_connection.sinkhorn_iterations", 3},
        {"tokenizer.ggml.bos_token_id", 0}, {"tokenizer.ggml.eos_token_id", 1},
        {"deepseek4.rope.scaling.original_context_length", 16},
    };
    assert_int_equal(dsq_gguf_writer_kv_str(w, "general.architecture", "deepseek4", &e), 0);
    for (size_t i = 0; i < sizeof U / sizeof U[0]; i++) assert_int_equal(dsq_gguf_writer_kv_u32(w, U[i].k, U[i].v, &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_f32(w, "deepseek4.expert_weights_scale", 1.5f, &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_f32(w, "deepseek4.attention.layer_norm_rms_epsilon", 1e-6f, &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_str(w, "deepseek4.rope.scaling.type", "yarn", &e), 0);
    assert_int_equal(dsq_gguf_writer_kv_f32(w, "deepseek4.rope.scaling.factor", 4.0f, &e), 0);
    int32_t ratios[2] = {4, 0};
    assert_int_equal(dsq_gguf_writer_kv_arr(w, "deepseek4.attention.compress_ratios", DSQ_GGUF_V_I32, ratios, 2, &e), 0);
    const char *toks[4] = {"<s>", "</s>", "a", "b"};
    uint64_t lens[4] = {3, 4, 1, 1};
    assert_int_equal(dsq_gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", toks, lens, 4, &e), 0);
    const char *merges[1] = {"a b"};
    uint64_t ml[1] = {3};
    assert_int_equal(dsq_gguf_writer_kv_arr_str(w, "tokenizer.ggml.merges", merges, ml, 1, &e), 0);
    static const struct { const char *name; uint32_t type; int nd; uint64_t ne[3]; } T[] = {
        {"blk.0.attn_norm.weight", DSQ_GGML_F32, 1, {32, 1, 1}},     {"blk.0.attn_q_a.weight", DSQ_GGML_Q8_0, 2, {32, 2, 1}},
        {"blk.0.ffn_gate_exps.weight", DSQ_GGML_MXFP4, 3, {32, 2, 2}}, {"token_embd.weight", DSQ_GGML_Q4_0, 2, {32, 2, 1}},
        {"output.weight", DSQ_GGML_BF16, 2, {8, 2, 1}},              {"blk.0.ffn_gate_tid2eid.weight", DSQ_GGML_I32, 2, {1, 16, 1}},
        {"blk.1.nextn.eh_proj.weight", DSQ_GGML_F16, 2, {8, 2, 1}},
    };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        assert_int_equal(dsq_gguf_writer_tensor(w, T[i].name, T[i].type, T[i].nd, T[i].ne, &e), 0);
    dsq_err_clear(&e);
}

static void seed_deepseek4_data(dsq_gguf_writer *w) {
    dsq_err e = DSQ_ERR_INIT;
    uint8_t b[512];
    float one = 1.0f;
    for (int i = 0; i < 32; i++) memcpy(b + 4 * i, &one, 4);
    assert_int_equal(dsq_gguf_writer_write(w, b, 128, &e), 0);           /* F32 norm */
    for (int r = 0; r < 2; r++) {                                          /* Q8_0: d = 1/64, q = i - 16 */
        uint16_t d = dsq_f16_from_f32(1.0f / 64);
        memcpy(b + 34 * r, &d, 2);
        for (int i = 0; i < 32; i++) b[34 * r + 2 + i] = (uint8_t)(int8_t)(i - 16);
    }
    assert_int_equal(dsq_gguf_writer_write(w, b, 68, &e), 0);
    for (int k = 0; k < 4; k++) {                                          /* MXFP4: e = 126, all codes */
        b[17 * k] = 126;
        for (int j = 0; j < 16; j++) b[17 * k + 1 + j] = (uint8_t)(j | (15 - j) << 4);
    }
    assert_int_equal(dsq_gguf_writer_write(w, b, 68, &e), 0);
    for (int r = 0; r < 2; r++) {                                          /* Q4_0: d = 1/8 */
        uint16_t d = dsq_f16_from_f32(0.125f);
        memcpy(b + 18 * r, &d, 2);
        for (int j = 0; j < 16; j++) b[18 * r + 2 + j] = (uint8_t)(j | (15 - j) << 4);
    }
    assert_int_equal(dsq_gguf_writer_write(w, b, 36, &e), 0);
    for (int i = 0; i < 16; i++) {                                         /* BF16 */
        uint16_t h = dsq_bf16_from_f32((float)(i - 8) / 8);
        memcpy(b + 2 * i, &h, 2);
    }
    assert_int_equal(dsq_gguf_writer_write(w, b, 32, &e), 0);
    for (int i = 0; i < 16; i++) {                                         /* I32 tid2eid */
        int32_t v = i % 2;
        memcpy(b + 4 * i, &v, 4);
    }
    assert_int_equal(dsq_gguf_writer_write(w, b, 64, &e), 0);
    for (int i = 0; i < 16; i++) {                                         /* F16 */
        uint16_t h = dsq_f16_from_f32((float)i / 16);
        memcpy(b + 2 * i, &h, 2);
    }
    assert_int_equal(dsq_gguf_writer_write(w, b, 32, &e), 0);
    assert_int_equal(dsq_gguf_writer_finish(w, &e), 0);
    dsq_err_clear(&e);
}

static void check_seed(const char *made, const char *name) {
    char *want = dsq_test_join("tests/fuzz/corpus/gguf", name);
    size_t n, m;
    char *a = dsq_test_read(made, &n);
    if (getenv("DSQ_WRITE_SEEDS")) dsq_test_write(want, a, n);
    char *b = dsq_test_read(want, &m);
    if (n != m || memcmp(a, b, n)) fail_msg("%s differs from what the writer makes (DSQ_WRITE_SEEDS=1 rewrites it)", want);
    free(a), free(b), free(want);
}

static void test_fuzz_seeds(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *p1 = dsq_test_join(dir, "basic.gguf"), *p2 = dsq_test_join(dir, "d4.gguf");
    dsq_err e = DSQ_ERR_INIT;
    dsq_gguf_writer *w;
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    assert_int_equal(dsq_gguf_writer_begin(w, p1, NULL, NULL, &e), 0);
    write_all(w);
    dsq_gguf_writer_free(w);
    check_seed(p1, "seed-basic.gguf");
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    seed_deepseek4(w);
    assert_int_equal(dsq_gguf_writer_begin(w, p2, NULL, NULL, &e), 0);
    seed_deepseek4_data(w);
    dsq_gguf_writer_free(w);
    check_seed(p2, "seed-deepseek4.gguf");
    /* the seed's hparams make a config the weight source accepts */
    dsq_gguf *g;
    assert_int_equal(dsq_gguf_open(p2, &g, &e), 0);
    dsq_v4_config c;
    if (dsq_gguf_v4_config(g, &c, &e)) fail_msg("%s", e.msg);
    assert_int_equal(c.n_layers, 1);
    assert_int_equal(c.n_mtp_layers, 1);
    dsq_gguf_close(g);
    assert_int_equal(dsq_gguf_writer_create(&w, &e), 0);
    build(w);
    dsq_gguf_writer_options o = {.split_max_bytes = 1};
    char *p3 = dsq_test_join(dir, "s.gguf");
    assert_int_equal(dsq_gguf_writer_begin(w, p3, &o, NULL, &e), 0);
    write_all(w);
    dsq_gguf_writer_free(w);
    char *second = dsq_gguf_split_path(p3, 2, 3);
    check_seed(second, "seed-split-2.gguf");
    dsq_free(second);
    free(p3);
    free(p1), free(p2);
    dsq_err_clear(&e);
    dsq_test_rmdir(dir);
    free(dir);
}

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The fuzz target over every seed and deterministic mutations of each (bytes set to 0/0xff/random,
 * u64 fields blown up, truncations): no crash, no sanitizer report, no inconsistency. */
static void test_fuzz_replay(void **state) {
    (void)state;
    DIR *d = opendir("tests/fuzz/corpus/gguf");
    assert_non_null(d);
    int seeds = 0, rounds = dsq_test_asan() ? 400 : 3000;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char *p = dsq_test_join("tests/fuzz/corpus/gguf", de->d_name);
        size_t n;
        uint8_t *b = (uint8_t *)dsq_test_read(p, &n), *m = malloc(n + 1);
        assert_int_equal(dsq_fuzz_gguf(b, n), 0);
        for (int r = 0; r < rounds; r++) {
            memcpy(m, b, n);
            size_t len = n, at = (size_t)(rng() % n);
            switch (rng() % 6) {
            case 0: m[at] = (uint8_t)rng(); break;
            case 1: m[at] = 0; break;
            case 2: m[at] = 0xff; break;
            case 3: if (at + 8 <= n) dsq_put_u64le(m + at, rng() >> (rng() % 64)); break;
            case 4: len = at; break;
            case 5: for (int k = 0; k < 4; k++) m[rng() % n] = (uint8_t)rng(); break;
            }
            assert_int_equal(dsq_fuzz_gguf(m, len), 0);
        }
        free(b), free(m), free(p);
        seeds++;
    }
    closedir(d);
    assert_true(seeds >= 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_heap_not_file_sized),
        cmocka_unit_test(test_fuzz_seeds),
        cmocka_unit_test(test_fuzz_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
