/* Checkpoint → .dsq conversion (dsq_convert.h): planning, metadata, and the streaming run. */
#define XXH_STATIC_LINKING_ONLY
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <xxhash.h>

#include "convert_internal.h"
#include "dsq_codec.h"
#include "dsq_ctr_meta.h"
#include "dsq_modelopt.h"

/* ---- source encodings ---- */

static const char *dir_of(dsq_convert_plan *p) { return dsq_st_dir(p->st); }

/* "X.weight" → "X" + suffix */
static const dsq_st_tensor *companion_of(const dsq_st *st, const char *name, const char *suffix) {
    size_t n = strlen(name), k = strlen(suffix);
    if (n < 7 || strcmp(name + n - 7, ".weight") != 0 || n > 600 || k > 32) return NULL;
    char buf[640];
    memcpy(buf, name, n - 7);
    memcpy(buf + n - 7, suffix, k + 1);
    return dsq_st_find(st, buf);
}

/* ModelOpt NVFP4 (dsq_modelopt.h): U8 [N, K/2] codes, F8_E4M3 weight_scale [N, K/16] and the F32 []
 * weight_scale_2 are DSQ_ENC_NVFP4's data, scales and tensor scale, byte for byte. */
static dsq_status modelopt_nvfp4(const dsq_convert_plan *p, const dsq_st_tensor *w, const dsq_st_tensor *s,
                                 cv_src *out, dsq_err *err) {
    const char *f = dsq_st_dir(p->st);
    uint64_t k = 0;
    DSQ_RETURN_IF(w->rank != 2 || s->rank != 2 || !dsq_mul_u64(w->shape[1], 2, &k) || k % DSQ_NVFP4_BLOCK != 0 ||
                      s->shape[0] != w->shape[0] || s->shape[1] != k / DSQ_NVFP4_BLOCK,
                  err, DSQ_ERR_SHAPE,
                  "%s: tensor %s: not an NVFP4 [N, K/2] U8 weight with an F8_E4M3 [N, K/16] weight_scale (got %s [%llu, %llu])",
                  f, w->name, s->name, (unsigned long long)s->shape[0], (unsigned long long)(s->rank > 1 ? s->shape[1] : 0));
    for (int q = 0; q < 2; q++) { /* weight_scale_2 (the tensor scale) and input_scale: F32 [], finite, > 0 */
        const dsq_st_tensor *t = companion_of(p->st, w->name, q ? ".input_scale" : ".weight_scale_2");
        const char *what = q ? "input_scale" : "weight_scale_2";
        DSQ_RETURN_IF(!t, err, DSQ_ERR_MISSING, "%s: tensor %s: its %s is missing", f, w->name, what);
        DSQ_RETURN_IF(t->dtype != DSQ_DTYPE_F32 || t->rank != 0 || t->n_bytes != 4, err, DSQ_ERR_SHAPE,
                      "%s: tensor %s: %s is %s of rank %d, want an F32 scalar of shape []", f, t->name, what,
                      dsq_dtype_name(t->dtype), t->rank);
        float x;
        DSQ_TRY(dsq_st_read(p->st, t, 0, &x, 4, err));
        DSQ_RETURN_IF(!isfinite(x) && !p->opt.allow_nonfinite, err, DSQ_ERR_NONFINITE,
                      "%s: tensor %s: global scale is NaN or infinite", f, t->name);
        DSQ_RETURN_IF(isfinite(x) && !(x > 0), err, DSQ_ERR_RANGE, "%s: tensor %s: global scale %g is not positive", f,
                      t->name, (double)x);
        if (!q) out->ts = t;
    }
    out->enc = DSQ_ENC_NVFP4;
    out->shape[1] = k;
    out->br = 1;
    out->bc = DSQ_NVFP4_BLOCK;
    return DSQ_OK;
}

