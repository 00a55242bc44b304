/* dsq convert: recipes, the release conversion of the golden model (every source tensor byte for
 * byte, stacks, fusions, metadata, KV-cache declaration), determinism, interruption and resume,
 * `ulimit -f`, a real full filesystem (tmpfs), dry run, protected tensors. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_convert.h"
#include "dsq_json.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"
#include "ctr_util.h"

static char *golden_model(void) { return dsq_test_shared_path("golden/v4-tiny/model"); }

static void convert_lib(const char *src, const char *out, const char *recipe_name, int threads) {
    dsq_err err = DSQ_ERR_INIT;
    dsq_recipe *r = NULL;
    assert_int_equal(dsq_recipe_load(recipe_name, &r, &err), DSQ_OK);
    const char *command[] = {"convert", "model", "--recipe", recipe_name, NULL};
    dsq_convert_options o = {.src = src, .out = out, .recipe = r, .threads = threads, .command = command};
    dsq_convert_plan *p = NULL;
    dsq_status s = dsq_convert_plan_make(&o, &p, &err);
    if (s == DSQ_OK) s = dsq_convert_run(p, NULL, &err);
    if (s != DSQ_OK) dsq_err_print(&err, stderr, "convert: ");
    assert_int_equal(s, DSQ_OK);
    dsq_convert_plan_free(p);
    dsq_recipe_free(r);
    dsq_err_clear(&err);
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = dsq_test_read(a, &na), *y = dsq_test_read(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* ---- recipes ---- */

static void test_recipes(void **state) {
    dsq_err err = DSQ_ERR_INIT;
    dsq_recipe *r = NULL;
    assert_int_equal(dsq_recipe_builtin_count(), 5);
    for (size_t i = 0; i < dsq_recipe_builtin_count(); i++) {
        assert_int_equal(dsq_recipe_load(dsq_recipe_builtin_name(i), &r, &err), DSQ_OK);
        /* no built-in touches a protected tensor */
        const char *protected_names[] = {"layers.0.ffn.gate.tid2eid", "layers.1.attn.compressor.ape",
                                         "layers.1.attn.indexer.compressor.ape", "hc_head_fn", "layers.2.hc_ffn_base",
                                         "layers.0.attn.attn_sink", "layers.3.ffn.gate.bias", "norm.weight",
                                         "layers.0.attn.q_norm.weight", "mtp.0.enorm.weight"};
        for (size_t k = 0; k < sizeof protected_names / sizeof protected_names[0]; k++) {
            assert_true(dsq_recipe_is_protected(protected_names[k]));
            const dsq_recipe_rule *m = dsq_recipe_match(r, protected_names[k]);
            assert_true(!m || m->target.keep);
        }
        dsq_recipe_free(r);
    }
    assert_false(dsq_recipe_is_protected("layers.0.attn.wq_a.weight"));
    assert_false(dsq_recipe_is_protected("embed.weight"));
    /* experts → int4-g32 in the int4 recipe, attention kept */
    assert_int_equal(dsq_recipe_load("int4", &r, &err), DSQ_OK);
    const dsq_recipe_rule *m = dsq_recipe_match(r, "layers.2.ffn.experts.7.w2.weight");
    assert_non_null(m);
    assert_int_equal(m->target.enc, DSQ_ENC_INT4_G);
    assert_int_equal(m->target.group, 32);
    assert_true(dsq_recipe_match(r, "layers.2.attn.wq_b.weight")->target.keep);
    /* overrides come first; the latest override wins */
    assert_int_equal(dsq_recipe_override(r, "*.attn.wq_b.weight=fp8-1x128", &err), DSQ_OK);
    assert_int_equal(dsq_recipe_override(r, "layers.2.*=bf16", &err), DSQ_OK);
    assert_int_equal(dsq_recipe_match(r, "layers.2.attn.wq_b.weight")->target.enc, DSQ_ENC_BF16);
    assert_int_equal(dsq_recipe_match(r, "layers.1.attn.wq_b.weight")->target.enc, DSQ_ENC_FP8_R128);
    assert_int_equal(dsq_recipe_override(r, "noequals", &err), DSQ_ERR_ARG);
    assert_int_equal(dsq_recipe_override(r, "*=int5-g32", &err), DSQ_ERR_ARG);
    assert_int_equal(dsq_recipe_override(r, "family:nonsense=bf16", &err), DSQ_ERR_ARG);
    dsq_recipe_free(r);
    assert_int_equal(dsq_recipe_load("nope", &r, &err), DSQ_ERR_MISSING);
    /* encoding names */
    dsq_recipe_target t;
    char buf[32];
    const char *names[] = {"keep", "bf16", "f32", "fp8-128x128", "fp8-1x128", "mxfp4", "nvfp4", "int8-row",
                           "int8-g128", "int4-g64", "int4-g32-asym", "int2-g16-asym"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_int_equal(dsq_recipe_parse_target(names[i], &t, &err), DSQ_OK);
        assert_string_equal(dsq_recipe_target_name(&t, buf, sizeof buf), names[i]);
    }
    const char *bad[] = {"int4-g33", "int4-g512", "int2-g32", "int8-g32-asym", "fp9", "", "int4-g"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(dsq_recipe_parse_target(bad[i], &t, &err), DSQ_ERR_ARG);
    /* JSON recipes */
    const char *good = "{\"name\":\"mine\",\"rules\":[{\"match\":\"family:routed_experts\",\"encoding\":\"int4-g64-asym\"},"
                       "{\"match\":\"*\",\"encoding\":\"keep\"}]}";
    assert_int_equal(dsq_recipe_parse(good, strlen(good), "mine.json", &r, &err), DSQ_OK);
    assert_int_equal(dsq_recipe_match(r, "mtp.0.ffn.experts.3.w1.weight")->target.enc, DSQ_ENC_INT4_G_ASYM);
    assert_int_equal(dsq_recipe_match(r, "mtp.0.ffn.experts.3.w1.weight")->target.group, 64);
    char *js = dsq_recipe_to_json(r);
    dsq_recipe *r2 = NULL;
    assert_int_equal(dsq_recipe_parse(js, strlen(js), "roundtrip", &r2, &err), DSQ_OK);
    assert_int_equal(r2->n_rules, 2);
    assert_string_equal(r2->rules[0].encoding, "int4-g64-asym");
    dsq_free(js);
    dsq_recipe_free(r2);
    dsq_recipe_free(r);
    const char *bads[] = {"[]", "{\"rules\":[]}", "{\"name\":\"x\",\"rules\":[]}",
                          "{\"name\":\"x\",\"rules\":[{\"match\":\"*\"}]}",
                          "{\"name\":\"x\",\"rules\":[{\"match\":\"*\",\"encoding\":\"fp7\"}]}",
                          "{\"name\":\"x\",\"rules\":[{\"match\":\"*\",\"encoding\":\"bf16\",\"extra\":1}]}",
                          "{\"name\":\"x\",\"name\":\"y\",\"rules\":[{\"match\":\"*\",\"encoding\":\"bf16\"}]}",
                          "{\"name\":\"x\",\"rules\":[{\"match\":\"*\",\"encoding\":\"bf16\"}],\"typo\":1}"};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        assert_int_not_equal(dsq_recipe_parse(bads[i], strlen(bads[i]), "bad.json", &r, &err), DSQ_OK);
        assert_null(r);
    }
    dsq_err_clear(&err);
}

