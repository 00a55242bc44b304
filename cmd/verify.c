/* dsq-command: verify | check a .dsq container's checksums and metadata (or a GGUF), optionally against its source */
#include <string.h>

#include "cmd.h"
#include "dsq_convert.h"
#include "dsq_gguf_export.h"
#include "dsq_inventory.h"
#include "dsq_wsrc.h"

static void help(void) {
    printf("usage: dsq verify FILE.dsq|FILE.gguf [--source SRC] [--no-mmap] [--allow-nonfinite] [--json]\n\n"
           "Validates the container structure, recomputes every tensor checksum (XXH3-64) and checks the\n"
           "padding bytes, NaN/Inf codes and scales (--allow-nonfinite: accepted), the metadata (model.config\n"
           "as inspect and eval read it, files.config.json agreeing with it, KV-cache declaration), the\n"
           "tensor inventory its sources describe, and stored names against their source records.  With --source, also checks that every checkpoint tensor is held, that unchanged\n"
           "tensors are byte-identical to the checkpoint and that the checkpoint did not change since the\n"
           "conversion, and reports per family the error of re-encoded tensors (relative RMS, max abs,\n"
           "cosine).  Exit status 1 when any problem is found (each printed on one line).\n"
           "A GGUF (split sets: the first file) is validated by the hardened reader, every checkpoint tensor it\n"
           "maps is decoded (finite, right shape, a type dsq reads), and with --source each is compared with\n"
           "the source's values (relative RMS, max abs, cosine per family; identical counts).\n");
}

static int verify_gguf(const char *path, const char *source, bool json) {
    dsq_err err = DSQ_ERR_INIT;
    dsq_gguf_verify_report r;
    dsq_status s = dsq_gguf_verify(path, source, &r, &err);
    if (json) {
        printf("{\"file\": ");
        dsq_cmd_json_str(stdout, path);
        printf(", \"format\": \"gguf\", \"ok\": %s, \"problems\": %zu, \"files\": %u, \"tensors\": %llu, \"bytes\": %llu, "
               "\"checked\": %llu",
               s == DSQ_OK ? "true" : "false", err.n, r.files, (unsigned long long)r.tensors, (unsigned long long)r.bytes,
               (unsigned long long)r.checked);
        if (r.source_checked) {
            printf(", \"source\": {\"compared\": %llu, \"identical\": %llu, \"worst_rel_rms\": %.9g, \"worst\": ",
                   (unsigned long long)r.compared, (unsigned long long)r.identical, r.worst_rel_rms);
            dsq_cmd_json_str(stdout, r.worst);
            printf("}");
        }
        printf(", \"families\": [");
        bool first = true;
        for (int k = 0; k < DSQ_FAMILY_COUNT; k++) {
            const dsq_gguf_verify_family *f = &r.family[k];
            if (!f->tensors && !f->compared) continue;
            printf("%s{\"family\": \"%s\", \"tensors\": %llu", first ? "" : ", ", dsq_family_name((dsq_family)k),
                   (unsigned long long)f->tensors);
            if (r.source_checked)
                printf(", \"compared\": %llu, \"identical\": %llu, \"max_rel_rms\": %.9g, \"max_abs\": %.9g, \"min_cosine\": %.9g",
                       (unsigned long long)f->compared, (unsigned long long)f->identical, f->max_rel_rms, f->max_abs,
                       f->min_cosine);
            printf("}");
            first = false;
        }
        printf("]}\n");
    } else {
        printf("%s: GGUF, %u file(s), %llu tensors, %llu bytes; %llu checkpoint tensors decoded\n", path, r.files,
               (unsigned long long)r.tensors, (unsigned long long)r.bytes, (unsigned long long)r.checked);
        if (r.source_checked) {
            printf("source %s: %llu compared, %llu identical; worst relative RMS %.3g (%s)\n", source,
                   (unsigned long long)r.compared, (unsigned long long)r.identical, r.worst_rel_rms, r.worst);
            for (int k = 0; k < DSQ_FAMILY_COUNT; k++) {
                const dsq_gguf_verify_family *f = &r.family[k];
                if (!f->compared) continue;
                printf("  %-16s %5llu compared, %5llu identical, max rel RMS %.3g, max |err| %.3g, min cosine %.9f\n",
                       dsq_family_name((dsq_family)k), (unsigned long long)f->compared, (unsigned long long)f->identical,
                       f->max_rel_rms, f->max_abs, f->min_cosine);
            }
        }
    }
    if (s != DSQ_OK) return dsq_cmd_fail("verify", &err);
    dsq_err_clear(&err);
    return DSQ_EXIT_OK;
}

