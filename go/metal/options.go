package metal

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"

	"liblmx/go/inference"
)

// extras are the generation settings liblmx has and inference.GenerateConfig lacks.
type extras struct {
	stopStrings  []string
	systemPrompt string
	hasSystem    bool
	ignoreEOS    bool
	// adapterSet says WithAdapter was given: adapter (nil = the base model) at adapterScale
	// replaces the model's own adapter (WithAdapterPath) for the call.
	adapterSet   bool
	adapter      *Adapter
	adapterScale float32
	// replySink is WithReplySink's function (nil = none).
	replySink func(Reply)
}

// applying maps the *inference.GenerateConfig that this package is applying options to, for
// the duration of that one applyOptions call only, to the extras being collected. An entry
// exists only while applyOptions runs, so nothing accumulates; a metal option applied to any
// other config (by inference.ApplyGenerateOpts, or by another backend) finds no entry and
// does nothing, as an unknown option should.
var applying sync.Map // *inference.GenerateConfig -> *extras

// extra returns an option that edits the extras collected for the config it is applied to.
func extra(set func(*extras)) inference.GenerateOption {
	return func(c *inference.GenerateConfig) {
		if x, ok := applying.Load(c); ok {
			set(x.(*extras))
		}
	}
}

// applyOptions is inference.ApplyGenerateOpts that also collects this package's options.
func applyOptions(opts []inference.GenerateOption) (inference.GenerateConfig, extras) {
	cfg := new(inference.GenerateConfig)
	*cfg = inference.ApplyGenerateOpts(nil)
	var x extras
	applying.Store(cfg, &x)
	defer applying.Delete(cfg)
	for _, o := range opts {
		if o != nil {
			o(cfg)
		}
	}
	return *cfg, x
}

// WithMinP is inference.WithMinP.
//
// Deprecated: the contract has the option now; use inference.WithMinP.
func WithMinP(p float32) inference.GenerateOption { return inference.WithMinP(p) }

// WithSeed is inference.WithSeed.
//
// Deprecated: the contract has the option now; use inference.WithSeed.
func WithSeed(seed uint64) inference.GenerateOption { return inference.WithSeed(seed) }

// WithStopStrings ends generation at any of the strings; no text at or after a stop string
// is returned.
func WithStopStrings(stops ...string) inference.GenerateOption {
	return extra(func(x *extras) { x.stopStrings = append([]string(nil), stops...) })
}

// WithSystemPrompt puts a system message with this content before the messages of a Chat
// call. Generate ignores it.
func WithSystemPrompt(prompt string) inference.GenerateOption {
	return extra(func(x *extras) { x.systemPrompt, x.hasSystem = prompt, true })
}

// WithIgnoreEOS keeps generating past the model's end-of-sequence tokens, up to MaxTokens
// (stop tokens and stop strings still apply): for benchmarks and reference comparisons.
func WithIgnoreEOS() inference.GenerateOption {
	return extra(func(x *extras) { x.ignoreEOS = true })
}

// Reply is the assistant message of a finished Generate or Chat, as liblmx split the output:
// Message.Content is the visible text (without reasoning or tool calls), Message.ToolCalls
// the calls found when tools were offered (each with an ID, Type "function" and its
// arguments as JSON text), and Reasoning the model's thinking, withheld from the stream when
// inference.WithEnableThinking or WithThinkingBudget was given.
type Reply struct {
	Message   inference.Message
	Reasoning string
}

// WithReplySink hands fn the call's Reply when its generation ends (also one the caller
// broke out of), on the goroutine that ran it, before the sequence returns. It is the way to
// the reasoning and the parsed tool calls of a Chat or Generate.
func WithReplySink(fn func(Reply)) inference.GenerateOption {
	return extra(func(x *extras) { x.replySink = fn })
}

// params maps the contract's settings onto liblmx's. The contract's zero values mean "off"
// where liblmx's "off" is another number (TopP and RepeatPenalty: 1). MaxTokens <= 0 means
// "until the context is full". SuppressTokens become liblmx's logit bias of -inf and
// MinTokensBeforeStop its min_tokens. Out-of-range values go to liblmx as they are, which
// refuses them with LMX_STATUS_INVALID_ARGUMENT and a message naming the setting; those that
// would not survive the conversion to C are refused here the same way.
func params(cfg inference.GenerateConfig, x extras, contextLen int) (genParams, error) {
	g := genParams{
		temperature:       cfg.Temperature,
		topP:              cfg.TopP,
		minP:              cfg.MinP,
		repetitionPenalty: cfg.RepeatPenalty,
		seed:              cfg.Seed,
		useSeed:           cfg.SeedSet,
		stopTokens:        cfg.StopTokens,
		stopStrings:       x.stopStrings,
		ignoreEOS:         x.ignoreEOS,
		banned:            cfg.SuppressTokens,
	}
	switch {
	case cfg.MaxTokens > math.MaxUint32:
		g.maxTokens = math.MaxUint32
	case cfg.MaxTokens > 0:
		g.maxTokens = uint32(cfg.MaxTokens)
	default:
		g.maxTokens = uint32(max(contextLen, 1))
	}
	if cfg.TopK < math.MinInt32 || cfg.TopK > math.MaxInt32 {
		return g, invalid(fmt.Sprintf("top_k %d is out of range", cfg.TopK))
	}
	g.topK = int32(cfg.TopK)
	for _, id := range cfg.SuppressTokens {
		if id < 0 {
			return g, invalid(fmt.Sprintf("WithSuppressTokens: token id %d is negative", id))
		}
	}
	if cfg.MinTokensBeforeStop < 0 {
		return g, invalid(fmt.Sprintf("WithMinTokensBeforeStop(%d): the count must be >= 0", cfg.MinTokensBeforeStop))
	}
	g.minTokens = uint32(min(cfg.MinTokensBeforeStop, math.MaxUint32))
	if err := constraint(cfg, &g); err != nil {
		return g, err
	}
	if cfg.ThinkingBudget < 0 || cfg.ThinkingBudget > math.MaxUint32 {
		return g, invalid(fmt.Sprintf("WithThinkingBudget(%d) is out of range (0 = no limit)", cfg.ThinkingBudget))
	}
	g.thinkingBudget = uint32(cfg.ThinkingBudget)
	// With thinking asked about, the reasoning is reported apart (Reply.Reasoning) rather
	// than streamed as answer text.
	g.splitReasoning = cfg.EnableThinking != nil || cfg.ThinkingBudget > 0
	var err error
	if g.toolsJSON, err = toolsJSON(cfg.Tools); err != nil {
		return g, err
	}
	g.toolChoice = cfg.ToolChoice
	if cfg.EnableThinking != nil {
		// The chat templates of thinking models read enable_thinking (Qwen 3's and others').
		extra, err := json.Marshal(map[string]any{"enable_thinking": *cfg.EnableThinking})
		if err != nil {
			return g, invalid(err.Error())
		}
		g.templateExtra = string(extra)
	}
	if g.topP == 0 {
		g.topP = 1
	}
	if g.repetitionPenalty == 0 {
		g.repetitionPenalty = 1
	}
	return g, nil
}

