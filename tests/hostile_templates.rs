//! Chat templates come with models a program did not make: rendering is bounded in
//! instructions, output and time, and each bound is a clear error (the process lives on).

mod common;

use common::fixtures;
use lmx::model::text::chat::{TEMPLATE_FUEL, TEMPLATE_OUTPUT_MAX};
use lmx::model::{ChatTemplate, LoadParams, Message, Model};

fn render(text: &str, messages: &[Message]) -> lmx::Result<String> {
    let t = ChatTemplate::from_text(lmx::model::TemplateSource::JinjaFile, text.to_string())?;
    t.render(messages, true, None, &Default::default(), None, None)
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
    let text = m.render_chat(&msgs, true, None, &Default::default(), None).unwrap();
    assert!(text.contains("message 3999"));
}

/// A template that runs until its instruction budget is spent (about a second), writing
/// nothing meanwhile.
const SPIN: &str = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";

#[test]
fn a_cancel_while_the_template_renders_is_seen_at_once() {
    let t = ChatTemplate::from_text(lmx::model::TemplateSource::JinjaFile, SPIN.to_string()).unwrap();
    // The stop check says "stop" on its third call: the first is made before the template
    // starts, the next ones while it runs, so the cancel lands mid-rendering.
    let calls = std::cell::Cell::new(0);
    let stop = || {
        calls.set(calls.get() + 1);
        calls.get() >= 3
    };
    let e = t
        .render_cancellable(&[Message::new("user", "hi")], true, None, &Default::default(), None, None, &stop)
        .unwrap_err();
    assert_eq!(e.kind, lmx::ErrorKind::Cancelled, "{e}");
    assert_eq!(calls.get(), 3, "the rendering ended before the cancel or ignored it");
    // Without a cancel the same template runs out of fuel: the cancel, not the budget, ended it.
    let e = t
        .render_cancellable(
            &[Message::new("user", "hi")],
            true,
            None,
            &Default::default(),
            None,
            None,
            &|| false,
        )
        .unwrap_err();
    assert!(e.message.contains(&TEMPLATE_FUEL.to_string()), "{e}");
    // A template that finishes returns its text as render does.
    let ok =
        ChatTemplate::from_text(lmx::model::TemplateSource::JinjaFile, "{{ messages[0].content }}".into())
            .unwrap();
    let msgs = [Message::new("user", "hello")];
    assert_eq!(
        ok.render_cancellable(&msgs, true, None, &Default::default(), None, None, &|| false).unwrap(),
        ok.render(&msgs, true, None, &Default::default(), None, None).unwrap()
    );
}

#[test]
fn session_cancel_stops_a_chat_template_and_the_session_goes_on() {
    use lmx::engine::{Cancel, GenerateParams, Session};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // The qwen3 fixture with a template that spins on "spin" and echoes anything else.
    let d = common::copy_fixture("qwen3", "spin-template");
    let cfg_path = d.0.join("tokenizer_config.json");
    let mut cfg = common::json(&cfg_path);
    cfg["chat_template"] =
        format!("{{% if messages[-1].content == 'spin' %}}{SPIN}{{% endif %}}{{{{ messages[-1].content }}}}")
            .into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let m = Arc::new(Model::load(&d.0, &LoadParams::default()).unwrap());
    let s = Arc::new(Session::new(m).unwrap());

    // The call's own token, already requested: nothing renders.
    let c = Cancel::new();
    c.request();
    let e = s.chat_tokens(&[Message::new("user", "spin")], None, &Default::default(), Some(&c)).unwrap_err();
    assert_eq!(e.kind, lmx::ErrorKind::Cancelled);

    // Session::cancel from another thread while the template spins. The template never
    // finishes by itself (it runs out of fuel), so the only way to Cancelled is the cancel.
    let done = Arc::new(AtomicBool::new(false));
    let (s2, d2) = (s.clone(), done.clone());
    let canceller = std::thread::spawn(move || {
        while !d2.load(Ordering::SeqCst) {
            s2.cancel();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let e = s.chat_tokens(&[Message::new("user", "spin")], None, &Default::default(), None).unwrap_err();
    done.store(true, Ordering::SeqCst);
    canceller.join().unwrap();
    assert_eq!(e.kind, lmx::ErrorKind::Cancelled, "{e}");

    // The session is not left cancelled: the next chat renders and generates.
    let ids = s.chat_tokens(&[Message::new("user", "hello")], None, &Default::default(), None).unwrap();
    let out = s.generate(&ids, &GenerateParams { max_tokens: 3, ..Default::default() }, |_| true).unwrap();
    assert_eq!(out.finish, lmx::engine::FinishReason::Length);
}
