/* lib/format's container metadata (dsq_ctr_meta.h): the builder's document read back by the typed
 * reader field for field; each metadata problem class `dsq verify` must report (format, model.config,
 * files.config.json, kv_cache) with its status; and, on a real conversion of the golden model, the
 * summary and the inventory resolution that `dsq inspect` prints. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_ctr_meta.h"
#include "dsq_test.h"

static char *golden_config(void) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    char *text = dsq_test_read(p, NULL);
    free(p);
    return text;
}

static dsq_v4_config parse_cfg(const char *text) {
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_config_parse(text, strlen(text), "config.json", &c, NULL, &err), DSQ_OK);
    return c;
}

static void test_build_read_back(void **state) {
    (void)state;
    char *cj = golden_config();
    dsq_v4_config cfg = parse_cfg(cj);
    const char *argv[] = {"dsq", "convert", "a", "b.dsq", NULL};
    const dsq_ctr_meta_source_file files[] = {{"model-1.safetensors", 123, 0xff}, {"model-2.safetensors", 1ull << 40, 0}};
    dsq_ctr_meta_desc d = {.config_json = cj,
                           .recipe = "{\"name\":\"int4\",\"rules\":[]}",
                           .tokenizer_json = "{\"model\":{}}",
                           .chat_template = "{{ x }}",
                           .generation_config_json = "{\"do_sample\":true}",
                           .kv_config = &cfg,
                           .command = argv,
                           .n_source_files = 2,
                           .source_files = files};
    dsq_err err = DSQ_ERR_INIT;
    char *text = dsq_ctr_meta_build(&d, &err);
    assert_non_null(text);
    /* spec §6 order; provenance as convert has always written it */
    assert_memory_equal(text, "{\"format\":\"dsq\",\"format_version\":\"1.0\",\"model\":{\"architecture\":\"deepseek_v4\","
                              "\"config\":{",
                        strlen("{\"format\":\"dsq\",\"format_version\":\"1.0\",\"model\":{\"architecture\":\"deepseek_v4\","
                               "\"config\":{"));
    assert_non_null(strstr(text, ",\"provenance\":{\"tool\":\"dsq " DSQ_VERSION_STRING "\",\"command\":[\"dsq\",\"convert\","
                                 "\"a\",\"b.dsq\"],\"source\":{\"files\":[{\"name\":\"model-1.safetensors\",\"bytes\":123,"
                                 "\"header_xxh3\":\"00000000000000ff\"},{\"name\":\"model-2.safetensors\",\"bytes\":"
                                 "1099511627776,\"header_xxh3\":\"0000000000000000\"}]}}}"));
    dsq_ctr_meta *m = NULL;
    assert_int_equal(dsq_ctr_meta_parse(text, strlen(text), "m", &m, &err), DSQ_OK);
    assert_string_equal(m->format, "dsq");
    assert_string_equal(m->format_version, "1.0");
    assert_string_equal(m->architecture, "deepseek_v4");
    assert_string_equal(m->recipe, "{\"name\":\"int4\",\"rules\":[]}");
    assert_string_equal(m->recipe_name, "int4");
    assert_string_equal(m->tokenizer_json, "{\"model\":{}}");
    assert_null(m->tokenizer_config_json);
    assert_string_equal(m->chat_template, "{{ x }}");
    assert_string_equal(m->config_json, cj); /* verbatim */
    assert_false(m->config_json_not_string);
    assert_string_equal(m->generation_config_json, "{\"do_sample\":true}");
    /* the declaration is the config's, and its per-token bytes are lib/format's KV figure */
    char *kv = dsq_ctr_meta_kv_cache_json(&cfg, NULL);
    assert_string_equal(m->kv_cache.json, kv);
    assert_string_equal(m->kv_cache.encoding, "compact");
    dsq_kv_bytes kb;
    dsq_config_kv_bytes(&cfg, &kb);
    assert_true(fabs(m->kv_cache.bytes_per_token - kb.per_token_compact) <= 1e-9 * kb.per_token_compact);
    assert_true(m->kv_cache.fixed_bytes > 0);
    /* model.config reads back as the same config */
    dsq_v4_config back;
    assert_int_equal(dsq_ctr_meta_config(m, "m", &back, &err), DSQ_OK);
    assert_int_equal(back.n_layers, cfg.n_layers);
    assert_int_equal(back.n_mtp_layers, cfg.n_mtp_layers);
    assert_int_equal(back.n_routed_experts, cfg.n_routed_experts);
    assert_true(back.dim == cfg.dim && back.vocab_size == cfg.vocab_size);
    bool have = false;
    assert_int_equal(dsq_ctr_meta_check(m, "m", &back, &have, &err), DSQ_OK);
    assert_true(have);
    assert_int_equal((int)err.n, 0);
    dsq_ctr_meta_free(m);
    dsq_free(kv);
    dsq_free(text);

    /* only a config: the optional members are left out and read back as absent */
    dsq_ctr_meta_desc bare = {.config_json = cj};
    text = dsq_ctr_meta_build(&bare, &err);
    assert_non_null(text);
    assert_int_equal(dsq_ctr_meta_parse(text, strlen(text), "m", &m, &err), DSQ_OK);
    assert_null(m->recipe);
    assert_null(m->recipe_name);
    assert_null(m->tokenizer_json);
    assert_null(m->chat_template);
    assert_null(m->generation_config_json);
    assert_null(m->kv_cache.json);
    assert_null(m->kv_cache.encoding);
    assert_true(isnan(m->kv_cache.bytes_per_token) && isnan(m->kv_cache.fixed_bytes));
    /* and verify's check names the missing declaration */
    assert_int_equal(dsq_ctr_meta_check(m, "bare.dsq", &back, &have, &err), DSQ_ERR_CONFIG);
    assert_true(have);
    assert_non_null(strstr(err.msg, "bare.dsq: metadata: kv_cache does not match the config"));
    dsq_err_clear(&err);
    dsq_ctr_meta_free(m);
    dsq_free(text);
    free(cj);
}

