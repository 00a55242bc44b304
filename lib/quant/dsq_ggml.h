/* GGML block types ↔ dsq encodings (lib/quant/ggml_repack.c).
 *
 * GGML stores a [rows, cols] matrix row-major in blocks along each row (ggml-common.h):
 *   Q8_0  (32 values, 34 B): f16 d, int8 qs[32];                     x = d·q
 *   Q4_0  (32 values, 18 B): f16 d, u8 qs[16]; qs[j] = u_j | u_{j+16}<<4; x = d·(u − 8)
 *   MXFP4 (32 values, 17 B): u8 e (E8M0), u8 qs[16]; qs[j] = c_j | c_{j+16}<<4 (e2m1 codes);
 *                            x = e2m1(c)·2^(e−127)
 *   Q2_K / Q3_K / Q4_K / Q5_K / Q6_K / IQ4_XS (256 values; 84 / 110 / 144 / 176 / 210 / 136 B):
 *                            dsq's q2_k … iq4_xs encodings store these very blocks (dsq_kquant.h)
 *   F32 / F16 / BF16 / I32: plain little-endian elements.
 * dsq keeps codes and scales apart with the even column in the low nibble (dsq_codec.h), so the
 * twins below are the same numbers in another byte order:
 *   int8-g32 ↔ Q8_0, int4-g32 ↔ Q4_0 (two's-complement nibble q ↔ u = q + 8), mxfp4 ↔ MXFP4,
 *   q2_k … q6_k, iq4_xs ↔ Q2_K … Q6_K, IQ4_XS (the same bytes), f32/f16/bf16/i32 ↔ the same. */
#ifndef DSQ_GGML_H
#define DSQ_GGML_H

#include "dsq_codec.h"
#include "dsq_core.h"

/* ggml type values (ggml.h enum ggml_type) used here; the full list is in lib/format/dsq_gguf.h. */
enum {
    DSQ_GGMLT_F32 = 0, DSQ_GGMLT_F16 = 1, DSQ_GGMLT_Q4_0 = 2, DSQ_GGMLT_Q8_0 = 8,
    DSQ_GGMLT_I32 = 26, DSQ_GGMLT_BF16 = 30, DSQ_GGMLT_MXFP4 = 39,
    DSQ_GGMLT_Q2_K = 10, DSQ_GGMLT_Q3_K = 11, DSQ_GGMLT_Q4_K = 12, DSQ_GGMLT_Q5_K = 13, DSQ_GGMLT_Q6_K = 14,
    DSQ_GGMLT_IQ4_XS = 23,
};
/* True for the k-quant types above (256-value super-blocks, dsq's q2_k … q6_k / iq4_xs bytes). */
bool dsq_ggml_is_kquant(uint32_t type);

/* The GGML type holding exactly the values of (enc, group); false when there is none. */
bool dsq_ggml_twin_of(dsq_encoding enc, int group, uint32_t *type);
/* The dsq encoding holding exactly the values of a GGML type; false when dsq cannot decode it. */
bool dsq_ggml_encoding_of(uint32_t type, dsq_encoding *enc, int *group);
/* Bytes of one row of `cols` values in `type`; false when cols is not a multiple of its block or
 * the type is not one of the types above. */
bool dsq_ggml_row_bytes(uint32_t type, uint64_t cols, uint64_t *out);

/* What a conversion did, summed over calls. */
typedef struct dsq_ggml_stats {
    uint64_t values;          /* values written */
    uint64_t lossless_values; /* of those, moved by a byte reorder (the twin of the source) */
    double sum_sq_err, sum_sq_ref, max_abs_err; /* re-quantized values against the source */
} dsq_ggml_stats;

/* Write rows [row0, row0+nrows) of src as `type` into out (nrows × row_bytes).  When `type` is the
 * twin of src's encoding the bytes are reordered (lossless); otherwise the rows are decoded to f32
 * and encoded: F32/F16/BF16 by RNE, Q8_0 / Q4_0 / MXFP4 through dsq's int8-g32 / int4-g32 / mxfp4
 * encoders (dsq_codec_encode rules), the k-quant types through dsq_kquant_encode with `importance`
 * (NULL or src->cols non-negative weights, an imatrix's Σx²/count; ignored by the other types).
 * I64 → I32 checks every value fits.  Memory: one f32 slab (two with stats). */
dsq_status dsq_ggml_encode_rows_w(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, uint32_t type,
                                  const float *importance, uint8_t *out, dsq_ggml_stats *stats, const char *name,
                                  dsq_err *err);
/* Buffers dsq_ggml_encode_rows_s keeps between calls (f32 slabs, codes, scales): one per thread,
 * zero-initialised, released with dsq_ggml_scratch_free (accepts NULL). */
typedef struct dsq_ggml_scratch {
    float *x, *y;
    uint8_t *codes, *scales;
    size_t x_cap, y_cap, codes_cap, scales_cap; /* bytes */
} dsq_ggml_scratch;
void dsq_ggml_scratch_free(dsq_ggml_scratch *s);
/* dsq_ggml_encode_rows_w with reused scratch (no allocation per call once grown); same bytes. */
dsq_status dsq_ggml_encode_rows_s(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, uint32_t type,
                                  const float *importance, uint8_t *out, dsq_ggml_stats *stats, dsq_ggml_scratch *scr,
                                  const char *name, dsq_err *err);
/* dsq_ggml_encode_rows_w without importance. */
dsq_status dsq_ggml_encode_rows(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, uint32_t type, uint8_t *out,
                                dsq_ggml_stats *stats, const char *name, dsq_err *err);

/* Internal (tests): Q8_0 by ggml's rule of x [nrows][cols] (finite, cols a multiple of 32) into out
 * (rows orow bytes apart), the stored values' error added to stats (may be NULL), with the scalar
 * code or the AVX2 twin (isa; AUTO = the best): the same bytes and the same sums. */
void dsq__ggml_q8_0_rows(const float *x, uint64_t nrows, uint64_t cols, uint8_t *out, uint64_t orow,
                         dsq_ggml_stats *stats, dsq_isa isa);

/* Internal (tests): the re-quantization error of n values (x source, y stored) added to stats, by
 * the scalar loop or the AVX2 twin (isa; AUTO = the best): the same sums. */
void dsq__ggml_err_stats(const float *x, const float *y, uint64_t n, dsq_ggml_stats *stats, dsq_isa isa);

/* Unpack `rows` rows of GGML blocks into the twin encoding's buffers (dst->enc/group from
 * dsq_ggml_encoding_of, buffers sized by dsq_codec_layout_of).  The inverse of the reorder above:
 * packing then unpacking gives the source bytes. */
dsq_status dsq_ggml_unpack(uint32_t type, const uint8_t *in, uint64_t rows, uint64_t cols, dsq_qtensor_buf *dst,
                           dsq_err *err);

#endif
