package metal

// The LoRA half of the C calls (native.go's conventions: every fallible call returns its
// status with the message copied in the same C call).

/*
#cgo pkg-config: lmx
#include <stdlib.h>
#include <string.h>
#include "lmx.h"

typedef struct { lmx_status status; char *msg; } lmxgo_lora_result;

static lmxgo_lora_result lmxgo_lora_finish(lmx_status st) {
	lmxgo_lora_result r = { st, NULL };
	if (st != LMX_OK) r.msg = strdup(lmx_last_error());
	return r;
}
static lmxgo_lora_result lmxgo_train_params_init(lmx_train_params *p) {
	return lmxgo_lora_finish(LMX_TRAIN_PARAMS_INIT(p));
}
static lmxgo_lora_result lmxgo_lora_param_count(const lmx_model *m, const lmx_train_params *p, uint64_t *n) {
	return lmxgo_lora_finish(lmx_lora_param_count(m, p, n));
}
static lmxgo_lora_result lmxgo_trainer_create(const lmx_model *m, const lmx_train_params *p, lmx_trainer **t) {
	return lmxgo_lora_finish(lmx_trainer_create(m, p, t));
}
static lmxgo_lora_result lmxgo_trainer_step(const lmx_trainer *t, lmx_train_report *r) {
	r->struct_size = sizeof *r;
	return lmxgo_lora_finish(lmx_trainer_step(t, r));
}
static lmxgo_lora_result lmxgo_trainer_evaluate(const lmx_trainer *t, float *loss) {
	return lmxgo_lora_finish(lmx_trainer_evaluate(t, loss));
}
static lmxgo_lora_result lmxgo_trainer_save(const lmx_trainer *t, const char *dir) {
	return lmxgo_lora_finish(lmx_trainer_save_adapter(t, dir));
}
static lmxgo_lora_result lmxgo_trainer_adapter(const lmx_trainer *t, lmx_adapter **a) {
	return lmxgo_lora_finish(lmx_trainer_adapter(t, a));
}
static lmxgo_lora_result lmxgo_trainer_free(lmx_trainer *t) { return lmxgo_lora_finish(lmx_trainer_free(t)); }
static lmxgo_lora_result lmxgo_adapter_load(const lmx_model *m, const char *dir, lmx_adapter **a) {
	return lmxgo_lora_finish(lmx_adapter_load(m, dir, a));
}
static lmxgo_lora_result lmxgo_adapter_scale(const lmx_adapter *a, float *s) {
	return lmxgo_lora_finish(lmx_adapter_scale(a, s));
}
static lmxgo_lora_result lmxgo_adapter_free(lmx_adapter *a) { return lmxgo_lora_finish(lmx_adapter_free(a)); }
static lmxgo_lora_result lmxgo_session_set_adapter(const lmx_session *s, const lmx_adapter *a, float scale) {
	return lmxgo_lora_finish(lmx_session_set_adapter(s, a, scale));
}
*/
import "C"

import (
	"strings"
	"unsafe"

	"liblmx/go/lmx"
)

type (
	cTrainer = *C.lmx_trainer
	cAdapter = *C.lmx_adapter
)

func loraResult(r C.lmxgo_lora_result) error {
	if r.status == C.LMX_OK {
		return nil
	}
	msg := ""
	if r.msg != nil {
		msg = C.GoString(r.msg)
		C.free(unsafe.Pointer(r.msg))
	}
	return &lmx.Error{Status: lmx.Status(r.status), Message: msg}
}

// trainSpec is what a trainer is made from.
type trainSpec struct {
	data, valid, resume string
	rank                int
	alpha, scale        float32
	dropout             float32
	numLayers           int
	targets             []string
	learningRate        float32
	warmup, cosine      int
	minLearningRate     float32
	weightDecay         float32
	gradClip            float32
	gradAccumulation    int
	gradCheckpoint      bool
	maskPrompt          bool
	batchSize           int
	maxSeqLength        int
	seed                uint64
}

