package metal

import (
	"context"
	"iter"
	"runtime"
	"sync"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

var (
	_ inference.StatefulModel = (*Model)(nil)
	_ inference.Session       = (*Session)(nil)
)

// errBusy answers a second Generate or Chat while one runs on the session; it matches
// lmx.ErrBusy, as liblmx's own answer to the same mistake does.
var errBusy = &lmx.Error{Status: lmx.StatusBusy, Message: "the session is generating: one Generate or Chat at a time"}

// Session is one liblmx session: a conversation whose KV cache lives from one call to the
// next (see inference.Session). Make one with Model.NewSession, Model.LoadSession or
// Session.Fork. Its methods are safe for concurrent use, but one Generate or Chat runs at a
// time: another one meanwhile yields nothing and its Err matches lmx.ErrBusy, and Fork, Save
// and CacheInfo called during a generation (its loop body included) fail the same way. The
// session holds the model's weights: it keeps working after Model.Close, until it is closed
// itself. It does not use the model's ParallelSlots. It generates with the model's adapter
// (WithAdapterPath) unless a call's WithAdapter says otherwise; a Generate or Chat with
// another adapter than the previous one's empties the cache first. ErrSessionClosed (which
// matches ErrClosed) answers calls after Close.
type Session struct {
	st         *sessState
	contextLen int
	cleanup    runtime.Cleanup

	mu      sync.Mutex // guards lastErr and metrics
	lastErr error
	metrics inference.GenerateMetrics
}

// sessState owns a Session's native handle. It is separate from Session so that the cleanup
// registered on a Session can reach it without keeping the Session alive.
type sessState struct {
	mu         sync.Mutex
	s          cSession // nil once freed
	refs       int      // calls using s right now; the last one frees it after close
	closed     bool
	generating bool
	// adapter is the default adapter (the model's WithAdapterPath one), kept alive until
	// close; nil without.
	adapter *Adapter
}

// use returns the handle for one call; done must follow. liblmx's session calls are safe
// from any thread; only the free must not race with them, and refs orders it after them.
func (st *sessState) use() (cSession, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, ErrSessionClosed
	}
	st.refs++
	return st.s, nil
}

func (st *sessState) done() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.refs--
	st.freeIfUnused()
}

// beginGenerate is use for a Generate or Chat, of which one runs at a time; endGenerate
// must follow.
func (st *sessState) beginGenerate() (cSession, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, ErrSessionClosed
	}
	if st.generating {
		return nil, errBusy
	}
	st.generating = true
	st.refs++
	return st.s, nil
}

func (st *sessState) endGenerate() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.generating = false
	st.refs--
	st.freeIfUnused()
}

func (st *sessState) freeIfUnused() {
	if st.closed && st.refs == 0 && st.s != nil {
		_ = sessionFree(st.s)
		st.s = nil
	}
}

// cancel stops the running generation, if any (from any goroutine).
func (st *sessState) cancel() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s != nil {
		_ = sessionCancel(st.s)
	}
}

func (st *sessState) isClosed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closed
}

// close frees the session, or, while calls use it, cancels a running generation and leaves
// the free to the last call. It never waits, so a Close from inside a Generate loop cannot
// deadlock.
func (st *sessState) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	st.closed = true
	if st.generating {
		_ = sessionCancel(st.s)
	}
	st.freeIfUnused()
	if st.adapter != nil {
		// A generation still running has applied it already: liblmx keeps it for that.
		st.adapter.done()
	}
}

// newSession wraps a new session handle; adapter is its default adapter (or nil), which it
// keeps alive until closed.
func newSession(s cSession, contextLen int, adapter *Adapter) *Session {
	if adapter != nil {
		adapter.use()
	}
	st := &sessState{s: s, adapter: adapter}
	sess := &Session{st: st, contextLen: contextLen}
	// The safety net for a Session dropped without Close; Close is the real contract.
	sess.cleanup = runtime.AddCleanup(sess, func(st *sessState) { st.close() }, st)
	return sess
}

// NewSession makes an empty session with the options' KV cache settings: WithKVBits 4 or 8
// quantizes the cache of the global-attention layers (sliding-window layers keep the model's
// dtype), WithKVGroupSize 32, 64 (default) or 128 must divide the model's head dimension, and
// WithKVQuantStart delays the quantization. Settings liblmx refuses give an error matching
// lmx.ErrInvalidArgument whose message names the setting. The value is a *Session.
func (m *Model) NewSession(opts ...inference.SessionOption) (inference.Session, error) {
	defer runtime.KeepAlive(m)
	h, err := m.st.useModel()
	if err != nil {
		return nil, err
	}
	defer m.st.doneModel()
	s, err := sessionCreateWith(h, inference.ApplySessionOpts(opts))
	if err != nil {
		return nil, err
	}
	return newSession(s, m.desc.ContextLength, m.adapter), nil
}

// LoadSession restores a session from a file written by Session.Save (or by mlx-lm's
// save_prompt_cache, whose file holds no token ids: the next prompt is then taken to follow
// the cached positions). The options apply as for NewSession, except that a file whose cache
// is quantized keeps its bits and group size. Errors match lmx.ErrNotFound or lmx.ErrIO for
// the file, lmx.ErrFormat for a corrupt or truncated one, lmx.ErrInvalidArgument for a file
// of another model (architecture, weights or tokenizer), dtype or shape, and
// lmx.ErrUnsupported for a newer format; the message says which. The value is a *Session.
func (m *Model) LoadSession(path string, opts ...inference.SessionOption) (inference.Session, error) {
	defer runtime.KeepAlive(m)
	h, err := m.st.useModel()
	if err != nil {
		return nil, err
	}
	defer m.st.doneModel()
	s, err := sessionLoad(h, path, inference.ApplySessionOpts(opts))
	if err != nil {
		return nil, err
	}
	return newSession(s, m.desc.ContextLength, m.adapter), nil
}

