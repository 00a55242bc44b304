/* Byte-level BPE tokenizer over a Hugging Face tokenizer.json (see dsq_tokenizer.h for the pipeline).
 *
 * Everything runs on bytes: the ByteLevel alphabet (GPT-2's bytes_to_unicode) is undone once at load
 * time, so vocabulary entries, merges and pieces are raw byte strings and the initial BPE symbols are
 * the 256 byte tokens.  The reference behaviour is transformers.js (npm @lenml/tokenizers 3.7.2);
 * comments cite it as "ref". */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "dsq_tokenizer.h"

#include <pcre2.h>
#include <string.h>
#include <xxhash.h>

#include "dsq_container.h"
#include "dsq_ctr_meta.h"
#include "dsq_json.h"
#include "dsq_wsrc.h"
#include "gguf_internal.h"

enum {
    TOK_PRESENT = 1, /* some token has this id */
    TOK_ADDED = 2,   /* an added token: decoded verbatim, never through the byte-level alphabet */
    TOK_SPECIAL = 4, /* added token marked special (decode can skip it) */
};

enum { TRIE_NONE = -1 };

/* One node of the added-token trie over content bytes; children form a sibling list. */
typedef struct trie_node {
    int32_t child, sibling;
    int32_t added; /* index into dsq_tok.added, or TRIE_NONE */
    uint8_t byte;
} trie_node;

typedef struct added_token {
    int32_t id;
    bool lstrip, rstrip;
} added_token;

typedef enum stage_kind {
    STAGE_SPLIT = 0,   /* pieces = matches and the gaps between them (Split, behavior Isolated) */
    STAGE_MATCHES = 1, /* pieces = matches only (ByteLevel use_regex: ref keeps text.match()) */
    STAGE_PREFIX = 2,  /* prepend a space unless the piece starts with one (ByteLevel add_prefix_space) */
} stage_kind;

typedef struct stage {
    stage_kind kind;
    pcre2_code *re;
} stage;

typedef struct merge_slot {
    uint64_t key;  /* (left id << 32) | right id; UINT64_MAX = empty */
    uint32_t rank; /* position in the merges list (later duplicates win, as in ref's Map) */
    int32_t id;    /* the merged token */
} merge_slot;

struct dsq_tok {
    uint32_t n_ids;
    uint8_t *flags;      /* [n_ids] TOK_* */
    uint32_t *piece_off; /* [n_ids] offset into pieces */
    uint32_t *piece_len; /* [n_ids] */
    char *pieces;        /* decoded bytes of every token, concatenated */
    int32_t byte_id[256];

    uint32_t *vocab_slots; /* open addressing over raw bytes: id + 1, 0 = empty */
    uint64_t vocab_mask;
    merge_slot *merges;
    uint64_t merge_mask;

    added_token *added;
    size_t n_added;
    trie_node *trie; /* node 0 is the root */
    size_t n_trie, cap_trie;
    bool first_byte[256]; /* bytes that start some added token */

    stage stages[DSQ_TOK_MAX_STAGES];
    int n_stages;
    bool jit;
    pcre2_general_context *gctx;
};

/* ---- small helpers ------------------------------------------------------------------------------ */

static void *pcre_alloc(PCRE2_SIZE n, void *data) {
    (void)data;
    return dsq_malloc(n);
}
static void pcre_free(void *p, void *data) {
    (void)data;
    dsq_free(p);
}

/* GPT-2 bytes_to_unicode: printable bytes 33..126, 161..172, 174..255 map to themselves, the other
 * 68 bytes (0..32, 127..160, 173) to 256, 257, ... in byte order. */
static uint32_t byte_to_cp(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256u + b;
    if (b <= 160) return 256u + 33u + (b - 127u);
    return 256u + 67u; /* 173 */
}
/* Inverse of byte_to_cp; -1 for code points outside the alphabet. */
static int cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_to_cp((uint8_t)cp) == cp ? (int)cp : -1;
    uint32_t n = cp - 256;
    if (n <= 32) return (int)n;
    if (n <= 66) return (int)(127 + n - 33);
    if (n == 67) return 173;
    return -1;
}

/* A UTF-8 lead byte (above 0x7F): the number of continuation bytes it needs and the allowed range of
 * the FIRST one (Unicode Table 3-7: no overlongs, surrogates or code points above U+10FFFF); false when
 * b cannot start a well-formed sequence. */
static bool utf8_lead(uint8_t b, size_t *need, uint8_t *lo, uint8_t *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        *need = 1;
    else if (b == 0xE0)
        *need = 2, *lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
        *need = 2;
    else if (b == 0xED)
        *need = 2, *hi = 0x9F;
    else if (b == 0xF0)
        *need = 3, *lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
        *need = 3;
    else if (b == 0xF4)
        *need = 3, *hi = 0x8F;
    else
        return false;
    return true;
}

/* Decode one code point of valid UTF-8 starting at p (n bytes available); returns its length, 0 when
 * the bytes are not well-formed UTF-8. */
static size_t utf8_next(const uint8_t *p, size_t n, uint32_t *cp) {
    uint8_t b = p[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t need;
    uint8_t lo, hi;
    if (!utf8_lead(b, &need, &lo, &hi)) return 0;
    if (n < need + 1) return 0;
    uint32_t c = b & (0x3F >> need);
    for (size_t k = 1; k <= need; k++) {
        if (p[k] < lo || p[k] > hi) return 0;
        lo = 0x80, hi = 0xBF;
        c = (c << 6) | (p[k] & 0x3F);
    }
    *cp = c;
    return need + 1;
}

/* JavaScript's WhiteSpace + LineTerminator (what `\s`, trim() and trimEnd() use in ref). */
static bool js_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000 || c == 0xFEFF;
}
#define JS_SPACE_CLASS                                                                                                 \
    "\\t\\n\\x0b\\f\\r \\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}\\x{feff}"

dsq_status dsq_tok_text_append(dsq_tok_text *s, const void *p, size_t n, dsq_err *err) {
    uint64_t need;
    if (!dsq_add_u64(s->len, n, &need) || !dsq_add_u64(need, 1, &need) || need > SIZE_MAX)
        return dsq_err_set(err, DSQ_ERR_OVERFLOW, "tokenizer: text buffer size overflows");
    if (need > s->cap) {
        uint64_t cap = s->cap ? s->cap : 64;
        while (cap < need) cap *= 2;
        char *d = dsq_realloc(s->data, (size_t)cap);
        if (!d)
            return dsq_err_set(err, DSQ_ERR_NOMEM, "tokenizer: out of memory for %llu bytes of text",
                               (unsigned long long)cap);
        s->data = d;
        s->cap = (size_t)cap;
    }
    if (n) memcpy(s->data + s->len, p, n);
    s->len += n;
    s->data[s->len] = 0;
    return DSQ_OK;
}

void dsq_tok_text_free(dsq_tok_text *s) {
    if (!s) return;
    dsq_free(s->data);
    memset(s, 0, sizeof *s);
}

void dsq_tok_ids_free(dsq_tok_ids *v) {
    if (!v) return;
    dsq_free(v->ids);
    memset(v, 0, sizeof *v);
}

static dsq_status ids_push(dsq_tok_ids *v, int32_t id, dsq_err *err) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        if (cap > SIZE_MAX / sizeof(int32_t))
            return dsq_err_set(err, DSQ_ERR_OVERFLOW, "tokenizer: id array overflows");
        int32_t *d = dsq_realloc(v->ids, cap * sizeof(int32_t));
        if (!d) return dsq_err_set(err, DSQ_ERR_NOMEM, "tokenizer: out of memory for %zu ids", cap);
        v->ids = d;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return DSQ_OK;
}

