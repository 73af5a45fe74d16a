//! Directory walking for `encrypt`, `decrypt` and `check` on trees.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

/// What a walk found under a root directory.
#[derive(Debug, Default)]
pub struct Tree {
    /// Regular files, as paths relative to the root, sorted.
    pub files: Vec<PathBuf>,
    /// Subdirectories, relative to the root, parents before children.
    pub dirs: Vec<PathBuf>,
    /// Entries that were skipped (symlinks, sockets, ...), relative to the root.
    pub skipped: Vec<PathBuf>,
    /// Entries that could not be read; each error names its path.
    pub errors: Vec<anyhow::Error>,
}

impl Tree {
    /// Total size in bytes of the regular files (for a progress bar; unreadable ones count 0).
    pub fn total_bytes(&self, root: &Path) -> u64 {
        self.files.iter().filter_map(|rel| root.join(rel).metadata().ok()).map(|m| m.len()).sum()
    }
}

/// Lists everything under `root` without following symbolic links.
pub fn walk(root: &Path) -> Tree {
    let mut tree = Tree::default();
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let at = error
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| root.display().to_string());
                tree.errors.push(anyhow!(error).context(format!("cannot read {at}")));
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let rel = entry.path().strip_prefix(root).expect("BUG: walkdir entry outside its root").to_path_buf();
        let kind = entry.file_type();
        if kind.is_dir() {
            tree.dirs.push(rel);
        } else if kind.is_file() {
            tree.files.push(rel);
        } else {
            tree.skipped.push(rel);
        }
    }
    tree
}

/// Refuses an output directory inside the input directory (which would encrypt its own
/// output on a later run and makes the tree ambiguous).
pub fn ensure_not_inside(input: &Path, output: &Path) -> Result<()> {
    let input = input.canonicalize().with_context(|| format!("cannot resolve {}", input.display()))?;
    // Resolve the longest existing ancestor of `output`, then append the rest.
    let mut existing = output.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing =
                    if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() };
            }
            _ => break,
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    for name in rest.iter().rev() {
        resolved.push(name);
    }
    if resolved.starts_with(&input) {
        anyhow::bail!(
            "the output directory {} is inside the input directory {}; choose an output outside it",
            output.display(),
            input.display()
        );
    }
    Ok(())
}
