/* Weight source over a safetensors checkpoint (dsq_wsrc.h).  FP8 weights are paired with their
 * `.scale` tensor, packed-FP4 I8 weights with their UE8M0 `.scale`; the shapes of the pair are
 * checked against each other (spec §2.4, §8.37). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_modelopt.h"
#include "dsq_safetensors.h"
#include "dsq_wsrc.h"

bool dsq_wview_elements(const dsq_wview *v, uint64_t *out) {
    uint64_t n = 1;
    for (int i = 0; i < v->rank; i++)
        if (!dsq_mul_u64(n, v->shape[i], &n)) return false;
    *out = n;
    return true;
}

void dsq_wsrc_close(dsq_wsrc *s) {
    if (s && s->close) s->close(s);
}

/* STEM.weight with `suffix` in place of ".weight" (sname holds DSQ_ST_MAX_NAME + 16 bytes). */
static bool companion(const char *name, const char *suffix, char *sname) {
    size_t len = strlen(name), k = strlen(suffix);
    if (len < 7 || len - 7 + k >= DSQ_ST_MAX_NAME + 16) return false;
    memcpy(sname, name, len - 7);
    memcpy(sname + len - 7, suffix, k + 1);
    return true;
}

/* One F32 scalar (shape [], as ModelOpt writes it) that must be finite and positive. */
static dsq_status modelopt_scalar(const dsq_wsrc *s, const char *sname, const dsq_st_tensor *t, float *out,
                                  dsq_err *err) {
    DSQ_RETURN_IF(!t, err, DSQ_ERR_MISSING, "%s: tensor %s is missing", s->path, sname);
    DSQ_RETURN_IF(t->dtype != DSQ_DTYPE_F32, err, DSQ_ERR_DTYPE, "%s: %s: dtype %s, want F32", s->path, sname,
                  dsq_dtype_name(t->dtype));
    DSQ_RETURN_IF(t->n_bytes != 4 || t->rank != 0 || !t->data, err, DSQ_ERR_SHAPE, "%s: %s: want an F32 scalar of shape []",
                  s->path, sname);
    float x;
    memcpy(&x, t->data, 4);
    DSQ_RETURN_IF(!isfinite(x), err, DSQ_ERR_NONFINITE, "%s: %s: global scale is NaN or infinite", s->path, sname);
    DSQ_RETURN_IF(!(x > 0), err, DSQ_ERR_RANGE, "%s: %s: global scale %g is not positive", s->path, sname, (double)x);
    *out = x;
    return DSQ_OK;
}

/* ModelOpt NVFP4 (dsq_modelopt.h): U8 [rows, cols/2] codes, F8_E4M3 weight_scale [rows, cols/16],
 * F32 weight_scale_2 (the tensor scale) → DSQ_ENC_NVFP4, the same bytes. */
static dsq_status modelopt_get(const dsq_wsrc *s, const char *name, const dsq_st_tensor *t, dsq_wview *v,
                               dsq_err *err) {
    const dsq_st *st = s->impl;
    char sname[DSQ_ST_MAX_NAME + 16];
    DSQ_RETURN_IF(!companion(name, ".weight_scale", sname), err, DSQ_ERR_RANGE, "%s: %s: name too long", s->path,
                  name);
    const dsq_st_tensor *sc = dsq_st_find(st, sname);
    DSQ_RETURN_IF(!sc, err, DSQ_ERR_MISSING, "%s: %s: a U8 (NVFP4) weight needs %s, which is missing", s->path, name,
                  sname);
    uint64_t rows = t->shape[0], cols = 0;
    DSQ_RETURN_IF(!dsq_mul_u64(t->shape[1], 2, &cols), err, DSQ_ERR_OVERFLOW, "%s: %s: too wide", s->path, name);
    DSQ_RETURN_IF(sc->dtype != DSQ_DTYPE_F8_E4M3, err, DSQ_ERR_DTYPE, "%s: %s: dtype %s, want F8_E4M3", s->path, sname,
                  dsq_dtype_name(sc->dtype));
    DSQ_RETURN_IF(sc->rank != 2 || (!sc->data && sc->n_bytes) || cols % DSQ_MODELOPT_GROUP != 0 ||
                      sc->shape[0] != rows || sc->shape[1] != cols / DSQ_MODELOPT_GROUP,
                  err, DSQ_ERR_SHAPE, "%s: %s: an NVFP4 weight [%llu, %llu bytes] needs F8_E4M3 scales [%llu, %llu]",
                  s->path, sname, (unsigned long long)rows, (unsigned long long)t->shape[1], (unsigned long long)rows,
                  (unsigned long long)(cols / DSQ_MODELOPT_GROUP));
    char gname[DSQ_ST_MAX_NAME + 16];
    companion(name, ".weight_scale_2", gname);
    float ts = 0;
    DSQ_TRY(modelopt_scalar(s, gname, dsq_st_find(st, gname), &ts, err));
    companion(name, ".input_scale", gname);
    const dsq_st_tensor *in = dsq_st_find(st, gname);
    float unused;
    if (in) DSQ_TRY(modelopt_scalar(s, gname, in, &unused, err));
    v->enc = DSQ_ENC_NVFP4;
    v->shape[1] = cols;
    v->scale = sc->data;
    v->scale_bytes = sc->n_bytes;
    v->tensor_scale = ts;
    return DSQ_OK;
}

