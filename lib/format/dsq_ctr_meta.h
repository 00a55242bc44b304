/* The metadata a .dsq container carries (formats/spec/dsq.md §6, a JSON object): the one typed reader
 * that every consumer uses (eval's weight source and tokenizer, verify, inspect, safetensors and GGUF
 * export), the builder `dsq convert` writes it with, the KV-cache declaration (§6.1) and the summary
 * `dsq inspect` prints.  No cJSON type leaks out: the strings of a dsq_ctr_meta are views into the
 * parsed document, valid until dsq_ctr_meta_free.  A dsq_ctr_meta is read-only after parsing, so it
 * may be shared between threads. */
#ifndef DSQ_CTR_META_H
#define DSQ_CTR_META_H

#include "dsq_config.h"
#include "dsq_container.h"
#include "dsq_core.h"
#include "dsq_encoding.h"
#include "dsq_inventory.h"

/* ---- reading ---------------------------------------------------------------------------------- */
typedef struct dsq_ctr_meta_kv {
    const char *json;       /* the kv_cache object re-printed unformatted; NULL when absent */
    const char *encoding;   /* kv_cache.encoding ("compact"); NULL when absent or not a string */
    double bytes_per_token; /* kv_cache.bytes_per_token; NAN when absent or not a number */
    double fixed_bytes;     /* kv_cache.fixed_bytes; NAN when absent or not a number */
} dsq_ctr_meta_kv;

struct dsq__ctr_meta_doc;
typedef struct dsq_ctr_meta {
    /* Each member is NULL when the key is absent or does not hold the type named. */
    const char *format;                 /* "format" string: "dsq" */
    const char *format_version;         /* "format_version" string: "1.0" */
    const char *architecture;           /* model.architecture string: "deepseek_v4" */
    const char *config;                 /* model.config object, re-printed unformatted (dsq_config_parse's input) */
    const char *recipe;                 /* recipe object, re-printed unformatted */
    const char *recipe_name;            /* recipe.name string */
    const char *recipe_kv_cache;        /* recipe.kv_cache string: the evaluator's default cache encoding */
    bool recipe_kv_cache_not_string;    /* recipe.kv_cache is present but not a string */
    const char *tokenizer_json;         /* tokenizer."tokenizer.json": the source's tokenizer.json text */
    const char *tokenizer_config_json;  /* tokenizer."tokenizer_config.json" */
    const char *chat_template;          /* tokenizer.chat_template: chat_template.jinja */
    const char *config_json;            /* files."config.json": the source's config.json verbatim */
    bool config_json_not_string;        /* files."config.json" is present but not a string */
    const char *generation_config_json; /* files."generation_config.json" */
    dsq_ctr_meta_kv kv_cache;           /* kv_cache (§6.1) */
    struct dsq__ctr_meta_doc *doc;      /* private: the parsed document */
} dsq_ctr_meta;

/* Parse metadata JSON text (len bytes; duplicate keys and non-objects are refused, `what` names it in
 * messages).  *out is freed with dsq_ctr_meta_free. */
dsq_status dsq_ctr_meta_parse(const char *json, size_t len, const char *what, dsq_ctr_meta **out, dsq_err *err);
/* The metadata of an open container (messages name its path). */
dsq_status dsq_ctr_meta_read(const dsq_ctr_reader *r, dsq_ctr_meta **out, dsq_err *err);
void dsq_ctr_meta_free(dsq_ctr_meta *m);

/* model.config parsed as a config.json (dsq_config_parse, messages naming `what`); DSQ_ERR_MISSING
 * "WHAT: metadata has no model.config object" when there is none. */
dsq_status dsq_ctr_meta_config(const dsq_ctr_meta *m, const char *what, dsq_v4_config *cfg, dsq_err *err);

/* Everything the readers need of the metadata (`dsq verify`), each problem recorded in err naming
 * `file`: "format" is "dsq"; model.config is an object that parses as a config (then *cfg is it and
 * *have_cfg true); files."config.json", when present, is a string holding the same JSON as
 * model.config (export writes one, eval reads the other); kv_cache is the declaration the config
 * gives (dsq_ctr_meta_kv_cache_json).  Returns the first problem's status. */
dsq_status dsq_ctr_meta_check(const dsq_ctr_meta *m, const char *file, dsq_v4_config *cfg, bool *have_cfg,
                              dsq_err *err);

/* ---- writing ---------------------------------------------------------------------------------- */
/* The KV-cache declaration of a config (spec dsq.md §6.1, deepseek-v4.md §6): entry formats and, per
 * block, attention kind, ratio, window, formats, state, bytes per token and fixed bytes, for cache
 * encoding `encoding` (dsq_config_kv_layout's names; NULL = "compact"), as unformatted JSON.
 * dsq_malloc'd (dsq_free); NULL for an unknown encoding or when out of memory. */
