/* NVIDIA ModelOpt's NVFP4 checkpoint layout (docs/modelopt-nvfp4.md): the hf_quant_config.json that
 * marks such a checkpoint, and the tensor names of one NVFP4 linear layer.
 *
 *   STEM.weight          U8      [out, in/2]   e2m1 codes, two per byte, low nibble = even column
 *   STEM.weight_scale    F8_E4M3 [out, in/16]  one scale per 16 consecutive values of a row
 *   STEM.weight_scale_2  F32     []            global scale: w = e2m1 · f32(e4m3) · weight_scale_2
 *   STEM.input_scale     F32     []            activation global scale (W4A4 runtimes; dsq ignores it)
 *
 * This is dsq's own NVFP4 encoding (DSQ_ENC_NVFP4) byte for byte, with the tensor scale under
 * another name, so mapping one onto the other is lossless both ways. */
#ifndef DSQ_MODELOPT_H
#define DSQ_MODELOPT_H

#include "dsq_core.h"

#define DSQ_MODELOPT_QCFG_NAME "hf_quant_config.json"
#define DSQ_MODELOPT_QCFG_MAX  (16u << 20) /* largest hf_quant_config.json read (bytes) */
enum { DSQ_MODELOPT_GROUP = 16 };

/* What dsq needs of hf_quant_config.json: quantization.quant_algo must be "NVFP4" and
 * quantization.group_size 16; exclude_modules (optional) must be an array of strings. */
typedef struct dsq_modelopt_qcfg {
    char producer[64]; /* producer.name ("modelopt"), "" when absent; truncated */
    size_t n_exclude;  /* entries of quantization.exclude_modules */
    bool kv_cache_fp8; /* quantization.kv_cache_quant_algo == "FP8" */
} dsq_modelopt_qcfg;

/* Parse and validate `len` bytes of an hf_quant_config.json; `what` names it in messages.  Any
 * missing or wrong member is one line (DSQ_ERR_JSON, DSQ_ERR_MISSING or DSQ_ERR_UNSUPPORTED). */
dsq_status dsq_modelopt_qcfg_parse(const char *text, size_t len, const char *what, dsq_modelopt_qcfg *out,
                                   dsq_err *err);
/* Read DIR/hf_quant_config.json when it exists: *present tells whether it did. */
dsq_status dsq_modelopt_qcfg_load(const char *dir, bool *present, dsq_modelopt_qcfg *out, dsq_err *err);

/* The text dsq writes (a heap string, dsq_free): producer "dsq", quant_algo NVFP4, group_size 16,
 * kv_cache_quant_algo null, exclude_modules = the given names (borrowed, n may be 0). */
char *dsq_modelopt_qcfg_text(const char *version, const char *const *exclude, size_t n);

#endif
