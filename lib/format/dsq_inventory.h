/* Tensor inventory of a DeepSeek-V4 checkpoint (spec §3): what each tensor name means (its role and
 * byte-summary family), the inventory a config expects (name, dtype, shape), a checker that compares
 * a checkpoint's tensors with it, and parameter / byte statistics.
 *
 * Sources of tensors (a safetensors checkpoint today, a .dsq container later) are described to this
 * module as an array of dsq_tensor_desc, so every source plugs into the same checker and counters. */
#ifndef DSQ_INVENTORY_H
#define DSQ_INVENTORY_H

#include "dsq_config.h"
#include "dsq_core.h"
#include "dsq_safetensors.h"

#define DSQ_INV_NAME_MAX 128 /* longest name the expected inventory produces is well below this */

/* Where a tensor lives. */
typedef enum dsq_scope {
    DSQ_SCOPE_GLOBAL = 0, /* embed, head, final norm, hc_head_* */
    DSQ_SCOPE_LAYER = 1,  /* layers.i.* */
    DSQ_SCOPE_MTP = 2,    /* mtp.m.* */
} dsq_scope;

/* The block part a name denotes (spec §3.1), independent of weight/scale. */
typedef enum dsq_part {
    DSQ_PART_UNKNOWN = 0,
    /* global (and, for NORM / HC_HEAD_*, MTP blocks too) */
    DSQ_PART_EMBED,
    DSQ_PART_HEAD,
    DSQ_PART_NORM,
    DSQ_PART_HC_HEAD_FN,
    DSQ_PART_HC_HEAD_BASE,
    DSQ_PART_HC_HEAD_SCALE,
    /* every block */
    DSQ_PART_ATTN_NORM,
    DSQ_PART_FFN_NORM,
    DSQ_PART_HC_ATTN_FN,
    DSQ_PART_HC_ATTN_BASE,
    DSQ_PART_HC_ATTN_SCALE,
    DSQ_PART_HC_FFN_FN,
    DSQ_PART_HC_FFN_BASE,
    DSQ_PART_HC_FFN_SCALE,
    DSQ_PART_WQ_A,
    DSQ_PART_Q_NORM,
    DSQ_PART_WQ_B,
    DSQ_PART_WKV,
    DSQ_PART_KV_NORM,
    DSQ_PART_WO_A,
    DSQ_PART_WO_B,
    DSQ_PART_ATTN_SINK,
    /* ratio > 0 */
    DSQ_PART_CMP_APE,
    DSQ_PART_CMP_WKV,
    DSQ_PART_CMP_WGATE,
    DSQ_PART_CMP_NORM,
    /* ratio == 4 */
    DSQ_PART_IDX_WQ_B,
    DSQ_PART_IDX_WEIGHTS_PROJ,
    DSQ_PART_IDX_CMP_APE,
    DSQ_PART_IDX_CMP_WKV,
    DSQ_PART_IDX_CMP_WGATE,
    DSQ_PART_IDX_CMP_NORM,
    /* MoE */
    DSQ_PART_GATE,
    DSQ_PART_GATE_BIAS,
    DSQ_PART_GATE_TID2EID,
    DSQ_PART_EXPERT_W1,
    DSQ_PART_EXPERT_W2,
    DSQ_PART_EXPERT_W3,
    DSQ_PART_SHARED_W1,
    DSQ_PART_SHARED_W2,
    DSQ_PART_SHARED_W3,
    /* MTP blocks only */
    DSQ_PART_E_PROJ,
    DSQ_PART_H_PROJ,
    DSQ_PART_ENORM,
    DSQ_PART_HNORM,
    DSQ_PART_MTP_COPY, /* mtp.* name containing "emb" or ending "head.weight": a copy to ignore (§3.1 Notes) */
    DSQ_PART_COUNT
} dsq_part;

