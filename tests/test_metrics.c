/* Metrics from logits rows: hand-computable cases and random rows against straightforward
 * long-double reference computations.  Tolerances: results accumulated in double are compared with
 * long-double references at 1e-12 relative; values routed through float log-probs (KL records) at
 * the float rounding they carry (documented per test). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_metrics.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"

/* Deterministic test RNG (xorshift64*). */
static uint64_t rng_state = 0x243F6A8885A308D3ull;
static double urand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1p-53;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(2 * M_PI * urand()); }
static void random_row(float *row, size_t n, double scale, double offset) {
    for (size_t i = 0; i < n; i++) row[i] = (float)(offset + scale * nrand());
}

static long double ref_lse(const float *row, size_t n) {
    long double m = -INFINITY, s = 0;
    for (size_t i = 0; i < n; i++)
        if (row[i] > m) m = row[i];
    for (size_t i = 0; i < n; i++) s += expl((long double)row[i] - m);
    return m + logl(s);
}

static void test_log_softmax_hand(void **state) {
    /* p = (1/4, 3/4): lse = log 4, nll(1) = log(4/3) */
    float row[2] = {0.0f, (float)log(3.0)};
    double lse, nll, ls[2];
    assert_int_equal(dsq_metrics_logsumexp(row, 2, &lse, NULL), DSQ_OK);
    assert_true(fabs(lse - log(1.0 + exp((double)row[1]))) < 1e-15);
    assert_int_equal(dsq_metrics_nll(row, 2, 1, &nll, NULL), DSQ_OK);
    assert_true(fabs(nll - (lse - (double)row[1])) < 1e-15);
    assert_true(fabs(nll - log(4.0 / 3.0)) < 1e-7); /* row[1] is log 3 rounded to float */
    assert_int_equal(dsq_metrics_log_softmax(row, 2, ls, NULL), DSQ_OK);
    assert_true(fabs(exp(ls[0]) + exp(ls[1]) - 1.0) < 1e-15);
    /* uniform over 8: nll = log 8 whatever the offset, even a huge one */
    float flat[8];
    for (int i = 0; i < 8; i++) flat[i] = 3.0e4f;
    assert_int_equal(dsq_metrics_nll(flat, 8, 5, &nll, NULL), DSQ_OK);
    assert_true(fabs(nll - log(8.0)) < 1e-11); /* the double ulp at 3e4 is 3.6e-12 */
    /* -inf entries are masked ids with probability 0 */
    float masked[3] = {-INFINITY, 1.0f, 1.0f};
    assert_int_equal(dsq_metrics_nll(masked, 3, 2, &nll, NULL), DSQ_OK);
    assert_true(fabs(nll - log(2.0)) < 1e-15);
    assert_int_equal(dsq_metrics_nll(masked, 3, 0, &nll, NULL), DSQ_OK);
    assert_true(isinf(nll) && nll > 0);
}

static void test_log_softmax_random(void **state) {
    enum { V = 5000 };
    float *row = malloc(V * sizeof *row);
    double *ls = malloc(V * sizeof *ls);
    for (int trial = 0; trial < 20; trial++) {
        random_row(row, V, trial < 10 ? 3.0 : 30.0, trial % 2 ? 1e3 : -50);
        long double ref = ref_lse(row, V);
        double lse;
        assert_int_equal(dsq_metrics_logsumexp(row, V, &lse, NULL), DSQ_OK);
        assert_true(fabsl((long double)lse - ref) <= 1e-12L * fabsl(ref) + 1e-12L);
        assert_int_equal(dsq_metrics_log_softmax(row, V, ls, NULL), DSQ_OK);
        long double sum = 0;
        for (int i = 0; i < V; i++) sum += expl((long double)ls[i]);
        assert_true(fabsl(sum - 1) < 1e-12L);
        int t = (int)(urand() * V);
        double nll;
        assert_int_equal(dsq_metrics_nll(row, V, t, &nll, NULL), DSQ_OK);
        assert_true(fabsl((long double)nll - (ref - row[t])) <= 1e-12L * (1 + fabsl(ref)));
    }
    free(row);
    free(ls);
}

static void test_row_errors(void **state) {
    float row[4] = {1, 2, 3, 4};
    double v;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_metrics_nll(row, 4, 4, &v, &err), DSQ_ERR_TOKEN);
    assert_int_equal(dsq_metrics_nll(row, 4, -1, &v, &err), DSQ_ERR_TOKEN);
    row[2] = NAN;
    assert_int_equal(dsq_metrics_nll(row, 4, 0, &v, &err), DSQ_ERR_NONFINITE);
    row[2] = INFINITY;
    assert_int_equal(dsq_metrics_logsumexp(row, 4, &v, &err), DSQ_ERR_NONFINITE);
    float dead[2] = {-INFINITY, -INFINITY};
    assert_int_equal(dsq_metrics_logsumexp(dead, 2, &v, &err), DSQ_ERR_NONFINITE);
    assert_int_equal(dsq_metrics_logsumexp(row, 0, &v, &err), DSQ_ERR_ARG);
    assert_true(err.n == 6);
    dsq_err_clear(&err);
}

