//! A sparse mixture-of-experts feed-forward block: a router scores every expert for each
//! token and keeps the top k; the chosen experts' gated FFNs run as gathered matrix products
//! over expert weights stacked `[E, out, in]` (dense or MLX-quantized), and their outputs are
//! summed with the router's weights. A dense shared expert may run beside them.
//!
//! The experts are never looped over in Rust: one gathered matmul per projection covers every
//! (token, expert) pair. For many pairs (a prefill) they are first sorted by expert so MLX
//! reads each expert's weights once, then put back in token order.
//!
//! This module must not know model families: which tensors hold the experts is found from
//! the names the spec gives (see [`load`]).

use std::cell::RefCell;

use crate::mlx::{compile, ops, Array, Dtype};
use crate::model::arch::spec::{ExpertAct, FusedGateUp, GroupScore, MlpKind, MoeSpec, Routing, Scoring};
use crate::model::nn::linear::{Linear, Projections};
use crate::model::nn::quant::QuantParams;
use crate::model::weights::WeightStore;
use crate::{Error, Result};

/// Pairs of (token, expert) from which the pairs are sorted by expert before the gathered
/// matmuls. Below it (decoding) the sort and unsort cost more than scattered reads.
pub const SORT_FROM: usize = 64;

/// One linear layer per expert, stacked.
#[derive(Clone)]
pub enum ExpertLinear {
    /// `wt` is [E, in, out] (a transposed view of the stacked [E, out, in] weights).
    Dense { wt: Array },
    /// Packed [E, out, in * bits / 32] weights with [E, out, in / group] scales and biases
    /// (none in MXFP4, whose scales are uint8).
    Quantized { w: Array, scales: Array, biases: Option<Array>, p: QuantParams },
}

impl ExpertLinear {
    /// `x @ W[e].T` for each expert e of `idx`. x: [..., 1, in]; idx broadcasts against x's
    /// batch axes; the result is [batch..., 1, out].
    fn forward(&self, x: &Array, idx: &Array, sorted: bool) -> Result<Array> {
        match self {
            ExpertLinear::Dense { wt } => ops::gather_mm(x, wt, None, Some(idx), sorted),
            ExpertLinear::Quantized { w, scales, biases, p } => ops::gather_qmm(
                x,
                w,
                scales,
                biases.as_ref(),
                None,
                Some(idx),
                true,
                p.group_size,
                p.bits,
                p.mode.as_str(),
                sorted,
            ),
        }
    }

    /// Experts whose outputs are `parts`' outputs side by side (same input), or None when the
    /// parts are stored differently. Evaluated.
    fn concat(parts: &[ExpertLinear]) -> Result<Option<ExpertLinear>> {
        let out = match &parts[0] {
            ExpertLinear::Dense { .. } => {
                let mut wts = Vec::new();
                for part in parts {
                    match part {
                        ExpertLinear::Dense { wt } => wts.push(wt),
                        _ => return Ok(None),
                    }
                }
                ExpertLinear::Dense { wt: ops::concatenate(&wts, 2)? }
            }
            ExpertLinear::Quantized { p, .. } => {
                let (mut ws, mut ss, mut bs) = (Vec::new(), Vec::new(), Vec::new());
                for part in parts {
                    match part {
                        ExpertLinear::Quantized { w, scales, biases, p: pp } if pp == p => {
                            ws.push(w);
                            ss.push(scales);
                            bs.extend(biases);
                        }
                        _ => return Ok(None),
                    }
                }
                ExpertLinear::Quantized {
                    w: ops::concatenate(&ws, 1)?,
                    scales: ops::concatenate(&ss, 1)?,
                    biases: if bs.is_empty() { None } else { Some(ops::concatenate(&bs, 1)?) },
                    p: *p,
                }
            }
        };
        match &out {
            ExpertLinear::Dense { wt } => wt.eval()?,
            ExpertLinear::Quantized { w, scales, biases, .. } => crate::mlx::eval(
                &[Some(w), Some(scales), biases.as_ref()].into_iter().flatten().collect::<Vec<_>>(),
            )?,
        }
        Ok(Some(out))
    }
}

/// The experts' gate and up projections (one matmul where they are stored alike) and down.
#[derive(Clone)]
enum GateUp {
    Fused(ExpertLinear),
    Separate(ExpertLinear, ExpertLinear),
}

/// The gate and up projections' expert biases, stored as [`GateUp`] holds the weights.
#[derive(Clone)]
enum GateUpBias {
    Fused(Array),
    Separate(Array, Array),
}

