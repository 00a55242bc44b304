/* The container metadata (dsq_ctr_meta.h): typed reader, consistency check, builder, KV-cache
 * declaration, and the summary of a container's tensors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "container_internal.h"
#include "dsq_ctr_meta.h"
#include "dsq_json.h"

struct dsq__ctr_meta_doc {
    cJSON *root;
    char *config, *recipe, *kv; /* re-printed objects (cJSON_free) */
};

static const cJSON *member(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }
static const char *str_of(const cJSON *j) { return cJSON_IsString(j) ? j->valuestring : NULL; }
static double num_of(const cJSON *j) { return cJSON_IsNumber(j) ? j->valuedouble : NAN; }

const cJSON *dsq__ctr_meta_member(const dsq_ctr_meta *m, const char *key) { return member(m->doc->root, key); }

void dsq_ctr_meta_free(dsq_ctr_meta *m) {
    if (!m) return;
    if (m->doc) {
        cJSON_free(m->doc->config);
        cJSON_free(m->doc->recipe);
        cJSON_free(m->doc->kv);
        cJSON_Delete(m->doc->root);
        dsq_free(m->doc);
    }
    dsq_free(m);
}

dsq_status dsq_ctr_meta_parse(const char *json, size_t len, const char *what, dsq_ctr_meta **out, dsq_err *err) {
    *out = NULL;
    cJSON *root = NULL;
    DSQ_TRY(dsq_json_parse(json, len, what, &root, err));
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dsq_err_set(err, DSQ_ERR_JSON, "%s: metadata is not a JSON object", what);
    }
    dsq_ctr_meta *m = dsq_calloc(1, sizeof *m);
    struct dsq__ctr_meta_doc *d = m ? dsq_calloc(1, sizeof *d) : NULL;
    if (!d) {
        dsq_free(m);
        cJSON_Delete(root);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    }
    m->doc = d;
    d->root = root;
    const cJSON *model = member(root, "model"), *cfg = member(model, "config"), *recipe = member(root, "recipe");
    const cJSON *tok = member(root, "tokenizer"), *files = member(root, "files"), *kv = member(root, "kv_cache");
    m->format = str_of(member(root, "format"));
    m->format_version = str_of(member(root, "format_version"));
    m->architecture = str_of(member(model, "architecture"));
    if (cJSON_IsObject(cfg) && !(m->config = d->config = cJSON_PrintUnformatted(cfg))) goto nomem;
    if (recipe && !(m->recipe = d->recipe = cJSON_PrintUnformatted(recipe))) goto nomem;
    m->recipe_name = str_of(member(recipe, "name"));
    const cJSON *rkv = member(recipe, "kv_cache");
    m->recipe_kv_cache = str_of(rkv);
    m->recipe_kv_cache_not_string = rkv && !cJSON_IsString(rkv);
    m->tokenizer_json = str_of(member(tok, "tokenizer.json"));
    m->tokenizer_config_json = str_of(member(tok, "tokenizer_config.json"));
    m->chat_template = str_of(member(tok, "chat_template"));
    const cJSON *cj = member(files, "config.json");
    m->config_json = str_of(cj);
    m->config_json_not_string = cj && !cJSON_IsString(cj);
    m->generation_config_json = str_of(member(files, "generation_config.json"));
    if (kv && !(m->kv_cache.json = d->kv = cJSON_PrintUnformatted(kv))) goto nomem;
    m->kv_cache.encoding = str_of(member(kv, "encoding"));
    m->kv_cache.bytes_per_token = num_of(member(kv, "bytes_per_token"));
    m->kv_cache.fixed_bytes = num_of(member(kv, "fixed_bytes"));
    *out = m;
    return DSQ_OK;
nomem:
    dsq_ctr_meta_free(m);
    return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
}

dsq_status dsq_ctr_meta_read(const dsq_ctr_reader *r, dsq_ctr_meta **out, dsq_err *err) {
    *out = NULL;
    size_t len = 0;
    const char *text = dsq_ctr_metadata(r, &len);
    DSQ_RETURN_IF(!text, err, DSQ_ERR_MISSING, "%s: no metadata", dsq_ctr_path(r));
    return dsq_ctr_meta_parse(text, len, dsq_ctr_path(r), out, err);
}

