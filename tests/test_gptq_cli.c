/* `dsq convert --method gptq` on the trained tiny V4: the container verifies and evaluates, the
 * summary names GPTQ'd and fallen-back experts, the bytes do not depend on the thread count, and bad
 * options fail with one line.  The quantized weights go through a spill file (dsq_gptq_calib.h): the
 * heap holds at most one of them, the result equals the in-memory one byte for byte, and no spill file
 * is left after success, a failed write or a kill. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "dsq_gptq_calib.h"
#include "dsq_test.h"
#include "dsq_tokenizer.h"

static char *tmp, *model, *calib;

static int setup(void **state) {
    (void)state;
    setenv("OMP_WAIT_POLICY", "passive", 0); /* CI shares its cores: idle OpenMP threads sleep instead of spinning */
    tmp = dsq_test_tmpdir();
    model = dsq_test_shared_path("models/v4-tiny-trained");
    char *full = dsq_test_join(model, "calib.txt");
    size_t n;
    char *text = dsq_test_read(full, &n);
    calib = dsq_test_join(tmp, "calib.txt");
    dsq_test_write(calib, text, n < 8000 ? n : 8000); /* ~1,000 tokens: some experts below the GPTQ threshold */
    free(text);
    free(full);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    dsq_test_rmdir(tmp);
    free(tmp), free(model), free(calib);
    return 0;
}

#define RECIPE "--recipe int4 --override '*.experts.*.w1.weight=q4_k' --override '*.experts.*.w3.weight=q4_k'"
#define CALIB "--method gptq --calib %s --calib-chunks 4 --calib-ctx 256"

/* One Hessian factorisation per distinct input in convert's JSON: every GPTQ'd w3 has a GPTQ'd w1 and
 * shares its factor, so "factorisations" = GPTQ'd weights − GPTQ'd w3s + `windows` (the extra row
 * windows of wo_a: o_groups − 1 per GPTQ'd wo_a); returns the w3s counted. */
static size_t check_shared_factors(const char *so, size_t windows) {
    size_t n_gptq = 0, n_w3 = 0;
    for (const char *q = strstr(so, "\"weights\": ["); (q = strstr(q, "{\"name\": \"")) != NULL; q++) {
        const char *nm = q + 10, *end = strchr(nm, '"');
        assert_non_null(end);
        if (strncmp(end, "\", \"method\": \"gptq\"", 19)) continue;
        n_gptq++;
        if (end - nm > 10 && !strncmp(end - 10, ".w3.weight", 10)) {
            char w1[300];
            snprintf(w1, sizeof w1, "\"name\": \"%.*s1.weight\", \"method\": \"gptq\"", (int)(end - nm - 8), nm);
            assert_non_null(strstr(so, w1));
            n_w3++;
        }
    }
    const char *fp = strstr(so, "\"factorisations\": ");
    assert_non_null(fp);
    assert_int_equal(strtoull(fp + 18, NULL, 10), n_gptq - n_w3 + windows);
    return n_w3;
}

/* The build verifies and evaluates, to a sane perplexity (the source scores about 19 on this text). */
static void verifies_and_evaluates(const char *path) {
    char *so = NULL, *se = NULL;
    assert_int_equal(dsq_test_run(&so, &se, "verify %s", path), 0);
    free(so), free(se);
    assert_int_equal(dsq_test_run(&so, &se, "eval ppl %s %s --ctx 256 --chunks 2 --json --threads 1", path, calib), 0);
    const char *p = strstr(so, "\"ppl\": ");
    assert_non_null(p);
    double ppl = atof(p + 7);
    assert_true(ppl > 1 && ppl < 100);
    free(so), free(se);
}

