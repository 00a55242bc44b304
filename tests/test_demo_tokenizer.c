/* The sample model's tokenizer (samples/tokenizer/tokenizer.json, trained by samples/tokenizer/train.mjs
 * on samples/text/sample.txt) and the tokenizer plumbing around checkpoints and containers:
 * the C tokenizer reproduces the trainer's ids for the sample text and round-trips it; dsq synth
 * --tokenizer copies it (and refuses one whose ids do not fit the vocabulary); dsq convert embeds it
 * in the .dsq metadata and dsq_tok_open / dsq tokenize / dsq eval ppl / dsq compare read it there;
 * dsq compare's per-family quantization error table for builds of the REF checkpoint. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dsq_test.h"
#include "dsq_tokenizer.h"

#define TOKENIZER "samples/tokenizer/tokenizer.json"
#define TEXT      "samples/text/sample.txt"
#define TRAINED   "samples/tokenizer/sample.ids.json"
#define CONFIG    "samples/configs/v4-tiny.json"

static char *model, *rel_dsq, *int4_dsq;

static void run_ok(const char *args, char **out) {
    char *err = NULL;
    int rc = dsq_test_run(out, &err, "%s", args);
    if (rc != 0) fprintf(stderr, "dsq %s\nexit %d\nstderr: %s\n", args, rc, err);
    assert_int_equal(rc, 0);
    free(err);
}

static cJSON *run_json(const char *args) {
    char *out = NULL;
    run_ok(args, &out);
    cJSON *j = cJSON_Parse(out);
    if (!j) fprintf(stderr, "not JSON: %s\n", out);
    assert_non_null(j);
    free(out);
    return j;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!x || !cJSON_IsNumber(x)) fprintf(stderr, "no number %s\n", key);
    assert_true(x && cJSON_IsNumber(x));
    return x->valuedouble;
}

static dsq_tok *open_tok(const char *path) {
    dsq_tok *t = NULL;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_tok_open(path, NULL, &t, &err);
    if (s != DSQ_OK) dsq_err_print(&err, stderr, "tokenizer: ");
    dsq_err_clear(&err);
    assert_int_equal(s, DSQ_OK);
    return t;
}

static void encode(const dsq_tok *t, const char *text, size_t len, dsq_tok_ids *v) {
    memset(v, 0, sizeof *v);
    assert_int_equal(dsq_tok_encode(t, text, len, v, NULL), DSQ_OK);
}

/* The sample model: synth with the tokenizer, then release and int4 containers. */
static int setup(void **state) {
    if (dsq_test_tmp_setup(state)) return -1;
    model = dsq_test_join(dsq_test_tmp, "model");
    rel_dsq = dsq_test_join(dsq_test_tmp, "release.dsq");
    int4_dsq = dsq_test_join(dsq_test_tmp, "int4.dsq");
    char args[4096];
    snprintf(args, sizeof args, "synth --config %s --out '%s' --seed 1 --threads 2 --tokenizer %s", CONFIG, model,
             TOKENIZER);
    if (dsq_test_run(NULL, NULL, "%s", args) != 0) return -1;
    snprintf(args, sizeof args, "convert '%s' '%s' --recipe release --threads 2", model, rel_dsq);
    if (dsq_test_run(NULL, NULL, "%s", args) != 0) return -1;
    snprintf(args, sizeof args, "convert '%s' '%s' --recipe int4 --threads 2", model, int4_dsq);
    return dsq_test_run(NULL, NULL, "%s", args) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    free(model);
    free(rel_dsq);
    free(int4_dsq);
    dsq_test_tmp_teardown(state);
    return 0;
}

/* The trainer's ids, the round trip, the layout (BOS/EOS specials at 0/1, 512 ids). */
static void test_sample_tokenizer(void **state) {
    dsq_tok *t = open_tok(TOKENIZER);
    assert_int_equal(dsq_tok_n_ids(t), 512);
    const char *bos = "<｜begin▁of▁sentence｜>", *eos = "<｜end▁of▁sentence｜>";
    assert_int_equal(dsq_tok_find(t, bos, strlen(bos)), 0);
    assert_int_equal(dsq_tok_find(t, eos, strlen(eos)), 1);
    assert_true(dsq_tok_is_special(t, 0) && dsq_tok_is_special(t, 1) && !dsq_tok_is_special(t, 2));
    assert_int_equal(dsq_tok_find(t, "A", 1), 2 + 'A'); /* byte b at id 2 + b */

    size_t len = 0, tlen = 0;
    char *text = dsq_test_read(TEXT, &len);
    char *trained = dsq_test_read(TRAINED, &tlen);
    assert_true(len > 3000);
    cJSON *want = cJSON_Parse(trained);
    assert_non_null(want);
    dsq_tok_ids v;
    encode(t, text, len, &v);
    assert_int_equal(v.n, (size_t)cJSON_GetArraySize(want));
    for (size_t i = 0; i < v.n; i++) {
        assert_int_equal(v.ids[i], cJSON_GetArrayItem(want, (int)i)->valueint);
        assert_true(v.ids[i] >= 2 && v.ids[i] < 512);
    }
    assert_true(v.n * 2 < len); /* the merges do compress the text they were trained on */

    dsq_tok_text d = {0};
    assert_int_equal(dsq_tok_decode(t, v.ids, v.n, NULL, &d, NULL), DSQ_OK);
    assert_int_equal(d.len, len);
    assert_memory_equal(d.data, text, len);
    dsq_tok_text_free(&d);
    /* text the merges never saw still round-trips, through byte tokens */
    const char *other = "Zürich, 1729 — ÆØÅ ok?\n\tend";
    dsq_tok_ids w;
    encode(t, other, strlen(other), &w);
    assert_int_equal(dsq_tok_decode(t, w.ids, w.n, NULL, &d, NULL), DSQ_OK);
    assert_int_equal(d.len, strlen(other));
    assert_memory_equal(d.data, other, d.len);
    dsq_tok_text_free(&d);
    dsq_tok_ids_free(&w);
    dsq_tok_ids_free(&v);
    cJSON_Delete(want);
    free(trained);
    free(text);
    dsq_tok_free(t);
}

