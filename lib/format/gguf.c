/* GGUF v3 reader and streaming writer (dsq_gguf.h).  Format learned from ggml's gguf.h and the
 * llama.cpp loader; the code is ours.  Every size derived from the file is computed with the
 * checked helpers of dsq_core.h (RELIABILITY.md, the GGUF CVE chain). */
#include <stdlib.h>
#include <string.h>

#include "dsq_gguf.h"

/* ---- ggml types ------------------------------------------------------------------------------- */
/* block values / bytes per block (ggml type traits; 0 = removed or unknown). */
static const struct {
    const char *name;
    uint16_t block, bytes;
} TYPES[DSQ_GGML_TYPE_COUNT] = {
    [DSQ_GGML_F32] = {"F32", 1, 4},         [DSQ_GGML_F16] = {"F16", 1, 2},
    [DSQ_GGML_Q4_0] = {"Q4_0", 32, 18},     [DSQ_GGML_Q4_1] = {"Q4_1", 32, 20},
    [DSQ_GGML_Q5_0] = {"Q5_0", 32, 22},     [DSQ_GGML_Q5_1] = {"Q5_1", 32, 24},
    [DSQ_GGML_Q8_0] = {"Q8_0", 32, 34},     [DSQ_GGML_Q8_1] = {"Q8_1", 32, 36},
    [DSQ_GGML_Q2_K] = {"Q2_K", 256, 84},    [DSQ_GGML_Q3_K] = {"Q3_K", 256, 110},
    [DSQ_GGML_Q4_K] = {"Q4_K", 256, 144},   [DSQ_GGML_Q5_K] = {"Q5_K", 256, 176},
    [DSQ_GGML_Q6_K] = {"Q6_K", 256, 210},   [DSQ_GGML_Q8_K] = {"Q8_K", 256, 292},
    [DSQ_GGML_IQ2_XXS] = {"IQ2_XXS", 256, 66}, [DSQ_GGML_IQ2_XS] = {"IQ2_XS", 256, 74},
    [DSQ_GGML_IQ3_XXS] = {"IQ3_XXS", 256, 98}, [DSQ_GGML_IQ1_S] = {"IQ1_S", 256, 50},
    [DSQ_GGML_IQ4_NL] = {"IQ4_NL", 32, 18}, [DSQ_GGML_IQ3_S] = {"IQ3_S", 256, 110},
    [DSQ_GGML_IQ2_S] = {"IQ2_S", 256, 82},  [DSQ_GGML_IQ4_XS] = {"IQ4_XS", 256, 136},
    [DSQ_GGML_I8] = {"I8", 1, 1},           [DSQ_GGML_I16] = {"I16", 1, 2},
    [DSQ_GGML_I32] = {"I32", 1, 4},         [DSQ_GGML_I64] = {"I64", 1, 8},
    [DSQ_GGML_F64] = {"F64", 1, 8},         [DSQ_GGML_IQ1_M] = {"IQ1_M", 256, 56},
    [DSQ_GGML_BF16] = {"BF16", 1, 2},       [DSQ_GGML_TQ1_0] = {"TQ1_0", 256, 54},
    [DSQ_GGML_TQ2_0] = {"TQ2_0", 256, 66},  [DSQ_GGML_MXFP4] = {"MXFP4", 32, 17},
    [DSQ_GGML_NVFP4] = {"NVFP4", 64, 36},   [DSQ_GGML_Q1_0] = {"Q1_0", 128, 18},
    [DSQ_GGML_Q2_0] = {"Q2_0", 64, 18},
};

bool dsq_ggml_type_info(uint32_t type, uint32_t *block, uint32_t *bytes) {
    if (type >= DSQ_GGML_TYPE_COUNT || TYPES[type].block == 0) return false;
    if (block) *block = TYPES[type].block;
    if (bytes) *bytes = TYPES[type].bytes;
    return true;
}

const char *dsq_ggml_type_name(uint32_t type) {
    return type < DSQ_GGML_TYPE_COUNT && TYPES[type].name ? TYPES[type].name : "?";
}

dsq_status dsq_ggml_nbytes(uint32_t type, int n_dims, const uint64_t *ne, uint64_t *out) {
    uint32_t block, bytes;
    if (!dsq_ggml_type_info(type, &block, &bytes)) return DSQ_ERR_DTYPE;
    if (n_dims < 1 || n_dims > DSQ_GGUF_MAX_DIMS) return DSQ_ERR_SHAPE;
    if (ne[0] % block != 0) return DSQ_ERR_SHAPE;
    uint64_t n = ne[0] / block * bytes, elems = ne[0];
    for (int i = 1; i < n_dims; i++)
        if (!dsq_mul_u64(n, ne[i], &n) || !dsq_mul_u64(elems, ne[i], &elems)) return DSQ_ERR_OVERFLOW;
    /* ggml keeps element counts and byte sizes in int64_t */
    if (elems > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX) return DSQ_ERR_OVERFLOW;
    *out = n;
    return DSQ_OK;
}

static size_t vtype_size(uint32_t t) {
    switch (t) {
    case DSQ_GGUF_V_U8: case DSQ_GGUF_V_I8: case DSQ_GGUF_V_BOOL: return 1;
    case DSQ_GGUF_V_U16: case DSQ_GGUF_V_I16: return 2;
    case DSQ_GGUF_V_U32: case DSQ_GGUF_V_I32: case DSQ_GGUF_V_F32: return 4;
    case DSQ_GGUF_V_U64: case DSQ_GGUF_V_I64: case DSQ_GGUF_V_F64: return 8;
    default: return 0;
    }
}

/* ---- reader ----------------------------------------------------------------------------------- */
struct dsq_gguf {
    char *path;
    dsq_map map;
    bool mapped;
    const uint8_t *base;
    uint64_t size;
    uint32_t alignment;
    uint64_t data_offset;
    dsq_gguf_kv *kv;
    size_t n_kv;
    uint64_t **str_offsets; /* per kv: offsets of the strings of a string array (else NULL) */
    dsq_gguf_tensor *tensors;
    size_t n_tensors;
    char *names;            /* arena of NUL-terminated keys and tensor names */
};

