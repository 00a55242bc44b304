/* dsq-command: synth | write a random V4 checkpoint in the exact release layout for a config */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_config.h"
#include "dsq_synth.h"
#include "dsq_tokenizer.h"

static const char *CMD = "synth";

/* Read and check --tokenizer FILE before anything is written: it must load with the C tokenizer and
 * its ids must be below the config's vocab_size.  On success *json (heap) holds its bytes. */
static dsq_status read_tokenizer(const char *path, const char *config, char **json, size_t *len, dsq_err *err) {
    *json = NULL;
    dsq_v4_config cfg;
    DSQ_TRY(dsq_config_load(config, &cfg, NULL, err));
    DSQ_TRY(dsq_read_file(path, DSQ_TOK_MAX_JSON, json, len, err));
    dsq_tok *tok = NULL;
    dsq_status s = dsq_tok_load_json(*json, *len, path, NULL, &tok, err);
    if (s == DSQ_OK && dsq_tok_n_ids(tok) > cfg.vocab_size)
        s = dsq_err_set(err, DSQ_ERR_RANGE, "%s: token ids reach %u, above the vocab_size %llu of %s", path,
                        dsq_tok_n_ids(tok) - 1, (unsigned long long)cfg.vocab_size, config);
    dsq_tok_free(tok);
    if (s != DSQ_OK) {
        dsq_free(*json);
        *json = NULL;
    }
    return s;
}

static void usage(void) {
    printf("usage: dsq synth --config CONFIG --out DIR [--seed N] [--layers N] [--shard-size BYTES]\n"
           "                 [--tokenizer FILE] [--threads N] [--overwrite] [--json]\n"
           "\n"
           "Write a random DeepSeek-V4 checkpoint for CONFIG into DIR, in the exact release layout and\n"
           "dtypes: F8_E4M3 weights with E8M0 128x128 block scales, routed experts packed FP4 (I8) with\n"
           "E8M0 1x32 scales (FP8 experts and F32 scales when the config says so), BF16 norms / embed /\n"
           "head / gate / compressors / weights_proj, F32 hc / sink / ape / bias, I64 tid2eid. Values\n"
           "keep activations healthy (linear weights N(0, 1/fan_in), norms ~1, hyper-connections near\n"
           "identity; docs/commands.md lists every choice). The same seed gives the same bytes whatever\n"
           "the thread count.\n"
           "\n"
           "  --config FILE       config.json to follow (copied to DIR, adjusted by --layers)\n"
           "  --out DIR           output directory (created if missing)\n"
           "  --seed N            random seed (default 0)\n"
           "  --layers N          keep only the first N main layers (MTP blocks kept)\n"
           "  --shard-size BYTES  split into model-0000i-of-0000n.safetensors + index above this size\n"
           "                      (default 4G; suffixes K M G T)\n"
           "  --tokenizer FILE    copy this tokenizer.json into DIR (checked: it must load, and its ids\n"
           "                      must fit the config's vocab_size)\n"
           "  --threads N         worker threads (default: all cores)\n"
           "  --overwrite         replace an existing checkpoint in DIR\n"
           "  --json              print a JSON summary\n");
}

int dsq_cmd_synth(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        usage();
        return DSQ_EXIT_OK;
    }
    const char *config = NULL, *out = NULL, *tokenizer = NULL;
    dsq_synth_options opt = {0};
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        uint64_t v;
        if (!strcmp(a, "--config") && has_value)
            config = argv[++i];
        else if (!strcmp(a, "--out") && has_value)
            out = argv[++i];
        else if (!strcmp(a, "--tokenizer") && has_value)
            tokenizer = argv[++i];
        else if (!strcmp(a, "--seed") && has_value) {
            if (!dsq_cmd_parse_u64(argv[++i], &opt.seed)) return dsq_cmd_usage_error(CMD, "bad --seed '%s'", argv[i]);
        } else if (!strcmp(a, "--layers") && has_value) {
            if (!dsq_cmd_parse_u64(argv[++i], &v) || v == 0 || v > DSQ_MAX_LAYERS)
                return dsq_cmd_usage_error(CMD, "bad --layers '%s' (1..%d)", argv[i], DSQ_MAX_LAYERS);
            opt.layers = (int)v;
        } else if (!strcmp(a, "--shard-size") && has_value) {
            if (!dsq_cmd_parse_size(argv[++i], &opt.shard_size) || opt.shard_size == 0)
                return dsq_cmd_usage_error(CMD, "bad --shard-size '%s'", argv[i]);
        } else if (!strcmp(a, "--threads") && has_value) {
            if (!dsq_cmd_parse_u64(argv[++i], &v) || v == 0 || v > 1024)
                return dsq_cmd_usage_error(CMD, "bad --threads '%s'", argv[i]);
            opt.threads = (int)v;
        } else if (!strcmp(a, "--overwrite"))
            opt.overwrite = true;
        else if (!strcmp(a, "--json"))
            json = true;
        else
            return dsq_cmd_usage_error(CMD, "unknown or incomplete option '%s'", a);
    }
    if (!config) return dsq_cmd_usage_error(CMD, "--config is required");
    if (!out) return dsq_cmd_usage_error(CMD, "--out is required");
    opt.progress = true;
    dsq_signals_install();
    dsq_synth_result r;
    dsq_err err = DSQ_ERR_INIT;
    char *tok_json = NULL;
    size_t tok_len = 0;
    dsq_status s = tokenizer ? read_tokenizer(tokenizer, config, &tok_json, &tok_len, &err) : DSQ_OK;
    if (s == DSQ_OK) s = dsq_synth_write(config, out, &opt, &r, &err);
    if (s == DSQ_OK && tok_json) {
        char *tp = dsq_path_join(out, "tokenizer.json");
        s = tp ? dsq_write_file_atomic(tp, tok_json, tok_len, opt.overwrite, &err)
               : dsq_err_set(&err, DSQ_ERR_NOMEM, "out of memory");
        dsq_free(tp);
    }
    dsq_free(tok_json);
    if (s == DSQ_ERR_INTERRUPTED) {
        dsq_cmd_fail(CMD, &err);
        return DSQ_EXIT_INTERRUPTED;
    }
    if (s != DSQ_OK) return dsq_cmd_fail(CMD, &err);
    double mbps = r.seconds > 0 ? (double)r.bytes / r.seconds / 1e6 : 0;
    if (json) {
        printf("{\"out\":");
        dsq_cmd_json_str(stdout, out);
        printf(",\"tensors\":%zu,\"shards\":%zu,\"bytes\":%" PRIu64 ",\"seconds\":%.3f,\"mb_per_s\":%.1f,"
               "\"seed\":%" PRIu64 "}\n",
               r.n_tensors, r.n_shards, r.bytes, r.seconds, mbps, opt.seed);
    } else {
        printf("wrote %s: %zu tensors in %zu shard%s, %" PRIu64 " bytes in %.2f s (%.0f MB/s)\n", out, r.n_tensors,
               r.n_shards, r.n_shards == 1 ? "" : "s", r.bytes, r.seconds, mbps);
    }
    return DSQ_EXIT_OK;
}
