/* dsq synth and dsq inspect, through the CLI (DSQ_BIN) and the library: synth → inspect --check round
 * trips (tiny config, a real-shaped V4-Flash derivative), determinism across seeds / threads / shard
 * layouts, the spec §2.6 quantization rule on the written bytes, inspect's numbers on the golden model
 * and the released configs, error paths and interruption. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_inventory.h"
#include "dsq_numeric.h"
#include "dsq_safetensors.h"
#include "dsq_synth.h"
#include "dsq_test.h"



/* Run the CLI, expect exit status `rc`; returns stdout (caller frees). */
static char *run_ok(int rc, const char *fmt, const char *a, const char *b) {
    char args[2048];
    snprintf(args, sizeof args, fmt, a, b);
    char *out = NULL, *err = NULL;
    int got = dsq_test_run(&out, &err, "%s", args);
    if (got != rc)
        fprintf(stderr, "dsq %s: exit %d (want %d)\nstdout: %.2000s\nstderr: %.2000s\n", args, got, rc, out, err);
    assert_int_equal(got, rc);
    free(err);
    return out;
}

static cJSON *run_json(const char *fmt, const char *a, const char *b) {
    char *out = run_ok(0, fmt, a, b);
    cJSON *j = cJSON_Parse(out);
    if (!j) fprintf(stderr, "not JSON: %.2000s\n", out);
    assert_non_null(j);
    free(out);
    return j;
}

static double num(const cJSON *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(v)) fprintf(stderr, "no number \"%s\"\n", key);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static void expect_layers(const cJSON *j, const char *key, int n, const char *const *kinds, const int *ratios,
                          const char *const *routing) {
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_true(cJSON_IsArray(ls));
    assert_int_equal(cJSON_GetArraySize(ls), n);
    for (int i = 0; i < n; i++) {
        const cJSON *l = cJSON_GetArrayItem(ls, i);
        assert_int_equal((int)num(l, "index"), i);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(l, "attention")->valuestring, kinds[i]);
        assert_int_equal((int)num(l, "compress_ratio"), ratios[i]);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(l, "routing")->valuestring, routing[i]);
    }
}

static char *path2(const char *a, const char *b) { return dsq_test_join(a, b); }

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = dsq_test_read(a, &na), *y = dsq_test_read(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* ---- encoders --------------------------------------------------------------------------------- */

/* synth's fast encoders equal the reference ones of dsq_numeric.h on a sweep of every 97th f32 bit
 * pattern (both signs, all exponents, NaN/Inf) and on every tie point of both grids. */
static void test_fast_encoders(void **state) {
    const uint32_t step = dsq_test_asan() ? 9973u : 97u;
    for (uint64_t u = 0; u <= 0xffffffffull; u += step) {
        float x = dsq_bits_f32((uint32_t)u);
        if (dsq__synth_e4m3(x) != dsq_e4m3_from_f32(x)) fail_msg("e4m3 %08x", (unsigned)u);
        if (dsq__synth_e2m1(x) != dsq_e2m1_from_f32(x)) fail_msg("e2m1 %08x", (unsigned)u);
    }
    for (int c = 0; c < 0x7e; c++) { /* midpoints between neighbouring e4m3 codes, and the codes */
        float lo = dsq_e4m3_to_f32((uint8_t)c), hi = dsq_e4m3_to_f32((uint8_t)(c + 1));
        float xs[] = {lo, (lo + hi) / 2, -(lo + hi) / 2, nextafterf((lo + hi) / 2, 0), nextafterf((lo + hi) / 2, 1e9f)};
        for (size_t k = 0; k < sizeof xs / sizeof xs[0]; k++)
            assert_int_equal(dsq__synth_e4m3(xs[k]), dsq_e4m3_from_f32(xs[k]));
    }
    const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f, 7.0f, 1e9f, 0.0f};
    for (size_t k = 0; k < sizeof ties / sizeof ties[0]; k++) {
        assert_int_equal(dsq__synth_e2m1(ties[k]), dsq_e2m1_from_f32(ties[k]));
        assert_int_equal(dsq__synth_e2m1(-ties[k]), dsq_e2m1_from_f32(-ties[k]));
    }
    assert_int_equal(dsq__synth_e4m3(-0.0f), 0x80);
    assert_int_equal(dsq__synth_e4m3(1e9f), 0x7e);
    assert_int_equal(dsq__synth_e4m3(NAN), 0x7f);
}

/* ---- quantization rule and value health on the written bytes ------------------------------------ */