static void test_argmax_and_gumbel(void **state) {
    float ties[5] = {1, 3, 2, 3, 0};
    assert_int_equal(dsq_metrics_argmax(ties, 5), 1);
    /* The same (seed, position) gives the same sample; frequencies follow softmax(row / T). */
    enum { V = 6, N = 60000 };
    float row[V] = {0.0f, 1.0f, -1.0f, 2.0f, 0.5f, -INFINITY};
    for (int ti = 0; ti < 2; ti++) {
        double T = ti ? 0.5 : 1.0;
        double p[V], z = 0;
        for (int i = 0; i < V; i++) z += p[i] = exp(row[i] / T);
        long count[V] = {0};
        for (uint64_t pos = 0; pos < N; pos++) {
            size_t s = dsq_metrics_gumbel_sample(row, V, T, 42, pos);
            assert_int_equal(s, dsq_metrics_gumbel_sample(row, V, T, 42, pos));
            count[s]++;
        }
        assert_int_equal(count[5], 0); /* -inf is never drawn */
        for (int i = 0; i < V; i++) {
            double want = p[i] / z, got = (double)count[i] / N;
            double sd = sqrt(want * (1 - want) / N);
            assert_true(fabs(got - want) <= 5 * sd + 1e-12); /* 5 sigma */
        }
    }
    /* A different seed gives a different stream. */
    int same = 0;
    for (uint64_t pos = 0; pos < 1000; pos++)
        same += dsq_metrics_gumbel_sample(row, V, 1.0, 1, pos) == dsq_metrics_gumbel_sample(row, V, 1.0, 2, pos);
    assert_true(same < 600);
}

static void test_stat_and_quantiles(void **state) {
    dsq_stat s = {0};
    double xs[5] = {2, 4, 4, 5, 9};
    for (int i = 0; i < 5; i++) dsq_stat_add(&s, xs[i]);
    assert_true(fabs(s.mean - 4.8) < 1e-15);
    /* Σ(x-4.8)² = 7.84+0.64+0.64+0.04+17.64 = 26.8; sd = sqrt(26.8/4) */
    assert_true(fabs(dsq_stat_sd(&s) - sqrt(6.7)) < 1e-14);
    assert_true(fabs(dsq_stat_se(&s) - sqrt(6.7) / sqrt(5)) < 1e-14);
    dsq_stat one = {0};
    dsq_stat_add(&one, 3);
    assert_true(dsq_stat_se(&one) == 0);

    /* Welford vs two-pass on values with a large offset. */
    dsq_stat w = {0};
    enum { N = 10000 };
    double *v = malloc(N * sizeof *v);
    long double sum = 0, ss = 0;
    for (int i = 0; i < N; i++) {
        v[i] = 1e6 + nrand();
        dsq_stat_add(&w, v[i]);
        sum += v[i];
    }
    long double mean = sum / N;
    for (int i = 0; i < N; i++) ss += (v[i] - mean) * (v[i] - mean);
    /* relative to the offset: a double holds 1e6 to ~1e-10 */
    assert_true(fabsl(w.mean - mean) < 1e-13L * mean);
    assert_true(fabsl(dsq_stat_sd(&w) - sqrtl(ss / (N - 1))) < 1e-8L);
    free(v);

    double sorted[5] = {1, 2, 3, 4, 5}, se;
    assert_true(dsq_metrics_quantile(sorted, 5, 0.5, &se) == 3.0);
    /* spread = sqrt(5·.25) = 1.118; ranks 2 ∓ 1.118 → values 1.882 and 4.118 */
    assert_true(fabs(se - 1.118033988749895) < 1e-12);
    assert_true(dsq_metrics_quantile(sorted, 5, 0.0, NULL) == 1.0);
    assert_true(dsq_metrics_quantile(sorted, 5, 1.0, NULL) == 5.0);
    assert_true(fabs(dsq_metrics_quantile(sorted, 5, 0.99, NULL) - 4.96) < 1e-12);
    assert_true(dsq_metrics_quantile(sorted, 1, 0.99, &se) == 1.0 && se == 0.0);
}

