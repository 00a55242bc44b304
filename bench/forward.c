/* Forward-pass speed on 2 real-shaped V4-Flash layers (plus the real 129280×4096 embedding/head):
 * decode tokens/s against the memory-bandwidth ceiling (bytes of weights one decode step reads ÷
 * measured streaming-read bandwidth) and prefill GFLOP/s against a measured FMA peak.
 *
 * The model lives in $DSQ_BENCH_DIR (default /tmp/dsq-bench-flash-2l, ~8 GB).  When missing it is
 * made with `dsq synth --config <flash config> --layers 2`, or, where that command is not available,
 * by the small generator below (random codes and scales in the release dtypes).
 * Environment: DSQ_BENCH_THREADS (2), DSQ_BENCH_PREFILL (tokens, 128), DSQ_BENCH_DECODE (steps, 6). */
#include <cjson/cJSON.h>
#include <math.h>
#include <sys/stat.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsq_config.h"
#include "dsq_numeric.h"
#include "dsq_safetensors.h"
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

typedef struct gen {
    dsq_st_writer *w;
    uint64_t rng;
    uint8_t *chunk;
} gen;

static inline uint64_t rnd64(gen *g) {
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

enum kind { K_BF16, K_F32, K_FP8, K_FP8_SCALE, K_FP4, K_FP4_SCALE, K_TID, K_NORM };
typedef struct plan {
    char name[96];
    dsq_dtype dt;
    int rank;
    uint64_t shape[2];
    enum kind kind;
    float amp; /* weights: 1/sqrt(fan_in); scales: the scale byte */
} plan;

typedef struct plans {
    plan *p;
    size_t n, cap;
} plans;

static void add(plans *ps, enum kind k, dsq_dtype dt, uint64_t r, uint64_t c, float amp, const char *fmt, const char *a,
                int b) {
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 512;
        ps->p = realloc(ps->p, ps->cap * sizeof *ps->p);
    }
    plan *p = &ps->p[ps->n++];
    snprintf(p->name, sizeof p->name, fmt, a, b);
    p->dt = dt;
    p->rank = c ? 2 : 1;
    p->shape[0] = r;
    p->shape[1] = c;
    p->kind = k;
    p->amp = amp;
}

static void add_fp8(plans *ps, uint64_t r, uint64_t c, const char *P, const char *what) {
    char f[128];
    snprintf(f, sizeof f, "%%s%s.weight%%.0d", what);
    add(ps, K_FP8, DSQ_DTYPE_F8_E4M3, r, c, 0, f, P, 0);
    /* random e4m3 codes have an RMS near 90: scale so the weight RMS is ~1/sqrt(fan_in) */
    float sb = 127.0f - roundf(log2f(90.0f * sqrtf((float)c)));
    snprintf(f, sizeof f, "%%s%s.scale%%.0d", what);
    add(ps, K_FP8_SCALE, DSQ_DTYPE_F8_E8M0, (r + 127) / 128, (c + 127) / 128, sb, f, P, 0);
}

static void add_fp4(plans *ps, uint64_t r, uint64_t c, const char *P, int e, const char *w) {
    char f[128];
    snprintf(f, sizeof f, "%%sffn.experts.%%d.%s.weight", w);
    add(ps, K_FP4, DSQ_DTYPE_I8, r, c / 2, 0, f, P, e);
    float sb = 127.0f - roundf(log2f(2.9f * sqrtf((float)c)));
    snprintf(f, sizeof f, "%%sffn.experts.%%d.%s.scale", w);
    add(ps, K_FP4_SCALE, DSQ_DTYPE_F8_E8M0, r, c / 32, sb, f, P, e);
}

