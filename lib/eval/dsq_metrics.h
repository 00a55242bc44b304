/* Model-quality metrics computed from logits rows: log-softmax and NLL, perplexity with the chunked
 * methodology, KL divergence of a candidate against a stored reference ("KL base" file), multiple-
 * choice scoring, hidden-state diff statistics.  Nothing here knows about the model: inputs are
 * logits rows (float [vocab]), token ids, and callbacks.
 *
 * Thread safety: every object is owned by one thread at a time; functions without an object are
 * pure.  Numbers are accumulated in double precision. */
#ifndef DSQ_METRICS_H
#define DSQ_METRICS_H

#include "dsq_core.h"

/* ---- one logits row ---------------------------------------------------------------------------
 * Rows may hold -inf (masked ids) but not NaN or +inf, and at least one finite value. */

/* log Σ exp(row[i]) over the row, stable (max subtracted), accumulated in double.
 * DSQ_ERR_NONFINITE for NaN/+inf or an all -inf row. */
dsq_status dsq_metrics_logsumexp(const float *row, size_t vocab, double *lse, dsq_err *err);
/* out[i] = row[i] - logsumexp(row)  (double [vocab]). */
dsq_status dsq_metrics_log_softmax(const float *row, size_t vocab, double *out, dsq_err *err);
/* Negative log-likelihood -log p(target); DSQ_ERR_TOKEN if target is outside [0, vocab). */
dsq_status dsq_metrics_nll(const float *row, size_t vocab, int32_t target, double *nll, dsq_err *err);
/* Index of the largest value; ties go to the lower index.  The row must be valid (see above). */
size_t dsq_metrics_argmax(const float *row, size_t vocab);
/* Gumbel-max sample at temperature T > 0: argmax_i(row[i]/T + g_i), where g_i = -log(-log u_i) and
 * u_i is a pure function of (seed, position, i) (splitmix64 counter, 53-bit uniform in (0,1)).
 * Two rows sampled with the same (seed, position) share every noise value, so identical rows give
 * identical samples and similar rows usually do.  Ties go to the lower index. */
size_t dsq_metrics_gumbel_sample(const float *row, size_t vocab, double temperature, uint64_t seed, uint64_t position);

/* ---- running mean with standard error (Welford) ---------------------------------------------- */
typedef struct dsq_stat {
    uint64_t n;
    double mean, m2; /* m2 = Σ (x - mean)² */
} dsq_stat;
void dsq_stat_add(dsq_stat *s, double x);
/* Sample standard deviation (n-1 denominator; 0 for n < 2). */
double dsq_stat_sd(const dsq_stat *s);
/* Standard error of the mean: sd / sqrt(n) (0 for n < 2). */
double dsq_stat_se(const dsq_stat *s);

/* Quantile q ∈ [0,1] of sorted[0..n) with linear interpolation between order statistics, and its
 * standard error estimated from order statistics: half the distance between the values at ranks
 * n·q ∓ sqrt(n·q·(1-q)) (one binomial standard deviation of the rank).  n ≥ 1. */
double dsq_metrics_quantile(const double *sorted, size_t n, double q, double *se);

/* ---- perplexity ------------------------------------------------------------------------------
 * Methodology (as llama.cpp's perplexity tool): the text's tokens are cut into consecutive chunks;
 * each chunk is evaluated on its own as n_ctx tokens starting with BOS (BOS + the next n_ctx-1
 * text tokens; with bos < 0, n_ctx text tokens and no BOS); only the second half is scored: the
 * logits at chunk positions p ∈ [score_from, n_ctx-2] predict the token at p+1, score_from =
 * n_ctx/2.  Early positions, which see little context, are thus excluded. */
