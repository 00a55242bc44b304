/* The KL base file: a reference run's top-k log-probabilities per scored position, in
 * zstd-compressed blocks (layout: docs/kld-base.md; the offsets below are that table). */
#include <math.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include <zstd.h>

#include "dsq_metrics.h"

enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_HEADER_BYTES = 12,
    OFF_VOCAB = 16,
    OFF_K = 20,
    OFF_N_CTX = 24,
    OFF_SCORE_FROM = 28,
    OFF_N_CHUNKS = 32,
    OFF_BOS = 36,
    OFF_STRIDE = 40,
    OFF_BLOCK_POSITIONS = 44,
    OFF_N_POSITIONS = 48,
    OFF_N_TEXT = 56,
    OFF_TOKENS_HASH = 64,
    OFF_SEED = 72,
    OFF_TEMPERATURE = 80,
    OFF_NOTE_BYTES = 88,
    OFF_FLAGS = 92,
    OFF_TOKENS_FRAME_BYTES = 96,
    OFF_CHECKSUM = 120,   /* XXH3-64 of bytes [0, 120) */
    BLOCK_HEAD_BYTES = 8, /* u32 positions, u32 compressed bytes */
    RECORD_FIXED_BYTES = 16,
    ZSTD_LEVEL = 3,
    DEFAULT_BLOCK_BYTES = 1 << 20,
};
#define ZSTD_MAGIC 0xFD2FB528u

static uint64_t record_bytes(uint32_t k) { return RECORD_FIXED_BYTES + 8ull * k; }

uint64_t dsq_kbase_tokens_hash(const int32_t *tokens, uint64_t n) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    uint8_t buf[4096];
    size_t fill = 0;
    for (uint64_t i = 0; i < n; i++) {
        dsq_put_u32le(buf + fill, (uint32_t)tokens[i]);
        fill += 4;
        if (fill == sizeof buf) {
            XXH3_64bits_update(&st, buf, fill);
            fill = 0;
        }
    }
    XXH3_64bits_update(&st, buf, fill);
    return XXH3_64bits_digest(&st);
}

