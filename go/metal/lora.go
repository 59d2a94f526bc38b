package metal

import (
	"context"
	"fmt"
	"sync"

	"liblmx/go/inference"
)

var _ inference.TrainableModel = (*Model)(nil)

// errNotTrained answers a LoRA used before its first Train; it matches
// lmx.ErrInvalidArgument.
var errNotTrained = invalid("the LoRA adapter has not been trained: call Train first")

// Adapter is LoRA weights usable for generation: loaded from a folder (LoadAdapter) or taken
// from a training run (LoRA.Adapter). Pass it to WithAdapter. Safe for concurrent use.
type Adapter struct {
	mu    sync.Mutex
	a     cAdapter // nil once freed
	scale float32
	// closed is the owner's Close; users are the sessions that generate with it by default
	// (a model's WithAdapterPath adapter): the handle is freed when both are done.
	closed bool
	users  int
}

// Scale is the scale the adapter was trained with.
func (a *Adapter) Scale() float32 { return a.scale }

// Close frees the adapter; generations already using it keep it until they end. Afterwards
// WithAdapter(a, ...) fails with ErrAdapterClosed. Close is idempotent.
func (a *Adapter) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	return a.freeIfUnused()
}

// use keeps the adapter alive for a default user (a session) until done.
func (a *Adapter) use() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users++
}

func (a *Adapter) done() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users--
	_ = a.freeIfUnused()
}

func (a *Adapter) freeIfUnused() error {
	if !a.closed || a.users > 0 || a.a == nil {
		return nil
	}
	err := adapterFree(a.a)
	a.a = nil
	return err
}

// LoadAdapter loads a LoRA adapter folder (mlx-lm's format, as mlx_lm.lora or LoRA.Save
// write it) for this model.
func (m *Model) LoadAdapter(dir string) (*Adapter, error) {
	h, err := m.st.useModel()
	if err != nil {
		return nil, err
	}
	defer m.st.doneModel()
	c, scale, err := adapterLoad(h, dir)
	if err != nil {
		return nil, err
	}
	return &Adapter{a: c, scale: scale}, nil
}

// WithAdapter makes Generate and Chat use adapter a at scale (0 = off; a.Scale() is the
// trained one) instead of the model's own (WithAdapterPath's, if any); a nil adapter
// generates with the base model. Classify and BatchGenerate always use the base model.
func WithAdapter(a *Adapter, scale float32) inference.GenerateOption {
	return extra(func(x *extras) {
		x.adapterSet, x.adapter, x.adapterScale = true, a, scale
	})
}

