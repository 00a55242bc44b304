/* Re-encoding of stored tensors (byte copy, exact FP4→FP8 and MXFP4→NVFP4 paths, FP8 scale-format
 * changes, generic slab-wise decode→encode) and error statistics between two stored tensors. */
#include <math.h>
#include <string.h>

#include "codec_internal.h"

static inline uint8_t nib_at(const uint8_t *row, uint64_t c) { return (uint8_t)((row[c >> 1] >> ((c & 1) * 4)) & 15); }
static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static void note_change(dsq_reencode_report *rep, float old_v, float new_v) {
    if (old_v == new_v && signbit(old_v) == signbit(new_v)) return;
    rep->elements_changed++;
    double d = fabs((double)new_v - (double)old_v);
    if (d > rep->max_abs_change) rep->max_abs_change = d;
}

/* ---- MXFP4 → FP8 128x128 (spec §2.7) ------------------------------------------------------------ */

static void mxfp4_to_fp8(const dsq__qv *s, dsq_qtensor_buf *dst, const dsq__qv *d, dsq_reencode_report *rep) {
    const dsq_qtensor *src = s->t;
    const uint8_t *ss = src->scales;
    bool e8 = d->info->scale == DSQ__SC_E8M0;
    /* e4m3 code of e2m1 value v·2^k for k = 6 - dd, dd = 0..14 (the exact range) */
    uint8_t lut[15][16];
    for (int dd = 0; dd <= 14; dd++)
        for (int q = 0; q < 16; q++) lut[dd][q] = dsq_e4m3_from_f32(ldexpf(dsq_e2m1_to_f32((uint8_t)q), 6 - dd));
    /* the same per packed byte: the two e4m3 codes of its low and high nibble, in output order */
    uint8_t blut[15][256][2];
    for (int dd = 0; dd <= 14; dd++)
        for (int x = 0; x < 256; x++) blut[dd][x][0] = lut[dd][x & 15], blut[dd][x][1] = lut[dd][x >> 4];
    for (uint64_t r0 = 0; r0 < src->rows; r0 += 128) {
        uint64_t nr = min_u64(128, src->rows - r0);
        for (uint64_t c0 = 0; c0 < src->cols; c0 += 128) {
            uint64_t nc = min_u64(128, src->cols - c0);
            uint64_t g0 = c0 / DSQ_FP4_BLOCK, g1 = dsq_ceil_div(c0 + nc, DSQ_FP4_BLOCK);
            int smax = 0;
            for (uint64_t r = r0; r < r0 + nr; r++)
                for (uint64_t g = g0; g < g1; g++)
                    if (ss[r * s->scale_cols + g] > smax) smax = ss[r * s->scale_cols + g];
            int bnew = smax >= 6 ? smax - 6 : 0; /* s' = S / 2^6 */
            uint64_t si = (r0 / 128) * d->scale_cols + c0 / 128;
            if (e8) ((uint8_t *)dst->scales)[si] = (uint8_t)bnew;
            else {
                float f = dsq_e8m0_to_f32((uint8_t)bnew);
                memcpy((uint8_t *)dst->scales + 4 * si, &f, 4);
            }
            float snew = dsq_e8m0_to_f32((uint8_t)bnew);
            uint64_t changed_before = rep->elements_changed;
            for (uint64_t r = r0; r < r0 + nr; r++) {
                const uint8_t *in = (const uint8_t *)src->data + r * s->row_bytes;
                uint8_t *out = (uint8_t *)dst->data + r * d->row_bytes;
                for (uint64_t g = g0; g < g1; g++) {
                    int b = ss[r * s->scale_cols + g];
                    int dd = bnew + 6 - b; /* s/s' = 2^(6 - dd), dd ≥ 0 */
                    uint64_t ca = g * DSQ_FP4_BLOCK > c0 ? g * DSQ_FP4_BLOCK : c0;
                    uint64_t cb = min_u64((g + 1) * DSQ_FP4_BLOCK, c0 + nc);
                    if (dd <= 14) {
                        uint64_t c = ca;
                        if ((ca & 1) == 0) /* whole bytes: two codes per input byte */
                            for (const uint8_t (*bl)[2] = blut[dd]; c + 2 <= cb; c += 2) memcpy(out + c, bl[in[c >> 1]], 2);
                        for (; c < cb; c++) out[c] = lut[dd][nib_at(in, c)];
                        continue;
                    }
                    /* d > 14: the cast rounds, as in the official converter */
                    float sold = dsq_e8m0_to_f32((uint8_t)b);
                    for (uint64_t c = ca; c < cb; c++) {
                        float v = dsq_e2m1_to_f32(nib_at(in, c));
                        out[c] = dsq_e4m3_from_f32(ldexpf(v, 6 - dd));
                        note_change(rep, v * sold, dsq_e4m3_to_f32(out[c]) * snew);
                    }
                }
            }
            rep->blocks++;
            if (rep->elements_changed != changed_before) rep->blocks_inexact++;
        }
    }
}