static void test_gptq_convert(void **state) {
    (void)state;
    char *a = dsq_test_join(tmp, "a.dsq"), *b = dsq_test_join(tmp, "b.dsq"), *so = NULL, *se = NULL;
    int rc = dsq_test_run(&so, &se, "convert %s %s " RECIPE " " CALIB " --threads 1 --json", model, a, calib);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    /* both paths taken and reported: GPTQ where the expert saw >= 2 rows per column, else imatrix rounding */
    assert_non_null(strstr(so, "\"gptq\": {"));
    assert_non_null(strstr(so, "\"method\": \"gptq\""));
    assert_non_null(strstr(so, "\"method\": \"imatrix\""));
    assert_non_null(strstr(so, "\"name\": \"layers.0.ffn.experts.0.w1.weight\""));
    check_shared_factors(so, 0);
    free(so), free(se);
    /* 3,072 calibration tokens (~770 rows per expert, 2 per input column of w1 needed): w1/w3 pairs GPTQ'd
     * from one factor.  wo_a in NVFP4: GPTQ per output group (2 groups of 128 rows, each with the
     * attention output of its own heads as input, one H and one factor each, one tensor scale) */
    char *c = dsq_test_join(tmp, "c.dsq"), *full = dsq_test_join(model, "calib.txt");
    rc = dsq_test_run(&so, &se, "convert %s %s " RECIPE " --override '*.wo_a.weight=nvfp4' --method gptq --calib %s "
                      "--calib-chunks 12 --calib-ctx 256 --threads 2 --json", model, c, full);
    assert_int_equal(rc, 0);
    for (int L = 0; L < 4; L++) {
        char want[128];
        snprintf(want, sizeof want, "\"name\": \"layers.%d.attn.wo_a.weight\", \"method\": \"gptq\", \"rows\": 3072", L);
        assert_non_null(strstr(so, want));
    }
    /* MTP block 0 too: its inputs come from the quantized main model's output (3,060 positions: the
     * block predicts from position 1 on) */
    assert_non_null(strstr(so, "\"name\": \"mtp.0.attn.wo_a.weight\", \"method\": \"gptq\", \"rows\": 3060"));
    assert_non_null(strstr(so, "\"name\": \"mtp.0.ffn.experts.0.w3.weight\", \"method\": \"gptq\""));
    assert_non_null(strstr(so, "\"layers\": 5,"));
    assert_true(check_shared_factors(so, 5) >= 8);
    /* --dry-run counts the spill: its bound covers the spill this run wrote, and the free-space check
     * adds it (absent from the plan without --method gptq) */
    const char *sb = strstr(so, "\"spill_bytes\": ");
    assert_non_null(sb);
    unsigned long long spilled = strtoull(sb + 15, NULL, 10);
    assert_true(spilled > 0);
    char *dso = NULL, *dse = NULL;
    rc = dsq_test_run(&dso, &dse, "convert %s %s/dry.dsq " RECIPE " --override '*.wo_a.weight=nvfp4' --method gptq "
                      "--calib %s --dry-run --json", model, tmp, full);
    assert_int_equal(rc, 0);
    const char *mx = strstr(dso, "\"spill_bytes_max\": ");
    assert_non_null(mx);
    unsigned long long bound = strtoull(mx + 19, NULL, 10);
    assert_true(bound >= spilled);
    const char *bo = strstr(dso, "\"bytes_out\": ");
    assert_non_null(bo);
    assert_true(bound < strtoull(bo + 13, NULL, 10)); /* the copied tensors are not spilled */
    free(dso), free(dse);
    rc = dsq_test_run(&dso, &dse, "convert %s %s/dry.dsq " RECIPE " --override '*.wo_a.weight=nvfp4' --method gptq "
                      "--calib %s --dry-run", model, tmp, full);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(dso, "+ GPTQ spill up to "));
    free(dso), free(dse);
    rc = dsq_test_run(&dso, &dse, "convert %s %s/dry.dsq " RECIPE " --dry-run --json", model, tmp);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(dso, "\"spill_bytes_max\": 0,"));
    free(dso), free(dse);
    free(so), free(se);
    verifies_and_evaluates(c);
    free(c), free(full);
    verifies_and_evaluates(a);
    /* the GGUF route: k-quant and int4 experts move into llama.cpp's Q4_K / Q4_0 blocks unchanged */
    char *g = dsq_test_join(tmp, "a.gguf");
    rc = dsq_test_run(&so, &se, "export %s %s", a, g);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(so, "Q4_K"));
    assert_non_null(strstr(so, "re-quantized: relative RMS error 0, max |err| 0"));
    free(so), free(se), free(g);
    /* same inputs, two threads, experts collected three per pass: the same bytes */
    rc = dsq_test_run(NULL, &se, "convert %s %s " RECIPE " " CALIB " --threads 2 --gptq-expert-batch 3", model, b, calib);
    assert_int_equal(rc, 0);
    free(se);
    size_t na, nb;
    char *da = dsq_test_read(a, &na), *db = dsq_test_read(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da), free(db);
    /* the spill files next to the outputs are gone; the summary states the spill */
    char *sp = dsq_test_join(tmp, "a.dsq.gptq-spill");
    struct stat st;
    assert_int_equal(lstat(sp, &st), -1);
    free(sp);
    /* killed (SIGKILL) while the converter writes, after GPTQ: no spill file left (unlinked at creation) */
    char *k = dsq_test_join(tmp, "k.dsq"), *ks = dsq_test_join(tmp, "k.dsq.gptq-spill");
    rc = dsq_test_run(NULL, NULL, "version >/dev/null; DSQ_CONVERT_TEST_SIGNAL=1:9 '%s' convert %s %s " RECIPE " " CALIB,
                      dsq_test_bin(), model, k, calib);
    assert_int_equal(rc, 128 + 9);
    assert_int_equal(lstat(ks, &st), -1);
    assert_int_equal(lstat(k, &st), -1);
    /* a spill write that fails (file size limit below the spill's 1.7 MB): one line naming the spill, no
     * spill and no output left */
    rc = dsq_test_run(NULL, &se, "version >/dev/null; ulimit -f 600; '%s' convert %s %s " RECIPE " " CALIB,
                      dsq_test_bin(), model, k, calib);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(se, "k.dsq.gptq-spill: writing layers."));
    assert_non_null(strstr(se, "File too large"));
    assert_int_equal(lstat(ks, &st), -1);
    assert_int_equal(lstat(k, &st), -1);
    free(se), free(k), free(ks), free(a), free(b);
}

