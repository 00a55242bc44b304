/* dsq codecs: how a logical [rows, cols] matrix of weights is stored in each dsq_encoding, and the
 * operations on stored tensors that the converter and the evaluator need.
 *
 *   layout        dsq_codec_layout          byte sizes and shapes of codes / scales / mins
 *   names         dsq_codec_name/parse       "fp8-128x128", "mxfp4", "int4-g32-asym", ...
 *   encode        dsq_codec_encode           f32 rows → codes + scales (+ mins)
 *   decode        dsq_codec_decode           rows of a stored tensor → f32
 *   GEMV / GEMM   dsq_codec_dot_rows         y[r] = Σ_c W[r,c]·x[c], dequantizing blocks on the fly
 *                 dsq_codec_gemm_rows        the same for several input vectors (prefill)
 *                 dsq_codec_fp8_linear_rows  release numerics: FP8-quantized input × stored weight
 *   re-encode     dsq_codec_reencode         stored tensor → other encoding, 128-row slabs at a time,
 *                                            byte copy when the encoding is unchanged, exact paths
 *                                            FP4→FP8 (spec §2.7) and MXFP4→NVFP4
 *   statistics    dsq_codec_compare          relative RMS error, max abs error, cosine
 *   activations   dsq_act_*, dsq_hadamard    spec §2.5 / §5 activation quantization and simulation
 *
 * ---- Layouts (every encoding) ------------------------------------------------------------------
 * A tensor of rank > 2 is viewed as [rows, cols] with rows = product of the leading dims.
 * Codes are stored row-major, each row starting on a byte boundary: row_bytes = ceil(cols·bits/8).
 * Sub-byte codes are packed along the row, the first column in the lowest bits (FP4/INT4: even column
 * in the low nibble; INT2: column 4j in bits 0-1 of byte j).  Scales (and mins) are row-major
 * [scale_rows, scale_cols] with scale_rows = ceil(rows / block_rows), scale_cols = ceil(cols /
 * block_cols); edge blocks may be partial (only synthetic tensors have them).
 *
 * | encoding          | name                | bits | block     | scale (elem)   | value of element       |
 * |-------------------|---------------------|------|-----------|----------------|------------------------|
 * | F32 / F16 / BF16  | f32 / f16 / bf16    | 32/16| -         | -              | stored value           |
 * | FP8_B128          | fp8-128x128         | 8    | 128 x 128 | UE8M0 (1 B)    | e4m3(q) · 2^(s-127)    |
 * | FP8_B128_F32      | fp8-128x128-f32     | 8    | 128 x 128 | F32 (4 B)      | e4m3(q) · s            |
 * | FP8_R128          | fp8-1x128           | 8    | 1 x 128   | UE8M0          | e4m3(q) · 2^(s-127)    |
 * | FP8_ROW           | fp8-row             | 8    | 1 x cols  | F32            | e4m3(q) · s            |
 * | FP8_R128_F32      | fp8-1x128-f32       | 8    | 1 x 128   | F32            | e4m3(q) · s            |
 * | FP8_ROW_E8M0      | fp8-row-e8m0        | 8    | 1 x cols  | UE8M0          | e4m3(q) · 2^(s-127)    |
 * | MXFP4             | mxfp4               | 4    | 1 x 32    | UE8M0          | e2m1(q) · 2^(s-127)    |
 * | NVFP4             | nvfp4               | 4    | 1 x 16    | E4M3 + F32 ts  | e2m1(q) · f32(e4m3(s)·ts) |
 * | INT8_ROW          | int8-row            | 8    | 1 x cols  | F16            | q · s, q int8 in ±127  |
 * | INT8_G            | int8-gG             | 8    | 1 x G     | F16            | q · s, q int8 in ±127  |
 * | INT4_G            | int4-gG             | 4    | 1 x G     | F16            | q · s, q int4 in -8..7 |
 * | INT4_G_ASYM       | int4-gG-asym        | 4    | 1 x G     | F16 + F16 min  | f32(u · s) + m, u 0..15|
 * | INT2_G_ASYM       | int2-gG-asym        | 2    | 1 x G     | F16 + F16 min  | f32(u · s) + m, u 0..3 |
 * | I64 / I32         | i64 / i32           | 64/32| -         | -              | integers (copy only)   |
 * | Q2_K … Q6_K       | q2_k … q6_k         | 2.625…6.5625 | 1 x 256 super-blocks, scales inside (dsq_kquant.h) | GGML k-quants |
 * | IQ4_XS            | iq4_xs              | 4.25 | 1 x 256 super-blocks, non-linear 4-bit codebook  | GGML IQ4_XS |
 *
 * G (dsq_qtensor.group) is one of 16, 32, 64, 128, 256 for the group encodings; for the others
 * `group` must be 0 or the fixed block width of the table.  INT4_G stores q as a two's-complement
 * nibble (formats/spec/dsq.md §5.3).  UE8M0 byte 255 and e4m3 codes 0x7F/0xFF are NaN.  NVFP4 has one F32 tensor scale ts.
 *
 * K-quant rows are cols/256 GGML super-blocks (row_bytes = cols/256 · 84, 110, 144, 176 or 210; cols
 * must be a multiple of 256, else DSQ_ERR_SHAPE); they have no scale or min parts.
 *
 * ---- Quantization rules (encode) ----------------------------------------------------------------
 * FP8 with UE8M0 scales (spec §2.6): per block s = pow2ceil(max(amax, 1e-4)/448),
 *   q = e4m3_RNE(clamp(x/s, ±448)).  With F32 scales: s = amax/448 (0 for an all-zero block).
 * MXFP4 (spec §2.6): per 1x32 block s = pow2ceil(max(amax, 6·2^-126)/6), q = e2m1_RNE(clamp(x/s, ±6)).
 * NVFP4: ts = amax_tensor/(6·448); per 1x16 block the E4M3 scale (RNE of amax_b/(6·ts), or the next
 *   code up when that gives a smaller squared error), q = e2m1_RNE(x / f32(e4m3(s)·ts)).
 * INT*: round-to-nearest with a per-group scale search that minimises the squared error of the
 *   decoded group (F16 rounding of scale and min included); the amax/qmax scale is always one of the
 *   candidates, so the search is never worse than it.  Asymmetric groups fit (scale, min) by least
 *   squares.  An all-zero group gets scale 0 (and min 0); nothing is divided by a zero scale.
 *   The AVX2 search performs the same IEEE operations as the scalar one: encoded bytes never depend
 *   on the CPU (or on how a tensor is split into slabs).
 * K-quants: the importance-weighted search of dsq_kquant.h (weight 1 per column through this API).
 * Huge values saturate (to ±448·s, ±6·s, the F16 scale range); denormal inputs are quantized like
 * any other value.
 *
 * ---- Non-finite values ---------------------------------------------------------------------------
 * NaN/Inf in an f32 source, e4m3 NaN codes, UE8M0 255 and F16/BF16 NaN/Inf are rejected with
 * DSQ_ERR_NONFINITE naming the tensor and the element ([row, col]) unless
 * dsq_codec_options.allow_nonfinite is set.  Then NaN and Inf take no part in scale selection, NaN is
 * stored as NaN where the format has one (else 0) and ±Inf saturates.  The dot/GEMM kernels do not
 * check: run decode or dsq_codec_check_finite once when a tensor is loaded.
 *
 * ---- Thread safety ---------------------------------------------------------------------------------
 * Every function here is reentrant and keeps no state: call the kernels from OpenMP threads on
 * disjoint output rows.  Nothing here starts threads.
 */
