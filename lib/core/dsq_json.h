/* Internal JSON helpers over cJSON (never included by public headers).
 * cJSON keeps duplicate members and returns the first on lookup, and `valueint` saturates:
 * RELIABILITY.md.  These helpers reject duplicates and read integers from `valuedouble`. */
#ifndef DSQ_JSON_H
#define DSQ_JSON_H

#include <cjson/cJSON.h>

#include "dsq_core.h"

/* Parse `len` bytes of `text` (need not be NUL-terminated).  Rejects malformed JSON, trailing
 * garbage and duplicate object keys at any depth.  `what` names the source in messages. */
dsq_status dsq_json_parse(const char *text, size_t len, const char *what, cJSON **out, dsq_err *err);

/* Exact non-negative integer ≤ 2^53 (false for non-numbers, fractions, negatives, NaN). */
bool dsq_json_u64(const cJSON *item, uint64_t *out);
/* Exact integer in [-2^53, 2^53]. */
bool dsq_json_i64(const cJSON *item, int64_t *out);
/* Finite number. */
bool dsq_json_f64(const cJSON *item, double *out);

#endif
