/* Tensor inventory (spec §3): name classification, the expected inventory of the golden and released
 * configs (tensor counts, byte totals of spec §3.3), the checker on the golden model and on mutated
 * checkpoints written with the safetensors writer, release variants, statistics. */
#include <stdlib.h>
#include <string.h>

#include "dsq_inventory.h"
#include "dsq_test.h"

static dsq_v4_config tiny;

static int setup(void **state) {
    if (dsq_test_tmp_setup(state)) return -1;
    char *p = dsq_test_shared_path("golden/v4-tiny/model/config.json");
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_config_load(p, &tiny, NULL, &err);
    free(p);
    dsq_err_clear(&err);
    return s == DSQ_OK ? 0 : -1;
}
static int teardown(void **state) {
    dsq_test_tmp_teardown(state);
    return 0;
}

static void load_sample(const char *name, dsq_v4_config *c) {
    char path[256];
    snprintf(path, sizeof path, "samples/configs/%s", name);
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_config_load(path, c, NULL, &err), DSQ_OK);
    dsq_err_clear(&err);
}

static void test_classify(void **state) {
    dsq_tensor_role r;
    assert_true(dsq_inv_classify("layers.12.ffn.experts.255.w2.scale", &r));
    assert_int_equal(r.scope, DSQ_SCOPE_LAYER);
    assert_int_equal(r.index, 12);
    assert_int_equal(r.part, DSQ_PART_EXPERT_W2);
    assert_int_equal(r.expert, 255);
    assert_true(r.is_scale);
    assert_int_equal(r.family, DSQ_FAMILY_ROUTED_EXPERT_SCALES);

    assert_true(dsq_inv_classify("layers.3.attn.indexer.compressor.wgate.weight", &r));
    assert_int_equal(r.part, DSQ_PART_IDX_CMP_WGATE);
    assert_int_equal(r.family, DSQ_FAMILY_INDEXER);
    assert_false(r.is_scale);
    assert_int_equal(r.expert, -1);

    assert_true(dsq_inv_classify("layers.0.attn.compressor.wkv.scale", &r)); /* FP8 compressor releases */
    assert_int_equal(r.part, DSQ_PART_CMP_WKV);
    assert_int_equal(r.family, DSQ_FAMILY_SCALES);

    assert_true(dsq_inv_classify("mtp.0.e_proj.weight", &r));
    assert_int_equal(r.scope, DSQ_SCOPE_MTP);
    assert_int_equal(r.family, DSQ_FAMILY_MTP);
    assert_int_equal(dsq_inv_role_block(&tiny, &r), 4);

    assert_true(dsq_inv_classify("mtp.0.hc_head_base", &r));
    assert_int_equal(r.part, DSQ_PART_HC_HEAD_BASE);
    assert_int_equal(r.family, DSQ_FAMILY_HC);
    assert_true(dsq_inv_classify("hc_head_fn", &r));
    assert_int_equal(r.scope, DSQ_SCOPE_GLOBAL);
    assert_int_equal(dsq_inv_role_block(&tiny, &r), -1);
    assert_true(dsq_inv_classify("embed.weight", &r));
    assert_int_equal(r.family, DSQ_FAMILY_EMBED_HEAD);
    assert_true(dsq_inv_classify("layers.1.ffn.gate.tid2eid", &r));
    assert_int_equal(r.part, DSQ_PART_GATE_TID2EID);
    assert_int_equal(r.family, DSQ_FAMILY_ROUTER);
    assert_true(dsq_inv_classify("layers.1.ffn.gate.weight", &r));
    assert_int_equal(r.part, DSQ_PART_GATE);
    assert_true(dsq_inv_classify("layers.1.attn.kv_norm.weight", &r));
    assert_int_equal(r.family, DSQ_FAMILY_NORMS);
    assert_true(dsq_inv_classify("layers.1.ffn.shared_experts.w3.weight", &r));
    assert_int_equal(r.family, DSQ_FAMILY_SHARED_EXPERTS);

    /* §3.1 Notes: MTP copies of embed/head are tolerated */
    assert_true(dsq_inv_classify("mtp.0.embed.weight", &r));
    assert_int_equal(r.part, DSQ_PART_MTP_COPY);
    assert_true(dsq_inv_classify("mtp.1.shared_head.head.weight", &r));
    assert_int_equal(r.part, DSQ_PART_MTP_COPY);

    const char *bad[] = {"model.embed.weight",
                         "layers.01.attn_norm.weight",
                         "layers.x.attn_norm.weight",
                         "layers.1.attn_norm.scale",
                         "layers.1.attn_norm",
                         "embed.scale",
                         "layers.1.e_proj.weight",
                         "mtp.0.ffn.experts.1.w4.weight",
                         "layers.1.ffn.experts.-1.w1.weight",
                         "hc_attn_fn",
                         "layers.99999999999.attn_norm.weight",
                         "",
                         "layers.",
                         "layers.1.attn.wq_a.weight.x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (dsq_inv_classify(bad[i], &r)) fprintf(stderr, "classified: %s\n", bad[i]);
        assert_false(dsq_inv_classify(bad[i], &r));
        assert_int_equal(r.part, DSQ_PART_UNKNOWN);
        assert_int_equal(r.family, DSQ_FAMILY_OTHER);
    }
    dsq_family f;
    assert_true(dsq_family_from_name("routed_experts", &f));
    assert_int_equal(f, DSQ_FAMILY_ROUTED_EXPERTS);
    assert_false(dsq_family_from_name("nope", &f));
    assert_string_equal(dsq_part_name(DSQ_PART_IDX_WQ_B), "attn.indexer.wq_b");
}

