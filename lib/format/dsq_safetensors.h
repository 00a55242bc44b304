/* safetensors: read a single file or a sharded checkpoint (model.safetensors.index.json), write one.
 *
 * Reading validates everything at open (header length ≤ DSQ_ST_MAX_HEADER, at most DSQ_ST_MAX_TENSORS
 * tensors per file (counted before the JSON is parsed), JSON well-formed with no
 * duplicate keys, every tensor with a known dtype, a shape of rank ≤ DSQ_ST_MAX_RANK, data_offsets
 * inside the data section, byte length = product(shape) × dtype size with overflow checks, no two
 * tensors overlapping, the data section covered exactly, every shard the index names present and
 * holding exactly the tensors the index says) and collects ALL problems in the dsq_err before
 * failing.  After a successful open, every tensor's bytes are a const zero-copy view into the
 * read-only mapping (mmap mode), valid until dsq_st_close; in pread mode views are NULL and
 * dsq_st_read copies bytes out. */
#ifndef DSQ_SAFETENSORS_H
#define DSQ_SAFETENSORS_H

#include "dsq_core.h"

#define DSQ_ST_MAX_HEADER (100u * 1024u * 1024u) /* 100 MiB */
#define DSQ_ST_MAX_RANK 8
#define DSQ_ST_MAX_NAME 512
/* Tensors per shard file.  A whole DeepSeek-V4-Pro checkpoint in one file holds about 150,000 (weights
 * and scales); a header listing more is refused before its JSON is parsed (a 100 MB header can name
 * over a million tensors, which would cost seconds and a gigabyte to parse and validate). */
#define DSQ_ST_MAX_TENSORS 262144u
#define DSQ_ST_INDEX_NAME "model.safetensors.index.json"

/* Element types.  Values are stable (the .dsq container stores them): never renumber. */
typedef enum dsq_dtype {
    DSQ_DTYPE_F64 = 0,
    DSQ_DTYPE_F32 = 1,
    DSQ_DTYPE_F16 = 2,
    DSQ_DTYPE_BF16 = 3,
    DSQ_DTYPE_F8_E4M3 = 4,
    DSQ_DTYPE_F8_E5M2 = 5,
    DSQ_DTYPE_F8_E8M0 = 6,
    DSQ_DTYPE_I8 = 7,
    DSQ_DTYPE_U8 = 8,
    DSQ_DTYPE_I16 = 9,
    DSQ_DTYPE_I32 = 10,
    DSQ_DTYPE_I64 = 11,
    DSQ_DTYPE_BOOL = 12,
    DSQ_DTYPE_COUNT = 13
} dsq_dtype;

/* Bytes per element (0 for an invalid value). */
size_t dsq_dtype_size(dsq_dtype t);
/* The safetensors spelling ("F32", "F8_E4M3", ...), or "?" */
const char *dsq_dtype_name(dsq_dtype t);
/* Parse a safetensors dtype string; false if unknown. */
bool dsq_dtype_from_name(const char *s, dsq_dtype *out);

typedef struct dsq_st_tensor {
    const char *name;         /* NUL-terminated, owned by the dsq_st */
    dsq_dtype dtype;
    int rank;                 /* 0..DSQ_ST_MAX_RANK */
    uint64_t shape[DSQ_ST_MAX_RANK];
    uint64_t n_elements;      /* product(shape); 1 for rank 0 */
    uint64_t n_bytes;         /* n_elements × dtype size */
    const void *data;         /* mmap view, or NULL in pread mode */
    uint32_t shard;           /* index into the shard list */
    uint64_t file_offset;     /* absolute byte offset of the data within its shard file */
} dsq_st_tensor;

typedef struct dsq_st dsq_st;

typedef struct dsq_st_options {
    bool no_mmap;      /* pread mode (default false: mmap) */
    bool headers_only; /* do not keep file handles beyond validation... reserved; default false */
} dsq_st_options;

/* Open PATH: a .safetensors file, or a directory holding model.safetensors.index.json (sharded)
 * or exactly one *.safetensors file.  On failure *out is NULL and err lists every problem found.
 * opt may be NULL (defaults).  The result is freed with dsq_st_close. */
