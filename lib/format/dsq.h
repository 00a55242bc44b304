/* The .dsq container, version 1.0: on-disk constants, structs and inline decoders.
 *
 * This header is the C transcription of formats/spec/dsq.md and stands alone: plain C99, it includes
 * only <stdint.h>, <stddef.h> and <string.h>, so another runtime can copy it and read .dsq files
 * without the dsq library.  The dsq library's reader/writer is lib/format/dsq_container.h.
 *
 * All integers are little-endian.  Checksums are XXH3-64 with seed 0 (xxHash ≥ 0.8, XXH3_64bits).
 * Layout of a file (spec §1):
 *   [0, 128)                 fixed header            (dsq_file_header)
 *   [data_offset, data_end)  tensor parts at aligned offsets, zero bytes between them
 *   [pad8(data_end), ...)    section directory, then the sections (metadata JSON, tensor table)
 * A runtime reads the header, the directory and the two sections, then points straight into the data
 * region: every part starts on align_small (≥ 64) and parts of ≥ large_threshold bytes on align_large. */
#ifndef DSQ_FILE_H
#define DSQ_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- identity ---- */
#define DSQ_FILE_MAGIC "\x89\x44\x53\x51\x0d\x0a\x1a\x0a" /* \x89 D S Q \r \n \x1a \n */
#define DSQ_FILE_MAGIC_BYTES 8
#define DSQ_FILE_VERSION_MAJOR 1
#define DSQ_FILE_VERSION_MINOR 0

/* ---- limits (spec §4) ---- */
#define DSQ_FILE_MAX_SECTION 100000000u /* stored and raw bytes of any section */
#define DSQ_FILE_MAX_SECTIONS 1024u
#define DSQ_FILE_MAX_RANK 8
#define DSQ_FILE_MAX_NAME 512u
#define DSQ_FILE_MIN_ALIGN 64u
#define DSQ_FILE_MAX_ALIGN 1048576u
#define DSQ_FILE_MAX_PARTS 4
#define DSQ_FILE_MIN_RECORD 32u

/* ---- sizes of the fixed structures ---- */
#define DSQ_FILE_HEADER_BYTES 128u
#define DSQ_FILE_SECTION_ENTRY_BYTES 48u
#define DSQ_FILE_TABLE_HEADER_BYTES 16u
#define DSQ_FILE_RECORD_FIXED_BYTES 32u
#define DSQ_FILE_PART_BYTES 32u
#define DSQ_FILE_SOURCE_FIXED_BYTES 48u

/* Defaults the dsq writer uses. */
#define DSQ_FILE_DEFAULT_ALIGN_SMALL 64u
#define DSQ_FILE_DEFAULT_ALIGN_LARGE 4096u
#define DSQ_FILE_DEFAULT_LARGE_THRESHOLD 1048576u

/* ---- fixed header (spec §2): byte offsets of each field ---- */
enum dsq_file_header_offset {
    DSQ_FILE_HDR_MAGIC = 0,
    DSQ_FILE_HDR_VERSION_MAJOR = 8,
    DSQ_FILE_HDR_VERSION_MINOR = 10,
    DSQ_FILE_HDR_HEADER_BYTES = 12,
    DSQ_FILE_HDR_REQUIRED_FLAGS = 16,
    DSQ_FILE_HDR_FILE_BYTES = 24,
    DSQ_FILE_HDR_DATA_OFFSET = 32,
    DSQ_FILE_HDR_DATA_BYTES = 40,
    DSQ_FILE_HDR_DIRECTORY_OFFSET = 48,
    DSQ_FILE_HDR_SECTION_COUNT = 56,
    DSQ_FILE_HDR_SECTION_ENTRY_BYTES = 60,
    DSQ_FILE_HDR_DIRECTORY_XXH3 = 64,
    DSQ_FILE_HDR_ALIGN_SMALL = 72,
    DSQ_FILE_HDR_ALIGN_LARGE = 76,
    DSQ_FILE_HDR_LARGE_THRESHOLD = 80,
    DSQ_FILE_HDR_RESERVED = 88,
    DSQ_FILE_HDR_HEADER_XXH3 = 120,
};

typedef struct dsq_file_header {
    uint16_t version_major, version_minor;
    uint32_t header_bytes;
    uint64_t required_flags; /* none defined in 1.0 */
    uint64_t file_bytes;
    uint64_t data_offset, data_bytes;
    uint64_t directory_offset;
    uint32_t section_count, section_entry_bytes;
    uint64_t directory_xxh3;
    uint32_t align_small, align_large;
    uint64_t large_threshold;
    uint64_t header_xxh3; /* of bytes [0, 120) */
} dsq_file_header;

