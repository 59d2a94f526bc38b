package inference

import (
	"context"
	"errors"
	"iter"
	"slices"
	"strings"
	"testing"
)

// fakeBackend records the options its LoadModel got.
type fakeBackend struct {
	name      string
	available bool
	got       LoadConfig
}

var errFakeLoad = errors.New("fake load")

func (f *fakeBackend) Name() string    { return f.name }
func (f *fakeBackend) Available() bool { return f.available }
func (f *fakeBackend) LoadModel(path string, opts ...LoadOption) (TextModel, error) {
	f.got = ApplyLoadOpts(opts)
	if path == "fail" {
		return nil, errFakeLoad
	}
	return &fakeModel{backend: f.name}, nil
}

type fakeModel struct{ backend string }

func (m *fakeModel) Generate(context.Context, string, ...GenerateOption) iter.Seq[Token] {
	return func(func(Token) bool) {}
}
func (m *fakeModel) Chat(context.Context, []Message, ...GenerateOption) iter.Seq[Token] {
	return func(func(Token) bool) {}
}
func (m *fakeModel) Classify(context.Context, []string, ...GenerateOption) ([]ClassifyResult, error) {
	return nil, nil
}
func (m *fakeModel) BatchGenerate(context.Context, []string, ...GenerateOption) ([]BatchResult, error) {
	return nil, nil
}
func (m *fakeModel) ModelType() string        { return m.backend }
func (m *fakeModel) Info() ModelInfo          { return ModelInfo{} }
func (m *fakeModel) Metrics() GenerateMetrics { return GenerateMetrics{} }
func (m *fakeModel) Err() error               { return nil }
func (m *fakeModel) Close() error             { return nil }

// withRegistry runs f with the registry holding exactly bs, then restores it.
func withRegistry(t *testing.T, bs ...Backend) {
	t.Helper()
	registryMu.Lock()
	saved := registry
	registry = map[string]Backend{}
	registryMu.Unlock()
	t.Cleanup(func() {
		registryMu.Lock()
		registry = saved
		registryMu.Unlock()
	})
	for _, b := range bs {
		Register(b)
	}
}

func TestRegisterGetList(t *testing.T) {
	a := &fakeBackend{name: "zeta", available: true}
	b := &fakeBackend{name: "alpha", available: false}
	withRegistry(t, a, b, nil)
	if got, want := List(), []string{"alpha", "zeta"}; !slices.Equal(got, want) {
		t.Fatalf("List() = %v, want %v", got, want)
	}
	if got, ok := Get("zeta"); !ok || got != a {
		t.Fatalf("Get(zeta) = %v, %v", got, ok)
	}
	if _, ok := Get("missing"); ok {
		t.Fatal("Get(missing) found something")
	}
	// Registering a name again replaces the backend.
	a2 := &fakeBackend{name: "zeta", available: true}
	Register(a2)
	if got, _ := Get("zeta"); got != a2 {
		t.Fatal("Register did not replace the backend of the same name")
	}
	if len(List()) != 2 {
		t.Fatalf("List() = %v after replacing", List())
	}
}

func TestDefaultPreferenceOrder(t *testing.T) {
	tests := []struct {
		name     string
		backends []*fakeBackend
		want     string // "" = error
	}{
		{"none registered", nil, ""},
		{"none available", []*fakeBackend{{name: "metal"}, {name: "other"}}, ""},
		{"metal first", []*fakeBackend{{name: "llama_cpp", available: true}, {name: "rocm", available: true}, {name: "metal", available: true}}, "metal"},
		{"rocm when metal unavailable", []*fakeBackend{{name: "metal"}, {name: "rocm", available: true}, {name: "llama_cpp", available: true}}, "rocm"},
		{"llama_cpp before others", []*fakeBackend{{name: "aaa", available: true}, {name: "llama_cpp", available: true}}, "llama_cpp"},
		{"any available, by name", []*fakeBackend{{name: "metal"}, {name: "zzz", available: true}, {name: "bbb", available: true}}, "bbb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bs []Backend
			for _, b := range tt.backends {
				bs = append(bs, b)
			}
			withRegistry(t, bs...)
			b, err := Default()
			if tt.want == "" {
				if !errors.Is(err, ErrNoBackend) {
					t.Fatalf("Default() = %v, %v; want an error matching ErrNoBackend", b, err)
				}
				return
			}
			if err != nil || b.Name() != tt.want {
				t.Fatalf("Default() = %v, %v; want %s", b, err, tt.want)
			}
		})
	}
}

func TestLoadModelPicksTheBackend(t *testing.T) {
	metal := &fakeBackend{name: "metal", available: true}
	rocm := &fakeBackend{name: "rocm", available: true}
	off := &fakeBackend{name: "off"}
	withRegistry(t, metal, rocm, off)
	tests := []struct {
		name    string
		path    string
		opts    []LoadOption
		want    string // model's backend, or a substring of the error
		wantErr bool
	}{
		{"default", "m", nil, "metal", false},
		{"named", "m", []LoadOption{WithBackend("rocm")}, "rocm", false},
		{"unknown", "m", []LoadOption{WithBackend("nope")}, `"nope" not registered`, true},
		{"unavailable", "m", []LoadOption{WithBackend("off")}, `"off" not available`, true},
		{"backend error", "fail", nil, "fake load", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := LoadModel(tt.path, tt.opts...)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want one containing %q", err, tt.want)
				}
				// The registry's own failures match ErrNoBackend; the backend's errors are
				// its own.
				if errors.Is(err, ErrNoBackend) != (tt.path != "fail") {
					t.Fatalf("errors.Is(%v, ErrNoBackend) = %v", err, errors.Is(err, ErrNoBackend))
				}
				return
			}
			if err != nil || m.ModelType() != tt.want {
				t.Fatalf("LoadModel = %v, %v; want a %s model", m, err, tt.want)
			}
		})
	}
	// The options reach the backend.
	if _, err := LoadModel("m", WithContextLen(4096), WithParallelSlots(3), WithGPULayers(0)); err != nil {
		t.Fatal(err)
	}
	if want := (LoadConfig{ContextLen: 4096, ParallelSlots: 3, GPULayers: 0}); metal.got != want {
		t.Fatalf("backend got %+v, want %+v", metal.got, want)
	}
	if _, err := LoadModel("fail"); !errors.Is(err, errFakeLoad) {
		t.Fatalf("err = %v, want the backend's error", err)
	}
}

func TestAllIteratesASnapshot(t *testing.T) {
	a := &fakeBackend{name: "a", available: true}
	b := &fakeBackend{name: "b"}
	withRegistry(t, a, b)
	got := map[string]Backend{}
	for name, be := range All() {
		got[name] = be
		// Registering while iterating neither deadlocks nor changes what is iterated.
		Register(&fakeBackend{name: "late-" + name})
	}
	if len(got) != 2 || got["a"] != a || got["b"] != b {
		t.Fatalf("All() gave %v", got)
	}
	n := 0
	for range All() {
		n++
		break
	}
	if n != 1 {
		t.Fatal("breaking out of All() did not stop it")
	}
	if len(List()) != 4 {
		t.Fatalf("List() = %v", List())
	}
}

// A model of a backend without training or sessions is refused with ErrUnsupported.
func TestUnsupportedModels(t *testing.T) {
	withRegistry(t, &fakeBackend{name: "metal", available: true})
	if _, err := LoadTrainable("m"); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "cannot be trained") {
		t.Fatalf("LoadTrainable: %v", err)
	}
	if _, err := NewSession(&fakeModel{backend: "fake"}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("NewSession: %v", err)
	}
}
