/* Importance matrices: accumulation, lookup, the safetensors file (dsq_imatrix.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_imatrix.h"
#include "dsq_safetensors.h"

typedef struct entry {
    char *name;
    uint64_t cols, rows;
    double *sum2; /* [cols] */
    float *imp;   /* [cols] Σx²/rows, built on lookup */
} entry;

struct dsq_imatrix {
    entry *e;
    size_t n, cap;
    uint32_t *slot; /* open addressing: index+1 into e, 0 = empty; hcap a power of two */
    size_t hcap;
    dsq_status first;
    char first_msg[1100];
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static bool rehash(dsq_imatrix *m, size_t hcap) {
    uint32_t *slot = dsq_calloc(hcap, sizeof *slot);
    if (!slot) return false;
    for (size_t i = 0; i < m->n; i++) {
        size_t k = (size_t)hash_str(m->e[i].name) & (hcap - 1);
        while (slot[k]) k = (k + 1) & (hcap - 1);
        slot[k] = (uint32_t)(i + 1);
    }
    dsq_free(m->slot);
    m->slot = slot, m->hcap = hcap;
    return true;
}

static entry *find(const dsq_imatrix *m, const char *name) {
    if (!m->hcap) return NULL;
    for (size_t k = (size_t)hash_str(name) & (m->hcap - 1); m->slot[k]; k = (k + 1) & (m->hcap - 1))
        if (!strcmp(m->e[m->slot[k] - 1].name, name)) return &m->e[m->slot[k] - 1];
    return NULL;
}

dsq_status dsq_imatrix_create(dsq_imatrix **out, dsq_err *err) {
    *out = dsq_calloc(1, sizeof **out);
    DSQ_RETURN_IF(!*out, err, DSQ_ERR_NOMEM, "no memory for an imatrix");
    return DSQ_OK;
}

void dsq_imatrix_free(dsq_imatrix *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) {
        dsq_free(m->e[i].name);
        dsq_free(m->e[i].sum2);
        dsq_free(m->e[i].imp);
    }
    dsq_free(m->e);
    dsq_free(m->slot);
    dsq_free(m);
}

/* The entry for name with cols columns, created (zeroed) when missing. */
static dsq_status get_entry(dsq_imatrix *m, const char *name, uint64_t cols, entry **out, dsq_err *err) {
    entry *e = find(m, name);
    if (e) {
        DSQ_RETURN_IF(e->cols != cols, err, DSQ_ERR_SHAPE, "imatrix: %s has %llu columns, not %llu", name,
                      (unsigned long long)e->cols, (unsigned long long)cols);
        *out = e;
        return DSQ_OK;
    }
    DSQ_RETURN_IF(m->n >= DSQ_IMATRIX_MAX_ENTRIES, err, DSQ_ERR_RANGE, "imatrix: more than %d weights",
                  DSQ_IMATRIX_MAX_ENTRIES);
    DSQ_RETURN_IF(cols == 0 || cols > SIZE_MAX / sizeof(double), err, DSQ_ERR_SHAPE, "imatrix: %s: %llu columns", name,
                  (unsigned long long)cols);
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        entry *ne = dsq_realloc(m->e, cap * sizeof *ne);
        DSQ_RETURN_IF(!ne, err, DSQ_ERR_NOMEM, "no memory for the imatrix table");
        m->e = ne, m->cap = cap;
    }
    if (2 * (m->n + 1) > m->hcap)
        DSQ_RETURN_IF(!rehash(m, m->hcap ? 2 * m->hcap : 128), err, DSQ_ERR_NOMEM, "no memory for the imatrix index");
    e = &m->e[m->n];
    memset(e, 0, sizeof *e);
    e->name = dsq_strdup(name);
    e->sum2 = dsq_calloc((size_t)cols, sizeof *e->sum2);
    if (!e->name || !e->sum2) {
        dsq_free(e->name);
        dsq_free(e->sum2);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for imatrix entry %s", name);
    }
    e->cols = cols;
    size_t k = (size_t)hash_str(name) & (m->hcap - 1);
    while (m->slot[k]) k = (k + 1) & (m->hcap - 1);
    m->slot[k] = (uint32_t)(m->n + 1);
    m->n++;
    *out = e;
    return DSQ_OK;
}

dsq_status dsq_imatrix_add(dsq_imatrix *m, const char *name, const float *x, size_t ldx, int64_t n, uint64_t cols,
                           dsq_err *err) {
    entry *e;
    DSQ_TRY(get_entry(m, name, cols, &e, err));
    for (int64_t t = 0; t < n; t++) {
        const float *v = x + (size_t)t * ldx;
        for (uint64_t c = 0; c < cols; c++) e->sum2[c] += (double)v[c] * v[c];
    }
    e->rows += (uint64_t)n;
    dsq_free(e->imp);
    e->imp = NULL;
    return DSQ_OK;
}

