/* Comparison reports: REPORT.md and a self-contained REPORT.html (inline CSS and SVG charts, no
 * scripts, no external resources) from per-build results — file size, KL statistics against the
 * reference, perplexity ratio, top-1 agreement, multiple-choice accuracy and flip rate, and the
 * per-tensor-family quantization error table of `dsq verify`.
 *
 * The caller owns every input; nothing is retained after a call.  Files are written atomically. */
#ifndef DSQ_REPORT_H
#define DSQ_REPORT_H

#include "dsq_core.h"
#include "dsq_metrics.h"

/* Quantization error of one tensor family (e.g. "attn.wq_a", "ffn.experts.w1") in one build. */
typedef struct dsq_report_family {
    const char *family;
    double rel_rms; /* sqrt(Σ(w - ŵ)² / Σw²) */
    double max_abs; /* max |w - ŵ| */
    double cosine;  /* cosine similarity of w and ŵ */
} dsq_report_family;

typedef struct dsq_report_build {
    const char *name; /* shown as given (escaped) */
    uint64_t file_bytes;
    bool has_kld;
    dsq_kld_stats kld; /* KL, top-1, same-sample, ppl ratio, Δp, bands, histogram */
    bool has_mc;
    double mc_acc, mc_acc_se; /* length-normalised accuracy */
    bool has_flips;
    double mc_flip_rate; /* items whose chosen answer differs from the reference's */
    size_t n_families;
    const dsq_report_family *families;
} dsq_report_build;

typedef struct dsq_report {
    const char *title;                /* default "dsq comparison report" */
    const char *reference;            /* reference model name */
    uint64_t reference_bytes;         /* 0 if unknown */
    double ref_ppl, ref_ppl_se;       /* reference perplexity (0 if not measured) */
    double ref_mc_acc, ref_mc_acc_se; /* reference MC accuracy (negative if not measured) */
    const char *text_desc;            /* e.g. "wiki.test.raw: 40 chunks of 512 tokens (10,200 scored)"; may be NULL */
    const char *task_desc;            /* may be NULL */
    const char *generated_by;         /* command line or tool version; may be NULL */
    size_t n_builds;
    const dsq_report_build *builds;
} dsq_report;

/* Render into heap strings (dsq_free); *len excludes the terminating NUL. */
dsq_status dsq_report_render_md(const dsq_report *r, char **out, size_t *len, dsq_err *err);
dsq_status dsq_report_render_html(const dsq_report *r, char **out, size_t *len, dsq_err *err);
/* Write DIR/REPORT.md and DIR/REPORT.html (DIR must exist). */
dsq_status dsq_report_write(const dsq_report *r, const char *dir, bool overwrite, dsq_err *err);

#endif
