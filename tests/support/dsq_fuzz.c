#include "dsq_fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsq_config.h"
#include "dsq_modelopt.h"
#include "dsq_container.h"
#include "dsq_ctr_meta.h"
#include "dsq_eval.h"
#include "dsq_metrics.h"
#include "dsq_recipe.h"
#include "dsq_safetensors.h"
#include "dsq_tokenizer.h"
#include "dsq_tmp.h"

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
        /* the typed metadata reader, and what verify, inspect and eval then do with it */
        dsq_ctr_meta *m = NULL;
        if (dsq_ctr_meta_read(r, &m, &err) == DSQ_OK) {
            dsq_v4_config cfg;
            bool have = false;
            (void)dsq_ctr_meta_check(m, path, &cfg, &have, &err);
            if (have) {
                dsq_ctr_summary sm; /* (not the inventory: a fuzzed config may ask for millions of names) */
                dsq_ctr_summarize(r, m, &cfg, &sm);
                (void)dsq_ctr_summary_kv_consistent(&sm, NULL);
            }
        } else if (err.n == 0) {
            abort();
        }
        dsq_ctr_meta_free(m);
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

/* ---- targets that need files beside the input: one scratch directory per process ---------- */
static char scratch[64];

static void scratch_remove(void) {
    if (scratch[0]) dsq_tmp_remove(scratch);
}

/* DIR/sub, created on first use (the scratch directory is removed at exit). */
static const char *scratch_dir(const char *sub, char *buf, size_t n) {
    if (!scratch[0]) {
        /* tmpfs when there is one: the outputs are fsync'd, thousands of times per run */
        const char *t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        char *d = dsq_tmp_create(t && *t && strlen(t) < 40 ? t : "/tmp", "fuzz");
        if (!d || strlen(d) >= sizeof scratch) abort();
        memcpy(scratch, d, strlen(d) + 1);
        free(d);
        atexit(scratch_remove);
    }
    snprintf(buf, n, "%s/%s", scratch, sub);
    mkdir(buf, 0700);
    return buf;
}

static void put_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) abort();
}

/* True when DIR holds no entry but the ones named in keep (NULL-terminated). */
static bool dir_holds_only(const char *dir, const char *const *keep) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool ok = true;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        bool kept = false;
        for (const char *const *k = keep; *k; k++) kept |= !strcmp(*k, e->d_name);
        if (!kept) ok = false;
    }
    closedir(d);
    return ok;
}

/* A one-tensor safetensors shard holding `name` ([2] BF16). */
static void put_shard(const char *path, const char *name) {
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", name);
    uint8_t file[8 + 256 + 4];
    dsq_put_u64le(file, (uint64_t)hl);
    memcpy(file + 8, hdr, (size_t)hl);
    memset(file + 8 + hl, 0x3f, 4);
    put_file(path, file, 8 + (size_t)hl + 4);
}

/* model.safetensors.index.json in a directory with shards a.safetensors (tensor "x") and
 * b.safetensors (tensor "y"): the index must agree with them both ways. */
int dsq_fuzz_st_index(const uint8_t *data, size_t size) {
    char dir[128], p[256];
    scratch_dir("st_index", dir, sizeof dir);
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    if (access(p, F_OK) != 0) {
        put_shard(p, "x");
        snprintf(p, sizeof p, "%s/b.safetensors", dir);
        put_shard(p, "y");
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    put_file(p, data, size);
    dsq_st *st = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_st_open(dir, NULL, &st, &err) == DSQ_OK) {
        /* the index may name one shard or both; whatever it names is exactly what opened */
        size_t n = dsq_st_count(st);
        if (n < 1 || n > 2 || n != dsq_st_shard_count(st)) abort();
        for (size_t i = 0; i < n; i++) {
            const dsq_st_tensor *t = dsq_st_at(st, i);
            if ((strcmp(t->name, "x") && strcmp(t->name, "y")) || dsq_st_find(st, t->name) != t) abort();
        }
        dsq_st_close(st);
    } else if (err.n == 0) {
        abort();
    }
    dsq_err_clear(&err);
    return 0;
}

