/* dsq-command: eval | evaluate a V4 checkpoint with the reference forward pass (logits) */
/* `dsq eval SUBCOMMAND ...`: subcommands share the model/numerics options; each is a function in
 * the table below.  Arguments are parsed here; the work is lib/eval (dsq_eval.h). */
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_eval.h"
#include "eval_metrics.h" /* ppl, kld, diff, mc: cmd/eval_metrics.c */

static void logits_help(FILE *f) {
    fprintf(f, "usage: dsq eval logits MODEL --tokens FILE --out OUT.safetensors [options]\n\n"
               "Runs the DeepSeek-V4 forward pass (spec section 4) and writes `logits` F32 [n, vocab].\n"
               "  MODEL                  checkpoint directory (config.json + safetensors)\n"
               "  --tokens FILE          safetensors with an I32 tensor `tokens`, or a text file of ids\n"
               "  --out FILE             output safetensors (written atomically)\n"
               "  --numerics exact|release  exact: f32 (default); release: the official bf16/FP8/FP4 arithmetic\n"
               "  --decode-from P        prefill P tokens, then one token at a time; logits then holds\n"
               "                         [n-P+1, vocab]: position P-1, then one row per decode step\n"
               "  --mtp                  also `mtp_logits` [n-1, vocab] from the MTP block\n"
               "  --dump-hidden          also `layer_out.N` [n, hc, dim] per block and `final_hidden`\n"
               "  --memory-budget SIZE   layer-streaming prefill within SIZE bytes (K/M/G suffixes)\n"
               "  --prefill-chunk N      prefill in calls of N tokens (same logits; bounded activations at long\n"
               "                         context; with --decode-from only the last prefill row is kept)\n"
               "  --device cpu|cuda[:N]  where the forward pass runs (default cpu; cuda needs a GPU and a CUDA build)\n"
               "  --kv-cache ENC  how the KV cache is stored: f32 (default), bf16, compact (release FP8/FP4), fp4, int4, compact-idx8\n"
               "  --threads N            OpenMP threads (default: all)\n"
               "  --no-shared-clamp      do not clamp the shared expert's SwiGLU (earlier reference revision)\n"
               "  --scalar               portable kernels only (no AVX2)\n"
               "  --no-verify-data       skip the checksum of each .dsq part at its first use\n"
               "  --allow-nonfinite      run weights holding NaN/Inf codes or scales instead of failing\n"
               "  --overwrite            replace an existing output\n"
               "  --json                 print the report as JSON\n");
}

static int cmd_logits(int argc, char **argv) {
    const char *me = "eval logits";
    if (dsq_cmd_wants_help(argc, argv)) {
        logits_help(stdout);
        return DSQ_EXIT_OK;
    }
    dsq_eval_logits_options o;
    memset(&o, 0, sizeof o);
    dsq_eval_options_default(&o.eval);
    bool json = false;
    uint32_t decode_from = 0, prefill_chunk = 0;
    dsq_opt eval_opts[DSQ__CMD_EVAL_OPTS];
    dsq__cmd_eval_opts(&o.eval, eval_opts);
    dsq_opt opts[] = {
        DSQ_OPT_STR("--tokens", &o.tokens),
        DSQ_OPT_STR("--out", &o.out),
        DSQ_OPT_U32("--decode-from", &decode_from, 1, INT32_MAX),
        DSQ_OPT_U32("--prefill-chunk", &prefill_chunk, 1, INT32_MAX),
        DSQ_OPT_SIZE("--memory-budget", &o.memory_budget, 1, UINT64_MAX),
        DSQ_OPT_FLAG("--mtp", &o.mtp),
        DSQ_OPT_FLAG("--dump-hidden", &o.dump_hidden),
        DSQ_OPT_FLAG("--overwrite", &o.overwrite),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_MORE(eval_opts),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = me, .opts = opts, .pos = &o.model, .max_pos = 1, .min_pos = 1, .missing = "missing MODEL",
                         .dash_is_option = true};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    o.decode_from = decode_from;
    o.prefill_chunk = prefill_chunk;
    if (!o.tokens) return dsq_cmd_usage_error(me, "missing --tokens FILE");
    if (!o.out) return dsq_cmd_usage_error(me, "missing --out FILE");
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    dsq_eval_logits_report r;
    dsq_status s = dsq_eval_logits(&o, &r, &e);
    if (s) return dsq_cmd_exit(me, s, &e);
    double pre_tps = r.seconds_prefill > 0 ? r.prefill_tokens / r.seconds_prefill : 0;
    double dec_tps = r.seconds_decode > 0 ? r.decode_tokens / r.seconds_decode : 0;
    if (json) {
        printf("{\"out\": ");
        dsq_cmd_json_str(stdout, o.out);
        printf(", \"numerics\": \"%s\", \"kv_cache\": \"%s\", \"tokens\": %lld, \"rows\": %lld, \"vocab\": %llu, "
               "\"prefill_tokens\": %lld, \"prefill_seconds\": %.6f, \"prefill_tokens_per_s\": %.3f, "
               "\"decode_tokens\": %lld, \"decode_seconds\": %.6f, \"decode_tokens_per_s\": %.3f, \"mtp_seconds\": "
               "%.6f}\n",
               dsq_numerics_name(o.eval.numerics), dsq_kv_cache_name(r.kv_cache), (long long)r.n_tokens,
               (long long)r.rows, (unsigned long long)r.vocab, (long long)r.prefill_tokens, r.seconds_prefill, pre_tps,
               (long long)r.decode_tokens, r.seconds_decode, dec_tps, r.seconds_mtp);
    } else {
        printf("%s: logits [%lld, %llu] (%s numerics) from %lld tokens\n", o.out, (long long)r.rows,
               (unsigned long long)r.vocab, dsq_numerics_name(o.eval.numerics), (long long)r.n_tokens);
        printf("prefill %lld tokens in %.3f s (%.1f tok/s)", (long long)r.prefill_tokens, r.seconds_prefill, pre_tps);
        if (r.decode_tokens)
            printf(", decode %lld tokens in %.3f s (%.2f tok/s)", (long long)r.decode_tokens, r.seconds_decode,
                   dec_tps);
        if (o.mtp) printf(", MTP %.3f s", r.seconds_mtp);
        printf("\n");
    }
    return DSQ_EXIT_OK;
}

typedef struct subcommand {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} subcommand;

static const subcommand subs[] = {
    {"logits", cmd_logits, "logits of every position (prefill or decode), optional MTP and hidden states"},
    {"ppl", dsq__eval_ppl, "perplexity ± standard error over chunks of a text"},
    {"kld", dsq__eval_kld, "save a KL base (--save-base) or KL divergence against one (--base)"},
    {"diff", dsq__eval_diff, "per-block cosine/SQNR of two checkpoints' hidden states, then final KL"},
    {"mc", dsq__eval_mc, "multiple-choice accuracy (HellaSwag-style JSONL), flips against saved answers"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: dsq eval SUBCOMMAND MODEL [options]   (dsq eval SUBCOMMAND --help)\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) fprintf(f, "  %-8s %s\n", subs[i].name, subs[i].summary);
}

int dsq_cmd_eval(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? DSQ_EXIT_USAGE : DSQ_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(argc - 1, argv + 1);
    return dsq_cmd_usage_error("eval", "unknown subcommand '%s'", argv[1]);
}