void dsq_imatrix_observe(void *user, const char *weight, const float *x, size_t ldx, int64_t n, uint64_t cols) {
    dsq_imatrix *m = user;
    if (m->first) return;
    dsq_err e = DSQ_ERR_INIT;
    m->first = dsq_imatrix_add(m, weight, x, ldx, n, cols, &e);
    if (m->first) snprintf(m->first_msg, sizeof m->first_msg, "%s", e.msg);
    dsq_err_clear(&e);
}

dsq_status dsq_imatrix_error(const dsq_imatrix *m, dsq_err *err) {
    if (!m->first) return DSQ_OK;
    return dsq_err_set(err, m->first, "%s", m->first_msg);
}

size_t dsq_imatrix_count(const dsq_imatrix *m) { return m->n; }
const char *dsq_imatrix_name(const dsq_imatrix *m, size_t i) { return m->e[i].name; }
uint64_t dsq_imatrix_cols(const dsq_imatrix *m, size_t i) { return m->e[i].cols; }
uint64_t dsq_imatrix_rows(const dsq_imatrix *m, size_t i) { return m->e[i].rows; }
const double *dsq_imatrix_sum2(const dsq_imatrix *m, size_t i) { return m->e[i].sum2; }

dsq_status dsq_imatrix_set(dsq_imatrix *m, const char *name, uint64_t cols, const float *sum2, uint64_t rows,
                           dsq_err *err) {
    DSQ_RETURN_IF(find(m, name), err, DSQ_ERR_DUPLICATE, "imatrix: %s appears twice", name);
    DSQ_RETURN_IF(rows < 1, err, DSQ_ERR_RANGE, "imatrix: %s: %llu rows", name, (unsigned long long)rows);
    for (uint64_t k = 0; k < cols; k++)
        DSQ_RETURN_IF(!(sum2[k] >= 0.0f) || !isfinite(sum2[k]), err, DSQ_ERR_NONFINITE,
                      "imatrix: %s[%llu] is %g (finite >= 0 expected)", name, (unsigned long long)k, (double)sum2[k]);
    entry *e;
    DSQ_TRY(get_entry(m, name, cols, &e, err));
    for (uint64_t k = 0; k < cols; k++) e->sum2[k] = sum2[k];
    e->rows = rows;
    return DSQ_OK;
}

const float *dsq_imatrix_importance(dsq_imatrix *m, const char *name, uint64_t cols) {
    entry *e = find(m, name);
    if (!e || e->cols != cols || e->rows < DSQ_IMATRIX_MIN_ROWS) return NULL;
    if (!e->imp) {
        e->imp = dsq_malloc(sizeof(float) * (size_t)cols);
        if (!e->imp) return NULL;
        for (uint64_t c = 0; c < cols; c++) e->imp[c] = (float)(e->sum2[c] / (double)e->rows);
    }
    return e->imp;
}

/* ---- file ----------------------------------------------------------------------------------------- */

static const char SUM2[] = ".in_sum2", COUNTS[] = ".counts";

dsq_status dsq_imatrix_save(const dsq_imatrix *m, const char *path, bool overwrite, dsq_err *err) {
    dsq_st_writer *w = NULL;
    dsq_status st = dsq_st_writer_create(path, overwrite, &w, err);
    float *buf = NULL;
    char *nm = NULL;
    if (st) return st;
    st = dsq_st_writer_meta(w, "format", "dsq-imatrix", err);
    for (size_t i = 0; !st && i < m->n; i++) {
        size_t len = strlen(m->e[i].name) + sizeof SUM2;
        nm = dsq_malloc(len);
        if (!nm) {
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
            break;
        }
        uint64_t one = 1;
        snprintf(nm, len, "%s%s", m->e[i].name, SUM2);
        st = dsq_st_writer_add(w, nm, DSQ_DTYPE_F32, 1, &m->e[i].cols, err);
        snprintf(nm, len, "%s%s", m->e[i].name, COUNTS);
        if (!st) st = dsq_st_writer_add(w, nm, DSQ_DTYPE_F32, 1, &one, err);
        dsq_free(nm);
        nm = NULL;
    }
    if (!st) st = dsq_st_writer_begin(w, err);
    for (size_t i = 0; !st && i < m->n; i++) {
        buf = dsq_malloc(sizeof(float) * (size_t)m->e[i].cols);
        if (!buf) {
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
            break;
        }
        for (uint64_t c = 0; c < m->e[i].cols; c++) buf[c] = (float)m->e[i].sum2[c];
        float cnt = (float)m->e[i].rows;
        st = dsq_st_writer_write(w, buf, sizeof(float) * (size_t)m->e[i].cols, err);
        if (!st) st = dsq_st_writer_write(w, &cnt, sizeof cnt, err);
        dsq_free(buf);
        buf = NULL;
    }
    if (st) {
        dsq_st_writer_free(w);
        return st;
    }
    return dsq_st_writer_finish(w, err);
}