/* ---- UTF-8 repair (WHATWG decode, "replacement" error mode) ------------------------------------- */

/* Index of the first byte that is not part of well-formed UTF-8, or n. */
static size_t utf8_valid_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_next(p + i, n - i, &cp);
        if (!k) return i;
        i += k;
    }
    return n;
}

dsq_status dsq_tok_utf8_sanitize(const void *src, size_t n, dsq_tok_text *out, dsq_err *err) {
    static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const uint8_t *p = src;
    size_t i = 0;
    while (i < n) {
        size_t good = utf8_valid_prefix(p + i, n - i);
        DSQ_TRY(dsq_tok_text_append(out, p + i, good, err));
        i += good;
        if (i == n) break;
        /* p[i] starts an ill-formed sequence: consume its maximal valid prefix, emit one U+FFFD. */
        uint8_t b = p[i];
        size_t need;
        uint8_t lo, hi;
        if (!utf8_lead(b, &need, &lo, &hi)) need = 0; /* not a lead byte: it alone becomes U+FFFD */
        size_t j = i + 1;
        for (size_t k = 0; k < need && j < n && p[j] >= lo && p[j] <= hi; k++, j++) lo = 0x80, hi = 0xBF;
        DSQ_TRY(dsq_tok_text_append(out, repl, 3, err));
        i = j;
    }
    if (!out->data) DSQ_TRY(dsq_tok_text_append(out, "", 0, err));
    return DSQ_OK;
}

/* ---- hash tables -------------------------------------------------------------------------------- */

static uint64_t table_size(size_t count) {
    uint64_t cap = 1024;
    while (cap < (uint64_t)count * 2) cap *= 2;
    return cap;
}

static int32_t vocab_get(const dsq_tok *t, const void *p, size_t n) {
    uint64_t h = XXH3_64bits(p, n) & t->vocab_mask;
    for (;; h = (h + 1) & t->vocab_mask) {
        uint32_t v = t->vocab_slots[h];
        if (!v) return -1;
        int32_t id = (int32_t)(v - 1);
        if (t->piece_len[id] == n && memcmp(t->pieces + t->piece_off[id], p, n) == 0) return id;
    }
}

static void vocab_put(dsq_tok *t, int32_t id) {
    uint64_t h = XXH3_64bits(t->pieces + t->piece_off[id], t->piece_len[id]) & t->vocab_mask;
    while (t->vocab_slots[h]) h = (h + 1) & t->vocab_mask;
    t->vocab_slots[h] = (uint32_t)id + 1;
}

static inline uint64_t merge_hash(uint64_t key, uint64_t mask) { return (key * 0x9E3779B97F4A7C15ull >> 20) & mask; }

static inline const merge_slot *merge_get(const dsq_tok *t, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint64_t h = merge_hash(key, t->merge_mask);; h = (h + 1) & t->merge_mask) {
        const merge_slot *s = &t->merges[h];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

static void merge_put(dsq_tok *t, int32_t a, int32_t b, uint32_t rank, int32_t id) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint64_t h = merge_hash(key, t->merge_mask);
    while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key) h = (h + 1) & t->merge_mask;
    t->merges[h] = (merge_slot){key, rank, id};
}

/* ---- added-token trie --------------------------------------------------------------------------- */

static int32_t trie_child(const dsq_tok *t, int32_t node, uint8_t b) {
    for (int32_t c = t->trie[node].child; c != TRIE_NONE; c = t->trie[c].sibling)
        if (t->trie[c].byte == b) return c;
    return TRIE_NONE;
}

static dsq_status trie_insert(dsq_tok *t, const uint8_t *p, size_t n, int32_t added, const char *what, dsq_err *err) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = trie_child(t, node, p[i]);
        if (c == TRIE_NONE) {
            if (t->n_trie == t->cap_trie) {
                size_t cap = t->cap_trie * 2;
                trie_node *d = dsq_realloc(t->trie, cap * sizeof *d);
                if (!d) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for the added-token trie", what);
                t->trie = d;
                t->cap_trie = cap;
            }
            c = (int32_t)t->n_trie++;
            t->trie[c] = (trie_node){TRIE_NONE, t->trie[node].child, TRIE_NONE, p[i]};
            t->trie[node].child = c;
        }
        node = c;
    }
    if (t->trie[node].added != TRIE_NONE)
        return dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: added token \"%.*s\" appears twice", what, (int)n,
                           (const char *)p);
    t->trie[node].added = added;
    return DSQ_OK;
}

/* Longest added token starting at p (ref: DictionarySplitter keeps the longest match); returns its
 * index in t->added or TRIE_NONE, and its length in *len. */
static int32_t trie_longest(const dsq_tok *t, const uint8_t *p, size_t n, size_t *len) {
    int32_t node = 0, best = TRIE_NONE;
    for (size_t i = 0; i < n; i++) {
        node = trie_child(t, node, p[i]);
        if (node == TRIE_NONE) break;
        if (t->trie[node].added != TRIE_NONE) best = t->trie[node].added, *len = i + 1;
    }
    return best;
}

static int32_t trie_exact(const dsq_tok *t, const uint8_t *p, size_t n) {
    int32_t node = 0;
    for (size_t i = 0; i < n && node != TRIE_NONE; i++) node = trie_child(t, node, p[i]);
    return node == TRIE_NONE || node == 0 ? TRIE_NONE : t->trie[node].added;
}

/* ---- loading ------------------------------------------------------------------------------------ */

/* Undo the byte-level alphabet: UTF-8 text of alphabet characters → raw bytes appended to *out.
 * Returns false (appending nothing useful) when a character is outside the alphabet. */
static bool bytelevel_decode(const char *s, size_t n, dsq_tok_text *out, dsq_status *st, dsq_err *err) {
    const uint8_t *p = (const uint8_t *)s;
    size_t start = out->len;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_next(p + i, n - i, &cp);
        int b = k ? cp_to_byte(cp) : -1;
        if (b < 0) {
            out->len = start;
            return false;
        }
        uint8_t byte = (uint8_t)b;
        *st = dsq_tok_text_append(out, &byte, 1, err);
        if (*st != DSQ_OK) return false;
        i += k;
    }
    return true;
}

static dsq_status add_piece(dsq_tok *t, dsq_tok_text *arena, int32_t id, const void *p, size_t n, const char *what,
                            dsq_err *err) {
    if (arena->len > UINT32_MAX - n || n > UINT32_MAX - 1)
        return dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: token text exceeds 4 GiB", what);
    t->piece_off[id] = (uint32_t)arena->len;
    t->piece_len[id] = (uint32_t)n;
    return dsq_tok_text_append(arena, p, n, err);
}

static bool json_is(const cJSON *obj, const char *key, const char *value) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, value) == 0;
}

/* Absent or null, or false for booleans. */
static bool json_unset(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return !v || cJSON_IsNull(v) || cJSON_IsFalse(v);
}

static bool json_bool(const cJSON *obj, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static dsq_status read_id(const cJSON *item, const char *what, const char *name, int32_t *id, dsq_err *err) {
    uint64_t v;
    if (!dsq_json_u64(item, &v) || v >= DSQ_TOK_MAX_ID)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: token \"%s\" has id outside [0, %d)", what, name, DSQ_TOK_MAX_ID);
    *id = (int32_t)v;
    return DSQ_OK;
}

