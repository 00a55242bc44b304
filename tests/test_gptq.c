/* GPTQ (lib/quant/gptq.c): the Cholesky factor of a known inverse, and on a synthetic linear with
 * correlated inputs of uneven scale, the output error ‖(W−Q)X‖² of GPTQ below round-to-nearest and
 * below importance-weighted round-to-nearest, for every encoding family; the stored bytes decode to
 * exactly the values GPTQ reports; the thread count does not change the bytes. */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dsq_codec.h"
#include "dsq_gptq.h"

/* A = [[4, 2, 0.6], [2, 2, 0.5], [0.6, 0.5, 3]] (det 11.48): U upper with A⁻¹ = Uᵀ·U, checked by
 * multiplying back (A·Uᵀ·U = I to 1e-12) and against two closed forms: U[0][0]² = (A⁻¹)[0][0] =
 * (2·3 − 0.5²)/det, and U[2][2] = 1/sqrt(A[2][2]) (U⁻¹ is the upper factor of A, whose last diagonal is
 * sqrt(A[n-1][n-1]): the last column's GPTQ divisor). */
static void test_chol_inverse_known(void **state) {
    (void)state;
    const double a0[9] = {4, 2, 0.6, 2, 2, 0.5, 0.6, 0.5, 3};
    double u[9];
    memcpy(u, a0, sizeof u);
    dsq_err e = DSQ_ERR_INIT;
    assert_int_equal(dsq_gptq_chol_inverse_upper(u, 3, &e), DSQ_OK);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < i; j++) assert_true(u[i * 3 + j] == 0.0);
    double inv[9] = {0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 3; k++) inv[i * 3 + j] += u[k * 3 + i] * u[k * 3 + j];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double s = 0;
            for (int k = 0; k < 3; k++) s += a0[i * 3 + k] * inv[k * 3 + j];
            assert_true(fabs(s - (i == j)) < 1e-12);
        }
    assert_true(fabs(u[0] - sqrt(5.75 / 11.48)) < 1e-12);
    assert_true(fabs(u[8] - 1 / sqrt(3.0)) < 1e-12);
    /* not positive definite */
    double bad[4] = {1, 2, 2, 1};
    assert_int_equal(dsq_gptq_chol_inverse_upper(bad, 2, &e), DSQ_ERR_RANGE);
    dsq_err_clear(&e);
}

/* A 700x700 SPD matrix (several 64-column blocks and two 512-column tiles, a partial last block): U upper
 * with a positive diagonal and A·Uᵀ·U = I to 1e-9 (U is then the unique such factor), and the same
 * bytes at 1 and 3 threads. */
static void test_chol_inverse_blocked(void **state) {
    (void)state;
    enum { N = 700 };
    double *a = malloc(sizeof(double) * N * N), *u = malloc(sizeof(double) * N * N), *u1 = malloc(sizeof(double) * N * N);
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) /* A = B·Bᵀ/N + 0.1·I for B with entries in [-1, 1]: cond ~ 1e2..1e3 */
        for (int j = 0; j <= i; j++) a[i * N + j] = 0;
    double *b = malloc(sizeof(double) * N * N);
    for (int i = 0; i < N * N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        b[i] = (double)(x >> 11) / 4503599627370496.0 - 1.0;
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) {
            double t = 0;
            for (int k = 0; k < N; k++) t += b[i * N + k] * b[j * N + k];
            a[i * N + j] = a[j * N + i] = t / N + (i == j ? 0.1 : 0);
        }
    dsq_err e = DSQ_ERR_INIT;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    memcpy(u1, a, sizeof(double) * N * N);
    assert_int_equal(dsq_gptq_chol_inverse_upper(u1, N, &e), DSQ_OK);
    omp_set_num_threads(3);
    memcpy(u, a, sizeof(double) * N * N);
    assert_int_equal(dsq_gptq_chol_inverse_upper(u, N, &e), DSQ_OK);
    omp_set_num_threads(saved);
    assert_memory_equal(u, u1, sizeof(double) * N * N);
    for (int i = 0; i < N; i++) {
        assert_true(u[i * N + i] > 0);
        for (int j = 0; j < i; j++) assert_true(u[i * N + j] == 0.0);
    }
    /* M = Uᵀ·U (b reused), then A·M */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double t = 0;
            int k1 = i < j ? i : j;
            for (int k = 0; k <= k1; k++) t += u[k * N + i] * u[k * N + j];
            b[i * N + j] = t;
        }
    double worst = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double t = 0;
            for (int k = 0; k < N; k++) t += a[i * N + k] * b[k * N + j];
            double d = fabs(t - (i == j));
            worst = d > worst ? d : worst;
        }
    fprintf(stderr, "700x700: max |A·UᵀU − I| = %.3g\n", worst);
    assert_true(worst < 1e-9);
    /* not positive definite (H[699][699] < 0, the first pivot of the reversed factorisation): refused */
    memcpy(u, a, sizeof(double) * N * N);
    u[(N - 1) * N + (N - 1)] = -1;
    assert_int_equal(dsq_gptq_chol_inverse_upper(u, N, &e), DSQ_ERR_RANGE);
    dsq_err_clear(&e);
    free(a), free(u), free(u1), free(b);
}

