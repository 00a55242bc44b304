/* Synthetic V4 checkpoints (dsq_synth.h): counter-based random values, spec §2.6 quantization,
 * streaming safetensors shards. */
#include "dsq_synth.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_json.h"
#include "dsq_numeric.h"
#include "dsq_safetensors.h"

#define GOLDEN_GAMMA   0x9E3779B97F4A7C15ull
#define NORMAL_TABLE   (1u << 16) /* quantiles of N(0,1), indexed by 16 random bits */
#define SYNTH_MAX_TOPK 64
#define COMB_DIAG      4.0f /* hc comb logits on the diagonal: softmax row ≈ [0.95, 0.017, ...] for hc = 4 */
#define FILL_BATCH     256  /* values generated per call when streaming unquantized tensors */

struct dsq_synth_gen {
    const dsq_v4_config *c;
    uint64_t seed;
    int threads;
    float normal[NORMAL_TABLE]; /* normal[i] = Φ⁻¹((i + ½) / 2¹⁶), rescaled to unit variance; odd */
};

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Word i of the stream `seed`: splitmix64 evaluated at counter i (random access, thread-free). */
static inline uint64_t rnd(uint64_t seed, uint64_t i) { return mix64(seed + (i + 1) * GOLDEN_GAMMA); }

/* Stream seed of one tensor: (run seed, FNV-1a of the name). */
static uint64_t tensor_seed(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return mix64(seed ^ mix64(h));
}

