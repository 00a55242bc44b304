/* DeepSeek-V4 → GGUF (dsq_gguf_export.h).  Names, shapes and hparam keys follow llama.cpp's
 * src/models/deepseek4.cpp and src/llama-arch.cpp as shipped in @fugood/llama.node@1.7.15 (llama.cpp
 * build 10257); the mapping is tabulated in docs/interop.md. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_ctr_meta.h"
#include "dsq_ggml.h"
#include "dsq_gguf.h"
#include "dsq_gguf_export.h"
#include "dsq_imatrix.h"
#include "dsq_json.h"
#include "dsq_wsrc.h"
#include "gguf_internal.h"

/* ---- recipes ------------------------------------------------------------------------------------ */
enum {
    KEEP = -1, FT_ALL_F32 = 0, FT_F16 = 1, FT_Q4_0 = 2, FT_Q8_0 = 7, FT_Q2_K = 10, FT_Q3_K_M = 12, FT_Q4_K_M = 15,
    FT_BF16 = 32, FT_MXFP4_MOE = 38
};
static const dsq_gguf_recipe RECIPES[] = {
    {"gguf-keep", KEEP, KEEP, FT_BF16,
     "every stored encoding through its lossless GGML twin (mxfp4, int8-g32 → Q8_0, int4-g32 → Q4_0, "
     "q2_k..q6_k/iq4_xs → Q2_K..Q6_K/IQ4_XS, bf16/f16/f32; FP8 → BF16, exact)"},
    {"gguf-f32", DSQ_GGMLT_F32, DSQ_GGMLT_F32, FT_ALL_F32, "everything F32 (reference runs)"},
    {"gguf-bf16", DSQ_GGMLT_BF16, DSQ_GGMLT_BF16, FT_BF16, "every matrix BF16"},
    {"gguf-q8_0", DSQ_GGMLT_Q8_0, DSQ_GGMLT_Q8_0, FT_Q8_0, "every matrix Q8_0"},
    {"gguf-mxfp4-moe", DSQ_GGMLT_MXFP4, DSQ_GGMLT_Q8_0, FT_MXFP4_MOE,
     "routed experts MXFP4, the rest Q8_0 (llama-quantize MXFP4_MOE)"},
    {"gguf-bf16-mxfp4", DSQ_GGMLT_MXFP4, DSQ_GGMLT_BF16, FT_MXFP4_MOE,
     "routed experts MXFP4, the rest BF16 (community V4-Flash GGUFs; lossless from the release)"},
    {"gguf-f32-mxfp4", DSQ_GGMLT_MXFP4, DSQ_GGMLT_F32, FT_MXFP4_MOE,
     "routed experts MXFP4, the rest F32 (isolates the expert kernels in agreement tests)"},
    {"gguf-q4_0-moe", DSQ_GGMLT_Q4_0, DSQ_GGMLT_Q8_0, FT_Q4_0, "routed experts Q4_0, the rest Q8_0"},
    {"gguf-q4_k-moe", DSQ_GGMLT_Q4_K, DSQ_GGMLT_Q8_0, FT_Q4_K_M,
     "routed experts Q4_K (--imatrix weights the fit), the rest Q8_0"},
    {"gguf-q3_k-moe", DSQ_GGMLT_Q3_K, DSQ_GGMLT_Q8_0, FT_Q3_K_M, "routed experts Q3_K, the rest Q8_0"},
    {"gguf-q2_k-moe", DSQ_GGMLT_Q2_K, DSQ_GGMLT_Q8_0, FT_Q2_K, "routed experts Q2_K, the rest Q8_0"},
    {NULL, 0, 0, 0, NULL},
};
const dsq_gguf_recipe *dsq_gguf_recipes(void) { return RECIPES; }
const dsq_gguf_recipe *dsq_gguf_recipe_find(const char *name) {
    for (const dsq_gguf_recipe *r = RECIPES; r->name; r++)
        if (!strcmp(r->name, name)) return r;
    return NULL;
}

/* ---- the tensor plan ---------------------------------------------------------------------------- */
typedef enum tclass { C_SMALL = 0, C_TID = 1, C_EXPERTS = 2, C_OTHER = 3 } tclass;
typedef enum tmode { M_ROWS = 0, M_COLS = 1 } tmode; /* parts stacked along rows, or joined along cols */
/* A batch holds up to BATCH_PER_THREAD slabs per thread, halved (down to 2 per thread) while a
 * buffer would pass BATCH_MAX_BYTES: fewer, larger batches wait less at the loop's barrier. */
enum { MAX_PARTS = 1024, BATCH_PER_THREAD = 16, BATCH_MAX_BYTES = 64 << 20 };

typedef struct otensor {
    char name[DSQ_GGUF_MAX_NAME + 1];
    tclass cls;
    tmode mode;
    int n_parts;
    dsq_wview *parts; /* views of the canonical tensors */
    uint64_t part_rows, cols; /* each part as [part_rows, cols] (2-D view of any rank) */
    int n_dims;
    uint64_t ne[DSQ_GGUF_MAX_DIMS];
    uint32_t type;
} otensor;

typedef struct plan {
    otensor *t;
    size_t n, cap;
} plan;

static void plan_free(plan *p) {
    for (size_t i = 0; i < p->n; i++) dsq_free(p->t[i].parts);
    dsq_free(p->t);
}

static bool view_2d(const dsq_wview *v, uint64_t *rows, uint64_t *cols) {
    if (v->rank < 1) return false;
    uint64_t r = 1;
    for (int i = 0; i + 1 < v->rank; i++)
        if (!dsq_mul_u64(r, v->shape[i], &r)) return false;
    *rows = r;
    *cols = v->shape[v->rank - 1];
    return true;
}

static dsq_qtensor qt_of(const dsq_wview *v, uint64_t rows, uint64_t cols) {
    dsq_qtensor q = {v->enc, rows, cols, v->group, v->data, v->scale, v->mins, v->tensor_scale};
    return q;
}

/* Add an output tensor made of `n` canonical tensors (names[i]).  For 1 part with rank-1 source:
 * ne {cols}; rank 2: ne {cols, rows}; M_ROWS with n > 1: ne {cols, part_rows, n}; M_COLS: ne
 * {n·cols, rows}. */
