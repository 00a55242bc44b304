/* REPORT.md and REPORT.html: tables of per-build results and inline SVG charts (size vs mean KL,
 * per-family quantization error, KL histogram).  No scripts and no external resources: the HTML
 * renders the same offline, in a mail attachment or a CI artifact viewer. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dsq_report.h"

/* ---- a growable string ------------------------------------------------------------------------- */
typedef struct sb {
    char *p;
    size_t n, cap;
    bool oom;
} sb;

static void sb_reserve(sb *s, size_t extra) {
    if (s->oom || s->n + extra + 1 <= s->cap) return;
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->n + extra + 1) cap *= 2;
    char *p = dsq_realloc(s->p, cap);
    if (!p) {
        s->oom = true;
        return;
    }
    s->p = p;
    s->cap = cap;
}

static void sb_put(sb *s, const char *t, size_t n) {
    sb_reserve(s, n);
    if (s->oom) return;
    memcpy(s->p + s->n, t, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void sb_puts(sb *s, const char *t) { sb_put(s, t, strlen(t)); }

__attribute__((format(printf, 2, 3))) static void sb_printf(sb *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_reserve(s, (size_t)n);
    if (s->oom) return;
    va_start(ap, fmt);
    vsnprintf(s->p + s->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->n += (size_t)n;
}

static void sb_html(sb *s, const char *t) {
    for (; t && *t; t++) {
        switch (*t) {
        case '&':
            sb_puts(s, "&amp;");
            break;
        case '<':
            sb_puts(s, "&lt;");
            break;
        case '>':
            sb_puts(s, "&gt;");
            break;
        case '"':
            sb_puts(s, "&quot;");
            break;
        case '\'':
            sb_puts(s, "&#39;");
            break;
        default:
            if ((unsigned char)*t < 0x20)
                sb_put(s, " ", 1);
            else
                sb_put(s, t, 1);
        }
    }
}

/* Markdown table cell: escape the characters that would end the cell or start markup. */
static void sb_md(sb *s, const char *t) {
    for (; t && *t; t++) {
        if (strchr("|\\`*_[]<>", *t)) {
            char e[3] = {'\\', *t, 0};
            sb_puts(s, e);
        } else if ((unsigned char)*t < 0x20) {
            sb_put(s, " ", 1);
        } else {
            sb_put(s, t, 1);
        }
    }
}

/* ---- number formatting --------------------------------------------------------------------------- */
typedef struct num {
    char s[48];
} num;

static num fmt_g(double v, int sig) {
    num r;
    if (isnan(v))
        snprintf(r.s, sizeof r.s, "—");
    else if (isinf(v))
        snprintf(r.s, sizeof r.s, v > 0 ? "∞" : "−∞");
    else if (v == 0)
        snprintf(r.s, sizeof r.s, "0");
    else if (fabs(v) >= 1e-3 && fabs(v) < 1e5)
        snprintf(r.s, sizeof r.s, "%.*g", sig, v);
    else
        snprintf(r.s, sizeof r.s, "%.*e", sig - 1, v);
    return r;
}

static num fmt_pct(double v) {
    num r;
    if (isnan(v))
        snprintf(r.s, sizeof r.s, "—");
    else
        snprintf(r.s, sizeof r.s, "%.2f%%", 100 * v);
    return r;
}

static num fmt_bytes(uint64_t b) {
    num r;
    double v = (double)b;
    if (v >= 1024.0 * 1024 * 1024)
        snprintf(r.s, sizeof r.s, "%.2f GiB", v / (1024.0 * 1024 * 1024));
    else if (v >= 1024.0 * 1024)
        snprintf(r.s, sizeof r.s, "%.2f MiB", v / (1024.0 * 1024));
    else if (v >= 1024.0)
        snprintf(r.s, sizeof r.s, "%.1f KiB", v / 1024.0);
    else
        snprintf(r.s, sizeof r.s, "%llu B", (unsigned long long)b);
    return r;
}

static const char *band_label[DSQ_KLD_BANDS] = {"[0, 0.2)", "[0.2, 0.4)", "[0.4, 0.6)", "[0.6, 0.8)", "[0.8, 1]"};

static num hist_label(int b) {
    num r;
    if (b == 0)
        snprintf(r.s, sizeof r.s, "< 1e-6");
    else if (b == DSQ_KLD_HIST_BINS - 1)
        snprintf(r.s, sizeof r.s, "≥ 10");
    else
        snprintf(r.s, sizeof r.s, "[%.3g, %.3g)", dsq_kld_hist_edge(b), dsq_kld_hist_edge(b + 1));
    return r;
}

/* Families in order of first appearance over all builds; returns the count (≤ cap). */
static size_t family_union(const dsq_report *r, const char **names, size_t cap) {
    size_t n = 0;
    for (size_t b = 0; b < r->n_builds; b++)
        for (size_t f = 0; f < r->builds[b].n_families; f++) {
            const char *name = r->builds[b].families[f].family;
            size_t i = 0;
            while (i < n && strcmp(names[i], name)) i++;
            if (i == n && n < cap) names[n++] = name;
        }
    return n;
}

static const dsq_report_family *find_family(const dsq_report_build *b, const char *name) {
    for (size_t f = 0; f < b->n_families; f++)
        if (!strcmp(b->families[f].family, name)) return &b->families[f];
    return NULL;
}

static bool any_kld(const dsq_report *r) {
    for (size_t b = 0; b < r->n_builds; b++)
        if (r->builds[b].has_kld) return true;
    return false;
}
static bool any_mc(const dsq_report *r) {
    for (size_t b = 0; b < r->n_builds; b++)
        if (r->builds[b].has_mc) return true;
    return false;
}

#define MAX_FAMILIES 256

static num size_cell(const dsq_report *r, const dsq_report_build *b) {
    num x = fmt_bytes(b->file_bytes);
    if (r->reference_bytes) {
        size_t l = strlen(x.s);
        snprintf(x.s + l, sizeof x.s - l, " (%.1f%%)", 100.0 * (double)b->file_bytes / (double)r->reference_bytes);
    }
    return x;
}

/* ---- Markdown ------------------------------------------------------------------------------------ */

static void md_intro(sb *s, const dsq_report *r) {
    sb_puts(s, "# ");
    sb_md(s, r->title ? r->title : "dsq comparison report");
    sb_puts(s, "\n\nReference: **");
    sb_md(s, r->reference ? r->reference : "reference");
    sb_puts(s, "**");
    if (r->reference_bytes) sb_printf(s, " (%s)", fmt_bytes(r->reference_bytes).s);
    if (r->ref_ppl > 0) sb_printf(s, ", perplexity %s ± %s", fmt_g(r->ref_ppl, 5).s, fmt_g(r->ref_ppl_se, 2).s);
    if (r->ref_mc_acc >= 0 && any_mc(r))
        sb_printf(s, ", MC accuracy %s ± %s", fmt_pct(r->ref_mc_acc).s, fmt_pct(r->ref_mc_acc_se).s);
    sb_puts(s, ".\n");
    if (r->text_desc) {
        sb_puts(s, "Text: ");
        sb_md(s, r->text_desc);
        sb_puts(s, ".\n");
    }
    if (r->task_desc) {
        sb_puts(s, "Task: ");
        sb_md(s, r->task_desc);
        sb_puts(s, ".\n");
    }
    sb_puts(s, "\nKL is KL(reference ‖ build) in nats per token over the reference's top-k ids plus the rest "
               "(a lower bound, exact when k = vocab); ± are standard errors.\n");
}

static void md_summary(sb *s, const dsq_report *r) {
    sb_puts(s, "\n## Summary\n\n| build | size | mean KL | median KL | p99 KL | max KL | top-1 agree | same sample | "
               "PPL ratio | Δp mean | Δp RMS | MC acc | MC flips |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        const dsq_kld_stats *k = &b->kld;
        sb_puts(s, "| ");
        sb_md(s, b->name);
        sb_printf(s, " | %s", size_cell(r, b).s);
        if (b->has_kld) {
            sb_printf(s, " | %s ± %s", fmt_g(k->kl_mean, 3).s, fmt_g(k->kl_mean_se, 2).s);
            sb_printf(s, " | %s ± %s", fmt_g(k->kl_median, 3).s, fmt_g(k->kl_median_se, 2).s);
            sb_printf(s, " | %s ± %s", fmt_g(k->kl_p99, 3).s, fmt_g(k->kl_p99_se, 2).s);
            sb_printf(s, " | %s", fmt_g(k->kl_max, 3).s);
            sb_printf(s, " | %s ± %s", fmt_pct(k->top1).s, fmt_pct(k->top1_se).s);
            sb_printf(s, " | %s ± %s", fmt_pct(k->same_sample).s, fmt_pct(k->same_sample_se).s);
            sb_printf(s, " | %s ± %s", fmt_g(k->ppl_ratio, 5).s, fmt_g(k->ppl_ratio_se, 2).s);
            sb_printf(s, " | %s | %s", fmt_g(k->dp_mean, 3).s, fmt_g(k->dp_rms, 3).s);
        } else {
            sb_puts(s, " | — | — | — | — | — | — | — | — | —");
        }
        if (b->has_mc)
            sb_printf(s, " | %s ± %s", fmt_pct(b->mc_acc).s, fmt_pct(b->mc_acc_se).s);
        else
            sb_puts(s, " | —");
        sb_printf(s, " | %s |\n", b->has_flips ? fmt_pct(b->mc_flip_rate).s : "—");
    }
}

static void md_bands_hist(sb *s, const dsq_report *r) {
    if (!any_kld(r)) return;
    sb_puts(s, "\n## Mean KL by the reference's top-1 probability\n\n| build |");
    for (int i = 0; i < DSQ_KLD_BANDS; i++) sb_printf(s, " %s |", band_label[i]);
    sb_puts(s, "\n|---|");
    for (int i = 0; i < DSQ_KLD_BANDS; i++) sb_puts(s, "---:|");
    sb_puts(s, "\n");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld) continue;
        sb_puts(s, "| ");
        sb_md(s, b->name);
        sb_puts(s, " |");
        for (int j = 0; j < DSQ_KLD_BANDS; j++)
            sb_printf(s, " %s (n=%llu) |", fmt_g(b->kld.band_kl_mean[j], 3).s, (unsigned long long)b->kld.band_n[j]);
        sb_puts(s, "\n");
    }
    sb_puts(s, "\n## KL histogram (share of positions)\n\n| KL (nats) |");
    for (size_t i = 0; i < r->n_builds; i++)
        if (r->builds[i].has_kld) {
            sb_puts(s, " ");
            sb_md(s, r->builds[i].name);
            sb_puts(s, " |");
        }
    sb_puts(s, "\n|---|");
    for (size_t i = 0; i < r->n_builds; i++)
        if (r->builds[i].has_kld) sb_puts(s, "---:|");
    sb_puts(s, "\n");
    for (int h = 0; h < DSQ_KLD_HIST_BINS; h++) {
        bool any = false;
        for (size_t i = 0; i < r->n_builds; i++) any |= r->builds[i].has_kld && r->builds[i].kld.hist[h] > 0;
        if (!any) continue;
        sb_printf(s, "| %s |", hist_label(h).s);
        for (size_t i = 0; i < r->n_builds; i++) {
            const dsq_report_build *b = &r->builds[i];
            if (b->has_kld)
                sb_printf(s, " %s |", fmt_pct((double)b->kld.hist[h] / (double)(b->kld.n ? b->kld.n : 1)).s);
        }
        sb_puts(s, "\n");
    }
}

/* Drift by context position: one row per build and non-empty position bucket. */
static bool any_buckets(const dsq_report *r) {
    for (size_t i = 0; i < r->n_builds; i++)
        if (r->builds[i].has_kld && r->builds[i].kld.n_buckets > 0) return true;
    return false;
}

static void md_buckets(sb *s, const dsq_report *r) {
    if (!any_buckets(r)) return;
    sb_puts(s, "\n## Drift by context position\n\n| build | positions | scored | mean KL | top-1 agree | PPL ratio |\n"
               "|---|---|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld) continue;
        for (int k = 0; k < b->kld.n_buckets; k++) {
            char lab[64];
            sb_puts(s, "| ");
            sb_md(s, b->name);
            sb_printf(s, " | %s | %llu | %s ± %s | %s | %s ± %s |\n", dsq_kld_bucket_label(&b->kld, k, lab, sizeof lab),
                      (unsigned long long)b->kld.bucket_n[k], fmt_g(b->kld.bucket_kl_mean[k], 4).s,
                      fmt_g(b->kld.bucket_kl_mean_se[k], 2).s, fmt_pct(b->kld.bucket_top1[k]).s,
                      fmt_g(b->kld.bucket_ppl_ratio[k], 6).s, fmt_g(b->kld.bucket_ppl_ratio_se[k], 2).s);
        }
    }
}

static void md_families(sb *s, const dsq_report *r) {
    const char *names[MAX_FAMILIES];
    size_t nf = family_union(r, names, MAX_FAMILIES);
    if (!nf) return;
    sb_puts(s, "\n## Quantization error by tensor family (`dsq verify`)\n\nrel RMS = ‖w − ŵ‖ / ‖w‖; "
               "max abs = max |w − ŵ|; cosine of w and ŵ (from `dsq compare`: the family's worst tensor).\n");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->n_families) continue;
        sb_puts(s, "\n### ");
        sb_md(s, b->name);
        sb_puts(s, "\n\n| family | rel RMS | max abs | cosine |\n|---|---:|---:|---:|\n");
        for (size_t f = 0; f < b->n_families; f++) {
            const dsq_report_family *x = &b->families[f];
            sb_puts(s, "| ");
            sb_md(s, x->family);
            sb_printf(s, " | %s | %s | %s |\n", fmt_g(x->rel_rms, 3).s, fmt_g(x->max_abs, 3).s,
                      x->cosine > 0.9999 && x->cosine < 1 ? fmt_g(x->cosine, 8).s : fmt_g(x->cosine, 5).s);
        }
    }
}

