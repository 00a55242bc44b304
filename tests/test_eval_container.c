/* The forward pass on a .dsq container: the golden v4-tiny checkpoint is written into a container
 * with routed experts stacked [E, out, in] and each compressor's wkv|wgate fused, then evaluated
 * through the container weight source.  The logits must equal those from the safetensors
 * checkpoint bit for bit (the same stored bytes, reached through slices). */
#include <string.h>

#include "dsq_container.h"
#include "eval_util.h"

typedef struct plan_item {
    dsq_ctr_tensor_desc d;
    dsq_ctr_source_desc src[16];
    char names[16][2][128]; /* source weight / scale names */
    const dsq_st_tensor *w[16], *s[16];
    int n_members;
} plan_item;

static dsq_encoding enc_of(const dsq_st_tensor *w, uint32_t *br, uint32_t *bc) {
    *br = *bc = 0;
    switch (w->dtype) {
    case DSQ_DTYPE_F32:
        return DSQ_ENC_F32;
    case DSQ_DTYPE_BF16:
        return DSQ_ENC_BF16;
    case DSQ_DTYPE_I64:
        return DSQ_ENC_I64;
    case DSQ_DTYPE_F8_E4M3:
        *br = *bc = 128;
        return DSQ_ENC_FP8_B128;
    default:
        *br = 1, *bc = 32;
        return DSQ_ENC_MXFP4; /* I8 packed e2m1 */
    }
}

static const dsq_st_tensor *scale_of(const dsq_st *st, const char *name) {
    char s[256];
    size_t n = strlen(name);
    if (n < 7 || strcmp(name + n - 7, ".weight") != 0) return NULL;
    snprintf(s, sizeof s, "%.*s.scale", (int)(n - 7), name);
    return dsq_st_find(st, s);
}

/* Add member tensors (same dtype and shape) as one stored tensor: stacked (squeeze) or row-fused. */
static void add_member(plan_item *p, const dsq_st *st, const dsq_st_tensor *w, bool squeeze) {
    int k = p->n_members++;
    p->w[k] = w;
    p->s[k] = scale_of(st, w->name);
    snprintf(p->names[k][0], 128, "%s", w->name);
    if (p->s[k]) snprintf(p->names[k][1], 128, "%s", p->s[k]->name);
    uint64_t rows = w->shape[0];
    p->src[k] = (dsq_ctr_source_desc){p->names[k][0],
                                      p->s[k] ? p->names[k][1] : NULL,
                                      squeeze ? (uint64_t)k : rows * k,
                                      squeeze ? 1 : rows,
                                      squeeze,
                                      w->dtype,
                                      p->s[k] ? (int)p->s[k]->dtype : -1,
                                      DSQ_FILE_SHARD_UNKNOWN};
}

