/* Fuzz targets for every parser.  Each takes arbitrary bytes and must return without crashing,
 * leaking or tripping a sanitizer.  They are linked into libFuzzer binaries by `make fuzz`
 * (tests/fuzz/libfuzzer_main.c) and replayed over the committed corpora plus deterministic
 * mutations by tests/test_fuzz_replay.c in `make test`. */
#ifndef DSQ_FUZZ_H
#define DSQ_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Every target, one line each: X(name) declares int dsq_fuzz_<name>(const uint8_t *, size_t),
 * which tests/support/dsq_fuzz.c defines.  The Makefile reads the names from this list (`make fuzz`
 * builds build-fuzz/fuzz_<name>), tests/test_fuzz_replay.c replays tests/fuzz/corpus/<name>/ for
 * each one and fails when that folder is missing or empty.  A new parser's target is: its function
 * in dsq_fuzz.c, one line here, and seed files in tests/fuzz/corpus/<name>/ (docs/fuzzing.md). */
#define DSQ_FUZZ_LIST(X)                                                                                              \
    X(safetensors) /* one .safetensors shard, mmap and pread */                                                       \
    X(st_index)    /* model.safetensors.index.json beside two fixed shards */                                         \
    X(config)      /* config.json */                                                                                  \
    X(container)   /* a .dsq container, verified */                                                                   \
    X(dsqz)        /* a .dsqz stream, unpacked whole and in part */                                                   \
    X(recipe)      /* a recipe JSON file */                                                                           \
    X(tokenizer)   /* tokenizer.json, NUL, text to encode */                                                          \
    X(token_ids)   /* a JSON id list (dsq tokenize --decode) */                                                       \
    X(token_file)  /* an id file for --tokens: text of ids or safetensors `tokens` */                                 \
    X(kbase)       /* a KL base file (dsq eval kld --save-base) */                                                    \
    X(mc_task)     /* a multiple-choice JSONL task file */                                                          \
    X(gguf)        /* a GGUF file (tests/support/dsq_fuzz_gguf.c) */                                                \
    X(imatrix_gguf) /* a llama.cpp imatrix GGUF (tests/support/dsq_fuzz_gguf.c) */                               \
    X(modelopt_qcfg) /* a ModelOpt hf_quant_config.json */

#define DSQ_FUZZ_DECLARE(name) int dsq_fuzz_##name(const uint8_t *data, size_t size);
DSQ_FUZZ_LIST(DSQ_FUZZ_DECLARE)
#undef DSQ_FUZZ_DECLARE

typedef struct dsq_fuzz_target {
    const char *name;
    int (*fn)(const uint8_t *, size_t);
} dsq_fuzz_target;
extern const dsq_fuzz_target dsq_fuzz_targets[];
extern const size_t dsq_fuzz_n_targets;

#endif