/* The stored encoding of checkpoint weight w (+ scale s), and its logical shape (spec §2.4, §3.1). */
static dsq_status stored_encoding(const dsq_convert_plan *p, const dsq_st_tensor *w, const dsq_st_tensor *s,
                                  cv_src *out, dsq_err *err) {
    const char *f = dsq_st_dir(p->st);
    out->w = w;
    out->s = s;
    out->rank = w->rank;
    memcpy(out->shape, w->shape, sizeof out->shape);
    out->br = out->bc = 0;
    switch (w->dtype) {
    case DSQ_DTYPE_F32: out->enc = DSQ_ENC_F32; break;
    case DSQ_DTYPE_F16: out->enc = DSQ_ENC_F16; break;
    case DSQ_DTYPE_BF16: out->enc = DSQ_ENC_BF16; break;
    case DSQ_DTYPE_I64: out->enc = DSQ_ENC_I64; break;
    case DSQ_DTYPE_I32: out->enc = DSQ_ENC_I32; break;
    case DSQ_DTYPE_F8_E4M3: {
        DSQ_RETURN_IF(!s, err, DSQ_ERR_MISSING, "%s: tensor %s: FP8 weight without a .scale tensor", f, w->name);
        DSQ_RETURN_IF(w->rank != 2 || s->rank != 2, err, DSQ_ERR_SHAPE, "%s: tensor %s: FP8 weight and scale must be 2-D",
                      f, w->name);
        uint64_t bn = (uint64_t)p->cfg.weight_block_n, bk = (uint64_t)p->cfg.weight_block_k;
        if (bn == 0 || bk == 0) bn = bk = 128;
        DSQ_RETURN_IF(s->shape[0] != dsq_ceil_div(w->shape[0], bn) || s->shape[1] != dsq_ceil_div(w->shape[1], bk), err,
                      DSQ_ERR_SHAPE, "%s: tensor %s: scale shape [%llu, %llu] does not match %llux%llu blocks of [%llu, %llu]",
                      f, s->name, (unsigned long long)s->shape[0], (unsigned long long)s->shape[1],
                      (unsigned long long)bn, (unsigned long long)bk, (unsigned long long)w->shape[0],
                      (unsigned long long)w->shape[1]);
        DSQ_RETURN_IF(s->dtype != DSQ_DTYPE_F8_E8M0 && s->dtype != DSQ_DTYPE_F32, err, DSQ_ERR_DTYPE,
                      "%s: tensor %s: scale dtype %s (F8_E8M0 or F32 expected)", f, s->name, dsq_dtype_name(s->dtype));
        out->enc = s->dtype == DSQ_DTYPE_F8_E8M0 ? DSQ_ENC_FP8_B128 : DSQ_ENC_FP8_B128_F32;
        out->br = (uint32_t)bn;
        out->bc = (uint32_t)bk;
        return DSQ_OK;
    }
    case DSQ_DTYPE_U8:
        if (s && s->dtype == DSQ_DTYPE_F8_E4M3) return modelopt_nvfp4(p, w, s, out, err);
        /* fall through: a U8 packed FP4 weight with UE8M0 scales */
        __attribute__((fallthrough));
    case DSQ_DTYPE_I8: {
        /* packed FP4 e2m1 [N, K/2] with UE8M0 1x32 scales [N, K/32] (spec §2.3) */
        DSQ_RETURN_IF(!s, err, DSQ_ERR_MISSING, "%s: tensor %s: packed FP4 weight without a .scale tensor", f, w->name);
        uint64_t k = 0;
        DSQ_RETURN_IF(w->rank != 2 || s->rank != 2 || !dsq_mul_u64(w->shape[1], 2, &k) || k % 32 != 0 ||
                          s->shape[0] != w->shape[0] || s->shape[1] != k / 32 || s->dtype != DSQ_DTYPE_F8_E8M0,
                      err, DSQ_ERR_SHAPE, "%s: tensor %s: not a packed FP4 [N, K/2] weight with an F8_E8M0 [N, K/32] scale",
                      f, w->name);
        out->enc = DSQ_ENC_MXFP4;
        out->shape[1] = k;
        out->br = 1;
        out->bc = 32;
        return DSQ_OK;
    }
    default:
        return dsq_err_set(err, DSQ_ERR_DTYPE, "%s: tensor %s: dtype %s cannot be stored", f, w->name,
                           dsq_dtype_name(w->dtype));
    }
    DSQ_RETURN_IF(s != NULL, err, DSQ_ERR_UNEXPECTED, "%s: tensor %s: a %s weight has no scale, found %s", f, w->name,
                  dsq_dtype_name(w->dtype), s->name);
    return DSQ_OK;
}

static bool enc_plain(dsq_encoding e) {
    return e == DSQ_ENC_F32 || e == DSQ_ENC_F16 || e == DSQ_ENC_BF16 || e == DSQ_ENC_I64 || e == DSQ_ENC_I32;
}

/* Block of a target encoding (spec §5.3). */
static void target_block(const dsq_convert_plan *p, dsq_encoding e, int group, uint32_t *br, uint32_t *bc) {
    switch (e) {
    case DSQ_ENC_FP8_B128:
    case DSQ_ENC_FP8_B128_F32:
        *br = p->cfg.weight_block_n > 0 ? (uint32_t)p->cfg.weight_block_n : 128;
        *bc = p->cfg.weight_block_k > 0 ? (uint32_t)p->cfg.weight_block_k : 128;
        return;
    case DSQ_ENC_FP8_R128:
    case DSQ_ENC_FP8_R128_F32: *br = 1, *bc = 128; return;
    case DSQ_ENC_FP8_ROW:
    case DSQ_ENC_FP8_ROW_E8M0:
    case DSQ_ENC_INT8_ROW: *br = 1, *bc = 0; return;
    case DSQ_ENC_MXFP4: *br = 1, *bc = 32; return;
    case DSQ_ENC_NVFP4: *br = 1, *bc = 16; return;
    case DSQ_ENC_INT8_G:
    case DSQ_ENC_INT4_G:
    case DSQ_ENC_INT4_G_ASYM:
    case DSQ_ENC_INT2_G_ASYM: *br = 1, *bc = (uint32_t)group; return;
    case DSQ_ENC_Q2_K:
    case DSQ_ENC_Q3_K:
    case DSQ_ENC_Q4_K:
    case DSQ_ENC_Q5_K:
    case DSQ_ENC_Q6_K:
    case DSQ_ENC_IQ4_XS: *br = 1, *bc = DSQ_FILE_KQUANT_BLOCK; return;
    default: *br = *bc = 0; return;
    }
}

/* Resolve the recipe for source s: target encoding, group and block. */
static dsq_status resolve_target(const dsq_convert_plan *p, cv_src *s, dsq_err *err) {
    const char *name = s->w->name, *f = dir_of((dsq_convert_plan *)p);
    const dsq_recipe_rule *rule = dsq_recipe_match(p->opt.recipe, name);
    char tn[48];
    if (!rule || rule->target.keep) {
        s->t_enc = s->enc;
        s->t_group = 0;
        s->t_br = s->br;
        s->t_bc = s->bc;
        return DSQ_OK;
    }
    s->t_enc = rule->target.enc;
    s->t_group = rule->target.group;
    target_block(p, s->t_enc, s->t_group, &s->t_br, &s->t_bc);
    bool same = s->t_enc == s->enc && s->t_br == s->br && s->t_bc == s->bc;
    if (!same && dsq_recipe_is_protected(name) && !p->opt.force)
        return dsq_err_set(err, DSQ_ERR_ARG,
                           "%s: tensor %s must keep its stored form (%s): rule '%s' would store it as %s (use --force)",
                           f, name, dsq_ctr_encoding_name(s->enc), rule->match,
                           dsq_recipe_target_name(&rule->target, tn, sizeof tn));
    if (same) return DSQ_OK;
    DSQ_RETURN_IF(s->ts != NULL, err, DSQ_ERR_UNSUPPORTED,
                  "%s: tensor %s: ModelOpt NVFP4 sources are kept as they are (rule '%s' gives %s; a recipe that keeps "
                  "routed experts, e.g. release, converts them losslessly)",
                  f, name, rule->match, dsq_recipe_target_name(&rule->target, tn, sizeof tn));
    DSQ_RETURN_IF(s->enc == DSQ_ENC_I64 || s->enc == DSQ_ENC_I32 || s->t_enc == DSQ_ENC_I64 || s->t_enc == DSQ_ENC_I32,
                  err, DSQ_ERR_ARG, "%s: tensor %s: integer tensors cannot be re-encoded (rule '%s' gives %s)", f, name,
                  rule->match, dsq_recipe_target_name(&rule->target, tn, sizeof tn));
    DSQ_RETURN_IF(!enc_plain(s->t_enc) && s->rank < 2, err, DSQ_ERR_ARG,
                  "%s: tensor %s: a rank-%d tensor cannot be stored as %s (rule '%s')", f, name, s->rank,
                  dsq_recipe_target_name(&rule->target, tn, sizeof tn), rule->match);
    DSQ_RETURN_IF((s->t_enc == DSQ_ENC_MXFP4 || s->t_enc == DSQ_ENC_NVFP4) && s->shape[s->rank - 1] % 2 != 0, err,
                  DSQ_ERR_ARG, "%s: tensor %s: FP4 needs an even number of columns", f, name);
    return DSQ_OK;
}

