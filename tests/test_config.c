/* config.json parsing (spec §1): the golden v4-tiny config, the released Flash/Pro configs (parameter
 * counts against spec §3.3 and the published sizes, KV bytes against spec §6.2), and one test per
 * malformation class, each failing with a specific status and a message naming the field. */
#include <stdlib.h>
#include <string.h>

#include "dsq_config.h"
#include "dsq_test.h"

static char *golden_text;
static size_t golden_len;

static int setup(void **state) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    golden_text = dsq_test_read(p, &golden_len);
    free(p);
    return 0;
}
static int teardown(void **state) {
    free(golden_text);
    return 0;
}

/* The golden config with the first occurrence of `from` replaced by `to`. */
static char *mutate(const char *from, const char *to) {
    const char *at = strstr(golden_text, from);
    assert_non_null(at);
    size_t head = (size_t)(at - golden_text), nf = strlen(from), nt = strlen(to);
    char *s = malloc(golden_len - nf + nt + 1);
    memcpy(s, golden_text, head);
    memcpy(s + head, to, nt);
    strcpy(s + head + nt, at + nf);
    return s;
}

/* Parse `text`; expect `status` with a first message containing `needle` (and the source name). */
static void expect_fail(const char *text, dsq_status status, const char *needle) {
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    char *warn = NULL;
    dsq_status s = dsq_config_parse(text, strlen(text), "cfg.json", &c, &warn, &err);
    if (s != status || !strstr(err.msg, needle))
        fprintf(stderr, "expected %s/%s, got %d (%s): %s\n", dsq_status_str(status), needle, s, dsq_status_str(s),
                err.msg);
    assert_int_equal(s, status);
    assert_int_equal(err.status, status);
    assert_non_null(strstr(err.msg, needle));
    assert_non_null(strstr(err.msg, "cfg.json"));
    assert_null(warn);
    assert_int_equal(c.n_layers, 0); /* zeroed on failure */
    dsq_err_clear(&err);
}

static void expect_mutation_fails(const char *from, const char *to, dsq_status status, const char *needle) {
    char *t = mutate(from, to);
    expect_fail(t, status, needle);
    free(t);
}

static void test_golden_values(void **state) {
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    char *warn = NULL;
    assert_int_equal(dsq_config_parse(golden_text, golden_len, "golden", &c, &warn, &err), DSQ_OK);
    assert_null(warn); /* every field of the golden config is known */
    /* spec §1.1, v4-tiny column */
    assert_int_equal(c.vocab_size, 512);
    assert_int_equal(c.dim, 256);
    assert_int_equal(c.n_layers, 4);
    assert_int_equal(c.n_mtp_layers, 1);
    assert_int_equal(c.n_hash_layers, 1);
    assert_int_equal(c.n_heads, 4);
    assert_int_equal(c.n_kv_heads, 1);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.rope_head_dim, 64);
    assert_int_equal(c.q_lora_rank, 128);
    assert_int_equal(c.o_lora_rank, 128);
    assert_int_equal(c.o_groups, 2);
    assert_int_equal(c.moe_inter_dim, 128);
    assert_int_equal(c.n_routed_experts, 8);
    assert_int_equal(c.n_shared_experts, 1);
    assert_int_equal(c.n_activated_experts, 2);
    assert_string_equal(c.score_func, "sqrtsoftplus");
    assert_true(c.route_scale == 1.5);
    assert_true(c.swiglu_limit == 10.0);
    assert_int_equal(c.window_size, 16);
    assert_int_equal(c.n_compress_ratios, 5);
    int ratios[5] = {0, 4, 32, 4, 0};
    for (int i = 0; i < 5; i++) assert_int_equal(c.compress_ratios[i], ratios[i]);
    assert_true(c.rope_theta == 10000.0);
    assert_true(c.compress_rope_theta == 160000.0);
    assert_true(c.has_yarn);
    assert_true(c.rope_factor == 4.0);
    assert_int_equal(c.original_seq_len, 64);
    assert_true(c.beta_fast == 32.0 && c.beta_slow == 1.0);
    assert_int_equal(c.index_n_heads, 8);
    assert_int_equal(c.index_head_dim, 64);
    assert_int_equal(c.index_topk, 8);
    assert_int_equal(c.hc_mult, 4);
    assert_int_equal(c.hc_sinkhorn_iters, 20);
    assert_true(c.hc_eps == 1e-6 && c.norm_eps == 1e-6);
    assert_true(c.expert_fp4);
    assert_true(c.has_quant_config && c.scale_ue8m0);
    assert_int_equal(c.weight_block_n, 128);
    assert_int_equal(c.weight_block_k, 128);
    assert_int_equal(c.bos_token_id, 0);
    assert_int_equal(c.eos_token_id, 1);
    assert_int_equal(c.max_position_embeddings, 256);
    assert_false(c.tie_word_embeddings);
    /* derived per block: [sliding, CSA, HCA, CSA] + MTP sliding; layer 0 hash-routed */
    dsq_attn_kind kinds[5] = {DSQ_ATTN_SLIDING, DSQ_ATTN_CSA, DSQ_ATTN_HCA, DSQ_ATTN_CSA, DSQ_ATTN_SLIDING};
    for (int b = 0; b < 5; b++) {
        assert_int_equal(dsq_config_attn_kind(&c, b), kinds[b]);
        assert_int_equal(dsq_config_routing(&c, b), b == 0 ? DSQ_ROUTE_HASH : DSQ_ROUTE_SCORE);
    }
    assert_string_equal(dsq_attn_kind_name(DSQ_ATTN_HCA), "HCA");
    assert_string_equal(dsq_routing_name(DSQ_ROUTE_HASH), "hash");
    dsq_err_clear(&err);
}

