/* Conversion recipes (dsq_recipe.h): built-ins, JSON files, overrides, first-match rules. */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "dsq_codec.h"
#include "dsq_config.h"
#include "dsq_inventory.h"
#include "dsq_json.h"
#include "dsq_recipe.h"

/* ---- built-ins ---- */

typedef struct builtin_rule {
    const char *match, *encoding;
} builtin_rule;

typedef struct builtin {
    const char *name, *description;
    const builtin_rule *rules;
    size_t n;
} builtin;

/* Protected tensors first in every recipe that changes encodings, so no built-in needs --force. */
#define PROTECT                                                                                                        \
    {"*.ffn.gate.tid2eid", "keep"}, {"*.ape", "keep"}, {"*hc_*", "keep"}, {"*.attn_sink", "keep"},                    \
        {"*.ffn.gate.bias", "keep"}, {"*norm.weight", "keep"}

static const builtin_rule R_RELEASE[] = {{"*", "keep"}};
static const builtin_rule R_FP8[] = {{"family:routed_experts", "fp8-128x128"}, {"*", "keep"}};
static const builtin_rule R_INT4[] = {{"family:routed_experts", "int4-g32"}, {"*", "keep"}};
static const builtin_rule R_INT8[] = {{"family:routed_experts", "int8-g32"}, {"*", "keep"}};
static const builtin_rule R_BF16[] = {PROTECT, {"*.ffn.gate.weight", "keep"}, {"*", "bf16"}};

static const builtin BUILTINS[] = {
    {"release", "every tensor as shipped (FP8 128x128 attention/shared experts, MXFP4 routed experts); byte copy",
     R_RELEASE, sizeof R_RELEASE / sizeof R_RELEASE[0]},
    {"fp8", "routed experts FP4 -> FP8 128x128 losslessly (convert.py --expert-dtype fp8), rest as shipped", R_FP8,
     sizeof R_FP8 / sizeof R_FP8[0]},
    {"int4", "routed experts INT4 groups of 32 (F16 scales), rest as shipped", R_INT4, sizeof R_INT4 / sizeof R_INT4[0]},
    {"int8", "routed experts INT8 groups of 32 (F16 scales), rest as shipped", R_INT8, sizeof R_INT8 / sizeof R_INT8[0]},
    {"bf16", "every quantized matrix dequantized to BF16; F32/I64/norm tensors as shipped", R_BF16,
     sizeof R_BF16 / sizeof R_BF16[0]},
};
#define N_BUILTINS (sizeof BUILTINS / sizeof BUILTINS[0])

size_t dsq_recipe_builtin_count(void) { return N_BUILTINS; }
const char *dsq_recipe_builtin_name(size_t i) { return i < N_BUILTINS ? BUILTINS[i].name : NULL; }

/* ---- encoding names: the codec's names (dsq_codec_parse), plus "keep" ---- */

dsq_status dsq_recipe_parse_target(const char *text, dsq_recipe_target *out, dsq_err *err) {
    memset(out, 0, sizeof *out);
    if (!strcmp(text, "keep")) {
        out->keep = true;
        return DSQ_OK;
    }
    dsq_err local = DSQ_ERR_INIT;
    dsq_status s = dsq_codec_parse(text, &out->enc, &out->group, &local);
    dsq_err_clear(&local);
    DSQ_RETURN_IF(s != DSQ_OK || !dsq_codec_known(out->enc), err, DSQ_ERR_ARG,
                  "unknown encoding '%s' (keep, f32, f16, bf16, fp8-128x128, fp8-128x128-f32, fp8-1x128, "
                  "fp8-1x128-f32, fp8-row, fp8-row-e8m0, mxfp4, nvfp4, int8-row, int8-gG, int4-gG, int4-gG-asym, int2-gG-asym; G = 16..256)",
                  text);
    return DSQ_OK;
}

const char *dsq_recipe_target_name(const dsq_recipe_target *t, char *buf, size_t size) {
    if (t->keep) {
        snprintf(buf, size, "keep");
        return buf;
    }
    return dsq_codec_name(t->enc, t->group, buf, size);
}

/* ---- recipes ---- */

void dsq_recipe_free(dsq_recipe *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_rules; i++) {
        dsq_free(r->rules[i].match);
        dsq_free(r->rules[i].encoding);
    }
    dsq_free(r->rules);
    dsq_free(r->name);
    dsq_free(r->description);
    dsq_free(r->kv_cache);
    dsq_free(r);
}

static dsq_status check_match(const char *what, const char *match, dsq_err *err) {
    DSQ_RETURN_IF(!*match, err, DSQ_ERR_ARG, "%s: empty match pattern", what);
    if (!strncmp(match, "family:", 7)) {
        dsq_family f;
        DSQ_RETURN_IF(!dsq_family_from_name(match + 7, &f), err, DSQ_ERR_ARG, "%s: unknown family '%s'", what,
                      match + 7);
    }
    return DSQ_OK;
}

