/* lib/quant against ../shared/golden/v4-tiny/ops.safetensors (outputs of the official release
 * kernels).  Tolerances are the README's: bit-exact for the weight and activation quantizers and
 * the FP8/FP4 simulations, ≤ 1 bf16 ulp for the Hadamard transform. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "codec_util.h"
#include "dsq_safetensors.h"

static dsq_st *ops;

static int setup(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/v4-tiny/ops.safetensors", shared_dir());
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_st_open(path, NULL, &ops, &e) != DSQ_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, e.msg);
        dsq_err_clear(&e);
        return -1;
    }
    return 0;
}
static int teardown(void **state) {
    (void)state;
    dsq_st_close(ops);
    return 0;
}

/* Tensor `name` with the expected dtype and shape (rank 2). */
static const void *get(const char *name, dsq_dtype dt, uint64_t d0, uint64_t d1) {
    const dsq_st_tensor *t = dsq_st_find(ops, name);
    if (!t) fprintf(stderr, "missing %s\n", name);
    assert_non_null(t);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->rank, 2);
    assert_int_equal(t->shape[0], d0);
    assert_int_equal(t->shape[1], d1);
    assert_non_null(t->data);
    return t->data;
}

/* bf16 bit patterns (I16) → floats */
static float *bf16_floats(const void *p, uint64_t n) {
    float *f = malloc(n * sizeof(float));
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, (const uint8_t *)p + 2 * i, 2);
        f[i] = dsq_bf16_to_f32(h);
    }
    return f;
}

static void test_w_fp8(void **state) {
    (void)state;
    const float *in = get("w_fp8.in", DSQ_DTYPE_F32, 200, 300);
    const uint8_t *codes = get("w_fp8.codes", DSQ_DTYPE_U8, 200, 300);
    const uint8_t *sc = get("w_fp8.scale_e8m0", DSQ_DTYPE_U8, 2, 3);
    dsq_qtensor_buf b;
    assert_int_equal(qbuf_alloc(&b, DSQ_ENC_FP8_B128, 200, 300, 0), 0);
    assert_int_equal(dsq_codec_encode(&b, in, 0, 200, NULL, NULL), DSQ_OK);
    assert_memory_equal(b.scales, sc, 6);
    assert_memory_equal(b.data, codes, 60000);
    /* and slab by slab (128 + 72 rows) */
    memset(b.data, 0, 60000);
    assert_int_equal(dsq_codec_encode(&b, in, 0, 128, NULL, NULL), DSQ_OK);
    assert_int_equal(dsq_codec_encode(&b, in + 128 * 300, 128, 72, NULL, NULL), DSQ_OK);
    assert_memory_equal(b.data, codes, 60000);
    /* the golden codes decode close to the input */
    dsq_qtensor g = {DSQ_ENC_FP8_B128, 200, 300, 0, codes, sc, NULL, 0};
    float *y = malloc(60000 * sizeof(float));
    assert_int_equal(dsq_codec_decode(&g, 0, 200, y, NULL, NULL), DSQ_OK);
    dsq_codec_errstats st = {0};
    dsq_codec_errstats_add(&st, in, y, 60000);
    assert_true(dsq_codec_errstats_rel_rms(&st) < 0.04);
    free(y);
    qbuf_free(&b);
}

static void test_w_fp4(void **state) {
    (void)state;
    const float *in = get("w_fp4.in", DSQ_DTYPE_F32, 64, 128);
    const uint8_t *packed = get("w_fp4.packed", DSQ_DTYPE_U8, 64, 64);
    const uint8_t *sc = get("w_fp4.scale_e8m0", DSQ_DTYPE_U8, 64, 4);
    dsq_qtensor_buf b;
    assert_int_equal(qbuf_alloc(&b, DSQ_ENC_MXFP4, 64, 128, 0), 0);
    assert_int_equal(dsq_codec_encode(&b, in, 0, 64, NULL, NULL), DSQ_OK);
    assert_memory_equal(b.scales, sc, 256);
    assert_memory_equal(b.data, packed, 4096); /* row 0 holds the RNE tie cases */
    /* activation-side FP4 quantizer gives the same bytes row by row */
    uint8_t row[64], rsc[4];
    for (int r = 0; r < 64; r++) {
        dsq_act_fp4_quant(in + r * 128, 128, 32, row, rsc);
        assert_memory_equal(row, packed + r * 64, 64);
        assert_memory_equal(rsc, sc + r * 4, 4);
    }
    qbuf_free(&b);
}

