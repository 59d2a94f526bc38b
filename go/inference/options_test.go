package inference

import (
	"reflect"
	"testing"
)

func TestApplyGenerateOpts(t *testing.T) {
	tests := []struct {
		name string
		opts []GenerateOption
		want GenerateConfig
	}{
		{"defaults", nil, GenerateConfig{MaxTokens: 256}},
		{"nil option skipped", []GenerateOption{nil}, GenerateConfig{MaxTokens: 256}},
		{"max tokens", []GenerateOption{WithMaxTokens(12)}, GenerateConfig{MaxTokens: 12}},
		{"temperature", []GenerateOption{WithTemperature(0.7)}, GenerateConfig{MaxTokens: 256, Temperature: 0.7}},
		{"top k", []GenerateOption{WithTopK(40)}, GenerateConfig{MaxTokens: 256, TopK: 40}},
		{"top p", []GenerateOption{WithTopP(0.9)}, GenerateConfig{MaxTokens: 256, TopP: 0.9}},
		{"stop tokens", []GenerateOption{WithStopTokens(2, 7)}, GenerateConfig{MaxTokens: 256, StopTokens: []int32{2, 7}}},
		{"repeat penalty", []GenerateOption{WithRepeatPenalty(1.1)}, GenerateConfig{MaxTokens: 256, RepeatPenalty: 1.1}},
		{"logits", []GenerateOption{WithLogits()}, GenerateConfig{MaxTokens: 256, ReturnLogits: true}},
		{"later wins", []GenerateOption{WithMaxTokens(1), WithMaxTokens(2)}, GenerateConfig{MaxTokens: 2}},
		{"all", []GenerateOption{WithMaxTokens(5), WithTemperature(1), WithTopK(3), WithTopP(0.5), WithStopTokens(9), WithRepeatPenalty(2), WithLogits()},
			GenerateConfig{MaxTokens: 5, Temperature: 1, TopK: 3, TopP: 0.5, StopTokens: []int32{9}, RepeatPenalty: 2, ReturnLogits: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ApplyGenerateOpts(tt.opts); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
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
		{Message{}, []string{`Role string json:"role"`, `Content string json:"content"`}},
		{ClassifyResult{}, []string{"Token inference.Token ", "Logits []float32 "}},
		{BatchResult{}, []string{"Tokens []inference.Token ", "Err error "}},
		{GenerateConfig{}, []string{"MaxTokens int ", "Temperature float32 ", "TopK int ", "TopP float32 ", "StopTokens []int32 ", "RepeatPenalty float32 ", "ReturnLogits bool "}},
		{LoadConfig{}, []string{"Backend string ", "ContextLen int ", "GPULayers int ", "ParallelSlots int "}},
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
