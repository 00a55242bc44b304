/* `dsq inspect X.gguf` (called by cmd/inspect.c): files, metadata, the V4 geometry the deepseek4
 * hparams describe, and tensors by family and ggml type with bytes and bits per weight. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "dsq_gguf.h"
#include "dsq_gguf_export.h"
#include "dsq_wsrc.h"
#include "inspect.h"

typedef struct fam {
    uint64_t tensors, values, bytes;
    uint64_t by_type[DSQ_GGML_TYPE_COUNT];
} fam;

int dsq__inspect_gguf(const char *path, bool json, bool list) {
    dsq_err err = DSQ_ERR_INIT;
    dsq_gguf **set = NULL;
    uint32_t n = 0;
    if (dsq_gguf_open_set(path, &set, &n, &err) != DSQ_OK) return dsq_cmd_fail("inspect", &err);
    dsq_v4_config cfg;
    bool has_cfg = dsq_gguf_v4_config(set[0], &cfg, &err) == DSQ_OK;
    char *cfg_problem = has_cfg ? NULL : dsq_strdup(err.msg);
    dsq_err_clear(&err);
    fam f[DSQ_FAMILY_COUNT + 1];
    memset(f, 0, sizeof f);
    uint64_t total_bytes = 0, tensors = 0, values = 0, data = 0;
    for (uint32_t i = 0; i < n; i++) {
        total_bytes += dsq_gguf_file_size(set[i]);
        for (size_t k = 0; k < dsq_gguf_n_tensors(set[i]); k++) {
            const dsq_gguf_tensor *t = dsq_gguf_tensor_at(set[i], k);
            fam *x = &f[dsq_gguf_family(t->name)];
            uint64_t v = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
            x->tensors++, x->values += v, x->bytes += t->n_bytes;
            if (t->type < DSQ_GGML_TYPE_COUNT) x->by_type[t->type]++;
            tensors++, values += v, data += t->n_bytes;
        }
    }
    char *arch = dsq_gguf_get_str(set[0], "general.architecture"), *name = dsq_gguf_get_str(set[0], "general.name");
    uint64_t ftype = 0;
    bool has_ftype = dsq_gguf_get_u64(set[0], "general.file_type", &ftype);
    if (json) {
        printf("{\"file\": ");
        dsq_cmd_json_str(stdout, path);
        printf(", \"format\": \"gguf\", \"version\": %d, \"files\": %u, \"bytes\": %llu, \"tensors\": %llu, \"values\": %llu, "
               "\"tensor_bytes\": %llu, \"bits_per_weight\": %.4f, \"kv\": %zu, \"architecture\": ",
               DSQ_GGUF_VERSION, n, (unsigned long long)total_bytes, (unsigned long long)tensors, (unsigned long long)values,
               (unsigned long long)data, values ? 8.0 * (double)data / (double)values : 0, dsq_gguf_n_kv(set[0]));
        dsq_cmd_json_str(stdout, arch ? arch : "");
        printf(", \"name\": ");
        dsq_cmd_json_str(stdout, name ? name : "");
        if (has_ftype) printf(", \"file_type\": %llu", (unsigned long long)ftype);
        if (has_cfg) {
            printf(", \"config\": {\"vocab_size\": %llu, \"dim\": %llu, \"layers\": %d, \"mtp_layers\": %d, \"experts\": %d, "
                   "\"experts_per_token\": %d}, ",
                   (unsigned long long)cfg.vocab_size, (unsigned long long)cfg.dim, cfg.n_layers, cfg.n_mtp_layers,
                   cfg.n_routed_experts, cfg.n_activated_experts);
            dsq__inspect_layers_json(&cfg);
        }
        printf(", \"families\": [");
        bool first = true;
        for (int k = 0; k < DSQ_FAMILY_COUNT; k++) {
            if (!f[k].tensors) continue;
            printf("%s{\"family\": \"%s\", \"tensors\": %llu, \"values\": %llu, \"bytes\": %llu, \"bits_per_weight\": %.4f, \"types\": {",
                   first ? "" : ", ", dsq_family_name((dsq_family)k), (unsigned long long)f[k].tensors,
                   (unsigned long long)f[k].values, (unsigned long long)f[k].bytes,
                   f[k].values ? 8.0 * (double)f[k].bytes / (double)f[k].values : 0);
            bool ft = true;
            for (int t = 0; t < DSQ_GGML_TYPE_COUNT; t++)
                if (f[k].by_type[t]) {
                    printf("%s\"%s\": %llu", ft ? "" : ", ", dsq_ggml_type_name((uint32_t)t), (unsigned long long)f[k].by_type[t]);
                    ft = false;
                }
            printf("}}");
            first = false;
        }
        printf("]");
        if (list) {
            printf(", \"tensor_list\": [");
            bool ft = true;
            for (uint32_t i = 0; i < n; i++)
                for (size_t k = 0; k < dsq_gguf_n_tensors(set[i]); k++) {
                    const dsq_gguf_tensor *t = dsq_gguf_tensor_at(set[i], k);
                    printf("%s{\"name\": \"%s\", \"type\": \"%s\", \"ne\": [%llu, %llu, %llu, %llu], \"bytes\": %llu, \"file\": %u}",
                           ft ? "" : ", ", t->name, dsq_ggml_type_name(t->type), (unsigned long long)t->ne[0],
                           (unsigned long long)t->ne[1], (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                           (unsigned long long)t->n_bytes, i + 1);
                    ft = false;
                }
            printf("]");
        }
        printf("}\n");
    } else {
        printf("%s: GGUF v%d, %u file(s), %llu bytes, %zu keys; architecture %s, name %s", path, DSQ_GGUF_VERSION, n,
               (unsigned long long)total_bytes, dsq_gguf_n_kv(set[0]), arch ? arch : "?", name ? name : "?");
        if (has_ftype) printf(", file_type %llu", (unsigned long long)ftype);
        printf("\n%llu tensors, %llu values, %llu bytes of tensor data, %.3f bits per weight\n", (unsigned long long)tensors,
               (unsigned long long)values, (unsigned long long)data, values ? 8.0 * (double)data / (double)values : 0);
        if (has_cfg) {
            printf("model: vocab %llu, dim %llu, %d layers + %d MTP, %d experts (top %d)\n", (unsigned long long)cfg.vocab_size,
                   (unsigned long long)cfg.dim, cfg.n_layers, cfg.n_mtp_layers, cfg.n_routed_experts, cfg.n_activated_experts);
            dsq__inspect_layers_text(&cfg);
        } else
            printf("model: not a deepseek4 V4 geometry dsq reads (%s)\n", cfg_problem ? cfg_problem : "?");
        printf("%-16s %8s %14s %14s %7s  types\n", "family", "tensors", "values", "bytes", "bpw");
        for (int k = 0; k < DSQ_FAMILY_COUNT; k++) {
            if (!f[k].tensors) continue;
            printf("%-16s %8llu %14llu %14llu %7.3f ", dsq_family_name((dsq_family)k), (unsigned long long)f[k].tensors,
                   (unsigned long long)f[k].values, (unsigned long long)f[k].bytes,
                   f[k].values ? 8.0 * (double)f[k].bytes / (double)f[k].values : 0);
            for (int t = 0; t < DSQ_GGML_TYPE_COUNT; t++)
                if (f[k].by_type[t]) printf(" %s:%llu", dsq_ggml_type_name((uint32_t)t), (unsigned long long)f[k].by_type[t]);
            printf("\n");
        }
        if (list)
            for (uint32_t i = 0; i < n; i++)
                for (size_t k = 0; k < dsq_gguf_n_tensors(set[i]); k++) {
                    const dsq_gguf_tensor *t = dsq_gguf_tensor_at(set[i], k);
                    printf("  %-44s %-6s ne {%llu, %llu, %llu, %llu} %llu bytes\n", t->name, dsq_ggml_type_name(t->type),
                           (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                           (unsigned long long)t->ne[3], (unsigned long long)t->n_bytes);
                }
    }
    dsq_free(arch);
    dsq_free(name);
    dsq_free(cfg_problem);
    dsq_gguf_close_set(set, n);
    return DSQ_EXIT_OK;
}
