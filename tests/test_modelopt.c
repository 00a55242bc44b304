/* NVIDIA ModelOpt NVFP4 checkpoints (docs/modelopt-nvfp4.md): the golden model converted with NVFP4
 * routed experts, exported with --format modelopt-nvfp4, read back by inspect --check, convert and
 * eval (lossless: identical stored bytes and identical logits), and malformed variants of the export
 * (scale shapes, NaN / zero global scales, hf_quant_config.json members) refused with one-line errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_container.h"
#include "dsq_json.h"
#include "dsq_modelopt.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"

#define EXPERT "layers.1.ffn.experts.5.w1"

typedef struct fixture {
    char *dir, *src, *dsq, *mo; /* temp dir, golden model, .dsq with NVFP4 experts, its ModelOpt export */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = dsq_test_tmpdir();
    f->src = dsq_test_shared_path("golden/v4-tiny/model");
    f->dsq = dsq_test_join(f->dir, "nv.dsq");
    f->mo = dsq_test_join(f->dir, "mo");
    if (dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release --override 'family:routed_experts=nvfp4'", f->src,
                     f->dsq) != 0 ||
        dsq_test_run(NULL, NULL, "export '%s' '%s' --format modelopt-nvfp4", f->dsq, f->mo) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    dsq_test_rmdir(f->dir);
    free(f->dir);
    free(f->src);
    free(f->dsq);
    free(f->mo);
    free(f);
    return 0;
}

/* Same encoding and part checksums, tensor by tensor. */
static void same_tensors(const char *a, const char *b) {
    dsq_ctr_reader *x = NULL, *y = NULL;
    assert_int_equal(dsq_ctr_reader_open(a, NULL, &x, NULL), DSQ_OK);
    assert_int_equal(dsq_ctr_reader_open(b, NULL, &y, NULL), DSQ_OK);
    assert_int_equal(dsq_ctr_count(x), dsq_ctr_count(y));
    size_t nvfp4 = 0;
    for (size_t i = 0; i < dsq_ctr_count(x); i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(x, i), *u = dsq_ctr_find(y, t->name);
        assert_non_null(u);
        assert_int_equal(t->encoding, u->encoding);
        assert_int_equal(t->n_parts, u->n_parts);
        for (int p = 0; p < t->n_parts; p++) {
            assert_int_equal(t->parts[p].bytes, u->parts[p].bytes);
            assert_memory_equal(t->parts[p].data, u->parts[p].data, t->parts[p].bytes);
        }
        nvfp4 += t->encoding == DSQ_ENC_NVFP4;
    }
    assert_int_equal(nvfp4, 15); /* w1, w2, w3 stacks of 4 layers + 1 MTP block */
    dsq_ctr_reader_close(x);
    dsq_ctr_reader_close(y);
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* The layout of one exported expert and the hf_quant_config.json. */
static void test_export_layout(void **state) {
    fixture *f = *state;
    char *mp = dsq_test_join(f->mo, "model.safetensors");
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(mp, NULL, &st, NULL), DSQ_OK);
    const dsq_st_tensor *w = dsq_st_find(st, EXPERT ".weight"), *s = dsq_st_find(st, EXPERT ".weight_scale");
    const dsq_st_tensor *g = dsq_st_find(st, EXPERT ".weight_scale_2"), *in = dsq_st_find(st, EXPERT ".input_scale");
    assert_non_null(w);
    assert_non_null(s);
    assert_non_null(g);
    assert_non_null(in);
    assert_null(dsq_st_find(st, EXPERT ".scale"));
    assert_int_equal(w->dtype, DSQ_DTYPE_U8); /* [moe_inter 128, dim 256 / 2] */
    assert_int_equal(w->rank, 2);
    assert_int_equal(w->shape[0], 128);
    assert_int_equal(w->shape[1], 128);
    assert_int_equal(s->dtype, DSQ_DTYPE_F8_E4M3); /* [128, 256 / 16] */
    assert_int_equal(s->shape[0], 128);
    assert_int_equal(s->shape[1], 16);
    assert_int_equal(g->dtype, DSQ_DTYPE_F32);
    assert_int_equal(g->rank, 0);
    assert_int_equal(in->rank, 0);
    float ts, is;
    memcpy(&ts, g->data, 4);
    memcpy(&is, in->data, 4);
    assert_true(isfinite(ts) && ts > 0);
    assert_true(is == 1.0f);
    /* attention weights stay in their release form */
    assert_int_equal(dsq_st_find(st, "layers.0.attn.wq_a.weight")->dtype, DSQ_DTYPE_F8_E4M3);
    assert_non_null(dsq_st_find(st, "layers.0.attn.wq_a.scale"));
    dsq_st_close(st);
    /* hf_quant_config.json: parsed by the reader, NVFP4 / 16, release-form modules excluded */
    char *qp = dsq_test_join(f->mo, DSQ_MODELOPT_QCFG_NAME);
    size_t n;
    char *text = dsq_test_read(qp, &n);
    dsq_modelopt_qcfg q;
    assert_int_equal(dsq_modelopt_qcfg_parse(text, n, qp, &q, NULL), DSQ_OK);
    assert_string_equal(q.producer, "dsq");
    assert_true(q.n_exclude > 0);
    assert_non_null(strstr(text, "\"layers.0.attn.wq_a\""));
    assert_null(strstr(text, "experts.5"));
    free(text);
    free(qp);
    free(mp);
    /* the exported checkpoint matches the config's inventory (ModelOpt variant) */
    char *out = NULL;
    assert_int_equal(dsq_test_run(&out, NULL, "inspect '%s' --check", f->mo), 0);
    assert_non_null(strstr(out, "match the inventory"));
    free(out);
}

