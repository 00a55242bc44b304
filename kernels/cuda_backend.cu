// The cuda backend's device side (C API: kernels/dsq_cuda.h).  Weights live on the device in their
// stored encoding (codes, scales, mins copied as they are) and are dequantized inside the kernels:
//   one to four tokens   gemv16_kernel (16 columns per lane and step, vector loads; byte-aligned encodings)
//                        or gemv_kernel (one column per lane and step, any encoding): one warp per output
//                        row, decoding in registers into up to four tokens' accumulators (no f32 copy)
//   more tokens          dequant_kernel writes a slab of rows as f32 into scratch, cublasSgemm
//                        (default math: no TF32) multiplies it by all tokens
//   release FP8-linear   fp8_linear_kernel: one warp per (row, token), per-128-column activation scales
// Every CUDA runtime and cuBLAS call and every launch is checked; errors come back as one line.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_cuda.h"
#include "dsq_cuda_decode.h"

enum { WARP = 32, GEMV_ROWS = 8, MAX_GEMV_TOK = 4, FP8_BLOCK = 128 };
static const uint64_t SLAB_FLOATS = 16ull << 20; // f32 elements of dequantized weight per cublasSgemm (64 MiB)

#define CK(call, what)                                                                                                 \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            snprintf(msg, cap, "%s: %s", what, cudaGetErrorString(e_));                                                \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)
#define CB(call, what)                                                                                                 \
    do {                                                                                                               \
        cublasStatus_t s_ = (call);                                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                             \
            snprintf(msg, cap, "%s: %s", what, cublasGetStatusString(s_));                                             \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)
// After a launch: the launch error, then (debug-friendly, cheap at these sizes) nothing more until the sync.
#define CK_LAUNCH(what) CK(cudaGetLastError(), what)

typedef dsq_cuda_wlayout wdev; // device pointers

struct dsq_cuda_weight {
    wdev w;
    void *data, *scales, *mins;
    uint64_t bytes;
};

struct dsq_cuda {
    int index;
    cudaStream_t stream;
    cublasHandle_t blas;
    float *x, *y, *wf, *sa; // scratch: inputs, outputs, dequantized slab, activation scales
    size_t x_cap, y_cap, wf_cap, sa_cap;
};

