/* The V4 forward pass against the official reference on shared/golden/v4-tiny (README.md there):
 * exact numerics — every row of prefill/decode/MTP logits and of every hidden tensor within
 * relative L2 1e-4 and the same arg-max; release numerics — mean KL(golden ‖ ours) ≤ 3e-2 and
 * top-1 agreement ≥ 0.70 over the prefill positions. */
#include "eval_util.h"

enum { N_TOK = 160, DECODE_FROM = 100, VOCAB = 512, HC_D = 4 * 256 };
#define EXACT_TOL 1e-4 /* README: golden-exact, per row */

typedef struct fixture {
    dsq_v4_model *m;
    dsq_st *golden;
    int32_t *tokens;
} fixture;

static int setup(void **state, const char *golden) {
    fixture *f = calloc(1, sizeof *f);
    f->m = eu_open_tiny();
    f->golden = eu_open_st(golden);
    size_t n = 0;
    f->tokens = eu_i32(f->golden, "tokens", &n);
    assert_int_equal(n, N_TOK);
    *state = f;
    return 0;
}
static int setup_exact(void **state) { return setup(state, "golden/v4-tiny/golden-exact.safetensors"); }
static int setup_release(void **state) { return setup(state, "golden/v4-tiny/golden-release.safetensors"); }

static int teardown(void **state) {
    fixture *f = *state;
    dsq_v4_model_close(f->m);
    dsq_st_close(f->golden);
    free(f->tokens);
    free(f);
    return 0;
}

static void forward_ok(dsq_v4_model *m, const dsq_eval_options *o, dsq_v4_item *items, int n) {
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = dsq_v4_forward(m, o, items, n, &e);
    if (s) fprintf(stderr, "forward: %s\n", e.msg);
    assert_int_equal(s, DSQ_OK);
    dsq_err_clear(&e);
}

static void check_rows(const char *what, const float *ours, const float *golden, size_t rows, size_t w, double tol) {
    size_t mism = 0;
    double rel = eu_max_rel_l2(ours, golden, rows, w, &mism);
    printf("  %-22s max row rel L2 %.3g, arg-max mismatches %zu/%zu\n", what, rel, mism, rows);
    assert_true(rel <= tol);
    assert_int_equal(mism, 0);
}

/* Prefill of all 160 tokens: logits, every layer_out.N, final_hidden; then MTP on the final streams. */
static void test_exact_prefill_layers_mtp(void **state) {
    fixture *f = *state;
    const dsq_v4_config *c = dsq_v4_model_config(f->m);
    dsq_eval_options o;
    eu_opts(&o);
    dsq_v4_seq *seq = NULL;
    assert_int_equal(dsq_v4_seq_create(f->m, &seq, NULL), DSQ_OK);
    float *logits = malloc(sizeof(float) * N_TOK * VOCAB), *hidden = malloc(sizeof(float) * N_TOK * HC_D);
    float *lo[8] = {0};
    for (int b = 0; b < c->n_layers; b++) lo[b] = malloc(sizeof(float) * N_TOK * HC_D);
    dsq_v4_item it = {seq, f->tokens, N_TOK, logits, hidden, lo};
    forward_ok(f->m, &o, &it, 1);

    for (int b = 0; b < c->n_layers; b++) {
        char name[32];
        snprintf(name, sizeof name, "layer_out.%d", b);
        float *g = eu_f32(f->golden, name, NULL);
        check_rows(name, lo[b], g, N_TOK * 4, 256, EXACT_TOL);
        free(g);
    }
    float *g = eu_f32(f->golden, "final_hidden", NULL);
    check_rows("final_hidden", hidden, g, N_TOK * 4, 256, EXACT_TOL);
    free(g);
    g = eu_f32(f->golden, "prefill_logits", NULL);
    check_rows("prefill_logits", logits, g, N_TOK, VOCAB, EXACT_TOL);
    free(g);

    /* MTP: final_hidden[:-1] with ids tokens[1:] */
    float *mtp = malloc(sizeof(float) * (N_TOK - 1) * VOCAB);
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_v4_mtp_forward(f->m, &o, seq, 0, hidden, f->tokens + 1, N_TOK - 1, mtp, NULL, &e), DSQ_OK);
    g = eu_f32(f->golden, "mtp_logits", NULL);
    check_rows("mtp_logits", mtp, g, N_TOK - 1, VOCAB, EXACT_TOL);
    free(g);
    free(mtp);
    for (int b = 0; b < c->n_layers; b++) free(lo[b]);
    free(logits);
    free(hidden);
    dsq_v4_seq_free(seq);
}

/* Prefill of 100 tokens, then one token at a time (the golden decode_logits). */
static void test_exact_decode(void **state) {
    fixture *f = *state;
    dsq_eval_options o;
    eu_opts(&o);
    dsq_v4_seq *seq = NULL;
    assert_int_equal(dsq_v4_seq_create(f->m, &seq, NULL), DSQ_OK);
    float *pre = malloc(sizeof(float) * DECODE_FROM * VOCAB), *dec = malloc(sizeof(float) * 60 * VOCAB);
    dsq_v4_item it = {seq, f->tokens, DECODE_FROM, pre, NULL, NULL};
    forward_ok(f->m, &o, &it, 1);
    memcpy(dec, pre + (DECODE_FROM - 1) * VOCAB, sizeof(float) * VOCAB);
    for (int i = 1; i < 60; i++) {
        dsq_v4_item step = {seq, f->tokens + DECODE_FROM - 1 + i, 1, dec + i * VOCAB, NULL, NULL};
        forward_ok(f->m, &o, &step, 1);
    }
    float *g = eu_f32(f->golden, "decode_logits", NULL);
    check_rows("decode_logits", dec, g, 60, VOCAB, EXACT_TOL);
    free(g);
    free(pre);
    free(dec);
    dsq_v4_seq_free(seq);
}

/* Release numerics end to end: README bound (the reference disagrees with itself by this much). */
static void test_release_prefill(void **state) {
    fixture *f = *state;
    dsq_eval_options o;
    eu_opts(&o);
    o.numerics = DSQ_NUMERICS_RELEASE;
    dsq_v4_seq *seq = NULL;
    assert_int_equal(dsq_v4_seq_create(f->m, &seq, NULL), DSQ_OK);
    float *logits = malloc(sizeof(float) * N_TOK * VOCAB);
    dsq_v4_item it = {seq, f->tokens, N_TOK, logits, NULL, NULL};
    forward_ok(f->m, &o, &it, 1);
    float *g = eu_f32(f->golden, "prefill_logits", NULL);
    double top1 = 0, kl = eu_mean_kl(g, logits, N_TOK, VOCAB, &top1);
    printf("  release prefill: mean KL %.4g, top-1 agreement %.3f\n", kl, top1);
    assert_true(kl <= 3e-2);
    assert_true(top1 >= 0.70);
    free(g);
    free(logits);
    dsq_v4_seq_free(seq);
}

int main(void) {
    const struct CMUnitTest exact[] = {
        cmocka_unit_test(test_exact_prefill_layers_mtp),
        cmocka_unit_test(test_exact_decode),
    };
    const struct CMUnitTest release[] = {
        cmocka_unit_test(test_release_prefill),
    };
    int rc = cmocka_run_group_tests_name("eval_golden_exact", exact, setup_exact, teardown);
    rc |= cmocka_run_group_tests_name("eval_golden_release", release, setup_release, teardown);
    return rc;
}
