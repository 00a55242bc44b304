/* The one option parser of cmd/ (cmd/opt.h has the rules). */
#include "opt.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

bool dsq_opt_parse_u64(const char *s, uint64_t *out) {
    if (!s || !isdigit((unsigned char)s[0])) return false; /* no sign, no space, not empty */
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = (uint64_t)v;
    return true;
}

bool dsq_opt_parse_i64(const char *s, int64_t *out) {
    if (!s) return false;
    const char *d = s[0] == '-' ? s + 1 : s;
    if (!isdigit((unsigned char)d[0])) return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = (int64_t)v;
    return true;
}

bool dsq_opt_parse_size(const char *s, uint64_t *out) {
    if (!s || !isdigit((unsigned char)s[0])) return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return false;
    uint64_t mul = 1;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K':
            mul = 1ull << 10;
            break;
        case 'M':
            mul = 1ull << 20;
            break;
        case 'G':
            mul = 1ull << 30;
            break;
        case 'T':
            mul = 1ull << 40;
            break;
        default:
            return false;
        }
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'B' || *end == 'b') end++;
        if (*end) return false;
    }
    uint64_t r;
    if (!dsq_mul_u64(v, mul, &r)) return false;
    *out = r;
    return true;
}

bool dsq_opt_parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) /* decimal or exponent notation only: no hex, inf, nan, spaces */
        if (!isdigit((unsigned char)*p) && !strchr("+-.eE", *p)) return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v)) return false;
    *out = v;
    return true;
}

