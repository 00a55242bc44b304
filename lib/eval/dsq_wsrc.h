/* Weight sources: look up a tensor by its canonical checkpoint name (spec §3, e.g.
 * "layers.3.attn.wq_b.weight") and get a view of it in its STORED encoding — codes, scales,
 * shape — without copying or dequantizing.  The model code (dsq_v4.h) only talks to this
 * interface, so a sharded safetensors checkpoint and the .dsq container plug in alike.
 *
 * A source implementation fills the function table of dsq_wsrc.  Views are const and valid until
 * the source is closed.  Sources are safe to query from several threads once opened. */
#ifndef DSQ_WSRC_H
#define DSQ_WSRC_H

#include "dsq_core.h"
#include "dsq_config.h"
#include "dsq_encoding.h"

#define DSQ_WVIEW_MAX_RANK 4

/* One stored tensor.  For 2-D matrices shape = [rows, cols] in LOGICAL elements (an MXFP4 matrix of
 * [N, K] stores N·K/2 bytes).  `data` and `scale` may be unaligned: read multi-byte elements with
 * memcpy.  Layouts per encoding (dsq_encoding.h):
 *   F32 / BF16 / I64 / I32: data = [shape...] row-major, little-endian; scale = NULL.
 *   FP8_B128:     data = [rows][cols] e4m3 codes; scale = [ceil(rows/128)][ceil(cols/128)] UE8M0 bytes.
 *   FP8_B128_F32: same codes; scale = [ceil(rows/128)][ceil(cols/128)] f32.
 *   MXFP4:        data = [rows][cols/2] e2m1 pairs, low nibble = even col; scale = [rows][cols/32] UE8M0.
 *   any other float encoding: the layouts of lib/quant/dsq_codec.h (scale, mins, group, tensor_scale). */
typedef struct dsq_wview {
    const char *name;    /* canonical name, owned by the source */
    dsq_encoding enc;
    int rank;
    uint64_t shape[DSQ_WVIEW_MAX_RANK];
    const uint8_t *data;
    uint64_t data_bytes;
    const uint8_t *scale; /* NULL when the encoding has none */
    uint64_t scale_bytes;
    /* the other codecs of lib/quant/dsq_codec.h (a .dsq container may hold them): */
    int group;            /* group width of INT*_G encodings, else 0 */
    const uint8_t *mins;  /* F16 minimums of the asymmetric encodings, else NULL */
    uint64_t mins_bytes;
    float tensor_scale;   /* NVFP4 tensor scale, else 0 */
    /* set by the model (never by a source) when it let NaN/Inf codes or scales of this view through
     * (dsq_v4_load_options.allow_nonfinite): the kernels then decode it with the exact scalar
     * decoder, so every path gives the same NaN/Inf results */
    bool nonfinite;
} dsq_wview;

typedef struct dsq_wsrc dsq_wsrc;
struct dsq_wsrc {
    void *impl;
    const char *path; /* what was opened, for messages */
    /* Fill *out for `name`.  DSQ_ERR_MISSING when absent (err may be NULL for a probe). */
    dsq_status (*get)(const dsq_wsrc *s, const char *name, dsq_wview *out, dsq_err *err);
    /* Page-cache hints (madvise WILLNEED / DONTNEED) for a view's bytes; may be no-ops. */
    void (*prefetch)(const dsq_wsrc *s, const dsq_wview *v);
    void (*release)(const dsq_wsrc *s, const dsq_wview *v);
    void (*close)(dsq_wsrc *s); /* frees impl and s */
    /* Bytes the prefetch / release hints have covered since open (a view's own bytes each time:
     * codes, scales, mins), for tests and benchmarks; may be NULL. */
    void (*advice_stats)(const dsq_wsrc *s, uint64_t *willneed, uint64_t *dontneed);
    /* Check the stored bytes behind view v, once per stored piece (a .dsq part: the whole stacked or
     * fused tensor the view is a slice of; later calls for the same piece return at once): with
     * `checksum` its stored checksum (DSQ_ERR_CHECKSUM naming the file and tensor), and in the same
     * pass NaN/Inf codes and scales (DSQ_ERR_NONFINITE naming the file, tensor and element, unless
     * allow_nonfinite; then *nonfinite is set when the view's tensor has any).  NULL for sources
     * without checksums (safetensors): the model scans the view's bytes itself. */
    dsq_status (*check)(const dsq_wsrc *s, const dsq_wview *v, bool checksum, bool allow_nonfinite, bool *nonfinite,
                        dsq_err *err);
    /* The KV-cache encoding the source declares for evaluation (a .dsq container whose recipe has
     * "kv_cache": its dsq_config_kv_encoding_name spelling, static), or NULL. */
    const char *kv_cache;
};

/* Open a safetensors checkpoint (a directory with model.safetensors.index.json or one
 * *.safetensors file, or a single file) as a weight source.  Always memory-mapped.
 * FP8 weights pair with their `.scale` tensor (UE8M0 → FP8_B128, F32 → FP8_B128_F32); I8 weights
 * with a UE8M0 scale of [rows, cols/16 bytes] are MXFP4.  The result is closed with dsq_wsrc_close. */
dsq_status dsq_wsrc_open_safetensors(const char *path, dsq_wsrc **out, dsq_err *err);
/* Open a .dsq container as a weight source (lib/eval/wsrc_dsq.c): checkpoint names resolve to their
 * slice of a stacked or fused tensor through the container's source records.  When cfg is non-NULL
 * it receives the metadata's model.config. */
dsq_status dsq_wsrc_open_dsq(const char *path, dsq_v4_config *cfg, dsq_wsrc **out, dsq_err *err);
/* Open a GGUF of llama.cpp's deepseek4 architecture (lib/eval/wsrc_gguf.c; the first file of a
 * split set opens the set): config from the deepseek4.* hparams, F32/F16/BF16 as views, Q8_0 / Q4_0 /
 * MXFP4 unpacked at open into int8-g32 / int4-g32 / mxfp4 (same values); other types fail naming
 * the tensor and type. */
dsq_status dsq_wsrc_open_gguf(const char *path, dsq_v4_config *cfg, dsq_wsrc **out, dsq_err *err);
/* The config a deepseek4 GGUF's hparams describe (what dsq_wsrc_open_gguf uses). */
struct dsq_gguf;
dsq_status dsq_gguf_v4_config(const struct dsq_gguf *g, dsq_v4_config *cfg, dsq_err *err);
/* True when the file at path starts with the GGUF magic. */
bool dsq_wsrc_sniff_gguf(const char *path);
/* Open whatever PATH is: a .dsq container (config from its metadata), a GGUF, or a checkpoint
 * directory (config.json + safetensors).  cfg receives the config. */
dsq_status dsq_wsrc_open_path(const char *path, dsq_v4_config *cfg, dsq_wsrc **out, dsq_err *err);

/* Accepts NULL. */
void dsq_wsrc_close(dsq_wsrc *s);

/* Number of elements of a view (product of shape); false on overflow. */
bool dsq_wview_elements(const dsq_wview *v, uint64_t *out);

#endif
