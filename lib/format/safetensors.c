/* safetensors reader (single file or sharded through the index) and streaming writer.
 * Format: u64 LE header length N, N bytes of JSON header, then the data section.  Every problem found
 * while validating is recorded (file, tensor, what) before the open fails. */
#include "dsq_safetensors.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_json.h"

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtype_info[DSQ_DTYPE_COUNT] = {
    [DSQ_DTYPE_F64] = {"F64", 8},         [DSQ_DTYPE_F32] = {"F32", 4},         [DSQ_DTYPE_F16] = {"F16", 2},
    [DSQ_DTYPE_BF16] = {"BF16", 2},       [DSQ_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [DSQ_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
    [DSQ_DTYPE_F8_E8M0] = {"F8_E8M0", 1}, [DSQ_DTYPE_I8] = {"I8", 1},           [DSQ_DTYPE_U8] = {"U8", 1},
    [DSQ_DTYPE_I16] = {"I16", 2},         [DSQ_DTYPE_I32] = {"I32", 4},         [DSQ_DTYPE_I64] = {"I64", 8},
    [DSQ_DTYPE_BOOL] = {"BOOL", 1},
};

size_t dsq_dtype_size(dsq_dtype t) { return (unsigned)t < DSQ_DTYPE_COUNT ? dtype_info[t].size : 0; }
const char *dsq_dtype_name(dsq_dtype t) { return (unsigned)t < DSQ_DTYPE_COUNT ? dtype_info[t].name : "?"; }
bool dsq_dtype_from_name(const char *s, dsq_dtype *out) {
    for (int i = 0; i < DSQ_DTYPE_COUNT; i++)
        if (!strcmp(s, dtype_info[i].name)) {
            *out = (dsq_dtype)i;
            return true;
        }
    return false;
}

/* ---- reader state ---- */

typedef struct shard {
    char *file; /* file name as in the index (or the base name) */
    dsq_map map;
    uint64_t data_start; /* 8 + header length */
    cJSON *metadata;     /* __metadata__ object (owned by `json`) */
    cJSON *json;
} shard;

struct dsq_st {
    char *dir;
    shard *shards;
    size_t n_shards;
    dsq_st_tensor *tensors;
    size_t n_tensors;
    char *names;    /* all tensor names, one allocation */
    uint32_t *hash; /* open addressing: index+1, 0 = empty */
    size_t hash_cap;
    uint64_t total_bytes;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

typedef struct pending {
    const char *name; /* points into a shard's cJSON tree until names are copied */
    dsq_dtype dtype;
    int rank;
    uint64_t shape[DSQ_ST_MAX_RANK];
    uint64_t n_elements, n_bytes, begin, end;
    uint32_t shard;
} pending;

typedef struct pvec {
    pending *v;
    size_t n, cap;
} pvec;

static bool pvec_push(pvec *p, const pending *x) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        pending *nv = dsq_realloc(p->v, cap * sizeof *nv);
        if (!nv) return false;
        p->v = nv;
        p->cap = cap;
    }
    p->v[p->n++] = *x;
    return true;
}

static int cmp_begin(const void *a, const void *b) {
    const pending *x = a, *y = b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Validate one tensor entry of a header; on success push it. Returns false on a problem (recorded). */
static dsq_status parse_entry(const char *file, const cJSON *e, uint32_t shard_i, uint64_t data_size, pvec *out,
                              dsq_err *err) {
    const char *name = e->string;
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > DSQ_ST_MAX_NAME) {
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: tensor name of %zu bytes (must be 1..%d)", file, nlen,
                           DSQ_ST_MAX_NAME);
    }
    if (!cJSON_IsObject(e)) {
        return dsq_err_set(err, DSQ_ERR_JSON, "%s: tensor %s: entry is not a JSON object", file, name);
    }
    dsq_status st = DSQ_OK;
    pending p = {.name = name, .shard = shard_i};
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) {
        st = dsq_err_set(err, dt ? DSQ_ERR_JSON : DSQ_ERR_MISSING, "%s: tensor %s: %s", file, name,
                         dt ? "dtype is not a string" : "no dtype");
    } else if (!dsq_dtype_from_name(dt->valuestring, &p.dtype)) {
        st = dsq_err_set(err, DSQ_ERR_DTYPE, "%s: tensor %s: unknown dtype \"%.32s\"", file, name, dt->valuestring);
    }
    if (!cJSON_IsArray(sh)) {
        st = dsq_err_set(err, sh ? DSQ_ERR_JSON : DSQ_ERR_MISSING, "%s: tensor %s: %s", file, name,
                         sh ? "shape is not an array" : "no shape");
    } else {
        int rank = cJSON_GetArraySize(sh);
        if (rank > DSQ_ST_MAX_RANK) {
            st =
                dsq_err_set(err, DSQ_ERR_SHAPE, "%s: tensor %s: rank %d exceeds %d", file, name, rank, DSQ_ST_MAX_RANK);
        } else {
            p.rank = rank;
            int i = 0;
            for (const cJSON *d = sh->child; d; d = d->next, i++) {
                if (!dsq_json_u64(d, &p.shape[i])) {
                    st = dsq_err_set(err, DSQ_ERR_SHAPE, "%s: tensor %s: shape[%d] is not a non-negative integer", file,
                                     name, i);
                    break;
                }
            }
        }
    }
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || !dsq_json_u64(of->child, &p.begin) ||
        !dsq_json_u64(of->child->next, &p.end)) {
        st = dsq_err_set(err, of ? DSQ_ERR_JSON : DSQ_ERR_MISSING, "%s: tensor %s: %s", file, name,
                         of ? "data_offsets must be two non-negative integers" : "no data_offsets");
    } else if (p.begin > p.end) {
        st = dsq_err_set(err, DSQ_ERR_RANGE, "%s: tensor %s: data_offsets [%llu, %llu] decrease", file, name,
                         (unsigned long long)p.begin, (unsigned long long)p.end);
    } else if (p.end > data_size) {
        st = dsq_err_set(err, DSQ_ERR_RANGE, "%s: tensor %s: data_offsets end %llu past the data section (%llu bytes)",
                         file, name, (unsigned long long)p.end, (unsigned long long)data_size);
    }
    if (st != DSQ_OK) return st;
    if (!dsq_prod_u64(p.shape, p.rank, &p.n_elements) ||
        !dsq_mul_u64(p.n_elements, dsq_dtype_size(p.dtype), &p.n_bytes)) {
        return dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: tensor %s: byte size of its shape overflows", file, name);
    }
    if (p.end - p.begin != p.n_bytes) {
        return dsq_err_set(err, DSQ_ERR_SHAPE, "%s: tensor %s: %llu bytes in data_offsets but shape x %s needs %llu",
                           file, name, (unsigned long long)(p.end - p.begin), dsq_dtype_name(p.dtype),
                           (unsigned long long)p.n_bytes);
    }
    if (!pvec_push(out, &p)) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", file);
    return DSQ_OK;
}

