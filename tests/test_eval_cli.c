/* `dsq eval logits` end to end through the CLI ($DSQ_BIN) on shared/golden/v4-tiny: outputs against
 * golden-exact (README tolerance: row relative L2 ≤ 1e-4, same arg-max), option handling, errors. */
#include "eval_util.h"

static char *model, *golden;

static int setup(void **state) {
    if (dsq_test_tmp_setup(state)) return -1;
    model = dsq_test_shared_path("golden/v4-tiny/model");
    golden = dsq_test_shared_path("golden/v4-tiny/golden-exact.safetensors");
    return 0;
}
static int teardown(void **state) {
    dsq_test_tmp_teardown(state);
    free(model);
    free(golden);
    return 0;
}

static void compare(dsq_st *out, const char *name, dsq_st *g, const char *gname, size_t rows, size_t w) {
    const dsq_st_tensor *t = dsq_st_find(out, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, DSQ_DTYPE_F32);
    size_t n = 0;
    float *a = eu_f32(out, name, &n), *b = eu_f32(g, gname, NULL);
    assert_true(n >= rows * w);
    size_t mism = 0;
    double rel = eu_max_rel_l2(a, b, rows, w, &mism);
    printf("  %-14s vs %-16s rel L2 %.3g\n", name, gname, rel);
    assert_true(rel <= 1e-4);
    assert_int_equal(mism, 0);
    free(a);
    free(b);
}

/* Text token file, prefill, JSON report; then the golden safetensors as token file with decode and MTP. */
static void test_logits_prefill_decode_mtp(void **state) {
    dsq_st *g = eu_open_st("golden/v4-tiny/golden-exact.safetensors");
    size_t n = 0;
    int32_t *tok = eu_i32(g, "tokens", &n);
    char *txt = dsq_test_join(dsq_test_tmp, "tokens.txt"), *out = dsq_test_join(dsq_test_tmp, "a.safetensors");
    FILE *f = fopen(txt, "w");
    for (size_t i = 0; i < n; i++) fprintf(f, "%d%s", tok[i], i % 10 == 9 ? "\n" : " ");
    fclose(f);
    char *so = NULL, *se = NULL;
    int rc = dsq_test_run(&so, &se, "eval logits %s --tokens %s --out %s --json --threads 1", model, txt, out);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(so, "\"rows\": 160"));
    assert_non_null(strstr(so, "\"numerics\": \"exact\""));
    free(so), free(se);
    char *p = out;
    dsq_st *o = NULL;
    assert_int_equal(dsq_st_open(p, NULL, &o, NULL), DSQ_OK);
    assert_int_equal(dsq_st_find(o, "logits")->shape[0], 160);
    compare(o, "logits", g, "prefill_logits", 160, 512);
    assert_null(dsq_st_find(o, "mtp_logits"));
    dsq_st_close(o);

    /* the output exists: refused without --overwrite */
    rc = dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s", model, txt, out);
    assert_int_equal(rc, 1);
    free(se);

    rc = dsq_test_run(&so, &se, "eval logits %s --tokens %s --out %s --overwrite --decode-from 100 --mtp --threads 1",
                      model, golden, out);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    free(so), free(se);
    assert_int_equal(dsq_st_open(p, NULL, &o, NULL), DSQ_OK);
    assert_int_equal(dsq_st_find(o, "logits")->shape[0], 61); /* n − P + 1 */
    compare(o, "logits", g, "decode_logits", 60, 512);
    compare(o, "mtp_logits", g, "mtp_logits", 159, 512);
    dsq_st_close(o);
    dsq_st_close(g);
    free(tok);
    free(txt);
    free(out);
}

static void test_dump_hidden_and_budget(void **state) {
    dsq_st *g = eu_open_st("golden/v4-tiny/golden-exact.safetensors");
    char *out = dsq_test_join(dsq_test_tmp, "h.safetensors");
    char *se = NULL;
    int rc =
        dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s --dump-hidden --memory-budget 64M --threads 1",
                     model, golden, out);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    free(se);
    dsq_st *o = NULL;
    assert_int_equal(dsq_st_open(out, NULL, &o, NULL), DSQ_OK);
    const dsq_st_tensor *t = dsq_st_find(o, "layer_out.2");
    assert_non_null(t);
    assert_int_equal(t->rank, 3);
    assert_int_equal(t->shape[1], 4);
    compare(o, "layer_out.3", g, "layer_out.3", 640, 256);
    compare(o, "final_hidden", g, "final_hidden", 640, 256);
    compare(o, "logits", g, "prefill_logits", 160, 512);
    dsq_st_close(o);
    dsq_st_close(g);
    free(out);
}

