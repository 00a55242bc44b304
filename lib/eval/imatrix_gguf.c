/* llama.cpp's imatrix GGUF, read and write (dsq_imatrix_gguf.h).  Format learned from llama.cpp's
 * tools/imatrix/imatrix.cpp (save_imatrix / load_imatrix); the code is ours. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_ggml.h"
#include "dsq_gguf.h"
#include "dsq_imatrix_gguf.h"
#include "gguf_internal.h"

enum { NAME_MAX_ = 160 };
static const char SUM2[] = ".in_sum2", COUNTS[] = ".counts", SUM1[] = ".in_sum";
static const char *const EXPS[3] = {"ffn_gate_exps.weight", "ffn_down_exps.weight", "ffn_up_exps.weight"};
static const struct { const char *canon, *gguf; } TOP[] = {
    {"head.weight", "output.weight"}, {"hc_head_fn", "output_hc_fn.weight"}, {"embed.weight", "token_embd.weight"}};

/* A decimal index (no sign, ≤ 7 digits: sscanf's %d overflows undefined) at *p; advances *p. */
static bool index_at(const char **p, int *v) {
    int n = 0, d = 0;
    for (; **p >= '0' && **p <= '9' && d < 8; (*p)++, d++) n = n * 10 + (**p - '0');
    *v = n;
    return d >= 1 && d <= 7;
}
/* `prefix` N `.` at the start of s: N, and the rest after the dot */
static bool indexed(const char *s, const char *prefix, int *v, const char **rest) {
    size_t lp = strlen(prefix);
    if (strncmp(s, prefix, lp) != 0) return false;
    const char *p = s + lp;
    if (!index_at(&p, v) || *p != '.') return false;
    *rest = p + 1;
    return true;
}

/* checkpoint name → GGUF weight name and expert row (-1: not an expert); false when unmapped */
static bool to_gguf(const char *canon, char *g, size_t n, int *expert) {
    *expert = -1;
    for (size_t k = 0; k < sizeof TOP / sizeof TOP[0]; k++)
        if (!strcmp(canon, TOP[k].canon)) return snprintf(g, n, "%s", TOP[k].gguf) < (int)n;
    int l, e;
    const char *rest, *r2;
    if (!indexed(canon, "layers.", &l, &rest)) return false;
    if (indexed(rest, "ffn.experts.", &e, &r2)) {
        for (int w = 0; w < 3; w++) {
            static const char *const W[3] = {"w1.weight", "w2.weight", "w3.weight"};
            if (!strcmp(r2, W[w])) {
                *expert = e;
                return snprintf(g, n, "blk.%d.%s", l, EXPS[w]) < (int)n;
            }
        }
        return false;
    }
    const char *s = dsq__gguf_block_suffix(rest);
    return s && snprintf(g, n, "blk.%d.%s", l, s) < (int)n;
}

/* GGUF weight name → checkpoint name (for experts: with "%d" where the expert goes, *is_exps) */
static bool to_canon(const char *g, char *c, size_t n, bool *is_exps) {
    *is_exps = false;
    for (size_t k = 0; k < sizeof TOP / sizeof TOP[0]; k++)
        if (!strcmp(g, TOP[k].gguf)) return snprintf(c, n, "%s", TOP[k].canon) < (int)n;
    int l;
    const char *rest;
    if (!indexed(g, "blk.", &l, &rest)) return false;
    for (int w = 0; w < 3; w++)
        if (!strcmp(rest, EXPS[w])) {
            *is_exps = true;
            return snprintf(c, n, "layers.%d.ffn.experts.%%d.w%d.weight", l, w + 1) < (int)n;
        }
    const char *s = dsq__gguf_block_canon(rest);
    return s && snprintf(c, n, "layers.%d.%s", l, s) < (int)n;
}

/* ---- write ------------------------------------------------------------------------------------- */
typedef struct otensor {
    char name[NAME_MAX_]; /* GGUF weight name */
    uint64_t cols;
    int n_mat;
    size_t *idx; /* [n_mat] entry index + 1, 0 = no data */
} otensor;

static int cmp_name(const void *a, const void *b) { return strcmp(((const otensor *)a)->name, ((const otensor *)b)->name); }

