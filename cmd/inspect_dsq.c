/* `dsq inspect FILE.dsq`: a .dsq container described like a checkpoint — geometry, parameters and
 * layer kinds from the config in its metadata — plus what only a container has: every tensor's
 * encoding, bytes by encoding and by family, and the KV-cache layout it declares (formats/spec/dsq.md
 * §6.1).  --check verifies that every weight of the config's inventory resolves to a stored tensor
 * (directly, or as a slice of a stacked/fused one) and that the declared KV bytes agree with the config. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_inventory.h"
#include "dsq_json.h"
#include "inspect.h"

static const char *CMD = "inspect";

typedef struct summary {
    uint64_t bytes_by_enc[32];
    uint64_t bytes_by_family[DSQ_FAMILY_COUNT];
    uint64_t stored_bytes;
} summary;

static dsq_family family_of(const dsq_ctr_tensor *t) {
    dsq_tensor_role role;
    const char *name = t->n_sources ? t->sources[0].name : t->name;
    return dsq_inv_classify(name, &role) ? role.family : DSQ_FAMILY_OTHER;
}

static uint64_t tensor_bytes(const dsq_ctr_tensor *t) {
    uint64_t b = 0;
    for (int p = 0; p < t->n_parts; p++) b += t->parts[p].bytes;
    return b;
}

/* Expected checkpoint weights that the container cannot resolve: one line each on stderr. */
static size_t check_inventory(const char *path, const dsq_ctr_reader *r, const dsq_v4_config *cfg, size_t *checked) {
    dsq_inv *inv = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_inv_expected(cfg, NULL, &inv, &err) != DSQ_OK) {
        dsq_cmd_fail(CMD, &err);
        return 1;
    }
    size_t missing = 0;
    *checked = 0;
    for (size_t i = 0; i < dsq_inv_count(inv); i++) {
        const char *name = dsq_inv_at(inv, i)->name;
        size_t len = strlen(name);
        if (len > 6 && !strcmp(name + len - 6, ".scale")) continue; /* folded into their weight's SCALES part */
        const dsq_ctr_tensor *t;
        const dsq_ctr_source *s;
        (*checked)++;
        if (!dsq_ctr_find_source(r, name, &t, &s) && !dsq_ctr_find(r, name)) {
            fprintf(stderr, "dsq %s: %s: %s: missing (no stored tensor or source holds it)\n", CMD, path, name);
            missing++;
        }
    }
    dsq_inv_free(inv);
    return missing;
}

