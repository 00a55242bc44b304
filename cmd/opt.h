/* Option tables for the subcommands in cmd/: one table per subcommand, one parser for all.
 *
 * A command lists its options once, one line each, pointing at where each value goes:
 *
 *     bool json = false;
 *     int threads = 1;
 *     uint64_t chunk = 0;
 *     const char *recipe = NULL, *pos[2];
 *     dsq_opt opts[] = {
 *         DSQ_OPT_STR("--recipe", &recipe),
 *         DSQ_OPT_INT("--threads", &threads, 1, 1024),
 *         DSQ_OPT_SIZE("--chunk-bytes", &chunk, 1, UINT64_MAX),
 *         DSQ_OPT_FLAG("--json", &json),
 *         DSQ_OPT_END,
 *     };
 *     dsq_opt_spec spec = {.cmd = "convert", .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 2,
 *                          .missing = "need SRC and OUT.dsq"};
 *     int n_pos, rc = dsq_opt_parse_cmd(&spec, argc, argv, &n_pos);
 *     if (rc) return rc;
 *
 * Rules (the same for every command):
 *  - argv[0] is the command name; options and positional arguments may come in any order.
 *  - An option that takes a value takes the next argument, whatever it is ("--out --json" sets
 *    --out to "--json").  Only the spelling "--name VALUE" exists (no "--name=VALUE", no "--").
 *  - Anything else starting with '-' is an unknown option ("-" alone is a positional argument
 *    unless spec.dash_is_option).  More positional arguments than max_pos is an error.
 *  - Numbers are decimal and checked: no sign for the unsigned kinds, no trailing bytes, no
 *    overflow, within [min, max].  Sizes take a K/M/G/T suffix (powers of 1024, optional "iB"/"B").
 *  - An option given twice: the last value wins (a list collects all), unless the entry has
 *    DSQ_OPT_ONCE, which refuses the second.
 *  - Errors are one line "dsq CMD: MESSAGE (see dsq CMD --help)" and exit status 2
 *    (DSQ_EXIT_USAGE), printed by dsq_opt_parse_cmd.  --help is not handled here (each command
 *    checks dsq_cmd_wants_help first and prints its own help).
 *
 * Adding an option to a command is one line in its table; a new kind of value is a DSQ_OPT_FN
 * callback.  The library work stays in lib/: a table only says where the parsed value goes. */
#ifndef DSQ_CMD_OPT_H
#define DSQ_CMD_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum dsq_opt_kind {
    DSQ_OPT_KIND_END = 0, /* ends a table */
    DSQ_OPT_KIND_FLAG,    /* bool *: set to true, no value */
    DSQ_OPT_KIND_INT,     /* int *: signed decimal in [min, max] */
    DSQ_OPT_KIND_U32,     /* uint32_t *: unsigned decimal in [min, max] */
    DSQ_OPT_KIND_U64,     /* uint64_t *: unsigned decimal in [min, max] */
    DSQ_OPT_KIND_SIZE,    /* uint64_t *: bytes with optional K/M/G/T suffix, in [min, max] */
    DSQ_OPT_KIND_DOUBLE,  /* double *: finite, ≥ min (> min with DSQ_OPT_GT_MIN), ≤ max */
    DSQ_OPT_KIND_STR,     /* const char **: the argument itself (not copied) */
    DSQ_OPT_KIND_LIST,    /* dsq_opt_list *: every occurrence, in order (repeatable) */
    DSQ_OPT_KIND_ENUM,    /* int *: index of the value in `names` (NULL-terminated) */
    DSQ_OPT_KIND_FN,      /* fn(value, dest, msg): a value type of its own */
    DSQ_OPT_KIND_MORE,    /* `more`: another table searched in place of this entry (shared options) */
} dsq_opt_kind;

/* Entry flags. */
enum {
    DSQ_OPT_ONCE = 1 << 0,   /* refuse a second occurrence */
    DSQ_OPT_GT_MIN = 1 << 1, /* DOUBLE: the value must be > min (not ≥) */
};

/* What a DSQ_OPT_FN callback returns. */
typedef enum dsq_opt_fn_result {
    DSQ_OPT_FN_OK = 0,
    DSQ_OPT_FN_BAD = 1,  /* a usage error: msg says what is wrong with the value */
    DSQ_OPT_FN_FAIL = 2, /* a well-formed value that cannot be used here (msg: the problem); exit 2 */
} dsq_opt_fn_result;

/* Parse `value` into *dest; on error write one line (no prefix, no newline) into msg[cap]. */
typedef dsq_opt_fn_result (*dsq_opt_fn)(const char *value, void *dest, char *msg, size_t cap);

/* The arguments of a DSQ_OPT_KIND_LIST option; v (dsq_malloc'd by the parser, NULL when none)
 * is freed with dsq_opt_list_free. */
typedef struct dsq_opt_list {
    const char **v;
    size_t n;
} dsq_opt_list;
void dsq_opt_list_free(dsq_opt_list *l);

typedef struct dsq_opt {
    const char *name; /* "--threads", "-n"; NULL ends the table */
    dsq_opt_kind kind;
    void *dest;
    int64_t min;  /* INT/U32/U64/SIZE/DOUBLE: least value (≥ 0 for the unsigned kinds) */
    uint64_t max; /* INT/U32/U64/SIZE/DOUBLE: greatest value */
    unsigned flags;
    const char *const *names;   /* ENUM: accepted spellings, NULL-terminated */
    dsq_opt_fn fn;              /* FN */
    const struct dsq_opt *more; /* MORE */
    const char *note;           /* appended to a bad-value message: " (NOTE)" */
} dsq_opt;

