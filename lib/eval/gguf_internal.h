/* Internal to lib/eval: the canonical ↔ GGUF tensor names shared by the GGUF writer
 * (gguf_export.c) and the GGUF weight source (wsrc_gguf.c). */
#ifndef DSQ_GGUF_INTERNAL_H
#define DSQ_GGUF_INTERNAL_H

/* GGUF suffix (after "blk.N.") of a per-block canonical suffix (after "layers.i." / "mtp.m."), for
 * the one-to-one tensors (norms, hc_*, attention, compressor, indexer, router, shared experts);
 * NULL for the others (routed experts, tid2eid, gate bias, MTP-only tensors). */
const char *dsq__gguf_block_suffix(const char *canon);

#endif
