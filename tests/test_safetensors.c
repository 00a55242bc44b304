/* safetensors reader/writer: the golden model, round trips, and one test per malformation class
 * (each expected to fail with a specific status, never crash). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_safetensors.h"
#include "dsq_test.h"



static void test_golden_model(void **state) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model");
    dsq_st *st = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_open(p, NULL, &st, &err), DSQ_OK);
    /* The golden README says 428 tensors; the file's header has 428 keys of which one is
     * __metadata__, so 427 tensors (the vectors win over the prose). */
    assert_int_equal(dsq_st_count(st), 427);
    assert_string_equal(dsq_st_metadata(st, "format"), "pt");
    assert_int_equal(dsq_st_shard_count(st), 1);
    const dsq_st_tensor *t = dsq_st_find(st, "layers.1.attn.wq_a.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, DSQ_DTYPE_F8_E4M3);
    assert_int_equal(t->rank, 2);
    assert_int_equal(t->shape[0], 128);
    assert_int_equal(t->shape[1], 256);
    assert_non_null(t->data);
    t = dsq_st_find(st, "layers.0.ffn.gate.tid2eid");
    assert_non_null(t);
    assert_int_equal(t->dtype, DSQ_DTYPE_I64);
    assert_null(dsq_st_find(st, "layers.0.nope"));
    /* total bytes = file size - header */
    uint64_t sum = 0;
    for (size_t i = 0; i < dsq_st_count(st); i++) sum += dsq_st_at(st, i)->n_bytes;
    assert_int_equal(sum, dsq_st_total_bytes(st));
    /* ordered by offset, contiguous */
    for (size_t i = 1; i < dsq_st_count(st); i++)
        assert_int_equal(dsq_st_at(st, i)->file_offset, dsq_st_at(st, i - 1)->file_offset + dsq_st_at(st, i - 1)->n_bytes);

    /* pread mode gives the same bytes */
    dsq_st *st2 = NULL;
    dsq_st_options o = {.no_mmap = true};
    assert_int_equal(dsq_st_open(p, &o, &st2, &err), DSQ_OK);
    const dsq_st_tensor *t2 = dsq_st_find(st2, "layers.0.ffn.gate.tid2eid");
    assert_null(t2->data);
    uint8_t *buf = malloc(t2->n_bytes);
    assert_int_equal(dsq_st_read(st2, t2, 0, buf, t2->n_bytes, &err), DSQ_OK);
    assert_memory_equal(buf, t->data, t->n_bytes);
    assert_int_equal(dsq_st_read(st2, t2, 8, buf, t2->n_bytes, &err), DSQ_ERR_RANGE);
    free(buf);
    dsq_st_close(st2);
    dsq_st_close(st);
    dsq_err_clear(&err);
    free(p);
}

/* Open `path`; expect failure with `status` and a message mentioning `needle`. */
static void expect_fail(const char *path, dsq_status status, const char *needle) {
    dsq_st *st = (dsq_st *)0x1;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_st_open(path, NULL, &st, &err);
    if (s != status || !strstr(err.msg, needle)) fprintf(stderr, "got %d (%s): %s\n", s, dsq_status_str(s), err.msg);
    assert_int_equal(s, status);
    assert_null(st);
    assert_non_null(strstr(err.msg, needle));
    assert_non_null(strstr(err.msg, path) ? err.msg : strstr(err.msg, dsq_test_tmp)); /* names the file */
    dsq_err_clear(&err);
}

static void raw(const char *name, const char *hdr, size_t data_len, dsq_status status, const char *needle) {
    char *p = dsq_test_join(dsq_test_tmp, name);
    uint8_t *data = calloc(1, data_len + 1);
    dsq_test_write_raw_st(p, hdr, data, data_len);
    expect_fail(p, status, needle);
    free(data);
    free(p);
}

static void test_valid_raw(void **state) {
    char *p = dsq_test_join(dsq_test_tmp, "ok.safetensors");
    uint8_t data[24] = {0};
    dsq_test_write_raw_st(p, "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]},"
                             "\"e\":{\"dtype\":\"I8\",\"shape\":[0,3],\"data_offsets\":[24,24]}}",
                          data, sizeof data);
    dsq_st *st;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_open(p, NULL, &st, &err), DSQ_OK);
    assert_int_equal(dsq_st_count(st), 3);
    assert_string_equal(dsq_st_metadata(st, "format"), "pt");
    assert_int_equal(dsq_st_find(st, "e")->n_bytes, 0);
    dsq_st_close(st);
    free(p);
}

