/* Weight source over a GGUF of llama.cpp's deepseek4 architecture (dsq_wsrc.h), split sets included.
 *
 * Checkpoint names resolve through the mapping of gguf_export.c (docs/interop.md).  F32 / F16 / BF16
 * tensors, and Q2_K … Q6_K / IQ4_XS (dsq's q2_k … iq4_xs are those very blocks), are zero-copy views
 * into the mapping; Q8_0 / Q4_0 / MXFP4 are unpacked once, at open, into
 * their dsq twins (int8-g32, int4-g32, mxfp4: the same values, codes and scales apart), so a view
 * is again a slice (a routed expert of a stacked tensor).  MTP's e_proj / h_proj are the two column
 * halves of nextn.eh_proj (copied apart at open); tid2eid is widened from I32 to I64.  A GGUF has no
 * name for mtp.m.hc_head_*: like llama.cpp, the main model's hc head is used.  Any other tensor type
 * fails at open with one line naming the tensor and the type.
 *
 * The config comes from the deepseek4.* hparams (rebuilt as a config.json and validated by
 * dsq_config_parse). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_config.h"
#include "dsq_ggml.h"
#include "dsq_gguf.h"
#include "dsq_json.h"
#include "dsq_wsrc.h"
#include "gguf_internal.h"

typedef struct gtensor {
    const dsq_gguf_tensor *t;
    dsq_encoding enc;
    int group;
    uint64_t rows, cols;      /* 2-D view of the whole tensor (rows = ne[1]·ne[2]·ne[3]) */
    const uint8_t *data, *scales;
    uint64_t row_bytes, scale_row_bytes;
    uint8_t *own;             /* unpacked codes + scales (block types), or NULL */
} gtensor;

typedef struct gsplit { /* e_proj / h_proj of one MTP block, copied out of eh_proj */
    char name[64];
    dsq_encoding enc;
    int group;
    uint64_t rows, cols;
    uint8_t *data, *scales;
    uint64_t data_bytes, scale_bytes;
} gsplit;

typedef struct gimpl {
    dsq_gguf **set;
    uint32_t n_files;
    gtensor *t;
    size_t n_t;
    gsplit *splits;
    size_t n_splits;
    uint8_t **tid; /* I64 copies of tid2eid, per tensor index (NULL elsewhere) */
    dsq_v4_config cfg;
} gimpl;

static const gtensor *find(const gimpl *im, const char *name) {
    for (size_t i = 0; i < im->n_t; i++)
        if (!strcmp(im->t[i].t->name, name)) return &im->t[i];
    return NULL;
}

static dsq_status prepare(gtensor *g, const char *path, dsq_err *err) {
    const dsq_gguf_tensor *t = g->t;
    g->cols = t->ne[0];
    g->rows = t->ne[1] * t->ne[2] * t->ne[3]; /* the reader checked the product */
    if (t->type == DSQ_GGML_I32 || t->type == DSQ_GGML_I64) {
        g->enc = t->type == DSQ_GGML_I32 ? DSQ_ENC_I32 : DSQ_ENC_I64;
        g->data = t->data;
        g->row_bytes = g->cols * (t->type == DSQ_GGML_I32 ? 4 : 8);
        return DSQ_OK;
    }
    DSQ_RETURN_IF(!dsq_ggml_encoding_of(t->type, &g->enc, &g->group), err, DSQ_ERR_UNSUPPORTED,
                  "%s: tensor %s: ggml type %s is not one dsq decodes (F32, F16, BF16, Q8_0, Q4_0, MXFP4, Q2_K..Q6_K, IQ4_XS)", path,
                  t->name, dsq_ggml_type_name(t->type));
    dsq_codec_layout L;
    DSQ_TRY(dsq_codec_layout_of(g->enc, g->rows, g->cols, g->group, &L, err));
    g->row_bytes = L.row_bytes;
    g->scale_row_bytes = L.scale_cols * (uint64_t)L.scale_size;
    if (L.scale_bytes == 0) {
        g->data = t->data;
        return DSQ_OK;
    }
    uint64_t total;
    DSQ_RETURN_IF(!dsq_add_u64(L.data_bytes, L.scale_bytes, &total) || total > SIZE_MAX, err, DSQ_ERR_OVERFLOW,
                  "%s: tensor %s: too big", path, t->name);
    g->own = dsq_malloc((size_t)total + 1);
    DSQ_RETURN_IF(!g->own, err, DSQ_ERR_NOMEM, "%s: tensor %s: out of memory unpacking %s", path, t->name,
                  dsq_ggml_type_name(t->type));
    dsq_qtensor_buf b = {g->enc, g->rows, g->cols, g->group, g->own, g->own + L.data_bytes, NULL, 0};
    DSQ_TRY(dsq_ggml_unpack(t->type, t->data, g->rows, g->cols, &b, err));
    g->data = g->own;
    g->scales = g->own + L.data_bytes;
    return DSQ_OK;
}

