/* dsq plan: a mix of encodings chosen for a size budget (issue 13 §4).
 *
 *   groups       every block contributes four groups of quantizable matrices, named after it
 *                ("layers.L." or "mtp.M."):  attn (wq_a wq_b wkv wo_a wo_b; MTP blocks add e_proj h_proj),
 *                shared (shared_experts w1 w2 w3), experts.w13 (every routed expert's w1 and w3),
 *                experts.w2 (every routed expert's w2); plus "embed" and "head".  Everything else — the
 *                protected tensors of dsq_recipe_is_protected (router gate and bias, tid2eid, hc_*,
 *                norms, sinks) and the compressor and indexer matrices — keeps its stored form.
 *   candidates   per group the encodings valid for every matrix of it (k-quants need whole 256-value
 *                super-blocks per row), plus "keep" (the stored form: KL 0 by definition).
 *   sensitivity  the mean KL divergence (nats per position) from the source's next-token distribution
 *                over the calibration chunks when that group alone is quantized, every other tensor at
 *                its stored form.  The matrices are re-encoded in memory (with the imatrix's importance
 *                for the k-quants, exactly as `dsq convert --imatrix` encodes them) and swapped into
 *                the loaded model; the pass resumes at the group's block from the reference pass's
 *                cached streams (dsq_v4_item.start_block), and the reference log-probabilities are
 *                computed once.  MTP groups are scored on the MTP block's own logits (the main
 *                model's output does not depend on them), from the cached final streams.
 *   choice       additivity assumption: the KL of a mix is predicted as the sum of its groups' KLs
 *                measured alone.  dsq_plan_knapsack minimises that sum under the byte budget.
 *   size         exact: the stored bytes (codes + scales + mins) every tensor has in the converted
 *                container, i.e. dsq_convert_plan_totals' bytes_out, which the plan also checks.
 *
 * Bits per weight (--target-bpw) are counted over the group matrices' elements only (the
 * quantizable weights): bpw = 8 · Σ group bytes / Σ group elements.  --target-size counts every
 * tensor's stored bytes (the container's data region, without its header and padding). */
#ifndef DSQ_PLAN_H
#define DSQ_PLAN_H

#include "dsq_core.h"
#include "dsq_imatrix.h"
#include "dsq_recipe.h"
#include "dsq_v4.h"

#define DSQ_PLAN_DEFAULT_CANDIDATES "q2_k,q3_k,q4_k,q5_k,q6_k,int2-g128-asym,int2-g64-asym,int2-g32-asym,int4-g32,int8-g32"
enum {
    DSQ_PLAN_MAX_CANDIDATES = 32,
    DSQ_PLAN_DEFAULT_CELLS = 1 << 16, /* knapsack budget cells (see dsq_plan_knapsack) */
};

/* ---- the knapsack ------------------------------------------------------------------------------ */
typedef struct dsq_plan_option {
    uint64_t bytes;
    double cost; /* predicted KL (finite, >= 0) */
} dsq_plan_option;

/* Multiple-choice knapsack: pick one option per group (opts[g][0 .. n_opts[g])) minimising Σ cost with
 * Σ bytes <= budget.  Exact dynamic programming over the budget discretised into at most `cells` cells
 * of q = ceil(budget / cells) bytes, each option's bytes rounded UP to whole cells (so every choice the
 * DP makes fits; with q = 1 it is the exact optimum), then a greedy fill of the bytes the rounding left:
 * repeatedly the single-group change with the largest cost decrease per extra byte that still fits.
 * (When the rounding leaves no mix in the cells although the smallest one fits, the fill starts from the
 * smallest mix.)  choice[g] receives the option index.  DSQ_ERR_RANGE when even the smallest options exceed the
 * budget (the message gives their total); DSQ_ERR_ARG for a malformed table. */
dsq_status dsq_plan_knapsack(const dsq_plan_option *const *opts, const int *n_opts, int n_groups, uint64_t budget,
                             uint32_t cells, int *choice, dsq_err *err);

