package inference

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestApplyGenerateOpts(t *testing.T) {
	yes, no := true, false
	weather := Tool{Name: "get_weather", Description: "The weather in a city", Parameters: json.RawMessage(`{"type":"object"}`)}
	tests := []struct {
		name string
		opts []GenerateOption
		want GenerateConfig
	}{
		{"defaults", nil, GenerateConfig{MaxTokens: 256}},
		{"nil option skipped", []GenerateOption{nil}, GenerateConfig{MaxTokens: 256}},
		{"max tokens", []GenerateOption{WithMaxTokens(12)}, GenerateConfig{MaxTokens: 12}},
		{"temperature", []GenerateOption{WithTemperature(0.7)}, GenerateConfig{MaxTokens: 256, Temperature: 0.7, TemperatureSet: true}},
		{"temperature 0 is set", []GenerateOption{WithTemperature(0)}, GenerateConfig{MaxTokens: 256, TemperatureSet: true}},
		{"top k", []GenerateOption{WithTopK(40)}, GenerateConfig{MaxTokens: 256, TopK: 40, TopKSet: true}},
		{"top p", []GenerateOption{WithTopP(0.9)}, GenerateConfig{MaxTokens: 256, TopP: 0.9, TopPSet: true}},
		{"min p", []GenerateOption{WithMinP(0.05)}, GenerateConfig{MaxTokens: 256, MinP: 0.05, MinPSet: true}},
		{"seed", []GenerateOption{WithSeed(42)}, GenerateConfig{MaxTokens: 256, Seed: 42, SeedSet: true}},
		{"seed 0 is set", []GenerateOption{WithSeed(0)}, GenerateConfig{MaxTokens: 256, SeedSet: true}},
		{"stop tokens", []GenerateOption{WithStopTokens(2, 7)}, GenerateConfig{MaxTokens: 256, StopTokens: []int32{2, 7}}},
		{"suppress tokens", []GenerateOption{WithSuppressTokens(1, 3)}, GenerateConfig{MaxTokens: 256, SuppressTokens: []int32{1, 3}}},
		{"min tokens", []GenerateOption{WithMinTokensBeforeStop(8)}, GenerateConfig{MaxTokens: 256, MinTokensBeforeStop: 8}},
		{"repeat penalty", []GenerateOption{WithRepeatPenalty(1.1)}, GenerateConfig{MaxTokens: 256, RepeatPenalty: 1.1}},
		{"logits", []GenerateOption{WithLogits()}, GenerateConfig{MaxTokens: 256, ReturnLogits: true}},
		{"no prompt reuse", []GenerateOption{WithDisablePromptReuse()}, GenerateConfig{MaxTokens: 256, DisablePromptReuse: true}},
		{"thinking", []GenerateOption{WithEnableThinking(&yes), WithThinkingBudget(64)}, GenerateConfig{MaxTokens: 256, EnableThinking: &yes, ThinkingBudget: 64}},
		{"thinking off", []GenerateOption{WithEnableThinking(&no)}, GenerateConfig{MaxTokens: 256, EnableThinking: &no}},
		{"json schema", []GenerateOption{WithJSONSchema(`{"type":"integer"}`)}, GenerateConfig{MaxTokens: 256, JSONSchema: `{"type":"integer"}`}},
		{"json object", []GenerateOption{WithJSONObject()}, GenerateConfig{MaxTokens: 256, JSONObject: true}},
		{"regex", []GenerateOption{WithRegex(`[0-9]+`)}, GenerateConfig{MaxTokens: 256, Regex: `[0-9]+`}},
		{"grammar", []GenerateOption{WithGrammar(`start: "a"`)}, GenerateConfig{MaxTokens: 256, Grammar: `start: "a"`}},
		{"choices", []GenerateOption{WithChoices("yes", "no")}, GenerateConfig{MaxTokens: 256, Choices: []string{"yes", "no"}}},
		// The options only record what was asked: refusing two constraints at once is the
		// backend's work, where the error can reach the caller.
		{"two constraints recorded", []GenerateOption{WithRegex("a"), WithChoices("a")}, GenerateConfig{MaxTokens: 256, Regex: "a", Choices: []string{"a"}}},
		{"tools", []GenerateOption{WithTools(weather), WithToolChoice("required")},
			GenerateConfig{MaxTokens: 256, Tools: []Tool{weather}, ToolChoice: "required"}},
		{"later wins", []GenerateOption{WithMaxTokens(1), WithMaxTokens(2)}, GenerateConfig{MaxTokens: 2}},
		{"all", []GenerateOption{WithMaxTokens(5), WithTemperature(1), WithTopK(3), WithTopP(0.5), WithStopTokens(9), WithRepeatPenalty(2), WithLogits()},
			GenerateConfig{MaxTokens: 5, Temperature: 1, TemperatureSet: true, TopK: 3, TopKSet: true, TopP: 0.5, TopPSet: true, StopTokens: []int32{9}, RepeatPenalty: 2, ReturnLogits: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ApplyGenerateOpts(tt.opts); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The config's token slices are its own: changing the caller's slice afterwards changes
// nothing.
func TestTokenOptionsCopyTheirSlices(t *testing.T) {
	ids := []int32{1, 2}
	cfg := ApplyGenerateOpts([]GenerateOption{WithStopTokens(ids...), WithSuppressTokens(ids...)})
	ids[0] = 99
	if cfg.StopTokens[0] != 1 || cfg.SuppressTokens[0] != 1 {
		t.Fatalf("the config shares the caller's slice: %+v", cfg)
	}
	choices := []string{"a", "b"}
	tools := []Tool{{Name: "f"}}
	cfg = ApplyGenerateOpts([]GenerateOption{WithChoices(choices...), WithTools(tools...)})
	choices[0], tools[0].Name = "z", "g"
	if cfg.Choices[0] != "a" || cfg.Tools[0].Name != "f" {
		t.Fatalf("the config shares the caller's slice: %+v", cfg)
	}
}

// Messages and tools travel as OpenAI's JSON writes them.
func TestToolJSON(t *testing.T) {
	m := Message{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_0", Name: "f", Type: "function", ArgumentsJSON: `{"x":1}`}}}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"role":"assistant","content":"","tool_calls":[{"id":"call_0","name":"f","type":"function","arguments_json":"{\"x\":1}"}]}`; string(data) != want {
		t.Errorf("assistant message: %s, want %s", data, want)
	}
	data, _ = json.Marshal(Message{Role: "tool", Content: "20C", ToolCallID: "call_0", Name: "f"})
	if want := `{"role":"tool","content":"20C","tool_call_id":"call_0","name":"f"}`; string(data) != want {
		t.Errorf("tool message: %s, want %s", data, want)
	}
	data, _ = json.Marshal(Tool{Name: "f", Description: "does f", Parameters: json.RawMessage(`{"type":"object"}`)})
	if want := `{"name":"f","description":"does f","parameters":{"type":"object"}}`; string(data) != want {
		t.Errorf("tool: %s, want %s", data, want)
	}
}

func TestWithMetricsSink(t *testing.T) {
	var got GenerateMetrics
	cfg := ApplyGenerateOpts([]GenerateOption{WithMetricsSink(func(m GenerateMetrics) { got = m })})
	if cfg.MetricsSink == nil {
		t.Fatal("no sink")
	}
	cfg.MetricsSink(GenerateMetrics{GeneratedTokens: 7})
	if got.GeneratedTokens != 7 {
		t.Fatalf("the sink got %+v", got)
	}
	// The sink stays out of JSON (a func cannot be encoded).
	if _, err := json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
}

func TestApplyLoadOpts(t *testing.T) {
	tests := []struct {
		name string
		opts []LoadOption
		want LoadConfig
	}{
		{"defaults", nil, LoadConfig{GPULayers: -1}},
		{"nil option skipped", []LoadOption{nil}, LoadConfig{GPULayers: -1}},
		{"backend", []LoadOption{WithBackend("metal")}, LoadConfig{Backend: "metal", GPULayers: -1}},
		{"context", []LoadOption{WithContextLen(8192)}, LoadConfig{ContextLen: 8192, GPULayers: -1}},
		{"cpu only", []LoadOption{WithGPULayers(0)}, LoadConfig{GPULayers: 0}},
		{"slots", []LoadOption{WithParallelSlots(4)}, LoadConfig{ParallelSlots: 4, GPULayers: -1}},
		{"adapter", []LoadOption{WithAdapterPath("/a")}, LoadConfig{AdapterPath: "/a", GPULayers: -1}},
		{"cache mode", []LoadOption{WithCacheMode("native")}, LoadConfig{CacheMode: "native", GPULayers: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ApplyLoadOpts(tt.opts); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The contract's structs keep upstream's exact fields: a change here breaks the promise that
// switching to go-inference is an import change only.
func TestContractShapes(t *testing.T) {
	fields := func(v any) []string {
		var names []string
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			names = append(names, f.Name+" "+f.Type.String()+" "+string(f.Tag))
		}
		return names
	}
	tests := []struct {
		v    any
		want []string
	}{
		{Token{}, []string{"ID int32 ", "Text string "}},
		{Message{}, []string{`Role string json:"role"`, `Content string json:"content"`, `ToolCalls []inference.ToolCall json:"tool_calls,omitempty"`,
			`ToolCallID string json:"tool_call_id,omitempty"`, `Name string json:"name,omitempty"`}},
		{Tool{}, []string{`Name string json:"name"`, `Description string json:"description,omitempty"`, `Parameters json.RawMessage json:"parameters,omitempty"`}},
		{ToolCall{}, []string{`ID string json:"id,omitempty"`, `Name string json:"name,omitempty"`, `Type string json:"type,omitempty"`,
			`ArgumentsJSON string json:"arguments_json,omitempty"`, `Labels map[string]string json:"labels,omitempty"`}},
		{ToolParseResult{}, []string{`VisibleText string json:"visible_text,omitempty"`, `Calls []inference.ToolCall json:"calls,omitempty"`,
			`Labels map[string]string json:"labels,omitempty"`}},
		{ReasoningSegment{}, []string{`Kind string json:"kind,omitempty"`, `Text string json:"text,omitempty"`, `StartToken int json:"start_token,omitempty"`,
			`EndToken int json:"end_token,omitempty"`, `Labels map[string]string json:"labels,omitempty"`}},
		{ReasoningParseResult{}, []string{`VisibleText string json:"visible_text,omitempty"`, `Reasoning []inference.ReasoningSegment json:"reasoning,omitempty"`,
			`Labels map[string]string json:"labels,omitempty"`}},
		{ClassifyResult{}, []string{"Token inference.Token ", "Logits []float32 "}},
		{BatchResult{}, []string{"Tokens []inference.Token ", "Err error "}},
		{GenerateConfig{}, []string{"MaxTokens int ", "Temperature float32 ", "TopK int ", "TopP float32 ", "MinP float32 ",
			"TemperatureSet bool ", "TopKSet bool ", "TopPSet bool ", "MinPSet bool ", "Seed uint64 ", "SeedSet bool ",
			"StopTokens []int32 ", "SuppressTokens []int32 ", "MinTokensBeforeStop int ", "RepeatPenalty float32 ", "ReturnLogits bool ",
			`MetricsSink func(inference.GenerateMetrics) json:"-"`, "DisablePromptReuse bool ", "EnableThinking *bool ", "ThinkingBudget int ",
			"JSONSchema string ", "JSONObject bool ", "Regex string ", "Grammar string ", "Choices []string ", "Tools []inference.Tool ", "ToolChoice string "}},
		{LoadConfig{}, []string{"Backend string ", "ContextLen int ", "GPULayers int ", "ParallelSlots int ", "AdapterPath string ", "CacheMode string "}},
		{Capability{}, []string{`ID inference.CapabilityID json:"id"`, `Group inference.CapabilityGroup json:"group,omitempty"`,
			`Status inference.CapabilityStatus json:"status"`, `Detail string json:"detail,omitempty"`, `Labels map[string]string json:"labels,omitempty"`}},
		{CapabilityReport{}, []string{`Runtime inference.RuntimeIdentity json:"runtime"`, `Model inference.ModelIdentity json:"model"`,
			`Tokenizer inference.TokenizerIdentity json:"tokenizer"`, `Adapter inference.AdapterIdentity json:"adapter"`, `Available bool json:"available"`,
			`Architectures []string json:"architectures,omitempty"`, `Quantizations []string json:"quantizations,omitempty"`,
			`CacheModes []string json:"cache_modes,omitempty"`, `Capabilities []inference.Capability json:"capabilities,omitempty"`,
			`Labels map[string]string json:"labels,omitempty"`}},
		{ModelIdentity{}, []string{`ID string json:"id,omitempty"`, `Path string json:"path,omitempty"`, `Architecture string json:"architecture,omitempty"`,
			`Revision string json:"revision,omitempty"`, `Hash string json:"hash,omitempty"`, `QuantBits int json:"quant_bits,omitempty"`,
			`QuantGroup int json:"quant_group,omitempty"`, `QuantType string json:"quant_type,omitempty"`, `ContextLength int json:"context_length,omitempty"`,
			`NumLayers int json:"num_layers,omitempty"`, `HiddenSize int json:"hidden_size,omitempty"`, `VocabSize int json:"vocab_size,omitempty"`,
			`Labels map[string]string json:"labels,omitempty"`}},
		{TokenizerIdentity{}, []string{`Kind string json:"kind,omitempty"`, `Path string json:"path,omitempty"`, `Hash string json:"hash,omitempty"`,
			`ChatTemplate string json:"chat_template,omitempty"`, `BOSID int32 json:"bos_id,omitempty"`, `EOSID int32 json:"eos_id,omitempty"`,
			`PADID int32 json:"pad_id,omitempty"`, `Labels map[string]string json:"labels,omitempty"`}},
		{AdapterIdentity{}, []string{`Path string json:"path,omitempty"`, `Hash string json:"hash,omitempty"`, `Format string json:"format,omitempty"`,
			`Rank int json:"rank,omitempty"`, `Alpha float32 json:"alpha,omitempty"`, `TargetKeys []string json:"target_keys,omitempty"`,
			`BaseModelHash string json:"base_model_hash,omitempty"`, `Labels map[string]string json:"labels,omitempty"`}},
		{RuntimeIdentity{}, []string{`Backend string json:"backend,omitempty"`, `Device string json:"device,omitempty"`, `Version string json:"version,omitempty"`,
			`CacheMode string json:"cache_mode,omitempty"`, `NativeRuntime bool json:"native_runtime,omitempty"`, `Labels map[string]string json:"labels,omitempty"`}},
		{ModelPackInspection{}, []string{`Path string json:"path,omitempty"`, `Format string json:"format,omitempty"`, `Model inference.ModelIdentity json:"model"`,
			`Tokenizer inference.TokenizerIdentity json:"tokenizer"`, `Supported bool json:"supported,omitempty"`,
			`Capabilities []inference.Capability json:"capabilities,omitempty"`, `Notes []string json:"notes,omitempty"`, `Labels map[string]string json:"labels,omitempty"`}},
		{ModelInfo{}, []string{"Architecture string ", "VocabSize int ", "NumLayers int ", "HiddenSize int ", "QuantBits int ", "QuantGroup int "}},
		{DiscoveredModel{}, []string{"Path string ", "ModelType string ", "QuantBits int ", "QuantGroup int ", "NumFiles int "}},
		{GenerateMetrics{}, []string{"PromptTokens int ", "GeneratedTokens int ", "PrefillDuration time.Duration ", "DecodeDuration time.Duration ",
			"TotalDuration time.Duration ", "PrefillTokensPerSec float64 ", "DecodeTokensPerSec float64 ", "PeakMemoryBytes uint64 ", "ActiveMemoryBytes uint64 "}},
	}
	for _, tt := range tests {
		if got := fields(tt.v); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%T fields = %q, want %q", tt.v, got, tt.want)
		}
	}
}
