/* Tensor inventory of DeepSeek-V4 checkpoints (spec §3): name → role, the inventory a config
 * expects, the checker, statistics, and the parameter counts of dsq_config.h (summed over the
 * expected inventory so that config-only and checkpoint counts share one definition). */
#include "dsq_inventory.h"

#include <stdlib.h>
#include <string.h>

/* Block sizes (spec §2.4) and the CSA ratio (spec §1.2). */
enum { FP8_BLOCK = 128, FP4_BLOCK = 32, NVFP4_BLOCK = 16, CSA_RATIO = 4, HC_SCALES = 3 };

/* Saturating running total (byte and parameter sums over a source's tensors). */
static void sat_add(uint64_t *acc, uint64_t v) {
    if (!dsq_add_u64(*acc, v, acc)) *acc = UINT64_MAX;
}

/* ---- name → role ------------------------------------------------------------------------------ */

typedef enum stem_kind {
    K_WEIGHT, /* STEM.weight only */
    K_QUANT,  /* STEM.weight and STEM.scale (scale absent when the weight is stored unquantized) */
    K_BARE,   /* STEM itself (F32 / I64 tensors) */
} stem_kind;

typedef enum where {
    W_GLOBAL, /* top-level names */
    W_BLOCK,  /* layers.i.* and mtp.m.* */
    W_MTP,    /* mtp.m.* only */
    W_EXPERT, /* P ffn.experts.e.* */
} where;

typedef struct part_info {
    dsq_part part;
    const char *stem;
    stem_kind kind;
    where w;
    dsq_family family;
} part_info;

static const part_info PARTS[] = {
    {DSQ_PART_EMBED, "embed", K_WEIGHT, W_GLOBAL, DSQ_FAMILY_EMBED_HEAD},
    {DSQ_PART_HEAD, "head", K_WEIGHT, W_GLOBAL, DSQ_FAMILY_EMBED_HEAD},
    {DSQ_PART_NORM, "norm", K_WEIGHT, W_GLOBAL, DSQ_FAMILY_NORMS},
    {DSQ_PART_HC_HEAD_FN, "hc_head_fn", K_BARE, W_GLOBAL, DSQ_FAMILY_HC},
    {DSQ_PART_HC_HEAD_BASE, "hc_head_base", K_BARE, W_GLOBAL, DSQ_FAMILY_HC},
    {DSQ_PART_HC_HEAD_SCALE, "hc_head_scale", K_BARE, W_GLOBAL, DSQ_FAMILY_HC},
    {DSQ_PART_ATTN_NORM, "attn_norm", K_WEIGHT, W_BLOCK, DSQ_FAMILY_NORMS},
    {DSQ_PART_FFN_NORM, "ffn_norm", K_WEIGHT, W_BLOCK, DSQ_FAMILY_NORMS},
    {DSQ_PART_HC_ATTN_FN, "hc_attn_fn", K_BARE, W_BLOCK, DSQ_FAMILY_HC},
    {DSQ_PART_HC_ATTN_BASE, "hc_attn_base", K_BARE, W_BLOCK, DSQ_FAMILY_HC},
    {DSQ_PART_HC_ATTN_SCALE, "hc_attn_scale", K_BARE, W_BLOCK, DSQ_FAMILY_HC},
    {DSQ_PART_HC_FFN_FN, "hc_ffn_fn", K_BARE, W_BLOCK, DSQ_FAMILY_HC},
    {DSQ_PART_HC_FFN_BASE, "hc_ffn_base", K_BARE, W_BLOCK, DSQ_FAMILY_HC},
    {DSQ_PART_HC_FFN_SCALE, "hc_ffn_scale", K_BARE, W_BLOCK, DSQ_FAMILY_HC},
    {DSQ_PART_WQ_A, "attn.wq_a", K_QUANT, W_BLOCK, DSQ_FAMILY_ATTENTION},
    {DSQ_PART_Q_NORM, "attn.q_norm", K_WEIGHT, W_BLOCK, DSQ_FAMILY_NORMS},
    {DSQ_PART_WQ_B, "attn.wq_b", K_QUANT, W_BLOCK, DSQ_FAMILY_ATTENTION},
    {DSQ_PART_WKV, "attn.wkv", K_QUANT, W_BLOCK, DSQ_FAMILY_ATTENTION},
    {DSQ_PART_KV_NORM, "attn.kv_norm", K_WEIGHT, W_BLOCK, DSQ_FAMILY_NORMS},
    {DSQ_PART_WO_A, "attn.wo_a", K_QUANT, W_BLOCK, DSQ_FAMILY_ATTENTION},
    {DSQ_PART_WO_B, "attn.wo_b", K_QUANT, W_BLOCK, DSQ_FAMILY_ATTENTION},
    {DSQ_PART_ATTN_SINK, "attn.attn_sink", K_BARE, W_BLOCK, DSQ_FAMILY_ATTENTION},
    {DSQ_PART_CMP_APE, "attn.compressor.ape", K_BARE, W_BLOCK, DSQ_FAMILY_COMPRESSOR},
    {DSQ_PART_CMP_WKV, "attn.compressor.wkv", K_QUANT, W_BLOCK, DSQ_FAMILY_COMPRESSOR},
    {DSQ_PART_CMP_WGATE, "attn.compressor.wgate", K_QUANT, W_BLOCK, DSQ_FAMILY_COMPRESSOR},
    {DSQ_PART_CMP_NORM, "attn.compressor.norm", K_WEIGHT, W_BLOCK, DSQ_FAMILY_NORMS},
    {DSQ_PART_IDX_WQ_B, "attn.indexer.wq_b", K_QUANT, W_BLOCK, DSQ_FAMILY_INDEXER},
    {DSQ_PART_IDX_WEIGHTS_PROJ, "attn.indexer.weights_proj", K_WEIGHT, W_BLOCK, DSQ_FAMILY_INDEXER},
    {DSQ_PART_IDX_CMP_APE, "attn.indexer.compressor.ape", K_BARE, W_BLOCK, DSQ_FAMILY_INDEXER},
    {DSQ_PART_IDX_CMP_WKV, "attn.indexer.compressor.wkv", K_QUANT, W_BLOCK, DSQ_FAMILY_INDEXER},
    {DSQ_PART_IDX_CMP_WGATE, "attn.indexer.compressor.wgate", K_QUANT, W_BLOCK, DSQ_FAMILY_INDEXER},
    {DSQ_PART_IDX_CMP_NORM, "attn.indexer.compressor.norm", K_WEIGHT, W_BLOCK, DSQ_FAMILY_NORMS},
    {DSQ_PART_GATE, "ffn.gate", K_WEIGHT, W_BLOCK, DSQ_FAMILY_ROUTER},
    {DSQ_PART_GATE_BIAS, "ffn.gate.bias", K_BARE, W_BLOCK, DSQ_FAMILY_ROUTER},
    {DSQ_PART_GATE_TID2EID, "ffn.gate.tid2eid", K_BARE, W_BLOCK, DSQ_FAMILY_ROUTER},
    {DSQ_PART_EXPERT_W1, "w1", K_QUANT, W_EXPERT, DSQ_FAMILY_ROUTED_EXPERTS},
    {DSQ_PART_EXPERT_W2, "w2", K_QUANT, W_EXPERT, DSQ_FAMILY_ROUTED_EXPERTS},
    {DSQ_PART_EXPERT_W3, "w3", K_QUANT, W_EXPERT, DSQ_FAMILY_ROUTED_EXPERTS},
    {DSQ_PART_SHARED_W1, "ffn.shared_experts.w1", K_QUANT, W_BLOCK, DSQ_FAMILY_SHARED_EXPERTS},
    {DSQ_PART_SHARED_W2, "ffn.shared_experts.w2", K_QUANT, W_BLOCK, DSQ_FAMILY_SHARED_EXPERTS},
    {DSQ_PART_SHARED_W3, "ffn.shared_experts.w3", K_QUANT, W_BLOCK, DSQ_FAMILY_SHARED_EXPERTS},
    {DSQ_PART_E_PROJ, "e_proj", K_QUANT, W_MTP, DSQ_FAMILY_MTP},
    {DSQ_PART_H_PROJ, "h_proj", K_QUANT, W_MTP, DSQ_FAMILY_MTP},
    {DSQ_PART_ENORM, "enorm", K_WEIGHT, W_MTP, DSQ_FAMILY_NORMS},
    {DSQ_PART_HNORM, "hnorm", K_WEIGHT, W_MTP, DSQ_FAMILY_NORMS},
    {DSQ_PART_NORM, "norm", K_WEIGHT, W_MTP, DSQ_FAMILY_NORMS},
    {DSQ_PART_HC_HEAD_FN, "hc_head_fn", K_BARE, W_MTP, DSQ_FAMILY_HC},
    {DSQ_PART_HC_HEAD_BASE, "hc_head_base", K_BARE, W_MTP, DSQ_FAMILY_HC},
    {DSQ_PART_HC_HEAD_SCALE, "hc_head_scale", K_BARE, W_MTP, DSQ_FAMILY_HC},
};