/* Inverse standard normal CDF, Acklam's rational approximation (relative error < 1.2e-9). */
static double inv_normal_cdf(double p) {
    static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                                1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                3.754408661907416e+00};
    const double p_low = 0.02425;
    if (p < p_low) {
        double q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    if (p > 1 - p_low) return -inv_normal_cdf(1 - p);
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

dsq_status dsq_synth_gen_create(const dsq_v4_config *c, uint64_t seed, int threads, dsq_synth_gen **out, dsq_err *err) {
    *out = NULL;
    dsq_synth_gen *g = dsq_malloc(sizeof *g);
    if (!g) return dsq_err_set(err, DSQ_ERR_NOMEM, "synth: out of memory");
    g->c = c;
    g->seed = seed;
    g->threads = threads > 0 ? threads : omp_get_max_threads();
    double var = 0;
    for (unsigned i = 0; i < NORMAL_TABLE / 2; i++) { /* lower half, mirrored: the table is exactly odd */
        double x = inv_normal_cdf((i + 0.5) / NORMAL_TABLE);
        g->normal[i] = (float)x;
        var += 2 * x * x;
    }
    float k = (float)(1.0 / sqrt(var / NORMAL_TABLE));
    for (unsigned i = 0; i < NORMAL_TABLE / 2; i++) {
        g->normal[i] *= k;
        g->normal[NORMAL_TABLE - 1 - i] = -g->normal[i];
    }
    *out = g;
    return DSQ_OK;
}

void dsq_synth_gen_free(dsq_synth_gen *g) { dsq_free(g); }

/* n consecutive N(0,1) values starting at element `first` of stream `seed`: element i is 16-bit lane
 * i mod 4 of word i / 4, through the quantile table. */
static inline void normals(const dsq_synth_gen *g, uint64_t seed, uint64_t first, size_t n, float *out) {
    size_t k = 0;
    while (k < n && ((first + k) & 3)) {
        uint64_t i = first + k;
        out[k++] = g->normal[(rnd(seed, i >> 2) >> ((i & 3) * 16)) & 0xffff];
    }
    for (; k + 4 <= n; k += 4) {
        uint64_t h = rnd(seed, (first + k) >> 2);
        out[k] = g->normal[h & 0xffff];
        out[k + 1] = g->normal[(h >> 16) & 0xffff];
        out[k + 2] = g->normal[(h >> 32) & 0xffff];
        out[k + 3] = g->normal[h >> 48];
    }
    for (; k < n; k++) {
        uint64_t i = first + k;
        out[k] = g->normal[(rnd(seed, i >> 2) >> ((i & 3) * 16)) & 0xffff];
    }
}

/* e4m3fn code of x, bit for bit dsq_e4m3_from_f32 (clamp to ±448, RNE, -0 kept, NaN → 0x7F) with
 * integer rounding instead of frexp/ldexp.  Compared exhaustively by tests/test_synth_inspect.c. */
static inline uint8_t e4m3_fast(float x) {
    uint32_t u = dsq_f32_bits(x);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7f;
    float a = fabsf(x);
    if (a > DSQ_E4M3_MAX) a = DSQ_E4M3_MAX;
    if (a < 0x1p-6f) { /* subnormal: multiples of 2^-9; adding 2^23 rounds to an integer, ties to even */
        float q = (a * 0x1p9f + 0x1p23f) - 0x1p23f;
        return (uint8_t)(sign | (uint8_t)q);
    }
    uint32_t b = dsq_f32_bits(a);
    b += 0x7ffffu + ((b >> 20) & 1u); /* RNE to 3 mantissa bits; a carry moves into the exponent */
    return (uint8_t)(sign | (uint8_t)((b >> 20) - (120u << 3))); /* exponent bias 127 → 7 */
}

/* e2m1 nibble of x, branch-free; bit for bit dsq_e2m1_from_f32 (clamp, RNE, ties to the even code:
 * 0.25→0, 0.75→1.0, 1.25→1.0, 1.75→2, 2.5→2, 3.5→4, 5→4). */
static inline uint8_t e2m1_fast(float x) {
    uint8_t sign = (uint8_t)((dsq_f32_bits(x) >> 28) & 8);
    float a = fabsf(x);
    uint8_t c =
        (uint8_t)((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f));
    return (uint8_t)(sign | c);
}

uint8_t dsq__synth_e4m3(float x) { return e4m3_fast(x); }
uint8_t dsq__synth_e2m1(float x) { return e2m1_fast(x); }

/* 1/s for a scale byte: 2^(127 - b), built from its bits (no libm call in the hot loops). */
static inline float inv_scale(uint8_t b) {
    return b >= 1 && b <= 253 ? dsq_bits_f32((uint32_t)(254 - b) << 23) : ldexpf(1.0f, 127 - (int)b);
}

/* ---- value model -------------------------------------------------------------------------------- */

typedef enum gen_mode { G_NORMAL, G_HC_BASE, G_HC_HEAD_BASE, G_TID2EID } gen_mode;

typedef struct tgen {
    const dsq_synth_gen *g;
    gen_mode mode;
    float mean, std;
    uint64_t seed;
    int hc;
    uint64_t cols;    /* logical columns K of a matrix (1 for vectors) */
    int n_experts, k; /* tid2eid */
} tgen;

static bool is_norm(dsq_part p) {
    return p == DSQ_PART_NORM || p == DSQ_PART_ATTN_NORM || p == DSQ_PART_FFN_NORM || p == DSQ_PART_Q_NORM ||
           p == DSQ_PART_KV_NORM || p == DSQ_PART_CMP_NORM || p == DSQ_PART_IDX_CMP_NORM || p == DSQ_PART_ENORM ||
           p == DSQ_PART_HNORM;
}

static tgen make_tgen(const dsq_synth_gen *g, const dsq_inv_entry *e) {
    const dsq_v4_config *c = g->c;
    tgen t = {g,
              G_NORMAL,
              0.0f,
              0.0f,
              tensor_seed(g->seed, e->name),
              c->hc_mult,
              1,
              c->n_routed_experts,
              c->n_activated_experts};
    if (e->rank == 2) t.cols = e->dtype == DSQ_DTYPE_I8 ? 2 * e->shape[1] : e->shape[1];
    dsq_part p = e->role.part;
    if (is_norm(p)) {
        t.mean = 1.0f;
        t.std = 0.02f;
    } else if (p == DSQ_PART_EMBED) {
        t.std = 1.0f;
    } else if (p == DSQ_PART_HC_ATTN_FN || p == DSQ_PART_HC_FFN_FN || p == DSQ_PART_HC_HEAD_FN) {
        t.std = 0.1f / sqrtf((float)t.cols);
    } else if (p == DSQ_PART_HC_ATTN_BASE || p == DSQ_PART_HC_FFN_BASE) {
        t.mode = G_HC_BASE;
        t.std = 0.01f;
    } else if (p == DSQ_PART_HC_HEAD_BASE) {
        t.mode = G_HC_HEAD_BASE;
        t.std = 0.01f;
    } else if (p == DSQ_PART_HC_ATTN_SCALE || p == DSQ_PART_HC_FFN_SCALE || p == DSQ_PART_HC_HEAD_SCALE) {
        t.mean = 1.0f;
        t.std = 0.01f;
    } else if (p == DSQ_PART_ATTN_SINK || p == DSQ_PART_GATE_BIAS) {
        t.std = 0.01f;
    } else if (p == DSQ_PART_CMP_APE || p == DSQ_PART_IDX_CMP_APE) {
        t.std = 0.02f;
    } else if (p == DSQ_PART_GATE_TID2EID) {
        t.mode = G_TID2EID;
    } else {
        t.std = 1.0f / sqrtf((float)t.cols); /* linear weight [N, K]: N(0, 1/K) */
    }
    return t;
}

/* pre entries of an HC base: sigmoid(b) = 1/hc. */
static float pre_logit(int hc) { return hc > 1 ? -logf((float)(hc - 1)) : COMB_DIAG; }

/* Values [first, first + n) of a tensor. */
static void values(const tgen *t, uint64_t first, size_t n, float *out) {
    normals(t->g, t->seed, first, n, out);
    const float mean = t->mean, std = t->std;
#pragma omp simd
    for (size_t k = 0; k < n; k++) out[k] = mean + std * out[k];
    if (t->mode == G_HC_BASE) {
        /* [pre (hc) | post (hc) | comb (hc x hc, row-major)], spec §4.2 */
        uint64_t hc = (uint64_t)t->hc;
        for (size_t k = 0; k < n; k++) {
            uint64_t i = first + k;
            if (i < hc)
                out[k] += pre_logit(t->hc);
            else if (i >= 2 * hc && (i - 2 * hc) / hc == (i - 2 * hc) % hc)
                out[k] += COMB_DIAG;
        }
    } else if (t->mode == G_HC_HEAD_BASE) {
        for (size_t k = 0; k < n; k++) out[k] += pre_logit(t->hc);
    }
}

static inline void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void put32f(uint8_t *p, float f) {
    uint32_t u = dsq_f32_bits(f);
    p[0] = (uint8_t)u;
    p[1] = (uint8_t)(u >> 8);
    p[2] = (uint8_t)(u >> 16);
    p[3] = (uint8_t)(u >> 24);
}

static inline void put_scale(uint8_t *dst, size_t i, uint8_t e8m0, dsq_dtype dt) {
    if (dt == DSQ_DTYPE_F32)
        put32f(dst + 4 * i, ldexpf(1.0f, (int)e8m0 - 127));
    else
        dst[i] = e8m0;
}

/* ---- generators per storage type ----------------------------------------------------------------- */

/* FP8 e4m3 [rows, K] in 128x128 blocks, spec §2.6: s = pow2ceil(amax/448), q = e4m3(w/s). */
static void gen_fp8(const tgen *t, uint64_t row0, uint64_t rows, uint64_t K, uint8_t *dst, uint8_t *scale,
                    dsq_dtype sdt) {
    const int64_t bands = (int64_t)dsq_ceil_div(rows, DSQ_FP8_BLOCK), cblocks = (int64_t)dsq_ceil_div(K, DSQ_FP8_BLOCK);
#pragma omp parallel for collapse(2) schedule(static) num_threads(t->g->threads)
    for (int64_t b = 0; b < bands; b++)
        for (int64_t cb = 0; cb < cblocks; cb++) {
            float blk[DSQ_FP8_BLOCK * DSQ_FP8_BLOCK]; /* [128 rows][128 cols] */
            uint64_t r_lo = (uint64_t)b * DSQ_FP8_BLOCK, c_lo = (uint64_t)cb * DSQ_FP8_BLOCK;
            uint64_t nr = rows - r_lo < DSQ_FP8_BLOCK ? rows - r_lo : DSQ_FP8_BLOCK;
            uint64_t nc = K - c_lo < DSQ_FP8_BLOCK ? K - c_lo : DSQ_FP8_BLOCK;
            float amax = 0.0f;
            for (uint64_t r = 0; r < nr; r++) {
                float *v = blk + r * DSQ_FP8_BLOCK;
                values(t, (row0 + r_lo + r) * K + c_lo, (size_t)nc, v);
#pragma omp simd reduction(max : amax)
                for (uint64_t j = 0; j < nc; j++) {
                    float a = fabsf(v[j]);
                    amax = a > amax ? a : amax; /* not fmaxf: a libm call in this loop; values are finite */
                }
            }
            uint8_t sb = dsq_fp8_scale_e8m0(amax);
            float inv = inv_scale(sb); /* 1/s, exact */
            for (uint64_t r = 0; r < nr; r++) {
                const float *v = blk + r * DSQ_FP8_BLOCK;
                uint8_t *o = dst + (r_lo + r) * K + c_lo;
#pragma omp simd
                for (uint64_t j = 0; j < nc; j++) o[j] = e4m3_fast(v[j] * inv);
            }
            if (scale) put_scale(scale, (size_t)(b * cblocks + cb), sb, sdt);
        }
}

/* Packed FP4 [rows, K/2] with 1x32 scales [rows, K/32], spec §2.6: s = pow2ceil(max(amax, 6·2^-126)/6). */
static void gen_fp4(const tgen *t, uint64_t row0, uint64_t rows, uint64_t K, uint8_t *dst, uint8_t *scale,
                    dsq_dtype sdt) {
    const uint64_t groups = K / DSQ_FP4_BLOCK;
#pragma omp parallel for schedule(static) num_threads(t->g->threads)
    for (int64_t r = 0; r < (int64_t)rows; r++) {
        uint8_t *out = dst + (uint64_t)r * (K / 2);
        for (uint64_t gi = 0; gi < groups; gi++) {
            float v[DSQ_FP4_BLOCK];
            values(t, (row0 + (uint64_t)r) * K + gi * DSQ_FP4_BLOCK, DSQ_FP4_BLOCK, v);
            float amax = 0.0f;
#pragma omp simd reduction(max : amax)
            for (int j = 0; j < DSQ_FP4_BLOCK; j++) {
                float a = fabsf(v[j]);
                amax = a > amax ? a : amax;
            }
            uint8_t sb = dsq_fp4_scale_e8m0(amax);
            float inv = inv_scale(sb);
            uint8_t codes[DSQ_FP4_BLOCK];
#pragma omp simd
            for (int j = 0; j < DSQ_FP4_BLOCK; j++) codes[j] = e2m1_fast(v[j] * inv);
            uint8_t *o = out + gi * (DSQ_FP4_BLOCK / 2);
            for (int j = 0; j < DSQ_FP4_BLOCK; j += 2) /* low nibble = even column, spec §2.3 */
                o[j / 2] = (uint8_t)(codes[j] | (codes[j + 1] << 4));
            if (scale) put_scale(scale, (size_t)((uint64_t)r * groups + gi), sb, sdt);
        }
    }
}

static void gen_plain(const tgen *t, uint64_t first, uint64_t n, dsq_dtype dt, uint8_t *dst) {
    const int64_t batches = (int64_t)dsq_ceil_div(n, FILL_BATCH);
    const size_t esize = dt == DSQ_DTYPE_BF16 ? 2 : 4;
#pragma omp parallel for schedule(static) num_threads(t->g->threads)
    for (int64_t b = 0; b < batches; b++) {
        float v[FILL_BATCH];
        uint64_t lo = (uint64_t)b * FILL_BATCH, m = n - lo < FILL_BATCH ? n - lo : FILL_BATCH;
        values(t, first + lo, (size_t)m, v);
        uint8_t *o = dst + lo * esize;
        if (dt == DSQ_DTYPE_BF16)
            for (uint64_t k = 0; k < m; k++) put16(o + 2 * k, dsq_bf16_from_f32(v[k]));
        else
            for (uint64_t k = 0; k < m; k++) put32f(o + 4 * k, v[k]);
    }
}

/* tid2eid [rows, k]: k distinct ids in [0, E) per token (k ≤ SYNTH_MAX_TOPK, checked by the writer). */
static void gen_tid2eid(const tgen *t, uint64_t row0, uint64_t rows, uint8_t *dst) {
    const int k = t->k, E = t->n_experts;
#pragma omp parallel for schedule(static) num_threads(t->g->threads)
    for (int64_t r = 0; r < (int64_t)rows; r++) {
        int64_t ids[SYNTH_MAX_TOPK];
        for (int j = 0; j < k && j < SYNTH_MAX_TOPK; j++) {
            int64_t id = -1;
            for (uint64_t attempt = 0; attempt < 64 && id < 0; attempt++) {
                uint64_t ctr = (((row0 + (uint64_t)r) * (uint64_t)k + (uint64_t)j) << 6) | attempt;
                int64_t cand = (int64_t)(rnd(t->seed, ctr) % (uint64_t)E);
                bool used = false;
                for (int q = 0; q < j; q++) used |= ids[q] == cand;
                if (!used) id = cand;
            }
            for (int64_t cand = 0; id < 0; cand++) { /* 64 collisions in a row: first free id */
                bool used = false;
                for (int q = 0; q < j; q++) used |= ids[q] == cand;
                if (!used) id = cand;
            }
            ids[j] = id;
            uint8_t *p = dst + ((uint64_t)r * (uint64_t)k + (uint64_t)j) * 8;
            for (int byte = 0; byte < 8; byte++) p[byte] = (uint8_t)((uint64_t)id >> (8 * byte));
        }
    }
}

void dsq_synth_rows(const dsq_synth_gen *g, const dsq_inv_entry *e, uint64_t row0, uint64_t rows, void *dst,
                    void *scale_out, dsq_dtype scale_dtype) {
    tgen t = make_tgen(g, e);
    uint8_t *out = dst, *sc = scale_out;
    uint64_t cols = e->rank == 2 ? e->shape[1] : 1;
    switch (e->dtype) {
    case DSQ_DTYPE_F8_E4M3:
        gen_fp8(&t, row0, rows, cols, out, sc, scale_dtype);
        break;
    case DSQ_DTYPE_I8:
        gen_fp4(&t, row0, rows, 2 * cols, out, sc, scale_dtype);
        break;
    case DSQ_DTYPE_I64:
        gen_tid2eid(&t, row0, rows, out);
        break;
    default:
        gen_plain(&t, row0 * cols, rows * cols, e->dtype, out);
        break;
    }
}

dsq_status dsq_synth_config_text(const char *json, size_t len, const char *what, int first, int layers, char **out,
                                 dsq_err *err) {
    *out = NULL;
    dsq_v4_config c;
    DSQ_TRY(dsq_config_parse(json, len, what, &c, NULL, err));
    if (first < 0 || first >= c.n_layers)
        return dsq_err_set(err, DSQ_ERR_ARG, "%s: first layer %d is not one of its %d layers", what, first, c.n_layers);
    if (layers == 0) layers = c.n_layers - first; /* from `first` to the end */
    if (layers < 0 || layers > c.n_layers - first)
        return dsq_err_set(err, DSQ_ERR_ARG, "%s: cannot keep %d layers of %d from layer %d", what, layers, c.n_layers,
                           first);
    if (first == 0 && layers == c.n_layers) { /* verbatim copy */
        char *t = dsq_malloc(len + 1);
        if (!t) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
        memcpy(t, json, len);
        t[len] = 0;
        *out = t;
        return DSQ_OK;
    }
    cJSON *root = NULL;
    DSQ_TRY(dsq_json_parse(json, len, what, &root, err));
    /* compress_ratios: entries first … first+layers-1, then every entry from num_hidden_layers on (MTP and
     * any later blocks) */
    cJSON *ratios = cJSON_CreateArray();
    bool ok = ratios != NULL;
    for (int i = 0; ok && i < c.n_compress_ratios; i++)
        if ((i >= first && i < first + layers) || i >= c.n_layers)
            ok = cJSON_AddItemToArray(ratios, cJSON_CreateNumber(c.compress_ratios[i]));
    ok = ok && cJSON_ReplaceItemInObjectCaseSensitive(root, "compress_ratios", ratios);
    if (!ok) cJSON_Delete(ratios);
    ok = ok && cJSON_ReplaceItemInObjectCaseSensitive(root, "num_hidden_layers", cJSON_CreateNumber(layers));
    /* hash layers are layers 0 … num_hash_layers-1: those inside the slice stay hash layers */
    int hash_end = c.n_hash_layers < first + layers ? c.n_hash_layers : first + layers;
    int n_hash = hash_end > first ? hash_end - first : 0;
    if (ok && cJSON_GetObjectItemCaseSensitive(root, "num_hash_layers"))
        ok = cJSON_ReplaceItemInObjectCaseSensitive(root, "num_hash_layers", cJSON_CreateNumber(n_hash));
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory adjusting the config", what);
    size_t n = strlen(text);
    char *t = dsq_malloc(n + 2);
    if (t) {
        memcpy(t, text, n);
        t[n] = '\n';
        t[n + 1] = 0;
    }
    cJSON_free(text);
    if (!t) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    dsq_status s = dsq_config_parse(t, n + 1, what, &c, NULL, err); /* the result must still be a V4 config */
    if (s != DSQ_OK) {
        dsq_free(t);
        return s;
    }
    *out = t;
    return DSQ_OK;
}

/* ---- writing a checkpoint ------------------------------------------------------------------------ */

typedef struct shard_plan {
    size_t first, count; /* inventory entries [first, first + count) */
    uint64_t bytes;
    char file[64];
} shard_plan;

static bool is_model_file(const char *name) {
    size_t n = strlen(name);
    if (!strcmp(name, DSQ_ST_INDEX_NAME)) return true;
    return !strncmp(name, "model", 5) && n > 12 && !strcmp(name + n - 12, ".safetensors");
}

/* Refuse to mix with an earlier checkpoint unless overwriting; with overwrite, list stale files. */
static dsq_status check_out_dir(const char *dir, const shard_plan *sp, size_t ns, bool overwrite, bool *stale,
                                dsq_err *err) {
    *stale = false;
    DIR *d = opendir(dir);
    if (!d) return dsq_err_set(err, DSQ_ERR_IO, "%s: cannot read directory: %s", dir, strerror(errno));
    dsq_status s = DSQ_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_model_file(de->d_name) && strcmp(de->d_name, "config.json") != 0) continue;
        if (!overwrite) {
            s = dsq_err_set(err, DSQ_ERR_EXISTS, "%s/%s: already exists (use --overwrite to replace the checkpoint)",
                            dir, de->d_name);
            break;
        }
        bool planned = !strcmp(de->d_name, "config.json") || (ns > 1 && !strcmp(de->d_name, DSQ_ST_INDEX_NAME));
        for (size_t i = 0; i < ns && !planned; i++) planned = !strcmp(de->d_name, sp[i].file);
        if (!planned) *stale = true;
    }
    closedir(d);
    return s;
}

