#include "dsq_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsq_tmp.h"

const char *dsq_test_shared(void) {
    const char *s = getenv("DSQ_SHARED");
    return s && *s ? s : "../shared";
}

char *dsq_test_shared_path(const char *rel) { return dsq_test_join(dsq_test_shared(), rel); }

const char *dsq_test_bin(void) {
    const char *s = getenv("DSQ_BIN");
    return s && *s ? s : "build/dsq";
}

int dsq_test_asan(void) { return getenv("DSQ_ASAN") != NULL; }

char *dsq_test_tmpdir(void) {
    char *d = dsq_tmp_create(NULL, "test");
    assert_non_null(d);
    return d;
}

void dsq_test_rmdir(const char *dir) {
    if (!dir) return;
    const char *keep = getenv("DSQ_TEST_KEEP_TMP"), *base = strrchr(dir, '/');
    if (keep && *keep && base && !strncmp(base, "/dsq-test-", 10)) { /* a suite's or test's own directory */
        fprintf(stderr, "kept %s (DSQ_TEST_KEEP_TMP)\n", dir);
        return;
    }
    if (dsq_tmp_remove(dir) != 0) fprintf(stderr, "warning: could not remove %s: %s\n", dir, strerror(errno));
}

char *dsq_test_tmp;

int dsq_test_tmp_setup(void **state) {
    (void)state;
    dsq_test_tmp = dsq_tmp_create(NULL, "test");
    return dsq_test_tmp ? 0 : -1;
}

int dsq_test_tmp_teardown(void **state) {
    (void)state;
    dsq_test_rmdir(dsq_test_tmp);
    free(dsq_test_tmp);
    dsq_test_tmp = NULL;
    return 0;
}

char *dsq_test_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void dsq_test_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

void dsq_test_write_raw_st(const char *path, const char *header_json, const void *data, size_t data_len) {
    size_t hl = strlen(header_json);
    size_t total = 8 + hl + data_len;
    uint8_t *buf = malloc(total ? total : 1);
    assert_non_null(buf);
    dsq_put_u64le(buf, hl);
    memcpy(buf + 8, header_json, hl);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    dsq_test_write(path, buf, total);
    free(buf);
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    for (;;) {
        if (n + 1024 > cap) {
            cap *= 2;
            b = realloc(b, cap);
            assert_non_null(b);
        }
        ssize_t r = read(fd, b + n, cap - n - 1);
        if (r <= 0) break;
        n += (size_t)r;
    }
    b[n] = 0;
    return b;
}

int dsq_test_run(char **out, char **errout, const char *fmt, ...) {
    char args[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "'%s' %s", dsq_test_bin(), args);
    char ofile[] = "/tmp/dsq-run-out-XXXXXX", efile[] = "/tmp/dsq-run-err-XXXXXX";
    int ofd = mkstemp(ofile), efd = mkstemp(efile);
    assert_true(ofd >= 0 && efd >= 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(ofd, 1);
        dup2(efd, 2);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    char *o = slurp_fd(ofd), *e = slurp_fd(efd);
    close(ofd);
    close(efd);
    unlink(ofile);
    unlink(efile);
    if (out) *out = o; else free(o);
    if (errout) *errout = e; else free(e);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

char *dsq_test_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}