typedef struct dsq_ppl_plan {
    uint32_t n_ctx;      /* tokens per evaluated chunk, including BOS (≥ 3) */
    uint32_t score_from; /* first scored chunk position (n_ctx/2) */
    uint32_t n_chunks;
    int32_t bos;     /* BOS id, or -1 for none */
    uint32_t stride; /* text tokens consumed per chunk: n_ctx-1 with BOS, n_ctx without */
} dsq_ppl_plan;
/* Plan chunks over n_text tokens; max_chunks = 0 means as many as fit.  DSQ_ERR_ARG if n_ctx < 3
 * or the text holds no complete chunk. */
dsq_status dsq_ppl_plan_make(uint64_t n_text, uint32_t n_ctx, uint32_t max_chunks, int32_t bos, dsq_ppl_plan *out,
                             dsq_err *err);
/* Scored positions per chunk (n_ctx - 1 - score_from) and in total. */
uint32_t dsq_ppl_plan_scored_per_chunk(const dsq_ppl_plan *p);
uint64_t dsq_ppl_plan_positions(const dsq_ppl_plan *p);
/* Text tokens the plan consumes (n_chunks · stride). */
uint64_t dsq_ppl_plan_text_tokens(const dsq_ppl_plan *p);
/* Fill chunk[0..n_ctx) with the evaluation tokens of chunk c (c < n_chunks) from text. */
void dsq_ppl_plan_chunk(const dsq_ppl_plan *p, const int32_t *text, uint32_t c, int32_t *chunk);

/* Perplexity of a stream of NLLs: ppl = exp(mean NLL), its standard error by the delta method,
 * ppl · se(mean NLL). */
typedef struct dsq_ppl_result {
    uint64_t n;
    double mean_nll, mean_nll_se;
    double ppl, ppl_se;
} dsq_ppl_result;
dsq_ppl_result dsq_ppl_from_stat(const dsq_stat *nll);

/* ---- the KL base file (docs/kld-base.md) ------------------------------------------------------
 * Per scored position of a reference run: its top-k log-probabilities (ids, descending), the log of
 * the probability mass outside those k ids, the log-prob of the actual next token and a Gumbel-max
 * sample.  Written in zstd-compressed blocks of positions and read back one position at a time, so
 * memory stays O(vocab + block) whatever the number of positions. */
#define DSQ_KBASE_MAGIC           "DSQKLDB\0"
#define DSQ_KBASE_VERSION         1u
#define DSQ_KBASE_HEADER_BYTES    128u
#define DSQ_KBASE_DEFAULT_K       64u
#define DSQ_KBASE_MAX_VOCAB       (1u << 24)
#define DSQ_KBASE_MAX_TEXT_TOKENS (1ull << 28) /* text tokens stored (4 bytes each in memory) */
#define DSQ_KBASE_MAX_BLOCK_BYTES (16u << 20)  /* decompressed bytes of one block */
#define DSQ_KBASE_NOTE_MAX        1024u        /* free-text provenance note */
#define DSQ_KBASE_MASS_TOL        1e-3         /* |Σ p - 1| allowed in a stored record */

typedef struct dsq_kbase_info {
    uint32_t vocab;
    uint32_t k;                        /* stored ids per position, 1 ≤ k ≤ vocab */
    dsq_ppl_plan plan;                 /* how positions were produced */
    uint64_t n_positions;              /* = dsq_ppl_plan_positions(&plan) */
    uint64_t n_text;                   /* = dsq_ppl_plan_text_tokens(&plan) */
    uint64_t tokens_hash;              /* XXH3-64 of the text tokens as little-endian int32 */
    uint64_t seed;                     /* Gumbel-max seed of `sample` */
    double temperature;                /* Gumbel-max temperature of `sample` (> 0) */
    uint32_t block_positions;          /* positions per compressed block (the last may hold fewer) */
    char note[DSQ_KBASE_NOTE_MAX + 1]; /* NUL-terminated, no control bytes */
} dsq_kbase_info;

