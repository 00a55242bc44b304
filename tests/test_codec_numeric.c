/* Scalar number formats (lib/quant/dsq_numeric.h) against brute-force references and, for F16,
 * the F16C hardware conversion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "codec_util.h"

/* Reference e4m3 RNE: nearest finite magnitude, ties to the even code, clamp to 448, sign kept. */
static uint8_t e4m3_ref(float x) {
    if (x != x) return 0x7f;
    uint8_t sign = signbit(x) ? 0x80 : 0;
    double a = fabs((double)x);
    if (a > 448) a = 448;
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c <= 0x7e; c++) {
        double d = fabs(a - (double)dsq_e4m3_lut[c]);
        if (d < bd || (d == bd && (c & 1) == 0)) bd = d, best = c;
    }
    return (uint8_t)(sign | best);
}

static void test_e4m3_table(void **state) {
    (void)state;
    for (int b = 0; b < 256; b++) {
        int e = (b >> 3) & 15, m = b & 7;
        float v = e == 0 ? (float)m * 0x1p-9f : ldexpf(1.0f + m / 8.0f, e - 7);
        if (b & 0x80) v = -v;
        if ((b & 0x7f) == 0x7f) {
            assert_true(isnan(dsq_e4m3_to_f32((uint8_t)b)));
            assert_true(dsq_e4m3_is_nan((uint8_t)b));
            continue;
        }
        assert_true(dsq_e4m3_to_f32((uint8_t)b) == v);
        assert_int_equal(signbit(dsq_e4m3_to_f32((uint8_t)b)) != 0, (b & 0x80) != 0);
        /* every finite code round-trips */
        assert_int_equal(dsq_e4m3_from_f32(v), b);
    }
    assert_true(dsq_e4m3_to_f32(0x7e) == 448.0f);
}

static void test_e4m3_encode_rne(void **state) {
    (void)state;
    /* all midpoints between neighbouring codes, and their neighbours one f32 ulp away */
    for (int c = 0; c < 0x7e; c++) {
        float lo = dsq_e4m3_lut[c], hi = dsq_e4m3_lut[c + 1];
        float mid = (float)(((double)lo + (double)hi) / 2);
        float probes[3] = {mid, nextafterf(mid, 0), nextafterf(mid, 1000)};
        for (int k = 0; k < 3; k++) {
            assert_int_equal(dsq_e4m3_from_f32(probes[k]), e4m3_ref(probes[k]));
            assert_int_equal(dsq_e4m3_from_f32(-probes[k]), e4m3_ref(-probes[k]));
        }
    }
    rng r = {1};
    for (int i = 0; i < 200000; i++) {
        float x = ldexpf((float)rng_unit(&r) * 2 - 1, (int)(rng_u64(&r) % 40) - 20);
        assert_int_equal(dsq_e4m3_from_f32(x), e4m3_ref(x));
    }
    /* saturation, signed zero, NaN, Inf, denormal f32 input */
    assert_int_equal(dsq_e4m3_from_f32(1e30f), 0x7e);
    assert_int_equal(dsq_e4m3_from_f32(-1e30f), 0xfe);
    assert_int_equal(dsq_e4m3_from_f32(INFINITY), 0x7e);
    assert_int_equal(dsq_e4m3_from_f32(-INFINITY), 0xfe);
    assert_int_equal(dsq_e4m3_from_f32(464.0f), 0x7e);
    assert_int_equal(dsq_e4m3_from_f32(NAN), 0x7f);
    assert_int_equal(dsq_e4m3_from_f32(-1e-30f), 0x80);
    assert_int_equal(dsq_e4m3_from_f32(1e-40f), 0x00);
    assert_int_equal(dsq_e4m3_from_f32(0x1p-10f), 0x00);              /* tie → even (0) */
    assert_int_equal(dsq_e4m3_from_f32(3 * 0x1p-10f), 0x02);          /* tie 1.5 → 2 */
    assert_int_equal(dsq_e4m3_from_f32(0x1p-6f - 0x1p-10f), 0x08);    /* rounds up into the normals */
}

static void test_e8m0(void **state) {
    (void)state;
    assert_true(dsq_e8m0_to_f32(127) == 1.0f);
    assert_true(dsq_e8m0_to_f32(0) == 0x1p-127f);
    assert_true(dsq_e8m0_to_f32(254) == 0x1p127f);
    assert_true(isnan(dsq_e8m0_to_f32(255)));
    for (int b = 1; b < 255; b++) assert_true(dsq_e8m0_to_f32((uint8_t)b) == ldexpf(1.0f, b - 127));
    /* ceil to a power of two */
    assert_int_equal(dsq_e8m0_ceil_pow2(1.0f), 127);
    assert_int_equal(dsq_e8m0_ceil_pow2(nextafterf(1.0f, 2)), 128);
    assert_int_equal(dsq_e8m0_ceil_pow2(0.75f), 127);
    /* spec §2.5 scale rules */
    assert_int_equal(dsq_fp8_scale_e8m0(448.0f), 127);
    assert_int_equal(dsq_fp8_scale_e8m0(449.0f), 128);
    assert_int_equal(dsq_fp8_scale_e8m0(0.0f), dsq_e8m0_ceil_pow2(1e-4f * (1.0f / 448.0f)));
    assert_int_equal(dsq_fp4_scale_e8m0(6.0f), 127);
    assert_int_equal(dsq_fp4_scale_e8m0(0.0f), dsq_e8m0_ceil_pow2(6.0f * 0x1p-126f * (1.0f / 6.0f)));
}

