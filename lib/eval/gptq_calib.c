/* Layer-by-layer GPTQ over a checkpoint (dsq_gptq_calib.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_gptq_calib.h"
#include "dsq_imatrix.h"
#include "dsq_metrics.h"
#include "dsq_v4.h"
#include "dsq_wsrc.h"
#include "v4_internal.h"

const char *dsq_gptq_method_name(dsq_gptq_method m) {
    switch (m) {
    case DSQ_GPTQ_METHOD_GPTQ: return "gptq";
    case DSQ_GPTQ_METHOD_IMATRIX: return "imatrix";
    default: return "plain";
    }
}

typedef struct entry {
    dsq_gptq_entry e;
    char *name;
    uint8_t *mem;  /* the stored bytes on the heap (data, scales, mins), or NULL once spilled */
    uint64_t off;  /* spilled: offset of the same bytes in the spill file */
    dsq_codec_layout lay;
} entry;

struct dsq_gptq_result {
    entry *v; /* sorted by name once a layer is done */
    size_t n, cap;
    uint64_t tokens;
    uint64_t factorisations; /* Hessians factored (one per distinct input: w1/w3 share one) */
    double factor_seconds, quantize_seconds;
    int layers;
    double seconds;
    /* spill file (fd >= 0): unlinked right after creation; mapped read-only up to spill_len */
    int fd;
    char *spill_path; /* for messages */
    uint64_t spill_len;
    uint8_t *map;
    size_t map_len;
    dsq_gptq_memory mem;
};

static uint64_t entry_bytes(const entry *e) { return e->lay.data_bytes + e->lay.scale_bytes + e->lay.min_bytes; }

/* Point e's tensor at its bytes (heap or mapping). */
static void entry_point(const dsq_gptq_result *r, entry *e) {
    uint8_t *base = e->mem ? e->mem : r->map + e->off;
    e->e.tensor.data = base;
    e->e.tensor.scales = e->lay.scale_bytes ? base + e->lay.data_bytes : NULL;
    e->e.tensor.mins = e->lay.min_bytes ? base + e->lay.data_bytes + e->lay.scale_bytes : NULL;
}

/* Create the spill file at `path` (O_EXCL, never following a link; a stale file or link of that name from
 * a killed run is removed first) and unlink it at once: its space is returned when the descriptor is
 * closed, however the process ends. */
static dsq_status spill_open(dsq_gptq_result *r, const char *path, dsq_err *err) {
    int fd = -1;
    for (int tries = 0; fd < 0; tries++) {
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) break;
        int e = errno;
        struct stat st;
        if (e != EEXIST || tries > 0 || lstat(path, &st) != 0)
            return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot create the GPTQ spill file: %s", path, strerror(e));
        DSQ_RETURN_IF(!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode), err, DSQ_ERR_IO,
                      "%s: exists and is not a regular file (a stale GPTQ spill file would be); remove it", path);
        DSQ_RETURN_IF(unlink(path) != 0 && errno != ENOENT, err, DSQ_ERR_IO,
                      "%s: cannot remove the stale GPTQ spill file: %s", path, strerror(errno));
    }
    r->fd = fd;
    r->spill_path = dsq_strdup(path);
    if (unlink(path) != 0 || !r->spill_path) { /* the descriptor is closed by dsq_gptq_result_free */
        if (!r->spill_path) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot unlink the GPTQ spill file: %s", path, strerror(errno));
    }
    return DSQ_OK;
}

/* Append e's heap bytes to the spill file (64-byte aligned) and free them. */
static dsq_status spill_entry(dsq_gptq_result *r, entry *e, dsq_err *err) {
    uint64_t n = entry_bytes(e), off = (r->spill_len + 63) & ~(uint64_t)63, end;
    DSQ_RETURN_IF(!dsq_add_u64(off, n, &end) || end > (uint64_t)SIZE_MAX, err, DSQ_ERR_RANGE,
                  "%s: GPTQ spill file too large", r->spill_path);
    for (uint64_t done = 0; done < n;) {
        ssize_t w = pwrite(r->fd, e->mem + done, (size_t)(n - done), (off_t)(off + done));
        if (w < 0 && errno == EINTR) continue;
        DSQ_RETURN_IF(w <= 0, err, DSQ_ERR_IO, "%s: writing %s to the GPTQ spill file: %s", r->spill_path, e->name,
                      w < 0 ? strerror(errno) : "no progress");
        done += (uint64_t)w;
    }
    dsq_free(e->mem);
    e->mem = NULL;
    e->off = off;
    r->spill_len = end;
    r->mem.held -= n;
    r->mem.spill_bytes = end;
    return DSQ_OK;
}