static void plan_model(const dsq_v4_config *c, plans *ps) {
    uint64_t D = c->dim, V = c->vocab_size, hc = (uint64_t)c->hc_mult, mix = (2 + hc) * hc;
    uint64_t H = (uint64_t)c->n_heads, hd = (uint64_t)c->head_dim, ql = (uint64_t)c->q_lora_rank;
    uint64_t G = (uint64_t)c->o_groups, ol = (uint64_t)c->o_lora_rank, I = (uint64_t)c->moe_inter_dim;
    add(ps, K_BF16, DSQ_DTYPE_BF16, V, D, 1.0f, "embed.weight%s%.0d", "", 0);
    add(ps, K_BF16, DSQ_DTYPE_BF16, V, D, 1.0f / sqrtf((float)D), "head.weight%s%.0d", "", 0);
    add(ps, K_NORM, DSQ_DTYPE_BF16, D, 0, 0, "norm.weight%s%.0d", "", 0);
    add(ps, K_F32, DSQ_DTYPE_F32, hc, hc * D, 0.05f, "hc_head_fn%s%.0d", "", 0);
    add(ps, K_F32, DSQ_DTYPE_F32, hc, 0, 0.5f, "hc_head_base%s%.0d", "", 0);
    add(ps, K_NORM, DSQ_DTYPE_F32, 1, 0, 0, "hc_head_scale%s%.0d", "", 0);
    for (int b = 0; b < c->n_layers + c->n_mtp_layers; b++) {
        char P[32];
        bool mtp = b >= c->n_layers;
        if (mtp) snprintf(P, sizeof P, "mtp.%d.", b - c->n_layers);
        else snprintf(P, sizeof P, "layers.%d.", b);
        add(ps, K_NORM, DSQ_DTYPE_BF16, D, 0, 0, "%sattn_norm.weight%.0d", P, 0);
        add(ps, K_NORM, DSQ_DTYPE_BF16, D, 0, 0, "%sffn_norm.weight%.0d", P, 0);
        add(ps, K_F32, DSQ_DTYPE_F32, mix, hc * D, 0.05f, "%shc_attn_fn%.0d", P, 0);
        add(ps, K_F32, DSQ_DTYPE_F32, mix, hc * D, 0.05f, "%shc_ffn_fn%.0d", P, 0);
        add(ps, K_F32, DSQ_DTYPE_F32, mix, 0, 0.5f, "%shc_attn_base%.0d", P, 0);
        add(ps, K_F32, DSQ_DTYPE_F32, mix, 0, 0.5f, "%shc_ffn_base%.0d", P, 0);
        add(ps, K_NORM, DSQ_DTYPE_F32, 3, 0, 0, "%shc_attn_scale%.0d", P, 0);
        add(ps, K_NORM, DSQ_DTYPE_F32, 3, 0, 0, "%shc_ffn_scale%.0d", P, 0);
        add_fp8(ps, ql, D, P, "attn.wq_a");
        add(ps, K_NORM, DSQ_DTYPE_BF16, ql, 0, 0, "%sattn.q_norm.weight%.0d", P, 0);
        add_fp8(ps, H * hd, ql, P, "attn.wq_b");
        add_fp8(ps, hd, D, P, "attn.wkv");
        add(ps, K_NORM, DSQ_DTYPE_BF16, hd, 0, 0, "%sattn.kv_norm.weight%.0d", P, 0);
        add_fp8(ps, G * ol, H * hd / G, P, "attn.wo_a");
        add_fp8(ps, D, G * ol, P, "attn.wo_b");
        add(ps, K_F32, DSQ_DTYPE_F32, H, 0, 0.5f, "%sattn.attn_sink%.0d", P, 0);
        if (c->compress_ratios[b] != 0) {
            fprintf(stderr, "bench generator: only sliding-window layers are generated\n");
            exit(1);
        }
        add(ps, K_BF16, DSQ_DTYPE_BF16, (uint64_t)c->n_routed_experts, D, 1.0f / sqrtf((float)D),
            "%sffn.gate.weight%.0d", P, 0);
        if (!mtp && b < c->n_hash_layers)
            add(ps, K_TID, DSQ_DTYPE_I64, V, (uint64_t)c->n_activated_experts, 0, "%sffn.gate.tid2eid%.0d", P, 0);
        else add(ps, K_F32, DSQ_DTYPE_F32, (uint64_t)c->n_routed_experts, 0, 0.1f, "%sffn.gate.bias%.0d", P, 0);
        for (int e = 0; e < c->n_routed_experts; e++) {
            add_fp4(ps, I, D, P, e, "w1");
            add_fp4(ps, D, I, P, e, "w2");
            add_fp4(ps, I, D, P, e, "w3");
        }
        add_fp8(ps, I, D, P, "ffn.shared_experts.w1");
        add_fp8(ps, D, I, P, "ffn.shared_experts.w2");
        add_fp8(ps, I, D, P, "ffn.shared_experts.w3");
        if (mtp) {
            add_fp8(ps, D, D, P, "e_proj");
            add_fp8(ps, D, D, P, "h_proj");
            add(ps, K_NORM, DSQ_DTYPE_BF16, D, 0, 0, "%senorm.weight%.0d", P, 0);
            add(ps, K_NORM, DSQ_DTYPE_BF16, D, 0, 0, "%shnorm.weight%.0d", P, 0);
            add(ps, K_NORM, DSQ_DTYPE_BF16, D, 0, 0, "%snorm.weight%.0d", P, 0);
            add(ps, K_F32, DSQ_DTYPE_F32, hc, hc * D, 0.05f, "%shc_head_fn%.0d", P, 0);
            add(ps, K_F32, DSQ_DTYPE_F32, hc, 0, 0.5f, "%shc_head_base%.0d", P, 0);
            add(ps, K_NORM, DSQ_DTYPE_F32, 1, 0, 0, "%shc_head_scale%.0d", P, 0);
        }
    }
}

