/* K-quant encodings through the codec API: names and layouts, encode → decode round trips, the
 * scalar and AVX2 dot/GEMM twins, importance actually steering the encoder, hostile inputs
 * (non-finite values, NaN super-scales, bad shapes and importance).  Agreement with ggml itself is
 * tests/test_kquant_ggml.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "codec_internal.h"
#include "codec_util.h"
#include "dsq_kquant.h"

static const dsq_encoding kencs[] = {DSQ_ENC_Q2_K, DSQ_ENC_Q3_K, DSQ_ENC_Q4_K,
                                     DSQ_ENC_Q5_K, DSQ_ENC_Q6_K, DSQ_ENC_IQ4_XS};
static const char *const knames[] = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"};
static const int kbytes[] = {84, 110, 144, 176, 210, 136};
static const int kggml[] = {10, 11, 12, 13, 14, 23};
enum { NK = 6 };

static void test_names_layouts(void **state) {
    (void)state;
    for (int i = 0; i < NK; i++) {
        dsq_encoding e;
        int g = -1;
        assert_int_equal(dsq_codec_parse(knames[i], &e, &g, NULL), DSQ_OK);
        assert_int_equal(e, kencs[i]);
        assert_int_equal(g, 0);
        char buf[32];
        assert_string_equal(dsq_codec_name(kencs[i], 0, buf, sizeof buf), knames[i]);
        dsq_codec_layout L;
        assert_int_equal(dsq_codec_layout_of(kencs[i], 3, 512, 0, &L, NULL), DSQ_OK);
        assert_int_equal(L.row_bytes, 2 * kbytes[i]);
        assert_int_equal(L.data_bytes, 3 * 2 * kbytes[i]);
        assert_int_equal(L.scale_bytes, 0);
        assert_int_equal(L.min_bytes, 0);
        assert_int_equal(dsq_kquant_block_bytes(kencs[i]), kbytes[i]);
        assert_int_equal(dsq_kquant_ggml_type(kencs[i]), kggml[i]);
        assert_int_equal(dsq_codec_layout_of(kencs[i], 3, 384, 0, &L, NULL), DSQ_ERR_SHAPE);
        assert_int_equal(dsq_codec_layout_of(kencs[i], 3, 512, 32, &L, NULL), DSQ_ERR_ARG);
    }
    dsq_encoding e;
    int g;
    assert_int_equal(dsq_codec_parse("q4_k-g32", &e, &g, NULL), DSQ_ERR_ARG);
    assert_int_equal(dsq_codec_parse("Q4_K", &e, &g, NULL), DSQ_ERR_ARG);
    assert_int_equal(dsq_kquant_block_bytes(DSQ_ENC_INT4_G), 0);
}

enum { ROWS = 8, COLS = 768 };

/* dsq_codec_encode writes the bytes dsq_kquant_encode writes (row slabs included), and decode gives
 * dsq_kquant_decode_block's values, for both ISAs. */
static void test_codec_round_trip(void **state) {
    (void)state;
    rng r = {3};
    float x[ROWS * COLS], y[ROWS * COLS], ref[DSQ_KQ_BLOCK];
    fill_gauss(&r, x, ROWS * COLS, 0.05f);
    for (int i = 0; i < NK; i++) {
        dsq_qtensor_buf b;
        assert_int_equal(qbuf_alloc(&b, kencs[i], ROWS, COLS, 0), 0);
        assert_int_equal(dsq_codec_encode(&b, x, 0, 3, NULL, NULL), DSQ_OK);
        assert_int_equal(dsq_codec_encode(&b, x + 3 * COLS, 3, ROWS - 3, NULL, NULL), DSQ_OK);
        size_t n = (size_t)ROWS * COLS / DSQ_KQ_BLOCK * (size_t)kbytes[i];
        uint8_t *direct = malloc(n);
        assert_int_equal(dsq_kquant_encode(kencs[i], x, ROWS, COLS, NULL, false, direct, NULL), DSQ_OK);
        assert_memory_equal(direct, b.data, n);
        dsq_qtensor t = dsq_qtensor_view(&b);
        for (int isa = DSQ_ISA_SCALAR; isa <= DSQ_ISA_AVX2; isa++) {
            dsq_codec_options o = {.isa = (dsq_isa)isa};
            assert_int_equal(dsq_codec_decode(&t, 0, ROWS, y, &o, NULL), DSQ_OK);
            for (int k = 0; k < ROWS * COLS / DSQ_KQ_BLOCK; k++) {
                dsq_kquant_decode_block(kencs[i], direct + (size_t)k * (size_t)kbytes[i], ref);
                assert_memory_equal(ref, y + k * DSQ_KQ_BLOCK, sizeof ref);
            }
            /* a span that starts and ends inside super-blocks */
            float part[300];
            assert_int_equal(dsq_codec_decode(&t, 5, 1, y, &o, NULL), DSQ_OK);
            dsq__qv v;
            dsq__qv_init(&v, &t);
            dsq__kq_decode_span(&v, 5, 100, 300, part);
            assert_memory_equal(part, y + 100, sizeof part);
        }
        /* decoded values are close: relative RMS below the bound of a 2-bit code */
        assert_int_equal(dsq_codec_decode(&t, 0, ROWS, y, NULL, NULL), DSQ_OK);
        dsq_codec_errstats es;
        memset(&es, 0, sizeof es);
        dsq_codec_errstats_add(&es, x, y, ROWS * COLS);
        assert_true(dsq_codec_errstats_rel_rms(&es) < 0.35);
        free(direct);
        qbuf_free(&b);
    }
}