static void test_ppl_plan(void **state) {
    dsq_ppl_plan p;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ppl_plan_make(100, 10, 0, 0, &p, &err), DSQ_OK);
    assert_int_equal(p.stride, 9);
    assert_int_equal(p.n_chunks, 11); /* 11 · 9 = 99 ≤ 100 */
    assert_int_equal(p.score_from, 5);
    assert_int_equal(dsq_ppl_plan_scored_per_chunk(&p), 4); /* positions 5..8 predict 6..9 */
    assert_int_equal(dsq_ppl_plan_positions(&p), 44);
    assert_int_equal(dsq_ppl_plan_text_tokens(&p), 99);
    int32_t text[100], chunk[10];
    for (int i = 0; i < 100; i++) text[i] = 1000 + i;
    dsq_ppl_plan_chunk(&p, text, 2, chunk);
    assert_int_equal(chunk[0], 0);
    for (int i = 1; i < 10; i++) assert_int_equal(chunk[i], 1000 + 18 + i - 1);
    /* No BOS: chunks of exactly n_ctx text tokens. */
    assert_int_equal(dsq_ppl_plan_make(100, 10, 3, -7, &p, &err), DSQ_OK);
    assert_int_equal(p.bos, -1);
    assert_int_equal(p.stride, 10);
    assert_int_equal(p.n_chunks, 3);
    dsq_ppl_plan_chunk(&p, text, 1, chunk);
    for (int i = 0; i < 10; i++) assert_int_equal(chunk[i], 1010 + i);
    /* Odd context: n_ctx 7 scores positions 3..5. */
    assert_int_equal(dsq_ppl_plan_make(6, 7, 0, 1, &p, &err), DSQ_OK);
    assert_int_equal(dsq_ppl_plan_scored_per_chunk(&p), 3);
    assert_int_equal(dsq_ppl_plan_make(5, 7, 0, 1, &p, &err), DSQ_ERR_ARG);
    assert_int_equal(dsq_ppl_plan_make(100, 2, 0, 1, &p, &err), DSQ_ERR_ARG);
    dsq_err_clear(&err);
}

static void test_ppl_result(void **state) {
    dsq_stat s = {0};
    for (int i = 0; i < 3; i++) dsq_stat_add(&s, 1.0);
    dsq_ppl_result r = dsq_ppl_from_stat(&s);
    assert_true(fabs(r.ppl - M_E) < 1e-15 && r.ppl_se == 0);
    /* NLLs from a known distribution: ppl and delta-method error against a direct computation. */
    dsq_stat t = {0};
    long double sum = 0, ss = 0;
    enum { N = 4000 };
    double *v = malloc(N * sizeof *v);
    for (int i = 0; i < N; i++) {
        v[i] = 2.0 + 0.7 * nrand();
        dsq_stat_add(&t, v[i]);
        sum += v[i];
    }
    long double mean = sum / N;
    for (int i = 0; i < N; i++) ss += (v[i] - mean) * (v[i] - mean);
    r = dsq_ppl_from_stat(&t);
    long double se = sqrtl(ss / (N - 1)) / sqrtl(N);
    assert_true(fabsl(r.ppl - expl(mean)) < 1e-9L * expl(mean));
    assert_true(fabsl(r.ppl_se - expl(mean) * se) < 1e-9L);
    free(v);
}

