/* Internal to lib/format/container*.c: shared validation, record encoding, a string map and the byte
 * source the reader parses from (a file, or the decompressed head/tail segments of a .dsqz). */
#ifndef DSQ_CONTAINER_INTERNAL_H
#define DSQ_CONTAINER_INTERNAL_H

#include "dsq_container.h"

/* ---- open-addressing map: NUL-terminated string → uint32 (keys are borrowed, not copied) ---- */
typedef struct dsq__strmap {
    const char **keys;
    uint32_t *values;
    size_t cap, n;
} dsq__strmap;
/* Room for `n` keys (load ≤ 1/2).  false on allocation failure / overflow. */
bool dsq__strmap_init(dsq__strmap *m, size_t n);
void dsq__strmap_free(dsq__strmap *m);
/* Insert; returns false if the key exists already (*existing = its value when non-NULL). */
bool dsq__strmap_put(dsq__strmap *m, const char *key, uint32_t value, uint32_t *existing);
bool dsq__strmap_get(const dsq__strmap *m, const char *key, uint32_t *value);

/* ---- validation shared by writer (descriptors) and reader (file records) ---- */
/* Name rules: 1..DSQ_FILE_MAX_NAME bytes, no NUL (len given), valid UTF-8. */
bool dsq__ctr_name_ok(const char *s, size_t len);
/* Check t's encoding, rank, shape and block against spec §5.3 and fill `expect` with the parts the
 * encoding defines.  Returns the part count, or records a problem (naming `file` and t->name) and
 * returns a negative dsq_status. */
int dsq__ctr_expected_parts(const char *file, const dsq_ctr_tensor *t, dsq_file_part_layout expect[DSQ_FILE_MAX_PARTS],
                            dsq_err *err);
/* Check the sources of t (tiling of the outermost axis, block boundaries, squeeze, dtypes). */
dsq_status dsq__ctr_check_sources(const char *file, const dsq_ctr_tensor *t, dsq_err *err);
/* Bytes of t's record in the table (multiple of 8), or 0 on overflow. */
uint64_t dsq__ctr_record_bytes(const dsq_ctr_tensor *t);
/* Encode t's record into out (record_bytes bytes, zeroed by the caller). */
void dsq__ctr_record_encode(const dsq_ctr_tensor *t, uint8_t *out);
/* dsq_dtype spelling for messages, independent of the safetensors module. */
const char *dsq__ctr_dtype_name(int dtype);
bool dsq__ctr_dtype_known(int dtype);
uint64_t dsq__ctr_xxh3(const void *p, size_t n);

/* ---- byte source for the reader ---- */
typedef struct dsq__ctr_src {
    /* Read n bytes at offset; out of range → DSQ_ERR_RANGE / TRUNCATED is the caller's check. */
    dsq_status (*read)(void *ctx, uint64_t offset, void *buf, size_t n, dsq_err *err);
    void *ctx;
    uint64_t size;     /* bytes available (file size) */
    const char *name;  /* path for messages */
    const uint8_t *map; /* whole-file mapping when available (views), else NULL */
} dsq__ctr_src;

/* Parse and validate a container from a byte source.  `data_readable` false: the data region is not
 * available (a .dsqz head+tail), so only the structure is parsed.  The reader keeps `src` by value. */
dsq_status dsq__ctr_reader_open_src(const dsq__ctr_src *src, bool data_readable, dsq_ctr_reader **out, dsq_err *err);

/* A top-level member of the metadata document (container_export.c reads the recipe object whole). */
struct cJSON;
struct dsq_ctr_meta;
const struct cJSON *dsq__ctr_meta_member(const struct dsq_ctr_meta *m, const char *key);

/* Tensor parts of the plan tile the data region in this order: offset of the first part of tensor i. */
uint64_t dsq__ctr_tensor_begin(const dsq_ctr_tensor *t);

#endif
