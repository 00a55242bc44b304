/* The evaluator's linear kernel (lib/eval/linear.c, dsq__linear): the vector one-token kernels
 * (AVX2, and the AVX-512 row-pair twins where the CPU has them: 8-row BF16 tiles, 4-row FP8 and
 * MXFP4 tiles, the eight-row MXFP4 kernel with and without VBMI) give the same bits as the scalar twin, for every
 * encoding the model uses, row counts that leave partial tiles, column counts that are and are not multiples of the
 * blocks, one and two threads, and for several tokens (the dequantize-then-tile path). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "codec_util.h"
#include "v4_backend.h"
#include "v4_internal.h"

typedef struct lcase {
    const char *enc;
    uint64_t rows, cols;
} lcase;

static void check_case(const lcase *c, rng *g) {
    dsq_encoding enc;
    int group;
    assert_int_equal(dsq_codec_parse(c->enc, &enc, &group, NULL), DSQ_OK);
    dsq_qtensor_buf b;
    assert_int_equal(qbuf_alloc(&b, enc, c->rows, c->cols, group), 0);
    uint64_t n = c->rows * c->cols;
    float *w = malloc(sizeof(float) * n);
    /* magnitudes spread over 2^-12 … 2^6 so block scales differ from block to block */
    for (uint64_t i = 0; i < n; i++) w[i] = ldexpf(rng_gauss(g), (int)((i / 32 + i / c->cols) % 19) - 12);
    assert_int_equal(dsq_codec_encode(&b, w, 0, c->rows, NULL, NULL), DSQ_OK);
    dsq_codec_layout L;
    assert_int_equal(dsq_codec_layout_of(enc, c->rows, c->cols, group, &L, NULL), DSQ_OK);
    dsq_wview v = {.name = c->enc, .enc = enc, .rank = 2, .shape = {c->rows, c->cols}, .data = b.data,
                   .data_bytes = L.data_bytes, .scale = b.scales, .scale_bytes = L.scale_bytes, .group = group};
    enum { NT = 5 };
    float *x = malloc(sizeof(float) * c->cols * NT);
    for (uint64_t i = 0; i < c->cols * NT; i++) x[i] = ldexpf(rng_gauss(g), (int)(i % 11) - 5);
    float *ys = malloc(sizeof(float) * c->rows * NT), *yv = malloc(sizeof(float) * c->rows * NT);
    int64_t toks[] = {1, NT};
    for (int ti = 0; ti < 2; ti++) {
        int64_t nt = toks[ti];
        dsq__kern ks = {false, 1};
        assert_int_equal(dsq__linear(&ks, &v, 0, c->rows, x, c->cols, nt, ys, c->rows, NULL), DSQ_OK);
        for (int th = 1; th <= 2; th++) {
            dsq__kern kv = {dsq__cpu_has_avx2(), th};
            memset(yv, 0xff, sizeof(float) * c->rows * (size_t)nt);
            assert_int_equal(dsq__linear(&kv, &v, 0, c->rows, x, c->cols, nt, yv, c->rows, NULL), DSQ_OK);
            for (uint64_t i = 0; i < c->rows * (uint64_t)nt; i++)
                if (memcmp(&ys[i], &yv[i], sizeof(float)) != 0) {
                    fprintf(stderr, "%s [%llu x %llu] tokens %lld threads %d: output %llu: vector %.9g, scalar %.9g\n",
                            c->enc, (unsigned long long)c->rows, (unsigned long long)c->cols, (long long)nt, th,
                            (unsigned long long)i, yv[i], ys[i]);
                    fail();
                }
        }
    }
    /* a row window (row0 > 0), as the grouped output projection uses */
    if (c->rows > 9) {
        dsq__kern ks = {false, 1}, kv = {dsq__cpu_has_avx2(), 2};
        assert_int_equal(dsq__linear(&ks, &v, 3, c->rows - 3, x, c->cols, 1, ys, c->rows, NULL), DSQ_OK);
        assert_int_equal(dsq__linear(&kv, &v, 3, c->rows - 3, x, c->cols, 1, yv, c->rows, NULL), DSQ_OK);
        for (uint64_t i = 0; i < c->rows - 3; i++)
            if (memcmp(&ys[i], &yv[i], sizeof(float)) != 0) {
                fprintf(stderr, "%s [%llu x %llu] rows 3…: output %llu: vector %.9g, scalar %.9g\n", c->enc,
                        (unsigned long long)c->rows, (unsigned long long)c->cols, (unsigned long long)i, yv[i], ys[i]);
                fail();
            }
    }
    free(w);
    free(x);
    free(ys);
    free(yv);
    qbuf_free(&b);
}