static void print_json(const char *path, const dsq_verify_report *r, bool ok, size_t problems) {
    printf("{\"file\": ");
    dsq_cmd_json_str(stdout, path);
    printf(", \"ok\": %s, \"problems\": %zu, \"tensors\": %llu, \"parts\": %llu, \"bytes\": %llu, \"file_bytes\": %llu, "
           "\"checksums_ok\": %s, \"values_ok\": %s, \"names_ok\": %s, \"metadata_ok\": %s",
           ok ? "true" : "false", problems, (unsigned long long)r->tensors, (unsigned long long)r->parts,
           (unsigned long long)r->bytes, (unsigned long long)r->file_bytes, r->checksums_ok ? "true" : "false",
           r->values_ok ? "true" : "false", r->names_ok ? "true" : "false", r->metadata_ok ? "true" : "false");
    if (r->source_checked) {
        printf(", \"source\": {\"sources\": %llu, \"identical\": %llu, \"reencoded\": %llu, \"changed\": %llu, "
               "\"missing\": %llu, \"worst_rel_rms\": %.9g, \"worst\": ",
               (unsigned long long)r->sources, (unsigned long long)r->sources_identical,
               (unsigned long long)r->sources_reencoded, (unsigned long long)r->sources_changed,
               (unsigned long long)r->checkpoint_missing, r->worst_rel_rms);
        dsq_cmd_json_str(stdout, r->worst_name);
        printf("}");
    }
    printf(", \"families\": [");
    bool first = true;
    for (int k = 0; k < DSQ_VERIFY_FAMILIES && k < DSQ_FAMILY_COUNT; k++) {
        const dsq_verify_family *f = &r->family[k];
        if (!f->tensors && !f->sources) continue;
        printf("%s{\"family\": \"%s\", \"tensors\": %llu, \"encodings\": \"%s\"", first ? "" : ", ",
               dsq_family_name((dsq_family)k), (unsigned long long)f->tensors, f->encodings);
        if (r->source_checked)
            printf(", \"sources\": %llu, \"identical\": %llu, \"reencoded\": %llu, \"max_rel_rms\": %.9g, \"max_abs\": %.9g, "
                   "\"min_cosine\": %.9g",
                   (unsigned long long)f->sources, (unsigned long long)f->identical, (unsigned long long)f->reencoded,
                   f->max_rel_rms, f->max_abs, f->reencoded ? f->min_cosine : 1.0);
        printf("}");
        first = false;
    }
    printf("]}\n");
}

int dsq_cmd_verify(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    const char *path = NULL, *source = NULL;
    bool json = false, no_mmap = false, nonfinite = false;
    dsq_opt opts[] = {
        DSQ_OPT_STR("--source", &source),
        DSQ_OPT_FLAG("--no-mmap", &no_mmap),
        DSQ_OPT_FLAG("--allow-nonfinite", &nonfinite),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = "verify", .opts = opts, .pos = &path, .max_pos = 1, .min_pos = 1, .missing = "need FILE.dsq"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    if (dsq_wsrc_sniff_gguf(path)) return verify_gguf(path, source, json);
    dsq_err err = DSQ_ERR_INIT;
    dsq_verify_report rep;
    dsq_verify_options o = {.path = path, .source = source, .no_mmap = no_mmap, .progress = true,
                            .allow_nonfinite = nonfinite};
    dsq_status s = dsq_convert_verify(&o, &rep, &err);
    size_t problems = err.n;
    if (json) print_json(path, &rep, s == DSQ_OK, problems);
    else if (rep.tensors) {
        printf("%s: %llu tensors, %llu parts, %llu bytes; checksums %s; values %s; names %s; metadata %s\n", path,
               (unsigned long long)rep.tensors, (unsigned long long)rep.parts, (unsigned long long)rep.bytes,
               rep.checksums_ok ? "ok" : "BAD", rep.values_ok ? "ok" : "BAD (NaN/Inf)", rep.names_ok ? "ok" : "BAD",
               rep.metadata_ok ? "ok" : "BAD");
        if (rep.source_checked) {
            printf("source %s: %llu tensors, %llu identical, %llu re-encoded, %llu changed, %llu missing\n", source,
                   (unsigned long long)rep.sources, (unsigned long long)rep.sources_identical,
                   (unsigned long long)rep.sources_reencoded, (unsigned long long)rep.sources_changed,
                   (unsigned long long)rep.checkpoint_missing);
            printf("%-24s %-24s %8s %10s %10s %12s %12s %10s\n", "family", "encodings", "tensors", "identical", "reencoded",
                   "max rel rms", "max abs", "min cos");
            for (int k = 0; k < DSQ_VERIFY_FAMILIES && k < DSQ_FAMILY_COUNT; k++) {
                const dsq_verify_family *f = &rep.family[k];
                if (!f->sources) continue;
                printf("%-24s %-24s %8llu %10llu %10llu %12.4g %12.4g %10.6f\n", dsq_family_name((dsq_family)k),
                       f->encodings, (unsigned long long)f->sources, (unsigned long long)f->identical,
                       (unsigned long long)f->reencoded, f->max_rel_rms, f->max_abs, f->reencoded ? f->min_cosine : 1.0);
            }
        }
    }
    if (s != DSQ_OK) return dsq_cmd_fail("verify", &err);
    return DSQ_EXIT_OK;
}