/* ---- the golden model through the release recipe ---- */

static void check_kv_cache(cJSON *meta, const dsq_v4_config *cfg) {
    cJSON *kv = cJSON_GetObjectItemCaseSensitive(meta, "kv_cache");
    assert_non_null(kv);
    cJSON *fmts = cJSON_GetObjectItemCaseSensitive(kv, "entry_formats");
    /* hd 128 = 64 rope (bf16) + 64 nope (e4m3) + 1 scale; ihd 64 = 32 packed + 2 scales (spec §6.1) */
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(fmts, "kv_compact"), "bytes")->valuedouble, 193);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(fmts, "index_fp4"), "bytes")->valuedouble, 34);
    cJSON *layers = cJSON_GetObjectItemCaseSensitive(kv, "layers");
    assert_int_equal(cJSON_GetArraySize(layers), 5);
    const char *kinds[] = {"sliding", "CSA", "HCA", "CSA", "sliding"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(layers, i), "attention")->valuestring, kinds[i]);
    /* 2 CSA × (193 + 34)/4 + 1 HCA × 193/32 */
    double bpt = cJSON_GetObjectItemCaseSensitive(kv, "bytes_per_token")->valuedouble;
    assert_true(bpt == 2 * 227.0 / 4 + 193.0 / 32);
    /* windows 5 × 16 × 193, CSA states 2 × (16384 + 8192), HCA state 2·32·128·4 */
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(kv, "fixed_bytes")->valuedouble, 5 * 16 * 193 + 2 * 24576 + 32768);
    /* agrees with the config module's per-token figure */
    dsq_kv_bytes kb;
    dsq_config_kv_bytes(cfg, &kb);
    assert_true(kb.per_token_compact > bpt - 1e-9 && kb.per_token_compact < bpt + 1e-9);
}

static void test_release_golden(void **state) {
    char *dir = dsq_test_tmpdir(), *out = dsq_test_join(dir, "tiny.dsq"), *src = golden_model();
    convert_lib(src, out, "release", 1);
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_reader *r = NULL;
    dsq_ctr_reader_options ro = {.verify = true};
    assert_int_equal(dsq_ctr_reader_open(out, &ro, &r, &err), DSQ_OK);
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(src, NULL, &st, &err), DSQ_OK);
    /* every checkpoint tensor is in the container, byte for byte */
    size_t weights = 0, scales = 0;
    for (size_t i = 0; i < dsq_st_count(st); i++) {
        const dsq_st_tensor *g = dsq_st_at(st, i);
        size_t n = strlen(g->name);
        bool is_scale = n > 6 && !strcmp(g->name + n - 6, ".scale");
        char wname[512];
        snprintf(wname, sizeof wname, "%.*s%s", (int)(is_scale ? n - 6 : n), g->name, is_scale ? ".weight" : "");
        const dsq_ctr_tensor *t;
        const dsq_ctr_source *s;
        if (!dsq_ctr_find_source(r, wname, &t, &s)) fail_msg("%s not in the container", g->name);
        uint64_t off, len;
        int part = is_scale ? 1 : 0;
        if (is_scale) assert_string_equal(s->scale_name, g->name);
        assert_int_equal(is_scale ? s->scale_dtype : (int)s->dtype, g->dtype);
        assert_true(dsq_ctr_source_slice(t, s, part, &off, &len));
        assert_int_equal(len, g->n_bytes);
        assert_memory_equal((const uint8_t *)t->parts[part].data + off, g->data, len);
        if (is_scale) scales++;
        else weights++;
    }
    assert_int_equal(weights + scales, dsq_st_count(st));
    /* stacks and fusions (spec dsq.md §5.5) */
    const dsq_ctr_tensor *t = dsq_ctr_find(r, "layers.0.ffn.experts.w1.weight");
    assert_non_null(t);
    assert_int_equal(t->encoding, DSQ_ENC_MXFP4);
    assert_int_equal(t->rank, 3);
    assert_int_equal(t->shape[0], 8);
    assert_int_equal(t->shape[1], 128);
    assert_int_equal(t->shape[2], 256);
    assert_int_equal(t->n_sources, 8);
    t = dsq_ctr_find(r, "mtp.0.ffn.experts.w2.weight");
    assert_non_null(t);
    assert_int_equal(t->shape[1], 256);
    assert_int_equal(t->shape[2], 128);
    t = dsq_ctr_find(r, "layers.1.attn.compressor.wkv_wgate.weight"); /* r = 4: c = 2 → [2·2·128, 256] */
    assert_non_null(t);
    assert_int_equal(t->shape[0], 512);
    assert_int_equal(t->sources[1].start, 256);
    assert_string_equal(t->sources[1].name, "layers.1.attn.compressor.wgate.weight");
    t = dsq_ctr_find(r, "layers.2.attn.compressor.wkv_wgate.weight"); /* r = 32: c = 1 */
    assert_int_equal(t->shape[0], 256);
    t = dsq_ctr_find(r, "layers.3.attn.indexer.compressor.wkv_wgate.weight");
    assert_int_equal(t->shape[0], 256);
    assert_null(dsq_ctr_find(r, "layers.1.attn.compressor.wkv.weight"));
    /* every part aligned for kernels and cudaMemcpy */
    for (size_t i = 0; i < dsq_ctr_count(r); i++) {
        const dsq_ctr_tensor *x = dsq_ctr_at(r, i);
        for (int p = 0; p < x->n_parts; p++) assert_int_equal((uintptr_t)x->parts[p].data % 64, 0);
    }
    /* metadata */
    cJSON *meta = NULL;
    size_t mlen;
    const char *mt = dsq_ctr_metadata(r, &mlen);
    assert_int_equal(dsq_json_parse(mt, mlen, "meta", &meta, &err), DSQ_OK);
    cJSON *model = cJSON_GetObjectItemCaseSensitive(meta, "model");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(model, "config"), "vocab_size")->valuedouble, 512);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "recipe"), "name")->valuestring, "release");
    cJSON *prov = cJSON_GetObjectItemCaseSensitive(meta, "provenance");
    cJSON *files = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(prov, "source"), "files");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(files, 0), "name")->valuestring, "model.safetensors");
    char *cfg_path = dsq_test_join(src, "config.json");
    size_t clen;
    char *cfg_text = dsq_test_read(cfg_path, &clen);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "files"), "config.json")->valuestring,
                        cfg_text);
    dsq_v4_config cfg;
    assert_int_equal(dsq_config_load(cfg_path, &cfg, NULL, &err), DSQ_OK);
    check_kv_cache(meta, &cfg);
    cJSON_Delete(meta);
    free(cfg_text);
    free(cfg_path);
    dsq_st_close(st);
    dsq_ctr_reader_close(r);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(out);
    free(src);
    free(dir);
}