/* e_proj (half 0) and h_proj (half 1) of eh_proj [rows, 2·cols]: copy each half out. */
static dsq_status split_eh(gimpl *im, const gtensor *g, int m, const char *path, dsq_err *err) {
    uint64_t half = g->cols / 2;
    DSQ_RETURN_IF(g->cols % 2 || g->enc == DSQ_ENC_I32 || g->enc == DSQ_ENC_I64, err, DSQ_ERR_SHAPE,
                  "%s: %s: cannot split into e_proj | h_proj", path, g->t->name);
    dsq_codec_layout L;
    DSQ_TRY(dsq_codec_layout_of(g->enc, g->rows, half, g->group, &L, err));
    DSQ_RETURN_IF(L.row_bytes * 2 != g->row_bytes || L.scale_cols * (uint64_t)L.scale_size * 2 != g->scale_row_bytes,
                  err, DSQ_ERR_SHAPE, "%s: %s: halves do not fall on block boundaries", path, g->t->name);
    for (int h = 0; h < 2; h++) {
        gsplit *s = &im->splits[im->n_splits];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "mtp.%d.%s_proj.weight", m, h ? "h" : "e");
        s->enc = g->enc, s->group = g->group, s->rows = g->rows, s->cols = half;
        s->data_bytes = L.data_bytes, s->scale_bytes = L.scale_bytes;
        s->data = dsq_malloc((size_t)L.data_bytes + 1);
        s->scales = dsq_malloc((size_t)L.scale_bytes + 1);
        DSQ_RETURN_IF(!s->data || !s->scales, err, DSQ_ERR_NOMEM, "out of memory");
        im->n_splits++;
        for (uint64_t r = 0; r < g->rows; r++) {
            memcpy(s->data + r * L.row_bytes, g->data + r * g->row_bytes + h * L.row_bytes, (size_t)L.row_bytes);
            if (L.scale_bytes) {
                uint64_t sr = L.scale_cols * (uint64_t)L.scale_size;
                memcpy(s->scales + r * sr, g->scales + r * g->scale_row_bytes + h * sr, (size_t)sr);
            }
        }
    }
    return DSQ_OK;
}

static void fill(dsq_wview *v, const char *name, dsq_encoding enc, int group, int rank, const uint64_t *shape,
                 const uint8_t *data, uint64_t data_bytes, const uint8_t *scales, uint64_t scale_bytes) {
    memset(v, 0, sizeof *v);
    v->name = name;
    v->enc = enc;
    v->group = enc == DSQ_ENC_INT8_G || enc == DSQ_ENC_INT4_G ? group : 0;
    v->rank = rank;
    for (int i = 0; i < rank; i++) v->shape[i] = shape[i];
    v->data = data;
    v->data_bytes = data_bytes;
    v->scale = scale_bytes ? scales : NULL;
    v->scale_bytes = scale_bytes;
}

/* Whole tensor as a view with the canonical rank (the reverse of its ne). */
static void whole(const gtensor *g, dsq_wview *v) {
    uint64_t shape[DSQ_WVIEW_MAX_RANK];
    int rank = g->t->n_dims;
    for (int i = 0; i < rank; i++) shape[i] = g->t->ne[rank - 1 - i];
    fill(v, g->t->name, g->enc, g->group, rank, shape, g->data, g->rows * g->row_bytes, g->scales,
         g->rows * g->scale_row_bytes);
}