/* Rewrite an HF (Oniguruma-flavoured) regex for PCRE2 so that it means what ref's JavaScript
 * RegExp with the `u` flag means: JS `\s` is WhiteSpace+LineTerminator (with U+FEFF, without U+0085),
 * `\d`/`\w` are ASCII.  Other syntax is common to both. */
static dsq_status translate_regex(const char *src, dsq_tok_text *out, const char *what, dsq_err *err) {
    bool in_class = false;
    for (const char *p = src; *p; p++) {
        const char *rep = NULL;
        char tmp[2] = {p[0], 0};
        if (*p == '\\' && p[1]) {
            char c = p[1];
            if (c == 's')
                rep = in_class ? JS_SPACE_CLASS : "[" JS_SPACE_CLASS "]";
            else if (c == 'd')
                rep = in_class ? "0-9" : "[0-9]";
            else if (c == 'w')
                rep = in_class ? "A-Za-z0-9_" : "[A-Za-z0-9_]";
            else if (c == 'S' || c == 'D' || c == 'W') {
                if (in_class)
                    return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: regex uses \\%c inside a character class", what,
                                       c);
                rep = c == 'S' ? "[^" JS_SPACE_CLASS "]" : c == 'D' ? "[^0-9]" : "[^A-Za-z0-9_]";
            }
            if (rep) {
                DSQ_TRY(dsq_tok_text_append(out, rep, strlen(rep), err));
            } else {
                DSQ_TRY(dsq_tok_text_append(out, p, 2, err));
            }
            p++;
            continue;
        }
        if (!in_class && *p == '[') {
            in_class = true;
            DSQ_TRY(dsq_tok_text_append(out, p, 1, err));
            if (p[1] == '^') DSQ_TRY(dsq_tok_text_append(out, ++p, 1, err));
            if (p[1] == ']' || p[1] == '[')
                return dsq_err_set(err, DSQ_ERR_UNSUPPORTED,
                                   "%s: regex class starting with '%c' reads differently in JavaScript", what, p[1]);
            continue;
        }
        if (in_class && *p == ']') in_class = false;
        DSQ_TRY(dsq_tok_text_append(out, tmp, 1, err));
    }
    if (!out->data) DSQ_TRY(dsq_tok_text_append(out, "", 0, err));
    return DSQ_OK;
}

static dsq_status compile_stage(dsq_tok *t, stage_kind kind, const char *pattern, bool literal, const char *what,
                                dsq_err *err) {
    if (t->n_stages == DSQ_TOK_MAX_STAGES)
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: more than %d pre-tokenizer stages", what, DSQ_TOK_MAX_STAGES);
    stage *s = &t->stages[t->n_stages];
    s->kind = kind;
    s->re = NULL;
    if (kind == STAGE_PREFIX) {
        t->n_stages++;
        return DSQ_OK;
    }
    dsq_tok_text pat = {0};
    dsq_status st =
        literal ? dsq_tok_text_append(&pat, pattern, strlen(pattern), err) : translate_regex(pattern, &pat, what, err);
    if (st != DSQ_OK) {
        dsq_tok_text_free(&pat);
        return st;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(t->gctx);
    if (!cc) {
        dsq_tok_text_free(&pat);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory compiling a regex", what);
    }
    int ecode = 0;
    PCRE2_SIZE eoff = 0;
    uint32_t flags = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP; /* LITERAL refuses UCP */
    s->re = pcre2_compile((PCRE2_SPTR)pat.data, pat.len, flags, &ecode, &eoff, cc);
    pcre2_compile_context_free(cc);
    if (!s->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        st = dsq_err_set(
            err, ecode == PCRE2_ERROR_NOMEMORY || ecode == PCRE2_ERROR_HEAP_FAILED ? DSQ_ERR_NOMEM : DSQ_ERR_FORMAT,
            "%s: pre-tokenizer regex \"%s\" does not compile at offset %zu: %s", what, pattern, (size_t)eoff,
            (const char *)msg);
        dsq_tok_text_free(&pat);
        return st;
    }
    dsq_tok_text_free(&pat);
    if (t->jit && pcre2_jit_compile(s->re, PCRE2_JIT_COMPLETE) != 0) t->jit = false; /* no JIT here: interpret */
    t->n_stages++;
    return DSQ_OK;
}

static dsq_status load_byte_level(dsq_tok *t, const cJSON *bl, const char *what, dsq_err *err) {
    if (json_bool(bl, "add_prefix_space", false)) DSQ_TRY(compile_stage(t, STAGE_PREFIX, NULL, false, what, err));
    /* ref's ByteLevel regex (the GPT-2 pattern), kept only when use_regex is true (its default). */
    if (json_bool(bl, "use_regex", true))
        DSQ_TRY(compile_stage(t, STAGE_MATCHES,
                              "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
                              false, what, err));
    return DSQ_OK;
}

static dsq_status load_split(dsq_tok *t, const cJSON *sp, const char *what, dsq_err *err) {
    const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(sp, "behavior");
    if (!cJSON_IsString(behavior) || strcmp(behavior->valuestring, "Isolated") != 0)
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: Split pre-tokenizer behavior must be \"Isolated\"", what);
    if (!json_unset(sp, "invert"))
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: inverted Split pre-tokenizer", what);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(sp, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
    if (cJSON_IsString(re)) return compile_stage(t, STAGE_SPLIT, re->valuestring, false, what, err);
    if (cJSON_IsString(str) && str->valuestring[0])
        return compile_stage(t, STAGE_SPLIT, str->valuestring, true, what, err);
    return dsq_err_set(err, DSQ_ERR_JSON, "%s: Split pre-tokenizer without a Regex or String pattern", what);
}

static dsq_status load_pipeline(dsq_tok *t, const cJSON *root, const char *what, dsq_err *err) {
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        if (!json_is(norm, "type", "Sequence") || !cJSON_IsArray(list) || cJSON_GetArraySize(list) != 0)
            return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: only an empty normalizer is supported", what);
    }
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!json_is(dec, "type", "ByteLevel"))
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: decoder must be ByteLevel", what);

    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (json_is(pre, "type", "ByteLevel")) return load_byte_level(t, pre, what, err);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (!json_is(pre, "type", "Sequence") || !cJSON_IsArray(list))
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED,
                           "%s: pre_tokenizer must be ByteLevel or a Sequence ending in ByteLevel", what);
    int n = cJSON_GetArraySize(list), i = 0;
    for (const cJSON *it = list->child; it; it = it->next, i++) {
        if (json_is(it, "type", "Split")) {
            DSQ_TRY(load_split(t, it, what, err));
        } else if (json_is(it, "type", "ByteLevel") && i == n - 1) {
            return load_byte_level(t, it, what, err);
        } else {
            return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: pre-tokenizer %d is neither Split nor a final ByteLevel",
                               what, i);
        }
    }
    return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: pre-tokenizer Sequence does not end in ByteLevel", what);
}

/* Allocate the per-id arrays for ids below n_ids. */
static dsq_status alloc_ids(dsq_tok *t, uint32_t n_ids, const char *what, dsq_err *err) {
    t->n_ids = n_ids;
    t->flags = dsq_calloc(n_ids, 1);
    t->piece_off = dsq_calloc(n_ids, sizeof(uint32_t));
    t->piece_len = dsq_calloc(n_ids, sizeof(uint32_t));
    if (!t->flags || !t->piece_off || !t->piece_len)
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for %u token ids", what, n_ids);
    return DSQ_OK;
}

