//! include/lmx.h must be exactly what cbindgen generates from src/ffi, so the committed header
//! can never drift from the ABI. `make header` (LMX_UPDATE_HEADER=1) rewrites it.

use std::path::{Path, PathBuf};

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("src/ffi"))
        .expect("src/ffi exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs") && !p.ends_with("mod.rs"))
        .collect();
    files.sort();
    let mut builder = cbindgen::Builder::new().with_config(config);
    for f in &files {
        builder = builder.with_src(f);
    }
    let bindings = builder.generate().expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn committed_header_matches_the_ffi_source() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/lmx.h");
    let generated = generate();
    if std::env::var("LMX_UPDATE_HEADER").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == generated, "include/lmx.h is stale: run `make header` and commit the result");
}

#[test]
fn version_macros_equal_cargo_version() {
    use lmx::ffi::version::*;
    assert_eq!(LMX_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(LMX_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(LMX_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/lmx.h")).unwrap();
    assert!(header.contains(&format!("#define LMX_VERSION_MAJOR {}", LMX_VERSION_MAJOR)));
    assert!(header.contains(&format!("#define LMX_VERSION_MINOR {}", LMX_VERSION_MINOR)));
    assert!(header.contains(&format!("#define LMX_VERSION_PATCH {}", LMX_VERSION_PATCH)));
}
