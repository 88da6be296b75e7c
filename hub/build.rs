//! Embeds the built-in skills library (`skills/*.md` and
//! `skills/skills-library.md`) into the hub binary.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = manifest.join("../skills");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "md")
                        && p.file_name().is_some_and(|n| n != "skills-library.md")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from(
        "/// Built-in skills embedded at build time: (file name, text).\npub const BUILTIN_SKILLS: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            f.display().to_string()
        );
    }
    out.push_str("];\n");
    let lib = dir.join("skills-library.md");
    println!("cargo:rerun-if-changed={}", lib.display());
    let _ = writeln!(
        out,
        "/// The built-in library listing.\npub const BUILTIN_LIBRARY: &str = include_str!({:?});",
        lib.display().to_string()
    );
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    if let Err(e) = std::fs::write(out_dir.join("builtin_skills.rs"), out) {
        panic!("cannot write builtin_skills.rs: {e}");
    }
}