dsq_status dsq_report_render_md(const dsq_report *r, char **out, size_t *len, dsq_err *err) {
    *out = NULL;
    sb s = {0};
    md_intro(&s, r);
    md_summary(&s, r);
    md_bands_hist(&s, r);
    md_buckets(&s, r);
    md_families(&s, r);
    if (r->generated_by) {
        sb_puts(&s, "\n---\nGenerated by `");
        for (const char *c = r->generated_by; *c; c++) /* inside a code span only backticks matter */
            sb_put(&s, *c == '`' || (unsigned char)*c < 0x20 ? "'" : c, 1);
        sb_puts(&s, "`.\n");
    }
    if (s.oom) {
        dsq_free(s.p);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "report: out of memory");
    }
    *out = s.p;
    if (len) *len = s.n;
    return DSQ_OK;
}

/* ---- SVG charts --------------------------------------------------------------------------------- */

static const char *palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
#define PALETTE_N (sizeof palette / sizeof palette[0])

enum { W = 720, H = 380, ML = 78, MR = 24, MT = 24, MB = 56 };

typedef struct axis {
    double lo, hi;
    bool log;
    double p0, p1; /* pixel positions of lo and hi */
} axis;

static double ax_map(const axis *a, double v) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->p0 + t * (a->p1 - a->p0);
}