/* The AVX2 block decoders give the scalar decoders' floats on blocks of random bytes. */
static void test_avx2_decode(void **state) {
    (void)state;
    if (dsq_codec_best_isa() != DSQ_ISA_AVX2) skip();
    rng r = {21};
    uint8_t blk[210];
    float a[DSQ_KQ_BLOCK], b[DSQ_KQ_BLOCK];
    for (int i = 0; i < NK; i++)
        for (int n = 0; n < 2000; n++) {
            for (int k = 0; k < kbytes[i]; k++) blk[k] = (uint8_t)rng_u64(&r);
            dsq_kquant_decode_block(kencs[i], blk, a);
            dsq__kq_decode_block_avx2(kencs[i], blk, b);
            assert_memory_equal(a, b, sizeof a); /* NaN/Inf super-scales included: same operations */
        }
}

/* The encoder's AVX2 and AVX-512 lane passes (errors, code sums, IQ4_XS codebook lookup, the codes) give
 * the same bytes as the scalar ones: gaussian, outliers, tiny and huge values (errors overflowing f32
 * included), all zeros, constant rows, a dynamic range of 2^90 inside one block, sparse blocks, NaN/±Inf
 * (allow_nonfinite), exact levels (ties), FP4-shaped blocks (a power of two per 32 columns times e2m1
 * values, ±0 included: the encoder's (value, summed weight) pairs) at ordinary, huge and tiny scales,
 * and one with a NaN; with importance (random, 0 on whole sub-blocks, near FLT_MAX,
 * subnormal) and without. */