#ifndef DSQ_CODEC_H
#define DSQ_CODEC_H

#include "dsq_core.h"
#include "dsq_encoding.h"
#include "dsq_numeric.h"

enum {
    DSQ_CODEC_SLAB_ROWS = 128,  /* re-encode / compare work unit: rows of f32 scratch at a time */
    DSQ_CODEC_MAX_GROUP = 256,
    DSQ_NVFP4_BLOCK = 16,
};

/* A stored tensor (read-only view).  Logical shape [rows, cols].  `data` holds the codes,
 * `scales`/`mins` the per-block parameters (NULL where the encoding has none), `tensor_scale` the
 * NVFP4 tensor scale (ignored otherwise).  The caller owns all buffers. */
typedef struct dsq_qtensor {
    dsq_encoding enc;
    uint64_t rows, cols;
    int group;
    const void *data;
    const void *scales;
    const void *mins;
    float tensor_scale;
} dsq_qtensor;

/* The same for a tensor being written: encode/re-encode write through these pointers. */
typedef struct dsq_qtensor_buf {
    dsq_encoding enc;
    uint64_t rows, cols;
    int group;
    void *data;
    void *scales;
    void *mins;
    float tensor_scale;
} dsq_qtensor_buf;

/* A read-only view of a buffer being written. */
dsq_qtensor dsq_qtensor_view(const dsq_qtensor_buf *b);

