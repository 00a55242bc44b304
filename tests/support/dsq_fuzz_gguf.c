/* Fuzz target for the GGUF reader (lib/format/gguf.c) and what reads through it: typed kv access,
 * string arrays, tensor views, the deepseek4 config builder and the GGML block unpackers.  Aborts on
 * any inconsistency (a view outside the input, a count that disagrees); the sanitizers catch the rest.
 * Seeds: tests/fuzz/corpus/gguf/ (small GGUFs written by dsq's writer), replayed by tests/test_gguf.c. */
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_fuzz.h"
#include "dsq_ggml.h"
#include "dsq_gguf.h"
#include "dsq_imatrix.h"
#include "dsq_imatrix_gguf.h"
#include "dsq_wsrc.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) abort();                                                                         \
    } while (0)

int dsq_fuzz_gguf(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    dsq_gguf *g = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_gguf_parse(copy, size, "fuzz", &g, &err) != DSQ_OK) {
        CHECK(g == NULL && err.status != DSQ_OK && err.msg[0]);
        dsq_err_clear(&err);
        free(copy);
        return 0;
    }
    const uint8_t *end = copy + size;
    uint64_t acc = 0;
    for (size_t i = 0; i < dsq_gguf_n_kv(g); i++) {
        const dsq_gguf_kv *kv = dsq_gguf_kv_at(g, i);
        CHECK(kv && kv->key[0] && dsq_gguf_find_kv(g, kv->key) == kv);
        uint64_t u;
        double f;
        acc += dsq_gguf_kv_u64(kv, &u) ? u : 0;
        acc += dsq_gguf_kv_f64(kv, &f) && f == f ? 1 : 0;
        for (uint64_t k = 0; kv->type == DSQ_GGUF_V_ARRAY && k < kv->n && k < 4096; k++) {
            const char *s;
            uint64_t len;
            if (dsq_gguf_kv_arr_str(g, kv, k, &s, &len)) {
                CHECK((const uint8_t *)s >= copy && len <= (uint64_t)(end - (const uint8_t *)s));
                acc += len ? (uint8_t)s[len - 1] : 0;
            } else if (dsq_gguf_kv_arr_u64(kv, k, &u))
                acc += u;
        }
        char *str = dsq_gguf_get_str(g, kv->key);
        dsq_free(str);
    }
    for (size_t i = 0; i < dsq_gguf_n_tensors(g); i++) {
        const dsq_gguf_tensor *t = dsq_gguf_tensor_at(g, i);
        CHECK(dsq_gguf_find_tensor(g, t->name) == t);
        CHECK(t->data >= copy && t->n_bytes <= (uint64_t)(end - t->data));
        CHECK(t->offset % dsq_gguf_alignment(g) == 0);
        if (t->n_bytes) acc += t->data[0] + t->data[t->n_bytes - 1];
        /* small tensors of a type dsq decodes: unpack and decode (non-finite values are an error, not a crash) */
        dsq_encoding enc;
        int group;
        /* checked: a zero dimension makes the byte count 0 whatever the others hold, so their raw product
         * can wrap (a fuzz find: ne = {0, 2^40, ...} decoded 2^40 empty rows) */
        uint64_t rows = 0, cols = t->ne[0], n = 0;
        bool small = cols > 0 && dsq_mul_u64(t->ne[1], t->ne[2], &rows) && dsq_mul_u64(rows, t->ne[3], &rows) &&
                     rows > 0 && dsq_mul_u64(rows, cols, &n) && n <= 4096;
        if (t->n_bytes <= 4096 && small && dsq_ggml_encoding_of(t->type, &enc, &group) && enc != DSQ_ENC_I32) {
            dsq_codec_layout L;
            if (dsq_codec_layout_of(enc, rows, cols, group, &L, NULL) == DSQ_OK) {
                uint8_t *c = malloc(L.data_bytes + 1), *s = malloc(L.scale_bytes + 1);
                float *x = malloc(rows * cols * sizeof *x + 1);
                dsq_qtensor_buf b = {enc, rows, cols, group, c, s, NULL, 0};
                if (c && s && x && dsq_ggml_unpack(t->type, t->data, rows, cols, &b, NULL) == DSQ_OK) {
                    dsq_qtensor q = dsq_qtensor_view(&b);
                    dsq_codec_decode(&q, 0, rows, x, NULL, NULL);
                }
                free(c), free(s), free(x);
            }
        }
    }
    dsq_v4_config cfg;
    dsq_gguf_v4_config(g, &cfg, &err);
    dsq_err_clear(&err);
    dsq_gguf_close(g);
    free(copy);
    return acc == 0x5eed ? 0 : 0;
}

/* llama.cpp's imatrix GGUF reader (lib/eval/imatrix_gguf.c): a rejected file leaves nothing behind
 * and says why; an accepted one gives entries whose importance can be built.
 * Seeds: tests/fuzz/corpus/imatrix_gguf/, replayed by tests/test_imatrix_gguf.c. */
int dsq_fuzz_imatrix_gguf(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    dsq_imatrix *m = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_imatrix_parse_gguf(copy, size, "fuzz", &m, &err) != DSQ_OK) {
        CHECK(m == NULL && err.status != DSQ_OK && err.msg[0]);
        dsq_err_clear(&err);
        free(copy);
        return 0;
    }
    for (size_t i = 0; i < dsq_imatrix_count(m); i++) {
        CHECK(dsq_imatrix_rows(m, i) >= 1 && dsq_imatrix_cols(m, i) >= 1);
        (void)dsq_imatrix_importance(m, dsq_imatrix_name(m, i), dsq_imatrix_cols(m, i));
    }
    dsq_imatrix_free(m);
    free(copy);
    return 0;
}
