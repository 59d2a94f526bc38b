package metal

// The options, interfaces and errors of the contract as go-inference has them now: each test
// shows the option changing what is generated (or refusing a bad value), against the fixtures.

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

// sampled is a short sampled generation on m.
func sampled(t *testing.T, m *Model, prompt string, opts ...inference.GenerateOption) []int32 {
	t.Helper()
	ids, _ := collect(m.Generate(ctx, prompt, append([]inference.GenerateOption{inference.WithMaxTokens(16), WithIgnoreEOS()}, opts...)...))
	if err := m.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestWithSeedReproduces(t *testing.T) {
	m := load(t, "llama_tied")
	ref := readRef(t, "llama_tied")
	hot := inference.WithTemperature(3)
	a := sampled(t, m, ref.PromptText, hot, inference.WithSeed(7))
	if b := sampled(t, m, ref.PromptText, hot, inference.WithSeed(7)); !slices.Equal(a, b) {
		t.Fatalf("seed 7 gave %v, then %v", a, b)
	}
	// The deprecated metal name is the same option.
	if b := sampled(t, m, ref.PromptText, hot, WithSeed(7)); !slices.Equal(a, b) {
		t.Fatalf("metal.WithSeed(7) gave %v, inference.WithSeed(7) %v", b, a)
	}
	differs := false
	for seed := uint64(8); seed < 12 && !differs; seed++ {
		differs = !slices.Equal(a, sampled(t, m, ref.PromptText, hot, inference.WithSeed(seed)))
	}
	if !differs {
		t.Fatal("seeds 7 to 11 all gave the same tokens")
	}
}

func TestWithMinP(t *testing.T) {
	m := load(t, "llama_tied")
	ref := readRef(t, "llama_tied")
	greedy := ref.greedy()[:16]
	hot := []inference.GenerateOption{inference.WithTemperature(3), inference.WithSeed(1)}
	// Without min-p, sampling this hot leaves the greedy path.
	if slices.Equal(sampled(t, m, ref.PromptText, hot...), greedy) {
		t.Fatal("sampling at temperature 3 gave the greedy tokens: the test shows nothing")
	}
	// A min-p close to 1 keeps only the most likely token: greedy at any temperature.
	if got := sampled(t, m, ref.PromptText, append(hot, inference.WithMinP(0.999))...); !slices.Equal(got, greedy) {
		t.Fatalf("min-p 0.999 gave %v, want the greedy %v", got, greedy)
	}
	if got := sampled(t, m, ref.PromptText, append(hot, WithMinP(0.999))...); !slices.Equal(got, greedy) {
		t.Fatalf("metal.WithMinP(0.999) gave %v", got)
	}
	collect(m.Generate(ctx, "x", inference.WithMinP(1.5)))
	if !errors.Is(m.Err(), lmx.ErrInvalidArgument) {
		t.Fatalf("min-p 1.5: Err() = %v", m.Err())
	}
}

func TestWithSuppressTokens(t *testing.T) {
	m := load(t, "llama_tied")
	ref := readRef(t, "llama_tied")
	greedy := ref.greedy()[:16]
	banned := greedy[:8]
	got := sampled(t, m, ref.PromptText, inference.WithSuppressTokens(banned...))
	if len(got) != 16 {
		t.Fatalf("generated %v", got)
	}
	for _, id := range got {
		if slices.Contains(banned, id) {
			t.Fatalf("suppressed token %d was generated: %v", id, got)
		}
	}
	// BatchGenerate too.
	res, err := m.BatchGenerate(ctx, []string{ref.PromptText}, inference.WithMaxTokens(16), WithIgnoreEOS(), inference.WithSuppressTokens(banned...))
	if err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	for _, tok := range res[0].Tokens {
		if slices.Contains(banned, tok.ID) {
			t.Fatalf("BatchGenerate generated suppressed token %d", tok.ID)
		}
	}
	for _, bad := range [][]int32{{-1}, {1 << 30}} {
		collect(m.Generate(ctx, "x", inference.WithSuppressTokens(bad...)))
		var e *lmx.Error
		if !errors.As(m.Err(), &e) || e.Status != lmx.StatusInvalidArgument {
			t.Fatalf("suppressing %v: Err() = %v", bad, m.Err())
		}
	}
}

// A stop token that greedy decoding would choose first ends generation at once; with
// WithMinTokensBeforeStop it is held back for that many tokens.
func TestWithMinTokensBeforeStop(t *testing.T) {
	m := load(t, "llama_tied")
	ref := readRef(t, "llama_tied")
	first := ref.greedy()[0]
	stop := inference.WithStopTokens(first)
	if ids, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(12), stop)); len(ids) != 0 || m.Err() != nil {
		t.Fatalf("the stop token did not end generation at once: %v, %v", ids, m.Err())
	}
	ids, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(12), stop, inference.WithMinTokensBeforeStop(4)))
	if m.Err() != nil || len(ids) < 4 || slices.Contains(ids, first) {
		t.Fatalf("with 4 tokens before stop: %v, %v", ids, m.Err())
	}
	res, err := m.BatchGenerate(ctx, []string{ref.PromptText, ref.PromptText}, inference.WithMaxTokens(12), stop, inference.WithMinTokensBeforeStop(4))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || len(r.Tokens) < 4 || r.Tokens[0].ID == first {
			t.Fatalf("BatchGenerate row %d: %+v", i, r)
		}
	}
	collect(m.Generate(ctx, "x", inference.WithMinTokensBeforeStop(-1)))
	if !errors.Is(m.Err(), lmx.ErrInvalidArgument) {
		t.Fatalf("a negative count: Err() = %v", m.Err())
	}
}

