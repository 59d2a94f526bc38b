//! SmolLM3: Llama's block, with some layers left without rotary embeddings (NoPE).
//! `no_rope_layers[i]` is 1 where layer i rotates and 0 where it does not (the name says the
//! opposite of what the entries mean; transformers and mlx-lm read it this way); without the
//! list, every `no_rope_layer_interval`-th layer (default 4: layers 3, 7, ...) is NoPE.

use super::{check_activation, pre_norm_spec, Common, PreNorm};
use crate::model::arch::spec::ModelSpec;
use crate::model::config::Config;
use crate::{Error, Result};

pub fn spec(cfg: &Config) -> Result<ModelSpec> {
    let c = Common::read(cfg, 1e-6)?;
    check_activation(cfg, "hidden_act", &["silu"])?;
    let nope = nope_layers(cfg, c.layers)?;
    let window = super::bounded(cfg, "sliding_window", super::MAX_POSITIONS)?;
    let sliding = if cfg.bool("use_sliding_window")?.unwrap_or(false) && window.is_some() {
        // SmolLM3Config's default: the NoPE layers slide.
        super::layer_types(cfg, c.layers)?.unwrap_or_else(|| nope.clone())
    } else {
        vec![false; c.layers as usize]
    };
    let bias = cfg.bool("attention_bias")?.unwrap_or(false);
    pre_norm_spec(
        cfg,
        &c,
        PreNorm {
            arch: "smollm3",
            qkv_bias: bias,
            o_bias: bias,
            mlp_bias: cfg.bool("mlp_bias")?.unwrap_or(false),
            sliding,
            window,
            nope,
            tie_default: true,
            ..Default::default()
        },
    )
}

/// Per layer: true where it has no rotary embedding.
fn nope_layers(cfg: &Config, layers: i32) -> Result<Vec<bool>> {
    let path = cfg.path.display();
    let Some(v) = cfg.get("no_rope_layers") else {
        let every = super::bounded(cfg, "no_rope_layer_interval", super::MAX_LAYERS)?.unwrap_or(4);
        return Ok((0..layers).map(|i| (i + 1) % every == 0).collect());
    };
    let list =
        v.as_array().ok_or_else(|| Error::format(format!("{path}: no_rope_layers: expected a list")))?;
    if list.len() != layers as usize {
        return Err(Error::format(format!(
            "{path}: no_rope_layers has {} entries for {layers} layers",
            list.len()
        )));
    }
    list.iter()
        .map(|x| match x.as_i64() {
            Some(1) => Ok(false),
            Some(0) => Ok(true),
            _ => Err(Error::format(format!("{path}: no_rope_layers: {x} is not 0 or 1"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::model::config::Config;

    fn spec(extra: &str) -> crate::Result<crate::model::arch::spec::ModelSpec> {
        let text = format!(
            r#"{{"model_type": "smollm3", "hidden_size": 64, "num_hidden_layers": 8,
                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100{extra}}}"#
        );
        super::spec(&Config::from_text(std::path::Path::new("config.json"), &text)?)
    }

    fn rotates(s: &crate::model::arch::spec::ModelSpec) -> Vec<bool> {
        s.layers.iter().map(|l| l.attn.rope.is_some()).collect()
    }

    #[test]
    fn nope_layers_follow_the_interval_when_no_list_is_given() {
        // transformers' default: every 4th layer (3, 7) has no rope.
        let s = spec("").unwrap();
        assert_eq!(rotates(&s), [true, true, true, false, true, true, true, false]);
        let s = spec(r#", "no_rope_layer_interval": 3"#).unwrap();
        assert_eq!(rotates(&s), [true, true, false, true, true, false, true, true]);
        // Tied embeddings unless the config says otherwise, as SmolLM3Config has it.
        assert!(s.tie_embeddings);
    }

    #[test]
    fn sliding_windows_need_use_sliding_window_and_fall_on_the_nope_layers() {
        let off = spec(r#", "sliding_window": 16"#).unwrap();
        assert!(off.layers.iter().all(|l| l.attn.window.is_none()));
        let on = spec(r#", "sliding_window": 16, "use_sliding_window": true"#).unwrap();
        let windows: Vec<Option<i32>> = on.layers.iter().map(|l| l.attn.window).collect();
        let nope: Vec<Option<i32>> = rotates(&on).iter().map(|&r| (!r).then_some(16)).collect();
        assert_eq!(windows, nope);
    }
}
