package lmx

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
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

func TestBadArgumentIsATypedErrorWithMessage(t *testing.T) {
	_, err := activeMemoryInto(nil)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("err = %v, want ErrInvalidArgument", err)
	}
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(e.Message, "out_bytes is NULL") {
		t.Fatalf("err = %#v", err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Fatal("matched the wrong sentinel")
	}
}

// Failing and succeeding calls from many goroutines at once: each error carries its own
// message, read in the same cgo call that failed.
func TestErrorsNeverCrossGoroutines(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if i%2 == 0 {
					_, err := activeMemoryInto(nil)
					var e *Error
					if !errors.As(err, &e) || !strings.Contains(e.Message, "out_bytes") {
						errs <- fmt.Errorf("goroutine %d: %v", i, err)
						return
					}
				} else if _, err := ActiveMemory(); err != nil {
					errs <- fmt.Errorf("goroutine %d: unexpected %v", i, err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
