/* Decode and dot-product kernels: the portable scalar twins, and the drivers that pick the AVX2
 * versions (kernels_avx2.c) at run time. */
#include <math.h>
#include <string.h>

#include "codec_internal.h"
#include "dsq_kquant.h"

enum { GEMM_CHUNK = 512 }; /* columns dequantized at a time by the batched kernels (multiple of every block) */

static inline uint8_t nib_at(const uint8_t *row, uint64_t c) { return (uint8_t)((row[c >> 1] >> ((c & 1) * 4)) & 15); }
static inline uint8_t crumb_at(const uint8_t *row, uint64_t c) { return (uint8_t)((row[c >> 2] >> ((c & 3) * 2)) & 3); }
static inline uint16_t u16_at(const uint8_t *p, uint64_t i) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return h;
}

/* Unscaled value of code c in a row of a block-scaled kind (INT4A/INT2A: the integer u). */
static inline float code_value(dsq__kind k, const uint8_t *row, uint64_t c) {
    switch (k) {
    case DSQ__K_FP8: return dsq_e4m3_to_f32(row[c]);
    case DSQ__K_MXFP4:
    case DSQ__K_NVFP4: return dsq_e2m1_to_f32(nib_at(row, c));
    case DSQ__K_INT8: return (float)(int8_t)row[c];
    case DSQ__K_INT4: return (float)(((int)nib_at(row, c) ^ 8) - 8); /* two's complement nibble */
    case DSQ__K_INT4A: return (float)nib_at(row, c);
    case DSQ__K_INT2A: return (float)crumb_at(row, c);
    default: return 0.0f;
    }
}

void dsq__decode_span_scalar(const dsq__qv *v, uint64_t r, uint64_t c0, uint64_t n, float *out) {
    const uint8_t *row = (const uint8_t *)v->t->data + r * v->row_bytes;
    dsq__kind k = v->info->kind;
    switch (k) {
    case DSQ__K_F32: memcpy(out, row + 4 * c0, n * 4); return;
    case DSQ__K_F16:
        for (uint64_t i = 0; i < n; i++) out[i] = dsq_f16_to_f32(u16_at(row, c0 + i));
        return;
    case DSQ__K_BF16:
        for (uint64_t i = 0; i < n; i++) out[i] = dsq_bf16_to_f32(u16_at(row, c0 + i));
        return;
    case DSQ__K_RAW: memset(out, 0, n * 4); return;
    case DSQ__K_KQUANT: dsq__kq_decode_span(v, r, c0, n, out); return;
    default: break;
    }
    uint64_t c = c0, end = c0 + n;
    while (c < end) {
        uint64_t bend = (c / v->bcols + 1) * v->bcols;
        if (bend > end) bend = end;
        float s = dsq__scale_at(v, r, c);
        if (v->info->mins) {
            float m = dsq__min_at(v, r, c);
            for (; c < bend; c++) out[c - c0] = code_value(k, row, c) * s + m;
        } else {
            for (; c < bend; c++) out[c - c0] = code_value(k, row, c) * s;
        }
    }
}

float dsq__dot_f32_scalar(const float *a, const float *b, uint64_t n) {
    float acc = 0;
    for (uint64_t i = 0; i < n; i++) acc += a[i] * b[i];
    return acc;
}

float dsq__dot_row_scalar(const dsq__qv *v, uint64_t r, const float *x) {
    const uint8_t *row = (const uint8_t *)v->t->data + r * v->row_bytes;
    uint64_t cols = v->t->cols;
    dsq__kind k = v->info->kind;
    float acc = 0;
    switch (k) {
    case DSQ__K_F32: {
        const float *w = (const float *)(const void *)row;
        for (uint64_t c = 0; c < cols; c++) {
            float f;
            memcpy(&f, w + c, 4);
            acc += f * x[c];
        }
        return acc;
    }
    case DSQ__K_F16:
        for (uint64_t c = 0; c < cols; c++) acc += dsq_f16_to_f32(u16_at(row, c)) * x[c];
        return acc;
    case DSQ__K_BF16:
        for (uint64_t c = 0; c < cols; c++) acc += dsq_bf16_to_f32(u16_at(row, c)) * x[c];
        return acc;
    case DSQ__K_RAW: return 0.0f;
    case DSQ__K_KQUANT: return dsq__kq_dot_row(v, r, x);
    default: break;
    }
    /* block by block: Σ_blocks s·Σ q·x (+ m·Σ x) */
    for (uint64_t c0 = 0; c0 < cols; c0 += v->bcols) {
        uint64_t end = c0 + v->bcols < cols ? c0 + v->bcols : cols;
        float bq = 0, bx = 0;
        for (uint64_t c = c0; c < end; c++) bq += code_value(k, row, c) * x[c];
        acc += dsq__scale_at(v, r, c0) * bq;
        if (v->info->mins) {
            for (uint64_t c = c0; c < end; c++) bx += x[c];
            acc += dsq__min_at(v, r, c0) * bx;
        }
    }
    return acc;
}

