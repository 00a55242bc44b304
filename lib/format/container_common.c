/* .dsq container: rules shared by the reader and the writer (spec formats/spec/dsq.md §5). */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "container_internal.h"

/* On-disk enums are the library's enums: never renumbered (spec §5.3). */
_Static_assert((int)DSQ_FILE_ENC_F32 == (int)DSQ_ENC_F32 && (int)DSQ_FILE_ENC_F16 == (int)DSQ_ENC_F16 && (int)DSQ_FILE_ENC_BF16 == (int)DSQ_ENC_BF16,
               "encoding values");
_Static_assert((int)DSQ_FILE_ENC_FP8_B128 == (int)DSQ_ENC_FP8_B128 && (int)DSQ_FILE_ENC_FP8_B128_F32 == (int)DSQ_ENC_FP8_B128_F32 &&
                   (int)DSQ_FILE_ENC_FP8_R128 == (int)DSQ_ENC_FP8_R128 && (int)DSQ_FILE_ENC_FP8_ROW == (int)DSQ_ENC_FP8_ROW,
               "encoding values");
_Static_assert((int)DSQ_FILE_ENC_MXFP4 == (int)DSQ_ENC_MXFP4 && (int)DSQ_FILE_ENC_NVFP4 == (int)DSQ_ENC_NVFP4 &&
                   (int)DSQ_FILE_ENC_INT8_ROW == (int)DSQ_ENC_INT8_ROW && (int)DSQ_FILE_ENC_INT8_G == (int)DSQ_ENC_INT8_G,
               "encoding values");
_Static_assert((int)DSQ_FILE_ENC_INT4_G == (int)DSQ_ENC_INT4_G && (int)DSQ_FILE_ENC_INT4_G_ASYM == (int)DSQ_ENC_INT4_G_ASYM &&
                   (int)DSQ_FILE_ENC_I64 == (int)DSQ_ENC_I64 && (int)DSQ_FILE_ENC_I32 == (int)DSQ_ENC_I32 &&
                   (int)DSQ_FILE_ENC_INT2_G_ASYM == (int)DSQ_ENC_INT2_G_ASYM,
               "encoding values");
_Static_assert((int)DSQ_FILE_ENC_FP8_R128_F32 == (int)DSQ_ENC_FP8_R128_F32 &&
                   (int)DSQ_FILE_ENC_FP8_ROW_E8M0 == (int)DSQ_ENC_FP8_ROW_E8M0,
               "encoding values");
_Static_assert((int)DSQ_FILE_ENC_Q2_K == (int)DSQ_ENC_Q2_K && (int)DSQ_FILE_ENC_Q3_K == (int)DSQ_ENC_Q3_K &&
                   (int)DSQ_FILE_ENC_Q4_K == (int)DSQ_ENC_Q4_K && (int)DSQ_FILE_ENC_Q5_K == (int)DSQ_ENC_Q5_K &&
                   (int)DSQ_FILE_ENC_Q6_K == (int)DSQ_ENC_Q6_K && (int)DSQ_FILE_ENC_IQ4_XS == (int)DSQ_ENC_IQ4_XS,
               "encoding values");
_Static_assert((int)DSQ_FILE_DTYPE_F32 == (int)DSQ_DTYPE_F32 && (int)DSQ_FILE_DTYPE_F16 == (int)DSQ_DTYPE_F16 &&
                   (int)DSQ_FILE_DTYPE_BF16 == (int)DSQ_DTYPE_BF16 && (int)DSQ_FILE_DTYPE_F8_E4M3 == (int)DSQ_DTYPE_F8_E4M3 &&
                   (int)DSQ_FILE_DTYPE_F8_E8M0 == (int)DSQ_DTYPE_F8_E8M0 && (int)DSQ_FILE_DTYPE_I8 == (int)DSQ_DTYPE_I8 &&
                   (int)DSQ_FILE_DTYPE_U8 == (int)DSQ_DTYPE_U8 && (int)DSQ_FILE_DTYPE_I32 == (int)DSQ_DTYPE_I32 &&
                   (int)DSQ_FILE_DTYPE_I64 == (int)DSQ_DTYPE_I64,
               "dtype values");

