//! A model's fingerprint: what a saved session names to be refused by any other model.
//!
//! SHA-256 over what the loader read, never a second read of the folder: the config, the
//! tokenizer files, the chat template the model uses, and of each weight file the loader
//! opened, its name, size and its first and last 64 KiB (not every weight byte: gigabytes,
//! seconds). A safetensors file begins with its header (every tensor's name, dtype, shape and
//! offsets), so another architecture, size or quantization changes the fingerprint; weights
//! of the same shapes differ in the sampled bytes. Every file is opened through
//! [`crate::files`]: a FIFO, device or folder where a file should be is an error, never a wait.
//!
//! liblmx's first session-file format recorded an FNV-1a fingerprint of a folder's files;
//! [`Legacy`] recomputes it on demand so those files keep loading with the same check.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Bytes read from each end of a weight file.
const SAMPLE: u64 = 64 * 1024;

/// The fingerprint being computed while a model loads.
pub struct Fingerprint(Sha256);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(Sha256::new())
    }
}

impl Fingerprint {
    /// A length-prefixed field, so that field boundaries count.
    pub fn field(&mut self, data: &[u8]) -> &mut Self {
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
        self
    }

    /// A named input the loader read (or `None`: the model has no such file).
    pub fn input(&mut self, name: &str, data: Option<&[u8]>) -> &mut Self {
        self.field(name.as_bytes());
        match data {
            Some(d) => self.field(b"present").field(d),
            None => self.field(b"absent"),
        }
    }

    /// A weight file's name, size, and first and last [`SAMPLE`] bytes.
    pub fn sample(&mut self, path: &Path) -> Result<&mut Self> {
        Sample::of(path)?.hash_into(&mut |d| {
            self.field(d);
        });
        Ok(self)
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's name, size, first bytes and (for a file longer than [`SAMPLE`]) last bytes.
struct Sample {
    name: String,
    size: u64,
    head: Vec<u8>,
    tail: Option<Vec<u8>>,
}

impl Sample {
    fn of(path: &Path) -> Result<Sample> {
        let (mut f, size) = crate::files::open_regular(path)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut head = vec![0u8; SAMPLE.min(size) as usize];
        f.read_exact(&mut head).map_err(|e| Error::io(path, &e))?;
        let tail = if size > SAMPLE {
            let n = SAMPLE.min(size - SAMPLE);
            f.seek(SeekFrom::Start(size - n)).map_err(|e| Error::io(path, &e))?;
            let mut t = vec![0u8; n as usize];
            f.read_exact(&mut t).map_err(|e| Error::io(path, &e))?;
            Some(t)
        } else {
            None
        };
        Ok(Sample { name, size, head, tail })
    }

    /// Feeds the sample to a hash as fields: name, size, head, and the tail where there is one
    /// (the same sequence for both fingerprint formats).
    fn hash_into(&self, field: &mut dyn FnMut(&[u8])) {
        field(self.name.as_bytes());
        field(&self.size.to_le_bytes());
        field(&self.head);
        if let Some(t) = &self.tail {
            field(t);
        }
    }
}

/// The fingerprint of a GGUF file (header, tokenizer and sampled tensor data all live in it).
pub fn of_gguf(path: &Path) -> Result<String> {
    let mut h = Fingerprint::default();
    h.sample(path)?;
    Ok(h.finish())
}

/// The fingerprint of `base` with an adapter fused in, from the adapter's own fingerprint
/// and the scale.
pub fn fused(base: &str, adapter: &str, scale: f32) -> String {
    let mut h = Fingerprint::default();
    h.field(base.as_bytes()).field(adapter.as_bytes()).field(&scale.to_le_bytes());
    h.finish()
}

/// FNV-1a, 64 bits: the hash of the first session-file format's fingerprints.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, data: &[u8]) -> &mut Self {
        for &b in data {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    fn field(&mut self, data: &[u8]) -> &mut Self {
        self.bytes(&(data.len() as u64).to_le_bytes()).bytes(data)
    }
}

/// How the first session-file format fingerprinted a model: FNV-1a over a folder's config,
/// tokenizer and template files whole and its `*.safetensors` files sampled, or over a GGUF
/// file sampled. Recomputed only when such a file is loaded, through bounded reads.
#[derive(Clone, Debug)]
pub enum Legacy {
    Folder(PathBuf),
    Gguf(PathBuf),
}

impl Legacy {
    pub fn compute(&self) -> Result<String> {
        let mut h = Fnv::new();
        let sample = |h: &mut Fnv, p: &Path| -> Result<()> {
            Sample::of(p)?.hash_into(&mut |d| {
                h.field(d);
            });
            Ok(())
        };
        match self {
            Legacy::Gguf(p) => sample(&mut h, p)?,
            Legacy::Folder(dir) => {
                for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
                {
                    let p = dir.join(name);
                    if crate::files::present(&p) {
                        h.field(&crate::files::read_bytes(&p, crate::files::TOKENIZER_MAX)?);
                    } else {
                        h.field(b"");
                    }
                }
                for p in crate::model::weights::safetensors_in(dir)? {
                    sample(&mut h, &p)?;
                }
            }
        }
        Ok(format!("{:016x}", h.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // FNV-1a 64 test vectors.
        assert_eq!(format!("{:016x}", Fnv::new().bytes(b"").0), "cbf29ce484222325");
        assert_eq!(format!("{:016x}", Fnv::new().bytes(b"a").0), "af63dc4c8601ec8c");
        assert_eq!(format!("{:016x}", Fnv::new().bytes(b"foobar").0), "85944171f73967e8");
    }

    #[test]
    fn sha256_known_value() {
        let mut h = Fingerprint::default();
        h.0.update(b"abc");
        assert_eq!(h.finish(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