/* One position.  ids/lps are [k], ordered by reference logit descending (ties: lower id first). */
typedef struct dsq_kbase_record {
    int32_t target;  /* the token that actually follows */
    int32_t sample;  /* Gumbel-max sample of the full row at (seed, position, temperature) */
    float target_lp; /* log p(target) */
    float rest_lp;   /* log of the probability mass outside ids (-inf when there is none) */
    uint32_t k;
    const int32_t *ids;
    const float *lps;
} dsq_kbase_record;

/* XXH3-64 of int32 tokens in little-endian byte order. */
uint64_t dsq_kbase_tokens_hash(const int32_t *tokens, uint64_t n);

typedef struct dsq_kbase_writer dsq_kbase_writer;
/* Create PATH (atomically, see dsq_afile; overwrite to replace) for info->n_positions records.
 * info->n_positions, n_text, tokens_hash and block_positions are computed here (block_positions
 * when 0); text holds dsq_ppl_plan_text_tokens(&info->plan) tokens. */
dsq_status dsq_kbase_writer_open(const char *path, const dsq_kbase_info *info, const int32_t *text, bool overwrite,
                                 dsq_kbase_writer **out, dsq_err *err);
/* Append the next position's record (rec->k must equal info.k). */
dsq_status dsq_kbase_writer_add(dsq_kbase_writer *w, const dsq_kbase_record *rec, dsq_err *err);
/* Check all positions were added, flush, fsync and publish.  Frees w whatever the outcome. */
dsq_status dsq_kbase_writer_finish(dsq_kbase_writer *w, dsq_err *err);
/* Abort (removes the partial file) and free; accepts NULL. */
void dsq_kbase_writer_free(dsq_kbase_writer *w);

typedef struct dsq_kbase_reader dsq_kbase_reader;
/* Open and validate the header and the token section (hash, ids < vocab). */
dsq_status dsq_kbase_reader_open(const char *path, dsq_kbase_reader **out, dsq_err *err);
void dsq_kbase_reader_close(dsq_kbase_reader *r);
const dsq_kbase_info *dsq_kbase_reader_info(const dsq_kbase_reader *r);
/* The text tokens [info.n_text], owned by the reader. */
const int32_t *dsq_kbase_reader_text(const dsq_kbase_reader *r);
/* Next record (views valid until the next call).  Every record is validated (ids in range and
 * distinct, log-probs finite, ≤ 0 and non-increasing, mass ≈ 1, target consistent).  Returns
 * DSQ_OK with *done = true after the last record, once the file has been checked to end there. */
dsq_status dsq_kbase_reader_next(dsq_kbase_reader *r, dsq_kbase_record *rec, bool *done, dsq_err *err);

/* ---- KL divergence of a candidate against a base ---------------------------------------------
 * KL(ref ‖ cand) over the partition {each of the ref's top-k ids} ∪ {the rest}:
 *     KL_k = Σ_{i ∈ top-k} p_i (log p_i - log q_i) + P_R (log P_R - log Q_R)
 * with P_R, Q_R the two models' masses outside the ref's top-k.  Merging outcomes never increases a
 * KL divergence, so 0 ≤ KL_k ≤ KL, with KL - KL_k = P_R · KL(p|R ‖ q|R) (the divergence of the two
 * renormalised tails, weighted by the ref's tail mass); exact when k = vocab.  Both sides' numbers
 * come from one function (log-probs rounded to float the same way), so a model compared with its
 * own base gives exactly 0. */
typedef struct dsq_kld_ctx dsq_kld_ctx;
/* Work buffers for rows of `vocab`; k = ids kept per reference record. */
dsq_status dsq_kld_ctx_create(uint32_t vocab, uint32_t k, double temperature, uint64_t seed, dsq_kld_ctx **out,
                              dsq_err *err);
void dsq_kld_ctx_free(dsq_kld_ctx *c);
/* Build the reference record of a logits row (views into c, valid until the next call on c). */
dsq_status dsq_kld_ref_record(dsq_kld_ctx *c, const float *row, int32_t target, uint64_t position,
                              dsq_kbase_record *rec, dsq_err *err);

