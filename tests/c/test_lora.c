/* LoRA through the C ABI as a C program would: train an adapter on a small JSONL file (the
 * loss must fall), save it, load it back, generate with it on a session (its continuation
 * must differ from the base model's and equal the fused model's), switch it off, and every
 * bad argument getting a status and a message.
 * Usage: test_lora MODEL_DIR DATA.jsonl TMP_DIR. Prints "N passed, 0 failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lmx.h"

typedef struct {
  int n;
  int32_t ids[64];
} toks;

static int32_t keep(int32_t token, const char *text, size_t len, void *ud) {
  (void)text;
  (void)len;
  toks *t = ud;
  if (token >= 0 && t->n < 64) t->ids[t->n++] = token;
  return 0;
}

static toks run(lmx_session *s, const char *prompt) {
  toks t = {0};
  lmx_generate_params p;
  CHECK(LMX_GENERATE_PARAMS_INIT(&p) == LMX_OK);
  p.max_tokens = 12;
  p.ignore_eos = 1;
  CHECK(lmx_session_reset(s) == LMX_OK);
  CHECK(lmx_session_generate(s, prompt, &p, keep, &t) == LMX_OK);
  return t;
}

static int same(const toks *a, const toks *b) {
  return a->n == b->n && memcmp(a->ids, b->ids, sizeof(int32_t) * (size_t)a->n) == 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: test_lora MODEL_DIR DATA.jsonl TMP_DIR\n");
    return 2;
  }
  const char *model_dir = argv[1], *data = argv[2], *tmp = argv[3];
  lmx_model *m = NULL;
  CHECK(lmx_model_load(model_dir, NULL, &m) == LMX_OK);

  /* Bad parameters. */
  lmx_trainer *t = NULL;
  CHECK_ERR(lmx_trainer_create(m, NULL, &t), LMX_STATUS_INVALID_ARGUMENT, "data_path");
  lmx_train_params tp;
  CHECK(LMX_TRAIN_PARAMS_INIT(&tp) == LMX_OK);
  CHECK_ERR(lmx_trainer_create(m, &tp, &t), LMX_STATUS_INVALID_ARGUMENT, "data_path is NULL");
  tp.data_path = data;
  tp.rank = 0;
  CHECK_ERR(lmx_trainer_create(m, &tp, &t), LMX_STATUS_INVALID_ARGUMENT, "rank");
  tp.rank = 4;
  tp.learning_rate = NAN;
  CHECK_ERR(lmx_trainer_create(m, &tp, &t), LMX_STATUS_INVALID_ARGUMENT, "learning rate");
  tp.learning_rate = 1e-3f;
  tp.targets = "q_proj,bogus";
  CHECK_ERR(lmx_trainer_create(m, &tp, &t), LMX_STATUS_INVALID_ARGUMENT, "bogus");
  tp.targets = NULL;
  tp.grad_checkpoint = 2;
  CHECK_ERR(lmx_trainer_create(m, &tp, &t), LMX_STATUS_INVALID_ARGUMENT, "grad_checkpoint");
  tp.grad_checkpoint = 0;
  char bad[1024];
  snprintf(bad, sizeof bad, "%s/bad.jsonl", tmp);
  FILE *f = fopen(bad, "w");
  CHECK(f != NULL);
  fputs("{\"text\": \"one\"}\n{\"text\": \"two\"}\n{\"text\": 3}\n", f);
  fclose(f);
  tp.data_path = bad;
  CHECK_ERR(lmx_trainer_create(m, &tp, &t), LMX_STATUS_FORMAT, "row 3");
  CHECK(t == NULL);

  /* Train. */
  tp.data_path = data;
  tp.num_layers = 2;
  tp.scale = 10.0f;
  CHECK(lmx_trainer_create(m, &tp, &t) == LMX_OK);
  lmx_train_report r = {.struct_size = sizeof r};
  float first = 0, last = 0, before = 0, after = 0;
  CHECK(lmx_trainer_evaluate(t, &before) == LMX_OK);
  for (int i = 0; i < 25; i++) {
    CHECK(lmx_trainer_step(t, &r) == LMX_OK);
    if (i == 0) first = r.loss;
    last = r.loss;
  }
  CHECK(lmx_trainer_evaluate(t, &after) == LMX_OK);
  printf("loss %.4f -> %.4f over %llu updates (%.0f tokens/s); evaluation %.4f -> %.4f\n", first, last,
         (unsigned long long)r.step, r.tokens_per_second, before, after);
  CHECK(r.step == 25 && r.updated == 1 && r.tokens > 0 && r.peak_memory_bytes > 0);
  CHECK(last < first / 2 && after < before / 2);
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/adapter", tmp);
  CHECK(lmx_trainer_save_adapter(t, dir) == LMX_OK);
  lmx_adapter *live = NULL;
  CHECK(lmx_trainer_adapter(t, &live) == LMX_OK);
  CHECK(lmx_trainer_free(t) == LMX_OK);

  /* Load it back and generate with it. */
  lmx_adapter *a = NULL;
  CHECK_ERR(lmx_adapter_load(m, "/no/such/adapter", &a), LMX_STATUS_NOT_FOUND, "adapter_config.json");
  CHECK(lmx_adapter_load(m, dir, &a) == LMX_OK);
  float scale = 0;
  CHECK(lmx_adapter_scale(a, &scale) == LMX_OK && scale == 10.0f);
  lmx_session *s = NULL;
  CHECK(lmx_session_create(m, &s) == LMX_OK);
  const char *prompt = "The quick brown";
  toks base = run(s, prompt);
  CHECK(lmx_session_set_adapter(s, a, scale) == LMX_OK);
  toks adapted = run(s, prompt);
  CHECK(!same(&base, &adapted));
  CHECK(lmx_session_set_adapter(s, live, scale) == LMX_OK);
  toks adapted_live = run(s, prompt);
  CHECK(same(&adapted, &adapted_live));
  CHECK_ERR(lmx_session_set_adapter(s, a, NAN), LMX_STATUS_INVALID_ARGUMENT, "finite");
  CHECK(lmx_session_set_adapter(s, a, 0.0f) == LMX_OK);
  toks off = run(s, prompt);
  CHECK(same(&base, &off));
  CHECK(lmx_session_set_adapter(s, NULL, 0.0f) == LMX_OK);
  toks none = run(s, prompt);
  CHECK(same(&base, &none));
  CHECK_ERR(lmx_session_set_adapter(s, (lmx_adapter *)m, 1.0f), LMX_STATUS_INVALID_ARGUMENT, "lmx_model");

  /* Fused into a new model: the same continuation as the adapter applied. */
  lmx_model *fused = NULL;
  CHECK(lmx_adapter_fuse(m, a, scale, &fused) == LMX_OK);
  lmx_session *fs = NULL;
  CHECK(lmx_session_create(fused, &fs) == LMX_OK);
  toks f1 = run(fs, prompt);
  CHECK(same(&adapted, &f1));
  printf("base %d tokens, adapted %d tokens, fused equal to adapted\n", base.n, adapted.n);

  CHECK(lmx_session_free(fs) == LMX_OK);
  CHECK(lmx_model_free(fused) == LMX_OK);
  CHECK(lmx_session_free(s) == LMX_OK);
  CHECK(lmx_adapter_free(a) == LMX_OK);
  CHECK(lmx_adapter_free(live) == LMX_OK);
  CHECK_ERR(lmx_adapter_free(a), LMX_STATUS_INVALID_ARGUMENT, "freed");
  CHECK(lmx_model_free(m) == LMX_OK);
  printf("%d passed, 0 failed\n", passed);
  return 0;
}
