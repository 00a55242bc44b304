/* The checkpoint a container was made from, as inventory descriptors (dsq_ctr_describe_sources). */
#include <string.h>

#include "container_internal.h"
#include "dsq_inventory.h"

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
        if (s->dtype == DSQ_DTYPE_I8 || s->dtype == DSQ_DTYPE_U8) { /* packed FP4 [N, K/2], scales [N, K/32] */
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

dsq_status dsq_ctr_describe_sources(const dsq_ctr_reader *r, dsq_tensor_desc **out, size_t *n, dsq_err *err) {
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) cap += 2 * (size_t)dsq_ctr_at(r, i)->n_sources;
    dsq_tensor_desc *d = dsq_calloc(cap ? cap : 1, sizeof *d);
    DSQ_RETURN_IF(!d, err, DSQ_ERR_NOMEM, "%s: out of memory", dsq_ctr_path(r));
    size_t k = 0;
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        for (uint32_t j = 0; j < t->n_sources; j++) k += describe(t, &t->sources[j], &d[k]);
    }
    *out = d;
    *n = k;
    return DSQ_OK;
}
