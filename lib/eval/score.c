/* Quality jobs over a V4 model: chunked perplexity, KL base files and KL against them, multiple
 * choice, layer diff of two models (with hybrid REF/CAND models for per-block errors), generation. */
#include <math.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_score.h"

void dsq_score_options_default(dsq_score_options *o) {
    memset(o, 0, sizeof *o);
    dsq_eval_options_default(&o->eval);
    o->n_ctx = DSQ_SCORE_DEFAULT_CTX;
    o->batch = DSQ_SCORE_DEFAULT_BATCH;
    o->n_bucket_edges = -1;
    o->score_from = -1;
}

static int32_t model_bos(const dsq_v4_model *m, const dsq_score_options *o) {
    const dsq_v4_config *c = dsq_v4_model_config(m);
    if (o->no_bos || c->bos_token_id < 0 || (uint64_t)c->bos_token_id >= c->vocab_size) return -1;
    return (int32_t)c->bos_token_id;
}

dsq_status dsq_score_plan(const dsq_v4_model *m, const dsq_score_options *o, uint64_t n_text, dsq_ppl_plan *plan,
                          dsq_err *err) {
    /* each chunk runs from position 0: its last position must be one the model was built for */
    uint64_t max_pos = dsq_v4_model_config(m)->max_position_embeddings;
    DSQ_RETURN_IF(max_pos && o->n_ctx > max_pos, err, DSQ_ERR_ARG,
                  "a context of %u tokens (--ctx) exceeds the model's max_position_embeddings of %llu", o->n_ctx,
                  (unsigned long long)max_pos);
    DSQ_TRY(dsq_ppl_plan_make(n_text, o->n_ctx, o->max_chunks, model_bos(m, o), plan, err));
    if (o->score_from >= 0) {
        DSQ_RETURN_IF(o->score_from > (int64_t)o->n_ctx - 2, err, DSQ_ERR_ARG,
                      "--score-from %lld: must be at most --ctx − 2 = %lld", (long long)o->score_from,
                      (long long)o->n_ctx - 2);
        plan->score_from = (uint32_t)o->score_from;
    }
    return DSQ_OK;
}

uint64_t dsq_score_text_bound(const dsq_score_options *o) {
    return o->max_chunks ? (uint64_t)o->max_chunks * o->n_ctx : 0;
}

/* ---- the chunk runner -------------------------------------------------------------------------- */

/* Called for every scored row in order: `position` counts scored positions from 0 over the run. */
typedef dsq_status (*row_fn)(void *user, uint64_t position, const float *row, int32_t target, dsq_err *err);

typedef struct chunk_run {
    const dsq_v4_model *m;
    const dsq_score_options *o;
    const dsq_ppl_plan *plan;
    const int32_t *text;
    row_fn fn;
    void *user;
    dsq_stat nll;
} chunk_run;

