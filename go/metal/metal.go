// Package metal is liblmx as the "metal" backend of the inference contract
// (liblmx/go/inference, a reimplementation of go-inference). Importing it for its side effect
// registers the backend:
//
//	import (
//		"liblmx/go/inference"
//		_ "liblmx/go/metal"
//	)
//
//	m, err := inference.LoadModel(dir, inference.WithParallelSlots(2))
//
// # What runs underneath
//
// liblmx runs models on Apple's MLX. On Apple silicon MLX computes with Metal; on Linux the
// same backend, still named "metal" so that programs written against the contract need no
// change, computes on MLX's CPU backend (or CUDA where MLX was built with it).
// Model.Backend, Model.Description and DeviceInfo say what actually computes.
//
// # Options
//
// Every option of the contract is honoured: MaxTokens (<= 0: until the context is full),
// Temperature, TopK, TopP (0 = off), MinP, Seed, StopTokens, SuppressTokens (never
// generated: liblmx's logit bias of -inf), MinTokensBeforeStop (until that many tokens, the
// end-of-sequence and stop tokens cannot be chosen and stop strings are not looked for),
// RepeatPenalty (0 = off), ReturnLogits (Classify only: liblmx has no per-token logits when
// streaming), DisablePromptReuse (the slot's or session's cache is emptied first, so the
// whole prompt is computed) and MetricsSink (called with the call's metrics when it ends, for
// Generate, Chat, Classify and BatchGenerate, on the goroutine that ran it), the output
// constraints JSONSchema, JSONObject, Regex, Grammar (Lark, llguidance's dialect) and Choices
// (at most one per call: more is an error matching lmx.ErrInvalidArgument that names them, as
// is a constraint that does not compile; nothing is generated then) and EnableThinking (the
// chat template's enable_thinking variable). Load options:
// ContextLen, GPULayers (0 = CPU; note that liblmx makes that MLX's default device for the
// whole process), ParallelSlots (see below), AdapterPath (a LoRA adapter, unfused, used by
// Generate, Chat and sessions) and CacheMode ("" or "native"; others are refused).
//
// liblmx can do more than the contract's GenerateConfig describes, and that struct must keep
// upstream's exact fields. The extra settings are therefore ordinary inference.GenerateOption
// values that mix freely with the contract's:
//
//	m.Generate(ctx, prompt, inference.WithSeed(42), metal.WithStopStrings("\n\n"), metal.WithIgnoreEOS())
//
// WithStopStrings, WithSystemPrompt, WithIgnoreEOS and WithAdapter (WithMinP and WithSeed
// remain as deprecated names of the contract's options). This package applies the options
// itself, to a config it has just allocated, and while it does so a metal option recognises
// that config and records its value beside it; applied anywhere else
// (inference.ApplyGenerateOpts, another backend) a metal option does nothing, like any option
// a backend does not know. Nothing is stored beyond the one apply call.
//
// # Capabilities
//
// Model implements inference.CapabilityReporter (Capabilities lists every capability id of
// the contract as supported or unsupported, truthfully: the package's tests exercise each
// supported one) and inference.TokenizerModel (Encode, Decode, ApplyChatTemplate). Backend
// implements inference.ModelPackInspector: liblmx describes a model folder or GGUF file from
// its config or header alone (Inspect), which is how inference.Discover lists GGUF files.
//
// # Concurrency and ParallelSlots
//
// A Model is safe for concurrent use. It keeps ParallelSlots liblmx sessions (default 1), each
// with its own KV cache; a Generate or Chat holds one from its first token to its end, so at
// most ParallelSlots generations run at once and the others wait (a waiting call gives up when
// its context ends). Sessions take turns on the device step by step (one prefill chunk or
// decoded token at a time), so more slots bring concurrency and prefix reuse per slot, not
// more total throughput on one device. Classify and BatchGenerate do not use the slots.
//
// Err and Metrics describe the last call that finished on the model, whichever goroutine made
// it; with concurrent calls, read them where the calls are ordered.
//
// # Sessions
//
// Model implements inference.StatefulModel: NewSession makes a *Session, a conversation of
// its own whose KV cache lives from one call to the next, so each call computes only what
// follows the cached prefix of its prompt (Chat takes the full conversation each time).
// Session.Fork branches it without copying the cache, Session.Save writes it to a file and
// Model.LoadSession restores it; WithKVBits, WithKVGroupSize and WithKVQuantStart quantize
// its cache. One generation runs at a time on a session; a session keeps working after
// Model.Close, until it is closed itself.
//
//	s, err := m.NewSession()
//	if err != nil { ... }
//	defer s.Close()
//	history := []inference.Message{{Role: "user", Content: "Hi"}}
//	for tok := range s.Chat(ctx, history) { ... }
//
// # Errors
//
// Failures are *lmx.Error values carrying liblmx's status and message (which names the file,
// tensor or setting at fault); match them with errors.Is against lmx.ErrNotFound,
// lmx.ErrFormat, lmx.ErrInvalidArgument and the other sentinels of liblmx/go/lmx. Options this
// package refuses before calling liblmx give *lmx.Error values too (lmx.ErrInvalidArgument,
// lmx.ErrUnsupported). After a Generate or Chat whose context ended, Err() is the context's
// error (context.Canceled or context.DeadlineExceeded). Calls on a closed object fail with
// ErrClosed (a Model), ErrSessionClosed (a Session) or ErrAdapterClosed (an Adapter given to
// WithAdapter); errors.Is(err, ErrClosed) matches all three.
//
// # Memory
//
// Close frees native memory at once (a generation still running frees its session when it
// ends); a Model dropped without Close is freed by a cleanup when the garbage collector
// finds it, which may be late. SetMemoryLimit, SetCacheLimit, ActiveMemory and the other
// memory functions control and read MLX's allocator for the whole process.
package metal

