/* Re-encoding the real golden checkpoint (../shared/golden/v4-tiny/model):
 *  - every routed expert (layers.*.ffn.experts.*.w{1,2,3} and mtp.0.ffn.experts...) moved MXFP4 →
 *    FP8 128x128 by the official converter's rule (spec §2.7) dequantizes to the identical floats
 *    (memcmp of the f32 outputs), with the block scales the rule prescribes;
 *  - the same experts moved MXFP4 → NVFP4 dequantize identically in every block that fits the E4M3
 *    scale window (on this model: all of them);
 *  - FP8 projections: same encoding → byte copy; UE8M0 → F32 scales → back, byte-identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "codec_util.h"
#include "dsq_test.h"
#include "dsq_safetensors.h"

static dsq_st *model;

static int setup(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/v4-tiny/model/model.safetensors", shared_dir());
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_st_open(path, NULL, &model, &e) != DSQ_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, e.msg);
        dsq_err_clear(&e);
        return -1;
    }
    return 0;
}
static int teardown(void **state) {
    (void)state;
    dsq_st_close(model);
    return 0;
}

static bool is_routed_expert(const char *name) {
    const char *p = strstr(name, ".ffn.experts.");
    size_t n = strlen(name);
    return p && n > 9 && strcmp(name + n - 7, ".weight") == 0 &&
           (strstr(name, ".w1.weight") || strstr(name, ".w2.weight") || strstr(name, ".w3.weight"));
}

/* The MXFP4 view of an expert weight and its scale tensor. */
static dsq_qtensor expert_view(const dsq_st_tensor *w) {
    char sname[600];
    snprintf(sname, sizeof sname, "%.*s.scale", (int)(strlen(w->name) - 7), w->name);
    const dsq_st_tensor *s = dsq_st_find(model, sname);
    assert_non_null(s);
    assert_int_equal(w->dtype, DSQ_DTYPE_I8);
    assert_int_equal(s->dtype, DSQ_DTYPE_F8_E8M0);
    assert_int_equal(s->shape[0], w->shape[0]);
    assert_int_equal(s->shape[1] * 16, w->shape[1]);
    dsq_qtensor t = {DSQ_ENC_MXFP4, w->shape[0], w->shape[1] * 2, 0, w->data, s->data, NULL, 0};
    return t;
}

static void decode_all(const dsq_qtensor *t, float *out) {
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = dsq_codec_decode(t, 0, t->rows, out, NULL, &e);
    if (s) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(s, DSQ_OK);
}