enum { ROWS = 32, COLS = 256, TOK = 1024 };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double gauss(void) {
    double u1, u2;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    u1 = ((rng >> 11) + 0.5) / 9007199254740992.0;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    u2 = ((rng >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct fixture {
    float w[ROWS * COLS];
    double h[COLS * COLS];
} fixture;

/* Inputs: each token x = scale_c · (z_c + 0.8·z_{c-1} + 0.5·z_{c-2}) (neighbouring columns correlated),
 * column scales spread over 1/8 … 4; weights Gaussian with a few outliers. */
static fixture *make_fixture(void) {
    fixture *f = calloc(1, sizeof *f);
    rng = 0x9e3779b97f4a7c15ull;
    double scale[COLS], z[COLS], x[COLS];
    for (int c = 0; c < COLS; c++) scale[c] = pow(2.0, -3 + 5.0 * (double)((c * 37) % COLS) / COLS);
    for (int t = 0; t < TOK; t++) {
        for (int c = 0; c < COLS; c++) z[c] = gauss();
        for (int c = 0; c < COLS; c++)
            x[c] = scale[c] * (z[c] + (c > 0 ? 0.8 * z[c - 1] : 0) + (c > 1 ? 0.5 * z[c - 2] : 0));
        for (int i = 0; i < COLS; i++)
            for (int j = 0; j < COLS; j++) f->h[i * COLS + j] += x[i] * x[j];
    }
    for (int i = 0; i < ROWS * COLS; i++) f->w[i] = (float)(0.02 * gauss() * ((i % 97) == 0 ? 6 : 1));
    return f;
}

typedef struct encbuf {
    dsq_qtensor_buf b;
    uint8_t *mem;
} encbuf;

static void enc_alloc(encbuf *e, dsq_encoding enc, int group) {
    dsq_codec_layout l;
    assert_int_equal(dsq_codec_layout_of(enc, ROWS, COLS, group, &l, NULL), DSQ_OK);
    e->mem = calloc(1, (size_t)(l.data_bytes + l.scale_bytes + l.min_bytes + 1));
    e->b = (dsq_qtensor_buf){enc, ROWS, COLS, group, e->mem, l.scale_bytes ? e->mem + l.data_bytes : NULL,
                             l.min_bytes ? e->mem + l.data_bytes + l.scale_bytes : NULL, 0};
}

/* Round-to-nearest (imp NULL) or importance-weighted encode, decoded. */
static void rtn(dsq_encoding enc, int group, const float *w, const float *imp, float *out) {
    encbuf e;
    enc_alloc(&e, enc, group);
    dsq_codec_options co = {.importance = imp};
    assert_int_equal(dsq_codec_encode(&e.b, w, 0, ROWS, &co, NULL), DSQ_OK);
    dsq_qtensor v = dsq_qtensor_view(&e.b);
    assert_int_equal(dsq_codec_decode(&v, 0, ROWS, out, NULL, NULL), DSQ_OK);
    free(e.mem);
}

/* GPTQ into a fresh buffer: returns its decoded values in out and the buffer bytes' hash-free copy. */
static void gptq(const fixture *f, dsq_encoding enc, int group, bool act_order, int threads, float *out, encbuf *keep) {
    encbuf e;
    enc_alloc(&e, enc, group);
    double *h = malloc(sizeof f->h);
    memcpy(h, f->h, sizeof f->h);
    memcpy(out, f->w, sizeof f->w);
    dsq_gptq_options o;
    dsq_gptq_options_default(&o);
    o.act_order = act_order;
    o.threads = threads;
    o.block = 64; /* several lazy blocks in a 256-column row */
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_gptq_quantize(&o, h, TOK, out, &e.b, &err);
    if (s != DSQ_OK) fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(s, DSQ_OK);
    dsq_err_clear(&err);
    free(h);
    /* the stored bytes decode to exactly what GPTQ reports */
    float *dec = malloc(sizeof f->w);
    dsq_qtensor v = dsq_qtensor_view(&e.b);
    assert_int_equal(dsq_codec_decode(&v, 0, ROWS, dec, NULL, NULL), DSQ_OK);
    assert_memory_equal(dec, out, sizeof f->w);
    free(dec);
    if (keep) *keep = e;
    else free(e.mem);
}

static void check_family(const fixture *f, dsq_encoding enc, int group) {
    float *q = malloc(sizeof f->w), *r = malloc(sizeof f->w), *ri = malloc(sizeof f->w), *qa = malloc(sizeof f->w);
    float imp[COLS];
    for (int c = 0; c < COLS; c++) imp[c] = (float)(f->h[c * COLS + c] / TOK);
    rtn(enc, group, f->w, NULL, r);
    rtn(enc, group, f->w, imp, ri);
    gptq(f, enc, group, false, 0, q, NULL);
    gptq(f, enc, group, true, 0, qa, NULL);
    double er = dsq_gptq_output_error(f->w, r, ROWS, COLS, f->h), ei = dsq_gptq_output_error(f->w, ri, ROWS, COLS, f->h);
    double eg = dsq_gptq_output_error(f->w, q, ROWS, COLS, f->h), ea = dsq_gptq_output_error(f->w, qa, ROWS, COLS, f->h);
    char nm[48];
    fprintf(stderr, "%-16s rtn %.4g  imatrix-rtn %.4g  gptq %.4g (%.2fx)  gptq act-order %.4g (%.2fx)\n",
            dsq_codec_name(enc, group, nm, sizeof nm), er, ei, eg, eg / ei, ea, ea / ei);
    assert_true(eg < er);
    assert_true(eg < ei);
    assert_true(ea < ei);
    free(q), free(r), free(ri), free(qa);
}

static void test_gptq_beats_rtn(void **state) {
    fixture *f = *state;
    const struct {
        dsq_encoding e;
        int g;
    } fam[] = {{DSQ_ENC_Q2_K, 0},        {DSQ_ENC_Q3_K, 0},         {DSQ_ENC_Q4_K, 0},        {DSQ_ENC_Q5_K, 0},
               {DSQ_ENC_Q6_K, 0},        {DSQ_ENC_IQ4_XS, 0},       {DSQ_ENC_INT4_G, 32},     {DSQ_ENC_INT4_G_ASYM, 64},
               {DSQ_ENC_INT8_G, 32},     {DSQ_ENC_INT2_G_ASYM, 32}, {DSQ_ENC_INT8_ROW, 0},    {DSQ_ENC_NVFP4, 0},
               {DSQ_ENC_MXFP4, 0},       {DSQ_ENC_FP8_R128, 0},     {DSQ_ENC_FP8_B128, 0},    {DSQ_ENC_FP8_ROW, 0}};
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) check_family(f, fam[i].e, fam[i].g);
}

/* Same inputs, 1 thread or 4: the same bytes. */
static void test_gptq_threads(void **state) {
    fixture *f = *state;
    float *q = malloc(sizeof f->w);
    encbuf a, b;
    gptq(f, DSQ_ENC_Q4_K, 0, true, 1, q, &a);
    gptq(f, DSQ_ENC_Q4_K, 0, true, 4, q, &b);
    dsq_codec_layout l;
    dsq_codec_layout_of(DSQ_ENC_Q4_K, ROWS, COLS, 0, &l, NULL);
    assert_memory_equal(a.mem, b.mem, (size_t)l.data_bytes);
    free(a.mem), free(b.mem), free(q);
}

/* One factor, two weights (w1 and w3 of an expert share their input): each gives the same bytes as
 * dsq_gptq_quantize with its own copy of H, and the factor is not changed by being used; h is not
 * modified either. */
static void test_gptq_shared_factor(void **state) {
    fixture *f = *state;
    dsq_gptq_options o;
    dsq_gptq_options_default(&o);
    o.block = 64;
    dsq_err err = DSQ_ERR_INIT;
    double *h = malloc(sizeof f->h);
    memcpy(h, f->h, sizeof f->h);
    dsq_gptq_factor *fac = NULL;
    assert_int_equal(dsq_gptq_factor_create(&o, h, COLS, TOK, &fac, &err), DSQ_OK);
    assert_memory_equal(h, f->h, sizeof f->h);
    assert_int_equal(dsq_gptq_factor_cols(fac), COLS);
    assert_true(dsq_gptq_factor_damp(fac) == o.damp);
    float *w3 = malloc(sizeof f->w);
    for (int i = 0; i < ROWS * COLS; i++) w3[i] = -0.7f * f->w[(i * 7) % (ROWS * COLS)];
    const float *src[2] = {f->w, w3};
    const dsq_encoding enc[2] = {DSQ_ENC_Q4_K, DSQ_ENC_INT4_G};
    const int grp[2] = {0, 32};
    for (int k = 0; k < 2; k++) {
        encbuf a, b;
        enc_alloc(&a, enc[k], grp[k]);
        enc_alloc(&b, enc[k], grp[k]);
        float *wa = malloc(sizeof f->w), *wb = malloc(sizeof f->w);
        memcpy(wa, src[k], sizeof f->w);
        memcpy(wb, src[k], sizeof f->w);
        assert_int_equal(dsq_gptq_quantize_factored(&o, fac, wa, &a.b, &err), DSQ_OK);
        assert_int_equal(dsq_gptq_quantize(&o, h, TOK, wb, &b.b, &err), DSQ_OK);
        assert_memory_equal(h, f->h, sizeof f->h);
        dsq_codec_layout l;
        assert_int_equal(dsq_codec_layout_of(enc[k], ROWS, COLS, grp[k], &l, NULL), DSQ_OK);
        assert_memory_equal(a.mem, b.mem, (size_t)(l.data_bytes + l.scale_bytes + l.min_bytes));
        assert_memory_equal(wa, wb, sizeof f->w);
        free(wa), free(wb), free(a.mem), free(b.mem);
    }
    /* a weight of another width is refused */
    encbuf c;
    enc_alloc(&c, DSQ_ENC_INT4_G, 32);
    c.b.cols = COLS / 2;
    assert_int_equal(dsq_gptq_quantize_factored(&o, fac, w3, &c.b, &err), DSQ_ERR_ARG);
    assert_non_null(strstr(err.msg, "Hessian factor has 256"));
    dsq_err_clear(&err);
    free(c.mem), free(w3), free(h);
    dsq_gptq_factor_free(fac);
}

static void test_gptq_bad_args(void **state) {
    fixture *f = *state;
    encbuf e;
    enc_alloc(&e, DSQ_ENC_INT4_G, 32);
    float *w = malloc(sizeof f->w);
    memcpy(w, f->w, sizeof f->w);
    double *h = malloc(sizeof f->h);
    memcpy(h, f->h, sizeof f->h);
    dsq_gptq_options o;
    dsq_gptq_options_default(&o);
    dsq_err err = DSQ_ERR_INIT;
    o.damp = 0;
    assert_int_equal(dsq_gptq_quantize(&o, h, TOK, w, &e.b, &err), DSQ_ERR_ARG);
    assert_non_null(strstr(err.msg, "damping"));
    dsq_err_clear(&err);
    o.damp = 0.01, o.block = 0;
    assert_int_equal(dsq_gptq_quantize(&o, h, TOK, w, &e.b, &err), DSQ_ERR_ARG);
    dsq_err_clear(&err);
    o.block = 128;
    w[5] = NAN;
    assert_int_equal(dsq_gptq_quantize(&o, h, TOK, w, &e.b, &err), DSQ_ERR_NONFINITE);
    dsq_err_clear(&err);
    e.b.enc = DSQ_ENC_BF16;
    assert_int_equal(dsq_gptq_quantize(&o, h, TOK, w, &e.b, &err), DSQ_ERR_ARG);
    dsq_err_clear(&err);
    free(w), free(h), free(e.mem);
}

static int setup(void **state) {
    *state = make_fixture();
    return 0;
}
static int teardown(void **state) {
    free(*state);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chol_inverse_known),
        cmocka_unit_test(test_chol_inverse_blocked),
        cmocka_unit_test(test_gptq_shared_factor),
        cmocka_unit_test(test_gptq_beats_rtn),
        cmocka_unit_test(test_gptq_threads),
        cmocka_unit_test(test_gptq_bad_args),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
