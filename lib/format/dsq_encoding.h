/* Tensor encodings: how a logical [rows, cols] (or any-rank) tensor's values are stored.
 * The numeric values are stored on disk by the .dsq container: never renumber, only append.
 * An on-disk fact, so it lives in lib/format (lib/format/container_common.c checks it against
 * dsq.h's DSQ_FILE_ENC_* and names each value: dsq_ctr_encoding_name); the codecs that encode and
 * decode each value are lib/quant's (dsq_codec.h).  Spec: formats/spec/dsq.md (encoding table). */
#ifndef DSQ_ENCODING_H
#define DSQ_ENCODING_H

typedef enum dsq_encoding {
    DSQ_ENC_F32 = 1,
    DSQ_ENC_F16 = 2,
    DSQ_ENC_BF16 = 3,
    DSQ_ENC_FP8_B128 = 4,     /* e4m3 codes [rows, cols] + UE8M0 scales [ceil(rows/128), ceil(cols/128)] */
    DSQ_ENC_FP8_B128_F32 = 5, /* same with F32 scales (Base releases) */
    DSQ_ENC_FP8_R128 = 6,     /* e4m3, 1x128 blocks along cols, UE8M0 scales [rows, ceil(cols/128)] */
    DSQ_ENC_FP8_ROW = 7,      /* e4m3, one F32 scale per row [rows] */
    DSQ_ENC_MXFP4 = 8,        /* e2m1 packed two per byte (low nibble = even col) [rows, cols/2], UE8M0 [rows, cols/32] */
    DSQ_ENC_NVFP4 = 9,        /* e2m1 packed [rows, cols/2], E4M3 scales [rows, cols/16], one F32 tensor scale */
    DSQ_ENC_INT8_ROW = 10,    /* int8 codes [rows, cols], F16 scale per row */
    DSQ_ENC_INT8_G = 11,      /* int8 codes, F16 scale per group of `group` cols */
    DSQ_ENC_INT4_G = 12,      /* int4 symmetric, packed two per byte (low nibble = even col), F16 scale per group */
    DSQ_ENC_INT4_G_ASYM = 13, /* uint4 with F16 scale and F16 minimum per group: x = q·scale + min */
    DSQ_ENC_I64 = 14,         /* raw integers (tid2eid) */
    DSQ_ENC_I32 = 15,
    DSQ_ENC_INT2_G_ASYM = 16, /* uint2 packed four per byte (lowest bits = first col), F16 scale + F16 min per group */
    DSQ_ENC_FP8_R128_F32 = 17, /* e4m3, 1x128 blocks along cols, F32 scales [rows, ceil(cols/128)] */
    DSQ_ENC_FP8_ROW_E8M0 = 18, /* e4m3, one UE8M0 scale per row [rows] */
    /* GGML k-quants: rows of 256-value super-blocks, byte-identical to ggml's block_qN_K
     * (lib/quant/dsq_kquant.h); no separate scale part */
    DSQ_ENC_Q2_K = 19, /* 84 B per 256 values (GGML_TYPE_Q2_K = 10) */
    DSQ_ENC_Q3_K = 20, /* 110 B (GGML_TYPE_Q3_K = 11) */
    DSQ_ENC_Q4_K = 21, /* 144 B (GGML_TYPE_Q4_K = 12) */
    DSQ_ENC_Q5_K = 22, /* 176 B (GGML_TYPE_Q5_K = 13) */
    DSQ_ENC_Q6_K = 23, /* 210 B (GGML_TYPE_Q6_K = 14) */
    DSQ_ENC_IQ4_XS = 24, /* 136 B, non-linear 4-bit codebook (GGML_TYPE_IQ4_XS = 23) */
} dsq_encoding;

#endif
