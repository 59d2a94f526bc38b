//! Generated text through the tool-call and reasoning splitters: any text, cut into pieces
//! anywhere, gives the same split as the whole text, and what the stream delivered is the
//! split's visible text; never a crash. The first byte picks the format and the cut stride.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmx::model::{ReasoningSplit, ReasoningTags, ToolFormat, ToolStream};

const FORMATS: [ToolFormat; 5] =
    [ToolFormat::Hermes, ToolFormat::QwenXml, ToolFormat::Llama3, ToolFormat::Mistral, ToolFormat::MistralArgs];

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let format = FORMATS[head as usize % FORMATS.len()];
    let stride = 1 + (head as usize >> 3);
    let pieces = || {
        let mut v = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let mut end = (at + stride).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            v.push(&text[at..end]);
            at = end;
        }
        v
    };

    let whole = format.parse(&text);
    let mut s = ToolStream::new(format);
    let mut shown = String::new();
    for p in pieces() {
        shown.push_str(&s.push(p));
    }
    shown.push_str(&s.flush());
    let split = s.finish();
    assert_eq!(split, whole);
    assert_eq!(shown, whole.content);

    let tags = ReasoningTags::new("<think>", "</think>");
    let start = if head & 4 != 0 { "<think>\n" } else { "" };
    let whole = ReasoningSplit::after_prompt(tags.clone(), start);
    let mut w = whole.clone();
    w.push(&text);
    let want = w.finish();
    let mut r = whole;
    let (mut a, mut b) = (String::new(), String::new());
    for p in pieces() {
        let (x, y) = r.push(p);
        a.push_str(&x);
        b.push_str(&y);
    }
    let (x, y) = r.flush();
    a.push_str(&x);
    b.push_str(&y);
    assert_eq!((a, b), want);

    let _ = lmx::model::Tools::parse(&text);
    let _ = lmx::model::ToolChoice::parse(&text);
});
