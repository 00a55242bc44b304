/* The quality commands end to end on the golden model (tokens given as ids; a copy of the model with
 * a small byte-level tokenizer for text, tasks and generation): dsq eval ppl|kld|diff|mc, dsq compare,
 * dsq generate.  Numbers printed with --json are checked against the library run in-process, and
 * the self-comparison against exact zeros. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_score.h"
#include "dsq_test.h"
#include "score_util.h"

static char *gpath, *tokfile, *tokmodel;
static int32_t *gtok;
static size_t n_gtok;
static dsq_v4_model *gm;

static int setup(void **state) {
    if (dsq_test_tmp_setup(state)) return -1;
    gpath = dsq_test_shared_path("golden/v4-tiny/model");
    char *vec = dsq_test_shared_path("golden/v4-tiny/golden-exact.safetensors");
    dsq_st *st;
    if (dsq_st_open(vec, NULL, &st, NULL) != DSQ_OK) return -1;
    const dsq_st_tensor *t = dsq_st_find(st, "tokens");
    n_gtok = (size_t)t->n_elements;
    gtok = malloc(t->n_bytes);
    memcpy(gtok, t->data, t->n_bytes);
    dsq_st_close(st);
    free(vec);
    /* ids as a text file */
    tokfile = dsq_test_join(dsq_test_tmp, "tokens.txt");
    char *txt = malloc(n_gtok * 8 + 1);
    size_t len = 0;
    for (size_t i = 0; i < n_gtok; i++) len += (size_t)sprintf(txt + len, "%d ", (int)gtok[i]);
    dsq_test_write(tokfile, txt, len);
    free(txt);
    /* the golden model with a tokenizer */
    tokmodel = dsq_test_join(dsq_test_tmp, "tokmodel");
    mkdir(tokmodel, 0755);
    const char *files[2] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *from = dsq_test_join(gpath, files[i]), *to = dsq_test_join(tokmodel, files[i]);
        if (symlink(from, to) != 0) return -1;
        free(from);
        free(to);
    }
    char *tj = su_byte_tokenizer_json(), *tp = dsq_test_join(tokmodel, "tokenizer.json");
    dsq_test_write(tp, tj, strlen(tj));
    free(tj);
    free(tp);
    return dsq_v4_model_open(gpath, &gm, NULL) == DSQ_OK ? 0 : -1;
}

static int teardown(void **state) {
    dsq_v4_model_close(gm);
    free(gtok);
    free(gpath);
    free(tokfile);
    free(tokmodel);
    dsq_test_tmp_teardown(state);
    return 0;
}

/* Run the CLI expecting exit status `want`; returns stdout parsed as JSON when `json` (else NULL). */
static cJSON *run_json(int want, const char *args) {
    char *out = NULL, *err = NULL;
    int rc = dsq_test_run(&out, &err, "%s", args);
    if (rc != want) fprintf(stderr, "dsq %s\nexit %d (want %d)\nstdout: %s\nstderr: %s\n", args, rc, want, out, err);
    assert_int_equal(rc, want);
    cJSON *j = want == 0 ? cJSON_Parse(out) : NULL;
    if (want == 0 && !j) fprintf(stderr, "not JSON: %s\n", out);
    free(out);
    free(err);
    return j;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!x) fprintf(stderr, "no member %s\n", key);
    assert_non_null(x);
    return cJSON_IsNull(x) ? INFINITY : x->valuedouble;
}

static void test_help_and_usage(void **state) {
    const char *helps[] = {"eval ppl --help", "eval kld --help", "eval diff --help", "eval mc --help",
                           "compare --help",  "generate --help", "eval --help"};
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        char *out = NULL;
        assert_int_equal(dsq_test_run(&out, NULL, "%s", helps[i]), 0);
        assert_non_null(strstr(out, "usage:"));
        free(out);
    }
    char args[4096];
    snprintf(args, sizeof args, "eval ppl '%s'", gpath);
    run_json(2, args); /* no text */
    snprintf(args, sizeof args, "eval ppl '%s' --tokens '%s' --ctx 2", gpath, tokfile);
    run_json(2, args);
    snprintf(args, sizeof args, "eval kld '%s' --tokens '%s'", gpath, tokfile);
    run_json(2, args); /* neither --base nor --save-base */
    snprintf(args, sizeof args, "eval ppl '%s' --tokens '%s' --bogus", gpath, tokfile);
    run_json(2, args);
    snprintf(args, sizeof args, "compare '%s' --text x --out y", gpath);
    run_json(2, args); /* no build */
    snprintf(args, sizeof args, "generate '%s'", tokmodel);
    run_json(2, args);
    /* a model without tokenizer.json and a text file: a clear failure */
    snprintf(args, sizeof args, "eval ppl '%s' '%s'", gpath, tokfile);
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "%s", args), 1);
    assert_non_null(strstr(err, "--tokens"));
    free(err);
}