/* Every 128x128 FP8 block: max |code value| in [224, 448] (s = pow2ceil(amax/448), spec §2.6). */
static void check_fp8_blocks(const dsq_st_tensor *w, const dsq_st_tensor *s) {
    uint64_t N = w->shape[0], K = w->shape[1], bk = s->shape[1];
    const uint8_t *q = w->data, *sc = s->data;
    assert_int_equal(s->shape[0], dsq_ceil_div(N, 128));
    assert_int_equal(bk, dsq_ceil_div(K, 128));
    for (uint64_t b = 0; b < s->shape[0]; b++)
        for (uint64_t c = 0; c < bk; c++) {
            float m = 0;
            for (uint64_t r = b * 128; r < N && r < b * 128 + 128; r++)
                for (uint64_t k = c * 128; k < K && k < c * 128 + 128; k++)
                    m = fmaxf(m, fabsf(dsq_e4m3_to_f32(q[r * K + k])));
            if (!(m >= 224 && m <= 448))
                fail_msg("%s block (%llu, %llu): max code %g", w->name, (unsigned long long)b, (unsigned long long)c,
                         m);
            assert_int_not_equal(sc[b * bk + c], 0xff);
        }
}

/* Every 1x32 FP4 group: max |code value| in [3, 6]. Returns the std of the dequantized values. */
static double check_fp4_groups(const dsq_st_tensor *w, const dsq_st_tensor *s) {
    uint64_t N = w->shape[0], Kp = w->shape[1], G = Kp * 2 / 32;
    const uint8_t *q = w->data, *sc = s->data;
    assert_int_equal(s->shape[0], N);
    assert_int_equal(s->shape[1], G);
    double sum2 = 0;
    for (uint64_t r = 0; r < N; r++)
        for (uint64_t g = 0; g < G; g++) {
            float m = 0, scale = dsq_e8m0_to_f32(sc[r * G + g]);
            for (int j = 0; j < 16; j++) {
                uint8_t b = q[r * Kp + g * 16 + (uint64_t)j];
                float lo = dsq_e2m1_to_f32(b & 15), hi = dsq_e2m1_to_f32(b >> 4);
                m = fmaxf(m, fmaxf(fabsf(lo), fabsf(hi)));
                sum2 += (double)(lo * scale) * (lo * scale) + (double)(hi * scale) * (hi * scale);
            }
            if (!(m >= 3 && m <= 6))
                fail_msg("%s group (%llu, %llu): max code %g", w->name, (unsigned long long)r, (unsigned long long)g,
                         m);
        }
    return sqrt(sum2 / (double)(N * Kp * 2));
}

/* Element i of an unaligned view (safetensors data offsets carry no alignment). */
static float f32_at(const void *p, uint64_t i) {
    float f;
    memcpy(&f, (const uint8_t *)p + 4 * i, 4);
    return f;
}
static int64_t i64_at(const void *p, uint64_t i) {
    int64_t v;
    memcpy(&v, (const uint8_t *)p + 8 * i, 8);
    return v;
}
static uint16_t u16_at(const void *p, uint64_t i) {
    uint16_t v;
    memcpy(&v, (const uint8_t *)p + 2 * i, 2);
    return v;
}

static double std_of(const dsq_st_tensor *t, double *mean_out) {
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < t->n_elements; i++) {
        double v;
        if (t->dtype == DSQ_DTYPE_BF16)
            v = dsq_bf16_to_f32(u16_at(t->data, i));
        else
            v = f32_at(t->data, i);
        s += v;
        s2 += v * v;
    }
    double m = s / (double)t->n_elements;
    if (mean_out) *mean_out = m;
    return sqrt(s2 / (double)t->n_elements - m * m);
}

static void check_values(const char *dir) {
    dsq_st *st = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_open(dir, NULL, &st, &err), DSQ_OK);
    for (size_t i = 0; i < dsq_st_count(st); i++) {
        const dsq_st_tensor *w = dsq_st_at(st, i);
        size_t n = strlen(w->name);
        if (n < 7 || strcmp(w->name + n - 7, ".weight")) continue;
        char sname[256];
        snprintf(sname, sizeof sname, "%.*s.scale", (int)(n - 7), w->name);
        const dsq_st_tensor *s = dsq_st_find(st, sname);
        if (w->dtype == DSQ_DTYPE_F8_E4M3) check_fp8_blocks(w, s);
        if (w->dtype == DSQ_DTYPE_I8) {
            double sd = check_fp4_groups(w, s), want = 1 / sqrt((double)w->shape[1] * 2);
            assert_true(sd > 0.9 * want && sd < 1.1 * want); /* N(0, 1/fan_in) through FP4 */
        }
    }
    double mean, sd = std_of(dsq_st_find(st, "embed.weight"), &mean);
    assert_true(fabs(mean) < 0.02 && fabs(sd - 1) < 0.02);
    sd = std_of(dsq_st_find(st, "head.weight"), &mean);
    assert_true(fabs(sd * sqrt((double)dsq_st_find(st, "head.weight")->shape[1]) - 1) < 0.03);
    sd = std_of(dsq_st_find(st, "norm.weight"), &mean);
    assert_true(fabs(mean - 1) < 0.01 && sd < 0.03);
    /* hc base: pre sigmoid = 1/hc, post 0, comb diagonal 4 */
    const dsq_st_tensor *b = dsq_st_find(st, "layers.0.hc_attn_base");
    assert_true(fabsf(f32_at(b->data, 0) + logf(3.0f)) < 0.05f);
    assert_true(fabsf(f32_at(b->data, 4)) < 0.05f);
    assert_true(fabsf(f32_at(b->data, 8) - 4.0f) < 0.05f && fabsf(f32_at(b->data, 9)) < 0.05f &&
                fabsf(f32_at(b->data, 13) - 4.0f) < 0.05f);
    /* tid2eid: k distinct ids in [0, E) */
    const dsq_st_tensor *t = dsq_st_find(st, "layers.0.ffn.gate.tid2eid");
    uint64_t k = t->shape[1];
    int64_t E = (int64_t)dsq_st_find(st, "layers.0.ffn.gate.weight")->shape[0];
    for (uint64_t r = 0; r < t->shape[0]; r++)
        for (uint64_t j = 0; j < k; j++) {
            int64_t id = i64_at(t->data, r * k + j);
            assert_true(id >= 0 && id < E);
            for (uint64_t q = 0; q < j; q++) assert_true(id != i64_at(t->data, r * k + q));
        }
    dsq_st_close(st);
    dsq_err_clear(&err);
}

