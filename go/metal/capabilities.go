package metal

import (
	"liblmx/go/inference"
	"liblmx/go/lmx"
)

var (
	_ inference.CapabilityReporter = (*Model)(nil)
	_ inference.TokenizerModel     = (*Model)(nil)
)

// capability is one line of the table below.
type capability struct {
	id     inference.CapabilityID
	group  inference.CapabilityGroup
	status inference.CapabilityStatus
	detail string
}

const (
	yes      = inference.CapabilityStatusSupported
	no       = inference.CapabilityStatusUnsupported
	gModel   = inference.CapabilityGroupModel
	gRuntime = inference.CapabilityGroupRuntime
	gTrain   = inference.CapabilityGroupTraining
	gProbe   = inference.CapabilityGroupProbe
)

// capabilities is what a Model can do, one line per capability id of the contract. A change
// that adds a feature flips its line (and adds its check to TestCapabilitiesAreTruthful).
var capabilities = []capability{
	{inference.CapabilityModelLoad, gRuntime, yes, "model folders (safetensors) and GGUF files"},
	{inference.CapabilityGenerate, gModel, yes, ""},
	{inference.CapabilityChat, gModel, yes, "the model's chat template"},
	{inference.CapabilityClassify, gModel, yes, ""},
	{inference.CapabilityBatchGenerate, gModel, yes, "one forward pass per step for all prompts"},
	{inference.CapabilityTokenizer, gModel, yes, "inference.TokenizerModel: Encode, Decode"},
	{inference.CapabilityChatTemplate, gModel, yes, "inference.TokenizerModel: ApplyChatTemplate"},
	{inference.CapabilityLoRAInference, gModel, yes, "inference.WithAdapterPath at load; metal.WithAdapter per Generate or Chat"},
	{inference.CapabilityLoRATraining, gTrain, yes, "inference.LoadTrainable, ApplyLoRA, then metal.LoRA.Train"},
	{inference.CapabilityStateBundle, gRuntime, no, "no CaptureState/RestoreState; see kv.snapshot"},
	{inference.CapabilityKVSnapshot, gRuntime, yes, "metal.Session.Save and Model.LoadSession (mlx-lm's prompt-cache layout)"},
	{inference.CapabilityPromptCache, gRuntime, yes, "each slot and session reuses the cached prefix of the last prompt; inference.WithDisablePromptReuse turns it off per call"},
	{inference.CapabilityKVCachePlanning, gRuntime, no, ""},
	{inference.CapabilityMemoryPlanning, gRuntime, no, ""},
	{inference.CapabilityModelFit, gRuntime, no, ""},
	{inference.CapabilityModelSlice, gRuntime, no, ""},
	{inference.CapabilityRuntimeDiscovery, gRuntime, no, ""},
	{inference.CapabilityAutoTuning, gRuntime, no, ""},
	{inference.CapabilityModelReplace, gRuntime, no, ""},
	{inference.CapabilityDifferentialLoad, gRuntime, no, ""},
	{inference.CapabilitySplitInference, gRuntime, no, "MLX does not split a model between devices"},
	{inference.CapabilityBenchmark, gRuntime, no, "Go benchmarks in the package's tests only"},
	{inference.CapabilityEvaluation, gRuntime, no, ""},
	{inference.CapabilityDistillation, gTrain, no, ""},
	{inference.CapabilityGRPO, gTrain, no, ""},
	{inference.CapabilityQuantization, gModel, no, "loads quantized checkpoints; does not quantize"},
	{inference.CapabilityModelMerge, gModel, no, ""},
	{inference.CapabilityProbeEvents, gProbe, no, ""},
	{inference.CapabilityAttentionProbe, gProbe, no, ""},
	{inference.CapabilityLogitProbe, gProbe, no, "Classify with inference.WithLogits gives the last position's logits"},
	{inference.CapabilityLQL, gModel, no, ""},
	{inference.CapabilityVIndex, gModel, no, ""},
	{inference.CapabilityResponsesAPI, gRuntime, no, ""},
	{inference.CapabilityAnthropicMessages, gRuntime, no, ""},
	{inference.CapabilityOllamaCompat, gRuntime, no, ""},
	{inference.CapabilityEmbeddings, gModel, no, ""},
	{inference.CapabilityRerank, gModel, no, ""},
	{inference.CapabilityScheduler, gRuntime, no, "ParallelSlots sessions take turns step by step"},
	{inference.CapabilityRequestCancel, gRuntime, no, "no request ids: cancel a call through its context"},
	{inference.CapabilityCacheBlocks, gRuntime, no, ""},
	{inference.CapabilityCacheDisk, gRuntime, no, ""},
	{inference.CapabilityCacheWarm, gRuntime, no, ""},
	{inference.CapabilityToolParse, gModel, yes, "inference.ToolParser (the model's own format); inference.WithTools, WithToolChoice; metal.WithReplySink gets the parsed calls"},
	{inference.CapabilityReasoningParse, gModel, yes, "inference.ReasoningParser; inference.WithEnableThinking, WithThinkingBudget split it off the stream into metal.Reply.Reasoning"},
	{inference.CapabilityStructuredOutput, gModel, yes, "inference.WithJSONSchema, WithJSONObject, WithRegex, WithGrammar (Lark), WithChoices: one per call, on llguidance"},
	{inference.CapabilitySpeculativeDecode, gModel, no, ""},
	{inference.CapabilityPromptLookupDecode, gModel, no, ""},
	{inference.CapabilityMoERouting, gModel, no, ""},
	{inference.CapabilityMoELazyExperts, gModel, no, ""},
	{inference.CapabilityJANGTQ, gModel, no, ""},
	{inference.CapabilityCodebookVQ, gModel, no, ""},
	{inference.CapabilityAgentMemory, gRuntime, no, ""},
	{inference.CapabilityStateWake, gRuntime, no, ""},
	{inference.CapabilityStateSleep, gRuntime, no, ""},
	{inference.CapabilityStateFork, gRuntime, yes, "metal.Session.Fork shares the cache without copying it"},
}

