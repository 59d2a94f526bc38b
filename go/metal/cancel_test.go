package metal

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"liblmx/go/inference"
)

// A cancel lands during a long prefill (about 12000 tokens, some 9 s on two CPU cores with the
// qwen3 fixture): the loop ends after the current prefill chunk, with no token.
func TestCancelDuringPrefill(t *testing.T) {
	m := load(t, "qwen3", inference.WithContextLen(16384))
	prompt := strings.Repeat("The keeper counted 37 grey ships, then wrote a letter. ", 545)
	ids, err := m.Tokenize(prompt, true)
	if err != nil || len(ids) < 11000 || len(ids) > 12500 {
		t.Fatalf("the prompt has %d tokens (%v)", len(ids), err)
	}
	idle := settledMemory(t)
	c, cancel := context.WithCancel(ctx)
	defer cancel()
	ended := make(chan struct{})
	seen := cancelWhenPrefilling(idle, cancel, ended)
	start := time.Now()
	got, _ := collect(m.Generate(c, prompt, inference.WithMaxTokens(8)))
	took := time.Since(start)
	close(ended)
	if !<-seen {
		t.Fatalf("the prefill was not seen under way: %d tokens, Err() = %v", len(got), m.Err())
	}
	if !errors.Is(m.Err(), context.Canceled) {
		t.Fatalf("Err() = %v, want context.Canceled", m.Err())
	}
	// A cancel after the prefill would have come with the first token.
	if len(got) != 0 || m.Metrics().GeneratedTokens != 0 {
		t.Fatalf("%d tokens after a cancel during the prefill", len(got))
	}
	// The cancel is seen after the current 2048-token chunk.
	t.Logf("cancelled a %d-token prefill; the loop ended after %v", len(ids), took)
	// The model is still usable, and no cancel is left over for the next call.
	ref := readRef(t, "qwen3")
	if next, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(5))); !slices.Equal(next, ref.greedy()[:5]) || m.Err() != nil {
		t.Fatalf("after the cancel: %v, %v", next, m.Err())
	}
}