/* One-line table entries.  The conditional expression checks the destination's type at compile
 * time (a bool option cannot point at an int). */
/* clang-format off */
#define DSQ__OPT_DEST(T, p) ((void *)(1 ? (p) : (T *)0))
#define DSQ_OPT_FLAG(name, p) {(name), DSQ_OPT_KIND_FLAG, DSQ__OPT_DEST(bool, p), 0, 0, 0, NULL, NULL, NULL, NULL}
#define DSQ_OPT_INT(name, p, lo, hi) {(name), DSQ_OPT_KIND_INT, DSQ__OPT_DEST(int, p), (lo), (hi), 0, NULL, NULL, NULL, NULL}
#define DSQ_OPT_U32(name, p, lo, hi) {(name), DSQ_OPT_KIND_U32, DSQ__OPT_DEST(uint32_t, p), (lo), (hi), 0, NULL, NULL, NULL, NULL}
#define DSQ_OPT_U64(name, p, lo, hi) {(name), DSQ_OPT_KIND_U64, DSQ__OPT_DEST(uint64_t, p), (lo), (hi), 0, NULL, NULL, NULL, NULL}
#define DSQ_OPT_SIZE(name, p, lo, hi) {(name), DSQ_OPT_KIND_SIZE, DSQ__OPT_DEST(uint64_t, p), (lo), (hi), 0, NULL, NULL, NULL, NULL}
#define DSQ_OPT_DOUBLE(name, p, lo, hi, fl) {(name), DSQ_OPT_KIND_DOUBLE, DSQ__OPT_DEST(double, p), (lo), (hi), (fl), NULL, NULL, NULL, NULL}
#define DSQ_OPT_STR(name, p) {(name), DSQ_OPT_KIND_STR, DSQ__OPT_DEST(const char *, p), 0, 0, 0, NULL, NULL, NULL, NULL}
#define DSQ_OPT_LIST(name, p) {(name), DSQ_OPT_KIND_LIST, DSQ__OPT_DEST(dsq_opt_list, p), 0, 0, 0, NULL, NULL, NULL, NULL}
#define DSQ_OPT_ENUM(name, p, spellings) {(name), DSQ_OPT_KIND_ENUM, DSQ__OPT_DEST(int, p), 0, 0, 0, (spellings), NULL, NULL, NULL}
#define DSQ_OPT_FN(name, p, f) {(name), DSQ_OPT_KIND_FN, (void *)(p), 0, 0, 0, NULL, (f), NULL, NULL}
#define DSQ_OPT_MORE(table) {"", DSQ_OPT_KIND_MORE, NULL, 0, 0, 0, NULL, NULL, (table), NULL}
#define DSQ_OPT_END {NULL, DSQ_OPT_KIND_END, NULL, 0, 0, 0, NULL, NULL, NULL, NULL}
/* clang-format on */

/* A command's arguments: its option table and its positional arguments. */
typedef struct dsq_opt_spec {
    const char *cmd;     /* "convert", "eval ppl": errors read "dsq CMD: ..." */
    const dsq_opt *opts; /* ends with DSQ_OPT_END */
    const char **pos;    /* receives the positional arguments in order (max_pos slots) */
    int max_pos;         /* more is "unexpected argument 'X'" */
    int min_pos;         /* fewer is the usage error `missing` */
    const char *missing; /* e.g. "need SRC and OUT.dsq" */
    bool dash_is_option; /* a lone "-" is an unknown option, not a positional argument */
} dsq_opt_spec;

/* What went wrong, for a caller that prints it (dsq_opt_parse). */
typedef enum dsq_opt_result {
    DSQ_OPT_OK = 0,
    DSQ_OPT_USAGE = 1, /* msg: a usage error ("unknown option '--x'") */
    DSQ_OPT_FAIL = 2,  /* msg: a value a DSQ_OPT_FN callback could not use (printed without the hint) */
} dsq_opt_result;

/* Parse argv[1..argc) against spec; *n_pos gets the number of positional arguments.  Values are
 * stored as they are parsed (a failed parse may leave earlier destinations set).  On error msg[cap]
 * holds one line without prefix or newline.  Lists parsed before an error are the caller's to free. */
dsq_opt_result dsq_opt_parse(const dsq_opt_spec *spec, int argc, char **argv, int *n_pos, char *msg, size_t cap);

/* dsq_opt_parse, printing an error as "dsq CMD: MSG (see dsq CMD --help)" on stderr: returns 0, or
 * DSQ_EXIT_USAGE after an error (lists parsed so far are freed then). */
int dsq_opt_parse_cmd(const dsq_opt_spec *spec, int argc, char **argv, int *n_pos);

/* One option at argv[*i] (advancing *i past its value): 1 consumed, 0 not in the table (or its value
 * is missing), -1 after printing an error for `cmd`.  For the old per-command loops (new code uses
 * dsq_opt_parse_cmd). */
int dsq_opt_parse_one(const char *cmd, const dsq_opt *opts, int argc, char **argv, int *i);

/* The checked number parsers behind the kinds (no sign, decimal, no trailing bytes, no overflow). */
bool dsq_opt_parse_u64(const char *s, uint64_t *out);
bool dsq_opt_parse_i64(const char *s, int64_t *out);
/* Bytes with an optional K/M/G/T suffix (powers of 1024; "2G", "512MiB", "64kb"). */
bool dsq_opt_parse_size(const char *s, uint64_t *out);
/* A finite decimal or exponent number ("0.6", "1e-3"); no hex, inf or nan. */
bool dsq_opt_parse_double(const char *s, double *out);

#endif
