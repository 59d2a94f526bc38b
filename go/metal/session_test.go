package metal

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

// openSession makes a session on m, closed when the test ends.
func openSession(t testing.TB, m *Model, opts ...inference.SessionOption) *Session {
	t.Helper()
	s, err := m.NewSession(opts...)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*Session)
}

func cacheInfo(t testing.TB, s inference.Session) inference.CacheInfo {
	t.Helper()
	info, err := s.CacheInfo()
	if err != nil {
		t.Fatalf("CacheInfo: %v", err)
	}
	return info
}

// reused checks that s's last generation computed fewer tokens than its prompt's (the
// cache gave the rest) and returns how many it computed.
func reused(t testing.TB, s *Session) int {
	t.Helper()
	n, err := s.PrefillTokens()
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Metrics().PromptTokens; n <= 0 || n >= p {
		t.Fatalf("computed %d of the %d prompt tokens: want the cache to give all but a few", n, p)
	}
	return n
}

var greedy = []inference.GenerateOption{inference.WithMaxTokens(12), WithIgnoreEOS()}

// A session's cache changes nothing but the work: a prompt that extends what it holds
// computes only the new tokens and generates what a fresh session does on the whole text.
func TestSessionReusesItsCache(t *testing.T) {
	m := load(t, "qwen3")
	ref := readRef(t, "qwen3")
	s := openSession(t, m)
	if info := cacheInfo(t, s); info.Positions != 0 || info.KVBits != 0 {
		t.Fatalf("a new session's cache: %+v", info)
	}
	first, text := collect(s.Generate(ctx, ref.PromptText, greedy...))
	if err := s.Err(); err != nil || len(first) != 12 {
		t.Fatalf("first call: %v, %v", first, err)
	}
	if want := ref.greedy()[:12]; !slices.Equal(first, want) {
		t.Fatalf("generated %v, want the reference %v", first, want)
	}
	info := cacheInfo(t, s)
	if info.Positions < len(ref.PromptIDs) || info.KnownTokens != info.Positions || info.Bytes == 0 {
		t.Fatalf("after a prompt of %d tokens and 12 more: %+v", len(ref.PromptIDs), info)
	}

	next := ref.PromptText + text + " The sea"
	got, _ := collect(s.Generate(ctx, next, greedy...))
	reused(t, s)
	want, _ := collect(openSession(t, m).Generate(ctx, next, greedy...))
	if !slices.Equal(got, want) {
		t.Fatalf("continuing the session gave %v\na fresh session %v", got, want)
	}

	// Chat: the full conversation each time, the common prefix reused; the answers are the
	// model's own (Model.Chat runs on a fresh slot here).
	conv := []inference.Message{{Role: "user", Content: "Count the ships."}}
	answer, answerText := collect(s.Chat(ctx, conv, greedy...))
	if err := s.Err(); err != nil || len(answer) == 0 {
		t.Fatalf("Chat: %v, %v", answer, err)
	}
	if mine, _ := collect(m.Chat(ctx, conv, greedy...)); !slices.Equal(answer, mine) {
		t.Fatalf("session Chat %v, Model.Chat %v", answer, mine)
	}
	conv = append(conv, inference.Message{Role: "assistant", Content: answerText}, inference.Message{Role: "user", Content: "And the letters?"})
	answer, _ = collect(s.Chat(ctx, conv, greedy...))
	reused(t, s)
	if mine, _ := collect(m.Chat(ctx, conv, greedy...)); !slices.Equal(answer, mine) {
		t.Fatalf("second turn: session Chat %v, Model.Chat %v", answer, mine)
	}
}

