/* dsq: entry point and subcommand dispatch. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "opt.h"

typedef struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command commands[] = {
#define X(name, summary) {#name, dsq_cmd_##name, summary},
#include "commands.inc"
#undef X
};

static void usage(FILE *f) {
    fprintf(f, "dsq %s: convert, quantize and validate DeepSeek-V4 checkpoints\n\n", DSQ_VERSION_STRING);
    fprintf(f, "usage: dsq <command> [options]   (dsq <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int dsq_cmd_fail(const char *cmd, dsq_err *e) {
    if (e && e->n) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "dsq %s: ", cmd);
        dsq_err_print(e, stderr, prefix);
    } else {
        fprintf(stderr, "dsq %s: failed\n", cmd);
    }
    dsq_err_clear(e);
    return DSQ_EXIT_FAIL;
}

int dsq_cmd_exit(const char *cmd, dsq_status s, dsq_err *e) {
    if (s == DSQ_OK) return DSQ_EXIT_OK;
    dsq_cmd_fail(cmd, e);
    return s == DSQ_ERR_INTERRUPTED ? DSQ_EXIT_INTERRUPTED : DSQ_EXIT_FAIL;
}

int dsq_cmd_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dsq %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see dsq %s --help)\n", cmd);
    va_end(ap);
    return DSQ_EXIT_USAGE;
}

bool dsq_cmd_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    return false;
}

bool dsq_cmd_parse_u64(const char *s, uint64_t *out) { return dsq_opt_parse_u64(s, out); }

bool dsq_cmd_parse_size(const char *s, uint64_t *out) { return dsq_opt_parse_size(s, out); }

void dsq_cmd_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

/* SIGBUS inside a mapped input (truncated or rewritten while dsq reads it): one line naming the
 * file and the byte, exit status 1.  Async-signal-safe: write(2) and _exit only.  Outputs follow
 * the kill rules: the final name never holds an incomplete file (docs/safety.md). */
static const char *g_cmd = "";

static size_t put_str(char *b, size_t at, size_t cap, const char *s) {
    while (*s && at + 1 < cap) b[at++] = *s++;
    return at;
}

static void on_input_vanished(const char *path, uint64_t offset) {
    char line[1024], digits[24];
    size_t n = put_str(line, 0, sizeof line, "dsq ");
    n = put_str(line, n, sizeof line, g_cmd);
    n = put_str(line, n, sizeof line, ": ");
    n = put_str(line, n, sizeof line, path);
    n = put_str(line, n, sizeof line, ": I/O error: byte ");
    int d = 0;
    do digits[d++] = (char)('0' + offset % 10); while ((offset /= 10) && d < 23);
    while (d > 0 && n + 1 < sizeof line) line[n++] = digits[--d];
    n = put_str(line, n, sizeof line, " can no longer be read (the file was truncated or rewritten while in use)\n");
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
    _exit(DSQ_EXIT_FAIL);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? DSQ_EXIT_USAGE : DSQ_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("dsq %s\n", DSQ_VERSION_STRING);
        return DSQ_EXIT_OK;
    }
    g_cmd = argv[1];
    dsq_sigbus_install(on_input_vanished);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dsq: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return DSQ_EXIT_USAGE;
}
