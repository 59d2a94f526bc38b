package metal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

var ctx = context.Background()

// Greedy generation equals the transformers (or, for quantized fixtures, mlx-lm)
// continuation: up to the first EOS by default, the whole reference when EOS is ignored.
func TestGenerateMatchesReference(t *testing.T) {
	for _, name := range []string{"qwen3", "gemma3", "qwen3_q4"} {
		t.Run(name, func(t *testing.T) {
			ref := readRef(t, name)
			want := ref.greedy()
			eos := eosIDs(t, filepath.Join(fixtures, name))
			m := load(t, name)

			ids, text := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(len(want))))
			if err := m.Err(); err != nil {
				t.Fatal(err)
			}
			if stop := untilEOS(want, eos); !slices.Equal(ids, stop) {
				t.Fatalf("generated %v\nwant      %v (the reference up to EOS)", ids, stop)
			}
			mt := m.Metrics()
			if mt.PromptTokens != len(ref.PromptIDs) || mt.GeneratedTokens != len(ids) {
				t.Fatalf("metrics %+v: want %d prompt and %d generated tokens", mt, len(ref.PromptIDs), len(ids))
			}
			if mt.TotalDuration <= 0 || mt.PrefillDuration <= 0 || mt.PrefillTokensPerSec <= 0 || mt.PeakMemoryBytes == 0 {
				t.Fatalf("metrics %+v", mt)
			}

			full, fullText := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(len(want)), WithIgnoreEOS()))
			if !slices.Equal(full, want) {
				t.Fatalf("with WithIgnoreEOS generated %v\nwant %v", full, want)
			}
			if !strings.HasPrefix(fullText, text) {
				t.Fatalf("text %q is not a prefix of %q", text, fullText)
			}
			if mt := m.Metrics(); mt.GeneratedTokens != len(want) || mt.DecodeTokensPerSec <= 0 {
				t.Fatalf("metrics %+v", mt)
			}
		})
	}
}

// Chat renders the template as transformers does and generates exactly what Generate does
// on the rendered text.
func TestChatMatchesTemplate(t *testing.T) {
	for _, name := range []string{"qwen3", "gemma3"} {
		t.Run(name, func(t *testing.T) {
			var tref struct {
				Chat []struct {
					AddGenerationPrompt bool                `json:"add_generation_prompt"`
					Extra               map[string]any      `json:"extra"`
					IDs                 []int32             `json:"ids"`
					Messages            []inference.Message `json:"messages"`
					Text                string              `json:"text"`
				} `json:"chat"`
			}
			readJSON(t, filepath.Join(fixtures, name, "tokenizer_reference.json"), &tref)
			m := load(t, name)
			cases := 0
			for i, c := range tref.Chat {
				if !c.AddGenerationPrompt || len(c.Extra) > 0 {
					continue
				}
				cases++
				rendered, err := m.ChatTemplate(c.Messages)
				if err != nil || rendered != c.Text {
					t.Fatalf("chat %d: template gave %q, %v\nwant %q", i, rendered, err, c.Text)
				}
				// Generate adds BOS itself where the model uses one; the template wrote it too.
				bos := m.desc.Architecture == "gemma3"
				prompt := rendered
				if bos {
					prompt = strings.TrimPrefix(rendered, "<bos>")
				}
				if ids, err := m.Tokenize(prompt, true); err != nil || !slices.Equal(ids, c.IDs) {
					t.Fatalf("chat %d: tokens %v, %v\nwant %v", i, ids, err, c.IDs)
				}
				opts := []inference.GenerateOption{inference.WithMaxTokens(12), WithIgnoreEOS()}
				chat, chatText := collect(m.Chat(ctx, c.Messages, opts...))
				if err := m.Err(); err != nil || len(chat) != 12 {
					t.Fatalf("chat %d: %d tokens, %v", i, len(chat), err)
				}
				if got := m.Metrics().PromptTokens; got != len(c.IDs) {
					t.Fatalf("chat %d: %d prompt tokens, want %d", i, got, len(c.IDs))
				}
				gen, genText := collect(m.Generate(ctx, prompt, opts...))
				if !slices.Equal(chat, gen) || chatText != genText {
					t.Fatalf("chat %d: Chat gave %v %q, Generate %v %q", i, chat, chatText, gen, genText)
				}
			}
			if cases == 0 {
				t.Fatal("no chat cases in tokenizer_reference.json")
			}
		})
	}
}