static void test_diff(void **state) {
    enum { N = 1000 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    random_row(a, N, 1.0, 0.0);
    dsq_diff_acc d = {0};
    dsq_diff_add(&d, a, a, N);
    assert_true(dsq_diff_cosine(&d) > 1 - 1e-15 && dsq_diff_cosine(&d) < 1 + 1e-15);
    assert_true(isinf(dsq_diff_sqnr_db(&d)) && dsq_diff_sqnr_db(&d) > 0);
    assert_true(dsq_diff_rel_rms(&d) == 0 && d.max_abs == 0);
    /* cand = 0.5·ref: cosine 1, SQNR 10·log10(1/0.25) = 6.0206 dB, rel RMS 0.5 */
    for (int i = 0; i < N; i++) b[i] = 0.5f * a[i];
    memset(&d, 0, sizeof d);
    dsq_diff_add(&d, a, b, N / 2); /* in two calls */
    dsq_diff_add(&d, a + N / 2, b + N / 2, N - N / 2);
    assert_true(fabs(dsq_diff_cosine(&d) - 1) < 1e-12);
    assert_true(fabs(dsq_diff_sqnr_db(&d) - 10 * log10(4.0)) < 1e-9);
    assert_true(fabs(dsq_diff_rel_rms(&d) - 0.5) < 1e-12);
    assert_int_equal(d.n, N);
    /* orthogonal: (1,0) vs (0,1): cosine 0, SQNR 10·log10(1/2) */
    float x[2] = {1, 0}, y[2] = {0, 1};
    memset(&d, 0, sizeof d);
    dsq_diff_add(&d, x, y, 2);
    assert_true(dsq_diff_cosine(&d) == 0);
    assert_true(fabs(dsq_diff_sqnr_db(&d) + 10 * log10(2.0)) < 1e-12);
    assert_true(d.max_abs == 1);
    /* random noise against a double reference */
    for (int i = 0; i < N; i++) b[i] = a[i] + (float)(0.01 * nrand());
    memset(&d, 0, sizeof d);
    dsq_diff_add(&d, a, b, N);
    long double rr = 0, cc = 0, rc = 0, ee = 0;
    for (int i = 0; i < N; i++) {
        rr += (long double)a[i] * a[i];
        cc += (long double)b[i] * b[i];
        rc += (long double)a[i] * b[i];
        ee += ((long double)a[i] - b[i]) * ((long double)a[i] - b[i]);
    }
    assert_true(fabsl(dsq_diff_cosine(&d) - rc / sqrtl(rr * cc)) < 1e-12L);
    assert_true(fabsl(dsq_diff_sqnr_db(&d) - 10 * log10l(rr / ee)) < 1e-9L);
    /* non-finite elements are counted and excluded */
    b[3] = NAN;
    dsq_diff_acc e = {0};
    dsq_diff_add(&e, a, b, N);
    assert_int_equal(e.nonfinite, 1);
    assert_int_equal(e.n, N - 1);
    free(a);
    free(b);
}

/* ---- KL ---------------------------------------------------------------------------------------- */

/* KL(p‖q) over full rows in long double. */
static long double ref_kl_full(const float *r, const float *c, size_t n) {
    long double lr = ref_lse(r, n), lc = ref_lse(c, n), kl = 0;
    for (size_t i = 0; i < n; i++) {
        long double a = r[i] - lr, b = c[i] - lc;
        kl += expl(a) * (a - b);
    }
    return kl;
}

static void test_kl_hand(void **state) {
    /* vocab 2, k 1: ref p = (.5,.5), cand q = (.25,.75) → KL = .5 ln 2 + .5 ln(2/3) (the remainder bucket is
     * id 1, so k = 1 is exact here too). */
    float ref[2] = {0, 0}, cand[2] = {0, (float)log(3.0)};
    dsq_kld_ctx *c;
    assert_int_equal(dsq_kld_ctx_create(2, 1, 1.0, 7, &c, NULL), DSQ_OK);
    dsq_kbase_record rec;
    assert_int_equal(dsq_kld_ref_record(c, ref, 1, 0, &rec, NULL), DSQ_OK);
    assert_int_equal(rec.k, 1);
    assert_int_equal(rec.ids[0], 0); /* tie → lower id */
    assert_true(fabsf(rec.lps[0] - logf(0.5f)) < 1e-7f);
    assert_true(fabsf(rec.rest_lp - logf(0.5f)) < 1e-7f);
    dsq_kld_pos p;
    assert_int_equal(dsq_kld_compare(c, &rec, cand, 0, &p, NULL), DSQ_OK);
    double want = 0.5 * log(2.0) + 0.5 * log(2.0 / 3.0);
    assert_true(fabs(p.kl - want) < 1e-7); /* log-probs are floats: ~1e-7 */
    assert_false(p.top1_agree);            /* cand prefers id 1 */
    assert_true(fabs(p.nll_ref - log(2.0)) < 1e-7 && fabs(p.nll_cand - log(4.0 / 3.0)) < 1e-7);
    assert_true(fabs(p.dp - 0.25) < 1e-7);
    assert_true(fabs(p.ref_top1_p - 0.5) < 1e-7);
    /* cand that masks the ref's top id: infinite KL */
    float dead[2] = {-INFINITY, 0};
    assert_int_equal(dsq_kld_compare(c, &rec, dead, 0, &p, NULL), DSQ_OK);
    assert_true(isinf(p.kl) && p.kl > 0);
    dsq_kld_ctx_free(c);

    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_kld_ctx_create(2, 3, 1.0, 7, &c, &err), DSQ_ERR_RANGE);
    assert_int_equal(dsq_kld_ctx_create(2, 1, 0.0, 7, &c, &err), DSQ_ERR_RANGE);
    assert_null(c);
    dsq_err_clear(&err);
}