/* A 1-2-5 step giving about `want` intervals over [lo, hi]. */
static double nice_step(double lo, double hi, int want) {
    double raw = (hi - lo) / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void svg_open(sb *s, int w, int h, const char *label) {
    sb_printf(s, "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"", w, h, w, h);
    sb_html(s, label);
    sb_puts(s, "\" font-family=\"system-ui, sans-serif\" font-size=\"12\">\n");
    sb_printf(s, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", w, h);
}

static void svg_text(sb *s, double x, double y, const char *anchor, const char *extra, const char *text) {
    sb_printf(s, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra ? extra : "");
    sb_html(s, text);
    sb_puts(s, "</text>\n");
}

/* Axis lines, ticks, grid and labels for a vertical axis `ya` and horizontal axis `xa`. */
static void svg_axes(sb *s, const axis *xa, const axis *ya, int w, int h, const char *xlabel, const char *ylabel) {
    int x0 = ML, x1 = w - MR, y0 = h - MB, y1 = MT;
    /* y ticks */
    if (ya->log) {
        for (double e = ceil(log10(ya->lo) - 1e-9); e <= floor(log10(ya->hi) + 1e-9); e++) {
            double v = pow(10, e), y = ax_map(ya, v);
            sb_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", x0, y, x1, y);
            char t[32];
            snprintf(t, sizeof t, "1e%d", (int)e);
            svg_text(s, x0 - 6, y + 4, "end", NULL, t);
        }
    } else {
        double st = nice_step(ya->lo, ya->hi, 5);
        for (double v = ceil(ya->lo / st) * st; v <= ya->hi + st * 1e-9; v += st) {
            double y = ax_map(ya, v);
            sb_printf(s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e3e3e3\"/>\n", x0, y, x1, y);
            svg_text(s, x0 - 6, y + 4, "end", NULL, fmt_g(fabs(v) < st * 1e-9 ? 0 : v, 3).s);
        }
    }
    /* x ticks (linear axes only; categorical charts draw their own) */
    if (xa) {
        double st = nice_step(xa->lo, xa->hi, 6);
        for (double v = ceil(xa->lo / st) * st; v <= xa->hi + st * 1e-9; v += st) {
            double x = ax_map(xa, v);
            sb_printf(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e3e3\"/>\n", x, y1, x, y0);
            svg_text(s, x, y0 + 16, "middle", NULL, fmt_g(fabs(v) < st * 1e-9 ? 0 : v, 3).s);
        }
    }
    sb_printf(s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>\n", x0, y0, x1, y0);
    sb_printf(s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>\n", x0, y0, x0, y1);
    svg_text(s, (x0 + x1) / 2.0, h - 14, "middle", NULL, xlabel);
    char rot[96];
    snprintf(rot, sizeof rot, " transform=\"rotate(-90 %d %d)\"", 16, (y0 + y1) / 2);
    svg_text(s, 16, (y0 + y1) / 2.0, "middle", rot, ylabel);
}

/* Size (GiB) vs mean KL (log), with ±1 standard error bars. */
static void chart_size_kl(sb *s, const dsq_report *r) {
    const double gib = 1024.0 * 1024 * 1024;
    double kmin = INFINITY, kmax = 0, smax = (double)r->reference_bytes / gib;
    size_t shown = 0;
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld || !(b->kld.kl_mean > 0) || !isfinite(b->kld.kl_mean)) continue;
        double lo = b->kld.kl_mean - b->kld.kl_mean_se, hi = b->kld.kl_mean + b->kld.kl_mean_se;
        kmin = fmin(kmin, lo > 0 ? lo : b->kld.kl_mean);
        kmax = fmax(kmax, hi);
        smax = fmax(smax, (double)b->file_bytes / gib);
        shown++;
    }
    sb_puts(s, "<figure>\n");
    if (!shown) {
        sb_puts(s, "<p class=\"note\">No build has a positive, finite mean KL to plot.</p>\n</figure>\n");
        return;
    }
    axis xa = {0, smax > 0 ? smax * 1.12 : 1, false, ML, W - MR};
    axis ya = {pow(10, floor(log10(kmin))), pow(10, ceil(log10(kmax))), true, H - MB, MT};
    if (ya.hi <= ya.lo * 1.0001) ya.hi = ya.lo * 10;
    svg_open(s, W, H, "File size against mean KL divergence");
    svg_axes(s, &xa, &ya, W, H, "file size (GiB)", "mean KL (nats/token, log scale)");
    if (r->reference_bytes) {
        double x = ax_map(&xa, (double)r->reference_bytes / gib);
        sb_printf(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n",
                  x, MT, x, H - MB);
        svg_text(s, x - 4, MT + 12, "end", " fill=\"#666\"", "reference size");
    }
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld || !(b->kld.kl_mean > 0) || !isfinite(b->kld.kl_mean)) continue;
        const char *c = palette[i % PALETTE_N];
        double x = ax_map(&xa, (double)b->file_bytes / gib), y = ax_map(&ya, b->kld.kl_mean);
        double lo = b->kld.kl_mean - b->kld.kl_mean_se, hi = b->kld.kl_mean + b->kld.kl_mean_se;
        double ylo = ax_map(&ya, lo > ya.lo ? lo : ya.lo), yhi = ax_map(&ya, hi);
        sb_printf(s, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.5\"/>\n", x,
                  ylo, x, yhi, c);
        sb_printf(s, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"><title>", x, y, c);
        sb_html(s, b->name);
        sb_printf(s, ": %s, mean KL %s</title></circle>\n", fmt_bytes(b->file_bytes).s, fmt_g(b->kld.kl_mean, 3).s);
        svg_text(s, x + 8, y - 6, "start", NULL, b->name);
    }
    sb_puts(s, "</svg>\n<figcaption>File size against mean KL(reference ‖ build); bars are ±1 standard error. "
               "Down and to the left is better.</figcaption>\n</figure>\n");
}

/* Grouped horizontal bars: rel RMS per family, one bar per build. */
static void chart_families(sb *s, const dsq_report *r) {
    const char *names[MAX_FAMILIES];
    size_t nf = family_union(r, names, MAX_FAMILIES);
    if (!nf) return;
    size_t nb = 0;
    double vmax = 0;
    for (size_t i = 0; i < r->n_builds; i++) {
        if (!r->builds[i].n_families) continue;
        nb++;
        for (size_t f = 0; f < r->builds[i].n_families; f++) {
            double v = r->builds[i].families[f].rel_rms;
            if (isfinite(v)) vmax = fmax(vmax, v);
        }
    }
    const int bar = 11, gap = 10, left = 190;
    int group = (int)nb * bar + gap, h = MT + (int)nf * group + MB, w = W;
    axis xa = {0, vmax > 0 ? vmax * 1.1 : 1, false, left, w - MR};
    sb_puts(s, "<figure>\n");
    svg_open(s, w, h, "Relative RMS quantization error per tensor family");
    double st = nice_step(xa.lo, xa.hi, 6);
    for (double v = 0; v <= xa.hi + st * 1e-9; v += st) {
        double x = ax_map(&xa, v);
        sb_printf(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e3e3\"/>\n", x, MT, x, h - MB);
        svg_text(s, x, h - MB + 16, "middle", NULL, fmt_g(v, 3).s);
    }
    for (size_t f = 0; f < nf; f++) {
        double gy = MT + (double)f * group;
        svg_text(s, left - 8, gy + nb * bar / 2.0 + 4, "end", NULL, names[f]);
        size_t k = 0;
        for (size_t i = 0; i < r->n_builds; i++) {
            const dsq_report_build *b = &r->builds[i];
            if (!b->n_families) continue;
            const dsq_report_family *x = find_family(b, names[f]);
            double y = gy + (double)k++ * bar;
            if (!x || !isfinite(x->rel_rms)) continue;
            double len = ax_map(&xa, x->rel_rms) - left;
            sb_printf(s, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>", left, y,
                      len > 0.5 ? len : 0.5, bar - 2, palette[i % PALETTE_N]);
            sb_html(s, b->name);
            sb_puts(s, " · ");
            sb_html(s, names[f]);
            sb_printf(s, ": rel RMS %s</title></rect>\n", fmt_g(x->rel_rms, 3).s);
        }
    }
    sb_printf(s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#444\"/>\n", left, MT - 4, left, h - MB);
    svg_text(s, (left + w - MR) / 2.0, h - 14, "middle", NULL, "relative RMS error ‖w − ŵ‖ / ‖w‖");
    sb_puts(s, "</svg>\n<figcaption>Weight quantization error per tensor family (from <code>dsq verify</code>); "
               "one bar per build, colours as in the legend.</figcaption>\n</figure>\n");
}

/* Step lines of the KL histogram (share of positions per log-spaced bin). */
static void chart_hist(sb *s, const dsq_report *r) {
    if (!any_kld(r)) return;
    double ymax = 0;
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld || !b->kld.n) continue;
        for (int h = 0; h < DSQ_KLD_HIST_BINS; h++) ymax = fmax(ymax, (double)b->kld.hist[h] / (double)b->kld.n);
    }
    axis ya = {0, ymax > 0 ? fmin(1.0, ymax * 1.1) : 1, false, H - MB, MT};
    double x0 = ML, x1 = W - MR, bw = (x1 - x0) / DSQ_KLD_HIST_BINS;
    sb_puts(s, "<figure>\n");
    svg_open(s, W, H, "Histogram of per-position KL divergence");
    svg_axes(s, NULL, &ya, W, H, "KL per position (nats, log-spaced bins)", "share of positions");
    /* decade labels at bin edges */
    for (int b = 1; b < DSQ_KLD_HIST_BINS; b += DSQ_KLD_HIST_PER_DECADE) {
        double x = x0 + b * bw;
        char t[16];
        snprintf(t, sizeof t, "1e%d", DSQ_KLD_HIST_LO_EXP + (b - 1) / DSQ_KLD_HIST_PER_DECADE);
        sb_printf(s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e3e3e3\"/>\n", x, MT, x, H - MB);
        svg_text(s, x, H - MB + 16, "middle", NULL, t);
    }
    svg_text(s, x0 + bw / 2, H - MB + 30, "middle", " fill=\"#666\"", "<1e-6");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld || !b->kld.n) continue;
        sb_printf(s, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", palette[i % PALETTE_N]);
        for (int h = 0; h < DSQ_KLD_HIST_BINS; h++) {
            double y = ax_map(&ya, (double)b->kld.hist[h] / (double)b->kld.n);
            sb_printf(s, "%.1f,%.1f %.1f,%.1f ", x0 + h * bw, y, x0 + (h + 1) * bw, y);
        }
        sb_puts(s, "\"><title>");
        sb_html(s, b->name);
        sb_puts(s, "</title></polyline>\n");
    }
    sb_puts(s, "</svg>\n<figcaption>Distribution of KL(reference ‖ build) over scored positions; the first bin "
               "holds KL below 1e-6 (including exact agreement).</figcaption>\n</figure>\n");
}