static void test_vector_equals_scalar(void **state) {
    (void)state;
    if (!dsq__cpu_has_avx2()) skip();
    printf("  vector kernels: AVX2%s\n", dsq__cpu_has_avx512() ? " + AVX-512 row pairs" : "");
    static const lcase cases[] = {
        {"bf16", 8, 64},    {"bf16", 29, 96},   {"bf16", 136, 264}, {"bf16", 4, 32},
        {"f32", 13, 40},    {"f32", 16, 128},   {"fp8-128x128", 13, 256},
        {"fp8-128x128", 136, 384}, {"fp8-128x128", 20, 200}, {"fp8-128x128-f32", 12, 256},
        {"fp8-128x128", 144, 1024}, /* 16-row VBMI tiles, 16 steps of 64 columns, two threads' next-tile prefetch */
        {"mxfp4", 13, 64},  {"mxfp4", 136, 256}, {"mxfp4", 7, 96},   {"mxfp4", 24, 32},
        {"q2_k", 13, 256},  {"q3_k", 9, 512},    {"q4_k", 136, 256}, {"q5_k", 7, 768},
        {"q6_k", 24, 256},  {"q4_k", 4, 1024},
    };
    rng g = {0x5eed1234};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], &g);
}

/* FP8 blocks whose scale is so large that 256·s could overflow (≥ 2^120) take the two-product route
 * in the vector kernels; with codes ±1 the results stay finite and must still equal the scalar twin. */
static void test_fp8_huge_scale_block(void **state) {
    (void)state;
    if (!dsq__cpu_has_avx2()) skip();
    const char *encs[] = {"fp8-128x128", "fp8-128x128-f32"};
    rng g = {77};
    for (int e = 0; e < 2; e++) {
        dsq_encoding enc;
        int group;
        assert_int_equal(dsq_codec_parse(encs[e], &enc, &group, NULL), DSQ_OK);
        const uint64_t R = 12, C = 256;
        dsq_qtensor_buf b;
        assert_int_equal(qbuf_alloc(&b, enc, R, C, group), 0);
        float *w = malloc(sizeof(float) * R * C);
        for (uint64_t i = 0; i < R * C; i++) w[i] = rng_gauss(&g);
        assert_int_equal(dsq_codec_encode(&b, w, 0, R, NULL, NULL), DSQ_OK);
        uint8_t *codes = b.data;
        for (uint64_t r = 0; r < R; r++) /* block (0, 0): codes ±1.0, scale 2^120 */
            for (uint64_t c = 0; c < 128; c++) codes[r * C + c] = (rng_u64(&g) & 1) ? 0x38 : 0xb8;
        if (enc == DSQ_ENC_FP8_B128) ((uint8_t *)b.scales)[0] = 247;
        else {
            float big = 0x1p120f;
            memcpy(b.scales, &big, 4);
        }
        dsq_codec_layout L;
        assert_int_equal(dsq_codec_layout_of(enc, R, C, group, &L, NULL), DSQ_OK);
        dsq_wview v = {.name = encs[e], .enc = enc, .rank = 2, .shape = {R, C}, .data = b.data,
                       .data_bytes = L.data_bytes, .scale = b.scales, .scale_bytes = L.scale_bytes, .group = group};
        float x[256], ys[12], yv[12];
        for (uint64_t i = 0; i < C; i++) x[i] = rng_gauss(&g);
        dsq__kern ks = {false, 1}, kv = {true, 1};
        assert_int_equal(dsq__linear(&ks, &v, 0, R, x, C, 1, ys, R, NULL), DSQ_OK);
        assert_int_equal(dsq__linear(&kv, &v, 0, R, x, C, 1, yv, R, NULL), DSQ_OK);
        for (uint64_t i = 0; i < R; i++) {
            assert_true(isfinite(ys[i]) && fabsf(ys[i]) > 0x1p100f);
            assert_memory_equal(&ys[i], &yv[i], sizeof(float));
        }
        free(w);
        qbuf_free(&b);
    }
}

