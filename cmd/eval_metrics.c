/* `dsq eval ppl|kld|diff|mc`: argument parsing and printing around lib/eval/dsq_score.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_eval.h"
#include "eval_metrics.h"

#define TEXT_MAX ((size_t)1 << 30) /* bytes of a text file to tokenize */

/* ---- shared helpers ------------------------------------------------------------------------------ */

dsq_status dsq__cmd_load_tokens(const char *model_dir, const char *text_path, const char *tokens_path,
                                uint64_t max_ids, int32_t **ids, uint64_t *n, dsq_err *err) {
    *ids = NULL;
    *n = 0;
    if (tokens_path) {
        int64_t cnt = 0;
        DSQ_TRY(dsq_eval_read_tokens_max(tokens_path, max_ids, ids, &cnt, err));
        *n = (uint64_t)cnt;
        return DSQ_OK;
    }
    DSQ_RETURN_IF(!text_path, err, DSQ_ERR_ARG, "no text file and no --tokens");
    dsq_tok *tok = NULL;
    dsq_status s = dsq_tok_open(model_dir, NULL, &tok, err);
    if (s != DSQ_OK) {
        dsq_err_set(err, s, "%s: no usable tokenizer.json; give pre-tokenized ids with --tokens FILE", model_dir);
        return s;
    }
    char *text = NULL;
    size_t len = 0;
    dsq_tok_ids v = {0};
    s = dsq_read_file(text_path, TEXT_MAX, &text, &len, err);
    if (s == DSQ_OK) s = dsq_tok_encode(tok, text, len, &v, err);
    if (s == DSQ_OK) {
        *ids = dsq_malloc((v.n ? v.n : 1) * sizeof **ids);
        if (!*ids)
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory for %zu tokens", v.n);
        else {
            memcpy(*ids, v.ids, v.n * sizeof **ids);
            *n = v.n;
        }
    }
    dsq_tok_ids_free(&v);
    dsq_free(text);
    dsq_tok_free(tok);
    return s;
}

static dsq_opt_fn_result numerics_fn(const char *v, void *dest, char *msg, size_t cap) {
    if (dsq_numerics_from_name(v, dest)) return DSQ_OPT_FN_OK;
    snprintf(msg, cap, "--numerics must be exact or release, not '%s'", v);
    return DSQ_OPT_FN_BAD;
}

/* dsq_device_from_name, then dsq_device_check: a device this build or machine lacks is refused here. */
static dsq_opt_fn_result device_fn(const char *v, void *dest, char *msg, size_t cap) {
    if (!dsq_device_from_name(v, dest)) {
        snprintf(msg, cap, "--device must be cpu, cuda or cuda:N, not '%s'", v);
        return DSQ_OPT_FN_BAD;
    }
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_device_check(dest, &e) == DSQ_OK) return DSQ_OPT_FN_OK;
    snprintf(msg, cap, "%s", e.n ? e.msg : "the device cannot be used");
    dsq_err_clear(&e);
    return DSQ_OPT_FN_FAIL;
}

/* dest: the dsq_eval_options; an explicit cache encoding overrides the one the model declares. */
static dsq_opt_fn_result kv_cache_fn(const char *v, void *dest, char *msg, size_t cap) {
    dsq_eval_options *e = dest;
    if (dsq_kv_cache_from_name(v, &e->kv_cache)) {
        e->kv_cache_from_model = false;
        return DSQ_OPT_FN_OK;
    }
    snprintf(msg, cap, "--kv-cache must be one of " DSQ_KV_CACHE_NAMES ", not '%s'", v);
    return DSQ_OPT_FN_BAD;
}

int dsq__cmd_kv_cache_option(const char *me, const char *name, dsq_kv_cache *out) {
    if (dsq_kv_cache_from_name(name, out)) return 0;
    dsq_cmd_usage_error(me, "--kv-cache must be one of " DSQ_KV_CACHE_NAMES ", not '%s'", name);
    return -1;
}

static dsq_opt_fn_result score_from_fn(const char *v, void *dest, char *msg, size_t cap) {
    uint64_t n = 0;
    if (dsq_opt_parse_u64(v, &n) && n <= DSQ_SCORE_MAX_CTX) {
        *(int64_t *)dest = (int64_t)n;
        return DSQ_OPT_FN_OK;
    }
    snprintf(msg, cap, "--score-from needs a chunk position (at most --ctx − 2), not '%s'", v);
    return DSQ_OPT_FN_BAD;
}

