/* Evaluation jobs on top of the V4 forward pass (dsq_v4.h): what the `dsq eval` subcommands run.
 * cmd/eval.c parses arguments into these option structs and prints the reports. */
#ifndef DSQ_EVAL_H
#define DSQ_EVAL_H

#include "dsq_core.h"
#include "dsq_v4.h"

/* Read token ids from PATH: a safetensors file holding an I32 (or I64) tensor `tokens` of any rank
 * (flattened), or a text file of whitespace-separated decimal ids.  *out is heap (dsq_free).
 * Ids are not checked against a vocabulary here (the forward pass does: DSQ_ERR_TOKEN). */
dsq_status dsq_eval_read_tokens(const char *path, int32_t **out, int64_t *n, dsq_err *err);
/* The first `max_ids` ids only (0 = all): a text file is parsed as it is read, in 1 MiB pieces, and
 * reading stops there; of a safetensors file only those ids' bytes are read.  Bytes after them are not
 * read, so not checked either.  PATH must be a regular file (a FIFO is refused, never waited on). */
dsq_status dsq_eval_read_tokens_max(const char *path, uint64_t max_ids, int32_t **out, int64_t *n, dsq_err *err);

typedef struct dsq_eval_logits_options {
    const char *model;      /* checkpoint directory */
    const char *tokens;     /* token file (dsq_eval_read_tokens) */
    const char *out;        /* output .safetensors */
    dsq_eval_options eval;  /* numerics, threads, shared clamp, scalar kernels */
    int64_t decode_from;    /* 0: one prefill; P > 0: prefill P tokens, then one token at a time */
    bool mtp;               /* also mtp_logits [n-1, vocab] */
    bool dump_hidden;       /* also layer_out.N [n, hc, dim] and final_hidden */
    uint64_t memory_budget; /* 0 = none; else layer-streaming prefill under this cap (bytes) */
    int64_t prefill_chunk;  /* 0 = the prefill in one call; N > 0: in calls of N tokens (same logits: every
                               split gives the same math), so activations stay bounded at long context;
                               with decode_from only the last prefill row's logits are kept */
    bool overwrite;         /* replace an existing output file */
} dsq_eval_logits_options;

typedef struct dsq_eval_logits_report {
    int64_t n_tokens; /* tokens read */
    int64_t rows;     /* rows of `logits` written */
    uint64_t vocab;
    double seconds_prefill, seconds_decode, seconds_mtp;
    int64_t prefill_tokens, decode_tokens;
    dsq_kv_cache kv_cache; /* the cache encoding used (dsq_v4_eval_kv_cache) */
} dsq_eval_logits_report;

/* Run `dsq eval logits`: writes `logits` F32 [rows, vocab] — rows = n for a prefill, n − P + 1 with
 * decode_from = P (the last prefill position P−1, then one row per decode step) — plus the optional
 * tensors, atomically.  report may be NULL. */
dsq_status dsq_eval_logits(const dsq_eval_logits_options *opt, dsq_eval_logits_report *report, dsq_err *err);

#endif
