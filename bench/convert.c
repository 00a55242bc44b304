/* bench/convert: `dsq convert` against a plain copy of the same checkpoint, as ratios.
 *
 * Model: $DSQ_BENCH_DIR (default /tmp/dsq-bench-flash-2l: two real-shaped V4-Flash layers, ~12.8 GB),
 * synthesized with `dsq synth --config samples/configs/deepseek-v4-flash.json --layers 2` when missing.
 * Outputs go to $DSQ_BENCH_OUT (default /tmp/dsq-bench-convert) and are deleted after each run.
 * $DSQ_BENCH_RECIPES (default "release fp8 int4 gguf-bf16-mxfp4 gguf-mxfp4-moe
 * gguf-q8_0 gguf-q4_k-moe") selects the recipes (NAME+buffered: with --buffered-io instead of the
 * default O_DIRECT output; a gguf-* recipe writes OUT.gguf through `dsq convert SRC OUT.gguf`),
 * NAME+imatrix with --imatrix $DSQ_BENCH_IMATRIX (k-quant recipes weight their fit by it; make one with
 * `dsq calibrate MODEL TEXT --out FILE`), $DSQ_BENCH_THREADS (default 2) the threads.
 *
 * Baselines: "the time to read the source and write the same number of bytes".  `copy` is a plain
 * copy of every file of the checkpoint (16 MiB reads and writes, fdatasync); a recipe's output can be
 * larger or smaller than its source (fp8 ~1.5x: routed experts FP4 → FP8), so after each conversion
 * `copy=out` reads the whole source again and writes exactly as many bytes as that recipe's output
 * (fdatasync), the least any converter producing that output must do.  Each conversion runs as a child
 * process; its wall time, its output size, the seconds of both baselines, both ratios and its peak RSS
 * (ru_maxrss) are printed.  Each recipe runs $DSQ_BENCH_REPS times (default 2), each run followed by its
 * copy=out sample; the table shows the means and the ratio of the means.  Targets (on the ratio to copy=out): release ≤ 1.25x, fp8 ≤ 1.25x,
 * gguf-bf16-mxfp4 ≤ 1.25x (no re-quantization: FP8 → BF16 exact, experts reordered), re-quantizing
 * recipes (int4, gguf-mxfp4-moe, gguf-q8_0, gguf-q4_k-moe) ≤ 2x, with 2 threads; peak RSS < 2 GiB.  The source is read once before the copy so both sides
 * start from the same page-cache state. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dsq_core.h"

#define CHUNK (16u << 20)

static int run(const char *const *argv, double *seconds, long *maxrss_kb) {
    fflush(stdout); /* a buffered line must not be inherited by the child */
    double t0 = dsq_now();
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) return -1;
    *seconds = dsq_now() - t0;
    if (maxrss_kb) *maxrss_kb = ru.ru_maxrss;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Copy (or just read, when dst_dir is NULL) every regular file of src_dir. */