/* Map the spill file as written so far (read-only) and re-point every spilled entry. */
static dsq_status spill_remap(dsq_gptq_result *r, dsq_err *err) {
    if (r->fd < 0 || r->spill_len == r->map_len) return DSQ_OK;
    if (r->map) munmap(r->map, r->map_len);
    r->map = NULL, r->map_len = 0;
    void *m = mmap(NULL, (size_t)r->spill_len, PROT_READ, MAP_SHARED, r->fd, 0);
    DSQ_RETURN_IF(m == MAP_FAILED, err, DSQ_ERR_IO, "%s: cannot map the GPTQ spill file (%llu bytes): %s",
                  r->spill_path, (unsigned long long)r->spill_len, strerror(errno));
    r->map = m, r->map_len = (size_t)r->spill_len;
    for (size_t i = 0; i < r->n; i++)
        if (!r->v[i].mem) entry_point(r, &r->v[i]);
    return DSQ_OK;
}

static int entry_cmp(const void *a, const void *b) { return strcmp(((const entry *)a)->name, ((const entry *)b)->name); }

static entry *find(const dsq_gptq_result *r, const char *name) {
    entry key;
    key.name = (char *)name;
    return r->n ? bsearch(&key, r->v, r->n, sizeof *r->v, entry_cmp) : NULL;
}

void dsq_gptq_result_free(dsq_gptq_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) dsq_free(r->v[i].name), dsq_free(r->v[i].mem);
    dsq_free(r->v);
    if (r->map) munmap(r->map, r->map_len);
    if (r->fd >= 0) close(r->fd);
    dsq_free(r->spill_path);
    dsq_free(r);
}
void dsq_gptq_result_memory(const dsq_gptq_result *r, dsq_gptq_memory *m) { *m = r->mem; }
size_t dsq_gptq_result_count(const dsq_gptq_result *r) { return r ? r->n : 0; }
const dsq_gptq_entry *dsq_gptq_result_at(const dsq_gptq_result *r, size_t i) { return i < r->n ? &r->v[i].e : NULL; }
const dsq_qtensor *dsq_gptq_result_lookup(void *user, const char *name) {
    entry *e = find(user, name);
    return e ? &e->e.tensor : NULL;
}
void dsq_gptq_result_timing(const dsq_gptq_result *r, uint64_t *factorisations, double *factor_seconds,
                            double *quantize_seconds) {
    *factorisations = r->factorisations;
    *factor_seconds = r->factor_seconds;
    *quantize_seconds = r->quantize_seconds;
}
void dsq_gptq_result_stats(const dsq_gptq_result *r, uint64_t *tokens, int *layers, double *seconds_per_layer) {
    *tokens = r->tokens;
    *layers = r->layers;
    *seconds_per_layer = r->layers ? r->seconds / r->layers : 0;
}

/* ---- a weight source that serves the weights quantized so far ---- */

typedef struct overlay {
    dsq_wsrc *inner;
    const dsq_gptq_result *res;
} overlay;

static dsq_status ov_get(const dsq_wsrc *s, const char *name, dsq_wview *v, dsq_err *err) {
    const overlay *o = s->impl;
    const entry *e = find(o->res, name);
    if (!e) return o->inner->get(o->inner, name, v, err);
    memset(v, 0, sizeof *v);
    const dsq_qtensor *t = &e->e.tensor;
    v->name = e->name;
    v->enc = t->enc;
    v->rank = 2;
    v->shape[0] = t->rows;
    v->shape[1] = t->cols;
    v->data = t->data;
    v->data_bytes = e->lay.data_bytes;
    v->scale = t->scales;
    v->scale_bytes = e->lay.scale_bytes;
    v->group = t->group;
    v->mins = t->mins;
    v->mins_bytes = e->lay.min_bytes;
    v->tensor_scale = t->tensor_scale;
    return DSQ_OK;
}
/* page-cache hints only for the checkpoint's own (mapped) views: ours are heap memory */
static void ov_prefetch(const dsq_wsrc *s, const dsq_wview *v) {
    const overlay *o = s->impl;
    if (!find(o->res, v->name) && o->inner->prefetch) o->inner->prefetch(o->inner, v);
}
static void ov_release(const dsq_wsrc *s, const dsq_wview *v) {
    const overlay *o = s->impl;
    if (!find(o->res, v->name) && o->inner->release) o->inner->release(o->inner, v);
}
static void ov_close(dsq_wsrc *s) {
    if (!s) return;
    overlay *o = s->impl;
    if (o) dsq_wsrc_close(o->inner);
    dsq_free(o);
    dsq_free(s);
}