static void load_sample(const char *name, dsq_v4_config *c) {
    char path[256];
    snprintf(path, sizeof path, "samples/configs/%s", name);
    dsq_err err = DSQ_ERR_INIT;
    char *warn = NULL;
    dsq_status s = dsq_config_load(path, c, &warn, &err);
    if (s) dsq_err_print(&err, stderr, "load: ");
    assert_int_equal(s, DSQ_OK);
    dsq_free(warn);
    dsq_err_clear(&err);
}

static void assert_within(double got, double want, double rel) {
    if (!(got >= want * (1 - rel) && got <= want * (1 + rel)))
        fprintf(stderr, "%.6g not within %.1f%% of %.6g\n", got, rel * 100, want);
    assert_true(got >= want * (1 - rel) && got <= want * (1 + rel));
}

static void test_flash_pro_params(void **state) {
    dsq_v4_config c;
    dsq_param_counts p;
    load_sample("deepseek-v4-flash.json", &c);
    assert_int_equal(c.n_layers, 43);
    assert_int_equal(c.n_compress_ratios, 44);
    dsq_config_params(&c, &p);
    /* Published 284B total / 13B active (issue: ±1% / ±3%); spec §3.3: 284.3B without MTP, 290.9B with. */
    assert_within((double)p.total, 284e9, 0.01);
    assert_within((double)p.active, 13e9, 0.03);
    assert_within((double)p.total, 284.3e9, 0.0005);
    assert_within((double)(p.total + p.total_mtp), 290.9e9, 0.0005);
    assert_int_equal(p.embed, 129280ull * 4096);
    assert_int_equal(p.head, 129280ull * 4096);
    /* routed experts: 43 layers x 256 experts x 3 x 2048 x 4096 */
    assert_int_equal(p.routed_experts, 43ull * 256 * 3 * 2048 * 4096);

    load_sample("deepseek-v4-pro.json", &c);
    assert_int_equal(c.n_layers, 61);
    dsq_config_params(&c, &p);
    assert_within((double)p.total, 1.6e12, 0.03);
    assert_within((double)p.active, 49e9, 0.03);
    assert_within((double)p.total, 1573e9, 0.0005);
    assert_within((double)(p.total + p.total_mtp), 1599e9, 0.0005);
}