// slotPrefill is how many prompt tokens the last generation on the model's (only) slot
// computed.
func slotPrefill(t *testing.T, m *Model) int {
	t.Helper()
	sl := <-m.st.idle
	defer func() { m.st.idle <- sl }()
	_, n, err := sessionLastResult(sl.s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWithDisablePromptReuse(t *testing.T) {
	m := load(t, "qwen3")
	ref := readRef(t, "qwen3")
	opts := []inference.GenerateOption{inference.WithMaxTokens(4), WithIgnoreEOS()}
	first, _ := collect(m.Generate(ctx, ref.PromptText, opts...))
	prompt := m.Metrics().PromptTokens
	if got := slotPrefill(t, m); got != prompt {
		t.Fatalf("the first call computed %d of %d prompt tokens", got, prompt)
	}
	// The same prompt again: the slot's cache holds it.
	again, _ := collect(m.Generate(ctx, ref.PromptText, opts...))
	if got := slotPrefill(t, m); got >= prompt {
		t.Fatalf("the second call computed %d of %d prompt tokens: no reuse", got, prompt)
	}
	// Without reuse: the whole prompt, and the same tokens.
	fresh, _ := collect(m.Generate(ctx, ref.PromptText, append(opts, inference.WithDisablePromptReuse())...))
	if got := slotPrefill(t, m); got != prompt {
		t.Fatalf("with WithDisablePromptReuse the call computed %d of %d prompt tokens", got, prompt)
	}
	if !slices.Equal(first, again) || !slices.Equal(first, fresh) {
		t.Fatalf("tokens %v, %v, %v", first, again, fresh)
	}

	// A session: its cache is emptied before the call.
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sess := s.(*Session)
	collect(s.Generate(ctx, ref.PromptText, opts...))
	collect(s.Generate(ctx, ref.PromptText, opts...))
	if n, _ := sess.PrefillTokens(); n >= prompt {
		t.Fatalf("the session computed %d of %d prompt tokens: no reuse", n, prompt)
	}
	collect(s.Generate(ctx, ref.PromptText, append(opts, inference.WithDisablePromptReuse())...))
	if n, _ := sess.PrefillTokens(); n != prompt || s.Err() != nil {
		t.Fatalf("with WithDisablePromptReuse the session computed %d of %d prompt tokens (%v)", n, prompt, s.Err())
	}
	if info, _ := s.CacheInfo(); info.Positions != prompt+3 {
		t.Fatalf("the session's cache holds %d positions, want the prompt and 3 tokens (%d)", info.Positions, prompt+3)
	}
}

// The sink gets each call's own metrics once, as Metrics() reports them after it; a call that
// did not run does not call it.
func TestWithMetricsSink(t *testing.T) {
	m := load(t, "qwen3")
	var got []inference.GenerateMetrics
	sink := inference.WithMetricsSink(func(mt inference.GenerateMetrics) { got = append(got, mt) })
	check := func(what string, n int) {
		t.Helper()
		if len(got) != 1 || !reflect.DeepEqual(got[0], m.Metrics()) || got[0].GeneratedTokens != n {
			t.Fatalf("%s: the sink got %+v; Metrics() = %+v", what, got, m.Metrics())
		}
		got = nil
	}
	collect(m.Generate(ctx, "Hello", inference.WithMaxTokens(3), WithIgnoreEOS(), sink))
	check("Generate", 3)
	collect(m.Chat(ctx, []inference.Message{{Role: "user", Content: "Hi"}}, inference.WithMaxTokens(2), WithIgnoreEOS(), sink))
	check("Chat", 2)
	if _, err := m.BatchGenerate(ctx, []string{"a", "b c"}, inference.WithMaxTokens(2), WithIgnoreEOS(), sink); err != nil {
		t.Fatal(err)
	}
	check("BatchGenerate", 4)
	if _, err := m.Classify(ctx, []string{"a", "b c"}, sink); err != nil {
		t.Fatal(err)
	}
	check("Classify", 0)
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	collect(s.Generate(ctx, "Hello", inference.WithMaxTokens(2), WithIgnoreEOS(), sink))
	if len(got) != 1 || !reflect.DeepEqual(got[0], s.Metrics()) || got[0].GeneratedTokens != 2 {
		t.Fatalf("Session.Generate: the sink got %+v; Metrics() = %+v", got, s.Metrics())
	}
	got = nil
	// Refused before it ran: no metrics.
	collect(m.Generate(ctx, "Hello", inference.WithTopP(7), sink))
	if m.Err() == nil || len(got) != 0 {
		t.Fatalf("a refused call: Err() = %v, the sink got %+v", m.Err(), got)
	}
}

// Each of several concurrent calls gets its own metrics in its sink.
func TestMetricsSinkIsPerCall(t *testing.T) {
	m := load(t, "qwen3", inference.WithParallelSlots(3))
	var wg sync.WaitGroup
	for i := 1; i <= 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mt inference.GenerateMetrics
			collect(m.Generate(ctx, "Hello", inference.WithMaxTokens(i*2), WithIgnoreEOS(),
				inference.WithMetricsSink(func(g inference.GenerateMetrics) { mt = g })))
			if mt.GeneratedTokens != i*2 {
				t.Errorf("call %d: the sink got %d generated tokens", i, mt.GeneratedTokens)
			}
		}()
	}
	wg.Wait()
}

