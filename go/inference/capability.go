package inference

import (
	"maps"
	"slices"
)

// CapabilityGroup is the layer a capability belongs to.
type CapabilityGroup string

const (
	CapabilityGroupModel    CapabilityGroup = "model"    // inference and model features
	CapabilityGroupRuntime  CapabilityGroup = "runtime"  // loading, caches, state, devices
	CapabilityGroupTraining CapabilityGroup = "training" // fine-tuning and adapter updates
	CapabilityGroupProbe    CapabilityGroup = "probe"    // telemetry and model-state probes
)

// CapabilityStatus says whether a capability can be used today.
type CapabilityStatus string

const (
	CapabilityStatusSupported    CapabilityStatus = "supported"
	CapabilityStatusExperimental CapabilityStatus = "experimental"
	CapabilityStatusPlanned      CapabilityStatus = "planned"
	CapabilityStatusUnsupported  CapabilityStatus = "unsupported"
)

// CapabilityID names a feature the same way for every backend.
type CapabilityID string

const (
	CapabilityModelLoad          CapabilityID = "model.load"
	CapabilityGenerate           CapabilityID = "generate"
	CapabilityChat               CapabilityID = "chat"
	CapabilityClassify           CapabilityID = "classify"
	CapabilityBatchGenerate      CapabilityID = "batch.generate"
	CapabilityTokenizer          CapabilityID = "tokenizer"
	CapabilityChatTemplate       CapabilityID = "chat.template"
	CapabilityLoRAInference      CapabilityID = "lora.inference"
	CapabilityLoRATraining       CapabilityID = "lora.training"
	CapabilityStateBundle        CapabilityID = "state.bundle"
	CapabilityKVSnapshot         CapabilityID = "kv.snapshot"
	CapabilityPromptCache        CapabilityID = "prompt.cache"
	CapabilityKVCachePlanning    CapabilityID = "kv.cache.planning"
	CapabilityMemoryPlanning     CapabilityID = "memory.planning"
	CapabilityModelFit           CapabilityID = "model.fit"
	CapabilityModelSlice         CapabilityID = "model.slice"
	CapabilityRuntimeDiscovery   CapabilityID = "runtime.discovery"
	CapabilityAutoTuning         CapabilityID = "runtime.autotune"
	CapabilityModelReplace       CapabilityID = "model.replace"
	CapabilityDifferentialLoad   CapabilityID = "model.differential_load"
	CapabilitySplitInference     CapabilityID = "model.split_inference"
	CapabilityBenchmark          CapabilityID = "benchmark"
	CapabilityEvaluation         CapabilityID = "evaluation"
	CapabilityDistillation       CapabilityID = "distillation"
	CapabilityGRPO               CapabilityID = "grpo"
	CapabilityQuantization       CapabilityID = "quantization"
	CapabilityModelMerge         CapabilityID = "model.merge"
	CapabilityProbeEvents        CapabilityID = "probe.events"
	CapabilityAttentionProbe     CapabilityID = "probe.attention"
	CapabilityLogitProbe         CapabilityID = "probe.logits"
	CapabilityLQL                CapabilityID = "query.lql"
	CapabilityVIndex             CapabilityID = "query.vindex"
	CapabilityResponsesAPI       CapabilityID = "responses.api"
	CapabilityAnthropicMessages  CapabilityID = "anthropic.messages"
	CapabilityOllamaCompat       CapabilityID = "ollama.compat"
	CapabilityEmbeddings         CapabilityID = "embeddings"
	CapabilityRerank             CapabilityID = "rerank"
	CapabilityScheduler          CapabilityID = "scheduler"
	CapabilityRequestCancel      CapabilityID = "request.cancel"
	CapabilityCacheBlocks        CapabilityID = "cache.blocks"
	CapabilityCacheDisk          CapabilityID = "cache.disk"
	CapabilityCacheWarm          CapabilityID = "cache.warm"
	CapabilityToolParse          CapabilityID = "tool.parse"
	CapabilityReasoningParse     CapabilityID = "reasoning.parse"
	CapabilityStructuredOutput   CapabilityID = "structured.output"
	CapabilitySpeculativeDecode  CapabilityID = "speculative.decode"
	CapabilityPromptLookupDecode CapabilityID = "prompt.lookup.decode"
	CapabilityMoERouting         CapabilityID = "moe.routing"
	CapabilityMoELazyExperts     CapabilityID = "moe.lazy_experts"
	CapabilityJANGTQ             CapabilityID = "jangtq"
	CapabilityCodebookVQ         CapabilityID = "codebook.vq"
	CapabilityAgentMemory        CapabilityID = "agent.memory"
	CapabilityStateWake          CapabilityID = "state.wake"
	CapabilityStateSleep         CapabilityID = "state.sleep"
	CapabilityStateFork          CapabilityID = "state.fork"
)

