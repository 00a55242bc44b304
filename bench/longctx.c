/* Long-context cost of one decode step at the real V4-Flash attention shape (issue 11, docs/long-context.md):
 * what grows with the context is the indexer scoring of CSA layers (one score per compressed entry, n/4 of
 * them) and HCA attention (n/128 compressed entries); sliding-window attention and CSA attention touch a
 * bounded set (window W + index_topk entries).  This bench times the backend's indexer_topk and attention
 * for one query token on packed caches of 1K, 8K and 64K tokens (random entries, in the cache encoding
 * under test), per layer kind, and compares each time with the cost model
 *     t = a + b · (multiply-adds)
 * fitted on the 1K and 8K points: the 64K time predicted from the two short contexts against the measured
 * one.  The weights' part of a decode step (linear layers, MoE, head) does not depend on the context:
 * bench/forward measures it.  Last, the fitted model summed over positions 1…N gives the attention + indexer
 * time of a prefill of N tokens through the CSA + HCA slice of `dsq synth --from-layer 2 --layers 2`.
 *
 * Config: $DSQ_LONGCTX_CONFIG (default samples/configs/deepseek-v4-flash.json).  Environment:
 * DSQ_BENCH_THREADS (2), DSQ_BENCH_REPS (5; median and min-max reported), DSQ_LONGCTX_KV (compact). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsq_config.h"
#include "dsq_v4.h"
#include "dsq_v4_ops.h"
#include "v4_backend.h"

static long env_long(const char *name, long def) {
    const char *s = getenv(name);
    return s && *s ? atol(s) : def;
}

/* Process CPU time: on a shared, oversubscribed VM the wall time of a step mostly measures waiting for a core;
 * with one thread the CPU time is the step's own cost (DSQ_LONGCTX_WALL=1: wall time instead). */
static clockid_t clk = CLOCK_PROCESS_CPUTIME_ID;
static double now(void) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * 0x1p-24) * 2.0f - 1.0f;
}

enum { N_CTX = 3 };
static const int64_t ctx_len[N_CTX] = {1024, 8192, 65536};

typedef struct timing {
    double med, lo, hi;
} timing;

static timing time_reps(double *t, int reps) {
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    return (timing){reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]), t[0], t[reps - 1]};
}

