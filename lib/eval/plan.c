/* dsq plan (dsq_plan.h): per-group sensitivity by in-memory re-encoding, a multiple-choice knapsack,
 * and the recipe of the choice. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsq_codec.h"
#include "dsq_convert.h"
#include "dsq_json.h"
#include "dsq_kquant.h"
#include "dsq_metrics.h"
#include "dsq_plan.h"
#include "v4_model.h"

/* ---- knapsack ---------------------------------------------------------------------------------- */

dsq_status dsq_plan_knapsack(const dsq_plan_option *const *opts, const int *n_opts, int n_groups, uint64_t budget,
                             uint32_t cells, int *choice, dsq_err *err) {
    DSQ_RETURN_IF(n_groups < 0 || (n_groups && (!opts || !n_opts || !choice)), err, DSQ_ERR_ARG,
                  "plan: malformed knapsack table");
    uint64_t min_total = 0;
    for (int g = 0; g < n_groups; g++) {
        DSQ_RETURN_IF(n_opts[g] < 1 || n_opts[g] > 255, err, DSQ_ERR_ARG, "plan: group %d has %d options", g, n_opts[g]);
        uint64_t lo = UINT64_MAX;
        for (int o = 0; o < n_opts[g]; o++) {
            DSQ_RETURN_IF(!isfinite(opts[g][o].cost) || opts[g][o].cost < 0, err, DSQ_ERR_ARG,
                          "plan: group %d option %d has cost %g", g, o, opts[g][o].cost);
            if (opts[g][o].bytes < lo) lo = opts[g][o].bytes;
        }
        DSQ_RETURN_IF(!dsq_add_u64(min_total, lo, &min_total), err, DSQ_ERR_OVERFLOW, "plan: sizes overflow");
    }
    DSQ_RETURN_IF(min_total > budget, err, DSQ_ERR_RANGE,
                  "plan: the budget of %llu bytes is below the smallest mix (%llu bytes)", (unsigned long long)budget,
                  (unsigned long long)min_total);
    if (!cells) cells = DSQ_PLAN_DEFAULT_CELLS;
    uint64_t q = budget / cells + (budget % cells != 0);
    if (q == 0) q = 1;
    uint64_t C = budget / q; /* <= cells */
    size_t W = (size_t)C + 1;
    double *dp = dsq_malloc(W * sizeof *dp), *nx = dsq_malloc(W * sizeof *nx);
    uint8_t *pick = dsq_malloc((size_t)(n_groups ? n_groups : 1) * W);
    if (!dp || !nx || !pick) {
        dsq_free(dp), dsq_free(nx), dsq_free(pick);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "plan: out of memory for the knapsack (%llu cells)",
                           (unsigned long long)C);
    }
    /* dp[c]: least cost of the groups so far using at most c cells */
    for (size_t c = 0; c < W; c++) dp[c] = 0;
    for (int g = 0; g < n_groups; g++) {
        uint8_t *pg = pick + (size_t)g * W;
        for (size_t c = 0; c < W; c++) {
            nx[c] = INFINITY;
            pg[c] = 0;
            for (int o = 0; o < n_opts[g]; o++) {
                uint64_t w = opts[g][o].bytes / q + (opts[g][o].bytes % q != 0);
                if (w > c || !isfinite(dp[c - w])) continue;
                double v = dp[c - w] + opts[g][o].cost;
                if (v < nx[c]) nx[c] = v, pg[c] = (uint8_t)o;
            }
        }
        double *t = dp;
        dp = nx, nx = t;
    }
    dsq_status st = DSQ_OK;
    if (!isfinite(dp[C])) {
        /* the rounding made every mix too big although the smallest one fits: start from it */
        for (int g = 0; g < n_groups; g++) {
            int b = 0;
            for (int o = 1; o < n_opts[g]; o++)
                if (opts[g][o].bytes < opts[g][b].bytes ||
                    (opts[g][o].bytes == opts[g][b].bytes && opts[g][o].cost < opts[g][b].cost))
                    b = o;
            choice[g] = b;
        }
    } else {
        size_t c = (size_t)C;
        for (int g = n_groups - 1; g >= 0; g--) {
            int o = pick[(size_t)g * W + c];
            choice[g] = o;
            c -= (size_t)(opts[g][o].bytes / q + (opts[g][o].bytes % q != 0));
        }
    }
    {
        /* greedy fill of the bytes left by the rounding */
        uint64_t used = 0;
        for (int g = 0; g < n_groups; g++) used += opts[g][choice[g]].bytes;
        for (;;) {
            int bg = -1, bo = -1;
            double best = 0;
            for (int g = 0; g < n_groups; g++) {
                const dsq_plan_option *cur = &opts[g][choice[g]];
                for (int o = 0; o < n_opts[g]; o++) {
                    const dsq_plan_option *x = &opts[g][o];
                    if (x->cost >= cur->cost) continue;
                    uint64_t after = used - cur->bytes + x->bytes;
                    if (after > budget) continue;
                    double gain = (cur->cost - x->cost) / (double)(x->bytes > cur->bytes ? x->bytes - cur->bytes : 1);
                    if (gain > best) best = gain, bg = g, bo = o;
                }
            }
            if (bg < 0) break;
            used = used - opts[bg][choice[bg]].bytes + opts[bg][bo].bytes;
            choice[bg] = bo;
        }
    }
    dsq_free(dp), dsq_free(nx), dsq_free(pick);
    return st;
}

/* ---- groups ------------------------------------------------------------------------------------ */

