/* dsq-command: generate | generate text with a V4 checkpoint (greedy or Gumbel-max sampling), streaming tokens */
/* `dsq generate MODEL --prompt TEXT [-n N] [--chat]`: tokenizes the prompt (raw, after BOS, or in the
 * V4 chat format), then prints each new token as it comes (lib/eval/dsq_score.h). */
#include <stdlib.h>
#include <string.h>

#include "eval_metrics.h"

static void help(void) {
    printf("usage: dsq generate MODEL --prompt TEXT [options]\n\n"
           "Prefills the prompt and generates one token at a time, printing each as it comes.  Without\n"
           "--chat the prompt is BOS + the text; with --chat it is rendered in the V4 chat format (BOS,\n"
           "<｜User｜> text, <｜Assistant｜></think>; --thinking ends with <think> instead).  Greedy by default;\n"
           "--temperature T > 0 samples with Gumbel-max noise from --seed (reproducible).  Stops after -n\n"
           "tokens or at the end-of-sentence token.  Needs MODEL's tokenizer.json.\n"
           "  -n N                   new tokens at most (default 64)\n"
           "  --chat, --thinking     chat template (spec section 7)\n"
           "  --temperature T        sampling temperature (default 0: greedy; the reference CLI uses 0.6)\n"
           "  --seed S               sampling seed (default 0)\n"
           "  --ignore-eos           do not stop at the end-of-sentence token\n"
           "  --no-bos               without --chat: the prompt without the BOS token\n"
           "  --numerics exact|release, --device cpu|cuda[:N], --kv-cache f32|bf16|compact|fp4|int4|compact-idx8, --threads N, --scalar,\n"
           "  --no-shared-clamp, --no-verify-data, --allow-nonfinite        as for dsq eval\n"
           "  --json                 print {\"prompt_ids\", \"ids\", \"text\"} at the end instead of streaming\n");
}

typedef struct sink {
    const dsq_tok *tok;
    bool json;
    dsq_tok_ids ids;
    dsq_tok_text text;
} sink;

static dsq_status on_token(void *user, int32_t id, dsq_err *err) {
    sink *k = user;
    if (k->ids.n == k->ids.cap) {
        size_t cap = k->ids.cap ? 2 * k->ids.cap : 64;
        int32_t *v = dsq_realloc(k->ids.ids, cap * sizeof *v);
        DSQ_RETURN_IF(!v, err, DSQ_ERR_NOMEM, "out of memory");
        k->ids.ids = v;
        k->ids.cap = cap;
    }
    k->ids.ids[k->ids.n++] = id;
    size_t before = k->text.len;
    size_t plen;
    if (dsq_tok_piece(k->tok, id, &plen)) {
        dsq_tok_decode_options o = {.skip_special = true};
        DSQ_TRY(dsq_tok_decode(k->tok, &id, 1, &o, &k->text, err));
    } else { /* an id the tokenizer has no text for (embedding rows beyond the vocabulary) */
        char tag[32];
        int n = snprintf(tag, sizeof tag, "<id %d>", (int)id);
        DSQ_TRY(dsq_tok_text_append(&k->text, tag, (size_t)n, err));
    }
    if (!k->json) {
        fwrite(k->text.data + before, 1, k->text.len - before, stdout);
        fflush(stdout);
    }
    return DSQ_OK;
}

