/* dsq-command: convert | convert a checkpoint into a .dsq container with a recipe */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "gguf_out.h"
#include "dsq_convert.h"
#include "dsq_gptq_calib.h"
#include "eval_metrics.h"
#include "dsq_imatrix_gguf.h"
#include "dsq_inventory.h"
#include <xxhash.h>

static void help(void) {
    printf("usage: dsq convert SRC OUT.dsq --recipe NAME|FILE [--override GLOB=ENCODING]... [--threads N]\n"
           "       dsq convert SRC OUT.gguf [--recipe GGUF-RECIPE] ...   (llama.cpp GGUF; dsq convert x.gguf --help)\n"
           "                   [--resume] [--dry-run] [--overwrite] [--buffered-io] [--force] [--allow-nonfinite] [--imatrix FILE] [--json]\n\n"
           "Re-encodes a DeepSeek-V4 checkpoint (a directory with config.json and safetensors shards) into a\n"
           ".dsq container, tensor by tensor with bounded memory.  Routed experts are stacked per layer and\n"
           "projection, compressor wkv|wgate fused.  The output appears only when complete and verified;\n"
           "Ctrl-C keeps .OUT.dsq.partial and a journal for --resume, which produces identical bytes.\n\n"
           "  --recipe NAME|FILE    built-in recipe (dsq recipes lists them) or a recipe JSON file\n"
           "  --override G=E        encoding E for tensors matching glob G (before the recipe's rules)\n"
           "  --threads N           encoding threads (default 1); the output does not depend on N\n"
           "  --chunk-bytes SIZE    source bytes re-encoded per step (default 32M, at least 128 rows);\n"
           "                        bounds memory, the output does not depend on it\n"
           "  --resume              continue an interrupted conversion of the same job\n"
           "  --dry-run             print the plan per family (encodings, bytes, size, free space, time)\n"
           "  --overwrite           replace OUT.dsq if it exists\n"
           "  --buffered-io         write through the page cache and verify at the end, instead of the\n"
           "                        default O_DIRECT writes read back in the background; same bytes\n"
           "  --force               allow re-encoding protected tensors (norms, hc_*, ape, sinks, bias, tid2eid)\n"
           "  --allow-nonfinite     store NaN/Inf instead of failing\n"
           "  --imatrix FILE        importance (dsq calibrate) for the k-quant targets: each weight's\n"
           "                        squared error weighted by its inputs' mean x^2 per column\n"
           "  --json                print the plan or the result as one JSON object\n"
           "  --method rtn|gptq     rounding of lossy targets (default rtn); gptq: error-compensating\n"
           "                        rounding layer by layer from calibration inputs (docs/commands.md)\n"
           "  --calib TEXT | --calib-tokens FILE   calibration text (tokenized with SRC's tokenizer) or ids\n"
           "  --calib-ctx N         tokens per calibration chunk (default 512)\n"
           "  --calib-chunks N      calibration chunks at most (default 0: every complete chunk)\n"
           "  --gptq-damp F         damping as a fraction of the mean Hessian diagonal (default 0.3)\n"
           "  --gptq-block N        lazy-update block in columns (default 128)\n"
           "  --act-order           quantize columns by decreasing Hessian diagonal\n"
           "  --gptq-expert-batch N routed experts per calibration pass (default 0: a whole layer); bounds\n"
           "                        the Hessians held, the output does not depend on it\n");
}

static void human(double b, char *out, size_t n) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(out, n, "%.2f %s", b, u[i]);
}

/* Assumed throughputs for the time estimate (MB/s): see bench/convert.c for measured ones. */
#define EST_COPY_MBPS 800.0
#define EST_ENCODE_MBPS 150.0

/* gptq: the GPTQ'd weights are also spilled next to the output until it is published (docs/commands.md),
 * at most the stored bytes of every re-encoded tensor: the free space must hold both. */
