/* A program outside liblmx's tree, built with `pkg-config --cflags --libs lmx` against an
 * installed liblmx: loads a model and greedily generates four tokens.
 * Usage: hello MODEL_DIR. Prints the tokens and "ok". */
#include <stdio.h>

#include <lmx.h>

static int32_t print_token(int32_t token, const char *text, size_t len, void *user_data) {
  (void)len;
  (*(int *)user_data)++;
  printf("token %d: \"%s\"\n", token, text);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  lmx_model *m = NULL;
  lmx_session *s = NULL;
  lmx_generate_params p;
  int n = 0;
  if (lmx_model_load(argv[1], NULL, &m) != LMX_OK || lmx_session_create(m, &s) != LMX_OK ||
      LMX_GENERATE_PARAMS_INIT(&p) != LMX_OK) {
    fprintf(stderr, "error: %s\n", lmx_last_error());
    return 1;
  }
  p.max_tokens = 4;
  p.ignore_eos = 1;
  if (lmx_session_generate(s, "The keeper counted", &p, print_token, &n) != LMX_OK || n != 4) {
    fprintf(stderr, "error: %s (%d tokens)\n", lmx_last_error(), n);
    return 1;
  }
  lmx_session_free(s);
  lmx_model_free(m);
  printf("liblmx %s: ok\n", lmx_version());
  return 0;
}