/* Same bytes whatever the thread count, run after run. */
static void test_deterministic(void **state) {
    char *dir = dsq_test_tmpdir(), *a = dsq_test_join(dir, "a.dsq"), *b = dsq_test_join(dir, "b.dsq"), *src = golden_model();
    convert_lib(src, a, "release", 1);
    convert_lib(src, b, "release", 2);
    assert_true(same_file(a, b));
    dsq_test_rmdir(dir);
    free(a);
    free(b);
    free(src);
    free(dir);
}

/* The re-encoding path split into many chunks (one 128-row slab each: the golden w2 experts and
 * projections then take several, exercising the double-buffered write of chunk k-1 while chunk k is
 * encoded) gives the same bytes as whole-tensor chunks, for the lossless and the searched encodings;
 * so does writing through the page cache (--buffered-io) instead of the default O_DIRECT. */
static void test_chunking_invariant(void **state) {
    char *dir = dsq_test_tmpdir(), *src = golden_model();
    /* nvfp4 over several chunks takes a tensor-scale pre-pass over the whole source first */
    const char *recipes[] = {"fp8", "int4", "release --override 'layers.*.ffn.experts.*=nvfp4'"};
    for (int k = 0; k < 3; k++) {
        char *a = dsq_test_join(dir, "a.dsq"), *b = dsq_test_join(dir, "b.dsq");
        assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe %s --threads 2 --overwrite", src, a,
                                      recipes[k]),
                         0);
        assert_int_equal(dsq_test_run(NULL, NULL,
                                      "convert '%s' '%s' --recipe %s --threads 2 --chunk-bytes 1 --buffered-io --overwrite",
                                      src, b,
                                      recipes[k]),
                         0);
        assert_true(same_file(a, b));
        free(a);
        free(b);
    }
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' x.dsq --recipe fp8 --chunk-bytes 0", src), 2);
    dsq_test_rmdir(dir);
    free(src);
    free(dir);
}

/* ---- CLI ---- */

static void test_cli_dry_run(void **state) {
    char *dir = dsq_test_tmpdir(), *src = golden_model(), *out = NULL;
    assert_int_equal(dsq_test_run(&out, NULL, "convert '%s' '%s/x.dsq' --recipe release --dry-run --json", src, dir), 0);
    cJSON *j = NULL;
    assert_int_equal(dsq_json_parse(out, strlen(out), "dry-run", &j, NULL), DSQ_OK);
    cJSON *tensors = cJSON_GetObjectItemCaseSensitive(j, "tensors");
    cJSON *bin = cJSON_GetObjectItemCaseSensitive(j, "bytes_in"), *bout = cJSON_GetObjectItemCaseSensitive(j, "bytes_out");
    assert_true(tensors->valuedouble > 100 && tensors->valuedouble < 428);
    assert_true(bin->valuedouble == bout->valuedouble); /* release: bytes unchanged */
    assert_true(cJSON_GetObjectItemCaseSensitive(j, "free_bytes")->valuedouble > 0);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "families")) >= 8);
    cJSON_Delete(j);
    free(out);
    char *x = dsq_test_join(dir, "x.dsq");
    assert_false(dsq_path_exists(x));
    assert_int_equal(dsq_test_run(&out, NULL, "convert '%s' '%s' --recipe int4 --dry-run", src, x), 0);
    assert_non_null(strstr(out, "routed_experts"));
    assert_non_null(strstr(out, "mxfp4->int4-g"));
    free(out);
    assert_int_equal(dsq_test_run(NULL, NULL, "convert --help"), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s'", src, x), 2);                   /* no recipe */
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release --bogus", src, x), 2);
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe nope", src, x), 1);
    assert_non_null(strstr(err, "unknown recipe"));
    free(err);
    /* protected tensors: refused unless --force */
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --override '*.attn_sink=bf16' --dry-run", src, x), 1);
    assert_non_null(strstr(err, "layers.0.attn.attn_sink"));
    assert_non_null(strstr(err, "--force"));
    free(err);
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release --override '*.attn_sink=bf16' --force --dry-run", src, x), 0);
    /* experts of one stack must agree */
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --override 'layers.0.ffn.experts.3.*=int4-g32' --dry-run", src, x), 1);
    assert_non_null(strstr(err, "same encoding"));
    free(err);
    /* an integer tensor cannot be re-encoded even with --force */
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --override '*tid2eid=bf16' --force --dry-run", src, x), 1);
    assert_non_null(strstr(err, "integer"));
    free(err);
    assert_int_equal(dsq_test_run(&out, NULL, "recipes"), 0);
    assert_non_null(strstr(out, "int4"));
    free(out);
    assert_int_equal(dsq_test_run(&out, NULL, "recipes fp8 --json"), 0);
    assert_non_null(strstr(out, "fp8-128x128"));
    free(out);
    free(x);
    dsq_test_rmdir(dir);
    free(src);
    free(dir);
}