/* ---- MXFP4 → NVFP4 -------------------------------------------------------------------------------- */

/* Shifts t (codes ×2^t) that keep every code of a 16-block on the e2m1 grid: [*tmin, *tmax]. */
static void fp4_shift_range(const uint8_t *row, uint64_t c0, uint64_t n, int *tmin, int *tmax, bool *zero) {
    int has[8] = {0};
    for (uint64_t c = c0; c < c0 + n; c++) has[nib_at(row, c) & 7] = 1;
    *zero = !(has[1] | has[2] | has[3] | has[4] | has[5] | has[6] | has[7]);
    /* magnitudes: code 1=.5 2=1 3=1.5 4=2 5=3 6=4 7=6 */
    int up = 3;                               /* ×8 needs only 0.5; ×4 up to 1.5; ×2 up to 3 */
    if (has[2] || has[3]) up = 2;
    if (has[4] || has[5]) up = 1;
    if (has[6] || has[7]) up = 0;
    int down = -3;                            /* ÷8 needs only 4; ÷4 {2,4,6}; ÷2 no .5 or 1.5 */
    if (has[4] || has[7]) down = -2;
    if (has[2] || has[5]) down = -1;
    if (has[1] || has[3]) down = 0;
    *tmin = down, *tmax = up;
}

/* e2m1 code of value(q)·2^t (on the grid when t is in the block's allowed range), t = -3..3. */
static void fp4_shift_table(uint8_t lut[7][16]) {
    for (int t = -3; t <= 3; t++)
        for (int q = 0; q < 16; q++) lut[t + 3][q] = dsq_e2m1_from_f32(ldexpf(dsq_e2m1_to_f32((uint8_t)q), t));
}

/* e4m3 code of 2^j for j in [-9, 8]. */
static uint8_t e4m3_pow2(int j) { return j >= -6 ? (uint8_t)((j + 7) << 3) : (uint8_t)(1 << (j + 9)); }

enum { K_LO = -200, K_HI = 200, N_K = K_HI - K_LO + 2, J_MIN = -9, J_MAX = 8 };

_Static_assert((int)N_K == (int)DSQ_NVFP4_FIT_BINS, "dsq_nvfp4_fit size");

void dsq_nvfp4_fit_init(dsq_nvfp4_fit *f) { memset(f, 0, sizeof *f); }

/* For every non-zero 16-block the interval of tensor exponents k that fit it (j = e - k - t ∈
 * [-9, 8] for some allowed t), counted with a difference array. */