/* Spec §3.3 byte totals and tensor counts of the released configs. */
static void test_expected_release(void **state) {
    dsq_v4_config c;
    dsq_inv *inv = NULL;
    dsq_err err = DSQ_ERR_INIT;
    load_sample("deepseek-v4-flash.json", &c);
    assert_int_equal(dsq_inv_expected(&c, NULL, &inv, &err), DSQ_OK);
    /* 43 blocks of 29 + 6E tensors, +11 per CSA (21), +4 per HCA (20); MTP +10; 6 global */
    assert_int_equal(dsq_inv_count(inv), 43 * (29 + 6 * 256) + 21 * 11 + 20 * 4 + (29 + 6 * 256 + 10) + 6);
    assert_int_equal(dsq_inv_total_bytes(inv), 159609485896ull);
    uint64_t fam[DSQ_FAMILY_COUNT] = {0};
    for (size_t i = 0; i < dsq_inv_count(inv); i++) fam[dsq_inv_at(inv, i)->role.family] += dsq_inv_at(inv, i)->n_bytes;
    assert_int_equal(fam[DSQ_FAMILY_ROUTED_EXPERTS], 141733920768ull);
    assert_int_equal(fam[DSQ_FAMILY_ROUTED_EXPERT_SCALES], 8858370048ull);
    assert_int_equal(fam[DSQ_FAMILY_SHARED_EXPERTS], 1107296256ull);
    assert_int_equal(fam[DSQ_FAMILY_EMBED_HEAD], 2118123520ull);
    /* first and last tensors, and a lookup */
    assert_string_equal(dsq_inv_at(inv, 0)->name, "embed.weight");
    assert_string_equal(dsq_inv_at(inv, dsq_inv_count(inv) - 1)->name, "head.weight");
    const dsq_inv_entry *e = dsq_inv_find(inv, "layers.42.attn.indexer.compressor.ape");
    assert_non_null(e);
    assert_int_equal(e->dtype, DSQ_DTYPE_F32);
    assert_int_equal(e->shape[0], 4);
    assert_int_equal(e->shape[1], 256);
    e = dsq_inv_find(inv, "layers.3.attn.compressor.ape"); /* HCA, r = 128 */
    assert_int_equal(e->shape[0], 128);
    assert_int_equal(e->shape[1], 512);
    e = dsq_inv_find(inv, "layers.7.ffn.experts.3.w2.scale");
    assert_int_equal(e->dtype, DSQ_DTYPE_F8_E8M0);
    assert_int_equal(e->alt_dtype, DSQ_DTYPE_F32);
    assert_int_equal(e->shape[0], 4096);
    assert_int_equal(e->shape[1], 64);
    e = dsq_inv_find(inv, "layers.2.ffn.gate.tid2eid");
    assert_int_equal(e->shape[0], 129280);
    assert_int_equal(e->shape[1], 6);
    assert_null(dsq_inv_find(inv, "layers.3.ffn.gate.tid2eid"));
    assert_null(dsq_inv_find(inv, "layers.1.attn.compressor.wkv.weight"));
    dsq_inv_free(inv);

    /* FP8 attention compressors (spec §3.3: 159,349,454,920 bytes; that total keeps the indexer's BF16) */
    dsq_inv_options o = {.compressor_fp8 = true};
    assert_int_equal(dsq_inv_expected(&c, &o, &inv, &err), DSQ_OK);
    assert_int_equal(dsq_inv_total_bytes(inv), 159349454920ull);
    dsq_inv_free(inv);
    /* indexer compressors FP8 too: 21 CSA layers x 2 x (256x4096 bytes saved - 2x32 scale bytes) less */
    dsq_inv_options o2 = {.compressor_fp8 = true, .indexer_compressor_fp8 = true};
    assert_int_equal(dsq_inv_expected(&c, &o2, &inv, &err), DSQ_OK);
    assert_int_equal(dsq_inv_total_bytes(inv), 159349454920ull - 21ull * 2 * (256 * 4096 - 64));
    dsq_inv_free(inv);
    /* Base: FP8 experts with F32 scales, ≈ 292.6 GB */
    dsq_inv_options base = {.experts = DSQ_INV_EXPERTS_FP8, .scales = DSQ_INV_SCALES_F32};
    assert_int_equal(dsq_inv_expected(&c, &base, &inv, &err), DSQ_OK);
    double gb = (double)dsq_inv_total_bytes(inv) / 1e9;
    assert_true(gb > 292.55 && gb < 292.65);
    dsq_inv_free(inv);

    load_sample("deepseek-v4-pro.json", &c);
    assert_int_equal(dsq_inv_expected(&c, NULL, &inv, &err), DSQ_OK);
    assert_int_equal(dsq_inv_total_bytes(inv), 864704792696ull);
    dsq_inv_free(inv);
    assert_int_equal(dsq_inv_expected(&c, &o, &inv, &err), DSQ_OK);
    assert_int_equal(dsq_inv_total_bytes(inv), 864036890552ull);
    dsq_inv_free(inv);
    assert_int_equal(dsq_inv_expected(&c, &base, &inv, &err), DSQ_OK);
    gb = (double)dsq_inv_total_bytes(inv) / 1e9;
    assert_true(gb > 1602.25 && gb < 1602.35);
    dsq_inv_free(inv);
    dsq_err_clear(&err);
}

