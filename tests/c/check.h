/* The check macro the C test programs share: a failed check prints where and the thread's
 * last liblmx error, then the "N passed, 1 failed" line, and exits. */
#ifndef LMX_TEST_CHECK_H
#define LMX_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmx.h"

static int passed = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, \
              __LINE__, #cond, lmx_last_error());                            \
      printf("%d passed, 1 failed\n", passed);                               \
      exit(1);                                                               \
    }                                                                        \
    passed++;                                                                \
  } while (0)

/* A call that must fail with `st` and a message containing `needle`. */
#define CHECK_ERR(call, st, needle)                    \
  do {                                                 \
    CHECK((call) == (st));                             \
    CHECK(strstr(lmx_last_error(), (needle)) != NULL); \
  } while (0)

#endif