/* Family: the grouping used for byte summaries and conversion recipes. */
typedef enum dsq_family {
    DSQ_FAMILY_EMBED_HEAD = 0,           /* embed.weight, head.weight */
    DSQ_FAMILY_ATTENTION = 1,            /* wq_a, wq_b, wkv, wo_a, wo_b, attn_sink */
    DSQ_FAMILY_COMPRESSOR = 2,           /* attn.compressor ape / wkv / wgate */
    DSQ_FAMILY_INDEXER = 3,              /* attn.indexer wq_b, weights_proj, its compressor */
    DSQ_FAMILY_ROUTER = 4,               /* ffn.gate weight / bias / tid2eid */
    DSQ_FAMILY_ROUTED_EXPERTS = 5,       /* ffn.experts.e.w{1,2,3}.weight */
    DSQ_FAMILY_ROUTED_EXPERT_SCALES = 6, /* ffn.experts.e.w{1,2,3}.scale */
    DSQ_FAMILY_SHARED_EXPERTS = 7,       /* ffn.shared_experts.w{1,2,3}.weight */
    DSQ_FAMILY_HC = 8,                   /* every hc_* tensor */
    DSQ_FAMILY_NORMS = 9,                /* every *norm weight */
    DSQ_FAMILY_MTP = 10,                 /* mtp e_proj / h_proj, and ignored mtp copies */
    DSQ_FAMILY_SCALES = 11,              /* every other .scale tensor */
    DSQ_FAMILY_OTHER = 12,               /* names this module does not know */
    DSQ_FAMILY_COUNT = 13
} dsq_family;

typedef struct dsq_tensor_role {
    dsq_scope scope;
    int index; /* layer i or MTP block m; -1 for global tensors */
    dsq_part part;
    int expert;    /* routed expert id; -1 otherwise */
    bool is_scale; /* the .scale companion of a quantized weight */
    dsq_family family;
} dsq_tensor_role;

/* Classify a tensor name by its syntax alone (no config).  Returns false for names that are not V4
 * tensor names (then out->part = DSQ_PART_UNKNOWN, family DSQ_FAMILY_OTHER). */
bool dsq_inv_classify(const char *name, dsq_tensor_role *out);
/* Block index of a layer/MTP role (layer i → i, MTP m → n_layers + m), -1 for global. */
int dsq_inv_role_block(const dsq_v4_config *c, const dsq_tensor_role *r);
const char *dsq_part_name(dsq_part p);     /* "attn.wq_a", "ffn.experts", ... */
const char *dsq_family_name(dsq_family f); /* "routed_experts", "attention", ... */
bool dsq_family_from_name(const char *s, dsq_family *out);

/* ---- tensors of a source (safetensors, .dsq) ------------------------------------------------- */
typedef struct dsq_tensor_desc {
    const char *name; /* borrowed from the source */
    dsq_dtype dtype;
    int rank;
    uint64_t shape[DSQ_ST_MAX_RANK];
    uint64_t n_bytes;
} dsq_tensor_desc;

/* Describe every tensor of an open safetensors checkpoint.  *out is a dsq_malloc'd array (free with
 * dsq_free) whose names point into st (valid until dsq_st_close). */
dsq_status dsq_inv_describe_st(const dsq_st *st, dsq_tensor_desc **out, size_t *n, dsq_err *err);

/* ---- the expected inventory of a config ------------------------------------------------------ */
/* Release variants that differ in dtype (spec §1.3).  Zero-initialised options follow the config:
 * routed experts FP4 when expert_dtype is "fp4" else FP8, scales E8M0 when scale_fmt is "ue8m0"
 * else F32, compressors BF16. */
typedef enum dsq_inv_experts {
    DSQ_INV_EXPERTS_CONFIG = 0,
    DSQ_INV_EXPERTS_FP4 = 1,
    DSQ_INV_EXPERTS_FP8 = 2,
    DSQ_INV_EXPERTS_NVFP4 = 3 /* NVIDIA ModelOpt NVFP4 (dsq_modelopt.h): STEM.weight U8 [N, K/2],
                                 STEM.weight_scale F8_E4M3 [N, K/16], STEM.weight_scale_2 and
                                 STEM.input_scale F32 [] */
} dsq_inv_experts;
typedef enum dsq_inv_scales {
    DSQ_INV_SCALES_CONFIG = 0,
    DSQ_INV_SCALES_E8M0 = 1,
    DSQ_INV_SCALES_F32 = 2
} dsq_inv_scales;
typedef struct dsq_inv_options {
    dsq_inv_experts experts;
    dsq_inv_scales scales;
    bool compressor_fp8;         /* attn.compressor wkv / wgate F8_E4M3 + 128x128 scale instead of BF16 */
    bool indexer_compressor_fp8; /* attn.indexer.compressor wkv / wgate likewise.  Spec §3.3's "total with
                                    FP8 compressors" converts the attention compressors only. */
} dsq_inv_options;

