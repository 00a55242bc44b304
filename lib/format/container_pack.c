/* .dsqz: a .dsq as independent zstd frames, one per tensor (spec formats/spec/dsq.md §8). */
#define XXH_STATIC_LINKING_ONLY
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "container_internal.h"

#define DSQZ_MAGIC "\x89\x44\x53\x51\x5a\x0d\x0a\x1a"
#define DSQZ_HEADER_BYTES 64u
#define DSQZ_INDEX_ENTRY 40u
#define DSQZ_VERSION 1
#define CHUNK (4u << 20)
/* Frames decompressed into memory (header and table segments) are at most this large. */
#define DSQZ_MAX_META_FRAME (256u << 20)

typedef struct frame {
    uint64_t dsq_offset, dsq_bytes, z_offset, z_bytes, xxh3;
} frame;

/* ---- pack ---- */

static int u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Segment boundaries that tile the file: 0, data_offset, each tensor's first part, data_end, file end. */
static dsq_status plan_segments(const dsq_ctr_reader *r, uint64_t **out, size_t *n_out, dsq_err *err) {
    const dsq_file_header *h = dsq_ctr_header(r);
    size_t n = dsq_ctr_count(r), k = 0;
    uint64_t *b = dsq_malloc((n + 4) * sizeof *b);
    DSQ_RETURN_IF(!b, err, DSQ_ERR_NOMEM, "%s: out of memory", dsq_ctr_path(r));
    b[k++] = 0;
    b[k++] = h->data_offset;
    for (size_t i = 0; i < n; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        uint64_t first = t->parts[0].offset;
        for (int p = 1; p < t->n_parts; p++)
            if (t->parts[p].offset < first) first = t->parts[p].offset;
        b[k++] = first;
    }
    b[k++] = h->data_offset + h->data_bytes;
    b[k++] = h->file_bytes;
    qsort(b, k, sizeof *b, u64_cmp);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || b[i] != b[u - 1]) b[u++] = b[i];
    *out = b;
    *n_out = u; /* u boundaries → u-1 segments */
    return DSQ_OK;
}

