/* Codec descriptors: the encoding table, layouts with checked sizes, names, validation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "dsq_cpu.h"
#include "dsq_kquant.h"

/* One row per dsq_encoding value (dsq_codec.h has the same table in prose). */
static const dsq__codec_info infos[] = {
    {DSQ_ENC_F32, "f32", DSQ__K_F32, 32, 0, 0, DSQ__SC_NONE, false},
    {DSQ_ENC_F16, "f16", DSQ__K_F16, 16, 0, 0, DSQ__SC_NONE, false},
    {DSQ_ENC_BF16, "bf16", DSQ__K_BF16, 16, 0, 0, DSQ__SC_NONE, false},
    {DSQ_ENC_FP8_B128, "fp8-128x128", DSQ__K_FP8, 8, 128, 128, DSQ__SC_E8M0, false},
    {DSQ_ENC_FP8_B128_F32, "fp8-128x128-f32", DSQ__K_FP8, 8, 128, 128, DSQ__SC_F32, false},
    {DSQ_ENC_FP8_R128, "fp8-1x128", DSQ__K_FP8, 8, 1, 128, DSQ__SC_E8M0, false},
    {DSQ_ENC_FP8_ROW, "fp8-row", DSQ__K_FP8, 8, 1, DSQ__BC_ROW, DSQ__SC_F32, false},
    {DSQ_ENC_FP8_R128_F32, "fp8-1x128-f32", DSQ__K_FP8, 8, 1, 128, DSQ__SC_F32, false},
    {DSQ_ENC_FP8_ROW_E8M0, "fp8-row-e8m0", DSQ__K_FP8, 8, 1, DSQ__BC_ROW, DSQ__SC_E8M0, false},
    {DSQ_ENC_MXFP4, "mxfp4", DSQ__K_MXFP4, 4, 1, DSQ_FP4_BLOCK, DSQ__SC_E8M0, false},
    {DSQ_ENC_NVFP4, "nvfp4", DSQ__K_NVFP4, 4, 1, DSQ_NVFP4_BLOCK, DSQ__SC_E4M3, false},
    {DSQ_ENC_INT8_ROW, "int8-row", DSQ__K_INT8, 8, 1, DSQ__BC_ROW, DSQ__SC_F16, false},
    {DSQ_ENC_INT8_G, "int8", DSQ__K_INT8, 8, 1, DSQ__BC_GROUP, DSQ__SC_F16, false},
    {DSQ_ENC_INT4_G, "int4", DSQ__K_INT4, 4, 1, DSQ__BC_GROUP, DSQ__SC_F16, false},
    {DSQ_ENC_INT4_G_ASYM, "int4", DSQ__K_INT4A, 4, 1, DSQ__BC_GROUP, DSQ__SC_F16, true},
    {DSQ_ENC_INT2_G_ASYM, "int2", DSQ__K_INT2A, 2, 1, DSQ__BC_GROUP, DSQ__SC_F16, true},
    {DSQ_ENC_I64, "i64", DSQ__K_RAW, 64, 0, 0, DSQ__SC_NONE, false},
    {DSQ_ENC_I32, "i32", DSQ__K_RAW, 32, 0, 0, DSQ__SC_NONE, false},
    /* k-quants: bits is nominal; rows are cols/256 blocks (dsq_kquant_block_bytes) */
    {DSQ_ENC_Q2_K, "q2_k", DSQ__K_KQUANT, 2, 0, DSQ_KQ_BLOCK, DSQ__SC_NONE, false},
    {DSQ_ENC_Q3_K, "q3_k", DSQ__K_KQUANT, 3, 0, DSQ_KQ_BLOCK, DSQ__SC_NONE, false},
    {DSQ_ENC_Q4_K, "q4_k", DSQ__K_KQUANT, 4, 0, DSQ_KQ_BLOCK, DSQ__SC_NONE, false},
    {DSQ_ENC_Q5_K, "q5_k", DSQ__K_KQUANT, 5, 0, DSQ_KQ_BLOCK, DSQ__SC_NONE, false},
    {DSQ_ENC_Q6_K, "q6_k", DSQ__K_KQUANT, 6, 0, DSQ_KQ_BLOCK, DSQ__SC_NONE, false},
    {DSQ_ENC_IQ4_XS, "iq4_xs", DSQ__K_KQUANT, 4, 0, DSQ_KQ_BLOCK, DSQ__SC_NONE, false},
};

const dsq__codec_info *dsq__codec_info_of(dsq_encoding enc) {
    for (size_t i = 0; i < sizeof infos / sizeof infos[0]; i++)
        if (infos[i].enc == enc) return &infos[i];
    return NULL;
}

bool dsq_codec_known(dsq_encoding enc) { return dsq__codec_info_of(enc) != NULL; }

