/* The cuda backend, host side: device choice and its one-line errors, weight descriptors for
 * kernels/dsq_cuda.h, and a cache of uploaded weights (each view copied to the device in its stored
 * encoding on first use, straight from the mmap'd source, never expanded on the host).
 *
 * In this revision the device runs the linear layers (exact and release FP8-linear) — the weight
 * bytes and nearly all the FLOPs; the block operations use the cpu backend's functions on host
 * activations (docs/architecture.md, "Backends", lists what moves to the device next).
 * Built without CUDA (no nvcc, or NO_CUDA=1) every entry fails with one line. */
#include <stdio.h>
#include <string.h>

#include "dsq_codec.h"
#include "v4_backend.h"

#ifndef DSQ_HAVE_CUDA

dsq_status dsq_device_check(const dsq_device *d, dsq_err *err) {
    if (d->kind == DSQ_DEVICE_CPU) return DSQ_OK;
    return dsq_err_set(err, DSQ_ERR_UNSUPPORTED,
                       "--device cuda:%d: this dsq was built without CUDA (nvcc was not "
                       "on the PATH, or NO_CUDA was set)",
                       d->index);
}

dsq_status dsq__backend_cuda_open(const dsq_v4_model *m, int index, dsq__backend **out, dsq_err *err) {
    (void)m;
    *out = NULL;
    dsq_device d = {DSQ_DEVICE_CUDA, index};
    return dsq_device_check(&d, err);
}

#else

#include "dsq_cuda.h"

enum { MSG_CAP = 512 };

dsq_status dsq_device_check(const dsq_device *d, dsq_err *err) {
    if (d->kind == DSQ_DEVICE_CPU) return DSQ_OK;
    char msg[MSG_CAP];
    int n = 0;
    if (dsq_cuda_device_count(&n, msg, sizeof msg))
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "--device cuda:%d: %s", d->index, msg);
    DSQ_RETURN_IF(d->index >= n, err, DSQ_ERR_UNSUPPORTED, "--device cuda:%d: only %d CUDA device%s present", d->index,
                  n, n == 1 ? "" : "s");
    return DSQ_OK;
}

/* Uploaded weights by view (open addressing, power-of-two table): the key is everything that makes a view
 * distinct, so two views starting at the same byte (a fused tensor and its first slice) never share. */
typedef struct wslot {
    const uint8_t *data, *scale;
    dsq_encoding enc;
    uint64_t rows, cols;
    dsq_cuda_weight *w;
} wslot;

static bool same_view(const wslot *s, const dsq_wview *w) {
    return s->data == w->data && s->scale == w->scale && s->enc == w->enc && s->rows == w->shape[0] &&
           s->cols == w->shape[1];
}

typedef struct cuda_be {
    dsq__backend be;
    dsq_cuda *ctx;
    char name[32];
    char device_name[64];
    pthread_mutex_t mu; /* one forward call at a time on the context and the cache */
    wslot *slots;
    size_t n_slots, used;
    uint64_t device_bytes;
} cuda_be;

static size_t hash_ptr(const void *p) {
    uint64_t v = (uint64_t)(uintptr_t)p;
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdULL;
    v ^= v >> 33;
    return (size_t)v;
}

static dsq_status desc_of(const dsq_wview *w, dsq_cuda_wdesc *d, dsq_err *err) {
    DSQ_RETURN_IF(w->rank != 2, err, DSQ_ERR_UNSUPPORTED, "%s: cuda linear needs a matrix, not rank %d", w->name,
                  w->rank);
    dsq_codec_layout L;
    DSQ_TRY(dsq_codec_layout_of(w->enc, w->shape[0], w->shape[1], w->group, &L, err));
    memset(d, 0, sizeof *d);
    d->enc = (int)w->enc;
    d->rows = w->shape[0];
    d->cols = w->shape[1];
    d->row_bytes = L.row_bytes;
    d->block_rows = L.block_rows;
    d->block_cols = L.block_cols;
    d->scale_cols = L.scale_cols;
    d->tensor_scale = w->tensor_scale;
    d->data = w->data;
    d->data_bytes = w->data_bytes;
    d->scales = w->scale;
    d->scale_bytes = w->scale ? w->scale_bytes : 0;
    d->mins = w->mins;
    d->mins_bytes = w->mins ? w->mins_bytes : 0;
    DSQ_RETURN_IF(d->data_bytes < L.data_bytes || (L.scale_bytes && d->scale_bytes < L.scale_bytes) ||
                      (L.min_bytes && d->mins_bytes < L.min_bytes),
                  err, DSQ_ERR_FORMAT, "%s: stored bytes are shorter than its encoding's layout", w->name);
    return DSQ_OK;
}

static dsq_status grow(cuda_be *cb, dsq_err *err) {
    size_t n = cb->n_slots ? 2 * cb->n_slots : 256;
    wslot *ns = dsq_calloc(n, sizeof *ns);
    if (!ns) return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for the cuda weight table (%zu slots)", n);
    for (size_t i = 0; i < cb->n_slots; i++) {
        if (!cb->slots[i].data) continue;
        size_t j = hash_ptr(cb->slots[i].data) & (n - 1);
        while (ns[j].data) j = (j + 1) & (n - 1);
        ns[j] = cb->slots[i];
    }
    dsq_free(cb->slots);
    cb->slots = ns;
    cb->n_slots = n;
    return DSQ_OK;
}