/* ---- section directory (spec §3) ---- */
enum dsq_file_section_kind { DSQ_FILE_SECTION_METADATA = 1, DSQ_FILE_SECTION_TENSOR_TABLE = 2 };
enum dsq_file_section_flag { DSQ_FILE_SECTION_MUST_UNDERSTAND = 1u << 0, DSQ_FILE_SECTION_ZSTD = 1u << 1 };
#define DSQ_FILE_SECTION_KNOWN_FLAGS (DSQ_FILE_SECTION_MUST_UNDERSTAND | DSQ_FILE_SECTION_ZSTD)

typedef struct dsq_file_section {
    uint32_t kind, flags;
    uint64_t offset, stored_bytes, raw_bytes, xxh3;
} dsq_file_section;

/* ---- tensor table (spec §5) ---- */
enum dsq_file_part_kind {
    DSQ_FILE_PART_DATA = 1,
    DSQ_FILE_PART_SCALES = 2,
    DSQ_FILE_PART_MINS = 3,
    DSQ_FILE_PART_TENSOR_SCALE = 4,
};

/* Element types: the dsq_dtype values of lib/format/dsq_safetensors.h that the container uses. */
enum dsq_file_dtype {
    DSQ_FILE_DTYPE_F32 = 1,
    DSQ_FILE_DTYPE_F16 = 2,
    DSQ_FILE_DTYPE_BF16 = 3,
    DSQ_FILE_DTYPE_F8_E4M3 = 4,
    DSQ_FILE_DTYPE_F8_E8M0 = 6,
    DSQ_FILE_DTYPE_I8 = 7,
    DSQ_FILE_DTYPE_U8 = 8,
    DSQ_FILE_DTYPE_I32 = 10,
    DSQ_FILE_DTYPE_I64 = 11,
    DSQ_FILE_DTYPE_NONE = 255, /* source record: no scale tensor */
};

/* Encodings: the values of enum dsq_encoding (lib/format/dsq_encoding.h). Never renumbered. */
enum dsq_file_encoding {
    DSQ_FILE_ENC_F32 = 1,
    DSQ_FILE_ENC_F16 = 2,
    DSQ_FILE_ENC_BF16 = 3,
    DSQ_FILE_ENC_FP8_B128 = 4,
    DSQ_FILE_ENC_FP8_B128_F32 = 5,
    DSQ_FILE_ENC_FP8_R128 = 6,
    DSQ_FILE_ENC_FP8_ROW = 7,
    DSQ_FILE_ENC_MXFP4 = 8,
    DSQ_FILE_ENC_NVFP4 = 9,
    DSQ_FILE_ENC_INT8_ROW = 10,
    DSQ_FILE_ENC_INT8_G = 11,
    DSQ_FILE_ENC_INT4_G = 12,
    DSQ_FILE_ENC_INT4_G_ASYM = 13,
    DSQ_FILE_ENC_I64 = 14,
    DSQ_FILE_ENC_I32 = 15,
    DSQ_FILE_ENC_INT2_G_ASYM = 16,
    DSQ_FILE_ENC_FP8_R128_F32 = 17,
    DSQ_FILE_ENC_FP8_ROW_E8M0 = 18,
    DSQ_FILE_ENC_Q2_K = 19, /* GGML k-quant super-blocks of 256 values (spec §5.3) */
    DSQ_FILE_ENC_Q3_K = 20,
    DSQ_FILE_ENC_Q4_K = 21,
    DSQ_FILE_ENC_Q5_K = 22,
    DSQ_FILE_ENC_Q6_K = 23,
    DSQ_FILE_ENC_IQ4_XS = 24,
    DSQ_FILE_ENC_MAX = 24,
};

/* Bytes of one 256-value super-block of a k-quant encoding (ggml block_qN_K), 0 for the others. */
enum { DSQ_FILE_KQUANT_BLOCK = 256 };
static inline uint64_t dsq_file_kquant_block_bytes(uint32_t encoding) {
    switch (encoding) {
    case DSQ_FILE_ENC_Q2_K: return 84;
    case DSQ_FILE_ENC_Q3_K: return 110;
    case DSQ_FILE_ENC_Q4_K: return 144;
    case DSQ_FILE_ENC_Q5_K: return 176;
    case DSQ_FILE_ENC_Q6_K: return 210;
    case DSQ_FILE_ENC_IQ4_XS: return 136;
    default: return 0;
    }
}