static bool same_target(const cv_src *a, const cv_src *b) {
    return a->t_enc == b->t_enc && a->t_group == b->t_group && a->t_br == b->t_br && a->t_bc == b->t_bc;
}

/* ---- plan ---- */

static cv_out *new_out(dsq_convert_plan *p, const char *name, int kind, uint32_t n_src, dsq_err *err) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        cv_out *no = dsq_realloc(p->outs, cap * sizeof *no);
        if (!no) {
            dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
            return NULL;
        }
        p->outs = no;
        p->cap = cap;
    }
    cv_out *o = &p->outs[p->n];
    memset(o, 0, sizeof *o);
    o->name = dsq_strdup(name);
    o->src = dsq_calloc(n_src, sizeof *o->src);
    if (!o->name || !o->src) {
        dsq_free(o->name);
        dsq_free(o->src);
        dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        return NULL;
    }
    o->kind = kind;
    o->n_src = n_src;
    p->n++;
    return o;
}

/* "X.weight" → "X.scale", or ModelOpt NVFP4's "X.weight_scale" for a U8 weight (dsq_modelopt.h) */
static const dsq_st_tensor *scale_of(const dsq_st *st, const dsq_st_tensor *w) {
    if (w->dtype == DSQ_DTYPE_U8) {
        const dsq_st_tensor *s = companion_of(st, w->name, ".weight_scale");
        if (s) return s;
    }
    return companion_of(st, w->name, ".scale");
}

/* Prefix "layers.i." / "mtp.m." of a block role. */
static void block_prefix(const dsq_tensor_role *r, char *buf, size_t n) {
    if (r->scope == DSQ_SCOPE_MTP) snprintf(buf, n, "mtp.%d.", r->index);
    else snprintf(buf, n, "layers.%d.", r->index);
}

/* Finish an output tensor: shape, encoding, copy flag, byte counts. */
static dsq_status finish_out(dsq_convert_plan *p, cv_out *o, dsq_err *err) {
    const cv_src *s0 = &o->src[0];
    o->enc = s0->t_enc;
    o->group = s0->t_group;
    o->br = s0->t_br;
    o->bc = s0->t_bc;
    o->copy = true;
    o->bytes_in = 0;
    for (uint32_t k = 0; k < o->n_src; k++) {
        const cv_src *s = &o->src[k];
        o->copy &= s->t_enc == s->enc && s->t_br == s->br && s->t_bc == s->bc;
        o->bytes_in += s->w->n_bytes + (s->s ? s->s->n_bytes : 0);
    }
    if (o->kind == CV_STACK) {
        o->rank = s0->rank + 1;
        o->shape[0] = o->n_src;
        memcpy(o->shape + 1, s0->shape, sizeof(uint64_t) * (size_t)s0->rank);
    } else if (o->kind == CV_FUSED) {
        o->rank = 2;
        o->shape[0] = s0->shape[0] + o->src[1].shape[0];
        o->shape[1] = s0->shape[1];
    } else {
        o->rank = s0->rank;
        memcpy(o->shape, s0->shape, sizeof o->shape);
    }
    dsq_file_part_layout lay[DSQ_FILE_MAX_PARTS];
    int np = dsq_file_encoding_layout((uint32_t)o->enc, o->rank, o->shape, o->br, o->bc, lay);
    DSQ_RETURN_IF(np < 0 && dsq_file_kquant_block_bytes((uint32_t)o->enc) && o->rank >= 2 &&
                      o->shape[o->rank - 1] % DSQ_FILE_KQUANT_BLOCK != 0,
                  err, DSQ_ERR_SHAPE, "%s: tensor %s: encoding %s needs rows of whole %d-value super-blocks (%llu columns)",
                  dir_of(p), o->name, dsq_ctr_encoding_name(o->enc), DSQ_FILE_KQUANT_BLOCK,
                  (unsigned long long)o->shape[o->rank - 1]);
    DSQ_RETURN_IF(np < 0, err, DSQ_ERR_ARG, "%s: tensor %s: encoding %s is not possible for this shape (code %d)",
                  dir_of(p), o->name, dsq_ctr_encoding_name(o->enc), np);
    o->bytes_out = 0;
    for (int k = 0; k < np; k++) o->bytes_out += lay[k].bytes;
    dsq_tensor_role role;
    dsq_inv_classify(s0->w->name, &role);
    o->family = (int)role.family;
    return DSQ_OK;
}

