/* GPTQ cost at V4-Flash expert shapes (hidden 4096, expert width 2048): the factorisation of one Hessian
 * (dsq_gptq_chol_inverse_upper, the O(cols³) part) and the column-by-column quantization of one
 * matrix (dsq_gptq_quantize_factored), then the per-layer total for 256 routed experts: one 4096-column
 * factor shared by w1 and w3, one 2048-column factor for w2, three matrices quantized.  H is a
 * synthetic SPD matrix (D·K·D, K[i][j] = 0.9^|i−j|, D uneven column scales): the cost does not depend
 * on its values.  Wall seconds (OpenMP threads: OMP_NUM_THREADS) and process CPU seconds.
 * The calibration forward passes and H sums (Σ x·xᵀ) are not included.
 *
 * usage: bench/gptq [--cols N] [--rows N] [--enc NAME] [--chol-only] [--reps N]
 *   --chol-only: only dsq_gptq_chol_inverse_upper at --cols (an API older builds also have) */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_codec.h"
#include "dsq_gptq.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double *make_h(uint64_t n) {
    double *h = malloc(n * n * sizeof *h), *d = malloc(n * sizeof *d);
    if (!h || !d) exit(1);
    for (uint64_t i = 0; i < n; i++) d[i] = pow(2.0, -3 + 5.0 * (double)((i * 37) % n) / (double)n);
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j < n; j++) h[i * n + j] = d[i] * d[j] * pow(0.9, fabs((double)i - (double)j));
    free(d);
    return h;
}

typedef struct timing {
    double wall, cpu;
} timing;

static timing chol(uint64_t n, int reps) {
    double *h = make_h(n), *a = malloc(n * n * sizeof *a);
    timing best = {1e30, 1e30};
    for (int r = 0; r < reps; r++) {
        memcpy(a, h, n * n * sizeof *a);
        double w0 = omp_get_wtime(), c0 = cpu_now();
        dsq_err e = DSQ_ERR_INIT;
        if (dsq_gptq_chol_inverse_upper(a, n, &e) != DSQ_OK) fprintf(stderr, "%s\n", e.msg), exit(1);
        double w = omp_get_wtime() - w0, c = cpu_now() - c0;
        if (w < best.wall) best.wall = w, best.cpu = c;
    }
    free(h), free(a);
    return best;
}

#ifndef DSQ_BENCH_CHOL_ONLY
/* factor of a cols-column H, then one [rows][cols] matrix quantized from it */
static void matrix(uint64_t rows, uint64_t cols, dsq_encoding enc, int group, timing *fac, timing *q) {
    double *h = make_h(cols);
    float *w = malloc(rows * cols * sizeof *w);
    uint64_t s = 7;
    for (uint64_t i = 0; i < rows * cols; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        w[i] = (float)(((double)(s >> 11) * 0x1p-53 - 0.5) * 0.04);
    }
    dsq_gptq_options o;
    dsq_gptq_options_default(&o);
    dsq_err e = DSQ_ERR_INIT;
    dsq_gptq_factor *f = NULL;
    double w0 = omp_get_wtime(), c0 = cpu_now();
    if (dsq_gptq_factor_create(&o, h, cols, 4 * cols, &f, &e) != DSQ_OK) fprintf(stderr, "%s\n", e.msg), exit(1);
    fac->wall = omp_get_wtime() - w0, fac->cpu = cpu_now() - c0;
    dsq_codec_layout l;
    dsq_codec_layout_of(enc, rows, cols, group, &l, NULL);
    uint8_t *mem = calloc(1, (size_t)(l.data_bytes + l.scale_bytes + l.min_bytes + 1));
    dsq_qtensor_buf b = {enc, rows, cols, group, mem, l.scale_bytes ? mem + l.data_bytes : NULL,
                         l.min_bytes ? mem + l.data_bytes + l.scale_bytes : NULL, 0};
    w0 = omp_get_wtime(), c0 = cpu_now();
    if (dsq_gptq_quantize_factored(&o, f, w, &b, &e) != DSQ_OK) fprintf(stderr, "%s\n", e.msg), exit(1);
    q->wall = omp_get_wtime() - w0, q->cpu = cpu_now() - c0;
    dsq_gptq_factor_free(f);
    free(h), free(w), free(mem);
}
#endif

int main(int argc, char **argv) {
    uint64_t cols = 4096, rows = 2048;
    const char *encname = "q4_k";
    int chol_only = 0, reps = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cols") && i + 1 < argc) cols = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--enc") && i + 1 < argc) encname = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chol-only")) chol_only = 1;
        else return fprintf(stderr, "usage: bench/gptq [--cols N] [--rows N] [--enc NAME] [--chol-only] [--reps N]\n"), 2;
    }
    if (cols < 1 || cols > 65536 || rows < 1 || rows > 65536 || reps < 1) return fprintf(stderr, "bad size\n"), 2;
    int th = omp_get_max_threads();
    if (chol_only) {
        timing t = chol(cols, reps);
        printf("chol_inverse_upper %llu: %.2f s wall, %.2f s CPU (%d threads)\n", (unsigned long long)cols, t.wall, t.cpu,
               th);
        return 0;
    }
#ifdef DSQ_BENCH_CHOL_ONLY
    return fprintf(stderr, "this build has --chol-only only\n"), 2;
#else
    dsq_encoding enc;
    int group;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_codec_parse(encname, &enc, &group, &e) != DSQ_OK) return fprintf(stderr, "%s\n", e.msg), 2;
    timing f1, q1, f2, q2;
    matrix(rows, cols, enc, group, &f1, &q1);      /* w1 (w3 alike): [2048][4096] */
    matrix(cols, rows, enc, group, &f2, &q2);      /* w2: [4096][2048] */
    printf("%d threads, %s\n", th, encname);
    printf("factor %5llu cols: %7.2f s wall %7.2f s CPU\n", (unsigned long long)cols, f1.wall, f1.cpu);
    printf("quantize [%llu][%llu]: %7.2f s wall %7.2f s CPU\n", (unsigned long long)rows, (unsigned long long)cols, q1.wall,
           q1.cpu);
    printf("factor %5llu cols: %7.2f s wall %7.2f s CPU\n", (unsigned long long)rows, f2.wall, f2.cpu);
    printf("quantize [%llu][%llu]: %7.2f s wall %7.2f s CPU\n", (unsigned long long)cols, (unsigned long long)rows, q2.wall,
           q2.cpu);
    double ew = f1.wall + 2 * q1.wall + f2.wall + q2.wall, ec = f1.cpu + 2 * q1.cpu + f2.cpu + q2.cpu;
    printf("per expert (w1/w3 share a factor): %.2f s wall %.2f s CPU; 256 experts: %.0f s wall %.0f s CPU per layer\n",
           ew, ec, 256 * ew, 256 * ec);
    printf("unshared (w1 and w3 each factored): %.0f s wall per layer\n", 256 * (ew + f1.wall));
    return 0;
#endif
}