/* dest: the dsq_score_options */
static dsq_opt_fn_result buckets_fn(const char *v, void *dest, char *msg, size_t cap) {
    dsq_score_options *o = dest;
    if (dsq_kld_parse_buckets(v, o->bucket_edges, &o->n_bucket_edges)) return DSQ_OPT_FN_OK;
    snprintf(msg, cap, "--buckets needs up to %d ascending positions > 0 separated by commas, not '%s'",
             DSQ_KLD_MAX_BUCKETS - 1, v);
    return DSQ_OPT_FN_BAD;
}

void dsq__cmd_eval_opts(dsq_eval_options *e, dsq_opt t[DSQ__CMD_EVAL_OPTS]) {
    const dsq_opt table[DSQ__CMD_EVAL_OPTS] = {
        DSQ_OPT_FN("--numerics", &e->numerics, numerics_fn),
        DSQ_OPT_FN("--device", &e->device, device_fn),
        DSQ_OPT_FN("--kv-cache", e, kv_cache_fn),
        DSQ_OPT_INT("--threads", &e->threads, 1, 4096),
        DSQ_OPT_FLAG("--scalar", &e->force_scalar),
        DSQ_OPT_FLAG("--no-shared-clamp", &e->no_shared_clamp),
        DSQ_OPT_FLAG("--no-verify-data", &e->load.no_verify_data),
        DSQ_OPT_FLAG("--allow-nonfinite", &e->load.allow_nonfinite),
        DSQ_OPT_END,
    };
    memcpy(t, table, sizeof table);
}

void dsq__cmd_score_opts(dsq_score_options *o, dsq__cmd_score_table *t) {
    dsq__cmd_eval_opts(&o->eval, t->eval);
    const dsq_opt table[DSQ__CMD_SCORE_OPTS] = {
        DSQ_OPT_MORE(t->eval),
        DSQ_OPT_SIZE("--memory-budget", &o->memory_budget, 1, UINT64_MAX),
        {"--ctx", DSQ_OPT_KIND_U32, &o->n_ctx, 3, DSQ_SCORE_MAX_CTX, 0, NULL, NULL, NULL,
         "tokens per chunk, at most the model's max_position_embeddings"},
        DSQ_OPT_U32("--chunks", &o->max_chunks, 1, UINT32_MAX),
        DSQ_OPT_U32("--batch", &o->batch, 1, 4096),
        DSQ_OPT_FLAG("--no-bos", &o->no_bos),
        DSQ_OPT_FN("--score-from", &o->score_from, score_from_fn),
        DSQ_OPT_FN("--buckets", o, buckets_fn),
        DSQ_OPT_END,
    };
    memcpy(t->score, table, sizeof table);
}

int dsq__cmd_score_option(const char *me, int argc, char **argv, int *i, dsq_score_options *o) {
    dsq__cmd_score_table t;
    dsq__cmd_score_opts(o, &t);
    return dsq_opt_parse_one(me, t.score, argc, argv, i);
}

void dsq__cmd_score_option_help(FILE *f) {
    fprintf(f,
            "  --tokens FILE          pre-tokenized ids instead of TEXTFILE (safetensors I32 `tokens` or\n"
            "                         whitespace-separated ids), for models without a tokenizer\n"
            "  --ctx N                tokens per chunk including BOS (default %d); the second half is scored\n"
            "  --chunks K             score only the first K chunks (default: all complete chunks)\n"
            "  --batch N              chunks per layer-major pass (default %d)\n"
            "  --score-from P         score chunk positions P … ctx-2 (default ctx/2: the second half)\n"
            "  --buckets E1,E2,...    kld/compare: KL, top-1 and PPL ratio per context-position bucket with these\n"
            "                         edges (default 1024,8192,32768; empty buckets are not shown)\n"
            "  --no-bos               chunks without the BOS token\n"
            "  --numerics exact|release  exact: f32 (default); release: the official bf16/FP8/FP4 arithmetic\n"
            "  --memory-budget SIZE   layer-streaming within SIZE bytes (K/M/G suffixes)\n"
            "  --device cpu|cuda[:N]  where the forward pass runs (default cpu; cuda needs a GPU and a CUDA build)\n"
            "  --kv-cache ENC  how the KV cache is stored: f32 (default), bf16, compact (release FP8/FP4), fp4, int4, compact-idx8\n"
            "  --threads N            OpenMP threads (default: all)\n"
            "  --no-shared-clamp      do not clamp the shared expert's SwiGLU\n"
            "  --scalar               portable kernels only (no AVX2)\n"
            "  --no-verify-data       skip the checksum of each .dsq part at its first use\n"
            "  --allow-nonfinite      run weights holding NaN/Inf codes or scales instead of failing\n",
            DSQ_SCORE_DEFAULT_CTX, DSQ_SCORE_DEFAULT_BATCH);
}

