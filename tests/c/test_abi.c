/* Drives the base C ABI of liblmx as a C program would: version, status strings, the
 * per-thread last error, memory functions and device info, with bad arguments. Built with
 * -Wall -Wextra -Werror, and again with AddressSanitizer. Exits non-zero on the first
 * failed check and prints "N passed, 0 failed" at the end. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "check.h"
#include "lmx.h"

static void test_version(void) {
  char expected[64];
  snprintf(expected, sizeof expected, "%d.%d.%d", LMX_VERSION_MAJOR, LMX_VERSION_MINOR,
           LMX_VERSION_PATCH);
  CHECK(strcmp(lmx_version(), expected) == 0);
  CHECK(lmx_abi_2() == LMX_ABI_VERSION);
}

static void test_status_strings(void) {
  CHECK(strcmp(lmx_status_string(LMX_OK), "ok") == 0);
  CHECK(strcmp(lmx_status_string(LMX_STATUS_INVALID_ARGUMENT), "invalid argument") == 0);
  CHECK(strcmp(lmx_status_string(LMX_STATUS_CANCELLED), "cancelled") == 0);
  CHECK(strcmp(lmx_status_string(12345), "unknown status") == 0);
  CHECK(strcmp(lmx_status_string(-1), "unknown status") == 0);
  /* The values are part of the ABI. */
  CHECK(LMX_STATUS_INVALID_ARGUMENT == 1 && LMX_STATUS_MLX == 7 && LMX_STATUS_INTERNAL == 11);
}

static void test_memory(void) {
  size_t prev = 0, now = 0, v = 0;
  CHECK(lmx_set_cache_limit(64u << 20, &prev) == LMX_OK);
  CHECK(lmx_set_cache_limit(prev, &now) == LMX_OK);
  CHECK(now == (64u << 20));
  CHECK(lmx_set_cache_limit(prev, NULL) == LMX_OK); /* previous_out may be NULL */

  CHECK(lmx_get_memory_limit(&prev) == LMX_OK);
  CHECK(lmx_set_memory_limit(1u << 30, &v) == LMX_OK);
  CHECK(v == prev);
  CHECK(lmx_get_memory_limit(&now) == LMX_OK);
  CHECK(now == (1u << 30));
  CHECK(lmx_set_memory_limit(prev, NULL) == LMX_OK);

  CHECK(lmx_set_wired_limit(0, &v) == LMX_OK);
  CHECK(lmx_get_active_memory(&v) == LMX_OK);
  CHECK(lmx_reset_peak_memory() == LMX_OK);
  size_t active = 0, peak = 0;
  CHECK(lmx_get_active_memory(&active) == LMX_OK);
  CHECK(lmx_get_peak_memory(&peak) == LMX_OK);
  CHECK(peak >= active);
  CHECK(lmx_get_cache_memory(&v) == LMX_OK);
  CHECK(lmx_clear_cache() == LMX_OK);
  CHECK(lmx_get_cache_memory(&v) == LMX_OK);
  CHECK(v == 0);
  CHECK(strcmp(lmx_last_error(), "") == 0);
}

static void test_bad_arguments(void) {
  CHECK(lmx_get_active_memory(NULL) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lmx_last_error(), "out_bytes is NULL") != NULL);
  /* Reading the message does not clear it; the next call does. */
  CHECK(strstr(lmx_last_error(), "out_bytes") != NULL);
  CHECK(lmx_get_peak_memory(NULL) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(lmx_get_cache_memory(NULL) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(lmx_get_memory_limit(NULL) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(lmx_device_info(NULL) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lmx_last_error(), "out_info") != NULL);

  lmx_device d;
  memset(&d, 0, sizeof d);
  d.struct_size = 4; /* not a size */
  CHECK(lmx_device_info(&d) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lmx_last_error(), "struct_size") != NULL);
  /* An older, smaller struct gets its prefix and nothing past it. */
  memset(&d, 0x77, sizeof d);
  d.struct_size = offsetof(lmx_device, name);
  CHECK(lmx_device_info(&d) == LMX_OK);
  CHECK(d.struct_size == offsetof(lmx_device, name) && (unsigned char)d.name[0] == 0x77);
  /* A size that ends inside a field (half of memory_size) is no layout any header declared. */
  memset(&d, 0x77, sizeof d);
  d.struct_size = offsetof(lmx_device, memory_size) + 4;
  CHECK(lmx_device_info(&d) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lmx_last_error(), "inside field memory_size") != NULL);
  CHECK(((unsigned char *)&d)[offsetof(lmx_device, backend)] == 0x77); /* nothing written */
  /* The same for an input struct: a cut inside lmx_model_params.context_length is refused
     before the path is even looked at. */
  lmx_model_params mp;
  CHECK(LMX_MODEL_PARAMS_INIT(&mp) == LMX_OK);
  mp.struct_size = offsetof(lmx_model_params, context_length) + 2;
  lmx_model *none = NULL;
  CHECK(lmx_model_load("/nonexistent/model", &mp, &none) == LMX_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lmx_last_error(), "inside field context_length") != NULL && none == NULL);
  mp.struct_size = offsetof(lmx_model_params, dtype); /* an older layout: accepted */
  CHECK(lmx_model_load("/nonexistent/model", &mp, &none) == LMX_STATUS_NOT_FOUND);

  size_t v;
  CHECK(lmx_get_active_memory(&v) == LMX_OK);
  CHECK(strcmp(lmx_last_error(), "") == 0);
}

static void test_device(void) {
  lmx_device d;
  memset(&d, 0xff, sizeof d);
  d.struct_size = sizeof d;
  CHECK(lmx_device_info(&d) == LMX_OK);
  CHECK(d.backend == LMX_BACKEND_CPU || d.backend == LMX_BACKEND_METAL ||
        d.backend == LMX_BACKEND_CUDA);
  CHECK(memchr(d.name, 0, sizeof d.name) != NULL); /* NUL-terminated */
#if defined(__linux__)
  CHECK(d.memory_size > 0); /* MLX's CPU reports none; liblmx gives system memory */
#endif
  printf("device: %s (%s), %llu MiB\n", d.name,
         d.backend == LMX_BACKEND_CPU ? "cpu" : d.backend == LMX_BACKEND_METAL ? "metal" : "cuda",
         (unsigned long long)(d.memory_size >> 20));
}

/* Each thread has its own last error: a failure on one thread is not seen on another. */
static void *fail_on_thread(void *arg) {
  (void)arg;
  int ok = lmx_get_peak_memory(NULL) == LMX_STATUS_INVALID_ARGUMENT &&
           strstr(lmx_last_error(), "out_bytes") != NULL;
  return ok ? (void *)1 : NULL;
}

static void test_errors_per_thread(void) {
  size_t v;
  CHECK(lmx_get_active_memory(&v) == LMX_OK);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, fail_on_thread, NULL) == 0);
  for (int i = 0; i < 4; i++) {
    void *r = NULL;
    CHECK(pthread_join(t[i], &r) == 0);
    CHECK(r == (void *)1);
  }
  CHECK(strcmp(lmx_last_error(), "") == 0);
}

int main(void) {
  test_version();
  test_status_strings();
  test_memory();
  test_bad_arguments();
  test_device();
  test_errors_per_thread();
  printf("%d passed, 0 failed\n", passed);
  return 0;
}
