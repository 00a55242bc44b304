/* .dsq → Hugging Face safetensors checkpoint (dsq_ctr_export_safetensors, dsq_container.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "container_internal.h"
#include "dsq_ctr_meta.h"
#include "dsq_json.h"
#include "dsq_modelopt.h"

#define EXPORT_CHUNK (16u << 20)
#define DEFAULT_SHARD (5ull << 30)

/* One exported tensor: a byte range of one part of one stored tensor. */
typedef struct ex_item {
    char *name;
    dsq_dtype dtype;
    int rank;
    uint64_t shape[DSQ_FILE_MAX_RANK];
    uint32_t tensor;
    int part;
    uint64_t off, bytes;
    char *encoding; /* codec name when not the checkpoint's own form, else NULL */
    bool constant;  /* ModelOpt input_scale: the 4 bytes of MODELOPT_INPUT_SCALE, not stored bytes */
} ex_item;

/* ModelOpt's activation scale of an NVFP4 linear layer: dsq calibrates no activations, so 1.0 (an
 * activation amax of 6·448 representable); weight-only (W4A16) runtimes ignore it. */
static const float MODELOPT_INPUT_SCALE = 1.0f;

typedef struct ex_list {
    ex_item *v;
    size_t n, cap;
} ex_list;

static void ex_free(ex_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        dsq_free(l->v[i].name);
        dsq_free(l->v[i].encoding);
    }
    dsq_free(l->v);
}

/* The stored form a checkpoint uses for (weight dtype, scale dtype) (spec deepseek-v4.md §3). */
static bool natural_form(const dsq_ctr_tensor *t, const dsq_ctr_source *s) {
    int sd = s->scale_dtype;
    switch (t->encoding) {
    case DSQ_ENC_F32: return s->dtype == DSQ_DTYPE_F32 && sd < 0;
    case DSQ_ENC_F16: return s->dtype == DSQ_DTYPE_F16 && sd < 0;
    case DSQ_ENC_BF16: return s->dtype == DSQ_DTYPE_BF16 && sd < 0;
    case DSQ_ENC_I64: return s->dtype == DSQ_DTYPE_I64 && sd < 0;
    case DSQ_ENC_I32: return s->dtype == DSQ_DTYPE_I32 && sd < 0;
    case DSQ_ENC_FP8_B128: return s->dtype == DSQ_DTYPE_F8_E4M3 && sd == DSQ_DTYPE_F8_E8M0;
    case DSQ_ENC_FP8_B128_F32: return s->dtype == DSQ_DTYPE_F8_E4M3 && sd == DSQ_DTYPE_F32;
    case DSQ_ENC_MXFP4: return (s->dtype == DSQ_DTYPE_I8 || s->dtype == DSQ_DTYPE_U8) && sd == DSQ_DTYPE_F8_E8M0;
    default: return false;
    }
}

/* name with ".weight" replaced by suffix (or suffix appended). */
static char *derived(const char *name, const char *suffix) {
    size_t n = strlen(name), k = n >= 7 && !strcmp(name + n - 7, ".weight") ? n - 7 : n;
    char *p = dsq_malloc(k + strlen(suffix) + 1);
    if (!p) return NULL;
    memcpy(p, name, k);
    strcpy(p + k, suffix);
    return p;
}

static dsq_status ex_add(ex_list *l, char *name, dsq_dtype dtype, int rank, const uint64_t *shape, uint32_t tensor,
                         int part, uint64_t off, uint64_t bytes, const char *encoding, dsq_err *err) {
    if (!name) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        ex_item *nv = dsq_realloc(l->v, cap * sizeof *nv);
        if (!nv) {
            dsq_free(name);
            return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        }
        l->v = nv;
        l->cap = cap;
    }
    ex_item *it = &l->v[l->n++];
    memset(it, 0, sizeof *it);
    it->name = name;
    it->dtype = dtype;
    it->rank = rank;
    memcpy(it->shape, shape, sizeof(uint64_t) * (size_t)rank);
    it->tensor = tensor;
    it->part = part;
    it->off = off;
    it->bytes = bytes;
    if (encoding && !(it->encoding = dsq_strdup(encoding))) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    return DSQ_OK;
}