static void html_legend(sb *s, const dsq_report *r) {
    sb_puts(s, "<p class=\"legend\">");
    for (size_t i = 0; i < r->n_builds; i++) {
        sb_printf(s, "<span><i style=\"background:%s\"></i>", palette[i % PALETTE_N]);
        sb_html(s, r->builds[i].name);
        sb_puts(s, "</span> ");
    }
    sb_puts(s, "</p>\n");
}

/* ---- HTML ---------------------------------------------------------------------------------------- */

static const char *css =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;background:#fafafa;margin:0;"
    "padding:24px 32px;line-height:1.45}\n"
    "main{max-width:1180px;margin:0 auto}\n"
    "h1{font-size:1.6em;margin:0 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd;"
    "padding-bottom:.2em}h3{font-size:1em;margin:1.2em 0 .4em}\n"
    "p.meta{color:#555;margin:.2em 0}p.note{color:#666;font-style:italic}\n"
    "table{border-collapse:collapse;margin:.5em 0 1em;background:#fff;font-size:.9em}\n"
    "th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap;vertical-align:top}\n"
    "td small{color:#666}\n"
    "th{background:#f0f2f5;font-weight:600}td:first-child,th:first-child{text-align:left;white-space:normal;"
    "min-width:9em;max-width:16em}\n"
    "tr:nth-child(even) td{background:#fbfbfc}\n"
    ".scroll{overflow-x:auto}table.summary{font-size:.84em}\n"
    "figure{margin:1em 0 1.5em;background:#fff;border:1px solid #e3e3e3;padding:8px;display:inline-block}\n"
    "figcaption{color:#555;font-size:.85em;max-width:720px;margin-top:4px}\n"
    "svg{display:block;max-width:100%;height:auto}\n"
    ".legend span{margin-right:14px;white-space:nowrap}.legend i{display:inline-block;width:11px;height:11px;"
    "margin-right:5px;vertical-align:-1px}\n"
    "footer{color:#777;font-size:.8em;margin-top:2em}code{font-size:.95em}\n";

