/* .dsq container: write → read round trips, alignment, sources, resume, atomicity, fault injection,
 * and one test per malformation class with its expected status (formats/spec/dsq.md). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "dsq_container.h"
#include "dsq_test.h"

/* ---- a sample model: every kind of tensor the container must carry ---- */

typedef struct sample {
    dsq_ctr_tensor_desc d;
    dsq_ctr_source_desc src[8];
} sample;

#define N_SAMPLES 9
static void make_samples(sample s[N_SAMPLES]) {
    memset(s, 0, sizeof(sample) * N_SAMPLES);
    /* 0: F32 matrix */
    s[0].d = (dsq_ctr_tensor_desc){"a.weight", DSQ_ENC_F32, 2, {3, 5}, 0, 0, 0, NULL};
    /* 1: BF16 vector (14 bytes: the next part starts after 50 zero bytes) */
    s[1].d = (dsq_ctr_tensor_desc){"norm.weight", DSQ_ENC_BF16, 1, {7}, 0, 0, 1, s[1].src};
    s[1].src[0] = (dsq_ctr_source_desc){"norm.weight", NULL, 0, 7, false, DSQ_DTYPE_BF16, -1, 0};
    /* 2: F32 scalar */
    s[2].d = (dsq_ctr_tensor_desc){"hc_head_scale", DSQ_ENC_F32, 0, {0}, 0, 0, 0, NULL};
    /* 3: FP8 128x128 with partial edge blocks, weight + scale from the checkpoint */
    s[3].d = (dsq_ctr_tensor_desc){"layers.0.attn.wq_a.weight", DSQ_ENC_FP8_B128, 2, {200, 300}, 128, 128, 1, s[3].src};
    s[3].src[0] = (dsq_ctr_source_desc){"layers.0.attn.wq_a.weight", "layers.0.attn.wq_a.scale", 0, 200, false,
                                        DSQ_DTYPE_F8_E4M3, DSQ_DTYPE_F8_E8M0, 0};
    /* 4: stacked MXFP4 experts [4, 64, 96] */
    s[4].d = (dsq_ctr_tensor_desc){"layers.0.ffn.experts.w1.weight", DSQ_ENC_MXFP4, 3, {4, 64, 96}, 1, 32, 4, s[4].src};
    static char en[4][64], es[4][64];
    for (int e = 0; e < 4; e++) {
        snprintf(en[e], sizeof en[e], "layers.0.ffn.experts.%d.w1.weight", e);
        snprintf(es[e], sizeof es[e], "layers.0.ffn.experts.%d.w1.scale", e);
        s[4].src[e] = (dsq_ctr_source_desc){en[e], es[e], (uint64_t)e, 1, true, DSQ_DTYPE_I8, DSQ_DTYPE_F8_E8M0, 0};
    }
    /* 5: fused compressor wkv|wgate [256, 64] BF16 */
    s[5].d = (dsq_ctr_tensor_desc){"layers.1.attn.compressor.wkv_wgate.weight", DSQ_ENC_BF16, 2, {256, 64}, 0, 0, 2,
                                   s[5].src};
    s[5].src[0] = (dsq_ctr_source_desc){"layers.1.attn.compressor.wkv.weight", NULL, 0, 128, false, DSQ_DTYPE_BF16, -1, 0};
    s[5].src[1] = (dsq_ctr_source_desc){"layers.1.attn.compressor.wgate.weight", NULL, 128, 128, false, DSQ_DTYPE_BF16, -1, 0};
    /* 6: INT4 asymmetric g32 with an odd column count (data, scales, mins) */
    s[6].d = (dsq_ctr_tensor_desc){"int4.weight", DSQ_ENC_INT4_G_ASYM, 2, {10, 33}, 1, 32, 0, NULL};
    /* 7: NVFP4 stacked (data, scales, tensor scales) */
    s[7].d = (dsq_ctr_tensor_desc){"nv.weight", DSQ_ENC_NVFP4, 3, {2, 16, 32}, 1, 16, 0, NULL};
    /* 8: a part ≥ 1 MiB: starts on 4096 */
    s[8].d = (dsq_ctr_tensor_desc){"embed.weight", DSQ_ENC_BF16, 2, {1024, 520}, 0, 0, 0, NULL};
}

/* Deterministic bytes of part p of tensor i. */
static uint8_t sample_byte(uint32_t i, int p, uint64_t k) {
    uint64_t x = (k + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)i << 40) ^ ((uint64_t)p << 56);
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return (uint8_t)(x >> 32);
}

static uint8_t *part_bytes(uint32_t i, int p, uint64_t n) {
    uint8_t *b = malloc(n ? n : 1);
    for (uint64_t k = 0; k < n; k++) b[k] = sample_byte(i, p, k);
    return b;
}

static const char *META = "{\"format\":\"dsq\",\"format_version\":\"1.0\",\"model\":{\"architecture\":\"deepseek_v4\"}}";

/* Plan all samples; returns the writer (not begun). */
static dsq_ctr_writer *plan(const char *path, const dsq_ctr_writer_options *o) {
    sample s[N_SAMPLES];
    make_samples(s);
    dsq_ctr_writer *w = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_writer_create(path, o, &w, &err), DSQ_OK);
    for (int i = 0; i < N_SAMPLES; i++) {
        uint32_t idx;
        dsq_status st = dsq_ctr_writer_add(w, &s[i].d, &idx, &err);
        if (st != DSQ_OK) dsq_err_print(&err, stderr, "plan: ");
        assert_int_equal(st, DSQ_OK);
        assert_int_equal(idx, (uint32_t)i);
    }
    assert_int_equal(dsq_ctr_writer_set_metadata(w, META, strlen(META), &err), DSQ_OK);
    dsq_err_clear(&err);
    return w;
}

/* Write tensor i: parts in reverse order, the first part in two chunks, second chunk first
 * (exercises out-of-order hashing). */