static void json_num(FILE *f, double v) {
    if (isfinite(v))
        fprintf(f, "%.17g", v);
    else
        fputs("null", f);
}

static void json_ppl(FILE *f, const char *key, const dsq_ppl_result *p) {
    fprintf(f, "\"%s\": {\"ppl\": ", key);
    json_num(f, p->ppl);
    fputs(", \"ppl_se\": ", f);
    json_num(f, p->ppl_se);
    fputs(", \"mean_nll\": ", f);
    json_num(f, p->mean_nll);
    fputs(", \"mean_nll_se\": ", f);
    json_num(f, p->mean_nll_se);
    fprintf(f, ", \"positions\": %llu}", (unsigned long long)p->n);
}

void dsq__cmd_json_kld(FILE *f, const dsq_kld_stats *s) {
    struct {
        const char *k;
        double v;
    } x[] = {
        {"kl_mean", s->kl_mean},
        {"kl_mean_se", s->kl_mean_se},
        {"kl_median", s->kl_median},
        {"kl_median_se", s->kl_median_se},
        {"kl_p99", s->kl_p99},
        {"kl_p99_se", s->kl_p99_se},
        {"kl_max", s->kl_max},
        {"top1", s->top1},
        {"top1_se", s->top1_se},
        {"same_sample", s->same_sample},
        {"same_sample_se", s->same_sample_se},
        {"ppl_ratio", s->ppl_ratio},
        {"ppl_ratio_se", s->ppl_ratio_se},
        {"dp_mean", s->dp_mean},
        {"dp_mean_se", s->dp_mean_se},
        {"dp_rms", s->dp_rms},
    };
    fprintf(f, "\"positions\": %llu", (unsigned long long)s->n);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
        fprintf(f, ", \"%s\": ", x[i].k);
        json_num(f, x[i].v);
    }
    fputs(", ", f);
    json_ppl(f, "ref", &s->ppl_ref);
    fputs(", ", f);
    json_ppl(f, "cand", &s->ppl_cand);
    fputs(", \"bands\": [", f);
    for (int b = 0; b < DSQ_KLD_BANDS; b++) {
        fprintf(f, "%s{\"lo\": %.1f, \"n\": %llu, \"kl_mean\": ", b ? ", " : "", b / (double)DSQ_KLD_BANDS,
                (unsigned long long)s->band_n[b]);
        json_num(f, s->band_kl_mean[b]);
        fputs("}", f);
    }
    fputs("], \"position_buckets\": [", f);
    for (int b = 0; b < s->n_buckets; b++) {
        fprintf(f, "%s{\"lo\": %llu, \"hi\": ", b ? ", " : "", (unsigned long long)s->bucket_lo[b]);
        if (s->bucket_hi[b] == UINT64_MAX)
            fputs("null", f);
        else
            fprintf(f, "%llu", (unsigned long long)s->bucket_hi[b]);
        fprintf(f, ", \"n\": %llu", (unsigned long long)s->bucket_n[b]);
        const char *k[] = {"kl_mean", "kl_mean_se", "top1", "top1_se", "ppl_ratio", "ppl_ratio_se"};
        double v[] = {s->bucket_kl_mean[b], s->bucket_kl_mean_se[b], s->bucket_top1[b],
                      s->bucket_top1_se[b], s->bucket_ppl_ratio[b], s->bucket_ppl_ratio_se[b]};
        for (int i = 0; i < 6; i++) {
            fprintf(f, ", \"%s\": ", k[i]);
            json_num(f, v[i]);
        }
        fputs("}", f);
    }
    fputs("], \"histogram\": [", f);
    for (int b = 0; b < DSQ_KLD_HIST_BINS; b++) {
        fprintf(f, "%s{\"lo\": ", b ? ", " : "");
        json_num(f, dsq_kld_hist_edge(b));
        fprintf(f, ", \"n\": %llu}", (unsigned long long)s->hist[b]);
    }
    fputs("]", f);
}

