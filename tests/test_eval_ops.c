/* Single operations of lib/eval against shared/golden/v4-tiny/ops.safetensors (README.md there):
 * RoPE tables (abs ≤ 1e-6), hyper-connection split (rel ≤ 1e-6), sparse attention (release ≤ 1 bf16
 * ulp, exact rel ≤ 1e-5), and the lib/quant activation simulations as the model calls them. */
#include "dsq_codec.h"
#include "dsq_v4_ops.h"
#include "eval_util.h"

static dsq_st *ops;

static int setup(void **state) {
    ops = eu_open_st("golden/v4-tiny/ops.safetensors");
    return 0;
}
static int teardown(void **state) {
    dsq_st_close(ops);
    return 0;
}

static void check_rope(const char *name, const dsq_v4_rope *rope) {
    size_t n = 0;
    float *g = eu_f32(ops, name, &n);
    assert_int_equal(n, 256 * 32 * 2);
    float freqs[32], cs[64];
    dsq_v4_rope_freqs(rope, freqs);
    double worst = 0;
    for (int p = 0; p < 256; p++) {
        dsq_v4_rope_cos_sin(freqs, 64, p, cs);
        for (int i = 0; i < 64; i++) worst = dsq_test_worse(worst, fabs((double)cs[i] - g[p * 64 + i]));
    }
    printf("  %s: max abs error %.3g\n", name, worst);
    assert_true(worst <= 1e-6);
    free(g);
}

static void test_rope_tables(void **state) {
    float *args = eu_f32(ops, "rope.args", NULL); /* rd, positions, original length, base, factor, β_fast, β_slow */
    dsq_v4_rope yarn = {(int)args[0], args[3], true, args[4], args[2], args[5], args[6]};
    check_rope("rope_yarn.cos_sin", &yarn);
    dsq_v4_rope plain = {(int)args[0], 10000.0, false, 1, 0, 0, 0};
    check_rope("rope_plain.cos_sin", &plain);
    free(args);
}

/* RoPE rotates the last rd dims as interleaved pairs and the inverse undoes it. */
static void test_rope_apply_inverse(void **state) {
    dsq_v4_rope r = {64, 160000.0, true, 4, 64, 32, 1};
    float freqs[32], cs[64], x[128], y[128];
    dsq_v4_rope_freqs(&r, freqs);
    dsq_v4_rope_cos_sin(freqs, 64, 37, cs);
    for (int i = 0; i < 128; i++) x[i] = y[i] = sinf((float)i * 0.37f);
    dsq_v4_rope_apply(y, 128, 64, cs, false, false);
    for (int i = 0; i < 64; i++) assert_true(y[i] == x[i]); /* the first nd dims never rotate */
    assert_true(fabsf(y[64] - (x[64] * cs[0] - x[65] * cs[1])) < 1e-6f);
    assert_true(fabsf(y[65] - (x[64] * cs[1] + x[65] * cs[0])) < 1e-6f);
    dsq_v4_rope_apply(y, 128, 64, cs, true, false);
    for (int i = 0; i < 128; i++) assert_true(fabsf(y[i] - x[i]) < 1e-5f);
}

static void test_hc_split(void **state) {
    float *mixes = eu_f32(ops, "hc.mixes", NULL), *scale = eu_f32(ops, "hc.scale", NULL),
          *base = eu_f32(ops, "hc.base", NULL);
    float *gpre = eu_f32(ops, "hc.pre", NULL), *gpost = eu_f32(ops, "hc.post", NULL),
          *gcomb = eu_f32(ops, "hc.comb", NULL);
    double worst = 0;
    for (int t = 0; t < 32; t++) {
        float pre[4], post[4], comb[16];
        dsq_v4_hc_split(mixes + t * 24, scale, base, 4, 20, 1e-6f, pre, post, comb);
        for (int j = 0; j < 4; j++) {
            worst = dsq_test_worse(worst, fabs(pre[j] - gpre[t * 4 + j]) / fabs(gpre[t * 4 + j]));
            worst = dsq_test_worse(worst, fabs(post[j] - gpost[t * 4 + j]) / fabs(gpost[t * 4 + j]));
        }
        for (int i = 0; i < 16; i++)
            worst = dsq_test_worse(worst, fabs(comb[i] - gcomb[t * 16 + i]) / fabs(gcomb[t * 16 + i]));
    }
    printf("  hc split: max rel error %.3g\n", worst);
    assert_true(worst <= 1e-6);
    free(mixes), free(scale), free(base), free(gpre), free(gpost), free(gcomb);
}

static void run_attn(bool release, const float *q, const float *kv, const float *idx, const float *sink, float *out) {
    const float *keys[24];
    for (int t = 0; t < 8; t++) {
        for (int i = 0; i < 24; i++) {
            int j = (int)idx[t * 24 + i];
            keys[i] = j >= 0 ? kv + j * 128 : NULL;
        }
        for (int h = 0; h < 4; h++)
            dsq_v4_sparse_attention(q + (t * 4 + h) * 128, keys, 24, 128, sink[h], 1.0f / sqrtf(128.0f), release,
                                    out + (t * 4 + h) * 128);
    }
}