typedef struct dsq_kld_pos {
    double kl;                /* KL_k(ref ‖ cand), nats */
    double ref_top1_p;        /* p_ref of the ref's top-1 token */
    double nll_ref, nll_cand; /* -log p(target), both rounded through float like the record */
    double dp;                /* p_cand(target) - p_ref(target) */
    bool top1_agree;          /* argmax of the candidate row == ref top-1 */
    bool sample_agree;        /* candidate's Gumbel-max sample (same seed, position) == ref's */
    uint64_t ctx_pos;         /* position of the scored row in its context (chunk position, BOS = 0): the
                                 position bucket (dsq_kld_acc_set_buckets); dsq_kld_compare sets 0 */
} dsq_kld_pos;
/* Compare a candidate logits row with a base record (record's target must be in range). */
dsq_status dsq_kld_compare(dsq_kld_ctx *c, const dsq_kbase_record *ref, const float *cand_row, uint64_t position,
                           dsq_kld_pos *out, dsq_err *err);

/* KL histogram: bin 0 holds KL < 1e-6 (including ≤ 0), bins 1..28 are log-spaced with
 * DSQ_KLD_HIST_PER_DECADE bins per decade over [1e-6, 10), the last bin KL ≥ 10. */
#define DSQ_KLD_HIST_PER_DECADE 4
#define DSQ_KLD_HIST_LO_EXP     (-6)
#define DSQ_KLD_HIST_HI_EXP     1
#define DSQ_KLD_HIST_BINS       (2 + DSQ_KLD_HIST_PER_DECADE * (DSQ_KLD_HIST_HI_EXP - DSQ_KLD_HIST_LO_EXP))
/* Lower edge of bin b (b ≥ 1); 0 for b = 0. */
double dsq_kld_hist_edge(int b);
int dsq_kld_hist_bin(double kl);

/* Ref-top-1-probability bands [0,.2), [.2,.4), [.4,.6), [.6,.8), [.8,1]. */
#define DSQ_KLD_BANDS 5

/* Position buckets: at most DSQ_KLD_MAX_BUCKETS (edges + 1).  Default edges 1024, 8192, 32768:
 * < 1K, 1K–8K, 8K–32K, ≥ 32K (issue 11). */
#define DSQ_KLD_MAX_BUCKETS 16
#define DSQ_KLD_DEFAULT_BUCKET_EDGES {1024, 8192, 32768}

typedef struct dsq_kld_stats {
    uint64_t n;
    double kl_mean, kl_mean_se;
    double kl_median, kl_median_se;
    double kl_p99, kl_p99_se;
    double kl_max;        /* no standard error: an extreme order statistic has none worth quoting */
    double top1, top1_se; /* agreement rate, sqrt(p(1-p)/n) */
    double same_sample, same_sample_se;
    dsq_ppl_result ppl_ref, ppl_cand;
    double ppl_ratio, ppl_ratio_se; /* exp(mean(nll_cand - nll_ref)), delta method on the paired difference */
    double dp_mean, dp_mean_se, dp_rms;
    uint64_t band_n[DSQ_KLD_BANDS];
    double band_kl_mean[DSQ_KLD_BANDS]; /* NaN where band_n is 0 */
    uint64_t hist[DSQ_KLD_HIST_BINS];
    /* Drift by context position: one entry per position bucket that holds scored rows, ascending
     * (empty buckets are left out).  Bucket b covers ctx_pos ∈ [bucket_lo[b], bucket_hi[b]);
     * bucket_hi = UINT64_MAX for the last, open one. */
    int n_buckets;
    uint64_t bucket_lo[DSQ_KLD_MAX_BUCKETS], bucket_hi[DSQ_KLD_MAX_BUCKETS], bucket_n[DSQ_KLD_MAX_BUCKETS];
    double bucket_kl_mean[DSQ_KLD_MAX_BUCKETS], bucket_kl_mean_se[DSQ_KLD_MAX_BUCKETS];
    double bucket_top1[DSQ_KLD_MAX_BUCKETS], bucket_top1_se[DSQ_KLD_MAX_BUCKETS];
    double bucket_ppl_ratio[DSQ_KLD_MAX_BUCKETS], bucket_ppl_ratio_se[DSQ_KLD_MAX_BUCKETS];
} dsq_kld_stats;