/* A .dsqz: unpacked whole, then only its first tensor; a success must give a container that opens
 * and verifies, a failure must leave no file behind (no output, no .partial). */
int dsq_fuzz_dsqz(const uint8_t *data, size_t size) {
    char in[64], dir[128], out[256], part[256];
    int fd = memfile(data, size, in, sizeof in);
    if (fd < 0) return 0;
    scratch_dir("dsqz", dir, sizeof dir);
    snprintf(out, sizeof out, "%s/full.dsq", dir);
    snprintf(part, sizeof part, "%s/part.dsq", dir);
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_pack_stats stats;
    static const char *const none[] = {NULL};
    if (dsq_ctr_unpack(in, out, NULL, 0, true, &stats, &err) == DSQ_OK) {
        dsq_ctr_reader_options o = {.verify = true};
        dsq_ctr_reader *r = NULL;
        dsq_err e2 = DSQ_ERR_INIT;
        if (dsq_ctr_reader_open(out, &o, &r, &e2) != DSQ_OK) abort(); /* unpack verified it */
        if (dsq_ctr_count(r) > 0) {
            const char *name = dsq_ctr_at(r, 0)->name;
            if (dsq_ctr_unpack(in, part, &name, 1, true, &stats, &e2) != DSQ_OK) abort(); /* same frames */
            dsq_ctr_reader *rp = NULL;
            if (dsq_ctr_reader_open(part, &o, &rp, &e2) != DSQ_OK || dsq_ctr_count(rp) != 1) abort();
            dsq_ctr_reader_close(rp);
            unlink(part);
        }
        dsq_ctr_reader_close(r);
        dsq_err_clear(&e2);
        unlink(out);
    } else if (err.n == 0) {
        abort();
    }
    if (!dir_holds_only(dir, none)) abort(); /* never a half-written output */
    dsq_err_clear(&err);
    close(fd);
    return 0;
}

/* A recipe JSON file: a recipe that parses prints canonical JSON that parses to the same rules. */
/* hf_quant_config.json: a success describes NVFP4 / 16 and parses again from dsq's own text. */
int dsq_fuzz_modelopt_qcfg(const uint8_t *data, size_t size) {
    dsq_modelopt_qcfg q;
    dsq_err err = DSQ_ERR_INIT;
    dsq_status s = dsq_modelopt_qcfg_parse((const char *)data, size, "hf_quant_config.json", &q, &err);
    if (s != DSQ_OK && (err.msg[0] == 0 || strchr(err.msg, '\n'))) abort(); /* a failure names its one-line reason */
    if (s == DSQ_OK) {
        if (q.producer[sizeof q.producer - 1] != 0) abort();
        const char *ex[] = {"embed", "head"};
        char *text = dsq_modelopt_qcfg_text("fuzz", ex, 2);
        dsq_modelopt_qcfg back;
        if (!text || dsq_modelopt_qcfg_parse(text, strlen(text), "canonical", &back, NULL) != DSQ_OK ||
            back.n_exclude != 2 || strcmp(back.producer, "dsq") != 0)
            abort();
        dsq_free(text);
    }
    dsq_err_clear(&err);
    return 0;
}

