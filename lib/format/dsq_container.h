/* .dsq container: reader and streaming writer (format: formats/spec/dsq.md, constants: dsq.h).
 *
 * Reader: validates the whole structure at open (header, directory, sections with their checksums,
 * every tensor record: encoding, rank, shape, block, part sizes, part offsets inside the data region,
 * alignment, overlaps, names, sources) and collects every problem in the dsq_err before failing.
 * After a successful open every part is a const zero-copy view into the read-only mapping (mmap mode),
 * valid until dsq_ctr_reader_close; in pread mode views are NULL and dsq_ctr_read copies bytes out.
 * Part checksums are checked on request (dsq_ctr_verify, or the `verify` open option).
 *
 * Writer: plan every tensor first, then write their bytes at pre-planned offsets in any order, one
 * tensor after another or interleaved; each finished tensor is journaled (resume), and finish()
 * publishes atomically (RELIABILITY.md §1-5).  Neither object is thread-safe; distinct readers are
 * independent, and a reader's views may be used from any thread. */
#ifndef DSQ_CONTAINER_H
#define DSQ_CONTAINER_H

#include "dsq.h"
#include "dsq_core.h"
#include "dsq_encoding.h"
#include "dsq_safetensors.h"

/* One stored part of a tensor (DATA, SCALES, MINS, TENSOR_SCALE). */
typedef struct dsq_ctr_part {
    uint8_t kind;       /* enum dsq_file_part_kind */
    dsq_dtype dtype;    /* element type of the part */
    uint64_t offset;    /* absolute file offset */
    uint64_t bytes;
    uint64_t xxh3;      /* XXH3-64 of the bytes */
    const void *data;   /* reader, mmap mode: view valid until close; NULL otherwise */
} dsq_ctr_part;

/* Where (a slice of) the tensor came from (spec §5.4). */
typedef struct dsq_ctr_source {
    const char *name;        /* checkpoint tensor name */
    const char *scale_name;  /* its scale tensor, or NULL */
    uint64_t start, count;   /* range of the stored tensor's outermost axis */
    bool squeeze;            /* the source lacks the outermost axis (stacked experts) */
    dsq_dtype dtype;         /* dtype of the source weight in its checkpoint */
    int scale_dtype;         /* dsq_dtype of the scale tensor, -1 when none */
    uint32_t shard;          /* index into provenance.source.files, DSQ_FILE_SHARD_UNKNOWN */
    uint64_t xxh3, scale_xxh3; /* of the source bytes as read; 0 = not recorded */
} dsq_ctr_source;

typedef struct dsq_ctr_tensor {
    const char *name;
    dsq_encoding encoding;
    int rank;
    uint64_t shape[DSQ_FILE_MAX_RANK]; /* logical shape, outermost first */
    uint32_t block_rows, block_cols;    /* block of the encoding (0 × 0 for plain encodings) */
    int n_parts;
    dsq_ctr_part parts[DSQ_FILE_MAX_PARTS]; /* in spec §5.3 order: DATA first */
    uint32_t n_sources;
    const dsq_ctr_source *sources;
    uint32_t index; /* position in the table */
} dsq_ctr_tensor;

/* The part of a given kind, or NULL. */
const dsq_ctr_part *dsq_ctr_tensor_part(const dsq_ctr_tensor *t, int kind);
/* Encoding names (the codec spellings without group width): "f32", "bf16", "fp8-128x128", "mxfp4",
 * "int4-g", ... (never NULL).  dsq_ctr_tensor_encoding_name adds t's group: "int4-g32-asym". */
const char *dsq_ctr_encoding_name(dsq_encoding e);
const char *dsq_ctr_tensor_encoding_name(const dsq_ctr_tensor *t, char *buf, size_t size);
/* The byte range [*offset, *offset + *bytes) of part p (index into t->parts) that holds source s.
 * Returns false when the part cannot be split by that source (a shared NVFP4 tensor scale). */
bool dsq_ctr_source_slice(const dsq_ctr_tensor *t, const dsq_ctr_source *s, int p, uint64_t *offset, uint64_t *bytes);

/* ---- reading ---------------------------------------------------------------------------------- */
typedef struct dsq_ctr_reader dsq_ctr_reader;

typedef struct dsq_ctr_reader_options {
    bool no_mmap; /* pread mode (default false: mmap) */
    bool verify;  /* also check every part checksum and the zero padding at open (default false) */
    bool verify_direct; /* read for that check with O_DIRECT (dsq_seqread): for a file just written
                           with direct I/O, whose bytes are not in the page cache */
    bool parts_verified; /* with verify: the caller has verified every part's checksum already (the
                            writer's background verifier); check structure and padding only */
} dsq_ctr_reader_options;

