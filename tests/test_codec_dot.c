/* GEMV / GEMM / FP8-linear kernels: the AVX2 path, its scalar twin and a dequantize-then-dot
 * reference in double agree for every encoding and odd sizes; decode is bit-identical across the
 * two paths.  Activation helpers and the Hadamard transform against direct definitions.
 *
 * Tolerance: |y - ref| ≤ DOT_TOL · Σ_c |W[r,c]·x[c]| (f32 accumulation of up to ~1000 products,
 * block by block; the largest ratio seen on these cases is printed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "codec_util.h"

#define DOT_TOL 1e-6

static const char *encs[] = {"f32",         "f16",          "bf16",          "fp8-128x128",   "fp8-128x128-f32",
                             "fp8-1x128",   "fp8-row",       "fp8-1x128-f32", "fp8-row-e8m0",  "mxfp4",
                             "nvfp4",       "int8-row",      "int8-g128",    "int8-g16",      "int4-g32",
                             "int4-g64",    "int4-g128",     "int4-g32-asym", "int4-g64-asym", "int4-g256-asym",
                             "int2-g32-asym", "int2-g128-asym"};
enum { N_ENCS = sizeof encs / sizeof encs[0] };

static bool have_avx2(void) { return dsq_codec_best_isa() == DSQ_ISA_AVX2; }

typedef struct fixture {
    dsq_qtensor_buf b;
    dsq_qtensor t;
    float *w; /* decoded [rows][cols] (scalar path) */
} fixture;

static void make(fixture *f, const char *name, uint64_t R, uint64_t C, rng *g) {
    dsq_encoding enc;
    int group;
    assert_int_equal(dsq_codec_parse(name, &enc, &group, NULL), DSQ_OK);
    assert_int_equal(qbuf_alloc(&f->b, enc, R, C, group), 0);
    float *x = malloc((R * C + 1) * sizeof(float));
    for (uint64_t r = 0; r < R; r++)
        for (uint64_t c = 0; c < C; c++) x[r * C + c] = ldexpf(rng_gauss(g), (int)((r + c / 40) % 7) - 3);
    assert_int_equal(dsq_codec_encode(&f->b, x, 0, R, NULL, NULL), DSQ_OK);
    f->t = dsq_qtensor_view(&f->b);
    f->w = x; /* reuse: overwritten by the scalar decode */
    dsq_codec_options o = {.isa = DSQ_ISA_SCALAR};
    assert_int_equal(dsq_codec_decode(&f->t, 0, R, f->w, &o, NULL), DSQ_OK);
}
static void unmake(fixture *f) {
    qbuf_free(&f->b);
    free(f->w);
}

static double max_ratio; /* largest |err| / Σ|w·x| seen (reported) */

static void check_close(float y, double ref, double sabs, const char *what, const char *enc, uint64_t r) {
    double err = fabs((double)y - ref);
    double ratio = sabs > 0 ? err / sabs : err;
    if (ratio > max_ratio) max_ratio = ratio;
    if (!(err <= DOT_TOL * sabs + 1e-30)) {
        fprintf(stderr, "%s %s row %llu: got %.9g want %.9g (Σ|wx| %.3g)\n", what, enc, (unsigned long long)r, y, ref,
                sabs);
        fail();
    }
}

static void test_decode_twins_identical(void **state) {
    (void)state;
    if (!have_avx2()) {
        printf("  no AVX2 on this CPU: scalar only\n");
        return;
    }
    const uint64_t shapes[][2] = {{3, 1}, {5, 33}, {130, 257}, {2, 1000}};
    rng g = {101};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int i = 0; i < N_ENCS; i++) {
            fixture f;
            make(&f, encs[i], shapes[s][0], shapes[s][1], &g);
            uint64_t n = shapes[s][0] * shapes[s][1];
            float *y = malloc(n * sizeof(float));
            dsq_codec_options o = {.isa = DSQ_ISA_AVX2};
            assert_int_equal(dsq_codec_decode(&f.t, 0, shapes[s][0], y, &o, NULL), DSQ_OK);
            assert_memory_equal(y, f.w, n * sizeof(float));
            free(y);
            unmake(&f);
        }
}

