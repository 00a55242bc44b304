/* Codec properties on random data, for every float encoding: layouts, names, round-trip error
 * (nearest-code optimality given the stored scales, and relative RMS bounds), edge cases (zeros,
 * denormals, NaN/Inf, saturation), the integer scale search, slab-wise encoding, re-encoding paths
 * and the error statistics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "codec_util.h"
#include "dsq_test.h"

typedef struct enc_case {
    const char *name;
    double max_rel_rms; /* Gaussian σ=1, 96 x 544; measured values are in the comments */
} enc_case;

/* Every float encoding with a regression bound on its relative RMS error. */
static const enc_case cases[] = {
    {"f32", 0},                  /* exact */
    {"f16", 3e-4},               /* measured 2.1e-4 */
    {"bf16", 2.5e-3},            /* 1.7e-3 */
    {"fp8-128x128", 0.032},      /* 0.0265 */
    {"fp8-128x128-f32", 0.032},  /* 0.0265 */
    {"fp8-1x128", 0.032},        /* 0.0265 */
    {"fp8-row", 0.032},          /* 0.0263 */
    {"mxfp4", 0.135},            /* 0.115 */
    {"nvfp4", 0.105},            /* 0.091 */
    {"int8-row", 0.009},         /* 0.0074 */
    {"int8-g128", 0.0075},       /* 0.0062 */
    {"int8-g32", 0.006},         /* 0.0051 */
    {"int4-g32", 0.100},         /* 0.085 */
    {"int4-g64", 0.110},         /* 0.093 */
    {"int4-g128", 0.115},        /* 0.099 */
    {"int4-g32-asym", 0.085},    /* 0.072 */
    {"int4-g64-asym", 0.097},    /* 0.083 */
    {"int4-g128-asym", 0.107},   /* 0.091 */
    {"int2-g32-asym", 0.350},    /* 0.303 */
    {"int8-g16", 0.0052},        /* 0.0043 */
    {"int4-g256", 0.120},        /* 0.103 */
    {"fp8-1x128-f32", 0.032},    /* 0.0258 */
    {"fp8-row-e8m0", 0.032},     /* 0.0265 */
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

static void parse_ok(const char *name, dsq_encoding *enc, int *group) {
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_codec_parse(name, enc, group, &e), DSQ_OK);
    dsq_err_clear(&e);
}

/* ---- layouts and names ----------------------------------------------------------------------------- */

static void test_layout(void **state) {
    (void)state;
    dsq_codec_layout L;
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_FP8_B128, 200, 300, 0, &L, NULL), DSQ_OK);
    assert_int_equal(L.data_bytes, 60000);
    assert_int_equal(L.scale_rows, 2);
    assert_int_equal(L.scale_cols, 3);
    assert_int_equal(L.scale_bytes, 6);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_FP8_B128_F32, 200, 300, 128, &L, NULL), DSQ_OK);
    assert_int_equal(L.scale_bytes, 24);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_MXFP4, 128, 256, 0, &L, NULL), DSQ_OK);
    assert_int_equal(L.row_bytes, 128);
    assert_int_equal(L.scale_rows, 128);
    assert_int_equal(L.scale_cols, 8);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_NVFP4, 3, 40, 0, &L, NULL), DSQ_OK);
    assert_int_equal(L.row_bytes, 20);
    assert_int_equal(L.scale_cols, 3);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_INT4_G_ASYM, 5, 33, 32, &L, NULL), DSQ_OK);
    assert_int_equal(L.row_bytes, 17);
    assert_int_equal(L.scale_cols, 2);
    assert_int_equal(L.scale_bytes, 20);
    assert_int_equal(L.min_bytes, 20);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_INT2_G_ASYM, 2, 5, 64, &L, NULL), DSQ_OK);
    assert_int_equal(L.row_bytes, 2);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_INT8_ROW, 7, 9, 0, &L, NULL), DSQ_OK);
    assert_int_equal(L.scale_cols, 1);
    assert_int_equal(L.scale_bytes, 14);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_FP8_R128_F32, 200, 300, 128, &L, NULL), DSQ_OK);
    assert_int_equal(L.data_bytes, 60000);
    assert_int_equal(L.block_rows, 1);
    assert_int_equal(L.block_cols, 128);
    assert_int_equal(L.scale_rows, 200);
    assert_int_equal(L.scale_cols, 3);
    assert_int_equal(L.scale_size, 4);
    assert_int_equal(L.scale_bytes, 2400);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_FP8_ROW_E8M0, 200, 300, 0, &L, NULL), DSQ_OK);
    assert_int_equal(L.data_bytes, 60000);
    assert_int_equal(L.block_cols, 300);
    assert_int_equal(L.scale_rows, 200);
    assert_int_equal(L.scale_cols, 1);
    assert_int_equal(L.scale_size, 1);
    assert_int_equal(L.scale_bytes, 200);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_FP8_ROW_E8M0, 4, 64, 32, &L, NULL), DSQ_ERR_ARG);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_FP8_R128_F32, 4, 64, 64, &L, NULL), DSQ_ERR_ARG);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_I64, 7, 6, 0, &L, NULL), DSQ_OK);
    assert_int_equal(L.data_bytes, 336);
    assert_int_equal(L.scale_bytes, 0);
    /* failures */
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_F32, 1ull << 62, 8, 0, &L, &e), DSQ_ERR_OVERFLOW);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_F32, 4, UINT64_MAX / 2, 0, &L, &e), DSQ_ERR_OVERFLOW);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_INT8_G, UINT64_MAX, 1ull << 40, 16, &L, &e), DSQ_ERR_OVERFLOW);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_INT4_G, 4, 64, 48, &L, &e), DSQ_ERR_ARG);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_INT4_G, 4, 64, 0, &L, &e), DSQ_ERR_ARG);
    assert_int_equal(dsq_codec_layout_of(DSQ_ENC_MXFP4, 4, 64, 64, &L, &e), DSQ_ERR_ARG);
    assert_int_equal(dsq_codec_layout_of((dsq_encoding)99, 4, 64, 0, &L, &e), DSQ_ERR_DTYPE);
    assert_int_equal(dsq_codec_layout_of((dsq_encoding)0, 4, 64, 0, &L, &e), DSQ_ERR_DTYPE);
    dsq_err_clear(&e);
}

