/* .dsq reader: validate everything at open (spec formats/spec/dsq.md), then hand out const views. */
#define XXH_STATIC_LINKING_ONLY
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "container_internal.h"
#include "dsq_json.h"

struct dsq_ctr_reader {
    dsq__ctr_src src;
    dsq_map *map;            /* owned when opened from a path */
    bool data_readable;
    char *path;
    dsq_file_header hdr;
    dsq_file_section *sections;
    size_t n_sections;
    char *meta;              /* NUL-terminated JSON text */
    size_t meta_len;
    void *arena;             /* tensors, sources, owners and strings in one allocation */
    dsq_ctr_tensor *tensors;
    size_t n;
    dsq_ctr_source *sources;
    uint32_t *source_owner;  /* tensor index of each source */
    size_t n_sources;
    dsq__strmap by_name, by_source;
    bool verify_direct, parts_verified;
};

#define CHUNK (4u << 20)

static dsq_status map_src_read(void *ctx, uint64_t offset, void *buf, size_t n, dsq_err *err) {
    return dsq_map_read((const dsq_map *)ctx, offset, buf, n, err);
}

static uint64_t pad8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }
static bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* ---- header and directory ---- */

static dsq_status parse_header(dsq_ctr_reader *r, dsq_err *err) {
    const char *f = r->path;
    uint8_t b[DSQ_FILE_HEADER_BYTES];
    DSQ_RETURN_IF(r->src.size < DSQ_FILE_HEADER_BYTES, err, DSQ_ERR_TRUNCATED,
                  "%s: file is %llu bytes, smaller than the %u-byte header", f, (unsigned long long)r->src.size,
                  DSQ_FILE_HEADER_BYTES);
    DSQ_TRY(r->src.read(r->src.ctx, 0, b, sizeof b, err));
    dsq_file_header *h = &r->hdr;
    DSQ_RETURN_IF(dsq_file_header_decode(b, h) != 0, err, DSQ_ERR_MAGIC, "%s: not a .dsq file (bad magic at offset 0)",
                  f);
    DSQ_RETURN_IF(h->version_major != DSQ_FILE_VERSION_MAJOR, err, DSQ_ERR_VERSION,
                  "%s: format version %u.%u is not supported (this reader reads %u.x)", f, h->version_major,
                  h->version_minor, DSQ_FILE_VERSION_MAJOR);
    uint64_t sum = dsq__ctr_xxh3(b, DSQ_FILE_HDR_HEADER_XXH3);
    DSQ_RETURN_IF(sum != h->header_xxh3, err, DSQ_ERR_CHECKSUM,
                  "%s: header checksum mismatch at offset %u (stored %016llx, computed %016llx)", f,
                  DSQ_FILE_HDR_HEADER_XXH3, (unsigned long long)h->header_xxh3, (unsigned long long)sum);

    size_t before = err ? err->n : 0;
    dsq_status first = DSQ_OK;
#define PROBLEM(code, ...)                                                                                             \
    do {                                                                                                               \
        dsq_status s_ = dsq_err_set(err, (code), __VA_ARGS__);                                                         \
        if (first == DSQ_OK) first = s_;                                                                               \
    } while (0)
    if (h->header_bytes != DSQ_FILE_HEADER_BYTES)
        PROBLEM(DSQ_ERR_FORMAT, "%s: header_bytes is %u, expected %u", f, h->header_bytes, DSQ_FILE_HEADER_BYTES);
    if (h->required_flags != 0)
        PROBLEM(DSQ_ERR_UNSUPPORTED, "%s: required feature flags %#llx are not understood by this reader", f,
                (unsigned long long)h->required_flags);
    for (int i = DSQ_FILE_HDR_RESERVED; i < DSQ_FILE_HDR_HEADER_XXH3; i++)
        if (b[i] != 0) {
            PROBLEM(DSQ_ERR_FORMAT, "%s: reserved header byte at offset %d is not zero", f, i);
            break;
        }
    if (h->file_bytes != r->src.size)
        PROBLEM(h->file_bytes > r->src.size ? DSQ_ERR_TRUNCATED : DSQ_ERR_FORMAT,
                "%s: header says %llu bytes but the file has %llu", f, (unsigned long long)h->file_bytes,
                (unsigned long long)r->src.size);
    if (!is_pow2(h->align_small) || !is_pow2(h->align_large) || h->align_small < DSQ_FILE_MIN_ALIGN ||
        h->align_large > DSQ_FILE_MAX_ALIGN || h->align_small > h->align_large)
        PROBLEM(DSQ_ERR_FORMAT,
                "%s: alignments %u / %u invalid (powers of two with %u <= small <= large <= %u required)", f,
                h->align_small, h->align_large, DSQ_FILE_MIN_ALIGN, DSQ_FILE_MAX_ALIGN);
    else if (h->data_offset < DSQ_FILE_HEADER_BYTES || h->data_offset % h->align_large != 0)
        PROBLEM(DSQ_ERR_FORMAT, "%s: data_offset %llu is not a multiple of %u at or after the header", f,
                (unsigned long long)h->data_offset, h->align_large);
    uint64_t data_end = 0, dir_bytes = 0, dir_end = 0;
    if (!dsq_add_u64(h->data_offset, h->data_bytes, &data_end))
        PROBLEM(DSQ_ERR_OVERFLOW, "%s: data_offset + data_bytes overflows", f);
    else if (data_end > r->src.size)
        PROBLEM(DSQ_ERR_RANGE, "%s: data region [%llu, %llu) extends past the end of the file (%llu bytes)", f,
                (unsigned long long)h->data_offset, (unsigned long long)data_end, (unsigned long long)r->src.size);
    else if (h->directory_offset != pad8(data_end))
        PROBLEM(DSQ_ERR_RANGE, "%s: directory_offset %llu out of range: must be %llu (right after the data region)", f,
                (unsigned long long)h->directory_offset, (unsigned long long)pad8(data_end));
    if (h->section_count < 2 || h->section_count > DSQ_FILE_MAX_SECTIONS)
        PROBLEM(DSQ_ERR_RANGE, "%s: section_count %u out of range [2, %u]", f, h->section_count, DSQ_FILE_MAX_SECTIONS);
    if (h->section_entry_bytes < DSQ_FILE_SECTION_ENTRY_BYTES || h->section_entry_bytes % 8 != 0 ||
        h->section_entry_bytes > 4096)
        PROBLEM(DSQ_ERR_FORMAT, "%s: section_entry_bytes %u invalid", f, h->section_entry_bytes);
    if (!dsq_mul_u64(h->section_count, h->section_entry_bytes, &dir_bytes) ||
        !dsq_add_u64(h->directory_offset, dir_bytes, &dir_end))
        PROBLEM(DSQ_ERR_OVERFLOW, "%s: directory size overflows", f);
    else if (first == DSQ_OK && dir_end > r->src.size)
        PROBLEM(DSQ_ERR_TRUNCATED, "%s: section directory [%llu, %llu) extends past the end of the file", f,
                (unsigned long long)h->directory_offset, (unsigned long long)dir_end);
#undef PROBLEM
    (void)before;
    return first;
}

