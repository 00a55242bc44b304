/* Encoders: f32 rows → codes + scales (+ mins) for every float encoding (rules in dsq_codec.h). */
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "dsq_kquant.h"


/* F16 value of a scale or min, saturated to the F16 range; NaN/Inf never reach here. */
static inline uint16_t f16_sat(float v) {
    if (v > DSQ_F16_MAX) v = DSQ_F16_MAX;
    if (v < -DSQ_F16_MAX) v = -DSQ_F16_MAX;
    return dsq_f16_from_f32(v);
}

static inline void put_u16(void *base, uint64_t i, uint16_t v) { memcpy((uint8_t *)base + 2 * i, &v, 2); }
static inline void put_f32(void *base, uint64_t i, float v) { memcpy((uint8_t *)base + 4 * i, &v, 4); }

/* Codes whose decoded value q·s would overflow f32 (scales near 2^127) step down to the largest
 * finite one: huge values saturate instead of decoding to Inf. */
static inline uint8_t e4m3_fit(uint8_t q, float s) {
    while ((q & 0x7f) && !dsq__finite(dsq_e4m3_to_f32(q) * s)) q--;
    return q;
}
static inline uint8_t e2m1_fit(uint8_t q, float s) {
    while ((q & 7) && !dsq__finite(dsq_e2m1_to_f32(q) * s)) q--;
    return q;
}

static float amax_finite(const float *x, uint64_t n) {
    float m = 0.0f;
    for (uint64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > m && dsq__finite(a)) m = a;
    }
    return m;
}

/* ---- FP8 / MXFP4 / NVFP4 ------------------------------------------------------------------------ */

static void encode_fp8_rows(const dsq__qv *v, dsq_qtensor_buf *dst, const float *x, uint64_t row0,
                            uint64_t nrows) {
    uint64_t cols = dst->cols, bc = v->bcols, br = v->brows;
    bool e8 = v->info->scale == DSQ__SC_E8M0;
    for (uint64_t i0 = 0; i0 < nrows; i0 += br) {
        uint64_t nr = nrows - i0 < br ? nrows - i0 : br;
        uint64_t srow = (row0 + i0) / br;
        for (uint64_t c0 = 0; c0 < cols; c0 += bc) {
            uint64_t nc = cols - c0 < bc ? cols - c0 : bc;
            float amax = 0;
            for (uint64_t i = i0; i < i0 + nr; i++) {
                float a = amax_finite(x + i * cols + c0, nc);
                if (a > amax) amax = a;
            }
            uint64_t si = srow * v->scale_cols + c0 / bc;
            float inv = 0, s32 = 0; /* E8M0: 1/s (a power of two, so x·(1/s) is x/s exactly); F32: s */
            bool near_max = amax > 0x1p126f;
            if (e8) {
                uint8_t b = dsq_fp8_scale_e8m0(amax);
                ((uint8_t *)dst->scales)[si] = b;
                s32 = dsq_e8m0_to_f32(b);
                inv = 1.0f / s32;
            } else {
                s32 = amax / DSQ_E4M3_MAX;
                put_f32(dst->scales, si, s32);
            }
            for (uint64_t i = i0; i < i0 + nr; i++) {
                const float *xr = x + i * cols + c0;
                uint8_t *out = (uint8_t *)dst->data + (row0 + i) * v->row_bytes + c0;
                if (e8) {
                    for (uint64_t c = 0; c < nc; c++) out[c] = dsq_e4m3_from_f32(xr[c] * inv);
                } else if (s32 > 0.0f) {
                    for (uint64_t c = 0; c < nc; c++) out[c] = dsq_e4m3_from_f32(xr[c] / s32);
                } else {
                    near_max = false; /* all-zero block, scale 0: nothing divided by it */
                    for (uint64_t c = 0; c < nc; c++) out[c] = xr[c] != xr[c] ? 0x7f : 0;
                }
                if (near_max)
                    for (uint64_t c = 0; c < nc; c++) out[c] = e4m3_fit(out[c], s32);
            }
        }
    }
}

