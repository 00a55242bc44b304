/* DeepSeek-V4 → GGUF for llama.cpp's `deepseek4` architecture (lib/eval/gguf_export.c).
 *
 * Reads any weight source dsq opens (a .dsq container, a Hugging Face checkpoint directory) and
 * writes a GGUF that llama.cpp's loader accepts: every `deepseek4.*` hparam, tensors under the
 * loader's names with shapes in ggml `ne` order (routed experts stacked [E, out, in] → ne {in, out,
 * E}), MTP blocks as `blk.N.nextn.*` (e_proj | h_proj concatenated along the input into eh_proj),
 * the tokenizer (`tokenizer.ggml.*`), `general.*` and dsq provenance (`dsq.*`).  Streaming: one slab
 * of rows in memory at a time, tensors written in order at pre-planned offsets, atomic publication
 * (split files with split_max_bytes).  docs/interop.md holds the mapping table.
 *
 * Lives in lib/eval because it reads weights through the model's weight-source interface. */
#ifndef DSQ_GGUF_EXPORT_H
#define DSQ_GGUF_EXPORT_H

#include "dsq_core.h"
#include "dsq_inventory.h"

/* One GGUF recipe: the ggml type of the routed experts and of every other matrix.  Type -1 keeps the
 * stored encoding through its lossless GGML twin (dsq_ggml.h; FP8 with power-of-two scales → BF16,
 * exact; FP8 with F32 scales → F32).  Norms, hyper-connection tensors, sinks, compressor position
 * biases, the router (gate weight and bias) always go as F32; tid2eid as I32. */
typedef struct dsq_gguf_recipe {
    const char *name;
    int experts, other;  /* ggml type values, or -1 */
    uint32_t file_type;  /* general.file_type (llama_ftype) */
    const char *summary;
} dsq_gguf_recipe;
/* NULL-terminated table; the first entry ("gguf-keep") is export's default. */
const dsq_gguf_recipe *dsq_gguf_recipes(void);
const dsq_gguf_recipe *dsq_gguf_recipe_find(const char *name);

typedef struct dsq_gguf_export_options {
    const char *recipe;        /* NULL: "gguf-keep" */
    bool no_mtp;               /* leave the MTP blocks out (nextn_predict_layers 0) */
    bool dry_run;              /* plan and report sizes; write nothing */
    bool overwrite;
    uint64_t split_max_bytes;  /* 0: one file */
    bool progress;             /* progress on a TTY */
    const char *command_line;  /* recorded as dsq.command (may be NULL) */
    struct dsq_imatrix *imatrix; /* NULL, or importance for the k-quant targets (borrowed; names are
                                  * checkpoint names, dsq_imatrix.h); other types ignore it */
    bool buffered_io;          /* write through the page cache (default: tensor data by O_DIRECT where the
                                * filesystem allows it, as `dsq convert` writes .dsq files) */
    int threads;               /* encoding threads (0: 1); the output bytes and stats do not depend on it.
                                * Memory: 2 batches of up to 16 slabs of DSQ_CODEC_SLAB_ROWS output rows per
                                * thread (at most 64 MiB each unless 2 per thread pass it), one f32 slab
                                * per thread */
} dsq_gguf_export_options;

enum { DSQ_GGUF_EXPORT_TYPES = 64 };
typedef struct dsq_gguf_export_stats {
    size_t tensors;
    uint32_t files;
    uint64_t bytes;           /* all files */
    uint64_t tensor_bytes;
    uint64_t params;          /* values written */
    uint64_t lossless_values; /* moved by a byte reorder of the source encoding */
    uint64_t by_type[DSQ_GGUF_EXPORT_TYPES]; /* tensors per ggml type */
    double rel_rms_err;       /* over re-quantized values: sqrt(Σ err² / Σ ref²), 0 when none */
    double max_abs_err;
    double sum_sq_err, sum_sq_ref; /* the sums behind rel_rms_err */
    uint32_t n_vocab;
    uint32_t n_merges;
} dsq_gguf_export_stats;

/* Convert `src` (anything dsq_wsrc_open_path opens) into `out` (a .gguf path).  An encoding the
 * recipe cannot map fails with one line naming the tensors and the recipes that would work. */
dsq_status dsq_gguf_export(const char *src, const char *out, const dsq_gguf_export_options *opt,
                           dsq_gguf_export_stats *stats, dsq_err *err);

/* The byte-summary family of a GGUF tensor name of the deepseek4 layout ("blk.3.ffn_up_exps.weight" →
 * routed_experts, "output_hc_fn.weight" → hc, ...); DSQ_FAMILY_OTHER for unknown names. */
dsq_family dsq_gguf_family(const char *gguf_name);

/* ---- dsq verify X.gguf [--source SRC] (lib/eval/gguf_verify.c) ---------------------------------- */
typedef struct dsq_gguf_verify_family {
    uint64_t tensors, compared, identical;
    double max_rel_rms, max_abs, min_cosine;
} dsq_gguf_verify_family;
typedef struct dsq_gguf_verify_report {
    uint32_t files;
    uint64_t tensors, bytes, values;
    uint64_t checked;          /* checkpoint tensors decoded from the GGUF (finite, right shape) */
    bool source_checked;
    uint64_t compared, identical; /* against the source: compared, and equal value for value */
    double worst_rel_rms;
    char worst[160];
    dsq_gguf_verify_family family[DSQ_FAMILY_COUNT];
} dsq_gguf_verify_report;
/* Validate a GGUF (split sets too) as the reader does, decode every checkpoint tensor it maps
 * (non-finite values, shapes and types that dsq cannot decode are problems), and with `source`
 * (anything dsq_wsrc_open_path opens) compare each with the source's tensor: relative RMS error,
 * max |error|, cosine, per tensor (recorded in err as one line when `per_tensor` and worse than
 * identical) and per family.  Every problem is recorded in err; the status is the first one's. */
dsq_status dsq_gguf_verify(const char *gguf, const char *source, dsq_gguf_verify_report *rep, dsq_err *err);

#endif
