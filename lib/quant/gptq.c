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

enum { CHOL_NB = 64, CHOL_TILE = 512, LAZY_TILE = 256 };

static int nthreads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

/* In place lower Cholesky factor L (A = L·Lᵀ, lower triangle; the upper one is not read) of A [n][n],
 * right-looking in column blocks of CHOL_NB: the block's columns are factored, the rows below solved
 * against them, the panel packed transposed, and the trailing lower triangle updated by a rank-CHOL_NB
 * product in cache tiles, rows over threads (each element is updated by one thread in a fixed order:
 * the result does not depend on the thread count).  False when A is not positive definite. */
static bool cholesky_lower_blocked(double *a, uint64_t n, double *pt, int threads) {
    for (uint64_t k0 = 0; k0 < n; k0 += CHOL_NB) {
        uint64_t k1 = n - k0 < CHOL_NB ? n : k0 + CHOL_NB, nb = k1 - k0;
        for (uint64_t j = k0; j < k1; j++) { /* the diagonal block */
            double d = a[j * n + j];
            for (uint64_t k = k0; k < j; k++) d -= a[j * n + k] * a[j * n + k];
            if (!(d > 0) || !isfinite(d)) return false;
            double l = sqrt(d);
            a[j * n + j] = l;
            for (uint64_t i = j + 1; i < k1; i++) {
                double t = a[i * n + j];
                for (uint64_t k = k0; k < j; k++) t -= a[i * n + k] * a[j * n + k];
                a[i * n + j] = t / l;
            }
        }
        if (k1 == n) break;
        uint64_t m = n - k1; /* rows below: solve against the block, pack Pᵀ [nb][m] */
#pragma omp parallel for schedule(static) num_threads(threads) if (m * nb * nb > 65536)
        for (uint64_t i = k1; i < n; i++) {
            double *ai = a + i * n;
            for (uint64_t j = k0; j < k1; j++) {
                double t = ai[j];
                const double *aj = a + j * n;
                for (uint64_t k = k0; k < j; k++) t -= ai[k] * aj[k];
                ai[j] = t / aj[j];
                pt[(j - k0) * m + (i - k1)] = ai[j];
            }
        }
        /* A[i][j] -= Σ_k P[i][k]·Pᵀ[k][j] for k1 ≤ j ≤ i: column tiles over threads, so that a tile of Pᵀ
         * (CHOL_NB × CHOL_TILE) stays in cache while every row below it streams through once */
        uint64_t tiles = dsq_ceil_div(m, CHOL_TILE);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (m * m * nb > (1u << 20))
        for (uint64_t tj = 0; tj < tiles; tj++) {
            uint64_t j0 = k1 + tj * CHOL_TILE, j1 = n - j0 < CHOL_TILE ? n : j0 + CHOL_TILE;
            for (uint64_t i = j0; i < n; i++) {
                double *ai = a + i * n;
                const double *pi = ai + k0;
                uint64_t e = i + 1 < j1 ? i + 1 : j1;
                for (uint64_t k = 0; k < nb; k++) {
                    const double f = pi[k], *pk = pt + k * m;
#pragma omp simd
                    for (uint64_t j = j0; j < e; j++) ai[j] -= f * pk[j - k1];
                }
            }
        }
    }
    return true;
}

/* In place X = L⁻¹ (lower) of the lower triangular L [n][n] (the upper triangle is zeroed), by rows in
 * blocks of CHOL_NB: row i of X is −(Σ_{k<i} L[i][k]·X[k][·])/L[i][i] with X[i][i] = 1/L[i][i]; a block's
 * rows of L are copied to lb [CHOL_NB][n] first, then their sums over the earlier blocks' rows are formed
 * in place, rows over threads, and the block finished row by row. */
