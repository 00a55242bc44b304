/* dsq-command: inspect | geometry, parameters, bytes and layer kinds of a checkpoint or config */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_imatrix_gguf.h"
#include "dsq_inventory.h"
#include "dsq_safetensors.h"
#include "dsq_wsrc.h"
#include "dsq_v4.h"
#include "inspect.h"

static const char *CMD = "inspect";

static void usage(void) {
    printf("usage: dsq inspect PATH [--tensors] [--check] [--json] [--config CONFIG]\n"
           "       dsq inspect --config CONFIG [--tensors] [--json]\n"
           "\n"
           "Describe a DeepSeek-V4 checkpoint from its headers alone (tensor data is never read):\n"
           "geometry, parameters (total and active per token), bytes by dtype and by tensor family,\n"
           "each layer's attention kind (sliding/CSA/HCA), compress ratio and routing (hash/score),\n"
           "and the KV-cache bytes per token of context.\n"
           "\n"
           "PATH is a checkpoint directory (model.safetensors.index.json or one *.safetensors file)\n"
           "or a single .safetensors file; its config.json is read from the same directory.\n"
           "\n"
           "  --config FILE  use this config.json (alone: describe the model the config defines)\n"
           "  --tensors      list every tensor: name, dtype, shape, bytes\n"
           "  --check        verify the tensor inventory against the config; every missing,\n"
           "                 unexpected, wrong-dtype or wrong-shape tensor is one line on stderr,\n"
           "                 exit status 1 if there is any\n"
           "  --json         print one JSON object instead of text\n"
           "\n"
           "Parameters count the main model (MTP blocks reported apart, as in the published sizes);\n"
           "packed FP4 bytes are two parameters; scales and tid2eid are not parameters. Active per\n"
           "token excludes the embedding table and all but k of the E routed experts per layer.\n");
}

/* ---- sources ---------------------------------------------------------------------------------
 * What inspect describes: a tensor listing, optionally with a config.  A new kind of checkpoint
 * (the .dsq container) adds an opener here; everything below works on the listing. */
typedef struct source {
    const char *kind; /* "safetensors", "config" */
    char *path;
    dsq_tensor_desc *tensors; /* NULL for a config alone */
    size_t n_tensors;
    size_t n_shards;
    dsq_st *st;
    dsq_inv *expected; /* config alone: the expected inventory stands in for the tensors */
    bool has_config;
    char *config_path;
    dsq_v4_config cfg;
} source;

static void source_close(source *s) {
    dsq_free(s->tensors);
    dsq_inv_free(s->expected);
    dsq_st_close(s->st);
    free(s->path);
    free(s->config_path);
    memset(s, 0, sizeof *s);
}

static dsq_status load_config(source *s, const char *path, dsq_err *err) {
    char *warn = NULL;
    dsq_status st = dsq_config_load(path, &s->cfg, &warn, err);
    if (warn) {
        /* one line per warning, prefixed like every other diagnostic */
        for (char *line = strtok(warn, "\n"); line; line = strtok(NULL, "\n"))
            fprintf(stderr, "dsq %s: %s: warning: %s\n", CMD, path, line);
        dsq_free(warn);
    }
    if (st != DSQ_OK) return st;
    s->has_config = true;
    s->config_path = strdup(path);
    return DSQ_OK;
}

static dsq_status open_config_only(source *s, const char *config_path, dsq_err *err) {
    s->kind = "config";
    s->path = strdup(config_path);
    DSQ_TRY(load_config(s, config_path, err));
    DSQ_TRY(dsq_inv_expected(&s->cfg, NULL, &s->expected, err));
    return dsq_inv_describe(s->expected, &s->tensors, &s->n_tensors, err);
}

static dsq_status open_safetensors(source *s, const char *path, const char *config_path, dsq_err *err) {
    s->kind = "safetensors";
    s->path = strdup(path);
    DSQ_TRY(dsq_st_open(path, NULL, &s->st, err));
    s->n_shards = dsq_st_shard_count(s->st);
    DSQ_TRY(dsq_inv_describe_st(s->st, &s->tensors, &s->n_tensors, err));
    if (config_path) return load_config(s, config_path, err);
    char *cp = dsq_path_join(dsq_st_dir(s->st), "config.json");
    if (!cp) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    dsq_status st = dsq_path_exists(cp) ? load_config(s, cp, err) : DSQ_OK;
    dsq_free(cp);
    return st;
}

/* ---- printing ---------------------------------------------------------------------------------- */