/* Tensor record fixed part: byte offsets (spec §5.1). */
enum dsq_file_record_offset {
    DSQ_FILE_REC_RECORD_BYTES = 0,
    DSQ_FILE_REC_NAME_BYTES = 4,
    DSQ_FILE_REC_ENCODING = 6,
    DSQ_FILE_REC_RANK = 8,
    DSQ_FILE_REC_PART_COUNT = 9,
    DSQ_FILE_REC_FLAGS = 10,
    DSQ_FILE_REC_SOURCE_COUNT = 12,
    DSQ_FILE_REC_BLOCK_ROWS = 16,
    DSQ_FILE_REC_BLOCK_COLS = 20,
    DSQ_FILE_REC_RESERVED = 24,
    DSQ_FILE_REC_SHAPE = 32,
};

/* Source record fixed part: byte offsets (spec §5.4). */
enum dsq_file_source_offset {
    DSQ_FILE_SRC_START = 0,
    DSQ_FILE_SRC_COUNT = 8,
    DSQ_FILE_SRC_SQUEEZE = 16,
    DSQ_FILE_SRC_DTYPE = 17,
    DSQ_FILE_SRC_SCALE_DTYPE = 18,
    DSQ_FILE_SRC_NAME_BYTES = 20,
    DSQ_FILE_SRC_SCALE_NAME_BYTES = 22,
    DSQ_FILE_SRC_SHARD = 24,
    DSQ_FILE_SRC_XXH3 = 32,
    DSQ_FILE_SRC_SCALE_XXH3 = 40,
    DSQ_FILE_SRC_NAMES = 48,
};
#define DSQ_FILE_SHARD_UNKNOWN 0xffffffffu

/* ---- little-endian decoding ---- */
static inline uint16_t dsq_file_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t dsq_file_le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t dsq_file_le64(const uint8_t *p) {
    return (uint64_t)dsq_file_le32(p) | ((uint64_t)dsq_file_le32(p + 4) << 32);
}

/* Decode the 128 fixed header bytes.  Returns 0, or -1 when the magic is wrong.  Checks nothing else:
 * a reader must still verify version_major, header_xxh3 (XXH3-64 of p[0..120)) and the rules of §2. */
static inline int dsq_file_header_decode(const uint8_t p[DSQ_FILE_HEADER_BYTES], dsq_file_header *h) {
    if (memcmp(p, DSQ_FILE_MAGIC, DSQ_FILE_MAGIC_BYTES) != 0) return -1;
    h->version_major = dsq_file_le16(p + DSQ_FILE_HDR_VERSION_MAJOR);
    h->version_minor = dsq_file_le16(p + DSQ_FILE_HDR_VERSION_MINOR);
    h->header_bytes = dsq_file_le32(p + DSQ_FILE_HDR_HEADER_BYTES);
    h->required_flags = dsq_file_le64(p + DSQ_FILE_HDR_REQUIRED_FLAGS);
    h->file_bytes = dsq_file_le64(p + DSQ_FILE_HDR_FILE_BYTES);
    h->data_offset = dsq_file_le64(p + DSQ_FILE_HDR_DATA_OFFSET);
    h->data_bytes = dsq_file_le64(p + DSQ_FILE_HDR_DATA_BYTES);
    h->directory_offset = dsq_file_le64(p + DSQ_FILE_HDR_DIRECTORY_OFFSET);
    h->section_count = dsq_file_le32(p + DSQ_FILE_HDR_SECTION_COUNT);
    h->section_entry_bytes = dsq_file_le32(p + DSQ_FILE_HDR_SECTION_ENTRY_BYTES);
    h->directory_xxh3 = dsq_file_le64(p + DSQ_FILE_HDR_DIRECTORY_XXH3);
    h->align_small = dsq_file_le32(p + DSQ_FILE_HDR_ALIGN_SMALL);
    h->align_large = dsq_file_le32(p + DSQ_FILE_HDR_ALIGN_LARGE);
    h->large_threshold = dsq_file_le64(p + DSQ_FILE_HDR_LARGE_THRESHOLD);
    h->header_xxh3 = dsq_file_le64(p + DSQ_FILE_HDR_HEADER_XXH3);
    return 0;
}

