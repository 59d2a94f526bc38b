package metal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"liblmx/go/inference"
)

// Fine-tuning through the contract: apply, train (the loss falls), save, reload, generate
// with the adapter (it changes the continuation; scale 0 and no adapter give the base model's).
func TestLoRATrainSaveReload(t *testing.T) {
	m := load(t, "qwen3")
	var tm inference.TrainableModel = m
	if tm.NumLayers() != 2 || len(tm.Encode("hello")) == 0 || tm.Decode(tm.Encode("hello world")) == "" {
		t.Fatalf("NumLayers %d, Encode/Decode: %v", tm.NumLayers(), m.Err())
	}
	cfg := inference.LoRAConfig{Rank: 4, Alpha: 40, TargetKeys: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
	a := tm.ApplyLoRA(cfg)
	if a == nil {
		t.Fatal(m.Err())
	}
	// hidden 64, q 128, k/v 64, intermediate 128, rank 4, both layers.
	if got, want := a.TotalParams(), 2*4*((64+128)+(64+64)+(64+64)+(128+64)+3*(64+128)); got != want {
		t.Fatalf("TotalParams = %d, want %d", got, want)
	}
	l := a.(*LoRA)
	defer l.Close()
	if err := l.Save(t.TempDir()); err == nil {
		t.Fatal("Save before training succeeded")
	}
	data := filepath.Join(fixtures, "lora", "qwen3_all", "train.jsonl")
	dir := t.TempDir()
	var losses []float32
	err := l.Train(ctx, TrainConfig{Data: data, Iters: 25, BatchSize: 4, LearningRate: 1e-3, NumLayers: 2, SaveDir: dir},
		func(r StepReport) bool {
			losses = append(losses, r.Loss)
			return true
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 25 || losses[24] > losses[0]/2 {
		t.Fatalf("losses %v", losses)
	}
	if _, err := os.Stat(filepath.Join(dir, "adapters.safetensors")); err != nil {
		t.Fatal(err)
	}

	prompt := "The quick brown"
	gen := func(opts ...inference.GenerateOption) []int32 {
		ids, _ := collect(m.Generate(ctx, prompt, append(opts, inference.WithMaxTokens(10), WithIgnoreEOS())...))
		if err := m.Err(); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	base := gen()
	ad, err := m.LoadAdapter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Close()
	if ad.Scale() != 10 {
		t.Fatalf("scale %v, want alpha/rank = 10", ad.Scale())
	}
	tuned := gen(WithAdapter(ad, ad.Scale()))
	// Trained on "The quick brown fox jumps over the lazy dog.", it completes the sentence.
	if text := tm.Decode(tuned); slices.Equal(base, tuned) || !strings.HasPrefix(text, " fox jumps over the") {
		t.Fatalf("with the adapter: %q (base %v)", text, base)
	}
	live, err := l.Adapter()
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if got := gen(WithAdapter(live, live.Scale())); !slices.Equal(got, tuned) {
		t.Fatalf("the trainer's adapter gives %v, the saved one %v", got, tuned)
	}
	if got := gen(WithAdapter(ad, 0)); !slices.Equal(got, base) {
		t.Fatalf("scale 0 gives %v, the base model %v", got, base)
	}
	if got := gen(); !slices.Equal(got, base) {
		t.Fatalf("no adapter gives %v, the base model %v", got, base)
	}
	t.Logf("loss %.3f -> %.3f; base %q, tuned %q", losses[0], losses[24], tm.Decode(base), tm.Decode(tuned))
}

func TestLoRABadInput(t *testing.T) {
	m := load(t, "qwen3")
	if a := m.ApplyLoRA(inference.LoRAConfig{Rank: 0, Alpha: 1}); a != nil || m.Err() == nil {
		t.Fatalf("rank 0: %v, %v", a, m.Err())
	}
	if a := m.ApplyLoRA(inference.LoRAConfig{Rank: 4, Alpha: 8, TargetKeys: []string{"nope"}}); a != nil || !strings.Contains(m.Err().Error(), "nope") {
		t.Fatalf("unknown target: %v", m.Err())
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte("{\"text\": \"a b c\"}\n{\"text\": \"d e f\"}\n{\"text\"\n"), 0o644)
	l := m.ApplyLoRA(inference.DefaultLoRAConfig()).(*LoRA)
	defer l.Close()
	if err := l.Train(ctx, TrainConfig{Data: bad, BatchSize: 1}, nil); err == nil || !strings.Contains(err.Error(), "row 3") {
		t.Fatalf("malformed row: %v", err)
	}
	// Cancelled between steps.
	c, cancel := context.WithCancel(ctx)
	steps := 0
	err := l.Train(c, TrainConfig{Data: filepath.Join(fixtures, "lora", "qwen3_all", "train.jsonl"), Iters: 50, BatchSize: 2},
		func(StepReport) bool {
			steps++
			if steps == 3 {
				cancel()
			}
			return true
		})
	if !errors.Is(err, context.Canceled) || steps != 3 {
		t.Fatalf("cancel: %v after %d steps", err, steps)
	}
	// The model still generates.
	if ids, _ := collect(m.Generate(ctx, "The quick", inference.WithMaxTokens(4))); len(ids) == 0 || m.Err() != nil {
		t.Fatalf("generate after errors: %v %v", ids, m.Err())
	}
}
