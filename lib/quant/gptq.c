/* GPTQ driver and the per-encoding pieces it needs (dsq_gptq.h). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_gptq.h"
#include "dsq_kquant.h"

void dsq_gptq_options_default(dsq_gptq_options *o) {
    memset(o, 0, sizeof *o);
    o->damp = DSQ_GPTQ_DEFAULT_DAMP;
    o->block = DSQ_GPTQ_DEFAULT_BLOCK;
}

bool dsq_gptq_supports(dsq_encoding e) {
    switch (e) {
    case DSQ_ENC_F32:
    case DSQ_ENC_F16:
    case DSQ_ENC_BF16:
    case DSQ_ENC_I64:
    case DSQ_ENC_I32: return false;
    default: return dsq_codec_known(e);
    }
}

/* ---- the per-encoding pieces -------------------------------------------------------------------- */

/* How encoding e groups columns: `width` columns share stored parameters (a group), `brows` rows do
 * (128 for the 128x128 FP8 blocks), `sub` columns share one set of representable values (k-quant
 * sub-blocks), and codes are 0 … ncodes-1. */
typedef struct gq_shape {
    uint64_t width, brows, sub;
    int ncodes;
} gq_shape;

static gq_shape shape_of(dsq_encoding e, int group, uint64_t cols) {
    gq_shape s = {cols, 1, cols, 256};
    switch (e) {
    case DSQ_ENC_FP8_B128:
    case DSQ_ENC_FP8_B128_F32: s.width = 128, s.brows = 128; break;
    case DSQ_ENC_FP8_R128:
    case DSQ_ENC_FP8_R128_F32: s.width = 128; break;
    case DSQ_ENC_FP8_ROW:
    case DSQ_ENC_FP8_ROW_E8M0:
    case DSQ_ENC_INT8_ROW: break;
    case DSQ_ENC_MXFP4: s.width = 32, s.ncodes = 16; break;
    case DSQ_ENC_NVFP4: s.width = DSQ_NVFP4_BLOCK, s.ncodes = 16; break;
    case DSQ_ENC_INT8_G: s.width = (uint64_t)group; break;
    case DSQ_ENC_INT4_G:
    case DSQ_ENC_INT4_G_ASYM: s.width = (uint64_t)group, s.ncodes = 16; break;
    case DSQ_ENC_INT2_G_ASYM: s.width = (uint64_t)group, s.ncodes = 4; break;
    case DSQ_ENC_Q2_K: s.width = 256, s.sub = 16, s.ncodes = 4; break;
    case DSQ_ENC_Q3_K: s.width = 256, s.sub = 16, s.ncodes = 8; break;
    case DSQ_ENC_Q4_K: s.width = 256, s.sub = 32, s.ncodes = 16; break;
    case DSQ_ENC_Q5_K: s.width = 256, s.sub = 32, s.ncodes = 32; break;
    case DSQ_ENC_Q6_K: s.width = 256, s.sub = 16, s.ncodes = 64; break;
    case DSQ_ENC_IQ4_XS: s.width = 256, s.sub = 32, s.ncodes = 16; break;
    default: break;
    }
    if (s.width > cols) s.width = cols;
    if (s.sub > s.width) s.sub = s.width;
    return s;
}

static void set_bits(uint8_t *p, int shift, int nbits, int v) {
    uint8_t m = (uint8_t)(((1u << nbits) - 1u) << shift);
    *p = (uint8_t)((*p & ~m) | (((unsigned)v << shift) & m));
}

/* Store code k for element c (0 … cols-1) of a row whose code bytes start at row (layouts of
 * dsq_codec.h and dsq_kquant.h). */
