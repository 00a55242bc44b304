/* Allocation and fault injection.  Counters are process-global on purpose: they are a test hook,
 * not library state (STYLE.md §10), and are atomic so OpenMP regions may allocate. */
#include "dsq_core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long fault_countdown[DSQ_FAULT_COUNT];

void dsq_fault_set(dsq_fault kind, long nth) {
    if (kind >= 0 && kind < DSQ_FAULT_COUNT) atomic_store(&fault_countdown[kind], nth);
}

bool dsq__fault_hit(dsq_fault kind) {
    long v = atomic_load(&fault_countdown[kind]);
    if (v <= 0) return false;
    v = atomic_fetch_sub(&fault_countdown[kind], 1);
    return v == 1;
}

void *dsq_malloc(size_t n) {
    if (dsq__fault_hit(DSQ_FAULT_MALLOC)) return NULL;
    return malloc(n ? n : 1);
}
void *dsq_calloc(size_t count, size_t size) {
    if (dsq__fault_hit(DSQ_FAULT_MALLOC)) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}
void *dsq_realloc(void *p, size_t n) {
    if (dsq__fault_hit(DSQ_FAULT_MALLOC)) return NULL;
    return realloc(p, n ? n : 1);
}
void dsq_free(void *p) { free(p); }

char *dsq_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = dsq_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void *dsq_malloc_aligned(size_t n) {
    if (dsq__fault_hit(DSQ_FAULT_MALLOC)) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) return NULL;
    return p;
}
void dsq_free_aligned(void *p) { free(p); }
