/* Forward-pass speed on 2 real-shaped V4-Flash layers (plus the real 129280×4096 embedding/head):
 * decode tokens/s against the memory-bandwidth ceiling (bytes of weights one decode step reads ÷
 * measured streaming-read bandwidth) and prefill GFLOP/s against a measured FMA peak.
 *
 * The model lives in $DSQ_BENCH_DIR (default /tmp/dsq-bench-flash-2l, ~13 GB with the MTP block).
 * When missing it is made with `dsq synth --config samples/configs/deepseek-v4-flash.json --layers 2`.
 * Environment: DSQ_BENCH_THREADS (2), DSQ_BENCH_PREFILL (tokens, 128), DSQ_BENCH_DECODE (steps, 16). */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsq_config.h"
#include "dsq_v4.h"

static long env_long(const char *name, long def) {
    const char *s = getenv(name);
    return s && *s ? atol(s) : def;
}

/* ---- machine ceilings ------------------------------------------------------------------------- */

static double read_bandwidth(int threads) {
    size_t n = (size_t)1 << 27; /* 1 GiB of uint64 */
    uint64_t *buf = malloc(n * sizeof *buf);
    if (!buf) return 0;
#pragma omp parallel for num_threads(threads)
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
    double best = 0;
    uint64_t sink = 0;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = dsq_now();
        uint64_t s = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += buf[i];
        double dt = dsq_now() - t0;
        sink += s;
        double gbs = (double)n * sizeof *buf / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    if (sink == 42) printf(" ");
    return best;
}