/* ---- round trips ------------------------------------------------------------------------------ */

static void test_tiny_roundtrip(void **state) {
    char *dir = path2(dsq_test_tmp, "tiny");
    cJSON *j = run_json("synth --config samples/configs/v4-tiny.json --out '%s' --seed 7 --json%s", dir, "");
    assert_int_equal((int)num(j, "tensors"), 427);
    assert_int_equal((int)num(j, "shards"), 1);
    assert_int_equal((uint64_t)num(j, "bytes"), 6688686);
    cJSON_Delete(j);
    /* config.json is a verbatim copy */
    char *cfg = path2(dir, "config.json");
    assert_true(same_file(cfg, "samples/configs/v4-tiny.json"));
    free(cfg);
    j = run_json("inspect '%s' --check --json%s", dir, "");
    assert_int_equal((int)num(j, "tensors"), 427);
    assert_int_equal((int)num(j, "n_layers"), 4);
    assert_int_equal((int)num(j, "n_mtp_layers"), 1);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "check"), "ok")));
    assert_true(num(j, "params_total") == num(j, "config_params_total"));
    assert_true(num(j, "params_active") == num(j, "config_params_active"));
    const char *kinds[] = {"sliding", "CSA", "HCA", "CSA"}, *routing[] = {"hash", "score", "score", "score"};
    const int ratios[] = {0, 4, 32, 4};
    expect_layers(j, "layers", 4, kinds, ratios, routing);
    const char *mk[] = {"sliding"}, *mr[] = {"score"};
    const int mratio[] = {0};
    expect_layers(j, "mtp_layers", 1, mk, mratio, mr);
    cJSON_Delete(j);
    check_values(dir);
    free(dir);
}

/* Same seed → same bytes, whatever the thread count or shard layout; another seed → other bytes. */
static void test_determinism(void **state) {
    char *a = path2(dsq_test_tmp, "det-a"), *b = path2(dsq_test_tmp, "det-b"), *c = path2(dsq_test_tmp, "det-c"), *d = path2(dsq_test_tmp, "det-d");
    free(run_ok(0, "synth --config samples/configs/v4-tiny.json --out '%s' --seed 11 --threads 1%s", a, ""));
    free(run_ok(0, "synth --config samples/configs/v4-tiny.json --out '%s' --seed 11 --threads 2%s", b, ""));
    free(run_ok(0, "synth --config samples/configs/v4-tiny.json --out '%s' --seed 12%s", c, ""));
    char *fa = path2(a, "model.safetensors"), *fb = path2(b, "model.safetensors"), *fc = path2(c, "model.safetensors");
    assert_true(same_file(fa, fb));
    assert_false(same_file(fa, fc));
    /* sharded at 1 MiB: several shards + index; every tensor's bytes equal the single-file ones */
    cJSON *j =
        run_json("synth --config samples/configs/v4-tiny.json --out '%s' --seed 11 --shard-size 1M --json%s", d, "");
    int shards = (int)num(j, "shards");
    assert_true(shards >= 6);
    cJSON_Delete(j);
    char *idx = path2(d, DSQ_ST_INDEX_NAME);
    assert_true(dsq_path_exists(idx));
    free(idx);
    j = run_json("inspect '%s' --check --json%s", d, "");
    assert_int_equal((int)num(j, "shards"), shards);
    assert_int_equal((int)num(j, "tensors"), 427);
    cJSON_Delete(j);
    dsq_st *s1 = NULL, *s2 = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_open(a, NULL, &s1, &err), DSQ_OK);
    assert_int_equal(dsq_st_open(d, NULL, &s2, &err), DSQ_OK);
    assert_int_equal(dsq_st_shard_count(s2), (size_t)shards);
    for (size_t i = 0; i < dsq_st_count(s1); i++) {
        const dsq_st_tensor *t1 = dsq_st_at(s1, i), *t2 = dsq_st_find(s2, t1->name);
        assert_non_null(t2);
        assert_int_equal(t1->n_bytes, t2->n_bytes);
        assert_memory_equal(t1->data, t2->data, t1->n_bytes);
    }
    dsq_st_close(s1);
    dsq_st_close(s2);
    /* back to one file with --overwrite: the stale shards and index are removed */
    free(run_ok(0, "synth --config samples/configs/v4-tiny.json --out '%s' --seed 11 --overwrite%s", d, ""));
    char *fd = path2(d, "model.safetensors");
    assert_true(same_file(fa, fd));
    idx = path2(d, DSQ_ST_INDEX_NAME);
    assert_false(dsq_path_exists(idx));
    free(idx);
    free(run_ok(0, "inspect '%s' --check%s", d, ""));
    dsq_err_clear(&err);
    free(fa), free(fb), free(fc), free(fd);
    free(a), free(b), free(c), free(d);
}