static void test_names(void **state) {
    (void)state;
    const char *names[] = {"f32", "f16", "bf16", "fp8-128x128", "fp8-128x128-f32", "fp8-1x128", "fp8-row", "fp8-1x128-f32", "fp8-row-e8m0", "mxfp4", "nvfp4", "int8-row", "int8-g128", "int8-g16",
                           "int4-g32", "int4-g64", "int4-g128", "int4-g256", "int4-g32-asym", "int4-g64-asym",
                           "int2-g32-asym", "int2-g128-asym", "i64", "i32"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        dsq_encoding enc;
        int g;
        parse_ok(names[i], &enc, &g);
        char buf[32];
        assert_string_equal(dsq_codec_name(enc, g, buf, sizeof buf), names[i]);
        assert_true(dsq_codec_known(enc));
    }
    dsq_encoding enc;
    int g;
    parse_ok("int4-g64-asym", &enc, &g);
    assert_int_equal(enc, DSQ_ENC_INT4_G_ASYM);
    assert_int_equal(g, 64);
    parse_ok("fp8-128x128", &enc, &g);
    assert_int_equal(enc, DSQ_ENC_FP8_B128);
    parse_ok("fp8-1x128-f32", &enc, &g);
    assert_int_equal(enc, DSQ_ENC_FP8_R128_F32);
    assert_int_equal(g, 0);
    parse_ok("fp8-row-e8m0", &enc, &g);
    assert_int_equal(enc, DSQ_ENC_FP8_ROW_E8M0);
    const char *bad[] = {"", "fp8", "int4", "int4-g", "int4-g33", "int4-g32-sym", "int2-g32", "int4-g-32",
                         "int4-g512", "mxfp4-g32", "F32", "int8-g128x", "nvfp4 ",
                         "fp8-row-f32", "fp8-1x128-e8m0", "fp8-row-ue8m0", "fp8-1x128-f32 ", "fp8-row-e8m0-g32"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dsq_err e = DSQ_ERR_INIT;
        assert_int_equal(dsq_codec_parse(bad[i], &enc, &g, &e), DSQ_ERR_ARG);
        dsq_err_clear(&e);
    }
    char buf[8];
    assert_string_equal(dsq_codec_name((dsq_encoding)77, 0, buf, sizeof buf), "?");
}

/* ---- round trips ------------------------------------------------------------------------------------ */

/* Stored scale (and min) of element (r, c), from the buffers. */
static float stored_scale(const dsq_qtensor_buf *b, const dsq_codec_layout *L, uint64_t r, uint64_t c, float *min) {
    uint64_t i = (r / L->block_rows) * L->scale_cols + c / L->block_cols;
    *min = 0;
    if (L->min_size) {
        uint16_t h;
        memcpy(&h, (uint8_t *)b->mins + 2 * i, 2);
        *min = dsq_f16_to_f32(h);
    }
    switch (b->enc) {
    case DSQ_ENC_FP8_B128_F32:
    case DSQ_ENC_FP8_R128_F32:
    case DSQ_ENC_FP8_ROW: {
        float f;
        memcpy(&f, (uint8_t *)b->scales + 4 * i, 4);
        return f;
    }
    case DSQ_ENC_NVFP4: return dsq_e4m3_to_f32(((uint8_t *)b->scales)[i]) * b->tensor_scale;
    case DSQ_ENC_INT8_ROW:
    case DSQ_ENC_INT8_G:
    case DSQ_ENC_INT4_G:
    case DSQ_ENC_INT4_G_ASYM:
    case DSQ_ENC_INT2_G_ASYM: {
        uint16_t h;
        memcpy(&h, (uint8_t *)b->scales + 2 * i, 2);
        return dsq_f16_to_f32(h);
    }
    default: return dsq_e8m0_to_f32(((uint8_t *)b->scales)[i]);
    }
}

/* The values an element of this encoding can take with scale s and min m. */
static int value_grid(dsq_encoding enc, float s, float m, float *g) {
    int n = 0;
    switch (enc) {
    case DSQ_ENC_MXFP4:
    case DSQ_ENC_NVFP4:
        for (int q = 0; q < 16; q++) g[n++] = dsq_e2m1_to_f32((uint8_t)q) * s;
        break;
    case DSQ_ENC_INT8_ROW:
    case DSQ_ENC_INT8_G:
        for (int q = -127; q <= 127; q++) g[n++] = (float)q * s;
        break;
    case DSQ_ENC_INT4_G:
        for (int q = -8; q <= 7; q++) g[n++] = (float)q * s;
        break;
    case DSQ_ENC_INT4_G_ASYM:
        for (int q = 0; q < 16; q++) g[n++] = (float)q * s + m;
        break;
    case DSQ_ENC_INT2_G_ASYM:
        for (int q = 0; q < 4; q++) g[n++] = (float)q * s + m;
        break;
    default:
        for (int q = 0; q < 256; q++)
            if (!dsq_e4m3_is_nan((uint8_t)q)) g[n++] = dsq_e4m3_to_f32((uint8_t)q) * s;
    }
    return n;
}

static void roundtrip(const enc_case *ec, uint64_t rows, uint64_t cols, const float *x, double *rel_rms) {
    dsq_encoding enc;
    int group;
    parse_ok(ec->name, &enc, &group);
    dsq_qtensor_buf b;
    assert_int_equal(qbuf_alloc(&b, enc, rows, cols, group), 0);
    dsq_err e = DSQ_ERR_INIT;
    dsq_codec_options o = {.name = ec->name};
    dsq_status s = dsq_codec_encode(&b, x, 0, rows, &o, &e);
    if (s) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(s, DSQ_OK);
    float *y = malloc(rows * cols * sizeof(float));
    dsq_qtensor t = dsq_qtensor_view(&b);
    assert_int_equal(dsq_codec_decode(&t, 0, rows, y, &o, &e), DSQ_OK);
    dsq_codec_layout L;
    assert_int_equal(dsq_codec_layout_of(enc, rows, cols, group, &L, NULL), DSQ_OK);
    float grid[256];
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c++) {
            float xv = x[r * cols + c], yv = y[r * cols + c];
            if (enc == DSQ_ENC_F32) assert_true(memcmp(&xv, &yv, 4) == 0);
            if (enc == DSQ_ENC_BF16) assert_true(yv == dsq_bf16_round(xv));
            if (enc == DSQ_ENC_F16) assert_true(yv == dsq_f16_to_f32(dsq_f16_from_f32(xv)));
            if (!L.scale_size) continue;
            /* the stored code is a nearest value given the stored scale (and min) */
            float m, sc = stored_scale(&b, &L, r, c, &m);
            int n = value_grid(enc, sc, m, grid);
            double best = INFINITY;
            for (int k = 0; k < n; k++)
                if (fabs((double)grid[k] - xv) < best) best = fabs((double)grid[k] - xv);
            double got = fabs((double)yv - xv);
            if (!(got <= best * (1 + 1e-6) + 1e-30)) {
                fprintf(stderr, "%s [%llu,%llu] x=%g y=%g best=%g scale=%g\n", ec->name, (unsigned long long)r,
                        (unsigned long long)c, xv, yv, best, sc);
                fail();
            }
        }
    dsq_codec_errstats st = {0};
    dsq_codec_errstats_add(&st, x, y, rows * cols);
    *rel_rms = dsq_codec_errstats_rel_rms(&st);
    free(y);
    qbuf_free(&b);
    dsq_err_clear(&e);
}