static void test_release_numerics_cli(void **state) {
    char *out = dsq_test_join(dsq_test_tmp, "r.safetensors"), *txt = dsq_test_join(dsq_test_tmp, "r.txt");
    dsq_test_write(txt, "0 5 9 200 17 3\n", 15);
    char *se = NULL;
    int rc =
        dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s --numerics release --threads 1", model, txt, out);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    free(se);
    dsq_st *o = NULL;
    assert_int_equal(dsq_st_open(out, NULL, &o, NULL), DSQ_OK);
    assert_string_equal(dsq_st_metadata(o, "numerics"), "release");
    assert_int_equal(dsq_st_find(o, "logits")->shape[0], 6);
    dsq_st_close(o);
    free(out);
    free(txt);
}

static void test_errors(void **state) {
    char *out = dsq_test_join(dsq_test_tmp, "e.safetensors"), *txt = dsq_test_join(dsq_test_tmp, "bad.txt");
    char *se = NULL;
    dsq_test_write(txt, "1 2 512 3", 9);
    assert_int_equal(dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s", model, txt, out), 1);
    assert_non_null(strstr(se, "vocabulary"));
    free(se);
    assert_false(dsq_path_exists(out));
    dsq_test_write(txt, "1 2 x3", 6);
    assert_int_equal(dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s", model, txt, out), 1);
    free(se);
    dsq_test_write(txt, "1 2 3", 5);
    assert_int_equal(dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s --decode-from 9", model, txt, out),
                     1);
    free(se);
    assert_int_equal(dsq_test_run(NULL, &se, "eval logits %s --tokens %s", model, txt), 2);
    free(se);
    assert_int_equal(dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s --numerics fast", model, txt, out),
                     2);
    free(se);
    assert_int_equal(dsq_test_run(NULL, &se, "eval bogus %s", model), 2);
    free(se);
    assert_int_equal(dsq_test_run(NULL, &se, "eval logits /nonexistent --tokens %s --out %s", txt, out), 1);
    free(se);
    char *so = NULL;
    assert_int_equal(dsq_test_run(&so, NULL, "eval logits --help"), 0);
    assert_non_null(strstr(so, "--decode-from"));
    free(so);
    free(out);
    free(txt);
}

/* dsq_device_from_name: the accepted spellings and the rejected ones. */
static void test_device_names(void **state) {
    static const struct {
        const char *s;
        bool ok;
        dsq_device_kind kind;
        int index;
    } cases[] = {
        {"cpu", true, DSQ_DEVICE_CPU, 0},     {"cuda", true, DSQ_DEVICE_CUDA, 0},  {"cuda:0", true, DSQ_DEVICE_CUDA, 0},
        {"cuda:7", true, DSQ_DEVICE_CUDA, 7}, {"cuda:15", true, DSQ_DEVICE_CUDA, 15}, {"cuda:16", false, 0, 0},
        {"cuda:", false, 0, 0},               {"cuda:-1", false, 0, 0},              {"cuda:1x", false, 0, 0},
        {"CUDA", false, 0, 0},                {"cuda0", false, 0, 0},                {"cpu:0", false, 0, 0},
        {"", false, 0, 0},                    {"gpu", false, 0, 0},                  {"cuda:99999999999", false, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dsq_device d = {DSQ_DEVICE_CPU, -5};
        bool ok = dsq_device_from_name(cases[i].s, &d);
        assert_int_equal(ok, cases[i].ok);
        if (!ok) continue;
        assert_int_equal(d.kind, cases[i].kind);
        assert_int_equal(d.index, cases[i].index);
        char buf[16];
        dsq_device round;
        assert_true(dsq_device_from_name(dsq_device_name(&d, buf, sizeof buf), &round));
        assert_int_equal(round.kind, d.kind);
        assert_int_equal(round.index, d.index);
    }
    dsq_device cpu = {DSQ_DEVICE_CPU, 0};
    assert_int_equal(dsq_device_check(&cpu, NULL), DSQ_OK);
}

/* --device: cpu gives the same bytes as the default; cuda is refused with one line and a non-zero exit
 * on every eval subcommand and compare when it cannot run here (no CUDA built in, or no device), and
 * matches golden when it can (tests/gpu/run.sh runs this suite on a GPU machine too). */
static void test_device_option(void **state) {
    char *a = dsq_test_join(dsq_test_tmp, "dev-default.safetensors"), *b = dsq_test_join(dsq_test_tmp, "dev-cpu.safetensors");
    char *so = NULL, *se = NULL;
    assert_int_equal(dsq_test_run(NULL, NULL, "eval logits %s --tokens %s --out %s --overwrite", model, golden, a), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "eval logits %s --tokens %s --out %s --overwrite --device cpu", model,
                                  golden, b),
                     0);
    size_t la = 0, lb = 0;
    char *da = dsq_test_read(a, &la), *db = dsq_test_read(b, &lb);
    assert_true(la > 0 && la == lb && !memcmp(da, db, la));
    free(da), free(db);

    /* malformed names are usage errors */
    assert_int_equal(dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s --device gpu", model, golden, b), 2);
    assert_non_null(strstr(se, "--device must be cpu, cuda or cuda:N"));
    free(se);
    assert_int_equal(dsq_test_run(NULL, &se, "eval ppl %s --tokens %s --device cuda:x", model, golden), 2);
    free(se);

    dsq_device cuda = {DSQ_DEVICE_CUDA, 0};
    bool usable = dsq_device_check(&cuda, NULL) == DSQ_OK;
    if (!usable) {
        char cmds[6][2048];
        snprintf(cmds[0], sizeof cmds[0], "eval logits %s --tokens %s --out %s/dev-cuda.st --device cuda", model, golden,
                 dsq_test_tmp);
        snprintf(cmds[1], sizeof cmds[1], "eval ppl %s --tokens %s --ctx 32 --chunks 1 --device cuda:0", model, golden);
        snprintf(cmds[2], sizeof cmds[2], "eval kld %s --tokens %s --save-base %s/dev-kb --device cuda", model, golden,
                 dsq_test_tmp);
        snprintf(cmds[3], sizeof cmds[3], "eval diff %s %s --tokens %s --device cuda", model, model, golden);
        snprintf(cmds[4], sizeof cmds[4], "eval mc %s --tokens %s --device cuda", model, golden);
        snprintf(cmds[5], sizeof cmds[5], "compare %s %s --tokens %s --out %s/dev-cmp --device cuda", model, model,
                 golden, dsq_test_tmp);
        for (int i = 0; i < 6; i++) {
            int rc = dsq_test_run(NULL, &se, "%s", cmds[i]);
            printf("  -> %d: %s", rc, se);
            assert_int_not_equal(rc, 0);
            /* one line naming the device and why */
            assert_non_null(strstr(se, "--device cuda:0: "));
            assert_non_null(strchr(se, '\n'));
            assert_string_equal(strchr(se, '\n'), "\n");
            free(se);
        }
    } else {
        /* a usable GPU: the cuda backend's logits meet the golden tolerance */
        int rc = dsq_test_run(&so, &se, "eval logits %s --tokens %s --out %s --overwrite --device cuda", model, golden,
                              b);
        if (rc) fprintf(stderr, "%s", se);
        assert_int_equal(rc, 0);
        free(so), free(se);
        dsq_st *g = eu_open_st("golden/v4-tiny/golden-exact.safetensors"), *o = NULL;
        assert_int_equal(dsq_st_open(b, NULL, &o, NULL), DSQ_OK);
        compare(o, "logits", g, "prefill_logits", 160, 512);
        dsq_st_close(o);
        dsq_st_close(g);
    }
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_prefill_decode_mtp),
        cmocka_unit_test(test_dump_hidden_and_budget),
        cmocka_unit_test(test_release_numerics_cli),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_device_names),
        cmocka_unit_test(test_device_option),
    };
    return cmocka_run_group_tests_name("eval_cli", tests, setup, teardown);
}
