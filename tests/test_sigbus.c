/* A mapped input truncated under dsq (SIGBUS): dsq_map_lookup names the file and offset of a
 * mapped address, and the handler of dsq_sigbus_install reports it instead of a crash.  The CLI's
 * one-line error is checked end to end by tests/faults/run-faults.sh (make test-faults). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsq_core.h"
#include "dsq_test.h"



static char *make_file(const char *name, size_t n) {
    char *p = dsq_test_join(dsq_test_tmp, name);
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 7);
    dsq_test_write(p, b, n);
    free(b);
    return p;
}

static void test_lookup_names_file_and_offset(void **state) {
    char *p = make_file("a.bin", 3 * 4096);
    dsq_map m;
    dsq_err err = DSQ_ERR_INIT;
    assert_int_equal(dsq_map_open(p, true, &m, &err), DSQ_OK);
    const char *path = NULL;
    uint64_t off = 0;
    assert_true(dsq_map_lookup(m.data + 5000, &path, &off));
    assert_string_equal(path, p);
    assert_int_equal(off, 5000);
    assert_false(dsq_map_lookup(m.data + m.size, &path, &off)); /* one past the end */
    assert_false(dsq_map_lookup(&m, &path, &off));              /* not a mapping */
    const uint8_t *base = m.data;
    dsq_map_close(&m);
    assert_false(dsq_map_lookup(base + 10, &path, &off)); /* closed: forgotten */
    free(p);
}

static int pipe_fd = -1;
static void on_fault(const char *path, uint64_t offset) {
    char line[600];
    size_t n = strlen(path) < 500 ? strlen(path) : 500;
    memcpy(line, path, n);
    line[n++] = ' ';
    for (int s = 60; s >= 0; s -= 4) line[n++] = "0123456789abcdef"[(offset >> s) & 15];
    ssize_t w = write(pipe_fd, line, n);
    (void)w;
    _exit(3);
}

static void test_truncated_mapping_is_reported(void **state) {
    char *p = make_file("b.bin", 4 * 4096);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* child: map, truncate under the mapping, touch a page past the new end */
        close(fds[0]);
        pipe_fd = fds[1];
        dsq_sigbus_install(on_fault);
        dsq_map m;
        if (dsq_map_open(p, true, &m, NULL) != DSQ_OK || truncate(p, 4096) != 0) _exit(2);
        volatile uint8_t x = m.data[3 * 4096 + 17];
        (void)x;
        _exit(0); /* the read did not fault */
    }
    close(fds[1]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    char buf[700] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    assert_false(WIFSIGNALED(status)); /* before dsq_sigbus_install: killed by SIGBUS */
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    assert_true(n > 0);
    char want[600];
    snprintf(want, sizeof want, "%s %016llx", p, (unsigned long long)(3 * 4096 + 17));
    assert_string_equal(buf, want);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_names_file_and_offset),
        cmocka_unit_test(test_truncated_mapping_is_reported),
    };
    return cmocka_run_group_tests_name("sigbus", tests, dsq_test_tmp_setup, dsq_test_tmp_teardown);
}