static dsq_status open_overlay(const char *src, const dsq_gptq_result *res, dsq_v4_config *cfg, dsq_wsrc **out,
                               dsq_err *err) {
    dsq_wsrc *inner = NULL;
    DSQ_TRY(dsq_wsrc_open_path(src, cfg, &inner, err));
    dsq_wsrc *s = dsq_calloc(1, sizeof *s);
    overlay *o = dsq_calloc(1, sizeof *o);
    if (!s || !o) {
        dsq_free(s), dsq_free(o);
        dsq_wsrc_close(inner);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    }
    o->inner = inner, o->res = res;
    *s = (dsq_wsrc){.impl = o, .path = inner->path, .get = ov_get, .prefetch = ov_prefetch, .release = ov_release,
                    .close = ov_close};
    *out = s;
    return DSQ_OK;
}

/* ---- the Hessians of one layer ---- */

typedef struct hess {
    char *name;       /* the weight whose inputs are summed (w1 for a w1/w3 pair) */
    uint64_t row0, nrows; /* a row window of it (wo_a's groups: dsq_linear_rows_observer); nrows 0: all rows */
    uint64_t cols, rows;
    double *h;        /* [cols][cols], upper triangle summed, mirrored before use */
} hess;

typedef struct collect {
    const dsq_recipe *recipe;
    const dsq_wsrc *src;
    char prefix[32];
    hess *h;
    size_t n, cap;
    int threads; /* the evaluation's thread count (0: OpenMP default) */
    int e0, e1;  /* routed experts [e0, e1) collected in this pass; other linears only when e0 == 0 */
    dsq_status st;
    char msg[256];
} collect;

/* The lossy recipe target of weight `name` stored as `stored`, or false. */
static bool lossy_target(const dsq_recipe *rc, const char *name, dsq_encoding stored, dsq_encoding *enc, int *group) {
    const dsq_recipe_rule *rule = dsq_recipe_match(rc, name);
    if (!rule || rule->target.keep || !dsq_gptq_supports(rule->target.enc)) return false;
    if (rule->target.enc == stored && rule->target.group == 0) return false; /* byte copy */
    *enc = rule->target.enc;
    *group = rule->target.group;
    return true;
}

/* "X.w3.weight" → "X.w1.weight" in buf, or false. */
static bool w1_of(const char *name, char *buf, size_t cap) {
    size_t n = strlen(name);
    if (n < 10 || n >= cap || strcmp(name + n - 10, ".w3.weight")) return false;
    memcpy(buf, name, n + 1);
    buf[n - 8] = '1';
    return true;
}

static void observe_win(collect *c, const char *weight, uint64_t row0, uint64_t nrows, const float *x, size_t ldx,
                        int64_t n, uint64_t cols) {
    if (c->st != DSQ_OK || strncmp(weight, c->prefix, strlen(c->prefix))) return;
    int ex = -1, used = 0;
    if (sscanf(weight + strlen(c->prefix), "ffn.experts.%d.%n", &ex, &used) == 1 && used > 0) {
        if (ex < c->e0 || ex >= c->e1) return;
    } else if (c->e0 != 0) {
        return;
    }
    char w1[256];
    if (w1_of(weight, w1, sizeof w1)) { /* w3 takes w1's input: summed once, under w1 */
        for (size_t i = 0; i < c->n; i++)
            if (!strcmp(c->h[i].name, w1) && c->h[i].cols == cols) return;
    }
    hess *h = NULL;
    for (size_t i = 0; i < c->n && !h; i++)
        if (!strcmp(c->h[i].name, weight) && c->h[i].row0 == row0 && c->h[i].nrows == nrows) h = &c->h[i];
    if (!h) {
        dsq_wview v;
        dsq_encoding enc;
        int group;
        if (c->src->get(c->src, weight, &v, NULL) != DSQ_OK || v.rank != 2 || v.shape[1] != cols ||
            (nrows && (row0 >= v.shape[0] || nrows > v.shape[0] - row0)) ||
            !lossy_target(c->recipe, weight, v.enc, &enc, &group))
            return;
        if (c->n == c->cap) {
            size_t cap = c->cap ? 2 * c->cap : 64;
            hess *nh = dsq_realloc(c->h, cap * sizeof *nh);
            if (!nh) goto nomem;
            c->h = nh, c->cap = cap;
        }
        h = &c->h[c->n];
        memset(h, 0, sizeof *h);
        h->name = dsq_strdup(weight);
        h->row0 = row0, h->nrows = nrows;
        h->cols = cols;
        h->h = dsq_calloc(cols * cols, sizeof *h->h);
        if (!h->name || !h->h) {
            dsq_free(h->name), dsq_free(h->h);
            goto nomem;
        }
        c->n++;
    }
    if (h->cols != cols) return;
    /* H += Σ_t x_t x_tᵀ, upper triangle, rows of H split over threads (deterministic per element) */
    int nth = c->threads > 0 ? c->threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 8) num_threads(nth) if ((uint64_t)n * cols * cols > (1u << 20))
    for (uint64_t i = 0; i < cols; i++) {
        double *hi = h->h + i * cols;
        for (int64_t t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * ldx;
            double a = xt[i];
            if (a == 0) continue;
            for (uint64_t j = i; j < cols; j++) hi[j] += a * (double)xt[j];
        }
    }
    h->rows += (uint64_t)n;
    return;