typedef struct dsq_inv_entry {
    const char *name;    /* owned by the dsq_inv */
    dsq_dtype dtype;     /* dtype of this variant */
    dsq_dtype alt_dtype; /* also accepted by the checker (F32 ↔ E8M0 for scales), = dtype otherwise */
    int rank;            /* 1 or 2 */
    uint64_t shape[2];
    uint64_t n_bytes;
    uint64_t params; /* parameters it holds: elements, ×2 for packed FP4; 0 for scales and tid2eid */
    dsq_tensor_role role;
} dsq_inv_entry;

typedef struct dsq_inv dsq_inv;

/* The inventory `c` expects, in release order: embed, every layer, every MTP block, then the final
 * norm, hc_head_* and head.  Within a block: attention (norm, projections, compressor, indexer), FFN
 * (norm, router, experts 0..E-1, shared expert), hyper-connections, MTP projections/norms/head.  A
 * quantized weight is followed by its scale.  opt may be NULL.  Free with dsq_inv_free. */
dsq_status dsq_inv_expected(const dsq_v4_config *c, const dsq_inv_options *opt, dsq_inv **out, dsq_err *err);
void dsq_inv_free(dsq_inv *inv);
size_t dsq_inv_count(const dsq_inv *inv);
const dsq_inv_entry *dsq_inv_at(const dsq_inv *inv, size_t i);
/* Entry by name (binary search), NULL if the config does not expect it. */
const dsq_inv_entry *dsq_inv_find(const dsq_inv *inv, const char *name);
uint64_t dsq_inv_total_bytes(const dsq_inv *inv);
/* Describe the expected tensors as a source would (names point into inv; free *out with dsq_free). */
dsq_status dsq_inv_describe(const dsq_inv *inv, dsq_tensor_desc **out, size_t *n, dsq_err *err);

/* Variants a set of tensors uses (dtype-driven, spec §1.3): experts FP4 if routed expert weights are
 * I8, FP8 if F8_E4M3, ModelOpt NVFP4 if U8; scales F32 if scale tensors are F32; compressor_fp8 / indexer_compressor_fp8 if
 * an attention / indexer compressor projection is F8_E4M3.  Whatever cannot be decided from the tensors stays at its
 * config default. */
void dsq_inv_detect(const dsq_tensor_desc *t, size_t n, dsq_inv_options *out);

/* Compare tensors with the inventory `c` expects under the variants the tensors use.  Every problem is
 * recorded in err as "WHAT: NAME: ..." (one line per tensor): missing (DSQ_ERR_MISSING), unexpected
 * (DSQ_ERR_UNEXPECTED; mtp copies of §3.1 Notes are tolerated), wrong dtype (DSQ_ERR_DTYPE), wrong shape
 * (DSQ_ERR_SHAPE), a name twice (DSQ_ERR_DUPLICATE).  Returns DSQ_OK when the inventory is exact,
 * else the status of the first problem.  `what` names the source in messages (may be NULL). */
typedef struct dsq_inv_report {
    size_t n_missing, n_unexpected, n_dtype, n_shape, n_duplicate, n_ignored;
    dsq_inv_options variants;
} dsq_inv_report;
dsq_status dsq_inv_check(const dsq_v4_config *c, const dsq_tensor_desc *t, size_t n, const char *what,
                         dsq_inv_report *rep, dsq_err *err);

/* ---- statistics -------------------------------------------------------------------------------- */
typedef struct dsq_inv_stats {
    size_t n_tensors;
    uint64_t bytes_total;
    uint64_t bytes_by_dtype[DSQ_DTYPE_COUNT];
    uint64_t bytes_by_family[DSQ_FAMILY_COUNT];
    /* Parameters held by the tensors (dsq_param_counts convention: main model apart from MTP).
     * Active counts need k and E from a config; with c == NULL routed experts count in full. */
    dsq_param_counts params;
} dsq_inv_stats;
void dsq_inv_stats_compute(const dsq_v4_config *c, const dsq_tensor_desc *t, size_t n, dsq_inv_stats *out);

#endif