static const struct {
    const char *content;
    int32_t id;
} v4_specials[] = {
    /* spec §7: V4 adds these above the V3 file's 128814. */
    {"<think>", 128821},         {"</think>", 128822},
    {"｜DSML｜", 128825},        {"<｜latest_reminder｜>", 128828},
    {"<｜action｜>", 128829},    {"<｜query｜>", 128830},
    {"<｜authority｜>", 128831}, {"<｜domain｜>", 128832},
    {"<｜title｜>", 128836},     {"<｜extracted_url｜>", 128844},
    {"<｜read_url｜>", 128845},
};
enum { N_V4_SPECIALS = sizeof v4_specials / sizeof v4_specials[0] };

/* Register the added tokens: ids, trie, pieces.  extra = the V4 specials still to add (or none). */
static dsq_status load_added(dsq_tok *t, const cJSON *added, const bool *extra, dsq_tok_text *arena, const char *what,
                             dsq_err *err) {
    size_t n = 0;
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next) n++;
    for (int k = 0; k < N_V4_SPECIALS; k++) n += extra[k];
    t->added = dsq_calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for %zu added tokens", what, n);
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(content) || !content->valuestring[0])
            return dsq_err_set(err, DSQ_ERR_JSON, "%s: added token %zu has no content", what, t->n_added);
        const char *c = content->valuestring;
        int32_t id = 0;
        DSQ_TRY(read_id(cJSON_GetObjectItemCaseSensitive(it, "id"), what, c, &id, err));
        if (t->flags[id] & TOK_ADDED)
            return dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: added token \"%s\" reuses id %d", what, c, (int)id);
        added_token *a = &t->added[t->n_added];
        a->id = id;
        a->lstrip = json_bool(it, "lstrip", false);
        a->rstrip = json_bool(it, "rstrip", false);
        DSQ_TRY(trie_insert(t, (const uint8_t *)c, strlen(c), (int32_t)t->n_added, what, err));
        /* ref: the added token's content replaces whatever the vocabulary had at that id. */
        DSQ_TRY(add_piece(t, arena, id, c, strlen(c), what, err));
        t->flags[id] |= TOK_PRESENT | TOK_ADDED | (json_bool(it, "special", false) ? TOK_SPECIAL : 0);
        t->first_byte[(uint8_t)c[0]] = true;
        t->n_added++;
    }
    for (int k = 0; k < N_V4_SPECIALS; k++) {
        if (!extra[k]) continue;
        const char *c = v4_specials[k].content;
        int32_t id = v4_specials[k].id;
        t->added[t->n_added] = (added_token){id, false, false};
        DSQ_TRY(trie_insert(t, (const uint8_t *)c, strlen(c), (int32_t)t->n_added, what, err));
        DSQ_TRY(add_piece(t, arena, id, c, strlen(c), what, err));
        t->flags[id] |= TOK_PRESENT | TOK_ADDED | TOK_SPECIAL;
        t->first_byte[(uint8_t)c[0]] = true;
        t->n_added++;
    }
    return DSQ_OK;
}

/* Which V4 specials must be added; fails when one conflicts with the file's tokens. */
static dsq_status plan_v4_specials(const cJSON *vocab, const cJSON *added, bool *extra, const char *what,
                                   dsq_err *err) {
    for (int k = 0; k < N_V4_SPECIALS; k++) {
        extra[k] = true;
        for (const cJSON *it = added ? added->child : NULL; it; it = it->next) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
            uint64_t id;
            bool same_content = cJSON_IsString(c) && strcmp(c->valuestring, v4_specials[k].content) == 0;
            bool same_id =
                dsq_json_u64(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) && id == (uint64_t)v4_specials[k].id;
            if (same_content && same_id)
                extra[k] = false;
            else if (same_content || same_id)
                return dsq_err_set(
                    err, DSQ_ERR_DUPLICATE, "%s: V4 special token %s (id %d) conflicts with added token \"%s\"", what,
                    v4_specials[k].content, (int)v4_specials[k].id, cJSON_IsString(c) ? c->valuestring : "?");
        }
        for (const cJSON *it = vocab->child; extra[k] && it; it = it->next) {
            uint64_t id;
            if (dsq_json_u64(it, &id) && id == (uint64_t)v4_specials[k].id)
                return dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: V4 special token %s: id %d is vocabulary entry \"%s\"",
                                   what, v4_specials[k].content, (int)v4_specials[k].id, it->string);
        }
    }
    return DSQ_OK;
}

/* A merge "a b" (or ["a", "b"]) → ids of a, b and of their concatenation.  Returns false when the
 * merge can never apply (a part is not a token a byte-level word can reach). */
static bool merge_parts(const dsq_tok *t, const cJSON *m, uint32_t rank, dsq_tok_text *scratch, int32_t ids[3],
                        dsq_status *st, const char *what, dsq_err *err) {
    const char *a, *b;
    size_t na, nb;
    if (cJSON_IsString(m)) {
        /* ref splits with .split(" ", 2): the first two space-separated fields. */
        a = m->valuestring;
        const char *sp = strchr(a, ' ');
        if (!sp) return false;
        na = (size_t)(sp - a);
        b = sp + 1;
        const char *sp2 = strchr(b, ' ');
        nb = sp2 ? (size_t)(sp2 - b) : strlen(b);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
               cJSON_IsString(m->child->next)) {
        a = m->child->valuestring, na = strlen(a);
        b = m->child->next->valuestring, nb = strlen(b);
    } else {
        *st = dsq_err_set(err, DSQ_ERR_JSON, "%s: merge %u is neither \"a b\" nor [\"a\", \"b\"]", what, rank);
        return false;
    }
    scratch->len = 0;
    if (!bytelevel_decode(a, na, scratch, st, err)) return false;
    size_t split = scratch->len;
    if (!bytelevel_decode(b, nb, scratch, st, err)) return false;
    if (split == 0 || split == scratch->len) return false;
    ids[0] = vocab_get(t, scratch->data, split);
    ids[1] = vocab_get(t, scratch->data + split, scratch->len - split);
    if (ids[0] < 0 || ids[1] < 0) return false;
    ids[2] = vocab_get(t, scratch->data, scratch->len);
    if (ids[2] < 0) {
        *st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: merge %u \"%.*s %.*s\" makes a token that is not in the vocabulary",
                          what, rank, (int)na, a, (int)nb, b);
        return false;
    }
    return true;
}

