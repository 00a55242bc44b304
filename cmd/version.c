/* dsq-command: version | print the tool version */
#include "cmd.h"

int dsq_cmd_version(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        printf("usage: dsq version\n\nPrints the dsq version.\n");
        return DSQ_EXIT_OK;
    }
    dsq_opt opts[] = {DSQ_OPT_END};
    dsq_opt_spec spec = {.cmd = "version", .opts = opts};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    printf("dsq %s\n", DSQ_VERSION_STRING);
    return DSQ_EXIT_OK;
}