static char *write_container(const char *dir) {
    char *mp = dsq_test_shared_path("golden/v4-tiny/model");
    dsq_st *st = NULL;
    assert_int_equal(dsq_st_open(mp, NULL, &st, NULL), DSQ_OK);
    size_t n = dsq_st_count(st);
    plan_item *items = calloc(n, sizeof *items);
    size_t ni = 0;
    char(*stored)[128] = calloc(n, 128);
    for (size_t i = 0; i < n; i++) {
        const dsq_st_tensor *t = dsq_st_at(st, i);
        const char *nm = t->name;
        size_t len = strlen(nm);
        if (len > 6 && !strcmp(nm + len - 6, ".scale")) continue;
        const char *ex = strstr(nm, "ffn.experts."), *cw = strstr(nm, "compressor.wkv.weight");
        if (strstr(nm, "compressor.wgate.weight")) continue; /* joined to its wkv below */
        plan_item *p = &items[ni];
        uint32_t br, bc;
        dsq_encoding enc = enc_of(t, &br, &bc);
        uint64_t lcols = enc == DSQ_ENC_MXFP4 ? t->shape[1] * 2 : (t->rank > 1 ? t->shape[1] : 0);
        if (ex) {
            int e = atoi(ex + 12);
            if (e != 0) continue;                         /* the stack is planned at expert 0 */
            const char *wname = strchr(ex + 12, '.') + 1; /* "w1.weight" */
            snprintf(stored[ni], 128, "%.*sffn.experts.%s", (int)(ex - nm), nm, wname);
            for (int k = 0;; k++) {
                char mn[160];
                snprintf(mn, sizeof mn, "%.*sffn.experts.%d.%s", (int)(ex - nm), nm, k, wname);
                const dsq_st_tensor *m = dsq_st_find(st, mn);
                if (!m) break;
                add_member(p, st, m, true);
            }
            p->d = (dsq_ctr_tensor_desc){
                stored[ni], enc, 3, {(uint64_t)p->n_members, t->shape[0], lcols}, br, bc, (uint32_t)p->n_members,
                p->src};
        } else if (cw) {
            char gname[160];
            snprintf(gname, sizeof gname, "%.*scompressor.wgate.weight", (int)(cw - nm), nm);
            snprintf(stored[ni], 128, "%.*scompressor.wkv_wgate.weight", (int)(cw - nm), nm);
            add_member(p, st, t, false);
            add_member(p, st, dsq_st_find(st, gname), false);
            p->d = (dsq_ctr_tensor_desc){stored[ni], enc, 2, {2 * t->shape[0], lcols}, br, bc, 2, p->src};
        } else {
            snprintf(stored[ni], 128, "%s", nm);
            p->w[0] = t;
            p->s[0] = scale_of(st, nm);
            p->n_members = 1;
            p->d = (dsq_ctr_tensor_desc){stored[ni], enc, t->rank, {0}, br, bc, 0, NULL};
            for (int r = 0; r < t->rank; r++) p->d.shape[r] = t->shape[r];
            if (enc == DSQ_ENC_MXFP4) p->d.shape[1] = lcols;
        }
        ni++;
    }
    char *path = dsq_test_join(dir, "tiny.dsq");
    dsq_ctr_writer *w = NULL;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ctr_writer_create(path, NULL, &w, &err), DSQ_OK);
    for (size_t i = 0; i < ni; i++) {
        dsq_status s = dsq_ctr_writer_add(w, &items[i].d, NULL, &err);
        if (s) fprintf(stderr, "%s\n", err.msg);
        assert_int_equal(s, DSQ_OK);
    }
    char *cfg_path = dsq_test_join(mp, "config.json");
    char *cfg = dsq_test_read(cfg_path, NULL);
    size_t ml = strlen(cfg) + 256;
    char *meta = malloc(ml);
    snprintf(
        meta, ml,
        "{\"format\":\"dsq\",\"format_version\":\"1.0\",\"model\":{\"architecture\":\"deepseek_v4\",\"config\":%s}}",
        cfg);
    assert_int_equal(dsq_ctr_writer_set_metadata(w, meta, strlen(meta), &err), DSQ_OK);
    assert_int_equal(dsq_ctr_writer_begin(w, &err), DSQ_OK);
    for (uint32_t i = 0; i < ni; i++) {
        uint64_t off[2] = {0, 0};
        for (int k = 0; k < items[i].n_members; k++) {
            const dsq_st_tensor *tw = items[i].w[k], *ts = items[i].s[k];
            assert_int_equal(dsq_ctr_writer_write(w, i, 0, off[0], tw->data, tw->n_bytes, &err), DSQ_OK);
            off[0] += tw->n_bytes;
            if (ts) {
                assert_int_equal(dsq_ctr_writer_write(w, i, 1, off[1], ts->data, ts->n_bytes, &err), DSQ_OK);
                off[1] += ts->n_bytes;
            }
        }
        dsq_status s = dsq_ctr_writer_end_tensor(w, i, &err);
        if (s) fprintf(stderr, "%s\n", err.msg);
        assert_int_equal(s, DSQ_OK);
    }
    dsq_status s = dsq_ctr_writer_finish(w, &err);
    if (s) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(s, DSQ_OK);
    dsq_err_clear(&err);
    free(meta);
    free(cfg);
    free(cfg_path);
    free(stored);
    free(items);
    dsq_st_close(st);
    free(mp);
    return path;
}

static void test_container_equals_safetensors(void **state) {
    char *dir = dsq_test_tmpdir();
    char *path = write_container(dir);
    dsq_v4_model *a = eu_open_tiny(), *b = NULL;
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = dsq_v4_model_open(path, &b, &e);
    if (s) dsq_err_print(&e, stderr, "container: ");
    assert_int_equal(s, DSQ_OK);
    assert_int_equal(dsq_v4_block_bytes(a, 1), dsq_v4_block_bytes(b, 1));
    dsq_st *g = eu_open_st("golden/v4-tiny/golden-exact.safetensors");
    int32_t *tok = eu_i32(g, "tokens", NULL);
    dsq_st_close(g);
    enum { N = 48, V = 512 };
    float *la = malloc(sizeof(float) * N * V), *lb = malloc(sizeof(float) * N * V);
    dsq_eval_options o;
    eu_opts(&o);
    dsq_v4_model *ms[2] = {a, b};
    float *out[2] = {la, lb};
    for (int i = 0; i < 2; i++) {
        dsq_v4_seq *seq = NULL;
        assert_int_equal(dsq_v4_seq_create(ms[i], &seq, NULL), DSQ_OK);
        dsq_v4_item it = {seq, tok, N - 8, out[i], NULL, NULL};
        assert_int_equal(dsq_v4_forward(ms[i], &o, &it, 1, NULL), DSQ_OK);
        for (int p = N - 8; p < N; p++) { /* decode steps: the one-token kernels on the slices */
            dsq_v4_item st1 = {seq, tok + p, 1, out[i] + (size_t)p * V, NULL, NULL};
            assert_int_equal(dsq_v4_forward(ms[i], &o, &st1, 1, NULL), DSQ_OK);
        }
        dsq_v4_seq_free(seq);
    }
    assert_memory_equal(la, lb, sizeof(float) * N * V);
    /* and through the CLI */
    char *tf = dsq_test_join(dir, "t.txt"), *of = dsq_test_join(dir, "o.safetensors"), *se = NULL;
    dsq_test_write(tf, "3 1 4 1 5 9 2 6", 15);
    int rc = dsq_test_run(NULL, &se, "eval logits %s --tokens %s --out %s --threads 1", path, tf, of);
    if (rc) fprintf(stderr, "%s", se);
    assert_int_equal(rc, 0);
    free(se);
    free(tf);
    free(of);
    free(la);
    free(lb);
    free(tok);
    dsq_v4_model_close(a);
    dsq_v4_model_close(b);
    dsq_err_clear(&e);
    free(path);
    dsq_test_rmdir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_container_equals_safetensors)};
    return cmocka_run_group_tests_name("eval_container", tests, NULL, NULL);
}
