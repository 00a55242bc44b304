/* Multiple-choice tasks (HellaSwag-style JSONL): parsing with full validation, scoring through
 * tokenizer and span-log-prob callbacks, answers files and flip rates. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "dsq_json.h"
#include "dsq_metrics.h"

/* Strings live in a chain of arena chunks freed at once. */
typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
} chunk;

struct dsq_mc_task {
    dsq_mc_item *items;
    size_t n, cap;
    chunk *arena;
};

static char *arena_strdup(dsq_mc_task *t, const char *s) {
    size_t n = strlen(s) + 1;
    if (!t->arena || t->arena->cap - t->arena->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        chunk *c = dsq_malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = t->arena;
        c->used = 0;
        c->cap = cap;
        t->arena = c;
    }
    char *p = t->arena->data + t->arena->used;
    memcpy(p, s, n);
    t->arena->used += n;
    return p;
}

static void *arena_alloc(dsq_mc_task *t, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!t->arena || t->arena->cap - t->arena->used < n + 16) {
        size_t cap = n + 16 > 65536 ? n + 16 : 65536;
        chunk *c = dsq_malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = t->arena;
        c->used = 0;
        c->cap = cap;
        t->arena = c;
    }
    uintptr_t base = (uintptr_t)(t->arena->data + t->arena->used);
    size_t pad = (16 - (base & 15)) & 15;
    void *p = t->arena->data + t->arena->used + pad;
    t->arena->used += pad + n;
    return p;
}

void dsq_mc_task_free(dsq_mc_task *t) {
    if (!t) return;
    for (chunk *c = t->arena; c;) {
        chunk *next = c->next;
        dsq_free(c);
        c = next;
    }
    dsq_free(t->items);
    dsq_free(t);
}

size_t dsq_mc_task_count(const dsq_mc_task *t) { return t->n; }
const dsq_mc_item *dsq_mc_task_item(const dsq_mc_task *t, size_t i) { return i < t->n ? &t->items[i] : NULL; }

static bool utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int extra;
        uint32_t cp, min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            extra = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            extra = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        for (int i = 1; i <= extra; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        p += extra + 1;
    }
    return true;
}

/* A non-empty, valid UTF-8 string member. */
static bool text_ok(const cJSON *j) { return cJSON_IsString(j) && j->valuestring[0] && utf8_ok(j->valuestring); }

/* Validate one parsed line and append it; every problem is recorded, the first one returned. */
static dsq_status add_item(dsq_mc_task *t, const cJSON *root, const char *what, size_t line, dsq_err *err) {
    DSQ_RETURN_IF(!cJSON_IsObject(root), err, DSQ_ERR_JSON, "%s:%zu: not a JSON object", what, line);
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(root, "ctx");
    const cJSON *context = cJSON_GetObjectItemCaseSensitive(root, "context");
    DSQ_RETURN_IF(ctx && context, err, DSQ_ERR_DUPLICATE, "%s:%zu: both \"ctx\" and \"context\" given", what, line);
    if (!ctx) ctx = context;
    DSQ_RETURN_IF(!ctx, err, DSQ_ERR_MISSING, "%s:%zu: no \"ctx\" or \"context\"", what, line);
    DSQ_RETURN_IF(!text_ok(ctx), err, DSQ_ERR_JSON, "%s:%zu: context is not a non-empty UTF-8 string", what, line);
    const cJSON *endings = cJSON_GetObjectItemCaseSensitive(root, "endings");
    DSQ_RETURN_IF(!cJSON_IsArray(endings), err, endings ? DSQ_ERR_JSON : DSQ_ERR_MISSING,
                  "%s:%zu: \"endings\" is missing or not an array", what, line);
    int n_end = cJSON_GetArraySize(endings);
    DSQ_RETURN_IF(n_end < 2 || n_end > DSQ_MC_MAX_ENDINGS, err, DSQ_ERR_RANGE, "%s:%zu: %d endings, need 2..%d", what,
                  line, n_end, DSQ_MC_MAX_ENDINGS);
    int e = 0;
    for (const cJSON *x = endings->child; x; x = x->next, e++)
        DSQ_RETURN_IF(!text_ok(x), err, DSQ_ERR_JSON, "%s:%zu: ending %d is not a non-empty UTF-8 string", what, line,
                      e);
    const cJSON *label = cJSON_GetObjectItemCaseSensitive(root, "label");
    uint64_t lab = 0;
    bool lab_ok = false;
    if (cJSON_IsNumber(label)) {
        lab_ok = dsq_json_u64(label, &lab);
    } else if (cJSON_IsString(label) && label->valuestring[0] && strlen(label->valuestring) <= 6) {
        lab_ok = true;
        for (const char *p = label->valuestring; *p; p++) lab_ok &= *p >= '0' && *p <= '9';
        if (lab_ok) lab = strtoull(label->valuestring, NULL, 10);
    }
    DSQ_RETURN_IF(!label, err, DSQ_ERR_MISSING, "%s:%zu: no \"label\"", what, line);
    DSQ_RETURN_IF(!lab_ok || lab >= (uint64_t)n_end, err, DSQ_ERR_RANGE, "%s:%zu: label is not an integer in [0, %d)",
                  what, line, n_end);

    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        dsq_mc_item *items = dsq_realloc(t->items, cap * sizeof *items);
        DSQ_RETURN_IF(!items, err, DSQ_ERR_NOMEM, "%s: out of memory at line %zu", what, line);
        t->items = items;
        t->cap = cap;
    }
    dsq_mc_item *it = &t->items[t->n];
    const char **ends = arena_alloc(t, (size_t)n_end * sizeof *ends);
    it->ctx = arena_strdup(t, ctx->valuestring);
    DSQ_RETURN_IF(!ends || !it->ctx, err, DSQ_ERR_NOMEM, "%s: out of memory at line %zu", what, line);
    e = 0;
    for (const cJSON *x = endings->child; x; x = x->next, e++) {
        ends[e] = arena_strdup(t, x->valuestring);
        DSQ_RETURN_IF(!ends[e], err, DSQ_ERR_NOMEM, "%s: out of memory at line %zu", what, line);
    }
    it->n_endings = (uint32_t)n_end;
    it->endings = ends;
    it->label = (uint32_t)lab;
    t->n++;
    return DSQ_OK;
}

