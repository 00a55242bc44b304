/* Model-level quality jobs on top of the V4 forward pass (dsq_v4.h) and the metrics of
 * dsq_metrics.h: perplexity, KL base files and KL divergence against them, multiple-choice
 * accuracy, layer-by-layer diff of two models, and token generation.  What the `dsq eval
 * ppl|kld|diff|mc`, `dsq compare` and `dsq generate` commands run.
 *
 * Text arrives as token ids (the caller tokenizes, or reads pre-tokenized ids), so models without a
 * tokenizer are scored the same way.  Chunks follow the perplexity methodology of dsq_ppl_plan
 * (BOS = the config's bos_token_id, second half of each chunk scored).  Chunks are evaluated in
 * batches, layer-major (dsq_v4_forward_streaming), so a batch reads each block's weights once.
 * Long jobs poll dsq_interrupted() between batches (DSQ_ERR_INTERRUPTED). */
#ifndef DSQ_SCORE_H
#define DSQ_SCORE_H

#include "dsq_metrics.h"
#include "dsq_tokenizer.h"
#include "dsq_v4.h"

#define DSQ_SCORE_DEFAULT_CTX      512
#define DSQ_SCORE_MAX_CTX          (1u << 24) /* --ctx ceiling before the model's max_position_embeddings */
#define DSQ_SCORE_DEFAULT_BATCH    4
#define DSQ_SCORE_MAX_LOGITS_BYTES (1ull << 30) /* logits held per batch; the batch shrinks to fit */

typedef struct dsq_score_progress {
    uint64_t done, total; /* scored positions */
    dsq_ppl_result ppl;   /* running perplexity of the model being run */
} dsq_score_progress;
typedef void (*dsq_score_progress_fn)(void *user, const dsq_score_progress *p);

typedef struct dsq_score_options {
    dsq_eval_options eval;          /* numerics, threads, ... */
    uint32_t n_ctx;                 /* tokens per chunk including BOS (default DSQ_SCORE_DEFAULT_CTX) */
    uint32_t max_chunks;            /* 0 = every complete chunk of the text */
    bool no_bos;                    /* chunks without BOS (default false: config bos_token_id) */
    uint32_t batch;                 /* chunks per layer-major pass (default DSQ_SCORE_DEFAULT_BATCH) */
    uint64_t memory_budget;         /* dsq_v4_forward_streaming's cap (0 = none) */
    dsq_score_progress_fn progress; /* called after every batch; may be NULL */
    void *user;
    /* KL position buckets (dsq_kld_acc_set_buckets): n_bucket_edges < 0 (default -1) keeps
     * DSQ_KLD_DEFAULT_BUCKET_EDGES; otherwise the first n entries of bucket_edges. */
    int n_bucket_edges;
    uint64_t bucket_edges[DSQ_KLD_MAX_BUCKETS - 1];
    /* first scored chunk position: -1 (default) = n_ctx/2 (the second half, dsq_ppl_plan); 0 … n_ctx-2
     * scores from there (drift by position needs the early positions).  A KL base keeps its own. */
    int64_t score_from;
} dsq_score_options;
void dsq_score_options_default(dsq_score_options *o);

/* The chunk plan for n_text tokens under these options and the model's BOS.  DSQ_ERR_ARG when n_ctx
 * exceeds the model's max_position_embeddings (the message names both). */
dsq_status dsq_score_plan(const dsq_v4_model *m, const dsq_score_options *o, uint64_t n_text, dsq_ppl_plan *plan,
                          dsq_err *err);

/* Text tokens the plan of `o` can use at most, for any model: max_chunks × n_ctx, or 0 (all of them)
 * when max_chunks is 0.  What to read of a token file (dsq_eval_read_tokens_max). */
uint64_t dsq_score_text_bound(const dsq_score_options *o);

/* Perplexity of the model over text[0..n_text). */
dsq_status dsq_score_ppl(const dsq_v4_model *m, const dsq_score_options *o, const int32_t *text, uint64_t n_text,
                         dsq_ppl_result *out, dsq_err *err);