void dsq_nvfp4_fit_add(dsq_nvfp4_fit *f, const dsq_qtensor *src) {
    dsq__qv s;
    dsq__qv_init(&s, src);
    const uint8_t *ss = src->scales;
    for (uint64_t r = 0; r < src->rows; r++) {
        const uint8_t *in = (const uint8_t *)src->data + r * s.row_bytes;
        for (uint64_t c0 = 0; c0 < src->cols; c0 += DSQ_NVFP4_BLOCK) {
            uint64_t n = min_u64(DSQ_NVFP4_BLOCK, src->cols - c0);
            int tmin, tmax;
            bool zero;
            fp4_shift_range(in, c0, n, &tmin, &tmax, &zero);
            if (zero) continue;
            int e = (int)ss[r * s.scale_cols + c0 / DSQ_FP4_BLOCK] - 127;
            int klo = e - tmax - J_MAX, khi = e - tmin - J_MIN;
            if (klo < K_LO) klo = K_LO;
            if (khi > K_HI) khi = K_HI;
            if (klo > khi) continue;
            f->diff[klo - K_LO]++;
            f->diff[khi - K_LO + 1]--;
        }
    }
}

float dsq_nvfp4_fit_scale(const dsq_nvfp4_fit *f) {
    int best_k = 0;
    int64_t best = -1, run = 0;
    for (int i = 0; i < N_K - 1; i++) {
        run += f->diff[i];
        int k = i + K_LO;
        if (k < -126 || k > 127) continue; /* ts = 2^k must be a normal f32 */
        /* ties: the highest window, so blocks left out are tiny ones, not saturated large ones */
        if (run >= best) best = run, best_k = k;
    }
    return ldexpf(1.0f, best_k);
}

/* A power of two 2^k with k in [-126, 127] (a tensor scale the exact path can use). */
static bool pow2_ts(float ts, int *k) {
    int e;
    float m = frexpf(ts, &e);
    *k = e - 1;
    return m == 0.5f && *k >= -126 && *k <= 127;
}

static void mxfp4_to_nvfp4(const dsq__qv *s, dsq_qtensor_buf *dst, const dsq__qv *d, dsq_reencode_report *rep) {
    const dsq_qtensor *src = s->t;
    const uint8_t *ss = src->scales;
    uint64_t cols = src->cols;
    if (dst->tensor_scale == 0.0f) { /* pass 1 over this tensor (a chunked caller sets it beforehand) */
        dsq_nvfp4_fit f;
        dsq_nvfp4_fit_init(&f);
        dsq_nvfp4_fit_add(&f, src);
        dst->tensor_scale = dsq_nvfp4_fit_scale(&f);
    }
    float ts = dst->tensor_scale;
    int best_k;
    pow2_ts(ts, &best_k); /* the caller checked it */
    uint8_t shift_lut[7][16];
    fp4_shift_table(shift_lut);
    /* pass 2 */
    for (uint64_t r = 0; r < src->rows; r++) {
        const uint8_t *in = (const uint8_t *)src->data + r * s->row_bytes;
        uint8_t *out = (uint8_t *)dst->data + r * d->row_bytes;
        memset(out, 0, d->row_bytes);
        for (uint64_t c0 = 0; c0 < cols; c0 += DSQ_NVFP4_BLOCK) {
            uint64_t n = min_u64(DSQ_NVFP4_BLOCK, cols - c0);
            uint8_t *sc = (uint8_t *)dst->scales + r * d->scale_cols + c0 / DSQ_NVFP4_BLOCK;
            uint8_t b = ss[r * s->scale_cols + c0 / DSQ_FP4_BLOCK];
            int tmin, tmax;
            bool zero;
            fp4_shift_range(in, c0, n, &tmin, &tmax, &zero);
            rep->blocks++;
            if (zero) { /* ±0 codes kept, scale 0 */
                *sc = 0;
                for (uint64_t c = c0; c < c0 + n; c++) out[c >> 1] |= (uint8_t)(nib_at(in, c) << ((c & 1) * 4));
                continue;
            }
            int e = (int)b - 127, t_pick = 99;
            for (int a = 0; a <= 3 && t_pick == 99; a++) /* smallest |t| first, t ≥ 0 before t < 0 */
                for (int sgn = 1; sgn >= -1; sgn -= 2) {
                    int t = a * sgn, j = e - best_k - t;
                    if (t >= tmin && t <= tmax && j >= J_MIN && j <= J_MAX) {
                        t_pick = t;
                        break;
                    }
                }
            if (t_pick != 99) {
                *sc = e4m3_pow2(e - best_k - t_pick);
                for (uint64_t c = c0; c < c0 + n; c++)
                    out[c >> 1] |= (uint8_t)(shift_lut[t_pick + 3][nib_at(in, c)] << ((c & 1) * 4));
                continue;
            }
            /* does not fit the E4M3 window: re-quantize this block by the NVFP4 rule */
            float vals[DSQ_NVFP4_BLOCK];
            uint8_t nib[DSQ_NVFP4_BLOCK];
            float sold = dsq_e8m0_to_f32(b);
            for (uint64_t i = 0; i < n; i++) vals[i] = dsq_e2m1_to_f32(nib_at(in, c0 + i)) * sold;
            dsq__nvfp4_encode_block(vals, (int)n, ts, nib, sc);
            float snew = dsq_e4m3_to_f32(*sc) * ts;
            for (uint64_t i = 0; i < n; i++) {
                out[(c0 + i) >> 1] |= (uint8_t)(nib[i] << (((c0 + i) & 1) * 4));
                note_change(rep, vals[i], dsq_e2m1_to_f32(nib[i]) * snew);
            }
            rep->blocks_inexact++;
        }
    }
}

