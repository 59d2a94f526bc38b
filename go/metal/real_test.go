package metal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"liblmx/go/inference"
)

// realModelDir is where `make real-models` puts SmolLM2-135M-Instruct.
func realModelDir() string {
	cache := os.Getenv("LMX_TEST_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "lmx-test")
	}
	return filepath.Join(cache, "smollm2-135m-instruct")
}

// realModel returns the real model's folder, skipping the test when it is absent, unless
// LMX_REAL_MODELS=1 demands it. The race detector adds nothing for it: -race runs skip it.
func realModel(t testing.TB) string {
	t.Helper()
	dir := realModelDir()
	if _, err := os.Stat(filepath.Join(dir, "reference.json")); err != nil {
		if os.Getenv("LMX_REAL_MODELS") == "1" {
			t.Fatalf("LMX_REAL_MODELS=1 but %s is missing (run `make real-models`): %v", dir, err)
		}
		t.Skipf("%s is absent (set LMX_REAL_MODELS=1 to require it)", dir)
	}
	if raceEnabled {
		t.Skip("the real model runs without -race (the fixtures cover the Go side under -race)")
	}
	return dir
}

// SmolLM2-135M-Instruct through the contract: chat against transformers' greedy
// continuation, a cancel, and metrics.
func TestRealModel(t *testing.T) {
	dir := realModel(t)
	var ref struct {
		EOS     int32 `json:"eos_token_id"`
		NGreedy int   `json:"n_greedy"`
		Prompts []struct {
			Messages  []inference.Message `json:"messages"`
			Rendered  string              `json:"rendered"`
			PromptIDs []int32             `json:"prompt_ids"`
			GreedyIDs []int32             `json:"greedy_ids"`
		} `json:"prompts"`
	}
	readJSON(t, filepath.Join(dir, "reference.json"), &ref)
	m, err := inference.LoadModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if info := m.Info(); info.Architecture != "llama" || info.VocabSize != 49152 || info.NumLayers != 30 {
		t.Fatalf("Info() = %+v", info)
	}

	for i, p := range ref.Prompts {
		if i > 0 && testing.Short() {
			break
		}
		ids, text := collect(m.Chat(ctx, p.Messages, inference.WithMaxTokens(ref.NGreedy)))
		if err := m.Err(); err != nil {
			t.Fatalf("prompt %d: %v", i, err)
		}
		want := untilEOS(p.GreedyIDs, []int32{ref.EOS})
		if !slices.Equal(ids, want) {
			t.Fatalf("prompt %d: generated %v\nwant %v", i, ids, want)
		}
		mt := m.Metrics()
		if mt.PromptTokens != len(p.PromptIDs) || mt.GeneratedTokens != len(ids) || mt.DecodeTokensPerSec <= 0 || mt.PeakMemoryBytes == 0 {
			t.Fatalf("prompt %d: metrics %+v", i, mt)
		}
		t.Logf("prompt %d: %q (%d tokens, prefill %.0f tok/s, decode %.1f tok/s)", i, text, len(ids), mt.PrefillTokensPerSec, mt.DecodeTokensPerSec)
		if i == 0 && !strings.Contains(text, "Paris") {
			t.Fatalf("the answer %q does not name Paris", text)
		}
	}

	// Cancel a long answer after a few tokens.
	c, cancel := context.WithCancel(ctx)
	n := 0
	start := time.Now()
	for tok := range m.Chat(c, []inference.Message{{Role: "user", Content: "Write a long story about the sea."}}, inference.WithMaxTokens(500)) {
		if tok.ID >= 0 {
			n++
		}
		if n == 4 {
			cancel()
		}
	}
	cancel()
	if !errors.Is(m.Err(), context.Canceled) || n != 4 {
		t.Fatalf("cancel: %d tokens, Err() = %v", n, m.Err())
	}
	t.Logf("cancelled after %d tokens in %v; metrics %+v", n, time.Since(start), m.Metrics())
}