static void test_roundtrip_gauss(void **state) {
    (void)state;
    enum { R = 96, C = 544 };
    float *x = malloc(R * C * sizeof(float));
    rng g = {42};
    fill_gauss(&g, x, R * C, 1.0f);
    for (int i = 0; i < N_CASES; i++) {
        double rel;
        roundtrip(&cases[i], R, C, x, &rel);
        printf("  %-16s rel_rms %.4g\n", cases[i].name, rel);
        if (cases[i].max_rel_rms == 0) assert_true(rel == 0);
        else assert_true(rel <= cases[i].max_rel_rms);
    }
    free(x);
}

/* Magnitudes that change from block to block, odd sizes (partial edge blocks for every block shape). */
static void test_roundtrip_odd_shapes(void **state) {
    (void)state;
    const uint64_t shapes[][2] = {{1, 1}, {3, 7}, {130, 301}, {257, 129}, {5, 1000}};
    rng g = {5};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        uint64_t R = shapes[si][0], C = shapes[si][1];
        float *x = malloc(R * C * sizeof(float));
        for (uint64_t r = 0; r < R; r++)
            for (uint64_t c = 0; c < C; c++)
                x[r * C + c] = ldexpf(rng_gauss(&g), (int)((r / 7 + c / 13) % 11) - 5);
        for (int i = 0; i < N_CASES; i++) {
            double rel;
            roundtrip(&cases[i], R, C, x, &rel);
            if (cases[i].max_rel_rms > 0) assert_true(rel <= 2 * cases[i].max_rel_rms + 0.05);
        }
        free(x);
    }
}

/* ---- edge cases -------------------------------------------------------------------------------------- */

static void test_zeros_and_denormals(void **state) {
    (void)state;
    enum { R = 130, C = 70 };
    float *x = calloc(R * C, sizeof(float)), *y = malloc(R * C * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) /* a denormal-only region and a normal region */
            for (int i = 0; i < R * C; i++) x[i] = (i % 3 == 0) ? 1e-40f * (float)(i % 7) : 0.0f;
        for (int i = 0; i < N_CASES; i++) {
            dsq_encoding enc;
            int group;
            parse_ok(cases[i].name, &enc, &group);
            dsq_qtensor_buf b;
            qbuf_alloc(&b, enc, R, C, group);
            memset(b.data, 0x5a, 1); /* encode must overwrite everything it owns */
            dsq_err e = DSQ_ERR_INIT;
            assert_int_equal(dsq_codec_encode(&b, x, 0, R, NULL, &e), DSQ_OK);
            dsq_qtensor t = dsq_qtensor_view(&b);
            assert_int_equal(dsq_codec_decode(&t, 0, R, y, NULL, &e), DSQ_OK);
            for (int k = 0; k < R * C; k++) {
                assert_true(isfinite(y[k]));
                assert_true(fabsf(y[k] - x[k]) <= 1e-39f);
            }
            if (pass == 0) {
                for (int k = 0; k < R * C; k++) assert_true(y[k] == 0.0f);
                dsq_codec_layout L;
                dsq_codec_layout_of(enc, R, C, group, &L, NULL);
                /* integer encodings: an all-zero group has scale 0 (and min 0) */
                if (L.scale_size == 2)
                    for (uint64_t k = 0; k < L.scale_bytes; k++) assert_int_equal(((uint8_t *)b.scales)[k], 0);
                if (enc == DSQ_ENC_FP8_ROW || enc == DSQ_ENC_FP8_B128_F32 || enc == DSQ_ENC_FP8_R128_F32)
                    for (uint64_t k = 0; k < L.scale_bytes; k++) assert_int_equal(((uint8_t *)b.scales)[k], 0);
            }
            qbuf_free(&b);
            dsq_err_clear(&e);
        }
    }
    free(x);
    free(y);
}