/// What a router chose for a batch of tokens: per token, `top_k` expert ids and weights.
#[derive(Clone)]
pub struct Choice {
    /// [B, L, k] uint32.
    pub experts: Array,
    /// [B, L, k], in the activations' dtype (float32 from a sigmoid router).
    pub weights: Array,
}

/// The router: a [experts, hidden] linear layer (with a bias where the spec says) and how its
/// scores pick experts.
#[derive(Clone)]
pub struct Router {
    gate: Linear,
    routing: Routing,
    top_k: i32,
    /// [experts] float32, added to the scores for the choice only (DeepSeek-V3).
    correction_bias: Option<Array>,
}

/// The `k` largest entries' indices along the last axis (in no particular order).
fn top_k_indices(a: &Array, k: i32) -> Result<Array> {
    // Partition the negated values so that the first k are the k largest.
    ops::slice_axis(&ops::argpartition(&ops::negative(a)?, k - 1, -1)?, -1, 0, k)
}

impl Router {
    /// A router over `gate`'s logits choosing `top_k` experts; `correction_bias` is required
    /// by (and only used with) [`Routing::Grouped`] with `correction_bias`.
    pub fn new(gate: Linear, routing: Routing, top_k: i32, correction_bias: Option<Array>) -> Result<Router> {
        if matches!(routing, Routing::Grouped { correction_bias: true, .. }) != correction_bias.is_some() {
            return Err(Error::internal("a router with a correction bias needs it, and only it"));
        }
        Ok(Router { gate, routing, top_k, correction_bias })
    }

    /// The experts and weights for each token of `x` [B, L, hidden].
    pub fn route(&self, x: &Array) -> Result<Choice> {
        let logits = self.gate.forward(x)?;
        let k = self.top_k;
        let choice = match self.routing {
            Routing::SoftmaxTopK { renormalize } => {
                let probs = ops::softmax(&logits, -1, true)?;
                let experts = top_k_indices(&probs, k)?;
                let mut weights = ops::take_along_axis(&probs, &experts, -1)?;
                if renormalize {
                    weights = ops::divide(&weights, &ops::sum(&weights, &[-1], true)?)?;
                }
                Choice { experts, weights }
            }
            Routing::Grouped { scoring, groups, keep_groups, group_score, renormalize, scale, .. } => {
                // In float32, as transformers computes its DeepSeek routers.
                let logits = ops::astype(&logits, Dtype::F32)?;
                let scores = match scoring {
                    Scoring::Softmax => ops::softmax(&logits, -1, true)?,
                    Scoring::Sigmoid => ops::sigmoid(&logits)?,
                };
                let mut choice = match &self.correction_bias {
                    Some(b) => ops::add(&scores, b)?,
                    None => scores.clone(),
                };
                if groups > 1 && keep_groups < groups {
                    let sh = choice.shape();
                    let (b, l, e) = (sh[0], sh[1], sh[2]);
                    let grouped = ops::reshape(&choice, &[b, l, groups, e / groups])?;
                    let gs = match group_score {
                        GroupScore::Max => ops::max(&grouped, &[-1], false)?,
                        GroupScore::TopTwoSum => {
                            let top2 = ops::take_along_axis(&grouped, &top_k_indices(&grouped, 2)?, -1)?;
                            ops::sum(&top2, &[-1], false)?
                        }
                    };
                    // Experts outside the kept groups can never be chosen.
                    let kept = top_k_indices(&gs, keep_groups)?;
                    let one = ops::ones(&[b, l, keep_groups], Dtype::F32)?;
                    let mask =
                        ops::put_along_axis(&ops::zeros(&[b, l, groups], Dtype::F32)?, &kept, &one, -1)?;
                    let mask =
                        ops::reshape(&ops::greater(&mask, &Array::scalar_f32(0.0))?, &[b, l, groups, 1])?;
                    let hidden = ops::astype(&Array::scalar_f32(f32::NEG_INFINITY), Dtype::F32)?;
                    choice = ops::reshape(&ops::where_(&mask, &grouped, &hidden)?, &[b, l, e])?;
                }
                let experts = top_k_indices(&choice, k)?;
                let mut weights = ops::take_along_axis(&scores, &experts, -1)?;
                if renormalize {
                    let sum = ops::add(&ops::sum(&weights, &[-1], true)?, &Array::scalar_f32(1e-20))?;
                    weights = ops::divide(&weights, &sum)?;
                }
                if scale != 1.0 {
                    weights = ops::multiply(&weights, &Array::scalar_f32(scale))?;
                }
                Choice { experts, weights }
            }
            Routing::TopKSoftmax => {
                let experts = top_k_indices(&logits, k)?;
                let top = ops::take_along_axis(&logits, &experts, -1)?;
                Choice { experts, weights: ops::softmax(&top, -1, true)? }
            }
        };
        record(&choice);
        Ok(choice)
    }
}