/* dsq_synth_rows gives the same bytes in one call or in slices (chunking never shows). */
static void test_slices(void **state) {
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_config_load("samples/configs/v4-tiny.json", &c, NULL, &err), DSQ_OK);
    dsq_inv *inv;
    assert_int_equal(dsq_inv_expected(&c, NULL, &inv, &err), DSQ_OK);
    dsq_synth_gen *g1, *g2;
    assert_int_equal(dsq_synth_gen_create(&c, 5, 1, &g1, &err), DSQ_OK);
    assert_int_equal(dsq_synth_gen_create(&c, 5, 2, &g2, &err), DSQ_OK);
    const char *names[] = {"layers.1.attn.wq_b.weight", "layers.1.ffn.experts.3.w2.weight", "embed.weight",
                           "layers.0.ffn.gate.tid2eid", "layers.2.hc_ffn_fn"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const dsq_inv_entry *e = dsq_inv_find(inv, names[k]);
        const dsq_inv_entry *se = dsq_inv_at(inv, (size_t)(e - dsq_inv_at(inv, 0)) + 1);
        bool scaled = se && se->role.is_scale;
        uint8_t *whole = calloc(1, e->n_bytes), *parts = calloc(1, e->n_bytes);
        uint8_t *s1 = calloc(1, scaled ? se->n_bytes : 1), *s2 = calloc(1, scaled ? se->n_bytes : 1);
        dsq_synth_rows(g1, e, 0, e->shape[0], whole, scaled ? s1 : NULL, DSQ_DTYPE_F8_E8M0);
        uint64_t split = e->dtype == DSQ_DTYPE_F8_E4M3 ? 128 : e->shape[0] / 3;
        uint64_t row_bytes = e->n_bytes / e->shape[0];
        uint64_t srow = scaled ? se->n_bytes / se->shape[0] : 0;
        dsq_synth_rows(g2, e, 0, split, parts, scaled ? s2 : NULL, DSQ_DTYPE_F8_E8M0);
        dsq_synth_rows(g2, e, split, e->shape[0] - split, parts + split * row_bytes,
                       scaled ? s2 + (e->dtype == DSQ_DTYPE_F8_E4M3 ? split / 128 : split) * srow : NULL,
                       DSQ_DTYPE_F8_E8M0);
        assert_memory_equal(whole, parts, e->n_bytes);
        if (scaled) assert_memory_equal(s1, s2, se->n_bytes);
        free(whole), free(parts), free(s1), free(s2);
    }
    dsq_synth_gen_free(g1);
    dsq_synth_gen_free(g2);
    dsq_inv_free(inv);
    dsq_err_clear(&err);
}

/* --from-layer K --layers N keeps layers K … K+N-1 (renumbered from 0) with their compress ratios and hash
 * routing, the MTP blocks kept: dsq_synth_config_text on the tiny, golden and V4-Flash configs, and the CLI
 * on the tiny one (the result passes inspect --check). */
static void slice_of(const char *path, int first, int layers, int want_layers, const int *want_ratios, int n_ratios,
                     int want_hash) {
    size_t len;
    char *text = dsq_test_read(path, &len), *out = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_synth_config_text(text, len, path, first, layers, &out, &err), DSQ_OK);
    dsq_v4_config c;
    assert_int_equal(dsq_config_parse(out, strlen(out), path, &c, NULL, &err), DSQ_OK);
    assert_int_equal(c.n_layers, want_layers);
    assert_int_equal(c.n_compress_ratios, n_ratios);
    for (int i = 0; i < n_ratios; i++) assert_int_equal(c.compress_ratios[i], want_ratios[i]);
    assert_int_equal(c.n_hash_layers, want_hash);
    free(text);
    dsq_free(out);
}