int dsq_fuzz_recipe(const uint8_t *data, size_t size) {
    static const char *const names[] = {"layers.0.ffn.experts.3.w1.weight", "layers.1.attn.wq_b.weight",
                                        "embed.weight", "head.weight", "layers.2.attn_norm.weight",
                                        "layers.0.attn.compressor.wkv.weight"};
    dsq_recipe *r = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_recipe_parse((const char *)data, size, "fuzz-recipe.json", &r, &err) == DSQ_OK) {
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) (void)dsq_recipe_match(r, names[i]);
        char *json = dsq_recipe_to_json(r);
        dsq_recipe *back = NULL;
        if (json) {
            if (dsq_recipe_parse(json, strlen(json), "canonical", &back, &err) != DSQ_OK) abort();
            if (back->n_rules != r->n_rules) abort();
            for (size_t i = 0; i < r->n_rules; i++)
                if (strcmp(back->rules[i].match, r->rules[i].match)) abort();
        }
        dsq_recipe_free(back);
        dsq_free(json);
        if (dsq_recipe_override(r, "layers.*=int4-g32", &err) != DSQ_OK) abort();
        dsq_recipe_free(r);
    } else if (err.n == 0) {
        abort();
    }
    dsq_err_clear(&err);
    return 0;
}

/* An id file for `--tokens`: whitespace-separated ids, or a safetensors file with `tokens`. */
int dsq_fuzz_token_file(const uint8_t *data, size_t size) {
    char path[64];
    int fd = memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    int32_t *ids = NULL;
    int64_t n = 0;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_eval_read_tokens(path, &ids, &n, &err) == DSQ_OK) {
        if (n < 0 || (n > 0 && !ids)) abort();
        volatile int64_t sum = 0;
        for (int64_t i = 0; i < n; i++) sum += ids[i];
    } else if (err.n == 0) {
        abort();
    }
    dsq_free(ids);
    dsq_err_clear(&err);
    close(fd);
    return 0;
}

/* A KL base file: the header, the text tokens, then every record up to the checked end. */
int dsq_fuzz_kbase(const uint8_t *data, size_t size) {
    char path[64];
    int fd = memfile(data, size, path, sizeof path);
    if (fd < 0) return 0;
    dsq_kbase_reader *r = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_kbase_reader_open(path, &r, &err) == DSQ_OK) {
        const dsq_kbase_info *info = dsq_kbase_reader_info(r);
        const int32_t *text = dsq_kbase_reader_text(r);
        if (info->n_text && (!text || dsq_kbase_tokens_hash(text, info->n_text) != info->tokens_hash)) abort();
        bool done = false;
        uint64_t seen = 0;
        dsq_kbase_record rec;
        while (!done && dsq_kbase_reader_next(r, &rec, &done, &err) == DSQ_OK) {
            if (!done && (rec.k != info->k || ++seen > info->n_positions)) abort();
        }
        if (done && seen != info->n_positions) abort();
        if (!done && err.n == 0) abort();
        dsq_kbase_reader_close(r);
    } else if (err.n == 0) {
        abort();
    }
    dsq_err_clear(&err);
    close(fd);
    return 0;
}

/* A multiple-choice task (JSONL): every item has a label below its ending count. */
int dsq_fuzz_mc_task(const uint8_t *data, size_t size) {
    dsq_mc_task *t = NULL;
    dsq_err err = DSQ_ERR_INIT;
    if (dsq_mc_task_parse((const char *)data, size, "fuzz-task.jsonl", &t, &err) == DSQ_OK) {
        for (size_t i = 0; i < dsq_mc_task_count(t); i++) {
            const dsq_mc_item *it = dsq_mc_task_item(t, i);
            if (!it->ctx || it->n_endings < 1 || it->label >= it->n_endings) abort();
            for (uint32_t e = 0; e < it->n_endings; e++)
                if (!it->endings[e]) abort();
        }
        (void)dsq_mc_task_hash(t);
        dsq_mc_task_free(t);
    } else if (err.n == 0) {
        abort();
    }
    dsq_err_clear(&err);
    return 0;
}

#define DSQ_FUZZ_ENTRY(name) {#name, dsq_fuzz_##name},
const dsq_fuzz_target dsq_fuzz_targets[] = {DSQ_FUZZ_LIST(DSQ_FUZZ_ENTRY)};
#undef DSQ_FUZZ_ENTRY
const size_t dsq_fuzz_n_targets = sizeof dsq_fuzz_targets / sizeof dsq_fuzz_targets[0];