int dsq__inspect_dsq(const char *path, bool json, bool list, bool check) {
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_reader *r = NULL;
    if (dsq_ctr_reader_open(path, NULL, &r, &err) != DSQ_OK) return dsq_cmd_fail(CMD, &err);
    size_t mlen = 0;
    const char *meta = dsq_ctr_metadata(r, &mlen);
    cJSON *root = NULL;
    dsq_v4_config cfg;
    bool have_cfg = false;
    if (meta && dsq_json_parse(meta, mlen, path, &root, &err) == DSQ_OK) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "config");
        if (cJSON_IsObject(c)) {
            char *text = cJSON_PrintUnformatted(c);
            have_cfg = text && dsq_config_parse(text, strlen(text), path, &cfg, NULL, &err) == DSQ_OK;
            cJSON_free(text);
        }
    }
    if (!have_cfg) {
        cJSON_Delete(root);
        dsq_ctr_reader_close(r);
        if (err.n == 0) dsq_err_set(&err, DSQ_ERR_MISSING, "%s: metadata has no model.config", path);
        return dsq_cmd_fail(CMD, &err);
    }
    summary sm = {0};
    size_t n = dsq_ctr_count(r);
    for (size_t i = 0; i < n; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        uint64_t b = tensor_bytes(t);
        sm.stored_bytes += b;
        if ((unsigned)t->encoding < 32) sm.bytes_by_enc[t->encoding] += b;
        sm.bytes_by_family[family_of(t)] += b;
    }
    dsq_param_counts pc;
    dsq_config_params(&cfg, &pc);
    dsq_kv_bytes kv;
    dsq_config_kv_bytes(&cfg, &kv);
    const cJSON *kvj = cJSON_GetObjectItemCaseSensitive(root, "kv_cache");
    const cJSON *recipe = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "recipe"), "name");
    double declared = NAN;
    const cJSON *bpt = cJSON_GetObjectItemCaseSensitive(kvj, "bytes_per_token");
    if (cJSON_IsNumber(bpt)) declared = bpt->valuedouble;
    const char *kv_enc = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(kvj, "encoding"))
                             ? cJSON_GetObjectItemCaseSensitive(kvj, "encoding")->valuestring
                             : "none";
    uint64_t file_bytes = dsq_ctr_header(r)->file_bytes;

    int rc = DSQ_EXIT_OK;
    size_t missing = 0, checked = 0;
    bool kv_ok = true;
    if (check) {
        missing = check_inventory(path, r, &cfg, &checked);
        double want = dsq_config_kv_per_token(&cfg, kv_enc);
        kv_ok = isfinite(declared) && fabs(declared - want) <= 1e-6 * (want > 1 ? want : 1);
        if (!kv_ok)
            fprintf(stderr, "dsq %s: %s: kv_cache.bytes_per_token %.4f, the config gives %.4f (%s)\n", CMD, path,
                    declared, want, kv_enc);
        if (missing || !kv_ok) rc = DSQ_EXIT_FAIL;
    }

    if (json) {
        printf("{\"source\": \"dsq\", \"path\": ");
        dsq_cmd_json_str(stdout, path);
        printf(", \"file_bytes\": %" PRIu64 ", \"tensors\": %zu, \"bytes\": %" PRIu64, file_bytes, n, sm.stored_bytes);
        printf(", \"recipe\": ");
        if (cJSON_IsString(recipe))
            dsq_cmd_json_str(stdout, recipe->valuestring);
        else
            printf("null");
        printf(", \"params_total\": %" PRIu64 ", \"params_active\": %" PRIu64 ", \"params_total_mtp\": %" PRIu64
               ", \"n_layers\": %d, \"n_mtp_layers\": %d",
               pc.total, pc.active, pc.total_mtp, cfg.n_layers, cfg.n_mtp_layers);
        printf(", \"bytes_by_encoding\": {");
        bool first = true;
        for (int e = 0; e < 32; e++)
            if (sm.bytes_by_enc[e]) {
                printf("%s\"%s\": %" PRIu64, first ? "" : ", ", dsq_ctr_encoding_name((dsq_encoding)e),
                       sm.bytes_by_enc[e]);
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
        char *kvt = kvj ? cJSON_PrintUnformatted(kvj) : NULL;
        printf("%s", kvt ? kvt : "null");
        cJSON_free(kvt);
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
                printf("], \"bytes\": %" PRIu64 ", \"sources\": %u}", tensor_bytes(t), t->n_sources);
            }
            printf("]");
        }
        printf("}\n");
    } else {
        printf("container:   %s (.dsq, %zu tensors, %" PRIu64 " bytes stored, %" PRIu64 " bytes on disk)\n", path, n,
               sm.stored_bytes, file_bytes);
        printf("recipe:      %s\n", cJSON_IsString(recipe) ? recipe->valuestring : "(not recorded)");
        printf("geometry:    vocab %" PRIu64 ", dim %" PRIu64
               ", %d layers + %d MTP, %d heads x %d, experts %d (top-%d)\n",
               cfg.vocab_size, cfg.dim, cfg.n_layers, cfg.n_mtp_layers, cfg.n_heads, cfg.head_dim, cfg.n_routed_experts,
               cfg.n_activated_experts);
        printf("parameters:  %" PRIu64 " total, %" PRIu64 " active per token (main model); MTP %" PRIu64 "\n", pc.total,
               pc.active, pc.total_mtp);
        printf("by encoding:\n");
        for (int e = 0; e < 32; e++)
            if (sm.bytes_by_enc[e])
                printf("  %-22s %14" PRIu64 "  %5.1f%%\n", dsq_ctr_encoding_name((dsq_encoding)e), sm.bytes_by_enc[e],
                       100.0 * (double)sm.bytes_by_enc[e] / (double)(sm.stored_bytes ? sm.stored_bytes : 1));
        printf("by family:\n");
        for (int f = 0; f < DSQ_FAMILY_COUNT; f++)
            if (sm.bytes_by_family[f])
                printf("  %-22s %14" PRIu64 "  %5.1f%%\n", dsq_family_name((dsq_family)f), sm.bytes_by_family[f],
                       100.0 * (double)sm.bytes_by_family[f] / (double)(sm.stored_bytes ? sm.stored_bytes : 1));
        dsq__inspect_layers_text(&cfg);
        printf("KV cache:    declared %s layout, %.2f B per token", kv_enc, declared);
        const cJSON *fb = cJSON_GetObjectItemCaseSensitive(kvj, "fixed_bytes");
        if (cJSON_IsNumber(fb)) printf(", %.0f B fixed per sequence", fb->valuedouble);
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
                       tensor_bytes(t));
            }
        }
        if (check)
            printf("check:       %s: %zu checkpoint weights resolve%s%s\n", rc ? "FAILED" : "ok", checked - missing,
                   missing ? ", some missing" : "", kv_ok ? ", KV layout consistent" : ", KV layout inconsistent");
    }
    cJSON_Delete(root);
    dsq_ctr_reader_close(r);
    dsq_err_clear(&err);
    return rc;
}
