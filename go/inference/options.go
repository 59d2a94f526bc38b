package inference

import (
	"slices"
)

// GenerateConfig holds the settings of one Generate, Chat, Classify or BatchGenerate call.
// Zero values of TopK, TopP, MinP and RepeatPenalty mean "off".
type GenerateConfig struct {
	// MaxTokens caps the generated tokens. Default 256.
	MaxTokens int
	// Temperature 0 (the default) is greedy decoding.
	Temperature float32
	// TopK keeps the k most likely tokens; 0 = off.
	TopK int
	// TopP keeps the smallest set of tokens whose probability reaches p; 0 = off.
	TopP float32
	// MinP drops tokens less likely than MinP times the most likely one; 0 = off.
	MinP float32
	// TemperatureSet, TopKSet, TopPSet and MinPSet say that the option was given (by
	// WithTemperature, WithTopK, WithTopP, WithMinP), so that a zero value asked for can be
	// told from one left unset (a backend may fill unset ones from the model's defaults).
	TemperatureSet bool
	TopKSet        bool
	TopPSet        bool
	MinPSet        bool
	// Seed makes sampling reproducible when SeedSet (WithSeed sets both).
	Seed    uint64
	SeedSet bool
	// StopTokens end generation when sampled (they are not returned).
	StopTokens []int32
	// SuppressTokens can never be generated.
	SuppressTokens []int32
	// MinTokensBeforeStop holds back stopping (end-of-sequence and stop tokens) until this
	// many tokens were generated; 0 = off.
	MinTokensBeforeStop int
	// RepeatPenalty penalises recently seen tokens; 0 = off, 1 = no penalty.
	RepeatPenalty float32
	// ReturnLogits asks for raw logits in ClassifyResult.
	ReturnLogits bool
	// MetricsSink, when set, receives this call's GenerateMetrics once its generation ended,
	// on the goroutine that ran it: unlike Metrics(), which concurrent calls overwrite, it
	// belongs to this call alone. nil = not reported.
	MetricsSink func(GenerateMetrics) `json:"-"`
	// DisablePromptReuse makes this call compute its whole prompt: the backend's cache of an
	// earlier call's prompt is not reused (for callers whose calls share no prefix).
	DisablePromptReuse bool
	// EnableThinking toggles reasoning for models that support it (e.g. Gemma 4).
	// nil = model default; &true = on; &false = off. Backends ignore it when the
	// loaded architecture has no thinking mode.
	EnableThinking *bool
	// ThinkingBudget caps tokens spent inside a reasoning model's thought
	// channel; on overrun the backend forces the channel close so a visible
	// answer is produced rather than the whole budget being spent reasoning.
	// 0 = unlimited. Ignored by architectures with no thinking mode.
	ThinkingBudget int
	// JSONSchema, when not empty, is a JSON Schema the output must be a valid instance of.
	// JSONSchema, JSONObject, Regex, Grammar and Choices are constraints on the output; a
	// call may set at most one of them (a backend refuses more).
	JSONSchema string
	// JSONObject makes the output any JSON object.
	JSONObject bool
	// Regex, when not empty, is a regular expression the whole output must match.
	Regex string
	// Grammar, when not empty, is a Lark grammar (llguidance's dialect) the output must
	// belong to.
	Grammar string
	// Choices, when not empty, are the only outputs allowed: the output is one of them.
	Choices []string
	// Tools are the functions the model may call (nil = none); a backend puts them in the
	// chat template and finds the calls in the output.
	Tools []Tool
	// ToolChoice says how the tools are used: "" or "auto" (the model decides), "none" (no
	// call), "required" (at least one call) or the name of the one tool to call.
	ToolChoice string
}

// GenerateOption changes a GenerateConfig.
type GenerateOption func(*GenerateConfig)

// WithMaxTokens caps the number of generated tokens.
func WithMaxTokens(n int) GenerateOption {
	return func(c *GenerateConfig) { c.MaxTokens = n }
}

