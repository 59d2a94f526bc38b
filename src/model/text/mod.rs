//! Text in and out of a model: the tokenizer (with the checkpoint's BOS and EOS rules), the
//! streaming decoder that turns generated ids into whole characters, and chat templates.

pub mod chat;
pub mod reasoning;
pub mod stream;
pub mod tokenizer;
pub mod tool_calls;
pub mod tools;
