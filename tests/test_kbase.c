/* KL base files: round trips through the writer and the streaming reader, KL of a candidate against a
 * stored base (exactly 0 against itself), and one test per malformation class, each expected to fail
 * with a specific status.  Hostile files are made by decoding a valid file into its parts (header,
 * note, tokens, decompressed blocks), changing one thing and re-encoding. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "dsq_metrics.h"
#include "dsq_test.h"


static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1p-53;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(2 * M_PI * urand()); }

/* A toy "model": row for position p is a deterministic function of (p, variant); variant 0 is the
 * reference, others add noise of growing size. */
static void model_row(float *row, uint32_t vocab, uint64_t pos, int variant) {
    uint64_t saved = rng_state;
    rng_state = 0x1234567ull + pos * 7919;
    for (uint32_t i = 0; i < vocab; i++) row[i] = (float)(3.0 * nrand());
    rng_state = 0xABCDEFull + pos * 104729 + (uint64_t)variant;
    for (uint32_t i = 0; i < vocab && variant; i++) row[i] += (float)(0.05 * variant * nrand());
    rng_state = saved;
}

typedef struct params {
    uint32_t vocab, k, n_ctx, chunks, block;
    int32_t bos;
} params;

/* Write a base for `variant 0` of the toy model over random text; returns the text (malloc). */
static int32_t *write_base(const char *path, params pa, dsq_kbase_info *info_out) {
    dsq_kbase_info info;
    memset(&info, 0, sizeof info);
    info.vocab = pa.vocab;
    info.k = pa.k;
    info.seed = 1234;
    info.temperature = 1.0;
    info.block_positions = pa.block;
    snprintf(info.note, sizeof info.note, "toy model, k=%u", pa.k);
    uint64_t n_text = (uint64_t)pa.chunks * (pa.bos >= 0 ? pa.n_ctx - 1 : pa.n_ctx);
    int32_t *text = malloc(n_text * sizeof *text);
    for (uint64_t i = 0; i < n_text; i++) text[i] = (int32_t)(urand() * pa.vocab);
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ppl_plan_make(n_text, pa.n_ctx, 0, pa.bos, &info.plan, &err), DSQ_OK);
    dsq_kbase_writer *w;
    assert_int_equal(dsq_kbase_writer_open(path, &info, text, true, &w, &err), DSQ_OK);
    dsq_kld_ctx *c;
    assert_int_equal(dsq_kld_ctx_create(pa.vocab, pa.k, info.temperature, info.seed, &c, &err), DSQ_OK);
    float *row = malloc(pa.vocab * sizeof *row);
    int32_t *chunk = malloc(pa.n_ctx * sizeof *chunk);
    uint64_t pos = 0;
    for (uint32_t ch = 0; ch < info.plan.n_chunks; ch++) {
        dsq_ppl_plan_chunk(&info.plan, text, ch, chunk);
        for (uint32_t p = info.plan.score_from; p + 1 < pa.n_ctx; p++, pos++) {
            model_row(row, pa.vocab, pos, 0);
            dsq_kbase_record rec;
            assert_int_equal(dsq_kld_ref_record(c, row, chunk[p + 1], pos, &rec, &err), DSQ_OK);
            assert_int_equal(dsq_kbase_writer_add(w, &rec, &err), DSQ_OK);
        }
    }
    assert_int_equal(dsq_kbase_writer_finish(w, &err), DSQ_OK);
    dsq_kld_ctx_free(c);
    free(row);
    free(chunk);
    dsq_err_clear(&err);
    if (info_out) *info_out = info;
    return text;
}

