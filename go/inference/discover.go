package inference

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DiscoveredModel is a model folder or a GGUF file found by Discover.
type DiscoveredModel struct {
	// Path is the folder or the .gguf file, absolute.
	Path string
	// ModelType is config.json's model_type; for a GGUF file, its general.architecture.
	ModelType string
	// QuantBits and QuantGroup come from config.json's quantization {bits, group_size}; 0 for
	// a dense model and for a GGUF file (whose tensor types Description.Conversions reports
	// once loaded).
	QuantBits  int
	QuantGroup int
	// NumFiles is the number of *.safetensors files (1 for a GGUF file).
	NumFiles int
}

// Discover looks for models: baseDir itself first, then its immediate subfolders in name
// order, each followed by the GGUF files it holds in name order. A model folder holds a
// config.json that parses as JSON and at least one *.safetensors file; a GGUF file is named
// *.gguf and has a GGUF header naming its architecture. It fails only when baseDir cannot be
// read.
func Discover(baseDir string) ([]DiscoveredModel, error) {
	entries, err := os.ReadDir(baseDir)
	if err != nil {
		return nil, err
	}
	found := probeAll(baseDir)
	for _, e := range entries {
		dir := filepath.Join(baseDir, e.Name())
		// Follow symbolic links: a link to a folder is a subfolder to the user.
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		found = append(found, probeAll(dir)...)
	}
	return found, nil
}

// probeAll is the folder dir as a model, if it is one, then its GGUF files.
func probeAll(dir string) []DiscoveredModel {
	var found []DiscoveredModel
	if m, ok := probe(dir); ok {
		found = append(found, m)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
	sort.Strings(files)
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		arch, err := ggufArchitecture(f)
		if err != nil {
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			abs = f
		}
		found = append(found, DiscoveredModel{Path: abs, ModelType: arch, NumFiles: 1})
	}
	return found
}

// ggufArchitecture reads a GGUF file's metadata as far as general.architecture.
func ggufArchitecture(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var head struct {
		Magic   [4]byte
		Version uint32
		Tensors uint64
		KVs     uint64
	}
	if err := binary.Read(r, binary.LittleEndian, &head); err != nil {
		return "", err
	}
	if string(head.Magic[:]) != "GGUF" || head.Version < 2 || head.Version > 3 {
		return "", errors.New("not a GGUF file of version 2 or 3")
	}
	for i := uint64(0); i < head.KVs && i < 1<<16; i++ {
		key, err := ggufString(r)
		if err != nil {
			return "", err
		}
		var typ uint32
		if err := binary.Read(r, binary.LittleEndian, &typ); err != nil {
			return "", err
		}
		if key == "general.architecture" {
			if typ != ggufTypeString {
				return "", errors.New("general.architecture is not a string")
			}
			return ggufString(r)
		}
		if err := ggufSkip(r, typ, 0); err != nil {
			return "", err
		}
	}
	return "", errors.New("no general.architecture")
}

const ggufTypeString, ggufTypeArray = 8, 9

// ggufFixed is the size of GGUF's fixed-size value types (0 for the others).
func ggufFixed(typ uint32) int64 {
	switch typ {
	case 0, 1, 7: // uint8, int8, bool
		return 1
	case 2, 3: // uint16, int16
		return 2
	case 4, 5, 6: // uint32, int32, float32
		return 4
	case 10, 11, 12: // uint64, int64, float64
		return 8
	}
	return 0
}

func ggufString(r *bufio.Reader) (string, error) {
	var n uint64
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return "", err
	}
	if n > 1<<20 {
		return "", errors.New("a metadata string of more than 1 MiB")
	}
	var b strings.Builder
	if _, err := io.CopyN(&b, r, int64(n)); err != nil {
		return "", err
	}
	return b.String(), nil
}

// ggufSkip reads past a value of type typ.
func ggufSkip(r *bufio.Reader, typ uint32, depth int) error {
	if n := ggufFixed(typ); n > 0 {
		_, err := r.Discard(int(n))
		return err
	}
	switch typ {
	case ggufTypeString:
		var n uint64
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
			return err
		}
		_, err := io.CopyN(io.Discard, r, int64(n&(1<<62-1)))
		return err
	case ggufTypeArray:
		if depth > 3 {
			return errors.New("metadata arrays nested too deep")
		}
		var elem uint32
		var n uint64
		if err := binary.Read(r, binary.LittleEndian, &elem); err != nil {
			return err
		}
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
			return err
		}
		if size := ggufFixed(elem); size > 0 {
			_, err := io.CopyN(io.Discard, r, int64(n&(1<<40-1))*size)
			return err
		}
		for j := uint64(0); j < n; j++ {
			if err := ggufSkip(r, elem, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("unknown metadata type")
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