static dsq_status parse_directory(dsq_ctr_reader *r, dsq_err *err) {
    const char *f = r->path;
    const dsq_file_header *h = &r->hdr;
    size_t dir_bytes = (size_t)h->section_count * h->section_entry_bytes; /* ≤ 1024 × 4096, checked above */
    uint8_t *dir = dsq_malloc(dir_bytes);
    r->sections = dsq_calloc(h->section_count, sizeof *r->sections);
    if (!dir || !r->sections) {
        dsq_free(dir);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", f);
    }
    dsq_status s = r->src.read(r->src.ctx, h->directory_offset, dir, dir_bytes, err);
    if (s != DSQ_OK) {
        dsq_free(dir);
        return s;
    }
    uint64_t sum = dsq__ctr_xxh3(dir, dir_bytes);
    if (sum != h->directory_xxh3) {
        dsq_free(dir);
        return dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: section directory checksum mismatch at offset %llu", f,
                           (unsigned long long)h->directory_offset);
    }
    r->n_sections = h->section_count;
    dsq_status first = DSQ_OK;
    uint64_t prev_end = h->directory_offset + dir_bytes;
    int n_meta = 0, n_table = 0;
    for (size_t i = 0; i < r->n_sections; i++) {
        dsq_file_section *sec = &r->sections[i];
        const uint8_t *e = dir + i * h->section_entry_bytes;
        dsq_file_section_decode(e, sec);
        dsq_status st = DSQ_OK;
        uint64_t end;
        if (sec->flags & ~(uint32_t)DSQ_FILE_SECTION_KNOWN_FLAGS)
            st = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: section %zu: unknown flags %#x", f, i, sec->flags);
        else if (dsq_file_le64(e + 40) != 0)
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: section %zu: reserved field is not zero", f, i);
        else if (sec->stored_bytes > DSQ_FILE_MAX_SECTION || sec->raw_bytes > DSQ_FILE_MAX_SECTION)
            st = dsq_err_set(err, DSQ_ERR_RANGE, "%s: section %zu: %llu / %llu bytes exceed the %u-byte limit", f, i,
                             (unsigned long long)sec->stored_bytes, (unsigned long long)sec->raw_bytes,
                             DSQ_FILE_MAX_SECTION);
        else if (!(sec->flags & DSQ_FILE_SECTION_ZSTD) && sec->raw_bytes != sec->stored_bytes)
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: section %zu: raw_bytes differs from stored_bytes", f, i);
        else if (sec->offset < prev_end)
            st = dsq_err_set(err, DSQ_ERR_OVERLAP, "%s: section %zu at offset %llu overlaps the previous item (ends at %llu)",
                             f, i, (unsigned long long)sec->offset, (unsigned long long)prev_end);
        else if (sec->offset != pad8(prev_end))
            st = dsq_err_set(err, DSQ_ERR_RANGE, "%s: section %zu offset %llu out of range: expected %llu", f, i,
                             (unsigned long long)sec->offset, (unsigned long long)pad8(prev_end));
        else if (!dsq_add_u64(sec->offset, sec->stored_bytes, &end) || end > h->file_bytes)
            st = dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: section %zu [%llu, +%llu) extends past the end of the file", f,
                             i, (unsigned long long)sec->offset, (unsigned long long)sec->stored_bytes);
        else
            prev_end = end;
        if (st == DSQ_OK) {
            if (sec->kind == DSQ_FILE_SECTION_METADATA) n_meta++;
            else if (sec->kind == DSQ_FILE_SECTION_TENSOR_TABLE) {
                n_table++;
                if (sec->flags & DSQ_FILE_SECTION_ZSTD)
                    st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: the tensor table section may not be compressed", f);
            } else if (sec->flags & DSQ_FILE_SECTION_MUST_UNDERSTAND)
                st = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: section %zu of kind %u must be understood but is unknown",
                                 f, i, sec->kind);
        }
        if (st != DSQ_OK && first == DSQ_OK) first = st;
    }
    dsq_free(dir);
    if (first != DSQ_OK) return first;
    if (prev_end != h->file_bytes)
        first = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %llu unaccounted bytes after the last section", f,
                            (unsigned long long)(h->file_bytes - prev_end));
    if (n_meta != 1)
        first = dsq_err_set(err, n_meta ? DSQ_ERR_DUPLICATE : DSQ_ERR_MISSING, "%s: %d metadata sections (need exactly 1)",
                            f, n_meta);
    if (n_table != 1)
        first = dsq_err_set(err, n_table ? DSQ_ERR_DUPLICATE : DSQ_ERR_MISSING,
                            "%s: %d tensor table sections (need exactly 1)", f, n_table);
    return first;
}

static const dsq_file_section *find_section(const dsq_ctr_reader *r, uint32_t kind) {
    for (size_t i = 0; i < r->n_sections; i++)
        if (r->sections[i].kind == kind) return &r->sections[i];
    return NULL;
}

/* Read a section's stored bytes (+1 NUL) and check its checksum. */
static dsq_status read_section(dsq_ctr_reader *r, const dsq_file_section *sec, const char *what, uint8_t **out,
                               dsq_err *err) {
    uint8_t *buf = dsq_malloc((size_t)sec->stored_bytes + 1);
    if (!buf) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory reading the %s", r->path, what);
    dsq_status s = r->src.read(r->src.ctx, sec->offset, buf, (size_t)sec->stored_bytes, err);
    if (s == DSQ_OK && dsq__ctr_xxh3(buf, (size_t)sec->stored_bytes) != sec->xxh3)
        s = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: %s checksum mismatch (section at offset %llu)", r->path, what,
                        (unsigned long long)sec->offset);
    if (s != DSQ_OK) {
        dsq_free(buf);
        return s;
    }
    buf[sec->stored_bytes] = 0;
    *out = buf;
    return DSQ_OK;
}

