//! LoRA fine-tuning on MLX's autodiff, through the same transformer that generates.
//!
//! One step: a batch (see [`super::train_data`]) through [`Transformer::forward_train`] with
//! the adapter, next-token cross-entropy over the unmasked positions (mlx-lm's `default_loss`:
//! targets are the next tokens, positions from the row's loss start through its length
//! count), gradients of the adapter arrays only, accumulated over `grad_accumulation` batches,
//! clipped by global norm, and an AdamW update (MLX's: no bias correction, decay applied to the
//! weights before the Adam step) at the scheduled learning rate. Adapter weights and optimizer
//! state stay float32 whatever the model computes in.

use std::sync::Arc;
use std::time::Instant;

use super::train_data::{make_batch, Batch, Batches, Example};
use crate::mlx::device::{pooled_stream, StreamLease};
use crate::mlx::{self, autodiff, compute_lock, memory, ops, random, with_stream, Array, Dtype};
use crate::model::nn::lora::{Lora, LoraConfig, LoraWeights};
use crate::model::Model;
use crate::{Error, Result};

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainParams {
    pub lora: LoraConfig,
    /// Peak learning rate.
    pub learning_rate: f32,
    /// Steps of linear warm-up from 0 to the peak (0 = none).
    pub warmup_steps: u32,
    /// Cosine decay from the peak to `min_learning_rate` over the steps after warm-up, ending
    /// at `cosine_steps` (0 = constant rate after warm-up).
    pub cosine_steps: u32,
    pub min_learning_rate: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Clip the gradient's global norm to this (0 = no clipping).
    pub grad_clip: f32,
    /// Batches whose gradients are averaged into one update.
    pub grad_accumulation: u32,
    /// Recompute each layer's activations in the backward pass (less memory).
    pub grad_checkpoint: bool,
    pub batch_size: u32,
    pub max_seq_length: u32,
    pub seed: u64,
}

impl Default for TrainParams {
    /// mlx-lm's defaults where it has them: rank 8, scale 20, the last 16 layers, every
    /// projection, batch 4, learning rate 1e-5, sequences up to 2048, no weight decay.
    fn default() -> Self {
        TrainParams {
            lora: LoraConfig {
                rank: 8,
                scale: 20.0,
                dropout: 0.0,
                num_layers: 16,
                targets: crate::model::nn::lora::Target::ALL.to_vec(),
            },
            learning_rate: 1e-5,
            warmup_steps: 0,
            cosine_steps: 0,
            min_learning_rate: 0.0,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: 0.0,
            grad_accumulation: 1,
            grad_checkpoint: false,
            batch_size: 4,
            max_seq_length: 2048,
            seed: 0,
        }
    }
}

