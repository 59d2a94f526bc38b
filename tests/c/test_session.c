/* Session state through the C API as a C program would use it: save a session to a file and
 * restore it (the restored session continues exactly as the original), fork a session (both
 * branches continue as fresh sessions over the same text would), a quantized KV cache, and
 * every bad argument and bad file getting a status and a message.
 * Usage: test_session MODEL_DIR OTHER_MODEL_DIR TMP_DIR (MODEL_DIR with head_dim 32).
 * Prints "N passed, 0 failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lmx.h"

typedef struct {
  int n;
  int32_t ids[256];
} collected;

static int32_t collect(int32_t token, const char *text, size_t len, void *ud) {
  (void)text;
  (void)len;
  collected *c = ud;
  if (token >= 0 && c->n < 256) c->ids[c->n++] = token;
  return 0;
}

static lmx_generate_params greedy(uint32_t n) {
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = n;
  p.ignore_eos = true;
  return p;
}

/* Greedy tokens after `ids`; the prefilled token count goes to *prefilled (may be NULL). */
static collected run(lmx_session *s, const int32_t *ids, size_t n, uint32_t gen, uint64_t *prefilled) {
  lmx_generate_params p = greedy(gen);
  collected c;
  memset(&c, 0, sizeof c);
  CHECK(lmx_session_generate_tokens(s, ids, n, &p, collect, &c) == LMX_OK);
  CHECK(c.n == (int)gen);
  if (prefilled) {
    lmx_metrics mt;
    memset(&mt, 0, sizeof mt);
    mt.struct_size = sizeof mt;
    CHECK(lmx_session_last_result(s, NULL, &mt) == LMX_OK);
    *prefilled = mt.prefill_tokens;
  }
  return c;
}

static lmx_session_cache cache_info(lmx_session *s) {
  lmx_session_cache c;
  memset(&c, 0, sizeof c);
  c.struct_size = sizeof c;
  CHECK(lmx_session_cache_info(s, &c) == LMX_OK);
  return c;
}

/* Tokens of `text` with `extra` appended. */
static size_t tokens(lmx_model *m, const char *text, const int32_t *extra, size_t n_extra, int32_t *out,
                     size_t cap) {
  size_t n = 0;
  CHECK(lmx_tokenize(m, text, strlen(text), true, out, cap, &n) == LMX_OK);
  CHECK(n + n_extra <= cap);
  memcpy(out + n, extra, n_extra * sizeof *extra);
  return n + n_extra;
}

static void test_save_and_load(lmx_model *m, lmx_model *other, const char *tmp,
                               const lmx_session_params *sp) {
  char path[1024];
  snprintf(path, sizeof path, "%s/session-%u.safetensors", tmp, sp ? sp->kv_bits : 0);
  lmx_session *a = NULL, *b = NULL;
  CHECK(lmx_session_create_with(m, sp, &a) == LMX_OK);
  int32_t ids[256];
  size_t n = tokens(m, "The keeper counted 37 grey ships", NULL, 0, ids, 256);
  collected first = run(a, ids, n, 8, NULL);
  CHECK(lmx_session_save(a, path) == LMX_OK);
  CHECK(lmx_session_load(m, path, NULL, &b) == LMX_OK);
  lmx_session_cache ca = cache_info(a), cb = cache_info(b);
  CHECK(ca.positions == n + 7 && cb.positions == ca.positions && cb.known_tokens == ca.positions);
  CHECK(cb.kv_bits == (sp ? sp->kv_bits : 0u));
  CHECK(ca.bytes > 0 && cb.bytes > 0);

  /* The next turn: the text so far and two more tokens, on both sessions. */
  int32_t next[256];
  size_t nn = tokens(m, "The keeper counted 37 grey ships", first.ids, 8, next, 254);
  next[nn++] = ids[1];
  next[nn++] = ids[2];
  uint64_t pa = 0, pb = 0;
  collected want = run(a, next, nn, 12, &pa);
  collected got = run(b, next, nn, 12, &pb);
  CHECK(memcmp(want.ids, got.ids, sizeof(int32_t) * 12) == 0);
  CHECK(pa == 3 && pb == 3);

  /* Another model refuses the file. */
  lmx_session *c = NULL;
  CHECK_ERR(lmx_session_load(other, path, NULL, &c), LMX_STATUS_INVALID_ARGUMENT, "another model");
  CHECK(c == NULL);
  CHECK(lmx_session_free(a) == LMX_OK);
  CHECK(lmx_session_free(b) == LMX_OK);
}