/* One view of (enc, rows, cols) with weights spread over 2^-12 … 2^6; free with qbuf_free. */
static dsq_wview make_view(const char *name, uint64_t rows, uint64_t cols, rng *g, dsq_qtensor_buf *b) {
    dsq_encoding enc;
    int group;
    assert_int_equal(dsq_codec_parse(name, &enc, &group, NULL), DSQ_OK);
    assert_int_equal(qbuf_alloc(b, enc, rows, cols, group), 0);
    float *w = malloc(sizeof(float) * rows * cols);
    for (uint64_t i = 0; i < rows * cols; i++) w[i] = ldexpf(rng_gauss(g), (int)((i / 32 + i / cols) % 19) - 12);
    assert_int_equal(dsq_codec_encode(b, w, 0, rows, NULL, NULL), DSQ_OK);
    free(w);
    dsq_codec_layout L;
    assert_int_equal(dsq_codec_layout_of(enc, rows, cols, group, &L, NULL), DSQ_OK);
    dsq_wview v = {.name = name, .enc = enc, .rank = 2, .shape = {rows, cols}, .data = b->data,
                   .data_bytes = L.data_bytes, .scale = b->scales, .scale_bytes = L.scale_bytes, .group = group};
    return v;
}

/* The several-token kernels (the AVX-512 GEMM over row-pair panels, the eight-row MXFP4 kernel for up
 * to eight tokens, the AVX2 tiles where AVX-512 is missing) equal the scalar twin bit for bit: token
 * counts on and around every tile edge (GEMM 6, MXFP4 4 and 8), row counts that leave partial 16-row
 * blocks and 8-row micro-panels, row windows (row0 > 0), strided x and y (nothing written outside the
 * window), one and two threads, and views taken by the exact decoder (nonfinite). */
static void test_multi_token_equals_scalar(void **state) {
    (void)state;
    if (!dsq__cpu_has_avx2()) skip();
    static const lcase cases[] = {
        {"bf16", 37, 64}, {"f32", 21, 40}, {"fp8-128x128", 45, 256}, {"fp8-128x128-f32", 19, 384},
        {"mxfp4", 43, 128}, {"mxfp4", 16, 64}, {"mxfp4", 8, 32}, {"q4_k", 11, 256}, {"bf16", 7, 24},
    };
    static const int64_t toks[] = {2, 3, 4, 5, 6, 7, 8, 9, 12, 13};
    rng g = {0xc0ffee};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const lcase *c = &cases[ci];
        dsq_qtensor_buf b;
        dsq_wview v = make_view(c->enc, c->rows, c->cols, &g, &b);
        size_t ldx = (size_t)c->cols + 8, ldy = (size_t)c->rows + 3;
        enum { MAXT = 13 };
        float *x = malloc(sizeof(float) * ldx * MAXT);
        for (size_t i = 0; i < ldx * MAXT; i++) x[i] = ldexpf(rng_gauss(&g), (int)(i % 11) - 5);
        float *ys = malloc(sizeof(float) * ldy * MAXT), *yv = malloc(sizeof(float) * ldy * MAXT);
        for (int nf = 0; nf < 2; nf++) {
            v.nonfinite = nf; /* the exact decoder's path (no NaN here: its weights are the same) */
            for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++)
                for (uint64_t row0 = 0; row0 <= 5; row0 += 5) {
                    int64_t nt = toks[ti];
                    uint64_t n = c->rows - row0;
                    dsq__kern ks = {false, 1};
                    memset(ys, 0xff, sizeof(float) * ldy * (size_t)nt);
                    assert_int_equal(dsq__linear(&ks, &v, row0, n, x, ldx, nt, ys, ldy, NULL), DSQ_OK);
                    for (int th = 1; th <= 2; th++) {
                        dsq__kern kv = {true, th};
                        memset(yv, 0xff, sizeof(float) * ldy * (size_t)nt);
                        assert_int_equal(dsq__linear(&kv, &v, row0, n, x, ldx, nt, yv, ldy, NULL), DSQ_OK);
                        for (size_t i = 0; i < ldy * (size_t)nt; i++) /* window and padding alike */
                            if (memcmp(&ys[i], &yv[i], sizeof(float)) != 0) {
                                fprintf(stderr,
                                        "%s [%llu x %llu] rows %llu… tokens %lld threads %d nonfinite %d: y[%zu][%zu]: "
                                        "vector %.9g, scalar %.9g\n",
                                        c->enc, (unsigned long long)c->rows, (unsigned long long)c->cols,
                                        (unsigned long long)row0, (long long)nt, th, nf, i / ldy, i % ldy, yv[i], ys[i]);
                                fail();
                            }
                    }
                    float sentinel;
                    memset(&sentinel, 0xff, sizeof sentinel);
                    for (int64_t t = 0; t < nt; t++) /* columns past the window untouched */
                        for (size_t i = n; i < ldy; i++) assert_memory_equal(&ys[(size_t)t * ldy + i], &sentinel, 4);
                }
        }
        free(x);
        free(ys);
        free(yv);
        qbuf_free(&b);
    }
}