static void tri_inverse_lower_blocked(double *a, uint64_t n, double *lb, int threads) {
    for (uint64_t i0 = 0; i0 < n; i0 += CHOL_NB) {
        uint64_t i1 = n - i0 < CHOL_NB ? n : i0 + CHOL_NB;
        for (uint64_t i = i0; i < i1; i++) {
            memcpy(lb + (i - i0) * n, a + i * n, (size_t)(i + 1) * sizeof *lb);
            memset(a + i * n, 0, (size_t)n * sizeof *a);
        }
        /* the earlier blocks: column tiles over threads, each row of X read once per block of rows */
        uint64_t tiles = dsq_ceil_div(i0, CHOL_TILE);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (i0 * i0 * (i1 - i0) > (1u << 20))
        for (uint64_t tj = 0; tj < tiles; tj++) {
            uint64_t j0 = tj * CHOL_TILE, j1 = i0 - j0 < CHOL_TILE ? i0 : j0 + CHOL_TILE;
            for (uint64_t k = j0; k < i0; k++) { /* X[k][j] = 0 for j > k */
                const double *xk = a + k * n;
                uint64_t e = k + 1 < j1 ? k + 1 : j1;
                for (uint64_t i = i0; i < i1; i++) {
                    double *acc = a + i * n;
                    const double f = lb[(i - i0) * n + k];
#pragma omp simd
                    for (uint64_t j = j0; j < e; j++) acc[j] += f * xk[j];
                }
            }
        }
        for (uint64_t i = i0; i < i1; i++) { /* this block's own rows, in order */
            double *acc = a + i * n;
            const double *li = lb + (i - i0) * n;
            for (uint64_t k = i0; k < i; k++) {
                const double f = li[k], *xk = a + k * n;
#pragma omp simd
                for (uint64_t j = 0; j <= k; j++) acc[j] += f * xk[j];
            }
            double d = li[i];
            for (uint64_t j = 0; j < i; j++) acc[j] = -acc[j] / d;
            acc[i] = 1.0 / d;
        }
    }
}

/* Reverse both indices of A [n][n] in place: (i, j) ↔ (n−1−i, n−1−j) is the flat index k ↔ n²−1−k. */
static void reverse_both(double *a, uint64_t n) {
    for (uint64_t k = 0, e = n * n - 1; k < e; k++, e--) {
        double t = a[k];
        a[k] = a[e], a[e] = t;
    }
}

/* A ← U (upper, A⁻¹ = Uᵀ·U) without forming A⁻¹: with J the reversal, J·A·J = L·Lᵀ (lower L), so
 * A = R·Rᵀ for the upper R = J·L·J and A⁻¹ = R⁻ᵀ·R⁻¹: U = R⁻¹ = J·L⁻¹·J.  One Cholesky (n³/3) and one
 * triangular inverse (n³/6) in place, CHOL_NB·n doubles of scratch. */
static dsq_status chol_inverse_upper(double *a, uint64_t n, int threads, dsq_err *err) {
    if (n == 0) return DSQ_OK;
    DSQ_RETURN_IF(n > (1u << 24), err, DSQ_ERR_OVERFLOW, "GPTQ: a %llux%llu Hessian is too large", (unsigned long long)n,
                  (unsigned long long)n);
    threads = nthreads(threads);
    double *tmp = dsq_malloc(CHOL_NB * n * sizeof *tmp); /* Pᵀ [CHOL_NB][n − k1], then L's rows [CHOL_NB][n] */
    DSQ_RETURN_IF(!tmp, err, DSQ_ERR_NOMEM, "GPTQ: no memory for the factorisation of a %llux%llu Hessian",
                  (unsigned long long)n, (unsigned long long)n);
    reverse_both(a, n);
    bool ok = cholesky_lower_blocked(a, n, tmp, threads);
    if (ok) tri_inverse_lower_blocked(a, n, tmp, threads);
    dsq_free(tmp);
    DSQ_RETURN_IF(!ok, err, DSQ_ERR_RANGE, "GPTQ: the damped Hessian is not positive definite");
    reverse_both(a, n);
    return DSQ_OK;
}

dsq_status dsq_gptq_chol_inverse_upper(double *a, uint64_t n, dsq_err *err) { return chol_inverse_upper(a, n, 0, err); }

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
    const float *imp;   /* [cols] diag(H)/n in original order (k-quant importance), the factor's */
    const uint64_t *perm; /* position → original column, the factor's */
    const uint64_t *pos;  /* original column → position, the factor's */
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