static float urand(gen *g) { return (float)((rnd64(g) >> 11) * 0x1.0p-53 * 2.0 - 1.0); }

static int write_tensor(gen *g, const plan *p, const dsq_v4_config *c) {
    uint64_t n = p->shape[0] * (p->rank == 2 ? p->shape[1] : 1);
    size_t esz = dsq_dtype_size(p->dt), cap = (size_t)64 << 20;
    uint64_t per = cap / esz;
    for (uint64_t i0 = 0; i0 < n; i0 += per) {
        uint64_t m = n - i0 < per ? n - i0 : per;
        uint8_t *b = g->chunk;
        for (uint64_t i = 0; i < m; i++) {
            uint64_t idx = i0 + i;
            switch (p->kind) {
            case K_BF16: {
                uint16_t h = dsq_bf16_from_f32(p->amp * 1.7f * urand(g));
                memcpy(b + 2 * i, &h, 2);
                break;
            }
            case K_NORM:
                if (p->dt == DSQ_DTYPE_BF16) {
                    uint16_t h = dsq_bf16_from_f32(1.0f);
                    memcpy(b + 2 * i, &h, 2);
                } else {
                    float f = 1.0f;
                    memcpy(b + 4 * i, &f, 4);
                }
                break;
            case K_F32: {
                float f = p->amp * urand(g);
                memcpy(b + 4 * i, &f, 4);
                break;
            }
            case K_FP8: {
                uint8_t v = (uint8_t)rnd64(g);
                if ((v & 0x7f) == 0x7f) v--; /* no NaN codes */
                b[i] = v;
                break;
            }
            case K_FP4: b[i] = (uint8_t)rnd64(g); break;
            case K_FP8_SCALE:
            case K_FP4_SCALE: b[i] = (uint8_t)p->amp; break;
            case K_TID: {
                uint64_t k = idx % (uint64_t)c->n_activated_experts, v = idx / (uint64_t)c->n_activated_experts;
                int64_t e = (int64_t)((v * 37 + k * 41) % (uint64_t)c->n_routed_experts);
                memcpy(b + 8 * i, &e, 8);
                break;
            }
            }
        }
        dsq_err e = DSQ_ERR_INIT;
        if (dsq_st_writer_write(g->w, b, (size_t)(m * esz), &e)) {
            fprintf(stderr, "bench generator: %s\n", e.msg);
            return 1;
        }
    }
    return 0;
}

