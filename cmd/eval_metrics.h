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

/* Parse one model/evaluation option at argv[*i] (advancing *i past its value): --numerics, --device, --kv-cache, --threads,
 * --scalar, --no-shared-clamp, --memory-budget, --ctx, --chunks, --batch, --no-bos.  Returns 1 when
 * consumed, 0 when argv[*i] is not one of them, -1 after printing a usage error for `me`. */
/* Parse and check `--device NAME` (dsq_device_from_name + dsq_device_check): 0, or -1 after printing
 * one line (malformed name, no CUDA built in, no device). */
int dsq__cmd_device_option(const char *me, const char *name, dsq_device *out);
/* Parse `--kv-cache NAME` (f32, bf16, compact): 0, or -1 after printing one usage line. */
int dsq__cmd_kv_cache_option(const char *me, const char *name, dsq_kv_cache *out);
int dsq__cmd_score_option(const char *me, int argc, char **argv, int *i, dsq_score_options *o);
/* The lines of help for those options. */
void dsq__cmd_score_option_help(FILE *f);

/* Print KL statistics as text, or as the members of a JSON object (without braces). */
void dsq__cmd_print_kld(FILE *f, const dsq_kld_stats *s);
void dsq__cmd_json_kld(FILE *f, const dsq_kld_stats *s);

#endif