static void test_roundtrip(void **state) {
    char *path = dsq_test_join(dsq_test_tmp, "base.kld");
    params pa = {.vocab = 300, .k = 16, .n_ctx = 12, .chunks = 7, .block = 4, .bos = 0};
    dsq_kbase_info winfo;
    int32_t *text = write_base(path, pa, &winfo);
    dsq_kbase_reader *r;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_kbase_reader_open(path, &r, &err), DSQ_OK);
    const dsq_kbase_info *in = dsq_kbase_reader_info(r);
    assert_int_equal(in->vocab, 300);
    assert_int_equal(in->k, 16);
    assert_int_equal(in->plan.n_ctx, 12);
    assert_int_equal(in->plan.n_chunks, 7);
    assert_int_equal(in->plan.score_from, 6);
    assert_int_equal(in->n_positions, 7 * 5);
    assert_int_equal(in->n_text, 7 * 11);
    assert_int_equal(in->block_positions, 4);
    assert_int_equal(in->seed, 1234);
    assert_true(in->temperature == 1.0);
    assert_string_equal(in->note, "toy model, k=16");
    assert_int_equal(in->tokens_hash, dsq_kbase_tokens_hash(text, in->n_text));
    assert_memory_equal(dsq_kbase_reader_text(r), text, in->n_text * sizeof *text);

    /* Every record equals a freshly computed one; the candidate = reference gives KL exactly 0 and a
     * noisy candidate gives the same numbers as an in-memory comparison. */
    dsq_kld_ctx *c, *c2;
    assert_int_equal(dsq_kld_ctx_create(in->vocab, in->k, in->temperature, in->seed, &c, &err), DSQ_OK);
    assert_int_equal(dsq_kld_ctx_create(in->vocab, in->k, in->temperature, in->seed, &c2, &err), DSQ_OK);
    float *row = malloc(in->vocab * sizeof *row), *cand = malloc(in->vocab * sizeof *cand);
    int32_t chunk[12];
    uint64_t pos = 0;
    for (uint32_t ch = 0; ch < in->plan.n_chunks; ch++) {
        dsq_ppl_plan_chunk(&in->plan, text, ch, chunk);
        for (uint32_t p = in->plan.score_from; p + 1 < in->plan.n_ctx; p++, pos++) {
            dsq_kbase_record got, want;
            bool done;
            assert_int_equal(dsq_kbase_reader_next(r, &got, &done, &err), DSQ_OK);
            assert_false(done);
            model_row(row, in->vocab, pos, 0);
            assert_int_equal(dsq_kld_ref_record(c2, row, chunk[p + 1], pos, &want, &err), DSQ_OK);
            assert_int_equal(got.target, chunk[p + 1]);
            assert_int_equal(got.target, want.target);
            assert_int_equal(got.sample, want.sample);
            assert_true(got.target_lp == want.target_lp && got.rest_lp == want.rest_lp);
            assert_memory_equal(got.ids, want.ids, in->k * sizeof *got.ids);
            assert_memory_equal(got.lps, want.lps, in->k * sizeof *got.lps);
            dsq_kld_pos self, noisy, mem;
            assert_int_equal(dsq_kld_compare(c, &got, row, pos, &self, &err), DSQ_OK);
            assert_true(self.kl == 0.0 && self.top1_agree && self.sample_agree && self.dp == 0.0);
            model_row(cand, in->vocab, pos, 3);
            assert_int_equal(dsq_kld_compare(c, &got, cand, pos, &noisy, &err), DSQ_OK);
            assert_int_equal(dsq_kld_compare(c2, &want, cand, pos, &mem, &err), DSQ_OK);
            assert_true(noisy.kl == mem.kl && noisy.kl > 0 && noisy.nll_cand == mem.nll_cand);
        }
    }
    dsq_kbase_record rec;
    bool done = false;
    assert_int_equal(dsq_kbase_reader_next(r, &rec, &done, &err), DSQ_OK);
    assert_true(done);
    dsq_kld_ctx_free(c);
    dsq_kld_ctx_free(c2);
    dsq_kbase_reader_close(r);
    free(row);
    free(cand);
    free(text);
    dsq_err_clear(&err);
    free(path);
}

