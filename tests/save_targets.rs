//! Saving never replaces what it should not: a session file or an adapter written to a path
//! that exists and is not a regular file (a symbolic link, a FIFO, a device, a folder) is
//! refused and the thing there is left alone; errors name the path the caller gave, never
//! the temporary file written beside it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use lmx::engine::{GenerateParams, Session};
use lmx::model::{LoadParams, LoraConfig, LoraWeights, Model, Target};

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A character device like /dev/null's at `p`, where the process may make one (root).
fn mknod_null(p: &Path) -> bool {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) == 0 }
}

/// What is at `p`, as the file type and the link target, for "left alone" checks.
fn what(p: &Path) -> (std::fs::FileType, Option<std::path::PathBuf>) {
    let m = p.symlink_metadata().unwrap();
    (m.file_type(), std::fs::read_link(p).ok())
}

/// The things a save must not replace, made at a path: a FIFO, links (to a device and to a
/// regular file), a folder and, where the process may make one, a device node. Each with the
/// word the refusal uses.
fn hostile(p: &Path, kind: usize, keep: &Path) -> Option<&'static str> {
    match kind {
        0 => {
            mkfifo(p);
            Some("not a regular file")
        }
        1 => {
            std::os::unix::fs::symlink("/dev/null", p).unwrap();
            Some("symbolic link")
        }
        2 => {
            std::os::unix::fs::symlink(keep, p).unwrap();
            Some("symbolic link")
        }
        3 => {
            std::fs::create_dir(p).unwrap();
            Some("a folder")
        }
        _ => mknod_null(p).then_some("not a regular file"),
    }
}

/// `save(path)` for each hostile thing at `path`: refused, naming it, and the thing is still
/// what it was (a link's target unwritten); no temporary file is left beside it.
fn refuses(dir: &Path, name: &str, save: &dyn Fn(&Path) -> lmx::Result<()>) {
    let keep = dir.join("keep");
    std::fs::write(&keep, b"keep me").unwrap();
    for kind in 0..5 {
        let folder = dir.join(format!("case{kind}"));
        std::fs::create_dir_all(&folder).unwrap();
        let t = folder.join(name);
        let Some(why) = hostile(&t, kind, &keep) else {
            eprintln!("not checking a device node: mknod is not permitted here");
            continue;
        };
        let before = what(&t);
        let e = save(&folder).unwrap_err();
        assert_eq!(e.kind, lmx::ErrorKind::InvalidArgument, "{}: {e}", t.display());
        assert!(e.message.contains(&t.display().to_string()) && e.message.contains(why), "{e}");
        assert_eq!(what(&t), before, "{} was replaced", t.display());
        // Nothing written beside it: no temporary file, and no half of a pair of files.
        let left: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![name.to_string()], "a refused save left files behind");
    }
    assert_eq!(std::fs::read(&keep).unwrap(), b"keep me", "a link's target was written through");
}

#[test]
fn session_files_are_not_written_over_links_fifos_devices_or_folders() {
    let m = Arc::new(Model::load(&fixtures().join("qwen3"), &LoadParams::default()).unwrap());
    let s = Session::new(m.clone()).unwrap();
    let ids = m.encode("The keeper counted", true).unwrap();
    s.generate(&ids, &GenerateParams { max_tokens: 2, ..Default::default() }, |_| true).unwrap();
    let d = TempDir::new("save-targets");
    refuses(&d.0, "x.session", &|folder| s.save(&folder.join("x.session"), &BTreeMap::new()));
    // A regular file is replaced; a failed write names the caller's path, not the temporary file.
    let ok = d.0.join("ok.session");
    std::fs::write(&ok, b"old").unwrap();
    s.save(&ok, &BTreeMap::new()).unwrap();
    assert!(Session::load(m.clone(), &ok, &Default::default()).is_ok());
    let missing = d.0.join("no-such-folder").join("x.session");
    let e = s.save(&missing, &BTreeMap::new()).unwrap_err();
    assert!(e.message.contains(&missing.display().to_string()), "{e}");
    assert!(!e.message.contains("lmx-tmp"), "the error names the temporary file: {e}");
}

#[test]
fn adapters_are_not_written_over_links_fifos_devices_or_folders() {
    let m = Model::load(&fixtures().join("qwen3"), &LoadParams::default()).unwrap();
    let cfg = LoraConfig { rank: 2, scale: 1.0, dropout: 0.0, num_layers: 1, targets: vec![Target::Q] };
    let w = LoraWeights::init(cfg, m.spec(), &lmx::mlx::random::key(1).unwrap()).unwrap();
    for name in ["adapters.safetensors", "adapter_config.json"] {
        let d = TempDir::new("adapter-targets");
        refuses(&d.0, name, &|folder| w.save(folder));
    }
    // A folder that is a file is refused too.
    let d = TempDir::new("adapter-file");
    let f = d.0.join("adapter");
    std::fs::write(&f, b"x").unwrap();
    assert!(w.save(&f).is_err());
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
}