/* Interrupted (SIGINT) and killed (SIGKILL) conversions resume to the same bytes. */
static void test_cli_interrupt_resume(void **state) {
    char *dir = dsq_test_tmpdir(), *src = golden_model();
    char *ref = dsq_test_join(dir, "ref.dsq"), *out = dsq_test_join(dir, "m.dsq");
    char *partial = dsq_test_join(dir, ".m.dsq.partial"), *journal = dsq_test_join(dir, ".m.dsq.journal");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", src, ref), 0);
    /* SIGINT after 40 tensors: exit 130, partial and journal kept, no output */
    char *err = NULL;
    int rc = dsq_test_run(NULL, &err, "version >/dev/null; DSQ_CONVERT_TEST_SIGNAL=40:2 '%s' convert '%s' '%s' --recipe release",
                          dsq_test_bin(), src, out);
    assert_int_equal(rc, 130);
    assert_non_null(strstr(err, "--resume"));
    free(err);
    assert_false(dsq_path_exists(out));
    assert_true(dsq_path_exists(partial));
    assert_true(dsq_path_exists(journal));
    char *o = NULL;
    assert_int_equal(dsq_test_run(&o, NULL, "convert '%s' '%s' --recipe release --resume --json --threads 2", src, out), 0);
    assert_non_null(strstr(o, "\"resumed\": 40"));
    free(o);
    assert_true(same_file(ref, out));
    assert_false(dsq_path_exists(partial));
    assert_false(dsq_path_exists(journal));
    unlink(out);
    /* SIGKILL after 100 tensors: nothing synced on purpose; the journal is re-verified on resume */
    rc = dsq_test_run(NULL, NULL, "version >/dev/null; DSQ_CONVERT_TEST_SIGNAL=100:9 '%s' convert '%s' '%s' --recipe release",
                      dsq_test_bin(), src, out);
    assert_int_equal(rc, 128 + 9);
    assert_false(dsq_path_exists(out));
    assert_true(dsq_path_exists(partial));
    assert_int_equal(dsq_test_run(&o, NULL, "convert '%s' '%s' --recipe release --resume --json", src, out), 0);
    assert_non_null(strstr(o, "\"resumed\": 100"));
    free(o);
    assert_true(same_file(ref, out));
    unlink(out);
    /* a partial left behind without --resume: started over, same result */
    rc = dsq_test_run(NULL, NULL, "version >/dev/null; DSQ_CONVERT_TEST_SIGNAL=10:2 '%s' convert '%s' '%s' --recipe release",
                      dsq_test_bin(), src, out);
    assert_int_equal(rc, 130);
    assert_int_equal(dsq_test_run(&o, NULL, "convert '%s' '%s' --recipe release --json", src, out), 0);
    assert_non_null(strstr(o, "\"resumed\": 0"));
    free(o);
    assert_true(same_file(ref, out));
    /* resuming with different arguments is refused */
    unlink(out);
    rc = dsq_test_run(NULL, NULL, "version >/dev/null; DSQ_CONVERT_TEST_SIGNAL=10:2 '%s' convert '%s' '%s' --recipe release",
                      dsq_test_bin(), src, out);
    assert_int_equal(rc, 130);
    assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --override 'embed.weight=keep' --resume", src, out), 1);
    assert_non_null(strstr(err, "different job"));
    free(err);
    /* the output exists: refused without --overwrite */
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", src, ref), 1);
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release --overwrite", src, ref), 0);
    dsq_test_rmdir(dir);
    free(partial);
    free(journal);
    free(ref);
    free(out);
    free(src);
    free(dir);
}

/* A file-size limit below the output: a clear error, no output, no partial, no journal. */
static void test_cli_ulimit(void **state) {
    char *dir = dsq_test_tmpdir(), *src = golden_model();
    char *out = dsq_test_join(dir, "m.dsq"), *partial = dsq_test_join(dir, ".m.dsq.partial"),
         *journal = dsq_test_join(dir, ".m.dsq.journal");
    char *err = NULL;
    int rc = dsq_test_run(NULL, &err, "version >/dev/null; ulimit -f 2048; '%s' convert '%s' '%s' --recipe release",
                          dsq_test_bin(), src, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "File too large"));
    free(err);
    assert_false(dsq_path_exists(out));
    assert_false(dsq_path_exists(partial));
    assert_false(dsq_path_exists(journal));
    dsq_test_rmdir(dir);
    free(out);
    free(partial);
    free(journal);
    free(src);
    free(dir);
}

/* An I/O error in the middle of a conversion: clean error, nothing left behind. */
static void test_write_failure(void **state) {
    char *dir = dsq_test_tmpdir(), *out = dsq_test_join(dir, "m.dsq"), *src = golden_model();
    char *partial = dsq_test_join(dir, ".m.dsq.partial");
    dsq_err err = DSQ_ERR_INIT;
    dsq_recipe *r = NULL;
    assert_int_equal(dsq_recipe_load("release", &r, &err), DSQ_OK);
    dsq_convert_options o = {.src = src, .out = out, .recipe = r};
    for (long nth = 1; nth < 400; nth += 97) {
        dsq_convert_plan *p = NULL;
        assert_int_equal(dsq_convert_plan_make(&o, &p, &err), DSQ_OK);
        dsq_fault_set(DSQ_FAULT_WRITE, nth);
        dsq_status s = dsq_convert_run(p, NULL, &err);
        dsq_fault_set(DSQ_FAULT_WRITE, 0);
        assert_int_equal(s, DSQ_ERR_IO);
        assert_false(dsq_path_exists(out));
        assert_false(dsq_path_exists(partial));
        dsq_convert_plan_free(p);
        dsq_err_clear(&err);
    }
    dsq_recipe_free(r);
    dsq_test_rmdir(dir);
    free(partial);
    free(out);
    free(src);
    free(dir);
}

/* A damaged source is reported before anything is written. */
static void test_bad_source(void **state) {
    char *dir = dsq_test_tmpdir(), *src = golden_model();
    char *model = dsq_test_join(dir, "model");
    assert_int_equal(dsq_test_run(NULL, NULL, "version >/dev/null; mkdir '%s' && cp '%s/config.json' '%s/'", model, src, model), 0);
    /* a checkpoint with one tensor only: the inventory check lists what is missing */
    char *st_path = dsq_test_join(model, "model.safetensors");
    dsq_st_item it = {"embed.weight", DSQ_DTYPE_BF16, 2, {512, 256}, NULL};
    void *zeros = calloc(512 * 256, 2);
    it.data = zeros;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_write_file(st_path, &it, 1, false, &err), DSQ_OK);
    free(zeros);
    char *e = NULL;
    assert_int_equal(dsq_test_run(NULL, &e, "convert '%s' '%s/o.dsq' --recipe release", model, dir), 1);
    assert_non_null(strstr(e, "layers.0.attn.wq_a.weight"));
    free(e);
    char *o = dsq_test_join(dir, "o.dsq");
    assert_false(dsq_path_exists(o));
    free(o);
    dsq_err_clear(&err);
    free(st_path);
    free(model);
    dsq_test_rmdir(dir);
    free(src);
    free(dir);
}


