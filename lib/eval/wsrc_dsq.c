/* Weight source over a .dsq container (dsq_wsrc.h).  The model asks for checkpoint names
 * ("layers.3.ffn.experts.7.w1.weight", "layers.1.attn.compressor.wgate.weight"); the container holds
 * experts stacked [E, out, in] and compressor projections fused wkv|wgate (formats/spec/dsq.md §5.5),
 * each recording its sources.  A view is the source's slice of the stored tensor: zero-copy pointers
 * into the mapping, in the stored encoding.  The config comes from the metadata's model.config. */
#include <stdatomic.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_container.h"
#include "dsq_ctr_meta.h"
#include "dsq_wsrc.h"

/* What the first check of a part found (dsq_impl.part_state). */
enum { PART_UNCHECKED = 0, PART_OK = 1, PART_NONFINITE = 2 };

typedef struct dsq_impl {
    dsq_ctr_reader *r;
    _Atomic uint64_t advised[2];  /* bytes hinted: [0] WILLNEED, [1] DONTNEED */
    _Atomic uint8_t *part_state;  /* [tensor][DSQ_FILE_MAX_PARTS]: PART_* */
    _Atomic uint8_t *part_summed; /* [tensor][DSQ_FILE_MAX_PARTS]: checksum checked */
} dsq_impl;

/* The stored tensor holding `name`, and the source record when it is a slice. */
static bool locate(const dsq_ctr_reader *r, const char *name, const dsq_ctr_tensor **t, const dsq_ctr_source **s) {
    if (dsq_ctr_find_source(r, name, t, s)) return true;
    *s = NULL;
    *t = dsq_ctr_find(r, name);
    return *t != NULL;
}

static dsq_status ctr_get(const dsq_wsrc *w, const char *name, dsq_wview *v, dsq_err *err) {
    const dsq_impl *im = w->impl;
    memset(v, 0, sizeof *v);
    const dsq_ctr_tensor *t;
    const dsq_ctr_source *s;
    if (!locate(im->r, name, &t, &s))
        return dsq_err_set(err, DSQ_ERR_MISSING, "%s: tensor %s is missing", w->path, name);
    v->name = s ? s->name : t->name;
    v->enc = t->encoding;
    /* logical shape of the slice: a squeezed source drops the outer axis, a row range keeps it */
    int rank = t->rank;
    uint64_t shape[DSQ_FILE_MAX_RANK];
    for (int i = 0; i < rank; i++) shape[i] = t->shape[i];
    if (s && s->squeeze) {
        for (int i = 1; i < rank; i++) shape[i - 1] = shape[i];
        rank--;
    } else if (s) {
        shape[0] = s->count;
    }
    DSQ_RETURN_IF(rank > DSQ_WVIEW_MAX_RANK, err, DSQ_ERR_SHAPE, "%s: %s: rank %d is too high", w->path, name, rank);
    v->rank = rank;
    for (int i = 0; i < rank; i++) v->shape[i] = shape[i];
    if (t->encoding == DSQ_ENC_INT8_G || t->encoding == DSQ_ENC_INT4_G || t->encoding == DSQ_ENC_INT4_G_ASYM ||
        t->encoding == DSQ_ENC_INT2_G_ASYM)
        v->group = (int)t->block_cols;
    if (t->encoding == DSQ_ENC_FP8_B128 || t->encoding == DSQ_ENC_FP8_B128_F32)
        DSQ_RETURN_IF(t->block_rows != 128 || t->block_cols != 128, err, DSQ_ERR_UNSUPPORTED,
                      "%s: %s: FP8 blocks of %ux%u (the evaluator reads 128x128)", w->path, t->name, t->block_rows,
                      t->block_cols);
    for (int p = 0; p < t->n_parts; p++) {
        const dsq_ctr_part *part = &t->parts[p];
        DSQ_RETURN_IF(!part->data && part->bytes, err, DSQ_ERR_STATE, "%s: %s: part %d is not mapped", w->path, t->name,
                      p);
        uint64_t off = 0, bytes = part->bytes;
        if (s && !dsq_ctr_source_slice(t, s, p, &off, &bytes)) {
            /* a shared per-matrix tensor scale (NVFP4 fused rows): every slice uses it whole */
            off = 0;
            bytes = part->bytes;
        }
        const uint8_t *base = (const uint8_t *)part->data + off;
        switch (part->kind) {
        case DSQ_FILE_PART_DATA:
            v->data = base;
            v->data_bytes = bytes;
            break;
        case DSQ_FILE_PART_SCALES:
            v->scale = base;
            v->scale_bytes = bytes;
            break;
        case DSQ_FILE_PART_MINS:
            v->mins = base;
            v->mins_bytes = bytes;
            break;
        case DSQ_FILE_PART_TENSOR_SCALE:
            DSQ_RETURN_IF(bytes != 4, err, DSQ_ERR_SHAPE, "%s: %s: a slice's tensor scale spans %llu bytes", w->path,
                          t->name, (unsigned long long)bytes);
            memcpy(&v->tensor_scale, base, 4);
            break;
        }
    }
    return DSQ_OK;
}

