//! Real chat templates with tools, tool calls and tool results, rendered by our ChatTemplate
//! and compared byte for byte with transformers' `apply_chat_template`. The templates (from
//! the llama-cpp-python sdist, which vendors llama.cpp's models/templates/) and their
//! renderings are prepared by scripts/real_models.py (`make real-models`) under
//! $LMX_TEST_CACHE/templates; without them the test skips, unless LMX_REAL_MODELS=1.
//!
//! A conversation transformers refuses (the template raises) must be refused by ours too,
//! but for one leniency: minijinja loops over none as over an empty list where Python
//! raises (the Hermes templates given no tools).

mod common;

use common::*;
use lmx::model::{ChatTemplate, Message, TemplateSource, ToolFormat, Tools};

#[test]
fn real_templates_render_tools_as_transformers_does() {
    let Some(dir) = real_file("templates/index.json").map(|p| p.parent().unwrap().to_path_buf()) else {
        return;
    };
    let index = json(&dir.join("index.json"));
    let mut failures = Vec::new();
    let mut compared = 0;
    for name in index["templates"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        let r = json(&dir.join(format!("{name}.reference.json")));
        let t = match ChatTemplate::from_text(TemplateSource::JinjaFile, text) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: does not parse: {e}"));
                continue;
            }
        };
        let (bos, eos) = (r["bos_token"].as_str(), r["eos_token"].as_str());
        for case in r["cases"].as_array().unwrap() {
            let what = format!("{name} / {}", case["name"].as_str().unwrap());
            // JSON text, so that keys keep their order (the templates print them).
            let messages: Vec<Message> =
                serde_json::from_str(case["messages_json"].as_str().unwrap()).unwrap();
            let tools = match case["tools_json"].as_str().unwrap() {
                "null" => None,
                t => Some(Tools::parse(t).unwrap()),
            };
            let extra = case["extra"].as_object().cloned().unwrap_or_default();
            let add = case["add_generation_prompt"].as_bool().unwrap();
            let ours = t.render(&messages, add, tools.as_ref(), &extra, bos, eos);
            compared += 1;
            match (ours, case.get("text").and_then(|v| v.as_str())) {
                (Ok(got), Some(want)) if got == want => {}
                (Ok(got), Some(want)) => {
                    failures.push(format!("{what}: differs\n--- ours\n{got}\n--- transformers\n{want}"))
                }
                (Err(e), Some(_)) => failures.push(format!("{what}: ours fails: {e}")),
                // minijinja loops over none as over an empty list; Python raises.
                (Ok(_), None)
                    if case["error"].as_str().unwrap().contains("'NoneType' object is not iterable") =>
                {
                    eprintln!("{what}: ours renders, transformers raises {}", case["error"])
                }
                (Ok(_), None) => {
                    failures.push(format!("{what}: ours renders; transformers: {}", case["error"]))
                }
                (Err(_), None) => {}
            }
        }
    }
    eprintln!("{compared} renderings compared");
    assert!(failures.is_empty(), "{} of {compared} differ:\n{}", failures.len(), failures.join("\n\n"));
}

/// Each real template's tool format is detected from its text alone.
#[test]
fn real_templates_tool_formats() {
    let Some(dir) = real_file("templates/index.json").map(|p| p.parent().unwrap().to_path_buf()) else {
        return;
    };
    let cases = [
        ("Qwen-Qwen2.5-7B-Instruct", ToolFormat::Hermes),
        ("Qwen-Qwen3-0.6B", ToolFormat::Hermes),
        ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", ToolFormat::Hermes),
        ("HuggingFaceTB-SmolLM3-3B", ToolFormat::Hermes),
        ("meta-llama-Llama-3.1-8B-Instruct", ToolFormat::Llama3),
        ("mistralai-Mistral-Nemo-Instruct-2407", ToolFormat::Mistral),
        ("Mistral-Small-3.2-24B-Instruct-2506", ToolFormat::MistralArgs),
    ];
    for (name, want) in cases {
        let text = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        assert_eq!(ToolFormat::detect(&text, |_| false), want, "{name}");
    }
}
