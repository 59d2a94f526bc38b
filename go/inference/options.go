package inference

// GenerateConfig holds the settings of one Generate, Chat, Classify or BatchGenerate call.
// Zero values of TopK, TopP and RepeatPenalty mean "off".
type GenerateConfig struct {
	// MaxTokens caps the generated tokens. Default 256.
	MaxTokens int
	// Temperature 0 (the default) is greedy decoding.
	Temperature float32
	// TopK keeps the k most likely tokens; 0 = off.
	TopK int
	// TopP keeps the smallest set of tokens whose probability reaches p; 0 = off.
	TopP float32
	// StopTokens end generation when sampled (they are not returned).
	StopTokens []int32
	// RepeatPenalty penalises recently seen tokens; 0 = off, 1 = no penalty.
	RepeatPenalty float32
	// ReturnLogits asks for raw logits in ClassifyResult.
	ReturnLogits bool
}

// GenerateOption changes a GenerateConfig.
type GenerateOption func(*GenerateConfig)

// WithMaxTokens caps the number of generated tokens.
func WithMaxTokens(n int) GenerateOption {
	return func(c *GenerateConfig) { c.MaxTokens = n }
}

// WithTemperature sets the sampling temperature; 0 is greedy.
func WithTemperature(t float32) GenerateOption {
	return func(c *GenerateConfig) { c.Temperature = t }
}

// WithTopK keeps only the k most likely tokens; 0 disables it.
func WithTopK(k int) GenerateOption {
	return func(c *GenerateConfig) { c.TopK = k }
}

// WithTopP enables nucleus sampling with threshold p; 0 disables it.
func WithTopP(p float32) GenerateOption {
	return func(c *GenerateConfig) { c.TopP = p }
}

// WithStopTokens ends generation at any of the given token ids.
func WithStopTokens(ids ...int32) GenerateOption {
	return func(c *GenerateConfig) { c.StopTokens = ids }
}

// WithRepeatPenalty penalises repeated tokens; 0 disables it, 1 is no penalty.
func WithRepeatPenalty(p float32) GenerateOption {
	return func(c *GenerateConfig) { c.RepeatPenalty = p }
}

// WithLogits asks Classify for each prompt's raw logits.
func WithLogits() GenerateOption {
	return func(c *GenerateConfig) { c.ReturnLogits = true }
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
