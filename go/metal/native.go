package metal

// The only file of this package that talks to C. Every fallible liblmx call goes through a
// static helper below that returns the status together with a malloc'd copy of the thread's
// message, taken in the same C call (the shim of go/internal/cabi, shared with go/lmx): a
// goroutine may move to another OS thread between two cgo calls, so reading lmx_last_error()
// in a second call could read another call's message. C never keeps a Go pointer: Go memory
// passed in (token and logit buffers) holds no pointers and is only used during the call;
// everything a params struct points to is C memory.

/*
#cgo pkg-config: lmx
#cgo CFLAGS: -I${SRCDIR}/../internal/cabi
#include "cabi.h"

static lmxgo_result lmxgo_model_load(const char *path, const lmx_model_params *p, lmx_model **out) {
	return lmxgo_finish(lmx_model_load(path, p, out));
}
static lmxgo_result lmxgo_model_free(lmx_model *m) { return lmxgo_finish(lmx_model_free(m)); }
static lmxgo_result lmxgo_model_info(const lmx_model *m, lmx_model_desc *d) {
	d->struct_size = sizeof *d;
	return lmxgo_finish(lmx_model_info(m, d));
}
static lmxgo_result lmxgo_model_inspect(const char *path, lmx_model_desc *d) {
	d->struct_size = sizeof *d;
	return lmxgo_finish(lmx_model_inspect(path, d));
}
static lmxgo_result lmxgo_session_reset(lmx_session *s) { return lmxgo_finish(lmx_session_reset(s)); }
static lmxgo_result lmxgo_session_create(const lmx_model *m, lmx_session **out) {
	return lmxgo_finish(lmx_session_create(m, out));
}
static lmxgo_result lmxgo_session_free(lmx_session *s) { return lmxgo_finish(lmx_session_free(s)); }
static lmxgo_result lmxgo_session_params_init(lmx_session_params *p) {
	return lmxgo_finish(LMX_SESSION_PARAMS_INIT(p));
}
static lmxgo_result lmxgo_session_create_with(const lmx_model *m, const lmx_session_params *p, lmx_session **out) {
	return lmxgo_finish(lmx_session_create_with(m, p, out));
}
static lmxgo_result lmxgo_session_load(const lmx_model *m, const char *path, const lmx_session_params *p,
                                       lmx_session **out) {
	return lmxgo_finish(lmx_session_load(m, path, p, out));
}
static lmxgo_result lmxgo_session_save(const lmx_session *s, const char *path) {
	return lmxgo_finish(lmx_session_save(s, path));
}
static lmxgo_result lmxgo_session_fork(const lmx_session *s, lmx_session **out) {
	return lmxgo_finish(lmx_session_fork(s, out));
}
static lmxgo_result lmxgo_session_cache_info(const lmx_session *s, lmx_session_cache *c) {
	c->struct_size = sizeof *c;
	return lmxgo_finish(lmx_session_cache_info(s, c));
}
static lmxgo_result lmxgo_session_cancel(const lmx_session *s) { return lmxgo_finish(lmx_session_cancel(s)); }
static lmxgo_result lmxgo_session_last_result(const lmx_session *s, lmx_finish_reason *f, lmx_metrics *mt) {
	mt->struct_size = sizeof *mt;
	return lmxgo_finish(lmx_session_last_result(s, f, mt));
}
static lmxgo_result lmxgo_session_stream(lmx_session *s, const char *prompt, const lmx_generate_params *p, lmx_stream **out) {
	return lmxgo_finish(lmx_session_stream(s, prompt, p, out));
}
static lmxgo_result lmxgo_session_stream_chat(lmx_session *s, const lmx_message *msgs, size_t n,
                                              const char *extra_json, const lmx_generate_params *p,
                                              lmx_stream **out) {
	return lmxgo_finish(lmx_session_stream_chat(s, msgs, n, extra_json, p, out));
}
static lmxgo_result lmxgo_stream_next(lmx_stream *st, int32_t *tok, const char **text, size_t *len, bool *done) {
	return lmxgo_finish(lmx_stream_next(st, tok, text, len, done));
}
static lmxgo_result lmxgo_stream_free(lmx_stream *st) { return lmxgo_finish(lmx_stream_free(st)); }
static lmxgo_result lmxgo_classify(const lmx_model *m, const char *const *prompts, size_t n,
                                   const lmx_generate_params *p, int32_t *tokens, float *logits, size_t cap) {
	return lmxgo_finish(lmx_classify(m, prompts, n, p, tokens, logits, cap, NULL));
}
static lmxgo_result lmxgo_batch_generate(const lmx_model *m, const char *const *prompts, size_t n,
                                         const lmx_generate_params *p, lmx_batch **out) {
	return lmxgo_finish(lmx_batch_generate(m, prompts, n, p, out));
}
static lmxgo_result lmxgo_batch_get(const lmx_batch *b, size_t i, lmx_batch_item *it) {
	it->struct_size = sizeof *it;
	return lmxgo_finish(lmx_batch_get(b, i, it));
}
static lmxgo_result lmxgo_batch_metrics(const lmx_batch *b, lmx_metrics *mt) {
	mt->struct_size = sizeof *mt;
	return lmxgo_finish(lmx_batch_metrics(b, mt));
}
static lmxgo_result lmxgo_batch_free(lmx_batch *b) { return lmxgo_finish(lmx_batch_free(b)); }
static lmxgo_result lmxgo_cancel_create(lmx_cancel **out) { return lmxgo_finish(lmx_cancel_create(out)); }
static lmxgo_result lmxgo_generate_params_init(lmx_generate_params *p) {
	return lmxgo_finish(lmx_generate_params_init(p, sizeof *p));
}
static lmxgo_result lmxgo_model_params_init(lmx_model_params *p) {
	return lmxgo_finish(lmx_model_params_init(p, sizeof *p));
}

// Size-then-fill in one C call: *out is malloc'd (free it) when the status is LMX_OK.
static lmxgo_result lmxgo_tokenize(const lmx_model *m, const char *text, size_t len, bool add_special,
                                   int32_t **out, size_t *n) {
	*out = NULL;
	lmx_status st = lmx_tokenize(m, text, len, add_special, NULL, 0, n);
	if (st != LMX_OK) return lmxgo_finish(st);
	*out = malloc((*n ? *n : 1) * sizeof(int32_t));
	if (!*out) return (lmxgo_result){ LMX_STATUS_OUT_OF_MEMORY, strdup("malloc failed") };
	st = lmx_tokenize(m, text, len, add_special, *out, *n, n);
	if (st != LMX_OK) { free(*out); *out = NULL; }
	return lmxgo_finish(st);
}
static lmxgo_result lmxgo_detokenize(const lmx_model *m, const int32_t *tokens, size_t n, bool skip_special,
                                     char **out, size_t *len) {
	*out = NULL;
	lmx_status st = lmx_detokenize(m, tokens, n, skip_special, NULL, 0, len);
	if (st != LMX_OK) return lmxgo_finish(st);
	*out = malloc(*len + 1);
	if (!*out) return (lmxgo_result){ LMX_STATUS_OUT_OF_MEMORY, strdup("malloc failed") };
	st = lmx_detokenize(m, tokens, n, skip_special, *out, *len + 1, len);
	if (st != LMX_OK) { free(*out); *out = NULL; }
	return lmxgo_finish(st);
}
static lmxgo_result lmxgo_chat_template(const lmx_model *m, const lmx_message *msgs, size_t n,
                                        char **out, size_t *len) {
	*out = NULL;
	lmx_status st = lmx_chat_apply_template(m, msgs, n, true, NULL, NULL, 0, len);
	if (st != LMX_OK) return lmxgo_finish(st);
	*out = malloc(*len + 1);
	if (!*out) return (lmxgo_result){ LMX_STATUS_OUT_OF_MEMORY, strdup("malloc failed") };
	st = lmx_chat_apply_template(m, msgs, n, true, NULL, *out, *len + 1, len);
	if (st != LMX_OK) { free(*out); *out = NULL; }
	return lmxgo_finish(st);
}
// Size-then-fill of a text liblmx writes as JSON: the model's parse of text (which 0: tool
// calls, 1: reasoning) or a session's last message (2).
static lmx_status lmxgo_json_call(int which, const lmx_model *m, const lmx_session *s,
                                  const char *text, char *buf, size_t cap, size_t *len) {
	switch (which) {
	case 0: return lmx_model_parse_tools(m, text, buf, cap, len);
	case 1: return lmx_model_parse_reasoning(m, text, buf, cap, len);
	default: return lmx_session_last_message(s, buf, cap, len);
	}
}
static lmxgo_result lmxgo_json(int which, const lmx_model *m, const lmx_session *s,
                               const char *text, char **out, size_t *len) {
	*out = NULL;
	lmx_status status = lmxgo_json_call(which, m, s, text, NULL, 0, len);
	if (status != LMX_OK) return lmxgo_finish(status);
	*out = malloc(*len + 1);
	if (!*out) return (lmxgo_result){ LMX_STATUS_OUT_OF_MEMORY, strdup("malloc failed") };
	status = lmxgo_json_call(which, m, s, text, *out, *len + 1, len);
	if (status != LMX_OK) { free(*out); *out = NULL; }
	return lmxgo_finish(status);
}
static lmxgo_result lmxgo_train_params_init(lmx_train_params *p) {
	return lmxgo_finish(LMX_TRAIN_PARAMS_INIT(p));
}
static lmxgo_result lmxgo_lora_param_count(const lmx_model *m, const lmx_train_params *p, uint64_t *n) {
	return lmxgo_finish(lmx_lora_param_count(m, p, n));
}
static lmxgo_result lmxgo_trainer_create(const lmx_model *m, const lmx_train_params *p, lmx_trainer **t) {
	return lmxgo_finish(lmx_trainer_create(m, p, t));
}
static lmxgo_result lmxgo_trainer_step(const lmx_trainer *t, lmx_train_report *r) {
	r->struct_size = sizeof *r;
	return lmxgo_finish(lmx_trainer_step(t, r));
}
static lmxgo_result lmxgo_trainer_evaluate(const lmx_trainer *t, float *loss) {
	return lmxgo_finish(lmx_trainer_evaluate(t, loss));
}
static lmxgo_result lmxgo_trainer_save(const lmx_trainer *t, const char *dir) {
	return lmxgo_finish(lmx_trainer_save_adapter(t, dir));
}
static lmxgo_result lmxgo_trainer_adapter(const lmx_trainer *t, lmx_adapter **a) {
	return lmxgo_finish(lmx_trainer_adapter(t, a));
}
static lmxgo_result lmxgo_trainer_free(lmx_trainer *t) { return lmxgo_finish(lmx_trainer_free(t)); }
static lmxgo_result lmxgo_adapter_load(const lmx_model *m, const char *dir, lmx_adapter **a) {
	return lmxgo_finish(lmx_adapter_load(m, dir, a));
}
static lmxgo_result lmxgo_adapter_scale(const lmx_adapter *a, float *s) {
	return lmxgo_finish(lmx_adapter_scale(a, s));
}
static lmxgo_result lmxgo_adapter_free(lmx_adapter *a) { return lmxgo_finish(lmx_adapter_free(a)); }
static lmxgo_result lmxgo_session_set_adapter(const lmx_session *s, const lmx_adapter *a, float scale) {
	return lmxgo_finish(lmx_session_set_adapter(s, a, scale));
}
*/
import "C"

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
	"unsafe"

	"liblmx/go/inference"
	"liblmx/go/internal/cabi"
	"liblmx/go/lmx"
)

