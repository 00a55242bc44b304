/* Row math (log-softmax, NLL, argmax, Gumbel-max), running statistics, the perplexity chunk plan
 * and hidden-state diff statistics. */
#include <math.h>
#include <string.h>

#include "dsq_metrics.h"

/* ---- one logits row ---------------------------------------------------------------------------- */

static dsq_status row_max(const float *row, size_t vocab, double *max, dsq_err *err) {
    DSQ_RETURN_IF(vocab == 0, err, DSQ_ERR_ARG, "logits row: empty row");
    double m = -INFINITY;
    for (size_t i = 0; i < vocab; i++) {
        float x = row[i];
        if (isnan(x) || x == INFINITY)
            return dsq_err_set(err, DSQ_ERR_NONFINITE, "logits row: value %g at id %zu is not allowed", (double)x, i);
        if (x > m) m = x;
    }
    DSQ_RETURN_IF(m == -INFINITY, err, DSQ_ERR_NONFINITE, "logits row: every value is -inf");
    *max = m;
    return DSQ_OK;
}

dsq_status dsq_metrics_logsumexp(const float *row, size_t vocab, double *lse, dsq_err *err) {
    double m = 0;
    DSQ_TRY(row_max(row, vocab, &m, err));
    double s = 0;
    for (size_t i = 0; i < vocab; i++) s += exp((double)row[i] - m);
    *lse = m + log(s);
    return DSQ_OK;
}

dsq_status dsq_metrics_log_softmax(const float *row, size_t vocab, double *out, dsq_err *err) {
    double lse;
    DSQ_TRY(dsq_metrics_logsumexp(row, vocab, &lse, err));
    for (size_t i = 0; i < vocab; i++) out[i] = (double)row[i] - lse;
    return DSQ_OK;
}

dsq_status dsq_metrics_nll(const float *row, size_t vocab, int32_t target, double *nll, dsq_err *err) {
    DSQ_RETURN_IF(target < 0 || (uint64_t)target >= vocab, err, DSQ_ERR_TOKEN,
                  "target token %d outside the vocabulary [0, %zu)", (int)target, vocab);
    double lse;
    DSQ_TRY(dsq_metrics_logsumexp(row, vocab, &lse, err));
    *nll = lse - (double)row[target];
    return DSQ_OK;
}

size_t dsq_metrics_argmax(const float *row, size_t vocab) {
    size_t best = 0;
    for (size_t i = 1; i < vocab; i++)
        if (row[i] > row[best]) best = i;
    return best;
}

static inline uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

size_t dsq_metrics_gumbel_sample(const float *row, size_t vocab, double temperature, uint64_t seed, uint64_t position) {
    uint64_t key = splitmix64(seed ^ splitmix64(position));
    double inv_t = 1.0 / temperature;
    size_t best = 0;
    double best_score = -INFINITY;
    for (size_t i = 0; i < vocab; i++) {
        if (row[i] == -INFINITY) continue;
        double u = ((double)(splitmix64(key + i) >> 11) + 0.5) * 0x1p-53; /* (0, 1) */
        double score = (double)row[i] * inv_t - log(-log(u));
        if (score > best_score) {
            best_score = score;
            best = i;
        }
    }
    return best;
}

/* ---- running statistics ------------------------------------------------------------------------ */

void dsq_stat_add(dsq_stat *s, double x) {
    s->n++;
    double d = x - s->mean;
    s->mean += d / (double)s->n;
    s->m2 += d * (x - s->mean);
}

double dsq_stat_sd(const dsq_stat *s) { return s->n < 2 ? 0.0 : sqrt(s->m2 / (double)(s->n - 1)); }

double dsq_stat_se(const dsq_stat *s) { return s->n < 2 ? 0.0 : dsq_stat_sd(s) / sqrt((double)s->n); }

static double at_rank(const double *sorted, size_t n, double h) {
    if (h <= 0) return sorted[0];
    if (h >= (double)(n - 1)) return sorted[n - 1];
    size_t i = (size_t)h;
    double f = h - (double)i;
    return sorted[i] + f * (sorted[i + 1] - sorted[i]);
}

double dsq_metrics_quantile(const double *sorted, size_t n, double q, double *se) {
    double v = at_rank(sorted, n, q * (double)(n - 1));
    if (se) {
        double spread = sqrt((double)n * q * (1.0 - q));
        double lo = at_rank(sorted, n, q * (double)(n - 1) - spread);
        double hi = at_rank(sorted, n, q * (double)(n - 1) + spread);
        *se = 0.5 * (hi - lo);
    }
    return v;
}

