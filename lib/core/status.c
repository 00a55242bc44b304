/* Status strings, error collection, checked products, the byte cursor, LE stores. */
#include "dsq_core.h"

#include <stdlib.h>
#include <string.h>

const char *dsq_status_str(dsq_status s) {
    switch (s) {
    case DSQ_OK: return "ok";
    case DSQ_ERR_IO: return "I/O error";
    case DSQ_ERR_NOMEM: return "out of memory";
    case DSQ_ERR_FORMAT: return "malformed file";
    case DSQ_ERR_OVERFLOW: return "size overflow";
    case DSQ_ERR_RANGE: return "out of range";
    case DSQ_ERR_JSON: return "bad JSON";
    case DSQ_ERR_DTYPE: return "bad dtype";
    case DSQ_ERR_SHAPE: return "bad shape";
    case DSQ_ERR_MISSING: return "missing";
    case DSQ_ERR_DUPLICATE: return "duplicate";
    case DSQ_ERR_CONFIG: return "bad config";
    case DSQ_ERR_CHECKSUM: return "checksum mismatch";
    case DSQ_ERR_ARG: return "bad argument";
    case DSQ_ERR_UNSUPPORTED: return "unsupported";
    case DSQ_ERR_NONFINITE: return "non-finite value";
    case DSQ_ERR_INTERRUPTED: return "interrupted";
    case DSQ_ERR_NOSPACE: return "no space";
    case DSQ_ERR_VERSION: return "unsupported version";
    case DSQ_ERR_MAGIC: return "bad magic";
    case DSQ_ERR_OVERLAP: return "overlap";
    case DSQ_ERR_TRUNCATED: return "truncated";
    case DSQ_ERR_UNEXPECTED: return "unexpected";
    case DSQ_ERR_EXISTS: return "already exists";
    case DSQ_ERR_STATE: return "bad state";
    case DSQ_ERR_TOKEN: return "bad token id";
    }
    return "unknown status";
}

void dsq_err_init(dsq_err *e) {
    if (e) memset(e, 0, sizeof *e);
}

void dsq_err_clear(dsq_err *e) {
    if (!e) return;
    free(e->all); /* plain free: `all` is allocated with realloc below, never fault-injected */
    memset(e, 0, sizeof *e);
}

dsq_status dsq_err_setv(dsq_err *e, dsq_status status, const char *fmt, va_list ap) {
    if (!e) return status;
    if (e->n >= DSQ_ERR_MAX_PROBLEMS) { /* counted, not kept */
        e->n++;
        return status;
    }
    char line[DSQ_ERR_MSG_MAX];
    vsnprintf(line, sizeof line, fmt, ap);
    for (char *c = line; *c; c++)
        if (*c == '\n') *c = ' ';
    if (e->n == 0) {
        e->status = status;
        memcpy(e->msg, line, sizeof line);
    }
    e->n++;
    size_t len = strlen(line);
    if (e->all_len + len + 2 > e->all_cap) {
        size_t cap = e->all_cap ? e->all_cap * 2 : 1024;
        while (cap < e->all_len + len + 2) cap *= 2;
        char *p = realloc(e->all, cap);
        if (!p) return status; /* keep the first message at least */
        e->all = p;
        e->all_cap = cap;
    }
    memcpy(e->all + e->all_len, line, len);
    e->all_len += len;
    e->all[e->all_len++] = '\n';
    e->all[e->all_len] = 0;
    return status;
}

dsq_status dsq_err_set(dsq_err *e, dsq_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    dsq_err_setv(e, status, fmt, ap);
    va_end(ap);
    return status;
}

void dsq_err_print(const dsq_err *e, FILE *f, const char *prefix) {
    if (!e || e->n == 0) return;
    const char *p = e->all ? e->all : e->msg;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "%s%.*s\n", prefix ? prefix : "", (int)len, p);
        p += len + (nl ? 1 : 0);
    }
    if (e->n > DSQ_ERR_MAX_PROBLEMS)
        fprintf(f, "%s... and %zu more problems\n", prefix ? prefix : "", e->n - DSQ_ERR_MAX_PROBLEMS);
}

bool dsq_prod_u64(const uint64_t *dims, int n, uint64_t *out) {
    uint64_t r = 1;
    for (int i = 0; i < n; i++)
        if (!dsq_mul_u64(r, dims[i], &r)) return false;
    *out = r;
    return true;
}

const uint8_t *dsq_cursor_take(dsq_cursor *c, size_t n) {
    if (c->bad || c->pos > c->size || n > c->size - c->pos) {
        c->bad = true;
        return NULL;
    }
    const uint8_t *p = c->p + c->pos;
    c->pos += n;
    return p;
}

uint8_t dsq_cursor_u8(dsq_cursor *c) {
    const uint8_t *p = dsq_cursor_take(c, 1);
    return p ? p[0] : 0;
}
uint16_t dsq_cursor_u16le(dsq_cursor *c) {
    const uint8_t *p = dsq_cursor_take(c, 2);
    return p ? (uint16_t)(p[0] | (p[1] << 8)) : 0;
}
uint32_t dsq_cursor_u32le(dsq_cursor *c) {
    const uint8_t *p = dsq_cursor_take(c, 4);
    return p ? (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24) : 0;
}
uint64_t dsq_cursor_u64le(dsq_cursor *c) {
    const uint8_t *p = dsq_cursor_take(c, 8);
    if (!p) return 0;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
bool dsq_cursor_seek(dsq_cursor *c, size_t pos) {
    if (c->bad || pos > c->size) {
        c->bad = true;
        return false;
    }
    c->pos = pos;
    return true;
}

void dsq_put_u16le(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
void dsq_put_u32le(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
void dsq_put_u64le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