type (
	cModel   = *C.lmx_model
	cSession = *C.lmx_session
	cStream  = *C.lmx_stream
)

// result turns a helper's result into nil or an *lmx.Error, freeing the copied message.
func result(r C.lmxgo_result) error { return cabi.Result(int32(r.status), unsafe.Pointer(r.msg)) }

// invalid is the error for a bad argument caught on the Go side: it matches
// lmx.ErrInvalidArgument, as liblmx's own refusal of a bad argument does.
func invalid(msg string) error {
	return &lmx.Error{Status: lmx.StatusInvalidArgument, Message: msg}
}

// unsupported is the error for something this backend does not do: it matches
// lmx.ErrUnsupported.
func unsupported(msg string) error {
	return &lmx.Error{Status: lmx.StatusUnsupported, Message: msg}
}

// cString copies s into C memory (free it with C.free). A NUL byte would silently cut the
// string short in C, so it is refused.
func cString(s, what string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, invalid(what + " contains a NUL byte")
	}
	return C.CString(s), nil
}

// cStrings is an array of C strings in C memory.
type cStrings struct {
	arr **C.char
	n   int
}

func newCStrings(ss []string, what string) (*cStrings, error) {
	cs := &cStrings{}
	if len(ss) == 0 {
		return cs, nil
	}
	cs.arr = (**C.char)(C.calloc(C.size_t(len(ss)), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	items := unsafe.Slice(cs.arr, len(ss))
	for i, s := range ss {
		p, err := cString(s, what)
		if err != nil {
			cs.free()
			return nil, err
		}
		items[i] = p
		cs.n = i + 1
	}
	return cs, nil
}

func (cs *cStrings) free() {
	if cs.arr == nil {
		return
	}
	for _, p := range unsafe.Slice(cs.arr, cs.n) {
		C.free(unsafe.Pointer(p))
	}
	C.free(unsafe.Pointer(cs.arr))
	cs.arr, cs.n = nil, 0
}

// cMessages is an lmx_message array in C memory.
type cMessages struct {
	arr  *C.lmx_message
	n    int
	strs []*C.char // the C strings the messages point to
}

func newCMessages(msgs []inference.Message) (*cMessages, error) {
	cm := &cMessages{n: len(msgs)}
	if len(msgs) == 0 {
		return cm, nil
	}
	// An optional field left empty is NULL (absent), not "".
	str := func(v, what string, optional bool) (*C.char, error) {
		if optional && v == "" {
			return nil, nil
		}
		p, err := cString(v, what)
		if err != nil {
			return nil, err
		}
		cm.strs = append(cm.strs, p)
		return p, nil
	}
	cm.arr = (*C.lmx_message)(C.calloc(C.size_t(len(msgs)), C.sizeof_lmx_message))
	items := unsafe.Slice(cm.arr, len(msgs))
	for i, m := range msgs {
		it := &items[i]
		it.struct_size = C.sizeof_lmx_message
		calls, err := toolCallsJSON(m.ToolCalls)
		if err == nil {
			it.role, err = str(m.Role, "a chat message", false)
		}
		if err == nil {
			it.content, err = str(m.Content, "a chat message", false)
		}
		if err == nil {
			it.tool_calls_json, err = str(calls, "a chat message's tool calls", true)
		}
		if err == nil {
			it.tool_call_id, err = str(m.ToolCallID, "a chat message's tool call id", true)
		}
		if err == nil {
			it.name, err = str(m.Name, "a chat message's name", true)
		}
		if err != nil {
			cm.free()
			return nil, err
		}
	}
	return cm, nil
}

func (cm *cMessages) free() {
	for _, p := range cm.strs {
		C.free(unsafe.Pointer(p))
	}
	cm.strs = nil
	if cm.arr != nil {
		C.free(unsafe.Pointer(cm.arr))
		cm.arr = nil
	}
}

// genParams are liblmx's generation parameters in Go terms.
type genParams struct {
	maxTokens         uint32
	temperature       float32
	topK              int32
	topP              float32
	minP              float32
	repetitionPenalty float32
	seed              uint64
	useSeed           bool
	stopTokens        []int32
	stopStrings       []string
	ignoreEOS         bool
	minTokens         uint32
	// banned can never be generated: liblmx's logit bias of -inf.
	banned []int32
	// constraint is an LMX_CONSTRAINT_* kind; constraintText its schema, regex or grammar;
	// choices LMX_CONSTRAINT_CHOICE's strings.
	constraint     constraintKind
	constraintText string
	choices        []string
	// templateExtra is a JSON object of extra chat-template variables ("" = none).
	templateExtra string
	// toolsJSON is the offered tools in OpenAI's form ("" = none); toolChoice "" = auto.
	toolsJSON, toolChoice string
	splitReasoning        bool
	thinkingBudget        uint32
}

// constraintKind is an lmx_constraint_kind.
type constraintKind int32

const (
	constraintJSONSchema constraintKind = C.LMX_CONSTRAINT_JSON_SCHEMA
	constraintJSONObject constraintKind = C.LMX_CONSTRAINT_JSON_OBJECT
	constraintRegex      constraintKind = C.LMX_CONSTRAINT_REGEX
	constraintGrammar    constraintKind = C.LMX_CONSTRAINT_GRAMMAR
	constraintChoice     constraintKind = C.LMX_CONSTRAINT_CHOICE
)

// cParams is an lmx_generate_params in C memory, with its arrays in C memory too.
type cParams struct {
	p          *C.lmx_generate_params
	tokens     *C.int32_t
	stops      *cStrings
	biasTokens *C.int32_t
	biasValues *C.float
	ctext      *C.char
	choices    *cStrings
	tools      *C.char
	toolChoice *C.char
	// extra is the chat template's extra variables (JSON), or nil; it is not part of the
	// params struct but goes with the chat calls.
	extra *C.char
}

func newCParams(g genParams) (*cParams, error) {
	cp := &cParams{}
	fail := func(err error) (*cParams, error) {
		cp.free()
		return nil, err
	}
	var err error
	if cp.stops, err = newCStrings(g.stopStrings, "a stop string"); err != nil {
		return fail(err)
	}
	if cp.choices, err = newCStrings(g.choices, "a choice"); err != nil {
		return fail(err)
	}
	if g.constraintText != "" {
		if cp.ctext, err = cString(g.constraintText, "the constraint"); err != nil {
			return fail(err)
		}
	}
	if g.templateExtra != "" {
		if cp.extra, err = cString(g.templateExtra, "the template variables"); err != nil {
			return fail(err)
		}
	}
	if g.toolsJSON != "" {
		if cp.tools, err = cString(g.toolsJSON, "the tools"); err != nil {
			return fail(err)
		}
	}
	if g.toolChoice != "" {
		if cp.toolChoice, err = cString(g.toolChoice, "the tool choice"); err != nil {
			return fail(err)
		}
	}
	cp.p = (*C.lmx_generate_params)(C.malloc(C.sizeof_lmx_generate_params))
	if err := result(C.lmxgo_generate_params_init(cp.p)); err != nil {
		return fail(err)
	}
	p := cp.p
	p.max_tokens = C.uint32_t(g.maxTokens)
	p.temperature = C.float(g.temperature)
	p.top_k = C.int32_t(g.topK)
	p.top_p = C.float(g.topP)
	p.min_p = C.float(g.minP)
	p.repetition_penalty = C.float(g.repetitionPenalty)
	p.seed = C.uint64_t(g.seed)
	p.use_seed = cFlag(g.useSeed)
	p.ignore_eos = cFlag(g.ignoreEOS)
	p.min_tokens = C.uint32_t(g.minTokens)
	if n := len(g.banned); n > 0 {
		cp.biasTokens = (*C.int32_t)(C.malloc(C.size_t(n) * C.sizeof_int32_t))
		copy(unsafe.Slice((*int32)(unsafe.Pointer(cp.biasTokens)), n), g.banned)
		cp.biasValues = (*C.float)(C.malloc(C.size_t(n) * C.sizeof_float))
		values := unsafe.Slice((*float32)(unsafe.Pointer(cp.biasValues)), n)
		for i := range values {
			values[i] = float32(math.Inf(-1))
		}
		p.logit_bias_tokens = cp.biasTokens
		p.logit_bias_values = cp.biasValues
		p.n_logit_bias = C.size_t(n)
	}
	if n := len(g.stopTokens); n > 0 {
		cp.tokens = (*C.int32_t)(C.malloc(C.size_t(n) * C.sizeof_int32_t))
		copy(unsafe.Slice((*int32)(unsafe.Pointer(cp.tokens)), n), g.stopTokens)
		p.stop_tokens = cp.tokens
		p.n_stop_tokens = C.size_t(n)
	}
	if cp.stops.n > 0 {
		p.stop_strings = cp.stops.arr
		p.n_stop_strings = C.size_t(cp.stops.n)
	}
	p.constraint = C.lmx_constraint_kind(g.constraint)
	p.constraint_text = cp.ctext
	p.tools_json = cp.tools
	p.tool_choice = cp.toolChoice
	p.split_reasoning = cFlag(g.splitReasoning)
	p.thinking_budget = C.uint32_t(g.thinkingBudget)
	if cp.choices.n > 0 {
		p.choices = cp.choices.arr
		p.n_choices = C.size_t(cp.choices.n)
	}
	return cp, nil
}

func (cp *cParams) free() {
	if cp.stops != nil {
		cp.stops.free()
	}
	if cp.choices != nil {
		cp.choices.free()
	}
	// C.free accepts NULL.
	C.free(unsafe.Pointer(cp.tokens))
	C.free(unsafe.Pointer(cp.biasTokens))
	C.free(unsafe.Pointer(cp.biasValues))
	C.free(unsafe.Pointer(cp.ctext))
	C.free(unsafe.Pointer(cp.extra))
	C.free(unsafe.Pointer(cp.tools))
	C.free(unsafe.Pointer(cp.toolChoice))
	cp.tokens, cp.biasTokens, cp.biasValues, cp.ctext, cp.extra, cp.tools, cp.toolChoice = nil, nil, nil, nil, nil, nil, nil
	if cp.p != nil {
		C.free(unsafe.Pointer(cp.p))
		cp.p = nil
	}
}

// abi is the ABI generation of the linked library.
func abi() int { return cabi.ABI() }

// cFlag is a C flag field: 0 or 1.
func cFlag(b bool) C.uint8_t {
	if b {
		return 1
	}
	return 0
}

// watchCancel gives p a cancellation token that is requested when ctx ends, so liblmx stops
// the call it is passed to (classify and batch generation) after the current step. stop,
// always called once the call returned, ends the watch and frees the token.
func watchCancel(ctx context.Context, p *cParams) (stop func(), err error) {
	var c *C.lmx_cancel
	if err := result(C.lmxgo_cancel_create(&c)); err != nil {
		return nil, err
	}
	p.p.cancel = c
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case <-ctx.Done():
			C.lmx_cancel_request(c)
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-finished
		p.p.cancel = nil
		C.lmx_cancel_free(c)
	}, nil
}

// modelLoad loads a model on MLX's default device, or with cpu on the CPU (for this model
// only).
func modelLoad(path string, contextLen uint32, cpu bool) (cModel, error) {
	cpath, err := cString(path, "the model path")
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cpath))
	var p C.lmx_model_params
	if err := result(C.lmxgo_model_params_init(&p)); err != nil {
		return nil, err
	}
	p.context_length = C.uint32_t(contextLen)
	if cpu {
		p.device = C.LMX_DEVICE_CPU
	}
	var m cModel
	// p lives in Go memory and holds no pointers.
	if err := result(C.lmxgo_model_load(cpath, &p, &m)); err != nil {
		return nil, err
	}
	return m, nil
}

