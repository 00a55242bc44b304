/* dsq plan (lib/eval/plan.c, cmd/plan.c):
 *   - the knapsack: on random small hand-made tables the DP (one byte per cell) finds the optimum an
 *     exhaustive search finds; with coarse cells its choice still fits; infeasible and malformed tables
 *     fail with their statuses;
 *   - dsq_v4_forward_from: a pass resumed at block b from an earlier pass's streams gives bit-identical
 *     logits (what the sensitivity runs rely on);
 *   - end to end on the trained tiny model: calibrate, plan under a bpw budget, the recipe converts, the
 *     converted container's stored bytes equal the plan's count and fit the budget, every tensor outside
 *     the plan's groups is byte-identical to a keep-everything conversion, and bad options fail with one
 *     line and a usage exit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_container.h"
#include "dsq_plan.h"
#include "dsq_test.h"
#include "dsq_v4.h"

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Exhaustive optimum: least cost with bytes <= budget (INFINITY if none). */
static double brute(const dsq_plan_option *const *opts, const int *n_opts, int G, uint64_t budget) {
    int idx[8] = {0};
    double best = INFINITY;
    for (;;) {
        uint64_t b = 0;
        double c = 0;
        for (int g = 0; g < G; g++) b += opts[g][idx[g]].bytes, c += opts[g][idx[g]].cost;
        if (b <= budget && c < best) best = c;
        int g = 0;
        while (g < G && ++idx[g] == n_opts[g]) idx[g++] = 0;
        if (g == G) break;
    }
    return best;
}

static void test_knapsack_exhaustive(void **state) {
    (void)state;
    uint64_t seed = 12345;
    dsq_plan_option tab[6][5];
    const dsq_plan_option *opts[6];
    int n_opts[6], choice[6];
    for (int trial = 0; trial < 400; trial++) {
        int G = 1 + (int)(lcg(&seed) % 6);
        uint64_t lo = 0, hi = 0;
        for (int g = 0; g < G; g++) {
            n_opts[g] = 1 + (int)(lcg(&seed) % 5);
            uint64_t mn = UINT64_MAX, mx = 0;
            for (int o = 0; o < n_opts[g]; o++) {
                tab[g][o].bytes = 1 + lcg(&seed) % 60;
                tab[g][o].cost = (double)(lcg(&seed) % 1000) / 97.0;
                mn = tab[g][o].bytes < mn ? tab[g][o].bytes : mn;
                mx = tab[g][o].bytes > mx ? tab[g][o].bytes : mx;
            }
            opts[g] = tab[g];
            lo += mn, hi += mx;
        }
        uint64_t budget = lo + lcg(&seed) % (hi - lo + 1);
        double best = brute(opts, n_opts, G, budget);
        assert_true(isfinite(best));
        /* budget <= 360 < cells: one byte per cell, the DP is exact */
        assert_int_equal(dsq_plan_knapsack(opts, n_opts, G, budget, 4096, choice, NULL), DSQ_OK);
        uint64_t b = 0;
        double c = 0;
        for (int g = 0; g < G; g++) {
            assert_true(choice[g] >= 0 && choice[g] < n_opts[g]);
            b += tab[g][choice[g]].bytes, c += tab[g][choice[g]].cost;
        }
        assert_true(b <= budget);
        assert_true(fabs(c - best) < 1e-9);
        /* coarse cells: still within the budget (sizes rounded up), never better than the optimum */
        assert_int_equal(dsq_plan_knapsack(opts, n_opts, G, budget, 7, choice, NULL), DSQ_OK);
        b = 0, c = 0;
        for (int g = 0; g < G; g++) b += tab[g][choice[g]].bytes, c += tab[g][choice[g]].cost;
        assert_true(b <= budget);
        assert_true(c >= best - 1e-9);
        /* one byte short of the smallest mix */
        if (lo > 0) {
            dsq_err e = DSQ_ERR_INIT;
            assert_int_equal(dsq_plan_knapsack(opts, n_opts, G, lo - 1, 4096, choice, &e), DSQ_ERR_RANGE);
            assert_non_null(strstr(e.msg, "smallest mix"));
            dsq_err_clear(&e);
        }
    }
    /* a hand-made table where greedy-by-ratio is wrong: the DP takes the pair that fills the budget */
    dsq_plan_option a[] = {{10, 5.0}, {30, 0.0}}, b2[] = {{10, 4.0}, {20, 0.5}};
    const dsq_plan_option *o2[] = {a, b2};
    int n2[] = {2, 2}, ch[2];
    assert_int_equal(dsq_plan_knapsack(o2, n2, 2, 40, 0, ch, NULL), DSQ_OK);
    assert_int_equal(ch[0], 1);
    assert_int_equal(ch[1], 0);
    /* malformed tables */
    dsq_plan_option bad[] = {{10, NAN}};
    const dsq_plan_option *ob[] = {bad};
    int nb[] = {1};
    assert_int_equal(dsq_plan_knapsack(ob, nb, 1, 40, 0, ch, NULL), DSQ_ERR_ARG);
    bad[0].cost = -1;
    assert_int_equal(dsq_plan_knapsack(ob, nb, 1, 40, 0, ch, NULL), DSQ_ERR_ARG);
    nb[0] = 0;
    assert_int_equal(dsq_plan_knapsack(ob, nb, 1, 40, 0, ch, NULL), DSQ_ERR_ARG);
}