static void html_summary(sb *s, const dsq_report *r) {
    sb_puts(s, "<h2>Summary</h2>\n<div class=\"scroll\"><table "
               "class=\"summary\">\n<tr><th>build</th><th>size</th><th>mean KL</th>"
               "<th>median KL</th><th>p99 KL</th><th>max KL</th><th>top-1 agree</th><th>same sample</th>"
               "<th>PPL ratio</th><th>Δp mean</th><th>Δp RMS</th><th>MC acc</th><th>MC flips</th></tr>\n");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        const dsq_kld_stats *k = &b->kld;
        sb_printf(s,
                  "<tr><td><i style=\"display:inline-block;width:10px;height:10px;background:%s;margin-right:6px\">"
                  "</i>",
                  palette[i % PALETTE_N]);
        sb_html(s, b->name);
        sb_printf(s, "</td><td>%s", fmt_bytes(b->file_bytes).s);
        if (r->reference_bytes)
            sb_printf(s, "<br><small>%.1f%% of ref</small>",
                      100.0 * (double)b->file_bytes / (double)r->reference_bytes);
        sb_puts(s, "</td>");
        if (b->has_kld) {
            sb_printf(s, "<td>%s<br><small>± %s</small></td>", fmt_g(k->kl_mean, 3).s, fmt_g(k->kl_mean_se, 2).s);
            sb_printf(s, "<td>%s<br><small>± %s</small></td>", fmt_g(k->kl_median, 3).s, fmt_g(k->kl_median_se, 2).s);
            sb_printf(s, "<td>%s<br><small>± %s</small></td>", fmt_g(k->kl_p99, 3).s, fmt_g(k->kl_p99_se, 2).s);
            sb_printf(s, "<td>%s</td>", fmt_g(k->kl_max, 3).s);
            sb_printf(s, "<td>%s<br><small>± %s</small></td>", fmt_pct(k->top1).s, fmt_pct(k->top1_se).s);
            sb_printf(s, "<td>%s<br><small>± %s</small></td>", fmt_pct(k->same_sample).s, fmt_pct(k->same_sample_se).s);
            sb_printf(s, "<td>%s<br><small>± %s</small></td>", fmt_g(k->ppl_ratio, 5).s, fmt_g(k->ppl_ratio_se, 2).s);
            sb_printf(s, "<td>%s</td><td>%s</td>", fmt_g(k->dp_mean, 3).s, fmt_g(k->dp_rms, 3).s);
        } else {
            sb_puts(s, "<td>—</td><td>—</td><td>—</td><td>—</td><td>—</td><td>—</td><td>—</td><td>—</td><td>—</td>");
        }
        if (b->has_mc)
            sb_printf(s, "<td>%s<br><small>± %s</small></td>", fmt_pct(b->mc_acc).s, fmt_pct(b->mc_acc_se).s);
        else
            sb_puts(s, "<td>—</td>");
        sb_printf(s, "<td>%s</td></tr>\n", b->has_flips ? fmt_pct(b->mc_flip_rate).s : "—");
    }
    sb_puts(s, "</table></div>\n");
}

