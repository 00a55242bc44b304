/* Replays every parser's fuzz target (tests/support/dsq_fuzz.c) over seeds built here, the
 * committed corpora under tests/fuzz/corpus/<target>/ (crash regressions and libFuzzer finds), and
 * deterministic mutations of all of them.  A target aborts on any inconsistency; ASan/UBSan in
 * `make test-asan` catch memory errors.  `make fuzz` runs the same targets under libFuzzer. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_container.h"
#include "dsq_fuzz.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"
#include "dsq_tokenizer.h"

typedef struct blob {
    uint8_t *p;
    size_t n;
} blob;

static uint64_t rng_s = 0x243f6a8885a308d3ull;
static uint64_t rng(void) {
    uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static blob from_file(const char *path) {
    blob b;
    b.p = (uint8_t *)dsq_test_read(path, &b.n);
    return b;
}

static blob from_str(const char *s) {
    blob b = {(uint8_t *)strdup(s), strlen(s)};
    return b;
}

/* Run fn on b and on `rounds` mutations of it at byte positions ≥ keep. */
static void exercise_from(int (*fn)(const uint8_t *, size_t), const blob *b, int rounds, size_t keep) {
    fn(b->p, b->n);
    uint8_t *m = malloc(b->n + 64);
    for (int r = 0; r < rounds; r++) {
        size_t n = b->n;
        memcpy(m, b->p, n);
        int edits = 1 + (int)(rng() % 4);
        for (int e = 0; e < edits && n > keep; e++) {
            size_t at = keep + (size_t)(rng() % (n - keep));
            switch (rng() % 6) {
            case 0: m[at] ^= (uint8_t)(1u << (rng() % 8)); break;
            case 1: m[at] = (uint8_t)"0123456789{}[]\",:-.eE \\u"[rng() % 24]; break;
            case 2: n = at; break;
            case 3: m[at] = (uint8_t)rng(); break;
            case 4: /* duplicate a byte run */
                if (n + 8 <= b->n + 64 && at + 8 <= n) {
                    memmove(m + at + 8, m + at, n - at);
                    n += 8;
                }
                break;
            case 5: m[at] = 0xff; break;
            }
        }
        fn(m, n);
    }
    free(m);
}

static void exercise(int (*fn)(const uint8_t *, size_t), const blob *b, int rounds) { exercise_from(fn, b, rounds, 0); }

/* Replays tests/fuzz/corpus/<target>/ (relative to the repository root, where `make test` runs);
 * returns the number of files, or -1 when the folder cannot be opened.  fn NULL only counts. */
static int replay_dir(const char *target, int (*fn)(const uint8_t *, size_t)) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", target);
    DIR *d = opendir(dir);
    if (!d) return -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        count++;
        if (!fn) continue;
        char *p = dsq_test_join(dir, e->d_name);
        blob b = from_file(p);
        exercise(fn, &b, dsq_test_asan() ? 10 : 40);
        free(b.p);
        free(p);
    }
    closedir(d);
    return count;
}

/* A missing or empty corpus fails the suite: replaying nothing must not pass. */
static void replay_corpus(const char *target, int (*fn)(const uint8_t *, size_t), int *count) {
    int n = replay_dir(target, fn);
    if (n <= 0)
        fail_msg("fuzz corpus tests/fuzz/corpus/%s is %s (run from the repository root)", target,
                 n < 0 ? "missing" : "empty");
    *count += n;
}

static int rounds(void) { return dsq_test_asan() ? 300 : 1500; }

static void test_safetensors_target(void **state) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model/model.safetensors");
    blob golden = from_file(p);
    /* The golden header alone, with a data section cut to the first tensors. */
    exercise(dsq_fuzz_safetensors, &golden, dsq_test_asan() ? 20 : 60);
    blob small = from_str("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,4],"
                          "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]}}");
    size_t hl = small.n;
    blob file = {malloc(8 + hl + 16), 8 + hl + 16};
    dsq_put_u64le(file.p, hl);
    memcpy(file.p + 8, small.p, hl);
    memset(file.p + 8 + hl, 0x11, 16);
    exercise(dsq_fuzz_safetensors, &file, rounds());
    int n = 0;
    replay_corpus("safetensors", dsq_fuzz_safetensors, &n);
    free(file.p);
    free(small.p);
    free(golden.p);
    free(p);
}

