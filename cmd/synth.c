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
    printf("usage: dsq synth --config CONFIG --out DIR [--seed N] [--layers N] [--from-layer K]\n"
           "                 [--shard-size BYTES] [--tokenizer FILE] [--threads N] [--overwrite] [--json]\n"
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
           "  --layers N          keep only N main layers (from --from-layer; MTP blocks kept)\n"
           "  --from-layer K      the first main layer kept (default 0): --from-layer 2 --layers 2 of\n"
           "                      V4-Flash keeps its layers 2 (CSA) and 3 (HCA), renumbered 0 and 1\n"
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
    dsq_opt opts[] = {
        DSQ_OPT_STR("--config", &config),
        DSQ_OPT_STR("--out", &out),
        DSQ_OPT_STR("--tokenizer", &tokenizer),
        DSQ_OPT_U64("--seed", &opt.seed, 0, UINT64_MAX),
        DSQ_OPT_INT("--layers", &opt.layers, 1, DSQ_MAX_LAYERS),
        DSQ_OPT_INT("--from-layer", &opt.first_layer, 0, DSQ_MAX_LAYERS - 1),
        DSQ_OPT_SIZE("--shard-size", &opt.shard_size, 1, UINT64_MAX),
        DSQ_OPT_INT("--threads", &opt.threads, 1, 1024),
        DSQ_OPT_FLAG("--overwrite", &opt.overwrite),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = CMD, .opts = opts, .dash_is_option = true};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
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
    if (s != DSQ_OK) return dsq_cmd_exit(CMD, s, &err);
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
