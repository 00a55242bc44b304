/* The checkpoint a container was made from, as inventory descriptors (dsq_ctr_describe_sources). */
#include <stdint.h>
#include <string.h>

#include "container_internal.h"
#include "dsq_inventory.h"

/* A ModelOpt NVFP4 source (dsq_modelopt.h): U8 codes with an F8_E4M3 weight_scale; its checkpoint also
 * held STEM.weight_scale_2 and STEM.input_scale (F32 []), which the container does not record by name. */
static bool is_modelopt(const dsq_ctr_source *s) {
    return s->scale_name && s->dtype == DSQ_DTYPE_U8 && s->scale_dtype == DSQ_DTYPE_F8_E4M3;
}

static const char *const MODELOPT_SCALARS[2] = {".weight_scale_2", ".input_scale"};

/* Bytes of the two scalar names of source s ("STEM.weight_scale_2\0STEM.input_scale\0"), 0 if none. */
static size_t modelopt_names_bytes(const dsq_ctr_source *s) {
    if (!is_modelopt(s)) return 0;
    size_t n = strlen(s->name), stem = n >= 7 && !strcmp(s->name + n - 7, ".weight") ? n - 7 : n;
    return 2 * stem + strlen(MODELOPT_SCALARS[0]) + strlen(MODELOPT_SCALARS[1]) + 2;
}

/* Source s of t as it was stored in its checkpoint: weight (and scale) dtype and shape. */
static size_t describe(const dsq_ctr_tensor *t, const dsq_ctr_source *s, dsq_tensor_desc *out) {
    dsq_tensor_desc *w = &out[0], *sc = &out[1];
    memset(out, 0, 2 * sizeof *out);
    w->name = s->name;
    w->dtype = s->dtype;
    if (t->rank > 0 && !s->squeeze) w->shape[w->rank++] = s->count;
    for (int d = 1; d < t->rank; d++) w->shape[w->rank++] = t->shape[d];
    if (s->scale_name && w->rank >= 2) {
        uint64_t n = w->shape[w->rank - 2], k = w->shape[w->rank - 1];
        sc->name = s->scale_name;
        sc->dtype = (dsq_dtype)s->scale_dtype;
        sc->rank = 2;
        if (is_modelopt(s)) { /* ModelOpt NVFP4: [N, K/2], F8_E4M3 weight_scale [N, K/16] */
            w->shape[w->rank - 1] = k / 2;
            sc->shape[0] = n;
            sc->shape[1] = k / 16;
        } else if (s->dtype == DSQ_DTYPE_I8 || s->dtype == DSQ_DTYPE_U8) { /* packed FP4 [N, K/2], scales [N, K/32] */
            w->shape[w->rank - 1] = k / 2;
            sc->shape[0] = n;
            sc->shape[1] = k / 32;
        } else { /* FP8 blocks: the stored block when kept, else the release's 128x128 */
            bool kept = t->encoding == DSQ_ENC_FP8_B128 || t->encoding == DSQ_ENC_FP8_B128_F32;
            uint64_t bn = kept && t->block_rows ? t->block_rows : 128, bk = kept && t->block_cols ? t->block_cols : 128;
            sc->shape[0] = dsq_ceil_div(n, bn);
            sc->shape[1] = dsq_ceil_div(k, bk);
        }
        sc->n_bytes = sc->shape[0] * sc->shape[1] * dsq_dtype_size(sc->dtype);
    }
    uint64_t e = 1;
    for (int d = 0; d < w->rank; d++) e *= w->shape[d]; /* bounded by the validated stored shape */
    w->n_bytes = e * dsq_dtype_size(w->dtype);
    return sc->name ? 2 : 1;
}

/* The ModelOpt scalars of source s, their names written at *names (modelopt_names_bytes(s) bytes). */
static size_t describe_scalars(const dsq_ctr_source *s, dsq_tensor_desc *out, char **names) {
    if (!is_modelopt(s)) return 0;
    size_t n = strlen(s->name), stem = n >= 7 && !strcmp(s->name + n - 7, ".weight") ? n - 7 : n;
    for (int q = 0; q < 2; q++) {
        char *p = *names;
        memcpy(p, s->name, stem);
        strcpy(p + stem, MODELOPT_SCALARS[q]);
        *names += strlen(p) + 1;
        memset(&out[q], 0, sizeof out[q]);
        out[q].name = p;
        out[q].dtype = DSQ_DTYPE_F32;
        out[q].rank = 0;
        out[q].n_bytes = 4;
    }
    return 2;
}

dsq_status dsq_ctr_describe_sources(const dsq_ctr_reader *r, dsq_tensor_desc **out, size_t *n, dsq_err *err) {
    *out = NULL;
    *n = 0;
    /* descriptors, then (ModelOpt sources) their scalar tensors' names, in one allocation */
    size_t cap = 0, name_bytes = 0;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        cap += 2 * (size_t)t->n_sources;
        for (uint32_t j = 0; j < t->n_sources; j++) {
            size_t b = modelopt_names_bytes(&t->sources[j]);
            if (b) cap += 2, name_bytes += b;
        }
    }
    uint64_t bytes = 0;
    DSQ_RETURN_IF(!dsq_mul_u64(cap ? cap : 1, sizeof(dsq_tensor_desc), &bytes) || !dsq_add_u64(bytes, name_bytes, &bytes) ||
                      bytes > SIZE_MAX,
                  err, DSQ_ERR_OVERFLOW, "%s: too many sources", dsq_ctr_path(r));
    dsq_tensor_desc *d = dsq_calloc(1, (size_t)bytes);
    DSQ_RETURN_IF(!d, err, DSQ_ERR_NOMEM, "%s: out of memory", dsq_ctr_path(r));
    char *names = (char *)(d + (cap ? cap : 1));
    size_t k = 0;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        for (uint32_t j = 0; j < t->n_sources; j++) {
            k += describe(t, &t->sources[j], &d[k]);
            k += describe_scalars(&t->sources[j], &d[k], &names);
        }
    }
    *out = d;
    *n = k;
    return DSQ_OK;
}