static dsq_status load_model(dsq_tok *t, const cJSON *root, const dsq_tok_options *opt, const char *what,
                             dsq_err *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(model) || !json_is(model, "type", "BPE"))
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: model.type must be \"BPE\"", what);
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return dsq_err_set(err, DSQ_ERR_JSON, "%s: model.vocab must be an object and model.merges an array", what);
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return dsq_err_set(err, DSQ_ERR_JSON, "%s: added_tokens must be an array", what);
    if (added && !cJSON_IsArray(added)) added = NULL;
    static const char *const unsupported[] = {"byte_fallback", "ignore_merges", "continuing_subword_prefix",
                                              "end_of_word_suffix"};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if (!json_unset(model, unsupported[i]))
            return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: model.%s is not supported", what, unsupported[i]);

    /* Ids: vocabulary, added tokens, V4 specials. */
    bool extra[N_V4_SPECIALS] = {0};
    if (opt && opt->v4_specials) DSQ_TRY(plan_v4_specials(vocab, added, extra, what, err));
    size_t n_vocab = 0;
    int32_t max_id = -1, id = 0;
    for (const cJSON *it = vocab->child; it; it = it->next, n_vocab++) {
        DSQ_TRY(read_id(it, what, it->string, &id, err));
        if (id > max_id) max_id = id;
    }
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        DSQ_TRY(read_id(cJSON_GetObjectItemCaseSensitive(it, "id"), what, cJSON_IsString(c) ? c->valuestring : "?", &id,
                        err));
        if (id > max_id) max_id = id;
    }
    for (int k = 0; k < N_V4_SPECIALS; k++)
        if (extra[k] && v4_specials[k].id > max_id) max_id = v4_specials[k].id;
    if (max_id < 0) return dsq_err_set(err, DSQ_ERR_FORMAT, "%s: empty vocabulary", what);
    DSQ_TRY(alloc_ids(t, (uint32_t)max_id + 1, what, err));

    /* Vocabulary: byte-level strings → raw bytes. */
    dsq_tok_text arena = {0}, scratch = {0};
    dsq_status st = DSQ_OK;
    t->vocab_mask = table_size(n_vocab) - 1;
    t->vocab_slots = dsq_calloc(t->vocab_mask + 1, sizeof(uint32_t));
    if (!t->vocab_slots) st = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for the vocabulary table", what);
    for (const cJSON *it = vocab->child; st == DSQ_OK && it; it = it->next) {
        read_id(it, what, it->string, &id, NULL);
        if (t->flags[id]) {
            st = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: vocabulary entry \"%s\" reuses id %d", what, it->string,
                             (int)id);
            break;
        }
        scratch.len = 0;
        size_t len = strlen(it->string);
        bool clean = bytelevel_decode(it->string, len, &scratch, &st, err);
        if (st != DSQ_OK) break;
        /* An entry outside the byte-level alphabet (ids 0-2 of DeepSeek's file) can never come out of
         * BPE; it keeps its text as its piece and stays out of the lookup table. */
        st = clean ? add_piece(t, &arena, id, scratch.data, scratch.len, what, err)
                   : add_piece(t, &arena, id, it->string, len, what, err);
        t->pieces = arena.data; /* the table reads pieces back */
        t->flags[id] = TOK_PRESENT;
        if (st == DSQ_OK && clean) {
            if (vocab_get(t, scratch.data, scratch.len) >= 0)
                st = dsq_err_set(err, DSQ_ERR_DUPLICATE, "%s: vocabulary entry \"%s\" appears twice", what, it->string);
            else
                vocab_put(t, id);
        }
    }
    if (st == DSQ_OK) {
        for (int b = 0; b < 256; b++) {
            uint8_t byte = (uint8_t)b;
            t->byte_id[b] = vocab_get(t, &byte, 1);
            if (t->byte_id[b] < 0) {
                st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: byte 0x%02x has no vocabulary entry", what, b);
                break;
            }
        }
    }
    if (st == DSQ_OK) st = load_added(t, added, extra, &arena, what, err);
    t->pieces = arena.data;

    /* Merges: rank = position in the list. */
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    if (st == DSQ_OK) {
        t->merge_mask = table_size(n_merges) - 1;
        t->merges = dsq_malloc((t->merge_mask + 1) * sizeof *t->merges);
        if (!t->merges)
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for %zu merges", what, n_merges);
        else
            memset(t->merges, 0xFF, (t->merge_mask + 1) * sizeof *t->merges);
    }
    uint32_t rank = 0;
    for (const cJSON *it = merges->child; st == DSQ_OK && it; it = it->next, rank++) {
        int32_t ids[3];
        if (merge_parts(t, it, rank, &scratch, ids, &st, what, err)) merge_put(t, ids[0], ids[1], rank, ids[2]);
    }
    dsq_tok_text_free(&scratch);
    if (st != DSQ_OK) dsq_free(arena.data), t->pieces = NULL;
    return st;
}

void dsq_tok_free(dsq_tok *t) {
    if (!t) return;
    for (int i = 0; i < t->n_stages; i++) pcre2_code_free(t->stages[i].re);
    pcre2_general_context_free(t->gctx);
    dsq_free(t->flags);
    dsq_free(t->piece_off);
    dsq_free(t->piece_len);
    dsq_free(t->pieces);
    dsq_free(t->vocab_slots);
    dsq_free(t->merges);
    dsq_free(t->added);
    dsq_free(t->trie);
    dsq_free(t);
}

dsq_status dsq_tok_load_json(const char *json, size_t len, const char *what, const dsq_tok_options *opt, dsq_tok **out,
                             dsq_err *err) {
    *out = NULL;
    if (!what) what = "tokenizer.json";
    if (len > DSQ_TOK_MAX_JSON)
        return dsq_err_set(err, DSQ_ERR_RANGE, "%s: %zu bytes, more than the %zu allowed", what, len, DSQ_TOK_MAX_JSON);
    cJSON *root = NULL;
    DSQ_TRY(dsq_json_parse(json, len, what, &root, err));
    dsq_tok *t = dsq_calloc(1, sizeof *t);
    dsq_status st = DSQ_OK;
    if (!t) {
        cJSON_Delete(root);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    }
    t->jit = !(opt && opt->no_jit);
    t->gctx = pcre2_general_context_create(pcre_alloc, pcre_free, NULL);
    t->cap_trie = 64;
    t->trie = dsq_malloc(t->cap_trie * sizeof *t->trie);
    if (!t->gctx || !t->trie)
        st = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    else {
        t->trie[0] = (trie_node){TRIE_NONE, TRIE_NONE, TRIE_NONE, 0};
        t->n_trie = 1;
    }
    if (st == DSQ_OK && !cJSON_IsObject(root)) st = dsq_err_set(err, DSQ_ERR_JSON, "%s: not a JSON object", what);
    if (st == DSQ_OK) st = load_pipeline(t, root, what, err);
    if (st == DSQ_OK) st = load_model(t, root, opt, what, err);
    cJSON_Delete(root);
    if (st != DSQ_OK) {
        dsq_tok_free(t);
        return st;
    }
    *out = t;
    return DSQ_OK;
}

/* The tokenizer.json text a .dsq container carries in its metadata (`tokenizer` {"tokenizer.json"}). */
static dsq_status open_from_container(const char *path, const dsq_tok_options *opt, dsq_tok **out, dsq_err *err) {
    dsq_ctr_reader *r = NULL;
    DSQ_TRY(dsq_ctr_reader_open(path, NULL, &r, err));
    dsq_ctr_meta *m = NULL;
    dsq_status st = dsq_ctr_meta_read(r, &m, err);
    if (st == DSQ_OK) {
        if (!m->tokenizer_json)
            st = dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata has no tokenizer.tokenizer.json (the source "
                             "checkpoint had no tokenizer.json)", path);
        else {
            char *what = dsq_path_join(path, "tokenizer.json");
            st = what ? dsq_tok_load_json(m->tokenizer_json, strlen(m->tokenizer_json), what, opt, out, err)
                      : dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
            dsq_free(what);
        }
    }
    dsq_ctr_meta_free(m);
    dsq_ctr_reader_close(r);
    return st;
}

dsq_status dsq_tok_open(const char *path, const dsq_tok_options *opt, dsq_tok **out, dsq_err *err) {
    *out = NULL;
    if (dsq_ctr_sniff(path)) return open_from_container(path, opt, out, err);
    if (dsq_wsrc_sniff_gguf(path)) { /* a GGUF: tokenizer.json rebuilt from tokenizer.ggml.* */
        char *text = NULL;
        size_t n = 0;
        dsq_status st = dsq__gguf_tokenizer_json(path, &text, &n, err);
        if (st == DSQ_OK) st = dsq_tok_load_json(text, n, path, opt, out, err);
        dsq_free(text);
        return st;
    }
    char *file = dsq_path_is_dir(path) ? dsq_path_join(path, "tokenizer.json") : dsq_strdup(path);
    if (!file) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    char *json = NULL;
    size_t len = 0;
    dsq_status st = dsq_read_file(file, DSQ_TOK_MAX_JSON, &json, &len, err);
    if (st == DSQ_OK) st = dsq_tok_load_json(json, len, file, opt, out, err);
    dsq_free(json);
    dsq_free(file);
    return st;
}

