/* DeepSeek-V4 config.json (spec §1) as a typed struct, and the geometry derived from it. */
#ifndef DSQ_CONFIG_H
#define DSQ_CONFIG_H

#include "dsq_core.h"

#define DSQ_MAX_LAYERS 1024 /* num_hidden_layers + num_nextn_predict_layers cap */

typedef enum dsq_attn_kind {
    DSQ_ATTN_SLIDING = 0, /* compress_ratio 0: window only */
    DSQ_ATTN_CSA = 1,     /* compress_ratio 4: overlapping compressor + indexer */
    DSQ_ATTN_HCA = 2,     /* any other ratio: non-overlapping compressor, dense over entries */
} dsq_attn_kind;

typedef enum dsq_routing { DSQ_ROUTE_HASH = 0, DSQ_ROUTE_SCORE = 1 } dsq_routing;

typedef struct dsq_v4_config {
    /* spec §1.1 fields, internal names */
    uint64_t vocab_size;        /* V */
    uint64_t dim;               /* D, hidden_size */
    int n_layers;               /* L, num_hidden_layers */
    int n_mtp_layers;           /* num_nextn_predict_layers */
    int n_hash_layers;          /* num_hash_layers */
    int n_heads;                /* H */
    int n_kv_heads;             /* must be 1 */
    int head_dim;               /* hd */
    int rope_head_dim;          /* rd, qk_rope_head_dim */
    int q_lora_rank;            /* ql */
    int o_lora_rank;            /* ol */
    int o_groups;               /* G */
    int moe_inter_dim;          /* I */
    int n_routed_experts;       /* E */
    int n_shared_experts;       /* must be 1 */
    int n_activated_experts;    /* k */
    char score_func[32];        /* "sqrtsoftplus" */
    double route_scale;         /* routed_scaling_factor */
    double swiglu_limit;
    int window_size;            /* W, sliding_window */
    int compress_ratios[DSQ_MAX_LAYERS]; /* n_layers + n_mtp_layers entries */
    int n_compress_ratios;
    double rope_theta;
    double compress_rope_theta;
    bool has_yarn;              /* rope_scaling present with type yarn */
    double rope_factor;
    uint64_t original_seq_len;
    double beta_fast, beta_slow;
    int index_n_heads;          /* nih */
    int index_head_dim;         /* ihd */
    int index_topk;             /* K */
    int hc_mult;                /* hc */
    int hc_sinkhorn_iters;
    double hc_eps;
    double norm_eps;            /* rms_norm_eps */
    bool expert_fp4;            /* expert_dtype == "fp4" (absent: FP8 experts) */
    int weight_block_n, weight_block_k; /* quantization_config.weight_block_size, default 128x128 */
    bool scale_ue8m0;           /* quantization_config.scale_fmt == "ue8m0" */
    bool has_quant_config;      /* quantization_config present (absent: unquantized/bf16 checkpoint) */
    int64_t bos_token_id, eos_token_id;
    uint64_t max_position_embeddings;
    bool tie_word_embeddings;
} dsq_v4_config;

#define DSQ_CONFIG_MAX_BYTES (16u << 20) /* config.json larger than this is rejected */

/* Parse config.json text.  Errors name the field (missing, wrong type, inconsistent); every problem
 * found is recorded in err.  Unknown fields are accepted; their names are appended to `warnings`
 * (newline-separated, heap, may be NULL) when the pointer is non-NULL.
 *
 * Status of the first problem: malformed JSON DSQ_ERR_JSON, duplicate key DSQ_ERR_DUPLICATE, missing
 * required field DSQ_ERR_MISSING, member of the wrong JSON type (string where a number belongs)
 * DSQ_ERR_JSON, number that is negative / not an exact integer / outside its limit DSQ_ERR_RANGE,
 * model_type other than "deepseek_v4" or an unsupported scheme DSQ_ERR_UNSUPPORTED, values that
 * contradict each other (compress_ratios length, head_dim <= rope dims, ...) DSQ_ERR_CONFIG.
 * Cross-field rules are checked only when every field parsed, so each problem is reported once.
 *
 * Required: model_type, vocab_size, hidden_size, num_hidden_layers, num_attention_heads, head_dim,
 * qk_rope_head_dim, q_lora_rank, o_lora_rank, o_groups, moe_intermediate_size, n_routed_experts,
 * num_experts_per_tok, routed_scaling_factor, sliding_window, index_n_heads, index_head_dim,
 * index_topk, hc_mult, compress_ratios.  Defaults otherwise (reference ModelArgs): num_nextn_predict_layers
 * 0, num_hash_layers 0, num_key_value_heads 1, n_shared_experts 1, swiglu_limit 10, rope_theta 10000,
 * compress_rope_theta 160000, rope_scaling absent = no YaRN (beta_fast 32, beta_slow 1 if omitted),
 * hc_sinkhorn_iters 20, hc_eps 1e-6, rms_norm_eps 1e-6, scoring_func sqrtsoftplus, expert_dtype absent =
 * FP8 experts, quantization_config absent = unquantized, bos/eos 0/1, max_position_embeddings 1048576.
 * compress_ratios may hold MORE entries than num_hidden_layers + num_nextn_predict_layers only when
 * dspark_* fields are present (later Flash revisions); the extra entries are ignored with a warning.
 * On failure *out is zeroed.  `warnings` is freed by the caller with dsq_free. */