func modelFree(m cModel) error { return result(C.lmxgo_model_free(m)) }

func goName(b []C.char) string { return C.GoString(&b[0]) }

func modelInfo(m cModel) (Description, error) {
	var d C.lmx_model_desc
	if err := result(C.lmxgo_model_info(m, &d)); err != nil {
		return Description{}, err
	}
	return goDescription(&d), nil
}

// modelInspect describes the model at path from its GGUF header or config.json alone.
func modelInspect(path string) (Description, error) {
	cpath, err := cString(path, "the model path")
	if err != nil {
		return Description{}, err
	}
	defer C.free(unsafe.Pointer(cpath))
	var d C.lmx_model_desc
	if err := result(C.lmxgo_model_inspect(cpath, &d)); err != nil {
		return Description{}, err
	}
	return goDescription(&d), nil
}

func goDescription(d *C.lmx_model_desc) Description {
	return Description{
		Architecture:     goName(d.architecture[:]),
		ModelType:        goName(d.model_type[:]),
		ParamCount:       uint64(d.param_count),
		NumLayers:        int(d.num_layers),
		HiddenSize:       int(d.hidden_size),
		NumHeads:         int(d.num_heads),
		NumKVHeads:       int(d.num_kv_heads),
		HeadDim:          int(d.head_dim),
		VocabSize:        int(d.vocab_size),
		ContextLength:    int(d.context_length),
		QuantBits:        int(d.quant_bits),
		QuantGroup:       int(d.quant_group_size),
		DType:            goName(d.dtype[:]),
		ChatTemplate:     goName(d.chat_template[:]),
		WeightBytes:      uint64(d.weight_bytes),
		LoadDuration:     seconds(d.load_seconds),
		LoadPeakBytes:    uint64(d.load_peak_bytes),
		Backend:          lmx.Backend(goName(d.backend[:])),
		Format:           goName(d.format[:]),
		Tokenizer:        goName(d.tokenizer[:]),
		Conversions:      goName(d.conversions[:]),
		NumExperts:       int(d.num_experts),
		ExpertsPerToken:  int(d.experts_per_token),
		ActiveParamCount: uint64(d.active_param_count),
	}
}

