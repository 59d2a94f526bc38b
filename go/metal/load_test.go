package metal

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

func TestBackendRegistered(t *testing.T) {
	b, ok := inference.Get("metal")
	if !ok || b.Name() != "metal" {
		t.Fatalf("Get(metal) = %v, %v", b, ok)
	}
	if !b.Available() {
		t.Fatal("the metal backend is not available")
	}
	if !slices.Contains(inference.List(), "metal") {
		t.Fatalf("List() = %v", inference.List())
	}
	if d, err := inference.Default(); err != nil || d.Name() != "metal" {
		t.Fatalf("Default() = %v, %v", d, err)
	}
	m, err := inference.LoadModel(filepath.Join(fixtures, "qwen3"), inference.WithBackend("metal"), inference.WithParallelSlots(2))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, ok := m.(*Model); !ok || m.ModelType() != "qwen3" {
		t.Fatalf("LoadModel gave a %T of type %q", m, m.ModelType())
	}
}

// copyFixture copies a fixture folder into a temporary one.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(fixtures, name, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadErrors(t *testing.T) {
	corrupt := copyFixture(t, "qwen3")
	weights := filepath.Join(corrupt, "model.safetensors")
	f, err := os.OpenFile(weights, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Bytes 8.. are the JSON header; make it unparsable.
	if _, err := f.WriteAt([]byte("{{{{not json at all"), 8); err != nil {
		t.Fatal(err)
	}
	f.Close()

	tests := []struct {
		name    string
		path    string
		opts    []inference.LoadOption
		want    error
		message string
	}{
		{"missing folder", "/no/such/model", nil, lmx.ErrNotFound, "/no/such/model"},
		{"corrupt safetensors", corrupt, nil, lmx.ErrFormat, "model.safetensors"},
		{"negative context", filepath.Join(fixtures, "qwen3"), []inference.LoadOption{inference.WithContextLen(-1)}, lmx.ErrInvalidArgument, "context"},
		{"negative slots", filepath.Join(fixtures, "qwen3"), []inference.LoadOption{inference.WithParallelSlots(-1)}, lmx.ErrInvalidArgument, "slots"},
		{"NUL in the path", "qwen3\x00", nil, lmx.ErrInvalidArgument, "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, loader := range []func(string, ...inference.LoadOption) (inference.TextModel, error){
				Backend{}.LoadModel,
				func(p string, o ...inference.LoadOption) (inference.TextModel, error) {
					return inference.LoadModel(p, append(o, inference.WithBackend("metal"))...)
				},
			} {
				m, err := loader(tt.path, tt.opts...)
				if err == nil {
					m.Close()
					t.Fatal("loaded")
				}
				var e *lmx.Error
				if !errors.Is(err, tt.want) || !errors.As(err, &e) || !strings.Contains(e.Message, tt.message) {
					t.Fatalf("err = %v, want %v naming %q", err, tt.want, tt.message)
				}
			}
		})
	}
	if _, err := Load(filepath.Join(fixtures, "qwen3"), inference.WithBackend("rocm")); err == nil || !strings.Contains(err.Error(), "rocm") {
		t.Fatalf("Load with another backend's name: %v", err)
	}
}

func TestLoadOptions(t *testing.T) {
	dev, err := DeviceInfo()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    []inference.LoadOption
		context int
	}{
		{"defaults", nil, 256}, // the fixture's max_position_embeddings
		{"context length", []inference.LoadOption{inference.WithContextLen(8192)}, 8192},
		{"all layers", []inference.LoadOption{inference.WithGPULayers(-1)}, 256},
		{"slots", []inference.LoadOption{inference.WithParallelSlots(3)}, 256},
	}
	if dev.Backend == lmx.BackendCPU {
		// Only where the CPU is the default anyway: liblmx makes it MLX's default device for
		// the whole process.
		tests = append(tests, struct {
			name    string
			opts    []inference.LoadOption
			context int
		}{"cpu", []inference.LoadOption{inference.WithGPULayers(0)}, 256})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := load(t, "qwen3", tt.opts...)
			if got := m.Description().ContextLength; got != tt.context {
				t.Fatalf("context length %d, want %d", got, tt.context)
			}
			if ids, _ := collect(m.Generate(ctx, "Hello", inference.WithMaxTokens(3), WithIgnoreEOS())); len(ids) != 3 {
				t.Fatalf("generated %v, %v", ids, m.Err())
			}
		})
	}
}