/* ---- a real full filesystem ---- */

/* The scenario runs in one shell script on a small tmpfs mounted at $1; results go to files in $2
 * (outside the mount).  Exit 77: tmpfs could not be mounted.  The trap unmounts on every path; in
 * a private mount namespace the mount also dies with the script. */
static const char ENOSPC_SCRIPT[] =
    "set -u\n"
    "M=$1 R=$2 BIN=$3 SRC=$4\n"
    "mount -t tmpfs -o size=1m tmpfs \"$M\" 2>\"$R/mount-err\" || exit 77\n"
    "trap 'umount \"$M\" 2>/dev/null' EXIT\n"
    "remount() { umount \"$M\" && mount -t tmpfs -o size=$1 tmpfs \"$M\" || exit 78; }\n"
    /* 1: the output cannot fit: refused before anything is written */
    "\"$BIN\" convert \"$SRC\" \"$M/m.dsq\" --recipe release >/dev/null 2>\"$R/err1\"; echo $? >\"$R/rc1\"\n"
    "ls -A \"$M\" >\"$R/ls1\"\n"
    /* 2: room at the start; the filesystem fills while the conversion is stopped after 20 tensors */
    "remount 8m\n"
    "DSQ_CONVERT_TEST_SIGNAL=20:19 \"$BIN\" convert \"$SRC\" \"$M/m.dsq\" --recipe release >/dev/null 2>\"$R/err2\" &\n"
    "pid=$!; i=0\n"
    "while [ \"$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)\" != T ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n"
    "df -k \"$M\" | tail -n 1 >\"$R/df2\"\n"
    "dd if=/dev/zero of=\"$M/fill\" bs=64k 2>/dev/null\n"
    "kill -CONT $pid; wait $pid; echo $? >\"$R/rc2\"\n"
    "rm -f \"$M/fill\"; ls -A \"$M\" >\"$R/ls2\"\n"
    /* 3: a big enough filesystem: the same conversion succeeds and verifies */
    "remount 16m\n"
    "\"$BIN\" convert \"$SRC\" \"$M/m.dsq\" --recipe release >/dev/null 2>\"$R/err3\"; echo $? >\"$R/rc3\"\n"
    "\"$BIN\" verify \"$M/m.dsq\" >/dev/null 2>&1; echo $? >\"$R/vrc3\"\n"
    "ls -A \"$M\" >\"$R/ls3\"\n";

static char *result(const char *dir, const char *name) {
    char *p = dsq_test_join(dir, name);
    char *t = dsq_test_read(p, NULL);
    free(p);
    return t;
}

/* One line, ending in a newline. */
static void assert_one_line(const char *t) {
    const char *nl = strchr(t, '\n');
    if (!nl || nl[1] != 0) fail_msg("expected one line, got: %s", t);
}

/* Converting the golden model onto a tmpfs that is too small, and onto one that fills up during the
 * conversion (a real ENOSPC from the kernel, not fault injection): exit 1, one line naming the output
 * and the problem, nothing left behind; then the same conversion into a big enough tmpfs succeeds.
 * Needs to mount tmpfs: as root, or in an unprivileged user namespace; else skipped with the reason. */
static void test_enospc_tmpfs(void **state) {
    char *dir = dsq_test_tmpdir(), *src = golden_model();
    char *mnt = dsq_test_join(dir, "mnt"), *res = dsq_test_join(dir, "res"), *script = dsq_test_join(dir, "enospc.sh");
    assert_int_equal(mkdir(mnt, 0700), 0);
    assert_int_equal(mkdir(res, 0700), 0);
    dsq_test_write(script, ENOSPC_SCRIPT, strlen(ENOSPC_SCRIPT));
    char bin[4096];
    assert_non_null(realpath(dsq_test_bin(), bin));
    /* private mount namespace (root), user + mount namespace (unprivileged), plain mount (root) */
    static const char *const ways[] = {"unshare --mount --propagation private sh",
                                       "unshare --user --map-root-user --mount sh", "sh"};
    int rc = 77;
    const char *how = NULL;
    for (size_t i = 0; i < sizeof ways / sizeof ways[0] && rc == 77; i++) {
        char cmd[16384];
        snprintf(cmd, sizeof cmd, "%s '%s' '%s' '%s' '%s' '%s' 2>/dev/null", ways[i], script, mnt, res, bin, src);
        int st = system(cmd);
        rc = st == -1 ? 77 : WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        how = ways[i];
    }
    if (rc == 77) {
        char *p = dsq_test_join(res, "mount-err"), why[512] = "unknown";
        FILE *f = fopen(p, "r");
        if (f) {
            if (!fgets(why, sizeof why, f)) snprintf(why, sizeof why, "mount failed");
            fclose(f);
        }
        free(p);
        why[strcspn(why, "\n")] = 0;
        dsq_test_rmdir(dir);
        printf("  SKIPPED: cannot mount a tmpfs here (as root, in a user namespace or plainly): %s\n", why);
        free(script), free(res), free(mnt), free(src), free(dir);
        skip();
    }
    printf("  ENOSPC scenario ran via '%s'\n", how);
    assert_int_equal(rc, 0);
    char *t;
    /* 1: refused up front */
    t = result(res, "rc1"), assert_string_equal(t, "1\n"), free(t);
    t = result(res, "err1");
    assert_one_line(t);
    assert_non_null(strstr(t, "m.dsq"));
    assert_non_null(strstr(t, "not enough free space"));
    free(t);
    t = result(res, "ls1"), assert_string_equal(t, ""), free(t);
    /* 2: the kernel's ENOSPC in the middle of the conversion */
    t = result(res, "rc2"), assert_string_equal(t, "1\n"), free(t);
    t = result(res, "err2");
    printf("  %s", t);
    assert_one_line(t);
    assert_non_null(strstr(t, "m.dsq"));
    assert_non_null(strstr(t, "No space left on device"));
    free(t);
    t = result(res, "ls2"), assert_string_equal(t, ""), free(t); /* no m.dsq, .partial or .journal */
    /* 3: enough room */
    t = result(res, "rc3"), assert_string_equal(t, "0\n"), free(t);
    t = result(res, "vrc3"), assert_string_equal(t, "0\n"), free(t);
    t = result(res, "ls3"), assert_string_equal(t, "m.dsq\n"), free(t);
    /* nothing is left mounted */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "! grep -q ' %s ' /proc/self/mounts", mnt);
    assert_int_equal(system(cmd), 0);
    dsq_test_rmdir(dir);
    free(script), free(res), free(mnt), free(src), free(dir);
}