typedef struct planner {
    const dsq_plan_options *opt;
    dsq_err *err;
    dsq_v4_model *m;
    const dsq_v4_config *c;
    dsq_plan_result *r;
    dsq_recipe_target cand[DSQ_PLAN_MAX_CANDIDATES];
    char cand_name[DSQ_PLAN_MAX_CANDIDATES][32];
    int n_cand;
    int cap_groups;        /* size of r->groups (fixed by make_groups) */
    /* reference pass, per chunk */
    int n_chunks;
    int64_t T;             /* tokens per chunk */
    int32_t *tok;          /* [n_chunks][T] */
    float *streams;        /* [n_chunks][n_layers][T][hc·D]: streams after each block */
    float *hidden;         /* [n_chunks][T][hc·D] final streams */
    float *ref_lp;         /* [n_chunks][T][V] reference log-probabilities */
    float *ref_mtp_lp;     /* [n_chunks][T-1][V] MTP block 0 */
    float *logits;         /* [n_chunks][T][V] scratch */
    double *lp;            /* [V] scratch */
} planner;

static dsq_status add_tensor(planner *P, dsq_plan_group *g, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static dsq_status add_tensor(planner *P, dsq_plan_group *g, const char *fmt, ...) {
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    char **nt = dsq_realloc(g->tensors, (g->n_tensors + 1) * sizeof *nt);
    DSQ_RETURN_IF(!nt, P->err, DSQ_ERR_NOMEM, "plan: out of memory");
    g->tensors = nt;
    DSQ_RETURN_IF(!(g->tensors[g->n_tensors] = dsq_strdup(name)), P->err, DSQ_ERR_NOMEM, "plan: out of memory");
    g->n_tensors++;
    return DSQ_OK;
}

static dsq_plan_group *new_group(planner *P, int block, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static dsq_plan_group *new_group(planner *P, int block, const char *fmt, ...) {
    /* make_groups sized the array: pointers to earlier groups stay valid while later ones are added */
    if (P->r->n_groups == P->cap_groups) {
        dsq_err_set(P->err, DSQ_ERR_STATE, "plan: more groups than planned (%d)", P->cap_groups);
        return NULL;
    }
    dsq_plan_group *g = &P->r->groups[P->r->n_groups++];
    memset(g, 0, sizeof *g);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->name, sizeof g->name, fmt, ap);
    va_end(ap);
    g->block = block;
    return g;
}

#define NEW_GROUP(var, ...)                                                                                            \
    dsq_plan_group *var = new_group(P, __VA_ARGS__);                                                                   \
    if (!var) return DSQ_ERR_NOMEM

static dsq_status make_groups(planner *P) {
    const dsq_v4_config *c = P->c;
    /* V4 has one MTP block; later ones would be fed by the previous one's streams (not scored here) */
    int nb = c->n_layers + (c->n_mtp_layers > 0 ? 1 : 0);
    P->cap_groups = 2 + 4 * nb;
    P->r->groups = dsq_calloc((size_t)P->cap_groups, sizeof *P->r->groups);
    DSQ_RETURN_IF(!P->r->groups, P->err, DSQ_ERR_NOMEM, "plan: out of memory");
    NEW_GROUP(ge, -1, "embed");
    DSQ_TRY(add_tensor(P, ge, "embed.weight"));
    for (int b = 0; b < nb; b++) {
        char pre[32];
        if (b < c->n_layers) snprintf(pre, sizeof pre, "layers.%d.", b);
        else snprintf(pre, sizeof pre, "mtp.%d.", b - c->n_layers);
        NEW_GROUP(ga, b, "%sattn", pre);
        static const char *attn[] = {"wq_a", "wq_b", "wkv", "wo_a", "wo_b"};
        for (int i = 0; i < 5; i++) DSQ_TRY(add_tensor(P, ga, "%sattn.%s.weight", pre, attn[i]));
        if (b >= c->n_layers) {
            DSQ_TRY(add_tensor(P, ga, "%se_proj.weight", pre));
            DSQ_TRY(add_tensor(P, ga, "%sh_proj.weight", pre));
        }
        if (c->n_shared_experts > 0) {
            NEW_GROUP(gs, b, "%sshared", pre);
            for (int k = 1; k <= 3; k++) DSQ_TRY(add_tensor(P, gs, "%sffn.shared_experts.w%d.weight", pre, k));
        }
        NEW_GROUP(g13, b, "%sexperts.w13", pre);
        NEW_GROUP(g2, b, "%sexperts.w2", pre);
        for (int e = 0; e < c->n_routed_experts; e++) {
            DSQ_TRY(add_tensor(P, g13, "%sffn.experts.%d.w1.weight", pre, e));
            DSQ_TRY(add_tensor(P, g13, "%sffn.experts.%d.w3.weight", pre, e));
            DSQ_TRY(add_tensor(P, g2, "%sffn.experts.%d.w2.weight", pre, e));
        }
    }
    NEW_GROUP(gh, c->n_layers + c->n_mtp_layers, "head");
    DSQ_TRY(add_tensor(P, gh, "head.weight"));
    return DSQ_OK;
}

/* The model's view of checkpoint weight `name` (whose fields the sensitivity runs swap). */
static dsq_wview *model_view(dsq_v4_model *m, const char *name) {
    if (!strcmp(name, "embed.weight")) return &m->embed;
    if (!strcmp(name, "head.weight")) return &m->head;
    for (int b = 0; b < m->n_blocks; b++)
        for (int i = 0; i < m->blocks[b].n_views; i++)
            if (m->blocks[b].views[i]->name && !strcmp(m->blocks[b].views[i]->name, name)) return m->blocks[b].views[i];
    return NULL;
}

static void view_rc(const dsq_wview *v, uint64_t *rows, uint64_t *cols) {
    *cols = v->shape[v->rank - 1];
    *rows = 1;
    for (int i = 0; i < v->rank - 1; i++) *rows *= v->shape[i];
}

static uint64_t view_bytes(const dsq_wview *v) {
    return v->data_bytes + v->scale_bytes + v->mins_bytes;
}

/* Stored bytes of a [rows, cols] matrix in target t; false when t cannot store it. */
static bool target_bytes(const dsq_recipe_target *t, uint64_t rows, uint64_t cols, uint64_t *out) {
    if (dsq_kquant_block_bytes(t->enc) && cols % 256 != 0) return false;
    if ((t->enc == DSQ_ENC_MXFP4 && cols % 32) || (t->enc == DSQ_ENC_NVFP4 && cols % 16)) return false;
    dsq_codec_layout lay;
    if (dsq_codec_layout_of(t->enc, rows, cols, t->group, &lay, NULL) != DSQ_OK) return false;
    *out = lay.data_bytes + lay.scale_bytes + lay.min_bytes;
    return true;
}

static dsq_status parse_candidates(planner *P) {
    const char *list = P->opt->candidates ? P->opt->candidates : DSQ_PLAN_DEFAULT_CANDIDATES;
    const char *s = list;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char name[32];
        DSQ_RETURN_IF(n == 0 || n >= sizeof name, P->err, DSQ_ERR_ARG, "plan: --candidates: bad entry in '%s'", list);
        memcpy(name, s, n);
        name[n] = 0;
        DSQ_RETURN_IF(P->n_cand == DSQ_PLAN_MAX_CANDIDATES, P->err, DSQ_ERR_ARG,
                      "plan: --candidates: more than %d encodings", DSQ_PLAN_MAX_CANDIDATES);
        dsq_recipe_target t;
        dsq_status st = dsq_recipe_parse_target(name, &t, P->err);
        if (st) return st;
        DSQ_RETURN_IF(t.keep, P->err, DSQ_ERR_ARG, "plan: --candidates: 'keep' is always a candidate");
        DSQ_RETURN_IF(!dsq_codec_is_float(t.enc), P->err, DSQ_ERR_ARG, "plan: --candidates: '%s' is not a weight encoding",
                      name);
        for (int i = 0; i < P->n_cand; i++)
            DSQ_RETURN_IF(!strcmp(P->cand_name[i], name), P->err, DSQ_ERR_DUPLICATE,
                          "plan: --candidates: '%s' given twice", name);
        P->cand[P->n_cand] = t;
        snprintf(P->cand_name[P->n_cand], sizeof P->cand_name[0], "%s", name);
        P->n_cand++;
        s += n;
        if (*s == ',') s++;
    }
    DSQ_RETURN_IF(P->n_cand == 0, P->err, DSQ_ERR_ARG, "plan: --candidates is empty");
    return DSQ_OK;
}