static void test_nonfinite_rejected(void **state) {
    (void)state;
    enum { R = 9, C = 40 };
    float x[R * C];
    rng g = {9};
    fill_gauss(&g, x, R * C, 1.0f);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < N_CASES; i++) {
        dsq_encoding enc;
        int group;
        parse_ok(cases[i].name, &enc, &group);
        for (int k = 0; k < 3; k++) {
            float xb[R * C];
            memcpy(xb, x, sizeof x);
            xb[3 * C + 5] = bad[k];
            dsq_qtensor_buf b;
            qbuf_alloc(&b, enc, R, C, group);
            dsq_err e = DSQ_ERR_INIT;
            dsq_codec_options o = {.name = "blk.w"};
            assert_int_equal(dsq_codec_encode(&b, xb, 0, R, &o, &e), DSQ_ERR_NONFINITE);
            assert_non_null(strstr(e.msg, "blk.w"));
            assert_non_null(strstr(e.msg, "[3, 5]"));
            dsq_err_clear(&e);
            /* allowed: encodes, other elements stay close, NaN stays NaN where the format has one */
            o.allow_nonfinite = true;
            assert_int_equal(dsq_codec_encode(&b, xb, 0, R, &o, &e), DSQ_OK);
            float y[R * C];
            dsq_qtensor t = dsq_qtensor_view(&b);
            assert_int_equal(dsq_codec_decode(&t, 0, R, y, &o, &e), DSQ_OK);
            for (int j = 0; j < R * C; j++)
                if (j != 3 * C + 5 && enc != DSQ_ENC_NVFP4 && enc != DSQ_ENC_INT8_ROW && enc != DSQ_ENC_FP8_ROW)
                    assert_true(fabsf(y[j] - x[j]) <= 0.5f * fabsf(x[j]) + 0.7f);
            float yb = y[3 * C + 5];
            if (k == 0 && (enc == DSQ_ENC_F32 || enc == DSQ_ENC_F16 || enc == DSQ_ENC_BF16 || enc == DSQ_ENC_FP8_B128 ||
                           enc == DSQ_ENC_FP8_R128 || enc == DSQ_ENC_FP8_ROW || enc == DSQ_ENC_FP8_R128_F32 ||
                           enc == DSQ_ENC_FP8_ROW_E8M0))
                assert_true(isnan(yb));
            if (k > 0 && enc != DSQ_ENC_F32) { /* ±Inf saturates to a finite value of the right sign */
                assert_true(isfinite(yb));
                assert_true(k == 1 ? yb >= 0 : yb <= 0);
            }
            /* decode without the flag rejects the stored NaN/Inf */
            if (isnan(yb) || isinf(yb)) {
                dsq_codec_options o2 = {.name = "blk.w"};
                assert_int_equal(dsq_codec_decode(&t, 0, R, y, &o2, &e), DSQ_ERR_NONFINITE);
                assert_non_null(strstr(e.msg, "[3, 5]"));
                assert_int_equal(dsq_codec_check_finite(&t, "blk.w", &e), DSQ_ERR_NONFINITE);
                dsq_err_clear(&e);
            }
            qbuf_free(&b);
            dsq_err_clear(&e);
        }
    }
}

static void test_nonfinite_codes_in_source(void **state) {
    (void)state;
    enum { R = 4, C = 64 };
    float x[R * C], y[R * C];
    rng g = {11};
    fill_gauss(&g, x, R * C, 1.0f);
    const char *encs[] = {"fp8-128x128", "fp8-1x128", "fp8-1x128-f32", "fp8-row-e8m0", "mxfp4", "nvfp4", "int4-g32",
                          "f16", "bf16"};
    for (size_t i = 0; i < sizeof encs / sizeof encs[0]; i++) {
        dsq_encoding enc;
        int group;
        parse_ok(encs[i], &enc, &group);
        for (int where = 0; where < 2; where++) { /* 0: a code, 1: a scale */
            dsq_qtensor_buf b;
            qbuf_alloc(&b, enc, R, C, group);
            assert_int_equal(dsq_codec_encode(&b, x, 0, R, NULL, NULL), DSQ_OK);
            if (where == 0) {
                if (enc == DSQ_ENC_F16) memcpy((uint8_t *)b.data + 2 * (2 * C + 3), &(uint16_t){0x7c00}, 2);
                else if (enc == DSQ_ENC_BF16) memcpy((uint8_t *)b.data + 2 * (2 * C + 3), &(uint16_t){0x7fc0}, 2);
                else if (enc == DSQ_ENC_FP8_B128 || enc == DSQ_ENC_FP8_R128 || enc == DSQ_ENC_FP8_R128_F32 ||
                         enc == DSQ_ENC_FP8_ROW_E8M0)
                    ((uint8_t *)b.data)[2 * C + 3] = 0xff;
                else { qbuf_free(&b); continue; } /* no NaN codes in e2m1 / int4 */
            } else {
                if (!b.scales) { qbuf_free(&b); continue; }
                dsq_codec_layout L;
                dsq_codec_layout_of(enc, R, C, group, &L, NULL);
                uint64_t si = enc == DSQ_ENC_FP8_B128 ? 0 : 2 * L.scale_cols; /* row 2's first scale */
                if (enc == DSQ_ENC_INT4_G) memcpy((uint8_t *)b.scales + 2 * si, &(uint16_t){0x7e00}, 2);
                else if (enc == DSQ_ENC_NVFP4) ((uint8_t *)b.scales)[si] = 0x7f;
                else if (enc == DSQ_ENC_FP8_R128_F32) memcpy((uint8_t *)b.scales + 4 * si, &(float){NAN}, 4);
                else ((uint8_t *)b.scales)[si] = 0xff;
            }
            dsq_qtensor t = dsq_qtensor_view(&b);
            dsq_err e = DSQ_ERR_INIT;
            dsq_codec_options o = {.name = "layers.0.w"};
            assert_int_equal(dsq_codec_decode(&t, 0, R, y, &o, &e), DSQ_ERR_NONFINITE);
            assert_non_null(strstr(e.msg, "layers.0.w"));
            if (where == 0 || enc != DSQ_ENC_FP8_B128) assert_non_null(strstr(e.msg, "[2, "));
            dsq_err_clear(&e);
            assert_int_equal(dsq_codec_check_finite(&t, "layers.0.w", &e), DSQ_ERR_NONFINITE);
            dsq_err_clear(&e);
            /* re-encoding (byte copy included) refuses too, unless allowed */
            dsq_qtensor_buf c;
            qbuf_alloc(&c, enc, R, C, group);
            assert_int_equal(dsq_codec_reencode(&t, &c, &o, NULL, &e), DSQ_ERR_NONFINITE);
            dsq_err_clear(&e);
            o.allow_nonfinite = true;
            assert_int_equal(dsq_codec_reencode(&t, &c, &o, NULL, &e), DSQ_OK);
            assert_int_equal(dsq_codec_decode(&t, 0, R, y, &o, &e), DSQ_OK);
            qbuf_free(&c);
            qbuf_free(&b);
            dsq_err_clear(&e);
        }
    }
}