int main(void) {
    const char *cfg_path = getenv("DSQ_LONGCTX_CONFIG") ? getenv("DSQ_LONGCTX_CONFIG")
                                                        : "samples/configs/deepseek-v4-flash.json";
    int threads = (int)env_long("DSQ_BENCH_THREADS", 2), reps = (int)env_long("DSQ_BENCH_REPS", 5);
    if (reps < 1 || reps > 64) reps = 5;
    if (env_long("DSQ_LONGCTX_WALL", 0)) clk = CLOCK_MONOTONIC;
    dsq_kv_cache kv = DSQ_KV_CACHE_COMPACT;
    if (getenv("DSQ_LONGCTX_KV") && !dsq_kv_cache_from_name(getenv("DSQ_LONGCTX_KV"), &kv)) {
        fprintf(stderr, "longctx: DSQ_LONGCTX_KV must be one of " DSQ_KV_CACHE_NAMES "\n");
        return 2;
    }
    dsq_v4_config c;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_config_load(cfg_path, &c, NULL, &e)) {
        fprintf(stderr, "longctx: %s\n", e.msg);
        return 1;
    }
    int H = c.n_heads, hd = c.head_dim, nih = c.index_n_heads, ihd = c.index_head_dim, W = c.window_size;
    int64_t topk = c.index_topk;
    dsq__run r;
    memset(&r, 0, sizeof r);
    r.c = &c;
    r.k.avx2 = dsq__cpu_has_avx2();
    r.k.threads = threads;
    r.kv = kv;
    r.kv_bytes = (size_t)dsq_kv_entry_bytes(&c, kv);
    r.idx_bytes = (size_t)dsq_kv_index_bytes(&c, kv);
    r.err = &e;
    const dsq__backend *be = &dsq__backend_cpu;

    /* one block's attention parameters: sinks, RoPE frequencies (only the inverse RoPE of the output uses them) */
    v4_block_w B;
    memset(&B, 0, sizeof B);
    float *sink = malloc(sizeof(float) * (size_t)H), *freqs = malloc(sizeof(float) * (size_t)c.rope_head_dim);
    for (int h = 0; h < H; h++) sink[h] = frand();
    for (int i = 0; i < c.rope_head_dim / 2; i++) freqs[i] = powf(10000.0f, -2.0f * (float)i / (float)c.rope_head_dim);
    B.attn_sink = sink;
    B.freqs = freqs;

    /* caches for the longest context: n/4 CSA entries + keys is the largest array; HCA uses a prefix */
    int64_t n_max = ctx_len[N_CTX - 1], comp_max = n_max / 4;
    float *row = malloc(sizeof(float) * (size_t)(hd > ihd ? hd : ihd));
    uint8_t *comp = malloc(r.kv_bytes * (size_t)comp_max), *ring = malloc(r.kv_bytes * (size_t)W);
    uint8_t *idx = malloc(r.idx_bytes * (size_t)comp_max);
    for (int64_t j = 0; j < comp_max; j++) {
        for (int i = 0; i < hd; i++) row[i] = frand();
        be->cache_pack(&r, false, row, 1, comp + (size_t)j * r.kv_bytes);
        for (int i = 0; i < ihd; i++) row[i] = frand();
        be->cache_pack(&r, true, row, 1, idx + (size_t)j * r.idx_bytes);
    }
    for (int j = 0; j < W; j++) {
        for (int i = 0; i < hd; i++) row[i] = frand();
        be->cache_pack(&r, false, row, 1, ring + (size_t)j * r.kv_bytes);
    }
    float *q = malloc(sizeof(float) * (size_t)H * hd), *oh = malloc(sizeof(float) * (size_t)H * hd);
    float *qi = malloc(sizeof(float) * (size_t)nih * ihd), *iw = malloc(sizeof(float) * (size_t)nih);
    for (int i = 0; i < H * hd; i++) q[i] = frand() * 0.05f;
    for (int i = 0; i < nih * ihd; i++) qi[i] = frand();
    for (int i = 0; i < nih; i++) iw[i] = frand() * 0.1f;
    float *buf = malloc(sizeof(float) * (size_t)(comp_max + ihd));
    int64_t *sel = malloc(sizeof(int64_t) * (size_t)topk);
    const uint8_t **keys = malloc(sizeof *keys * (size_t)(W + comp_max));

    printf("long-context decode step at the %s attention shape: H %d x hd %d, indexer %d x %d, top-k %lld, "
           "window %d; cache %s (kv entry %zu B, indexer key %zu B); %d threads, %d reps (median [min-max]), %s time\n",
           cfg_path, H, hd, nih, ihd, (long long)topk, W, dsq_kv_cache_name(kv), r.kv_bytes, r.idx_bytes, threads,
           reps, clk == CLOCK_MONOTONIC ? "wall" : "process CPU");
    printf("%-8s %-22s %12s %14s %22s\n", "context", "part", "keys", "multiply-adds", "time per token (us)");
    /* parts: 0 SWA attention, 1 CSA indexer, 2 CSA attention, 3 HCA attention */
    const char *part_name[4] = {"SWA attention", "CSA indexer scoring", "CSA attention (W+topk)", "HCA attention"};
    double macs[4][N_CTX], tmed[4][N_CTX];
    double t[64];
    for (int ci = 0; ci < N_CTX; ci++) {
        int64_t n = ctx_len[ci], ncsa = n / 4, nhca = n / 128;
        for (int part = 0; part < 4; part++) {
            int64_t n_keys = part == 1 ? ncsa : W + (part == 2 ? (ncsa < topk ? ncsa : topk) : part == 3 ? nhca : 0);
            macs[part][ci] = part == 1 ? (double)ncsa * nih * ihd : (double)n_keys * H * hd * 2;
            for (int j = 0; j < W; j++) keys[j] = ring + (size_t)j * r.kv_bytes;
            if (part == 3)
                for (int64_t j = 0; j < nhca; j++) keys[W + j] = comp + (size_t)j * r.kv_bytes;
            for (int rep = 0; rep < reps; rep++) {
                double t0 = now();
                if (part == 1) {
                    be->indexer_topk(&r, qi, iw, idx, ncsa, topk, buf, sel);
                } else {
                    if (part == 2) /* the keys the indexer picked */
                        for (int64_t j = 0; j < n_keys - W; j++) keys[W + j] = comp + (size_t)sel[j] * r.kv_bytes;
                    if (be->attention(&r, &B, q, keys, n_keys, n - 1, 1, oh)) {
                        fprintf(stderr, "longctx: %s\n", e.msg);
                        return 1;
                    }
                }
                t[rep] = now() - t0;
            }
            timing tm = time_reps(t, reps);
            tmed[part][ci] = tm.med;
            printf("%-8lld %-22s %12lld %14.3g %10.1f [%.1f-%.1f]\n", (long long)n, part_name[part], (long long)n_keys,
                   macs[part][ci], 1e6 * tm.med, 1e6 * tm.lo, 1e6 * tm.hi);
        }
    }
    /* cost model t = a + b·macs from the 1K and 8K points, checked at 64K */
    printf("\ncost model per part, fitted on 1K and 8K (t = a + b·MACs), predicted vs measured at 64K:\n");
    for (int part = 0; part < 4; part++) {
        double dm = macs[part][1] - macs[part][0];
        double b = dm > 0 ? (tmed[part][1] - tmed[part][0]) / dm : 0; /* no growth: the mean of the two */
        double a = dm > 0 ? tmed[part][0] - b * macs[part][0] : 0.5 * (tmed[part][0] + tmed[part][1]);
        double pred = a + b * macs[part][2];
        printf("  %-22s a %8.1f us, %6.2f GMAC/s marginal; 64K predicted %10.1f us, measured %10.1f us (%.2fx)\n",
               part_name[part], 1e6 * a, b > 0 ? 1e-9 / b : 0.0, 1e6 * pred, 1e6 * tmed[part][2],
               pred > 0 ? tmed[part][2] / pred : 0.0);
    }
    /* a V4-Flash decode step's context-dependent part: per layer kind, times the number of such layers */
    int n_swa = 0, n_csa = 0, n_hca = 0;
    for (int b = 0; b < c.n_layers + c.n_mtp_layers; b++) {
        dsq_attn_kind k = dsq_config_attn_kind(&c, b);
        n_swa += k == DSQ_ATTN_SLIDING;
        n_csa += k == DSQ_ATTN_CSA;
        n_hca += k == DSQ_ATTN_HCA;
    }
    printf("\nwhole model (%d SWA, %d CSA, %d HCA blocks incl. MTP): attention + indexer per decode token\n", n_swa,
           n_csa, n_hca);
    for (int ci = 0; ci < N_CTX; ci++)
        printf("  %6lld tokens: %8.2f ms\n", (long long)ctx_len[ci],
               1e3 * (n_swa * tmed[0][ci] + n_csa * (tmed[1][ci] + tmed[2][ci]) + n_hca * tmed[3][ci]));
    /* the V4-Flash slice of `dsq synth --from-layer 2 --layers 2` (one CSA, one HCA layer): a prefill of N tokens
     * spends Σ_{p<N} (indexer(p) + CSA attention(p) + HCA attention(p)) here, each part t = a + b·MACs(p) with
     * the a, b fitted above; the weights' part (projections, MoE, compressors) is the same per token at any
     * context (bench/forward) and is not included */
    double fa[4], fb[4];
    for (int part = 0; part < 4; part++) {
        double dm = macs[part][1] - macs[part][0];
        fb[part] = dm > 0 ? (tmed[part][1] - tmed[part][0]) / dm : 0;
        fa[part] = dm > 0 ? tmed[part][0] - fb[part] * macs[part][0] : 0.5 * (tmed[part][0] + tmed[part][1]);
    }
    printf("\nslice of one CSA + one HCA layer (dsq synth --from-layer 2 --layers 2), attention + indexer only, "
           "from the fitted model (%s time of %d thread%s):\n",
           clk == CLOCK_MONOTONIC ? "wall" : "CPU", threads, threads == 1 ? "" : "s");
    for (int ci = 0; ci < N_CTX; ci++) {
        double tot = 0, last = 0;
        for (int64_t p = 1; p <= ctx_len[ci]; p++) {
            double ncsa = (double)(p / 4), nsel = ncsa < (double)topk ? ncsa : (double)topk;
            double t_idx = p >= 4 ? fa[1] + fb[1] * ncsa * nih * ihd : 0;
            double t_csa = fa[2] + fb[2] * ((double)W + nsel) * H * hd * 2;
            double t_hca = fa[3] + fb[3] * ((double)W + (double)(p / 128)) * H * hd * 2;
            last = t_idx + t_csa + t_hca;
            tot += last;
        }
        printf("  prefill %6lld tokens: %9.1f s (%7.2f ms per token on average); decode step at the end: %7.2f ms\n",
               (long long)ctx_len[ci], tot, 1e3 * tot / (double)ctx_len[ci], 1e3 * last);
    }
    free(sink), free(freqs), free(row), free(comp), free(ring), free(idx), free(q), free(oh), free(qi), free(iw);
    free(buf), free(sel), free(keys);
    return 0;
}