static void set_code(dsq_encoding e, uint8_t *row, uint64_t c, int k) {
    int bb = dsq_kquant_block_bytes(e);
    uint8_t *b = bb ? row + (c / 256) * (uint64_t)bb : NULL;
    unsigned x = (unsigned)(c % 256);
    switch (e) {
    case DSQ_ENC_MXFP4:
    case DSQ_ENC_NVFP4:
    case DSQ_ENC_INT4_G:
    case DSQ_ENC_INT4_G_ASYM: set_bits(&row[c / 2], (int)(c % 2) * 4, 4, k); return;
    case DSQ_ENC_INT2_G_ASYM: set_bits(&row[c / 4], (int)(c % 4) * 2, 2, k); return;
    case DSQ_ENC_Q2_K: set_bits(&b[16 + 32 * (x / 128) + x % 32], 2 * (int)((x % 128) / 32), 2, k); return;
    case DSQ_ENC_Q3_K:
        set_bits(&b[32 + 32 * (x / 128) + x % 32], 2 * (int)((x % 128) / 32), 2, k & 3);
        set_bits(&b[x % 32], (int)(x / 32), 1, k >> 2);
        return;
    case DSQ_ENC_Q4_K: set_bits(&b[16 + 32 * (x / 64) + x % 32], x % 64 < 32 ? 0 : 4, 4, k); return;
    case DSQ_ENC_Q5_K:
        set_bits(&b[48 + 32 * (x / 64) + x % 32], x % 64 < 32 ? 0 : 4, 4, k & 15);
        set_bits(&b[16 + x % 32], (int)(x / 32), 1, k >> 4);
        return;
    case DSQ_ENC_Q6_K: {
        unsigned n = x / 128, t = (x % 128) / 32, l = x % 32;
        set_bits(&b[64 * n + l + 32 * (t & 1)], t < 2 ? 0 : 4, 4, k & 15);
        set_bits(&b[128 + 32 * n + l], 2 * (int)t, 2, k >> 4);
        return;
    }
    case DSQ_ENC_IQ4_XS: set_bits(&b[8 + 16 * (x / 32) + x % 16], x % 32 < 16 ? 0 : 4, 4, k); return;
    default: row[c] = (uint8_t)k; return; /* FP8 e4m3 codes, INT8 */
    }
}

/* Codes an encoder never writes, kept out of the search: NaN e4m3 codes, int8's −128. */
static bool code_allowed(dsq_encoding e, int k) {
    switch (e) {
    case DSQ_ENC_INT8_ROW:
    case DSQ_ENC_INT8_G: return k != 0x80;
    case DSQ_ENC_FP8_B128:
    case DSQ_ENC_FP8_B128_F32:
    case DSQ_ENC_FP8_R128:
    case DSQ_ENC_FP8_R128_F32:
    case DSQ_ENC_FP8_ROW:
    case DSQ_ENC_FP8_ROW_E8M0: return (k & 0x7F) != 0x7F;
    default: return true;
    }
}

/* ---- Cholesky ------------------------------------------------------------------------------------ */

/* In place lower Cholesky factor L (A = L·Lᵀ) of A [n][n]; false when A is not positive definite. */
static bool cholesky_lower(double *a, uint64_t n) {
    for (uint64_t j = 0; j < n; j++) {
        double d = a[j * n + j];
        for (uint64_t k = 0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0) || !isfinite(d)) return false;
        double l = sqrt(d);
        a[j * n + j] = l;
#pragma omp parallel for schedule(static) if (n - j > 256)
        for (uint64_t i = j + 1; i < n; i++) {
            double s = a[i * n + j];
            const double *ai = a + i * n, *aj = a + j * n;
            for (uint64_t k = 0; k < j; k++) s -= ai[k] * aj[k];
            a[i * n + j] = s / l;
        }
    }
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = i + 1; j < n; j++) a[i * n + j] = 0;
    return true;
}