uint64_t dsq__ctr_xxh3(const void *p, size_t n) { return (uint64_t)XXH3_64bits(p, n); }

static const char *const dtype_names[DSQ_DTYPE_COUNT] = {"F64", "F32",  "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                                         "I8",  "U8",   "I16", "I32",  "I64",     "BOOL"};

bool dsq__ctr_dtype_known(int dtype) { return dtype >= 0 && dtype < DSQ_DTYPE_COUNT; }
const char *dsq__ctr_dtype_name(int dtype) { return dsq__ctr_dtype_known(dtype) ? dtype_names[dtype] : "?"; }

/* The codec names of lib/quant/dsq_codec.h, without the group width. */
const char *dsq_ctr_encoding_name(dsq_encoding e) {
    switch (e) {
    case DSQ_ENC_F32: return "f32";
    case DSQ_ENC_F16: return "f16";
    case DSQ_ENC_BF16: return "bf16";
    case DSQ_ENC_FP8_B128: return "fp8-128x128";
    case DSQ_ENC_FP8_B128_F32: return "fp8-128x128-f32";
    case DSQ_ENC_FP8_R128: return "fp8-1x128";
    case DSQ_ENC_FP8_ROW: return "fp8-row";
    case DSQ_ENC_MXFP4: return "mxfp4";
    case DSQ_ENC_NVFP4: return "nvfp4";
    case DSQ_ENC_INT8_ROW: return "int8-row";
    case DSQ_ENC_INT8_G: return "int8-g";
    case DSQ_ENC_INT4_G: return "int4-g";
    case DSQ_ENC_INT4_G_ASYM: return "int4-g-asym";
    case DSQ_ENC_I64: return "i64";
    case DSQ_ENC_I32: return "i32";
    case DSQ_ENC_INT2_G_ASYM: return "int2-g-asym";
    case DSQ_ENC_FP8_R128_F32: return "fp8-1x128-f32";
    case DSQ_ENC_FP8_ROW_E8M0: return "fp8-row-e8m0";
    case DSQ_ENC_Q2_K: return "q2_k";
    case DSQ_ENC_Q3_K: return "q3_k";
    case DSQ_ENC_Q4_K: return "q4_k";
    case DSQ_ENC_Q5_K: return "q5_k";
    case DSQ_ENC_Q6_K: return "q6_k";
    case DSQ_ENC_IQ4_XS: return "iq4_xs";
    }
    return "unknown";
}

const char *dsq_ctr_tensor_encoding_name(const dsq_ctr_tensor *t, char *buf, size_t size) {
    switch (t->encoding) {
    case DSQ_ENC_INT8_G: snprintf(buf, size, "int8-g%u", t->block_cols); break;
    case DSQ_ENC_INT4_G: snprintf(buf, size, "int4-g%u", t->block_cols); break;
    case DSQ_ENC_INT4_G_ASYM: snprintf(buf, size, "int4-g%u-asym", t->block_cols); break;
    case DSQ_ENC_INT2_G_ASYM: snprintf(buf, size, "int2-g%u-asym", t->block_cols); break;
    default: snprintf(buf, size, "%s", dsq_ctr_encoding_name(t->encoding)); break;
    }
    return buf;
}

const dsq_ctr_part *dsq_ctr_tensor_part(const dsq_ctr_tensor *t, int kind) {
    for (int i = 0; i < t->n_parts; i++)
        if (t->parts[i].kind == kind) return &t->parts[i];
    return NULL;
}

uint64_t dsq__ctr_tensor_begin(const dsq_ctr_tensor *t) { return t->parts[0].offset; }

/* ---- string map ---- */

static uint64_t str_hash(const char *s) { return (uint64_t)XXH3_64bits(s, strlen(s)); }

bool dsq__strmap_init(dsq__strmap *m, size_t n) {
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < 2 * n + 2) {
        if (cap > SIZE_MAX / 4) return false;
        cap *= 2;
    }
    m->keys = dsq_calloc(cap, sizeof *m->keys);
    m->values = dsq_calloc(cap, sizeof *m->values);
    if (!m->keys || !m->values) {
        dsq__strmap_free(m);
        return false;
    }
    m->cap = cap;
    return true;
}