static void test_kv_bytes(void **state) {
    dsq_v4_config c;
    dsq_kv_bytes kv;
    /* spec §6.2 */
    load_sample("deepseek-v4-flash.json", &c);
    dsq_config_kv_bytes(&c, &kv);
    assert_within(kv.per_token_compact, 3508.8, 0.0001);
    assert_true(kv.per_token_bf16 == 6880.0);
    assert_int_equal(kv.fixed_compact, 44ull * 74624 + 12206080);
    assert_int_equal(kv.fixed_bf16, 44ull * 131072 + 12206080);
    load_sample("deepseek-v4-pro.json", &c);
    dsq_config_kv_bytes(&c, &kv);
    assert_within(kv.per_token_compact, 5023.7, 0.0001);
    assert_true(kv.per_token_bf16 == 9848.0);
    assert_int_equal(kv.fixed_compact, 62ull * 74624 + 18710528);
    /* spec §6.2 totals at n = 1M (compressed entries use floor(n/r)): Flash 3.69 GB, Pro 5.29 GB */
    load_sample("deepseek-v4-flash.json", &c);
    dsq_config_kv_bytes(&c, &kv);
    assert_within(kv.per_token_compact * 1048576 + (double)kv.fixed_compact, 3.69e9, 0.005);
}

static void test_missing_field(void **state) {
    expect_mutation_fails("\"hidden_size\": 256,", "", DSQ_ERR_MISSING, "\"hidden_size\"");
    expect_mutation_fails("\"compress_ratios\"", "\"compress_ratioz\"", DSQ_ERR_MISSING, "\"compress_ratios\"");
    expect_mutation_fails("\"model_type\": \"deepseek_v4\",", "", DSQ_ERR_MISSING, "\"model_type\"");
    expect_mutation_fails("\"factor\": 4.0,", "", DSQ_ERR_MISSING, "rope_scaling.factor");
}

static void test_mistyped_field(void **state) {
    expect_mutation_fails("\"hidden_size\": 256", "\"hidden_size\": \"256\"", DSQ_ERR_JSON, "\"hidden_size\"");
    expect_mutation_fails("\"num_hidden_layers\": 4", "\"num_hidden_layers\": [4]", DSQ_ERR_JSON,
                          "\"num_hidden_layers\"");
    expect_mutation_fails("\"routed_scaling_factor\": 1.5", "\"routed_scaling_factor\": \"1.5\"", DSQ_ERR_JSON,
                          "\"routed_scaling_factor\"");
    expect_mutation_fails("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 0", DSQ_ERR_JSON,
                          "\"tie_word_embeddings\"");
    expect_mutation_fails("\"compress_ratios\": [", "\"compress_ratios\": {\"a\": 1}, \"x\": [", DSQ_ERR_JSON,
                          "\"compress_ratios\"");
    expect_mutation_fails("\"factor\": 4.0", "\"factor\": \"4\"", DSQ_ERR_JSON, "rope_scaling.factor");
    expect_mutation_fails("\"expert_dtype\": \"fp4\"", "\"expert_dtype\": 4", DSQ_ERR_JSON, "\"expert_dtype\"");
}

static void test_non_integer(void **state) {
    expect_mutation_fails("\"hidden_size\": 256", "\"hidden_size\": 256.5", DSQ_ERR_RANGE, "\"hidden_size\"");
    expect_mutation_fails("\"num_attention_heads\": 4", "\"num_attention_heads\": 4e40", DSQ_ERR_RANGE,
                          "\"num_attention_heads\"");
    expect_mutation_fails("    32,\n", "    32.5,\n", DSQ_ERR_RANGE, "compress_ratios[2]");
}

static void test_negative(void **state) {
    expect_mutation_fails("\"num_hidden_layers\": 4", "\"num_hidden_layers\": -4", DSQ_ERR_RANGE,
                          "\"num_hidden_layers\" must be non-negative");
    expect_mutation_fails("    32,\n", "    -32,\n", DSQ_ERR_RANGE, "compress_ratios[2]");
    expect_mutation_fails("\"n_routed_experts\": 8", "\"n_routed_experts\": 0", DSQ_ERR_RANGE, "\"n_routed_experts\"");
}

