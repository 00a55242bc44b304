/* Internal to lib/eval: the canonical ↔ GGUF tensor names shared by the GGUF writer
 * (gguf_export.c) and the GGUF weight source (wsrc_gguf.c). */
#ifndef DSQ_GGUF_INTERNAL_H
#define DSQ_GGUF_INTERNAL_H

/* GGUF suffix (after "blk.N.") of a per-block canonical suffix (after "layers.i." / "mtp.m."), for
 * the one-to-one tensors (norms, hc_*, attention, compressor, indexer, router, shared experts);
 * NULL for the others (routed experts, tid2eid, gate bias, MTP-only tensors). */
const char *dsq__gguf_block_suffix(const char *canon);
/* The inverse: canonical suffix of a GGUF per-block suffix, or NULL. */
const char *dsq__gguf_block_canon(const char *gguf_suffix);

/* tokenizer.json text rebuilt from a GGUF's tokenizer.ggml.* keys (lib/eval/gguf_tokenizer.c);
 * *out is dsq_malloc'd. */
#include <stddef.h>
#include "dsq_core.h"
/* The pre_tokenizer JSON "deepseek-v3" stands for. */
const char *dsq__gguf_deepseek_v3_pre(void);
dsq_status dsq__gguf_tokenizer_json(const char *path, char **out, size_t *out_len, dsq_err *err);

#endif