static dsq_status add(plan *p, const dsq_wsrc *ws, const char *gname, tclass cls, tmode mode, char **names, int n,
                      dsq_err *err) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        otensor *t = dsq_realloc(p->t, cap * sizeof *t);
        DSQ_RETURN_IF(!t, err, DSQ_ERR_NOMEM, "out of memory");
        p->t = t;
        p->cap = cap;
    }
    otensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", gname);
    t->cls = cls;
    t->mode = mode;
    t->parts = dsq_calloc((size_t)n, sizeof *t->parts);
    DSQ_RETURN_IF(!t->parts, err, DSQ_ERR_NOMEM, "out of memory");
    p->n++;
    t->n_parts = n;
    for (int i = 0; i < n; i++) {
        DSQ_TRY(ws->get(ws, names[i], &t->parts[i], err));
        uint64_t r, c;
        DSQ_RETURN_IF(!view_2d(&t->parts[i], &r, &c), err, DSQ_ERR_SHAPE, "%s: %s: bad shape", ws->path, names[i]);
        if (i == 0) t->part_rows = r, t->cols = c;
        DSQ_RETURN_IF(r != t->part_rows || c != t->cols || t->parts[i].enc != t->parts[0].enc ||
                          t->parts[i].group != t->parts[0].group,
                      err, DSQ_ERR_SHAPE, "%s: %s differs in shape or encoding from %s", ws->path, names[i], names[0]);
    }
    const dsq_wview *v = &t->parts[0];
    if (mode == M_COLS) {
        t->n_dims = 2;
        t->ne[0] = t->cols * (uint64_t)n;
        t->ne[1] = t->part_rows;
    } else if (n > 1) {
        t->n_dims = 3;
        t->ne[0] = t->cols, t->ne[1] = t->part_rows, t->ne[2] = (uint64_t)n;
    } else if (v->rank == 1) {
        t->n_dims = 1;
        t->ne[0] = t->cols;
    } else {
        t->n_dims = 2;
        t->ne[0] = t->cols, t->ne[1] = t->part_rows;
    }
    for (int d = t->n_dims; d < DSQ_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    return DSQ_OK;
}

static dsq_status add1(plan *p, const dsq_wsrc *ws, const char *gname, tclass cls, const char *canon, dsq_err *err) {
    char *names[1] = {(char *)canon};
    return add(p, ws, gname, cls, M_ROWS, names, 1, err);
}

/* Per-block tensors: canonical suffix after "layers.i." / "mtp.m.", GGUF suffix after "blk.N.". */
static const struct { const char *canon, *gguf; tclass cls; } BLOCK_COMMON[] = {
    {"attn_norm.weight", "attn_norm.weight", C_SMALL},
    {"ffn_norm.weight", "ffn_norm.weight", C_SMALL},
    {"hc_attn_fn", "hc_attn_fn.weight", C_SMALL},
    {"hc_attn_base", "hc_attn_base.weight", C_SMALL},
    {"hc_attn_scale", "hc_attn_scale.weight", C_SMALL},
    {"hc_ffn_fn", "hc_ffn_fn.weight", C_SMALL},
    {"hc_ffn_base", "hc_ffn_base.weight", C_SMALL},
    {"hc_ffn_scale", "hc_ffn_scale.weight", C_SMALL},
    {"attn.wq_a.weight", "attn_q_a.weight", C_OTHER},
    {"attn.q_norm.weight", "attn_q_a_norm.weight", C_SMALL},
    {"attn.wq_b.weight", "attn_q_b.weight", C_OTHER},
    {"attn.wkv.weight", "attn_kv.weight", C_OTHER},
    {"attn.kv_norm.weight", "attn_kv_a_norm.weight", C_SMALL},
    {"attn.wo_a.weight", "attn_output_a.weight", C_OTHER},
    {"attn.wo_b.weight", "attn_output_b.weight", C_OTHER},
    {"attn.attn_sink", "attn_sinks.weight", C_SMALL},
    {"ffn.gate.weight", "ffn_gate_inp.weight", C_SMALL},
    {"ffn.shared_experts.w1.weight", "ffn_gate_shexp.weight", C_OTHER},
    {"ffn.shared_experts.w2.weight", "ffn_down_shexp.weight", C_OTHER},
    {"ffn.shared_experts.w3.weight", "ffn_up_shexp.weight", C_OTHER},
};
static const struct { const char *canon, *gguf; tclass cls; } BLOCK_COMPRESSOR[] = {
    {"attn.compressor.wkv.weight", "attn_compressor_kv.weight", C_OTHER},
    {"attn.compressor.wgate.weight", "attn_compressor_gate.weight", C_OTHER},
    {"attn.compressor.ape", "attn_compressor_ape.weight", C_SMALL},
    {"attn.compressor.norm.weight", "attn_compressor_norm.weight", C_SMALL},
};
static const struct { const char *canon, *gguf; tclass cls; } BLOCK_INDEXER[] = {
    {"attn.indexer.wq_b.weight", "indexer.attn_q_b.weight", C_OTHER},
    {"attn.indexer.weights_proj.weight", "indexer.proj.weight", C_OTHER},
    {"attn.indexer.compressor.wkv.weight", "indexer_compressor_kv.weight", C_OTHER},
    {"attn.indexer.compressor.wgate.weight", "indexer_compressor_gate.weight", C_OTHER},
    {"attn.indexer.compressor.ape", "indexer_compressor_ape.weight", C_SMALL},
    {"attn.indexer.compressor.norm.weight", "indexer_compressor_norm.weight", C_SMALL},
};

dsq_family dsq_gguf_family(const char *n) {
    if (!strcmp(n, "token_embd.weight") || !strcmp(n, "output.weight")) return DSQ_FAMILY_EMBED_HEAD;
    if (strstr(n, "_exps.")) return DSQ_FAMILY_ROUTED_EXPERTS;
    if (strstr(n, "_shexp.")) return DSQ_FAMILY_SHARED_EXPERTS;
    if (strstr(n, "hc_")) return DSQ_FAMILY_HC;
    if (strstr(n, "norm")) return DSQ_FAMILY_NORMS;
    if (strstr(n, "indexer")) return DSQ_FAMILY_INDEXER;
    if (strstr(n, "compressor")) return DSQ_FAMILY_COMPRESSOR;
    if (strstr(n, "ffn_gate_inp") || strstr(n, "exp_probs_b") || strstr(n, "tid2eid")) return DSQ_FAMILY_ROUTER;
    if (strstr(n, "nextn.")) return DSQ_FAMILY_MTP;
    if (strstr(n, "attn_")) return DSQ_FAMILY_ATTENTION;
    return DSQ_FAMILY_OTHER;
}

