/* Scalar number formats of DeepSeek-V4 checkpoints (spec §2): bf16, FP8 e4m3fn, UE8M0, FP4 e2m1,
 * and the power-of-two scale rule of dynamic activation quantization (spec §2.5).
 * All conversions are round-to-nearest-even.  Header-only hot paths; tables in numeric.c. */
#ifndef DSQ_NUMERIC_H
#define DSQ_NUMERIC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

enum { DSQ_FP8_BLOCK = 128, DSQ_FP4_BLOCK = 32, DSQ_KV_FP8_BLOCK = 64 };
#define DSQ_E4M3_MAX 448.0f
#define DSQ_E2M1_MAX 6.0f

/* [256] e4m3fn byte → float; 0x7F/0xFF → NaN. */
extern const float dsq_e4m3_lut[256];
/* [16] e2m1 nibble → float (bit 3 = sign). */
extern const float dsq_e2m1_lut[16];

static inline uint32_t dsq_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float dsq_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- bf16 ---- */
static inline uint16_t dsq_bf16_from_f32(float f) {
    uint32_t u = dsq_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float dsq_bf16_to_f32(uint16_t h) { return dsq_bits_f32((uint32_t)h << 16); }
/* Round a float to the nearest bf16 value, returned as float. */
static inline float dsq_bf16_round(float f) { return dsq_bf16_to_f32(dsq_bf16_from_f32(f)); }

/* ---- IEEE binary16 (F16) ---- */
/* f32 → f16, RNE; overflow → ±Inf (values ≥ 65520 in magnitude), NaN → quiet NaN, subnormals kept. */
static inline uint16_t dsq_f16_from_f32(float f) {
    uint32_t u = dsq_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* ≥ 65520 rounds past 65504 */
    if (a >= 0x38800000u) {                                   /* normal: ≥ 2^-14 */
        uint32_t r = (a + 0xfffu + ((a >> 13) & 1u)) >> 13;  /* carry may bump the exponent */
        return (uint16_t)(sign | (r - (112u << 10)));
    }
    /* subnormal: multiples of 2^-24; x·2^24 < 2^10 is exact and the magic add rounds it RNE */
    float q = (dsq_bits_f32(a) * 0x1p24f + 0x1p23f) - 0x1p23f;
    return (uint16_t)(sign | (uint16_t)q);
}
static inline float dsq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    if (e == 31) return dsq_bits_f32(sign | 0x7f800000u | (m << 13));
    return dsq_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}
/* Largest finite f16. */
#define DSQ_F16_MAX 65504.0f

/* ---- FP8 e4m3fn ---- */
static inline float dsq_e4m3_to_f32(uint8_t b) { return dsq_e4m3_lut[b]; }
static inline int dsq_e4m3_is_nan(uint8_t b) { return (b & 0x7f) == 0x7f; }
/* f32 → e4m3fn, RNE, saturating to ±448 (the reference clamps first); NaN → 0x7F.
 * Values that round to zero keep their sign. */
static inline uint8_t dsq_e4m3_from_f32(float x) {
    uint32_t u = dsq_f32_bits(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7f;
    if (a > 0x43e00000u) a = 0x43e00000u; /* clamp to 448 (Inf included) */
    if (a < 0x3c800000u) {                /* below 2^-6: subnormal grid of 2^-9, RNE via magic add */
        float q = (dsq_bits_f32(a) * 0x1p9f + 0x1p23f) - 0x1p23f; /* 0..8; 8 = min normal 0x08 */
        return (uint8_t)(sign | (uint8_t)q);
    }
    /* keep 3 mantissa bits, RNE; a carry moves into the exponent field by itself */
    uint32_t r = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20;
    return (uint8_t)(sign | (uint8_t)(r - (120u << 3)));
}

/* ---- UE8M0 ---- */
/* 2^(b-127); byte 255 is NaN. */
static inline float dsq_e8m0_to_f32(uint8_t b) {
    if (b == 0) return 0x1p-127f;
    if (b == 0xff) return NAN;
    return dsq_bits_f32((uint32_t)b << 23);
}
static inline int dsq_e8m0_is_nan(uint8_t b) { return b == 0xff; }

/* Smallest power of two ≥ t (t > 0, finite, normal), as a UE8M0 byte: spec §2.5. */
static inline uint8_t dsq_e8m0_ceil_pow2(float t) {
    uint32_t u = dsq_f32_bits(t);
    uint32_t E = (u >> 23) & 0xff, M = u & 0x7fffff;
    return (uint8_t)(E + (M != 0));
}
/* Scale byte for an FP8 activation/weight block with maximum |x| = amax (spec §2.5/§2.6). */
static inline uint8_t dsq_fp8_scale_e8m0(float amax) {
    if (amax < 1e-4f) amax = 1e-4f;
    return dsq_e8m0_ceil_pow2(amax * (1.0f / 448.0f));
}
/* Scale byte for an FP4 block (floor 6·2^-126). */
static inline uint8_t dsq_fp4_scale_e8m0(float amax) {
    const float floor_ = 6.0f * 0x1p-126f;
    if (amax < floor_) amax = floor_;
    return dsq_e8m0_ceil_pow2(amax * (1.0f / 6.0f));
}

/* ---- FP4 e2m1 ---- */
static inline float dsq_e2m1_to_f32(uint8_t nib) { return dsq_e2m1_lut[nib & 15]; }
/* f32 → e2m1 nibble: clamp to [-6, 6], RNE on {0,.5,1,1.5,2,3,4,6}, ties to the even code.
 * The code counts the midpoints below |x|: ties at .25 1.25 2.5 5 go down (strict >), ties at
 * .75 1.75 3.5 go up (≥), which is "to the even code".  NaN gives ±0. */
static inline uint8_t dsq_e2m1_from_f32(float x) {
    uint8_t sign = (dsq_f32_bits(x) >> 31) ? 8 : 0;
    float a = fabsf(x);
    int c = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f);
    return (uint8_t)(sign | c);
}

#endif
