//! The data a transformer is assembled from. An architecture adapter fills these in; the
//! transformer never looks at `model_type`.

use crate::model::nn::rope::Rope;

/// How an RMSNorm applies its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormStyle {
    /// `x * w` (Llama, Qwen, Mistral).
    Weight,
    /// `x * (1 + w)` (Gemma).
    OnePlusWeight,
}

/// The gated feed-forward kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(silu(gate(x)) * up(x))`.
    SwiGlu,
    /// `down(gelu_tanh(gate(x)) * up(x))`.
    GeGluTanh,
}

/// Where a block's RMSNorms sit around its two sublayers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormPlacement {
    /// `x + attn(norm(x))`, then `h + mlp(norm(h))` (Llama, Qwen, Phi-3).
    #[default]
    Pre,
    /// Gemma's sandwich: each sublayer's input and output normed (four norms).
    Sandwich,
    /// OLMo 2: `x + norm(attn(x))`, then `h + norm(mlp(h))`; no norm on a sublayer's input.
    Post,
}

/// RMSNorm of queries and keys before rope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    /// Over each head's head_dim values (Qwen3, Gemma 3): weights [head_dim].
    PerHead,
    /// Over the whole projection, heads * head_dim values, before the split into heads
    /// (OLMo 2): weights [n_heads * head_dim] and [n_kv_heads * head_dim].
    FullWidth,
}

#[derive(Clone, Debug)]
pub struct AttentionSpec {
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub head_dim: i32,
    pub qk_norm: Option<QkNorm>,
    /// Sliding window (the query sees itself and window-1 earlier tokens); None = global.
    pub window: Option<i32>,
    /// None: the layer has no positional encoding (SmolLM3's NoPE layers).
    pub rope: Option<Rope>,
    /// Multiplies q·k before the softmax.
    pub scale: f32,
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// A learned logit per query head (`self_attn.sinks`, [n_heads]) that joins every
    /// softmax as a key with no value (GPT-OSS).
    pub sinks: bool,
}

/// How a router turns its scores into the experts a token uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Routing {
    /// Softmax over every expert's logit, the top k by probability; with `renormalize`, the
    /// k weights are divided by their sum (`norm_topk_prob`), else they are the softmax's.
    SoftmaxTopK { renormalize: bool },
    /// DeepSeek-V3's: sigmoid scores; the choice adds the router's `e_score_correction_bias`
    /// and keeps only experts of the `top_groups` of `groups` equal groups whose two best
    /// scores sum highest; the weights are the chosen experts' sigmoid scores (without the
    /// bias), divided by their sum with `renormalize`, times `scaling`.
    SigmoidGroupedTopK { groups: i32, top_groups: i32, renormalize: bool, scaling: f32 },
    /// The top k by logit, their weights a softmax over those k logits only (GPT-OSS).
    TopKSoftmax,
}

/// The experts' activation where it is not the dense MLP's kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExpertAct {
    /// The layer's [`MlpKind`].
    Mlp,
    /// GPT-OSS's clamped SwiGLU: the gate clamped above at `limit`, up to ±`limit`, then
    /// `(up + 1) * gate * sigmoid(alpha * gate)`.
    ClampedSwiGlu { alpha: f32, limit: f32 },
}

/// How a checkpoint's fused `experts.gate_up_proj` tensor is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedGateUp {
    /// [E, 2I, hidden], the gate's rows first (transformers' Qwen-MoE and Mixtral).
    OutInHalves,
    /// [E, hidden, 2I], gate and up columns alternating (gate at even columns), with
    /// `gate_up_proj_bias` [E, 2I] alike and `down_proj` [E, I, hidden] (transformers' GPT-OSS).
    InOutInterleaved,
}

/// A sparse mixture-of-experts feed-forward block: a router picks `top_k` of `experts` gated
/// FFNs (the dense MLP's kind, of width `intermediate`) per token and sums their outputs
/// weighted by its scores; optionally a dense shared expert runs on every token too.
#[derive(Clone, Debug)]
pub struct MoeSpec {
    pub experts: i32,
    pub top_k: i32,
    pub intermediate: i32,
    pub routing: Routing,
    /// A dense expert run on every token beside the routed ones, if any.
    pub shared: Option<SharedExpertSpec>,
    /// The block's module names to look for, first found wins ("mlp", or Mixtral's
    /// "block_sparse_moe" beside "mlp").
    pub modules: &'static [&'static str],
    /// Per-expert tensor names in older checkpoints: gate, up and down projections
    /// (`gate_proj`, `up_proj`, `down_proj`, or Mixtral's `w1`, `w3`, `w2`).
    pub expert_names: [&'static str; 3],
    /// The router's module name within the block ("gate", or GPT-OSS's "router").
    pub router: &'static str,
    /// mlx-lm's module holding the stacked experts ("switch_mlp", or GPT-OSS's "experts").
    pub stacked: &'static str,
    pub fused_layout: FusedGateUp,
    /// The router and every expert projection have biases.
    pub bias: bool,
    pub act: ExpertAct,
}

/// A mixture-of-experts block's shared expert: a gated FFN of the block's MLP kind.
#[derive(Clone, Debug)]
pub struct SharedExpertSpec {
    pub intermediate: i32,
    /// Its module name inside the block ("shared_expert"; DeepSeek: "shared_experts").
    pub module: &'static str,
    /// A [1, hidden] linear layer of that name inside the block scales the shared expert's
    /// output by sigmoid(gate(x)) (Qwen2-MoE's "shared_expert_gate"); None: unscaled.
    pub gate: Option<&'static str>,
}

#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub attn: AttentionSpec,
    pub mlp: MlpKind,
    pub mlp_bias: bool,
    pub intermediate: i32,
    /// When set, the layer's feed-forward block is this mixture of experts instead of the
    /// dense MLP (whose `mlp` kind its experts share).
    pub moe: Option<MoeSpec>,
    pub norms: NormPlacement,
}

#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The `model_type` the spec came from.
    pub arch: String,
    pub hidden: i32,
    pub vocab: i32,
    pub norm_eps: f32,
    pub norm_style: NormStyle,
    /// Multiplies the embeddings (Gemma: sqrt(hidden), rounded through the weight dtype).
    pub embed_scale: Option<f64>,
    pub tie_embeddings: bool,
    pub final_logit_softcap: Option<f32>,
    pub max_position: Option<i32>,
    pub layers: Vec<LayerSpec>,
}
