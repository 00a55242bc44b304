/* Element decoders of the cuda backend, written in the common subset of C11 and CUDA C++ so that the
 * kernels (kernels/cuda_backend.cu, as __host__ __device__ functions) and a CPU test
 * (tests/test_cuda_decode.c, compared bit for bit with lib/quant's decoders for every encoding) run the
 * same code.  Layouts: lib/quant/dsq_codec.h; encoding numbers: lib/format/dsq_encoding.h. */
#ifndef DSQ_CUDA_DECODE_H
#define DSQ_CUDA_DECODE_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define DSQ_HD static __host__ __device__ __forceinline__
#else
#define DSQ_HD static inline
#endif

/* dsq_encoding values (on-disk numbers, never renumbered). */
enum {
    DSQ_CU_F32 = 1,
    DSQ_CU_F16 = 2,
    DSQ_CU_BF16 = 3,
    DSQ_CU_FP8_B128 = 4,
    DSQ_CU_FP8_B128_F32 = 5,
    DSQ_CU_FP8_R128 = 6,
    DSQ_CU_FP8_ROW = 7,
    DSQ_CU_MXFP4 = 8,
    DSQ_CU_NVFP4 = 9,
    DSQ_CU_INT8_ROW = 10,
    DSQ_CU_INT8_G = 11,
    DSQ_CU_INT4_G = 12,
    DSQ_CU_INT4_G_ASYM = 13,
    DSQ_CU_INT2_G_ASYM = 16,
    DSQ_CU_FP8_R128_F32 = 17,
    DSQ_CU_FP8_ROW_E8M0 = 18,
};

/* A weight as the kernels index it (device pointers in the kernels, host pointers in the test). */
typedef struct dsq_cuda_wlayout {
    int enc;
    uint64_t rows, cols, row_bytes;
    uint64_t brows, bcols, scale_cols; /* scale block (≥ 1 each); scales per scale row */
    float tensor_scale;                /* NVFP4 */
    const uint8_t *data, *scales, *mins;
} dsq_cuda_wlayout;

/* Fill w from a stored layout (dsq_codec_layout_of: block_rows/block_cols 0 when there are no scales). */
DSQ_HD void dsq_cu_layout_init(dsq_cuda_wlayout *w, int enc, uint64_t rows, uint64_t cols, uint64_t row_bytes,
                               uint64_t block_rows, uint64_t block_cols, uint64_t scale_cols, float tensor_scale,
                               const uint8_t *data, const uint8_t *scales, const uint8_t *mins) {
    w->enc = enc;
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = row_bytes;
    w->brows = block_rows ? block_rows : 1;
    w->bcols = block_cols ? block_cols : (cols ? cols : 1);
    w->scale_cols = scale_cols;
    w->tensor_scale = tensor_scale;
    w->data = data;
    w->scales = scales;
    w->mins = mins;
}

DSQ_HD float dsq_cu_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
DSQ_HD uint16_t dsq_cu_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
DSQ_HD float dsq_cu_e8m0(uint8_t b) {
    if (b == 0) return dsq_cu_bits_f32(0x00400000u); /* 2^-127 */
    if (b == 0xff) return dsq_cu_bits_f32(0x7fc00000u);
    return dsq_cu_bits_f32((uint32_t)b << 23);
}
DSQ_HD float dsq_cu_e4m3(uint8_t b) {
    uint32_t s = (uint32_t)(b & 0x80u) << 24, e = (b >> 3) & 15u, m = b & 7u;
    if (e == 15 && m == 7) return dsq_cu_bits_f32(s | 0x7fc00000u);
    if (e == 0) {
        float v = (float)m * 0.001953125f; /* m · 2^-9 */
        return s ? -v : v;
    }
    return dsq_cu_bits_f32(s | ((e + 120u) << 23) | (m << 20));
}
DSQ_HD float dsq_cu_e2m1(uint32_t nib) {
    /* {0, .5, 1, 1.5, 2, 3, 4, 6}: exponent/mantissa of e2m1 */
    uint32_t e = (nib >> 1) & 3u, m = nib & 1u;
    float v = e == 0 ? 0.5f * (float)m : (float)(1u << (e - 1)) * (1.0f + 0.5f * (float)m);
    return (nib & 8u) ? -v : v;
}
DSQ_HD float dsq_cu_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-08f; /* m · 2^-24 */
        return sign ? -v : v;
    }
    if (e == 31) return dsq_cu_bits_f32(sign | 0x7f800000u | (m << 13));
    return dsq_cu_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

DSQ_HD uint64_t dsq_cu_scale_index(const dsq_cuda_wlayout *w, uint64_t r, uint64_t c) {
    return (r / w->brows) * w->scale_cols + c / w->bcols;
}

DSQ_HD float dsq_cu_scale(const dsq_cuda_wlayout *w, uint64_t r, uint64_t c) {
    uint64_t i = dsq_cu_scale_index(w, r, c);
    switch (w->enc) {
    case DSQ_CU_FP8_B128:
    case DSQ_CU_FP8_R128:
    case DSQ_CU_MXFP4:
    case DSQ_CU_FP8_ROW_E8M0:
        return dsq_cu_e8m0(w->scales[i]);
    case DSQ_CU_FP8_B128_F32:
    case DSQ_CU_FP8_ROW:
    case DSQ_CU_FP8_R128_F32: {
        float f;
        memcpy(&f, w->scales + 4 * i, 4);
        return f;
    }
    case DSQ_CU_NVFP4:
        return dsq_cu_e4m3(w->scales[i]) * w->tensor_scale;
    default:
        return dsq_cu_f16(dsq_cu_u16(w->scales + 2 * i)); /* the integer encodings */
    }
}

