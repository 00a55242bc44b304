/* Loading a V4 model from a weight source: every tensor the config requires is looked up by its
 * canonical name (spec §3.1), its encoding and shape checked, small parameter tensors (norms,
 * hyper-connection bases, sinks, ape, biases) copied to f32; big matrices stay views. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_kquant.h"
#include "dsq_numeric.h"
#include "dsq_v4_ops.h"
#include "v4_model.h"

void dsq_eval_options_default(dsq_eval_options *o) {
    memset(o, 0, sizeof *o);
    o->numerics = DSQ_NUMERICS_EXACT;
    o->kv_cache_from_model = true;
}

bool dsq_numerics_from_name(const char *s, dsq_numerics *out) {
    if (!strcmp(s, "exact"))
        *out = DSQ_NUMERICS_EXACT;
    else if (!strcmp(s, "release"))
        *out = DSQ_NUMERICS_RELEASE;
    else
        return false;
    return true;
}

const char *dsq_numerics_name(dsq_numerics n) { return n == DSQ_NUMERICS_RELEASE ? "release" : "exact"; }

static const char *const kv_cache_names[DSQ_KV_CACHE_COUNT] = {"f32", "bf16", "compact", "fp4", "int4", "compact-idx8"};

bool dsq_kv_cache_from_name(const char *s, dsq_kv_cache *out) {
    for (int i = 0; i < DSQ_KV_CACHE_COUNT; i++)
        if (!strcmp(s, kv_cache_names[i])) {
            *out = (dsq_kv_cache)i;
            return true;
        }
    return false;
}

const char *dsq_kv_cache_name(dsq_kv_cache k) { return (unsigned)k < DSQ_KV_CACHE_COUNT ? kv_cache_names[k] : "?"; }

/* formats/spec/dsq.md §6.1: kv_compact = rope bf16 + non-rope e4m3 + UE8M0 per 64; kv_fp4 = rope bf16 +
 * non-rope e2m1x2 + UE8M0 per 32; kv_int4 = rope bf16 + non-rope int4x2 + bf16 scale per 32;
 * index_fp4 = e2m1x2 + UE8M0 per 32; index_fp8 = e4m3 + UE8M0 per 32. */
uint64_t dsq_kv_entry_bytes(const dsq_v4_config *c, dsq_kv_cache k) {
    uint64_t hd = (uint64_t)c->head_dim, rd = (uint64_t)c->rope_head_dim, nd = hd - rd;
    switch (k) {
    case DSQ_KV_CACHE_BF16:
        return hd * 2;
    case DSQ_KV_CACHE_COMPACT:
    case DSQ_KV_CACHE_COMPACT_IDX8:
        return rd * 2 + nd + dsq_ceil_div(nd, DSQ_KV_FP8_BLOCK);
    case DSQ_KV_CACHE_FP4:
        return rd * 2 + dsq_ceil_div(nd, 2) + dsq_ceil_div(nd, DSQ_KV_Q4_BLOCK);
    case DSQ_KV_CACHE_INT4:
        return rd * 2 + dsq_ceil_div(nd, 2) + 2 * dsq_ceil_div(nd, DSQ_KV_Q4_BLOCK);
    default:
        return hd * 4;
    }
}

uint64_t dsq_kv_index_bytes(const dsq_v4_config *c, dsq_kv_cache k) {
    uint64_t ihd = (uint64_t)c->index_head_dim;
    switch (k) {
    case DSQ_KV_CACHE_BF16:
        return ihd * 2;
    case DSQ_KV_CACHE_COMPACT:
    case DSQ_KV_CACHE_FP4:
    case DSQ_KV_CACHE_INT4:
        return dsq_ceil_div(ihd, 2) + dsq_ceil_div(ihd, DSQ_FP4_BLOCK);
    case DSQ_KV_CACHE_COMPACT_IDX8:
        return ihd + dsq_ceil_div(ihd, DSQ_KV_IDX8_BLOCK);
    default:
        return ihd * 4;
    }
}

void dsq_kv_declared(const dsq_v4_config *c, dsq_kv_cache k, double *bytes_per_token, uint64_t *fixed_bytes) {
    uint64_t kvb = dsq_kv_entry_bytes(c, k), ib = dsq_kv_index_bytes(c, k);
    uint64_t hd = (uint64_t)c->head_dim, ihd = (uint64_t)c->index_head_dim, W = (uint64_t)c->window_size;
    double bpt = 0;
    uint64_t fixed = 0;
    for (int b = 0; b < c->n_layers + c->n_mtp_layers; b++) {
        uint64_t r = (uint64_t)dsq_config_ratio(c, b);
        fixed += W * kvb;
        if (r == 0) continue;
        /* compressor states, f32 KV + SC: overlap (CSA) [2r][2d] for the kv and the indexer, else [r][d] */
        if (dsq_config_attn_kind(c, b) == DSQ_ATTN_CSA) {
            fixed += 2 * (2 * r) * (2 * hd) * 4 + 2 * (2 * r) * (2 * ihd) * 4;
            bpt += (double)(kvb + ib) / (double)r;
        } else {
            fixed += 2 * r * hd * 4;
            bpt += (double)kvb / (double)r;
        }
    }
    *bytes_per_token = bpt;
    *fixed_bytes = fixed;
}