static bool ends_with(const char *s, const char *suf, size_t *stem) {
    size_t n = strlen(s), k = strlen(suf);
    if (n <= k || strcmp(s + n - k, suf) != 0) return false;
    *stem = n - k;
    return true;
}

dsq_status dsq_imatrix_load(const char *path, dsq_imatrix **out, dsq_err *err) {
    *out = NULL;
    dsq_st *f = NULL;
    DSQ_TRY(dsq_st_open(path, NULL, &f, err));
    dsq_imatrix *m = NULL;
    dsq_status st = dsq_imatrix_create(&m, err);
    const char *fmt = dsq_st_metadata(f, "format");
    if (!st && (!fmt || strcmp(fmt, "dsq-imatrix") != 0))
        st =
            dsq_err_set(err, DSQ_ERR_FORMAT, "%s: not an imatrix (metadata format is %s)", path, fmt ? fmt : "missing");
    for (size_t i = 0; !st && i < dsq_st_count(f); i++) {
        const dsq_st_tensor *t = dsq_st_at(f, i);
        size_t stem;
        if (ends_with(t->name, COUNTS, &stem)) continue; /* read with its in_sum2 */
        if (!ends_with(t->name, SUM2, &stem)) {
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tensor %s is neither NAME.in_sum2 nor NAME.counts", path,
                             t->name);
            break;
        }
        char *name = dsq_malloc(stem + sizeof COUNTS);
        if (!name) {
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
            break;
        }
        memcpy(name, t->name, stem);
        snprintf(name + stem, sizeof COUNTS, "%s", COUNTS);
        const dsq_st_tensor *c = dsq_st_find(f, name);
        name[stem] = 0;
        float cnt = 0;
        if (t->dtype != DSQ_DTYPE_F32 || t->rank != 1 || t->shape[0] == 0)
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s must be F32 [cols]", path, t->name);
        else if (!c || c->dtype != DSQ_DTYPE_F32 || c->n_elements != 1)
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s has no F32 [1] %s.counts", path, t->name, name);
        else if (!(st = dsq_st_read(f, c, 0, &cnt, 4, err)) && !(cnt >= 1.0f && cnt <= 0x1p60f && cnt == floorf(cnt)))
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s.counts is %g (a whole number >= 1 expected)", path, name,
                             (double)cnt);
        entry *e = NULL;
        if (!st && find(m, name)) st = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: %s appears twice", path, name);
        if (!st) st = get_entry(m, name, t->shape[0], &e, err);
        float *buf = NULL;
        if (!st && !(buf = dsq_malloc(sizeof(float) * (size_t)t->shape[0])))
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
        if (!st) st = dsq_st_read(f, t, 0, buf, sizeof(float) * (size_t)t->shape[0], err);
        for (uint64_t k = 0; !st && k < t->shape[0]; k++) {
            if (!(buf[k] >= 0.0f) || !isfinite(buf[k]))
                st = dsq_err_set(err, DSQ_ERR_NONFINITE, "%s: %s[%llu] is %g (finite >= 0 expected)", path, t->name,
                                 (unsigned long long)k, (double)buf[k]);
            else
                e->sum2[k] = buf[k];
        }
        if (!st) e->rows = (uint64_t)cnt;
        dsq_free(buf);
        dsq_free(name);
    }
    /* every counts tensor must belong to an in_sum2 */
    for (size_t i = 0; !st && i < dsq_st_count(f); i++) {
        const dsq_st_tensor *t = dsq_st_at(f, i);
        size_t stem;
        if (!ends_with(t->name, COUNTS, &stem)) continue;
        char *name = dsq_strdup(t->name);
        if (!name) {
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
            break;
        }
        name[stem] = 0;
        if (!find(m, name)) st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s has no %s.in_sum2", path, t->name, name);
        dsq_free(name);
    }
    dsq_st_close(f);
    if (st) {
        dsq_imatrix_free(m);
        return st;
    }
    *out = m;
    return DSQ_OK;
}