/* KL grows with the candidate's noise (k = 64 of 2000, one block per 256 positions by default). */
static void test_kl_monotone_in_noise(void **state) {
    char *path = dsq_test_join(dsq_test_tmp, "mono.kld");
    params pa = {.vocab = 2000, .k = 64, .n_ctx = 32, .chunks = 4, .block = 0, .bos = 1};
    int32_t *text = write_base(path, pa, NULL);
    double prev = -1;
    for (int variant = 0; variant <= 4; variant++) {
        dsq_kbase_reader *r;
        assert_int_equal(dsq_kbase_reader_open(path, &r, NULL), DSQ_OK);
        const dsq_kbase_info *in = dsq_kbase_reader_info(r);
        dsq_kld_ctx *c;
        dsq_kld_acc *acc;
        assert_int_equal(dsq_kld_ctx_create(in->vocab, in->k, in->temperature, in->seed, &c, NULL), DSQ_OK);
        assert_int_equal(dsq_kld_acc_create(&acc, NULL), DSQ_OK);
        float *row = malloc(in->vocab * sizeof *row);
        for (uint64_t pos = 0;; pos++) {
            dsq_kbase_record rec;
            bool done;
            assert_int_equal(dsq_kbase_reader_next(r, &rec, &done, NULL), DSQ_OK);
            if (done) break;
            model_row(row, in->vocab, pos, variant);
            dsq_kld_pos p;
            assert_int_equal(dsq_kld_compare(c, &rec, row, pos, &p, NULL), DSQ_OK);
            assert_int_equal(dsq_kld_acc_add(acc, &p, NULL), DSQ_OK);
        }
        dsq_kld_stats s;
        assert_int_equal(dsq_kld_acc_stats(acc, &s, NULL), DSQ_OK);
        assert_int_equal(s.n, 4 * 15);
        if (variant == 0)
            assert_true(s.kl_mean == 0 && s.top1 == 1 && s.same_sample == 1 && s.ppl_ratio == 1);
        else
            assert_true(s.kl_mean > prev);
        prev = s.kl_mean;
        dsq_kld_acc_free(acc);
        dsq_kld_ctx_free(c);
        dsq_kbase_reader_close(r);
        free(row);
    }
    free(text);
    free(path);
}

static void test_writer_misuse(void **state) {
    char *path = dsq_test_join(dsq_test_tmp, "w.kld");
    dsq_kbase_info info;
    memset(&info, 0, sizeof info);
    info.vocab = 50;
    info.k = 4;
    info.temperature = 1;
    int32_t text[40];
    for (int i = 0; i < 40; i++) text[i] = i;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_ppl_plan_make(40, 5, 0, 0, &info.plan, &err), DSQ_OK); /* 10 chunks × 2 scored */
    dsq_kbase_writer *w;
    /* too few positions: nothing is published */
    assert_int_equal(dsq_kbase_writer_open(path, &info, text, false, &w, &err), DSQ_OK);
    assert_int_equal(dsq_kbase_writer_finish(w, &err), DSQ_ERR_STATE);
    assert_false(dsq_path_exists(path));
    /* a token outside the vocabulary */
    text[7] = 50;
    assert_int_equal(dsq_kbase_writer_open(path, &info, text, false, &w, &err), DSQ_ERR_TOKEN);
    text[7] = 7;
    /* bad parameters */
    info.k = 51;
    assert_int_equal(dsq_kbase_writer_open(path, &info, text, false, &w, &err), DSQ_ERR_RANGE);
    info.k = 4;
    strcpy(info.note, "line\nbreak");
    assert_int_equal(dsq_kbase_writer_open(path, &info, text, false, &w, &err), DSQ_ERR_FORMAT);
    info.note[0] = 0;
    /* too many positions, then a wrong k */
    assert_int_equal(dsq_kbase_writer_open(path, &info, text, false, &w, &err), DSQ_OK);
    dsq_kld_ctx *c;
    assert_int_equal(dsq_kld_ctx_create(50, 4, 1, 0, &c, &err), DSQ_OK);
    float row[50];
    for (int i = 0; i < 50; i++) row[i] = (float)(i % 7);
    dsq_kbase_record rec;
    assert_int_equal(dsq_kld_ref_record(c, row, 3, 0, &rec, &err), DSQ_OK);
    for (int i = 0; i < 20; i++) assert_int_equal(dsq_kbase_writer_add(w, &rec, &err), DSQ_OK);
    assert_int_equal(dsq_kbase_writer_add(w, &rec, &err), DSQ_ERR_STATE);
    assert_int_equal(dsq_kbase_writer_finish(w, &err), DSQ_OK);
    assert_true(dsq_path_exists(path));
    /* exists without overwrite */
    assert_int_equal(dsq_kbase_writer_open(path, &info, text, false, &w, &err), DSQ_ERR_EXISTS);
    /* a failing write leaves neither the file nor a partial */
    char *p2 = dsq_test_join(dsq_test_tmp, "fault.kld"), *partial = dsq_test_join(dsq_test_tmp, ".fault.kld.partial");
    assert_int_equal(dsq_kbase_writer_open(p2, &info, text, false, &w, &err), DSQ_OK);
    dsq_fault_set(DSQ_FAULT_WRITE, 1);
    dsq_status s = DSQ_OK;
    for (int i = 0; i < 20 && s == DSQ_OK; i++) s = dsq_kbase_writer_add(w, &rec, &err);
    if (s == DSQ_OK)
        s = dsq_kbase_writer_finish(w, &err);
    else
        dsq_kbase_writer_free(w);
    dsq_fault_set(DSQ_FAULT_WRITE, 0);
    assert_int_equal(s, DSQ_ERR_IO);
    assert_false(dsq_path_exists(p2));
    assert_false(dsq_path_exists(partial));
    /* a failing fsync at publication */
    assert_int_equal(dsq_kbase_writer_open(p2, &info, text, false, &w, &err), DSQ_OK);
    for (int i = 0; i < 20; i++) assert_int_equal(dsq_kbase_writer_add(w, &rec, &err), DSQ_OK);
    dsq_fault_set(DSQ_FAULT_FSYNC, 1);
    assert_int_equal(dsq_kbase_writer_finish(w, &err), DSQ_ERR_IO);
    dsq_fault_set(DSQ_FAULT_FSYNC, 0);
    assert_false(dsq_path_exists(p2));
    assert_false(dsq_path_exists(partial));
    dsq_kld_ctx_free(c);
    dsq_err_clear(&err);
    free(p2);
    free(partial);
    free(path);
}