/* ---- FP8: UE8M0 ↔ F32 scales, same blocks ---------------------------------------------------------- */

static bool pow2_byte(float f, uint8_t *b) {
    if (!(f > 0.0f) || f > 0x1p127f) return false;
    uint8_t e = dsq_e8m0_ceil_pow2(f);
    if (dsq_e8m0_to_f32(e) != f) return false;
    *b = e;
    return true;
}

static void fp8_scale_format(const dsq__qv *s, dsq_qtensor_buf *dst, const dsq__qv *d, dsq_reencode_report *rep) {
    const dsq_qtensor *src = s->t;
    memcpy(dst->data, src->data, src->rows * s->row_bytes);
    bool to_e8 = d->info->scale == DSQ__SC_E8M0;
    uint64_t srows = dsq_ceil_div(src->rows, s->brows);
    for (uint64_t i = 0; i < srows; i++) {
        for (uint64_t j = 0; j < s->scale_cols; j++) {
            uint64_t idx = i * s->scale_cols + j;
            rep->blocks++;
            if (!to_e8) {
                float f = dsq_e8m0_to_f32(((const uint8_t *)src->scales)[idx]);
                memcpy((uint8_t *)dst->scales + 4 * idx, &f, 4);
                continue;
            }
            float f;
            memcpy(&f, (const uint8_t *)src->scales + 4 * idx, 4);
            uint8_t b;
            if (pow2_byte(f, &b)) {
                ((uint8_t *)dst->scales)[idx] = b;
                continue;
            }
            /* not a power of two: re-quantize the block by the UE8M0 rule */
            uint64_t r0 = i * s->brows, r1 = min_u64(r0 + s->brows, src->rows);
            uint64_t c0 = j * s->bcols, c1 = min_u64(c0 + s->bcols, src->cols);
            float amax = 0;
            for (uint64_t r = r0; r < r1; r++)
                for (uint64_t c = c0; c < c1; c++) {
                    float a = fabsf(dsq_e4m3_to_f32(((const uint8_t *)src->data)[r * s->row_bytes + c]) * f);
                    if (a > amax) amax = a;
                }
            b = dsq_fp8_scale_e8m0(amax);
            ((uint8_t *)dst->scales)[idx] = b;
            float snew = dsq_e8m0_to_f32(b), inv = 1.0f / snew;
            uint64_t before = rep->elements_changed;
            for (uint64_t r = r0; r < r1; r++)
                for (uint64_t c = c0; c < c1; c++) {
                    float old_v = dsq_e4m3_to_f32(((const uint8_t *)src->data)[r * s->row_bytes + c]) * f;
                    uint8_t q = dsq_e4m3_from_f32(old_v * inv);
                    ((uint8_t *)dst->data)[r * d->row_bytes + c] = q;
                    note_change(rep, old_v, dsq_e4m3_to_f32(q) * snew);
                }
            if (rep->elements_changed != before) rep->blocks_inexact++;
        }
    }
}

