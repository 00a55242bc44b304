/* The evaluator on .dsq containers (lib/eval/wsrc_dsq.c): the golden model converted under each
 * recipe and evaluated through the CLI.  release must give the checkpoint's logits bit for bit
 * (same bytes, same kernels) and match golden-exact at the README's tolerance; fp8 (FP4 → FP8
 * lossless) the same floats up to summation order; int4 measurably different but sane.  Also
 * decode from a container equals its prefill, and the stacked/fused slices resolve for every
 * expert and compressor. */
#include "dsq.h"
#include "dsq_codec.h"
#include "ctr_util.h"
#include "dsq_container.h"
#include "eval_util.h"

static char *model;

static int setup(void **state) {
    if (dsq_test_tmp_setup(state)) return -1;
    model = dsq_test_shared_path("golden/v4-tiny/model");
    return 0;
}
static int teardown(void **state) {
    dsq_test_tmp_teardown(state);
    free(model);
    return 0;
}

/* Convert the golden model; `tag` names the output, `args` is the recipe part of the command. */
static char *convert_as(const char *tag, const char *args) {
    char name[64];
    snprintf(name, sizeof name, "golden-%s.dsq", tag);
    char *out = dsq_test_join(dsq_test_tmp, name);
    char *se = NULL;
    int rc = dsq_test_run(NULL, &se, "convert '%s' '%s' %s --overwrite", model, out, args);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    free(se);
    return out;
}

static char *convert(const char *recipe) {
    char args[64];
    snprintf(args, sizeof args, "--recipe %s", recipe);
    return convert_as(recipe, args);
}

/* Mean over rows of the relative L2 error. */
static double mean_rel_l2(const float *a, const float *b, size_t rows, size_t w) {
    double sum = 0;
    for (size_t r = 0; r < rows; r++) {
        double d = 0, n = 0;
        for (size_t c = 0; c < w; c++) {
            double x = (double)a[r * w + c] - b[r * w + c];
            d += x * x;
            n += (double)b[r * w + c] * b[r * w + c];
        }
        sum += sqrt(d / n);
    }
    return sum / (double)rows;
}

/* Logits [rows, 512] of MODEL over the golden tokens (first `n` of them). */
static float *logits(const char *m, const char *tokens, const char *extra, size_t *rows) {
    char *out = dsq_test_join(dsq_test_tmp, "logits.safetensors");
    char *se = NULL;
    int rc = dsq_test_run(NULL, &se, "eval logits '%s' --tokens '%s' --out '%s' --overwrite --threads 1 %s", m, tokens,
                          out, extra);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    free(se);
    dsq_st *o = NULL;
    assert_int_equal(dsq_st_open(out, NULL, &o, NULL), DSQ_OK);
    size_t n = 0;
    float *l = eu_f32(o, "logits", &n);
    *rows = n / 512;
    dsq_st_close(o);
    free(out);
    return l;
}

static char *token_file(size_t n) {
    dsq_st *g = eu_open_st("golden/v4-tiny/golden-exact.safetensors");
    size_t total = 0;
    int32_t *tok = eu_i32(g, "tokens", &total);
    assert_true(n <= total);
    char *p = dsq_test_join(dsq_test_tmp, "tokens.txt");
    FILE *f = fopen(p, "w");
    for (size_t i = 0; i < n; i++) fprintf(f, "%d ", tok[i]);
    fclose(f);
    free(tok);
    dsq_st_close(g);
    return p;
}