const char *dsq__gguf_block_suffix(const char *canon) {
    for (size_t k = 0; k < sizeof BLOCK_COMMON / sizeof BLOCK_COMMON[0]; k++)
        if (!strcmp(canon, BLOCK_COMMON[k].canon)) return BLOCK_COMMON[k].gguf;
    for (size_t k = 0; k < sizeof BLOCK_COMPRESSOR / sizeof BLOCK_COMPRESSOR[0]; k++)
        if (!strcmp(canon, BLOCK_COMPRESSOR[k].canon)) return BLOCK_COMPRESSOR[k].gguf;
    for (size_t k = 0; k < sizeof BLOCK_INDEXER / sizeof BLOCK_INDEXER[0]; k++)
        if (!strcmp(canon, BLOCK_INDEXER[k].canon)) return BLOCK_INDEXER[k].gguf;
    return NULL;
}

const char *dsq__gguf_block_canon(const char *g) {
    for (size_t k = 0; k < sizeof BLOCK_COMMON / sizeof BLOCK_COMMON[0]; k++)
        if (!strcmp(g, BLOCK_COMMON[k].gguf)) return BLOCK_COMMON[k].canon;
    for (size_t k = 0; k < sizeof BLOCK_COMPRESSOR / sizeof BLOCK_COMPRESSOR[0]; k++)
        if (!strcmp(g, BLOCK_COMPRESSOR[k].gguf)) return BLOCK_COMPRESSOR[k].canon;
    for (size_t k = 0; k < sizeof BLOCK_INDEXER / sizeof BLOCK_INDEXER[0]; k++)
        if (!strcmp(g, BLOCK_INDEXER[k].gguf)) return BLOCK_INDEXER[k].canon;
    return NULL;
}

#define FOR_TABLE(tab, body)                                                                       \
    for (size_t k_ = 0; k_ < sizeof tab / sizeof tab[0]; k_++) {                                   \
        snprintf(cn, sizeof cn, "%s%s", pre, tab[k_].canon);                                       \
        snprintf(gn, sizeof gn, "blk.%d.%s", b, tab[k_].gguf);                                     \
        body;                                                                                      \
    }

static dsq_status build_plan(const dsq_v4_config *c, const dsq_wsrc *ws, bool no_mtp, plan *p, dsq_err *err) {
    DSQ_TRY(add1(p, ws, "token_embd.weight", C_OTHER, "embed.weight", err));
    DSQ_TRY(add1(p, ws, "output_norm.weight", C_SMALL, "norm.weight", err));
    DSQ_TRY(add1(p, ws, "output.weight", C_OTHER, "head.weight", err));
    DSQ_TRY(add1(p, ws, "output_hc_fn.weight", C_SMALL, "hc_head_fn", err));
    DSQ_TRY(add1(p, ws, "output_hc_base.weight", C_SMALL, "hc_head_base", err));
    DSQ_TRY(add1(p, ws, "output_hc_scale.weight", C_SMALL, "hc_head_scale", err));
    int n_blocks = c->n_layers + (no_mtp ? 0 : c->n_mtp_layers);
    char pre[48], cn[160], gn[96];
    for (int b = 0; b < n_blocks; b++) {
        bool mtp = b >= c->n_layers;
        if (mtp) snprintf(pre, sizeof pre, "mtp.%d.", b - c->n_layers);
        else snprintf(pre, sizeof pre, "layers.%d.", b);
        FOR_TABLE(BLOCK_COMMON, DSQ_TRY(add1(p, ws, gn, BLOCK_COMMON[k_].cls, cn, err)));
        int ratio = dsq_config_ratio(c, b);
        DSQ_RETURN_IF(ratio != 0 && ratio != 4 && ratio != 128, err, DSQ_ERR_UNSUPPORTED,
                      "block %d: compress ratio %d (llama.cpp's deepseek4 loads 0, 4 and 128 only)", b, ratio);
        if (ratio) FOR_TABLE(BLOCK_COMPRESSOR, DSQ_TRY(add1(p, ws, gn, BLOCK_COMPRESSOR[k_].cls, cn, err)));
        if (ratio == 4) FOR_TABLE(BLOCK_INDEXER, DSQ_TRY(add1(p, ws, gn, BLOCK_INDEXER[k_].cls, cn, err)));
        if (dsq_config_routing(c, b) == DSQ_ROUTE_HASH) {
            snprintf(cn, sizeof cn, "%sffn.gate.tid2eid", pre);
            snprintf(gn, sizeof gn, "blk.%d.ffn_gate_tid2eid.weight", b);
            DSQ_TRY(add1(p, ws, gn, C_TID, cn, err));
        } else {
            snprintf(cn, sizeof cn, "%sffn.gate.bias", pre);
            snprintf(gn, sizeof gn, "blk.%d.exp_probs_b.bias", b);
            DSQ_TRY(add1(p, ws, gn, C_SMALL, cn, err));
        }
        /* routed experts stacked [E, out, in]: w1 → gate, w2 → down, w3 → up */
        static const char *const W[3] = {"w1", "w2", "w3"}, *const G[3] = {"ffn_gate_exps", "ffn_down_exps", "ffn_up_exps"};
        int E = c->n_routed_experts;
        DSQ_RETURN_IF(E < 1 || E > MAX_PARTS, err, DSQ_ERR_CONFIG, "n_routed_experts %d", E);
        char **names = dsq_calloc((size_t)E, sizeof *names);
        DSQ_RETURN_IF(!names, err, DSQ_ERR_NOMEM, "out of memory");
        dsq_status st = DSQ_OK;
        for (int w = 0; w < 3 && st == DSQ_OK; w++) {
            for (int e = 0; e < E && st == DSQ_OK; e++) {
                names[e] = dsq_malloc(160);
                if (!names[e]) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
                else snprintf(names[e], 160, "%sffn.experts.%d.%s.weight", pre, e, W[w]);
            }
            snprintf(gn, sizeof gn, "blk.%d.%s.weight", b, G[w]);
            if (st == DSQ_OK) st = add(p, ws, gn, C_EXPERTS, M_ROWS, names, E, err);
            for (int e = 0; e < E; e++) dsq_free(names[e]), names[e] = NULL;
        }
        dsq_free(names);
        DSQ_TRY(st);
        if (mtp) {
            /* llama.cpp: eh_proj · concat(enorm(e), hnorm(h)) = e_proj · e + h_proj · h */
            char en[160], hn[160];
            snprintf(en, sizeof en, "%se_proj.weight", pre);
            snprintf(hn, sizeof hn, "%sh_proj.weight", pre);
            char *eh[2] = {en, hn};
            snprintf(gn, sizeof gn, "blk.%d.nextn.eh_proj.weight", b);
            DSQ_TRY(add(p, ws, gn, C_OTHER, M_COLS, eh, 2, err));
            static const struct { const char *canon, *gguf; } MTP[] = {
                {"enorm.weight", "nextn.enorm.weight"},
                {"hnorm.weight", "nextn.hnorm.weight"},
                {"norm.weight", "nextn.shared_head_norm.weight"},
            };
            for (size_t k = 0; k < 3; k++) {
                snprintf(cn, sizeof cn, "%s%s", pre, MTP[k].canon);
                snprintf(gn, sizeof gn, "blk.%d.%s", b, MTP[k].gguf);
                DSQ_TRY(add1(p, ws, gn, C_SMALL, cn, err));
            }
            /* mtp.m.hc_head_*: no GGUF name; llama.cpp uses the main model's hc head (docs/interop.md) */
        }
    }
    return DSQ_OK;
}

