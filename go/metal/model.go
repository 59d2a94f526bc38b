package metal

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"sync"
	"time"

	"liblmx/go/inference"
	"liblmx/go/lmx"
)

// Closed-object errors. ErrClosed is returned by every call on a closed Model (and is Err()
// after a Generate or Chat that Close interrupted); ErrSessionClosed by calls on a closed
// Session and ErrAdapterClosed by a generation given a closed Adapter. errors.Is(err,
// ErrClosed) matches all three; the other two match only themselves.
var (
	ErrClosed        error = &closedError{"model"}
	ErrSessionClosed error = &closedError{"session"}
	ErrAdapterClosed error = &closedError{"adapter"}
)

// closedError is the error of a call on a closed object; every one matches ErrClosed.
type closedError struct{ what string }

func (e *closedError) Error() string        { return "metal: " + e.what + " is closed" }
func (e *closedError) Is(target error) bool { return target == ErrClosed }

// Description is everything liblmx reports about a loaded model.
type Description struct {
	// Architecture is the family that runs the model: "llama", "mistral", "qwen2", "qwen3",
	// "gemma3", "qwen2_moe", "qwen3_moe" or "mixtral".
	Architecture string
	// ModelType is config.json's model_type (for a GGUF file, the one its config.json would
	// have: "llama", "qwen2", "qwen3", "gemma3_text"); Model.ModelType returns it.
	ModelType     string
	ParamCount    uint64
	NumLayers     int
	HiddenSize    int
	NumHeads      int
	NumKVHeads    int
	HeadDim       int
	VocabSize     int
	ContextLength int
	// QuantBits and QuantGroup are 0 for a dense model.
	QuantBits  int
	QuantGroup int
	// DType of the weights: "float32", "bfloat16" or "float16".
	DType string
	// ChatTemplate says where the template came from: "tokenizer_config.json",
	// "chat_template.jinja", "gguf:tokenizer.chat_template" or "builtin:<name>".
	ChatTemplate  string
	WeightBytes   uint64
	LoadDuration  time.Duration
	LoadPeakBytes uint64
	// Backend is the MLX backend that computes: cpu, metal or cuda.
	Backend lmx.Backend
	// Format is what was loaded: "safetensors" (a model folder) or "gguf" (a GGUF file).
	Format string
	// Tokenizer is "tokenizer.json", or the GGUF vocabulary the tokenizer was built from.
	Tokenizer string
	// Conversions says, for a GGUF file, what each tensor type became ("Q4_K x27 -> affine
	// 4-bit, group 32 (exact); ..."); empty for a folder.
	Conversions string
	// NumExperts and ExpertsPerToken are 0 for a dense model. ActiveParamCount is ParamCount
	// less the routed experts one token does not use (ParamCount for a dense model).
	NumExperts       int
	ExpertsPerToken  int
	ActiveParamCount uint64
}

// Model is a model loaded by liblmx. It implements inference.TextModel; its methods are safe
// for concurrent use.
type Model struct {
	st      *state
	desc    Description
	path    string
	cleanup runtime.Cleanup
	// adapter is WithAdapterPath's (nil without): Generate, Chat and the model's sessions use
	// it unless a call's WithAdapter says otherwise. adapterPath is where it came from.
	adapter     *Adapter
	adapterPath string

	mu      sync.Mutex // guards lastErr and metrics
	lastErr error
	metrics inference.GenerateMetrics
}

var _ inference.TextModel = (*Model)(nil)

// slot is one liblmx session; a generation holds it from start to end.
type slot struct {
	mu sync.Mutex // orders a cancel (from any goroutine) before the session is freed
	s  cSession   // nil once freed
}

func (sl *slot) cancel() {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.s != nil {
		_ = sessionCancel(sl.s)
	}
}

func (sl *slot) free() {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.s != nil {
		_ = sessionFree(sl.s)
		sl.s = nil
	}
}