// cancelWhenPrefilling calls cancel once a generation's prefill is under way, and then sends
// true; false if ended closes first. liblmx calls nothing of the caller's during a prefill,
// so it watches MLX's active memory (every millisecond; the interval decides nothing): before
// the prefill's first chunk nothing allocates any (the sampling is greedy, the default, and a
// model's slot sessions start with empty caches), and the chunk's arrays do. The cancel then
// lands at the prefill's next check between chunks.
func cancelWhenPrefilling(idle uint64, cancel func(), ended <-chan struct{}) <-chan bool {
	seen := make(chan bool, 1)
	go func() {
		for {
			select {
			case <-ended:
				seen <- false
				return
			default:
			}
			a, err := ActiveMemory()
			if err != nil {
				seen <- false
				return
			}
			if a > idle {
				cancel()
				seen <- true
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return seen
}

// watchedCtx is a context that tells when a call starts waiting for its end: its first Done
// call closes watched. Made with end, it also ends then (context.Canceled).
type watchedCtx struct {
	context.Context
	cancel  context.CancelFunc
	end     bool
	once    sync.Once
	watched chan struct{}
}

func watchCtx(parent context.Context, end bool) *watchedCtx {
	c, cancel := context.WithCancel(parent)
	return &watchedCtx{Context: c, cancel: cancel, end: end, watched: make(chan struct{})}
}

func (w *watchedCtx) Done() <-chan struct{} {
	w.once.Do(func() {
		if w.end {
			w.cancel()
		}
		close(w.watched)
	})
	return w.Context.Done()
}

func TestCancelDuringDecode(t *testing.T) {
	for _, name := range []string{"qwen3", "gemma3"} {
		t.Run(name, func(t *testing.T) {
			m := load(t, name, inference.WithContextLen(4096))
			c, cancel := context.WithCancel(ctx)
			defer cancel()
			n := 0
			for tok := range m.Generate(c, "Once upon a time", inference.WithMaxTokens(4000), WithIgnoreEOS()) {
				if tok.ID >= 0 {
					n++
				}
				if n == 5 {
					cancel()
				}
			}
			if !errors.Is(m.Err(), context.Canceled) {
				t.Fatalf("Err() = %v, want context.Canceled", m.Err())
			}
			if n != 5 {
				t.Fatalf("%d tokens after cancelling at the fifth", n)
			}
			// The cancel from another goroutine, while a step may be under way.
			c, cancel = context.WithCancel(ctx)
			defer cancel()
			n = 0
			for tok := range m.Generate(c, "Once upon a time", inference.WithMaxTokens(4000), WithIgnoreEOS()) {
				if tok.ID >= 0 {
					n++
				}
				if n == 5 {
					go cancel()
				}
			}
			if !errors.Is(m.Err(), context.Canceled) || n < 5 || n > 100 {
				t.Fatalf("cancelled from another goroutine: %d tokens, Err() = %v", n, m.Err())
			}
			ref := readRef(t, name)
			if next, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(5))); !slices.Equal(next, ref.greedy()[:5]) || m.Err() != nil {
				t.Fatalf("after the cancel: %v, %v", next, m.Err())
			}
		})
	}
}

func TestContextEndsBeforeOrWhileWaiting(t *testing.T) {
	m := load(t, "qwen3")
	done, cancel := context.WithCancel(ctx)
	cancel()
	if ids, _ := collect(m.Generate(done, "Hello")); len(ids) != 0 || !errors.Is(m.Err(), context.Canceled) {
		t.Fatalf("a cancelled context gave %v, %v", ids, m.Err())
	}
	// With one slot, a second call waits for the first one's slot and gives up at its deadline.
	for range m.Generate(ctx, "Hello", inference.WithMaxTokens(50), WithIgnoreEOS()) {
		short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
		ids, _ := collect(m.Chat(short, []inference.Message{{Role: "user", Content: "Hi"}}))
		cancelShort()
		if len(ids) != 0 || !errors.Is(m.Err(), context.DeadlineExceeded) {
			t.Fatalf("waiting for a slot gave %v, %v", ids, m.Err())
		}
		break
	}
	if m.Err() != nil {
		t.Fatalf("breaking out of the loop: Err() = %v", m.Err())
	}
}

func TestEarlyBreak(t *testing.T) {
	ref := readRef(t, "gemma3")
	m := load(t, "gemma3")
	n := 0
	for range m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(32)) {
		if n++; n == 2 {
			break
		}
	}
	// liblmx measures a generation stopped early itself: the two tokens and the time.
	if mt := m.Metrics(); m.Err() != nil || mt.GeneratedTokens != 2 || mt.TotalDuration <= 0 || mt.PromptTokens == 0 {
		t.Fatalf("after a break: Err() = %v, metrics %+v", m.Err(), m.Metrics())
	}
	ids, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(32)))
	if !slices.Equal(ids, ref.greedy()) || m.Err() != nil {
		t.Fatalf("after a break: %v, %v", ids, m.Err())
	}
	// A panic in the loop body also frees the stream.
	func() {
		defer func() { _ = recover() }()
		for range m.Generate(ctx, ref.PromptText) {
			panic("boom")
		}
	}()
	if ids, _ := collect(m.Generate(ctx, ref.PromptText, inference.WithMaxTokens(32))); !slices.Equal(ids, ref.greedy()) {
		t.Fatalf("after a panic: %v, %v", ids, m.Err())
	}
}

