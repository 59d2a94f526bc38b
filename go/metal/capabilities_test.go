package metal

import (
	"path/filepath"
	"slices"
	"testing"

	"liblmx/go/inference"
)

// Every capability the report calls usable is exercised here, and every one exercised is
// reported usable: the report neither claims nor hides a feature.
func TestCapabilitiesAreTruthful(t *testing.T) {
	m := load(t, "qwen3")
	msgs := []inference.Message{{Role: "user", Content: "Who keeps the light?"}}
	few := []inference.GenerateOption{inference.WithMaxTokens(3), WithIgnoreEOS()}
	checks := map[inference.CapabilityID]func(t *testing.T){
		inference.CapabilityModelLoad: func(t *testing.T) {
			if q := load(t, "gemma3_q4"); q.Description().QuantBits != 4 {
				t.Fatalf("%+v", q.Description())
			}
		},
		inference.CapabilityGenerate: func(t *testing.T) {
			if ids, _ := collect(m.Generate(ctx, "Hello", few...)); len(ids) != 3 {
				t.Fatal(ids, m.Err())
			}
		},
		inference.CapabilityChat: func(t *testing.T) {
			if ids, _ := collect(m.Chat(ctx, msgs, few...)); len(ids) != 3 {
				t.Fatal(ids, m.Err())
			}
		},
		inference.CapabilityClassify: func(t *testing.T) {
			if r, err := m.Classify(ctx, []string{"a", "b"}); err != nil || len(r) != 2 {
				t.Fatal(r, err)
			}
		},
		inference.CapabilityBatchGenerate: func(t *testing.T) {
			if r, err := m.BatchGenerate(ctx, []string{"a", "b"}, few...); err != nil || len(r[1].Tokens) != 3 {
				t.Fatal(r, err)
			}
		},
		inference.CapabilityTokenizer: func(t *testing.T) {
			var tm inference.TokenizerModel = m
			if got := tm.Decode(tm.Encode("Hello world")); got != "Hello world" {
				t.Fatalf("round trip %q", got)
			}
		},
		inference.CapabilityChatTemplate: func(t *testing.T) {
			if text, err := m.ApplyChatTemplate(msgs); err != nil || text == "" {
				t.Fatal(text, err)
			}
		},
		inference.CapabilityLoRAInference: func(t *testing.T) {
			a := load(t, "qwen3", inference.WithAdapterPath(filepath.Join(fixtures, "lora", "qwen3_all", "trained")))
			x, _ := collect(a.Generate(ctx, "Hello", inference.WithMaxTokens(8), WithIgnoreEOS()))
			y, _ := collect(m.Generate(ctx, "Hello", inference.WithMaxTokens(8), WithIgnoreEOS()))
			if len(x) != 8 || slices.Equal(x, y) {
				t.Fatalf("with the adapter %v, without %v", x, y)
			}
		},
		inference.CapabilityLoRATraining: func(t *testing.T) {
			l := m.ApplyLoRA(inference.LoRAConfig{Rank: 2, Alpha: 4})
			if l == nil {
				t.Fatal(m.Err())
			}
			defer l.(*LoRA).Close()
			data := filepath.Join(fixtures, "lora", "qwen3_all", "train.jsonl")
			if err := l.(*LoRA).Train(ctx, TrainConfig{Data: data, Iters: 1, BatchSize: 1}, nil); err != nil {
				t.Fatal(err)
			}
		},
		inference.CapabilityKVSnapshot: func(t *testing.T) {
			s := newTestSession(t, m)
			collect(s.Generate(ctx, "Hello there", few...))
			path := filepath.Join(t.TempDir(), "s.safetensors")
			if err := s.Save(path); err != nil {
				t.Fatal(err)
			}
			r, err := m.LoadSession(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			a, _ := s.CacheInfo()
			b, _ := r.CacheInfo()
			if a.Positions == 0 || a.Positions != b.Positions {
				t.Fatalf("saved %+v, restored %+v", a, b)
			}
		},
		inference.CapabilityPromptCache: func(t *testing.T) {
			one := load(t, "qwen3")
			collect(one.Generate(ctx, "The keeper counted grey ships", few...))
			collect(one.Generate(ctx, "The keeper counted grey ships", few...))
			if n, all := slotPrefill(t, one), one.Metrics().PromptTokens; n >= all {
				t.Fatalf("computed %d of %d prompt tokens again", n, all)
			}
		},
		inference.CapabilityStructuredOutput: func(t *testing.T) {
			_, text := collect(m.Chat(ctx, msgs, inference.WithChoices("day", "night"), inference.WithMaxTokens(8)))
			if text != "day" && text != "night" {
				t.Fatal(text, m.Err())
			}
		},
		inference.CapabilityToolParse: func(t *testing.T) {
			r, err := m.ParseTools(nil, `<tool_call>{"name":"f","arguments":{}}</tool_call>`)
			if err != nil || len(r.Calls) != 1 || r.Calls[0].Name != "f" {
				t.Fatal(r, err)
			}
		},
		inference.CapabilityReasoningParse: func(t *testing.T) {
			r, err := m.ParseReasoning(nil, "<think>a</think>b")
			if err != nil || r.VisibleText != "b" || len(r.Reasoning) != 1 {
				t.Fatal(r, err)
			}
		},
		inference.CapabilityStateFork: func(t *testing.T) {
			s := newTestSession(t, m)
			collect(s.Generate(ctx, "Hello there", few...))
			f, err := s.Fork()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a, _ := s.CacheInfo()
			b, _ := f.CacheInfo()
			if a.Positions == 0 || a.Positions != b.Positions {
				t.Fatalf("session %+v, fork %+v", a, b)
			}
		},
	}
	r := m.Capabilities()
	seen := map[inference.CapabilityID]bool{}
	for _, c := range r.Capabilities {
		if seen[c.ID] {
			t.Errorf("%s is reported twice", c.ID)
		}
		seen[c.ID] = true
		if c.Group == "" || (c.Status != inference.CapabilityStatusSupported && c.Status != inference.CapabilityStatusUnsupported) {
			t.Errorf("%+v: a group and a supported/unsupported status expected", c)
		}
		if c.Usable() && checks[c.ID] == nil {
			t.Errorf("%s is reported usable but nothing here checks it", c.ID)
		}
	}
	for id, check := range checks {
		if !r.Supports(id) {
			t.Errorf("%s works but is not reported usable", id)
			continue
		}
		t.Run(string(id), check)
	}
	if !seen[inference.CapabilityEmbeddings] || r.Supports(inference.CapabilityEmbeddings) || r.Supports(inference.CapabilityStateBundle) {
		t.Error("features this backend lacks must be listed as unsupported")
	}
	d := m.Description()
	if !r.Available || r.Runtime.Backend != "metal" || r.Model.Architecture != "qwen3" || r.Model.Labels["model_type"] != d.ModelType ||
		r.Model.NumLayers != 2 || r.Model.VocabSize != d.VocabSize || r.Model.ContextLength != d.ContextLength {
		t.Errorf("report %+v", r)
	}
}

// A model loaded with an adapter reports what it refuses.
func TestCapabilitiesWithAdapter(t *testing.T) {
	m := load(t, "qwen3", inference.WithAdapterPath(filepath.Join(fixtures, "lora", "qwen3_all", "trained")))
	r := m.Capabilities()
	if r.Supports(inference.CapabilityClassify) || r.Supports(inference.CapabilityBatchGenerate) || !r.Supports(inference.CapabilityGenerate) {
		t.Fatalf("report %+v", r.Capabilities)
	}
	if r.Adapter.Path == "" {
		t.Fatalf("no adapter in %+v", r.Adapter)
	}
}

func newTestSession(t *testing.T, m *Model) inference.Session {
	t.Helper()
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
