/* `dsq eval logits`: token file → forward pass → safetensors of logits (and optional extras). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsq_eval.h"
#include "dsq_safetensors.h"

#define TOKENS_TEXT_MAX (1u << 30) /* 1 GiB of text ids */

/* The first `count` ids of tensor `tokens` (I32 or I64, any rank, flattened): only their bytes are read. */
static dsq_status tokens_from_st(const char *path, dsq_st *st, uint64_t max_ids, int32_t **out, int64_t *n,
                                 dsq_err *err) {
    const dsq_st_tensor *t = dsq_st_find(st, "tokens");
    DSQ_RETURN_IF(!t, err, DSQ_ERR_MISSING, "%s: no tensor named tokens", path);
    DSQ_RETURN_IF(t->dtype != DSQ_DTYPE_I32 && t->dtype != DSQ_DTYPE_I64, err, DSQ_ERR_DTYPE,
                  "%s: tokens: dtype %s, want I32", path, dsq_dtype_name(t->dtype));
    uint64_t count = max_ids && max_ids < t->n_elements ? max_ids : t->n_elements;
    DSQ_RETURN_IF(count > INT32_MAX, err, DSQ_ERR_RANGE, "%s: tokens: too many ids", path);
    size_t esize = dsq_dtype_size(t->dtype);
    int32_t *v = dsq_malloc(sizeof(int32_t) * (count ? count : 1));
    DSQ_RETURN_IF(!v, err, DSQ_ERR_NOMEM, "%s: no memory for %llu ids", path, (unsigned long long)count);
    uint8_t *raw = dsq_malloc(count ? count * esize : 1);
    if (!raw) {
        dsq_free(v);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: no memory", path);
    }
    dsq_status s = dsq_st_read(st, t, 0, raw, count * esize, err);
    for (uint64_t i = 0; !s && i < count; i++) {
        int64_t id;
        if (t->dtype == DSQ_DTYPE_I32) {
            int32_t x;
            memcpy(&x, raw + 4 * i, 4);
            id = x;
        } else {
            memcpy(&id, raw + 8 * i, 8);
        }
        if (id < INT32_MIN || id > INT32_MAX)
            s = dsq_err_set(err, DSQ_ERR_TOKEN, "%s: tokens[%llu] = %lld is out of range", path, (unsigned long long)i,
                            (long long)id);
        v[i] = (int32_t)id;
    }
    dsq_free(raw);
    if (s) {
        dsq_free(v);
        return s;
    }
    *out = v;
    *n = (int64_t)count;
    return DSQ_OK;
}

enum { TOKENS_BLOCK = 1 << 20, TOKENS_MAX_CHARS = 24 };

typedef struct id_vec {
    int32_t *v;
    int64_t n, cap;
} id_vec;

/* One whitespace-delimited word tok[0..len) starting at byte `at`: a decimal id or an error. */
static dsq_status push_id(const char *path, char *tok, size_t len, uint64_t at, id_vec *ids, dsq_err *err) {
    tok[len] = 0;
    char *end;
    errno = 0;
    long long id = strtoll(tok, &end, 10);
    DSQ_RETURN_IF(end != tok + len || errno, err, DSQ_ERR_FORMAT, "%s: byte %llu: not a token id", path,
                  (unsigned long long)at);
    DSQ_RETURN_IF(id < INT32_MIN || id > INT32_MAX, err, DSQ_ERR_TOKEN, "%s: token %lld (index %lld) is out of range",
                  path, id, (long long)ids->n);
    if (ids->n == ids->cap) {
        int64_t cap = ids->cap ? 2 * ids->cap : 256;
        int32_t *nv = dsq_realloc(ids->v, sizeof(int32_t) * (size_t)cap);
        DSQ_RETURN_IF(!nv, err, DSQ_ERR_NOMEM, "%s: no memory for %lld ids", path, (long long)cap);
        ids->v = nv;
        ids->cap = cap;
    }
    ids->v[ids->n++] = (int32_t)id;
    return DSQ_OK;
}

/* Whitespace-separated decimal ids, read in TOKENS_BLOCK pieces and parsed as they come: memory is the
 * ids kept, and reading stops once `max_ids` (0 = no limit) are parsed. */
