#include "dsq_tmp.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *dsq_tmp_create(const char *root, const char *tag) {
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/dsq-%s-XXXXXX", root && *root ? root : "/tmp", tag);
    if (n < 0 || (size_t)n >= sizeof path) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    if (!mkdtemp(path)) return NULL;
    return strdup(path);
}

static int remove_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)ftw;
    int r = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (r != 0) fprintf(stderr, "warning: cannot remove %s: %s\n", path, strerror(errno));
    return 0; /* go on: remove what can be removed */
}

int dsq_tmp_remove(const char *dir) {
    size_t n = dir ? strlen(dir) : 0;
    if (!n || dir[0] != '/' || strstr(dir, "/../") || (n >= 3 && !strcmp(dir + n - 3, "/..")) ||
        !strstr(dir, "/dsq-")) {
        errno = EINVAL;
        return -1;
    }
    if (access(dir, F_OK) != 0) return errno == ENOENT ? 0 : -1;
    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    return access(dir, F_OK) == 0 ? -1 : 0;
}