static void test_forward_from(void **state) {
    (void)state;
    char *model = dsq_test_shared_path("models/v4-tiny-trained");
    dsq_v4_model *m = NULL;
    assert_int_equal(dsq_v4_model_open(model, &m, NULL), DSQ_OK);
    const dsq_v4_config *c = dsq_v4_model_config(m);
    enum { T = 40 };
    int32_t tok[T];
    for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 37 + 11) % (int)c->vocab_size);
    size_t HD = (size_t)c->hc_mult * (size_t)c->dim, V = (size_t)c->vocab_size;
    float *streams = calloc((size_t)c->n_layers * T * HD, sizeof(float));
    float **lo = calloc((size_t)c->n_layers, sizeof *lo);
    float *ref = calloc(T * V, sizeof(float)), *got = calloc(T * V, sizeof(float));
    for (int b = 0; b < c->n_layers; b++) lo[b] = streams + (size_t)b * T * HD;
    dsq_eval_options eo;
    dsq_eval_options_default(&eo);
    dsq_v4_seq *s = NULL;
    assert_int_equal(dsq_v4_seq_create(m, &s, NULL), DSQ_OK);
    dsq_v4_item it = {s, tok, T, ref, NULL, lo};
    assert_int_equal(dsq_v4_forward(m, &eo, &it, 1, NULL), DSQ_OK);
    for (int start = 1; start <= c->n_layers; start++) {
        dsq_v4_seq_reset(s);
        dsq_v4_item it2 = {s, tok, T, got, NULL, NULL};
        const float *from[1] = {lo[start - 1]};
        assert_int_equal(dsq_v4_forward_from(m, &eo, &it2, 1, start, from, NULL), DSQ_OK);
        assert_memory_equal(got, ref, T * V * sizeof(float));
    }
    dsq_v4_seq_reset(s);
    dsq_v4_item it3 = {s, tok, T, got, NULL, NULL};
    assert_int_equal(dsq_v4_forward_from(m, &eo, &it3, 1, c->n_layers + 1, (const float *const *)lo, NULL),
                     DSQ_ERR_ARG);
    assert_int_equal(dsq_v4_forward_from(m, &eo, &it3, 1, 1, NULL, NULL), DSQ_ERR_ARG);
    dsq_v4_seq_free(s);
    dsq_v4_model_close(m);
    free(streams), free(lo), free(ref), free(got), free(model);
}

/* A checkpoint weight the plan groups hold (dsq_plan.h). */
static bool group_matrix(const char *n) {
    if (!strcmp(n, "embed.weight") || !strcmp(n, "head.weight")) return true;
    if (strstr(n, ".compressor.") || strstr(n, ".indexer.")) return false;
    static const char *suffix[] = {".attn.wq_a.weight", ".attn.wq_b.weight", ".attn.wkv.weight", ".attn.wo_a.weight",
                                   ".attn.wo_b.weight", ".e_proj.weight",    ".h_proj.weight",   ".w1.weight",
                                   ".w2.weight",        ".w3.weight"};
    size_t l = strlen(n);
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        size_t k = strlen(suffix[i]);
        if (l > k && !strcmp(n + l - k, suffix[i])) return true;
    }
    return false;
}

static uint64_t data_bytes(dsq_ctr_reader *r) {
    uint64_t sum = 0;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        for (int p = 0; p < t->n_parts; p++) sum += t->parts[p].bytes;
    }
    return sum;
}

static uint64_t json_u64(const char *json, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(json, k);
    assert_non_null(p);
    return strtoull(p + strlen(k), NULL, 10);
}