static void test_layer_slice(void **state) {
    /* v4-tiny: ratios 0 4 32 4 | MTP 0, one hash layer */
    slice_of("samples/configs/v4-tiny.json", 1, 2, 2, (const int[]){4, 32, 0}, 3, 0);
    slice_of("samples/configs/v4-tiny.json", 0, 2, 2, (const int[]){0, 4, 0}, 3, 1);
    slice_of("samples/configs/v4-tiny.json", 3, 0, 1, (const int[]){4, 0}, 2, 0); /* 0: to the end */
    /* the golden model's config */
    char *golden = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    slice_of(golden, 2, 2, 2, (const int[]){32, 4, 0}, 3, 0);
    free(golden);
    /* V4-Flash: 0 0 4 128 4 128 … | MTP 0, three hash layers: layers 2-3 are a CSA (hash) and an HCA (score) */
    slice_of("samples/configs/deepseek-v4-flash.json", 2, 2, 2, (const int[]){4, 128, 0}, 3, 1);
    slice_of("samples/configs/deepseek-v4-flash.json", 41, 2, 2, (const int[]){128, 4, 0}, 3, 0);
    /* out of range */
    size_t len;
    char *text = dsq_test_read("samples/configs/v4-tiny.json", &len), *out = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_synth_config_text(text, len, "tiny", 4, 1, &out, &err), DSQ_ERR_ARG);
    assert_non_null(strstr(err.msg, "first layer 4 is not one of its 4 layers"));
    assert_null(out);
    dsq_err_clear(&err);
    assert_int_equal(dsq_synth_config_text(text, len, "tiny", 2, 3, &out, &err), DSQ_ERR_ARG);
    assert_non_null(strstr(err.msg, "cannot keep 3 layers of 4 from layer 2"));
    dsq_err_clear(&err);
    free(text);
    /* the CLI: a CSA + HCA slice of the tiny model is a complete checkpoint */
    char *dir = path2(dsq_test_tmp, "slice");
    cJSON *j = run_json("synth --config samples/configs/v4-tiny.json --out '%s' --from-layer 1 --layers 2 --json%s",
                        dir, "");
    cJSON_Delete(j);
    j = run_json("inspect '%s' --check --json%s", dir, "");
    assert_int_equal((int)num(j, "n_layers"), 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "check"), "ok")));
    const char *kinds[] = {"CSA", "HCA"}, *routing[] = {"score", "score"};
    expect_layers(j, "layers", 2, kinds, (const int[]){4, 32}, routing);
    cJSON_Delete(j);
    char *out2, *err2;
    int rc = dsq_test_run(&out2, &err2, "synth --config samples/configs/v4-tiny.json --out '%s' --from-layer 4", dir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err2, "first layer 4 is not one of its 4 layers"));
    free(out2), free(err2), free(dir);
}

/* A real-shaped V4-Flash derivative: every tensor has its V4-Flash shape except the expert count
 * (4 of 256, top-2) and the vocabulary (2,048 rows); --layers 4 keeps layers 0-1 (sliding, hash),
 * 2 (CSA, hash) and 3 (HCA, score) plus the MTP block.  ~1.05 GB on disk.  (`--layers 1` of the full
 * Flash config writes 9.3 GB — one layer with 256 experts, the MTP block with 256 more, 2.1 GB of
 * embed/head — too slow for every CI run; `make check-flash-layer` runs it: tests/check-flash-layer.sh.) */
static char *flash_shaped_config(void) {
    size_t n;
    char *t = dsq_test_read("samples/configs/deepseek-v4-flash.json", &n);
    const char *from[] = {"\"n_routed_experts\": 256", "\"num_experts_per_tok\": 6", "\"vocab_size\": 129280"};
    const char *to[] = {"\"n_routed_experts\": 4", "\"num_experts_per_tok\": 2", "\"vocab_size\": 2048"};
    for (int k = 0; k < 3; k++) {
        char *at = strstr(t, from[k]);
        assert_non_null(at);
        memmove(at + strlen(to[k]), at + strlen(from[k]), strlen(at + strlen(from[k])) + 1);
        memcpy(at, to[k], strlen(to[k]));
    }
    char *p = path2(dsq_test_tmp, "flash-shaped.json");
    dsq_test_write(p, t, strlen(t));
    free(t);
    return p;
}

