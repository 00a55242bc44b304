/* Reports: Markdown and HTML content from realistic per-build results (statistics made by the KL
 * accumulator from synthetic positions), escaping of hostile names, self-containment, atomic
 * writing, and rendering in headless Chromium: the screenshot must show a real page (many colours,
 * a good share of non-background pixels) and Chromium must log no console message.  A page with a
 * script error and a blank page are run through the same checks to show they catch failures.
 * Needs `chromium` and `node` (installed by `make deps`); missing tools fail the test. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dsq_report.h"
#include "dsq_test.h"


static uint64_t rng = 77;
static double urand(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 0x2545F4914F6CDD1Dull) >> 11) * 0x1p-53;
}

/* KL statistics of a build whose per-position KL is log-normal around `scale`. */
static dsq_kld_stats fake_stats(double scale, double agree) {
    dsq_kld_acc *a;
    assert_int_equal(dsq_kld_acc_create(&a, NULL), DSQ_OK);
    for (int i = 0; i < 2000; i++) {
        double z = sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand());
        dsq_kld_pos p = {.kl = scale * exp(1.2 * z), .ref_top1_p = urand(), .nll_ref = 2 + urand()};
        p.nll_cand = p.nll_ref + scale * (urand() - 0.3);
        p.dp = -scale * urand() * 0.1;
        p.top1_agree = urand() < agree;
        p.sample_agree = urand() < agree * 0.95;
        assert_int_equal(dsq_kld_acc_add(a, &p, NULL), DSQ_OK);
    }
    dsq_kld_stats s;
    assert_int_equal(dsq_kld_acc_stats(a, &s, NULL), DSQ_OK);
    dsq_kld_acc_free(a);
    return s;
}

static const dsq_report_family fam_fp8[] = {
    {"attn.wq_a", 0.021, 0.004, 0.99978},      {"attn.wkv", 0.022, 0.005, 0.99976},
    {"attn.wo_b", 0.020, 0.003, 0.9998},       {"ffn.shared.w1", 0.023, 0.006, 0.99974},
    {"ffn.experts.w1", 0.024, 0.007, 0.99971}, {"ffn.experts.w2", 0.025, 0.007, 0.9997},
};
static const dsq_report_family fam_int4[] = {
    {"attn.wq_a", 0.081, 0.02, 0.9967},       {"attn.wkv", 0.085, 0.021, 0.9964},
    {"attn.wo_b", 0.079, 0.018, 0.9969},      {"ffn.shared.w1", 0.090, 0.03, 0.9959},
    {"ffn.experts.w1", 0.094, 0.031, 0.9956}, {"ffn.experts.w2", 0.097, 0.033, 0.9953},
};
static const dsq_report_family fam_q2[] = {
    {"attn.wq_a", 0.31, 0.09, 0.951},     {"attn.wkv", 0.33, 0.1, 0.944},        {"attn.wo_b", 0.30, 0.08, 0.953},
    {"ffn.shared.w1", 0.36, 0.12, 0.933}, {"ffn.experts.w1", 0.41, 0.13, 0.912}, {"ffn.experts.w2", 0.43, 0.14, 0.903},
};