static void human(double v, const char *const *units, int n_units, double base, char *buf, size_t n) {
    int u = 0;
    while (v >= base && u < n_units - 1) {
        v /= base;
        u++;
    }
    snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}
static const char *hbytes(uint64_t b, char *buf, size_t n) {
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    human((double)b, units, 5, 1000.0, buf, n);
    return buf;
}
static const char *hcount(uint64_t c, char *buf, size_t n) {
    static const char *const units[] = {"", "K", "M", "B", "T"};
    human((double)c, units, 5, 1000.0, buf, n);
    size_t len = strlen(buf);
    if (len && buf[len - 1] == ' ') buf[len - 1] = 0;
    return buf;
}

static void shape_str(const dsq_tensor_desc *t, char *buf, size_t n) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->rank && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%" PRIu64, i ? ", " : "", t->shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

typedef struct report {
    dsq_inv_stats stats;
    dsq_param_counts cfg_params;
    dsq_kv_bytes kv;
    bool checked;
    dsq_status check_status;
    dsq_inv_report check;
} report;

/* The per-block table, shared with the .dsq view (cmd/inspect_dsq.c). */
void dsq__inspect_layers_text(const dsq_v4_config *cf) {
    printf("layers:      block  attention  ratio  routing\n");
    for (int i = 0; i < cf->n_layers + cf->n_mtp_layers; i++) {
        char name[32];
        if (i < cf->n_layers)
            snprintf(name, sizeof name, "%d", i);
        else
            snprintf(name, sizeof name, "mtp.%d", i - cf->n_layers);
        printf("             %-6s %-10s %5d  %s\n", name, dsq_attn_kind_name(dsq_config_attn_kind(cf, i)),
               dsq_config_ratio(cf, i), dsq_routing_name(dsq_config_routing(cf, i)));
    }
}

/* ,"layers":[...],"mtp_layers":[...] — main blocks, then MTP blocks indexed from 0. */
void dsq__inspect_layers_json(const dsq_v4_config *cf) {
    for (int pass = 0; pass < 2; pass++) {
        printf(pass ? "],\"mtp_layers\":[" : ",\"layers\":[");
        int from = pass ? cf->n_layers : 0, to = pass ? cf->n_layers + cf->n_mtp_layers : cf->n_layers;
        for (int i = from; i < to; i++)
            printf("%s{\"index\":%d,\"attention\":\"%s\",\"compress_ratio\":%d,\"routing\":\"%s\"}",
                   i > from ? "," : "", pass ? i - cf->n_layers : i, dsq_attn_kind_name(dsq_config_attn_kind(cf, i)),
                   dsq_config_ratio(cf, i), dsq_routing_name(dsq_config_routing(cf, i)));
    }
    printf("]");
}

/* Context lengths of the KV-cache table (issue 11: 8K, 128K, 1M tokens). */
static const uint64_t kv_table_tokens[] = {8192, 131072, 1048576};
enum { KV_TABLE_N = sizeof kv_table_tokens / sizeof kv_table_tokens[0] };

static uint64_t kv_seq_bytes(const dsq_v4_config *cf, dsq_kv_cache k, uint64_t tokens) {
    double bpt = 0;
    uint64_t fixed = 0;
    dsq_kv_declared(cf, k, &bpt, &fixed);
    return fixed + (uint64_t)(bpt * (double)tokens + 0.5);
}

/* One sequence's cache bytes per evaluator cache encoding (dsq_kv_declared), both views. */
void dsq__inspect_kv_text(const dsq_v4_config *cf) {
    char a[64];
    printf("KV bytes:    encoding      per token         8K       128K         1M  (one sequence, all blocks)\n");
    for (int k = 0; k < DSQ_KV_CACHE_COUNT; k++) {
        double bpt = 0;
        uint64_t fixed = 0;
        dsq_kv_declared(cf, (dsq_kv_cache)k, &bpt, &fixed);
        printf("             %-12s %10.2f", dsq_kv_cache_name((dsq_kv_cache)k), bpt);
        for (int i = 0; i < KV_TABLE_N; i++)
            printf(" %10s", hbytes(kv_seq_bytes(cf, (dsq_kv_cache)k, kv_table_tokens[i]), a, sizeof a));
        printf("\n");
    }
}

