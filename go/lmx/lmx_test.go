package lmx

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
)

func TestVersionMatchesHeader(t *testing.T) {
	want := fmt.Sprintf("%d.%d.%d", VersionMajor, VersionMinor, VersionPatch)
	if got := Version(); got != want {
		t.Fatalf("Version() = %q, header says %q", got, want)
	}
	if ABI() != ABIVersion {
		t.Fatalf("ABI() = %d, header says %d", ABI(), ABIVersion)
	}
}

func TestStatusStrings(t *testing.T) {
	tests := []struct {
		s    Status
		want string
	}{
		{StatusOK, "ok"},
		{StatusInvalidArgument, "invalid argument"},
		{StatusNotFound, "not found"},
		{StatusCancelled, "cancelled"},
		{Status(999), "unknown status"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("Status(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

func TestLimitsReturnThePreviousValue(t *testing.T) {
	tests := []struct {
		name string
		set  func(uint64) (uint64, error)
		v    uint64
	}{
		{"cache", SetCacheLimit, 32 << 20},
		{"memory", SetMemoryLimit, 2 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev, err := tt.set(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			back, err := tt.set(prev)
			if err != nil {
				t.Fatal(err)
			}
			if back != tt.v {
				t.Fatalf("restoring returned %d, want %d", back, tt.v)
			}
		})
	}
	if _, err := SetWiredLimit(0); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryCounters(t *testing.T) {
	if err := ResetPeakMemory(); err != nil {
		t.Fatal(err)
	}
	active, err := ActiveMemory()
	if err != nil {
		t.Fatal(err)
	}
	peak, err := PeakMemory()
	if err != nil {
		t.Fatal(err)
	}
	if peak < active {
		t.Fatalf("peak %d < active %d", peak, active)
	}
	if err := ClearCache(); err != nil {
		t.Fatal(err)
	}
	if c, err := CacheMemory(); err != nil || c != 0 {
		t.Fatalf("CacheMemory after ClearCache = %d, %v", c, err)
	}
	if l, err := MemoryLimit(); err != nil || l == 0 {
		t.Fatalf("MemoryLimit = %d, %v", l, err)
	}
}

func TestDeviceInfo(t *testing.T) {
	d, err := DeviceInfo()
	if err != nil {
		t.Fatal(err)
	}
	switch d.Backend {
	case BackendCPU, BackendMetal, BackendCUDA:
	default:
		t.Fatalf("backend %q", d.Backend)
	}
	if runtime.GOOS == "linux" && d.MemorySize == 0 {
		t.Fatal("no memory size on Linux")
	}
	t.Logf("device: %s", d)
}

// An *Error matches the sentinel of its status (and no other) with errors.Is, and gives its
// message through errors.As, also wrapped. (Errors from real failing calls, and that each
// carries its own call's message across goroutines, are tested in go/metal, whose calls can
// fail: a missing model, a bad option.)
func TestErrorsMatchTheirSentinel(t *testing.T) {
	var err error = fmt.Errorf("loading: %w", &Error{Status: StatusNotFound, Message: "/x: no such file"})
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrFormat) || errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("errors.Is with %v matched the wrong sentinels", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != StatusNotFound || e.Message != "/x: no such file" {
		t.Fatalf("errors.As gave %#v", e)
	}
	if got := e.Error(); got != "lmx: /x: no such file" {
		t.Fatalf("Error() = %q", got)
	}
	if got := ErrBusy.Error(); got != "lmx: busy" {
		t.Fatalf("a sentinel's Error() = %q", got)
	}
	// A sentinel matches only itself among the sentinels; an error with a message is not a
	// sentinel for another error.
	if !errors.Is(ErrBusy, ErrBusy) || errors.Is(ErrBusy, ErrCancelled) || errors.Is(ErrNotFound, e) {
		t.Fatal("sentinels match each other")
	}
}