/* Encoding does not depend on the CPU: the AVX2 scale search gives the same bytes as the scalar one. */
static void test_encode_twins_identical(void **state) {
    (void)state;
    if (!have_avx2()) return;
    const uint64_t shapes[][2] = {{3, 40}, {130, 300}, {2, 1000}};
    rng g = {111};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        uint64_t R = shapes[s][0], C = shapes[s][1];
        float *x = malloc(R * C * sizeof(float));
        for (uint64_t i = 0; i < R * C; i++) x[i] = ldexpf(rng_gauss(&g), (int)(i % 13) - 6);
        x[7] = INFINITY, x[R * C - 1] = NAN;
        for (int i = 0; i < N_ENCS; i++) {
            dsq_encoding enc;
            int group;
            dsq_codec_parse(encs[i], &enc, &group, NULL);
            dsq_qtensor_buf a, b;
            qbuf_alloc(&a, enc, R, C, group);
            qbuf_alloc(&b, enc, R, C, group);
            dsq_codec_options oa = {.isa = DSQ_ISA_SCALAR, .allow_nonfinite = true}, ob = {.isa = DSQ_ISA_AVX2, .allow_nonfinite = true};
            assert_int_equal(dsq_codec_encode(&a, x, 0, R, &oa, NULL), DSQ_OK);
            assert_int_equal(dsq_codec_encode(&b, x, 0, R, &ob, NULL), DSQ_OK);
            dsq_codec_layout L;
            dsq_codec_layout_of(enc, R, C, group, &L, NULL);
            assert_memory_equal(a.data, b.data, L.data_bytes);
            if (L.scale_bytes) assert_memory_equal(a.scales, b.scales, L.scale_bytes);
            if (L.min_bytes) assert_memory_equal(a.mins, b.mins, L.min_bytes);
            qbuf_free(&a);
            qbuf_free(&b);
        }
        free(x);
    }
}

static void test_dot_rows(void **state) {
    (void)state;
    const uint64_t shapes[][2] = {{3, 1}, {4, 7}, {9, 33}, {130, 100}, {7, 257}, {5, 544}, {3, 1000}, {2, 4096}};
    rng g = {202};
    max_ratio = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        uint64_t R = shapes[s][0], C = shapes[s][1];
        float *x = malloc(C * sizeof(float)), *y = malloc(R * sizeof(float));
        fill_gauss(&g, x, C, 1.0f);
        for (int i = 0; i < N_ENCS; i++) {
            fixture f;
            make(&f, encs[i], R, C, &g);
            for (int isa = DSQ_ISA_SCALAR; isa <= DSQ_ISA_AVX2; isa++) {
                if (isa == DSQ_ISA_AVX2 && !have_avx2()) continue;
                uint64_t row0 = R > 2 ? 1 : 0, nr = R - row0;
                dsq_codec_dot_rows_isa(&f.t, x, row0, nr, y, (dsq_isa)isa);
                for (uint64_t r = 0; r < nr; r++) {
                    double ref = 0, sabs = 0;
                    for (uint64_t c = 0; c < C; c++) {
                        double p = (double)f.w[(row0 + r) * C + c] * x[c];
                        ref += p, sabs += fabs(p);
                    }
                    check_close(y[r], ref, sabs, isa == DSQ_ISA_AVX2 ? "dot avx2" : "dot scalar", encs[i], r);
                }
            }
            unmake(&f);
        }
        free(x);
        free(y);
    }
    /* the public entry point (AUTO) is one of the two */
    printf("  dot: max |err|/Σ|wx| = %.3g (tolerance %.0e)\n", max_ratio, DOT_TOL);
}