static bool note_ok(const char *s) {
    size_t n = strnlen(s, DSQ_KBASE_NOTE_MAX + 1);
    if (n > DSQ_KBASE_NOTE_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

/* The structural rules shared by writer and reader (a file the writer accepts, the reader accepts). */
static dsq_status check_info(const char *path, const dsq_kbase_info *in, dsq_err *err) {
    const dsq_ppl_plan *p = &in->plan;
    DSQ_RETURN_IF(in->vocab == 0 || in->vocab > DSQ_KBASE_MAX_VOCAB, err, DSQ_ERR_RANGE,
                  "%s: vocabulary %u outside [1, %u]", path, in->vocab, DSQ_KBASE_MAX_VOCAB);
    DSQ_RETURN_IF(in->k == 0 || in->k > in->vocab, err, DSQ_ERR_RANGE, "%s: top-k %u outside [1, vocab %u]", path,
                  in->k, in->vocab);
    DSQ_RETURN_IF(p->n_ctx < 3 || p->score_from > p->n_ctx - 2, err, DSQ_ERR_RANGE,
                  "%s: chunk plan n_ctx %u / score_from %u is not n_ctx ≥ 3, score_from ≤ n_ctx − 2", path, p->n_ctx,
                  p->score_from);
    DSQ_RETURN_IF(p->bos < -1 || (p->bos >= 0 && (uint32_t)p->bos >= in->vocab), err, DSQ_ERR_TOKEN,
                  "%s: BOS id %d outside the vocabulary", path, (int)p->bos);
    DSQ_RETURN_IF(p->stride != (p->bos >= 0 ? p->n_ctx - 1 : p->n_ctx), err, DSQ_ERR_RANGE,
                  "%s: chunk stride %u inconsistent with n_ctx %u and BOS %d", path, p->stride, p->n_ctx, (int)p->bos);
    DSQ_RETURN_IF(p->n_chunks == 0, err, DSQ_ERR_RANGE, "%s: no chunks", path);
    DSQ_RETURN_IF(!(in->temperature > 0) || !isfinite(in->temperature), err, DSQ_ERR_RANGE,
                  "%s: sampling temperature %g is not a positive number", path, in->temperature);
    DSQ_RETURN_IF(!note_ok(in->note), err, DSQ_ERR_FORMAT, "%s: note longer than %u bytes or holding control bytes",
                  path, DSQ_KBASE_NOTE_MAX);
    uint64_t rec = record_bytes(in->k), block;
    DSQ_RETURN_IF(in->block_positions == 0 || !dsq_mul_u64(in->block_positions, rec, &block) ||
                      block > (rec > DSQ_KBASE_MAX_BLOCK_BYTES ? rec : DSQ_KBASE_MAX_BLOCK_BYTES),
                  err, DSQ_ERR_RANGE, "%s: %u positions per block of %llu-byte records exceed %u bytes", path,
                  in->block_positions, (unsigned long long)rec, DSQ_KBASE_MAX_BLOCK_BYTES);
    return DSQ_OK;
}

/* n_positions / n_text implied by the plan (checked products). */
static dsq_status plan_counts(const char *path, const dsq_ppl_plan *p, uint64_t *positions, uint64_t *text,
                              dsq_err *err) {
    DSQ_RETURN_IF(!dsq_mul_u64(p->n_chunks, p->n_ctx - 1 - p->score_from, positions) ||
                      !dsq_mul_u64(p->n_chunks, p->stride, text),
                  err, DSQ_ERR_OVERFLOW, "%s: chunk plan sizes overflow", path);
    DSQ_RETURN_IF(*text > DSQ_KBASE_MAX_TEXT_TOKENS, err, DSQ_ERR_RANGE, "%s: %llu text tokens exceed the limit %llu",
                  path, (unsigned long long)*text, (unsigned long long)DSQ_KBASE_MAX_TEXT_TOKENS);
    return DSQ_OK;
}

/* ---- writer ------------------------------------------------------------------------------------ */

struct dsq_kbase_writer {
    dsq_afile f;
    bool open;
    dsq_kbase_info info;
    uint64_t rec_bytes, added;
    uint8_t *block; /* [block_positions × rec_bytes] records being gathered */
    uint32_t in_block;
    uint8_t *zbuf; /* compressed output */
    size_t zcap;
    ZSTD_CCtx *cctx;
};

void dsq_kbase_writer_free(dsq_kbase_writer *w) {
    if (!w) return;
    if (w->open) dsq_afile_abort(&w->f);
    dsq_free(w->block);
    dsq_free(w->zbuf);
    ZSTD_freeCCtx(w->cctx);
    dsq_free(w);
}

static dsq_status compress(dsq_kbase_writer *w, const void *src, size_t n, size_t *out_n, dsq_err *err) {
    size_t r = ZSTD_compress2(w->cctx, w->zbuf, w->zcap, src, n);
    DSQ_RETURN_IF(ZSTD_isError(r), err, DSQ_ERR_IO, "%s: zstd compression failed: %s", w->f.final_path,
                  ZSTD_getErrorName(r));
    *out_n = r;
    return DSQ_OK;
}

static dsq_status ensure_zbuf(dsq_kbase_writer *w, size_t src_bytes, dsq_err *err) {
    size_t need = ZSTD_compressBound(src_bytes);
    DSQ_RETURN_IF(ZSTD_isError(need) || need == 0, err, DSQ_ERR_OVERFLOW, "%s: block too large to compress",
                  w->f.final_path);
    if (need <= w->zcap) return DSQ_OK;
    uint8_t *z = dsq_realloc(w->zbuf, need);
    DSQ_RETURN_IF(!z, err, DSQ_ERR_NOMEM, "%s: out of memory for a %zu-byte compression buffer", w->f.final_path, need);
    w->zbuf = z;
    w->zcap = need;
    return DSQ_OK;
}

static dsq_status write_header(dsq_kbase_writer *w, const int32_t *text, dsq_err *err) {
    const dsq_kbase_info *in = &w->info;
    /* Token section first: its compressed size goes into the header. */
    uint64_t tok_bytes;
    DSQ_RETURN_IF(!dsq_mul_u64(in->n_text, 4, &tok_bytes) || tok_bytes > SIZE_MAX, err, DSQ_ERR_OVERFLOW,
                  "%s: token section too large", w->f.final_path);
    uint8_t *tok = dsq_malloc(tok_bytes ? (size_t)tok_bytes : 1);
    DSQ_RETURN_IF(!tok, err, DSQ_ERR_NOMEM, "%s: out of memory for %llu tokens", w->f.final_path,
                  (unsigned long long)in->n_text);
    for (uint64_t i = 0; i < in->n_text; i++) dsq_put_u32le(tok + 4 * i, (uint32_t)text[i]);
    size_t zn = 0;
    dsq_status s = ensure_zbuf(w, (size_t)tok_bytes, err);
    if (s == DSQ_OK) s = compress(w, tok, (size_t)tok_bytes, &zn, err);
    dsq_free(tok);
    DSQ_TRY(s);

    uint8_t h[DSQ_KBASE_HEADER_BYTES];
    memset(h, 0, sizeof h);
    memcpy(h + OFF_MAGIC, DSQ_KBASE_MAGIC, 8);
    dsq_put_u32le(h + OFF_VERSION, DSQ_KBASE_VERSION);
    dsq_put_u32le(h + OFF_HEADER_BYTES, DSQ_KBASE_HEADER_BYTES);
    dsq_put_u32le(h + OFF_VOCAB, in->vocab);
    dsq_put_u32le(h + OFF_K, in->k);
    dsq_put_u32le(h + OFF_N_CTX, in->plan.n_ctx);
    dsq_put_u32le(h + OFF_SCORE_FROM, in->plan.score_from);
    dsq_put_u32le(h + OFF_N_CHUNKS, in->plan.n_chunks);
    dsq_put_u32le(h + OFF_BOS, (uint32_t)in->plan.bos);
    dsq_put_u32le(h + OFF_STRIDE, in->plan.stride);
    dsq_put_u32le(h + OFF_BLOCK_POSITIONS, in->block_positions);
    dsq_put_u64le(h + OFF_N_POSITIONS, in->n_positions);
    dsq_put_u64le(h + OFF_N_TEXT, in->n_text);
    dsq_put_u64le(h + OFF_TOKENS_HASH, in->tokens_hash);
    dsq_put_u64le(h + OFF_SEED, in->seed);
    uint64_t tbits;
    memcpy(&tbits, &in->temperature, 8);
    dsq_put_u64le(h + OFF_TEMPERATURE, tbits);
    uint32_t note_len = (uint32_t)strlen(in->note);
    dsq_put_u32le(h + OFF_NOTE_BYTES, note_len);
    dsq_put_u64le(h + OFF_TOKENS_FRAME_BYTES, zn);
    dsq_put_u64le(h + OFF_CHECKSUM, XXH3_64bits(h, OFF_CHECKSUM));
    DSQ_TRY(dsq_afile_write(&w->f, h, sizeof h, err));
    DSQ_TRY(dsq_afile_write(&w->f, in->note, note_len, err));
    return dsq_afile_write(&w->f, w->zbuf, zn, err);
}

dsq_status dsq_kbase_writer_open(const char *path, const dsq_kbase_info *info, const int32_t *text, bool overwrite,
                                 dsq_kbase_writer **out, dsq_err *err) {
    *out = NULL;
    dsq_kbase_info in = *info;
    in.note[DSQ_KBASE_NOTE_MAX] = 0;
    if (in.block_positions == 0) {
        uint64_t per = DEFAULT_BLOCK_BYTES / record_bytes(in.k ? in.k : 1);
        in.block_positions = per == 0 ? 1 : per > 4096 ? 4096 : (uint32_t)per;
    }
    DSQ_TRY(check_info(path, &in, err));
    DSQ_TRY(plan_counts(path, &in.plan, &in.n_positions, &in.n_text, err));
    for (uint64_t i = 0; i < in.n_text; i++)
        DSQ_RETURN_IF(text[i] < 0 || (uint32_t)text[i] >= in.vocab, err, DSQ_ERR_TOKEN,
                      "%s: text token %llu (id %d) outside the vocabulary [0, %u)", path, (unsigned long long)i,
                      (int)text[i], in.vocab);
    in.tokens_hash = dsq_kbase_tokens_hash(text, in.n_text);

    dsq_kbase_writer *w = dsq_calloc(1, sizeof *w);
    DSQ_RETURN_IF(!w, err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    w->info = in;
    w->rec_bytes = record_bytes(in.k);
    w->block = dsq_malloc((size_t)(w->rec_bytes * in.block_positions));
    w->cctx = ZSTD_createCCtx();
    if (!w->block || !w->cctx) {
        dsq_kbase_writer_free(w);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for the block buffer", path);
    }
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1);
    dsq_afile_options o = {.overwrite = overwrite};
    dsq_status s = dsq_afile_open(path, &o, &w->f, err);
    if (s != DSQ_OK) {
        dsq_kbase_writer_free(w);
        return s;
    }
    w->open = true;
    s = write_header(w, text, err);
    if (s == DSQ_OK) s = ensure_zbuf(w, (size_t)(w->rec_bytes * in.block_positions), err);
    if (s != DSQ_OK) {
        dsq_kbase_writer_free(w);
        return s;
    }
    *out = w;
    return DSQ_OK;
}

static dsq_status flush_block(dsq_kbase_writer *w, dsq_err *err) {
    if (w->in_block == 0) return DSQ_OK;
    size_t zn;
    DSQ_TRY(compress(w, w->block, (size_t)(w->in_block * w->rec_bytes), &zn, err));
    uint8_t head[BLOCK_HEAD_BYTES];
    dsq_put_u32le(head, w->in_block);
    dsq_put_u32le(head + 4, (uint32_t)zn);
    DSQ_TRY(dsq_afile_write(&w->f, head, sizeof head, err));
    DSQ_TRY(dsq_afile_write(&w->f, w->zbuf, zn, err));
    w->in_block = 0;
    return DSQ_OK;
}

dsq_status dsq_kbase_writer_add(dsq_kbase_writer *w, const dsq_kbase_record *rec, dsq_err *err) {
    const char *path = w->f.final_path;
    const dsq_kbase_info *in = &w->info;
    DSQ_RETURN_IF(w->added >= in->n_positions, err, DSQ_ERR_STATE, "%s: more than the planned %llu positions", path,
                  (unsigned long long)in->n_positions);
    DSQ_RETURN_IF(rec->k != in->k, err, DSQ_ERR_ARG, "%s: record with k %u, file has k %u", path, rec->k, in->k);
    uint8_t *p = w->block + w->in_block * w->rec_bytes;
    dsq_put_u32le(p, (uint32_t)rec->target);
    dsq_put_u32le(p + 4, (uint32_t)rec->sample);
    uint32_t bits;
    memcpy(&bits, &rec->target_lp, 4);
    dsq_put_u32le(p + 8, bits);
    memcpy(&bits, &rec->rest_lp, 4);
    dsq_put_u32le(p + 12, bits);
    uint8_t *ids = p + RECORD_FIXED_BYTES, *lps = ids + 4 * (size_t)in->k;
    for (uint32_t j = 0; j < in->k; j++) {
        dsq_put_u32le(ids + 4 * j, (uint32_t)rec->ids[j]);
        memcpy(&bits, &rec->lps[j], 4);
        dsq_put_u32le(lps + 4 * j, bits);
    }
    w->added++;
    if (++w->in_block == in->block_positions) DSQ_TRY(flush_block(w, err));
    return DSQ_OK;
}

dsq_status dsq_kbase_writer_finish(dsq_kbase_writer *w, dsq_err *err) {
    dsq_status s = DSQ_OK;
    if (w->added != w->info.n_positions)
        s = dsq_err_set(err, DSQ_ERR_STATE, "%s: %llu of %llu positions written", w->f.final_path,
                        (unsigned long long)w->added, (unsigned long long)w->info.n_positions);
    if (s == DSQ_OK) s = flush_block(w, err);
    if (s == DSQ_OK) {
        s = dsq_afile_commit(&w->f, err);
        w->open = false; /* commit cleans up after itself on failure */
    }
    dsq_kbase_writer_free(w);
    return s;
}

/* ---- reader ------------------------------------------------------------------------------------ */

struct dsq_kbase_reader {
    dsq_map map;
    bool mapped;
    dsq_kbase_info info;
    int32_t *text;
    uint64_t pos; /* file offset of the next block */
    uint64_t rec_bytes, read;
    uint8_t *block; /* [block_positions × rec_bytes] decompressed */
    uint32_t in_block, next_in_block;
    uint8_t *zbuf;
    size_t zcap;
    ZSTD_DCtx *dctx;
    int32_t *ids; /* [k] decoded views of the current record */
    float *lps;
    uint32_t *stamp; /* [vocab] distinctness marks */
    uint32_t gen;
};

void dsq_kbase_reader_close(dsq_kbase_reader *r) {
    if (!r) return;
    if (r->mapped) dsq_map_close(&r->map);
    dsq_free(r->text);
    dsq_free(r->block);
    dsq_free(r->zbuf);
    ZSTD_freeDCtx(r->dctx);
    dsq_free(r->ids);
    dsq_free(r->lps);
    dsq_free(r->stamp);
    dsq_free(r);
}

const dsq_kbase_info *dsq_kbase_reader_info(const dsq_kbase_reader *r) { return &r->info; }
const int32_t *dsq_kbase_reader_text(const dsq_kbase_reader *r) { return r->text; }

/* Decompress the single zstd frame src[0..n) into exactly `want` bytes at dst. */
static dsq_status unframe(dsq_kbase_reader *r, const uint8_t *src, size_t n, uint8_t *dst, uint64_t want,
                          const char *what, uint64_t at, dsq_err *err) {
    const char *path = r->map.path;
    DSQ_RETURN_IF(n < 6 || src[0] != (ZSTD_MAGIC & 0xff) || src[1] != ((ZSTD_MAGIC >> 8) & 0xff) ||
                      src[2] != ((ZSTD_MAGIC >> 16) & 0xff) || src[3] != (ZSTD_MAGIC >> 24),
                  err, DSQ_ERR_FORMAT, "%s: %s at byte %llu is not a zstd frame", path, what, (unsigned long long)at);
    DSQ_RETURN_IF(!(src[4] & 0x04), err, DSQ_ERR_FORMAT, "%s: %s at byte %llu has no content checksum", path, what,
                  (unsigned long long)at);
    unsigned long long content = ZSTD_getFrameContentSize(src, n);
    DSQ_RETURN_IF(content != want, err, DSQ_ERR_FORMAT, "%s: %s at byte %llu declares %llu bytes, expected %llu", path,
                  what, (unsigned long long)at, content, (unsigned long long)want);
    size_t fsz = ZSTD_findFrameCompressedSize(src, n);
    DSQ_RETURN_IF(ZSTD_isError(fsz) || fsz != n, err, DSQ_ERR_FORMAT,
                  "%s: %s at byte %llu is not exactly one zstd frame of %zu bytes", path, what, (unsigned long long)at,
                  n);
    size_t got = ZSTD_decompressDCtx(r->dctx, dst, (size_t)want, src, n);
    DSQ_RETURN_IF(ZSTD_isError(got), err, DSQ_ERR_CHECKSUM, "%s: %s at byte %llu: zstd: %s", path, what,
                  (unsigned long long)at, ZSTD_getErrorName(got));
    DSQ_RETURN_IF(got != want, err, DSQ_ERR_TRUNCATED, "%s: %s at byte %llu holds %zu bytes, expected %llu", path, what,
                  (unsigned long long)at, got, (unsigned long long)want);
    return DSQ_OK;
}

static dsq_status read_header(dsq_kbase_reader *r, dsq_err *err) {
    const char *path = r->map.path;
    uint64_t size = r->map.size;
    uint8_t h[DSQ_KBASE_HEADER_BYTES];
    DSQ_RETURN_IF(size < sizeof h, err, DSQ_ERR_TRUNCATED, "%s: %llu bytes, shorter than the %u-byte header", path,
                  (unsigned long long)size, DSQ_KBASE_HEADER_BYTES);
    DSQ_TRY(dsq_map_read(&r->map, 0, h, sizeof h, err));
    DSQ_RETURN_IF(memcmp(h, DSQ_KBASE_MAGIC, 8) != 0, err, DSQ_ERR_MAGIC, "%s: not a dsq KL base file (bad magic)",
                  path);
    dsq_cursor c = dsq_cursor_make(h, sizeof h);
    dsq_cursor_seek(&c, OFF_VERSION);
    uint32_t version = dsq_cursor_u32le(&c), header_bytes = dsq_cursor_u32le(&c);
    DSQ_RETURN_IF(version != DSQ_KBASE_VERSION, err, DSQ_ERR_VERSION, "%s: version %u, this build reads version %u",
                  path, version, DSQ_KBASE_VERSION);
    DSQ_RETURN_IF(header_bytes != DSQ_KBASE_HEADER_BYTES, err, DSQ_ERR_FORMAT, "%s: header size %u, expected %u", path,
                  header_bytes, DSQ_KBASE_HEADER_BYTES);
    uint64_t sum = XXH3_64bits(h, OFF_CHECKSUM);
    dsq_cursor_seek(&c, OFF_CHECKSUM);
    DSQ_RETURN_IF(dsq_cursor_u64le(&c) != sum, err, DSQ_ERR_CHECKSUM, "%s: header checksum mismatch", path);

    dsq_kbase_info *in = &r->info;
    dsq_cursor_seek(&c, OFF_VOCAB);
    in->vocab = dsq_cursor_u32le(&c);
    in->k = dsq_cursor_u32le(&c);
    in->plan.n_ctx = dsq_cursor_u32le(&c);
    in->plan.score_from = dsq_cursor_u32le(&c);
    in->plan.n_chunks = dsq_cursor_u32le(&c);
    in->plan.bos = (int32_t)dsq_cursor_u32le(&c);
    in->plan.stride = dsq_cursor_u32le(&c);
    in->block_positions = dsq_cursor_u32le(&c);
    in->n_positions = dsq_cursor_u64le(&c);
    in->n_text = dsq_cursor_u64le(&c);
    in->tokens_hash = dsq_cursor_u64le(&c);
    in->seed = dsq_cursor_u64le(&c);
    uint64_t tbits = dsq_cursor_u64le(&c);
    memcpy(&in->temperature, &tbits, 8);
    uint32_t note_len = dsq_cursor_u32le(&c), flags = dsq_cursor_u32le(&c);
    uint64_t tok_frame = dsq_cursor_u64le(&c);
    DSQ_RETURN_IF(flags != 0, err, DSQ_ERR_UNSUPPORTED, "%s: unknown flags 0x%x", path, flags);
    for (size_t i = OFF_TOKENS_FRAME_BYTES + 8; i < OFF_CHECKSUM; i++)
        DSQ_RETURN_IF(h[i] != 0, err, DSQ_ERR_FORMAT, "%s: reserved header byte %zu is not zero", path, i);
    DSQ_RETURN_IF(note_len > DSQ_KBASE_NOTE_MAX, err, DSQ_ERR_RANGE, "%s: note of %u bytes exceeds %u", path, note_len,
                  DSQ_KBASE_NOTE_MAX);
    DSQ_TRY(check_info(path, in, err)); /* the note is still empty here; it is checked below */
    uint64_t positions, text;
    DSQ_TRY(plan_counts(path, &in->plan, &positions, &text, err));
    DSQ_RETURN_IF(positions != in->n_positions || text != in->n_text, err, DSQ_ERR_FORMAT,
                  "%s: header counts (%llu positions, %llu tokens) disagree with its chunk plan (%llu, %llu)", path,
                  (unsigned long long)in->n_positions, (unsigned long long)in->n_text, (unsigned long long)positions,
                  (unsigned long long)text);
    /* note */
    uint64_t off = DSQ_KBASE_HEADER_BYTES, end;
    DSQ_RETURN_IF(!dsq_add_u64(off, note_len, &end) || end > size, err, DSQ_ERR_TRUNCATED,
                  "%s: note runs past the end of the file", path);
    if (note_len) DSQ_TRY(dsq_map_read(&r->map, off, in->note, note_len, err));
    in->note[note_len] = 0;
    DSQ_RETURN_IF(strlen(in->note) != note_len || !note_ok(in->note), err, DSQ_ERR_FORMAT,
                  "%s: note holds a NUL or control byte", path);
    off = end;

    /* token section */
    DSQ_RETURN_IF(!dsq_add_u64(off, tok_frame, &end) || end > size || tok_frame > SIZE_MAX, err, DSQ_ERR_TRUNCATED,
                  "%s: token section of %llu bytes at byte %llu runs past the end of the file", path,
                  (unsigned long long)tok_frame, (unsigned long long)off);
    uint64_t tok_bytes = in->n_text * 4; /* ≤ 4 · DSQ_KBASE_MAX_TEXT_TOKENS, checked by plan_counts */
    uint8_t *zt = dsq_malloc(tok_frame ? (size_t)tok_frame : 1);
    uint8_t *raw = dsq_malloc((size_t)tok_bytes + 1);
    r->text = dsq_malloc((size_t)tok_bytes + 1);
    dsq_status s = zt && raw && r->text ? DSQ_OK
                                        : dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for %llu tokens", path,
                                                      (unsigned long long)in->n_text);
    if (s == DSQ_OK) s = dsq_map_read(&r->map, off, zt, (size_t)tok_frame, err);
    if (s == DSQ_OK) s = unframe(r, zt, (size_t)tok_frame, raw, tok_bytes, "token section", off, err);
    if (s == DSQ_OK) {
        dsq_cursor tc = dsq_cursor_make(raw, (size_t)tok_bytes);
        for (uint64_t i = 0; i < in->n_text && s == DSQ_OK; i++) {
            uint32_t v = dsq_cursor_u32le(&tc);
            if (v >= in->vocab)
                s = dsq_err_set(err, DSQ_ERR_TOKEN, "%s: text token %llu (id %u) outside the vocabulary [0, %u)", path,
                                (unsigned long long)i, v, in->vocab);
            r->text[i] = (int32_t)v;
        }
    }
    if (s == DSQ_OK && dsq_kbase_tokens_hash(r->text, in->n_text) != in->tokens_hash)
        s = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: token section does not match the header's token hash", path);
    dsq_free(zt);
    dsq_free(raw);
    DSQ_TRY(s);
    r->pos = end;
    return DSQ_OK;
}

dsq_status dsq_kbase_reader_open(const char *path, dsq_kbase_reader **out, dsq_err *err) {
    *out = NULL;
    dsq_kbase_reader *r = dsq_calloc(1, sizeof *r);
    DSQ_RETURN_IF(!r, err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    dsq_status s = dsq_map_open(path, false, &r->map, err);
    r->mapped = s == DSQ_OK;
    if (s == DSQ_OK) {
        r->dctx = ZSTD_createDCtx();
        s = r->dctx ? read_header(r, err) : dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    if (s == DSQ_OK) {
        r->rec_bytes = record_bytes(r->info.k);
        size_t block = (size_t)(r->rec_bytes * r->info.block_positions);
        r->zcap = ZSTD_compressBound(block);
        r->block = dsq_malloc(block);
        r->zbuf = dsq_malloc(r->zcap);
        r->ids = dsq_malloc((size_t)r->info.k * sizeof *r->ids);
        r->lps = dsq_malloc((size_t)r->info.k * sizeof *r->lps);
        r->stamp = dsq_calloc(r->info.vocab, sizeof *r->stamp);
        if (!r->block || !r->zbuf || !r->ids || !r->lps || !r->stamp)
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory for block buffers", path);
    }
    if (s != DSQ_OK) {
        dsq_kbase_reader_close(r);
        return s;
    }
    *out = r;
    return DSQ_OK;
}

static dsq_status load_block(dsq_kbase_reader *r, dsq_err *err) {
    const char *path = r->map.path;
    uint64_t left = r->info.n_positions - r->read;
    uint32_t want = left < r->info.block_positions ? (uint32_t)left : r->info.block_positions;
    uint64_t end;
    DSQ_RETURN_IF(!dsq_add_u64(r->pos, BLOCK_HEAD_BYTES, &end) || end > r->map.size, err, DSQ_ERR_TRUNCATED,
                  "%s: file ends at byte %llu, %llu positions missing", path, (unsigned long long)r->map.size,
                  (unsigned long long)left);
    uint8_t head[BLOCK_HEAD_BYTES];
    DSQ_TRY(dsq_map_read(&r->map, r->pos, head, sizeof head, err));
    dsq_cursor c = dsq_cursor_make(head, sizeof head);
    uint32_t n = dsq_cursor_u32le(&c), zn = dsq_cursor_u32le(&c);
    DSQ_RETURN_IF(n != want, err, DSQ_ERR_FORMAT, "%s: block at byte %llu holds %u positions, expected %u", path,
                  (unsigned long long)r->pos, n, want);
    DSQ_RETURN_IF(zn > r->zcap, err, DSQ_ERR_RANGE, "%s: block at byte %llu: %u compressed bytes exceed the bound %zu",
                  path, (unsigned long long)r->pos, zn, r->zcap);
    uint64_t data = end;
    DSQ_RETURN_IF(!dsq_add_u64(data, zn, &end) || end > r->map.size, err, DSQ_ERR_TRUNCATED,
                  "%s: block at byte %llu runs past the end of the file", path, (unsigned long long)r->pos);
    DSQ_TRY(dsq_map_read(&r->map, data, r->zbuf, zn, err));
    DSQ_TRY(unframe(r, r->zbuf, zn, r->block, (uint64_t)n * r->rec_bytes, "block", r->pos, err));
    r->pos = end;
    r->in_block = n;
    r->next_in_block = 0;
    return DSQ_OK;
}

static dsq_status check_record(dsq_kbase_reader *r, const dsq_kbase_record *rec, dsq_err *err) {
    const char *path = r->map.path;
    unsigned long long at = (unsigned long long)r->read;
    uint32_t vocab = r->info.vocab, k = r->info.k;
    DSQ_RETURN_IF(rec->target < 0 || (uint32_t)rec->target >= vocab || rec->sample < 0 ||
                      (uint32_t)rec->sample >= vocab,
                  err, DSQ_ERR_TOKEN, "%s: position %llu: target %d / sample %d outside the vocabulary", path, at,
                  (int)rec->target, (int)rec->sample);
    if (++r->gen == 0) {
        memset(r->stamp, 0, (size_t)vocab * sizeof *r->stamp);
        r->gen = 1;
    }
    double mass = 0;
    int64_t target_at = -1;
    for (uint32_t j = 0; j < k; j++) {
        int32_t id = rec->ids[j];
        float lp = rec->lps[j];
        DSQ_RETURN_IF(id < 0 || (uint32_t)id >= vocab, err, DSQ_ERR_TOKEN,
                      "%s: position %llu: id %d outside the vocabulary", path, at, (int)id);
        DSQ_RETURN_IF(r->stamp[id] == r->gen, err, DSQ_ERR_DUPLICATE, "%s: position %llu: id %d listed twice", path, at,
                      (int)id);
        r->stamp[id] = r->gen;
        DSQ_RETURN_IF(isnan(lp) || lp > 0 || (j > 0 && lp > rec->lps[j - 1]), err, DSQ_ERR_FORMAT,
                      "%s: position %llu: log-prob %g of entry %u is not ≤ 0 and non-increasing", path, at, (double)lp,
                      j);
        if (id == rec->target) target_at = j;
        mass += exp((double)lp);
    }
    DSQ_RETURN_IF(isnan(rec->rest_lp) || rec->rest_lp > 0 || (k == vocab && rec->rest_lp != -INFINITY), err,
                  DSQ_ERR_FORMAT, "%s: position %llu: remainder log-mass %g invalid", path, at, (double)rec->rest_lp);
    mass += exp((double)rec->rest_lp);
    DSQ_RETURN_IF(!(fabs(mass - 1.0) <= DSQ_KBASE_MASS_TOL), err, DSQ_ERR_FORMAT,
                  "%s: position %llu: probabilities sum to %.6f, not 1", path, at, mass);
    bool target_ok = target_at >= 0 ? rec->target_lp == rec->lps[target_at]
                                    : !isnan(rec->target_lp) && rec->target_lp <= rec->lps[k - 1];
    DSQ_RETURN_IF(!target_ok, err, DSQ_ERR_FORMAT, "%s: position %llu: target log-prob %g inconsistent with the top-k",
                  path, at, (double)rec->target_lp);
    return DSQ_OK;
}

static float get_f32(const uint8_t *p) {
    uint32_t b = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

dsq_status dsq_kbase_reader_next(dsq_kbase_reader *r, dsq_kbase_record *rec, bool *done, dsq_err *err) {
    *done = false;
    if (r->read == r->info.n_positions) {
        DSQ_RETURN_IF(r->pos != r->map.size, err, DSQ_ERR_UNEXPECTED, "%s: %llu unexpected bytes after the last block",
                      r->map.path, (unsigned long long)(r->map.size - r->pos));
        *done = true;
        return DSQ_OK;
    }
    if (r->next_in_block == r->in_block) DSQ_TRY(load_block(r, err));
    const uint8_t *p = r->block + (size_t)(r->next_in_block * r->rec_bytes);
    dsq_kbase_record x;
    x.target = (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    x.sample = (int32_t)((uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24);
    x.target_lp = get_f32(p + 8);
    x.rest_lp = get_f32(p + 12);
    x.k = r->info.k;
    const uint8_t *ids = p + RECORD_FIXED_BYTES, *lps = ids + 4 * (size_t)x.k;
    for (uint32_t j = 0; j < x.k; j++) {
        const uint8_t *q = ids + 4 * j;
        r->ids[j] = (int32_t)((uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24);
        r->lps[j] = get_f32(lps + 4 * j);
    }
    x.ids = r->ids;
    x.lps = r->lps;
    DSQ_TRY(check_record(r, &x, err));
    r->next_in_block++;
    r->read++;
    *rec = x;
    return DSQ_OK;
}