static void test_fork(lmx_model *m) {
  lmx_session *s = NULL, *f = NULL, *fresh = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  int32_t ids[256];
  size_t n = tokens(m, "A long shared system prompt about grey ships and their keepers", NULL, 0, ids, 256);
  run(s, ids, n, 1, NULL);
  CHECK(lmx_session_fork(s, &f) == LMX_OK);
  CHECK(cache_info(f).positions == n);
  /* Each branch adds its own tokens; each equals a fresh session over the same text. */
  int32_t x[256], y[256];
  memcpy(x, ids, n * sizeof *ids);
  memcpy(y, ids, n * sizeof *ids);
  x[n] = ids[1];
  y[n] = ids[2];
  y[n + 1] = ids[3];
  uint64_t px = 0, py = 0;
  collected xs = run(s, x, n + 1, 10, &px);
  collected ys = run(f, y, n + 2, 10, &py);
  CHECK(px == 1 && py == 2);
  CHECK(lmx_session_create(m, &fresh) == LMX_OK);
  collected fx = run(fresh, x, n + 1, 10, NULL);
  collected fy = run(fresh, y, n + 2, 10, NULL);
  CHECK(memcmp(xs.ids, fx.ids, sizeof(int32_t) * 10) == 0);
  CHECK(memcmp(ys.ids, fy.ids, sizeof(int32_t) * 10) == 0);
  /* The fork outlives the original. */
  CHECK(lmx_session_free(s) == LMX_OK);
  collected again = run(f, y, n + 2, 10, NULL);
  CHECK(memcmp(again.ids, ys.ids, sizeof(int32_t) * 10) == 0);
  CHECK(lmx_session_free(f) == LMX_OK);
  CHECK(lmx_session_free(fresh) == LMX_OK);
}