/* Candidates of every group: keep + the encodings valid for all its matrices. */
static dsq_status size_groups(planner *P) {
    dsq_plan_result *r = P->r;
    for (int gi = 0; gi < r->n_groups; gi++) {
        dsq_plan_group *g = &r->groups[gi];
        g->cands = dsq_calloc((size_t)P->n_cand + 1, sizeof *g->cands);
        DSQ_RETURN_IF(!g->cands, P->err, DSQ_ERR_NOMEM, "plan: out of memory");
        dsq_plan_cand *keep = &g->cands[0];
        snprintf(keep->name, sizeof keep->name, "keep");
        keep->target.keep = true;
        for (size_t i = 0; i < g->n_tensors; i++) {
            const dsq_wview *v = model_view(P->m, g->tensors[i]);
            DSQ_RETURN_IF(!v, P->err, DSQ_ERR_MISSING, "plan: %s: tensor %s is not a matrix of the model", P->opt->src,
                          g->tensors[i]);
            uint64_t rows, cols;
            view_rc(v, &rows, &cols);
            g->elements += rows * cols;
            keep->bytes += view_bytes(v);
        }
        g->n_cands = 1;
        for (int k = 0; k < P->n_cand; k++) {
            uint64_t sum = 0, b;
            bool ok = true;
            for (size_t i = 0; i < g->n_tensors && ok; i++) {
                const dsq_wview *v = model_view(P->m, g->tensors[i]);
                uint64_t rows, cols;
                view_rc(v, &rows, &cols);
                ok = target_bytes(&P->cand[k], rows, cols, &b);
                sum += b;
            }
            if (!ok) continue;
            dsq_plan_cand *cd = &g->cands[g->n_cands++];
            snprintf(cd->name, sizeof cd->name, "%s", P->cand_name[k]);
            cd->target = P->cand[k];
            cd->bytes = sum;
        }
        r->group_elements += g->elements;
    }
    return DSQ_OK;
}

/* ---- in-memory re-encoding --------------------------------------------------------------------- */

typedef struct swap {
    dsq_wview *v;
    dsq_wview saved;
    void *data, *scales, *mins;
} swap;

static void swaps_undo(swap *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!s[i].v) continue;
        *s[i].v = s[i].saved;
        dsq_free(s[i].data), dsq_free(s[i].scales), dsq_free(s[i].mins);
        memset(&s[i], 0, sizeof s[i]);
    }
}