/* ,"kv_cache_bytes":{"f32":{"bytes_per_token":…,"fixed_bytes":…,"tokens_8192":…,…},…} */
void dsq__inspect_kv_json(const dsq_v4_config *cf) {
    printf(",\"kv_cache_bytes\":{");
    for (int k = 0; k < DSQ_KV_CACHE_COUNT; k++) {
        double bpt = 0;
        uint64_t fixed = 0;
        dsq_kv_declared(cf, (dsq_kv_cache)k, &bpt, &fixed);
        printf("%s\"%s\":{\"bytes_per_token\":%.4f,\"fixed_bytes\":%" PRIu64, k ? "," : "",
               dsq_kv_cache_name((dsq_kv_cache)k), bpt, fixed);
        for (int i = 0; i < KV_TABLE_N; i++)
            printf(",\"tokens_%" PRIu64 "\":%" PRIu64, kv_table_tokens[i],
                   kv_seq_bytes(cf, (dsq_kv_cache)k, kv_table_tokens[i]));
        printf("}");
    }
    printf("}");
}

static void print_text(const source *s, const report *r, bool list_tensors) {
    char a[64], b[64], c[64], d[64];
    const dsq_v4_config *cf = &s->cfg;
    if (s->st)
        printf("checkpoint:  %s (safetensors, %zu shard%s, %zu tensors, %s)\n", s->path, s->n_shards,
               s->n_shards == 1 ? "" : "s", s->n_tensors, hbytes(r->stats.bytes_total, a, sizeof a));
    else
        printf("model:       defined by %s (expected inventory: %zu tensors, %s)\n", s->path, s->n_tensors,
               hbytes(r->stats.bytes_total, a, sizeof a));
    if (s->has_config) {
        if (s->st) printf("config:      %s\n", s->config_path);
        printf("geometry:    vocab %" PRIu64 ", dim %" PRIu64 ", %d layers + %d MTP, %d heads x %d (rope %d), "
               "q_lora %d, o_groups %d x %d\n",
               cf->vocab_size, cf->dim, cf->n_layers, cf->n_mtp_layers, cf->n_heads, cf->head_dim, cf->rope_head_dim,
               cf->q_lora_rank, cf->o_groups, cf->o_lora_rank);
        printf("             experts %d routed (top-%d) + %d shared, inner %d, %s; %d hash layers; window %d; "
               "indexer %d x %d top-%d; hc %d\n",
               cf->n_routed_experts, cf->n_activated_experts, cf->n_shared_experts, cf->moe_inter_dim,
               cf->expert_fp4 ? "FP4" : "FP8", cf->n_hash_layers, cf->window_size, cf->index_n_heads,
               cf->index_head_dim, cf->index_topk, cf->hc_mult);
    } else {
        printf("config:      none found next to the checkpoint (use --config): geometry unknown\n");
    }
    const dsq_param_counts *p = &r->stats.params;
    printf("parameters:  %s total, %s active per token (main model); MTP %s (%s active)\n",
           hcount(p->total, a, sizeof a), hcount(p->active, b, sizeof b), hcount(p->total_mtp, c, sizeof c),
           hcount(p->active_mtp, d, sizeof d));
    if (s->st && s->has_config && (p->total != r->cfg_params.total || p->active != r->cfg_params.active))
        printf("             the config defines %s total, %s active: the tensors do not match it\n",
               hcount(r->cfg_params.total, a, sizeof a), hcount(r->cfg_params.active, b, sizeof b));
    printf("bytes:       %s (%" PRIu64 ")\n", hbytes(r->stats.bytes_total, a, sizeof a), r->stats.bytes_total);
    printf("by dtype:\n");
    for (int t = 0; t < DSQ_DTYPE_COUNT; t++)
        if (r->stats.bytes_by_dtype[t])
            printf("  %-22s %12s  %5.1f%%\n", dsq_dtype_name((dsq_dtype)t),
                   hbytes(r->stats.bytes_by_dtype[t], a, sizeof a),
                   100.0 * (double)r->stats.bytes_by_dtype[t] /
                       (double)(r->stats.bytes_total ? r->stats.bytes_total : 1));
    printf("by family:\n");
    for (int f = 0; f < DSQ_FAMILY_COUNT; f++)
        if (r->stats.bytes_by_family[f])
            printf("  %-22s %12s  %5.1f%%\n", dsq_family_name((dsq_family)f),
                   hbytes(r->stats.bytes_by_family[f], a, sizeof a),
                   100.0 * (double)r->stats.bytes_by_family[f] /
                       (double)(r->stats.bytes_total ? r->stats.bytes_total : 1));
    if (s->has_config) {
        dsq__inspect_layers_text(cf);
        printf("KV cache:    %.1f B per token (compact; %.0f B bf16), fixed %s per sequence (compact; %s bf16)\n",
               r->kv.per_token_compact, r->kv.per_token_bf16, hbytes(r->kv.fixed_compact, a, sizeof a),
               hbytes(r->kv.fixed_bf16, b, sizeof b));
        dsq__inspect_kv_text(cf);
    }
    if (list_tensors) {
        printf("tensors:\n");
        for (size_t i = 0; i < s->n_tensors; i++) {
            const dsq_tensor_desc *t = &s->tensors[i];
            char sh[160];
            shape_str(t, sh, sizeof sh);
            printf("  %s %s %s %" PRIu64 "\n", t->name, dsq_dtype_name(t->dtype), sh, t->n_bytes);
        }
    }
    if (r->checked) {
        if (r->check_status == DSQ_OK)
            printf("check:       ok: %zu tensors match the inventory of the config%s\n", s->n_tensors,
                   r->check.n_ignored ? " (MTP copies ignored)" : "");
        else
            printf(
                "check:       FAILED: %zu missing, %zu unexpected, %zu wrong dtype, %zu wrong shape, %zu duplicate\n",
                r->check.n_missing, r->check.n_unexpected, r->check.n_dtype, r->check.n_shape, r->check.n_duplicate);
    }
}

