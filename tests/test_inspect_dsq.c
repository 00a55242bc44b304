/* `dsq inspect FILE.dsq`: the golden model converted with int4, described from the container alone:
 * the same geometry, parameters and layer kinds as the checkpoint, the encodings and the declared
 * KV-cache layout; --check resolves every checkpoint weight; a corrupted container is an error. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "dsq.h"
#include "dsq_test.h"

static cJSON *run_json(const char *args_fmt, const char *a) {
    char *out = NULL, *err = NULL;
    int rc = dsq_test_run(&out, &err, args_fmt, a);
    if (rc) fprintf(stderr, "%s", err);
    assert_int_equal(rc, 0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    free(out), free(err);
    return j;
}

static double num(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void test_inspect_container(void **state) {
    char *tmp = dsq_test_tmpdir(), *model = dsq_test_shared_path("golden/v4-tiny/model");
    char *out = dsq_test_join(tmp, "g-int4.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe int4", model, out), 0);
    cJSON *c = run_json("inspect '%s' --json --check --tensors", out);
    cJSON *k = run_json("inspect '%s' --json", model);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "source")->valuestring, "dsq");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "recipe")->valuestring, "int4");
    assert_true(num(c, "params_total") == num(k, "params_total"));
    assert_true(num(c, "params_active") == num(k, "params_active"));
    assert_true(num(c, "kv_bytes_per_token") == num(k, "kv_bytes_per_token"));
    assert_int_equal((int)num(c, "n_layers"), 4);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(c, "layers");
    const char *kinds[] = {"sliding", "CSA", "HCA", "CSA"};
    assert_int_equal(cJSON_GetArraySize(layers), 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(layers, i), "attention")->valuestring,
                            kinds[i]);
    /* the same layers and MTP blocks as the checkpoint's view */
    char *lc = cJSON_PrintUnformatted(layers),
         *lk = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(k, "layers"));
    assert_string_equal(lc, lk);
    free(lc), free(lk);
    lc = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "mtp_layers"));
    lk = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(k, "mtp_layers"));
    assert_string_equal(lc, lk);
    free(lc), free(lk);
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(c, "bytes_by_encoding");
    assert_non_null(cJSON_GetObjectItemCaseSensitive(enc, "int4-g"));
    assert_null(cJSON_GetObjectItemCaseSensitive(enc, "mxfp4"));
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(c, "kv_cache");
    assert_true(cJSON_IsObject(kv));
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(kv, "layers")) == 5);
    const cJSON *chk = cJSON_GetObjectItemCaseSensitive(c, "check");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(chk, "ok")));
    assert_true(num(chk, "weights_checked") > 200);
    assert_true(num(chk, "missing") == 0);
    /* stacked experts appear once per layer and projection */
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(c, "tensor_list");
    int stacks = 0;
    for (const cJSON *t = list->child; t; t = t->next)
        if (strstr(cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring, "ffn.experts.w")) {
            stacks++;
            assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t, "shape")), 3);
        }
    assert_int_equal(stacks, 5 * 3);
    assert_int_equal((int)num(c, "tensors"), cJSON_GetArraySize(list));
    cJSON_Delete(c);
    cJSON_Delete(k);
    /* text form */
    char *so = NULL;
    assert_int_equal(dsq_test_run(&so, NULL, "inspect '%s' --check", out), 0);
    assert_non_null(strstr(so, "declared compact layout"));
    assert_non_null(strstr(so, "check:       ok"));
    free(so);
    /* a truncated container: one error line naming it, exit 1 */
    size_t len;
    char *bytes = dsq_test_read(out, &len);
    char *bad = dsq_test_join(tmp, "bad.dsq");
    dsq_test_write(bad, bytes, len / 2);
    char *se = NULL;
    assert_int_equal(dsq_test_run(NULL, &se, "inspect '%s'", bad), 1);
    assert_non_null(strstr(se, bad));
    free(se), free(bad), free(bytes);
    dsq_test_rmdir(tmp);
    free(tmp), free(model), free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_inspect_container)};
    return cmocka_run_group_tests_name("inspect_dsq", tests, NULL, NULL);
}