/* ---- re-encoding recipes and verify ---- */

static cJSON *verify_json(const char *dsq, const char *src, int want_rc) {
    char *out = NULL;
    int rc = src ? dsq_test_run(&out, NULL, "verify '%s' --source '%s' --json", dsq, src)
                 : dsq_test_run(&out, NULL, "verify '%s' --json", dsq);
    assert_int_equal(rc, want_rc);
    cJSON *j = NULL;
    assert_int_equal(dsq_json_parse(out, strlen(out), "verify", &j, NULL), DSQ_OK);
    free(out);
    return j;
}

static cJSON *family(cJSON *j, const char *name) {
    cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(j, "families"))
        if (!strcmp(cJSON_GetObjectItemCaseSensitive(f, "family")->valuestring, name)) return f;
    fail_msg("family %s not reported", name);
    return NULL;
}
static double num(cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k)->valuedouble; }

/* fp8: routed experts FP4 → FP8 128x128 exactly (spec §2.7); everything else byte for byte. */
static void test_fp8_lossless(void **state) {
    char *dir = dsq_test_tmpdir(), *out = dsq_test_join(dir, "fp8.dsq"), *src = golden_model();
    convert_lib(src, out, "fp8", 2);
    cJSON *j = verify_json(out, src, 0);
    cJSON *src_j = cJSON_GetObjectItemCaseSensitive(j, "source");
    assert_int_equal(num(src_j, "missing"), 0);
    assert_int_equal(num(src_j, "changed"), 0);
    cJSON *ex = family(j, "routed_experts");
    assert_int_equal(num(ex, "sources"), 5 * 3 * 8);
    assert_int_equal(num(ex, "reencoded"), 120);
    assert_true(num(ex, "max_abs") == 0.0); /* identical dequantized values */
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(ex, "encodings")->valuestring, "fp8-128x128");
    assert_int_equal(num(family(j, "attention"), "identical"), num(family(j, "attention"), "sources"));
    cJSON_Delete(j);
    dsq_ctr_reader *r = NULL;
    assert_int_equal(dsq_ctr_reader_open(out, NULL, &r, NULL), DSQ_OK);
    const dsq_ctr_tensor *t = dsq_ctr_find(r, "layers.2.ffn.experts.w2.weight");
    assert_int_equal(t->encoding, DSQ_ENC_FP8_B128);
    assert_int_equal(t->shape[0], 8);
    assert_int_equal(t->parts[1].bytes, 8 * 2 * 1); /* [8, ceil(256/128), ceil(128/128)] UE8M0 */
    dsq_ctr_reader_close(r);
    dsq_test_rmdir(dir);
    free(out);
    free(src);
    free(dir);
}

/* The two FP8 variants from the release's FP8 128x128: attention → fp8-1x128-f32 and shared experts →
 * fp8-1x128 are exact (codes copied, block scales replicated per row); the MTP projections →
 * fp8-row-e8m0 / fp8-row re-quantize per row.  verify --source passes and reports each encoding. */
static void test_fp8_variants(void **state) {
    char *dir = dsq_test_tmpdir(), *out = dsq_test_join(dir, "v.dsq"), *src = golden_model();
    assert_int_equal(dsq_test_run(NULL, NULL,
                                  "convert '%s' '%s' --recipe release --override '*.attn.w*=fp8-1x128-f32' "
                                  "--override '*.shared_experts.*=fp8-1x128' --override 'mtp.*.e_proj.weight=fp8-row-e8m0' "
                                  "--override 'mtp.*.h_proj.weight=fp8-row'",
                                  src, out),
                     0);
    cJSON *j = verify_json(out, src, 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok")));
    cJSON *at = family(j, "attention"), *sh = family(j, "shared_experts"), *mtp = family(j, "mtp");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(at, "encodings")->valuestring, "f32,fp8-1x128-f32");
    assert_int_equal(num(at, "reencoded"), 25);
    assert_true(num(at, "max_abs") == 0.0); /* identical dequantized values */
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(sh, "encodings")->valuestring, "fp8-1x128");
    assert_int_equal(num(sh, "reencoded"), 15);
    assert_true(num(sh, "max_abs") == 0.0);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(mtp, "encodings")->valuestring, "fp8-row-e8m0,fp8-row");
    assert_int_equal(num(mtp, "reencoded"), 2);
    assert_true(num(mtp, "max_rel_rms") > 0.001 && num(mtp, "max_rel_rms") < 0.04); /* e4m3 re-rounding */
    assert_true(num(mtp, "min_cosine") > 0.999);
    cJSON_Delete(j);
    dsq_ctr_reader *r = NULL;
    assert_int_equal(dsq_ctr_reader_open(out, NULL, &r, NULL), DSQ_OK);
    const dsq_ctr_tensor *t = dsq_ctr_find(r, "layers.0.attn.wq_a.weight");
    assert_int_equal(t->encoding, DSQ_ENC_FP8_R128_F32);
    assert_int_equal(t->block_rows, 1);
    assert_int_equal(t->block_cols, 128);
    assert_int_equal(t->parts[1].bytes, t->shape[0] * dsq_ceil_div(t->shape[1], 128) * 4);
    t = dsq_ctr_find(r, "mtp.0.e_proj.weight");
    assert_int_equal(t->encoding, DSQ_ENC_FP8_ROW_E8M0);
    assert_int_equal(t->block_cols, 0);
    assert_int_equal(t->parts[1].bytes, t->shape[0]);
    dsq_ctr_reader_close(r);
    dsq_test_rmdir(dir);
    free(out);
    free(src);
    free(dir);
}

/* int4 (and a mix of every encoding): bounded error, same bytes whatever the thread count, and an
 * interrupted int4 conversion resumes to the same bytes. */