static void test_compress_ratios_length(void **state) {
    expect_mutation_fails("    32,\n", "", DSQ_ERR_CONFIG, "\"compress_ratios\" has 4 entries");
    expect_mutation_fails("    32,\n", "    32, 4, 4,\n", DSQ_ERR_CONFIG, "\"compress_ratios\" has 7 entries");
    expect_mutation_fails("\"num_nextn_predict_layers\": 1", "\"num_nextn_predict_layers\": 2", DSQ_ERR_CONFIG,
                          "compress_ratios");
}

static void test_inconsistent_dims(void **state) {
    expect_mutation_fails("\"head_dim\": 128", "\"head_dim\": 64", DSQ_ERR_CONFIG, "\"head_dim\"");
    expect_mutation_fails("\"qk_rope_head_dim\": 64", "\"qk_rope_head_dim\": 63", DSQ_ERR_CONFIG,
                          "\"qk_rope_head_dim\" = 63 must be even");
    expect_mutation_fails("\"o_groups\": 2", "\"o_groups\": 3", DSQ_ERR_CONFIG, "\"o_groups\"");
    expect_mutation_fails("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9", DSQ_ERR_CONFIG,
                          "\"num_experts_per_tok\"");
    expect_mutation_fails("\"num_key_value_heads\": 1", "\"num_key_value_heads\": 4", DSQ_ERR_CONFIG,
                          "\"num_key_value_heads\"");
    expect_mutation_fails("\"n_shared_experts\": 1", "\"n_shared_experts\": 2", DSQ_ERR_CONFIG, "\"n_shared_experts\"");
    expect_mutation_fails("\"hidden_size\": 256", "\"hidden_size\": 200", DSQ_ERR_CONFIG,
                          "\"hidden_size\" = 200 must be a multiple of 128");
    expect_mutation_fails("\"moe_intermediate_size\": 128", "\"moe_intermediate_size\": 96", DSQ_ERR_CONFIG,
                          "\"moe_intermediate_size\"");
    expect_mutation_fails("\"index_head_dim\": 64", "\"index_head_dim\": 96", DSQ_ERR_CONFIG, "\"index_head_dim\"");
    expect_mutation_fails("\"num_hash_layers\": 1", "\"num_hash_layers\": 5", DSQ_ERR_CONFIG, "\"num_hash_layers\"");
    expect_mutation_fails("\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true", DSQ_ERR_CONFIG,
                          "\"tie_word_embeddings\"");
}

static void test_duplicate_key(void **state) {
    expect_mutation_fails("\"hidden_size\": 256,", "\"hidden_size\": 256, \"hidden_size\": 512,", DSQ_ERR_DUPLICATE,
                          "hidden_size");
    /* nested */
    expect_mutation_fails("\"beta_slow\": 1,", "\"beta_slow\": 1, \"beta_slow\": 2,", DSQ_ERR_DUPLICATE, "beta_slow");
}

static void test_malformed_json(void **state) {
    expect_mutation_fails("\"hidden_size\": 256,", "\"hidden_size\": 256", DSQ_ERR_JSON, "malformed JSON");
    expect_fail("", DSQ_ERR_JSON, "malformed JSON");
    expect_fail("{\"model_type\": \"deepseek_v4\"} x", DSQ_ERR_JSON, "trailing");
    expect_fail("[1, 2]", DSQ_ERR_JSON, "not a JSON object");
    /* an embedded NUL truncates nothing silently: parse is length-bounded */
    char *t = mutate("\"hidden_size\": 256", "\"hidden_size\": NaN");
    expect_fail(t, DSQ_ERR_JSON, "malformed JSON");
    free(t);
    /* RFC 8259 §7: control bytes in strings must be escaped.  A raw one is an error; a raw NUL used
     * to end the C string early, so "deepseek_v4<NUL>junk" read as "deepseek_v4" (fuzz find,
     * st_index: "a.safetensors<NUL>..." named shard a.safetensors). */
    expect_mutation_fails("\"model_type\": \"deepseek_v4\"", "\"model_type\": \"deepseek_v4\t\"", DSQ_ERR_JSON,
                          "raw control byte 0x09 in a string");
    t = mutate("\"model_type\": \"deepseek_v4\"", "\"model_type\": \"deepseek_v4#junk\"");
    size_t n = strlen(t);
    *strchr(t, '#') = 0;
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    char *warn = NULL;
    assert_int_equal(dsq_config_parse(t, n, "cfg.json", &c, &warn, &err), DSQ_ERR_JSON);
    assert_non_null(strstr(err.msg, "raw control byte 0x00 in a string"));
    assert_null(warn);
    dsq_err_clear(&err);
    free(t);
}