static void test_kl_self_is_zero(void **state) {
    enum { V = 3000, K = 64, N = 200 };
    float *row = malloc(V * sizeof *row);
    dsq_kld_ctx *c;
    dsq_kld_acc *acc;
    assert_int_equal(dsq_kld_ctx_create(V, K, 1.0, 99, &c, NULL), DSQ_OK);
    assert_int_equal(dsq_kld_acc_create(&acc, NULL), DSQ_OK);
    for (uint64_t pos = 0; pos < N; pos++) {
        random_row(row, V, 1.0 + (double)(pos % 7), 0.0);
        int32_t target = (int32_t)(urand() * V);
        dsq_kbase_record rec;
        assert_int_equal(dsq_kld_ref_record(c, row, target, pos, &rec, NULL), DSQ_OK);
        /* top-k sorted and really the k largest */
        for (int j = 1; j < K; j++) assert_true(row[rec.ids[j - 1]] >= row[rec.ids[j]]);
        int above = 0;
        for (int i = 0; i < V; i++) above += row[i] > row[rec.ids[K - 1]];
        assert_true(above <= K - 1);
        dsq_kld_pos p;
        assert_int_equal(dsq_kld_compare(c, &rec, row, pos, &p, NULL), DSQ_OK);
        assert_true(p.kl == 0.0);
        assert_true(p.nll_ref == p.nll_cand && p.dp == 0.0);
        assert_true(p.top1_agree && p.sample_agree);
        assert_int_equal(dsq_kld_acc_add(acc, &p, NULL), DSQ_OK);
    }
    dsq_kld_stats s;
    assert_int_equal(dsq_kld_acc_stats(acc, &s, NULL), DSQ_OK);
    assert_int_equal(s.n, N);
    assert_true(s.kl_mean == 0 && s.kl_max == 0 && s.kl_median == 0 && s.kl_p99 == 0 && s.kl_mean_se == 0);
    assert_true(s.top1 == 1 && s.same_sample == 1 && s.top1_se == 0);
    assert_true(s.ppl_ratio == 1.0 && s.ppl_ratio_se == 0.0);
    assert_true(s.dp_mean == 0 && s.dp_rms == 0);
    assert_true(s.ppl_ref.ppl == s.ppl_cand.ppl);
    assert_int_equal(s.hist[0], N);
    dsq_kld_acc_free(acc);
    dsq_kld_ctx_free(c);
    free(row);
}

static void test_kl_vs_reference(void **state) {
    enum { V = 2000, N = 120 };
    float *r = malloc(V * sizeof *r), *q = malloc(V * sizeof *q);
    dsq_kld_ctx *full, *top;
    assert_int_equal(dsq_kld_ctx_create(V, V, 1.0, 5, &full, NULL), DSQ_OK);
    assert_int_equal(dsq_kld_ctx_create(V, 32, 1.0, 5, &top, NULL), DSQ_OK);
    dsq_kld_acc *acc;
    assert_int_equal(dsq_kld_acc_create(&acc, NULL), DSQ_OK);
    long double sum_kl = 0, sum_d = 0, sum_d2 = 0, sum_dp = 0, sum_dp2 = 0;
    long double kls[N];
    int top1 = 0;
    for (int pos = 0; pos < N; pos++) {
        random_row(r, V, 2.0 + pos % 5, 0.0);
        double noise = 0.02 * (1 + pos % 10);
        for (int i = 0; i < V; i++) q[i] = r[i] + (float)(noise * nrand());
        int32_t target = (int32_t)(urand() * V);
        long double want = ref_kl_full(r, q, V);
        dsq_kbase_record rec;
        dsq_kld_pos p, pk;
        /* k = vocab: exact.  Float log-probs carry ~6e-8 relative error each; the sum of p·|lp|
         * is ≤ ~10 here, so 2e-6 absolute covers it. */
        assert_int_equal(dsq_kld_ref_record(full, r, target, pos, &rec, NULL), DSQ_OK);
        assert_true(rec.rest_lp == -INFINITY);
        assert_int_equal(dsq_kld_compare(full, &rec, q, pos, &p, NULL), DSQ_OK);
        assert_true(fabsl(p.kl - want) < 2e-6L);
        /* k = 32: the partition formula computed here from long double, and the bound KL_k ≤ KL. */
        assert_int_equal(dsq_kld_ref_record(top, r, target, pos, &rec, NULL), DSQ_OK);
        assert_int_equal(dsq_kld_compare(top, &rec, q, pos, &pk, NULL), DSQ_OK);
        long double lr = ref_lse(r, V), lq = ref_lse(q, V), kk = 0, pr = 1, qr = 1;
        for (int j = 0; j < 32; j++) {
            long double a = r[rec.ids[j]] - lr, b = q[rec.ids[j]] - lq;
            kk += expl(a) * (a - b);
            pr -= expl(a);
            qr -= expl(b);
        }
        kk += pr * logl(pr / qr);
        assert_true(fabsl(pk.kl - kk) < 2e-6L);
        assert_true(pk.kl <= p.kl + 2e-6);
        /* the other per-position numbers */
        long double nr = lr - r[target], nq = lq - q[target];
        assert_true(fabsl(p.nll_ref - nr) < 1e-5L && fabsl(p.nll_cand - nq) < 1e-5L);
        assert_true(fabsl(p.dp - (expl(-nq) - expl(-nr))) < 1e-6L);
        assert_int_equal(p.top1_agree, dsq_metrics_argmax(r, V) == dsq_metrics_argmax(q, V));
        top1 += p.top1_agree;
        assert_int_equal(dsq_kld_acc_add(acc, &p, NULL), DSQ_OK);
        kls[pos] = p.kl;
        sum_kl += p.kl;
        long double d = (long double)p.nll_cand - p.nll_ref;
        sum_d += d;
        sum_d2 += d * d;
        sum_dp += p.dp;
        sum_dp2 += (long double)p.dp * p.dp;
    }
    dsq_kld_stats s;
    assert_int_equal(dsq_kld_acc_stats(acc, &s, NULL), DSQ_OK);
    long double mean = sum_kl / N, ss = 0, mx = 0;
    for (int i = 0; i < N; i++) {
        ss += (kls[i] - mean) * (kls[i] - mean);
        if (kls[i] > mx) mx = kls[i];
    }
    assert_true(fabsl(s.kl_mean - mean) < 1e-12L);
    assert_true(fabsl(s.kl_mean_se - sqrtl(ss / (N - 1) / N)) < 1e-12L);
    assert_true(s.kl_max == (double)mx);
    assert_true(s.kl_median <= s.kl_p99 && s.kl_p99 <= s.kl_max && s.kl_median_se >= 0);
    long double md = sum_d / N, var_d = (sum_d2 - N * md * md) / (N - 1);
    assert_true(fabsl(s.ppl_ratio - expl(md)) < 1e-10L);
    assert_true(fabsl(s.ppl_ratio_se - expl(md) * sqrtl(var_d / N)) < 1e-8L);
    assert_true(fabsl(s.dp_mean - sum_dp / N) < 1e-12L);
    assert_true(fabsl(s.dp_rms - sqrtl(sum_dp2 / N)) < 1e-12L);
    assert_true(fabs(s.top1 - (double)top1 / N) < 1e-15);
    assert_true(fabs(s.top1_se - sqrt(s.top1 * (1 - s.top1) / N)) < 1e-15);
    uint64_t bands = 0, hist = 0;
    for (int b = 0; b < DSQ_KLD_BANDS; b++) bands += s.band_n[b];
    for (int b = 0; b < DSQ_KLD_HIST_BINS; b++) hist += s.hist[b];
    assert_int_equal(bands, N);
    assert_int_equal(hist, N);
    assert_true(s.same_sample > 0 && s.same_sample < 1);
    dsq_kld_acc_free(acc);
    dsq_kld_ctx_free(full);
    dsq_kld_ctx_free(top);
    free(r);
    free(q);
}