static void test_bad(lmx_model *m, const char *tmp) {
  lmx_session *s = NULL, *o = NULL;
  lmx_session_params sp;
  CHECK(LMX_SESSION_PARAMS_INIT(&sp) == LMX_OK);
  CHECK(sp.kv_bits == 0 && sp.kv_group_size == 64 && sp.kv_quant_start == 0);
  sp.kv_bits = 3;
  CHECK_ERR(lmx_session_create_with(m, &sp, &s), LMX_STATUS_INVALID_ARGUMENT, "kv_bits 3");
  sp.kv_bits = 8;
  sp.kv_group_size = 48;
  CHECK_ERR(lmx_session_create_with(m, &sp, &s), LMX_STATUS_INVALID_ARGUMENT, "kv_group_size 48");
  sp.kv_group_size = 64;
  CHECK_ERR(lmx_session_create_with(m, &sp, &s), LMX_STATUS_INVALID_ARGUMENT, "head dimension");
  sp.kv_group_size = 32;
  sp.struct_size = 3;
  CHECK_ERR(lmx_session_create_with(m, &sp, &s), LMX_STATUS_INVALID_ARGUMENT, "struct_size");
  CHECK_ERR(lmx_session_params_init(NULL, sizeof sp), LMX_STATUS_INVALID_ARGUMENT, "params");
  CHECK(s == NULL);
  CHECK_ERR(lmx_session_create_with(NULL, NULL, &s), LMX_STATUS_INVALID_ARGUMENT, "model");
  CHECK_ERR(lmx_session_create_with(m, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "session_out");

  CHECK(lmx_session_create_with(m, NULL, &s) == LMX_OK);
  char path[1024];
  snprintf(path, sizeof path, "%s/empty.safetensors", tmp);
  CHECK_ERR(lmx_session_save(s, path), LMX_STATUS_INVALID_ARGUMENT, "nothing to save");
  CHECK_ERR(lmx_session_save(s, NULL), LMX_STATUS_INVALID_ARGUMENT, "path is NULL");
  CHECK_ERR(lmx_session_save(NULL, path), LMX_STATUS_INVALID_ARGUMENT, "session");
  CHECK_ERR(lmx_session_fork(NULL, &o), LMX_STATUS_INVALID_ARGUMENT, "session");
  CHECK_ERR(lmx_session_fork(s, NULL), LMX_STATUS_INVALID_ARGUMENT, "session_out");
  CHECK_ERR(lmx_session_cache_info(s, NULL), LMX_STATUS_INVALID_ARGUMENT, "cache_out");

  snprintf(path, sizeof path, "%s/missing.safetensors", tmp);
  CHECK_ERR(lmx_session_load(m, path, NULL, &o), LMX_STATUS_NOT_FOUND, "missing.safetensors");
  snprintf(path, sizeof path, "%s/garbage.safetensors", tmp);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fputs("definitely not a safetensors file", f);
  fclose(f);
  CHECK_ERR(lmx_session_load(m, path, NULL, &o), LMX_STATUS_FORMAT, "garbage.safetensors");
  CHECK_ERR(lmx_session_load(m, NULL, NULL, &o), LMX_STATUS_INVALID_ARGUMENT, "path is NULL");
  CHECK(o == NULL);

  /* A truncated copy of a good file. */
  int32_t ids[64];
  size_t n = tokens(m, "Hello there", NULL, 0, ids, 64);
  run(s, ids, n, 2, NULL);
  snprintf(path, sizeof path, "%s/good.safetensors", tmp);
  CHECK(lmx_session_save(s, path) == LMX_OK);
  f = fopen(path, "rb");
  CHECK(f != NULL);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)size);
  CHECK(fread(buf, 1, (size_t)size, f) == (size_t)size);
  fclose(f);
  char cut[1024];
  snprintf(cut, sizeof cut, "%s/cut.safetensors", tmp);
  f = fopen(cut, "wb");
  CHECK(fwrite(buf, 1, (size_t)size / 2, f) == (size_t)size / 2);
  fclose(f);
  free(buf);
  CHECK_ERR(lmx_session_load(m, cut, NULL, &o), LMX_STATUS_FORMAT, "cut.safetensors");
  CHECK(lmx_session_free(s) == LMX_OK);
  CHECK_ERR(lmx_session_cache_info(s, &(lmx_session_cache){sizeof(lmx_session_cache), 0, 0, 0, 0, 0}),
            LMX_STATUS_INVALID_ARGUMENT, "session");
}

/* Text pieces appended into a buffer. */
typedef struct {
  char text[4096];
  size_t len;
} text_buf;

static int32_t append_text(int32_t token, const char *text, size_t len, void *ud) {
  (void)token;
  text_buf *b = ud;
  if (b->len + len < sizeof b->text) {
    memcpy(b->text + b->len, text, len);
    b->len += len;
    b->text[b->len] = 0;
  }
  return 0;
}

/* Structured output and tools through the C API: a regex and a choice constrain the text, a
 * bad schema is refused by name and the session goes on, a required tool call comes back in
 * the last message (and out of the streamed text), and the parsers read text given to them. */
