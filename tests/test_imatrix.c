/* Importance matrices (lib/quant/imatrix.c), `dsq calibrate` and `dsq convert --imatrix`:
 *   - accumulation, lookup, the minimum-rows fallback, width mismatches;
 *   - the file round trip, and one malformed file per class, each failing with its status;
 *   - end to end on the trained tiny model: calibrate over a chunk of calib.txt, convert the routed
 *     experts' w1 to q4_k with and without the imatrix: experts with enough tokens get a lower
 *     importance-weighted error (the metric the encoder minimises), the others identical bytes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_container.h"
#include "dsq_imatrix.h"
#include "dsq_kquant.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"

static void test_accumulate(void **state) {
    (void)state;
    dsq_imatrix *m;
    assert_int_equal(dsq_imatrix_create(&m, NULL), DSQ_OK);
    float x[3 * 4] = {1, 2, 3, 4, -1, 0, 1, 2, 2, 2, 2, 2};
    assert_int_equal(dsq_imatrix_add(m, "a.weight", x, 4, 3, 4, NULL), DSQ_OK);
    assert_int_equal(dsq_imatrix_add(m, "b.weight", x, 4, 2, 3, NULL), DSQ_OK); /* 3 of 4 columns, stride 4 */
    assert_int_equal(dsq_imatrix_add(m, "a.weight", x, 4, 1, 3, NULL), DSQ_ERR_SHAPE);
    assert_null(dsq_imatrix_importance(m, "a.weight", 4)); /* 3 rows < DSQ_IMATRIX_MIN_ROWS */
    for (int k = 0; k < DSQ_IMATRIX_MIN_ROWS; k++)
        assert_int_equal(dsq_imatrix_add(m, "a.weight", x, 4, 1, 4, NULL), DSQ_OK);
    const float *imp = dsq_imatrix_importance(m, "a.weight", 4);
    assert_non_null(imp);
    /* rows: 3 + 16; Σx² of column 0: 1 + 1 + 4 + 16·1 = 22 */
    assert_true(fabsf(imp[0] - 22.0f / 19.0f) < 1e-6f);
    assert_true(fabsf(imp[3] - (16 + 4 + 4 + 16 * 16) / 19.0f) < 1e-5f);
    assert_null(dsq_imatrix_importance(m, "a.weight", 5));
    assert_null(dsq_imatrix_importance(m, "c.weight", 4));
    assert_int_equal(dsq_imatrix_count(m), 2);
    assert_string_equal(dsq_imatrix_name(m, 1), "b.weight");
    assert_int_equal(dsq_imatrix_cols(m, 1), 3);
    assert_int_equal(dsq_imatrix_rows(m, 0), 19);
    /* the observer keeps its first error */
    dsq_imatrix_observe(m, "a.weight", x, 4, 1, 2);
    dsq_imatrix_observe(m, "a.weight", x, 4, 1, 4);
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_imatrix_error(m, &e), DSQ_ERR_SHAPE);
    assert_non_null(strstr(e.msg, "a.weight"));
    dsq_err_clear(&e);
    assert_int_equal(dsq_imatrix_rows(m, 0), 19);
    dsq_imatrix_free(m);
}

static void test_file_round_trip(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "x.imatrix");
    dsq_imatrix *m, *l;
    assert_int_equal(dsq_imatrix_create(&m, NULL), DSQ_OK);
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = (float)(i % 13) - 6; /* small integers: sums are exact in f32 */
    for (int k = 0; k < 20; k++)
        assert_int_equal(dsq_imatrix_add(m, "layers.0.ffn.experts.3.w1.weight", x, 256, 1, 256, NULL), DSQ_OK);
    assert_int_equal(dsq_imatrix_add(m, "layers.0.attn.wq_a.weight", x, 128, 2, 128, NULL), DSQ_OK);
    assert_int_equal(dsq_imatrix_save(m, path, false, NULL), DSQ_OK);
    assert_int_equal(dsq_imatrix_save(m, path, false, NULL), DSQ_ERR_EXISTS);
    assert_int_equal(dsq_imatrix_load(path, &l, NULL), DSQ_OK);
    assert_int_equal(dsq_imatrix_count(l), 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(dsq_imatrix_name(l, i), dsq_imatrix_name(m, i));
        assert_int_equal(dsq_imatrix_cols(l, i), dsq_imatrix_cols(m, i));
        assert_int_equal(dsq_imatrix_rows(l, i), dsq_imatrix_rows(m, i));
    }
    const float *a = dsq_imatrix_importance(m, "layers.0.ffn.experts.3.w1.weight", 256);
    const float *b = dsq_imatrix_importance(l, "layers.0.ffn.experts.3.w1.weight", 256);
    assert_non_null(a);
    assert_non_null(b);
    assert_memory_equal(a, b, 256 * sizeof(float));
    dsq_imatrix_free(m);
    dsq_imatrix_free(l);
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
}