void dsq__cmd_print_kld(FILE *f, const dsq_kld_stats *s) {
    fprintf(f, "positions        %llu\n", (unsigned long long)s->n);
    fprintf(f, "mean KL          %.6g ± %.2g nats\n", s->kl_mean, s->kl_mean_se);
    fprintf(f, "median KL        %.6g ± %.2g\n", s->kl_median, s->kl_median_se);
    fprintf(f, "p99 KL           %.6g ± %.2g\n", s->kl_p99, s->kl_p99_se);
    fprintf(f, "max KL           %.6g\n", s->kl_max);
    fprintf(f, "top-1 agreement  %.4f%% ± %.4f%%\n", 100 * s->top1, 100 * s->top1_se);
    fprintf(f, "same sample      %.4f%% ± %.4f%%\n", 100 * s->same_sample, 100 * s->same_sample_se);
    fprintf(f, "PPL reference    %.6g ± %.3g\n", s->ppl_ref.ppl, s->ppl_ref.ppl_se);
    fprintf(f, "PPL candidate    %.6g ± %.3g\n", s->ppl_cand.ppl, s->ppl_cand.ppl_se);
    fprintf(f, "PPL ratio        %.6f ± %.6f\n", s->ppl_ratio, s->ppl_ratio_se);
    fprintf(f, "Δp (target)      mean %.4g ± %.2g, RMS %.4g\n", s->dp_mean, s->dp_mean_se, s->dp_rms);
    fprintf(f, "mean KL by reference top-1 probability:\n");
    for (int b = 0; b < DSQ_KLD_BANDS; b++) {
        fprintf(f, "  [%.1f, %.1f%c  %8llu positions  ", b / 5.0, (b + 1) / 5.0, b == DSQ_KLD_BANDS - 1 ? ']' : ')',
                (unsigned long long)s->band_n[b]);
        if (s->band_n[b])
            fprintf(f, "%.6g\n", s->band_kl_mean[b]);
        else
            fprintf(f, "—\n");
    }
    fprintf(f, "by context position:  %-16s %9s %12s %10s %16s\n", "positions", "scored", "mean KL", "top-1",
            "PPL ratio");
    for (int b = 0; b < s->n_buckets; b++) {
        char lab[64];
        /* "∞" is 3 bytes, 1 column: pad by bytes + 2 */
        fprintf(f, "                      %-*s %9llu %12.6g %9.4f%% %9.6f ± %.6f\n",
                s->bucket_hi[b] == UINT64_MAX ? 18 : 16, dsq_kld_bucket_label(s, b, lab, sizeof lab),
                (unsigned long long)s->bucket_n[b], s->bucket_kl_mean[b],
                100 * s->bucket_top1[b], s->bucket_ppl_ratio[b], s->bucket_ppl_ratio_se[b]);
    }
}


static void progress_line(void *user, const dsq_score_progress *p) {
    fprintf(stderr, "%s: %llu/%llu positions, ppl %.5g ± %.3g\n", (const char *)user, (unsigned long long)p->done,
            (unsigned long long)p->total, p->ppl.ppl, p->ppl.ppl_se);
}

/* Positional arguments and the options every subcommand shares. */
typedef struct args {
    const char *pos[3];
    int n_pos;
    const char *tokens;
    bool json, overwrite;
    dsq_score_options so;
} args;

/* Parse the options every subcommand shares, the subcommand's own (`extra`, may be NULL) and up to
 * max_pos positional arguments into *a. */
static int parse(const char *me, int argc, char **argv, int max_pos, args *a, const dsq_opt *extra) {
    memset(a, 0, sizeof *a);
    dsq_score_options_default(&a->so);
    dsq__cmd_score_table st;
    dsq__cmd_score_opts(&a->so, &st);
    static const dsq_opt none[] = {DSQ_OPT_END};
    dsq_opt opts[] = {
        DSQ_OPT_MORE(st.score),
        DSQ_OPT_MORE(extra ? extra : none),
        DSQ_OPT_STR("--tokens", &a->tokens),
        DSQ_OPT_FLAG("--json", &a->json),
        DSQ_OPT_FLAG("--overwrite", &a->overwrite),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = me, .opts = opts, .pos = a->pos, .max_pos = max_pos};
    return dsq_opt_parse_cmd(&spec, argc, argv, &a->n_pos);
}

/* ---- ppl ----------------------------------------------------------------------------------------- */