static dsq_status parse_metadata(dsq_ctr_reader *r, dsq_err *err) {
    const dsq_file_section *sec = find_section(r, DSQ_FILE_SECTION_METADATA);
    uint8_t *stored;
    DSQ_TRY(read_section(r, sec, "metadata", &stored, err));
    char *text = (char *)stored;
    if (sec->flags & DSQ_FILE_SECTION_ZSTD) {
        unsigned long long csize = ZSTD_getFrameContentSize(stored, (size_t)sec->stored_bytes);
        text = dsq_malloc((size_t)sec->raw_bytes + 1);
        if (!text) {
            dsq_free(stored);
            return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", r->path);
        }
        size_t got = ZSTD_decompress(text, (size_t)sec->raw_bytes, stored, (size_t)sec->stored_bytes);
        dsq_free(stored);
        if (ZSTD_isError(got) || csize != sec->raw_bytes || got != sec->raw_bytes) {
            dsq_free(text);
            return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: metadata zstd frame invalid (%s; expected %llu bytes)", r->path,
                               ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong decompressed size",
                               (unsigned long long)sec->raw_bytes);
        }
        text[sec->raw_bytes] = 0;
    }
    r->meta = text;
    r->meta_len = (size_t)sec->raw_bytes;
    DSQ_RETURN_IF(strlen(text) != r->meta_len, err, DSQ_ERR_JSON, "%s: metadata contains a NUL byte", r->path);
    cJSON *j = NULL;
    DSQ_TRY(dsq_json_parse(text, r->meta_len, r->path, &j, err));
    bool obj = cJSON_IsObject(j);
    cJSON_Delete(j);
    DSQ_RETURN_IF(!obj, err, DSQ_ERR_JSON, "%s: metadata is not a JSON object", r->path);
    return DSQ_OK;
}

/* ---- tensor table ---- */

typedef struct part_ref {
    uint64_t offset, end;
    uint32_t tensor;
    int part;
} part_ref;

static int part_ref_cmp(const void *a, const void *b) {
    const part_ref *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1 : 0;
}

/* Every part of every tensor, sorted by offset (*np of them; at least one slot is allocated). */
static part_ref *parts_by_offset(const dsq_ctr_reader *r, size_t *np, dsq_err *err) {
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) n += (size_t)r->tensors[i].n_parts;
    part_ref *refs = dsq_malloc((n ? n : 1) * sizeof *refs);
    if (!refs) {
        dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", r->path);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++)
        for (int p = 0; p < r->tensors[i].n_parts; p++, k++) {
            refs[k].offset = r->tensors[i].parts[p].offset;
            refs[k].end = refs[k].offset + r->tensors[i].parts[p].bytes;
            refs[k].tensor = (uint32_t)i;
            refs[k].part = p;
        }
    qsort(refs, n, sizeof *refs, part_ref_cmp);
    *np = n;
    return refs;
}

/* Pass 1: record framing only.  Sums what the arena needs. */
static dsq_status frame_table(const dsq_ctr_reader *r, const uint8_t *tb, uint64_t size, uint32_t *count,
                              uint64_t *n_sources, uint64_t *str_bytes, dsq_err *err) {
    const char *f = r->path;
    DSQ_RETURN_IF(size < DSQ_FILE_TABLE_HEADER_BYTES, err, DSQ_ERR_FORMAT, "%s: tensor table is %llu bytes (< 16)", f,
                  (unsigned long long)size);
    *count = dsq_file_le32(tb);
    DSQ_RETURN_IF(dsq_file_le32(tb + 4) != 0 || dsq_file_le64(tb + 8) != 0, err, DSQ_ERR_FORMAT,
                  "%s: tensor table reserved fields not zero", f);
    DSQ_RETURN_IF(*count > (size - DSQ_FILE_TABLE_HEADER_BYTES) / DSQ_FILE_MIN_RECORD, err, DSQ_ERR_RANGE,
                  "%s: tensor count %u out of range for a %llu-byte table", f, *count, (unsigned long long)size);
    uint64_t pos = DSQ_FILE_TABLE_HEADER_BYTES;
    *n_sources = 0;
    *str_bytes = 0;
    for (uint32_t i = 0; i < *count; i++) {
        const uint8_t *p = tb + pos;
        uint64_t rb = size - pos >= 4 ? dsq_file_le32(p) : 0;
        DSQ_RETURN_IF(rb < DSQ_FILE_MIN_RECORD || rb % 8 != 0 || rb > size - pos, err, DSQ_ERR_FORMAT,
                      "%s: tensor record %u at table offset %llu: record_bytes %llu invalid", f, i,
                      (unsigned long long)pos, (unsigned long long)rb);
        uint32_t name_len = dsq_file_le16(p + DSQ_FILE_REC_NAME_BYTES), rank = p[DSQ_FILE_REC_RANK];
        uint32_t nparts = p[DSQ_FILE_REC_PART_COUNT], nsrc = dsq_file_le32(p + DSQ_FILE_REC_SOURCE_COUNT);
        DSQ_RETURN_IF(rank > DSQ_FILE_MAX_RANK, err, DSQ_ERR_RANGE, "%s: tensor record %u: rank %u exceeds %d", f, i,
                      rank, DSQ_FILE_MAX_RANK);
        DSQ_RETURN_IF(name_len < 1 || name_len > DSQ_FILE_MAX_NAME, err, DSQ_ERR_RANGE,
                      "%s: tensor record %u: name of %u bytes (allowed 1..%u)", f, i, name_len, DSQ_FILE_MAX_NAME);
        DSQ_RETURN_IF(nparts < 1 || nparts > DSQ_FILE_MAX_PARTS, err, DSQ_ERR_FORMAT,
                      "%s: tensor record %u: %u parts (allowed 1..%d)", f, i, nparts, DSQ_FILE_MAX_PARTS);
        uint64_t need = DSQ_FILE_RECORD_FIXED_BYTES + 8ull * rank + (uint64_t)DSQ_FILE_PART_BYTES * nparts + pad8(name_len);
        DSQ_RETURN_IF(need > rb, err, DSQ_ERR_FORMAT, "%s: tensor record %u: %llu bytes needed, record has %llu", f, i,
                      (unsigned long long)need, (unsigned long long)rb);
        *str_bytes += name_len + 1;
        /* each source is ≥ 48 bytes inside rb: the loop is bounded by the record size */
        for (uint32_t k = 0; k < nsrc; k++) {
            DSQ_RETURN_IF(rb - need < DSQ_FILE_SOURCE_FIXED_BYTES, err, DSQ_ERR_FORMAT,
                          "%s: tensor record %u: source %u runs past the record", f, i, k);
            const uint8_t *s = p + need;
            uint32_t a = dsq_file_le16(s + DSQ_FILE_SRC_NAME_BYTES), b = dsq_file_le16(s + DSQ_FILE_SRC_SCALE_NAME_BYTES);
            DSQ_RETURN_IF(a < 1 || a > DSQ_FILE_MAX_NAME || b > DSQ_FILE_MAX_NAME, err, DSQ_ERR_RANGE,
                          "%s: tensor record %u: source %u name lengths %u / %u out of range", f, i, k, a, b);
            uint64_t sb = DSQ_FILE_SOURCE_FIXED_BYTES + pad8(a + b);
            DSQ_RETURN_IF(sb > rb - need, err, DSQ_ERR_FORMAT, "%s: tensor record %u: source %u runs past the record",
                          f, i, k);
            need += sb;
            *str_bytes += a + 1 + (b ? b + 1 : 0);
            (*n_sources)++;
        }
        pos += rb;
    }
    DSQ_RETURN_IF(pos != size, err, DSQ_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor record", f,
                  (unsigned long long)(size - pos));
    return DSQ_OK;
}

