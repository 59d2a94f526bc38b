//! Reading the files of a model folder that liblmx did not make: only regular files (or links
//! to them) are opened, never waiting on a FIFO or a device; text files have size caps; a
//! symlink loop, a folder or invalid UTF-8 is named as such.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Largest `config.json`, `generation_config.json`, `tokenizer_config.json` or safetensors index.
pub const JSON_MAX: u64 = 16 << 20;
/// Largest `tokenizer.json` (the biggest real ones, 250k-entry vocabularies, are ~35 MB).
pub const TOKENIZER_MAX: u64 = 256 << 20;
/// Largest `chat_template.jinja`.
pub const TEMPLATE_FILE_MAX: u64 = 4 << 20;

/// Whether `path` names something (following links); a dangling link or a loop counts as
/// present, so that opening it reports what is wrong instead of "no such file".
pub fn present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

fn describe(path: &Path, e: &std::io::Error) -> Error {
    // ELOOP has no stable io::ErrorKind; its OS error number does.
    if e.raw_os_error() == Some(libc::ELOOP) {
        return Error::format(format!("{}: a symlink loop", path.display()));
    }
    Error::io(path, e)
}

/// Opens a regular file (following links) without blocking: a FIFO, socket, device or folder
/// is refused. Returns the file and its size.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(path).map_err(|e| describe(path, &e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a folder" } else { "not a regular file (a FIFO, socket or device)" };
        return Err(Error::format(format!("{}: {what}", path.display())));
    }
    // O_NONBLOCK: should the path have become a FIFO since the check, opening does not wait
    // for a writer. It changes nothing for a regular file.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| describe(path, &e))?;
    let meta = f.metadata().map_err(|e| describe(path, &e))?;
    if !meta.is_file() {
        return Err(Error::format(format!("{}: not a regular file", path.display())));
    }
    Ok((f, meta.len()))
}

/// The bytes of a regular file of at most `max` bytes.
pub fn read_bytes(path: &Path, max: u64) -> Result<Vec<u8>> {
    let (f, size) = open_regular(path)?;
    if size > max {
        return Err(Error::format(format!(
            "{}: {size} bytes is more than the {} MiB this file may have",
            path.display(),
            max >> 20
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    // The file may grow meanwhile: read at most one byte past the cap to notice.
    f.take(max + 1).read_to_end(&mut buf).map_err(|e| describe(path, &e))?;
    if buf.len() as u64 > max {
        return Err(Error::format(format!(
            "{}: more than the {} MiB this file may have",
            path.display(),
            max >> 20
        )));
    }
    Ok(buf)
}

/// The text of a regular UTF-8 file of at most `max` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_bytes(path, max)?).map_err(|e| {
        Error::format(format!("{}: not valid UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to()))
    })
}