uint32_t dsq_tok_n_ids(const dsq_tok *t) { return t->n_ids; }

int32_t dsq_tok_find(const dsq_tok *t, const char *text, size_t len) {
    int32_t a = trie_exact(t, (const uint8_t *)text, len);
    if (a != TRIE_NONE) return t->added[a].id;
    return len ? vocab_get(t, text, len) : -1;
}

const char *dsq_tok_piece(const dsq_tok *t, int32_t id, size_t *len) {
    if (id < 0 || (uint32_t)id >= t->n_ids || !(t->flags[id] & TOK_PRESENT)) return NULL;
    *len = t->piece_len[id];
    return t->pieces + t->piece_off[id];
}

bool dsq_tok_is_special(const dsq_tok *t, int32_t id) {
    return id >= 0 && (uint32_t)id < t->n_ids && (t->flags[id] & TOK_SPECIAL);
}

/* ---- encoding ----------------------------------------------------------------------------------- */

typedef struct heap_entry {
    uint64_t key;        /* (rank << 32) | position of the left symbol: lowest first */
    int32_t left, right; /* the ids the pair had when pushed (stale entries are skipped) */
} heap_entry;

/* Words of CACHE_MIN..CACHE_MAX bytes are cached in calls of at least CACHE_TEXT_MIN bytes (shorter
 * texts repeat too little to pay for the table). */
enum { CACHE_MIN = 2, CACHE_MAX = 48, CACHE_TEXT_MIN = 2048, CACHE_SLOTS_MIN = 256, CACHE_SLOTS_MAX = 1 << 16 };

typedef struct cache_slot {
    uint64_t hash;
    uint32_t word_off, word_len; /* word_len 0 = empty slot */
    uint32_t ids_off, n_ids;
} cache_slot;

typedef struct encoder {
    const dsq_tok *t;
    dsq_tok_ids *out;
    dsq_err *err;
    pcre2_match_data *md;
    /* BPE scratch, [cap] each: symbol id (-1 = merged away), next symbol index */
    int32_t *sym, *next, *prev;
    size_t cap;
    heap_entry *heap;
    size_t heap_n, heap_cap;
    dsq_tok_text prefix; /* STAGE_PREFIX copies */
    /* Word cache for this call: pieces of CACHE_MIN..CACHE_MAX bytes → their ids.  Text repeats its
     * words, and BPE (hash probes into the merge table) is most of the encoding time. */
    bool use_cache;
    cache_slot *cache;
    size_t cache_mask, cache_used;
    dsq_tok_text cache_words; /* the cached pieces' bytes */
    dsq_tok_ids cache_ids;    /* their ids */
} encoder;

static dsq_status heap_push(encoder *e, uint64_t key, int32_t left, int32_t right) {
    if (e->heap_n == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 256;
        if (cap > SIZE_MAX / sizeof(heap_entry))
            return dsq_err_set(e->err, DSQ_ERR_OVERFLOW, "tokenizer: BPE heap overflows");
        heap_entry *h = dsq_realloc(e->heap, cap * sizeof *h);
        if (!h) return dsq_err_set(e->err, DSQ_ERR_NOMEM, "tokenizer: out of memory for the BPE heap");
        e->heap = h;
        e->heap_cap = cap;
    }
    size_t i = e->heap_n++;
    while (i > 0 && e->heap[(i - 1) / 2].key > key) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = (heap_entry){key, left, right};
    return DSQ_OK;
}

static heap_entry heap_pop(encoder *e) {
    heap_entry top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && e->heap[c + 1].key < e->heap[c].key) c++;
        if (e->heap[c].key >= last.key) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static dsq_status push_pair(encoder *e, int32_t left_pos) {
    int32_t right_pos = e->next[left_pos];
    const merge_slot *m = merge_get(e->t, e->sym[left_pos], e->sym[right_pos]);
    if (!m) return DSQ_OK;
    return heap_push(e, (uint64_t)m->rank << 32 | (uint32_t)left_pos, e->sym[left_pos], e->sym[right_pos]);
}

/* BPE over one piece of raw bytes (ref BPE.bpe: lowest rank first, then leftmost). */
static dsq_status bpe(encoder *e, const uint8_t *p, size_t n) {
    const dsq_tok *t = e->t;
    if (n == 1) return ids_push(e->out, t->byte_id[p[0]], e->err);
    if (n > INT32_MAX - 1) return dsq_err_set(e->err, DSQ_ERR_RANGE, "tokenizer: a %zu-byte word is too long", n);
    if (n > e->cap) {
        size_t cap = n < 64 ? 64 : n;
        dsq_free(e->sym), dsq_free(e->next), dsq_free(e->prev);
        e->sym = dsq_malloc(cap * sizeof(int32_t));
        e->next = dsq_malloc(cap * sizeof(int32_t));
        e->prev = dsq_malloc(cap * sizeof(int32_t));
        e->cap = e->sym && e->next && e->prev ? cap : 0;
        if (!e->cap) return dsq_err_set(e->err, DSQ_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte word", n);
    }
    int32_t end = (int32_t)n;
    for (int32_t i = 0; i < end; i++) {
        e->sym[i] = t->byte_id[p[i]];
        e->next[i] = i + 1;
        e->prev[i] = i - 1;
    }
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < end; i++) DSQ_TRY(push_pair(e, i));
    while (e->heap_n) {
        heap_entry h = heap_pop(e);
        int32_t l = (int32_t)(uint32_t)h.key, r = e->next[l];
        if (e->sym[l] != h.left || r == end || e->sym[r] != h.right) continue; /* stale */
        e->sym[l] = merge_get(t, h.left, h.right)->id;
        e->sym[r] = -1;
        e->next[l] = e->next[r];
        if (e->next[l] != end) e->prev[e->next[l]] = l;
        if (e->prev[l] >= 0) DSQ_TRY(push_pair(e, e->prev[l]));
        if (e->next[l] != end) DSQ_TRY(push_pair(e, l));
    }
    for (int32_t i = 0; i != end; i = e->next[i]) DSQ_TRY(ids_push(e->out, e->sym[i], e->err));
    return DSQ_OK;
}

static dsq_status run_stage(encoder *e, const uint8_t *p, size_t n, int k);

static dsq_status regex_error(encoder *e, int k, int rc, size_t at) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return dsq_err_set(e->err, rc == PCRE2_ERROR_NOMEMORY ? DSQ_ERR_NOMEM : DSQ_ERR_RANGE,
                       "tokenizer: pre-tokenizer stage %d fails at byte %zu of a piece: %s", k, at, (const char *)msg);
}

