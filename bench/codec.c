/* Codec throughput on one core (thread CPU time): decode and GEMV (GB/s of stored weight bytes: codes + scales + mins)
 * with the AVX2 path and the scalar twin, batched GEMM, encode, and the re-encodings the converter
 * runs.  Usage: bench/codec [--rows N] [--cols N] [--seconds S] [--json] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_codec.h"

static uint64_t rng_state = 0x12345678;
static float gauss(void) {
    double s = 0;
    for (int i = 0; i < 4; i++) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        s += (double)(rng_state >> 11) * 0x1p-53;
    }
    return (float)((s - 2.0) * 1.7320508);
}

typedef struct tensor {
    dsq_qtensor_buf b;
    uint64_t bytes;
} tensor;

static int make(tensor *t, const char *name, uint64_t R, uint64_t C, const float *x) {
    dsq_encoding enc;
    int group;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_codec_parse(name, &enc, &group, &e)) return fprintf(stderr, "%s\n", e.msg), -1;
    dsq_codec_layout L;
    dsq_codec_layout_of(enc, R, C, group, &L, NULL);
    memset(t, 0, sizeof *t);
    t->b = (dsq_qtensor_buf){enc, R, C, group, dsq_malloc_aligned(L.data_bytes), L.scale_bytes ? dsq_malloc_aligned(L.scale_bytes) : NULL,
                             L.min_bytes ? dsq_malloc_aligned(L.min_bytes) : NULL, 0};
    t->bytes = L.data_bytes + L.scale_bytes + L.min_bytes;
    if (x && dsq_codec_encode(&t->b, x, 0, R, NULL, &e)) return fprintf(stderr, "%s\n", e.msg), -1;
    return 0;
}
static void unmake(tensor *t) {
    dsq_free_aligned(t->b.data);
    dsq_free_aligned(t->b.scales);
    dsq_free_aligned(t->b.mins);
}

/* CPU time of this thread: the machine is shared, wall time would count other processes. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double secs_per_run(void (*fn)(void *), void *arg, double budget) {
    fn(arg); /* warm */
    int n = 0;
    double t0 = cpu_now(), t;
    do {
        fn(arg);
        n++;
        t = cpu_now() - t0;
    } while (t < budget);
    return t / n;
}

typedef struct job {
    dsq_qtensor t;
    const float *x;
    float *y, *slab;
    dsq_isa isa;
    int nvec;
    dsq_qtensor_buf *dst;
} job;

static void run_decode(void *p) {
    job *j = p;
    dsq_codec_options o = {.isa = j->isa, .allow_nonfinite = true};
    for (uint64_t r0 = 0; r0 < j->t.rows; r0 += DSQ_CODEC_SLAB_ROWS)
        dsq_codec_decode(&j->t, r0, DSQ_CODEC_SLAB_ROWS, j->slab, &o, NULL);
}
static void run_gemv(void *p) {
    job *j = p;
    dsq_codec_dot_rows_isa(&j->t, j->x, 0, j->t.rows, j->y, j->isa);
}
static void run_gemm(void *p) {
    job *j = p;
    dsq_codec_gemm_rows_isa(&j->t, j->x, (uint64_t)j->nvec, j->t.cols, 0, j->t.rows, j->y, j->t.rows, j->isa);
}
static void run_reencode(void *p) {
    job *j = p;
    dsq_codec_options o = {.allow_nonfinite = true};
    dsq_codec_reencode(&j->t, j->dst, &o, NULL, NULL);
}