nomem:
    c->st = DSQ_ERR_NOMEM;
    snprintf(c->msg, sizeof c->msg, "out of memory for the Hessian of %s", weight);
}

static void observe(void *user, const char *weight, const float *x, size_t ldx, int64_t n, uint64_t cols) {
    observe_win(user, weight, 0, 0, x, ldx, n, cols);
}
static void observe_rows(void *user, const char *weight, uint64_t row0, uint64_t nrows, const float *x, size_t ldx,
                         int64_t n, uint64_t cols) {
    if (nrows > 0) observe_win(user, weight, row0, nrows, x, ldx, n, cols);
}

static void collect_clear(collect *c) {
    for (size_t i = 0; i < c->n; i++) dsq_free(c->h[i].name), dsq_free(c->h[i].h);
    dsq_free(c->h);
    c->h = NULL, c->n = c->cap = 0;
}

/* One row window of a weight and what quantizes it: GPTQ from the factor f of its inputs' H when f is
 * given, else importance diag(h)/rows_seen (h NULL or rows_seen < DSQ_IMATRIX_MIN_ROWS: plain). */
typedef struct window {
    uint64_t row0, nrows;
    const dsq_gptq_factor *f;
    const double *h;
    uint64_t rows_seen;
    bool factor_here; /* f NULL: factor h here, just for this window (one factor in memory at a time) */
} window;

/* The layout of rows [row0, row0 + nrows) of an enc/cols/group tensor is that of an [nrows][cols] one
 * starting at these byte offsets (data rows, then scale/min rows): true for every row-major encoding
 * when row0 and nrows are whole parameter rows (block_rows: 128 for the 128x128 FP8 forms, else 1). */
static bool window_view(const dsq_qtensor_buf *b, const dsq_codec_layout *full, uint64_t row0, uint64_t nrows,
                        dsq_qtensor_buf *out, dsq_err *err) {
    dsq_codec_layout l;
    if (dsq_codec_layout_of(b->enc, nrows, b->cols, b->group, &l, err) != DSQ_OK) return false;
    uint64_t br = full->block_rows ? full->block_rows : 1;
    if (row0 % br || (nrows % br && row0 + nrows != b->rows) || l.row_bytes != full->row_bytes ||
        l.scale_cols != full->scale_cols)
        return false;
    *out = *b;
    out->rows = nrows;
    out->data = (uint8_t *)b->data + row0 * full->row_bytes;
    if (b->scales) out->scales = (uint8_t *)b->scales + (row0 / br) * full->scale_cols * (uint64_t)full->scale_size;
    if (b->mins) out->mins = (uint8_t *)b->mins + (row0 / br) * full->scale_cols * (uint64_t)full->min_size;
    return true;
}

/* Quantize `name` (its source view v) into a new entry, window by window (one window of all rows for an
 * ordinary linear; wo_a's groups for the grouped output projection, NVFP4's tensor scale then fixed
 * from the whole weight first).  The entry's method and rows are its windows' worst. */
