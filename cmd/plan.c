/* dsq-command: plan | choose per-group encodings that minimise the predicted KL under a size budget; write the recipe */
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_imatrix_gguf.h"
#include "dsq_plan.h"
#include "eval_metrics.h"

static void help(void) {
    printf("usage: dsq plan SRC (CALIB.txt | --tokens FILE) (--target-size SIZE | --target-bpw B) [options]\n\n"
           "Measures, for every tensor group (per block: attn, shared, experts.w13, experts.w2; embed; head;\n"
           "the MTP block's groups on its own logits) and every candidate encoding valid for its shapes, the\n"
           "KL divergence on the calibration chunks when that group alone is re-encoded; then picks one\n"
           "encoding per group minimising the summed KL under the budget (multiple-choice knapsack: exact DP\n"
           "on a discretised budget, then a greedy fill), writes the recipe `dsq convert --recipe` takes, and\n"
           "prints per group the choice, its bytes and KL, and the predicted vs measured KL of the mix.\n"
           "Protected tensors, compressor and indexer matrices keep their stored form.\n\n");
    printf("  --imatrix FILE         importance for the k-quant candidates (dsq or llama.cpp imatrix); give the\n"
           "                         same file to dsq convert\n"
           "  --target-size SIZE     budget over every tensor's stored bytes (K/M/G suffixes = 2^10...)\n"
           "  --target-bpw B         budget in bits per quantizable (group) weight\n"
           "  --candidates LIST      comma-separated encodings (default %s)\n"
           "  --out RECIPE.json      write the recipe (else printed only)\n"
           "  --table FILE           sensitivity cache: read the KLs from FILE when it exists, else measure and\n"
           "                         write them there (several budgets, one measurement; delete it when the\n"
           "                         imatrix or the text change)\n"
           "  --overwrite            replace RECIPE.json\n"
           "  --json                 one JSON object on stdout\n",
           DSQ_PLAN_DEFAULT_CANDIDATES);
    dsq__cmd_score_option_help(stdout);
}

static void progress(void *user, const char *group, const char *enc, double kl, int done, int total) {
    (void)user;
    fprintf(stderr, "plan: %d/%d %s %s KL %.4g\n", done, total, group, enc, kl);
}

static void print_json(const dsq_plan_result *r) {
    printf("{\"budget_bytes\": %llu, \"total_bytes\": %llu, \"convert_bytes\": %llu, \"fixed_bytes\": %llu, "
           "\"source_bytes\": %llu, \"group_elements\": %llu, \"bpw\": %.6f, \"predicted_kl\": %.8g, "
           "\"measured_kl\": %.8g, \"positions\": %llu, \"seconds\": %.3f, \"groups\": [",
           (unsigned long long)r->budget_bytes, (unsigned long long)r->total_bytes, (unsigned long long)r->convert_bytes,
           (unsigned long long)r->fixed_bytes, (unsigned long long)r->source_bytes,
           (unsigned long long)r->group_elements, r->bpw, r->predicted_kl, r->measured_kl,
           (unsigned long long)r->positions, r->seconds);
    for (int g = 0; g < r->n_groups; g++) {
        const dsq_plan_group *G = &r->groups[g];
        printf("%s{\"group\": ", g ? ", " : "");
        dsq_cmd_json_str(stdout, G->name);
        printf(", \"elements\": %llu, \"choice\": ", (unsigned long long)G->elements);
        dsq_cmd_json_str(stdout, G->cands[G->choice].name);
        printf(", \"candidates\": [");
        for (int k = 0; k < G->n_cands; k++)
            printf("%s{\"encoding\": \"%s\", \"bytes\": %llu, \"kl\": %.8g}", k ? ", " : "", G->cands[k].name,
                   (unsigned long long)G->cands[k].bytes, G->cands[k].kl);
        printf("]}");
    }
    printf("]}\n");
}

