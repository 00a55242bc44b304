/* .dsq streaming writer: plan → pre-planned offsets → write in any order → journal → publish
 * (spec formats/spec/dsq.md §7, RELIABILITY.md §1-5). */
#define XXH_STATIC_LINKING_ONLY
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "container_internal.h"
#include "dsq_json.h"

#define JOURNAL_MAGIC "DSQJRNL1"
#define JOURNAL_HEADER_BYTES 32u
#define CHUNK (4u << 20)

typedef struct wtensor {
    dsq_ctr_tensor t;      /* name/sources owned by this struct */
    dsq_ctr_source *srcs;
    bool done;
    uint64_t written[DSQ_FILE_MAX_PARTS]; /* bytes written so far per part */
    uint64_t next[DSQ_FILE_MAX_PARTS];    /* next offset of an in-order write */
    bool out_of_order[DSQ_FILE_MAX_PARTS];
    XXH3_state_t *hash[DSQ_FILE_MAX_PARTS];
} wtensor;

struct dsq_ctr_writer {
    char *path, *journal_path;
    dsq_ctr_writer_options opt;
    char *fingerprint;
    wtensor *t;
    size_t n, cap;
    dsq__strmap names, source_names;
    uint64_t table_bytes; /* running size of the tensor table */
    char *meta;
    size_t meta_len;
    uint64_t data_offset, cursor;
    bool begun;
    bool resumed; /* began on an existing partial file: keep it and the journal on every failure */
    dsq_lock lock;
    dsq_afile af;
    int rfd, jfd;
    uint32_t done_count;
    uint64_t plan_hash;
    struct verifier *ver; /* direct mode: checks each finished tensor from disk in the background */
};

static uint64_t pad8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }

/* DIR/.BASE<suffix>, next to the output (the partial file's name is dsq_afile's rule). */
static char *side_name_for(const char *final_path, const char *suffix) {
    const char *slash = strrchr(final_path, '/');
    size_t dlen = slash ? (size_t)(slash - final_path + 1) : 0;
    const char *base = slash ? slash + 1 : final_path;
    size_t n = dlen + 1 + strlen(base) + strlen(suffix) + 1;
    char *p = dsq_malloc(n);
    if (p) snprintf(p, n, "%.*s.%s%s", (int)dlen, final_path, base, suffix);
    return p;
}