/* A file with the given tensors (F32 unless dtype says otherwise) and optional format metadata. */
typedef struct ft {
    const char *name;
    dsq_dtype dtype;
    int rank;
    uint64_t n;
    float value;
} ft;
static void write_file(const char *path, const char *format, const ft *t, int nt) {
    dsq_st_writer *w;
    assert_int_equal(dsq_st_writer_create(path, true, &w, NULL), DSQ_OK);
    if (format) assert_int_equal(dsq_st_writer_meta(w, "format", format, NULL), DSQ_OK);
    for (int i = 0; i < nt; i++) {
        uint64_t shape[2] = {t[i].n, 1};
        assert_int_equal(dsq_st_writer_add(w, t[i].name, t[i].dtype, t[i].rank, shape, NULL), DSQ_OK);
    }
    assert_int_equal(dsq_st_writer_begin(w, NULL), DSQ_OK);
    for (int i = 0; i < nt; i++)
        for (uint64_t k = 0; k < t[i].n; k++) {
            if (t[i].dtype == DSQ_DTYPE_F32)
                assert_int_equal(dsq_st_writer_write(w, &t[i].value, 4, NULL), DSQ_OK);
            else
                assert_int_equal(dsq_st_writer_write(w, "\0\0", 2, NULL), DSQ_OK);
        }
    assert_int_equal(dsq_st_writer_finish(w, NULL), DSQ_OK);
}

static void test_malformed(void **state) {
    (void)state;
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "bad.imatrix");
    const dsq_dtype F = DSQ_DTYPE_F32;
    struct {
        const char *what, *format;
        ft t[3];
        int nt;
        dsq_status want;
    } cases[] = {
        {"valid", "dsq-imatrix", {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, 4.0f}}, 2, DSQ_OK},
        {"no format", NULL, {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"other format", "gguf", {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"missing counts", "dsq-imatrix", {{"w.in_sum2", F, 1, 8, 1.0f}}, 1, DSQ_ERR_FORMAT},
        {"orphan counts",
         "dsq-imatrix",
         {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, 4.0f}, {"v.counts", F, 1, 1, 4.0f}},
         3,
         DSQ_ERR_FORMAT},
        {"zero counts", "dsq-imatrix", {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, 0.0f}}, 2, DSQ_ERR_FORMAT},
        {"fractional counts",
         "dsq-imatrix",
         {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, 2.5f}},
         2,
         DSQ_ERR_FORMAT},
        {"NaN counts", "dsq-imatrix", {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, NAN}}, 2, DSQ_ERR_FORMAT},
        {"negative sum",
         "dsq-imatrix",
         {{"w.in_sum2", F, 1, 8, -1.0f}, {"w.counts", F, 1, 1, 4.0f}},
         2,
         DSQ_ERR_NONFINITE},
        {"infinite sum",
         "dsq-imatrix",
         {{"w.in_sum2", F, 1, 8, INFINITY}, {"w.counts", F, 1, 1, 4.0f}},
         2,
         DSQ_ERR_NONFINITE},
        {"F16 sums",
         "dsq-imatrix",
         {{"w.in_sum2", DSQ_DTYPE_F16, 1, 8, 0}, {"w.counts", F, 1, 1, 4.0f}},
         2,
         DSQ_ERR_FORMAT},
        {"rank 2 sums", "dsq-imatrix", {{"w.in_sum2", F, 2, 8, 1.0f}, {"w.counts", F, 1, 1, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"two counts", "dsq-imatrix", {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 2, 4.0f}}, 2, DSQ_ERR_FORMAT},
        {"stray tensor",
         "dsq-imatrix",
         {{"w.in_sum2", F, 1, 8, 1.0f}, {"w.counts", F, 1, 1, 4.0f}, {"w.bias", F, 1, 1, 4.0f}},
         3,
         DSQ_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(path, cases[i].format, cases[i].t, cases[i].nt);
        dsq_imatrix *m = NULL;
        dsq_err e = DSQ_ERR_INIT;
        dsq_status s = dsq_imatrix_load(path, &m, &e);
        if (s != cases[i].want) fail_msg("%s: status %d, want %d (%s)", cases[i].what, s, cases[i].want, e.msg);
        if (s) {
            assert_null(m);
            assert_non_null(strstr(e.msg, "bad.imatrix"));
        }
        dsq_err_clear(&e);
        dsq_imatrix_free(m);
    }
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
}