bool dsq_codec_is_float(dsq_encoding enc) {
    const dsq__codec_info *in = dsq__codec_info_of(enc);
    return in && in->kind != DSQ__K_RAW;
}

static bool group_allowed(int g) { return g == 16 || g == 32 || g == 64 || g == 128 || g == 256; }

static int scale_size(dsq__scale_kind k) {
    switch (k) {
    case DSQ__SC_E8M0:
    case DSQ__SC_E4M3: return 1;
    case DSQ__SC_F16: return 2;
    case DSQ__SC_F32: return 4;
    default: return 0;
    }
}

dsq_status dsq_codec_layout_of(dsq_encoding enc, uint64_t rows, uint64_t cols, int group,
                               dsq_codec_layout *out, dsq_err *err) {
    const dsq__codec_info *in = dsq__codec_info_of(enc);
    DSQ_RETURN_IF(!in, err, DSQ_ERR_DTYPE, "unknown encoding %d", (int)enc);
    dsq_codec_layout L;
    memset(&L, 0, sizeof L);
    L.bits = in->bits;
    if (in->block_cols == DSQ__BC_GROUP) {
        DSQ_RETURN_IF(!group_allowed(group), err, DSQ_ERR_ARG,
                      "encoding %s needs a group of 16, 32, 64, 128 or 256 (got %d)", in->name, group);
    } else {
        int natural = in->block_cols > 0 ? in->block_cols : 0;
        DSQ_RETURN_IF(group != 0 && group != natural, err, DSQ_ERR_ARG,
                      "encoding %s has no group parameter (got %d)", in->name, group);
    }
    uint64_t bits_row;
    if (in->kind == DSQ__K_KQUANT) {
        DSQ_RETURN_IF(cols % DSQ_KQ_BLOCK != 0, err, DSQ_ERR_SHAPE,
                      "encoding %s needs a multiple of %d columns (got %llu)", in->name, DSQ_KQ_BLOCK,
                      (unsigned long long)cols);
        DSQ_RETURN_IF(!dsq_mul_u64(cols / DSQ_KQ_BLOCK, (uint64_t)dsq_kquant_block_bytes(enc), &L.row_bytes), err,
                      DSQ_ERR_OVERFLOW, "row of %llu columns overflows", (unsigned long long)cols);
    } else {
        DSQ_RETURN_IF(!dsq_mul_u64(cols, (uint64_t)in->bits, &bits_row) || !dsq_add_u64(bits_row, 7, &bits_row), err,
                      DSQ_ERR_OVERFLOW, "row of %llu columns overflows", (unsigned long long)cols);
        L.row_bytes = bits_row / 8;
    }
    DSQ_RETURN_IF(!dsq_mul_u64(rows, L.row_bytes, &L.data_bytes), err, DSQ_ERR_OVERFLOW,
                  "%llu x %llu tensor overflows", (unsigned long long)rows, (unsigned long long)cols);
    if (in->scale != DSQ__SC_NONE) {
        L.block_rows = (uint64_t)in->block_rows;
        L.block_cols = in->block_cols == DSQ__BC_GROUP ? (uint64_t)group
                       : in->block_cols == DSQ__BC_ROW ? cols
                                                       : (uint64_t)in->block_cols;
        L.scale_rows = dsq_ceil_div(rows, L.block_rows);
        L.scale_cols = L.block_cols ? dsq_ceil_div(cols, L.block_cols) : 0;
        L.scale_size = scale_size(in->scale);
        uint64_t n;
        DSQ_RETURN_IF(!dsq_mul_u64(L.scale_rows, L.scale_cols, &n) ||
                          !dsq_mul_u64(n, (uint64_t)L.scale_size, &L.scale_bytes),
                      err, DSQ_ERR_OVERFLOW, "scale tensor overflows");
        if (in->mins) {
            L.min_size = 2;
            DSQ_RETURN_IF(!dsq_mul_u64(n, 2, &L.min_bytes), err, DSQ_ERR_OVERFLOW, "min tensor overflows");
        }
    }
    if (out) *out = L;
    return DSQ_OK;
}

const char *dsq_codec_name(dsq_encoding enc, int group, char *buf, size_t size) {
    const dsq__codec_info *in = dsq__codec_info_of(enc);
    if (!in) {
        snprintf(buf, size, "?");
        return buf;
    }
    if (in->block_cols == DSQ__BC_GROUP)
        snprintf(buf, size, "%s-g%d%s", in->name, group, in->mins ? "-asym" : "");
    else
        snprintf(buf, size, "%s", in->name);
    return buf;
}