static void test_e2m1(void **state) {
    (void)state;
    const float mags[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (int c = 0; c < 16; c++) {
        float v = (c & 8) ? -mags[c & 7] : mags[c & 7];
        assert_true(dsq_e2m1_to_f32((uint8_t)c) == v);
        assert_int_equal(dsq_e2m1_from_f32(v), c);
    }
    /* spec §2.3 ties */
    const float ties[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    const int want[7] = {0, 2, 2, 4, 4, 6, 6};
    for (int i = 0; i < 7; i++) {
        assert_int_equal(dsq_e2m1_from_f32(ties[i]), want[i]);
        assert_int_equal(dsq_e2m1_from_f32(-ties[i]), want[i] | 8);
    }
    /* everything else against the brute-force nearest magnitude (ties to the even code) */
    rng r = {3};
    for (int i = 0; i < 100000; i++) {
        float x = (float)(rng_unit(&r) * 16 - 8);
        if (i < 14) x = nextafterf(ties[i / 2], i & 1 ? 0.0f : 10.0f);
        double a = fabs((double)x) > 6 ? 6 : fabs((double)x), bd = INFINITY;
        int best = 0;
        for (int c = 0; c < 8; c++) {
            double d = fabs(a - mags[c]);
            if (d < bd || (d == bd && (c & 1) == 0)) bd = d, best = c;
        }
        assert_int_equal(dsq_e2m1_from_f32(x), best | (signbit(x) ? 8 : 0));
    }
    assert_int_equal(dsq_e2m1_from_f32(100.0f), 7);
    assert_int_equal(dsq_e2m1_from_f32(-100.0f), 15);
    assert_int_equal(dsq_e2m1_from_f32(-0.1f), 8);
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t f16_hw(float f) {
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}
__attribute__((target("f16c"))) static float f16_hw_to(uint16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
static bool have_f16c(void) { return __builtin_cpu_supports("f16c"); }
#else /* the hardware cross-check is x86-only */
static uint16_t f16_hw(float f) { return dsq_f16_from_f32(f); }
static float f16_hw_to(uint16_t h) { return dsq_f16_to_f32(h); }
static bool have_f16c(void) { return false; }
#endif

static void test_f16(void **state) {
    (void)state;
    bool hw = have_f16c();
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dsq_f16_to_f32((uint16_t)h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            continue;
        }
        assert_int_equal(dsq_f16_from_f32(f), h);
        if (hw) assert_true(memcmp(&f, &(float){f16_hw_to((uint16_t)h)}, 4) == 0);
    }
    rng r = {7};
    for (int i = 0; i < 300000; i++) {
        float x = ldexpf((float)rng_unit(&r) * 2 - 1, (int)(rng_u64(&r) % 50) - 30);
        uint16_t h = dsq_f16_from_f32(x);
        if (hw) assert_int_equal(h, f16_hw(x));
        /* RNE: no other half is closer */
        double d = fabs((double)dsq_f16_to_f32(h) - x);
        if (fabs(x) < 65504) {
            uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
            if ((up & 0x7c00) != 0x7c00) assert_true(d <= fabs((double)dsq_f16_to_f32(up) - x));
            if (h & 0x7fff) assert_true(d <= fabs((double)dsq_f16_to_f32(dn) - x));
        }
    }
    assert_int_equal(dsq_f16_from_f32(65504.0f), 0x7bff);
    assert_int_equal(dsq_f16_from_f32(65519.0f), 0x7bff);
    assert_int_equal(dsq_f16_from_f32(65520.0f), 0x7c00);
    assert_int_equal(dsq_f16_from_f32(-INFINITY), 0xfc00);
    assert_int_equal(dsq_f16_from_f32(0x1p-25f), 0x0000);  /* tie → even */
    assert_int_equal(dsq_f16_from_f32(0x1p-24f), 0x0001);
}

static void test_bf16(void **state) {
    (void)state;
    assert_int_equal(dsq_bf16_from_f32(1.0f), 0x3f80);
    assert_int_equal(dsq_bf16_from_f32(dsq_bits_f32(0x3f808000u)), 0x3f80); /* tie → even */
    assert_int_equal(dsq_bf16_from_f32(dsq_bits_f32(0x3f818000u)), 0x3f82);
    assert_int_equal(dsq_bf16_from_f32(dsq_bits_f32(0x3f808001u)), 0x3f81);
    assert_true(isnan(dsq_bf16_to_f32(dsq_bf16_from_f32(NAN))));
    assert_int_equal(dsq_bf16_from_f32(-0.0f), 0x8000);
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue;
        assert_int_equal(dsq_bf16_from_f32(dsq_bf16_to_f32((uint16_t)h)), h);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e4m3_table), cmocka_unit_test(test_e4m3_encode_rne), cmocka_unit_test(test_e8m0),
        cmocka_unit_test(test_e2m1),       cmocka_unit_test(test_f16),             cmocka_unit_test(test_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