/* Byte sizes and shapes of one tensor.  Element sizes are 0 where a part does not exist. */
typedef struct dsq_codec_layout {
    int bits;                  /* bits per code */
    uint64_t row_bytes;        /* ceil(cols·bits/8) */
    uint64_t data_bytes;       /* rows · row_bytes */
    uint64_t block_rows;       /* rows per scale block (1 or 128); 0 when there are no scales */
    uint64_t block_cols;       /* cols per scale block (cols for whole-row scales); 0: no scales */
    uint64_t scale_rows, scale_cols; /* scale (and min) tensor shape */
    int scale_size;            /* bytes per scale element: 1 (UE8M0/E4M3), 2 (F16), 4 (F32), 0 */
    uint64_t scale_bytes;
    int min_size;              /* 2 (F16) for the asymmetric encodings, else 0 */
    uint64_t min_bytes;
} dsq_codec_layout;

/* Layout of (enc, rows, cols, group) with every size checked for overflow.  Errors: DSQ_ERR_DTYPE
 * (unknown encoding), DSQ_ERR_ARG (group not allowed for enc), DSQ_ERR_OVERFLOW. */
dsq_status dsq_codec_layout_of(dsq_encoding enc, uint64_t rows, uint64_t cols, int group,
                               dsq_codec_layout *out, dsq_err *err);

/* True for a value of dsq_encoding this library knows. */
bool dsq_codec_known(dsq_encoding enc);
/* Short name of (enc, group) into buf ("int4-g32-asym"); returns buf, or "?" for unknown values. */
const char *dsq_codec_name(dsq_encoding enc, int group, char *buf, size_t size);
/* Parse a name as written by dsq_codec_name (also "int8-g128" etc.); group is 0 for encodings
 * without one.  Errors: DSQ_ERR_ARG naming the text. */
dsq_status dsq_codec_parse(const char *name, dsq_encoding *enc, int *group, dsq_err *err);
/* True when the encoding holds real numbers that decode and the kernels accept (false for I64/I32). */
bool dsq_codec_is_float(dsq_encoding enc);

/* Check a descriptor: known encoding, valid group, non-NULL data/scales/mins where the layout has
 * bytes, a finite non-negative NVFP4 tensor scale.  `name` (may be NULL) names the tensor. */
dsq_status dsq_codec_check(const dsq_qtensor *t, const char *name, dsq_err *err);

typedef enum dsq_isa { DSQ_ISA_AUTO = 0, DSQ_ISA_SCALAR = 1, DSQ_ISA_AVX2 = 2 } dsq_isa;
/* The instruction set AUTO resolves to on this CPU (AVX2 needs avx2, fma and f16c). */
dsq_isa dsq_codec_best_isa(void);

typedef struct dsq_codec_options {
    bool allow_nonfinite;  /* default false: NaN/Inf → DSQ_ERR_NONFINITE */
    const char *name;      /* tensor name used in messages; may be NULL */
    dsq_isa isa;           /* default AUTO */
    /* k-quant encodings: per-column importance of the tensor being encoded ([cols], finite, >= 0;
     * e.g. dsq_imatrix_importance), NULL (default) = plain squared error; other encodings ignore it */
    const float *importance;
} dsq_codec_options;

/* ---- encode / decode ---------------------------------------------------------------------------- */

