/* Helpers shared by tests/test_codec*.c: deterministic random numbers, paths, buffers. */
#ifndef DSQ_TEST_CODEC_UTIL_H
#define DSQ_TEST_CODEC_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"

typedef struct rng { uint64_t s; } rng;
static inline uint64_t rng_u64(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double rng_unit(rng *r) { return (double)(rng_u64(r) >> 11) * 0x1p-53; }
static inline float rng_gauss(rng *r) {
    double u = rng_unit(r), v = rng_unit(r);
    if (u < 1e-300) u = 1e-300;
    return (float)(sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v));
}
static inline void fill_gauss(rng *r, float *x, uint64_t n, float sigma) {
    for (uint64_t i = 0; i < n; i++) x[i] = sigma * rng_gauss(r);
}

/* Buffers for a tensor of (enc, rows, cols, group), zero-filled; free with qbuf_free. */
static inline int qbuf_alloc(dsq_qtensor_buf *b, dsq_encoding enc, uint64_t rows, uint64_t cols, int group) {
    memset(b, 0, sizeof *b);
    dsq_codec_layout L;
    if (dsq_codec_layout_of(enc, rows, cols, group, &L, NULL) != DSQ_OK) return -1;
    b->enc = enc, b->rows = rows, b->cols = cols, b->group = group;
    b->data = calloc(1, L.data_bytes + 1);
    b->scales = L.scale_bytes ? calloc(1, L.scale_bytes) : NULL;
    b->mins = L.min_bytes ? calloc(1, L.min_bytes) : NULL;
    return 0;
}
static inline void qbuf_free(dsq_qtensor_buf *b) {
    free(b->data);
    free(b->scales);
    free(b->mins);
    memset(b, 0, sizeof *b);
}

static inline const char *shared_dir(void) {
    const char *s = getenv("DSQ_SHARED");
    return s && *s ? s : "../shared";
}

#endif
