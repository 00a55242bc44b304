/* dsq-command: calibrate | collect an importance matrix (sum of x^2 per input column of every linear) over a text */
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_imatrix.h"
#include "dsq_imatrix_gguf.h"
#include "eval_metrics.h"
#include "inspect.h"

static void help(void) {
    printf("usage: dsq calibrate MODEL TEXTFILE|--tokens FILE --out FILE.imatrix [options]\n\n"
           "Runs the reference forward pass over the text (chunks of --ctx tokens, as `dsq eval ppl`) and\n"
           "collects, for the input of every linear layer, the sum of x^2 per input column and the number of\n"
           "token rows (routed experts separately, with the tokens routed to each).  Writes an imatrix file\n"
           "(formats/spec/imatrix.md) that `dsq convert --imatrix` feeds to the k-quant encoders, and prints\n"
           "the routed-expert coverage: tokens per expert per layer and the experts below %d tokens, which\n"
           "the quantizer encodes without importance (plain squared error).\n\n",
           DSQ_IMATRIX_MIN_ROWS);
    printf("  --out FILE             the imatrix (safetensors: NAME.in_sum2 [cols], NAME.counts [1]); a FILE\n"
           "                         ending in .gguf is llama.cpp's imatrix GGUF (GGUF tensor names, experts\n"
           "                         stacked [n_expert][cols]) for llama-quantize --imatrix\n"
           "  --format st|gguf       the --out format regardless of its name\n"
           "  --overwrite            replace FILE if it exists\n");
    dsq__cmd_score_option_help(stdout);
}

static void progress(void *user, const dsq_score_progress *p) {
    fprintf(stderr, "calibrate: %llu/%llu positions, ppl %.5g\n", (unsigned long long)p->done,
            (unsigned long long)p->total, p->ppl.ppl);
    (void)user;
}

/* "layers.L.ffn.experts.E.wK.weight" → L, E (else false). */
static bool expert_of(const char *name, int *layer, int *expert, int *proj) {
    int l, e, k, n = 0;
    if (sscanf(name, "layers.%d.ffn.experts.%d.w%d.weight%n", &l, &e, &k, &n) != 3 || name[n]) return false;
    *layer = l, *expert = e, *proj = k;
    return true;
}

/* Routed-expert coverage: tokens per expert per layer, the experts below DSQ_IMATRIX_MIN_ROWS. */
static void coverage(const dsq_imatrix *m, bool json) {
    size_t n = dsq_imatrix_count(m);
    int max_l = -1, max_e = -1;
    for (size_t i = 0; i < n; i++) {
        int l, e, k;
        if (expert_of(dsq_imatrix_name(m, i), &l, &e, &k)) max_l = l > max_l ? l : max_l, max_e = e > max_e ? e : max_e;
    }
    if (!json) printf("%zu weights observed\n", n);
    if (max_l < 0) {
        if (json) printf("{\"weights\": %zu, \"min_rows\": %d, \"layers\": []}\n", n, DSQ_IMATRIX_MIN_ROWS);
        return;
    }
    uint64_t *tok = calloc((size_t)(max_l + 1) * (size_t)(max_e + 1), sizeof *tok);
    if (!tok) return;
    for (size_t i = 0; i < n; i++) {
        int l, e, k;
        if (expert_of(dsq_imatrix_name(m, i), &l, &e, &k) && k == 1) tok[l * (max_e + 1) + e] = dsq_imatrix_rows(m, i);
    }
    if (json) {
        printf("{\"weights\": %zu, \"min_rows\": %d, \"layers\": [", n, DSQ_IMATRIX_MIN_ROWS);
        for (int l = 0; l <= max_l; l++) {
            printf("%s{\"layer\": %d, \"expert_tokens\": [", l ? ", " : "", l);
            for (int e = 0; e <= max_e; e++)
                printf("%s%llu", e ? ", " : "", (unsigned long long)tok[l * (max_e + 1) + e]);
            printf("]}");
        }
        printf("]}\n");
        free(tok);
        return;
    }
    printf("routed-expert tokens per layer (experts below %d tokens are quantized without importance):\n",
           DSQ_IMATRIX_MIN_ROWS);
    for (int l = 0; l <= max_l; l++) {
        uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
        int below = 0;
        for (int e = 0; e <= max_e; e++) {
            uint64_t t = tok[l * (max_e + 1) + e];
            lo = t < lo ? t : lo, hi = t > hi ? t : hi, sum += t;
            below += t < DSQ_IMATRIX_MIN_ROWS;
        }
        printf("  layer %d: min %llu, mean %.1f, max %llu tokens; %d of %d experts below the threshold", l,
               (unsigned long long)lo, (double)sum / (max_e + 1), (unsigned long long)hi, below, max_e + 1);
        if (below) {
            printf(" (");
            for (int e = 0, k = 0; e <= max_e; e++)
                if (tok[l * (max_e + 1) + e] < DSQ_IMATRIX_MIN_ROWS) printf("%s%d", k++ ? " " : "", e);
            printf(")");
        }
        printf("\n");
    }
    free(tok);
}