func seconds(s C.double) time.Duration { return time.Duration(float64(s) * float64(time.Second)) }

func goMetrics(mt *C.lmx_metrics) inference.GenerateMetrics {
	return inference.GenerateMetrics{
		PromptTokens:        int(mt.prompt_tokens),
		GeneratedTokens:     int(mt.generated_tokens),
		PrefillDuration:     seconds(mt.prefill_seconds),
		DecodeDuration:      seconds(mt.decode_seconds),
		TotalDuration:       seconds(mt.total_seconds),
		PrefillTokensPerSec: float64(mt.prefill_tokens_per_second),
		DecodeTokensPerSec:  float64(mt.decode_tokens_per_second),
		PeakMemoryBytes:     uint64(mt.peak_memory),
		ActiveMemoryBytes:   uint64(mt.active_memory),
	}
}

func sessionCreate(m cModel) (cSession, error) {
	var s cSession
	if err := result(C.lmxgo_session_create(m, &s)); err != nil {
		return nil, err
	}
	return s, nil
}

func sessionFree(s cSession) error { return result(C.lmxgo_session_free(s)) }

// sessionReset empties the session's cache (and forgets its tokens).
func sessionReset(s cSession) error { return result(C.lmxgo_session_reset(s)) }

// sessionParams are liblmx's session parameters for cfg; a value out of range is refused
// here, naming its option, rather than wrapped around.
func sessionParams(cfg inference.SessionConfig) (C.lmx_session_params, error) {
	var p C.lmx_session_params
	if err := result(C.lmxgo_session_params_init(&p)); err != nil {
		return p, err
	}
	for _, o := range []struct {
		name string
		v    int
	}{{"WithKVBits", cfg.KVBits}, {"WithKVGroupSize", cfg.KVGroupSize}, {"WithKVQuantStart", cfg.KVQuantStart}} {
		if o.v < 0 || o.v > math.MaxUint32 {
			return p, invalid(fmt.Sprintf("%s(%d) is out of range", o.name, o.v))
		}
	}
	p.kv_bits = C.uint32_t(cfg.KVBits)
	if cfg.KVGroupSize != 0 {
		p.kv_group_size = C.uint32_t(cfg.KVGroupSize)
	}
	p.kv_quant_start = C.uint32_t(cfg.KVQuantStart)
	return p, nil
}

