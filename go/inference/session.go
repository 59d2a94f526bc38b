package inference

import (
	"context"
	"fmt"
	"iter"
)

// SessionConfig says how a session keeps its KV cache. Zero values take the backend's
// defaults: the cache in the model's dtype.
type SessionConfig struct {
	// KVBits quantizes the cached keys and values to this many bits (4 or 8); 0 keeps the
	// model's dtype.
	KVBits int
	// KVGroupSize is how many values share one scale and bias when KVBits is set (32, 64 or
	// 128; it must divide the model's head dimension); 0 = the backend's default.
	KVGroupSize int
	// KVQuantStart quantizes once the session holds this many positions; 0 = from the first.
	KVQuantStart int
}

// SessionOption changes a SessionConfig.
type SessionOption func(*SessionConfig)

// WithKVBits quantizes the session's KV cache to bits per value (4 or 8; 0 = off).
func WithKVBits(bits int) SessionOption {
	return func(c *SessionConfig) { c.KVBits = bits }
}

// WithKVGroupSize sets the quantization group of the KV cache (values per scale and bias).
func WithKVGroupSize(n int) SessionOption {
	return func(c *SessionConfig) { c.KVGroupSize = n }
}

// WithKVQuantStart delays the KV cache's quantization until the session holds n positions.
func WithKVQuantStart(n int) SessionOption {
	return func(c *SessionConfig) { c.KVQuantStart = n }
}

// ApplySessionOpts returns the defaults (all zero) with opts applied in order; nil options
// are skipped.
func ApplySessionOpts(opts []SessionOption) SessionConfig {
	var cfg SessionConfig
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return cfg
}

// CacheInfo is what a session's KV cache holds.
type CacheInfo struct {
	// Positions is how many positions are cached: the prompt and generated tokens of the
	// session's calls so far, as far as they were computed.
	Positions int
	// KnownTokens is how many of them have known token ids: all, unless the cache was
	// restored from a file that holds none (mlx-lm's prompt caches); the next prompt is then
	// taken to follow the unknown ones.
	KnownTokens int
	// Bytes is the size of the cache's buffers; forked sessions share buffers, and each
	// counts them.
	Bytes uint64
	// KVBits and KVGroupSize are the cache's quantization (0 when none); it applies once the
	// session reaches its KVQuantStart.
	KVBits      int
	KVGroupSize int
}

// Session is one conversation with a model that keeps its KV cache between calls. A call
// whose prompt starts with the tokens the cache holds computes only the rest; a prompt that
// diverges reuses the common prefix and recomputes from there. One Generate or Chat runs at a
// time on a session (another one meanwhile yields nothing and Err says the session is busy);
// separate sessions (and the model's own Generate and Chat) run at once.
type Session interface {
	// Generate streams the continuation of prompt, the whole text so far (not only the new
	// part): for a conversation held as text, pass the previous prompt, the generated text
	// and the new turn.
	Generate(ctx context.Context, prompt string, opts ...GenerateOption) iter.Seq[Token]
	// Chat streams the answer to messages, the full conversation each time (not only the new
	// turn), rendered by the model's chat template: the cache reuses what the rendered text
	// has in common with what it holds. A template that renders past turns differently
	// (dropping an assistant's reasoning, say) recomputes from the first difference.
	Chat(ctx context.Context, messages []Message, opts ...GenerateOption) iter.Seq[Token]
	// Err is the error of the session's last Generate or Chat (nil after a normal end).
	Err() error
	// Metrics are those of the session's last Generate or Chat; PromptTokens counts the
	// whole prompt, cached or not.
	Metrics() GenerateMetrics
	// Fork makes a new session holding this one's cache (and settings): both continue from
	// here independently, and their common cache is not copied.
	Fork() (Session, error)
	// Save writes the cache and the tokens it holds to a file that the same model's
	// LoadSession restores.
	Save(path string) error
	// CacheInfo says what the cache holds.
	CacheInfo() (CacheInfo, error)
	// Close frees the session. It is idempotent; afterwards the other methods fail.
	Close() error
}

// StatefulModel is a TextModel that keeps sessions: conversations whose KV cache lives from
// one call to the next.
type StatefulModel interface {
	TextModel
	// NewSession makes an empty session with the options' cache settings. A session stays
	// usable after the model is closed, until it is closed itself.
	NewSession(opts ...SessionOption) (Session, error)
	// LoadSession restores a session that Save wrote from this model (the options apply to
	// what it caches from now on, unless the file's cache is quantized already). It fails
	// for a file of another model.
	LoadSession(path string, opts ...SessionOption) (Session, error)
}

// NewSession makes a session on m; it fails (ErrUnsupported) when m's backend keeps no
// sessions.
func NewSession(m TextModel, opts ...SessionOption) (Session, error) {
	s, ok := m.(StatefulModel)
	if !ok {
		return nil, contractErr(ErrUnsupported, fmt.Sprintf("inference: the %s model keeps no sessions in its backend", m.ModelType()))
	}
	return s.NewSession(opts...)
}