static void test_gemm_and_fp8_linear(void **state) {
    (void)state;
    const uint64_t shapes[][2] = {{5, 33}, {130, 300}, {3, 1000}, {4, 640}};
    enum { NV = 3, PADX = 5, PADY = 2 };
    rng g = {303};
    max_ratio = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        uint64_t R = shapes[s][0], C = shapes[s][1], ldx = C + PADX, ldy = R + PADY;
        uint64_t nb = (C + 127) / 128;
        float *x = malloc(NV * ldx * sizeof(float)), *y = malloc(NV * ldy * sizeof(float));
        float *q = malloc(NV * C * sizeof(float)), *sa = malloc(NV * nb * sizeof(float));
        fill_gauss(&g, x, NV * ldx, 2.0f);
        for (int j = 0; j < NV; j++) dsq_act_fp8_quant_values(x + j * ldx, C, 128, q + j * C, sa + j * nb);
        for (int i = 0; i < N_ENCS; i++) {
            fixture f;
            make(&f, encs[i], R, C, &g);
            for (int isa = DSQ_ISA_SCALAR; isa <= DSQ_ISA_AVX2; isa++) {
                if (isa == DSQ_ISA_AVX2 && !have_avx2()) continue;
                dsq_codec_gemm_rows_isa(&f.t, x, NV, ldx, 0, R, y, ldy, (dsq_isa)isa);
                for (int j = 0; j < NV; j++)
                    for (uint64_t r = 0; r < R; r++) {
                        double ref = 0, sabs = 0;
                        for (uint64_t c = 0; c < C; c++) {
                            double p = (double)f.w[r * C + c] * x[j * ldx + c];
                            ref += p, sabs += fabs(p);
                        }
                        check_close(y[j * ldy + r], ref, sabs, "gemm", encs[i], r);
                    }
                /* one vector at a time gives the same numbers: results do not depend on the batch */
                float y1[1024];
                dsq_codec_gemm_rows_isa(&f.t, x + ldx, 1, ldx, 0, R, y1, R, (dsq_isa)isa);
                assert_memory_equal(y1, y + ldy, R * sizeof(float));
                /* FP8-linear: Σ_b sa·Σ q·w */
                dsq_codec_fp8_linear_rows_isa(&f.t, q, sa, NV, 0, R, y, ldy, (dsq_isa)isa);
                for (int j = 0; j < NV; j++)
                    for (uint64_t r = 0; r < R; r++) {
                        double ref = 0, sabs = 0;
                        for (uint64_t b = 0; b < nb; b++) {
                            double blk = 0;
                            for (uint64_t c = b * 128; c < C && c < b * 128 + 128; c++) {
                                double p = (double)q[j * C + c] * f.w[r * C + c];
                                blk += p, sabs += fabs(p) * sa[j * nb + b];
                            }
                            ref += sa[j * nb + b] * blk;
                        }
                        check_close(y[j * ldy + r], ref, sabs, "fp8-linear", encs[i], r);
                    }
            }
            unmake(&f);
        }
        free(x);
        free(y);
        free(q);
        free(sa);
    }
    printf("  gemm/fp8-linear: max |err|/Σ|wx| = %.3g\n", max_ratio);
}

/* FP8-linear with FP8/MXFP4 weights equals Σ_b s_a·s_w·Σ q_a·q_w computed from the codes. */
static void test_fp8_linear_codes(void **state) {
    (void)state;
    enum { R = 130, C = 384 };
    rng g = {404};
    float *w = malloc(R * C * sizeof(float)), x[C], q[C], sa[3], y[R];
    fill_gauss(&g, w, R * C, 0.05f);
    fill_gauss(&g, x, C, 3.0f);
    dsq_act_fp8_quant_values(x, C, 128, q, sa);
    uint8_t codes[C];
    float sa2[3];
    uint8_t sae[3];
    dsq_act_fp8_quant(x, C, 128, codes, sa2, sae);
    for (int c = 0; c < C; c++) assert_true(q[c] == dsq_e4m3_to_f32(codes[c]));
    for (int b = 0; b < 3; b++) assert_true(sa[b] == sa2[b] && sa2[b] == dsq_e8m0_to_f32(sae[b]));
    const char *names[] = {"fp8-128x128", "mxfp4"};
    for (int k = 0; k < 2; k++) {
        dsq_qtensor_buf b;
        dsq_encoding enc;
        int group;
        dsq_codec_parse(names[k], &enc, &group, NULL);
        qbuf_alloc(&b, enc, R, C, group);
        assert_int_equal(dsq_codec_encode(&b, w, 0, R, NULL, NULL), DSQ_OK);
        dsq_qtensor t = dsq_qtensor_view(&b);
        dsq_codec_fp8_linear_rows_isa(&t, q, sa, 1, 0, R, y, R, DSQ_ISA_SCALAR);
        for (int r = 0; r < R; r++) {
            double ref = 0, sabs = 0;
            for (int bk = 0; bk < 3; bk++)
                for (int sub = 0; sub < 128; sub += (k ? 32 : 128)) {
                    int c0 = bk * 128 + sub, len = k ? 32 : 128;
                    double sw, acc = 0;
                    if (k == 0) sw = dsq_e8m0_to_f32(((uint8_t *)b.scales)[(r / 128) * 3 + bk]);
                    else sw = dsq_e8m0_to_f32(((uint8_t *)b.scales)[r * (C / 32) + c0 / 32]);
                    for (int c = c0; c < c0 + len; c++) {
                        double qw = k == 0 ? dsq_e4m3_to_f32(((uint8_t *)b.data)[r * C + c])
                                           : dsq_e2m1_to_f32((uint8_t)((((uint8_t *)b.data)[r * (C / 2) + c / 2] >> (4 * (c & 1))) & 15));
                        acc += q[c] * qw;
                        sabs += fabs(q[c] * qw) * sa[bk] * sw;
                    }
                    ref += sa[bk] * sw * acc;
                }
            check_close(y[r], ref, sabs, "fp8-linear codes", names[k], (uint64_t)r);
        }
        qbuf_free(&b);
    }
    free(w);
}