/* Re-encode matrix `name` into target t and point the model's view at the new bytes. */
static dsq_status swap_in(planner *P, const char *name, const dsq_recipe_target *t, swap *s) {
    dsq_wview *v = model_view(P->m, name);
    DSQ_RETURN_IF(!v, P->err, DSQ_ERR_MISSING, "plan: tensor %s is not a matrix of the model", name);
    uint64_t rows, cols;
    view_rc(v, &rows, &cols);
    dsq_codec_layout lay;
    DSQ_TRY(dsq_codec_layout_of(t->enc, rows, cols, t->group, &lay, P->err));
    dsq_qtensor_buf dst = {t->enc, rows, cols, t->group, NULL, NULL, NULL, 0};
    dst.data = dsq_malloc(lay.data_bytes ? lay.data_bytes : 1);
    dst.scales = lay.scale_bytes ? dsq_malloc(lay.scale_bytes) : NULL;
    dst.mins = lay.min_bytes ? dsq_malloc(lay.min_bytes) : NULL;
    if (!dst.data || (lay.scale_bytes && !dst.scales) || (lay.min_bytes && !dst.mins)) {
        dsq_free(dst.data), dsq_free(dst.scales), dsq_free(dst.mins);
        return dsq_err_set(P->err, DSQ_ERR_NOMEM, "plan: out of memory re-encoding %s", name);
    }
    dsq_qtensor src = {v->enc, rows, cols, v->group, v->data, v->scale, v->mins, v->tensor_scale};
    /* the importance convert --imatrix hands the same encoder (convert_reencode.c) */
    const float *imp = P->opt->imatrix && dsq_kquant_block_bytes(t->enc)
                           ? dsq_imatrix_importance(P->opt->imatrix, name, cols)
                           : NULL;
    dsq_codec_options co = {.name = name, .importance = imp};
    dsq_status st = dsq_codec_reencode(&src, &dst, &co, NULL, P->err);
    if (st) {
        dsq_free(dst.data), dsq_free(dst.scales), dsq_free(dst.mins);
        return st;
    }
    s->v = v;
    s->saved = *v;
    s->data = dst.data, s->scales = dst.scales, s->mins = dst.mins;
    v->enc = t->enc;
    v->group = t->group;
    v->data = dst.data;
    v->data_bytes = lay.data_bytes;
    v->scale = dst.scales;
    v->scale_bytes = lay.scale_bytes;
    v->mins = dst.mins;
    v->mins_bytes = lay.min_bytes;
    v->tensor_scale = dst.tensor_scale;
    v->nonfinite = false;
    return DSQ_OK;
}

/* ---- passes ------------------------------------------------------------------------------------ */

/* KL(ref ‖ run) summed over n rows of logits. */
static dsq_status kl_rows(planner *P, const float *ref_lp, const float *logits, int64_t n, double *sum) {
    size_t V = (size_t)P->c->vocab_size;
    for (int64_t t = 0; t < n; t++) {
        DSQ_TRY(dsq_metrics_log_softmax(logits + (size_t)t * V, V, P->lp, P->err));
        const float *rl = ref_lp + (size_t)t * V;
        double kl = 0;
        for (size_t i = 0; i < V; i++) kl += exp((double)rl[i]) * ((double)rl[i] - P->lp[i]);
        *sum += kl > 0 ? kl : 0;
    }
    return DSQ_OK;
}

static size_t HDs(const planner *P) {
    return (size_t)P->c->hc_mult * (size_t)P->c->dim;
}

/* Main-model pass over every chunk from block `start` (0: the embedding; n_layers: the head alone).
 * With `record`, keeps the streams, hidden states and log-probabilities as the reference; otherwise
 * returns the mean KL against them. */
static dsq_status main_pass(planner *P, int start, bool record, double *kl) {
    const dsq_v4_config *c = P->c;
    size_t V = (size_t)c->vocab_size, HD = HDs(P), T = (size_t)P->T, L = (size_t)c->n_layers;
    int nc = P->n_chunks;
    dsq_v4_seq **seqs = dsq_calloc((size_t)nc, sizeof *seqs);
    dsq_v4_item *items = dsq_calloc((size_t)nc, sizeof *items);
    float **lo = record ? dsq_calloc((size_t)nc * L, sizeof *lo) : NULL;
    const float **from = dsq_calloc((size_t)nc, sizeof *from);
    dsq_status st = seqs && items && from && (!record || lo) ? DSQ_OK
                                                              : dsq_err_set(P->err, DSQ_ERR_NOMEM, "plan: out of memory");
    for (int k = 0; k < nc && !st; k++) {
        st = dsq_v4_seq_create(P->m, &seqs[k], P->err);
        items[k] = (dsq_v4_item){.seq = seqs[k], .tokens = P->tok + (size_t)k * T, .n_tokens = P->T,
                                 .logits = P->logits + (size_t)k * T * V};
        if (record) {
            for (size_t b = 0; b < L; b++) lo[(size_t)k * L + b] = P->streams + (((size_t)k * L + b) * T) * HD;
            items[k].layer_out = lo + (size_t)k * L;
            items[k].hidden = P->hidden + (size_t)k * T * HD;
        } else if (start > 0)
            from[k] = P->streams + (((size_t)k * L + (size_t)(start - 1)) * T) * HD;
    }
    if (!st) st = dsq_v4_forward_from(P->m, &P->opt->eval, items, nc, record ? 0 : start, from, P->err);
    double sum = 0;
    for (int k = 0; k < nc && !st; k++) {
        const float *lg = P->logits + (size_t)k * T * V;
        if (record) {
            for (size_t t = 0; t < T && !st; t++) {
                st = dsq_metrics_log_softmax(lg + t * V, V, P->lp, P->err);
                for (size_t i = 0; i < V; i++) P->ref_lp[((size_t)k * T + t) * V + i] = (float)P->lp[i];
            }
        } else
            st = kl_rows(P, P->ref_lp + (size_t)k * T * V, lg, P->T, &sum);
    }
    if (kl) *kl = sum / (double)((size_t)nc * T);
    for (int k = 0; k < nc; k++) dsq_v4_seq_free(seqs ? seqs[k] : NULL);
    dsq_free(seqs), dsq_free(items), dsq_free(lo), dsq_free(from);
    return st;
}