struct dsq_gptq_factor {
    uint64_t cols, n_rows;
    bool act_order;
    double damp;    /* the damping that gave a positive definite H (the option's, or 10×, 100×, 1000× it) */
    float *imp;     /* [cols] diag(H)/n_rows, original order */
    uint64_t *perm; /* position → original column */
    uint64_t *pos;  /* original column → position */
    double *u;      /* [cols][cols] upper, (damped, permuted H)⁻¹ = Uᵀ·U */
};

void dsq_gptq_factor_free(dsq_gptq_factor *f) {
    if (!f) return;
    dsq_free(f->imp), dsq_free(f->perm), dsq_free(f->pos), dsq_free(f->u);
    dsq_free(f);
}
double dsq_gptq_factor_damp(const dsq_gptq_factor *f) { return f->damp; }
uint64_t dsq_gptq_factor_cols(const dsq_gptq_factor *f) { return f->cols; }

/* H (permuted, damped) → U in place.  Dead columns (no input) get H[c][c] = 1. */
static dsq_status factor_once(dsq_gptq_factor *f, const double *h, double damp, int threads, dsq_err *err) {
    uint64_t n = f->cols;
    double mean = 0;
    for (uint64_t c = 0; c < n; c++) mean += h[c * n + c];
    mean /= (double)n;
    if (!(mean > 0)) mean = 1;
    double *u = f->u;
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j < n; j++) u[i * n + j] = h[f->perm[i] * n + f->perm[j]];
    for (uint64_t i = 0; i < n; i++) {
        if (u[i * n + i] == 0) u[i * n + i] = 1;
        u[i * n + i] += damp * mean;
    }
    return chol_inverse_upper(u, n, threads, err);
}

dsq_status dsq_gptq_factor_create(const dsq_gptq_options *opt, const double *h, uint64_t cols, uint64_t n_rows,
                                  dsq_gptq_factor **out, dsq_err *err) {
    dsq_gptq_options o;
    if (opt) o = *opt;
    else dsq_gptq_options_default(&o);
    const char *nm = o.name ? o.name : "tensor";
    *out = NULL;
    DSQ_RETURN_IF(!h, err, DSQ_ERR_ARG, "%s: GPTQ: missing Hessian", nm);
    DSQ_RETURN_IF(!(o.damp > 0 && o.damp <= 10), err, DSQ_ERR_ARG, "%s: GPTQ: damping %g is outside (0, 10]", nm, o.damp);
    DSQ_RETURN_IF(n_rows < 1, err, DSQ_ERR_ARG, "%s: GPTQ: no calibration rows", nm);
    DSQ_RETURN_IF(cols < 1 || cols > (1u << 24), err, DSQ_ERR_ARG, "%s: GPTQ: %llu input columns", nm,
                  (unsigned long long)cols);
    dsq_gptq_factor *f = dsq_calloc(1, sizeof *f);
    DSQ_RETURN_IF(!f, err, DSQ_ERR_NOMEM, "%s: GPTQ: out of memory", nm);
    f->cols = cols, f->n_rows = n_rows, f->act_order = o.act_order;
    f->imp = dsq_malloc(cols * sizeof *f->imp);
    f->perm = dsq_malloc(cols * sizeof *f->perm);
    f->pos = dsq_malloc(cols * sizeof *f->pos);
    f->u = dsq_malloc(cols * cols * sizeof *f->u);
    dsq_status s = DSQ_OK;
    if (!f->imp || !f->perm || !f->pos || !f->u)
        s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: GPTQ: out of memory for a %llux%llu Hessian", nm, (unsigned long long)cols,
                        (unsigned long long)cols);
    for (uint64_t c = 0; s == DSQ_OK && c < cols; c++) {
        double d = h[c * cols + c];
        if (!isfinite(d) || d < 0)
            s = dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: GPTQ: Hessian diagonal %llu is %g", nm, (unsigned long long)c, d);
        else f->imp[c] = (float)(d / (double)n_rows), f->perm[c] = c;
    }
    for (uint64_t i = 0; s == DSQ_OK && i < cols * cols; i++)
        if (!isfinite(h[i]))
            s = dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: GPTQ: Hessian [%llu, %llu] is NaN or infinite", nm,
                            (unsigned long long)(i / cols), (unsigned long long)(i % cols));
    if (s == DSQ_OK && o.act_order) { /* decreasing H[c][c], ties by column: a stable insertion sort */
        for (uint64_t a = 1; a < cols; a++) {
            uint64_t v = f->perm[a], b = a;
            while (b > 0 && h[f->perm[b - 1] * cols + f->perm[b - 1]] < h[v * cols + v]) f->perm[b] = f->perm[b - 1], b--;
            f->perm[b] = v;
        }
    }
    if (s == DSQ_OK)
        for (uint64_t i = 0; i < cols; i++) f->pos[f->perm[i]] = i;
    double damp = o.damp;
    for (int tries = 0; s == DSQ_OK; tries++) {
        dsq_err local = DSQ_ERR_INIT;
        s = factor_once(f, h, damp, o.threads, &local);
        if (s != DSQ_ERR_RANGE || tries == 3) {
            if (s != DSQ_OK) dsq_err_set(err, s, "%s: %s (damping %g)", nm, local.msg, damp);
            dsq_err_clear(&local);
            break;
        }
        dsq_err_clear(&local);
        damp *= 10;
    }
    if (s != DSQ_OK) {
        dsq_gptq_factor_free(f);
        return s;
    }
    f->damp = damp;
    *out = f;
    return DSQ_OK;
}