__device__ __forceinline__ float decode(const wdev &w, uint64_t r, uint64_t c) { return dsq_cu_decode(&w, r, c); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// ---- kernels ----

// y[t][i] = Σ_c W[row0+i][c]·x[t][c] for t < NT; x [NT][cols], y [NT][n_rows], one warp per row.
template <int NT>
__global__ void gemv_kernel(wdev w, uint64_t row0, uint64_t n_rows, const float *__restrict__ x,
                            float *__restrict__ y) {
    uint64_t i = (uint64_t)blockIdx.x * GEMV_ROWS + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (i >= n_rows) return;
    float acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (uint64_t c = lane; c < w.cols; c += WARP) {
        float v = decode(w, row0 + i, c);
        for (int t = 0; t < NT; t++) acc[t] += v * x[(uint64_t)t * w.cols + c];
    }
    for (int t = 0; t < NT; t++) {
        float s = warp_sum(acc[t]);
        if (lane == 0) y[(uint64_t)t * n_rows + i] = s;
    }
}

// The same with 16 columns per lane and step (dsq_cu_vec16_ok layouts): one or two vector loads of the
// codes, one scale per 16 columns, float4 loads of x; a warp reads 512 FP8 bytes per step.
template <int NT>
__global__ void gemv16_kernel(wdev w, uint64_t row0, uint64_t n_rows, const float *__restrict__ x,
                              float *__restrict__ y) {
    uint64_t i = (uint64_t)blockIdx.x * GEMV_ROWS + threadIdx.x / WARP;
    int lane = threadIdx.x % WARP;
    if (i >= n_rows) return;
    const int nb = dsq_cu_bytes16(w.enc);
    const uint8_t *row = w.data + (row0 + i) * w.row_bytes;
    float acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (uint64_t c0 = (uint64_t)lane * 16; c0 < w.cols; c0 += WARP * 16) {
        union {
            uint4 q[2];
            uint2 h;
            uint8_t b[32];
        } raw;
        const uint8_t *p = row + c0 / 16 * (uint64_t)nb;
        if (nb == 8) {
            raw.h = *(const uint2 *)p;
        } else {
            raw.q[0] = *(const uint4 *)p;
            if (nb == 32) raw.q[1] = *(const uint4 *)(p + 16);
        }
        float v[16];
        dsq_cu_decode16(&w, row0 + i, c0, raw.b, v);
        for (int t = 0; t < NT; t++) {
            const float4 *xv = (const float4 *)(x + (uint64_t)t * w.cols + c0);
            float s = 0.0f;
            for (int k = 0; k < 4; k++) {
                float4 a = xv[k];
                s += v[4 * k] * a.x + v[4 * k + 1] * a.y + v[4 * k + 2] * a.z + v[4 * k + 3] * a.w;
            }
            acc[t] += s;
        }
    }
    for (int t = 0; t < NT; t++) {
        float s = warp_sum(acc[t]);
        if (lane == 0) y[(uint64_t)t * n_rows + i] = s;
    }
}

// out[i][c] = W[row0+i][c] for i < nr.
__global__ void dequant_kernel(wdev w, uint64_t row0, uint64_t nr, float *__restrict__ out) {
    uint64_t n = nr * w.cols;
    for (uint64_t k = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (uint64_t)gridDim.x * blockDim.x)
        out[k] = decode(w, row0 + k / w.cols, k % w.cols);
}

// Release FP8-linear: y[t][i] = Σ_b sa[t][b]·Σ_{c∈b} W[row0+i][c]·q[t][c]; grid (row blocks, tokens).
__global__ void fp8_linear_kernel(wdev w, uint64_t row0, uint64_t n_rows, const float *__restrict__ q,
                                  const float *__restrict__ sa, uint64_t nb, float *__restrict__ y) {
    uint64_t i = (uint64_t)blockIdx.x * GEMV_ROWS + threadIdx.x / WARP;
    uint64_t t = blockIdx.y;
    int lane = threadIdx.x % WARP;
    if (i >= n_rows) return;
    const float *qt = q + t * w.cols, *st = sa + t * nb;
    float acc = 0.0f;
    for (uint64_t b = 0; b < nb; b++) {
        float blk = 0.0f;
        uint64_t end = (b + 1) * FP8_BLOCK < w.cols ? (b + 1) * FP8_BLOCK : w.cols;
        for (uint64_t c = b * FP8_BLOCK + lane; c < end; c += WARP) blk += decode(w, row0 + i, c) * qt[c];
        acc += st[b] * warp_sum(blk); // lane 0 holds the block's sum
    }
    if (lane == 0) y[t * n_rows + i] = acc;
}

__global__ void probe_kernel(int *p) { *p = 42; }

// ---- context ----

static int grow(float **buf, size_t *cap_elems, size_t need, char *msg, size_t cap) {
    if (need <= *cap_elems) return 0;
    size_t n = need < 4096 ? 4096 : need;
    if (*buf) CK(cudaFree(*buf), "cudaFree");
    *buf = NULL;
    *cap_elems = 0;
    CK(cudaMalloc((void **)buf, n * sizeof(float)), "cudaMalloc (scratch)");
    *cap_elems = n;
    return 0;
}

extern "C" int dsq_cuda_device_count(int *count, char *msg, size_t cap) {
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess) {
        *count = 0;
        snprintf(msg, cap, "no usable CUDA device (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
        return 1;
    }
    if (*count == 0) {
        snprintf(msg, cap, "no CUDA device present");
        return 1;
    }
    return 0;
}

extern "C" int dsq_cuda_open(int index, dsq_cuda **out, char *name, char *msg, size_t cap) {
    *out = NULL;
    name[0] = 0;
    int n = 0;
    if (dsq_cuda_device_count(&n, msg, cap)) return 1;
    if (index < 0 || index >= n) {
        snprintf(msg, cap, "only %d CUDA device%s present", n, n == 1 ? "" : "s");
        return 1;
    }
    CK(cudaSetDevice(index), "cudaSetDevice");
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
    snprintf(name, 64, "%.48s (sm_%d%d)", prop.name, prop.major, prop.minor);
    int *p = NULL;
    CK(cudaMalloc((void **)&p, sizeof(int)), "cudaMalloc (probe)");
    probe_kernel<<<1, 1>>>(p);
    cudaError_t le = cudaGetLastError();
    if (le == cudaSuccess) le = cudaDeviceSynchronize();
    cudaFree(p);
    if (le != cudaSuccess) {
        snprintf(msg, cap, "%s cannot run this build's kernels (built for CUDA_ARCH; probe launch: %s)", name,
                 cudaGetErrorString(le));
        return 1;
    }
    dsq_cuda *c = (dsq_cuda *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(msg, cap, "no host memory for the CUDA context");
        return 1;
    }
    c->index = index;
    cudaError_t e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        snprintf(msg, cap, "cudaStreamCreate: %s", cudaGetErrorString(e));
        free(c);
        return 1;
    }
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->stream);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH); // f32: no TF32
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(msg, cap, "cublasCreate: %s", cublasGetStatusString(s));
        if (c->blas) cublasDestroy(c->blas);
        cudaStreamDestroy(c->stream);
        free(c);
        return 1;
    }
    *out = c;
    return 0;
}