/* MTP block 0 over every chunk from the reference's final streams: record, or mean KL. */
static dsq_status mtp_pass(planner *P, bool record, double *kl) {
    size_t V = (size_t)P->c->vocab_size, HD = HDs(P), T = (size_t)P->T;
    double sum = 0;
    dsq_status st = DSQ_OK;
    for (int k = 0; k < P->n_chunks && !st; k++) {
        dsq_v4_seq *s = NULL;
        st = dsq_v4_seq_create(P->m, &s, P->err);
        float *lg = P->logits;
        if (!st)
            st = dsq_v4_mtp_forward(P->m, &P->opt->eval, s, 0, P->hidden + (size_t)k * T * HD, P->tok + (size_t)k * T + 1,
                                    P->T - 1, lg, NULL, P->err);
        dsq_v4_seq_free(s);
        float *ref = P->ref_mtp_lp + (size_t)k * (T - 1) * V;
        if (!st && record) {
            for (size_t t = 0; t + 1 < T && !st; t++) {
                st = dsq_metrics_log_softmax(lg + t * V, V, P->lp, P->err);
                for (size_t i = 0; i < V; i++) ref[t * V + i] = (float)P->lp[i];
            }
        } else if (!st)
            st = kl_rows(P, ref, lg, P->T - 1, &sum);
    }
    if (kl) *kl = sum / (double)((size_t)P->n_chunks * (T - 1));
    return st;
}

/* KL of the model as it is now, on the pass that group g affects. */
static dsq_status measure(planner *P, const dsq_plan_group *g, double *kl) {
    const dsq_v4_config *c = P->c;
    if (g->block >= c->n_layers && g->block < c->n_layers + c->n_mtp_layers) return mtp_pass(P, false, kl);
    int start = g->block < 0 ? 0 : g->block > c->n_layers ? c->n_layers : g->block;
    return main_pass(P, start, false, kl);
}

static dsq_status apply_group(planner *P, const dsq_plan_group *g, const dsq_recipe_target *t, swap *sw) {
    for (size_t i = 0; i < g->n_tensors; i++) DSQ_TRY(swap_in(P, g->tensors[i], t, &sw[i]));
    return DSQ_OK;
}

static dsq_status sensitivities(planner *P) {
    dsq_plan_result *r = P->r;
    int total = 0, done = 0;
    for (int gi = 0; gi < r->n_groups; gi++) total += r->groups[gi].n_cands - 1;
    size_t max_t = 0;
    for (int gi = 0; gi < r->n_groups; gi++)
        if (r->groups[gi].n_tensors > max_t) max_t = r->groups[gi].n_tensors;
    swap *sw = dsq_calloc(max_t, sizeof *sw);
    DSQ_RETURN_IF(!sw, P->err, DSQ_ERR_NOMEM, "plan: out of memory");
    dsq_status st = DSQ_OK;
    for (int gi = 0; gi < r->n_groups && !st; gi++) {
        dsq_plan_group *g = &r->groups[gi];
        for (int k = 1; k < g->n_cands && !st; k++) {
            st = dsq_interrupted() ? dsq_err_set(P->err, DSQ_ERR_INTERRUPTED, "plan: interrupted") : DSQ_OK;
            if (!st) st = apply_group(P, g, &g->cands[k].target, sw);
            if (!st) st = measure(P, g, &g->cands[k].kl);
            swaps_undo(sw, g->n_tensors);
            done++;
            if (!st && P->opt->progress) P->opt->progress(P->opt->user, g->name, g->cands[k].name, g->cands[k].kl, done, total);
        }
    }
    dsq_free(sw);
    return st;
}

/* ---- the sensitivity table cache ---------------------------------------------------------------- */

static dsq_status table_load(planner *P, const char *text, size_t len) {
    const char *f = P->opt->table;
    cJSON *j = NULL;
    DSQ_TRY(dsq_json_parse(text, len, f, &j, P->err));
    dsq_status st = DSQ_OK;
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(j, "source");
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(j, "groups");
    uint64_t pos = 0;
    if (!cJSON_IsString(src) || !dsq_json_u64(cJSON_GetObjectItemCaseSensitive(j, "positions"), &pos) ||
        !cJSON_IsArray(groups))
        st = dsq_err_set(P->err, DSQ_ERR_JSON, "%s: not a dsq plan table (source, positions, groups)", f);
    else if (strcmp(src->valuestring, P->opt->src) || pos != P->r->positions)
        st = dsq_err_set(P->err, DSQ_ERR_ARG, "%s: table of %s over %llu positions, this plan is %s over %llu", f,
                         src->valuestring, (unsigned long long)pos, P->opt->src, (unsigned long long)P->r->positions);
    for (int gi = 0; gi < P->r->n_groups && !st; gi++) {
        dsq_plan_group *g = &P->r->groups[gi];
        const cJSON *jg = NULL, *it;
        cJSON_ArrayForEach(it, groups) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "group");
            if (cJSON_IsString(n) && !strcmp(n->valuestring, g->name)) jg = it;
        }
        const cJSON *cands = jg ? cJSON_GetObjectItemCaseSensitive(jg, "candidates") : NULL;
        for (int k = 1; k < g->n_cands && !st; k++) {
            bool found = false;
            cJSON_ArrayForEach(it, cands) {
                const cJSON *n = cJSON_GetObjectItemCaseSensitive(it, "encoding");
                double kl;
                if (cJSON_IsString(n) && !strcmp(n->valuestring, g->cands[k].name) &&
                    dsq_json_f64(cJSON_GetObjectItemCaseSensitive(it, "kl"), &kl) && isfinite(kl) && kl >= 0)
                    g->cands[k].kl = kl, found = true;
            }
            if (!found)
                st = dsq_err_set(P->err, DSQ_ERR_MISSING, "%s: no KL for group %s, candidate %s", f, g->name,
                                 g->cands[k].name);
        }
    }
    cJSON_Delete(j);
    return st;
}