/* ---- drivers ------------------------------------------------------------------------------------ */

void dsq_codec_dot_rows_isa(const dsq_qtensor *w, const float *x, uint64_t row0, uint64_t nrows, float *y,
                            dsq_isa isa) {
    dsq__qv v;
    dsq__qv_init(&v, w);
    if (dsq__isa_resolve(isa) == DSQ_ISA_AVX2) {
        for (uint64_t i = 0; i < nrows; i++) y[i] = dsq__dot_row_avx2(&v, row0 + i, x);
    } else {
        for (uint64_t i = 0; i < nrows; i++) y[i] = dsq__dot_row_scalar(&v, row0 + i, x);
    }
}
void dsq_codec_dot_rows(const dsq_qtensor *w, const float *x, uint64_t row0, uint64_t nrows, float *y) {
    dsq_codec_dot_rows_isa(w, x, row0, nrows, y, DSQ_ISA_AUTO);
}

void dsq_codec_gemm_rows_isa(const dsq_qtensor *w, const float *x, uint64_t n, uint64_t ldx, uint64_t row0,
                             uint64_t nrows, float *y, uint64_t ldy, dsq_isa isa) {
    dsq__qv v;
    dsq__qv_init(&v, w);
    bool avx = dsq__isa_resolve(isa) == DSQ_ISA_AVX2;
    float chunk[GEMM_CHUNK] __attribute__((aligned(64)));
    uint64_t cols = w->cols;
    for (uint64_t i = 0; i < nrows; i++) {
        for (uint64_t j = 0; j < n; j++) y[j * ldy + i] = 0.0f;
        for (uint64_t c0 = 0; c0 < cols; c0 += GEMM_CHUNK) {
            uint64_t nc = cols - c0 < GEMM_CHUNK ? cols - c0 : GEMM_CHUNK;
            if (avx) dsq__decode_span_avx2(&v, row0 + i, c0, nc, chunk);
            else dsq__decode_span_scalar(&v, row0 + i, c0, nc, chunk);
            for (uint64_t j = 0; j < n; j++)
                y[j * ldy + i] += avx ? dsq__dot_f32_avx2(chunk, x + j * ldx + c0, nc)
                                      : dsq__dot_f32_scalar(chunk, x + j * ldx + c0, nc);
        }
    }
}
void dsq_codec_gemm_rows(const dsq_qtensor *w, const float *x, uint64_t n, uint64_t ldx, uint64_t row0,
                         uint64_t nrows, float *y, uint64_t ldy) {
    dsq_codec_gemm_rows_isa(w, x, n, ldx, row0, nrows, y, ldy, DSQ_ISA_AUTO);
}

void dsq_codec_fp8_linear_rows_isa(const dsq_qtensor *w, const float *q, const float *sa, uint64_t n,
                                   uint64_t row0, uint64_t nrows, float *y, uint64_t ldy, dsq_isa isa) {
    dsq__qv v;
    dsq__qv_init(&v, w);
    bool avx = dsq__isa_resolve(isa) == DSQ_ISA_AVX2;
    float chunk[GEMM_CHUNK] __attribute__((aligned(64)));
    uint64_t cols = w->cols, nb = dsq_ceil_div(cols, DSQ_FP8_BLOCK);
    for (uint64_t i = 0; i < nrows; i++) {
        for (uint64_t j = 0; j < n; j++) y[j * ldy + i] = 0.0f;
        for (uint64_t c0 = 0; c0 < cols; c0 += GEMM_CHUNK) {
            uint64_t nc = cols - c0 < GEMM_CHUNK ? cols - c0 : GEMM_CHUNK;
            if (avx) dsq__decode_span_avx2(&v, row0 + i, c0, nc, chunk);
            else dsq__decode_span_scalar(&v, row0 + i, c0, nc, chunk);
            for (uint64_t j = 0; j < n; j++) {
                float acc = y[j * ldy + i];
                for (uint64_t b0 = 0; b0 < nc; b0 += DSQ_FP8_BLOCK) {
                    uint64_t len = nc - b0 < DSQ_FP8_BLOCK ? nc - b0 : DSQ_FP8_BLOCK;
                    const float *qa = q + j * cols + c0 + b0;
                    float blk = avx ? dsq__dot_f32_avx2(chunk + b0, qa, len) : dsq__dot_f32_scalar(chunk + b0, qa, len);
                    acc += sa[j * nb + (c0 + b0) / DSQ_FP8_BLOCK] * blk;
                }
                y[j * ldy + i] = acc;
            }
        }
    }
}
void dsq_codec_fp8_linear_rows(const dsq_qtensor *w, const float *q, const float *sa, uint64_t n, uint64_t row0,
                               uint64_t nrows, float *y, uint64_t ldy) {
    dsq_codec_fp8_linear_rows_isa(w, q, sa, n, row0, nrows, y, ldy, DSQ_ISA_AUTO);
}

