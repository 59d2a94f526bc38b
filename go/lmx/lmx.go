// Package lmx wraps the C ABI of liblmx: version, errors, MLX memory control and device
// information. It links liblmx from ../../target/release (built by `make`) with an rpath, so
// programs run with no LD_LIBRARY_PATH.
//
// Every failing call returns an *Error carrying the status and liblmx's message. The message
// is read inside the same cgo call that failed (the shim in go/internal/cabi, shared with
// go/metal), so a goroutine moving between OS threads can never pick up another call's
// message.
package lmx

/*
#cgo pkg-config: lmx
#cgo CFLAGS: -I${SRCDIR}/../internal/cabi
#include "cabi.h"

static lmxgo_result lmxgo_set_memory_limit(size_t v, size_t *prev) { return lmxgo_finish(lmx_set_memory_limit(v, prev)); }
static lmxgo_result lmxgo_set_cache_limit(size_t v, size_t *prev) { return lmxgo_finish(lmx_set_cache_limit(v, prev)); }
static lmxgo_result lmxgo_set_wired_limit(size_t v, size_t *prev) { return lmxgo_finish(lmx_set_wired_limit(v, prev)); }
static lmxgo_result lmxgo_get_memory_limit(size_t *out) { return lmxgo_finish(lmx_get_memory_limit(out)); }
static lmxgo_result lmxgo_get_active_memory(size_t *out) { return lmxgo_finish(lmx_get_active_memory(out)); }
static lmxgo_result lmxgo_get_peak_memory(size_t *out) { return lmxgo_finish(lmx_get_peak_memory(out)); }
static lmxgo_result lmxgo_get_cache_memory(size_t *out) { return lmxgo_finish(lmx_get_cache_memory(out)); }
static lmxgo_result lmxgo_reset_peak_memory(void) { return lmxgo_finish(lmx_reset_peak_memory()); }
static lmxgo_result lmxgo_clear_cache(void) { return lmxgo_finish(lmx_clear_cache()); }
static lmxgo_result lmxgo_device_info(lmx_device *d) {
	if (d) d->struct_size = sizeof(lmx_device);
	return lmxgo_finish(lmx_device_info(d));
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"liblmx/go/internal/cabi"
)

// Version numbers of the header this package was compiled against.
const (
	VersionMajor = int(C.LMX_VERSION_MAJOR)
	VersionMinor = int(C.LMX_VERSION_MINOR)
	VersionPatch = int(C.LMX_VERSION_PATCH)
	ABIVersion   = int(C.LMX_ABI_VERSION)
)

// Status is a liblmx status code; the values are fixed by the C ABI. String gives liblmx's
// description ("invalid argument", ...).
type Status = cabi.Status

const (
	StatusOK              Status = C.LMX_OK
	StatusInvalidArgument Status = C.LMX_STATUS_INVALID_ARGUMENT
	StatusNotFound        Status = C.LMX_STATUS_NOT_FOUND
	StatusIO              Status = C.LMX_STATUS_IO
	StatusFormat          Status = C.LMX_STATUS_FORMAT
	StatusUnsupported     Status = C.LMX_STATUS_UNSUPPORTED
	StatusOutOfMemory     Status = C.LMX_STATUS_OUT_OF_MEMORY
	StatusMLX             Status = C.LMX_STATUS_MLX
	StatusCancelled       Status = C.LMX_STATUS_CANCELLED
	StatusBusy            Status = C.LMX_STATUS_BUSY
	StatusPanic           Status = C.LMX_STATUS_PANIC
	StatusInternal        Status = C.LMX_STATUS_INTERNAL
)

// Error is a failed liblmx call: its Status and the Message naming the problem (the file,
// tensor or setting at fault). Its Error() is "lmx: " and the message. Every liblmx Go
// package returns failures of liblmx calls as *Error; match a status with errors.Is against
// the sentinels below (an *Error matches the sentinel of its status), or take the message
// with errors.As.
type Error = cabi.Error

// Sentinels for the statuses callers act on; compare with errors.Is.
var (
	ErrInvalidArgument = &Error{Status: StatusInvalidArgument}
	ErrNotFound        = &Error{Status: StatusNotFound}
	ErrIO              = &Error{Status: StatusIO}
	ErrFormat          = &Error{Status: StatusFormat}
	ErrUnsupported     = &Error{Status: StatusUnsupported}
	ErrOutOfMemory     = &Error{Status: StatusOutOfMemory}
	ErrMLX             = &Error{Status: StatusMLX}
	ErrCancelled       = &Error{Status: StatusCancelled}
	ErrBusy            = &Error{Status: StatusBusy}
	ErrPanic           = &Error{Status: StatusPanic}
	ErrInternal        = &Error{Status: StatusInternal}
)

func result(r C.lmxgo_result) error { return cabi.Result(int32(r.status), unsafe.Pointer(r.msg)) }

// Version is the version of the liblmx that is linked ("MAJOR.MINOR.PATCH").
func Version() string {
	return C.GoString(C.lmx_version())
}

// ABI is the ABI generation of the linked library.
func ABI() int { return cabi.ABI() }

func setLimit(f func(C.size_t, *C.size_t) C.lmxgo_result, bytes uint64) (uint64, error) {
	var prev C.size_t
	if err := result(f(C.size_t(bytes), &prev)); err != nil {
		return 0, err
	}
	return uint64(prev), nil
}

func read(f func(*C.size_t) C.lmxgo_result) (uint64, error) {
	var v C.size_t
	if err := result(f(&v)); err != nil {
		return 0, err
	}
	return uint64(v), nil
}

// SetMemoryLimit sets MLX's memory limit in bytes and returns the previous one.
func SetMemoryLimit(bytes uint64) (uint64, error) {
	return setLimit(func(v C.size_t, p *C.size_t) C.lmxgo_result { return C.lmxgo_set_memory_limit(v, p) }, bytes)
}

// SetCacheLimit sets the limit of MLX's buffer cache in bytes (0 disables it) and returns the
// previous one.
func SetCacheLimit(bytes uint64) (uint64, error) {
	return setLimit(func(v C.size_t, p *C.size_t) C.lmxgo_result { return C.lmxgo_set_cache_limit(v, p) }, bytes)
}

// SetWiredLimit sets the wired memory limit in bytes (Metal only; ignored elsewhere) and
// returns the previous one.
func SetWiredLimit(bytes uint64) (uint64, error) {
	return setLimit(func(v C.size_t, p *C.size_t) C.lmxgo_result { return C.lmxgo_set_wired_limit(v, p) }, bytes)
}

// MemoryLimit is MLX's current memory limit in bytes.
func MemoryLimit() (uint64, error) {
	return read(func(p *C.size_t) C.lmxgo_result { return C.lmxgo_get_memory_limit(p) })
}

// ActiveMemory is the number of bytes held by live arrays.
func ActiveMemory() (uint64, error) {
	return read(func(p *C.size_t) C.lmxgo_result { return C.lmxgo_get_active_memory(p) })
}

// PeakMemory is the highest active memory since start or the last ResetPeakMemory.
func PeakMemory() (uint64, error) {
	return read(func(p *C.size_t) C.lmxgo_result { return C.lmxgo_get_peak_memory(p) })
}

// CacheMemory is the number of bytes in MLX's buffer cache.
func CacheMemory() (uint64, error) {
	return read(func(p *C.size_t) C.lmxgo_result { return C.lmxgo_get_cache_memory(p) })
}

// ResetPeakMemory resets the peak counter to the current active memory.
func ResetPeakMemory() error {
	return result(C.lmxgo_reset_peak_memory())
}

// ClearCache returns MLX's buffer cache to the system.
func ClearCache() error {
	return result(C.lmxgo_clear_cache())
}

// Backend is the MLX backend that computes.
type Backend string

const (
	BackendCPU   Backend = "cpu"
	BackendMetal Backend = "metal"
	BackendCUDA  Backend = "cuda"
)

// Device describes the device MLX computes on.
type Device struct {
	Backend Backend
	Index   int
	// Name as MLX reports it; may be empty.
	Name string
	// MemorySize in bytes (system memory for the CPU and Apple GPUs); 0 if unknown.
	MemorySize uint64
	// RecommendedWorkingSet in bytes (Metal only); 0 where unknown.
	RecommendedWorkingSet uint64
}

func (d Device) String() string {
	return fmt.Sprintf("%s:%d %s (%d MiB)", d.Backend, d.Index, d.Name, d.MemorySize>>20)
}

// DeviceInfo describes MLX's default device.
func DeviceInfo() (Device, error) {
	var d C.lmx_device
	if err := result(C.lmxgo_device_info(&d)); err != nil {
		return Device{}, err
	}
	var b Backend
	switch d.backend {
	case C.LMX_BACKEND_METAL:
		b = BackendMetal
	case C.LMX_BACKEND_CUDA:
		b = BackendCUDA
	default:
		b = BackendCPU
	}
	return Device{
		Backend:               b,
		Index:                 int(d.index),
		Name:                  C.GoString(&d.name[0]),
		MemorySize:            uint64(d.memory_size),
		RecommendedWorkingSet: uint64(d.recommended_working_set),
	}, nil
}
