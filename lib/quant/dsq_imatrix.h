/* Importance matrices ("imatrix"): for every linear weight, the sum over calibration tokens of the
 * squared input per input column (Σx², length = the weight's columns) and the number of token rows
 * seen.  The k-quant encoders weight each column's squared error by Σx²/count (dsq_kquant.h).
 *
 * File: a safetensors file (formats/spec/imatrix.md): for each weight NAME (checkpoint name; routed
 * experts under their own names) `NAME.in_sum2` F32 [cols] and `NAME.counts` F32 [1] — the tensor
 * names and meaning of llama.cpp's GGUF imatrix (in_sum2 = Σx², counts = rows), with metadata
 * `format` = "dsq-imatrix".  Loading checks every entry (pairs complete, shapes, finite, in_sum2 ≥ 0,
 * counts ≥ 1) and fails naming the tensor.  Not thread safe: one writer at a time. */
#ifndef DSQ_IMATRIX_H
#define DSQ_IMATRIX_H

#include "dsq_core.h"

enum {
    DSQ_IMATRIX_MAX_ENTRIES = 1 << 22, /* named limit on weights per file */
    DSQ_IMATRIX_MIN_ROWS = 16,         /* fewer rows (a rarely routed expert): no importance */
};

typedef struct dsq_imatrix dsq_imatrix;

dsq_status dsq_imatrix_create(dsq_imatrix **out, dsq_err *err);
void dsq_imatrix_free(dsq_imatrix *m); /* accepts NULL */

/* Add n rows of cols inputs (row stride ldx) for weight `name`: Σx² per column (f64) and the row
 * count.  A later call with other cols for the same name is DSQ_ERR_SHAPE. */
dsq_status dsq_imatrix_add(dsq_imatrix *m, const char *name, const float *x, size_t ldx, int64_t n, uint64_t cols,
                           dsq_err *err);
/* dsq_linear_observer adapter (user = the dsq_imatrix): adds, keeps the first error for
 * dsq_imatrix_error. */
void dsq_imatrix_observe(void *user, const char *weight, const float *x, size_t ldx, int64_t n, uint64_t cols);
/* The first error an observed add met (DSQ_OK when none), copied into err. */
dsq_status dsq_imatrix_error(const dsq_imatrix *m, dsq_err *err);

size_t dsq_imatrix_count(const dsq_imatrix *m);
/* Entry i (0 ≤ i < count, in insertion / file order): name, columns, rows seen. */
const char *dsq_imatrix_name(const dsq_imatrix *m, size_t i);
uint64_t dsq_imatrix_cols(const dsq_imatrix *m, size_t i);
uint64_t dsq_imatrix_rows(const dsq_imatrix *m, size_t i);
/* Entry i's Σx² per column ([cols] f64; valid until the next add or free). */
const double *dsq_imatrix_sum2(const dsq_imatrix *m, size_t i);
/* Add a new entry from stored sums (a file reader): sum2 [cols] finite ≥ 0, rows ≥ 1.  An existing
 * name is DSQ_ERR_DUPLICATE; a bad value DSQ_ERR_NONFINITE / DSQ_ERR_RANGE, naming the entry. */
dsq_status dsq_imatrix_set(dsq_imatrix *m, const char *name, uint64_t cols, const float *sum2, uint64_t rows,
                           dsq_err *err);

/* Importance of weight `name` with `cols` columns: Σx²/count per column (f32), or NULL when the
 * imatrix has no such entry (or another width, or fewer than DSQ_IMATRIX_MIN_ROWS rows: the
 * fallback for rarely routed experts is plain squared error).  Valid until the next add or free;
 * builds a cache on first use: not to be called concurrently. */
const float *dsq_imatrix_importance(dsq_imatrix *m, const char *name, uint64_t cols);

dsq_status dsq_imatrix_save(const dsq_imatrix *m, const char *path, bool overwrite, dsq_err *err);
dsq_status dsq_imatrix_load(const char *path, dsq_imatrix **out, dsq_err *err);

#endif