dsq_status dsq_ctr_pack(const char *in, const char *out, int level, int threads, bool overwrite,
                        dsq_ctr_pack_stats *stats, dsq_err *err) {
    dsq_ctr_reader *r = NULL;
    DSQ_TRY(dsq_ctr_reader_open(in, NULL, &r, err));
    dsq_map m;
    dsq_status s = dsq_map_open(in, true, &m, err);
    if (s != DSQ_OK) {
        dsq_ctr_reader_close(r);
        return s;
    }
    uint64_t *bounds = NULL;
    size_t nb = 0;
    frame *frames = NULL;
    uint8_t *inbuf = NULL, *outbuf = NULL;
    ZSTD_CCtx *cc = NULL;
    dsq_afile af = {.fd = -1};
    bool opened = false;
    s = plan_segments(r, &bounds, &nb, err);
    size_t nf = nb - 1;
    size_t obuf_cap = ZSTD_CStreamOutSize();
    if (s == DSQ_OK) {
        frames = dsq_calloc(nf ? nf : 1, sizeof *frames);
        inbuf = dsq_malloc(CHUNK);
        outbuf = dsq_malloc(obuf_cap);
        cc = ZSTD_createCCtx();
        if (!frames || !inbuf || !outbuf || !cc) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", out);
    }
    if (s == DSQ_OK) {
        ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level ? level : 3);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 0);
        if (threads > 0) ZSTD_CCtx_setParameter(cc, ZSTD_c_nbWorkers, threads); /* ignored without MT support */
        dsq_afile_options ao = {.overwrite = overwrite};
        s = dsq_afile_open(out, &ao, &af, err);
        opened = s == DSQ_OK;
    }
    uint8_t hdr[DSQZ_HEADER_BYTES] = {0};
    if (s == DSQ_OK) s = dsq_afile_write(&af, hdr, sizeof hdr, err); /* placeholder */
    XXH3_state_t st;
    for (size_t f = 0; s == DSQ_OK && f < nf; f++) {
        frame *fr = &frames[f];
        fr->dsq_offset = bounds[f];
        fr->dsq_bytes = bounds[f + 1] - bounds[f];
        fr->z_offset = af.written;
        ZSTD_CCtx_reset(cc, ZSTD_reset_session_only);
        ZSTD_CCtx_setPledgedSrcSize(cc, fr->dsq_bytes);
        XXH3_64bits_reset(&st);
        uint64_t pos = fr->dsq_offset, end = fr->dsq_offset + fr->dsq_bytes;
        bool finished = false;
        while (s == DSQ_OK && !finished) {
            size_t k = end - pos > CHUNK ? CHUNK : (size_t)(end - pos);
            if (k) {
                s = dsq_map_read(&m, pos, inbuf, k, err);
                if (s != DSQ_OK) break;
                XXH3_64bits_update(&st, inbuf, k);
                pos += k;
            }
            ZSTD_EndDirective mode = pos == end ? ZSTD_e_end : ZSTD_e_continue;
            ZSTD_inBuffer zin = {inbuf, k, 0};
            for (;;) {
                ZSTD_outBuffer zout = {outbuf, obuf_cap, 0};
                size_t rem = ZSTD_compressStream2(cc, &zout, &zin, mode);
                if (ZSTD_isError(rem)) {
                    s = dsq_err_set(err, DSQ_ERR_IO, "%s: zstd compression failed: %s", out, ZSTD_getErrorName(rem));
                    break;
                }
                if (zout.pos) s = dsq_afile_write(&af, outbuf, zout.pos, err);
                if (s != DSQ_OK) break;
                if (mode == ZSTD_e_end ? rem == 0 : zin.pos == zin.size) {
                    finished = mode == ZSTD_e_end;
                    break;
                }
            }
        }
        fr->z_bytes = af.written - fr->z_offset;
        fr->xxh3 = (uint64_t)XXH3_64bits_digest(&st);
        dsq_map_dontneed(&m, fr->dsq_offset, fr->dsq_bytes);
    }
    uint64_t index_offset = af.written;
    if (s == DSQ_OK) {
        size_t ib = nf * DSQZ_INDEX_ENTRY;
        uint8_t *idx = dsq_calloc(1, ib ? ib : 1);
        if (!idx) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", out);
        for (size_t f = 0; s == DSQ_OK && f < nf; f++) {
            uint8_t *e = idx + f * DSQZ_INDEX_ENTRY;
            dsq_put_u64le(e, frames[f].dsq_offset);
            dsq_put_u64le(e + 8, frames[f].dsq_bytes);
            dsq_put_u64le(e + 16, frames[f].z_offset);
            dsq_put_u64le(e + 24, frames[f].z_bytes);
            dsq_put_u64le(e + 32, frames[f].xxh3);
        }
        if (s == DSQ_OK) s = dsq_afile_write(&af, idx, ib, err);
        memcpy(hdr, DSQZ_MAGIC, 8);
        dsq_put_u16le(hdr + 8, DSQZ_VERSION);
        dsq_put_u64le(hdr + 16, dsq_ctr_header(r)->file_bytes);
        dsq_put_u64le(hdr + 24, index_offset);
        dsq_put_u64le(hdr + 32, nf);
        dsq_put_u64le(hdr + 40, dsq__ctr_xxh3(idx, ib));
        dsq_put_u64le(hdr + 56, dsq__ctr_xxh3(hdr, 56));
        if (s == DSQ_OK) s = dsq_afile_pwrite(&af, 0, hdr, sizeof hdr, err);
        dsq_free(idx);
    }
    if (stats) {
        stats->dsq_bytes = dsq_ctr_header(r)->file_bytes;
        stats->dsqz_bytes = af.written;
        stats->frames = nf;
    }
    if (s == DSQ_OK) s = dsq_afile_commit(&af, err);
    else if (opened) dsq_afile_abort(&af);
    ZSTD_freeCCtx(cc);
    dsq_free(inbuf);
    dsq_free(outbuf);
    dsq_free(frames);
    dsq_free(bounds);
    dsq_map_close(&m);
    dsq_ctr_reader_close(r);
    return s;
}

