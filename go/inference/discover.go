package inference

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// DiscoveredModel is a model folder or a GGUF file found by Discover.
type DiscoveredModel struct {
	// Path is the folder or the .gguf file, absolute.
	Path string
	// ModelType is config.json's model_type. For a GGUF file it is what the inspecting
	// backend reports: its ModelIdentity's Labels["model_type"], or else its Architecture.
	// liblmx reports the model_type the file's config.json would have ("llama", "qwen3",
	// "gemma3_text", ...), which the loaded model's ModelType() also says.
	ModelType string
	// QuantBits and QuantGroup come from config.json's quantization {bits, group_size}; 0 for
	// a dense model, and for a GGUF file as the backend reports it (liblmx: 0, the
	// quantization being per tensor type).
	QuantBits  int
	QuantGroup int
	// NumFiles is the number of *.safetensors files (1 for a GGUF file).
	NumFiles int
}

// Discover looks for models: baseDir itself first, then its immediate subfolders in name
// order, each followed by the GGUF files it holds in name order. A model folder holds a
// config.json that parses as JSON and at least one *.safetensors file. A GGUF file is named
// *.gguf and is listed when a registered backend that implements ModelPackInspector (the
// "metal" backend does, with liblmx reading the header) describes it; they are asked in
// Default's order, available ones only. With no such backend registered, or for a file none
// of them can describe (damaged, or of an architecture none runs), no GGUF file is listed.
// It fails only when baseDir cannot be read.
func Discover(baseDir string) ([]DiscoveredModel, error) {
	entries, err := os.ReadDir(baseDir)
	if err != nil {
		return nil, err
	}
	inspectors := modelInspectors()
	found := probeAll(baseDir, inspectors)
	for _, e := range entries {
		dir := filepath.Join(baseDir, e.Name())
		// Follow symbolic links: a link to a folder is a subfolder to the user.
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		found = append(found, probeAll(dir, inspectors)...)
	}
	return found, nil
}

// modelInspectors are the available registered backends that inspect model packs, in
// Default's order.
func modelInspectors() []ModelPackInspector {
	registryMu.RLock()
	names := slices.Sorted(maps.Keys(registry))
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	backends := make([]Backend, len(names))
	for i, n := range names {
		backends[i] = registry[n]
	}
	registryMu.RUnlock()
	var out []ModelPackInspector
	for _, b := range backends {
		if in, ok := b.(ModelPackInspector); ok && b.Available() {
			out = append(out, in)
		}
	}
	return out
}

// rank is a backend name's place in Default's order: the preferred names first.
func rank(name string) int {
	if i := slices.Index(preferred, name); i >= 0 {
		return i
	}
	return len(preferred)
}

// probeAll is the folder dir as a model, if it is one, then its GGUF files.
func probeAll(dir string, inspectors []ModelPackInspector) []DiscoveredModel {
	var found []DiscoveredModel
	if m, ok := probe(dir); ok {
		found = append(found, m)
	}
	if len(inspectors) == 0 {
		return found
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
	sort.Strings(files)
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			abs = f
		}
		if m, ok := inspectGGUF(abs, inspectors); ok {
			found = append(found, m)
		}
	}
	return found
}

// inspectGGUF is the GGUF file at path as the first inspector that describes it says.
func inspectGGUF(path string, inspectors []ModelPackInspector) (DiscoveredModel, bool) {
	for _, in := range inspectors {
		info, err := in.InspectModelPack(context.Background(), path)
		if err != nil || info == nil {
			continue
		}
		modelType := info.Model.Labels["model_type"]
		if modelType == "" {
			modelType = info.Model.Architecture
		}
		return DiscoveredModel{
			Path:       path,
			ModelType:  modelType,
			QuantBits:  info.Model.QuantBits,
			QuantGroup: info.Model.QuantGroup,
			NumFiles:   1,
		}, true
	}
	return DiscoveredModel{}, false
}

func probe(dir string) (DiscoveredModel, bool) {
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return DiscoveredModel{}, false
	}
	weights, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil || len(weights) == 0 {
		return DiscoveredModel{}, false
	}
	var cfg struct {
		ModelType    string `json:"model_type"`
		Quantization *struct {
			Bits      int `json:"bits"`
			GroupSize int `json:"group_size"`
		} `json:"quantization"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return DiscoveredModel{}, false
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	m := DiscoveredModel{Path: abs, ModelType: cfg.ModelType, NumFiles: len(weights)}
	if q := cfg.Quantization; q != nil {
		m.QuantBits, m.QuantGroup = q.Bits, q.GroupSize
	}
	return m, true
}
