/* dsq verify X.gguf [--source SRC] (dsq_gguf_export.h): the GGUF reader's validation, every
 * checkpoint tensor decoded through the GGUF weight source, and, with a source, the error of each
 * against the source's values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_gguf.h"
#include "dsq_gguf_export.h"
#include "dsq_wsrc.h"

static dsq_status decode_all(const dsq_wview *v, float **out, uint64_t *n, dsq_err *err) {
    uint64_t rows = 1, cols = v->rank ? v->shape[v->rank - 1] : 1, cnt;
    for (int i = 0; i + 1 < v->rank; i++)
        DSQ_RETURN_IF(!dsq_mul_u64(rows, v->shape[i], &rows), err, DSQ_ERR_OVERFLOW, "%s: shape overflows", v->name);
    DSQ_RETURN_IF(!dsq_mul_u64(rows, cols, &cnt) || cnt > SIZE_MAX / sizeof(float), err, DSQ_ERR_OVERFLOW, "%s: too big",
                  v->name);
    float *x = dsq_malloc((size_t)cnt * sizeof *x + 1);
    DSQ_RETURN_IF(!x, err, DSQ_ERR_NOMEM, "%s: out of memory", v->name);
    dsq_status st = DSQ_OK;
    if (v->enc == DSQ_ENC_I64 || v->enc == DSQ_ENC_I32) {
        for (uint64_t i = 0; i < cnt; i++) {
            int64_t q = 0;
            if (v->enc == DSQ_ENC_I64) memcpy(&q, v->data + 8 * i, 8);
            else {
                int32_t w;
                memcpy(&w, v->data + 4 * i, 4);
                q = w;
            }
            x[i] = (float)q;
        }
    } else {
        dsq_qtensor q = {v->enc, rows, cols, v->group, v->data, v->scale, v->mins, v->tensor_scale};
        dsq_codec_options co = {.name = v->name};
        st = dsq_codec_decode(&q, 0, rows, x, &co, err);
    }
    if (st != DSQ_OK) {
        dsq_free(x);
        return st;
    }
    *out = x;
    *n = cnt;
    return DSQ_OK;
}

dsq_status dsq_gguf_verify(const char *gguf, const char *source, dsq_gguf_verify_report *rep, dsq_err *err) {
    memset(rep, 0, sizeof *rep);
    for (int k = 0; k < DSQ_FAMILY_COUNT; k++) rep->family[k].min_cosine = 1;
    dsq_gguf **set = NULL;
    uint32_t nf = 0;
    DSQ_TRY(dsq_gguf_open_set(gguf, &set, &nf, err));
    rep->files = nf;
    for (uint32_t f = 0; f < nf; f++) {
        rep->bytes += dsq_gguf_file_size(set[f]);
        for (size_t i = 0; i < dsq_gguf_n_tensors(set[f]); i++) {
            const dsq_gguf_tensor *t = dsq_gguf_tensor_at(set[f], i);
            rep->tensors++;
            rep->values += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
            rep->family[dsq_gguf_family(t->name)].tensors++;
        }
    }
    dsq_gguf_close_set(set, nf);
    dsq_v4_config c, cs;
    dsq_wsrc *g = NULL, *s = NULL;
    DSQ_TRY(dsq_wsrc_open_gguf(gguf, &c, &g, err));
    dsq_status st = DSQ_OK;
    if (source) {
        st = dsq_wsrc_open_path(source, &cs, &s, err);
        if (st == DSQ_OK && (cs.n_layers != c.n_layers || cs.dim != c.dim || cs.vocab_size != c.vocab_size ||
                             cs.n_routed_experts != c.n_routed_experts))
            st = dsq_err_set(err, DSQ_ERR_CONFIG, "%s: geometry differs from the source %s", gguf, source);
        rep->source_checked = st == DSQ_OK;
    }
    dsq_inv *inv = NULL;
    if (st == DSQ_OK) st = dsq_inv_expected(&c, NULL, &inv, err);
    dsq_status first = DSQ_OK;
    for (size_t i = 0; st == DSQ_OK && i < dsq_inv_count(inv); i++) {
        const dsq_inv_entry *en = dsq_inv_at(inv, i);
        if (en->role.is_scale || en->role.part == DSQ_PART_MTP_COPY) continue;
        dsq_wview v, w;
        float *x = NULL, *y = NULL;
        uint64_t n = 0, m = 0;
        dsq_status t = g->get(g, en->name, &v, err);
        if (t == DSQ_OK) t = decode_all(&v, &x, &n, err);
        if (t == DSQ_OK) rep->checked++;
        bool mtp_head = en->role.scope == DSQ_SCOPE_MTP && (en->role.part == DSQ_PART_HC_HEAD_FN ||
                                                             en->role.part == DSQ_PART_HC_HEAD_BASE ||
                                                             en->role.part == DSQ_PART_HC_HEAD_SCALE);
        if (t == DSQ_OK && s && !mtp_head) { /* a GGUF has no mtp hc head: the main one stands in */
            t = s->get(s, en->name, &w, err);
            if (t == DSQ_OK) t = decode_all(&w, &y, &m, err);
            if (t == DSQ_OK && m != n) t = dsq_err_set(err, DSQ_ERR_SHAPE, "%s: %s: %llu values, the source has %llu", gguf,
                                                       en->name, (unsigned long long)n, (unsigned long long)m);
            if (t == DSQ_OK) {
                double se = 0, sr = 0, dot = 0, nx = 0, mx = 0;
                bool same = true;
                for (uint64_t k = 0; k < n; k++) {
                    double d = (double)x[k] - y[k];
                    same = same && x[k] == y[k];
                    se += d * d, sr += (double)y[k] * y[k], dot += (double)x[k] * y[k], nx += (double)x[k] * x[k];
                    mx = fmax(mx, fabs(d));
                }
                double rel = sr > 0 ? sqrt(se / sr) : sqrt(se), cos = nx > 0 && sr > 0 ? dot / sqrt(nx * sr) : 1;
                dsq_gguf_verify_family *f = &rep->family[en->role.family < DSQ_FAMILY_COUNT ? en->role.family : DSQ_FAMILY_OTHER];
                f->compared++, rep->compared++;
                if (same) f->identical++, rep->identical++;
                f->max_rel_rms = fmax(f->max_rel_rms, rel);
                f->max_abs = fmax(f->max_abs, mx);
                f->min_cosine = fmin(f->min_cosine, cos);
                if (rel > rep->worst_rel_rms || !rep->worst[0]) {
                    rep->worst_rel_rms = rel;
                    snprintf(rep->worst, sizeof rep->worst, "%s", en->name);
                }
            }
        }
        if (t != DSQ_OK && first == DSQ_OK) first = t;
        if (t == DSQ_ERR_NOMEM) st = t;
        dsq_free(x);
        dsq_free(y);
    }
    dsq_inv_free(inv);
    dsq_wsrc_close(g);
    dsq_wsrc_close(s);
    return st != DSQ_OK ? st : first;
}