/* Decoded rows [E·R, C] of a stacked expert tensor in a container (MXFP4 or a k-quant). */
static float *read_stack(const char *file, const char *name, uint64_t *E, uint64_t *R, uint64_t *C, uint8_t **raw,
                         size_t *raw_n) {
    dsq_ctr_reader *r;
    assert_int_equal(dsq_ctr_reader_open(file, NULL, &r, NULL), DSQ_OK);
    const dsq_ctr_tensor *t = dsq_ctr_find(r, name);
    assert_non_null(t);
    *E = t->shape[0], *R = t->shape[1], *C = t->shape[2];
    const dsq_ctr_part *d = dsq_ctr_tensor_part(t, DSQ_FILE_PART_DATA),
                       *s = dsq_ctr_tensor_part(t, DSQ_FILE_PART_SCALES);
    uint8_t *db = malloc(d->bytes), *sb = s ? malloc(s->bytes) : NULL;
    assert_int_equal(dsq_ctr_read(r, t, 0, 0, db, d->bytes, NULL), DSQ_OK);
    if (s) assert_int_equal(dsq_ctr_read(r, t, 1, 0, sb, s->bytes, NULL), DSQ_OK);
    dsq_qtensor q = {t->encoding, *E * *R, *C, 0, db, sb, NULL, 0};
    float *out = malloc(sizeof(float) * *E * *R * *C);
    assert_int_equal(dsq_codec_decode(&q, 0, *E * *R, out, NULL, NULL), DSQ_OK);
    if (raw)
        *raw = db, *raw_n = d->bytes;
    else
        free(db);
    free(sb);
    dsq_ctr_reader_close(r);
    return out;
}

