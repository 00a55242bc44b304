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

/* ---- FP8 e4m3fn ---- */
static inline float dsq_e4m3_to_f32(uint8_t b) { return dsq_e4m3_lut[b]; }
/* f32 → e4m3fn, RNE, saturating to ±448 (the reference clamps first); NaN → 0x7F.
 * Values that round to zero keep their sign. */
static inline uint8_t dsq_e4m3_from_f32(float x) {
    if (x != x) return 0x7f;
    uint8_t sign = (dsq_f32_bits(x) >> 31) ? 0x80 : 0;
    float a = fabsf(x);
    if (a > DSQ_E4M3_MAX) a = DSQ_E4M3_MAX;
    if (a < 0x1p-6f) { /* subnormal range: multiples of 2^-9 */
        int q = (int)rintf(a * 0x1p9f); /* 0..8, q == 8 is the min normal, code 0x08 */
        return (uint8_t)(sign | q);
    }
    int e;
    frexpf(a, &e); /* a = f · 2^e, f in [0.5, 1) → floor(log2 a) = e - 1 */
    e -= 1;
    int q = (int)rintf(ldexpf(a, 3 - e)); /* in [8, 16] */
    if (q == 16) {
        q = 8;
        e += 1;
    }
    return (uint8_t)(sign | ((e + 7) << 3) | (q - 8));
}

/* ---- UE8M0 ---- */
static inline float dsq_e8m0_to_f32(uint8_t b) { return ldexpf(1.0f, (int)b - 127); } /* 255 is NaN: check first */
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
/* f32 → e2m1 nibble: clamp to [-6, 6], RNE on {0,.5,1,1.5,2,3,4,6}, ties to the even code. */
static inline uint8_t dsq_e2m1_from_f32(float x) {
    uint8_t sign = (dsq_f32_bits(x) >> 31) ? 8 : 0;
    float a = fabsf(x);
    if (x != x) a = 0;
    uint8_t c;
    /* midpoints: .25 .75 1.25 1.75 2.5 3.5 5; at a tie choose the even code */
    if (a < 0.25f) c = 0;
    else if (a == 0.25f) c = 0;
    else if (a < 0.75f) c = 1;
    else if (a == 0.75f) c = 2;
    else if (a < 1.25f) c = 2;
    else if (a == 1.25f) c = 2;
    else if (a < 1.75f) c = 3;
    else if (a == 1.75f) c = 4;
    else if (a < 2.5f) c = 4;
    else if (a == 2.5f) c = 4;
    else if (a < 3.5f) c = 5;
    else if (a == 3.5f) c = 6;
    else if (a < 5.0f) c = 6;
    else if (a == 5.0f) c = 6;
    else c = 7;
    return (uint8_t)(sign | c);
}

#endif
