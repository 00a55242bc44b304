/* Ground truth for the k-quant encodings: ggml's own dequantizer (ggml_get_type_traits(type)->to_float
 * from libggml-base.so of the npm package @node-llama-cpp/linux-x64@3.22.1, which the Makefile installs
 * into .cache/npm) must give the same floats, bit for bit, as our decoder on
 *   - blocks of random bytes (every bit of every field; F16 super-scales kept finite),
 *   - blocks our encoder wrote for random and pathological tensors (zeros, constants, outliers, tiny,
 *     huge, negative-only, positive-only, one non-zero value, importance-weighted),
 *   - blocks ggml's own quantizer (ggml_quantize_chunk) wrote.
 * The library is dlopen'd; it is a test dependency only.  DSQ_GGML_LIB overrides its path. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "codec_util.h"
#include "dsq_kquant.h"

#define GGML_DEFAULT_LIB ".cache/npm/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so"

/* struct ggml_type_traits of ggml.h (ggml 0.25 as shipped in the package): the layout is checked at
 * run time below (name, block size and type size of each k-type must read back as expected). */
typedef void (*ggml_to_float_fn)(const void *x, float *y, int64_t k);
typedef struct ggml_type_traits {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    ggml_to_float_fn to_float;
    void *from_float_ref;
} ggml_type_traits;
typedef const ggml_type_traits *(*get_traits_fn)(int type);
typedef size_t (*quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                                    int64_t n_per_row, const float *imatrix);

static void *lib;
static get_traits_fn get_traits;
static quantize_chunk_fn quantize_chunk;

static const dsq_encoding kencs[] = {DSQ_ENC_Q2_K, DSQ_ENC_Q3_K, DSQ_ENC_Q4_K,
                                     DSQ_ENC_Q5_K, DSQ_ENC_Q6_K, DSQ_ENC_IQ4_XS};
static const char *const knames[] = {"q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_xs"};
enum { NK = 6 };

static int setup(void **state) {
    (void)state;
    const char *p = getenv("DSQ_GGML_LIB");
    lib = dlopen(p ? p : GGML_DEFAULT_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "cannot load %s: %s (run `make test`, which installs it)\n", p ? p : GGML_DEFAULT_LIB,
                dlerror());
        return -1;
    }
    *(void **)&get_traits = dlsym(lib, "ggml_get_type_traits");
    *(void **)&quantize_chunk = dlsym(lib, "ggml_quantize_chunk");
    return get_traits && quantize_chunk ? 0 : -1;
}
static int teardown(void **state) {
    (void)state;
    if (lib) dlclose(lib);
    return 0;
}

static const ggml_type_traits *traits(int i) {
    const ggml_type_traits *t = get_traits(dsq_kquant_ggml_type(kencs[i]));
    assert_non_null(t);
    assert_string_equal(t->type_name, knames[i]);
    assert_int_equal(t->blck_size, DSQ_KQ_BLOCK);
    assert_int_equal(t->type_size, dsq_kquant_block_bytes(kencs[i]));
    assert_true(t->is_quantized);
    assert_non_null(t->to_float);
    return t;
}

/* Decode nb blocks both ways and require identical bits. */
static void same_floats(int i, const uint8_t *blocks, int nb, const char *what) {
    const ggml_type_traits *t = traits(i);
    int bb = dsq_kquant_block_bytes(kencs[i]);
    float *ref = malloc(sizeof(float) * DSQ_KQ_BLOCK * (size_t)nb), ours[DSQ_KQ_BLOCK];
    t->to_float(blocks, ref, (int64_t)nb * DSQ_KQ_BLOCK);
    for (int b = 0; b < nb; b++) {
        dsq_kquant_decode_block(kencs[i], blocks + (size_t)b * (size_t)bb, ours);
        for (int e = 0; e < DSQ_KQ_BLOCK; e++) {
            float r = ref[b * DSQ_KQ_BLOCK + e];
            if (memcmp(&r, &ours[e], 4) != 0)
                fail_msg("%s, %s: block %d element %d: ggml %.9g, ours %.9g", knames[i], what, b, e, (double)r,
                         (double)ours[e]);
        }
    }
    free(ref);
}