/* ---- the planner ------------------------------------------------------------------------------- */
typedef struct dsq_plan_options {
    const char *src;         /* checkpoint directory (what `dsq convert` takes) */
    dsq_imatrix *imatrix;    /* borrowed; NULL: plain squared error for the k-quants */
    const int32_t *tokens;   /* calibration text, tokenized */
    uint64_t n_tokens;
    uint32_t n_ctx;          /* tokens per chunk including BOS (default 512 when 0) */
    uint32_t max_chunks;     /* 0 = every complete chunk */
    const char *candidates;  /* comma-separated encodings; NULL = DSQ_PLAN_DEFAULT_CANDIDATES */
    uint64_t target_bytes;   /* budget over every tensor's stored bytes, or 0 */
    double target_bpw;       /* budget in bits per quantizable weight, or 0 (exactly one is set) */
    uint32_t cells;          /* knapsack cells (0 = DSQ_PLAN_DEFAULT_CELLS) */
    dsq_eval_options eval;   /* numerics, threads (device must be cpu) */
    /* sensitivity table cache (may be NULL): when the file exists, the KLs are read from it (it must hold
     * every group × candidate (DSQ_ERR_MISSING) and name the same source and scored positions
     * (DSQ_ERR_ARG)) instead of measured; when absent, the measured table is written there.
     * Lets several budgets share one measurement (bench/quality.sh).  Delete it when the imatrix or
     * the calibration text change: the file does not record them. */
    const char *table;
    /* called after each group × candidate measurement (may be NULL) */
    void (*progress)(void *user, const char *group, const char *encoding, double kl, int done, int total);
    void *user;
} dsq_plan_options;

typedef struct dsq_plan_cand {
    char name[32];           /* "q4_k", "keep" */
    dsq_recipe_target target;
    uint64_t bytes;          /* stored bytes of the group in this encoding */
    double kl;               /* measured alone (0 for keep) */
} dsq_plan_cand;

typedef struct dsq_plan_group {
    char name[64];           /* "layers.2.experts.w13", "embed", "mtp.0.attn" */
    int block;               /* -1 embed, n_layers + n_mtp: head; else the block */
    char **tensors;          /* checkpoint weight names */
    size_t n_tensors;
    uint64_t elements;
    dsq_plan_cand *cands;    /* cands[0] is keep */
    int n_cands;
    int choice;              /* index into cands */
} dsq_plan_group;

typedef struct dsq_plan_result {
    dsq_plan_group *groups;
    int n_groups;
    uint64_t fixed_bytes;      /* stored bytes of every tensor outside the groups */
    uint64_t group_elements;   /* Σ elements of the group matrices */
    uint64_t source_bytes;     /* every tensor kept as stored */
    uint64_t budget_bytes;     /* the whole-model budget the choice met */
    uint64_t total_bytes;      /* the choice: fixed + Σ chosen group bytes */
    uint64_t convert_bytes;    /* bytes_out of the convert plan of the written recipe (== total_bytes) */
    double bpw;                /* 8 · Σ chosen group bytes / group_elements */
    double predicted_kl;       /* Σ chosen group KLs */
    double measured_kl;        /* the whole mix at once, same tokens */
    uint64_t positions;        /* scored positions per measurement (main model) */
    double seconds;
} dsq_plan_result;

/* Measure, choose, and check the choice against the converter's byte accounting.  Errors name the
 * source, tensor or option.  Free the result with dsq_plan_free. */
dsq_status dsq_plan_run(const dsq_plan_options *opt, dsq_plan_result **out, dsq_err *err);
void dsq_plan_free(dsq_plan_result *r); /* accepts NULL */

/* The recipe of the choice: one rule per group matrix (routed experts by glob) whose choice is not
 * keep, name "plan".  Free with dsq_recipe_free. */
dsq_status dsq_plan_recipe(const dsq_plan_result *r, dsq_recipe **out, dsq_err *err);

#endif
