//! Tool calls and reasoning in generation: calls under tool_choice required validate against
//! their tool's schema on the real and fixture models; calls are parsed out of the stream;
//! reasoning is split off, and the thinking budget closes it.

mod common;

use std::sync::Arc;

use common::*;
use lmx::engine::{FinishReason, GenerateParams, Session};
use lmx::model::{Constraint, LoadParams, Message, Model, ToolChoice, Tools};
use lmx::ErrorKind;

fn load(dir: &std::path::Path) -> Arc<Model> {
    Arc::new(Model::load(dir, &LoadParams::default()).unwrap())
}

const TOOLS: &str = r#"[
 {"type":"function","function":{"name":"get_weather","description":"Current weather in a city",
  "parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":40},
   "unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["city","unit"],"additionalProperties":false}}},
 {"type":"function","function":{"name":"add","description":"Adds two integers",
  "parameters":{"type":"object","properties":{"a":{"type":"integer","minimum":-1000,"maximum":1000},"b":{"type":"integer","minimum":-1000,"maximum":1000}},
   "required":["a","b"],"additionalProperties":false}}}
]"#;

fn tools() -> Arc<Tools> {
    Arc::new(Tools::parse(TOOLS).unwrap())
}

/// Checks a call's arguments against the two tools' schemas (written out here).
fn valid_call(name: &str, args: &serde_json::Value) -> bool {
    let o = match args.as_object() {
        Some(o) => o,
        None => return false,
    };
    match name {
        "get_weather" => {
            o.len() == 2
                && o.get("city").and_then(|c| c.as_str()).is_some_and(|c| c.chars().count() <= 40)
                && matches!(o.get("unit").and_then(|u| u.as_str()), Some("celsius" | "fahrenheit"))
        }
        "add" => {
            let int =
                |k: &str| o.get(k).and_then(|v| v.as_i64()).is_some_and(|v| (-1000..=1000).contains(&v));
            o.len() == 2 && int("a") && int("b")
        }
        _ => false,
    }
}