static dsq_status quantize_one(dsq_gptq_result *r, const dsq_gptq_calib_options *o, const dsq_wview *v, const char *name,
                               dsq_encoding enc, int group, const window *win, size_t nwin, int layer, dsq_err *err) {
    uint64_t rows = v->shape[0], cols = v->shape[1];
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        entry *nv = dsq_realloc(r->v, cap * sizeof *nv);
        DSQ_RETURN_IF(!nv, err, DSQ_ERR_NOMEM, "out of memory");
        r->v = nv, r->cap = cap;
    }
    entry *e = &r->v[r->n];
    memset(e, 0, sizeof *e);
    DSQ_TRY(dsq_codec_layout_of(enc, rows, cols, group, &e->lay, err));
    float *w = dsq_malloc(rows * cols * sizeof *w);
    e->mem = dsq_calloc(1, (size_t)(e->lay.data_bytes + e->lay.scale_bytes + e->lay.min_bytes) + 1);
    e->name = dsq_strdup(name);
    dsq_status s = DSQ_OK;
    if (!w || !e->mem || !e->name) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", name);
    dsq_qtensor src = dsq__qtensor_of(v);
    if (s == DSQ_OK) s = dsq_codec_decode(&src, 0, rows, w, NULL, err);
    dsq_qtensor_buf b = {enc, rows, cols, group, e->mem, e->lay.scale_bytes ? e->mem + e->lay.data_bytes : NULL,
                         e->lay.min_bytes ? e->mem + e->lay.data_bytes + e->lay.scale_bytes : NULL, 0};
    if (s == DSQ_OK && enc == DSQ_ENC_NVFP4 && nwin > 1) { /* one tensor scale over every window */
        float amax = 0;
        for (uint64_t i = 0; i < rows * cols; i++) amax = fabsf(w[i]) > amax ? fabsf(w[i]) : amax;
        b.tensor_scale = dsq_codec_nvfp4_tensor_scale(amax);
    }
    dsq_gptq_method m = DSQ_GPTQ_METHOD_GPTQ;
    uint64_t rows_seen = UINT64_MAX;
    float *imp = NULL;
    for (size_t k = 0; s == DSQ_OK && k < nwin; k++) {
        const window *x = &win[k];
        float *wx = w + x->row0 * cols;
        rows_seen = x->rows_seen < rows_seen ? x->rows_seen : rows_seen;
        dsq_gptq_factor *own = NULL;
        if (!x->f && x->factor_here) {
            dsq_gptq_options go = o->gptq;
            go.name = name;
            double t0 = dsq_now();
            s = dsq_gptq_factor_create(&go, x->h, cols, x->rows_seen, &own, err);
            r->factor_seconds += dsq_now() - t0;
            if (s != DSQ_OK) break;
            r->factorisations++;
        }
        const dsq_gptq_factor *fx = x->f ? x->f : own;
        if (fx) {
            dsq_qtensor_buf bw;
            if (!window_view(&b, &e->lay, x->row0, x->nrows, &bw, err)) {
                dsq_gptq_factor_free(own);
                s = dsq_err_set(err, DSQ_ERR_STATE, "%s: GPTQ: rows %llu..%llu are not whole parameter rows", name,
                                (unsigned long long)x->row0, (unsigned long long)(x->row0 + x->nrows));
                break;
            }
            dsq_gptq_options go = o->gptq;
            go.name = name;
            s = dsq_gptq_quantize_factored(&go, fx, wx, &bw, err);
            b.tensor_scale = bw.tensor_scale;
            dsq_gptq_factor_free(own);
            continue;
        }
        dsq_gptq_method mk = DSQ_GPTQ_METHOD_PLAIN;
        if (x->h && x->rows_seen >= DSQ_IMATRIX_MIN_ROWS) {
            if (!imp) imp = dsq_malloc(cols * sizeof *imp);
            if (!imp) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", name);
            for (uint64_t c = 0; imp && c < cols; c++) imp[c] = (float)(x->h[c * cols + c] / (double)x->rows_seen);
            mk = DSQ_GPTQ_METHOD_IMATRIX;
        }
        if (mk > m) m = mk;
        dsq_codec_options co = {.name = name, .importance = mk == DSQ_GPTQ_METHOD_IMATRIX ? imp : NULL};
        if (s == DSQ_OK) s = dsq_codec_encode(&b, wx, x->row0, x->nrows, &co, err);
    }
    dsq_free(imp);
    dsq_free(w);
    if (s != DSQ_OK) {
        dsq_free(e->mem), dsq_free(e->name);
        return s;
    }
    e->e = (dsq_gptq_entry){e->name, m, rows_seen, layer, dsq_qtensor_view(&b)};
    r->n++;
    uint64_t nb = entry_bytes(e);
    r->mem.held += nb;
    if (r->mem.held > r->mem.held_peak) r->mem.held_peak = r->mem.held;
    if (nb > r->mem.largest) r->mem.largest = nb;
    if (r->fd >= 0) DSQ_TRY(spill_entry(r, e, err));
    return DSQ_OK;
}

