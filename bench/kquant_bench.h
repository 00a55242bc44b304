/* Shared by bench/kquant_real.c and bench/kquant_convert.c: CPU-time clock, the seeded uniform and
 * log-normal importance both benches draw, the source checkpoint (argv[1], or the trained tiny model)
 * and the tensor list (argv, or the first experts' w1/w3). */
#ifndef DSQ_BENCH_KQUANT_BENCH_H
#define DSQ_BENCH_KQUANT_BENCH_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dsq_kquant.h"
#include "dsq_wsrc.h"

/* CPU seconds of the calling thread */
static inline double kb_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t kb_rs = 99;
/* uniform in (0, 1), a fixed sequence per process */
static inline double kb_unit(void) {
    kb_rs = kb_rs * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(kb_rs >> 11) + 0.5) * 0x1p-53;
}

/* log-normal importance per column (sigma 1.5), as bench/kquant */
static inline void kb_importance(float *imp, uint64_t cols) {
    for (uint64_t c = 0; c < cols; c++) imp[c] = (float)exp(1.5 * sqrt(-2.0 * log(kb_unit())) * cos(2 * M_PI * kb_unit()));
}

/* The checkpoint to read: argv[1], else $DSQ_SHARED (default ../shared)/models/v4-tiny-trained in buf. */
static inline const char *kb_source(int argc, char **argv, char *buf, size_t n) {
    if (argc > 1) return argv[1];
    const char *shared = getenv("DSQ_SHARED") ? getenv("DSQ_SHARED") : "../shared";
    snprintf(buf, n, "%s/models/v4-tiny-trained", shared);
    return buf;
}

enum { KB_MAX_NAMES = 64, KB_NAME = 128 };
/* The tensors to run: argv[first..] when given, else layers.L.ffn.experts.E.w1/w3 (L < 2, E < 4) that
 * ws holds as matrices of whole k-quant super-blocks.  Returns how many. */
static inline int kb_names(dsq_wsrc *ws, int argc, char **argv, int first, char names[KB_MAX_NAMES][KB_NAME]) {
    int nn = 0;
    if (argc > first) {
        for (int a = first; a < argc && nn < KB_MAX_NAMES; a++) snprintf(names[nn++], KB_NAME, "%s", argv[a]);
        return nn;
    }
    for (int l = 0; l < 2; l++)
        for (int e = 0; e < 4; e++)
            for (int m = 1; m <= 3; m += 2) {
                dsq_wview v;
                snprintf(names[nn], KB_NAME, "layers.%d.ffn.experts.%d.w%d.weight", l, e, m);
                if (ws->get(ws, names[nn], &v, NULL) == DSQ_OK && v.rank == 2 && v.shape[1] % DSQ_KQ_BLOCK == 0) nn++;
            }
    return nn;
}

#endif
