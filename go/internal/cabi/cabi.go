// Package cabi is the Go half of the cgo shim shared by liblmx's Go packages (go/lmx and
// go/metal): liblmx's status type, the error type every failing call returns, and the
// conversion of a C result (cabi.h) into it. Package lmx re-exports Status and Error under
// its own name; nothing outside this module imports cabi.
package cabi

/*
#cgo pkg-config: lmx
#include "cabi.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

// Status is a liblmx status code; the values are fixed by the C ABI.
type Status int

// String is liblmx's description of the status ("invalid argument", ...).
func (s Status) String() string {
	return C.GoString(C.lmx_status_string(C.int32_t(s)))
}

// Error is a failed liblmx call: its status and the message naming the problem.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "lmx: " + e.Status.String()
	}
	return "lmx: " + e.Message
}

// Is matches an Error without a message (a sentinel such as lmx.ErrNotFound) of the same
// status, so errors.Is(err, lmx.ErrNotFound) works.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Message == "" && t.Status == e.Status
}

// Result turns the two fields of a C lmxgo_result (its status and its message, which it
// frees) into nil or an *Error. Each package passes its own cgo type's fields: cgo gives
// every package a distinct Go type for the same C struct.
func Result(status int32, msg unsafe.Pointer) error {
	if status == C.LMX_OK {
		return nil
	}
	m := ""
	if msg != nil {
		m = C.GoString((*C.char)(msg))
		C.free(msg)
	}
	return &Error{Status: Status(status), Message: m}
}

// ABI is the ABI generation of the linked library, through the link-time check of cabi.h.
func ABI() int { return int(C.lmxgo_abi()) }