static const char *const FAMILY_NAMES[DSQ_FAMILY_COUNT] = {
    "embed_head",     "attention", "compressor", "indexer", "router", "routed_experts", "routed_expert_scales",
    "shared_experts", "hc",        "norms",      "mtp",     "scales", "other",
};

const char *dsq_family_name(dsq_family f) { return (unsigned)f < DSQ_FAMILY_COUNT ? FAMILY_NAMES[f] : "?"; }

bool dsq_family_from_name(const char *s, dsq_family *out) {
    for (int f = 0; f < DSQ_FAMILY_COUNT; f++)
        if (!strcmp(s, FAMILY_NAMES[f])) {
            *out = (dsq_family)f;
            return true;
        }
    return false;
}

const char *dsq_part_name(dsq_part p) {
    switch (p) {
    case DSQ_PART_EXPERT_W1:
        return "ffn.experts.w1";
    case DSQ_PART_EXPERT_W2:
        return "ffn.experts.w2";
    case DSQ_PART_EXPERT_W3:
        return "ffn.experts.w3";
    case DSQ_PART_MTP_COPY:
        return "mtp_copy";
    default:
        break;
    }
    for (size_t i = 0; i < sizeof PARTS / sizeof PARTS[0]; i++)
        if (PARTS[i].part == p) return PARTS[i].stem;
    return "unknown";
}

/* Parse a decimal index ("0", "17"; no sign, no leading zeros, < 2^20) ending at '.'. */
static const char *parse_index(const char *s, int *out) {
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] != '.')) return NULL;
    long v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v >= (1l << 20)) return NULL;
    }
    if (*s != '.') return NULL;
    *out = (int)v;
    return s + 1;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

/* Does `rest` name this part?  Sets *is_scale. */
static bool match_stem(const part_info *pi, const char *rest, bool *is_scale) {
    size_t n = strlen(pi->stem);
    if (strncmp(rest, pi->stem, n) != 0) return false;
    const char *tail = rest + n;
    *is_scale = false;
    if (pi->kind == K_BARE) return *tail == 0;
    if (!strcmp(tail, ".weight")) return true;
    /* .scale (release), or ModelOpt NVFP4's .weight_scale / .weight_scale_2 / .input_scale */
    if (pi->kind == K_QUANT && (!strcmp(tail, ".scale") || !strcmp(tail, ".weight_scale") ||
                                !strcmp(tail, ".weight_scale_2") || !strcmp(tail, ".input_scale"))) {
        *is_scale = true;
        return true;
    }
    return false;
}