/* Pick each tensor's ggml type; collect the unmappable ones into one line. */
static dsq_status choose_types(plan *p, const dsq_gguf_recipe *r, dsq_err *err) {
    char bad[512] = "";
    size_t n_bad = 0;
    for (size_t i = 0; i < p->n; i++) {
        otensor *t = &p->t[i];
        const dsq_wview *v = &t->parts[0];
        int want = t->cls == C_SMALL ? DSQ_GGMLT_F32 : t->cls == C_TID ? DSQ_GGMLT_I32
                   : t->cls == C_EXPERTS ? r->experts : r->other;
        uint32_t twin;
        if (want == KEEP) {
            if (dsq_ggml_twin_of(v->enc, v->group, &twin)) want = (int)twin;
            else if (v->enc == DSQ_ENC_FP8_B128 || v->enc == DSQ_ENC_FP8_R128 || v->enc == DSQ_ENC_FP8_ROW_E8M0)
                want = DSQ_GGMLT_BF16; /* e4m3 · 2^k: 4 significant bits, always a bf16 value */
            else if (v->enc == DSQ_ENC_FP8_B128_F32 || v->enc == DSQ_ENC_FP8_R128_F32 || v->enc == DSQ_ENC_FP8_ROW)
                want = DSQ_GGMLT_F32;
            else {
                char nb[32];
                if (n_bad < 3) {
                    size_t l = strlen(bad);
                    snprintf(bad + l, sizeof bad - l, "%s%s (%s)", n_bad ? ", " : "", t->name,
                             dsq_codec_name(v->enc, v->group, nb, sizeof nb));
                }
                n_bad++;
                continue;
            }
        }
        uint64_t rb;
        uint64_t cols = t->mode == M_COLS ? t->cols * (uint64_t)t->n_parts : t->cols;
        /* each part is encoded on its own row width (M_COLS joins parts along the row) */
        bool fits = dsq_ggml_row_bytes((uint32_t)want, cols, &rb) && dsq_ggml_row_bytes((uint32_t)want, t->cols, &rb);
        if (!fits && dsq_ggml_is_kquant((uint32_t)want)) {
            /* a k-quant on a row that is not a multiple of 256 (docs/interop.md): Q8_0 */
            want = DSQ_GGMLT_Q8_0;
            fits = dsq_ggml_row_bytes((uint32_t)want, cols, &rb) && dsq_ggml_row_bytes((uint32_t)want, t->cols, &rb);
        }
        if (!fits) {
            /* a block type on a row that is not a multiple of 32: keep it exact in F32 */
            want = DSQ_GGMLT_F32;
        }
        t->type = (uint32_t)want;
    }
    if (n_bad)
        return dsq_err_set(err, DSQ_ERR_UNSUPPORTED,
                           "recipe %s: %zu tensor(s) have no GGML twin: %s%s; use a recipe that re-quantizes "
                           "(gguf-bf16, gguf-q8_0, gguf-mxfp4-moe, gguf-bf16-mxfp4, gguf-f32)",
                           r->name, n_bad, bad, n_bad > 3 ? ", ..." : "");
    return DSQ_OK;
}

/* ---- tokenizer ------------------------------------------------------------------------------------ */
typedef struct tokdata {
    char *json, *config;      /* tokenizer.json and tokenizer_config.json texts (config may be NULL) */
    size_t json_len, config_len;
} tokdata;

static dsq_status read_tokenizer(const char *src, tokdata *td, dsq_err *err) {
    memset(td, 0, sizeof *td);
    if (dsq_ctr_sniff(src)) {
        dsq_ctr_reader *r = NULL;
        DSQ_TRY(dsq_ctr_reader_open(src, NULL, &r, err));
        dsq_ctr_meta *m = NULL;
        dsq_status st = dsq_ctr_meta_read(r, &m, err);
        if (st == DSQ_OK) {
            if (!m->tokenizer_json)
                st = dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata has no tokenizer.json (GGUF needs the tokenizer)", src);
            else {
                td->json = dsq_strdup(m->tokenizer_json);
                td->json_len = td->json ? strlen(td->json) : 0;
                if (m->tokenizer_config_json) {
                    td->config = dsq_strdup(m->tokenizer_config_json);
                    td->config_len = td->config ? strlen(td->config) : 0;
                }
                if (!td->json) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            }
        }
        dsq_ctr_meta_free(m);
        dsq_ctr_reader_close(r);
        return st;
    }
    char *f = dsq_path_join(src, "tokenizer.json"), *fc = dsq_path_join(src, "tokenizer_config.json");
    dsq_status st = !f || !fc ? dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory")
                              : dsq_read_file(f, (size_t)256 << 20, &td->json, &td->json_len, err);
    if (st == DSQ_OK && dsq_path_exists(fc)) st = dsq_read_file(fc, (size_t)64 << 20, &td->config, &td->config_len, err);
    dsq_free(f);
    dsq_free(fc);
    return st;
}

