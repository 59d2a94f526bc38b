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

// ReasoningSegment is one span of a model's reasoning ("thinking") text.
type ReasoningSegment struct {
	Kind       string            `json:"kind,omitempty"`
	Text       string            `json:"text,omitempty"`
	StartToken int               `json:"start_token,omitempty"`
	EndToken   int               `json:"end_token,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// ReasoningParseResult is a model's output split into the text a user sees and the
// reasoning spans taken out of it.
type ReasoningParseResult struct {
	VisibleText string             `json:"visible_text,omitempty"`
	Reasoning   []ReasoningSegment `json:"reasoning,omitempty"`
	Labels      map[string]string  `json:"labels,omitempty"`
}

// ReasoningParser is a model that can take the reasoning out of its own output, in the
// format of its family.
type ReasoningParser interface {
	ParseReasoning(tokens []Token, text string) (ReasoningParseResult, error)
}

// ToolCall is one tool call a model made: ArgumentsJSON is the arguments as JSON text.
type ToolCall struct {
	ID            string            `json:"id,omitempty"`
	Name          string            `json:"name,omitempty"`
	Type          string            `json:"type,omitempty"`
	ArgumentsJSON string            `json:"arguments_json,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
}

// ToolParseResult is a model's output split into the text a user sees and the tool calls
// taken out of it.
type ToolParseResult struct {
	VisibleText string            `json:"visible_text,omitempty"`
	Calls       []ToolCall        `json:"calls,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// ToolParser is a model that can find the tool calls in its own output, in the tool-call
// format of its family.
type ToolParser interface {
	ParseTools(tokens []Token, text string) (ToolParseResult, error)
}
