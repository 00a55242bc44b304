/* The quality subcommands of `dsq eval` (ppl, kld, diff, mc; cmd/eval_metrics.c) and helpers that
 * `dsq compare` and `dsq generate` share with them. */
#ifndef DSQ_CMD_EVAL_METRICS_H
#define DSQ_CMD_EVAL_METRICS_H

#include "cmd.h"
#include "dsq_score.h"

/* `dsq eval ppl|kld|diff|mc ...` (argv[0] is the subcommand name). */
int dsq__eval_ppl(int argc, char **argv);
int dsq__eval_kld(int argc, char **argv);
int dsq__eval_diff(int argc, char **argv);
int dsq__eval_mc(int argc, char **argv);

/* Token ids for a model: from `tokens_path` (dsq_eval_read_tokens formats; only the first `max_ids`
 * are read when max_ids > 0) when given, otherwise the text file `text_path` encoded with the
 * tokenizer.json of `model_dir`.  *ids is dsq_free'd. */
dsq_status dsq__cmd_load_tokens(const char *model_dir, const char *text_path, const char *tokens_path, uint64_t max_ids,
                                int32_t **ids, uint64_t *n, dsq_err *err);

/* The option table of the evaluator's settings (cmd/opt.h), filled to point into *e: --numerics,
 * --device (checked: a device this build or machine lacks is refused while parsing), --kv-cache,
 * --threads, --scalar, --no-shared-clamp, --no-verify-data, --allow-nonfinite. */
enum { DSQ__CMD_EVAL_OPTS = 9, DSQ__CMD_SCORE_OPTS = 9 };
void dsq__cmd_eval_opts(dsq_eval_options *e, dsq_opt t[DSQ__CMD_EVAL_OPTS]);

/* The scoring options of ppl/kld/diff/mc, compare, generate and calibrate: the evaluator's table
 * above plus --memory-budget, --ctx, --chunks, --batch, --no-bos, pointing into *o.  Include it in a
 * command's table with DSQ_OPT_MORE(t.score); t must live as long as that table. */
typedef struct dsq__cmd_score_table {
    dsq_opt eval[DSQ__CMD_EVAL_OPTS];
    dsq_opt score[DSQ__CMD_SCORE_OPTS];
} dsq__cmd_score_table;
void dsq__cmd_score_opts(dsq_score_options *o, dsq__cmd_score_table *t);

/* One of those options at argv[*i] (advancing *i past its value): 1 consumed, 0 not one of them, -1
 * after printing a usage error for `me`.  For per-command loops written before the option tables. */
int dsq__cmd_score_option(const char *me, int argc, char **argv, int *i, dsq_score_options *o);
/* The lines of help for those options. */
void dsq__cmd_score_option_help(FILE *f);
/* --kv-cache NAME into *out; a usage error printed for `me` (-1) when NAME is not a cache encoding. */
int dsq__cmd_kv_cache_option(const char *me, const char *name, dsq_kv_cache *out);

/* Print KL statistics as text, or as the members of a JSON object (without braces). */
void dsq__cmd_print_kld(FILE *f, const dsq_kld_stats *s);
void dsq__cmd_json_kld(FILE *f, const dsq_kld_stats *s);

#endif