dsq_status dsq_ctr_writer_create(const char *path, const dsq_ctr_writer_options *opt, dsq_ctr_writer **out,
                                 dsq_err *err) {
    *out = NULL;
    dsq_ctr_writer *w = dsq_calloc(1, sizeof *w);
    if (!w) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    if (opt) w->opt = *opt;
    w->rfd = w->jfd = -1;
    w->af.fd = -1;
    w->lock.fd = -1;
    if (!w->opt.align_small) w->opt.align_small = DSQ_FILE_DEFAULT_ALIGN_SMALL;
    if (!w->opt.align_large) w->opt.align_large = DSQ_FILE_DEFAULT_ALIGN_LARGE;
    if (!w->opt.large_threshold) w->opt.large_threshold = DSQ_FILE_DEFAULT_LARGE_THRESHOLD;
    uint32_t a = w->opt.align_small, b = w->opt.align_large;
    if ((a & (a - 1)) || (b & (b - 1)) || a < DSQ_FILE_MIN_ALIGN || b > DSQ_FILE_MAX_ALIGN || a > b) {
        dsq_free(w);
        return dsq_err_set(err, DSQ_ERR_ARG, "%s: alignments %u / %u invalid (powers of two, %u <= small <= large <= %u)",
                           path, a, b, DSQ_FILE_MIN_ALIGN, DSQ_FILE_MAX_ALIGN);
    }
    w->path = dsq_strdup(path);
    w->journal_path = side_name_for(path, ".journal");
    w->fingerprint = dsq_strdup(w->opt.fingerprint ? w->opt.fingerprint : "");
    w->opt.fingerprint = NULL;
    if (!w->path || !w->journal_path || !w->fingerprint || !dsq__strmap_init(&w->names, 64) ||
        !dsq__strmap_init(&w->source_names, 64)) {
        dsq_ctr_writer_free(w);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    w->data_offset = w->opt.align_large > DSQ_FILE_HEADER_BYTES ? w->opt.align_large : DSQ_FILE_HEADER_BYTES;
    w->cursor = w->data_offset;
    w->table_bytes = DSQ_FILE_TABLE_HEADER_BYTES;
    *out = w;
    return DSQ_OK;
}

static void wtensor_free(wtensor *wt) {
    dsq_free((char *)wt->t.name);
    for (uint32_t k = 0; k < wt->t.n_sources && wt->srcs; k++) {
        dsq_free((char *)wt->srcs[k].name);
        dsq_free((char *)wt->srcs[k].scale_name);
    }
    dsq_free(wt->srcs);
    for (int p = 0; p < DSQ_FILE_MAX_PARTS; p++) dsq_free_aligned(wt->hash[p]);
}

dsq_status dsq_ctr_writer_add(dsq_ctr_writer *w, const dsq_ctr_tensor_desc *d, uint32_t *index, dsq_err *err) {
    const char *f = w->path;
    DSQ_RETURN_IF(w->begun, err, DSQ_ERR_STATE, "%s: tensor %s added after begin", f, d->name);
    DSQ_RETURN_IF(!d->name || !dsq__ctr_name_ok(d->name, strlen(d->name)), err, DSQ_ERR_RANGE,
                  "%s: tensor name '%.64s' invalid (1..%u bytes of UTF-8)", f, d->name ? d->name : "", DSQ_FILE_MAX_NAME);
    DSQ_RETURN_IF(w->n >= UINT32_MAX - 1, err, DSQ_ERR_RANGE, "%s: too many tensors", f);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        wtensor *nt = dsq_realloc(w->t, cap * sizeof *nt);
        DSQ_RETURN_IF(!nt, err, DSQ_ERR_NOMEM, "%s: out of memory", f);
        w->t = nt;
        w->cap = cap;
    }
    wtensor *wt = &w->t[w->n];
    memset(wt, 0, sizeof *wt);
    dsq_ctr_tensor *t = &wt->t;
    t->name = dsq_strdup(d->name);
    t->encoding = d->encoding;
    t->rank = d->rank;
    t->block_rows = d->block_rows;
    t->block_cols = d->block_cols;
    t->index = (uint32_t)w->n;
    t->n_sources = d->n_sources;
    dsq_status s = DSQ_OK;
    if (!t->name) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", f);
    if (s == DSQ_OK && (d->rank < 0 || d->rank > DSQ_FILE_MAX_RANK))
        s = dsq_err_set(err, DSQ_ERR_RANGE, "%s: tensor %s: rank %d exceeds %d", f, d->name, d->rank, DSQ_FILE_MAX_RANK);
    if (s == DSQ_OK) {
        memcpy(t->shape, d->shape, sizeof(uint64_t) * (size_t)d->rank);
        if (d->n_sources) {
            wt->srcs = dsq_calloc(d->n_sources, sizeof *wt->srcs);
            if (!wt->srcs) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", f);
        }
    }
    for (uint32_t k = 0; s == DSQ_OK && k < d->n_sources; k++) {
        const dsq_ctr_source_desc *sd = &d->sources[k];
        dsq_ctr_source *src = &wt->srcs[k];
        if (!sd->name || !dsq__ctr_name_ok(sd->name, strlen(sd->name)) ||
            (sd->scale_name && !dsq__ctr_name_ok(sd->scale_name, strlen(sd->scale_name)))) {
            s = dsq_err_set(err, DSQ_ERR_RANGE, "%s: tensor %s: source %u name invalid", f, d->name, k);
            break;
        }
        src->name = dsq_strdup(sd->name);
        src->scale_name = sd->scale_name ? dsq_strdup(sd->scale_name) : NULL;
        if (!src->name || (sd->scale_name && !src->scale_name)) {
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", f);
            break;
        }
        src->start = sd->start;
        src->count = sd->count;
        src->squeeze = sd->squeeze;
        src->dtype = sd->dtype;
        src->scale_dtype = sd->scale_dtype;
        src->shard = sd->shard;
    }
    t->sources = wt->srcs;
    dsq_file_part_layout lay[DSQ_FILE_MAX_PARTS];
    int np = s == DSQ_OK ? dsq__ctr_expected_parts(f, t, lay, err) : s;
    if (np < 0) s = np;
    if (s == DSQ_OK) s = dsq__ctr_check_sources(f, t, err);
    uint64_t rec = s == DSQ_OK ? 0 : 1, cursor = w->cursor, table = w->table_bytes;
    if (s == DSQ_OK) {
        t->n_parts = np;
        for (int p = 0; p < np && s == DSQ_OK; p++) {
            uint64_t align = lay[p].bytes >= w->opt.large_threshold ? w->opt.align_large : w->opt.align_small;
            t->parts[p].kind = lay[p].kind;
            t->parts[p].dtype = (dsq_dtype)lay[p].dtype;
            t->parts[p].bytes = lay[p].bytes;
            if (!dsq_pad_u64(cursor, align, &t->parts[p].offset) || !dsq_add_u64(t->parts[p].offset, lay[p].bytes, &cursor))
                s = dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: tensor %s: file offsets overflow", f, d->name);
        }
        rec = dsq__ctr_record_bytes(t);
        if (s == DSQ_OK && (rec == 0 || !dsq_add_u64(table, rec, &table) || table > DSQ_FILE_MAX_SECTION))
            s = dsq_err_set(err, DSQ_ERR_RANGE, "%s: tensor %s: the tensor table would exceed %u bytes", f, d->name,
                            DSQ_FILE_MAX_SECTION);
    }
    /* names unique across tensors and across sources */
    uint32_t k_added = 0;
    if (s == DSQ_OK && !dsq__strmap_put(&w->names, t->name, t->index, NULL))
        s = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: tensor %s added twice", f, d->name);
    for (; s == DSQ_OK && k_added < t->n_sources; k_added++)
        if (!dsq__strmap_put(&w->source_names, wt->srcs[k_added].name, t->index, NULL))
            s = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: tensor %s: source %s is already used by another tensor", f,
                            d->name, wt->srcs[k_added].name);
    if (s != DSQ_OK) {
        /* the maps hold borrowed keys of this tensor: rebuild them without it (rare error path) */
        if (k_added > 0 || dsq__strmap_get(&w->names, t->name, &(uint32_t){0})) {
            dsq__strmap_free(&w->names);
            dsq__strmap_free(&w->source_names);
            if (dsq__strmap_init(&w->names, w->n) && dsq__strmap_init(&w->source_names, w->n))
                for (size_t i = 0; i < w->n; i++) {
                    dsq__strmap_put(&w->names, w->t[i].t.name, (uint32_t)i, NULL);
                    for (uint32_t k = 0; k < w->t[i].t.n_sources; k++)
                        dsq__strmap_put(&w->source_names, w->t[i].srcs[k].name, (uint32_t)i, NULL);
                }
        }
        wtensor_free(wt);
        return s;
    }
    w->cursor = cursor;
    w->table_bytes = table;
    if (index) *index = t->index;
    w->n++;
    return DSQ_OK;
}