/* The exported tensors of source s of t (s NULL: t itself, without a recorded origin). */
static dsq_status plan_source(const char *f, const dsq_ctr_tensor *t, const dsq_ctr_source *s, bool modelopt,
                              ex_list *l, dsq_err *err) {
    const char *name = s ? s->name : t->name;
    uint64_t shape[DSQ_FILE_MAX_RANK], off[DSQ_FILE_MAX_PARTS] = {0}, len[DSQ_FILE_MAX_PARTS] = {0};
    int rank = 0;
    if (s) {
        if (t->rank > 0 && !s->squeeze) shape[rank++] = s->count;
        for (int d = 1; d < t->rank; d++) shape[rank++] = t->shape[d];
        for (int p = 0; p < t->n_parts; p++)
            if (!dsq_ctr_source_slice(t, s, p, &off[p], &len[p]))
                return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: tensor %s: source %s cannot be split out", f, t->name,
                                   s->name);
    } else {
        rank = t->rank;
        memcpy(shape, t->shape, sizeof(uint64_t) * (size_t)rank);
        for (int p = 0; p < t->n_parts; p++) len[p] = t->parts[p].bytes;
    }
    bool natural = s && natural_form(t, s);
    bool mo = modelopt && t->encoding == DSQ_ENC_NVFP4;
    if (modelopt && !natural && !mo)
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED,
                           "%s: tensor %s: encoding %s has no ModelOpt NVFP4 form (only NVFP4 and the release forms do)",
                           f, name, dsq_ctr_encoding_name(t->encoding));
    if (mo) natural = true;
    char enc[32];
    const char *note = natural ? NULL : dsq_ctr_tensor_encoding_name(t, enc, sizeof enc);
    uint32_t ti = t->index;
    if (t->block_rows == 0) { /* plain: one tensor of the stored dtype */
        return ex_add(l, dsq_strdup(name), t->parts[0].dtype, rank, shape, ti, 0, off[0], len[0], NULL, err);
    }
    /* quantized: [rows, cols] with leading dims folded */
    uint64_t cols = shape[rank - 1], rows = len[0] / (t->encoding == DSQ_ENC_MXFP4 || t->encoding == DSQ_ENC_NVFP4 ||
                                                              t->encoding == DSQ_ENC_INT4_G || t->encoding == DSQ_ENC_INT4_G_ASYM
                                                          ? dsq_ceil_div(cols, 2)
                                                      : t->encoding == DSQ_ENC_INT2_G_ASYM ? dsq_ceil_div(cols, 4)
                                                      : dsq_file_kquant_block_bytes(t->encoding)
                                                          ? cols / DSQ_FILE_KQUANT_BLOCK * dsq_file_kquant_block_bytes(t->encoding)
                                                          : cols);
    uint64_t wshape[DSQ_FILE_MAX_RANK];
    memcpy(wshape, shape, sizeof wshape);
    dsq_dtype wd = t->parts[0].dtype;
    if (t->encoding == DSQ_ENC_MXFP4) {
        wshape[rank - 1] = dsq_ceil_div(cols, 2);
        wd = s && (s->dtype == DSQ_DTYPE_I8 || s->dtype == DSQ_DTYPE_U8) ? s->dtype : DSQ_DTYPE_I8;
    } else if (t->parts[0].dtype == DSQ_DTYPE_U8) {
        wshape[rank - 1] = len[0] / rows;
    }
    DSQ_TRY(ex_add(l, dsq_strdup(name), wd, rank, wshape, ti, 0, off[0], len[0], note, err));
    for (int p = 1; p < t->n_parts; p++) {
        const dsq_ctr_part *part = &t->parts[p];
        size_t es = dsq_dtype_size(part->dtype);
        uint64_t sshape[2] = {1, len[p] / es};
        const char *suffix = mo ? ".weight_scale_2" : ".tensor_scale";
        if (part->kind != DSQ_FILE_PART_TENSOR_SCALE) {
            uint64_t br = t->block_rows ? t->block_rows : 1;
            sshape[0] = dsq_ceil_div(rows, br);
            sshape[1] = len[p] / es / sshape[0];
            suffix = part->kind == DSQ_FILE_PART_SCALES ? (mo ? ".weight_scale" : ".scale") : ".min";
        }
        char *sname = part->kind == DSQ_FILE_PART_SCALES && s && s->scale_name && natural && !mo
                          ? dsq_strdup(s->scale_name)
                          : derived(name, suffix);
        int srank = part->kind == DSQ_FILE_PART_TENSOR_SCALE ? (mo ? 0 : 1) : 2;
        if (srank == 1) sshape[0] = len[p] / es;
        DSQ_TRY(ex_add(l, sname, part->dtype, srank, sshape, ti, p, off[p], len[p], NULL, err));
    }
    if (mo) { /* [] F32 activation scale, the constant MODELOPT_INPUT_SCALE */
        DSQ_TRY(ex_add(l, derived(name, ".input_scale"), DSQ_DTYPE_F32, 0, shape, ti, 0, 0, sizeof MODELOPT_INPUT_SCALE,
                       NULL, err));
        l->v[l->n - 1].constant = true;
    }
    return DSQ_OK;
}

