/* Weight source over a .dsq container (formats/spec/dsq.md): a canonical checkpoint name resolves to
 * the stored tensor holding it — itself, or a slice of a stack (routed experts [E, out, in], squeezed)
 * or of a fusion (compressor wkv|wgate, rows) — handed out as a zero-copy view of that slice. */
#include <cjson/cJSON.h>
#include <string.h>

#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_v4.h"
#include "dsq_wsrc.h"

static const dsq_ctr_part *part_of(const dsq_ctr_tensor *t, int kind, int *index) {
    for (int p = 0; p < t->n_parts; p++)
        if (t->parts[p].kind == kind) {
            *index = p;
            return &t->parts[p];
        }
    return NULL;
}

static dsq_status ctr_get(const dsq_wsrc *s, const char *name, dsq_wview *v, dsq_err *err) {
    const dsq_ctr_reader *r = s->impl;
    memset(v, 0, sizeof *v);
    const dsq_ctr_tensor *t = NULL;
    const dsq_ctr_source *src = NULL;
    if (!dsq_ctr_find_source(r, name, &t, &src)) {
        t = dsq_ctr_find(r, name);
        if (!t) return dsq_err_set(err, DSQ_ERR_MISSING, "%s: tensor %s is missing", s->path, name);
    }
    DSQ_RETURN_IF(t->rank > DSQ_WVIEW_MAX_RANK + 1, err, DSQ_ERR_SHAPE, "%s: %s: rank %d is too high", s->path, name,
                  t->rank);
    v->name = src ? src->name : t->name;
    v->enc = t->encoding;
    /* logical shape of the slice */
    if (!src || t->rank == 0) {
        v->rank = t->rank;
        for (int i = 0; i < t->rank; i++) v->shape[i] = t->shape[i];
    } else if (src->squeeze) {
        v->rank = t->rank - 1;
        for (int i = 1; i < t->rank; i++) v->shape[i - 1] = t->shape[i];
    } else {
        v->rank = t->rank;
        v->shape[0] = src->count;
        for (int i = 1; i < t->rank; i++) v->shape[i] = t->shape[i];
    }
    DSQ_RETURN_IF(v->rank > DSQ_WVIEW_MAX_RANK, err, DSQ_ERR_SHAPE, "%s: %s: rank too high", s->path, name);
    /* a slice of a 2-D blocked tensor must start on a block row, or its scale rows would not line up */
    DSQ_RETURN_IF(src && t->rank == 2 && t->block_rows > 1 && src->start % t->block_rows != 0, err, DSQ_ERR_UNSUPPORTED,
                  "%s: %s: starts at row %llu of %s, inside a %u-row scale block", s->path, name,
                  (unsigned long long)src->start, t->name, t->block_rows);
    if (t->encoding == DSQ_ENC_INT8_G || t->encoding == DSQ_ENC_INT4_G || t->encoding == DSQ_ENC_INT4_G_ASYM ||
        t->encoding == DSQ_ENC_INT2_G_ASYM)
        v->group = (int)t->block_cols;
    static const int kinds[4] = {DSQ_FILE_PART_DATA, DSQ_FILE_PART_SCALES, DSQ_FILE_PART_MINS,
                                 DSQ_FILE_PART_TENSOR_SCALE};
    for (int k = 0; k < 4; k++) {
        int p = 0;
        const dsq_ctr_part *part = part_of(t, kinds[k], &p);
        if (!part) continue;
        DSQ_RETURN_IF(!part->data && part->bytes, err, DSQ_ERR_STATE, "%s: %s: no mapped data", s->path, name);
        uint64_t off = 0, bytes = part->bytes;
        if (src && !dsq_ctr_source_slice(t, src, p, &off, &bytes))
            return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: %s: part %d of %s cannot be split", s->path, name, p,
                               t->name);
        const uint8_t *d = (const uint8_t *)part->data + off;
        switch (kinds[k]) {
        case DSQ_FILE_PART_DATA:
            v->data = d, v->data_bytes = bytes;
            break;
        case DSQ_FILE_PART_SCALES:
            v->scale = d, v->scale_bytes = bytes;
            break;
        case DSQ_FILE_PART_MINS:
            v->mins = d, v->mins_bytes = bytes;
            break;
        default:
            DSQ_RETURN_IF(bytes != 4, err, DSQ_ERR_FORMAT, "%s: %s: tensor scale is not one f32", s->path, name);
            memcpy(&v->tensor_scale, d, 4);
        }
    }
    return DSQ_OK;
}

static void ctr_close(dsq_wsrc *s) {
    dsq_ctr_reader_close(s->impl);
    dsq_free(s);
}

dsq_status dsq_wsrc_open_container(const char *path, dsq_wsrc **out, char **config_json, dsq_err *err) {
    *out = NULL;
    if (config_json) *config_json = NULL;
    dsq_ctr_reader *r = NULL;
    DSQ_TRY(dsq_ctr_reader_open(path, NULL, &r, err));
    dsq_status st = DSQ_OK;
    if (config_json) {
        /* metadata.model.config: the source config.json object (formats/spec/dsq.md §6) */
        size_t len = 0;
        const char *meta = dsq_ctr_metadata(r, &len);
        cJSON *root = meta ? cJSON_ParseWithLength(meta, len) : NULL;
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "config");
        char *text = cJSON_IsObject(cfg) ? cJSON_PrintUnformatted(cfg) : NULL;
        if (!text)
            st = dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata has no model.config object", path);
        else {
            *config_json = dsq_strdup(text);
            cJSON_free(text);
            if (!*config_json) st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
        }
        cJSON_Delete(root);
    }
    dsq_wsrc *s = st ? NULL : dsq_calloc(1, sizeof *s);
    if (!st && !s) st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
    if (st) {
        if (config_json) {
            dsq_free(*config_json);
            *config_json = NULL;
        }
        dsq_ctr_reader_close(r);
        return st;
    }
    s->impl = r;
    s->path = dsq_ctr_path(r);
    s->get = ctr_get;
    s->close = ctr_close;
    *out = s;
    return DSQ_OK;
}