/* ---- unpack ---- */

typedef struct dsqz {
    dsq_map m;
    uint64_t dsq_bytes;
    frame *frames;
    size_t n;
} dsqz;

static void dsqz_close(dsqz *z) {
    dsq_map_close(&z->m);
    dsq_free(z->frames);
}

static dsq_status dsqz_open(const char *path, dsqz *z, dsq_err *err) {
    memset(z, 0, sizeof *z);
    z->m.fd = -1;
    DSQ_TRY(dsq_map_open(path, false, &z->m, err));
    uint8_t h[DSQZ_HEADER_BYTES];
    dsq_status s = DSQ_OK;
    if (z->m.size < DSQZ_HEADER_BYTES)
        s = dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: file is %llu bytes, smaller than the .dsqz header", path,
                        (unsigned long long)z->m.size);
    if (s == DSQ_OK) s = dsq_map_read(&z->m, 0, h, sizeof h, err);
    if (s == DSQ_OK && memcmp(h, DSQZ_MAGIC, 8) != 0) s = dsq_err_set(err, DSQ_ERR_MAGIC, "%s: not a .dsqz file", path);
    if (s == DSQ_OK && dsq_file_le16(h + 8) != DSQZ_VERSION)
        s = dsq_err_set(err, DSQ_ERR_VERSION, "%s: .dsqz version %u not supported", path, dsq_file_le16(h + 8));
    if (s == DSQ_OK && dsq_file_le64(h + 56) != dsq__ctr_xxh3(h, 56))
        s = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: header checksum mismatch", path);
    uint64_t index_offset = dsq_file_le64(h + 24), nf = dsq_file_le64(h + 32), ib = 0, end = 0;
    z->dsq_bytes = dsq_file_le64(h + 16);
    if (s == DSQ_OK && (!dsq_mul_u64(nf, DSQZ_INDEX_ENTRY, &ib) || !dsq_add_u64(index_offset, ib, &end) ||
                        end != z->m.size || index_offset < DSQZ_HEADER_BYTES || nf == 0 || ib > SIZE_MAX))
        s = dsq_err_set(err, end > z->m.size ? DSQ_ERR_TRUNCATED : DSQ_ERR_RANGE,
                        "%s: index (%llu frames at offset %llu) does not end the %llu-byte file", path,
                        (unsigned long long)nf, (unsigned long long)index_offset, (unsigned long long)z->m.size);
    uint8_t *idx = NULL;
    if (s == DSQ_OK) {
        idx = dsq_malloc((size_t)ib);
        z->frames = dsq_calloc((size_t)nf, sizeof *z->frames);
        if (!idx || !z->frames) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    }
    if (s == DSQ_OK) s = dsq_map_read(&z->m, index_offset, idx, (size_t)ib, err);
    if (s == DSQ_OK && dsq__ctr_xxh3(idx, (size_t)ib) != dsq_file_le64(h + 40))
        s = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: index checksum mismatch", path);
    uint64_t dpos = 0, zpos = DSQZ_HEADER_BYTES;
    for (uint64_t f = 0; s == DSQ_OK && f < nf; f++) {
        frame *fr = &z->frames[f];
        const uint8_t *e = idx + f * DSQZ_INDEX_ENTRY;
        fr->dsq_offset = dsq_file_le64(e);
        fr->dsq_bytes = dsq_file_le64(e + 8);
        fr->z_offset = dsq_file_le64(e + 16);
        fr->z_bytes = dsq_file_le64(e + 24);
        fr->xxh3 = dsq_file_le64(e + 32);
        uint64_t de, ze;
        if (fr->dsq_offset != dpos || fr->z_offset != zpos || !dsq_add_u64(dpos, fr->dsq_bytes, &de) ||
            !dsq_add_u64(zpos, fr->z_bytes, &ze) || ze > index_offset || fr->dsq_bytes == 0)
            s = dsq_err_set(err, DSQ_ERR_RANGE, "%s: frame %llu does not continue the previous one", path,
                            (unsigned long long)f);
        else {
            dpos = de;
            zpos = ze;
        }
    }
    if (s == DSQ_OK && (dpos != z->dsq_bytes || zpos != index_offset))
        s = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: frames do not tile the %llu-byte container", path,
                        (unsigned long long)z->dsq_bytes);
    dsq_free(idx);
    z->n = (size_t)nf;
    if (s != DSQ_OK) dsqz_close(z);
    return s;
}