/* ---- config.json ---- */

static void set_item(cJSON *obj, const char *key, cJSON *v) {
    if (cJSON_GetObjectItemCaseSensitive(obj, key)) cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
    else cJSON_AddItemToObject(obj, key, v);
}

static char *patched_config(const char *text, const dsq_ctr_reader *r, const cJSON *recipe, bool modelopt,
                            bool *verbatim, dsq_err *err) {
    bool all_natural = true, any_fp8 = false, experts_fp8 = true, experts_fp4 = true, any_expert = false;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        bool expert = strstr(t->name, ".ffn.experts.") != NULL;
        bool fp4 = t->encoding == DSQ_ENC_MXFP4 || (modelopt && t->encoding == DSQ_ENC_NVFP4);
        if (t->encoding == DSQ_ENC_FP8_B128 || t->encoding == DSQ_ENC_FP8_B128_F32 || fp4) any_fp8 = true;
        if (expert) {
            any_expert = true;
            experts_fp8 &= t->encoding == DSQ_ENC_FP8_B128 || t->encoding == DSQ_ENC_FP8_B128_F32;
            experts_fp4 &= fp4;
        }
        for (uint32_t k = 0; k < t->n_sources; k++) all_natural &= natural_form(t, &t->sources[k]);
    }
    *verbatim = all_natural;
    if (all_natural) return dsq_strdup(text);
    cJSON *c = NULL;
    if (dsq_json_parse(text, strlen(text), "config.json", &c, err) != DSQ_OK) return NULL;
    if (any_expert && experts_fp8) set_item(c, "expert_dtype", cJSON_CreateString("fp8"));
    else if (any_expert && experts_fp4) set_item(c, "expert_dtype", cJSON_CreateString("fp4"));
    if (!any_fp8) {
        cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization_config");
        cJSON_DeleteItemFromObjectCaseSensitive(c, "expert_dtype");
    }
    bool other = false;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        dsq_encoding e = dsq_ctr_at(r, i)->encoding;
        other |= !(e == DSQ_ENC_F32 || e == DSQ_ENC_F16 || e == DSQ_ENC_BF16 || e == DSQ_ENC_I64 || e == DSQ_ENC_I32 ||
                   e == DSQ_ENC_FP8_B128 || e == DSQ_ENC_FP8_B128_F32 || e == DSQ_ENC_MXFP4 ||
                   (modelopt && e == DSQ_ENC_NVFP4));
    }
    if (other) {
        /* encodings HF does not know: described for dsq (and in each shard's __metadata__) */
        cJSON *q = cJSON_GetObjectItemCaseSensitive(c, "quantization_config");
        if (!q) q = cJSON_AddObjectToObject(c, "quantization_config");
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "format", "dsq-export-1");
        cJSON_AddStringToObject(d, "tensor_encodings", "shard __metadata__ \"dsq.encoding.NAME\"");
        if (recipe) cJSON_AddItemToObject(d, "recipe", cJSON_Duplicate(recipe, true));
        set_item(q, "dsq", d);
    }
    char *out = cJSON_Print(c);
    cJSON_Delete(c);
    if (!out) {
        dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    char *copy = dsq_strdup(out);
    cJSON_free(out);
    return copy;
}

