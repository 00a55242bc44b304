/* dsq-command: compare | compare builds with a reference (KL, PPL ratio, MC accuracy); REPORT.md + REPORT.html */
/* `dsq compare REF Q1 [Q2 ...] --text TEXTFILE --out DIR`: a KL base of REF (DIR/ref.kld), then each
 * build against it, optionally a multiple-choice task with flips against REF's answers, and the
 * report (lib/eval/dsq_report.h). */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dsq_convert.h"
#include "dsq_inventory.h"
#include "dsq_report.h"
#include "dsq_wsrc.h"
#include "eval_metrics.h"

static void help(void) {
    printf("usage: dsq compare REF [Q1 Q2 ...] (--text TEXTFILE | --tokens FILE) --out DIR [options]\n"
           "   (at least one build Q or --kv-cache-variants)\n\n"
           "Runs REF over the text and keeps its top-k log-probs (DIR/ref.kld), then runs every build Q\n"
           "on the same tokens: KL(REF ‖ Q) statistics, top-1 agreement, same-sample rate, PPL ratio.\n"
           "With --task, multiple-choice accuracy of every model and each build's flip rate against REF's\n"
           "answers (DIR/ref-answers.jsonl).  Writes DIR/REPORT.md and a self-contained DIR/REPORT.html\n"
           "(tables, size-vs-KL chart, KL histogram).  Text is tokenized with REF's tokenizer.json.\n"
           "  --out DIR              report directory (created if missing)\n"
           "  --task TASK.jsonl      HellaSwag-style multiple-choice task (needs REF's tokenizer)\n"
           "  --top-k K              ids kept per position in the base (default %u)\n"
           "  --kv-cache-variants E1,E2,...  also score REF itself with each cache encoding (report rows\n"
           "                         \"REF kv=E\"): what cache quantization costs; the base uses --kv-cache\n"
           "  --title TEXT           report title\n"
           "  --overwrite            replace existing files in DIR\n"
           "  --json                 print the per-build numbers as JSON\n",
           DSQ_KBASE_DEFAULT_K);
    dsq__cmd_score_option_help(stdout);
}

/* Bytes of a build: a file's size, or the *.safetensors / *.dsq files of a directory. */
static uint64_t build_bytes(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return (uint64_t)st.st_size;
    uint64_t sum = 0;
    DIR *d = opendir(path);
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        bool want =
            (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) || (n > 4 && !strcmp(e->d_name + n - 4, ".dsq"));
        char *p = want ? dsq_path_join(path, e->d_name) : NULL;
        if (p && stat(p, &st) == 0 && S_ISREG(st.st_mode)) sum += (uint64_t)st.st_size;
        dsq_free(p);
    }
    closedir(d);
    return sum;
}

/* The last path component, without trailing slashes (heap). */
static char *build_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    char *s = dsq_malloc(n - b + 1);
    if (s) {
        memcpy(s, path + b, n - b);
        s[n - b] = 0;
    }
    return s;
}

typedef struct run {
    const char *ref, *out, *text, *tokens, *task, *title;
    const char *builds[64];
    int kv[64]; /* per build: its cache encoding (a --kv-cache-variants row of REF), or -1: the --kv-cache one */
    dsq_report_family families[64][DSQ_VERIFY_FAMILIES]; /* per build, from dsq verify --source REF */
    int n_builds;
    dsq_score_options so;
    uint32_t top_k;
    bool overwrite, json;
} run;

static dsq_status score_mc(const char *model_path, const dsq_score_options *so, const dsq_tok *tok,
                           const dsq_mc_task *task, dsq_mc_result *r, dsq_err *err) {
    dsq_v4_model *m;
    DSQ_TRY(dsq_v4_model_open(model_path, &m, err));
    dsq_status s = dsq_score_mc(m, so, tok, task, 0, 0, r, err);
    dsq_v4_model_close(m);
    return s;
}

/* The quantization error per tensor family of a .dsq build made from the REF checkpoint, as `dsq verify
 * --source REF` computes it (rel RMS and cosine of the family's worst tensor, its largest |w − ŵ|),
 * into fam[0..DSQ_VERIFY_FAMILIES).  Returns the count: 0 when REF is not a checkpoint directory or
 * the build not a .dsq, and, with a note, when the build does not verify against REF.  Interruption
 * is the only error passed on. */
