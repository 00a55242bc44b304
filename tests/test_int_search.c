/* The integer scale search's two implementations give the same bits: F16C rounding equals the
 * software F16 rounding at every rounding boundary, the eight-groups-at-once AVX2 search equals the
 * scalar search on random and pathological groups, and whole encodes agree on shapes that mix the
 * eight-group path with single groups and short tail groups. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "codec_internal.h"
#include "codec_util.h"

static bool have_avx2(void) { return dsq_codec_best_isa() == DSQ_ISA_AVX2; }

static uint32_t bits(float f) { return dsq_f32_bits(f); }

/* Every finite F16 value h, the f32 midpoint to its successor (an exact tie) and the f32 neighbours
 * of both: every place where round-to-nearest-even can decide differently; plus saturation, Inf, NaN. */
static void test_f16r_boundaries(void **state) {
    (void)state;
    if (!have_avx2()) {
        fprintf(stderr, "test_f16r_boundaries: no AVX2/F16C on this CPU: the F16C path is never used here\n");
        return;
    }
    enum { BUF = 8 };
    float in[BUF], out[BUF];
    int fill = 0;
    uint64_t checked = 0;
#define CHECK(v)                                                                                                       \
    do {                                                                                                               \
        in[fill++] = (v);                                                                                              \
        if (fill == BUF) {                                                                                             \
            dsq__f16r8_avx2(in, out);                                                                                  \
            for (int j = 0; j < BUF; j++) {                                                                            \
                float want = dsq__f16r(in[j]);                                                                         \
                if (bits(out[j]) != bits(want) && !(want != want && out[j] != out[j]))                               \
                    fail_msg("f16 rounding of %a (0x%08x): F16C %a, software %a", (double)in[j], bits(in[j]),          \
                             (double)out[j], (double)want);                                                            \
            }                                                                                                          \
            checked += BUF, fill = 0;                                                                                  \
        }                                                                                                              \
    } while (0)
    for (uint32_t h = 0; h < 0x7c00; h++) { /* positive finite f16, zero and subnormals included */
        for (int sgn = 0; sgn < 2; sgn++) {
            float a = dsq_f16_to_f32((uint16_t)(h | (sgn << 15)));
            float b = dsq_f16_to_f32((uint16_t)((h + 1) | (sgn << 15))); /* 0x7c00: Inf */
            float mid = h + 1 < 0x7c00 ? 0.5f * (a + b) : (sgn ? -65520.0f : 65520.0f); /* exact in f32 */
            CHECK(a);
            CHECK(nextafterf(a, 0.0f));
            CHECK(nextafterf(a, sgn ? -INFINITY : INFINITY));
            CHECK(mid);
            CHECK(nextafterf(mid, 0.0f));
            CHECK(nextafterf(mid, sgn ? -INFINITY : INFINITY));
        }
    }
    /* below the smallest subnormal's half, saturation, specials */
    const float extra[] = {0x1p-25f, 0x1.000002p-25f, 0x1.fffffep-26f, 0x1p-30f, 1e-40f, 65504.0f, 65519.99f, 65520.0f,
                           1e5f, 3e38f, INFINITY, -INFINITY, NAN, -NAN, 0.0f, -0.0f};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        CHECK(extra[i]);
        CHECK(-extra[i]);
    }
    rng g = {4242};
    for (int i = 0; i < 200000; i++) CHECK(dsq_bits_f32((uint32_t)rng_u64(&g)));
    while (fill) CHECK(1.0f);
#undef CHECK
    assert_true(checked > 6 * 0x7c00 * 2);
}

static void search_both(const float *groups, int n, const dsq__int_spec *sp, const char *what) {
    float *xt = dsq_malloc_aligned(sizeof(float) * 8 * (size_t)n);
    assert_non_null(xt);
    const float *p[8];
    for (int j = 0; j < 8; j++) p[j] = groups + (size_t)j * (size_t)n;
    dsq__transpose8_avx2(p, n, xt);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 8; j++) assert_true(bits(xt[8 * i + j]) == bits(p[j][i]));
    float s8[8], m8[8];
    dsq__int_search8_avx2(xt, n, sp, s8, m8);
    for (int j = 0; j < 8; j++) {
        float s, m;
        dsq__int_search_scalar(p[j], n, sp, &s, &m);
        if (bits(s) != bits(s8[j]) || bits(m) != bits(m8[j]))
            fail_msg("%s, n %d, qmin %d qmax %d asym %d, lane %d: AVX2 (%a, %a), scalar (%a, %a)", what, n, sp->qmin,
                     sp->qmax, sp->asym, j, (double)s8[j], (double)m8[j], (double)s, (double)m);
        /* the chosen scale is an F16 value, positive unless the group needs none */
        assert_true(s >= 0.0f && dsq__f16r(s) == s && dsq__f16r(m) == m);
    }
    dsq_free_aligned(xt);
}