func sessionCreateWith(m cModel, cfg inference.SessionConfig) (cSession, error) {
	p, err := sessionParams(cfg)
	if err != nil {
		return nil, err
	}
	var s cSession
	// p lives in Go memory and holds no pointers.
	if err := result(C.lmxgo_session_create_with(m, &p, &s)); err != nil {
		return nil, err
	}
	return s, nil
}

func sessionLoad(m cModel, path string, cfg inference.SessionConfig) (cSession, error) {
	p, err := sessionParams(cfg)
	if err != nil {
		return nil, err
	}
	cpath, err := cString(path, "the session file path")
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cpath))
	var s cSession
	if err := result(C.lmxgo_session_load(m, cpath, &p, &s)); err != nil {
		return nil, err
	}
	return s, nil
}

func sessionSave(s cSession, path string) error {
	cpath, err := cString(path, "the session file path")
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cpath))
	return result(C.lmxgo_session_save(s, cpath))
}

func sessionFork(s cSession) (cSession, error) {
	var f cSession
	if err := result(C.lmxgo_session_fork(s, &f)); err != nil {
		return nil, err
	}
	return f, nil
}

func sessionCacheInfo(s cSession) (inference.CacheInfo, error) {
	var c C.lmx_session_cache
	if err := result(C.lmxgo_session_cache_info(s, &c)); err != nil {
		return inference.CacheInfo{}, err
	}
	return inference.CacheInfo{
		Positions:   int(c.positions),
		KnownTokens: int(c.known_tokens),
		Bytes:       uint64(c.bytes),
		KVBits:      int(c.kv_bits),
		KVGroupSize: int(c.kv_group_size),
	}, nil
}