static dsq_status plan_outputs(dsq_convert_plan *p, dsq_err *err) {
    const dsq_v4_config *c = &p->cfg;
    int n_blocks = c->n_layers + c->n_mtp_layers, E = c->n_routed_experts;
    size_t nslot = (size_t)n_blocks * 3 + 1;
    int32_t *stack_at = dsq_malloc(nslot * sizeof *stack_at), *fused_at = dsq_malloc(nslot * sizeof *fused_at);
    if (!stack_at || !fused_at) {
        dsq_free(stack_at);
        dsq_free(fused_at);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < nslot; i++) stack_at[i] = fused_at[i] = -1;
    dsq_status first = DSQ_OK;
#define NOTE(expr)                                                                                                     \
    do {                                                                                                               \
        dsq_status s_ = (expr);                                                                                        \
        if (s_ != DSQ_OK && first == DSQ_OK) first = s_;                                                               \
    } while (0)
    for (size_t i = 0; i < dsq_st_count(p->st) && first != DSQ_ERR_NOMEM; i++) {
        const dsq_st_tensor *w = dsq_st_at(p->st, i);
        dsq_tensor_role role;
        dsq_inv_classify(w->name, &role);
        if (role.is_scale) continue; /* folded into its weight */
        cv_src src;
        memset(&src, 0, sizeof src);
        dsq_status s = stored_encoding(p, w, scale_of(p->st, w), &src, err);
        if (s == DSQ_OK) s = resolve_target(p, &src, err);
        if (s != DSQ_OK) {
            NOTE(s);
            continue;
        }
        int block = dsq_inv_role_block(c, &role);
        char prefix[64], name[600];
        block_prefix(&role, prefix, sizeof prefix);
        bool expert = role.part == DSQ_PART_EXPERT_W1 || role.part == DSQ_PART_EXPERT_W2 || role.part == DSQ_PART_EXPERT_W3;
        bool cmp = role.part == DSQ_PART_CMP_WKV || role.part == DSQ_PART_CMP_WGATE;
        bool icmp = role.part == DSQ_PART_IDX_CMP_WKV || role.part == DSQ_PART_IDX_CMP_WGATE;
        if (expert && block >= 0 && block < n_blocks && role.expert >= 0 && role.expert < E) {
            int proj = role.part == DSQ_PART_EXPERT_W1 ? 0 : role.part == DSQ_PART_EXPERT_W2 ? 1 : 2;
            size_t slot = (size_t)block * 3 + (size_t)proj;
            if (stack_at[slot] < 0) {
                snprintf(name, sizeof name, "%sffn.experts.w%d.weight", prefix, proj == 0 ? 1 : proj == 1 ? 2 : 3);
                if (!new_out(p, name, CV_STACK, (uint32_t)E, err)) {
                    NOTE(DSQ_ERR_NOMEM);
                    break;
                }
                stack_at[slot] = (int32_t)(p->n - 1);
            }
            cv_out *o = &p->outs[stack_at[slot]];
            o->src[role.expert] = src;
        } else if ((cmp || icmp) && block >= 0 && block < n_blocks) {
            size_t slot = (size_t)block * 3 + (icmp ? 1 : 0);
            if (fused_at[slot] < 0) {
                snprintf(name, sizeof name, "%sattn.%scompressor.wkv_wgate.weight", prefix, icmp ? "indexer." : "");
                if (!new_out(p, name, CV_FUSED, 2, err)) {
                    NOTE(DSQ_ERR_NOMEM);
                    break;
                }
                fused_at[slot] = (int32_t)(p->n - 1);
            }
            bool gate = role.part == DSQ_PART_CMP_WGATE || role.part == DSQ_PART_IDX_CMP_WGATE;
            p->outs[fused_at[slot]].src[gate ? 1 : 0] = src;
        } else {
            cv_out *o = new_out(p, w->name, CV_ONE, 1, err);
            if (!o) {
                NOTE(DSQ_ERR_NOMEM);
                break;
            }
            o->src[0] = src;
        }
    }
    dsq_free(stack_at);
    dsq_free(fused_at);
    if (first != DSQ_OK) return first;
    /* Stacks must agree on one encoding; a fused pair that cannot share one becomes two tensors. */
    size_t n0 = p->n;
    for (size_t i = 0; i < n0; i++) {
        cv_out *o = &p->outs[i];
        if (o->kind == CV_STACK) {
            for (uint32_t e = 0; e < o->n_src; e++) {
                if (!o->src[e].w) {
                    NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: %s: expert %u is missing", dir_of(p), o->name, e));
                    break;
                }
                if (!same_target(&o->src[e], &o->src[0]) || o->src[e].enc != o->src[0].enc ||
                    memcmp(o->src[e].shape, o->src[0].shape, sizeof o->src[0].shape) != 0) {
                    NOTE(dsq_err_set(err, DSQ_ERR_ARG,
                                     "%s: %s and %s would get different encodings or shapes: experts of one layer and "
                                     "projection are stored as one stack and need the same encoding",
                                     dir_of(p), o->src[0].w->name, o->src[e].w->name));
                    break;
                }
            }
        } else if (o->kind == CV_FUSED) {
            const cv_src *a = &o->src[0], *b = &o->src[1];
            if (!a->w || !b->w) {
                NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: %s: wkv or wgate missing", dir_of(p), o->name));
                continue;
            }
            bool fusable = same_target(a, b) && a->rank == 2 && b->rank == 2 && a->shape[1] == b->shape[1] &&
                           (a->t_br <= 1 || a->shape[0] % a->t_br == 0) && (a->t_enc != DSQ_ENC_NVFP4);
            if (!fusable) {
                cv_src second = *b;
                dsq_free(o->name);
                o->name = dsq_strdup(a->w->name);
                o->kind = CV_ONE;
                o->n_src = 1;
                /* checked before new_out, which may move p->outs (and o with it) */
                if (!o->name || !new_out(p, second.w->name, CV_ONE, 1, err)) {
                    NOTE(DSQ_ERR_NOMEM);
                    break;
                }
                p->outs[p->n - 1].src[0] = second;
            }
        }
    }
    if (first != DSQ_OK) return first;
    for (size_t i = 0; i < p->n; i++) NOTE(finish_out(p, &p->outs[i], err));
#undef NOTE
    return first;
}

static dsq_status validate_inventory(dsq_convert_plan *p, dsq_err *err) {
    dsq_tensor_desc *t = NULL;
    size_t n = 0;
    dsq_modelopt_qcfg q; /* a ModelOpt checkpoint's hf_quant_config.json must be one dsq reads */
    bool modelopt = false;
    DSQ_TRY(dsq_modelopt_qcfg_load(dsq_st_dir(p->st), &modelopt, &q, err));
    DSQ_TRY(dsq_inv_describe_st(p->st, &t, &n, err));
    dsq_inv_report rep;
    dsq_status s = dsq_inv_check(&p->cfg, t, n, p->opt.src, &rep, err);
    dsq_free(t);
    return s;
}

