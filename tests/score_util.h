/* Helpers shared by the score suites (header-only): perturbed copies of the golden model and a small
 * byte-level tokenizer.json whose ids fit the golden vocabulary. */
#ifndef DSQ_SCORE_UTIL_H
#define DSQ_SCORE_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dsq_numeric.h"
#include "dsq_safetensors.h"
#include "dsq_test.h"

static uint64_t su_rng = 99;
static inline double su_nrand(void) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        su_rng ^= su_rng >> 12;
        su_rng ^= su_rng << 25;
        su_rng ^= su_rng >> 27;
        u[i] = ((double)((su_rng * 0x2545F4914F6CDD1Dull) >> 11) + 0.5) * 0x1p-53;
    }
    return sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* A copy of the golden model (at gpath) in TMP/NAME with every BF16 tensor whose name contains `which`
 * multiplied element-wise by (1 + sigma·N(0,1)).  Returns the directory (malloc). */
static inline char *su_perturbed(const char *tmp, const char *gpath, const char *name, const char *which,
                                 double sigma) {
    char *dir = dsq_test_join(tmp, name);
    assert_int_equal(mkdir(dir, 0755), 0);
    char *src_cfg = dsq_test_join(gpath, "config.json"), *dst_cfg = dsq_test_join(dir, "config.json");
    size_t n;
    char *cfg = dsq_test_read(src_cfg, &n);
    dsq_test_write(dst_cfg, cfg, n);
    free(cfg);
    char *src = dsq_test_join(gpath, "model.safetensors"), *dst = dsq_test_join(dir, "model.safetensors");
    dsq_st *st;
    assert_int_equal(dsq_st_open(src, NULL, &st, NULL), DSQ_OK);
    size_t nt = dsq_st_count(st);
    dsq_st_item *items = calloc(nt, sizeof *items);
    void **bufs = calloc(nt, sizeof *bufs);
    for (size_t i = 0; i < nt; i++) {
        const dsq_st_tensor *t = dsq_st_at(st, i);
        items[i].name = t->name;
        items[i].dtype = t->dtype;
        items[i].rank = t->rank;
        memcpy(items[i].shape, t->shape, sizeof t->shape);
        items[i].data = t->data;
        if (t->dtype == DSQ_DTYPE_BF16 && strstr(t->name, which)) {
            uint16_t *v = malloc(t->n_bytes);
            memcpy(v, t->data, t->n_bytes);
            for (uint64_t e = 0; e < t->n_elements; e++)
                v[e] = dsq_bf16_from_f32(dsq_bf16_to_f32(v[e]) * (float)(1 + sigma * su_nrand()));
            items[i].data = bufs[i] = v;
        }
    }
    assert_int_equal(dsq_st_write_file(dst, items, nt, false, NULL), DSQ_OK);
    for (size_t i = 0; i < nt; i++) free(bufs[i]);
    free(bufs);
    free(items);
    dsq_st_close(st);
    free(src);
    free(dst);
    free(src_cfg);
    free(dst_cfg);
    return dir;
}

/* A byte-level BPE tokenizer.json: ids 0/1 = BOS/EOS added tokens, 2 + b = byte b, no merges. */
static inline char *su_byte_tokenizer_json(void) {
    char *j = malloc(1 << 16);
    size_t n =
        (size_t)sprintf(j, "{\"version\":\"1.0\",\"added_tokens\":["
                           "{\"id\":0,\"content\":\"<bos>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                           "\"normalized\":false,\"special\":true},"
                           "{\"id\":1,\"content\":\"<eos>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                           "\"normalized\":false,\"special\":true}],"
                           "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                           "\"trim_offsets\":true,\"use_regex\":false},\"post_processor\":null,"
                           "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,"
                           "\"use_regex\":true},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
                           "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":false,"
                           "\"byte_fallback\":false,\"vocab\":{");
    /* GPT-2 byte → code point map */
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255) ? b : 256 + extra++;
        char u[8];
        if (cp < 0x80) {
            if (cp == '"' || cp == '\\')
                snprintf(u, sizeof u, "\\%c", cp);
            else
                snprintf(u, sizeof u, "%c", cp);
        } else {
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
            u[2] = 0;
        }
        n += (size_t)sprintf(j + n, "%s\"%s\":%d", b ? "," : "", u, 2 + b);
    }
    sprintf(j + n, "},\"merges\":[]}}");
    return j;
}

#endif