/* Tensors named by a header: members of its top-level JSON object other than "__metadata__", counted
 * by a scan for ':' at depth 1 outside strings (no JSON tree), stopping once past `stop`.  Bounds the
 * tensor count before cJSON allocates anything. */
static size_t count_tensors(const char *h, size_t n, size_t stop) {
    size_t members = 0;
    int depth = 0;
    bool in_str = false, expect_key = false, metadata = false;
    for (size_t i = 0; i < n && members <= stop + metadata; i++) {
        char c = h[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
            if (depth == 1 && expect_key && n - i > 13 && !memcmp(h + i + 1, "__metadata__\"", 13)) metadata = true;
            expect_key = false;
        } else if (c == '{' || c == '[') {
            expect_key = ++depth == 1;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (depth == 1 && c == ',') {
            expect_key = true;
        } else if (depth == 1 && c == ':') {
            members++;
        }
    }
    return members - (metadata && members > 0);
}

/* Open and validate one shard file; appends its tensors to `out`. */
static dsq_status open_shard(dsq_st *st, uint32_t shard_i, const char *path, bool use_mmap, pvec *out, dsq_err *err) {
    shard *sh = &st->shards[shard_i];
    dsq_status s = dsq_map_open(path, use_mmap, &sh->map, err);
    if (s != DSQ_OK) return s;
    if (sh->map.size < 8)
        return dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: %llu bytes, too short for a safetensors header", path,
                           (unsigned long long)sh->map.size);
    uint8_t lenb[8];
    DSQ_TRY(dsq_map_read(&sh->map, 0, lenb, 8, err));
    dsq_cursor c = dsq_cursor_make(lenb, 8);
    uint64_t hlen = dsq_cursor_u64le(&c);
    if (hlen > DSQ_ST_MAX_HEADER)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: header length %llu exceeds the %u-byte limit", path,
                           (unsigned long long)hlen, DSQ_ST_MAX_HEADER);
    if (hlen > sh->map.size - 8)
        return dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: header length %llu but the file has only %llu bytes after it",
                           path, (unsigned long long)hlen, (unsigned long long)(sh->map.size - 8));
    if (hlen < 2)
        return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: header of %llu bytes cannot hold a JSON object", path,
                           (unsigned long long)hlen);
    char *hdr = dsq_malloc((size_t)hlen);
    if (!hdr)
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for a %llu-byte header", path,
                           (unsigned long long)hlen);
    s = dsq_map_read(&sh->map, 8, hdr, (size_t)hlen, err);
    if (s == DSQ_OK && count_tensors(hdr, (size_t)hlen, DSQ_ST_MAX_TENSORS) > DSQ_ST_MAX_TENSORS)
        s = dsq_err_set(err, DSQ_ERR_RANGE, "%s: header lists more than DSQ_ST_MAX_TENSORS = %u tensors", path,
                        DSQ_ST_MAX_TENSORS);
    if (s == DSQ_OK) s = dsq_json_parse(hdr, (size_t)hlen, path, &sh->json, err);
    dsq_free(hdr);
    if (s != DSQ_OK) return s;
    if (!cJSON_IsObject(sh->json)) return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: header is not a JSON object", path);
    sh->data_start = 8 + hlen;
    uint64_t data_size = sh->map.size - sh->data_start;

    size_t first = out->n, n_tensors = 0;
    dsq_status bad = DSQ_OK; /* first problem found in this shard */
    for (const cJSON *e = sh->json->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") != 0 && ++n_tensors > DSQ_ST_MAX_TENSORS)
            return dsq_err_set(err, DSQ_ERR_RANGE, "%s: header lists more than DSQ_ST_MAX_TENSORS = %u tensors", path,
                               DSQ_ST_MAX_TENSORS);
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                bad = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: __metadata__ is not an object", path);
                continue;
            }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    bad = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: __metadata__ value \"%s\" is not a string", path,
                                      m->string);
                }
            sh->metadata = (cJSON *)e;
            continue;
        }
        dsq_status es = parse_entry(path, e, shard_i, data_size, out, err);
        if (es == DSQ_ERR_NOMEM) return es;
        if (es != DSQ_OK && bad == DSQ_OK) bad = es;
    }
    /* Overlaps and coverage: sorted by offset, tensors must tile the data section exactly. */
    if (out->n > first) qsort(out->v + first, out->n - first, sizeof(pending), cmp_begin);
    uint64_t pos = 0;
    for (size_t i = first; i < out->n; i++) {
        pending *p = &out->v[i];
        if (p->n_bytes == 0 && p->begin <= pos) continue; /* empty tensors claim no bytes */
        if (p->begin < pos) {
            dsq_status ps = dsq_err_set(
                err, DSQ_ERR_OVERLAP, "%s: tensor %s: bytes [%llu, %llu) overlap the previous tensor (ends at %llu)",
                path, p->name, (unsigned long long)p->begin, (unsigned long long)p->end, (unsigned long long)pos);
            if (bad == DSQ_OK) bad = ps;
        } else if (p->begin > pos) {
            dsq_status ps = dsq_err_set(err, DSQ_ERR_FORMAT,
                                        "%s: tensor %s: gap of %llu unclaimed bytes before it at data offset %llu",
                                        path, p->name, (unsigned long long)(p->begin - pos), (unsigned long long)pos);
            if (bad == DSQ_OK) bad = ps;
        }
        if (p->end > pos) pos = p->end;
    }
    if (pos < data_size) {
        dsq_status ps =
            dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor (data section %llu bytes)",
                        path, (unsigned long long)(data_size - pos), (unsigned long long)data_size);
        if (bad == DSQ_OK) bad = ps;
    }
    return bad;
}

