//! `lmx info`: what a model is, as JSON.

use clap::Args;
use lmx::{Error, Result};

use crate::options::ModelArgs;

/// Describe a model as one JSON object: architecture, sizes, quantization, dtype, where its
/// chat template comes from.
#[derive(Args, Debug)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

pub(crate) fn run(a: &InfoArgs) -> Result<()> {
    let model = a.model.load(&Default::default())?;
    println!("{}", serde_json::to_string_pretty(model.info()).map_err(|e| Error::internal(e.to_string()))?);
    Ok(())
}