/* Page-cache hints for the view's own bytes: its slice of each part (one expert of a stacked
 * [E, out, in] tensor, not all E of them), the bytes ctr_get points into. */
static void advise(const dsq_wsrc *w, const dsq_wview *v, bool willneed) {
    dsq_impl *im = w->impl;
    const dsq_ctr_tensor *t;
    const dsq_ctr_source *s;
    if (!locate(im->r, v->name, &t, &s)) return;
    for (int p = 0; p < t->n_parts; p++) {
        uint64_t off = 0, bytes = t->parts[p].bytes;
        if (s && !dsq_ctr_source_slice(t, s, p, &off, &bytes)) off = 0, bytes = t->parts[p].bytes;
        if (willneed)
            dsq_ctr_prefetch_range(im->r, t, p, off, bytes);
        else
            dsq_ctr_release_range(im->r, t, p, off, bytes);
        im->advised[willneed ? 0 : 1] += bytes;
    }
}

static void ctr_prefetch(const dsq_wsrc *w, const dsq_wview *v) { advise(w, v, true); }
static void ctr_release(const dsq_wsrc *w, const dsq_wview *v) { advise(w, v, false); }

static void ctr_advice_stats(const dsq_wsrc *w, uint64_t *willneed, uint64_t *dontneed) {
    dsq_impl *im = w->impl;
    if (willneed) *willneed = im->advised[0];
    if (dontneed) *dontneed = im->advised[1];
}

/* The non-finite scan riding along the checksum pass of one part. */
typedef struct scan_ctx {
    dsq_nf_kind kind;
    uint64_t first; /* element index of the first NaN/Inf, UINT64_MAX when none */
} scan_ctx;

static dsq_status scan_chunk(void *ctx, uint64_t offset, const uint8_t *bytes, size_t n, dsq_err *err) {
    scan_ctx *c = ctx;
    if (c->first != UINT64_MAX) return DSQ_OK;
    uint64_t i = dsq_codec_find_nonfinite(c->kind, bytes, n); /* chunks are 4 MiB-aligned: whole elements */
    if (i != UINT64_MAX) c->first = offset / dsq_nf_kind_size(c->kind) + i;
    return DSQ_OK;
}

static dsq_status ctr_check(const dsq_wsrc *w, const dsq_wview *v, bool checksum, bool allow, bool *nonfinite,
                            dsq_err *err) {
    dsq_impl *im = w->impl;
    const dsq_ctr_tensor *t;
    const dsq_ctr_source *s;
    if (!locate(im->r, v->name, &t, &s))
        return dsq_err_set(err, DSQ_ERR_MISSING, "%s: tensor %s is missing", w->path, v->name);
    for (int p = 0; p < t->n_parts; p++) {
        size_t k = (size_t)t->index * DSQ_FILE_MAX_PARTS + (size_t)p;
        uint8_t state = im->part_state[k];
        bool summed = im->part_summed[k];
        if (state == PART_UNCHECKED || (checksum && !summed)) {
            scan_ctx c = {dsq_codec_part_nf_kind(t->encoding, (dsq_codec_part)t->parts[p].kind), UINT64_MAX};
            bool sum = checksum && !summed;
            DSQ_TRY(dsq_ctr_part_check(im->r, t, p, sum, c.kind ? scan_chunk : NULL, &c, err));
            if (c.first != UINT64_MAX && !allow) {
                char en[40], where[64];
                uint64_t cols = t->rank ? t->shape[t->rank - 1] : 1;
                if (t->parts[p].kind == DSQ_FILE_PART_DATA) /* codes: [row, col] of the stored rows */
                    snprintf(where, sizeof where, "[%llu, %llu]", (unsigned long long)(c.first / cols),
                             (unsigned long long)(c.first % cols));
                else
                    snprintf(where, sizeof where, "%llu", (unsigned long long)c.first);
                return dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: tensor %s: %s element %s is NaN or infinite (%s)",
                                   w->path, t->name, dsq_ctr_part_kind_name(t->parts[p].kind), where,
                                   dsq_ctr_tensor_encoding_name(t, en, sizeof en));
            }
            state = c.first != UINT64_MAX ? PART_NONFINITE : PART_OK;
            im->part_state[k] = state;
            if (sum) im->part_summed[k] = 1;
        }
        if (state == PART_NONFINITE) {
            DSQ_RETURN_IF(!allow, err, DSQ_ERR_NONFINITE, "%s: tensor %s: %s holds NaN or infinite values", w->path,
                          t->name, dsq_ctr_part_kind_name(t->parts[p].kind));
            *nonfinite = true;
        }
    }
    return DSQ_OK;
}