static dsq_status tokens_from_text(const char *path, int fd, uint64_t max_ids, int32_t **out, int64_t *n,
                                   dsq_err *err) {
    char *block = dsq_malloc(TOKENS_BLOCK), word[TOKENS_MAX_CHARS + 1];
    DSQ_RETURN_IF(!block, err, DSQ_ERR_NOMEM, "%s: no memory", path);
    id_vec ids = {0};
    size_t wl = 0;
    uint64_t pos = 0, word_at = 0;
    dsq_status s = DSQ_OK;
    bool eof = false;
    while (s == DSQ_OK && !eof && !(max_ids && (uint64_t)ids.n >= max_ids)) {
        ssize_t r = read(fd, block, TOKENS_BLOCK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            s = dsq_err_set(err, DSQ_ERR_IO, "%s: read at byte %llu failed: %s", path, (unsigned long long)pos,
                            strerror(errno));
            break;
        }
        eof = r == 0;
        for (ssize_t i = 0; s == DSQ_OK && i < r && !(max_ids && (uint64_t)ids.n >= max_ids); i++, pos++) {
            char c = block[i];
            if (isspace((unsigned char)c)) {
                if (wl) s = push_id(path, word, wl, word_at, &ids, err);
                wl = 0;
            } else if (wl == TOKENS_MAX_CHARS) {
                s = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: byte %llu: not a token id", path, (unsigned long long)word_at);
            } else {
                if (!wl) word_at = pos;
                word[wl++] = c;
            }
        }
        if (s == DSQ_OK && pos > TOKENS_TEXT_MAX)
            s = dsq_err_set(err, DSQ_ERR_RANGE, "%s: more than %u bytes of token ids", path, TOKENS_TEXT_MAX);
    }
    if (s == DSQ_OK && wl && !(max_ids && (uint64_t)ids.n >= max_ids)) s = push_id(path, word, wl, word_at, &ids, err);
    dsq_free(block);
    if (s) {
        dsq_free(ids.v);
        return s;
    }
    *out = ids.v ? ids.v : dsq_malloc(sizeof(int32_t));
    DSQ_RETURN_IF(!*out, err, DSQ_ERR_NOMEM, "%s: no memory", path);
    *n = ids.n;
    return DSQ_OK;
}

dsq_status dsq_eval_read_tokens_max(const char *path, uint64_t max_ids, int32_t **out, int64_t *n, dsq_err *err) {
    *out = NULL;
    *n = 0;
    int fd = -1;
    DSQ_TRY(dsq_open_regular(path, &fd, err)); /* a FIFO would block a plain open */
    /* a safetensors file starts with an 8-byte header length followed by '{' */
    unsigned char head[9] = {0};
    ssize_t got;
    do got = pread(fd, head, sizeof head, 0);
    while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof head && head[8] == '{') {
        close(fd);
        dsq_st *st = NULL;
        dsq_st_options so = {.no_mmap = true}; /* only the ids used are read */
        DSQ_TRY(dsq_st_open(path, &so, &st, err));
        dsq_status s = tokens_from_st(path, st, max_ids, out, n, err);
        dsq_st_close(st);
        return s;
    }
    dsq_status s = tokens_from_text(path, fd, max_ids, out, n, err);
    close(fd);
    return s;
}

dsq_status dsq_eval_read_tokens(const char *path, int32_t **out, int64_t *n, dsq_err *err) {
    return dsq_eval_read_tokens_max(path, 0, out, n, err);
}

/* ---- the job ----------------------------------------------------------------------------------- */

typedef struct outputs {
    float *logits;     /* [rows][V] */
    float *mtp;        /* [n-1][V] */
    float *hidden;     /* [n][hc][D] */
    float **layer_out; /* [L] × [n][hc][D] */
} outputs;