static dsq_status build_families(const char *ref, const char *build, dsq_report_family *fam, size_t *n) {
    *n = 0;
    if (!dsq_path_is_dir(ref) || !dsq_ctr_sniff(build)) return DSQ_OK;
    dsq_verify_options o = {.path = build, .source = ref};
    dsq_verify_report rep;
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = dsq_convert_verify(&o, &rep, &e);
    if (s == DSQ_ERR_INTERRUPTED) return s;
    if (s != DSQ_OK || !rep.source_checked || rep.sources_changed || rep.checkpoint_missing) {
        fprintf(stderr, "compare: %s: no per-family error table (it does not verify against %s: %s)\n", build, ref,
                s != DSQ_OK ? e.msg : "tensors changed or missing");
        dsq_err_clear(&e);
        return DSQ_OK;
    }
    dsq_err_clear(&e);
    for (int k = 0; k < DSQ_VERIFY_FAMILIES && k < DSQ_FAMILY_COUNT; k++) {
        const dsq_verify_family *f = &rep.family[k];
        if (!f->sources) continue;
        fam[(*n)++] = (dsq_report_family){.family = dsq_family_name((dsq_family)k),
                                          .rel_rms = f->max_rel_rms,
                                          .max_abs = f->max_abs,
                                          .cosine = f->reencoded ? f->min_cosine : 1.0};
    }
    return DSQ_OK;
}

static dsq_status compare(run *R, dsq_report *rep, dsq_report_build *b, dsq_err *err) {
    char *base = dsq_path_join(R->out, "ref.kld"), *answers = dsq_path_join(R->out, "ref-answers.jsonl");
    int32_t *ids = NULL;
    uint64_t n = 0;
    dsq_v4_model *m = NULL;
    dsq_tok *tok = NULL;
    dsq_mc_task *task = NULL;
    dsq_mc_result mr = {0};
    dsq_status s = base && answers ? DSQ_OK : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    if (s == DSQ_OK)
        s = dsq__cmd_load_tokens(R->ref, R->text, R->tokens, dsq_score_text_bound(&R->so), &ids, &n, err);
    if (s == DSQ_OK) s = dsq_v4_model_open(R->ref, &m, err);
    dsq_ppl_result ppl;
    dsq_base_options bo = {.k = R->top_k, .overwrite = R->overwrite};
    char note[DSQ_KBASE_NOTE_MAX];
    snprintf(note, sizeof note, "dsq compare reference %s, %s numerics", R->ref,
             dsq_numerics_name(R->so.eval.numerics));
    bo.note = note;
    fprintf(stderr, "compare: reference %s\n", R->ref);
    if (s == DSQ_OK) s = dsq_score_save_base(m, &R->so, &bo, ids, n, base, &ppl, err);
    dsq_v4_model_close(m);
    m = NULL;
    if (s == DSQ_OK) {
        rep->ref_ppl = ppl.ppl;
        rep->ref_ppl_se = ppl.ppl_se;
    }
    if (s == DSQ_OK && R->task) {
        s = dsq_tok_open(R->ref, NULL, &tok, err);
        if (s == DSQ_OK) s = dsq_mc_task_open(R->task, &task, err);
        if (s == DSQ_OK) s = score_mc(R->ref, &R->so, tok, task, &mr, err);
        if (s == DSQ_OK) s = dsq_mc_answers_write(answers, task, NULL, &mr, R->overwrite, err);
        if (s == DSQ_OK) {
            rep->ref_mc_acc = mr.acc_norm;
            rep->ref_mc_acc_se = mr.acc_norm_se;
        }
        dsq_mc_result_clear(&mr);
    }
    for (int i = 0; s == DSQ_OK && i < R->n_builds; i++) {
        fprintf(stderr, "compare: build %s\n", R->builds[i]);
        b[i].file_bytes = build_bytes(R->builds[i]);
        dsq_score_options so = R->so;
        if (R->kv[i] >= 0) {
            so.eval.kv_cache = (dsq_kv_cache)R->kv[i];
            so.eval.kv_cache_from_model = false;
        }
        s = dsq_v4_model_open(R->builds[i], &m, err);
        if (s == DSQ_OK) s = dsq_score_kld(m, &so, base, ids, n, &b[i].kld, err);
        dsq_v4_model_close(m);
        m = NULL;
        b[i].has_kld = s == DSQ_OK;
        if (s == DSQ_OK && R->kv[i] < 0) {
            s = build_families(R->ref, R->builds[i], R->families[i], &b[i].n_families);
            b[i].families = R->families[i];
            if (s != DSQ_OK) dsq_err_set(err, s, "%s: interrupted", R->builds[i]);
        }
        if (s == DSQ_OK && task) {
            dsq_mc_flips fl;
            s = score_mc(R->builds[i], &so, tok, task, &mr, err);
            if (s == DSQ_OK) s = dsq_mc_flips_vs_file(answers, task, NULL, &mr, &fl, err);
            if (s == DSQ_OK) {
                b[i].has_mc = b[i].has_flips = true;
                b[i].mc_acc = mr.acc_norm;
                b[i].mc_acc_se = mr.acc_norm_se;
                b[i].mc_flip_rate = fl.norm_rate;
            }
            dsq_mc_result_clear(&mr);
        }
    }
    dsq_mc_task_free(task);
    dsq_tok_free(tok);
    dsq_free(ids);
    dsq_free(base);
    dsq_free(answers);
    return s;
}

