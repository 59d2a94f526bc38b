// The C half of the cgo shim that every liblmx Go package shares: include it (after
// `#cgo CFLAGS: -I${SRCDIR}/../internal/cabi`) instead of lmx.h, wrap each fallible liblmx
// call as `lmxgo_finish(lmx_...(...))`, and hand the result to cabi.Result.
//
// A goroutine may move to another OS thread between two cgo calls, so reading
// lmx_last_error() in a second call could read another call's message: the message is copied
// here, in the same C call that failed.
#ifndef LMXGO_CABI_H
#define LMXGO_CABI_H

#include <stdlib.h>
#include <string.h>
#include "lmx.h"

// A status and, on failure, a malloc'd copy of the calling thread's message (freed by
// cabi.Result).
typedef struct { lmx_status status; char *msg; } lmxgo_result;

static inline lmxgo_result lmxgo_finish(lmx_status st) {
	lmxgo_result r = { st, NULL };
	if (st != LMX_OK) r.msg = strdup(lmx_last_error());
	return r;
}

// Link-time ABI check: a liblmx of another ABI generation has no lmx_abi_2.
static inline uint32_t lmxgo_abi(void) { return lmx_abi_2(); }

#endif