/* tokenizer.ggml.* (llama.cpp BPE "gpt2" model, pre-tokenizer "deepseek-v3" for the V3/V4 vocabulary). */
enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5 };
static dsq_status add_tokenizer(dsq_gguf_writer *w, const dsq_v4_config *c, const tokdata *td, const char *src,
                                dsq_gguf_export_stats *stats, dsq_err *err) {
    cJSON *j = NULL;
    DSQ_TRY(dsq_json_parse(td->json, td->json_len, "tokenizer.json", &j, err));
    dsq_status st = DSQ_OK;
    uint64_t V = c->vocab_size;
    char **tok = dsq_calloc((size_t)V, sizeof *tok);
    uint64_t *len = dsq_calloc((size_t)V, sizeof *len);
    int32_t *type = dsq_calloc((size_t)V, sizeof *type);
    const char **merges = NULL;
    uint64_t *mlen = NULL;
    char **mown = NULL;
    size_t n_merges = 0;
    if (!tok || !len || !type) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *mg = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *type_s = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (st == DSQ_OK && (!cJSON_IsObject(vocab) || !cJSON_IsArray(mg) || !cJSON_IsString(type_s) ||
                         strcmp(type_s->valuestring, "BPE") != 0))
        st = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: tokenizer.json: model is not BPE with vocab and merges", src);
    for (const cJSON *it = st == DSQ_OK ? vocab->child : NULL; it && st == DSQ_OK; it = it->next) {
        uint64_t id;
        if (!dsq_json_u64(it, &id)) st = dsq_err_set(err, DSQ_ERR_JSON, "%s: tokenizer.json: vocab id of '%s'", src, it->string);
        else if (id < V) tok[id] = it->string, len[id] = strlen(it->string), type[id] = TT_NORMAL;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(j, "added_tokens");
    for (const cJSON *it = st == DSQ_OK && cJSON_IsArray(added) ? added->child : NULL; it && st == DSQ_OK; it = it->next) {
        uint64_t id;
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!dsq_json_u64(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) || !cJSON_IsString(content))
            st = dsq_err_set(err, DSQ_ERR_JSON, "%s: tokenizer.json: added token without id/content", src);
        else if (id < V) {
            tok[id] = content->valuestring;
            len[id] = strlen(content->valuestring);
            type[id] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")) ? TT_CONTROL : TT_USER;
        }
    }
    /* ids the tokenizer does not use pad the table to vocab_size (llama.cpp's converter: [PADn]) */
    char **pads = NULL;
    if (st == DSQ_OK) pads = dsq_calloc((size_t)V, sizeof *pads);
    if (st == DSQ_OK && !pads) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < V && st == DSQ_OK; i++)
        if (!tok[i]) {
            pads[i] = dsq_malloc(32);
            if (!pads[i]) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            else {
                snprintf(pads[i], 32, "[PAD%llu]", (unsigned long long)i);
                tok[i] = pads[i], len[i] = strlen(pads[i]), type[i] = TT_UNUSED;
            }
        }
    if (st == DSQ_OK) {
        n_merges = (size_t)cJSON_GetArraySize(mg);
        merges = dsq_calloc(n_merges + 1, sizeof *merges);
        mlen = dsq_calloc(n_merges + 1, sizeof *mlen);
        mown = dsq_calloc(n_merges + 1, sizeof *mown);
        if (!merges || !mlen || !mown) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        size_t k = 0;
        for (const cJSON *it = st == DSQ_OK ? mg->child : NULL; it && st == DSQ_OK; it = it->next, k++) {
            if (cJSON_IsString(it)) merges[k] = it->valuestring, mlen[k] = strlen(it->valuestring);
            else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                     cJSON_IsString(it->child->next)) { /* newer tokenizer.json: ["a", "b"] */
                size_t a = strlen(it->child->valuestring), b = strlen(it->child->next->valuestring);
                mown[k] = dsq_malloc(a + b + 2);
                if (!mown[k]) st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
                else {
                    memcpy(mown[k], it->child->valuestring, a);
                    mown[k][a] = ' ';
                    memcpy(mown[k] + a + 1, it->child->next->valuestring, b + 1);
                    merges[k] = mown[k], mlen[k] = a + b + 1;
                }
            } else st = dsq_err_set(err, DSQ_ERR_JSON, "%s: tokenizer.json: merge %zu is not \"a b\" or [a, b]", src, k);
        }
    }
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_str(w, "tokenizer.ggml.model", "gpt2", err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_str(w, "tokenizer.ggml.pre", "deepseek-v3", err);
    /* llama.cpp knows the pre-tokenizer by name only; the exact one goes along for dsq (gguf_tokenizer.c) */
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer");
    if (st == DSQ_OK && pre && !cJSON_IsNull(pre)) {
        char *text = cJSON_PrintUnformatted(pre);
        st = text ? dsq_gguf_writer_kv_str(w, "dsq.tokenizer.pre_tokenizer", text, err) : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        cJSON_free(text);
    }
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, len, V, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_arr(w, "tokenizer.ggml.token_type", DSQ_GGUF_V_I32, type, V, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_arr_str(w, "tokenizer.ggml.merges", merges, mlen, n_merges, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_token_id, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_token_id, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)c->eos_token_id, err);
    /* spec §7: add_bos_token false, the chat template's text carries BOS */
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_bool(w, "tokenizer.ggml.add_bos_token", false, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_kv_bool(w, "tokenizer.ggml.add_eos_token", false, err);
    if (st == DSQ_OK && td->config) {
        cJSON *cj = NULL;
        if (dsq_json_parse(td->config, td->config_len, "tokenizer_config.json", &cj, NULL) == DSQ_OK) {
            const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(cj, "chat_template");
            if (cJSON_IsString(tpl)) st = dsq_gguf_writer_kv_str(w, "tokenizer.chat_template", tpl->valuestring, err);
        }
        cJSON_Delete(cj);
    }
    if (stats) stats->n_vocab = (uint32_t)V, stats->n_merges = (uint32_t)n_merges;
    if (pads)
        for (uint64_t i = 0; i < V; i++) dsq_free(pads[i]);
    if (mown)
        for (size_t i = 0; i < n_merges; i++) dsq_free(mown[i]);
    dsq_free(pads);
    dsq_free(mown);
    dsq_free(merges);
    dsq_free(mlen);
    dsq_free(tok);
    dsq_free(len);
    dsq_free(type);
    cJSON_Delete(j);
    return st;
}

/* ---- hparams ---------------------------------------------------------------------------------------- */
#define KV(call)                                                                                   \
    do {                                                                                           \
        dsq_status s_ = (call);                                                                    \
        if (s_ != DSQ_OK) return s_;                                                               \
    } while (0)
static dsq_status add_hparams(dsq_gguf_writer *w, const dsq_v4_config *c, int n_mtp, const dsq_gguf_recipe *r,
                              const char *src, const char *cmdline, dsq_err *err) {
    const char *name = strrchr(src, '/');
    name = name && name[1] ? name + 1 : src;
    KV(dsq_gguf_writer_kv_str(w, "general.architecture", "deepseek4", err));
    KV(dsq_gguf_writer_kv_str(w, "general.type", "model", err));
    KV(dsq_gguf_writer_kv_str(w, "general.name", name, err));
    KV(dsq_gguf_writer_kv_u32(w, "general.file_type", r->file_type, err));
    KV(dsq_gguf_writer_kv_u32(w, "general.quantization_version", 2, err));
    const char *A = "deepseek4";
    char k[128];
#define U32(key, v) (snprintf(k, sizeof k, "%s." key, A), dsq_gguf_writer_kv_u32(w, k, (uint32_t)(v), err))
#define F32(key, v) (snprintf(k, sizeof k, "%s." key, A), dsq_gguf_writer_kv_f32(w, k, (float)(v), err))
    int n_blocks = c->n_layers + n_mtp;
    KV(U32("vocab_size", c->vocab_size));
    KV(U32("context_length", c->max_position_embeddings));
    KV(U32("embedding_length", c->dim));
    KV(U32("block_count", n_blocks));
    KV(U32("nextn_predict_layers", n_mtp));
    KV(U32("feed_forward_length", c->moe_inter_dim));
    KV(U32("expert_feed_forward_length", c->moe_inter_dim));
    KV(U32("expert_count", c->n_routed_experts));
    KV(U32("expert_used_count", c->n_activated_experts));
    KV(U32("expert_shared_count", c->n_shared_experts));
    KV(F32("expert_weights_scale", c->route_scale));
    snprintf(k, sizeof k, "%s.expert_weights_norm", A);
    KV(dsq_gguf_writer_kv_bool(w, k, true, err)); /* spec §4.7: weights are normalized over the top k */
    KV(U32("expert_gating_func", 4));              /* LLAMA_EXPERT_GATING_FUNC_TYPE_SQRT_SOFTPLUS */
    KV(F32("swiglu_clamp_exp", c->swiglu_limit));
    KV(F32("swiglu_clamp_shexp", c->swiglu_limit)); /* spec §4.7.5: the shared expert is clamped too */
    KV(U32("hash_layer_count", c->n_hash_layers));
    KV(U32("attention.head_count", c->n_heads));
    KV(U32("attention.head_count_kv", c->n_kv_heads));
    KV(U32("attention.key_length", c->head_dim));
    KV(U32("attention.value_length", c->head_dim));
    KV(F32("attention.layer_norm_rms_epsilon", c->norm_eps));
    KV(U32("attention.q_lora_rank", c->q_lora_rank));
    KV(U32("attention.output_lora_rank", c->o_lora_rank));
    KV(U32("attention.output_group_count", c->o_groups));
    KV(U32("attention.sliding_window", c->window_size));
    KV(U32("attention.indexer.head_count", c->index_n_heads));
    KV(U32("attention.indexer.key_length", c->index_head_dim));
    KV(U32("attention.indexer.top_k", c->index_topk));
    KV(F32("attention.compress_rope_freq_base", c->compress_rope_theta));
    int32_t ratios[DSQ_MAX_LAYERS];
    for (int b = 0; b < n_blocks; b++) ratios[b] = dsq_config_ratio(c, b);
    snprintf(k, sizeof k, "%s.attention.compress_ratios", A);
    KV(dsq_gguf_writer_kv_arr(w, k, DSQ_GGUF_V_I32, ratios, (uint64_t)n_blocks, err));
    KV(U32("rope.dimension_count", c->rope_head_dim));
    KV(F32("rope.freq_base", c->rope_theta));
    if (c->has_yarn) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", A);
        KV(dsq_gguf_writer_kv_str(w, k, "yarn", err));
        KV(F32("rope.scaling.factor", c->rope_factor));
        KV(U32("rope.scaling.original_context_length", c->original_seq_len));
        KV(F32("rope.scaling.yarn_beta_fast", c->beta_fast));
        KV(F32("rope.scaling.yarn_beta_slow", c->beta_slow));
    }
    KV(U32("hyper_connection.count", c->hc_mult));
    KV(U32("hyper_connection.sinkhorn_iterations", c->hc_sinkhorn_iters));
    KV(F32("hyper_connection.epsilon", c->hc_eps));
#undef U32
#undef F32
    KV(dsq_gguf_writer_kv_str(w, "dsq.version", DSQ_VERSION_STRING, err));
    KV(dsq_gguf_writer_kv_str(w, "dsq.source", src, err));
    KV(dsq_gguf_writer_kv_str(w, "dsq.recipe", r->name, err));
    if (cmdline) KV(dsq_gguf_writer_kv_str(w, "dsq.command", cmdline, err));
    return DSQ_OK;
}

