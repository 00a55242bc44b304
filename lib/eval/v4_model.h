/* Internal to lib/eval: the loaded V4 model (weight views per block) and per-sequence caches. */
#ifndef DSQ_V4_MODEL_H
#define DSQ_V4_MODEL_H

#include <pthread.h>
#include <stdatomic.h>

#include "dsq_v4.h"
#include "v4_internal.h"

/* A compressor's weights (spec §4.5): ratio r, overlap (r = 4) → c = 2, width d. */
typedef struct v4_compressor_w {
    int ratio, c, d;
    bool overlap;
    float *ape;      /* [r][c·d] owned */
    dsq_wview wkv;   /* [c·d, D] */
    dsq_wview wgate; /* [c·d, D] */
    float *norm;     /* [d] owned */
} v4_compressor_w;

enum { V4_MAX_VIEWS_PER_BLOCK = 64 };

typedef struct v4_block_w {
    int id;    /* 0 … n_layers-1 main, n_layers + m for MTP block m */
    int ratio; /* compress ratio */
    dsq_attn_kind kind;
    bool hash; /* hash routing (main layers < n_hash_layers) */
    bool mtp;
    float *attn_norm, *ffn_norm;       /* [D] */
    dsq_wview hc_attn_fn, hc_ffn_fn;   /* F32 [mix, hc·D] */
    float *hc_attn_base, *hc_ffn_base; /* [mix] */
    float hc_attn_scale[3], hc_ffn_scale[3];
    /* attention */
    dsq_wview wq_a, wq_b, wkv, wo_a, wo_b;
    float *q_norm;              /* [ql] */
    float *kv_norm;             /* [hd] */
    float *attn_sink;           /* [H] */
    float *freqs;               /* [rd/2] RoPE frequencies of this block (YaRN when ratio > 0) */
    v4_compressor_w comp;       /* ratio > 0 */
    v4_compressor_w idx_comp;   /* CSA */
    dsq_wview idx_wq_b;         /* CSA [nih·ihd, ql] */
    dsq_wview idx_weights_proj; /* CSA [nih, D] */
    /* MoE */
    dsq_wview gate;          /* [E, D] */
    float *gate_bias;        /* [E], non-hash blocks */
    dsq_wview tid2eid;       /* I64 [V, k], hash blocks */
    dsq_wview *w1, *w2, *w3; /* [E] each */
    dsq_wview sw1, sw2, sw3;
    /* MTP */
    dsq_wview e_proj, h_proj;
    float *enorm, *hnorm, *mtp_norm;
    dsq_wview hc_head_fn;
    float *hc_head_base;
    float hc_head_scale;
    /* every view of the block, for byte counts and page-cache hints */
    dsq_wview **views;
    int n_views, cap_views;
    uint64_t bytes;
} v4_block_w;

struct dsq_v4_model {
    dsq_v4_config cfg;
    dsq_wsrc *src;
    dsq_wview embed, head; /* [V, D] */
    float *norm;           /* [D] */
    dsq_wview hc_head_fn;  /* [hc, hc·D] */
    float *hc_head_base;   /* [hc] */
    float hc_head_scale;
    v4_block_w *blocks; /* n_layers + n_mtp_layers */
    int n_blocks;
    uint64_t global_bytes;
    bool cpu_avx2;
    /* cuda backends opened on this model (weights uploaded on first use), by device index; closed
     * with the model.  dev_mu guards creation (lib/eval/backend.c). */
    pthread_mutex_t dev_mu;
    struct dsq__backend *cuda[DSQ_MAX_CUDA_DEVICES];
    dsq_v4_load_options lo;
    v4_block_w global;         /* views of the global tensors (embed, head, hc_head_fn): views only */
    pthread_mutex_t *check_mu; /* serializes the first-use checks */
    _Atomic uint8_t *checked;  /* [n_blocks + 1]: block b's first-use check passed (index n_blocks: global) */
};

/* Close the model's device backends and its dev_mu (lib/eval/backend.c); for dsq_v4_model_close. */
void dsq__model_devices_close(dsq_v4_model *m);

/* Compressor state of spec §4.5: KV and SC [c·r][c·d] f32, initialised 0 / -inf. */
typedef struct v4_comp_state {
    float *kv, *sc;
} v4_comp_state;

/* Caches hold packed entries in the sequence's encoding (dsq_kv_cache; layouts in backend_cpu.c). */
typedef struct v4_layer_cache {
    uint8_t *ring;     /* [W][kv_bytes], slot = pos mod W */
    uint8_t *comp;     /* [cap][kv_bytes] compressed entries */
    uint8_t *idx_keys; /* [cap][idx_bytes] indexer keys (CSA) */
    int64_t n_comp, cap;
    int64_t pos; /* tokens this block has seen */
    v4_comp_state cs, ics;
} v4_layer_cache;

struct dsq_v4_seq {
    const dsq_v4_model *m;
    dsq_kv_cache kv;              /* encoding of every cache below */
    size_t kv_bytes, idx_bytes;   /* bytes of one kv entry / indexer key in that encoding */
    int64_t pos;        /* main-model tokens fed so far */
    v4_layer_cache *lc; /* [n_blocks] */
};

/* Switch s to cache encoding kv (no-op when it has it): rings reallocated zeroed, compressed arrays
 * emptied.  Only at position 0 (v4_forward.c checks). */
dsq_status dsq__seq_set_kv(dsq_v4_seq *s, dsq_kv_cache kv, dsq_err *err);

#endif