dsq_status dsq_imatrix_save_gguf(const dsq_imatrix *m, const char *path, const dsq_imatrix_gguf_options *opt,
                                 dsq_err *err) {
    dsq_imatrix_gguf_options o = opt ? *opt : (dsq_imatrix_gguf_options){0};
    size_t n = dsq_imatrix_count(m);
    DSQ_RETURN_IF(n == 0, err, DSQ_ERR_ARG, "%s: the imatrix is empty", path);
    /* the expert count: the option, else the largest expert index seen + 1 */
    int n_exp = o.n_experts;
    char g[NAME_MAX_];
    int e;
    for (size_t i = 0; i < n; i++) {
        DSQ_RETURN_IF(!to_gguf(dsq_imatrix_name(m, i), g, sizeof g, &e), err, DSQ_ERR_UNSUPPORTED,
                      "%s: imatrix entry %s has no GGUF name (llama.cpp's imatrix holds the deepseek4 weights of the "
                      "main layers)", path, dsq_imatrix_name(m, i));
        if (o.n_experts == 0 && e >= n_exp) n_exp = e + 1;
        DSQ_RETURN_IF(e >= 0 && e >= n_exp, err, DSQ_ERR_RANGE, "%s: %s: expert %d of %d", path,
                      dsq_imatrix_name(m, i), e, n_exp);
    }
    otensor *t = dsq_calloc(n, sizeof *t);
    DSQ_RETURN_IF(!t, err, DSQ_ERR_NOMEM, "out of memory");
    size_t nt = 0;
    dsq_status st = DSQ_OK;
    for (size_t i = 0; i < n && st == DSQ_OK; i++) {
        to_gguf(dsq_imatrix_name(m, i), g, sizeof g, &e);
        size_t k = 0;
        while (k < nt && strcmp(t[k].name, g) != 0) k++;
        if (k == nt) {
            snprintf(t[k].name, sizeof t[k].name, "%s", g);
            t[k].cols = dsq_imatrix_cols(m, i);
            t[k].n_mat = e >= 0 ? n_exp : 1;
            t[k].idx = dsq_calloc((size_t)t[k].n_mat, sizeof *t[k].idx);
            nt++;
            if (!t[k].idx) {
                st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
                break;
            }
        }
        if (t[k].cols != dsq_imatrix_cols(m, i))
            st = dsq_err_set(err, DSQ_ERR_SHAPE, "%s: %s has %llu columns, its stack %s %llu", path,
                             dsq_imatrix_name(m, i), (unsigned long long)dsq_imatrix_cols(m, i), g,
                             (unsigned long long)t[k].cols);
        else t[k].idx[e >= 0 ? e : 0] = i + 1;
    }
    if (st == DSQ_OK) qsort(t, nt, sizeof *t, cmp_name); /* llama.cpp writes in name order */
    dsq_gguf_writer *w = NULL;
    float *buf = NULL;
    uint64_t max_cols = 0;
    for (size_t k = 0; k < nt; k++) max_cols = t[k].cols > max_cols ? t[k].cols : max_cols;
    if (st == DSQ_OK) st = dsq_gguf_writer_create(&w, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_str(w, "general.type", "imatrix", err);
    if (st == DSQ_OK) {
        const char *ds[1] = {o.dataset};
        uint64_t len[1] = {o.dataset ? strlen(o.dataset) : 0};
        st = dsq_gguf_writer_kv_arr_str(w, "imatrix.datasets", ds, len, o.dataset ? 1 : 0, err);
    }
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_u32(w, "imatrix.chunk_count", o.chunk_count, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_u32(w, "imatrix.chunk_size", o.chunk_size, err);
    char tn[NAME_MAX_ + 16];
    for (size_t k = 0; k < nt && st == DSQ_OK; k++) {
        uint64_t ne_s[2] = {t[k].cols, (uint64_t)t[k].n_mat}, ne_c[2] = {1, (uint64_t)t[k].n_mat};
        snprintf(tn, sizeof tn, "%s%s", t[k].name, SUM2);
        st = dsq_gguf_writer_tensor(w, tn, DSQ_GGMLT_F32, 2, ne_s, err);
        snprintf(tn, sizeof tn, "%s%s", t[k].name, COUNTS);
        if (st == DSQ_OK) st = dsq_gguf_writer_tensor(w, tn, DSQ_GGMLT_F32, 2, ne_c, err);
    }
    dsq_gguf_writer_options wo = {.overwrite = o.overwrite};
    dsq_gguf_plan plan;
    if (st == DSQ_OK) st = dsq_gguf_writer_begin(w, path, &wo, &plan, err);
    if (st == DSQ_OK && !(buf = dsq_malloc((size_t)(max_cols > (uint64_t)n_exp ? max_cols : (uint64_t)n_exp + 1) * 4 + 4)))
        st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < nt && st == DSQ_OK; k++) {
        for (int r = 0; r < t[k].n_mat && st == DSQ_OK; r++) { /* in_sum2 [n_mat][cols] */
            const double *s = t[k].idx[r] ? dsq_imatrix_sum2(m, t[k].idx[r] - 1) : NULL;
            for (uint64_t c = 0; c < t[k].cols; c++) buf[c] = s ? (float)s[c] : 0.0f;
            st = dsq_gguf_writer_write(w, buf, (size_t)t[k].cols * 4, err);
        }
        for (int r = 0; r < t[k].n_mat; r++) buf[r] = t[k].idx[r] ? (float)dsq_imatrix_rows(m, t[k].idx[r] - 1) : 0.0f;
        if (st == DSQ_OK) st = dsq_gguf_writer_write(w, buf, (size_t)t[k].n_mat * 4, err);
    }
    if (st == DSQ_OK) st = dsq_gguf_writer_finish(w, err);
    dsq_gguf_writer_free(w);
    dsq_free(buf);
    for (size_t k = 0; k < nt; k++) dsq_free(t[k].idx);
    dsq_free(t);
    return st;
}

/* ---- read -------------------------------------------------------------------------------------- */
static bool strip(const char *s, const char *suf, char *stem, size_t n) {
    size_t ls = strlen(s), lf = strlen(suf);
    if (ls <= lf || strcmp(s + ls - lf, suf) != 0 || ls - lf >= n) return false;
    memcpy(stem, s, ls - lf);
    stem[ls - lf] = 0;
    return true;
}

static bool shape2(const dsq_gguf_tensor *t, uint64_t *cols, uint64_t *n_mat) {
    for (int d = 2; d < DSQ_GGUF_MAX_DIMS; d++)
        if (t->ne[d] != 1) return false;
    *cols = t->ne[0], *n_mat = t->ne[1];
    return t->type == DSQ_GGMLT_F32 && t->ne[0] > 0 && t->ne[1] > 0;
}

/* The entries of an open GGUF; `path` names it in messages. */
static dsq_status load_from(dsq_gguf *g, const char *path, dsq_imatrix **out, dsq_err *err) {
    dsq_imatrix *m = NULL;
    dsq_status st = dsq_imatrix_create(&m, err);
    char *type = dsq_gguf_get_str(g, "general.type");
    if (st == DSQ_OK && (!type || strcmp(type, "imatrix") != 0))
        st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: not an imatrix GGUF (general.type is %s)", path, type ? type : "missing");
    dsq_free(type);
    char stem[NAME_MAX_], canon[NAME_MAX_], name[NAME_MAX_ + 16];
    float *row = NULL;
    size_t n_pairs = 0;
    for (size_t i = 0; st == DSQ_OK && i < dsq_gguf_n_tensors(g); i++) {
        const dsq_gguf_tensor *t = dsq_gguf_tensor_at(g, i);
        if (strip(t->name, COUNTS, stem, sizeof stem)) { /* its in_sum2 must exist */
            snprintf(name, sizeof name, "%s%s", stem, SUM2);
            if (!dsq_gguf_find_tensor(g, name))
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s has no %s", path, t->name, name);
            continue;
        }
        if (strip(t->name, SUM1, stem, sizeof stem)) { /* Σx: not used; must pair with an in_sum2 */
            snprintf(name, sizeof name, "%s%s", stem, SUM2);
            if (!dsq_gguf_find_tensor(g, name))
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s has no %s", path, t->name, name);
            continue;
        }
        if (!strip(t->name, SUM2, stem, sizeof stem)) {
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: tensor %s is not W.in_sum2, W.counts or W.in_sum", path, t->name);
            break;
        }
        snprintf(name, sizeof name, "%s%s", stem, COUNTS);
        const dsq_gguf_tensor *c = dsq_gguf_find_tensor(g, name);
        uint64_t cols = 0, n_mat = 0, one = 0, n_mat_c = 0;
        bool exps = false;
        if (!shape2(t, &cols, &n_mat)) {
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s must be F32 ne {cols, n_mat}", path, t->name);
        } else if (!c || !shape2(c, &one, &n_mat_c) || one != 1 || n_mat_c != n_mat) {
            st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s has no F32 ne {1, %llu} %s", path, t->name,
                             (unsigned long long)n_mat, name);
        } else if (!to_canon(stem, canon, sizeof canon, &exps)) {
            st = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: %s: no deepseek4 weight of that name", path, t->name);
        } else if (!exps && n_mat != 1) {
            st = dsq_err_set(err, DSQ_ERR_SHAPE, "%s: %s: %llu matrices for a weight that is not an expert stack", path,
                             t->name, (unsigned long long)n_mat);
        } else if (n_mat > 1u << 16 || cols > SIZE_MAX / 8) {
            st = dsq_err_set(err, DSQ_ERR_RANGE, "%s: %s: %llu x %llu", path, t->name, (unsigned long long)n_mat,
                             (unsigned long long)cols);
        }
        if (st == DSQ_OK && !row && !(row = dsq_malloc(sizeof *row))) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        for (uint64_t r = 0; st == DSQ_OK && r < n_mat; r++) {
            float cnt;
            memcpy(&cnt, c->data + 4 * r, 4);
            if (!(cnt >= 0.0f && cnt <= 0x1p60f) || cnt != floorf(cnt)) {
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: %s[%llu] is %g (a whole number >= 0 expected)", path, name,
                                 (unsigned long long)r, (double)cnt);
                break;
            }
            if (cnt == 0) continue; /* an expert never routed to: no data */
            float *nr = dsq_realloc(row, (size_t)cols * sizeof *row);
            if (!nr) {
                st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
                break;
            }
            row = nr;
            memcpy(row, t->data + r * cols * 4, (size_t)cols * 4); /* the reader checked the byte range */
            char full[NAME_MAX_ + 16];
            if (exps) snprintf(full, sizeof full, canon, (int)r);
            else snprintf(full, sizeof full, "%s", canon);
            dsq_err sub = DSQ_ERR_INIT;
            st = dsq_imatrix_set(m, full, cols, row, (uint64_t)cnt, &sub);
            if (st != DSQ_OK) st = dsq_err_set(err, st, "%s: %s: %s", path, t->name, sub.msg);
            dsq_err_clear(&sub);
        }
        n_pairs++;
    }
    if (st == DSQ_OK && n_pairs == 0) st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: no W.in_sum2 tensors", path);
    dsq_free(row);
    if (st != DSQ_OK) {
        dsq_imatrix_free(m);
        return st;
    }
    *out = m;
    return DSQ_OK;
}