dsq_status dsq_ctr_meta_config(const dsq_ctr_meta *m, const char *what, dsq_v4_config *cfg, dsq_err *err) {
    DSQ_RETURN_IF(!m->config, err, DSQ_ERR_MISSING, "%s: metadata has no model.config object", what);
    return dsq_config_parse(m->config, strlen(m->config), what, cfg, NULL, err);
}

#define NOTE(expr)                                                                                                     \
    do {                                                                                                               \
        dsq_status s_ = (expr);                                                                                        \
        if (s_ != DSQ_OK && first == DSQ_OK) first = s_;                                                               \
    } while (0)

dsq_status dsq_ctr_meta_check(const dsq_ctr_meta *m, const char *f, dsq_v4_config *cfg, bool *have_cfg, dsq_err *err) {
    dsq_status first = DSQ_OK;
    *have_cfg = false;
    if (!m->format || strcmp(m->format, "dsq") != 0)
        NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata: \"format\" is not \"dsq\"", f));
    const cJSON *mc = member(member(m->doc->root, "model"), "config");
    if (!m->config) {
        NOTE(dsq_err_set(err, DSQ_ERR_MISSING, "%s: metadata has no model.config object (inspect and eval need it)", f));
    } else {
        dsq_status s = dsq_config_parse(m->config, strlen(m->config), "metadata model.config", cfg, NULL, err);
        NOTE(s);
        *have_cfg = s == DSQ_OK;
    }
    if (m->config_json_not_string)
        NOTE(dsq_err_set(err, DSQ_ERR_JSON, "%s: metadata: files.config.json is not a string", f));
    if (m->config_json) {
        cJSON *fj = NULL;
        dsq_status s = dsq_json_parse(m->config_json, strlen(m->config_json), "metadata files.config.json", &fj, err);
        NOTE(s);
        if (s == DSQ_OK && m->config && !cJSON_Compare(fj, mc, true))
            NOTE(dsq_err_set(err, DSQ_ERR_CONFIG,
                             "%s: metadata: files.config.json and model.config disagree (export writes one, eval reads "
                             "the other)",
                             f));
        cJSON_Delete(fj);
    }
    if (*have_cfg) {
        char *want = dsq_ctr_meta_kv_cache_json(cfg, m->kv_cache.encoding);
        cJSON *wj = NULL;
        if (!want || (dsq_json_parse(want, strlen(want), "kv", &wj, NULL) == DSQ_OK &&
                      !cJSON_Compare(wj, member(m->doc->root, "kv_cache"), true)))
            NOTE(dsq_err_set(err, DSQ_ERR_CONFIG, "%s: metadata: kv_cache does not match the config", f));
        cJSON_Delete(wj);
        dsq_free(want);
    }
    return first;
}

/* ---- builder ---- */

static cJSON *parse_or_null(const char *text) {
    cJSON *j = NULL;
    if (!text || dsq_json_parse(text, strlen(text), "metadata", &j, NULL) != DSQ_OK) return NULL;
    return j;
}

/* cJSON's text → a dsq_malloc'd copy (the library's allocator owns what it returns). */
static char *own_text(char *text) {
    if (!text) return NULL;
    char *copy = dsq_strdup(text);
    cJSON_free(text);
    return copy;
}

static void add_text(cJSON *obj, const char *key, const char *text) {
    if (text) cJSON_AddStringToObject(obj, key, text);
}