thread_local! {
    static TRACE: RefCell<Option<Vec<Choice>>> = const { RefCell::new(None) };
}

fn record(c: &Choice) {
    TRACE.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push(c.clone());
        }
    });
}

/// Runs `f` and returns what every router it ran on this thread chose, in order (a test
/// hook: routing checked against the reference implementation's). Nothing is recorded
/// outside such a call.
#[doc(hidden)]
pub fn trace_routing<R>(f: impl FnOnce() -> R) -> (R, Vec<Choice>) {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let r = f();
    let v = TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (r, v)
}

/// A dense gated FFN run on every token beside the routed experts, its output optionally
/// scaled by `sigmoid(gate(x))`.
#[derive(Clone)]
struct SharedExpert {
    gate_up: Projections,
    down_proj: Linear,
    gate: Option<Linear>,
}

/// The sparse mixture-of-experts block.
#[derive(Clone)]
pub struct Moe {
    router: Router,
    gate_up: GateUp,
    down: ExpertLinear,
    /// Per-expert output biases, [E, out], where the spec has them: gate and up (as one [E,
    /// 2I] table, gate first, where `gate_up` is fused) and down.
    gate_up_bias: Option<GateUpBias>,
    down_bias: Option<Array>,
    kind: MlpKind,
    shared: Option<SharedExpert>,
    spec: MoeSpec,
}

fn activation(kind: MlpKind) -> fn(&[Array]) -> Result<Vec<Array>> {
    match kind {
        MlpKind::SwiGlu => super::transformer::swiglu,
        MlpKind::GeGluTanh => super::transformer::geglu_tanh,
    }
}

fn act(kind: MlpKind, g: &Array, u: &Array) -> Result<Array> {
    compile::call(activation(kind), &[g, u])?.pop().ok_or_else(|| Error::internal("no activation output"))
}

/// GPT-OSS's clamped SwiGLU (see [`ExpertAct::ClampedSwiGlu`]), in the activations' dtype.
fn clamped_swiglu(g: &Array, u: &Array, alpha: f32, limit: f32) -> Result<Array> {
    let dt = g.dtype()?;
    let c = |v: f32| ops::astype(&Array::scalar_f32(v), dt);
    let g = ops::minimum(g, &c(limit)?)?;
    let u = ops::minimum(&ops::maximum(u, &c(-limit)?)?, &c(limit)?)?;
    let glu = ops::multiply(&g, &ops::sigmoid(&ops::multiply(&g, &c(alpha)?)?)?)?;
    ops::multiply(&ops::add(&u, &c(1.0)?)?, &glu)
}

/// `y` ([idx..., 1, out]) plus each row's expert bias from `bias` [E, out].
fn add_bias(y: &Array, bias: Option<&Array>, idx: &Array) -> Result<Array> {
    let Some(b) = bias else { return Ok(y.clone()) };
    let mut shape = idx.shape();
    shape.push(1);
    shape.push(b.dim(1)?);
    ops::add(y, &ops::reshape(&ops::take(b, idx, 0)?, &shape)?)
}