static dsq_status st_get(const dsq_wsrc *s, const char *name, dsq_wview *v, dsq_err *err) {
    const dsq_st *st = s->impl;
    memset(v, 0, sizeof *v);
    const dsq_st_tensor *t = dsq_st_find(st, name);
    if (!t) return dsq_err_set(err, DSQ_ERR_MISSING, "%s: tensor %s is missing", s->path, name);
    DSQ_RETURN_IF(t->rank > DSQ_WVIEW_MAX_RANK, err, DSQ_ERR_SHAPE, "%s: %s: rank %d is too high", s->path, name,
                  t->rank);
    DSQ_RETURN_IF(!t->data && t->n_bytes > 0, err, DSQ_ERR_STATE, "%s: %s: no mapped data", s->path, name);
    v->name = t->name;
    v->rank = t->rank;
    for (int i = 0; i < t->rank; i++) v->shape[i] = t->shape[i];
    v->data = t->data;
    v->data_bytes = t->n_bytes;
    switch (t->dtype) {
    case DSQ_DTYPE_F32:
        v->enc = DSQ_ENC_F32;
        return DSQ_OK;
    case DSQ_DTYPE_BF16:
        v->enc = DSQ_ENC_BF16;
        return DSQ_OK;
    case DSQ_DTYPE_I64:
        v->enc = DSQ_ENC_I64;
        return DSQ_OK;
    case DSQ_DTYPE_I32:
        v->enc = DSQ_ENC_I32;
        return DSQ_OK;
    case DSQ_DTYPE_F8_E4M3:
    case DSQ_DTYPE_I8:
    case DSQ_DTYPE_U8:
        break;
    default:
        return dsq_err_set(err, DSQ_ERR_DTYPE, "%s: %s: dtype %s is not a weight encoding", s->path, name,
                           dsq_dtype_name(t->dtype));
    }
    /* quantized: needs NAME.scale where NAME ends in .weight */
    size_t len = strlen(name);
    DSQ_RETURN_IF(t->rank != 2 || len < 7 || strcmp(name + len - 7, ".weight") != 0, err, DSQ_ERR_DTYPE,
                  "%s: %s: %s tensor is not a 2-D .weight", s->path, name, dsq_dtype_name(t->dtype));
    if (t->dtype == DSQ_DTYPE_U8) return modelopt_get(s, name, t, v, err);
    char sname[DSQ_ST_MAX_NAME + 8];
    DSQ_RETURN_IF(len - 7 + 7 >= sizeof sname, err, DSQ_ERR_RANGE, "%s: %s: name too long", s->path, name);
    memcpy(sname, name, len - 7);
    memcpy(sname + len - 7, ".scale", 7);
    const dsq_st_tensor *sc = dsq_st_find(st, sname);
    DSQ_RETURN_IF(!sc, err, DSQ_ERR_MISSING, "%s: %s: scale tensor %s is missing", s->path, name, sname);
    DSQ_RETURN_IF(sc->rank != 2 || (!sc->data && sc->n_bytes), err, DSQ_ERR_SHAPE, "%s: %s: must be 2-D", s->path,
                  sname);
    v->scale = sc->data;
    v->scale_bytes = sc->n_bytes;
    uint64_t rows = t->shape[0], cols = t->shape[1];
    if (t->dtype == DSQ_DTYPE_F8_E4M3) {
        DSQ_RETURN_IF(sc->dtype != DSQ_DTYPE_F8_E8M0 && sc->dtype != DSQ_DTYPE_F32, err, DSQ_ERR_DTYPE,
                      "%s: %s: dtype %s, want F8_E8M0 or F32", s->path, sname, dsq_dtype_name(sc->dtype));
        DSQ_RETURN_IF(sc->shape[0] != dsq_ceil_div(rows, 128) || sc->shape[1] != dsq_ceil_div(cols, 128), err,
                      DSQ_ERR_SHAPE, "%s: %s: shape [%llu, %llu] does not give 128x128 blocks of [%llu, %llu]", s->path,
                      sname, (unsigned long long)sc->shape[0], (unsigned long long)sc->shape[1],
                      (unsigned long long)rows, (unsigned long long)cols);
        v->enc = sc->dtype == DSQ_DTYPE_F8_E8M0 ? DSQ_ENC_FP8_B128 : DSQ_ENC_FP8_B128_F32;
        return DSQ_OK;
    }
    /* I8: packed e2m1, [rows, cols/2] bytes with UE8M0 [rows, cols/32] (spec §2.3, §8.9) */
    uint64_t lcols = 0;
    DSQ_RETURN_IF(!dsq_mul_u64(cols, 2, &lcols), err, DSQ_ERR_OVERFLOW, "%s: %s: too wide", s->path, name);
    DSQ_RETURN_IF(
        sc->dtype != DSQ_DTYPE_F8_E8M0 || sc->shape[0] != rows || lcols % 32 != 0 || sc->shape[1] != lcols / 32, err,
        DSQ_ERR_SHAPE, "%s: %s: an FP4 weight [%llu, %llu bytes] needs F8_E8M0 scales [%llu, %llu]", s->path, sname,
        (unsigned long long)rows, (unsigned long long)cols, (unsigned long long)rows, (unsigned long long)(lcols / 32));
    v->enc = DSQ_ENC_MXFP4;
    v->shape[1] = lcols;
    return DSQ_OK;
}

