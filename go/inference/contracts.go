package inference

import "context"

// ModelPackInspection is what a backend tells about a model on disk without loading its
// weights.
type ModelPackInspection struct {
	Path         string            `json:"path,omitempty"`
	Format       string            `json:"format,omitempty"`
	Model        ModelIdentity     `json:"model"`
	Tokenizer    TokenizerIdentity `json:"tokenizer"`
	Supported    bool              `json:"supported,omitempty"`
	Capabilities []Capability      `json:"capabilities,omitempty"`
	Notes        []string          `json:"notes,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// ModelPackInspector is a backend that can describe a model folder or file without loading
// it. Discover asks the registered ones about GGUF files.
type ModelPackInspector interface {
	InspectModelPack(ctx context.Context, path string) (*ModelPackInspection, error)
}