const char *dsq_gguf_path(const dsq_gguf *g) { return g->path; }
uint32_t dsq_gguf_alignment(const dsq_gguf *g) { return g->alignment; }
uint64_t dsq_gguf_data_offset(const dsq_gguf *g) { return g->data_offset; }
uint64_t dsq_gguf_file_size(const dsq_gguf *g) { return g->size; }
size_t dsq_gguf_n_kv(const dsq_gguf *g) { return g->n_kv; }
const dsq_gguf_kv *dsq_gguf_kv_at(const dsq_gguf *g, size_t i) { return i < g->n_kv ? &g->kv[i] : NULL; }
size_t dsq_gguf_n_tensors(const dsq_gguf *g) { return g->n_tensors; }
const dsq_gguf_tensor *dsq_gguf_tensor_at(const dsq_gguf *g, size_t i) {
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

void dsq_gguf_close(dsq_gguf *g) {
    if (!g) return;
    if (g->str_offsets)
        for (size_t i = 0; i < g->n_kv; i++) dsq_free(g->str_offsets[i]);
    dsq_free(g->str_offsets);
    dsq_free(g->kv);
    dsq_free(g->tensors);
    dsq_free(g->names);
    if (g->mapped) dsq_map_close(&g->map);
    dsq_free(g->path);
    dsq_free(g);
}

/* Read a GGUF string header (u64 length) and return a view of its bytes, checking `max`. */
static const uint8_t *read_str(dsq_cursor *c, uint64_t max, uint64_t *len) {
    uint64_t n = dsq_cursor_u64le(c);
    if (c->bad || n > max || n > c->size - c->pos) {
        c->bad = true;
        return NULL;
    }
    *len = n;
    return dsq_cursor_take(c, (size_t)n);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Sorted copy of names to find a duplicate; returns the duplicate name or NULL. */
static dsq_status find_dup(const char **names, size_t n, const char **dup) {
    *dup = NULL;
    if (n < 2) return DSQ_OK;
    const char **s = dsq_malloc(n * sizeof *s);
    if (!s) return DSQ_ERR_NOMEM;
    memcpy(s, names, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_str);
    for (size_t i = 1; i < n && !*dup; i++)
        if (!strcmp(s[i - 1], s[i])) *dup = s[i];
    dsq_free(s);
    return DSQ_OK;
}

typedef struct span { uint64_t start, end; size_t idx; } span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

#define FAIL(code, ...) do { st = dsq_err_set(err, (code), __VA_ARGS__); goto fail; } while (0)

/* Copy n bytes into the names arena as a NUL-terminated string; returns its offset, or SIZE_MAX when
 * memory runs out.  The arena grows by doubling: keys and names are bounded by the header, never
 * by the (possibly 100+ GB) file. */
static size_t intern(dsq_gguf *g, size_t *cap, size_t *used, const uint8_t *p, size_t n) {
    if (n + 1 > *cap - *used) {
        size_t want = *cap ? *cap : 4096;
        while (want - *used < n + 1) {
            if (want > SIZE_MAX / 2) return SIZE_MAX;
            want *= 2;
        }
        char *q = dsq_realloc(g->names, want);
        if (!q) return SIZE_MAX;
        g->names = q;
        *cap = want;
    }
    size_t off = *used;
    memcpy(g->names + off, p, n);
    g->names[off + n] = 0;
    *used += n + 1;
    return off;
}

static dsq_status parse(dsq_gguf *g, const char *what, dsq_err *err) {
    dsq_status st = DSQ_OK;
    dsq_cursor c = dsq_cursor_make(g->base, (size_t)g->size);
    const char **sorted = NULL;
    span *spans = NULL;
    if (g->size < 24) return dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: %llu bytes, shorter than a GGUF header (24)", what,
                                         (unsigned long long)g->size);
    if (memcmp(g->base, "GGUF", 4) != 0) return dsq_err_set(err, DSQ_ERR_MAGIC, "%s: not a GGUF file (magic)", what);
    c.pos = 4;
    uint32_t version = dsq_cursor_u32le(&c);
    if (version != DSQ_GGUF_VERSION)
        return dsq_err_set(err, DSQ_ERR_VERSION, "%s: GGUF version %u (only %d is read)", what, version, DSQ_GGUF_VERSION);
    uint64_t n_tensors = dsq_cursor_u64le(&c), n_kv = dsq_cursor_u64le(&c);
    if (n_tensors > DSQ_GGUF_MAX_TENSORS)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: %llu tensors (limit %u)", what, (unsigned long long)n_tensors,
                           DSQ_GGUF_MAX_TENSORS);
    if (n_kv > DSQ_GGUF_MAX_KV)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: %llu key/value pairs (limit %u)", what, (unsigned long long)n_kv,
                           DSQ_GGUF_MAX_KV);
    /* every kv needs ≥ 12 bytes and every tensor info ≥ 24: counts the file cannot hold fail here,
     * before any allocation sized by them */
    uint64_t min_bytes, t;
    if (!dsq_mul_u64(n_kv, 12, &min_bytes) || !dsq_mul_u64(n_tensors, 24, &t) || !dsq_add_u64(min_bytes, t, &min_bytes) ||
        min_bytes > g->size - 24)
        return dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: %llu key/value pairs and %llu tensors cannot fit in %llu bytes",
                           what, (unsigned long long)n_kv, (unsigned long long)n_tensors, (unsigned long long)g->size);
    g->kv = dsq_calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->str_offsets = dsq_calloc(n_kv ? n_kv : 1, sizeof *g->str_offsets);
    g->tensors = dsq_calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->str_offsets || !g->tensors) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    /* keys and names go to a growing arena; their pointers are set once it stops moving */
    size_t names_used = 0, names_cap = 0;
    size_t *key_off = dsq_malloc((n_kv ? n_kv : 1) * sizeof *key_off);
    size_t *name_off = dsq_malloc((n_tensors ? n_tensors : 1) * sizeof *name_off);
    if (!key_off || !name_off) {
        dsq_free(key_off);
        dsq_free(name_off);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    }
    g->alignment = DSQ_GGUF_DEFAULT_ALIGN;

    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t at = c.pos, klen;
        const uint8_t *k = read_str(&c, DSQ_GGUF_MAX_KEY, &klen);
        if (!k) FAIL(DSQ_ERR_TRUNCATED, "%s: offset %llu: key %llu: length out of range or past the end", what,
                     (unsigned long long)at, (unsigned long long)i);
        if (klen == 0 || memchr(k, 0, (size_t)klen))
            FAIL(DSQ_ERR_FORMAT, "%s: offset %llu: key %llu is empty or holds a NUL byte", what, (unsigned long long)at,
                 (unsigned long long)i);
        dsq_gguf_kv *kv = &g->kv[i];
        key_off[i] = intern(g, &names_cap, &names_used, k, (size_t)klen);
        if (key_off[i] == SIZE_MAX) FAIL(DSQ_ERR_NOMEM, "%s: out of memory", what);
        const char *key = g->names + key_off[i]; /* valid until the next intern */
        g->n_kv = (size_t)i + 1;
        uint32_t type = dsq_cursor_u32le(&c);
        kv->type = kv->elem = (dsq_gguf_vtype)type;
        kv->n = 1;
        if (c.bad) FAIL(DSQ_ERR_TRUNCATED, "%s: key '%s': truncated", what, key);
        if (type == DSQ_GGUF_V_ARRAY) {
            uint32_t elem = dsq_cursor_u32le(&c);
            uint64_t n = dsq_cursor_u64le(&c);
            if (c.bad) FAIL(DSQ_ERR_TRUNCATED, "%s: key '%s': truncated array header", what, key);
            if (elem == DSQ_GGUF_V_ARRAY) FAIL(DSQ_ERR_FORMAT, "%s: key '%s': nested arrays are not allowed", what, key);
            if (elem != DSQ_GGUF_V_STRING && vtype_size(elem) == 0)
                FAIL(DSQ_ERR_DTYPE, "%s: key '%s': unknown array element type %u", what, key, elem);
            if (n > DSQ_GGUF_MAX_ARRAY)
                FAIL(DSQ_ERR_RANGE, "%s: key '%s': %llu array elements (limit %u)", what, key, (unsigned long long)n,
                     DSQ_GGUF_MAX_ARRAY);
            kv->elem = (dsq_gguf_vtype)elem;
            kv->n = n;
            kv->data = g->base + c.pos;
            if (elem == DSQ_GGUF_V_STRING) {
                /* each string needs ≥ 8 bytes: bound n by the remaining bytes before allocating */
                if (n > (c.size - c.pos) / 8) FAIL(DSQ_ERR_TRUNCATED, "%s: key '%s': %llu strings past the end", what, key,
                                                   (unsigned long long)n);
                g->str_offsets[i] = dsq_malloc(n ? (size_t)n * sizeof(uint64_t) : 1);
                if (!g->str_offsets[i]) FAIL(DSQ_ERR_NOMEM, "%s: key '%s': out of memory", what, key);
                for (uint64_t j = 0; j < n; j++) {
                    uint64_t slen;
                    g->str_offsets[i][j] = c.pos;
                    if (!read_str(&c, DSQ_GGUF_MAX_STRING, &slen))
                        FAIL(DSQ_ERR_TRUNCATED, "%s: key '%s': string %llu: length out of range or past the end", what, key,
                             (unsigned long long)j);
                }
            } else {
                uint64_t bytes;
                if (!dsq_mul_u64(n, vtype_size(elem), &bytes) || bytes > c.size - c.pos)
                    FAIL(DSQ_ERR_TRUNCATED, "%s: key '%s': %llu elements past the end", what, key, (unsigned long long)n);
                dsq_cursor_take(&c, (size_t)bytes);
            }
        } else if (type == DSQ_GGUF_V_STRING) {
            uint64_t slen;
            const uint8_t *s = read_str(&c, DSQ_GGUF_MAX_STRING, &slen);
            if (!s) FAIL(DSQ_ERR_TRUNCATED, "%s: key '%s': string length out of range or past the end", what, key);
            kv->data = s;
            kv->len = slen;
        } else if (vtype_size(type)) {
            kv->data = dsq_cursor_take(&c, vtype_size(type));
            if (!kv->data) FAIL(DSQ_ERR_TRUNCATED, "%s: key '%s': truncated value", what, key);
            if (type == DSQ_GGUF_V_BOOL && kv->data[0] > 1)
                FAIL(DSQ_ERR_FORMAT, "%s: key '%s': bool value %u", what, key, kv->data[0]);
        } else
            FAIL(DSQ_ERR_DTYPE, "%s: key '%s': unknown value type %u", what, key, type);
        if (!strcmp(key, "general.alignment")) {
            uint64_t a;
            if (type != DSQ_GGUF_V_U32 || !dsq_gguf_kv_u64(kv, &a))
                FAIL(DSQ_ERR_FORMAT, "%s: general.alignment is not a u32", what);
            if (a == 0 || (a & (a - 1)) || a > DSQ_GGUF_MAX_ALIGN)
                FAIL(DSQ_ERR_RANGE, "%s: general.alignment %llu is not a power of two in [1, %u]", what,
                     (unsigned long long)a, DSQ_GGUF_MAX_ALIGN);
            g->alignment = (uint32_t)a;
        }
    }

    for (uint64_t i = 0; i < n_tensors; i++) {
        uint64_t at = c.pos, nlen;
        const uint8_t *nm = read_str(&c, DSQ_GGUF_MAX_NAME, &nlen);
        if (!nm) FAIL(c.bad && c.pos < c.size ? DSQ_ERR_RANGE : DSQ_ERR_TRUNCATED,
                      "%s: offset %llu: tensor %llu: name longer than %d bytes or past the end", what,
                      (unsigned long long)at, (unsigned long long)i, DSQ_GGUF_MAX_NAME);
        if (nlen == 0 || memchr(nm, 0, (size_t)nlen))
            FAIL(DSQ_ERR_FORMAT, "%s: offset %llu: tensor %llu: empty name or a NUL byte in it", what,
                 (unsigned long long)at, (unsigned long long)i);
        dsq_gguf_tensor *tt = &g->tensors[i];
        name_off[i] = intern(g, &names_cap, &names_used, nm, (size_t)nlen);
        if (name_off[i] == SIZE_MAX) FAIL(DSQ_ERR_NOMEM, "%s: out of memory", what);
        const char *name = g->names + name_off[i]; /* valid until the next intern */
        g->n_tensors = (size_t)i + 1;
        uint32_t n_dims = dsq_cursor_u32le(&c);
        if (c.bad) FAIL(DSQ_ERR_TRUNCATED, "%s: tensor %s: truncated", what, name);
        if (n_dims < 1 || n_dims > DSQ_GGUF_MAX_DIMS)
            FAIL(DSQ_ERR_SHAPE, "%s: tensor %s: %u dimensions (1..%d)", what, name, n_dims, DSQ_GGUF_MAX_DIMS);
        tt->n_dims = (int)n_dims;
        for (int d = 0; d < DSQ_GGUF_MAX_DIMS; d++) tt->ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            tt->ne[d] = dsq_cursor_u64le(&c);
            if (tt->ne[d] > (uint64_t)INT64_MAX)
                FAIL(DSQ_ERR_SHAPE, "%s: tensor %s: ne[%u] = %llu is negative as int64", what, name, d,
                     (unsigned long long)tt->ne[d]);
        }
        tt->type = dsq_cursor_u32le(&c);
        tt->offset = dsq_cursor_u64le(&c);
        if (c.bad) FAIL(DSQ_ERR_TRUNCATED, "%s: tensor %s: truncated info", what, name);
        if (!dsq_ggml_type_info(tt->type, NULL, NULL))
            FAIL(DSQ_ERR_DTYPE, "%s: tensor %s: unknown ggml type %u", what, name, tt->type);
        st = dsq_ggml_nbytes(tt->type, tt->n_dims, tt->ne, &tt->n_bytes);
        if (st == DSQ_ERR_SHAPE) FAIL(st, "%s: tensor %s: ne[0] = %llu is not a multiple of the %s block", what, name,
                                      (unsigned long long)tt->ne[0], dsq_ggml_type_name(tt->type));
        if (st != DSQ_OK) FAIL(st, "%s: tensor %s: size overflows", what, name);
        if (tt->offset % g->alignment)
            FAIL(DSQ_ERR_RANGE, "%s: tensor %s: offset %llu is not a multiple of the alignment %u", what, name,
                 (unsigned long long)tt->offset, g->alignment);
    }
    for (size_t i = 0; i < g->n_kv; i++) g->kv[i].key = g->names + key_off[i];
    for (size_t i = 0; i < g->n_tensors; i++) g->tensors[i].name = g->names + name_off[i];
    sorted = dsq_malloc((n_kv > n_tensors ? n_kv : n_tensors) * sizeof *sorted + 1);
    if (!sorted) FAIL(DSQ_ERR_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < g->n_kv; i++) sorted[i] = g->kv[i].key;
    const char *dup;
    if ((st = find_dup(sorted, g->n_kv, &dup)) != DSQ_OK) FAIL(st, "%s: out of memory", what);
    if (dup) FAIL(DSQ_ERR_DUPLICATE, "%s: key '%s' appears twice", what, dup);
    for (size_t i = 0; i < g->n_tensors; i++) sorted[i] = g->tensors[i].name;
    if ((st = find_dup(sorted, g->n_tensors, &dup)) != DSQ_OK) FAIL(st, "%s: out of memory", what);
    if (dup) FAIL(DSQ_ERR_DUPLICATE, "%s: tensor '%s' appears twice", what, dup);

    uint64_t data_off;
    if (!dsq_pad_u64(c.pos, g->alignment, &data_off) || data_off > g->size)
        FAIL(DSQ_ERR_TRUNCATED, "%s: data section (offset %llu) past the end (%llu bytes)", what,
             (unsigned long long)c.pos, (unsigned long long)g->size);
    for (uint64_t p = c.pos; p < data_off; p++)
        if (g->base[p]) FAIL(DSQ_ERR_FORMAT, "%s: offset %llu: nonzero padding before the data section", what,
                             (unsigned long long)p);
    g->data_offset = data_off;
    uint64_t data_size = g->size - data_off;
    spans = dsq_malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *spans);
    if (!spans) FAIL(DSQ_ERR_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < g->n_tensors; i++) {
        dsq_gguf_tensor *tt = &g->tensors[i];
        uint64_t end;
        if (!dsq_add_u64(tt->offset, tt->n_bytes, &end) || end > data_size)
            FAIL(DSQ_ERR_TRUNCATED, "%s: tensor %s: bytes [%llu, +%llu) of the data section past the end (%llu bytes)",
                 what, tt->name, (unsigned long long)tt->offset, (unsigned long long)tt->n_bytes,
                 (unsigned long long)data_size);
        tt->data = g->base + data_off + tt->offset;
        spans[i] = (span){tt->offset, end, i};
    }
    qsort(spans, g->n_tensors, sizeof *spans, cmp_span);
    for (size_t i = 1; i < g->n_tensors; i++)
        if (spans[i].start < spans[i - 1].end)
            FAIL(DSQ_ERR_OVERLAP, "%s: tensors %s and %s overlap", what, g->tensors[spans[i - 1].idx].name,
                 g->tensors[spans[i].idx].name);