static bool name_is_safe_file(const char *f) {
    if (!*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) return false;
    return strlen(f) <= 255;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Index → sorted unique shard file list, and (name, file) pairs to check afterwards. */
static dsq_status read_index(const char *dir, const char *index_path, cJSON **json_out, char ***files_out,
                             size_t *n_files_out, dsq_err *err) {
    char *text = NULL;
    size_t len = 0;
    DSQ_TRY(dsq_read_file(index_path, DSQ_ST_MAX_HEADER, &text, &len, err));
    cJSON *json = NULL;
    dsq_status s = dsq_json_parse(text, len, index_path, &json, err);
    dsq_free(text);
    if (s != DSQ_OK) return s;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(json, "weight_map");
    if (!cJSON_IsObject(json) || !cJSON_IsObject(wm)) {
        cJSON_Delete(json);
        return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
    }
    if (!wm->child) { /* no shard to open: not a checkpoint, whatever the folder holds */
        cJSON_Delete(json);
        return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: weight_map names no tensor", index_path);
    }
    size_t n = (size_t)cJSON_GetArraySize(wm);
    char **files = dsq_calloc(n ? n : 1, sizeof *files);
    if (!files) {
        cJSON_Delete(json);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", index_path);
    }
    size_t nf = 0;
    dsq_status bad = DSQ_OK;
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            bad = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a string", index_path, e->string);
            continue;
        }
        if (!name_is_safe_file(e->valuestring)) {
            bad = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: weight_map[\"%s\"] names an unsafe file \"%.64s\"", index_path,
                              e->string, e->valuestring);
            continue;
        }
        files[nf++] = e->valuestring;
    }
    qsort(files, nf, sizeof *files, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < nf; i++)
        if (u == 0 || strcmp(files[u - 1], files[i])) files[u++] = files[i];
    if (bad) {
        dsq_free(files);
        cJSON_Delete(json);
        return bad;
    }
    (void)dir;
    *json_out = json;
    *files_out = files;
    *n_files_out = u;
    return DSQ_OK;
}