// state owns the native handles. It is separate from Model so that the cleanup registered on
// a Model can reach it without keeping the Model alive.
type state struct {
	mu     sync.Mutex
	model  cModel // nil once freed
	refs   int    // calls using model right now; the last one frees it after close
	closed bool
	done   chan struct{} // closed by close: wakes calls waiting for a slot
	idle   chan *slot    // free slots; capacity = number of slots
	busy   map[*slot]struct{}
}

// useModel returns the model handle for one call; doneModel must follow.
func (st *state) useModel() (cModel, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return nil, ErrClosed
	}
	st.refs++
	return st.model, nil
}

func (st *state) doneModel() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.refs--
	st.freeModelIfUnused()
}

func (st *state) freeModelIfUnused() {
	if st.closed && st.refs == 0 && st.model != nil {
		_ = modelFree(st.model)
		st.model = nil
	}
}

// acquire waits for a free slot, the context's end, or Close.
func (st *state) acquire(ctx context.Context) (*slot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case sl := <-st.idle:
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.closed {
			sl.free()
			return nil, ErrClosed
		}
		st.busy[sl] = struct{}{}
		return sl, nil
	case <-st.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// release gives a slot back, or frees its session when the model has been closed.
func (st *state) release(sl *slot) {
	st.mu.Lock()
	delete(st.busy, sl)
	if !st.closed {
		st.idle <- sl // never blocks: the channel has room for every slot
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	sl.free()
}

func (st *state) isClosed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closed
}

// close frees what no call is using and cancels running generations; the calls still using
// a session or the model free them when they end. It never waits, so a Close from inside a
// Generate loop cannot deadlock.
func (st *state) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	st.closed = true
	close(st.done)
	for {
		select {
		case sl := <-st.idle:
			sl.free()
			continue
		default:
		}
		break
	}
	for sl := range st.busy {
		sl.cancel()
	}
	st.freeModelIfUnused()
}

// Load loads the model in folder path (or the GGUF file path). Of the load options,
// ContextLen sets the context length (0 = the model's max_position_embeddings), GPULayers 0
// computes on the CPU (any other value on MLX's default device: MLX does not split a model
// between devices), ParallelSlots sets how many Generate/Chat calls run at once (default 1),
// AdapterPath loads a LoRA adapter folder (mlx-lm's format) that Generate, Chat and the
// model's sessions use at its trained scale (unfused: Classify and BatchGenerate then fail
// with an error matching lmx.ErrUnsupported, as they run on the base weights), and CacheMode
// must be "" or "native" (the only KV cache mode of the model's slots; sessions quantize
// theirs with inference.WithKVBits). WithBackend must be empty or "metal". Errors are
// *lmx.Error values (a bad option matches lmx.ErrInvalidArgument or lmx.ErrUnsupported).
func Load(path string, opts ...inference.LoadOption) (*Model, error) {
	cfg := inference.ApplyLoadOpts(opts)
	if cfg.Backend != "" && cfg.Backend != Name {
		return nil, invalid(fmt.Sprintf("metal: asked to load with backend %q", cfg.Backend))
	}
	if cfg.ContextLen < 0 || cfg.ContextLen > 1<<31-1 {
		return nil, invalid(fmt.Sprintf("context length %d is out of range", cfg.ContextLen))
	}
	if cfg.ParallelSlots < 0 {
		return nil, invalid(fmt.Sprintf("parallel slots %d must be >= 0", cfg.ParallelSlots))
	}
	if cfg.CacheMode != "" && cfg.CacheMode != CacheModeNative {
		return nil, unsupported(fmt.Sprintf("cache mode %q is not supported (supported: %q)", cfg.CacheMode, CacheModeNative))
	}
	slots := max(cfg.ParallelSlots, 1)
	handle, err := modelLoad(path, uint32(cfg.ContextLen), cfg.GPULayers == 0)
	if err != nil {
		return nil, err
	}
	st := &state{model: handle, done: make(chan struct{}), idle: make(chan *slot, slots), busy: map[*slot]struct{}{}}
	var adapter *Adapter
	desc, err := modelInfo(handle)
	if err == nil && cfg.AdapterPath != "" {
		var c cAdapter
		var scale float32
		if c, scale, err = adapterLoad(handle, cfg.AdapterPath); err == nil {
			adapter = &Adapter{a: c, scale: scale}
		}
	}
	for i := 0; err == nil && i < slots; i++ {
		var s cSession
		if s, err = sessionCreate(handle); err == nil {
			st.idle <- &slot{s: s}
		}
	}
	if err != nil {
		if adapter != nil {
			_ = adapter.Close()
		}
		st.close()
		return nil, err
	}
	m := &Model{st: st, desc: desc, path: path, adapter: adapter, adapterPath: cfg.AdapterPath}
	// The safety net for a Model dropped without Close; Close is the real contract.
	m.cleanup = runtime.AddCleanup(m, func(o owned) { o.close() }, owned{st, adapter})
	return m, nil
}