func TestWithSystemPrompt(t *testing.T) {
	m := load(t, "qwen3")
	user := []inference.Message{{Role: "user", Content: "Who keeps the light?"}}
	opts := []inference.GenerateOption{inference.WithMaxTokens(10), WithIgnoreEOS()}
	with, _ := collect(m.Chat(ctx, user, append(opts, WithSystemPrompt("You are a careful lighthouse keeper."))...))
	explicit, _ := collect(m.Chat(ctx, append([]inference.Message{{Role: "system", Content: "You are a careful lighthouse keeper."}}, user...), opts...))
	plain, _ := collect(m.Chat(ctx, user, opts...))
	if !slices.Equal(with, explicit) {
		t.Fatalf("WithSystemPrompt gave %v, an explicit system message %v", with, explicit)
	}
	if slices.Equal(with, plain) {
		t.Fatal("the system prompt changed nothing")
	}
	// Generate ignores it.
	a, _ := collect(m.Generate(ctx, "Hello", append(opts, WithSystemPrompt("x"))...))
	b, _ := collect(m.Generate(ctx, "Hello", opts...))
	if !slices.Equal(a, b) {
		t.Fatal("WithSystemPrompt changed Generate")
	}
}

func argmax(xs []float32) int32 {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return int32(best)
}