static void test_experts_fp4_to_fp8(void **state) {
    (void)state;
    size_t n_experts = 0, n_mtp = 0;
    uint64_t elements = 0;
    for (size_t i = 0; i < dsq_st_count(model); i++) {
        const dsq_st_tensor *w = dsq_st_at(model, i);
        if (!is_routed_expert(w->name)) continue;
        dsq_qtensor src = expert_view(w);
        uint64_t R = src.rows, C = src.cols;
        dsq_qtensor_buf dst;
        assert_int_equal(qbuf_alloc(&dst, DSQ_ENC_FP8_B128, R, C, 0), 0);
        dsq_reencode_report rep;
        dsq_codec_options o = {.name = w->name};
        dsq_err e = DSQ_ERR_INIT;
        assert_int_equal(dsq_codec_reencode(&src, &dst, &o, &rep, &e), DSQ_OK);
        assert_true(rep.exact_path);
        assert_int_equal(rep.elements_changed, 0);
        assert_int_equal(rep.blocks_inexact, 0);
        assert_int_equal(rep.blocks, (R / 128) * (C / 128));
        /* scales: s' = max of the block's 512 1x32 scales / 2^6 */
        const uint8_t *ss = src.scales;
        for (uint64_t br = 0; br < R / 128; br++)
            for (uint64_t bc = 0; bc < C / 128; bc++) {
                int mx = 0;
                for (uint64_t r = br * 128; r < br * 128 + 128; r++)
                    for (uint64_t g = bc * 4; g < bc * 4 + 4; g++) mx = ss[r * (C / 32) + g] > mx ? ss[r * (C / 32) + g] : mx;
                assert_int_equal(((uint8_t *)dst.scales)[br * (C / 128) + bc], mx - 6);
            }
        float *a = malloc(R * C * sizeof(float)), *b = malloc(R * C * sizeof(float));
        dsq_qtensor dv = dsq_qtensor_view(&dst);
        decode_all(&src, a);
        decode_all(&dv, b);
        assert_memory_equal(a, b, R * C * sizeof(float));
        /* the kernels agree too: one GEMV with each */
        float *x = malloc(C * sizeof(float)), *ya = malloc(R * sizeof(float)), *yb = malloc(R * sizeof(float));
        rng g = {i};
        fill_gauss(&g, x, C, 1.0f);
        dsq_codec_dot_rows(&src, x, 0, R, ya);
        dsq_codec_dot_rows(&dv, x, 0, R, yb);
        for (uint64_t r = 0; r < R; r++) assert_true(fabsf(ya[r] - yb[r]) <= 1e-5f * (fabsf(ya[r]) + 1.0f));
        dsq_codec_errstats st;
        assert_int_equal(dsq_codec_compare(&src, &dv, &o, &st, &e), DSQ_OK);
        assert_true(st.sum_sq_diff == 0 && dsq_codec_errstats_cosine(&st) > 0.9999999);
        free(x), free(ya), free(yb), free(a), free(b);
        qbuf_free(&dst);
        n_experts++;
        n_mtp += strncmp(w->name, "mtp.", 4) == 0;
        elements += R * C;
    }
    printf("  %zu routed expert matrices (%zu in the MTP block), %llu weights: identical after FP4 -> FP8\n",
           n_experts, n_mtp, (unsigned long long)elements);
    assert_int_equal(n_experts, 5 * 8 * 3); /* 4 layers + 1 MTP block, 8 experts, w1/w2/w3 */
    assert_int_equal(n_mtp, 8 * 3);
}

static void test_experts_mxfp4_to_nvfp4(void **state) {
    (void)state;
    size_t n = 0;
    uint64_t blocks = 0, inexact = 0;
    for (size_t i = 0; i < dsq_st_count(model); i++) {
        const dsq_st_tensor *w = dsq_st_at(model, i);
        if (!is_routed_expert(w->name)) continue;
        dsq_qtensor src = expert_view(w);
        uint64_t R = src.rows, C = src.cols;
        dsq_qtensor_buf dst;
        assert_int_equal(qbuf_alloc(&dst, DSQ_ENC_NVFP4, R, C, 0), 0);
        dsq_reencode_report rep;
        assert_int_equal(dsq_codec_reencode(&src, &dst, NULL, &rep, NULL), DSQ_OK);
        assert_true(rep.exact_path);
        assert_int_equal(rep.blocks, R * C / 16);
        blocks += rep.blocks, inexact += rep.blocks_inexact;
        /* the tensor scale is a power of two */
        int ex;
        assert_true(frexpf(dst.tensor_scale, &ex) == 0.5f);
        float *a = malloc(R * C * sizeof(float)), *b = malloc(R * C * sizeof(float));
        dsq_qtensor dv = dsq_qtensor_view(&dst);
        decode_all(&src, a);
        decode_all(&dv, b);
        /* blocks that fit are identical; the others are counted in the report */
        uint64_t changed = 0;
        for (uint64_t k = 0; k < R * C; k++) changed += memcmp(&a[k], &b[k], 4) != 0;
        assert_int_equal(changed, rep.elements_changed);
        if (rep.blocks_inexact == 0) assert_memory_equal(a, b, R * C * sizeof(float));
        free(a), free(b);
        qbuf_free(&dst);
        n++;
    }
    printf("  MXFP4 -> NVFP4: %zu matrices, %llu 1x16 blocks, %llu outside the E4M3 scale window\n", n,
           (unsigned long long)blocks, (unsigned long long)inexact);
    assert_int_equal(inexact, 0);
}

/* A block whose exponent is far below the others cannot fit the E4M3 window: it is re-quantized,
 * counted, and its error reported; a tiny block moved by a factor of 2 into the grid still fits. */