/* Mirror the summed upper triangle. */
static void symmetrize(double *h, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j < i; j++) h[i * n + j] = h[j * n + i];
}

static int hess_cmp(const hess *a, const hess *b) {
    int k = strcmp(a->name, b->name);
    return k ? k : a->row0 < b->row0 ? -1 : a->row0 > b->row0;
}

/* A weight run over row windows (wo_a): the windows h[0 .. nw-1] (sorted by row0), one factor each, made
 * and freed window by window (one in memory at a time). */
static dsq_status quantize_windows(dsq_gptq_result *r, const dsq_gptq_calib_options *o, const dsq_recipe *recipe,
                                   const dsq_wsrc *src, const hess *h, size_t nw, int layer, dsq_err *err) {
    dsq_wview v;
    dsq_encoding enc;
    int group;
    DSQ_TRY(src->get(src, h[0].name, &v, err));
    if (v.rank != 2 || !lossy_target(recipe, h[0].name, v.enc, &enc, &group)) return DSQ_OK;
    /* the windows tile the rows, each of whole parameter rows: else the recipe's encoder (no entry) */
    dsq_codec_layout full;
    DSQ_TRY(dsq_codec_layout_of(enc, v.shape[0], v.shape[1], group, &full, err));
    uint64_t next = 0, br = full.block_rows ? full.block_rows : 1;
    for (size_t k = 0; k < nw; k++) {
        if (h[k].row0 != next || h[k].row0 % br || (h[k].nrows % br && h[k].row0 + h[k].nrows != v.shape[0]))
            return DSQ_OK;
        next += h[k].nrows;
    }
    if (next != v.shape[0]) return DSQ_OK;
    window *win = dsq_calloc(nw, sizeof *win);
    DSQ_RETURN_IF(!win, err, DSQ_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < nw; k++)
        win[k] = (window){h[k].row0, h[k].nrows, NULL, h[k].h, h[k].rows,
                          h[k].rows >= (uint64_t)DSQ_GPTQ_MIN_ROWS_PER_COL * h[k].cols};
    double t1 = dsq_now(), f0 = r->factor_seconds;
    dsq_status s = quantize_one(r, o, &v, h[0].name, enc, group, win, nw, layer, err);
    r->quantize_seconds += dsq_now() - t1 - (r->factor_seconds - f0);
    dsq_free(win);
    return s;
}

static dsq_status quantize_layer(dsq_gptq_result *r, const dsq_gptq_calib_options *o, const dsq_recipe *recipe,
                                 const dsq_wsrc *src, collect *c, int layer, dsq_err *err) {
    for (size_t i = 0; i < c->n; i++) symmetrize(c->h[i].h, c->h[i].cols);
    /* names in a fixed order whatever order the forward pass reported them in */
    for (size_t i = 1; i < c->n; i++)
        for (size_t j = i; j > 0 && hess_cmp(&c->h[j - 1], &c->h[j]) > 0; j--) {
            hess t = c->h[j];
            c->h[j] = c->h[j - 1], c->h[j - 1] = t;
        }
    for (size_t i = 0; i < c->n; i++) {
        const hess *h = &c->h[i];
        if (h->nrows) { /* row windows of one weight */
            size_t nw = 1;
            while (i + nw < c->n && c->h[i + nw].nrows && !strcmp(c->h[i + nw].name, h->name)) nw++;
            DSQ_TRY(quantize_windows(r, o, recipe, src, h, nw, layer, err));
            i += nw - 1;
            continue;
        }
        /* the weights fed by this H: itself and, for an expert's w1, its w3 (same input) */
        const char *names[2] = {h->name, NULL};
        char w3[256];
        size_t n = strlen(h->name);
        if (n >= 10 && n < sizeof w3 && !strcmp(h->name + n - 10, ".w1.weight")) {
            memcpy(w3, h->name, n + 1);
            w3[n - 8] = '3';
            names[1] = w3;
        }
        dsq_wview v[2];
        dsq_encoding enc[2];
        int group[2];
        bool todo[2] = {false, false};
        for (int k = 0; k < 2 && names[k]; k++) {
            dsq_status gs = src->get(src, names[k], &v[k], k == 0 ? err : NULL);
            if (k == 0) DSQ_TRY(gs);
            todo[k] = gs == DSQ_OK && v[k].rank == 2 && v[k].shape[1] == h->cols &&
                      lossy_target(recipe, names[k], v[k].enc, &enc[k], &group[k]);
        }
        /* one factorisation (the O(cols³) part) for every weight this H feeds */
        dsq_gptq_factor *f = NULL;
        if ((todo[0] || todo[1]) && h->rows >= (uint64_t)DSQ_GPTQ_MIN_ROWS_PER_COL * h->cols) {
            dsq_gptq_options go = o->gptq;
            go.name = h->name;
            double t0 = dsq_now();
            DSQ_TRY(dsq_gptq_factor_create(&go, h->h, h->cols, h->rows, &f, err));
            r->factor_seconds += dsq_now() - t0;
            r->factorisations++;
        }
        dsq_status s = DSQ_OK;
        double t1 = dsq_now();
        for (int k = 0; k < 2 && s == DSQ_OK; k++)
            if (todo[k]) {
                window whole = {0, v[k].shape[0], f, h->h, h->rows, false};
                s = quantize_one(r, o, &v[k], names[k], enc[k], group[k], &whole, 1, layer, err);
            }
        r->quantize_seconds += dsq_now() - t1;
        dsq_gptq_factor_free(f);
        DSQ_TRY(s);
    }
    qsort(r->v, r->n, sizeof *r->v, entry_cmp);
    for (size_t i = 0; i < r->n; i++) r->v[i].e.name = r->v[i].name; /* entries moved: names are stable pointers */
    if (r->mem.held > r->mem.held_after_layer) r->mem.held_after_layer = r->mem.held;
    return spill_remap(r, err); /* the next pass's overlay and the converter read the spilled weights here */
}