extern "C" void dsq_cuda_close(dsq_cuda *c) {
    if (!c) return;
    cudaSetDevice(c->index);
    cudaFree(c->x);
    cudaFree(c->y);
    cudaFree(c->wf);
    cudaFree(c->sa);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" int dsq_cuda_mem_info(dsq_cuda *c, uint64_t *free_bytes, uint64_t *total_bytes, char *msg, size_t cap) {
    size_t f = 0, t = 0;
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    CK(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
    *free_bytes = f;
    *total_bytes = t;
    return 0;
}

// ---- weights ----

static int upload_part(dsq_cuda *c, const void *host, uint64_t bytes, void **dev, char *msg, size_t cap) {
    *dev = NULL;
    if (!host || !bytes) return 0;
    CK(cudaMalloc(dev, bytes), "cudaMalloc (weight)");
    // pageable (mmap'd) source, staged by the driver; on the context's stream so the kernels that read
    // the weight are ordered after the copy, and waited for before the next part
    CK(cudaMemcpyAsync(*dev, host, bytes, cudaMemcpyHostToDevice, c->stream), "cudaMemcpyAsync (weight upload)");
    CK(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (weight upload)");
    return 0;
}

extern "C" int dsq_cuda_weight_upload(dsq_cuda *c, const dsq_cuda_wdesc *d, dsq_cuda_weight **out, char *msg,
                                      size_t cap) {
    *out = NULL;
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    dsq_cuda_weight *w = (dsq_cuda_weight *)calloc(1, sizeof *w);
    if (!w) {
        snprintf(msg, cap, "no host memory for a weight record");
        return 1;
    }
    if (upload_part(c, d->data, d->data_bytes, &w->data, msg, cap) ||
        upload_part(c, d->scales, d->scale_bytes, &w->scales, msg, cap) ||
        upload_part(c, d->mins, d->mins_bytes, &w->mins, msg, cap)) {
        dsq_cuda_weight_free(w);
        return 1;
    }
    dsq_cu_layout_init(&w->w, d->enc, d->rows, d->cols, d->row_bytes, d->block_rows, d->block_cols, d->scale_cols,
                       d->tensor_scale, (const uint8_t *)w->data, (const uint8_t *)w->scales, (const uint8_t *)w->mins);
    w->bytes = d->data_bytes + d->scale_bytes + d->mins_bytes;
    *out = w;
    return 0;
}

extern "C" void dsq_cuda_weight_free(dsq_cuda_weight *w) {
    if (!w) return;
    cudaFree(w->data);
    cudaFree(w->scales);
    cudaFree(w->mins);
    free(w);
}

extern "C" uint64_t dsq_cuda_weight_bytes(const dsq_cuda_weight *w) { return w ? w->bytes : 0; }

// ---- linear ----

static int launch_gemv(dsq_cuda *c, const wdev &w, uint64_t row0, uint64_t n_rows, int nt, const float *x, float *y,
                       char *msg, size_t cap) {
    dim3 grid((unsigned)((n_rows + GEMV_ROWS - 1) / GEMV_ROWS)), block(GEMV_ROWS * WARP);
    if (dsq_cu_vec16_ok(&w)) {
        switch (nt) {
        case 1:
            gemv16_kernel<1><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
            break;
        case 2:
            gemv16_kernel<2><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
            break;
        case 3:
            gemv16_kernel<3><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
            break;
        default:
            gemv16_kernel<4><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
            break;
        }
        CK_LAUNCH("gemv16_kernel launch");
        return 0;
    }
    switch (nt) {
    case 1:
        gemv_kernel<1><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
        break;
    case 2:
        gemv_kernel<2><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
        break;
    case 3:
        gemv_kernel<3><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
        break;
    default:
        gemv_kernel<4><<<grid, block, 0, c->stream>>>(w, row0, n_rows, x, y);
        break;
    }
    CK_LAUNCH("gemv_kernel launch");
    return 0;
}

extern "C" int dsq_cuda_linear(dsq_cuda *c, const dsq_cuda_weight *dw, uint64_t row0, uint64_t n_rows, const float *x,
                               size_t ldx, int64_t n, float *y, size_t ldy, char *msg, size_t cap) {
    const wdev &w = dw->w;
    if (n <= 0 || !n_rows) return 0;
    if (row0 > w.rows || n_rows > w.rows - row0) {
        snprintf(msg, cap, "rows %llu..%llu outside the weight's %llu", (unsigned long long)row0,
                 (unsigned long long)(row0 + n_rows), (unsigned long long)w.rows);
        return 1;
    }
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    uint64_t K = w.cols, N = (uint64_t)n;
    if (grow(&c->x, &c->x_cap, N * K, msg, cap) || grow(&c->y, &c->y_cap, N * n_rows, msg, cap)) return 1;
    CK(cudaMemcpy2DAsync(c->x, K * sizeof(float), x, ldx * sizeof(float), K * sizeof(float), N, cudaMemcpyHostToDevice,
                         c->stream),
       "cudaMemcpy2DAsync (input)");
    if (n <= MAX_GEMV_TOK) {
        if (launch_gemv(c, w, row0, n_rows, (int)n, c->x, c->y, msg, cap)) return 1;
    } else {
        uint64_t slab = SLAB_FLOATS / K ? SLAB_FLOATS / K : 1;
        if (slab > n_rows) slab = n_rows;
        if (grow(&c->wf, &c->wf_cap, slab * K, msg, cap)) return 1;
        const float one = 1.0f, zero = 0.0f;
        for (uint64_t r = 0; r < n_rows; r += slab) {
            uint64_t nr = n_rows - r < slab ? n_rows - r : slab;
            uint64_t elems = nr * K, blocks = (elems + 255) / 256;
            dequant_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, c->stream>>>(w, row0 + r, nr, c->wf);
            CK_LAUNCH("dequant_kernel launch");
            // column-major view: Yᵀ[nr × N] (ld n_rows, offset r) = Wslabᵀ · Xᵀ, Wslab row-major [nr][K]
            CB(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)N, (int)K, &one, c->wf, (int)K, c->x,
                           (int)K, &zero, c->y + r, (int)n_rows),
               "cublasSgemm");
        }
    }
    CK(cudaMemcpy2DAsync(y, ldy * sizeof(float), c->y, n_rows * sizeof(float), n_rows * sizeof(float), N,
                         cudaMemcpyDeviceToHost, c->stream),
       "cudaMemcpy2DAsync (output)");
    CK(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (linear)");
    return 0;
}

extern "C" int dsq_cuda_fp8_linear(dsq_cuda *c, const dsq_cuda_weight *dw, uint64_t row0, uint64_t n_rows,
                                   const float *q, const float *sa, int64_t n, float *y, size_t ldy, char *msg,
                                   size_t cap) {
    const wdev &w = dw->w;
    if (n <= 0 || !n_rows) return 0;
    if (row0 > w.rows || n_rows > w.rows - row0 || n > 65535) {
        snprintf(msg, cap, "rows %llu..%llu of %llu or %lld tokens out of range", (unsigned long long)row0,
                 (unsigned long long)(row0 + n_rows), (unsigned long long)w.rows, (long long)n);
        return 1;
    }
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    uint64_t K = w.cols, N = (uint64_t)n, nb = (K + FP8_BLOCK - 1) / FP8_BLOCK;
    if (grow(&c->x, &c->x_cap, N * K, msg, cap) || grow(&c->y, &c->y_cap, N * n_rows, msg, cap) ||
        grow(&c->sa, &c->sa_cap, N * nb, msg, cap))
        return 1;
    CK(cudaMemcpyAsync(c->x, q, N * K * sizeof(float), cudaMemcpyHostToDevice, c->stream), "cudaMemcpyAsync (q)");
    CK(cudaMemcpyAsync(c->sa, sa, N * nb * sizeof(float), cudaMemcpyHostToDevice, c->stream),
       "cudaMemcpyAsync (scales)");
    dim3 grid((unsigned)((n_rows + GEMV_ROWS - 1) / GEMV_ROWS), (unsigned)N), block(GEMV_ROWS * WARP);
    fp8_linear_kernel<<<grid, block, 0, c->stream>>>(w, row0, n_rows, c->x, c->sa, nb, c->y);
    CK_LAUNCH("fp8_linear_kernel launch");
    CK(cudaMemcpy2DAsync(y, ldy * sizeof(float), c->y, n_rows * sizeof(float), n_rows * sizeof(float), N,
                         cudaMemcpyDeviceToHost, c->stream),
       "cudaMemcpy2DAsync (output)");
    CK(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize (fp8 linear)");
    return 0;
}

// ---- bench/gpu.c ----

struct timer {
    cudaEvent_t a, b;
};

extern "C" int dsq_cuda_bench_copy(dsq_cuda *c, uint64_t bytes, int iters, double *seconds, char *msg, size_t cap) {
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    void *s = NULL, *d = NULL;
    cudaEvent_t a, b;
    CK(cudaMalloc(&s, bytes), "cudaMalloc (copy source)");
    cudaError_t e = cudaMalloc(&d, bytes);
    if (e != cudaSuccess) {
        cudaFree(s);
        CK(e, "cudaMalloc (copy target)");
    }
    CK(cudaMemsetAsync(s, 1, bytes, c->stream), "cudaMemsetAsync");
    CK(cudaEventCreate(&a), "cudaEventCreate");
    CK(cudaEventCreate(&b), "cudaEventCreate");
    CK(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, c->stream), "cudaMemcpyAsync (warm-up)");
    CK(cudaEventRecord(a, c->stream), "cudaEventRecord");
    for (int i = 0; i < iters; i++)
        CK(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, c->stream), "cudaMemcpyAsync (d2d)");
    CK(cudaEventRecord(b, c->stream), "cudaEventRecord");
    CK(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    *seconds = ms / 1e3 / iters;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    CK(cudaFree(s), "cudaFree");
    CK(cudaFree(d), "cudaFree");
    return 0;
}

extern "C" int dsq_cuda_bench_h2d(dsq_cuda *c, uint64_t bytes, int iters, double *seconds, char *msg, size_t cap) {
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    void *h = NULL, *d = NULL;
    cudaEvent_t a, b;
    CK(cudaMallocHost(&h, bytes), "cudaMallocHost");
    memset(h, 1, bytes);
    cudaError_t e = cudaMalloc(&d, bytes);
    if (e != cudaSuccess) {
        cudaFreeHost(h);
        CK(e, "cudaMalloc (h2d target)");
    }
    CK(cudaEventCreate(&a), "cudaEventCreate");
    CK(cudaEventCreate(&b), "cudaEventCreate");
    CK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, c->stream), "cudaMemcpyAsync (warm-up)");
    CK(cudaEventRecord(a, c->stream), "cudaEventRecord");
    for (int i = 0; i < iters; i++)
        CK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, c->stream), "cudaMemcpyAsync (h2d)");
    CK(cudaEventRecord(b, c->stream), "cudaEventRecord");
    CK(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    *seconds = ms / 1e3 / iters;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    CK(cudaFreeHost(h), "cudaFreeHost");
    CK(cudaFree(d), "cudaFree");
    return 0;
}

