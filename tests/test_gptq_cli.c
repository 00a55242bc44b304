/* `dsq convert --method gptq` on the trained tiny V4: the container verifies and evaluates, the
 * summary names GPTQ'd and fallen-back experts, the bytes do not depend on the thread count, and bad
 * options fail with one line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dsq_test.h"

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
    free(so), free(se);
    assert_int_equal(dsq_test_run(NULL, &se, "verify %s", a), 0);
    free(se);
    /* it evaluates, to a sane perplexity (the source scores about 19 on this text) */
    rc = dsq_test_run(&so, &se, "eval ppl %s %s --ctx 256 --chunks 2 --json --threads 1", a, calib);
    assert_int_equal(rc, 0);
    const char *p = strstr(so, "\"ppl\": ");
    assert_non_null(p);
    double ppl = atof(p + 7);
    assert_true(ppl > 1 && ppl < 100);
    free(so), free(se);
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
    free(da), free(db), free(a), free(b);
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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
