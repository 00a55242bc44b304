/* llama.cpp's imatrix GGUF (lib/eval/imatrix_gguf.c; formats/spec/imatrix.md §GGUF).
 *
 * The file `llama-imatrix` writes (tools/imatrix/imatrix.cpp, GGUF format since mid-2025): keys
 * `general.type` = "imatrix", `imatrix.datasets` (array of strings), `imatrix.chunk_count` and
 * `imatrix.chunk_size` (u32); for each weight W under its GGUF name (blk.N.attn_q_a.weight, ...)
 * tensors `W.in_sum2` F32 ne {cols, n_mat} (Σx² per input column) and `W.counts` F32 ne {1, n_mat}
 * (token rows), in name order.  n_mat is 1, or the expert count for the stacked routed experts
 * (blk.N.ffn_{gate,down,up}_exps.weight: row e is expert e).  An optional `W.in_sum` (Σx) is
 * accepted and ignored.
 *
 * Names map both ways through the GGUF export's table (docs/interop.md): layers.i.SUFFIX ↔
 * blk.i.GGUF_SUFFIX, layers.i.ffn.experts.e.w1/w2/w3.weight ↔ row e of
 * blk.i.ffn_gate/down/up_exps.weight, head.weight ↔ output.weight, hc_head_fn ↔
 * output_hc_fn.weight, embed.weight ↔ token_embd.weight.  MTP entries have no GGUF imatrix name
 * (dsq calibrate does not run the MTP blocks; llama.cpp's blk.N for N ≥ n_layers is read as
 * layers.N). */
#ifndef DSQ_IMATRIX_GGUF_H
#define DSQ_IMATRIX_GGUF_H

#include "dsq_core.h"
#include "dsq_imatrix.h"

typedef struct dsq_imatrix_gguf_options {
    int n_experts;          /* routed experts per layer (rows of a stack); 0: the largest index + 1 */
    const char *dataset;    /* imatrix.datasets[0] (NULL: none) */
    uint32_t chunk_count, chunk_size;
    bool overwrite;
} dsq_imatrix_gguf_options;

/* Write m as a llama.cpp imatrix GGUF (atomic publication).  An entry without a GGUF name is
 * DSQ_ERR_UNSUPPORTED naming it; experts without data get zero sums and count 0, as llama.cpp
 * writes them. */
dsq_status dsq_imatrix_save_gguf(const dsq_imatrix *m, const char *path, const dsq_imatrix_gguf_options *opt,
                                 dsq_err *err);
/* Read a llama.cpp imatrix GGUF: every in_sum2 needs its counts (and the reverse), F32, matching
 * n_mat, sums finite ≥ 0, counts whole numbers in [0, 2^60]; a name dsq cannot map fails naming it.
 * Rows with count 0 (experts never routed to) give no entry. */
dsq_status dsq_imatrix_load_gguf(const char *path, dsq_imatrix **out, dsq_err *err);
/* True when path is a GGUF whose general.type is "imatrix" (opens and validates it). */
bool dsq_imatrix_gguf_sniff(const char *path);
/* The same over a GGUF image in memory (fuzzing, tests); `what` names it in messages. */
dsq_status dsq_imatrix_parse_gguf(const void *data, size_t size, const char *what, dsq_imatrix **out, dsq_err *err);
/* Either format, by the file's first bytes ("GGUF": llama.cpp's, else dsq's safetensors). */
dsq_status dsq_imatrix_load_any(const char *path, dsq_imatrix **out, dsq_err *err);

#endif
