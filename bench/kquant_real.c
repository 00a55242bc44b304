/* K-quant encoder quality and speed on REAL tensors (issue 13 §5; bench/kquant.c does the same on
 * synthetic ones): routed-expert matrices of a checkpoint, decoded to f32 by dsq's codecs (the FP4
 * experts of a V4 checkpoint: at most 15 distinct values × 2^e per 32 columns), encoded by our
 * encoder (dsq_kquant_encode) and by llama.cpp's ggml_quantize_chunk with the same importance.
 * Error: sqrt(Σ w (x − x̂)²) per tensor (dsq_kquant_weighted_sse), ours / llama.cpp's; w = 1 (no
 * imatrix) and a log-normal importance per column (as bench/kquant).  The table gives, per type, the
 * worst ratio over the tensors × {no imatrix, imatrix} and the encode speed (million values per CPU
 * second of this thread) of both.  Exit status 1 when a ratio is above 1 (ours worse on some tensor).
 * Usage: build/bench/kquant_real [SRC [MAXROWS [TENSOR...]]]
 *   SRC: a safetensors checkpoint (default $DSQ_SHARED/models/v4-tiny-trained, DSQ_SHARED defaulting
 *   to ../shared); MAXROWS: rows taken from each tensor (default 128); TENSOR: canonical names
 *   (default: every layers.L.ffn.experts.E.w1/w3.weight whose row is a multiple of 256 values, L < 2,
 *   E < 4).  libggml-base.so as bench/kquant (DSQ_GGML_LIB overrides). */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_codec.h"
#include "dsq_kquant.h"
#include "dsq_wsrc.h"
#include "kquant_bench.h"

typedef size_t (*quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                                    int64_t n_per_row, const float *imatrix);

enum { NT = 6 };

int main(int argc, char **argv) {
    char defsrc[4096];
    const char *src = kb_source(argc, argv, defsrc, sizeof defsrc);
    uint64_t maxrows = argc > 2 ? strtoull(argv[2], NULL, 10) : 128;
    const char *p = getenv("DSQ_GGML_LIB");
    if (!p) p = ".cache/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so";
    void *lib = dlopen(p, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "kquant_real: cannot load %s: %s\n", p, dlerror());
        return 1;
    }
    quantize_chunk_fn qc;
    *(void **)&qc = dlsym(lib, "ggml_quantize_chunk");
    dsq_wsrc *ws = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (!qc || dsq_wsrc_open_safetensors(src, &ws, &err) != DSQ_OK) {
        fprintf(stderr, "kquant_real: %s\n", qc ? err.msg : "no ggml_quantize_chunk");
        return 1;
    }
    char names[KB_MAX_NAMES][KB_NAME];
    int nn = kb_names(ws, argc, argv, 3, names);
    static const dsq_encoding encs[NT] = {DSQ_ENC_Q2_K, DSQ_ENC_Q3_K, DSQ_ENC_Q4_K,
                                          DSQ_ENC_Q5_K, DSQ_ENC_Q6_K, DSQ_ENC_IQ4_XS};
    static const char *tn[NT] = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs"};
    double worst[NT] = {0}, t_ours[NT] = {0}, t_ggml[NT] = {0}, values = 0;
    int bad = 0;
    for (int t = 0; t < nn; t++) {
        dsq_wview v;
        if (ws->get(ws, names[t], &v, &err) != DSQ_OK || v.rank != 2 || v.shape[1] % DSQ_KQ_BLOCK != 0) {
            fprintf(stderr, "kquant_real: %s: %s\n", names[t], err.msg[0] ? err.msg : "not a matrix of 256-value rows");
            return 1;
        }
        uint64_t rows = v.shape[0] < maxrows ? v.shape[0] : maxrows, cols = v.shape[1];
        dsq_qtensor q = {v.enc, v.shape[0], cols, v.group, v.data, v.scale, v.mins, v.tensor_scale};
        float *x = malloc(sizeof(float) * rows * cols), *imp = malloc(sizeof(float) * cols);
        uint8_t *blk = malloc(rows * cols / DSQ_KQ_BLOCK * 210);
        dsq_codec_options co = {.name = names[t]};
        if (!x || !imp || !blk || dsq_codec_decode(&q, 0, rows, x, &co, &err) != DSQ_OK) {
            fprintf(stderr, "kquant_real: %s: %s\n", names[t], err.msg);
            return 1;
        }
        kb_importance(imp, cols);
        values += (double)(rows * cols);
        for (int i = 0; i < NT; i++)
            for (int wi = 0; wi < 2; wi++) {
                const float *w = wi ? imp : NULL;
                double t0 = kb_now();
                if (dsq_kquant_encode(encs[i], x, rows, cols, w, false, blk, NULL) != DSQ_OK) return 1;
                double t1 = kb_now();
                double ours = dsq_kquant_weighted_sse(encs[i], x, rows, cols, w, blk);
                double t2 = kb_now();
                qc(dsq_kquant_ggml_type(encs[i]), x, blk, 0, (int64_t)rows, (int64_t)cols, w);
                double t3 = kb_now();
                double theirs = dsq_kquant_weighted_sse(encs[i], x, rows, cols, w, blk);
                double r = theirs > 0 ? sqrt(ours / theirs) : ours > 0 ? INFINITY : 1.0;
                t_ours[i] += t1 - t0, t_ggml[i] += t3 - t2;
                worst[i] = r > worst[i] ? r : worst[i];
                if (r > 1.0) {
                    printf("%s %s imatrix %s: ours/llama.cpp %.4f > 1\n", names[t], tn[i], wi ? "yes" : "no", r);
                    bad = 1;
                }
            }
        free(x), free(imp), free(blk);
    }
    printf("%s: %d tensors, up to %llu rows each; worst RMS error ratio ours/llama.cpp (no imatrix and imatrix); "
           "Mv/s = million values per CPU second\n",
           src, nn, (unsigned long long)maxrows);
    printf("%-7s %11s %9s %10s\n", "type", "worst ratio", "dsq Mv/s", "ggml Mv/s");
    for (int i = 0; i < NT; i++)
        printf("%-7s %11.4f %9.2f %10.2f\n", tn[i], worst[i], 2e-6 * values / t_ours[i], 2e-6 * values / t_ggml[i]);
    dsq_wsrc_close(ws);
    dlclose(lib);
    return bad || nn == 0;
}