/* convert(export(x)) stores the same bytes as x; exporting that again gives the same file. */
static void test_round_trip_lossless(void **state) {
    fixture *f = *state;
    char *again = dsq_test_join(f->dir, "again.dsq"), *mo2 = dsq_test_join(f->dir, "mo2");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", f->mo, again), 0);
    same_tensors(f->dsq, again);
    /* verify knows the ModelOpt source inventory (weight_scale [N, K/16], the two F32 scalars) */
    char *vout = NULL;
    assert_int_equal(dsq_test_run(&vout, NULL, "verify '%s'", again), 0);
    assert_non_null(strstr(vout, "metadata ok"));
    free(vout);
    assert_int_equal(dsq_test_run(NULL, NULL, "verify '%s' --source '%s'", again, f->mo), 0);
    assert_int_equal(dsq_test_run(NULL, NULL, "export '%s' '%s' --format modelopt-nvfp4", again, mo2), 0);
    char *a = dsq_test_join(f->mo, "model.safetensors"), *b = dsq_test_join(mo2, "model.safetensors");
    size_t na, nb;
    char *x = dsq_test_read(a, &na), *y = dsq_test_read(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
    free(a);
    free(b);
    /* re-encoding a ModelOpt source is refused, one line per tensor naming it */
    char *e = NULL, *fp8 = dsq_test_join(f->dir, "fp8.dsq");
    assert_int_equal(dsq_test_run(NULL, &e, "convert '%s' '%s' --recipe fp8", f->mo, fp8), 1);
    assert_non_null(strstr(e, "ModelOpt NVFP4 sources are kept as they are"));
    free(e);
    free(fp8);
    free(again);
    free(mo2);
}

typedef enum mut {
    MUT_NONE,
    MUT_SCALE_SHAPE,   /* EXPERT.weight_scale [128, 8] */
    MUT_TS_NAN,        /* EXPERT.weight_scale_2 NaN */
    MUT_TS_ZERO,       /* EXPERT.weight_scale_2 0 */
    MUT_TS_RANK1,      /* EXPERT.weight_scale_2 [1] */
    MUT_TS_DOUBLE_ALL, /* every weight_scale_2 doubled (a valid checkpoint with other weights) */
} mut;
static char *mutated(const fixture *f, const char *name, mut m, const char *qcfg);

static float *logits_of(const char *path, size_t *n) {
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(path, NULL, &st, NULL), DSQ_OK);
    const dsq_st_tensor *t = dsq_st_find(st, "logits");
    assert_non_null(t);
    float *v = malloc(t->n_bytes);
    memcpy(v, t->data, t->n_bytes);
    *n = t->n_bytes / 4;
    dsq_st_close(st);
    return v;
}

