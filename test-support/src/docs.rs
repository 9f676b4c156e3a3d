//! The repository's markdown docs, as the doc-check tests read them: which files they are,
//! and their ```yaml blocks with the `<!-- doc-config: KIND -->` marker each must carry.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The markdown docs of the repository (the root README, each crate's, docs/*.md).
pub fn doc_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files: Vec<PathBuf> = [
        "README.md",
        "auth-sidecar/README.md",
        "omni2-core/README.md",
        "benches/README.md",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/");
    let mut more: Vec<PathBuf> = docs
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    files.extend(more);
    files
}

/// A file's text; panics naming the file.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A ```yaml block: its marker kind, its text, and where it starts (for messages).
pub struct YamlBlock {
    pub kind: String,
    pub text: String,
    pub at: String,
}

/// The line that must precede every ```yaml block.
pub const MARKER: &str = "<!-- doc-config: ";

/// Every ```yaml block of one file; an unmarked block panics, so no example skips a check.
pub fn yaml_blocks(path: &Path) -> Vec<YamlBlock> {
    let text = read(path);
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start() == "```yaml" {
            let at = format!("{}:{}", path.display(), i + 1);
            let kind = i
                .checked_sub(1)
                .and_then(|p| lines[p].trim().strip_prefix(MARKER))
                .and_then(|m| m.strip_suffix("-->"))
                .map(|m| m.split_whitespace().next().unwrap_or("").to_owned())
                .unwrap_or_else(|| panic!("{at}: yaml block without a `{MARKER}KIND -->` line"));
            let end = (i + 1..lines.len())
                .find(|&j| lines[j].trim_start().starts_with("```"))
                .unwrap_or_else(|| panic!("{at}: unclosed yaml block"));
            blocks.push(YamlBlock {
                kind,
                text: lines[i + 1..end].join("\n") + "\n",
                at,
            });
            i = end;
        }
        i += 1;
    }
    blocks
}

/// Every ```yaml block of every doc file.
pub fn all_yaml_blocks() -> Vec<YamlBlock> {
    doc_files().iter().flat_map(|f| yaml_blocks(f)).collect()
}
