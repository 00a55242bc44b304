/* Multiple-choice scoring: task parsing with every malformation class (all collected, each naming its
 * line), scoring through a byte tokenizer and toy models whose answers are computed here by hand,
 * the tokenizer-boundary fallback, answers files and flip rates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_metrics.h"
#include "dsq_test.h"


enum { BOS = 256, MERGED = 257 };

/* Byte tokenizer; with merge set, "o " becomes the single token MERGED (a merge across a word
 * boundary, as BPE tokenizers do). */
typedef struct toks {
    bool merge;
    int calls;
} toks;
static dsq_status byte_tok(void *user, const char *text, size_t len, int32_t **ids, size_t *n, dsq_err *err) {
    toks *t = user;
    t->calls++;
    int32_t *v = dsq_malloc((len ? len : 1) * sizeof *v);
    if (!v) return dsq_err_set(err, DSQ_ERR_NOMEM, "oom");
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (t->merge && text[i] == 'o' && i + 1 < len && text[i + 1] == ' ') {
            v[k++] = MERGED;
            i++;
        } else {
            v[k++] = (unsigned char)text[i];
        }
    }
    *ids = v;
    *n = k;
    return DSQ_OK;
}

/* Unigram toy model: log p(token) from a table, whatever the context; records the last sequence. */
typedef struct unigram {
    double lp[258];
    int32_t last[256];
    size_t last_n, last_start;
} unigram;
static dsq_status unigram_span(void *user, const int32_t *ids, size_t n, size_t start, double *out, dsq_err *err) {
    unigram *u = user;
    if (start < 1 || start >= n) return dsq_err_set(err, DSQ_ERR_ARG, "bad span");
    for (size_t j = start; j < n; j++) out[j - start] = u->lp[ids[j]];
    u->last_n = n < 256 ? n : 256;
    memcpy(u->last, ids, u->last_n * sizeof *ids);
    u->last_start = start;
    return DSQ_OK;
}

/* Bigram toy model: log p(t | prev) = table value normalised over 258 ids. */
static double bigram_logit(int32_t prev, int32_t t) {
    uint64_t x = (uint64_t)prev * 1000003u + (uint64_t)t * 7919u + 17;
    x ^= x >> 13;
    x *= 0x9E3779B97F4A7C15ull;
    return (double)(x >> 40) / (double)(1 << 24) * 4.0;
}
static double bigram_lp(int32_t prev, int32_t t) {
    double z = 0;
    for (int i = 0; i < 258; i++) z += exp(bigram_logit(prev, i));
    return bigram_logit(prev, t) - log(z);
}
static dsq_status bigram_span(void *user, const int32_t *ids, size_t n, size_t start, double *out, dsq_err *err) {
    for (size_t j = start; j < n; j++) out[j - start] = bigram_lp(ids[j - 1], ids[j]);
    return DSQ_OK;
}

static void test_parse_ok(void **state) {
    const char *text =
        "{\"ctx\": \"A man\", \"endings\": [\"runs.\", \"sits.\", \"flies.\"], \"label\": 2}\n"
        "\n"
        "{\"context\": \"Caf\\u00e9 \xe2\x98\x95\", \"endings\": [\"x\", \"y\"], \"label\": \"1\", \"extra\": [1]}\r\n";
    dsq_mc_task *t;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_mc_task_parse(text, strlen(text), "mem", &t, &err), DSQ_OK);
    assert_int_equal(dsq_mc_task_count(t), 2);
    const dsq_mc_item *a = dsq_mc_task_item(t, 0), *b = dsq_mc_task_item(t, 1);
    assert_string_equal(a->ctx, "A man");
    assert_int_equal(a->n_endings, 3);
    assert_string_equal(a->endings[2], "flies.");
    assert_int_equal(a->label, 2);
    assert_string_equal(b->ctx, "Caf\xc3\xa9 \xe2\x98\x95");
    assert_int_equal(b->label, 1);
    assert_null(dsq_mc_task_item(t, 2));
    uint64_t h = dsq_mc_task_hash(t);
    dsq_mc_task_free(t);
    /* The hash follows the content. */
    const char *text2 = "{\"ctx\": \"A man\", \"endings\": [\"runs.\", \"sits.\", \"flies.\"], \"label\": 1}\n";
    assert_int_equal(dsq_mc_task_parse(text2, strlen(text2), "mem", &t, &err), DSQ_OK);
    assert_true(dsq_mc_task_hash(t) != h);
    dsq_mc_task_free(t);
    dsq_err_clear(&err);
}