// constraint puts the output constraint of cfg into g. The contract's five constraint fields
// are one choice: more than one set is refused, naming them, rather than one silently
// winning.
func constraint(cfg inference.GenerateConfig, g *genParams) error {
	var given []string
	if cfg.JSONSchema != "" {
		given = append(given, "WithJSONSchema")
		g.constraint, g.constraintText = constraintJSONSchema, cfg.JSONSchema
	}
	if cfg.JSONObject {
		given = append(given, "WithJSONObject")
		g.constraint, g.constraintText = constraintJSONObject, ""
	}
	if cfg.Regex != "" {
		given = append(given, "WithRegex")
		g.constraint, g.constraintText = constraintRegex, cfg.Regex
	}
	if cfg.Grammar != "" {
		given = append(given, "WithGrammar")
		g.constraint, g.constraintText = constraintGrammar, cfg.Grammar
	}
	if len(cfg.Choices) > 0 {
		given = append(given, "WithChoices")
		g.constraint, g.constraintText, g.choices = constraintChoice, "", cfg.Choices
	}
	if len(given) > 1 {
		return invalid(fmt.Sprintf("at most one output constraint per call, given %s", strings.Join(given, ", ")))
	}
	return nil
}

// toolsJSON is tools as OpenAI's request writes them: [{"type":"function","function":{...}}]
// ("" for none).
func toolsJSON(tools []inference.Tool) (string, error) {
	if len(tools) == 0 {
		return "", nil
	}
	type tool struct {
		Type     string         `json:"type"`
		Function inference.Tool `json:"function"`
	}
	list := make([]tool, len(tools))
	for i, t := range tools {
		if t.Name == "" {
			return "", invalid(fmt.Sprintf("WithTools: tool %d has no name", i))
		}
		if len(t.Parameters) > 0 && !json.Valid(t.Parameters) {
			return "", invalid(fmt.Sprintf("WithTools: the parameters of tool %q are not valid JSON", t.Name))
		}
		list[i] = tool{Type: "function", Function: t}
	}
	data, err := json.Marshal(list)
	if err != nil {
		return "", invalid(fmt.Sprintf("WithTools: %v", err))
	}
	return string(data), nil
}

// toolCallsJSON is an assistant message's calls as OpenAI writes them, arguments as a JSON
// object: [{"id":...,"type":"function","function":{"name":...,"arguments":{...}}}] ("" for
// none).
func toolCallsJSON(calls []inference.ToolCall) (string, error) {
	if len(calls) == 0 {
		return "", nil
	}
	type function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	type call struct {
		ID       string   `json:"id,omitempty"`
		Type     string   `json:"type"`
		Function function `json:"function"`
	}
	list := make([]call, len(calls))
	for i, c := range calls {
		if c.Name == "" {
			return "", invalid(fmt.Sprintf("tool call %d of a message has no name", i))
		}
		args := json.RawMessage(c.ArgumentsJSON)
		if strings.TrimSpace(c.ArgumentsJSON) == "" {
			args = json.RawMessage("{}")
		} else if !json.Valid(args) {
			return "", invalid(fmt.Sprintf("tool call %q: its ArgumentsJSON is not valid JSON", c.Name))
		}
		typ := c.Type
		if typ == "" {
			typ = "function"
		}
		list[i] = call{ID: c.ID, Type: typ, Function: function{Name: c.Name, Arguments: args}}
	}
	data, err := json.Marshal(list)
	if err != nil {
		return "", invalid(err.Error())
	}
	return string(data), nil
}

// lastMessage is liblmx's JSON of a finished generation's assistant message.
type lastMessage struct {
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content"`
	ToolCalls        []struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// reply decodes liblmx's JSON of an assistant message.
func reply(data string) (Reply, error) {
	var m lastMessage
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		return Reply{}, fmt.Errorf("metal: reading liblmx's message: %w", err)
	}
	r := Reply{Message: inference.Message{Role: "assistant", Content: m.Content}, Reasoning: m.ReasoningContent}
	for _, c := range m.ToolCalls {
		r.Message.ToolCalls = append(r.Message.ToolCalls, inference.ToolCall{
			ID: c.ID, Name: c.Function.Name, Type: c.Type, ArgumentsJSON: c.Function.Arguments,
		})
	}
	return r, nil
}