static void test_int4_and_mixed(void **state) {
    char *dir = dsq_test_tmpdir(), *src = golden_model();
    char *a = dsq_test_join(dir, "a.dsq"), *b = dsq_test_join(dir, "b.dsq");
    convert_lib(src, a, "int4", 1);
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe int4 --threads 2", src, b), 0);
    /* the CLI records other provenance arguments: compare the tensor bytes */
    dsq_ctr_reader *ra = NULL, *rb = NULL;
    assert_int_equal(dsq_ctr_reader_open(a, NULL, &ra, NULL), DSQ_OK);
    assert_int_equal(dsq_ctr_reader_open(b, NULL, &rb, NULL), DSQ_OK);
    for (size_t i = 0; i < dsq_ctr_count(ra); i++)
        for (int p = 0; p < dsq_ctr_at(ra, i)->n_parts; p++)
            assert_true(dsq_ctr_at(ra, i)->parts[p].xxh3 == dsq_ctr_at(rb, i)->parts[p].xxh3);
    dsq_ctr_reader_close(ra);
    dsq_ctr_reader_close(rb);
    cJSON *j = verify_json(a, src, 0);
    cJSON *ex = family(j, "routed_experts");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(ex, "encodings")->valuestring, "int4-g32");
    assert_true(num(ex, "max_rel_rms") > 0.01 && num(ex, "max_rel_rms") < 0.15); /* 4-bit on FP4 data */
    assert_true(num(ex, "min_cosine") > 0.99);
    cJSON_Delete(j);
    /* resume on the re-encoding path */
    char *c = dsq_test_join(dir, "c.dsq");
    int rc = dsq_test_run(NULL, NULL, "version >/dev/null; DSQ_CONVERT_TEST_SIGNAL=50:9 '%s' convert '%s' '%s' --recipe int4 --threads 2",
                          dsq_test_bin(), src, c);
    assert_int_equal(rc, 137);
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe int4 --resume", src, c), 0);
    assert_true(same_file(b, c));
    /* every encoding at once */
    char *m = dsq_test_join(dir, "mixed.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL,
                                  "convert '%s' '%s' --recipe release --override 'layers.0.ffn.experts.*=nvfp4' "
                                  "--override 'layers.1.ffn.experts.*=int2-g32-asym' --override 'layers.2.ffn.experts.*=int4-g64-asym' "
                                  "--override 'layers.3.ffn.experts.*=int8-row' --override 'mtp.*.experts.*=fp8-1x128' "
                                  "--override '*.attn.wq_b.weight=fp8-row' --override '*.shared_experts.*=int8-g128' "
                                  "--override 'embed.weight=f32' --override '*.wo_b.weight=fp8-128x128-f32' --override '*.wo_a.weight=f16' "
                                  "--override '*.compressor.w*=mxfp4' --threads 2",
                                  src, m),
                     0);
    j = verify_json(m, src, 0);
    ex = family(j, "routed_experts");
    assert_int_equal(num(ex, "reencoded"), 120);
    assert_true(num(ex, "min_cosine") > 0.9); /* int2 is the worst */
    assert_true(num(family(j, "embed_head"), "max_abs") == 0.0); /* bf16 → f32 is exact */
    cJSON_Delete(j);
    free(m);
    free(c);
    dsq_test_rmdir(dir);
    free(a);
    free(b);
    free(src);
    free(dir);
}

/* verify catches bit flips in the container and changes in the source checkpoint. */
static void test_verify_detects(void **state) {
    char *dir = dsq_test_tmpdir(), *golden = golden_model();
    char *model = dsq_test_join(dir, "model"), *out = dsq_test_join(dir, "m.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "version >/dev/null; mkdir '%s' && cp '%s'/* '%s/'", model, golden, model), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", model, out), 0);
    cJSON *j = verify_json(out, model, 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "ok")));
    cJSON_Delete(j);
    /* one bit of one expert flipped in the container */
    dsq_ctr_reader *r = NULL;
    assert_int_equal(dsq_ctr_reader_open(out, NULL, &r, NULL), DSQ_OK);
    uint64_t off = dsq_ctr_find(r, "layers.1.ffn.experts.w3.weight")->parts[0].offset + 777;
    dsq_ctr_reader_close(r);
    size_t n;
    char *bytes = dsq_test_read(out, &n);
    bytes[off] ^= 4;
    char *bad = dsq_test_join(dir, "bad.dsq");
    dsq_test_write(bad, bytes, n);
    free(bytes);
    char *err = NULL;
    assert_int_equal(dsq_test_run(NULL, &err, "verify '%s'", bad), 1);
    assert_non_null(strstr(err, "layers.1.ffn.experts.w3.weight"));
    assert_non_null(strstr(err, "checksum mismatch"));
    free(err);
    j = verify_json(bad, NULL, 1);
    assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "checksums_ok")));
    cJSON_Delete(j);
    /* the source changed after the conversion: the recorded source checksums tell */
    dsq_st *st = NULL;
    char *mf = dsq_test_join(model, "model.safetensors");
    assert_int_equal(dsq_st_open(mf, NULL, &st, NULL), DSQ_OK);
    uint64_t soff = dsq_st_find(st, "layers.0.attn.wq_b.weight")->file_offset + 5;
    dsq_st_close(st);
    bytes = dsq_test_read(mf, &n);
    bytes[soff] ^= 1;
    unlink(mf);
    dsq_test_write(mf, bytes, n);
    free(bytes);
    assert_int_equal(dsq_test_run(NULL, &err, "verify '%s' --source '%s'", out, model), 1);
    assert_non_null(strstr(err, "layers.0.attn.wq_b.weight changed since the conversion"));
    free(err);
    assert_int_equal(dsq_test_run(NULL, NULL, "verify"), 2);
    assert_int_equal(dsq_test_run(NULL, NULL, "verify --help"), 0);
    free(mf);
    free(bad);
    dsq_test_rmdir(dir);
    free(model);
    free(out);
    free(golden);
    free(dir);
}

/* Set byte `at` of checkpoint tensor `name` in DIR/model.safetensors (rewritten in place). */
static void poke_source(const char *model, const char *name, uint64_t at, uint8_t v) {
    char *mf = dsq_test_join(model, "model.safetensors");
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(mf, NULL, &st, NULL), DSQ_OK);
    uint64_t off = dsq_st_find(st, name)->file_offset + at;
    dsq_st_close(st);
    size_t n;
    char *bytes = dsq_test_read(mf, &n);
    bytes[off] = (char)v;
    unlink(mf);
    dsq_test_write(mf, bytes, n);
    free(bytes);
    free(mf);
}

/* Non-finite data is refused everywhere by default: the release recipe's byte copies (e4m3 NaN code,
 * UE8M0 255 scale), verify and export of a container that holds them (converted with the override).
 * Before: all of them stored or passed the NaN silently. */