enum { TWIN_KINDS = 14, TWIN_IMPS = 4 };
static void twin_fill(rng *r, int kind, float *x) {
    float sigma = kind == 2 ? 1e-6f : kind == 3 ? 2e4f : 0.05f;
    fill_gauss(r, x, ROWS * COLS, sigma);
    for (int i = 0; i < ROWS * COLS; i++) {
        if (kind == 1 && i % 61 == 0) x[i] *= 30.0f;
        if (kind == 4) x[i] = 0.0f;
        if (kind == 5) x[i] = (i / COLS) % 2 ? -0.375f : 1.5e-3f; /* constant rows, both signs */
        if (kind == 6) x[i] *= (i % 3 == 0) ? 0x1p45f : (i % 3 == 1) ? 0x1p-45f : 1.0f;
        if (kind == 7 && i % 16 != 0) x[i] = 0.0f;
        if (kind == 8 && i % 97 == 0) x[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? INFINITY : -INFINITY;
        if (kind == 9) x[i] = (float)(i % 7) * 0.125f - 0.375f; /* a few exact levels: ties everywhere */
        if (kind == 10) x[i] *= 2e38f;                           /* squared errors overflow f32 */
        if (kind >= 11) { /* FP4-shaped: scale 2^e per 32 columns (2^±120 for kind 12), e2m1 value, sign */
            static const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
            int e = kind == 12 ? ((i / 32) % 2 ? 120 : -120) : -8 + (int)((i / 32) % 5);
            x[i] = ((i * 7 + i / 5) % 3 ? 1.0f : -1.0f) * ldexpf(e2m1[(i * 13 + i / 32) % 8], e);
            if (kind == 13 && i % 301 == 0) x[i] = NAN;
        }
    }
}
static void test_encode_isa_twins(void **state) {
    (void)state;
    if (dsq_codec_best_isa() != DSQ_ISA_AVX2) skip();
    bool avx512 = __builtin_cpu_supports("avx512f");
    rng r = {31};
    float x[ROWS * COLS], imps[TWIN_IMPS][COLS];
    for (int c = 0; c < COLS; c++) {
        imps[0][c] = (float)exp(2.0 * rng_gauss(&r));
        imps[1][c] = (c / 16) % 3 == 1 ? 0.0f : imps[0][c]; /* whole sub-blocks without weight */
        imps[2][c] = 3e38f * (float)(0.5 + 0.5 * rng_unit(&r));
        imps[3][c] = 0x1p-140f * (float)(1 + c % 5); /* subnormal */
    }
    for (int kind = 0; kind < TWIN_KINDS; kind++) {
        twin_fill(&r, kind, x);
        for (int i = 0; i < NK; i++)
            for (int wi = 0; wi <= TWIN_IMPS; wi++) {
                const float *imp = wi ? imps[wi - 1] : NULL;
                size_t n = (size_t)ROWS * COLS / DSQ_KQ_BLOCK * (size_t)kbytes[i];
                uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n);
                assert_int_equal(dsq__kquant_encode_isa(kencs[i], x, ROWS, COLS, imp, true, a, DSQ_ISA_SCALAR, NULL),
                                 DSQ_OK);
                assert_int_equal(dsq__kquant_encode_path(kencs[i], x, ROWS, COLS, imp, true, b, 1, NULL), DSQ_OK);
                if (memcmp(a, b, n) != 0)
                    fail_msg("%s kind %d importance %d: scalar and AVX2 bytes differ", knames[i], kind, wi);
                if (avx512) {
                    assert_int_equal(dsq__kquant_encode_path(kencs[i], x, ROWS, COLS, imp, true, c, 2, NULL), DSQ_OK);
                    if (memcmp(a, c, n) != 0)
                        fail_msg("%s kind %d importance %d: scalar and AVX-512 bytes differ", knames[i], kind, wi);
                }
                /* the default entry point takes the best path: the same bytes again */
                assert_int_equal(dsq_kquant_encode(kencs[i], x, ROWS, COLS, imp, true, c, NULL), DSQ_OK);
                assert_memory_equal(a, c, n);
                free(a), free(b), free(c);
            }
    }
}

/* One-token dot and batched GEMM: scalar and AVX2 twins give the same bits; both match an f64 sum. */
static void test_kernel_twins(void **state) {
    (void)state;
    rng r = {5};
    float w[ROWS * COLS], x[3 * COLS], dec[ROWS * COLS];
    fill_gauss(&r, w, ROWS * COLS, 0.05f);
    fill_gauss(&r, x, 3 * COLS, 1.0f);
    for (int i = 0; i < NK; i++) {
        dsq_qtensor_buf b;
        assert_int_equal(qbuf_alloc(&b, kencs[i], ROWS, COLS, 0), 0);
        assert_int_equal(dsq_codec_encode(&b, w, 0, ROWS, NULL, NULL), DSQ_OK);
        dsq_qtensor t = dsq_qtensor_view(&b);
        assert_int_equal(dsq_codec_decode(&t, 0, ROWS, dec, NULL, NULL), DSQ_OK);
        float ys[ROWS], ya[ROWS], gs[3 * ROWS], ga[3 * ROWS];
        dsq_codec_dot_rows_isa(&t, x, 0, ROWS, ys, DSQ_ISA_SCALAR);
        dsq_codec_dot_rows_isa(&t, x, 0, ROWS, ya, DSQ_ISA_AVX2);
        assert_memory_equal(ys, ya, sizeof ys);
        dsq_codec_gemm_rows_isa(&t, x, 3, COLS, 0, ROWS, gs, ROWS, DSQ_ISA_SCALAR);
        dsq_codec_gemm_rows_isa(&t, x, 3, COLS, 0, ROWS, ga, ROWS, DSQ_ISA_AVX2);
        for (int rr = 0; rr < ROWS; rr++) {
            double ref = 0, sabs = 0;
            for (int c = 0; c < COLS; c++)
                ref += (double)dec[rr * COLS + c] * x[c], sabs += fabs(dec[rr * COLS + c] * x[c]);
            /* f32 accumulation over 768 terms: a few ulps of Σ|w·x| */
            assert_true(fabs(ys[rr] - ref) <= 1e-5 * sabs);
            for (int j = 0; j < 3; j++) {
                double rj = 0;
                for (int c = 0; c < COLS; c++) rj += (double)dec[rr * COLS + c] * x[j * COLS + c];
                assert_true(fabs(gs[j * ROWS + rr] - rj) <= 1e-5 * sabs * 4 + 1e-6);
                assert_true(fabs(ga[j * ROWS + rr] - rj) <= 1e-5 * sabs * 4 + 1e-6);
            }
        }
        qbuf_free(&b);
    }
}

