/* GGUF v3 (llama.cpp / ggml): a hardened reader and a streaming writer.
 *
 * File layout (little-endian):
 *   "GGUF" u32 version=3  u64 n_tensors  u64 n_kv
 *   n_kv × { string key, u32 value_type, value }       (string = u64 length + bytes, no NUL)
 *            value_type ARRAY: u32 element_type, u64 count, count elements (no nested arrays)
 *   n_tensors × { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
 *   zero padding to `general.alignment` (default 32), then the data section; each tensor's offset is
 *   relative to the data section's start and a multiple of the alignment.
 * ggml's `ne` order is the reverse of a row-major shape: ne[0] is the contiguous (column) axis, so
 * a [rows, cols] matrix is ne = {cols, rows}.  Block types pack ne[0] in blocks (Q8_0: 32 values in
 * 34 bytes), so ne[0] must be a multiple of the block size.
 *
 * Reader: every count, length and size from the file goes through checked arithmetic and a named
 * limit (RELIABILITY.md: the GGUF CVE chain); duplicate keys and tensor names, nested arrays,
 * unknown value or tensor types, alignments that are not a power of two ≤ DSQ_GGUF_MAX_ALIGN,
 * misaligned, overlapping or out-of-file tensor data are rejected with one line naming the file,
 * the byte offset and the key or tensor.  After open, keys, strings and tensor data are const views
 * into the read-only mapping, valid until dsq_gguf_close.
 *
 * Writer: all key/value pairs and tensor infos are declared first; dsq_gguf_writer_begin plans the
 * aligned offset of every tensor (and, with split_max_bytes, which split file holds it), writes the
 * headers, and the caller then streams each tensor's bytes in declaration order.  Files are written
 * as hidden .partial files (dsq_afile) and published only by dsq_gguf_writer_finish after each has
 * been re-read and validated by the reader; any failure removes them all. */
#ifndef DSQ_GGUF_H
#define DSQ_GGUF_H

#include "dsq_core.h"

/* ---- limits (every one quoted by docs/interop.md) -------------------------------------------- */
#define DSQ_GGUF_VERSION 3
#define DSQ_GGUF_DEFAULT_ALIGN 32
#define DSQ_GGUF_MAX_ALIGN (1u << 20)      /* general.alignment: a power of two in [1, 1 MiB] */
#define DSQ_GGUF_MAX_TENSORS (1u << 20)    /* tensor infos */
#define DSQ_GGUF_MAX_KV (1u << 16)         /* key/value pairs */
#define DSQ_GGUF_MAX_KEY 65535u            /* bytes of a key */
#define DSQ_GGUF_MAX_STRING (1u << 30)     /* bytes of a string value (ggml: 1 GiB) */
#define DSQ_GGUF_MAX_ARRAY (1u << 30)      /* elements of an array value (ggml: 1 GiB) */
#define DSQ_GGUF_MAX_NAME 63               /* bytes of a tensor name (GGML_MAX_NAME 64 with NUL) */
#define DSQ_GGUF_MAX_DIMS 4                /* GGML_MAX_DIMS */
#define DSQ_GGUF_MAX_SPLITS 9999u          /* -NNNNN-of-NNNNN file names; u16 split keys */

/* Metadata value types (gguf.h).  On-disk values: never renumber. */
typedef enum dsq_gguf_vtype {
    DSQ_GGUF_V_U8 = 0,
    DSQ_GGUF_V_I8 = 1,
    DSQ_GGUF_V_U16 = 2,
    DSQ_GGUF_V_I16 = 3,
    DSQ_GGUF_V_U32 = 4,
    DSQ_GGUF_V_I32 = 5,
    DSQ_GGUF_V_F32 = 6,
    DSQ_GGUF_V_BOOL = 7,
    DSQ_GGUF_V_STRING = 8,
    DSQ_GGUF_V_ARRAY = 9,
    DSQ_GGUF_V_U64 = 10,
    DSQ_GGUF_V_I64 = 11,
    DSQ_GGUF_V_F64 = 12,
    DSQ_GGUF_V_COUNT = 13
} dsq_gguf_vtype;

/* Tensor types (ggml.h enum ggml_type).  On-disk values: never renumber. */
typedef enum dsq_ggml_type {
    DSQ_GGML_F32 = 0,
    DSQ_GGML_F16 = 1,
    DSQ_GGML_Q4_0 = 2,
    DSQ_GGML_Q4_1 = 3,
    DSQ_GGML_Q5_0 = 6,
    DSQ_GGML_Q5_1 = 7,
    DSQ_GGML_Q8_0 = 8,
    DSQ_GGML_Q8_1 = 9,
    DSQ_GGML_Q2_K = 10,
    DSQ_GGML_Q3_K = 11,
    DSQ_GGML_Q4_K = 12,
    DSQ_GGML_Q5_K = 13,
    DSQ_GGML_Q6_K = 14,
    DSQ_GGML_Q8_K = 15,
    DSQ_GGML_IQ2_XXS = 16,
    DSQ_GGML_IQ2_XS = 17,
    DSQ_GGML_IQ3_XXS = 18,
    DSQ_GGML_IQ1_S = 19,
    DSQ_GGML_IQ4_NL = 20,
    DSQ_GGML_IQ3_S = 21,
    DSQ_GGML_IQ2_S = 22,
    DSQ_GGML_IQ4_XS = 23,
    DSQ_GGML_I8 = 24,
    DSQ_GGML_I16 = 25,
    DSQ_GGML_I32 = 26,
    DSQ_GGML_I64 = 27,
    DSQ_GGML_F64 = 28,
    DSQ_GGML_IQ1_M = 29,
    DSQ_GGML_BF16 = 30,
    DSQ_GGML_TQ1_0 = 34,
    DSQ_GGML_TQ2_0 = 35,
    DSQ_GGML_MXFP4 = 39,
    DSQ_GGML_NVFP4 = 40,
    DSQ_GGML_Q1_0 = 41,
    DSQ_GGML_Q2_0 = 42,
    DSQ_GGML_TYPE_COUNT = 43
} dsq_ggml_type;

