/* KL divergence against a reference's top-k record, and the statistics over positions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_metrics.h"

struct dsq_kld_ctx {
    uint32_t vocab, k;
    double temperature;
    uint64_t seed;
    uint32_t *stamp; /* [vocab] membership marks: stamp[i] == gen ⇔ i is in the current id set */
    uint32_t gen;
    int32_t *ids;    /* [k] the last reference record's ids */
    float *lps;      /* [k] its log-probs */
    float *cand_lps; /* [k] candidate log-probs at the reference's ids */
    struct cand {
        float x;
        int32_t id;
    } * heap; /* [k] top-k selection */
};

dsq_status dsq_kld_ctx_create(uint32_t vocab, uint32_t k, double temperature, uint64_t seed, dsq_kld_ctx **out,
                              dsq_err *err) {
    *out = NULL;
    DSQ_RETURN_IF(vocab == 0 || vocab > DSQ_KBASE_MAX_VOCAB, err, DSQ_ERR_RANGE, "vocabulary of %u ids out of range",
                  vocab);
    DSQ_RETURN_IF(k == 0 || k > vocab, err, DSQ_ERR_RANGE, "top-k of %u outside [1, vocab %u]", k, vocab);
    DSQ_RETURN_IF(!(temperature > 0) || !isfinite(temperature), err, DSQ_ERR_RANGE,
                  "sampling temperature %g must be positive", temperature);
    dsq_kld_ctx *c = dsq_calloc(1, sizeof *c);
    if (c) {
        c->vocab = vocab;
        c->k = k;
        c->temperature = temperature;
        c->seed = seed;
        c->stamp = dsq_calloc(vocab, sizeof *c->stamp);
        c->ids = dsq_malloc((size_t)k * sizeof *c->ids);
        c->lps = dsq_malloc((size_t)k * sizeof *c->lps);
        c->cand_lps = dsq_malloc((size_t)k * sizeof *c->cand_lps);
        c->heap = dsq_malloc((size_t)k * sizeof *c->heap);
    }
    if (!c || !c->stamp || !c->ids || !c->lps || !c->cand_lps || !c->heap) {
        dsq_kld_ctx_free(c);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "KL context for vocabulary %u, k %u: out of memory", vocab, k);
    }
    *out = c;
    return DSQ_OK;
}

void dsq_kld_ctx_free(dsq_kld_ctx *c) {
    if (!c) return;
    dsq_free(c->stamp);
    dsq_free(c->ids);
    dsq_free(c->lps);
    dsq_free(c->cand_lps);
    dsq_free(c->heap);
    dsq_free(c);
}

/* a ranks before b: larger logit, then lower id */
static inline bool ranks_before(struct cand a, struct cand b) { return a.x > b.x || (a.x == b.x && a.id < b.id); }

/* Min-heap on rank: the root is the worst kept candidate. */
static void sift_down(struct cand *h, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ranks_before(h[w], h[l])) w = l;
        if (r < n && ranks_before(h[w], h[r])) w = r;
        if (w == i) return;
        struct cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* ids[0..k) = the k best ids of row in rank order. */
static void top_k(dsq_kld_ctx *c, const float *row) {
    struct cand *h = c->heap;
    uint32_t k = c->k, n = 0;
    for (uint32_t i = 0; i < c->vocab; i++) {
        struct cand x = {row[i], (int32_t)i};
        if (n < k) {
            h[n++] = x;
            if (n == k)
                for (uint32_t j = k / 2; j-- > 0;) sift_down(h, k, j);
        } else if (ranks_before(x, h[0])) {
            h[0] = x;
            sift_down(h, k, 0);
        }
    }
    /* Pop worst-first into the back of ids. */
    for (uint32_t m = k; m > 0; m--) {
        c->ids[m - 1] = h[0].id;
        h[0] = h[m - 1];
        sift_down(h, m - 1, 0);
    }
}

/* The one code path both sides go through: log-probs at `ids`, the log-mass outside them and the
 * target's log-prob, each computed in double from the row and rounded to float. */
