#include "dsq_json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_member_name(const void *a, const void *b) {
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Returned by the duplicate search when it cannot allocate. */
static const cJSON out_of_memory;

/* A member of `obj` whose name an earlier member has, or NULL.  Large objects (a tokenizer vocabulary
 * has 128k members) are checked by sorting the names; pairwise comparison would take minutes. */
static const cJSON *object_duplicate(const cJSON *obj) {
    size_t n = 0;
    for (const cJSON *a = obj->child; a; a = a->next) n += a->string != NULL;
    if (n > 32) {
        const cJSON **v = dsq_malloc(n * sizeof *v);
        if (!v) return &out_of_memory;
        size_t k = 0;
        for (const cJSON *a = obj->child; a; a = a->next)
            if (a->string) v[k++] = a;
        qsort(v, k, sizeof *v, cmp_member_name);
        const cJSON *dup = NULL;
        for (size_t i = 1; i < k && !dup; i++)
            if (strcmp(v[i - 1]->string, v[i]->string) == 0) dup = v[i];
        dsq_free(v);
        return dup;
    }
    for (const cJSON *a = obj->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (a->string && b->string && strcmp(a->string, b->string) == 0) return b;
    return NULL;
}

static const cJSON *find_duplicate(const cJSON *node, int depth) {
    if (depth > 64) return node; /* absurd nesting: treat as malformed */
    if (cJSON_IsObject(node)) {
        const cJSON *d = object_duplicate(node);
        if (d) return d;
        for (const cJSON *a = node->child; a; a = a->next) {
            d = find_duplicate(a, depth + 1);
            if (d) return d;
        }
    } else if (cJSON_IsArray(node)) {
        for (const cJSON *a = node->child; a; a = a->next) {
            const cJSON *d = find_duplicate(a, depth + 1);
            if (d) return d;
        }
    }
    return NULL;
}

dsq_status dsq_json_parse(const char *text, size_t len, const char *what, cJSON **out, dsq_err *err) {
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        return dsq_err_set(err, DSQ_ERR_JSON, "%s: malformed JSON near byte %zu", what, at);
    }
    /* Only whitespace (or NUL padding, as some writers add) may follow the value. */
    for (const char *p = end; p && p < text + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != 0) {
            cJSON_Delete(root);
            return dsq_err_set(err, DSQ_ERR_JSON, "%s: trailing bytes after JSON at byte %zu", what, (size_t)(p - text));
        }
    }
    /* RFC 8259 §7: control bytes inside strings must be escaped.  cJSON copies them, and a raw NUL
     * ends the C string early (a name "a.safetensors<NUL>junk" would read as "a.safetensors"). */
    bool in_str = false;
    for (const char *p = text; p < end; p++) {
        unsigned char ch = (unsigned char)*p;
        if (in_str && ch < 0x20) {
            cJSON_Delete(root);
            return dsq_err_set(err, DSQ_ERR_JSON, "%s: raw control byte 0x%02x in a string at byte %zu", what, ch,
                               (size_t)(p - text));
        }
        if (ch == '"') in_str = !in_str;
        else if (ch == '\\' && in_str && p + 1 < end) p++; /* the escaped byte */
    }
    const cJSON *dup = find_duplicate(root, 0);
    if (dup == &out_of_memory) {
        cJSON_Delete(root);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory checking JSON keys", what);
    }
    if (dup) {
        dsq_status s = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: duplicate JSON key \"%s\"", what,
                                   dup->string ? dup->string : "(nested too deep)");
        cJSON_Delete(root);
        return s;
    }
    *out = root;
    return DSQ_OK;
}

bool dsq_json_u64(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double d = item->valuedouble;
    if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

bool dsq_json_i64(const cJSON *item, int64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double d = item->valuedouble;
    if (!isfinite(d) || fabs(d) > 9007199254740992.0 || floor(d) != d) return false;
    *out = (int64_t)d;
    return true;
}

bool dsq_json_f64(const cJSON *item, double *out) {
    if (!cJSON_IsNumber(item)) return false;
    if (!isfinite(item->valuedouble)) return false;
    *out = item->valuedouble;
    return true;
}