int dsq__eval_ppl(int argc, char **argv) {
    const char *me = "eval ppl";
    if (dsq_cmd_wants_help(argc, argv)) {
        printf("usage: dsq eval ppl MODEL TEXTFILE|--tokens FILE [options]\n\n"
               "Perplexity with its standard error: the text is cut into chunks of --ctx tokens starting with\n"
               "BOS, each evaluated on its own, and the second half of every chunk is scored.  The running\n"
               "value is printed on standard error after every batch of chunks.\n");
        dsq__cmd_score_option_help(stdout);
        printf("  --json                 print {\"ppl\", \"ppl_se\", \"mean_nll\", ...} on standard output\n");
        return DSQ_EXIT_OK;
    }
    args a;
    int rc = parse(me, argc, argv, 2, &a, NULL);
    if (rc) return rc;
    if (a.n_pos < 1) return dsq_cmd_usage_error(me, "missing MODEL");
    if (a.n_pos < 2 && !a.tokens) return dsq_cmd_usage_error(me, "missing TEXTFILE or --tokens FILE");
    if (a.n_pos == 2 && a.tokens) return dsq_cmd_usage_error(me, "give TEXTFILE or --tokens, not both");
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    dsq_v4_model *m = NULL;
    int32_t *ids = NULL;
    uint64_t n = 0;
    dsq_status s = dsq_v4_model_open_ex(a.pos[0], &a.so.eval.load, &m, &e);
    if (s == DSQ_OK)
        s = dsq__cmd_load_tokens(a.pos[0], a.n_pos > 1 ? a.pos[1] : NULL, a.tokens, dsq_score_text_bound(&a.so), &ids,
                                 &n, &e);
    dsq_ppl_plan plan;
    if (s == DSQ_OK) s = dsq_score_plan(m, &a.so, n, &plan, &e);
    dsq_ppl_result r;
    a.so.progress = progress_line;
    a.so.user = (void *)me;
    if (s == DSQ_OK) s = dsq_score_ppl(m, &a.so, ids, n, &r, &e);
    dsq_kv_cache kv_used = m ? dsq_v4_eval_kv_cache(m, &a.so.eval) : a.so.eval.kv_cache;
    dsq_free(ids);
    dsq_v4_model_close(m);
    if (s != DSQ_OK) return dsq_cmd_exit(me, s, &e);
    if (a.json) {
        printf("{\"numerics\": \"%s\", \"kv_cache\": \"%s\", \"ctx\": %u, \"chunks\": %u, \"tokens\": %llu, ",
               dsq_numerics_name(a.so.eval.numerics), dsq_kv_cache_name(kv_used), plan.n_ctx, plan.n_chunks, (unsigned long long)n);
        json_ppl(stdout, "result", &r);
        printf(", \"ppl\": ");
        json_num(stdout, r.ppl);
        printf(", \"ppl_se\": ");
        json_num(stdout, r.ppl_se);
        printf("}\n");
    } else {
        printf("ppl %.6g ± %.4g (mean NLL %.6f ± %.6f) over %llu positions: %u chunks of %u tokens, %s numerics\n",
               r.ppl, r.ppl_se, r.mean_nll, r.mean_nll_se, (unsigned long long)r.n, plan.n_chunks, plan.n_ctx,
               dsq_numerics_name(a.so.eval.numerics));
    }
    return DSQ_EXIT_OK;
}

/* ---- kld ----------------------------------------------------------------------------------------- */

typedef struct kld_args {
    const char *save_base, *base;
    dsq_base_options bo;
} kld_args;