static void test_sparse_attention(void **state) {
    float *q = eu_f32(ops, "attn.q_bf16", NULL), *kv = eu_f32(ops, "attn.kv_bf16", NULL);
    float *idx = eu_f32(ops, "attn.idx", NULL), *sink = eu_f32(ops, "attn.sink", NULL);
    float *grel = eu_f32(ops, "attn.out_release_bf16", NULL), *gex = eu_f32(ops, "attn.out_exact", NULL);
    float out[8 * 4 * 128];
    run_attn(true, q, kv, idx, sink, out);
    int ulps = 0;
    for (int i = 0; i < 8 * 4 * 128; i++) {
        int d = abs((int)dsq_bf16_from_f32(out[i]) - (int)dsq_bf16_from_f32(grel[i]));
        if (d > ulps) ulps = d;
    }
    printf("  sparse attention release: max %d bf16 ulp\n", ulps);
    assert_true(ulps <= 1);
    run_attn(false, q, kv, idx, sink, out);
    double rel = eu_max_rel_l2(out, gex, 8 * 4, 128, NULL);
    printf("  sparse attention exact: max row rel L2 %.3g\n", rel);
    assert_true(rel <= 1e-5);
    free(q), free(kv), free(idx), free(sink), free(grel), free(gex);
}

/* The sink only enlarges the denominator: a very negative sink gives a plain softmax, and
 * an all-empty list gives zero. */
static void test_attention_sink_semantics(void **state) {
    float q[4] = {1, 0, 0, 0}, k0[4] = {1, 2, 3, 4}, k1[4] = {-1, 0, 1, 0}, out[4];
    const float *keys[3] = {k0, NULL, k1};
    dsq_v4_sparse_attention(q, keys, 3, 4, -1e30f, 1.0f, false, out);
    double w0 = exp(1.0) / (exp(1.0) + exp(-1.0)), w1 = 1 - w0;
    for (int d = 0; d < 4; d++) assert_true(fabs(out[d] - (w0 * k0[d] + w1 * k1[d])) < 1e-6);
    dsq_v4_sparse_attention(q, keys, 3, 4, 1.0f, 1.0f, false, out); /* sink = 1: weight e^1 on a zero value */
    double z = exp(1.0) + exp(-1.0) + exp(1.0);
    for (int d = 0; d < 4; d++) assert_true(fabs(out[d] - (exp(1.0) * k0[d] + exp(-1.0) * k1[d]) / z) < 1e-6);
}

static void test_act_sims(void **state) {
    size_t n = 0;
    float *in = eu_f32(ops, "act_fp8.in_bf16", &n), *g = eu_f32(ops, "act_fp8_sim64.out_bf16", NULL);
    for (size_t r = 0; r < n / 256; r++) dsq_act_fp8_sim(in + r * 256, 256, 64);
    for (size_t i = 0; i < n; i++) assert_true(dsq_f32_bits(in[i]) == dsq_f32_bits(g[i]));
    free(in), free(g);
    in = eu_f32(ops, "act_fp4_sim.in_bf16", &n);
    g = eu_f32(ops, "act_fp4_sim.out_bf16", NULL);
    for (size_t r = 0; r < n / 128; r++) dsq_act_fp4_sim(in + r * 128, 128, 32);
    for (size_t i = 0; i < n; i++) assert_true(dsq_f32_bits(in[i]) == dsq_f32_bits(g[i]));
    free(in), free(g);
    in = eu_f32(ops, "hadamard.in_bf16", &n);
    g = eu_f32(ops, "hadamard.out_bf16", NULL);
    for (size_t r = 0; r < n / 128; r++) dsq_v4_hadamard(in + r * 128, 128, true);
    for (size_t i = 0; i < n; i++) assert_true(abs((int)dsq_bf16_from_f32(in[i]) - (int)dsq_bf16_from_f32(g[i])) <= 1);
    free(in), free(g);
}

/* The comparison helpers of the suites never let a NaN pass: a NaN row followed by finite rows keeps
 * the error NaN (the running maximum used to restart from the next finite row), and so does a NaN
 * in a running maximum (fmax drops it). */
static void test_comparisons_keep_nan(void **state) {
    float a[3 * 4] = {1, 2, 3, 4, NAN, 2, 3, 4, 1, 2, 3, 4}, b[3 * 4] = {1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4};
    size_t mism = 0;
    double rel = eu_max_rel_l2(a, b, 3, 4, &mism);
    assert_true(isnan(rel));
    assert_false(rel <= 1e-3);
    assert_int_equal(mism, 1);
    double top1 = 0, kl = eu_mean_kl(b, a, 3, 4, &top1);
    assert_true(isnan(kl));
    assert_true(top1 < 1.0);
    double worst = 0;
    worst = dsq_test_worse(worst, 1e-9);
    worst = dsq_test_worse(worst, NAN);
    worst = dsq_test_worse(worst, 2e-9);
    assert_true(isnan(worst));
    assert_true(dsq_test_worse(dsq_test_worse(0, 3), 1) == 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comparisons_keep_nan),
        cmocka_unit_test(test_rope_tables),
        cmocka_unit_test(test_rope_apply_inverse),
        cmocka_unit_test(test_hc_split),
        cmocka_unit_test(test_sparse_attention),
        cmocka_unit_test(test_attention_sink_semantics),
        cmocka_unit_test(test_act_sims),
    };
    return cmocka_run_group_tests_name("eval_ops", tests, setup, teardown);
}