/* Block geometry of a ggml type: `block` values stored in `bytes` bytes.  false for values that
 * are not a ggml type (removed or unknown). */
bool dsq_ggml_type_info(uint32_t type, uint32_t *block, uint32_t *bytes);
const char *dsq_ggml_type_name(uint32_t type); /* "Q8_0", ..., "?" */
/* Bytes of a row-major tensor with ne[0..n_dims): checks ne[0] % block == 0 and every product. */
dsq_status dsq_ggml_nbytes(uint32_t type, int n_dims, const uint64_t *ne, uint64_t *out);

/* ---- reader ----------------------------------------------------------------------------------- */
typedef struct dsq_gguf dsq_gguf;

typedef struct dsq_gguf_kv {
    const char *key;      /* NUL-terminated copy, owned by the dsq_gguf */
    dsq_gguf_vtype type;  /* DSQ_GGUF_V_ARRAY for arrays */
    dsq_gguf_vtype elem;  /* element type of an array, else == type */
    uint64_t n;           /* elements of an array, else 1 */
    const uint8_t *data;  /* raw little-endian value bytes (for a string: its bytes, for an array of
                           * scalars: n packed elements, for an array of strings: the first length) */
    uint64_t len;         /* byte length of a string value */
} dsq_gguf_kv;

typedef struct dsq_gguf_tensor {
    const char *name;     /* NUL-terminated copy, owned by the dsq_gguf */
    uint32_t type;        /* dsq_ggml_type */
    int n_dims;           /* 1..DSQ_GGUF_MAX_DIMS */
    uint64_t ne[DSQ_GGUF_MAX_DIMS]; /* ggml order; unused dims are 1 */
    uint64_t offset;      /* relative to the data section */
    uint64_t n_bytes;
    const uint8_t *data;  /* view into the mapping */
} dsq_gguf_tensor;

/* Open and validate a GGUF file (mmap).  Everything wrong is reported in err. */
dsq_status dsq_gguf_open(const char *path, dsq_gguf **out, dsq_err *err);
/* Parse a GGUF image held in memory (fuzzing, tests): `data` must outlive the handle.  `what`
 * names it in messages. */
dsq_status dsq_gguf_parse(const void *data, size_t size, const char *what, dsq_gguf **out, dsq_err *err);
void dsq_gguf_close(dsq_gguf *g); /* accepts NULL */

const char *dsq_gguf_path(const dsq_gguf *g);
uint32_t dsq_gguf_alignment(const dsq_gguf *g);
uint64_t dsq_gguf_data_offset(const dsq_gguf *g); /* file offset of the data section */
uint64_t dsq_gguf_file_size(const dsq_gguf *g);
size_t dsq_gguf_n_kv(const dsq_gguf *g);
const dsq_gguf_kv *dsq_gguf_kv_at(const dsq_gguf *g, size_t i);
const dsq_gguf_kv *dsq_gguf_find_kv(const dsq_gguf *g, const char *key); /* NULL when absent */
size_t dsq_gguf_n_tensors(const dsq_gguf *g);
const dsq_gguf_tensor *dsq_gguf_tensor_at(const dsq_gguf *g, size_t i);
const dsq_gguf_tensor *dsq_gguf_find_tensor(const dsq_gguf *g, const char *name); /* NULL when absent */

/* Typed reads of a scalar kv: any integer type (incl. bool) → u64 when non-negative; any integer
 * or float type → double.  false when the type does not fit. */
bool dsq_gguf_kv_u64(const dsq_gguf_kv *kv, uint64_t *out);
bool dsq_gguf_kv_f64(const dsq_gguf_kv *kv, double *out);
/* Element i of an array of integers/floats (as for the scalar reads). */
bool dsq_gguf_kv_arr_u64(const dsq_gguf_kv *kv, uint64_t i, uint64_t *out);
bool dsq_gguf_kv_arr_f64(const dsq_gguf_kv *kv, uint64_t i, double *out);
/* Element i of an array of strings: a view (not NUL-terminated) into the mapping.  O(1). */
bool dsq_gguf_kv_arr_str(const dsq_gguf *g, const dsq_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len);
/* Convenience lookups: false when absent or of another type. */
bool dsq_gguf_get_u64(const dsq_gguf *g, const char *key, uint64_t *out);
bool dsq_gguf_get_f64(const dsq_gguf *g, const char *key, double *out);
/* A string value as a new NUL-terminated heap copy (dsq_free); NULL when absent, not a string or
 * holding a NUL byte. */