static void test_ppl(void **state) {
    for (int numx = 0; numx < 2; numx++) {
        const char *name = numx ? "release" : "exact";
        char args[4096];
        snprintf(args, sizeof args, "eval ppl '%s' --tokens '%s' --ctx 32 --threads 1 --numerics %s --json", gpath,
                 tokfile, name);
        cJSON *j = run_json(0, args);
        dsq_score_options o;
        dsq_score_options_default(&o);
        o.n_ctx = 32;
        o.eval.threads = 1;
        o.eval.numerics = (dsq_numerics)numx;
        dsq_ppl_result r;
        assert_int_equal(dsq_score_ppl(gm, &o, gtok, n_gtok, &r, NULL), DSQ_OK);
        assert_true(num(j, "ppl") == r.ppl); /* %.17g round-trips */
        assert_true(num(j, "ppl_se") == r.ppl_se);
        assert_true(num(j, "chunks") == 5 && num(j, "ctx") == 32);
        cJSON_Delete(j);
    }
    /* text through the tokenizer: 200 bytes → 200 ids → chunks of 16 */
    char *text = dsq_test_join(dsq_test_tmp, "text.txt"), t[256];
    for (int i = 0; i < 200; i++) t[i] = "the quick brown fox jumps over the lazy dog. "[i % 45];
    dsq_test_write(text, t, 200);
    char args[4096];
    snprintf(args, sizeof args, "eval ppl '%s' '%s' --ctx 16 --threads 1 --json", tokmodel, text);
    cJSON *j = run_json(0, args);
    assert_true(num(j, "tokens") == 200 && num(j, "chunks") == 13);
    assert_true(num(j, "ppl") > 1 && isfinite(num(j, "ppl")));
    cJSON_Delete(j);
    free(text);
}

static void test_kld(void **state) {
    char *base = dsq_test_join(dsq_test_tmp, "cli.kld"), args[4096];
    snprintf(args, sizeof args, "eval kld '%s' --tokens '%s' --ctx 32 --threads 1 --top-k 512 --save-base '%s' --json",
             gpath, tokfile, base);
    cJSON *j = run_json(0, args);
    assert_true(num(cJSON_GetObjectItem(j, "ref"), "positions") == 75);
    cJSON_Delete(j);
    run_json(1, args); /* exists */
    /* against itself: zero, with or without the text */
    snprintf(args, sizeof args, "eval kld '%s' --tokens '%s' --threads 1 --base '%s' --json", gpath, tokfile, base);
    j = run_json(0, args);
    assert_true(num(j, "kl_mean") == 0 && num(j, "kl_max") == 0 && num(j, "top1") == 1 && num(j, "ppl_ratio") == 1);
    assert_true(num(j, "positions") == 75);
    cJSON_Delete(j);
    snprintf(args, sizeof args, "eval kld '%s' --threads 1 --base '%s' --numerics release --json", gpath, base);
    j = run_json(0, args);
    double kl = num(j, "kl_mean");
    assert_true(kl > 1e-3 && kl < 0.1 && num(j, "top1") < 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "histogram")), DSQ_KLD_HIST_BINS);
    cJSON_Delete(j);
    /* the text output names the statistics */
    char *out = NULL;
    snprintf(args, sizeof args, "eval kld '%s' --threads 1 --base '%s' --numerics release", gpath, base);
    assert_int_equal(dsq_test_run(&out, NULL, "%s", args), 0);
    assert_non_null(strstr(out, "mean KL"));
    assert_non_null(strstr(out, "top-1 agreement"));
    assert_non_null(strstr(out, "PPL ratio"));
    free(out);
    /* a corrupted base is refused */
    size_t len;
    char *b = dsq_test_read(base, &len);
    b[len - 20] ^= 0x55;
    char *bad = dsq_test_join(dsq_test_tmp, "bad.kld");
    dsq_test_write(bad, b, len);
    snprintf(args, sizeof args, "eval kld '%s' --threads 1 --base '%s'", gpath, bad);
    run_json(1, args);
    free(b);
    free(bad);
    free(base);
}