// Generate streams the continuation of prompt, the whole text so far: the tokens the cache
// holds that begin the prompt are not computed again (with inference.WithDisablePromptReuse
// the cache is emptied first and the whole prompt computed). Otherwise it behaves as
// Model.Generate.
func (s *Session) Generate(ctx context.Context, prompt string, opts ...inference.GenerateOption) iter.Seq[inference.Token] {
	cfg, x := applyOptions(opts)
	return s.stream(ctx, cfg, x, textStarter(prompt))
}

// Chat streams the answer to messages, the full conversation each time, rendered by the
// model's chat template (after WithSystemPrompt's message when given): the cache reuses what
// the rendered text has in common with what it holds. Otherwise it behaves as Model.Chat.
func (s *Session) Chat(ctx context.Context, messages []inference.Message, opts ...inference.GenerateOption) iter.Seq[inference.Token] {
	cfg, x := applyOptions(opts)
	return s.stream(ctx, cfg, x, chatStarter(messages, x))
}

func (s *Session) stream(ctx context.Context, cfg inference.GenerateConfig, x extras, start starter) iter.Seq[inference.Token] {
	return func(yield func(inference.Token) bool) {
		metrics, ran, err := s.generate(ctx, cfg, x, start, yield)
		s.mu.Lock()
		s.lastErr = err
		if ran {
			s.metrics = metrics
		}
		s.mu.Unlock()
		if ran && cfg.MetricsSink != nil {
			cfg.MetricsSink(metrics)
		}
	}
}

func (s *Session) generate(ctx context.Context, cfg inference.GenerateConfig, x extras,
	start starter, yield func(inference.Token) bool) (metrics inference.GenerateMetrics, ran bool, err error) {
	defer runtime.KeepAlive(s)
	if err := ctx.Err(); err != nil {
		return metrics, false, err
	}
	cp, err := genCParams(cfg, x, s.contextLen)
	if err != nil {
		return metrics, false, err
	}
	defer cp.free()
	h, err := s.st.beginGenerate()
	if err != nil {
		return metrics, false, err
	}
	defer s.st.endGenerate()
	on := runOn{s: h, cancel: s.st.cancel, closed: s.st.isClosed, errClosed: ErrSessionClosed, adapter: s.st.adapter}
	return run(ctx, on, cp, cfg, x, start, yield)
}

// Err is the error of the session's last Generate or Chat: nil after a normal end (as for
// Model.Err), ctx.Err() after its context ended, ErrSessionClosed after Close, an error
// matching lmx.ErrBusy when another generation was running, an *lmx.Error otherwise.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// Metrics are those of the session's last Generate or Chat. PromptTokens counts the whole
// prompt; PrefillTokens says how many of them were computed.
func (s *Session) Metrics() inference.GenerateMetrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.metrics
}

// PrefillTokens is how many prompt tokens the session's last generation computed: the
// prompt's tokens less those its cache already held.
func (s *Session) PrefillTokens() (int, error) {
	defer runtime.KeepAlive(s)
	h, err := s.st.use()
	if err != nil {
		return 0, err
	}
	defer s.st.done()
	_, n, err := sessionLastResult(h)
	return n, err
}

// Fork makes a new *Session holding this one's cache, settings and adapter. The two share
// the cache's memory until one of them writes over a shared part, so many forks of a long
// prompt cost one prefill. It fails (lmx.ErrBusy) while the session generates.
func (s *Session) Fork() (inference.Session, error) {
	defer runtime.KeepAlive(s)
	h, err := s.st.use()
	if err != nil {
		return nil, err
	}
	defer s.st.done()
	f, err := sessionFork(h)
	if err != nil {
		return nil, err
	}
	return newSession(f, s.contextLen, s.st.adapter), nil
}

// Save writes the cache and its token ids to the file path (replaced only once the new file
// is complete): safetensors in mlx-lm's prompt-cache layout (mlx_lm.load_prompt_cache reads
// it) with liblmx's metadata, which ties it to this model. It fails for an empty session
// (lmx.ErrInvalidArgument), a session with an adapter (lmx.ErrUnsupported), while the
// session generates (lmx.ErrBusy), and when writing fails (lmx.ErrIO).
func (s *Session) Save(path string) error {
	defer runtime.KeepAlive(s)
	h, err := s.st.use()
	if err != nil {
		return err
	}
	defer s.st.done()
	return sessionSave(h, path)
}

// CacheInfo says what the cache holds; it fails (lmx.ErrBusy) while the session generates.
func (s *Session) CacheInfo() (inference.CacheInfo, error) {
	defer runtime.KeepAlive(s)
	h, err := s.st.use()
	if err != nil {
		return inference.CacheInfo{}, err
	}
	defer s.st.done()
	return sessionCacheInfo(h)
}

// Close frees the session. A generation running meanwhile is cancelled (its Err() is
// ErrSessionClosed) and the session is freed when it ends. Close is idempotent; afterwards
// Generate and Chat yield nothing and set Err, and the other calls fail, with
// ErrSessionClosed; Err and Metrics still answer.
func (s *Session) Close() error {
	s.st.close()
	s.cleanup.Stop()
	return nil
}
