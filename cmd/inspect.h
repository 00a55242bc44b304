/* `dsq inspect`: cmd/inspect.c parses the arguments and dispatches on the input's kind to the views
 * below (one file each); every view prints with cmd/inspect_common.c.  Calls go one way,
 * inspect.c -> views -> inspect_common.c, so no file here calls back into inspect.c. */
#ifndef DSQ_CMD_INSPECT_H
#define DSQ_CMD_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsq_config.h"

/* ---- cmd/inspect_common.c ---- */
/* "1.23 GB" / "284.33 B" (powers of 1000) into buf; returns buf. */
const char *dsq__inspect_hbytes(uint64_t b, char *buf, size_t n);
const char *dsq__inspect_hcount(uint64_t c, char *buf, size_t n);
/* The per-block table (text) and the "layers"/"mtp_layers" JSON members, for every view. */
void dsq__inspect_layers_text(const dsq_v4_config *cf);
void dsq__inspect_layers_json(const dsq_v4_config *cf);
/* Declared KV-cache bytes of one sequence per cache encoding at 8K/128K/1M tokens: a text table, and
 * the "kv_cache_bytes" JSON member. */
void dsq__inspect_kv_text(const dsq_v4_config *cf);
void dsq__inspect_kv_json(const dsq_v4_config *cf);

/* ---- the views; each returns the command's exit status ---- */
/* `dsq inspect FILE.dsq` (cmd/inspect_dsq.c). */
int dsq__inspect_dsq(const char *path, bool json, bool list, bool check);
/* `dsq inspect FILE.imatrix` (cmd/calibrate.c): weights, rows, routed-expert coverage per layer. */
int dsq__inspect_imatrix(const char *path, bool json);
/* `dsq inspect X.gguf` (cmd/inspect_gguf.c). */
int dsq__inspect_gguf(const char *path, bool json, bool list);

#endif