dsq_status dsq_ctr_writer_set_metadata(dsq_ctr_writer *w, const char *json, size_t len, dsq_err *err) {
    DSQ_RETURN_IF(len > DSQ_FILE_MAX_SECTION, err, DSQ_ERR_RANGE, "%s: metadata of %zu bytes exceeds %u", w->path, len,
                  DSQ_FILE_MAX_SECTION);
    DSQ_RETURN_IF(memchr(json, 0, len) != NULL, err, DSQ_ERR_JSON, "%s: metadata contains a NUL byte", w->path);
    cJSON *j = NULL;
    DSQ_TRY(dsq_json_parse(json, len, "metadata", &j, err));
    bool obj = cJSON_IsObject(j);
    cJSON_Delete(j);
    DSQ_RETURN_IF(!obj, err, DSQ_ERR_JSON, "%s: metadata must be a JSON object", w->path);
    char *copy = dsq_malloc(len + 1);
    DSQ_RETURN_IF(!copy, err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
    memcpy(copy, json, len);
    copy[len] = 0;
    dsq_free(w->meta);
    w->meta = copy;
    w->meta_len = len;
    return DSQ_OK;
}

uint64_t dsq_ctr_writer_planned_bytes(const dsq_ctr_writer *w) { return w->cursor; }
size_t dsq_ctr_writer_count(const dsq_ctr_writer *w) { return w->n; }
const dsq_ctr_tensor *dsq_ctr_writer_tensor(const dsq_ctr_writer *w, uint32_t i) { return i < w->n ? &w->t[i].t : NULL; }
bool dsq_ctr_writer_is_done(const dsq_ctr_writer *w, uint32_t i) { return i < w->n && w->t[i].done; }
uint32_t dsq_ctr_writer_done_count(const dsq_ctr_writer *w) { return w->done_count; }
const char *dsq_ctr_writer_partial_path(const dsq_ctr_writer *w) { return w->af.tmp_path; }
const char *dsq_ctr_writer_journal_path(const dsq_ctr_writer *w) { return w->journal_path; }

/* ---- plan hash and journal ---- */

static uint64_t compute_plan_hash(const dsq_ctr_writer *w) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, DSQ_VERSION_STRING, strlen(DSQ_VERSION_STRING) + 1);
    XXH3_64bits_update(&st, w->fingerprint, strlen(w->fingerprint) + 1);
    uint8_t buf[64];
    dsq_put_u32le(buf, w->opt.align_small);
    dsq_put_u32le(buf + 4, w->opt.align_large);
    dsq_put_u64le(buf + 8, w->opt.large_threshold);
    dsq_put_u64le(buf + 16, w->n);
    XXH3_64bits_update(&st, buf, 24);
    for (size_t i = 0; i < w->n; i++) {
        const dsq_ctr_tensor *t = &w->t[i].t;
        XXH3_64bits_update(&st, t->name, strlen(t->name) + 1);
        dsq_put_u32le(buf, (uint32_t)t->encoding);
        dsq_put_u32le(buf + 4, (uint32_t)t->rank);
        dsq_put_u32le(buf + 8, t->block_rows);
        dsq_put_u32le(buf + 12, t->block_cols);
        XXH3_64bits_update(&st, buf, 16);
        for (int d = 0; d < t->rank; d++) {
            dsq_put_u64le(buf, t->shape[d]);
            XXH3_64bits_update(&st, buf, 8);
        }
        for (int p = 0; p < t->n_parts; p++) {
            dsq_put_u64le(buf, t->parts[p].offset);
            dsq_put_u64le(buf + 8, t->parts[p].bytes);
            XXH3_64bits_update(&st, buf, 16);
        }
        for (uint32_t k = 0; k < t->n_sources; k++) {
            const dsq_ctr_source *s = &t->sources[k];
            XXH3_64bits_update(&st, s->name, strlen(s->name) + 1);
            if (s->scale_name) XXH3_64bits_update(&st, s->scale_name, strlen(s->scale_name) + 1);
            dsq_put_u64le(buf, s->start);
            dsq_put_u64le(buf + 8, s->count);
            buf[16] = s->squeeze;
            buf[17] = (uint8_t)s->dtype;
            buf[18] = (uint8_t)s->scale_dtype;
            dsq_put_u32le(buf + 19, s->shard);
            XXH3_64bits_update(&st, buf, 23);
        }
    }
    return (uint64_t)XXH3_64bits_digest(&st);
}

static dsq_status write_all(int fd, const void *buf, size_t n, const char *path, dsq_err *err) {
    const uint8_t *p = buf;
    while (n > 0) {
        if (dsq__fault_hit(DSQ_FAULT_WRITE)) {
            errno = EIO;
            return dsq_err_set(err, DSQ_ERR_IO, "%s: write failed: %s", path, strerror(EIO));
        }
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : ENOSPC;
            return dsq_err_set(err, (e == ENOSPC || e == EFBIG || e == EDQUOT) ? DSQ_ERR_NOSPACE : DSQ_ERR_IO,
                               "%s: write failed: %s", path, strerror(e));
        }
        p += r;
        n -= (size_t)r;
    }
    return DSQ_OK;
}

static dsq_status pread_all(int fd, uint64_t off, void *buf, size_t n, const char *path, dsq_err *err) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return dsq_err_set(err, DSQ_ERR_IO, "%s: read at offset %llu failed: %s", path, (unsigned long long)off,
                               r < 0 ? strerror(errno) : "unexpected end of file");
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return DSQ_OK;
}

/* XXH3 of [off, off+n) of the partial file. */
static dsq_status hash_back(dsq_ctr_writer *w, uint64_t off, uint64_t n, uint8_t **chunk, uint64_t *out, dsq_err *err) {
    if (!*chunk && !(*chunk = dsq_malloc(CHUNK))) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    while (n > 0) {
        size_t k = n > CHUNK ? CHUNK : (size_t)n;
        DSQ_TRY(pread_all(w->rfd, off, *chunk, k, w->af.tmp_path, err));
        XXH3_64bits_update(&st, *chunk, k);
        off += k;
        n -= k;
    }
    *out = (uint64_t)XXH3_64bits_digest(&st);
    return DSQ_OK;
}