/* The device copy of w, uploaded on first use. */
static dsq_status weight_of(cuda_be *cb, const dsq_wview *w, dsq_cuda_weight **out, dsq_err *err) {
    if (cb->n_slots) {
        size_t j = hash_ptr(w->data) & (cb->n_slots - 1);
        for (; cb->slots[j].data; j = (j + 1) & (cb->n_slots - 1))
            if (same_view(&cb->slots[j], w)) {
                *out = cb->slots[j].w;
                return DSQ_OK;
            }
    }
    if (2 * (cb->used + 1) > cb->n_slots) DSQ_TRY(grow(cb, err));
    dsq_cuda_wdesc d;
    DSQ_TRY(desc_of(w, &d, err));
    char msg[MSG_CAP];
    dsq_cuda_weight *dw = NULL;
    if (dsq_cuda_weight_upload(cb->ctx, &d, &dw, msg, sizeof msg))
        return dsq_err_set(err, DSQ_ERR_IO, "%s: %s: upload of %s: %s", cb->name, cb->device_name, w->name, msg);
    size_t j = hash_ptr(w->data) & (cb->n_slots - 1);
    while (cb->slots[j].data) j = (j + 1) & (cb->n_slots - 1);
    cb->slots[j] = (wslot){w->data, w->scale, w->enc, w->shape[0], w->shape[1], dw};
    cb->used++;
    cb->device_bytes += dsq_cuda_weight_bytes(dw);
    *out = dw;
    return DSQ_OK;
}

static dsq_status cuda_linear(const dsq__run *r, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *x,
                              size_t ldx, int64_t n, float *y, size_t ldy) {
    cuda_be *cb = r->be->impl;
    if (n <= 0 || n_rows == 0) return DSQ_OK;
    pthread_mutex_lock(&cb->mu);
    dsq_cuda_weight *dw = NULL;
    char msg[MSG_CAP];
    dsq_status st = weight_of(cb, w, &dw, r->err);
    if (st == DSQ_OK && dsq_cuda_linear(cb->ctx, dw, row0, n_rows, x, ldx, n, y, ldy, msg, sizeof msg))
        st = dsq_err_set(r->err, DSQ_ERR_IO, "%s: linear %s: %s", cb->name, w->name, msg);
    pthread_mutex_unlock(&cb->mu);
    return st;
}

static dsq_status cuda_fp8_linear(const dsq__run *r, const dsq_wview *w, uint64_t row0, uint64_t n_rows, const float *q,
                                  const float *sa, int64_t n, float *y, size_t ldy) {
    cuda_be *cb = r->be->impl;
    if (n <= 0 || n_rows == 0) return DSQ_OK;
    pthread_mutex_lock(&cb->mu);
    dsq_cuda_weight *dw = NULL;
    char msg[MSG_CAP];
    dsq_status st = weight_of(cb, w, &dw, r->err);
    if (st == DSQ_OK && dsq_cuda_fp8_linear(cb->ctx, dw, row0, n_rows, q, sa, n, y, ldy, msg, sizeof msg))
        st = dsq_err_set(r->err, DSQ_ERR_IO, "%s: fp8 linear %s: %s", cb->name, w->name, msg);
    pthread_mutex_unlock(&cb->mu);
    return st;
}

static void cuda_close(dsq__backend *be) {
    if (!be) return;
    cuda_be *cb = be->impl;
    for (size_t i = 0; i < cb->n_slots; i++) dsq_cuda_weight_free(cb->slots[i].w);
    dsq_free(cb->slots);
    dsq_cuda_close(cb->ctx);
    pthread_mutex_destroy(&cb->mu);
    dsq_free(cb);
}

dsq_status dsq__backend_cuda_open(const dsq_v4_model *m, int index, dsq__backend **out, dsq_err *err) {
    (void)m;
    *out = NULL;
    dsq_device d = {DSQ_DEVICE_CUDA, index};
    DSQ_TRY(dsq_device_check(&d, err));
    cuda_be *cb = dsq_calloc(1, sizeof *cb);
    if (!cb) return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for the cuda backend");
    char msg[MSG_CAP];
    if (dsq_cuda_open(index, &cb->ctx, cb->device_name, msg, sizeof msg)) {
        dsq_free(cb);
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "--device cuda:%d: %s", index, msg);
    }
    /* weights stay resident (layer streaming to the GPU is not written yet): refuse a model that cannot
     * fit rather than fail on the N-th upload */
    uint64_t free_b = 0, total_b = 0, need = 0;
    if (m) {
        need = dsq_v4_global_bytes(m);
        for (int b = 0; b < m->n_blocks; b++) need += dsq_v4_block_bytes(m, b);
    }
    if (dsq_cuda_mem_info(cb->ctx, &free_b, &total_b, msg, sizeof msg) == 0 && need + (256u << 20) > free_b) {
        dsq_cuda_close(cb->ctx);
        dsq_free(cb);
        return dsq_err_set(err, DSQ_ERR_NOSPACE,
                           "--device cuda:%d: %s has %.2f GB free of %.2f GB; the model's weights need %.2f GB "
                           "resident (GPU layer streaming is not implemented yet)",
                           index, cb->device_name, free_b / 1e9, total_b / 1e9, need / 1e9);
    }
    pthread_mutex_init(&cb->mu, NULL);
    snprintf(cb->name, sizeof cb->name, "cuda:%d", index);
    /* the block operations stay on the cpu backend's functions until they have kernels */
    cb->be = dsq__backend_cpu;
    cb->be.name = cb->name;
    cb->be.impl = cb;
    cb->be.linear = cuda_linear;
    cb->be.fp8_linear = cuda_fp8_linear;
    cb->be.routed1 = NULL; /* the routed experts through cuda_linear */
    cb->be.linear1_multi = NULL;
    cb->be.close = cuda_close;
    *out = &cb->be;
    return DSQ_OK;
}

#endif