static void test_parse_malformed(void **state) {
    /* One bad line per class; all are reported, each naming its line. */
    static const struct {
        const char *line;
        dsq_status status;
        const char *needle;
    } bad[] = {
        {"{\"ctx\":\"a\",\"endings\":[\"x\"],\"label\":0}", DSQ_ERR_RANGE, "1 endings"},
        {"{\"ctx\":\"a\",\"context\":\"b\",\"endings\":[\"x\",\"y\"],\"label\":0}", DSQ_ERR_DUPLICATE, "both"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"y\"]}", DSQ_ERR_MISSING, "label"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"y\"],\"label\":2}", DSQ_ERR_RANGE, "label"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"y\"],\"label\":-1}", DSQ_ERR_RANGE, "label"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"y\"],\"label\":0.5}", DSQ_ERR_RANGE, "label"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"y\"],\"label\":\"1a\"}", DSQ_ERR_RANGE, "label"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",3],\"label\":0}", DSQ_ERR_JSON, "ending 1"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"\"],\"label\":0}", DSQ_ERR_JSON, "ending 1"},
        {"{\"ctx\":\"a\",\"endings\":\"xy\",\"label\":0}", DSQ_ERR_JSON, "endings"},
        {"{\"endings\":[\"x\",\"y\"],\"label\":0}", DSQ_ERR_MISSING, "context"},
        {"{\"ctx\":7,\"endings\":[\"x\",\"y\"],\"label\":0}", DSQ_ERR_JSON, "context"},
        {"{\"ctx\":\"a\xff\",\"endings\":[\"x\",\"y\"],\"label\":0}", DSQ_ERR_JSON, "UTF-8"},
        {"{\"ctx\":\"\xed\xa0\x80\",\"endings\":[\"x\",\"y\"],\"label\":0}", DSQ_ERR_JSON, "UTF-8"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"y\"],\"label\":0,\"label\":1}", DSQ_ERR_DUPLICATE, "duplicate"},
        {"{\"ctx\":\"a\",\"endings\":[\"x\",\"y\"],\"label\":0} trailing", DSQ_ERR_JSON, "trailing"},
        {"[1,2]", DSQ_ERR_JSON, "not a JSON object"},
        {"{\"ctx\":\"a\",", DSQ_ERR_JSON, "malformed"},
    };
    size_t nb = sizeof bad / sizeof bad[0];
    /* A good first line, then the bad ones, then an item with too many endings. */
    char *text = malloc(1 << 16);
    size_t len = (size_t)sprintf(text, "{\"ctx\":\"ok\",\"endings\":[\"x\",\"y\"],\"label\":0}\n");
    for (size_t i = 0; i < nb; i++) len += (size_t)sprintf(text + len, "%s\n", bad[i].line);
    len += (size_t)sprintf(text + len, "{\"ctx\":\"a\",\"endings\":[");
    for (int e = 0; e <= DSQ_MC_MAX_ENDINGS; e++) len += (size_t)sprintf(text + len, "%s\"e\"", e ? "," : "");
    len += (size_t)sprintf(text + len, "],\"label\":0}\n");
    dsq_mc_task *t = (dsq_mc_task *)1;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_mc_task_parse(text, len, "task.jsonl", &t, &err), bad[0].status);
    assert_null(t);
    assert_int_equal(err.n, nb + 1);
    /* every problem names file:line and carries its class's words, in order */
    const char *p = err.all;
    for (size_t i = 0; i < nb; i++) {
        char where[64];
        snprintf(where, sizeof where, "task.jsonl:%zu", i + 2);
        const char *eol = strchr(p, '\n');
        size_t l = eol ? (size_t)(eol - p) : strlen(p);
        char line[1200];
        snprintf(line, sizeof line, "%.*s", (int)l, p);
        if (!strstr(line, where) || !strstr(line, bad[i].needle)) fprintf(stderr, "case %zu: %s\n", i, line);
        assert_non_null(strstr(line, where));
        assert_non_null(strstr(line, bad[i].needle));
        p = eol + 1;
    }
    assert_non_null(strstr(p, "65 endings"));
    dsq_err_clear(&err);
    /* each class alone gives its own status */
    for (size_t i = 0; i < nb; i++) {
        assert_int_equal(dsq_mc_task_parse(bad[i].line, strlen(bad[i].line), "one", &t, &err), bad[i].status);
        dsq_err_clear(&err);
    }
    /* empty file, NUL byte, over-long line */
    assert_int_equal(dsq_mc_task_parse("\n\n", 2, "empty", &t, &err), DSQ_ERR_MISSING);
    const char nul[] = "{\"ctx\":\"a\0\",\"endings\":[\"x\",\"y\"],\"label\":0}";
    assert_int_equal(dsq_mc_task_parse(nul, sizeof nul - 1, "nul", &t, &err), DSQ_ERR_JSON);
    char *big = malloc(DSQ_MC_MAX_LINE + 10);
    memset(big, ' ', DSQ_MC_MAX_LINE + 9);
    big[0] = '{';
    big[DSQ_MC_MAX_LINE + 8] = '}';
    assert_int_equal(dsq_mc_task_parse(big, DSQ_MC_MAX_LINE + 9, "big", &t, &err), DSQ_ERR_RANGE);
    free(big);
    char *missing = dsq_test_join(dsq_test_tmp, "nope.jsonl");
    assert_int_equal(dsq_mc_task_open(missing, &t, &err), DSQ_ERR_MISSING);
    free(missing);
    dsq_err_clear(&err);
    free(text);
}