typedef dsq_status (*sink_fn)(void *ctx, uint64_t dsq_offset, const void *buf, size_t n, dsq_err *err);

/* Decompress frame f, handing the restored bytes to sink in order; checks size and checksum. */
static dsq_status frame_stream(dsqz *z, size_t f, sink_fn sink, void *ctx, dsq_err *err) {
    const frame *fr = &z->frames[f];
    const char *path = z->m.path;
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    size_t ocap = ZSTD_DStreamOutSize();
    uint8_t *ib = dsq_malloc(CHUNK), *ob = dsq_malloc(ocap);
    dsq_status s = DSQ_OK;
    if (!dc || !ib || !ob) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", path);
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    uint64_t zpos = fr->z_offset, zend = fr->z_offset + fr->z_bytes, produced = 0;
    size_t last = 1;
    while (s == DSQ_OK && zpos < zend) {
        size_t k = zend - zpos > CHUNK ? CHUNK : (size_t)(zend - zpos);
        s = dsq_map_read(&z->m, zpos, ib, k, err);
        zpos += k;
        ZSTD_inBuffer zin = {ib, k, 0};
        while (s == DSQ_OK && zin.pos < zin.size) {
            if (last == 0) {
                s = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: frame %zu has trailing bytes after its zstd frame", path, f);
                break;
            }
            ZSTD_outBuffer zout = {ob, ocap, 0};
            last = ZSTD_decompressStream(dc, &zout, &zin);
            if (ZSTD_isError(last)) {
                s = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: frame %zu: zstd data invalid: %s", path, f,
                                ZSTD_getErrorName(last));
                break;
            }
            if (zout.pos > fr->dsq_bytes - produced) {
                s = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: frame %zu decompresses to more than its %llu bytes", path, f,
                                (unsigned long long)fr->dsq_bytes);
                break;
            }
            XXH3_64bits_update(&st, ob, zout.pos);
            if (zout.pos) s = sink(ctx, fr->dsq_offset + produced, ob, zout.pos, err);
            produced += zout.pos;
        }
        /* flush what the decoder still holds once the input is consumed */
        while (s == DSQ_OK && zpos == zend && last != 0) {
            ZSTD_inBuffer none = {ib, 0, 0};
            ZSTD_outBuffer zout = {ob, ocap, 0};
            last = ZSTD_decompressStream(dc, &zout, &none);
            if (ZSTD_isError(last) || zout.pos == 0) break;
            if (zout.pos > fr->dsq_bytes - produced) {
                s = dsq_err_set(err, DSQ_ERR_FORMAT, "%s: frame %zu decompresses to more than its %llu bytes", path, f,
                                (unsigned long long)fr->dsq_bytes);
                break;
            }
            XXH3_64bits_update(&st, ob, zout.pos);
            s = sink(ctx, fr->dsq_offset + produced, ob, zout.pos, err);
            produced += zout.pos;
        }
    }
    if (s == DSQ_OK && (last != 0 || produced != fr->dsq_bytes))
        s = dsq_err_set(err, DSQ_ERR_TRUNCATED, "%s: frame %zu ends early (%llu of %llu bytes restored)", path, f,
                        (unsigned long long)produced, (unsigned long long)fr->dsq_bytes);
    if (s == DSQ_OK && (uint64_t)XXH3_64bits_digest(&st) != fr->xxh3)
        s = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: frame %zu (container bytes %llu..%llu) checksum mismatch", path, f,
                        (unsigned long long)fr->dsq_offset, (unsigned long long)(fr->dsq_offset + fr->dsq_bytes));
    ZSTD_freeDCtx(dc);
    dsq_free(ib);
    dsq_free(ob);
    return s;
}