/* ---- lookups ----------------------------------------------------------------------------------- */

typedef struct loader {
    dsq_v4_model *m;
    v4_block_w *blk; /* views get registered here (NULL: global) */
    dsq_err *err;
} loader;

static dsq_status track(loader *L, dsq_wview *v) {
    uint64_t b = v->data_bytes + v->scale_bytes;
    if (!L->blk) L->m->global_bytes += b;
    v4_block_w *B = L->blk ? L->blk : &L->m->global;
    if (B->n_views == B->cap_views) {
        int cap = B->cap_views ? 2 * B->cap_views : 32;
        dsq_wview **nv = dsq_realloc(B->views, sizeof *nv * (size_t)cap);
        if (!nv) return dsq_err_set(L->err, DSQ_ERR_NOMEM, "no memory for the view list of block %d", B->id);
        B->views = nv;
        B->cap_views = cap;
    }
    B->views[B->n_views++] = v;
    B->bytes += b;
    return DSQ_OK;
}

/* NaN/Inf in the scales or mins of v: DSQ_ERR_NONFINITE naming the file, tensor and element, or (allowed)
 * the view is marked for the exact decoder. */
static dsq_status scan_params(loader *L, dsq_wview *v, const char *path, const char *name) {
    struct {
        dsq_codec_part part;
        const uint8_t *p;
        uint64_t bytes;
        const char *what;
    } parts[2] = {{DSQ_CODEC_PART_SCALES, v->scale, v->scale_bytes, "scale"},
                  {DSQ_CODEC_PART_MINS, v->mins, v->mins_bytes, "min"}};
    for (int i = 0; i < 2; i++) {
        dsq_nf_kind k = dsq_codec_part_nf_kind(v->enc, parts[i].part);
        uint64_t at = dsq_codec_find_nonfinite(k, parts[i].p, parts[i].bytes);
        if (at == UINT64_MAX) continue;
        DSQ_RETURN_IF(!L->m->lo.allow_nonfinite, L->err, DSQ_ERR_NONFINITE, "%s: %s: %s %llu is NaN or infinite (%s)",
                      path, name, parts[i].what, (unsigned long long)at,
                      k == DSQ_NF_E8M0   ? "UE8M0 0xFF"
                      : k == DSQ_NF_E4M3 ? "e4m3 0x7F/0xFF"
                                         : "exponent all ones");
        v->nonfinite = true;
    }
    return DSQ_OK;
}