static void print_plan(const dsq_convert_plan *p, const char *out, bool json, bool gptq) {
    struct fam {
        uint64_t tensors, in, out;
        char encs[256];
    } f[DSQ_FAMILY_COUNT];
    memset(f, 0, sizeof f);
    for (size_t i = 0; i < dsq_convert_plan_count(p); i++) {
        const dsq_convert_item *it = dsq_convert_plan_item(p, i);
        struct fam *x = &f[it->family < DSQ_FAMILY_COUNT ? it->family : DSQ_FAMILY_OTHER];
        x->tensors++;
        x->in += it->bytes_in;
        x->out += it->bytes_out;
        char e[64];
        snprintf(e, sizeof e, "%s%s%s", dsq_ctr_encoding_name(it->src_enc), it->copy ? "" : "->",
                 it->copy ? "" : dsq_ctr_encoding_name(it->dst_enc));
        if (!strstr(x->encs, e) && strlen(x->encs) + strlen(e) + 2 < sizeof x->encs) {
            if (x->encs[0]) strcat(x->encs, ",");
            strcat(x->encs, e);
        }
    }
    uint64_t in, bout, file, spill = 0;
    dsq_convert_plan_totals(p, &in, &bout, &file);
    for (size_t i = 0; gptq && i < dsq_convert_plan_count(p); i++) {
        const dsq_convert_item *it = dsq_convert_plan_item(p, i);
        if (!it->copy) spill += it->bytes_out;
    }
    uint64_t freeb = dsq_convert_plan_free_space(p), need = file + spill;
    double secs = dsq_convert_plan_estimate_seconds(p, EST_COPY_MBPS, EST_ENCODE_MBPS);
    if (json) {
        printf("{\"output\": ");
        dsq_cmd_json_str(stdout, out);
        printf(", \"tensors\": %zu, \"bytes_in\": %llu, \"bytes_out\": %llu, \"file_bytes\": %llu, \"free_bytes\": %llu, "
               "\"spill_bytes_max\": %llu, \"enough_space\": %s, \"estimated_seconds\": %.1f, \"families\": [",
               dsq_convert_plan_count(p), (unsigned long long)in, (unsigned long long)bout, (unsigned long long)file,
               (unsigned long long)freeb, (unsigned long long)spill, freeb && freeb < need ? "false" : "true", secs);
        bool first = true;
        for (int k = 0; k < DSQ_FAMILY_COUNT; k++) {
            if (!f[k].tensors) continue;
            printf("%s{\"family\": \"%s\", \"encodings\": \"%s\", \"tensors\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu}",
                   first ? "" : ", ", dsq_family_name((dsq_family)k), f[k].encs, (unsigned long long)f[k].tensors,
                   (unsigned long long)f[k].in, (unsigned long long)f[k].out);
            first = false;
        }
        printf("]}\n");
        return;
    }
    printf("%-24s %-34s %8s %14s %14s\n", "family", "encoding", "tensors", "bytes in", "bytes out");
    for (int k = 0; k < DSQ_FAMILY_COUNT; k++) {
        if (!f[k].tensors) continue;
        char a[32], b[32];
        human((double)f[k].in, a, sizeof a);
        human((double)f[k].out, b, sizeof b);
        printf("%-24s %-34s %8llu %14s %14s\n", dsq_family_name((dsq_family)k), f[k].encs,
               (unsigned long long)f[k].tensors, a, b);
    }
    char a[32], b[32], c[32], d[32], e[64] = "";
    human((double)in, a, sizeof a);
    human((double)bout, b, sizeof b);
    human((double)file, c, sizeof c);
    human((double)freeb, d, sizeof d);
    if (gptq) {
        char h[32];
        human((double)spill, h, sizeof h);
        snprintf(e, sizeof e, " + GPTQ spill up to %s", h);
    }
    printf("total: %zu tensors, %s in -> %s stored; output file %s%s; free space %s%s; estimated time %.0f s\n",
           dsq_convert_plan_count(p), a, b, c, e, d, freeb && freeb < need ? " (NOT ENOUGH)" : "", secs);
}

/* XXH3-64 of a whole (small) file. */
static dsq_status file_xxh3(const char *path, uint64_t *out, dsq_err *err) {
    FILE *f = fopen(path, "rb");
    DSQ_RETURN_IF(!f, err, DSQ_ERR_IO, "%s: %s", path, strerror(errno));
    XXH3_state_t *x = XXH3_createState();
    XXH3_64bits_reset(x);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) XXH3_64bits_update(x, buf, n);
    bool bad = ferror(f);
    fclose(f);
    *out = XXH3_64bits_digest(x);
    XXH3_freeState(x);
    DSQ_RETURN_IF(bad, err, DSQ_ERR_IO, "%s: read error", path);
    return DSQ_OK;
}