static void test_score_hand(void **state) {
    /* Unigram: ' ' and 'a' cost 0.5 nats... see the arithmetic per item below. */
    const char *text = "{\"ctx\":\"q\",\"endings\":[\"a\",\"aaaa\",\"zz\"],\"label\":1}\n"
                       "{\"ctx\":\"q\",\"endings\":[\"zz\",\"a\"],\"label\":1}\n"
                       "{\"ctx\":\"qq\",\"endings\":[\"zzzz\",\"zz\",\"z\"],\"label\":0}\n";
    dsq_mc_task *t;
    assert_int_equal(dsq_mc_task_parse(text, strlen(text), "hand", &t, NULL), DSQ_OK);
    unigram u;
    for (int i = 0; i < 258; i++) u.lp[i] = -5;
    u.lp[' '] = -1.0;
    u.lp['a'] = -0.5;
    u.lp['z'] = -3.0;
    toks tk = {0};
    dsq_mc_options o = {.bos = BOS};
    dsq_mc_result r;
    assert_int_equal(dsq_mc_score(t, &o, byte_tok, &tk, unigram_span, &u, &r, NULL), DSQ_OK);
    assert_int_equal(r.n, 3);
    /* item 0: " a" = -1.5 (norm /2 = -.75), " aaaa" = -3 (/5 = -.6), " zz" = -7 (/3)
     *         raw → 0, norm → 1 = label */
    assert_true(r.ll[0] == -1.5 && r.ll[1] == -3.0 && r.ll[2] == -7.0);
    assert_int_equal(r.answers[0].raw, 0);
    assert_int_equal(r.answers[0].norm, 1);
    /* item 1: " zz" = -7, " a" = -1.5 → both pick 1 = label */
    assert_int_equal(r.answers[1].raw, 1);
    assert_int_equal(r.answers[1].norm, 1);
    /* item 2: " zzzz" = -13 (/5 = -2.6), " zz" = -7 (/3 = -2.33), " z" = -4 (/2 = -2): both pick 2, label 0 */
    assert_int_equal(r.answers[2].raw, 2);
    assert_int_equal(r.answers[2].norm, 2);
    assert_true(fabs(r.acc_raw - 1.0 / 3) < 1e-15 && fabs(r.acc_norm - 2.0 / 3) < 1e-15);
    assert_true(fabs(r.acc_raw_se - sqrt((1.0 / 3) * (2.0 / 3) / 3)) < 1e-15);
    /* the model saw BOS + "qq" + " z" with the span starting after the context */
    int32_t want[5] = {BOS, 'q', 'q', ' ', 'z'};
    assert_int_equal(u.last_n, 5);
    assert_memory_equal(u.last, want, sizeof want);
    assert_int_equal(u.last_start, 3);
    dsq_mc_result_clear(&r);

    /* Item range and no BOS: only item 1. */
    o.bos = -1;
    o.first = 1;
    o.count = 1;
    assert_int_equal(dsq_mc_score(t, &o, byte_tok, &tk, unigram_span, &u, &r, NULL), DSQ_OK);
    assert_int_equal(r.n, 1);
    assert_true(r.acc_raw == 1.0);
    assert_int_equal(u.last_start, 1);
    assert_int_equal(u.last[0], 'q');
    dsq_mc_result_clear(&r);
    o.first = 3;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_mc_score(t, &o, byte_tok, &tk, unigram_span, &u, &r, &err), DSQ_ERR_RANGE);
    dsq_err_clear(&err);
    dsq_mc_task_free(t);
}

