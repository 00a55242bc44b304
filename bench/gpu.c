/* bench/gpu: the cuda backend's floors and rates on this machine's GPU (issue 10), all in one run:
 *   copy      device-to-device cudaMemcpy, GB/s counted as bytes read + bytes written
 *   h2d       pinned host → device, GB/s
 *   bf16 gemm cublasGemmEx BF16×BF16→F32, 8192³, TFLOP/s
 *   gemv      one-token dsq_cuda_linear kernel on FP8 128x128 and MXFP4 weights of V4-Flash-like shape,
 *             weight bytes / time as a fraction of the copy rate (target ≥ 0.7)
 *   prefill   dsq_cuda_linear with 512 tokens on the FP8 weight, host x/y included, as a fraction of 2×
 *             the BF16 cuBLAS rate (target ≥ 0.5)
 * Without CUDA built in or without a device it prints one SKIPPED line and exits 0 (`make bench`
 * runs every bench; a skip measures nothing).  DSQ_BENCH_GPU_SMALL=1 shrinks the sizes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"

#ifndef DSQ_HAVE_CUDA
int main(void) {
    printf("bench/gpu: SKIPPED: this dsq was built without CUDA (nothing measured)\n");
    return 0;
}
#else
#include <time.h>

#include "dsq_cuda.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A weight of (enc, rows, cols) with valid, finite codes and unit-ish scales, uploaded. */
static dsq_cuda_weight *make_weight(dsq_cuda *c, dsq_encoding enc, uint64_t rows, uint64_t cols, char *msg, size_t cap,
                                    uint64_t *bytes) {
    dsq_codec_layout L;
    if (dsq_codec_layout_of(enc, rows, cols, 0, &L, NULL)) {
        snprintf(msg, cap, "layout of encoding %d", (int)enc);
        return NULL;
    }
    uint8_t *data = malloc(L.data_bytes), *scales = malloc(L.scale_bytes ? L.scale_bytes : 1);
    if (!data || !scales) {
        snprintf(msg, cap, "no host memory for a %llu-byte weight", (unsigned long long)L.data_bytes);
        free(data), free(scales);
        return NULL;
    }
    for (uint64_t i = 0; i < L.data_bytes; i++) data[i] = (uint8_t)((i * 37u + 11u) & 0x77u); /* no NaN codes */
    memset(scales, 120, L.scale_bytes);                                                       /* UE8M0 2^-7 */
    dsq_cuda_wdesc d = {.enc = (int)enc,
                        .rows = rows,
                        .cols = cols,
                        .row_bytes = L.row_bytes,
                        .block_rows = L.block_rows,
                        .block_cols = L.block_cols,
                        .scale_cols = L.scale_cols,
                        .data = data,
                        .data_bytes = L.data_bytes,
                        .scales = scales,
                        .scale_bytes = L.scale_bytes};
    dsq_cuda_weight *w = NULL;
    int rc = dsq_cuda_weight_upload(c, &d, &w, msg, cap);
    free(data), free(scales);
    *bytes = L.data_bytes + L.scale_bytes;
    return rc ? NULL : w;
}