static dsq_status build_table(dsq_st *st, pvec *pv, dsq_err *err) {
    size_t names_len = 0;
    for (size_t i = 0; i < pv->n; i++) names_len += strlen(pv->v[i].name) + 1;
    st->names = dsq_malloc(names_len ? names_len : 1);
    st->tensors = dsq_calloc(pv->n ? pv->n : 1, sizeof *st->tensors);
    st->hash_cap = 16;
    while (st->hash_cap < pv->n * 2) st->hash_cap *= 2;
    st->hash = dsq_calloc(st->hash_cap, sizeof *st->hash);
    if (!st->names || !st->tensors || !st->hash) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", st->dir);
    char *np = st->names;
    dsq_status s = DSQ_OK;
    for (size_t i = 0; i < pv->n; i++) {
        const pending *p = &pv->v[i];
        dsq_st_tensor *t = &st->tensors[i];
        size_t l = strlen(p->name) + 1;
        memcpy(np, p->name, l);
        t->name = np;
        np += l;
        t->dtype = p->dtype;
        t->rank = p->rank;
        memcpy(t->shape, p->shape, sizeof t->shape);
        t->n_elements = p->n_elements;
        t->n_bytes = p->n_bytes;
        t->shard = p->shard;
        const shard *sh = &st->shards[p->shard];
        t->file_offset = sh->data_start + p->begin;
        t->data = sh->map.data ? sh->map.data + t->file_offset : NULL;
        st->total_bytes += t->n_bytes;
        size_t h = (size_t)(hash_str(t->name) & (st->hash_cap - 1));
        while (st->hash[h]) {
            const dsq_st_tensor *o = &st->tensors[st->hash[h] - 1];
            if (!strcmp(o->name, t->name)) {
                s = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: tensor %s appears in both %s and %s", st->dir, t->name,
                                st->shards[o->shard].file, sh->file);
                break;
            }
            h = (h + 1) & (st->hash_cap - 1);
        }
        if (!st->hash[h]) st->hash[h] = (uint32_t)(i + 1);
    }
    st->n_tensors = pv->n;
    return s;
}