static dsq_status g_get(const dsq_wsrc *w, const char *name, dsq_wview *v, dsq_err *err) {
    const gimpl *im = w->impl;
    const dsq_v4_config *c = &im->cfg;
    char gn[160];
    const char *rest = NULL;
    int blk = -1, mtp = -1;
    if (!strncmp(name, "layers.", 7) || !strncmp(name, "mtp.", 4)) {
        bool is_mtp = name[0] == 'm';
        char *end;
        long i = strtol(name + (is_mtp ? 4 : 7), &end, 10);
        if (*end != '.' || i < 0 || i >= (is_mtp ? c->n_mtp_layers : c->n_layers)) goto missing;
        rest = end + 1;
        blk = is_mtp ? c->n_layers + (int)i : (int)i;
        if (is_mtp) mtp = (int)i;
    }
    if (blk < 0) {
        static const char *const G[][2] = {{"embed.weight", "token_embd.weight"}, {"head.weight", "output.weight"},
                                           {"norm.weight", "output_norm.weight"}, {"hc_head_fn", "output_hc_fn.weight"},
                                           {"hc_head_base", "output_hc_base.weight"},
                                           {"hc_head_scale", "output_hc_scale.weight"}};
        for (size_t k = 0; k < sizeof G / sizeof G[0]; k++)
            if (!strcmp(name, G[k][0])) {
                const gtensor *g = find(im, G[k][1]);
                if (!g) goto missing;
                whole(g, v);
                return DSQ_OK;
            }
        goto missing;
    }
    const char *suffix = dsq__gguf_block_suffix(rest);
    if (suffix) {
        snprintf(gn, sizeof gn, "blk.%d.%s", blk, suffix);
        const gtensor *g = find(im, gn);
        if (!g) goto missing;
        whole(g, v);
        return DSQ_OK;
    }
    if (mtp >= 0) {
        if (!strcmp(rest, "e_proj.weight") || !strcmp(rest, "h_proj.weight")) {
            for (size_t k = 0; k < im->n_splits; k++)
                if (!strcmp(im->splits[k].name, name)) {
                    const gsplit *s = &im->splits[k];
                    uint64_t shape[2] = {s->rows, s->cols};
                    fill(v, s->name, s->enc, s->group, 2, shape, s->data, s->data_bytes, s->scales, s->scale_bytes);
                    return DSQ_OK;
                }
            goto missing;
        }
        static const char *const M[][2] = {{"enorm.weight", "nextn.enorm.weight"},
                                           {"hnorm.weight", "nextn.hnorm.weight"},
                                           {"norm.weight", "nextn.shared_head_norm.weight"},
                                           {"hc_head_fn", "output_hc_fn.weight"},
                                           {"hc_head_base", "output_hc_base.weight"},
                                           {"hc_head_scale", "output_hc_scale.weight"}};
        for (size_t k = 0; k < sizeof M / sizeof M[0]; k++)
            if (!strcmp(rest, M[k][0])) {
                if (k < 3) snprintf(gn, sizeof gn, "blk.%d.%s", blk, M[k][1]);
                else snprintf(gn, sizeof gn, "%s", M[k][1]);
                const gtensor *g = find(im, gn);
                if (!g && k == 2) g = find(im, "output_norm.weight"); /* optional in llama.cpp too */
                if (!g) goto missing;
                whole(g, v);
                return DSQ_OK;
            }
    }
    if (!strcmp(rest, "ffn.gate.bias")) {
        snprintf(gn, sizeof gn, "blk.%d.exp_probs_b.bias", blk);
        const gtensor *g = find(im, gn);
        if (!g) goto missing;
        whole(g, v);
        return DSQ_OK;
    }
    if (!strcmp(rest, "ffn.gate.tid2eid")) {
        snprintf(gn, sizeof gn, "blk.%d.ffn_gate_tid2eid.weight", blk);
        const gtensor *g = find(im, gn);
        if (!g) goto missing;
        uint8_t *wide = im->tid[g - im->t];
        uint64_t shape[2] = {g->rows, g->cols};
        fill(v, g->t->name, DSQ_ENC_I64, 0, 2, shape, wide ? wide : g->data, g->rows * g->cols * 8, NULL, 0);
        return DSQ_OK;
    }
    int e, wk;
    char tail[16];
    if (sscanf(rest, "ffn.experts.%d.w%d.%15s", &e, &wk, tail) == 3 && !strcmp(tail, "weight") && e >= 0 &&
        e < c->n_routed_experts && wk >= 1 && wk <= 3) {
        static const char *const G[3] = {"ffn_gate_exps", "ffn_down_exps", "ffn_up_exps"};
        snprintf(gn, sizeof gn, "blk.%d.%s.weight", blk, G[wk - 1]);
        const gtensor *g = find(im, gn);
        if (!g || g->t->n_dims != 3 || g->t->ne[2] != (uint64_t)c->n_routed_experts) goto missing;
        uint64_t rows = g->t->ne[1], shape[2] = {rows, g->cols};
        fill(v, name, g->enc, g->group, 2, shape, g->data + (uint64_t)e * rows * g->row_bytes, rows * g->row_bytes,
             g->scales ? g->scales + (uint64_t)e * rows * g->scale_row_bytes : NULL, rows * g->scale_row_bytes);
        return DSQ_OK;
    }
missing:
    return dsq_err_set(err, DSQ_ERR_MISSING, "%s: tensor %s is missing", w->path, name);
}