/* ---- driver ------------------------------------------------------------------------------------- */

static bool same_fp8_blocks(const dsq__codec_info *a, const dsq__codec_info *b) {
    return a->kind == DSQ__K_FP8 && b->kind == DSQ__K_FP8 && a->block_rows == b->block_rows &&
           a->block_cols == b->block_cols && a->scale != b->scale;
}

/* ---- FP8: 128x128 blocks → 1x128 blocks (the same codes, each block scale replicated per row) ------ */

/* Source FP8 blocks of br > 1 rows, target FP8 blocks of one row and the same width; exact when the
 * target scale can hold the source scale: UE8M0 → UE8M0 / F32, F32 → F32. */
static bool fp8_row_split(const dsq__codec_info *a, const dsq__codec_info *b) {
    return a->kind == DSQ__K_FP8 && b->kind == DSQ__K_FP8 && a->block_rows > 1 && b->block_rows == 1 &&
           a->block_cols == b->block_cols && (a->scale == DSQ__SC_E8M0 || b->scale == DSQ__SC_F32);
}

static void fp8_replicate_rows(const dsq__qv *s, dsq_qtensor_buf *dst, const dsq__qv *d, dsq_reencode_report *rep) {
    const dsq_qtensor *src = s->t;
    memcpy(dst->data, src->data, src->rows * s->row_bytes);
    bool from_e8 = s->info->scale == DSQ__SC_E8M0, to_e8 = d->info->scale == DSQ__SC_E8M0;
    for (uint64_t r = 0; r < src->rows; r++) {
        uint64_t si = (r / s->brows) * s->scale_cols;
        for (uint64_t j = 0; j < d->scale_cols; j++, rep->blocks++) {
            uint64_t di = r * d->scale_cols + j;
            if (from_e8 && to_e8) {
                ((uint8_t *)dst->scales)[di] = ((const uint8_t *)src->scales)[si + j];
            } else if (from_e8) {
                float f = dsq_e8m0_to_f32(((const uint8_t *)src->scales)[si + j]);
                memcpy((uint8_t *)dst->scales + 4 * di, &f, 4);
            } else {
                memcpy((uint8_t *)dst->scales + 4 * di, (const uint8_t *)src->scales + 4 * (si + j), 4);
            }
        }
    }
}

static dsq_status slab_scratch(uint64_t cols, float **out, const char *nm, dsq_err *err) {
    uint64_t bytes;
    DSQ_RETURN_IF(!dsq_mul_u64(cols, (uint64_t)DSQ_CODEC_SLAB_ROWS * sizeof(float), &bytes) || bytes > SIZE_MAX, err,
                  DSQ_ERR_OVERFLOW, "%s: slab of %llu columns overflows", nm, (unsigned long long)cols);
    *out = dsq_malloc_aligned((size_t)bytes);
    DSQ_RETURN_IF(!*out, err, DSQ_ERR_NOMEM, "%s: cannot allocate a %llu-byte slab", nm, (unsigned long long)bytes);
    return DSQ_OK;
}