static dsq_status table_save(planner *P) {
    cJSON *j = cJSON_CreateObject(), *groups = cJSON_CreateArray();
    bool ok = j && groups && cJSON_AddStringToObject(j, "source", P->opt->src) &&
              cJSON_AddNumberToObject(j, "positions", (double)P->r->positions);
    if (groups) cJSON_AddItemToObject(j, "groups", groups);
    for (int gi = 0; gi < P->r->n_groups && ok; gi++) {
        const dsq_plan_group *g = &P->r->groups[gi];
        cJSON *jg = cJSON_CreateObject(), *cands = cJSON_CreateArray();
        ok = jg && cands && cJSON_AddItemToArray(groups, jg) && cJSON_AddStringToObject(jg, "group", g->name);
        if (cands) cJSON_AddItemToObject(jg, "candidates", cands);
        for (int k = 1; k < g->n_cands && ok; k++) {
            cJSON *c = cJSON_CreateObject();
            ok = c && cJSON_AddItemToArray(cands, c) && cJSON_AddStringToObject(c, "encoding", g->cands[k].name) &&
                 cJSON_AddNumberToObject(c, "kl", g->cands[k].kl);
        }
    }
    char *text = ok ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    DSQ_RETURN_IF(!text, P->err, DSQ_ERR_NOMEM, "plan: out of memory writing %s", P->opt->table);
    dsq_status st = dsq_write_file_atomic(P->opt->table, text, strlen(text), false, P->err);
    cJSON_free(text);
    return st;
}

/* Sensitivities from the table cache, or measured (and saved there). */
static dsq_status sensitivities_cached(planner *P) {
    if (!P->opt->table) return sensitivities(P);
    char *text = NULL;
    size_t len = 0;
    if (access(P->opt->table, F_OK) == 0) {
        dsq_status st = dsq_read_file(P->opt->table, 64u << 20, &text, &len, P->err);
        if (!st) st = table_load(P, text, len);
        dsq_free(text);
        return st;
    }
    DSQ_TRY(sensitivities(P));
    return table_save(P);
}

/* The whole mix at once: KL of the main model (+ MTP block's, reported separately in the sum). */
static dsq_status measure_mix(planner *P) {
    dsq_plan_result *r = P->r;
    size_t n = 0;
    for (int gi = 0; gi < r->n_groups; gi++) n += r->groups[gi].n_tensors;
    swap *sw = dsq_calloc(n ? n : 1, sizeof *sw);
    DSQ_RETURN_IF(!sw, P->err, DSQ_ERR_NOMEM, "plan: out of memory");
    dsq_status st = DSQ_OK;
    size_t at = 0;
    bool mtp_changed = false;
    for (int gi = 0; gi < r->n_groups && !st; gi++) {
        const dsq_plan_group *g = &r->groups[gi];
        const dsq_plan_cand *cd = &g->cands[g->choice];
        if (!cd->target.keep) {
            st = apply_group(P, g, &cd->target, sw + at);
            mtp_changed |= g->block >= P->c->n_layers && g->block < P->c->n_layers + P->c->n_mtp_layers;
        }
        at += g->n_tensors;
    }
    double main_kl = 0, mtp_kl = 0;
    if (!st) st = main_pass(P, 0, false, &main_kl);
    /* the MTP block is scored as its groups were: on the reference's final streams */
    if (!st && mtp_changed) st = mtp_pass(P, false, &mtp_kl);
    r->measured_kl = main_kl + mtp_kl;
    swaps_undo(sw, n);
    dsq_free(sw);
    return st;
}

/* ---- the recipe -------------------------------------------------------------------------------- */

/* Rule glob for tensor i of group g: the routed experts of a block by one glob per projection. */
static bool rule_glob(const dsq_plan_group *g, size_t i, char *buf, size_t n) {
    const char *t = g->tensors[i];
    const char *e = strstr(t, ".ffn.experts.");
    if (!e) {
        snprintf(buf, n, "%s", t);
        return true;
    }
    (void)i;
    if (strncmp(e, ".ffn.experts.0.", 15)) return false; /* experts 1.. share expert 0's rule */
    snprintf(buf, n, "%.*s.ffn.experts.*.%s", (int)(e - t), t, e + 15); /* "w1.weight" */
    return true;
}

dsq_status dsq_plan_recipe(const dsq_plan_result *r, dsq_recipe **out, dsq_err *err) {
    char head[512];
    snprintf(head, sizeof head,
             "{\"name\": \"plan\", \"description\": \"dsq plan: %llu bytes (%.4f bits per quantizable weight), "
             "predicted KL %.6g\", \"rules\": [{\"match\": \"*\", \"encoding\": \"keep\"}]}",
             (unsigned long long)r->total_bytes, r->bpw, r->predicted_kl);
    dsq_recipe *rc = NULL;
    DSQ_TRY(dsq_recipe_parse(head, strlen(head), "plan recipe", &rc, err));
    dsq_status st = DSQ_OK;
    for (int gi = r->n_groups - 1; gi >= 0 && !st; gi--) {
        const dsq_plan_group *g = &r->groups[gi];
        const dsq_plan_cand *cd = &g->cands[g->choice];
        if (cd->target.keep) continue;
        for (size_t i = g->n_tensors; i-- > 0 && !st;) {
            char glob[200], spec[256];
            if (!rule_glob(g, i, glob, sizeof glob)) continue;
            snprintf(spec, sizeof spec, "%s=%s", glob, cd->name);
            st = dsq_recipe_override(rc, spec, err);
        }
    }
    if (st) {
        dsq_recipe_free(rc);
        return st;
    }
    *out = rc;
    return DSQ_OK;
}