static void make_report(dsq_report *r, dsq_report_build *b) {
    memset(b, 0, 3 * sizeof *b);
    b[0].name = "fp8 (release)";
    b[0].file_bytes = 158ull << 30;
    b[1].name = "int4 | g128 <b>&amp;</b>";
    b[1].file_bytes = 86ull << 30;
    b[2].name = "bad 2-bit";
    b[2].file_bytes = 47ull << 30;
    double scales[3] = {2e-4, 6e-3, 0.35}, agree[3] = {0.99, 0.93, 0.61}, acc[3] = {0.612, 0.598, 0.41};
    const dsq_report_family *fams[3] = {fam_fp8, fam_int4, fam_q2};
    for (int i = 0; i < 3; i++) {
        b[i].has_kld = true;
        b[i].kld = fake_stats(scales[i], agree[i]);
        b[i].has_mc = true;
        b[i].mc_acc = acc[i];
        b[i].mc_acc_se = sqrt(acc[i] * (1 - acc[i]) / 1000);
        b[i].has_flips = true;
        b[i].mc_flip_rate = 0.02 + i * 0.1;
        b[i].n_families = 6;
        b[i].families = fams[i];
    }
    memset(r, 0, sizeof *r);
    r->title = "DeepSeek-V4-Flash quantization comparison";
    r->reference = "V4-Flash bf16/fp8 release";
    r->reference_bytes = 160ull << 30;
    r->ref_ppl = 5.213;
    r->ref_ppl_se = 0.041;
    r->ref_mc_acc = 0.615;
    r->ref_mc_acc_se = 0.0154;
    r->text_desc = "wiki.test.raw: 40 chunks of 512 tokens (10,200 positions scored)";
    r->task_desc = "hellaswag_val.jsonl, 1000 items";
    r->generated_by = "dsq compare ref q1 q2 q3 --text wiki.test.raw --out report";
    r->n_builds = 3;
    r->builds = b;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_markdown(void **state) {
    dsq_report r;
    dsq_report_build b[3];
    make_report(&r, b);
    char *md;
    size_t len;
    assert_int_equal(dsq_report_render_md(&r, &md, &len, NULL), DSQ_OK);
    assert_int_equal(strlen(md), len);
    assert_non_null(strstr(md, "# DeepSeek-V4-Flash quantization comparison"));
    assert_non_null(strstr(md, "| fp8 (release) | 158.00 GiB (98.8%) |"));
    /* the pipe and the markup in a name are escaped, so the table keeps its columns */
    assert_non_null(strstr(md, "int4 \\| g128 \\<b\\>&amp;\\</b\\>"));
    char *sum = strstr(md, "## Summary");
    assert_non_null(sum);
    char *row = strstr(sum, "| bad 2-bit |");
    assert_non_null(row);
    char *eol = strchr(row, '\n');
    int bars = 0;
    for (char *p = row; p < eol; p++) bars += *p == '|' && (p == row || p[-1] != '\\');
    assert_int_equal(bars, 14); /* 13 columns */
    /* numbers come from the statistics */
    char want[64];
    snprintf(want, sizeof want, "%.3g ±", b[1].kld.kl_mean);
    assert_non_null(strstr(row - 0, "±")); /* row has standard errors */
    assert_non_null(strstr(md, want));
    assert_non_null(strstr(md, "## Mean KL by the reference's top-1 probability"));
    assert_non_null(strstr(md, "## KL histogram"));
    assert_non_null(strstr(md, "### bad 2-bit"));
    assert_non_null(strstr(md, "| ffn.experts.w2 | 0.43 | 0.14 | 0.903 |"));
    assert_non_null(strstr(md, "perplexity 5.213 ± 0.041"));
    assert_non_null(strstr(md, "Generated by `dsq compare"));
    dsq_free(md);

    /* A build without KL or MC shows dashes, and no family section appears without families. */
    dsq_report_build one = {.name = "size only", .file_bytes = 1000};
    dsq_report r2 = {.reference = "ref", .n_builds = 1, .builds = &one, .ref_mc_acc = -1};
    assert_int_equal(dsq_report_render_md(&r2, &md, &len, NULL), DSQ_OK);
    assert_non_null(strstr(md, "| size only | 1000 B | — |"));
    assert_null(strstr(md, "tensor family"));
    assert_null(strstr(md, "KL histogram"));
    dsq_free(md);
}

static void test_html_content(void **state) {
    dsq_report r;
    dsq_report_build b[3];
    make_report(&r, b);
    char *html;
    size_t len;
    assert_int_equal(dsq_report_render_html(&r, &html, &len, NULL), DSQ_OK);
    assert_true(!strncmp(html, "<!DOCTYPE html>", 15));
    /* self-contained: no scripts, no links, no external references of any kind */
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "http"));
    assert_null(strstr(html, "src="));
    assert_null(strstr(html, "href="));
    assert_null(strstr(html, "url("));
    assert_null(strstr(html, "@import"));
    /* escaped names, never raw markup */
    assert_null(strstr(html, "<b>&amp;</b>"));
    assert_non_null(strstr(html, "int4 | g128 &lt;b&gt;&amp;amp;&lt;/b&gt;"));
    /* three charts: size vs KL, histogram, families */
    assert_int_equal(count(html, "<svg"), 3);
    assert_int_equal(count(html, "</svg>"), 3);
    assert_int_equal(count(html, "<circle"), 3);
    assert_int_equal(count(html, "<polyline"), 3);
    assert_int_equal(count(html, "<rect x=\"190\""), 18); /* 6 families × 3 builds */
    assert_int_equal(count(html, "<figure>"), count(html, "</figure>"));
    assert_int_equal(count(html, "<table"), count(html, "</table>"));
    assert_int_equal(count(html, "</table>"), 4); /* summary, bands, position buckets, families */
    assert_int_equal(count(html, "<tr>"), count(html, "</tr>"));
    assert_non_null(strstr(html, "</html>\n"));
    dsq_free(html);

    /* KL of exactly 0 (a model against itself) cannot go on a log axis: a note instead of a chart */
    dsq_report_build self = {.name = "self", .file_bytes = 5, .has_kld = true};
    self.kld.n = 10;
    self.kld.hist[0] = 10;
    dsq_report r2 = {.reference = "ref", .n_builds = 1, .builds = &self, .ref_mc_acc = -1};
    assert_int_equal(dsq_report_render_html(&r2, &html, &len, NULL), DSQ_OK);
    assert_non_null(strstr(html, "No build has a positive"));
    assert_int_equal(count(html, "<svg"), 1); /* the histogram */
    dsq_free(html);
}