static void test_nonfinite_refused(void **state) {
    char *dir = dsq_test_tmpdir(), *golden = golden_model();
    char *model = dsq_test_join(dir, "model"), *out = dsq_test_join(dir, "m.dsq"), *ex = dsq_test_join(dir, "ex");
    struct {
        const char *tensor;
        uint64_t at;
        uint8_t v;
    } cases[] = {
        {"layers.0.attn.wq_b.weight", 5, 0x7f},          /* FP8 weight: e4m3 NaN code */
        {"layers.1.ffn.experts.2.w1.scale", 100, 0xff},  /* MXFP4 expert: UE8M0 NaN scale */
        {"layers.3.attn.wo_b.scale", 1, 0xff},           /* FP8 block scale */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(dsq_test_run(NULL, NULL, "version >/dev/null; rm -rf '%s' '%s' '%s'; mkdir '%s' && cp '%s'/* '%s/'",
                                      model, ex, out, model, golden, model),
                         0);
        poke_source(model, cases[i].tensor, cases[i].at, cases[i].v);
        char *err = NULL;
        assert_int_equal(dsq_test_run(NULL, &err, "convert '%s' '%s' --recipe release --overwrite", model, out), 1);
        printf("  convert: %s", err);
        assert_non_null(strstr(err, cases[i].tensor));
        assert_non_null(strstr(err, "NaN or infinite"));
        assert_false(dsq_path_exists(out));
        free(err);
        assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release --allow-nonfinite --overwrite", model,
                                      out),
                         0);
        assert_int_equal(dsq_test_run(NULL, &err, "verify '%s'", out), 1);
        printf("  verify: %s", err);
        assert_non_null(strstr(err, "NaN or infinite"));
        free(err);
        cJSON *j = verify_json(out, NULL, 1);
        assert_false(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "values_ok")));
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "checksums_ok")));
        cJSON_Delete(j);
        assert_int_equal(dsq_test_run(NULL, NULL, "verify '%s' --allow-nonfinite", out), 0);
        assert_int_equal(dsq_test_run(NULL, &err, "export '%s' '%s'", out, ex), 1);
        printf("  export: %s", err);
        assert_non_null(strstr(err, "NaN or infinite"));
        free(err);
        assert_int_equal(dsq_test_run(NULL, NULL, "export '%s' '%s' --allow-nonfinite --overwrite", out, ex), 0);
    }
    dsq_test_rmdir(dir);
    free(model), free(out), free(ex), free(golden), free(dir);
}

/* verify checks what the readers need: a container without model.config (inspect and eval refuse it),
 * files.config.json disagreeing with model.config, stored names that disagree with their source
 * records (spec §5.5).  Crafted by rewriting a real container with one edit (valid checksums).
 * Before: "metadata ok" on all of them. */
static void test_verify_readers_need(void **state) {
    char *dir = dsq_test_tmpdir(), *golden = golden_model();
    char *out = dsq_test_join(dir, "m.dsq"), *bad = dsq_test_join(dir, "bad.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", golden, out), 0);
    ctr_edit none = {0};
    ctr_rewrite(out, bad, &none);
    assert_int_equal(dsq_test_run(NULL, NULL, "verify '%s'", bad), 0); /* the rewriter itself is sound */
    dsq_ctr_reader *r = NULL;
    assert_int_equal(dsq_ctr_reader_open(out, NULL, &r, NULL), DSQ_OK);
    size_t ml;
    const char *mt = dsq_ctr_metadata(r, &ml);
    cJSON *meta = cJSON_ParseWithLength(mt, ml);
    dsq_ctr_reader_close(r);
    /* no model.config */
    cJSON *m1 = cJSON_Duplicate(meta, true);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(m1, "model"), "config");
    char *t1 = cJSON_PrintUnformatted(m1);
    /* files.config.json says something else */
    cJSON *m2 = cJSON_Duplicate(meta, true);
    cJSON *files = cJSON_GetObjectItem(m2, "files");
    cJSON *cj = cJSON_Parse(cJSON_GetObjectItem(files, "config.json")->valuestring);
    cJSON_ReplaceItemInObject(cj, "rope_theta", cJSON_CreateNumber(12345));
    char *cjt = cJSON_PrintUnformatted(cj);
    cJSON_ReplaceItemInObject(files, "config.json", cJSON_CreateString(cjt));
    char *t2 = cJSON_PrintUnformatted(m2);
    struct {
        ctr_edit e;
        const char *want;
    } cases[] = {
        {{.meta = t1}, "model.config"},
        {{.meta = t2}, "disagree"},
        {{.rename_from = "layers.0.attn.wq_a.weight", .rename_to = "layers.0.attn.wq_x.weight"},
         "stored name disagrees with its source record layers.0.attn.wq_a.weight"},
        {{.rename_from = "layers.1.ffn.experts.w1.weight", .rename_to = "layers.1.ffn.experts.w9.weight"},
         "tensor layers.1.ffn.experts.w9.weight: stored name disagrees"},
        {{.rename_from = "layers.1.attn.compressor.wkv_wgate.weight", .rename_to = "layers.1.attn.compressor.wq.weight"},
         "tensor layers.1.attn.compressor.wq.weight: stored name disagrees"},
        {{.src_from = "layers.2.attn.wo_b.weight", .src_to = "layers.2.attn.wo_c.weight"},
         "tensor layers.2.attn.wo_b.weight: stored name disagrees with its source record layers.2.attn.wo_c.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ctr_rewrite(out, bad, &cases[i].e);
        char *err = NULL, *o = NULL;
        assert_int_equal(dsq_test_run(&o, &err, "verify '%s'", bad), 1);
        printf("  case %zu: %s", i, err);
        assert_non_null(strstr(err, cases[i].want));
        assert_non_null(strstr(o, "BAD"));
        free(err), free(o);
    }
    /* what the readers say about the first case */
    ctr_rewrite(out, bad, &cases[0].e);
    assert_int_equal(dsq_test_run(NULL, NULL, "inspect '%s'", bad), 1);
    free(t1), free(t2), free(cjt);
    cJSON_Delete(m1), cJSON_Delete(m2), cJSON_Delete(cj), cJSON_Delete(meta);
    dsq_test_rmdir(dir);
    free(out), free(bad), free(golden), free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonfinite_refused), cmocka_unit_test(test_verify_readers_need),
        cmocka_unit_test(test_recipes),      cmocka_unit_test(test_release_golden),
        cmocka_unit_test(test_deterministic), cmocka_unit_test(test_chunking_invariant),
        cmocka_unit_test(test_cli_dry_run),
        cmocka_unit_test(test_cli_interrupt_resume), cmocka_unit_test(test_cli_ulimit),
        cmocka_unit_test(test_write_failure), cmocka_unit_test(test_bad_source),
        cmocka_unit_test(test_enospc_tmpfs),
        cmocka_unit_test(test_fp8_lossless),  cmocka_unit_test(test_fp8_variants),
        cmocka_unit_test(test_int4_and_mixed),
        cmocka_unit_test(test_verify_detects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