int dsq_cmd_compare(int argc, char **argv) {
    const char *me = "compare";
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    run R;
    memset(&R, 0, sizeof R);
    dsq_score_options_default(&R.so);
    for (int i = 0; i < 64; i++) R.kv[i] = -1;
    const char *variants = NULL;
    dsq__cmd_score_table st;
    dsq__cmd_score_opts(&R.so, &st);
    dsq_opt opts[] = {
        DSQ_OPT_STR("--text", &R.text),
        DSQ_OPT_STR("--tokens", &R.tokens),
        DSQ_OPT_STR("--task", &R.task),
        DSQ_OPT_STR("--out", &R.out),
        DSQ_OPT_STR("--title", &R.title),
        DSQ_OPT_STR("--kv-cache-variants", &variants),
        DSQ_OPT_U32("--top-k", &R.top_k, 1, DSQ_KBASE_MAX_VOCAB),
        DSQ_OPT_FLAG("--overwrite", &R.overwrite),
        DSQ_OPT_FLAG("--json", &R.json),
        DSQ_OPT_MORE(st.score),
        DSQ_OPT_END,
    };
    /* pos[0] = REF, then the builds; one slot more than the builds so a 65th is "unexpected" */
    const char *pos[1 + sizeof R.builds / sizeof R.builds[0]];
    int n_pos = 0;
    dsq_opt_spec spec = {.cmd = me, .opts = opts, .pos = pos, .max_pos = (int)(sizeof pos / sizeof pos[0]), .min_pos = 1,
                         .missing = "need REF and at least one build (or --kv-cache-variants)", .dash_is_option = true};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, &n_pos);
    if (rc) return rc;
    R.ref = pos[0];
    R.n_builds = n_pos - 1;
    for (int i = 0; i < R.n_builds; i++) R.builds[i] = pos[i + 1];
    /* --kv-cache-variants: REF again as a build, once per encoding */
    char vbuf[256], *save = NULL;
    if (variants && strlen(variants) >= sizeof vbuf) return dsq_cmd_usage_error(me, "--kv-cache-variants is too long");
    if (variants) strcpy(vbuf, variants);
    for (char *v = variants ? strtok_r(vbuf, ",", &save) : NULL; v; v = strtok_r(NULL, ",", &save)) {
        dsq_kv_cache k;
        if (dsq__cmd_kv_cache_option(me, v, &k)) return DSQ_EXIT_USAGE;
        if (R.n_builds == 64) return dsq_cmd_usage_error(me, "too many builds (at most 64)");
        R.kv[R.n_builds] = (int)k;
        R.builds[R.n_builds++] = R.ref;
    }
    if (!R.n_builds) return dsq_cmd_usage_error(me, "need REF and at least one build (or --kv-cache-variants)");
    if (!R.text == !R.tokens) return dsq_cmd_usage_error(me, "give exactly one of --text FILE and --tokens FILE");
    if (!R.out) return dsq_cmd_usage_error(me, "missing --out DIR");
    if (mkdir(R.out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "dsq compare: %s: cannot create: %s\n", R.out, strerror(errno));
        return DSQ_EXIT_FAIL;
    }
    dsq_signals_install();
    dsq_report_build b[64];
    memset(b, 0, sizeof b);
    char *names[64] = {0}, *ref_name = build_name(R.ref);
    for (int i = 0; i < R.n_builds; i++) {
        names[i] = build_name(R.builds[i]);
        if (names[i] && R.kv[i] >= 0) { /* "REF kv=ENC" */
            const char *kn = dsq_kv_cache_name((dsq_kv_cache)R.kv[i]);
            char *nm = dsq_malloc(strlen(names[i]) + strlen(kn) + 5);
            if (nm) sprintf(nm, "%s kv=%s", names[i], kn);
            dsq_free(names[i]);
            names[i] = nm;
        }
        b[i].name = names[i];
    }
    char cmdline[1024];
    size_t len = (size_t)snprintf(cmdline, sizeof cmdline, "dsq %s", DSQ_VERSION_STRING);
    for (int i = 0; i < argc && len < sizeof cmdline; i++)
        len += (size_t)snprintf(cmdline + len, sizeof cmdline - len, " %s", argv[i]);
    char text_desc[512] = "";
    dsq_report rep = {.title = R.title,
                      .reference = ref_name,
                      .reference_bytes = build_bytes(R.ref),
                      .ref_mc_acc = -1,
                      .text_desc = text_desc,
                      .task_desc = R.task,
                      .generated_by = cmdline,
                      .n_builds = (size_t)R.n_builds,
                      .builds = b};
    dsq_err e = DSQ_ERR_INIT;
    dsq_status s = compare(&R, &rep, b, &e);
    if (s == DSQ_OK)
        snprintf(text_desc, sizeof text_desc, "%s: %llu positions scored in chunks of %u tokens, %s numerics",
                 R.text ? R.text : R.tokens, (unsigned long long)b[0].kld.n, R.so.n_ctx,
                 dsq_numerics_name(R.so.eval.numerics));
    if (s == DSQ_OK) s = dsq_report_write(&rep, R.out, R.overwrite, &e);
    if (s == DSQ_OK) {
        if (R.json) {
            printf("{\"out\": ");
            dsq_cmd_json_str(stdout, R.out);
            printf(", \"builds\": [");
            for (int i = 0; i < R.n_builds; i++) {
                printf("%s{\"name\": ", i ? ", " : "");
                dsq_cmd_json_str(stdout, b[i].name);
                printf(", \"path\": ");
                dsq_cmd_json_str(stdout, R.builds[i]);
                printf(", \"kv_cache\": \"%s\"",
                       dsq_kv_cache_name(R.kv[i] >= 0 ? (dsq_kv_cache)R.kv[i] : R.so.eval.kv_cache));
                printf(", \"bytes\": %llu, ", (unsigned long long)b[i].file_bytes);
                dsq__cmd_json_kld(stdout, &b[i].kld);
                if (b[i].has_mc)
                    printf(", \"mc_acc\": %.17g, \"mc_acc_se\": %.17g, \"mc_flip_rate\": %.17g", b[i].mc_acc,
                           b[i].mc_acc_se, b[i].mc_flip_rate);
                printf(", \"families\": [");
                for (size_t f = 0; f < b[i].n_families; f++) {
                    const dsq_report_family *x = &b[i].families[f];
                    printf("%s{\"family\": \"%s\", \"rel_rms\": %.17g, \"max_abs\": %.17g, \"cosine\": %.17g}",
                           f ? ", " : "", x->family, x->rel_rms, x->max_abs, x->cosine);
                }
                printf("]");
                printf("}");
            }
            printf("]}\n");
        } else {
            printf("%-32s %14s %12s %10s %10s %12s\n", "build", "bytes", "mean KL", "top-1", "PPL ratio", "MC acc");
            for (int i = 0; i < R.n_builds; i++) {
                printf("%-32s %14llu %12.5g %9.2f%% %10.5f", b[i].name, (unsigned long long)b[i].file_bytes,
                       b[i].kld.kl_mean, 100 * b[i].kld.top1, b[i].kld.ppl_ratio);
                if (b[i].has_mc)
                    printf(" %11.2f%%\n", 100 * b[i].mc_acc);
                else
                    printf(" %12s\n", "—");
            }
            printf("report: %s/REPORT.md, %s/REPORT.html\n", R.out, R.out);
        }
    }
    for (int i = 0; i < R.n_builds; i++) dsq_free(names[i]);
    dsq_free(ref_name);
    if (s != DSQ_OK) return dsq_cmd_exit(me, s, &e);
    return DSQ_EXIT_OK;
}