/* Test hook: DSQ_CONVERT_TEST_SIGNAL="N:SIG" raises signal SIG after N tensors were written, so tests
 * interrupt (SIGINT) or kill (SIGKILL) a conversion at a chosen point. */
static void test_signal(void *ctx, size_t n) {
    const int *when = ctx;
    if ((size_t)when[0] == n) raise(when[1]);
}

static void gptq_progress(void *user, int layer, int n_layers, double seconds, size_t weights) {
    if (!*(const bool *)user)
        fprintf(stderr, "gptq: layer %d/%d: %zu weights quantized in %.1f s\n", layer + 1, n_layers, weights, seconds);
}

/* Layer-by-layer GPTQ over the calibration tokens (lib/eval/dsq_gptq_calib.h). */
static dsq_status run_gptq(const char *src, const dsq_recipe *recipe, const char *text, const char *tokens, uint64_t ctx,
                           uint64_t chunks, double damp, uint64_t block, bool act_order, int expert_batch, int threads, bool json,
                           const char *spill, dsq_gptq_result **out, dsq_err *err) {
    dsq_gptq_calib_options go;
    memset(&go, 0, sizeof go);
    dsq_gptq_options_default(&go.gptq);
    go.gptq.damp = damp;
    go.gptq.block = (int)block;
    go.gptq.act_order = act_order;
    go.expert_batch = expert_batch;
    go.spill = spill;
    go.gptq.threads = threads;
    dsq_score_options_default(&go.score);
    go.score.n_ctx = (uint32_t)ctx;
    go.score.max_chunks = (uint32_t)chunks;
    go.score.eval.threads = threads;
    go.progress = gptq_progress;
    go.user = &json;
    int32_t *ids = NULL;
    uint64_t n = 0;
    dsq_status s = dsq__cmd_load_tokens(src, text, tokens, dsq_score_text_bound(&go.score), &ids, &n, err);
    if (s == DSQ_OK) s = dsq_gptq_calibrate(src, recipe, ids, n, &go, out, err);
    dsq_free(ids);
    return s;
}

/* Per-method counts and the weights that fell back to importance-weighted rounding. */
static void gptq_summary(const dsq_gptq_result *r, bool json) {
    size_t n = dsq_gptq_result_count(r), count[3] = {0, 0, 0};
    uint64_t tokens;
    int layers;
    double spl;
    dsq_gptq_result_stats(r, &tokens, &layers, &spl);
    dsq_gptq_memory mem;
    dsq_gptq_result_memory(r, &mem);
    uint64_t nf;
    double fs, qs;
    dsq_gptq_result_timing(r, &nf, &fs, &qs);
    for (size_t i = 0; i < n; i++) count[dsq_gptq_result_at(r, i)->method]++;
    if (json) {
        printf("\"gptq\": {\"calibration_tokens\": %llu, \"layers\": %d, \"seconds_per_layer\": %.3f, \"gptq\": %zu, "
               "\"imatrix\": %zu, \"plain\": %zu, \"factorisations\": %llu, \"factor_seconds\": %.3f, "
               "\"quantize_seconds\": %.3f, \"spill_bytes\": %llu, \"held_peak_bytes\": %llu, "
               "\"largest_weight_bytes\": %llu, \"weights\": [",
               (unsigned long long)tokens, layers, spl, count[0], count[1], count[2], (unsigned long long)nf, fs, qs,
               (unsigned long long)mem.spill_bytes, (unsigned long long)mem.held_peak, (unsigned long long)mem.largest);
        for (size_t i = 0; i < n; i++) {
            const dsq_gptq_entry *e = dsq_gptq_result_at(r, i);
            printf("%s{\"name\": \"%s\", \"method\": \"%s\", \"rows\": %llu}", i ? ", " : "", e->name,
                   dsq_gptq_method_name(e->method), (unsigned long long)e->rows_seen);
        }
        printf("]}}\n");
        return;
    }
    printf("gptq: %llu calibration tokens, %d layers, %.1f s per layer; %zu weights by GPTQ, %zu by importance-"
           "weighted rounding, %zu plain (fewer than %d rows per input column for GPTQ)\n",
           (unsigned long long)tokens, layers, spl, count[0], count[1], count[2], DSQ_GPTQ_MIN_ROWS_PER_COL);
    printf("gptq: %llu Hessians factored (%.1f s), weights quantized in %.1f s (all layers)\n", (unsigned long long)nf, fs,
           qs);
    char a[32], b[32];
    human((double)mem.spill_bytes, a, sizeof a);
    human((double)mem.held_peak, b, sizeof b);
    printf("gptq: quantized weights spilled to a temporary file next to the output (%s, removed), at most %s in "
           "memory at once\n", a, b);
    for (size_t i = 0; i < n; i++) {
        const dsq_gptq_entry *e = dsq_gptq_result_at(r, i);
        if (e->method != DSQ_GPTQ_METHOD_GPTQ)
            printf("  %s: %s (%llu rows)\n", e->name, dsq_gptq_method_name(e->method), (unsigned long long)e->rows_seen);
    }
}