char *dsq_ctr_meta_kv_cache_json(const dsq_v4_config *c, const char *encoding);

typedef struct dsq_ctr_meta_source_file {
    const char *name;     /* the shard's file name */
    uint64_t bytes;       /* its size */
    uint64_t header_xxh3; /* XXH3-64 of its JSON header */
} dsq_ctr_meta_source_file;

/* What convert records.  Text members are NULL when absent (the key is then left out). */
typedef struct dsq_ctr_meta_desc {
    const char *config_json;            /* the source config.json: model.config (when it parses) and files."config.json" */
    const char *recipe;                 /* the recipe as a JSON object text (left out when it does not parse) */
    const char *tokenizer_json;         /* tokenizer."tokenizer.json" */
    const char *tokenizer_config_json;  /* tokenizer."tokenizer_config.json" */
    const char *chat_template;          /* tokenizer.chat_template */
    const char *generation_config_json; /* files."generation_config.json" */
    const dsq_v4_config *kv_config;     /* kv_cache = dsq_ctr_meta_kv_cache_json(kv_config, kv_encoding); NULL: left out */
    const char *kv_encoding;            /* the recipe's kv_cache encoding; NULL = "compact" */
    const char *const *command;         /* provenance.command: NULL-terminated argv (NULL: empty) */
    size_t n_source_files;              /* provenance.source.files */
    const dsq_ctr_meta_source_file *source_files;
} dsq_ctr_meta_desc;

/* The metadata JSON text (unformatted; keys in spec §6 order; provenance.tool is this dsq's version).
 * dsq_malloc'd (dsq_free); NULL with DSQ_ERR_NOMEM in err when out of memory. */
char *dsq_ctr_meta_build(const dsq_ctr_meta_desc *d, dsq_err *err);

/* ---- what a container holds (`dsq inspect FILE.dsq`) ------------------------------------------ */
enum { DSQ_CTR_SUMMARY_ENCODINGS = 32 }; /* bytes_by_encoding slots: dsq_encoding values below it */
typedef struct dsq_ctr_summary {
    size_t tensors;
    uint64_t file_bytes;   /* the container's size on disk */
    uint64_t stored_bytes; /* sum of every tensor's part bytes */
    uint64_t bytes_by_encoding[DSQ_CTR_SUMMARY_ENCODINGS]; /* [dsq_encoding] */
    uint64_t bytes_by_family[DSQ_FAMILY_COUNT];            /* [dsq_family] of each tensor's first source */
    dsq_param_counts params;      /* of the config (dsq_config_params) */
    dsq_kv_bytes kv;              /* of the config (dsq_config_kv_bytes) */
    const char *recipe_name;      /* NULL: not recorded (a view into the dsq_ctr_meta) */
    const char *kv_encoding;      /* the declared kv_cache.encoding, "none" when absent */
    double kv_bytes_per_token;    /* declared; NAN when absent */
    double kv_fixed_bytes;        /* declared; NAN when absent */
    const char *kv_json;          /* the declaration re-printed; NULL when absent */
    double kv_want_per_token;     /* the config's bytes per token for kv_encoding; NAN for an unknown one */
} dsq_ctr_summary;

/* Sums over the tensor table with cfg (the container's model.config) and the metadata m. */
void dsq_ctr_summarize(const dsq_ctr_reader *r, const dsq_ctr_meta *m, const dsq_v4_config *cfg, dsq_ctr_summary *s);
/* Bytes of one tensor's parts. */
uint64_t dsq_ctr_tensor_bytes(const dsq_ctr_tensor *t);
/* Whether the declared KV bytes per token agree with the config's for the declared encoding
 * (dsq_config_kv_per_token; an unknown encoding never agrees) within 1e-6 relative; *want = the
 * config's figure. */
bool dsq_ctr_summary_kv_consistent(const dsq_ctr_summary *s, double *want);

/* Every weight the config's inventory expects (its `.scale` tensors excepted: folded into their weight's
 * SCALES part) that resolves as the readers look it up — a source record, else a stored name — or
 * not: fn(ctx, name) for each that does not (fn may be NULL).  *checked = weights looked up, *missing =
 * those not found.  Fails only when the inventory cannot be built. */
dsq_status dsq_ctr_unresolved(const dsq_ctr_reader *r, const dsq_v4_config *cfg, void (*fn)(void *ctx, const char *name),
                              void *ctx, size_t *checked, size_t *missing, dsq_err *err);

#endif
