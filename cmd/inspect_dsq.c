/* `dsq inspect FILE.dsq`: a .dsq container described like a checkpoint — geometry, parameters and
 * layer kinds from the config in its metadata — plus what only a container has: every tensor's
 * encoding, bytes by encoding and by family, and the KV-cache layout it declares (formats/spec/dsq.md
 * §6.1).  --check verifies that every weight of the config's inventory resolves to a stored tensor
 * (directly, or as a slice of a stacked/fused one) and that the declared KV bytes agree with the config. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_ctr_meta.h"
#include "dsq_inventory.h"
#include "inspect.h"

static const char *CMD = "inspect";

/* ctx: the container's path */
static void print_missing(void *ctx, const char *name) {
    fprintf(stderr, "dsq %s: %s: %s: missing (no stored tensor or source holds it)\n", CMD, (const char *)ctx, name);
}

int dsq__inspect_dsq(const char *path, bool json, bool list, bool check) {
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_reader *r = NULL;
    if (dsq_ctr_reader_open(path, NULL, &r, &err) != DSQ_OK) return dsq_cmd_fail(CMD, &err);
    dsq_ctr_meta *meta = NULL;
    dsq_v4_config cfg;
    bool have_cfg = dsq_ctr_meta_read(r, &meta, &err) == DSQ_OK && meta->config &&
                    dsq_ctr_meta_config(meta, path, &cfg, &err) == DSQ_OK;
    if (!have_cfg) {
        dsq_ctr_meta_free(meta);
        dsq_ctr_reader_close(r);
        if (err.n == 0) dsq_err_set(&err, DSQ_ERR_MISSING, "%s: metadata has no model.config", path);
        return dsq_cmd_fail(CMD, &err);
    }
    dsq_ctr_summary sm;
    dsq_ctr_summarize(r, meta, &cfg, &sm);
    const dsq_param_counts pc = sm.params;
    const dsq_kv_bytes kv = sm.kv;
    size_t n = sm.tensors;

    int rc = DSQ_EXIT_OK;
    size_t missing = 0, checked = 0;
    bool kv_ok = true;
    if (check) {
        if (dsq_ctr_unresolved(r, &cfg, print_missing, (void *)path, &checked, &missing, &err) != DSQ_OK) {
            dsq_cmd_fail(CMD, &err);
            missing = 1;
        }
        double want;
        kv_ok = dsq_ctr_summary_kv_consistent(&sm, &want);
        if (!kv_ok)
            fprintf(stderr, "dsq %s: %s: kv_cache.bytes_per_token %.4f, the config gives %.4f (%s)\n", CMD, path,
                    sm.kv_bytes_per_token, want, sm.kv_encoding);
        if (missing || !kv_ok) rc = DSQ_EXIT_FAIL;
    }

    if (json) {
        printf("{\"source\": \"dsq\", \"path\": ");
        dsq_cmd_json_str(stdout, path);
        printf(", \"file_bytes\": %" PRIu64 ", \"tensors\": %zu, \"bytes\": %" PRIu64, sm.file_bytes, n, sm.stored_bytes);
        printf(", \"recipe\": ");
        if (sm.recipe_name)
            dsq_cmd_json_str(stdout, sm.recipe_name);
        else
            printf("null");
        printf(", \"params_total\": %" PRIu64 ", \"params_active\": %" PRIu64 ", \"params_total_mtp\": %" PRIu64
               ", \"n_layers\": %d, \"n_mtp_layers\": %d",
               pc.total, pc.active, pc.total_mtp, cfg.n_layers, cfg.n_mtp_layers);
        printf(", \"bytes_by_encoding\": {");
        bool first = true;
        for (int e = 0; e < DSQ_CTR_SUMMARY_ENCODINGS; e++)
            if (sm.bytes_by_encoding[e]) {
                printf("%s\"%s\": %" PRIu64, first ? "" : ", ", dsq_ctr_encoding_name((dsq_encoding)e),
                       sm.bytes_by_encoding[e]);
                first = false;
            }
        printf("}, \"bytes_by_family\": {");
        first = true;
        for (int f = 0; f < DSQ_FAMILY_COUNT; f++)
            if (sm.bytes_by_family[f]) {
                printf("%s\"%s\": %" PRIu64, first ? "" : ", ", dsq_family_name((dsq_family)f), sm.bytes_by_family[f]);
                first = false;
            }
        printf("}");
        dsq__inspect_layers_json(&cfg);
        printf(", \"kv_bytes_per_token\": %.4f, \"kv_cache\": ", kv.per_token_compact);
        printf("%s", sm.kv_json ? sm.kv_json : "null");
        dsq__inspect_kv_json(&cfg);
        if (check)
            printf(", \"check\": {\"ok\": %s, \"weights_checked\": %zu, \"missing\": %zu, \"kv_consistent\": %s}",
                   rc ? "false" : "true", checked, missing, kv_ok ? "true" : "false");
        if (list) {
            printf(", \"tensor_list\": [");
            for (size_t i = 0; i < n; i++) {
                const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
                printf("%s{\"name\": ", i ? ", " : "");
                dsq_cmd_json_str(stdout, t->name);
                printf(", \"encoding\": \"%s\", \"shape\": [", dsq_ctr_encoding_name(t->encoding));
                for (int k = 0; k < t->rank; k++) printf("%s%" PRIu64, k ? ", " : "", t->shape[k]);
                printf("], \"bytes\": %" PRIu64 ", \"sources\": %u}", dsq_ctr_tensor_bytes(t), t->n_sources);
            }
            printf("]");
        }
        printf("}\n");
    } else {
        printf("container:   %s (.dsq, %zu tensors, %" PRIu64 " bytes stored, %" PRIu64 " bytes on disk)\n", path, n,
               sm.stored_bytes, sm.file_bytes);
        printf("recipe:      %s\n", sm.recipe_name ? sm.recipe_name : "(not recorded)");
        printf("geometry:    vocab %" PRIu64 ", dim %" PRIu64
               ", %d layers + %d MTP, %d heads x %d, experts %d (top-%d)\n",
               cfg.vocab_size, cfg.dim, cfg.n_layers, cfg.n_mtp_layers, cfg.n_heads, cfg.head_dim, cfg.n_routed_experts,
               cfg.n_activated_experts);
        printf("parameters:  %" PRIu64 " total, %" PRIu64 " active per token (main model); MTP %" PRIu64 "\n", pc.total,
               pc.active, pc.total_mtp);
        printf("by encoding:\n");
        for (int e = 0; e < DSQ_CTR_SUMMARY_ENCODINGS; e++)
            if (sm.bytes_by_encoding[e])
                printf("  %-22s %14" PRIu64 "  %5.1f%%\n", dsq_ctr_encoding_name((dsq_encoding)e), sm.bytes_by_encoding[e],
                       100.0 * (double)sm.bytes_by_encoding[e] / (double)(sm.stored_bytes ? sm.stored_bytes : 1));
        printf("by family:\n");
        for (int f = 0; f < DSQ_FAMILY_COUNT; f++)
            if (sm.bytes_by_family[f])
                printf("  %-22s %14" PRIu64 "  %5.1f%%\n", dsq_family_name((dsq_family)f), sm.bytes_by_family[f],
                       100.0 * (double)sm.bytes_by_family[f] / (double)(sm.stored_bytes ? sm.stored_bytes : 1));
        dsq__inspect_layers_text(&cfg);
        printf("KV cache:    declared %s layout, %.2f B per token", sm.kv_encoding, sm.kv_bytes_per_token);
        if (!isnan(sm.kv_fixed_bytes)) printf(", %.0f B fixed per sequence", sm.kv_fixed_bytes);
        printf(" (the config gives %.2f B compact, %.0f B bf16)\n", kv.per_token_compact, kv.per_token_bf16);
        dsq__inspect_kv_text(&cfg);
        if (list) {
            printf("tensors:\n");
            for (size_t i = 0; i < n; i++) {
                const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
                char shape[128] = "[";
                for (int k = 0; k < t->rank; k++) {
                    char d[32];
                    snprintf(d, sizeof d, "%s%" PRIu64, k ? ", " : "", t->shape[k]);
                    strncat(shape, d, sizeof shape - strlen(shape) - 2);
                }
                strcat(shape, "]");
                printf("  %-52s %-14s %-22s %12" PRIu64 "\n", t->name, dsq_ctr_encoding_name(t->encoding), shape,
                       dsq_ctr_tensor_bytes(t));
            }
        }
        if (check)
            printf("check:       %s: %zu checkpoint weights resolve%s%s\n", rc ? "FAILED" : "ok", checked - missing,
                   missing ? ", some missing" : "", kv_ok ? ", KV layout consistent" : ", KV layout inconsistent");
    }
    dsq_ctr_meta_free(meta);
    dsq_ctr_reader_close(r);
    dsq_err_clear(&err);
    return rc;
}