static void test_interrupt(void **state) {
    char *cfg = flash_shaped_config(), *dir = path2(dsq_test_tmp, "interrupted");
    char *out = NULL, *err = NULL;
    /* SIGINT a second into a ~1 GB synth: exit 130, no partial file, no config.json */
    int rc = dsq_test_run(&out, &err,
                          "synth --config '%s' --out '%s' --layers 4 & p=$!; sleep 1; kill -INT $p; wait $p", cfg, dir);
    if (rc != 130) fprintf(stderr, "rc %d: %s %s\n", rc, out, err);
    assert_int_equal(rc, 130);
    assert_non_null(strstr(err, "interrupted"));
    char *p = path2(dir, ".model.safetensors.partial");
    assert_false(dsq_path_exists(p));
    free(p);
    p = path2(dir, "config.json");
    assert_false(dsq_path_exists(p));
    free(p);
    free(out), free(err), free(cfg), free(dir);
}

static void test_flash_shaped(void **state) {
    char *cfg = flash_shaped_config(), *dir = path2(dsq_test_tmp, "flash-shaped");
    double t0 = dsq_now();
    cJSON *j = run_json("synth --config '%s' --out '%s' --layers 4 --seed 3 --json", cfg, dir);
    double secs = dsq_now() - t0;
    fprintf(stderr, "flash-shaped synth: %.0f bytes in %.1f s (%.0f MB/s)\n", num(j, "bytes"), secs,
            num(j, "bytes") / secs / 1e6);
    cJSON_Delete(j);
    t0 = dsq_now();
    j = run_json("inspect '%s' --check --json --tensors%s", dir, "");
    fprintf(stderr, "flash-shaped inspect --check: %.3f s\n", dsq_now() - t0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "check"), "ok")));
    assert_int_equal((int)num(j, "n_layers"), 4);
    const char *kinds[] = {"sliding", "sliding", "CSA", "HCA"}, *routing[] = {"hash", "hash", "hash", "score"};
    const int ratios[] = {0, 0, 4, 128};
    expect_layers(j, "layers", 4, kinds, ratios, routing);
    /* real V4-Flash shapes (spec §3.2) */
    struct {
        const char *name, *dtype;
        int d0, d1;
    } want[] = {
        {"layers.2.attn.wq_b.weight", "F8_E4M3", 32768, 1024},
        {"layers.2.attn.wq_b.scale", "F8_E8M0", 256, 8},
        {"layers.3.attn.wo_a.weight", "F8_E4M3", 8192, 4096},
        {"layers.0.attn.wo_b.scale", "F8_E8M0", 32, 64},
        {"layers.2.attn.compressor.ape", "F32", 4, 1024},
        {"layers.3.attn.compressor.ape", "F32", 128, 512},
        {"layers.3.attn.compressor.wkv.weight", "BF16", 512, 4096},
        {"layers.2.attn.indexer.wq_b.weight", "F8_E4M3", 8192, 1024},
        {"layers.2.attn.indexer.compressor.wgate.weight", "BF16", 256, 4096},
        {"layers.1.ffn.experts.3.w1.weight", "I8", 2048, 2048},
        {"layers.1.ffn.experts.3.w1.scale", "F8_E8M0", 2048, 128},
        {"layers.3.ffn.experts.0.w2.weight", "I8", 4096, 1024},
        {"layers.3.ffn.shared_experts.w2.scale", "F8_E8M0", 32, 16},
        {"layers.0.hc_ffn_fn", "F32", 24, 16384},
        {"mtp.0.e_proj.weight", "F8_E4M3", 4096, 4096},
        {"layers.2.ffn.gate.tid2eid", "I64", 2048, 2},
    };
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "tensor_list");
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const cJSON *found = NULL;
        for (const cJSON *t = list->child; t && !found; t = t->next)
            if (!strcmp(cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring, want[k].name)) found = t;
        if (!found) fail_msg("no tensor %s", want[k].name);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(found, "dtype")->valuestring, want[k].dtype);
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(found, "shape");
        assert_int_equal(cJSON_GetArrayItem(sh, 0)->valueint, want[k].d0);
        assert_int_equal(cJSON_GetArrayItem(sh, 1)->valueint, want[k].d1);
    }
    cJSON_Delete(j);
    /* the adjusted config: 4 layers, ratios [0, 0, 4, 128] + MTP [0], 3 hash layers */
    char *cp = path2(dir, "config.json");
    dsq_v4_config c;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_config_load(cp, &c, NULL, &err), DSQ_OK);
    assert_int_equal(c.n_layers, 4);
    assert_int_equal(c.n_compress_ratios, 5);
    assert_int_equal(c.compress_ratios[4], 0);
    assert_int_equal(c.n_hash_layers, 3);
    free(cp);
    if (!dsq_test_asan()) check_values(dir); /* scanning 1 GB under ASan only slows CI; tiny covers it */
    dsq_err_clear(&err);
    dsq_test_rmdir(dir);
    free(cfg), free(dir);
}

/* ---- inspect numbers -------------------------------------------------------------------------- */