static void remove_stale(const char *dir, const shard_plan *sp, size_t ns) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!is_model_file(de->d_name)) continue;
        bool planned = ns > 1 && !strcmp(de->d_name, DSQ_ST_INDEX_NAME);
        for (size_t i = 0; i < ns && !planned; i++) planned = !strcmp(de->d_name, sp[i].file);
        if (planned) continue;
        char *p = dsq_path_join(dir, de->d_name);
        if (p) unlink(p);
        dsq_free(p);
    }
    closedir(d);
}

/* model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {name: file, ...}} */
static dsq_status write_index(const char *dir, const dsq_inv *inv, const shard_plan *sp, size_t ns, uint64_t total,
                              bool overwrite, dsq_err *err) {
    size_t cap = 128;
    for (size_t i = 0; i < dsq_inv_count(inv); i++) cap += strlen(dsq_inv_at(inv, i)->name) + 64 + 8;
    char *buf = dsq_malloc(cap);
    if (!buf) return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for the index", dir);
    size_t n = (size_t)snprintf(buf, cap, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n",
                                (unsigned long long)total);
    for (size_t s = 0; s < ns; s++)
        for (size_t i = sp[s].first; i < sp[s].first + sp[s].count; i++)
            n += (size_t)snprintf(buf + n, cap - n, "    \"%s\": \"%s\"%s\n", dsq_inv_at(inv, i)->name, sp[s].file,
                                  i + 1 < dsq_inv_count(inv) ? "," : "");
    n += (size_t)snprintf(buf + n, cap - n, "  }\n}\n");
    char *path = dsq_path_join(dir, DSQ_ST_INDEX_NAME);
    dsq_status s =
        path ? dsq_write_file_atomic(path, buf, n, overwrite, err) : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    dsq_free(path);
    dsq_free(buf);
    return s;
}