static void encode_mxfp4_rows(const dsq__qv *v, dsq_qtensor_buf *dst, const float *x, uint64_t row0,
                              uint64_t nrows) {
    uint64_t cols = dst->cols;
    for (uint64_t i = 0; i < nrows; i++) {
        uint64_t r = row0 + i;
        const float *xr = x + i * cols;
        uint8_t *row = (uint8_t *)dst->data + r * v->row_bytes;
        memset(row, 0, v->row_bytes);
        for (uint64_t c0 = 0; c0 < cols; c0 += DSQ_FP4_BLOCK) {
            uint64_t nc = cols - c0 < DSQ_FP4_BLOCK ? cols - c0 : DSQ_FP4_BLOCK;
            uint8_t b = dsq_fp4_scale_e8m0(amax_finite(xr + c0, nc));
            ((uint8_t *)dst->scales)[r * v->scale_cols + c0 / DSQ_FP4_BLOCK] = b;
            float s = dsq_e8m0_to_f32(b), mul = 1.0f / s;
            for (uint64_t c = c0; c < c0 + nc; c++)
                row[c >> 1] |= (uint8_t)(e2m1_fit(dsq_e2m1_from_f32(xr[c] * mul), s) << ((c & 1) * 4));
        }
    }
}

static double nvfp4_try(const float *x, int n, float S, uint8_t *nib) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        float v = dsq__finite(x[i]) ? x[i] : (x[i] == x[i] ? copysignf(3e38f, x[i]) : 0.0f);
        uint8_t q = S > 0.0f ? e2m1_fit(dsq_e2m1_from_f32(v / S), S) : 0;
        if (nib) nib[i] = q;
        double d = (double)(dsq__finite(x[i]) ? x[i] : 0.0f) - (double)(dsq_e2m1_to_f32(q) * S);
        e += d * d;
    }
    return e;
}

void dsq__nvfp4_encode_block(const float *x, int n, float ts, uint8_t *nib, uint8_t *scale) {
    float amax = 0;
    for (int i = 0; i < n; i++)
        if (dsq__finite(x[i]) && fabsf(x[i]) > amax) amax = fabsf(x[i]);
    if (amax == 0.0f || ts == 0.0f) {
        *scale = 0;
        memset(nib, 0, (size_t)n);
        return;
    }
    uint8_t c0 = dsq_e4m3_from_f32(amax / (DSQ_E2M1_MAX * ts));
    if (c0 == 0) c0 = 1;
    uint8_t best = c0;
    double best_e = nvfp4_try(x, n, dsq_e4m3_to_f32(c0) * ts, NULL);
    if (c0 < 0x7e) {
        double e = nvfp4_try(x, n, dsq_e4m3_to_f32((uint8_t)(c0 + 1)) * ts, NULL);
        if (e < best_e) best = (uint8_t)(c0 + 1);
    }
    *scale = best;
    nvfp4_try(x, n, dsq_e4m3_to_f32(best) * ts, nib);
}

float dsq_codec_nvfp4_tensor_scale(float amax) {
    if (!(amax > 0.0f) || !dsq__finite(amax)) return 0.0f;
    return amax / (DSQ_E2M1_MAX * DSQ_E4M3_MAX);
}

static void encode_nvfp4_rows(const dsq__qv *v, dsq_qtensor_buf *dst, const float *x, uint64_t row0,
                              uint64_t nrows) {
    uint64_t cols = dst->cols;
    uint8_t nib[DSQ_NVFP4_BLOCK];
    for (uint64_t i = 0; i < nrows; i++) {
        uint64_t r = row0 + i;
        const float *xr = x + i * cols;
        uint8_t *row = (uint8_t *)dst->data + r * v->row_bytes;
        memset(row, 0, v->row_bytes);
        for (uint64_t c0 = 0; c0 < cols; c0 += DSQ_NVFP4_BLOCK) {
            int nc = (int)(cols - c0 < DSQ_NVFP4_BLOCK ? cols - c0 : DSQ_NVFP4_BLOCK);
            dsq__nvfp4_encode_block(xr + c0, nc, dst->tensor_scale, nib,
                                    (uint8_t *)dst->scales + r * v->scale_cols + c0 / DSQ_NVFP4_BLOCK);
            for (int c = 0; c < nc; c++) row[(c0 + c) >> 1] |= (uint8_t)(nib[c] << (((c0 + c) & 1) * 4));
        }
    }
}

/* ---- driver ------------------------------------------------------------------------------------- */

static dsq_status find_nonfinite(const float *x, uint64_t row0, uint64_t nrows, uint64_t cols, const char *nm,
                                 dsq_err *err) {
    for (uint64_t i = 0; i < nrows; i++)
        for (uint64_t c = 0; c < cols; c++)
            if (!dsq__finite(x[i * cols + c]))
                return dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: element [%llu, %llu] is %s", nm,
                                   (unsigned long long)(row0 + i), (unsigned long long)c,
                                   x[i * cols + c] != x[i * cols + c] ? "NaN" : "infinite");
    return DSQ_OK;
}