static void test_nvfp4_window_outliers(void **state) {
    (void)state;
    enum { R = 2, C = 64 };
    uint8_t codes[R * C / 2], sc[R * C / 32];
    for (int i = 0; i < R * C / 2; i++) codes[i] = (uint8_t)(0x71 + (i % 5)); /* mixed magnitudes */
    for (int i = 0; i < R * C / 32; i++) sc[i] = 127;
    sc[1] = 127 - 40; /* row 0, cols 32..63: 2^-40, far outside an 18-exponent window */
    sc[3] = 127 - 19; /* row 1, cols 32..63: 2^-19; fits only with codes moved */
    for (int i = 48; i < 64; i++) codes[i] = 0x66; /* row 1 cols 32..63: all code 6 (= 4) → ÷8 fits */
    dsq_qtensor src = {DSQ_ENC_MXFP4, R, C, 0, codes, sc, NULL, 0};
    dsq_qtensor_buf dst;
    qbuf_alloc(&dst, DSQ_ENC_NVFP4, R, C, 0);
    dsq_reencode_report rep;
    assert_int_equal(dsq_codec_reencode(&src, &dst, NULL, &rep, NULL), DSQ_OK);
    assert_int_equal(rep.blocks, 8);
    assert_int_equal(rep.blocks_inexact, 2); /* the two 16-blocks of row 0's 2^-40 group */
    float a[R * C], b[R * C];
    dsq_qtensor dv = dsq_qtensor_view(&dst);
    decode_all(&src, a);
    decode_all(&dv, b);
    assert_memory_equal(a + C, b + C, C * sizeof(float)); /* row 1 exact, including the shifted block */
    assert_memory_equal(a, b, 32 * sizeof(float));
    double mx = 0;
    for (int k = 32; k < 64; k++) mx = dsq_test_worse(mx, fabs((double)a[k] - b[k]));
    assert_true(mx == rep.max_abs_change);
    assert_true(mx <= 6 * 0x1p-40);
    qbuf_free(&dst);
}

static void test_fp8_projections(void **state) {
    (void)state;
    size_t n = 0;
    for (size_t i = 0; i < dsq_st_count(model); i++) {
        const dsq_st_tensor *w = dsq_st_at(model, i);
        if (w->dtype != DSQ_DTYPE_F8_E4M3) continue;
        char sname[600];
        snprintf(sname, sizeof sname, "%.*s.scale", (int)(strlen(w->name) - 7), w->name);
        const dsq_st_tensor *s = dsq_st_find(model, sname);
        assert_non_null(s);
        uint64_t R = w->shape[0], C = w->shape[1];
        dsq_qtensor src = {DSQ_ENC_FP8_B128, R, C, 0, w->data, s->data, NULL, 0};
        dsq_qtensor_buf f32s, back, copy;
        qbuf_alloc(&f32s, DSQ_ENC_FP8_B128_F32, R, C, 0);
        qbuf_alloc(&back, DSQ_ENC_FP8_B128, R, C, 0);
        qbuf_alloc(&copy, DSQ_ENC_FP8_B128, R, C, 0);
        dsq_reencode_report rep;
        assert_int_equal(dsq_codec_reencode(&src, &copy, NULL, &rep, NULL), DSQ_OK);
        assert_true(rep.byte_copy);
        assert_int_equal(dsq_codec_reencode(&src, &f32s, NULL, &rep, NULL), DSQ_OK);
        assert_int_equal(rep.blocks_inexact, 0);
        dsq_qtensor fv = dsq_qtensor_view(&f32s);
        assert_int_equal(dsq_codec_reencode(&fv, &back, NULL, &rep, NULL), DSQ_OK);
        assert_int_equal(rep.blocks_inexact, 0);
        assert_memory_equal(back.data, w->data, R * C);
        assert_memory_equal(back.scales, s->data, s->n_bytes);
        assert_memory_equal(copy.data, w->data, R * C);
        qbuf_free(&f32s), qbuf_free(&back), qbuf_free(&copy);
        n++;
    }
    printf("  %zu FP8 projections: byte copy and UE8M0 <-> F32 scales exact\n", n);
    assert_true(n > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_experts_fp4_to_fp8),
        cmocka_unit_test(test_experts_mxfp4_to_nvfp4),
        cmocka_unit_test(test_nvfp4_window_outliers),
        cmocka_unit_test(test_fp8_projections),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