// CacheModeNative is the one LoadConfig.CacheMode this backend has ("" means it too): the
// slots' KV cache in the model's dtype.
const CacheModeNative = "native"

// Close frees the model and its ParallelSlots sessions. A generation running meanwhile is
// cancelled (its Err() is ErrClosed) and frees its session when it ends. Sessions made by
// NewSession, LoadSession or Fork are not affected: they hold the weights until they are
// closed themselves. Close is idempotent. Afterwards
// every call that needs the model fails with ErrClosed (Generate and Chat yield nothing and
// set Err); Info, ModelType, Description, Backend, Metrics and Err still answer.
func (m *Model) Close() error {
	m.cleanup.Stop()
	owned{m.st, m.adapter}.close()
	return nil
}

// owned is what a Model frees: its handles and its WithAdapterPath adapter (which running
// generations and the model's sessions keep until they end). It is separate from Model so
// that the cleanup registered on a Model can reach it without keeping the Model alive.
type owned struct {
	st      *state
	adapter *Adapter
}

func (o owned) close() {
	o.st.close()
	if o.adapter != nil {
		_ = o.adapter.Close()
	}
}

// ModelType is config.json's model_type, as Description().ModelType and Discover say it
// ("llama", "qwen3", "gemma3_text", ...); Info().Architecture is the family that runs it.
func (m *Model) ModelType() string { return m.desc.ModelType }

// Backend is the MLX backend computing: cpu and (on Linux with CUDA) cuda run under the
// contract's "metal" name just as metal does on Apple silicon.
func (m *Model) Backend() lmx.Backend { return m.desc.Backend }

// Description is liblmx's full description of the model.
func (m *Model) Description() Description { return m.desc }

// Info is the contract's summary of Description.
func (m *Model) Info() inference.ModelInfo {
	d := m.desc
	return inference.ModelInfo{
		Architecture: d.Architecture,
		VocabSize:    d.VocabSize,
		NumLayers:    d.NumLayers,
		HiddenSize:   d.HiddenSize,
		QuantBits:    d.QuantBits,
		QuantGroup:   d.QuantGroup,
	}
}

// Err is the error of the last Generate or Chat that finished: nil after an end-of-sequence
// token, a stop token or string, MaxTokens, or a loop the caller broke out of; ctx.Err()
// after its context ended; ErrClosed after Close; an *lmx.Error otherwise.
func (m *Model) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// Metrics are those of the last call that finished (Generate, Chat, Classify or
// BatchGenerate).
func (m *Model) Metrics() inference.GenerateMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metrics
}

func (m *Model) setMetrics(mt inference.GenerateMetrics) {
	m.mu.Lock()
	m.metrics = mt
	m.mu.Unlock()
}