/* MXFP4 rows long enough for the eight-row kernel's vector scale conversion (16 blocks at a time, the
 * rest one by one), with extreme scale bytes (0 = 2^-127, 1, 2, 200) planted and row 0 all at 2^-127:
 * 1–8 tokens equal the scalar twin bit for bit. */
static void test_fp4_scale_chunks(void **state) {
    (void)state;
    if (!dsq__cpu_has_avx2()) skip();
    static const lcase cases[] = {{"mxfp4", 16, 1024}, {"mxfp4", 9, 608}, {"mxfp4", 24, 512}};
    rng g = {0xfb4};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const lcase *c = &cases[ci];
        dsq_qtensor_buf b;
        dsq_wview v = make_view(c->enc, c->rows, c->cols, &g, &b);
        uint8_t *sc = b.scales;
        static const uint8_t planted[] = {0, 1, 2, 200};
        for (uint64_t i = 0; i < v.scale_bytes; i += 7) sc[i] = planted[(i / 7) % 4];
        memset(sc, 0, c->cols / 32); /* row 0 entirely at 2^-127: its outputs are those tiny products alone */
        enum { NT = 8 };
        float *x = malloc(sizeof(float) * c->cols * NT);
        for (uint64_t i = 0; i < c->cols * NT; i++) x[i] = ldexpf(rng_gauss(&g), (int)(i % 11) - 5);
        float *ys = malloc(sizeof(float) * c->rows * NT), *yv = malloc(sizeof(float) * c->rows * NT);
        for (int64_t nt = 1; nt <= NT; nt++) {
            dsq__kern ks = {false, 1}, kv = {true, 2};
            assert_int_equal(dsq__linear(&ks, &v, 0, c->rows, x, c->cols, nt, ys, c->rows, NULL), DSQ_OK);
            assert_int_equal(dsq__linear(&kv, &v, 0, c->rows, x, c->cols, nt, yv, c->rows, NULL), DSQ_OK);
            for (uint64_t i = 0; i < c->rows * (uint64_t)nt; i++)
                if (memcmp(&ys[i], &yv[i], sizeof(float)) != 0) {
                    fprintf(stderr, "mxfp4 [%llu x %llu] tokens %lld: output %llu: vector %.9g, scalar %.9g\n",
                            (unsigned long long)c->rows, (unsigned long long)c->cols, (long long)nt,
                            (unsigned long long)i, yv[i], ys[i]);
                    fail();
                }
        }
        free(x);
        free(ys);
        free(yv);
        qbuf_free(&b);
    }
}

/* The one-token FP8 kernel that moves the block scale onto x (x·2^120·s, used when every product is
 * exact): codes over the whole e4m3 range (subnormals, -0, ±448; no NaN codes), scale bytes at the
 * edge of that path (134) and past it (135, the other kernel), 0 (2^-127) and ordinary ones; x with
 * subnormal entries, signed zeros, and a block where x·2^120·s overflows (that scale row must take the
 * other kernel, or its outputs turn infinite).  Every row window and thread count equals the scalar
 * twin bit for bit. */