static void g_close(dsq_wsrc *w) {
    if (!w) return;
    gimpl *im = w->impl;
    if (im) {
        for (size_t i = 0; i < im->n_t; i++) {
            dsq_free(im->t[i].own);
            if (im->tid) dsq_free(im->tid[i]);
        }
        for (size_t i = 0; i < im->n_splits; i++) dsq_free(im->splits[i].data), dsq_free(im->splits[i].scales);
        dsq_free(im->splits);
        dsq_free(im->tid);
        dsq_free(im->t);
        dsq_gguf_close_set(im->set, im->n_files);
        dsq_free(im);
    }
    dsq_free(w);
}

/* ---- config from the hparams ------------------------------------------------------------------- */
static bool num(const dsq_gguf *g, const char *key, double *out) {
    char k[128];
    snprintf(k, sizeof k, "deepseek4.%s", key);
    return dsq_gguf_get_f64(g, k, out);
}

static dsq_status config_of(const dsq_gguf *g, const char *path, dsq_v4_config *cfg, dsq_err *err) {
    char *arch = dsq_gguf_get_str(g, "general.architecture");
    bool ok = arch && !strcmp(arch, "deepseek4");
    dsq_free(arch);
    DSQ_RETURN_IF(!ok, err, DSQ_ERR_UNSUPPORTED, "%s: general.architecture is not deepseek4", path);
    double gating = 0;
    DSQ_RETURN_IF(num(g, "expert_gating_func", &gating) && gating != 4, err, DSQ_ERR_UNSUPPORTED,
                  "%s: expert_gating_func %g (deepseek4 scores with sqrtsoftplus, 4)", path, gating);
    cJSON *j = cJSON_CreateObject();
    DSQ_RETURN_IF(!j, err, DSQ_ERR_NOMEM, "out of memory");
    static const struct { const char *key, *field; bool required; } F[] = {
        {"embedding_length", "hidden_size", true},
        {"attention.head_count", "num_attention_heads", true},
        {"attention.head_count_kv", "num_key_value_heads", false},
        {"attention.key_length", "head_dim", true},
        {"rope.dimension_count", "qk_rope_head_dim", true},
        {"attention.q_lora_rank", "q_lora_rank", true},
        {"attention.output_lora_rank", "o_lora_rank", true},
        {"attention.output_group_count", "o_groups", true},
        {"expert_feed_forward_length", "moe_intermediate_size", true},
        {"expert_count", "n_routed_experts", true},
        {"expert_shared_count", "n_shared_experts", false},
        {"expert_used_count", "num_experts_per_tok", true},
        {"expert_weights_scale", "routed_scaling_factor", true},
        {"swiglu_clamp_exp", "swiglu_limit", false},
        {"attention.sliding_window", "sliding_window", true},
        {"attention.indexer.head_count", "index_n_heads", true},
        {"attention.indexer.key_length", "index_head_dim", true},
        {"attention.indexer.top_k", "index_topk", true},
        {"hyper_connection.count", "hc_mult", true},
        {"hyper_connection.sinkhorn_iterations", "hc_sinkhorn_iters", false},
        {"hyper_connection.epsilon", "hc_eps", false},
        {"attention.layer_norm_rms_epsilon", "rms_norm_eps", false},
        {"rope.freq_base", "rope_theta", false},
        {"attention.compress_rope_freq_base", "compress_rope_theta", false},
        {"hash_layer_count", "num_hash_layers", false},
        {"context_length", "max_position_embeddings", false},
    };
    dsq_status st = DSQ_OK;
    cJSON_AddStringToObject(j, "model_type", "deepseek_v4");
    cJSON_AddStringToObject(j, "scoring_func", "sqrtsoftplus");
    for (size_t k = 0; k < sizeof F / sizeof F[0] && st == DSQ_OK; k++) {
        double v;
        if (num(g, F[k].key, &v)) cJSON_AddNumberToObject(j, F[k].field, v);
        else if (F[k].required) st = dsq_err_set(err, DSQ_ERR_MISSING, "%s: deepseek4.%s is missing", path, F[k].key);
    }
    double blocks = 0, nextn = 0, vocab = 0;
    if (st == DSQ_OK && !num(g, "block_count", &blocks))
        st = dsq_err_set(err, DSQ_ERR_MISSING, "%s: deepseek4.block_count is missing", path);
    num(g, "nextn_predict_layers", &nextn);
    const dsq_gguf_kv *toks = dsq_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (!num(g, "vocab_size", &vocab) && toks) vocab = (double)toks->n;
    if (st == DSQ_OK && (vocab <= 0 || nextn > blocks))
        st = dsq_err_set(err, DSQ_ERR_CONFIG, "%s: vocab_size / nextn_predict_layers missing or inconsistent", path);
    cJSON_AddNumberToObject(j, "num_hidden_layers", blocks - nextn);
    cJSON_AddNumberToObject(j, "num_nextn_predict_layers", nextn);
    cJSON_AddNumberToObject(j, "vocab_size", vocab);
    const dsq_gguf_kv *ratios = dsq_gguf_find_kv(g, "deepseek4.attention.compress_ratios");
    if (st == DSQ_OK && (!ratios || ratios->type != DSQ_GGUF_V_ARRAY || ratios->n < (uint64_t)blocks))
        st = dsq_err_set(err, DSQ_ERR_MISSING, "%s: deepseek4.attention.compress_ratios missing or short", path);
    if (st == DSQ_OK) {
        cJSON *a = cJSON_AddArrayToObject(j, "compress_ratios");
        for (uint64_t i = 0; i < (uint64_t)blocks && st == DSQ_OK; i++) {
            double r;
            if (!dsq_gguf_kv_arr_f64(ratios, i, &r)) st = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: compress_ratios[%llu]", path,
                                                                      (unsigned long long)i);
            else cJSON_AddItemToArray(a, cJSON_CreateNumber(r));
        }
    }
    char *type = dsq_gguf_get_str(g, "deepseek4.rope.scaling.type");
    if (st == DSQ_OK && type && !strcmp(type, "yarn")) {
        cJSON *rs = cJSON_AddObjectToObject(j, "rope_scaling");
        double v;
        cJSON_AddStringToObject(rs, "type", "yarn");
        if (num(g, "rope.scaling.factor", &v)) cJSON_AddNumberToObject(rs, "factor", v);
        if (num(g, "rope.scaling.original_context_length", &v)) cJSON_AddNumberToObject(rs, "original_max_position_embeddings", v);
        /* llama.cpp does not read these two (its defaults are V4's 32 / 1); dsq honours them when present */
        if (num(g, "rope.scaling.yarn_beta_fast", &v)) cJSON_AddNumberToObject(rs, "beta_fast", v);
        if (num(g, "rope.scaling.yarn_beta_slow", &v)) cJSON_AddNumberToObject(rs, "beta_slow", v);
    }
    dsq_free(type);
    uint64_t id;
    if (dsq_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &id)) cJSON_AddNumberToObject(j, "bos_token_id", (double)id);
    if (dsq_gguf_get_u64(g, "tokenizer.ggml.eos_token_id", &id)) cJSON_AddNumberToObject(j, "eos_token_id", (double)id);
    if (st == DSQ_OK) {
        char *text = cJSON_PrintUnformatted(j);
        st = text ? dsq_config_parse(text, strlen(text), path, cfg, NULL, err) : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        cJSON_free(text);
    }
    cJSON_Delete(j);
    return st;
}