void dsq_opt_list_free(dsq_opt_list *l) {
    if (!l) return;
    dsq_free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void say(char *msg, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *msg, size_t cap, const char *fmt, ...) {
    if (!cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
}

/* The entry named `name` in `t` or in the tables it includes (MORE), else NULL. */
static const dsq_opt *find(const dsq_opt *t, const char *name) {
    for (; t && t->name; t++) {
        if (t->kind == DSQ_OPT_KIND_MORE) {
            const dsq_opt *o = find(t->more, name);
            if (o) return o;
        } else if (!strcmp(t->name, name))
            return t;
    }
    return NULL;
}

/* " (NOTE)" or "" */
static const char *note_open(const dsq_opt *o) { return o->note ? " (" : ""; }
static const char *note_text(const dsq_opt *o) { return o->note ? o->note : ""; }
static const char *note_close(const dsq_opt *o) { return o->note ? ")" : ""; }

/* "an integer 1..1024", "an unsigned integer" (no upper bound short of the type's) */
static void range_text(const dsq_opt *o, uint64_t type_max, char *buf, size_t cap) {
    const char *what = o->kind == DSQ_OPT_KIND_SIZE ? "a size (bytes, K/M/G/T suffixes)" : "an integer";
    if (o->kind == DSQ_OPT_KIND_INT) {
        if (o->min <= INT32_MIN && o->max >= (uint64_t)INT32_MAX)
            snprintf(buf, cap, "an integer");
        else
            snprintf(buf, cap, "an integer %lld..%llu", (long long)o->min, (unsigned long long)o->max);
        return;
    }
    if (o->max >= type_max && o->min <= 0)
        snprintf(buf, cap, "%s", o->kind == DSQ_OPT_KIND_SIZE ? what : "an unsigned integer");
    else if (o->max >= type_max)
        snprintf(buf, cap, "%s ≥ %lld", what, (long long)o->min);
    else
        snprintf(buf, cap, "%s %lld..%llu", what, (long long)o->min, (unsigned long long)o->max);
}

/* ENUM spellings as "a, b or c". */
static void names_text(const char *const *names, char *buf, size_t cap) {
    size_t n = 0, at = 0;
    while (names[n]) n++;
    buf[0] = 0;
    for (size_t i = 0; i < n && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%s", i == 0 ? "" : i + 1 == n ? " or " : ", ", names[i]);
}

/* Store the value of option o (value = its argument, NULL for a flag). */
static dsq_opt_result store(const dsq_opt *o, const char *value, int argc, char *msg, size_t cap) {
    char range[128];
    switch (o->kind) {
    case DSQ_OPT_KIND_FLAG:
        *(bool *)o->dest = true;
        return DSQ_OPT_OK;
    case DSQ_OPT_KIND_STR:
        *(const char **)o->dest = value;
        return DSQ_OPT_OK;
    case DSQ_OPT_KIND_LIST: {
        dsq_opt_list *l = o->dest;
        if (!l->v) { /* an option's values are at most argc/2: one allocation for all */
            l->v = dsq_calloc((size_t)argc + 1, sizeof *l->v);
            if (!l->v) {
                say(msg, cap, "out of memory");
                return DSQ_OPT_FAIL;
            }
        }
        l->v[l->n++] = value;
        return DSQ_OPT_OK;
    }
    case DSQ_OPT_KIND_INT: {
        int64_t v;
        if (!dsq_opt_parse_i64(value, &v) || v < o->min || v < INT32_MIN || v > INT32_MAX ||
            (v >= 0 && (uint64_t)v > o->max)) {
            range_text(o, UINT64_MAX, range, sizeof range);
            say(msg, cap, "%s needs %s, not '%s'%s%s%s", o->name, range, value, note_open(o), note_text(o),
                note_close(o));
            return DSQ_OPT_USAGE;
        }
        *(int *)o->dest = (int)v;
        return DSQ_OPT_OK;
    }
    case DSQ_OPT_KIND_U32:
    case DSQ_OPT_KIND_U64:
    case DSQ_OPT_KIND_SIZE: {
        uint64_t v, type_max = o->kind == DSQ_OPT_KIND_U32 ? UINT32_MAX : UINT64_MAX;
        uint64_t lo = o->min > 0 ? (uint64_t)o->min : 0, hi = o->max < type_max ? o->max : type_max;
        bool ok = o->kind == DSQ_OPT_KIND_SIZE ? dsq_opt_parse_size(value, &v) : dsq_opt_parse_u64(value, &v);
        if (!ok || v < lo || v > hi) {
            range_text(o, type_max, range, sizeof range);
            say(msg, cap, "%s needs %s, not '%s'%s%s%s", o->name, range, value, note_open(o), note_text(o),
                note_close(o));
            return DSQ_OPT_USAGE;
        }
        if (o->kind == DSQ_OPT_KIND_U32)
            *(uint32_t *)o->dest = (uint32_t)v;
        else
            *(uint64_t *)o->dest = v;
        return DSQ_OPT_OK;
    }
    case DSQ_OPT_KIND_DOUBLE: {
        double v;
        bool gt = o->flags & DSQ_OPT_GT_MIN;
        if (!dsq_opt_parse_double(value, &v) || (gt ? !(v > (double)o->min) : !(v >= (double)o->min)) ||
            v > (double)o->max) {
            if (o->max == UINT64_MAX)
                snprintf(range, sizeof range, "a number %s %lld", gt ? ">" : "≥", (long long)o->min);
            else
                snprintf(range, sizeof range, "a number %s %lld and ≤ %llu", gt ? ">" : "≥", (long long)o->min,
                         (unsigned long long)o->max);
            say(msg, cap, "%s needs %s, not '%s'%s%s%s", o->name, range, value, note_open(o), note_text(o),
                note_close(o));
            return DSQ_OPT_USAGE;
        }
        *(double *)o->dest = v;
        return DSQ_OPT_OK;
    }
    case DSQ_OPT_KIND_ENUM:
        for (int k = 0; o->names[k]; k++)
            if (!strcmp(o->names[k], value)) {
                *(int *)o->dest = k;
                return DSQ_OPT_OK;
            }
        names_text(o->names, range, sizeof range);
        say(msg, cap, "%s must be %s, not '%s'", o->name, range, value);
        return DSQ_OPT_USAGE;
    case DSQ_OPT_KIND_FN: {
        if (cap) msg[0] = 0;
        dsq_opt_fn_result r = o->fn(value, o->dest, msg, cap);
        if (r == DSQ_OPT_FN_OK) return DSQ_OPT_OK;
        if (cap && !msg[0]) say(msg, cap, "bad %s '%s'", o->name, value);
        return r == DSQ_OPT_FN_FAIL ? DSQ_OPT_FAIL : DSQ_OPT_USAGE;
    }
    default:
        say(msg, cap, "%s: bad option table", o->name);
        return DSQ_OPT_FAIL;
    }
}

/* Entries seen so far, for DSQ_OPT_ONCE: a small set of pointers (tables are short). */
enum { SEEN_MAX = 64 };

dsq_opt_result dsq_opt_parse(const dsq_opt_spec *spec, int argc, char **argv, int *n_pos, char *msg, size_t cap) {
    const dsq_opt *seen[SEEN_MAX];
    int n_seen = 0, np = 0;
    if (cap) msg[0] = 0;
    if (n_pos) *n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool is_opt = a[0] == '-' && (a[1] || spec->dash_is_option);
        if (!is_opt) {
            if (np >= spec->max_pos) {
                say(msg, cap, "unexpected argument '%s'", a);
                return DSQ_OPT_USAGE;
            }
            spec->pos[np++] = a;
            if (n_pos) *n_pos = np;
            continue;
        }
        const dsq_opt *o = find(spec->opts, a);
        if (!o) {
            say(msg, cap, "unknown option '%s'", a);
            return DSQ_OPT_USAGE;
        }
        if (o->flags & DSQ_OPT_ONCE) {
            for (int k = 0; k < n_seen; k++)
                if (seen[k] == o) {
                    say(msg, cap, "%s given more than once", o->name);
                    return DSQ_OPT_USAGE;
                }
            if (n_seen < SEEN_MAX) seen[n_seen++] = o;
        }
        const char *value = NULL;
        if (o->kind != DSQ_OPT_KIND_FLAG) {
            if (i + 1 >= argc) {
                say(msg, cap, "%s needs a value", o->name);
                return DSQ_OPT_USAGE;
            }
            value = argv[++i];
        }
        dsq_opt_result r = store(o, value, argc, msg, cap);
        if (r != DSQ_OPT_OK) return r;
    }
    if (np < spec->min_pos) {
        say(msg, cap, "%s", spec->missing ? spec->missing : "missing arguments");
        return DSQ_OPT_USAGE;
    }
    return DSQ_OPT_OK;
}

static void free_lists(const dsq_opt *t) {
    for (; t && t->name; t++) {
        if (t->kind == DSQ_OPT_KIND_MORE)
            free_lists(t->more);
        else if (t->kind == DSQ_OPT_KIND_LIST)
            dsq_opt_list_free(t->dest);
    }
}

static int report(const char *cmd, dsq_opt_result r, const char *msg) {
    if (r == DSQ_OPT_USAGE)
        fprintf(stderr, "dsq %s: %s (see dsq %s --help)\n", cmd, msg, cmd);
    else
        fprintf(stderr, "dsq %s: %s\n", cmd, msg);
    return DSQ_EXIT_USAGE;
}

int dsq_opt_parse_cmd(const dsq_opt_spec *spec, int argc, char **argv, int *n_pos) {
    char msg[1024];
    dsq_opt_result r = dsq_opt_parse(spec, argc, argv, n_pos, msg, sizeof msg);
    if (r == DSQ_OPT_OK) return 0;
    free_lists(spec->opts);
    return report(spec->cmd, r, msg);
}

int dsq_opt_parse_one(const char *cmd, const dsq_opt *opts, int argc, char **argv, int *i) {
    const dsq_opt *o = find(opts, argv[*i]);
    if (!o || (o->kind != DSQ_OPT_KIND_FLAG && *i + 1 >= argc)) return 0;
    char msg[1024];
    const char *value = o->kind == DSQ_OPT_KIND_FLAG ? NULL : argv[++*i];
    dsq_opt_result r = store(o, value, argc, msg, sizeof msg);
    if (r == DSQ_OPT_OK) return 1;
    report(cmd, r, msg);
    return -1;
}