/* Drift by context position: a row per build and non-empty bucket, in both renderings, numbers from the stats;
 * no section when no build has buckets. */
static void test_position_buckets(void **state) {
    dsq_report r;
    dsq_report_build b[3];
    make_report(&r, b);
    char *md, *html;
    size_t len;
    for (int i = 0; i < 3; i++) b[i].kld.n_buckets = 0;
    assert_int_equal(dsq_report_render_md(&r, &md, &len, NULL), DSQ_OK);
    assert_null(strstr(md, "Drift by context position"));
    dsq_free(md);
    b[2].kld.n_buckets = 2;
    b[2].kld.bucket_lo[0] = 512;
    b[2].kld.bucket_hi[0] = 768;
    b[2].kld.bucket_n[0] = 300;
    b[2].kld.bucket_kl_mean[0] = 0.0125;
    b[2].kld.bucket_kl_mean_se[0] = 0.001;
    b[2].kld.bucket_top1[0] = 0.9;
    b[2].kld.bucket_ppl_ratio[0] = 1.0125;
    b[2].kld.bucket_ppl_ratio_se[0] = 0.002;
    b[2].kld.bucket_lo[1] = 768;
    b[2].kld.bucket_hi[1] = UINT64_MAX;
    b[2].kld.bucket_n[1] = 211;
    b[2].kld.bucket_kl_mean[1] = 0.05;
    b[2].kld.bucket_top1[1] = 0.8;
    b[2].kld.bucket_ppl_ratio[1] = 1.04;
    assert_int_equal(dsq_report_render_md(&r, &md, &len, NULL), DSQ_OK);
    char *sec = strstr(md, "## Drift by context position");
    assert_non_null(sec);
    assert_non_null(strstr(sec, "| bad 2-bit | [512, 768) | 300 | 0.0125 ± 0.001 | 90.00% | 1.0125 ± 0.002 |"));
    assert_non_null(strstr(sec, "| bad 2-bit | [768, ∞) | 211 | 0.05 ± 0 | 80.00% | 1.04 ± 0 |"));
    assert_int_equal(count(sec, "| bad 2-bit |"), 2);
    dsq_free(md);
    assert_int_equal(dsq_report_render_html(&r, &html, &len, NULL), DSQ_OK);
    sec = strstr(html, "<h2>Drift by context position</h2>");
    assert_non_null(sec);
    assert_non_null(strstr(sec, "<td>bad 2-bit</td><td>[768, ∞)</td><td>211</td>"));
    dsq_free(html);
}