/* True when PATH is a regular file that starts with the .dsq magic (nothing else is validated). */
bool dsq_ctr_sniff(const char *path);

/* Open a .dsq file.  On failure *out is NULL and err lists every problem found.  opt may be NULL. */
dsq_status dsq_ctr_reader_open(const char *path, const dsq_ctr_reader_options *opt, dsq_ctr_reader **out,
                               dsq_err *err);
void dsq_ctr_reader_close(dsq_ctr_reader *r);

const char *dsq_ctr_path(const dsq_ctr_reader *r);
const dsq_file_header *dsq_ctr_header(const dsq_ctr_reader *r);
/* Tensors in table order. */
size_t dsq_ctr_count(const dsq_ctr_reader *r);
const dsq_ctr_tensor *dsq_ctr_at(const dsq_ctr_reader *r, size_t i);
const dsq_ctr_tensor *dsq_ctr_find(const dsq_ctr_reader *r, const char *name);
/* Find the stored tensor holding checkpoint tensor `name` (a source name); false if none. */
bool dsq_ctr_find_source(const dsq_ctr_reader *r, const char *name, const dsq_ctr_tensor **t,
                         const dsq_ctr_source **s);
/* Metadata JSON text (decompressed, NUL-terminated, owned by the reader); *len may be NULL. */
const char *dsq_ctr_metadata(const dsq_ctr_reader *r, size_t *len);
/* Sections as listed in the directory (including skipped unknown kinds). */
size_t dsq_ctr_section_count(const dsq_ctr_reader *r);
const dsq_file_section *dsq_ctr_section(const dsq_ctr_reader *r, size_t i);

/* Copy n bytes starting `offset` bytes into part p of t (works in both modes). */
dsq_status dsq_ctr_read(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t offset, void *buf, size_t n,
                        dsq_err *err);
/* Page-cache hints for all parts of t (madvise WILLNEED / DONTNEED; no-ops in pread mode). */
void dsq_ctr_prefetch(const dsq_ctr_reader *r, const dsq_ctr_tensor *t);
void dsq_ctr_release(const dsq_ctr_reader *r, const dsq_ctr_tensor *t);
/* The same for bytes [offset, offset + n) of part p of t only (a source's slice, dsq_ctr_source_slice);
 * out-of-range requests are ignored. */
void dsq_ctr_prefetch_range(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t offset, uint64_t n);
void dsq_ctr_release_range(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t offset, uint64_t n);
/* Recompute every part checksum and check the padding bytes are zero; every mismatch is recorded.
 * `progress` may be NULL.  Reads the whole data region (dropping pages behind it). */
dsq_status dsq_ctr_verify(const dsq_ctr_reader *r, dsq_progress *progress, dsq_err *err);
/* The same, handing every piece of part p of t (offset within the part; a part's pieces come in
 * order, at multiples of 4 MiB of the part in mmap and pread modes) to fn right after it is hashed,
 * while it is in cache.  A non-OK status from fn is recorded (fn sets the message) and the pass goes on with the
 * next part. */
typedef dsq_status (*dsq_ctr_part_fn)(void *ctx, const dsq_ctr_tensor *t, int p, uint64_t offset, const uint8_t *bytes,
                                      size_t n, dsq_err *err);
dsq_status dsq_ctr_verify_with(const dsq_ctr_reader *r, dsq_progress *progress, dsq_ctr_part_fn fn, void *ctx,
                               dsq_err *err);
/* XXH3-64 of part p, recomputed from the file. */
dsq_status dsq_ctr_part_hash(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t *out, dsq_err *err);
/* One pass over part p of t in chunks of at most 4 MiB (offsets within the part, multiples of 4 MiB):
 * fn (may be NULL) sees each chunk while it is in cache, and with `checksum` the part's XXH3 is
 * compared with the stored one (DSQ_ERR_CHECKSUM: "FILE: tensor NAME: part P (data) checksum
 * mismatch ...").  A non-OK status from fn stops the pass and is returned.  Reads through the mapping
 * (or pread); thread-safe for distinct or equal parts. */
typedef dsq_status (*dsq_ctr_chunk_fn)(void *ctx, uint64_t offset, const uint8_t *bytes, size_t n, dsq_err *err);
dsq_status dsq_ctr_part_check(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, bool checksum,
                              dsq_ctr_chunk_fn fn, void *ctx, dsq_err *err);
/* "data", "scales", "mins", "tensor scale" (or "part"). */
const char *dsq_ctr_part_kind_name(int kind);

/* ---- writing ---------------------------------------------------------------------------------- */
typedef struct dsq_ctr_writer dsq_ctr_writer;