char *dsq_ctr_meta_build(const dsq_ctr_meta_desc *d, dsq_err *err) {
    cJSON *m = cJSON_CreateObject();
    if (!m) {
        dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory building the metadata");
        return NULL;
    }
    cJSON_AddStringToObject(m, "format", "dsq");
    cJSON_AddStringToObject(m, "format_version", "1.0");
    cJSON *model = cJSON_AddObjectToObject(m, "model");
    cJSON_AddStringToObject(model, "architecture", "deepseek_v4");
    cJSON *cfg = parse_or_null(d->config_json);
    if (cfg) cJSON_AddItemToObject(model, "config", cfg);
    cJSON *recipe = parse_or_null(d->recipe);
    if (recipe) cJSON_AddItemToObject(m, "recipe", recipe);
    cJSON *tok = cJSON_AddObjectToObject(m, "tokenizer");
    add_text(tok, "tokenizer.json", d->tokenizer_json);
    add_text(tok, "tokenizer_config.json", d->tokenizer_config_json);
    add_text(tok, "chat_template", d->chat_template);
    cJSON *files = cJSON_AddObjectToObject(m, "files");
    add_text(files, "config.json", d->config_json);
    add_text(files, "generation_config.json", d->generation_config_json);
    if (d->kv_config) {
        char *kv = dsq_ctr_meta_kv_cache_json(d->kv_config, d->kv_encoding);
        cJSON *kvj = parse_or_null(kv);
        dsq_free(kv);
        if (kvj) cJSON_AddItemToObject(m, "kv_cache", kvj);
    }
    cJSON *prov = cJSON_AddObjectToObject(m, "provenance");
    cJSON_AddStringToObject(prov, "tool", "dsq " DSQ_VERSION_STRING);
    cJSON *cmd = cJSON_AddArrayToObject(prov, "command");
    for (size_t i = 0; d->command && d->command[i]; i++) cJSON_AddItemToArray(cmd, cJSON_CreateString(d->command[i]));
    cJSON *srcj = cJSON_AddObjectToObject(prov, "source");
    cJSON *fl = cJSON_AddArrayToObject(srcj, "files");
    for (size_t i = 0; i < d->n_source_files; i++) {
        const dsq_ctr_meta_source_file *sf = &d->source_files[i];
        cJSON *f = cJSON_CreateObject();
        char hex[24];
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sf->header_xxh3);
        cJSON_AddStringToObject(f, "name", sf->name);
        cJSON_AddNumberToObject(f, "bytes", (double)sf->bytes);
        cJSON_AddStringToObject(f, "header_xxh3", hex);
        cJSON_AddItemToArray(fl, f);
    }
    char *text = own_text(cJSON_PrintUnformatted(m));
    cJSON_Delete(m);
    if (!text) dsq_err_set(err, DSQ_ERR_NOMEM, "out of memory building the metadata");
    return text;
}

/* ---- KV cache declaration (spec dsq.md §6.1, deepseek-v4.md §6) ---- */