dsq_status dsq_config_parse(const char *json, size_t len, const char *what, dsq_v4_config *out, char **warnings,
                            dsq_err *err);
dsq_status dsq_config_load(const char *path, dsq_v4_config *out, char **warnings, dsq_err *err);

/* Compress ratio of block b (0 ≤ b < n_layers + n_mtp_layers; MTP block m is b = n_layers + m). */
int dsq_config_ratio(const dsq_v4_config *c, int block);
dsq_attn_kind dsq_config_attn_kind(const dsq_v4_config *c, int block);
dsq_routing dsq_config_routing(const dsq_v4_config *c, int block);
const char *dsq_attn_kind_name(dsq_attn_kind k);   /* "sliding", "CSA", "HCA" */
const char *dsq_routing_name(dsq_routing r);       /* "hash", "score" */

/* Parameter counts (elements; scales and the tid2eid table are not parameters; a packed FP4 byte is
 * two parameters).  `total`/`active` cover the MAIN model only (embed, head, final norm, hc_head and
 * the num_hidden_layers blocks): that is the convention of the published sizes (V4-Flash 284B, Pro
 * 1.6T, spec §3.3).  The MTP blocks are counted apart in total_mtp/active_mtp; add them for the
 * size of everything a checkpoint stores.  Active per token = everything except the embedding table
 * (a token reads one row of it) and the routed experts, plus k of the E routed experts per block.
 * This convention reproduces the published active sizes: Flash 13.27B (13B), Pro 48.85B (49B);
 * counting the whole embedding table would give 13.80B for Flash, 6% above the published 13B.
 * Implemented in inventory.c by summing the expected inventory (dsq_inventory.h). */
typedef struct dsq_param_counts {
    uint64_t total, active;
    uint64_t total_mtp, active_mtp; /* the MTP blocks alone (they share the global embed and head) */
    uint64_t routed_experts;        /* routed expert weights of the main layers (part of total) */
    uint64_t embed, head;
} dsq_param_counts;
void dsq_config_params(const dsq_v4_config *c, dsq_param_counts *out);

/* KV-cache bytes per token of context, summed over main layers and MTP blocks (spec §6.2):
 * compact encoding (583 B kv entry, 68 B indexer key) and bf16 (reference) encoding, plus the
 * fixed part (windows + compressor states) per sequence for each. */
typedef struct dsq_kv_bytes {
    double per_token_compact, per_token_bf16;
    uint64_t fixed_compact, fixed_bf16;
} dsq_kv_bytes;
void dsq_config_kv_bytes(const dsq_v4_config *c, dsq_kv_bytes *out);

/* Cache encodings a container can declare (formats/spec/dsq.md §6.1: kv_cache.encoding, a recipe's
 * "kv_cache"): the entry format of kv entries (window ring and compressed entries) and of indexer keys.
 *   bf16 → kv_bf16 / index_bf16, compact → kv_compact / index_fp4, fp4 → kv_fp4 / index_fp4,
 *   int4 → kv_int4 / index_fp4, compact-idx8 → kv_compact / index_fp8
 * (the evaluator's f32 cache has no container form).  false for other names. */
bool dsq_config_kv_layout(const char *encoding, const char **kv_format, const char **index_format);
/* The canonical (static) spelling of a declarable encoding, or NULL. */
const char *dsq_config_kv_encoding_name(const char *encoding);
/* Bytes of one entry in entry format `format` (kv_* for head_dim entries, index_* for index_head_dim
 * keys) for config c; 0 for an unknown format. */
uint64_t dsq_config_kv_format_bytes(const dsq_v4_config *c, const char *format);
/* Bytes per token of context (compressed entries + indexer keys over their ratio, all main and MTP
 * blocks) of a declarable encoding; NaN for an unknown one.  compact/bf16 = dsq_config_kv_bytes's. */
double dsq_config_kv_per_token(const dsq_v4_config *c, const char *encoding);

#endif