// WithTemperature sets the sampling temperature; 0 is greedy.
func WithTemperature(t float32) GenerateOption {
	return func(c *GenerateConfig) { c.Temperature, c.TemperatureSet = t, true }
}

// WithTopK keeps only the k most likely tokens; 0 disables it.
func WithTopK(k int) GenerateOption {
	return func(c *GenerateConfig) { c.TopK, c.TopKSet = k, true }
}

// WithTopP enables nucleus sampling with threshold p; 0 disables it.
func WithTopP(p float32) GenerateOption {
	return func(c *GenerateConfig) { c.TopP, c.TopPSet = p, true }
}

// WithMinP drops tokens less likely than p times the most likely one; 0 disables it.
func WithMinP(p float32) GenerateOption {
	return func(c *GenerateConfig) { c.MinP, c.MinPSet = p, true }
}

// WithSeed makes sampling reproducible: the same seed, prompt and options give the same
// tokens.
func WithSeed(seed uint64) GenerateOption {
	return func(c *GenerateConfig) { c.Seed, c.SeedSet = seed, true }
}

// WithStopTokens ends generation at any of the given token ids.
func WithStopTokens(ids ...int32) GenerateOption {
	return func(c *GenerateConfig) { c.StopTokens = slices.Clone(ids) }
}

// WithSuppressTokens keeps the given token ids from ever being generated.
func WithSuppressTokens(ids ...int32) GenerateOption {
	return func(c *GenerateConfig) { c.SuppressTokens = slices.Clone(ids) }
}

// WithMinTokensBeforeStop holds back stopping until n tokens were generated.
func WithMinTokensBeforeStop(n int) GenerateOption {
	return func(c *GenerateConfig) { c.MinTokensBeforeStop = n }
}

// WithRepeatPenalty penalises repeated tokens; 0 disables it, 1 is no penalty.
func WithRepeatPenalty(p float32) GenerateOption {
	return func(c *GenerateConfig) { c.RepeatPenalty = p }
}

// WithLogits asks Classify for each prompt's raw logits.
func WithLogits() GenerateOption {
	return func(c *GenerateConfig) { c.ReturnLogits = true }
}

// WithDisablePromptReuse makes the call compute its whole prompt instead of reusing what the
// backend cached from an earlier call.
func WithDisablePromptReuse() GenerateOption {
	return func(c *GenerateConfig) { c.DisablePromptReuse = true }
}

// WithMetricsSink hands this call's metrics to fn when its generation ends.
func WithMetricsSink(fn func(GenerateMetrics)) GenerateOption {
	return func(c *GenerateConfig) { c.MetricsSink = fn }
}

// WithEnableThinking sets the reasoning toggle for thinking-capable models.
// Pass nil for the model default, &true to force on, &false to force off.
//
//	off := false
//	m.Chat(ctx, msgs, inference.WithEnableThinking(&off)) // no reasoning
func WithEnableThinking(v *bool) GenerateOption {
	return func(c *GenerateConfig) { c.EnableThinking = v }
}

// WithThinkingBudget caps tokens spent in the thought channel; 0 = unlimited.
//
//	m.Chat(ctx, msgs, inference.WithThinkingBudget(256)) // think briefly, then answer
func WithThinkingBudget(tokens int) GenerateOption {
	return func(c *GenerateConfig) { c.ThinkingBudget = tokens }
}

// WithJSONSchema makes the output a JSON value valid against schema (a JSON Schema
// document).
//
//	m.Chat(ctx, msgs, inference.WithJSONSchema(`{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}`))
func WithJSONSchema(schema string) GenerateOption {
	return func(c *GenerateConfig) { c.JSONSchema = schema }
}

// WithJSONObject makes the output a JSON object (any object).
func WithJSONObject() GenerateOption {
	return func(c *GenerateConfig) { c.JSONObject = true }
}

