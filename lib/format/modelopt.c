/* hf_quant_config.json of NVIDIA ModelOpt NVFP4 checkpoints (dsq_modelopt.h). */
#include "dsq_modelopt.h"

#include <string.h>

#include "dsq_json.h"

dsq_status dsq_modelopt_qcfg_parse(const char *text, size_t len, const char *what, dsq_modelopt_qcfg *out,
                                   dsq_err *err) {
    memset(out, 0, sizeof *out);
    cJSON *root = NULL;
    DSQ_TRY(dsq_json_parse(text, len, what, &root, err));
    dsq_status s = DSQ_OK;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization");
    const cJSON *algo = cJSON_GetObjectItemCaseSensitive(q, "quant_algo");
    const cJSON *group = cJSON_GetObjectItemCaseSensitive(q, "group_size");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(q, "exclude_modules");
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(q, "kv_cache_quant_algo");
    const cJSON *prod = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "producer"), "name");
    uint64_t g = 0;
    if (!cJSON_IsObject(root) || !cJSON_IsObject(q))
        s = dsq_err_set(err, DSQ_ERR_MISSING, "%s: no \"quantization\" object", what);
    else if (!algo)
        s = dsq_err_set(err, DSQ_ERR_MISSING, "%s: quantization.quant_algo is missing", what);
    else if (!cJSON_IsString(algo))
        s = dsq_err_set(err, DSQ_ERR_JSON, "%s: quantization.quant_algo is not a string", what);
    else if (strcmp(algo->valuestring, "NVFP4") != 0)
        s = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: quant_algo \"%.40s\" is not supported (only NVFP4)", what,
                        algo->valuestring);
    else if (!group)
        s = dsq_err_set(err, DSQ_ERR_MISSING, "%s: quantization.group_size is missing", what);
    else if (!dsq_json_u64(group, &g) || g != DSQ_MODELOPT_GROUP)
        s = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: quantization.group_size must be %d", what, DSQ_MODELOPT_GROUP);
    else if (ex && !cJSON_IsArray(ex))
        s = dsq_err_set(err, DSQ_ERR_JSON, "%s: quantization.exclude_modules is not an array", what);
    else if (kv && !cJSON_IsNull(kv) && !cJSON_IsString(kv))
        s = dsq_err_set(err, DSQ_ERR_JSON, "%s: quantization.kv_cache_quant_algo is not a string or null", what);
    else if (prod && !cJSON_IsString(prod))
        s = dsq_err_set(err, DSQ_ERR_JSON, "%s: producer.name is not a string", what);
    const cJSON *e;
    cJSON_ArrayForEach(e, ex) {
        if (s != DSQ_OK) break;
        if (!cJSON_IsString(e)) s = dsq_err_set(err, DSQ_ERR_JSON, "%s: exclude_modules holds a non-string", what);
        out->n_exclude++;
    }
    if (s == DSQ_OK) {
        out->kv_cache_fp8 = cJSON_IsString(kv) && !strcmp(kv->valuestring, "FP8");
        if (prod) {
            strncpy(out->producer, prod->valuestring, sizeof out->producer - 1);
            out->producer[sizeof out->producer - 1] = 0;
        }
    }
    cJSON_Delete(root);
    return s;
}

dsq_status dsq_modelopt_qcfg_load(const char *dir, bool *present, dsq_modelopt_qcfg *out, dsq_err *err) {
    *present = false;
    char *p = dsq_path_join(dir, DSQ_MODELOPT_QCFG_NAME);
    DSQ_RETURN_IF(!p, err, DSQ_ERR_NOMEM, "out of memory");
    if (!dsq_path_exists(p)) {
        dsq_free(p);
        return DSQ_OK;
    }
    char *text = NULL;
    size_t len = 0;
    dsq_status s = dsq_read_file(p, DSQ_MODELOPT_QCFG_MAX, &text, &len, err);
    if (s == DSQ_OK) s = dsq_modelopt_qcfg_parse(text, len, p, out, err);
    if (s == DSQ_OK) *present = true;
    dsq_free(text);
    dsq_free(p);
    return s;
}

char *dsq_modelopt_qcfg_text(const char *version, const char *const *exclude, size_t n) {
    cJSON *root = cJSON_CreateObject();
    cJSON *prod = cJSON_AddObjectToObject(root, "producer");
    cJSON_AddStringToObject(prod, "name", "dsq");
    cJSON_AddStringToObject(prod, "version", version ? version : "");
    cJSON *q = cJSON_AddObjectToObject(root, "quantization");
    cJSON_AddStringToObject(q, "quant_algo", "NVFP4");
    cJSON_AddNullToObject(q, "kv_cache_quant_algo");
    cJSON_AddNumberToObject(q, "group_size", DSQ_MODELOPT_GROUP);
    cJSON *ex = cJSON_AddArrayToObject(q, "exclude_modules");
    for (size_t i = 0; ex && i < n; i++) cJSON_AddItemToArray(ex, cJSON_CreateString(exclude[i]));
    char *t = cJSON_Print(root);
    cJSON_Delete(root);
    char *copy = t ? dsq_strdup(t) : NULL;
    cJSON_free(t);
    return copy;
}