// Forks share the prompt's cache and then diverge: each branch generates what a fresh
// session generates on its whole text, and the original is left as it was.
func TestSessionForkDiverges(t *testing.T) {
	m := load(t, "qwen3")
	ref := readRef(t, "qwen3")
	base := openSession(t, m)
	collect(base.Generate(ctx, ref.PromptText, inference.WithMaxTokens(1)))
	if err := base.Err(); err != nil {
		t.Fatal(err)
	}
	before := cacheInfo(t, base)

	suffixes := []string{" Then the sea rose.", " Later, a storm came", " 42"}
	forks := make([]*Session, len(suffixes))
	for i := range forks {
		f, err := base.Fork()
		if err != nil {
			t.Fatalf("Fork: %v", err)
		}
		t.Cleanup(func() { f.Close() })
		forks[i] = f.(*Session)
		if info := cacheInfo(t, f); info != before {
			t.Fatalf("a fork's cache %+v, the original's %+v", info, before)
		}
	}
	branches := make([][]int32, len(suffixes))
	for i, suffix := range suffixes {
		full := ref.PromptText + suffix
		branches[i], _ = collect(forks[i].Generate(ctx, full, greedy...))
		if err := forks[i].Err(); err != nil {
			t.Fatal(err)
		}
		reused(t, forks[i])
		want, _ := collect(openSession(t, m).Generate(ctx, full, greedy...))
		if !slices.Equal(branches[i], want) {
			t.Fatalf("fork %d generated %v\na fresh session     %v", i, branches[i], want)
		}
	}
	if slices.Equal(branches[0], branches[1]) && slices.Equal(branches[1], branches[2]) {
		t.Fatalf("every branch generated %v: the test cannot tell them apart", branches[0])
	}
	if after := cacheInfo(t, base); after.Positions != before.Positions {
		t.Fatalf("the forks' generations changed the original: %+v, was %+v", after, before)
	}
	// The original still continues on its own, as the first fork did.
	got, _ := collect(base.Generate(ctx, ref.PromptText+suffixes[0], greedy...))
	if !slices.Equal(got, branches[0]) {
		t.Fatalf("the original generated %v, its fork %v", got, branches[0])
	}
}

// A saved session restores to one that continues exactly as the original does.
func TestSessionSaveLoad(t *testing.T) {
	m := load(t, "qwen3")
	ref := readRef(t, "qwen3")
	s := openSession(t, m)
	_, text := collect(s.Generate(ctx, ref.PromptText, greedy...))
	path := filepath.Join(t.TempDir(), "session.safetensors")
	if err := s.Save(path); err != nil {
		t.Fatalf("Save: %v", err)
	}
	l, err := m.LoadSession(path)
	if err != nil {
		t.Fatalf("LoadSession: %v", err)
	}
	defer l.Close()
	if a, b := cacheInfo(t, s), cacheInfo(t, l); a.Positions != b.Positions || a.KnownTokens != b.KnownTokens {
		t.Fatalf("saved %+v, loaded %+v", a, b)
	}
	next := ref.PromptText + text + " And"
	want, _ := collect(s.Generate(ctx, next, greedy...))
	got, _ := collect(l.Generate(ctx, next, greedy...))
	if err := l.Err(); err != nil || len(got) == 0 {
		t.Fatalf("the loaded session: %v, %v", got, err)
	}
	reused(t, l.(*Session))
	if !slices.Equal(got, want) {
		t.Fatalf("the loaded session generated %v\nthe original          %v", got, want)
	}
	// Through the contract: inference.NewSession on a model loaded by name.
	tm, err := inference.LoadModel(filepath.Join(fixtures, "qwen3"), inference.WithBackend(Name))
	if err != nil {
		t.Fatal(err)
	}
	defer tm.Close()
	if _, ok := tm.(inference.StatefulModel); !ok {
		t.Fatal("the metal model is not an inference.StatefulModel")
	}
	fresh, err := inference.NewSession(tm)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.Save(path); !errors.Is(err, lmx.ErrInvalidArgument) {
		t.Fatalf("saving an empty session: %v", err)
	}
	if _, err := m.LoadSession(path); err != nil {
		t.Fatalf("a failed Save changed the file: %v", err)
	}
}