static void test_config_target(void **state) {
    const char *files[] = {"samples/configs/v4-tiny.json", "samples/configs/deepseek-v4-flash.json",
                           "samples/configs/deepseek-v4-pro.json"};
    for (int i = 0; i < 3; i++) {
        blob b = from_file(files[i]);
        exercise(dsq_fuzz_config, &b, rounds());
        free(b.p);
    }
    int n = 0;
    replay_corpus("config", dsq_fuzz_config, &n);
}

static blob container_seed(void) {
    char *dir = dsq_test_tmpdir();
    char *path = dsq_test_join(dir, "seed.dsq");
    dsq_ctr_source_desc src[2] = {
        {"w.weight", "w.scale", 0, 4, false, DSQ_DTYPE_F8_E4M3, DSQ_DTYPE_F8_E8M0, 0},
        {"n.weight", NULL, 0, 8, false, DSQ_DTYPE_BF16, -1, 0},
    };
    dsq_ctr_tensor_desc d[3] = {
        {"w.weight", DSQ_ENC_FP8_B128, 2, {4, 8}, 128, 128, 1, &src[0]},
        {"n.weight", DSQ_ENC_BF16, 1, {8}, 0, 0, 1, &src[1]},
        {"e.weight", DSQ_ENC_MXFP4, 3, {2, 2, 64}, 1, 32, 0, NULL},
    };
    dsq_ctr_writer *w;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_writer_create(path, NULL, &w, &err), DSQ_OK);
    for (int i = 0; i < 3; i++) {
        uint32_t idx;
        assert_int_equal(dsq_ctr_writer_add(w, &d[i], &idx, &err), DSQ_OK);
    }
    const char *meta = "{\"format\":\"dsq\",\"model\":{\"architecture\":\"deepseek_v4\"}}";
    assert_int_equal(dsq_ctr_writer_set_metadata(w, meta, strlen(meta), &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    for (uint32_t i = 0; i < 3; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_writer_tensor(w, i);
        for (int p = 0; p < (int)t->n_parts; p++) {
            uint64_t n = t->parts[p].bytes;
            uint8_t *b = malloc(n ? n : 1);
            for (uint64_t k = 0; k < n; k++) b[k] = (uint8_t)(0x11 * (k + i + 1));
            assert_int_equal(dsq_ctr_writer_write(w, i, p, 0, b, n, &err), DSQ_OK);
            free(b);
        }
        assert_int_equal(dsq_ctr_writer_end_tensor(w, i, &err), DSQ_OK);
    }
    dsq_status s = dsq_ctr_writer_finish(w, &err);
    if (s != DSQ_OK) dsq_err_print(&err, stderr, "seed: ");
    assert_int_equal(s, DSQ_OK);
    blob b = from_file(path);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(path);
    free(dir);
    return b;
}

static void test_container_target(void **state) {
    blob b = container_seed();
    exercise(dsq_fuzz_container, &b, rounds());
    free(b.p);
    int n = 0;
    replay_corpus("container", dsq_fuzz_container, &n);
}

/* GPT-2 byte-level alphabet: printable bytes map to themselves, the others to U+0100 + n. */
static void byte_char(int b, char out[3]) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
        cp = b;
    } else {
        int n = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

static blob tokenizer_seed(const char *text) {
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s + n, cap - n,
                          "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":300,\"content\":\"<x>\",\"special\":true}],"
                          "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                          "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{N}{1,3}\"},\"behavior\":\"Isolated\","
                          "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
                          "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
                          "\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        const char *esc = (c[0] == '"' || c[0] == '\\') && !c[1] ? "\\" : "";
        n += (size_t)snprintf(s + n, cap - n, "%s\"%s%s\":%d", b ? "," : "", esc, c, b);
    }
    n += (size_t)snprintf(s + n, cap - n, ",\"ab\":256,\"abc\":257},\"merges\":[\"a b\",\"ab c\"]}}");
    blob out;
    out.n = n + 1 + strlen(text); /* JSON, NUL, text */
    out.p = malloc(out.n);
    memcpy(out.p, s, n);
    out.p[n] = 0;
    memcpy(out.p + n + 1, text, strlen(text));
    free(s);
    return out;
}