/* Cut [p, p+n) with stage k's regex (ref regexSplit / String.match) and pass each piece on. */
static dsq_status split_stage(encoder *e, const uint8_t *p, size_t n, int k) {
    const stage *s = &e->t->stages[k];
    size_t prev = 0, off = 0;
    while (off <= n) {
        int rc = e->t->jit ? pcre2_jit_match(s->re, p, n, off, 0, e->md, NULL)
                           : pcre2_match(s->re, p, n, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter keeps its stack on the heap */
            rc = pcre2_match(s->re, p, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return regex_error(e, k, rc, off);
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > prev && s->kind == STAGE_SPLIT) DSQ_TRY(run_stage(e, p + prev, ms - prev, k + 1));
        if (me > ms) DSQ_TRY(run_stage(e, p + ms, me - ms, k + 1));
        prev = me;
        if (me > ms) {
            off = me;
        } else { /* empty match: step one character, as JS matchAll does with the u flag */
            if (me >= n) break;
            uint32_t cp;
            size_t step = utf8_next(p + me, n - me, &cp);
            off = me + (step ? step : 1);
        }
    }
    if (prev < n && s->kind == STAGE_SPLIT) DSQ_TRY(run_stage(e, p + prev, n - prev, k + 1));
    return DSQ_OK;
}

/* Grow (or, at the size limit, empty) the word cache so that one more word fits at load ≤ 1/2. */
static dsq_status cache_make_room(encoder *e) {
    size_t slots = e->cache ? e->cache_mask + 1 : 0;
    if (e->cache && (e->cache_used + 1) * 2 <= slots) return DSQ_OK;
    if (slots == CACHE_SLOTS_MAX) { /* full: start over rather than grow without bound */
        memset(e->cache, 0, slots * sizeof *e->cache);
        e->cache_used = 0, e->cache_words.len = 0, e->cache_ids.n = 0;
        return DSQ_OK;
    }
    size_t n = slots ? slots * 2 : CACHE_SLOTS_MIN;
    cache_slot *c = dsq_calloc(n, sizeof *c);
    if (!c) return dsq_err_set(e->err, DSQ_ERR_NOMEM, "tokenizer: out of memory for the word cache");
    for (size_t i = 0; i < slots; i++) {
        if (!e->cache[i].word_len) continue;
        size_t h = (size_t)e->cache[i].hash & (n - 1);
        while (c[h].word_len) h = (h + 1) & (n - 1);
        c[h] = e->cache[i];
    }
    dsq_free(e->cache);
    e->cache = c, e->cache_mask = n - 1;
    return DSQ_OK;
}

/* BPE through the word cache. */
static dsq_status bpe_cached(encoder *e, const uint8_t *p, size_t n) {
    if (!e->use_cache || n < CACHE_MIN || n > CACHE_MAX) return bpe(e, p, n);
    uint64_t h = XXH3_64bits(p, n);
    if (e->cache) {
        for (size_t i = (size_t)h & e->cache_mask; e->cache[i].word_len; i = (i + 1) & e->cache_mask) {
            const cache_slot *c = &e->cache[i];
            if (c->hash != h || c->word_len != n || memcmp(e->cache_words.data + c->word_off, p, n)) continue;
            for (uint32_t k = 0; k < c->n_ids; k++) DSQ_TRY(ids_push(e->out, e->cache_ids.ids[c->ids_off + k], e->err));
            return DSQ_OK;
        }
    }
    size_t first = e->out->n;
    DSQ_TRY(bpe(e, p, n));
    DSQ_TRY(cache_make_room(e));
    if (e->cache_words.len > UINT32_MAX - n || e->cache_ids.n > UINT32_MAX - n) return DSQ_OK; /* no room: skip */
    cache_slot c = {h, (uint32_t)e->cache_words.len, (uint32_t)n, (uint32_t)e->cache_ids.n,
                    (uint32_t)(e->out->n - first)};
    DSQ_TRY(dsq_tok_text_append(&e->cache_words, p, n, e->err));
    for (size_t k = first; k < e->out->n; k++) DSQ_TRY(ids_push(&e->cache_ids, e->out->ids[k], e->err));
    size_t i = (size_t)h & e->cache_mask;
    while (e->cache[i].word_len) i = (i + 1) & e->cache_mask;
    e->cache[i] = c;
    e->cache_used++;
    return DSQ_OK;
}

static dsq_status run_stage(encoder *e, const uint8_t *p, size_t n, int k) {
    if (k == e->t->n_stages) return bpe_cached(e, p, n);
    if (e->t->stages[k].kind != STAGE_PREFIX) return split_stage(e, p, n, k);
    if (n && p[0] == ' ') return run_stage(e, p, n, k + 1);
    /* Only one ByteLevel stage exists, so this copy is not reused by deeper stages. */
    e->prefix.len = 0;
    DSQ_TRY(dsq_tok_text_append(&e->prefix, " ", 1, e->err));
    DSQ_TRY(dsq_tok_text_append(&e->prefix, p, n, e->err));
    return run_stage(e, (const uint8_t *)e->prefix.data, e->prefix.len, k + 1);
}

/* Length of the JavaScript white space at the end (trimEnd) or start (trimStart) of [p, p+n). */
static size_t js_space_suffix(const uint8_t *p, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t s = end - 1;
        while (s > 0 && (p[s] & 0xC0) == 0x80 && end - s < 4) s--;
        uint32_t cp;
        if (utf8_next(p + s, end - s, &cp) != end - s || !js_space(cp)) break;
        end = s;
    }
    return n - end;
}
static size_t js_space_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_next(p + i, n - i, &cp);
        if (!k || !js_space(cp)) break;
        i += k;
    }
    return i;
}

typedef struct section {
    size_t start, len;
    int32_t added; /* index into t->added, or TRIE_NONE for text */
} section;

/* ref _encode_text: split on added tokens, apply lstrip/rstrip, encode the text between them. */
static dsq_status encode_valid(encoder *e, const uint8_t *p, size_t n) {
    const dsq_tok *t = e->t;
    size_t start = 0, i = 0;
    section *sec = NULL;
    size_t n_sec = 0, cap_sec = 0;
    dsq_status st = DSQ_OK;
    bool strip = false;
    while (st == DSQ_OK && i <= n) {
        size_t len = 0;
        int32_t a = i < n && t->first_byte[p[i]] ? trie_longest(t, p + i, n - i, &len) : TRIE_NONE;
        if (a == TRIE_NONE && i < n) {
            i++;
            continue;
        }
        /* Two sections at most: the text before this point, then the added token (if any). */
        if (n_sec + 2 > cap_sec) {
            size_t cap = cap_sec ? cap_sec * 2 : 16;
            section *d = dsq_realloc(sec, cap * sizeof *d);
            if (!d) {
                st = dsq_err_set(e->err, DSQ_ERR_NOMEM, "tokenizer: out of memory splitting on added tokens");
                break;
            }
            sec = d, cap_sec = cap;
        }
        if (i > start) sec[n_sec++] = (section){start, i - start, TRIE_NONE};
        if (a == TRIE_NONE) break;
        sec[n_sec++] = (section){i, len, a};
        strip |= t->added[a].lstrip || t->added[a].rstrip;
        i += len;
        start = i;
    }
    for (size_t k = 0; strip && st == DSQ_OK && k < n_sec; k++) {
        if (sec[k].added == TRIE_NONE) continue;
        const added_token *a = &t->added[sec[k].added];
        if (a->lstrip && k > 0) sec[k - 1].len -= js_space_suffix(p + sec[k - 1].start, sec[k - 1].len);
        if (a->rstrip && k + 1 < n_sec) {
            size_t cut = js_space_prefix(p + sec[k + 1].start, sec[k + 1].len);
            sec[k + 1].start += cut, sec[k + 1].len -= cut;
        }
    }
    for (size_t k = 0; st == DSQ_OK && k < n_sec; k++) {
        if (!sec[k].len) continue;
        int32_t a = sec[k].added;
        /* A stripped added token is text again unless it is now another token's content (ref looks it up). */
        if (strip) a = trie_exact(t, p + sec[k].start, sec[k].len);
        if (a != TRIE_NONE)
            st = ids_push(e->out, t->added[a].id, e->err);
        else
            st = run_stage(e, p + sec[k].start, sec[k].len, 0);
    }
    dsq_free(sec);
    return st;
}

