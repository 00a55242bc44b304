/* `dsq export FILE OUT.gguf` and `dsq convert SRC OUT.gguf`: the GGUF writer's command line (shared
 * by cmd/export.c and cmd/convert.c; not a command of its own). */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "dsq_gguf.h"
#include "dsq_gguf_export.h"
#include "dsq_imatrix.h"
#include "dsq_imatrix_gguf.h"
#include "gguf_out.h"

bool dsq_cmd_is_gguf_path(const char *p) {
    size_t n = strlen(p);
    return n > 5 && !strcmp(p + n - 5, ".gguf");
}

void dsq_cmd_gguf_help(const char *cmd) {
    printf("usage: dsq %s %s OUT.gguf [--recipe NAME] [--imatrix FILE] [--no-mtp] [--split-max-size SIZE]\n"
           "                  [--threads N] [--dry-run] [--overwrite] [--buffered-io] [--json]\n\n"
           "Writes a GGUF for llama.cpp's deepseek4 architecture (hparams, tensor names and ne shapes of\n"
           "llama.cpp build 10257, MTP blocks as blk.N.nextn.*, tokenizer.ggml.* from tokenizer.json,\n"
           "general.* and dsq.* provenance), tensor by tensor with one slab of rows in memory, published\n"
           "atomically after every file was re-read.  docs/interop.md has the mapping.\n\n"
           "  --recipe NAME         GGUF recipe (default gguf-keep: lossless twins of the stored encodings):\n",
           cmd, !strcmp(cmd, "export") ? "FILE.dsq" : "SRC");
    for (const dsq_gguf_recipe *r = dsq_gguf_recipes(); r->name; r++) printf("                          %-16s %s\n", r->name, r->summary);
    printf("  --imatrix FILE        importance (dsq calibrate, or llama.cpp imatrix GGUF) weighting the fit of\n"
           "                        the k-quant targets (Q2_K..Q6_K); other types ignore it\n"
           "  --no-mtp              leave the MTP blocks out\n"
           "  --split-max-size SIZE llama.cpp split files OUT-0000i-of-0000n.gguf of at most SIZE (K/M/G/T)\n"
           "  --dry-run             print tensors, files and bytes; write nothing\n"
           "  --overwrite           replace existing outputs\n"
           "  --buffered-io         write through the page cache (default: tensor data by O_DIRECT)\n"
           "  --json                one JSON object on stdout\n");
}

static void print_stats(const char *out, const dsq_gguf_export_stats *s, bool dry, bool json) {
    if (json) {
        printf("{\"output\": ");
        dsq_cmd_json_str(stdout, out);
        printf(", \"dry_run\": %s, \"tensors\": %zu, \"files\": %u, \"bytes\": %llu, \"tensor_bytes\": %llu, "
               "\"values\": %llu, \"lossless_values\": %llu, \"rel_rms_err\": %.6g, \"max_abs_err\": %.6g, "
               "\"n_vocab\": %u, \"n_merges\": %u, \"types\": {",
               dry ? "true" : "false", s->tensors, s->files, (unsigned long long)s->bytes,
               (unsigned long long)s->tensor_bytes, (unsigned long long)s->params, (unsigned long long)s->lossless_values,
               s->rel_rms_err, s->max_abs_err, s->n_vocab, s->n_merges);
        bool first = true;
        for (int t = 0; t < DSQ_GGUF_EXPORT_TYPES; t++)
            if (s->by_type[t]) {
                printf("%s\"%s\": %llu", first ? "" : ", ", dsq_ggml_type_name((uint32_t)t), (unsigned long long)s->by_type[t]);
                first = false;
            }
        printf("}}\n");
        return;
    }
    printf("%s%s: %zu tensors in %u file(s), %llu bytes (%llu of tensor data)\n", dry ? "dry run: " : "", out, s->tensors,
           s->files, (unsigned long long)s->bytes, (unsigned long long)s->tensor_bytes);
    printf("  types:");
    for (int t = 0; t < DSQ_GGUF_EXPORT_TYPES; t++)
        if (s->by_type[t]) printf(" %s %llu", dsq_ggml_type_name((uint32_t)t), (unsigned long long)s->by_type[t]);
    printf("\n");
    if (!dry)
        printf("  values: %llu, %llu moved losslessly; re-quantized: relative RMS error %.3g, max |err| %.3g\n",
               (unsigned long long)s->params, (unsigned long long)s->lossless_values, s->rel_rms_err, s->max_abs_err);
}

int dsq_cmd_gguf_out(const char *cmd, int argc, char **argv) {
    const char *pos[2] = {NULL, NULL};
    dsq_gguf_export_options o = {.progress = true};
    bool json = false;
    const char *imatrix_path = NULL;
    char cmdline[2048] = "dsq";
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(cmdline);
        snprintf(cmdline + l, sizeof cmdline - l, " %s", argv[i]);
    }
    static const char *const formats[] = {"gguf", NULL}; /* an OUT.gguf output is written as gguf */
    int format = 0;
    dsq_opt opts[] = {
        DSQ_OPT_STR("--recipe", &o.recipe),
        DSQ_OPT_STR("--imatrix", &imatrix_path),
        DSQ_OPT_FLAG("--no-mtp", &o.no_mtp),
        DSQ_OPT_SIZE("--split-max-size", &o.split_max_bytes, 1, UINT64_MAX),
        DSQ_OPT_INT("--threads", &o.threads, 1, 1024),
        DSQ_OPT_ENUM("--format", &format, formats),
        DSQ_OPT_FLAG("--dry-run", &o.dry_run),
        DSQ_OPT_FLAG("--overwrite", &o.overwrite),
        DSQ_OPT_FLAG("--buffered-io", &o.buffered_io),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = cmd, .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 2, .missing = "need SRC and OUT.gguf"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    if (o.recipe && !dsq_gguf_recipe_find(o.recipe)) {
        fprintf(stderr, "dsq %s: unknown GGUF recipe '%s'; GGUF recipes:", cmd, o.recipe);
        for (const dsq_gguf_recipe *r = dsq_gguf_recipes(); r->name; r++) fprintf(stderr, " %s", r->name);
        fprintf(stderr, "\n");
        return DSQ_EXIT_USAGE;
    }
    o.command_line = cmdline;
    dsq_signals_install();
    dsq_err err = DSQ_ERR_INIT;
    dsq_gguf_export_stats st;
    dsq_imatrix *imx = NULL;
    dsq_status s = imatrix_path ? dsq_imatrix_load_any(imatrix_path, &imx, &err) : DSQ_OK;
    o.imatrix = imx;
    if (s == DSQ_OK) s = dsq_gguf_export(pos[0], pos[1], &o, &st, &err);
    dsq_imatrix_free(imx);
    if (s != DSQ_OK) return dsq_cmd_exit(cmd, s, &err);
    print_stats(pos[1], &st, o.dry_run, json);
    dsq_err_clear(&err);
    return DSQ_EXIT_OK;
}