/* ---- driver ------------------------------------------------------------------------------------ */

static dsq_status check_options(const dsq_plan_options *o, dsq_err *err) {
    DSQ_RETURN_IF(!o->src, err, DSQ_ERR_ARG, "plan: no source checkpoint");
    DSQ_RETURN_IF((o->target_bytes > 0) == (o->target_bpw > 0), err, DSQ_ERR_ARG,
                  "plan: give exactly one of --target-size and --target-bpw");
    DSQ_RETURN_IF(o->target_bpw < 0 || !isfinite(o->target_bpw) || o->target_bpw > 64, err, DSQ_ERR_ARG,
                  "plan: --target-bpw %g is not in (0, 64]", o->target_bpw);
    DSQ_RETURN_IF(o->eval.device.kind != DSQ_DEVICE_CPU, err, DSQ_ERR_UNSUPPORTED,
                  "plan: sensitivity runs swap weights in memory and run on the cpu device only");
    DSQ_RETURN_IF(!o->tokens || o->n_tokens == 0, err, DSQ_ERR_ARG, "plan: no calibration tokens");
    return DSQ_OK;
}

/* Convert-plan bytes of a recipe (the converter's own accounting). */
static dsq_status convert_bytes(planner *P, const dsq_recipe *rc, uint64_t *bytes) {
    char out[4096];
    snprintf(out, sizeof out, "%s/.dsq-plan-check.dsq", P->opt->src);
    dsq_convert_options co = {.src = P->opt->src, .out = out, .recipe = rc, .imatrix = P->opt->imatrix};
    dsq_convert_plan *cp = NULL;
    DSQ_TRY(dsq_convert_plan_make(&co, &cp, P->err));
    dsq_convert_plan_totals(cp, NULL, bytes, NULL);
    dsq_convert_plan_free(cp);
    return DSQ_OK;
}