static dsq_status write_outputs(const dsq_eval_logits_options *opt, const dsq_v4_config *c, const outputs *o, int64_t n,
                                int64_t rows, dsq_err *err) {
    dsq_st_writer *w = NULL;
    DSQ_TRY(dsq_st_writer_create(opt->out, opt->overwrite, &w, err));
    uint64_t V = c->vocab_size, hc = (uint64_t)c->hc_mult, D = c->dim;
    uint64_t s_logits[2] = {(uint64_t)rows, V}, s_mtp[2] = {(uint64_t)(n - 1), V}, s_hid[3] = {(uint64_t)n, hc, D};
    dsq_status s = dsq_st_writer_meta(w, "numerics", dsq_numerics_name(opt->eval.numerics), err);
    if (!s) s = dsq_st_writer_add(w, "logits", DSQ_DTYPE_F32, 2, s_logits, err);
    if (!s && o->mtp) s = dsq_st_writer_add(w, "mtp_logits", DSQ_DTYPE_F32, 2, s_mtp, err);
    char name[64];
    for (int b = 0; !s && o->layer_out && b < c->n_layers; b++) {
        snprintf(name, sizeof name, "layer_out.%d", b);
        s = dsq_st_writer_add(w, name, DSQ_DTYPE_F32, 3, s_hid, err);
    }
    if (!s && o->layer_out) s = dsq_st_writer_add(w, "final_hidden", DSQ_DTYPE_F32, 3, s_hid, err);
    if (!s) s = dsq_st_writer_begin(w, err);
    if (!s) s = dsq_st_writer_write(w, o->logits, sizeof(float) * (size_t)(rows * (int64_t)V), err);
    if (!s && o->mtp) s = dsq_st_writer_write(w, o->mtp, sizeof(float) * (size_t)((n - 1) * (int64_t)V), err);
    size_t hb = sizeof(float) * (size_t)n * hc * D;
    for (int b = 0; !s && o->layer_out && b < c->n_layers; b++) s = dsq_st_writer_write(w, o->layer_out[b], hb, err);
    if (!s && o->layer_out) s = dsq_st_writer_write(w, o->hidden, hb, err);
    if (s) {
        dsq_st_writer_free(w);
        return s;
    }
    return dsq_st_writer_finish(w, err);
}