typedef struct job {
    const dsq_synth_gen *gen;
    const dsq_inv *inv;
    uint8_t *chunk;
    size_t chunk_cap;
    uint8_t *scales; /* scale bytes of the last weight, written with the scale entry that follows it */
    size_t scales_len;
    dsq_progress progress;
} job;

static bool is_quant_weight(const dsq_inv_entry *e) {
    return e->dtype == DSQ_DTYPE_F8_E4M3 ||
           (e->dtype == DSQ_DTYPE_I8 && e->role.part >= DSQ_PART_EXPERT_W1 && e->role.part <= DSQ_PART_EXPERT_W3);
}

/* Rows generated per step: bounded by the chunk, a multiple of 128 for FP8 blocks. */
static uint64_t rows_per_step(const dsq_inv_entry *e, size_t chunk) {
    uint64_t row_bytes = (e->rank == 2 ? e->shape[1] : 1) * dsq_dtype_size(e->dtype);
    uint64_t r = chunk / row_bytes;
    if (e->dtype == DSQ_DTYPE_F8_E4M3) r = r / DSQ_FP8_BLOCK * DSQ_FP8_BLOCK;
    return r ? r : 1;
}

/* Stream tensor i into the writer (a scale entry: the bytes computed with its weight). */
static dsq_status write_tensor(job *jb, size_t i, dsq_st_writer *w, dsq_err *err) {
    const dsq_inv_entry *e = dsq_inv_at(jb->inv, i);
    if (e->role.is_scale) {
        if (jb->scales_len != e->n_bytes)
            return dsq_err_set(err, DSQ_ERR_STATE, "synth: %s: scales of its weight not available", e->name);
        DSQ_TRY(dsq_st_writer_write(w, jb->scales, jb->scales_len, err));
        dsq_progress_add(&jb->progress, e->n_bytes);
        jb->scales_len = 0;
        return DSQ_OK;
    }
    const dsq_inv_entry *se = dsq_inv_at(jb->inv, i + 1);
    bool scaled = is_quant_weight(e) && se && se->role.is_scale && se->role.part == e->role.part;
    uint64_t rows = e->shape[0], row_bytes = (e->rank == 2 ? e->shape[1] : 1) * dsq_dtype_size(e->dtype);
    uint64_t step = rows_per_step(e, jb->chunk_cap);
    uint64_t scale_cols = 0; /* scale elements per generated row band (FP8) or row (FP4) */
    if (scaled) {
        scale_cols = se->shape[1];
        jb->scales_len = (size_t)se->n_bytes;
    }
    size_t ssize = scaled ? dsq_dtype_size(se->dtype) : 0;
    for (uint64_t r0 = 0; r0 < rows; r0 += step) {
        if (dsq_interrupted()) return dsq_err_set(err, DSQ_ERR_INTERRUPTED, "synth: interrupted at %s", e->name);
        uint64_t n = rows - r0 < step ? rows - r0 : step;
        uint8_t *sc = NULL;
        if (scaled) {
            uint64_t scale_row = e->dtype == DSQ_DTYPE_F8_E4M3 ? r0 / DSQ_FP8_BLOCK : r0;
            sc = jb->scales + scale_row * scale_cols * ssize;
        }
        dsq_synth_rows(jb->gen, e, r0, n, jb->chunk, sc, scaled ? se->dtype : DSQ_DTYPE_F8_E8M0);
        DSQ_TRY(dsq_st_writer_write(w, jb->chunk, (size_t)(n * row_bytes), err));
        dsq_progress_add(&jb->progress, n * row_bytes);
    }
    return DSQ_OK;
}