/* The export evaluates to exactly the logits of the .dsq (same codes, scales and tensor scales). */
static void test_eval_same_logits(void **state) {
    fixture *f = *state;
    char *tok = dsq_test_join(f->dir, "tok.txt"), *la = dsq_test_join(f->dir, "la.safetensors"),
         *lb = dsq_test_join(f->dir, "lb.safetensors");
    const char ids[] = "1 5 9 200 33 7 100 45 3 2 8 99 300 11 12 13 400 17 260 5 77 81 90 2\n";
    dsq_test_write(tok, ids, strlen(ids));
    assert_int_equal(dsq_test_run(NULL, NULL, "eval logits '%s' --tokens '%s' --out '%s' --threads 1", f->dsq, tok, la),
                     0);
    assert_int_equal(dsq_test_run(NULL, NULL, "eval logits '%s' --tokens '%s' --out '%s' --threads 1", f->mo, tok, lb),
                     0);
    size_t na, nb;
    float *a = logits_of(la, &na), *b = logits_of(lb, &nb);
    assert_int_equal(na, nb);
    assert_int_equal(na, 24 * 512);
    assert_memory_equal(a, b, na * 4);
    /* and weight_scale_2 is read, not ignored: doubling every expert's global scale moves the logits */
    char *dbl = mutated(f, "double", MUT_TS_DOUBLE_ALL, NULL), *lc = dsq_test_join(f->dir, "lc.safetensors");
    assert_int_equal(dsq_test_run(NULL, NULL, "eval logits '%s' --tokens '%s' --out '%s' --threads 1", dbl, tok, lc),
                     0);
    size_t nc;
    float *c = logits_of(lc, &nc);
    assert_int_equal(nc, na);
    assert_true(memcmp(a, c, na * 4) != 0);
    free(dbl);
    char *rel = dsq_test_join(f->dir, "rel.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", f->src, rel), 0);
    /* a container without NVFP4 experts cannot be exported in this layout */
    char *e = NULL, *bad = dsq_test_join(f->dir, "bad");
    assert_int_equal(dsq_test_run(NULL, &e, "export '%s' '%s' --format modelopt-nvfp4", rel, bad), 1);
    assert_non_null(strstr(e, "needs NVFP4 experts"));
    assert_int_equal(count_lines(e), 1);
    char probe[4096];
    snprintf(probe, sizeof probe, "test ! -e '%s'", bad); /* refused before the directory is made */
    assert_int_equal(system(probe), 0);
    free(e);
    free(a);
    free(b);
    free(c);
    free(rel);
    free(lc);
    free(bad);
    free(tok);
    free(la);
    free(lb);
}

/* ---- malformed ModelOpt checkpoints ---- */

/* dst/ = f->mo with one tensor changed and hf_quant_config.json replaced by qcfg (NULL: as exported). */
static char *mutated(const fixture *f, const char *name, mut m, const char *qcfg) {
    char *dst = dsq_test_join(f->dir, name);
    char cmd[4096];
    dsq_test_rmdir(dst);
    snprintf(cmd, sizeof cmd, "mkdir '%s' && cp '%s/config.json' '%s/hf_quant_config.json' '%s/'", dst, f->mo, f->mo, dst);
    assert_int_equal(system(cmd), 0);
    if (qcfg) {
        char *qp = dsq_test_join(dst, DSQ_MODELOPT_QCFG_NAME);
        dsq_test_write(qp, qcfg, strlen(qcfg));
        free(qp);
    }
    char *sp = dsq_test_join(f->mo, "model.safetensors"), *dp = dsq_test_join(dst, "model.safetensors");
    dsq_st *st = NULL;
    dsq_st_writer *w = NULL;
    assert_int_equal(dsq_st_open(sp, NULL, &st, NULL), DSQ_OK);
    assert_int_equal(dsq_st_writer_create(dp, false, &w, NULL), DSQ_OK);
    const float nan = NAN, zero = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < dsq_st_count(st); i++) {
            const dsq_st_tensor *t = dsq_st_at(st, i);
            int rank = t->rank;
            uint64_t shape[DSQ_ST_MAX_RANK];
            memcpy(shape, t->shape, sizeof shape);
            const void *data = t->data;
            size_t bytes = t->n_bytes;
            if (m == MUT_SCALE_SHAPE && !strcmp(t->name, EXPERT ".weight_scale")) {
                shape[1] /= 2;
                bytes /= 2;
            }
            float twice;
            size_t len = strlen(t->name);
            if (m == MUT_TS_DOUBLE_ALL && len > 15 && !strcmp(t->name + len - 15, ".weight_scale_2")) {
                memcpy(&twice, t->data, 4);
                twice *= 2;
                data = &twice;
            }
            if (!strcmp(t->name, EXPERT ".weight_scale_2")) {
                if (m == MUT_TS_NAN) data = &nan;
                if (m == MUT_TS_ZERO) data = &zero;
                if (m == MUT_TS_RANK1) rank = 1, shape[0] = 1;
            }
            if (pass == 0)
                assert_int_equal(dsq_st_writer_add(w, t->name, t->dtype, rank, shape, NULL), DSQ_OK);
            else
                assert_int_equal(dsq_st_writer_write(w, data, bytes, NULL), DSQ_OK);
        }
        if (pass == 0) assert_int_equal(dsq_st_writer_begin(w, NULL), DSQ_OK);
    }
    assert_int_equal(dsq_st_writer_finish(w, NULL), DSQ_OK);
    dsq_st_close(st);
    free(sp);
    free(dp);
    return dst;
}