char *dsq_ctr_meta_kv_cache_json(const dsq_v4_config *c, const char *encoding) {
    uint64_t hd = (uint64_t)c->head_dim, rd = (uint64_t)c->rope_head_dim, nd = hd - rd, ihd = (uint64_t)c->index_head_dim;
    uint64_t kv_scales = dsq_ceil_div(nd, 64), idx_scales = dsq_ceil_div(ihd, 32), q4_scales = dsq_ceil_div(nd, 32);
    uint64_t kv_compact = rd * 2 + nd + kv_scales, idx_compact = dsq_ceil_div(ihd, 2) + idx_scales;
    const char *kv_fmt = NULL, *idx_fmt = NULL;
    if (!encoding) encoding = "compact";
    if (!dsq_config_kv_layout(encoding, &kv_fmt, &idx_fmt)) return NULL;
    uint64_t kv_bytes = dsq_config_kv_format_bytes(c, kv_fmt), idx_bytes = dsq_config_kv_format_bytes(c, idx_fmt);
    cJSON *kv = cJSON_CreateObject();
    if (!kv) return NULL;
    cJSON_AddStringToObject(kv, "encoding", encoding);
    cJSON *fmts = cJSON_AddObjectToObject(kv, "entry_formats");
    struct field {
        const char *name, *dtype;
        uint64_t dims, count, block, offset, bytes;
    };
    struct fmt {
        const char *name;
        uint64_t bytes;
        struct field f[3];
        int n;
    } F[7] = {
        {"kv_compact", kv_compact, {{"rope", "BF16", rd, 0, 0, 0, rd * 2}, {"nope", "F8_E4M3", nd, 0, 0, rd * 2, nd},
                                    {"nope_scales", "F8_E8M0", 0, kv_scales, 64, rd * 2 + nd, kv_scales}}, 3},
        {"index_fp4", idx_compact, {{"codes", "e2m1x2", ihd, 0, 0, 0, dsq_ceil_div(ihd, 2)},
                                    {"scales", "F8_E8M0", 0, idx_scales, 32, dsq_ceil_div(ihd, 2), idx_scales}}, 2},
        {"kv_bf16", hd * 2, {{"values", "BF16", hd, 0, 0, 0, hd * 2}}, 1},
        {"index_bf16", ihd * 2, {{"values", "BF16", ihd, 0, 0, 0, ihd * 2}}, 1},
        /* the lower forms are listed only by containers that use them (older files stay byte-identical) */
        {"kv_fp4", rd * 2 + dsq_ceil_div(nd, 2) + q4_scales,
         {{"rope", "BF16", rd, 0, 0, 0, rd * 2}, {"nope", "e2m1x2", nd, 0, 0, rd * 2, dsq_ceil_div(nd, 2)},
          {"nope_scales", "F8_E8M0", 0, q4_scales, 32, rd * 2 + dsq_ceil_div(nd, 2), q4_scales}}, 3},
        {"kv_int4", rd * 2 + dsq_ceil_div(nd, 2) + 2 * q4_scales,
         {{"rope", "BF16", rd, 0, 0, 0, rd * 2}, {"nope", "int4x2", nd, 0, 0, rd * 2, dsq_ceil_div(nd, 2)},
          {"nope_scales", "BF16", 0, q4_scales, 32, rd * 2 + dsq_ceil_div(nd, 2), 2 * q4_scales}}, 3},
        {"index_fp8", ihd + idx_scales, {{"codes", "F8_E4M3", ihd, 0, 0, 0, ihd},
                                         {"scales", "F8_E8M0", 0, idx_scales, 32, ihd, idx_scales}}, 2},
    };
    for (int i = 0; i < 7; i++) {
        if (i >= 4 && strcmp(F[i].name, kv_fmt) && strcmp(F[i].name, idx_fmt)) continue;
        cJSON *o = cJSON_AddObjectToObject(fmts, F[i].name);
        cJSON_AddNumberToObject(o, "bytes", (double)F[i].bytes);
        cJSON *fa = cJSON_AddArrayToObject(o, "fields");
        for (int k = 0; k < F[i].n; k++) {
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "name", F[i].f[k].name);
            if (F[i].f[k].dims) cJSON_AddNumberToObject(f, "dims", (double)F[i].f[k].dims);
            if (F[i].f[k].count) cJSON_AddNumberToObject(f, "count", (double)F[i].f[k].count);
            if (F[i].f[k].block) cJSON_AddNumberToObject(f, "block", (double)F[i].f[k].block);
            cJSON_AddStringToObject(f, "dtype", F[i].f[k].dtype);
            cJSON_AddNumberToObject(f, "offset", (double)F[i].f[k].offset);
            cJSON_AddNumberToObject(f, "bytes", (double)F[i].f[k].bytes);
            cJSON_AddItemToArray(fa, f);
        }
    }
    cJSON *layers = cJSON_AddArrayToObject(kv, "layers");
    double per_token = 0;
    uint64_t fixed = 0;
    int n_blocks = c->n_layers + c->n_mtp_layers;
    for (int b = 0; b < n_blocks; b++) {
        int r = dsq_config_ratio(c, b);
        dsq_attn_kind kind = dsq_config_attn_kind(c, b);
        uint64_t state = 0;
        double bpt = 0;
        if (kind == DSQ_ATTN_CSA) {
            state = 2ull * 8 * 2 * hd * 4 + 2ull * 8 * 2 * ihd * 4; /* KV+SC [8, 2·d] f32, attention and indexer */
            bpt = (double)(kv_bytes + idx_bytes) / r;
        } else if (kind == DSQ_ATTN_HCA) {
            state = 2ull * (uint64_t)r * hd * 4; /* KV+SC [r, hd] f32 */
            bpt = (double)kv_bytes / r;
        }
        uint64_t lf = (uint64_t)c->window_size * kv_bytes + state;
        cJSON *l = cJSON_CreateObject();
        cJSON_AddNumberToObject(l, "block", b);
        cJSON_AddBoolToObject(l, "mtp", b >= c->n_layers);
        cJSON_AddStringToObject(l, "attention", dsq_attn_kind_name(kind));
        cJSON_AddNumberToObject(l, "compress_ratio", r);
        cJSON_AddNumberToObject(l, "window_entries", c->window_size);
        cJSON_AddStringToObject(l, "window_format", kv_fmt);
        if (kind != DSQ_ATTN_SLIDING) cJSON_AddStringToObject(l, "compressed_format", kv_fmt);
        else cJSON_AddNullToObject(l, "compressed_format");
        cJSON_AddNumberToObject(l, "compressed_per_tokens", kind == DSQ_ATTN_SLIDING ? 0 : r);
        if (kind == DSQ_ATTN_CSA) cJSON_AddStringToObject(l, "index_format", idx_fmt);
        else cJSON_AddNullToObject(l, "index_format");
        cJSON_AddNumberToObject(l, "state_bytes", (double)state);
        cJSON_AddNumberToObject(l, "bytes_per_token", bpt);
        cJSON_AddNumberToObject(l, "fixed_bytes", (double)lf);
        cJSON_AddItemToArray(layers, l);
        per_token += bpt;
        fixed += lf;
    }
    cJSON_AddNumberToObject(kv, "bytes_per_token", per_token);
    cJSON_AddNumberToObject(kv, "fixed_bytes", (double)fixed);
    char *text = cJSON_PrintUnformatted(kv);
    cJSON_Delete(kv);
    if (!text) return NULL;
    char *copy = dsq_strdup(text);
    cJSON_free(text);
    return copy;
}