static dsq_status write_shard(job *jb, const char *dir, const shard_plan *sp, bool overwrite, dsq_err *err) {
    char *path = dsq_path_join(dir, sp->file);
    if (!path) return dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
    dsq_st_writer *w = NULL;
    dsq_status s = dsq_st_writer_create(path, overwrite, &w, err);
    if (s == DSQ_OK) s = dsq_st_writer_meta(w, "format", "pt", err);
    for (size_t i = sp->first; s == DSQ_OK && i < sp->first + sp->count; i++) {
        const dsq_inv_entry *e = dsq_inv_at(jb->inv, i);
        s = dsq_st_writer_add(w, e->name, e->dtype, e->rank, e->shape, err);
    }
    if (s == DSQ_OK) s = dsq_st_writer_begin(w, err);
    for (size_t i = sp->first; s == DSQ_OK && i < sp->first + sp->count; i++) s = write_tensor(jb, i, w, err);
    if (s == DSQ_OK) {
        s = dsq_st_writer_finish(w, err); /* frees w */
        w = NULL;
    }
    dsq_st_writer_free(w);
    dsq_free(path);
    return s;
}

/* Consecutive inventory entries into shards of at most shard_size bytes (a tensor larger than that
 * gets a shard of its own).  Returns the number of shards. */