fn required_calls(m: &Arc<Model>, choice: ToolChoice, question: &str, seed: Option<u64>) {
    let t = tools();
    let s = Session::new(m.clone()).unwrap();
    let prompt =
        s.chat_tokens(&[Message::new("user", question)], Some(&t), &Default::default(), None).unwrap();
    let p = GenerateParams {
        max_tokens: 160,
        tools: Some(t.clone()),
        tool_choice: choice.clone(),
        parallel_tool_calls: false,
        sampler: lmx::engine::SamplerParams {
            temperature: if seed.is_some() { 0.7 } else { 0.0 },
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut streamed = String::new();
    let out = s.generate(&prompt, &p, |ev| {
        streamed.push_str(&ev.text);
        true
    });
    let out = out.unwrap();
    assert_eq!(
        out.finish,
        FinishReason::Stop,
        "{}: {:?} {:?}",
        m.path().display(),
        out.text,
        out.tool_errors
    );
    assert_eq!(out.tool_calls.len(), 1, "one call: {:?}", out.text);
    assert!(out.tool_errors.is_empty(), "{:?}", out.tool_errors);
    for c in &out.tool_calls {
        assert!(valid_call(&c.name, &c.arguments), "invalid call {} {}", c.name, c.arguments);
        if let ToolChoice::Function(n) = &choice {
            assert_eq!(&c.name, n);
        }
    }
    // The calls' text is not delivered as text.
    assert_eq!(streamed, out.text);
    assert!(!streamed.contains("\"arguments\""), "{streamed:?}");
}

#[test]
fn required_calls_validate_on_the_real_models() {
    for name in ["smollm2-135m-instruct", "gemma3-270m"] {
        let Some(dir) = folder(name) else { return };
        let m = load(&dir);
        required_calls(&m, ToolChoice::Required, "What is the weather in Paris?", None);
        required_calls(&m, ToolChoice::Required, "Add 2 and 40.", Some(3));
        required_calls(&m, ToolChoice::Function("add".into()), "What is 7 plus 5?", None);
    }
}

#[test]
fn required_calls_validate_on_a_qwen_fixture() {
    let m = load(&fixtures().join("qwen3"));
    for seed in [None, Some(1), Some(2)] {
        required_calls(&m, ToolChoice::Required, "weather?", seed);
        required_calls(&m, ToolChoice::Function("get_weather".into()), "weather?", seed);
    }
}

#[test]
fn calls_are_parsed_out_of_the_stream() {
    let m = load(&fixtures().join("qwen3"));
    let s = Session::new(m.clone()).unwrap();
    let call = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>";
    // The fixture's random weights write what a constraint makes them: visible text, a call.
    let rx = format!("Let me add\\. {}", regex::escape(call));
    let p = GenerateParams {
        max_tokens: 400,
        tools: Some(tools()),
        constraint: Some(Constraint::Regex(rx)),
        ..Default::default()
    };
    let mut streamed = String::new();
    let out = s
        .generate(&[1, 2, 3], &p, |ev| {
            streamed.push_str(&ev.text);
            true
        })
        .unwrap();
    assert_eq!(out.finish, FinishReason::Stop);
    assert_eq!(out.text, "Let me add.");
    assert_eq!(streamed, out.text);
    assert_eq!(out.tool_calls.len(), 1);
    assert_eq!(out.tool_calls[0].name, "add");
    assert_eq!(out.tool_calls[0].arguments, serde_json::json!({"a": 1, "b": 2}));
    // tool_choice none: nothing is parsed; the text is as generated.
    let none = GenerateParams { tool_choice: ToolChoice::None, ..p };
    let out = s.generate(&[1, 2, 3], &none, |_| true).unwrap();
    assert!(out.tool_calls.is_empty());
    assert!(out.text.contains("<tool_call>"), "{:?}", out.text);
}

#[test]
fn bad_tool_requests_fail_clearly_and_the_session_goes_on() {
    let m = load(&fixtures().join("qwen3"));
    let s = Session::new(m.clone()).unwrap();
    let plain =
        s.generate(&[4, 5, 6], &GenerateParams { max_tokens: 5, ..Default::default() }, |_| true).unwrap();
    for bad in [
        r#"{"name":"x"}"#,
        r#"[{"type":"function","function":{"description":"no name"}}]"#,
        "[1, 2]",
        "not json",
    ] {
        let e = Tools::parse(bad).expect_err(bad);
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}: {e}");
    }
    let cases = vec![
        GenerateParams { tool_choice: ToolChoice::Required, ..Default::default() },
        GenerateParams {
            tools: Some(tools()),
            tool_choice: ToolChoice::Function("nope".into()),
            ..Default::default()
        },
        GenerateParams {
            tools: Some(tools()),
            tool_choice: ToolChoice::Required,
            constraint: Some(Constraint::JsonObject),
            ..Default::default()
        },
    ];
    for p in cases {
        let e = s.generate(&[4, 5, 6], &p, |_| true).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        let again = s
            .generate(&[4, 5, 6], &GenerateParams { max_tokens: 5, ..Default::default() }, |_| true)
            .unwrap();
        assert_eq!(again.tokens, plain.tokens);
    }
}

#[test]
fn reasoning_is_split_off_and_the_budget_closes_it() {
    let m = load(&fixtures().join("qwen3"));
    let s = Session::new(m.clone()).unwrap();
    let mut prompt = s.chat_tokens(&[Message::new("user", "hi")], None, &Default::default(), None).unwrap();
    // The prompt opens the reasoning, as thinking templates' generation prompts do.
    prompt.extend(m.encode("<think>\n", false).unwrap());
    let close = m.encode("</think>\n\n", false).unwrap();
    let budget = 6;
    let p = GenerateParams {
        max_tokens: 20,
        ignore_eos: true,
        thinking_budget: Some(budget),
        ..Default::default()
    };
    let mut streamed = String::new();
    let out = s
        .generate(&prompt, &p, |ev| {
            streamed.push_str(&ev.text);
            true
        })
        .unwrap();
    // After `budget` tokens of reasoning (the model never closed it itself: if it did,
    // the tag came earlier), the closing tag comes.
    let at = out.tokens.windows(close.len()).position(|w| w == close.as_slice()).expect("a closing tag");
    assert!(at <= budget, "closed at {at}");
    assert_eq!(out.metrics.forced_tokens, if at == budget { close.len() } else { 0 });
    let reasoning = m.decode(&out.tokens[..at], false).unwrap();
    assert_eq!(out.reasoning, reasoning.trim());
    assert_eq!(streamed, out.text);
    assert!(!out.text.contains("</think>"));
    assert_eq!(out.tokens.len(), 20);
    // Without the split, the text is as generated.
    let plain = s
        .generate(&prompt, &GenerateParams { max_tokens: 8, ignore_eos: true, ..Default::default() }, |_| {
            true
        })
        .unwrap();
    assert!(plain.reasoning.is_empty());
}

/// The qwen3 fixture with Qwen's call markers as tokens of their own (in the slots of its
/// think tags, which its template does not use): what Qwen2.5/Qwen3 tokenizers have.
fn qwen_with_call_tokens() -> TempDir {
    let t = copy_fixture("qwen3", "call-tokens");
    let path = t.0.join("tokenizer.json");
    let mut tok = json(&path);
    for a in tok["added_tokens"].as_array_mut().unwrap() {
        let renamed = match a["content"].as_str().unwrap() {
            "<think>" => "<tool_call>",
            "</think>" => "</tool_call>",
            _ => continue,
        };
        a["content"] = renamed.into();
        a["special"] = false.into();
    }
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    t
}

#[test]
fn auto_calls_are_constrained_once_the_model_begins_one() {
    let dir = qwen_with_call_tokens();
    let m = load(&dir.0);
    let t = tools();
    let trigger = m.encode("<tool_call>", false).unwrap();
    assert_eq!(trigger.len(), 1, "{trigger:?}");
    let s = Session::new(m.clone()).unwrap();
    let prompt =
        s.chat_tokens(&[Message::new("user", "weather?")], Some(&t), &Default::default(), None).unwrap();
    for seed in [None, Some(1), Some(2), Some(3)] {
        let sampler = lmx::engine::SamplerParams {
            temperature: if seed.is_some() { 1.0 } else { 0.0 },
            seed,
            ..Default::default()
        };
        let mut p = GenerateParams {
            max_tokens: 120,
            tools: Some(t.clone()),
            parallel_tool_calls: false,
            sampler: sampler.clone(),
            ..Default::default()
        };
        // Left alone, the random-weight model writes no call.
        let free = s.generate(&prompt, &p, |_| true).unwrap();
        assert!(free.tool_calls.is_empty() && !free.text.contains("<tool_call>"), "{:?}", free.text);
        // Nudged to open its reply with the trigger (a bias on that one token), what follows
        // is constrained: one call that names a tool and whose arguments validate, then the end.
        p.sampler.logit_bias = vec![(trigger[0], 100.0)];
        let mut streamed = String::new();
        let out = s
            .generate(&prompt, &p, |ev| {
                streamed.push_str(&ev.text);
                true
            })
            .unwrap();
        assert_eq!(
            out.finish,
            FinishReason::Stop,
            "{seed:?}: {:?} {:?} {:?}",
            out.text,
            out.tool_errors,
            out.tokens
        );
        assert_eq!(out.tool_calls.len(), 1, "{seed:?}: {:?} {:?}", out.text, out.tool_errors);
        assert!(out.tool_errors.is_empty(), "{:?}", out.tool_errors);
        let c = &out.tool_calls[0];
        assert!(valid_call(&c.name, &c.arguments), "{seed:?}: invalid call {} {}", c.name, c.arguments);
        assert!(out.metrics.forced_tokens > 0, "the call grammar forced nothing");
        assert_eq!(streamed, out.text);
        assert_eq!(out.tokens[0], trigger[0]);
    }
}