static void test_recipes_through_container(void **state) {
    char *tokens = token_file(160);
    size_t r0, r1, r2, r3;
    float *ref = logits(model, tokens, "", &r0);
    assert_int_equal(r0, 160);

    char *rel = convert("release");
    float *a = logits(rel, tokens, "", &r1);
    assert_int_equal(r1, 160);
    assert_memory_equal(a, ref, 160 * 512 * sizeof(float)); /* same bytes, same kernels */
    /* and the README's bound against the official reference */
    dsq_st *g = eu_open_st("golden/v4-tiny/golden-exact.safetensors");
    float *gold = eu_f32(g, "prefill_logits", NULL);
    size_t mism = 0;
    double e = eu_max_rel_l2(a, gold, 160, 512, &mism);
    printf("  release.dsq vs golden-exact: max row rel L2 %.3g\n", e);
    assert_true(e <= 1e-4);
    assert_int_equal(mism, 0);

    char *fp8 = convert("fp8");
    float *b = logits(fp8, tokens, "", &r2);
    e = eu_max_rel_l2(b, ref, 160, 512, &mism);
    printf("  fp8.dsq vs checkpoint: max row rel L2 %.3g\n", e);
    assert_true(e <= 1e-5); /* identical weights after decode; only summation order may differ */
    assert_int_equal(mism, 0);

    /* int4 experts change the output; a deliberately bad 2-bit build changes it more.  (The tiny
     * random model is chaotic: one flipped expert choice moves a row a lot, so only the order of the
     * mean errors is asserted, not their size.) */
    char *i4 = convert("int4");
    float *c = logits(i4, tokens, "", &r3);
    char *i2 = convert_as("int2", "--recipe int4 --override '*.ffn.experts.*=int2-g32-asym'");
    size_t r4;
    float *d = logits(i2, tokens, "", &r4);
    double m4 = mean_rel_l2(c, ref, 160, 512), m2 = mean_rel_l2(d, ref, 160, 512);
    printf("  mean row rel L2 vs checkpoint: int4 %.3g, int2 %.3g\n", m4, m2);
    assert_true(m4 > 1e-4); /* the experts really were re-quantized */
    assert_true(m2 > m4);

    free(a), free(b), free(c), free(d), free(ref), free(gold), free(i2);
    dsq_st_close(g);
    free(rel), free(fp8), free(i4), free(tokens);
}

/* The FP8 variants through the evaluator: 128x128 → 1x128 (UE8M0 or F32 scales) is exact, so the
 * logits equal the checkpoint's up to summation order; per-row scales (UE8M0 or F32) re-quantize the
 * attention and shared experts: a real but small change. */
static void test_fp8_variants_through_container(void **state) {
    char *tokens = token_file(40);
    size_t r0, r1, r2;
    float *ref = logits(model, tokens, "", &r0);
    char *ex = convert_as("fp8-1x128", "--recipe release --override '*.attn.w*=fp8-1x128-f32' "
                                        "--override '*.shared_experts.*=fp8-1x128'");
    float *a = logits(ex, tokens, "", &r1);
    assert_int_equal(r1, 40);
    size_t mism = 0;
    double e = eu_max_rel_l2(a, ref, 40, 512, &mism);
    printf("  fp8-1x128(-f32).dsq vs checkpoint: max row rel L2 %.3g\n", e);
    assert_true(e <= 1e-5);
    assert_int_equal(mism, 0);
    char *row = convert_as("fp8-row", "--recipe release --override '*.attn.w*=fp8-row-e8m0' "
                                      "--override '*.shared_experts.*=fp8-row'");
    float *b = logits(row, tokens, "", &r2);
    assert_int_equal(r2, 40);
    for (size_t i = 0; i < 40 * 512; i++) assert_true(isfinite(b[i]));
    double m = mean_rel_l2(b, ref, 40, 512);
    printf("  fp8-row(-e8m0).dsq vs checkpoint: mean row rel L2 %.3g\n", m);
    assert_true(m > 1e-5); /* the weights really were re-quantized */
    assert_true(m < 0.2); /* below int4 experts (0.22 on these tokens) */
    free(a), free(b), free(ref), free(ex), free(row), free(tokens);
}

/* Decode from a container (window ring, compressor state, indexer keys) equals its prefill. */
static void test_decode_from_container(void **state) {
    char *tokens = token_file(60);
    char *i4 = convert("int4");
    size_t rp, rd;
    float *p = logits(i4, tokens, "", &rp);
    float *d = logits(i4, tokens, "--decode-from 37", &rd);
    assert_int_equal(rp, 60);
    assert_int_equal(rd, 60 - 37 + 1);
    size_t mism = 0;
    double e = eu_max_rel_l2(d, p + 36 * 512, rd, 512, &mism);
    printf("  int4.dsq decode from 37 vs prefill: max row rel L2 %.3g\n", e);
    assert_true(e <= 1e-5);
    assert_int_equal(mism, 0);
    free(p), free(d), free(i4), free(tokens);
}