import (
	"context"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

// Name is the name this backend registers under.
const Name = "metal"

func init() {
	inference.Register(Backend{})
}

// Backend is the "metal" inference.Backend.
type Backend struct{}

var _ inference.Backend = Backend{}

// Name is "metal".
func (Backend) Name() string { return Name }

// Available is true when the linked liblmx is of this package's ABI generation and MLX can
// describe its device.
func (Backend) Available() bool {
	if abi() != lmx.ABIVersion {
		return false
	}
	_, err := lmx.DeviceInfo()
	return err == nil
}

var _ inference.ModelPackInspector = Backend{}

// LoadModel loads the model in folder path; see Load.
func (Backend) LoadModel(path string, opts ...inference.LoadOption) (inference.TextModel, error) {
	m, err := Load(path, opts...)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// InspectModelPack describes the model folder or GGUF file at path without loading it (see
// Inspect): Supported is true, Model carries the architecture family, sizes, context length
// and quantization, with config.json's model_type in Model.Labels["model_type"] (which
// inference.Discover reports as the ModelType). A path liblmx cannot load gives an
// *lmx.Error (lmx.ErrUnsupported for an architecture it does not run).
func (Backend) InspectModelPack(ctx context.Context, path string) (*inference.ModelPackInspection, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := Inspect(path)
	if err != nil {
		return nil, err
	}
	return &inference.ModelPackInspection{
		Path:      path,
		Format:    d.Format,
		Model:     modelIdentity(path, d, nil),
		Supported: true,
	}, nil
}

// Inspect describes the model folder or GGUF file at path as Load would, without loading
// it: liblmx reads only the GGUF header or the folder's config.json. It fills Architecture,
// ModelType, NumLayers, HiddenSize, NumHeads, NumKVHeads, HeadDim, VocabSize, ContextLength
// (the model's own), QuantBits and QuantGroup (config.json's default quantization; 0 for a
// GGUF file, whose quantization is per tensor type) and Format; the fields that need the
// weights or the tokenizer stay zero. Errors are *lmx.Error values: lmx.ErrNotFound,
// lmx.ErrFormat (a damaged header or config), lmx.ErrUnsupported (an architecture liblmx does
// not run), lmx.ErrInvalidArgument (neither a folder nor a GGUF file).
func Inspect(path string) (Description, error) { return modelInspect(path) }

// DeviceInfo describes the device MLX computes on.
func DeviceInfo() (lmx.Device, error) { return lmx.DeviceInfo() }

// SetMemoryLimit sets MLX's memory limit in bytes and returns the previous one.
func SetMemoryLimit(bytes uint64) (uint64, error) { return lmx.SetMemoryLimit(bytes) }

// SetCacheLimit sets the limit of MLX's buffer cache in bytes (0 disables it) and returns
// the previous one.
func SetCacheLimit(bytes uint64) (uint64, error) { return lmx.SetCacheLimit(bytes) }

// SetWiredLimit sets the wired memory limit in bytes (Metal only; ignored elsewhere) and
// returns the previous one.
func SetWiredLimit(bytes uint64) (uint64, error) { return lmx.SetWiredLimit(bytes) }

// ActiveMemory is the number of bytes held by live MLX arrays.
func ActiveMemory() (uint64, error) { return lmx.ActiveMemory() }

// PeakMemory is the highest active memory since start or the last ResetPeakMemory.
func PeakMemory() (uint64, error) { return lmx.PeakMemory() }

// CacheMemory is the number of bytes in MLX's buffer cache.
func CacheMemory() (uint64, error) { return lmx.CacheMemory() }

// ResetPeakMemory resets the peak counter to the current active memory.
func ResetPeakMemory() error { return lmx.ResetPeakMemory() }

// ClearCache returns MLX's buffer cache to the system.
func ClearCache() error { return lmx.ClearCache() }
