/* The CUDA kernels live in a plugin, $(BUILD)/libdsq_cuda.so (the kernels/ sources linked with cudart and
 * cuBLAS), loaded with dlopen the first time a dsq_cuda_* function is called.  Linking cuBLAS into
 * every dsq binary cost ~1.5 s and ~200 MB of start-up per process (measured: `dsq version` 1.3-1.7 s,
 * 220 MB RSS) for commands that never touch a GPU; now only `--device cuda` pays it.
 *
 * The plugin is looked for at $DSQ_CUDA_LIB, then beside the executable (and one folder up, for the
 * test and bench binaries under build/), then at the path it was built to (DSQ_CUDA_PLUGIN).  When it
 * cannot be loaded every entry fails with one line saying why (functions without a message do
 * nothing).  The wrappers keep the names and signatures of kernels/dsq_cuda.h, so callers are unchanged;
 * the plugin is linked with -Bsymbolic, so its own calls never bind to these wrappers. */
#ifdef DSQ_HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsq_cuda.h"

#ifndef DSQ_CUDA_PLUGIN
#define DSQ_CUDA_PLUGIN "libdsq_cuda.so"
#endif

/* X(return type, name, parameters, arguments): the entries of dsq_cuda.h that return a status. */
#define DSQ_CUDA_STATUS_FNS(X)                                                                                    \
    X(dsq_cuda_device_count, (int *count, char *msg, size_t cap), (count, msg, cap))                            \
    X(dsq_cuda_open, (int index, dsq_cuda **out, char *name, char *msg, size_t cap), (index, out, name, msg, cap)) \
    X(dsq_cuda_mem_info, (dsq_cuda * c, uint64_t *free_bytes, uint64_t *total_bytes, char *msg, size_t cap),     \
      (c, free_bytes, total_bytes, msg, cap))                                                                     \
    X(dsq_cuda_weight_upload, (dsq_cuda * c, const dsq_cuda_wdesc *d, dsq_cuda_weight **out, char *msg, size_t cap), \
      (c, d, out, msg, cap))                                                                                      \
    X(dsq_cuda_linear,                                                                                            \
      (dsq_cuda * c, const dsq_cuda_weight *w, uint64_t row0, uint64_t n_rows, const float *x, size_t ldx,        \
       int64_t n, float *y, size_t ldy, char *msg, size_t cap),                                                   \
      (c, w, row0, n_rows, x, ldx, n, y, ldy, msg, cap))                                                          \
    X(dsq_cuda_fp8_linear,                                                                                        \
      (dsq_cuda * c, const dsq_cuda_weight *w, uint64_t row0, uint64_t n_rows, const float *q, const float *sa,   \
       int64_t n, float *y, size_t ldy, char *msg, size_t cap),                                                   \
      (c, w, row0, n_rows, q, sa, n, y, ldy, msg, cap))                                                           \
    X(dsq_cuda_bench_copy, (dsq_cuda * c, uint64_t bytes, int iters, double *seconds, char *msg, size_t cap),    \
      (c, bytes, iters, seconds, msg, cap))                                                                       \
    X(dsq_cuda_bench_h2d, (dsq_cuda * c, uint64_t bytes, int iters, double *seconds, char *msg, size_t cap),     \
      (c, bytes, iters, seconds, msg, cap))                                                                       \
    X(dsq_cuda_bench_gemm_bf16,                                                                                   \
      (dsq_cuda * c, int m, int n, int k, int iters, double *seconds, char *msg, size_t cap),                     \
      (c, m, n, k, iters, seconds, msg, cap))                                                                     \
    X(dsq_cuda_bench_gemv,                                                                                        \
      (dsq_cuda * c, const dsq_cuda_weight *w, int iters, double *seconds, char *msg, size_t cap),                \
      (c, w, iters, seconds, msg, cap))

static struct {
#define FIELD(name, params, args) int(*name) params;
    DSQ_CUDA_STATUS_FNS(FIELD)
#undef FIELD
    void (*dsq_cuda_close)(dsq_cuda *c);
    void (*dsq_cuda_weight_free)(dsq_cuda_weight *w);
    uint64_t (*dsq_cuda_weight_bytes)(const dsq_cuda_weight *w);
    bool ok;
    char why[512]; /* why the plugin could not be loaded */
} P;
static pthread_once_t P_once = PTHREAD_ONCE_INIT;

static void *try_open(const char *path, char *why, size_t cap) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h && !why[0]) snprintf(why, cap, "%s", dlerror());
    return h;
}

static void load(void) {
    char why[sizeof P.why] = "";
    void *h = NULL;
    const char *env = getenv("DSQ_CUDA_LIB");
    if (env && *env) h = try_open(env, why, sizeof why);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (!h && n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            char path[PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/libdsq_cuda.so", exe);
            if (!access(path, F_OK)) h = try_open(path, why, sizeof why);
            snprintf(path, sizeof path, "%s/../libdsq_cuda.so", exe);
            if (!h && !access(path, F_OK)) h = try_open(path, why, sizeof why);
        }
    }
    if (!h) h = try_open(DSQ_CUDA_PLUGIN, why, sizeof why);
    if (!h) {
        snprintf(P.why, sizeof P.why, "the CUDA plugin libdsq_cuda.so could not be loaded (%s)", why);
        return;
    }
#define SYM(name)                                                                                    \
    do {                                                                                             \
        *(void **)&P.name = dlsym(h, #name);                                                         \
        if (!P.name) {                                                                               \
            snprintf(P.why, sizeof P.why, "the CUDA plugin lacks %s (built from other sources?)", #name); \
            return;                                                                                  \
        }                                                                                            \
    } while (0)
#define SYM_FN(name, params, args) SYM(name);
    DSQ_CUDA_STATUS_FNS(SYM_FN)
#undef SYM_FN
    SYM(dsq_cuda_close);
    SYM(dsq_cuda_weight_free);
    SYM(dsq_cuda_weight_bytes);
#undef SYM
    P.ok = true; /* the handle stays open for the life of the process */
}

static bool loaded(void) {
    pthread_once(&P_once, load);
    return P.ok;
}

#define WRAP(name, params, args)                                         \
    int name params {                                                    \
        if (loaded()) return P.name args;                                \
        if (msg && cap) snprintf(msg, cap, "%s", P.why);                 \
        return 1;                                                        \
    }
DSQ_CUDA_STATUS_FNS(WRAP)
#undef WRAP

void dsq_cuda_close(dsq_cuda *c) {
    if (c && loaded()) P.dsq_cuda_close(c);
}
void dsq_cuda_weight_free(dsq_cuda_weight *w) {
    if (w && loaded()) P.dsq_cuda_weight_free(w);
}
uint64_t dsq_cuda_weight_bytes(const dsq_cuda_weight *w) { return w && loaded() ? P.dsq_cuda_weight_bytes(w) : 0; }
#else
typedef int dsq__cuda_plugin_unused; /* built without CUDA: backend_cuda.c refuses --device cuda */
#endif