/* ---- writing ------------------------------------------------------------------------------------ */
/* The imatrix importance of a part (checkpoint name) for a k-quant target, or NULL. */
static const float *importance_of(dsq_imatrix *imx, const otensor *t, const dsq_wview *part) {
    if (!imx || !dsq_ggml_is_kquant(t->type)) return NULL;
    return dsq_imatrix_importance(imx, part->name, t->cols);
}

static void stats_add(dsq_gguf_export_stats *stats, const dsq_ggml_stats *gs) {
    stats->params += gs->values;
    stats->lossless_values += gs->lossless_values;
    stats->sum_sq_err += gs->sum_sq_err;
    stats->sum_sq_ref += gs->sum_sq_ref;
    stats->max_abs_err = gs->max_abs_err > stats->max_abs_err ? gs->max_abs_err : stats->max_abs_err;
}

/* The encoder's scratch: a batch of work units (one slab of rows of one part each) per buffer, two
 * buffers so the batch encoded last is written while the next one is encoded. */
typedef struct wscratch {
    int threads;
    bool direct;         /* O_DIRECT output: a write blocks until it is on disk */
    uint64_t batch;      /* units per batch */
    uint8_t *buf[2];     /* [batch][slab rows][row bytes] each */
    uint8_t *tmp;        /* M_COLS: one slab of one part */
    dsq_ggml_stats *gs;  /* [2][batch] */
    dsq_status *ust;     /* [2][batch] */
    dsq_err *uerr;       /* [2][batch] */
    dsq_ggml_scratch *scr; /* [threads]: the encoder's f32 slabs, reused (no page faults per slab) */
} wscratch;