// Generate streams the continuation of prompt (tokenized with the model's special tokens,
// BOS where the model uses one). See Chat for how the sequence behaves.
func (m *Model) Generate(ctx context.Context, prompt string, opts ...inference.GenerateOption) iter.Seq[inference.Token] {
	cfg, x := applyOptions(opts)
	return m.stream(ctx, cfg, x, textStarter(prompt))
}

// Chat streams the model's answer to messages, rendered by its chat template with the
// generation prompt added. Generation runs while the sequence is ranged over, on one of the
// model's ParallelSlots sessions (waiting for one if all are busy). Ending ctx cancels it,
// even during a long prefill; breaking out of the loop stops it. A token with ID -1 carries
// text released at the end that belongs to no token of its own. ReturnLogits has no effect
// here (liblmx streams no per-token logits); it applies to Classify.
func (m *Model) Chat(ctx context.Context, messages []inference.Message, opts ...inference.GenerateOption) iter.Seq[inference.Token] {
	cfg, x := applyOptions(opts)
	return m.stream(ctx, cfg, x, chatStarter(messages, x))
}

func (m *Model) stream(ctx context.Context, cfg inference.GenerateConfig, x extras, start starter) iter.Seq[inference.Token] {
	return func(yield func(inference.Token) bool) {
		metrics, ran, err := m.generate(ctx, cfg, x, start, yield)
		m.mu.Lock()
		m.lastErr = err
		if ran {
			m.metrics = metrics
		}
		m.mu.Unlock()
		if ran && cfg.MetricsSink != nil {
			cfg.MetricsSink(metrics)
		}
	}
}

// generate runs one generation on a slot; ran tells whether liblmx started one (and so
// whether metrics are its).
func (m *Model) generate(ctx context.Context, cfg inference.GenerateConfig, x extras,
	start starter, yield func(inference.Token) bool) (metrics inference.GenerateMetrics, ran bool, err error) {
	defer runtime.KeepAlive(m)
	cp, err := genCParams(cfg, x, m.desc.ContextLength)
	if err != nil {
		return metrics, false, err
	}
	defer cp.free()
	sl, err := m.st.acquire(ctx)
	if err != nil {
		return metrics, false, err
	}
	defer m.st.release(sl)
	on := runOn{s: sl.s, cancel: sl.cancel, closed: m.st.isClosed, errClosed: ErrClosed, adapter: m.adapter}
	return run(ctx, on, cp, cfg, x, start, yield)
}

// starter begins one call's stream on a session: its prompt or its messages.
type starter func(cSession, *cParams) (cStream, error)

func textStarter(prompt string) starter {
	return func(s cSession, p *cParams) (cStream, error) { return streamText(s, prompt, p) }
}

// chatStarter renders messages, after the system prompt of WithSystemPrompt when given.
func chatStarter(messages []inference.Message, x extras) starter {
	if x.hasSystem {
		messages = append([]inference.Message{{Role: "system", Content: x.systemPrompt}}, messages...)
	} else {
		messages = append([]inference.Message(nil), messages...)
	}
	return func(s cSession, p *cParams) (cStream, error) { return streamChat(s, messages, p) }
}

// genCParams are one call's generation parameters in C memory (free them).
func genCParams(cfg inference.GenerateConfig, x extras, contextLen int) (*cParams, error) {
	g, err := params(cfg, x, contextLen)
	if err != nil {
		return nil, err
	}
	return newCParams(g)
}

// runOn is the session one generation runs on, held by its owner (a Model's slot or a
// Session) for the length of the generation.
type runOn struct {
	s         cSession
	cancel    func()      // stops the generation; callable from any goroutine
	closed    func() bool // whether the owner has been closed meanwhile
	errClosed error       // the generation's error then
	adapter   *Adapter    // the default adapter (WithAdapterPath's), or nil
}