bool dsq_inv_classify(const char *name, dsq_tensor_role *out) {
    memset(out, 0, sizeof *out);
    out->index = -1;
    out->expert = -1;
    out->part = DSQ_PART_UNKNOWN;
    out->family = DSQ_FAMILY_OTHER;
    const char *rest = name;
    if (!strncmp(name, "layers.", 7)) {
        out->scope = DSQ_SCOPE_LAYER;
        rest = parse_index(name + 7, &out->index);
    } else if (!strncmp(name, "mtp.", 4)) {
        out->scope = DSQ_SCOPE_MTP;
        rest = parse_index(name + 4, &out->index);
        if (rest && (strstr(rest, "emb") || ends_with(rest, "head.weight"))) {
            /* spec §3.1 Notes: MTP uses the global embed/head; a shipped copy is ignored. */
            out->part = DSQ_PART_MTP_COPY;
            out->family = DSQ_FAMILY_MTP;
            return true;
        }
    } else {
        out->scope = DSQ_SCOPE_GLOBAL;
    }
    if (!rest) return false;
    where want = out->scope == DSQ_SCOPE_GLOBAL ? W_GLOBAL : W_BLOCK;
    if (want == W_BLOCK && !strncmp(rest, "ffn.experts.", 12)) {
        rest = parse_index(rest + 12, &out->expert);
        if (!rest) {
            out->expert = -1;
            return false;
        }
        want = W_EXPERT;
    }
    for (size_t i = 0; i < sizeof PARTS / sizeof PARTS[0]; i++) {
        const part_info *pi = &PARTS[i];
        bool ok_where = pi->w == want || (pi->w == W_MTP && want == W_BLOCK && out->scope == DSQ_SCOPE_MTP);
        bool scale;
        if (!ok_where || !match_stem(pi, rest, &scale)) continue;
        out->part = pi->part;
        out->is_scale = scale;
        out->family = !scale ? pi->family : want == W_EXPERT ? DSQ_FAMILY_ROUTED_EXPERT_SCALES : DSQ_FAMILY_SCALES;
        return true;
    }
    out->expert = -1;
    return false;
}

int dsq_inv_role_block(const dsq_v4_config *c, const dsq_tensor_role *r) {
    switch (r->scope) {
    case DSQ_SCOPE_LAYER:
        return r->index;
    case DSQ_SCOPE_MTP:
        return c->n_layers + r->index;
    default:
        return -1;
    }
}

/* ---- describing a safetensors source ---------------------------------------------------------- */

dsq_status dsq_inv_describe_st(const dsq_st *st, dsq_tensor_desc **out, size_t *n, dsq_err *err) {
    *out = NULL;
    *n = 0;
    size_t count = dsq_st_count(st);
    dsq_tensor_desc *d = dsq_calloc(count ? count : 1, sizeof *d);
    if (!d) return dsq_err_set(err, DSQ_ERR_NOMEM, "inventory: out of memory for %zu tensor descriptions", count);
    for (size_t i = 0; i < count; i++) {
        const dsq_st_tensor *t = dsq_st_at(st, i);
        d[i].name = t->name;
        d[i].dtype = t->dtype;
        d[i].rank = t->rank;
        memcpy(d[i].shape, t->shape, sizeof d[i].shape);
        d[i].n_bytes = t->n_bytes;
    }
    *out = d;
    *n = count;
    return DSQ_OK;
}

/* ---- the expected inventory ------------------------------------------------------------------- */

typedef void (*visit_fn)(void *ctx, const dsq_inv_entry *e);

typedef struct emitter {
    const dsq_v4_config *c;
    bool experts_fp4, experts_nvfp4, compressor_fp8, idx_compressor_fp8;
    dsq_dtype scale_dtype, scale_alt;
    visit_fn visit;
    void *ctx;
    char prefix[32]; /* "layers.12." / "mtp.0." / "" */
    dsq_scope scope;
    int index;
    bool overflow;
} emitter;

static uint64_t mul(emitter *em, uint64_t a, uint64_t b) {
    uint64_t r;
    if (!dsq_mul_u64(a, b, &r)) {
        em->overflow = true;
        return 0;
    }
    return r;
}

static void emit(emitter *em, const char *stem, const char *suffix, int expert, dsq_part part, bool is_scale,
                 dsq_family family, dsq_dtype dt, dsq_dtype alt, int rank, uint64_t d0, uint64_t d1, uint64_t params) {
    char name[DSQ_INV_NAME_MAX];
    if (expert >= 0)
        snprintf(name, sizeof name, "%sffn.experts.%d.%s%s", em->prefix, expert, stem, suffix);
    else
        snprintf(name, sizeof name, "%s%s%s", em->prefix, stem, suffix);
    dsq_inv_entry e = {0};
    e.name = name;
    e.dtype = dt;
    e.alt_dtype = alt;
    e.rank = rank;
    e.shape[0] = d0;
    e.shape[1] = rank > 1 ? d1 : 0;
    e.n_bytes = mul(em, rank > 1 ? mul(em, d0, d1) : d0, dsq_dtype_size(dt));
    e.params = params;
    e.role.scope = em->scope;
    e.role.index = em->index;
    e.role.part = part;
    e.role.expert = expert;
    e.role.is_scale = is_scale;
    e.role.family = family;
    em->visit(em->ctx, &e);
}

/* Unquantized tensor STEM.weight (K_WEIGHT) or STEM (K_BARE), counted as parameters unless I64. */
static void plain(emitter *em, dsq_part part, const char *stem, bool bare, dsq_family fam, dsq_dtype dt, int rank,
                  uint64_t d0, uint64_t d1) {
    uint64_t elems = rank > 1 ? mul(em, d0, d1) : d0;
    emit(em, stem, bare ? "" : ".weight", -1, part, false, fam, dt, dt, rank, d0, d1, dt == DSQ_DTYPE_I64 ? 0 : elems);
}

/* FP8 e4m3 weight [N, K] + its 128x128 block scale [ceil(N/128), ceil(K/128)] (spec §2.4). */
static void fp8_pair(emitter *em, dsq_part part, const char *stem, int expert, dsq_family fam, dsq_family scale_fam,
                     uint64_t n, uint64_t k) {
    emit(em, stem, ".weight", expert, part, false, fam, DSQ_DTYPE_F8_E4M3, DSQ_DTYPE_F8_E4M3, 2, n, k, mul(em, n, k));
    emit(em, stem, ".scale", expert, part, true, scale_fam, em->scale_dtype, em->scale_alt, 2,
         dsq_ceil_div(n, FP8_BLOCK), dsq_ceil_div(k, FP8_BLOCK), 0);
}

