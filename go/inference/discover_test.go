package inference

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// tree writes files (path relative to root -> contents) under a new temporary folder.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDiscover(t *testing.T) {
	const quant = `{"model_type": "qwen3", "quantization": {"bits": 4, "group_size": 64}}`
	root := tree(t, map[string]string{
		// The folder itself is a model and comes first.
		"config.json":       `{"model_type": "llama"}`,
		"model.safetensors": "x",
		// Subfolders, reported in name order.
		"b-dense/config.json":                      `{"model_type": "gemma3_text"}`,
		"b-dense/model-00001-of-00002.safetensors": "x",
		"b-dense/model-00002-of-00002.safetensors": "x",
		"a-quant/config.json":                      quant,
		"a-quant/model.safetensors":                "x",
		// Not models: no weights, no config, bad config, weights of another kind.
		"c-no-weights/config.json":       `{"model_type": "llama"}`,
		"d-no-config/model.safetensors":  "x",
		"e-bad-config/config.json":       `{not json`,
		"e-bad-config/model.safetensors": "x",
		"f-gguf/config.json":             `{"model_type": "llama"}`,
		"f-gguf/model.gguf":              "x",
		// Deeper folders are not searched.
		"g-parent/inner/config.json":       `{"model_type": "llama"}`,
		"g-parent/inner/model.safetensors": "x",
		// A plain file named like a folder is ignored.
		"h-file": "x",
	})
	got, err := Discover(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []DiscoveredModel{
		{Path: root, ModelType: "llama", NumFiles: 1},
		{Path: filepath.Join(root, "a-quant"), ModelType: "qwen3", QuantBits: 4, QuantGroup: 64, NumFiles: 1},
		{Path: filepath.Join(root, "b-dense"), ModelType: "gemma3_text", NumFiles: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Discover:\n got %+v\nwant %+v", got, want)
	}
}

func TestDiscoverCases(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		sub     string // folder to scan, relative to the tree
		want    []string
		wantErr bool
	}{
		{"empty folder", map[string]string{"x/.keep": ""}, "x", nil, false},
		{"missing folder", map[string]string{}, "nope", nil, true},
		{"only a subfolder", map[string]string{"m/config.json": `{"model_type":"mistral"}`, "m/w.safetensors": ""}, ".", []string{"m"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tree(t, tt.files)
			got, err := Discover(filepath.Join(root, tt.sub))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			var paths []string
			for _, m := range got {
				rel, _ := filepath.Rel(filepath.Join(root, tt.sub), m.Path)
				if !filepath.IsAbs(m.Path) {
					t.Errorf("path %q is not absolute", m.Path)
				}
				paths = append(paths, rel)
			}
			if !reflect.DeepEqual(paths, tt.want) {
				t.Fatalf("found %v, want %v", paths, tt.want)
			}
		})
	}
	// A relative baseDir gives absolute paths.
	root := tree(t, map[string]string{"m/config.json": `{}`, "m/w.safetensors": ""})
	t.Chdir(root)
	got, err := Discover(".")
	if err != nil || len(got) != 1 || got[0].Path != filepath.Join(root, "m") {
		t.Fatalf("Discover(.) = %+v, %v", got, err)
	}
}

// fakeInspector describes files whose text is "<model_type> <quant bits>"; others it refuses.
type fakeInspector struct {
	fakeBackend
	label bool // report the type as Labels["model_type"] (else as the Architecture)
	asked int
}

func (f *fakeInspector) InspectModelPack(_ context.Context, path string) (*ModelPackInspection, error) {
	f.asked++
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var typ string
	var bits int
	if n, _ := fmt.Sscanf(string(data), "%s %d", &typ, &bits); n != 2 {
		return nil, errors.New("not a model")
	}
	in := &ModelPackInspection{Path: path, Format: "gguf", Model: ModelIdentity{Architecture: typ, QuantBits: bits}}
	if f.label {
		in.Model.Architecture = "family-of-" + typ
		in.Model.Labels = map[string]string{"model_type": typ}
	}
	return in, nil
}

func TestDiscoverGGUF(t *testing.T) {
	root := tree(t, map[string]string{
		"z.gguf":                 "qwen3 0",
		"a.gguf":                 "llama 4",
		"not-a-model.gguf":       "GGUX....",
		"named-otherwise.bin":    "llama 0",
		"m/config.json":          `{"model_type": "gemma3_text"}`,
		"m/model.safetensors":    "x",
		"m/gemma-3-270m.Q4.gguf": "gemma3_text 0",
	})
	folder := DiscoveredModel{Path: filepath.Join(root, "m"), ModelType: "gemma3_text", NumFiles: 1}
	all := []DiscoveredModel{
		{Path: filepath.Join(root, "a.gguf"), ModelType: "llama", QuantBits: 4, NumFiles: 1},
		{Path: filepath.Join(root, "z.gguf"), ModelType: "qwen3", NumFiles: 1},
		folder,
		{Path: filepath.Join(root, "m", "gemma-3-270m.Q4.gguf"), ModelType: "gemma3_text", NumFiles: 1},
	}
	discover := func(t *testing.T, want []DiscoveredModel) {
		t.Helper()
		got, err := Discover(root)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Discover:\n got %+v\nwant %+v", got, want)
		}
	}
	t.Run("no inspector", func(t *testing.T) {
		withRegistry(t, &fakeBackend{name: "metal", available: true})
		discover(t, []DiscoveredModel{folder})
	})
	t.Run("unavailable inspector", func(t *testing.T) {
		in := &fakeInspector{fakeBackend: fakeBackend{name: "metal"}}
		withRegistry(t, in)
		discover(t, []DiscoveredModel{folder})
		if in.asked != 0 {
			t.Fatalf("an unavailable backend was asked %d times", in.asked)
		}
	})
	t.Run("inspector", func(t *testing.T) {
		withRegistry(t, &fakeInspector{fakeBackend: fakeBackend{name: "metal", available: true}})
		discover(t, all)
	})
	t.Run("model_type label", func(t *testing.T) {
		withRegistry(t, &fakeInspector{fakeBackend: fakeBackend{name: "zzz", available: true}, label: true})
		discover(t, all)
	})
	t.Run("order", func(t *testing.T) {
		// The preferred backend is asked first; the next one answers what it refuses.
		first := &fakeInspector{fakeBackend: fakeBackend{name: "metal", available: true}, label: true}
		other := &fakeInspector{fakeBackend: fakeBackend{name: "aaa", available: true}}
		withRegistry(t, first, other)
		discover(t, all)
		if first.asked != 4 || other.asked != 1 {
			t.Fatalf("asked metal %d times and aaa %d times; want 4 and 1 (the file metal refuses)", first.asked, other.asked)
		}
	})
}