dsq_status dsq_gptq_chol_inverse_upper(double *a, uint64_t n, dsq_err *err) {
    DSQ_RETURN_IF(!cholesky_lower(a, n), err, DSQ_ERR_RANGE, "GPTQ: the damped Hessian is not positive definite");
    /* L⁻¹ (lower) in place, column by column: solve L·y = e_j */
    double *inv = dsq_calloc(n * n, sizeof *inv);
    DSQ_RETURN_IF(!inv, err, DSQ_ERR_NOMEM, "GPTQ: no memory for a %llux%llu inverse", (unsigned long long)n,
                  (unsigned long long)n);
#pragma omp parallel for schedule(dynamic, 16) if (n > 256)
    for (uint64_t j = 0; j < n; j++) {
        inv[j * n + j] = 1.0 / a[j * n + j];
        for (uint64_t i = j + 1; i < n; i++) {
            double s = 0;
            for (uint64_t k = j; k < i; k++) s += a[i * n + k] * inv[k * n + j];
            inv[i * n + j] = -s / a[i * n + i];
        }
    }
    /* A⁻¹ = L⁻ᵀ·L⁻¹: entry (i, j) = Σ_{k ≥ max(i,j)} inv[k][i]·inv[k][j] */
#pragma omp parallel for schedule(dynamic, 16) if (n > 256)
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j <= i; j++) {
            double s = 0;
            for (uint64_t k = i; k < n; k++) s += inv[k * n + i] * inv[k * n + j];
            a[i * n + j] = a[j * n + i] = s;
        }
    dsq_free(inv);
    /* upper U with A⁻¹ = Uᵀ·U: U = Mᵀ for the lower factor M of A⁻¹ */
    DSQ_RETURN_IF(!cholesky_lower(a, n), err, DSQ_ERR_RANGE, "GPTQ: the inverse Hessian is not positive definite");
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = i + 1; j < n; j++) a[i * n + j] = a[j * n + i], a[j * n + i] = 0;
    return DSQ_OK;
}

double dsq_gptq_output_error(const float *w, const float *q, uint64_t rows, uint64_t cols, const double *h) {
    double total = 0;
    double *d = dsq_malloc(cols * sizeof *d);
    if (!d) return NAN;
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t c = 0; c < cols; c++) d[c] = (double)w[r * cols + c] - (double)q[r * cols + c];
        for (uint64_t i = 0; i < cols; i++) {
            double s = 0;
            for (uint64_t j = 0; j < cols; j++) s += h[i * cols + j] * d[j];
            total += d[i] * s;
        }
    }
    dsq_free(d);
    return total;
}

/* ---- the driver ---------------------------------------------------------------------------------- */

/* One parameter group of columns [c0, c0 + cols) (in original column order), once chosen: its own
 * small encoded tensor [rows][cols] and, per row and sub-block, the value of every code. */
typedef struct gq_group {
    bool chosen;
    uint64_t c0, cols, left; /* columns not yet quantized */
    dsq_codec_layout lay;
    uint8_t *bytes; /* data | scales | mins, as dsq_codec_layout_of (enc, rows, cols, group) */
    float *levels;  /* [rows][cols/sub][ncodes]; +inf for codes kept out; freed when left = 0 */
    float ts;
} gq_group;

typedef struct gq {
    const dsq_gptq_options *o;
    dsq_encoding enc;
    int group;
    uint64_t rows, cols, n_groups;
    gq_shape sh;
    gq_group *g;
    float *wp;          /* [rows][cols] weights in quantization order */
    uint8_t *code;      /* [rows][cols] chosen code per element, original column order */
    const float *imp;   /* [cols] diag(H)/n in original order (k-quant importance) */
    uint64_t *perm;     /* position → original column */
    uint64_t *pos;      /* original column → position */
    float ts;           /* NVFP4 tensor scale */
} gq;

static dsq_qtensor_buf group_buf(const gq *q, gq_group *g) {
    uint8_t *s = g->lay.scale_bytes ? g->bytes + g->lay.data_bytes : NULL;
    uint8_t *m = g->lay.min_bytes ? g->bytes + g->lay.data_bytes + g->lay.scale_bytes : NULL;
    return (dsq_qtensor_buf){q->enc, q->rows, g->cols, q->group, g->bytes, s, m, g->ts};
}

/* Choose group g's parameters from the current weights, then the value of every code per sub-block. */
static dsq_status choose(gq *q, gq_group *g, dsq_err *err) {
    uint64_t rows = q->rows, w = g->cols;
    float *x = dsq_malloc(rows * w * sizeof *x);
    DSQ_RETURN_IF(!x, err, DSQ_ERR_NOMEM, "GPTQ: out of memory");
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t j = 0; j < w; j++) x[r * w + j] = q->wp[r * q->cols + q->pos[g->c0 + j]];
    dsq_qtensor_buf b = group_buf(q, g);
    b.tensor_scale = q->ts;
    float imp_local[256];
    const float *imp = NULL;
    if (dsq_kquant_block_bytes(q->enc) && q->imp && w <= 256) {
        memcpy(imp_local, q->imp + g->c0, w * sizeof *imp_local);
        imp = imp_local;
    }
    dsq_codec_options co = {.name = q->o->name, .importance = imp};
    dsq_status s = dsq_codec_encode(&b, x, 0, rows, &co, err);
    dsq_free(x);
    DSQ_TRY(s);
    g->ts = b.tensor_scale;
    uint64_t nsub = dsq_ceil_div(w, q->sh.sub);
    int nc = q->sh.ncodes;
    g->levels = dsq_malloc(rows * nsub * (uint64_t)nc * sizeof *g->levels);
    DSQ_RETURN_IF(!g->levels, err, DSQ_ERR_NOMEM, "GPTQ: out of memory for the code values of %llu rows",
                  (unsigned long long)rows);
    dsq_status first = DSQ_OK;
    /* rows of one brows block share their scale: decode whole blocks so the decoder sees full blocks */
    uint64_t br = q->sh.brows;