int dsq__eval_kld(int argc, char **argv) {
    const char *me = "eval kld";
    if (dsq_cmd_wants_help(argc, argv)) {
        printf("usage: dsq eval kld MODEL TEXTFILE|--tokens FILE --save-base BASE [options]\n"
               "       dsq eval kld MODEL [TEXTFILE|--tokens FILE] --base BASE [options]\n\n"
               "--save-base runs MODEL as the reference and stores, per scored position, its top-k log-probs,\n"
               "the log of the remaining mass, the next token and a Gumbel-max sample (docs/kld-base.md).\n"
               "--base runs MODEL as a candidate on the base's tokens (the text, when given, must tokenize to\n"
               "the same ids) and prints KL(reference ‖ MODEL): mean, median, p99, max with standard errors,\n"
               "top-1 agreement, same-sample rate, PPL ratio, Δp of the reference token, KL by the reference's\n"
               "top-1 probability.  KL over top-k + rest is a lower bound of the full KL (exact for k = vocab).\n");
        dsq__cmd_score_option_help(stdout);
        printf("  --top-k K              ids stored per position (default %u)\n"
               "  --seed S, --temperature T   Gumbel-max noise of the same-sample statistic (default 0, 1.0)\n"
               "  --overwrite            replace an existing BASE\n"
               "  --json                 print the statistics as JSON\n",
               DSQ_KBASE_DEFAULT_K);
        return DSQ_EXIT_OK;
    }
    args a;
    kld_args k = {0};
    dsq_opt extra[] = {
        DSQ_OPT_STR("--save-base", &k.save_base),
        DSQ_OPT_STR("--base", &k.base),
        DSQ_OPT_U32("--top-k", &k.bo.k, 1, DSQ_KBASE_MAX_VOCAB),
        DSQ_OPT_U64("--seed", &k.bo.seed, 0, UINT64_MAX),
        DSQ_OPT_DOUBLE("--temperature", &k.bo.temperature, 0, UINT64_MAX, DSQ_OPT_GT_MIN),
        DSQ_OPT_END,
    };
    int rc = parse(me, argc, argv, 2, &a, extra);
    if (rc) return rc;
    if (a.n_pos < 1) return dsq_cmd_usage_error(me, "missing MODEL");
    if (!k.save_base == !k.base) return dsq_cmd_usage_error(me, "give exactly one of --save-base BASE and --base BASE");
    if (k.save_base && a.n_pos < 2 && !a.tokens) return dsq_cmd_usage_error(me, "missing TEXTFILE or --tokens FILE");
    if (a.n_pos == 2 && a.tokens) return dsq_cmd_usage_error(me, "give TEXTFILE or --tokens, not both");
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    dsq_v4_model *m = NULL;
    int32_t *ids = NULL;
    uint64_t n = 0;
    dsq_status s = dsq_v4_model_open_ex(a.pos[0], &a.so.eval.load, &m, &e);
    /* --base compares the given ids with all of the base's: read them all */
    if (s == DSQ_OK && (a.n_pos > 1 || a.tokens))
        s = dsq__cmd_load_tokens(a.pos[0], a.n_pos > 1 ? a.pos[1] : NULL, a.tokens,
                                 k.save_base ? dsq_score_text_bound(&a.so) : 0, &ids, &n, &e);
    a.so.progress = progress_line;
    a.so.user = (void *)me;
    dsq_ppl_result ppl;
    dsq_kld_stats st;
    char note[DSQ_KBASE_NOTE_MAX];
    if (k.save_base) {
        snprintf(note, sizeof note, "dsq %s reference %s, %s numerics", DSQ_VERSION_STRING, a.pos[0],
                 dsq_numerics_name(a.so.eval.numerics));
        k.bo.note = note;
        k.bo.overwrite = a.overwrite;
        if (s == DSQ_OK) s = dsq_score_save_base(m, &a.so, &k.bo, ids, n, k.save_base, &ppl, &e);
    } else if (s == DSQ_OK) {
        s = dsq_score_kld(m, &a.so, k.base, ids, n, &st, &e);
    }
    dsq_kv_cache kv_used = m ? dsq_v4_eval_kv_cache(m, &a.so.eval) : a.so.eval.kv_cache;
    dsq_free(ids);
    dsq_v4_model_close(m);
    if (s != DSQ_OK) return dsq_cmd_exit(me, s, &e);
    if (k.save_base) {
        if (a.json) {
            printf("{\"base\": ");
            dsq_cmd_json_str(stdout, k.save_base);
            printf(", ");
            json_ppl(stdout, "ref", &ppl);
            printf("}\n");
        } else {
            printf("%s: KL base of %llu positions; reference ppl %.6g ± %.4g\n", k.save_base, (unsigned long long)ppl.n,
                   ppl.ppl, ppl.ppl_se);
        }
    } else if (a.json) {
        printf("{\"base\": ");
        dsq_cmd_json_str(stdout, k.base);
        printf(", \"numerics\": \"%s\", \"kv_cache\": \"%s\", ", dsq_numerics_name(a.so.eval.numerics),
               dsq_kv_cache_name(kv_used));
        dsq__cmd_json_kld(stdout, &st);
        printf("}\n");
    } else {
        printf("KL(reference ‖ %s), base %s:\n", a.pos[0], k.base);
        dsq__cmd_print_kld(stdout, &st);
    }
    return DSQ_EXIT_OK;
}

/* ---- diff ---------------------------------------------------------------------------------------- */

static void json_diff(FILE *f, const char *key, const dsq_diff_acc *d) {
    fprintf(f, "\"%s\": {\"cosine\": ", key);
    json_num(f, dsq_diff_cosine(d));
    fputs(", \"sqnr_db\": ", f);
    json_num(f, dsq_diff_sqnr_db(d));
    fputs(", \"rel_rms\": ", f);
    json_num(f, dsq_diff_rel_rms(d));
    fputs(", \"max_abs\": ", f);
    json_num(f, d->max_abs);
    fprintf(f, ", \"nonfinite\": %llu}", (unsigned long long)d->nonfinite);
}

