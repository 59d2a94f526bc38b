/* Drives the model C API as a C program would: load, describe, tokenize, chat templates,
 * sessions with callbacks and pull streams, cancellation from a second thread, classify and
 * batch generation, and every bad argument getting a status and a message.
 * Usage: test_model MODEL_DIR [PROMPT_IDS GREEDY_IDS]: with the ids ("1,2,3", from the
 * fixture's reference.json), greedy generation through the ABI must reproduce the reference
 * continuation. Prints "N passed, 0 failed". */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "lmx.h"

static const char *model_dir;

#define MSG(role, content) {sizeof(lmx_message), (role), (content), NULL, NULL, NULL}

typedef struct {
  int n;
  int stop_after;
  int32_t ids[512];
  char text[8192];
} collected;

static int32_t collect(int32_t token, const char *text, size_t len, void *ud) {
  collected *c = ud;
  if (token >= 0 && c->n < 512) c->ids[c->n++] = token;
  size_t have = strlen(c->text);
  if (have + len < sizeof c->text) memcpy(c->text + have, text, len + 1);
  return c->stop_after > 0 && c->n >= c->stop_after;
}

static void test_load_and_info(lmx_model **out) {
  lmx_model *m = NULL;
  CHECK_ERR(lmx_model_load(NULL, NULL, &m), LMX_STATUS_INVALID_ARGUMENT, "path is NULL");
  CHECK_ERR(lmx_model_load(model_dir, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "model_out is NULL");
  CHECK_ERR(lmx_model_load("/no/such/model", NULL, &m), LMX_STATUS_NOT_FOUND, "/no/such/model");
  lmx_model_params p;
  CHECK(LMX_MODEL_PARAMS_INIT(&p) == LMX_OK);
  p.struct_size = 3;
  CHECK_ERR(lmx_model_load(model_dir, &p, &m), LMX_STATUS_INVALID_ARGUMENT, "struct_size");
  CHECK(LMX_MODEL_PARAMS_INIT(&p) == LMX_OK);
  p.context_length = 4096;
  CHECK(lmx_model_load(model_dir, &p, &m) == LMX_OK);
  CHECK(m != NULL);

  lmx_model_desc d;
  memset(&d, 0, sizeof d);
  CHECK_ERR(lmx_model_info(m, &d), LMX_STATUS_INVALID_ARGUMENT, "struct_size");
  d.struct_size = sizeof d;
  CHECK(lmx_model_info(m, &d) == LMX_OK);
  CHECK(d.context_length == 4096);
  CHECK(d.vocab_size > 0 && d.num_layers > 0 && d.param_count > 0);
  CHECK(strlen(d.architecture) > 0 && strlen(d.dtype) > 0 && strlen(d.backend) > 0);
  /* A model folder: no GGUF conversions. */
  CHECK(strcmp(d.format, "safetensors") == 0 && strcmp(d.tokenizer, "tokenizer.json") == 0);
  CHECK(d.conversions[0] == '\0');
  printf("model: %s (%s), %llu params, %d layers, template %s\n", d.architecture, d.model_type,
         (unsigned long long)d.param_count, d.num_layers, d.chat_template);
  CHECK_ERR(lmx_model_info(NULL, &d), LMX_STATUS_INVALID_ARGUMENT, "model is NULL");
  /* Inspecting the folder without loading it agrees with the loaded model on what the
     config says (the context is the model's own: no load parameters apply). */
  lmx_model_desc in = {.struct_size = sizeof in};
  CHECK(lmx_model_inspect(model_dir, &in) == LMX_OK);
  CHECK(strcmp(in.architecture, d.architecture) == 0 && strcmp(in.model_type, d.model_type) == 0);
  CHECK(in.num_layers == d.num_layers && in.hidden_size == d.hidden_size && in.vocab_size == d.vocab_size);
  CHECK(in.num_heads == d.num_heads && in.num_kv_heads == d.num_kv_heads && in.head_dim == d.head_dim);
  CHECK(in.quant_bits == d.quant_bits && strcmp(in.format, "safetensors") == 0);
  CHECK(in.param_count == 0 && in.dtype[0] == '\0'); /* what only a load knows is left empty */
  CHECK_ERR(lmx_model_inspect("/no/such/model", &in), LMX_STATUS_NOT_FOUND, "/no/such/model");
  *out = m;
}

static void test_text(lmx_model *m) {
  const char *text = "café ☕ 日本";
  size_t n = 0;
  CHECK(lmx_tokenize(m, text, strlen(text), false, NULL, 0, &n) == LMX_OK);
  CHECK(n > 3);
  int32_t *ids = calloc(n, sizeof *ids);
  size_t n2 = 0;
  CHECK(lmx_tokenize(m, text, strlen(text), false, ids, n, &n2) == LMX_OK);
  CHECK(n2 == n);
  size_t len = 0;
  CHECK(lmx_detokenize(m, ids, n, true, NULL, 0, &len) == LMX_OK);
  CHECK(len == strlen(text));
  char small[4] = "xyz";
  CHECK(lmx_detokenize(m, ids, n, true, small, sizeof small, &len) == LMX_OK);
  CHECK(strcmp(small, "xyz") == 0); /* too small: untouched */
  char *buf = malloc(len + 1);
  CHECK(lmx_detokenize(m, ids, n, true, buf, len + 1, &len) == LMX_OK);
  CHECK(strcmp(buf, text) == 0);
  free(buf);
  free(ids);

  const char bad_utf8[] = {'a', (char)0xff, 'b', 0};
  CHECK_ERR(lmx_tokenize(m, bad_utf8, 3, true, NULL, 0, &n), LMX_STATUS_INVALID_ARGUMENT, "not valid UTF-8");
  int32_t bad_id = 1 << 30;
  CHECK_ERR(lmx_detokenize(m, &bad_id, 1, true, NULL, 0, &len), LMX_STATUS_INVALID_ARGUMENT, "outside the vocabulary");
  CHECK_ERR(lmx_tokenize(m, "x", 1, true, NULL, 0, NULL), LMX_STATUS_INVALID_ARGUMENT, "n_out is NULL");

  lmx_message msgs[2] = {MSG("system", "Be brief."), MSG("user", "Hello!")};
  CHECK(lmx_chat_apply_template(m, msgs, 2, true, NULL, NULL, 0, &len) == LMX_OK);
  buf = malloc(len + 1);
  /* Extra variables are passed to the template (one that does not use them ignores them). */
  size_t len2 = 0;
  CHECK(lmx_chat_apply_template(m, msgs, 2, true, "{\"enable_thinking\": false}", NULL, 0, &len2) == LMX_OK);
  CHECK(len2 > 0);
  CHECK(lmx_chat_apply_template(m, msgs, 2, true, NULL, buf, len + 1, &len) == LMX_OK);
  CHECK(strstr(buf, "Hello!") != NULL);
  free(buf);
  lmx_message bad_role = MSG("wizard", "hi");
  CHECK_ERR(lmx_chat_apply_template(m, &bad_role, 1, true, NULL, NULL, 0, &len), LMX_STATUS_INVALID_ARGUMENT, "unknown role");
  lmx_message null_content = MSG("user", NULL);
  CHECK_ERR(lmx_chat_apply_template(m, &null_content, 1, true, NULL, NULL, 0, &len), LMX_STATUS_INVALID_ARGUMENT, "messages[0].content is NULL");
  CHECK_ERR(lmx_chat_apply_template(m, msgs, 2, true, "[1,2]", NULL, 0, &len), LMX_STATUS_INVALID_ARGUMENT, "extra_json");
}

static void test_generate(lmx_model *m) {
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 12;
  p.ignore_eos = true;

  collected a;
  memset(&a, 0, sizeof a);
  CHECK(lmx_session_generate(s, "The keeper counted 37 grey ships", &p, collect, &a) == LMX_OK);
  CHECK(a.n == 12);
  lmx_finish_reason f = LMX_FINISH_NONE;
  lmx_metrics mt;
  memset(&mt, 0, sizeof mt);
  mt.struct_size = sizeof mt;
  CHECK(lmx_session_last_result(s, &f, &mt) == LMX_OK);
  CHECK(f == LMX_FINISH_LENGTH);
  CHECK(mt.generated_tokens == 12 && mt.prompt_tokens > 0 && mt.decode_tokens_per_second > 0);

  /* The next turn extends what the cache holds (the prompt and the generated tokens but the
   * last): only the new token is prefilled. */
  size_t np = 0;
  const char *prompt = "The keeper counted 37 grey ships";
  CHECK(lmx_tokenize(m, prompt, strlen(prompt), true, NULL, 0, &np) == LMX_OK);
  int32_t *turn = calloc(np + 12, sizeof *turn);
  CHECK(lmx_tokenize(m, prompt, strlen(prompt), true, turn, np, &np) == LMX_OK);
  memcpy(turn + np, a.ids, 12 * sizeof(int32_t));
  collected b;
  memset(&b, 0, sizeof b);
  CHECK(lmx_session_generate_tokens(s, turn, np + 12, &p, collect, &b) == LMX_OK);
  CHECK(lmx_session_last_result(s, &f, &mt) == LMX_OK);
  CHECK(mt.prompt_tokens == np + 12);
  CHECK(mt.prefill_tokens == 1);
  free(turn);
  /* The same prompt again from a fresh cache gives the same tokens. */
  CHECK(lmx_session_reset(s) == LMX_OK);
  memset(&b, 0, sizeof b);
  CHECK(lmx_session_generate(s, prompt, &p, collect, &b) == LMX_OK);
  CHECK(memcmp(a.ids, b.ids, sizeof(int32_t) * 12) == 0);

  /* The pull API gives the same tokens. */
  CHECK(lmx_session_reset(s) == LMX_OK);
  lmx_stream *st = NULL;
  CHECK(lmx_session_stream(s, "The keeper counted 37 grey ships", &p, &st) == LMX_OK);
  /* While the stream exists the session is busy. */
  CHECK_ERR(lmx_session_generate(s, "x", &p, NULL, NULL), LMX_STATUS_BUSY, "generating");
  CHECK_ERR(lmx_session_free(s), LMX_STATUS_BUSY, "generating");
  int k = 0;
  for (;;) {
    int32_t tok;
    const char *text;
    size_t len;
    bool done;
    CHECK(lmx_stream_next(st, &tok, &text, &len, &done) == LMX_OK);
    if (done) break;
    if (tok >= 0) CHECK(tok == a.ids[k++]);
    CHECK(strlen(text) == len);
  }
  CHECK(k == 12);
  CHECK(lmx_stream_free(st) == LMX_OK);

  /* A stream freed early leaves the session usable. */
  CHECK(lmx_session_stream(s, "Hello", &p, &st) == LMX_OK);
  {
    int32_t tok;
    const char *text;
    size_t len;
    bool done;
    CHECK(lmx_stream_next(st, &tok, &text, &len, &done) == LMX_OK && !done);
  }
  CHECK(lmx_stream_free(st) == LMX_OK);
  CHECK(lmx_session_last_result(s, &f, NULL) == LMX_OK);
  CHECK(f == LMX_FINISH_CANCELLED);

  /* The callback stops generation. */
  collected c;
  memset(&c, 0, sizeof c);
  c.stop_after = 3;
  CHECK(lmx_session_generate(s, "Hello", &p, collect, &c) == LMX_OK);
  CHECK(c.n == 3);
  CHECK(lmx_session_last_result(s, &f, NULL) == LMX_OK);
  CHECK(f == LMX_FINISH_CANCELLED);

  /* Chat through the template. */
  lmx_message msgs[1] = {MSG("user", "Tell me about the ships.")};
  memset(&c, 0, sizeof c);
  CHECK(lmx_session_chat(s, msgs, 1, NULL, &p, collect, &c) == LMX_OK);
  CHECK(c.n > 0);

  /* Seeded sampling is reproducible. */
  lmx_generate_params q = p;
  q.temperature = 2.0f;
  q.top_p = 0.9f;
  q.seed = 42;
  q.use_seed = true;
  collected s1, s2;
  memset(&s1, 0, sizeof s1);
  memset(&s2, 0, sizeof s2);
  CHECK(lmx_session_generate(s, "Once", &q, collect, &s1) == LMX_OK);
  CHECK(lmx_session_generate(s, "Once", &q, collect, &s2) == LMX_OK);
  CHECK(s1.n == s2.n && memcmp(s1.ids, s2.ids, sizeof(int32_t) * (size_t)s1.n) == 0);

  /* Stop strings: never any text at or past the stop string. */
  memset(&s1, 0, sizeof s1);
  CHECK(lmx_session_generate(s, "The keeper counted 37 grey ships", &p, collect, &s1) == LMX_OK);
  size_t tl = strlen(s1.text);
  size_t at = tl / 2;
  /* Three ASCII bytes from the middle on (a stop string must be valid UTF-8). */
  while (at + 3 <= tl && ((unsigned char)s1.text[at] >= 0x80 || (unsigned char)s1.text[at + 1] >= 0x80 ||
                          (unsigned char)s1.text[at + 2] >= 0x80))
    at++;
  CHECK(at + 3 <= tl);
  {
    char stop[4];
    memcpy(stop, s1.text + at, 3);
    stop[3] = 0;
    const char *stops[1] = {stop};
    lmx_generate_params r = p;
    r.stop_strings = stops;
    r.n_stop_strings = 1;
    memset(&s2, 0, sizeof s2);
    CHECK(lmx_session_generate(s, "The keeper counted 37 grey ships", &r, collect, &s2) == LMX_OK);
    CHECK(strstr(s2.text, stop) == NULL);
    CHECK(strncmp(s2.text, s1.text, strlen(s2.text)) == 0);
  }

  /* min_tokens (default 0): the first greedy token as a stop token ends generation at once;
   * with min_tokens 3 it cannot be chosen before three tokens, and ends it when it is. */
  {
    int32_t first = s1.ids[0];
    lmx_generate_params r = p;
    CHECK(r.min_tokens == 0);
    r.stop_tokens = &first;
    r.n_stop_tokens = 1;
    memset(&s2, 0, sizeof s2);
    CHECK(lmx_session_generate(s, "The keeper counted 37 grey ships", &r, collect, &s2) == LMX_OK);
    CHECK(s2.n == 0);
    r.min_tokens = 3;
    memset(&s2, 0, sizeof s2);
    CHECK(lmx_session_generate(s, "The keeper counted 37 grey ships", &r, collect, &s2) == LMX_OK);
    CHECK(s2.n >= 3);
    for (int i = 0; i < s2.n; i++) CHECK(s2.ids[i] != first);
  }

  /* Bad arguments. */
  lmx_generate_params bad = p;
  bad.temperature = -1.0f;
  CHECK_ERR(lmx_session_generate(s, "x", &bad, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "temperature");
  bad = p;
  bad.top_p = 0.0f;
  CHECK_ERR(lmx_session_generate(s, "x", &bad, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "top_p");
  bad.top_p = 1.5f;
  CHECK_ERR(lmx_session_generate(s, "x", &bad, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "top_p");
  bad = p;
  bad.max_tokens = 0;
  CHECK_ERR(lmx_session_generate(s, "x", &bad, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "max_tokens");
  bad = p;
  bad.struct_size = 1;
  CHECK_ERR(lmx_session_generate(s, "x", &bad, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "struct_size");
  bad = p;
  bad.n_stop_strings = 2;
  CHECK_ERR(lmx_session_generate(s, "x", &bad, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "stop_strings is NULL");
  const char bad_utf8[] = {'a', (char)0xc3, 0};
  CHECK_ERR(lmx_session_generate(s, bad_utf8, &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "not valid UTF-8");
  CHECK_ERR(lmx_session_generate(NULL, "x", &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "session is NULL");
  CHECK_ERR(lmx_session_generate(s, NULL, &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "prompt is NULL");
  lmx_message unknown = MSG("wizard", "hi");
  CHECK_ERR(lmx_session_chat(s, &unknown, 1, NULL, &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "unknown role");
  int32_t neg = -5;
  CHECK_ERR(lmx_session_generate_tokens(s, &neg, 1, &p, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "negative");
  CHECK_ERR(lmx_session_create(NULL, &s), LMX_STATUS_INVALID_ARGUMENT, "model is NULL");
  /* Still fine after all that. */
  memset(&c, 0, sizeof c);
  CHECK(lmx_session_generate(s, "Hello", &p, collect, &c) == LMX_OK && c.n == 12);
  CHECK(lmx_session_free(s) == LMX_OK);
  CHECK(lmx_session_free(NULL) == LMX_OK);
}

/* Cancels a session's generation once its prefill is under way. liblmx calls nothing of the
 * caller's during a prefill, so the canceller watches MLX's active memory: nothing before
 * the prefill's first chunk allocates any (the sampler is greedy, the session's cache starts
 * empty), and the chunk's arrays do. The cancel then lands at the prefill's next check
 * between chunks. */
typedef struct {
  lmx_session *s;
  size_t idle;       /* active memory before the call */
  atomic_int ended;  /* set by the main thread when the call has returned */
  int seen;          /* the prefill was seen under way and cancelled */
  lmx_status status; /* of the memory reads and the cancel */
} canceller;

static void *cancel_once_prefilling(void *arg) {
  canceller *c = arg;
  while (!atomic_load(&c->ended)) {
    size_t now = 0;
    c->status = lmx_get_active_memory(&now);
    if (c->status != LMX_OK) return NULL;
    if (now > c->idle) {
      c->seen = 1;
      c->status = lmx_session_cancel(c->s);
      return NULL;
    }
    sched_yield();
  }
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_cancel(lmx_model *m) {
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  /* A long prompt in small chunks, cancelled during the prefill. */
  size_t n = 3000;
  int32_t *ids = malloc(n * sizeof *ids);
  for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(10 + (i * 7) % 300);
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 4;
  p.temperature = 0;
  p.prefill_chunk = 16;
  canceller c = {.s = s, .status = LMX_OK};
  CHECK(lmx_get_active_memory(&c.idle) == LMX_OK);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, cancel_once_prefilling, &c) == 0);
  double t0 = now();
  lmx_status st = lmx_session_generate_tokens(s, ids, n, &p, NULL, NULL);
  double took = now() - t0;
  atomic_store(&c.ended, 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(c.status == LMX_OK && c.seen);
  CHECK(st == LMX_STATUS_CANCELLED);
  CHECK(strstr(lmx_last_error(), "cancelled") != NULL);
  lmx_finish_reason f;
  lmx_metrics mt = {.struct_size = sizeof mt};
  CHECK(lmx_session_last_result(s, &f, &mt) == LMX_OK);
  CHECK(f == LMX_FINISH_CANCELLED && mt.generated_tokens == 0);
  /* The prefill stopped part-way, after whole chunks, which the cache keeps. */
  lmx_session_cache cache = {.struct_size = sizeof cache};
  CHECK(lmx_session_cache_info(s, &cache) == LMX_OK);
  CHECK(cache.positions > 0 && cache.positions < n && cache.positions % p.prefill_chunk == 0);
  CHECK(cache.known_tokens == cache.positions);
  printf("cancelled a %zu-token prefill after %llu tokens, %.3f s\n", n, (unsigned long long)cache.positions, took);

  /* Cancel during decode, through the pull API, from another thread. */
  lmx_generate_params d;
  CHECK(LMX_GENERATE_PARAMS_INIT(&d) == LMX_OK);
  d.max_tokens = 400;
  d.ignore_eos = true;
  lmx_stream *stream = NULL;
  CHECK(lmx_session_stream(s, "Hello", &d, &stream) == LMX_OK);
  int got = 0;
  for (;;) {
    int32_t tok;
    const char *text;
    size_t len;
    bool done;
    lmx_status r = lmx_stream_next(stream, &tok, &text, &len, &done);
    if (done) {
      CHECK(r == LMX_STATUS_CANCELLED);
      break;
    }
    CHECK(r == LMX_OK);
    /* A last text-only piece (token -1) may follow the cancel. */
    if (tok >= 0 && ++got == 5) CHECK(lmx_session_cancel(s) == LMX_OK);
  }
  if (got != 5) fprintf(stderr, "decode stream gave %d tokens\n", got);
  CHECK(got == 5);
  CHECK(lmx_stream_free(stream) == LMX_OK);

  /* The session still works. */
  collected a;
  memset(&a, 0, sizeof a);
  p.prefill_chunk = 2048;
  CHECK(lmx_session_generate(s, "Hello", &p, collect, &a) == LMX_OK);
  CHECK(a.n > 0);
  free(ids);
  CHECK(lmx_session_free(s) == LMX_OK);
}

static void test_batch(lmx_model *m) {
  const char *prompts[3] = {"The keeper counted", "Once upon a time there was", "Hello"};
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 8;
  p.ignore_eos = true;
  lmx_batch *b = NULL;
  CHECK(lmx_batch_generate(m, prompts, 3, &p, &b) == LMX_OK);
  CHECK(lmx_batch_count(b) == 3);
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  for (size_t i = 0; i < 3; i++) {
    lmx_batch_item it = {.struct_size = sizeof it};
    CHECK(lmx_batch_get(b, i, &it) == LMX_OK);
    CHECK(it.status == LMX_OK && it.n_tokens == 8 && it.finish == LMX_FINISH_LENGTH);
    collected one;
    memset(&one, 0, sizeof one);
    CHECK(lmx_session_reset(s) == LMX_OK);
    CHECK(lmx_session_generate(s, prompts[i], &p, collect, &one) == LMX_OK);
    CHECK(one.n == 8 && memcmp(one.ids, it.tokens, 8 * sizeof(int32_t)) == 0);
    CHECK(strcmp(one.text, it.text) == 0);
    CHECK(it.text_ends != NULL);
    for (size_t j = 0; j < it.n_tokens; j++)
      CHECK(it.text_ends[j] <= it.text_len && (j == 0 || it.text_ends[j] >= it.text_ends[j - 1]));
  }
  lmx_batch_item it = {.struct_size = sizeof it};
  CHECK_ERR(lmx_batch_get(b, 3, &it), LMX_STATUS_INVALID_ARGUMENT, "out of range");
  lmx_metrics mt = {.struct_size = sizeof mt};
  CHECK(lmx_batch_metrics(b, &mt) == LMX_OK && mt.generated_tokens == 24);
  CHECK(lmx_batch_free(b) == LMX_OK);

  int32_t tokens[3];
  lmx_model_desc d = {.struct_size = sizeof d};
  CHECK(lmx_model_info(m, &d) == LMX_OK);
  size_t need = 0;
  CHECK(lmx_classify(m, prompts, 3, NULL, tokens, NULL, 0, &need) == LMX_OK);
  CHECK(need == 3 * (size_t)d.vocab_size);
  float *logits = malloc(sizeof(float) * need);
  /* A capacity one float short is refused before anything is written. */
  logits[need - 1] = -12345.0f;
  CHECK_ERR(lmx_classify(m, prompts, 3, NULL, tokens, logits, need - 1, NULL), LMX_STATUS_INVALID_ARGUMENT,
            "logits_capacity");
  CHECK(logits[need - 1] == -12345.0f);
  CHECK(lmx_classify(m, prompts, 3, NULL, tokens, logits, need, &need) == LMX_OK);
  for (int i = 0; i < 3; i++) {
    int best = 0;
    for (int v = 1; v < d.vocab_size; v++)
      if (logits[i * d.vocab_size + v] > logits[i * d.vocab_size + best]) best = v;
    CHECK(best == tokens[i]);
  }
  free(logits);
  CHECK_ERR(lmx_classify(m, prompts, 3, NULL, NULL, NULL, 0, NULL), LMX_STATUS_INVALID_ARGUMENT, "tokens_out");
  const char *with_null[2] = {"ok", NULL};
  CHECK_ERR(lmx_classify(m, with_null, 2, NULL, tokens, NULL, 0, NULL), LMX_STATUS_INVALID_ARGUMENT, "prompts[1] is NULL");
  CHECK(lmx_session_free(s) == LMX_OK);
}

/* Sessions on one model generating from several threads at once. */
typedef struct {
  lmx_model *m;
  collected out;
  lmx_status st;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  lmx_session *s = NULL;
  w->st = lmx_session_create(w->m, &s);
  if (w->st != LMX_OK) return NULL;
  lmx_generate_params p;
  w->st = LMX_GENERATE_PARAMS_INIT(&p);
  if (w->st != LMX_OK) return NULL;
  p.max_tokens = 10;
  p.ignore_eos = true;
  w->st = lmx_session_generate(s, "The keeper counted 37 grey ships", &p, collect, &w->out);
  lmx_session_free(s);
  return NULL;
}

static void test_threads(lmx_model *m) {
  worker w[3];
  pthread_t t[3];
  memset(w, 0, sizeof w);
  for (int i = 0; i < 3; i++) {
    w[i].m = m;
    CHECK(pthread_create(&t[i], NULL, work, &w[i]) == 0);
  }
  for (int i = 0; i < 3; i++) CHECK(pthread_join(t[i], NULL) == 0);
  for (int i = 0; i < 3; i++) {
    CHECK(w[i].st == LMX_OK && w[i].out.n == 10);
    CHECK(memcmp(w[i].out.ids, w[0].out.ids, 10 * sizeof(int32_t)) == 0);
  }
}

/* A session outlives its model handle: the weights stay alive until the session goes. */
static void test_session_after_model_free(void) {
  lmx_model *m = NULL;
  CHECK(lmx_model_load(model_dir, NULL, &m) == LMX_OK);
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  CHECK(lmx_model_free(m) == LMX_OK);
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 3;
  p.ignore_eos = true;
  collected a;
  memset(&a, 0, sizeof a);
  CHECK(lmx_session_generate(s, "Hello", &p, collect, &a) == LMX_OK);
  CHECK(a.n == 3);
  CHECK(lmx_session_free(s) == LMX_OK);
}

/* Structs from an older header (a prefix of today's) and from a newer one (today's plus a
 * field) work unchanged; the older layouts here end where a field of today's starts. */
typedef struct {
  size_t struct_size;
  uint32_t max_tokens;
  float temperature;
  int32_t top_k;
  float top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
  uint32_t penalty_window;
  uint64_t seed;
} old_generate_params;

typedef struct {
  lmx_generate_params base;
  uint64_t new_option;
} future_generate_params;

typedef struct {
  size_t struct_size;
  uint32_t context_length;
  lmx_dtype dtype;
} old_model_params;

typedef struct {
  size_t struct_size;
  uint64_t prompt_tokens, prefill_tokens, generated_tokens;
} old_metrics;

typedef struct {
  lmx_message m;
  const char *name; /* a field a later header might add */
} future_message;

static void test_struct_sizes(lmx_model *m) {
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  lmx_generate_params now;
  CHECK(LMX_GENERATE_PARAMS_INIT(&now) == LMX_OK);
  CHECK(now.struct_size == sizeof now && now.max_tokens == 256 && now.skip_special_tokens == 1);
  now.max_tokens = 6;
  collected a, b;
  memset(&a, 0, sizeof a);
  CHECK(lmx_session_generate(s, "The keeper counted", &now, collect, &a) == LMX_OK);

  /* Older: the fields it lacks take liblmx's defaults. */
  old_generate_params old;
  memset(&old, 0, sizeof old);
  old.struct_size = sizeof old;
  old.max_tokens = 6;
  old.top_p = 1.0f;
  old.repetition_penalty = 1.0f;
  old.penalty_window = 64;
  memset(&b, 0, sizeof b);
  CHECK(lmx_session_reset(s) == LMX_OK);
  CHECK(lmx_session_generate(s, "The keeper counted", (const lmx_generate_params *)&old, collect, &b) == LMX_OK);
  CHECK(a.n == b.n && memcmp(a.ids, b.ids, sizeof(int32_t) * (size_t)a.n) == 0 && strcmp(a.text, b.text) == 0);

  /* Newer: initialized for its size (the unknown tail zeroed), accepted while that stays 0. */
  future_generate_params fut;
  memset(&fut, 0xab, sizeof fut);
  CHECK(lmx_generate_params_init(&fut.base, sizeof fut) == LMX_OK);
  CHECK(fut.base.struct_size == sizeof fut && fut.new_option == 0 && fut.base.max_tokens == 256);
  fut.base.max_tokens = 6;
  memset(&b, 0, sizeof b);
  CHECK(lmx_session_reset(s) == LMX_OK);
  CHECK(lmx_session_generate(s, "The keeper counted", &fut.base, collect, &b) == LMX_OK);
  CHECK(a.n == b.n && memcmp(a.ids, b.ids, sizeof(int32_t) * (size_t)a.n) == 0);
  fut.new_option = 1;
  CHECK_ERR(lmx_session_generate(s, "x", &fut.base, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "newer");
  CHECK_ERR(lmx_generate_params_init(&now, 4), LMX_STATUS_INVALID_ARGUMENT, "size 4");
  CHECK_ERR(lmx_generate_params_init(NULL, sizeof now), LMX_STATUS_INVALID_ARGUMENT, "NULL");

  /* Output structs: an older one gets its prefix and nothing past it; a newer one's tail is
   * zeroed; struct_size stays the caller's. */
  struct {
    old_metrics m;
    uint64_t guard;
  } om;
  memset(&om, 0, sizeof om);
  om.m.struct_size = sizeof om.m;
  om.guard = 0x5eed;
  CHECK(lmx_session_last_result(s, NULL, (lmx_metrics *)&om.m) == LMX_OK);
  CHECK(om.m.struct_size == sizeof om.m && om.m.generated_tokens > 0 && om.guard == 0x5eed);
  struct {
    lmx_metrics m;
    uint64_t extra;
  } fm;
  memset(&fm, 0xcd, sizeof fm);
  fm.m.struct_size = sizeof fm;
  CHECK(lmx_session_last_result(s, NULL, &fm.m) == LMX_OK);
  CHECK(fm.m.struct_size == sizeof fm && fm.extra == 0 && fm.m.generated_tokens == om.m.generated_tokens);

  /* Model params: older (no device field), and enums and flags out of range. */
  old_model_params omp = {sizeof omp, 100, LMX_DTYPE_DEFAULT};
  lmx_model *m2 = NULL;
  CHECK(lmx_model_load(model_dir, (const lmx_model_params *)&omp, &m2) == LMX_OK);
  lmx_model_desc d = {.struct_size = sizeof d};
  CHECK(lmx_model_info(m2, &d) == LMX_OK && d.context_length == 100);
  CHECK(lmx_model_free(m2) == LMX_OK);
  lmx_model_params mp;
  CHECK(LMX_MODEL_PARAMS_INIT(&mp) == LMX_OK);
  mp.dtype = 7;
  CHECK_ERR(lmx_model_load(model_dir, &mp, &m2), LMX_STATUS_INVALID_ARGUMENT, "dtype is 7");
  mp.dtype = LMX_DTYPE_DEFAULT;
  mp.device = -1;
  CHECK_ERR(lmx_model_load(model_dir, &mp, &m2), LMX_STATUS_INVALID_ARGUMENT, "device is -1");
  mp.device = LMX_DEVICE_DEFAULT;
  mp.context_length = 3000000000u;
  CHECK_ERR(lmx_model_load(model_dir, &mp, &m2), LMX_STATUS_INVALID_ARGUMENT, "context_length");
  lmx_generate_params flags = now;
  flags.use_seed = 2;
  CHECK_ERR(lmx_session_generate(s, "x", &flags, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "use_seed is 2");
  flags = now;
  flags.ignore_eos = 255;
  CHECK_ERR(lmx_session_generate(s, "x", &flags, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "ignore_eos is 255");

  /* Messages are stepped through by their struct_size. */
  future_message fmsgs[2] = {{MSG("system", "Be brief."), NULL}, {MSG("user", "Hello!"), NULL}};
  fmsgs[0].m.struct_size = fmsgs[1].m.struct_size = sizeof(future_message);
  lmx_message msgs[2] = {MSG("system", "Be brief."), MSG("user", "Hello!")};
  size_t l1 = 0, l2 = 0;
  CHECK(lmx_chat_apply_template(m, msgs, 2, true, NULL, NULL, 0, &l1) == LMX_OK);
  CHECK(lmx_chat_apply_template(m, &fmsgs[0].m, 2, true, NULL, NULL, 0, &l2) == LMX_OK);
  CHECK(l1 == l2);
  fmsgs[1].name = "b";
  CHECK_ERR(lmx_chat_apply_template(m, &fmsgs[0].m, 2, true, NULL, NULL, 0, &l2), LMX_STATUS_INVALID_ARGUMENT, "messages[1] is a newer");
  fmsgs[1].name = NULL;
  fmsgs[1].m.struct_size = sizeof(lmx_message);
  CHECK_ERR(lmx_chat_apply_template(m, &fmsgs[0].m, 2, true, NULL, NULL, 0, &l2), LMX_STATUS_INVALID_ARGUMENT, "messages[1]");
  CHECK(lmx_session_free(s) == LMX_OK);
}

/* Handles are looked up, never read: freed, mistyped and made-up ones are named errors. */
static void test_handles(lmx_model *m) {
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  CHECK(lmx_session_free(s) == LMX_OK);
  CHECK_ERR(lmx_session_generate(s, "x", NULL, NULL, NULL), LMX_STATUS_INVALID_ARGUMENT, "freed");
  CHECK_ERR(lmx_session_free(s), LMX_STATUS_INVALID_ARGUMENT, "freed");
  CHECK_ERR(lmx_session_reset((lmx_session *)m), LMX_STATUS_INVALID_ARGUMENT, "is an lmx_model");
  CHECK_ERR(lmx_session_cancel((lmx_session *)(uintptr_t)0x1234), LMX_STATUS_INVALID_ARGUMENT, "not a handle");
  void *heap = calloc(1, 64);
  CHECK_ERR(lmx_model_free((lmx_model *)heap), LMX_STATUS_INVALID_ARGUMENT, "not a handle");
  free(heap);
  /* A new session does not answer to the freed one's handle. */
  lmx_session *s2 = NULL;
  CHECK(lmx_session_create(m, &s2) == LMX_OK);
  CHECK(s2 != s);
  CHECK_ERR(lmx_session_reset(s), LMX_STATUS_INVALID_ARGUMENT, "freed");
  CHECK(lmx_session_free(s2) == LMX_OK);
}

/* Cancellation tokens stop batches and classification; a session cancel with nothing running
 * does nothing. */
static void test_cancel_tokens(lmx_model *m) {
  lmx_cancel *c = NULL;
  CHECK(lmx_cancel_create(&c) == LMX_OK);
  const char *prompts[2] = {"The keeper counted", "Hello"};
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 50;
  p.ignore_eos = true;
  p.cancel = c;
  int32_t tokens[2];
  CHECK(lmx_classify(m, prompts, 2, &p, tokens, NULL, 0, NULL) == LMX_OK);
  CHECK(lmx_cancel_request(c) == LMX_OK);
  CHECK_ERR(lmx_classify(m, prompts, 2, &p, tokens, NULL, 0, NULL), LMX_STATUS_CANCELLED, "cancelled");
  lmx_batch *b = NULL;
  CHECK(lmx_batch_generate(m, prompts, 2, &p, &b) == LMX_OK);
  for (size_t i = 0; i < 2; i++) {
    lmx_batch_item it = {.struct_size = sizeof it};
    CHECK(lmx_batch_get(b, i, &it) == LMX_OK);
    CHECK(it.finish == LMX_FINISH_CANCELLED && it.n_tokens < 50);
  }
  CHECK(lmx_batch_free(b) == LMX_OK);
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  CHECK_ERR(lmx_session_generate(s, "Hello", &p, NULL, NULL), LMX_STATUS_CANCELLED, "cancelled");
  p.cancel = NULL;
  CHECK(lmx_session_cancel(s) == LMX_OK); /* nothing runs: no effect on the next call */
  collected a;
  memset(&a, 0, sizeof a);
  CHECK(lmx_session_generate(s, "Hello", &p, collect, &a) == LMX_OK && a.n == 50);
  CHECK(lmx_session_free(s) == LMX_OK);
  CHECK(lmx_cancel_free(c) == LMX_OK);
  CHECK_ERR(lmx_cancel_request(c), LMX_STATUS_INVALID_ARGUMENT, "freed");
}

/* A callback whose own liblmx call fails does not leave that message behind a successful
 * generation; outputs of a failed call are not written. */
static int32_t failing_nested_call(int32_t token, const char *text, size_t len, void *ud) {
  (void)token, (void)text, (void)len, (void)ud;
  size_t v;
  (void)lmx_tokenize(NULL, "x", 1, false, NULL, 0, &v); /* fails: model is NULL */
  return 0;
}

static void test_contracts(lmx_model *m) {
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 3;
  CHECK(lmx_session_generate(s, "Hello", &p, failing_nested_call, NULL) == LMX_OK);
  CHECK(strcmp(lmx_last_error(), "") == 0);
  CHECK(lmx_session_free(s) == LMX_OK);

  size_t n = 12345;
  CHECK_ERR(lmx_tokenize(m, "Hello", 5, true, NULL, 8, &n), LMX_STATUS_INVALID_ARGUMENT, "tokens is NULL");
  CHECK(n == 12345);
  const char bad[] = {'a', (char)0xff};
  CHECK_ERR(lmx_tokenize(m, bad, 2, true, NULL, 0, &n), LMX_STATUS_INVALID_ARGUMENT, "UTF-8");
  CHECK(n == 12345);
  int32_t ids[2] = {1, 2};
  size_t len = 777;
  CHECK_ERR(lmx_detokenize(m, ids, 2, true, NULL, 8, &len), LMX_STATUS_INVALID_ARGUMENT, "buf is NULL");
  CHECK(len == 777);
  int32_t bad_id = -3;
  CHECK_ERR(lmx_detokenize(m, &bad_id, 1, true, NULL, 0, &len), LMX_STATUS_INVALID_ARGUMENT, "negative");
  CHECK(len == 777);
}

/* Parses "1,2,3" into ids; returns the count. */
static size_t parse_ids(const char *s, int32_t *ids, size_t cap) {
  size_t n = 0;
  while (*s && n < cap) {
    char *end;
    ids[n++] = (int32_t)strtol(s, &end, 10);
    s = *end == ',' ? end + 1 : end;
    if (*end == 0) break;
  }
  return n;
}

/* Greedy generation through the ABI equals the reference continuation. */
static void test_reference(lmx_model *m, const char *prompt_ids, const char *want_ids) {
  int32_t prompt[256], want[256];
  size_t np = parse_ids(prompt_ids, prompt, 256), nw = parse_ids(want_ids, want, 256);
  CHECK(np > 0 && nw > 0);
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = (uint32_t)nw;
  p.ignore_eos = true;
  collected a;
  memset(&a, 0, sizeof a);
  CHECK(lmx_session_generate_tokens(s, prompt, np, &p, collect, &a) == LMX_OK);
  CHECK((size_t)a.n == nw);
  CHECK(memcmp(a.ids, want, nw * sizeof(int32_t)) == 0);
  CHECK(lmx_session_free(s) == LMX_OK);
}

int main(int argc, char **argv) {
  if (argc != 2 && argc != 4) {
    fprintf(stderr, "usage: %s MODEL_DIR [PROMPT_IDS GREEDY_IDS]\n", argv[0]);
    return 2;
  }
  model_dir = argv[1];
  lmx_model *m = NULL;
  test_load_and_info(&m);
  if (argc == 4) test_reference(m, argv[2], argv[3]);
  test_text(m);
  test_generate(m);
  test_cancel(m);
  test_batch(m);
  test_threads(m);
  test_struct_sizes(m);
  test_handles(m);
  test_cancel_tokens(m);
  test_contracts(m);
  CHECK(lmx_model_free(m) == LMX_OK);
  CHECK(lmx_model_free(NULL) == LMX_OK);
  test_session_after_model_free();
  printf("%d passed, 0 failed\n", passed);
  return 0;
}