impl TrainParams {
    pub fn validate(&self, layers: usize) -> Result<()> {
        self.lora.validate(layers)?;
        let finite = |name: &str, v: f32| -> Result<()> {
            if v.is_finite() {
                Ok(())
            } else {
                Err(Error::invalid(format!("{name} {v} is not a finite number")))
            }
        };
        finite("learning rate", self.learning_rate)?;
        finite("min learning rate", self.min_learning_rate)?;
        finite("weight decay", self.weight_decay)?;
        finite("gradient clip", self.grad_clip)?;
        finite("eps", self.eps)?;
        if self.learning_rate <= 0.0 {
            return Err(Error::invalid(format!("learning rate {} must be positive", self.learning_rate)));
        }
        if self.min_learning_rate < 0.0 || self.weight_decay < 0.0 || self.grad_clip < 0.0 || self.eps <= 0.0
        {
            return Err(Error::invalid(
                "min learning rate, weight decay and gradient clip must be >= 0, eps > 0",
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(Error::invalid(format!("betas ({}, {}) must be in [0, 1)", self.beta1, self.beta2)));
        }
        if self.grad_accumulation == 0 || self.batch_size == 0 {
            return Err(Error::invalid("gradient accumulation and batch size must be at least 1"));
        }
        if self.max_seq_length < 2 {
            return Err(Error::invalid(format!(
                "max sequence length {} must be at least 2",
                self.max_seq_length
            )));
        }
        Ok(())
    }

    /// The learning rate of update number `step` (from 0): linear warm-up, then cosine decay.
    pub fn learning_rate_at(&self, step: u64) -> f32 {
        let w = self.warmup_steps as u64;
        if step < w {
            return self.learning_rate * step as f32 / w as f32;
        }
        if self.cosine_steps == 0 {
            return self.learning_rate;
        }
        let t = ((step - w) as f32 / self.cosine_steps as f32).min(1.0);
        let cos = 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
        self.min_learning_rate + (self.learning_rate - self.min_learning_rate) * cos
    }
}

/// What one step did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepReport {
    /// Updates applied so far (a step that only accumulates leaves it unchanged).
    pub step: u64,
    /// Batches seen so far.
    pub batches: u64,
    /// Mean loss over the batch's unmasked tokens.
    pub loss: f32,
    /// Tokens the loss covered.
    pub tokens: u64,
    pub tokens_per_second: f64,
    pub learning_rate: f32,
    /// The global norm of the update's gradient before clipping (0 on a step that only
    /// accumulated).
    pub grad_norm: f32,
    pub peak_memory_bytes: u64,
    /// Whether this step applied an update.
    pub updated: bool,
}

/// A LoRA training run on one model.
pub struct Trainer {
    model: Arc<Model>,
    params: TrainParams,
    weights: LoraWeights,
    m: Vec<Array>,
    v: Vec<Array>,
    accumulated: Option<Vec<Array>>,
    accumulated_batches: u32,
    step: u64,
    batches_seen: u64,
    data: Vec<Example>,
    batches: Batches,
    stream: StreamLease,
}

/// The sum of every element of `a`.
fn sum_all(a: &Array) -> Result<Array> {
    ops::sum(&ops::reshape(a, &[-1])?, &[0], false)
}

/// Sum of squares of every array, as a float32 scalar.
fn global_norm(grads: &[Array]) -> Result<Array> {
    let mut total = Array::scalar_f32(0.0);
    for g in grads {
        total = ops::add(&total, &sum_all(&ops::square(&ops::astype(g, Dtype::F32)?)?)?)?;
    }
    ops::sqrt(&total)
}

impl Trainer {
    /// A trainer on `model` over `data`, starting from `init` (an adapter to continue) or
    /// fresh weights made from the seed.
    pub fn new(
        model: Arc<Model>,
        params: TrainParams,
        data: Vec<Example>,
        init: Option<LoraWeights>,
    ) -> Result<Trainer> {
        let spec = model.spec();
        params.validate(spec.layers.len())?;
        let stream = pooled_stream(model.device())?;
        let batches =
            Batches::new(&data, params.batch_size as usize, params.max_seq_length as usize, params.seed)?;
        let weights = with_stream(&stream, || -> Result<LoraWeights> {
            let _lock = compute_lock();
            match init {
                Some(w) => {
                    // Trained in float32 whatever the file held.
                    let arrays =
                        w.arrays().iter().map(|a| ops::astype(a, Dtype::F32)).collect::<Result<Vec<_>>>()?;
                    w.with_arrays(&arrays)
                }
                None => LoraWeights::init(params.lora.clone(), spec, &random::key(params.seed)?),
            }
        })?;
        let zeros = |w: &LoraWeights| -> Result<Vec<Array>> {
            w.arrays().iter().map(|a| ops::zeros(&a.shape(), Dtype::F32)).collect()
        };
        let (m, v) = with_stream(&stream, || Ok::<_, Error>((zeros(&weights)?, zeros(&weights)?)))?;
        Ok(Trainer {
            model,
            params,
            weights,
            m,
            v,
            accumulated: None,
            accumulated_batches: 0,
            step: 0,
            batches_seen: 0,
            data,
            batches,
            stream,
        })
    }

    pub fn weights(&self) -> &LoraWeights {
        &self.weights
    }