static dsq_status sink_file(void *ctx, uint64_t off, const void *buf, size_t n, dsq_err *err) {
    return dsq_afile_pwrite((dsq_afile *)ctx, off, buf, n, err);
}

/* Restored pieces of the container held in memory (head and tail frames). */
typedef struct piece {
    uint64_t offset, bytes;
    uint8_t *data;
} piece;
typedef struct sparse {
    piece *p;
    size_t n;
    const char *path;
} sparse;

static dsq_status sink_mem(void *ctx, uint64_t off, const void *buf, size_t n, dsq_err *err) {
    piece *pc = ctx;
    memcpy(pc->data + (off - pc->offset), buf, n);
    return DSQ_OK;
}

static dsq_status sparse_read(void *ctx, uint64_t offset, void *buf, size_t n, dsq_err *err) {
    const sparse *sp = ctx;
    uint8_t *out = buf;
    while (n > 0) {
        const piece *hit = NULL;
        for (size_t i = 0; i < sp->n; i++)
            if (offset >= sp->p[i].offset && offset - sp->p[i].offset < sp->p[i].bytes) hit = &sp->p[i];
        DSQ_RETURN_IF(!hit, err, DSQ_ERR_STATE, "%s: container bytes at %llu are not restored", sp->path,
                      (unsigned long long)offset);
        uint64_t avail = hit->bytes - (offset - hit->offset);
        size_t k = n < avail ? n : (size_t)avail;
        memcpy(out, hit->data + (offset - hit->offset), k);
        out += k;
        offset += k;
        n -= k;
    }
    return DSQ_OK;
}

static dsq_status sparse_add_frame(dsqz *z, sparse *sp, size_t f, dsq_err *err) {
    for (size_t i = 0; i < sp->n; i++)
        if (sp->p[i].offset == z->frames[f].dsq_offset) return DSQ_OK;
    DSQ_RETURN_IF(z->frames[f].dsq_bytes > DSQZ_MAX_META_FRAME, err, DSQ_ERR_RANGE,
                  "%s: header/table frame %zu of %llu bytes is too large", z->m.path, f,
                  (unsigned long long)z->frames[f].dsq_bytes);
    piece *np = dsq_realloc(sp->p, (sp->n + 1) * sizeof *np);
    DSQ_RETURN_IF(!np, err, DSQ_ERR_NOMEM, "%s: out of memory", z->m.path);
    sp->p = np;
    piece *pc = &sp->p[sp->n];
    pc->offset = z->frames[f].dsq_offset;
    pc->bytes = z->frames[f].dsq_bytes;
    pc->data = dsq_malloc((size_t)pc->bytes);
    DSQ_RETURN_IF(!pc->data, err, DSQ_ERR_NOMEM, "%s: out of memory", z->m.path);
    sp->n++;
    return frame_stream(z, f, sink_mem, pc, err);
}

static void sparse_free(sparse *sp) {
    for (size_t i = 0; i < sp->n; i++) dsq_free(sp->p[i].data);
    dsq_free(sp->p);
}

/* Frame holding container offset `off`. */
static size_t frame_at(const dsqz *z, uint64_t off) {
    size_t lo = 0, hi = z->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (z->frames[mid].dsq_offset <= off) lo = mid;
        else hi = mid;
    }
    return lo;
}

typedef struct part_sink {
    dsq_ctr_writer *w;
    uint32_t index;
    const dsq_ctr_tensor *src; /* original tensor: part offsets in the packed container */
} part_sink;