dsq_status dsq_gguf_v4_config(const dsq_gguf *g, dsq_v4_config *cfg, dsq_err *err) {
    return config_of(g, dsq_gguf_path(g), cfg, err);
}

dsq_status dsq_wsrc_open_gguf(const char *path, dsq_v4_config *cfg, dsq_wsrc **out, dsq_err *err) {
    *out = NULL;
    gimpl *im = dsq_calloc(1, sizeof *im);
    dsq_wsrc *w = dsq_calloc(1, sizeof *w);
    if (!im || !w) {
        dsq_free(im);
        dsq_free(w);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    w->impl = im;
    w->get = g_get;
    w->close = g_close;
    dsq_status st = dsq_gguf_open_set(path, &im->set, &im->n_files, err);
    if (st == DSQ_OK) {
        w->path = dsq_gguf_path(im->set[0]);
        st = config_of(im->set[0], path, &im->cfg, err);
    }
    size_t n = 0;
    for (uint32_t f = 0; st == DSQ_OK && f < im->n_files; f++) n += dsq_gguf_n_tensors(im->set[f]);
    if (st == DSQ_OK) {
        im->t = dsq_calloc(n + 1, sizeof *im->t);
        im->tid = dsq_calloc(n + 1, sizeof *im->tid);
        im->splits = dsq_calloc(2 * (size_t)im->cfg.n_mtp_layers + 1, sizeof *im->splits);
        if (!im->t || !im->tid || !im->splits) st = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    for (uint32_t f = 0; st == DSQ_OK && f < im->n_files; f++)
        for (size_t i = 0; st == DSQ_OK && i < dsq_gguf_n_tensors(im->set[f]); i++) {
            gtensor *g = &im->t[im->n_t++];
            g->t = dsq_gguf_tensor_at(im->set[f], i);
            st = prepare(g, dsq_gguf_path(im->set[f]), err);
            if (st == DSQ_OK && g->enc == DSQ_ENC_I32 && strstr(g->t->name, "ffn_gate_tid2eid")) {
                uint64_t cnt = g->rows * g->cols;
                im->tid[im->n_t - 1] = dsq_malloc((size_t)cnt * 8 + 1);
                if (!im->tid[im->n_t - 1]) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
                for (uint64_t k = 0; st == DSQ_OK && k < cnt; k++) {
                    int32_t v32;
                    memcpy(&v32, g->data + 4 * k, 4);
                    int64_t v64 = v32;
                    memcpy(im->tid[im->n_t - 1] + 8 * k, &v64, 8);
                }
            }
        }
    for (int m = 0; st == DSQ_OK && m < im->cfg.n_mtp_layers; m++) {
        char gn[96];
        snprintf(gn, sizeof gn, "blk.%d.nextn.eh_proj.weight", im->cfg.n_layers + m);
        const gtensor *g = find(im, gn);
        if (g) st = split_eh(im, g, m, path, err);
    }
    if (st != DSQ_OK) {
        g_close(w);
        return st;
    }
    if (cfg) *cfg = im->cfg;
    *out = w;
    return DSQ_OK;
}

bool dsq_wsrc_sniff_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char m[4] = {0};
    bool yes = fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
    fclose(f);
    return yes;
}