static void test_kl_bands_hist(void **state) {
    assert_int_equal(dsq_kld_hist_bin(0.0), 0);
    assert_int_equal(dsq_kld_hist_bin(-1e-9), 0);
    assert_int_equal(dsq_kld_hist_bin(9.99e-7), 0);
    assert_int_equal(dsq_kld_hist_bin(1e-6), 1);
    assert_int_equal(dsq_kld_hist_bin(1e-5), 1 + DSQ_KLD_HIST_PER_DECADE);
    assert_int_equal(dsq_kld_hist_bin(0.999999e-5), DSQ_KLD_HIST_PER_DECADE);
    assert_int_equal(dsq_kld_hist_bin(9.99), DSQ_KLD_HIST_BINS - 2);
    assert_int_equal(dsq_kld_hist_bin(10), DSQ_KLD_HIST_BINS - 1);
    assert_int_equal(dsq_kld_hist_bin(INFINITY), DSQ_KLD_HIST_BINS - 1);
    for (int b = 1; b < DSQ_KLD_HIST_BINS - 1; b++) {
        assert_int_equal(dsq_kld_hist_bin(dsq_kld_hist_edge(b)), b);
        assert_int_equal(dsq_kld_hist_bin(dsq_kld_hist_edge(b + 1) * (1 - 1e-12)), b);
    }
    /* bands by ref top-1 probability */
    dsq_kld_acc *a;
    assert_int_equal(dsq_kld_acc_create(&a, NULL), DSQ_OK);
    double ps[6] = {0.1, 0.2, 0.39, 0.5, 0.99, 1.0}, kls[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 6; i++) {
        dsq_kld_pos p = {.kl = kls[i], .ref_top1_p = ps[i]};
        assert_int_equal(dsq_kld_acc_add(a, &p, NULL), DSQ_OK);
    }
    dsq_kld_stats s;
    assert_int_equal(dsq_kld_acc_stats(a, &s, NULL), DSQ_OK);
    assert_int_equal(s.band_n[0], 1);
    assert_int_equal(s.band_n[1], 2);
    assert_int_equal(s.band_n[2], 1);
    assert_int_equal(s.band_n[3], 0);
    assert_int_equal(s.band_n[4], 2);
    assert_true(s.band_kl_mean[1] == 2.5 && isnan(s.band_kl_mean[3]) && s.band_kl_mean[4] == 5.5);
    assert_true(s.kl_median == 3.5 && s.kl_max == 6);
    dsq_kld_acc_free(a);
    dsq_kld_acc *empty;
    assert_int_equal(dsq_kld_acc_create(&empty, NULL), DSQ_OK);
    assert_int_equal(dsq_kld_acc_stats(empty, &s, NULL), DSQ_ERR_STATE);
    dsq_kld_acc_free(empty);
}

