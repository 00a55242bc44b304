/* Model-level jobs on the golden v4-tiny model (tokens given as ids), in both numerics: perplexity
 * against an independent computation from dsq_v4_forward, a KL base of the model against itself
 * (exactly 0), KL growing with the noise of perturbed copies, the layer diff (errors confined to the
 * perturbed block when each block is fed the reference's input), multiple choice through a small
 * byte-level tokenizer against a direct computation, and generation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_numeric.h"
#include "dsq_safetensors.h"
#include "dsq_score.h"
#include "dsq_test.h"
#include "score_util.h"

static dsq_v4_model *gm; /* the golden model */
static int32_t *gtok;    /* its 160 golden tokens */
static size_t n_gtok;
static char *gpath;

static int setup(void **state) {
    if (dsq_test_tmp_setup(state)) return -1;
    gpath = dsq_test_shared_path("golden/v4-tiny/model");
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_v4_model_open(gpath, &gm, &err) != DSQ_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    char *vec = dsq_test_shared_path("golden/v4-tiny/golden-exact.safetensors");
    dsq_st *st;
    if (dsq_st_open(vec, NULL, &st, &err) != DSQ_OK) return -1;
    const dsq_st_tensor *t = dsq_st_find(st, "tokens");
    n_gtok = (size_t)t->n_elements;
    gtok = malloc(t->n_bytes);
    memcpy(gtok, t->data, t->n_bytes);
    dsq_st_close(st);
    free(vec);
    dsq_err_clear(&err);
    return 0;
}
static int teardown(void **state) {
    dsq_v4_model_close(gm);
    free(gtok);
    free(gpath);
    dsq_test_tmp_teardown(state);
    return 0;
}

static dsq_score_options opts(dsq_numerics num) {
    dsq_score_options o;
    dsq_score_options_default(&o);
    o.eval.numerics = num;
    o.eval.threads = 1; /* the eval suites cover threading; one thread keeps this suite fast on a busy machine */
    o.n_ctx = 32;       /* 160 tokens → 5 chunks of BOS + 31, 15 scored positions each */
    o.batch = 3;        /* batches of 3 and 2 chunks */
    return o;
}

static void test_ppl_matches_direct(void **state) {
    for (int num = 0; num < 2; num++) {
        dsq_score_options o = opts((dsq_numerics)num);
        dsq_ppl_result r;
        dsq_err err = DSQ_ERR_INIT;
        assert_int_equal(dsq_score_ppl(gm, &o, gtok, n_gtok, &r, &err), DSQ_OK);
        assert_int_equal(r.n, 75);
        /* Direct: each chunk alone through dsq_v4_forward, NLL in long double. */
        dsq_ppl_plan plan;
        assert_int_equal(dsq_ppl_plan_make(n_gtok, 32, 0, 0, &plan, NULL), DSQ_OK);
        assert_int_equal(plan.n_chunks, 5);
        float *logits = malloc(32 * 512 * sizeof *logits);
        int32_t chunk[32];
        long double sum = 0;
        for (uint32_t c = 0; c < plan.n_chunks; c++) {
            dsq_ppl_plan_chunk(&plan, gtok, c, chunk);
            assert_int_equal(chunk[0], 0); /* the config's BOS */
            dsq_v4_seq *seq;
            assert_int_equal(dsq_v4_seq_create(gm, &seq, NULL), DSQ_OK);
            dsq_v4_item it = {.seq = seq, .tokens = chunk, .n_tokens = 32, .logits = logits};
            assert_int_equal(dsq_v4_forward(gm, &o.eval, &it, 1, NULL), DSQ_OK);
            dsq_v4_seq_free(seq);
            for (int p = 16; p < 31; p++) {
                long double m = -INFINITY, z = 0;
                const float *row = logits + p * 512;
                for (int i = 0; i < 512; i++) m = row[i] > m ? row[i] : m;
                for (int i = 0; i < 512; i++) z += expl(row[i] - m);
                sum += m + logl(z) - row[chunk[p + 1]];
            }
        }
        double want = (double)expl(sum / 75);
        /* batched vs single-sequence forward agree to ~1e-6 (the eval suite's decode/batch bound) */
        assert_true(fabs(r.ppl - want) <= 1e-5 * want);
        assert_true(r.ppl_se > 0 && r.ppl_se < r.ppl);
        free(logits);
        dsq_err_clear(&err);
    }
}