dsq_status dsq_mc_task_parse(const char *text, size_t len, const char *what, dsq_mc_task **out, dsq_err *err) {
    *out = NULL;
    DSQ_RETURN_IF(len > DSQ_MC_MAX_FILE, err, DSQ_ERR_RANGE, "%s: %zu bytes exceed the %llu-byte limit", what, len,
                  (unsigned long long)DSQ_MC_MAX_FILE);
    dsq_mc_task *t = dsq_calloc(1, sizeof *t);
    DSQ_RETURN_IF(!t, err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    dsq_status first = DSQ_OK;
    size_t line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t n = end - pos;
        line++;
        const char *l = text + pos;
        pos = end + 1;
        size_t blank = 0;
        while (blank < n && (l[blank] == ' ' || l[blank] == '\t' || l[blank] == '\r')) blank++;
        if (blank == n) continue;
        dsq_status s;
        if (n > DSQ_MC_MAX_LINE) {
            s = dsq_err_set(err, DSQ_ERR_RANGE, "%s:%zu: line of %zu bytes exceeds %u", what, line, n, DSQ_MC_MAX_LINE);
        } else if (memchr(l, 0, n)) {
            s = dsq_err_set(err, DSQ_ERR_JSON, "%s:%zu: NUL byte in line", what, line);
        } else {
            char where[64];
            snprintf(where, sizeof where, "line %zu", line);
            cJSON *root = NULL;
            dsq_err local = DSQ_ERR_INIT;
            s = dsq_json_parse(l, n, where, &root, &local);
            if (s != DSQ_OK) {
                dsq_err_set(err, s, "%s:%zu: %s", what, line, local.msg);
            } else {
                s = add_item(t, root, what, line, err);
                cJSON_Delete(root);
            }
            dsq_err_clear(&local);
        }
        if (s == DSQ_ERR_NOMEM) {
            dsq_mc_task_free(t);
            return s;
        }
        if (s != DSQ_OK && first == DSQ_OK) first = s;
    }
    if (first == DSQ_OK && t->n == 0) first = dsq_err_set(err, DSQ_ERR_MISSING, "%s: no items", what);
    if (first != DSQ_OK) {
        dsq_mc_task_free(t);
        return first;
    }
    *out = t;
    return DSQ_OK;
}