/* ---- decode with checks -------------------------------------------------------------------------- */


dsq_status dsq_codec_decode(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, float *out,
                            const dsq_codec_options *opt, dsq_err *err) {
    dsq_codec_options o = {0};
    if (opt) o = *opt;
    const char *nm = o.name ? o.name : "tensor";
    DSQ_TRY(dsq_codec_check(src, nm, err));
    DSQ_RETURN_IF(!dsq_codec_is_float(src->enc), err, DSQ_ERR_UNSUPPORTED, "%s: integer tensor cannot be decoded to floats", nm);
    uint64_t end;
    DSQ_RETURN_IF(!dsq_add_u64(row0, nrows, &end) || end > src->rows, err, DSQ_ERR_RANGE,
                  "%s: rows %llu..%llu outside the %llu rows", nm, (unsigned long long)row0,
                  (unsigned long long)(row0 + nrows), (unsigned long long)src->rows);
    dsq__qv v;
    dsq__qv_init(&v, src);
    bool avx = dsq__isa_resolve(o.isa) == DSQ_ISA_AVX2;
    uint64_t cols = src->cols;
    for (uint64_t i = 0; i < nrows; i++) {
        float *o_row = out + i * cols;
        if (avx) dsq__decode_span_avx2(&v, row0 + i, 0, cols, o_row);
        else dsq__decode_span_scalar(&v, row0 + i, 0, cols, o_row);
        if (o.allow_nonfinite) continue;
        /* branch-free first (vectorizes): the loop naming the element runs only on a row that has one */
        typedef uint32_t u32x4 __attribute__((vector_size(16)));
        u32x4 acc = {0};
        uint64_t c0 = 0;
        for (; c0 + 4 <= cols; c0 += 4) {
            u32x4 b;
            memcpy(&b, o_row + c0, sizeof b);
            acc |= (u32x4)((b & 0x7f800000u) == 0x7f800000u);
        }
        uint32_t bad = acc[0] | acc[1] | acc[2] | acc[3];
        for (; c0 < cols; c0++) bad |= !dsq__finite(o_row[c0]);
        for (uint64_t c = 0; bad && c < cols; c++)
            if (!dsq__finite(o_row[c]))
                return dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: element [%llu, %llu] decodes to %s", nm,
                                   (unsigned long long)(row0 + i), (unsigned long long)c,
                                   o_row[c] != o_row[c] ? "NaN" : "infinity");
    }
    return DSQ_OK;
}