typedef struct dsq_base_options {
    uint32_t k;         /* top-k ids per position (0 = DSQ_KBASE_DEFAULT_K, clamped to the vocabulary) */
    uint64_t seed;      /* Gumbel-max seed for the same-sample statistic (default 0) */
    double temperature; /* its temperature (0 = 1.0) */
    const char *note;   /* provenance text stored in the file (may be NULL; truncated to the limit) */
    bool overwrite;
} dsq_base_options;

/* Run the model over the text and write a KL base file (docs/kld-base.md) to `path`; *ppl (may be
 * NULL) receives the model's perplexity. */
dsq_status dsq_score_save_base(const dsq_v4_model *m, const dsq_score_options *o, const dsq_base_options *bo,
                               const int32_t *text, uint64_t n_text, const char *path, dsq_ppl_result *ppl,
                               dsq_err *err);

/* Compare the model with a base: the chunk plan and tokens come from the base.  When `text` is not
 * NULL it must hold at least the base's tokens, identical (the candidate scores the same tokens),
 * otherwise DSQ_ERR_CHECKSUM; o->n_ctx / max_chunks / no_bos are ignored. */
dsq_status dsq_score_kld(const dsq_v4_model *m, const dsq_score_options *o, const char *base_path, const int32_t *text,
                         uint64_t n_text, dsq_kld_stats *out, dsq_err *err);

/* Multiple choice with the model and its tokenizer (BOS = the config's bos_token_id unless
 * o->no_bos).  Each ending is one prefill of BOS + context + continuation. */
dsq_status dsq_score_mc(const dsq_v4_model *m, const dsq_score_options *o, const dsq_tok *tok, const dsq_mc_task *task,
                        size_t first, size_t count, dsq_mc_result *out, dsq_err *err);

/* Layer diff of CAND against REF (same architecture) over the chunks of the text (all positions).
 * own[b]: CAND's streams after block b against REF's, each model running on its own (errors
 * compound).  fed[b] (when ref_input): CAND's block b fed REF's streams entering block b (a model
 * whose blocks < b are REF's and block b is CAND's), so each block's own error shows.  final: the
 * streams entering the head; kld: KL(REF ‖ CAND) of the final logits over every position, exact
 * (k = vocab). */
typedef struct dsq_score_diff {
    int n_blocks;
    dsq_diff_acc *own; /* [n_blocks] */
    dsq_diff_acc *fed; /* [n_blocks] or NULL */
    dsq_diff_acc final;
    dsq_kld_stats kld;
} dsq_score_diff;
/* REF and CAND are checkpoint paths (their blocks are combined into hybrid models, so they are
 * opened here); the hybrid runs cost O(n_blocks²) block evaluations in total. */
dsq_status dsq_score_diff_run(const char *ref_path, const char *cand_path, const dsq_score_options *o,
                              const int32_t *text, uint64_t n_text, bool ref_input, dsq_score_diff *out, dsq_err *err);
void dsq_score_diff_clear(dsq_score_diff *d);

/* Generation: prefill the prompt, then one token at a time.  temperature 0 = greedy (arg-max);
 * otherwise Gumbel-max sampling (dsq_metrics_gumbel_sample with `seed`, position = step).  Each new
 * id goes to on_token (may return an error to stop); stops after n_new tokens or at the config's
 * eos_token_id (emitted, then stop) unless ignore_eos. */
typedef struct dsq_generate_options {
    uint32_t n_new;
    double temperature;
    uint64_t seed;
    bool ignore_eos;
} dsq_generate_options;
typedef dsq_status (*dsq_generate_token_fn)(void *user, int32_t id, dsq_err *err);
dsq_status dsq_score_generate(const dsq_v4_model *m, const dsq_eval_options *eval, const int32_t *prompt,
                              size_t n_prompt, const dsq_generate_options *g, dsq_generate_token_fn on_token,
                              void *user, dsq_err *err);

#endif