static char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return dsq_strdup(s ? s + 1 : path);
}

static char *dir_name(const char *path) {
    const char *s = strrchr(path, '/');
    if (!s) return dsq_strdup(".");
    size_t n = (size_t)(s - path);
    if (n == 0) n = 1;
    char *d = dsq_malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = 0;
    }
    return d;
}

/* A directory without an index must hold exactly one *.safetensors file. */
static dsq_status find_single(const char *dir, char **out, dsq_err *err) {
    DIR *d = opendir(dir);
    if (!d) return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot list directory", dir);
    char *found = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 12 && !strcmp(e->d_name + l - 12, ".safetensors") && e->d_name[0] != '.') {
            n++;
            if (!found) found = dsq_strdup(e->d_name);
        }
    }
    closedir(d);
    if (n != 1) {
        dsq_free(found);
        return dsq_err_set(err, DSQ_ERR_MISSING, "%s: no %s and %d .safetensors files (need exactly one)", dir,
                           DSQ_ST_INDEX_NAME, n);
    }
    *out = found;
    return found ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
}

dsq_status dsq_st_open(const char *path, const dsq_st_options *opt, dsq_st **out, dsq_err *err) {
    *out = NULL;
    bool use_mmap = !(opt && opt->no_mmap);
    dsq_st *st = dsq_calloc(1, sizeof *st);
    if (!st) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    pvec pv = {0};
    cJSON *index = NULL;
    char **files = NULL;
    size_t n_files = 0;
    char *single = NULL;
    dsq_status s = DSQ_OK;

    if (dsq_path_is_dir(path)) {
        st->dir = dsq_strdup(path);
        char *ip = dsq_path_join(path, DSQ_ST_INDEX_NAME);
        if (!st->dir || !ip) {
            dsq_free(ip);
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (dsq_path_exists(ip)) {
            s = read_index(path, ip, &index, &files, &n_files, err);
        } else {
            s = find_single(path, &single, err);
            if (s == DSQ_OK) {
                files = dsq_calloc(1, sizeof *files);
                if (!files)
                    s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
                else
                    files[0] = single, n_files = 1;
            }
        }
        dsq_free(ip);
    } else {
        st->dir = dir_name(path);
        single = base_name(path);
        files = dsq_calloc(1, sizeof *files);
        if (!st->dir || !single || !files)
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        else
            files[0] = single, n_files = 1;
    }
    if (s != DSQ_OK) goto done;

    st->shards = dsq_calloc(n_files ? n_files : 1, sizeof *st->shards);
    if (!st->shards) {
        s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    st->n_shards = n_files;
    for (size_t i = 0; i < n_files; i++) {
        st->shards[i].map.fd = -1;
        st->shards[i].file = dsq_strdup(files[i]);
        char *sp = dsq_path_join(st->dir, files[i]);
        if (!st->shards[i].file || !sp) {
            dsq_free(sp);
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        dsq_status si = open_shard(st, (uint32_t)i, sp, use_mmap, &pv, err);
        if (si != DSQ_OK && s == DSQ_OK) s = si;
        dsq_free(sp);
        if (si == DSQ_ERR_NOMEM) goto done;
    }
    if (s != DSQ_OK) goto done;
    s = build_table(st, &pv, err);
    if (s != DSQ_OK) goto done;

    if (index) { /* the index and the shards must agree, both ways */
        const cJSON *wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
        size_t n_index = 0;
        for (const cJSON *e = wm->child; e; e = e->next, n_index++) {
            const dsq_st_tensor *t = dsq_st_find(st, e->string);
            if (!t) {
                dsq_err_set(err, DSQ_ERR_MISSING, "%s: tensor %s is named by the index but absent from %s", st->dir,
                            e->string, e->valuestring);
                s = DSQ_ERR_MISSING;
            } else if (strcmp(st->shards[t->shard].file, e->valuestring)) {
                dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tensor %s is in %s but the index says %s", st->dir, e->string,
                            st->shards[t->shard].file, e->valuestring);
                s = DSQ_ERR_FORMAT;
            }
        }
        if (n_index != st->n_tensors) {
            for (size_t i = 0; i < st->n_tensors; i++)
                if (!cJSON_GetObjectItemCaseSensitive(wm, st->tensors[i].name)) {
                    dsq_err_set(err, DSQ_ERR_UNEXPECTED, "%s: tensor %s in %s is not in the index", st->dir,
                                st->tensors[i].name, st->shards[st->tensors[i].shard].file);
                    s = DSQ_ERR_UNEXPECTED;
                }
        }
    }

done:
    dsq_free(pv.v);
    dsq_free(files);
    dsq_free(single);
    cJSON_Delete(index);
    if (s != DSQ_OK) {
        dsq_st_close(st);
        return s;
    }
    *out = st;
    return DSQ_OK;
}

void dsq_st_close(dsq_st *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_shards; i++) {
        dsq_map_close(&st->shards[i].map);
        cJSON_Delete(st->shards[i].json);
        dsq_free(st->shards[i].file);
    }
    dsq_free(st->shards);
    dsq_free(st->tensors);
    dsq_free(st->names);
    dsq_free(st->hash);
    dsq_free(st->dir);
    dsq_free(st);
}

size_t dsq_st_count(const dsq_st *st) { return st->n_tensors; }
const dsq_st_tensor *dsq_st_at(const dsq_st *st, size_t i) { return i < st->n_tensors ? &st->tensors[i] : NULL; }

const dsq_st_tensor *dsq_st_find(const dsq_st *st, const char *name) {
    if (!st->hash) return NULL;
    size_t h = (size_t)(hash_str(name) & (st->hash_cap - 1));
    while (st->hash[h]) {
        const dsq_st_tensor *t = &st->tensors[st->hash[h] - 1];
        if (!strcmp(t->name, name)) return t;
        h = (h + 1) & (st->hash_cap - 1);
    }
    return NULL;
}

size_t dsq_st_shard_count(const dsq_st *st) { return st->n_shards; }
const char *dsq_st_shard_path(const dsq_st *st, size_t i) { return i < st->n_shards ? st->shards[i].map.path : NULL; }
uint64_t dsq_st_shard_size(const dsq_st *st, size_t i) { return i < st->n_shards ? st->shards[i].map.size : 0; }
int64_t dsq_st_shard_mtime_ns(const dsq_st *st, size_t i) { return i < st->n_shards ? st->shards[i].map.mtime_ns : 0; }
const char *dsq_st_dir(const dsq_st *st) { return st->dir; }
uint64_t dsq_st_total_bytes(const dsq_st *st) { return st->total_bytes; }

const char *dsq_st_metadata(const dsq_st *st, const char *key) {
    if (st->n_shards == 0 || !st->shards[0].metadata) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->shards[0].metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

dsq_status dsq_st_read(const dsq_st *st, const dsq_st_tensor *t, uint64_t offset, void *buf, size_t n, dsq_err *err) {
    if (offset > t->n_bytes || n > t->n_bytes - offset)
        return dsq_err_set(err, DSQ_ERR_RANGE, "tensor %s: read of %zu bytes at %llu past its %llu bytes", t->name, n,
                           (unsigned long long)offset, (unsigned long long)t->n_bytes);
    return dsq_map_read(&st->shards[t->shard].map, t->file_offset + offset, buf, n, err);
}

void dsq_st_prefetch(const dsq_st *st, const dsq_st_tensor *t) {
    dsq_map_willneed(&st->shards[t->shard].map, t->file_offset, t->n_bytes);
}
void dsq_st_release(const dsq_st *st, const dsq_st_tensor *t) {
    dsq_map_dontneed(&st->shards[t->shard].map, t->file_offset, t->n_bytes);
}

/* ---- writer ---- */

typedef struct wentry {
    char *name;
    dsq_dtype dtype;
    int rank;
    uint64_t shape[DSQ_ST_MAX_RANK];
    uint64_t n_bytes;
} wentry;

struct dsq_st_writer {
    char *path;
    bool overwrite, begun;
    wentry *e;
    size_t n, cap;
    char **meta; /* key, value pairs */
    size_t n_meta;
    uint64_t data_bytes, written;
    dsq_afile f;
};

dsq_status dsq_st_writer_create(const char *path, bool overwrite, dsq_st_writer **out, dsq_err *err) {
    *out = NULL;
    dsq_st_writer *w = dsq_calloc(1, sizeof *w);
    if (!w || !(w->path = dsq_strdup(path))) {
        dsq_free(w);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    w->overwrite = overwrite;
    w->f.fd = -1;
    *out = w;
    return DSQ_OK;
}

static bool json_safe(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20) return false;
    return true;
}

dsq_status dsq_st_writer_meta(dsq_st_writer *w, const char *key, const char *value, dsq_err *err) {
    if (w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "%s: metadata added after begin", w->path);
    if (!json_safe(key) || !json_safe(value))
        return dsq_err_set(err, DSQ_ERR_ARG, "%s: metadata with control characters", w->path);
    char **m = dsq_realloc(w->meta, (w->n_meta + 1) * 2 * sizeof *m);
    if (!m) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    w->meta = m;
    m[2 * w->n_meta] = dsq_strdup(key);
    m[2 * w->n_meta + 1] = dsq_strdup(value);
    w->n_meta++;
    if (!m[2 * w->n_meta - 2] || !m[2 * w->n_meta - 1]) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    return DSQ_OK;
}

dsq_status dsq_st_writer_add(dsq_st_writer *w, const char *name, dsq_dtype dtype, int rank, const uint64_t *shape,
                             dsq_err *err) {
    if (w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "%s: tensor %s added after begin", w->path, name);
    size_t nl = strlen(name);
    if (nl == 0 || nl > DSQ_ST_MAX_NAME || !json_safe(name) || !strcmp(name, "__metadata__"))
        return dsq_err_set(err, DSQ_ERR_ARG, "%s: invalid tensor name \"%.64s\"", w->path, name);
    if (rank < 0 || rank > DSQ_ST_MAX_RANK)
        return dsq_err_set(err, DSQ_ERR_SHAPE, "%s: tensor %s: rank %d", w->path, name, rank);
    if (dsq_dtype_size(dtype) == 0)
        return dsq_err_set(err, DSQ_ERR_DTYPE, "%s: tensor %s: invalid dtype", w->path, name);
    uint64_t ne, nb, tot;
    if (!dsq_prod_u64(shape, rank, &ne) || !dsq_mul_u64(ne, dsq_dtype_size(dtype), &nb) ||
        !dsq_add_u64(w->data_bytes, nb, &tot))
        return dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: tensor %s: size overflows", w->path, name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        wentry *ne2 = dsq_realloc(w->e, cap * sizeof *ne2);
        if (!ne2) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        w->e = ne2;
        w->cap = cap;
    }
    wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = dsq_strdup(name))) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    e->dtype = dtype;
    e->rank = rank;
    for (int i = 0; i < rank; i++) e->shape[i] = shape[i];
    e->n_bytes = nb;
    w->n++;
    w->data_bytes = tot;
    return DSQ_OK;
}