func TestWithAdapterPath(t *testing.T) {
	adapterDir := filepath.Join(fixtures, "lora", "qwen3_all", "trained")
	ref := readRef(t, "qwen3")
	opts := []inference.GenerateOption{inference.WithMaxTokens(10), WithIgnoreEOS()}
	base := load(t, "qwen3")
	plain, _ := collect(base.Generate(ctx, ref.PromptText, opts...))
	a, err := base.LoadAdapter(adapterDir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	withAdapter, _ := collect(base.Generate(ctx, ref.PromptText, append(opts, WithAdapter(a, a.Scale()))...))
	if slices.Equal(plain, withAdapter) {
		t.Fatal("the adapter changes nothing: the test shows nothing")
	}

	m := load(t, "qwen3", inference.WithAdapterPath(adapterDir))
	if got, _ := collect(m.Generate(ctx, ref.PromptText, opts...)); !slices.Equal(got, withAdapter) {
		t.Fatalf("loaded with the adapter: %v, want %v (the adapter's)", got, withAdapter)
	}
	if got, _ := collect(m.Generate(ctx, ref.PromptText, append(opts, WithAdapter(nil, 0))...)); !slices.Equal(got, plain) {
		t.Fatalf("WithAdapter(nil) on it: %v, want the base model's %v", got, plain)
	}
	// Its sessions use it too, also after the model is closed.
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m.Close()
	if got, _ := collect(s.Generate(ctx, ref.PromptText, opts...)); !slices.Equal(got, withAdapter) || s.Err() != nil {
		t.Fatalf("a session after Close: %v (%v), want %v", got, s.Err(), withAdapter)
	}
	// Classify and BatchGenerate cannot apply it: they refuse.
	m2 := load(t, "qwen3", inference.WithAdapterPath(adapterDir))
	if _, err := m2.Classify(ctx, []string{"a"}); !errors.Is(err, lmx.ErrUnsupported) {
		t.Fatalf("Classify: %v", err)
	}
	if _, err := m2.BatchGenerate(ctx, []string{"a"}); !errors.Is(err, lmx.ErrUnsupported) {
		t.Fatalf("BatchGenerate: %v", err)
	}
	if _, err := Load(filepath.Join(fixtures, "qwen3"), inference.WithAdapterPath(t.TempDir())); !errors.Is(err, lmx.ErrNotFound) {
		t.Fatalf("an empty adapter folder: %v", err)
	}
}

func TestWithCacheMode(t *testing.T) {
	for _, mode := range []string{"", "native"} {
		m, err := Load(filepath.Join(fixtures, "qwen3"), inference.WithCacheMode(mode))
		if err != nil {
			t.Fatalf("%q: %v", mode, err)
		}
		m.Close()
	}
	_, err := Load(filepath.Join(fixtures, "qwen3"), inference.WithCacheMode("turboquant:4"))
	var e *lmx.Error
	if !errors.Is(err, lmx.ErrUnsupported) || !errors.As(err, &e) || e.Message == "" {
		t.Fatalf("an unknown cache mode: %v", err)
	}
}

// TokenizerModel against transformers' own tokenizer output for the fixtures.
func TestTokenizerModel(t *testing.T) {
	for _, name := range []string{"llama_tied", "qwen3", "gemma3"} {
		t.Run(name, func(t *testing.T) {
			var tref struct {
				Encode []struct {
					Text        string  `json:"text"`
					WithSpecial []int32 `json:"ids_with_special"`
				} `json:"encode"`
				Decode []struct {
					IDs         []int32 `json:"ids"`
					SkipSpecial bool    `json:"skip_special"`
					Text        string  `json:"text"`
				} `json:"decode"`
				Chat []struct {
					AddGenerationPrompt bool                `json:"add_generation_prompt"`
					Extra               map[string]any      `json:"extra"`
					Messages            []inference.Message `json:"messages"`
					Text                string              `json:"text"`
				} `json:"chat"`
			}
			readJSON(t, filepath.Join(fixtures, name, "tokenizer_reference.json"), &tref)
			lm, err := inference.LoadModel(filepath.Join(fixtures, name))
			if err != nil {
				t.Fatal(err)
			}
			defer lm.Close()
			tm, ok := lm.(inference.TokenizerModel)
			if !ok {
				t.Fatalf("%T is not an inference.TokenizerModel", lm)
			}
			for _, c := range tref.Encode {
				ids := tm.Encode(c.Text)
				if !slices.Equal(ids, c.WithSpecial) {
					t.Fatalf("Encode(%q) = %v, want %v", c.Text, ids, c.WithSpecial)
				}
				// The round trip gives the text back, after the special tokens Encode added
				// in front (BOS where the model uses one); a tokenizer that normalizes (qwen's
				// NFC) gives the normalized text, which encodes to the same ids.
				prefix := tm.Decode(ids[:len(ids)-len(encodePlain(t, lm, c.Text))])
				back := tm.Decode(ids)
				if back != prefix+c.Text && !slices.Equal(tm.Encode(strings.TrimPrefix(back, prefix)), ids) {
					t.Fatalf("Decode(Encode(%q)) = %q, which does not encode back to %v", c.Text, back, ids)
				}
			}
			for _, c := range tref.Decode {
				if !c.SkipSpecial {
					if got := tm.Decode(c.IDs); got != c.Text {
						t.Fatalf("Decode(%v) = %q, want %q", c.IDs, got, c.Text)
					}
				}
			}
			n := 0
			for _, c := range tref.Chat {
				if c.AddGenerationPrompt && len(c.Extra) == 0 {
					n++
					if got, err := tm.ApplyChatTemplate(c.Messages); err != nil || got != c.Text {
						t.Fatalf("ApplyChatTemplate = %q, %v; want %q", got, err, c.Text)
					}
				}
			}
			if n == 0 {
				t.Fatal("no chat cases")
			}
		})
	}
}

func encodePlain(t *testing.T, m inference.TextModel, text string) []int32 {
	t.Helper()
	ids, err := m.(*Model).Tokenize(text, false)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// ModelType(), Description().ModelType and Discover agree: config.json's model_type.
func TestModelTypeAgrees(t *testing.T) {
	found, err := inference.Discover(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range found {
		m, err := Load(d.Path)
		if err != nil {
			t.Fatal(err)
		}
		got, desc := m.ModelType(), m.Description()
		m.Close()
		if got != d.ModelType || desc.ModelType != got {
			t.Fatalf("%s: ModelType() %q, Description().ModelType %q, Discover %q", d.Path, got, desc.ModelType, d.ModelType)
		}
		seen[got] = true
	}
	// gemma3's config says gemma3_text; the family that runs it is gemma3.
	if !seen["gemma3_text"] || !seen["qwen3"] || !seen["llama"] {
		t.Fatalf("model types seen: %v", seen)
	}
}

// Errors: typed (*lmx.Error with a status) for what liblmx refuses and for options refused on
// the Go side, sentinels for closed objects; each error's message is its own call's even with
// many goroutines failing at once.
func TestErrorsAreTyped(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := Load(missing)
	var e *lmx.Error
	if !errors.Is(err, lmx.ErrNotFound) || !errors.As(err, &e) || e.Status != lmx.StatusNotFound {
		t.Fatalf("a missing model: %#v", err)
	}
	if _, err := Load(filepath.Join(fixtures, "qwen3"), inference.WithBackend("rocm")); !errors.Is(err, lmx.ErrInvalidArgument) {
		t.Fatalf("another backend's name: %v", err)
	}
	if _, err := Load(filepath.Join(fixtures, "qwen3"), inference.WithParallelSlots(-1)); !errors.Is(err, lmx.ErrInvalidArgument) {
		t.Fatalf("negative slots: %v", err)
	}

	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				path := filepath.Join(missing, fmt.Sprintf("g%d-%d", i, j))
				_, err := Inspect(path)
				var e *lmx.Error
				if !errors.As(err, &e) || e.Status != lmx.StatusNotFound || !strings.Contains(e.Message, path+": ") {
					t.Errorf("goroutine %d: %v does not name %s", i, err, path)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Every call on a closed Model, Session or Adapter fails with its sentinel, which matches
// ErrClosed.
func TestClosedObjects(t *testing.T) {
	m := load(t, "qwen3")
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.LoadAdapter(filepath.Join(fixtures, "lora", "qwen3_all", "trained"))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	s.Close()
	a.Close()
	isClosed := func(what string, err, want error) {
		t.Helper()
		if err != want || !errors.Is(err, ErrClosed) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	collect(m.Generate(ctx, "x"))
	isClosed("Generate", m.Err(), ErrClosed)
	collect(m.Chat(ctx, []inference.Message{{Role: "user", Content: "x"}}))
	isClosed("Chat", m.Err(), ErrClosed)
	_, err = m.Classify(ctx, []string{"x"})
	isClosed("Classify", err, ErrClosed)
	_, err = m.BatchGenerate(ctx, []string{"x"})
	isClosed("BatchGenerate", err, ErrClosed)
	_, err = m.NewSession()
	isClosed("NewSession", err, ErrClosed)
	_, err = m.LoadSession("x")
	isClosed("LoadSession", err, ErrClosed)
	_, err = m.Tokenize("x", true)
	isClosed("Tokenize", err, ErrClosed)
	_, err = m.ApplyChatTemplate([]inference.Message{{Role: "user", Content: "x"}})
	isClosed("ApplyChatTemplate", err, ErrClosed)
	_, err = m.LoadAdapter("x")
	isClosed("LoadAdapter", err, ErrClosed)
	if ids := m.Encode("x"); ids != nil {
		t.Errorf("Encode on a closed model gave %v", ids)
	}
	isClosed("Encode", m.Err(), ErrClosed)
	if m.Capabilities().Available {
		t.Error("a closed model reports itself available")
	}

	collect(s.Generate(ctx, "x"))
	isClosed("Session.Generate", s.Err(), ErrSessionClosed)
	_, err = s.Fork()
	isClosed("Session.Fork", err, ErrSessionClosed)
	isClosed("Session.Save", s.Save(filepath.Join(t.TempDir(), "s")), ErrSessionClosed)
	_, err = s.CacheInfo()
	isClosed("Session.CacheInfo", err, ErrSessionClosed)
	if errors.Is(ErrSessionClosed, ErrAdapterClosed) || errors.Is(ErrClosed, ErrSessionClosed) {
		t.Error("the closed sentinels match each other beyond ErrClosed")
	}

	open := load(t, "qwen3")
	collect(open.Generate(ctx, "x", WithAdapter(a, 1)))
	isClosed("WithAdapter(closed)", open.Err(), ErrAdapterClosed)
	// Close is idempotent everywhere.
	if m.Close() != nil || s.Close() != nil || a.Close() != nil {
		t.Error("a second Close failed")
	}
}