dsq_status dsq_codec_encode(dsq_qtensor_buf *dst, const float *x, uint64_t row0, uint64_t nrows,
                            const dsq_codec_options *opt, dsq_err *err) {
    dsq_codec_options o = {0};
    if (opt) o = *opt;
    const char *nm = o.name ? o.name : "tensor";
    DSQ_RETURN_IF(!dst, err, DSQ_ERR_ARG, "%s: no destination", nm);
    dsq_qtensor view = dsq_qtensor_view(dst);
    DSQ_TRY(dsq_codec_check(&view, nm, err));
    dsq__qv v;
    dsq__qv_init(&v, &view);
    DSQ_RETURN_IF(v.info->kind == DSQ__K_RAW, err, DSQ_ERR_UNSUPPORTED, "%s: integer encoding cannot be quantized", nm);
    uint64_t end;
    DSQ_RETURN_IF(!dsq_add_u64(row0, nrows, &end) || end > dst->rows, err, DSQ_ERR_RANGE,
                  "%s: rows %llu..%llu outside the %llu rows", nm, (unsigned long long)row0,
                  (unsigned long long)(row0 + nrows), (unsigned long long)dst->rows);
    DSQ_RETURN_IF(row0 % v.brows != 0 || (nrows % v.brows != 0 && end != dst->rows), err, DSQ_ERR_ARG,
                  "%s: rows %llu..%llu do not cover whole %llu-row scale blocks", nm, (unsigned long long)row0,
                  (unsigned long long)end, (unsigned long long)v.brows);
    if (nrows == 0 || dst->cols == 0) return DSQ_OK;
    DSQ_RETURN_IF(!x, err, DSQ_ERR_ARG, "%s: no input", nm);
    uint64_t cols = dst->cols;
    dsq_isa isa = dsq__isa_resolve(o.isa);
    /* a chunk is < 2^64 bytes: it is in memory */
    bool finite = isa == DSQ_ISA_AVX2 ? dsq__all_finite_avx2(x, nrows * cols) : find_nonfinite(x, row0, nrows, cols, nm, NULL) == DSQ_OK;
    if (!finite && !o.allow_nonfinite) return find_nonfinite(x, row0, nrows, cols, nm, err);
    switch (v.info->kind) {
    case DSQ__K_F32:
        memcpy((uint8_t *)dst->data + row0 * cols * 4, x, nrows * cols * 4);
        break;
    case DSQ__K_F16:
    case DSQ__K_BF16:
        for (uint64_t i = 0; i < nrows * cols; i++) {
            float f = x[i];
            uint16_t h;
            if (v.info->kind == DSQ__K_F16) {
                h = f != f ? dsq_f16_from_f32(f) : f16_sat(f);
            } else {
                h = dsq_bf16_from_f32(f);
                if ((h & 0x7fffu) == 0x7f80u) h = (uint16_t)((h & 0x8000u) | 0x7f7fu); /* saturate ±Inf */
            }
            put_u16(dst->data, row0 * cols + i, h);
        }
        break;
    case DSQ__K_FP8: encode_fp8_rows(&v, dst, x, row0, nrows); break;
    case DSQ__K_MXFP4: encode_mxfp4_rows(&v, dst, x, row0, nrows); break;
    case DSQ__K_NVFP4:
        if (dst->tensor_scale == 0.0f) {
            DSQ_RETURN_IF(row0 != 0 || end != dst->rows, err, DSQ_ERR_STATE,
                          "%s: NVFP4 slab encode needs the tensor scale set first", nm);
            dst->tensor_scale = dsq_codec_nvfp4_tensor_scale(amax_finite(x, nrows * cols));
        }
        encode_nvfp4_rows(&v, dst, x, row0, nrows);
        break;
    case DSQ__K_INT8:
    case DSQ__K_INT4:
    case DSQ__K_INT4A:
    case DSQ__K_INT2A: return dsq__encode_int_rows(&v, dst, x, row0, nrows, isa, finite, nm, err);
    case DSQ__K_KQUANT: /* non-finite values were checked above */
        return dsq__kquant_encode_isa(dst->enc, x, nrows, cols, o.importance, true,
                                      (uint8_t *)dst->data + row0 * v.row_bytes, isa, err);
    case DSQ__K_RAW: break;
    }
    return DSQ_OK;
}