static char *take_str(char **strs, const uint8_t *p, size_t n) {
    char *s = *strs;
    memcpy(s, p, n);
    s[n] = 0;
    *strs += n + 1;
    return s;
}

/* Pass 2: decode every record into the arena and validate it against spec §5.  Collects problems. */
static dsq_status decode_table(dsq_ctr_reader *r, const uint8_t *tb, dsq_err *err) {
    const char *f = r->path;
    const dsq_file_header *h = &r->hdr;
    uint64_t data_end = h->data_offset + h->data_bytes, pos = DSQ_FILE_TABLE_HEADER_BYTES, src_i = 0;
    char *strs = (char *)(r->source_owner + r->n_sources);
    dsq_status first = DSQ_OK;
#define BAD(code, ...)                                                                                                 \
    do {                                                                                                               \
        dsq_status s_ = dsq_err_set(err, (code), __VA_ARGS__);                                                         \
        if (first == DSQ_OK) first = s_;                                                                               \
        ok = false;                                                                                                    \
    } while (0)
    for (uint32_t i = 0; i < r->n; i++) {
        const uint8_t *p = tb + pos;
        dsq_ctr_tensor *t = &r->tensors[i];
        bool ok = true;
        uint32_t rb = dsq_file_le32(p), name_len = dsq_file_le16(p + DSQ_FILE_REC_NAME_BYTES);
        t->index = i;
        t->encoding = (dsq_encoding)dsq_file_le16(p + DSQ_FILE_REC_ENCODING);
        t->rank = p[DSQ_FILE_REC_RANK];
        t->n_parts = p[DSQ_FILE_REC_PART_COUNT];
        t->n_sources = dsq_file_le32(p + DSQ_FILE_REC_SOURCE_COUNT);
        t->block_rows = dsq_file_le32(p + DSQ_FILE_REC_BLOCK_ROWS);
        t->block_cols = dsq_file_le32(p + DSQ_FILE_REC_BLOCK_COLS);
        const uint8_t *q = p + DSQ_FILE_REC_SHAPE;
        for (int d = 0; d < t->rank; d++, q += 8) t->shape[d] = dsq_file_le64(q);
        const uint8_t *parts = q;
        const uint8_t *name = parts + (size_t)DSQ_FILE_PART_BYTES * t->n_parts;
        t->name = take_str(&strs, name, name_len);
        if (!dsq__ctr_name_ok((const char *)name, name_len))
            BAD(DSQ_ERR_FORMAT, "%s: tensor record %u: name is not valid UTF-8 without NUL bytes", f, i);
        uint32_t dup;
        if (!dsq__strmap_put(&r->by_name, t->name, i, &dup))
            BAD(DSQ_ERR_DUPLICATE, "%s: tensor %s appears twice (records %u and %u)", f, t->name, dup, i);
        uint16_t flags = dsq_file_le16(p + DSQ_FILE_REC_FLAGS);
        if (flags) BAD(DSQ_ERR_UNSUPPORTED, "%s: tensor %s: unknown flags %#x", f, t->name, flags);
        if (dsq_file_le64(p + DSQ_FILE_REC_RESERVED) != 0)
            BAD(DSQ_ERR_FORMAT, "%s: tensor %s: reserved field not zero", f, t->name);
        for (int k = 0; k < t->n_parts; k++) {
            const uint8_t *pp = parts + (size_t)k * DSQ_FILE_PART_BYTES;
            dsq_ctr_part *part = &t->parts[k];
            part->kind = pp[0];
            part->dtype = (dsq_dtype)pp[1];
            part->offset = dsq_file_le64(pp + 8);
            part->bytes = dsq_file_le64(pp + 16);
            part->xxh3 = dsq_file_le64(pp + 24);
            if (dsq_file_le16(pp + 2) || dsq_file_le32(pp + 4))
                BAD(DSQ_ERR_FORMAT, "%s: tensor %s: part %d reserved bytes not zero", f, t->name, k);
        }
        dsq_file_part_layout expect[DSQ_FILE_MAX_PARTS];
        int ne = dsq__ctr_expected_parts(f, t, expect, err);
        if (ne < 0) {
            if (first == DSQ_OK) first = ne;
            ok = false;
        } else if (ne != t->n_parts) {
            BAD(DSQ_ERR_FORMAT, "%s: tensor %s: %d parts stored, encoding %s has %d", f, t->name, t->n_parts,
                dsq_ctr_encoding_name(t->encoding), ne);
        } else {
            for (int k = 0; k < ne; k++) {
                const dsq_ctr_part *part = &t->parts[k];
                uint64_t end, align = part->bytes >= h->large_threshold ? h->align_large : h->align_small;
                if (part->kind != expect[k].kind || (int)part->dtype != expect[k].dtype)
                    BAD(DSQ_ERR_FORMAT, "%s: tensor %s: part %d is kind %u dtype %s, encoding %s needs kind %u dtype %s",
                        f, t->name, k, part->kind, dsq__ctr_dtype_name(part->dtype), dsq_ctr_encoding_name(t->encoding),
                        expect[k].kind, dsq__ctr_dtype_name(expect[k].dtype));
                else if (part->bytes != expect[k].bytes)
                    BAD(DSQ_ERR_SHAPE, "%s: tensor %s: part %d holds %llu bytes, shape and encoding give %llu", f,
                        t->name, k, (unsigned long long)part->bytes, (unsigned long long)expect[k].bytes);
                else if (part->offset < h->data_offset || !dsq_add_u64(part->offset, part->bytes, &end) ||
                         end > data_end)
                    BAD(DSQ_ERR_RANGE,
                        "%s: tensor %s: part %d [offset %llu, %llu bytes) out of range of the data region [%llu, %llu)",
                        f, t->name, k, (unsigned long long)part->offset, (unsigned long long)part->bytes,
                        (unsigned long long)h->data_offset, (unsigned long long)data_end);
                else if (part->offset % align != 0)
                    BAD(DSQ_ERR_FORMAT, "%s: tensor %s: part %d at offset %llu is misaligned (needs %llu)", f, t->name,
                        k, (unsigned long long)part->offset, (unsigned long long)align);
            }
        }
        /* sources */
        const uint8_t *s = name + pad8(name_len);
        dsq_ctr_source *srcs = r->sources + src_i;
        t->sources = t->n_sources ? srcs : NULL;
        for (uint32_t k = 0; k < t->n_sources; k++, src_i++) {
            dsq_ctr_source *src = &srcs[k];
            uint32_t a = dsq_file_le16(s + DSQ_FILE_SRC_NAME_BYTES), b = dsq_file_le16(s + DSQ_FILE_SRC_SCALE_NAME_BYTES);
            src->start = dsq_file_le64(s + DSQ_FILE_SRC_START);
            src->count = dsq_file_le64(s + DSQ_FILE_SRC_COUNT);
            uint8_t squeeze = s[DSQ_FILE_SRC_SQUEEZE], sdt = s[DSQ_FILE_SRC_SCALE_DTYPE];
            src->squeeze = squeeze == 1;
            src->dtype = (dsq_dtype)s[DSQ_FILE_SRC_DTYPE];
            src->scale_dtype = sdt == DSQ_FILE_DTYPE_NONE ? -1 : sdt;
            src->shard = dsq_file_le32(s + DSQ_FILE_SRC_SHARD);
            src->xxh3 = dsq_file_le64(s + DSQ_FILE_SRC_XXH3);
            src->scale_xxh3 = dsq_file_le64(s + DSQ_FILE_SRC_SCALE_XXH3);
            src->name = take_str(&strs, s + DSQ_FILE_SRC_NAMES, a);
            src->scale_name = b ? take_str(&strs, s + DSQ_FILE_SRC_NAMES + a, b) : NULL;
            r->source_owner[src_i] = i;
            if (squeeze > 1 || s[19] != 0 || dsq_file_le32(s + 28) != 0)
                BAD(DSQ_ERR_FORMAT, "%s: tensor %s: source %u has invalid flag or reserved bytes", f, t->name, k);
            if (!dsq__ctr_name_ok(src->name, a) || (b && !dsq__ctr_name_ok(src->scale_name, b)))
                BAD(DSQ_ERR_FORMAT, "%s: tensor %s: source %u name is not valid UTF-8 without NUL bytes", f, t->name, k);
            if (!dsq__strmap_put(&r->by_source, src->name, (uint32_t)src_i, NULL))
                BAD(DSQ_ERR_DUPLICATE, "%s: source tensor %s is listed twice", f, src->name);
            s += DSQ_FILE_SOURCE_FIXED_BYTES + pad8(a + b);
        }
        if (ok) {
            dsq_status st = dsq__ctr_check_sources(f, t, err);
            if (st != DSQ_OK) {
                if (first == DSQ_OK) first = st;
                ok = false;
            }
        }
        pos += rb;
    }
#undef BAD
    return first;
}

