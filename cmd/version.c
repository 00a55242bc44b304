/* dsq-command: version | print the tool version */
#include <string.h>

#include "cmd.h"

int dsq_cmd_version(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        printf("usage: dsq version\n\nPrints the dsq version.\n");
        return DSQ_EXIT_OK;
    }
    if (argc > 1) return dsq_cmd_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("dsq %s\n", DSQ_VERSION_STRING);
    return DSQ_EXIT_OK;
}