static void test_structured(lmx_model *m) {
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  lmx_message msgs[1] = {{sizeof(lmx_message), "user", "hello", NULL, NULL, NULL}};
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 64;
  p.constraint = LMX_CONSTRAINT_REGEX;
  p.constraint_text = "[0-9]{3}-[a-c]{2}";
  text_buf b;
  memset(&b, 0, sizeof b);
  CHECK(lmx_session_chat(s, msgs, 1, NULL, &p, append_text, &b) == LMX_OK);
  CHECK(b.len == 6 && b.text[3] == '-' && b.text[0] >= '0' && b.text[0] <= '9' && b.text[5] >= 'a' && b.text[5] <= 'c');

  const char *choices[3] = {"red", "green", "blue"};
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.constraint = LMX_CONSTRAINT_CHOICE;
  p.choices = choices;
  p.n_choices = 3;
  memset(&b, 0, sizeof b);
  CHECK(lmx_session_chat(s, msgs, 1, NULL, &p, append_text, &b) == LMX_OK);
  CHECK(strcmp(b.text, "red") == 0 || strcmp(b.text, "green") == 0 || strcmp(b.text, "blue") == 0);

  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.constraint = LMX_CONSTRAINT_JSON_SCHEMA;
  p.constraint_text = "{\"type\": \"object\", \"not\": {}}";
  CHECK_ERR(lmx_session_chat(s, msgs, 1, NULL, &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "json_schema: ");
  p.constraint = 9;
  CHECK_ERR(lmx_session_chat(s, msgs, 1, NULL, &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "params->constraint");

  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 200;
  p.tools_json =
      "[{\"type\":\"function\",\"function\":{\"name\":\"move\",\"parameters\":{\"type\":\"object\","
      "\"properties\":{\"steps\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":5}},\"required\":[\"steps\"],"
      "\"additionalProperties\":false}}}]";
  p.tool_choice = "required";
  p.parallel_tool_calls = 0;
  memset(&b, 0, sizeof b);
  CHECK(lmx_session_chat(s, msgs, 1, NULL, &p, append_text, &b) == LMX_OK);
  CHECK(strstr(b.text, "move") == NULL); /* the call is not streamed as text */
  size_t n = 0;
  CHECK(lmx_session_last_message(s, NULL, 0, &n) == LMX_OK && n > 0);
  char *msg = malloc(n + 1);
  CHECK(lmx_session_last_message(s, msg, n + 1, &n) == LMX_OK);
  CHECK(strstr(msg, "\"tool_calls\"") != NULL && strstr(msg, "\"name\":\"move\"") != NULL);
  CHECK(strstr(msg, "steps") != NULL);
  free(msg);
  p.tools_json = "{\"not\": \"a list\"}";
  CHECK_ERR(lmx_session_chat(s, msgs, 1, NULL, &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "params->tools_json");

  char out[512];
  CHECK(lmx_model_parse_tools(m, "ok <tool_call>\n{\"name\": \"move\", \"arguments\": {\"steps\": 2}}\n</tool_call>", out,
                              sizeof out, &n) == LMX_OK);
  CHECK(strstr(out, "\"visible_text\":\"ok\"") != NULL && strstr(out, "\"name\":\"move\"") != NULL);
  CHECK(lmx_model_parse_reasoning(m, "<think>plan</think>answer", out, sizeof out, &n) == LMX_OK);
  CHECK(strstr(out, "\"visible_text\":\"answer\"") != NULL && strstr(out, "\"text\":\"plan\"") != NULL);
  CHECK(lmx_session_free(s) == LMX_OK);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: test_session MODEL_DIR OTHER_MODEL_DIR TMP_DIR\n");
    return 2;
  }
  lmx_model *m = NULL, *other = NULL;
  CHECK(lmx_model_load(argv[1], NULL, &m) == LMX_OK);
  CHECK(lmx_model_load(argv[2], NULL, &other) == LMX_OK);
  test_save_and_load(m, other, argv[3], NULL);
  lmx_session_params q;
  CHECK(LMX_SESSION_PARAMS_INIT(&q) == LMX_OK);
  q.kv_bits = 8;
  q.kv_group_size = 32;
  test_save_and_load(m, other, argv[3], &q);
  test_fork(m);
  test_bad(m, argv[3]);
  test_structured(m);
  CHECK(lmx_model_free(m) == LMX_OK);
  CHECK(lmx_model_free(other) == LMX_OK);
  printf("%d passed, 0 failed\n", passed);
  return 0;
}