static void test_write(void **state) {
    dsq_report r;
    dsq_report_build b[3];
    make_report(&r, b);
    dsq_err err = DSQ_ERR_INIT;
    char *missing = dsq_test_join(dsq_test_tmp, "nope");
    assert_int_equal(dsq_report_write(&r, missing, false, &err), DSQ_ERR_MISSING);
    char *dir = dsq_test_join(dsq_test_tmp, "out");
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(dsq_report_write(&r, dir, false, &err), DSQ_OK);
    assert_int_equal(dsq_report_write(&r, dir, false, &err), DSQ_ERR_EXISTS);
    assert_int_equal(dsq_report_write(&r, dir, true, &err), DSQ_OK);
    char *pm = dsq_test_join(dir, "REPORT.md"), *ph = dsq_test_join(dir, "REPORT.html");
    size_t nm, nh;
    char *m = dsq_test_read(pm, &nm), *h = dsq_test_read(ph, &nh);
    char *m2, *h2;
    size_t nm2, nh2;
    assert_int_equal(dsq_report_render_md(&r, &m2, &nm2, NULL), DSQ_OK);
    assert_int_equal(dsq_report_render_html(&r, &h2, &nh2, NULL), DSQ_OK);
    assert_true(nm == nm2 && !memcmp(m, m2, nm));
    assert_true(nh == nh2 && !memcmp(h, h2, nh));
    /* allocation failures are reported, not crashed on */
    for (long n = 1; n < 40; n += 3) {
        char *x = NULL;
        dsq_fault_set(DSQ_FAULT_MALLOC, n);
        dsq_status s = dsq_report_render_html(&r, &x, NULL, &err);
        dsq_fault_set(DSQ_FAULT_MALLOC, 0);
        assert_true(s == DSQ_OK || s == DSQ_ERR_NOMEM);
        if (s == DSQ_OK)
            dsq_free(x);
        else
            assert_null(x);
    }
    free(m);
    free(h);
    dsq_free(m2);
    dsq_free(h2);
    free(pm);
    free(ph);
    free(dir);
    free(missing);
    dsq_err_clear(&err);
}

/* ---- rendering in Chromium ---------------------------------------------------------------------- */

typedef struct render {
    int rc;
    bool console; /* any console message, uncaught error or failed resource in Chromium's log */
    long png_bytes;
    long colors;
    double non_background;
    int width, height;
} render;