// Files that are not this model's sessions are refused with the reason.
func TestLoadSessionBadFiles(t *testing.T) {
	m := load(t, "qwen3")
	dir := t.TempDir()
	check := func(name, path string, want error, words ...string) {
		t.Helper()
		s, err := m.LoadSession(path)
		if err == nil {
			s.Close()
			t.Fatalf("%s: loaded", name)
		}
		if s != nil {
			t.Fatalf("%s: a session came with the error", name)
		}
		if !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", name, err, want)
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: %q does not say %q", name, err, w)
			}
		}
		t.Logf("%s: %v", name, err)
	}
	check("missing", filepath.Join(dir, "none.safetensors"), lmx.ErrNotFound, "none.safetensors")

	garbage := filepath.Join(dir, "garbage.safetensors")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a session file\n", 50)), 0o644); err != nil {
		t.Fatal(err)
	}
	check("garbage", garbage, lmx.ErrFormat, "garbage.safetensors", "safetensors file")

	s := openSession(t, m)
	collect(s.Generate(ctx, "The keeper counted", greedy...))
	good := filepath.Join(dir, "good.safetensors")
	if err := s.Save(good); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.safetensors")
	if err := os.WriteFile(truncated, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	check("truncated", truncated, lmx.ErrFormat, "truncated.safetensors", "truncated:")

	other := load(t, "llama_tied")
	ls := openSession(t, other)
	collect(ls.Generate(ctx, "The keeper counted", greedy...))
	llama := filepath.Join(dir, "llama.safetensors")
	if err := ls.Save(llama); err != nil {
		t.Fatal(err)
	}
	check("another model's", llama, lmx.ErrInvalidArgument, "another model", "llama", "qwen3")
}