int dsq_cmd_convert(int argc, char **argv) {
    for (int i = 1; i < argc; i++) /* an OUT.gguf output: the GGUF writer's own options */
        if (argv[i][0] != '-' && dsq_cmd_is_gguf_path(argv[i])) {
            if (dsq_cmd_wants_help(argc, argv)) {
                dsq_cmd_gguf_help("convert");
                return DSQ_EXIT_OK;
            }
            return dsq_cmd_gguf_out("convert", argc, argv);
        }
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    const char *pos[2] = {NULL, NULL}, *recipe_name = NULL, *imatrix_path = NULL;
    static const char *const methods[] = {"rtn", "gptq", NULL};
    int method = 0, threads = 1;
    const char *calib = NULL, *calib_tokens = NULL;
    bool act_order = false;
    /* 0 = not given (both bounds start at 1 or above 0), for the "needs --method gptq" check */
    uint64_t calib_ctx = 0, calib_chunks = 0, gblock = 0, ebatch = 0;
    double damp = 0;
    const char *chunks_s = NULL;
    uint64_t chunk_bytes = 0;
    bool resume = false, dry = false, overwrite = false, force = false, nonfinite = false, json = false, buffered = false;
    dsq_opt_list overrides = {0};
    dsq_opt opts[] = {
        DSQ_OPT_STR("--recipe", &recipe_name),
        DSQ_OPT_LIST("--override", &overrides),
        DSQ_OPT_INT("--threads", &threads, 1, 1024),
        DSQ_OPT_SIZE("--chunk-bytes", &chunk_bytes, 1, UINT64_MAX),
        DSQ_OPT_FLAG("--resume", &resume),
        DSQ_OPT_FLAG("--dry-run", &dry),
        DSQ_OPT_FLAG("--overwrite", &overwrite),
        DSQ_OPT_FLAG("--buffered-io", &buffered),
        DSQ_OPT_FLAG("--force", &force),
        DSQ_OPT_FLAG("--allow-nonfinite", &nonfinite),
        DSQ_OPT_STR("--imatrix", &imatrix_path),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_ENUM("--method", &method, methods),
        DSQ_OPT_STR("--calib", &calib),
        DSQ_OPT_STR("--calib-tokens", &calib_tokens),
        DSQ_OPT_U64("--calib-ctx", &calib_ctx, 2, DSQ_SCORE_MAX_CTX),
        DSQ_OPT_STR("--calib-chunks", &chunks_s),
        DSQ_OPT_DOUBLE("--gptq-damp", &damp, 0, 10, DSQ_OPT_GT_MIN),
        DSQ_OPT_U64("--gptq-block", &gblock, 1, DSQ_GPTQ_MAX_BLOCK),
        DSQ_OPT_FLAG("--act-order", &act_order),
        DSQ_OPT_U64("--gptq-expert-batch", &ebatch, 0, 1u << 20),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = "convert", .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 2,
                         .missing = "need SRC and OUT.dsq"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    bool gptq = method == 1;
    if (chunks_s) { /* 0 = every chunk the calibration text holds */
        if (!dsq_opt_parse_u64(chunks_s, &calib_chunks) || calib_chunks > UINT32_MAX)
            rc = dsq_cmd_usage_error("convert", "--calib-chunks needs an integer 0..%u (0 = all), not '%s'",
                                     UINT32_MAX, chunks_s);
    }
    if (!rc && !recipe_name) rc = dsq_cmd_usage_error("convert", "--recipe is required");
    if (!rc && gptq && !calib == !calib_tokens)
        rc = dsq_cmd_usage_error("convert", "--method gptq needs --calib TEXT or --calib-tokens FILE (one of them)");
    if (!rc && !gptq && (calib || calib_tokens || calib_ctx || chunks_s || damp > 0 || gblock || act_order || ebatch))
        rc = dsq_cmd_usage_error("convert", "--calib, --calib-tokens, --calib-ctx, --calib-chunks, --gptq-damp, "
                                            "--gptq-block, --gptq-expert-batch and --act-order need --method gptq");
    if (rc) {
        dsq_opt_list_free(&overrides);
        return rc;
    }
    if (!calib_ctx) calib_ctx = 512;
    if (!gblock) gblock = DSQ_GPTQ_DEFAULT_BLOCK;
    if (!(damp > 0)) damp = DSQ_GPTQ_DEFAULT_DAMP;
    size_t n_over = overrides.n;
    const char **command = dsq_calloc(2 * n_over + 32, sizeof *command);
    if (!command) {
        dsq_opt_list_free(&overrides);
        return DSQ_EXIT_FAIL;
    }
    dsq_err err = DSQ_ERR_INIT;
    dsq_recipe *recipe = NULL;
    dsq_convert_plan *plan = NULL;
    dsq_gptq_result *gres = NULL;
    char src_abs[PATH_MAX];
    if (!realpath(pos[0], src_abs)) snprintf(src_abs, sizeof src_abs, "%s", pos[0]);
    /* canonical job arguments: what the output depends on (not --threads/--resume/--overwrite/OUT) */
    size_t nc = 0;
    const char *slash = strrchr(src_abs, '/');
    command[nc++] = "convert";
    command[nc++] = slash && slash[1] ? slash + 1 : src_abs;
    command[nc++] = "--recipe";
    command[nc++] = recipe_name;
    for (size_t k = 0; k < n_over; k++) command[nc++] = "--override", command[nc++] = overrides.v[k];
    if (force) command[nc++] = "--force";
    if (nonfinite) command[nc++] = "--allow-nonfinite";
    dsq_imatrix *imx = NULL;
    char imx_id[40];
    dsq_status s = DSQ_OK;
    if (imatrix_path) { /* the job depends on the imatrix's bytes, not its path (resume fingerprint) */
        uint64_t h = 0;
        s = dsq_imatrix_load_any(imatrix_path, &imx, &err);
        if (s == DSQ_OK) s = file_xxh3(imatrix_path, &h, &err);
        snprintf(imx_id, sizeof imx_id, "xxh3:%016llx", (unsigned long long)h);
        command[nc++] = "--imatrix";
        command[nc++] = imx_id;
    }
    char calib_id[40], damp_id[32], ctx_s[24], chunks_id[24], block_s[24];
    if (gptq && s == DSQ_OK) { /* the job depends on the calibration bytes and every GPTQ option */
        uint64_t h = 0;
        s = file_xxh3(calib ? calib : calib_tokens, &h, &err);
        snprintf(calib_id, sizeof calib_id, "xxh3:%016llx", (unsigned long long)h);
        snprintf(damp_id, sizeof damp_id, "%.17g", damp);
        snprintf(ctx_s, sizeof ctx_s, "%llu", (unsigned long long)calib_ctx);
        snprintf(chunks_id, sizeof chunks_id, "%llu", (unsigned long long)calib_chunks);
        snprintf(block_s, sizeof block_s, "%llu", (unsigned long long)gblock);
        command[nc++] = "--method", command[nc++] = "gptq";
        command[nc++] = calib ? "--calib" : "--calib-tokens", command[nc++] = calib_id;
        command[nc++] = "--calib-ctx", command[nc++] = ctx_s;
        command[nc++] = "--calib-chunks", command[nc++] = chunks_id;
        command[nc++] = "--gptq-damp", command[nc++] = damp_id;
        command[nc++] = "--gptq-block", command[nc++] = block_s;
        if (act_order) command[nc++] = "--act-order";
    }
    command[nc] = NULL;
    if (s == DSQ_OK) s = dsq_recipe_load(recipe_name, &recipe, &err);
    for (size_t k = 0; s == DSQ_OK && k < n_over; k++) s = dsq_recipe_override(recipe, overrides.v[k], &err);
    dsq_convert_options o = {.src = src_abs,
                             .out = pos[1],
                             .recipe = recipe,
                             .threads = threads,
                             .chunk_bytes = chunk_bytes,
                             .buffered_io = buffered,
                             .resume = resume,
                             .overwrite = overwrite,
                             .force = force,
                             .allow_nonfinite = nonfinite,
                             .imatrix = imx,
                             .command = command,
                             .progress = true};
    int when[2] = {0, 0};
    const char *hook = getenv("DSQ_CONVERT_TEST_SIGNAL");
    if (hook && sscanf(hook, "%d:%d", &when[0], &when[1]) == 2 && when[0] > 0) {
        o.after_tensor = test_signal;
        o.ctx = when;
    }
    if (s == DSQ_OK) s = dsq_convert_plan_make(&o, &plan, &err);
    if (s == DSQ_OK && dry) {
        print_plan(plan, pos[1], json, gptq);
    } else if (s == DSQ_OK) {
        dsq_signals_install();
        signal(SIGXFSZ, SIG_IGN); /* `ulimit -f`: writes (spill file, output) fail with EFBIG instead of killing us */
        char *spill = NULL; /* OUT.gptq-spill, next to the output (lib/eval/dsq_gptq_calib.h) */
        if (gptq && !(spill = dsq_malloc(strlen(pos[1]) + 16)))
            s = dsq_err_set(&err, DSQ_ERR_NOMEM, "out of memory");
        if (spill) sprintf(spill, "%s.gptq-spill", pos[1]);
        if (gptq && s == DSQ_OK)
            s = run_gptq(src_abs, recipe, calib, calib_tokens, calib_ctx, calib_chunks, damp, gblock, act_order,
                         (int)ebatch, (int)threads, json, spill, &gres, &err);
        dsq_free(spill); /* the result keeps only its descriptor (the name is unlinked at creation) */
        if (gptq && s == DSQ_OK) dsq_convert_plan_set_pre_encoded(plan, dsq_gptq_result_lookup, gres);
        dsq_convert_stats st;
        s = dsq_convert_run(plan, &st, &err);
        if (s == DSQ_OK) {
            if (json)
                printf("{\"output\": \"%s\", \"tensors\": %llu, \"resumed\": %llu, \"bytes_in\": %llu, \"bytes_out\": %llu, "
                       "\"file_bytes\": %llu, \"seconds\": %.3f%s",
                       pos[1], (unsigned long long)(st.tensors + st.tensors_resumed), (unsigned long long)st.tensors_resumed,
                       (unsigned long long)st.bytes_in, (unsigned long long)st.bytes_out,
                       (unsigned long long)st.file_bytes, st.seconds, gres ? ", " : "}\n");
            if (gres) gptq_summary(gres, json);
            if (!json) {
                char a[32], b[32];
                human((double)st.bytes_in, a, sizeof a);
                human((double)st.file_bytes, b, sizeof b);
                printf("%s: %llu tensors (%llu resumed), %s in -> %s, %.1f s\n", pos[1],
                       (unsigned long long)(st.tensors + st.tensors_resumed), (unsigned long long)st.tensors_resumed, a, b,
                       st.seconds);
            }
        }
    }
    if (s == DSQ_ERR_INTERRUPTED) {
        dsq_err_print(&err, stderr, "dsq convert: ");
        dsq_err_clear(&err);
        rc = DSQ_EXIT_INTERRUPTED;
    } else if (s != DSQ_OK) {
        rc = dsq_cmd_fail("convert", &err);
    }
    dsq_convert_plan_free(plan);
    dsq_gptq_result_free(gres);
    dsq_imatrix_free(imx);
    dsq_recipe_free(recipe);
    dsq_opt_list_free(&overrides);
    dsq_free(command);
    return rc;
}