dsq_status dsq_codec_check_finite(const dsq_qtensor *t, const char *name, dsq_err *err) {
    const char *nm = name ? name : "tensor";
    DSQ_TRY(dsq_codec_check(t, nm, err));
    dsq__qv v;
    dsq__qv_init(&v, t);
    const uint8_t *d = t->data;
    dsq__kind k = v.info->kind;
    /* e2m1 and integer codes are always finite: only their scales can be NaN.  Codes that can be are
     * whole bytes or words, so the rows are contiguous: one vectorised scan. */
    dsq_nf_kind ck = dsq_codec_part_nf_kind(t->enc, DSQ_CODEC_PART_CODES);
    uint64_t at = dsq_codec_find_nonfinite(ck, t->data, t->rows * v.row_bytes);
    if (at != UINT64_MAX)
        return dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: element [%llu, %llu] is NaN or infinite", nm,
                           (unsigned long long)(at / t->cols), (unsigned long long)(at % t->cols));
    if (k == DSQ__K_KQUANT) { /* codes are integers: only the F16 super-scales can be non-finite */
        uint64_t bb = (uint64_t)dsq_kquant_block_bytes(t->enc), nb = t->cols / DSQ_KQ_BLOCK;
        for (uint64_t r = 0; r < t->rows; r++)
            for (uint64_t b = 0; b < nb; b++)
                if (!dsq__kq_block_finite(t->enc, d + r * v.row_bytes + b * bb))
                    return dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: super-block %llu of row %llu has a NaN or infinite scale",
                                       nm, (unsigned long long)b, (unsigned long long)r);
        return DSQ_OK;
    }
    if (v.info->scale == DSQ__SC_NONE) return DSQ_OK;
    uint64_t n = dsq_ceil_div(t->rows, v.brows) * v.scale_cols;
    dsq_nf_kind sk = dsq_codec_part_nf_kind(t->enc, DSQ_CODEC_PART_SCALES);
    at = dsq_codec_find_nonfinite(sk, t->scales, n * dsq_nf_kind_size(sk));
    if (at == UINT64_MAX && v.info->mins) at = dsq_codec_find_nonfinite(DSQ_NF_F16, t->mins, n * 2);
    if (at != UINT64_MAX) {
        uint64_t i = at / v.scale_cols, j = at % v.scale_cols;
        return dsq_err_set(err, DSQ_ERR_NONFINITE,
                           "%s: scale [%llu, %llu] (rows from %llu, cols from %llu) is NaN or infinite", nm,
                           (unsigned long long)i, (unsigned long long)j, (unsigned long long)(i * v.brows),
                           (unsigned long long)(j * v.bcols));
    }
    return DSQ_OK;
}

/* ---- non-finite scans ----------------------------------------------------------------------------- */

dsq_nf_kind dsq_codec_part_nf_kind(dsq_encoding e, dsq_codec_part part) {
    const dsq__codec_info *in = dsq__codec_info_of(e);
    if (!in) return DSQ_NF_NONE;
    switch (part) {
    case DSQ_CODEC_PART_CODES:
        switch (in->kind) {
        case DSQ__K_F32: return DSQ_NF_F32;
        case DSQ__K_F16: return DSQ_NF_F16;
        case DSQ__K_BF16: return DSQ_NF_BF16;
        case DSQ__K_FP8: return DSQ_NF_E4M3;
        default: return DSQ_NF_NONE; /* e2m1 and integer codes */
        }
    case DSQ_CODEC_PART_SCALES:
        switch (in->scale) {
        case DSQ__SC_E8M0: return DSQ_NF_E8M0;
        case DSQ__SC_F32: return DSQ_NF_F32;
        case DSQ__SC_F16: return DSQ_NF_F16;
        case DSQ__SC_E4M3: return DSQ_NF_E4M3;
        default: return DSQ_NF_NONE;
        }
    case DSQ_CODEC_PART_MINS: return in->mins ? DSQ_NF_F16 : DSQ_NF_NONE;
    case DSQ_CODEC_PART_TENSOR_SCALE: return in->kind == DSQ__K_NVFP4 ? DSQ_NF_F32 : DSQ_NF_NONE;
    }
    return DSQ_NF_NONE;
}

unsigned dsq_nf_kind_size(dsq_nf_kind k) {
    return k == DSQ_NF_F32 ? 4u : k == DSQ_NF_F16 || k == DSQ_NF_BF16 ? 2u : 1u;
}

uint64_t dsq__find_nonfinite_scalar(dsq_nf_kind k, const uint8_t *p, uint64_t from, uint64_t n) {
    for (uint64_t i = from; i < n; i++) {
        bool bad = false;
        switch (k) {
        case DSQ_NF_E4M3: bad = dsq_e4m3_is_nan(p[i]); break;
        case DSQ_NF_E8M0: bad = dsq_e8m0_is_nan(p[i]); break;
        case DSQ_NF_F16: bad = (u16_at(p, i) & 0x7c00u) == 0x7c00u; break;
        case DSQ_NF_BF16: bad = (u16_at(p, i) & 0x7f80u) == 0x7f80u; break;
        case DSQ_NF_F32: {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            bad = (u & 0x7f800000u) == 0x7f800000u;
            break;
        }
        case DSQ_NF_NONE: return UINT64_MAX;
        }
        if (bad) return i;
    }
    return UINT64_MAX;
}

uint64_t dsq_codec_find_nonfinite(dsq_nf_kind k, const void *p, uint64_t n_bytes) {
    if (k == DSQ_NF_NONE || !p) return UINT64_MAX;
    uint64_t n = n_bytes / dsq_nf_kind_size(k);
    if (dsq_codec_best_isa() == DSQ_ISA_AVX2) return dsq__find_nonfinite_avx2(k, p, n);
    return dsq__find_nonfinite_scalar(k, p, 0, n);
}