/* ---- perplexity -------------------------------------------------------------------------------- */

dsq_status dsq_ppl_plan_make(uint64_t n_text, uint32_t n_ctx, uint32_t max_chunks, int32_t bos, dsq_ppl_plan *out,
                             dsq_err *err) {
    DSQ_RETURN_IF(n_ctx < 3, err, DSQ_ERR_ARG, "context of %u tokens is too short (at least 3)", n_ctx);
    dsq_ppl_plan p = {.n_ctx = n_ctx, .score_from = n_ctx / 2, .bos = bos < 0 ? -1 : bos};
    p.stride = p.bos >= 0 ? n_ctx - 1 : n_ctx;
    uint64_t fit = n_text / p.stride;
    if (max_chunks && fit > max_chunks) fit = max_chunks;
    DSQ_RETURN_IF(fit == 0, err, DSQ_ERR_ARG, "%llu tokens do not fill one chunk of %u (%u text tokens per chunk)",
                  (unsigned long long)n_text, n_ctx, p.stride);
    DSQ_RETURN_IF(fit > UINT32_MAX, err, DSQ_ERR_RANGE, "too many chunks (%llu)", (unsigned long long)fit);
    p.n_chunks = (uint32_t)fit;
    *out = p;
    return DSQ_OK;
}

uint32_t dsq_ppl_plan_scored_per_chunk(const dsq_ppl_plan *p) { return p->n_ctx - 1 - p->score_from; }

uint64_t dsq_ppl_plan_positions(const dsq_ppl_plan *p) {
    return (uint64_t)p->n_chunks * dsq_ppl_plan_scored_per_chunk(p);
}

uint64_t dsq_ppl_plan_text_tokens(const dsq_ppl_plan *p) { return (uint64_t)p->n_chunks * p->stride; }

void dsq_ppl_plan_chunk(const dsq_ppl_plan *p, const int32_t *text, uint32_t c, int32_t *chunk) {
    const int32_t *src = text + (uint64_t)c * p->stride;
    if (p->bos >= 0) {
        chunk[0] = p->bos;
        memcpy(chunk + 1, src, (size_t)(p->n_ctx - 1) * sizeof *chunk);
    } else {
        memcpy(chunk, src, (size_t)p->n_ctx * sizeof *chunk);
    }
}

dsq_ppl_result dsq_ppl_from_stat(const dsq_stat *nll) {
    dsq_ppl_result r = {.n = nll->n, .mean_nll = nll->mean, .mean_nll_se = dsq_stat_se(nll)};
    r.ppl = exp(r.mean_nll);
    r.ppl_se = r.ppl * r.mean_nll_se;
    return r;
}

/* ---- hidden-state diff ------------------------------------------------------------------------- */

void dsq_diff_add(dsq_diff_acc *a, const float *ref, const float *cand, size_t n) {
    double rr = 0, cc = 0, rc = 0, ee = 0, mx = a->max_abs;
    uint64_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double r = ref[i], c = cand[i];
        if (!isfinite(r) || !isfinite(c)) {
            bad++;
            continue;
        }
        double e = r - c;
        rr += r * r;
        cc += c * c;
        rc += r * c;
        ee += e * e;
        if (fabs(e) > mx) mx = fabs(e);
    }
    a->n += n - bad;
    a->nonfinite += bad;
    a->rr += rr;
    a->cc += cc;
    a->rc += rc;
    a->ee += ee;
    a->max_abs = mx;
}

double dsq_diff_cosine(const dsq_diff_acc *a) {
    if (a->rr == 0 && a->cc == 0) return 1.0;
    if (a->rr == 0 || a->cc == 0) return 0.0;
    return a->rc / sqrt(a->rr * a->cc);
}

double dsq_diff_sqnr_db(const dsq_diff_acc *a) {
    if (a->ee == 0) return INFINITY;
    if (a->rr == 0) return -INFINITY;
    return 10.0 * log10(a->rr / a->ee);
}

double dsq_diff_rel_rms(const dsq_diff_acc *a) {
    if (a->ee == 0) return 0.0;
    if (a->rr == 0) return INFINITY;
    return sqrt(a->ee / a->rr);
}