static dsq_status journal_append(dsq_ctr_writer *w, const wtensor *wt, dsq_err *err) {
    const dsq_ctr_tensor *t = &wt->t;
    size_t n = 16 + 8 * (size_t)t->n_parts + 16 * (size_t)t->n_sources + 8;
    uint8_t small[256], *rec = n <= sizeof small ? small : dsq_malloc(n);
    if (!rec) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", w->journal_path);
    dsq_put_u32le(rec, (uint32_t)n);
    dsq_put_u32le(rec + 4, t->index);
    dsq_put_u32le(rec + 8, (uint32_t)t->n_parts);
    dsq_put_u32le(rec + 12, t->n_sources);
    uint8_t *p = rec + 16;
    for (int k = 0; k < t->n_parts; k++, p += 8) dsq_put_u64le(p, t->parts[k].xxh3);
    for (uint32_t k = 0; k < t->n_sources; k++, p += 16) {
        dsq_put_u64le(p, t->sources[k].xxh3);
        dsq_put_u64le(p + 8, t->sources[k].scale_xxh3);
    }
    dsq_put_u64le(p, dsq__ctr_xxh3(rec, n - 8));
    dsq_status s = write_all(w->jfd, rec, n, w->journal_path, err);
    if (rec != small) dsq_free(rec);
    return s;
}

