#include "dsq_fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_safetensors.h"
#include "dsq_tokenizer.h"

/* The file-based readers take a path: hand them an anonymous memory file. */
static int memfile(const uint8_t *data, size_t size, char *path, size_t path_len) {
    int fd = memfd_create("dsq-fuzz", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, path_len, "/proc/self/fd/%d", fd);
    return fd;
}

int dsq_fuzz_safetensors(const uint8_t *data, size_t size) {
    char path[64];
    int fd = memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    for (int mode = 0; mode < 2; mode++) {
        dsq_st_options o = {.no_mmap = mode == 1};
        dsq_st *st = NULL;
        dsq_err err = DSQ_ERR_INIT;
        if (dsq_st_open(path, &o, &st, &err) == DSQ_OK) {
            for (size_t i = 0; i < dsq_st_count(st); i++) {
                const dsq_st_tensor *t = dsq_st_at(st, i);
                uint8_t b[16];
                size_t n = t->n_bytes < sizeof b ? (size_t)t->n_bytes : sizeof b;
                if (n && dsq_st_read(st, t, t->n_bytes - n, b, n, &err) != DSQ_OK) abort();
                if (dsq_st_find(st, t->name) != t) abort();
            }
            dsq_st_close(st);
        } else if (err.n == 0) {
            abort(); /* a failure always says why */
        }
        dsq_err_clear(&err);
    }
    close(fd);
    return 0;
}

int dsq_fuzz_config(const uint8_t *data, size_t size) {
    dsq_v4_config c;
    char *warnings = NULL;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_config_parse((const char *)data, size, "fuzz.json", &c, &warnings, &err);
    if (s == DSQ_OK) {
        int blocks = c.n_layers + c.n_mtp_layers;
        for (int b = 0; b < blocks; b++) (void)dsq_config_attn_kind(&c, b);
        dsq_param_counts pc;
        dsq_config_params(&c, &pc);
        dsq_kv_bytes kv;
        dsq_config_kv_bytes(&c, &kv);
    } else if (err.n == 0) {
        abort();
    }
    free(warnings);
    dsq_err_clear(&err);
    return 0;
}

int dsq_fuzz_container(const uint8_t *data, size_t size) {
    char path[64];
    int fd = memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    dsq_ctr_reader_options o = {.verify = true};
    dsq_ctr_reader *r = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_ctr_reader_open(path, &o, &r, &err) == DSQ_OK) {
        for (size_t i = 0; i < dsq_ctr_count(r); i++) {
            const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
            if (dsq_ctr_find(r, t->name) == NULL) abort();
        }
        size_t ml;
        (void)dsq_ctr_metadata(r, &ml);
        dsq_ctr_reader_close(r);
    } else if (err.n == 0) {
        abort();
    }
    dsq_err_clear(&err);
    close(fd);
    return 0;
}

int dsq_fuzz_tokenizer(const uint8_t *data, size_t size) {
    /* A tokenizer.json, a NUL byte, then text to encode with it. */
    const uint8_t *nul = memchr(data, 0, size);
    size_t split = nul ? (size_t)(nul - data) + 1 : size;
    dsq_tok *t = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_tok_load_json((const char *)data, nul ? split - 1 : size, "fuzz-tokenizer.json", NULL, &t, &err) == DSQ_OK) {
        dsq_tok_ids ids = {0};
        if (dsq_tok_encode(t, data + split, size - split, &ids, &err) == DSQ_OK) {
            dsq_tok_text txt = {0};
            if (dsq_tok_decode(t, ids.ids, ids.n, NULL, &txt, &err) != DSQ_OK && err.n == 0) abort();
            dsq_tok_text_free(&txt);
        }
        dsq_tok_ids_free(&ids);
        dsq_tok_free(t);
    } else if (err.n == 0) {
        abort();
    }
    dsq_err_clear(&err);
    return 0;
}

int dsq_fuzz_token_ids(const uint8_t *data, size_t size) {
    dsq_tok_ids ids = {0};
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_tok_parse_ids((const char *)data, size, "fuzz-ids.json", &ids, &err) != DSQ_OK && err.n == 0) abort();
    dsq_tok_ids_free(&ids);
    dsq_err_clear(&err);
    return 0;
}

const dsq_fuzz_target dsq_fuzz_targets[] = {
    {"safetensors", dsq_fuzz_safetensors}, {"config", dsq_fuzz_config},       {"container", dsq_fuzz_container},
    {"tokenizer", dsq_fuzz_tokenizer},     {"token_ids", dsq_fuzz_token_ids},
};
const size_t dsq_fuzz_n_targets = sizeof dsq_fuzz_targets / sizeof dsq_fuzz_targets[0];