static void json_u64_member(const char *key, uint64_t v, bool comma) {
    printf("%s\"%s\":%" PRIu64, comma ? "," : "", key, v);
}

static void print_json(const source *s, const report *r, bool list_tensors) {
    const dsq_v4_config *cf = &s->cfg;
    printf("{\"source\":");
    dsq_cmd_json_str(stdout, s->kind);
    printf(",\"path\":");
    dsq_cmd_json_str(stdout, s->path);
    if (s->has_config) {
        printf(",\"config\":");
        dsq_cmd_json_str(stdout, s->config_path);
    }
    printf(",\"tensors\":%zu", s->n_tensors);
    if (s->st) printf(",\"shards\":%zu", s->n_shards);
    json_u64_member("bytes", r->stats.bytes_total, true);
    const dsq_param_counts *p = &r->stats.params;
    json_u64_member("params_total", p->total, true);
    json_u64_member("params_active", p->active, true);
    json_u64_member("params_total_mtp", p->total_mtp, true);
    json_u64_member("params_active_mtp", p->active_mtp, true);
    json_u64_member("params_routed_experts", p->routed_experts, true);
    printf(",\"bytes_by_dtype\":{");
    bool first = true;
    for (int t = 0; t < DSQ_DTYPE_COUNT; t++)
        if (r->stats.bytes_by_dtype[t]) {
            printf("%s\"%s\":%" PRIu64, first ? "" : ",", dsq_dtype_name((dsq_dtype)t), r->stats.bytes_by_dtype[t]);
            first = false;
        }
    printf("},\"bytes_by_family\":{");
    first = true;
    for (int f = 0; f < DSQ_FAMILY_COUNT; f++)
        if (r->stats.bytes_by_family[f]) {
            printf("%s\"%s\":%" PRIu64, first ? "" : ",", dsq_family_name((dsq_family)f), r->stats.bytes_by_family[f]);
            first = false;
        }
    printf("}");
    if (s->has_config) {
        printf(",\"n_layers\":%d,\"n_mtp_layers\":%d", cf->n_layers, cf->n_mtp_layers);
        printf(",\"geometry\":{\"vocab_size\":%" PRIu64 ",\"dim\":%" PRIu64 ",\"n_heads\":%d,\"head_dim\":%d,"
               "\"rope_head_dim\":%d,\"q_lora_rank\":%d,\"o_groups\":%d,\"o_lora_rank\":%d,\"n_routed_experts\":%d,"
               "\"n_activated_experts\":%d,\"moe_inter_dim\":%d,\"n_hash_layers\":%d,\"window_size\":%d,"
               "\"index_n_heads\":%d,\"index_head_dim\":%d,\"index_topk\":%d,\"hc_mult\":%d,\"expert_dtype\":\"%s\"}",
               cf->vocab_size, cf->dim, cf->n_heads, cf->head_dim, cf->rope_head_dim, cf->q_lora_rank, cf->o_groups,
               cf->o_lora_rank, cf->n_routed_experts, cf->n_activated_experts, cf->moe_inter_dim, cf->n_hash_layers,
               cf->window_size, cf->index_n_heads, cf->index_head_dim, cf->index_topk, cf->hc_mult,
               cf->expert_fp4 ? "fp4" : "fp8");
        json_u64_member("config_params_total", r->cfg_params.total, true);
        json_u64_member("config_params_active", r->cfg_params.active, true);
        dsq__inspect_layers_json(cf);
        printf(",\"kv_bytes_per_token\":%.4f,\"kv_bytes_per_token_bf16\":%.4f", r->kv.per_token_compact,
               r->kv.per_token_bf16);
        json_u64_member("kv_fixed_bytes", r->kv.fixed_compact, true);
        json_u64_member("kv_fixed_bytes_bf16", r->kv.fixed_bf16, true);
        dsq__inspect_kv_json(cf);
    }
    if (r->checked)
        printf(",\"check\":{\"ok\":%s,\"missing\":%zu,\"unexpected\":%zu,\"dtype\":%zu,\"shape\":%zu,"
               "\"duplicate\":%zu,\"ignored\":%zu}",
               r->check_status == DSQ_OK ? "true" : "false", r->check.n_missing, r->check.n_unexpected,
               r->check.n_dtype, r->check.n_shape, r->check.n_duplicate, r->check.n_ignored);
    if (list_tensors) {
        printf(",\"tensor_list\":[");
        for (size_t i = 0; i < s->n_tensors; i++) {
            const dsq_tensor_desc *t = &s->tensors[i];
            printf("%s{\"name\":", i ? "," : "");
            dsq_cmd_json_str(stdout, t->name);
            printf(",\"dtype\":\"%s\",\"shape\":[", dsq_dtype_name(t->dtype));
            for (int d = 0; d < t->rank; d++) printf("%s%" PRIu64, d ? "," : "", t->shape[d]);
            printf("],\"bytes\":%" PRIu64 "}", t->n_bytes);
        }
        printf("]");
    }
    printf("}\n");
}

