/* dsq export: the release recipe gives back every source tensor byte for byte (single file and
 * sharded), config.json verbatim; fp8 and int4 exports describe their encodings and convert again. */
#include <stdlib.h>
#include <string.h>

#include "dsq_container.h"
#include "dsq_json.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = dsq_test_read(a, &na), *y = dsq_test_read(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* Every tensor of `want` is in `got` with the same dtype, shape and bytes, and nothing else. */
static void same_checkpoint(const char *want, const char *got) {
    dsq_st *a = NULL, *b = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_open(want, NULL, &a, &err), DSQ_OK);
    assert_int_equal(dsq_st_open(got, NULL, &b, &err), DSQ_OK);
    assert_int_equal(dsq_st_count(a), dsq_st_count(b));
    for (size_t i = 0; i < dsq_st_count(a); i++) {
        const dsq_st_tensor *x = dsq_st_at(a, i), *y = dsq_st_find(b, x->name);
        if (!y) fail_msg("%s missing from the export", x->name);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->rank, y->rank);
        for (int d = 0; d < x->rank; d++) assert_int_equal(x->shape[d], y->shape[d]);
        assert_int_equal(x->n_bytes, y->n_bytes);
        assert_memory_equal(x->data, y->data, x->n_bytes);
    }
    dsq_st_close(a);
    dsq_st_close(b);
}

/* Same part checksums, tensor by tensor. */
static void same_tensors(const char *a, const char *b) {
    dsq_ctr_reader *x = NULL, *y = NULL;
    assert_int_equal(dsq_ctr_reader_open(a, NULL, &x, NULL), DSQ_OK);
    assert_int_equal(dsq_ctr_reader_open(b, NULL, &y, NULL), DSQ_OK);
    assert_int_equal(dsq_ctr_count(x), dsq_ctr_count(y));
    for (size_t i = 0; i < dsq_ctr_count(x); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(x, i), *u = dsq_ctr_find(y, t->name);
        assert_non_null(u);
        assert_int_equal(t->encoding, u->encoding);
        for (int p = 0; p < t->n_parts; p++) assert_true(t->parts[p].xxh3 == u->parts[p].xxh3);
    }
    dsq_ctr_reader_close(x);
    dsq_ctr_reader_close(y);
}

static void test_release_round_trip(void **state) {
    char *dir = dsq_test_tmpdir(), *src = dsq_test_shared_path("golden/v4-tiny/model");
    char *dsq = dsq_test_join(dir, "m.dsq"), *one = dsq_test_join(dir, "one"), *many = dsq_test_join(dir, "many");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", src, dsq), 0);
    char *out = NULL;
    assert_int_equal(dsq_test_run(&out, NULL, "export '%s' '%s' --json", dsq, one), 0);
    assert_non_null(strstr(out, "\"config_verbatim\": true"));
    free(out);
    assert_int_equal(dsq_test_run(NULL, NULL, "export '%s' '%s' --format safetensors --shard-size 1M", dsq, many), 0);
    same_checkpoint(src, one);
    same_checkpoint(src, many);
    char *c0 = dsq_test_join(src, "config.json"), *c1 = dsq_test_join(one, "config.json"), *c2 = dsq_test_join(many, "config.json");
    assert_true(same_file(c0, c1));
    assert_true(same_file(c0, c2));
    /* the sharded export has an index naming every tensor's shard */
    char *ip = dsq_test_join(many, "model.safetensors.index.json");
    size_t n;
    char *itext = dsq_test_read(ip, &n);
    cJSON *idx = NULL;
    assert_int_equal(dsq_json_parse(itext, n, "index", &idx, NULL), DSQ_OK);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(idx, "weight_map")) > 400);
    cJSON_Delete(idx);
    free(itext);
    /* converting the export again gives the same tensors */
    char *again = dsq_test_join(dir, "again.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", many, again), 0);
    same_tensors(dsq, again);
    /* an existing checkpoint is not replaced without --overwrite */
    char *e = NULL;
    assert_int_equal(dsq_test_run(NULL, &e, "export '%s' '%s'", dsq, one), 1);
    assert_non_null(strstr(e, "--overwrite"));
    free(e);
    assert_int_equal(dsq_test_run(NULL, NULL, "export '%s' '%s' --overwrite", dsq, one), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "export '%s' '%s' --format gguf", dsq, one), 2);
    free(again);
    free(ip);
    free(c0);
    free(c1);
    free(c2);
    dsq_test_rmdir(dir);
    free(dsq);
    free(one);
    free(many);
    free(src);
    free(dir);
}