static void test_wrong_model_type(void **state) {
    expect_mutation_fails("\"model_type\": \"deepseek_v4\"", "\"model_type\": \"deepseek_v3\"", DSQ_ERR_UNSUPPORTED,
                          "\"model_type\" is \"deepseek_v3\"");
    expect_mutation_fails("\"model_type\": \"deepseek_v4\"", "\"model_type\": 4", DSQ_ERR_JSON, "\"model_type\"");
    expect_mutation_fails("\"scoring_func\": \"sqrtsoftplus\"", "\"scoring_func\": \"softmax\"", DSQ_ERR_UNSUPPORTED,
                          "\"scoring_func\"");
    expect_mutation_fails("\"scale_fmt\": \"ue8m0\"", "\"scale_fmt\": \"e4m3\"", DSQ_ERR_UNSUPPORTED,
                          "quantization_config.scale_fmt");
    expect_mutation_fails("128,\n      128\n", "128,\n      64\n", DSQ_ERR_UNSUPPORTED, "weight_block_size");
}

/* Every problem is reported, not only the first. */
static void test_collects_all(void **state) {
    char *a = mutate("\"hidden_size\": 256,", "");
    char *text = malloc(strlen(a) + 64);
    const char *at = strstr(a, "\"vocab_size\": 512");
    assert_non_null(at);
    size_t head = (size_t)(at - a);
    memcpy(text, a, head);
    strcpy(text + head, "\"vocab_size\": \"many\"");
    strcat(text, at + strlen("\"vocab_size\": 512"));
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_not_equal(dsq_config_parse(text, strlen(text), "cfg.json", &c, NULL, &err), DSQ_OK);
    assert_int_equal(err.n, 2);
    assert_non_null(strstr(err.all, "\"hidden_size\" is missing"));
    assert_non_null(strstr(err.all, "\"vocab_size\" must be an integer"));
    dsq_err_clear(&err);
    free(text);
    free(a);
}

/* Later Flash revisions: extra dspark_* fields and 46 compress_ratios. */
static void test_extra_fields(void **state) {
    char *t = mutate("\"vocab_size\": 512,", "\"vocab_size\": 512, \"dspark_num_layers\": 2, "
                                             "\"dspark_block_size\": 16, \"some_future_flag\": {\"x\": [1]},");
    char *t2 = malloc(strlen(t) + 32);
    const char *at = strstr(t, "    0\n  ]");
    assert_non_null(at);
    size_t head = (size_t)(at - t);
    memcpy(t2, t, head);
    strcpy(t2 + head, "    0, 0, 4\n  ]");
    strcat(t2, at + strlen("    0\n  ]"));
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    char *warn = NULL;
    dsq_status s = dsq_config_parse(t2, strlen(t2), "cfg.json", &c, &warn, &err);
    if (s) dsq_err_print(&err, stderr, "extra: ");
    assert_int_equal(s, DSQ_OK);
    assert_int_equal(c.n_layers, 4);
    assert_int_equal(c.n_compress_ratios, 7);
    assert_non_null(warn);
    assert_non_null(strstr(warn, "dspark_num_layers"));
    assert_non_null(strstr(warn, "some_future_flag"));
    assert_non_null(strstr(warn, "compress_ratios: 2 entries beyond"));
    dsq_free(warn);
    /* the same extra entries without dspark_* fields are an error */
    free(t);
    t = malloc(strlen(golden_text) + 32);
    at = strstr(golden_text, "    0\n  ]");
    head = (size_t)(at - golden_text);
    memcpy(t, golden_text, head);
    strcpy(t + head, "    0, 0, 4\n  ]");
    strcat(t, at + strlen("    0\n  ]"));
    expect_fail(t, DSQ_ERR_CONFIG, "\"compress_ratios\" has 7 entries");
    dsq_err_clear(&err);
    free(t);
    free(t2);
}