static void test_huge_saturate(void **state) {
    (void)state;
    enum { C = 64 };
    float x[C], y[C];
    for (int i = 0; i < C; i++) x[i] = (i % 2 ? -1 : 1) * (i == 5 ? 3e38f : 1e30f * (float)(i % 5));
    for (int i = 0; i < N_CASES; i++) {
        dsq_encoding enc;
        int group;
        parse_ok(cases[i].name, &enc, &group);
        dsq_qtensor_buf b;
        qbuf_alloc(&b, enc, 1, C, group);
        dsq_err e = DSQ_ERR_INIT;
        assert_int_equal(dsq_codec_encode(&b, x, 0, 1, NULL, &e), DSQ_OK);
        dsq_qtensor t = dsq_qtensor_view(&b);
        assert_int_equal(dsq_codec_decode(&t, 0, 1, y, NULL, &e), DSQ_OK);
        for (int k = 0; k < C; k++) {
            assert_true(isfinite(y[k]));
            /* symmetric formats keep the sign (or give zero) */
            if (enc != DSQ_ENC_INT4_G_ASYM && enc != DSQ_ENC_INT2_G_ASYM && y[k] != 0)
                assert_int_equal(signbit(y[k]) != 0, signbit(x[k]) != 0);
        }
        if (enc == DSQ_ENC_F16) assert_true(y[5] == -65504.0f);
        if (enc == DSQ_ENC_INT8_ROW) assert_true(y[5] == -65504.0f * 127);
        if (enc == DSQ_ENC_FP8_B128 || enc == DSQ_ENC_F32 || enc == DSQ_ENC_FP8_ROW || enc == DSQ_ENC_FP8_R128_F32 ||
            enc == DSQ_ENC_FP8_ROW_E8M0)
            assert_true(fabsf(y[5] + 3e38f) <= 3e38f * 0.07f);
        qbuf_free(&b);
        dsq_err_clear(&e);
    }
}

/* ---- scale search -------------------------------------------------------------------------------- */

static double baseline_group_mse(const float *x, int n, int qmin, int qmax, bool asym) {
    float lo = x[0], hi = x[0], amax = 0;
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        amax = fmaxf(amax, fabsf(x[i]));
    }
    float s = asym ? dsq_f16_to_f32(dsq_f16_from_f32((hi - lo) / (float)qmax)) : dsq_f16_to_f32(dsq_f16_from_f32(amax / (float)qmax));
    float m = asym ? dsq_f16_to_f32(dsq_f16_from_f32(lo)) : 0.0f;
    double e = 0;
    for (int i = 0; i < n; i++) {
        float q = s > 0 ? rintf((x[i] - m) / s) : 0;
        q = fminf(fmaxf(q, (float)qmin), (float)qmax);
        double d = (double)x[i] - (double)(q * s + m);
        e += d * d;
    }
    return e;
}

static void test_scale_search_beats_amax(void **state) {
    (void)state;
    enum { R = 64, C = 1024 };
    float *x = malloc(R * C * sizeof(float)), *y = malloc(R * C * sizeof(float));
    rng g = {77};
    fill_gauss(&g, x, R * C, 0.02f);
    struct { const char *name; int qmin, qmax; bool asym; double want_ratio; } t[] = {
        /* measured: 0.786, 0.734, 0.880, 0.605, 0.964 */
        {"int4-g32", -8, 7, false, 0.85},  {"int4-g128", -8, 7, false, 0.80}, {"int4-g64-asym", 0, 15, true, 0.93},
        {"int2-g32-asym", 0, 3, true, 0.70}, {"int8-g128", -127, 127, false, 0.99},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        dsq_encoding enc;
        int group;
        parse_ok(t[i].name, &enc, &group);
        dsq_qtensor_buf b;
        qbuf_alloc(&b, enc, R, C, group);
        assert_int_equal(dsq_codec_encode(&b, x, 0, R, NULL, NULL), DSQ_OK);
        dsq_qtensor qt = dsq_qtensor_view(&b);
        assert_int_equal(dsq_codec_decode(&qt, 0, R, y, NULL, NULL), DSQ_OK);
        double ours = 0, base = 0;
        for (int gi = 0; gi < R * C / group; gi++) {
            double e = 0;
            for (int k = 0; k < group; k++) {
                double d = (double)x[gi * group + k] - y[gi * group + k];
                e += d * d;
            }
            double be = baseline_group_mse(x + gi * group, group, t[i].qmin, t[i].qmax, t[i].asym);
            assert_true(e <= be * (1 + 1e-9) + 1e-30); /* never worse, group by group */
            ours += e, base += be;
        }
        printf("  %-14s MSE search / amax rule = %.3f\n", t[i].name, ours / base);
        assert_true(ours <= t[i].want_ratio * base);
        qbuf_free(&b);
    }
    free(x);
    free(y);
}

/* ---- slabs and API misuse ---------------------------------------------------------------------------- */

static void test_slab_encode_equals_whole(void **state) {
    (void)state;
    enum { R = 300, C = 200 };
    float *x = malloc(R * C * sizeof(float));
    rng g = {13};
    fill_gauss(&g, x, R * C, 3.0f);
    const char *names[] = {"fp8-128x128", "fp8-1x128", "mxfp4", "int4-g32", "int2-g64-asym", "bf16", "nvfp4"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        dsq_encoding enc;
        int group;
        parse_ok(names[i], &enc, &group);
        dsq_qtensor_buf a, b;
        qbuf_alloc(&a, enc, R, C, group);
        qbuf_alloc(&b, enc, R, C, group);
        assert_int_equal(dsq_codec_encode(&a, x, 0, R, NULL, NULL), DSQ_OK);
        dsq_err e = DSQ_ERR_INIT;
        if (enc == DSQ_ENC_NVFP4) {
            assert_int_equal(dsq_codec_encode(&b, x, 0, 128, NULL, &e), DSQ_ERR_STATE);
            dsq_err_clear(&e);
            b.tensor_scale = a.tensor_scale;
        }
        for (uint64_t r0 = 0; r0 < R; r0 += 128) {
            uint64_t n = R - r0 < 128 ? R - r0 : 128;
            assert_int_equal(dsq_codec_encode(&b, x + r0 * C, r0, n, NULL, &e), DSQ_OK);
        }
        dsq_codec_layout L;
        dsq_codec_layout_of(enc, R, C, group, &L, NULL);
        assert_memory_equal(a.data, b.data, L.data_bytes);
        if (L.scale_bytes) assert_memory_equal(a.scales, b.scales, L.scale_bytes);
        if (L.min_bytes) assert_memory_equal(a.mins, b.mins, L.min_bytes);
        if (enc == DSQ_ENC_FP8_B128) {
            assert_int_equal(dsq_codec_encode(&b, x, 64, 128, NULL, &e), DSQ_ERR_ARG);
            assert_int_equal(dsq_codec_encode(&b, x, 0, 100, NULL, &e), DSQ_ERR_ARG);
        }
        assert_int_equal(dsq_codec_encode(&b, x, 200, 128, NULL, &e), DSQ_ERR_RANGE);
        assert_int_equal(dsq_codec_encode(&b, x, UINT64_MAX, 2, NULL, &e), DSQ_ERR_RANGE);
        qbuf_free(&a);
        qbuf_free(&b);
        dsq_err_clear(&e);
    }
    free(x);
}