/* One calibration pass of MTP block 0 (spec §4.9): per chunk (the scorer's chunks: BOS, then n_ctx − 1
 * text tokens), the main model (every main layer already quantized, served by the overlay) gives the
 * last hidden stream, unobserved; then the MTP block runs on it and the next tokens with the observer. */
static dsq_status mtp_pass(const char *src, const dsq_gptq_result *r, const dsq_gptq_calib_options *o,
                           const int32_t *tokens, uint64_t n_tokens, collect *c, dsq_err *err) {
    dsq_wsrc *ov = NULL;
    dsq_v4_model *m = NULL;
    dsq_v4_config cfg;
    dsq_status s = open_overlay(src, r, &cfg, &ov, err);
    cfg.n_mtp_layers = 1;
    if (s == DSQ_OK) s = dsq_v4_model_create(ov, &cfg, &m, err);
    int32_t bos = !o->score.no_bos && cfg.bos_token_id >= 0 && (uint64_t)cfg.bos_token_id < cfg.vocab_size
                      ? (int32_t)cfg.bos_token_id
                      : -1;
    dsq_ppl_plan plan;
    if (s == DSQ_OK) s = dsq_ppl_plan_make(n_tokens, o->score.n_ctx, o->score.max_chunks, bos, &plan, err);
    int32_t *buf = NULL;
    float *hidden = NULL;
    if (s == DSQ_OK) {
        buf = dsq_malloc(plan.n_ctx * sizeof *buf);
        hidden = dsq_malloc((size_t)plan.n_ctx * (size_t)cfg.hc_mult * cfg.dim * sizeof *hidden);
        if (!buf || !hidden) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory for the MTP calibration");
    }
    for (uint32_t k = 0; s == DSQ_OK && k < plan.n_chunks; k++) {
        const int32_t *t = tokens + (size_t)k * plan.stride;
        if (bos >= 0) buf[0] = bos, memcpy(buf + 1, t, (plan.n_ctx - 1) * sizeof *buf);
        else memcpy(buf, t, plan.n_ctx * sizeof *buf);
        dsq_v4_seq *seq = NULL;
        s = dsq_v4_seq_create(m, &seq, err);
        dsq_eval_options eo = o->score.eval;
        eo.observe = NULL, eo.observe_rows = NULL;
        dsq_v4_item it = {seq, buf, plan.n_ctx, NULL, hidden, NULL};
        if (s == DSQ_OK) s = dsq_v4_forward(m, &eo, &it, 1, err);
        eo.observe = observe, eo.observe_rows = observe_rows, eo.observe_user = c;
        if (s == DSQ_OK) s = dsq_v4_mtp_forward(m, &eo, seq, 0, hidden, buf + 1, plan.n_ctx - 1, NULL, NULL, err);
        dsq_v4_seq_free(seq);
    }
    dsq_free(buf);
    dsq_free(hidden);
    dsq_v4_model_close(m);
    return s;
}