void dsq__strmap_free(dsq__strmap *m) {
    dsq_free(m->keys);
    dsq_free(m->values);
    memset(m, 0, sizeof *m);
}

static bool strmap_grow(dsq__strmap *m) {
    dsq__strmap bigger;
    if (!dsq__strmap_init(&bigger, m->cap)) return false; /* twice the keys */
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) dsq__strmap_put(&bigger, m->keys[i], m->values[i], NULL);
    dsq__strmap_free(m);
    *m = bigger;
    return true;
}

bool dsq__strmap_put(dsq__strmap *m, const char *key, uint32_t value, uint32_t *existing) {
    if (2 * (m->n + 1) > m->cap && !strmap_grow(m)) return false;
    size_t mask = m->cap - 1, i = (size_t)str_hash(key) & mask;
    while (m->keys[i]) {
        if (!strcmp(m->keys[i], key)) {
            if (existing) *existing = m->values[i];
            return false;
        }
        i = (i + 1) & mask;
    }
    m->keys[i] = key;
    m->values[i] = value;
    m->n++;
    return true;
}

bool dsq__strmap_get(const dsq__strmap *m, const char *key, uint32_t *value) {
    if (!m->cap) return false;
    size_t mask = m->cap - 1, i = (size_t)str_hash(key) & mask;
    while (m->keys[i]) {
        if (!strcmp(m->keys[i], key)) {
            *value = m->values[i];
            return true;
        }
        i = (i + 1) & mask;
    }
    return false;
}

/* ---- names ---- */

bool dsq__ctr_name_ok(const char *s, size_t len) {
    if (len < 1 || len > DSQ_FILE_MAX_NAME) return false;
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        size_t n;
        uint32_t cp;
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n) return false;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* ---- encodings ---- */

static bool enc_is_plain(dsq_encoding e) {
    return e == DSQ_ENC_F32 || e == DSQ_ENC_F16 || e == DSQ_ENC_BF16 || e == DSQ_ENC_I64 || e == DSQ_ENC_I32;
}

int dsq__ctr_expected_parts(const char *file, const dsq_ctr_tensor *t, dsq_file_part_layout expect[DSQ_FILE_MAX_PARTS],
                            dsq_err *err) {
    int n = dsq_file_encoding_layout((uint32_t)t->encoding, t->rank, t->shape, t->block_rows, t->block_cols, expect);
    switch (n) {
    case -1:
        return dsq_err_set(err, DSQ_ERR_DTYPE, "%s: tensor %s: unknown encoding %d", file, t->name, (int)t->encoding);
    case -2:
        return dsq_err_set(err, t->rank > DSQ_FILE_MAX_RANK ? DSQ_ERR_RANGE : DSQ_ERR_SHAPE,
                           "%s: tensor %s: rank %d not allowed for encoding %s (max %d; quantized encodings need >= 2)",
                           file, t->name, t->rank, dsq_ctr_encoding_name(t->encoding), DSQ_FILE_MAX_RANK);
    case -3:
        return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tensor %s: block %ux%u not allowed for encoding %s", file, t->name,
                           t->block_rows, t->block_cols, dsq_ctr_encoding_name(t->encoding));
    case -4: return dsq_err_set(err, DSQ_ERR_SHAPE, "%s: tensor %s: a dimension is 0", file, t->name);
    case -5: return dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: tensor %s: size overflows 64 bits", file, t->name);
    default: return n;
    }
}

