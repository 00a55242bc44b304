/* Internal to lib/quant: per-encoding facts and the resolved view the kernels work on. */
#ifndef DSQ_CODEC_INTERNAL_H
#define DSQ_CODEC_INTERNAL_H

#include "dsq_codec.h"

typedef enum dsq__scale_kind { DSQ__SC_NONE, DSQ__SC_E8M0, DSQ__SC_F32, DSQ__SC_F16, DSQ__SC_E4M3 } dsq__scale_kind;

typedef enum dsq__kind {
    DSQ__K_F32,
    DSQ__K_F16,
    DSQ__K_BF16,
    DSQ__K_FP8,   /* e4m3 codes, block scales */
    DSQ__K_MXFP4, /* e2m1 codes, UE8M0 1x32 */
    DSQ__K_NVFP4, /* e2m1 codes, E4M3 1x16 × tensor scale */
    DSQ__K_INT8,  /* signed int8 × F16 */
    DSQ__K_INT4,  /* two's-complement nibble × F16 */
    DSQ__K_INT4A, /* u × F16 + F16 */
    DSQ__K_INT2A, /* u × F16 + F16, 2-bit */
    DSQ__K_RAW,   /* integers: copy only */
} dsq__kind;

/* Column block of a scale: a positive width, whole-row, or the tensor's `group`. */
enum { DSQ__BC_ROW = 0, DSQ__BC_GROUP = -1 };

typedef struct dsq__codec_info {
    dsq_encoding enc;
    const char *name;  /* base name; group encodings append -gG (and -asym) */
    dsq__kind kind;
    int bits;
    int block_rows;    /* 0: no scales */
    int block_cols;    /* > 0, DSQ__BC_ROW or DSQ__BC_GROUP */
    dsq__scale_kind scale;
    bool mins;
} dsq__codec_info;

/* NULL for an unknown encoding. */
const dsq__codec_info *dsq__codec_info_of(dsq_encoding enc);

/* A descriptor with its layout resolved: what the kernels index with. */
typedef struct dsq__qv {
    const dsq_qtensor *t;
    const dsq__codec_info *info;
    uint64_t row_bytes;
    uint64_t brows, bcols;   /* scale block (bcols = cols for whole-row scales) */
    uint64_t scale_cols;
} dsq__qv;

/* Fill v from a descriptor already accepted by dsq_codec_check. */
void dsq__qv_init(dsq__qv *v, const dsq_qtensor *t);

/* Scale (as float) of block (r / brows, c / bcols).  NVFP4: f32(e4m3(s) · ts). */
static inline float dsq__scale_at(const dsq__qv *v, uint64_t r, uint64_t c) {
    uint64_t i = (r / v->brows) * v->scale_cols + c / v->bcols;
    switch (v->info->scale) {
    case DSQ__SC_E8M0: return dsq_e8m0_to_f32(((const uint8_t *)v->t->scales)[i]);
    case DSQ__SC_F32: {
        float f;
        memcpy(&f, (const uint8_t *)v->t->scales + 4 * i, 4);
        return f;
    }
    case DSQ__SC_F16: {
        uint16_t h;
        memcpy(&h, (const uint8_t *)v->t->scales + 2 * i, 2);
        return dsq_f16_to_f32(h);
    }
    case DSQ__SC_E4M3: return dsq_e4m3_to_f32(((const uint8_t *)v->t->scales)[i]) * v->t->tensor_scale;
    default: return 1.0f;
    }
}
static inline float dsq__min_at(const dsq__qv *v, uint64_t r, uint64_t c) {
    uint64_t i = (r / v->brows) * v->scale_cols + c / v->bcols;
    uint16_t h;
    memcpy(&h, (const uint8_t *)v->t->mins + 2 * i, 2);
    return dsq_f16_to_f32(h);
}

/* Decode n elements of row r starting at column c0 into out (scalar reference). */
void dsq__decode_span_scalar(const dsq__qv *v, uint64_t r, uint64_t c0, uint64_t n, float *out);
/* The same, AVX2 where it has a fast path (falls back to scalar); identical results. */
void dsq__decode_span_avx2(const dsq__qv *v, uint64_t r, uint64_t c0, uint64_t n, float *out);
/* Σ_c W[r,c]·x[c] over the whole row. */
float dsq__dot_row_scalar(const dsq__qv *v, uint64_t r, const float *x);
float dsq__dot_row_avx2(const dsq__qv *v, uint64_t r, const float *x);
/* Σ_i a[i]·b[i] in f32. */
float dsq__dot_f32_scalar(const float *a, const float *b, uint64_t n);
float dsq__dot_f32_avx2(const float *a, const float *b, uint64_t n);

/* Resolve DSQ_ISA_AUTO and downgrade AVX2 on CPUs without it. */
dsq_isa dsq__isa_resolve(dsq_isa isa);

/* ---- integer scale search (encode_int.c) -------------------------------------------------------
 * One candidate (scale s with inv = 1/s or 0, min m) evaluated on a group: per element
 *   t = (x - m)·inv (asymmetric) or x·inv, clamped to [qmin, qmax], q = RNE(t) (magic-number add),
 *   x̂ = q·s (+ m), err += (x - x̂)², plus the least-squares sums Σxq, Σq², Σq, Σx;
 * accumulated in 8 lanes (element i in lane i mod 8) and reduced ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)).
 * The scalar and AVX2 versions perform the same IEEE operations, so they return identical sums and the
 * encoder's output does not depend on the CPU. */
typedef struct dsq__grp_param {
    float s, inv, m, qmin, qmax;
    bool asym;
    bool sums; /* false: only err is computed (the other fields of the result are 0) */
} dsq__grp_param;
typedef struct dsq__grp_eval {
    float err, sxq, sqq, sq, sx;
} dsq__grp_eval;
void dsq__int_group_eval_scalar(const float *x, int n, const dsq__grp_param *p, dsq__grp_eval *out);
/* n a multiple of 8 */
void dsq__int_group_eval_avx2(const float *x, int n, const dsq__grp_param *p, dsq__grp_eval *out);
/* Codes of a group for one (s, inv, m): the arithmetic of the evaluation, q as int8. */
void dsq__int_group_codes_scalar(const float *x, int n, const dsq__grp_param *p, int8_t *q);
void dsq__int_group_codes_avx2(const float *x, int n, const dsq__grp_param *p, int8_t *q); /* n % 8 == 0 */
/* Smallest and largest of n ≥ 1 finite values. */
void dsq__minmax_scalar(const float *x, int n, float *lo, float *hi);
void dsq__minmax_avx2(const float *x, int n, float *lo, float *hi); /* n % 8 == 0 */
/* Encode rows of an INT8/INT4/INT2 encoding (allocates one row of scratch). */
dsq_status dsq__encode_int_rows(const dsq__qv *v, dsq_qtensor_buf *dst, const float *x, uint64_t row0,
                                uint64_t nrows, dsq_isa isa, const char *name, dsq_err *err);

/* NVFP4 block of n ≤ 16 values with tensor scale ts: n nibbles (one per byte) and the E4M3 scale. */
void dsq__nvfp4_encode_block(const float *x, int n, float ts, uint8_t *nibbles, uint8_t *scale);

#endif