static void write_tensor(dsq_ctr_writer *w, uint32_t i) {
    const dsq_ctr_tensor *t = dsq_ctr_writer_tensor(w, i);
    dsq_err err = DSQ_ERR_INIT;
    for (int p = t->n_parts - 1; p >= 0; p--) {
        uint8_t *b = part_bytes(i, p, t->parts[p].bytes);
        uint64_t n = t->parts[p].bytes, half = p == 0 && i % 2 ? n / 2 : 0;
        if (half) {
            assert_int_equal(dsq_ctr_writer_write(w, i, p, half, b + half, n - half, &err), DSQ_OK);
            assert_int_equal(dsq_ctr_writer_write(w, i, p, 0, b, half, &err), DSQ_OK);
        } else {
            assert_int_equal(dsq_ctr_writer_write(w, i, p, 0, b, n, &err), DSQ_OK);
        }
        free(b);
    }
    for (uint32_t k = 0; k < t->n_sources; k++) dsq_ctr_writer_set_source_hash(w, i, k, 1000 + k, 2000 + k);
    assert_int_equal(dsq_ctr_writer_end_tensor(w, i, &err), DSQ_OK);
    dsq_err_clear(&err);
}

static void write_sample(const char *path, const dsq_ctr_writer_options *o) {
    dsq_ctr_writer *w = plan(path, o);
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    for (uint32_t i = 0; i < N_SAMPLES; i++) write_tensor(w, i);
    dsq_status st = dsq_ctr_writer_finish(w, &err);
    if (st != DSQ_OK) dsq_err_print(&err, stderr, "finish: ");
    assert_int_equal(st, DSQ_OK);
    dsq_err_clear(&err);
}

static void check_sample(const char *path, bool no_mmap) {
    dsq_ctr_reader *r = NULL;
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_reader_options ro = {.no_mmap = no_mmap, .verify = true};
    dsq_status st = dsq_ctr_reader_open(path, &ro, &r, &err);
    if (st != DSQ_OK) dsq_err_print(&err, stderr, "open: ");
    assert_int_equal(st, DSQ_OK);
    sample s[N_SAMPLES];
    make_samples(s);
    assert_int_equal(dsq_ctr_count(r), N_SAMPLES);
    const dsq_file_header *h = dsq_ctr_header(r);
    assert_int_equal(h->align_small, 64);
    assert_int_equal(h->align_large, 4096);
    for (uint32_t i = 0; i < N_SAMPLES; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        assert_ptr_equal(dsq_ctr_find(r, s[i].d.name), t);
        assert_string_equal(t->name, s[i].d.name);
        assert_int_equal(t->encoding, s[i].d.encoding);
        assert_int_equal(t->rank, s[i].d.rank);
        for (int d = 0; d < t->rank; d++) assert_int_equal(t->shape[d], s[i].d.shape[d]);
        assert_int_equal(t->n_sources, s[i].d.n_sources);
        for (int p = 0; p < t->n_parts; p++) {
            const dsq_ctr_part *part = &t->parts[p];
            assert_int_equal(part->offset % 64, 0);
            if (part->bytes >= (1u << 20)) assert_int_equal(part->offset % 4096, 0);
            uint8_t *want = part_bytes(i, p, part->bytes), *got = malloc(part->bytes);
            assert_int_equal(dsq_ctr_read(r, t, p, 0, got, part->bytes, &err), DSQ_OK);
            assert_memory_equal(got, want, part->bytes);
            if (!no_mmap) assert_memory_equal(part->data, want, part->bytes);
            else assert_null(part->data);
            assert_true(part->xxh3 == (uint64_t)XXH3_64bits(want, part->bytes));
            free(want);
            free(got);
        }
        for (uint32_t k = 0; k < t->n_sources; k++) {
            const dsq_ctr_source *so = &t->sources[k];
            assert_string_equal(so->name, s[i].src[k].name);
            if (s[i].src[k].scale_name) assert_string_equal(so->scale_name, s[i].src[k].scale_name);
            else assert_null(so->scale_name);
            assert_int_equal(so->start, s[i].src[k].start);
            assert_int_equal(so->count, s[i].src[k].count);
            assert_int_equal(so->squeeze, s[i].src[k].squeeze);
            assert_int_equal(so->xxh3, 1000 + k);
            assert_int_equal(so->scale_xxh3, 2000 + k);
            const dsq_ctr_tensor *ft;
            const dsq_ctr_source *fs;
            assert_true(dsq_ctr_find_source(r, so->name, &ft, &fs));
            assert_ptr_equal(ft, t);
            assert_ptr_equal(fs, so);
        }
    }
    /* parts are expected sizes: FP8 [200,300] b128 → 60000 codes, 2x3 scales */
    const dsq_ctr_tensor *fp8 = dsq_ctr_find(r, "layers.0.attn.wq_a.weight");
    assert_int_equal(fp8->parts[0].bytes, 60000);
    assert_int_equal(fp8->parts[1].bytes, 6);
    const dsq_ctr_tensor *i4 = dsq_ctr_find(r, "int4.weight");
    assert_int_equal(i4->n_parts, 3);
    assert_int_equal(i4->parts[0].bytes, 10 * 17);
    assert_int_equal(i4->parts[1].bytes, 10 * 2 * 2);
    assert_int_equal(i4->parts[2].kind, DSQ_FILE_PART_MINS);
    const dsq_ctr_tensor *nv = dsq_ctr_find(r, "nv.weight");
    assert_int_equal(nv->parts[2].kind, DSQ_FILE_PART_TENSOR_SCALE);
    assert_int_equal(nv->parts[2].bytes, 8);
    /* expert 2 of the stack: its slice of codes and scales */
    const dsq_ctr_tensor *ex;
    const dsq_ctr_source *so;
    assert_true(dsq_ctr_find_source(r, "layers.0.ffn.experts.2.w1.weight", &ex, &so));
    uint64_t off, n;
    assert_true(dsq_ctr_source_slice(ex, so, 0, &off, &n));
    assert_int_equal(off, 2 * 64 * 48);
    assert_int_equal(n, 64 * 48);
    assert_true(dsq_ctr_source_slice(ex, so, 1, &off, &n));
    assert_int_equal(off, 2 * 64 * 3);
    assert_int_equal(n, 64 * 3);
    /* the fused compressor's second half */
    assert_true(dsq_ctr_find_source(r, "layers.1.attn.compressor.wgate.weight", &ex, &so));
    assert_true(dsq_ctr_source_slice(ex, so, 0, &off, &n));
    assert_int_equal(off, 128 * 64 * 2);
    assert_int_equal(n, 128 * 64 * 2);
    assert_false(dsq_ctr_find_source(r, "nope", NULL, NULL));
    size_t mlen;
    const char *meta = dsq_ctr_metadata(r, &mlen);
    assert_int_equal(mlen, strlen(META));
    assert_string_equal(meta, META);
    dsq_ctr_reader_close(r);
    dsq_err_clear(&err);
}