/* Importance steers the encoder: on the importance-weighted error and on the encoder's objective,
 * encoding with the importance beats encoding without it; on plain squared error, the unweighted
 * encoding wins. */
static void test_importance_used(void **state) {
    (void)state;
    rng r = {9};
    float x[ROWS * COLS], imp[COLS];
    fill_gauss(&r, x, ROWS * COLS, 0.05f);
    for (int c = 0; c < COLS; c++) imp[c] = (float)exp(2.0 * rng_gauss(&r));
    for (int i = 0; i < NK; i++) {
        size_t n = (size_t)ROWS * COLS / DSQ_KQ_BLOCK * (size_t)kbytes[i];
        uint8_t *a = malloc(n), *b = malloc(n);
        assert_int_equal(dsq_kquant_encode(kencs[i], x, ROWS, COLS, imp, false, a, NULL), DSQ_OK);
        assert_int_equal(dsq_kquant_encode(kencs[i], x, ROWS, COLS, NULL, false, b, NULL), DSQ_OK);
        double wa = dsq_kquant_weighted_sse(kencs[i], x, ROWS, COLS, imp, a);
        double wb = dsq_kquant_weighted_sse(kencs[i], x, ROWS, COLS, imp, b);
        double pa = dsq_kquant_weighted_sse(kencs[i], x, ROWS, COLS, NULL, a);
        double pb = dsq_kquant_weighted_sse(kencs[i], x, ROWS, COLS, NULL, b);
        assert_true(wa < wb);
        assert_true(pb < pa);
        /* and on the encoder's own objective (importance·sqrt(σ² + x²)) */
        assert_true(dsq_kquant_objective(kencs[i], x, ROWS, COLS, imp, a) <
                    dsq_kquant_objective(kencs[i], x, ROWS, COLS, imp, b));
        assert_true(dsq_kquant_objective(kencs[i], x, ROWS, COLS, NULL, a) == pa);
        free(a), free(b);
    }
}

/* Zeros store zeros; a two-valued block comes back within F16 rounding of its scales (2^-10
 * relative: d and dmin are F16, the integer scales exact). */
static void test_special_blocks(void **state) {
    (void)state;
    float x[DSQ_KQ_BLOCK], y[DSQ_KQ_BLOCK];
    uint8_t blk[210];
    for (int i = 0; i < NK; i++) {
        memset(x, 0, sizeof x);
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, DSQ_KQ_BLOCK, NULL, false, blk, NULL), DSQ_OK);
        dsq_kquant_decode_block(kencs[i], blk, y);
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) assert_true(y[e] == 0.0f);
        if (kencs[i] == DSQ_ENC_IQ4_XS) continue; /* its codebook has no two values in the ratio -2 */
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) x[e] = e % 2 ? -0.5f : 0.25f; /* two values: exact */
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, DSQ_KQ_BLOCK, NULL, false, blk, NULL), DSQ_OK);
        dsq_kquant_decode_block(kencs[i], blk, y);
        for (int e = 0; e < DSQ_KQ_BLOCK; e++)
            if (!(fabsf(y[e] - x[e]) <= 0x1p-10f * 0.75f))
                fail_msg("%s: element %d: %.9g for %.9g", knames[i], e, (double)y[e], (double)x[e]);
    }
}