/* ---- the spill file, at the library level ---- */

typedef struct probe {
    const char *spill;
    int layers, present; /* layers done; how many times the spill's name existed then */
} probe;

static void probe_layer(void *user, int layer, int n_layers, double seconds, size_t weights) {
    (void)layer, (void)n_layers, (void)seconds, (void)weights;
    probe *p = user;
    struct stat st;
    p->layers++;
    if (lstat(p->spill, &st) == 0) p->present++;
}

static dsq_status calib_run(const dsq_recipe *rc, const int32_t *ids, uint64_t n, const char *spill, probe *pr,
                            dsq_gptq_result **out, dsq_err *err) {
    dsq_gptq_calib_options o;
    memset(&o, 0, sizeof o);
    dsq_gptq_options_default(&o.gptq);
    o.gptq.threads = 1;
    dsq_score_options_default(&o.score);
    o.score.n_ctx = 256;
    o.score.max_chunks = 4;
    o.score.eval.threads = 1;
    o.spill = spill;
    o.progress = probe_layer;
    o.user = pr;
    return dsq_gptq_calibrate(model, rc, ids, n, &o, out, err);
}

static void test_gptq_spill(void **state) {
    (void)state;
    dsq_err err = DSQ_ERR_INIT;
    dsq_tok *tok = NULL;
    assert_int_equal(dsq_tok_open(model, NULL, &tok, &err), DSQ_OK);
    size_t len;
    char *text = dsq_test_read(calib, &len);
    dsq_tok_ids ids = {0};
    assert_int_equal(dsq_tok_encode(tok, text, len, &ids, &err), DSQ_OK);
    dsq_recipe *rc = NULL;
    assert_int_equal(dsq_recipe_load("int4", &rc, &err), DSQ_OK);
    assert_int_equal(dsq_recipe_override(rc, "*.experts.*.w1.weight=q4_k", &err), DSQ_OK);
    assert_int_equal(dsq_recipe_override(rc, "*.attn.wq_a.weight=nvfp4", &err), DSQ_OK);
    char *spill = dsq_test_join(tmp, "s.dsq.gptq-spill"), *victim = dsq_test_join(tmp, "victim");
    struct stat st;

    /* in memory: the heap ends holding every quantized weight */
    dsq_gptq_result *mem = NULL, *sp = NULL;
    probe pm = {spill, 0, 0};
    assert_int_equal(calib_run(rc, ids.ids, ids.n, NULL, &pm, &mem, &err), DSQ_OK);
    dsq_gptq_memory mm, ms;
    dsq_gptq_result_memory(mem, &mm);
    uint64_t total = 0;
    for (size_t i = 0; i < dsq_gptq_result_count(mem); i++) {
        const dsq_qtensor *t = &dsq_gptq_result_at(mem, i)->tensor;
        dsq_codec_layout l;
        assert_int_equal(dsq_codec_layout_of(t->enc, t->rows, t->cols, t->group, &l, &err), DSQ_OK);
        total += l.data_bytes + l.scale_bytes + l.min_bytes;
    }
    assert_int_equal(mm.held, total);
    assert_int_equal(mm.held_peak, total);
    assert_int_equal(mm.spill_bytes, 0);
    assert_true(mm.largest * 8 < total); /* so the bound below says something */

    /* spilled, over a stale spill file of a killed run: the heap never holds more than the largest weight,
     * nothing after a layer, the name never exists while it runs nor after, and the bytes are the same */
    dsq_test_write(spill, "stale", 5);
    probe ps = {spill, 0, 0};
    assert_int_equal(calib_run(rc, ids.ids, ids.n, spill, &ps, &sp, &err), DSQ_OK);
    assert_int_equal(ps.layers, 5); /* 4 layers and the MTP block */
    assert_int_equal(ps.present, 0);
    assert_int_equal(lstat(spill, &st), -1);
    dsq_gptq_result_memory(sp, &ms);
    assert_int_equal(ms.held, 0);
    assert_int_equal(ms.held_after_layer, 0);
    assert_int_equal(ms.held_peak, mm.largest);
    assert_int_equal(ms.largest, mm.largest);
    assert_true(ms.spill_bytes >= total && ms.spill_bytes < total + 64 * dsq_gptq_result_count(sp));
    assert_int_equal(dsq_gptq_result_count(sp), dsq_gptq_result_count(mem));
    size_t nvfp4 = 0;
    for (size_t i = 0; i < dsq_gptq_result_count(mem); i++) {
        const dsq_gptq_entry *a = dsq_gptq_result_at(mem, i), *b = dsq_gptq_result_at(sp, i);
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->method, b->method);
        assert_int_equal(a->rows_seen, b->rows_seen);
        const dsq_qtensor *x = &a->tensor, *y = dsq_gptq_result_lookup(sp, b->name);
        assert_ptr_equal(y, &b->tensor);
        assert_int_equal(x->enc, y->enc);
        assert_int_equal(x->rows, y->rows);
        assert_int_equal(x->cols, y->cols);
        assert_int_equal(x->group, y->group);
        assert_memory_equal(&x->tensor_scale, &y->tensor_scale, sizeof x->tensor_scale);
        nvfp4 += x->enc == DSQ_ENC_NVFP4;
        dsq_codec_layout l;
        assert_int_equal(dsq_codec_layout_of(x->enc, x->rows, x->cols, x->group, &l, &err), DSQ_OK);
        assert_memory_equal(x->data, y->data, l.data_bytes);
        assert_int_equal(!x->scales, !y->scales);
        if (l.scale_bytes) assert_memory_equal(x->scales, y->scales, l.scale_bytes);
        assert_int_equal(!x->mins, !y->mins);
        if (l.min_bytes) assert_memory_equal(x->mins, y->mins, l.min_bytes);
    }
    assert_int_equal(nvfp4, 5); /* one wq_a per layer and the MTP block's: the tensor scale travels too */
    dsq_gptq_result_free(sp);
    sp = NULL;

    /* a stale symbolic link of that name is removed, never followed */
    dsq_test_write(victim, "keep", 4);
    assert_int_equal(symlink(victim, spill), 0);
    probe pl = {spill, 0, 0};
    dsq_err_clear(&err);
    assert_int_equal(calib_run(rc, ids.ids, 512, spill, &pl, &sp, &err), DSQ_OK);
    assert_int_equal(lstat(spill, &st), -1);
    size_t vn;
    char *v = dsq_test_read(victim, &vn);
    assert_int_equal(vn, 4);
    assert_memory_equal(v, "keep", 4);
    free(v);
    dsq_gptq_result_free(sp);
    sp = NULL;

    /* a directory of that name is not stale spill: refused, left alone */
    assert_int_equal(mkdir(spill, 0700), 0);
    dsq_err_clear(&err);
    assert_int_equal(calib_run(rc, ids.ids, 512, spill, &pl, &sp, &err), DSQ_ERR_IO);
    assert_null(sp);
    assert_non_null(strstr(err.msg, "s.dsq.gptq-spill: exists and is not a regular file"));
    assert_int_equal(rmdir(spill), 0);
    /* a failure after the spill was created (a token outside the vocabulary): no spill left */
    ids.ids[5] = 1 << 30;
    dsq_err_clear(&err);
    assert_int_not_equal(calib_run(rc, ids.ids, 512, spill, &pl, &sp, &err), DSQ_OK);
    assert_null(sp);
    assert_int_equal(lstat(spill, &st), -1);
    dsq_err_clear(&err);

    dsq_gptq_result_free(mem);
    dsq_recipe_free(rc);
    dsq_tok_ids_free(&ids);
    dsq_tok_free(tok);
    free(text), free(spill), free(victim);
}