static void test_hadamard(void **state) {
    (void)state;
    rng g = {505};
    for (uint64_t n = 1; n <= 256; n *= 2) {
        float x[256], y[256];
        fill_gauss(&g, x, n, 1.0f);
        memcpy(y, x, n * sizeof(float));
        dsq_hadamard(y, n);
        double norm = 0;
        for (uint64_t i = 0; i < n; i++) norm += (double)x[i] * x[i];
        for (uint64_t i = 0; i < n; i++) {
            double ref = 0;
            for (uint64_t j = 0; j < n; j++) ref += (__builtin_popcountll(i & j) & 1 ? -1.0 : 1.0) * x[j];
            ref /= sqrt((double)n);
            assert_true(fabs(y[i] - ref) <= 1e-6 * sqrt(norm) + 1e-7);
        }
        dsq_hadamard(y, n); /* H is symmetric and orthonormal: applying it twice gives x back */
        for (uint64_t i = 0; i < n; i++) assert_true(fabs(y[i] - x[i]) <= 1e-6 * sqrt(norm));
    }
}

static void test_act_fp4(void **state) {
    (void)state;
    enum { N = 100 };
    rng g = {606};
    float x[N], sim[N];
    fill_gauss(&g, x, N, 0.3f);
    x[40] = 0, x[41] = -0.0f;
    for (int i = 64; i < 96; i++) x[i] = 0; /* an all-zero block */
    uint8_t packed[N / 2], sc[4];
    dsq_act_fp4_quant(x, N, 32, packed, sc);
    memcpy(sim, x, sizeof x);
    dsq_act_fp4_sim(sim, N, 32);
    for (int i = 0; i < N; i++) {
        float v = dsq_e2m1_to_f32((uint8_t)((packed[i / 2] >> (4 * (i & 1))) & 15)) * dsq_e8m0_to_f32(sc[i / 32]);
        assert_true(dsq_bf16_round(v) == sim[i]);
        assert_true(fabsf(sim[i] - x[i]) <= 0.25f * fabsf(x[i]) + 0.25f * dsq_e8m0_to_f32(sc[i / 32]));
    }
    assert_true(signbit(sim[41]));
    assert_int_equal(sc[2], dsq_fp4_scale_e8m0(0.0f));
    /* FP8 simulation equals quantize + dequantize */
    float s8[N], q[N], sa[2];
    memcpy(s8, x, sizeof x);
    dsq_act_fp8_sim(s8, N, 64);
    dsq_act_fp8_quant_values(x, N, 64, q, sa);
    for (int i = 0; i < N; i++) assert_true(s8[i] == dsq_bf16_round(q[i] * sa[i / 64]));
}

/* An e4m3 NaN code makes its row's dot product NaN in both twins (the AVX2 decoder reads it as 480). */
static void test_dot_nan_code(void **state) {
    (void)state;
    enum { R = 4, C = 256 };
    float w[R * C], x[C], ys[R], yv[R];
    for (int i = 0; i < R * C; i++) w[i] = (float)((i * 7) % 13) - 6.0f;
    for (int c = 0; c < C; c++) x[c] = 1.0f / (float)(c + 1);
    dsq_qtensor_buf b;
    qbuf_alloc(&b, DSQ_ENC_FP8_B128, R, C, 0);
    assert_int_equal(dsq_codec_encode(&b, w, 0, R, NULL, NULL), DSQ_OK);
    ((uint8_t *)b.data)[2 * C + 37] = 0x7f;
    dsq_qtensor t = dsq_qtensor_view(&b);
    dsq_codec_dot_rows_isa(&t, x, 0, R, ys, DSQ_ISA_SCALAR);
    dsq_codec_dot_rows_isa(&t, x, 0, R, yv, DSQ_ISA_AVX2);
    for (int r = 0; r < R; r++) {
        assert_true(isnan(ys[r]) == (r == 2));
        assert_true(isnan(yv[r]) == (r == 2));
    }
    qbuf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_nan_code),
        cmocka_unit_test(test_decode_twins_identical), cmocka_unit_test(test_encode_twins_identical),
        cmocka_unit_test(test_dot_rows),
        cmocka_unit_test(test_gemm_and_fp8_linear),    cmocka_unit_test(test_fp8_linear_codes),
        cmocka_unit_test(test_hadamard),               cmocka_unit_test(test_act_fp4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