static dsq_status run_chunks(chunk_run *cr, dsq_err *err) {
    const dsq_v4_config *cfg = dsq_v4_model_config(cr->m);
    const dsq_ppl_plan *plan = cr->plan;
    uint64_t V = cfg->vocab_size, n_ctx = plan->n_ctx, per_chunk;
    DSQ_RETURN_IF(!dsq_mul_u64(n_ctx, V * sizeof(float), &per_chunk) || per_chunk > SIZE_MAX, err, DSQ_ERR_OVERFLOW,
                  "logits of a %llu-token chunk overflow", (unsigned long long)n_ctx);
    uint64_t batch = cr->o->batch ? cr->o->batch : DSQ_SCORE_DEFAULT_BATCH;
    if (batch > DSQ_SCORE_MAX_LOGITS_BYTES / per_chunk) batch = DSQ_SCORE_MAX_LOGITS_BYTES / per_chunk;
    if (batch == 0) batch = 1;
    if (batch > plan->n_chunks) batch = plan->n_chunks;
    dsq_v4_seq **seqs = dsq_calloc(batch, sizeof *seqs);
    int32_t *chunks = dsq_malloc(batch * n_ctx * sizeof *chunks);
    float *logits = dsq_malloc(batch * per_chunk);
    dsq_v4_item *items = dsq_calloc(batch, sizeof *items);
    dsq_status s = seqs && chunks && logits && items
                       ? DSQ_OK
                       : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory for %llu chunks of %llu tokens",
                                     (unsigned long long)batch, (unsigned long long)n_ctx);
    for (uint64_t i = 0; s == DSQ_OK && i < batch; i++) s = dsq_v4_seq_create(cr->m, &seqs[i], err);
    uint32_t from = plan->score_from, scored = dsq_ppl_plan_scored_per_chunk(plan);
    dsq_score_progress pr = {.total = dsq_ppl_plan_positions(plan)};
    for (uint32_t c0 = 0; s == DSQ_OK && c0 < plan->n_chunks; c0 += (uint32_t)batch) {
        int nb = (int)(plan->n_chunks - c0 < batch ? plan->n_chunks - c0 : batch);
        for (int i = 0; i < nb; i++) {
            dsq_v4_seq_reset(seqs[i]);
            dsq_ppl_plan_chunk(plan, cr->text, c0 + (uint32_t)i, chunks + (size_t)i * n_ctx);
            items[i] = (dsq_v4_item){.seq = seqs[i],
                                     .tokens = chunks + (size_t)i * n_ctx,
                                     .n_tokens = (int64_t)n_ctx,
                                     .logits = logits + (size_t)i * n_ctx * V};
        }
        s = dsq_v4_forward_streaming(cr->m, &cr->o->eval, items, nb, cr->o->memory_budget, err);
        for (int i = 0; s == DSQ_OK && i < nb; i++) {
            const int32_t *chunk = chunks + (size_t)i * n_ctx;
            for (uint32_t p = from; s == DSQ_OK && p + 1 < n_ctx; p++) {
                const float *row = logits + ((size_t)i * n_ctx + p) * V;
                uint64_t pos = (uint64_t)(c0 + (uint32_t)i) * scored + (p - from);
                double nll;
                s = dsq_metrics_nll(row, V, chunk[p + 1], &nll, err);
                if (s == DSQ_OK) dsq_stat_add(&cr->nll, nll);
                if (s == DSQ_OK && cr->fn) s = cr->fn(cr->user, pos, row, chunk[p + 1], err);
            }
        }
        if (s == DSQ_OK && dsq_interrupted()) s = dsq_err_set(err, DSQ_ERR_INTERRUPTED, "interrupted");
        if (s == DSQ_OK && cr->o->progress) {
            pr.done = (uint64_t)(c0 + (uint32_t)nb) * scored;
            pr.ppl = dsq_ppl_from_stat(&cr->nll);
            cr->o->progress(cr->o->user, &pr);
        }
    }
    for (uint64_t i = 0; seqs && i < batch; i++) dsq_v4_seq_free(seqs[i]);
    dsq_free(seqs);
    dsq_free(chunks);
    dsq_free(logits);
    dsq_free(items);
    return s;
}

dsq_status dsq_score_ppl(const dsq_v4_model *m, const dsq_score_options *o, const int32_t *text, uint64_t n_text,
                         dsq_ppl_result *out, dsq_err *err) {
    dsq_ppl_plan plan;
    DSQ_TRY(dsq_score_plan(m, o, n_text, &plan, err));
    chunk_run cr = {.m = m, .o = o, .plan = &plan, .text = text};
    DSQ_TRY(run_chunks(&cr, err));
    *out = dsq_ppl_from_stat(&cr.nll);
    return DSQ_OK;
}

/* ---- KL base and KL --------------------------------------------------------------------------- */

typedef struct base_job {
    dsq_kld_ctx *ctx;
    dsq_kbase_writer *w;
} base_job;

static dsq_status base_row(void *user, uint64_t position, const float *row, int32_t target, dsq_err *err) {
    base_job *j = user;
    dsq_kbase_record rec;
    DSQ_TRY(dsq_kld_ref_record(j->ctx, row, target, position, &rec, err));
    return dsq_kbase_writer_add(j->w, &rec, err);
}