dsq_status dsq__ctr_check_sources(const char *file, const dsq_ctr_tensor *t, dsq_err *err) {
    if (t->n_sources == 0) return DSQ_OK;
    bool plain = enc_is_plain(t->encoding);
    uint64_t axis = t->rank > 0 ? t->shape[0] : 1, next = 0;
    for (uint32_t k = 0; k < t->n_sources; k++) {
        const dsq_ctr_source *s = &t->sources[k];
        uint64_t end;
        DSQ_RETURN_IF(!dsq_add_u64(s->start, s->count, &end), err, DSQ_ERR_OVERFLOW,
                      "%s: tensor %s: source %s: range overflows", file, t->name, s->name);
        DSQ_RETURN_IF(s->count < 1 || s->start != next || end > axis, err, DSQ_ERR_RANGE,
                      "%s: tensor %s: source %s covers [%llu, %llu) but the next free index of the outer axis (size "
                      "%llu) is %llu",
                      file, t->name, s->name, (unsigned long long)s->start, (unsigned long long)end,
                      (unsigned long long)axis, (unsigned long long)next);
        next = end;
        if (s->squeeze) {
            int min_rank = plain ? 2 : 3;
            DSQ_RETURN_IF(s->count != 1 || t->rank < min_rank, err, DSQ_ERR_FORMAT,
                          "%s: tensor %s: source %s: squeeze needs count 1 and rank >= %d", file, t->name, s->name,
                          min_rank);
        }
        if (!plain && t->rank == 2 && t->block_rows > 1) {
            DSQ_RETURN_IF(s->start % t->block_rows != 0, err, DSQ_ERR_FORMAT,
                          "%s: tensor %s: source %s starts at row %llu, not on a %u-row block boundary", file, t->name,
                          s->name, (unsigned long long)s->start, t->block_rows);
        }
        DSQ_RETURN_IF(t->encoding == DSQ_ENC_NVFP4 && t->rank == 2 && t->n_sources > 1, err, DSQ_ERR_FORMAT,
                      "%s: tensor %s: an NVFP4 matrix has one tensor scale and cannot hold several sources", file,
                      t->name);
        DSQ_RETURN_IF(!dsq__ctr_dtype_known((int)s->dtype) || (s->scale_dtype != -1 && !dsq__ctr_dtype_known(s->scale_dtype)),
                      err, DSQ_ERR_DTYPE, "%s: tensor %s: source %s: unknown dtype", file, t->name, s->name);
        DSQ_RETURN_IF((s->scale_name != NULL) != (s->scale_dtype != -1), err, DSQ_ERR_FORMAT,
                      "%s: tensor %s: source %s: a scale name needs a scale dtype and vice versa", file, t->name,
                      s->name);
    }
    DSQ_RETURN_IF(next != axis, err, DSQ_ERR_RANGE,
                  "%s: tensor %s: sources cover %llu of the %llu indices of the outer axis", file, t->name,
                  (unsigned long long)next, (unsigned long long)axis);
    return DSQ_OK;
}

bool dsq_ctr_source_slice(const dsq_ctr_tensor *t, const dsq_ctr_source *s, int p, uint64_t *offset, uint64_t *bytes) {
    const dsq_ctr_part *part = &t->parts[p];
    if (t->rank == 0) {
        *offset = 0;
        *bytes = part->bytes;
        return true;
    }
    uint64_t axis = t->shape[0];
    if (t->rank >= 3 || enc_is_plain(t->encoding)) {
        uint64_t unit = part->bytes / axis; /* every part is proportional to the outer axis */
        *offset = s->start * unit;
        *bytes = s->count * unit;
        return true;
    }
    /* rank 2, blocked: rows of data, block rows of scales/mins */
    if (part->kind == DSQ_FILE_PART_DATA) {
        uint64_t unit = part->bytes / axis;
        *offset = s->start * unit;
        *bytes = s->count * unit;
        return true;
    }
    if (part->kind == DSQ_FILE_PART_TENSOR_SCALE) {
        *offset = 0;
        *bytes = part->bytes;
        return s->start == 0 && s->count == axis;
    }
    uint64_t br = t->block_rows ? t->block_rows : 1, rb = dsq_ceil_div(axis, br), unit = part->bytes / rb;
    uint64_t first = s->start / br, last = dsq_ceil_div(s->start + s->count, br);
    *offset = first * unit;
    *bytes = (last - first) * unit;
    return true;
}

/* ---- records ---- */

static uint64_t pad8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }

