/* Opening a model from a checkpoint path: config.json + the weight source for the files found. */
#include "dsq_v4.h"

dsq_status dsq_v4_model_open(const char *path, dsq_v4_model **out, dsq_err *err) {
    *out = NULL;
    DSQ_RETURN_IF(!dsq_path_is_dir(path), err, DSQ_ERR_ARG, "%s: not a checkpoint directory", path);
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