dsq_status dsq_gptq_calibrate(const char *src, const dsq_recipe *recipe, const int32_t *tokens, uint64_t n_tokens,
                              const dsq_gptq_calib_options *o, dsq_gptq_result **out, dsq_err *err) {
    *out = NULL;
    dsq_gptq_result *r = dsq_calloc(1, sizeof *r);
    DSQ_RETURN_IF(!r, err, DSQ_ERR_NOMEM, "out of memory");
    r->fd = -1;
    dsq_v4_config cfg;
    dsq_wsrc *plain = NULL;
    dsq_status s = dsq_wsrc_open_path(src, &cfg, &plain, err);
    if (s == DSQ_OK && o->spill) s = spill_open(r, o->spill, err);
    collect c;
    memset(&c, 0, sizeof c);
    c.recipe = recipe;
    c.src = plain;
    c.threads = o->score.eval.threads;
    int E = cfg.n_routed_experts > 0 ? cfg.n_routed_experts : 1;
    int batch = o->expert_batch > 0 && o->expert_batch < E ? o->expert_batch : E;
    for (int L = 0; s == DSQ_OK && L < cfg.n_layers; L++) {
        double t0 = dsq_now();
        size_t before = r->n;
        for (int e0 = 0; s == DSQ_OK && e0 < E; e0 += batch) { /* one forward pass per batch of experts */
            c.e0 = e0, c.e1 = e0 + batch;
            dsq_wsrc *ov = NULL;
            dsq_v4_model *m = NULL;
            dsq_v4_config cfg2;
            s = open_overlay(src, r, &cfg2, &ov, err);
            /* layers after L cannot change layer L's inputs: a model of layers 0..L (and the head) only */
            cfg2.n_layers = L + 1;
            cfg2.n_mtp_layers = 0;
            if (s == DSQ_OK) s = dsq_v4_model_create(ov, &cfg2, &m, err);
            snprintf(c.prefix, sizeof c.prefix, "layers.%d.", L);
            c.st = DSQ_OK;
            dsq_score_options so = o->score;
            so.eval.observe = observe;
            so.eval.observe_rows = observe_rows;
            so.eval.observe_user = &c;
            so.progress = NULL;
            dsq_ppl_result pr;
            if (s == DSQ_OK) s = dsq_score_ppl(m, &so, tokens, n_tokens, &pr, err);
            if (s == DSQ_OK && c.st != DSQ_OK) s = dsq_err_set(err, c.st, "%s: %s", src, c.msg);
            dsq_ppl_plan plan;
            if (s == DSQ_OK && dsq_score_plan(m, &so, n_tokens, &plan, NULL) == DSQ_OK)
                r->tokens = (uint64_t)plan.n_chunks * plan.n_ctx; /* every position feeds H, not only the scored half */
            dsq_v4_model_close(m);
            if (s == DSQ_OK) s = quantize_layer(r, o, recipe, plain, &c, L, err);
            collect_clear(&c);
        }
        double dt = dsq_now() - t0;
        r->seconds += dt;
        r->layers++;
        if (s == DSQ_OK && o->progress) o->progress(o->user, L, cfg.n_layers + (cfg.n_mtp_layers > 0), dt, r->n - before);
    }
    /* MTP block 0 after every main layer (its input is the quantized main model's output); later MTP
     * blocks (V4 has one) keep the recipe's ordinary encoder */
    if (cfg.n_mtp_layers > 0) {
        double t0 = dsq_now();
        size_t before = r->n;
        for (int e0 = 0; s == DSQ_OK && e0 < E; e0 += batch) {
            c.e0 = e0, c.e1 = e0 + batch;
            snprintf(c.prefix, sizeof c.prefix, "mtp.0.");
            c.st = DSQ_OK;
            s = mtp_pass(src, r, o, tokens, n_tokens, &c, err);
            if (s == DSQ_OK && c.st != DSQ_OK) s = dsq_err_set(err, c.st, "%s: %s", src, c.msg);
            if (s == DSQ_OK) s = quantize_layer(r, o, recipe, plain, &c, cfg.n_layers, err);
            collect_clear(&c);
        }
        double dt = dsq_now() - t0;
        r->seconds += dt;
        r->layers++;
        if (s == DSQ_OK && o->progress) o->progress(o->user, cfg.n_layers, cfg.n_layers + 1, dt, r->n - before);
    }
    collect_clear(&c);
    dsq_wsrc_close(plain);
    if (s != DSQ_OK) {
        dsq_gptq_result_free(r);
        return s;
    }
    *out = r;
    return DSQ_OK;
}