static int copy_dir(const char *src_dir, const char *dst_dir, uint64_t *bytes) {
    DIR *d = opendir(src_dir);
    if (!d) return -1;
    char *buf = malloc(CHUNK);
    struct dirent *e;
    int rc = 0;
    *bytes = 0;
    while (rc == 0 && buf && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sp[8192], dp[8192];
        snprintf(sp, sizeof sp, "%s/%s", src_dir, e->d_name);
        int in = open(sp, O_RDONLY), out = -1;
        if (in < 0) continue;
        if (dst_dir) {
            snprintf(dp, sizeof dp, "%s/%s", dst_dir, e->d_name);
            out = open(dp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (out < 0) rc = -1;
        }
        ssize_t n;
        while (rc == 0 && (n = read(in, buf, CHUNK)) > 0) {
            *bytes += (uint64_t)n;
            if (out >= 0 && write(out, buf, (size_t)n) != n) rc = -1;
        }
        if (out >= 0 && (fdatasync(out) != 0 || close(out) != 0)) rc = -1;
        close(in);
    }
    free(buf);
    closedir(d);
    return rc;
}

/* Read every regular file of src_dir and write `out_bytes` bytes to dst (spread in proportion to the
 * bytes read, repeating a chunk when the output is larger than the source), then fdatasync. */
static int copy_sized(const char *src_dir, uint64_t src_bytes, const char *dst, uint64_t out_bytes) {
    DIR *d = opendir(src_dir);
    if (!d) return -1;
    char *buf = malloc(CHUNK);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644), rc = buf && out >= 0 ? 0 : -1;
    uint64_t read_total = 0, written = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sp[8192];
        snprintf(sp, sizeof sp, "%s/%s", src_dir, e->d_name);
        int in = open(sp, O_RDONLY);
        if (in < 0) continue;
        ssize_t n;
        while (rc == 0 && (n = read(in, buf, CHUNK)) > 0) {
            read_total += (uint64_t)n;
            uint64_t goal = src_bytes ? (uint64_t)((double)out_bytes * (double)read_total / (double)src_bytes) : out_bytes;
            if (goal > out_bytes) goal = out_bytes;
            while (rc == 0 && written < goal) {
                size_t k = goal - written < (uint64_t)n ? (size_t)(goal - written) : (size_t)n;
                if (write(out, buf, k) != (ssize_t)k) rc = -1;
                written += k;
            }
        }
        close(in);
    }
    while (rc == 0 && buf && written < out_bytes) { /* rounding: the last few bytes */
        size_t k = out_bytes - written < CHUNK ? (size_t)(out_bytes - written) : CHUNK;
        if (write(out, buf, k) != (ssize_t)k) rc = -1;
        written += k;
    }
    if (out >= 0 && (fdatasync(out) != 0 || close(out) != 0)) rc = -1;
    free(buf);
    closedir(d);
    unlink(dst);
    return rc;
}

static void rm_dir_files(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
}