dsq_status dsq_st_open(const char *path, const dsq_st_options *opt, dsq_st **out, dsq_err *err);
void dsq_st_close(dsq_st *st);

/* Tensors in a stable order: shards in index order, within a shard by data offset. */
size_t dsq_st_count(const dsq_st *st);
const dsq_st_tensor *dsq_st_at(const dsq_st *st, size_t i);
/* Lookup by name (hash table); NULL if absent. */
const dsq_st_tensor *dsq_st_find(const dsq_st *st, const char *name);

size_t dsq_st_shard_count(const dsq_st *st);
const char *dsq_st_shard_path(const dsq_st *st, size_t i);
uint64_t dsq_st_shard_size(const dsq_st *st, size_t i);
int64_t dsq_st_shard_mtime_ns(const dsq_st *st, size_t i);
/* The directory holding the checkpoint (for config.json / tokenizer.json lookups). */
const char *dsq_st_dir(const dsq_st *st);
/* Total bytes of tensor data over all shards. */
uint64_t dsq_st_total_bytes(const dsq_st *st);
/* `__metadata__` string value for key, or NULL (first shard). */
const char *dsq_st_metadata(const dsq_st *st, const char *key);

/* Copy `n` bytes starting `offset` bytes into tensor t's data into buf (works in both modes). */
dsq_status dsq_st_read(const dsq_st *st, const dsq_st_tensor *t, uint64_t offset, void *buf, size_t n, dsq_err *err);
/* Hint that a tensor's pages will be needed soon / can be dropped from the page cache. */
void dsq_st_prefetch(const dsq_st *st, const dsq_st_tensor *t);
void dsq_st_release(const dsq_st *st, const dsq_st_tensor *t);

/* ---- writing --------------------------------------------------------------------------------
 * Plan every tensor first (name, dtype, shape), then stream the data in the planned order.
 *   dsq_st_writer_create → dsq_st_writer_add × N → dsq_st_writer_begin → dsq_st_writer_write ... →
 *   dsq_st_writer_finish (fsync + atomic rename) or dsq_st_writer_free alone (aborts, removes the
 *   partial file).  Tensors are laid out in planned order, contiguous from offset 0; the header is
 *   padded with spaces to a multiple of 8 bytes. */
typedef struct dsq_st_writer dsq_st_writer;
dsq_status dsq_st_writer_create(const char *path, bool overwrite, dsq_st_writer **out, dsq_err *err);
/* Optional `__metadata__` entry (string → string). */
dsq_status dsq_st_writer_meta(dsq_st_writer *w, const char *key, const char *value, dsq_err *err);
dsq_status dsq_st_writer_add(dsq_st_writer *w, const char *name, dsq_dtype dtype, int rank, const uint64_t *shape,
                             dsq_err *err);
/* Bytes of data planned so far (and the final file size once begun). */
uint64_t dsq_st_writer_data_bytes(const dsq_st_writer *w);
dsq_status dsq_st_writer_begin(dsq_st_writer *w, dsq_err *err);
/* Append raw data bytes; may be called with any split of the planned data. */
dsq_status dsq_st_writer_write(dsq_st_writer *w, const void *data, size_t n, dsq_err *err);
/* Check all planned bytes were written, fsync, rename into place.  Frees w. */
dsq_status dsq_st_writer_finish(dsq_st_writer *w, dsq_err *err);
/* Abort (removes the partial file) and free; accepts NULL. */
void dsq_st_writer_free(dsq_st_writer *w);

/* Convenience: write a whole small file of in-memory tensors.  data[i] holds tensor i's bytes. */
typedef struct dsq_st_item {
    const char *name;
    dsq_dtype dtype;
    int rank;
    uint64_t shape[DSQ_ST_MAX_RANK];
    const void *data;
} dsq_st_item;
dsq_status dsq_st_write_file(const char *path, const dsq_st_item *items, size_t n, bool overwrite, dsq_err *err);

#endif