/* ---- malformation classes ---------------------------------------------------------------------- */

/* A decoded file. */
typedef struct parts {
    uint8_t header[128];
    char note[2048];
    uint32_t note_len;
    uint8_t *tokens; /* raw little-endian int32 */
    size_t tokens_len;
    int n_blocks;
    uint8_t *block[64];
    size_t block_len[64];
    uint32_t block_n[64];
} parts;

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint8_t *unzstd(const uint8_t *src, size_t n, size_t *out_len) {
    unsigned long long sz = ZSTD_getFrameContentSize(src, n);
    uint8_t *out = malloc(sz + 1);
    size_t r = ZSTD_decompress(out, sz, src, n);
    assert_false(ZSTD_isError(r));
    *out_len = r;
    return out;
}

static void decode(const char *path, parts *p) {
    memset(p, 0, sizeof *p);
    size_t len;
    uint8_t *f = (uint8_t *)dsq_test_read(path, &len);
    memcpy(p->header, f, 128);
    p->note_len = rd32(f + 88);
    memcpy(p->note, f + 128, p->note_len);
    size_t off = 128 + p->note_len, tz = rd64(f + 96);
    p->tokens = unzstd(f + off, tz, &p->tokens_len);
    off += tz;
    while (off < len) {
        assert_true(p->n_blocks < 64);
        uint32_t n = rd32(f + off), zn = rd32(f + off + 4);
        p->block_n[p->n_blocks] = n;
        p->block[p->n_blocks] = unzstd(f + off + 8, zn, &p->block_len[p->n_blocks]);
        p->n_blocks++;
        off += 8 + zn;
    }
    free(f);
}

static void free_parts(parts *p) {
    free(p->tokens);
    for (int i = 0; i < p->n_blocks; i++) free(p->block[i]);
}

typedef struct enc_opts {
    bool keep_checksum;  /* do not recompute the header checksum */
    bool no_frame_sum;   /* zstd frames without content checksum */
    bool corrupt_frame;  /* flip a byte inside the first block's compressed data */
    bool double_frame;   /* first block followed by a second (empty) frame */
    uint32_t zn_delta;   /* added to the first block's declared compressed size */
    int drop_bytes;      /* cut this many bytes off the end */
    const char *trailer; /* append these bytes */
} enc_opts;

