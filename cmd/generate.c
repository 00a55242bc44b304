/* dsq-command: generate | generate text with a V4 checkpoint (greedy or Gumbel-max sampling), streaming tokens */
/* `dsq generate MODEL --prompt TEXT [-n N] [--chat]`: tokenizes the prompt (raw, after BOS, or in the
 * V4 chat format), then prints each new token as it comes (lib/eval/dsq_score.h). */
#include <math.h>
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
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = dsq__cmd_score_option(me, argc, argv, &i, &so);
        if (r < 0) return DSQ_EXIT_USAGE;
        if (r > 0) continue;
        bool has_val = i + 1 < argc;
        uint64_t v;
        if (!strcmp(a, "--prompt") && has_val)
            prompt = argv[++i];
        else if (!strcmp(a, "-n") && has_val) {
            if (!dsq_cmd_parse_u64(argv[++i], &v) || v < 1 || v > (1u << 20))
                return dsq_cmd_usage_error(me, "-n needs a count ≥ 1, not '%s'", argv[i]);
            g.n_new = (uint32_t)v;
        } else if (!strcmp(a, "--temperature") && has_val) {
            char *end;
            g.temperature = strtod(argv[++i], &end);
            if (*end || !(g.temperature >= 0) || !isfinite(g.temperature))
                return dsq_cmd_usage_error(me, "--temperature needs a number ≥ 0, not '%s'", argv[i]);
        } else if (!strcmp(a, "--seed") && has_val) {
            if (!dsq_cmd_parse_u64(argv[++i], &g.seed))
                return dsq_cmd_usage_error(me, "--seed needs an unsigned integer, not '%s'", argv[i]);
        } else if (!strcmp(a, "--chat"))
            chat = true;
        else if (!strcmp(a, "--thinking"))
            chat = thinking = true;
        else if (!strcmp(a, "--ignore-eos"))
            g.ignore_eos = true;
        else if (!strcmp(a, "--json"))
            json = true;
        else if (a[0] == '-')
            return dsq_cmd_usage_error(me, "unknown or incomplete option '%s'", a);
        else if (!model)
            model = a;
        else
            return dsq_cmd_usage_error(me, "unexpected argument '%s'", a);
    }
    if (!model) return dsq_cmd_usage_error(me, "missing MODEL");
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
    if (s != DSQ_OK) {
        dsq_cmd_fail(me, &e);
        return s == DSQ_ERR_INTERRUPTED ? DSQ_EXIT_INTERRUPTED : DSQ_EXIT_FAIL;
    }
    return DSQ_EXIT_OK;
}