static void expect_usage(const char *args, const char *needle, int want) {
    char *se = NULL;
    char *out = dsq_test_join(tmp, "bad.dsq");
    int rc = dsq_test_run(NULL, &se, "convert %s %s --recipe int4 %s", model, out, args);
    if (rc != want || !strstr(se, needle)) fprintf(stderr, "args '%s': rc %d, stderr: %s", args, rc, se);
    assert_int_equal(rc, want);
    assert_non_null(strstr(se, needle));
    /* one line */
    assert_true(strchr(se, '\n') == se + strlen(se) - 1);
    free(se), free(out);
}

static void test_gptq_bad_options(void **state) {
    (void)state;
    char args[1024];
    expect_usage("--method fancy", "--method must be rtn or gptq", 2);
    expect_usage("--method gptq", "needs --calib TEXT or --calib-tokens FILE", 2);
    snprintf(args, sizeof args, "--calib %s", calib);
    expect_usage(args, "need --method gptq", 2);
    snprintf(args, sizeof args, "--method gptq --calib %s --gptq-damp 0", calib);
    expect_usage(args, "--gptq-damp needs a number > 0 and ≤ 10", 2);
    snprintf(args, sizeof args, "--method gptq --calib %s --gptq-block 0", calib);
    expect_usage(args, "--gptq-block needs an integer 1..", 2);
    snprintf(args, sizeof args, "--method gptq --calib %s --calib-ctx 1", calib);
    expect_usage(args, "--calib-ctx needs an integer 2..", 2);
    expect_usage("--method gptq --calib /nonexistent/calib.txt", "/nonexistent/calib.txt", 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gptq_bad_options),
        cmocka_unit_test(test_gptq_convert),
        cmocka_unit_test(test_gptq_spill),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