#pragma omp parallel num_threads(q->o->threads > 0 ? q->o->threads : omp_get_max_threads()) if (rows * w * (uint64_t)nc > 65536)
    {
        float *row = dsq_malloc(br * w * sizeof *row);
        uint8_t *copy = dsq_malloc(g->lay.data_bytes ? (size_t)(br * g->lay.row_bytes) : 1);
#pragma omp for schedule(static)
        for (uint64_t r0 = 0; r0 < rows; r0 += br) {
            if (!row || !copy) {
#pragma omp critical(gq_first)
                first = DSQ_ERR_NOMEM;
                continue;
            }
            uint64_t nr = rows - r0 < br ? rows - r0 : br;
            /* a private copy of these rows' codes, so threads never write the shared group bytes */
            memcpy(copy, g->bytes + r0 * g->lay.row_bytes, (size_t)(nr * g->lay.row_bytes));
            dsq_qtensor v = dsq_qtensor_view(&b);
            v.rows = nr;
            v.data = copy;
            if (b.scales) v.scales = (const uint8_t *)b.scales + (r0 / br) * g->lay.scale_cols * (uint64_t)g->lay.scale_size;
            if (b.mins) v.mins = (const uint8_t *)b.mins + (r0 / br) * g->lay.scale_cols * (uint64_t)g->lay.min_size;
            v.tensor_scale = g->ts;
            dsq_codec_options dco = {.allow_nonfinite = true};
            for (int k = 0; k < nc; k++) {
                for (uint64_t r = 0; r < nr; r++)
                    for (uint64_t sb = 0; sb < nsub; sb++) set_code(q->enc, copy + r * g->lay.row_bytes, sb * q->sh.sub, k);
                if (dsq_codec_decode(&v, 0, nr, row, &dco, NULL) != DSQ_OK) {
#pragma omp critical(gq_first)
                    first = DSQ_ERR_STATE;
                    break;
                }
                for (uint64_t r = 0; r < nr; r++)
                    for (uint64_t sb = 0; sb < nsub; sb++) {
                        float val = row[r * w + sb * q->sh.sub];
                        g->levels[((r0 + r) * nsub + sb) * (uint64_t)nc + (uint64_t)k] =
                            code_allowed(q->enc, k) && isfinite(val) ? val : INFINITY;
                    }
            }
        }
        dsq_free(row);
        dsq_free(copy);
    }
    DSQ_RETURN_IF(first != DSQ_OK, err, first, "%s: GPTQ: could not decode the chosen parameters",
                  q->o->name ? q->o->name : "tensor");
    g->chosen = true;
    return DSQ_OK;
}

/* Nearest representable value of x among the nc levels (first of equals). */
static inline int nearest(const float *lv, int nc, float x) {
    int best = 0;
    float bd = fabsf(x - lv[0]);
    for (int k = 1; k < nc; k++) {
        float d = fabsf(x - lv[k]);
        if (d < bd) bd = d, best = k;
    }
    return best;
}

static void gq_free(gq *q) {
    if (q->g)
        for (uint64_t i = 0; i < q->n_groups; i++) dsq_free(q->g[i].bytes), dsq_free(q->g[i].levels);
    dsq_free(q->g);
    dsq_free(q->wp);
    dsq_free(q->code);
    dsq_free((void *)q->imp);
    dsq_free(q->perm);
    dsq_free(q->pos);
}