static void open_golden(dsq_st **st, dsq_tensor_desc **d, size_t *n) {
    char *p = dsq_test_shared_path("golden/v4-tiny/model");
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_st_open(p, NULL, st, &err), DSQ_OK);
    assert_int_equal(dsq_inv_describe_st(*st, d, n, &err), DSQ_OK);
    dsq_err_clear(&err);
    free(p);
}

static void test_golden_checks_clean(void **state) {
    dsq_st *st;
    dsq_tensor_desc *d;
    size_t n;
    open_golden(&st, &d, &n);
    /* The golden README says 428; its header has 428 keys, one of them __metadata__. */
    assert_int_equal(n, 427);
    dsq_inv_report rep;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_inv_check(&tiny, d, n, "golden", &rep, &err);
    if (s) dsq_err_print(&err, stderr, "golden: ");
    assert_int_equal(s, DSQ_OK);
    assert_int_equal(err.n, 0);
    assert_int_equal(rep.variants.experts, DSQ_INV_EXPERTS_FP4);
    assert_int_equal(rep.variants.scales, DSQ_INV_SCALES_E8M0);
    assert_false(rep.variants.compressor_fp8);
    /* layer kinds: [sliding, CSA, HCA, CSA] + MTP block sliding, each block's tensors matching its kind */
    const dsq_attn_kind kinds[5] = {DSQ_ATTN_SLIDING, DSQ_ATTN_CSA, DSQ_ATTN_HCA, DSQ_ATTN_CSA, DSQ_ATTN_SLIDING};
    for (int b = 0; b < 5; b++) assert_int_equal(dsq_config_attn_kind(&tiny, b), kinds[b]);
    assert_non_null(dsq_st_find(st, "layers.2.attn.compressor.ape"));
    assert_null(dsq_st_find(st, "layers.2.attn.indexer.wq_b.weight"));
    assert_non_null(dsq_st_find(st, "layers.3.attn.indexer.wq_b.weight"));
    assert_null(dsq_st_find(st, "mtp.0.attn.compressor.ape"));
    /* expected inventory of the golden config has exactly these names */
    dsq_inv *inv;
    assert_int_equal(dsq_inv_expected(&tiny, NULL, &inv, &err), DSQ_OK);
    assert_int_equal(dsq_inv_count(inv), 427);
    assert_int_equal(dsq_inv_total_bytes(inv), dsq_st_total_bytes(st));
    dsq_inv_free(inv);

    /* statistics from the tensors agree with the config-only counts */
    dsq_inv_stats stats;
    dsq_inv_stats_compute(&tiny, d, n, &stats);
    dsq_param_counts pc;
    dsq_config_params(&tiny, &pc);
    assert_int_equal(stats.n_tensors, 427);
    assert_int_equal(stats.bytes_total, dsq_st_total_bytes(st));
    assert_int_equal(stats.params.total, pc.total);
    assert_int_equal(stats.params.active, pc.active);
    assert_int_equal(stats.params.total_mtp, pc.total_mtp);
    assert_int_equal(stats.params.active_mtp, pc.active_mtp);
    assert_int_equal(stats.params.routed_experts, pc.routed_experts);
    /* 4 layers x 8 experts x 3 x 128 x 256 */
    assert_int_equal(pc.routed_experts, 4ull * 8 * 3 * 128 * 256);
    assert_int_equal(pc.embed, 512 * 256);
    /* routed experts: I8 packed bytes = params / 2 over 5 blocks */
    assert_int_equal(stats.bytes_by_family[DSQ_FAMILY_ROUTED_EXPERTS], 5ull * 8 * 3 * 128 * 256 / 2);
    assert_int_equal(stats.bytes_by_family[DSQ_FAMILY_OTHER], 0);
    uint64_t sum = 0;
    for (int f = 0; f < DSQ_FAMILY_COUNT; f++) sum += stats.bytes_by_family[f];
    assert_int_equal(sum, stats.bytes_total);
    sum = 0;
    for (int t = 0; t < DSQ_DTYPE_COUNT; t++) sum += stats.bytes_by_dtype[t];
    assert_int_equal(sum, stats.bytes_total);
    assert_int_equal(stats.bytes_by_dtype[DSQ_DTYPE_I64], 512 * 2 * 8);
    dsq_free(d);
    dsq_st_close(st);
    dsq_err_clear(&err);
}