static void test_diff(void **state) {
    char *cand = su_perturbed(dsq_test_tmp, gpath, "cli-block1", "layers.1.", 0.1), args[4096];
    snprintf(args, sizeof args, "eval diff '%s' '%s' --tokens '%s' --ctx 32 --threads 1 --json", gpath, cand, tokfile);
    cJSON *j = run_json(0, args);
    const cJSON *blocks = cJSON_GetObjectItem(j, "blocks");
    assert_int_equal(cJSON_GetArraySize(blocks), 4);
    for (int b = 0; b < 4; b++) {
        const cJSON *x = cJSON_GetArrayItem(blocks, b);
        double own = num(cJSON_GetObjectItem(x, "own"), "sqnr_db"), fed = num(cJSON_GetObjectItem(x, "fed"), "sqnr_db");
        if (b == 0) assert_true(isinf(own) && isinf(fed)); /* null in JSON: identical */
        if (b == 1) assert_true(isfinite(fed) && isfinite(own));
        if (b >= 2) assert_true(isinf(fed) && isfinite(own));
    }
    assert_true(num(cJSON_GetObjectItem(j, "kl"), "kl_mean") > 0);
    cJSON_Delete(j);
    free(cand);
}

static void test_mc(void **state) {
    const char *task = "{\"ctx\":\"The cat\",\"endings\":[\"sat.\",\"ran away\",\"is\"],\"label\":0}\n"
                       "{\"ctx\":\"A B C\",\"endings\":[\"D\",\"x y z\"],\"label\":0}\n"
                       "{\"context\":\"1 2 3\",\"endings\":[\"4\",\"9 9\",\"zz\"],\"label\":\"0\"}\n";
    char *tp = dsq_test_join(dsq_test_tmp, "task.jsonl"), *ans = dsq_test_join(dsq_test_tmp, "answers.jsonl"), args[4096];
    dsq_test_write(tp, task, strlen(task));
    snprintf(args, sizeof args, "eval mc '%s' '%s' --threads 1 --save-answers '%s' --json", tokmodel, tp, ans);
    cJSON *j = run_json(0, args);
    assert_true(num(j, "items") == 3);
    double acc = num(j, "acc_norm");
    assert_true(acc >= 0 && acc <= 1);
    assert_true(fabs(num(j, "acc_norm_se") - sqrt(acc * (1 - acc) / 3)) < 1e-12);
    cJSON_Delete(j);
    snprintf(args, sizeof args, "eval mc '%s' '%s' --threads 1 --base '%s' --json", tokmodel, tp, ans);
    j = run_json(0, args);
    assert_true(num(j, "flips_norm") == 0 && num(j, "flip_rate_raw") == 0);
    cJSON_Delete(j);
    /* release numerics against the exact answers: flips are counted (not necessarily non-zero) */
    snprintf(args, sizeof args, "eval mc '%s' '%s' --threads 1 --numerics release --base '%s' --json", tokmodel, tp,
             ans);
    j = run_json(0, args);
    assert_true(num(j, "flip_rate_norm") >= 0 && num(j, "flip_rate_norm") <= 1);
    cJSON_Delete(j);
    free(tp);
    free(ans);
}