/* Collects per-position results; keeps every KL value (8 bytes per position) for the quantiles. */
typedef struct dsq_kld_acc dsq_kld_acc;
dsq_status dsq_kld_acc_create(dsq_kld_acc **out, dsq_err *err);
void dsq_kld_acc_free(dsq_kld_acc *a);
dsq_status dsq_kld_acc_add(dsq_kld_acc *a, const dsq_kld_pos *p, dsq_err *err);
/* Position bucket edges (ascending, > 0, at most DSQ_KLD_MAX_BUCKETS - 1 of them; n = 0: one bucket).
 * Must be called before the first add (DSQ_ERR_STATE after); DSQ_ERR_ARG for bad edges. */
dsq_status dsq_kld_acc_set_buckets(dsq_kld_acc *a, const uint64_t *edges, int n, dsq_err *err);
/* "[lo, hi)" or "[lo, ∞)" for bucket b of s, into buf (≥ 48 bytes); returns buf. */
const char *dsq_kld_bucket_label(const dsq_kld_stats *s, int b, char *buf, size_t cap);
/* Parse "E1,E2,…" (ascending decimal integers > 0) into edges[DSQ_KLD_MAX_BUCKETS - 1]; false if malformed. */
bool dsq_kld_parse_buckets(const char *s, uint64_t *edges, int *n);
/* Statistics so far (n ≥ 1; sorts a copy of the KL values). */
dsq_status dsq_kld_acc_stats(const dsq_kld_acc *a, dsq_kld_stats *out, dsq_err *err);

/* ---- multiple choice (HellaSwag-style JSONL) --------------------------------------------------
 * One JSON object per line: {"ctx" or "context": string, "endings": [string, ...], "label": int}
 * (label may also be a string of decimal digits, as in the Hugging Face HellaSwag files).  Each
 * ending is scored as the continuation " " + ending of the context: the summed log-probability of
 * its tokens given BOS + context.  raw = argmax of the sum; norm = argmax of the sum divided by the
 * ending's UTF-8 byte length (+1 for the space), which does not depend on the tokenizer, so models
 * with different tokenizers compare fairly.  Ties go to the lower ending index. */
#define DSQ_MC_MAX_ENDINGS 64
#define DSQ_MC_MAX_LINE    (1u << 20)   /* bytes per JSONL line */
#define DSQ_MC_MAX_FILE    (1ull << 30) /* bytes per task file */

typedef struct dsq_mc_item {
    const char *ctx;
    uint32_t n_endings;
    const char *const *endings;
    uint32_t label;
} dsq_mc_item;
typedef struct dsq_mc_task dsq_mc_task;
/* Parse and validate a task file (all problems collected, each naming file and line). */
dsq_status dsq_mc_task_open(const char *path, dsq_mc_task **out, dsq_err *err);
/* Same from memory (`what` names the source in messages). */
dsq_status dsq_mc_task_parse(const char *text, size_t len, const char *what, dsq_mc_task **out, dsq_err *err);
void dsq_mc_task_free(dsq_mc_task *t);
size_t dsq_mc_task_count(const dsq_mc_task *t);
const dsq_mc_item *dsq_mc_task_item(const dsq_mc_task *t, size_t i);
/* XXH3-64 over the items' content (ctx, endings, labels), to match answers to a task. */
uint64_t dsq_mc_task_hash(const dsq_mc_task *t);