// WithRegex makes the whole output match the regular expression rx.
//
//	m.Generate(ctx, "Year: ", inference.WithRegex(`[12][0-9]{3}`))
func WithRegex(rx string) GenerateOption {
	return func(c *GenerateConfig) { c.Regex = rx }
}

// WithGrammar makes the output belong to the language of a Lark grammar (llguidance's
// dialect; the start rule is "start").
func WithGrammar(lark string) GenerateOption {
	return func(c *GenerateConfig) { c.Grammar = lark }
}

// WithChoices makes the output exactly one of choices.
//
//	m.Chat(ctx, msgs, inference.WithChoices("positive", "negative"))
func WithChoices(choices ...string) GenerateOption {
	return func(c *GenerateConfig) { c.Choices = slices.Clone(choices) }
}

// WithTools offers the model functions to call; the backend shows them to the model
// through its chat template.
func WithTools(tools ...Tool) GenerateOption {
	return func(c *GenerateConfig) { c.Tools = slices.Clone(tools) }
}

// WithToolChoice says how the offered tools are used: "auto" (the default: the model
// decides), "none", "required" or a tool's name.
func WithToolChoice(choice string) GenerateOption {
	return func(c *GenerateConfig) { c.ToolChoice = choice }
}

// ApplyGenerateOpts returns the defaults (MaxTokens 256, Temperature 0) with opts applied in
// order; nil options are skipped.
func ApplyGenerateOpts(opts []GenerateOption) GenerateConfig {
	cfg := GenerateConfig{MaxTokens: 256, Temperature: 0}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return cfg
}

// LoadConfig holds the settings of a LoadModel call.
type LoadConfig struct {
	// Backend names the backend to use; "" picks Default().
	Backend string
	// ContextLen is the longest sequence (prompt and generated tokens); 0 = the model's own.
	ContextLen int
	// GPULayers is how many layers run on the GPU: -1 (the default) all, 0 none.
	GPULayers int
	// ParallelSlots is how many generations may run at once; 0 = the backend's default.
	ParallelSlots int
	// AdapterPath is a LoRA adapter folder the model generates with; "" = none.
	AdapterPath string
	// CacheMode is the KV cache mode: "" or "native" = the backend's default; other values
	// are backend-defined (a backend refuses one it does not have).
	CacheMode string
}

// LoadOption changes a LoadConfig.
type LoadOption func(*LoadConfig)

// WithBackend selects a registered backend by name.
func WithBackend(name string) LoadOption {
	return func(c *LoadConfig) { c.Backend = name }
}

// WithContextLen sets the context length; 0 keeps the model's own.
func WithContextLen(n int) LoadOption {
	return func(c *LoadConfig) { c.ContextLen = n }
}

// WithGPULayers sets how many layers run on the GPU: -1 all, 0 none (CPU only).
func WithGPULayers(n int) LoadOption {
	return func(c *LoadConfig) { c.GPULayers = n }
}

// WithParallelSlots sets how many Generate/Chat calls may run at once.
func WithParallelSlots(n int) LoadOption {
	return func(c *LoadConfig) { c.ParallelSlots = n }
}

// WithAdapterPath loads a LoRA adapter folder (adapter_config.json and the adapter's
// safetensors) with the model, without fusing it into the weights.
func WithAdapterPath(path string) LoadOption {
	return func(c *LoadConfig) { c.AdapterPath = path }
}

// WithCacheMode selects the backend's KV cache mode; "" and "native" keep its default.
func WithCacheMode(mode string) LoadOption {
	return func(c *LoadConfig) { c.CacheMode = mode }
}

// ApplyLoadOpts returns the defaults (GPULayers -1) with opts applied in order; nil options
// are skipped.
func ApplyLoadOpts(opts []LoadOption) LoadConfig {
	cfg := LoadConfig{GPULayers: -1}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	return cfg
}