impl Moe {
    /// The block's output for `x` [B, L, hidden].
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let shape = x.shape();
        let (b, l, h) = (shape[0], shape[1], shape[2]);
        let choice = self.router.route(x)?;
        let k = self.spec.top_k;
        let n = b * l;
        let experts = ops::reshape(&choice.experts, &[n, k])?;
        let pairs = (n * k) as usize;
        let y = if pairs >= SORT_FROM {
            // Sort the (token, expert) pairs by expert: row r of the sorted list is token
            // order[r] / k; `unsort` puts the results back in (token, k) order.
            let flat = ops::reshape(&experts, &[n * k])?;
            let order = ops::argsort(&flat, 0)?;
            let unsort = ops::argsort(&order, 0)?;
            let rows = ops::floor_divide(&order, &ops::astype(&Array::scalar_i32(k), order.dtype()?)?)?;
            let xs = ops::reshape(&ops::take(&ops::reshape(x, &[n, h])?, &rows, 0)?, &[n * k, 1, h])?;
            let idx = ops::take(&flat, &order, 0)?;
            let y = self.experts(&xs, &idx, true)?;
            ops::reshape(&ops::take(&y, &unsort, 0)?, &[n, k, h])?
        } else {
            let xs = ops::reshape(x, &[n, 1, 1, h])?;
            ops::reshape(&self.experts(&xs, &experts, false)?, &[n, k, h])?
        };
        let w = ops::reshape(&ops::astype(&choice.weights, y.dtype()?)?, &[n, k, 1])?;
        let mut out = ops::reshape(&ops::sum(&ops::multiply(&y, &w)?, &[1], false)?, &[b, l, h])?;
        if let Some(s) = &self.shared {
            let gu = s.gate_up.forward(x)?;
            let mut sy = s.down_proj.forward(&act(self.kind, &gu[0], &gu[1])?)?;
            if let Some(g) = &s.gate {
                sy = ops::multiply(&ops::sigmoid(&g.forward(x)?)?, &sy)?;
            }
            out = ops::add(&out, &sy)?;
        }
        Ok(out)
    }

    /// The chosen experts' FFN for rows `x` [..., 1, hidden] and expert ids `idx`.
    fn experts(&self, x: &Array, idx: &Array, sorted: bool) -> Result<Array> {
        let (fused_bias, gate_bias, up_bias) = match &self.gate_up_bias {
            None => (None, None, None),
            Some(GateUpBias::Fused(b)) => (Some(b), None, None),
            Some(GateUpBias::Separate(g, u)) => (None, Some(g), Some(u)),
        };
        let (g, u) = match &self.gate_up {
            GateUp::Fused(gu) => {
                let y = add_bias(&gu.forward(x, idx, sorted)?, fused_bias, idx)?;
                let i = self.spec.intermediate;
                (ops::slice_axis(&y, -1, 0, i)?, ops::slice_axis(&y, -1, i, 2 * i)?)
            }
            GateUp::Separate(g, u) => (
                add_bias(&g.forward(x, idx, sorted)?, gate_bias, idx)?,
                add_bias(&u.forward(x, idx, sorted)?, up_bias, idx)?,
            ),
        };
        let h = match self.spec.act {
            ExpertAct::Mlp => act(self.kind, &g, &u)?,
            ExpertAct::ClampedSwiGlu { alpha, limit } => clamped_swiglu(&g, &u, alpha, limit)?,
        };
        add_bias(&self.down.forward(&h, idx, sorted)?, self.down_bias.as_ref(), idx)
    }
}