/* One problem class: the builder's document from the golden config with one piece of text replaced. */
typedef struct bad_case {
    const char *what;
    const char *from, *to; /* replace the first `from` in the built text by `to` */
    dsq_status status;     /* of dsq_ctr_meta_check (or of the parse when parse_status is set) */
    dsq_status parse_status;
    const char *msg;
} bad_case;

static void test_check_problem_classes(void **state) {
    (void)state;
    char *cj = golden_config();
    dsq_v4_config cfg = parse_cfg(cj);
    dsq_ctr_meta_desc d = {.config_json = cj, .kv_config = &cfg};
    dsq_err err = DSQ_ERR_INIT;
    char *good = dsq_ctr_meta_build(&d, &err);
    assert_non_null(good);
    static const bad_case cases[] = {
        {"format", "\"format\":\"dsq\"", "\"format\":\"gguf\"", DSQ_ERR_MISSING, DSQ_OK, "\"format\" is not \"dsq\""},
        {"format type", "\"format\":\"dsq\"", "\"format\":7", DSQ_ERR_MISSING, DSQ_OK, "\"format\" is not \"dsq\""},
        {"no model.config", "\"config\":{", "\"config_\":{", DSQ_ERR_MISSING, DSQ_OK,
         "metadata has no model.config object (inspect and eval need it)"},
        {"config.json type", "\"files\":{\"config.json\":\"", "\"files\":{\"config.json\":5,\"x\":\"", DSQ_ERR_JSON,
         DSQ_OK, "files.config.json is not a string"},
        {"config.json disagrees", "\"files\":{\"config.json\":\"{", "\"files\":{\"config.json\":\"{\\\"extra\\\":1,",
         DSQ_ERR_CONFIG, DSQ_OK, "files.config.json and model.config disagree"},
        {"kv_cache changed", "\"encoding\":\"compact\"", "\"encoding\":\"bf16\"", DSQ_ERR_CONFIG, DSQ_OK,
         "kv_cache does not match the config"},
        {"duplicate key", "\"format_version\":\"1.0\"", "\"format\":\"1.0\"", DSQ_OK, DSQ_ERR_DUPLICATE, NULL},
        {"not an object", "{\"format\"", "[{\"format\"", DSQ_OK, DSQ_ERR_JSON, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        const char *at = strstr(good, c->from);
        assert_non_null(at);
        size_t pre = (size_t)(at - good), fl = strlen(c->from), tl = strlen(c->to);
        char *bad = malloc(strlen(good) - fl + tl + 2);
        memcpy(bad, good, pre);
        memcpy(bad + pre, c->to, tl);
        strcpy(bad + pre + tl, at + fl);
        if (c->parse_status == DSQ_ERR_JSON) strcat(bad, "]");
        dsq_ctr_meta *m = NULL;
        dsq_status ps = dsq_ctr_meta_parse(bad, strlen(bad), "bad.dsq", &m, &err);
        if (ps != c->parse_status) fprintf(stderr, "%s: parse %d\n", c->what, ps);
        assert_int_equal(ps, c->parse_status);
        if (ps == DSQ_OK) {
            dsq_v4_config out;
            bool have = false;
            dsq_status s = dsq_ctr_meta_check(m, "bad.dsq", &out, &have, &err);
            if (s != c->status || !strstr(err.msg, c->msg)) fprintf(stderr, "%s: %d %s\n", c->what, s, err.msg);
            assert_int_equal(s, c->status);
            assert_non_null(strstr(err.msg, "bad.dsq: "));
            assert_non_null(strstr(err.msg, c->msg));
        } else {
            assert_null(m);
        }
        dsq_err_clear(&err);
        dsq_ctr_meta_free(m);
        free(bad);
    }
    dsq_free(good);
    free(cj);
}

typedef struct seen {
    size_t n;
    char first[256];
} seen;
static void on_missing(void *ctx, const char *name) {
    seen *s = ctx;
    if (!s->n++) snprintf(s->first, sizeof s->first, "%s", name);
}

static void test_real_container(void **state) {
    (void)state;
    char *tmp = dsq_test_tmpdir(), *model = dsq_test_shared_path("golden/v4-tiny/model");
    char *out = dsq_test_join(tmp, "g.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe int4", model, out), 0);
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_reader *r = NULL;
    assert_int_equal(dsq_ctr_reader_open(out, NULL, &r, &err), DSQ_OK);
    dsq_ctr_meta *m = NULL;
    assert_int_equal(dsq_ctr_meta_read(r, &m, &err), DSQ_OK);
    dsq_v4_config cfg;
    assert_int_equal(dsq_ctr_meta_config(m, out, &cfg, &err), DSQ_OK);
    bool have = false;
    assert_int_equal(dsq_ctr_meta_check(m, out, &cfg, &have, &err), DSQ_OK);
    dsq_ctr_summary s;
    dsq_ctr_summarize(r, m, &cfg, &s);
    assert_int_equal(s.tensors, dsq_ctr_count(r));
    uint64_t sum = 0, int4 = 0, fam = 0;
    for (size_t i = 0; i < s.tensors; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        for (int p = 0; p < t->n_parts; p++) sum += t->parts[p].bytes;
        if (t->encoding == DSQ_ENC_INT4_G) int4 += dsq_ctr_tensor_bytes(t);
    }
    for (int f = 0; f < DSQ_FAMILY_COUNT; f++) fam += s.bytes_by_family[f];
    assert_true(s.stored_bytes == sum && fam == sum && sum > 0);
    assert_true(s.bytes_by_encoding[DSQ_ENC_INT4_G] == int4 && int4 > 0);
    assert_int_equal(s.bytes_by_encoding[DSQ_ENC_MXFP4], 0);
    assert_true(s.bytes_by_family[DSQ_FAMILY_ROUTED_EXPERTS] > 0);
    assert_true(s.file_bytes > s.stored_bytes);
    assert_string_equal(s.recipe_name, "int4");
    assert_string_equal(s.kv_encoding, "compact");
    double want = 0;
    assert_true(dsq_ctr_summary_kv_consistent(&s, &want));
    assert_true(want == s.kv.per_token_compact);
    /* a declaration off by more than the tolerance is inconsistent */
    dsq_ctr_summary off = s;
    off.kv_bytes_per_token = want * (1 + 1e-5);
    assert_false(dsq_ctr_summary_kv_consistent(&off, NULL));
    off.kv_bytes_per_token = NAN;
    assert_false(dsq_ctr_summary_kv_consistent(&off, NULL));
    /* every weight resolves; one expert more than the container holds does not */
    size_t checked = 0, missing = 9;
    seen sn = {0};
    assert_int_equal(dsq_ctr_unresolved(r, &cfg, on_missing, &sn, &checked, &missing, &err), DSQ_OK);
    assert_true(checked > 100);
    assert_int_equal(missing, 0);
    assert_int_equal(sn.n, 0);
    dsq_v4_config more = cfg;
    more.n_routed_experts++;
    size_t checked2 = 0;
    assert_int_equal(dsq_ctr_unresolved(r, &more, on_missing, &sn, &checked2, &missing, &err), DSQ_OK);
    /* w1, w2, w3 of the new expert in every block, main and MTP */
    assert_int_equal(missing, (size_t)3 * (size_t)(cfg.n_layers + cfg.n_mtp_layers));
    assert_int_equal(sn.n, missing);
    assert_int_equal(checked2, checked + missing);
    char want_name[64];
    snprintf(want_name, sizeof want_name, ".ffn.experts.%d.", cfg.n_routed_experts);
    assert_non_null(strstr(sn.first, want_name));
    dsq_ctr_meta_free(m);
    dsq_ctr_reader_close(r);
    dsq_test_rmdir(tmp);
    free(tmp), free(model), free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_read_back),
        cmocka_unit_test(test_check_problem_classes),
        cmocka_unit_test(test_real_container),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