/* Encode rows [row0, row0+nrows) of dst from x ([nrows][cols] f32).  row0 must be a multiple of
 * the layout's block_rows (128 for the 128x128 encodings) and nrows must reach the end of that block
 * row (a multiple of block_rows, or row0+nrows == rows).  NVFP4: when dst->tensor_scale is 0 and the
 * call covers the whole tensor, it is computed and stored in dst; a partial call needs it set
 * (dsq_codec_nvfp4_tensor_scale).  I64/I32 cannot be encoded (DSQ_ERR_UNSUPPORTED). */
dsq_status dsq_codec_encode(dsq_qtensor_buf *dst, const float *x, uint64_t row0, uint64_t nrows,
                            const dsq_codec_options *opt, dsq_err *err);
/* NVFP4 tensor scale for a tensor whose largest |value| is amax: amax/(6·448); 0 when amax is 0. */
float dsq_codec_nvfp4_tensor_scale(float amax);

/* Decode rows [row0, row0+nrows) of src into out ([nrows][cols] f32).  Fails with
 * DSQ_ERR_NONFINITE on the first non-finite element unless allowed. */
dsq_status dsq_codec_decode(const dsq_qtensor *src, uint64_t row0, uint64_t nrows, float *out,
                            const dsq_codec_options *opt, dsq_err *err);
/* Scan a whole stored tensor for NaN/Inf codes or scales (without decoding to memory). */
dsq_status dsq_codec_check_finite(const dsq_qtensor *t, const char *name, dsq_err *err);

/* ---- non-finite scans over stored bytes -----------------------------------------------------------
 * The element types of stored parts that can hold NaN/Inf: e4m3 codes or scales (0x7F/0xFF), UE8M0
 * scales (0xFF), F16 / BF16 / F32 values (exponent all ones).  e2m1 and integer codes are always
 * finite. */
typedef enum dsq_nf_kind { DSQ_NF_NONE = 0, DSQ_NF_E4M3, DSQ_NF_E8M0, DSQ_NF_F16, DSQ_NF_BF16, DSQ_NF_F32 } dsq_nf_kind;
typedef enum dsq_codec_part {
    DSQ_CODEC_PART_CODES = 1, /* the values match DSQ_FILE_PART_* of the container */
    DSQ_CODEC_PART_SCALES = 2,
    DSQ_CODEC_PART_MINS = 3,
    DSQ_CODEC_PART_TENSOR_SCALE = 4,
} dsq_codec_part;
/* Element type of part `part` of encoding e (DSQ_NF_NONE when it cannot be non-finite). */
dsq_nf_kind dsq_codec_part_nf_kind(dsq_encoding e, dsq_codec_part part);
/* Bytes of one element of kind k (1 for NONE). */
unsigned dsq_nf_kind_size(dsq_nf_kind k);
/* Index (in elements) of the first NaN/Inf element of the n_bytes at p, or UINT64_MAX when every one
 * is finite (a trailing partial element is ignored).  AVX2 when the CPU has it (the same answer);
 * runs at memory speed, so it can ride along with a checksum pass over the same bytes. */
uint64_t dsq_codec_find_nonfinite(dsq_nf_kind k, const void *p, uint64_t n_bytes);

/* ---- GEMV / GEMM kernels --------------------------------------------------------------------------
 * Preconditions (not checked here; dsq_codec_check once at load): a valid descriptor of a float
 * encoding, row0 + nrows ≤ rows, x holding cols floats.  Accumulation is f32, block by block (the
 * scalar and AVX2 twins agree to ~1e-6 relative to Σ|w·x|). */

/* y[i] = Σ_c W[row0+i, c] · x[c] for i < nrows. */
void dsq_codec_dot_rows(const dsq_qtensor *w, const float *x, uint64_t row0, uint64_t nrows, float *y);
void dsq_codec_dot_rows_isa(const dsq_qtensor *w, const float *x, uint64_t row0, uint64_t nrows, float *y,
                            dsq_isa isa);
/* Batched: for j < n, Y[j·ldy + i] = Σ_c W[row0+i, c] · X[j·ldx + c].  Each weight block is
 * dequantized once for all n vectors. */