dsq_status dsq_imatrix_load_gguf(const char *path, dsq_imatrix **out, dsq_err *err) {
    *out = NULL;
    dsq_gguf *g = NULL;
    DSQ_TRY(dsq_gguf_open(path, &g, err));
    dsq_status st = load_from(g, path, out, err);
    dsq_gguf_close(g);
    return st;
}

dsq_status dsq_imatrix_parse_gguf(const void *data, size_t size, const char *what, dsq_imatrix **out, dsq_err *err) {
    *out = NULL;
    dsq_gguf *g = NULL;
    DSQ_TRY(dsq_gguf_parse(data, size, what, &g, err));
    dsq_status st = load_from(g, what, out, err);
    dsq_gguf_close(g);
    return st;
}

dsq_status dsq_imatrix_load_any(const char *path, dsq_imatrix **out, dsq_err *err) {
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (f) {
        size_t got = fread(magic, 1, 4, f);
        fclose(f);
        if (got == 4 && !memcmp(magic, "GGUF", 4)) return dsq_imatrix_load_gguf(path, out, err);
    }
    return dsq_imatrix_load(path, out, err);
}

bool dsq_imatrix_gguf_sniff(const char *path) {
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got != 4 || memcmp(magic, "GGUF", 4) != 0) return false;
    dsq_gguf *g = NULL;
    if (dsq_gguf_open(path, &g, NULL) != DSQ_OK) return false;
    char *type = dsq_gguf_get_str(g, "general.type");
    bool yes = type && !strcmp(type, "imatrix");
    dsq_free(type);
    dsq_gguf_close(g);
    return yes;
}