/* Tokenize UTF-8 text into a heap array (freed with dsq_free) of *n ids. */
typedef dsq_status (*dsq_mc_tokenize_fn)(void *user, const char *text, size_t len, int32_t **ids, size_t *n,
                                         dsq_err *err);
/* Log-probabilities of a token span: out[j - span_start] = log p(ids[j] | ids[0..j)) for j in
 * [span_start, n).  span_start ≥ 1. */
typedef dsq_status (*dsq_mc_span_fn)(void *user, const int32_t *ids, size_t n, size_t span_start, double *out,
                                     dsq_err *err);

typedef struct dsq_mc_answer {
    uint32_t label, raw, norm; /* chosen ending by raw and by normalised log-likelihood */
} dsq_mc_answer;

typedef struct dsq_mc_options {
    int32_t bos;         /* prepended to every sequence; -1 for none */
    size_t first, count; /* items [first, first+count); count 0 = to the end */
} dsq_mc_options;

typedef struct dsq_mc_result {
    uint64_t n;
    double acc_raw, acc_raw_se, acc_norm, acc_norm_se; /* se = sqrt(p(1-p)/n) */
    dsq_mc_answer *answers;                            /* [n], dsq_free by the caller (dsq_mc_result_clear) */
    double *ll;                                        /* [Σ endings] summed log-likelihoods, item-major; dsq_free */
} dsq_mc_result;
/* Score items with the callbacks.  Context and continuation are tokenized as tok(ctx) and
 * tok(ctx + " " + ending); when the second starts with the first, the rest is the continuation,
 * otherwise tok(" " + ending) is used (a merge across the boundary). */
dsq_status dsq_mc_score(const dsq_mc_task *t, const dsq_mc_options *opt, dsq_mc_tokenize_fn tok, void *tok_user,
                        dsq_mc_span_fn span, void *span_user, dsq_mc_result *out, dsq_err *err);
void dsq_mc_result_clear(dsq_mc_result *r);

/* Answers files: JSONL, a header line {"dsq_mc_answers":1,"task_hash":"<16 hex>","n":N,"first":F}
 * then one {"item":I,"label":L,"raw":R,"norm":M} per item. */
dsq_status dsq_mc_answers_write(const char *path, const dsq_mc_task *t, const dsq_mc_options *opt,
                                const dsq_mc_result *r, bool overwrite, dsq_err *err);
typedef struct dsq_mc_flips {
    uint64_t n;         /* items compared */
    uint64_t raw, norm; /* items whose chosen answer changed */
    double raw_rate, norm_rate;
} dsq_mc_flips;
/* Compare a result with an answers file written for the same task and item range. */
dsq_status dsq_mc_flips_vs_file(const char *path, const dsq_mc_task *t, const dsq_mc_options *opt,
                                const dsq_mc_result *r, dsq_mc_flips *out, dsq_err *err);

/* ---- hidden-state diff ------------------------------------------------------------------------ */
typedef struct dsq_diff_acc {
    uint64_t n;
    double rr, cc, rc, ee; /* Σ ref², Σ cand², Σ ref·cand, Σ (ref - cand)² */
    double max_abs;        /* max |ref - cand| */
    uint64_t nonfinite;    /* elements where either side is NaN/inf (excluded from the sums) */
} dsq_diff_acc;
/* Accumulate n elements (may be called repeatedly, e.g. row by row). */
void dsq_diff_add(dsq_diff_acc *a, const float *ref, const float *cand, size_t n);
/* Cosine similarity Σrc / sqrt(Σr² Σc²); 1 when both are all zero, 0 when only one is. */
double dsq_diff_cosine(const dsq_diff_acc *a);
/* SQNR in dB: 10 log10(Σref² / Σ(ref-cand)²); +inf when identical. */
double dsq_diff_sqnr_db(const dsq_diff_acc *a);
/* Relative RMS error sqrt(Σ(ref-cand)² / Σref²) (0 when identical, +inf when ref is zero). */
double dsq_diff_rel_rms(const dsq_diff_acc *a);

#endif