/* Copy the groups' bytes (codes set) into dst. */
static dsq_status assemble(gq *q, dsq_qtensor_buf *dst, dsq_err *err) {
    dsq_codec_layout dl;
    DSQ_TRY(dsq_codec_layout_of(q->enc, q->rows, q->cols, q->group, &dl, err));
    dsq_codec_layout full;
    DSQ_TRY(dsq_codec_layout_of(q->enc, 1, q->sh.width, q->group, &full, err));
    for (uint64_t gi = 0; gi < q->n_groups; gi++) {
        gq_group *g = &q->g[gi];
        for (uint64_t r = 0; r < q->rows; r++) {
            uint8_t *row = g->bytes + r * g->lay.row_bytes;
            for (uint64_t j = 0; j < g->cols; j++) set_code(q->enc, row, j, q->code[r * q->cols + g->c0 + j]);
            memcpy((uint8_t *)dst->data + r * dl.row_bytes + gi * full.row_bytes, row, (size_t)g->lay.row_bytes);
        }
        for (uint64_t sr = 0; sr < g->lay.scale_rows; sr++) {
            if (g->lay.scale_bytes)
                memcpy((uint8_t *)dst->scales + (sr * dl.scale_cols + gi) * (uint64_t)dl.scale_size,
                       g->bytes + g->lay.data_bytes + sr * (uint64_t)g->lay.scale_size, (size_t)g->lay.scale_size);
            if (g->lay.min_bytes)
                memcpy((uint8_t *)dst->mins + (sr * dl.scale_cols + gi) * (uint64_t)dl.min_size,
                       g->bytes + g->lay.data_bytes + g->lay.scale_bytes + sr * (uint64_t)g->lay.min_size,
                       (size_t)g->lay.min_size);
        }
    }
    if (q->enc == DSQ_ENC_NVFP4) dst->tensor_scale = q->ts;
    return DSQ_OK;
}

static dsq_status setup(gq *q, const dsq_gptq_options *o, double *h, uint64_t n_rows, const float *w,
                        dsq_qtensor_buf *dst, dsq_err *err) {
    const char *nm = o->name ? o->name : "tensor";
    uint64_t rows = dst->rows, cols = dst->cols;
    q->o = o, q->enc = dst->enc, q->group = dst->group, q->rows = rows, q->cols = cols;
    q->sh = shape_of(dst->enc, dst->group, cols);
    q->n_groups = dsq_ceil_div(cols, q->sh.width);
    uint64_t rc;
    DSQ_RETURN_IF(!dsq_mul_u64(rows, cols, &rc) || rc > (1ull << 40), err, DSQ_ERR_OVERFLOW, "%s: GPTQ: %llux%llu is too large",
                  nm, (unsigned long long)rows, (unsigned long long)cols);
    q->g = dsq_calloc(q->n_groups, sizeof *q->g);
    q->wp = dsq_malloc(rc * sizeof *q->wp);
    q->code = dsq_malloc(rc);
    float *imp = dsq_malloc(cols * sizeof *imp);
    q->imp = imp;
    q->perm = dsq_malloc(cols * sizeof *q->perm);
    q->pos = dsq_malloc(cols * sizeof *q->pos);
    DSQ_RETURN_IF(!q->g || !q->wp || !q->code || !imp || !q->perm || !q->pos, err, DSQ_ERR_NOMEM,
                  "%s: GPTQ: out of memory for %llux%llu", nm, (unsigned long long)rows, (unsigned long long)cols);
    float amax = 0;
    for (uint64_t i = 0; i < rc; i++) {
        DSQ_RETURN_IF(!isfinite(w[i]), err, DSQ_ERR_NONFINITE, "%s: GPTQ: weight [%llu, %llu] is NaN or infinite", nm,
                      (unsigned long long)(i / cols), (unsigned long long)(i % cols));
        amax = fabsf(w[i]) > amax ? fabsf(w[i]) : amax;
    }
    q->ts = dst->enc == DSQ_ENC_NVFP4 ? (dst->tensor_scale > 0 ? dst->tensor_scale : dsq_codec_nvfp4_tensor_scale(amax)) : 0;
    if (q->enc == DSQ_ENC_NVFP4 && q->ts == 0) q->ts = 1.0f;
    for (uint64_t c = 0; c < cols; c++) {
        double d = h[c * cols + c];
        DSQ_RETURN_IF(!isfinite(d) || d < 0, err, DSQ_ERR_NONFINITE, "%s: GPTQ: Hessian diagonal %llu is %g", nm,
                      (unsigned long long)c, d);
        imp[c] = (float)(d / (double)n_rows);
        q->perm[c] = c;
    }
    if (o->act_order) { /* decreasing H[c][c], ties by column: a stable insertion-free sort */
        for (uint64_t a = 1; a < cols; a++) {
            uint64_t v = q->perm[a], b = a;
            while (b > 0 && h[q->perm[b - 1] * cols + q->perm[b - 1]] < h[v * cols + v]) q->perm[b] = q->perm[b - 1], b--;
            q->perm[b] = v;
        }
    }
    for (uint64_t i = 0; i < cols; i++) q->pos[q->perm[i]] = i;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t i = 0; i < cols; i++) q->wp[r * cols + i] = w[r * cols + q->perm[i]];
    for (uint64_t gi = 0; gi < q->n_groups; gi++) {
        gq_group *g = &q->g[gi];
        g->c0 = gi * q->sh.width;
        g->cols = cols - g->c0 < q->sh.width ? cols - g->c0 : q->sh.width;
        g->left = g->cols;
        DSQ_TRY(dsq_codec_layout_of(q->enc, rows, g->cols, q->group, &g->lay, err));
        g->bytes = dsq_calloc(1, (size_t)(g->lay.data_bytes + g->lay.scale_bytes + g->lay.min_bytes));
        DSQ_RETURN_IF(!g->bytes, err, DSQ_ERR_NOMEM, "%s: GPTQ: out of memory", nm);
    }
    return DSQ_OK;
}