int main(void) {
    char msg[512], name[64];
    int n = 0;
    if (dsq_cuda_device_count(&n, msg, sizeof msg)) {
        printf("bench/gpu: SKIPPED: %s (nothing measured)\n", msg);
        return 0;
    }
    dsq_cuda *c = NULL;
    if (dsq_cuda_open(0, &c, name, msg, sizeof msg)) {
        fprintf(stderr, "bench/gpu: %s\n", msg);
        return 1;
    }
    bool small = getenv("DSQ_BENCH_GPU_SMALL") != NULL;
    uint64_t copy_bytes = small ? 64ull << 20 : 1ull << 30, h2d_bytes = small ? 32ull << 20 : 256ull << 20;
    int gemm = small ? 2048 : 8192;
    /* V4-Flash-like projection: 16384 rows × 7168 columns (a fused expert or attention matrix) */
    uint64_t rows = small ? 4096 : 16384, cols = 7168;
    double t_copy = 0, t_h2d = 0, t_gemm = 0;
    int rc = 0;
    if ((rc = dsq_cuda_bench_copy(c, copy_bytes, 20, &t_copy, msg, sizeof msg)) ||
        (rc = dsq_cuda_bench_h2d(c, h2d_bytes, 10, &t_h2d, msg, sizeof msg)) ||
        (rc = dsq_cuda_bench_gemm_bf16(c, gemm, gemm, gemm, 10, &t_gemm, msg, sizeof msg))) {
        fprintf(stderr, "bench/gpu: %s\n", msg);
        dsq_cuda_close(c);
        return 1;
    }
    double copy_gbs = 2.0 * (double)copy_bytes / t_copy / 1e9, h2d_gbs = (double)h2d_bytes / t_h2d / 1e9;
    double bf16_tflops = 2.0 * gemm * (double)gemm * gemm / t_gemm / 1e12;
    printf("device: %s\n", name);
    printf("copy d2d:        %8.1f GB/s (read + write, %llu MiB)\n", copy_gbs, (unsigned long long)(copy_bytes >> 20));
    printf("h2d pinned:      %8.1f GB/s (%llu MiB)\n", h2d_gbs, (unsigned long long)(h2d_bytes >> 20));
    printf("cuBLAS bf16:     %8.1f TFLOP/s (%d^3, f32 accumulate)\n", bf16_tflops, gemm);
    static const struct {
        dsq_encoding enc;
        const char *label;
    } ws[] = {{DSQ_ENC_FP8_B128, "fp8_128x128"}, {DSQ_ENC_MXFP4, "mxfp4"}, {DSQ_ENC_BF16, "bf16"}};
    enum { NW = sizeof ws / sizeof *ws };
    double gemv_gbs[NW] = {0}, prefill_tflops = 0;
    for (int i = 0; i < NW; i++) {
        uint64_t bytes = 0;
        double t = 0;
        dsq_cuda_weight *w = make_weight(c, ws[i].enc, rows, cols, msg, sizeof msg, &bytes);
        if (!w || dsq_cuda_bench_gemv(c, w, 50, &t, msg, sizeof msg)) {
            fprintf(stderr, "bench/gpu: gemv %s: %s\n", ws[i].label, msg);
            dsq_cuda_weight_free(w);
            dsq_cuda_close(c);
            return 1;
        }
        gemv_gbs[i] = (double)bytes / t / 1e9;
        printf("gemv %-12s %8.1f GB/s of weights (%.1f MB in %.1f us) = %.3f of copy (target >= 0.7)\n", ws[i].label,
               gemv_gbs[i], (double)bytes / 1e6, t * 1e6, gemv_gbs[i] / copy_gbs);
        if (ws[i].enc == DSQ_ENC_FP8_B128) {
            /* prefill: 512 tokens through dsq_cuda_linear, host arrays in and out */
            int64_t T = 512;
            float *x = calloc((size_t)T * cols, sizeof(float)), *y = calloc((size_t)T * rows, sizeof(float));
            int bad = !x || !y || dsq_cuda_linear(c, w, 0, rows, x, cols, T, y, rows, msg, sizeof msg);
            double t0 = now();
            for (int k = 0; k < 3 && !bad; k++)
                bad = dsq_cuda_linear(c, w, 0, rows, x, cols, T, y, rows, msg, sizeof msg);
            double tp = (now() - t0) / 3;
            free(x), free(y);
            if (bad) {
                fprintf(stderr, "bench/gpu: prefill: %s\n", msg);
                dsq_cuda_weight_free(w);
                dsq_cuda_close(c);
                return 1;
            }
            prefill_tflops = 2.0 * (double)T * rows * cols / tp / 1e12;
            printf("prefill fp8 512 tok %6.2f TFLOP/s (host x/y included) = %.3f of 2x bf16 (target >= 0.5)\n",
                   prefill_tflops, prefill_tflops / (2 * bf16_tflops));
        }
        dsq_cuda_weight_free(w);
    }
    printf("{\"device\": \"%s\", \"copy_gbs\": %.2f, \"h2d_gbs\": %.2f, \"bf16_tflops\": %.2f, "
           "\"prefill_fp8_tflops\": %.3f, \"prefill_fp8_fraction_of_2x_bf16\": %.4f",
           name, copy_gbs, h2d_gbs, bf16_tflops, prefill_tflops, prefill_tflops / (2 * bf16_tflops));
    for (int i = 0; i < NW; i++)
        printf(", \"gemv_%s_gbs\": %.2f, \"gemv_%s_fraction_of_copy\": %.4f", ws[i].label, gemv_gbs[i], ws[i].label,
               gemv_gbs[i] / copy_gbs);
    printf("}\n");
    dsq_cuda_close(c);
    return 0;
}
#endif
