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

/// Multi-head latent attention (DeepSeek-V2/V3): keys and values come from one compressed
/// latent per token (`kv_lora_rank` wide) through `kv_b_proj`, beside a `qk_rope` wide rotated
/// key shared by every head. The cache holds the latent and the rotated key, not the heads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latent {
    /// None: queries come from `q_proj`; else through `q_a_proj` (this wide),
    /// `q_a_layernorm` and `q_b_proj`.
    pub q_lora_rank: Option<i32>,
    pub kv_lora_rank: i32,
    /// Per head: the query/key dimensions without rope, with rope, and the value dimension.
    pub qk_nope: i32,
    pub qk_rope: i32,
    pub v_head_dim: i32,
    /// Rope on interleaved pairs (x0, x1), (x2, x3)... (DeepSeek's layout) rather than on
    /// halves.
    pub interleaved: bool,
    /// Multiplies the rotated query and key dimensions (YaRN's attention factor, which
    /// belongs to the rope dimensions only).
    pub rope_gain: f32,
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
    /// Multi-head latent attention; then `head_dim` is the query/key head width
    /// (`qk_nope + qk_rope`), `n_kv_heads` 1 (the cache's), and `qkv_bias` is
    /// `attention_bias` (on `q_a_proj` and `kv_a_proj_with_mqa`).
    pub latent: Option<Latent>,
}

impl AttentionSpec {
    /// What the KV cache holds per position: (heads, key width, value width). Latent
    /// attention stores its latent as the keys and its rotated key as the values, as mlx-lm
    /// and transformers cache them.
    pub fn cache_dims(&self) -> (i32, i32, i32) {
        match &self.latent {
            Some(l) => (1, l.kv_lora_rank, l.qk_rope),
            None => (self.n_kv_heads, self.head_dim, self.head_dim),
        }
    }
}

/// How a router turns its scores into the experts a token uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Routing {
    /// Softmax over every expert's logit, the top k by probability; with `renormalize`, the
    /// k weights are divided by their sum (`norm_topk_prob`), else they are the softmax's.
    SoftmaxTopK { renormalize: bool },
    /// DeepSeek's: scores by `scoring`; for the choice only, a per-expert correction bias
    /// (`e_score_correction_bias`) is added where `correction_bias`; the experts are split
    /// into `groups` equal groups, the `keep_groups` best groups by `group_score` are kept, and
    /// the top k experts among them are chosen. Their weights are the uncorrected scores,
    /// divided by their sum where `renormalize`, times `scale` (`routed_scaling_factor`).
    Grouped {
        scoring: Scoring,
        correction_bias: bool,
        groups: i32,
        keep_groups: i32,
        group_score: GroupScore,
        renormalize: bool,
        scale: f32,
    },
    /// The top k by logit, their weights a softmax over those k logits only (GPT-OSS).
    TopKSoftmax,
}

/// How router logits become expert scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    Softmax,
    Sigmoid,
}

/// How a group of experts is scored for group-limited routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupScore {
    /// The best expert's score (DeepSeek-V2).
    Max,
    /// The sum of the two best experts' scores (DeepSeek-V3).
    TopTwoSum,
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