static render run_chromium(const char *html_path, const char *png, const char *tag) {
    render out = {0};
    char *log = dsq_test_join(dsq_test_tmp, "chromium.log"), *prof = dsq_test_join(dsq_test_tmp, "profile");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
             "--disable-component-update --disable-sync --no-first-run --no-default-browser-check "
             "--hide-scrollbars --user-data-dir='%s' --window-size=1280,2400 --enable-logging=stderr --v=0 "
             "--screenshot='%s' 'file://%s' >'%s' 2>&1",
             prof, png, html_path, log);
    out.rc = system(cmd);
    size_t n;
    char *text = dsq_test_read(log, &n);
    out.console = strstr(text, ":CONSOLE") || strstr(text, "Uncaught") || strstr(text, "net::ERR_");
    if (out.rc != 0) fprintf(stderr, "[%s] chromium exit status %d, log:\n%s\n", tag, out.rc, text);
    for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n")) /* the console lines alone */
        if (strstr(l, ":CONSOLE") || strstr(l, "Uncaught") || strstr(l, "net::ERR_"))
            fprintf(stderr, "[%s] %s\n", tag, l);
    free(text);
    struct stat st;
    out.png_bytes = stat(png, &st) == 0 ? (long)st.st_size : -1;
    if (out.png_bytes > 0) {
        char *stats = dsq_test_join(dsq_test_tmp, "png.json");
        snprintf(cmd, sizeof cmd, "node tests/report/pngstat.js '%s' >'%s'", png, stats);
        assert_int_equal(system(cmd), 0);
        char *j = dsq_test_read(stats, NULL);
        assert_int_equal(sscanf(j, "{\"width\":%d,\"height\":%d,\"colors\":%ld,\"non_background\":%lf", &out.width,
                                &out.height, &out.colors, &out.non_background),
                         4);
        free(j);
        free(stats);
    }
    const char *keep = getenv("DSQ_TEST_KEEP"); /* copy the screenshot somewhere to look at it */
    if (keep) {
        snprintf(cmd, sizeof cmd, "cp '%s' '%s/%s.png' && cp '%s' '%s/%s.html'", png, keep, tag, html_path, keep, tag);
        if (system(cmd) != 0) fprintf(stderr, "could not keep %s\n", tag);
    }
    dsq_test_rmdir(prof);
    free(log);
    free(prof);
    return out;
}

static void test_chromium_renders(void **state) {
    if (system("command -v chromium >/dev/null 2>&1") != 0)
        fail_msg("chromium is not installed: run `make deps` (Debian package chromium)");
    if (system("command -v node >/dev/null 2>&1") != 0) fail_msg("node is not installed: run `make deps`");
    dsq_report r;
    dsq_report_build b[3];
    make_report(&r, b);
    char *dir = dsq_test_join(dsq_test_tmp, "chrome");
    assert_int_equal(mkdir(dir, 0755), 0);
    assert_int_equal(dsq_report_write(&r, dir, false, NULL), DSQ_OK);
    char *html = dsq_test_join(dir, "REPORT.html"), *png = dsq_test_join(dsq_test_tmp, "report.png");
    render x = run_chromium(html, png, "report");
    assert_int_equal(x.rc, 0);
    assert_false(x.console);
    assert_true(x.png_bytes > 30000);
    assert_int_equal(x.width, 1280);
    assert_true(x.colors > 200);          /* text antialiasing and six palette colours */
    assert_true(x.non_background > 0.03); /* tables and charts, not an empty page */

    /* The checks catch a broken page: a script error shows in the log ... */
    char *bad = dsq_test_join(dsq_test_tmp, "bad.html"), *bad_png = dsq_test_join(dsq_test_tmp, "bad.png");
    const char *page = "<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>";
    dsq_test_write(bad, page, strlen(page));
    render y = run_chromium(bad, bad_png, "control-script");
    assert_true(y.console);
    /* ... and a blank page fails the screenshot checks. */
    char *blank = dsq_test_join(dsq_test_tmp, "blank.html"), *blank_png = dsq_test_join(dsq_test_tmp, "blank.png");
    const char *empty = "<!DOCTYPE html><html><body></body></html>";
    dsq_test_write(blank, empty, strlen(empty));
    render z = run_chromium(blank, blank_png, "control-blank");
    assert_false(z.console);
    assert_true(z.colors <= 2 && z.non_background < 0.001);
    free(bad);
    free(bad_png);
    free(blank);
    free(blank_png);
    free(html);
    free(png);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_markdown),
        cmocka_unit_test(test_position_buckets),
        cmocka_unit_test(test_html_content),
        cmocka_unit_test(test_write),
        cmocka_unit_test(test_chromium_renders),
    };
    return cmocka_run_group_tests(tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
}