void dsq_codec_gemm_rows(const dsq_qtensor *w, const float *x, uint64_t n, uint64_t ldx, uint64_t row0,
                         uint64_t nrows, float *y, uint64_t ldy);
void dsq_codec_gemm_rows_isa(const dsq_qtensor *w, const float *x, uint64_t n, uint64_t ldx, uint64_t row0,
                             uint64_t nrows, float *y, uint64_t ldy, dsq_isa isa);
/* FP8-linear of the release numerics (spec §5): the input is quantized per vector in 1x128 blocks
 * (dsq_act_fp8_quant): q ([n][cols], the e4m3 VALUES as floats, unscaled) and sa ([n][ceil(cols/128)]
 * power-of-two scales).  Y[j·ldy + i] = Σ_blocks sa[j][b] · Σ_{c in b} q[j][c] · W[row0+i, c], every
 * block sum in f32; for FP8 128x128 and MXFP4 weights W = q_w·s_w exactly, so this is
 * Σ_b s_a·s_w·Σ q_a·q_w. */
void dsq_codec_fp8_linear_rows(const dsq_qtensor *w, const float *q, const float *sa, uint64_t n,
                               uint64_t row0, uint64_t nrows, float *y, uint64_t ldy);
void dsq_codec_fp8_linear_rows_isa(const dsq_qtensor *w, const float *q, const float *sa, uint64_t n,
                                   uint64_t row0, uint64_t nrows, float *y, uint64_t ldy, dsq_isa isa);

/* ---- re-encoding ------------------------------------------------------------------------------- */

typedef struct dsq_reencode_report {
    bool byte_copy;          /* source and target encodings equal: bytes copied */
    bool exact_path;         /* a value-preserving path was used (see dsq_codec_reencode) */
    uint64_t blocks;         /* target scale blocks written by the exact path */
    uint64_t blocks_inexact; /* of those, blocks that could not be moved exactly (re-quantized) */
    uint64_t elements_changed; /* elements whose decoded value differs from the source (exact paths) */
    double max_abs_change;   /* largest |new - old| over those elements */
} dsq_reencode_report;

/* Re-encode src into dst (dst->enc/rows/cols/group chosen by the caller, buffers sized by
 * dsq_codec_layout_of; rows/cols must equal src's).  Works in slabs of DSQ_CODEC_SLAB_ROWS rows:
 * memory is one slab of f32 (rows × cols never materialised), never an intermediate file.
 * Paths, in order of preference:
 *   - same encoding and group: codes, scales, mins and tensor scale copied byte for byte;
 *   - MXFP4 → FP8_B128 / FP8_B128_F32 (spec §2.7, convert.py --expert-dtype fp8): per 128x128 block
 *     s' = max(s)/2^6 and codes e4m3(v·s/s'); exact while no 1x32 scale is below s'·2^-8 (d ≤ 14);
 *     beyond that the cast rounds as in the official converter (reported in elements_changed);
 *   - MXFP4 → NVFP4: ts = 2^k chosen so the most block exponents fit the E4M3 power-of-two window
 *     [2^-9, 2^8] (or dst->tensor_scale when it is already set to a power of two, e.g. chosen by
 *     dsq_nvfp4_fit over the whole tensor when it is re-encoded in row chunks); a block that does not
 *     fit even after moving a factor of 2 between codes and scale is re-quantized by the NVFP4 rule
 *     (counted in blocks_inexact, its error in max_abs_change);
 *   - FP8 with UE8M0 scales ↔ the same block shape with F32 scales: codes copied, scales converted
 *     (a non-power-of-two F32 scale makes that block re-quantized);
 *   - FP8 128x128 → FP8 1x128 (UE8M0 → UE8M0 or F32, F32 → F32): codes copied, each block scale
 *     replicated to its 128 rows: exact (FP8_B128 → FP8_R128 / FP8_R128_F32);
 *   - otherwise: decode a slab to f32, encode it (dsq_codec_encode rules).  NVFP4 targets take a
 *     first pass over the source to find amax unless dst->tensor_scale is already set.
 * rep may be NULL. */