int dsq_cmd_inspect(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        usage();
        return DSQ_EXIT_OK;
    }
    const char *path = NULL, *config = NULL;
    bool json = false, list = false, check = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--tensors"))
            list = true;
        else if (!strcmp(argv[i], "--check"))
            check = true;
        else if (!strcmp(argv[i], "--config")) {
            if (++i >= argc) return dsq_cmd_usage_error(CMD, "--config needs a file");
            config = argv[i];
        } else if (argv[i][0] == '-' && argv[i][1])
            return dsq_cmd_usage_error(CMD, "unknown option '%s'", argv[i]);
        else if (path)
            return dsq_cmd_usage_error(CMD, "more than one PATH ('%s', '%s')", path, argv[i]);
        else
            path = argv[i];
    }
    if (!path && !config) return dsq_cmd_usage_error(CMD, "give a checkpoint PATH or --config FILE");
    if (!path && check) return dsq_cmd_usage_error(CMD, "--check needs a checkpoint PATH");

    if (path && !config && dsq_ctr_sniff(path)) return dsq__inspect_dsq(path, json, list, check);
    if (path && !config && dsq_imatrix_gguf_sniff(path)) return dsq__inspect_imatrix(path, json);
    if (path && !config && dsq_wsrc_sniff_gguf(path)) return dsq__inspect_gguf(path, json, list);
    size_t plen = path ? strlen(path) : 0;
    if (path && !config && plen > 8 && !strcmp(path + plen - 8, ".imatrix")) return dsq__inspect_imatrix(path, json);

    source s = {0};
    dsq_err err = DSQ_ERR_INIT;
    dsq_status st = path ? open_safetensors(&s, path, config, &err) : open_config_only(&s, config, &err);
    if (st != DSQ_OK) {
        source_close(&s);
        return dsq_cmd_fail(CMD, &err);
    }
    if (check && !s.has_config) {
        source_close(&s);
        fprintf(stderr, "dsq %s: %s: no config.json next to the checkpoint: --check needs one (--config FILE)\n", CMD,
                path);
        return DSQ_EXIT_FAIL;
    }
    report r = {0};
    dsq_inv_stats_compute(s.has_config ? &s.cfg : NULL, s.tensors, s.n_tensors, &r.stats);
    if (s.has_config) {
        dsq_config_params(&s.cfg, &r.cfg_params);
        dsq_config_kv_bytes(&s.cfg, &r.kv);
    }
    int rc = DSQ_EXIT_OK;
    if (check) {
        r.checked = true;
        r.check_status = dsq_inv_check(&s.cfg, s.tensors, s.n_tensors, s.path, &r.check, &err);
        if (r.check_status != DSQ_OK) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "dsq %s: ", CMD);
            dsq_err_print(&err, stderr, prefix);
            rc = DSQ_EXIT_FAIL;
        }
        dsq_err_clear(&err);
    }
    if (json)
        print_json(&s, &r, list);
    else
        print_text(&s, &r, list);
    source_close(&s);
    return rc;
}