static void html_bands(sb *s, const dsq_report *r) {
    if (!any_kld(r)) return;
    sb_puts(s,
            "<h2>Mean KL by the reference's top-1 probability</h2>\n<div class=\"scroll\"><table>\n<tr><th>build</th>");
    for (int j = 0; j < DSQ_KLD_BANDS; j++) sb_printf(s, "<th>%s</th>", band_label[j]);
    sb_puts(s, "</tr>\n");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld) continue;
        sb_puts(s, "<tr><td>");
        sb_html(s, b->name);
        sb_puts(s, "</td>");
        for (int j = 0; j < DSQ_KLD_BANDS; j++)
            sb_printf(s, "<td>%s <small>(n=%llu)</small></td>", fmt_g(b->kld.band_kl_mean[j], 3).s,
                      (unsigned long long)b->kld.band_n[j]);
        sb_puts(s, "</tr>\n");
    }
    sb_puts(s, "</table></div>\n");
}

static void html_buckets(sb *s, const dsq_report *r) {
    if (!any_buckets(r)) return;
    sb_puts(s, "<h2>Drift by context position</h2>\n<div class=\"scroll\"><table>\n<tr><th>build</th><th>positions</th>"
               "<th>scored</th><th>mean KL</th><th>top-1 agree</th><th>PPL ratio</th></tr>\n");
    for (size_t i = 0; i < r->n_builds; i++) {
        const dsq_report_build *b = &r->builds[i];
        if (!b->has_kld) continue;
        for (int k = 0; k < b->kld.n_buckets; k++) {
            char lab[64];
            sb_puts(s, "<tr><td>");
            sb_html(s, b->name);
            sb_puts(s, "</td><td>");
            sb_html(s, dsq_kld_bucket_label(&b->kld, k, lab, sizeof lab));
            sb_printf(s, "</td><td>%llu</td><td>%s ± %s</td><td>%s</td><td>%s ± %s</td></tr>\n",
                      (unsigned long long)b->kld.bucket_n[k], fmt_g(b->kld.bucket_kl_mean[k], 4).s,
                      fmt_g(b->kld.bucket_kl_mean_se[k], 2).s, fmt_pct(b->kld.bucket_top1[k]).s,
                      fmt_g(b->kld.bucket_ppl_ratio[k], 6).s, fmt_g(b->kld.bucket_ppl_ratio_se[k], 2).s);
        }
    }
    sb_puts(s, "</table></div>\n");
}