int main(int argc, char **argv) {
    uint64_t R = 4096, C = 4096;
    double budget = 0.4;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) R = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc) C = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) budget = atof(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = true;
        else return fprintf(stderr, "usage: codec [--rows N] [--cols N] [--seconds S] [--json]\n"), 2;
    }
    float *x = dsq_malloc_aligned(R * C * sizeof(float));
    float *v = dsq_malloc_aligned(8 * C * sizeof(float));
    float *y = dsq_malloc_aligned(8 * R * sizeof(float));
    float *slab = dsq_malloc_aligned(DSQ_CODEC_SLAB_ROWS * C * sizeof(float));
    for (uint64_t i = 0; i < R * C; i++) x[i] = 0.02f * gauss();
    for (uint64_t i = 0; i < 8 * C; i++) v[i] = gauss();
    bool avx = dsq_codec_best_isa() == DSQ_ISA_AVX2;
    const char *encs[] = {"fp8-128x128", "mxfp4", "int4-g32", "nvfp4", "int8-g128", "int4-g32-asym", "int2-g32-asym", "bf16", "f32"};
    if (json) printf("{\"rows\": %llu, \"cols\": %llu, \"kernels\": [", (unsigned long long)R, (unsigned long long)C);
    else
        printf("codec kernels, %llu x %llu, one thread, GB/s of stored weight bytes\n%-15s %9s %9s %9s %9s %9s\n",
               (unsigned long long)R, (unsigned long long)C, "encoding", "dec avx2", "dec scal", "gemv avx2",
               "gemv scal", "gemm8 avx2");
    for (size_t k = 0; k < sizeof encs / sizeof encs[0]; k++) {
        tensor t;
        if (make(&t, encs[k], R, C, x)) return 1;
        job j = {dsq_qtensor_view(&t.b), v, y, slab, DSQ_ISA_SCALAR, 8, NULL};
        double gb = (double)t.bytes / 1e9, r[5] = {0};
        j.isa = DSQ_ISA_SCALAR;
        r[1] = gb / secs_per_run(run_decode, &j, budget);
        r[3] = gb / secs_per_run(run_gemv, &j, budget);
        if (avx) {
            j.isa = DSQ_ISA_AVX2;
            r[0] = gb / secs_per_run(run_decode, &j, budget);
            r[2] = gb / secs_per_run(run_gemv, &j, budget);
            r[4] = gb / secs_per_run(run_gemm, &j, budget);
        }
        if (json)
            printf("%s{\"encoding\": \"%s\", \"decode_avx2\": %.3f, \"decode_scalar\": %.3f, \"gemv_avx2\": %.3f, "
                   "\"gemv_scalar\": %.3f, \"gemm8_avx2\": %.3f}",
                   k ? ", " : "", encs[k], r[0], r[1], r[2], r[3], r[4]);
        else
            printf("%-15s %9.2f %9.2f %9.2f %9.2f %9.2f\n", encs[k], r[0], r[1], r[2], r[3], r[4]);
        unmake(&t);
    }
    /* encode from f32 and the converter's re-encodings (MB/s of source bytes) */
    const char *pairs[][2] = {{"f32", "fp8-128x128"},  {"f32", "mxfp4"},         {"f32", "int4-g32"},
                              {"mxfp4", "fp8-128x128"}, {"mxfp4", "nvfp4"},       {"mxfp4", "int4-g32"},
                              {"fp8-128x128", "int4-g32"}, {"fp8-128x128", "int8-row"}, {"fp8-128x128", "fp8-128x128"}};
    if (json) printf("], \"reencode\": [");
    else printf("\nre-encode, one thread (MB/s of source bytes)\n");
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        tensor s, d;
        if (make(&s, pairs[k][0], R, C, x) || make(&d, pairs[k][1], R, C, NULL)) return 1;
        job j = {dsq_qtensor_view(&s.b), v, y, slab, DSQ_ISA_AUTO, 1, &d.b};
        double mbs = (double)s.bytes / 1e6 / secs_per_run(run_reencode, &j, budget);
        if (json) printf("%s{\"from\": \"%s\", \"to\": \"%s\", \"mb_per_s\": %.1f}", k ? ", " : "", pairs[k][0], pairs[k][1], mbs);
        else printf("  %-12s -> %-13s %9.1f\n", pairs[k][0], pairs[k][1], mbs);
        unmake(&s);
        unmake(&d);
    }
    if (json) printf("]}\n");
    dsq_free_aligned(x), dsq_free_aligned(v), dsq_free_aligned(y), dsq_free_aligned(slab);
    return 0;
}