static dsq_status eval_ids(dsq_kld_ctx *c, const float *row, const int32_t *ids, int32_t target, float *lps,
                           float *rest_lp, float *target_lp, dsq_err *err) {
    double lse;
    DSQ_TRY(dsq_metrics_logsumexp(row, c->vocab, &lse, err));
    if (++c->gen == 0) { /* wrapped: reset the marks */
        memset(c->stamp, 0, (size_t)c->vocab * sizeof *c->stamp);
        c->gen = 1;
    }
    for (uint32_t j = 0; j < c->k; j++) {
        lps[j] = (float)((double)row[ids[j]] - lse);
        c->stamp[ids[j]] = c->gen;
    }
    double m = -INFINITY;
    for (uint32_t i = 0; i < c->vocab; i++)
        if (c->stamp[i] != c->gen && row[i] > m) m = row[i];
    double rest = -INFINITY;
    if (m > -INFINITY) {
        double s = 0;
        for (uint32_t i = 0; i < c->vocab; i++)
            if (c->stamp[i] != c->gen) s += exp((double)row[i] - m);
        rest = m + log(s) - lse;
        if (rest > 0) rest = 0; /* rounding; a mass is at most 1 */
    }
    *rest_lp = (float)rest;
    *target_lp = (float)((double)row[target] - lse);
    return DSQ_OK;
}

dsq_status dsq_kld_ref_record(dsq_kld_ctx *c, const float *row, int32_t target, uint64_t position,
                              dsq_kbase_record *rec, dsq_err *err) {
    DSQ_RETURN_IF(target < 0 || (uint32_t)target >= c->vocab, err, DSQ_ERR_TOKEN,
                  "position %llu: target token %d outside the vocabulary [0, %u)", (unsigned long long)position,
                  (int)target, c->vocab);
    double lse;
    DSQ_TRY(dsq_metrics_logsumexp(row, c->vocab, &lse, err)); /* validate before ranking */
    top_k(c, row);
    memset(rec, 0, sizeof *rec);
    DSQ_TRY(eval_ids(c, row, c->ids, target, c->lps, &rec->rest_lp, &rec->target_lp, err));
    rec->target = target;
    rec->sample = (int32_t)dsq_metrics_gumbel_sample(row, c->vocab, c->temperature, c->seed, position);
    rec->k = c->k;
    rec->ids = c->ids;
    rec->lps = c->lps;
    return DSQ_OK;
}

/* p·(log p - log q) with 0·log 0 = 0 */
static inline double kl_term(float lp, float lq) {
    if (lp == -INFINITY) return 0.0;
    if (lp == lq) return 0.0;
    return exp((double)lp) * ((double)lp - (double)lq);
}

dsq_status dsq_kld_compare(dsq_kld_ctx *c, const dsq_kbase_record *ref, const float *cand_row, uint64_t position,
                           dsq_kld_pos *out, dsq_err *err) {
    DSQ_RETURN_IF(ref->k != c->k, err, DSQ_ERR_ARG, "position %llu: record has k %u, expected %u",
                  (unsigned long long)position, ref->k, c->k);
    DSQ_RETURN_IF(ref->target < 0 || (uint32_t)ref->target >= c->vocab, err, DSQ_ERR_TOKEN,
                  "position %llu: target token %d outside the vocabulary [0, %u)", (unsigned long long)position,
                  (int)ref->target, c->vocab);
    for (uint32_t j = 0; j < c->k; j++)
        DSQ_RETURN_IF(ref->ids[j] < 0 || (uint32_t)ref->ids[j] >= c->vocab, err, DSQ_ERR_TOKEN,
                      "position %llu: record id %d outside the vocabulary", (unsigned long long)position,
                      (int)ref->ids[j]);
    float cand_rest, cand_target;
    DSQ_TRY(eval_ids(c, cand_row, ref->ids, ref->target, c->cand_lps, &cand_rest, &cand_target, err));
    double kl = 0;
    for (uint32_t j = 0; j < c->k; j++) kl += kl_term(ref->lps[j], c->cand_lps[j]);
    kl += kl_term(ref->rest_lp, cand_rest);
    out->kl = kl;
    out->ctx_pos = 0;
    out->ref_top1_p = exp((double)ref->lps[0]);
    out->nll_ref = -(double)ref->target_lp;
    out->nll_cand = -(double)cand_target;
    out->dp = exp((double)cand_target) - exp((double)ref->target_lp);
    out->top1_agree = dsq_metrics_argmax(cand_row, c->vocab) == (size_t)ref->ids[0];
    out->sample_agree =
        dsq_metrics_gumbel_sample(cand_row, c->vocab, c->temperature, c->seed, position) == (size_t)ref->sample;
    return DSQ_OK;
}

/* ---- statistics over positions ---------------------------------------------------------------- */

double dsq_kld_hist_edge(int b) {
    if (b <= 0) return 0.0;
    return pow(10.0, DSQ_KLD_HIST_LO_EXP + (double)(b - 1) / DSQ_KLD_HIST_PER_DECADE);
}

