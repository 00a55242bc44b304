/* The views `dsq inspect` shares between a checkpoint (cmd/inspect.c), a .dsq (cmd/inspect_dsq.c), a GGUF
 * (cmd/inspect_gguf.c) and an imatrix (cmd/calibrate.c): number formatting, the per-block table and the
 * KV-cache bytes table.  Calls go one way: cmd/inspect.c dispatches to those files, and all of them
 * call this one, which calls none of them. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "dsq_config.h"
#include "dsq_v4.h"
#include "inspect.h"

static void human(double v, const char *const *units, int n_units, double base, char *buf, size_t n) {
    int u = 0;
    while (v >= base && u < n_units - 1) {
        v /= base;
        u++;
    }
    snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}
const char *dsq__inspect_hbytes(uint64_t b, char *buf, size_t n) {
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    human((double)b, units, 5, 1000.0, buf, n);
    return buf;
}
const char *dsq__inspect_hcount(uint64_t c, char *buf, size_t n) {
    static const char *const units[] = {"", "K", "M", "B", "T"};
    human((double)c, units, 5, 1000.0, buf, n);
    size_t len = strlen(buf);
    if (len && buf[len - 1] == ' ') buf[len - 1] = 0;
    return buf;
}

/* The per-block table. */
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
            printf(" %10s", dsq__inspect_hbytes(kv_seq_bytes(cf, (dsq_kv_cache)k, kv_table_tokens[i]), a, sizeof a));
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

