/* Re-encoding step of the converter: each source matrix is read in row chunks (multiples of 128
 * rows, ≤ CHUNK_SRC bytes), re-encoded by lib/quant/dsq_codec.h in 128-row slabs spread over the
 * threads, and written at its planned slice.  Slabs are independent, so the bytes do not depend on
 * the thread count or the chunk size.  Two output buffers alternate: while the team encodes chunk
 * k, one of its threads writes chunk k-1 (in order, so the writer's streaming hashes still apply),
 * then joins the encoding (dynamic schedule). */
#define XXH_STATIC_LINKING_ONLY
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "convert_internal.h"
#include "dsq_codec.h"

#define CHUNK_SRC (32u << 20)
#define SLAB 128u

void dsq__cv_work_free(cv_work *w) {
    dsq_free(w->in);
    dsq_free(w->out);
    w->in = w->out = NULL;
    w->in_cap = w->out_cap = 0;
}

static bool grow(uint8_t **buf, size_t *cap, size_t need) {
    if (*cap >= need) return true;
    uint8_t *nb = dsq_realloc(*buf, need);
    if (!nb) return false;
    *buf = nb;
    *cap = need;
    return true;
}

/* A source viewed as a [rows, cols] matrix (leading dims folded into rows, rank ≤ 1 as one row). */
static void matrix_of(const cv_src *s, uint64_t *rows, uint64_t *cols) {
    *rows = 1;
    *cols = s->rank ? s->shape[s->rank - 1] : 1;
    for (int d = 0; d + 1 < s->rank; d++) *rows *= s->shape[d];
}

/* Rows per scale row of a stored source encoding. */
static uint64_t src_block_rows(const cv_src *s) { return s->s ? (s->br ? s->br : 1) : 1; }

typedef struct chunk_io {
    const cv_src *s;
    uint64_t rows, cols;
    uint64_t src_row_bytes, src_scale_row_bytes; /* per row / per scale row */
    dsq_codec_layout dl;                         /* target layout of the whole matrix */
    XXH3_state_t hw, hs;
} chunk_io;

/* Read rows [r0, r0+n) of the source into in: data, then scales. */
static dsq_status read_rows(dsq_convert_plan *p, chunk_io *c, uint64_t r0, uint64_t n, uint8_t *in, uint64_t *data_bytes,
                            uint64_t *scale_bytes, dsq_err *err) {
    const cv_src *s = c->s;
    *data_bytes = n * c->src_row_bytes;
    DSQ_TRY(dsq_st_read(p->st, s->w, r0 * c->src_row_bytes, in, (size_t)*data_bytes, err));
    XXH3_64bits_update(&c->hw, in, (size_t)*data_bytes);
    *scale_bytes = 0;
    if (s->s) {
        uint64_t br = src_block_rows(s), first = r0 / br, last = dsq_ceil_div(r0 + n, br);
        *scale_bytes = (last - first) * c->src_scale_row_bytes;
        DSQ_TRY(dsq_st_read(p->st, s->s, first * c->src_scale_row_bytes, in + *data_bytes, (size_t)*scale_bytes, err));
        XXH3_64bits_update(&c->hs, in + *data_bytes, (size_t)*scale_bytes);
    }
    return DSQ_OK;
}

/* An encoded chunk waiting to be written: rows [r0, r0+n) in data/scales/mins buffers. */
typedef struct pending {
    bool valid;
    uint64_t r0;
    dsq_codec_layout nl;
    const uint8_t *od, *os, *om;
} pending;

static dsq_status write_chunk(dsq_ctr_writer *w, uint32_t i, const pending *pw, const uint64_t *off, int p_scale,
                              int p_min, uint64_t row_bytes, uint64_t drb, uint64_t d_scale_row, uint64_t d_min_row,
                              dsq_err *err) {
    DSQ_TRY(dsq_ctr_writer_write(w, i, 0, off[0] + pw->r0 * row_bytes, pw->od, (size_t)pw->nl.data_bytes, err));
    if (p_scale >= 0)
        DSQ_TRY(dsq_ctr_writer_write(w, i, p_scale, off[p_scale] + (pw->r0 / drb) * d_scale_row, pw->os,
                                     (size_t)pw->nl.scale_bytes, err));
    if (p_min >= 0)
        DSQ_TRY(dsq_ctr_writer_write(w, i, p_min, off[p_min] + (pw->r0 / drb) * d_min_row, pw->om,
                                     (size_t)pw->nl.min_bytes, err));
    return DSQ_OK;
}