static void test_kld_self_zero_and_release(void **state) {
    char *base = dsq_test_join(dsq_test_tmp, "exact.kld");
    dsq_score_options o = opts(DSQ_NUMERICS_EXACT);
    dsq_base_options bo = {.k = 512, .seed = 5, .note = "golden v4-tiny, exact"};
    dsq_ppl_result ppl;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_score_save_base(gm, &o, &bo, gtok, n_gtok, base, &ppl, &err), DSQ_OK);
    assert_int_equal(ppl.n, 75);
    assert_int_equal(dsq_score_save_base(gm, &o, &bo, gtok, n_gtok, base, &ppl, &err), DSQ_ERR_EXISTS);
    /* the same model, same numerics: exactly zero */
    dsq_kld_stats s;
    assert_int_equal(dsq_score_kld(gm, &o, base, gtok, n_gtok, &s, &err), DSQ_OK);
    assert_int_equal(s.n, 75);
    assert_true(s.kl_mean == 0 && s.kl_max == 0 && s.top1 == 1 && s.same_sample == 1 && s.ppl_ratio == 1);
    assert_true(fabs(s.ppl_ref.ppl - ppl.ppl) < 1e-6 * ppl.ppl); /* records hold float log-probs */
    /* without text: the base's own tokens */
    assert_int_equal(dsq_score_kld(gm, &o, base, NULL, 0, &s, &err), DSQ_OK);
    assert_true(s.kl_mean == 0);
    /* release numerics against the exact base: the README's scale (3.1e-2 over a 160-token prefill) */
    dsq_score_options orel = opts(DSQ_NUMERICS_RELEASE);
    assert_int_equal(dsq_score_kld(gm, &orel, base, gtok, n_gtok, &s, &err), DSQ_OK);
    assert_true(s.kl_mean > 1e-3 && s.kl_mean < 0.1);
    assert_true(s.top1 < 1 && s.top1 > 0.5);
    /* other tokens are refused */
    int32_t *other = malloc(n_gtok * sizeof *other);
    memcpy(other, gtok, n_gtok * sizeof *other);
    other[40] = (other[40] + 1) % 512;
    assert_int_equal(dsq_score_kld(gm, &o, base, other, n_gtok, &s, &err), DSQ_ERR_CHECKSUM);
    assert_int_equal(dsq_score_kld(gm, &o, base, gtok, 100, &s, &err), DSQ_ERR_CHECKSUM);
    free(other);
    dsq_err_clear(&err);
    free(base);
}

static void test_kld_grows_with_noise(void **state) {
    char *base = dsq_test_join(dsq_test_tmp, "grow.kld");
    dsq_score_options o = opts(DSQ_NUMERICS_EXACT);
    dsq_base_options bo = {.k = 64}; /* the default k, on a vocabulary of 512 */
    assert_int_equal(dsq_score_save_base(gm, &o, &bo, gtok, n_gtok, base, NULL, NULL), DSQ_OK);
    double prev = 0;
    const double sigma[3] = {0.01, 0.05, 0.25};
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "noisy%d", i);
        char *dir = su_perturbed(dsq_test_tmp, gpath, name, "weight", sigma[i]); /* every BF16 weight */
        dsq_v4_model *m;
        assert_int_equal(dsq_v4_model_open(dir, &m, NULL), DSQ_OK);
        dsq_kld_stats s;
        assert_int_equal(dsq_score_kld(m, &o, base, gtok, n_gtok, &s, NULL), DSQ_OK);
        assert_true(s.kl_mean > prev);
        assert_true(s.kl_mean > 2 * s.kl_mean_se);
        prev = s.kl_mean;
        dsq_v4_model_close(m);
        free(dir);
    }
    free(base);
}