/* Real data: the golden README states exact vs release numerics differ by mean KL 3.1e-2 with top-1
 * agreement 0.64 over the 160 prefill positions (two significant digits, so ±0.05e-2 and ±0.005).
 * With k = vocab our KL is exact; KL_k never exceeds it and grows with k. */
static void test_kl_golden_exact_vs_release(void **state) {
    char *pe = dsq_test_shared_path("golden/v4-tiny/golden-exact.safetensors");
    char *pr = dsq_test_shared_path("golden/v4-tiny/golden-release.safetensors");
    dsq_st *a, *b;
    assert_int_equal(dsq_st_open(pe, NULL, &a, NULL), DSQ_OK);
    assert_int_equal(dsq_st_open(pr, NULL, &b, NULL), DSQ_OK);
    const dsq_st_tensor *la = dsq_st_find(a, "prefill_logits"), *lb = dsq_st_find(b, "prefill_logits");
    const dsq_st_tensor *tok = dsq_st_find(a, "tokens");
    assert_true(la && lb && tok && la->dtype == DSQ_DTYPE_F32 && la->shape[1] == 512);
    const float *A = la->data, *B = lb->data;
    const int32_t *T = tok->data;
    uint32_t n = (uint32_t)la->shape[0], V = (uint32_t)la->shape[1];
    double prev = -1, full = 0;
    for (uint32_t k = 16; k <= V; k *= 2) {
        dsq_kld_ctx *c;
        dsq_kld_acc *acc;
        assert_int_equal(dsq_kld_ctx_create(V, k, 1.0, 1, &c, NULL), DSQ_OK);
        assert_int_equal(dsq_kld_acc_create(&acc, NULL), DSQ_OK);
        for (uint32_t p = 0; p < n; p++) {
            dsq_kbase_record rec;
            dsq_kld_pos pos;
            int32_t target = p + 1 < n ? T[p + 1] : 0;
            assert_int_equal(dsq_kld_ref_record(c, A + (size_t)p * V, target, p, &rec, NULL), DSQ_OK);
            assert_int_equal(dsq_kld_compare(c, &rec, B + (size_t)p * V, p, &pos, NULL), DSQ_OK);
            assert_int_equal(dsq_kld_acc_add(acc, &pos, NULL), DSQ_OK);
        }
        dsq_kld_stats s;
        assert_int_equal(dsq_kld_acc_stats(acc, &s, NULL), DSQ_OK);
        assert_true(s.kl_mean > prev);
        prev = s.kl_mean;
        if (k == V) {
            full = s.kl_mean;
            assert_true(s.kl_mean >= 0.0305 && s.kl_mean < 0.0315);
            assert_true(s.top1 >= 0.635 && s.top1 < 0.645);
        }
        dsq_kld_acc_free(acc);
        dsq_kld_ctx_free(c);
    }
    assert_true(full > 0);
    dsq_st_close(a);
    dsq_st_close(b);
    free(pe);
    free(pr);
}

/* Position buckets, a hand-made case: edges 4, 8, 100 → [0,4), [4,8), [8,100), [100,∞).  Rows at positions
 * 1, 2 (bucket 0), 5 (bucket 1), 9, 50, 99 (bucket 2), none ≥ 100 (omitted).  Per bucket: n, mean KL, top-1
 * and PPL ratio = exp(mean(nll_cand − nll_ref)) computed by hand; the default edges are 1024/8192/32768;
 * bad edge lists are refused; edges cannot change after the first add. */