static size_t zcomp(uint8_t *dst, size_t cap, const uint8_t *src, size_t n, bool sum) {
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, sum ? 1 : 0);
    size_t r = ZSTD_compress2(c, dst, cap, src, n);
    ZSTD_freeCCtx(c);
    assert_false(ZSTD_isError(r));
    return r;
}

static void encode(const char *path, parts *p, const enc_opts *o) {
    size_t cap = 1 << 22, len = 0;
    uint8_t *f = malloc(cap);
    uint8_t *z = malloc(1 << 21);
    size_t tz = zcomp(z, 1 << 21, p->tokens, p->tokens_len, !o->no_frame_sum);
    dsq_put_u32le(p->header + 88, p->note_len);
    dsq_put_u64le(p->header + 96, tz);
    if (!o->keep_checksum) {
        dsq_put_u64le(p->header + 120, XXH3_64bits(p->header, 120));
    }
    memcpy(f, p->header, 128);
    memcpy(f + 128, p->note, p->note_len);
    len = 128 + p->note_len;
    memcpy(f + len, z, tz);
    len += tz;
    for (int b = 0; b < p->n_blocks; b++) {
        size_t zn;
        if (b == 0 && o->double_frame) {
            zn = zcomp(z, 1 << 21, p->block[b], p->block_len[b], true); /* whole block, then an empty frame */
            zn += zcomp(z + zn, (1 << 21) - zn, p->block[b], 0, true);
        } else {
            zn = zcomp(z, 1 << 21, p->block[b], p->block_len[b], !o->no_frame_sum);
        }
        if (b == 0 && o->corrupt_frame) z[zn / 2] ^= 0x5a;
        dsq_put_u32le(f + len, p->block_n[b]);
        dsq_put_u32le(f + len + 4, (uint32_t)zn + (b == 0 ? o->zn_delta : 0));
        memcpy(f + len + 8, z, zn);
        len += 8 + zn;
    }
    if (o->trailer) {
        memcpy(f + len, o->trailer, strlen(o->trailer));
        len += strlen(o->trailer);
    }
    len -= (size_t)o->drop_bytes;
    dsq_test_write(path, f, len);
    free(f);
    free(z);
}

/* Open and read every record; return the first failure status (with a message naming the file). */
static dsq_status read_all(const char *path, char *msg, size_t msg_n) {
    dsq_err err = DSQ_ERR_INIT;
    dsq_kbase_reader *r = NULL;
    dsq_status s = dsq_kbase_reader_open(path, &r, &err);
    while (s == DSQ_OK) {
        dsq_kbase_record rec;
        bool done;
        s = dsq_kbase_reader_next(r, &rec, &done, &err);
        if (done) break;
    }
    if (s != DSQ_OK) {
        snprintf(msg, msg_n, "%s", err.msg);
        assert_non_null(strstr(err.msg, path)); /* names the file */
    }
    dsq_kbase_reader_close(r);
    dsq_err_clear(&err);
    return s;
}

/* Record field offsets within a decompressed block (k = 8 in the fixture). */
enum { FK = 8, REC = 16 + 8 * FK };
static float rec_lp(const uint8_t *b, int rec, int j) {
    float f;
    uint32_t v = rd32(b + rec * REC + 16 + 4 * FK + 4 * j);
    memcpy(&f, &v, 4);
    return f;
}
static void set_lp(uint8_t *b, int rec, int j, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    dsq_put_u32le(b + rec * REC + 16 + 4 * FK + 4 * j, v);
}
static void set_f32(uint8_t *p, float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    dsq_put_u32le(p, v);
}

typedef struct mal {
    const char *name;
    dsq_status status;
    const char *needle;
} mal;