dsq_status dsq_score_save_base(const dsq_v4_model *m, const dsq_score_options *o, const dsq_base_options *bo,
                               const int32_t *text, uint64_t n_text, const char *path, dsq_ppl_result *ppl,
                               dsq_err *err) {
    const dsq_v4_config *cfg = dsq_v4_model_config(m);
    DSQ_RETURN_IF(cfg->vocab_size > DSQ_KBASE_MAX_VOCAB, err, DSQ_ERR_RANGE, "%s: vocabulary %llu too large", path,
                  (unsigned long long)cfg->vocab_size);
    dsq_kbase_info info;
    memset(&info, 0, sizeof info);
    info.vocab = (uint32_t)cfg->vocab_size;
    info.k = bo && bo->k ? bo->k : DSQ_KBASE_DEFAULT_K;
    if (info.k > info.vocab) info.k = info.vocab;
    info.seed = bo ? bo->seed : 0;
    info.temperature = bo && bo->temperature > 0 ? bo->temperature : 1.0;
    if (bo && bo->note) {
        size_t n = 0; /* copy printable bytes only, up to the limit */
        for (const char *c = bo->note; *c && n < DSQ_KBASE_NOTE_MAX; c++)
            info.note[n++] = (unsigned char)*c < 0x20 || *c == 0x7f ? ' ' : *c;
        info.note[n] = 0;
    }
    DSQ_TRY(dsq_score_plan(m, o, n_text, &info.plan, err));
    base_job j = {0};
    DSQ_TRY(dsq_kld_ctx_create(info.vocab, info.k, info.temperature, info.seed, &j.ctx, err));
    dsq_status s = dsq_kbase_writer_open(path, &info, text, bo && bo->overwrite, &j.w, err);
    chunk_run cr = {.m = m, .o = o, .plan = &info.plan, .text = text, .fn = base_row, .user = &j};
    if (s == DSQ_OK) s = run_chunks(&cr, err);
    if (s == DSQ_OK) {
        s = dsq_kbase_writer_finish(j.w, err);
        j.w = NULL;
    }
    dsq_kbase_writer_free(j.w);
    dsq_kld_ctx_free(j.ctx);
    if (s == DSQ_OK && ppl) *ppl = dsq_ppl_from_stat(&cr.nll);
    return s;
}

typedef struct kld_job {
    dsq_kld_ctx *ctx;
    dsq_kbase_reader *r;
    dsq_kld_acc *acc;
    const dsq_ppl_plan *plan;
} kld_job;

static dsq_status kld_row(void *user, uint64_t position, const float *row, int32_t target, dsq_err *err) {
    kld_job *j = user;
    dsq_kbase_record rec;
    bool done;
    DSQ_TRY(dsq_kbase_reader_next(j->r, &rec, &done, err));
    DSQ_RETURN_IF(done, err, DSQ_ERR_TRUNCATED, "KL base ends before position %llu", (unsigned long long)position);
    DSQ_RETURN_IF(rec.target != target, err, DSQ_ERR_FORMAT,
                  "KL base position %llu: reference scored token %d, the candidate %d", (unsigned long long)position,
                  (int)rec.target, (int)target);
    dsq_kld_pos p;
    DSQ_TRY(dsq_kld_compare(j->ctx, &rec, row, position, &p, err));
    /* scored positions run chunk by chunk over chunk positions score_from … n_ctx-2 (run_chunks) */
    p.ctx_pos = j->plan->score_from + position % dsq_ppl_plan_scored_per_chunk(j->plan);
    return dsq_kld_acc_add(j->acc, &p, err);
}