static void test_hostile(void **state) {
    (void)state;
    float x[2 * DSQ_KQ_BLOCK], y[2 * DSQ_KQ_BLOCK], imp[2 * DSQ_KQ_BLOCK];
    uint8_t blk[2 * 210];
    rng r = {1};
    for (int i = 0; i < NK; i++) {
        fill_gauss(&r, x, 2 * DSQ_KQ_BLOCK, 1.0f);
        x[300] = NAN;
        x[301] = INFINITY;
        dsq_err err = DSQ_ERR_INIT;
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, 2 * DSQ_KQ_BLOCK, NULL, false, blk, &err),
                         DSQ_ERR_NONFINITE);
        assert_non_null(strstr(err.msg, "[0, 300]"));
        dsq_err_clear(&err);
        /* two rows of one block each: the element is named by row and column */
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 2, DSQ_KQ_BLOCK, NULL, false, blk, &err), DSQ_ERR_NONFINITE);
        assert_non_null(strstr(err.msg, "[1, 44] is NaN"));
        dsq_err_clear(&err);
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, 2 * DSQ_KQ_BLOCK, NULL, true, blk, NULL), DSQ_OK);
        dsq_kquant_decode_block(kencs[i], blk + kbytes[i], y);
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) assert_true(isfinite(y[e]));
        assert_true(fabsf(y[300 - 256]) < 1.0f); /* NaN: near 0 */
        assert_true(y[301 - 256] > 1.0f);        /* +Inf: the block's large end */
        /* bad shapes and importance */
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, 100, NULL, false, blk, NULL), DSQ_ERR_SHAPE);
        for (int c = 0; c < 2 * DSQ_KQ_BLOCK; c++) imp[c] = 1.0f;
        imp[7] = -1.0f;
        fill_gauss(&r, x, 2 * DSQ_KQ_BLOCK, 1.0f);
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, 2 * DSQ_KQ_BLOCK, imp, false, blk, NULL), DSQ_ERR_ARG);
        imp[7] = NAN;
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, 2 * DSQ_KQ_BLOCK, imp, false, blk, NULL), DSQ_ERR_ARG);
        /* a zero-importance super-block still encodes sensibly */
        for (int c = 0; c < 2 * DSQ_KQ_BLOCK; c++) imp[c] = c < DSQ_KQ_BLOCK ? 0.0f : 1.0f;
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, 2 * DSQ_KQ_BLOCK, imp, false, blk, NULL), DSQ_OK);
        dsq_kquant_decode_block(kencs[i], blk, y);
        dsq_codec_errstats es;
        memset(&es, 0, sizeof es);
        dsq_codec_errstats_add(&es, x, y, DSQ_KQ_BLOCK);
        assert_true(dsq_codec_errstats_rel_rms(&es) < 0.4);
        assert_int_equal(dsq_kquant_encode(DSQ_ENC_INT4_G, x, 1, 256, NULL, false, blk, NULL), DSQ_ERR_ARG);
        /* a NaN super-scale in a stored tensor is found by the finite scan */
        assert_int_equal(dsq_kquant_encode(kencs[i], x, 1, 2 * DSQ_KQ_BLOCK, NULL, false, blk, NULL), DSQ_OK);
        dsq_qtensor t = {kencs[i], 1, 2 * DSQ_KQ_BLOCK, 0, blk, NULL, NULL, 0};
        assert_int_equal(dsq_codec_check_finite(&t, "w", NULL), DSQ_OK);
        int off = kencs[i] == DSQ_ENC_Q2_K ? 82 : kencs[i] == DSQ_ENC_Q3_K ? 108 : kencs[i] == DSQ_ENC_Q6_K ? 208 : 0;
        /* IQ4_XS: d at 0 */
        blk[kbytes[i] + off] = 0x00, blk[kbytes[i] + off + 1] = 0x7e; /* F16 NaN */
        err = (dsq_err)DSQ_ERR_INIT;
        assert_int_equal(dsq_codec_check_finite(&t, "w", &err), DSQ_ERR_NONFINITE);
        assert_non_null(strstr(err.msg, "super-block 1"));
        dsq_err_clear(&err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_layouts),  cmocka_unit_test(test_codec_round_trip),
        cmocka_unit_test(test_kernel_twins),   cmocka_unit_test(test_importance_used),
        cmocka_unit_test(test_special_blocks), cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_avx2_decode),    cmocka_unit_test(test_encode_isa_twins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
