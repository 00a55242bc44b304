/* dsq-command: unpack | restore a .dsq (or some of its tensors) from a .dsqz */
#include <stdlib.h>
#include <string.h>

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
    int npos = 0;
    bool overwrite = false, json = false;
    const char **names = dsq_calloc((size_t)argc, sizeof *names);
    size_t n_names = 0;
    if (!names) return DSQ_EXIT_FAIL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--overwrite")) overwrite = true;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--tensor")) {
            if (i + 1 >= argc) {
                dsq_free(names);
                return dsq_cmd_usage_error("unpack", "--tensor needs a name");
            }
            names[n_names++] = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            dsq_free(names);
            return dsq_cmd_usage_error("unpack", "unknown option '%s'", argv[i]);
        } else if (npos < 2) pos[npos++] = argv[i];
        else {
            dsq_free(names);
            return dsq_cmd_usage_error("unpack", "unexpected argument '%s'", argv[i]);
        }
    }
    if (npos != 2) {
        dsq_free(names);
        return dsq_cmd_usage_error("unpack", "need IN.dsqz and OUT.dsq");
    }
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_pack_stats st = {0};
    dsq_status s = dsq_ctr_unpack(pos[0], pos[1], names, n_names, overwrite, &st, &err);
    dsq_free(names);
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