dsq_status dsq_score_kld(const dsq_v4_model *m, const dsq_score_options *o, const char *base_path, const int32_t *text,
                         uint64_t n_text, dsq_kld_stats *out, dsq_err *err) {
    const dsq_v4_config *cfg = dsq_v4_model_config(m);
    kld_job j = {0};
    DSQ_TRY(dsq_kbase_reader_open(base_path, &j.r, err));
    const dsq_kbase_info *in = dsq_kbase_reader_info(j.r);
    dsq_status s = DSQ_OK;
    if (in->vocab != cfg->vocab_size)
        s = dsq_err_set(err, DSQ_ERR_SHAPE, "%s: base vocabulary %u, model vocabulary %llu", base_path, in->vocab,
                        (unsigned long long)cfg->vocab_size);
    else if (text && (n_text < in->n_text || dsq_kbase_tokens_hash(text, in->n_text) != in->tokens_hash))
        s = dsq_err_set(err, DSQ_ERR_CHECKSUM,
                        "%s: the text's tokens differ from the %llu the base was made from (another text, tokenizer "
                        "or --ctx?)",
                        base_path, (unsigned long long)in->n_text);
    if (s == DSQ_OK) s = dsq_kld_ctx_create(in->vocab, in->k, in->temperature, in->seed, &j.ctx, err);
    if (s == DSQ_OK) s = dsq_kld_acc_create(&j.acc, err);
    if (s == DSQ_OK && o->n_bucket_edges >= 0) s = dsq_kld_acc_set_buckets(j.acc, o->bucket_edges, o->n_bucket_edges, err);
    j.plan = &in->plan;
    chunk_run cr = {.m = m, .o = o, .plan = &in->plan, .text = dsq_kbase_reader_text(j.r), .fn = kld_row, .user = &j};
    if (s == DSQ_OK) s = run_chunks(&cr, err);
    if (s == DSQ_OK) { /* the file must end after the last position */
        dsq_kbase_record rec;
        bool done;
        s = dsq_kbase_reader_next(j.r, &rec, &done, err);
        if (s == DSQ_OK && !done)
            s = dsq_err_set(err, DSQ_ERR_UNEXPECTED, "%s: more positions than planned", base_path);
    }
    if (s == DSQ_OK) s = dsq_kld_acc_stats(j.acc, out, err);
    dsq_kld_acc_free(j.acc);
    dsq_kld_ctx_free(j.ctx);
    dsq_kbase_reader_close(j.r);
    return s;
}

/* ---- multiple choice --------------------------------------------------------------------------- */

typedef struct mc_job {
    const dsq_v4_model *m;
    const dsq_score_options *o;
    const dsq_tok *tok;
    dsq_v4_seq *seq;
    float *logits;
    size_t cap; /* tokens the logits buffer holds */
} mc_job;

static dsq_status mc_tokenize(void *user, const char *text, size_t len, int32_t **ids, size_t *n, dsq_err *err) {
    mc_job *j = user;
    dsq_tok_ids v = {0};
    dsq_status s = dsq_tok_encode(j->tok, text, len, &v, err);
    int32_t *copy = s == DSQ_OK ? dsq_malloc((v.n ? v.n : 1) * sizeof *copy) : NULL;
    if (s == DSQ_OK && !copy) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory tokenizing %zu bytes", len);
    if (s == DSQ_OK) {
        memcpy(copy, v.ids, v.n * sizeof *copy);
        *ids = copy;
        *n = v.n;
    }
    dsq_tok_ids_free(&v);
    return s;
}

static dsq_status mc_span(void *user, const int32_t *ids, size_t n, size_t start, double *out, dsq_err *err) {
    mc_job *j = user;
    uint64_t V = dsq_v4_model_config(j->m)->vocab_size;
    if (n > j->cap) {
        uint64_t bytes;
        DSQ_RETURN_IF(!dsq_mul_u64(n, V * sizeof(float), &bytes) || bytes > SIZE_MAX, err, DSQ_ERR_OVERFLOW,
                      "logits of %zu tokens overflow", n);
        float *l = dsq_realloc(j->logits, (size_t)bytes);
        DSQ_RETURN_IF(!l, err, DSQ_ERR_NOMEM, "out of memory for the logits of %zu tokens", n);
        j->logits = l;
        j->cap = n;
    }
    dsq_v4_seq_reset(j->seq);
    dsq_v4_item it = {.seq = j->seq, .tokens = ids, .n_tokens = (int64_t)n, .logits = j->logits};
    DSQ_TRY(dsq_v4_forward(j->m, &j->o->eval, &it, 1, err));
    for (size_t t = start; t < n; t++) {
        double nll;
        DSQ_TRY(dsq_metrics_nll(j->logits + (t - 1) * V, V, ids[t], &nll, err));
        out[t - start] = -nll;
    }
    return DSQ_OK;
}