static void test_fp8_prescaled_x(void **state) {
    (void)state;
    if (!dsq__cpu_has_avx2()) skip();
    const uint64_t R = 264, C = 384; /* 3 scale rows (the last partial) × 3 scale columns */
    rng g = {0xf8f8};
    dsq_qtensor_buf b;
    dsq_wview v = make_view("fp8-128x128", R, C, &g, &b);
    uint8_t *codes = b.data, *sc = b.scales;
    for (uint64_t i = 0; i < R * C; i++) {
        uint8_t c = (uint8_t)rng_u64(&g);
        codes[i] = (c & 0x7f) == 0x7f ? (uint8_t)(c ^ 1) : c; /* no NaN codes */
    }
    static const uint8_t scales[9] = {134, 120, 0, 127, 135, 110, 5, 134, 60};
    memcpy(sc, scales, sizeof scales);
    float x[384], ys[264], yv[264];
    for (int variant = 0; variant < 3; variant++) {
        for (uint64_t i = 0; i < C; i++) x[i] = ldexpf(rng_gauss(&g), -(int)(i % 9) - 2); /* |x| < 2 */
        if (variant >= 1) {
            x[7] = 0x1p-149f * 3, x[200] = -0x1p-140f, x[260] = 0x1p-149f * 5, x[300] = -0.0f, x[301] = 0.0f;
        }
        if (variant == 2) x[5] = 3.0f; /* ·2^127 overflows in scale rows 0 and 2 */
        for (uint64_t row0 = 0; row0 <= 128; row0 += row0 == 0 ? 3 : 125) {
            uint64_t n = R - row0;
            dsq__kern ks = {false, 1};
            assert_int_equal(dsq__linear(&ks, &v, row0, n, x, C, 1, ys, n, NULL), DSQ_OK);
            for (uint64_t i = 0; i < n; i++) assert_true(isfinite(ys[i]));
            for (int th = 1; th <= 2; th++) {
                dsq__kern kv = {true, th};
                memset(yv, 0xff, sizeof yv);
                assert_int_equal(dsq__linear(&kv, &v, row0, n, x, C, 1, yv, n, NULL), DSQ_OK);
                for (uint64_t i = 0; i < n; i++)
                    if (memcmp(&ys[i], &yv[i], sizeof(float)) != 0) {
                        fprintf(stderr, "fp8 prescaled x, variant %d rows %llu… threads %d: output %llu: vector %.9g, "
                                        "scalar %.9g\n",
                                variant, (unsigned long long)row0, th, (unsigned long long)i, yv[i], ys[i]);
                        fail();
                    }
            }
        }
    }
    qbuf_free(&b);
}

/* Where the CPU has VBMI, the MXFP4 few-token path runs its VBMI twin; the AVX-512 F+BW kernel it
 * replaces (still the one CPUs without VBMI take) must keep giving the scalar twin's bits too: the
 * MXFP4 cases above again with VBMI forbidden. */
/* The cpu backend's linear1_multi (several one-token jobs in one parallel region, rows cut between
 * threads by cost at 16-row steps) gives every job the bits one dsq__linear per job gives: jobs of
 * different encodings and widths, row windows (row0 > 0), row counts that are not multiples of 16, an
 * empty job, 1-4 threads, scalar and vector kernels. */