/* The view's tensor and, for quantized weights, its .scale tensor. */
static void tensors_of(const dsq_wsrc *s, const dsq_wview *v, const dsq_st_tensor *out[2]) {
    out[0] = dsq_st_find(s->impl, v->name);
    out[1] = NULL;
    size_t len = strlen(v->name);
    if (!v->scale || len < 7 || len - 7 + 7 >= DSQ_ST_MAX_NAME) return;
    char sname[DSQ_ST_MAX_NAME + 16];
    if (companion(v->name, v->enc == DSQ_ENC_NVFP4 ? ".weight_scale" : ".scale", sname))
        out[1] = dsq_st_find(s->impl, sname);
}

static void st_prefetch(const dsq_wsrc *s, const dsq_wview *v) {
    const dsq_st_tensor *t[2];
    tensors_of(s, v, t);
    for (int i = 0; i < 2; i++)
        if (t[i]) dsq_st_prefetch(s->impl, t[i]);
}

static void st_release(const dsq_wsrc *s, const dsq_wview *v) {
    const dsq_st_tensor *t[2];
    tensors_of(s, v, t);
    for (int i = 0; i < 2; i++)
        if (t[i]) dsq_st_release(s->impl, t[i]);
}

static void st_close(dsq_wsrc *s) {
    dsq_st_close(s->impl);
    dsq_free(s);
}

dsq_status dsq_wsrc_open_safetensors(const char *path, dsq_wsrc **out, dsq_err *err) {
    *out = NULL;
    dsq_st *st = NULL;
    DSQ_TRY(dsq_st_open(path, NULL, &st, err));
    /* a ModelOpt checkpoint announces itself; a malformed announcement is refused up front */
    dsq_modelopt_qcfg q;
    bool modelopt = false;
    dsq_status qs = dsq_modelopt_qcfg_load(dsq_st_dir(st), &modelopt, &q, err);
    if (qs != DSQ_OK) {
        dsq_st_close(st);
        return qs;
    }
    dsq_wsrc *s = dsq_calloc(1, sizeof *s);
    if (!s) {
        dsq_st_close(st);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
    }
    s->impl = st;
    s->path = dsq_st_dir(st);
    s->get = st_get;
    s->prefetch = st_prefetch;
    s->release = st_release;
    s->close = st_close;
    *out = s;
    return DSQ_OK;
}