/* Routed expert matrix [N, K]: packed FP4 (I8 [N, K/2] + scale [N, K/32]) or FP8 (spec §3.1). */
static void expert_pair(emitter *em, dsq_part part, const char *stem, int expert, uint64_t n, uint64_t k) {
    if (em->experts_nvfp4) { /* ModelOpt NVFP4 (dsq_modelopt.h) */
        const dsq_family F = DSQ_FAMILY_ROUTED_EXPERT_SCALES;
        emit(em, stem, ".weight", expert, part, false, DSQ_FAMILY_ROUTED_EXPERTS, DSQ_DTYPE_U8, DSQ_DTYPE_U8, 2, n,
             k / 2, mul(em, n, k));
        emit(em, stem, ".weight_scale", expert, part, true, F, DSQ_DTYPE_F8_E4M3, DSQ_DTYPE_F8_E4M3, 2, n,
             k / NVFP4_BLOCK, 0);
        emit(em, stem, ".weight_scale_2", expert, part, true, F, DSQ_DTYPE_F32, DSQ_DTYPE_F32, 0, 1, 0, 0);
        emit(em, stem, ".input_scale", expert, part, true, F, DSQ_DTYPE_F32, DSQ_DTYPE_F32, 0, 1, 0, 0);
        return;
    }
    if (!em->experts_fp4) {
        fp8_pair(em, part, stem, expert, DSQ_FAMILY_ROUTED_EXPERTS, DSQ_FAMILY_ROUTED_EXPERT_SCALES, n, k);
        return;
    }
    emit(em, stem, ".weight", expert, part, false, DSQ_FAMILY_ROUTED_EXPERTS, DSQ_DTYPE_I8, DSQ_DTYPE_I8, 2, n, k / 2,
         mul(em, n, k));
    emit(em, stem, ".scale", expert, part, true, DSQ_FAMILY_ROUTED_EXPERT_SCALES, em->scale_dtype, em->scale_alt, 2, n,
         k / FP4_BLOCK, 0);
}

/* Compressor projection [N, K]: BF16, or FP8 + scale in some releases (spec §1.3). */
static void compressor_proj(emitter *em, dsq_part part, const char *stem, dsq_family fam, uint64_t n, uint64_t k,
                            bool fp8) {
    if (fp8)
        fp8_pair(em, part, stem, -1, fam, DSQ_FAMILY_SCALES, n, k);
    else
        plain(em, part, stem, false, fam, DSQ_DTYPE_BF16, 2, n, k);
}

static void set_scope(emitter *em, dsq_scope scope, int index) {
    em->scope = scope;
    em->index = index;
    if (scope == DSQ_SCOPE_LAYER)
        snprintf(em->prefix, sizeof em->prefix, "layers.%d.", index);
    else if (scope == DSQ_SCOPE_MTP)
        snprintf(em->prefix, sizeof em->prefix, "mtp.%d.", index);
    else
        em->prefix[0] = 0;
}

static void hc_head(emitter *em) {
    const dsq_v4_config *c = em->c;
    uint64_t hc = (uint64_t)c->hc_mult, D = c->dim;
    plain(em, DSQ_PART_HC_HEAD_FN, "hc_head_fn", true, DSQ_FAMILY_HC, DSQ_DTYPE_F32, 2, hc, mul(em, hc, D));
    plain(em, DSQ_PART_HC_HEAD_BASE, "hc_head_base", true, DSQ_FAMILY_HC, DSQ_DTYPE_F32, 1, hc, 0);
    plain(em, DSQ_PART_HC_HEAD_SCALE, "hc_head_scale", true, DSQ_FAMILY_HC, DSQ_DTYPE_F32, 1, 1, 0);
}