dsq_status dsq_score_mc(const dsq_v4_model *m, const dsq_score_options *o, const dsq_tok *tok, const dsq_mc_task *task,
                        size_t first, size_t count, dsq_mc_result *out, dsq_err *err) {
    mc_job j = {.m = m, .o = o, .tok = tok};
    DSQ_TRY(dsq_v4_seq_create(m, &j.seq, err));
    dsq_mc_options mo = {.bos = model_bos(m, o), .first = first, .count = count};
    dsq_status s = dsq_mc_score(task, &mo, mc_tokenize, &j, mc_span, &j, out, err);
    dsq_v4_seq_free(j.seq);
    dsq_free(j.logits);
    return s;
}

/* ---- layer diff -------------------------------------------------------------------------------- */

/* A weight source taking blocks [lo, hi] (and, with globals_cand, the embedding/head tensors) from
 * CAND and everything else from REF.  It borrows both sources. */
typedef struct hybrid {
    const dsq_wsrc *ref, *cand;
    int lo, hi;
    bool globals_cand;
} hybrid;

static const dsq_wsrc *hybrid_pick(const hybrid *h, const char *name) {
    if (!strncmp(name, "layers.", 7)) {
        int b = 0;
        const char *p = name + 7;
        while (*p >= '0' && *p <= '9' && b < 1 << 20) b = b * 10 + (*p++ - '0');
        return b >= h->lo && b <= h->hi ? h->cand : h->ref;
    }
    if (!strncmp(name, "mtp.", 4)) return h->ref;
    return h->globals_cand ? h->cand : h->ref;
}

static dsq_status hybrid_get(const dsq_wsrc *s, const char *name, dsq_wview *out, dsq_err *err) {
    const dsq_wsrc *src = hybrid_pick(s->impl, name);
    return src->get(src, name, out, err);
}
static void hybrid_prefetch(const dsq_wsrc *s, const dsq_wview *v) {
    const dsq_wsrc *src = hybrid_pick(s->impl, v->name);
    if (src->prefetch) src->prefetch(src, v);
}
static void hybrid_release(const dsq_wsrc *s, const dsq_wview *v) {
    const dsq_wsrc *src = hybrid_pick(s->impl, v->name);
    if (src->release) src->release(src, v);
}
/* first-use checks (checksums of .dsq parts) go to the source that holds the view */
static dsq_status hybrid_check(const dsq_wsrc *s, const dsq_wview *v, bool checksum, bool allow, bool *nonfinite,
                               dsq_err *err) {
    const dsq_wsrc *src = hybrid_pick(s->impl, v->name);
    if (src->check) return src->check(src, v, checksum, allow, nonfinite, err);
    uint64_t at = dsq_codec_find_nonfinite(dsq_codec_part_nf_kind(v->enc, DSQ_CODEC_PART_CODES), v->data, v->data_bytes);
    if (at == UINT64_MAX) return DSQ_OK;
    DSQ_RETURN_IF(!allow, err, DSQ_ERR_NONFINITE, "%s: %s: element %llu is NaN or infinite", src->path, v->name,
                  (unsigned long long)at);
    *nonfinite = true;
    return DSQ_OK;
}
static void hybrid_close(dsq_wsrc *s) {
    if (!s) return;
    dsq_free(s->impl);
    dsq_free(s);
}