dsq_status dsq_codec_reencode(const dsq_qtensor *src, dsq_qtensor_buf *dst, const dsq_codec_options *opt,
                              dsq_reencode_report *rep, dsq_err *err) {
    dsq_codec_options o = {0};
    if (opt) o = *opt;
    const char *nm = o.name ? o.name : "tensor";
    dsq_reencode_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    DSQ_RETURN_IF(!dst, err, DSQ_ERR_ARG, "%s: no destination", nm);
    DSQ_TRY(dsq_codec_check(src, nm, err));
    dsq_qtensor dview = dsq_qtensor_view(dst);
    DSQ_TRY(dsq_codec_check(&dview, nm, err));
    DSQ_RETURN_IF(src->rows != dst->rows || src->cols != dst->cols, err, DSQ_ERR_SHAPE,
                  "%s: source is %llu x %llu but target %llu x %llu", nm, (unsigned long long)src->rows,
                  (unsigned long long)src->cols, (unsigned long long)dst->rows, (unsigned long long)dst->cols);
    dsq__qv s, d;
    dsq__qv_init(&s, src);
    dsq__qv_init(&d, &dview);
    bool src_float = s.info->kind != DSQ__K_RAW, dst_float = d.info->kind != DSQ__K_RAW;
    if (src_float && !o.allow_nonfinite) DSQ_TRY(dsq_codec_check_finite(src, nm, err));

    if (src->enc == dst->enc && src->group == dst->group) {
        dsq_codec_layout L;
        DSQ_TRY(dsq_codec_layout_of(src->enc, src->rows, src->cols, src->group, &L, err));
        if (L.data_bytes) memcpy(dst->data, src->data, L.data_bytes);
        if (L.scale_bytes) memcpy(dst->scales, src->scales, L.scale_bytes);
        if (L.min_bytes) memcpy(dst->mins, src->mins, L.min_bytes);
        dst->tensor_scale = src->tensor_scale;
        rep->byte_copy = rep->exact_path = true;
        return DSQ_OK;
    }
    DSQ_RETURN_IF(!src_float || !dst_float, err, DSQ_ERR_UNSUPPORTED, "%s: integer tensors can only be copied", nm);
    if (src->rows == 0 || src->cols == 0) return DSQ_OK;

    if (src->enc == DSQ_ENC_MXFP4 && (dst->enc == DSQ_ENC_FP8_B128 || dst->enc == DSQ_ENC_FP8_B128_F32)) {
        mxfp4_to_fp8(&s, dst, &d, rep);
        rep->exact_path = true;
        return DSQ_OK;
    }
    int k_ts;
    if (src->enc == DSQ_ENC_MXFP4 && dst->enc == DSQ_ENC_NVFP4 && (dst->tensor_scale == 0.0f || pow2_ts(dst->tensor_scale, &k_ts))) {
        mxfp4_to_nvfp4(&s, dst, &d, rep);
        rep->exact_path = true;
        return DSQ_OK;
    }
    if (fp8_row_split(s.info, d.info)) {
        fp8_replicate_rows(&s, dst, &d, rep);
        rep->exact_path = true;
        return DSQ_OK;
    }
    if (same_fp8_blocks(s.info, d.info)) {
        fp8_scale_format(&s, dst, &d, rep);
        rep->exact_path = true;
        return DSQ_OK;
    }

    /* generic: decode a slab, encode it */
    float *slab = NULL;
    DSQ_TRY(slab_scratch(src->cols, &slab, nm, err));
    dsq_codec_options od = o;
    od.allow_nonfinite = true; /* already checked above when it matters */
    dsq_status st = DSQ_OK;
    if (dst->enc == DSQ_ENC_NVFP4 && dst->tensor_scale == 0.0f) {
        float amax = 0;
        for (uint64_t r0 = 0; r0 < src->rows && st == DSQ_OK; r0 += DSQ_CODEC_SLAB_ROWS) {
            uint64_t nr = min_u64(DSQ_CODEC_SLAB_ROWS, src->rows - r0);
            st = dsq_codec_decode(src, r0, nr, slab, &od, err);
            for (uint64_t i = 0; st == DSQ_OK && i < nr * src->cols; i++) {
                float a = fabsf(slab[i]);
                if (a > amax && a <= 3.4028235e38f) amax = a;
            }
        }
        dst->tensor_scale = dsq_codec_nvfp4_tensor_scale(amax);
        if (dst->tensor_scale == 0.0f) dst->tensor_scale = 1.0f; /* all-zero tensor: any scale */
    }
    for (uint64_t r0 = 0; r0 < src->rows && st == DSQ_OK; r0 += DSQ_CODEC_SLAB_ROWS) {
        uint64_t nr = min_u64(DSQ_CODEC_SLAB_ROWS, src->rows - r0);
        st = dsq_codec_decode(src, r0, nr, slab, &od, err);
        if (st == DSQ_OK) st = dsq_codec_encode(dst, slab, r0, nr, &od, err);
    }
    dsq_free_aligned(slab);
    return st;
}