dsq_status dsq_eval_logits(const dsq_eval_logits_options *opt, dsq_eval_logits_report *report, dsq_err *err) {
    dsq_eval_logits_report rep;
    memset(&rep, 0, sizeof rep);
    int32_t *tok = NULL;
    int64_t n = 0;
    DSQ_TRY(dsq_eval_read_tokens(opt->tokens, &tok, &n, err));
    dsq_v4_model *m = NULL;
    dsq_v4_seq *seq = NULL;
    outputs o;
    memset(&o, 0, sizeof o);
    float *pre_logits = NULL;
    float **step_lo = NULL;
    dsq_status s = DSQ_OK;
    if (n < 1 || (opt->mtp && n < 2)) {
        s = dsq_err_set(err, DSQ_ERR_ARG, "%s: %lld tokens: need at least %d", opt->tokens, (long long)n,
                        opt->mtp ? 2 : 1);
        goto done;
    }
    if (opt->decode_from < 0 || opt->decode_from > n) {
        s = dsq_err_set(err, DSQ_ERR_ARG, "--decode-from %lld: must be in [1, %lld]", (long long)opt->decode_from,
                        (long long)n);
        goto done;
    }
    s = dsq_v4_model_open_ex(opt->model, &opt->eval.load, &m, err);
    if (s) goto done;
    const dsq_v4_config *c = dsq_v4_model_config(m);
    if (opt->mtp && c->n_mtp_layers < 1) {
        s = dsq_err_set(err, DSQ_ERR_ARG, "%s: --mtp: the model has no MTP block", opt->model);
        goto done;
    }
    /* validate every id before any work (the forward pass checks them again) */
    for (int64_t i = 0; i < n; i++)
        if (tok[i] < 0 || (uint64_t)tok[i] >= c->vocab_size) {
            s = dsq_err_set(err, DSQ_ERR_TOKEN, "%s: token %d at index %lld is outside the vocabulary [0, %llu)",
                            opt->tokens, tok[i], (long long)i, (unsigned long long)c->vocab_size);
            goto done;
        }
    size_t V = c->vocab_size, HD = (size_t)c->hc_mult * c->dim;
    int64_t P = opt->decode_from > 0 ? opt->decode_from : n;
    int64_t rows = opt->decode_from > 0 ? n - P + 1 : n;
    bool need_hidden = opt->mtp || opt->dump_hidden;
    o.logits = dsq_malloc(sizeof(float) * V * (size_t)rows);
    /* chunked prefill with decode_from: logits of one chunk at a time (the last row is all that is kept) */
    int64_t PC = opt->prefill_chunk > 0 && opt->prefill_chunk < P ? opt->prefill_chunk : P;
    pre_logits = opt->decode_from > 0 ? dsq_malloc(sizeof(float) * V * (size_t)PC) : o.logits;
    if (need_hidden) o.hidden = dsq_malloc(sizeof(float) * HD * (size_t)n);
    if (opt->mtp) o.mtp = dsq_malloc(sizeof(float) * V * (size_t)(n - 1));
    if (opt->dump_hidden) {
        o.layer_out = dsq_calloc((size_t)c->n_layers, sizeof(float *));
        step_lo = dsq_calloc((size_t)c->n_layers, sizeof(float *));
        for (int b = 0; o.layer_out && b < c->n_layers; b++)
            o.layer_out[b] = dsq_malloc(sizeof(float) * HD * (size_t)n);
    }
    bool ok = o.logits && pre_logits && (!need_hidden || o.hidden) && (!opt->mtp || o.mtp) &&
              (!opt->dump_hidden || (o.layer_out && step_lo));
    for (int b = 0; ok && opt->dump_hidden && b < c->n_layers; b++) ok = o.layer_out[b] != NULL;
    if (!ok) {
        s = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for the outputs of %lld tokens", (long long)n);
        goto done;
    }
    s = dsq_v4_seq_create(m, &seq, err);
    if (s) goto done;

    double t0 = dsq_now();
    int64_t last = 0; /* tokens in the last prefill call */
    for (int64_t p0 = 0; p0 < P && !s; p0 += PC) {
        int64_t len = P - p0 < PC ? P - p0 : PC;
        for (int b = 0; step_lo && b < c->n_layers; b++) step_lo[b] = o.layer_out[b] + (size_t)p0 * HD;
        /* with decode_from only the last prefill call's logits are read: the others skip the head (at a
         * real vocabulary it costs more than a layer per token) */
        float *lg = opt->decode_from > 0 ? (p0 + len == P ? pre_logits : NULL) : pre_logits + (size_t)p0 * V;
        dsq_v4_item it = {seq, tok + p0, len, lg,
                          o.hidden ? o.hidden + (size_t)p0 * HD : NULL, step_lo ? step_lo : o.layer_out};
        if (opt->memory_budget)
            s = dsq_v4_forward_streaming(m, &opt->eval, &it, 1, opt->memory_budget, err);
        else
            s = dsq_v4_forward(m, &opt->eval, &it, 1, err);
        last = len;
    }
    if (s) goto done;
    rep.seconds_prefill = dsq_now() - t0;
    rep.prefill_tokens = P;
    if (opt->decode_from > 0) {
        memcpy(o.logits, pre_logits + (size_t)(last - 1) * V, sizeof(float) * V);
        t0 = dsq_now();
        for (int64_t p = P; p < n && !s; p++) {
            for (int b = 0; step_lo && b < c->n_layers; b++) step_lo[b] = o.layer_out[b] + (size_t)p * HD;
            dsq_v4_item st = {
                seq,    tok + p, 1, o.logits + (size_t)(p - P + 1) * V, o.hidden ? o.hidden + (size_t)p * HD : NULL,
                step_lo};
            s = dsq_v4_forward(m, &opt->eval, &st, 1, err);
            if (!s && dsq_interrupted())
                s = dsq_err_set(err, DSQ_ERR_INTERRUPTED, "interrupted at position %lld", (long long)p);
        }
        if (s) goto done;
        rep.seconds_decode = dsq_now() - t0;
        rep.decode_tokens = n - P;
    }
    if (opt->mtp) {
        t0 = dsq_now();
        s = dsq_v4_mtp_forward(m, &opt->eval, seq, 0, o.hidden, tok + 1, n - 1, o.mtp, NULL, err);
        if (s) goto done;
        rep.seconds_mtp = dsq_now() - t0;
    }
    s = write_outputs(opt, c, &o, n, rows, err);
    rep.n_tokens = n;
    rep.rows = rows;
    rep.vocab = V;
done:
    if (m) rep.kv_cache = dsq_v4_eval_kv_cache(m, &opt->eval);
    if (report) *report = rep;
    if (pre_logits != o.logits) dsq_free(pre_logits);
    dsq_free(o.logits);
    dsq_free(o.mtp);
    dsq_free(o.hidden);
    for (int b = 0; o.layer_out && m && b < dsq_v4_model_config(m)->n_layers; b++) dsq_free(o.layer_out[b]);
    dsq_free(o.layer_out);
    dsq_free(step_lo);
    dsq_v4_seq_free(seq);
    dsq_v4_model_close(m);
    dsq_free(tok);
    return s;
}
