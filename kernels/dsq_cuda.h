/* The CUDA side of the cuda backend (kernels/cuda_backend.cu), as a plain C API: no CUDA types leak
 * out.  lib/eval/backend_cuda.c drives it; bench/gpu.c uses the dsq_cuda_bench_* entries.
 *
 * Every function returns 0 on success, or a non-zero value after writing one line into msg[cap]
 * naming the CUDA call and its error string.  Every CUDA runtime/cuBLAS call and every kernel launch
 * is checked.  A context is used by one thread at a time (the caller serialises). */
#ifndef DSQ_CUDA_H
#define DSQ_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsq_cuda dsq_cuda;               /* device context: stream, cuBLAS handle, scratch */
typedef struct dsq_cuda_weight dsq_cuda_weight; /* a weight in device memory, in its stored encoding */

/* A weight as stored (layouts of lib/quant/dsq_codec.h); host pointers, e.g. into the mmap. */
typedef struct dsq_cuda_wdesc {
    int enc; /* dsq_encoding value (dsq_encoding.h); F32/F16/BF16/FP8_* /MXFP4/NVFP4/INT*_G* */
    uint64_t rows, cols;
    uint64_t row_bytes;              /* bytes of one row of codes */
    uint64_t block_rows, block_cols; /* scale block (0, 0: no scales) */
    uint64_t scale_cols;             /* scales per scale row */
    float tensor_scale;              /* NVFP4 */
    const void *data;
    uint64_t data_bytes;
    const void *scales;
    uint64_t scale_bytes;
    const void *mins;
    uint64_t mins_bytes;
} dsq_cuda_wdesc;

/* Device count; 0 with msg when there is none (or no driver). */
int dsq_cuda_device_count(int *count, char *msg, size_t cap);
/* Open device `index`: checks it exists, runs a probe kernel (catches an architecture this build has no
 * code for), creates a stream and a cuBLAS handle.  name[64] receives the device name. */
int dsq_cuda_open(int index, dsq_cuda **out, char *name, char *msg, size_t cap);
void dsq_cuda_close(dsq_cuda *c); /* accepts NULL */
/* Free and total device memory in bytes (cudaMemGetInfo). */
int dsq_cuda_mem_info(dsq_cuda *c, uint64_t *free_bytes, uint64_t *total_bytes, char *msg, size_t cap);

/* Copy a weight's bytes (codes, scales, mins) to the device as they are. */
int dsq_cuda_weight_upload(dsq_cuda *c, const dsq_cuda_wdesc *d, dsq_cuda_weight **out, char *msg, size_t cap);
void dsq_cuda_weight_free(dsq_cuda_weight *w); /* accepts NULL */
uint64_t dsq_cuda_weight_bytes(const dsq_cuda_weight *w);

/* y[t][i] = Σ_k W[row0+i][k]·x[t][k] for t < n, i < n_rows; host x rows ldx floats apart, host y rows
 * ldy floats apart.  n ≤ 4: dequantize-on-load GEMV kernel; else rows dequantized to f32 on the
 * device in slabs and cublasSgemm (no TF32). */
int dsq_cuda_linear(dsq_cuda *c, const dsq_cuda_weight *w, uint64_t row0, uint64_t n_rows, const float *x, size_t ldx,
                    int64_t n, float *y, size_t ldy, char *msg, size_t cap);
/* Release FP8-linear (spec §5): y[t][i] = Σ_b sa[t][b]·Σ_{k∈b} q[t][k]·W[row0+i][k], 128-wide blocks;
 * q [n][cols], sa [n][ceil(cols/128)] host arrays. */
int dsq_cuda_fp8_linear(dsq_cuda *c, const dsq_cuda_weight *w, uint64_t row0, uint64_t n_rows, const float *q,
                        const float *sa, int64_t n, float *y, size_t ldy, char *msg, size_t cap);

/* ---- bench/gpu.c ---------------------------------------------------------------------------------- */
/* Device-to-device copy of `bytes`, `iters` times: seconds per copy. */
int dsq_cuda_bench_copy(dsq_cuda *c, uint64_t bytes, int iters, double *seconds, char *msg, size_t cap);
/* Host (pinned) to device copy of `bytes`: seconds per copy. */
int dsq_cuda_bench_h2d(dsq_cuda *c, uint64_t bytes, int iters, double *seconds, char *msg, size_t cap);
/* cublasGemmEx BF16 inputs, F32 accumulate, [m×k]·[k×n]: seconds per GEMM. */
int dsq_cuda_bench_gemm_bf16(dsq_cuda *c, int m, int n, int k, int iters, double *seconds, char *msg, size_t cap);
/* One-token dsq_cuda_linear kernel time on an uploaded weight with x, y already on the device
 * (no transfers): seconds per GEMV. */
int dsq_cuda_bench_gemv(dsq_cuda *c, const dsq_cuda_weight *w, int iters, double *seconds, char *msg, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