static void test_malformed(void **state) {
    char *good = dsq_test_join(dsq_test_tmp, "good.kld"), *bad = dsq_test_join(dsq_test_tmp, "bad.kld");
    params pa = {.vocab = 100, .k = FK, .n_ctx = 8, .chunks = 5, .block = 6, .bos = 0};
    free(write_base(good, pa, NULL)); /* 5 chunks × 3 positions = 15: blocks of 6, 6, 3 */
    char msg[1200];
    assert_int_equal(read_all(good, msg, sizeof msg), DSQ_OK);
    const mal classes[] = {
        {"bad magic", DSQ_ERR_MAGIC, "magic"},
        {"version 2", DSQ_ERR_VERSION, "version"},
        {"header size", DSQ_ERR_FORMAT, "header size"},
        {"header checksum", DSQ_ERR_CHECKSUM, "header checksum"},
        {"truncated header", DSQ_ERR_TRUNCATED, "header"},
        {"k > vocab", DSQ_ERR_RANGE, "top-k"},
        {"k = 0", DSQ_ERR_RANGE, "top-k"},
        {"vocab = 0", DSQ_ERR_RANGE, "vocabulary"},
        {"n_ctx < 3", DSQ_ERR_RANGE, "n_ctx"},
        {"score_from", DSQ_ERR_RANGE, "score_from"},
        {"stride", DSQ_ERR_RANGE, "stride"},
        {"bos >= vocab", DSQ_ERR_TOKEN, "BOS"},
        {"positions mismatch", DSQ_ERR_FORMAT, "disagree"},
        {"huge text", DSQ_ERR_RANGE, "text tokens"},
        {"block positions 0", DSQ_ERR_RANGE, "per block"},
        {"block too big", DSQ_ERR_RANGE, "per block"},
        {"temperature NaN", DSQ_ERR_RANGE, "temperature"},
        {"flags", DSQ_ERR_UNSUPPORTED, "flags"},
        {"reserved", DSQ_ERR_FORMAT, "reserved"},
        {"note too long", DSQ_ERR_RANGE, "note"},
        {"note control byte", DSQ_ERR_FORMAT, "note"},
        {"note past end", DSQ_ERR_TRUNCATED, "note"},
        {"token hash", DSQ_ERR_CHECKSUM, "token hash"},
        {"token out of vocab", DSQ_ERR_TOKEN, "text token"},
        {"token section short", DSQ_ERR_FORMAT, "token section"},
        {"no frame checksum", DSQ_ERR_FORMAT, "checksum"},
        {"corrupt frame", DSQ_ERR_CHECKSUM, "zstd"},
        {"two frames", DSQ_ERR_FORMAT, "exactly one"},
        {"block count", DSQ_ERR_FORMAT, "positions, expected"},
        {"compressed size beyond bound", DSQ_ERR_RANGE, "bound"},
        {"block past end", DSQ_ERR_TRUNCATED, "past the end"},
        {"truncated blocks", DSQ_ERR_TRUNCATED, "missing"},
        {"trailing bytes", DSQ_ERR_UNEXPECTED, "after the last block"},
        {"record id out of vocab", DSQ_ERR_TOKEN, "outside the vocabulary"},
        {"record target out of vocab", DSQ_ERR_TOKEN, "target"},
        {"duplicate id", DSQ_ERR_DUPLICATE, "twice"},
        {"log-prob NaN", DSQ_ERR_FORMAT, "non-increasing"},
        {"log-prob positive", DSQ_ERR_FORMAT, "non-increasing"},
        {"log-probs increasing", DSQ_ERR_FORMAT, "non-increasing"},
        {"mass not 1", DSQ_ERR_FORMAT, "sum to"},
        {"rest NaN", DSQ_ERR_FORMAT, "remainder"},
        {"target inconsistent", DSQ_ERR_FORMAT, "target log-prob"},
    };
    for (size_t ci = 0; ci < sizeof classes / sizeof classes[0]; ci++) {
        const mal *m = &classes[ci];
        parts p;
        decode(good, &p);
        enc_opts o = {0};
        uint8_t *h = p.header, *b0 = p.block[0];
        const char *n = m->name;
        if (!strcmp(n, "bad magic"))
            h[0] ^= 1;
        else if (!strcmp(n, "version 2"))
            dsq_put_u32le(h + 8, 2);
        else if (!strcmp(n, "header size"))
            dsq_put_u32le(h + 12, 64);
        else if (!strcmp(n, "header checksum"))
            h[20] ^= 1, o.keep_checksum = true;
        else if (!strcmp(n, "truncated header")) {
            dsq_test_write(bad, h, 100);
            free_parts(&p);
            goto check;
        } else if (!strcmp(n, "k > vocab"))
            dsq_put_u32le(h + 20, 101);
        else if (!strcmp(n, "k = 0"))
            dsq_put_u32le(h + 20, 0);
        else if (!strcmp(n, "vocab = 0"))
            dsq_put_u32le(h + 16, 0);
        else if (!strcmp(n, "n_ctx < 3"))
            dsq_put_u32le(h + 24, 2), dsq_put_u32le(h + 28, 1);
        else if (!strcmp(n, "score_from")) /* past n_ctx − 2: no position left to score */
            dsq_put_u32le(h + 28, 1000);
        else if (!strcmp(n, "stride"))
            dsq_put_u32le(h + 40, 8);
        else if (!strcmp(n, "bos >= vocab"))
            dsq_put_u32le(h + 36, 100);
        else if (!strcmp(n, "positions mismatch"))
            dsq_put_u64le(h + 48, 16);
        else if (!strcmp(n, "huge text")) {
            dsq_put_u32le(h + 32, 0xFFFFFFFFu); /* n_chunks: 4G chunks × 7 tokens */
            dsq_put_u64le(h + 48, 0xFFFFFFFFull * 3);
            dsq_put_u64le(h + 56, 0xFFFFFFFFull * 7);
        } else if (!strcmp(n, "block positions 0"))
            dsq_put_u32le(h + 44, 0);
        else if (!strcmp(n, "block too big"))
            dsq_put_u32le(h + 44, 0x7FFFFFFFu);
        else if (!strcmp(n, "temperature NaN"))
            dsq_put_u64le(h + 80, 0x7FF8000000000000ull);
        else if (!strcmp(n, "flags"))
            dsq_put_u32le(h + 92, 1);
        else if (!strcmp(n, "reserved"))
            h[110] = 1;
        else if (!strcmp(n, "note too long")) {
            memset(p.note, 'a', 1500);
            p.note_len = 1500;
        } else if (!strcmp(n, "note control byte"))
            p.note[2] = '\t';
        else if (!strcmp(n, "note past end")) {
            encode(bad, &p, &o);
            /* claim a longer note than the file holds (and fix the checksum) */
            size_t len;
            uint8_t *f = (uint8_t *)dsq_test_read(bad, &len);
            dsq_put_u32le(f + 88, 1000);
            dsq_put_u64le(f + 120, XXH3_64bits(f, 120));
            dsq_test_write(bad, f, 200);
            free(f);
            free_parts(&p);
            goto check;
        } else if (!strcmp(n, "token hash")) {
            p.tokens[0] ^= 1; /* still < vocab */
            if (rd32(p.tokens) >= 100) p.tokens[0] ^= 3;
        } else if (!strcmp(n, "token out of vocab"))
            dsq_put_u32le(p.tokens + 4, 100);
        else if (!strcmp(n, "token section short"))
            p.tokens_len -= 4;
        else if (!strcmp(n, "no frame checksum"))
            o.no_frame_sum = true;
        else if (!strcmp(n, "corrupt frame"))
            o.corrupt_frame = true;
        else if (!strcmp(n, "two frames"))
            o.double_frame = true;
        else if (!strcmp(n, "block count")) {
            p.block_n[0] = 5;
            p.block_len[0] = 5 * REC;
        } else if (!strcmp(n, "compressed size beyond bound"))
            o.zn_delta = 1u << 30;
        else if (!strcmp(n, "block past end"))
            o.drop_bytes = 10;
        else if (!strcmp(n, "truncated blocks")) {
            free(p.block[2]);
            p.n_blocks = 2;
        } else if (!strcmp(n, "trailing bytes"))
            o.trailer = "xyz";
        else if (!strcmp(n, "record id out of vocab"))
            dsq_put_u32le(b0 + REC + 16 + 4 * 3, 100);
        else if (!strcmp(n, "record target out of vocab"))
            dsq_put_u32le(b0 + 2 * REC, 0xFFFFFFFFu);
        else if (!strcmp(n, "duplicate id"))
            memcpy(b0 + 16 + 4 * 5, b0 + 16 + 4 * 2, 4);
        else if (!strcmp(n, "log-prob NaN"))
            set_lp(b0, 1, 4, NAN);
        else if (!strcmp(n, "log-prob positive"))
            set_lp(b0, 0, 0, 0.5f);
        else if (!strcmp(n, "log-probs increasing"))
            set_lp(b0, 0, 3, rec_lp(b0, 0, 2) + 0.1f);
        else if (!strcmp(n, "mass not 1")) {
            for (int j = 0; j < FK; j++) set_lp(b0, 3, j, rec_lp(b0, 3, j) - 0.01f);
            set_f32(b0 + 3 * REC + 12, -30.0f);
        } else if (!strcmp(n, "rest NaN"))
            set_f32(b0 + 4 * REC + 12, NAN);
        else if (!strcmp(n, "target inconsistent"))
            set_f32(b0 + 8, 0.0f);
        encode(bad, &p, &o);
        free_parts(&p);
    check:;
        dsq_status s = read_all(bad, msg, sizeof msg);
        if (s != m->status || !strstr(msg, m->needle))
            fprintf(stderr, "class '%s': got %d (%s): %s\n", m->name, s, dsq_status_str(s), msg);
        assert_int_equal(s, m->status);
        assert_non_null(strstr(msg, m->needle));
    }
    /* a re-encoded but untouched file still reads */
    parts p;
    decode(good, &p);
    enc_opts o = {0};
    encode(bad, &p, &o);
    free_parts(&p);
    assert_int_equal(read_all(bad, msg, sizeof msg), DSQ_OK);
    free(good);
    free(bad);
}