uint64_t dsq_st_writer_data_bytes(const dsq_st_writer *w) { return w->data_bytes; }

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = dsq_realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') sb_put(b, "\\", 1);
        sb_put(b, s, 1);
    }
    sb_put(b, "\"", 1);
}
static void sb_u64(sbuf *b, uint64_t v) {
    char t[32];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_str(b, t);
}

dsq_status dsq_st_writer_begin(dsq_st_writer *w, dsq_err *err) {
    if (w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "%s: begun twice", w->path);
    sbuf b = {0};
    sb_str(&b, "{");
    bool first = true;
    if (w->n_meta) {
        sb_str(&b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) sb_str(&b, ",");
            sb_json_str(&b, w->meta[2 * i]);
            sb_str(&b, ":");
            sb_json_str(&b, w->meta[2 * i + 1]);
        }
        sb_str(&b, "}");
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const wentry *e = &w->e[i];
        if (!first) sb_str(&b, ",");
        first = false;
        sb_json_str(&b, e->name);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, dsq_dtype_name(e->dtype));
        sb_str(&b, "\",\"shape\":[");
        for (int k = 0; k < e->rank; k++) {
            if (k) sb_str(&b, ",");
            sb_u64(&b, e->shape[k]);
        }
        sb_str(&b, "],\"data_offsets\":[");
        sb_u64(&b, off);
        sb_str(&b, ",");
        off += e->n_bytes;
        sb_u64(&b, off);
        sb_str(&b, "]}");
    }
    sb_str(&b, "}");
    while (!b.oom && b.n % 8) sb_str(&b, " ");
    if (b.oom) {
        dsq_free(b.p);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory building the header", w->path);
    }
    if (b.n > DSQ_ST_MAX_HEADER) {
        dsq_free(b.p);
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: header of %zu bytes exceeds the limit", w->path, b.n);
    }
    dsq_afile_options o = {.overwrite = w->overwrite};
    dsq_status s = dsq_afile_open(w->path, &o, &w->f, err);
    if (s == DSQ_OK) {
        uint8_t len8[8];
        dsq_put_u64le(len8, b.n);
        s = dsq_afile_write(&w->f, len8, 8, err);
        if (s == DSQ_OK) s = dsq_afile_write(&w->f, b.p, b.n, err);
    }
    dsq_free(b.p);
    if (s != DSQ_OK) return s;
    w->begun = true;
    return DSQ_OK;
}