char *dsq_gguf_get_str(const dsq_gguf *g, const char *key);

/* ---- split sets (llama.cpp gguf-split: PREFIX-00001-of-0000N.gguf) -------------------------- */
/* The file name of split `no` (1-based) of `count` for an output path: "a/m.gguf" with count 3 →
 * "a/m-00002-of-00003.gguf"; with count 1 the path itself.  Heap (dsq_free). */
char *dsq_gguf_split_path(const char *path, uint32_t no, uint32_t count);
/* Open a GGUF that may be the first file of a split set: reads split.count from it, opens the
 * others by the naming convention, checks split.no of each and that no tensor name repeats across
 * files.  *n receives the number of files; out is a dsq_malloc'd array of handles. */
dsq_status dsq_gguf_open_set(const char *path, dsq_gguf ***out, uint32_t *n, dsq_err *err);
void dsq_gguf_close_set(dsq_gguf **set, uint32_t n);

/* ---- writer ----------------------------------------------------------------------------------- */
typedef struct dsq_gguf_writer dsq_gguf_writer;

typedef struct dsq_gguf_writer_options {
    bool overwrite;           /* replace existing outputs (default: DSQ_ERR_EXISTS) */
    uint64_t split_max_bytes; /* 0: one file; else start a new file before a tensor that would
                               * take the current one over this size (every file holds ≥ 1 tensor) */
    uint32_t alignment;       /* 0: DSQ_GGUF_DEFAULT_ALIGN (written as general.alignment otherwise) */
    bool direct;              /* tensor data by O_DIRECT where the filesystem allows it (dsq_afile_options) */
} dsq_gguf_writer_options;

dsq_status dsq_gguf_writer_create(dsq_gguf_writer **out, dsq_err *err);
void dsq_gguf_writer_free(dsq_gguf_writer *w); /* aborts (removes partial files) unless finished */

/* Metadata, in the order the file will hold it.  Keys must be unique (DSQ_ERR_DUPLICATE). */
dsq_status dsq_gguf_writer_kv_u32(dsq_gguf_writer *w, const char *key, uint32_t v, dsq_err *err);
dsq_status dsq_gguf_writer_kv_i32(dsq_gguf_writer *w, const char *key, int32_t v, dsq_err *err);
dsq_status dsq_gguf_writer_kv_u64(dsq_gguf_writer *w, const char *key, uint64_t v, dsq_err *err);
dsq_status dsq_gguf_writer_kv_f32(dsq_gguf_writer *w, const char *key, float v, dsq_err *err);
dsq_status dsq_gguf_writer_kv_bool(dsq_gguf_writer *w, const char *key, bool v, dsq_err *err);
dsq_status dsq_gguf_writer_kv_str(dsq_gguf_writer *w, const char *key, const char *v, dsq_err *err);
/* Array of scalars: `elem` a scalar type, `data` n packed little-endian elements (copied). */
dsq_status dsq_gguf_writer_kv_arr(dsq_gguf_writer *w, const char *key, dsq_gguf_vtype elem, const void *data,
                                  uint64_t n, dsq_err *err);
/* Array of strings (copied); lens[i] bytes of strs[i]. */
dsq_status dsq_gguf_writer_kv_arr_str(dsq_gguf_writer *w, const char *key, const char *const *strs,
                                      const uint64_t *lens, uint64_t n, dsq_err *err);

/* Declare a tensor (ne in ggml order).  Names ≤ DSQ_GGUF_MAX_NAME bytes, unique. */
dsq_status dsq_gguf_writer_tensor(dsq_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                  const uint64_t *ne, dsq_err *err);

typedef struct dsq_gguf_plan {
    uint32_t n_files;
    uint64_t total_bytes;      /* all files */
    uint64_t tensor_bytes;     /* data only */
} dsq_gguf_plan;
/* Plan without writing (dry run).  The writer can still begin afterwards. */
dsq_status dsq_gguf_writer_plan(dsq_gguf_writer *w, const dsq_gguf_writer_options *opt, dsq_gguf_plan *out,
                                dsq_err *err);
/* Plan, create the partial files and write every header.  After this, no more kv or tensors. */
dsq_status dsq_gguf_writer_begin(dsq_gguf_writer *w, const char *path, const dsq_gguf_writer_options *opt,
                                 dsq_gguf_plan *plan, dsq_err *err);
/* Append bytes of the current tensor (declaration order); a tensor may arrive in several calls.
 * Writing more than a tensor's size spills into the next one; alignment padding is automatic. */
dsq_status dsq_gguf_writer_write(dsq_gguf_writer *w, const void *buf, size_t n, dsq_err *err);
/* Check every tensor was written in full, re-read and validate every file, publish them all. */
dsq_status dsq_gguf_writer_finish(dsq_gguf_writer *w, dsq_err *err);

#endif