/* M_COLS (MTP eh_proj only, small): each output row = part 0's row | part 1's row | ... */
static dsq_status write_cols(dsq_gguf_writer *w, const otensor *t, uint8_t *buf, uint8_t *tmp, uint64_t slab,
                             dsq_imatrix *imx, dsq_gguf_export_stats *stats, dsq_progress *pr, dsq_err *err) {
    dsq_ggml_stats gs = {0};
    uint64_t prow;
    if (!dsq_ggml_row_bytes(t->type, t->cols, &prow)) /* a part width off the block: not planned */
        return dsq_err_set(err, DSQ_ERR_SHAPE, "%s: row of %llu values cannot be %s", t->name,
                           (unsigned long long)t->cols, dsq_ggml_type_name(t->type));
    for (uint64_t r0 = 0; r0 < t->part_rows; r0 += slab) {
        if (dsq_interrupted()) return dsq_err_set(err, DSQ_ERR_INTERRUPTED, "interrupted");
        uint64_t n = t->part_rows - r0 < slab ? t->part_rows - r0 : slab;
        for (int k = 0; k < t->n_parts; k++) {
            dsq_qtensor q = qt_of(&t->parts[k], t->part_rows, t->cols);
            DSQ_TRY(dsq_ggml_encode_rows_w(&q, r0, n, t->type, importance_of(imx, t, &t->parts[k]), tmp, &gs,
                                           t->parts[k].name, err));
            for (uint64_t r = 0; r < n; r++)
                memcpy(buf + (r * (uint64_t)t->n_parts + (uint64_t)k) * prow, tmp + r * prow, (size_t)prow);
        }
        DSQ_TRY(dsq_gguf_writer_write(w, buf, (size_t)(n * prow * (uint64_t)t->n_parts), err));
        dsq_progress_add(pr, n * prow * (uint64_t)t->n_parts);
    }
    stats_add(stats, &gs);
    return DSQ_OK;
}

/* Write a batch's units in order (the output bytes do not depend on the thread count); their stats
 * are summed in unit order too, so the reported error does not either. */
static dsq_status write_batch(dsq_gguf_writer *w, const otensor *t, const wscratch *s, int slot, uint64_t u0, uint64_t nu,
                              uint64_t per_part, uint64_t slab, uint64_t prow, dsq_progress *pr, dsq_err *err) {
    for (uint64_t j = 0; j < nu; j++) {
        uint64_t u = u0 + j, r0 = (u % per_part) * slab;
        uint64_t n = t->part_rows - r0 < slab ? t->part_rows - r0 : slab;
        DSQ_TRY(dsq_gguf_writer_write(w, s->buf[slot] + j * slab * prow, (size_t)(n * prow), err));
        dsq_progress_add(pr, n * prow);
    }
    return DSQ_OK;
}

/* M_ROWS: the parts' slabs are work units numbered in output order.  Batches of units are encoded
 * in parallel (schedule(dynamic)); iteration 0 of each parallel loop writes the previous batch, so
 * reading and encoding overlap the writes. */
static dsq_status write_rows(dsq_gguf_writer *w, const otensor *t, wscratch *s, uint64_t slab, dsq_imatrix *imx,
                             dsq_gguf_export_stats *stats, dsq_progress *pr, dsq_err *err) {
    uint64_t prow;
    if (!dsq_ggml_row_bytes(t->type, t->cols, &prow))
        return dsq_err_set(err, DSQ_ERR_SHAPE, "%s: row of %llu values cannot be %s", t->name,
                           (unsigned long long)t->cols, dsq_ggml_type_name(t->type));
    if (t->part_rows == 0) return DSQ_OK;
    uint64_t per_part = dsq_ceil_div(t->part_rows, slab), units = per_part * (uint64_t)t->n_parts;
    /* dsq_imatrix_importance fills a cache on first use: look every part up before the threads start */
    const float **imp = dsq_calloc((size_t)t->n_parts, sizeof *imp);
    DSQ_RETURN_IF(!imp, err, DSQ_ERR_NOMEM, "out of memory");
    for (int p = 0; p < t->n_parts; p++) imp[p] = importance_of(imx, t, &t->parts[p]);
    /* a byte reorder of the stored twin is bound by the write: with buffered writes (the kernel's
     * writeback overlaps them) threads would only wait (and spin); an O_DIRECT write blocks until
     * the bytes are on disk, so a second thread reads and reorders the next batch meanwhile */
    uint32_t twin;
    bool par = s->threads > 1 &&
               (s->direct || !(dsq_ggml_twin_of(t->parts[0].enc, t->parts[0].group, &twin) && twin == t->type));
    dsq_status st = DSQ_OK;
    uint64_t prev_u0 = 0, prev_n = 0; /* the batch waiting to be written, in buf[prev_slot] */
    int slot = 0;
    for (uint64_t u0 = 0; st == DSQ_OK && (u0 < units || prev_n); u0 += s->batch) {
        if (dsq_interrupted()) {
            st = dsq_err_set(err, DSQ_ERR_INTERRUPTED, "interrupted");
            break;
        }
        uint64_t nu = u0 < units ? (units - u0 < s->batch ? units - u0 : s->batch) : 0;
        dsq_status wst = DSQ_OK;
        dsq_err werr;
        dsq_err_init(&werr);
        dsq_ggml_stats *gs = s->gs + (size_t)slot * s->batch;
        dsq_status *ust = s->ust + (size_t)slot * s->batch;
        dsq_err *uerr = s->uerr + (size_t)slot * s->batch;
        long long iters = (long long)nu + 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(s->threads) if (par && iters > 1)
        for (long long i = 0; i < iters; i++) {
            if (i == 0) {
                if (prev_n) wst = write_batch(w, t, s, slot ^ 1, prev_u0, prev_n, per_part, slab, prow, pr, &werr);
                continue;
            }
            uint64_t j = (uint64_t)i - 1, u = u0 + j;
            int p = (int)(u / per_part);
            uint64_t r0 = (u % per_part) * slab, n = t->part_rows - r0 < slab ? t->part_rows - r0 : slab;
            dsq_qtensor q = qt_of(&t->parts[p], t->part_rows, t->cols);
            memset(&gs[j], 0, sizeof gs[j]);
            int th = omp_get_thread_num();
            ust[j] = dsq_ggml_encode_rows_s(&q, r0, n, t->type, imp[p], s->buf[slot] + j * slab * prow, &gs[j],
                                            &s->scr[th < s->threads ? th : 0], t->parts[p].name, &uerr[j]);
        }
        if (wst != DSQ_OK) st = dsq_err_set(err, wst, "%s", werr.msg);
        dsq_err_clear(&werr);
        for (uint64_t j = 0; j < nu; j++) {
            if (st == DSQ_OK && ust[j] != DSQ_OK) st = dsq_err_set(err, ust[j], "%s", uerr[j].msg);
            if (ust[j] == DSQ_OK) stats_add(stats, &gs[j]);
            dsq_err_clear(&uerr[j]);
        }
        prev_u0 = u0, prev_n = nu, slot ^= 1;
    }
    dsq_free(imp);
    return st;
}