// run is one Generate or Chat on a session, from the adapter and the stream's start to the
// last token; ran tells whether liblmx started a generation (and so whether metrics are its).
// With DisablePromptReuse the session's cache is emptied first, so the whole prompt is
// computed.
func run(ctx context.Context, on runOn, cp *cParams, cfg inference.GenerateConfig, x extras, start starter,
	yield func(inference.Token) bool) (metrics inference.GenerateMetrics, ran bool, err error) {
	if err := applyAdapter(on.s, x, on.adapter); err != nil {
		return metrics, false, err
	}
	if cfg.DisablePromptReuse {
		if err := sessionReset(on.s); err != nil {
			return metrics, false, err
		}
	}
	stream, err := start(on.s, cp)
	if err != nil {
		return metrics, false, err
	}
	// The stream now exists, so a cancel reaches this generation (one that lands after its
	// end does nothing). The cancel must not outlive the stream: stop it, or wait for a
	// cancel already under way, before freeing.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		on.cancel()
	})
	defer func() {
		if !stop() {
			<-fired
		}
		_ = streamFree(stream)
		// Complete also for a stream freed before its end: liblmx ends the generation (as
		// cancelled) and measures it then.
		metrics, _, _ = sessionLastResult(on.s)
		if x.replySink != nil {
			data, rerr := sessionLastMessage(on.s)
			var r Reply
			if rerr == nil {
				r, rerr = reply(data)
			}
			if rerr != nil {
				if err == nil {
					err = rerr
				}
				return
			}
			x.replySink(r)
		}
	}()
	for {
		// The AfterFunc above interrupts a step under way; these checks make the end exact
		// when the context ends (or Close comes) between two steps, for example in the loop
		// body: no token is delivered after it.
		if err := ctx.Err(); err != nil {
			return metrics, true, err
		}
		if on.closed() {
			return metrics, true, on.errClosed
		}
		tok, text, done, err := streamNext(stream)
		if err != nil {
			if errors.Is(err, lmx.ErrCancelled) {
				if cerr := ctx.Err(); cerr != nil {
					return metrics, true, cerr
				}
				if on.closed() {
					return metrics, true, on.errClosed
				}
			}
			return metrics, true, err
		}
		if done {
			return metrics, true, nil
		}
		if !yield(inference.Token{ID: tok, Text: text}) {
			return metrics, true, nil
		}
	}
}

// batchCall is what Classify and BatchGenerate hold for the length of one call.
type batchCall struct {
	m   *Model
	h   cModel
	cfg inference.GenerateConfig
	cp  *cParams
}

// beginBatch checks ctx, applies the options and takes the model handle. A nil call with a
// nil error means there is nothing to do (no prompts).
func (m *Model) beginBatch(ctx context.Context, prompts []string, opts []inference.GenerateOption) (*batchCall, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg, x := applyOptions(opts)
	if m.adapter != nil {
		return nil, unsupported("this model was loaded with an adapter (WithAdapterPath), which Classify and BatchGenerate cannot apply: they run on the base weights")
	}
	h, err := m.st.useModel()
	if err != nil {
		return nil, err
	}
	if len(prompts) == 0 {
		m.st.doneModel()
		return nil, nil
	}
	g, err := params(cfg, x, m.desc.ContextLength)
	if err == nil {
		var cp *cParams
		if cp, err = newCParams(g); err == nil {
			return &batchCall{m: m, h: h, cfg: cfg, cp: cp}, nil
		}
	}
	m.st.doneModel()
	return nil, err
}

func (c *batchCall) end() {
	c.cp.free()
	c.m.st.doneModel()
}