static void test_search8_equals_scalar(void **state) {
    (void)state;
    if (!have_avx2()) {
        fprintf(stderr, "test_search8_equals_scalar: no AVX2 on this CPU\n");
        return;
    }
    const dsq__int_spec specs[] = {{-8, 7, false}, {-127, 127, false}, {0, 15, true}, {0, 3, true}};
    const int lens[] = {8, 32, 64, 128, 256};
    rng g = {99};
    float *x = malloc(sizeof(float) * 8 * 256);
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            int n = lens[li];
            for (int trial = 0; trial < 40; trial++) {
                for (int j = 0; j < 8; j++) {
                    float *gx = x + j * n;
                    int kind = (trial * 8 + j) % 12;
                    float sc = ldexpf(1.0f, (int)(rng_u64(&g) % 40) - 30);
                    for (int i = 0; i < n; i++) gx[i] = sc * rng_gauss(&g);
                    switch (kind) {
                    case 0: for (int i = 0; i < n; i++) gx[i] = 0.0f; break;               /* all zero */
                    case 1: for (int i = 0; i < n; i++) gx[i] = (i & 1) ? -0.0f : 0.0f; break; /* signed zeros */
                    case 2: for (int i = 0; i < n; i++) gx[i] = -0.0f; break;
                    case 3: for (int i = 0; i < n; i++) gx[i] = 0.37f; break;             /* constant */
                    case 4: gx[n / 3] = -8.0f * fabsf(gx[n / 3]) - sc; break;             /* negative extreme */
                    case 5: gx[n / 2] = 3e38f, gx[0] = -3e38f; break;                     /* overflowing errors */
                    case 6: for (int i = 0; i < n; i++) gx[i] = ldexpf(gx[i], -120); break; /* f32 denormals */
                    case 7: for (int i = 0; i < n; i++) gx[i] = fabsf(gx[i]) + 1000.0f; break; /* offset */
                    case 8: for (int i = 0; i < n; i++) gx[i] = ldexpf(gx[i], 60); break;  /* beyond F16 range */
                    case 9: for (int i = 0; i < n; i++) gx[i] = (float)((int)(rng_u64(&g) % 16) - 8); break;
                    default: break; /* plain Gaussian */
                    }
                }
                search_both(x, n, &specs[si], "random/pathological groups");
            }
        }
    free(x);
}

/* Whole encodes: AVX2 == scalar bytes on shapes mixing the eight-group path (within and across
 * rows), leftover groups and short tail groups, with special rows. */
static void test_encode_twins_special_rows(void **state) {
    (void)state;
    if (!have_avx2()) {
        fprintf(stderr, "test_encode_twins_special_rows: no AVX2 on this CPU\n");
        return;
    }
    const char *encs[] = {"int4-g32", "int4-g64", "int4-g128", "int4-g32-asym", "int2-g32-asym", "int8-g128", "int8-row"};
    const uint64_t shapes[][2] = {{9, 4096}, {13, 96}, {11, 200}, {1, 64}};
    rng g = {5};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        uint64_t R = shapes[s][0], C = shapes[s][1];
        float *x = malloc(sizeof(float) * R * C);
        fill_gauss(&g, x, R * C, 0.02f);
        if (R > 3) {
            for (uint64_t c = 0; c < C; c++) x[1 * C + c] = 0.0f, x[2 * C + c] = -1.5f; /* zero row, constant row */
            x[3 * C + 5] = NAN, x[3 * C + 6] = INFINITY, x[3 * C + 7] = -INFINITY;
        }
        for (size_t i = 0; i < sizeof encs / sizeof encs[0]; i++) {
            dsq_encoding enc;
            int group;
            assert_int_equal(dsq_codec_parse(encs[i], &enc, &group, NULL), DSQ_OK);
            dsq_qtensor_buf a, b;
            assert_int_equal(qbuf_alloc(&a, enc, R, C, group), 0);
            assert_int_equal(qbuf_alloc(&b, enc, R, C, group), 0);
            dsq_codec_options oa = {.isa = DSQ_ISA_SCALAR, .allow_nonfinite = true};
            dsq_codec_options ob = {.isa = DSQ_ISA_AVX2, .allow_nonfinite = true};
            assert_int_equal(dsq_codec_encode(&a, x, 0, R, &oa, NULL), DSQ_OK);
            assert_int_equal(dsq_codec_encode(&b, x, 0, R, &ob, NULL), DSQ_OK);
            dsq_codec_layout L;
            dsq_codec_layout_of(enc, R, C, group, &L, NULL);
            assert_memory_equal(a.data, b.data, L.data_bytes);
            assert_memory_equal(a.scales, b.scales, L.scale_bytes);
            if (L.min_bytes) assert_memory_equal(a.mins, b.mins, L.min_bytes);
            qbuf_free(&a);
            qbuf_free(&b);
        }
        free(x);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16r_boundaries),
        cmocka_unit_test(test_search8_equals_scalar),
        cmocka_unit_test(test_encode_twins_special_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
