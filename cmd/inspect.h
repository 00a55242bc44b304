/* `dsq inspect` on a .dsq container (cmd/inspect_dsq.c), called by cmd/inspect.c. */
#ifndef DSQ_CMD_INSPECT_H
#define DSQ_CMD_INSPECT_H

#include <stdbool.h>

/* Returns the command's exit status. */
int dsq__inspect_dsq(const char *path, bool json, bool list, bool check);

#endif