/* synth --tokenizer: a byte copy; ids above vocab_size are refused before anything is written. */
static void test_synth_tokenizer(void **state) {
    size_t a = 0, b = 0;
    char *src = dsq_test_read(TOKENIZER, &a);
    char *cp = dsq_test_join(model, "tokenizer.json");
    char *dst = dsq_test_read(cp, &b);
    assert_int_equal(a, b);
    assert_memory_equal(src, dst, a);
    /* EOS moved to id 900: past the tiny config's 512 */
    const char *eos = "\"id\":1,\"content\"";
    char *at = strstr(src, eos);
    assert_non_null(at);
    size_t pre = (size_t)(at - src);
    char *bad = malloc(a + 8);
    memcpy(bad, src, pre);
    int n = sprintf(bad + pre, "\"id\":900,\"content\"");
    memcpy(bad + pre + (size_t)n, at + strlen(eos), a - pre - strlen(eos));
    char *badp = dsq_test_join(dsq_test_tmp, "bad-tokenizer.json"), *out = dsq_test_join(dsq_test_tmp, "refused");
    dsq_test_write(badp, bad, pre + (size_t)n + a - pre - strlen(eos));
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "synth --config %s --out '%s' --tokenizer '%s'", CONFIG, out, badp), 1);
    assert_non_null(strstr(err, "vocab_size"));
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0); /* nothing written */
    assert_int_equal(dsq_test_run(NULL, NULL, "synth --config %s --out '%s' --tokenizer", CONFIG, out), 2);
    free(err);
    free(badp);
    free(out);
    free(bad);
    free(cp);
    free(dst);
    free(src);
}

/* The containers carry the tokenizer: same ids from the .dsq as from the directory. */
static void test_container_tokenizer(void **state) {
    size_t len = 0;
    char *text = dsq_test_read(TEXT, &len);
    dsq_tok *dir = open_tok(model), *ctr = open_tok(int4_dsq);
    dsq_tok_ids a, b;
    encode(dir, text, len, &a);
    encode(ctr, text, len, &b);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof *a.ids);
    dsq_tok_ids_free(&a);
    dsq_tok_ids_free(&b);
    dsq_tok_free(dir);
    dsq_tok_free(ctr);
    free(text);

    char args[4096];
    snprintf(args, sizeof args, "tokenize '%s' 'checkpoint quantization' --json", rel_dsq);
    cJSON *j = run_json(args);
    assert_true(num(j, "n_tokens") >= 2 && num(j, "n_tokens") < 23);
    cJSON_Delete(j);

    /* a container converted from a checkpoint without tokenizer.json: a clear failure */
    char *gold = dsq_test_shared_path("golden/v4-tiny/model"), *gdsq = dsq_test_join(dsq_test_tmp, "golden.dsq");
    snprintf(args, sizeof args, "convert '%s' '%s' --recipe release --threads 2", gold, gdsq);
    run_ok(args, NULL);
    dsq_tok *t = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_tok_open(gdsq, NULL, &t, &err), DSQ_ERR_MISSING);
    assert_null(t);
    assert_non_null(strstr(err.msg, "tokenizer"));
    dsq_err_clear(&err);
    free(gold);
    free(gdsq);
}

/* Text through a container's tokenizer: eval ppl of release.dsq equals the checkpoint's, and compare
 * with a .dsq reference. */