static void test_tokenizer_target(void **state) {
    blob b = tokenizer_seed("abc 12345 <x> ab\xff\xfe caf\xc3\xa9 abcabc");
    size_t json_len = strlen((const char *)b.p);
    dsq_tok *t = NULL;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_tok_load_json((const char *)b.p, json_len, "seed", NULL, &t, &err);
    if (s != DSQ_OK) dsq_err_print(&err, stderr, "tokenizer seed: ");
    assert_int_equal(s, DSQ_OK); /* the seed must load, or the encoder is never fuzzed */
    dsq_tok_free(t);
    dsq_err_clear(&err);
    exercise(dsq_fuzz_tokenizer, &b, dsq_test_asan() ? 100 : 300);                 /* JSON and text */
    exercise_from(dsq_fuzz_tokenizer, &b, dsq_test_asan() ? 200 : 1000, json_len + 1); /* text only */
    free(b.p);
    blob ids = from_str("[0, 1, 2, 128803, 5]");
    exercise(dsq_fuzz_token_ids, &ids, rounds());
    free(ids.p);
    int n = 0;
    replay_corpus("tokenizer", dsq_fuzz_tokenizer, &n);
    replay_corpus("token_ids", dsq_fuzz_token_ids, &n);
}

/* The corpus check itself: a folder that is not there counts as missing, not as zero files. */
static void test_missing_corpus_detected(void **state) {
    assert_int_equal(replay_dir("no-such-target", NULL), -1);
    const char *targets[] = {"safetensors", "config", "container", "tokenizer", "token_ids"};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) assert_true(replay_dir(targets[i], NULL) > 0);
}

/* Files in tests/fuzz/corpus/<target>/ (-1 when the folder is missing). */
static int corpus_size(const char *target) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", target);
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* Every target of DSQ_FUZZ_LIST has a non-empty corpus (a missing one fails), and the targets no
 * test above seeds by hand replay theirs: real files made by tests/fuzz/make-seeds.sh, libFuzzer
 * finds, and mutations of them all. */
static void test_every_target_corpus(void **state) {
    static const char *const seeded_above[] = {"safetensors", "config", "container", "tokenizer", "token_ids"};
    assert_true(dsq_fuzz_n_targets >= 11);
    for (size_t i = 0; i < dsq_fuzz_n_targets; i++) {
        const dsq_fuzz_target *t = &dsq_fuzz_targets[i];
        int files = corpus_size(t->name);
        if (files <= 0) fprintf(stderr, "fuzz target %s: no corpus in tests/fuzz/corpus/%s\n", t->name, t->name);
        assert_true(files > 0);
        bool above = false;
        for (size_t k = 0; k < sizeof seeded_above / sizeof *seeded_above; k++) above |= !strcmp(seeded_above[k], t->name);
        if (above) continue;
        int n = 0;
        replay_corpus(t->name, t->fn, &n);
        assert_int_equal(n, files);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_corpus_detected),
        cmocka_unit_test(test_safetensors_target),
        cmocka_unit_test(test_config_target),
        cmocka_unit_test(test_container_target),
        cmocka_unit_test(test_tokenizer_target),
        cmocka_unit_test(test_every_target_corpus),
    };
    return cmocka_run_group_tests_name("fuzz_replay", tests, NULL, NULL);
}
