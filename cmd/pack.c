/* dsq-command: pack | compress a .dsq into a .dsqz (one zstd frame per tensor) */

#include "cmd.h"
#include "dsq_container.h"

static void help(void) {
    printf("usage: dsq pack FILE.dsq OUT.dsqz [--level N] [--threads N] [--overwrite] [--json]\n\n"
           "Compresses a .dsq container for transport: every tensor becomes its own zstd frame, so\n"
           "`dsq unpack --tensor NAME` can restore any tensor alone.  The output is written atomically.\n\n"
           "  --level N     zstd level 1..19 (default 3)\n"
           "  --threads N   zstd worker threads (default 0: compress on the calling thread)\n"
           "  --overwrite   replace OUT.dsqz if it exists\n"
           "  --json        print the sizes as one JSON object\n");
}

int dsq_cmd_pack(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    const char *pos[2] = {NULL, NULL};
    int level = 3, threads = 0;
    bool overwrite = false, json = false;
    dsq_opt opts[] = {
        DSQ_OPT_INT("--level", &level, 1, 19),
        DSQ_OPT_INT("--threads", &threads, 0, 64),
        DSQ_OPT_FLAG("--overwrite", &overwrite),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = "pack", .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 2,
                         .missing = "need FILE.dsq and OUT.dsqz"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_pack_stats st = {0};
    if (dsq_ctr_pack(pos[0], pos[1], level, threads, overwrite, &st, &err) != DSQ_OK) return dsq_cmd_fail("pack", &err);
    double saved = st.dsq_bytes ? 100.0 * (1.0 - (double)st.dsqz_bytes / (double)st.dsq_bytes) : 0;
    if (json)
        printf("{\"dsq_bytes\": %llu, \"dsqz_bytes\": %llu, \"frames\": %llu, \"saved_percent\": %.3f}\n",
               (unsigned long long)st.dsq_bytes, (unsigned long long)st.dsqz_bytes, (unsigned long long)st.frames, saved);
    else
        printf("%s: %llu -> %llu bytes (%.2f%% saved), %llu frames\n", pos[1], (unsigned long long)st.dsq_bytes,
               (unsigned long long)st.dsqz_bytes, saved, (unsigned long long)st.frames);
    return DSQ_EXIT_OK;
}