/* Largest |x| of the whole source (NVFP4 tensor scale over several chunks). */
static dsq_status source_amax(dsq_convert_plan *p, chunk_io *c, uint64_t chunk_rows, cv_work *work, float *amax,
                              dsq_err *err) {
    float *f = dsq_malloc((size_t)(SLAB * c->cols) * sizeof *f);
    DSQ_RETURN_IF(!f, err, DSQ_ERR_NOMEM, "out of memory");
    dsq_codec_options co = {.allow_nonfinite = p->opt.allow_nonfinite, .name = c->s->w->name};
    XXH3_state_t save_w = c->hw, save_s = c->hs;
    dsq_status s = DSQ_OK;
    *amax = 0;
    for (uint64_t r0 = 0; s == DSQ_OK && r0 < c->rows; r0 += chunk_rows) {
        uint64_t n = c->rows - r0 < chunk_rows ? c->rows - r0 : chunk_rows, db, sb;
        s = read_rows(p, c, r0, n, work->in, &db, &sb, err);
        dsq_qtensor q = {c->s->enc, n, c->cols, 0, work->in, c->s->s ? work->in + db : NULL, NULL, 0};
        for (uint64_t a = 0; s == DSQ_OK && a < n; a += SLAB) {
            uint64_t m = n - a < SLAB ? n - a : SLAB;
            s = dsq_codec_decode(&q, a, m, f, &co, err);
            for (uint64_t k = 0; s == DSQ_OK && k < m * c->cols; k++)
                if (fabsf(f[k]) > *amax && f[k] == f[k]) *amax = fabsf(f[k]);
        }
    }
    c->hw = save_w; /* the hashes cover the one pass that is written */
    c->hs = save_s;
    dsq_free(f);
    return s;
}