    /// The training rows.
    pub fn data(&self) -> &[Example] {
        &self.data
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The loss (mean over unmasked tokens) of `batch` and the number of tokens, as lazy
    /// arrays, computed with adapter arrays `arrays`.
    fn loss(&self, arrays: &[Array], batch: &Batch, dropout: bool) -> Result<(Array, Array)> {
        let (b, t) = (batch.rows as i32, batch.width as i32);
        let all = Array::from_slice(&batch.tokens, &[b, t])?;
        let inputs = ops::slice_axis(&all, 1, 0, t - 1)?;
        let targets = ops::slice_axis(&all, 1, 1, t)?;
        let weights = self.weights.with_arrays(arrays)?;
        let lora = Lora {
            weights: &weights,
            scale: weights.config().scale,
            dropout: if dropout { weights.config().dropout } else { 0.0 },
            seed: self.params.seed.wrapping_mul(0x9e37_79b9).wrapping_add(self.batches_seen),
        };
        let logits =
            self.model.transformer().forward_train(&inputs, Some(&lora), self.params.grad_checkpoint)?;
        // Cross-entropy in the logits' dtype (as mlx-lm computes it; float32 logits of the
        // whole batch would take twice the memory of bfloat16 ones), summed in float32.
        let lse = ops::logsumexp(&logits, &[-1], false)?;
        let picked = ops::take_along_axis(&logits, &ops::reshape(&targets, &[b, t - 1, 1])?, -1)?;
        let ce = ops::astype(&ops::subtract(&lse, &ops::reshape(&picked, &[b, t - 1])?)?, Dtype::F32)?;
        let starts: Vec<i32> = batch.spans.iter().map(|s| s.0).collect();
        let ends: Vec<i32> = batch.spans.iter().map(|s| s.1).collect();
        let steps = ops::reshape(&ops::arange(1.0, t as f64, 1.0, Dtype::I32)?, &[1, t - 1])?;
        let mask = ops::logical_and(
            &ops::greater_equal(&steps, &Array::from_slice(&starts, &[b, 1])?)?,
            &ops::less_equal(&steps, &Array::from_slice(&ends, &[b, 1])?)?,
        )?;
        let mask = ops::astype(&mask, Dtype::F32)?;
        let ntoks = sum_all(&mask)?;
        let loss = ops::divide(&sum_all(&ops::multiply(&ce, &mask)?)?, &ntoks)?;
        Ok((loss, ntoks))
    }

    /// The loss, token count and adapter gradients of `batch`, lazy. Call under the stream
    /// and the compute lock.
    fn lazy_gradients(&self, batch: &Batch) -> Result<(Array, Array, Vec<Array>)> {
        let ntoks = std::sync::Mutex::new(None);
        let (loss, grads) = autodiff::value_and_grad(
            |p| {
                let (l, n) = self.loss(p, batch, true)?;
                *ntoks.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
                Ok(l)
            },
            &self.weights.arrays(),
        )?;
        let n = ntoks
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or_else(|| Error::internal("no token count"))?;
        Ok((loss, ops::stop_gradient(&n)?, grads))
    }

    /// The loss and adapter gradients of `batch` (evaluated).
    pub fn gradients(&self, batch: &Batch) -> Result<(f32, u64, Vec<Array>)> {
        with_stream(&self.stream, || {
            let _lock = compute_lock();
            let (loss, n, grads) = self.lazy_gradients(batch)?;
            mlx::eval(&std::iter::once(&loss).chain([&n]).chain(grads.iter()).collect::<Vec<_>>())?;
            Ok((loss.item::<f32>()?, n.item::<f32>()? as u64, grads))
        })
    }

    /// One batch: gradients, accumulated; an update every `grad_accumulation` batches. The
    /// batch's loss, its gradients and the update are one graph, evaluated once.
    pub fn step(&mut self) -> Result<StepReport> {
        let start = Instant::now();
        let batch = self.batches.next(&self.data);
        let update_due = self.accumulated_batches + 1 >= self.params.grad_accumulation;
        let lr = self.params.learning_rate_at(self.step);
        type Moments = (Vec<Array>, Vec<Array>, Vec<Array>);
        let (loss, tokens, norm, acc, update): (f32, u64, f32, Option<Vec<Array>>, Option<Moments>) =
            with_stream(&self.stream, || {
                let _lock = compute_lock();
                let (loss, n, grads) = self.lazy_gradients(&batch)?;
                let acc = match &self.accumulated {
                    None => grads,
                    Some(prev) => {
                        prev.iter().zip(&grads).map(|(a, g)| ops::add(a, g)).collect::<Result<Vec<_>>>()?
                    }
                };
                if update_due {
                    let (p, m, v, norm) = self.lazy_update(&acc, lr)?;
                    mlx::eval(
                        &[&loss, &n, &norm].into_iter().chain(&p).chain(&m).chain(&v).collect::<Vec<_>>(),
                    )?;
                    Ok::<_, Error>((
                        loss.item::<f32>()?,
                        n.item::<f32>()? as u64,
                        norm.item::<f32>()?,
                        None,
                        Some((p, m, v)),
                    ))
                } else {
                    mlx::eval(&[&loss, &n].into_iter().chain(&acc).collect::<Vec<_>>())?;
                    Ok((loss.item::<f32>()?, n.item::<f32>()? as u64, 0.0, Some(acc), None))
                }
            })?;
        if !loss.is_finite() {
            // Nothing computed from this batch is kept.
            return Err(Error::invalid(format!(
                "the loss is {loss} at batch {}: training diverged (lower the learning rate?)",
                self.batches_seen + 1
            )));
        }
        self.batches_seen += 1;
        let mut report = StepReport {
            step: self.step,
            batches: self.batches_seen,
            loss,
            tokens,
            learning_rate: lr,
            ..Default::default()
        };
        match update {
            Some((p, m, v)) => {
                self.weights = self.weights.with_arrays(&p)?;
                self.m = m;
                self.v = v;
                self.accumulated = None;
                self.accumulated_batches = 0;
                self.step += 1;
                report.step = self.step;
                report.grad_norm = norm;
                report.updated = true;
            }
            None => {
                self.accumulated = acc;
                self.accumulated_batches += 1;
            }
        }
        report.tokens_per_second = tokens as f64 / start.elapsed().as_secs_f64().max(1e-9);
        report.peak_memory_bytes = memory::peak_memory()?;
        Ok(report)
    }

    /// The AdamW update from summed gradients `acc` at learning rate `lr`, lazy: new weights,
    /// first and second moments, and the gradient's global norm before clipping.
    #[allow(clippy::type_complexity)]
    fn lazy_update(&self, acc: &[Array], lr: f32) -> Result<(Vec<Array>, Vec<Array>, Vec<Array>, Array)> {
        let p = &self.params;
        let c = |v: f32| Array::scalar_f32(v);
        let n = p.grad_accumulation as f32;
        let grads = if n > 1.0 {
            acc.iter().map(|g| ops::divide(g, &c(n))).collect::<Result<Vec<_>>>()?
        } else {
            acc.to_vec()
        };
        let norm = global_norm(&grads)?;
        // Clipping as MLX's clip_grad_norm: scale by min(clip / (norm + 1e-6), 1).
        let factor = if p.grad_clip > 0.0 {
            Some(ops::minimum(&ops::divide(&c(p.grad_clip), &ops::add(&norm, &c(1e-6))?)?, &c(1.0))?)
        } else {
            None
        };
        let (mut new_p, mut new_m, mut new_v) = (Vec::new(), Vec::new(), Vec::new());
        for (((w, g), m), v) in self.weights.arrays().iter().zip(&grads).zip(&self.m).zip(&self.v) {
            let g = match &factor {
                Some(f) => ops::multiply(g, f)?,
                None => g.clone(),
            };
            let m2 = ops::add(&ops::multiply(m, &c(p.beta1))?, &ops::multiply(&g, &c(1.0 - p.beta1))?)?;
            let v2 = ops::add(
                &ops::multiply(v, &c(p.beta2))?,
                &ops::multiply(&ops::square(&g)?, &c(1.0 - p.beta2))?,
            )?;
            let decayed = if p.weight_decay > 0.0 {
                ops::multiply(w, &c(1.0 - lr * p.weight_decay))?
            } else {
                w.clone()
            };
            let stepv = ops::divide(&m2, &ops::add(&ops::sqrt(&v2)?, &c(p.eps))?)?;
            new_p.push(ops::subtract(&decayed, &ops::multiply(&stepv, &c(lr))?)?);
            new_m.push(m2);
            new_v.push(v2);
        }
        Ok((new_p, new_m, new_v, norm))
    }

    /// The mean loss per token over `data` (all of it, in batches of the training batch
    /// size; a final partial batch included), without dropout.
    pub fn evaluate(&self, data: &[Example]) -> Result<f32> {
        if data.is_empty() {
            return Err(Error::invalid("no validation rows"));
        }
        let (mut sum, mut toks) = (0f64, 0f64);
        for chunk in data.chunks(self.params.batch_size as usize) {
            let batch = make_batch(chunk.iter(), self.params.max_seq_length as usize);
            let (l, n) = with_stream(&self.stream, || -> Result<(f32, f32)> {
                let _lock = compute_lock();
                let (l, n) = self.loss(&self.weights.arrays(), &batch, false)?;
                mlx::eval(&[&l, &n])?;
                Ok((l.item::<f32>()?, n.item::<f32>()?))
            })?;
            sum += l as f64 * n as f64;
            toks += n as f64;
        }
        Ok((sum / toks) as f32)
    }

    /// Writes the adapter in mlx-lm's format.
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        with_stream(&self.stream, || self.weights.save(dir))
    }
}