// Every fixture Discover finds loads, and agrees with what Discover read.
func TestDiscoverFixtures(t *testing.T) {
	found, err := inference.Discover(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]inference.DiscoveredModel{}
	for _, d := range found {
		byName[filepath.Base(d.Path)] = d
	}
	for _, name := range []string{"qwen3", "gemma3", "qwen3_q4", "llama_tied"} {
		if _, ok := byName[name]; !ok {
			t.Fatalf("Discover did not find %s (found %v)", name, found)
		}
	}
	if d := byName["qwen3_q4"]; d.QuantBits != 4 || d.QuantGroup != 32 || d.ModelType != "qwen3" {
		t.Fatalf("qwen3_q4: %+v", d)
	}
	// Two weight shards and reference.safetensors.
	if d := byName["llama_tied"]; d.NumFiles != 3 {
		t.Fatalf("llama_tied: %+v, want 3 files", d)
	}
	for _, d := range found {
		m, err := inference.LoadModel(d.Path)
		if err != nil {
			t.Fatalf("%s: %v", d.Path, err)
		}
		info := m.Info()
		m.Close()
		if filepath.Ext(d.Path) == ".gguf" {
			// A GGUF file's quantization is per tensor type: Discover reports none (see
			// DiscoveredModel), whatever the loaded model's packed layers use.
			if d.QuantBits != 0 || d.QuantGroup != 0 {
				t.Fatalf("%s: loaded %+v, discovered %+v", d.Path, info, d)
			}
			continue
		}
		if info.QuantBits != d.QuantBits || info.QuantGroup != d.QuantGroup {
			t.Fatalf("%s: loaded %+v, discovered %+v", d.Path, info, d)
		}
	}
}

func TestMemoryFunctions(t *testing.T) {
	prev, err := SetCacheLimit(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := SetCacheLimit(prev); err != nil || back != 64<<20 {
		t.Fatalf("SetCacheLimit returned %d, %v", back, err)
	}
	prevMem, err := SetMemoryLimit(4 << 30)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := SetMemoryLimit(prevMem); err != nil || back != 4<<30 {
		t.Fatalf("SetMemoryLimit returned %d, %v", back, err)
	}
	if _, err := SetWiredLimit(0); err != nil {
		t.Fatal(err)
	}
	m := load(t, "gemma3")
	if err := ResetPeakMemory(); err != nil {
		t.Fatal(err)
	}
	_, _ = collect(m.Generate(ctx, "Hello", inference.WithMaxTokens(8)))
	active, err := ActiveMemory()
	if err != nil || active == 0 {
		t.Fatalf("ActiveMemory = %d, %v", active, err)
	}
	peak, err := PeakMemory()
	if err != nil || peak < active {
		t.Fatalf("PeakMemory = %d (active %d), %v", peak, active, err)
	}
	if err := ClearCache(); err != nil {
		t.Fatal(err)
	}
	if c, err := CacheMemory(); err != nil || c != 0 {
		t.Fatalf("CacheMemory after ClearCache = %d, %v", c, err)
	}
	if d, err := DeviceInfo(); err != nil || d.Backend == "" {
		t.Fatalf("DeviceInfo = %+v, %v", d, err)
	}
}

// A Model dropped without Close is freed by its cleanup (the safety net; Close is the
// contract): MLX's active memory goes back to where it was. The cleanup runs on another OS
// thread than the generation did, which is what left compiled graphs behind once (MLX's
// compile cache is per thread); a few rounds make that show.
func TestCleanupFreesADroppedModel(t *testing.T) {
	for round := range 3 {
		dropAModel(t, round)
	}
}

func dropAModel(t *testing.T, round int) {
	before, err := ActiveMemory()
	if err != nil {
		t.Fatal(err)
	}
	func() {
		m, err := Load(filepath.Join(fixtures, "gemma3"), inference.WithParallelSlots(2))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = collect(m.Generate(ctx, "Hello", inference.WithMaxTokens(4)))
		if a, _ := ActiveMemory(); a <= before {
			t.Fatalf("active memory %d with the model loaded, %d before", a, before)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if a, _ := ActiveMemory(); a <= before {
			return
		}
		if time.Now().After(deadline) {
			a, _ := ActiveMemory()
			t.Fatalf("round %d: active memory %d after dropping the model, %d before", round, a, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
