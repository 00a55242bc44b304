/* Checkpoint → .dsq conversion: plan (inventory check, recipe, stacking, fusion), then a streaming
 * run that holds at most a bounded chunk of one tensor in memory whatever the model size.
 *
 *   dsq_convert_plan_make   validate the source (config, inventory), resolve every tensor's target
 *                           encoding, stack routed experts [E, out, in], fuse compressor wkv|wgate
 *   dsq_convert_plan_*      the plan: per output tensor and per family (for --dry-run)
 *   dsq_convert_run         write the container (.partial + journal, resumable, atomic publication)
 *
 * Output bytes depend only on the source, the recipe and the tool version: not on thread counts or on
 * where a run was interrupted and resumed (formats/spec/dsq.md §7). */
#ifndef DSQ_CONVERT_H
#define DSQ_CONVERT_H

#include "dsq_container.h"
#include "dsq_core.h"
#include "dsq_imatrix.h"
#include "dsq_recipe.h"

typedef struct dsq_convert_options {
    const char *src;          /* checkpoint directory or .safetensors file */
    const char *out;          /* OUT.dsq */
    const dsq_recipe *recipe; /* borrowed */
    int threads;              /* 0: 1 */
    uint64_t chunk_bytes;     /* source bytes re-encoded per chunk, rounded to 128-row slabs (0: 32 MiB);
                                 the output does not depend on it */
    bool resume, overwrite;
    bool buffered_io;         /* default (false): bulk data is written with O_DIRECT and read back for
                                 verification with O_DIRECT where the filesystem allows (no page-cache
                                 churn); true: plain buffered writes, verification at the end */
    bool force;               /* allow re-encoding protected tensors */
    bool allow_nonfinite;     /* pass NaN/Inf through the codecs instead of failing */
    /* importance for the k-quant targets (borrowed; NULL = none): each source weight with an entry
     * of its width seen over >= DSQ_IMATRIX_MIN_ROWS rows is encoded with Σx²/rows per column,
     * the others (and every other encoding) by plain squared error */
    dsq_imatrix *imatrix;
    const char *const *command; /* canonical arguments recorded in the provenance (NULL-terminated) */
    bool progress;            /* progress line on a TTY (dsq_progress rules) */
    /* Called after each tensor is written and journaled (n = tensors written in this run). */
    void (*after_tensor)(void *ctx, size_t n);
    void *ctx;
} dsq_convert_options;

typedef struct dsq_convert_plan dsq_convert_plan;

/* Build the plan.  Every problem (inventory, recipe, protected tensor, unsupported re-encoding) is
 * collected in err.  opt is copied; the recipe must outlive the plan. */
dsq_status dsq_convert_plan_make(const dsq_convert_options *opt, dsq_convert_plan **out, dsq_err *err);
void dsq_convert_plan_free(dsq_convert_plan *p);

/* One output tensor of the plan. */
typedef struct dsq_convert_item {
    const char *name;         /* stored name */
    dsq_encoding src_enc, dst_enc;
    int group;                /* target group (INT*_G), 0 otherwise */
    int family;               /* dsq_family of its sources */
    uint32_t n_sources;
    bool copy;                /* bytes copied unchanged */
    uint64_t bytes_in;        /* source bytes (weights + scales) */
    uint64_t bytes_out;       /* stored part bytes */
} dsq_convert_item;
size_t dsq_convert_plan_count(const dsq_convert_plan *p);
const dsq_convert_item *dsq_convert_plan_item(const dsq_convert_plan *p, size_t i);
/* Totals: source bytes, data-region bytes of the output, the output file size (estimated tail). */
void dsq_convert_plan_totals(const dsq_convert_plan *p, uint64_t *bytes_in, uint64_t *bytes_out, uint64_t *file_bytes);
/* Free bytes on the output's filesystem (0 if unknown). */
uint64_t dsq_convert_plan_free_space(const dsq_convert_plan *p);
/* Rough wall time in seconds: copies at `copy_mbps`, re-encodes at `encode_mbps` per thread. */
double dsq_convert_plan_estimate_seconds(const dsq_convert_plan *p, double copy_mbps, double encode_mbps);