int dsq__eval_diff(int argc, char **argv) {
    const char *me = "eval diff";
    if (dsq_cmd_wants_help(argc, argv)) {
        printf("usage: dsq eval diff REF CAND TEXTFILE|--tokens FILE [options]\n\n"
               "Runs both checkpoints over the same tokens (chunks as in ppl; default --chunks 1) and prints,\n"
               "per block, the cosine similarity and SQNR (10·log10(Σref²/Σ(ref−cand)²) dB) of CAND's\n"
               "hidden streams against REF's: `fed` gives CAND's block REF's input, so each block's own\n"
               "error shows (a model of REF blocks before it and CAND's block: O(blocks²) block runs);\n"
               "`own` runs CAND on its own, errors compounding.  Then KL(REF ‖ CAND) of the final logits\n"
               "over every position (full vocabulary).  TEXTFILE is tokenized with REF's tokenizer.\n");
        dsq__cmd_score_option_help(stdout);
        printf("  --own-only             skip the REF-fed runs\n"
               "  --json                 print the statistics as JSON\n");
        return DSQ_EXIT_OK;
    }
    args a;
    bool own_only = false;
    dsq_opt extra[] = {DSQ_OPT_FLAG("--own-only", &own_only), DSQ_OPT_END};
    int rc = parse(me, argc, argv, 3, &a, extra);
    if (rc) return rc;
    if (a.n_pos < 2) return dsq_cmd_usage_error(me, "missing REF and CAND");
    if (a.n_pos < 3 && !a.tokens) return dsq_cmd_usage_error(me, "missing TEXTFILE or --tokens FILE");
    if (a.n_pos == 3 && a.tokens) return dsq_cmd_usage_error(me, "give TEXTFILE or --tokens, not both");
    if (!a.so.max_chunks) a.so.max_chunks = 1;
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    int32_t *ids = NULL;
    uint64_t n = 0;
    dsq_score_diff d;
    dsq_status s = dsq__cmd_load_tokens(a.pos[0], a.n_pos > 2 ? a.pos[2] : NULL, a.tokens,
                                        dsq_score_text_bound(&a.so), &ids, &n, &e);
    if (s == DSQ_OK) s = dsq_score_diff_run(a.pos[0], a.pos[1], &a.so, ids, n, !own_only, &d, &e);
    dsq_free(ids);
    if (s != DSQ_OK) return dsq_cmd_exit(me, s, &e);
    if (a.json) {
        printf("{\"numerics\": \"%s\", \"blocks\": [", dsq_numerics_name(a.so.eval.numerics));
        for (int b = 0; b < d.n_blocks; b++) {
            printf("%s{\"block\": %d, ", b ? ", " : "", b);
            json_diff(stdout, "own", &d.own[b]);
            if (d.fed) {
                printf(", ");
                json_diff(stdout, "fed", &d.fed[b]);
            }
            printf("}");
        }
        printf("], ");
        json_diff(stdout, "final_hidden", &d.final);
        printf(", \"kl\": {");
        dsq__cmd_json_kld(stdout, &d.kld);
        printf("}}\n");
    } else {
        printf("block   fed cosine   fed SQNR dB   own cosine   own SQNR dB\n");
        for (int b = 0; b < d.n_blocks; b++) {
            if (d.fed)
                printf("%5d   %10.7f   %11.3f", b, dsq_diff_cosine(&d.fed[b]), dsq_diff_sqnr_db(&d.fed[b]));
            else
                printf("%5d   %10s   %11s", b, "—", "—");
            printf("   %10.7f   %11.3f\n", dsq_diff_cosine(&d.own[b]), dsq_diff_sqnr_db(&d.own[b]));
        }
        printf("final   %10s   %11s   %10.7f   %11.3f\n", "", "", dsq_diff_cosine(&d.final),
               dsq_diff_sqnr_db(&d.final));
        printf("KL(REF ‖ CAND) of the final logits, every position:\n");
        dsq__cmd_print_kld(stdout, &d.kld);
    }
    dsq_score_diff_clear(&d);
    return DSQ_EXIT_OK;
}

/* ---- mc ------------------------------------------------------------------------------------------ */

typedef struct mc_args {
    const char *answers_base, *save_answers;
    uint64_t first, count;
} mc_args;

