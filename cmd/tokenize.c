/* dsq-command: tokenize | encode text to token ids (or --decode ids to text) with a tokenizer.json */
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "dsq_tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dsq tokenize [options] MODEL|tokenizer.json TEXT|-\n"
            "       dsq tokenize --decode [options] MODEL|tokenizer.json IDS|-\n\n"
            "Encodes TEXT (or, with '-', standard input byte for byte) with the byte-level BPE tokenizer of\n"
            "MODEL (a checkpoint directory holding tokenizer.json) and prints the ids as a JSON array.\n"
            "No special token is added; text such as <｜User｜> in the input is matched as that token.\n"
            "Invalid UTF-8 is read as U+FFFD, as JavaScript's TextDecoder does.\n\n"
            "options:\n"
            "  --decode        IDS is a JSON array of ids; print the text they decode to (raw bytes)\n"
            "  --skip-special  with --decode: drop special tokens\n"
            "  --lossy         with --decode: replace invalid UTF-8 by U+FFFD (as the reference decoder)\n"
            "  --chat          encode TEXT as one user turn of the V4 chat format, with the generation\n"
            "                  prompt (BOS, <｜User｜>TEXT<｜Assistant｜></think>)\n"
            "  --thinking      with --chat: thinking mode (the prompt ends in <think>)\n"
            "  --system TEXT   with --chat: system prompt placed after BOS\n"
            "  --v4-specials   add the V4 special tokens of spec §7 (<think>, </think>, ...) that the\n"
            "                  tokenizer.json lacks (needed with the V3 file)\n"
            "  --stats         print load time, bytes, tokens and speed to standard error\n"
            "  --json          print an object: {\"n_tokens\", \"n_bytes\", \"ids\"} (or {\"text\"} with --decode)\n");
}

static int read_stdin(char **out, size_t *len) {
    dsq_tok_text buf = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (dsq_tok_text_append(&buf, chunk, n, NULL) != DSQ_OK) {
            dsq_tok_text_free(&buf);
            return -1;
        }
    if (ferror(stdin) || dsq_tok_text_append(&buf, "", 0, NULL) != DSQ_OK) {
        dsq_tok_text_free(&buf);
        return -1;
    }
    *out = buf.data;
    *len = buf.len;
    return 0;
}

static void print_ids(const dsq_tok_ids *ids) {
    fputc('[', stdout);
    for (size_t i = 0; i < ids->n; i++) printf(i ? ",%d" : "%d", (int)ids->ids[i]);
    fputc(']', stdout);
}

/* A JSON string of arbitrary (valid UTF-8) bytes, NULs included. */
static void print_json_bytes(const char *s, size_t n) {
    fputc('"', stdout);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7F)
            printf("\\u%04x", c);
        else
            fputc(c, stdout);
    }
    fputc('"', stdout);
}