// Several goroutines generate at once on two slots and get what sequential calls get.
func TestParallelSlots(t *testing.T) {
	m := load(t, "qwen3", inference.WithParallelSlots(2))
	prompts := []string{"The keeper counted 37 grey ships", "Once upon a time", "Hello", "The lighthouse"}
	opts := []inference.GenerateOption{inference.WithMaxTokens(16), WithIgnoreEOS()}
	want := make([][]int32, len(prompts))
	for i, p := range prompts {
		want[i], _ = collect(m.Generate(ctx, p, opts...))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			i := g % len(prompts)
			var got []int32
			var seq func(func(inference.Token) bool)
			if g%2 == 0 {
				seq = m.Generate(ctx, prompts[i], opts...)
			} else {
				seq = m.Chat(ctx, []inference.Message{{Role: "user", Content: prompts[i]}}, opts...)
			}
			got, _ = collect(seq)
			if g%2 == 0 && !slices.Equal(got, want[i]) {
				errs <- errors.New("goroutine " + prompts[i] + ": tokens differ from the sequential run")
			}
			if len(got) != 16 {
				errs <- errors.New("goroutine " + prompts[i] + ": wrong count")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Two slots: two generations run at once, a third waits.
func TestParallelSlotsLimit(t *testing.T) {
	m := load(t, "qwen3", inference.WithParallelSlots(2))
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			first := true
			for range m.Generate(ctx, "Hello", inference.WithMaxTokens(4), WithIgnoreEOS()) {
				if first {
					started <- struct{}{}
					<-release
					first = false
				}
			}
		})
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("two generations did not run at once on two slots")
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	ids, _ := collect(m.Generate(short, "Hello"))
	cancel()
	if len(ids) != 0 || !errors.Is(m.Err(), context.DeadlineExceeded) {
		t.Fatalf("a third generation ran: %v, %v", ids, m.Err())
	}
	close(release)
	wg.Wait()
	if ids, _ := collect(m.Generate(ctx, "Hello", inference.WithMaxTokens(4), WithIgnoreEOS())); len(ids) != 4 {
		t.Fatalf("after the others ended: %v, %v", ids, m.Err())
	}
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	m := load(t, "qwen3")
	info := m.Info()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if ids, _ := collect(m.Generate(ctx, "Hello")); len(ids) != 0 || !errors.Is(m.Err(), ErrClosed) {
		t.Fatalf("Generate after Close: %v, %v", ids, m.Err())
	}
	if ids, _ := collect(m.Chat(ctx, []inference.Message{{Role: "user", Content: "Hi"}})); len(ids) != 0 || !errors.Is(m.Err(), ErrClosed) {
		t.Fatalf("Chat after Close: %v, %v", ids, m.Err())
	}
	if _, err := m.Classify(ctx, []string{"x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Classify after Close: %v", err)
	}
	if _, err := m.BatchGenerate(ctx, []string{"x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("BatchGenerate after Close: %v", err)
	}
	if _, err := m.Tokenize("x", true); !errors.Is(err, ErrClosed) {
		t.Fatalf("Tokenize after Close: %v", err)
	}
	if _, err := m.ChatTemplate([]inference.Message{{Role: "user", Content: "Hi"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("ChatTemplate after Close: %v", err)
	}
	if m.Info() != info || m.ModelType() != "qwen3" {
		t.Fatal("Info changed after Close")
	}
}

// Close from inside a loop, and Close while another call waits for a slot: neither
// deadlocks, both calls end with ErrClosed.
func TestCloseWhileGenerating(t *testing.T) {
	m := load(t, "qwen3")
	waiting := make(chan error, 1)
	n := 0
	for range m.Generate(ctx, "Hello", inference.WithMaxTokens(200), WithIgnoreEOS()) {
		n++
		if n == 1 {
			// The second call waits for the only slot, and for its context's end with it.
			w := watchCtx(ctx, false)
			defer w.cancel()
			go func() {
				_, _ = collect(m.Generate(w, "Hello"))
				waiting <- m.Err()
			}()
			<-w.watched
		}
		if n == 3 {
			m.Close()
		}
	}
	if !errors.Is(m.Err(), ErrClosed) {
		t.Fatalf("Err() = %v, want ErrClosed", m.Err())
	}
	if n != 3 {
		t.Fatalf("%d tokens after Close at the third", n)
	}
	select {
	case err := <-waiting:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("the waiting call ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting call did not end")
	}
}

// A context that ends during BatchGenerate or Classify stops liblmx's call (a cancellation
// token requested from Go) and the call returns the context's error. The contexts end when
// the calls start watching them, after their check of the context up front: while liblmx's
// call runs, however fast the machine.
func TestCancelBatchAndClassify(t *testing.T) {
	m := load(t, "qwen3", inference.WithContextLen(16384))
	prompts := []string{"The keeper counted", "Once upon a time", "Hello", "Ships"}
	c := watchCtx(ctx, true)
	defer c.cancel()
	start := time.Now()
	res, err := m.BatchGenerate(c, prompts, inference.WithMaxTokens(12000))
	if !errors.Is(err, context.Canceled) || res != nil {
		t.Fatalf("BatchGenerate after a cancel: %d results, %v", len(res), err)
	}
	t.Logf("the batch returned %v after the start", time.Since(start))
	// Many prompts of 700 tokens: several passes of liblmx's classify batches.
	long := strings.Repeat("The keeper counted 37 grey ships. ", 70)
	many := make([]string, 400)
	for i := range many {
		many[i] = long
	}
	c2 := watchCtx(ctx, true)
	defer c2.cancel()
	out, err := m.Classify(c2, many)
	if !errors.Is(err, context.Canceled) || out != nil {
		t.Fatalf("Classify after a cancel: %d results, %v", len(out), err)
	}
	// Both still work afterwards.
	if res, err := m.BatchGenerate(ctx, prompts[:2], inference.WithMaxTokens(3)); err != nil || len(res[0].Tokens) == 0 {
		t.Fatalf("BatchGenerate afterwards: %v", err)
	}
	if out, err := m.Classify(ctx, prompts); err != nil || len(out) != len(prompts) {
		t.Fatalf("Classify afterwards: %v", err)
	}
}