// A quantized KV cache: 8 bits in groups of 32 fits qwen3's head dimension of 32 and takes
// less memory; a group of 64 cannot divide it and is refused with the reason.
func TestSessionQuantizedCache(t *testing.T) {
	m := load(t, "qwen3")
	ref := readRef(t, "qwen3")
	if m.Description().HeadDim != 32 {
		t.Fatalf("the fixture's head dimension is %d, the test assumes 32", m.Description().HeadDim)
	}
	q := openSession(t, m, inference.WithKVBits(8), inference.WithKVGroupSize(32))
	ids, _ := collect(q.Generate(ctx, ref.PromptText, greedy...))
	if err := q.Err(); err != nil || len(ids) != 12 {
		t.Fatalf("8-bit cache: %v, %v", ids, err)
	}
	qi := cacheInfo(t, q)
	if qi.KVBits != 8 || qi.KVGroupSize != 32 || qi.Positions < len(ref.PromptIDs) {
		t.Fatalf("8-bit cache: %+v", qi)
	}
	f := openSession(t, m)
	collect(f.Generate(ctx, ref.PromptText, greedy...))
	if fi := cacheInfo(t, f); qi.Bytes >= fi.Bytes {
		t.Fatalf("8-bit cache of %d bytes, the float one %d", qi.Bytes, fi.Bytes)
	}
	// The quantization survives Save and LoadSession.
	path := filepath.Join(t.TempDir(), "q8.safetensors")
	if err := q.Save(path); err != nil {
		t.Fatal(err)
	}
	l, err := m.LoadSession(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if li := cacheInfo(t, l); li.KVBits != 8 || li.KVGroupSize != 32 || li.Positions != qi.Positions {
		t.Fatalf("the loaded 8-bit cache: %+v, saved %+v", li, qi)
	}

	for _, c := range []struct {
		name string
		opts []inference.SessionOption
		says string
	}{
		{"group 64", []inference.SessionOption{inference.WithKVBits(8), inference.WithKVGroupSize(64)}, "head dimension 32"},
		{"bits 3", []inference.SessionOption{inference.WithKVBits(3)}, "kv_bits 3"},
		{"negative bits", []inference.SessionOption{inference.WithKVBits(-1)}, "WithKVBits(-1)"},
	} {
		s, err := m.NewSession(c.opts...)
		if err == nil {
			s.Close()
			t.Fatalf("%s: accepted", c.name)
		}
		if !errors.Is(err, lmx.ErrInvalidArgument) || !strings.Contains(err.Error(), c.says) {
			t.Fatalf("%s: %v", c.name, err)
		}
		t.Logf("%s: %v", c.name, err)
	}
}

// One generation at a time: a second one, from the loop body or from another goroutine,
// yields nothing and reports busy, as do Fork, Save and CacheInfo; the first goes on.
func TestSessionBusy(t *testing.T) {
	m := load(t, "qwen3")
	s := openSession(t, m)
	path := filepath.Join(t.TempDir(), "busy.safetensors")
	n := 0
	for range s.Generate(ctx, "Hello", inference.WithMaxTokens(8), WithIgnoreEOS()) {
		n++
		if n != 2 {
			continue
		}
		if ids, _ := collect(s.Generate(ctx, "Hello")); len(ids) != 0 || !errors.Is(s.Err(), lmx.ErrBusy) {
			t.Fatalf("Generate during Generate: %v, %v", ids, s.Err())
		}
		if ids, _ := collect(s.Chat(ctx, []inference.Message{{Role: "user", Content: "Hi"}})); len(ids) != 0 || !errors.Is(s.Err(), lmx.ErrBusy) {
			t.Fatalf("Chat during Generate: %v, %v", ids, s.Err())
		}
		if f, err := s.Fork(); !errors.Is(err, lmx.ErrBusy) || f != nil {
			t.Fatalf("Fork during Generate: %v", err)
		}
		if err := s.Save(path); !errors.Is(err, lmx.ErrBusy) {
			t.Fatalf("Save during Generate: %v", err)
		}
		if _, err := s.CacheInfo(); !errors.Is(err, lmx.ErrBusy) {
			t.Fatalf("CacheInfo during Generate: %v", err)
		}
		// From another goroutine, while this one waits in the loop body.
		var wg sync.WaitGroup
		var other []int32
		var otherErr error
		wg.Go(func() {
			other, _ = collect(s.Generate(ctx, "Hello"))
			otherErr = s.Err()
		})
		wg.Wait()
		if len(other) != 0 || !errors.Is(otherErr, lmx.ErrBusy) {
			t.Fatalf("Generate from another goroutine: %v, %v", other, otherErr)
		}
	}
	if n != 8 || s.Err() != nil {
		t.Fatalf("the first generation: %d tokens, %v", n, s.Err())
	}
	if s.Metrics().GeneratedTokens != 8 {
		t.Fatalf("metrics %+v are not the first generation's", s.Metrics())
	}
	if ids, _ := collect(s.Generate(ctx, "Hello", inference.WithMaxTokens(3), WithIgnoreEOS())); len(ids) != 3 {
		t.Fatalf("afterwards: %v, %v", ids, s.Err())
	}
	// Separate sessions of one model generate at once.
	var wg sync.WaitGroup
	outs := make([][]int32, 3)
	for i := range outs {
		wg.Go(func() {
			sess, err := m.NewSession()
			if err != nil {
				return
			}
			defer sess.Close()
			outs[i], _ = collect(sess.Generate(ctx, "Hello", inference.WithMaxTokens(6), WithIgnoreEOS()))
		})
	}
	wg.Wait()
	for i, out := range outs {
		if len(out) != 6 || !slices.Equal(out, outs[0]) {
			t.Fatalf("concurrent session %d: %v (session 0: %v)", i, out, outs[0])
		}
	}
}

// Close: idempotent, every later call fails with ErrSessionClosed; from the loop body it
// ends the generation at once. A session outlives its model's Close.
func TestSessionClose(t *testing.T) {
	m := load(t, "qwen3")
	s := openSession(t, m)
	collect(s.Generate(ctx, "Hello", inference.WithMaxTokens(2)))
	mt := s.Metrics()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if ids, _ := collect(s.Generate(ctx, "Hello")); len(ids) != 0 || !errors.Is(s.Err(), ErrSessionClosed) {
		t.Fatalf("Generate after Close: %v, %v", ids, s.Err())
	}
	if ids, _ := collect(s.Chat(ctx, []inference.Message{{Role: "user", Content: "Hi"}})); len(ids) != 0 || !errors.Is(s.Err(), ErrSessionClosed) {
		t.Fatalf("Chat after Close: %v, %v", ids, s.Err())
	}
	if f, err := s.Fork(); !errors.Is(err, ErrSessionClosed) || f != nil {
		t.Fatalf("Fork after Close: %v", err)
	}
	if err := s.Save(filepath.Join(t.TempDir(), "x")); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Save after Close: %v", err)
	}
	if _, err := s.CacheInfo(); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("CacheInfo after Close: %v", err)
	}
	if _, err := s.PrefillTokens(); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("PrefillTokens after Close: %v", err)
	}
	if s.Metrics() != mt {
		t.Fatal("Metrics changed after Close")
	}

	// Close from the loop body.
	c := openSession(t, m)
	n := 0
	for range c.Generate(ctx, "Hello", inference.WithMaxTokens(50), WithIgnoreEOS()) {
		n++
		if n == 3 {
			c.Close()
		}
	}
	if n != 3 || !errors.Is(c.Err(), ErrSessionClosed) {
		t.Fatalf("%d tokens after Close at the third, Err() = %v", n, c.Err())
	}

	// The model's Close leaves its sessions working; new ones cannot be made.
	live := openSession(t, m)
	want, _ := collect(live.Generate(ctx, "Hello", inference.WithMaxTokens(6), WithIgnoreEOS()))
	m.Close()
	fork, err := live.Fork()
	if err != nil {
		t.Fatalf("Fork after the model's Close: %v", err)
	}
	defer fork.Close()
	if got, _ := collect(fork.Generate(ctx, "Hello", inference.WithMaxTokens(6), WithIgnoreEOS())); !slices.Equal(got, want) || fork.Err() != nil {
		t.Fatalf("a fork after the model's Close: %v, %v; want %v", got, fork.Err(), want)
	}
	if _, err := m.NewSession(); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewSession after the model's Close: %v", err)
	}
	if _, err := m.LoadSession("x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("LoadSession after the model's Close: %v", err)
	}
}

