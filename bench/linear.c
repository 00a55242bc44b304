/* Linear-kernel throughput on the real views of the 2-layer V4-Flash synth (see bench/forward.c):
 * MXFP4 experts, FP8 128x128 attention projections and a slice of the BF16 head, for 1 token (decode),
 * 3 tokens (an expert's share of a 128-token prefill) and 64 tokens (a prefill chunk).
 *
 * Each figure is the best of DSQ_BENCH_REPS (5) passes over the listed views, timed by the process's
 * CPU clock with one thread: on a machine shared with other jobs a kernel's CPU time moves far less
 * than its wall time (only caches and memory are shared), so before/after comparisons of a kernel hold
 * there.  Experts are read cold (32 different experts per pass, 142 MB ≫ the caches) unless
 * DSQ_BENCH_HOT=1 (one expert and 256-row slices of the FP8 projections, from the caches: the
 * kernels' compute rate). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_v4.h"
#include "v4_model.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best-of-reps pass over views[0..nv) with n_tok tokens; prints GB/s of weights and GFLOP/s. */
static int run(const char *what, bool avx2, const dsq_wview *views, int nv, int n_tok, int reps) {
    uint64_t rows = views[0].shape[0], cols = views[0].shape[1];
    float *x = dsq_malloc_aligned(sizeof(float) * cols * (size_t)n_tok);
    float *y = dsq_malloc_aligned(sizeof(float) * rows * (size_t)n_tok);
    if (!x || !y) return 1;
    for (uint64_t i = 0; i < cols * (uint64_t)n_tok; i++) x[i] = (float)((int)(i % 7) - 3) * 0.01f;
    dsq__kern k = {avx2, 1};
    double best = 1e30, bytes = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_now();
        bytes = 0;
        for (int v = 0; v < nv; v++) {
            if (dsq__linear(&k, &views[v], 0, rows, x, cols, n_tok, y, rows, NULL)) return 1;
            bytes += (double)(views[v].data_bytes + views[v].scale_bytes);
        }
        double dt = cpu_now() - t0;
        if (dt < best) best = dt;
    }
    printf("%-22s %6llux%-5llu x%-2d %3d tok: %8.2f ms  %6.2f GB/s  %6.1f GFLOP/s\n", what, (unsigned long long)rows,
           (unsigned long long)cols, nv, n_tok, best * 1e3, bytes / best / 1e9,
           2.0 * (double)rows * (double)cols * n_tok * nv / best / 1e9);
    dsq_free_aligned(x);
    dsq_free_aligned(y);
    return 0;
}

int main(void) {
    const char *dir = getenv("DSQ_BENCH_DIR") ? getenv("DSQ_BENCH_DIR") : "/tmp/dsq-bench-flash-2l";
    int reps = getenv("DSQ_BENCH_REPS") ? atoi(getenv("DSQ_BENCH_REPS")) : 5;
    bool hot = getenv("DSQ_BENCH_HOT") && atoi(getenv("DSQ_BENCH_HOT"));
    if (reps < 1) reps = 1;
    dsq_v4_model *m = NULL;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_v4_model_open(dir, &m, &e)) {
        fprintf(stderr, "bench: %s (make the model with bench/forward)\n", e.msg);
        return 1;
    }
    const v4_block_w *B = &m->blocks[0];
    enum { NE = 32 };
    dsq_wview w1[NE], w2[NE];
    for (int i = 0; i < NE; i++) {
        int ex = hot ? 0 : (i * 7) % m->cfg.n_routed_experts;
        w1[i] = B->w1[ex];
        w2[i] = B->w2[ex];
    }
    /* hot: 256-row slices of the FP8 projections (256 KB and 2 MB), passed NE times */
    dsq_wview wqb[NE], wob[NE];
    for (int i = 0; i < NE; i++) {
        wqb[i] = B->wq_b, wob[i] = B->wo_b;
        wqb[i].shape[0] = wob[i].shape[0] = 256;
        wqb[i].data_bytes = 256 * wqb[i].shape[1], wob[i].data_bytes = 256 * wob[i].shape[1];
        wqb[i].scale_bytes = 2 * wqb[i].shape[1] / 128, wob[i].scale_bytes = 2 * wob[i].shape[1] / 128;
    }
    dsq_wview head = m->head; /* the first 8192 rows: 64 MB */
    head.shape[0] = 8192;
    head.data_bytes = 8192 * head.shape[1] * 2;
    printf("linear kernels, one thread, best of %d by CPU time (%s experts); %s\n", reps, hot ? "hot" : "cold",
           m->cpu_avx2 ? (dsq__cpu_has_avx512() ? "AVX2 + AVX-512" : "AVX2") : "scalar");
    static const int toks[] = {1, 3, 64};
    int rc = 0;
    for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
        int nt = toks[ti];
        rc |= run("expert w1 (mxfp4)", m->cpu_avx2, w1, NE, nt, reps);
        rc |= run("expert w2 (mxfp4)", m->cpu_avx2, w2, NE, nt, reps);
        rc |= run("wq_b (fp8 128x128)", m->cpu_avx2, hot ? wqb : &B->wq_b, hot ? NE : 1, nt, reps);
        rc |= run("wo_b (fp8 128x128)", m->cpu_avx2, hot ? wob : &B->wo_b, hot ? NE : 1, nt, reps);
        rc |= run("head slice (bf16)", m->cpu_avx2, &head, 1, nt, reps);
    }
    dsq_v4_model_close(m);
    return rc;
}
