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