static dsq_status check_overlaps(dsq_ctr_reader *r, dsq_err *err) {
    size_t np = 0;
    for (size_t i = 0; i < r->n; i++) np += (size_t)r->tensors[i].n_parts;
    if (np == 0) {
        DSQ_RETURN_IF(r->hdr.data_bytes != 0, err, DSQ_ERR_FORMAT, "%s: no tensors but data_bytes is %llu", r->path,
                      (unsigned long long)r->hdr.data_bytes);
        return DSQ_OK;
    }
    part_ref *refs = parts_by_offset(r, &np, err);
    if (!refs) return DSQ_ERR_NOMEM;
    dsq_status first = DSQ_OK;
    for (size_t i = 1; i < np; i++)
        if (refs[i].offset < refs[i - 1].end) {
            dsq_status s = dsq_err_set(err, DSQ_ERR_OVERLAP, "%s: tensor %s part %d overlaps tensor %s part %d at offset %llu",
                                       r->path, r->tensors[refs[i].tensor].name, refs[i].part,
                                       r->tensors[refs[i - 1].tensor].name, refs[i - 1].part,
                                       (unsigned long long)refs[i].offset);
            if (first == DSQ_OK) first = s;
        }
    if (first == DSQ_OK && refs[np - 1].end != r->hdr.data_offset + r->hdr.data_bytes) {
        uint64_t end = 0;
        for (size_t i = 0; i < np; i++)
            if (refs[i].end > end) end = refs[i].end;
        if (end != r->hdr.data_offset + r->hdr.data_bytes)
            first = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: data region ends at %llu but the last part ends at %llu",
                                r->path, (unsigned long long)(r->hdr.data_offset + r->hdr.data_bytes),
                                (unsigned long long)end);
    }
    dsq_free(refs);
    return first;
}