/* Offsets of a block's F16 fields, to keep random blocks finite. */
static void halves(dsq_encoding e, int *a, int *b) {
    *b = -1;
    switch (e) {
    case DSQ_ENC_Q2_K:
        *a = 80, *b = 82;
        break;
    case DSQ_ENC_Q3_K:
        *a = 108;
        break;
    case DSQ_ENC_Q6_K:
        *a = 208;
        break;
    case DSQ_ENC_IQ4_XS:
        *a = 0;
        break;
    default:
        *a = 0, *b = 2;
        break;
    }
}

static void test_traits_layout(void **state) {
    (void)state;
    for (int i = 0; i < NK; i++) traits(i);
}

static void test_random_bytes(void **state) {
    (void)state;
    rng r = {7};
    enum { NB = 512 };
    for (int i = 0; i < NK; i++) {
        int bb = dsq_kquant_block_bytes(kencs[i]), a, b;
        halves(kencs[i], &a, &b);
        uint8_t *blk = malloc((size_t)bb * NB);
        for (size_t k = 0; k < (size_t)bb * NB; k++) blk[k] = (uint8_t)rng_u64(&r);
        for (int n = 0; n < NB; n++) {
            uint8_t *p = blk + (size_t)n * (size_t)bb;
            /* finite halves: exponent field below 31; every fourth block keeps subnormal/zero scales */
            int fa[2] = {a, b};
            for (int h = 0; h < 2; h++) {
                if (fa[h] < 0) continue;
                uint16_t v = (uint16_t)(p[fa[h]] | (p[fa[h] + 1] << 8));
                if ((v & 0x7c00) == 0x7c00) v &= 0xbfff;
                if (n % 4 == 3) v &= 0x83ff;
                p[fa[h]] = (uint8_t)v, p[fa[h] + 1] = (uint8_t)(v >> 8);
            }
        }
        same_floats(i, blk, NB, "random bytes");
        free(blk);
    }
}

enum { ROWS = 6, COLS = 1024 };

/* The pathological inputs: kind k fills x[ROWS][COLS]. */
static const char *fill_case(int k, rng *r, float *x) {
    uint64_t n = (uint64_t)ROWS * COLS;
    switch (k) {
    case 0:
        fill_gauss(r, x, n, 0.02f);
        return "gaussian";
    case 1:
        memset(x, 0, n * 4);
        return "zeros";
    case 2:
        for (uint64_t i = 0; i < n; i++) x[i] = 0.375f;
        return "constant";
    case 3:
        for (uint64_t i = 0; i < n; i++) x[i] = -1.25f;
        return "negative constant";
    case 4:
        fill_gauss(r, x, n, 0.01f);
        for (uint64_t i = 0; i < n; i += 97) x[i] = (i & 1 ? -1.0f : 1.0f) * 40.0f;
        return "outliers";
    case 5:
        fill_gauss(r, x, n, 1e-7f);
        return "tiny";
    case 6:
        fill_gauss(r, x, n, 3e4f);
        return "huge";
    case 7:
        for (uint64_t i = 0; i < n; i++) x[i] = -fabsf(rng_gauss(r));
        return "negative-only";
    case 8:
        for (uint64_t i = 0; i < n; i++) x[i] = fabsf(rng_gauss(r)) + 2.0f;
        return "positive-only, offset";
    case 9:
        memset(x, 0, n * 4);
        for (uint64_t i = 5; i < n; i += 256) x[i] = -3.0f;
        return "one value per block";
    case 10:
        for (uint64_t i = 0; i < n; i++) x[i] = (float)((i % 7) - 3) * 0.5f;
        return "integers";
    case 11:
        fill_gauss(r, x, n, 1e-30f);
        return "denormal-range";
    default:
        return NULL;
    }
}

static void test_our_blocks(void **state) {
    (void)state;
    rng r = {11};
    float *x = malloc(sizeof(float) * ROWS * COLS), imp[COLS];
    for (int c = 0; c < COLS; c++) imp[c] = (float)(rng_unit(&r) * rng_unit(&r) * 10.0);
    for (int i = 0; i < NK; i++) {
        int bb = dsq_kquant_block_bytes(kencs[i]);
        uint8_t *blk = malloc((size_t)bb * ROWS * COLS / DSQ_KQ_BLOCK);
        const char *what;
        for (int k = 0; (what = fill_case(k, &r, x)) != NULL; k++)
            for (int wi = 0; wi < 2; wi++) {
                assert_int_equal(dsq_kquant_encode(kencs[i], x, ROWS, COLS, wi ? imp : NULL, false, blk, NULL), DSQ_OK);
                same_floats(i, blk, ROWS * COLS / DSQ_KQ_BLOCK, what);
            }
        free(blk);
    }
    free(x);
}