static void test_text_on_containers(void **state) {
    char args[4096];
    snprintf(args, sizeof args, "eval ppl '%s' %s --ctx 256 --chunks 2 --threads 2 --json", model, TEXT);
    cJSON *a = run_json(args);
    snprintf(args, sizeof args, "eval ppl '%s' %s --ctx 256 --chunks 2 --threads 2 --json", rel_dsq, TEXT);
    cJSON *b = run_json(args);
    assert_true(num(a, "tokens") == num(b, "tokens") && num(a, "tokens") > 1000);
    assert_true(num(a, "ppl") == num(b, "ppl")); /* release re-encoding is bit-identical */
    cJSON_Delete(a);
    cJSON_Delete(b);

    char *rep = dsq_test_join(dsq_test_tmp, "report");
    snprintf(args, sizeof args, "compare '%s' '%s' --text %s --out '%s' --ctx 256 --chunks 2 --threads 2 --json",
             rel_dsq, int4_dsq, TEXT, rep);
    cJSON *j = run_json(args);
    const cJSON *q = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "builds"), 0);
    assert_non_null(q);
    assert_true(num(q, "positions") == 254);
    assert_true(num(q, "kl_mean") > 0 && num(q, "kl_mean") < 0.2);
    cJSON_Delete(j);
    char *md = dsq_test_join(rep, "REPORT.md");
    char *r = dsq_test_read(md, NULL);
    assert_non_null(strstr(r, "int4.dsq"));
    assert_null(strstr(r, "Quantization error by tensor family")); /* REF is not a checkpoint directory */
    free(r);
    free(md);
    free(rep);
}

static const cJSON *family(const cJSON *build, const char *name) {
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(build, "families")) {
        if (!strcmp(cJSON_GetObjectItemCaseSensitive(f, "family")->valuestring, name)) return f;
    }
    return NULL;
}

/* compare fills the per-family quantization error table from dsq verify --source REF for .dsq builds
 * of the REF checkpoint: lossless families 0 (cosine 1), the int4 experts a few percent; a build of
 * another checkpoint gets no table. */
static void test_compare_families(void **state) {
    char args[4096], *rep = dsq_test_join(dsq_test_tmp, "report-fam");
    snprintf(args, sizeof args, "compare '%s' '%s' '%s' --text %s --out '%s' --ctx 256 --chunks 1 --threads 2 --json",
             model, rel_dsq, int4_dsq, TEXT, rep);
    cJSON *j = run_json(args);
    const cJSON *builds = cJSON_GetObjectItemCaseSensitive(j, "builds");
    const cJSON *rel = cJSON_GetArrayItem(builds, 0), *q4 = cJSON_GetArrayItem(builds, 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(rel, "families")), 10);
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(rel, "families")) {
        assert_true(num(f, "rel_rms") == 0 && num(f, "max_abs") == 0 && num(f, "cosine") == 1);
    }
    const cJSON *ex = family(q4, "routed_experts"), *at = family(q4, "attention");
    assert_non_null(ex);
    assert_non_null(at);
    assert_true(num(ex, "rel_rms") > 0.01 && num(ex, "rel_rms") < 0.2); /* int4-g32 of FP4 codes */
    assert_true(num(ex, "cosine") > 0.99 && num(ex, "cosine") < 1);
    assert_true(num(at, "rel_rms") == 0 && num(at, "cosine") == 1); /* kept as shipped */
    cJSON_Delete(j);
    char *md = dsq_test_join(rep, "REPORT.md"), *html = dsq_test_join(rep, "REPORT.html");
    char *r = dsq_test_read(md, NULL), *h = dsq_test_read(html, NULL);
    char *sec = strstr(r, "## Quantization error by tensor family");
    assert_non_null(sec);
    assert_non_null(strstr(sec, "### int4.dsq"));
    assert_non_null(strstr(sec, "| routed\\_experts | 0.0"));
    assert_non_null(strstr(h, "Quantization error by tensor family"));
    free(r);
    free(h);
    /* the golden model is another checkpoint: the int4 build does not verify against it */
    char *gold = dsq_test_shared_path("golden/v4-tiny/model"), *err = NULL;
    /* (the golden model has no tokenizer: the sample text's ids) */
    char *ids = dsq_test_join(dsq_test_tmp, "sample-ids.txt");
    {
        size_t tl = 0;
        char *trained = dsq_test_read(TRAINED, &tl);
        for (char *p = trained; *p; p++)
            if (*p == '[' || *p == ']' || *p == ',') *p = ' ';
        dsq_test_write(ids, trained, strlen(trained));
        free(trained);
    }
    snprintf(args, sizeof args, "compare '%s' '%s' --tokens '%s' --out '%s' --ctx 256 --chunks 1 --threads 2 --overwrite",
             gold, int4_dsq, ids, rep);
    assert_int_equal(dsq_test_run(NULL, &err, "%s", args), 0);
    assert_non_null(strstr(err, "no per-family error table"));
    r = dsq_test_read(md, NULL);
    assert_null(strstr(r, "Quantization error by tensor family"));
    free(r);
    free(err);
    free(ids);
    free(gold);
    free(md);
    free(html);
    free(rep);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_tokenizer),
        cmocka_unit_test(test_synth_tokenizer),
        cmocka_unit_test(test_container_tokenizer),
        cmocka_unit_test(test_text_on_containers),
        cmocka_unit_test(test_compare_families),
    };
    if (getenv("DSQ_TEST_FILTER")) cmocka_set_test_filter(getenv("DSQ_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
