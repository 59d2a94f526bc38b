//! Chat templates come with models a program did not make: rendering is bounded in
//! instructions, output and time, and each bound is a clear error (the process lives on).

mod common;

use common::fixtures;
use lmx::model::text::chat::{TEMPLATE_FUEL, TEMPLATE_OUTPUT_MAX};
use lmx::model::{ChatTemplate, LoadParams, Message, Model};

fn render(text: &str, messages: &[Message]) -> lmx::Result<String> {
    let t = ChatTemplate::from_text(lmx::model::TemplateSource::JinjaFile, text.to_string())?;
    t.render(messages, true, &Default::default(), None, None)
}

#[test]
fn a_template_that_loops_for_ever_runs_out_of_fuel() {
    let e = render(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        &[Message::new("user", "hi")],
    )
    .unwrap_err();
    assert_eq!(e.kind, lmx::ErrorKind::InvalidArgument);
    assert!(e.message.contains(&TEMPLATE_FUEL.to_string()), "{e}");
}

#[test]
fn a_template_that_renders_gigabytes_stops_at_the_output_cap() {
    let e = render(
        "{% for i in range(100000) %}{{ messages[0].content * 1000 }}{% endfor %}",
        &[Message::new("user", &"x".repeat(100))],
    )
    .unwrap_err();
    assert_eq!(e.kind, lmx::ErrorKind::InvalidArgument);
    assert!(e.message.contains(&format!("exceeds {} MiB", TEMPLATE_OUTPUT_MAX >> 20)), "{e}");
}

#[test]
fn a_real_template_renders_a_long_conversation_within_the_bounds() {
    // The qwen3 fixture's own template, 4000 messages: far inside the fuel.
    let m = Model::load(&fixtures().join("qwen3"), &LoadParams::default()).unwrap();
    let msgs: Vec<Message> = (0..4000)
        .map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, &format!("message {i}")))
        .collect();
    let text = m.render_chat(&msgs, true, &Default::default()).unwrap();
    assert!(text.contains("message 3999"));
}
