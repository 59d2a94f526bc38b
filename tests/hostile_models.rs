//! Hostile model folders (issue 10): absurd or nonsensical config numbers, files that are not
//! regular files, symlink loops, invalid UTF-8, NaN weights. Each is a clear error naming the
//! field or file, in bounded time; none crashes, hangs or exhausts the process.

mod common;

use std::path::Path;

use common::*;
use lmx::engine::{GenerateParams, Session};
use lmx::mlx::{io, ops, Array};
use lmx::model::{LoadParams, Model};
use lmx::ErrorKind;

fn load(dir: &Path) -> lmx::Result<Model> {
    Model::load(dir, &LoadParams::default())
}

/// A copy of `case` whose config.json has `edit` applied.
fn with_config(case: &str, tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> TempDir {
    let t = copy_fixture(case, tag);
    let path = t.0.join("config.json");
    let mut v = json(&path);
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    t
}

fn config_error(case: &str, edit: impl FnOnce(&mut serde_json::Value), want: &[&str]) {
    let t = with_config(case, "cfg", edit);
    let e = load(&t.0).err().unwrap_or_else(|| panic!("{case}: loaded ({want:?})"));
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    for w in want {
        assert!(e.message.contains(w), "{e} (want {w:?})");
    }
}

#[test]
fn absurd_sizes_are_refused_before_anything_is_sized_from_them() {
    config_error(
        "qwen3",
        |v| v["num_hidden_layers"] = 2147483647.into(),
        &["num_hidden_layers", "2147483647"],
    );
    config_error("qwen3", |v| v["num_hidden_layers"] = 100000000.into(), &["num_hidden_layers"]);
    config_error("llama_rope3", |v| v["head_dim"] = 1073741824.into(), &["head_dim", "1073741824"]);
    config_error("qwen3", |v| v["vocab_size"] = 2000000000.into(), &["vocab_size"]);
    config_error("qwen3", |v| v["intermediate_size"] = (i32::MAX as i64 + 5).into(), &["intermediate_size"]);
    config_error("qwen3", |v| v["head_dim"] = 33.into(), &["head_dim 33", "even"]);
    config_error("qwen3", |v| v["max_position_embeddings"] = 2000000000.into(), &["max_position_embeddings"]);
}

#[test]
fn nonsense_numbers_are_refused() {
    config_error("qwen3", |v| v["rope_theta"] = 0.into(), &["rope_theta", "> 0"]);
    config_error("qwen3", |v| v["rope_theta"] = (-10000.0).into(), &["rope_theta"]);
    config_error("qwen3", |v| v["rms_norm_eps"] = (-1e-6).into(), &["rms_norm_eps"]);
    config_error("llama_rope3", |v| v["rope_scaling"]["factor"] = 0.into(), &["factor"]);
    config_error(
        "llama_rope3",
        |v| v["rope_scaling"]["low_freq_factor"] = (-1.0).into(),
        &["low_freq_factor"],
    );
    config_error(
        "qwen3",
        |v| v["eos_token_id"] = 4000000000u64.into(),
        &["eos_token_id 4000000000", "vocabulary"],
    );
}

#[test]
fn longrope_and_nope_lists_are_checked_against_the_model() {
    // phi3's fixture rotates 12 of 16 head dimensions: 6 factors per list.
    config_error(
        "phi3",
        |v| v["rope_scaling"]["short_factor"].as_array_mut().unwrap().pop().map(drop).unwrap(),
        &["config.json", "short_factor", "5 entries, expected 6"],
    );
    config_error(
        "phi3",
        |v| v["rope_scaling"]["long_factor"][2] = (-1.0).into(),
        &["config.json", "long_factor", "-1"],
    );
    config_error(
        "phi3",
        |v| v["rope_scaling"].as_object_mut().unwrap().remove("long_factor").map(drop).unwrap(),
        &["long_factor", "missing"],
    );
    config_error(
        "phi3",
        |v| v["partial_rotary_factor"] = 0.01.into(),
        &["config.json", "partial_rotary_factor"],
    );
    config_error("phi3", |v| v["partial_rotary_factor"] = 1.5.into(), &["partial_rotary_factor"]);
    config_error(
        "smollm3",
        |v| v["no_rope_layers"] = serde_json::json!([1, 0, 1]),
        &["config.json", "no_rope_layers", "3 entries for 4 layers"],
    );
    config_error(
        "smollm3",
        |v| v["no_rope_layers"] = serde_json::json!([1, 0, 2, 1]),
        &["no_rope_layers", "2 is not 0 or 1"],
    );
    config_error(
        "smollm3",
        |v| v["no_rope_layers"] = serde_json::json!("all"),
        &["no_rope_layers", "expected a list"],
    );
}

#[test]
fn an_unknown_layer_type_is_named_plainly() {
    let t = with_config("gemma3", "layer", |v| {
        let n = v["num_hidden_layers"].as_u64().unwrap() as usize;
        let mut types = vec![serde_json::Value::from("full_attention"); n];
        types[1] = "chunked".into();
        v["layer_types"] = types.into();
    });
    let e = load(&t.0).err().unwrap();
    assert!(e.message.contains("layer type \"chunked\""), "{e}");
    assert!(!e.message.contains("Some("), "{e}");
}

#[test]
fn files_that_are_not_regular_files_are_refused_without_blocking() {
    // A FIFO named config.json or tokenizer.json: opening one for reading would wait for a
    // writer for ever.
    for name in ["config.json", "tokenizer.json"] {
        let t = copy_fixture("qwen3", "fifo");
        let p = t.0.join(name);
        std::fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = load(&t.0).err().unwrap();
        assert!(e.message.contains("not a regular file") && e.message.contains(name), "{e}");
    }
    // config.json linked to /dev/zero: never read until memory runs out.
    let t = copy_fixture("qwen3", "zero");
    std::fs::remove_file(t.0.join("config.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", t.0.join("config.json")).unwrap();
    let e = load(&t.0).err().unwrap();
    assert!(e.message.contains("not a regular file"), "{e}");
    // A folder where a file should be.
    let t = copy_fixture("qwen3", "dir");
    std::fs::remove_file(t.0.join("tokenizer.json")).unwrap();
    std::fs::create_dir(t.0.join("tokenizer.json")).unwrap();
    let e = load(&t.0).err().unwrap();
    assert!(e.message.contains("a folder"), "{e}");
}

/// Loads `dir` on a thread of its own; a load still running after a minute has hung (a
/// guard against a test that never ends, not a measure of speed).
fn load_or_hang(dir: &Path) -> lmx::Result<Model> {
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(load(&d));
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("loading {} hung", dir.display()))
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn files_the_loader_does_not_use_are_never_opened() {
    let clean = load(&fixtures().join("qwen3")).unwrap().fingerprint().to_string();
    // qwen3's template is in tokenizer_config.json: a chat_template.jinja beside it is not the
    // model's template, so neither the loader nor the fingerprint opens it, whatever it is.
    for (tag, make) in [
        ("jinja-fifo", mkfifo as fn(&Path)),
        ("jinja-zero", |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
    ] {
        let t = copy_fixture("qwen3", tag);
        make(&t.0.join("chat_template.jinja"));
        let m = load_or_hang(&t.0).unwrap();
        assert_eq!(m.fingerprint(), clean, "{tag}: a file the model does not use changed the fingerprint");
    }
    // With an index naming the weight files, a stray *.safetensors beside them is not a weight
    // file: a FIFO or a link to /dev/zero there is never opened.
    let weights = lmx::mlx::io::read_header(&fixtures().join("qwen3").join("model.safetensors")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> =
        weights.tensors.keys().map(|k| (k.clone(), "model.safetensors".into())).collect();
    for (tag, make) in [
        ("stray-fifo", mkfifo as fn(&Path)),
        ("stray-zero", |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
    ] {
        let t = copy_fixture("qwen3", tag);
        let index = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(t.0.join("model.safetensors.index.json"), index.to_string()).unwrap();
        make(&t.0.join("stray.safetensors"));
        let m = load_or_hang(&t.0).unwrap();
        let session = std::sync::Arc::new(m);
        let p = GenerateParams { max_tokens: 2, ignore_eos: true, ..Default::default() };
        let ids = session.encode("hello", true).unwrap();
        Session::new(session).unwrap().generate(&ids, &p, |_| true).unwrap();
    }
    // The model's own template as a FIFO or a link to /dev/zero (no template elsewhere): a
    // clear error naming it, never a wait or a read without end.
    for (tag, make) in [
        ("own-fifo", mkfifo as fn(&Path)),
        ("own-zero", |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
    ] {
        let t = copy_fixture("qwen3", tag);
        let cfg_path = t.0.join("tokenizer_config.json");
        let mut cfg = json(&cfg_path);
        cfg.as_object_mut().unwrap().remove("chat_template");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        make(&t.0.join("chat_template.jinja"));
        let e = load_or_hang(&t.0).err().unwrap();
        assert!(
            e.message.contains("chat_template.jinja") && e.message.contains("not a regular file"),
            "{tag}: {e}"
        );
    }
}

#[test]
fn a_symlink_loop_and_invalid_utf8_are_named_as_such() {
    let t = copy_fixture("qwen3", "loop");
    std::fs::remove_file(t.0.join("tokenizer.json")).unwrap();
    std::os::unix::fs::symlink("tokenizer.json", t.0.join("tokenizer.json")).unwrap();
    let e = load(&t.0).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    assert!(e.message.contains("symlink loop"), "{e}");

    let t = copy_fixture("qwen3", "utf8");
    let mut bytes = std::fs::read(t.0.join("config.json")).unwrap();
    bytes.insert(1, 0xff);
    std::fs::write(t.0.join("config.json"), bytes).unwrap();
    let e = load(&t.0).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    assert!(e.message.contains("not valid UTF-8"), "{e}");
}

#[test]
fn a_file_over_its_size_cap_is_refused() {
    let t = copy_fixture("qwen3", "big");
    let f = std::fs::File::create(t.0.join("config.json")).unwrap();
    f.set_len(lmx::files::JSON_MAX + 1).unwrap(); // sparse: no disk used
    let e = load(&t.0).err().unwrap();
    assert!(e.message.contains("16 MiB"), "{e}");
}

#[test]
fn nan_weights_are_an_error_not_a_token() {
    let t = copy_fixture("qwen3", "nan");
    let path = t.0.join("model.safetensors");
    let loaded = io::load_safetensors(&path).unwrap();
    let mut v: Vec<(String, Array)> = loaded.tensors.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, a) in v.iter_mut() {
        if name == "model.norm.weight" {
            *a = ops::multiply(a, &Array::scalar_f32(f32::NAN)).unwrap();
        }
    }
    let refs: Vec<(&str, &Array)> = v.iter().map(|(n, a)| (n.as_str(), a)).collect();
    io::save_safetensors(&path, &refs, &[("format", "pt")]).unwrap();
    let m = std::sync::Arc::new(load(&t.0).unwrap());
    let prompt = m.encode("Hello", true).unwrap();
    let params = GenerateParams { max_tokens: 4, ..Default::default() };
    let e = Session::new(m.clone()).unwrap().generate(&prompt, &params, |_| true).unwrap_err();
    assert!(e.message.contains("NaN"), "{e}");
    let e = lmx::engine::classify(&m, std::slice::from_ref(&prompt), &params, false).unwrap_err();
    assert!(e.message.contains("NaN"), "{e}");
    let e = lmx::engine::batch_generate(&m, std::slice::from_ref(&prompt), &params).unwrap_err();
    assert!(e.message.contains("NaN"), "{e}");
}

#[test]
fn a_logit_bias_that_bans_every_token_is_refused() {
    let m = std::sync::Arc::new(load(&fixtures().join("qwen3")).unwrap());
    let mut params = GenerateParams { max_tokens: 2, ..Default::default() };
    params.sampler.logit_bias = (0..m.vocab() as u32).map(|i| (i, f32::NEG_INFINITY)).collect();
    let prompt = m.encode("Hello", true).unwrap();
    let e = Session::new(m.clone()).unwrap().generate(&prompt, &params, |_| true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("bans every token"), "{e}");
    // Banning all but one leaves that one.
    params.sampler.logit_bias.retain(|(i, _)| *i != 7);
    let out = Session::new(m).unwrap().generate(&prompt, &params, |_| true).unwrap();
    assert!(out.tokens.iter().all(|&t| t == 7), "{:?}", out.tokens);
}

#[test]
fn adapters_of_nan_or_infinite_values_are_refused_at_load_and_fuse() {
    let m = load(&fixtures().join("qwen3")).unwrap();
    let cfg = lmx::model::LoraConfig {
        rank: 2,
        scale: 1.0,
        dropout: 0.0,
        num_layers: 1,
        targets: vec![lmx::model::Target::Q, lmx::model::Target::V],
    };
    let good = lmx::model::LoraWeights::init(cfg, m.spec(), &lmx::mlx::random::key(3).unwrap()).unwrap();
    for (tag, bad) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        // The last array (layer 1's v_proj B) gets one non-finite value.
        let mut arrays = good.arrays();
        let last = arrays.pop().unwrap();
        let mut v = last.to_f32_vec().unwrap();
        v[1] = bad;
        arrays.push(Array::from_slice(&v, &last.shape()).unwrap());
        let w = good.with_arrays(&arrays).unwrap();
        let e = m.fused(&w, 1.0).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Format, "{tag}: {e}");
        assert!(e.message.contains("model.layers.1.self_attn.v_proj.lora_b"), "{tag}: {e}");
        // Saved and loaded back: refused at load, naming file and tensor.
        let t = TempDir::new(&format!("adapter-{tag}"));
        w.save(&t.0).unwrap();
        let e = m.load_adapter(&t.0).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Format, "{tag}: {e}");
        assert!(
            e.message.contains("adapters.safetensors") && e.message.contains("v_proj.lora_b"),
            "{tag}: {e}"
        );
    }
    // The finite one loads and fuses.
    let t = TempDir::new("adapter-ok");
    good.save(&t.0).unwrap();
    m.fused(&m.load_adapter(&t.0).unwrap(), 1.0).unwrap();
}

#[test]
fn every_train_params_field_is_checked_wherever_it_is_passed() {
    use lmx::ffi::lora::{lmx_lora_param_count, lmx_train_params, lmx_train_params_init};
    use lmx::ffi::model::{lmx_model_free, lmx_model_load};
    let path = std::ffi::CString::new(fixtures().join("qwen3").to_str().unwrap()).unwrap();
    let mut model = std::ptr::null_mut();
    assert_eq!(lmx_model_load(path.as_ptr(), std::ptr::null(), &mut model), lmx::ffi::lmx_status::LMX_OK);
    let mut p: lmx_train_params = unsafe { std::mem::zeroed() };
    assert_eq!(lmx_train_params_init(&mut p, std::mem::size_of_val(&p)), lmx::ffi::lmx_status::LMX_OK);
    let mut n = 0u64;
    // NULL params: the defaults, as documented.
    assert_eq!(lmx_lora_param_count(model, std::ptr::null(), &mut n), lmx::ffi::lmx_status::LMX_OK);
    let mut n2 = 0u64;
    assert_eq!(lmx_lora_param_count(model, &p, &mut n2), lmx::ffi::lmx_status::LMX_OK);
    assert!(n > 0 && n == n2);
    // A flag of 255 is refused here as lmx_trainer_create refuses it.
    for field in ["mask_prompt", "grad_checkpoint"] {
        let mut q = p;
        match field {
            "mask_prompt" => q.mask_prompt = 255,
            _ => q.grad_checkpoint = 255,
        }
        assert_eq!(
            lmx_lora_param_count(model, &q, &mut n),
            lmx::ffi::lmx_status::LMX_STATUS_INVALID_ARGUMENT,
            "{field} = 255 was accepted"
        );
        let msg = unsafe { std::ffi::CStr::from_ptr(lmx::ffi::error::lmx_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains(field) && msg.contains("255"), "{msg}");
    }
    assert_eq!(lmx_model_free(model), lmx::ffi::lmx_status::LMX_OK);
}