static double fma_peak(int threads) {
    const long iters = 20000000;
    double t0 = dsq_now();
    float out = 0;
#pragma omp parallel num_threads(threads) reduction(+ : out)
    {
        __m256 a[10], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
        for (int i = 0; i < 10; i++) a[i] = _mm256_set1_ps((float)i);
        for (long it = 0; it < iters; it++)
            for (int i = 0; i < 10; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
        float l[8];
        for (int i = 1; i < 10; i++) a[0] = _mm256_add_ps(a[0], a[i]);
        _mm256_storeu_ps(l, a[0]);
        out += l[0];
    }
    double dt = dsq_now() - t0;
    if (out == 42) printf(" ");
    return (double)iters * 10 * 8 * 2 * threads / dt / 1e9;
}

/* ---- model ---------------------------------------------------------------------------------------- */

static const char *flash_config_path(void) {
    static const char *cands[] = {"samples/configs/deepseek-v4-flash.json", "../shared/configs/deepseek-v4-flash.json"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (dsq_path_exists(cands[i])) return cands[i];
    return NULL;
}

static int ensure_model(const char *dir) {
    char *cj = dsq_path_join(dir, "config.json");
    bool have = dsq_path_exists(cj);
    dsq_free(cj);
    if (have) return 0;
    const char *cfg = flash_config_path();
    if (!cfg) {
        fprintf(stderr, "bench: no deepseek-v4-flash.json config found\n");
        return 1;
    }
    const char *bin = getenv("DSQ_BIN");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' synth --config '%s' --layers 2 --out '%s' >/dev/null 2>&1", bin ? bin : "build/dsq",
             cfg, dir);
    printf("creating %s with dsq synth (2 V4-Flash layers + MTP, ~13 GB) ...\n", dir);
    if (system(cmd) == 0) return 0;
    fprintf(stderr, "bench: '%s' failed\n", cmd);
    return 1;
}

int main(int argc, char **argv) {
    /* The bench shares its machine (CI, other jobs): idle OpenMP threads must sleep, not spin, or
     * they steal the time slices of the working ones.  libgomp reads this at load: re-exec once. */
    if (!getenv("OMP_WAIT_POLICY") && argc >= 1) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    const char *dir = getenv("DSQ_BENCH_DIR") ? getenv("DSQ_BENCH_DIR") : "/tmp/dsq-bench-flash-2l";
    int threads = (int)env_long("DSQ_BENCH_THREADS", 2);
    int64_t n_prefill = env_long("DSQ_BENCH_PREFILL", 128), n_decode = env_long("DSQ_BENCH_DECODE", 16);
    if (ensure_model(dir)) return 1;

    double bw = read_bandwidth(threads), peak = fma_peak(threads);
    printf("machine: %d threads, streaming read %.2f GB/s, FMA peak %.1f GFLOP/s (AVX2 f32)\n", threads, bw, peak);

    dsq_v4_model *m = NULL;
    dsq_err e = DSQ_ERR_INIT;
    if (dsq_v4_model_open(dir, &m, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    const dsq_v4_config *c = dsq_v4_model_config(m);
    uint64_t wbytes = 0, macs = 0;
    dsq_v4_token_cost(m, &wbytes, &macs);
    printf("model: %d layers (dim %llu, %d experts, top-%d), %.2f GB of weights read per decode token, %.2f GMAC "
           "per token\n",
           c->n_layers, (unsigned long long)c->dim, c->n_routed_experts, c->n_activated_experts, wbytes / 1e9,
           macs / 1e9);

    dsq_eval_options o;
    dsq_eval_options_default(&o);
    o.threads = threads;
    if (n_prefill < 1 || n_decode < 1) return 1;
    int64_t n_tok = n_prefill + n_decode;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_tok);
    for (int64_t i = 0; i < n_tok; i++) tok[i] = (int32_t)((i * 7919 + 13) % (int64_t)c->vocab_size);
    float *logits = malloc(sizeof(float) * c->vocab_size * (size_t)n_tok);
    dsq_v4_seq *seq = NULL;
    if (dsq_v4_seq_create(m, &seq, &e)) return 1;

    /* warm-up (untimed): a prefill that maps the weights, as a long evaluation keeps them mapped
     * (the first touch of an expert's pages costs page faults, not bandwidth) */
    dsq_v4_item it = {seq, tok, n_prefill, logits, NULL, NULL};
    if (dsq_v4_forward(m, &o, &it, 1, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    /* prefill of n_prefill tokens on a fresh sequence */
    dsq_v4_seq_reset(seq);
    double t0 = dsq_now();
    if (dsq_v4_forward(m, &o, &it, 1, &e)) return 1;
    double dt = dsq_now() - t0;
    /* linear layers + attention scores (QK and PV over min(t+1, W) keys, every head, every layer) */
    double flops = 2.0 * (double)macs * (double)n_prefill, attn = 0;
    for (int64_t t = 0; t < n_prefill; t++) attn += (double)(t + 1 < c->window_size ? t + 1 : c->window_size);
    flops += attn * 4.0 * c->n_heads * c->head_dim * c->n_layers;
    printf("prefill: %.2f tok/s (%lld tokens in %.2f s), %.1f GFLOP/s; FMA peak %.1f; ratio %.2f (target 0.3)\n",
           n_prefill / dt, (long long)n_prefill, dt, flops / dt / 1e9, peak, flops / dt / 1e9 / peak);
    /* then decode, one token at a time, continuing that sequence */
    t0 = dsq_now();
    for (int64_t s = 0; s < n_decode; s++) {
        dsq_v4_item st = {seq, tok + n_prefill + s, 1, logits, NULL, NULL};
        if (dsq_v4_forward(m, &o, &st, 1, &e)) return 1;
    }
    dt = dsq_now() - t0;
    double dec_tps = (double)n_decode / dt, ceiling = bw * 1e9 / (double)wbytes;
    printf("decode:  %.3f tok/s (%lld steps, %.1f GB/s of weights); bandwidth ceiling %.3f tok/s; ratio %.2f "
           "(target 0.5)\n",
           dec_tps, (long long)n_decode, dec_tps * wbytes / 1e9, ceiling, dec_tps / ceiling);
    dsq_v4_seq_free(seq);
    dsq_v4_model_close(m);
    free(tok);
    free(logits);
    return 0;
}