typedef struct dsq_ctr_source_desc {
    const char *name, *scale_name; /* scale_name may be NULL */
    uint64_t start, count;
    bool squeeze;
    dsq_dtype dtype;
    int scale_dtype; /* -1 none */
    uint32_t shard;  /* DSQ_FILE_SHARD_UNKNOWN when not known */
} dsq_ctr_source_desc;

typedef struct dsq_ctr_tensor_desc {
    const char *name;
    dsq_encoding encoding;
    int rank;
    uint64_t shape[DSQ_FILE_MAX_RANK];
    uint32_t block_rows, block_cols;
    uint32_t n_sources;
    const dsq_ctr_source_desc *sources; /* copied by dsq_ctr_writer_add */
} dsq_ctr_tensor_desc;

typedef struct dsq_ctr_writer_options {
    bool overwrite;           /* replace an existing output (default: DSQ_ERR_EXISTS) */
    bool resume;              /* continue a .partial + journal of the same plan */
    uint32_t align_small;     /* 0: DSQ_FILE_DEFAULT_ALIGN_SMALL */
    uint32_t align_large;     /* 0: DSQ_FILE_DEFAULT_ALIGN_LARGE */
    uint64_t large_threshold; /* 0: DSQ_FILE_DEFAULT_LARGE_THRESHOLD */
    const char *fingerprint;  /* job identity for resume (tool version, arguments, input stats) */
    int compress_metadata;    /* 0 auto (zstd when it saves space), 1 always, -1 never */
    bool direct;              /* bulk data written, and verified at finish, with O_DIRECT where the
                                 filesystem allows (default: buffered) */
} dsq_ctr_writer_options;

/* Create a writer for `path` (nothing touches the disk until begin).  opt may be NULL. */
dsq_status dsq_ctr_writer_create(const char *path, const dsq_ctr_writer_options *opt, dsq_ctr_writer **out,
                                 dsq_err *err);
/* Plan one tensor (before begin).  Validates the descriptor as the reader would; *index may be NULL. */
dsq_status dsq_ctr_writer_add(dsq_ctr_writer *w, const dsq_ctr_tensor_desc *d, uint32_t *index, dsq_err *err);
/* Set the metadata JSON (any time before finish; must be a JSON object without duplicate keys). */
dsq_status dsq_ctr_writer_set_metadata(dsq_ctr_writer *w, const char *json, size_t len, dsq_err *err);
/* Planned data-region end (= file size without the trailing sections). */
uint64_t dsq_ctr_writer_planned_bytes(const dsq_ctr_writer *w);
size_t dsq_ctr_writer_count(const dsq_ctr_writer *w);
/* The planned tensor (offsets and sizes filled; data views NULL). */
const dsq_ctr_tensor *dsq_ctr_writer_tensor(const dsq_ctr_writer *w, uint32_t i);

/* Lock the output (dsq_lock_output: a second job on the same output fails with DSQ_ERR_EXISTS and
 * touches nothing), create .NAME.partial (or reopen it with opt.resume), check free space,
 * preallocate, open the journal.  With resume, every journaled tensor is re-read and its checksums
 * re-checked; a resume that fails (journal missing or damaged, a different job) keeps both files. */
dsq_status dsq_ctr_writer_begin(dsq_ctr_writer *w, dsq_err *err);
/* After begin: true when tensor i is already complete (verified from the journal on resume). */
bool dsq_ctr_writer_is_done(const dsq_ctr_writer *w, uint32_t i);
uint32_t dsq_ctr_writer_done_count(const dsq_ctr_writer *w);
/* Write n bytes at `offset` within part p of tensor i.  Sequential writes of a part are hashed on the
 * fly; any other order is hashed by reading the part back at dsq_ctr_writer_end_tensor. */
dsq_status dsq_ctr_writer_write(dsq_ctr_writer *w, uint32_t i, int p, uint64_t offset, const void *buf, size_t n,
                                dsq_err *err);
/* Record the checksums of source s of tensor i (provenance; journaled with the tensor). */
void dsq_ctr_writer_set_source_hash(dsq_ctr_writer *w, uint32_t i, uint32_t s, uint64_t xxh3, uint64_t scale_xxh3);
/* Tensor i is complete: every part byte was written.  Computes the part checksums and journals them. */
dsq_status dsq_ctr_writer_end_tensor(dsq_ctr_writer *w, uint32_t i, dsq_err *err);
/* All tensors complete: write directory, metadata and table, the header, fdatasync, reopen and verify
 * every checksum, rename into place, fsync the directory, remove the journal.  Frees w (also on error,
 * then removing the partial file unless the run was resumed).  When dsq_interrupted() is true just
 * before the rename, nothing is published: the writer is suspended (.partial and journal kept for
 * --resume) and DSQ_ERR_INTERRUPTED returned. */