static void test_check_descriptor(void **state) {
    (void)state;
    dsq_err e = DSQ_ERR_INIT;
    uint8_t d[64] = {0};
    dsq_qtensor t = {DSQ_ENC_FP8_B128, 4, 16, 0, d, NULL, NULL, 0};
    assert_int_equal(dsq_codec_check(&t, "w", &e), DSQ_ERR_ARG); /* scales missing */
    t.scales = d;
    assert_int_equal(dsq_codec_check(&t, "w", &e), DSQ_OK);
    t.enc = DSQ_ENC_INT4_G_ASYM, t.group = 16;
    assert_int_equal(dsq_codec_check(&t, "w", &e), DSQ_ERR_ARG); /* mins missing */
    t.enc = DSQ_ENC_NVFP4, t.group = 0, t.tensor_scale = NAN;
    assert_int_equal(dsq_codec_check(&t, "w", &e), DSQ_ERR_NONFINITE);
    t.tensor_scale = -1.0f;
    assert_int_equal(dsq_codec_check(&t, "w", &e), DSQ_ERR_NONFINITE);
    t.enc = (dsq_encoding)55;
    assert_int_equal(dsq_codec_check(&t, "w", &e), DSQ_ERR_DTYPE);
    dsq_qtensor i64 = {DSQ_ENC_I64, 2, 2, 0, d, NULL, NULL, 0};
    float y[4];
    assert_int_equal(dsq_codec_decode(&i64, 0, 2, y, NULL, &e), DSQ_ERR_UNSUPPORTED);
    dsq_qtensor_buf ib = {DSQ_ENC_I32, 2, 2, 0, d, NULL, NULL, 0};
    assert_int_equal(dsq_codec_encode(&ib, y, 0, 2, NULL, &e), DSQ_ERR_UNSUPPORTED);
    /* integers copy byte for byte, and nothing else */
    uint8_t out[64] = {0};
    for (int i = 0; i < 32; i++) d[i] = (uint8_t)(i * 7);
    dsq_qtensor_buf ob = {DSQ_ENC_I64, 2, 2, 0, out, NULL, NULL, 0};
    dsq_reencode_report rep;
    assert_int_equal(dsq_codec_reencode(&i64, &ob, NULL, &rep, &e), DSQ_OK);
    assert_true(rep.byte_copy);
    assert_memory_equal(out, d, 32);
    ob.enc = DSQ_ENC_F32;
    assert_int_equal(dsq_codec_reencode(&i64, &ob, NULL, &rep, &e), DSQ_ERR_UNSUPPORTED);
    ob.rows = 3;
    assert_int_equal(dsq_codec_reencode(&i64, &ob, NULL, &rep, &e), DSQ_ERR_SHAPE);
    dsq_err_clear(&e);
}

/* ---- re-encoding --------------------------------------------------------------------------------------- */

static void encode_new(dsq_qtensor_buf *b, const char *name, uint64_t R, uint64_t C, const float *x) {
    dsq_encoding enc;
    int group;
    parse_ok(name, &enc, &group);
    qbuf_alloc(b, enc, R, C, group);
    if (x) assert_int_equal(dsq_codec_encode(b, x, 0, R, NULL, NULL), DSQ_OK);
}

static void decoded(const dsq_qtensor_buf *b, float *y) {
    dsq_qtensor t = dsq_qtensor_view(b);
    assert_int_equal(dsq_codec_decode(&t, 0, b->rows, y, NULL, NULL), DSQ_OK);
}