/* Every expert slice and both compressor halves resolve with the right shapes and bytes. */
static void test_slices(void **state) {
    char *rel = convert("release");
    dsq_wsrc *ws = NULL, *wc = NULL;
    dsq_v4_config cfg;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_wsrc_open_safetensors(model, &ws, &err), DSQ_OK);
    assert_int_equal(dsq_wsrc_open_path(rel, &cfg, &wc, &err), DSQ_OK);
    assert_int_equal(cfg.n_layers, 4);
    assert_int_equal(cfg.n_routed_experts, 8);
    const char *names[] = {"layers.1.ffn.experts.0.w1.weight",
                           "layers.1.ffn.experts.7.w2.weight",
                           "mtp.0.ffn.experts.5.w3.weight",
                           "layers.1.attn.compressor.wkv.weight",
                           "layers.1.attn.compressor.wgate.weight",
                           "layers.3.attn.indexer.compressor.wgate.weight",
                           "layers.2.attn.compressor.wkv.weight",
                           "layers.0.attn.wq_b.weight",
                           "embed.weight",
                           "layers.0.ffn.gate.tid2eid"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        dsq_wview a, b;
        assert_int_equal(ws->get(ws, names[i], &a, &err), DSQ_OK);
        dsq_status s = wc->get(wc, names[i], &b, &err);
        if (s) fprintf(stderr, "%s: %s\n", names[i], err.msg);
        assert_int_equal(s, DSQ_OK);
        assert_string_equal(b.name, names[i]);
        assert_int_equal(a.enc, b.enc);
        assert_int_equal(a.rank, b.rank);
        for (int k = 0; k < a.rank; k++) assert_int_equal(a.shape[k], b.shape[k]);
        assert_int_equal(a.data_bytes, b.data_bytes);
        assert_memory_equal(a.data, b.data, a.data_bytes);
        assert_int_equal(a.scale_bytes, b.scale_bytes);
        if (a.scale_bytes) assert_memory_equal(a.scale, b.scale, a.scale_bytes);
    }
    dsq_wview v;
    assert_int_equal(wc->get(wc, "layers.1.ffn.experts.8.w1.weight", &v, NULL), DSQ_ERR_MISSING);
    dsq_wsrc_close(wc);

    /* an INT4 expert slice (codes, F16 scales, group) decodes close to its FP4 source */
    char *i4 = convert("int4");
    assert_int_equal(dsq_wsrc_open_path(i4, &cfg, &wc, &err), DSQ_OK);
    for (int e = 0; e < 8; e += 7) {
        char nm[64];
        snprintf(nm, sizeof nm, "layers.3.ffn.experts.%d.w2.weight", e);
        dsq_wview a, b;
        assert_int_equal(ws->get(ws, nm, &a, &err), DSQ_OK);
        assert_int_equal(wc->get(wc, nm, &b, &err), DSQ_OK);
        assert_int_equal(b.enc, DSQ_ENC_INT4_G);
        assert_int_equal(b.group, 32);
        dsq_qtensor qa = {a.enc, a.shape[0], a.shape[1], a.group, a.data, a.scale, a.mins, a.tensor_scale};
        dsq_qtensor qb = {b.enc, b.shape[0], b.shape[1], b.group, b.data, b.scale, b.mins, b.tensor_scale};
        dsq_codec_errstats st;
        assert_int_equal(dsq_codec_compare(&qa, &qb, NULL, &st, &err), DSQ_OK);
        double rr = dsq_codec_errstats_rel_rms(&st), cs = dsq_codec_errstats_cosine(&st);
        printf("  %s int4 vs fp4 source: rel rms %.4f cosine %.5f\n", nm, rr, cs);
        assert_true(rr > 0.01 && rr < 0.1); /* INT4 g32 on FP4-grid data: a few percent */
        assert_true(cs > 0.995);
    }
    dsq_wsrc_close(ws);
    dsq_wsrc_close(wc);
    free(i4);
    /* a corrupted container is refused with a message naming it */
    char *bad = dsq_test_join(dsq_test_tmp, "bad.dsq");
    dsq_test_write(bad, DSQ_FILE_MAGIC "garbage", 15);
    assert_int_not_equal(dsq_wsrc_open_path(bad, &cfg, &wc, &err), DSQ_OK);
    assert_non_null(strstr(err.all, bad));
    dsq_err_clear(&err);
    free(bad);
    free(rel);
}

/* Page-cache hints cover each view's own bytes: one expert's slice of a stacked [E, out, in] tensor,
 * not the whole stack once per expert (which advised E² expert matrices per block). */