/* One block (main layer or MTP block), spec §3.1. */
static void emit_block(emitter *em, int block) {
    const dsq_v4_config *c = em->c;
    const uint64_t D = c->dim, hd = (uint64_t)c->head_dim, ql = (uint64_t)c->q_lora_rank;
    const uint64_t H = (uint64_t)c->n_heads, G = (uint64_t)c->o_groups, ol = (uint64_t)c->o_lora_rank;
    const uint64_t E = (uint64_t)c->n_routed_experts, I = (uint64_t)c->moe_inter_dim;
    const uint64_t nih = (uint64_t)c->index_n_heads, ihd = (uint64_t)c->index_head_dim;
    const uint64_t hc = (uint64_t)c->hc_mult, mix = (2 + hc) * hc;
    const uint64_t r = (uint64_t)dsq_config_ratio(c, block);
    const dsq_family A = DSQ_FAMILY_ATTENTION, S = DSQ_FAMILY_SCALES, N = DSQ_FAMILY_NORMS;

    plain(em, DSQ_PART_ATTN_NORM, "attn_norm", false, N, DSQ_DTYPE_BF16, 1, D, 0);
    fp8_pair(em, DSQ_PART_WQ_A, "attn.wq_a", -1, A, S, ql, D);
    plain(em, DSQ_PART_Q_NORM, "attn.q_norm", false, N, DSQ_DTYPE_BF16, 1, ql, 0);
    fp8_pair(em, DSQ_PART_WQ_B, "attn.wq_b", -1, A, S, mul(em, H, hd), ql);
    fp8_pair(em, DSQ_PART_WKV, "attn.wkv", -1, A, S, hd, D);
    plain(em, DSQ_PART_KV_NORM, "attn.kv_norm", false, N, DSQ_DTYPE_BF16, 1, hd, 0);
    fp8_pair(em, DSQ_PART_WO_A, "attn.wo_a", -1, A, S, mul(em, G, ol), mul(em, H, hd) / G);
    fp8_pair(em, DSQ_PART_WO_B, "attn.wo_b", -1, A, S, D, mul(em, G, ol));
    plain(em, DSQ_PART_ATTN_SINK, "attn.attn_sink", true, A, DSQ_DTYPE_F32, 1, H, 0);
    if (r > 0) {
        uint64_t cw = (r == CSA_RATIO ? 2 : 1) * hd; /* overlap doubles the projection width */
        const dsq_family C = DSQ_FAMILY_COMPRESSOR;
        plain(em, DSQ_PART_CMP_APE, "attn.compressor.ape", true, C, DSQ_DTYPE_F32, 2, r, cw);
        compressor_proj(em, DSQ_PART_CMP_WKV, "attn.compressor.wkv", C, cw, D, em->compressor_fp8);
        compressor_proj(em, DSQ_PART_CMP_WGATE, "attn.compressor.wgate", C, cw, D, em->compressor_fp8);
        plain(em, DSQ_PART_CMP_NORM, "attn.compressor.norm", false, N, DSQ_DTYPE_BF16, 1, hd, 0);
    }
    if (r == CSA_RATIO) {
        const dsq_family X = DSQ_FAMILY_INDEXER;
        fp8_pair(em, DSQ_PART_IDX_WQ_B, "attn.indexer.wq_b", -1, X, S, mul(em, nih, ihd), ql);
        plain(em, DSQ_PART_IDX_WEIGHTS_PROJ, "attn.indexer.weights_proj", false, X, DSQ_DTYPE_BF16, 2, nih, D);
        plain(em, DSQ_PART_IDX_CMP_APE, "attn.indexer.compressor.ape", true, X, DSQ_DTYPE_F32, 2, r, 2 * ihd);
        compressor_proj(em, DSQ_PART_IDX_CMP_WKV, "attn.indexer.compressor.wkv", X, 2 * ihd, D, em->idx_compressor_fp8);
        compressor_proj(em, DSQ_PART_IDX_CMP_WGATE, "attn.indexer.compressor.wgate", X, 2 * ihd, D,
                        em->idx_compressor_fp8);
        plain(em, DSQ_PART_IDX_CMP_NORM, "attn.indexer.compressor.norm", false, N, DSQ_DTYPE_BF16, 1, ihd, 0);
    }
    plain(em, DSQ_PART_FFN_NORM, "ffn_norm", false, N, DSQ_DTYPE_BF16, 1, D, 0);
    plain(em, DSQ_PART_GATE, "ffn.gate", false, DSQ_FAMILY_ROUTER, DSQ_DTYPE_BF16, 2, E, D);
    if (dsq_config_routing(c, block) == DSQ_ROUTE_HASH)
        plain(em, DSQ_PART_GATE_TID2EID, "ffn.gate.tid2eid", true, DSQ_FAMILY_ROUTER, DSQ_DTYPE_I64, 2, c->vocab_size,
              (uint64_t)c->n_activated_experts);
    else
        plain(em, DSQ_PART_GATE_BIAS, "ffn.gate.bias", true, DSQ_FAMILY_ROUTER, DSQ_DTYPE_F32, 1, E, 0);
    for (int e = 0; e < (int)E; e++) {
        expert_pair(em, DSQ_PART_EXPERT_W1, "w1", e, I, D);
        expert_pair(em, DSQ_PART_EXPERT_W2, "w2", e, D, I);
        expert_pair(em, DSQ_PART_EXPERT_W3, "w3", e, I, D);
    }
    const dsq_family SE = DSQ_FAMILY_SHARED_EXPERTS;
    fp8_pair(em, DSQ_PART_SHARED_W1, "ffn.shared_experts.w1", -1, SE, S, I, D);
    fp8_pair(em, DSQ_PART_SHARED_W2, "ffn.shared_experts.w2", -1, SE, S, D, I);
    fp8_pair(em, DSQ_PART_SHARED_W3, "ffn.shared_experts.w3", -1, SE, S, I, D);
    const dsq_family HC = DSQ_FAMILY_HC;
    uint64_t hcD = mul(em, hc, D);
    plain(em, DSQ_PART_HC_ATTN_FN, "hc_attn_fn", true, HC, DSQ_DTYPE_F32, 2, mix, hcD);
    plain(em, DSQ_PART_HC_ATTN_BASE, "hc_attn_base", true, HC, DSQ_DTYPE_F32, 1, mix, 0);
    plain(em, DSQ_PART_HC_ATTN_SCALE, "hc_attn_scale", true, HC, DSQ_DTYPE_F32, 1, HC_SCALES, 0);
    plain(em, DSQ_PART_HC_FFN_FN, "hc_ffn_fn", true, HC, DSQ_DTYPE_F32, 2, mix, hcD);
    plain(em, DSQ_PART_HC_FFN_BASE, "hc_ffn_base", true, HC, DSQ_DTYPE_F32, 1, mix, 0);
    plain(em, DSQ_PART_HC_FFN_SCALE, "hc_ffn_scale", true, HC, DSQ_DTYPE_F32, 1, HC_SCALES, 0);
    if (em->scope == DSQ_SCOPE_MTP) {
        fp8_pair(em, DSQ_PART_E_PROJ, "e_proj", -1, DSQ_FAMILY_MTP, S, D, D);
        fp8_pair(em, DSQ_PART_H_PROJ, "h_proj", -1, DSQ_FAMILY_MTP, S, D, D);
        plain(em, DSQ_PART_ENORM, "enorm", false, N, DSQ_DTYPE_BF16, 1, D, 0);
        plain(em, DSQ_PART_HNORM, "hnorm", false, N, DSQ_DTYPE_BF16, 1, D, 0);
        plain(em, DSQ_PART_NORM, "norm", false, N, DSQ_DTYPE_BF16, 1, D, 0);
        hc_head(em);
    }
}

static void resolve_options(const dsq_v4_config *c, const dsq_inv_options *opt, emitter *em) {
    dsq_inv_options o = {0};
    if (opt) o = *opt;
    em->experts_fp4 = o.experts == DSQ_INV_EXPERTS_FP4 || (o.experts == DSQ_INV_EXPERTS_CONFIG && c->expert_fp4);
    em->experts_nvfp4 = o.experts == DSQ_INV_EXPERTS_NVFP4;
    bool f32 = o.scales == DSQ_INV_SCALES_F32 || (o.scales == DSQ_INV_SCALES_CONFIG && !c->scale_ue8m0);
    em->scale_dtype = f32 ? DSQ_DTYPE_F32 : DSQ_DTYPE_F8_E8M0;
    em->scale_alt = f32 ? DSQ_DTYPE_F8_E8M0 : DSQ_DTYPE_F32; /* either is accepted (spec §1.3) */
    em->compressor_fp8 = o.compressor_fp8;
    em->idx_compressor_fp8 = o.indexer_compressor_fp8;
}