dsq_status dsq_st_writer_write(dsq_st_writer *w, const void *data, size_t n, dsq_err *err) {
    if (!w->begun) return dsq_err_set(err, DSQ_ERR_STATE, "%s: write before begin", w->path);
    if (n > w->data_bytes - w->written)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: %zu bytes more than the planned %llu", w->path, n,
                           (unsigned long long)w->data_bytes);
    DSQ_TRY(dsq_afile_write(&w->f, data, n, err));
    w->written += n;
    return DSQ_OK;
}

static void writer_release(dsq_st_writer *w) {
    for (size_t i = 0; i < w->n; i++) dsq_free(w->e[i].name);
    for (size_t i = 0; i < 2 * w->n_meta; i++) dsq_free(w->meta[i]);
    dsq_free(w->meta);
    dsq_free(w->e);
    dsq_free(w->path);
    dsq_free(w);
}

dsq_status dsq_st_writer_finish(dsq_st_writer *w, dsq_err *err) {
    dsq_status s;
    if (!w->begun)
        s = dsq_st_writer_begin(w, err);
    else
        s = DSQ_OK;
    if (s == DSQ_OK && w->written != w->data_bytes)
        s = dsq_err_set(err, DSQ_ERR_STATE, "%s: %llu of %llu planned data bytes written", w->path,
                        (unsigned long long)w->written, (unsigned long long)w->data_bytes);
    if (s == DSQ_OK)
        s = dsq_afile_commit(&w->f, err); /* commit aborts on failure */
    else
        dsq_afile_abort(&w->f);
    writer_release(w);
    return s;
}

void dsq_st_writer_free(dsq_st_writer *w) {
    if (!w) return;
    dsq_afile_abort(&w->f);
    writer_release(w);
}

dsq_status dsq_st_write_file(const char *path, const dsq_st_item *items, size_t n, bool overwrite, dsq_err *err) {
    dsq_st_writer *w;
    DSQ_TRY(dsq_st_writer_create(path, overwrite, &w, err));
    dsq_status s = DSQ_OK;
    for (size_t i = 0; i < n && s == DSQ_OK; i++)
        s = dsq_st_writer_add(w, items[i].name, items[i].dtype, items[i].rank, items[i].shape, err);
    if (s == DSQ_OK) s = dsq_st_writer_begin(w, err);
    for (size_t i = 0; i < n && s == DSQ_OK; i++) {
        uint64_t nb = w->e[i].n_bytes;
        if (nb > SIZE_MAX)
            s = dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: tensor too large", path);
        else if (nb)
            s = dsq_st_writer_write(w, items[i].data, (size_t)nb, err);
    }
    if (s != DSQ_OK) {
        dsq_st_writer_free(w);
        return s;
    }
    return dsq_st_writer_finish(w, err);
}
