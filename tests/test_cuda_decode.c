/* The cuda backend's element decoders (kernels/dsq_cuda_decode.h, the code its kernels run) against
 * lib/quant's decoder, bit for bit, for every float encoding, on a CPU: the part of the GPU path
 * that can be checked without a GPU.  Shapes with partial 128-row/128-column blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "../kernels/dsq_cuda_decode.h" /* also built without CUDA: plain C here */
#include "codec_util.h"
#include "dsq_numeric.h"

static void check_encoding(dsq_encoding enc, int group) {
    enum { ROWS = 130, COLS = 288 };
    char nm[32];
    dsq_codec_name(enc, group, nm, sizeof nm);
    dsq_qtensor_buf b;
    assert_int_equal(qbuf_alloc(&b, enc, ROWS, COLS, group), 0);
    float *x = malloc(sizeof(float) * ROWS * COLS), *ref = malloc(sizeof(float) * ROWS * COLS);
    rng r = {(uint64_t)enc * 977 + (uint64_t)group};
    fill_gauss(&r, x, (uint64_t)ROWS * COLS, 0.05f);
    for (int i = 0; i < 64; i++) x[rng_u64(&r) % (ROWS * COLS)] *= 40.0f; /* outliers: varied scales */
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_codec_encode(&b, x, 0, ROWS, NULL, &e), DSQ_OK);
    dsq_qtensor q = dsq_qtensor_view(&b);
    dsq_codec_options o = {.isa = DSQ_ISA_SCALAR};
    assert_int_equal(dsq_codec_decode(&q, 0, ROWS, ref, &o, &e), DSQ_OK);
    dsq_codec_layout L;
    assert_int_equal(dsq_codec_layout_of(enc, ROWS, COLS, group, &L, NULL), DSQ_OK);
    dsq_cuda_wlayout w;
    dsq_cu_layout_init(&w, (int)enc, ROWS, COLS, L.row_bytes, L.block_rows, L.block_cols, L.scale_cols, b.tensor_scale,
                       b.data, b.scales, b.mins);
    size_t diff = 0, nonzero = 0;
    for (uint64_t i = 0; i < ROWS; i++)
        for (uint64_t c = 0; c < COLS; c++) {
            float g = dsq_cu_decode(&w, i, c), h = ref[i * COLS + c];
            nonzero += h != 0.0f;
            if (dsq_f32_bits(g) != dsq_f32_bits(h)) {
                if (diff < 3)
                    printf("  %s [%llu, %llu]: cuda %a, lib/quant %a\n", nm, (unsigned long long)i,
                           (unsigned long long)c, g, h);
                diff++;
            }
        }
    /* the 16-column decoder of the GEMV fast path, where the layout allows it */
    size_t diff16 = 0;
    int nb = dsq_cu_bytes16((int)enc), vec = dsq_cu_vec16_ok(&w);
    if (vec)
        for (uint64_t i = 0; i < ROWS; i++)
            for (uint64_t c0 = 0; c0 < COLS; c0 += 16) {
                float v[16];
                dsq_cu_decode16(&w, i, c0, w.data + i * w.row_bytes + c0 / 16 * (uint64_t)nb, v);
                for (int k = 0; k < 16; k++)
                    diff16 += dsq_f32_bits(v[k]) != dsq_f32_bits(ref[i * COLS + c0 + (uint64_t)k]);
            }
    printf("  %-16s %zu of %d elements differ (%zu non-zero); 16-column path: %s, %zu differ\n", nm, diff, ROWS * COLS,
           nonzero, vec ? "yes" : "no", diff16);
    assert_int_equal(diff16, 0);
    assert_int_equal(diff, 0);
    assert_true(nonzero > ROWS * COLS / 4); /* the data is not trivially zero */
    qbuf_free(&b);
    free(x);
    free(ref);
}

static void test_every_float_encoding(void **state) {
    (void)state;
    static const struct {
        dsq_encoding enc;
        int group;
    } cases[] = {
        {DSQ_ENC_F32, 0},          {DSQ_ENC_F16, 0},          {DSQ_ENC_BF16, 0},         {DSQ_ENC_FP8_B128, 0},
        {DSQ_ENC_FP8_B128_F32, 0}, {DSQ_ENC_FP8_R128, 0},     {DSQ_ENC_FP8_ROW, 0},      {DSQ_ENC_MXFP4, 0},
        {DSQ_ENC_NVFP4, 0},        {DSQ_ENC_INT8_ROW, 0},     {DSQ_ENC_INT8_G, 32},      {DSQ_ENC_INT4_G, 32},
        {DSQ_ENC_INT4_G_ASYM, 32}, {DSQ_ENC_INT2_G_ASYM, 16}, {DSQ_ENC_FP8_R128_F32, 0}, {DSQ_ENC_FP8_ROW_E8M0, 0},
        {DSQ_ENC_INT8_G, 128},     {DSQ_ENC_INT4_G, 64},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_encoding(cases[i].enc, cases[i].group);
}

/* Every e4m3, e8m0 and e2m1 code and every f16 bit pattern decodes to the host decoders' value. */
static void test_scalar_formats_exhaustive(void **state) {
    (void)state;
    for (int b = 0; b < 256; b++) {
        float a = dsq_cu_e4m3((uint8_t)b), h = dsq_e4m3_to_f32((uint8_t)b);
        if (dsq_e4m3_is_nan((uint8_t)b))
            assert_true(a != a && h != h);
        else
            assert_int_equal(dsq_f32_bits(a), dsq_f32_bits(h));
        a = dsq_cu_e8m0((uint8_t)b), h = dsq_e8m0_to_f32((uint8_t)b);
        if (b == 255)
            assert_true(a != a && h != h);
        else
            assert_int_equal(dsq_f32_bits(a), dsq_f32_bits(h));
    }
    for (uint32_t n = 0; n < 16; n++)
        assert_int_equal(dsq_f32_bits(dsq_cu_e2m1(n)), dsq_f32_bits(dsq_e2m1_to_f32((uint8_t)n)));
    for (uint32_t u = 0; u < 65536; u++) {
        float a = dsq_cu_f16((uint16_t)u), h = dsq_f16_to_f32((uint16_t)u);
        if (h != h)
            assert_true(a != a);
        else
            assert_int_equal(dsq_f32_bits(a), dsq_f32_bits(h));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalar_formats_exhaustive),
        cmocka_unit_test(test_every_float_encoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