/* Visit every expected tensor in release order.  Returns false when a size overflows. */
static bool enumerate(const dsq_v4_config *c, const dsq_inv_options *opt, visit_fn visit, void *ctx) {
    emitter em = {0};
    em.c = c;
    em.visit = visit;
    em.ctx = ctx;
    resolve_options(c, opt, &em);
    const uint64_t V = c->vocab_size, D = c->dim;
    set_scope(&em, DSQ_SCOPE_GLOBAL, -1);
    plain(&em, DSQ_PART_EMBED, "embed", false, DSQ_FAMILY_EMBED_HEAD, DSQ_DTYPE_BF16, 2, V, D);
    for (int i = 0; i < c->n_layers; i++) {
        set_scope(&em, DSQ_SCOPE_LAYER, i);
        emit_block(&em, i);
    }
    for (int m = 0; m < c->n_mtp_layers; m++) {
        set_scope(&em, DSQ_SCOPE_MTP, m);
        emit_block(&em, c->n_layers + m);
    }
    set_scope(&em, DSQ_SCOPE_GLOBAL, -1);
    plain(&em, DSQ_PART_NORM, "norm", false, DSQ_FAMILY_NORMS, DSQ_DTYPE_BF16, 1, D, 0);
    hc_head(&em);
    plain(&em, DSQ_PART_HEAD, "head", false, DSQ_FAMILY_EMBED_HEAD, DSQ_DTYPE_BF16, 2, V, D);
    return !em.overflow;
}

struct dsq_inv {
    dsq_inv_entry *e;
    size_t n, cap;
    char *names; /* all names, NUL-separated */
    size_t names_len, names_cap;
    size_t *name_off;             /* offsets while building */
    const dsq_inv_entry **sorted; /* by name, for dsq_inv_find */
    uint64_t total_bytes;
    bool oom;
};

static void collect(void *ctx, const dsq_inv_entry *e) {
    dsq_inv *inv = ctx;
    if (inv->oom) return;
    if (inv->n == inv->cap) {
        size_t cap = inv->cap ? inv->cap * 2 : 256;
        dsq_inv_entry *ne = dsq_realloc(inv->e, cap * sizeof *ne);
        if (ne) inv->e = ne;
        size_t *no = ne ? dsq_realloc(inv->name_off, cap * sizeof *no) : NULL;
        if (no) inv->name_off = no;
        if (!ne || !no) {
            inv->oom = true;
            return;
        }
        inv->cap = cap;
    }
    size_t len = strlen(e->name) + 1;
    if (inv->names_len + len > inv->names_cap) {
        size_t cap = inv->names_cap ? inv->names_cap * 2 : 4096;
        while (cap < inv->names_len + len) cap *= 2;
        char *nn = dsq_realloc(inv->names, cap);
        if (!nn) {
            inv->oom = true;
            return;
        }
        inv->names = nn;
        inv->names_cap = cap;
    }
    memcpy(inv->names + inv->names_len, e->name, len);
    inv->name_off[inv->n] = inv->names_len;
    inv->names_len += len;
    inv->e[inv->n] = *e;
    inv->e[inv->n].name = NULL; /* set once the name buffer stops moving */
    inv->n++;
    sat_add(&inv->total_bytes, e->n_bytes);
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const dsq_inv_entry *const *)a)->name, (*(const dsq_inv_entry *const *)b)->name);
}

dsq_status dsq_inv_expected(const dsq_v4_config *c, const dsq_inv_options *opt, dsq_inv **out, dsq_err *err) {
    *out = NULL;
    dsq_inv *inv = dsq_calloc(1, sizeof *inv);
    if (!inv) return dsq_err_set(err, DSQ_ERR_NOMEM, "inventory: out of memory");
    if (!enumerate(c, opt, collect, inv)) {
        dsq_inv_free(inv);
        return dsq_err_set(err, DSQ_ERR_OVERFLOW, "inventory: a tensor size of this config overflows 64 bits");
    }
    if (!inv->oom) inv->sorted = dsq_malloc((inv->n ? inv->n : 1) * sizeof *inv->sorted);
    if (inv->oom || !inv->sorted) {
        dsq_inv_free(inv);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "inventory: out of memory for the expected tensor list");
    }
    for (size_t i = 0; i < inv->n; i++) {
        inv->e[i].name = inv->names + inv->name_off[i];
        inv->sorted[i] = &inv->e[i];
    }
    dsq_free(inv->name_off);
    inv->name_off = NULL;
    qsort(inv->sorted, inv->n, sizeof *inv->sorted, cmp_entry_name);
    *out = inv;
    return DSQ_OK;
}

void dsq_inv_free(dsq_inv *inv) {
    if (!inv) return;
    dsq_free(inv->e);
    dsq_free(inv->names);
    dsq_free(inv->name_off);
    dsq_free(inv->sorted);
    dsq_free(inv);
}

size_t dsq_inv_count(const dsq_inv *inv) { return inv->n; }
const dsq_inv_entry *dsq_inv_at(const dsq_inv *inv, size_t i) { return i < inv->n ? &inv->e[i] : NULL; }
uint64_t dsq_inv_total_bytes(const dsq_inv *inv) { return inv->total_bytes; }