static void test_truncated(void **state) {
    char *p = dsq_test_join(dsq_test_tmp, "t1.safetensors");
    dsq_test_write(p, "\x10\x00\x00", 3);
    expect_fail(p, DSQ_ERR_TRUNCATED, "too short");
    free(p);
    /* header length larger than the file */
    p = dsq_test_join(dsq_test_tmp, "t2.safetensors");
    uint8_t b[20] = {0xe8, 0x03};
    memcpy(b + 8, "{}   ", 5);
    dsq_test_write(p, b, sizeof b);
    expect_fail(p, DSQ_ERR_TRUNCATED, "header length 1000");
    free(p);
    /* data section cut short: tensor extends past the end */
    raw("t3.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, DSQ_ERR_RANGE, "past the data section");
}

static void test_absurd_header_length(void **state) {
    char *p = dsq_test_join(dsq_test_tmp, "h.safetensors");
    uint8_t b[16] = {0, 0, 0, 0, 0, 0, 0, 0x80};
    dsq_test_write(p, b, sizeof b);
    expect_fail(p, DSQ_ERR_RANGE, "exceeds");
    free(p);
    p = dsq_test_join(dsq_test_tmp, "h2.safetensors");
    uint8_t c[16] = {0x01, 0x00, 0x40, 0x06}; /* 100 MiB + 1 */
    dsq_test_write(p, c, sizeof c);
    expect_fail(p, DSQ_ERR_RANGE, "exceeds");
    free(p);
}

static void test_offsets_past_end(void **state) {
    raw("o.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[100,104]}}", 4, DSQ_ERR_RANGE, "past the data section");
    raw("o2.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,4]}}", 8, DSQ_ERR_RANGE, "decrease");
    raw("o3.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,18446744073709551615]}}", 4, DSQ_ERR_JSON,
        "data_offsets");
}

static void test_overlap(void **state) {
    raw("ov.safetensors",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
        12, DSQ_ERR_OVERLAP, "overlap");
}

static void test_gap_and_trailing(void **state) {
    raw("gap.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8, DSQ_ERR_FORMAT, "gap");
    raw("trail.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 12, DSQ_ERR_FORMAT, "trailing");
}

static void test_unknown_dtype(void **state) {
    raw("dt.safetensors", "{\"a\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, DSQ_ERR_DTYPE, "unknown dtype");
    raw("dt2.safetensors", "{\"a\":{\"dtype\":7,\"shape\":[4],\"data_offsets\":[0,4]}}", 4, DSQ_ERR_JSON, "dtype");
    raw("dt3.safetensors", "{\"a\":{\"shape\":[4],\"data_offsets\":[0,4]}}", 4, DSQ_ERR_MISSING, "no dtype");
}

static void test_shape_overflow(void **state) {
    raw("ovf.safetensors",
        "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, DSQ_ERR_OVERFLOW, "overflows");
    raw("ovf2.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740992,512],\"data_offsets\":[0,8]}}", 8, DSQ_ERR_OVERFLOW,
        "overflows");
    raw("mism.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, DSQ_ERR_SHAPE, "needs 12");
    raw("neg.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, DSQ_ERR_SHAPE, "shape[0]");
    raw("frac.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, DSQ_ERR_SHAPE, "shape[0]");
    raw("rank.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, DSQ_ERR_SHAPE,
        "rank 9");
}

static void test_malformed_json(void **state) {
    raw("j1.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}   ", 4, DSQ_ERR_JSON, "malformed JSON");
    raw("j2.safetensors", "[1,2,3]                 ", 0, DSQ_ERR_FORMAT, "not a JSON object");
    raw("j3.safetensors", "{\"a\":5}", 0, DSQ_ERR_JSON, "not a JSON object");
    raw("j4.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}} x", 4, DSQ_ERR_JSON, "trailing");
    raw("dup.safetensors",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
        8, DSQ_ERR_DUPLICATE, "duplicate");
    raw("meta.safetensors", "{\"__metadata__\":{\"k\":3}}", 0, DSQ_ERR_FORMAT, "not a string");
}

static void test_collects_all_problems(void **state) {
    char *p = dsq_test_join(dsq_test_tmp, "multi.safetensors");
    uint8_t d[8] = {0};
    dsq_test_write_raw_st(p,
                          "{\"a\":{\"dtype\":\"F9\",\"shape\":[4],\"data_offsets\":[0,4]},"
                          "\"b\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[4,8]},"
                          "\"c\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[40,44]}}",
                          d, sizeof d);
    dsq_st *st;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_not_equal(dsq_st_open(p, NULL, &st, &err), DSQ_OK);
    assert_true(err.n >= 3);
    assert_non_null(strstr(err.all, "tensor a"));
    assert_non_null(strstr(err.all, "tensor b"));
    assert_non_null(strstr(err.all, "tensor c"));
    dsq_err_clear(&err);
    free(p);
}

/* A two-shard checkpoint written with the writer, plus its index. */
static char *make_sharded(const char *name, const char *index_json) {
    char *dir = dsq_test_join(dsq_test_tmp, name);
    assert_int_equal(mkdir(dir, 0755), 0);
    float a[4] = {1, 2, 3, 4};
    int64_t b[2] = {7, 8};
    dsq_st_item i1[] = {{"x.weight", DSQ_DTYPE_F32, 2, {2, 2}, a}};
    dsq_st_item i2[] = {{"y.ids", DSQ_DTYPE_I64, 1, {2}, b}};
    char *p1 = dsq_test_join(dir, "model-00001-of-00002.safetensors");
    char *p2 = dsq_test_join(dir, "model-00002-of-00002.safetensors");
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_write_file(p1, i1, 1, false, &err), DSQ_OK);
    assert_int_equal(dsq_st_write_file(p2, i2, 1, false, &err), DSQ_OK);
    char *ip = dsq_test_join(dir, DSQ_ST_INDEX_NAME);
    dsq_test_write(ip, index_json, strlen(index_json));
    free(p1);
    free(p2);
    free(ip);
    return dir;
}

#define GOOD_INDEX                                                                                                     \
    "{\"metadata\":{\"total_size\":32},\"weight_map\":{\"x.weight\":\"model-00001-of-00002.safetensors\","            \
    "\"y.ids\":\"model-00002-of-00002.safetensors\"}}"

static void test_sharded_ok(void **state) {
    char *dir = make_sharded("sh_ok", GOOD_INDEX);
    dsq_st *st;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_open(dir, NULL, &st, &err), DSQ_OK);
    assert_int_equal(dsq_st_count(st), 2);
    assert_int_equal(dsq_st_shard_count(st), 2);
    const dsq_st_tensor *t = dsq_st_find(st, "y.ids");
    assert_non_null(t);
    assert_int_equal(((const int64_t *)t->data)[1], 8);
    assert_int_equal(t->shard, 1);
    dsq_st_close(st);
    free(dir);
}

static void test_missing_shard(void **state) {
    char *dir = make_sharded("sh_miss", "{\"weight_map\":{\"x.weight\":\"model-00001-of-00002.safetensors\","
                                        "\"y.ids\":\"model-00002-of-00002.safetensors\",\"z\":\"model-00003-of-00003.safetensors\"}}");
    expect_fail(dir, DSQ_ERR_MISSING, "model-00003-of-00003.safetensors");
    free(dir);
}

static void test_index_names_missing_tensor(void **state) {
    char *dir = make_sharded("sh_tmiss", "{\"weight_map\":{\"x.weight\":\"model-00001-of-00002.safetensors\","
                                         "\"y.ids\":\"model-00002-of-00002.safetensors\",\"w\":\"model-00002-of-00002.safetensors\"}}");
    expect_fail(dir, DSQ_ERR_MISSING, "tensor w is named by the index");
    free(dir);
}

static void test_index_wrong_shard_and_unlisted(void **state) {
    char *dir = make_sharded("sh_wrong", "{\"weight_map\":{\"x.weight\":\"model-00002-of-00002.safetensors\","
                                         "\"y.ids\":\"model-00002-of-00002.safetensors\"}}");
    /* x.weight lives in shard 1, which the index does not name at all: it is never opened, so
     * x.weight is missing from the shard the index names. */
    expect_fail(dir, DSQ_ERR_MISSING, "x.weight");
    free(dir);
    dir = make_sharded("sh_unl", "{\"weight_map\":{\"x.weight\":\"model-00001-of-00002.safetensors\","
                                 "\"y.ids\":\"model-00001-of-00002.safetensors\",\"q\":\"model-00002-of-00002.safetensors\"}}");
    dsq_st *st;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_not_equal(dsq_st_open(dir, NULL, &st, &err), DSQ_OK);
    assert_non_null(strstr(err.all, "y.ids is in model-00002-of-00002.safetensors but the index says model-00001"));
    assert_non_null(strstr(err.all, "tensor q is named by the index"));
    dsq_err_clear(&err);
    free(dir);
}

static void test_index_unsafe_and_malformed(void **state) {
    char *dir = make_sharded("sh_unsafe", "{\"weight_map\":{\"x.weight\":\"../etc/passwd\"}}");
    expect_fail(dir, DSQ_ERR_FORMAT, "unsafe file");
    free(dir);
    dir = make_sharded("sh_bad", "{\"weight_map\":{\"x.weight\":\"model-00001-of-00002.safetensors\",}");
    expect_fail(dir, DSQ_ERR_JSON, "malformed JSON");
    free(dir);
    dir = make_sharded("sh_nomap", "{\"metadata\":{}}");
    expect_fail(dir, DSQ_ERR_FORMAT, "weight_map");
    free(dir);
    /* fuzz find (st_index): an empty weight_map opened as a checkpoint of 0 tensors, beside two shards */
    dir = make_sharded("sh_empty", "{\"metadata\":{\"total_size\":32},\"weight_map\":{}}");
    expect_fail(dir, DSQ_ERR_FORMAT, "weight_map names no tensor");
    free(dir);
}

static void test_writer_round_trip_and_atomicity(void **state) {
    char *p = dsq_test_join(dsq_test_tmp, "w.safetensors");
    dsq_st_writer *w;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_writer_create(p, false, &w, &err), DSQ_OK);
    uint64_t sh[2] = {3, 5};
    assert_int_equal(dsq_st_writer_meta(w, "who", "dsq \"test\"", &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_add(w, "t.\"quoted\"", DSQ_DTYPE_BF16, 2, sh, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_begin(w, &err), DSQ_OK);
    uint16_t v[15];
    for (int i = 0; i < 15; i++) v[i] = (uint16_t)(i * 257);
    assert_int_equal(dsq_st_writer_write(w, v, 10, &err), DSQ_OK);
    /* not finished: the final name must not exist yet */
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(dsq_st_writer_write(w, (uint8_t *)v + 10, 20, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_write(w, v, 1, &err), DSQ_ERR_RANGE);
    assert_int_equal(dsq_st_writer_finish(w, &err), DSQ_OK);
    dsq_st *st;
    assert_int_equal(dsq_st_open(p, NULL, &st, &err), DSQ_OK);
    const dsq_st_tensor *t = dsq_st_find(st, "t.\"quoted\"");
    assert_non_null(t);
    assert_memory_equal(t->data, v, 30);
    assert_string_equal(dsq_st_metadata(st, "who"), "dsq \"test\"");
    dsq_st_close(st);
    /* existing output without overwrite */
    assert_int_equal(dsq_st_writer_create(p, false, &w, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_add(w, "a", DSQ_DTYPE_U8, 1, sh, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_begin(w, &err), DSQ_ERR_EXISTS);
    dsq_st_writer_free(w);
    /* abort leaves nothing behind */
    char *q = dsq_test_join(dsq_test_tmp, "abort.safetensors");
    assert_int_equal(dsq_st_writer_create(q, false, &w, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_add(w, "a", DSQ_DTYPE_U8, 1, sh, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_begin(w, &err), DSQ_OK);
    char *partial = dsq_test_join(dsq_test_tmp, ".abort.safetensors.partial");
    assert_int_equal(access(partial, F_OK), 0);
    dsq_st_writer_free(w);
    assert_int_equal(access(partial, F_OK), -1);
    assert_int_equal(access(q, F_OK), -1);
    /* short data at finish is an error and leaves nothing */
    assert_int_equal(dsq_st_writer_create(q, false, &w, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_add(w, "a", DSQ_DTYPE_U8, 1, sh, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_begin(w, &err), DSQ_OK);
    assert_int_equal(dsq_st_writer_finish(w, &err), DSQ_ERR_STATE);
    assert_int_equal(access(q, F_OK), -1);
    assert_int_equal(access(partial, F_OK), -1);
    dsq_err_clear(&err);
    free(partial);
    free(q);
    free(p);
}

/* Every allocation failure point yields DSQ_ERR_NOMEM (or success once past them), never a crash
 * or a leak (ASan checks the latter). */
static void test_malloc_faults(void **state) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model");
    int failures = 0;
    for (long n = 1; n < 400; n++) {
        dsq_fault_set(DSQ_FAULT_MALLOC, n);
        dsq_st *st = NULL;
        dsq_err err = DSQ_ERR_INIT;
        dsq_status s = dsq_st_open(p, NULL, &st, &err);
        dsq_fault_set(DSQ_FAULT_MALLOC, 0);
        if (s == DSQ_OK) {
            assert_int_equal(dsq_st_count(st), 427);
            dsq_st_close(st);
            dsq_err_clear(&err);
            break;
        }
        assert_int_equal(s, DSQ_ERR_NOMEM);
        assert_null(st);
        failures++;
        dsq_err_clear(&err);
    }
    assert_true(failures >= 5);
    free(p);
}

static void test_write_faults(void **state) {
    char *p = dsq_test_join(dsq_test_tmp, "wf.safetensors");
    float a[4] = {1, 2, 3, 4};
    dsq_st_item it[] = {{"x", DSQ_DTYPE_F32, 1, {4}, a}};
    dsq_err err = DSQ_ERR_INIT;
    dsq_fault_set(DSQ_FAULT_WRITE, 2);
    assert_int_equal(dsq_st_write_file(p, it, 1, false, &err), DSQ_ERR_IO);
    dsq_fault_set(DSQ_FAULT_WRITE, 0);
    assert_int_equal(access(p, F_OK), -1);
    dsq_fault_set(DSQ_FAULT_FSYNC, 1);
    assert_int_equal(dsq_st_write_file(p, it, 1, false, &err), DSQ_ERR_IO);
    dsq_fault_set(DSQ_FAULT_FSYNC, 0);
    assert_int_equal(access(p, F_OK), -1);
    char *partial = dsq_test_join(dsq_test_tmp, ".wf.safetensors.partial");
    assert_int_equal(access(partial, F_OK), -1);
    dsq_err_clear(&err);
    free(partial);
    free(p);
}

/* Deterministic mutation fuzzing: flip, insert and truncate bytes of a valid file thousands of times.
 * Every open must either succeed with a consistent table or fail with a message; ASan/UBSan watch
 * for anything else. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void test_mutation_fuzz(void **state) {
    char *p = dsq_test_join(dsq_test_tmp, "fz.safetensors");
    uint8_t data[64];
    for (int i = 0; i < 64; i++) data[i] = (uint8_t)i;
    dsq_test_write_raw_st(p,
                          "{\"__metadata__\":{\"format\":\"pt\"},\"a.weight\":{\"dtype\":\"F8_E4M3\",\"shape\":[4,8],"
                          "\"data_offsets\":[0,32]},\"a.scale\":{\"dtype\":\"F8_E8M0\",\"shape\":[1,1],\"data_offsets\":[32,33]},"
                          "\"b\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[33,57]},\"c\":{\"dtype\":\"U8\",\"shape\":[7],"
                          "\"data_offsets\":[57,64]}}",
                          data, sizeof data);
    size_t len;
    char *orig = dsq_test_read(p, &len);
    char *q = dsq_test_join(dsq_test_tmp, "fz2.safetensors");
    int n_ok = 0, n_fail = 0;
    int rounds = dsq_test_asan() ? 1500 : 4000;
    char *buf = malloc(len + 16);
    for (int r = 0; r < rounds; r++) {
        memcpy(buf, orig, len);
        size_t n = len;
        int edits = 1 + (int)(rng() % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(rng() % n);
            switch (rng() % 4) {
            case 0: buf[at] ^= (char)(1u << (rng() % 8)); break;                  /* bit flip */
            case 1: buf[at] = "0123456789{}[]\",:-.e"[rng() % 20]; break;         /* JSON-ish byte */
            case 2: n = at > 8 ? at : n; break;                                   /* truncate */
            case 3: if (at < 8) buf[at] = (char)rng(); break;                     /* header length */
            }
        }
        dsq_test_write(q, buf, n);
        dsq_st *st = NULL;
        dsq_err err = DSQ_ERR_INIT;
        if (dsq_st_open(q, NULL, &st, &err) == DSQ_OK) {
            n_ok++;
            uint64_t sum = 0;
            for (size_t i = 0; i < dsq_st_count(st); i++) {
                const dsq_st_tensor *t = dsq_st_at(st, i);
                sum += t->n_bytes;
                /* every view lies inside the file */
                assert_true(t->file_offset + t->n_bytes <= n);
                if (t->n_bytes) {
                    volatile uint8_t x = ((const uint8_t *)t->data)[t->n_bytes - 1];
                    (void)x;
                }
            }
            assert_int_equal(sum, dsq_st_total_bytes(st));
            dsq_st_close(st);
        } else {
            n_fail++;
            assert_true(err.n >= 1);
            assert_true(strlen(err.msg) > 0);
        }
        dsq_err_clear(&err);
    }
    assert_true(n_fail > rounds / 2);
    free(buf);
    free(orig);
    free(q);
    free(p);
}

/* The CLI on corrupted files: exit status 1, one line per problem naming the file, never a crash. */
static void test_cli_on_corrupted_files(void **state) {
    struct {
        const char *name, *hdr, *needle;
        size_t data;
    } cases[] = {
        {"c-dtype.safetensors", "{\"a\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,4]}}", "unknown dtype", 4},
        {"c-past.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[100,104]}}", "past the data section", 4},
        {"c-ovl.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[4,12]}}",
         "overlap", 12},
        {"c-json.safetensors", "{\"a\":{\"dtype\":\"U8\",", "malformed JSON", 0},
        {"c-ovf.safetensors", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
         "overflows", 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = dsq_test_join(dsq_test_tmp, cases[i].name);
        uint8_t *d = calloc(1, cases[i].data + 1);
        dsq_test_write_raw_st(p, cases[i].hdr, d, cases[i].data);
        char *out = NULL, *err = NULL;
        int rc = dsq_test_run(&out, &err, "inspect '%s'", p);
        if (rc != 1 || !strstr(err, cases[i].needle)) fprintf(stderr, "%s: rc %d stderr: %s\n", cases[i].name, rc, err);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(err, cases[i].needle));
        assert_non_null(strstr(err, p));
        assert_int_equal(strncmp(err, "dsq inspect: ", 13), 0);
        free(out);
        free(err);
        free(d);
        free(p);
    }
    /* a truncated header and a missing shard through a directory */
    char *p = dsq_test_join(dsq_test_tmp, "c-trunc.safetensors");
    dsq_test_write(p, "\x10\x00\x00", 3);
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "inspect '%s'", p), 1);
    assert_non_null(strstr(err, "too short"));
    free(err);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_model),
        cmocka_unit_test(test_valid_raw),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_absurd_header_length),
        cmocka_unit_test(test_offsets_past_end),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_gap_and_trailing),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_shape_overflow),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_collects_all_problems),
        cmocka_unit_test(test_sharded_ok),
        cmocka_unit_test(test_missing_shard),
        cmocka_unit_test(test_index_names_missing_tensor),
        cmocka_unit_test(test_index_wrong_shard_and_unlisted),
        cmocka_unit_test(test_index_unsafe_and_malformed),
        cmocka_unit_test(test_writer_round_trip_and_atomicity),
        cmocka_unit_test(test_malloc_faults),
        cmocka_unit_test(test_write_faults),
        cmocka_unit_test(test_mutation_fuzz),
        cmocka_unit_test(test_cli_on_corrupted_files),
    };
    return cmocka_run_group_tests_name("safetensors", tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
}