static dsq_status run(planner *P) {
    const dsq_plan_options *o = P->opt;
    dsq_plan_result *r = P->r;
    DSQ_TRY(parse_candidates(P));
    DSQ_TRY(dsq_v4_model_open(o->src, &P->m, P->err));
    P->c = dsq_v4_model_config(P->m);
    const dsq_v4_config *c = P->c;
    DSQ_TRY(make_groups(P));
    DSQ_TRY(size_groups(P));

    /* bytes of everything else: the converter's total for "keep everything" minus the groups' */
    dsq_recipe *keep = NULL;
    static const char keep_json[] = "{\"name\": \"keep\", \"rules\": [{\"match\": \"*\", \"encoding\": \"keep\"}]}";
    DSQ_TRY(dsq_recipe_parse(keep_json, sizeof keep_json - 1, "keep recipe", &keep, P->err));
    dsq_status st = convert_bytes(P, keep, &r->source_bytes);
    dsq_recipe_free(keep);
    if (st) return st;
    uint64_t keep_groups = 0;
    for (int gi = 0; gi < r->n_groups; gi++) keep_groups += r->groups[gi].cands[0].bytes;
    DSQ_RETURN_IF(keep_groups > r->source_bytes, P->err, DSQ_ERR_STATE,
                  "plan: %s: group bytes (%llu) exceed the converter's total (%llu)", o->src,
                  (unsigned long long)keep_groups, (unsigned long long)r->source_bytes);
    r->fixed_bytes = r->source_bytes - keep_groups;
    if (o->target_bytes) r->budget_bytes = o->target_bytes;
    else r->budget_bytes = r->fixed_bytes + (uint64_t)floor(o->target_bpw * (double)r->group_elements / 8.0);
    DSQ_RETURN_IF(r->budget_bytes < r->fixed_bytes, P->err, DSQ_ERR_RANGE,
                  "plan: %s: --target-size %llu is below the bytes of the tensors outside the groups (%llu)", o->src,
                  (unsigned long long)r->budget_bytes, (unsigned long long)r->fixed_bytes);

    /* infeasible budgets fail before any measurement */
    uint64_t lo = r->fixed_bytes;
    for (int gi = 0; gi < r->n_groups; gi++) {
        uint64_t mb = UINT64_MAX;
        for (int k = 0; k < r->groups[gi].n_cands; k++)
            if (r->groups[gi].cands[k].bytes < mb) mb = r->groups[gi].cands[k].bytes;
        lo += mb;
    }
    DSQ_RETURN_IF(lo > r->budget_bytes, P->err, DSQ_ERR_RANGE,
                  "plan: %s: the budget of %llu bytes is below the smallest mix of these candidates (%llu bytes, "
                  "%.4f bits per quantizable weight)",
                  o->src, (unsigned long long)r->budget_bytes, (unsigned long long)lo,
                  8.0 * (double)(lo - r->fixed_bytes) / (double)r->group_elements);

    /* chunks: BOS + n_ctx - 1 text tokens each */
    uint32_t n_ctx = o->n_ctx ? o->n_ctx : 512;
    DSQ_RETURN_IF(n_ctx < 3 || n_ctx > c->max_position_embeddings, P->err, DSQ_ERR_ARG,
                  "plan: --ctx %u is not in [3, %llu]", n_ctx, (unsigned long long)c->max_position_embeddings);
    uint64_t per = n_ctx - 1, nch = o->n_tokens / per;
    if (o->max_chunks && nch > o->max_chunks) nch = o->max_chunks;
    DSQ_RETURN_IF(nch == 0, P->err, DSQ_ERR_ARG, "plan: the calibration text has %llu tokens, fewer than one chunk of %u",
                  (unsigned long long)o->n_tokens, n_ctx);
    P->n_chunks = (int)nch;
    P->T = n_ctx;
    size_t T = n_ctx, V = (size_t)c->vocab_size, HD = HDs(P), L = (size_t)c->n_layers;
    P->tok = dsq_malloc(nch * T * sizeof *P->tok);
    P->streams = dsq_malloc(nch * L * T * HD * sizeof(float));
    P->hidden = dsq_malloc(nch * T * HD * sizeof(float));
    P->ref_lp = dsq_malloc(nch * T * V * sizeof(float));
    P->ref_mtp_lp = dsq_malloc(nch * T * V * sizeof(float));
    P->logits = dsq_malloc(nch * T * V * sizeof(float));
    P->lp = dsq_malloc(V * sizeof(double));
    DSQ_RETURN_IF(!P->tok || !P->streams || !P->hidden || !P->ref_lp || !P->ref_mtp_lp || !P->logits || !P->lp, P->err,
                  DSQ_ERR_NOMEM, "plan: out of memory for %llu chunks of %u tokens", (unsigned long long)nch, n_ctx);
    for (uint64_t k = 0; k < nch; k++) {
        P->tok[k * T] = (int32_t)c->bos_token_id;
        memcpy(P->tok + k * T + 1, o->tokens + k * per, per * sizeof(int32_t));
    }
    r->positions = nch * T;
    DSQ_TRY(main_pass(P, 0, true, NULL));
    if (c->n_mtp_layers > 0) DSQ_TRY(mtp_pass(P, true, NULL));
    DSQ_TRY(sensitivities_cached(P));

    /* choose */
    int n = r->n_groups;
    const dsq_plan_option **opts = dsq_calloc((size_t)n, sizeof *opts);
    dsq_plan_option *flat = dsq_calloc((size_t)n * (DSQ_PLAN_MAX_CANDIDATES + 1), sizeof *flat);
    int *n_opts = dsq_calloc((size_t)n, sizeof *n_opts), *choice = dsq_calloc((size_t)n, sizeof *choice);
    st = opts && flat && n_opts && choice ? DSQ_OK : dsq_err_set(P->err, DSQ_ERR_NOMEM, "plan: out of memory");
    for (int gi = 0; gi < n && !st; gi++) {
        dsq_plan_option *f = flat + (size_t)gi * (DSQ_PLAN_MAX_CANDIDATES + 1);
        for (int k = 0; k < r->groups[gi].n_cands; k++) f[k] = (dsq_plan_option){r->groups[gi].cands[k].bytes, r->groups[gi].cands[k].kl};
        opts[gi] = f;
        n_opts[gi] = r->groups[gi].n_cands;
    }
    if (!st) st = dsq_plan_knapsack(opts, n_opts, n, r->budget_bytes - r->fixed_bytes, o->cells, choice, P->err);
    uint64_t gbytes = 0;
    for (int gi = 0; gi < n && !st; gi++) {
        dsq_plan_group *g = &r->groups[gi];
        g->choice = choice[gi];
        gbytes += g->cands[g->choice].bytes;
        r->predicted_kl += g->cands[g->choice].kl;
    }
    dsq_free(opts), dsq_free(flat), dsq_free(n_opts), dsq_free(choice);
    if (st) return st;
    r->total_bytes = r->fixed_bytes + gbytes;
    r->bpw = 8.0 * (double)gbytes / (double)r->group_elements;

    /* the converter's accounting of the recipe must agree to the byte */
    dsq_recipe *rc = NULL;
    DSQ_TRY(dsq_plan_recipe(r, &rc, P->err));
    st = convert_bytes(P, rc, &r->convert_bytes);
    dsq_recipe_free(rc);
    if (st) return st;
    DSQ_RETURN_IF(r->convert_bytes != r->total_bytes, P->err, DSQ_ERR_STATE,
                  "plan: %s: the converter stores the chosen mix in %llu bytes, the plan counted %llu", o->src,
                  (unsigned long long)r->convert_bytes, (unsigned long long)r->total_bytes);
    return measure_mix(P);
}

dsq_status dsq_plan_run(const dsq_plan_options *opt, dsq_plan_result **out, dsq_err *err) {
    *out = NULL;
    DSQ_TRY(check_options(opt, err));
    double t0 = dsq_now();
    planner P = {.opt = opt, .err = err};
    P.r = dsq_calloc(1, sizeof *P.r);
    DSQ_RETURN_IF(!P.r, err, DSQ_ERR_NOMEM, "plan: out of memory");
    dsq_status st = run(&P);
    dsq_v4_model_close(P.m);
    dsq_free(P.tok), dsq_free(P.streams), dsq_free(P.hidden), dsq_free(P.ref_lp), dsq_free(P.ref_mtp_lp);
    dsq_free(P.logits), dsq_free(P.lp);
    if (st) {
        dsq_plan_free(P.r);
        return st;
    }
    P.r->seconds = dsq_now() - t0;
    *out = P.r;
    return DSQ_OK;
}

void dsq_plan_free(dsq_plan_result *r) {
    if (!r) return;
    for (int gi = 0; gi < r->n_groups; gi++) {
        for (size_t i = 0; i < r->groups[gi].n_tensors; i++) dsq_free(r->groups[gi].tensors[i]);
        dsq_free(r->groups[gi].tensors);
        dsq_free(r->groups[gi].cands);
    }
    dsq_free(r->groups);
    dsq_free(r);
}
