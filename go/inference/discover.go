package inference

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// DiscoveredModel is a model folder found by Discover.
type DiscoveredModel struct {
	// Path is the folder, absolute.
	Path string
	// ModelType is config.json's model_type.
	ModelType string
	// QuantBits and QuantGroup come from config.json's quantization {bits, group_size}; 0 for
	// a dense model.
	QuantBits  int
	QuantGroup int
	// NumFiles is the number of *.safetensors files.
	NumFiles int
}

// Discover looks for model folders: baseDir itself first, then its immediate subfolders in
// name order. A model folder holds a config.json that parses as JSON and at least one
// *.safetensors file. It fails only when baseDir cannot be read.
func Discover(baseDir string) ([]DiscoveredModel, error) {
	entries, err := os.ReadDir(baseDir)
	if err != nil {
		return nil, err
	}
	var found []DiscoveredModel
	if m, ok := probe(baseDir); ok {
		found = append(found, m)
	}
	for _, e := range entries {
		dir := filepath.Join(baseDir, e.Name())
		// Follow symbolic links: a link to a folder is a subfolder to the user.
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		if m, ok := probe(dir); ok {
			found = append(found, m)
		}
	}
	return found, nil
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
