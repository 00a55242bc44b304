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

/* Parse config.json text.  Errors name the field (missing, wrong type, inconsistent); every problem
 * found is recorded in err.  Unknown fields are accepted; their names are appended to `warnings`
 * (newline-separated, heap, may be NULL) when the pointer is non-NULL. */
dsq_status dsq_config_parse(const char *json, size_t len, const char *what, dsq_v4_config *out, char **warnings,
                            dsq_err *err);
dsq_status dsq_config_load(const char *path, dsq_v4_config *out, char **warnings, dsq_err *err);

/* Compress ratio of block b (0 ≤ b < n_layers + n_mtp_layers; MTP block m is b = n_layers + m). */
int dsq_config_ratio(const dsq_v4_config *c, int block);
dsq_attn_kind dsq_config_attn_kind(const dsq_v4_config *c, int block);
dsq_routing dsq_config_routing(const dsq_v4_config *c, int block);
const char *dsq_attn_kind_name(dsq_attn_kind k);   /* "sliding", "CSA", "HCA" */
const char *dsq_routing_name(dsq_routing r);       /* "hash", "score" */

/* Parameter counts (elements, scales excluded): total and active per token.  `with_mtp` includes
 * the MTP blocks.  Active = everything except routed experts, plus k routed experts per block;
 * embed rows count as active (one row is read, but the convention is the full table). */
typedef struct dsq_param_counts {
    uint64_t total, active;
    uint64_t total_mtp, active_mtp; /* the MTP blocks alone */
    uint64_t routed_experts;        /* all routed expert weights */
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

#endif