// Capability is one feature of a backend or model and whether it can be used.
type Capability struct {
	ID     CapabilityID      `json:"id"`
	Group  CapabilityGroup   `json:"group,omitempty"`
	Status CapabilityStatus  `json:"status"`
	Detail string            `json:"detail,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// NewCapability is a capability entry.
func NewCapability(id CapabilityID, group CapabilityGroup, status CapabilityStatus, detail string) Capability {
	return Capability{ID: id, Group: group, Status: status, Detail: detail}
}

// SupportedCapability is the entry of a feature that works.
func SupportedCapability(id CapabilityID, group CapabilityGroup) Capability {
	return NewCapability(id, group, CapabilityStatusSupported, "")
}

// ExperimentalCapability is the entry of a feature that works but may still change.
func ExperimentalCapability(id CapabilityID, group CapabilityGroup, detail string) Capability {
	return NewCapability(id, group, CapabilityStatusExperimental, detail)
}

// PlannedCapability is the entry of a feature that is announced but cannot be used yet.
func PlannedCapability(id CapabilityID, group CapabilityGroup, detail string) Capability {
	return NewCapability(id, group, CapabilityStatusPlanned, detail)
}

// UnsupportedCapability is the entry of a feature that is not there.
func UnsupportedCapability(id CapabilityID, group CapabilityGroup, detail string) Capability {
	return NewCapability(id, group, CapabilityStatusUnsupported, detail)
}

// Usable says whether callers can use the capability now: supported or experimental.
func (c Capability) Usable() bool {
	return c.Status == CapabilityStatusSupported || c.Status == CapabilityStatusExperimental
}

// CapabilityReport is what a backend or a loaded model says about itself: what it runs,
// and a Capability entry per feature.
type CapabilityReport struct {
	Runtime       RuntimeIdentity   `json:"runtime"`
	Model         ModelIdentity     `json:"model"`
	Tokenizer     TokenizerIdentity `json:"tokenizer"`
	Adapter       AdapterIdentity   `json:"adapter"`
	Available     bool              `json:"available"`
	Architectures []string          `json:"architectures,omitempty"`
	Quantizations []string          `json:"quantizations,omitempty"`
	CacheModes    []string          `json:"cache_modes,omitempty"`
	Capabilities  []Capability      `json:"capabilities,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
}

// Capability is the report's first entry for id (its Labels copied).
func (r CapabilityReport) Capability(id CapabilityID) (Capability, bool) {
	i := slices.IndexFunc(r.Capabilities, func(c Capability) bool { return c.ID == id })
	if i < 0 {
		return Capability{}, false
	}
	c := r.Capabilities[i]
	c.Labels = maps.Clone(c.Labels)
	return c, true
}

// Supports says whether the report has a usable entry for id.
func (r CapabilityReport) Supports(id CapabilityID) bool {
	c, ok := r.Capability(id)
	return ok && c.Usable()
}

// SupportedCapabilityIDs are the ids of the usable entries, sorted, each once.
func (r CapabilityReport) SupportedCapabilityIDs() []CapabilityID {
	var ids []CapabilityID
	for _, c := range r.Capabilities {
		if c.Usable() {
			ids = append(ids, c.ID)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// CapabilityIDs are the ids of every entry, sorted, each once.
func (r CapabilityReport) CapabilityIDs() []CapabilityID {
	var ids []CapabilityID
	for _, c := range r.Capabilities {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// CapabilityReporter is a backend or model that reports its capabilities.
type CapabilityReporter interface {
	Capabilities() CapabilityReport
}

// TokenizerModel is a model whose tokenizer and chat template can be used directly.
type TokenizerModel interface {
	// Encode gives the token ids of text, special tokens added as the model adds them.
	Encode(text string) []int32
	// Decode gives the text of ids.
	Decode(ids []int32) string
	// ApplyChatTemplate renders messages with the model's chat template, ready for the
	// assistant's answer.
	ApplyChatTemplate(messages []Message) (string, error)
}

// ModelIdentity describes a model independently of its backend.
type ModelIdentity struct {
	ID            string            `json:"id,omitempty"`
	Path          string            `json:"path,omitempty"`
	Architecture  string            `json:"architecture,omitempty"`
	Revision      string            `json:"revision,omitempty"`
	Hash          string            `json:"hash,omitempty"`
	QuantBits     int               `json:"quant_bits,omitempty"`
	QuantGroup    int               `json:"quant_group,omitempty"`
	QuantType     string            `json:"quant_type,omitempty"`
	ContextLength int               `json:"context_length,omitempty"`
	NumLayers     int               `json:"num_layers,omitempty"`
	HiddenSize    int               `json:"hidden_size,omitempty"`
	VocabSize     int               `json:"vocab_size,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
}

// TokenizerIdentity describes a model's tokenizer and chat template.
type TokenizerIdentity struct {
	Kind         string            `json:"kind,omitempty"`
	Path         string            `json:"path,omitempty"`
	Hash         string            `json:"hash,omitempty"`
	ChatTemplate string            `json:"chat_template,omitempty"`
	BOSID        int32             `json:"bos_id,omitempty"`
	EOSID        int32             `json:"eos_id,omitempty"`
	PADID        int32             `json:"pad_id,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// AdapterIdentity describes a LoRA adapter.
type AdapterIdentity struct {
	Path          string            `json:"path,omitempty"`
	Hash          string            `json:"hash,omitempty"`
	Format        string            `json:"format,omitempty"`
	Rank          int               `json:"rank,omitempty"`
	Alpha         float32           `json:"alpha,omitempty"`
	TargetKeys    []string          `json:"target_keys,omitempty"`
	BaseModelHash string            `json:"base_model_hash,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
}

// RuntimeIdentity describes the runtime and device a model runs on.
type RuntimeIdentity struct {
	Backend       string            `json:"backend,omitempty"`
	Device        string            `json:"device,omitempty"`
	Version       string            `json:"version,omitempty"`
	CacheMode     string            `json:"cache_mode,omitempty"`
	NativeRuntime bool              `json:"native_runtime,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
}
