//! A model's fingerprint: what a saved session names to be refused by any other model.
//!
//! Not a hash of every weight byte (gigabytes, seconds): the hash covers the config and
//! tokenizer files whole, and of each weight file its name, size, and its first and last
//! 64 KiB. A safetensors file begins with its header (every tensor's name, dtype, shape and
//! offsets), so another architecture, size or quantization changes the fingerprint; weights
//! of the same shapes differ in the sampled bytes.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::{Error, Result};

/// Bytes read from each end of a weight file.
const SAMPLE: u64 = 64 * 1024;

/// FNV-1a, 64 bits.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        for &b in data {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// A length-prefixed field, so that field boundaries count.
    pub fn field(&mut self, data: &[u8]) -> &mut Self {
        self.bytes(&(data.len() as u64).to_le_bytes()).bytes(data)
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

fn sample_file(h: &mut Fnv, path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    let size = f.metadata().map_err(|e| Error::io(path, &e))?.len();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    h.field(name.as_bytes()).field(&size.to_le_bytes());
    let mut buf = vec![0u8; SAMPLE.min(size) as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(path, &e))?;
    h.field(&buf);
    if size > SAMPLE {
        let tail = SAMPLE.min(size - SAMPLE);
        f.seek(SeekFrom::Start(size - tail)).map_err(|e| Error::io(path, &e))?;
        let mut buf = vec![0u8; tail as usize];
        f.read_exact(&mut buf).map_err(|e| Error::io(path, &e))?;
        h.field(&buf);
    }
    Ok(())
}

fn whole_file(h: &mut Fnv, path: &Path) -> Result<()> {
    match std::fs::read(path) {
        Ok(data) => {
            h.field(&data);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            h.field(b"");
            Ok(())
        }
        Err(e) => Err(Error::io(path, &e)),
    }
}

/// The fingerprint of a model folder (its config, tokenizer and weight files).
pub fn of_folder(dir: &Path) -> Result<String> {
    let mut h = Fnv::default();
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        whole_file(&mut h, &dir.join(name))?;
    }
    let mut weights: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    for p in &weights {
        sample_file(&mut h, p)?;
    }
    Ok(h.hex())
}

/// The fingerprint of a GGUF file (header, tokenizer and sampled tensor data all live in it).
pub fn of_gguf(path: &Path) -> Result<String> {
    let mut h = Fnv::default();
    sample_file(&mut h, path)?;
    Ok(h.hex())
}

/// The fingerprint of `base` with an adapter fused in, from the adapter's own fingerprint
/// and the scale.
pub fn fused(base: &str, adapter: &str, scale: f32) -> String {
    let mut h = Fnv::default();
    h.field(base.as_bytes()).field(adapter.as_bytes()).field(&scale.to_le_bytes());
    h.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // FNV-1a 64 test vectors.
        assert_eq!(Fnv::default().bytes(b"").hex(), "cbf29ce484222325");
        assert_eq!(Fnv::default().bytes(b"a").hex(), "af63dc4c8601ec8c");
        assert_eq!(Fnv::default().bytes(b"foobar").hex(), "85944171f73967e8");
    }
}
