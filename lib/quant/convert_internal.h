/* Internal to lib/quant/convert*.c: the plan's structures and the re-encoding step. */
#ifndef DSQ_CONVERT_INTERNAL_H
#define DSQ_CONVERT_INTERNAL_H

#include "dsq_config.h"
#include "dsq_convert.h"
#include "dsq_inventory.h"
#include "dsq_safetensors.h"

/* One checkpoint weight (with its scale) and what the recipe makes of it. */
typedef struct cv_src {
    const dsq_st_tensor *w, *s;  /* s: the .scale tensor, NULL for plain weights */
    const dsq_st_tensor *ts;     /* ModelOpt NVFP4: STEM.weight_scale_2 (F32 [], the tensor scale), else NULL */
    dsq_encoding enc;            /* stored encoding */
    uint32_t br, bc;             /* stored block */
    int rank;
    uint64_t shape[DSQ_ST_MAX_RANK]; /* logical shape (packed FP4: [N, K], not [N, K/2]) */
    dsq_encoding t_enc;          /* target */
    int t_group;
    uint32_t t_br, t_bc;
} cv_src;

enum { CV_ONE = 0, CV_STACK = 1, CV_FUSED = 2 };

/* One stored tensor: a single weight, a stack of routed experts, or a fused wkv|wgate pair. */
typedef struct cv_out {
    char *name;
    int kind;
    cv_src *src;
    uint32_t n_src;
    dsq_encoding enc;
    int group;
    uint32_t br, bc;
    int rank;
    uint64_t shape[DSQ_FILE_MAX_RANK];
    int family;
    bool copy;
    uint64_t bytes_in, bytes_out;
} cv_out;

struct dsq_convert_plan {
    dsq_convert_options opt; /* strings point at the copies below */
    char *src, *out;
    char **command;
    dsq_st *st;
    dsq_v4_config cfg;
    char *config_text;
    cv_out *outs;
    size_t n, cap;
    dsq_convert_item *items;
    uint64_t bytes_in;
};

/* Scratch reused across tensors by the re-encoding step. */
typedef struct cv_work {
    uint8_t *ins[2], *outs[2]; /* the re-encode pipeline's two input and two output slots */
    size_t in_caps[2], out_caps[2];
} cv_work;
void dsq__cv_work_free(cv_work *w);

/* Re-encode every source of output i into the writer (all parts), recording source hashes. */
dsq_status dsq__cv_run_reencode(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, cv_work *work, dsq_err *err);

#endif