static dsq_status sink_parts(void *ctx, uint64_t off, const void *buf, size_t n, dsq_err *err) {
    part_sink *ps = ctx;
    for (int p = 0; p < ps->src->n_parts; p++) {
        const dsq_ctr_part *part = &ps->src->parts[p];
        uint64_t a = off > part->offset ? off : part->offset;
        uint64_t b = off + n < part->offset + part->bytes ? off + n : part->offset + part->bytes;
        if (a < b)
            DSQ_TRY(dsq_ctr_writer_write(ps->w, ps->index, p, a - part->offset, (const uint8_t *)buf + (a - off),
                                         (size_t)(b - a), err));
    }
    return DSQ_OK;
}

static dsq_status unpack_some(dsqz *z, const char *out, const char *const *names, size_t n_names, bool overwrite,
                              dsq_err *err) {
    sparse sp = {NULL, 0, z->m.path};
    dsq_ctr_reader *r = NULL;
    dsq_ctr_writer *w = NULL;
    const dsq_ctr_tensor **sel = NULL;
    size_t n_sel = 0;
    dsq_status s = sparse_add_frame(z, &sp, 0, err);
    if (s == DSQ_OK) {
        /* the header says where the tail (directory + sections) starts */
        uint8_t h[DSQ_FILE_HEADER_BYTES];
        dsq_file_header fh = {0};
        s = sparse_read(&sp, 0, h, sizeof h, err);
        if (s == DSQ_OK && dsq_file_header_decode(h, &fh) != 0)
            s = dsq_err_set(err, DSQ_ERR_MAGIC, "%s: restored header is not a .dsq header", z->m.path);
        uint64_t tail = fh.data_offset + fh.data_bytes;
        if (s == DSQ_OK && tail < z->dsq_bytes)
            for (size_t f = frame_at(z, tail); s == DSQ_OK && f < z->n; f++) s = sparse_add_frame(z, &sp, f, err);
    }
    if (s == DSQ_OK) {
        dsq__ctr_src src = {sparse_read, &sp, z->dsq_bytes, z->m.path, NULL};
        s = dsq__ctr_reader_open_src(&src, false, &r, err);
    }
    if (s == DSQ_OK) {
        sel = dsq_calloc(n_names, sizeof *sel);
        if (!sel) s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", out);
    }
    for (size_t i = 0; s == DSQ_OK && i < n_names; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_find(r, names[i]);
        if (!t && !dsq_ctr_find_source(r, names[i], &t, NULL)) {
            s = dsq_err_set(err, DSQ_ERR_MISSING, "%s: no tensor named %s", z->m.path, names[i]);
            break;
        }
        bool dup = false;
        for (size_t k = 0; k < n_sel; k++) dup |= sel[k] == t;
        if (!dup) sel[n_sel++] = t;
    }
    if (s == DSQ_OK) {
        const dsq_file_header *fh = dsq_ctr_header(r);
        dsq_ctr_writer_options wo = {.overwrite = overwrite,
                                     .align_small = fh->align_small,
                                     .align_large = fh->align_large,
                                     .large_threshold = fh->large_threshold};
        s = dsq_ctr_writer_create(out, &wo, &w, err);
    }
    for (size_t i = 0; s == DSQ_OK && i < n_sel; i++) {
        const dsq_ctr_tensor *t = sel[i];
        dsq_ctr_source_desc *sd = t->n_sources ? dsq_calloc(t->n_sources, sizeof *sd) : NULL;
        if (t->n_sources && !sd) {
            s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", out);
            break;
        }
        for (uint32_t k = 0; k < t->n_sources; k++) {
            const dsq_ctr_source *so = &t->sources[k];
            sd[k] = (dsq_ctr_source_desc){so->name, so->scale_name, so->start, so->count, so->squeeze,
                                          so->dtype, so->scale_dtype, so->shard};
        }
        dsq_ctr_tensor_desc d = {t->name, t->encoding, t->rank, {0}, t->block_rows, t->block_cols, t->n_sources, sd};
        memcpy(d.shape, t->shape, sizeof d.shape);
        s = dsq_ctr_writer_add(w, &d, NULL, err);
        dsq_free(sd);
    }
    size_t mlen = 0;
    const char *meta = r ? dsq_ctr_metadata(r, &mlen) : NULL;
    if (s == DSQ_OK) s = dsq_ctr_writer_set_metadata(w, meta, mlen, err);
    if (s == DSQ_OK) s = dsq_ctr_writer_begin(w, err);
    for (uint32_t i = 0; s == DSQ_OK && i < n_sel; i++) {
        const dsq_ctr_tensor *t = sel[i];
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int p = 0; p < t->n_parts; p++) {
            if (t->parts[p].offset < lo) lo = t->parts[p].offset;
            if (t->parts[p].offset + t->parts[p].bytes > hi) hi = t->parts[p].offset + t->parts[p].bytes;
        }
        part_sink ps = {w, i, t};
        for (size_t f = frame_at(z, lo); s == DSQ_OK && f < z->n && z->frames[f].dsq_offset < hi; f++)
            s = frame_stream(z, f, sink_parts, &ps, err);
        for (uint32_t k = 0; s == DSQ_OK && k < t->n_sources; k++)
            dsq_ctr_writer_set_source_hash(w, i, k, t->sources[k].xxh3, t->sources[k].scale_xxh3);
        if (s == DSQ_OK) s = dsq_ctr_writer_end_tensor(w, i, err);
        const dsq_ctr_tensor *nt = s == DSQ_OK ? dsq_ctr_writer_tensor(w, i) : NULL;
        for (int p = 0; nt && p < t->n_parts; p++)
            if (nt->parts[p].xxh3 != t->parts[p].xxh3) {
                s = dsq_err_set(err, DSQ_ERR_CHECKSUM, "%s: tensor %s part %d restored with a different checksum",
                                z->m.path, t->name, p);
                break;
            }
    }
    if (s == DSQ_OK) {
        s = dsq_ctr_writer_finish(w, err);
        w = NULL;
    }
    dsq_ctr_writer_free(w);
    dsq_free(sel);
    dsq_ctr_reader_close(r);
    sparse_free(&sp);
    return s;
}