typedef struct dsq_convert_stats {
    uint64_t tensors, tensors_resumed;
    uint64_t bytes_in, bytes_out, file_bytes;
    double seconds;
} dsq_convert_stats;

/* Run the plan.  DSQ_ERR_INTERRUPTED when dsq_interrupted() became true at any point before the final
 * rename (the .partial and its journal are kept, synced, for --resume); DSQ_ERR_EXISTS when another
 * job holds the output's lock (nothing touched); any other error removes the partial output, except
 * in a resumed run (opt.resume found a partial file), which keeps it and the journal. */
dsq_status dsq_convert_run(dsq_convert_plan *p, dsq_convert_stats *stats, dsq_err *err);

/* ---- verification (dsq verify) ------------------------------------------------------------------ */
typedef struct dsq_verify_options {
    const char *path;    /* the .dsq */
    const char *source;  /* checkpoint to compare with, or NULL */
    bool no_mmap;        /* pread mode for the checksum pass */
    bool progress;
    bool allow_nonfinite; /* do not report NaN/Inf codes and scales (a container converted with them) */
} dsq_verify_options;

#define DSQ_VERIFY_FAMILIES 16
typedef struct dsq_verify_family {
    uint64_t tensors, sources;     /* stored tensors, checkpoint tensors they hold */
    uint64_t identical;            /* sources stored byte for byte */
    uint64_t reencoded;            /* sources stored in another encoding (compared numerically) */
    double max_rel_rms, max_abs, min_cosine; /* over the re-encoded sources */
    char encodings[96];            /* stored encodings, comma-separated */
} dsq_verify_family;

typedef struct dsq_verify_report {
    uint64_t tensors, parts, bytes, file_bytes;
    bool checksums_ok, metadata_ok;
    bool values_ok;   /* no NaN/Inf codes or scales (checked in the checksum pass) */
    bool names_ok;    /* stored tensor names agree with their source records (spec §5.5) */
    bool source_checked;
    uint64_t sources, sources_identical, sources_reencoded, sources_changed, checkpoint_missing;
    dsq_verify_family family[DSQ_VERIFY_FAMILIES]; /* indexed by dsq_family */
    double worst_rel_rms;
    char worst_name[256];
} dsq_verify_report;

/* Check a container: structure, every checksum and padding byte, NaN/Inf codes and scales (in the
 * same pass), metadata (model.config as inspect and eval read it, files.config.json agreeing with it,
 * the KV-cache declaration, the inventory its sources describe, every expected weight resolvable),
 * stored names against their source records; with a source checkpoint also that every checkpoint tensor is
 * held, unchanged ones byte for byte, re-encoded ones with their error statistics.  Every problem
 * is recorded in err; rep is filled as far as the checks went. */
dsq_status dsq_convert_verify(const dsq_verify_options *opt, dsq_verify_report *rep, dsq_err *err);

/* A dsq_ctr_part_fn that fails with DSQ_ERR_NONFINITE ("FILE: tensor NAME: data element I is NaN or
 * infinite (...)") on the first NaN/Inf code or scale of a piece of part p of t (vectorised; pieces
 * must start on element boundaries).  ctx: a dsq_nonfinite_scan. */
typedef struct dsq_nonfinite_scan {
    const char *path; /* for messages */
    size_t found;     /* pieces that held NaN/Inf */
} dsq_nonfinite_scan;
dsq_status dsq_convert_scan_piece(void *ctx, const dsq_ctr_tensor *t, int p, uint64_t offset, const uint8_t *bytes,
                                  size_t n, dsq_err *err);

/* The KV-cache declaration of formats/spec/dsq.md §6.1 for a config in cache encoding `encoding`
 * (dsq_config_kv_layout; NULL = "compact") (heap JSON text, dsq_free; NULL for an unknown encoding or
 * no memory). */
struct dsq_v4_config;
char *dsq_convert_kv_cache_json(const struct dsq_v4_config *c, const char *encoding);

#endif