// withParams fills C training parameters from s (strings in C memory for the length of f).
func withParams(s trainSpec, f func(*C.lmx_train_params) error) error {
	var p C.lmx_train_params
	if err := loraResult(C.lmxgo_train_params_init(&p)); err != nil {
		return err
	}
	var frees []unsafe.Pointer
	defer func() {
		for _, q := range frees {
			C.free(q)
		}
	}()
	str := func(v, what string) (*C.char, error) {
		if v == "" {
			return nil, nil
		}
		c, err := cString(v, what)
		if err != nil {
			return nil, err
		}
		frees = append(frees, unsafe.Pointer(c))
		return c, nil
	}
	var err error
	if p.data_path, err = str(s.data, "the data path"); err != nil {
		return err
	}
	if p.valid_path, err = str(s.valid, "the validation data path"); err != nil {
		return err
	}
	if p.resume_adapter, err = str(s.resume, "the adapter path"); err != nil {
		return err
	}
	if p.targets, err = str(strings.Join(s.targets, ","), "the LoRA targets"); err != nil {
		return err
	}
	if s.rank < 0 || s.numLayers < 0 || s.warmup < 0 || s.cosine < 0 || s.gradAccumulation < 0 || s.batchSize < 0 || s.maxSeqLength < 0 {
		return invalid("LoRA rank, layers, steps, batch size and lengths must not be negative")
	}
	p.rank = C.uint32_t(s.rank)
	if s.scale != 0 || s.alpha != 0 {
		p.scale = C.float(s.scale)
		p.alpha = C.float(s.alpha)
	}
	p.dropout = C.float(s.dropout)
	p.num_layers = C.uint32_t(s.numLayers)
	if s.learningRate != 0 {
		p.learning_rate = C.float(s.learningRate)
	}
	p.warmup_steps = C.uint32_t(s.warmup)
	p.cosine_steps = C.uint32_t(s.cosine)
	p.min_learning_rate = C.float(s.minLearningRate)
	p.weight_decay = C.float(s.weightDecay)
	p.grad_clip = C.float(s.gradClip)
	if s.gradAccumulation > 0 {
		p.grad_accumulation = C.uint32_t(s.gradAccumulation)
	}
	p.grad_checkpoint = cFlag(s.gradCheckpoint)
	p.mask_prompt = cFlag(s.maskPrompt)
	if s.batchSize > 0 {
		p.batch_size = C.uint32_t(s.batchSize)
	}
	if s.maxSeqLength > 0 {
		p.max_seq_length = C.uint32_t(s.maxSeqLength)
	}
	p.seed = C.uint64_t(s.seed)
	// p lives in Go memory; the pointers in it are C memory.
	return f(&p)
}

func loraParamCount(m cModel, s trainSpec) (int, error) {
	var n C.uint64_t
	err := withParams(s, func(p *C.lmx_train_params) error { return loraResult(C.lmxgo_lora_param_count(m, p, &n)) })
	return int(n), err
}

func trainerCreate(m cModel, s trainSpec) (cTrainer, error) {
	var t cTrainer
	err := withParams(s, func(p *C.lmx_train_params) error { return loraResult(C.lmxgo_trainer_create(m, p, &t)) })
	return t, err
}

// StepReport is what one training step did.
type StepReport struct {
	// Step counts the updates applied so far; Batches the batches seen.
	Step, Batches int
	// Loss is the mean loss over the batch's trained tokens.
	Loss         float32
	LearningRate float32
	Tokens       int
	TokensPerSec float64
	// GradNorm is the gradient's global norm before clipping (0 when the step only
	// accumulated gradients); Updated says whether the step applied an update.
	GradNorm        float32
	Updated         bool
	PeakMemoryBytes uint64
	// ValLoss is set (> 0) on steps where Train evaluated the validation data.
	ValLoss float32
}

func trainerStep(t cTrainer) (StepReport, error) {
	var r C.lmx_train_report
	if err := loraResult(C.lmxgo_trainer_step(t, &r)); err != nil {
		return StepReport{}, err
	}
	return StepReport{
		Step: int(r.step), Batches: int(r.batches), Loss: float32(r.loss), LearningRate: float32(r.learning_rate),
		Tokens: int(r.tokens), TokensPerSec: float64(r.tokens_per_second), GradNorm: float32(r.grad_norm),
		Updated: r.updated != 0, PeakMemoryBytes: uint64(r.peak_memory_bytes),
	}, nil
}

func trainerEvaluate(t cTrainer) (float32, error) {
	var l C.float
	err := loraResult(C.lmxgo_trainer_evaluate(t, &l))
	return float32(l), err
}

func trainerSave(t cTrainer, dir string) error {
	c, err := cString(dir, "the adapter folder")
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(c))
	return loraResult(C.lmxgo_trainer_save(t, c))
}

func trainerAdapter(t cTrainer) (cAdapter, error) {
	var a cAdapter
	return a, loraResult(C.lmxgo_trainer_adapter(t, &a))
}

func trainerFree(t cTrainer) error { return loraResult(C.lmxgo_trainer_free(t)) }

func adapterLoad(m cModel, dir string) (cAdapter, float32, error) {
	c, err := cString(dir, "the adapter folder")
	if err != nil {
		return nil, 0, err
	}
	defer C.free(unsafe.Pointer(c))
	var a cAdapter
	if err := loraResult(C.lmxgo_adapter_load(m, c, &a)); err != nil {
		return nil, 0, err
	}
	var s C.float
	if err := loraResult(C.lmxgo_adapter_scale(a, &s)); err != nil {
		C.lmxgo_adapter_free(a)
		return nil, 0, err
	}
	return a, float32(s), nil
}

func adapterFree(a cAdapter) error { return loraResult(C.lmxgo_adapter_free(a)) }

func sessionSetAdapter(s cSession, a cAdapter, scale float32) error {
	return loraResult(C.lmxgo_session_set_adapter(s, a, C.float(scale)))
}