DSQ_HD uint32_t dsq_cu_nib(const uint8_t *row, uint64_t c) { return (uint32_t)(row[c >> 1] >> ((c & 1) * 4)) & 15u; }

/* W[r][c] as f32, the value lib/quant's decoders give. */
DSQ_HD float dsq_cu_decode(const dsq_cuda_wlayout *w, uint64_t r, uint64_t c) {
    const uint8_t *row = w->data + r * w->row_bytes;
    switch (w->enc) {
    case DSQ_CU_F32: {
        float f;
        memcpy(&f, row + 4 * c, 4);
        return f;
    }
    case DSQ_CU_F16:
        return dsq_cu_f16(dsq_cu_u16(row + 2 * c));
    case DSQ_CU_BF16:
        return dsq_cu_bits_f32((uint32_t)dsq_cu_u16(row + 2 * c) << 16);
    case DSQ_CU_MXFP4:
    case DSQ_CU_NVFP4:
        return dsq_cu_e2m1(dsq_cu_nib(row, c)) * dsq_cu_scale(w, r, c);
    case DSQ_CU_INT8_ROW:
    case DSQ_CU_INT8_G:
        return (float)(int8_t)row[c] * dsq_cu_scale(w, r, c);
    case DSQ_CU_INT4_G:
        return (float)((int)(dsq_cu_nib(row, c) ^ 8u) - 8) * dsq_cu_scale(w, r, c);
    case DSQ_CU_INT4_G_ASYM: {
        float q = (float)dsq_cu_nib(row, c), s = dsq_cu_scale(w, r, c);
        return q * s + dsq_cu_f16(dsq_cu_u16(w->mins + 2 * dsq_cu_scale_index(w, r, c)));
    }
    case DSQ_CU_INT2_G_ASYM: {
        float q = (float)((row[c >> 2] >> ((c & 3) * 2)) & 3u), s = dsq_cu_scale(w, r, c);
        return q * s + dsq_cu_f16(dsq_cu_u16(w->mins + 2 * dsq_cu_scale_index(w, r, c)));
    }
    default:
        return dsq_cu_e4m3(row[c]) * dsq_cu_scale(w, r, c); /* the FP8 encodings */
    }
}

/* ---- 16 columns at a time (the GEMV kernel's fast path) ----
 * A lane loads the raw bytes of 16 consecutive columns c0 … c0+15 (c0 % 16 == 0) in one or two vector
 * loads and decodes them with one scale (and min): allowed when every row's codes are byte-aligned in
 * 16-column pieces and a scale block never splits them. */
DSQ_HD int dsq_cu_bytes16(int enc) {
    switch (enc) {
    case DSQ_CU_F16:
    case DSQ_CU_BF16:
        return 32;
    case DSQ_CU_MXFP4:
    case DSQ_CU_NVFP4:
    case DSQ_CU_INT4_G:
    case DSQ_CU_INT4_G_ASYM:
        return 8;
    case DSQ_CU_FP8_B128:
    case DSQ_CU_FP8_B128_F32:
    case DSQ_CU_FP8_R128:
    case DSQ_CU_FP8_ROW:
    case DSQ_CU_FP8_R128_F32:
    case DSQ_CU_FP8_ROW_E8M0:
    case DSQ_CU_INT8_ROW:
    case DSQ_CU_INT8_G:
        return 16;
    default:
        return 0; /* F32, INT2: the per-element path */
    }
}
DSQ_HD int dsq_cu_vec16_ok(const dsq_cuda_wlayout *w) {
    int nb = dsq_cu_bytes16(w->enc);
    return nb && w->cols % 16 == 0 && w->bcols % 16 == 0 && w->row_bytes % (uint64_t)nb == 0;
}
/* b = the raw bytes of columns c0 … c0+15 of row r (dsq_cu_bytes16 of them) → v[16]; the same values as
 * dsq_cu_decode. */
DSQ_HD void dsq_cu_decode16(const dsq_cuda_wlayout *w, uint64_t r, uint64_t c0, const uint8_t *b, float *v) {
    int k;
    switch (w->enc) {
    case DSQ_CU_F16:
        for (k = 0; k < 16; k++) v[k] = dsq_cu_f16(dsq_cu_u16(b + 2 * k));
        return;
    case DSQ_CU_BF16:
        for (k = 0; k < 16; k++) v[k] = dsq_cu_bits_f32((uint32_t)dsq_cu_u16(b + 2 * k) << 16);
        return;
    default:
        break;
    }
    float s = dsq_cu_scale(w, r, c0);
    switch (w->enc) {
    case DSQ_CU_MXFP4:
    case DSQ_CU_NVFP4:
        for (k = 0; k < 16; k++) v[k] = dsq_cu_e2m1((uint32_t)(b[k >> 1] >> ((k & 1) * 4)) & 15u) * s;
        return;
    case DSQ_CU_INT4_G:
        for (k = 0; k < 16; k++) v[k] = (float)((int)(((uint32_t)(b[k >> 1] >> ((k & 1) * 4)) & 15u) ^ 8u) - 8) * s;
        return;
    case DSQ_CU_INT4_G_ASYM: {
        float m = dsq_cu_f16(dsq_cu_u16(w->mins + 2 * dsq_cu_scale_index(w, r, c0)));
        for (k = 0; k < 16; k++) v[k] = (float)((uint32_t)(b[k >> 1] >> ((k & 1) * 4)) & 15u) * s + m;
        return;
    }
    case DSQ_CU_INT8_ROW:
    case DSQ_CU_INT8_G:
        for (k = 0; k < 16; k++) v[k] = (float)(int8_t)b[k] * s;
        return;
    default: /* the FP8 encodings */
        for (k = 0; k < 16; k++) v[k] = dsq_cu_e4m3(b[k]) * s;
        return;
    }
}

#endif
