//! A chat template (before the first 0xFF byte) rendering messages given as JSON (after it):
//! rendered text or an error, never a crash, a hang or an unbounded output (rendering is
//! bounded in instructions, bytes and time).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmx::model::{ChatTemplate, Message, TemplateSource};

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic, even one the library catches and reports as an
        // error (the tokenizers crate panics on some malformed files); the default hook lets
        // caught panics be errors, and an uncaught one still aborts at the C boundary.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let (tpl, rest) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(tpl) else { return };
    let messages: Vec<Message> = serde_json::from_slice(rest)
        .unwrap_or_else(|_| vec![Message::new("system", "Be brief."), Message::new("user", "Hello!")]);
    let Ok(t) = ChatTemplate::from_text(TemplateSource::JinjaFile, text.to_string()) else { return };
    if let Ok(out) = t.render(&messages, true, None, &Default::default(), Some("<s>"), Some("</s>")) {
        assert!(out.len() <= lmx::model::text::chat::TEMPLATE_OUTPUT_MAX);
    }
}
);
