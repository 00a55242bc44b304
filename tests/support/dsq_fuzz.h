/* Fuzz targets for every parser.  Each takes arbitrary bytes and must return without crashing,
 * leaking or tripping a sanitizer.  They are linked into libFuzzer binaries by `make fuzz`
 * (tests/fuzz/libfuzzer_main.c) and replayed over the committed corpora plus deterministic
 * mutations by tests/test_fuzz_replay.c in `make test`. */
#ifndef DSQ_FUZZ_H
#define DSQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int dsq_fuzz_safetensors(const uint8_t *data, size_t size);
int dsq_fuzz_config(const uint8_t *data, size_t size);
int dsq_fuzz_container(const uint8_t *data, size_t size);
int dsq_fuzz_tokenizer(const uint8_t *data, size_t size);
int dsq_fuzz_token_ids(const uint8_t *data, size_t size);
int dsq_fuzz_gguf(const uint8_t *data, size_t size); /* tests/support/dsq_fuzz_gguf.c */
int dsq_fuzz_imatrix_gguf(const uint8_t *data, size_t size); /* llama.cpp imatrix GGUF, same file */

typedef struct dsq_fuzz_target {
    const char *name;
    int (*fn)(const uint8_t *, size_t);
} dsq_fuzz_target;
extern const dsq_fuzz_target dsq_fuzz_targets[];
extern const size_t dsq_fuzz_n_targets;

#endif