func sessionCancel(s cSession) error { return result(C.lmxgo_session_cancel(s)) }

// sessionLastResult gives the session's last metrics and how many prompt tokens it computed
// (fewer than PromptTokens when its cache held a prefix).
func sessionLastResult(s cSession) (inference.GenerateMetrics, int, error) {
	var f C.lmx_finish_reason
	var mt C.lmx_metrics
	if err := result(C.lmxgo_session_last_result(s, &f, &mt)); err != nil {
		return inference.GenerateMetrics{}, 0, err
	}
	return goMetrics(&mt), int(mt.prefill_tokens), nil
}

func streamText(s cSession, prompt string, p *cParams) (cStream, error) {
	cprompt, err := cString(prompt, "the prompt")
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cprompt))
	var st cStream
	if err := result(C.lmxgo_session_stream(s, cprompt, p.p, &st)); err != nil {
		return nil, err
	}
	return st, nil
}

func streamChat(s cSession, msgs []inference.Message, p *cParams) (cStream, error) {
	cm, err := newCMessages(msgs)
	if err != nil {
		return nil, err
	}
	defer cm.free()
	var st cStream
	if err := result(C.lmxgo_session_stream_chat(s, cm.arr, C.size_t(cm.n), p.extra, p.p, &st)); err != nil {
		return nil, err
	}
	return st, nil
}