void dsq_convert_plan_free(dsq_convert_plan *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n; i++) {
        dsq_free(p->outs[i].name);
        dsq_free(p->outs[i].src);
    }
    dsq_free(p->outs);
    dsq_free(p->items);
    dsq_st_close(p->st);
    dsq_free(p->config_text);
    dsq_free(p->src);
    dsq_free(p->out);
    if (p->command) {
        for (size_t i = 0; p->command[i]; i++) dsq_free(p->command[i]);
        dsq_free(p->command);
    }
    dsq_free(p);
}

dsq_status dsq_convert_plan_make(const dsq_convert_options *opt, dsq_convert_plan **out, dsq_err *err) {
    *out = NULL;
    DSQ_RETURN_IF(!opt->src || !opt->out || !opt->recipe, err, DSQ_ERR_ARG, "convert: source, output and recipe needed");
    dsq_convert_plan *p = dsq_calloc(1, sizeof *p);
    DSQ_RETURN_IF(!p, err, DSQ_ERR_NOMEM, "out of memory");
    p->opt = *opt;
    p->src = dsq_strdup(opt->src);
    p->out = dsq_strdup(opt->out);
    size_t nc = 0;
    while (opt->command && opt->command[nc]) nc++;
    p->command = dsq_calloc(nc + 1, sizeof *p->command);
    dsq_status s = p->src && p->out && p->command ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    for (size_t i = 0; s == DSQ_OK && i < nc; i++)
        if (!(p->command[i] = dsq_strdup(opt->command[i]))) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    p->opt.src = p->src;
    p->opt.out = p->out;
    p->opt.command = (const char *const *)p->command;
    if (p->opt.threads < 1) p->opt.threads = 1;
    dsq_st_options so = {.no_mmap = true}; /* pread: source pages never count towards our RSS */
    if (s == DSQ_OK) s = dsq_st_open(p->src, &so, &p->st, err);
    char *cfg_path = NULL;
    if (s == DSQ_OK) {
        cfg_path = dsq_path_join(dsq_st_dir(p->st), "config.json");
        if (!cfg_path) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    }
    if (s == DSQ_OK) s = dsq_read_file(cfg_path, 16u << 20, &p->config_text, NULL, err);
    if (s == DSQ_OK) s = dsq_config_load(cfg_path, &p->cfg, NULL, err);
    dsq_free(cfg_path);
    if (s == DSQ_OK) s = validate_inventory(p, err);
    if (s == DSQ_OK) s = plan_outputs(p, err);
    if (s == DSQ_OK) {
        p->items = dsq_calloc(p->n ? p->n : 1, sizeof *p->items);
        if (!p->items) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; s == DSQ_OK && i < p->n; i++) {
        const cv_out *o = &p->outs[i];
        p->items[i] = (dsq_convert_item){o->name, o->src[0].enc, o->enc, o->group, o->family, o->n_src, o->copy,
                                         o->bytes_in, o->bytes_out};
        p->bytes_in += o->bytes_in;
    }
    if (s != DSQ_OK) {
        dsq_convert_plan_free(p);
        return s;
    }
    *out = p;
    return DSQ_OK;
}

size_t dsq_convert_plan_count(const dsq_convert_plan *p) { return p->n; }
const dsq_convert_item *dsq_convert_plan_item(const dsq_convert_plan *p, size_t i) {
    return i < p->n ? &p->items[i] : NULL;
}

/* Data-region bytes with the container's alignment rules (spec §5.2). */
static uint64_t planned_data_end(const dsq_convert_plan *p) {
    uint64_t cur = DSQ_FILE_DEFAULT_ALIGN_LARGE;
    for (size_t i = 0; i < p->n; i++) {
        const cv_out *o = &p->outs[i];
        dsq_file_part_layout lay[DSQ_FILE_MAX_PARTS];
        int np = dsq_file_encoding_layout((uint32_t)o->enc, o->rank, o->shape, o->br, o->bc, lay);
        for (int k = 0; k < np; k++) {
            uint64_t a = lay[k].bytes >= DSQ_FILE_DEFAULT_LARGE_THRESHOLD ? DSQ_FILE_DEFAULT_ALIGN_LARGE
                                                                          : DSQ_FILE_DEFAULT_ALIGN_SMALL;
            cur = ((cur + a - 1) & ~(a - 1)) + lay[k].bytes;
        }
    }
    return cur;
}

void dsq_convert_plan_totals(const dsq_convert_plan *p, uint64_t *bytes_in, uint64_t *bytes_out, uint64_t *file_bytes) {
    uint64_t out = 0, names = 0;
    for (size_t i = 0; i < p->n; i++) {
        out += p->outs[i].bytes_out;
        names += 256 + 96ull * p->outs[i].n_src; /* records and source names, roughly */
    }
    if (bytes_in) *bytes_in = p->bytes_in;
    if (bytes_out) *bytes_out = out;
    if (file_bytes) *file_bytes = planned_data_end(p) + names + strlen(p->config_text) + 16384;
}

uint64_t dsq_convert_plan_free_space(const dsq_convert_plan *p) {
    char *copy = dsq_strdup(p->out);
    if (!copy) return 0;
    struct statvfs sv;
    int r = statvfs(dirname(copy), &sv);
    dsq_free(copy);
    return r == 0 ? (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize : 0;
}

double dsq_convert_plan_estimate_seconds(const dsq_convert_plan *p, double copy_mbps, double encode_mbps) {
    double copy = 0, enc = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->outs[i].copy) copy += (double)p->outs[i].bytes_in;
        else enc += (double)p->outs[i].bytes_in;
    }
    double t = copy / (copy_mbps * 1e6) + enc / (encode_mbps * 1e6 * p->opt.threads);
    /* the published file is read back once to verify every checksum */
    uint64_t out;
    dsq_convert_plan_totals(p, NULL, &out, NULL);
    return t + (double)out / (4.0 * copy_mbps * 1e6);
}