static void test_calibrate_convert(void **state) {
    (void)state;
    char *model = dsq_test_shared_path("models/v4-tiny-trained");
    char *dir = dsq_test_tmpdir(), *imx = dsq_test_join(dir, "c.imatrix");
    char *out = NULL, *err = NULL;
    int rc = dsq_test_run(&out, &err, "calibrate %s %s/calib.txt --out %s --ctx 128 --chunks 1", model, model, imx);
    if (rc) fail_msg("calibrate: %s", err);
    assert_non_null(strstr(out, "routed-expert tokens per layer"));
    free(out), free(err);
    dsq_imatrix *m;
    assert_int_equal(dsq_imatrix_load(imx, &m, NULL), DSQ_OK);
    /* every routed expert's tokens of a layer add up to top-k · 128 */
    uint64_t sum = 0;
    for (int e = 0; e < 8; e++) {
        char nm[64];
        snprintf(nm, sizeof nm, "layers.1.ffn.experts.%d.w1.weight", e);
        for (size_t i = 0; i < dsq_imatrix_count(m); i++)
            if (!strcmp(dsq_imatrix_name(m, i), nm)) sum += dsq_imatrix_rows(m, i);
    }
    assert_int_equal(sum, 2 * 128);
    /* dsq inspect shows the same coverage, as text and JSON */
    rc = dsq_test_run(&out, &err, "inspect %s", imx);
    if (rc) fail_msg("inspect: %s", err);
    assert_non_null(strstr(out, "layer 1: min"));
    free(out), free(err);
    rc = dsq_test_run(&out, &err, "inspect %s --json", imx);
    if (rc) fail_msg("inspect --json: %s", err);
    assert_non_null(strstr(out, "\"layer\": 1, \"expert_tokens\": ["));
    free(out), free(err);
    dsq_test_write(imx, "not an imatrix", 14); /* a broken file is a one-line error, not a crash */
    rc = dsq_test_run(&out, &err, "inspect %s", imx);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "c.imatrix"));
    free(out), free(err);
    rc = dsq_test_run(&out, &err, "calibrate %s %s/calib.txt --out %s --ctx 128 --chunks 1 --overwrite", model, model,
                      imx);
    assert_int_equal(rc, 0);
    free(out), free(err);
    const char *build[3] = {"release", "plain", "imx"};
    char *paths[3];
    for (int b = 0; b < 3; b++) {
        char f[32];
        snprintf(f, sizeof f, "%s.dsq", build[b]);
        paths[b] = dsq_test_join(dir, f);
        rc = dsq_test_run(NULL, &err, "convert %s %s --recipe release %s %s%s", model, paths[b],
                          b ? "--override '*experts.*.w1*=q4_k'" : "", b == 2 ? "--imatrix " : "", b == 2 ? imx : "");
        if (rc) fail_msg("convert %s: %s", build[b], err);
        free(err);
    }
    /* the bytes depend neither on the thread count nor on the chunking */
    char *again = dsq_test_join(dir, "again.dsq");
    rc = dsq_test_run(NULL, &err,
                      "convert %s %s --recipe release --override '*experts.*.w1*=q4_k' --imatrix %s "
                      "--threads 2 --chunk-bytes 1",
                      model, again, imx);
    if (rc) fail_msg("convert --threads 2: %s", err);
    free(err);
    size_t la, lb;
    char *ba = dsq_test_read(paths[2], &la), *bb = dsq_test_read(again, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ba, bb, la);
    free(ba), free(bb), free(again);
    uint64_t E, R, C;
    uint8_t *raw[2];
    size_t raw_n[2];
    float *src = read_stack(paths[0], "layers.1.ffn.experts.w1.weight", &E, &R, &C, NULL, NULL);
    float *plain = read_stack(paths[1], "layers.1.ffn.experts.w1.weight", &E, &R, &C, &raw[0], &raw_n[0]);
    float *withi = read_stack(paths[2], "layers.1.ffn.experts.w1.weight", &E, &R, &C, &raw[1], &raw_n[1]);
    assert_int_equal(raw_n[0], raw_n[1]);
    uint64_t row_bytes = C / DSQ_KQ_BLOCK * (uint64_t)dsq_kquant_block_bytes(DSQ_ENC_Q4_K);
    int weighted = 0;
    for (uint64_t e = 0; e < E; e++) {
        char nm[64];
        snprintf(nm, sizeof nm, "layers.1.ffn.experts.%llu.w1.weight", (unsigned long long)e);
        const float *imp = dsq_imatrix_importance(m, nm, C);
        size_t off = (size_t)(e * R * row_bytes), n = (size_t)(R * row_bytes);
        if (!imp) { /* too few tokens (or none): plain squared error, the same bytes */
            assert_memory_equal(raw[0] + off, raw[1] + off, n);
            continue;
        }
        /* the encoder's objective: importance·sqrt(σ² + x²)-weighted squared error (dsq_kquant.h) */
        double ep = dsq_kquant_objective(DSQ_ENC_Q4_K, src + e * R * C, R, C, imp, raw[0] + off);
        double ei = dsq_kquant_objective(DSQ_ENC_Q4_K, src + e * R * C, R, C, imp, raw[1] + off);
        printf("  expert %llu: weighted error (the encoder's objective) with / without imatrix %.4f\n",
               (unsigned long long)e, ei / ep);
        assert_true(ei < ep);
        weighted++;
    }
    assert_true(weighted >= 4);
    free(src), free(plain), free(withi), free(raw[0]), free(raw[1]);
    for (int b = 0; b < 3; b++) free(paths[b]);
    dsq_imatrix_free(m);
    free(imx);
    free(model);
    dsq_test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accumulate),
        cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_calibrate_convert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
