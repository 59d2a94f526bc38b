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

/// What a path that is not a regular file is, for error messages.
fn not_regular(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file (a FIFO, socket or device)"
    }
}

/// Checks that `path` may be written by [`write_replacing`]: new, or a regular file (a
/// symbolic link, FIFO, socket, device or folder there is refused, naming it).
pub fn check_replaceable(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => Err(Error::invalid(format!(
            "{}: is a symbolic link; liblmx does not replace links (give the path it points to)",
            path.display()
        ))),
        Ok(m) if !m.is_file() => Err(Error::invalid(format!(
            "{}: is {}; liblmx only replaces regular files",
            path.display(),
            not_regular(&m)
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(describe(path, &e)),
    }
}

/// Refuses file I/O on a thread holding the compute lock (see
/// [`crate::mlx::compute_lock_held`]): a bug in liblmx, caught as an error instead of a stall.
fn not_under_compute_lock(path: &Path) -> Result<()> {
    if crate::mlx::compute_lock_held() {
        return Err(Error::internal(format!(
            "{}: file I/O while holding the compute lock (other sessions would wait for the disk)",
            path.display()
        )));
    }
    Ok(())
}

/// Opens a regular file (following links) without blocking: a FIFO, socket, device or folder
/// is refused. Returns the file and its size.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    not_under_compute_lock(path)?;
    let meta = std::fs::metadata(path).map_err(|e| describe(path, &e))?;
    if !meta.is_file() {
        return Err(Error::format(format!("{}: {}", path.display(), not_regular(&meta))));
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

/// Opens a regular file (see [`open_regular`]) of at most `max` bytes, refused from its size
/// before anything is read. Returns the file and its size. The file may grow after the check:
/// a reader reads at most `max + 1` bytes of it and refuses the file when it gets them (see
/// [`too_long`]).
pub fn open_capped(path: &Path, max: u64) -> Result<(File, u64)> {
    let (f, size) = open_regular(path)?;
    if size > max {
        return Err(Error::format(format!(
            "{}: {size} bytes is more than the {} MiB this file may have",
            path.display(),
            max >> 20
        )));
    }
    Ok((f, size))
}

/// The error for a file found longer than `max` bytes while reading it.
pub fn too_long(path: &Path, max: u64) -> Error {
    Error::format(format!("{}: more than the {} MiB this file may have", path.display(), max >> 20))
}

/// The bytes of a regular file of at most `max` bytes.
pub fn read_bytes(path: &Path, max: u64) -> Result<Vec<u8>> {
    let (f, size) = open_capped(path, max)?;
    let mut buf = Vec::with_capacity(size as usize);
    // The file may grow meanwhile: read at most one byte past the cap to notice.
    f.take(max + 1).read_to_end(&mut buf).map_err(|e| describe(path, &e))?;
    if buf.len() as u64 > max {
        return Err(too_long(path, max));
    }
    Ok(buf)
}

/// The text of a regular UTF-8 file of at most `max` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_bytes(path, max)?).map_err(|e| {
        Error::format(format!("{}: not valid UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to()))
    })
}

/// Writes the file at `path` through `write` (given a temporary path in the same folder,
/// ending in `.{ext}`: MLX's writers name their files by type), then renames it over `path`:
/// a failed write leaves what was there. `path` must be new or a regular file: an existing FIFO, socket, device, folder or symlink
/// is refused, never replaced. Errors name `path`, not the temporary file.
pub fn write_replacing(path: &Path, ext: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    not_under_compute_lock(path)?;
    check_replaceable(path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{base}.{}.lmx-tmp.{ext}", std::process::id()));
    let r = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, &e)));
    r.map_err(|mut e| {
        let _ = std::fs::remove_file(&tmp);
        // The temporary file is an implementation detail: the error names the caller's path.
        e.message = e.message.replace(&tmp.display().to_string(), &path.display().to_string());
        e
    })
}