static void test_reencode_paths(void **state) {
    (void)state;
    enum { R = 260, C = 384 };
    float *x = malloc(R * C * sizeof(float)), *y0 = malloc(R * C * sizeof(float)), *y1 = malloc(R * C * sizeof(float));
    rng g = {21};
    for (int i = 0; i < R * C; i++) x[i] = ldexpf(rng_gauss(&g), (int)(i / C / 20 % 5) - 2);
    /* same encoding → byte copy, for every encoding */
    for (int i = 0; i < N_CASES; i++) {
        dsq_qtensor_buf a, b;
        encode_new(&a, cases[i].name, R, C, x);
        encode_new(&b, cases[i].name, R, C, NULL);
        dsq_qtensor ta = dsq_qtensor_view(&a);
        dsq_reencode_report rep;
        assert_int_equal(dsq_codec_reencode(&ta, &b, NULL, &rep, NULL), DSQ_OK);
        assert_true(rep.byte_copy);
        dsq_codec_layout L;
        dsq_codec_layout_of(a.enc, R, C, a.group, &L, NULL);
        assert_memory_equal(a.data, b.data, L.data_bytes);
        if (L.scale_bytes) assert_memory_equal(a.scales, b.scales, L.scale_bytes);
        if (L.min_bytes) assert_memory_equal(a.mins, b.mins, L.min_bytes);
        assert_true(a.tensor_scale == b.tensor_scale);
        qbuf_free(&a);
        qbuf_free(&b);
    }
    /* value-preserving pairs: FP8 scale formats, FP8 block shapes with UE8M0 scales, into wider formats */
    const char *exact[][2] = {{"fp8-128x128", "fp8-128x128-f32"}, {"fp8-128x128", "fp8-1x128"},
                              {"fp8-128x128", "fp8-1x128-f32"},  {"fp8-128x128-f32", "fp8-1x128-f32"},
                              {"fp8-1x128", "fp8-1x128-f32"},    {"fp8-row-e8m0", "fp8-row"},
                              {"fp8-row-e8m0", "f32"},           {"fp8-1x128-f32", "f32"},
                              {"mxfp4", "fp8-1x128"},
                              {"fp8-128x128", "f32"},            {"bf16", "f32"},
                              {"f16", "f32"},                    {"mxfp4", "bf16"},
                              {"int4-g32", "f32"}};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        dsq_qtensor_buf a, b;
        encode_new(&a, exact[i][0], R, C, x);
        encode_new(&b, exact[i][1], R, C, NULL);
        dsq_qtensor ta = dsq_qtensor_view(&a);
        dsq_reencode_report rep;
        dsq_err e = DSQ_ERR_INIT;
        assert_int_equal(dsq_codec_reencode(&ta, &b, NULL, &rep, &e), DSQ_OK);
        assert_int_equal(rep.elements_changed, 0);
        decoded(&a, y0);
        decoded(&b, y1);
        if (memcmp(y0, y1, R * C * sizeof(float)) != 0) fprintf(stderr, "%s -> %s not exact\n", exact[i][0], exact[i][1]);
        assert_memory_equal(y0, y1, R * C * sizeof(float));
        qbuf_free(&a);
        qbuf_free(&b);
        dsq_err_clear(&e);
    }
    /* FP8 128x128 → 1x128 (either scale format): the same codes, each block scale replicated per row */
    const char *split[][2] = {{"fp8-128x128", "fp8-1x128"}, {"fp8-128x128", "fp8-1x128-f32"},
                              {"fp8-128x128-f32", "fp8-1x128-f32"}};
    for (size_t i = 0; i < sizeof split / sizeof split[0]; i++) {
        dsq_qtensor_buf a, b;
        encode_new(&a, split[i][0], R, C, x);
        encode_new(&b, split[i][1], R, C, NULL);
        dsq_qtensor ta = dsq_qtensor_view(&a);
        dsq_reencode_report rep;
        assert_int_equal(dsq_codec_reencode(&ta, &b, NULL, &rep, NULL), DSQ_OK);
        assert_true(rep.exact_path);
        assert_false(rep.byte_copy);
        assert_int_equal(rep.blocks, R * 3);
        assert_int_equal(rep.blocks_inexact, 0);
        assert_memory_equal(a.data, b.data, (size_t)R * C);
        bool f32 = b.enc == DSQ_ENC_FP8_R128_F32;
        for (int r = 0; r < R; r++)
            for (int j = 0; j < 3; j++) {
                float want = a.enc == DSQ_ENC_FP8_B128 ? dsq_e8m0_to_f32(((uint8_t *)a.scales)[(r / 128) * 3 + j])
                                                       : ((float *)a.scales)[(r / 128) * 3 + j];
                float got = f32 ? ((float *)b.scales)[r * 3 + j] : dsq_e8m0_to_f32(((uint8_t *)b.scales)[r * 3 + j]);
                assert_true(memcmp(&want, &got, 4) == 0);
            }
        decoded(&a, y0);
        decoded(&b, y1);
        assert_memory_equal(y0, y1, R * C * sizeof(float));
        qbuf_free(&a);
        qbuf_free(&b);
    }
    /* generic path = decode then encode */
    const char *lossy[][2] = {{"fp8-128x128", "int4-g32"}, {"mxfp4", "int4-g64-asym"}, {"bf16", "nvfp4"},
                              {"fp8-1x128", "mxfp4"},      {"f32", "int8-row"},         {"int8-g32", "int2-g32-asym"}};
    for (size_t i = 0; i < sizeof lossy / sizeof lossy[0]; i++) {
        dsq_qtensor_buf a, b, c;
        encode_new(&a, lossy[i][0], R, C, x);
        encode_new(&b, lossy[i][1], R, C, NULL);
        decoded(&a, y0);
        encode_new(&c, lossy[i][1], R, C, y0);
        dsq_qtensor ta = dsq_qtensor_view(&a);
        dsq_reencode_report rep;
        assert_int_equal(dsq_codec_reencode(&ta, &b, NULL, &rep, NULL), DSQ_OK);
        assert_false(rep.byte_copy);
        assert_false(rep.exact_path);
        dsq_codec_layout L;
        dsq_codec_layout_of(b.enc, R, C, b.group, &L, NULL);
        assert_true(b.tensor_scale == c.tensor_scale);
        assert_memory_equal(b.data, c.data, L.data_bytes);
        assert_memory_equal(b.scales, c.scales, L.scale_bytes);
        qbuf_free(&a);
        qbuf_free(&b);
        qbuf_free(&c);
    }
    free(x);
    free(y0);
    free(y1);
}

static void test_reencode_f32_scales_to_e8m0(void **state) {
    (void)state;
    enum { R = 130, C = 260 };
    float *x = malloc(R * C * sizeof(float)), *y0 = malloc(R * C * sizeof(float)), *y1 = malloc(R * C * sizeof(float));
    rng g = {23};
    fill_gauss(&g, x, R * C, 1.0f);
    dsq_qtensor_buf a, b;
    encode_new(&a, "fp8-128x128-f32", R, C, x); /* F32 scales amax/448: not powers of two */
    float *sc = a.scales;
    sc[1] = 0.25f; /* one block with a power-of-two scale moves exactly */
    encode_new(&b, "fp8-128x128", R, C, NULL);
    dsq_qtensor ta = dsq_qtensor_view(&a);
    dsq_reencode_report rep;
    assert_int_equal(dsq_codec_reencode(&ta, &b, NULL, &rep, NULL), DSQ_OK);
    assert_true(rep.exact_path);
    assert_int_equal(rep.blocks, 6);
    assert_int_equal(rep.blocks_inexact, 5);
    assert_true(rep.elements_changed > 0);
    decoded(&a, y0);
    decoded(&b, y1);
    double mx = 0;
    for (int i = 0; i < R * C; i++) mx = dsq_test_worse(mx, fabs((double)y0[i] - y1[i]));
    assert_true(fabs(mx - rep.max_abs_change) < 1e-12);
    for (int r = 0; r < 128; r++) /* block [0, 1] copied */
        for (int c = 128; c < 256; c++) assert_true(y0[r * C + c] == y1[r * C + c]);
    qbuf_free(&a);
    qbuf_free(&b);
    free(x);
    free(y0);
    free(y1);
}

/* The two FP8 variants follow the rules of their siblings: UE8M0 per row = pow2ceil(max(amax, 1e-4)/448)
 * as FP8_B128/FP8_R128; F32 per 1x128 block = amax/448 as FP8_ROW / FP8_B128_F32.  Rows of at most 128
 * columns are one block, so the pairs (fp8-row-e8m0, fp8-1x128) and (fp8-1x128-f32, fp8-row) must then
 * give the same bytes. */