static void html_families(sb *s, const dsq_report *r) {
    const char *names[MAX_FAMILIES];
    size_t nf = family_union(r, names, MAX_FAMILIES);
    if (!nf) return;
    sb_puts(s, "<h2>Quantization error by tensor family</h2>\n");
    html_legend(s, r);
    chart_families(s, r);
    sb_puts(s, "<div class=\"scroll\"><table>\n<tr><th>family</th>");
    for (size_t i = 0; i < r->n_builds; i++) {
        if (!r->builds[i].n_families) continue;
        sb_puts(s, "<th>");
        sb_html(s, r->builds[i].name);
        sb_puts(s, "<br><small>rel RMS · max abs · cosine</small></th>");
    }
    sb_puts(s, "</tr>\n");
    for (size_t f = 0; f < nf; f++) {
        sb_puts(s, "<tr><td>");
        sb_html(s, names[f]);
        sb_puts(s, "</td>");
        for (size_t i = 0; i < r->n_builds; i++) {
            const dsq_report_build *b = &r->builds[i];
            if (!b->n_families) continue;
            const dsq_report_family *x = find_family(b, names[f]);
            if (!x)
                sb_puts(s, "<td>—</td>");
            else
                sb_printf(s, "<td>%s · %s · %s</td>", fmt_g(x->rel_rms, 3).s, fmt_g(x->max_abs, 3).s,
                          x->cosine > 0.9999 && x->cosine < 1 ? fmt_g(x->cosine, 8).s : fmt_g(x->cosine, 5).s);
        }
        sb_puts(s, "</tr>\n");
    }
    sb_puts(s, "</table></div>\n");
}

