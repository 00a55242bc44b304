/* Opening a model from a path: a checkpoint directory (config.json + safetensors) or a .dsq container. */
#include <string.h>

#include "dsq_v4.h"

dsq_status dsq_v4_model_open(const char *path, dsq_v4_model **out, dsq_err *err) {
    *out = NULL;
    if (!dsq_path_is_dir(path)) {
        /* a .dsq container: weights and config.json in one file */
        DSQ_RETURN_IF(!dsq_path_exists(path), err, DSQ_ERR_IO, "%s: no such checkpoint directory or .dsq file", path);
        dsq_wsrc *src = NULL;
        char *json = NULL;
        DSQ_TRY(dsq_wsrc_open_container(path, &src, &json, err));
        dsq_v4_config *cfg = dsq_calloc(1, sizeof *cfg);
        dsq_status st = cfg ? dsq_config_parse(json, strlen(json), path, cfg, NULL, err)
                            : dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
        dsq_free(json);
        if (st)
            dsq_wsrc_close(src);
        else
            st = dsq_v4_model_create(src, cfg, out, err);
        dsq_free(cfg);
        return st;
    }
    char *cfg_path = dsq_path_join(path, "config.json");
    DSQ_RETURN_IF(!cfg_path, err, DSQ_ERR_NOMEM, "no memory");
    dsq_v4_config *cfg = dsq_calloc(1, sizeof *cfg);
    if (!cfg) {
        dsq_free(cfg_path);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "no memory");
    }
    dsq_status st = dsq_config_load(cfg_path, cfg, NULL, err);
    dsq_free(cfg_path);
    dsq_wsrc *src = NULL;
    if (!st) st = dsq_wsrc_open_safetensors(path, &src, err);
    if (!st) st = dsq_v4_model_create(src, cfg, out, err);
    dsq_free(cfg);
    return st;
}