int main(void) {
    const char *bin = getenv("DSQ_BIN") ? getenv("DSQ_BIN") : "build/dsq";
    const char *model = getenv("DSQ_BENCH_DIR") ? getenv("DSQ_BENCH_DIR") : "/tmp/dsq-bench-flash-2l";
    const char *out = getenv("DSQ_BENCH_OUT") ? getenv("DSQ_BENCH_OUT") : "/tmp/dsq-bench-convert";
    const char *recipes = getenv("DSQ_BENCH_RECIPES") ? getenv("DSQ_BENCH_RECIPES")
                                                      : "release fp8 int4 gguf-bf16-mxfp4 gguf-mxfp4-moe gguf-q8_0 gguf-q4_k-moe";
    const char *threads = getenv("DSQ_BENCH_THREADS") ? getenv("DSQ_BENCH_THREADS") : "2";
    int reps = getenv("DSQ_BENCH_REPS") ? atoi(getenv("DSQ_BENCH_REPS")) : 2;
    if (reps < 1) reps = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model);
    if (!dsq_path_exists(path)) {
        printf("bench/convert: synthesizing %s (2 real-shaped V4-Flash layers)\n", model);
        const char *argv[] = {bin, "synth", "--config", "samples/configs/deepseek-v4-flash.json", "--layers", "2",
                              "--out", model, "--threads", threads, NULL};
        double t;
        if (run(argv, &t, NULL) != 0) {
            fprintf(stderr, "bench/convert: synth failed\n");
            return 1;
        }
    }
    mkdir(out, 0755);
    char copy_dir_path[4096];
    snprintf(copy_dir_path, sizeof copy_dir_path, "%s/copy", out);
    mkdir(copy_dir_path, 0755);
    uint64_t bytes = 0;
    copy_dir(model, NULL, &bytes); /* warm the page cache: both sides start alike */
    double t0 = dsq_now();
    if (copy_dir(model, copy_dir_path, &bytes) != 0) {
        fprintf(stderr, "bench/convert: copy failed: %s\n", strerror(errno));
        return 1;
    }
    double t_copy = dsq_now() - t0;
    rm_dir_files(copy_dir_path);
    rmdir(copy_dir_path);
    printf("checkpoint %s: %.2f GB\n", model, (double)bytes / 1e9);
    printf("%-8s %8s %8s %10s %10s %10s %10s %7s %12s\n", "run", "seconds", "out GB", "copy s", "copy=out s",
           "/copy", "/copy=out", "target", "peak RSS MiB");
    printf("%-8s %8.2f %8.2f %10.2f %10s %10.2f %10s %7s %12s\n", "copy", t_copy, (double)bytes / 1e9, t_copy, "-", 1.0,
           "-", "-", "-");
    char list[1024];
    snprintf(list, sizeof list, "%s", recipes);
    int fails = 0;
    for (char *r = strtok(list, " "); r; r = strtok(NULL, " ")) {
        char dst[4096];
        bool gguf = !strncmp(r, "gguf-", 5);
        snprintf(dst, sizeof dst, "%s/%s.%s", out, r, gguf ? "gguf" : "dsq");
        /* reps × (convert, then the same-bytes copy from the same page-cache state): the machine is
         * shared and disk-bound, so the ratio uses the sums of the alternating samples */
        double t_sum = 0, sized_sum = 0;
        long rss = 0;
        uint64_t out_bytes = 0;
        int rc = 0;
        /* "NAME+buffered": the recipe with --buffered-io; "NAME+imatrix": with --imatrix $DSQ_BENCH_IMATRIX
         * (modifiers combine: NAME+imatrix+buffered) */
        char recipe[64];
        snprintf(recipe, sizeof recipe, "%s", r);
        bool buffered = false, with_imx = false;
        for (char *plus = strrchr(recipe, '+'); plus; plus = strrchr(recipe, '+')) {
            buffered |= !strcmp(plus, "+buffered");
            with_imx |= !strcmp(plus, "+imatrix");
            *plus = 0;
        }
        const char *imx = getenv("DSQ_BENCH_IMATRIX");
        if (with_imx && (!imx || !*imx)) {
            fprintf(stderr, "bench/convert: %s needs DSQ_BENCH_IMATRIX (an imatrix of the model: dsq calibrate)\n", r);
            fails++;
            continue;
        }
        for (int rep = 0; rep < reps && rc == 0; rep++) {
            unlink(dst);
            const char *argv[12] = {bin, "convert", model, dst, "--recipe", recipe, "--threads", threads};
            int ac = 8;
            if (buffered) argv[ac++] = "--buffered-io";
            if (with_imx) argv[ac++] = "--imatrix", argv[ac++] = imx;
            argv[ac] = NULL;
            double t;
            long rss1 = 0;
            rc = run(argv, &t, &rss1);
            struct stat sb;
            out_bytes = rc == 0 && stat(dst, &sb) == 0 ? (uint64_t)sb.st_size : 0;
            unlink(dst);
            if (rss1 > rss) rss = rss1;
            char sized[4096];
            snprintf(sized, sizeof sized, "%s/copy-%s.bin", out, r);
            double t_sized = 0;
            if (out_bytes) {
                copy_dir(model, NULL, &bytes);
                double t1 = dsq_now();
                if (copy_sized(model, bytes, sized, out_bytes) != 0) {
                    fprintf(stderr, "bench/convert: sized copy failed: %s\n", strerror(errno));
                    rc = 1;
                }
                t_sized = dsq_now() - t1;
            }
            printf("  %s sample %d: convert %.2f s, copy=out %.2f s\n", r, rep + 1, t, t_sized);
            t_sum += t, sized_sum += t_sized;
        }
        double t = t_sum / reps, t_sized = sized_sum / reps;
        bool requant = !strcmp(recipe, "int4") || (gguf && strcmp(recipe, "gguf-bf16-mxfp4") != 0);
        double target = requant ? 2.0 : 1.25;
        printf("%-8s %8.2f %8.2f %10.2f %10.2f %10.2f %10.2f %6.2fx %12.0f%s\n", r, t, (double)out_bytes / 1e9, t_copy,
               t_sized, t / t_copy, t_sized > 0 ? t / t_sized : 0.0, target, (double)rss / 1024.0, rc ? "  FAILED" : "");
        fails += rc != 0;
    }
    rmdir(out);
    return fails ? 1 : 0;
}