static void test_linear1_multi_equals_linear(void **state) {
    (void)state;
    static const lcase cases[] = {
        {"fp8-128x128", 300, 256}, {"mxfp4", 37, 128}, {"bf16", 17, 64}, {"f32", 1, 40}, {"fp8-128x128", 144, 1024},
    };
    enum { NC = sizeof cases / sizeof cases[0] };
    rng g = {0x51a7e};
    dsq_qtensor_buf b[NC];
    dsq_wview v[NC];
    float *x[NC];
    for (int i = 0; i < NC; i++) {
        const lcase *c = &cases[i];
        dsq_encoding enc;
        int group;
        assert_int_equal(dsq_codec_parse(c->enc, &enc, &group, NULL), DSQ_OK);
        assert_int_equal(qbuf_alloc(&b[i], enc, c->rows, c->cols, group), 0);
        float *w = malloc(sizeof(float) * c->rows * c->cols);
        for (uint64_t j = 0; j < c->rows * c->cols; j++) w[j] = ldexpf(rng_gauss(&g), (int)(j % 13) - 6);
        assert_int_equal(dsq_codec_encode(&b[i], w, 0, c->rows, NULL, NULL), DSQ_OK);
        free(w);
        dsq_codec_layout L;
        assert_int_equal(dsq_codec_layout_of(enc, c->rows, c->cols, group, &L, NULL), DSQ_OK);
        v[i] = (dsq_wview){.name = c->enc, .enc = enc, .rank = 2, .shape = {c->rows, c->cols}, .data = b[i].data,
                           .data_bytes = L.data_bytes, .scale = b[i].scales, .scale_bytes = L.scale_bytes,
                           .group = group};
        x[i] = malloc(sizeof(float) * c->cols);
        for (uint64_t j = 0; j < c->cols; j++) x[i][j] = ldexpf(rng_gauss(&g), (int)(j % 7) - 3);
    }
    /* (view, row0, n_rows): windows, a partial tile, an empty job, one row */
    static const struct { int v; uint64_t row0, n; } spec[] = {
        {0, 0, 300}, {1, 5, 32}, {2, 0, 17}, {0, 128, 0}, {3, 0, 1}, {4, 16, 128}, {0, 7, 93}, {1, 0, 37},
    };
    enum { NJ = sizeof spec / sizeof spec[0] };
    dsq__lin_job jobs[NJ];
    float *ref[NJ], *out[NJ];
    for (int j = 0; j < NJ; j++) {
        size_t n = spec[j].n ? spec[j].n : 1;
        ref[j] = malloc(sizeof(float) * n);
        out[j] = malloc(sizeof(float) * n);
        dsq__kern ks = {false, 1};
        if (spec[j].n)
            assert_int_equal(dsq__linear(&ks, &v[spec[j].v], spec[j].row0, spec[j].n, x[spec[j].v],
                                         v[spec[j].v].shape[1], 1, ref[j], spec[j].n, NULL),
                             DSQ_OK);
        jobs[j] = (dsq__lin_job){&v[spec[j].v], spec[j].row0, spec[j].n, x[spec[j].v], out[j]};
    }
    for (int vec = 0; vec < 2; vec++)
        for (int th = 1; th <= 4; th++) {
            dsq_err err = DSQ_ERR_INIT;
            dsq__run r = {.k = {vec && dsq__cpu_has_avx2(), th}, .err = &err};
            for (int j = 0; j < NJ; j++) memset(out[j], 0xff, sizeof(float) * (spec[j].n ? spec[j].n : 1));
            assert_int_equal(dsq__backend_cpu.linear1_multi(&r, jobs, NJ), DSQ_OK);
            for (int j = 0; j < NJ; j++)
                for (uint64_t i = 0; i < spec[j].n; i++)
                    if (memcmp(&out[j][i], &ref[j][i], sizeof(float)) != 0) {
                        fprintf(stderr, "job %d (%s rows %llu+%llu) %s threads %d: row %llu: multi %.9g, linear %.9g\n", j,
                                cases[spec[j].v].enc, (unsigned long long)spec[j].row0, (unsigned long long)spec[j].n,
                                vec ? "vector" : "scalar", th, (unsigned long long)i, out[j][i], ref[j][i]);
                        fail();
                    }
            dsq_err_clear(&err);
        }
    for (int j = 0; j < NJ; j++) free(ref[j]), free(out[j]);
    for (int i = 0; i < NC; i++) free(x[i]), qbuf_free(&b[i]);
}

static void test_fp4_without_vbmi(void **state) {
    if (!dsq__cpu_has_avx2()) skip();
    dsq__linear_fp4_vbmi(false);
    static const lcase cases[] = {{"mxfp4", 13, 64}, {"mxfp4", 136, 256}, {"mxfp4", 7, 96}, {"mxfp4", 24, 32}};
    rng g = {0x5eed1234};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], &g);
    test_multi_token_equals_scalar(state);
    test_fp4_scale_chunks(state);
    dsq__linear_fp4_vbmi(true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_equals_scalar),
        cmocka_unit_test(test_fp8_huge_scale_block),
        cmocka_unit_test(test_multi_token_equals_scalar),
        cmocka_unit_test(test_fp4_scale_chunks),
        cmocka_unit_test(test_fp8_prescaled_x),
        cmocka_unit_test(test_fp4_without_vbmi),
        cmocka_unit_test(test_linear1_multi_equals_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