static void test_fp8_and_int4_exports(void **state) {
    char *dir = dsq_test_tmpdir(), *src = dsq_test_shared_path("golden/v4-tiny/model");
    char *fp8 = dsq_test_join(dir, "fp8.dsq"), *ex = dsq_test_join(dir, "ex"), *back = dsq_test_join(dir, "back.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe fp8", src, fp8), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "export '%s' '%s'", fp8, ex), 0);
    /* a Base-like checkpoint: FP8 experts with UE8M0 128x128 scales, expert_dtype "fp8" */
    char *mp = dsq_test_join(ex, "model.safetensors"), *cp = dsq_test_join(ex, "config.json");
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(mp, NULL, &st, NULL), DSQ_OK);
    const dsq_st_tensor *w = dsq_st_find(st, "layers.1.ffn.experts.5.w1.weight"), *s = dsq_st_find(st, "layers.1.ffn.experts.5.w1.scale");
    assert_int_equal(w->dtype, DSQ_DTYPE_F8_E4M3);
    assert_int_equal(w->shape[0], 128);
    assert_int_equal(w->shape[1], 256);
    assert_int_equal(s->dtype, DSQ_DTYPE_F8_E8M0);
    assert_int_equal(s->shape[0], 1);
    assert_int_equal(s->shape[1], 2);
    dsq_st_close(st);
    size_t n;
    char *cfg = dsq_test_read(cp, &n);
    assert_non_null(strstr(cfg, "\"expert_dtype\":\t\"fp8\""));
    free(cfg);
    /* and it converts again (inventory of an FP8-expert release) to the same tensors */
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", ex, back), 0);
    same_tensors(fp8, back);
    /* int4: codes + scales, the encoding named in __metadata__ and config */
    char *i4 = dsq_test_join(dir, "i4.dsq"), *ex4 = dsq_test_join(dir, "ex4");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe int4", src, i4), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "export '%s' '%s'", i4, ex4), 0);
    char *mp4 = dsq_test_join(ex4, "model.safetensors"), *cp4 = dsq_test_join(ex4, "config.json");
    assert_int_equal(dsq_st_open(mp4, NULL, &st, NULL), DSQ_OK);
    w = dsq_st_find(st, "mtp.0.ffn.experts.2.w2.weight");
    s = dsq_st_find(st, "mtp.0.ffn.experts.2.w2.scale");
    assert_int_equal(w->dtype, DSQ_DTYPE_U8);
    assert_int_equal(w->shape[0], 256);
    assert_int_equal(w->shape[1], 64); /* 128 int4 codes */
    assert_int_equal(s->dtype, DSQ_DTYPE_F16);
    assert_int_equal(s->shape[1], 4); /* 128 / 32 */
    assert_string_equal(dsq_st_metadata(st, "dsq.encoding.mtp.0.ffn.experts.2.w2.weight"), "int4-g32");
    assert_null(dsq_st_metadata(st, "dsq.encoding.layers.0.attn.wq_a.weight"));
    dsq_st_close(st);
    cfg = dsq_test_read(cp4, &n);
    assert_non_null(strstr(cfg, "dsq-export-1"));
    assert_non_null(strstr(cfg, "int4-g32"));
    free(cfg);
    free(mp4);
    free(cp4);
    free(i4);
    free(ex4);
    free(mp);
    free(cp);
    dsq_test_rmdir(dir);
    free(fp8);
    free(ex);
    free(back);
    free(src);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_release_round_trip),
        cmocka_unit_test(test_fp8_and_int4_exports),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
