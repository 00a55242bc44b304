/* The GGUF k-quant convert path on REAL tensors (issue 13 speed): rows of a checkpoint's tensors
 * through dsq_ggml_encode_rows_s as `dsq convert` calls it (decode of the source, e.g. MXFP4, the
 * k-quant encoder, the error statistics), 64 rows per call with reused scratch, a log-normal
 * importance per column (as bench/kquant_real).  Prints per tensor the statistics (sum_sq_err,
 * sum_sq_ref, max_abs_err, values) of the first rep, an FNV-1a hash of all written blocks, and the
 * speed in million values per CPU second of this thread: two builds that print the same lines
 * (except the speed) wrote the same bytes.
 * Usage: build/bench/kquant_convert [SRC [ROWS [REPS [TYPE [TENSOR...]]]]]: SRC a safetensors checkpoint
 * (default $DSQ_SHARED/models/v4-tiny-trained, DSQ_SHARED defaulting to ../shared), ROWS per tensor
 * (default 256), REPS (default 2), TYPE a ggml type number (default 12 = Q4_K), TENSOR canonical names
 * (default: layers.L.ffn.experts.E.w1/w3.weight, L < 2, E < 4, as bench/kquant_real). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_codec.h"
#include "dsq_ggml.h"
#include "dsq_kquant.h"
#include "dsq_wsrc.h"
#include "kquant_bench.h"

enum { CALL_ROWS = 64 };

int main(int argc, char **argv) {
    char defsrc[4096];
    const char *src = kb_source(argc, argv, defsrc, sizeof defsrc);
    uint64_t maxrows = argc > 2 ? strtoull(argv[2], NULL, 10) : 256;
    int reps = argc > 3 ? atoi(argv[3]) : 2;
    uint32_t type = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : DSQ_GGMLT_Q4_K;
    dsq_wsrc *ws = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (reps < 1 || dsq_wsrc_open_safetensors(src, &ws, &err) != DSQ_OK) {
        fprintf(stderr, "kquant_convert: %s\n", reps < 1 ? "REPS must be >= 1" : err.msg);
        return 1;
    }
    char names[KB_MAX_NAMES][KB_NAME];
    int nn = kb_names(ws, argc, argv, 5, names);
    double secs = 0, values = 0;
    uint64_t h = 1469598103934665603ull;
    for (int t = 0; t < nn; t++) {
        const char *name = names[t];
        dsq_wview v;
        uint64_t rb;
        if (ws->get(ws, name, &v, &err) != DSQ_OK || v.rank != 2 || !dsq_ggml_row_bytes(type, v.shape[1], &rb)) {
            fprintf(stderr, "kquant_convert: %s: %s\n", name,
                    err.msg[0] ? err.msg : "not a matrix of this type's rows");
            return 1;
        }
        uint64_t rows = v.shape[0] < maxrows ? v.shape[0] : maxrows, cols = v.shape[1];
        dsq_qtensor q = {v.enc, v.shape[0], cols, v.group, v.data, v.scale, v.mins, v.tensor_scale};
        float *imp = malloc(sizeof(float) * cols);
        uint8_t *out = malloc(rows * rb);
        if (!imp || !out) return 1;
        kb_importance(imp, cols);
        dsq_ggml_scratch scr = {0};
        for (int r = 0; r < reps; r++) {
            dsq_ggml_stats st = {0};
            double t0 = kb_now();
            for (uint64_t r0 = 0; r0 < rows; r0 += CALL_ROWS)
                if (dsq_ggml_encode_rows_s(&q, r0, rows - r0 < CALL_ROWS ? rows - r0 : CALL_ROWS, type, imp,
                                           out + r0 * rb, &st, &scr, name, &err) != DSQ_OK) {
                    fprintf(stderr, "kquant_convert: %s\n", err.msg);
                    return 1;
                }
            secs += kb_now() - t0, values += (double)(rows * cols);
            if (r == 0) {
                for (uint64_t i = 0; i < rows * rb; i++) h = (h ^ out[i]) * 1099511628211ull;
                printf("%s: %.17g %.17g %.17g %llu\n", name, st.sum_sq_err, st.sum_sq_ref, st.max_abs_err,
                       (unsigned long long)st.values);
            }
        }
        dsq_ggml_scratch_free(&scr);
        free(imp), free(out);
    }
    printf("%s: %d tensors, up to %llu rows, ggml type %u\nhash %016llx\n%.2f Mv/s (%.3f s)\n", src, nn,
           (unsigned long long)maxrows, type, (unsigned long long)h, secs > 0 ? 1e-6 * values / secs : 0.0, secs);
    dsq_wsrc_close(ws);
    return nn == 0;
}