static dsq_status parse_table(dsq_ctr_reader *r, dsq_err *err) {
    const dsq_file_section *sec = find_section(r, DSQ_FILE_SECTION_TENSOR_TABLE);
    uint8_t *tb;
    DSQ_TRY(read_section(r, sec, "tensor table", &tb, err));
    uint32_t count = 0;
    uint64_t n_sources = 0, str_bytes = 0, arena_bytes = 0, t1, t2, t3;
    dsq_status s = frame_table(r, tb, sec->stored_bytes, &count, &n_sources, &str_bytes, err);
    if (s == DSQ_OK) {
        if (!dsq_mul_u64(count, sizeof(dsq_ctr_tensor), &t1) || !dsq_mul_u64(n_sources, sizeof(dsq_ctr_source), &t2) ||
            !dsq_mul_u64(n_sources, sizeof(uint32_t), &t3) || !dsq_add_u64(t1, t2, &arena_bytes) ||
            !dsq_add_u64(arena_bytes, t3, &arena_bytes) || !dsq_add_u64(arena_bytes, str_bytes, &arena_bytes) ||
            arena_bytes > SIZE_MAX)
            s = dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: tensor table too large", r->path);
    }
    if (s == DSQ_OK) {
        r->arena = dsq_calloc(1, (size_t)arena_bytes);
        bool maps = r->arena && dsq__strmap_init(&r->by_name, count) && dsq__strmap_init(&r->by_source, (size_t)n_sources);
        if (!maps) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for %u tensors", r->path, count);
    }
    if (s == DSQ_OK) {
        r->n = count;
        r->n_sources = (size_t)n_sources;
        r->tensors = r->arena;
        r->sources = (dsq_ctr_source *)(r->tensors + count);
        r->source_owner = (uint32_t *)(r->sources + n_sources);
        s = decode_table(r, tb, err);
    }
    dsq_free(tb);
    if (s == DSQ_OK) s = check_overlaps(r, err);
    return s;
}

dsq_status dsq__ctr_reader_open_src(const dsq__ctr_src *src, bool data_readable, dsq_ctr_reader **out, dsq_err *err) {
    *out = NULL;
    dsq_ctr_reader *r = dsq_calloc(1, sizeof *r);
    if (!r) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", src->name);
    r->src = *src;
    r->data_readable = data_readable;
    r->path = dsq_strdup(src->name);
    if (!r->path) {
        dsq_free(r);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", src->name);
    }
    dsq_status s = parse_header(r, err);
    if (s == DSQ_OK) s = parse_directory(r, err);
    if (s == DSQ_OK) s = parse_metadata(r, err);
    if (s == DSQ_OK) s = parse_table(r, err);
    if (s != DSQ_OK) {
        dsq_ctr_reader_close(r);
        return s;
    }
    if (r->src.map && data_readable)
        for (size_t i = 0; i < r->n; i++)
            for (int p = 0; p < r->tensors[i].n_parts; p++)
                r->tensors[i].parts[p].data = r->src.map + r->tensors[i].parts[p].offset;
    *out = r;
    return DSQ_OK;
}

dsq_status dsq_ctr_reader_open(const char *path, const dsq_ctr_reader_options *opt, dsq_ctr_reader **out, dsq_err *err) {
    dsq_ctr_reader_options o = {0};
    if (opt) o = *opt;
    *out = NULL;
    dsq_map *m = dsq_malloc(sizeof *m);
    if (!m) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    dsq_status s = dsq_map_open(path, !o.no_mmap, m, err);
    if (s != DSQ_OK) {
        dsq_free(m);
        return s;
    }
    dsq__ctr_src src = {map_src_read, m, m->size, path, m->data};
    dsq_ctr_reader *r;
    s = dsq__ctr_reader_open_src(&src, true, &r, err);
    if (s != DSQ_OK) {
        dsq_map_close(m);
        dsq_free(m);
        return s;
    }
    r->map = m;
    r->verify_direct = o.verify_direct;
    r->parts_verified = o.parts_verified;
    if (o.verify) {
        s = dsq_ctr_verify(r, NULL, err);
        if (s != DSQ_OK) {
            dsq_ctr_reader_close(r);
            return s;
        }
    }
    *out = r;
    return DSQ_OK;
}

void dsq_ctr_reader_close(dsq_ctr_reader *r) {
    if (!r) return;
    if (r->map) {
        dsq_map_close(r->map);
        dsq_free(r->map);
    }
    dsq__strmap_free(&r->by_name);
    dsq__strmap_free(&r->by_source);
    dsq_free(r->arena);
    dsq_free(r->sections);
    dsq_free(r->meta);
    dsq_free(r->path);
    dsq_free(r);
}

const char *dsq_ctr_path(const dsq_ctr_reader *r) { return r->path; }
const dsq_file_header *dsq_ctr_header(const dsq_ctr_reader *r) { return &r->hdr; }
size_t dsq_ctr_count(const dsq_ctr_reader *r) { return r->n; }
const dsq_ctr_tensor *dsq_ctr_at(const dsq_ctr_reader *r, size_t i) { return i < r->n ? &r->tensors[i] : NULL; }
const dsq_ctr_tensor *dsq_ctr_find(const dsq_ctr_reader *r, const char *name) {
    uint32_t i;
    return dsq__strmap_get(&r->by_name, name, &i) ? &r->tensors[i] : NULL;
}
bool dsq_ctr_find_source(const dsq_ctr_reader *r, const char *name, const dsq_ctr_tensor **t, const dsq_ctr_source **s) {
    uint32_t i;
    if (!dsq__strmap_get(&r->by_source, name, &i)) return false;
    if (t) *t = &r->tensors[r->source_owner[i]];
    if (s) *s = &r->sources[i];
    return true;
}
const char *dsq_ctr_metadata(const dsq_ctr_reader *r, size_t *len) {
    if (len) *len = r->meta_len;
    return r->meta;
}
size_t dsq_ctr_section_count(const dsq_ctr_reader *r) { return r->n_sections; }
const dsq_file_section *dsq_ctr_section(const dsq_ctr_reader *r, size_t i) {
    return i < r->n_sections ? &r->sections[i] : NULL;
}

dsq_status dsq_ctr_read(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t offset, void *buf, size_t n,
                        dsq_err *err) {
    DSQ_RETURN_IF(p < 0 || p >= t->n_parts, err, DSQ_ERR_ARG, "%s: tensor %s has no part %d", r->path, t->name, p);
    const dsq_ctr_part *part = &t->parts[p];
    DSQ_RETURN_IF(offset > part->bytes || n > part->bytes - offset, err, DSQ_ERR_RANGE,
                  "%s: tensor %s: read of %zu bytes at %llu past the end of part %d (%llu bytes)", r->path, t->name, n,
                  (unsigned long long)offset, p, (unsigned long long)part->bytes);
    DSQ_RETURN_IF(!r->data_readable, err, DSQ_ERR_STATE, "%s: tensor data is not available from this source", r->path);
    return r->src.read(r->src.ctx, part->offset + offset, buf, n, err);
}