dsq_status dsq_tok_encode(const dsq_tok *t, const void *text, size_t len, dsq_tok_ids *out, dsq_err *err) {
    size_t n0 = out->n;
    const uint8_t *p = text;
    dsq_tok_text fixed = {0};
    dsq_status st = DSQ_OK;
    if (utf8_valid_prefix(p, len) != len) {
        st = dsq_tok_utf8_sanitize(p, len, &fixed, err);
        p = (const uint8_t *)fixed.data, len = fixed.len;
    }
    encoder e = {.t = t, .out = out, .err = err, .use_cache = len >= CACHE_TEXT_MIN};
    if (st == DSQ_OK) {
        e.md = pcre2_match_data_create(1, t->gctx);
        if (!e.md) st = dsq_err_set(err, DSQ_ERR_NOMEM, "tokenizer: out of memory for regex match data");
    }
    if (st == DSQ_OK) st = encode_valid(&e, p, len);
    pcre2_match_data_free(e.md);
    dsq_free(e.sym), dsq_free(e.next), dsq_free(e.prev), dsq_free(e.heap), dsq_free(e.cache);
    dsq_tok_text_free(&e.cache_words);
    dsq_tok_ids_free(&e.cache_ids);
    dsq_tok_text_free(&e.prefix);
    dsq_tok_text_free(&fixed);
    if (st != DSQ_OK) out->n = n0;
    return st;
}

/* ---- decoding ----------------------------------------------------------------------------------- */

dsq_status dsq_tok_decode(const dsq_tok *t, const int32_t *ids, size_t n, const dsq_tok_decode_options *opt,
                          dsq_tok_text *out, dsq_err *err) {
    bool skip = opt && opt->skip_special, lossy = opt && opt->lossy;
    size_t len0 = out->len;
    dsq_tok_text run = {0};
    dsq_status st = dsq_tok_text_append(out, "", 0, err);
    /* ref ByteLevelDecoder.decode_chain: byte-level runs are decoded (TextDecoder, replacement) on
     * their own; added tokens go in verbatim between them. */
    for (size_t i = 0; st == DSQ_OK && i <= n; i++) {
        bool added = false;
        if (i < n) {
            int32_t id = ids[i];
            if (id < 0 || (uint32_t)id >= t->n_ids || !(t->flags[id] & TOK_PRESENT)) {
                st = dsq_err_set(err, DSQ_ERR_TOKEN,
                                 "tokenizer: id %lld at position %zu is not a token of this vocabulary", (long long)id,
                                 i);
                break;
            }
            if (skip && (t->flags[id] & TOK_SPECIAL)) continue;
            added = t->flags[id] & TOK_ADDED;
            if (!added) {
                st = lossy ? dsq_tok_text_append(&run, t->pieces + t->piece_off[id], t->piece_len[id], err)
                           : dsq_tok_text_append(out, t->pieces + t->piece_off[id], t->piece_len[id], err);
                continue;
            }
        }
        if (lossy && run.len && st == DSQ_OK) {
            st = dsq_tok_utf8_sanitize(run.data, run.len, out, err);
            run.len = 0;
        }
        if (added && st == DSQ_OK)
            st = dsq_tok_text_append(out, t->pieces + t->piece_off[ids[i]], t->piece_len[ids[i]], err);
    }
    dsq_tok_text_free(&run);
    if (st != DSQ_OK && out->data) {
        out->len = len0;
        out->data[len0] = 0;
    }
    return st;
}

dsq_status dsq_tok_parse_ids(const char *json, size_t len, const char *what, dsq_tok_ids *out, dsq_err *err) {
    cJSON *root = NULL;
    DSQ_TRY(dsq_json_parse(json, len, what, &root, err));
    size_t n0 = out->n, i = 0;
    dsq_status st =
        cJSON_IsArray(root) ? DSQ_OK : dsq_err_set(err, DSQ_ERR_JSON, "%s: not a JSON array of token ids", what);
    for (const cJSON *it = root->child; st == DSQ_OK && it; it = it->next, i++) {
        uint64_t v;
        if (!dsq_json_u64(it, &v) || v >= DSQ_TOK_MAX_ID)
            st = dsq_err_set(err, DSQ_ERR_TOKEN, "%s: element %zu is not a token id in [0, %d)", what, i,
                             DSQ_TOK_MAX_ID);
        else
            st = ids_push(out, (int32_t)v, err);
    }
    cJSON_Delete(root);
    if (st != DSQ_OK) out->n = n0;
    return st;
}

/* ---- chat format (spec §7) ---------------------------------------------------------------------- */

dsq_status dsq_chat_render(const dsq_chat_msg *msgs, size_t n, dsq_chat_mode mode, bool add_generation_prompt,
                           dsq_tok_text *out, dsq_err *err) {
    if (mode != DSQ_CHAT_MODE_CHAT && mode != DSQ_CHAT_MODE_THINKING)
        return dsq_err_set(err, DSQ_ERR_ARG, "chat: unknown mode %d", (int)mode);
    size_t last_user = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].role == DSQ_CHAT_ROLE_USER)
            last_user = i;
        else if (msgs[i].role == DSQ_CHAT_ROLE_SYSTEM && i != 0)
            return dsq_err_set(err, DSQ_ERR_ARG, "chat: message %zu: a system message must come first", i);
        else if (msgs[i].role != DSQ_CHAT_ROLE_SYSTEM && msgs[i].role != DSQ_CHAT_ROLE_ASSISTANT)
            return dsq_err_set(err, DSQ_ERR_ARG, "chat: message %zu: unknown role %d", i, (int)msgs[i].role);
    }
    if (add_generation_prompt && (n == 0 || msgs[n - 1].role != DSQ_CHAT_ROLE_USER))
        return dsq_err_set(err, DSQ_ERR_ARG, "chat: a generation prompt must follow a user message");
    size_t len0 = out->len;
#define PUT(s)                                                                                                         \
    do {                                                                                                               \
        st = dsq_tok_text_append(out, (s), strlen(s), err);                                                            \
        if (st != DSQ_OK) goto fail;                                                                                   \
    } while (0)
    dsq_status st;
    PUT(DSQ_CHAT_BOS);
    for (size_t i = 0; i < n; i++) {
        const char *content = msgs[i].content ? msgs[i].content : "";
        switch (msgs[i].role) {
        case DSQ_CHAT_ROLE_SYSTEM:
            PUT(content);
            break;
        case DSQ_CHAT_ROLE_USER:
            PUT(DSQ_CHAT_USER);
            PUT(content);
            break;
        case DSQ_CHAT_ROLE_ASSISTANT:
            PUT(DSQ_CHAT_ASSISTANT);
            /* Reasoning survives only after the last user message (spec §7). */
            if (mode == DSQ_CHAT_MODE_THINKING && (last_user == SIZE_MAX || i > last_user)) {
                PUT(DSQ_CHAT_THINK);
                if (msgs[i].reasoning) PUT(msgs[i].reasoning);
            }
            PUT(DSQ_CHAT_THINK_END);
            PUT(content);
            PUT(DSQ_CHAT_EOS);
            break;
        }
    }
    if (add_generation_prompt) {
        PUT(DSQ_CHAT_ASSISTANT);
        PUT(mode == DSQ_CHAT_MODE_THINKING ? DSQ_CHAT_THINK : DSQ_CHAT_THINK_END);
    }
#undef PUT
    return DSQ_OK;
fail:
    if (out->data) {
        out->len = len0;
        out->data[len0] = 0;
    }
    return st;
}
