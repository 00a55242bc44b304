/* Activation quantization and simulation of the release numerics (spec §2.5, §5), Hadamard (§4.6). */
#include <math.h>

#include "codec_internal.h"

static float block_amax(const float *x, uint64_t n) {
    float m = 0.0f;
    for (uint64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > m) m = a; /* NaN compares false: ignored */
    }
    return m;
}

void dsq_act_fp8_quant(const float *x, uint64_t n, int block, uint8_t *codes, float *scales, uint8_t *scales_e8m0) {
    for (uint64_t b0 = 0, bi = 0; b0 < n; b0 += (uint64_t)block, bi++) {
        uint64_t len = n - b0 < (uint64_t)block ? n - b0 : (uint64_t)block;
        uint8_t e = dsq_fp8_scale_e8m0(block_amax(x + b0, len));
        float s = dsq_e8m0_to_f32(e), inv = 1.0f / s; /* powers of two: x·(1/s) = x/s exactly */
        if (scales) scales[bi] = s;
        if (scales_e8m0) scales_e8m0[bi] = e;
        if (codes)
            for (uint64_t i = 0; i < len; i++) codes[b0 + i] = dsq_e4m3_from_f32(x[b0 + i] * inv);
    }
}

void dsq_act_fp8_quant_values(const float *x, uint64_t n, int block, float *q, float *scales) {
    for (uint64_t b0 = 0, bi = 0; b0 < n; b0 += (uint64_t)block, bi++) {
        uint64_t len = n - b0 < (uint64_t)block ? n - b0 : (uint64_t)block;
        float s = dsq_e8m0_to_f32(dsq_fp8_scale_e8m0(block_amax(x + b0, len))), inv = 1.0f / s;
        if (scales) scales[bi] = s;
        for (uint64_t i = 0; i < len; i++) q[b0 + i] = dsq_e4m3_to_f32(dsq_e4m3_from_f32(x[b0 + i] * inv));
    }
}

void dsq_act_fp8_sim(float *x, uint64_t n, int block) {
    for (uint64_t b0 = 0; b0 < n; b0 += (uint64_t)block) {
        uint64_t len = n - b0 < (uint64_t)block ? n - b0 : (uint64_t)block;
        float s = dsq_e8m0_to_f32(dsq_fp8_scale_e8m0(block_amax(x + b0, len))), inv = 1.0f / s;
        for (uint64_t i = 0; i < len; i++)
            x[b0 + i] = dsq_bf16_round(dsq_e4m3_to_f32(dsq_e4m3_from_f32(x[b0 + i] * inv)) * s);
    }
}

void dsq_act_fp4_quant(const float *x, uint64_t n, int block, uint8_t *packed, uint8_t *scales_e8m0) {
    for (uint64_t i = 0; i < (n + 1) / 2; i++) packed[i] = 0;
    for (uint64_t b0 = 0, bi = 0; b0 < n; b0 += (uint64_t)block, bi++) {
        uint64_t len = n - b0 < (uint64_t)block ? n - b0 : (uint64_t)block;
        uint8_t e = dsq_fp4_scale_e8m0(block_amax(x + b0, len));
        float inv = 1.0f / dsq_e8m0_to_f32(e);
        if (scales_e8m0) scales_e8m0[bi] = e;
        for (uint64_t i = b0; i < b0 + len; i++)
            packed[i >> 1] |= (uint8_t)(dsq_e2m1_from_f32(x[i] * inv) << ((i & 1) * 4));
    }
}

void dsq_act_fp4_sim(float *x, uint64_t n, int block) {
    for (uint64_t b0 = 0; b0 < n; b0 += (uint64_t)block) {
        uint64_t len = n - b0 < (uint64_t)block ? n - b0 : (uint64_t)block;
        float s = dsq_e8m0_to_f32(dsq_fp4_scale_e8m0(block_amax(x + b0, len))), inv = 1.0f / s;
        for (uint64_t i = 0; i < len; i++)
            x[b0 + i] = dsq_bf16_round(dsq_e2m1_to_f32(dsq_e2m1_from_f32(x[b0 + i] * inv)) * s);
    }
}

void dsq_hadamard(float *x, uint64_t n) {
    /* in-place butterflies give the Sylvester order H[i][j] = (-1)^popcount(i & j) */
    for (uint64_t h = 1; h < n; h *= 2)
        for (uint64_t i = 0; i < n; i += 2 * h)
            for (uint64_t j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    float scale = (float)(1.0 / sqrt((double)n));
    for (uint64_t i = 0; i < n; i++) x[i] *= scale;
}