void dsq_ctr_prefetch(const dsq_ctr_reader *r, const dsq_ctr_tensor *t) {
    if (!r->map) return;
    for (int p = 0; p < t->n_parts; p++) dsq_map_willneed(r->map, t->parts[p].offset, t->parts[p].bytes);
}
void dsq_ctr_release(const dsq_ctr_reader *r, const dsq_ctr_tensor *t) {
    if (!r->map) return;
    for (int p = 0; p < t->n_parts; p++) dsq_map_dontneed(r->map, t->parts[p].offset, t->parts[p].bytes);
}
static bool part_range(const dsq_ctr_tensor *t, int p, uint64_t offset, uint64_t n) {
    return p >= 0 && p < t->n_parts && offset <= t->parts[p].bytes && n <= t->parts[p].bytes - offset;
}
void dsq_ctr_prefetch_range(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t offset, uint64_t n) {
    if (r->map && part_range(t, p, offset, n)) dsq_map_willneed(r->map, t->parts[p].offset + offset, n);
}
void dsq_ctr_release_range(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t offset, uint64_t n) {
    if (r->map && part_range(t, p, offset, n)) dsq_map_dontneed(r->map, t->parts[p].offset + offset, n);
}

/* Who else looks at the bytes hash_range hashes (dsq_ctr_verify_with): part p of t, whose file
 * offset is `base`. */
typedef struct hash_peer {
    dsq_ctr_part_fn fn;
    void *ctx;
    const dsq_ctr_tensor *t;
    int p;
    uint64_t base;
    dsq_status st; /* the peer's first non-OK status (the hash goes on regardless) */
} hash_peer;

/* XXH3 of [offset, offset+n) of the source, in chunks (pread) or at once (mmap); each piece is also
 * handed to `peer` right after it is hashed, while it is in cache. */
static dsq_status hash_range(const dsq_ctr_reader *r, dsq_seqread *sq, uint64_t offset, uint64_t n, uint8_t **chunk,
                             uint64_t *out, hash_peer *peer, dsq_err *err) {
    /* the peer's finding does not stop the hash (peer->st): the caller still compares the checksum */
#define PEER(ptr, len)                                                                                                 \
    if (peer && peer->fn && peer->st == DSQ_OK)                                                                        \
    peer->st = peer->fn(peer->ctx, peer->t, peer->p, offset - peer->base, (ptr), (len), err)
    if (sq) {
        XXH3_state_t ss;
        XXH3_64bits_reset(&ss);
        while (n > 0) {
            const uint8_t *p;
            size_t got;
            DSQ_TRY(dsq_seqread_get(sq, offset, n, &p, &got, err));
            XXH3_64bits_update(&ss, p, got);
            PEER(p, got);
            offset += got, n -= got;
        }
        *out = (uint64_t)XXH3_64bits_digest(&ss);
        return DSQ_OK;
    }
    if (r->src.map) {
        /* CHUNK at a time, dropping the pages behind every 64 MiB: a multi-GB part never stays resident */
        XXH3_state_t ms;
        XXH3_64bits_reset(&ms);
        uint64_t dropped = offset;
        while (n > 0) {
            size_t k = n > CHUNK ? CHUNK : (size_t)n;
            XXH3_64bits_update(&ms, r->src.map + offset, k);
            PEER(r->src.map + offset, k);
            offset += k, n -= k;
            if (r->map && (offset - dropped >= (64u << 20) || n == 0)) {
                dsq_map_dontneed(r->map, dropped, offset - dropped);
                dropped = offset;
            }
        }
        *out = (uint64_t)XXH3_64bits_digest(&ms);
        return DSQ_OK;
    }
    if (!*chunk && !(*chunk = dsq_malloc(CHUNK))) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", r->path);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    while (n > 0) {
        size_t k = n > CHUNK ? CHUNK : (size_t)n;
        DSQ_TRY(r->src.read(r->src.ctx, offset, *chunk, k, err));
        XXH3_64bits_update(&st, *chunk, k);
        PEER(*chunk, k);
        offset += k;
        n -= k;
    }
    *out = (uint64_t)XXH3_64bits_digest(&st);
    return DSQ_OK;
#undef PEER
}

dsq_status dsq_ctr_part_hash(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, uint64_t *out, dsq_err *err) {
    DSQ_RETURN_IF(!r->data_readable, err, DSQ_ERR_STATE, "%s: tensor data is not available from this source", r->path);
    uint8_t *chunk = NULL;
    dsq_status s = hash_range(r, NULL, t->parts[p].offset, t->parts[p].bytes, &chunk, out, NULL, err);
    dsq_free(chunk);
    return s;
}

const char *dsq_ctr_part_kind_name(int kind) {
    switch (kind) {
    case DSQ_FILE_PART_DATA: return "data";
    case DSQ_FILE_PART_SCALES: return "scales";
    case DSQ_FILE_PART_MINS: return "mins";
    case DSQ_FILE_PART_TENSOR_SCALE: return "tensor scale";
    }
    return "part";
}

dsq_status dsq_ctr_part_check(const dsq_ctr_reader *r, const dsq_ctr_tensor *t, int p, bool checksum,
                              dsq_ctr_chunk_fn fn, void *ctx, dsq_err *err) {
    DSQ_RETURN_IF(p < 0 || p >= t->n_parts, err, DSQ_ERR_ARG, "%s: tensor %s has no part %d", r->path, t->name, p);
    DSQ_RETURN_IF(!r->data_readable, err, DSQ_ERR_STATE, "%s: tensor data is not available from this source", r->path);
    const dsq_ctr_part *part = &t->parts[p];
    uint8_t *buf = NULL;
    if (!r->src.map && !(buf = dsq_malloc(CHUNK))) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", r->path);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    dsq_status s = DSQ_OK;
    for (uint64_t done = 0; done < part->bytes && s == DSQ_OK;) {
        size_t k = part->bytes - done > CHUNK ? CHUNK : (size_t)(part->bytes - done);
        const uint8_t *q = buf;
        if (r->src.map)
            q = r->src.map + part->offset + done;
        else
            s = r->src.read(r->src.ctx, part->offset + done, buf, k, err);
        if (s == DSQ_OK && checksum) XXH3_64bits_update(&st, q, k);
        if (s == DSQ_OK && fn) s = fn(ctx, done, q, k, err);
        done += k;
    }
    dsq_free(buf);
    if (s != DSQ_OK || !checksum) return s;
    uint64_t h = (uint64_t)XXH3_64bits_digest(&st);
    DSQ_RETURN_IF(h != part->xxh3, err, DSQ_ERR_CHECKSUM,
                  "%s: tensor %s: part %d (%s) checksum mismatch (offset %llu, %llu bytes: stored %016llx, computed "
                  "%016llx): the stored bytes changed",
                  r->path, t->name, p, dsq_ctr_part_kind_name(part->kind), (unsigned long long)part->offset,
                  (unsigned long long)part->bytes, (unsigned long long)part->xxh3, (unsigned long long)h);
    return DSQ_OK;
}

