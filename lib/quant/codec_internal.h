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
    DSQ__K_KQUANT, /* GGML k-quant super-blocks of 256 (kernels_kquant.c) */
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

/* Neither NaN nor ±Inf (exponent bits not all ones). */
static inline bool dsq__finite(float v) { return (dsq_f32_bits(v) & 0x7f800000u) != 0x7f800000u; }

/* ---- integer scale search (encode_int.c defines it, kernels_avx2.c runs it eight groups at a time) --
 * dsq__int_search_scalar: the F16 scale (and min) of one group of n finite values; see encode_int.c.
 * dsq__int_search8_avx2: the same for eight groups of n values each, given transposed
 * (xt[i·8 + j] = value i of group j), with the same IEEE operations per lane, so the results are
 * identical to eight scalar calls. */
typedef struct dsq__int_spec {
    int qmin, qmax;
    bool asym;
} dsq__int_spec;
enum { DSQ__INT_FACTORS = 10 };
/* 1.0 = the plain rule; below 1 clips the largest elements to shrink the step for all others */
extern const float dsq__int_factors[DSQ__INT_FACTORS];
/* Round to the nearest F16 value after saturating to ±65504 (NaN stays NaN); F16C's vcvtps2ph with
 * RNE gives the same for every input (tests/test_codec_props.c checks every rounding boundary). */
static inline float dsq__f16r(float v) {
    v = 65504.0f < v ? 65504.0f : v; /* _mm256_min_ps(65504, v): NaN passes */
    v = -65504.0f > v ? -65504.0f : v;
    return dsq_f16_to_f32(dsq_f16_from_f32(v));
}
void dsq__int_search_scalar(const float *x, int n, const dsq__int_spec *sp, float *s, float *m);
void dsq__int_search8_avx2(const float *xt, int n, const dsq__int_spec *sp, float s[8], float m[8]);
/* xt[i·8 + j] = p[j][i] for i < n */
void dsq__transpose8_avx2(const float *const p[8], int n, float *xt);
/* F16 rounding of 8 floats by F16C after saturation (the vector form of dsq__f16r), for the tests */
void dsq__f16r8_avx2(const float in[8], float out[8]);
/* Codes of a group for one (s, inv = s > 0 ? 1/s : 0, m): t = x·inv or (x − m)·inv, clamped, RNE. */
typedef struct dsq__grp_param {
    float s, inv, m, qmin, qmax;
    bool asym;
} dsq__grp_param;
void dsq__int_group_codes_scalar(const float *x, int n, const dsq__grp_param *p, int8_t *q);
void dsq__int_group_codes_avx2(const float *x, int n, const dsq__grp_param *p, int8_t *q); /* n % 8 == 0 */
/* Low nibbles of n int8 codes (n % 16 == 0), two per byte, low nibble first. */
void dsq__pack_nibbles_avx2(const int8_t *q, int n, uint8_t *out);
/* Whether all n values are finite (the scalar form is a loop over dsq_f32_bits). */
bool dsq__all_finite_avx2(const float *x, uint64_t n);
/* dsq_codec_find_nonfinite's AVX2 twin: index of the first bad element of kind k, or UINT64_MAX. */
uint64_t dsq__find_nonfinite_avx2(dsq_nf_kind k, const uint8_t *p, uint64_t n_elems);
uint64_t dsq__find_nonfinite_scalar(dsq_nf_kind k, const uint8_t *p, uint64_t from, uint64_t n_elems);
/* Encode rows of an INT8/INT4/INT2 encoding (allocates one row of scratch). */
dsq_status dsq__encode_int_rows(const dsq__qv *v, dsq_qtensor_buf *dst, const float *x, uint64_t row0,
                                uint64_t nrows, dsq_isa isa, bool finite, const char *name, dsq_err *err);

/* ---- k-quants (encode_kquant.c, kernels_kquant.c) ----
 * Row r of a k-quant tensor is cols/256 blocks of dsq_kquant_block_bytes(enc) bytes. */
void dsq__kq_decode_span(const dsq__qv *v, uint64_t r, uint64_t c0, uint64_t n, float *out);
float dsq__kq_dot_row(const dsq__qv *v, uint64_t r, const float *x);
float dsq__kq_dot_row_avx2(const dsq__qv *v, uint64_t r, const float *x); /* same bits */
void dsq__kq_decode_block_avx2(dsq_encoding enc, const uint8_t *blk, float *out); /* same floats */
/* dsq_kquant_encode with the ISA of the error evaluation chosen (the bytes are the same for both). */
dsq_status dsq__kquant_encode_isa(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols,
                                  const float *importance, bool allow_nonfinite, void *dst, dsq_isa isa, dsq_err *err);
/* The same with the lane-pass twin named: 0 scalar, 1 AVX2, 2 AVX-512 (call 1/2 only where the CPU has
 * it); every path gives the same bytes.  dsq__kquant_encode_isa picks AVX-512 where the CPU has it. */
dsq_status dsq__kquant_encode_path(dsq_encoding enc, const float *x, uint64_t rows, uint64_t cols,
                                   const float *importance, bool allow_nonfinite, void *dst, int path, dsq_err *err);
/* Whether a block's F16 super-scales are finite. */
bool dsq__kq_block_finite(dsq_encoding enc, const uint8_t *blk);

/* NVFP4 block of n ≤ 16 values with tensor scale ts: n nibbles (one per byte) and the E4M3 scale. */
void dsq__nvfp4_encode_block(const float *x, int n, float ts, uint8_t *nibbles, uint8_t *scale);

#endif