static dsq_status hybrid_model(const dsq_wsrc *ref, const dsq_wsrc *cand, int lo, int hi, bool globals_cand,
                               const dsq_v4_config *cfg, const dsq_v4_load_options *lo_opt, dsq_v4_model **out,
                               dsq_err *err) {
    *out = NULL;
    dsq_wsrc *s = dsq_calloc(1, sizeof *s);
    hybrid *h = dsq_calloc(1, sizeof *h);
    if (!s || !h) {
        dsq_free(s);
        dsq_free(h);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    }
    *h = (hybrid){ref, cand, lo, hi, globals_cand};
    s->impl = h;
    s->path = lo <= hi ? cand->path : ref->path;
    s->get = hybrid_get;
    s->prefetch = hybrid_prefetch;
    s->release = hybrid_release;
    s->close = hybrid_close;
    s->check = hybrid_check;
    return dsq_v4_model_create_ex(s, cfg, lo_opt, out, err); /* owns s from here */
}

static dsq_status open_source(const char *path, dsq_v4_config *cfg, dsq_wsrc **src, dsq_err *err) {
    return dsq_wsrc_open_path(path, cfg, src, err);
}

void dsq_score_diff_clear(dsq_score_diff *d) {
    if (!d) return;
    dsq_free(d->own);
    dsq_free(d->fed);
    memset(d, 0, sizeof *d);
}

typedef struct diff_bufs {
    float *logits, *hidden, **layer_out, *layer_mem;
} diff_bufs;

static dsq_status diff_bufs_alloc(diff_bufs *b, int L, uint64_t n, uint64_t V, uint64_t stream, dsq_err *err) {
    uint64_t lb, hb, ob;
    DSQ_RETURN_IF(!dsq_mul_u64(n, V * sizeof(float), &lb) || !dsq_mul_u64(n, stream * sizeof(float), &hb) ||
                      !dsq_mul_u64(hb, (uint64_t)L, &ob) || ob > SIZE_MAX,
                  err, DSQ_ERR_OVERFLOW, "diff buffers overflow");
    b->logits = dsq_malloc((size_t)lb);
    b->hidden = dsq_malloc((size_t)hb);
    b->layer_mem = dsq_malloc((size_t)ob);
    b->layer_out = dsq_calloc((size_t)L, sizeof *b->layer_out);
    DSQ_RETURN_IF(!b->logits || !b->hidden || !b->layer_mem || !b->layer_out, err, DSQ_ERR_NOMEM,
                  "out of memory for the hidden states of %llu tokens", (unsigned long long)n);
    for (int i = 0; i < L; i++) b->layer_out[i] = b->layer_mem + (size_t)i * n * stream;
    return DSQ_OK;
}

static void diff_bufs_free(diff_bufs *b) {
    dsq_free(b->logits);
    dsq_free(b->hidden);
    dsq_free(b->layer_mem);
    dsq_free(b->layer_out);
}

static dsq_status run_one(const dsq_v4_model *m, const dsq_eval_options *eo, const int32_t *tok, int64_t n,
                          float *logits, float *hidden, float **layer_out, dsq_err *err) {
    dsq_v4_seq *seq;
    DSQ_TRY(dsq_v4_seq_create(m, &seq, err));
    dsq_v4_item it = {
        .seq = seq, .tokens = tok, .n_tokens = n, .logits = logits, .hidden = hidden, .layer_out = layer_out};
    dsq_status s = dsq_v4_forward(m, eo, &it, 1, err);
    dsq_v4_seq_free(seq);
    return s;
}