static void test_prefetch_view_bytes(void **state) {
    char *rel = convert("release");
    dsq_wsrc *wc = NULL;
    dsq_v4_config cfg;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_wsrc_open_path(rel, &cfg, &wc, &err), DSQ_OK);
    assert_non_null(wc->advice_stats);
    dsq_wview v;
    assert_int_equal(wc->get(wc, "layers.2.ffn.experts.5.w2.weight", &v, &err), DSQ_OK);
    uint64_t will0, dont0, will1, dont1;
    wc->advice_stats(wc, &will0, &dont0);
    wc->prefetch(wc, &v);
    wc->release(wc, &v);
    wc->advice_stats(wc, &will1, &dont1);
    assert_true(v.data_bytes > 0 && v.scale_bytes > 0);
    assert_int_equal(will1 - will0, v.data_bytes + v.scale_bytes);
    assert_int_equal(dont1 - dont0, v.data_bytes + v.scale_bytes);
    dsq_v4_model *m = NULL;
    assert_int_equal(dsq_v4_model_create(wc, &cfg, &m, &err), DSQ_OK); /* takes wc */
    for (int b = 0; b < cfg.n_layers + cfg.n_mtp_layers; b++) {
        wc->advice_stats(wc, &will0, &dont0);
        dsq_v4_block_prefetch(m, b);
        dsq_v4_block_release(m, b);
        wc->advice_stats(wc, &will1, &dont1);
        printf("  block %d: %llu bytes of weights, %llu advised\n", b, (unsigned long long)dsq_v4_block_bytes(m, b),
               (unsigned long long)(will1 - will0));
        assert_int_equal(will1 - will0, dsq_v4_block_bytes(m, b));
        assert_int_equal(dont1 - dont0, dsq_v4_block_bytes(m, b));
    }
    dsq_v4_model_close(m);
    dsq_err_clear(&err);
    free(rel);
}

/* Flip one byte of stored tensor `name`'s part p (in its middle) in place; returns that tensor's name. */
static void flip_byte(const char *path, const char *name, int p) {
    dsq_ctr_reader *r = NULL;
    assert_int_equal(dsq_ctr_reader_open(path, NULL, &r, NULL), DSQ_OK);
    const dsq_ctr_tensor *t = dsq_ctr_find(r, name);
    assert_non_null(t);
    uint64_t at = t->parts[p].offset + t->parts[p].bytes / 2;
    dsq_ctr_reader_close(r);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)at, SEEK_SET), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, (long)at, SEEK_SET), 0);
    fputc(c ^ 0x10, f);
    assert_int_equal(fclose(f), 0);
}

/* eval checks each .dsq part's checksum the first time it uses it: one flipped data bit in an expert
 * stack fails `eval ppl` with one line naming the tensor (it changed the perplexity silently before);
 * --no-verify-data skips the check and runs. */
static void test_eval_checks_checksums(void **state) {
    char *rel = convert("release");
    char *tokens = token_file(40);
    const char *stack = "layers.2.ffn.experts.w2.weight";
    char *out = NULL, *se = NULL;
    const char *ppl = "eval ppl '%s' --tokens '%s' --ctx 16 --chunks 2 --threads 1 %s";
    assert_int_equal(dsq_test_run(&out, &se, ppl, rel, tokens, ""), 0);
    free(out), free(se);
    flip_byte(rel, stack, 0);
    assert_int_equal(dsq_test_run(&out, &se, ppl, rel, tokens, ""), 1);
    printf("  %s", se);
    assert_non_null(strstr(se, stack));
    assert_non_null(strstr(se, "checksum"));
    assert_non_null(strstr(se, rel));
    assert_true(strchr(se, '\n') == se + strlen(se) - 1); /* one line */
    free(out), free(se);
    assert_int_equal(dsq_test_run(&out, &se, ppl, rel, tokens, "--no-verify-data"), 0);
    assert_non_null(strstr(out, "ppl"));
    free(out), free(se);
    /* eval diff builds its models over a layer-mixing source: the check reaches the container too */
    assert_int_equal(dsq_test_run(&out, &se, "eval diff '%s' '%s' --tokens '%s' --ctx 16 --chunks 1 --threads 1", model,
                                  rel, tokens),
                     1);
    printf("  %s", se);
    assert_non_null(strstr(se, stack));
    assert_non_null(strstr(se, "checksum"));
    free(out), free(se);
    /* dsq_v4 API: the check runs at the first forward pass, not at load */
    dsq_v4_model *m = NULL;
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_v4_model_open(rel, &m, &e), DSQ_OK);
    assert_int_equal(dsq_v4_model_check_block(m, -1, &e), DSQ_OK);
    assert_int_equal(dsq_v4_model_check_block(m, 2, &e), DSQ_ERR_CHECKSUM);
    assert_non_null(strstr(e.msg, stack));
    dsq_v4_model_close(m);
    dsq_err_clear(&e);
    free(tokens);
    free(rel);
}