static void print_text(const dsq_plan_result *r) {
    printf("%-22s %-14s %12s %8s %12s\n", "group", "choice", "bytes", "bpw", "KL alone");
    for (int g = 0; g < r->n_groups; g++) {
        const dsq_plan_group *G = &r->groups[g];
        const dsq_plan_cand *c = &G->cands[G->choice];
        printf("%-22s %-14s %12llu %8.3f %12.4g\n", G->name, c->name, (unsigned long long)c->bytes,
               8.0 * (double)c->bytes / (double)G->elements, c->kl);
    }
    printf("size: %llu bytes stored (budget %llu; converter's count %llu; source %llu), %.4f bits per quantizable "
           "weight\n",
           (unsigned long long)r->total_bytes, (unsigned long long)r->budget_bytes, (unsigned long long)r->convert_bytes,
           (unsigned long long)r->source_bytes, r->bpw);
    printf("KL: predicted %.6g (sum of the groups' KLs measured alone), measured %.6g (the whole mix), %llu positions; "
           "%.1f s\n",
           r->predicted_kl, r->measured_kl, (unsigned long long)r->positions, r->seconds);
}

int dsq_cmd_plan(int argc, char **argv) {
    const char *me = "plan";
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    dsq_score_options so;
    dsq_score_options_default(&so);
    so.max_chunks = 4;
    const char *pos[2] = {NULL, NULL}, *tokens = NULL, *out = NULL, *imx_path = NULL, *cands = NULL, *table = NULL;
    int npos = 0;
    bool overwrite = false, json = false;
    uint64_t target_size = 0;
    double target_bpw = 0;
    dsq__cmd_score_table st;
    dsq__cmd_score_opts(&so, &st);
    dsq_opt opts[] = {
        DSQ_OPT_STR("--out", &out),
        DSQ_OPT_STR("--tokens", &tokens),
        DSQ_OPT_STR("--imatrix", &imx_path),
        DSQ_OPT_STR("--candidates", &cands),
        DSQ_OPT_STR("--table", &table),
        DSQ_OPT_SIZE("--target-size", &target_size, 1, UINT64_MAX),
        DSQ_OPT_DOUBLE("--target-bpw", &target_bpw, 0, 64, DSQ_OPT_GT_MIN),
        DSQ_OPT_FLAG("--overwrite", &overwrite),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_MORE(st.score),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = me, .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 1, .missing = "missing SRC"};
    int rc0 = dsq_opt_parse_cmd(&spec, argc, argv, &npos);
    if (rc0) return rc0;
    if ((npos == 2) == (tokens != NULL)) return dsq_cmd_usage_error(me, "give CALIB.txt or --tokens FILE");
    if ((target_size > 0) == (target_bpw > 0)) return dsq_cmd_usage_error(me, "give one of --target-size and --target-bpw");
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    dsq_imatrix *imx = NULL;
    int32_t *ids = NULL;
    uint64_t n = 0;
    dsq_plan_result *res = NULL;
    dsq_recipe *rc = NULL;
    dsq_status s = imx_path ? dsq_imatrix_load_any(imx_path, &imx, &e) : DSQ_OK;
    if (s == DSQ_OK)
        s = dsq__cmd_load_tokens(pos[0], npos > 1 ? pos[1] : NULL, tokens, dsq_score_text_bound(&so), &ids, &n, &e);
    if (s == DSQ_OK) {
        dsq_plan_options po = {.src = pos[0], .imatrix = imx, .tokens = ids, .n_tokens = n, .n_ctx = so.n_ctx,
                               .max_chunks = so.max_chunks, .candidates = cands, .target_bytes = target_size,
                               .target_bpw = target_bpw, .eval = so.eval, .table = table, .progress = json ? NULL : progress};
        s = dsq_plan_run(&po, &res, &e);
    }
    if (s == DSQ_OK) s = dsq_plan_recipe(res, &rc, &e);
    char *text = s == DSQ_OK ? dsq_recipe_to_json(rc) : NULL;
    if (s == DSQ_OK && !text) s = dsq_err_set(&e, DSQ_ERR_NOMEM, "out of memory");
    if (s == DSQ_OK && out) {
        size_t l = strlen(text);
        text[l] = '\n'; /* the terminating NUL becomes the file's last newline */
        s = dsq_write_file_atomic(out, text, l + 1, overwrite, &e);
        text[l] = 0;
    }
    if (s == DSQ_OK) {
        if (json) print_json(res);
        else {
            print_text(res);
            if (out) printf("recipe: %s (dsq convert SRC OUT.dsq --recipe %s%s%s)\n", out, out,
                            imx_path ? " --imatrix " : "", imx_path ? imx_path : "");
            else printf("recipe: %s\n", text);
        }
    }
    dsq_free(text);
    dsq_recipe_free(rc);
    dsq_plan_free(res);
    dsq_free(ids);
    dsq_imatrix_free(imx);
    return dsq_cmd_exit(me, s, &e);
}