dsq_status dsq_score_diff_run(const char *ref_path, const char *cand_path, const dsq_score_options *o,
                              const int32_t *text, uint64_t n_text, bool ref_input, dsq_score_diff *out, dsq_err *err) {
    memset(out, 0, sizeof *out);
    dsq_v4_config *cr = dsq_calloc(1, sizeof *cr), *cc = dsq_calloc(1, sizeof *cc);
    dsq_wsrc *sr = NULL, *sc = NULL;
    dsq_v4_model *mr = NULL, *mc = NULL, *mh = NULL;
    diff_bufs br = {0}, bc = {0};
    dsq_kld_ctx *kc = NULL;
    dsq_kld_acc *acc = NULL;
    int32_t *chunk = NULL;
    float *fed_out = NULL;
    dsq_status s = cr && cc ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    if (s == DSQ_OK) s = open_source(ref_path, cr, &sr, err);
    if (s == DSQ_OK) s = open_source(cand_path, cc, &sc, err);
    if (s == DSQ_OK && (cr->vocab_size != cc->vocab_size || cr->dim != cc->dim || cr->n_layers != cc->n_layers ||
                        cr->hc_mult != cc->hc_mult))
        s = dsq_err_set(err, DSQ_ERR_CONFIG, "%s and %s are different architectures", ref_path, cand_path);
    if (s == DSQ_OK) s = hybrid_model(sr, sc, 1, 0, false, cr, &o->eval.load, &mr, err);               /* all REF */
    if (s == DSQ_OK) s = hybrid_model(sr, sc, 0, cr->n_layers - 1, true, cr, &o->eval.load, &mc, err); /* all CAND */
    dsq_ppl_plan plan;
    if (s == DSQ_OK) s = dsq_score_plan(mr, o, n_text, &plan, err);
    int L = cr ? cr->n_layers : 0;
    uint64_t V = cr ? cr->vocab_size : 0, n = s == DSQ_OK ? plan.n_ctx : 0,
             stream = cr ? (uint64_t)cr->hc_mult * cr->dim : 0;
    if (s == DSQ_OK) s = diff_bufs_alloc(&br, L, n, V, stream, err);
    if (s == DSQ_OK) s = diff_bufs_alloc(&bc, L, n, V, stream, err);
    if (s == DSQ_OK) {
        out->n_blocks = L;
        out->own = dsq_calloc((size_t)L, sizeof *out->own);
        out->fed = ref_input ? dsq_calloc((size_t)L, sizeof *out->fed) : NULL;
        chunk = dsq_malloc(n * sizeof *chunk);
        fed_out = ref_input ? dsq_malloc(n * stream * sizeof *fed_out) : NULL;
        if (!out->own || (ref_input && (!out->fed || !fed_out)) || !chunk)
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    }
    if (s == DSQ_OK) s = dsq_kld_ctx_create((uint32_t)V, (uint32_t)V, 1.0, 0, &kc, err);
    if (s == DSQ_OK) s = dsq_kld_acc_create(&acc, err);
    uint64_t position = 0;
    for (uint32_t c = 0; s == DSQ_OK && c < plan.n_chunks; c++) {
        dsq_ppl_plan_chunk(&plan, text, c, chunk);
        s = run_one(mr, &o->eval, chunk, (int64_t)n, br.logits, br.hidden, br.layer_out, err);
        if (s == DSQ_OK) s = run_one(mc, &o->eval, chunk, (int64_t)n, bc.logits, bc.hidden, bc.layer_out, err);
        for (int b = 0; s == DSQ_OK && b < L; b++)
            dsq_diff_add(&out->own[b], br.layer_out[b], bc.layer_out[b], n * stream);
        if (s == DSQ_OK) dsq_diff_add(&out->final, br.hidden, bc.hidden, n * stream);
        for (uint64_t p = 0; s == DSQ_OK && p < n; p++, position++) {
            dsq_kbase_record rec;
            dsq_kld_pos kp;
            int32_t target = p + 1 < n ? chunk[p + 1] : chunk[p];
            s = dsq_kld_ref_record(kc, br.logits + p * V, target, position, &rec, err);
            if (s == DSQ_OK) s = dsq_kld_compare(kc, &rec, bc.logits + p * V, position, &kp, err);
            if (s == DSQ_OK) s = dsq_kld_acc_add(acc, &kp, err);
        }
        /* CAND's block b fed REF's input: a model of REF blocks < b and CAND block b */
        for (int b = 0; s == DSQ_OK && ref_input && b < L; b++) {
            float **lo = bc.layer_out; /* reuse as the pointer table: only entry b is set */
            for (int i = 0; i < L; i++) lo[i] = i == b ? fed_out : NULL;
            s = hybrid_model(sr, sc, b, b, false, cr, &o->eval.load, &mh, err);
            if (s == DSQ_OK) s = run_one(mh, &o->eval, chunk, (int64_t)n, NULL, NULL, lo, err);
            if (s == DSQ_OK) dsq_diff_add(&out->fed[b], br.layer_out[b], fed_out, n * stream);
            dsq_v4_model_close(mh);
            mh = NULL;
            for (int i = 0; i < L; i++) lo[i] = bc.layer_mem + (size_t)i * n * stream;
        }
        if (s == DSQ_OK && dsq_interrupted()) s = dsq_err_set(err, DSQ_ERR_INTERRUPTED, "interrupted");
    }
    if (s == DSQ_OK) s = dsq_kld_acc_stats(acc, &out->kld, err);
    dsq_kld_acc_free(acc);
    dsq_kld_ctx_free(kc);
    dsq_free(chunk);
    dsq_free(fed_out);
    diff_bufs_free(&br);
    diff_bufs_free(&bc);
    dsq_v4_model_close(mr);
    dsq_v4_model_close(mc);
    dsq_wsrc_close(sr);
    dsq_wsrc_close(sc);
    dsq_free(cr);
    dsq_free(cc);
    if (s != DSQ_OK) dsq_score_diff_clear(out);
    return s;
}