static void test_plan_convert(void **state) {
    (void)state;
    char *model = dsq_test_shared_path("models/v4-tiny-trained");
    char *dir = dsq_test_tmpdir(), *imx = dsq_test_join(dir, "c.imatrix"), *rec = dsq_test_join(dir, "plan.json");
    char *keep = dsq_test_join(dir, "keep.json"), *out = dsq_test_join(dir, "plan.dsq"),
         *kout = dsq_test_join(dir, "keep.dsq");
    char *o = NULL, *e = NULL;
    int rc = dsq_test_run(&o, &e, "calibrate %s %s/calib.txt --out %s --ctx 64 --chunks 1", model, model, imx);
    assert_int_equal(rc, 0);
    free(o), free(e);
    const char *common = "--ctx 64 --chunks 1 --candidates q4_k,q2_k,int4-g32,int2-g64-asym";
    rc = dsq_test_run(&o, &e, "plan %s %s/calib.txt --imatrix %s %s --target-bpw 3.5 --out %s --json", model, model,
                      imx, common, rec);
    if (rc) fprintf(stderr, "%s\n", e);
    assert_int_equal(rc, 0);
    uint64_t total = json_u64(o, "total_bytes"), budget = json_u64(o, "budget_bytes"),
             conv = json_u64(o, "convert_bytes");
    assert_true(total <= budget);
    assert_int_equal(conv, total);
    assert_non_null(strstr(o, "\"group\": \"layers.3.experts.w2\""));
    assert_non_null(strstr(o, "\"group\": \"mtp.0.attn\""));
    /* the 128-column w2 group offers no k-quant */
    const char *w2 = strstr(o, "\"group\": \"layers.0.experts.w2\"");
    const char *w2_end = strstr(w2, "]}");
    const char *kq = strstr(w2, "q4_k");
    assert_true(!kq || kq > w2_end);
    free(o), free(e);

    /* the recipe converts; stored bytes are the plan's count */
    rc = dsq_test_run(&o, &e, "convert %s %s --recipe %s --imatrix %s", model, out, rec, imx);
    if (rc) fprintf(stderr, "%s\n", e);
    assert_int_equal(rc, 0);
    free(o), free(e);
    static const char keep_json[] = "{\"name\": \"keep\", \"rules\": [{\"match\": \"*\", \"encoding\": \"keep\"}]}\n";
    dsq_test_write(keep, keep_json, sizeof keep_json - 1);
    rc = dsq_test_run(&o, &e, "convert %s %s --recipe %s", model, kout, keep);
    assert_int_equal(rc, 0);
    free(o), free(e);
    dsq_ctr_reader *rp = NULL, *rk = NULL;
    assert_int_equal(dsq_ctr_reader_open(out, NULL, &rp, NULL), DSQ_OK);
    assert_int_equal(dsq_ctr_reader_open(kout, NULL, &rk, NULL), DSQ_OK);
    assert_int_equal(data_bytes(rp), total);
    /* every tensor outside the groups (protected, compressor, indexer, router...) is untouched */
    size_t outside = 0, changed = 0;
    for (size_t i = 0; i < dsq_ctr_count(rk); i++) {
        const dsq_ctr_tensor *tk = dsq_ctr_at(rk, i), *tp = NULL;
        const dsq_ctr_source *sp = NULL;
        assert_true(tk->n_sources > 0);
        if (group_matrix(tk->sources[0].name)) continue;
        for (uint32_t k = 1; k < tk->n_sources; k++) assert_false(group_matrix(tk->sources[k].name));
        outside += tk->n_sources;
        assert_true(dsq_ctr_find_source(rp, tk->sources[0].name, &tp, &sp));
        assert_int_equal(tp->encoding, tk->encoding);
        assert_int_equal(tp->n_parts, tk->n_parts);
        for (int p = 0; p < tk->n_parts; p++) assert_true(tp->parts[p].xxh3 == tk->parts[p].xxh3);
    }
    for (size_t i = 0; i < dsq_ctr_count(rp); i++) changed += dsq_ctr_at(rp, i)->encoding != DSQ_ENC_BF16;
    assert_int_equal(outside, 99); /* the tiny model's norms, hc, sinks, compressor, indexer, router weights */
    assert_true(changed > 0);
    dsq_ctr_reader_close(rp);
    dsq_ctr_reader_close(rk);

    /* bad options: one line, usage exit */
    struct {
        const char *args, *msg;
        int rc;
    } bad[] = {
        {"--target-bpw 3", "give CALIB.txt or --tokens FILE", 2},
        {"CAL --target-bpw 3 --target-size 1M", "one of --target-size and --target-bpw", 2},
        {"CAL", "one of --target-size and --target-bpw", 2},
        {"CAL --target-bpw -1", "--target-bpw needs a number > 0 and ≤ 64, not '-1'", 2},
        {"CAL --target-bpw 3 --bogus", "unknown option '--bogus'", 2},
        {"CAL --target-bpw 3 --candidates q4_k,keep", "'keep' is always a candidate", 1},
        {"CAL --target-bpw 3 --candidates q4_k,nope", "nope", 1},
        {"CAL --target-bpw 3 --candidates q4_k,q4_k", "given twice", 1},
        {"CAL --target-size 1K --ctx 64 --chunks 1 --candidates q2_k", "below the bytes of the tensors outside", 1},
        {"CAL --target-bpw 0.5 --ctx 64 --chunks 1 --candidates int4-g32", "below the smallest mix", 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char args[512];
        const char *cal = strstr(bad[i].args, "CAL");
        if (cal) snprintf(args, sizeof args, "%s/calib.txt%s", model, cal + 3);
        else snprintf(args, sizeof args, "%s", bad[i].args);
        rc = dsq_test_run(&o, &e, "plan %s %s", model, args);
        if (!strstr(e, bad[i].msg)) fprintf(stderr, "case %zu: %s", i, e);
        assert_int_equal(rc, bad[i].rc);
        assert_non_null(strstr(e, bad[i].msg));
        assert_non_null(strstr(e, "dsq plan"));
        free(o), free(e);
    }
    dsq_test_rmdir(dir);
    free(dir), free(imx), free(rec), free(keep), free(out), free(kout), free(model);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_knapsack_exhaustive),
        cmocka_unit_test(test_forward_from),
        cmocka_unit_test(test_plan_convert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