int dsq_cmd_generate(int argc, char **argv) {
    const char *me = "generate";
    if (dsq_cmd_wants_help(argc, argv)) {
        help();
        return DSQ_EXIT_OK;
    }
    dsq_score_options so;
    dsq_score_options_default(&so);
    dsq_generate_options g = {.n_new = 64};
    const char *model = NULL, *prompt = NULL;
    bool chat = false, thinking = false, json = false;
    dsq__cmd_score_table st;
    dsq__cmd_score_opts(&so, &st);
    dsq_opt opts[] = {
        DSQ_OPT_STR("--prompt", &prompt),
        DSQ_OPT_U32("-n", &g.n_new, 1, 1u << 20),
        DSQ_OPT_DOUBLE("--temperature", &g.temperature, 0, UINT64_MAX, 0),
        DSQ_OPT_U64("--seed", &g.seed, 0, UINT64_MAX),
        DSQ_OPT_FLAG("--chat", &chat),
        DSQ_OPT_FLAG("--thinking", &thinking),
        DSQ_OPT_FLAG("--ignore-eos", &g.ignore_eos),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_MORE(st.score),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = me, .opts = opts, .pos = &model, .max_pos = 1, .min_pos = 1, .missing = "missing MODEL",
                         .dash_is_option = true};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    chat = chat || thinking; /* --thinking is a chat template */
    if (!prompt) return dsq_cmd_usage_error(me, "missing --prompt TEXT");
    dsq_signals_install();
    dsq_err e = DSQ_ERR_INIT;
    dsq_v4_model *m = NULL;
    sink k = {.json = json};
    dsq_tok *tok = NULL;
    dsq_tok_ids ids = {0};
    dsq_tok_text rendered = {0};
    dsq_status s = dsq_v4_model_open_ex(model, &so.eval.load, &m, &e);
    if (s == DSQ_OK) s = dsq_tok_open(model, NULL, &tok, &e);
    k.tok = tok;
    if (s == DSQ_OK && chat) {
        dsq_chat_msg msg = {.role = DSQ_CHAT_ROLE_USER, .content = prompt};
        s = dsq_chat_render(&msg, 1, thinking ? DSQ_CHAT_MODE_THINKING : DSQ_CHAT_MODE_CHAT, true, &rendered, &e);
        if (s == DSQ_OK) s = dsq_tok_encode(tok, rendered.data, rendered.len, &ids, &e);
    } else if (s == DSQ_OK) {
        const dsq_v4_config *cfg = dsq_v4_model_config(m);
        dsq_tok_ids text = {0};
        s = dsq_tok_encode(tok, prompt, strlen(prompt), &text, &e);
        ids.cap = text.n + 1;
        ids.ids = s == DSQ_OK ? dsq_malloc(ids.cap * sizeof *ids.ids) : NULL;
        if (s == DSQ_OK && !ids.ids) s = dsq_err_set(&e, DSQ_ERR_NOMEM, "out of memory");
        if (s == DSQ_OK) {
            if (!so.no_bos) ids.ids[ids.n++] = (int32_t)cfg->bos_token_id;
            memcpy(ids.ids + ids.n, text.ids, text.n * sizeof *ids.ids);
            ids.n += text.n;
        }
        dsq_tok_ids_free(&text);
    }
    if (s == DSQ_OK) s = dsq_score_generate(m, &so.eval, ids.ids, ids.n, &g, on_token, &k, &e);
    if (s == DSQ_OK || s == DSQ_ERR_INTERRUPTED) {
        if (json) {
            printf("{\"prompt_ids\": [");
            for (size_t i = 0; i < ids.n; i++) printf("%s%d", i ? ", " : "", (int)ids.ids[i]);
            printf("], \"ids\": [");
            for (size_t i = 0; i < k.ids.n; i++) printf("%s%d", i ? ", " : "", (int)k.ids.ids[i]);
            printf("], \"text\": ");
            dsq_cmd_json_str(stdout, k.text.data ? k.text.data : "");
            printf("}\n");
        } else {
            printf("\n");
        }
    }
    dsq_tok_ids_free(&k.ids);
    dsq_tok_text_free(&k.text);
    dsq_tok_ids_free(&ids);
    dsq_tok_text_free(&rendered);
    dsq_tok_free(tok);
    dsq_v4_model_close(m);
    if (s != DSQ_OK) return dsq_cmd_exit(me, s, &e);
    return DSQ_EXIT_OK;
}