extern "C" int dsq_cuda_bench_gemm_bf16(dsq_cuda *c, int m, int n, int k, int iters, double *seconds, char *msg,
                                        size_t cap) {
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    void *A = NULL, *B = NULL, *C = NULL;
    CK(cudaMalloc(&A, (size_t)m * k * 2), "cudaMalloc (A)");
    CK(cudaMalloc(&B, (size_t)k * n * 2), "cudaMalloc (B)");
    CK(cudaMalloc(&C, (size_t)m * n * 4), "cudaMalloc (C)");
    CK(cudaMemsetAsync(A, 0x3c, (size_t)m * k * 2, c->stream), "cudaMemsetAsync");
    CK(cudaMemsetAsync(B, 0x3c, (size_t)k * n * 2, c->stream), "cudaMemsetAsync");
    const float one = 1.0f, zero = 0.0f;
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a), "cudaEventCreate");
    CK(cudaEventCreate(&b), "cudaEventCreate");
    for (int i = 0; i <= iters; i++) {
        if (i == 1) CK(cudaEventRecord(a, c->stream), "cudaEventRecord"); // iteration 0 warms up
        CB(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A, CUDA_R_16BF, m, B, CUDA_R_16BF, k, &zero,
                        C, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "cublasGemmEx (bf16)");
    }
    CK(cudaEventRecord(b, c->stream), "cudaEventRecord");
    CK(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    *seconds = ms / 1e3 / iters;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    CK(cudaFree(A), "cudaFree");
    CK(cudaFree(B), "cudaFree");
    CK(cudaFree(C), "cudaFree");
    return 0;
}

extern "C" int dsq_cuda_bench_gemv(dsq_cuda *c, const dsq_cuda_weight *dw, int iters, double *seconds, char *msg,
                                   size_t cap) {
    const wdev &w = dw->w;
    CK(cudaSetDevice(c->index), "cudaSetDevice");
    if (grow(&c->x, &c->x_cap, w.cols, msg, cap) || grow(&c->y, &c->y_cap, w.rows, msg, cap)) return 1;
    CK(cudaMemsetAsync(c->x, 0, w.cols * sizeof(float), c->stream), "cudaMemsetAsync");
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a), "cudaEventCreate");
    CK(cudaEventCreate(&b), "cudaEventCreate");
    if (launch_gemv(c, w, 0, w.rows, 1, c->x, c->y, msg, cap)) return 1; // warm-up
    CK(cudaEventRecord(a, c->stream), "cudaEventRecord");
    for (int i = 0; i < iters; i++)
        if (launch_gemv(c, w, 0, w.rows, 1, c->x, c->y, msg, cap)) return 1;
    CK(cudaEventRecord(b, c->stream), "cudaEventRecord");
    CK(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    *seconds = ms / 1e3 / iters;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return 0;
}