// Classify computes, for each prompt, one forward pass and the next token, chosen as the
// options say (greedy by default). With inference.WithLogits each result carries the
// VocabSize logits of the prompt's last position. When ctx ends during the call, liblmx stops
// before its next batch of prompts and Classify returns ctx's error.
func (m *Model) Classify(ctx context.Context, prompts []string, opts ...inference.GenerateOption) ([]inference.ClassifyResult, error) {
	defer runtime.KeepAlive(m)
	call, err := m.beginBatch(ctx, prompts, opts)
	if call == nil {
		return nil, err
	}
	defer call.end()
	h, cfg, cp := call.h, call.cfg, call.cp
	stop, err := watchCancel(ctx, cp)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	tokens, logits, err := classify(h, prompts, cp, m.desc.VocabSize, cfg.ReturnLogits)
	stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	took := time.Since(started)
	out := make([]inference.ClassifyResult, len(prompts))
	promptTokens := 0
	for i, id := range tokens {
		// The text shows special tokens too: a label may be one.
		text, err := detokenize(h, []int32{id}, false)
		if err != nil {
			return nil, err
		}
		out[i].Token = inference.Token{ID: id, Text: text}
		if logits != nil {
			v := m.desc.VocabSize
			out[i].Logits = logits[i*v : (i+1)*v : (i+1)*v]
		}
		if ids, err := tokenize(h, prompts[i], true); err == nil {
			promptTokens += len(ids)
		}
	}
	mt := inference.GenerateMetrics{PromptTokens: promptTokens, PrefillDuration: took, TotalDuration: took}
	if took > 0 {
		mt.PrefillTokensPerSec = float64(promptTokens) / took.Seconds()
	}
	mt.PeakMemoryBytes, _ = lmx.PeakMemory()
	mt.ActiveMemoryBytes, _ = lmx.ActiveMemory()
	m.setMetrics(mt)
	if cfg.MetricsSink != nil {
		cfg.MetricsSink(mt)
	}
	return out, nil
}

// BatchGenerate generates after every prompt at once, one forward pass per step for the
// whole batch (greedy results equal one-by-one generation). A prompt that cannot run (empty,
// or longer than the context) gets its own error in its result; the call fails only when
// none can run for a reason common to all (bad options, an MLX error). It does not use the
// ParallelSlots sessions. When ctx ends during the call, liblmx stops after the current step
// and BatchGenerate returns ctx's error.
func (m *Model) BatchGenerate(ctx context.Context, prompts []string, opts ...inference.GenerateOption) ([]inference.BatchResult, error) {
	defer runtime.KeepAlive(m)
	call, err := m.beginBatch(ctx, prompts, opts)
	if call == nil {
		return nil, err
	}
	defer call.end()
	h, cp := call.h, call.cp
	stop, err := watchCancel(ctx, cp)
	if err != nil {
		return nil, err
	}
	items, mt, err := batchGenerate(h, prompts, cp)
	stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	out := make([]inference.BatchResult, len(items))
	for i, it := range items {
		if it.err != nil {
			out[i].Err = it.err
			continue
		}
		out[i].Tokens = make([]inference.Token, len(it.tokens))
		for j, id := range it.tokens {
			out[i].Tokens[j] = inference.Token{ID: id, Text: it.pieces[j]}
		}
	}
	m.setMetrics(mt)
	if call.cfg.MetricsSink != nil {
		call.cfg.MetricsSink(mt)
	}
	return out, nil
}

// Tokenize returns the token ids of text; addSpecial adds the model's special tokens (BOS
// where it uses one), as Generate does.
func (m *Model) Tokenize(text string, addSpecial bool) ([]int32, error) {
	defer runtime.KeepAlive(m)
	h, err := m.st.useModel()
	if err != nil {
		return nil, err
	}
	defer m.st.doneModel()
	return tokenize(h, text, addSpecial)
}

// ApplyChatTemplate is ChatTemplate (inference.TokenizerModel's name for it).
func (m *Model) ApplyChatTemplate(messages []inference.Message) (string, error) {
	return m.ChatTemplate(messages)
}

// ChatTemplate renders messages with the model's chat template and the generation prompt:
// the text Chat tokenizes.
func (m *Model) ChatTemplate(messages []inference.Message) (string, error) {
	defer runtime.KeepAlive(m)
	h, err := m.st.useModel()
	if err != nil {
		return "", err
	}
	defer m.st.doneModel()
	return chatTemplate(h, messages)
}