dsq_status dsq_mc_task_open(const char *path, dsq_mc_task **out, dsq_err *err) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    DSQ_TRY(dsq_read_file(path, (size_t)DSQ_MC_MAX_FILE, &text, &len, err));
    dsq_status s = dsq_mc_task_parse(text, len, path, out, err);
    dsq_free(text);
    return s;
}

uint64_t dsq_mc_task_hash(const dsq_mc_task *t) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (size_t i = 0; i < t->n; i++) {
        const dsq_mc_item *it = &t->items[i];
        uint8_t b[8];
        XXH3_64bits_update(&st, it->ctx, strlen(it->ctx) + 1);
        dsq_put_u32le(b, it->n_endings);
        dsq_put_u32le(b + 4, it->label);
        XXH3_64bits_update(&st, b, sizeof b);
        for (uint32_t e = 0; e < it->n_endings; e++)
            XXH3_64bits_update(&st, it->endings[e], strlen(it->endings[e]) + 1);
    }
    return XXH3_64bits_digest(&st);
}

/* ---- scoring ----------------------------------------------------------------------------------- */

static dsq_status item_range(const dsq_mc_task *t, const dsq_mc_options *opt, size_t *first, size_t *count,
                             dsq_err *err) {
    *first = opt ? opt->first : 0;
    *count = opt && opt->count ? opt->count : (*first < t->n ? t->n - *first : 0);
    DSQ_RETURN_IF(*first >= t->n || *count > t->n - *first, err, DSQ_ERR_RANGE,
                  "items [%zu, %zu + %zu) outside the task's %zu items", *first, *first, *count, t->n);
    return DSQ_OK;
}

void dsq_mc_result_clear(dsq_mc_result *r) {
    if (!r) return;
    dsq_free(r->answers);
    dsq_free(r->ll);
    memset(r, 0, sizeof *r);
}

/* Score one ending: log-likelihood of the continuation and its byte length for normalisation. */
typedef struct scratch {
    int32_t *seq;
    double *lp;
    size_t cap;
} scratch;

static dsq_status grow(scratch *s, size_t n, dsq_err *err) {
    if (n <= s->cap) return DSQ_OK;
    int32_t *seq = dsq_realloc(s->seq, n * sizeof *seq);
    if (seq) s->seq = seq;
    double *lp = seq ? dsq_realloc(s->lp, n * sizeof *lp) : NULL;
    if (lp) s->lp = lp;
    DSQ_RETURN_IF(!seq || !lp, err, DSQ_ERR_NOMEM, "multiple choice: out of memory for %zu tokens", n);
    s->cap = n;
    return DSQ_OK;
}

static dsq_status score_ending(const dsq_mc_item *it, uint32_t e, const int32_t *ctx_ids, size_t n_ctx, int32_t bos,
                               dsq_mc_tokenize_fn tok, void *tok_user, dsq_mc_span_fn span, void *span_user, scratch *s,
                               double *ll, size_t item_no, dsq_err *err) {
    size_t lc = strlen(it->ctx), le = strlen(it->endings[e]);
    char *joined = dsq_malloc(lc + le + 2);
    DSQ_RETURN_IF(!joined, err, DSQ_ERR_NOMEM, "item %zu: out of memory", item_no);
    memcpy(joined, it->ctx, lc);
    joined[lc] = ' ';
    memcpy(joined + lc + 1, it->endings[e], le + 1);
    int32_t *full = NULL, *cont;
    size_t n_full = 0, n_cont = 0;
    dsq_status st = tok(tok_user, joined, lc + le + 1, &full, &n_full, err);
    if (st == DSQ_OK && n_full > n_ctx && memcmp(full, ctx_ids, n_ctx * sizeof *full) == 0) {
        cont = full + n_ctx;
        n_cont = n_full - n_ctx;
    } else if (st == DSQ_OK) { /* a merge across the boundary: tokenize the continuation alone */
        dsq_free(full);
        full = NULL;
        st = tok(tok_user, joined + lc, le + 1, &full, &n_full, err);
        cont = full;
        n_cont = n_full;
    }
    dsq_free(joined);
    size_t head = (bos >= 0) + n_ctx, total = head + n_cont;
    if (st == DSQ_OK && (n_cont == 0 || head == 0))
        st = dsq_err_set(err, DSQ_ERR_ARG, "item %zu ending %u: %s tokenizes to nothing", item_no, e,
                         n_cont == 0 ? "the ending" : "the context");
    if (st == DSQ_OK) st = grow(s, total, err);
    if (st == DSQ_OK) {
        if (bos >= 0) s->seq[0] = bos;
        memcpy(s->seq + (bos >= 0), ctx_ids, n_ctx * sizeof *ctx_ids);
        memcpy(s->seq + head, cont, n_cont * sizeof *cont);
        st = span(span_user, s->seq, total, head, s->lp, err);
    }
    if (st == DSQ_OK) {
        double sum = 0;
        for (size_t j = 0; j < n_cont; j++) sum += s->lp[j];
        if (isnan(sum) || sum > 0)
            st = dsq_err_set(err, DSQ_ERR_NONFINITE, "item %zu ending %u: log-likelihood %g is not ≤ 0", item_no, e,
                             sum);
        *ll = sum;
    }
    dsq_free(full);
    return st;
}