// SmolLM2-135M-Instruct straight from its GGUF file (the one the folder was converted from):
// Discover finds it, and its chat continuation is transformers' greedy one.
func TestRealGGUF(t *testing.T) {
	dir := realModel(t)
	ggufDir := filepath.Join(filepath.Dir(dir), "gguf")
	found, err := inference.Discover(ggufDir)
	if err != nil {
		t.Fatal(err)
	}
	var path string
	for _, f := range found {
		if strings.HasSuffix(f.Path, "SmolLM2-135M-Instruct.Q4_1.gguf") && f.ModelType == "llama" {
			path = f.Path
		}
	}
	if path == "" {
		t.Fatalf("Discover(%s) = %+v: no SmolLM2 GGUF file", ggufDir, found)
	}
	var ref struct {
		EOS     int32 `json:"eos_token_id"`
		NGreedy int   `json:"n_greedy"`
		Prompts []struct {
			Messages  []inference.Message `json:"messages"`
			GreedyIDs []int32             `json:"greedy_ids"`
		} `json:"prompts"`
	}
	readJSON(t, filepath.Join(dir, "reference.json"), &ref)
	m, err := inference.LoadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d := m.(*Model).Description()
	if d.Format != "gguf" || d.Architecture != "llama" || !strings.Contains(d.Conversions, "Q4_1 x") ||
		d.ChatTemplate != "gguf:tokenizer.chat_template" {
		t.Fatalf("Description() = %+v", d)
	}
	// What liblmx read from the header alone (Discover's source) is what the load reports.
	in, err := Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Description{Architecture: d.Architecture, ModelType: d.ModelType, NumLayers: d.NumLayers, HiddenSize: d.HiddenSize,
		NumHeads: d.NumHeads, NumKVHeads: d.NumKVHeads, HeadDim: d.HeadDim, VocabSize: d.VocabSize,
		ContextLength: d.ContextLength, Format: "gguf"}); in != want {
		t.Fatalf("Inspect = %+v\nload gives %+v", in, want)
	}
	p := ref.Prompts[0]
	ids, text := collect(m.Chat(ctx, p.Messages, inference.WithMaxTokens(ref.NGreedy)))
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	if want := untilEOS(p.GreedyIDs, []int32{ref.EOS}); !slices.Equal(ids, want) {
		t.Fatalf("generated %v (%q)\nwant %v", ids, text, want)
	}
	t.Logf("%s: %q (%s)", filepath.Base(path), text, d.Conversions)
}

// SmolLM2's own tokenizer through inference.TokenizerModel: the chat template renders as
// transformers does, and encoding then decoding gives the text back.
func TestRealTokenizerModel(t *testing.T) {
	dir := realModel(t)
	var ref struct {
		Prompts []struct {
			Messages  []inference.Message `json:"messages"`
			Rendered  string              `json:"rendered"`
			PromptIDs []int32             `json:"prompt_ids"`
		} `json:"prompts"`
	}
	readJSON(t, filepath.Join(dir, "reference.json"), &ref)
	m, err := inference.LoadModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tm := m.(inference.TokenizerModel)
	n := 0
	for i, p := range ref.Prompts {
		if p.Messages == nil {
			continue
		}
		n++
		text, err := tm.ApplyChatTemplate(p.Messages)
		if err != nil || text != p.Rendered {
			t.Fatalf("prompt %d: ApplyChatTemplate = %q, %v\nwant %q", i, text, err, p.Rendered)
		}
		ids := tm.Encode(text)
		if !slices.Equal(ids, p.PromptIDs) {
			t.Fatalf("prompt %d: Encode = %v\nwant %v", i, ids, p.PromptIDs)
		}
		if back := tm.Decode(ids); back != text {
			t.Fatalf("prompt %d: Decode(Encode(text)) = %q, want %q", i, back, text)
		}
	}
	if n == 0 {
		t.Fatal("no chat prompts in reference.json")
	}
}

// A short answer ends at the model's end-of-turn token; WithMinTokensBeforeStop makes the
// same chat run on past it.
func TestRealMinTokensBeforeStop(t *testing.T) {
	dir := realModel(t)
	m, err := inference.LoadModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	msgs := []inference.Message{{Role: "user", Content: "Reply with one word: yes or no. Is water wet?"}}
	short, _ := collect(m.Chat(ctx, msgs, inference.WithMaxTokens(64)))
	if m.Err() != nil || len(short) == 0 || len(short) >= 40 {
		t.Fatalf("the plain answer has %d tokens (%v): the test needs one that stops early", len(short), m.Err())
	}
	long, text := collect(m.Chat(ctx, msgs, inference.WithMaxTokens(64), inference.WithMinTokensBeforeStop(40)))
	if m.Err() != nil || len(long) < 40 {
		t.Fatalf("with 40 tokens before stop: %d tokens (%v)", len(long), m.Err())
	}
	if !slices.Equal(long[:len(short)], short) {
		t.Fatalf("the answer changed before the stop: %v, then %v", short, long)
	}
	t.Logf("%d tokens without, %d with: %q", len(short), len(long), text)
}
