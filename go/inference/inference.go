// Package inference is the backend-neutral contract for running text models from Go: a
// registry of backends, the TextModel interface, generation and load options, and model
// discovery on disk.
//
// It mirrors the API of go-inference (module forge.lthn.ai/core/go-inference, February 2026):
// the same names, types, interfaces and option semantics. That module cannot be fetched from
// here (neither forge.lthn.ai/core/go-inference nor dappco.re/go/inference resolves through the
// Go module proxy), so liblmx ships this reimplementation instead of a vendored copy. Code
// written against it moves to the upstream module by changing the import path only; nothing
// in this package may be added that upstream lacks, with two marked exceptions, liblmx
// extensions that code reaches only by naming them, so code that does not still moves
// unchanged: sessions (session.go: StatefulModel, Session, SessionOption and NewSession) and
// the sentinels ErrNoBackend and ErrUnsupported (errors.go) that this package's own errors
// match.
//
// The contract follows upstream's current option and capability surface (go-inference's
// go/options.go, go/capability.go, go/contracts.go): the generate options WithMinP, WithSeed,
// WithSuppressTokens, WithMinTokensBeforeStop, WithDisablePromptReuse and WithMetricsSink,
// the load options WithAdapterPath and WithCacheMode, All, TokenizerModel, CapabilityReporter
// with its report types, and ModelPackInspector, which Discover asks about GGUF files.
//
// A program imports this package and a backend for its side effect:
//
//	import (
//		"liblmx/go/inference"
//		_ "liblmx/go/metal" // registers the "metal" backend (liblmx over MLX)
//	)
//
//	m, err := inference.LoadModel("/models/qwen3-0.6b")
//	if err != nil { ... }
//	defer m.Close()
//	for tok := range m.Chat(ctx, []inference.Message{{Role: "user", Content: "Hi"}}) {
//		fmt.Print(tok.Text)
//	}
//	if err := m.Err(); err != nil { ... }
package inference

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"
	"time"
)

// Token is one generated token: its id in the model's vocabulary and its text.
type Token struct {
	ID   int32
	Text string
}

// Message is one turn of a chat. Role is "system", "user", "assistant" or "tool". An
// assistant turn that called tools lists the calls in ToolCalls; a "tool" turn carries one
// call's result in Content, with the call's ID in ToolCallID and the tool's name in Name
// (the fields of OpenAI's chat messages).
type Message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID is the ID of the call whose result a "tool" message holds.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// Name is the tool's name on a "tool" message (some chat templates show it).
	Name string `json:"name,omitempty"`
}

// Tool is a function a model may call (OpenAI's "function" tool): its name, what it does,
// and the JSON Schema of its arguments (nil = takes no arguments).
type Tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// ClassifyResult is the next token after one prompt, with that position's logits when
// WithLogits was given.
type ClassifyResult struct {
	Token  Token
	Logits []float32
}

// BatchResult is the outcome of one prompt of a BatchGenerate call.
type BatchResult struct {
	Tokens []Token
	Err    error
}

// GenerateMetrics measures one call.
type GenerateMetrics struct {
	PromptTokens    int
	GeneratedTokens int

	PrefillDuration time.Duration
	DecodeDuration  time.Duration
	TotalDuration   time.Duration

	PrefillTokensPerSec float64
	DecodeTokensPerSec  float64

	PeakMemoryBytes   uint64
	ActiveMemoryBytes uint64
}

// ModelInfo describes a loaded model.
type ModelInfo struct {
	Architecture string
	VocabSize    int
	NumLayers    int
	HiddenSize   int
	QuantBits    int
	QuantGroup   int
}

// TextModel is a loaded text model.
//
// Generate and Chat return a sequence that generates while it is ranged over; after the loop,
// Err tells an error from a normal end (nil after an end-of-sequence token, a stop token or
// the token limit). Close frees the model.
type TextModel interface {
	Generate(ctx context.Context, prompt string, opts ...GenerateOption) iter.Seq[Token]
	Chat(ctx context.Context, messages []Message, opts ...GenerateOption) iter.Seq[Token]
	Classify(ctx context.Context, prompts []string, opts ...GenerateOption) ([]ClassifyResult, error)
	BatchGenerate(ctx context.Context, prompts []string, opts ...GenerateOption) ([]BatchResult, error)
	ModelType() string
	Info() ModelInfo
	Metrics() GenerateMetrics
	Err() error
	Close() error
}

// Backend loads models; backends register themselves with Register, usually in init.
type Backend interface {
	Name() string
	LoadModel(path string, opts ...LoadOption) (TextModel, error)
	Available() bool
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Backend{}
)

// preferred is the order Default tries before any other available backend.
var preferred = []string{"metal", "rocm", "llama_cpp"}

// Register adds a backend under its Name, replacing one registered under the same name.
func Register(b Backend) {
	if b == nil {
		return
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	registry[b.Name()] = b
}

// Get returns the backend registered under name.
func Get(name string) (Backend, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	b, ok := registry[name]
	return b, ok
}

// List returns the names of the registered backends, sorted.
func List() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Sorted(maps.Keys(registry))
}

// All iterates over the registered backends by name, as registered when it is called.
func All() iter.Seq2[string, Backend] {
	registryMu.RLock()
	snapshot := maps.Clone(registry)
	registryMu.RUnlock()
	return maps.All(snapshot)
}

// Default returns the first available backend among "metal", "rocm" and "llama_cpp", in that
// order, and otherwise any available one (by name order). It fails (ErrNoBackend) when none
// is registered or available.
func Default() (Backend, error) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	if len(registry) == 0 {
		return nil, contractErr(ErrNoBackend, "inference: no backends registered (import a backend package)")
	}
	for _, name := range preferred {
		if b, ok := registry[name]; ok && b.Available() {
			return b, nil
		}
	}
	for _, name := range slices.Sorted(maps.Keys(registry)) {
		if b := registry[name]; b.Available() {
			return b, nil
		}
	}
	return nil, contractErr(ErrNoBackend, fmt.Sprintf("inference: no registered backend is available (registered: %v)", slices.Sorted(maps.Keys(registry))))
}

// LoadModel loads the model at path with the backend named by WithBackend, or with Default.
// An error matching ErrNoBackend says no backend could be used; the backend's own errors come
// as it returns them.
func LoadModel(path string, opts ...LoadOption) (TextModel, error) {
	cfg := ApplyLoadOpts(opts)
	if cfg.Backend == "" {
		b, err := Default()
		if err != nil {
			return nil, err
		}
		return b.LoadModel(path, opts...)
	}
	b, ok := Get(cfg.Backend)
	if !ok {
		return nil, contractErr(ErrNoBackend, fmt.Sprintf("inference: backend %q not registered", cfg.Backend))
	}
	if !b.Available() {
		return nil, contractErr(ErrNoBackend, fmt.Sprintf("inference: backend %q not available on this machine", cfg.Backend))
	}
	return b.LoadModel(path, opts...)
}