static void test_inspect_golden(void **state) {
    char *model = dsq_test_shared_path("golden/v4-tiny/model");
    cJSON *j = run_json("inspect '%s' --json%s", model, "");
    assert_int_equal((int)num(j, "tensors"), 427);
    assert_int_equal((uint64_t)num(j, "bytes"), 6688686); /* file size minus header */
    /* parameters from spec §3.1 shapes, v4-tiny: V 512, D 256, hc 4 (mix 24), ql 128, H 4, hd 128, G 2,
     * ol 128, E 8, I 128, nih 8, ihd 64 */
    const double D = 256, V = 512, hcD = 4 * 256;
    double common = 2 * D + 2 * (24 * hcD + 24 + 3)             /* norms, hc */
                    + 128 * D + 128 + 512 * 128 + 128 * D + 128 /* wq_a, q_norm, wq_b, wkv, kv_norm */
                    + 256 * 256 + D * 256 + 4                   /* wo_a, wo_b, sink */
                    + 8 * D + 8 * 3 * 128 * D + 3 * 128 * D;    /* gate, experts, shared */
    double csa = 4 * 256 + 2 * 256 * D + 128 + 512 * 128 + 8 * D + 4 * 128 + 2 * 128 * D + 64;
    double hca = 32 * 128 + 2 * 128 * D + 128;
    double mtp = common + 8 + 2 * D * D + 3 * D + 4 * hcD + 4 + 1;
    double main_total = 2 * V * D + D + 4 * hcD + 4 + 1 + 4 * common + 3 * 8 /* bias, layers 1-3 */ + 2 * csa + hca;
    assert_true(num(j, "params_total") == main_total);
    assert_true(num(j, "params_total_mtp") == mtp);
    double routed = 4 * 8 * 3 * 128 * D;
    assert_true(num(j, "params_active") == main_total - V * D - routed + routed * 2 / 8);
    const char *kinds[] = {"sliding", "CSA", "HCA", "CSA"}, *routing[] = {"hash", "score", "score", "score"};
    const int ratios[] = {0, 4, 32, 4};
    expect_layers(j, "layers", 4, kinds, ratios, routing);
    /* KV per token: CSA 2 x (583-style entry 128+64+1 = 193 B + indexer 32+2 = 34 B)/4, HCA 193/32 */
    assert_true(fabs(num(j, "kv_bytes_per_token") - (2 * (193.0 + 34.0) / 4 + 193.0 / 32)) < 1e-3);
    assert_true(num(j, "kv_bytes_per_token_bf16") == 2 * (256.0 + 128.0) / 4 + 256.0 / 32);
    const cJSON *fam = cJSON_GetObjectItemCaseSensitive(j, "bytes_by_family");
    assert_int_equal((int)num(fam, "routed_experts"), 5 * 8 * 3 * 128 * 128);
    assert_int_equal((int)num(fam, "embed_head"), 2 * 512 * 256 * 2);
    cJSON_Delete(j);
    /* text output and --tensors */
    char *out = run_ok(0, "inspect '%s' --tensors --check%s", model, "");
    assert_non_null(strstr(out, "layers.1.attn.wq_a.weight F8_E4M3 [128, 256] 32768\n"));
    assert_non_null(strstr(out, "check:       ok: 427 tensors"));
    assert_non_null(strstr(out, "2      HCA           32  score"));
    free(out);
    free(model);
}

static void test_inspect_configs(void **state) {
    cJSON *j = run_json("inspect --config samples/configs/deepseek-v4-flash.json --json%s%s", "", "");
    double total = num(j, "params_total"), active = num(j, "params_active");
    assert_true(total > 284e9 * 0.99 && total < 284e9 * 1.01);
    assert_true(active > 13e9 * 0.97 && active < 13e9 * 1.03);
    assert_true(fabs(num(j, "kv_bytes_per_token") - 3508.8) < 0.1);
    assert_true(num(j, "kv_bytes_per_token_bf16") == 6880);
    assert_true(num(j, "bytes") == 159609485896.0);
    assert_int_equal((int)num(j, "tensors"), 69187);
    assert_int_equal((int)num(j, "n_layers"), 43);
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, "layers");
    int csa = 0, hca = 0, swa = 0, hash = 0;
    for (const cJSON *l = ls->child; l; l = l->next) {
        const char *k = cJSON_GetObjectItemCaseSensitive(l, "attention")->valuestring;
        csa += !strcmp(k, "CSA"), hca += !strcmp(k, "HCA"), swa += !strcmp(k, "sliding");
        hash += !strcmp(cJSON_GetObjectItemCaseSensitive(l, "routing")->valuestring, "hash");
    }
    assert_int_equal(csa, 21);
    assert_int_equal(hca, 20);
    assert_int_equal(swa, 2);
    assert_int_equal(hash, 3);
    cJSON_Delete(j);
    j = run_json("inspect --config samples/configs/deepseek-v4-pro.json --json%s%s", "", "");
    total = num(j, "params_total"), active = num(j, "params_active");
    assert_true(total > 1.6e12 * 0.97 && total < 1.6e12 * 1.03);
    assert_true(active > 49e9 * 0.97 && active < 49e9 * 1.03);
    assert_true(fabs(num(j, "kv_bytes_per_token") - 5023.7) < 0.1);
    assert_true(num(j, "kv_bytes_per_token_bf16") == 9848);
    assert_true(num(j, "bytes") == 864704792696.0);
    cJSON_Delete(j);
}