/* `eval ppl` of `bad` fails (rc 1) with one line naming `tensor` and NaN/Inf, with and without
 * --no-verify-data (the non-finite scan is not a checksum). */
static void expect_nonfinite_refused(const char *bad, const char *tokens, const char *tensor) {
    const char *opts[] = {"", "--no-verify-data"};
    for (int i = 0; i < 2; i++) {
        char *se = NULL;
        assert_int_equal(
            dsq_test_run(NULL, &se, "eval ppl '%s' --tokens '%s' --ctx 16 --chunks 1 --threads 1 %s", bad, tokens, opts[i]),
            1);
        printf("  %s", se);
        assert_non_null(strstr(se, tensor));
        assert_non_null(strstr(se, "NaN or infinite"));
        free(se);
    }
}

/* A .dsq whose checksums are right but whose data holds an e4m3 NaN code (rewritten through the
 * writer): eval refuses it at first use naming the stored tensor, --no-verify-data too (the scan is
 * not a checksum), --allow-nonfinite runs it. */
static void test_eval_nonfinite_container(void **state) {
    char *rel = convert("release"), *bad = dsq_test_join(dsq_test_tmp, "nan.dsq");
    char *tokens = token_file(40);
    ctr_edit e = {.poke_tensor = "layers.1.attn.wq_b.weight", .poke_part = 0, .poke_at = 3 * 128 + 9, .poke_byte = 0xff};
    ctr_rewrite(rel, bad, &e);
    expect_nonfinite_refused(bad, tokens, "layers.1.attn.wq_b.weight");
    /* let through: the logits hold NaN (ppl would refuse those rows), written as they are */
    size_t rows = 0;
    float *lg = logits(bad, tokens, "--allow-nonfinite", &rows);
    size_t nans = 0;
    for (size_t i = 0; i < rows * 512; i++) nans += isnan(lg[i]) != 0;
    printf("  --allow-nonfinite: %zu of %zu logits NaN\n", nans, rows * 512);
    assert_true(nans > 0);
    free(lg);
    free(tokens), free(bad), free(rel);
}

/* A k-quant tensor keeps its F16 super-scales inside the code blocks, where the part scans (scales
 * part, codes as integers) do not look: an infinite d in one q4_k block of a stacked expert matrix is
 * refused at first use with one line naming the tensor, with or without checksums.  Before the merge
 * fix the block was evaluated silently. */
static void test_eval_nonfinite_kquant(void **state) {
    char *q = convert_as("q4k", "--recipe release --override '*experts.*.w1*=q4_k'");
    char *bad = dsq_test_join(dsq_test_tmp, "nan-q4k.dsq"), *tokens = token_file(40);
    /* block_q4_K: d (F16) at bytes 0-1 of each 144-byte block; 0x7f in the high byte: exponent all ones */
    ctr_edit e = {.poke_tensor = "layers.1.ffn.experts.w1.weight", .poke_part = 0, .poke_at = 5 * 144 + 1, .poke_byte = 0x7f};
    ctr_rewrite(q, bad, &e);
    expect_nonfinite_refused(bad, tokens, "layers.1.ffn.experts.0.w1.weight");
    char *so = NULL; /* the untouched container runs */
    assert_int_equal(dsq_test_run(&so, NULL, "eval ppl '%s' --tokens '%s' --ctx 16 --chunks 1 --threads 1", q, tokens), 0);
    free(so);
    free(tokens), free(bad), free(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_nonfinite_container),
        cmocka_unit_test(test_eval_nonfinite_kquant),
        cmocka_unit_test(test_eval_checks_checksums),
        cmocka_unit_test(test_prefetch_view_bytes),
        cmocka_unit_test(test_recipes_through_container),
        cmocka_unit_test(test_fp8_variants_through_container),
        cmocka_unit_test(test_decode_from_container),
        cmocka_unit_test(test_slices),
    };
    return cmocka_run_group_tests_name("eval_dsq", tests, setup, teardown);
}