/* ---- metadata ---- */

/* DIR/NAME's text, or NULL when it is missing, unreadable or holds a NUL byte (dsq_free). */
static char *read_text_file(const char *dir, const char *name) {
    char *path = dsq_path_join(dir, name), *text = NULL;
    size_t len = 0;
    if (!(path && dsq_path_exists(path) && dsq_read_file(path, 64u << 20, &text, &len, NULL) == DSQ_OK &&
          strlen(text) == len)) {
        dsq_free(text);
        text = NULL;
    }
    dsq_free(path);
    return text;
}

/* XXH3-64 of a safetensors shard's JSON header (its identity without reading the data). */
static uint64_t shard_header_hash(const char *path) {
    dsq_map m;
    uint64_t h = 0;
    if (dsq_map_open(path, false, &m, NULL) != DSQ_OK) return 0;
    uint8_t b8[8];
    if (m.size >= 8 && dsq_map_read(&m, 0, b8, 8, NULL) == DSQ_OK) {
        uint64_t n = dsq_file_le64(b8);
        if (n <= m.size - 8 && n <= DSQ_ST_MAX_HEADER) {
            char *buf = dsq_malloc((size_t)n + 1);
            if (buf && dsq_map_read(&m, 8, buf, (size_t)n, NULL) == DSQ_OK) h = (uint64_t)XXH3_64bits(buf, (size_t)n);
            dsq_free(buf);
        }
    }
    dsq_map_close(&m);
    return h;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The metadata (lib/format's builder, dsq_ctr_meta.h): config, recipe, tokenizer and generation files of
 * the source directory, the KV-cache declaration, provenance. */
static char *build_metadata(dsq_convert_plan *p, dsq_err *err) {
    const char *dir = dsq_st_dir(p->st);
    size_t n_files = dsq_st_shard_count(p->st);
    dsq_ctr_meta_source_file *files = dsq_calloc(n_files ? n_files : 1, sizeof *files);
    char *recipe = dsq_recipe_to_json(p->opt.recipe);
    char *tj = read_text_file(dir, "tokenizer.json"), *tc = read_text_file(dir, "tokenizer_config.json");
    char *ct = read_text_file(dir, "chat_template.jinja"), *gc = read_text_file(dir, "generation_config.json");
    char *text = NULL;
    if (!files) {
        dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory building the metadata");
    } else {
        for (size_t i = 0; i < n_files; i++) {
            const char *path = dsq_st_shard_path(p->st, i);
            files[i] = (dsq_ctr_meta_source_file){base_name(path), dsq_st_shard_size(p->st, i), shard_header_hash(path)};
        }
        dsq_ctr_meta_desc d = {.config_json = p->config_text,
                               .recipe = recipe,
                               .tokenizer_json = tj,
                               .tokenizer_config_json = tc,
                               .chat_template = ct,
                               .generation_config_json = gc,
                               .kv_config = &p->cfg,
                               .kv_encoding = p->opt.recipe ? p->opt.recipe->kv_cache : NULL,
                               .command = (const char *const *)p->command,
                               .n_source_files = n_files,
                               .source_files = files};
        text = dsq_ctr_meta_build(&d, err);
    }
    dsq_free(files);
    dsq_free(recipe);
    dsq_free(tj);
    dsq_free(tc);
    dsq_free(ct);
    dsq_free(gc);
    return text;
}

/* Job identity for --resume (RELIABILITY.md §5): tool version, arguments, recipe, config, shards. */
static char *fingerprint(dsq_convert_plan *p) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (size_t i = 0; p->command && p->command[i]; i++) XXH3_64bits_update(&st, p->command[i], strlen(p->command[i]) + 1);
    char *rj = dsq_recipe_to_json(p->opt.recipe);
    if (rj) XXH3_64bits_update(&st, rj, strlen(rj));
    dsq_free(rj);
    XXH3_64bits_update(&st, p->config_text, strlen(p->config_text));
    uint8_t b[8];
    dsq_put_u32le(b, p->opt.force | (p->opt.allow_nonfinite << 1));
    XXH3_64bits_update(&st, b, 4);
    for (size_t i = 0; i < dsq_st_shard_count(p->st); i++) {
        const char *path = dsq_st_shard_path(p->st, i);
        XXH3_64bits_update(&st, path, strlen(path) + 1);
        dsq_put_u64le(b, dsq_st_shard_size(p->st, i));
        XXH3_64bits_update(&st, b, 8);
        dsq_put_u64le(b, (uint64_t)dsq_st_shard_mtime_ns(p->st, i));
        XXH3_64bits_update(&st, b, 8);
        dsq_put_u64le(b, shard_header_hash(path));
        XXH3_64bits_update(&st, b, 8);
    }
    char *fp = dsq_malloc(64);
    if (fp) snprintf(fp, 64, "dsq %s convert %016llx", DSQ_VERSION_STRING, (unsigned long long)XXH3_64bits_digest(&st));
    return fp;
}

void dsq_convert_plan_set_pre_encoded(dsq_convert_plan *p, const dsq_qtensor *(*fn)(void *user, const char *name),
                                      void *user) {
    p->opt.pre_encoded = fn;
    p->opt.pre_user = user;
}

/* ---- run ---- */

#define COPY_CHUNK (16u << 20)

/* Byte copy of every source of output i (data, then scales, source by source) into its slices, in
 * COPY_CHUNK pieces through two buffers: while one thread writes piece j, another reads and hashes
 * piece j+1.  Pieces are written in order, so the writer's streaming part hashes apply. */
typedef struct cseg {
    const dsq_st_tensor *t;
    int part;
    uint64_t off;
    XXH3_state_t h;
    dsq_nf_kind nf;   /* what the stored bytes are, for the NaN/Inf scan (NONE: not scanned) */
    uint64_t bad;     /* element index of the first NaN/Inf, UINT64_MAX when none */
} cseg;

/* Hash a piece just read and scan it for NaN/Inf codes or scales while it is in cache (the scan is
 * vectorised: ~28 GB/s against ~16 GB/s for XXH3).  Pieces start at multiples of COPY_CHUNK. */
static void take_piece(cseg *sg, uint64_t pos, const uint8_t *b, size_t n) {
    XXH3_64bits_update(&sg->h, b, n);
    if (sg->nf == DSQ_NF_NONE || sg->bad != UINT64_MAX) return;
    uint64_t i = dsq_codec_find_nonfinite(sg->nf, b, n);
    if (i != UINT64_MAX) sg->bad = pos / dsq_nf_kind_size(sg->nf) + i;
}

static dsq_status piece_finite(dsq_convert_plan *p, const dsq_ctr_tensor *t, const cseg *sg, dsq_err *err) {
    if (sg->bad == UINT64_MAX) return DSQ_OK;
    return dsq_err_set(err, DSQ_ERR_NONFINITE,
                       "%s: tensor %s: %s element %llu is NaN or infinite (stored as %s; --allow-nonfinite copies it)",
                       dir_of(p), sg->t->name, sg->part == 0 ? "code" : "scale", (unsigned long long)sg->bad,
                       dsq_ctr_encoding_name(t->encoding));
}

/* Segment for part `part` of source k: checkpoint tensor t goes to its slice whole. */
static dsq_status add_seg(dsq_convert_plan *p, const dsq_ctr_tensor *t, uint32_t k, int part,
                          const dsq_st_tensor *src, cseg *sg, dsq_err *err) {
    uint64_t off, n;
    dsq_ctr_source_slice(t, &t->sources[k], part, &off, &n);
    DSQ_RETURN_IF(n != src->n_bytes, err, DSQ_ERR_SHAPE, "%s: tensor %s: %llu bytes, its slot holds %llu", dir_of(p),
                  src->name, (unsigned long long)src->n_bytes, (unsigned long long)n);
    sg->t = src, sg->part = part, sg->off = off;
    XXH3_64bits_reset(&sg->h);
    sg->nf = p->opt.allow_nonfinite ? DSQ_NF_NONE
                                    : dsq_codec_part_nf_kind(t->encoding, (dsq_codec_part)t->parts[part].kind);
    sg->bad = UINT64_MAX;
    return DSQ_OK;
}

static dsq_status run_copy(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, uint8_t *buf[2], dsq_err *err) {
    const cv_out *o = &p->outs[i];
    const dsq_ctr_tensor *t = dsq_ctr_writer_tensor(w, i);
    cseg *sg = dsq_malloc_aligned(sizeof(cseg) * 3 * (size_t)(o->n_src ? o->n_src : 1)); /* XXH3 state: 64-aligned */
    DSQ_RETURN_IF(!sg, err, DSQ_ERR_NOMEM, "out of memory");
    size_t ns = 0;
    dsq_status st = DSQ_OK;
    for (uint32_t k = 0; k < o->n_src && st == DSQ_OK; k++) {
        const cv_src *s = &o->src[k];
        st = add_seg(p, t, k, 0, s->w, &sg[ns++], err);
        if (st != DSQ_OK || !s->s) continue;
        st = t->n_parts < 2 ? dsq_err_set(err, DSQ_ERR_STATE, "%s: tensor %s has no scale part", dir_of(p), o->name)
                            : add_seg(p, t, k, 1, s->s, &sg[ns++], err);
        if (st != DSQ_OK || !s->ts) continue;
        st = t->n_parts < 3 || t->parts[2].kind != DSQ_FILE_PART_TENSOR_SCALE
                 ? dsq_err_set(err, DSQ_ERR_STATE, "%s: tensor %s has no tensor scale part", dir_of(p), o->name)
                 : add_seg(p, t, k, 2, s->ts, &sg[ns++], err);
    }
    /* pieces of COPY_CHUNK bytes: piece j is (segment cs, position cpos, length clen) in buf[j & 1] */
    size_t cs = 0;
    uint64_t cpos = 0, clen = 0;
    while (cs < ns && sg[cs].t->n_bytes == 0) cs++; /* empty tensors: nothing to copy */
    bool have = st == DSQ_OK && cs < ns;
    int slot = 0;
    if (have) {
        clen = sg[cs].t->n_bytes < COPY_CHUNK ? sg[cs].t->n_bytes : COPY_CHUNK;
        st = dsq_st_read(p->st, sg[cs].t, 0, buf[0], (size_t)clen, err);
        if (st == DSQ_OK) take_piece(&sg[cs], 0, buf[0], (size_t)clen);
        if (st == DSQ_OK) st = piece_finite(p, t, &sg[cs], err);
    }
    while (st == DSQ_OK && have) {
        size_t nsg = cs;
        uint64_t npos = cpos + clen, nlen = 0;
        while (nsg < ns && npos >= sg[nsg].t->n_bytes) nsg++, npos = 0;
        bool have_next = nsg < ns;
        if (have_next) nlen = sg[nsg].t->n_bytes - npos < COPY_CHUNK ? sg[nsg].t->n_bytes - npos : COPY_CHUNK;
        dsq_status wst = DSQ_OK, rst = DSQ_OK;
        dsq_err rerr;
        dsq_err_init(&rerr);
#pragma omp parallel sections num_threads(2) if (have_next && p->opt.threads > 1)
        {
#pragma omp section
            wst = dsq_ctr_writer_write(w, i, sg[cs].part, sg[cs].off + cpos, buf[slot], (size_t)clen, err);
#pragma omp section
            if (have_next) {
                rst = dsq_st_read(p->st, sg[nsg].t, npos, buf[slot ^ 1], (size_t)nlen, &rerr);
                if (rst == DSQ_OK) take_piece(&sg[nsg], npos, buf[slot ^ 1], (size_t)nlen);
            }
        }
        if (wst != DSQ_OK) st = wst;
        else if (rst != DSQ_OK) st = dsq_err_set(err, rst, "%s", rerr.msg);
        else if (have_next) st = piece_finite(p, t, &sg[nsg], err);
        dsq_err_clear(&rerr);
        cs = nsg, cpos = npos, clen = nlen, slot ^= 1, have = have_next;
    }
    for (uint32_t k = 0, q = 0; st == DSQ_OK && k < o->n_src; k++) {
        uint64_t hw = (uint64_t)XXH3_64bits_digest(&sg[q++].h), hs = 0;
        if (o->src[k].s) hs = (uint64_t)XXH3_64bits_digest(&sg[q++].h);
        if (o->src[k].ts) q++; /* the tensor scale: checked, not recorded */
        dsq_ctr_writer_set_source_hash(w, i, k, hw, hs);
    }
    dsq_free_aligned(sg);
    return st;
}

static dsq_status add_outputs(dsq_convert_plan *p, dsq_ctr_writer *w, dsq_err *err) {
    for (size_t i = 0; i < p->n; i++) {
        const cv_out *o = &p->outs[i];
        dsq_ctr_source_desc *sd = dsq_calloc(o->n_src, sizeof *sd);
        DSQ_RETURN_IF(!sd, err, DSQ_ERR_NOMEM, "out of memory");
        uint64_t start = 0;
        for (uint32_t k = 0; k < o->n_src; k++) {
            const cv_src *s = &o->src[k];
            uint64_t count = o->kind == CV_STACK ? 1 : o->kind == CV_FUSED ? s->shape[0] : (o->rank ? o->shape[0] : 1);
            sd[k] = (dsq_ctr_source_desc){s->w->name,  s->s ? s->s->name : NULL, start, count, o->kind == CV_STACK,
                                          s->w->dtype, s->s ? (int)s->s->dtype : -1, s->w->shard};
            start += count;
        }
        dsq_ctr_tensor_desc d = {o->name, o->enc, o->rank, {0}, o->br, o->bc, o->n_src, sd};
        memcpy(d.shape, o->shape, sizeof d.shape);
        dsq_status s = dsq_ctr_writer_add(w, &d, NULL, err);
        dsq_free(sd);
        DSQ_TRY(s);
    }
    return DSQ_OK;
}

dsq_status dsq_convert_run(dsq_convert_plan *p, dsq_convert_stats *stats, dsq_err *err) {
    double t0 = dsq_now();
    dsq_convert_stats st0 = {0};
    char *fp = fingerprint(p), *meta = NULL;
    DSQ_RETURN_IF(!fp, err, DSQ_ERR_NOMEM, "out of memory");
    dsq_ctr_writer_options wo = {.overwrite = p->opt.overwrite, .resume = p->opt.resume, .fingerprint = fp,
                                 .direct = !p->opt.buffered_io};
    dsq_ctr_writer *w = NULL;
    dsq_status s = dsq_ctr_writer_create(p->out, &wo, &w, err);
    dsq_free(fp);
    DSQ_TRY(s);
    s = add_outputs(p, w, err);
    if (s == DSQ_OK && !(meta = build_metadata(p, err))) s = DSQ_ERR_NOMEM;
    if (s == DSQ_OK) s = dsq_ctr_writer_set_metadata(w, meta, strlen(meta), err);
    dsq_free(meta);
    if (s == DSQ_OK) s = dsq_ctr_writer_begin(w, err);
    uint8_t *buf[2] = {NULL, NULL};
    if (s == DSQ_OK) buf[0] = dsq_malloc(COPY_CHUNK), buf[1] = dsq_malloc(COPY_CHUNK);
    if (s == DSQ_OK && (!buf[0] || !buf[1])) s = dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    cv_work work;
    memset(&work, 0, sizeof work);
    dsq_progress prog;
    dsq_progress_begin(&prog, "convert", p->bytes_in);
    if (!p->opt.progress) prog.enabled = false;
    for (uint32_t i = 0; s == DSQ_OK && i < p->n; i++) {
        if (dsq_ctr_writer_is_done(w, i)) {
            st0.tensors_resumed++;
            dsq_progress_add(&prog, p->outs[i].bytes_in);
            continue;
        }
        if (dsq_interrupted()) {
            dsq_progress_end(&prog);
            dsq_free(buf[0]);
            dsq_free(buf[1]);
            dsq__cv_work_free(&work);
            dsq_status ss = dsq_ctr_writer_suspend(w, err);
            if (ss != DSQ_OK) return ss;
            return dsq_err_set(err, DSQ_ERR_INTERRUPTED,
                               "%s: interrupted after %u of %zu tensors; run again with --resume to continue", p->out, i,
                               p->n);
        }
        s = p->outs[i].copy ? run_copy(p, w, i, buf, err) : dsq__cv_run_reencode(p, w, i, &work, err);
        if (s == DSQ_OK) s = dsq_ctr_writer_end_tensor(w, i, err);
        dsq_progress_add(&prog, p->outs[i].bytes_in);
        st0.tensors++;
        if (s == DSQ_OK && p->opt.after_tensor) p->opt.after_tensor(p->opt.ctx, (size_t)st0.tensors);
    }
    dsq_progress_end(&prog);
    dsq_free(buf[0]);
    dsq_free(buf[1]);
    dsq__cv_work_free(&work);
    if (s != DSQ_OK) {
        dsq_ctr_writer_free(w); /* removes .partial and journal (ENOSPC, EIO, bad data), unless resumed */
        return s;
    }
    if (dsq_interrupted()) { /* after the last tensor: still not published (finish checks again at the end) */
        s = dsq_ctr_writer_suspend(w, err);
        if (s != DSQ_OK) return s;
        return dsq_err_set(err, DSQ_ERR_INTERRUPTED,
                           "%s: interrupted after the last tensor, before publication; run again with --resume to "
                           "finish",
                           p->out);
    }
    uint64_t data_end = dsq_ctr_writer_planned_bytes(w);
    s = dsq_ctr_writer_finish(w, err);
    DSQ_TRY(s);
    dsq_convert_plan_totals(p, &st0.bytes_in, &st0.bytes_out, NULL);
    struct stat sb;
    st0.file_bytes = stat(p->out, &sb) == 0 ? (uint64_t)sb.st_size : data_end;
    st0.seconds = dsq_now() - t0;
    if (stats) *stats = st0;
    return DSQ_OK;
}