// Capabilities reports what the model is, what it runs on and what it can do: one entry per
// capability id of the contract. A model loaded with WithAdapterPath reports classify and
// batch.generate unsupported (they run on the base weights and refuse); after Close,
// Available is false.
func (m *Model) Capabilities() inference.CapabilityReport {
	d := m.desc
	r := inference.CapabilityReport{
		Runtime: inference.RuntimeIdentity{
			Backend:       Name,
			Device:        string(d.Backend),
			Version:       lmx.Version(),
			CacheMode:     CacheModeNative,
			NativeRuntime: true,
		},
		Model: modelIdentity(m.path, d, map[string]string{"format": d.Format, "dtype": d.DType}),
		Tokenizer: inference.TokenizerIdentity{
			Kind:   d.Tokenizer,
			Labels: map[string]string{"chat_template_source": d.ChatTemplate},
		},
		Available:  !m.st.isClosed(),
		CacheModes: []string{CacheModeNative},
	}
	if m.adapter != nil {
		r.Adapter = inference.AdapterIdentity{Path: m.adapterPath, Format: "mlx-lm"}
	}
	for _, c := range capabilities {
		e := inference.NewCapability(c.id, c.group, c.status, c.detail)
		if m.adapter != nil && (c.id == inference.CapabilityClassify || c.id == inference.CapabilityBatchGenerate) {
			e.Status, e.Detail = no, "the model was loaded with an adapter (WithAdapterPath); this runs on the base weights"
		}
		r.Capabilities = append(r.Capabilities, e)
	}
	return r
}

// modelIdentity is the contract's description of the model at path described by d; labels
// add to the model_type label.
func modelIdentity(path string, d Description, labels map[string]string) inference.ModelIdentity {
	all := map[string]string{"model_type": d.ModelType}
	for k, v := range labels {
		all[k] = v
	}
	return inference.ModelIdentity{
		Path:          path,
		Architecture:  d.Architecture,
		QuantBits:     d.QuantBits,
		QuantGroup:    d.QuantGroup,
		ContextLength: d.ContextLength,
		NumLayers:     d.NumLayers,
		HiddenSize:    d.HiddenSize,
		VocabSize:     d.VocabSize,
		Labels:        all,
	}
}