/* convert and eval both refuse `dir`, with `want` in the message; eval's message is one line. */
static void refused(const fixture *f, const char *dir, const char *want) {
    char *e = NULL, *out = dsq_test_join(f->dir, "refused.dsq"), *tok = dsq_test_join(f->dir, "t1.txt"),
         *lo = dsq_test_join(f->dir, "refused.safetensors");
    dsq_test_write(tok, "1 2 3\n", 6);
    assert_int_equal(dsq_test_run(NULL, &e, "convert '%s' '%s' --recipe release", dir, out), 1);
    if (!strstr(e, want)) fail_msg("convert of %s: want '%s' in: %s", dir, want, e);
    free(e);
    assert_int_equal(dsq_test_run(NULL, &e, "eval logits '%s' --tokens '%s' --out '%s'", dir, tok, lo), 1);
    if (!strstr(e, want)) fail_msg("eval of %s: want '%s' in: %s", dir, want, e);
    assert_int_equal(count_lines(e), 1);
    free(e);
    char probe[4096];
    snprintf(probe, sizeof probe, "test ! -e '%s' && test ! -e '%s'", out, lo); /* nothing half-written */
    assert_int_equal(system(probe), 0);
    free(out);
    free(tok);
    free(lo);
}

static void test_malformed_tensors(void **state) {
    fixture *f = *state;
    static const struct {
        mut m;
        const char *want;
    } cases[] = {
        {MUT_SCALE_SHAPE, EXPERT ".weight_scale"},
        {MUT_TS_NAN, "NaN"},
        {MUT_TS_ZERO, "not positive"},
        {MUT_TS_RANK1, ".weight_scale_2: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *d = mutated(f, "bad", cases[i].m, NULL);
        refused(f, d, cases[i].want);
        free(d);
    }
    /* the unchanged copy is accepted: the refusals come from the mutations */
    char *ok = mutated(f, "ok", MUT_NONE, NULL), *out = dsq_test_join(f->dir, "ok.dsq");
    assert_int_equal(dsq_test_run(NULL, NULL, "convert '%s' '%s' --recipe release", ok, out), 0);
    free(ok);
    free(out);
}

static void test_malformed_quant_config(void **state) {
    fixture *f = *state;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"quantization\": {\"group_size\": 16}}", "quant_algo is missing"},
        {"{\"quantization\": {\"quant_algo\": \"NVFP4\"}}", "group_size is missing"},
        {"{\"quantization\": {\"quant_algo\": \"FP8\", \"group_size\": 16}}", "only NVFP4"},
        {"{\"quantization\": {\"quant_algo\": \"NVFP4\", \"group_size\": 32}}", "group_size must be 16"},
        {"{\"quantization\": {\"quant_algo\": \"NVFP4\", \"group_size\": 16, \"exclude_modules\": [1]}}", "non-string"},
        {"{\"producer\": {}}", "no \"quantization\""},
        {"{\"quantization\": {\"quant_algo\": \"NVFP4\", \"group_size\": 16,}", "hf_quant_config.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *d = mutated(f, "badq", MUT_NONE, cases[i].json);
        refused(f, d, cases[i].want);
        dsq_modelopt_qcfg q;
        dsq_err err = DSQ_ERR_INIT;
        assert_true(dsq_modelopt_qcfg_parse(cases[i].json, strlen(cases[i].json), "q", &q, &err) != DSQ_OK);
        assert_null(strchr(err.msg, '\n'));
        dsq_err_clear(&err);
        free(d);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_layout),          cmocka_unit_test(test_round_trip_lossless),
        cmocka_unit_test(test_eval_same_logits),       cmocka_unit_test(test_malformed_tensors),
        cmocka_unit_test(test_malformed_quant_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