static void test_defaults(void **state) {
    const char *minimal = "{\"model_type\": \"deepseek_v4\", \"vocab_size\": 1024, \"hidden_size\": 128,"
                          " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"head_dim\": 128,"
                          " \"qk_rope_head_dim\": 64, \"q_lora_rank\": 128, \"o_lora_rank\": 64, \"o_groups\": 2,"
                          " \"moe_intermediate_size\": 128, \"n_routed_experts\": 4, \"num_experts_per_tok\": 2,"
                          " \"routed_scaling_factor\": 1.0, \"sliding_window\": 8, \"index_n_heads\": 2,"
                          " \"index_head_dim\": 64, \"index_topk\": 4, \"hc_mult\": 2, \"compress_ratios\": [4, 0]}";
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    char *warn = NULL;
    dsq_status s = dsq_config_parse(minimal, strlen(minimal), "min", &c, &warn, &err);
    if (s) dsq_err_print(&err, stderr, "min: ");
    assert_int_equal(s, DSQ_OK);
    assert_int_equal(c.n_mtp_layers, 0);
    assert_int_equal(c.n_hash_layers, 0);
    assert_int_equal(c.n_kv_heads, 1);
    assert_int_equal(c.n_shared_experts, 1);
    assert_true(c.swiglu_limit == 10.0 && c.rope_theta == 10000.0 && c.compress_rope_theta == 160000.0);
    assert_int_equal(c.hc_sinkhorn_iters, 20);
    assert_true(c.hc_eps == 1e-6 && c.norm_eps == 1e-6);
    assert_false(c.expert_fp4); /* absent expert_dtype: FP8 experts */
    assert_false(c.has_quant_config);
    assert_false(c.has_yarn);
    assert_int_equal(c.eos_token_id, 1);
    assert_int_equal(c.max_position_embeddings, 1048576);
    /* compressed layer without rope_scaling is accepted with a warning */
    assert_non_null(warn);
    assert_non_null(strstr(warn, "rope_scaling"));
    dsq_free(warn);
    dsq_err_clear(&err);
}

static void test_load_errors(void **state) {
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_config_load("/nonexistent/config.json", &c, NULL, &err), DSQ_ERR_MISSING);
    assert_non_null(strstr(err.msg, "/nonexistent/config.json"));
    dsq_err_clear(&err);
    /* allocation failure while reading the file */
    char *p = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    dsq_fault_set(DSQ_FAULT_MALLOC, 1);
    assert_int_equal(dsq_config_load(p, &c, NULL, &err), DSQ_ERR_NOMEM);
    dsq_fault_set(DSQ_FAULT_MALLOC, 0);
    dsq_err_clear(&err);
    char *warn = NULL;
    assert_int_equal(dsq_config_load(p, &c, &warn, &err), DSQ_OK);
    assert_null(warn);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_values),     cmocka_unit_test(test_flash_pro_params),
        cmocka_unit_test(test_kv_bytes),          cmocka_unit_test(test_missing_field),
        cmocka_unit_test(test_mistyped_field),    cmocka_unit_test(test_non_integer),
        cmocka_unit_test(test_negative),          cmocka_unit_test(test_compress_ratios_length),
        cmocka_unit_test(test_inconsistent_dims), cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_malformed_json),    cmocka_unit_test(test_wrong_model_type),
        cmocka_unit_test(test_collects_all),      cmocka_unit_test(test_extra_fields),
        cmocka_unit_test(test_defaults),          cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