static uint32_t argmax_d(const double *v, uint32_t n) {
    uint32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

dsq_status dsq_mc_score(const dsq_mc_task *t, const dsq_mc_options *opt, dsq_mc_tokenize_fn tok, void *tok_user,
                        dsq_mc_span_fn span, void *span_user, dsq_mc_result *out, dsq_err *err) {
    memset(out, 0, sizeof *out);
    size_t first, count;
    DSQ_TRY(item_range(t, opt, &first, &count, err));
    int32_t bos = opt ? opt->bos : -1;
    size_t n_ll = 0;
    for (size_t i = first; i < first + count; i++) n_ll += t->items[i].n_endings;
    dsq_mc_result r = {.n = count};
    r.answers = dsq_calloc(count, sizeof *r.answers);
    r.ll = dsq_calloc(n_ll, sizeof *r.ll);
    double *norm = dsq_malloc(DSQ_MC_MAX_ENDINGS * sizeof *norm);
    scratch s = {0};
    dsq_status st =
        r.answers && r.ll && norm ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "multiple choice: out of memory");
    uint64_t ok_raw = 0, ok_norm = 0;
    double *ll = r.ll;
    for (size_t i = first; st == DSQ_OK && i < first + count; i++) {
        const dsq_mc_item *it = &t->items[i];
        int32_t *ctx_ids = NULL;
        size_t n_ctx = 0;
        st = tok(tok_user, it->ctx, strlen(it->ctx), &ctx_ids, &n_ctx, err);
        for (uint32_t e = 0; st == DSQ_OK && e < it->n_endings; e++) {
            st = score_ending(it, e, ctx_ids, n_ctx, bos, tok, tok_user, span, span_user, &s, &ll[e], i, err);
            norm[e] = ll[e] / (double)(strlen(it->endings[e]) + 1);
        }
        dsq_free(ctx_ids);
        if (st != DSQ_OK) break;
        dsq_mc_answer *a = &r.answers[i - first];
        a->label = it->label;
        a->raw = argmax_d(ll, it->n_endings);
        a->norm = argmax_d(norm, it->n_endings);
        ok_raw += a->raw == a->label;
        ok_norm += a->norm == a->label;
        ll += it->n_endings;
    }
    dsq_free(norm);
    dsq_free(s.seq);
    dsq_free(s.lp);
    if (st != DSQ_OK) {
        dsq_mc_result_clear(&r);
        return st;
    }
    r.acc_raw = (double)ok_raw / (double)count;
    r.acc_norm = (double)ok_norm / (double)count;
    r.acc_raw_se = sqrt(r.acc_raw * (1 - r.acc_raw) / (double)count);
    r.acc_norm_se = sqrt(r.acc_norm * (1 - r.acc_norm) / (double)count);
    *out = r;
    return DSQ_OK;
}

/* ---- answers files ----------------------------------------------------------------------------- */

