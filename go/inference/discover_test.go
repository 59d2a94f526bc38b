package inference

import (
	"bytes"
	"encoding/binary"
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

// gguf is a GGUF header (version 3, no tensors) with a string array and then the given
// general.architecture.
func gguf(arch string) string {
	var b bytes.Buffer
	w := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	w(uint32(3))
	w(uint64(0)) // tensors
	w(uint64(3)) // key-value pairs
	str("general.name")
	w(uint32(8))
	str("tiny")
	str("tokenizer.ggml.tokens")
	w(uint32(9))
	w(uint32(8))
	w(uint64(2))
	str("a")
	str("b")
	str("general.architecture")
	w(uint32(8))
	str(arch)
	return b.String()
}

func TestDiscoverGGUF(t *testing.T) {
	root := tree(t, map[string]string{
		"z.gguf":                 gguf("qwen3"),
		"a.gguf":                 gguf("llama"),
		"not-gguf.gguf":          "GGUX....",
		"truncated.gguf":         gguf("gemma3")[:40],
		"named-otherwise.bin":    gguf("llama"),
		"m/config.json":          `{"model_type": "gemma3_text"}`,
		"m/model.safetensors":    "x",
		"m/gemma-3-270m.Q4.gguf": gguf("gemma3"),
	})
	got, err := Discover(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []DiscoveredModel{
		{Path: filepath.Join(root, "a.gguf"), ModelType: "llama", NumFiles: 1},
		{Path: filepath.Join(root, "z.gguf"), ModelType: "qwen3", NumFiles: 1},
		{Path: filepath.Join(root, "m"), ModelType: "gemma3_text", NumFiles: 1},
		{Path: filepath.Join(root, "m", "gemma-3-270m.Q4.gguf"), ModelType: "gemma3", NumFiles: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Discover:\n got %+v\nwant %+v", got, want)
	}
}