dsq_status dsq_ctr_writer_finish(dsq_ctr_writer *w, dsq_err *err);
/* Stop without publishing but keep .partial and journal for a later resume (data and journal synced).
 * Frees w. */
dsq_status dsq_ctr_writer_suspend(dsq_ctr_writer *w, dsq_err *err);
/* Abort: remove the partial file and the journal (kept when begin resumed an existing partial file:
 * earlier runs' work stays resumable); release the lock; free.  Accepts NULL. */
void dsq_ctr_writer_free(dsq_ctr_writer *w);
/* Paths of the partial file and the journal (valid until free). */
const char *dsq_ctr_writer_partial_path(const dsq_ctr_writer *w);
const char *dsq_ctr_writer_journal_path(const dsq_ctr_writer *w);

/* ---- .dsqz transport form (spec §8) ----------------------------------------------------------- */
typedef struct dsq_ctr_pack_stats {
    uint64_t dsq_bytes, dsqz_bytes, frames;
} dsq_ctr_pack_stats;
/* Compress a .dsq into a .dsqz (one zstd frame per tensor).  level: zstd level (0 = 3); threads: zstd
 * workers (0 = none).  Writes atomically; refuses to replace `out` unless overwrite. */
dsq_status dsq_ctr_pack(const char *in, const char *out, int level, int threads, bool overwrite,
                        dsq_ctr_pack_stats *stats, dsq_err *err);
/* Restore a .dsqz.  With n_names > 0, write a .dsq holding only those tensors (same metadata, same
 * part bytes and checksums), decompressing only their frames and the header/table frames. */
dsq_status dsq_ctr_unpack(const char *in, const char *out, const char *const *names, size_t n_names, bool overwrite,
                          dsq_ctr_pack_stats *stats, dsq_err *err);

/* ---- the source checkpoint, as the inventory sees it ------------------------------------------ */
struct dsq_tensor_desc;
/* One descriptor per checkpoint tensor the container holds (weights and their scales) with the dtype
 * and shape they had in the checkpoint, in table order.  *out is dsq_malloc'd (dsq_free); names
 * point into r and are valid until it is closed.  Feed it to dsq_inv_check / dsq_inv_stats_compute. */
dsq_status dsq_ctr_describe_sources(const dsq_ctr_reader *r, struct dsq_tensor_desc **out, size_t *n, dsq_err *err);

/* ---- export to a Hugging Face safetensors checkpoint (dsq export) ----------------------------
 * Every source tensor is written back under its checkpoint name: stacks are split per expert and
 * fused pairs per half.  Tensors stored in the form their checkpoint had (the release recipe) come
 * back byte for byte with the original dtype and shape; other encodings are written as their codes
 * (weight), `.scale`, `.min` and `.tensor_scale` tensors, named in each shard's __metadata__
 * ("dsq.encoding.NAME" = codec name) and in config.json's quantization_config.dsq.  config.json is
 * the source's verbatim when nothing changed form; otherwise expert_dtype / quantization_config are
 * adjusted.  Shards model-0000i-of-0000n.safetensors + model.safetensors.index.json when the data
 * exceeds shard_size, else model.safetensors; tokenizer files and generation_config.json from the
 * metadata.  Each file is written atomically; the directory is created if missing and must not
 * hold a checkpoint already unless overwrite. */
typedef struct dsq_ctr_export_options {
    uint64_t shard_size; /* 0: 5 GiB */
    bool overwrite;
    bool progress;
    /* sees every piece of stored bytes right after it is read and before it is written (NULL: none);
     * a non-OK status stops the export, whose shard in progress is removed (lib/quant's
     * dsq_convert_scan_piece rejects NaN/Inf codes and scales) */
    dsq_ctr_part_fn scan;
    void *scan_ctx;
    /* NVIDIA ModelOpt NVFP4 layout (docs/modelopt-nvfp4.md): every routed expert must be NVFP4 and
     * every other tensor in its release form; NVFP4 weights are written as STEM.weight (U8),
     * STEM.weight_scale (F8_E4M3), STEM.weight_scale_2 and STEM.input_scale (F32 scalars, input_scale
     * 1.0: dsq has no activation calibration), with hf_quant_config.json */
    bool modelopt_nvfp4;
} dsq_ctr_export_options;
typedef struct dsq_ctr_export_stats {
    size_t tensors, shards, files;
    uint64_t bytes;
    bool verbatim_config; /* config.json written unchanged */
} dsq_ctr_export_stats;
dsq_status dsq_ctr_export_safetensors(const char *dsq, const char *outdir, const dsq_ctr_export_options *opt,
                                      dsq_ctr_export_stats *stats, dsq_err *err);

#endif