static void test_fp8_variant_scale_rules(void **state) {
    (void)state;
    enum { R = 37, C = 300 };
    float *x = malloc(R * C * sizeof(float));
    rng g = {77};
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) x[r * C + c] = ldexpf(rng_gauss(&g), (r % 9) * 3 - 12 + (c / 128) * 2);
    for (int c = 0; c < C; c++) x[5 * C + c] = 0.0f;  /* an all-zero row */
    for (int c = 0; c < 128; c++) x[6 * C + c] = 0.0f; /* an all-zero 1x128 block */
    dsq_qtensor_buf a, b;
    encode_new(&a, "fp8-row-e8m0", R, C, x);
    encode_new(&b, "fp8-1x128-f32", R, C, x);
    for (int r = 0; r < R; r++) {
        float amax = 0, bmax[3] = {0};
        for (int c = 0; c < C; c++) {
            amax = fmaxf(amax, fabsf(x[r * C + c]));
            bmax[c / 128] = fmaxf(bmax[c / 128], fabsf(x[r * C + c]));
        }
        assert_int_equal(((uint8_t *)a.scales)[r], dsq_fp8_scale_e8m0(amax));
        for (int j = 0; j < 3; j++) assert_true(((float *)b.scales)[r * 3 + j] == bmax[j] / DSQ_E4M3_MAX);
        for (int c = 0; c < C; c++) { /* codes: RNE of x/s */
            float sa = dsq_e8m0_to_f32(((uint8_t *)a.scales)[r]), sb = ((float *)b.scales)[r * 3 + c / 128];
            assert_int_equal(((uint8_t *)a.data)[r * C + c], dsq_e4m3_from_f32(x[r * C + c] * (1.0f / sa)));
            assert_int_equal(((uint8_t *)b.data)[r * C + c], sb > 0 ? dsq_e4m3_from_f32(x[r * C + c] / sb) : 0);
        }
    }
    assert_true(((float *)b.scales)[6 * 3] == 0.0f);
    qbuf_free(&a);
    qbuf_free(&b);
    /* one block per row: sibling encodings give identical bytes */
    enum { C2 = 128 };
    const char *same[][2] = {{"fp8-row-e8m0", "fp8-1x128"}, {"fp8-1x128-f32", "fp8-row"}};
    for (size_t i = 0; i < 2; i++) {
        encode_new(&a, same[i][0], R, C2, x);
        encode_new(&b, same[i][1], R, C2, x);
        dsq_codec_layout L;
        dsq_codec_layout_of(a.enc, R, C2, 0, &L, NULL);
        assert_memory_equal(a.data, b.data, (size_t)R * C2);
        assert_memory_equal(a.scales, b.scales, L.scale_bytes);
        qbuf_free(&a);
        qbuf_free(&b);
    }
    free(x);
}

static void test_compare_stats(void **state) {
    (void)state;
    float ref[4] = {1, 2, 3, 4}, test[4] = {1, 2, 3, 5};
    dsq_codec_errstats s = {0};
    dsq_codec_errstats_add(&s, ref, test, 4);
    assert_true(fabs(dsq_codec_errstats_rel_rms(&s) - sqrt(1.0 / 30)) < 1e-12);
    assert_true(fabs(dsq_codec_errstats_cosine(&s) - 34.0 / sqrt(30.0 * 39.0)) < 1e-12);
    assert_true(s.max_abs == 1.0);
    dsq_codec_errstats z = {0};
    float zero[2] = {0, 0};
    dsq_codec_errstats_add(&z, zero, zero, 2);
    assert_true(dsq_codec_errstats_rel_rms(&z) == 0 && dsq_codec_errstats_cosine(&z) == 1);
    dsq_codec_errstats_add(&z, zero, ref, 2);
    assert_true(isinf(dsq_codec_errstats_rel_rms(&z)) && dsq_codec_errstats_cosine(&z) == 0);
    /* two stored tensors, slab by slab; equal to the statistics of the decoded arrays */
    enum { R = 300, C = 96 };
    float *x = malloc(R * C * sizeof(float)), *y0 = malloc(R * C * sizeof(float)), *y1 = malloc(R * C * sizeof(float));
    rng g = {31};
    fill_gauss(&g, x, R * C, 1.0f);
    dsq_qtensor_buf a, b;
    encode_new(&a, "bf16", R, C, x);
    encode_new(&b, "int4-g32", R, C, x);
    dsq_qtensor ta = dsq_qtensor_view(&a), tb = dsq_qtensor_view(&b);
    dsq_codec_errstats st, want = {0};
    assert_int_equal(dsq_codec_compare(&ta, &tb, NULL, &st, NULL), DSQ_OK);
    decoded(&a, y0);
    decoded(&b, y1);
    dsq_codec_errstats_add(&want, y0, y1, R * C);
    assert_int_equal(st.n, R * C);
    assert_true(fabs(dsq_codec_errstats_rel_rms(&st) - dsq_codec_errstats_rel_rms(&want)) < 1e-12);
    assert_true(dsq_codec_errstats_cosine(&st) > 0.99 && dsq_codec_errstats_cosine(&st) < 1.0);
    assert_true(st.max_abs == want.max_abs);
    tb.rows = 299;
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_codec_compare(&ta, &tb, NULL, &st, &e), DSQ_ERR_SHAPE);
    dsq_err_clear(&e);
    /* allocation failure is reported, nothing leaks */
    tb.rows = R;
    dsq_fault_set(DSQ_FAULT_MALLOC, 2);
    assert_int_equal(dsq_codec_compare(&ta, &tb, NULL, &st, &e), DSQ_ERR_NOMEM);
    dsq_fault_set(DSQ_FAULT_MALLOC, 0);
    dsq_err_clear(&e);
    qbuf_free(&a);
    qbuf_free(&b);
    free(x);
    free(y0);
    free(y1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_roundtrip_gauss),
        cmocka_unit_test(test_roundtrip_odd_shapes),
        cmocka_unit_test(test_zeros_and_denormals),
        cmocka_unit_test(test_nonfinite_rejected),
        cmocka_unit_test(test_nonfinite_codes_in_source),
        cmocka_unit_test(test_huge_saturate),
        cmocka_unit_test(test_scale_search_beats_amax),
        cmocka_unit_test(test_slab_encode_equals_whole),
        cmocka_unit_test(test_check_descriptor),
        cmocka_unit_test(test_reencode_paths),
        cmocka_unit_test(test_reencode_f32_scales_to_e8m0),
        cmocka_unit_test(test_fp8_variant_scale_rules),
        cmocka_unit_test(test_compare_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
