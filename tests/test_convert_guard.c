/* dsq convert under stress (issue #12, part A): a plan that grows its output array while splitting
 * compressor pairs, failed resumes that must keep the resumable work, a second job on the same output,
 * a SIGINT after the last tensor, and a checkpoint with more problems than are worth printing. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dsq_convert.h"
#include "dsq_json.h"
#include "dsq_synth.h"
#include "dsq_test.h"

__attribute__((unused)) static char *golden_model(void) { return dsq_test_shared_path("golden/v4-tiny/model"); }

__attribute__((unused)) static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = dsq_test_read(a, &na), *y = dsq_test_read(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* The golden config with `layers` main layers: the first two sliding-window, the others and the MTP
 * block CSA (two compressor pairs each). */
static void write_csa_config(const char *path, int layers) {
    char *g = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    size_t n;
    char *text = dsq_test_read(g, &n);
    cJSON *c = NULL;
    assert_int_equal(dsq_json_parse(text, n, g, &c, NULL), DSQ_OK);
    cJSON_ReplaceItemInObjectCaseSensitive(c, "num_hidden_layers", cJSON_CreateNumber(layers));
    cJSON *r = cJSON_CreateArray();
    for (int i = 0; i <= layers; i++) cJSON_AddItemToArray(r, cJSON_CreateNumber(i < 2 ? 0 : 4)); /* + MTP */
    cJSON_ReplaceItemInObjectCaseSensitive(c, "compress_ratios", r);
    char *out = cJSON_PrintUnformatted(c);
    dsq_test_write(path, out, strlen(out));
    cJSON_free(out);
    cJSON_Delete(c);
    free(text);
    free(g);
}

/* Seven layers (two sliding, five CSA) + a CSA MTP block plan 254 outputs (the array holds 256); a
 * recipe that stores every compressor wgate differently from its wkv splits the 12 fused pairs into 24
 * tensors, so the array is
 * reallocated in the middle of the splitting.  The split used to read the moved element's name
 * through the old pointer (a use-after-free that ASan reports); every pair must come out as two
 * tensors with the right names. */
static void test_plan_split_realloc(void **state) {
    char *dir = dsq_test_tmpdir(), *cfg = dsq_test_join(dir, "config.json"), *model = dsq_test_join(dir, "model");
    write_csa_config(cfg, 7);
    dsq_err err = DSQ_ERR_INIT;
    dsq_synth_options so = {.threads = 1};
    assert_int_equal(dsq_synth_write(cfg, model, &so, NULL, &err), DSQ_OK);
    dsq_recipe *r = NULL;
    assert_int_equal(dsq_recipe_load("release", &r, &err), DSQ_OK);
    char *out = dsq_test_join(dir, "m.dsq");
    dsq_convert_options o = {.src = model, .out = out, .recipe = r};
    dsq_convert_plan *p = NULL;
    assert_int_equal(dsq_convert_plan_make(&o, &p, &err), DSQ_OK);
    assert_int_equal(dsq_convert_plan_count(p), 254); /* fused: fits the first array */
    dsq_convert_plan_free(p);
    assert_int_equal(dsq_recipe_override(r, "*compressor.wgate.weight=f32", &err), DSQ_OK);
    assert_int_equal(dsq_convert_plan_make(&o, &p, &err), DSQ_OK);
    assert_int_equal(dsq_convert_plan_count(p), 254 + 12);
    size_t wkv = 0, wgate = 0, fused = 0;
    for (size_t i = 0; i < dsq_convert_plan_count(p); i++) {
        const char *nm = dsq_convert_plan_item(p, i)->name;
        if (strstr(nm, "compressor.wkv.weight")) wkv++;
        if (strstr(nm, "compressor.wgate.weight")) {
            wgate++;
            assert_int_equal(dsq_convert_plan_item(p, i)->dst_enc, DSQ_ENC_F32);
        }
        if (strstr(nm, "wkv_wgate")) fused++;
    }
    assert_int_equal(wkv, 12);
    assert_int_equal(wgate, 12);
    assert_int_equal(fused, 0);
    dsq_convert_plan_free(p);
    dsq_recipe_free(r);
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(out);
    free(cfg);
    free(model);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_split_realloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