int dsq__inspect_imatrix(const char *path, bool json) {
    dsq_err e = DSQ_ERR_INIT;
    dsq_imatrix *m = NULL;
    if (dsq_imatrix_load_any(path, &m, &e) != DSQ_OK) return dsq_cmd_fail("inspect", &e);
    if (!json) printf("%s: imatrix, ", path);
    coverage(m, json);
    dsq_imatrix_free(m);
    return DSQ_EXIT_OK;
}

int dsq_cmd_calibrate(int argc, char **argv) {
    const char *me = "calibrate";
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    dsq_score_options so;
    dsq_score_options_default(&so);
    const char *pos[2] = {NULL, NULL}, *tokens = NULL, *out = NULL;
    int npos = 0;
    bool overwrite = false;
    static const char *const formats[] = {"st", "gguf", NULL};
    int gguf = -1; /* -1: by the name; else the index in formats */
    dsq__cmd_score_table st;
    dsq__cmd_score_opts(&so, &st);
    dsq_opt opts[] = {
        DSQ_OPT_STR("--out", &out),
        DSQ_OPT_STR("--tokens", &tokens),
        DSQ_OPT_ENUM("--format", &gguf, formats),
        DSQ_OPT_FLAG("--overwrite", &overwrite),
        DSQ_OPT_MORE(st.score),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = me, .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 1, .missing = "missing MODEL"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, &npos);
    if (rc) return rc;
    if ((npos == 2) == (tokens != NULL)) return dsq_cmd_usage_error(me, "give TEXTFILE or --tokens FILE");
    if (!out) return dsq_cmd_usage_error(me, "--out FILE is required");
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    dsq_v4_model *m = NULL;
    dsq_imatrix *imx = NULL;
    int32_t *ids = NULL;
    uint64_t n = 0;
    dsq_status s = dsq_imatrix_create(&imx, &e);
    if (s == DSQ_OK) s = dsq_v4_model_open(pos[0], &m, &e);
    if (s == DSQ_OK) s = dsq__cmd_load_tokens(pos[0], npos > 1 ? pos[1] : NULL, tokens, dsq_score_text_bound(&so), &ids, &n, &e);
    so.eval.observe = dsq_imatrix_observe;
    so.eval.observe_user = imx;
    so.progress = progress;
    dsq_ppl_result r;
    if (s == DSQ_OK) s = dsq_score_ppl(m, &so, ids, n, &r, &e);
    if (s == DSQ_OK) s = dsq_imatrix_error(imx, &e);
    if (gguf < 0) {
        size_t l = strlen(out);
        gguf = l > 5 && !strcmp(out + l - 5, ".gguf");
    }
    if (s == DSQ_OK && gguf) {
        /* llama.cpp's chunk count: the most rows any weight saw over the chunk size */
        uint64_t max_rows = 0;
        for (size_t i = 0; i < dsq_imatrix_count(imx); i++)
            if (dsq_imatrix_rows(imx, i) > max_rows) max_rows = dsq_imatrix_rows(imx, i);
        dsq_imatrix_gguf_options go = {.n_experts = dsq_v4_model_config(m)->n_routed_experts,
                                       .dataset = npos > 1 ? pos[1] : tokens,
                                       .chunk_size = so.n_ctx,
                                       .chunk_count = so.n_ctx ? (uint32_t)(max_rows / so.n_ctx) : 0,
                                       .overwrite = overwrite};
        s = dsq_imatrix_save_gguf(imx, out, &go, &e);
    } else if (s == DSQ_OK)
        s = dsq_imatrix_save(imx, out, overwrite, &e);
    if (s == DSQ_OK) {
        printf("%s: ppl %.5g over %llu scored positions\n", out, r.ppl, (unsigned long long)r.n);
        coverage(imx, false);
    }
    dsq_free(ids);
    dsq_v4_model_close(m);
    dsq_imatrix_free(imx);
    return dsq_cmd_exit(me, s, &e);
}