static dsq_status write_text(const char *dir, const char *name, const char *text, bool overwrite, size_t *files,
                             dsq_err *err) {
    char *p = dsq_path_join(dir, name);
    DSQ_RETURN_IF(!p, err, DSQ_ERR_NOMEM, "out of memory");
    dsq_status s = dsq_write_file_atomic(p, text, strlen(text), overwrite, err);
    dsq_free(p);
    if (s == DSQ_OK) (*files)++;
    return s;
}

/* hf_quant_config.json: exclude_modules names every 2-D weight left in its release form (the stem,
 * as ModelOpt names modules). */
static dsq_status write_modelopt_qcfg(const dsq_ctr_reader *r, const ex_list *l, const char *outdir, bool overwrite,
                                      size_t *files, dsq_err *err) {
    const char **ex = dsq_calloc(l->n + 1, sizeof *ex);
    char **own = dsq_calloc(l->n + 1, sizeof *own);
    size_t n = 0;
    dsq_status s = ex && own ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; s == DSQ_OK && i < l->n; i++) {
        const ex_item *it = &l->v[i];
        size_t len = strlen(it->name);
        if (it->rank != 2 || it->part != 0 || it->constant || len < 7 || strcmp(it->name + len - 7, ".weight") != 0 ||
            dsq_ctr_at(r, it->tensor)->encoding == DSQ_ENC_NVFP4)
            continue;
        if (!(own[n] = dsq_malloc(len - 6))) {
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(own[n], it->name, len - 7);
        own[n][len - 7] = 0;
        ex[n] = own[n];
        n++;
    }
    char *text = s == DSQ_OK ? dsq_modelopt_qcfg_text(DSQ_VERSION_STRING, ex, n) : NULL;
    if (s == DSQ_OK && !text) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    if (s == DSQ_OK) s = write_text(outdir, DSQ_MODELOPT_QCFG_NAME, text, overwrite, files, err);
    dsq_free(text);
    for (size_t i = 0; own && i < n; i++) dsq_free(own[i]);
    dsq_free(own);
    dsq_free(ex);
    return s;
}

/* ---- shards ---- */

static dsq_status write_shard(const dsq_ctr_reader *r, const ex_list *l, size_t a, size_t b, const char *path,
                              const dsq_ctr_export_options *o, uint8_t *buf, dsq_progress *prog, dsq_err *err) {
    dsq_st_writer *w = NULL;
    DSQ_TRY(dsq_st_writer_create(path, o->overwrite, &w, err));
    dsq_status s = dsq_st_writer_meta(w, "format", "pt", err);
    for (size_t i = a; s == DSQ_OK && i < b; i++) {
        if (l->v[i].encoding) {
            char key[600];
            snprintf(key, sizeof key, "dsq.encoding.%s", l->v[i].name);
            s = dsq_st_writer_meta(w, key, l->v[i].encoding, err);
        }
        if (s == DSQ_OK) s = dsq_st_writer_add(w, l->v[i].name, l->v[i].dtype, l->v[i].rank, l->v[i].shape, err);
    }
    if (s == DSQ_OK) s = dsq_st_writer_begin(w, err);
    for (size_t i = a; s == DSQ_OK && i < b; i++) {
        const ex_item *it = &l->v[i];
        const dsq_ctr_tensor *t = dsq_ctr_at(r, it->tensor);
        if (it->constant) {
            s = dsq_st_writer_write(w, &MODELOPT_INPUT_SCALE, sizeof MODELOPT_INPUT_SCALE, err);
            continue;
        }
        for (uint64_t pos = 0; s == DSQ_OK && pos < it->bytes;) {
            size_t k = it->bytes - pos > EXPORT_CHUNK ? EXPORT_CHUNK : (size_t)(it->bytes - pos);
            s = dsq_ctr_read(r, t, it->part, it->off + pos, buf, k, err);
            if (s == DSQ_OK && o->scan) s = o->scan(o->scan_ctx, t, it->part, it->off + pos, buf, k, err);
            if (s == DSQ_OK) s = dsq_st_writer_write(w, buf, k, err);
            pos += k;
        }
        if (prog) dsq_progress_add(prog, it->bytes);
    }
    if (s != DSQ_OK) {
        dsq_st_writer_free(w);
        return s;
    }
    return dsq_st_writer_finish(w, err);
}