dsq_status dsq_report_render_html(const dsq_report *r, char **out, size_t *len, dsq_err *err) {
    *out = NULL;
    sb s = {0};
    const char *title = r->title ? r->title : "dsq comparison report";
    sb_puts(&s, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    sb_html(&s, title);
    sb_printf(&s, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<main>\n<h1>", css);
    sb_html(&s, title);
    sb_puts(&s, "</h1>\n<p class=\"meta\">Reference: <b>");
    sb_html(&s, r->reference ? r->reference : "reference");
    sb_puts(&s, "</b>");
    if (r->reference_bytes) sb_printf(&s, " (%s)", fmt_bytes(r->reference_bytes).s);
    if (r->ref_ppl > 0) sb_printf(&s, ", perplexity %s ± %s", fmt_g(r->ref_ppl, 5).s, fmt_g(r->ref_ppl_se, 2).s);
    if (r->ref_mc_acc >= 0 && any_mc(r))
        sb_printf(&s, ", MC accuracy %s ± %s", fmt_pct(r->ref_mc_acc).s, fmt_pct(r->ref_mc_acc_se).s);
    sb_puts(&s, "</p>\n");
    if (r->text_desc) {
        sb_puts(&s, "<p class=\"meta\">Text: ");
        sb_html(&s, r->text_desc);
        sb_puts(&s, "</p>\n");
    }
    if (r->task_desc) {
        sb_puts(&s, "<p class=\"meta\">Task: ");
        sb_html(&s, r->task_desc);
        sb_puts(&s, "</p>\n");
    }
    sb_puts(&s, "<p class=\"meta\">KL is KL(reference ‖ build) in nats per token over the reference's top-k ids plus "
                "the rest (a lower bound, exact when k = vocab); ± are standard errors.</p>\n");
    html_summary(&s, r);
    if (any_kld(r)) {
        sb_puts(&s, "<h2>Size and divergence</h2>\n");
        html_legend(&s, r);
        chart_size_kl(&s, r);
        sb_puts(&s, "<h2>KL distribution</h2>\n");
        chart_hist(&s, r);
    }
    html_bands(&s, r);
    html_buckets(&s, r);
    html_families(&s, r);
    if (r->generated_by) {
        sb_puts(&s, "<footer>Generated by <code>");
        sb_html(&s, r->generated_by);
        sb_puts(&s, "</code></footer>\n");
    }
    sb_puts(&s, "</main>\n</body>\n</html>\n");
    if (s.oom) {
        dsq_free(s.p);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "report: out of memory");
    }
    *out = s.p;
    if (len) *len = s.n;
    return DSQ_OK;
}

dsq_status dsq_report_write(const dsq_report *r, const char *dir, bool overwrite, dsq_err *err) {
    DSQ_RETURN_IF(!dsq_path_is_dir(dir), err, DSQ_ERR_MISSING, "%s: report directory does not exist", dir);
    char *md = NULL, *html = NULL, *pmd = dsq_path_join(dir, "REPORT.md"), *phtml = dsq_path_join(dir, "REPORT.html");
    size_t nmd = 0, nhtml = 0;
    dsq_status s = pmd && phtml ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "report: out of memory");
    if (s == DSQ_OK) s = dsq_report_render_md(r, &md, &nmd, err);
    if (s == DSQ_OK) s = dsq_report_render_html(r, &html, &nhtml, err);
    if (s == DSQ_OK) s = dsq_write_file_atomic(pmd, md, nmd, overwrite, err);
    if (s == DSQ_OK) s = dsq_write_file_atomic(phtml, html, nhtml, overwrite, err);
    dsq_free(md);
    dsq_free(html);
    dsq_free(pmd);
    dsq_free(phtml);
    return s;
}