// Every generate option reaches liblmx.
func TestGenerateOptions(t *testing.T) {
	const name = "qwen3"
	ref := readRef(t, name)
	want := ref.greedy()
	m := load(t, name)
	greedy, greedyText := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(32), WithIgnoreEOS()))
	if !slices.Equal(greedy, want) {
		t.Fatalf("greedy %v, want %v", greedy, want)
	}
	sampled := func(opts ...inference.GenerateOption) []int32 {
		ids, _ := collect(m.Generate(ctx, ref.PromptText, append([]inference.GenerateOption{inference.WithMaxTokens(24), WithIgnoreEOS()}, opts...)...))
		if err := m.Err(); err != nil {
			t.Fatalf("generation failed: %v", err)
		}
		return ids
	}
	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"WithStopTokens", func(t *testing.T) {
			ids, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithStopTokens(want[0])))
			if len(ids) != 0 || m.Err() != nil {
				t.Fatalf("stopping at the first token gave %v, %v", ids, m.Err())
			}
			ids, _ = collect(m.Generate(ctx, ref.PromptText, inference.WithStopTokens(want[3]), WithIgnoreEOS()))
			if !slices.Equal(ids, want[:3]) {
				t.Fatalf("stopping at the fourth token gave %v", ids)
			}
		}},
		{"WithMaxTokens", func(t *testing.T) {
			ids, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(3)))
			if !slices.Equal(ids, want[:3]) || m.Metrics().GeneratedTokens != 3 {
				t.Fatalf("got %v (%d in metrics)", ids, m.Metrics().GeneratedTokens)
			}
		}},
		{"WithMaxTokens(0) runs to the context", func(t *testing.T) {
			ids, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(0), WithIgnoreEOS()))
			if limit := m.desc.ContextLength - len(ref.PromptIDs); len(ids) < limit-1 || len(ids) > limit+1 {
				t.Fatalf("%d tokens, context leaves %d", len(ids), limit)
			}
		}},
		{"WithTemperature and WithSeed", func(t *testing.T) {
			a := sampled(inference.WithTemperature(1.5), WithSeed(7))
			b := sampled(inference.WithTemperature(1.5), WithSeed(7))
			c := sampled(inference.WithTemperature(1.5), WithSeed(8))
			if !slices.Equal(a, b) {
				t.Fatalf("the same seed gave %v and %v", a, b)
			}
			if slices.Equal(a, c) || slices.Equal(a, want[:24]) {
				t.Fatalf("sampling looks greedy or ignores the seed: %v, %v", a, c)
			}
		}},
		{"WithTopK", func(t *testing.T) {
			if ids := sampled(inference.WithTemperature(1.5), WithSeed(7), inference.WithTopK(1)); !slices.Equal(ids, want[:24]) {
				t.Fatalf("top-k 1 gave %v, want the greedy path", ids)
			}
		}},
		{"WithTopP", func(t *testing.T) {
			if ids := sampled(inference.WithTemperature(1.5), WithSeed(7), inference.WithTopP(1e-6)); !slices.Equal(ids, want[:24]) {
				t.Fatalf("top-p 1e-6 gave %v, want the greedy path", ids)
			}
		}},
		{"WithMinP", func(t *testing.T) {
			if ids := sampled(inference.WithTemperature(1), WithSeed(7), WithMinP(0.999)); !slices.Equal(ids, want[:24]) {
				t.Fatalf("min-p 0.999 gave %v, want the greedy path", ids)
			}
		}},
		{"WithRepeatPenalty", func(t *testing.T) {
			// The greedy path repeats tokens (31 31 31 ...); a huge penalty forbids any token
			// of the window (64 tokens, prompt included).
			ids := sampled(inference.WithRepeatPenalty(1e6))
			seen := map[int32]bool{}
			for _, id := range append(slices.Clone(ref.PromptIDs), ids...) {
				if seen[id] {
					t.Fatalf("token %d repeated in %v", id, ids)
				}
				seen[id] = true
			}
		}},
		{"WithStopStrings", func(t *testing.T) {
			// Three ASCII characters from the middle of the greedy text.
			at := len(greedyText) / 2
			for at+3 <= len(greedyText) && strings.ContainsFunc(greedyText[at:at+3], func(r rune) bool { return r >= 0x80 }) {
				at++
			}
			stop := greedyText[at : at+3]
			_, text := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(32), WithIgnoreEOS(), WithStopStrings(stop)))
			if strings.Contains(text, stop) || !strings.HasPrefix(greedyText, text) || len(text) > at {
				t.Fatalf("stop string %q: got %q from %q", stop, text, greedyText)
			}
		}},
		{"invalid values reach liblmx", func(t *testing.T) {
			for _, o := range []inference.GenerateOption{inference.WithTemperature(-1), inference.WithTopP(1.5), inference.WithTopK(-2),
				inference.WithRepeatPenalty(-1), WithMinP(1), inference.WithStopTokens(1 << 20)} {
				ids, _ := collect(m.Generate(ctx, ref.PromptText, o))
				if !errors.Is(m.Err(), lmx.ErrInvalidArgument) || len(ids) != 0 {
					t.Fatalf("got %v, %v; want ErrInvalidArgument", ids, m.Err())
				}
			}
			if _, err := m.Classify(ctx, []string{"x"}, inference.WithTemperature(-1)); !errors.Is(err, lmx.ErrInvalidArgument) {
				t.Fatalf("Classify: %v", err)
			}
			_, _ = collect(m.Generate(ctx, "a\x00b"))
			if !errors.Is(m.Err(), lmx.ErrInvalidArgument) {
				t.Fatalf("a prompt with a NUL byte: %v", m.Err())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}

// Metal's options do nothing outside this package's own applying, and leave nothing behind.
// (WithSeed and WithMinP are the contract's options now, so they reach any config.)
func TestExtraOptionsElsewhere(t *testing.T) {
	opts := []inference.GenerateOption{WithStopStrings("x"), WithSystemPrompt("s"), WithIgnoreEOS(), WithAdapter(nil, 0), inference.WithMaxTokens(3)}
	if got := inference.ApplyGenerateOpts(opts); !reflect.DeepEqual(got, inference.GenerateConfig{MaxTokens: 3}) {
		t.Fatalf("ApplyGenerateOpts = %+v", got)
	}
	cfg, x := applyOptions(append(opts, WithSeed(1), WithMinP(0.1)))
	want := extras{stopStrings: []string{"x"}, systemPrompt: "s", hasSystem: true, ignoreEOS: true, adapterSet: true}
	if cfg.MaxTokens != 3 || cfg.Seed != 1 || !cfg.SeedSet || cfg.MinP != 0.1 || !reflect.DeepEqual(x, want) {
		t.Fatalf("applyOptions = %+v, %+v", cfg, x)
	}
	n := 0
	applying.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d configs left in the registry", n)
	}
}

func TestClassify(t *testing.T) {
	for _, name := range []string{"qwen3", "gemma3"} {
		t.Run(name, func(t *testing.T) {
			ref := readRef(t, name)
			m := load(t, name)
			prompts := []string{ref.PromptText, "Once upon a time", ref.PromptText}
			res, err := m.Classify(ctx, prompts)
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 3 || res[0].Token.ID != ref.greedy()[0] || res[2].Token.ID != res[0].Token.ID || res[0].Logits != nil {
				t.Fatalf("Classify = %+v, want first token %d and no logits", res, ref.greedy()[0])
			}
			if res[0].Token.Text == "" {
				t.Fatal("no token text")
			}
			if mt := m.Metrics(); mt.PromptTokens < 2*len(ref.PromptIDs) || mt.TotalDuration <= 0 {
				t.Fatalf("metrics %+v", mt)
			}
			withLogits, err := m.Classify(ctx, prompts, inference.WithLogits())
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range withLogits {
				if len(r.Logits) != m.Info().VocabSize {
					t.Fatalf("prompt %d: %d logits, vocabulary %d", i, len(r.Logits), m.Info().VocabSize)
				}
				if argmax(r.Logits) != r.Token.ID || r.Token.ID != res[i].Token.ID {
					t.Fatalf("prompt %d: argmax %d, token %d (without logits %d)", i, argmax(r.Logits), r.Token.ID, res[i].Token.ID)
				}
			}
			if got, err := m.Classify(ctx, nil); got != nil || err != nil {
				t.Fatalf("no prompts: %v, %v", got, err)
			}
			// qwen3 adds no BOS, so an empty prompt has no tokens.
			if _, err := m.Classify(ctx, []string{"x", ""}); name == "qwen3" && !errors.Is(err, lmx.ErrInvalidArgument) {
				t.Fatalf("an empty prompt: %v", err)
			}
		})
	}
}

func TestBatchGenerate(t *testing.T) {
	for _, name := range []string{"qwen3", "gemma3"} {
		t.Run(name, func(t *testing.T) {
			ref := readRef(t, name)
			m := load(t, name)
			tooLong := strings.Repeat("ships ", 400)
			prompts := []string{ref.PromptText, "Once upon a time there was", tooLong, "Hello"}
			opts := []inference.GenerateOption{inference.WithMaxTokens(8), WithIgnoreEOS()}
			res, err := m.BatchGenerate(ctx, prompts, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != len(prompts) {
				t.Fatalf("%d results for %d prompts", len(res), len(prompts))
			}
			for i, p := range prompts {
				r := res[i]
				if p == tooLong {
					if !errors.Is(r.Err, lmx.ErrInvalidArgument) || !strings.Contains(r.Err.Error(), "context") || r.Tokens != nil {
						t.Fatalf("prompt %d: %+v, want its own error about the context", i, r)
					}
					continue
				}
				if r.Err != nil {
					t.Fatalf("prompt %d: %v", i, r.Err)
				}
				// The same tokens, each with the piece a stream delivers for it (a last
				// text-only piece of the stream belongs to the last token).
				var ids []int32
				var streamed []string
				for tok := range m.Generate(ctx, p, opts...) {
					if tok.ID < 0 && len(streamed) > 0 {
						streamed[len(streamed)-1] += tok.Text
						continue
					}
					ids = append(ids, tok.ID)
					streamed = append(streamed, tok.Text)
				}
				var gotIDs []int32
				var got []string
				for _, tok := range r.Tokens {
					gotIDs = append(gotIDs, tok.ID)
					got = append(got, tok.Text)
				}
				if !slices.Equal(gotIDs, ids) || !slices.Equal(got, streamed) {
					t.Fatalf("prompt %d: batch %v %q, one by one %v %q", i, gotIDs, got, ids, streamed)
				}
			}
			if !slices.Equal(tokenIDs(res[0].Tokens), ref.greedy()[:8]) {
				t.Fatalf("batch row 0 %v, reference %v", tokenIDs(res[0].Tokens), ref.greedy()[:8])
			}
			if _, err := m.BatchGenerate(ctx, prompts, inference.WithMaxTokens(8)); err != nil {
				t.Fatal(err)
			}
			if mt := m.Metrics(); mt.GeneratedTokens == 0 || mt.GeneratedTokens > 24 || mt.TotalDuration <= 0 {
				t.Fatalf("batch metrics %+v", mt)
			}
			if _, err := m.BatchGenerate(ctx, prompts, inference.WithTemperature(-1)); !errors.Is(err, lmx.ErrInvalidArgument) {
				t.Fatalf("bad options: %v", err)
			}
		})
	}
}

func tokenIDs(toks []inference.Token) []int32 {
	var ids []int32
	for _, t := range toks {
		ids = append(ids, t.ID)
	}
	return ids
}

func TestInfo(t *testing.T) {
	dev, err := DeviceInfo()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		arch      string
		modelType string
		layers    int
		bits      int
		group     int
		template  string
	}{
		{"qwen3", "qwen3", "qwen3", 2, 0, 0, "tokenizer_config.json"},
		{"gemma3", "gemma3", "gemma3_text", 6, 0, 0, "tokenizer_config.json"},
		{"qwen3_q4", "qwen3", "qwen3", 2, 4, 32, "tokenizer_config.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := load(t, tt.name, inference.WithContextLen(1024))
			want := inference.ModelInfo{Architecture: tt.arch, VocabSize: 405, NumLayers: tt.layers, HiddenSize: 64, QuantBits: tt.bits, QuantGroup: tt.group}
			if got := m.Info(); got != want {
				t.Fatalf("Info() = %+v, want %+v", got, want)
			}
			if m.ModelType() != tt.modelType {
				t.Fatalf("ModelType() = %q", m.ModelType())
			}
			d := m.Description()
			if d.ContextLength != 1024 || d.ParamCount == 0 || d.ChatTemplate != tt.template || m.Backend() != dev.Backend {
				t.Fatalf("Description() = %+v (device %s)", d, dev)
			}
		})
	}
}

func ExampleModel_Generate() {
	m, err := Load(filepath.Join(fixtures, "qwen3"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	for tok := range m.Generate(context.Background(), "The keeper counted", inference.WithMaxTokens(4), WithIgnoreEOS()) {
		_ = tok.Text // stream it
	}
	fmt.Println(m.Err(), m.Metrics().GeneratedTokens)
	// Output: <nil> 4
}