static dsq_status journal_create(dsq_ctr_writer *w, dsq_err *err) {
    unlink(w->journal_path);
    w->jfd = open(w->journal_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    DSQ_RETURN_IF(w->jfd < 0, err, DSQ_ERR_IO, "%s: cannot create: %s", w->journal_path, strerror(errno));
    uint8_t h[JOURNAL_HEADER_BYTES] = {0};
    memcpy(h, JOURNAL_MAGIC, 8);
    dsq_put_u32le(h + 8, 1);
    dsq_put_u64le(h + 16, w->plan_hash);
    dsq_put_u64le(h + 24, dsq__ctr_xxh3(h, 24));
    return write_all(w->jfd, h, sizeof h, w->journal_path, err);
}

/* Replay the journal: every intact record whose tensor re-hashes to the recorded checksums marks the
 * tensor done.  The journal is truncated after the last intact record (a torn write). */
static dsq_status journal_replay(dsq_ctr_writer *w, dsq_err *err) {
    char *text = NULL;
    size_t len = 0;
    dsq_err local = DSQ_ERR_INIT;
    dsq_status s = dsq_read_file(w->journal_path, (size_t)1 << 30, &text, &len, &local);
    dsq_err_clear(&local);
    DSQ_RETURN_IF(s != DSQ_OK, err, DSQ_ERR_STATE,
                  "%s: partial output exists but its journal %s cannot be read; both are kept: remove them or run "
                  "without --resume to start over",
                  w->af.tmp_path, w->journal_path);
    const uint8_t *j = (const uint8_t *)text;
    if (len < JOURNAL_HEADER_BYTES || memcmp(j, JOURNAL_MAGIC, 8) != 0 || dsq_file_le64(j + 24) != dsq__ctr_xxh3(j, 24)) {
        dsq_free(text);
        return dsq_err_set(err, DSQ_ERR_STATE,
                           "%s: journal header is damaged; it and %s are kept: run without --resume to start over",
                           w->journal_path, w->af.tmp_path);
    }
    if (dsq_file_le64(j + 16) != w->plan_hash) {
        dsq_free(text);
        return dsq_err_set(err, DSQ_ERR_STATE,
                           "%s: the partial output belongs to a different job (arguments, inputs or tool version "
                           "changed); it and its journal are kept: run the original job with --resume, or without "
                           "--resume to start over",
                           w->af.tmp_path);
    }
    size_t pos = JOURNAL_HEADER_BYTES;
    uint8_t *chunk = NULL;
    s = DSQ_OK;
    while (s == DSQ_OK && len - pos >= 24) {
        const uint8_t *r = j + pos;
        uint32_t n = dsq_file_le32(r), idx = dsq_file_le32(r + 4), np = dsq_file_le32(r + 8), ns = dsq_file_le32(r + 12);
        if (n < 24 || n > len - pos || dsq_file_le64(r + n - 8) != dsq__ctr_xxh3(r, n - 8)) break; /* torn */
        if (idx >= w->n || np != (uint32_t)w->t[idx].t.n_parts || ns != w->t[idx].t.n_sources ||
            (uint64_t)n != 24 + 8ull * np + 16ull * ns)
            break;
        wtensor *wt = &w->t[idx];
        bool good = true;
        for (uint32_t k = 0; k < np && good && s == DSQ_OK; k++) {
            uint64_t h;
            s = hash_back(w, wt->t.parts[k].offset, wt->t.parts[k].bytes, &chunk, &h, err);
            good = s == DSQ_OK && h == dsq_file_le64(r + 16 + 8 * k);
        }
        if (s != DSQ_OK) break;
        if (good) {
            for (uint32_t k = 0; k < np; k++) wt->t.parts[k].xxh3 = dsq_file_le64(r + 16 + 8 * k);
            for (uint32_t k = 0; k < ns; k++) {
                wt->srcs[k].xxh3 = dsq_file_le64(r + 16 + 8 * np + 16 * k);
                wt->srcs[k].scale_xxh3 = dsq_file_le64(r + 16 + 8 * np + 16 * k + 8);
            }
            if (!wt->done) w->done_count++;
            wt->done = true;
        } else if (wt->done) {
            wt->done = false;
            w->done_count--;
        }
        pos += n;
    }
    dsq_free(chunk);
    dsq_free(text);
    if (s != DSQ_OK) return s;
    w->jfd = open(w->journal_path, O_WRONLY | O_CLOEXEC);
    DSQ_RETURN_IF(w->jfd < 0, err, DSQ_ERR_IO, "%s: cannot open: %s", w->journal_path, strerror(errno));
    DSQ_RETURN_IF(ftruncate(w->jfd, (off_t)pos) != 0 || lseek(w->jfd, 0, SEEK_END) < 0, err, DSQ_ERR_IO,
                  "%s: cannot truncate after the last intact record: %s", w->journal_path, strerror(errno));
    return DSQ_OK;
}

static dsq_status check_free_space(dsq_ctr_writer *w, const char *partial, uint64_t need, dsq_err *err) {
    char *copy = dsq_strdup(w->path);
    DSQ_RETURN_IF(!copy, err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
    struct statvfs sv;
    int r = statvfs(dirname(copy), &sv);
    dsq_free(copy);
    if (r != 0) return DSQ_OK; /* cannot tell: the writes will report ENOSPC */
    uint64_t avail;
    if (!dsq_mul_u64((uint64_t)sv.f_bavail, (uint64_t)sv.f_frsize, &avail)) return DSQ_OK;
    struct stat st;
    uint64_t have = 0;
    if (partial && stat(partial, &st) == 0) have = (uint64_t)st.st_blocks * 512u;
    DSQ_RETURN_IF(need > avail + have, err, DSQ_ERR_NOSPACE,
                  "%s: not enough free space: the output needs %llu bytes, %llu are available", w->path,
                  (unsigned long long)need, (unsigned long long)(avail + have));
    return DSQ_OK;
}

/* ---- background verification (direct mode) ----
 * Each finished tensor's parts are read back with O_DIRECT and their XXH3 compared, on a thread of
 * their own, while the next tensors are encoded and written; finish waits for the queue and then
 * checks the structure and padding.  So every checksum is verified from the disk before the rename
 * (RELIABILITY.md §1) without a second pass over the whole file at the end. */
typedef struct vjob {
    uint64_t off, bytes, xxh3;
    uint32_t tensor;
    int part;
} vjob;

typedef struct verifier {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    vjob *q;
    size_t head, tail, cap;
    bool stop;
    const dsq_ctr_writer *w;
    dsq_seqread sr;
    dsq_err err;
} verifier;

static void *verifier_main(void *arg) {
    verifier *v = arg;
    for (;;) {
        pthread_mutex_lock(&v->mu);
        while (!v->stop && v->head == v->tail) pthread_cond_wait(&v->cv, &v->mu);
        if (v->head == v->tail) {
            pthread_mutex_unlock(&v->mu);
            break;
        }
        vjob j = v->q[v->head++];
        bool failed = v->err.status != DSQ_OK;
        pthread_mutex_unlock(&v->mu);
        if (failed) continue; /* drain */
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        dsq_seqread_forget(&v->sr); /* neighbouring bytes may have been written since the last read */
        dsq_err e;
        dsq_err_init(&e);
        dsq_status s = DSQ_OK;
        for (uint64_t o = j.off, n = j.bytes; s == DSQ_OK && n > 0;) {
            const uint8_t *p;
            size_t got;
            s = dsq_seqread_get(&v->sr, o, n, &p, &got, &e);
            if (s == DSQ_OK) XXH3_64bits_update(&st, p, got), o += got, n -= got;
        }
        uint64_t h = (uint64_t)XXH3_64bits_digest(&st);
        if (s == DSQ_OK && h != j.xxh3)
            s = dsq_err_set(&e, DSQ_ERR_CHECKSUM,
                            "%s: tensor %s: part %d reads back with checksum %016llx, %016llx was written (offset "
                            "%llu, %llu bytes)",
                            v->w->af.tmp_path, v->w->t[j.tensor].t.name, j.part, (unsigned long long)h,
                            (unsigned long long)j.xxh3, (unsigned long long)j.off, (unsigned long long)j.bytes);
        if (s != DSQ_OK) {
            pthread_mutex_lock(&v->mu);
            if (v->err.status == DSQ_OK) dsq_err_set(&v->err, s, "%s", e.msg);
            pthread_mutex_unlock(&v->mu);
        }
        dsq_err_clear(&e);
    }
    return NULL;
}

static dsq_status verifier_start(dsq_ctr_writer *w, dsq_err *err) {
    size_t parts = 0;
    for (size_t i = 0; i < w->n; i++) parts += (size_t)w->t[i].t.n_parts;
    verifier *v = dsq_calloc(1, sizeof *v);
    DSQ_RETURN_IF(!v, err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
    v->q = dsq_calloc(parts ? parts : 1, sizeof *v->q);
    v->cap = parts, v->w = w;
    dsq_err_init(&v->err);
    if (!v->q) {
        dsq_free(v);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
    }
    dsq_status s = dsq_seqread_open(w->af.tmp_path, &v->sr, err);
    if (s != DSQ_OK) {
        dsq_free(v->q);
        dsq_free(v);
        return s;
    }
    pthread_mutex_init(&v->mu, NULL);
    pthread_cond_init(&v->cv, NULL);
    if (pthread_create(&v->th, NULL, verifier_main, v) != 0) {
        dsq_seqread_close(&v->sr);
        pthread_mutex_destroy(&v->mu);
        pthread_cond_destroy(&v->cv);
        dsq_free(v->q);
        dsq_free(v);
        return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot start the verification thread", w->path);
    }
    w->ver = v;
    return DSQ_OK;
}

static void verifier_push(dsq_ctr_writer *w, uint32_t i) {
    verifier *v = w->ver;
    if (!v) return;
    const wtensor *wt = &w->t[i];
    pthread_mutex_lock(&v->mu);
    for (int p = 0; p < wt->t.n_parts && v->tail < v->cap; p++)
        if (wt->t.parts[p].bytes)
            v->q[v->tail++] = (vjob){wt->t.parts[p].offset, wt->t.parts[p].bytes, wt->t.parts[p].xxh3, i, p};
    pthread_cond_signal(&v->cv);
    pthread_mutex_unlock(&v->mu);
}

/* Wait for the queue to drain (or abandon it) and stop the thread; returns its first error. */
static dsq_status verifier_stop(dsq_ctr_writer *w, bool abandon, dsq_err *err) {
    verifier *v = w->ver;
    if (!v) return DSQ_OK;
    pthread_mutex_lock(&v->mu);
    v->stop = true;
    if (abandon) v->head = v->tail;
    pthread_cond_signal(&v->cv);
    pthread_mutex_unlock(&v->mu);
    pthread_join(v->th, NULL);
    dsq_status s = v->err.status;
    if (s != DSQ_OK) dsq_err_set(err, s, "%s", v->err.msg);
    dsq_err_clear(&v->err);
    dsq_seqread_close(&v->sr);
    pthread_mutex_destroy(&v->mu);
    pthread_cond_destroy(&v->cv);
    dsq_free(v->q);
    dsq_free(v);
    w->ver = NULL;
    return s;
}

dsq_status dsq_ctr_writer_begin(dsq_ctr_writer *w, dsq_err *err) {
    DSQ_RETURN_IF(w->begun, err, DSQ_ERR_STATE, "%s: begin called twice", w->path);
    w->plan_hash = compute_plan_hash(w);
    /* one job per output: nothing below touches the partial file or the journal without the lock */
    if (w->lock.fd < 0) DSQ_TRY(dsq_lock_output(w->path, &w->lock, err));
    char *partial = side_name_for(w->path, ".partial");
    DSQ_RETURN_IF(!partial, err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
    /* --resume continues an existing partial file; without one it starts fresh */
    bool resuming = w->opt.resume && dsq_path_exists(partial);
    uint64_t need = w->cursor + w->table_bytes + w->meta_len + 4096;
    dsq_status s = check_free_space(w, resuming ? partial : NULL, need, err);
    dsq_free(partial);
    DSQ_TRY(s);
    /* a partial file is preallocated only once its journal says it is this job's (a refused resume
     * leaves it byte for byte as it was) */
    dsq_afile_options ao = {.overwrite = w->opt.overwrite, .keep_partial = resuming,
                            .preallocate = resuming ? 0 : w->cursor, .direct = w->opt.direct,
                            .caller_locked = true};
    DSQ_TRY(dsq_afile_open(w->path, &ao, &w->af, err));
    w->begun = true;
    w->resumed = resuming;
    w->rfd = open(w->af.tmp_path, O_RDONLY | O_CLOEXEC);
    DSQ_RETURN_IF(w->rfd < 0, err, DSQ_ERR_IO, "%s: cannot reopen for reading: %s", w->af.tmp_path, strerror(errno));
    DSQ_TRY(resuming ? journal_replay(w, err) : journal_create(w, err));
    if (resuming) {
        int r = posix_fallocate(w->af.fd, 0, (off_t)w->cursor);
        DSQ_RETURN_IF(r == ENOSPC || r == EFBIG, err, DSQ_ERR_NOSPACE, "%s: cannot reserve %llu bytes: %s",
                      w->af.tmp_path, (unsigned long long)w->cursor, strerror(r));
    }
    if (!w->opt.direct) return DSQ_OK;
    DSQ_TRY(verifier_start(w, err));
    for (uint32_t i = 0; i < w->n; i++)
        if (w->t[i].done) verifier_push(w, i); /* finished by an earlier run */
    return DSQ_OK;
}

dsq_status dsq_ctr_writer_write(dsq_ctr_writer *w, uint32_t i, int p, uint64_t offset, const void *buf, size_t n,
                                dsq_err *err) {
    DSQ_RETURN_IF(!w->begun, err, DSQ_ERR_STATE, "%s: write before begin", w->path);
    DSQ_RETURN_IF(i >= w->n, err, DSQ_ERR_ARG, "%s: no tensor %u", w->path, i);
    wtensor *wt = &w->t[i];
    const char *name = wt->t.name;
    DSQ_RETURN_IF(wt->done, err, DSQ_ERR_STATE, "%s: tensor %s is already complete", w->path, name);
    DSQ_RETURN_IF(p < 0 || p >= wt->t.n_parts, err, DSQ_ERR_ARG, "%s: tensor %s has no part %d", w->path, name, p);
    dsq_ctr_part *part = &wt->t.parts[p];
    DSQ_RETURN_IF(offset > part->bytes || n > part->bytes - offset, err, DSQ_ERR_RANGE,
                  "%s: tensor %s part %d: write of %zu bytes at %llu past its %llu bytes", w->path, name, p, n,
                  (unsigned long long)offset, (unsigned long long)part->bytes);
    DSQ_TRY(dsq_afile_pwrite(&w->af, part->offset + offset, buf, n, err));
    if (!wt->out_of_order[p] && offset == wt->next[p]) {
        if (!wt->hash[p]) {
            wt->hash[p] = dsq_malloc_aligned(sizeof(XXH3_state_t));
            DSQ_RETURN_IF(!wt->hash[p], err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
            XXH3_64bits_reset(wt->hash[p]);
        }
        XXH3_64bits_update(wt->hash[p], buf, n);
        wt->next[p] += n;
    } else {
        wt->out_of_order[p] = true;
    }
    wt->written[p] += n;
    return DSQ_OK;
}

void dsq_ctr_writer_set_source_hash(dsq_ctr_writer *w, uint32_t i, uint32_t s, uint64_t xxh3, uint64_t scale_xxh3) {
    if (i >= w->n || s >= w->t[i].t.n_sources) return;
    w->t[i].srcs[s].xxh3 = xxh3;
    w->t[i].srcs[s].scale_xxh3 = scale_xxh3;
}

dsq_status dsq_ctr_writer_end_tensor(dsq_ctr_writer *w, uint32_t i, dsq_err *err) {
    DSQ_RETURN_IF(!w->begun || i >= w->n, err, DSQ_ERR_STATE, "%s: end_tensor(%u) out of order", w->path, i);
    wtensor *wt = &w->t[i];
    DSQ_RETURN_IF(wt->done, err, DSQ_ERR_STATE, "%s: tensor %s is already complete", w->path, wt->t.name);
    uint8_t *chunk = NULL;
    dsq_status s = DSQ_OK;
    for (int p = 0; p < wt->t.n_parts && s == DSQ_OK; p++) {
        dsq_ctr_part *part = &wt->t.parts[p];
        if (wt->written[p] != part->bytes) {
            s = dsq_err_set(err, DSQ_ERR_STATE, "%s: tensor %s part %d: %llu of %llu bytes written", w->path, wt->t.name,
                            p, (unsigned long long)wt->written[p], (unsigned long long)part->bytes);
        } else if (!wt->out_of_order[p] && wt->hash[p]) {
            part->xxh3 = (uint64_t)XXH3_64bits_digest(wt->hash[p]);
        } else {
            s = hash_back(w, part->offset, part->bytes, &chunk, &part->xxh3, err);
        }
        dsq_free_aligned(wt->hash[p]);
        wt->hash[p] = NULL;
    }
    dsq_free(chunk);
    DSQ_TRY(s);
    DSQ_TRY(journal_append(w, wt, err));
    wt->done = true;
    w->done_count++;
    verifier_push(w, i);
    return DSQ_OK;
}

/* ---- publication ---- */

static dsq_status build_table(const dsq_ctr_writer *w, uint8_t **out, size_t *len, dsq_err *err) {
    uint8_t *tb = dsq_calloc(1, (size_t)w->table_bytes);
    DSQ_RETURN_IF(!tb, err, DSQ_ERR_NOMEM, "%s: out of memory for the tensor table", w->path);
    dsq_put_u32le(tb, (uint32_t)w->n);
    size_t pos = DSQ_FILE_TABLE_HEADER_BYTES;
    for (size_t i = 0; i < w->n; i++) {
        dsq__ctr_record_encode(&w->t[i].t, tb + pos);
        pos += dsq__ctr_record_bytes(&w->t[i].t);
    }
    *out = tb;
    *len = pos;
    return DSQ_OK;
}

static void put_section(uint8_t *e, uint32_t kind, uint32_t flags, uint64_t off, uint64_t stored, uint64_t raw,
                        uint64_t xxh) {
    memset(e, 0, DSQ_FILE_SECTION_ENTRY_BYTES);
    dsq_put_u32le(e, kind);
    dsq_put_u32le(e + 4, flags);
    dsq_put_u64le(e + 8, off);
    dsq_put_u64le(e + 16, stored);
    dsq_put_u64le(e + 24, raw);
    dsq_put_u64le(e + 32, xxh);
}

static dsq_status write_tail(dsq_ctr_writer *w, dsq_err *err) {
    static const char default_meta[] = "{\"format\":\"dsq\",\"format_version\":\"1.0\"}";
    const char *meta = w->meta ? w->meta : default_meta;
    size_t meta_len = w->meta ? w->meta_len : strlen(default_meta);
    void *zbuf = NULL;
    const void *stored = meta;
    size_t stored_len = meta_len;
    uint32_t mflags = 0;
    if (w->opt.compress_metadata > 0 || (w->opt.compress_metadata == 0 && meta_len > 4096)) {
        size_t cap = ZSTD_compressBound(meta_len);
        zbuf = dsq_malloc(cap);
        DSQ_RETURN_IF(!zbuf, err, DSQ_ERR_NOMEM, "%s: out of memory", w->path);
        size_t z = ZSTD_compress(zbuf, cap, meta, meta_len, 9);
        if (!ZSTD_isError(z) && (w->opt.compress_metadata > 0 || z < meta_len)) {
            stored = zbuf;
            stored_len = z;
            mflags = DSQ_FILE_SECTION_ZSTD;
        }
    }
    uint8_t *tb = NULL;
    size_t tlen = 0;
    dsq_status s = build_table(w, &tb, &tlen, err);
    if (s != DSQ_OK) {
        dsq_free(zbuf);
        return s;
    }
    uint64_t data_end = w->cursor, dir_off = pad8(data_end), dir_bytes = 2 * DSQ_FILE_SECTION_ENTRY_BYTES;
    uint64_t meta_off = pad8(dir_off + dir_bytes), table_off = pad8(meta_off + stored_len);
    uint64_t file_bytes = table_off + tlen;
    uint8_t dir[2 * DSQ_FILE_SECTION_ENTRY_BYTES];
    put_section(dir, DSQ_FILE_SECTION_METADATA, mflags, meta_off, stored_len, meta_len, dsq__ctr_xxh3(stored, stored_len));
    put_section(dir + DSQ_FILE_SECTION_ENTRY_BYTES, DSQ_FILE_SECTION_TENSOR_TABLE, 0, table_off, tlen, tlen,
                dsq__ctr_xxh3(tb, tlen));
    uint8_t h[DSQ_FILE_HEADER_BYTES] = {0};
    memcpy(h, DSQ_FILE_MAGIC, DSQ_FILE_MAGIC_BYTES);
    dsq_put_u16le(h + DSQ_FILE_HDR_VERSION_MAJOR, DSQ_FILE_VERSION_MAJOR);
    dsq_put_u16le(h + DSQ_FILE_HDR_VERSION_MINOR, DSQ_FILE_VERSION_MINOR);
    dsq_put_u32le(h + DSQ_FILE_HDR_HEADER_BYTES, DSQ_FILE_HEADER_BYTES);
    dsq_put_u64le(h + DSQ_FILE_HDR_FILE_BYTES, file_bytes);
    dsq_put_u64le(h + DSQ_FILE_HDR_DATA_OFFSET, w->data_offset);
    dsq_put_u64le(h + DSQ_FILE_HDR_DATA_BYTES, data_end - w->data_offset);
    dsq_put_u64le(h + DSQ_FILE_HDR_DIRECTORY_OFFSET, dir_off);
    dsq_put_u32le(h + DSQ_FILE_HDR_SECTION_COUNT, 2);
    dsq_put_u32le(h + DSQ_FILE_HDR_SECTION_ENTRY_BYTES, DSQ_FILE_SECTION_ENTRY_BYTES);
    dsq_put_u64le(h + DSQ_FILE_HDR_DIRECTORY_XXH3, dsq__ctr_xxh3(dir, sizeof dir));
    dsq_put_u32le(h + DSQ_FILE_HDR_ALIGN_SMALL, w->opt.align_small);
    dsq_put_u32le(h + DSQ_FILE_HDR_ALIGN_LARGE, w->opt.align_large);
    dsq_put_u64le(h + DSQ_FILE_HDR_LARGE_THRESHOLD, w->opt.large_threshold);
    dsq_put_u64le(h + DSQ_FILE_HDR_HEADER_XXH3, dsq__ctr_xxh3(h, DSQ_FILE_HDR_HEADER_XXH3));
    static const uint8_t zeros[8] = {0};
    if (ftruncate(w->af.fd, (off_t)data_end) != 0)
        s = dsq_err_set(err, errno == EFBIG ? DSQ_ERR_NOSPACE : DSQ_ERR_IO, "%s: truncate failed: %s", w->af.tmp_path,
                        strerror(errno));
    if (s == DSQ_OK && dir_off > data_end) s = dsq_afile_pwrite(&w->af, data_end, zeros, dir_off - data_end, err);
    if (s == DSQ_OK) s = dsq_afile_pwrite(&w->af, dir_off, dir, sizeof dir, err);
    if (s == DSQ_OK) s = dsq_afile_pwrite(&w->af, meta_off, stored, stored_len, err);
    if (s == DSQ_OK && table_off > meta_off + stored_len)
        s = dsq_afile_pwrite(&w->af, meta_off + stored_len, zeros, table_off - meta_off - stored_len, err);
    if (s == DSQ_OK) s = dsq_afile_pwrite(&w->af, table_off, tb, tlen, err);
    if (s == DSQ_OK) s = dsq_afile_pwrite(&w->af, 0, h, sizeof h, err);
    dsq_free(tb);
    dsq_free(zbuf);
    return s;
}

static void close_fds(dsq_ctr_writer *w) {
    if (w->rfd >= 0) close(w->rfd);
    if (w->jfd >= 0) close(w->jfd);
    w->rfd = w->jfd = -1;
}

static void writer_release(dsq_ctr_writer *w) {
    for (size_t i = 0; i < w->n; i++) wtensor_free(&w->t[i]);
    dsq_free(w->t);
    dsq__strmap_free(&w->names);
    dsq__strmap_free(&w->source_names);
    dsq_free(w->meta);
    dsq_free(w->fingerprint);
    dsq_lock_release(&w->lock); /* last: the files it guards are published, kept or removed */
    dsq_free(w->journal_path);
    dsq_free(w->path);
    dsq_free(w);
}

dsq_status dsq_ctr_writer_finish(dsq_ctr_writer *w, dsq_err *err) {
    dsq_status s = DSQ_OK;
    if (!w->begun) s = dsq_err_set(err, DSQ_ERR_STATE, "%s: finish before begin", w->path);
    for (size_t i = 0; s == DSQ_OK && i < w->n; i++)
        if (!w->t[i].done)
            s = dsq_err_set(err, DSQ_ERR_STATE, "%s: tensor %s was never completed", w->path, w->t[i].t.name);
    if (s == DSQ_OK) s = write_tail(w, err);
    if (s == DSQ_OK && (dsq__fault_hit(DSQ_FAULT_FSYNC) || fdatasync(w->af.fd) != 0))
        s = dsq_err_set(err, DSQ_ERR_IO, "%s: fdatasync failed: %s", w->af.tmp_path, strerror(errno ? errno : EIO));
    /* direct mode: every part was read back from the disk by the verifier (wait for it) */
    bool parts_verified = w->ver != NULL;
    dsq_status vs = verifier_stop(w, s != DSQ_OK, s == DSQ_OK ? err : NULL);
    if (s == DSQ_OK) s = vs;
    if (s == DSQ_OK) {
        /* reopen and verify every checksum before the final name appears (RELIABILITY.md §1) */
        dsq_ctr_reader *r = NULL;
        dsq_ctr_reader_options ro = {.verify = true, .verify_direct = w->opt.direct, .parts_verified = parts_verified};
        s = dsq_ctr_reader_open(w->af.tmp_path, &ro, &r, err);
        dsq_ctr_reader_close(r);
        if (s != DSQ_OK) dsq_err_set(err, s, "%s: verification of the written file failed", w->af.tmp_path);
    }
    if (s == DSQ_OK && dsq_interrupted()) { /* a SIGINT/SIGTERM that came late still stops publication */
        char *partial = dsq_strdup(w->af.tmp_path), *out = dsq_strdup(w->path);
        s = dsq_ctr_writer_suspend(w, err);
        if (s == DSQ_OK)
            s = dsq_err_set(err, DSQ_ERR_INTERRUPTED,
                            "%s: interrupted before publication; %s and its journal are kept: run again with --resume",
                            out ? out : "output", partial ? partial : "the partial file");
        dsq_free(partial);
        dsq_free(out);
        return s;
    }
    close_fds(w);
    if (s == DSQ_OK) {
        s = dsq_afile_commit(&w->af, err); /* fdatasync, close, rename, fsync dir; aborts on failure */
        if (s == DSQ_OK) unlink(w->journal_path);
        writer_release(w);
        return s;
    }
    dsq_ctr_writer_free(w);
    return s;
}

dsq_status dsq_ctr_writer_suspend(dsq_ctr_writer *w, dsq_err *err) {
    dsq_status s = DSQ_OK;
    verifier_stop(w, true, NULL); /* a resumed run verifies these tensors again */
    if (w->begun) {
        if (fdatasync(w->af.fd) != 0)
            s = dsq_err_set(err, DSQ_ERR_IO, "%s: fdatasync failed: %s", w->af.tmp_path, strerror(errno));
        if (w->jfd >= 0 && fsync(w->jfd) != 0 && s == DSQ_OK)
            s = dsq_err_set(err, DSQ_ERR_IO, "%s: fsync failed: %s", w->journal_path, strerror(errno));
        dsq_afile_release(&w->af);
    }
    close_fds(w);
    writer_release(w);
    return s;
}

void dsq_ctr_writer_free(dsq_ctr_writer *w) {
    if (!w) return;
    verifier_stop(w, true, NULL);
    close_fds(w);
    if (w->begun && w->resumed) {
        dsq_afile_release(&w->af); /* the work of earlier runs stays resumable */
    } else if (w->begun) {
        dsq_afile_abort(&w->af);
        unlink(w->journal_path);
    }
    writer_release(w);
}