fail:
    if (st != DSQ_OK) { /* partial results: point what was parsed into the arena for close() */
        for (size_t i = 0; i < g->n_kv; i++) g->kv[i].key = g->names + key_off[i];
        for (size_t i = 0; i < g->n_tensors; i++) g->tensors[i].name = g->names + name_off[i];
    }
    dsq_free(key_off);
    dsq_free(name_off);
    dsq_free(sorted);
    dsq_free(spans);
    return st;
}

static dsq_status make(const char *what, dsq_gguf **out, dsq_err *err) {
    *out = dsq_calloc(1, sizeof **out);
    if (!*out) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    (*out)->path = dsq_strdup(what);
    if (!(*out)->path) {
        dsq_free(*out);
        *out = NULL;
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    }
    return DSQ_OK;
}

dsq_status dsq_gguf_parse(const void *data, size_t size, const char *what, dsq_gguf **out, dsq_err *err) {
    *out = NULL;
    dsq_gguf *g;
    DSQ_TRY(make(what, &g, err));
    g->base = data;
    g->size = size;
    dsq_status st = parse(g, what, err);
    if (st != DSQ_OK) {
        dsq_gguf_close(g);
        return st;
    }
    *out = g;
    return DSQ_OK;
}

dsq_status dsq_gguf_open(const char *path, dsq_gguf **out, dsq_err *err) {
    *out = NULL;
    dsq_gguf *g;
    DSQ_TRY(make(path, &g, err));
    dsq_status st = dsq_map_open(path, true, &g->map, err);
    if (st != DSQ_OK) {
        dsq_gguf_close(g);
        return st;
    }
    g->mapped = true;
    g->base = g->map.data;
    g->size = g->map.size;
    if (!g->base) g->size = 0;
    st = parse(g, path, err);
    if (st != DSQ_OK) {
        dsq_gguf_close(g);
        return st;
    }
    *out = g;
    return DSQ_OK;
}