/* A 2-layer V4-Flash checkpoint with random codes, in the release layout. */
static int generate(const char *dir, const char *cfg_path) {
    char *text = NULL;
    size_t len = 0;
    if (dsq_read_file(cfg_path, 1 << 20, &text, &len, NULL)) return 1;
    cJSON *root = cJSON_Parse(text);
    dsq_free(text);
    if (!root) return 1;
    cJSON_ReplaceItemInObject(root, "num_hidden_layers", cJSON_CreateNumber(2));
    cJSON_ReplaceItemInObject(root, "num_hash_layers", cJSON_CreateNumber(2));
    int cr[3] = {0, 0, 0};
    cJSON_ReplaceItemInObject(root, "compress_ratios", cJSON_CreateIntArray(cr, 3));
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    mkdir(dir, 0755);
    char *cpath = dsq_path_join(dir, "config.json");
    dsq_err e = DSQ_ERR_INIT;
    int rc = dsq_write_file_atomic(cpath, out, strlen(out), true, &e) != DSQ_OK;
    free(out);
    dsq_v4_config c;
    if (!rc) rc = dsq_config_load(cpath, &c, NULL, &e) != DSQ_OK;
    dsq_free(cpath);
    if (rc) {
        fprintf(stderr, "bench generator: %s\n", e.msg);
        return 1;
    }
    plans ps = {0};
    plan_model(&c, &ps);
    char *mpath = dsq_path_join(dir, "model.safetensors");
    gen g = {NULL, 0x1234567887654321ull, malloc((size_t)64 << 20)};
    rc = dsq_st_writer_create(mpath, true, &g.w, &e) != DSQ_OK;
    for (size_t i = 0; !rc && i < ps.n; i++)
        rc = dsq_st_writer_add(g.w, ps.p[i].name, ps.p[i].dt, ps.p[i].rank, ps.p[i].shape, &e) != DSQ_OK;
    if (!rc) rc = dsq_st_writer_begin(g.w, &e) != DSQ_OK;
    double t0 = dsq_now();
    for (size_t i = 0; !rc && i < ps.n; i++) rc = write_tensor(&g, &ps.p[i], &c);
    if (!rc) rc = dsq_st_writer_finish(g.w, &e) != DSQ_OK;
    else dsq_st_writer_free(g.w);
    if (rc && e.n) fprintf(stderr, "bench generator: %s\n", e.msg);
    printf("generated %s in %.1f s\n", mpath, dsq_now() - t0);
    dsq_free(mpath);
    free(g.chunk);
    free(ps.p);
    return rc;
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
    printf("creating %s (2 V4-Flash layers) ...\n", dir);
    if (system(cmd) == 0) return 0;
    printf("dsq synth not available: using the bench's own generator\n");
    return generate(dir, cfg);
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
    int64_t n_prefill = env_long("DSQ_BENCH_PREFILL", 128), n_decode = env_long("DSQ_BENCH_DECODE", 6);
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
           c->n_layers, (unsigned long long)c->dim, c->n_routed_experts, c->n_activated_experts, wbytes / 1e9, macs / 1e9);

    dsq_eval_options o;
    dsq_eval_options_default(&o);
    o.threads = threads;
    int64_t n_tok = n_prefill > 32 + n_decode ? n_prefill : 32 + n_decode;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_tok);
    for (int64_t i = 0; i < n_tok; i++) tok[i] = (int32_t)((i * 7919 + 13) % (int64_t)c->vocab_size);
    float *logits = malloc(sizeof(float) * c->vocab_size * (size_t)n_tok);
    dsq_v4_seq *seq = NULL;
    if (dsq_v4_seq_create(m, &seq, &e)) return 1;

    /* warm the page cache and the caches of the sequence: a 32-token prefill */
    dsq_v4_item it = {seq, tok, 32, logits, NULL, NULL};
    if (dsq_v4_forward(m, &o, &it, 1, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    double t0 = dsq_now();
    for (int64_t s = 0; s < n_decode; s++) {
        dsq_v4_item st = {seq, tok + 32 + s, 1, logits, NULL, NULL};
        if (dsq_v4_forward(m, &o, &st, 1, &e)) return 1;
    }
    double dt = dsq_now() - t0;
    double dec_tps = (double)n_decode / dt, ceiling = bw * 1e9 / (double)wbytes;
    printf("decode:  %.3f tok/s (%lld steps, %.1f GB/s of weights); bandwidth ceiling %.3f tok/s; ratio %.2f "
           "(target 0.5)\n",
           dec_tps, (long long)n_decode, dec_tps * wbytes / 1e9, ceiling, dec_tps / ceiling);

    dsq_v4_seq_reset(seq);
    it = (dsq_v4_item){seq, tok, n_prefill, logits, NULL, NULL};
    t0 = dsq_now();
    if (dsq_v4_forward(m, &o, &it, 1, &e)) return 1;
    dt = dsq_now() - t0;
    /* linear layers + attention scores (QK and PV over min(t+1, W) keys, every head, every layer) */
    double flops = 2.0 * (double)macs * (double)n_prefill, attn = 0;
    for (int64_t t = 0; t < n_prefill; t++) attn += (double)(t + 1 < c->window_size ? t + 1 : c->window_size);
    flops += attn * 4.0 * c->n_heads * c->head_dim * c->n_layers;
    printf("prefill: %.2f tok/s (%lld tokens in %.2f s), %.1f GFLOP/s; FMA peak %.1f; ratio %.2f (target 0.3)\n",
           n_prefill / dt, (long long)n_prefill, dt, flops / dt / 1e9, peak, flops / dt / 1e9 / peak);
    dsq_v4_seq_free(seq);
    dsq_v4_model_close(m);
    free(tok);
    free(logits);
    return 0;
}
