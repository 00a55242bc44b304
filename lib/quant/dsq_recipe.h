/* Conversion recipes: which encoding each checkpoint tensor gets in a .dsq container.
 *
 * A recipe is an ordered list of rules `match → encoding`; the first rule whose pattern matches a
 * checkpoint weight name wins (scale tensors follow their weight).  Patterns are fnmatch(3) globs
 * on the full name ("layers.*.ffn.experts.*", "*.attn.wq_b.weight"; `*` crosses dots) or
 * "family:NAME" with a family of dsq_inventory.h ("family:routed_experts").  Encodings are the codec
 * names ("bf16", "fp8-128x128", "mxfp4", "int4-g32", "int4-g64-asym", ...) or "keep" = the form the
 * checkpoint stores (BF16 stays BF16, FP8 + 128x128 scales stays FP8_B128, packed FP4 stays MXFP4).
 * A tensor no rule matches keeps its stored form.
 *
 * Recipe files are JSON:
 *   {"name": "mine", "description": "...", "rules": [{"match": "GLOB", "encoding": "ENC"}, ...]}
 * Built-ins: release, fp8, int4, int8, bf16 (dsq recipes lists them).
 *
 * Protected tensors (tid2eid, both compressor ape, every hc_*, attn_sink, gate.bias, every norm) must
 * keep their stored form; the converter refuses a recipe that changes them unless forced. */
#ifndef DSQ_RECIPE_H
#define DSQ_RECIPE_H

#include "dsq_core.h"
#include "dsq_encoding.h"

#define DSQ_RECIPE_MAX_RULES 4096

typedef struct dsq_recipe_target {
    bool keep;          /* the stored form; enc/group unused */
    dsq_encoding enc;
    int group;          /* group width of INT*_G encodings, 0 otherwise */
} dsq_recipe_target;

typedef struct dsq_recipe_rule {
    char *match;        /* glob or "family:NAME" */
    char *encoding;     /* as written ("keep", "int4-g32") */
    dsq_recipe_target target;
} dsq_recipe_rule;

typedef struct dsq_recipe {
    char *name;
    char *description;
    dsq_recipe_rule *rules;
    size_t n_rules;
    /* "kv_cache": the KV-cache encoding the container declares and the evaluator takes by default
     * (dsq_config_kv_layout: bf16, compact, fp4, int4, compact-idx8); NULL when the recipe has none
     * (the container declares compact and the evaluator keeps its f32 default). */
    char *kv_cache;
} dsq_recipe;

/* Built-in recipes, in listing order. */
size_t dsq_recipe_builtin_count(void);
const char *dsq_recipe_builtin_name(size_t i);
/* A built-in by name, a recipe JSON file (a path, or any name ending in .json) otherwise.
 * DSQ_ERR_MISSING names an unknown built-in.  Free with dsq_recipe_free. */
dsq_status dsq_recipe_load(const char *name_or_path, dsq_recipe **out, dsq_err *err);
/* Parse recipe JSON text; `what` names it in messages. */
dsq_status dsq_recipe_parse(const char *json, size_t len, const char *what, dsq_recipe **out, dsq_err *err);
/* Add "GLOB=ENCODING" in front of the rules (overrides win over the recipe; a later override wins
 * over an earlier one). */
dsq_status dsq_recipe_override(dsq_recipe *r, const char *spec, dsq_err *err);
void dsq_recipe_free(dsq_recipe *r);

/* Parse an encoding name ("keep", "bf16", "int4-g32", ...).  DSQ_ERR_ARG for unknown names. */
dsq_status dsq_recipe_parse_target(const char *text, dsq_recipe_target *out, dsq_err *err);
/* Canonical name of a target (never NULL). */
const char *dsq_recipe_target_name(const dsq_recipe_target *t, char *buf, size_t size);

/* The first rule matching checkpoint tensor `name`, or NULL (keep). */
const dsq_recipe_rule *dsq_recipe_match(const dsq_recipe *r, const char *name);
/* True for tensors the model needs exactly as stored (see above). */
bool dsq_recipe_is_protected(const char *name);

/* Canonical JSON of the recipe (heap string, dsq_free): {"name", "description", "rules": [...]}. */
char *dsq_recipe_to_json(const dsq_recipe *r);

#endif
