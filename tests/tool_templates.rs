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
use lmx::model::{
    ChatTemplate, Message, ReasoningSplit, ReasoningTags, TemplateSource, ToolChoice, ToolFormat, Tools,
};

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
        ("meta-llama-Llama-3.2-3B-Instruct", ToolFormat::Llama3),
        ("Qwen3-Coder", ToolFormat::QwenXml),
        ("mistralai-Mistral-Nemo-Instruct-2407", ToolFormat::Mistral),
        ("Mistral-Small-3.2-24B-Instruct-2506", ToolFormat::MistralArgs),
    ];
    for (name, want) in cases {
        let text = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        assert_eq!(ToolFormat::detect(&text, |_| false), want, "{name}");
    }
}

/// What the templates write for an assistant's call (what the models learnt to emit) reads
/// back, with our parser for the template's detected format, as that call.
#[test]
fn real_templates_calls_read_back() {
    let Some(dir) = real_file("templates/index.json").map(|p| p.parent().unwrap().to_path_buf()) else {
        return;
    };
    // Template, where its call text begins, and the end-of-turn marker after it.
    let cases = [
        ("Qwen-Qwen2.5-7B-Instruct", "<tool_call>", "<|im_end|>"),
        ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", "<tool_call>", "<|im_end|>"),
        ("Qwen3-Coder", "<tool_call>", "<|im_end|>"),
        ("meta-llama-Llama-3.1-8B-Instruct", "{\"name\"", "<|eot_id|>"),
        ("meta-llama-Llama-3.2-3B-Instruct", "{\"name\"", "<|eot_id|>"),
        ("mistralai-Mistral-Nemo-Instruct-2407", "[TOOL_CALLS]", "</s>"),
        ("Mistral-Small-3.2-24B-Instruct-2506", "[TOOL_CALLS]", "</s>"),
    ];
    for (name, begin, end) in cases {
        let template = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        let format = ToolFormat::detect(&template, |_| false);
        let r = json(&dir.join(format!("{name}.reference.json")));
        let case =
            r["cases"].as_array().unwrap().iter().find(|c| c["name"] == "one_call_and_result").unwrap();
        let text = case["text"].as_str().unwrap();
        // The call is the last `begin` before the tool's result (Llama's tool list has
        // `{"name"` in it too).
        let ask = text.rfind("What is the weather").unwrap();
        let at = ask + text[ask..].find(begin).unwrap_or_else(|| panic!("{name}: no {begin:?}"));
        let stop = at + text[at..].find(end).unwrap();
        let p = format.parse(&text[at..stop]);
        assert!(p.errors.is_empty(), "{name}: {:?}", p.errors);
        assert_eq!(p.content, "", "{name}");
        assert_eq!(p.calls.len(), 1, "{name}: {p:?}");
        assert_eq!(p.calls[0].name, "get_weather", "{name}");
        assert_eq!(p.calls[0].arguments, serde_json::json!({"city": "Paris"}), "{name}");
        if format == ToolFormat::Mistral || format == ToolFormat::MistralArgs {
            assert_eq!(p.calls[0].id.as_deref(), Some("call0001a"), "{name}");
        }
        // The call grammar accepts the template's call text (after the trigger, where there
        // is one: Llama's bare JSON has none).
        if format == ToolFormat::QwenXml {
            continue; // no grammar yet
        }
        let tools = Tools::parse(case["tools_json"].as_str().unwrap()).unwrap();
        let g = format.call_grammar(&tools, &ToolChoice::Auto, &|_| false, true).unwrap();
        let call = &text[at..stop];
        let after = call.strip_prefix(format.trigger()).unwrap_or(call);
        assert!(grammar_accepts(&g, after), "{name}: the call grammar rejects {after:?}\n{g}");
        let named = format
            .required_grammar(&tools, &ToolChoice::Function("get_time".into()), &|_| false, true)
            .unwrap();
        assert!(!grammar_accepts(&named, call), "{name}: a grammar for get_time accepts {call:?}");
    }
}

/// Whether llguidance, over a vocabulary of single bytes, accepts `text` whole.
fn grammar_accepts(grammar: &str, text: &str) -> bool {
    use llguidance::api::TopLevelGrammar;
    use llguidance::{Matcher, ParserFactory};
    let env = toktrie::ApproximateTokEnv::single_byte_env();
    let mut factory = ParserFactory::new_simple(&env).unwrap();
    factory.quiet();
    let parser = factory.create_parser(TopLevelGrammar::from_lark(grammar.to_string()));
    let mut m = Matcher::new(Ok(parser.unwrap_or_else(|e| panic!("{e}\n{grammar}"))));
    for b in text.bytes() {
        if m.consume_token(u32::from(b)).is_err() || m.is_error() {
            return false;
        }
    }
    m.is_accepting().unwrap_or(false)
}

/// Reasoning tags come from the templates that have them, and the generation prompt tells
/// whether the model starts inside its reasoning: with thinking on, DeepSeek-R1's and QwQ's
/// open it (Qwen 3's leaves the opening to the model); with it off, they close it.
#[test]
fn real_templates_reasoning_start() {
    let Some(dir) = real_file("templates/index.json").map(|p| p.parent().unwrap().to_path_buf()) else {
        return;
    };
    let cases = [
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "thinking_on", true),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "thinking_off", false),
        ("Qwen-Qwen3-0.6B", "thinking_on", false),
        ("Qwen-Qwen3-0.6B", "thinking_off", false),
        ("Qwen-QwQ-32B", "thinking_on", true),
        ("Qwen-QwQ-32B", "thinking_off", false),
    ];
    for (name, case_name, inside) in cases {
        let template = std::fs::read_to_string(dir.join(format!("{name}.jinja"))).unwrap();
        let tags = ReasoningTags::detect(&template, |_| false).unwrap_or_else(|| panic!("{name}: no tags"));
        let r = json(&dir.join(format!("{name}.reference.json")));
        let case = r["cases"].as_array().unwrap().iter().find(|c| c["name"] == case_name).unwrap();
        let prompt = case["text"].as_str().unwrap();
        assert_eq!(
            tags.prompt_opens(prompt),
            inside,
            "{name} / {case_name}: {:?}",
            &prompt[prompt.len() - 30..]
        );
        assert_eq!(ReasoningSplit::after_prompt(tags, prompt).in_reasoning(), inside);
    }
    let plain = std::fs::read_to_string(dir.join("Qwen-Qwen2.5-7B-Instruct.jinja")).unwrap();
    assert!(ReasoningTags::detect(&plain, |_| false).is_none());
}