/// Loads the block of layer prefix `p` ("model.layers.3.") for `spec`, from whichever layout
/// the checkpoint has, checking every tensor's shape:
/// - mlx-lm's: `{m}.{stacked}.{gate,up,down}_proj.weight` stacked [E, out, in], dense or
///   quantized (with `.scales` and `.biases`), and `.bias` [E, out] where the spec has biases;
/// - transformers 5's stacked one: `{m}.experts.gate_up_proj` and `{m}.experts.down_proj` as
///   the spec's [`FusedGateUp`] says, with `_bias` tensors where the spec has biases (Qwen-MoE
///   as `save_pretrained(save_original_format=False)` writes it; GPT-OSS as `save_pretrained`
///   always does);
/// - one tensor per expert (what `save_pretrained` writes and published checkpoints hold):
///   `{m}.experts.{e}.{gate,up,down}.weight` with the spec's names, stacked here once.
///
/// `m` is the first of the spec's module names whose router `{m}.{router}.weight` exists.
pub fn load(store: &mut WeightStore, p: &str, spec: &MoeSpec, hidden: i32, kind: MlpKind) -> Result<Moe> {
    let m = spec
        .modules
        .iter()
        .map(|m| format!("{p}{m}"))
        .find(|m| store.contains(&format!("{m}.{}.weight", spec.router)))
        .ok_or_else(|| store.missing_tensor(&format!("{p}{}.{}.weight", spec.modules[0], spec.router)))?;
    let (e, i) = (spec.experts, spec.intermediate);
    let correction_bias = match spec.routing {
        Routing::Grouped { correction_bias: true, .. } => {
            let b = store.float(&format!("{m}.{}.e_score_correction_bias", spec.router), &[e])?;
            Some(ops::astype(&b, Dtype::F32)?)
        }
        _ => None,
    };
    let gate = store.linear(&format!("{m}.{}", spec.router), hidden, e, spec.bias)?;
    let router = Router::new(gate, spec.routing, spec.top_k, correction_bias)?;
    let fused = format!("{m}.experts.gate_up_proj");
    let (gate_up, down, gate_up_bias, down_bias) =
        if store.contains(&format!("{m}.{}.gate_proj.weight", spec.stacked)) {
            let sw = |n: &str| format!("{m}.{}.{n}", spec.stacked);
            let g = store.stacked_experts(&sw("gate_proj"), e, hidden, i)?;
            let u = store.stacked_experts(&sw("up_proj"), e, hidden, i)?;
            let d = store.stacked_experts(&sw("down_proj"), e, i, hidden)?;
            let (gu, biases) = if spec.bias {
                let gb = store.float(&sw("gate_proj.bias"), &[e, i])?;
                let ub = store.float(&sw("up_proj.bias"), &[e, i])?;
                let db = store.float(&sw("down_proj.bias"), &[e, hidden])?;
                let gu = fuse(g, u)?;
                let gub = match &gu {
                    GateUp::Fused(_) => {
                        let b = ops::concatenate(&[&gb, &ub], 1)?;
                        b.eval()?;
                        GateUpBias::Fused(b)
                    }
                    GateUp::Separate(..) => GateUpBias::Separate(gb, ub),
                };
                (gu, Some((gub, db)))
            } else {
                (fuse(g, u)?, None)
            };
            let (gub, db) = biases.map_or((None, None), |(a, b)| (Some(a), Some(b)));
            (gu, d, gub, db)
        } else if store.contains(&fused) {
            let down = format!("{m}.experts.down_proj");
            let (gu, d) = match spec.fused_layout {
                FusedGateUp::OutInHalves => (
                    store.stacked_dense_experts(&fused, e, hidden, 2 * i)?,
                    store.stacked_dense_experts(&down, e, i, hidden)?,
                ),
                FusedGateUp::InOutInterleaved => {
                    let gu = store.stacked_dense_experts_in_out(&fused, e, hidden, 2 * i)?;
                    let d = store.stacked_dense_experts_in_out(&down, e, i, hidden)?;
                    (ExpertLinear::Dense { wt: halves(&gu, e, hidden, i)? }, ExpertLinear::Dense { wt: d })
                }
            };
            let (gub, db) = if spec.bias {
                let b = store.float(&format!("{fused}_bias"), &[e, 2 * i])?;
                let b = match spec.fused_layout {
                    FusedGateUp::OutInHalves => b,
                    FusedGateUp::InOutInterleaved => {
                        ops::reshape(&halves(&ops::reshape(&b, &[e, 1, 2 * i])?, e, 1, i)?, &[e, 2 * i])?
                    }
                };
                b.eval()?;
                (Some(GateUpBias::Fused(b)), Some(store.float(&format!("{down}_bias"), &[e, hidden])?))
            } else {
                (None, None)
            };
            (GateUp::Fused(gu), d, gub, db)
        } else {
            if spec.bias {
                return Err(store.missing_tensor(&format!("{m}.{}.gate_proj.weight", spec.stacked)));
            }
            let [gn, un, dn] = spec.expert_names;
            let names = |n: &str| (0..e).map(|x| format!("{m}.experts.{x}.{n}")).collect::<Vec<_>>();
            let g = store.per_expert(&names(gn), hidden, i)?;
            let u = store.per_expert(&names(un), hidden, i)?;
            let d = store.per_expert(&names(dn), i, hidden)?;
            (fuse(g, u)?, d, None, None)
        };
    let shared = match &spec.shared {
        Some(sh) => {
            let (s, si) = (format!("{m}.{}", sh.module), sh.intermediate);
            Some(SharedExpert {
                gate_up: store.projections(
                    &["gate_proj", "up_proj"].map(|n| format!("{s}.{n}")),
                    hidden,
                    &[si, si],
                    false,
                )?,
                down_proj: store.linear(&format!("{s}.down_proj"), si, hidden, false)?,
                gate: sh.gate.map(|g| store.linear(&format!("{m}.{g}"), hidden, 1, false)).transpose()?,
            })
        }
        None => None,
    };
    Ok(Moe { router, gate_up, down, gate_up_bias, down_bias, kind, shared, spec: spec.clone() })
}

/// [E, rows, 2I] with gate and up columns alternating (gate at even columns) as [E, rows, 2I]
/// with the I gate columns first, evaluated.
fn halves(a: &Array, e: i32, rows: i32, i: i32) -> Result<Array> {
    let pairs = ops::reshape(a, &[e, rows, i, 2])?;
    let gate = ops::reshape(&ops::slice_axis(&pairs, -1, 0, 1)?, &[e, rows, i])?;
    let up = ops::reshape(&ops::slice_axis(&pairs, -1, 1, 2)?, &[e, rows, i])?;
    let out = ops::concatenate(&[&gate, &up], 2)?;
    out.eval()?;
    Ok(out)
}

fn fuse(g: ExpertLinear, u: ExpertLinear) -> Result<GateUp> {
    Ok(match ExpertLinear::concat(&[g.clone(), u.clone()])? {
        Some(gu) => GateUp::Fused(gu),
        None => GateUp::Separate(g, u),
    })
}