/* Insert a rule at position `at`. */
static dsq_status add_rule(dsq_recipe *r, size_t at, const char *what, const char *match, const char *encoding,
                           dsq_err *err) {
    DSQ_RETURN_IF(r->n_rules >= DSQ_RECIPE_MAX_RULES, err, DSQ_ERR_RANGE, "%s: more than %d rules", what,
                  DSQ_RECIPE_MAX_RULES);
    DSQ_TRY(check_match(what, match, err));
    dsq_recipe_target t;
    dsq_err local = DSQ_ERR_INIT;
    if (dsq_recipe_parse_target(encoding, &t, &local) != DSQ_OK) {
        dsq_status s = dsq_err_set(err, DSQ_ERR_ARG, "%s: rule '%s': %s", what, match, local.msg);
        dsq_err_clear(&local);
        return s;
    }
    dsq_recipe_rule *nr = dsq_realloc(r->rules, (r->n_rules + 1) * sizeof *nr);
    DSQ_RETURN_IF(!nr, err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    r->rules = nr;
    char *m = dsq_strdup(match), *e = dsq_strdup(encoding);
    if (!m || !e) {
        dsq_free(m);
        dsq_free(e);
        return dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    }
    memmove(&r->rules[at + 1], &r->rules[at], (r->n_rules - at) * sizeof *nr);
    r->rules[at] = (dsq_recipe_rule){m, e, t};
    r->n_rules++;
    return DSQ_OK;
}

static dsq_recipe *recipe_new(const char *name, const char *description) {
    dsq_recipe *r = dsq_calloc(1, sizeof *r);
    if (!r) return NULL;
    r->name = dsq_strdup(name);
    r->description = dsq_strdup(description ? description : "");
    if (!r->name || !r->description) {
        dsq_recipe_free(r);
        return NULL;
    }
    return r;
}

dsq_status dsq_recipe_parse(const char *json, size_t len, const char *what, dsq_recipe **out, dsq_err *err) {
    *out = NULL;
    cJSON *j = NULL;
    DSQ_TRY(dsq_json_parse(json, len, what, &j, err));
    dsq_status s = DSQ_OK;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(j, "description");
    const cJSON *rules = cJSON_GetObjectItemCaseSensitive(j, "rules");
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(j, "kv_cache");
    if (!cJSON_IsObject(j)) s = dsq_err_set(err, DSQ_ERR_JSON, "%s: a recipe is a JSON object", what);
    else if (!cJSON_IsString(name) || !name->valuestring[0])
        s = dsq_err_set(err, DSQ_ERR_JSON, "%s: \"name\" must be a non-empty string", what);
    else if (desc && !cJSON_IsString(desc))
        s = dsq_err_set(err, DSQ_ERR_JSON, "%s: \"description\" must be a string", what);
    else if (!cJSON_IsArray(rules) || cJSON_GetArraySize(rules) < 1)
        s = dsq_err_set(err, DSQ_ERR_JSON, "%s: \"rules\" must be a non-empty array", what);
    else if (kv && !(cJSON_IsString(kv) && dsq_config_kv_encoding_name(kv->valuestring)))
        s = dsq_err_set(err, DSQ_ERR_JSON,
                        "%s: \"kv_cache\" must be one of bf16, compact, fp4, int4, compact-idx8 (formats/spec/dsq.md §6.1)",
                        what);
    for (const cJSON *k = j ? j->child : NULL; s == DSQ_OK && k; k = k->next)
        if (strcmp(k->string, "name") && strcmp(k->string, "description") && strcmp(k->string, "rules") &&
            strcmp(k->string, "kv_cache"))
            s = dsq_err_set(err, DSQ_ERR_JSON, "%s: unknown member \"%s\"", what, k->string);
    dsq_recipe *r = NULL;
    if (s == DSQ_OK && !(r = recipe_new(name->valuestring, desc ? desc->valuestring : NULL)))
        s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    if (s == DSQ_OK && kv && !(r->kv_cache = dsq_strdup(dsq_config_kv_encoding_name(kv->valuestring))))
        s = dsq_err_set(err, DSQ_ERR_NOMEM, "%s: out of memory", what);
    int i = 0;
    for (const cJSON *rule = s == DSQ_OK ? rules->child : NULL; rule && s == DSQ_OK; rule = rule->next, i++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(rule, "match");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(rule, "encoding");
        if (!cJSON_IsObject(rule) || !cJSON_IsString(m) || !cJSON_IsString(e) || cJSON_GetArraySize(rule) != 2) {
            s = dsq_err_set(err, DSQ_ERR_JSON, "%s: rule %d must be {\"match\": STRING, \"encoding\": STRING}", what, i);
            break;
        }
        s = add_rule(r, r->n_rules, what, m->valuestring, e->valuestring, err);
    }
    cJSON_Delete(j);
    if (s != DSQ_OK) {
        dsq_recipe_free(r);
        return s;
    }
    *out = r;
    return DSQ_OK;
}

dsq_status dsq_recipe_load(const char *name_or_path, dsq_recipe **out, dsq_err *err) {
    *out = NULL;
    for (size_t i = 0; i < N_BUILTINS; i++) {
        const builtin *b = &BUILTINS[i];
        if (strcmp(b->name, name_or_path) != 0) continue;
        dsq_recipe *r = recipe_new(b->name, b->description);
        DSQ_RETURN_IF(!r, err, DSQ_ERR_NOMEM, "recipe %s: out of memory", b->name);
        for (size_t k = 0; k < b->n; k++) {
            dsq_status s = add_rule(r, r->n_rules, b->name, b->rules[k].match, b->rules[k].encoding, err);
            if (s != DSQ_OK) {
                dsq_recipe_free(r);
                return s;
            }
        }
        *out = r;
        return DSQ_OK;
    }
    size_t n = strlen(name_or_path);
    bool file = strchr(name_or_path, '/') || (n > 5 && !strcmp(name_or_path + n - 5, ".json")) ||
                dsq_path_exists(name_or_path);
    DSQ_RETURN_IF(!file, err, DSQ_ERR_MISSING,
                  "unknown recipe '%s' (built-ins: release, fp8, int4, int8, bf16; or a JSON file)", name_or_path);
    char *text = NULL;
    size_t len = 0;
    DSQ_TRY(dsq_read_file(name_or_path, 16u << 20, &text, &len, err));
    dsq_status s = dsq_recipe_parse(text, len, name_or_path, out, err);
    dsq_free(text);
    return s;
}

dsq_status dsq_recipe_override(dsq_recipe *r, const char *spec, dsq_err *err) {
    const char *eq = strrchr(spec, '=');
    DSQ_RETURN_IF(!eq || eq == spec || !eq[1], err, DSQ_ERR_ARG, "--override '%s': expected GLOB=ENCODING", spec);
    char *glob = dsq_malloc((size_t)(eq - spec) + 1);
    DSQ_RETURN_IF(!glob, err, DSQ_ERR_NOMEM, "out of memory");
    memcpy(glob, spec, (size_t)(eq - spec));
    glob[eq - spec] = 0;
    dsq_status s = add_rule(r, 0, "--override", glob, eq + 1, err);
    dsq_free(glob);
    return s;
}

static bool rule_matches(const dsq_recipe_rule *rule, const char *name) {
    if (!strncmp(rule->match, "family:", 7)) {
        dsq_tensor_role role;
        dsq_family f;
        if (!dsq_family_from_name(rule->match + 7, &f)) return false;
        dsq_inv_classify(name, &role);
        return role.family == f;
    }
    return fnmatch(rule->match, name, 0) == 0;
}

const dsq_recipe_rule *dsq_recipe_match(const dsq_recipe *r, const char *name) {
    for (size_t i = 0; i < r->n_rules; i++)
        if (rule_matches(&r->rules[i], name)) return &r->rules[i];
    return NULL;
}

bool dsq_recipe_is_protected(const char *name) {
    dsq_tensor_role role;
    dsq_inv_classify(name, &role);
    switch (role.part) {
    case DSQ_PART_GATE_TID2EID:
    case DSQ_PART_CMP_APE:
    case DSQ_PART_IDX_CMP_APE:
    case DSQ_PART_ATTN_SINK:
    case DSQ_PART_GATE_BIAS:
    case DSQ_PART_HC_HEAD_FN:
    case DSQ_PART_HC_HEAD_BASE:
    case DSQ_PART_HC_HEAD_SCALE:
    case DSQ_PART_HC_ATTN_FN:
    case DSQ_PART_HC_ATTN_BASE:
    case DSQ_PART_HC_ATTN_SCALE:
    case DSQ_PART_HC_FFN_FN:
    case DSQ_PART_HC_FFN_BASE:
    case DSQ_PART_HC_FFN_SCALE: return true;
    default: break;
    }
    return role.family == DSQ_FAMILY_NORMS;
}

char *dsq_recipe_to_json(const dsq_recipe *r) {
    cJSON *j = cJSON_CreateObject(), *rules = cJSON_CreateArray();
    if (!j || !rules) {
        cJSON_Delete(j);
        cJSON_Delete(rules);
        return NULL;
    }
    cJSON_AddStringToObject(j, "name", r->name);
    cJSON_AddStringToObject(j, "description", r->description);
    cJSON_AddItemToObject(j, "rules", rules);
    if (r->kv_cache) cJSON_AddStringToObject(j, "kv_cache", r->kv_cache);
    for (size_t i = 0; i < r->n_rules; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddStringToObject(o, "match", r->rules[i].match);
        cJSON_AddStringToObject(o, "encoding", r->rules[i].encoding);
        cJSON_AddItemToArray(rules, o);
    }
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return NULL;
    char *copy = dsq_strdup(text);
    cJSON_free(text);
    return copy;
}