/* H (permuted, damped) → U in place.  Dead columns (no input) get H[c][c] = 1. */
static dsq_status factor(const gq *q, double *h, double *u, double damp, dsq_err *err) {
    uint64_t n = q->cols;
    double mean = 0;
    for (uint64_t c = 0; c < n; c++) mean += h[c * n + c];
    mean /= (double)n;
    if (!(mean > 0)) mean = 1;
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j < n; j++) u[i * n + j] = h[q->perm[i] * n + q->perm[j]];
    for (uint64_t i = 0; i < n; i++) {
        if (u[i * n + i] == 0) u[i * n + i] = 1;
        u[i * n + i] += damp * mean;
    }
    return dsq_gptq_chol_inverse_upper(u, n, err);
}

dsq_status dsq_gptq_quantize(const dsq_gptq_options *opt, double *h, uint64_t n_rows, float *w, dsq_qtensor_buf *dst,
                             dsq_err *err) {
    dsq_gptq_options o;
    if (opt) o = *opt;
    else dsq_gptq_options_default(&o);
    const char *nm = o.name ? o.name : "tensor";
    DSQ_RETURN_IF(!dst || !h || !w, err, DSQ_ERR_ARG, "%s: GPTQ: missing argument", nm);
    DSQ_RETURN_IF(!dsq_gptq_supports(dst->enc), err, DSQ_ERR_ARG, "%s: GPTQ: encoding %d is not a lossy block encoding",
                  nm, (int)dst->enc);
    DSQ_RETURN_IF(!(o.damp > 0 && o.damp <= 10), err, DSQ_ERR_ARG, "%s: GPTQ: damping %g is outside (0, 10]", nm, o.damp);
    DSQ_RETURN_IF(o.block < 1 || o.block > DSQ_GPTQ_MAX_BLOCK, err, DSQ_ERR_ARG, "%s: GPTQ: block %d is outside 1..%d", nm,
                  o.block, DSQ_GPTQ_MAX_BLOCK);
    DSQ_RETURN_IF(n_rows < 1, err, DSQ_ERR_ARG, "%s: GPTQ: no calibration rows", nm);
    uint64_t rows = dst->rows, cols = dst->cols;
    if (rows == 0 || cols == 0) return DSQ_OK;
    gq q;
    memset(&q, 0, sizeof q);
    double *u = NULL;
    float *err_blk = NULL;
    dsq_status s = setup(&q, &o, h, n_rows, w, dst, err);
    uint64_t B = (uint64_t)o.block;
    if (s == DSQ_OK) {
        u = dsq_malloc(cols * cols * sizeof *u);
        err_blk = dsq_malloc(rows * B * sizeof *err_blk);
        if (!u || !err_blk) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: GPTQ: out of memory for a %llux%llu Hessian", nm,
                                            (unsigned long long)cols, (unsigned long long)cols);
    }
    if (s == DSQ_OK) {
        double damp = o.damp;
        for (int tries = 0;; tries++) {
            dsq_err local = DSQ_ERR_INIT;
            s = factor(&q, h, u, damp, &local);
            if (s != DSQ_ERR_RANGE || tries == 3) {
                if (s != DSQ_OK) dsq_err_set(err, s, "%s: %s (damping %g)", nm, local.msg, damp);
                dsq_err_clear(&local);
                break;
            }
            dsq_err_clear(&local);
            damp *= 10;
        }
    }
    int nth = o.threads > 0 ? o.threads : omp_get_max_threads();
    int nc = q.sh.ncodes;
    for (uint64_t i1 = 0; s == DSQ_OK && i1 < cols; i1 += B) {
        uint64_t i2 = i1 + B < cols ? i1 + B : cols;
        /* segments of columns whose groups are chosen: one parallel pass over the rows each (a
         * group's parameters are chosen, from every row, at the first column that needs them) */
        for (uint64_t i = i1; s == DSQ_OK && i < i2;) {
            gq_group *g0 = &q.g[q.perm[i] / q.sh.width];
            if (!g0->chosen) s = choose(&q, g0, err);
            if (s != DSQ_OK) break;
            uint64_t j = i + 1;
            while (j < i2 && q.g[q.perm[j] / q.sh.width].chosen) j++;
            uint64_t seg0 = i, seg1 = j;
#pragma omp parallel for schedule(static) num_threads(nth) if (rows * (seg1 - seg0) * (i2 - seg0) > 65536)
            for (uint64_t r = 0; r < rows; r++) {
                float *wr = q.wp + r * cols;
                for (uint64_t t = seg0; t < seg1; t++) {
                    uint64_t c = q.perm[t];
                    const gq_group *g = &q.g[c / q.sh.width];
                    uint64_t sb = (c - g->c0) / q.sh.sub, nsub = dsq_ceil_div(g->cols, q.sh.sub);
                    const float *lv = g->levels + (r * nsub + sb) * (uint64_t)nc;
                    const double *ut = u + t * cols;
                    int k = nearest(lv, nc, wr[t]);
                    float e = (float)(((double)wr[t] - (double)lv[k]) / ut[t]);
                    q.code[r * cols + c] = (uint8_t)k;
                    wr[t] = lv[k];
                    err_blk[r * B + (t - i1)] = e;
                    for (uint64_t v = t + 1; v < i2; v++) wr[v] -= (float)((double)e * ut[v]);
                }
            }
            for (uint64_t t = seg0; t < seg1; t++) {
                gq_group *g = &q.g[q.perm[t] / q.sh.width];
                if (--g->left == 0) dsq_free(g->levels), g->levels = NULL;
            }
            i = j;
        }
        if (s != DSQ_OK || i2 == cols) break;
        /* lazy update of the later columns: W[:, i2:] -= Err · U[i1:i2, i2:] */
#pragma omp parallel for schedule(static) num_threads(nth) if (rows * (i2 - i1) * (cols - i2) > 65536)
        for (uint64_t r = 0; r < rows; r++) {
            float *wr = q.wp + r * cols;
            const float *er = err_blk + r * B;
            for (uint64_t i = i1; i < i2; i++) {
                double e = er[i - i1];
                const double *ui = u + i * cols;
                for (uint64_t t = i2; t < cols; t++) wr[t] -= (float)(e * ui[t]);
            }
        }
    }
    if (s == DSQ_OK) s = assemble(&q, dst, err);
    if (s == DSQ_OK)
        for (uint64_t r = 0; r < rows; r++)
            for (uint64_t i = 0; i < cols; i++) w[r * cols + q.perm[i]] = q.wp[r * cols + i];
    dsq_free(u);
    dsq_free(err_blk);
    gq_free(&q);
    return s;
}