// streamNext computes the next piece; the text is copied before the stream's next call can
// overwrite it.
func streamNext(st cStream) (tok int32, text string, done bool, err error) {
	var ctok C.int32_t
	var ctext *C.char
	var clen C.size_t
	var cdone C.bool
	err = result(C.lmxgo_stream_next(st, &ctok, &ctext, &clen, &cdone))
	if cdone || err != nil {
		return 0, "", true, err
	}
	return int32(ctok), C.GoStringN(ctext, C.int(clen)), false, nil
}

func streamFree(st cStream) error { return result(C.lmxgo_stream_free(st)) }

// jsonOf is the JSON text liblmx writes for one of lmxgo_json's calls.
func jsonOf(which C.int, m cModel, s cSession, text string) (string, error) {
	var ctext *C.char
	if which <= 1 {
		var err error
		if ctext, err = cString(text, "the text"); err != nil {
			return "", err
		}
		defer C.free(unsafe.Pointer(ctext))
	}
	var out *C.char
	var n C.size_t
	if err := result(C.lmxgo_json(which, m, s, ctext, &out, &n)); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(out))
	return C.GoStringN(out, C.int(n)), nil
}

// parseTools is the model's reading of the tool calls in text (JSON).
func parseTools(m cModel, text string) (string, error) { return jsonOf(0, m, nil, text) }

// parseReasoning is the model's reading of the reasoning in text (JSON).
func parseReasoning(m cModel, text string) (string, error) { return jsonOf(1, m, nil, text) }

// sessionLastMessage is the assistant message of the session's last finished generation
// (JSON).
func sessionLastMessage(s cSession) (string, error) { return jsonOf(2, nil, s, "") }

func classify(m cModel, prompts []string, p *cParams, vocab int, wantLogits bool) ([]int32, []float32, error) {
	cs, err := newCStrings(prompts, "a prompt")
	if err != nil {
		return nil, nil, err
	}
	defer cs.free()
	tokens := make([]int32, len(prompts))
	var logits []float32
	var logitsPtr *C.float
	if wantLogits {
		logits = make([]float32, len(prompts)*vocab)
		logitsPtr = (*C.float)(unsafe.Pointer(&logits[0]))
	}
	r := C.lmxgo_classify(m, cs.arr, C.size_t(cs.n), p.p, (*C.int32_t)(unsafe.Pointer(&tokens[0])), logitsPtr,
		C.size_t(len(logits)))
	if err := result(r); err != nil {
		return nil, nil, err
	}
	return tokens, logits, nil
}

// batchItem is one prompt's result, copied out of the lmx_batch.
type batchItem struct {
	err    error
	tokens []int32
	// pieces[i] is token i's text as a stream would have delivered it; they join to the
	// row's text.
	pieces []string
}

