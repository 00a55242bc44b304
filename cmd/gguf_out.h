/* GGUF outputs of `dsq export` and `dsq convert` (cmd/gguf_out.c). */
#ifndef DSQ_CMD_GGUF_OUT_H
#define DSQ_CMD_GGUF_OUT_H

#include <stdbool.h>

/* True for a path ending in ".gguf". */
bool dsq_cmd_is_gguf_path(const char *p);
/* Parse argv (argv[0] = cmd) for a GGUF output and run it; returns the exit code. */
int dsq_cmd_gguf_out(const char *cmd, int argc, char **argv);
void dsq_cmd_gguf_help(const char *cmd);

#endif
