/* Re-encoding step of the converter: each source matrix is read in row chunks (multiples of 128
 * rows, ≤ CHUNK_SRC bytes), re-encoded by lib/quant/dsq_codec.h in 128-row slabs spread over the
 * threads, and written at its planned slice.  Slabs are independent, so the bytes do not depend on
 * the thread count or the chunk size.  The chunks of all sources of an output tensor (a layer's
 * 256 experts, say) form one pipeline: while the team encodes chunk j, one of its threads writes
 * chunk j-1 and reads chunk j+1, then joins the encoding (see dsq__cv_run_reencode). */
#define XXH_STATIC_LINKING_ONLY
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "convert_internal.h"
#include "dsq_codec.h"
#include "dsq_kquant.h"

#define CHUNK_SRC (32u << 20)
#define SLAB 128u

void dsq__cv_work_free(cv_work *w) {
    for (int q = 0; q < 2; q++) {
        dsq_free(w->ins[q]);
        dsq_free(w->outs[q]);
        w->ins[q] = w->outs[q] = NULL;
        w->in_caps[q] = w->out_caps[q] = 0;
    }
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
/* Source bytes (data and scale rows) that a chunk of `rows` rows reads. */
static size_t chunk_in_bytes(const chunk_io *c, uint64_t rows) {
    const cv_src *s = c->s;
    return (size_t)(rows * c->src_row_bytes +
                    (s->s ? (dsq_ceil_div(rows, src_block_rows(s)) + 1) * c->src_scale_row_bytes : 0));
}

/* NVFP4 tensor scale of a source re-encoded in several chunks, chosen over all of it as a one-chunk
 * re-encode chooses it (dsq_codec_reencode): from an MXFP4 source the power of two that fits the
 * most blocks exactly, otherwise from the largest finite |value|. */
static dsq_status source_tensor_scale(dsq_convert_plan *p, chunk_io *c, uint64_t chunk_rows, float *ts,
                                      dsq_err *err) {
    size_t in_need = chunk_in_bytes(c, chunk_rows);
    bool fit = c->s->enc == DSQ_ENC_MXFP4;
    float *f = fit ? NULL : dsq_malloc((size_t)(SLAB * c->cols) * sizeof *f);
    uint8_t *in = dsq_malloc(in_need);
    if ((!fit && !f) || !in) {
        dsq_free(f);
        dsq_free(in);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory for a %zu-byte chunk", in_need);
    }
    dsq_codec_options co = {.allow_nonfinite = p->opt.allow_nonfinite, .name = c->s->w->name};
    XXH3_state_t save_w = c->hw, save_s = c->hs;
    dsq_nvfp4_fit nf;
    dsq_nvfp4_fit_init(&nf);
    dsq_status s = DSQ_OK;
    float amax = 0;
    for (uint64_t r0 = 0; s == DSQ_OK && r0 < c->rows; r0 += chunk_rows) {
        uint64_t n = c->rows - r0 < chunk_rows ? c->rows - r0 : chunk_rows, db, sb;
        s = read_rows(p, c, r0, n, in, &db, &sb, err);
        dsq_qtensor q = {c->s->enc, n, c->cols, 0, in, c->s->s ? in + db : NULL, NULL, 0};
        if (s == DSQ_OK && fit) dsq_nvfp4_fit_add(&nf, &q);
        for (uint64_t a = 0; s == DSQ_OK && !fit && a < n; a += SLAB) {
            uint64_t m = n - a < SLAB ? n - a : SLAB;
            s = dsq_codec_decode(&q, a, m, f, &co, err);
            for (uint64_t k = 0; s == DSQ_OK && k < m * c->cols; k++) {
                float v = fabsf(f[k]);
                if (v > amax && v <= 3.4028235e38f) amax = v; /* finite values only, as dsq_codec_reencode */
            }
        }
    }
    c->hw = save_w; /* the hashes cover the one pass that is written */
    c->hs = save_s;
    dsq_free(f);
    dsq_free(in);
    *ts = fit ? dsq_nvfp4_fit_scale(&nf) : dsq_codec_nvfp4_tensor_scale(amax);
    if (*ts == 0.0f) *ts = 1.0f; /* all-zero tensor: any scale (dsq_codec_reencode's choice) */
    return s;
}

/* One source of an output tensor, ready to be read in chunks. */
typedef struct src_ctx {
    uint32_t k;
    chunk_io c;
    uint64_t off[DSQ_FILE_MAX_PARTS];
    int p_scale, p_min, p_ts;
    uint64_t chunk_rows, drb, d_scale_row, d_min_row;
    bool whole;
    float ts; /* NVFP4 tensor scale: from a pre-pass over several chunks, or picked by the one-chunk encode */
    const dsq_qtensor *pre; /* already encoded (dsq_convert_options.pre_encoded), else NULL */
} src_ctx;

/* Rows [row0, row0+m) of a pre-encoded source into a slab's buffers. */
static void copy_pre(const src_ctx *x, uint64_t row0, uint64_t m, dsq_qtensor_buf *dst) {
    const dsq_codec_layout *dl = &x->c.dl;
    memcpy(dst->data, (const uint8_t *)x->pre->data + row0 * dl->row_bytes, (size_t)(m * dl->row_bytes));
    uint64_t s0 = row0 / x->drb, ns = dsq_ceil_div(row0 + m, x->drb) - s0;
    if (dst->scales) memcpy(dst->scales, (const uint8_t *)x->pre->scales + s0 * x->d_scale_row, (size_t)(ns * x->d_scale_row));
    if (dst->mins) memcpy(dst->mins, (const uint8_t *)x->pre->mins + s0 * x->d_min_row, (size_t)(ns * x->d_min_row));
}

static dsq_status prepare_source(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, uint32_t k, src_ctx *x,
                                 dsq_err *err) {
    const cv_out *o = &p->outs[i];
    const cv_src *s = &o->src[k];
    const dsq_ctr_tensor *t = dsq_ctr_writer_tensor(w, i);
    const char *name = s->w->name;
    memset(x, 0, sizeof *x);
    x->k = k;
    chunk_io *c = &x->c;
    c->s = s;
    matrix_of(s, &c->rows, &c->cols);
    c->src_row_bytes = s->w->n_bytes / c->rows;
    if (s->s) c->src_scale_row_bytes = s->s->n_bytes / dsq_ceil_div(c->rows, src_block_rows(s));
    DSQ_TRY(dsq_codec_layout_of(o->enc, c->rows, c->cols, o->group, &c->dl, err));
    DSQ_RETURN_IF((o->enc == DSQ_ENC_FP8_B128 || o->enc == DSQ_ENC_FP8_B128_F32) && (o->br != 128 || o->bc != 128), err,
                  DSQ_ERR_UNSUPPORTED, "%s: %s: FP8 blocks of %ux%u are not supported by the codecs", p->out, name,
                  o->br, o->bc);
    /* the part slices this source owns, in part order (DATA, SCALES, MINS or TENSOR_SCALE) */
    uint64_t len[DSQ_FILE_MAX_PARTS] = {0};
    for (int q = 0; q < t->n_parts; q++) dsq_ctr_source_slice(t, &t->sources[k], q, &x->off[q], &len[q]);
    x->p_scale = x->p_min = x->p_ts = -1;
    for (int q = 0; q < t->n_parts; q++) {
        if (t->parts[q].kind == DSQ_FILE_PART_SCALES) x->p_scale = q;
        if (t->parts[q].kind == DSQ_FILE_PART_MINS) x->p_min = q;
        if (t->parts[q].kind == DSQ_FILE_PART_TENSOR_SCALE) x->p_ts = q;
    }
    DSQ_RETURN_IF(len[0] != c->dl.data_bytes || (x->p_scale >= 0 && len[x->p_scale] != c->dl.scale_bytes) ||
                      (x->p_min >= 0 && len[x->p_min] != c->dl.min_bytes) || (x->p_ts >= 0 && len[x->p_ts] != 4),
                  err, DSQ_ERR_STATE, "%s: %s: container layout and codec layout of %s disagree", p->out, name,
                  dsq_ctr_encoding_name(o->enc));
    /* chunk rows: a multiple of 128, at most chunk_bytes (default CHUNK_SRC) source bytes, at least one slab */
    uint64_t chunk_cap = p->opt.chunk_bytes ? p->opt.chunk_bytes : CHUNK_SRC;
    x->chunk_rows = SLAB;
    while (x->chunk_rows * 2 * c->src_row_bytes <= chunk_cap && x->chunk_rows < c->rows) x->chunk_rows *= 2;
    x->whole = x->chunk_rows >= c->rows;
    x->drb = c->dl.block_rows ? c->dl.block_rows : 1;
    x->d_scale_row = c->dl.scale_cols * (uint64_t)c->dl.scale_size;
    x->d_min_row = c->dl.scale_cols * (uint64_t)c->dl.min_size;
    XXH3_64bits_reset(&c->hw);
    XXH3_64bits_reset(&c->hs);
    if (p->opt.pre_encoded) x->pre = p->opt.pre_encoded(p->opt.pre_user, name);
    if (x->pre) {
        const dsq_qtensor *q = x->pre;
        DSQ_RETURN_IF(q->enc != o->enc || q->rows != c->rows || q->cols != c->cols || q->group != o->group ||
                          (c->dl.scale_bytes && !q->scales) || (c->dl.min_bytes && !q->mins),
                      err, DSQ_ERR_STATE, "%s: %s: the pre-encoded tensor does not match the plan (%s)", p->out, name,
                      dsq_ctr_encoding_name(o->enc));
        x->ts = q->tensor_scale;
    }
    if (o->enc == DSQ_ENC_NVFP4 && !x->whole && !x->pre) {
        DSQ_TRY(source_tensor_scale(p, c, x->chunk_rows, &x->ts, err));
    }
    return DSQ_OK;
}

/* After the last chunk of a source: its tensor scale part and its source hashes. */
static dsq_status finish_source(dsq_ctr_writer *w, uint32_t i, src_ctx *x, dsq_err *err) {
    if (x->p_ts >= 0) {
        uint8_t b[4];
        memcpy(b, &x->ts, 4);
        DSQ_TRY(dsq_ctr_writer_write(w, i, x->p_ts, x->off[x->p_ts], b, 4, err));
    }
    dsq_ctr_writer_set_source_hash(w, i, x->k, (uint64_t)XXH3_64bits_digest(&x->c.hw),
                                   x->c.s->s ? (uint64_t)XXH3_64bits_digest(&x->c.hs) : 0);
    return DSQ_OK;
}

/* A chunk of some source in flight: read into in slot `slot`, encoded into out slot `slot`. */
typedef struct item {
    src_ctx *x;
    uint64_t r0, n, db;
    dsq_codec_layout nl;
    int slot;
    bool last; /* the source's last chunk */
} item;

/* The sizes a slot needs for any chunk of source x. */
static void slot_needs(const dsq_convert_plan *p, uint32_t i, const src_ctx *x, size_t *in_need, size_t *out_need) {
    const cv_out *o = &p->outs[i];
    const chunk_io *c = &x->c;
    uint64_t n_max = x->chunk_rows < c->rows ? x->chunk_rows : c->rows;
    dsq_codec_layout cl;
    memset(&cl, 0, sizeof cl);
    dsq_codec_layout_of(o->enc, n_max, c->cols, o->group, &cl, NULL); /* checked for the whole matrix already */
    *in_need = chunk_in_bytes(c, n_max);
    *out_need = (size_t)(cl.data_bytes + cl.scale_bytes + cl.min_bytes);
}

static dsq_status read_item(dsq_convert_plan *p, uint32_t i, cv_work *work, item *it, dsq_err *err) {
    size_t in_need, out_need;
    slot_needs(p, i, it->x, &in_need, &out_need);
    DSQ_RETURN_IF(!grow(&work->ins[it->slot], &work->in_caps[it->slot], in_need) ||
                      !grow(&work->outs[it->slot], &work->out_caps[it->slot], out_need),
                  err, DSQ_ERR_NOMEM, "out of memory for a %zu-byte chunk", in_need + out_need);
    uint64_t sb;
    DSQ_TRY(read_rows(p, &it->x->c, it->r0, it->n, work->ins[it->slot], &it->db, &sb, err));
    return dsq_codec_layout_of(p->outs[i].enc, it->n, it->x->c.cols, p->outs[i].group, &it->nl, err);
}

static dsq_status write_item(dsq_ctr_writer *w, uint32_t i, cv_work *work, const item *it, dsq_err *err) {
    const src_ctx *x = it->x;
    const uint8_t *od = work->outs[it->slot];
    pending pw = {true, it->r0, it->nl, od, od + it->nl.data_bytes, od + it->nl.data_bytes + it->nl.scale_bytes};
    return write_chunk(w, i, &pw, x->off, x->p_scale, x->p_min, x->c.dl.row_bytes, x->drb, x->d_scale_row,
                       x->d_min_row, err);
}

/* The next chunk after `cur` (same source, or the first chunk of source k+1, prepared into `spare`). */
static dsq_status next_item(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, const item *cur, src_ctx *spare,
                            item *nx, bool *have, dsq_err *err) {
    *have = false;
    src_ctx *x = cur->x;
    uint64_t r0 = cur->r0 + cur->n;
    if (r0 >= x->c.rows) {
        if (x->k + 1 >= p->outs[i].n_src) return DSQ_OK;
        DSQ_TRY(prepare_source(p, w, i, x->k + 1, spare, err));
        x = spare, r0 = 0;
    }
    uint64_t n = x->c.rows - r0 < x->chunk_rows ? x->c.rows - r0 : x->chunk_rows;
    *nx = (item){x, r0, n, 0, {0}, cur->slot ^ 1, r0 + n >= x->c.rows};
    *have = true;
    return DSQ_OK;
}

/* Re-encode every source of output i as one pipeline of chunks: while the team encodes chunk j, one
 * of its threads writes chunk j-1 and then reads chunk j+1 (possibly the next source's first), and
 * joins the encoding (dynamic schedule).  Chunks are written in order, so the writer's streaming
 * hashes apply. */
dsq_status dsq__cv_run_reencode(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, cv_work *work, dsq_err *err) {
    const cv_out *o = &p->outs[i];
    if (o->n_src == 0) return DSQ_OK;
    src_ctx *ctx = dsq_calloc(3, sizeof *ctx); /* a source in flight can span three chunks: written, encoded, read */
    DSQ_RETURN_IF(!ctx, err, DSQ_ERR_NOMEM, "out of memory");
    dsq_status st = prepare_source(p, w, i, 0, &ctx[0], err);
    item cur = {&ctx[0], 0, 0, 0, {0}, 0, false}, prev = {0}, nx = {0};
    bool have_prev = false, have_next = false;
    if (st == DSQ_OK) {
        cur.n = ctx[0].c.rows < ctx[0].chunk_rows ? ctx[0].c.rows : ctx[0].chunk_rows;
        cur.last = cur.n >= ctx[0].c.rows;
        st = read_item(p, i, work, &cur, err);
    }
    int threads = p->opt.threads;
    while (st == DSQ_OK) {
        /* the context the next source goes to: neither cur's nor prev's */
        src_ctx *spare = NULL;
        for (int q = 0; q < 3 && !spare; q++)
            if (&ctx[q] != cur.x && (!have_prev || &ctx[q] != prev.x)) spare = &ctx[q];
        st = next_item(p, w, i, &cur, spare, &nx, &have_next, err);
        if (st != DSQ_OK) break;
        src_ctx *x = cur.x;
        const cv_src *s = x->c.s;
        uint8_t *in = work->ins[cur.slot], *od = work->outs[cur.slot];
        uint8_t *os = od + cur.nl.data_bytes, *om = os + cur.nl.scale_bytes;
        uint64_t n = cur.n, sbr = src_block_rows(s), slabs = dsq_ceil_div(n, SLAB);
        /* NVFP4 in one call picks its own tensor scale: one slab of work for one thread */
        bool split = !(o->enc == DSQ_ENC_NVFP4 && x->whole);
        int nt = split && slabs >= 2 * (uint64_t)threads ? threads : 1; /* tiny chunks: not worth a team */
        dsq_status first = DSQ_OK, wst = DSQ_OK, rst = DSQ_OK;
        dsq_err terr[64], werr;
        dsq_err_init(&werr);
        int nerr = nt < 64 ? nt : 64;
        for (int e = 0; e < nerr; e++) dsq_err_init(&terr[e]);
        float got_ts = x->ts, ts = x->ts;
        const char *name = s->w->name;
        const float *imp = p->opt.imatrix && dsq_kquant_block_bytes(o->enc)
                               ? dsq_imatrix_importance(p->opt.imatrix, name, x->c.cols) /* before the team */
                               : NULL;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
#pragma omp single nowait
            {
                if (have_prev) wst = write_item(w, i, work, &prev, &werr);
                if (wst == DSQ_OK && have_next) rst = read_item(p, i, work, &nx, &werr);
            }
#pragma omp for schedule(dynamic)
            for (uint64_t sl = 0; sl < (split ? slabs : 1); sl++) {
                uint64_t a = split ? sl * SLAB : 0, m = split ? (n - a < SLAB ? n - a : SLAB) : n;
                dsq_qtensor src = {s->enc, m, x->c.cols, 0, in + a * x->c.src_row_bytes,
                                   s->s ? in + cur.db + (a / sbr) * x->c.src_scale_row_bytes : NULL, NULL, 0};
                dsq_qtensor_buf dst = {o->enc, m, x->c.cols, o->group, od + a * x->c.dl.row_bytes,
                                       x->d_scale_row ? os + (a / x->drb) * x->d_scale_row : NULL,
                                       x->d_min_row ? om + (a / x->drb) * x->d_min_row : NULL, ts};
                dsq_codec_options co = {.allow_nonfinite = p->opt.allow_nonfinite, .name = name, .importance = imp};
                int tid = omp_get_thread_num() % nerr;
                dsq_status est = DSQ_OK;
                if (x->pre) copy_pre(x, cur.r0 + a, m, &dst);
                else est = dsq_codec_reencode(&src, &dst, &co, NULL, &terr[tid]);
                if (!split) got_ts = dst.tensor_scale;
                if (est != DSQ_OK) {
#pragma omp critical(cv_first)
                    if (first == DSQ_OK) first = est;
                }
            }
        }
        if (wst != DSQ_OK || rst != DSQ_OK) {
            st = dsq_err_set(err, wst != DSQ_OK ? wst : rst, "%s", werr.msg);
        } else if (first != DSQ_OK) {
            for (int e = 0; e < nerr; e++)
                if (terr[e].n) {
                    dsq_err_set(err, terr[e].status, "%s", terr[e].msg);
                    break;
                }
            st = first;
        }
        dsq_err_clear(&werr);
        for (int e = 0; e < nerr; e++) dsq_err_clear(&terr[e]);
        if (st != DSQ_OK) break;
        x->ts = got_ts;
        /* the previous chunk is on disk: if it ended its source, that source is complete */
        if (have_prev && prev.last && prev.x != cur.x) st = finish_source(w, i, prev.x, err);
        if (st != DSQ_OK) break;
        prev = cur, have_prev = true;
        if (!have_next) break;
        cur = nx;
    }
    if (st == DSQ_OK && have_prev) st = write_item(w, i, work, &prev, err);
    if (st == DSQ_OK && have_prev) st = finish_source(w, i, prev.x, err);
    dsq_free(ctx);
    return st;
}
