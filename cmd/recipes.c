/* dsq-command: recipes | list the built-in conversion recipes, or show one recipe's rules */
#include <string.h>

#include "cmd.h"
#include "dsq_recipe.h"

static void help(void) {
    printf("usage: dsq recipes [NAME|FILE] [--json]\n\n"
           "Without an argument, lists the built-in recipes of `dsq convert`.  With a built-in name or a\n"
           "recipe JSON file, prints its rules in order (the first matching rule wins).\n");
}

int dsq_cmd_recipes(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    bool json = false;
    const char *which = NULL;
    dsq_opt opts[] = {DSQ_OPT_FLAG("--json", &json), DSQ_OPT_END};
    dsq_opt_spec spec = {.cmd = "recipes", .opts = opts, .pos = &which, .max_pos = 1, .dash_is_option = true};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    dsq_err err = DSQ_ERR_INIT;
    size_t n = which ? 1 : dsq_recipe_builtin_count();
    if (json) printf(which ? "" : "[");
    for (size_t i = 0; i < n; i++) {
        dsq_recipe *r = NULL;
        if (dsq_recipe_load(which ? which : dsq_recipe_builtin_name(i), &r, &err) != DSQ_OK)
            return dsq_cmd_fail("recipes", &err);
        if (json) {
            char *t = dsq_recipe_to_json(r);
            printf("%s%s", i ? ", " : "", t ? t : "null");
            dsq_free(t);
        } else if (!which) {
            printf("%-10s %s\n", r->name, r->description);
        } else {
            printf("%s: %s\n", r->name, r->description);
            for (size_t k = 0; k < r->n_rules; k++) printf("  %-40s %s\n", r->rules[k].match, r->rules[k].encoding);
        }
        dsq_recipe_free(r);
    }
    if (json) printf(which ? "\n" : "]\n");
    return DSQ_EXIT_OK;
}