static void test_ggml_blocks(void **state) {
    (void)state;
    rng r = {13};
    float *x = malloc(sizeof(float) * ROWS * COLS);
    for (int i = 0; i < NK; i++) {
        int bb = dsq_kquant_block_bytes(kencs[i]);
        uint8_t *blk = malloc((size_t)bb * ROWS * COLS / DSQ_KQ_BLOCK);
        const char *what;
        for (int k = 0; (what = fill_case(k, &r, x)) != NULL; k++) {
            size_t n = quantize_chunk(dsq_kquant_ggml_type(kencs[i]), x, blk, 0, ROWS, COLS, NULL);
            assert_int_equal(n, (size_t)bb * ROWS * COLS / DSQ_KQ_BLOCK);
            same_floats(i, blk, ROWS * COLS / DSQ_KQ_BLOCK, what);
        }
        free(blk);
    }
    free(x);
}

/* Issue 13's anchor: our encoder's importance-weighted squared error is at most llama.cpp's
 * (ggml_quantize_chunk with the same importance as imatrix; without one, both measured unweighted)
 * on the same tensors, for every k-type.  bench/kquant.c prints the full table. */
static void test_not_worse_than_ggml(void **state) {
    (void)state;
    rng r = {17};
    enum { R = 32, C = 1024 };
    float *x = malloc(sizeof(float) * R * C), imp[C];
    for (int c = 0; c < C; c++) imp[c] = (float)exp(1.5 * rng_gauss(&r));
    /* third tensor: FP4-shaped (an MXFP4 expert decoded: a power-of-two scale per 32 columns times an
     * e2m1 value), which the encoder passes as (value, summed weight) pairs */
    static const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (int kind = 0; kind < 3; kind++) {
        float s32 = 0;
        for (int i = 0; i < R * C; i++) {
            float v = 0.02f * rng_gauss(&r);
            x[i] = kind == 1 && rng_unit(&r) < 0.003 ? 12 * v : v; /* second tensor: sparse outliers */
            if (kind == 2) {
                if (i % 32 == 0) s32 = ldexpf(1.0f, -9 + (int)(rng_unit(&r) * 3));
                float g = fabsf(rng_gauss(&r)) * 2.0f; /* mostly small codes, as trained weights */
                int c = g < 0.25f ? 0 : g < 0.75f ? 1 : g < 1.25f ? 2 : g < 1.75f ? 3 : g < 2.5f ? 4 : g < 3.5f ? 5 : g < 5 ? 6 : 7;
                x[i] = (rng_unit(&r) < 0.5 ? -1.0f : 1.0f) * s32 * e2m1[c];
            }
        }
        for (int i = 0; i < NK; i++) {
            int bb = dsq_kquant_block_bytes(kencs[i]);
            uint8_t *blk = malloc((size_t)bb * R * C / DSQ_KQ_BLOCK);
            for (int wi = 0; wi < 2; wi++) {
                const float *w = wi ? imp : NULL;
                assert_int_equal(dsq_kquant_encode(kencs[i], x, R, C, w, false, blk, NULL), DSQ_OK);
                double ours = dsq_kquant_weighted_sse(kencs[i], x, R, C, w, blk);
                quantize_chunk(dsq_kquant_ggml_type(kencs[i]), x, blk, 0, R, C, w);
                double theirs = dsq_kquant_weighted_sse(kencs[i], x, R, C, w, blk);
                printf("  %s tensor %d imatrix %s: error ratio ours/ggml %.4f\n", knames[i], kind, wi ? "yes" : "no",
                       ours / theirs);
                assert_true(ours <= theirs);
            }
            free(blk);
        }
    }
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits_layout),       cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_our_blocks),          cmocka_unit_test(test_ggml_blocks),
        cmocka_unit_test(test_not_worse_than_ggml),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