const dsq_inv_entry *dsq_inv_find(const dsq_inv *inv, const char *name) {
    size_t lo = 0, hi = inv->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(name, inv->sorted[mid]->name);
        if (d == 0) return inv->sorted[mid];
        if (d < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

dsq_status dsq_inv_describe(const dsq_inv *inv, dsq_tensor_desc **out, size_t *n, dsq_err *err) {
    *out = NULL;
    *n = 0;
    dsq_tensor_desc *d = dsq_calloc(inv->n ? inv->n : 1, sizeof *d);
    if (!d) return dsq_err_set(err, DSQ_ERR_NOMEM, "inventory: out of memory for %zu tensor descriptions", inv->n);
    for (size_t i = 0; i < inv->n; i++) {
        const dsq_inv_entry *e = &inv->e[i];
        d[i].name = e->name;
        d[i].dtype = e->dtype;
        d[i].rank = e->rank;
        d[i].shape[0] = e->shape[0];
        d[i].shape[1] = e->shape[1];
        d[i].n_bytes = e->n_bytes;
    }
    *out = d;
    *n = inv->n;
    return DSQ_OK;
}

/* ---- parameter counts (dsq_config.h) ----------------------------------------------------------- */

static void count_params(void *ctx, const dsq_inv_entry *e) {
    dsq_param_counts *p = ctx;
    bool routed =
        e->role.part == DSQ_PART_EXPERT_W1 || e->role.part == DSQ_PART_EXPERT_W2 || e->role.part == DSQ_PART_EXPERT_W3;
    if (e->role.scope == DSQ_SCOPE_MTP) {
        p->total_mtp += e->params;
        if (routed) p->active_mtp += e->params; /* scaled by k/E below */
        return;
    }
    p->total += e->params;
    if (routed) p->routed_experts += e->params;
    if (e->role.part == DSQ_PART_EMBED) p->embed += e->params;
    if (e->role.part == DSQ_PART_HEAD) p->head += e->params;
}

/* k/E of the routed parameters (k ≤ E, so the result never exceeds `routed`). */
static uint64_t share(uint64_t routed, const dsq_v4_config *c) {
    uint64_t k = (uint64_t)c->n_activated_experts, E = (uint64_t)c->n_routed_experts, rk;
    return dsq_mul_u64(routed, k, &rk) ? rk / E : routed / E * k;
}

/* Active = all but the embedding table and the routed experts, plus k/E of the routed experts.  `mtp_routed` is the MTP
 * routed count. */
static void finish_active(const dsq_v4_config *c, dsq_param_counts *p, uint64_t mtp_routed) {
    if (!c || c->n_routed_experts <= 0) {
        p->active = p->total - p->embed;
        p->active_mtp = p->total_mtp;
        return;
    }
    p->active = p->total - p->embed - p->routed_experts + share(p->routed_experts, c);
    p->active_mtp = p->total_mtp - mtp_routed + share(mtp_routed, c);
}

void dsq_config_params(const dsq_v4_config *c, dsq_param_counts *out) {
    memset(out, 0, sizeof *out);
    enumerate(c, NULL, count_params, out); /* parsed configs cannot overflow (config.c limits) */
    uint64_t mtp_routed = out->active_mtp;
    finish_active(c, out, mtp_routed);
}

/* ---- checking a source against the config ----------------------------------------------------- */

void dsq_inv_detect(const dsq_tensor_desc *t, size_t n, dsq_inv_options *out) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        dsq_tensor_role r;
        if (!dsq_inv_classify(t[i].name, &r)) continue;
        bool expert = r.part == DSQ_PART_EXPERT_W1 || r.part == DSQ_PART_EXPERT_W2 || r.part == DSQ_PART_EXPERT_W3;
        bool cmp = r.part == DSQ_PART_CMP_WKV || r.part == DSQ_PART_CMP_WGATE;
        bool idx_cmp = r.part == DSQ_PART_IDX_CMP_WKV || r.part == DSQ_PART_IDX_CMP_WGATE;
        bool modelopt_scale = ends_with(t[i].name, ".weight_scale") || ends_with(t[i].name, ".weight_scale_2") ||
                              ends_with(t[i].name, ".input_scale");
        if (r.is_scale && modelopt_scale) {
            continue; /* ModelOpt's F8_E4M3 / F32 scales say nothing about the release scale format */
        } else if (r.is_scale) {
            if (out->scales == DSQ_INV_SCALES_CONFIG) {
                if (t[i].dtype == DSQ_DTYPE_F32) out->scales = DSQ_INV_SCALES_F32;
                if (t[i].dtype == DSQ_DTYPE_F8_E8M0) out->scales = DSQ_INV_SCALES_E8M0;
            }
        } else if (expert && out->experts == DSQ_INV_EXPERTS_CONFIG) {
            if (t[i].dtype == DSQ_DTYPE_I8) out->experts = DSQ_INV_EXPERTS_FP4;
            if (t[i].dtype == DSQ_DTYPE_F8_E4M3) out->experts = DSQ_INV_EXPERTS_FP8;
            if (t[i].dtype == DSQ_DTYPE_U8) out->experts = DSQ_INV_EXPERTS_NVFP4;
        } else if (t[i].dtype == DSQ_DTYPE_F8_E4M3) {
            if (cmp) out->compressor_fp8 = true;
            if (idx_cmp) out->indexer_compressor_fp8 = true;
        }
    }
}