/* The exported shard must hold exactly the bytes planned (reopened: the reader validates it). */
static dsq_status check_shard(const dsq_ctr_reader *r, const ex_list *l, size_t a, size_t b, const char *path,
                              dsq_err *err) {
    dsq_st *st = NULL;
    DSQ_TRY(dsq_st_open(path, NULL, &st, err));
    dsq_status s = DSQ_OK;
    for (size_t i = a; s == DSQ_OK && i < b; i++) {
        const ex_item *it = &l->v[i];
        const dsq_st_tensor *g = dsq_st_find(st, it->name);
        const dsq_ctr_tensor *t = dsq_ctr_at(r, it->tensor);
        const uint8_t *want = it->constant ? (const uint8_t *)&MODELOPT_INPUT_SCALE
                                           : (const uint8_t *)t->parts[it->part].data + it->off;
        if (!g || g->n_bytes != it->bytes ||
            dsq__ctr_xxh3(g->data, (size_t)g->n_bytes) != dsq__ctr_xxh3(want, (size_t)it->bytes))
            s = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: tensor %s does not read back as written", path, it->name);
        if (g) dsq_st_release(st, g);
    }
    dsq_st_close(st);
    return s;
}

dsq_status dsq_ctr_export_safetensors(const char *dsq, const char *outdir, const dsq_ctr_export_options *opt,
                                      dsq_ctr_export_stats *stats, dsq_err *err) {
    dsq_ctr_export_options o = {0};
    if (opt) o = *opt;
    if (!o.shard_size) o.shard_size = DEFAULT_SHARD;
    dsq_ctr_export_stats st0 = {0};
    dsq_ctr_reader *r = NULL;
    DSQ_TRY(dsq_ctr_reader_open(dsq, NULL, &r, err));
    /* the ModelOpt layout needs NVFP4 experts: refused before anything is created */
    for (size_t i = 0; o.modelopt_nvfp4 && i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        if (!strstr(t->name, ".ffn.experts") || t->encoding == DSQ_ENC_NVFP4) continue;
        dsq_err_set(err, DSQ_ERR_UNSUPPORTED,
                    "%s: tensor %s: routed experts are %s; --format modelopt-nvfp4 needs NVFP4 experts "
                    "(convert with --recipe release --override 'family:routed_experts=nvfp4')",
                    dsq, t->name, dsq_ctr_encoding_name(t->encoding));
        dsq_ctr_reader_close(r);
        return DSQ_ERR_UNSUPPORTED;
    }
    if (!dsq_path_is_dir(outdir) && mkdir(outdir, 0755) != 0) {
        dsq_ctr_reader_close(r);
        return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot create directory: %s", outdir, strerror(errno));
    }
    char *probe = dsq_path_join(outdir, "config.json");
    bool occupied = probe && dsq_path_exists(probe);
    dsq_free(probe);
    if (occupied && !o.overwrite) {
        dsq_ctr_reader_close(r);
        return dsq_err_set(err, DSQ_ERR_EXISTS, "%s: already holds a checkpoint (use --overwrite to replace it)", outdir);
    }
    ex_list l = {0};
    dsq_status s = DSQ_OK;
    for (size_t i = 0; s == DSQ_OK && i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        if (t->n_sources == 0) s = plan_source(dsq, t, NULL, o.modelopt_nvfp4, &l, err);
        for (uint32_t k = 0; s == DSQ_OK && k < t->n_sources; k++)
            s = plan_source(dsq, t, &t->sources[k], o.modelopt_nvfp4, &l, err);
    }
    /* shard boundaries: sequential, a new shard when the next tensor would pass shard_size */
    size_t *cut = s == DSQ_OK ? dsq_malloc((l.n + 2) * sizeof *cut) : NULL;
    size_t n_shards = 0;
    if (s == DSQ_OK && !cut) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    if (s == DSQ_OK) {
        uint64_t acc = 0;
        cut[n_shards++] = 0;
        for (size_t i = 0; i < l.n; i++) {
            if (acc > 0 && acc + l.v[i].bytes > o.shard_size) {
                cut[n_shards++] = i;
                acc = 0;
            }
            acc += l.v[i].bytes;
            st0.bytes += l.v[i].bytes;
        }
        cut[n_shards] = l.n;
    }
    uint8_t *buf = s == DSQ_OK ? dsq_malloc(EXPORT_CHUNK) : NULL;
    if (s == DSQ_OK && !buf) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    dsq_progress prog;
    dsq_progress_begin(&prog, "export", st0.bytes);
    if (!o.progress) prog.enabled = false;
    cJSON *index = NULL, *wmap = NULL;
    if (s == DSQ_OK && n_shards > 1) {
        index = cJSON_CreateObject();
        cJSON *md = cJSON_AddObjectToObject(index, "metadata");
        cJSON_AddNumberToObject(md, "total_size", (double)st0.bytes);
        wmap = cJSON_AddObjectToObject(index, "weight_map");
    }
    for (size_t k = 0; s == DSQ_OK && k < n_shards; k++) {
        char fname[64];
        if (n_shards == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", k + 1, n_shards);
        char *path = dsq_path_join(outdir, fname);
        if (!path) {
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            break;
        }
        s = write_shard(r, &l, cut[k], cut[k + 1], path, &o, buf, &prog, err);
        if (s == DSQ_OK) s = check_shard(r, &l, cut[k], cut[k + 1], path, err);
        for (size_t i = cut[k]; s == DSQ_OK && wmap && i < cut[k + 1]; i++) cJSON_AddStringToObject(wmap, l.v[i].name, fname);
        dsq_free(path);
        st0.files++;
    }
    dsq_progress_end(&prog);
    st0.shards = n_shards;
    st0.tensors = l.n;
    if (s == DSQ_OK && index) {
        char *text = cJSON_Print(index);
        s = text ? write_text(outdir, DSQ_ST_INDEX_NAME, text, o.overwrite, &st0.files, err)
                 : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        cJSON_free(text);
    }
    /* config and tokenizer files from the metadata */
    dsq_ctr_meta *meta = NULL;
    if (s == DSQ_OK) s = dsq_ctr_meta_read(r, &meta, err);
    if (s == DSQ_OK) {
        if (!meta->config_json) s = dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata holds no config.json", dsq);
        char *ctext = s == DSQ_OK ? patched_config(meta->config_json, r, dsq__ctr_meta_member(meta, "recipe"),
                                                   o.modelopt_nvfp4, &st0.verbatim_config, err)
                                  : NULL;
        if (s == DSQ_OK && !ctext) s = DSQ_ERR_NOMEM;
        if (s == DSQ_OK) s = write_text(outdir, "config.json", ctext, o.overwrite, &st0.files, err);
        dsq_free(ctext);
        if (s == DSQ_OK && o.modelopt_nvfp4) s = write_modelopt_qcfg(r, &l, outdir, o.overwrite, &st0.files, err);
        if (s == DSQ_OK && meta->generation_config_json)
            s = write_text(outdir, "generation_config.json", meta->generation_config_json, o.overwrite, &st0.files, err);
        const char *const tk[][2] = {{meta->tokenizer_json, "tokenizer.json"},
                                     {meta->tokenizer_config_json, "tokenizer_config.json"},
                                     {meta->chat_template, "chat_template.jinja"}};
        for (size_t i = 0; s == DSQ_OK && i < 3; i++)
            if (tk[i][0]) s = write_text(outdir, tk[i][1], tk[i][0], o.overwrite, &st0.files, err);
    }
    dsq_ctr_meta_free(meta);
    cJSON_Delete(index);
    dsq_free(buf);
    dsq_free(cut);
    ex_free(&l);
    dsq_ctr_reader_close(r);
    if (stats) *stats = st0;
    return s;
}