/* docs/kld-base.md is the format's spec: its header table's offsets and types must describe the bytes
 * the writer produces. */
static void test_doc_table_matches(void **state) {
    char *path = dsq_test_join(dsq_test_tmp, "doc.kld");
    params pa = {.vocab = 77, .k = 5, .n_ctx = 9, .chunks = 3, .block = 2, .bos = 4};
    dsq_kbase_info info;
    int32_t *text = write_base(path, pa, &info);
    size_t flen;
    uint8_t *f = (uint8_t *)dsq_test_read(path, &flen);
    char *doc = dsq_test_read("docs/kld-base.md", NULL);
    struct {
        const char *field, *type;
        uint64_t value;
    } want[] = {
        {"version", "u32", 1},
        {"header_bytes", "u32", 128},
        {"vocab", "u32", 77},
        {"k", "u32", 5},
        {"n_ctx", "u32", 9},
        {"score_from", "u32", 4},
        {"n_chunks", "u32", 3},
        {"bos", "i32", 4},
        {"stride", "u32", 8},
        {"block_positions", "u32", 2},
        {"n_positions", "u64", 12}, /* 3 chunks × (9 - 1 - 4) */
        {"n_text", "u64", 24},
        {"tokens_hash", "u64", dsq_kbase_tokens_hash(text, 24)},
        {"seed", "u64", 1234},
        {"temperature", "f64", 0x3FF0000000000000ull},
        {"note_bytes", "u32", strlen("toy model, k=5")},
        {"flags", "u32", 0},
        {"checksum", "u64", XXH3_64bits(f, 120)},
    };
    int found = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "| %s | %s |", want[i].type, want[i].field);
        char *row = strstr(doc, key);
        if (!row) fprintf(stderr, "docs/kld-base.md: no header row for %s\n", key);
        assert_non_null(row);
        /* the offset is the previous cell: "| OFF | TYPE | FIELD |" */
        char *bar = row;
        while (bar > doc && bar[-1] != '\n') bar--;
        unsigned off = (unsigned)strtoul(bar + 1, NULL, 10);
        uint64_t got = want[i].type[1] == '6' || want[i].type[0] == 'f' ? rd64(f + off) : rd32(f + off);
        if (got != want[i].value)
            fprintf(stderr, "%s at %u: %llu != %llu\n", want[i].field, off, (unsigned long long)got,
                    (unsigned long long)want[i].value);
        assert_true(got == want[i].value);
        found++;
    }
    assert_int_equal(found, 18);
    assert_memory_equal(f, "DSQKLDB\0", 8);
    free(doc);
    free(f);
    free(text);
    free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),         cmocka_unit_test(test_kl_monotone_in_noise),
        cmocka_unit_test(test_writer_misuse),     cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_doc_table_matches),
    };
    return cmocka_run_group_tests(tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
}
