/* Shared by the subcommands in cmd/: each file cmd/NAME.c defines
 *     int dsq_cmd_NAME(int argc, char **argv);   (argv[0] is the command name)
 * and announces itself with one line the Makefile turns into the command table:
 *     / * dsq-command: NAME | one-line summary * /
 * Commands parse arguments, print, and call lib/; only they may exit(). */
#ifndef DSQ_CMD_H
#define DSQ_CMD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dsq_core.h"
#include "opt.h"

#define X(name, summary) int dsq_cmd_##name(int argc, char **argv);
#include "commands.inc"
#undef X

/* Exit codes. */
enum { DSQ_EXIT_OK = 0, DSQ_EXIT_FAIL = 1, DSQ_EXIT_USAGE = 2, DSQ_EXIT_INTERRUPTED = 130 };

/* Print every problem in `e` as "dsq CMD: message" lines on stderr; returns DSQ_EXIT_FAIL. */
int dsq_cmd_fail(const char *cmd, dsq_err *e);
/* The exit code of status s: DSQ_EXIT_OK, or dsq_cmd_fail's report and DSQ_EXIT_INTERRUPTED (s is
 * DSQ_ERR_INTERRUPTED: a signal stopped the command) or DSQ_EXIT_FAIL. */
int dsq_cmd_exit(const char *cmd, dsq_status s, dsq_err *e);
/* Print a one-line usage error and return DSQ_EXIT_USAGE. */
int dsq_cmd_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when argv[i] is "--help" or "-h". */
bool dsq_cmd_wants_help(int argc, char **argv);
/* Checked unsigned decimal (no sign, no trailing bytes, no overflow): dsq_opt_parse_u64.  Commands
 * parse their options with an option table (cmd/opt.h); these remain for code written before. */
bool dsq_cmd_parse_u64(const char *s, uint64_t *out);
/* A size with optional K/M/G/T suffix (powers of 1024: "2G", "512M"): dsq_opt_parse_size. */
bool dsq_cmd_parse_size(const char *s, uint64_t *out);

/* Print a JSON string literal (quoted, escaped) to f. */
void dsq_cmd_json_str(FILE *f, const char *s);

#endif