static void test_diff(void **state) {
    dsq_score_options o = opts(DSQ_NUMERICS_EXACT);
    o.max_chunks = 2;
    dsq_score_diff d;
    dsq_err err = DSQ_ERR_INIT;
    /* the model against itself */
    assert_int_equal(dsq_score_diff_run(gpath, gpath, &o, gtok, n_gtok, true, &d, &err), DSQ_OK);
    assert_int_equal(d.n_blocks, 4);
    for (int b = 0; b < 4; b++) {
        assert_true(isinf(dsq_diff_sqnr_db(&d.own[b])) && isinf(dsq_diff_sqnr_db(&d.fed[b])));
        assert_true(d.own[b].n == 2 * 32 * 4 * 256);
    }
    assert_true(d.kld.kl_mean == 0 && d.kld.n == 64);
    dsq_score_diff_clear(&d);
    /* block 2 perturbed: own errors start at block 2 and carry on; fed errors only at block 2 */
    char *dir = su_perturbed(dsq_test_tmp, gpath, "block2", "layers.2.", 0.1);
    assert_int_equal(dsq_score_diff_run(gpath, dir, &o, gtok, n_gtok, true, &d, &err), DSQ_OK);
    for (int b = 0; b < 4; b++) {
        double own = dsq_diff_sqnr_db(&d.own[b]), fed = dsq_diff_sqnr_db(&d.fed[b]);
        if (b < 2)
            assert_true(isinf(own) && isinf(fed));
        else
            assert_true(isfinite(own) && own > 0);
        if (b == 2) assert_true(isfinite(fed) && fabs(fed - own) < 1e-9); /* same input at the first changed block */
        if (b == 3) assert_true(isinf(fed));
        assert_true(dsq_diff_cosine(&d.own[b]) > 0.9);
    }
    assert_true(isfinite(dsq_diff_sqnr_db(&d.final)) && d.kld.kl_mean > 0);
    dsq_score_diff_clear(&d);
    free(dir);
    dsq_err_clear(&err);
}

static void test_mc_matches_direct(void **state) {
    char *tj = su_byte_tokenizer_json();
    dsq_tok *tok;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status st = dsq_tok_load_json(tj, strlen(tj), "byte tokenizer", NULL, &tok, &err);
    if (st) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(st, DSQ_OK);
    const char *task_text = "{\"ctx\":\"The cat\",\"endings\":[\"sat.\",\"ran away\",\"is\"],\"label\":0}\n"
                            "{\"context\":\"Numbers: 1 2 3\",\"endings\":[\"4 5\",\"x\"],\"label\":\"1\"}\n";
    dsq_mc_task *task;
    assert_int_equal(dsq_mc_task_parse(task_text, strlen(task_text), "task", &task, &err), DSQ_OK);
    dsq_score_options o = opts(DSQ_NUMERICS_EXACT);
    dsq_mc_result r;
    assert_int_equal(dsq_score_mc(gm, &o, tok, task, 0, 0, &r, &err), DSQ_OK);
    assert_int_equal(r.n, 2);
    /* direct: BOS + bytes(ctx) + bytes(" " + ending), the ending's log-likelihood summed */
    const double *ll = r.ll;
    for (size_t i = 0; i < 2; i++) {
        const dsq_mc_item *it = dsq_mc_task_item(task, i);
        for (uint32_t e = 0; e < it->n_endings; e++) {
            int32_t ids[64];
            size_t n = 0;
            ids[n++] = 0;
            for (const char *c = it->ctx; *c; c++) ids[n++] = 2 + (unsigned char)*c;
            size_t start = n;
            ids[n++] = 2 + ' ';
            for (const char *c = it->endings[e]; *c; c++) ids[n++] = 2 + (unsigned char)*c;
            float *logits = malloc(n * 512 * sizeof *logits);
            dsq_v4_seq *seq;
            assert_int_equal(dsq_v4_seq_create(gm, &seq, NULL), DSQ_OK);
            dsq_v4_item itm = {.seq = seq, .tokens = ids, .n_tokens = (int64_t)n, .logits = logits};
            assert_int_equal(dsq_v4_forward(gm, &o.eval, &itm, 1, NULL), DSQ_OK);
            dsq_v4_seq_free(seq);
            double want = 0;
            for (size_t t = start; t < n; t++) {
                double nll;
                assert_int_equal(dsq_metrics_nll(logits + (t - 1) * 512, 512, ids[t], &nll, NULL), DSQ_OK);
                want -= nll;
            }
            assert_true(fabs(ll[e] - want) < 1e-9 * fabs(want) + 1e-12);
            free(logits);
        }
        ll += it->n_endings;
    }
    dsq_mc_result_clear(&r);
    dsq_mc_task_free(task);
    dsq_tok_free(tok);
    free(tj);
    dsq_err_clear(&err);
}