static size_t plan_shards(const dsq_inv *inv, uint64_t shard_size, shard_plan *sp) {
    size_t ns = 0;
    for (size_t i = 0; i < dsq_inv_count(inv); i++) {
        uint64_t b = dsq_inv_at(inv, i)->n_bytes;
        if (ns == 0 || (sp[ns - 1].count && sp[ns - 1].bytes + b > shard_size)) {
            memset(&sp[ns], 0, sizeof sp[ns]);
            sp[ns].first = i;
            ns++;
        }
        sp[ns - 1].count++;
        sp[ns - 1].bytes += b;
    }
    for (size_t s = 0; s < ns; s++) {
        if (ns == 1)
            snprintf(sp[s].file, sizeof sp[s].file, "model.safetensors");
        else
            snprintf(sp[s].file, sizeof sp[s].file, "model-%05zu-of-%05zu.safetensors", s + 1, ns);
    }
    return ns;
}

dsq_status dsq_synth_write(const char *config_path, const char *out_dir, const dsq_synth_options *opt_in,
                           dsq_synth_result *res, dsq_err *err) {
    dsq_synth_options opt = {0};
    if (opt_in) opt = *opt_in;
    if (res) memset(res, 0, sizeof *res);
    if (!opt.shard_size) opt.shard_size = DSQ_SYNTH_DEFAULT_SHARD;
    double t0 = dsq_now();

    char *text = NULL, *cfg_text = NULL;
    size_t len = 0;
    DSQ_TRY(dsq_read_file(config_path, DSQ_CONFIG_MAX_BYTES, &text, &len, err));
    dsq_status s = dsq_synth_config_text(text, len, config_path, opt.first_layer, opt.layers, &cfg_text, err);
    dsq_free(text);
    if (s != DSQ_OK) return s;
    dsq_v4_config c;
    s = dsq_config_parse(cfg_text, strlen(cfg_text), config_path, &c, NULL, err);
    if (s == DSQ_OK && c.n_activated_experts > SYNTH_MAX_TOPK)
        s = dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: num_experts_per_tok %d exceeds the %d synth supports",
                        config_path, c.n_activated_experts, SYNTH_MAX_TOPK);
    dsq_inv *inv = NULL;
    if (s == DSQ_OK) s = dsq_inv_expected(&c, NULL, &inv, err);
    shard_plan *sp = NULL;
    size_t ns = 0;
    job jb = {0};
    if (s == DSQ_OK) {
        sp = dsq_calloc(dsq_inv_count(inv), sizeof *sp);
        if (!sp) s = dsq_err_set(err, DSQ_ERR_NOMEM, "synth: out of memory");
    }
    if (s == DSQ_OK) {
        ns = plan_shards(inv, opt.shard_size, sp);
        if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
            s = dsq_err_set(err, DSQ_ERR_IO, "%s: cannot create directory: %s", out_dir, strerror(errno));
        else if (!dsq_path_is_dir(out_dir))
            s = dsq_err_set(err, DSQ_ERR_IO, "%s: not a directory", out_dir);
    }
    bool stale = false;
    if (s == DSQ_OK) s = check_out_dir(out_dir, sp, ns, opt.overwrite, &stale, err);
    if (s == DSQ_OK) {
        /* buffers: one chunk (big enough for a 128-row FP8 band or one row) and one tensor's scales */
        size_t chunk = DSQ_SYNTH_CHUNK, scales = 1;
        for (size_t i = 0; i < dsq_inv_count(inv); i++) {
            const dsq_inv_entry *e = dsq_inv_at(inv, i);
            uint64_t row_bytes = (e->rank == 2 ? e->shape[1] : 1) * dsq_dtype_size(e->dtype);
            uint64_t need = row_bytes * (e->dtype == DSQ_DTYPE_F8_E4M3 ? DSQ_FP8_BLOCK : 1);
            if (need > chunk) chunk = (size_t)need;
            if (e->role.is_scale && e->n_bytes > scales) scales = (size_t)e->n_bytes;
        }
        jb.inv = inv;
        jb.chunk_cap = chunk;
        jb.chunk = dsq_malloc_aligned(chunk);
        jb.scales = dsq_malloc(scales);
        if (!jb.chunk || !jb.scales)
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "synth: out of memory for %zu-byte buffers", chunk);
    }
    dsq_synth_gen *gen = NULL;
    if (s == DSQ_OK) s = dsq_synth_gen_create(&c, opt.seed, opt.threads, &gen, err);
    jb.gen = gen;
    if (s == DSQ_OK) {
        if (opt.progress) dsq_progress_begin(&jb.progress, "synth", dsq_inv_total_bytes(inv));
        for (size_t i = 0; s == DSQ_OK && i < ns; i++) s = write_shard(&jb, out_dir, &sp[i], opt.overwrite, err);
        if (opt.progress) dsq_progress_end(&jb.progress);
    }
    if (s == DSQ_OK && ns > 1) s = write_index(out_dir, inv, sp, ns, dsq_inv_total_bytes(inv), opt.overwrite, err);
    if (s == DSQ_OK) {
        char *cp = dsq_path_join(out_dir, "config.json");
        s = cp ? dsq_write_file_atomic(cp, cfg_text, strlen(cfg_text), opt.overwrite, err)
               : dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory");
        dsq_free(cp);
    }
    if (s == DSQ_OK && stale) remove_stale(out_dir, sp, ns);
    if (s == DSQ_OK && res) {
        res->n_tensors = dsq_inv_count(inv);
        res->n_shards = ns;
        res->bytes = dsq_inv_total_bytes(inv);
        res->seconds = dsq_now() - t0;
    }
    dsq_synth_gen_free(gen);
    dsq_free_aligned(jb.chunk);
    dsq_free(jb.scales);
    dsq_free(sp);
    dsq_inv_free(inv);
    dsq_free(cfg_text);
    return s;
}