static void test_score_boundary_merge(void **state) {
    /* The merging tokenizer turns "go up" into g, MERGED, u, p, which does not continue tok("go") =
     * g, o; so the ending is tokenized alone: " up" → ' ', 'u', 'p'. */
    const char *text = "{\"ctx\":\"go\",\"endings\":[\"on\",\"up\"],\"label\":0}\n";
    dsq_mc_task *t;
    assert_int_equal(dsq_mc_task_parse(text, strlen(text), "merge", &t, NULL), DSQ_OK);
    unigram u;
    for (int i = 0; i < 258; i++) u.lp[i] = -1;
    toks tk = {.merge = true};
    dsq_mc_options o = {.bos = BOS};
    dsq_mc_result r;
    assert_int_equal(dsq_mc_score(t, &o, byte_tok, &tk, unigram_span, &u, &r, NULL), DSQ_OK);
    int32_t want[6] = {BOS, 'g', 'o', ' ', 'u', 'p'};
    assert_int_equal(u.last_n, 6);
    assert_memory_equal(u.last, want, sizeof want);
    assert_int_equal(u.last_start, 3);
    assert_true(r.ll[0] == -3 && r.ll[1] == -3);
    dsq_mc_result_clear(&r);
    dsq_mc_task_free(t);
}

static void test_score_bigram_and_flips(void **state) {
    /* Random items scored by the bigram model; expected log-likelihoods computed here directly. */
    char *text = malloc(1 << 16);
    size_t len = 0;
    uint64_t x = 12345;
    enum { N = 40 };
    for (int i = 0; i < N; i++) {
        len += (size_t)sprintf(text + len, "{\"ctx\":\"");
        for (int c = 0; c < 5 + i % 7; c++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            text[len++] = (char)('a' + (x >> 59) % 26);
        }
        len += (size_t)sprintf(text + len, "\",\"endings\":[");
        for (int e = 0; e < 4; e++) {
            len += (size_t)sprintf(text + len, "%s\"", e ? "," : "");
            for (int c = 0; c < 1 + (e + i) % 5; c++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                text[len++] = (char)('a' + (x >> 59) % 26);
            }
            text[len++] = '"';
        }
        len += (size_t)sprintf(text + len, "],\"label\":%d}\n", i % 4);
    }
    char *task_path = dsq_test_join(dsq_test_tmp, "task.jsonl");
    dsq_test_write(task_path, text, len);
    dsq_mc_task *t;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_mc_task_open(task_path, &t, &err), DSQ_OK);
    assert_int_equal(dsq_mc_task_count(t), N);
    toks tk = {0};
    dsq_mc_options o = {.bos = BOS};
    dsq_mc_result rb;
    assert_int_equal(dsq_mc_score(t, &o, byte_tok, &tk, bigram_span, NULL, &rb, &err), DSQ_OK);
    const double *ll = rb.ll;
    int ok_raw = 0, ok_norm = 0;
    for (int i = 0; i < N; i++) {
        const dsq_mc_item *it = dsq_mc_task_item(t, (size_t)i);
        double best = -INFINITY, best_n = -INFINITY;
        uint32_t raw = 0, norm = 0;
        for (uint32_t e = 0; e < it->n_endings; e++) {
            /* BOS + ctx + " " + ending, scored from the space on */
            int32_t prev = it->ctx[strlen(it->ctx) - 1];
            double want = bigram_lp(prev, ' ');
            prev = ' ';
            for (const char *c = it->endings[e]; *c; c++) {
                want += bigram_lp(prev, (unsigned char)*c);
                prev = (unsigned char)*c;
            }
            assert_true(fabs(ll[e] - want) < 1e-12);
            double nrm = want / (double)(strlen(it->endings[e]) + 1);
            if (want > best) best = want, raw = e;
            if (nrm > best_n) best_n = nrm, norm = e;
        }
        assert_int_equal(rb.answers[i].raw, raw);
        assert_int_equal(rb.answers[i].norm, norm);
        ok_raw += raw == it->label;
        ok_norm += norm == it->label;
        ll += it->n_endings;
    }
    assert_true(fabs(rb.acc_raw - (double)ok_raw / N) < 1e-15);
    assert_true(fabs(rb.acc_norm - (double)ok_norm / N) < 1e-15);

    /* Answers of the bigram model; a unigram model's flips against them. */
    char *ans = dsq_test_join(dsq_test_tmp, "answers.jsonl");
    assert_int_equal(dsq_mc_answers_write(ans, t, &o, &rb, false, &err), DSQ_OK);
    assert_int_equal(dsq_mc_answers_write(ans, t, &o, &rb, false, &err), DSQ_ERR_EXISTS);
    dsq_mc_flips f;
    assert_int_equal(dsq_mc_flips_vs_file(ans, t, &o, &rb, &f, &err), DSQ_OK);
    assert_true(f.n == N && f.raw == 0 && f.norm == 0 && f.raw_rate == 0);
    unigram u;
    for (int i = 0; i < 258; i++) u.lp[i] = -1.0 - (i % 5);
    dsq_mc_result ru;
    assert_int_equal(dsq_mc_score(t, &o, byte_tok, &tk, unigram_span, &u, &ru, &err), DSQ_OK);
    uint64_t raw_flips = 0, norm_flips = 0;
    for (int i = 0; i < N; i++) {
        raw_flips += ru.answers[i].raw != rb.answers[i].raw;
        norm_flips += ru.answers[i].norm != rb.answers[i].norm;
    }
    assert_int_equal(dsq_mc_flips_vs_file(ans, t, &o, &ru, &f, &err), DSQ_OK);
    assert_int_equal(f.raw, raw_flips);
    assert_int_equal(f.norm, norm_flips);
    assert_true(raw_flips > 0);
    assert_true(fabs(f.norm_rate - (double)norm_flips / N) < 1e-15);

    /* Answers that do not fit: another item range, another task, tampered or truncated files. */
    dsq_mc_options o2 = {.bos = BOS, .first = 1};
    dsq_mc_result r2;
    assert_int_equal(dsq_mc_score(t, &o2, byte_tok, &tk, unigram_span, &u, &r2, &err), DSQ_OK);
    assert_int_equal(dsq_mc_flips_vs_file(ans, t, &o2, &r2, &f, &err), DSQ_ERR_RANGE);
    dsq_mc_result_clear(&r2);
    size_t alen;
    char *a = dsq_test_read(ans, &alen);
    char *bad = dsq_test_join(dsq_test_tmp, "bad.jsonl");
    char *line2 = strchr(a, '\n') + 1;
    char *lab = strstr(line2, "\"label\":") + 8;
    *lab = *lab == '0' ? '1' : '0';
    dsq_test_write(bad, a, alen);
    assert_int_equal(dsq_mc_flips_vs_file(bad, t, &o, &ru, &f, &err), DSQ_ERR_FORMAT);
    *lab = *lab == '0' ? '1' : '0';
    dsq_test_write(bad, a, (size_t)(strrchr(a, '{') - a)); /* last answer missing */
    assert_int_equal(dsq_mc_flips_vs_file(bad, t, &o, &ru, &f, &err), DSQ_ERR_TRUNCATED);
    dsq_test_write(bad, line2, alen - (size_t)(line2 - a)); /* header missing */
    assert_int_equal(dsq_mc_flips_vs_file(bad, t, &o, &ru, &f, &err), DSQ_ERR_FORMAT);
    char *twice = malloc(2 * alen + 1);
    memcpy(twice, a, alen);
    memcpy(twice + alen, line2, alen - (size_t)(line2 - a));
    dsq_test_write(bad, twice, alen + alen - (size_t)(line2 - a));
    assert_int_equal(dsq_mc_flips_vs_file(bad, t, &o, &ru, &f, &err), DSQ_ERR_UNEXPECTED);
    free(twice);
    dsq_test_write(bad, "", 0);
    assert_int_equal(dsq_mc_flips_vs_file(bad, t, &o, &ru, &f, &err), DSQ_ERR_FORMAT);
    const char *other = "{\"ctx\":\"zz\",\"endings\":[\"x\",\"y\"],\"label\":0}\n";
    dsq_mc_task *t2;
    assert_int_equal(dsq_mc_task_parse(other, strlen(other), "other", &t2, &err), DSQ_OK);
    dsq_mc_result r3;
    assert_int_equal(dsq_mc_score(t2, &o, byte_tok, &tk, unigram_span, &u, &r3, &err), DSQ_OK);
    assert_int_equal(dsq_mc_flips_vs_file(ans, t2, &o, &r3, &f, &err), DSQ_ERR_CHECKSUM);
    dsq_err_clear(&err);
    dsq_mc_result_clear(&r3);
    dsq_mc_task_free(t2);
    free(a);
    free(bad);
    free(ans);
    dsq_mc_result_clear(&ru);
    dsq_mc_result_clear(&rb);
    dsq_mc_task_free(t);
    free(task_path);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_score_hand),
        cmocka_unit_test(test_score_boundary_merge),
        cmocka_unit_test(test_score_bigram_and_flips),
    };
    return cmocka_run_group_tests(tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
}