const dsq_gguf_kv *dsq_gguf_find_kv(const dsq_gguf *g, const char *key) {
    for (size_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const dsq_gguf_tensor *dsq_gguf_find_tensor(const dsq_gguf *g, const char *name) {
    for (size_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

static bool scalar_u64(dsq_gguf_vtype t, const uint8_t *p, uint64_t *out) {
    int64_t s;
    switch (t) {
    case DSQ_GGUF_V_U8: case DSQ_GGUF_V_BOOL: *out = p[0]; return true;
    case DSQ_GGUF_V_U16: { uint16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case DSQ_GGUF_V_U32: { uint32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case DSQ_GGUF_V_U64: memcpy(out, p, 8); return true;
    case DSQ_GGUF_V_I8: s = (int8_t)p[0]; break;
    case DSQ_GGUF_V_I16: { int16_t v; memcpy(&v, p, 2); s = v; break; }
    case DSQ_GGUF_V_I32: { int32_t v; memcpy(&v, p, 4); s = v; break; }
    case DSQ_GGUF_V_I64: memcpy(&s, p, 8); break;
    default: return false;
    }
    if (s < 0) return false;
    *out = (uint64_t)s;
    return true;
}

static bool scalar_f64(dsq_gguf_vtype t, const uint8_t *p, double *out) {
    if (t == DSQ_GGUF_V_F32) { float v; memcpy(&v, p, 4); *out = v; return true; }
    if (t == DSQ_GGUF_V_F64) { memcpy(out, p, 8); return true; }
    int64_t s;
    switch (t) {
    case DSQ_GGUF_V_I8: s = (int8_t)p[0]; break;
    case DSQ_GGUF_V_I16: { int16_t v; memcpy(&v, p, 2); s = v; break; }
    case DSQ_GGUF_V_I32: { int32_t v; memcpy(&v, p, 4); s = v; break; }
    case DSQ_GGUF_V_I64: memcpy(&s, p, 8); break;
    default: { uint64_t u; if (!scalar_u64(t, p, &u)) return false; *out = (double)u; return true; }
    }
    *out = (double)s;
    return true;
}

bool dsq_gguf_kv_u64(const dsq_gguf_kv *kv, uint64_t *out) {
    return kv && kv->type != DSQ_GGUF_V_ARRAY && scalar_u64(kv->type, kv->data, out);
}
bool dsq_gguf_kv_f64(const dsq_gguf_kv *kv, double *out) {
    return kv && kv->type != DSQ_GGUF_V_ARRAY && scalar_f64(kv->type, kv->data, out);
}
bool dsq_gguf_kv_arr_u64(const dsq_gguf_kv *kv, uint64_t i, uint64_t *out) {
    if (!kv || kv->type != DSQ_GGUF_V_ARRAY || i >= kv->n || !vtype_size(kv->elem)) return false;
    return scalar_u64(kv->elem, kv->data + i * vtype_size(kv->elem), out);
}
bool dsq_gguf_kv_arr_f64(const dsq_gguf_kv *kv, uint64_t i, double *out) {
    if (!kv || kv->type != DSQ_GGUF_V_ARRAY || i >= kv->n || !vtype_size(kv->elem)) return false;
    return scalar_f64(kv->elem, kv->data + i * vtype_size(kv->elem), out);
}
bool dsq_gguf_kv_arr_str(const dsq_gguf *g, const dsq_gguf_kv *kv, uint64_t i, const char **s, uint64_t *len) {
    if (!kv || kv->type != DSQ_GGUF_V_ARRAY || kv->elem != DSQ_GGUF_V_STRING || i >= kv->n) return false;
    size_t k = (size_t)(kv - g->kv);
    if (k >= g->n_kv || !g->str_offsets[k]) return false;
    const uint8_t *p = g->base + g->str_offsets[k][i];
    memcpy(len, p, 8);
    *s = (const char *)p + 8;
    return true;
}
bool dsq_gguf_get_u64(const dsq_gguf *g, const char *key, uint64_t *out) {
    return dsq_gguf_kv_u64(dsq_gguf_find_kv(g, key), out);
}
bool dsq_gguf_get_f64(const dsq_gguf *g, const char *key, double *out) {
    return dsq_gguf_kv_f64(dsq_gguf_find_kv(g, key), out);
}
char *dsq_gguf_get_str(const dsq_gguf *g, const char *key) {
    const dsq_gguf_kv *kv = dsq_gguf_find_kv(g, key);
    if (!kv || kv->type != DSQ_GGUF_V_STRING || memchr(kv->data, 0, (size_t)kv->len)) return NULL;
    char *s = dsq_malloc((size_t)kv->len + 1);
    if (!s) return NULL;
    memcpy(s, kv->data, (size_t)kv->len);
    s[kv->len] = 0;
    return s;
}

/* ---- split sets ------------------------------------------------------------------------------- */
char *dsq_gguf_split_path(const char *path, uint32_t no, uint32_t count) {
    if (count <= 1) return dsq_strdup(path);
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".gguf")) n -= 5;
    /* an existing -NNNNN-of-NNNNN suffix (opening split 1 by name) is replaced */
    if (n >= 15 && path[n - 15] == '-' && !memcmp(path + n - 9, "-of-", 4)) n -= 15;
    char *s = dsq_malloc(n + 32);
    if (!s) return NULL;
    memcpy(s, path, n);
    snprintf(s + n, 32, "-%05u-of-%05u.gguf", no, count);
    return s;
}

void dsq_gguf_close_set(dsq_gguf **set, uint32_t n) {
    if (!set) return;
    for (uint32_t i = 0; i < n; i++) dsq_gguf_close(set[i]);
    dsq_free(set);
}

dsq_status dsq_gguf_open_set(const char *path, dsq_gguf ***out, uint32_t *n, dsq_err *err) {
    *out = NULL;
    *n = 0;
    dsq_gguf *first;
    DSQ_TRY(dsq_gguf_open(path, &first, err));
    uint64_t count = 1, no = 0;
    const dsq_gguf_kv *kc = dsq_gguf_find_kv(first, "split.count");
    if (kc && (!dsq_gguf_kv_u64(kc, &count) || count < 1 || count > DSQ_GGUF_MAX_SPLITS)) {
        dsq_gguf_close(first);
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: split.count out of range", path);
    }
    if (count > 1 && (!dsq_gguf_get_u64(first, "split.no", &no) || no != 0)) {
        dsq_gguf_close(first);
        return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: not the first file of its split set (split.no)", path);
    }
    dsq_gguf **set = dsq_calloc((size_t)count, sizeof *set);
    if (!set) {
        dsq_gguf_close(first);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    set[0] = first;
    dsq_status st = DSQ_OK;
    size_t total = first->n_tensors;
    for (uint32_t i = 1; i < count && st == DSQ_OK; i++) {
        char *p = dsq_gguf_split_path(path, i + 1, (uint32_t)count);
        if (!p) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        else if ((st = dsq_gguf_open(p, &set[i], err)) == DSQ_OK) {
            uint64_t c2 = 0;
            if (!dsq_gguf_get_u64(set[i], "split.no", &no) || no != i || !dsq_gguf_get_u64(set[i], "split.count", &c2) ||
                c2 != count)
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: split.no/split.count do not say file %u of %llu", p, i + 1,
                                 (unsigned long long)count);
            total += set[i]->n_tensors;
        }
        dsq_free(p);
    }
    if (st == DSQ_OK) {
        const char **names = dsq_malloc((total ? total : 1) * sizeof *names);
        if (!names) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        else {
            size_t k = 0;
            for (uint32_t i = 0; i < count; i++)
                for (size_t j = 0; j < set[i]->n_tensors; j++) names[k++] = set[i]->tensors[j].name;
            const char *dup = NULL;
            st = find_dup(names, total, &dup);
            if (st != DSQ_OK) st = dsq_err_set(err, st, "out of memory");
            else if (dup) st = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: tensor '%s' appears in two split files", path, dup);
            dsq_free(names);
        }
    }
    if (st != DSQ_OK) {
        dsq_gguf_close_set(set, (uint32_t)count);
        return st;
    }
    *out = set;
    *n = (uint32_t)count;
    return DSQ_OK;
}

/* ---- writer ----------------------------------------------------------------------------------- */
typedef struct wkv {
    char *key;
    uint8_t *val; /* serialized value: type (u32) [+ array header] + bytes */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t type;
    int n_dims;
    uint64_t ne[DSQ_GGUF_MAX_DIMS];
    uint64_t n_bytes;
    uint32_t file;   /* split index */
    uint64_t offset; /* within its file's data section */
} wtensor;

typedef struct wfile {
    dsq_afile f;
    bool open;
    uint64_t data_off;  /* header bytes incl. padding */
    uint64_t size;      /* planned total */
    size_t first, count;/* tensors [first, first+count) */
} wfile;

struct dsq_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    uint32_t alignment;
    bool begun, finished;
    wfile *files;
    uint32_t n_files;
    char *path;
    /* streaming position */
    size_t cur;        /* current tensor */
    uint64_t cur_done; /* bytes of it written */
    uint64_t file_pos; /* position in the current file */
};

dsq_status dsq_gguf_writer_create(dsq_gguf_writer **out, dsq_err *err) {
    *out = dsq_calloc(1, sizeof **out);
    if (!*out) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    (*out)->alignment = DSQ_GGUF_DEFAULT_ALIGN;
    return DSQ_OK;
}

void dsq_gguf_writer_free(dsq_gguf_writer *w) {
    if (!w) return;
    for (uint32_t i = 0; i < w->n_files; i++)
        if (w->files[i].open) dsq_afile_abort(&w->files[i].f);
    dsq_free(w->files);
    for (size_t i = 0; i < w->n_kv; i++) {
        dsq_free(w->kv[i].key);
        dsq_free(w->kv[i].val);
    }
    dsq_free(w->kv);
    for (size_t i = 0; i < w->n_t; i++) dsq_free(w->t[i].name);
    dsq_free(w->t);
    dsq_free(w->path);
    dsq_free(w);
}

static dsq_status add_kv(dsq_gguf_writer *w, const char *key, const void *val, size_t len, dsq_err *err) {
    if (w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: key '%s' after begin", key);
    size_t klen = strlen(key);
    if (klen == 0 || klen > DSQ_GGUF_MAX_KEY) return dsq_err_set(err, DSQ_ERR_ARG, "gguf writer: bad key '%s'", key);
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) return dsq_err_set(err, DSQ_ERR_DUPLICATE, "gguf writer: key '%s' set twice", key);
    if (w->n_kv >= DSQ_GGUF_MAX_KV) return dsq_err_set(err, DSQ_ERR_RANGE, "gguf writer: too many keys");
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 64;
        wkv *p = dsq_realloc(w->kv, cap * sizeof *p);
        if (!p) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
        w->kv = p;
        w->cap_kv = cap;
    }
    wkv *k = &w->kv[w->n_kv];
    k->key = dsq_strdup(key);
    k->val = dsq_malloc(len ? len : 1);
    if (!k->key || !k->val) {
        dsq_free(k->key);
        dsq_free(k->val);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    }
    memcpy(k->val, val, len);
    k->val_len = len;
    w->n_kv++;
    if (!strcmp(key, "general.alignment")) {
        uint32_t a;
        memcpy(&a, (const uint8_t *)val + 4, 4);
        w->alignment = a;
    }
    return DSQ_OK;
}

static dsq_status kv_scalar(dsq_gguf_writer *w, const char *key, uint32_t type, const void *v, size_t n, dsq_err *err) {
    uint8_t buf[12];
    dsq_put_u32le(buf, type);
    memcpy(buf + 4, v, n); /* host is little-endian (x86-64/aarch64), as the rest of dsq assumes */
    return add_kv(w, key, buf, 4 + n, err);
}
dsq_status dsq_gguf_writer_kv_u32(dsq_gguf_writer *w, const char *key, uint32_t v, dsq_err *err) {
    if (!strcmp(key, "general.alignment") && (v == 0 || (v & (v - 1)) || v > DSQ_GGUF_MAX_ALIGN))
        return dsq_err_set(err, DSQ_ERR_RANGE, "gguf writer: alignment %u", v);
    return kv_scalar(w, key, DSQ_GGUF_V_U32, &v, 4, err);
}
dsq_status dsq_gguf_writer_kv_i32(dsq_gguf_writer *w, const char *key, int32_t v, dsq_err *err) {
    return kv_scalar(w, key, DSQ_GGUF_V_I32, &v, 4, err);
}
dsq_status dsq_gguf_writer_kv_u64(dsq_gguf_writer *w, const char *key, uint64_t v, dsq_err *err) {
    return kv_scalar(w, key, DSQ_GGUF_V_U64, &v, 8, err);
}
dsq_status dsq_gguf_writer_kv_f32(dsq_gguf_writer *w, const char *key, float v, dsq_err *err) {
    return kv_scalar(w, key, DSQ_GGUF_V_F32, &v, 4, err);
}
dsq_status dsq_gguf_writer_kv_bool(dsq_gguf_writer *w, const char *key, bool v, dsq_err *err) {
    uint8_t b = v ? 1 : 0;
    return kv_scalar(w, key, DSQ_GGUF_V_BOOL, &b, 1, err);
}
dsq_status dsq_gguf_writer_kv_str(dsq_gguf_writer *w, const char *key, const char *v, dsq_err *err) {
    size_t n = strlen(v);
    uint8_t *buf = dsq_malloc(12 + n);
    if (!buf) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    dsq_put_u32le(buf, DSQ_GGUF_V_STRING);
    dsq_put_u64le(buf + 4, n);
    memcpy(buf + 12, v, n);
    dsq_status st = add_kv(w, key, buf, 12 + n, err);
    dsq_free(buf);
    return st;
}
dsq_status dsq_gguf_writer_kv_arr(dsq_gguf_writer *w, const char *key, dsq_gguf_vtype elem, const void *data,
                                  uint64_t n, dsq_err *err) {
    size_t es = vtype_size(elem);
    uint64_t bytes;
    if (!es || n > DSQ_GGUF_MAX_ARRAY || !dsq_mul_u64(n, es, &bytes) || bytes > SIZE_MAX - 16)
        return dsq_err_set(err, DSQ_ERR_ARG, "gguf writer: key '%s': bad array", key);
    uint8_t *buf = dsq_malloc((size_t)bytes + 16);
    if (!buf) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    dsq_put_u32le(buf, DSQ_GGUF_V_ARRAY);
    dsq_put_u32le(buf + 4, elem);
    dsq_put_u64le(buf + 8, n);
    if (bytes) memcpy(buf + 16, data, (size_t)bytes);
    dsq_status st = add_kv(w, key, buf, (size_t)bytes + 16, err);
    dsq_free(buf);
    return st;
}
dsq_status dsq_gguf_writer_kv_arr_str(dsq_gguf_writer *w, const char *key, const char *const *strs,
                                      const uint64_t *lens, uint64_t n, dsq_err *err) {
    uint64_t bytes = 16;
    if (n > DSQ_GGUF_MAX_ARRAY) return dsq_err_set(err, DSQ_ERR_ARG, "gguf writer: key '%s': bad array", key);
    for (uint64_t i = 0; i < n; i++)
        if (lens[i] > DSQ_GGUF_MAX_STRING || !dsq_add_u64(bytes, 8 + lens[i], &bytes))
            return dsq_err_set(err, DSQ_ERR_ARG, "gguf writer: key '%s': string %llu too long", key, (unsigned long long)i);
    if (bytes > SIZE_MAX) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    uint8_t *buf = dsq_malloc((size_t)bytes);
    if (!buf) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    dsq_put_u32le(buf, DSQ_GGUF_V_ARRAY);
    dsq_put_u32le(buf + 4, DSQ_GGUF_V_STRING);
    dsq_put_u64le(buf + 8, n);
    size_t p = 16;
    for (uint64_t i = 0; i < n; i++) {
        dsq_put_u64le(buf + p, lens[i]);
        memcpy(buf + p + 8, strs[i], (size_t)lens[i]);
        p += 8 + (size_t)lens[i];
    }
    dsq_status st = add_kv(w, key, buf, p, err);
    dsq_free(buf);
    return st;
}

dsq_status dsq_gguf_writer_tensor(dsq_gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                  const uint64_t *ne, dsq_err *err) {
    if (w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: tensor %s after begin", name);
    size_t nl = strlen(name);
    if (nl == 0 || nl > DSQ_GGUF_MAX_NAME)
        return dsq_err_set(err, DSQ_ERR_ARG, "gguf writer: tensor name '%s' longer than %d bytes", name, DSQ_GGUF_MAX_NAME);
    if (w->n_t >= DSQ_GGUF_MAX_TENSORS) return dsq_err_set(err, DSQ_ERR_RANGE, "gguf writer: too many tensors");
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return dsq_err_set(err, DSQ_ERR_DUPLICATE, "gguf writer: tensor %s twice", name);
    uint64_t nb;
    dsq_status st = dsq_ggml_nbytes(type, n_dims, ne, &nb);
    if (st != DSQ_OK)
        return dsq_err_set(err, st, "gguf writer: tensor %s: %s with ne[0] = %llu (%d dims) is not a valid shape", name,
                           dsq_ggml_type_name(type), (unsigned long long)ne[0], n_dims);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 256;
        wtensor *p = dsq_realloc(w->t, cap * sizeof *p);
        if (!p) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
        w->t = p;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = dsq_strdup(name);
    if (!t->name) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < DSQ_GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->n_bytes = nb;
    w->n_t++;
    return DSQ_OK;
}

/* Header bytes of file `f` holding tensors [first, first+count), with `split` keys when n > 1.
 * The first file holds every kv; the others only the split keys (gguf-split convention). */
enum { SPLIT_KV_BYTES = (8 + 8 + 4 + 2) + (8 + 11 + 4 + 2) + (8 + 19 + 4 + 4) };
static uint64_t header_bytes(const dsq_gguf_writer *w, uint32_t f, size_t first, size_t count, uint32_t n_files) {
    uint64_t b = 24;
    if (f == 0)
        for (size_t i = 0; i < w->n_kv; i++) b += 8 + strlen(w->kv[i].key) + w->kv[i].val_len;
    if (n_files > 1) b += SPLIT_KV_BYTES;
    for (size_t i = first; i < first + count; i++) b += 8 + strlen(w->t[i].name) + 4 + 8 * (uint64_t)w->t[i].n_dims + 4 + 8;
    return b;
}

static dsq_status plan(dsq_gguf_writer *w, const dsq_gguf_writer_options *opt, dsq_gguf_plan *out, dsq_err *err) {
    uint32_t align = opt && opt->alignment ? opt->alignment : w->alignment;
    if (align == 0 || (align & (align - 1)) || align > DSQ_GGUF_MAX_ALIGN)
        return dsq_err_set(err, DSQ_ERR_ARG, "gguf writer: alignment %u", align);
    w->alignment = align;
    uint64_t max = opt ? opt->split_max_bytes : 0;
    /* two passes: the header size depends on whether the set is split */
    for (int pass = 0; pass < 2; pass++) {
        uint32_t n_files = pass == 0 ? 1 : 2;
        uint32_t nf = 0;
        size_t first = 0;
        dsq_free(w->files);
        w->files = dsq_calloc(w->n_t ? w->n_t : 1, sizeof *w->files);
        if (!w->files) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
        while (first < w->n_t || (nf == 0)) {
            size_t count = 0;
            uint64_t data = 0;
            for (size_t i = first; i < w->n_t; i++) {
                uint64_t pad, next;
                if (!dsq_pad_u64(data, align, &pad) || !dsq_add_u64(pad, w->t[i].n_bytes, &next))
                    return dsq_err_set(err, DSQ_ERR_OVERFLOW, "gguf writer: size overflow");
                uint64_t hdr = header_bytes(w, nf, first, count + 1, n_files), hp, tot;
                if (!dsq_pad_u64(hdr, align, &hp) || !dsq_add_u64(hp, next, &tot))
                    return dsq_err_set(err, DSQ_ERR_OVERFLOW, "gguf writer: size overflow");
                if (max && count > 0 && tot > max) break;
                w->t[i].offset = pad;
                w->t[i].file = nf;
                data = next;
                count++;
            }
            wfile *f = &w->files[nf];
            f->first = first;
            f->count = count;
            uint64_t hdr = header_bytes(w, nf, first, count, n_files);
            if (!dsq_pad_u64(hdr, align, &f->data_off) || !dsq_add_u64(f->data_off, data, &f->size))
                return dsq_err_set(err, DSQ_ERR_OVERFLOW, "gguf writer: size overflow");
            first += count;
            nf++;
            if (nf > DSQ_GGUF_MAX_SPLITS) return dsq_err_set(err, DSQ_ERR_RANGE, "gguf writer: more than %u split files", DSQ_GGUF_MAX_SPLITS);
            if (first >= w->n_t) break;
        }
        w->n_files = nf;
        if ((nf > 1) == (n_files > 1)) break;
    }
    dsq_gguf_plan p = {w->n_files, 0, 0};
    for (uint32_t i = 0; i < w->n_files; i++) p.total_bytes += w->files[i].size;
    for (size_t i = 0; i < w->n_t; i++) p.tensor_bytes += w->t[i].n_bytes;
    if (out) *out = p;
    return DSQ_OK;
}

dsq_status dsq_gguf_writer_plan(dsq_gguf_writer *w, const dsq_gguf_writer_options *opt, dsq_gguf_plan *out,
                                dsq_err *err) {
    if (w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: plan after begin");
    return plan(w, opt, out, err);
}

static void put_str(uint8_t *b, size_t *p, const char *s) {
    size_t n = strlen(s);
    dsq_put_u64le(b + *p, n);
    memcpy(b + *p + 8, s, n);
    *p += 8 + n;
}

static dsq_status write_header(dsq_gguf_writer *w, uint32_t fi, dsq_err *err) {
    wfile *f = &w->files[fi];
    uint8_t *b = dsq_calloc(1, (size_t)f->data_off);
    if (!b) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    size_t p = 0;
    memcpy(b, "GGUF", 4);
    dsq_put_u32le(b + 4, DSQ_GGUF_VERSION);
    dsq_put_u64le(b + 8, f->count);
    uint64_t nkv = (fi == 0 ? w->n_kv : 0) + (w->n_files > 1 ? 3 : 0);
    dsq_put_u64le(b + 16, nkv);
    p = 24;
    if (fi == 0)
        for (size_t i = 0; i < w->n_kv; i++) {
            put_str(b, &p, w->kv[i].key);
            memcpy(b + p, w->kv[i].val, w->kv[i].val_len);
            p += w->kv[i].val_len;
        }
    if (w->n_files > 1) { /* llama.cpp gguf-split: split.no u16 (0-based), split.count u16, split.tensors.count i32 */
        put_str(b, &p, "split.no");
        dsq_put_u32le(b + p, DSQ_GGUF_V_U16);
        dsq_put_u16le(b + p + 4, (uint16_t)fi);
        p += 6;
        put_str(b, &p, "split.count");
        dsq_put_u32le(b + p, DSQ_GGUF_V_U16);
        dsq_put_u16le(b + p + 4, (uint16_t)w->n_files);
        p += 6;
        put_str(b, &p, "split.tensors.count");
        dsq_put_u32le(b + p, DSQ_GGUF_V_I32);
        dsq_put_u32le(b + p + 4, (uint32_t)w->n_t);
        p += 8;
    }
    for (size_t i = f->first; i < f->first + f->count; i++) {
        wtensor *t = &w->t[i];
        put_str(b, &p, t->name);
        dsq_put_u32le(b + p, (uint32_t)t->n_dims);
        p += 4;
        for (int d = 0; d < t->n_dims; d++, p += 8) dsq_put_u64le(b + p, t->ne[d]);
        dsq_put_u32le(b + p, t->type);
        dsq_put_u64le(b + p + 4, t->offset);
        p += 12;
    }
    dsq_status st = dsq_afile_write(&f->f, b, (size_t)f->data_off, err);
    dsq_free(b);
    return st;
}

dsq_status dsq_gguf_writer_begin(dsq_gguf_writer *w, const char *path, const dsq_gguf_writer_options *opt,
                                 dsq_gguf_plan *out, dsq_err *err) {
    if (w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: begun twice");
    DSQ_TRY(plan(w, opt, out, err));
    w->begun = true;
    w->path = dsq_strdup(path);
    if (!w->path) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
    for (uint32_t i = 0; i < w->n_files; i++) {
        char *p = dsq_gguf_split_path(path, i + 1, w->n_files);
        if (!p) return dsq_err_set(err, DSQ_ERR_NOMEM, "gguf writer: out of memory");
        dsq_afile_options ao = {.overwrite = opt && opt->overwrite, .preallocate = w->files[i].size,
                                .direct = opt && opt->direct};
        dsq_status st = dsq_afile_open(p, &ao, &w->files[i].f, err);
        dsq_free(p);
        if (st != DSQ_OK) return st;
        w->files[i].open = true;
        DSQ_TRY(write_header(w, i, err));
    }
    w->cur = 0;
    w->cur_done = 0;
    w->file_pos = w->n_files ? w->files[0].data_off : 0;
    return DSQ_OK;
}

static const uint8_t ZEROS[4096];

static dsq_status pad_to(dsq_afile *f, uint64_t *pos, uint64_t target, dsq_err *err) {
    while (*pos < target) {
        size_t n = target - *pos > sizeof ZEROS ? sizeof ZEROS : (size_t)(target - *pos);
        DSQ_TRY(dsq_afile_write(f, ZEROS, n, err));
        *pos += n;
    }
    return DSQ_OK;
}

dsq_status dsq_gguf_writer_write(dsq_gguf_writer *w, const void *buf, size_t n, dsq_err *err) {
    if (!w->begun || w->finished) return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: write outside begin/finish");
    const uint8_t *p = buf;
    while (n > 0) {
        if (w->cur >= w->n_t) return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: %zu bytes past the last tensor", n);
        wtensor *t = &w->t[w->cur];
        wfile *f = &w->files[t->file];
        if (w->cur_done == 0) {
            if (w->cur == f->first) w->file_pos = f->data_off;
            DSQ_TRY(pad_to(&f->f, &w->file_pos, f->data_off + t->offset, err));
        }
        uint64_t left = t->n_bytes - w->cur_done;
        size_t k = n < left ? n : (size_t)left;
        if (k) DSQ_TRY(dsq_afile_write(&f->f, p, k, err));
        w->file_pos += k;
        w->cur_done += k;
        p += k;
        n -= k;
        if (w->cur_done == t->n_bytes) {
            w->cur++;
            w->cur_done = 0;
        }
    }
    return DSQ_OK;
}

dsq_status dsq_gguf_writer_finish(dsq_gguf_writer *w, dsq_err *err) {
    if (!w->begun || w->finished) return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: finish without begin");
    /* zero-byte tensors at the end never enter write(): walk past them */
    while (w->cur < w->n_t && w->t[w->cur].n_bytes == 0) w->cur++;
    if (w->cur < w->n_t)
        return dsq_err_set(err, DSQ_ERR_STATE, "gguf writer: tensor %s: %llu of %llu bytes written", w->t[w->cur].name,
                           (unsigned long long)w->cur_done, (unsigned long long)w->t[w->cur].n_bytes);
    for (uint32_t i = 0; i < w->n_files; i++) {
        /* the last tensor of a file may be followed by nothing: files end at their last byte */
        dsq_afile *f = &w->files[i].f;
        dsq_gguf *g = NULL;
        dsq_status st = dsq_gguf_open(f->tmp_path, &g, err);
        if (st == DSQ_OK && (dsq_gguf_file_size(g) != w->files[i].size || dsq_gguf_n_tensors(g) != w->files[i].count))
            st = dsq_err_set(err, DSQ_ERR_STATE, "%s: written file does not match its plan", f->final_path);
        dsq_gguf_close(g);
        if (st != DSQ_OK) return st;
    }
    for (uint32_t i = 0; i < w->n_files; i++) {
        dsq_status st = dsq_afile_commit(&w->files[i].f, err);
        w->files[i].open = false;
        if (st != DSQ_OK) return st;
    }
    w->finished = true;
    return DSQ_OK;
}