int dsq_kld_hist_bin(double kl) {
    if (!(kl >= 1e-6)) return 0; /* also NaN */
    if (kl >= 10.0) return DSQ_KLD_HIST_BINS - 1;
    int b = 1 + (int)floor((log10(kl) - DSQ_KLD_HIST_LO_EXP) * DSQ_KLD_HIST_PER_DECADE);
    /* log10 rounding at an exact edge */
    while (b > 1 && kl < dsq_kld_hist_edge(b)) b--;
    while (b < DSQ_KLD_HIST_BINS - 2 && kl >= dsq_kld_hist_edge(b + 1)) b++;
    return b;
}

struct dsq_kld_acc {
    double *kl;
    size_t n, cap;
    dsq_stat kl_stat, nll_ref, nll_cand, nll_diff, dp;
    double dp_sq;
    uint64_t top1, same_sample;
    uint64_t band_n[DSQ_KLD_BANDS];
    double band_sum[DSQ_KLD_BANDS];
    uint64_t hist[DSQ_KLD_HIST_BINS];
    int n_edges;
    uint64_t edges[DSQ_KLD_MAX_BUCKETS - 1];
    dsq_stat bkl[DSQ_KLD_MAX_BUCKETS], bdiff[DSQ_KLD_MAX_BUCKETS];
    uint64_t btop1[DSQ_KLD_MAX_BUCKETS];
};

dsq_status dsq_kld_acc_create(dsq_kld_acc **out, dsq_err *err) {
    *out = dsq_calloc(1, sizeof **out);
    DSQ_RETURN_IF(!*out, err, DSQ_ERR_NOMEM, "KL statistics: out of memory");
    static const uint64_t def[] = DSQ_KLD_DEFAULT_BUCKET_EDGES;
    (*out)->n_edges = (int)(sizeof def / sizeof def[0]);
    memcpy((*out)->edges, def, sizeof def);
    return DSQ_OK;
}

static bool edges_ok(const uint64_t *edges, int n) {
    if (n < 0 || n > DSQ_KLD_MAX_BUCKETS - 1) return false;
    for (int i = 0; i < n; i++)
        if (edges[i] == 0 || edges[i] == UINT64_MAX || (i > 0 && edges[i] <= edges[i - 1])) return false;
    return true;
}

dsq_status dsq_kld_acc_set_buckets(dsq_kld_acc *a, const uint64_t *edges, int n, dsq_err *err) {
    DSQ_RETURN_IF(a->n, err, DSQ_ERR_STATE, "KL statistics: position buckets set after the first position");
    DSQ_RETURN_IF(!edges_ok(edges, n), err, DSQ_ERR_ARG,
                  "KL statistics: position bucket edges must be at most %d ascending positive integers",
                  DSQ_KLD_MAX_BUCKETS - 1);
    a->n_edges = n;
    if (n) memcpy(a->edges, edges, sizeof *edges * (size_t)n);
    return DSQ_OK;
}

bool dsq_kld_parse_buckets(const char *s, uint64_t *edges, int *n) {
    int k = 0;
    const char *p = s;
    for (;;) {
        if (*p < '0' || *p > '9' || k == DSQ_KLD_MAX_BUCKETS - 1) return false;
        uint64_t v = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (v > (UINT64_MAX - 9) / 10) return false;
            v = v * 10 + (uint64_t)(*p - '0');
        }
        edges[k++] = v;
        if (!*p) break;
        if (*p++ != ',') return false;
    }
    if (!edges_ok(edges, k)) return false;
    *n = k;
    return true;
}

const char *dsq_kld_bucket_label(const dsq_kld_stats *s, int b, char *buf, size_t cap) {
    if (s->bucket_hi[b] == UINT64_MAX)
        snprintf(buf, cap, "[%llu, ∞)", (unsigned long long)s->bucket_lo[b]);
    else
        snprintf(buf, cap, "[%llu, %llu)", (unsigned long long)s->bucket_lo[b], (unsigned long long)s->bucket_hi[b]);
    return buf;
}

/* Bucket of a context position: the number of edges ≤ pos. */
static int bucket_of(const dsq_kld_acc *a, uint64_t pos) {
    int b = 0;
    while (b < a->n_edges && pos >= a->edges[b]) b++;
    return b;
}

void dsq_kld_acc_free(dsq_kld_acc *a) {
    if (!a) return;
    dsq_free(a->kl);
    dsq_free(a);
}

