/* `dsq inspect` on a .dsq container (cmd/inspect_dsq.c), called by cmd/inspect.c. */
#ifndef DSQ_CMD_INSPECT_H
#define DSQ_CMD_INSPECT_H

#include <stdbool.h>

#include "dsq_config.h"

/* The per-block table (text) and the "layers"/"mtp_layers" JSON members, for both views. */
void dsq__inspect_layers_text(const dsq_v4_config *cf);
void dsq__inspect_layers_json(const dsq_v4_config *cf);

/* Declared KV-cache bytes of one sequence per cache encoding at 8K/128K/1M tokens: a text table, and
 * the "kv_cache_bytes" JSON member. */
void dsq__inspect_kv_text(const dsq_v4_config *cf);
void dsq__inspect_kv_json(const dsq_v4_config *cf);

/* Returns the command's exit status. */
int dsq__inspect_dsq(const char *path, bool json, bool list, bool check);
/* `dsq inspect FILE.imatrix` (cmd/calibrate.c): weights, rows, routed-expert coverage per layer. */
int dsq__inspect_imatrix(const char *path, bool json);

/* `dsq inspect X.gguf` (cmd/inspect_gguf.c). */
int dsq__inspect_gguf(const char *path, bool json, bool list);

#endif