static void test_round_trip(void **state) {
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "m.dsq");
    write_sample(path, NULL);
    check_sample(path, false);
    check_sample(path, true);
    /* no partial or journal left behind */
    char *partial = dsq_test_join(dir, ".m.dsq.partial"), *journal = dsq_test_join(dir, ".m.dsq.journal");
    assert_false(dsq_path_exists(partial));
    assert_false(dsq_path_exists(journal));
    free(partial);
    free(journal);
    dsq_test_rmdir(dir);
    free(path);
    free(dir);
}

static void test_compressed_metadata(void **state) {
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "z.dsq");
    dsq_ctr_writer_options o = {.compress_metadata = 1};
    write_sample(path, &o);
    dsq_ctr_reader *r = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_reader_open(path, NULL, &r, &err), DSQ_OK);
    bool zstd = false;
    for (size_t i = 0; i < dsq_ctr_section_count(r); i++)
        if (dsq_ctr_section(r, i)->kind == DSQ_FILE_SECTION_METADATA) zstd = dsq_ctr_section(r, i)->flags & DSQ_FILE_SECTION_ZSTD;
    assert_true(zstd);
    assert_string_equal(dsq_ctr_metadata(r, NULL), META);
    dsq_ctr_reader_close(r);
    check_sample(path, true);
    dsq_test_rmdir(dir);
    free(path);
    free(dir);
}

