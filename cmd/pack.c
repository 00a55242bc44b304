/* dsq-command: pack | compress a .dsq into a .dsqz (one zstd frame per tensor) */
#include <stdlib.h>
#include <string.h>

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
    int npos = 0, level = 3, threads = 0;
    bool overwrite = false, json = false;
    for (int i = 1; i < argc; i++) {
        uint64_t v;
        if (!strcmp(argv[i], "--overwrite")) overwrite = true;
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--level") || !strcmp(argv[i], "--threads")) {
            if (i + 1 >= argc || !dsq_cmd_parse_u64(argv[i + 1], &v) || v > 64)
                return dsq_cmd_usage_error("pack", "%s needs a small number", argv[i]);
            if (!strcmp(argv[i], "--level")) {
                if (v < 1 || v > 19) return dsq_cmd_usage_error("pack", "--level must be 1..19");
                level = (int)v;
            } else {
                threads = (int)v;
            }
            i++;
        } else if (argv[i][0] == '-' && argv[i][1]) return dsq_cmd_usage_error("pack", "unknown option '%s'", argv[i]);
        else if (npos < 2) pos[npos++] = argv[i];
        else return dsq_cmd_usage_error("pack", "unexpected argument '%s'", argv[i]);
    }
    if (npos != 2) return dsq_cmd_usage_error("pack", "need FILE.dsq and OUT.dsqz");
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
