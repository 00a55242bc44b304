/* Device names and the choice of backend for a forward call (v4_backend.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v4_backend.h"

bool dsq_device_from_name(const char *s, dsq_device *out) {
    if (!s) return false;
    if (!strcmp(s, "cpu")) {
        *out = (dsq_device){DSQ_DEVICE_CPU, 0};
        return true;
    }
    if (strncmp(s, "cuda", 4)) return false;
    if (!s[4]) {
        *out = (dsq_device){DSQ_DEVICE_CUDA, 0};
        return true;
    }
    if (s[4] != ':' || !s[5]) return false;
    int idx = 0;
    for (const char *p = s + 5; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        idx = idx * 10 + (*p - '0');
        if (idx >= DSQ_MAX_CUDA_DEVICES) return false;
    }
    *out = (dsq_device){DSQ_DEVICE_CUDA, idx};
    return true;
}

const char *dsq_device_name(const dsq_device *d, char *buf, size_t cap) {
    if (d->kind == DSQ_DEVICE_CUDA)
        snprintf(buf, cap, "cuda:%d", d->index);
    else
        snprintf(buf, cap, "cpu");
    return buf;
}

dsq_status dsq__backend_for(const dsq_v4_model *m, const dsq_device *dev, const dsq__backend **out, dsq_err *err) {
    *out = &dsq__backend_cpu;
    if (dev->kind == DSQ_DEVICE_CPU) return DSQ_OK;
    DSQ_RETURN_IF(dev->kind != DSQ_DEVICE_CUDA || dev->index < 0 || dev->index >= DSQ_MAX_CUDA_DEVICES, err,
                  DSQ_ERR_ARG, "unknown device (kind %d, index %d)", (int)dev->kind, dev->index);
    /* The model is shared and const for the forward pass; its device slots are the one mutable part,
     * guarded by dev_mu. */
    dsq_v4_model *mm = (dsq_v4_model *)m;
    dsq_status st = DSQ_OK;
    pthread_mutex_lock(&mm->dev_mu);
    if (!mm->cuda[dev->index]) st = dsq__backend_cuda_open(m, dev->index, &mm->cuda[dev->index], err);
    if (st == DSQ_OK) *out = mm->cuda[dev->index];
    pthread_mutex_unlock(&mm->dev_mu);
    return st;
}

void dsq__model_devices_close(dsq_v4_model *m) {
    for (int i = 0; i < DSQ_MAX_CUDA_DEVICES; i++)
        if (m->cuda[i]) {
            m->cuda[i]->close(m->cuda[i]);
            m->cuda[i] = NULL;
        }
    pthread_mutex_destroy(&m->dev_mu);
}