/* Write a header-complete checkpoint (zero data) holding `items` to dsq_test_tmp/NAME and describe it. */
static dsq_st *write_and_open(const char *name, dsq_st_item *items, size_t n, dsq_tensor_desc **d, size_t *nd) {
    uint64_t max = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t ne = 1;
        for (int k = 0; k < items[i].rank; k++) ne *= items[i].shape[k];
        ne *= dsq_dtype_size(items[i].dtype);
        if (ne > max) max = ne;
    }
    void *zeros = calloc(1, max ? max : 1);
    for (size_t i = 0; i < n; i++) items[i].data = zeros;
    char *path = dsq_test_join(dsq_test_tmp, name);
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_st_write_file(path, items, n, true, &err);
    if (s) dsq_err_print(&err, stderr, "write: ");
    assert_int_equal(s, DSQ_OK);
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(path, NULL, &st, &err), DSQ_OK);
    assert_int_equal(dsq_inv_describe_st(st, d, nd, &err), DSQ_OK);
    free(zeros);
    free(path);
    dsq_err_clear(&err);
    return st;
}

/* Items for the expected inventory of `c` under `o`, with room for `extra` more. */
static dsq_st_item *items_of(const dsq_v4_config *c, const dsq_inv_options *o, size_t extra, size_t *n,
                             dsq_inv **keep) {
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_inv_expected(c, o, keep, &err), DSQ_OK);
    *n = dsq_inv_count(*keep);
    dsq_st_item *items = calloc(*n + extra, sizeof *items);
    for (size_t i = 0; i < *n; i++) {
        const dsq_inv_entry *e = dsq_inv_at(*keep, i);
        items[i].name = e->name;
        items[i].dtype = e->dtype;
        items[i].rank = e->rank;
        items[i].shape[0] = e->shape[0];
        items[i].shape[1] = e->shape[1];
    }
    return items;
}

static size_t index_of(dsq_st_item *items, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(items[i].name, name)) return i;
    fail_msg("no item %s", name);
    return 0;
}