int dsq_cmd_tokenize(int argc, char **argv) {
    if (dsq_cmd_wants_help(argc, argv)) {
        usage(stdout);
        return DSQ_EXIT_OK;
    }
    bool decode = false, json = false, stats = false, chat = false, thinking = false;
    const char *system = NULL, *pos[2] = {NULL, NULL};
    dsq_tok_options topt = {0};
    dsq_tok_decode_options dopt = {0};
    dsq_opt opts[] = {
        DSQ_OPT_FLAG("--decode", &decode),
        DSQ_OPT_FLAG("--skip-special", &dopt.skip_special),
        DSQ_OPT_FLAG("--lossy", &dopt.lossy),
        DSQ_OPT_FLAG("--chat", &chat),
        DSQ_OPT_FLAG("--thinking", &thinking),
        DSQ_OPT_STR("--system", &system),
        DSQ_OPT_FLAG("--v4-specials", &topt.v4_specials),
        DSQ_OPT_FLAG("--stats", &stats),
        DSQ_OPT_FLAG("--json", &json),
        DSQ_OPT_END,
    };
    dsq_opt_spec spec = {.cmd = "tokenize", .opts = opts, .pos = pos, .max_pos = 2, .min_pos = 2,
                         .missing = "need MODEL|tokenizer.json and TEXT|-"};
    int rc = dsq_opt_parse_cmd(&spec, argc, argv, NULL);
    if (rc) return rc;
    if (decode && chat) return dsq_cmd_usage_error("tokenize", "--chat encodes; it cannot go with --decode");
    if (!chat && (thinking || system)) return dsq_cmd_usage_error("tokenize", "--thinking and --system need --chat");
    if (!decode && (dopt.skip_special || dopt.lossy))
        return dsq_cmd_usage_error("tokenize", "--skip-special and --lossy need --decode");

    char *input = NULL;
    size_t input_len = 0;
    if (!strcmp(pos[1], "-")) {
        if (read_stdin(&input, &input_len) != 0) {
            fprintf(stderr, "dsq tokenize: cannot read standard input\n");
            return DSQ_EXIT_FAIL;
        }
    }
    const char *text = input ? input : pos[1];
    size_t text_len = input ? input_len : strlen(pos[1]);

    dsq_err err = DSQ_ERR_INIT;
    dsq_tok *tok = NULL;
    double t0 = dsq_now();
    if (dsq_tok_open(pos[0], &topt, &tok, &err) != DSQ_OK) {
        dsq_free(input);
        return dsq_cmd_fail("tokenize", &err);
    }
    double t_load = dsq_now() - t0;
    dsq_tok_ids ids = {0};
    dsq_tok_text out = {0}, rendered = {0};
    dsq_status st = DSQ_OK;
    double t1 = dsq_now();
    if (decode) {
        st = dsq_tok_parse_ids(text, text_len, input ? "standard input" : "IDS", &ids, &err);
        if (json) dopt.lossy = true; /* a JSON string must be valid UTF-8 */
        if (st == DSQ_OK) st = dsq_tok_decode(tok, ids.ids, ids.n, &dopt, &out, &err);
    } else {
        if (chat) {
            dsq_chat_msg msgs[2] = {{DSQ_CHAT_ROLE_SYSTEM, system, NULL}, {DSQ_CHAT_ROLE_USER, NULL, NULL}};
            /* The user text may hold NULs only through stdin; the chat helper takes C strings. */
            if (memchr(text, 0, text_len)) st = dsq_err_set(&err, DSQ_ERR_ARG, "--chat text contains a NUL byte");
            msgs[1].content = text;
            if (st == DSQ_OK)
                st = dsq_chat_render(system ? msgs : msgs + 1, system ? 2 : 1,
                                     thinking ? DSQ_CHAT_MODE_THINKING : DSQ_CHAT_MODE_CHAT, true, &rendered, &err);
            text = rendered.data, text_len = rendered.len;
        }
        if (st == DSQ_OK) st = dsq_tok_encode(tok, text, text_len, &ids, &err);
    }
    double t_run = dsq_now() - t1;
    if (st == DSQ_OK) {
        if (decode && json) {
            fputs("{\"text\":", stdout);
            print_json_bytes(out.data, out.len);
            fputs("}\n", stdout);
        } else if (decode) {
            fwrite(out.data, 1, out.len, stdout);
        } else if (json) {
            printf("{\"n_tokens\":%zu,\"n_bytes\":%zu,\"ids\":", ids.n, text_len);
            print_ids(&ids);
            fputs("}\n", stdout);
        } else {
            print_ids(&ids);
            fputc('\n', stdout);
        }
        if (stats)
            fprintf(stderr, "dsq tokenize: load %.3f s, %zu bytes, %zu tokens, %s %.3f ms (%.1f MB/s)\n", t_load,
                    decode ? out.len : text_len, ids.n, decode ? "decode" : "encode", t_run * 1e3,
                    t_run > 0 ? (decode ? out.len : text_len) / t_run / 1e6 : 0.0);
    }
    dsq_tok_ids_free(&ids);
    dsq_tok_text_free(&out);
    dsq_tok_text_free(&rendered);
    dsq_tok_free(tok);
    dsq_free(input);
    if (fflush(stdout) != 0 && st == DSQ_OK) st = dsq_err_set(&err, DSQ_ERR_IO, "cannot write standard output");
    return st == DSQ_OK ? DSQ_EXIT_OK : dsq_cmd_fail("tokenize", &err);
}
