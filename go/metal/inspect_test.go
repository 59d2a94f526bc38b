package metal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

// Inspect reads what Load will report, for every fixture folder, without loading.
func TestInspectAgreesWithLoad(t *testing.T) {
	entries, err := os.ReadDir(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		dir := filepath.Join(fixtures, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
			continue
		}
		n++
		got, err := Inspect(dir)
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		m, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		d := m.Description()
		m.Close()
		want := Description{
			Architecture: d.Architecture, ModelType: d.ModelType, NumLayers: d.NumLayers, HiddenSize: d.HiddenSize,
			NumHeads: d.NumHeads, NumKVHeads: d.NumKVHeads, HeadDim: d.HeadDim, VocabSize: d.VocabSize,
			ContextLength: d.ContextLength, QuantBits: d.QuantBits, QuantGroup: d.QuantGroup, Format: d.Format,
			NumExperts: d.NumExperts, ExpertsPerToken: d.ExpertsPerToken,
		}
		if got != want {
			t.Fatalf("%s: Inspect %+v\nload gives %+v", e.Name(), got, want)
		}
	}
	if n < 10 {
		t.Fatalf("only %d fixture folders", n)
	}
}

// ggufWriter writes GGUF headers (metadata only, no tensors): enough for Inspect, which
// never reads tensor data.
type ggufWriter struct {
	kv bytes.Buffer
	n  uint64
}

func (w *ggufWriter) str(b *bytes.Buffer, s string) {
	binary.Write(b, binary.LittleEndian, uint64(len(s)))
	b.WriteString(s)
}

func (w *ggufWriter) text(key, v string) *ggufWriter {
	w.str(&w.kv, key)
	binary.Write(&w.kv, binary.LittleEndian, uint32(8))
	w.str(&w.kv, v)
	w.n++
	return w
}

func (w *ggufWriter) u32(key string, v uint32) *ggufWriter {
	w.str(&w.kv, key)
	binary.Write(&w.kv, binary.LittleEndian, uint32(4))
	binary.Write(&w.kv, binary.LittleEndian, v)
	w.n++
	return w
}

func (w *ggufWriter) bytes() []byte {
	var b bytes.Buffer
	b.WriteString("GGUF")
	binary.Write(&b, binary.LittleEndian, uint32(3))
	binary.Write(&b, binary.LittleEndian, uint64(0)) // tensors
	binary.Write(&b, binary.LittleEndian, w.n)
	b.Write(w.kv.Bytes())
	return b.Bytes()
}

// tinyGGUF is the header of a small model of architecture arch.
func tinyGGUF(arch string) []byte {
	w := &ggufWriter{}
	w.text("general.architecture", arch).
		u32(arch+".embedding_length", 64).
		u32(arch+".block_count", 3).
		u32(arch+".feed_forward_length", 128).
		u32(arch+".attention.head_count", 4).
		u32(arch+".attention.head_count_kv", 2).
		u32(arch+".context_length", 2048).
		u32(arch+".vocab_size", 300)
	return w.bytes()
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A GGUF file is described from its header by liblmx: through Inspect, through the backend's
// InspectModelPack and so through inference.Discover (this package registers the backend).
func TestInspectGGUF(t *testing.T) {
	root := t.TempDir()
	llama := writeFile(t, filepath.Join(root, "tiny-llama.gguf"), tinyGGUF("llama"))
	gemma := writeFile(t, filepath.Join(root, "sub", "tiny-gemma.gguf"), tinyGGUF("gemma3"))
	good := tinyGGUF("qwen3")
	writeFile(t, filepath.Join(root, "truncated.gguf"), good[:len(good)-3])
	writeFile(t, filepath.Join(root, "phi.gguf"), tinyGGUF("phi3"))
	notGGUF := writeFile(t, filepath.Join(root, "notes.txt"), []byte("hello"))

	d, err := Inspect(llama)
	if err != nil {
		t.Fatal(err)
	}
	want := Description{Architecture: "llama", ModelType: "llama", NumLayers: 3, HiddenSize: 64, NumHeads: 4, NumKVHeads: 2,
		HeadDim: 16, VocabSize: 300, ContextLength: 2048, Format: "gguf"}
	if d != want {
		t.Fatalf("Inspect = %+v\nwant %+v", d, want)
	}
	if d, err := Inspect(gemma); err != nil || d.Architecture != "gemma3" || d.ModelType != "gemma3_text" {
		t.Fatalf("gemma: %+v, %v", d, err)
	}
	for _, c := range []struct {
		path string
		want *lmx.Error
	}{
		{filepath.Join(root, "truncated.gguf"), lmx.ErrFormat},
		{filepath.Join(root, "phi.gguf"), lmx.ErrUnsupported},
		{filepath.Join(root, "missing.gguf"), lmx.ErrNotFound},
		{notGGUF, lmx.ErrInvalidArgument},
		{root, lmx.ErrNotFound}, // a folder without config.json
	} {
		if _, err := Inspect(c.path); !errors.Is(err, c.want) {
			t.Errorf("Inspect(%s) = %v, want %v", filepath.Base(c.path), err, c.want)
		}
	}

	in, err := Backend{}.InspectModelPack(ctx, llama)
	if err != nil || !in.Supported || in.Format != "gguf" || in.Model.Architecture != "llama" || in.Model.NumLayers != 3 ||
		in.Model.ContextLength != 2048 || in.Model.Labels["model_type"] != "llama" {
		t.Fatalf("InspectModelPack = %+v, %v", in, err)
	}
	found, err := inference.Discover(root)
	if err != nil {
		t.Fatal(err)
	}
	wantFound := []inference.DiscoveredModel{
		{Path: llama, ModelType: "llama", NumFiles: 1},
		{Path: gemma, ModelType: "gemma3_text", NumFiles: 1},
	}
	if len(found) != 2 || found[0] != wantFound[0] || found[1] != wantFound[1] {
		t.Fatalf("Discover = %+v\nwant %+v", found, wantFound)
	}
}
