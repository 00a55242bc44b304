/* Crafted containers for the suites (header-only): a real .dsq rewritten tensor by tensor through the
 * container writer with one edit, so checksums and structure stay valid and only the edited fact is
 * wrong (metadata, a stored or source name, a byte of data). */
#ifndef DSQ_CTR_UTIL_H
#define DSQ_CTR_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "dsq_container.h"
#include "dsq_test.h"

typedef struct ctr_edit {
    const char *meta;                    /* replacement metadata JSON, NULL: keep */
    const char *rename_from, *rename_to; /* a stored tensor's new name */
    const char *src_from, *src_to;       /* a source record's new name */
    const char *poke_tensor;             /* set byte poke_at of this tensor's part poke_part to poke_byte */
    int poke_part;
    uint64_t poke_at;
    uint8_t poke_byte;
} ctr_edit;

static inline const char *cu_swap(const char *name, const char *from, const char *to) {
    return from && name && !strcmp(name, from) ? to : name;
}

/* Rewrite `in` as `out` with edit e (asserts). */
static inline void ctr_rewrite(const char *in, const char *out, const ctr_edit *e) {
    dsq_ctr_reader *r = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_reader_open(in, NULL, &r, &err), DSQ_OK);
    dsq_ctr_writer *w = NULL;
    dsq_ctr_writer_options wo = {.overwrite = true};
    assert_int_equal(dsq_ctr_writer_create(out, &wo, &w, &err), DSQ_OK);
    size_t n = dsq_ctr_count(r);
    for (size_t i = 0; i < n; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        dsq_ctr_source_desc *sd = calloc(t->n_sources ? t->n_sources : 1, sizeof *sd);
        for (uint32_t k = 0; k < t->n_sources; k++) {
            const dsq_ctr_source *s = &t->sources[k];
            sd[k] = (dsq_ctr_source_desc){cu_swap(s->name, e->src_from, e->src_to),
                                          s->scale_name,
                                          s->start,
                                          s->count,
                                          s->squeeze,
                                          s->dtype,
                                          s->scale_dtype,
                                          s->shard};
        }
        dsq_ctr_tensor_desc d = {cu_swap(t->name, e->rename_from, e->rename_to),
                                 t->encoding,
                                 t->rank,
                                 {0},
                                 t->block_rows,
                                 t->block_cols,
                                 t->n_sources,
                                 sd};
        memcpy(d.shape, t->shape, sizeof d.shape);
        dsq_status st = dsq_ctr_writer_add(w, &d, NULL, &err);
        if (st) fprintf(stderr, "rewrite: %s\n", err.msg);
        assert_int_equal(st, DSQ_OK);
        free(sd);
    }
    size_t ml = 0;
    const char *meta = e->meta ? e->meta : dsq_ctr_metadata(r, &ml);
    if (e->meta) ml = strlen(e->meta);
    assert_int_equal(dsq_ctr_writer_set_metadata(w, meta, ml, &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    for (size_t i = 0; i < n; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        for (int p = 0; p < t->n_parts; p++) {
            uint64_t nb = t->parts[p].bytes;
            uint8_t *b = malloc(nb ? nb : 1);
            memcpy(b, t->parts[p].data, nb);
            if (e->poke_tensor && !strcmp(t->name, e->poke_tensor) && p == e->poke_part) {
                assert_true(e->poke_at < nb);
                b[e->poke_at] = e->poke_byte;
            }
            assert_int_equal(dsq_ctr_writer_write(w, (uint32_t)i, p, 0, b, nb, &err), DSQ_OK);
            free(b);
        }
        for (uint32_t k = 0; k < t->n_sources; k++)
            dsq_ctr_writer_set_source_hash(w, (uint32_t)i, k, t->sources[k].xxh3, t->sources[k].scale_xxh3);
        assert_int_equal(dsq_ctr_writer_end_tensor(w, (uint32_t)i, &err), DSQ_OK);
    }
    dsq_status st = dsq_ctr_writer_finish(w, &err);
    if (st) fprintf(stderr, "rewrite: %s\n", err.msg);
    assert_int_equal(st, DSQ_OK);
    dsq_ctr_reader_close(r);
    dsq_err_clear(&err);
}

#endif