/* ---- generation -------------------------------------------------------------------------------- */

dsq_status dsq_score_generate(const dsq_v4_model *m, const dsq_eval_options *eval, const int32_t *prompt,
                              size_t n_prompt, const dsq_generate_options *g, dsq_generate_token_fn on_token,
                              void *user, dsq_err *err) {
    const dsq_v4_config *cfg = dsq_v4_model_config(m);
    uint64_t V = cfg->vocab_size, bytes;
    DSQ_RETURN_IF(n_prompt == 0, err, DSQ_ERR_ARG, "empty prompt");
    DSQ_RETURN_IF(g->temperature < 0 || !isfinite(g->temperature), err, DSQ_ERR_ARG, "temperature %g is not ≥ 0",
                  g->temperature);
    DSQ_RETURN_IF(!dsq_mul_u64(n_prompt, V * sizeof(float), &bytes) || bytes > SIZE_MAX, err, DSQ_ERR_OVERFLOW,
                  "prompt logits overflow");
    dsq_v4_seq *seq;
    DSQ_TRY(dsq_v4_seq_create(m, &seq, err));
    float *logits = dsq_malloc((size_t)bytes);
    dsq_status s = logits ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory for the prompt logits");
    dsq_v4_item it = {.seq = seq, .tokens = prompt, .n_tokens = (int64_t)n_prompt, .logits = logits};
    if (s == DSQ_OK) s = dsq_v4_forward(m, eval, &it, 1, err);
    const float *row = logits + (n_prompt - 1) * V;
    for (uint32_t step = 0; s == DSQ_OK && step < g->n_new; step++) {
        double lse;
        s = dsq_metrics_logsumexp(row, V, &lse, err); /* validates the row */
        if (s != DSQ_OK) break;
        int32_t id = (int32_t)(g->temperature > 0 ? dsq_metrics_gumbel_sample(row, V, g->temperature, g->seed, step)
                                                  : dsq_metrics_argmax(row, V));
        s = on_token(user, id, err);
        if (s != DSQ_OK || (!g->ignore_eos && id == cfg->eos_token_id) || step + 1 == g->n_new) break;
        if (dsq_interrupted()) {
            s = dsq_err_set(err, DSQ_ERR_INTERRUPTED, "interrupted");
            break;
        }
        it = (dsq_v4_item){.seq = seq, .tokens = &id, .n_tokens = 1, .logits = logits};
        s = dsq_v4_forward(m, eval, &it, 1, err);
        row = logits;
    }
    dsq_free(logits);
    dsq_v4_seq_free(seq);
    return s;
}