dsq_status dsq_mc_answers_write(const char *path, const dsq_mc_task *t, const dsq_mc_options *opt,
                                const dsq_mc_result *r, bool overwrite, dsq_err *err) {
    size_t first, count;
    DSQ_TRY(item_range(t, opt, &first, &count, err));
    DSQ_RETURN_IF(count != r->n, err, DSQ_ERR_ARG, "%s: result holds %llu items, the range %zu", path,
                  (unsigned long long)r->n, count);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    DSQ_RETURN_IF(!m, err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    fprintf(m, "{\"dsq_mc_answers\":1,\"task_hash\":\"%016llx\",\"n\":%zu,\"first\":%zu}\n",
            (unsigned long long)dsq_mc_task_hash(t), count, first);
    for (size_t i = 0; i < count; i++)
        fprintf(m, "{\"item\":%zu,\"label\":%u,\"raw\":%u,\"norm\":%u}\n", first + i, r->answers[i].label,
                r->answers[i].raw, r->answers[i].norm);
    if (fclose(m) != 0) {
        free(buf);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    dsq_status s = dsq_write_file_atomic(path, buf, len, overwrite, err);
    free(buf); /* open_memstream's buffer comes from libc malloc */
    return s;
}

/* Read member `key` as an exact integer ≤ limit. */
static bool member_u64(const cJSON *o, const char *key, uint64_t limit, uint64_t *v) {
    return dsq_json_u64(cJSON_GetObjectItemCaseSensitive(o, key), v) && *v <= limit;
}

dsq_status dsq_mc_flips_vs_file(const char *path, const dsq_mc_task *t, const dsq_mc_options *opt,
                                const dsq_mc_result *r, dsq_mc_flips *out, dsq_err *err) {
    memset(out, 0, sizeof *out);
    size_t first, count;
    DSQ_TRY(item_range(t, opt, &first, &count, err));
    DSQ_RETURN_IF(count != r->n, err, DSQ_ERR_ARG, "%s: result holds %llu items, the range %zu", path,
                  (unsigned long long)r->n, count);
    char *text = NULL;
    size_t len = 0;
    DSQ_TRY(dsq_read_file(path, (size_t)DSQ_MC_MAX_FILE, &text, &len, err));
    dsq_status st = DSQ_OK;
    size_t line = 0, item = 0;
    bool header = false;
    dsq_mc_flips f = {0};
    for (size_t pos = 0; st == DSQ_OK && pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        const char *l = text + pos;
        size_t n = end - pos;
        pos = end + 1;
        line++;
        if (n == 0) continue;
        char where[64];
        snprintf(where, sizeof where, "%s:%zu", path, line);
        cJSON *o = NULL;
        st = dsq_json_parse(l, n, where, &o, err);
        if (st != DSQ_OK) break;
        uint64_t a, b, c, d;
        if (!header) {
            header = true;
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "task_hash");
            char want[17];
            snprintf(want, sizeof want, "%016llx", (unsigned long long)dsq_mc_task_hash(t));
            if (!member_u64(o, "dsq_mc_answers", 1, &a) || a != 1 || !cJSON_IsString(h) ||
                !member_u64(o, "n", UINT32_MAX, &b) || !member_u64(o, "first", UINT32_MAX, &c))
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: not a dsq answers file (bad header line)", where);
            else if (strcmp(h->valuestring, want) != 0)
                st = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: answers are for another task (hash %s, this task %s)",
                                 where, h->valuestring, want);
            else if (b != count || c != first)
                st = dsq_err_set(err, DSQ_ERR_RANGE, "%s: answers cover items [%llu, +%llu), this run [%zu, +%zu)",
                                 where, (unsigned long long)c, (unsigned long long)b, first, count);
        } else if (item >= count) {
            st = dsq_err_set(err, DSQ_ERR_UNEXPECTED, "%s: more answers than the header's %zu", where, count);
        } else {
            const dsq_mc_answer *x = &r->answers[item];
            uint32_t ne = t->items[first + item].n_endings;
            if (!member_u64(o, "item", UINT32_MAX, &a) || !member_u64(o, "label", ne - 1, &b) ||
                !member_u64(o, "raw", ne - 1, &c) || !member_u64(o, "norm", ne - 1, &d))
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: answer line needs item/label/raw/norm in range", where);
            else if (a != first + item || b != x->label)
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: expected item %zu with label %u", where, first + item,
                                 x->label);
            else {
                f.raw += c != x->raw;
                f.norm += d != x->norm;
                item++;
            }
        }
        cJSON_Delete(o);
    }
    if (st == DSQ_OK && !header) st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: empty answers file", path);
    if (st == DSQ_OK && item != count)
        st = dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: %zu answers, expected %zu", path, item, count);
    dsq_free(text);
    DSQ_TRY(st);
    f.n = count;
    f.raw_rate = (double)f.raw / (double)count;
    f.norm_rate = (double)f.norm / (double)count;
    *out = f;
    return DSQ_OK;
}