/* ---- summary ---- */

uint64_t dsq_ctr_tensor_bytes(const dsq_ctr_tensor *t) {
    uint64_t b = 0;
    for (int p = 0; p < t->n_parts; p++) b += t->parts[p].bytes; /* parts lie inside the file: no overflow */
    return b;
}

static dsq_family family_of(const dsq_ctr_tensor *t) {
    dsq_tensor_role role;
    const char *name = t->n_sources ? t->sources[0].name : t->name;
    return dsq_inv_classify(name, &role) ? role.family : DSQ_FAMILY_OTHER;
}

void dsq_ctr_summarize(const dsq_ctr_reader *r, const dsq_ctr_meta *m, const dsq_v4_config *cfg, dsq_ctr_summary *s) {
    memset(s, 0, sizeof *s);
    s->tensors = dsq_ctr_count(r);
    s->file_bytes = dsq_ctr_header(r)->file_bytes;
    for (size_t i = 0; i < s->tensors; i++) {
        const dsq_ctr_tensor *t = dsq_ctr_at(r, i);
        uint64_t b = dsq_ctr_tensor_bytes(t);
        s->stored_bytes += b;
        if ((unsigned)t->encoding < DSQ_CTR_SUMMARY_ENCODINGS) s->bytes_by_encoding[t->encoding] += b;
        s->bytes_by_family[family_of(t)] += b;
    }
    dsq_config_params(cfg, &s->params);
    dsq_config_kv_bytes(cfg, &s->kv);
    s->recipe_name = m->recipe_name;
    s->kv_encoding = m->kv_cache.encoding ? m->kv_cache.encoding : "none";
    s->kv_bytes_per_token = m->kv_cache.bytes_per_token;
    s->kv_fixed_bytes = m->kv_cache.fixed_bytes;
    s->kv_json = m->kv_cache.json;
    s->kv_want_per_token = dsq_config_kv_per_token(cfg, s->kv_encoding);
}

bool dsq_ctr_summary_kv_consistent(const dsq_ctr_summary *s, double *want) {
    double w = s->kv_want_per_token;
    if (want) *want = w;
    return isfinite(w) && isfinite(s->kv_bytes_per_token) && fabs(s->kv_bytes_per_token - w) <= 1e-6 * (w > 1 ? w : 1);
}

dsq_status dsq_ctr_unresolved(const dsq_ctr_reader *r, const dsq_v4_config *cfg, void (*fn)(void *ctx, const char *name),
                              void *ctx, size_t *checked, size_t *missing, dsq_err *err) {
    *checked = *missing = 0;
    dsq_inv *inv = NULL;
    DSQ_TRY(dsq_inv_expected(cfg, NULL, &inv, err));
    for (size_t i = 0; i < dsq_inv_count(inv); i++) {
        const char *name = dsq_inv_at(inv, i)->name;
        size_t len = strlen(name);
        if (len > 6 && !strcmp(name + len - 6, ".scale")) continue; /* folded into their weight's SCALES part */
        (*checked)++;
        if (!dsq_ctr_find_source(r, name, NULL, NULL) && !dsq_ctr_find(r, name)) {
            (*missing)++;
            if (fn) fn(ctx, name);
        }
    }
    dsq_inv_free(inv);
    return DSQ_OK;
}