/* Decode one section directory entry (at least DSQ_FILE_SECTION_ENTRY_BYTES bytes). */
static inline void dsq_file_section_decode(const uint8_t *p, dsq_file_section *s) {
    s->kind = dsq_file_le32(p);
    s->flags = dsq_file_le32(p + 4);
    s->offset = dsq_file_le64(p + 8);
    s->stored_bytes = dsq_file_le64(p + 16);
    s->raw_bytes = dsq_file_le64(p + 24);
    s->xxh3 = dsq_file_le64(p + 32);
}

/* ---- part layout of an encoding (spec §5.3) ---- */
typedef struct dsq_file_part_layout {
    uint8_t kind;   /* enum dsq_file_part_kind */
    uint8_t dtype;  /* enum dsq_file_dtype */
    uint64_t bytes; /* exact size of the part */
} dsq_file_part_layout;

/* Overflow-checked helpers (return 0 on overflow). */
static inline int dsq_file_mul(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}
static inline uint64_t dsq_file_cdiv(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

/* Parts of a tensor stored with `encoding`, logical shape[rank], block block_rows × block_cols.
 * Fills parts[0..n) in the order of spec §5.3 and returns n (1..4), or
 *   -1 unknown encoding, -2 rank not allowed, -3 block parameters not allowed for the encoding,
 *   -4 a dim is 0, -5 a size overflows 64 bits. */
static inline int dsq_file_encoding_layout(uint32_t encoding, int rank, const uint64_t *shape, uint32_t block_rows,
                                           uint32_t block_cols, dsq_file_part_layout parts[DSQ_FILE_MAX_PARTS]) {
    uint64_t n = 1, batch = 1, rows = 1, cols = 1, t;
    int i;
    if (rank < 0 || rank > DSQ_FILE_MAX_RANK) return -2;
    for (i = 0; i < rank; i++) {
        if (shape[i] == 0) return -4;
        if (!dsq_file_mul(n, shape[i], &n)) return -5;
    }
    if (rank >= 2) {
        rows = shape[rank - 2];
        cols = shape[rank - 1];
        batch = n / (rows * cols);
    }
    memset(parts, 0, sizeof(dsq_file_part_layout) * DSQ_FILE_MAX_PARTS);
    parts[0].kind = DSQ_FILE_PART_DATA;
    switch (encoding) {
    case DSQ_FILE_ENC_F32:
    case DSQ_FILE_ENC_F16:
    case DSQ_FILE_ENC_BF16:
    case DSQ_FILE_ENC_I64:
    case DSQ_FILE_ENC_I32: {
        uint64_t es = encoding == DSQ_FILE_ENC_I64 ? 8 : (encoding == DSQ_FILE_ENC_F32 || encoding == DSQ_FILE_ENC_I32) ? 4 : 2;
        if (block_rows != 0 || block_cols != 0) return -3;
        parts[0].dtype = encoding == DSQ_FILE_ENC_F32    ? DSQ_FILE_DTYPE_F32
                         : encoding == DSQ_FILE_ENC_F16  ? DSQ_FILE_DTYPE_F16
                         : encoding == DSQ_FILE_ENC_BF16 ? DSQ_FILE_DTYPE_BF16
                         : encoding == DSQ_FILE_ENC_I64  ? DSQ_FILE_DTYPE_I64
                                                         : DSQ_FILE_DTYPE_I32;
        if (!dsq_file_mul(n, es, &parts[0].bytes)) return -5;
        return 1;
    }
    default: break;
    }
    if (encoding < 1 || encoding > DSQ_FILE_ENC_MAX) return -1;
    if (rank < 2) return -2;
    if (dsq_file_kquant_block_bytes(encoding)) { /* one DATA part of whole super-blocks per row */
        if (block_rows != 1 || block_cols != DSQ_FILE_KQUANT_BLOCK || cols % DSQ_FILE_KQUANT_BLOCK != 0) return -3;
        parts[0].dtype = DSQ_FILE_DTYPE_U8;
        if (!dsq_file_mul(batch, rows, &t) ||
            !dsq_file_mul(t, cols / DSQ_FILE_KQUANT_BLOCK * dsq_file_kquant_block_bytes(encoding), &parts[0].bytes))
            return -5;
        return 1;
    }
    {
        /* Blocked encodings: validate the block, then rows of scale groups. */
        uint64_t br = block_rows, bc = block_cols, groups, packed, rb;
        int np = 2;
        switch (encoding) {
        case DSQ_FILE_ENC_FP8_B128:
        case DSQ_FILE_ENC_FP8_B128_F32:
            if (br < 1 || bc < 1) return -3;
            break;
        case DSQ_FILE_ENC_FP8_ROW:
        case DSQ_FILE_ENC_FP8_ROW_E8M0:
        case DSQ_FILE_ENC_INT8_ROW:
            if (br != 1 || bc != 0) return -3;
            break;
        case DSQ_FILE_ENC_MXFP4:
            if (br != 1 || bc != 32) return -3;
            break;
        case DSQ_FILE_ENC_NVFP4:
            if (br != 1 || bc != 16) return -3;
            break;
        default: /* FP8_R128, FP8_R128_F32, INT8_G, INT4_G, INT4_G_ASYM, INT2_G_ASYM */
            if (br != 1 || bc < 1) return -3;
            break;
        }
        rb = dsq_file_cdiv(rows, br);
        if (!dsq_file_mul(batch, rb, &groups)) return -5;
        if (bc != 0 && !dsq_file_mul(groups, dsq_file_cdiv(cols, bc), &groups)) return -5;
        switch (encoding) {
        case DSQ_FILE_ENC_MXFP4:
        case DSQ_FILE_ENC_NVFP4:
        case DSQ_FILE_ENC_INT4_G:
        case DSQ_FILE_ENC_INT4_G_ASYM: packed = dsq_file_cdiv(cols, 2); break;
        case DSQ_FILE_ENC_INT2_G_ASYM: packed = dsq_file_cdiv(cols, 4); break;
        default: packed = cols; break;
        }
        if (!dsq_file_mul(batch, rows, &t) || !dsq_file_mul(t, packed, &parts[0].bytes)) return -5;
        parts[1].kind = DSQ_FILE_PART_SCALES;
        switch (encoding) {
        case DSQ_FILE_ENC_FP8_B128:
        case DSQ_FILE_ENC_FP8_R128:
        case DSQ_FILE_ENC_FP8_ROW_E8M0:
            parts[0].dtype = DSQ_FILE_DTYPE_F8_E4M3;
            parts[1].dtype = DSQ_FILE_DTYPE_F8_E8M0;
            parts[1].bytes = groups;
            break;
        case DSQ_FILE_ENC_FP8_B128_F32:
        case DSQ_FILE_ENC_FP8_R128_F32:
        case DSQ_FILE_ENC_FP8_ROW:
            parts[0].dtype = DSQ_FILE_DTYPE_F8_E4M3;
            parts[1].dtype = DSQ_FILE_DTYPE_F32;
            if (!dsq_file_mul(groups, 4, &parts[1].bytes)) return -5;
            break;
        case DSQ_FILE_ENC_MXFP4:
            parts[0].dtype = DSQ_FILE_DTYPE_U8;
            parts[1].dtype = DSQ_FILE_DTYPE_F8_E8M0;
            parts[1].bytes = groups;
            break;
        case DSQ_FILE_ENC_NVFP4:
            parts[0].dtype = DSQ_FILE_DTYPE_U8;
            parts[1].dtype = DSQ_FILE_DTYPE_F8_E4M3;
            parts[1].bytes = groups;
            parts[2].kind = DSQ_FILE_PART_TENSOR_SCALE;
            parts[2].dtype = DSQ_FILE_DTYPE_F32;
            if (!dsq_file_mul(batch, 4, &parts[2].bytes)) return -5;
            np = 3;
            break;
        case DSQ_FILE_ENC_INT8_ROW:
        case DSQ_FILE_ENC_INT8_G:
        case DSQ_FILE_ENC_INT4_G:
        case DSQ_FILE_ENC_INT4_G_ASYM:
        case DSQ_FILE_ENC_INT2_G_ASYM:
            parts[0].dtype = (encoding == DSQ_FILE_ENC_INT8_ROW || encoding == DSQ_FILE_ENC_INT8_G) ? DSQ_FILE_DTYPE_I8
                                                                                                     : DSQ_FILE_DTYPE_U8;
            parts[1].dtype = DSQ_FILE_DTYPE_F16;
            if (!dsq_file_mul(groups, 2, &parts[1].bytes)) return -5;
            if (encoding == DSQ_FILE_ENC_INT4_G_ASYM || encoding == DSQ_FILE_ENC_INT2_G_ASYM) {
                parts[2].kind = DSQ_FILE_PART_MINS;
                parts[2].dtype = DSQ_FILE_DTYPE_F16;
                parts[2].bytes = parts[1].bytes;
                np = 3;
            }
            break;
        default: return -1;
        }
        return np;
    }
}

#endif