dsq_status dsq_ctr_unpack(const char *in, const char *out, const char *const *names, size_t n_names, bool overwrite,
                          dsq_ctr_pack_stats *stats, dsq_err *err) {
    dsqz z;
    DSQ_TRY(dsqz_open(in, &z, err));
    if (stats) {
        stats->dsq_bytes = z.dsq_bytes;
        stats->dsqz_bytes = z.m.size;
        stats->frames = z.n;
    }
    dsq_status s;
    if (n_names > 0) {
        s = unpack_some(&z, out, names, n_names, overwrite, err);
        dsqz_close(&z);
        return s;
    }
    dsq_afile af;
    dsq_afile_options ao = {.overwrite = overwrite, .preallocate = z.dsq_bytes};
    s = dsq_afile_open(out, &ao, &af, err);
    if (s != DSQ_OK) {
        dsqz_close(&z);
        return s;
    }
    for (size_t f = 0; s == DSQ_OK && f < z.n; f++) s = frame_stream(&z, f, sink_file, &af, err);
    if (s == DSQ_OK && (dsq__fault_hit(DSQ_FAULT_FSYNC) || fdatasync(af.fd) != 0))
        s = dsq_err_set(err, DSQ_ERR_IO, "%s: fdatasync failed", af.tmp_path);
    if (s == DSQ_OK) {
        /* the restored file must be a valid container with every checksum right (RELIABILITY.md §1) */
        dsq_ctr_reader *r = NULL;
        dsq_ctr_reader_options ro = {.verify = true};
        s = dsq_ctr_reader_open(af.tmp_path, &ro, &r, err);
        dsq_ctr_reader_close(r);
    }
    if (s == DSQ_OK) s = dsq_afile_commit(&af, err);
    else dsq_afile_abort(&af);
    dsqz_close(&z);
    return s;
}