/* ---- statistics --------------------------------------------------------------------------------- */

void dsq_codec_errstats_add(dsq_codec_errstats *s, const float *ref, const float *test, uint64_t n) {
    double a = 0, b = 0, dd = 0, dot = 0, mx = s->max_abs;
    for (uint64_t i = 0; i < n; i++) {
        double r = ref[i], t = test[i], d = t - r;
        a += r * r, b += t * t, dd += d * d, dot += r * t;
        if (fabs(d) > mx) mx = fabs(d);
    }
    s->n += n;
    s->sum_sq_ref += a, s->sum_sq_test += b, s->sum_sq_diff += dd, s->dot += dot, s->max_abs = mx;
}

double dsq_codec_errstats_rel_rms(const dsq_codec_errstats *s) {
    if (s->sum_sq_ref == 0.0) return s->sum_sq_diff == 0.0 ? 0.0 : INFINITY;
    return sqrt(s->sum_sq_diff / s->sum_sq_ref);
}

double dsq_codec_errstats_cosine(const dsq_codec_errstats *s) {
    if (s->sum_sq_ref == 0.0 && s->sum_sq_test == 0.0) return 1.0;
    if (s->sum_sq_ref == 0.0 || s->sum_sq_test == 0.0) return 0.0;
    return s->dot / sqrt(s->sum_sq_ref * s->sum_sq_test);
}

dsq_status dsq_codec_compare(const dsq_qtensor *ref, const dsq_qtensor *test, const dsq_codec_options *opt,
                             dsq_codec_errstats *out, dsq_err *err) {
    dsq_codec_options o = {0};
    if (opt) o = *opt;
    const char *nm = o.name ? o.name : "tensor";
    memset(out, 0, sizeof *out);
    DSQ_TRY(dsq_codec_check(ref, nm, err));
    DSQ_TRY(dsq_codec_check(test, nm, err));
    DSQ_RETURN_IF(ref->rows != test->rows || ref->cols != test->cols, err, DSQ_ERR_SHAPE,
                  "%s: shapes differ (%llu x %llu vs %llu x %llu)", nm, (unsigned long long)ref->rows,
                  (unsigned long long)ref->cols, (unsigned long long)test->rows, (unsigned long long)test->cols);
    float *a = NULL, *b = NULL;
    DSQ_TRY(slab_scratch(ref->cols, &a, nm, err));
    dsq_status st = slab_scratch(ref->cols, &b, nm, err);
    for (uint64_t r0 = 0; st == DSQ_OK && r0 < ref->rows; r0 += DSQ_CODEC_SLAB_ROWS) {
        uint64_t nr = min_u64(DSQ_CODEC_SLAB_ROWS, ref->rows - r0);
        st = dsq_codec_decode(ref, r0, nr, a, &o, err);
        if (st == DSQ_OK) st = dsq_codec_decode(test, r0, nr, b, &o, err);
        if (st == DSQ_OK) dsq_codec_errstats_add(out, a, b, nr * ref->cols);
    }
    dsq_free_aligned(a);
    dsq_free_aligned(b);
    return st;
}