dsq_status dsq_gguf_export(const char *src, const char *out, const dsq_gguf_export_options *opt,
                           dsq_gguf_export_stats *stats, dsq_err *err) {
    dsq_gguf_export_options o = opt ? *opt : (dsq_gguf_export_options){0};
    dsq_gguf_export_stats st0;
    if (!stats) stats = &st0;
    memset(stats, 0, sizeof *stats);
    const dsq_gguf_recipe *r = dsq_gguf_recipe_find(o.recipe ? o.recipe : "gguf-keep");
    if (!r) {
        char list[512] = "";
        for (const dsq_gguf_recipe *x = RECIPES; x->name; x++) {
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", x->name);
        }
        return dsq_err_set(err, DSQ_ERR_ARG, "unknown GGUF recipe '%s' (%s)", o.recipe, list);
    }
    dsq_v4_config cfg;
    dsq_wsrc *ws = NULL;
    DSQ_TRY(dsq_wsrc_open_path(src, &cfg, &ws, err));
    plan p = {0};
    tokdata td = {0};
    dsq_gguf_writer *w = NULL;
    int n_mtp = o.no_mtp ? 0 : cfg.n_mtp_layers;
    dsq_status st = build_plan(&cfg, ws, o.no_mtp, &p, err);
    if (st == DSQ_OK) st = choose_types(&p, r, err);
    if (st == DSQ_OK) st = read_tokenizer(src, &td, err);
    if (st == DSQ_OK) st = dsq_gguf_writer_create(&w, err);
    if (st == DSQ_OK) st = add_hparams(w, &cfg, n_mtp, r, src, o.command_line, err);
    if (st == DSQ_OK) st = add_tokenizer(w, &cfg, &td, src, stats, err);
    uint64_t max_slab = 0;
    const uint64_t slab = DSQ_CODEC_SLAB_ROWS;
    for (size_t i = 0; i < p.n && st == DSQ_OK; i++) {
        otensor *t = &p.t[i];
        st = dsq_gguf_writer_tensor(w, t->name, t->type, t->n_dims, t->ne, err);
        uint64_t rb = 0;
        if (st == DSQ_OK && !dsq_ggml_row_bytes(t->type, t->ne[0], &rb))
            st = dsq_err_set(err, DSQ_ERR_SHAPE, "%s: bad row", t->name);
        if (rb * slab > max_slab) max_slab = rb * slab;
        if (st == DSQ_OK && t->type < DSQ_GGUF_EXPORT_TYPES) stats->by_type[t->type]++;
    }
    dsq_gguf_writer_options wo = {.overwrite = o.overwrite, .split_max_bytes = o.split_max_bytes, .direct = !o.buffered_io};
    dsq_gguf_plan gp = {0};
    if (st == DSQ_OK) st = o.dry_run ? dsq_gguf_writer_plan(w, &wo, &gp, err) : dsq_gguf_writer_begin(w, out, &wo, &gp, err);
    stats->tensors = p.n;
    stats->files = gp.n_files;
    stats->bytes = gp.total_bytes;
    stats->tensor_bytes = gp.tensor_bytes;
    wscratch ws2 = {.threads = o.threads > 1 ? o.threads : 1, .direct = !o.buffered_io};
    if (st == DSQ_OK && !o.dry_run) {
        ws2.batch = (uint64_t)ws2.threads * BATCH_PER_THREAD;
        while (ws2.batch > (uint64_t)ws2.threads * 2 && ws2.batch * max_slab > BATCH_MAX_BYTES) ws2.batch /= 2;
        uint64_t bb = 0;
        if (!dsq_mul_u64(max_slab, ws2.batch, &bb) || bb > SIZE_MAX / 4)
            st = dsq_err_set(err, DSQ_ERR_OVERFLOW, "%s: slab buffers too big", out);
        for (int k = 0; k < 2 && st == DSQ_OK; k++) ws2.buf[k] = dsq_malloc((size_t)bb + 1);
        if (st == DSQ_OK) {
            ws2.tmp = dsq_malloc((size_t)max_slab + 1);
            ws2.gs = dsq_calloc((size_t)ws2.batch * 2, sizeof *ws2.gs);
            ws2.ust = dsq_calloc((size_t)ws2.batch * 2, sizeof *ws2.ust);
            ws2.uerr = dsq_calloc((size_t)ws2.batch * 2, sizeof *ws2.uerr);
            ws2.scr = dsq_calloc((size_t)ws2.threads, sizeof *ws2.scr);
            if (!ws2.buf[0] || !ws2.buf[1] || !ws2.tmp || !ws2.gs || !ws2.ust || !ws2.uerr || !ws2.scr)
                st = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        }
        for (uint64_t k = 0; st == DSQ_OK && k < ws2.batch * 2; k++) dsq_err_init(&ws2.uerr[k]);
        dsq_progress pr;
        dsq_progress_begin(&pr, "gguf", gp.tensor_bytes);
        pr.enabled = pr.enabled && o.progress;
        /* readahead: the next tensor's source bytes are asked for (madvise WILLNEED) while this one is
         * encoded, so its reads are not one page fault at a time */
        for (int k = 0; p.n && k < p.t[0].n_parts && ws->prefetch; k++) ws->prefetch(ws, &p.t[0].parts[k]);
        for (size_t i = 0; i < p.n && st == DSQ_OK; i++) {
            const otensor *t = &p.t[i];
            for (int k = 0; i + 1 < p.n && k < p.t[i + 1].n_parts && ws->prefetch; k++) ws->prefetch(ws, &p.t[i + 1].parts[k]);
            st = t->mode == M_COLS ? write_cols(w, t, ws2.buf[0], ws2.tmp, slab / (uint64_t)t->n_parts, o.imatrix, stats, &pr, err)
                                   : write_rows(w, t, &ws2, slab, o.imatrix, stats, &pr, err);
            for (int k = 0; k < p.t[i].n_parts && ws->release; k++) ws->release(ws, &p.t[i].parts[k]);
        }
        dsq_progress_end(&pr);
        if (st == DSQ_OK) st = dsq_gguf_writer_finish(w, err);
    }
    stats->rel_rms_err = stats->sum_sq_ref > 0 ? sqrt(stats->sum_sq_err / stats->sum_sq_ref) : 0;
    dsq_gguf_writer_free(w);
    dsq_free(ws2.buf[0]);
    dsq_free(ws2.buf[1]);
    dsq_free(ws2.tmp);
    dsq_free(ws2.gs);
    dsq_free(ws2.ust);
    dsq_free(ws2.uerr);
    for (int k = 0; ws2.scr && k < ws2.threads; k++) dsq_ggml_scratch_free(&ws2.scr[k]);
    dsq_free(ws2.scr);
    dsq_free(td.json);
    dsq_free(td.config);
    plan_free(&p);
    dsq_wsrc_close(ws);
    return st;
}