static dsq_status setup(gq *q, const dsq_gptq_options *o, const dsq_gptq_factor *f, const float *w, dsq_qtensor_buf *dst,
                        dsq_err *err) {
    const char *nm = o->name ? o->name : "tensor";
    uint64_t rows = dst->rows, cols = dst->cols;
    q->o = o, q->enc = dst->enc, q->group = dst->group, q->rows = rows, q->cols = cols;
    q->sh = shape_of(dst->enc, dst->group, cols);
    q->n_groups = dsq_ceil_div(cols, q->sh.width);
    q->imp = f->imp, q->perm = f->perm, q->pos = f->pos;
    uint64_t rc;
    DSQ_RETURN_IF(!dsq_mul_u64(rows, cols, &rc) || rc > (1ull << 40), err, DSQ_ERR_OVERFLOW, "%s: GPTQ: %llux%llu is too large",
                  nm, (unsigned long long)rows, (unsigned long long)cols);
    q->g = dsq_calloc(q->n_groups, sizeof *q->g);
    q->wp = dsq_malloc(rc * sizeof *q->wp);
    q->code = dsq_malloc(rc);
    DSQ_RETURN_IF(!q->g || !q->wp || !q->code, err, DSQ_ERR_NOMEM, "%s: GPTQ: out of memory for %llux%llu", nm,
                  (unsigned long long)rows, (unsigned long long)cols);
    float amax = 0;
    for (uint64_t i = 0; i < rc; i++) {
        DSQ_RETURN_IF(!isfinite(w[i]), err, DSQ_ERR_NONFINITE, "%s: GPTQ: weight [%llu, %llu] is NaN or infinite", nm,
                      (unsigned long long)(i / cols), (unsigned long long)(i % cols));
        amax = fabsf(w[i]) > amax ? fabsf(w[i]) : amax;
    }
    q->ts = dst->enc == DSQ_ENC_NVFP4 ? (dst->tensor_scale > 0 ? dst->tensor_scale : dsq_codec_nvfp4_tensor_scale(amax)) : 0;
    if (q->enc == DSQ_ENC_NVFP4 && q->ts == 0) q->ts = 1.0f;
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

/* The options in force (opt or the defaults) and the checks both entry points make before any work:
 * arguments present (have: the Hessian or its factor), a lossy block encoding, a block size in range;
 * *name (may be NULL) receives the tensor name for messages. */
static dsq_status gptq_opts(const dsq_gptq_options *opt, bool have, const float *w, const dsq_qtensor_buf *dst,
                            dsq_gptq_options *o, const char **name, dsq_err *err) {
    if (opt) *o = *opt;
    else dsq_gptq_options_default(o);
    const char *nm = o->name ? o->name : "tensor";
    if (name) *name = nm;
    DSQ_RETURN_IF(!dst || !have || !w, err, DSQ_ERR_ARG, "%s: GPTQ: missing argument", nm);
    DSQ_RETURN_IF(!dsq_gptq_supports(dst->enc), err, DSQ_ERR_ARG, "%s: GPTQ: encoding %d is not a lossy block encoding",
                  nm, (int)dst->enc);
    DSQ_RETURN_IF(o->block < 1 || o->block > DSQ_GPTQ_MAX_BLOCK, err, DSQ_ERR_ARG, "%s: GPTQ: block %d is outside 1..%d",
                  nm, o->block, DSQ_GPTQ_MAX_BLOCK);
    return DSQ_OK;
}

dsq_status dsq_gptq_quantize_factored(const dsq_gptq_options *opt, const dsq_gptq_factor *f, float *w,
                                      dsq_qtensor_buf *dst, dsq_err *err) {
    dsq_gptq_options o;
    const char *nm;
    DSQ_TRY(gptq_opts(opt, f != NULL, w, dst, &o, &nm, err));
    uint64_t rows = dst->rows, cols = dst->cols;
    if (rows == 0 || cols == 0) return DSQ_OK;
    DSQ_RETURN_IF(cols != f->cols, err, DSQ_ERR_ARG, "%s: GPTQ: %llu columns, but the Hessian factor has %llu", nm,
                  (unsigned long long)cols, (unsigned long long)f->cols);
    const double *u = f->u;
    gq q;
    memset(&q, 0, sizeof q);
    float *err_blk = NULL;
    dsq_status s = setup(&q, &o, f, w, dst, err);
    uint64_t B = (uint64_t)o.block;
    if (s == DSQ_OK) {
        err_blk = dsq_malloc(rows * B * sizeof *err_blk);
        if (!err_blk) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: GPTQ: out of memory", nm);
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
        /* lazy update of the later columns: W[:, i2:] -= Err · U[i1:i2, i2:], in column tiles so that a
         * tile of U (block × LAZY_TILE doubles) stays in cache over a thread's rows; each element still
         * takes the block's errors in order (the bytes do not depend on the tiling or the threads) */
#pragma omp parallel num_threads(nth) if (rows * (i2 - i1) * (cols - i2) > 65536)
        {
            uint64_t nt = (uint64_t)omp_get_num_threads(), id = (uint64_t)omp_get_thread_num();
            uint64_t r0 = rows * id / nt, r1 = rows * (id + 1) / nt;
            for (uint64_t t0 = i2; t0 < cols; t0 += LAZY_TILE) {
                uint64_t t1 = cols - t0 < LAZY_TILE ? cols : t0 + LAZY_TILE;
                for (uint64_t r = r0; r < r1; r++) {
                    float *wr = q.wp + r * cols;
                    const float *er = err_blk + r * B;
                    for (uint64_t i = i1; i < i2; i++) {
                        const double e = er[i - i1], *ui = u + i * cols;
#pragma omp simd
                        for (uint64_t t = t0; t < t1; t++) wr[t] -= (float)(e * ui[t]);
                    }
                }
            }
        }
    }
    if (s == DSQ_OK) s = assemble(&q, dst, err);
    if (s == DSQ_OK)
        for (uint64_t r = 0; r < rows; r++)
            for (uint64_t i = 0; i < cols; i++) w[r * cols + q.perm[i]] = q.wp[r * cols + i];
    dsq_free(err_blk);
    gq_free(&q);
    return s;
}

dsq_status dsq_gptq_quantize(const dsq_gptq_options *opt, double *h, uint64_t n_rows, float *w, dsq_qtensor_buf *dst,
                             dsq_err *err) {
    dsq_gptq_options o;
    DSQ_TRY(gptq_opts(opt, h != NULL, w, dst, &o, NULL, err));
    if (dst->rows == 0 || dst->cols == 0) return DSQ_OK;
    dsq_gptq_factor *f = NULL;
    DSQ_TRY(dsq_gptq_factor_create(&o, h, dst->cols, n_rows, &f, err));
    dsq_status s = dsq_gptq_quantize_factored(&o, f, w, dst, err);
    dsq_gptq_factor_free(f);
    return s;
}
