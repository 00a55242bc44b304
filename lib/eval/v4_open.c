/* Opening a model from a path: a checkpoint directory (config.json + safetensors) or a .dsq container. */
#include "dsq_v4.h"

dsq_status dsq_v4_model_open(const char *path, dsq_v4_model **out, dsq_err *err) {
    return dsq_v4_model_open_ex(path, NULL, out, err);
}

dsq_status dsq_v4_model_open_ex(const char *path, const dsq_v4_load_options *lo, dsq_v4_model **out, dsq_err *err) {
    *out = NULL;
    dsq_v4_config *cfg = dsq_calloc(1, sizeof *cfg);
    DSQ_RETURN_IF(!cfg, err, DSQ_ERR_NOMEM, "no memory");
    dsq_wsrc *src = NULL;
    dsq_status st = dsq_wsrc_open_path(path, cfg, &src, err);
    if (!st) st = dsq_v4_model_create_ex(src, cfg, lo, out, err);
    dsq_free(cfg);
    return st;
}