static void fmt_shape(char *buf, size_t n, int rank, const uint64_t *shape) {
    size_t at = 0;
    at += (size_t)snprintf(buf + at, n - at, "[");
    for (int i = 0; i < rank && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

/* Why a well-formed V4 name is not in this config's inventory. */
static void unexpected_reason(const dsq_v4_config *c, const dsq_tensor_role *r, const dsq_inv_options *v, char *buf,
                              size_t n) {
    int block = dsq_inv_role_block(c, r);
    int ratio = block >= 0 ? dsq_config_ratio(c, block) : 0;
    dsq_part p = r->part;
    bool cmp = p == DSQ_PART_CMP_APE || p == DSQ_PART_CMP_WKV || p == DSQ_PART_CMP_WGATE || p == DSQ_PART_CMP_NORM;
    bool idx = p >= DSQ_PART_IDX_WQ_B && p <= DSQ_PART_IDX_CMP_NORM;
    if (r->scope == DSQ_SCOPE_LAYER && r->index >= c->n_layers)
        snprintf(buf, n, "layer %d does not exist (num_hidden_layers = %d)", r->index, c->n_layers);
    else if (r->scope == DSQ_SCOPE_MTP && r->index >= c->n_mtp_layers)
        snprintf(buf, n, "MTP block %d does not exist (num_nextn_predict_layers = %d)", r->index, c->n_mtp_layers);
    else if (r->expert >= c->n_routed_experts)
        snprintf(buf, n, "expert %d does not exist (n_routed_experts = %d)", r->expert, c->n_routed_experts);
    else if (cmp && ratio == 0)
        snprintf(buf, n, "block %d is sliding-window only (compress ratio 0): no compressor", block);
    else if (idx && ratio != CSA_RATIO)
        snprintf(buf, n, "block %d has compress ratio %d: an indexer exists only at ratio 4", block, ratio);
    else if (p == DSQ_PART_GATE_TID2EID)
        snprintf(buf, n, "block %d is score-routed (num_hash_layers = %d): no tid2eid", block, c->n_hash_layers);
    else if (p == DSQ_PART_GATE_BIAS)
        snprintf(buf, n, "block %d is hash-routed (num_hash_layers = %d): no gate.bias", block, c->n_hash_layers);
    else if (r->is_scale &&
             (((p == DSQ_PART_CMP_WKV || p == DSQ_PART_CMP_WGATE) && !v->compressor_fp8) ||
              ((p == DSQ_PART_IDX_CMP_WKV || p == DSQ_PART_IDX_CMP_WGATE) && !v->indexer_compressor_fp8)))
        snprintf(buf, n, "compressor projections of this checkpoint are BF16: no scale");
    else
        snprintf(buf, n, "not in the inventory of this config");
}

dsq_status dsq_inv_check(const dsq_v4_config *c, const dsq_tensor_desc *t, size_t n, const char *what,
                         dsq_inv_report *rep, dsq_err *err) {
    dsq_inv_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    if (!what) what = "checkpoint";
    dsq_inv_detect(t, n, &rep->variants);
    dsq_inv *inv = NULL;
    DSQ_TRY(dsq_inv_expected(c, &rep->variants, &inv, err));
    uint8_t *seen = dsq_calloc(dsq_inv_count(inv) + 1, 1);
    if (!seen) {
        dsq_inv_free(inv);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory checking the inventory", what);
    }
    dsq_status first = DSQ_OK;
#define PROBLEM(code, ...)                                                                                             \
    do {                                                                                                               \
        if (first == DSQ_OK) first = (code);                                                                           \
        dsq_err_set(err, (code), __VA_ARGS__);                                                                         \
    } while (0)
    for (size_t i = 0; i < n; i++) {
        const dsq_inv_entry *e = dsq_inv_find(inv, t[i].name);
        if (!e) {
            dsq_tensor_role r;
            bool known = dsq_inv_classify(t[i].name, &r);
            if (known && r.part == DSQ_PART_MTP_COPY) {
                rep->n_ignored++;
                continue;
            }
            char why[160];
            if (known)
                unexpected_reason(c, &r, &rep->variants, why, sizeof why);
            else
                snprintf(why, sizeof why, "not a DeepSeek-V4 tensor name");
            rep->n_unexpected++;
            PROBLEM(DSQ_ERR_UNEXPECTED, "%s: %s: unexpected tensor (%s)", what, t[i].name, why);
            continue;
        }
        size_t k = (size_t)(e - dsq_inv_at(inv, 0));
        if (seen[k]) {
            rep->n_duplicate++;
            PROBLEM(DSQ_ERR_DUPLICATE, "%s: %s: appears more than once", what, t[i].name);
            continue;
        }
        seen[k] = 1;
        if (t[i].dtype != e->dtype && t[i].dtype != e->alt_dtype) {
            rep->n_dtype++;
            if (e->alt_dtype != e->dtype)
                PROBLEM(DSQ_ERR_DTYPE, "%s: %s: dtype %s, expected %s or %s", what, t[i].name,
                        dsq_dtype_name(t[i].dtype), dsq_dtype_name(e->dtype), dsq_dtype_name(e->alt_dtype));
            else
                PROBLEM(DSQ_ERR_DTYPE, "%s: %s: dtype %s, expected %s", what, t[i].name, dsq_dtype_name(t[i].dtype),
                        dsq_dtype_name(e->dtype));
            continue; /* a shape check against another dtype's layout would only repeat the problem */
        }
        bool same = t[i].rank == e->rank;
        for (int d = 0; same && d < e->rank; d++) same = t[i].shape[d] == e->shape[d];
        if (!same) {
            char got[128], want[128];
            fmt_shape(got, sizeof got, t[i].rank, t[i].shape);
            fmt_shape(want, sizeof want, e->rank, e->shape);
            rep->n_shape++;
            PROBLEM(DSQ_ERR_SHAPE, "%s: %s: shape %s, expected %s", what, t[i].name, got, want);
        }
    }
    for (size_t k = 0; k < dsq_inv_count(inv); k++) {
        if (seen[k]) continue;
        const dsq_inv_entry *e = dsq_inv_at(inv, k);
        char want[128];
        fmt_shape(want, sizeof want, e->rank, e->shape);
        rep->n_missing++;
        PROBLEM(DSQ_ERR_MISSING, "%s: %s: missing (expected %s %s)", what, e->name, dsq_dtype_name(e->dtype), want);
    }
#undef PROBLEM
    dsq_free(seen);
    dsq_inv_free(inv);
    return first;
}

/* ---- statistics ------------------------------------------------------------------------------- */

void dsq_inv_stats_compute(const dsq_v4_config *c, const dsq_tensor_desc *t, size_t n, dsq_inv_stats *out) {
    memset(out, 0, sizeof *out);
    out->n_tensors = n;
    uint64_t mtp_routed = 0;
    for (size_t i = 0; i < n; i++) {
        sat_add(&out->bytes_total, t[i].n_bytes);
        if ((unsigned)t[i].dtype < DSQ_DTYPE_COUNT) sat_add(&out->bytes_by_dtype[t[i].dtype], t[i].n_bytes);
        dsq_tensor_role r;
        bool known = dsq_inv_classify(t[i].name, &r);
        sat_add(&out->bytes_by_family[r.family], t[i].n_bytes);
        if (!known || r.is_scale || r.part == DSQ_PART_GATE_TID2EID || r.part == DSQ_PART_MTP_COPY) continue;
        uint64_t elems = 1;
        for (int d = 0; d < t[i].rank; d++)
            if (!dsq_mul_u64(elems, t[i].shape[d], &elems)) elems = UINT64_MAX;
        bool routed = r.part == DSQ_PART_EXPERT_W1 || r.part == DSQ_PART_EXPERT_W2 || r.part == DSQ_PART_EXPERT_W3;
        if (routed && (t[i].dtype == DSQ_DTYPE_I8 || t[i].dtype == DSQ_DTYPE_U8) && !dsq_mul_u64(elems, 2, &elems))
            elems = UINT64_MAX; /* packed FP4 (U8: ModelOpt NVFP4) */
        dsq_param_counts *p = &out->params;
        if (r.scope == DSQ_SCOPE_MTP) {
            sat_add(&p->total_mtp, elems);
            if (routed) sat_add(&mtp_routed, elems);
            continue;
        }
        sat_add(&p->total, elems);
        if (routed) sat_add(&p->routed_experts, elems);
        if (r.part == DSQ_PART_EMBED) sat_add(&p->embed, elems);
        if (r.part == DSQ_PART_HEAD) sat_add(&p->head, elems);
    }
    finish_active(c, &out->params, mtp_routed);
}