static void test_act_fp8(void **state) {
    (void)state;
    float *in = bf16_floats(get("act_fp8.in_bf16", DSQ_DTYPE_I16, 64, 256), 64 * 256);
    const uint8_t *codes = get("act_fp8.codes", DSQ_DTYPE_U8, 64, 256);
    const float *scales = get("act_fp8.scales", DSQ_DTYPE_F32, 64, 2);
    uint8_t c[256], e8[2];
    float s[2], q[256], s2[2];
    for (int r = 0; r < 64; r++) {
        dsq_act_fp8_quant(in + r * 256, 256, 128, c, s, e8);
        assert_memory_equal(c, codes + r * 256, 256);
        assert_memory_equal(s, scales + r * 2, 8);
        for (int k = 0; k < 2; k++) assert_true(dsq_e8m0_to_f32(e8[k]) == s[k]);
        dsq_act_fp8_quant_values(in + r * 256, 256, 128, q, s2);
        for (int i = 0; i < 256; i++) assert_true(q[i] == dsq_e4m3_to_f32(codes[r * 256 + i]));
        assert_memory_equal(s2, scales + r * 2, 8);
    }
    free(in);
}

static void test_act_fp8_sim64(void **state) {
    (void)state;
    float *x = bf16_floats(get("act_fp8.in_bf16", DSQ_DTYPE_I16, 64, 256), 64 * 256);
    const uint16_t *want = get("act_fp8_sim64.out_bf16", DSQ_DTYPE_I16, 64, 256);
    for (int r = 0; r < 64; r++) dsq_act_fp8_sim(x + r * 256, 256, 64);
    for (int i = 0; i < 64 * 256; i++) {
        uint16_t w;
        memcpy(&w, want + i, 2);
        assert_int_equal(dsq_bf16_from_f32(x[i]), w);
    }
    free(x);
}

static void test_act_fp4_sim(void **state) {
    (void)state;
    float *x = bf16_floats(get("act_fp4_sim.in_bf16", DSQ_DTYPE_I16, 16, 128), 16 * 128);
    const uint16_t *want = get("act_fp4_sim.out_bf16", DSQ_DTYPE_I16, 16, 128);
    for (int r = 0; r < 16; r++) dsq_act_fp4_sim(x + r * 128, 128, 32);
    for (int i = 0; i < 16 * 128; i++) {
        uint16_t w;
        memcpy(&w, want + i, 2);
        assert_int_equal(dsq_bf16_from_f32(x[i]), w); /* -0 included */
    }
    free(x);
}

/* bf16 bit pattern as an integer on a monotonic scale (for ulp distances). */
static int32_t bf16_ord(uint16_t h) { return (h & 0x8000) ? -(int32_t)(h & 0x7fff) : (int32_t)h; }

static void test_hadamard_golden(void **state) {
    (void)state;
    float *x = bf16_floats(get("hadamard.in_bf16", DSQ_DTYPE_I16, 16, 128), 16 * 128);
    const uint16_t *want = get("hadamard.out_bf16", DSQ_DTYPE_I16, 16, 128);
    int worst = 0, exact = 0;
    for (int r = 0; r < 16; r++) dsq_hadamard(x + r * 128, 128);
    for (int i = 0; i < 16 * 128; i++) {
        uint16_t w;
        memcpy(&w, want + i, 2);
        int d = abs(bf16_ord(dsq_bf16_from_f32(x[i])) - bf16_ord(w));
        if (d > worst) worst = d;
        exact += d == 0;
    }
    printf("  hadamard: %d of 2048 bit-exact, worst %d bf16 ulp\n", exact, worst);
    assert_true(worst <= 1);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_w_fp8),         cmocka_unit_test(test_w_fp4),
        cmocka_unit_test(test_act_fp8),       cmocka_unit_test(test_act_fp8_sim64),
        cmocka_unit_test(test_act_fp4_sim),   cmocka_unit_test(test_hadamard_golden),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