dsq_status dsq_codec_parse(const char *name, dsq_encoding *enc, int *group, dsq_err *err) {
    DSQ_RETURN_IF(!name, err, DSQ_ERR_ARG, "no encoding name");
    for (size_t i = 0; i < sizeof infos / sizeof infos[0]; i++) {
        const dsq__codec_info *in = &infos[i];
        if (in->block_cols != DSQ__BC_GROUP) {
            if (strcmp(name, in->name) == 0) {
                *enc = in->enc;
                *group = 0;
                return DSQ_OK;
            }
            continue;
        }
        size_t nl = strlen(in->name);
        if (strncmp(name, in->name, nl) != 0 || strncmp(name + nl, "-g", 2) != 0) continue;
        const char *p = name + nl + 2;
        char *end;
        long g = strtol(p, &end, 10);
        if (end == p || *p == '-' || *p == '+') continue;
        bool asym = strcmp(end, "-asym") == 0;
        if (!(asym || *end == 0) || asym != in->mins) continue;
        DSQ_RETURN_IF(!group_allowed((int)g) || g > DSQ_CODEC_MAX_GROUP, err, DSQ_ERR_ARG,
                      "encoding '%s': group must be 16, 32, 64, 128 or 256", name);
        *enc = in->enc;
        *group = (int)g;
        return DSQ_OK;
    }
    return dsq_err_set(err, DSQ_ERR_ARG,
                       "unknown encoding '%s' (known: f32 f16 bf16 fp8-128x128 fp8-128x128-f32 fp8-1x128 "
                       "fp8-1x128-f32 fp8-row fp8-row-e8m0 mxfp4 nvfp4 int8-row int8-gG int4-gG int4-gG-asym "
                       "int2-gG-asym i64 i32 q2_k q3_k q4_k q5_k q6_k iq4_xs; G = 16..256)",
                       name);
}

dsq_status dsq_codec_check(const dsq_qtensor *t, const char *name, dsq_err *err) {
    const char *nm = name ? name : "tensor";
    DSQ_RETURN_IF(!t, err, DSQ_ERR_ARG, "%s: no descriptor", nm);
    dsq_codec_layout L;
    dsq_err sub = DSQ_ERR_INIT;
    dsq_status s = dsq_codec_layout_of(t->enc, t->rows, t->cols, t->group, &L, &sub);
    if (s != DSQ_OK) {
        s = dsq_err_set(err, s, "%s: %s", nm, sub.msg);
        dsq_err_clear(&sub);
        return s;
    }
    DSQ_RETURN_IF(L.data_bytes && !t->data, err, DSQ_ERR_ARG, "%s: no code data", nm);
    DSQ_RETURN_IF(L.scale_bytes && !t->scales, err, DSQ_ERR_ARG, "%s: no scales", nm);
    DSQ_RETURN_IF(L.min_bytes && !t->mins, err, DSQ_ERR_ARG, "%s: no mins", nm);
    if (t->enc == DSQ_ENC_NVFP4)
        DSQ_RETURN_IF(!(t->tensor_scale >= 0.0f && t->tensor_scale <= 3.4e38f), err, DSQ_ERR_NONFINITE,
                      "%s: NVFP4 tensor scale %g is not finite and non-negative", nm, (double)t->tensor_scale);
    return DSQ_OK;
}

dsq_qtensor dsq_qtensor_view(const dsq_qtensor_buf *b) {
    dsq_qtensor t = {b->enc, b->rows, b->cols, b->group, b->data, b->scales, b->mins, b->tensor_scale};
    return t;
}

void dsq__qv_init(dsq__qv *v, const dsq_qtensor *t) {
    memset(v, 0, sizeof *v);
    v->t = t;
    v->info = dsq__codec_info_of(t->enc);
    v->row_bytes = v->info->kind == DSQ__K_KQUANT
                       ? t->cols / DSQ_KQ_BLOCK * (uint64_t)dsq_kquant_block_bytes(t->enc)
                       : (t->cols * (uint64_t)v->info->bits + 7) / 8;
    v->brows = v->info->block_rows > 0 ? (uint64_t)v->info->block_rows : 1;
    v->bcols = v->info->block_cols == DSQ__BC_GROUP ? (uint64_t)t->group
               : v->info->block_cols == DSQ__BC_ROW ? (t->cols ? t->cols : 1)
               : v->info->block_cols > 0            ? (uint64_t)v->info->block_cols
                                                    : (t->cols ? t->cols : 1);
    v->scale_cols = dsq_ceil_div(t->cols, v->bcols);
}

dsq_isa dsq_codec_best_isa(void) {
    if (dsq__cpu_avx2_fma_f16c()) return DSQ_ISA_AVX2;
    return DSQ_ISA_SCALAR;
}

dsq_isa dsq__isa_resolve(dsq_isa isa) {
    if (isa == DSQ_ISA_SCALAR) return DSQ_ISA_SCALAR;
    return dsq_codec_best_isa();
}