/* Gaps must be zero: [from, to). */
static dsq_status check_zero(const dsq_ctr_reader *r, dsq_seqread *sq, uint64_t from, uint64_t to, uint8_t **chunk,
                             const char *what, dsq_err *err) {
    while (sq && from < to) {
        const uint8_t *p;
        size_t got;
        DSQ_TRY(dsq_seqread_get(sq, from, to - from, &p, &got, err));
        for (size_t i = 0; i < got; i++)
            DSQ_RETURN_IF(p[i] != 0, err, DSQ_ERR_FORMAT, "%s: non-zero padding byte at offset %llu (%s)", r->path,
                          (unsigned long long)(from + i), what);
        from += got;
    }
    if (!*chunk && !(*chunk = dsq_malloc(CHUNK))) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", r->path);
    while (from < to) {
        size_t k = to - from > CHUNK ? CHUNK : (size_t)(to - from);
        DSQ_TRY(r->src.read(r->src.ctx, from, *chunk, k, err));
        for (size_t i = 0; i < k; i++)
            DSQ_RETURN_IF((*chunk)[i] != 0, err, DSQ_ERR_FORMAT, "%s: non-zero padding byte at offset %llu (%s)", r->path,
                          (unsigned long long)(from + i), what);
        from += k;
    }
    return DSQ_OK;
}

dsq_status dsq_ctr_verify(const dsq_ctr_reader *r, dsq_progress *progress, dsq_err *err) {
    return dsq_ctr_verify_with(r, progress, NULL, NULL, err);
}

dsq_status dsq_ctr_verify_with(const dsq_ctr_reader *r, dsq_progress *progress, dsq_ctr_part_fn fn, void *ctx,
                               dsq_err *err) {
    DSQ_RETURN_IF(!r->data_readable, err, DSQ_ERR_STATE, "%s: tensor data is not available from this source", r->path);
    uint8_t *chunk = NULL;
    dsq_status first = DSQ_OK;
    /* parts in file order, so the zero gaps between them are checked too */
    size_t np = 0;
    part_ref *refs = parts_by_offset(r, &np, err);
    if (!refs) return DSQ_ERR_NOMEM;
    /* one forward pass over the file: with O_DIRECT when asked (a file just written that way) */
    dsq_seqread seq, *sq = NULL;
    if (r->verify_direct && r->map) {
        if (dsq_seqread_open(r->path, &seq, err) != DSQ_OK) {
            dsq_free(refs);
            return DSQ_ERR_IO;
        }
        sq = &seq;
    }
    uint64_t pos = DSQ_FILE_HEADER_BYTES;
    dsq_status s = check_zero(r, sq, pos, r->hdr.data_offset, &chunk, "before the data region", err);
    if (s != DSQ_OK) first = s;
    pos = r->hdr.data_offset;
    for (size_t i = 0; i < np && first != DSQ_ERR_IO; i++) {
        const dsq_ctr_tensor *t = &r->tensors[refs[i].tensor];
        const dsq_ctr_part *part = &t->parts[refs[i].part];
        s = check_zero(r, sq, pos, part->offset, &chunk, "between parts", err);
        if (s != DSQ_OK && first == DSQ_OK) first = s;
        if (r->parts_verified) { /* checked by the caller; the padding around it is still ours */
            pos = refs[i].end;
            continue;
        }
        uint64_t h;
        hash_peer peer = {fn, ctx, t, refs[i].part, part->offset, DSQ_OK};
        s = hash_range(r, sq, part->offset, part->bytes, &chunk, &h, &peer, err);
        if (s != DSQ_OK) {
            if (first == DSQ_OK) first = s;
            break;
        }
        if (peer.st != DSQ_OK && first == DSQ_OK) first = peer.st;
        if (h != part->xxh3) {
            s = dsq_err_set(err, DSQ_ERR_CHECKSUM,
                            "%s: tensor %s: part %d checksum mismatch (offset %llu, %llu bytes: stored %016llx, computed "
                            "%016llx)",
                            r->path, t->name, refs[i].part, (unsigned long long)part->offset,
                            (unsigned long long)part->bytes, (unsigned long long)part->xxh3, (unsigned long long)h);
            if (first == DSQ_OK) first = s;
        }
        if (progress) dsq_progress_add(progress, part->bytes);
        pos = refs[i].end;
    }
    /* padding after the data region and between the sections */
    if (first == DSQ_OK) {
        uint64_t end = r->hdr.data_offset + r->hdr.data_bytes;
        s = check_zero(r, sq, end, r->hdr.directory_offset, &chunk, "after the data region", err);
        uint64_t prev = r->hdr.directory_offset + (uint64_t)r->hdr.section_count * r->hdr.section_entry_bytes;
        for (size_t i = 0; i < r->n_sections && s == DSQ_OK; i++) {
            s = check_zero(r, sq, prev, r->sections[i].offset, &chunk, "between sections", err);
            prev = r->sections[i].offset + r->sections[i].stored_bytes;
        }
        if (s != DSQ_OK) first = s;
    }
    if (sq) dsq_seqread_close(sq);
    dsq_free(refs);
    dsq_free(chunk);
    return first;
}

bool dsq_ctr_sniff(const char *path) {
    if (dsq_path_is_dir(path)) return false;
    dsq_map m;
    if (dsq_map_open(path, false, &m, NULL) != DSQ_OK) return false;
    uint8_t magic[DSQ_FILE_MAGIC_BYTES] = {0};
    bool yes = m.size >= DSQ_FILE_MAGIC_BYTES && dsq_map_read(&m, 0, magic, DSQ_FILE_MAGIC_BYTES, NULL) == DSQ_OK &&
               memcmp(magic, DSQ_FILE_MAGIC, DSQ_FILE_MAGIC_BYTES) == 0;
    dsq_map_close(&m);
    return yes;
}