static dsq_status reencode_source(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, uint32_t k, cv_work *work,
                                  dsq_err *err) {
    const cv_out *o = &p->outs[i];
    const cv_src *s = &o->src[k];
    const dsq_ctr_tensor *t = dsq_ctr_writer_tensor(w, i);
    const char *name = s->w->name;
    chunk_io c;
    memset(&c, 0, sizeof c);
    c.s = s;
    matrix_of(s, &c.rows, &c.cols);
    c.src_row_bytes = s->w->n_bytes / c.rows;
    if (s->s) c.src_scale_row_bytes = s->s->n_bytes / dsq_ceil_div(c.rows, src_block_rows(s));
    DSQ_TRY(dsq_codec_layout_of(o->enc, c.rows, c.cols, o->group, &c.dl, err));
    DSQ_RETURN_IF((o->enc == DSQ_ENC_FP8_B128 || o->enc == DSQ_ENC_FP8_B128_F32) && (o->br != 128 || o->bc != 128), err,
                  DSQ_ERR_UNSUPPORTED, "%s: %s: FP8 blocks of %ux%u are not supported by the codecs", p->out, name,
                  o->br, o->bc);
    /* the part slices this source owns, in part order (DATA, SCALES, MINS or TENSOR_SCALE) */
    uint64_t off[DSQ_FILE_MAX_PARTS] = {0}, len[DSQ_FILE_MAX_PARTS] = {0};
    for (int q = 0; q < t->n_parts; q++) dsq_ctr_source_slice(t, &t->sources[k], q, &off[q], &len[q]);
    int p_scale = -1, p_min = -1, p_ts = -1;
    for (int q = 0; q < t->n_parts; q++) {
        if (t->parts[q].kind == DSQ_FILE_PART_SCALES) p_scale = q;
        if (t->parts[q].kind == DSQ_FILE_PART_MINS) p_min = q;
        if (t->parts[q].kind == DSQ_FILE_PART_TENSOR_SCALE) p_ts = q;
    }
    DSQ_RETURN_IF(len[0] != c.dl.data_bytes || (p_scale >= 0 && len[p_scale] != c.dl.scale_bytes) ||
                      (p_min >= 0 && len[p_min] != c.dl.min_bytes) || (p_ts >= 0 && len[p_ts] != 4),
                  err, DSQ_ERR_STATE, "%s: %s: container layout and codec layout of %s disagree", p->out, name,
                  dsq_ctr_encoding_name(o->enc));
    /* chunk rows: a multiple of 128, at most chunk_bytes (default CHUNK_SRC) source bytes, at least one slab */
    uint64_t chunk_cap = p->opt.chunk_bytes ? p->opt.chunk_bytes : CHUNK_SRC;
    uint64_t chunk_rows = SLAB;
    while (chunk_rows * 2 * c.src_row_bytes <= chunk_cap && chunk_rows < c.rows) chunk_rows *= 2;
    uint64_t n_max = chunk_rows < c.rows ? chunk_rows : c.rows;
    dsq_codec_layout cl;
    DSQ_TRY(dsq_codec_layout_of(o->enc, n_max, c.cols, o->group, &cl, err));
    size_t in_need = (size_t)(n_max * c.src_row_bytes + (s->s ? (dsq_ceil_div(n_max, src_block_rows(s)) + 1) * c.src_scale_row_bytes : 0));
    size_t out_one = (size_t)(cl.data_bytes + cl.scale_bytes + cl.min_bytes), out_need = 2 * out_one;
    DSQ_RETURN_IF(!grow(&work->in, &work->in_cap, in_need) || !grow(&work->out, &work->out_cap, out_need), err,
                  DSQ_ERR_NOMEM, "out of memory for a %zu-byte chunk", in_need + out_need);
    XXH3_64bits_reset(&c.hw);
    XXH3_64bits_reset(&c.hs);
    float ts = 0;
    bool whole = chunk_rows >= c.rows;
    if (o->enc == DSQ_ENC_NVFP4 && !whole) {
        float amax = 0;
        DSQ_TRY(source_amax(p, &c, chunk_rows, work, &amax, err));
        ts = dsq_codec_nvfp4_tensor_scale(amax);
    }
    uint64_t drb = c.dl.block_rows ? c.dl.block_rows : 1;
    uint64_t d_scale_row = c.dl.scale_cols * (uint64_t)c.dl.scale_size, d_min_row = c.dl.scale_cols * (uint64_t)c.dl.min_size;
    int threads = p->opt.threads;
    pending pw = {0};
    dsq_err werr;
    dsq_err_init(&werr);
    uint64_t parity = 0;
    for (uint64_t r0 = 0; r0 < c.rows; r0 += chunk_rows, parity ^= 1) {
        uint64_t n = c.rows - r0 < chunk_rows ? c.rows - r0 : chunk_rows, db, sb;
        DSQ_TRY(read_rows(p, &c, r0, n, work->in, &db, &sb, err));
        dsq_codec_layout nl;
        DSQ_TRY(dsq_codec_layout_of(o->enc, n, c.cols, o->group, &nl, err));
        uint8_t *od = work->out + parity * out_one, *os = od + nl.data_bytes, *om = os + nl.scale_bytes;
        uint64_t sbr = src_block_rows(s), slabs = dsq_ceil_div(n, SLAB);
        /* NVFP4 in one call picks its own tensor scale: one slab of work for one thread */
        bool split = !(o->enc == DSQ_ENC_NVFP4 && whole);
        int nt = split && slabs >= 2 * (uint64_t)threads ? threads : 1; /* tiny chunks: not worth a team */
        dsq_status first = DSQ_OK;
        dsq_err terr[64];
        int nerr = nt < 64 ? nt : 64;
        for (int e = 0; e < nerr; e++) dsq_err_init(&terr[e]);
        float got_ts = ts;
        dsq_status wst = DSQ_OK;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
#pragma omp single nowait
        if (pw.valid) wst = write_chunk(w, i, &pw, off, p_scale, p_min, c.dl.row_bytes, drb, d_scale_row, d_min_row, &werr);
#pragma omp for schedule(dynamic)
        for (uint64_t sl = 0; sl < (split ? slabs : 1); sl++) {
            uint64_t a = split ? sl * SLAB : 0, m = split ? (n - a < SLAB ? n - a : SLAB) : n;
            dsq_qtensor src = {s->enc, m, c.cols, 0, work->in + a * c.src_row_bytes,
                               s->s ? work->in + db + (a / sbr) * c.src_scale_row_bytes : NULL, NULL, 0};
            dsq_qtensor_buf dst = {o->enc, m, c.cols, o->group, od + a * c.dl.row_bytes,
                                   d_scale_row ? os + (a / drb) * d_scale_row : NULL,
                                   d_min_row ? om + (a / drb) * d_min_row : NULL, ts};
            dsq_codec_options co = {.allow_nonfinite = p->opt.allow_nonfinite, .name = name};
            int tid = omp_get_thread_num() % nerr;
            dsq_status st = dsq_codec_reencode(&src, &dst, &co, NULL, &terr[tid]);
            if (!split) got_ts = dst.tensor_scale;
            if (st != DSQ_OK) {
#pragma omp critical(cv_first)
                if (first == DSQ_OK) first = st;
            }
        }
        }
        if (wst != DSQ_OK) {
            for (int e = 0; e < nerr; e++) dsq_err_clear(&terr[e]);
            dsq_err_set(err, wst, "%s", werr.msg);
            dsq_err_clear(&werr);
            return wst;
        }
        if (first != DSQ_OK) {
            for (int e = 0; e < nerr; e++)
                if (terr[e].n && (!err || err->n == 0 || e == 0)) {
                    dsq_err_set(err, terr[e].status, "%s", terr[e].msg);
                    break;
                }
        }
        for (int e = 0; e < nerr; e++) dsq_err_clear(&terr[e]);
        DSQ_TRY(first);
        ts = got_ts;
        pw = (pending){true, r0, nl, od, os, om};
    }
    if (pw.valid) DSQ_TRY(write_chunk(w, i, &pw, off, p_scale, p_min, c.dl.row_bytes, drb, d_scale_row, d_min_row, err));
    if (p_ts >= 0) {
        uint8_t b[4];
        memcpy(b, &ts, 4);
        DSQ_TRY(dsq_ctr_writer_write(w, i, p_ts, off[p_ts], b, 4, err));
    }
    dsq_ctr_writer_set_source_hash(w, i, k, (uint64_t)XXH3_64bits_digest(&c.hw),
                                   s->s ? (uint64_t)XXH3_64bits_digest(&c.hs) : 0);
    return DSQ_OK;
}

dsq_status dsq__cv_run_reencode(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, cv_work *work, dsq_err *err) {
    for (uint32_t k = 0; k < p->outs[i].n_src; k++) DSQ_TRY(reencode_source(p, w, i, k, work, err));
    return DSQ_OK;
}
