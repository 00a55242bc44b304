/* KL divergence grows with the quantization error, end to end through the CLI: on the golden model
 * (its 160 golden token ids, one chunk with BOS, full-vocabulary top-k so KL is exact), `dsq eval kld`
 * of the model against its own base is exactly 0; the lossless fp8 build is ~0 (≤ 1e-6); then
 * int4 < a deliberately bad 2-bit-expert build, strictly and by more than their standard errors,
 * in both the exact and the release numerics. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_safetensors.h"
#include "dsq_test.h"

#define VOCAB 512 /* the golden model's vocabulary: --top-k VOCAB makes the KL exact */

static char *tmp, *gpath, *tokfile;

static void run_ok(const char *args, char **out) {
    char *err = NULL;
    int rc = dsq_test_run(out, &err, "%s", args);
    if (rc != 0) fprintf(stderr, "dsq %s\nexit %d\nstderr: %s\n", args, rc, err);
    assert_int_equal(rc, 0);
    free(err);
}

static int setup(void **state) {
    tmp = dsq_test_tmpdir();
    gpath = dsq_test_shared_path("golden/v4-tiny/model");
    char *vec = dsq_test_shared_path("golden/v4-tiny/golden-exact.safetensors");
    dsq_st *st;
    if (dsq_st_open(vec, NULL, &st, NULL) != DSQ_OK) return -1;
    const dsq_st_tensor *t = dsq_st_find(st, "tokens");
    if (!t || t->dtype != DSQ_DTYPE_I32) return -1;
    const int32_t *ids = (const int32_t *)t->data;
    size_t n = (size_t)t->n_elements;
    char *txt = malloc(n * 12 + 1);
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += (size_t)sprintf(txt + len, "%d ", (int)ids[i]);
    tokfile = dsq_test_join(tmp, "tokens.txt");
    dsq_test_write(tokfile, txt, len);
    free(txt);
    dsq_st_close(st);
    free(vec);
    return n == 160 ? 0 : -1;
}

static int teardown(void **state) {
    free(gpath);
    free(tokfile);
    dsq_test_rmdir(tmp);
    free(tmp);
    return 0;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!x || !cJSON_IsNumber(x)) fprintf(stderr, "no number %s\n", key);
    assert_true(x && cJSON_IsNumber(x));
    return x->valuedouble;
}

/* KL(base ‖ model) statistics from `dsq eval kld MODEL --base BASE --json`. */
static cJSON *kld(const char *model, const char *base, const char *numerics) {
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "eval kld '%s' --base '%s' --threads 2 --numerics %s --json", model, base, numerics);
    run_ok(args, &out);
    cJSON *j = cJSON_Parse(out);
    if (!j) fprintf(stderr, "not JSON: %s\n", out);
    assert_non_null(j);
    free(out);
    assert_true(num(j, "positions") == 80); /* the second half of BOS + 160 tokens */
    return j;
}

static void test_kl_grows_with_error(void **state) {
    /* the builds: lossless fp8, int4, and int4 with 2-bit routed experts */
    const char *names[3] = {"fp8", "int4", "int2"};
    const char *recipes[3] = {"--recipe fp8", "--recipe int4",
                              "--recipe int4 --override '*.ffn.experts.*=int2-g32-asym'"};
    char *builds[3];
    for (int b = 0; b < 3; b++) {
        char file[32], args[4096];
        snprintf(file, sizeof file, "%s.dsq", names[b]);
        builds[b] = dsq_test_join(tmp, file);
        snprintf(args, sizeof args, "convert '%s' '%s' %s --threads 2", gpath, builds[b], recipes[b]);
        run_ok(args, NULL);
    }
    const char *numerics[2] = {"exact", "release"};
    for (int nx = 0; nx < 2; nx++) {
        char file[32], args[4096];
        snprintf(file, sizeof file, "base-%s.kld", numerics[nx]);
        char *base = dsq_test_join(tmp, file);
        snprintf(args, sizeof args, "eval kld '%s' --tokens '%s' --save-base '%s' --top-k %d --ctx 161 --threads 2 "
                 "--numerics %s", gpath, tokfile, base, VOCAB, numerics[nx]);
        run_ok(args, NULL);

        cJSON *self = kld(gpath, base, numerics[nx]);
        assert_true(num(self, "kl_mean") == 0.0);
        assert_true(num(self, "kl_max") == 0.0);
        assert_true(num(self, "top1") == 1.0);
        cJSON_Delete(self);

        double mean[3], se[3];
        for (int b = 0; b < 3; b++) {
            cJSON *j = kld(builds[b], base, numerics[nx]);
            mean[b] = num(j, "kl_mean");
            se[b] = num(j, "kl_mean_se");
            printf("    %-7s %-4s KL mean %.6g ± %.2g, max %.6g, top-1 %.4g\n", numerics[nx], names[b], mean[b],
                   se[b], num(j, "kl_max"), num(j, "top1"));
            cJSON_Delete(j);
        }
        assert_true(mean[0] >= 0.0 && mean[0] <= 1e-6); /* fp8 re-encodes the FP8/FP4 weights losslessly */
        assert_true(mean[0] < mean[1]);
        assert_true(mean[1] < mean[2]);
        /* not a coin flip: the 2-bit build is worse by more than twice the combined standard errors */
        assert_true(mean[2] - mean[1] > 2.0 * (se[1] + se[2]));
        assert_true(mean[1] - mean[0] > 2.0 * (se[0] + se[1]));
        free(base);
    }
    for (int b = 0; b < 3; b++) free(builds[b]);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_kl_grows_with_error)};
    if (getenv("DSQ_TEST_FILTER")) cmocka_set_test_filter(getenv("DSQ_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