dsq_status dsq_codec_reencode(const dsq_qtensor *src, dsq_qtensor_buf *dst, const dsq_codec_options *opt,
                              dsq_reencode_report *rep, dsq_err *err);

/* The MXFP4 → NVFP4 tensor scale of a tensor seen in row chunks: for every tensor exponent k, how
 * many non-zero 16-blocks would fit; add each chunk, then pick (the same choice dsq_codec_reencode
 * makes for the whole tensor at once). */
enum { DSQ_NVFP4_FIT_BINS = 402 };
typedef struct dsq_nvfp4_fit {
    int64_t diff[DSQ_NVFP4_FIT_BINS];
} dsq_nvfp4_fit;
void dsq_nvfp4_fit_init(dsq_nvfp4_fit *f);
void dsq_nvfp4_fit_add(dsq_nvfp4_fit *f, const dsq_qtensor *mxfp4);
float dsq_nvfp4_fit_scale(const dsq_nvfp4_fit *f);

/* ---- error statistics ---------------------------------------------------------------------------- */

typedef struct dsq_codec_errstats {
    uint64_t n;
    double sum_sq_ref, sum_sq_test, sum_sq_diff, dot;
    double max_abs;          /* max |test - ref| */
} dsq_codec_errstats;

/* Accumulate n pairs (ref[i], test[i]) into s (zero-initialise s first). */
void dsq_codec_errstats_add(dsq_codec_errstats *s, const float *ref, const float *test, uint64_t n);
/* sqrt(Σ(test-ref)² / Σref²); 0 when both are all-zero, +Inf when only ref is. */
double dsq_codec_errstats_rel_rms(const dsq_codec_errstats *s);
/* Σ ref·test / (|ref|·|test|); 1 when both are zero vectors, 0 when one is. */
double dsq_codec_errstats_cosine(const dsq_codec_errstats *s);
/* Compare two stored tensors of the same logical shape, slab by slab (two slabs of f32 scratch). */
dsq_status dsq_codec_compare(const dsq_qtensor *ref, const dsq_qtensor *test, const dsq_codec_options *opt,
                             dsq_codec_errstats *out, dsq_err *err);

/* ---- activations (spec §2.5, §5) ------------------------------------------------------------------
 * Scale rule: per block amax = max|x| (f32), floored at 1e-4 (FP8) or 6·2^-126 (FP4);
 * t = amax·f32(1/448) or amax·f32(1/6); s = the smallest power of two ≥ t.  Blocks run along the
 * vector; the last one may be partial.  NaN/Inf inputs are not checked (activations). */

/* 1x`block` FP8 quantization: codes[n] e4m3, scales[ceil(n/block)] as floats (exact powers of two)
 * and/or as UE8M0 bytes (either pointer may be NULL).  The release linear input uses block 128. */
void dsq_act_fp8_quant(const float *x, uint64_t n, int block, uint8_t *codes, float *scales,
                       uint8_t *scales_e8m0);
/* The same, returning the e4m3 values as floats (q[n], unscaled) for dsq_codec_fp8_linear_rows. */
void dsq_act_fp8_quant_values(const float *x, uint64_t n, int block, float *q, float *scales);
/* Fused FP8 quantize→dequantize in place: x ← bf16(e4m3(clamp(x/s))·s) (KV path: block 64). */
void dsq_act_fp8_sim(float *x, uint64_t n, int block);
/* 1x`block` FP4 quantization: packed[ceil(n/2)] (low nibble = even element), UE8M0 scales. */
void dsq_act_fp4_quant(const float *x, uint64_t n, int block, uint8_t *packed, uint8_t *scales_e8m0);
/* Fused FP4 quantize→dequantize in place: x ← bf16(e2m1(clamp(x/s, ±6))·s) (indexer: block 32). */
void dsq_act_fp4_sim(float *x, uint64_t n, int block);
/* Walsh–Hadamard transform in place, Sylvester order, scaled by n^-1/2; n a power of two.
 * f32 arithmetic; round the result to bf16 where the release numerics say so. */
void dsq_hadamard(float *x, uint64_t n);

#endif