static void test_mutated_inventory(void **state) {
    dsq_inv *inv;
    size_t n;
    dsq_st_item *items = items_of(&tiny, NULL, 8, &n, &inv);
    /* missing: drop one tensor */
    size_t k = index_of(items, n, "layers.2.attn.compressor.wkv.weight");
    items[k] = items[--n];
    /* wrong dtype (same shape) */
    items[index_of(items, n, "layers.1.attn.q_norm.weight")].dtype = DSQ_DTYPE_F32;
    /* wrong shape */
    items[index_of(items, n, "layers.3.ffn.experts.5.w2.weight")].shape[1] = 32;
    /* unexpected: a compressor on a sliding-window layer, a layer that does not exist, a foreign name */
    items[n++] = (dsq_st_item){"layers.0.attn.compressor.ape", DSQ_DTYPE_F32, 2, {16, 128}, NULL};
    items[n++] = (dsq_st_item){"layers.7.attn_norm.weight", DSQ_DTYPE_BF16, 1, {256}, NULL};
    items[n++] = (dsq_st_item){"bogus.tensor", DSQ_DTYPE_F32, 1, {4}, NULL};
    items[n++] = (dsq_st_item){"layers.1.ffn.gate.tid2eid", DSQ_DTYPE_I64, 2, {512, 2}, NULL};
    /* tolerated: an MTP copy of the embedding */
    items[n++] = (dsq_st_item){"mtp.0.emb.tok_embeddings.weight", DSQ_DTYPE_BF16, 2, {512, 256}, NULL};
    dsq_tensor_desc *d;
    size_t nd;
    dsq_st *st = write_and_open("mutated.safetensors", items, n, &d, &nd);
    dsq_inv_report rep;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_inv_check(&tiny, d, nd, "mutated.safetensors", &rep, &err);
    assert_int_not_equal(s, DSQ_OK);
    assert_int_equal(rep.n_missing, 1);
    assert_int_equal(rep.n_dtype, 1);
    assert_int_equal(rep.n_shape, 1);
    assert_int_equal(rep.n_unexpected, 4);
    assert_int_equal(rep.n_ignored, 1);
    assert_int_equal(err.n, 7);
    const char *lines[] = {
        "mutated.safetensors: layers.2.attn.compressor.wkv.weight: missing (expected BF16 [128, 256])",
        "mutated.safetensors: layers.1.attn.q_norm.weight: dtype F32, expected BF16",
        "mutated.safetensors: layers.3.ffn.experts.5.w2.weight: shape [256, 32], expected [256, 64]",
        "mutated.safetensors: layers.0.attn.compressor.ape: unexpected tensor (block 0 is sliding-window only",
        "mutated.safetensors: layers.7.attn_norm.weight: unexpected tensor (layer 7 does not exist",
        "mutated.safetensors: bogus.tensor: unexpected tensor (not a DeepSeek-V4 tensor name)",
        "mutated.safetensors: layers.1.ffn.gate.tid2eid: unexpected tensor (block 1 is score-routed",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (!strstr(err.all, lines[i])) fprintf(stderr, "not found: %s\nin:\n%s", lines[i], err.all);
        assert_non_null(strstr(err.all, lines[i]));
    }
    dsq_err_clear(&err);
    dsq_free(d);
    dsq_st_close(st);
    free(items);
    dsq_inv_free(inv);
}

/* Each malformation alone gives its own status. */
static void test_problem_statuses(void **state) {
    struct {
        const char *name;
        int action; /* 0 drop, 1 dtype, 2 shape */
        dsq_status want;
    } cases[] = {
        {"layers.0.ffn.gate.tid2eid", 0, DSQ_ERR_MISSING},
        {"layers.2.attn.compressor.ape", 1, DSQ_ERR_DTYPE},
        {"mtp.0.e_proj.scale", 2, DSQ_ERR_SHAPE},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dsq_inv *inv;
        size_t n;
        dsq_st_item *items = items_of(&tiny, NULL, 0, &n, &inv);
        size_t k = index_of(items, n, cases[c].name);
        if (cases[c].action == 0) items[k] = items[--n];
        if (cases[c].action == 1) items[k].dtype = DSQ_DTYPE_BF16;
        if (cases[c].action == 2) items[k].shape[0] += 1;
        dsq_tensor_desc *d;
        size_t nd;
        dsq_st *st = write_and_open("one.safetensors", items, n, &d, &nd);
        dsq_err err = DSQ_ERR_INIT;
        assert_int_equal(dsq_inv_check(&tiny, d, nd, NULL, NULL, &err), cases[c].want);
        assert_int_equal(err.n, 1);
        assert_non_null(strstr(err.msg, cases[c].name));
        dsq_err_clear(&err);
        dsq_free(d);
        dsq_st_close(st);
        free(items);
        dsq_inv_free(inv);
    }
}

