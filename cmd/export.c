/* dsq-command: export | write a .dsq container back as a Hugging Face safetensors checkpoint, or as a llama.cpp GGUF */
#include <string.h>

#include "cmd.h"
#include "gguf_out.h"
#include "dsq_container.h"
#include "dsq_convert.h"

static void help(void) {
    printf("usage: dsq export FILE.dsq OUTDIR [--format safetensors|modelopt-nvfp4]\n"
           "                  [--shard-size SIZE] [--overwrite]\n"
           "                  [--allow-nonfinite] [--json]\n"
           "       dsq export FILE.dsq OUT.gguf [--recipe NAME] ...   (llama.cpp GGUF; dsq export x.gguf --help)\n\n"
           "Writes every checkpoint tensor the container holds back under its own name (stacked experts\n"
           "and fused wkv|wgate split again), with config.json, generation_config.json and the tokenizer\n"
           "files from the metadata.  Tensors converted with the release recipe come back byte for byte;\n"
           "FP8 experts (recipe fp8) as F8_E4M3 + F8_E8M0 scales with expert_dtype \"fp8\"; other encodings\n"
           "as codes + .scale/.min/.tensor_scale tensors described in quantization_config.dsq and each\n"
           "shard's __metadata__.  Shards of at most SIZE (default 5G) with model.safetensors.index.json,\n"
           "or one model.safetensors.  Every shard is read back and checked before the command succeeds.\n"
           "NaN/Inf codes or scales stop the export (--allow-nonfinite writes them).\n"
           "--format modelopt-nvfp4: NVIDIA ModelOpt's NVFP4 layout (TensorRT-LLM, vLLM, SGLang) for a\n"
           "container whose routed experts are NVFP4 (recipe nvfp4): STEM.weight U8, STEM.weight_scale\n"
           "F8_E4M3, STEM.weight_scale_2 and STEM.input_scale F32, and hf_quant_config.json; every other\n"
           "tensor must be in its release form (docs/modelopt-nvfp4.md).\n");
}

int dsq_cmd_export(int argc, char **argv) {
    for (int i = 1; i < argc; i++) /* an OUT.gguf output: the GGUF writer's own options */
        if (argv[i][0] != '-' && dsq_cmd_is_gguf_path(argv[i])) {
            if (dsq_cmd_wants_help(argc, argv)) {
                dsq_cmd_gguf_help("export");
                return DSQ_EXIT_OK;
            }
            return dsq_cmd_gguf_out("export", argc, argv);
        }
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    const char *pos[2] = {NULL, NULL};
    dsq_ctr_export_options o = {.progress = true, .scan = dsq_convert_scan_piece};
    bool json = false, nonfinite = false;
    static const char *const formats[] = {"safetensors", "modelopt-nvfp4", NULL};
    int format = 0;
    dsq_opt opts[] = {
        DSQ_OPT_ENUM("--format", &format, formats),
        DSQ_OPT_SIZE("--shard-size", &o.shard_size, 1, UINT64_MAX),
        DSQ_OPT_FLAG("--overwrite", &o.overwrite),
        DSQ_OPT_FLAG("--allow-nonfinite", &nonfinite),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = "export", .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 2,
                         .missing = "need FILE.dsq and OUTDIR"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    o.modelopt_nvfp4 = format == 1;
    if (nonfinite) o.scan = NULL;
    dsq_nonfinite_scan scan = {pos[0], 0};
    o.scan_ctx = &scan;
    dsq_err err = DSQ_ERR_INIT;
    dsq_ctr_export_stats st;
    if (dsq_ctr_export_safetensors(pos[0], pos[1], &o, &st, &err) != DSQ_OK) return dsq_cmd_fail("export", &err);
    if (json)
        printf("{\"dir\": \"%s\", \"tensors\": %zu, \"shards\": %zu, \"files\": %zu, \"bytes\": %llu, \"config_verbatim\": %s}\n",
               pos[1], st.tensors, st.shards, st.files, (unsigned long long)st.bytes, st.verbatim_config ? "true" : "false");
    else
        printf("%s: %zu tensors in %zu shard(s), %llu bytes; config.json %s\n", pos[1], st.tensors, st.shards,
               (unsigned long long)st.bytes, st.verbatim_config ? "as in the source" : "adjusted to the stored encodings");
    return DSQ_EXIT_OK;
}