// applyAdapter puts the generation's adapter on the session: WithAdapter's, else the default
// one (the model's WithAdapterPath adapter at its trained scale), else none.
func applyAdapter(s cSession, x extras, def *Adapter) error {
	a, scale := def, float32(0)
	if def != nil {
		scale = def.scale
	}
	if x.adapterSet {
		a, scale = x.adapter, x.adapterScale
	}
	if a == nil {
		return sessionSetAdapter(s, nil, 0)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.a == nil {
		return ErrAdapterClosed
	}
	return sessionSetAdapter(s, a.a, scale)
}

// TrainConfig says what to train on and how. Zero values take mlx-lm's defaults (batch 4,
// learning rate 1e-5, sequences up to 2048 tokens).
type TrainConfig struct {
	// Data is a JSONL file of {"text"}, {"prompt","completion"} or {"messages"} rows.
	Data string
	// Valid is validation data (optional) for Evaluate and EvalEvery.
	Valid string
	// Iters is how many updates Train applies (default 100).
	Iters           int
	BatchSize       int
	LearningRate    float32
	WarmupSteps     int
	CosineDecay     bool // to MinLearningRate over the steps after warm-up
	MinLearningRate float32
	WeightDecay     float32
	GradClip        float32
	GradAccumulate  int
	GradCheckpoint  bool
	MaxSeqLength    int
	// MaskPrompt trains chat rows on the last assistant turn only.
	MaskPrompt bool
	// NumLayers adapts the last NumLayers layers (0: up to 16).
	NumLayers int
	Dropout   float32
	Seed      uint64
	// EvalEvery evaluates Valid every that many updates (0: never); SaveEvery saves to
	// SaveDir every that many updates and at the end (0: only at the end when SaveDir is set).
	EvalEvery, SaveEvery int
	SaveDir              string
}

// LoRA is an adapter being trained on a Model (from ApplyLoRA). Not safe for concurrent use;
// the model keeps generating meanwhile.
type LoRA struct {
	m       *Model
	cfg     inference.LoRAConfig
	params  int
	trainer cTrainer
}

func (m *Model) spec(cfg inference.LoRAConfig, tc TrainConfig) trainSpec {
	targets := cfg.TargetKeys
	if targets == nil {
		targets = []string{"q_proj", "v_proj"}
	}
	s := trainSpec{
		data: tc.Data, valid: tc.Valid, rank: cfg.Rank, alpha: cfg.Alpha, targets: targets,
		numLayers: tc.NumLayers, dropout: tc.Dropout, learningRate: tc.LearningRate, warmup: tc.WarmupSteps,
		minLearningRate: tc.MinLearningRate, weightDecay: tc.WeightDecay, gradClip: tc.GradClip,
		gradAccumulation: tc.GradAccumulate, gradCheckpoint: tc.GradCheckpoint, maskPrompt: tc.MaskPrompt,
		batchSize: tc.BatchSize, maxSeqLength: tc.MaxSeqLength, seed: tc.Seed,
	}
	if cfg.Alpha == 0 {
		s.scale = 0
	}
	if tc.CosineDecay {
		s.cosine = max(tc.Iters-tc.WarmupSteps, 1)
	}
	return s
}

// ApplyLoRA prepares fresh LoRA weights of cfg on the model (the scale is Alpha / Rank);
// LoRA.Train makes and trains them. It returns nil when cfg is invalid (Err says why).
// BFloat16 needs a model loaded in bfloat16 (this backend trains in the model's dtype).
func (m *Model) ApplyLoRA(cfg inference.LoRAConfig) inference.Adapter {
	l, err := m.applyLoRA(cfg)
	m.mu.Lock()
	m.lastErr = err
	m.mu.Unlock()
	if err != nil {
		return nil
	}
	return l
}

func (m *Model) applyLoRA(cfg inference.LoRAConfig) (*LoRA, error) {
	if cfg.Rank <= 0 {
		return nil, invalid(fmt.Sprintf("LoRA rank %d must be positive", cfg.Rank))
	}
	if cfg.BFloat16 && m.desc.DType != "bfloat16" {
		return nil, invalid(fmt.Sprintf("LoRAConfig.BFloat16: the model computes in %s; this backend trains in the model's dtype", m.desc.DType))
	}
	h, err := m.st.useModel()
	if err != nil {
		return nil, err
	}
	defer m.st.doneModel()
	n, err := loraParamCount(h, m.spec(cfg, TrainConfig{}))
	if err != nil {
		return nil, err
	}
	return &LoRA{m: m, cfg: cfg, params: n}, nil
}

// TotalParams is the number of trainable weights.
func (l *LoRA) TotalParams() int { return l.params }

// Train trains for cfg.Iters updates (a fresh run the first time; later calls go on from
// where the last one stopped, with the first call's data and settings), calling each (when
// not nil) after every step; each returning false stops early. ctx is checked between steps.
// It saves to cfg.SaveDir as asked.
func (l *LoRA) Train(ctx context.Context, cfg TrainConfig, each func(StepReport) bool) error {
	if l.trainer == nil {
		h, err := l.m.st.useModel()
		if err != nil {
			return err
		}
		t, err := trainerCreate(h, l.m.spec(l.cfg, cfg))
		l.m.st.doneModel()
		if err != nil {
			return err
		}
		l.trainer = t
	}
	iters := cfg.Iters
	if iters <= 0 {
		iters = 100
	}
	for done := 0; done < iters; {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := trainerStep(l.trainer)
		if err != nil {
			return err
		}
		if r.Updated {
			done++
			if cfg.EvalEvery > 0 && cfg.Valid != "" && r.Step%cfg.EvalEvery == 0 {
				if r.ValLoss, err = trainerEvaluate(l.trainer); err != nil {
					return err
				}
			}
			if cfg.SaveDir != "" && (done == iters || (cfg.SaveEvery > 0 && r.Step%cfg.SaveEvery == 0)) {
				if err := trainerSave(l.trainer, cfg.SaveDir); err != nil {
					return err
				}
			}
		}
		if each != nil && !each(r) {
			return nil
		}
	}
	return nil
}

// Evaluate is the mean loss per token on the validation data (the training data when none).
func (l *LoRA) Evaluate() (float32, error) {
	if l.trainer == nil {
		return 0, errNotTrained
	}
	return trainerEvaluate(l.trainer)
}

// Save writes the adapter as trained so far (mlx-lm's format).
func (l *LoRA) Save(dir string) error {
	if l.trainer == nil {
		return errNotTrained
	}
	return trainerSave(l.trainer, dir)
}

// Adapter is the adapter as trained so far, for WithAdapter; later training does not change
// it.
func (l *LoRA) Adapter() (*Adapter, error) {
	if l.trainer == nil {
		return nil, errNotTrained
	}
	c, err := trainerAdapter(l.trainer)
	if err != nil {
		return nil, err
	}
	return &Adapter{a: c, scale: l.cfg.Alpha / float32(l.cfg.Rank)}, nil
}

// Close frees the training state.
func (l *LoRA) Close() error {
	if l.trainer == nil {
		return nil
	}
	err := trainerFree(l.trainer)
	l.trainer = nil
	return err
}

// Encode gives the token ids of text, special tokens added (nil on error; Err says why).
func (m *Model) Encode(text string) []int32 {
	ids, err := m.Tokenize(text, true)
	if err != nil {
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		return nil
	}
	return ids
}

// Decode gives the text of ids ("" on error; Err says why).
func (m *Model) Decode(ids []int32) string {
	h, err := m.st.useModel()
	if err != nil {
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		return ""
	}
	defer m.st.doneModel()
	s, err := detokenize(h, ids, false)
	if err != nil {
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		return ""
	}
	return s
}

// NumLayers is the number of transformer layers.
func (m *Model) NumLayers() int { return m.desc.NumLayers }