uint64_t dsq__ctr_record_bytes(const dsq_ctr_tensor *t) {
    /* names are ≤ 512 bytes and counts are bounded by the caller's validation: no overflow below
     * except through n_sources, which is checked. */
    uint64_t n = DSQ_FILE_RECORD_FIXED_BYTES + 8ull * (uint64_t)t->rank + DSQ_FILE_PART_BYTES * (uint64_t)t->n_parts +
                 pad8(strlen(t->name));
    for (uint32_t k = 0; k < t->n_sources; k++) {
        const dsq_ctr_source *s = &t->sources[k];
        uint64_t sb = DSQ_FILE_SOURCE_FIXED_BYTES + pad8(strlen(s->name) + (s->scale_name ? strlen(s->scale_name) : 0));
        if (!dsq_add_u64(n, sb, &n)) return 0;
    }
    return n > UINT32_MAX ? 0 : n;
}

void dsq__ctr_record_encode(const dsq_ctr_tensor *t, uint8_t *out) {
    uint64_t total = dsq__ctr_record_bytes(t);
    size_t name_len = strlen(t->name);
    dsq_put_u32le(out + DSQ_FILE_REC_RECORD_BYTES, (uint32_t)total);
    dsq_put_u16le(out + DSQ_FILE_REC_NAME_BYTES, (uint16_t)name_len);
    dsq_put_u16le(out + DSQ_FILE_REC_ENCODING, (uint16_t)t->encoding);
    out[DSQ_FILE_REC_RANK] = (uint8_t)t->rank;
    out[DSQ_FILE_REC_PART_COUNT] = (uint8_t)t->n_parts;
    dsq_put_u16le(out + DSQ_FILE_REC_FLAGS, 0);
    dsq_put_u32le(out + DSQ_FILE_REC_SOURCE_COUNT, t->n_sources);
    dsq_put_u32le(out + DSQ_FILE_REC_BLOCK_ROWS, t->block_rows);
    dsq_put_u32le(out + DSQ_FILE_REC_BLOCK_COLS, t->block_cols);
    uint8_t *p = out + DSQ_FILE_REC_SHAPE;
    for (int d = 0; d < t->rank; d++, p += 8) dsq_put_u64le(p, t->shape[d]);
    for (int i = 0; i < t->n_parts; i++, p += DSQ_FILE_PART_BYTES) {
        p[0] = t->parts[i].kind;
        p[1] = (uint8_t)t->parts[i].dtype;
        dsq_put_u64le(p + 8, t->parts[i].offset);
        dsq_put_u64le(p + 16, t->parts[i].bytes);
        dsq_put_u64le(p + 24, t->parts[i].xxh3);
    }
    memcpy(p, t->name, name_len);
    p += pad8(name_len);
    for (uint32_t k = 0; k < t->n_sources; k++) {
        const dsq_ctr_source *s = &t->sources[k];
        size_t a = strlen(s->name), b = s->scale_name ? strlen(s->scale_name) : 0;
        dsq_put_u64le(p + DSQ_FILE_SRC_START, s->start);
        dsq_put_u64le(p + DSQ_FILE_SRC_COUNT, s->count);
        p[DSQ_FILE_SRC_SQUEEZE] = s->squeeze ? 1 : 0;
        p[DSQ_FILE_SRC_DTYPE] = (uint8_t)s->dtype;
        p[DSQ_FILE_SRC_SCALE_DTYPE] = s->scale_dtype < 0 ? DSQ_FILE_DTYPE_NONE : (uint8_t)s->scale_dtype;
        dsq_put_u16le(p + DSQ_FILE_SRC_NAME_BYTES, (uint16_t)a);
        dsq_put_u16le(p + DSQ_FILE_SRC_SCALE_NAME_BYTES, (uint16_t)b);
        dsq_put_u32le(p + DSQ_FILE_SRC_SHARD, s->shard);
        dsq_put_u64le(p + DSQ_FILE_SRC_XXH3, s->xxh3);
        dsq_put_u64le(p + DSQ_FILE_SRC_SCALE_XXH3, s->scale_xxh3);
        memcpy(p + DSQ_FILE_SRC_NAMES, s->name, a);
        if (b) memcpy(p + DSQ_FILE_SRC_NAMES + a, s->scale_name, b);
        p += DSQ_FILE_SOURCE_FIXED_BYTES + pad8(a + b);
    }
}