/* Same plan written twice gives identical bytes (no time or machine in the file). */
static void test_deterministic(void **state) {
    char *dir = dsq_test_tmpdir(), *a = dsq_test_join(dir, "a.dsq"), *b = dsq_test_join(dir, "b.dsq");
    write_sample(a, NULL);
    write_sample(b, NULL);
    size_t na, nb;
    char *x = dsq_test_read(a, &na), *y = dsq_test_read(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
    dsq_test_rmdir(dir);
    free(a);
    free(b);
    free(dir);
}

static void test_writer_rejects(void **state) {
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "bad.dsq");
    dsq_ctr_writer *w = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_writer_create(path, NULL, &w, &err), DSQ_OK);
    dsq_ctr_tensor_desc ok = {"x", DSQ_ENC_F32, 1, {4}, 0, 0, 0, NULL};
    assert_int_equal(dsq_ctr_writer_add(w, &ok, NULL, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_add(w, &ok, NULL, &err), DSQ_ERR_DUPLICATE);
    dsq_ctr_tensor_desc bad_block = {"y", DSQ_ENC_MXFP4, 2, {4, 64}, 1, 16, 0, NULL};
    assert_int_equal(dsq_ctr_writer_add(w, &bad_block, NULL, &err), DSQ_ERR_FORMAT);
    dsq_ctr_tensor_desc bad_rank = {"z", DSQ_ENC_FP8_B128, 1, {4}, 128, 128, 0, NULL};
    assert_int_equal(dsq_ctr_writer_add(w, &bad_rank, NULL, &err), DSQ_ERR_SHAPE);
    dsq_ctr_tensor_desc bad_enc = {"u", (dsq_encoding)77, 1, {4}, 0, 0, 0, NULL};
    assert_int_equal(dsq_ctr_writer_add(w, &bad_enc, NULL, &err), DSQ_ERR_DTYPE);
    char longname[600];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    dsq_ctr_tensor_desc too_long = {longname, DSQ_ENC_F32, 1, {4}, 0, 0, 0, NULL};
    assert_int_equal(dsq_ctr_writer_add(w, &too_long, NULL, &err), DSQ_ERR_RANGE);
    /* sources must tile the outer axis, on block boundaries */
    dsq_ctr_source_desc gap[2] = {{"s0", NULL, 0, 100, false, DSQ_DTYPE_F8_E4M3, -1, 0},
                                  {"s1", NULL, 128, 128, false, DSQ_DTYPE_F8_E4M3, -1, 0}};
    dsq_ctr_tensor_desc tiled = {"t", DSQ_ENC_FP8_B128, 2, {256, 128}, 128, 128, 2, gap};
    assert_int_equal(dsq_ctr_writer_add(w, &tiled, NULL, &err), DSQ_ERR_RANGE);
    gap[0].count = 64;
    gap[1].start = 64;
    gap[1].count = 192;
    assert_int_equal(dsq_ctr_writer_add(w, &tiled, NULL, &err), DSQ_ERR_FORMAT);
    /* a source name already used by another tensor; the failed add leaves the writer usable */
    dsq_ctr_source_desc dup_src = {"x", NULL, 0, 4, false, DSQ_DTYPE_F32, -1, 0};
    dsq_ctr_source_desc dup_src2 = dup_src;
    dsq_ctr_tensor_desc d1 = {"v1", DSQ_ENC_F32, 1, {4}, 0, 0, 1, &dup_src};
    dsq_ctr_tensor_desc d2 = {"v2", DSQ_ENC_F32, 1, {4}, 0, 0, 1, &dup_src2};
    assert_int_equal(dsq_ctr_writer_add(w, &d1, NULL, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_add(w, &d2, NULL, &err), DSQ_ERR_DUPLICATE);
    dsq_ctr_tensor_desc d3 = {"v2", DSQ_ENC_F32, 1, {4}, 0, 0, 0, NULL};
    assert_int_equal(dsq_ctr_writer_add(w, &d3, NULL, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_set_metadata(w, "[1]", 3, &err), DSQ_ERR_JSON);
    assert_int_equal(dsq_ctr_writer_set_metadata(w, "{\"a\":1,\"a\":2}", 13, &err), DSQ_ERR_DUPLICATE);
    assert_true(err.n >= 9);
    dsq_ctr_writer_free(w);
    /* finishing with an incomplete tensor fails and leaves nothing behind */
    assert_int_equal(dsq_ctr_writer_create(path, NULL, &w, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_add(w, &ok, NULL, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    float v[4] = {1, 2, 3, 4};
    assert_int_equal(dsq_ctr_writer_write(w, 0, 0, 0, v, 8, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_write(w, 0, 0, 8, v, 9, &err), DSQ_ERR_RANGE);
    assert_int_equal(dsq_ctr_writer_end_tensor(w, 0, &err), DSQ_ERR_STATE);
    assert_int_equal(dsq_ctr_writer_finish(w, &err), DSQ_ERR_STATE);
    assert_false(dsq_path_exists(path));
    char *partial = dsq_test_join(dir, ".bad.dsq.partial");
    assert_false(dsq_path_exists(partial));
    free(partial);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(path);
    free(dir);
}

/* The final name appears only at finish; an existing output needs overwrite; abort removes all. */
static void test_atomic(void **state) {
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "m.dsq");
    char *partial = dsq_test_join(dir, ".m.dsq.partial"), *journal = dsq_test_join(dir, ".m.dsq.journal");
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_writer *w = plan(path, NULL);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    write_tensor(w, 0);
    assert_true(dsq_path_exists(partial));
    assert_true(dsq_path_exists(journal));
    assert_false(dsq_path_exists(path));
    dsq_ctr_writer_free(w);
    assert_false(dsq_path_exists(partial));
    assert_false(dsq_path_exists(journal));
    write_sample(path, NULL);
    w = plan(path, NULL);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_ERR_EXISTS);
    dsq_ctr_writer_free(w);
    dsq_ctr_writer_options o = {.overwrite = true};
    write_sample(path, &o);
    check_sample(path, false);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(partial);
    free(journal);
    free(path);
    free(dir);
}

/* Suspend after some tensors, resume: identical bytes to an uninterrupted run; a torn journal record
 * and a damaged journaled tensor are redone; a different job is refused. */
static void test_resume(void **state) {
    char *dir = dsq_test_tmpdir(), *ref = dsq_test_join(dir, "ref.dsq"), *path = dsq_test_join(dir, "m.dsq");
    char *partial = dsq_test_join(dir, ".m.dsq.partial"), *journal = dsq_test_join(dir, ".m.dsq.journal");
    dsq_ctr_writer_options o = {.fingerprint = "job-1"};
    write_sample(ref, &o);
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_writer *w = plan(path, &o);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    for (uint32_t i = 0; i < 5; i++) write_tensor(w, i);
    assert_int_equal(dsq_ctr_writer_suspend(w, &err), DSQ_OK);
    assert_true(dsq_path_exists(partial));
    assert_false(dsq_path_exists(path));
    /* torn last record: a few garbage bytes appended */
    int fd = open(journal, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x40\0\0\0garbage", 11), 11);
    close(fd);
    /* damage tensor 3's bytes in the partial file: it must be redone */
    const dsq_ctr_tensor *t3;
    w = plan(path, &o);
    t3 = dsq_ctr_writer_tensor(w, 3);
    fd = open(partial, O_WRONLY);
    assert_int_equal(pwrite(fd, "\xff\xff", 2, (off_t)t3->parts[0].offset), 2);
    close(fd);
    /* a different job is refused */
    dsq_ctr_writer_options other = {.fingerprint = "job-2", .resume = true};
    dsq_ctr_writer *w2 = plan(path, &other);
    assert_int_equal(dsq_ctr_writer_begin(w2, &err), DSQ_ERR_STATE);
    dsq_ctr_writer_suspend(w2, NULL);
    assert_true(dsq_path_exists(partial));
    dsq_ctr_writer_free(w);
    /* the real resume */
    o.resume = true;
    w = plan(path, &o);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_done_count(w), 4);
    assert_false(dsq_ctr_writer_is_done(w, 3));
    for (uint32_t i = 0; i < N_SAMPLES; i++)
        if (!dsq_ctr_writer_is_done(w, i)) write_tensor(w, i);
    assert_int_equal(dsq_ctr_writer_finish(w, &err), DSQ_OK);
    size_t na, nb;
    char *x = dsq_test_read(ref, &na), *y = dsq_test_read(path, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
    assert_false(dsq_path_exists(journal));
    /* --resume with nothing to resume starts fresh */
    char *fresh = dsq_test_join(dir, "fresh.dsq");
    write_sample(fresh, &o);
    x = dsq_test_read(ref, &na);
    y = dsq_test_read(fresh, &nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
    free(fresh);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(partial);
    free(journal);
    free(ref);
    free(path);
    free(dir);
}

/* Failing the n-th write / fsync / malloc: a clean error, no output, no partial, no leak. */
static void test_fault_injection(void **state) {
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "m.dsq"), *partial = dsq_test_join(dir, ".m.dsq.partial");
    dsq_err err = DSQ_ERR_INIT;
    long n_write;
    for (n_write = 1;; n_write += 2) {
        dsq_ctr_writer *w = plan(path, NULL);
        dsq_status s = dsq_ctr_writer_begin(w, &err);
        dsq_fault_set(DSQ_FAULT_WRITE, n_write);
        for (uint32_t i = 0; s == DSQ_OK && i < N_SAMPLES; i++) {
            const dsq_ctr_tensor *t = dsq_ctr_writer_tensor(w, i);
            for (int p = 0; s == DSQ_OK && p < t->n_parts; p++) {
                uint8_t *b = part_bytes(i, p, t->parts[p].bytes);
                s = dsq_ctr_writer_write(w, i, p, 0, b, t->parts[p].bytes, &err);
                free(b);
            }
            if (s == DSQ_OK) s = dsq_ctr_writer_end_tensor(w, i, &err);
        }
        if (s == DSQ_OK) s = dsq_ctr_writer_finish(w, &err);
        else dsq_ctr_writer_free(w);
        dsq_fault_set(DSQ_FAULT_WRITE, 0);
        if (s == DSQ_OK) break; /* past the last write */
        assert_int_equal(s, DSQ_ERR_IO);
        assert_false(dsq_path_exists(path));
        assert_false(dsq_path_exists(partial));
        dsq_err_clear(&err);
    }
    assert_true(n_write > 25); /* parts, journal records and the tail were all exercised */
    unlink(path);
    dsq_ctr_writer *w = plan(path, NULL);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    for (uint32_t i = 0; i < N_SAMPLES; i++) write_tensor(w, i);
    dsq_fault_set(DSQ_FAULT_FSYNC, 1);
    assert_int_equal(dsq_ctr_writer_finish(w, &err), DSQ_ERR_IO);
    dsq_fault_set(DSQ_FAULT_FSYNC, 0);
    assert_false(dsq_path_exists(path));
    assert_false(dsq_path_exists(partial));
    /* reader: every allocation failure is a clean DSQ_ERR_NOMEM */
    write_sample(path, NULL);
    int nomem = 0;
    for (long nth = 1; nth <= 12; nth++) {
        dsq_ctr_reader *r = NULL;
        dsq_fault_set(DSQ_FAULT_MALLOC, nth);
        dsq_status s = dsq_ctr_reader_open(path, NULL, &r, &err);
        dsq_fault_set(DSQ_FAULT_MALLOC, 0);
        if (s == DSQ_OK) {
            dsq_ctr_reader_close(r);
        } else {
            assert_int_equal(s, DSQ_ERR_NOMEM);
            assert_null(r);
            nomem++;
        }
        dsq_err_clear(&err);
    }
    assert_true(nomem >= 6);
    dsq_test_rmdir(dir);
    free(partial);
    free(path);
    free(dir);
}

/* ---- malformation classes ---- */

typedef struct image {
    uint8_t *b;
    size_t n;
} image;

static image load(const char *path) {
    image im;
    im.b = (uint8_t *)dsq_test_read(path, &im.n);
    return im;
}

static uint64_t rd64(const uint8_t *p) { return dsq_file_le64(p); }

/* Section entry of `kind` in the directory. */
static uint8_t *dir_entry(image *im, uint32_t kind) {
    uint64_t dir = rd64(im->b + DSQ_FILE_HDR_DIRECTORY_OFFSET);
    uint32_t n = dsq_file_le32(im->b + DSQ_FILE_HDR_SECTION_COUNT);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = im->b + dir + (uint64_t)i * DSQ_FILE_SECTION_ENTRY_BYTES;
        if (dsq_file_le32(e) == kind) return e;
    }
    fail_msg("section %u not found", kind);
    return NULL;
}
static uint8_t *section(image *im, uint32_t kind) { return im->b + rd64(dir_entry(im, kind) + 8); }

/* Re-seal: section checksums, then the directory checksum, then the header checksum. */
static void reseal(image *im) {
    uint64_t dir = rd64(im->b + DSQ_FILE_HDR_DIRECTORY_OFFSET);
    uint32_t n = dsq_file_le32(im->b + DSQ_FILE_HDR_SECTION_COUNT);
    bool dir_ok = n <= 1024 && dir < im->n && (uint64_t)n * DSQ_FILE_SECTION_ENTRY_BYTES <= im->n - dir;
    for (uint32_t i = 0; dir_ok && i < n; i++) {
        uint8_t *e = im->b + dir + (uint64_t)i * DSQ_FILE_SECTION_ENTRY_BYTES;
        uint64_t off = rd64(e + 8), len = rd64(e + 16);
        if (off < im->n && len <= im->n - off) dsq_put_u64le(e + 32, (uint64_t)XXH3_64bits(im->b + off, len));
    }
    if (dir_ok)
        dsq_put_u64le(im->b + DSQ_FILE_HDR_DIRECTORY_XXH3,
                      (uint64_t)XXH3_64bits(im->b + dir, (size_t)n * DSQ_FILE_SECTION_ENTRY_BYTES));
    dsq_put_u64le(im->b + DSQ_FILE_HDR_HEADER_XXH3, (uint64_t)XXH3_64bits(im->b, DSQ_FILE_HDR_HEADER_XXH3));
}

/* Record of tensor i in the table. */
static uint8_t *record(image *im, uint32_t i) {
    uint8_t *p = section(im, DSQ_FILE_SECTION_TENSOR_TABLE) + DSQ_FILE_TABLE_HEADER_BYTES;
    for (uint32_t k = 0; k < i; k++) p += dsq_file_le32(p);
    return p;
}
static uint8_t *rec_part(image *im, uint32_t i, int p) {
    uint8_t *r = record(im, i);
    return r + DSQ_FILE_REC_SHAPE + 8 * r[DSQ_FILE_REC_RANK] + DSQ_FILE_PART_BYTES * p;
}

typedef enum { OPEN, OPEN_VERIFY } check_mode;

static void expect_status(const char *dir, const char *name, image *im, dsq_status want, check_mode mode) {
    char *p = dsq_test_join(dir, name);
    dsq_test_write(p, im->b, im->n);
    for (int pread_mode = 0; pread_mode < 2; pread_mode++) {
        dsq_ctr_reader *r = NULL;
        dsq_err err = DSQ_ERR_INIT;
        dsq_ctr_reader_options ro = {.no_mmap = pread_mode, .verify = mode == OPEN_VERIFY};
        dsq_status s = dsq_ctr_reader_open(p, &ro, &r, &err);
        if (s != want) {
            dsq_err_print(&err, stderr, name);
            fail_msg("%s: got %s (%d), want %s (%d)", name, dsq_status_str(s), s, dsq_status_str(want), want);
        }
        assert_null(r);
        assert_true(err.n >= 1);
        assert_non_null(strstr(err.msg, name)); /* the message names the file */
        dsq_err_clear(&err);
    }
    free(p);
    free(im->b);
}

static void test_malformed(void **state) {
    char *dir = dsq_test_tmpdir(), *good = dsq_test_join(dir, "good.dsq");
    write_sample(good, NULL);
    image im;

    im = load(good); /* truncated: the last 100 bytes cut */
    im.n -= 100;
    expect_status(dir, "truncated.dsq", &im, DSQ_ERR_TRUNCATED, OPEN);

    im = load(good); /* shorter than a header */
    im.n = 60;
    expect_status(dir, "tiny.dsq", &im, DSQ_ERR_TRUNCATED, OPEN);

    im = load(good);
    im.b[1] = 'X';
    expect_status(dir, "magic.dsq", &im, DSQ_ERR_MAGIC, OPEN);

    im = load(good);
    dsq_put_u16le(im.b + DSQ_FILE_HDR_VERSION_MAJOR, 2);
    reseal(&im);
    expect_status(dir, "version.dsq", &im, DSQ_ERR_VERSION, OPEN);

    im = load(good); /* any header byte changed without resealing */
    im.b[DSQ_FILE_HDR_RESERVED + 3] = 1;
    expect_status(dir, "hdrsum.dsq", &im, DSQ_ERR_CHECKSUM, OPEN);

    im = load(good);
    dsq_put_u64le(im.b + DSQ_FILE_HDR_REQUIRED_FLAGS, 4);
    reseal(&im);
    expect_status(dir, "flags.dsq", &im, DSQ_ERR_UNSUPPORTED, OPEN);

    im = load(good); /* directory pointing elsewhere */
    dsq_put_u64le(im.b + DSQ_FILE_HDR_DIRECTORY_OFFSET, rd64(im.b + DSQ_FILE_HDR_DIRECTORY_OFFSET) + 8);
    reseal(&im);
    expect_status(dir, "dirofs.dsq", &im, DSQ_ERR_RANGE, OPEN);

    im = load(good); /* directory checksum */
    dir_entry(&im, DSQ_FILE_SECTION_METADATA)[40] = 1;
    expect_status(dir, "dirsum.dsq", &im, DSQ_ERR_CHECKSUM, OPEN);

    im = load(good); /* table section checksum */
    section(&im, DSQ_FILE_SECTION_TENSOR_TABLE)[20] ^= 1;
    expect_status(dir, "tablesum.dsq", &im, DSQ_ERR_CHECKSUM, OPEN);

    im = load(good); /* tensor part offset out of range of the data region */
    dsq_put_u64le(rec_part(&im, 2, 0) + 8, rd64(im.b + DSQ_FILE_HDR_DATA_OFFSET) + rd64(im.b + DSQ_FILE_HDR_DATA_BYTES));
    reseal(&im);
    expect_status(dir, "partofs.dsq", &im, DSQ_ERR_RANGE, OPEN);

    im = load(good); /* part offset before the data region */
    dsq_put_u64le(rec_part(&im, 0, 0) + 8, 64);
    reseal(&im);
    expect_status(dir, "partlow.dsq", &im, DSQ_ERR_RANGE, OPEN);

    im = load(good); /* overlap: tensor 2 placed on tensor 0 */
    dsq_put_u64le(rec_part(&im, 2, 0) + 8, rd64(rec_part(&im, 0, 0) + 8));
    reseal(&im);
    expect_status(dir, "overlap.dsq", &im, DSQ_ERR_OVERLAP, OPEN);

    im = load(good); /* misaligned: the 14-byte BF16 vector moved 8 bytes into its padding */
    dsq_put_u64le(rec_part(&im, 1, 0) + 8, rd64(rec_part(&im, 1, 0) + 8) + 8);
    reseal(&im);
    expect_status(dir, "misaligned.dsq", &im, DSQ_ERR_FORMAT, OPEN);

    im = load(good); /* unknown encoding */
    dsq_put_u16le(record(&im, 0) + DSQ_FILE_REC_ENCODING, 99);
    reseal(&im);
    expect_status(dir, "encoding.dsq", &im, DSQ_ERR_DTYPE, OPEN);

    im = load(good); /* name longer than 512 bytes */
    dsq_put_u16le(record(&im, 0) + DSQ_FILE_REC_NAME_BYTES, 600);
    reseal(&im);
    expect_status(dir, "namelen.dsq", &im, DSQ_ERR_RANGE, OPEN);

    im = load(good); /* rank beyond 8 */
    record(&im, 0)[DSQ_FILE_REC_RANK] = 9;
    reseal(&im);
    expect_status(dir, "rank.dsq", &im, DSQ_ERR_RANGE, OPEN);

    im = load(good); /* a shape that does not match the part size */
    dsq_put_u64le(record(&im, 0) + DSQ_FILE_REC_SHAPE, 4);
    reseal(&im);
    expect_status(dir, "shape.dsq", &im, DSQ_ERR_SHAPE, OPEN);

    im = load(good); /* a shape whose size overflows */
    dsq_put_u64le(record(&im, 0) + DSQ_FILE_REC_SHAPE, UINT64_MAX / 2);
    reseal(&im);
    expect_status(dir, "overflow.dsq", &im, DSQ_ERR_OVERFLOW, OPEN);

    im = load(good); /* duplicate tensor name: "a.weight" → "x.weight" vs ... rename tensor 8 to tensor 0's name */
    {
        uint8_t *r0 = record(&im, 0), *r8 = record(&im, 8);
        uint8_t *n0 = r0 + DSQ_FILE_REC_SHAPE + 8 * r0[DSQ_FILE_REC_RANK] + DSQ_FILE_PART_BYTES * r0[DSQ_FILE_REC_PART_COUNT];
        uint8_t *n8 = r8 + DSQ_FILE_REC_SHAPE + 8 * r8[DSQ_FILE_REC_RANK] + DSQ_FILE_PART_BYTES * r8[DSQ_FILE_REC_PART_COUNT];
        assert_int_equal(dsq_file_le16(r0 + 4), 8); /* "a.weight" */
        memcpy(n8, n0, 8);
        dsq_put_u16le(r8 + 4, 8);
    }
    reseal(&im);
    expect_status(dir, "dupname.dsq", &im, DSQ_ERR_DUPLICATE, OPEN);

    im = load(good); /* record_bytes not a multiple of 8 */
    dsq_put_u32le(record(&im, 0), dsq_file_le32(record(&im, 0)) + 3);
    reseal(&im);
    expect_status(dir, "recbytes.dsq", &im, DSQ_ERR_FORMAT, OPEN);

    im = load(good); /* tensor count beyond what the table can hold */
    dsq_put_u32le(section(&im, DSQ_FILE_SECTION_TENSOR_TABLE), 1000000);
    reseal(&im);
    expect_status(dir, "count.dsq", &im, DSQ_ERR_RANGE, OPEN);

    im = load(good); /* metadata not JSON (same length) */
    {
        uint8_t *m = section(&im, DSQ_FILE_SECTION_METADATA);
        m[0] = 'X';
    }
    reseal(&im);
    expect_status(dir, "notjson.dsq", &im, DSQ_ERR_JSON, OPEN);

    im = load(good); /* metadata a JSON array, not an object */
    {
        uint8_t *m = section(&im, DSQ_FILE_SECTION_METADATA);
        size_t len = rd64(dir_entry(&im, DSQ_FILE_SECTION_METADATA) + 16);
        memset(m, ' ', len);
        m[0] = '[';
        m[len - 1] = ']';
    }
    reseal(&im);
    expect_status(dir, "array.dsq", &im, DSQ_ERR_JSON, OPEN);

    im = load(good); /* trailing bytes after the last section */
    im.b = realloc(im.b, im.n + 16);
    memset(im.b + im.n, 0, 16);
    im.n += 16;
    expect_status(dir, "trailing.dsq", &im, DSQ_ERR_FORMAT, OPEN);

    im = load(good); /* a data byte flipped: only verification sees it */
    {
        char *p = dsq_test_join(dir, "bitflip.dsq");
        im.b[rd64(rec_part(&im, 3, 0) + 8) + 17] ^= 0x10;
        dsq_test_write(p, im.b, im.n);
        dsq_ctr_reader *r = NULL;
        dsq_err err = DSQ_ERR_INIT;
        assert_int_equal(dsq_ctr_reader_open(p, NULL, &r, &err), DSQ_OK);
        assert_int_equal(dsq_ctr_verify(r, NULL, &err), DSQ_ERR_CHECKSUM);
        assert_non_null(strstr(err.msg, "layers.0.attn.wq_a.weight"));
        dsq_ctr_reader_close(r);
        dsq_err_clear(&err);
        free(p);
    }
    expect_status(dir, "bitflip.dsq", &im, DSQ_ERR_CHECKSUM, OPEN_VERIFY);

    im = load(good); /* a non-zero padding byte between parts */
    im.b[rd64(rec_part(&im, 1, 0) + 8) + 20] = 7;
    expect_status(dir, "padding.dsq", &im, DSQ_ERR_FORMAT, OPEN_VERIFY);

    /* zstd garbage: a compressed metadata section whose frame is junk (checksums resealed) */
    char *zpath = dsq_test_join(dir, "zgood.dsq");
    dsq_ctr_writer_options o = {.compress_metadata = 1};
    write_sample(zpath, &o);
    im = load(zpath);
    {
        uint8_t *m = section(&im, DSQ_FILE_SECTION_METADATA);
        size_t len = rd64(dir_entry(&im, DSQ_FILE_SECTION_METADATA) + 16);
        for (size_t i = 4; i < len; i++) m[i] = (uint8_t)(i * 37);
    }
    reseal(&im);
    expect_status(dir, "zgarbage.dsq", &im, DSQ_ERR_FORMAT, OPEN);
    im = load(zpath); /* a valid frame whose size disagrees with raw_bytes */
    dsq_put_u64le(dir_entry(&im, DSQ_FILE_SECTION_METADATA) + 24, 10);
    reseal(&im);
    expect_status(dir, "zsize.dsq", &im, DSQ_ERR_FORMAT, OPEN);
    free(zpath);

    im = load(good); /* an unknown must-understand section kind */
    dsq_put_u32le(dir_entry(&im, DSQ_FILE_SECTION_METADATA), 77);
    dsq_put_u32le(dir_entry(&im, 77) + 4, DSQ_FILE_SECTION_MUST_UNDERSTAND);
    reseal(&im);
    expect_status(dir, "mustknow.dsq", &im, DSQ_ERR_UNSUPPORTED, OPEN);

    im = load(good); /* an unknown skippable kind in place of the metadata: metadata missing */
    dsq_put_u32le(dir_entry(&im, DSQ_FILE_SECTION_METADATA), 77);
    reseal(&im);
    expect_status(dir, "nometa.dsq", &im, DSQ_ERR_MISSING, OPEN);

    im = load(good); /* two tables */
    dsq_put_u32le(dir_entry(&im, DSQ_FILE_SECTION_METADATA), DSQ_FILE_SECTION_TENSOR_TABLE);
    reseal(&im);
    expect_status(dir, "twotables.dsq", &im, DSQ_ERR_DUPLICATE, OPEN);

    im = load(good); /* bad alignment field */
    dsq_put_u32le(im.b + DSQ_FILE_HDR_ALIGN_LARGE, 3000);
    reseal(&im);
    expect_status(dir, "align.dsq", &im, DSQ_ERR_FORMAT, OPEN);

    im = load(good); /* alignment above 1 MiB */
    dsq_put_u32le(im.b + DSQ_FILE_HDR_ALIGN_LARGE, 1u << 21);
    reseal(&im);
    expect_status(dir, "align2.dsq", &im, DSQ_ERR_FORMAT, OPEN);

    im = load(good); /* section count 0 */
    dsq_put_u32le(im.b + DSQ_FILE_HDR_SECTION_COUNT, 0);
    reseal(&im);
    expect_status(dir, "nsec.dsq", &im, DSQ_ERR_RANGE, OPEN);

    im = load(good); /* source range outside the outer axis */
    {
        uint8_t *r5 = record(&im, 5);
        uint8_t *src = r5 + DSQ_FILE_REC_SHAPE + 8 * 2 + DSQ_FILE_PART_BYTES * 1 + 48; /* name: 41 bytes → 48 */
        assert_int_equal(dsq_file_le64(src + DSQ_FILE_SRC_COUNT), 128);
        dsq_put_u64le(src + DSQ_FILE_SRC_COUNT, 129);
    }
    reseal(&im);
    expect_status(dir, "srcrange.dsq", &im, DSQ_ERR_RANGE, OPEN);

    dsq_test_rmdir(dir);
    free(good);
    free(dir);
}

/* Every single-byte corruption of the header, directory and table either opens cleanly or fails with
 * an error message; never crashes (ASan/UBSan make this meaningful). */
static void test_mutations(void **state) {
    char *dir = dsq_test_tmpdir(), *good = dsq_test_join(dir, "good.dsq"), *bad = dsq_test_join(dir, "bad.dsq");
    write_sample(good, NULL);
    image im = load(good);
    uint64_t tail = rd64(im.b + DSQ_FILE_HDR_DIRECTORY_OFFSET);
    int opened = 0, failed = 0;
    uint64_t positions[4096];
    size_t np = 0;
    for (uint64_t i = 0; i < DSQ_FILE_HEADER_BYTES; i++) positions[np++] = i;
    for (uint64_t i = tail; i < im.n && np < 4096; i += (dsq_test_asan() ? 3 : 1)) positions[np++] = i;
    for (size_t k = 0; k < np; k++) {
        uint64_t pos = positions[k];
        uint8_t save = im.b[pos];
        im.b[pos] ^= (uint8_t)(1u << (k % 8));
        bool sealed = k % 2 == 0;
        uint8_t hdr_save[DSQ_FILE_HEADER_BYTES], *dirp = im.b + tail, dir_save[96];
        memcpy(hdr_save, im.b, sizeof hdr_save);
        memcpy(dir_save, dirp, sizeof dir_save);
        if (sealed) reseal(&im);
        dsq_test_write(bad, im.b, im.n);
        memcpy(im.b, hdr_save, sizeof hdr_save);
        memcpy(dirp, dir_save, sizeof dir_save);
        im.b[pos] = save;
        dsq_ctr_reader *r = NULL;
        dsq_err err = DSQ_ERR_INIT;
        dsq_status s = dsq_ctr_reader_open(bad, NULL, &r, &err);
        if (s == DSQ_OK) {
            opened++;
            for (size_t i = 0; i < dsq_ctr_count(r); i++) {
                const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
                for (int p = 0; p < t->n_parts; p++) {
                    /* views stay inside the file */
                    assert_true(t->parts[p].offset + t->parts[p].bytes <= im.n);
                    volatile uint8_t last = ((const uint8_t *)t->parts[p].data)[t->parts[p].bytes - 1];
                    (void)last;
                }
            }
            dsq_ctr_reader_close(r);
        } else {
            failed++;
            assert_true(err.n >= 1 && err.msg[0]);
        }
        dsq_err_clear(&err);
    }
    assert_true(failed > opened);
    free(im.b);
    dsq_test_rmdir(dir);
    free(good);
    free(bad);
    free(dir);
}

/* ---- pack / unpack ---- */

static void test_pack_unpack(void **state) {
    char *dir = dsq_test_tmpdir(), *src = dsq_test_join(dir, "m.dsq"), *z = dsq_test_join(dir, "m.dsqz");
    char *back = dsq_test_join(dir, "back.dsq"), *one = dsq_test_join(dir, "one.dsq");
    write_sample(src, NULL);
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_pack_stats st;
    assert_int_equal(dsq_ctr_pack(src, z, 3, 0, false, &st, &err), DSQ_OK);
    assert_int_equal(st.frames, N_SAMPLES + 2);
    assert_int_equal(dsq_ctr_pack(src, z, 3, 0, false, &st, &err), DSQ_ERR_EXISTS);
    assert_int_equal(dsq_ctr_unpack(z, back, NULL, 0, false, &st, &err), DSQ_OK);
    size_t na, nb;
    char *x = dsq_test_read(src, &na), *y = dsq_test_read(back, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(y);
    /* one tensor alone, by stored name and by source name */
    const char *names[] = {"layers.0.ffn.experts.w1.weight", "layers.1.attn.compressor.wgate.weight", "norm.weight"};
    assert_int_equal(dsq_ctr_unpack(z, one, names, 3, false, &st, &err), DSQ_OK);
    dsq_ctr_reader *a = NULL, *b = NULL;
    dsq_ctr_reader_options ro = {.verify = true};
    assert_int_equal(dsq_ctr_reader_open(src, NULL, &a, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_reader_open(one, &ro, &b, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_count(b), 3);
    for (size_t i = 0; i < dsq_ctr_count(b); i++) {
        const dsq_ctr_tensor *tb = dsq_ctr_at(b, i), *ta = dsq_ctr_find(a, tb->name);
        assert_non_null(ta);
        assert_int_equal(tb->n_sources, ta->n_sources);
        for (int p = 0; p < ta->n_parts; p++) {
            assert_int_equal(ta->parts[p].bytes, tb->parts[p].bytes);
            assert_true(ta->parts[p].xxh3 == tb->parts[p].xxh3);
            assert_memory_equal(ta->parts[p].data, tb->parts[p].data, ta->parts[p].bytes);
        }
    }
    assert_string_equal(dsq_ctr_metadata(a, NULL), dsq_ctr_metadata(b, NULL));
    dsq_ctr_reader_close(a);
    dsq_ctr_reader_close(b);
    const char *missing[] = {"no.such.tensor"};
    char *none = dsq_test_join(dir, "none.dsq");
    assert_int_equal(dsq_ctr_unpack(z, none, missing, 1, false, &st, &err), DSQ_ERR_MISSING);
    assert_false(dsq_path_exists(none));
    /* a corrupted frame is caught and nothing is published */
    size_t nz;
    char *zb = dsq_test_read(z, &nz);
    zb[64 + 40] ^= 0x55; /* inside frame 0's compressed bytes */
    char *zbad = dsq_test_join(dir, "bad.dsqz");
    dsq_test_write(zbad, zb, nz);
    dsq_status s = dsq_ctr_unpack(zbad, none, NULL, 0, false, &st, &err);
    assert_true(s == DSQ_ERR_CHECKSUM || s == DSQ_ERR_FORMAT || s == DSQ_ERR_TRUNCATED);
    assert_false(dsq_path_exists(none));
    zb[64 + 40] ^= 0x55;
    dsq_test_write(zbad, zb, nz - 3); /* truncated */
    assert_int_equal(dsq_ctr_unpack(zbad, none, NULL, 0, false, &st, &err), DSQ_ERR_TRUNCATED);
    zb[3] = 'X';
    dsq_test_write(zbad, zb, nz);
    assert_int_equal(dsq_ctr_unpack(zbad, none, NULL, 0, false, &st, &err), DSQ_ERR_MAGIC);
    free(zb);
    free(zbad);
    free(none);
    free(x);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(src);
    free(z);
    free(back);
    free(one);
    free(dir);
}

static void test_cli_pack(void **state) {
    char *dir = dsq_test_tmpdir(), *src = dsq_test_join(dir, "m.dsq");
    write_sample(src, NULL);
    char *out = NULL;
    assert_int_equal(dsq_test_run(&out, NULL, "pack '%s' '%s/m.dsqz' --json", src, dir), 0);
    assert_non_null(strstr(out, "\"frames\": 11"));
    free(out);
    assert_int_equal(dsq_test_run(NULL, NULL, "unpack '%s/m.dsqz' '%s/b.dsq'", dir, dir), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "unpack '%s/m.dsqz' '%s/t.dsq' --tensor embed.weight", dir, dir), 0);
    char *b = dsq_test_join(dir, "b.dsq");
    size_t na, nb;
    char *x = dsq_test_read(src, &na), *y = dsq_test_read(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
    free(b);
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "unpack '%s/m.dsqz' '%s/b.dsq'", dir, dir), 1);
    assert_non_null(strstr(err, "already exists"));
    free(err);
    assert_int_equal(dsq_test_run(NULL, NULL, "pack --help"), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "pack onlyone"), 2);
    dsq_test_rmdir(dir);
    free(src);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_compressed_metadata),
        cmocka_unit_test(test_deterministic), cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_atomic),       cmocka_unit_test(test_resume),
        cmocka_unit_test(test_fault_injection), cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_mutations),    cmocka_unit_test(test_pack_unpack),
        cmocka_unit_test(test_cli_pack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