func batchGenerate(m cModel, prompts []string, p *cParams) ([]batchItem, inference.GenerateMetrics, error) {
	cs, err := newCStrings(prompts, "a prompt")
	if err != nil {
		return nil, inference.GenerateMetrics{}, err
	}
	defer cs.free()
	var b *C.lmx_batch
	if err := result(C.lmxgo_batch_generate(m, cs.arr, C.size_t(cs.n), p.p, &b)); err != nil {
		return nil, inference.GenerateMetrics{}, err
	}
	defer func() { _ = result(C.lmxgo_batch_free(b)) }()
	items := make([]batchItem, len(prompts))
	for i := range items {
		var it C.lmx_batch_item
		if err := result(C.lmxgo_batch_get(b, C.size_t(i), &it)); err != nil {
			return nil, inference.GenerateMetrics{}, err
		}
		if it.status != C.LMX_OK {
			items[i].err = &lmx.Error{Status: lmx.Status(it.status), Message: C.GoString(it.error)}
			continue
		}
		text := C.GoStringN(it.text, C.int(it.text_len))
		n := int(it.n_tokens)
		if n > 0 {
			items[i].tokens = append([]int32(nil), unsafe.Slice((*int32)(unsafe.Pointer(it.tokens)), n)...)
			ends := unsafe.Slice((*C.size_t)(unsafe.Pointer(it.text_ends)), n)
			items[i].pieces = make([]string, n)
			start := 0
			for j, e := range ends {
				end := min(int(e), len(text))
				items[i].pieces[j], start = text[start:end], end
			}
			// Text released when the row ended belongs to its last token.
			items[i].pieces[n-1] += text[start:]
		}
	}
	var mt C.lmx_metrics
	if err := result(C.lmxgo_batch_metrics(b, &mt)); err != nil {
		return nil, inference.GenerateMetrics{}, err
	}
	return items, goMetrics(&mt), nil
}

func tokenize(m cModel, text string, addSpecial bool) ([]int32, error) {
	// lmx_tokenize takes a length, so the bytes go as they are (a trailing NUL keeps the
	// buffer non-empty for an empty text).
	ctext := C.CBytes(append([]byte(text), 0))
	defer C.free(ctext)
	var out *C.int32_t
	var n C.size_t
	if err := result(C.lmxgo_tokenize(m, (*C.char)(ctext), C.size_t(len(text)), C.bool(addSpecial), &out, &n)); err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(out))
	return append([]int32{}, unsafe.Slice((*int32)(unsafe.Pointer(out)), int(n))...), nil
}

func detokenize(m cModel, ids []int32, skipSpecial bool) (string, error) {
	if len(ids) == 0 {
		return "", nil
	}
	var out *C.char
	var n C.size_t
	// ids is Go memory without pointers, used only during the call.
	r := C.lmxgo_detokenize(m, (*C.int32_t)(unsafe.Pointer(&ids[0])), C.size_t(len(ids)), C.bool(skipSpecial), &out, &n)
	if err := result(r); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(out))
	return C.GoStringN(out, C.int(n)), nil
}

func chatTemplate(m cModel, msgs []inference.Message) (string, error) {
	cm, err := newCMessages(msgs)
	if err != nil {
		return "", err
	}
	defer cm.free()
	var out *C.char
	var n C.size_t
	if err := result(C.lmxgo_chat_template(m, cm.arr, C.size_t(cm.n), &out, &n)); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(out))
	return C.GoStringN(out, C.int(n)), nil
}

// LoRA: adapters and training.

type (
	cTrainer = *C.lmx_trainer
	cAdapter = *C.lmx_adapter
)

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
	if err := result(C.lmxgo_train_params_init(&p)); err != nil {
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
	err := withParams(s, func(p *C.lmx_train_params) error { return result(C.lmxgo_lora_param_count(m, p, &n)) })
	return int(n), err
}

func trainerCreate(m cModel, s trainSpec) (cTrainer, error) {
	var t cTrainer
	err := withParams(s, func(p *C.lmx_train_params) error { return result(C.lmxgo_trainer_create(m, p, &t)) })
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
	if err := result(C.lmxgo_trainer_step(t, &r)); err != nil {
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
	err := result(C.lmxgo_trainer_evaluate(t, &l))
	return float32(l), err
}

func trainerSave(t cTrainer, dir string) error {
	c, err := cString(dir, "the adapter folder")
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(c))
	return result(C.lmxgo_trainer_save(t, c))
}

func trainerAdapter(t cTrainer) (cAdapter, error) {
	var a cAdapter
	return a, result(C.lmxgo_trainer_adapter(t, &a))
}

func trainerFree(t cTrainer) error { return result(C.lmxgo_trainer_free(t)) }

func adapterLoad(m cModel, dir string) (cAdapter, float32, error) {
	c, err := cString(dir, "the adapter folder")
	if err != nil {
		return nil, 0, err
	}
	defer C.free(unsafe.Pointer(c))
	var a cAdapter
	if err := result(C.lmxgo_adapter_load(m, c, &a)); err != nil {
		return nil, 0, err
	}
	var s C.float
	if err := result(C.lmxgo_adapter_scale(a, &s)); err != nil {
		C.lmxgo_adapter_free(a)
		return nil, 0, err
	}
	return a, float32(s), nil
}

func adapterFree(a cAdapter) error { return result(C.lmxgo_adapter_free(a)) }

func sessionSetAdapter(s cSession, a cAdapter, scale float32) error {
	return result(C.lmxgo_session_set_adapter(s, a, C.float(scale)))
}