/* Dtype-driven variants of spec §1.3 check clean, and are detected. */
static void test_variants(void **state) {
    dsq_inv_options variants[] = {
        {.compressor_fp8 = true},
        {.compressor_fp8 = true, .indexer_compressor_fp8 = true},
        {.experts = DSQ_INV_EXPERTS_FP8, .scales = DSQ_INV_SCALES_F32},
        {.experts = DSQ_INV_EXPERTS_FP8, .scales = DSQ_INV_SCALES_F32, .indexer_compressor_fp8 = true},
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        dsq_inv *inv;
        size_t n;
        dsq_st_item *items = items_of(&tiny, &variants[v], 0, &n, &inv);
        dsq_tensor_desc *d;
        size_t nd;
        dsq_st *st = write_and_open("variant.safetensors", items, n, &d, &nd);
        dsq_inv_report rep;
        dsq_err err = DSQ_ERR_INIT;
        dsq_status s = dsq_inv_check(&tiny, d, nd, "variant", &rep, &err);
        if (s) dsq_err_print(&err, stderr, "variant: ");
        assert_int_equal(s, DSQ_OK);
        assert_int_equal(rep.variants.compressor_fp8, variants[v].compressor_fp8);
        assert_int_equal(rep.variants.indexer_compressor_fp8, variants[v].indexer_compressor_fp8);
        assert_int_equal(rep.variants.experts, variants[v].experts ? variants[v].experts : DSQ_INV_EXPERTS_FP4);
        assert_int_equal(rep.variants.scales, variants[v].scales ? variants[v].scales : DSQ_INV_SCALES_E8M0);
        /* FP8 and FP4 experts hold the same parameters */
        dsq_inv_stats stats;
        dsq_param_counts pc;
        dsq_inv_stats_compute(&tiny, d, nd, &stats);
        dsq_config_params(&tiny, &pc);
        assert_int_equal(stats.params.total, pc.total);
        assert_int_equal(stats.params.active, pc.active);
        dsq_err_clear(&err);
        dsq_free(d);
        dsq_st_close(st);
        free(items);
        dsq_inv_free(inv);
    }
    /* A BF16-compressor file that also ships compressor scales: the scales are unexpected. */
    dsq_inv *inv;
    size_t n;
    dsq_st_item *items = items_of(&tiny, NULL, 1, &n, &inv);
    items[n++] = (dsq_st_item){"layers.1.attn.compressor.wkv.scale", DSQ_DTYPE_F8_E8M0, 2, {2, 2}, NULL};
    dsq_tensor_desc *d;
    size_t nd;
    dsq_st *st = write_and_open("cmpscale.safetensors", items, n, &d, &nd);
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_inv_check(&tiny, d, nd, NULL, NULL, &err), DSQ_ERR_UNEXPECTED);
    assert_non_null(strstr(err.msg, "compressor projections of this checkpoint are BF16"));
    dsq_err_clear(&err);
    dsq_free(d);
    dsq_st_close(st);
    free(items);
    dsq_inv_free(inv);
}

static void test_alloc_failures(void **state) {
    /* every allocation of dsq_inv_expected may fail: each failure is reported, nothing leaks */
    for (long nth = 1; nth < 40; nth++) {
        dsq_inv *inv = (dsq_inv *)0x1;
        dsq_err err = DSQ_ERR_INIT;
        dsq_fault_set(DSQ_FAULT_MALLOC, nth);
        dsq_status s = dsq_inv_expected(&tiny, NULL, &inv, &err);
        dsq_fault_set(DSQ_FAULT_MALLOC, 0);
        if (s == DSQ_OK) {
            assert_int_equal(dsq_inv_count(inv), 427);
            dsq_inv_free(inv);
            dsq_err_clear(&err);
            break;
        }
        assert_int_equal(s, DSQ_ERR_NOMEM);
        assert_null(inv);
        dsq_err_clear(&err);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_expected_release),
        cmocka_unit_test(test_golden_checks_clean),
        cmocka_unit_test(test_mutated_inventory),
        cmocka_unit_test(test_problem_statuses),
        cmocka_unit_test(test_variants),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