/* ---- errors ------------------------------------------------------------------------------------- */

static void test_errors(void **state) {
    /* a checkpoint that does not match its config: one stderr line per problem, exit 1 */
    char *src = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    char *dir = path2(dsq_test_tmp, "broken");
    free(run_ok(0, "synth --config '%s' --out '%s'", src, dir));
    /* keep the tensors, declare 5 layers: layer 4 is missing */
    size_t n;
    char *cfg = dsq_test_read(src, &n);
    char *at = strstr(cfg, "\"num_hidden_layers\": 4");
    assert_non_null(at);
    at[strlen("\"num_hidden_layers\": ")] = '5';
    at = strstr(cfg, "    0\n  ]");
    assert_non_null(at);
    char *cfg2 = malloc(n + 16);
    memcpy(cfg2, cfg, (size_t)(at - cfg));
    strcpy(cfg2 + (at - cfg), "    0,\n    0\n  ]\n}\n");
    char *cp = path2(dir, "config5.json");
    dsq_test_write(cp, cfg2, strlen(cfg2));
    char *out = NULL, *err = NULL;
    int rc = dsq_test_run(&out, &err, "inspect '%s' --config '%s' --check", dir, cp);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "layers.4.attn.wq_a.weight: missing (expected F8_E4M3 [128, 256])"));
    assert_non_null(strstr(err, "layers.4.ffn.experts.7.w3.scale: missing"));
    assert_non_null(strstr(out, "check:       FAILED"));
    int lines = 0;
    for (const char *p = err; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 77); /* a sliding-window, score-routed block holds 77 tensors */
    free(out), free(err);
    /* --check without a config */
    char *lone = path2(dsq_test_tmp, "lone");
    mkdir(lone, 0755);
    char *f1 = path2(dir, "model.safetensors"), *f2 = path2(lone, "model.safetensors");
    size_t len;
    char *bytes = dsq_test_read(f1, &len);
    dsq_test_write(f2, bytes, len);
    free(bytes);
    rc = dsq_test_run(&out, &err, "inspect '%s' --check", lone);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "--check needs one"));
    free(out), free(err);
    out = run_ok(0, "inspect '%s'%s", f2, ""); /* without --check: what the tensors alone tell */
    assert_non_null(strstr(out, "geometry unknown"));
    free(out);
    /* synth refuses to replace without --overwrite, and checks --layers */
    rc = dsq_test_run(&out, &err, "synth --config '%s' --out '%s'", src, dir);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "already exists"));
    free(out), free(err);
    char *d2 = path2(dsq_test_tmp, "layers9");
    rc = dsq_test_run(&out, &err, "synth --config '%s' --out '%s' --layers 9", src, d2);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "cannot keep 9 layers of 4"));
    free(out), free(err);
    /* usage errors */
    assert_int_equal(dsq_test_run(NULL, NULL, "synth --out x%s", ""), 2);
    assert_int_equal(dsq_test_run(NULL, NULL, "synth --config x --out y --layers 0%s", ""), 2);
    assert_int_equal(dsq_test_run(NULL, NULL, "synth --config x --out y --shard-size 1Q%s", ""), 2);
    assert_int_equal(dsq_test_run(NULL, NULL, "inspect%s", ""), 2);
    assert_int_equal(dsq_test_run(NULL, NULL, "inspect a b%s", ""), 2);
    assert_int_equal(dsq_test_run(NULL, NULL, "inspect --bogus x%s", ""), 2);
    assert_int_equal(dsq_test_run(NULL, NULL, "inspect --help%s", ""), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "synth --help%s", ""), 0);
    /* a broken config is reported naming the field */
    char *bad = path2(dsq_test_tmp, "bad.json");
    dsq_test_write(bad, "{\"model_type\": \"deepseek_v4\"}", 29);
    rc = dsq_test_run(&out, &err, "inspect --config '%s'", bad);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "\"vocab_size\" is missing"));
    free(out), free(err);
    free(bad), free(d2), free(f1), free(f2), free(lone), free(cp), free(cfg2), free(cfg), free(dir), free(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_encoders),  cmocka_unit_test(test_tiny_roundtrip),
        cmocka_unit_test(test_determinism),    cmocka_unit_test(test_slices),
        cmocka_unit_test(test_inspect_golden), cmocka_unit_test(test_inspect_configs),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_interrupt),
        cmocka_unit_test(test_flash_shaped),   cmocka_unit_test(test_layer_slice),
    };
    return cmocka_run_group_tests(tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
}