// A context that ends stops the session's generation; the session generates again after it.
func TestSessionCancel(t *testing.T) {
	m := load(t, "qwen3")
	s := openSession(t, m)
	c, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	for range s.Generate(c, "Hello", inference.WithMaxTokens(100), WithIgnoreEOS()) {
		if n++; n == 2 {
			cancel()
		}
	}
	if n != 2 || !errors.Is(s.Err(), context.Canceled) {
		t.Fatalf("%d tokens, Err() = %v", n, s.Err())
	}
	if ids, _ := collect(s.Generate(c, "Hello")); len(ids) != 0 || !errors.Is(s.Err(), context.Canceled) {
		t.Fatalf("with an ended context: %v, %v", ids, s.Err())
	}
	if ids, _ := collect(s.Generate(ctx, "Hello", inference.WithMaxTokens(3), WithIgnoreEOS())); len(ids) != 3 || s.Err() != nil {
		t.Fatalf("afterwards: %v, %v", ids, s.Err())
	}
}

// Sessions hold the model's weights after its Close; dropped without Close, they (and a
// fork) are freed by their cleanup and MLX's active memory goes back to where it was.
func TestCleanupFreesDroppedSessions(t *testing.T) {
	before := settledMemory(t)
	func() {
		m, err := Load(filepath.Join(fixtures, "qwen3"))
		if err != nil {
			t.Fatal(err)
		}
		weights := m.Description().WeightBytes
		s, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		collect(s.Generate(ctx, "Hello", inference.WithMaxTokens(4)))
		f, err := s.Fork()
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
		runtime.GC()
		if a, _ := ActiveMemory(); a < before+weights {
			t.Fatalf("active memory %d with only the sessions left, %d before and %d of weights: they do not hold them", a, before, weights)
		}
		runtime.KeepAlive(s)
		runtime.KeepAlive(f)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if a, _ := ActiveMemory(); a <= before {
			return
		}
		if time.Now().After(deadline) {
			a, _ := ActiveMemory()
			t.Fatalf("active memory %d after dropping the sessions, %d before", a, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settledMemory is MLX's active memory once the cleanups of what earlier tests dropped have
// run (it stops changing).
func settledMemory(t *testing.T) uint64 {
	last := uint64(1<<64 - 1)
	for range 100 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		a, err := ActiveMemory()
		if err != nil {
			t.Fatal(err)
		}
		if a == last {
			return a
		}
		last = a
	}
	return last
}