static void ctr_close(dsq_wsrc *w) {
    dsq_impl *im = w->impl;
    dsq_free((void *)im->part_state);
    dsq_free((void *)im->part_summed);
    dsq_ctr_reader_close(im->r);
    dsq_free(im);
    dsq_free(w);
}

/* recipe.kv_cache of the metadata (formats/spec/dsq.md §6.1): the evaluator's default cache encoding, or NULL
 * when absent; an unknown name is an error. */
static dsq_status kv_cache_from_metadata(const dsq_ctr_reader *r, const char **out, dsq_err *err) {
    const char *path = dsq_ctr_path(r);
    dsq_ctr_meta *m = NULL;
    *out = NULL;
    DSQ_TRY(dsq_ctr_meta_read(r, &m, err));
    dsq_status st = DSQ_OK;
    if ((m->recipe_kv_cache || m->recipe_kv_cache_not_string) &&
        !(m->recipe_kv_cache && (*out = dsq_config_kv_encoding_name(m->recipe_kv_cache))))
        st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: metadata: recipe.kv_cache is not a known cache encoding", path);
    dsq_ctr_meta_free(m);
    return st;
}

/* model.config of the metadata, parsed as a config.json. */
static dsq_status config_from_metadata(const dsq_ctr_reader *r, dsq_v4_config *cfg, dsq_err *err) {
    dsq_ctr_meta *m = NULL;
    DSQ_TRY(dsq_ctr_meta_read(r, &m, err));
    dsq_status st = dsq_ctr_meta_config(m, dsq_ctr_path(r), cfg, err);
    dsq_ctr_meta_free(m);
    return st;
}

dsq_status dsq_wsrc_open_dsq(const char *path, dsq_v4_config *cfg, dsq_wsrc **out, dsq_err *err) {
    *out = NULL;
    dsq_ctr_reader *r = NULL;
    DSQ_TRY(dsq_ctr_reader_open(path, NULL, &r, err));
    dsq_status st = cfg ? config_from_metadata(r, cfg, err) : DSQ_OK;
    const char *kv_cache = NULL;
    if (!st) st = kv_cache_from_metadata(r, &kv_cache, err);
    dsq_impl *im = st ? NULL : dsq_calloc(1, sizeof *im);
    dsq_wsrc *w = st ? NULL : dsq_calloc(1, sizeof *w);
    size_t nstate = (dsq_ctr_count(r) ? dsq_ctr_count(r) : 1) * DSQ_FILE_MAX_PARTS;
    if (im) {
        im->part_state = dsq_calloc(nstate, 1);
        im->part_summed = dsq_calloc(nstate, 1);
    }
    if (!st && (!im || !w || !im->part_state || !im->part_summed))
        st = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    if (st) {
        if (im) dsq_free((void *)im->part_state), dsq_free((void *)im->part_summed);
        dsq_free(im);
        dsq_free(w);
        dsq_ctr_reader_close(r);
        return st;
    }
    im->r = r;
    w->impl = im;
    w->path = dsq_ctr_path(r);
    w->kv_cache = kv_cache;
    w->get = ctr_get;
    w->prefetch = ctr_prefetch;
    w->release = ctr_release;
    w->close = ctr_close;
    w->advice_stats = ctr_advice_stats;
    w->check = ctr_check;
    *out = w;
    return DSQ_OK;
}

dsq_status dsq_wsrc_open_path(const char *path, dsq_v4_config *cfg, dsq_wsrc **out, dsq_err *err) {
    *out = NULL;
    if (dsq_ctr_sniff(path)) return dsq_wsrc_open_dsq(path, cfg, out, err);
    if (dsq_wsrc_sniff_gguf(path)) return dsq_wsrc_open_gguf(path, cfg, out, err);
    DSQ_RETURN_IF(!dsq_path_is_dir(path), err, DSQ_ERR_ARG, "%s: not a checkpoint directory, a .dsq or a .gguf file", path);
    char *cp = dsq_path_join(path, "config.json");
    DSQ_RETURN_IF(!cp, err, DSQ_ERR_NOMEM, "out of memory");
    dsq_status st = dsq_config_load(cp, cfg, NULL, err);
    dsq_free(cp);
    if (st == DSQ_OK) st = dsq_wsrc_open_safetensors(path, out, err);
    return st;
}