static void test_compare(void **state) {
    char *q1 = su_perturbed(dsq_test_tmp, gpath, "q-small", "weight", 0.02);
    char *q2 = su_perturbed(dsq_test_tmp, gpath, "q-large", "weight", 0.2);
    /* the builds need the tokenizer only through REF; give REF = tokmodel */
    const char *task = "{\"ctx\":\"The cat\",\"endings\":[\"sat.\",\"ran away\"],\"label\":0}\n"
                       "{\"ctx\":\"A B C\",\"endings\":[\"D\",\"x y z\"],\"label\":0}\n";
    char *tp = dsq_test_join(dsq_test_tmp, "ctask.jsonl"), *out = dsq_test_join(dsq_test_tmp, "report"), args[8192];
    dsq_test_write(tp, task, strlen(task));
    snprintf(args, sizeof args,
             "compare '%s' '%s' '%s' --tokens '%s' --task '%s' --out '%s' --ctx 32 --threads 1 --top-k 512 --json",
             tokmodel, q1, q2, tokfile, tp, out);
    cJSON *j = run_json(0, args);
    const cJSON *builds = cJSON_GetObjectItem(j, "builds");
    assert_int_equal(cJSON_GetArraySize(builds), 2);
    const cJSON *b1 = cJSON_GetArrayItem(builds, 0), *b2 = cJSON_GetArrayItem(builds, 1);
    assert_string_equal(cJSON_GetObjectItem(b1, "name")->valuestring, "q-small");
    assert_true(num(b1, "kl_mean") > 0 && num(b2, "kl_mean") > num(b1, "kl_mean"));
    assert_true(num(b1, "bytes") > 6000000);
    assert_true(num(b1, "mc_flip_rate") >= 0);
    cJSON_Delete(j);
    char *md = dsq_test_join(out, "REPORT.md"), *html = dsq_test_join(out, "REPORT.html");
    char *m = dsq_test_read(md, NULL), *h = dsq_test_read(html, NULL);
    assert_non_null(strstr(m, "| q-small |"));
    assert_non_null(strstr(m, "| q-large |"));
    assert_non_null(strstr(h, "<svg"));
    assert_null(strstr(h, "<script"));
    free(m);
    free(h);
    run_json(1, args); /* files exist without --overwrite */
    /* release numerics, one build, replacing the report */
    snprintf(args, sizeof args,
             "compare '%s' '%s' --tokens '%s' --out '%s' --ctx 32 --chunks 2 --threads 1 --numerics release "
             "--overwrite --json",
             gpath, q2, tokfile, out);
    j = run_json(0, args);
    b1 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "builds"), 0);
    assert_true(num(b1, "kl_mean") > 0 && num(b1, "positions") == 30);
    cJSON_Delete(j);
    m = dsq_test_read(md, NULL);
    assert_non_null(strstr(m, "release numerics"));
    assert_null(strstr(m, "q-small"));
    free(m);
    free(md);
    free(html);
    free(tp);
    free(out);
    free(q1);
    free(q2);
}

typedef struct id_list {
    int32_t v[64];
    int n;
} id_list;
static dsq_status collect(void *user, int32_t id, dsq_err *err) {
    id_list *g = user;
    g->v[g->n++] = id;
    return DSQ_OK;
}

static void test_generate(void **state) {
    char args[4096];
    snprintf(args, sizeof args, "generate '%s' --prompt 'Hello' -n 5 --ignore-eos --threads 1 --json", tokmodel);
    cJSON *j = run_json(0, args);
    const cJSON *pids = cJSON_GetObjectItem(j, "prompt_ids"), *ids = cJSON_GetObjectItem(j, "ids");
    /* BOS + the five bytes of "Hello" as ids 2 + byte */
    assert_int_equal(cJSON_GetArraySize(pids), 6);
    assert_int_equal(cJSON_GetArrayItem(pids, 0)->valueint, 0);
    assert_int_equal(cJSON_GetArrayItem(pids, 1)->valueint, 2 + 'H');
    assert_int_equal(cJSON_GetArraySize(ids), 5);
    int32_t prompt[6] = {0, 2 + 'H', 2 + 'e', 2 + 'l', 2 + 'l', 2 + 'o'};
    dsq_eval_options eo;
    dsq_eval_options_default(&eo);
    eo.threads = 1;
    id_list got = {{0}, 0};
    dsq_generate_options g = {.n_new = 5, .ignore_eos = true};
    assert_int_equal(dsq_score_generate(gm, &eo, prompt, 6, &g, collect, &got, NULL), DSQ_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(cJSON_GetArrayItem(ids, i)->valueint, got.v[i]);
    cJSON_Delete(j);
    /* streaming text and the chat template */
    char *out = NULL;
    snprintf(args, sizeof args, "generate '%s' --prompt 'Hi' -n 4 --chat --temperature 0.6 --seed 3 --threads 1",
             tokmodel);
    assert_int_equal(dsq_test_run(&out, NULL, "%s", args), 0);
    assert_true(strlen(out) >= 1);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_usage), cmocka_unit_test(test_ppl), cmocka_unit_test(test_kld),
        cmocka_unit_test(test_diff),           cmocka_unit_test(test_mc),  cmocka_unit_test(test_compare),
        cmocka_unit_test(test_generate),
    };
    if (getenv("DSQ_TEST_FILTER")) cmocka_set_test_filter(getenv("DSQ_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