typedef struct gen_sink {
    int32_t ids[64];
    int n;
} gen_sink;
static dsq_status sink(void *user, int32_t id, dsq_err *err) {
    gen_sink *g = user;
    g->ids[g->n++] = id;
    return DSQ_OK;
}

static void test_generate(void **state) {
    dsq_eval_options eo;
    dsq_eval_options_default(&eo);
    eo.threads = 1;
    dsq_generate_options g = {.n_new = 6, .ignore_eos = true};
    gen_sink a = {0};
    assert_int_equal(dsq_score_generate(gm, &eo, gtok, 12, &g, sink, &a, NULL), DSQ_OK);
    assert_int_equal(a.n, 6);
    /* greedy = arg-max of a fresh prefill of prompt + the tokens so far */
    int32_t seq_ids[32];
    memcpy(seq_ids, gtok, 12 * sizeof *seq_ids);
    float *logits = malloc(32 * 512 * sizeof *logits);
    for (int s = 0; s < 6; s++) {
        dsq_v4_seq *seq;
        assert_int_equal(dsq_v4_seq_create(gm, &seq, NULL), DSQ_OK);
        dsq_v4_item it = {.seq = seq, .tokens = seq_ids, .n_tokens = 12 + s, .logits = logits};
        assert_int_equal(dsq_v4_forward(gm, &eo, &it, 1, NULL), DSQ_OK);
        dsq_v4_seq_free(seq);
        int32_t best = (int32_t)dsq_metrics_argmax(logits + (size_t)(11 + s) * 512, 512);
        assert_int_equal(a.ids[s], best);
        seq_ids[12 + s] = best;
    }
    free(logits);
    /* sampling: deterministic for a seed, different across seeds */
    g.temperature = 1.0;
    g.seed = 1;
    gen_sink b = {0}, c = {0}, d = {0};
    assert_int_equal(dsq_score_generate(gm, &eo, gtok, 12, &g, sink, &b, NULL), DSQ_OK);
    assert_int_equal(dsq_score_generate(gm, &eo, gtok, 12, &g, sink, &c, NULL), DSQ_OK);
    assert_memory_equal(b.ids, c.ids, sizeof b.ids);
    g.seed = 2;
    assert_int_equal(dsq_score_generate(gm, &eo, gtok, 12, &g, sink, &d, NULL), DSQ_OK);
    assert_true(memcmp(b.ids, d.ids, 6 * sizeof *b.ids) != 0);
    /* EOS stops generation (the id is emitted) */
    g.ignore_eos = false;
    g.n_new = 40;
    g.seed = 3;
    gen_sink e = {0};
    assert_int_equal(dsq_score_generate(gm, &eo, gtok, 12, &g, sink, &e, NULL), DSQ_OK);
    for (int i = 0; i + 1 < e.n; i++) assert_int_not_equal(e.ids[i], 1);
    assert_true(e.n == 40 || e.ids[e.n - 1] == 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ppl_matches_direct),   cmocka_unit_test(test_kld_self_zero_and_release),
        cmocka_unit_test(test_kld_grows_with_noise), cmocka_unit_test(test_diff),
        cmocka_unit_test(test_mc_matches_direct),    cmocka_unit_test(test_generate),
    };
    if (getenv("DSQ_TEST_FILTER")) cmocka_set_test_filter(getenv("DSQ_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