int dsq__eval_mc(int argc, char **argv) {
    const char *me = "eval mc";
    if (dsq_cmd_wants_help(argc, argv)) {
        printf("usage: dsq eval mc MODEL TASK.jsonl [--base ANSWERS] [--save-answers FILE] [options]\n\n"
               "Multiple choice (HellaSwag-style JSONL: {\"ctx\"|\"context\": str, \"endings\": [str...], \"label\": "
               "int}).\n"
               "Each ending is scored as \" \" + ending after BOS + context: the sum of its token log-probs\n"
               "(raw) and that sum divided by the ending's UTF-8 bytes + 1 (norm, tokenizer-independent).\n"
               "Prints accuracy ± sqrt(p(1-p)/n).  --base compares with a previous run's answers file and\n"
               "prints the flip rate (items whose chosen answer changed).  Needs MODEL's tokenizer.json.\n"
               "  --save-answers FILE    write this run's answers (JSONL) for a later --base\n"
               "  --first N, --count N   score items [N, N+count) only\n"
               "  --numerics, --device, --kv-cache, --threads, --scalar, --no-shared-clamp, --no-verify-data,\n"
               "  --allow-nonfinite, --no-bos   as for ppl\n"
               "  --overwrite            replace an existing answers file\n"
               "  --json                 print the results as JSON\n");
        return DSQ_EXIT_OK;
    }
    args a;
    mc_args k = {0};
    dsq_opt extra[] = {
        DSQ_OPT_STR("--base", &k.answers_base),
        DSQ_OPT_STR("--save-answers", &k.save_answers),
        DSQ_OPT_U64("--first", &k.first, 0, UINT64_MAX),
        DSQ_OPT_U64("--count", &k.count, 0, UINT64_MAX),
        DSQ_OPT_END,
    };
    int rc = parse(me, argc, argv, 2, &a, extra);
    if (rc) return rc;
    if (a.n_pos < 2) return dsq_cmd_usage_error(me, "missing MODEL and TASK.jsonl");
    if (a.tokens) return dsq_cmd_usage_error(me, "--tokens does not apply: tasks are text");
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    dsq_v4_model *m = NULL;
    dsq_tok *tok = NULL;
    dsq_mc_task *task = NULL;
    dsq_mc_result r = {0};
    dsq_mc_flips fl = {0};
    dsq_status s = dsq_v4_model_open_ex(a.pos[0], &a.so.eval.load, &m, &e);
    if (s == DSQ_OK) s = dsq_tok_open(a.pos[0], NULL, &tok, &e);
    if (s == DSQ_OK) s = dsq_mc_task_open(a.pos[1], &task, &e);
    dsq_mc_options mo = {.first = (size_t)k.first, .count = (size_t)k.count};
    if (s == DSQ_OK) s = dsq_score_mc(m, &a.so, tok, task, mo.first, mo.count, &r, &e);
    if (s == DSQ_OK && k.answers_base) s = dsq_mc_flips_vs_file(k.answers_base, task, &mo, &r, &fl, &e);
    if (s == DSQ_OK && k.save_answers) s = dsq_mc_answers_write(k.save_answers, task, &mo, &r, a.overwrite, &e);
    dsq_mc_task_free(task);
    dsq_tok_free(tok);
    dsq_v4_model_close(m);
    if (s != DSQ_OK) {
        dsq_mc_result_clear(&r);
        return dsq_cmd_exit(me, s, &e);
    }
    if (a.json) {
        printf(
            "{\"items\": %llu, \"acc_raw\": %.17g, \"acc_raw_se\": %.17g, \"acc_norm\": %.17g, \"acc_norm_se\": %.17g",
            (unsigned long long)r.n, r.acc_raw, r.acc_raw_se, r.acc_norm, r.acc_norm_se);
        if (k.answers_base)
            printf(", \"flips_raw\": %llu, \"flips_norm\": %llu, \"flip_rate_raw\": %.17g, \"flip_rate_norm\": %.17g",
                   (unsigned long long)fl.raw, (unsigned long long)fl.norm, fl.raw_rate, fl.norm_rate);
        printf("}\n");
    } else {
        printf("%llu items: accuracy %.2f%% ± %.2f%% (length-normalised), %.2f%% ± %.2f%% (raw)\n",
               (unsigned long long)r.n, 100 * r.acc_norm, 100 * r.acc_norm_se, 100 * r.acc_raw, 100 * r.acc_raw_se);
        if (k.answers_base)
            printf("flips against %s: %.2f%% (%llu) normalised, %.2f%% (%llu) raw\n", k.answers_base,
                   100 * fl.norm_rate, (unsigned long long)fl.norm, 100 * fl.raw_rate, (unsigned long long)fl.raw);
    }
    dsq_mc_result_clear(&r);
    return DSQ_EXIT_OK;
}