dsq_status dsq_kld_acc_add(dsq_kld_acc *a, const dsq_kld_pos *p, dsq_err *err) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 1024;
        uint64_t bytes;
        DSQ_RETURN_IF(!dsq_mul_u64(cap, sizeof *a->kl, &bytes) || bytes > SIZE_MAX, err, DSQ_ERR_OVERFLOW,
                      "KL statistics: too many positions");
        double *k = dsq_realloc(a->kl, (size_t)bytes);
        DSQ_RETURN_IF(!k, err, DSQ_ERR_NOMEM, "KL statistics: out of memory at %zu positions", a->n);
        a->kl = k;
        a->cap = cap;
    }
    a->kl[a->n++] = p->kl;
    dsq_stat_add(&a->kl_stat, p->kl);
    dsq_stat_add(&a->nll_ref, p->nll_ref);
    dsq_stat_add(&a->nll_cand, p->nll_cand);
    dsq_stat_add(&a->nll_diff, p->nll_cand - p->nll_ref);
    dsq_stat_add(&a->dp, p->dp);
    a->dp_sq += p->dp * p->dp;
    a->top1 += p->top1_agree;
    a->same_sample += p->sample_agree;
    int band = (int)(p->ref_top1_p * DSQ_KLD_BANDS);
    if (band < 0) band = 0;
    if (band >= DSQ_KLD_BANDS) band = DSQ_KLD_BANDS - 1;
    a->band_n[band]++;
    a->band_sum[band] += p->kl;
    a->hist[dsq_kld_hist_bin(p->kl)]++;
    int bk = bucket_of(a, p->ctx_pos);
    dsq_stat_add(&a->bkl[bk], p->kl);
    dsq_stat_add(&a->bdiff[bk], p->nll_cand - p->nll_ref);
    a->btop1[bk] += p->top1_agree;
    return DSQ_OK;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static double rate_se(double p, uint64_t n) { return n ? sqrt(p * (1.0 - p) / (double)n) : 0.0; }

dsq_status dsq_kld_acc_stats(const dsq_kld_acc *a, dsq_kld_stats *out, dsq_err *err) {
    DSQ_RETURN_IF(a->n == 0, err, DSQ_ERR_STATE, "KL statistics: no positions");
    double *s = dsq_malloc(a->n * sizeof *s);
    DSQ_RETURN_IF(!s, err, DSQ_ERR_NOMEM, "KL statistics: out of memory sorting %zu values", a->n);
    memcpy(s, a->kl, a->n * sizeof *s);
    qsort(s, a->n, sizeof *s, cmp_double);
    dsq_kld_stats r;
    memset(&r, 0, sizeof r);
    r.n = a->n;
    r.kl_mean = a->kl_stat.mean;
    r.kl_mean_se = dsq_stat_se(&a->kl_stat);
    r.kl_median = dsq_metrics_quantile(s, a->n, 0.5, &r.kl_median_se);
    r.kl_p99 = dsq_metrics_quantile(s, a->n, 0.99, &r.kl_p99_se);
    r.kl_max = s[a->n - 1];
    dsq_free(s);
    r.top1 = (double)a->top1 / (double)a->n;
    r.top1_se = rate_se(r.top1, a->n);
    r.same_sample = (double)a->same_sample / (double)a->n;
    r.same_sample_se = rate_se(r.same_sample, a->n);
    r.ppl_ref = dsq_ppl_from_stat(&a->nll_ref);
    r.ppl_cand = dsq_ppl_from_stat(&a->nll_cand);
    r.ppl_ratio = exp(a->nll_diff.mean);
    r.ppl_ratio_se = r.ppl_ratio * dsq_stat_se(&a->nll_diff);
    r.dp_mean = a->dp.mean;
    r.dp_mean_se = dsq_stat_se(&a->dp);
    r.dp_rms = sqrt(a->dp_sq / (double)a->n);
    for (int b = 0; b < DSQ_KLD_BANDS; b++) {
        r.band_n[b] = a->band_n[b];
        r.band_kl_mean[b] = a->band_n[b] ? a->band_sum[b] / (double)a->band_n[b] : NAN;
    }
    memcpy(r.hist, a->hist, sizeof r.hist);
    for (int b = 0; b <= a->n_edges; b++) {
        uint64_t nb = a->bkl[b].n;
        if (!nb) continue; /* empty buckets are left out */
        int k = r.n_buckets++;
        r.bucket_lo[k] = b ? a->edges[b - 1] : 0;
        r.bucket_hi[k] = b < a->n_edges ? a->edges[b] : UINT64_MAX;
        r.bucket_n[k] = nb;
        r.bucket_kl_mean[k] = a->bkl[b].mean;
        r.bucket_kl_mean_se[k] = dsq_stat_se(&a->bkl[b]);
        r.bucket_top1[k] = (double)a->btop1[b] / (double)nb;
        r.bucket_top1_se[k] = rate_se(r.bucket_top1[k], nb);
        r.bucket_ppl_ratio[k] = exp(a->bdiff[b].mean);
        r.bucket_ppl_ratio_se[k] = r.bucket_ppl_ratio[k] * dsq_stat_se(&a->bdiff[b]);
    }
    *out = r;
    return DSQ_OK;
}
