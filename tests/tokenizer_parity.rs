//! Tokenizers and chat templates against Hugging Face transformers' (references recorded in
//! tests/fixtures/*/tokenizer_reference.json), and the streaming decoder.

mod common;

use common::*;
use lmx::model::{LoadParams, Message, Model, StreamDecoder};

fn models() -> Vec<(String, Model, serde_json::Value)> {
    cases()
        .into_iter()
        .filter(|c| fixtures().join(c).join("tokenizer_reference.json").exists())
        .map(|c| {
            let dir = fixtures().join(&c);
            let m = Model::load(&dir, &LoadParams::default()).unwrap_or_else(|e| panic!("{c}: {e}"));
            let r = json(&dir.join("tokenizer_reference.json"));
            (c, m, r)
        })
        .collect()
}

#[test]
fn encode_and_decode_match_transformers() {
    for (case, m, r) in models() {
        for e in r["encode"].as_array().unwrap() {
            let text = e["text"].as_str().unwrap();
            assert_eq!(
                m.tokenizer().encode(text, true).unwrap(),
                ids(&e["ids_with_special"]),
                "{case}: {text:?} with special tokens"
            );
            assert_eq!(
                m.tokenizer().encode(text, false).unwrap(),
                ids(&e["ids_plain"]),
                "{case}: {text:?} plain"
            );
        }
        for d in r["decode"].as_array().unwrap() {
            let skip = d["skip_special"].as_bool().unwrap();
            assert_eq!(
                m.tokenizer().decode(&ids(&d["ids"]), skip).unwrap(),
                d["text"].as_str().unwrap(),
                "{case}: decode"
            );
        }
    }
}

#[test]
fn chat_templates_render_as_transformers_does() {
    for (case, m, r) in models() {
        for c in r["chat"].as_array().unwrap() {
            let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
            let add = c["add_generation_prompt"].as_bool().unwrap();
            let extra = c["extra"].as_object().cloned().unwrap_or_default();
            let text = m
                .chat_template()
                .render(&messages, add, None, &extra, m.tokenizer().bos_text(), m.tokenizer().eos_text())
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(text, c["text"].as_str().unwrap(), "{case}: rendered chat");
            assert_eq!(m.tokenizer().encode(&text, false).unwrap(), ids(&c["ids"]), "{case}: chat ids");
            // Encoding the rendered chat with special tokens must not double the BOS it starts with.
            if let Some(bos) = m.tokenizer().bos_id() {
                let with = m.tokenizer().encode(&text, true).unwrap();
                assert!(!(with.len() > 1 && with[0] == bos && with[1] == bos), "{case}: doubled BOS");
            }
        }
    }
}

#[test]
fn the_stream_decoder_never_splits_a_character() {
    for (case, m, _) in models() {
        let text = "café ☕ 日本 — naïve";
        let ids = m.tokenizer().encode(text, false).unwrap();
        let mut dec = StreamDecoder::new(true);
        let mut out = String::new();
        let mut pieces = 0;
        for &id in &ids {
            if let Some(p) = dec.push(m.tokenizer(), id).unwrap() {
                assert!(!p.contains('\u{FFFD}'), "{case}: broken character in piece {p:?}");
                out.push_str(&p);
                pieces += 1;
            }
        }
        if let Some(p) = dec.flush(m.tokenizer()).unwrap() {
            out.push_str(&p);
        }
        assert_eq!(out, m.tokenizer().decode(&ids, true).unwrap(), "{case}");
        assert!(pieces > 1, "{case}: text came out in {pieces} piece(s)");
        // Several byte-level tokens make up the CJK characters: some pushes emit nothing.
        assert!(pieces < ids.len(), "{case}: {pieces} pieces for {} tokens: none held back", ids.len());
    }
}

#[test]
fn eos_sets_include_end_of_turn_tokens() {
    for (case, m, _) in models() {
        let eos = m.tokenizer().eos_ids();
        assert!(!eos.is_empty(), "{case}: no EOS");
        for marker in ["<|im_end|>", "<end_of_turn>", "<|eot_id|>"] {
            if m.chat_template().text().contains(marker) {
                let id = m.tokenizer().token_to_id(marker).unwrap();
                assert!(eos.contains(&id), "{case}: {marker} not in the EOS set");
            }
        }
    }
}

#[test]
fn unknown_roles_and_template_errors_are_invalid_arguments() {
    let m = Model::load(&fixtures().join("qwen3"), &LoadParams::default()).unwrap();
    let e = m
        .chat_template()
        .render(&[Message::new("wizard", "hi")], true, None, &Default::default(), None, None)
        .unwrap_err();
    assert_eq!(e.kind, lmx::ErrorKind::InvalidArgument);
    assert!(e.message.contains("unknown role \"wizard\""), "{e}");
}

#[test]
fn only_the_template_in_use_adds_end_of_turn_markers() {
    // gemma3's fixture without generation_config.json: EOS is config.json's id 1 only, and
    // <end_of_turn> (id 4) is a token of the vocabulary.
    let with_template = |template: serde_json::Value| {
        let t = copy_fixture("gemma3", "named-templates");
        std::fs::remove_file(t.0.join("generation_config.json")).unwrap();
        let cfg_path = t.0.join("tokenizer_config.json");
        let mut cfg = json(&cfg_path);
        cfg["chat_template"] = template;
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let m = Model::load(&t.0, &LoadParams::default()).unwrap();
        let eos: Vec<u32> = m.tokenizer().eos_ids().iter().copied().collect();
        let rendered =
            m.render_chat(&[Message::new("user", "hi")], false, None, &Default::default(), None).unwrap();
        (eos, rendered)
    };
    // A named template other than "default" uses the marker: it is not the model's template,
    // so the marker does not end generation.
    let (eos, rendered) = with_template(serde_json::json!([
        {"name": "default", "template": "[{{ messages[0].content }}]"},
        {"name": "tool_use", "template": "{{ messages[0].content }}<end_of_turn>"},
    ]));
    assert_eq!(eos, vec![1], "a marker of a template not in use joined the EOS set");
    assert_eq!(rendered, "[hi]");
    // The default template uses it: it does.
    let (eos, rendered) = with_template(serde_json::json!([
        {"name": "default", "template": "{{ messages[0].content }}<end_of_turn>"},
        {"name": "rag", "template": "[{{ messages[0].content }}]"},
    ]));
    assert_eq!(eos, vec![1, 4]);
    assert_eq!(rendered, "hi<end_of_turn>");
    // A plain string template, as it is.
    let (eos, _) = with_template("{{ messages[0].content }}<end_of_turn>".into());
    assert_eq!(eos, vec![1, 4]);
}