static void test_kl_position_buckets(void **state) {
    dsq_kld_acc *acc;
    assert_int_equal(dsq_kld_acc_create(&acc, NULL), DSQ_OK);
    const uint64_t edges[] = {4, 8, 100};
    assert_int_equal(dsq_kld_acc_set_buckets(acc, edges, 3, NULL), DSQ_OK);
    struct {
        uint64_t pos;
        double kl, nll_ref, nll_cand;
        bool top1;
    } rows[] = {
        {1, 0.1, 2.0, 2.5, true},  {2, 0.3, 1.0, 1.1, false}, {5, 0.2, 3.0, 2.0, true},
        {9, 0.0, 1.0, 1.0, true},  {50, 0.6, 2.0, 2.6, false}, {99, 0.3, 4.0, 4.3, true},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        dsq_kld_pos p = {.kl = rows[i].kl, .ref_top1_p = 0.5, .nll_ref = rows[i].nll_ref, .nll_cand = rows[i].nll_cand,
                         .top1_agree = rows[i].top1, .ctx_pos = rows[i].pos};
        assert_int_equal(dsq_kld_acc_add(acc, &p, NULL), DSQ_OK);
    }
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_kld_acc_set_buckets(acc, edges, 3, &e), DSQ_ERR_STATE);
    dsq_err_clear(&e);
    dsq_kld_stats s;
    assert_int_equal(dsq_kld_acc_stats(acc, &s, NULL), DSQ_OK);
    assert_int_equal(s.n_buckets, 3);
    const uint64_t lo[] = {0, 4, 8}, hi[] = {4, 8, 100}, n[] = {2, 1, 3};
    const double kl[] = {0.2, 0.2, 0.3}, top1[] = {0.5, 1.0, 2.0 / 3.0};
    const double ratio[] = {exp((0.5 + 0.1) / 2), exp(-1.0), exp((0.0 + 0.6 + 0.3) / 3)};
    for (int b = 0; b < 3; b++) {
        assert_int_equal(s.bucket_lo[b], lo[b]);
        assert_int_equal(s.bucket_hi[b], hi[b]);
        assert_int_equal(s.bucket_n[b], n[b]);
        assert_true(fabs(s.bucket_kl_mean[b] - kl[b]) < 1e-12);
        assert_true(fabs(s.bucket_top1[b] - top1[b]) < 1e-12);
        assert_true(fabs(s.bucket_ppl_ratio[b] - ratio[b]) < 1e-12);
    }
    assert_true(s.bucket_kl_mean_se[1] == 0 && s.bucket_ppl_ratio_se[1] == 0); /* one row: no spread */
    char lab[64];
    assert_string_equal(dsq_kld_bucket_label(&s, 0, lab, sizeof lab), "[0, 4)");
    dsq_kld_acc_free(acc);

    /* a row past the last edge lands in the open bucket; default edges */
    assert_int_equal(dsq_kld_acc_create(&acc, NULL), DSQ_OK);
    dsq_kld_pos p = {.kl = 1.0, .ctx_pos = 40000};
    assert_int_equal(dsq_kld_acc_add(acc, &p, NULL), DSQ_OK);
    p.ctx_pos = 1023;
    assert_int_equal(dsq_kld_acc_add(acc, &p, NULL), DSQ_OK);
    assert_int_equal(dsq_kld_acc_stats(acc, &s, NULL), DSQ_OK);
    assert_int_equal(s.n_buckets, 2);
    assert_true(s.bucket_lo[0] == 0 && s.bucket_hi[0] == 1024 && s.bucket_n[0] == 1);
    assert_true(s.bucket_lo[1] == 32768 && s.bucket_hi[1] == UINT64_MAX && s.bucket_n[1] == 1);
    assert_string_equal(dsq_kld_bucket_label(&s, 1, lab, sizeof lab), "[32768, ∞)");
    dsq_kld_acc_free(acc);

    /* parsing */
    uint64_t ed[DSQ_KLD_MAX_BUCKETS];
    int ne = 0;
    assert_true(dsq_kld_parse_buckets("128,256,512", ed, &ne) && ne == 3 && ed[0] == 128 && ed[2] == 512);
    const char *bad[] = {"", "0", "5,5", "8,4", "1,,2", "1,", "a", "-3", "1 2", "99999999999999999999999",
                         "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(dsq_kld_parse_buckets(bad[i], ed, &ne));
    assert_int_equal(dsq_kld_acc_create(&acc, NULL), DSQ_OK);
    const uint64_t desc[] = {8, 4};
    assert_int_equal(dsq_kld_acc_set_buckets(acc, desc, 2, &e), DSQ_ERR_ARG);
    dsq_err_clear(&e);
    dsq_kld_acc_free(acc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_softmax_hand),
        cmocka_unit_test(test_log_softmax_random),
        cmocka_unit_test(test_row_errors),
        cmocka_unit_test(test_argmax_and_gumbel),
        cmocka_unit_test(test_stat_and_quantiles),
        cmocka_unit_test(test_ppl_plan),
        cmocka_unit_test(test_ppl_result),
        cmocka_unit_test(test_diff),
        cmocka_unit_test(test_kl_hand),
        cmocka_unit_test(test_kl_self_is_zero),
        cmocka_unit_test(test_kl_vs_reference),
        cmocka_unit_test(test_kl_bands_hist),
        cmocka_unit_test(test_kl_position_buckets),
        cmocka_unit_test(test_kl_golden_exact_vs_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
