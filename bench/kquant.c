/* K-quant encoder quality against llama.cpp's own quantizer (issue 13 §5): for each k-type, the
 * importance-weighted relative RMS error sqrt(Σ w_c (x − x̂)² / Σ w_c x²) of our encoder
 * (dsq_kquant_encode) and of ggml_quantize_chunk with the same importance as its imatrix, on the same
 * tensors.  Without an imatrix both are measured with w = 1 (ggml then uses its own weighting rule).
 * ggml comes from libggml-base.so of @node-llama-cpp/linux-x64@3.22.1 (`make bench` installs it into
 * .cache/npm; DSQ_GGML_LIB overrides the path); dsq itself never links it.
 * Speed: "Mv/s" is millions of values encoded per second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID:
 * on a shared machine wall time measures the neighbours), one thread, for both encoders; the last
 * table sums them per type.
 * Usage: build/bench/kquant [rows]   (default 256 rows × 4096 columns per tensor) */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_kquant.h"

typedef size_t (*quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                                    int64_t n_per_row, const float *imatrix);

static uint64_t st = 0x1234;
static double unit(void) {
    uint64_t z = (st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static double gauss(void) {
    double u = unit(), v = unit();
    return sqrt(-2.0 * log(u < 1e-300 ? 1e-300 : u)) * cos(2 * M_PI * v);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Tensor kinds: weights with per-column spread (as trained linears have), heavy tails, outliers. */
static const char *fill(int kind, float *x, uint64_t rows, uint64_t cols) {
    float *colscale = malloc(sizeof(float) * cols);
    for (uint64_t c = 0; c < cols; c++) colscale[c] = (float)exp(0.5 * gauss());
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c++) {
            double v = gauss();
            if (kind == 1) v = (unit() < 0.5 ? -1 : 1) * -log(unit() + 1e-300); /* Laplace */
            if (kind == 2 && unit() < 0.002) v *= 12;                           /* sparse outliers */
            x[r * cols + c] = (float)(0.02 * v * (kind == 0 ? 1.0 : colscale[c]));
        }
    free(colscale);
    return kind == 0 ? "gaussian" : kind == 1 ? "laplace, col spread" : "gauss+outliers, col spread";
}

static double rel_rms(const float *x, const float *y, uint64_t rows, uint64_t cols, const float *w) {
    double num = 0, den = 0;
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < cols; c++) {
            double wi = w ? w[c] : 1.0, d = (double)x[r * cols + c] - y[r * cols + c];
            num += wi * d * d, den += wi * (double)x[r * cols + c] * x[r * cols + c];
        }
    return sqrt(num / den);
}

int main(int argc, char **argv) {
    uint64_t rows = argc > 1 ? strtoull(argv[1], NULL, 10) : 256, cols = 4096;
    const char *p = getenv("DSQ_GGML_LIB");
    if (!p) p = ".cache/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so";
    void *lib = dlopen(p, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "kquant bench: cannot load %s: %s\n", p, dlerror());
        return 1;
    }
    quantize_chunk_fn qc;
    *(void **)&qc = dlsym(lib, "ggml_quantize_chunk");
    typedef void (*to_float_fn)(const void *, float *, int64_t);
    typedef struct {
        const char *n;
        int64_t b, bi;
        size_t ts;
        bool q;
        to_float_fn to_float;
        void *f;
    } traits;
    const traits *(*gt)(int);
    *(void **)&gt = dlsym(lib, "ggml_get_type_traits");
    if (!qc || !gt) return 1;
    float *x = malloc(sizeof(float) * rows * cols), *y = malloc(sizeof(float) * rows * cols);
    float *imp = malloc(sizeof(float) * cols);
    uint8_t *blk = malloc(rows * cols / 256 * 210);
    static const dsq_encoding encs[] = {DSQ_ENC_Q2_K, DSQ_ENC_Q3_K, DSQ_ENC_Q4_K,
                                        DSQ_ENC_Q5_K, DSQ_ENC_Q6_K, DSQ_ENC_IQ4_XS};
    static const char *names[] = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"};
    printf("%llu x %llu per tensor; relative importance-weighted RMS error (lower is better); Mv/s = million values "
           "encoded per CPU second\n",
           (unsigned long long)rows, (unsigned long long)cols);
    printf("%-5s %-28s %-9s %10s %10s %7s %8s %9s\n", "type", "tensor", "imatrix", "dsq", "llama.cpp", "ratio", "dsq Mv/s",
           "ggml Mv/s");
    double tsum[6][2] = {{0}}, worst[6] = {0};
    for (int kind = 0; kind < 3; kind++) {
        const char *what = fill(kind, x, rows, cols);
        /* an imatrix like Σx² of real activations: log-normal per column, a few hot columns */
        for (uint64_t c = 0; c < cols; c++) imp[c] = (float)(exp(1.5 * gauss()) * (unit() < 0.01 ? 50 : 1));
        for (int i = 0; i < 6; i++)
            for (int wi = 0; wi < 2; wi++) {
                const float *w = wi ? imp : NULL;
                double t0 = now();
                if (dsq_kquant_encode(encs[i], x, rows, cols, w, false, blk, NULL) != DSQ_OK) return 1;
                double t1 = now();
                for (uint64_t b = 0; b < rows * cols / 256; b++)
                    dsq_kquant_decode_block(encs[i], blk + b * (uint64_t)dsq_kquant_block_bytes(encs[i]), y + b * 256);
                double ours = rel_rms(x, y, rows, cols, w);
                double t2 = now();
                qc(dsq_kquant_ggml_type(encs[i]), x, blk, 0, (int64_t)rows, (int64_t)cols, w);
                double t3 = now();
                gt(dsq_kquant_ggml_type(encs[i]))->to_float(blk, y, (int64_t)(rows * cols));
                double theirs = rel_rms(x, y, rows, cols, w);
                double mv = (double)(rows * cols) * 1e-6;
                printf("%-5s %-28s %-9s %10.6f %10.6f %7.4f %8.2f %9.2f\n", names[i], what, wi ? "yes" : "no", ours,
                       theirs, ours / theirs, mv / (t1 - t0), mv / (t3 - t2));
                tsum[i][0] += t1 - t0, tsum[i][1] += t3 - t2, worst[i] = ours / theirs > worst[i] ? ours / theirs : worst[i];
                fflush(stdout);
            }
    }
    printf("\nper type over the 6 tensors: encode speed (Mv/s of CPU time) and the worst error ratio\n");
    printf("%-6s %9s %9s %11s\n", "type", "dsq", "llama.cpp", "worst ratio");
    for (int i = 0; i < 6; i++)
        printf("%-6s %9.2f %9.2f %11.4f\n", names[i], 6e-6 * (double)(rows * cols) / tsum[i][0],
               6e-6 * (double)(rows * cols) / tsum[i][1], worst[i]);
    free(x), free(y), free(imp), free(blk);
    dlclose(lib);
    return 0;
}