/* A matrix [rows, cols] in any supported stored encoding. */
static dsq_status get_matrix(loader *L, dsq_wview *v, uint64_t rows, uint64_t cols, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static dsq_status get_matrix(loader *L, dsq_wview *v, uint64_t rows, uint64_t cols, const char *fmt, ...) {
    char name[DSQ_ERR_MSG_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const dsq_wsrc *s = L->m->src;
    DSQ_TRY(s->get(s, name, v, L->err));
    DSQ_RETURN_IF(!dsq_codec_known(v->enc) || !dsq_codec_is_float(v->enc), L->err, DSQ_ERR_DTYPE,
                  "%s: %s: encoding %d is not a weight encoding", s->path, name, (int)v->enc);
    DSQ_RETURN_IF(v->rank != 2 || v->shape[0] != rows || v->shape[1] != cols, L->err, DSQ_ERR_SHAPE,
                  "%s: %s: shape must be [%llu, %llu] for this config", s->path, name, (unsigned long long)rows,
                  (unsigned long long)cols);
    DSQ_RETURN_IF(v->enc == DSQ_ENC_MXFP4 && cols % 32 != 0, L->err, DSQ_ERR_SHAPE,
                  "%s: %s: FP4 columns must be a multiple of 32", s->path, name);
    /* the byte sizes the codec expects for this shape (lib/quant layouts) */
    dsq_codec_layout lay;
    char what[DSQ_ERR_MSG_MAX / 2 + 64];
    snprintf(what, sizeof what, "%s: %s", s->path, name);
    DSQ_TRY(dsq_codec_layout_of(v->enc, rows, cols, v->group, &lay, L->err));
    DSQ_RETURN_IF(
        v->data_bytes != lay.data_bytes || v->scale_bytes != lay.scale_bytes || v->mins_bytes != lay.min_bytes, L->err,
        DSQ_ERR_SHAPE, "%s: stored bytes (%llu codes, %llu scales) do not match the encoding's layout", what,
        (unsigned long long)v->data_bytes, (unsigned long long)v->scale_bytes);
    dsq_qtensor q = dsq__qtensor_of(v);
    DSQ_TRY(dsq_codec_check(&q, what, L->err));
    /* RELIABILITY.md: non-finite scales are rejected at load, for every encoding.  Scales are 1/16 of
     * the codes at most (MXFP4 1×32) and the scan runs at memory speed; the codes are scanned with
     * their checksum the first time a forward pass uses them (dsq_v4_model_check_block). */
    DSQ_TRY(scan_params(L, v, s->path, name));
    return track(L, v);
}

/* A small vector of n values (F32 or BF16) copied to a new f32 array. */
static dsq_status get_vec(loader *L, float **out, uint64_t n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static dsq_status get_vec(loader *L, float **out, uint64_t n, const char *fmt, ...) {
    char name[DSQ_ERR_MSG_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const dsq_wsrc *s = L->m->src;
    dsq_wview v;
    DSQ_TRY(s->get(s, name, &v, L->err));
    uint64_t ne = 0;
    DSQ_RETURN_IF(!dsq_wview_elements(&v, &ne) || ne != n, L->err, DSQ_ERR_SHAPE,
                  "%s: %s: must hold %llu values for this config", s->path, name, (unsigned long long)n);
    DSQ_RETURN_IF(v.enc != DSQ_ENC_F32 && v.enc != DSQ_ENC_BF16, L->err, DSQ_ERR_DTYPE, "%s: %s: must be F32 or BF16",
                  s->path, name);
    float *f = dsq_malloc(sizeof(float) * (n ? n : 1));
    DSQ_RETURN_IF(!f, L->err, DSQ_ERR_NOMEM, "%s: %s: no memory", s->path, name);
    for (uint64_t i = 0; i < n; i++)
        f[i] = v.enc == DSQ_ENC_F32 ? dsq__ld_f32(v.data + 4 * i) : dsq_bf16_to_f32(dsq__ld_u16(v.data + 2 * i));
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(f[i])) {
            dsq_free(f);
            return dsq_err_set(L->err, DSQ_ERR_NONFINITE, "%s: %s: element %llu is not finite", s->path, name,
                               (unsigned long long)i);
        }
    *out = f;
    return DSQ_OK;
}

static dsq_status get_compressor(loader *L, v4_compressor_w *c, const char *prefix, int ratio, int d) {
    const dsq_v4_config *cfg = &L->m->cfg;
    c->ratio = ratio;
    c->overlap = ratio == 4;
    c->c = c->overlap ? 2 : 1;
    c->d = d;
    uint64_t w = (uint64_t)c->c * (uint64_t)d;
    DSQ_TRY(get_vec(L, &c->ape, (uint64_t)ratio * w, "%scompressor.ape", prefix));
    DSQ_TRY(get_matrix(L, &c->wkv, w, cfg->dim, "%scompressor.wkv.weight", prefix));
    DSQ_TRY(get_matrix(L, &c->wgate, w, cfg->dim, "%scompressor.wgate.weight", prefix));
    DSQ_TRY(get_vec(L, &c->norm, (uint64_t)d, "%scompressor.norm.weight", prefix));
    return DSQ_OK;
}

static void rope_of(const dsq_v4_config *c, int ratio, dsq_v4_rope *r) {
    memset(r, 0, sizeof *r);
    r->rope_dim = c->rope_head_dim;
    /* spec §8.2: ratio 0 → rope_theta, no YaRN; ratio > 0 → compress_rope_theta with YaRN */
    r->base = ratio > 0 ? c->compress_rope_theta : c->rope_theta;
    r->yarn = ratio > 0 && c->has_yarn;
    r->factor = c->rope_factor;
    r->original_seq_len = (double)c->original_seq_len;
    r->beta_fast = c->beta_fast;
    r->beta_slow = c->beta_slow;
}

static dsq_status load_block(loader *L, v4_block_w *B, int b) {
    dsq_v4_model *m = L->m;
    const dsq_v4_config *c = &m->cfg;
    uint64_t D = c->dim, hc = (uint64_t)c->hc_mult, mix = (2 + hc) * hc;
    uint64_t H = (uint64_t)c->n_heads, hd = (uint64_t)c->head_dim, ql = (uint64_t)c->q_lora_rank;
    uint64_t G = (uint64_t)c->o_groups, ol = (uint64_t)c->o_lora_rank, I = (uint64_t)c->moe_inter_dim;
    uint64_t E = (uint64_t)c->n_routed_experts;
    char P[64];
    B->id = b;
    B->mtp = b >= c->n_layers;
    if (B->mtp)
        snprintf(P, sizeof P, "mtp.%d.", b - c->n_layers);
    else
        snprintf(P, sizeof P, "layers.%d.", b);
    B->ratio = c->compress_ratios[b];
    B->kind = B->ratio == 0 ? DSQ_ATTN_SLIDING : B->ratio == 4 ? DSQ_ATTN_CSA : DSQ_ATTN_HCA;
    B->hash = !B->mtp && b < c->n_hash_layers; /* spec §8.16: MTP blocks are never hash layers */
    L->blk = B;

    DSQ_TRY(get_vec(L, &B->attn_norm, D, "%sattn_norm.weight", P));
    DSQ_TRY(get_vec(L, &B->ffn_norm, D, "%sffn_norm.weight", P));
    DSQ_TRY(get_matrix(L, &B->hc_attn_fn, mix, hc * D, "%shc_attn_fn", P));
    DSQ_TRY(get_matrix(L, &B->hc_ffn_fn, mix, hc * D, "%shc_ffn_fn", P));
    DSQ_TRY(get_vec(L, &B->hc_attn_base, mix, "%shc_attn_base", P));
    DSQ_TRY(get_vec(L, &B->hc_ffn_base, mix, "%shc_ffn_base", P));
    float *s3 = NULL;
    DSQ_TRY(get_vec(L, &s3, 3, "%shc_attn_scale", P));
    memcpy(B->hc_attn_scale, s3, sizeof B->hc_attn_scale);
    dsq_free(s3);
    s3 = NULL;
    DSQ_TRY(get_vec(L, &s3, 3, "%shc_ffn_scale", P));
    memcpy(B->hc_ffn_scale, s3, sizeof B->hc_ffn_scale);
    dsq_free(s3);

    DSQ_TRY(get_matrix(L, &B->wq_a, ql, D, "%sattn.wq_a.weight", P));
    DSQ_TRY(get_vec(L, &B->q_norm, ql, "%sattn.q_norm.weight", P));
    DSQ_TRY(get_matrix(L, &B->wq_b, H * hd, ql, "%sattn.wq_b.weight", P));
    DSQ_TRY(get_matrix(L, &B->wkv, hd, D, "%sattn.wkv.weight", P));
    DSQ_TRY(get_vec(L, &B->kv_norm, hd, "%sattn.kv_norm.weight", P));
    DSQ_TRY(get_matrix(L, &B->wo_a, G * ol, H * hd / G, "%sattn.wo_a.weight", P));
    DSQ_TRY(get_matrix(L, &B->wo_b, D, G * ol, "%sattn.wo_b.weight", P));
    DSQ_TRY(get_vec(L, &B->attn_sink, H, "%sattn.attn_sink", P));
    dsq_v4_rope rope;
    rope_of(c, B->ratio, &rope);
    B->freqs = dsq_malloc(sizeof(float) * (size_t)(c->rope_head_dim / 2));
    DSQ_RETURN_IF(!B->freqs, L->err, DSQ_ERR_NOMEM, "no memory for RoPE frequencies");
    dsq_v4_rope_freqs(&rope, B->freqs);
    if (B->ratio > 0) {
        char pre[96];
        snprintf(pre, sizeof pre, "%sattn.", P);
        DSQ_TRY(get_compressor(L, &B->comp, pre, B->ratio, c->head_dim));
    }
    if (B->kind == DSQ_ATTN_CSA) {
        uint64_t nih = (uint64_t)c->index_n_heads, ihd = (uint64_t)c->index_head_dim;
        char pre[96];
        snprintf(pre, sizeof pre, "%sattn.indexer.", P);
        DSQ_TRY(get_compressor(L, &B->idx_comp, pre, 4, c->index_head_dim));
        DSQ_TRY(get_matrix(L, &B->idx_wq_b, nih * ihd, ql, "%sattn.indexer.wq_b.weight", P));
        DSQ_TRY(get_matrix(L, &B->idx_weights_proj, nih, D, "%sattn.indexer.weights_proj.weight", P));
    }

    DSQ_TRY(get_matrix(L, &B->gate, E, D, "%sffn.gate.weight", P));
    if (B->hash) {
        const dsq_wsrc *s = m->src;
        char name[128];
        snprintf(name, sizeof name, "%sffn.gate.tid2eid", P);
        DSQ_TRY(s->get(s, name, &B->tid2eid, L->err));
        DSQ_RETURN_IF(B->tid2eid.enc != DSQ_ENC_I64 || B->tid2eid.rank != 2 || B->tid2eid.shape[0] != c->vocab_size ||
                          B->tid2eid.shape[1] != (uint64_t)c->n_activated_experts,
                      L->err, DSQ_ERR_SHAPE, "%s: %s: must be I64 [%llu, %d]", s->path, name,
                      (unsigned long long)c->vocab_size, c->n_activated_experts);
        uint64_t n = c->vocab_size * (uint64_t)c->n_activated_experts;
        for (uint64_t i = 0; i < n; i++) {
            int64_t e = dsq__ld_i64(B->tid2eid.data + 8 * i);
            DSQ_RETURN_IF(e < 0 || e >= (int64_t)E, L->err, DSQ_ERR_RANGE,
                          "%s: %s: element %llu = %lld is not an expert id in [0, %llu)", s->path, name,
                          (unsigned long long)i, (long long)e, (unsigned long long)E);
        }
        DSQ_TRY(track(L, &B->tid2eid));
    } else {
        DSQ_TRY(get_vec(L, &B->gate_bias, E, "%sffn.gate.bias", P));
    }
    B->w1 = dsq_calloc(E, sizeof(dsq_wview));
    B->w2 = dsq_calloc(E, sizeof(dsq_wview));
    B->w3 = dsq_calloc(E, sizeof(dsq_wview));
    DSQ_RETURN_IF(!B->w1 || !B->w2 || !B->w3, L->err, DSQ_ERR_NOMEM, "no memory for %llu expert views",
                  (unsigned long long)E);
    for (uint64_t e = 0; e < E; e++) {
        DSQ_TRY(get_matrix(L, &B->w1[e], I, D, "%sffn.experts.%llu.w1.weight", P, (unsigned long long)e));
        DSQ_TRY(get_matrix(L, &B->w2[e], D, I, "%sffn.experts.%llu.w2.weight", P, (unsigned long long)e));
        DSQ_TRY(get_matrix(L, &B->w3[e], I, D, "%sffn.experts.%llu.w3.weight", P, (unsigned long long)e));
    }
    DSQ_TRY(get_matrix(L, &B->sw1, I, D, "%sffn.shared_experts.w1.weight", P));
    DSQ_TRY(get_matrix(L, &B->sw2, D, I, "%sffn.shared_experts.w2.weight", P));
    DSQ_TRY(get_matrix(L, &B->sw3, I, D, "%sffn.shared_experts.w3.weight", P));

    if (B->mtp) {
        DSQ_TRY(get_matrix(L, &B->e_proj, D, D, "%se_proj.weight", P));
        DSQ_TRY(get_matrix(L, &B->h_proj, D, D, "%sh_proj.weight", P));
        DSQ_TRY(get_vec(L, &B->enorm, D, "%senorm.weight", P));
        DSQ_TRY(get_vec(L, &B->hnorm, D, "%shnorm.weight", P));
        DSQ_TRY(get_vec(L, &B->mtp_norm, D, "%snorm.weight", P));
        DSQ_TRY(get_matrix(L, &B->hc_head_fn, hc, hc * D, "%shc_head_fn", P));
        DSQ_TRY(get_vec(L, &B->hc_head_base, hc, "%shc_head_base", P));
        float *s1 = NULL;
        DSQ_TRY(get_vec(L, &s1, 1, "%shc_head_scale", P));
        B->hc_head_scale = s1[0];
        dsq_free(s1);
    }
    return DSQ_OK;
}

static void free_compressor(v4_compressor_w *c) {
    dsq_free(c->ape);
    dsq_free(c->norm);
}

static void free_block(v4_block_w *B) {
    dsq_free(B->attn_norm);
    dsq_free(B->ffn_norm);
    dsq_free(B->hc_attn_base);
    dsq_free(B->hc_ffn_base);
    dsq_free(B->q_norm);
    dsq_free(B->kv_norm);
    dsq_free(B->attn_sink);
    dsq_free(B->freqs);
    free_compressor(&B->comp);
    free_compressor(&B->idx_comp);
    dsq_free(B->gate_bias);
    dsq_free(B->w1);
    dsq_free(B->w2);
    dsq_free(B->w3);
    dsq_free(B->enorm);
    dsq_free(B->hnorm);
    dsq_free(B->mtp_norm);
    dsq_free(B->hc_head_base);
    dsq_free(B->views);
}

/* Codes of one view: checksum and non-finite scan through the source (.dsq), or the scan alone. */
static dsq_status check_view(const dsq_v4_model *m, dsq_wview *v, dsq_err *err) {
    const dsq_wsrc *s = m->src;
    bool allow = m->lo.allow_nonfinite, bad = false;
    if (s->check) {
        DSQ_TRY(s->check(s, v, !m->lo.no_verify_data, allow, &bad, err));
    } else {
        uint64_t at =
            dsq_codec_find_nonfinite(dsq_codec_part_nf_kind(v->enc, DSQ_CODEC_PART_CODES), v->data, v->data_bytes);
        bad = at != UINT64_MAX;
        uint64_t cols = v->rank ? v->shape[v->rank - 1] : 1;
        DSQ_RETURN_IF(bad && !allow, err, DSQ_ERR_NONFINITE, "%s: %s: element [%llu, %llu] is NaN or infinite", s->path,
                      v->name, (unsigned long long)(at / cols), (unsigned long long)(at % cols));
    }
    /* k-quant scales sit inside the code blocks (d, dmin F16): the part scans above see integers only */
    uint64_t kq = dsq_kquant_find_nonfinite(v->enc, v->data, v->data_bytes);
    DSQ_RETURN_IF(kq != UINT64_MAX && !allow, err, DSQ_ERR_NONFINITE,
                  "%s: %s: super-block %llu has a NaN or infinite scale (F16 d/dmin)", s->path, v->name,
                  (unsigned long long)kq);
    if (bad || kq != UINT64_MAX) v->nonfinite = true;
    return DSQ_OK;
}

dsq_status dsq_v4_model_check_block(const dsq_v4_model *m, int b, dsq_err *err) {
    DSQ_RETURN_IF(b < -1 || b >= m->n_blocks, err, DSQ_ERR_ARG, "block %d: the model has %d", b, m->n_blocks);
    int slot = b < 0 ? m->n_blocks : b;
    if (m->checked[slot]) return DSQ_OK;
    const v4_block_w *B = b < 0 ? &m->global : &m->blocks[b];
    pthread_mutex_lock(m->check_mu);
    dsq_status st = DSQ_OK;
    for (int i = 0; !m->checked[slot] && st == DSQ_OK && i < B->n_views; i++) st = check_view(m, B->views[i], err);
    if (st == DSQ_OK) m->checked[slot] = 1;
    pthread_mutex_unlock(m->check_mu);
    return st;
}

void dsq_v4_model_close(dsq_v4_model *m) {
    if (!m) return;
    dsq__model_devices_close(m);
    for (int b = 0; b < m->n_blocks; b++) free_block(&m->blocks[b]);
    dsq_free(m->blocks);
    dsq_free(m->norm);
    dsq_free(m->hc_head_base);
    dsq_free(m->global.views);
    if (m->check_mu) pthread_mutex_destroy(m->check_mu);
    dsq_free(m->check_mu);
    dsq_free((void *)m->checked);
    dsq_wsrc_close(m->src);
    dsq_free(m);
}

/* Limits of this implementation on top of what config parsing checks. */
static dsq_status check_config(const dsq_v4_config *c, const char *what, dsq_err *err) {
    DSQ_RETURN_IF(c->n_layers < 1 || c->n_mtp_layers < 0 || c->n_compress_ratios < c->n_layers + c->n_mtp_layers, err,
                  DSQ_ERR_CONFIG, "%s: need compress_ratios for every layer and MTP block", what);
    DSQ_RETURN_IF(c->dim < 1 || c->vocab_size < 1 || c->hc_mult < 1 || c->hc_mult > 16 || c->n_heads < 1 ||
                      c->o_groups < 1 || c->n_heads % c->o_groups != 0,
                  err, DSQ_ERR_CONFIG, "%s: n_heads must be a positive multiple of o_groups", what);
    DSQ_RETURN_IF(c->head_dim < 2 || c->head_dim > DSQ_V4_MAX_HEAD_DIM || c->rope_head_dim < 2 ||
                      c->rope_head_dim % 2 != 0 || c->rope_head_dim > c->head_dim,
                  err, DSQ_ERR_CONFIG, "%s: head_dim %d / qk_rope_head_dim %d not supported", what, c->head_dim,
                  c->rope_head_dim);
    DSQ_RETURN_IF(c->window_size < 1, err, DSQ_ERR_CONFIG, "%s: sliding_window must be positive", what);
    DSQ_RETURN_IF(c->n_activated_experts < 1 || c->n_activated_experts > c->n_routed_experts, err, DSQ_ERR_CONFIG,
                  "%s: num_experts_per_tok must be in [1, n_routed_experts]", what);
    bool any_csa = false;
    for (int b = 0; b < c->n_layers + c->n_mtp_layers; b++) {
        DSQ_RETURN_IF(c->compress_ratios[b] < 0, err, DSQ_ERR_CONFIG, "%s: compress_ratios[%d] is negative", what, b);
        any_csa |= c->compress_ratios[b] == 4;
    }
    if (any_csa) {
        int ihd = c->index_head_dim;
        DSQ_RETURN_IF(ihd < c->rope_head_dim || ihd > DSQ_V4_MAX_HEAD_DIM || (ihd & (ihd - 1)) != 0 ||
                          c->index_n_heads < 1 || c->index_topk < 1,
                      err, DSQ_ERR_CONFIG, "%s: index_head_dim %d must be a power of two ≥ qk_rope_head_dim", what,
                      ihd);
    }
    return DSQ_OK;
}

dsq_status dsq_v4_model_create(dsq_wsrc *src, const dsq_v4_config *cfg, dsq_v4_model **out, dsq_err *err) {
    return dsq_v4_model_create_ex(src, cfg, NULL, out, err);
}

dsq_status dsq_v4_model_create_ex(dsq_wsrc *src, const dsq_v4_config *cfg, const dsq_v4_load_options *lo,
                                  dsq_v4_model **out, dsq_err *err) {
    *out = NULL;
    dsq_status st = check_config(cfg, src->path, err);
    if (st) {
        dsq_wsrc_close(src);
        return st;
    }
    dsq_v4_model *m = dsq_calloc(1, sizeof *m);
    if (!m) {
        dsq_wsrc_close(src);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for the model");
    }
    m->cfg = *cfg;
    m->src = src;
    pthread_mutex_init(&m->dev_mu, NULL);
    if (lo) m->lo = *lo;
    int nb0 = cfg->n_layers + cfg->n_mtp_layers;
    m->check_mu = dsq_malloc(sizeof *m->check_mu);
    m->checked = dsq_calloc((size_t)nb0 + 1, 1);
    if (!m->check_mu || !m->checked) {
        dsq_free(m->check_mu);
        m->check_mu = NULL;
        dsq_v4_model_close(m);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for the model");
    }
    pthread_mutex_init(m->check_mu, NULL);
    m->cpu_avx2 = dsq__cpu_has_avx2();
    loader L = {m, NULL, err};
    uint64_t D = cfg->dim, hc = (uint64_t)cfg->hc_mult;
    st = get_matrix(&L, &m->embed, cfg->vocab_size, D, "embed.weight");
    if (!st) st = get_matrix(&L, &m->head, cfg->vocab_size, D, "head.weight");
    if (!st) st = get_vec(&L, &m->norm, D, "norm.weight");
    if (!st) st = get_matrix(&L, &m->hc_head_fn, hc, hc * D, "hc_head_fn");
    if (!st) st = get_vec(&L, &m->hc_head_base, hc, "hc_head_base");
    if (!st) {
        float *s1 = NULL;
        st = get_vec(&L, &s1, 1, "hc_head_scale");
        if (!st) m->hc_head_scale = s1[0];
        dsq_free(s1);
    }
    int nb = cfg->n_layers + cfg->n_mtp_layers;
    if (!st) {
        m->blocks = dsq_calloc((size_t)nb, sizeof *m->blocks);
        if (!m->blocks)
            st = dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for %d blocks", nb);
        else
            m->n_blocks = nb;
    }
    for (int b = 0; !st && b < nb; b++) st = load_block(&L, &m->blocks[b], b);
    if (st) {
        dsq_v4_model_close(m);
        return st;
    }
    *out = m;
    return DSQ_OK;
}

const dsq_v4_config *dsq_v4_model_config(const dsq_v4_model *m) { return &m->cfg; }

bool dsq_v4_model_kv_cache(const dsq_v4_model *m, dsq_kv_cache *out) {
    return m->src && m->src->kv_cache && dsq_kv_cache_from_name(m->src->kv_cache, out);
}

dsq_kv_cache dsq_v4_eval_kv_cache(const dsq_v4_model *m, const dsq_eval_options *o) {
    dsq_kv_cache k = DSQ_KV_CACHE_F32;
    if ((!o || o->kv_cache_from_model) && dsq_v4_model_kv_cache(m, &k)) return k;
    return o ? o->kv_cache : DSQ_KV_CACHE_F32;
}
uint64_t dsq_v4_block_bytes(const dsq_v4_model *m, int b) { return m->blocks[b].bytes; }
uint64_t dsq_v4_global_bytes(const dsq_v4_model *m) { return m->global_bytes; }

static bool is_routed(const v4_block_w *B, int E, const dsq_wview *v) {
    return (v >= B->w1 && v < B->w1 + E) || (v >= B->w2 && v < B->w2 + E) || (v >= B->w3 && v < B->w3 + E);
}

void dsq_v4_token_cost(const dsq_v4_model *m, uint64_t *weight_bytes, uint64_t *macs) {
    const dsq_v4_config *c = &m->cfg;
    int E = c->n_routed_experts, K = c->n_activated_experts;
    uint64_t bytes = 0, mac = 0;
    for (int b = 0; b < c->n_layers; b++) {
        const v4_block_w *B = &m->blocks[b];
        uint64_t routed = 0;
        for (int i = 0; i < B->n_views; i++) {
            const dsq_wview *v = B->views[i];
            uint64_t vb = v->data_bytes + v->scale_bytes;
            if (is_routed(B, E, v)) {
                routed += vb;
                continue;
            }
            if (v->enc == DSQ_ENC_I64) continue; /* tid2eid: one row read */
            bytes += vb;
            mac += v->shape[0] * v->shape[1];
        }
        bytes += routed / (uint64_t)E * (uint64_t)K;
        mac += (uint64_t)K * 3 * (uint64_t)c->moe_inter_dim * c->dim;
    }
    /* head, hc head, final norm, one embedding row */
    bytes += m->head.data_bytes + m->hc_head_fn.data_bytes + m->embed.data_bytes / m->embed.shape[0] + c->dim * 2;
    mac += m->head.shape[0] * m->head.shape[1] + m->hc_head_fn.shape[0] * m->hc_head_fn.shape[1];
    if (weight_bytes) *weight_bytes = bytes;
    if (macs) *macs = mac;
}

void dsq_v4_block_prefetch(const dsq_v4_model *m, int b) {
    const v4_block_w *B = &m->blocks[b];
    if (!m->src->prefetch) return;
    for (int i = 0; i < B->n_views; i++) m->src->prefetch(m->src, B->views[i]);
}

void dsq_v4_block_release(const dsq_v4_model *m, int b) {
    const v4_block_w *B = &m->blocks[b];
    if (!m->src->release) return;
    for (int i = 0; i < B->n_views; i++) m->src->release(m->src, B->views[i]);
}

/* ---- sequences ------------------------------------------------------------------------------------ */

static void comp_state_reset(v4_comp_state *s, uint64_t n) {
    if (!s->kv) return;
    for (uint64_t i = 0; i < n; i++) {
        s->kv[i] = 0.0f;
        s->sc[i] = -INFINITY; /* spec §4.5: state initialised to 0 / -inf */
    }
}

static uint64_t comp_state_elems(const v4_compressor_w *c) {
    return (uint64_t)c->c * (uint64_t)c->ratio * (uint64_t)c->c * (uint64_t)c->d;
}

void dsq_v4_seq_reset(dsq_v4_seq *s) {
    if (!s) return;
    s->pos = 0;
    for (int b = 0; b < s->m->n_blocks; b++) {
        const v4_block_w *B = &s->m->blocks[b];
        v4_layer_cache *lc = &s->lc[b];
        lc->n_comp = 0;
        lc->pos = 0;
        if (B->ratio > 0) comp_state_reset(&lc->cs, comp_state_elems(&B->comp));
        if (B->kind == DSQ_ATTN_CSA) comp_state_reset(&lc->ics, comp_state_elems(&B->idx_comp));
    }
}

void dsq_v4_seq_free(dsq_v4_seq *s) {
    if (!s) return;
    for (int b = 0; s->lc && b < s->m->n_blocks; b++) {
        v4_layer_cache *lc = &s->lc[b];
        dsq_free(lc->ring);
        dsq_free(lc->comp);
        dsq_free(lc->idx_keys);
        dsq_free(lc->cs.kv);
        dsq_free(lc->cs.sc);
        dsq_free(lc->ics.kv);
        dsq_free(lc->ics.sc);
    }
    dsq_free(s->lc);
    dsq_free(s);
}

static bool comp_state_alloc(v4_comp_state *s, uint64_t n) {
    s->kv = dsq_malloc(sizeof(float) * n);
    s->sc = dsq_malloc(sizeof(float) * n);
    return s->kv && s->sc;
}

dsq_status dsq__seq_set_kv(dsq_v4_seq *s, dsq_kv_cache kv, dsq_err *err) {
    const dsq_v4_config *c = &s->m->cfg;
    DSQ_RETURN_IF((unsigned)kv >= DSQ_KV_CACHE_COUNT, err, DSQ_ERR_ARG, "unknown kv cache encoding %d", (int)kv);
    if (s->lc[0].ring && s->kv == kv) return DSQ_OK;
    size_t kvb = (size_t)dsq_kv_entry_bytes(c, kv);
    for (int b = 0; b < s->m->n_blocks; b++) {
        v4_layer_cache *lc = &s->lc[b];
        dsq_free(lc->ring);
        dsq_free(lc->comp);
        dsq_free(lc->idx_keys);
        lc->comp = lc->idx_keys = NULL;
        lc->cap = lc->n_comp = 0;
        lc->ring = dsq_calloc((size_t)c->window_size, kvb);
        if (!lc->ring) {
            /* no ring anywhere: the next forward call at position 0 tries again (lc[0].ring == NULL) */
            for (int j = 0; j < b; j++) {
                dsq_free(s->lc[j].ring);
                s->lc[j].ring = NULL;
            }
            return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for the %s window ring of block %d",
                               dsq_kv_cache_name(kv), b);
        }
    }
    s->kv = kv;
    s->kv_bytes = kvb;
    s->idx_bytes = (size_t)dsq_kv_index_bytes(c, kv);
    return DSQ_OK;
}

dsq_status dsq_v4_seq_create(const dsq_v4_model *m, dsq_v4_seq **out, dsq_err *err) {
    *out = NULL;
    dsq_v4_seq *s = dsq_calloc(1, sizeof *s);
    DSQ_RETURN_IF(!s, err, DSQ_ERR_NOMEM, "no memory for a sequence");
    s->m = m;
    s->lc = dsq_calloc((size_t)m->n_blocks, sizeof *s->lc);
    bool ok = s->lc != NULL;
    for (int b = 0; ok && b < m->n_blocks; b++) {
        const v4_block_w *B = &m->blocks[b];
        v4_layer_cache *lc = &s->lc[b];
        if (ok && B->ratio > 0) ok = comp_state_alloc(&lc->cs, comp_state_elems(&B->comp));
        if (ok && B->kind == DSQ_ATTN_CSA) ok = comp_state_alloc(&lc->ics, comp_state_elems(&B->idx_comp));
    }
    if (ok) ok = dsq__seq_set_kv(s, DSQ_KV_CACHE_F32, NULL) == DSQ_OK;
    if (!ok) {
        dsq_v4_seq_free(s);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory for the caches of a sequence");
    }
    dsq_v4_seq_reset(s);
    *out = s;
    return DSQ_OK;
}

dsq_kv_cache dsq_v4_seq_kv_cache(const dsq_v4_seq *s) { return s->kv; }

int64_t dsq_v4_seq_pos(const dsq_v4_seq *s) { return s->pos; }
int64_t dsq_v4_seq_mtp_pos(const dsq_v4_seq *s) {
    return s->m->cfg.n_mtp_layers > 0 ? s->lc[s->m->cfg.n_layers].pos : 0;
}

uint64_t dsq_v4_seq_bytes(const dsq_v4_seq *s) {
    const dsq_v4_config *c = &s->m->cfg;
    uint64_t total = 0;
    for (int b = 0; b < s->m->n_blocks; b++) {
        const v4_block_w *B = &s->m->blocks[b];
        const v4_layer_cache *lc = &s->lc[b];
        total += (uint64_t)c->window_size * s->kv_bytes;
        total += (uint64_t)lc->n_comp * (s->kv_bytes + (B->kind == DSQ_ATTN_CSA ? s->idx_bytes : 0));
        if (B->ratio > 0) total += 2 * comp_state_elems(&B->comp) * 4;
        if (B->kind == DSQ_ATTN_CSA) total += 2 * comp_state_elems(&B->idx_comp) * 4;
    }
    return total;
}
