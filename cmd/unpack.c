/* dsq-command: unpack | restore a .dsq (or some of its tensors) from a .dsqz */

#include "cmd.h"
#include "dsq_container.h"

static void help(void) {
    printf("usage: dsq unpack IN.dsqz OUT.dsq [--tensor NAME]... [--overwrite] [--json]\n\n"
           "Restores the .dsq container packed by `dsq pack`, byte for byte (every frame checksum and\n"
           "every tensor checksum is verified before OUT.dsq appears).  With --tensor (repeatable),\n"
           "writes a .dsq holding only the named tensors (stored names or checkpoint source names),\n"
           "with the same metadata and identical tensor bytes, decompressing only their frames.\n\n"
           "  --overwrite   replace OUT.dsq if it exists\n"
           "  --json        print the sizes as one JSON object\n");
}

int dsq_cmd_unpack(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    const char *pos[2] = {NULL, NULL};
    bool overwrite = false, json = false;
    dsq_opt_list tensors = {0};
    dsq_opt opts[] = {
        DSQ_OPT_LIST("--tensor", &tensors),
        DSQ_OPT_FLAG("--overwrite", &overwrite),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = "unpack", .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 2,
                         .missing = "need IN.dsqz and OUT.dsq"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    size_t n_names = tensors.n;
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_pack_stats st = {0};
    dsq_status s = dsq_ctr_unpack(pos[0], pos[1], tensors.v, n_names, overwrite, &st, &err);
    dsq_opt_list_free(&tensors);
    if (s != DSQ_OK) return dsq_cmd_fail("unpack", &err);
    if (json)
        printf("{\"dsq_bytes\": %llu, \"dsqz_bytes\": %llu, \"frames\": %llu, \"tensors\": %zu}\n",
               (unsigned long long)st.dsq_bytes, (unsigned long long)st.dsqz_bytes, (unsigned long long)st.frames,
               n_names);
    else if (n_names)
        printf("%s: %zu tensor(s) restored\n", pos[1], n_names);
    else
        printf("%s: %llu bytes restored from %llu frames\n", pos[1], (unsigned long long)st.dsq_bytes,
               (unsigned long long)st.frames);
    return DSQ_EXIT_OK;
}
