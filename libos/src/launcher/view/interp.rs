//! The program's interpreters: `#!` and ELF `PT_INTERP`, and the ELF interpreter the view
//! provides from a library directory (Gramine's way of finding it).

use super::*;

impl View {
    /// Gramine finds a program's ELF interpreter by its file name in the library
    /// directories of the view, which is why manifests mount `gramine.runtimedir()` at `/lib`
    /// and nothing at `/lib64`. When the entrypoint's `PT_INTERP` path (or that of its `#!`
    /// interpreter) does not exist in the view but a file of that name does in a library
    /// directory of the view, bind it at the `PT_INTERP` path — only if that path can be
    /// created in the view's own tmpfs (never inside a host directory).
    pub(super) fn provide_elf_interpreter(
        &mut self,
        manifest: &Manifest,
        log: &Log,
    ) -> Result<(), LaunchError> {
        let Ok(mut program) = self.resolve(&manifest.entrypoint_in_view()) else { return Ok(()) };
        if !program.exists() {
            self.interp_hint = hidden_by_later_mount(manifest, &manifest.entrypoint_in_view());
            return Ok(());
        }
        if let Some(script_interpreter) = shebang(&program) {
            let Ok(p) = self.resolve(&script_interpreter) else { return Ok(()) };
            program = p;
        }
        let Some(interp) = elf_interpreter(&program) else { return Ok(()) };
        let Ok(host_interp) = self.resolve(&interp) else { return Ok(()) };
        if host_interp.is_file() {
            return Ok(());
        }
        let name =
            Path::new(&interp).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
        let dirs = [
            "/lib".to_owned(),
            "/lib64".to_owned(),
            format!("/lib/{multiarch}"),
            "/usr/lib".to_owned(),
            "/usr/lib64".to_owned(),
            format!("/usr/lib/{multiarch}"),
        ];
        let found = dirs
            .iter()
            .map(|dir| format!("{dir}/{name}"))
            .find(|candidate| self.resolve(candidate).is_ok_and(|p| p.is_file()));
        let Some(found) = found else {
            self.interp_hint = Some(format!("its ELF interpreter {interp} is not in the view"));
            return Ok(());
        };
        // The deepest existing ancestor of the missing path must be on the view's tmpfs.
        let root_dev = fs::metadata(&self.root).map(|m| m.dev()).ok();
        let mut ancestor = host_interp.as_path();
        while !ancestor.exists() {
            match ancestor.parent() {
                Some(p) => ancestor = p,
                None => break,
            }
        }
        if fs::metadata(ancestor).map(|m| m.dev()).ok() != root_dev
            || fs::symlink_metadata(&host_interp).is_ok()
        {
            self.interp_hint = Some(format!(
                "its ELF interpreter {interp} does not resolve in the view (a mount provides a dangling link); \
                 {found} exists: drop the mount that provides {interp}'s directory or mount the host's directory there"
            ));
            return Ok(());
        }
        let source = self.resolve(&found)?;
        let target = self.mountpoint(&interp, false)?;
        self.mount(|| sys::bind(&source, &target, false), "bind the ELF interpreter", &target)?;
        self.interpreter = Some((target, found.clone()));
        log.debug(format_args!("ELF interpreter {interp} provided from {found}"));
        Ok(())
    }

    /// A hint for "no such file" when the program cannot be started.
    pub(crate) fn interp_hint(&self) -> Option<&str> {
        self.interp_hint.as_deref()
    }
}

/// Explains a missing in-view path that an earlier mount provided but a later mount hides
/// (Gramine applies mounts in order; e.g. a tmpfs at `/tmp` listed after a venv in `/tmp/..`).
pub(super) fn hidden_by_later_mount(manifest: &Manifest, view_path: &str) -> Option<String> {
    use crate::manifest::strip_view_prefix;
    let mounts = &manifest.mounts;
    let (i, provider, j, hider) = mounts.iter().enumerate().find_map(|(i, provider)| {
        strip_view_prefix(view_path, &provider.path)?;
        let (j, hider) =
            mounts.iter().enumerate().skip(i + 1).find(|(_, m)| {
                m.path != provider.path && strip_view_prefix(&provider.path, &m.path).is_some()
            })?;
        Some((i, provider, j, hider))
    })?;
    Some(format!(
        "fs.mounts[{i}] provides it at {}, but fs.mounts[{j}] at {} is listed later and hides it: \
         list {} first",
        provider.path, hider.path, hider.path
    ))
}

/// The interpreter of a `#!` script, if `path` is one.
pub(in crate::launcher) fn shebang(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().next().filter(|p| p.starts_with('/')).map(str::to_owned)
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF file, if it has one.
pub(in crate::launcher) fn elf_interpreter(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(path).ok()?;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    let phoff = u64_at(&header, 0x20);
    let phentsize = u64::from(u16_at(&header, 0x36));
    let phnum = u64::from(u16_at(&header, 0x38));
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        file.read_exact_at(&mut ph, phoff.checked_add(i * phentsize)?).ok()?;
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) == 3 {
            let (offset, size) = (u64_at(&ph, 0x08), u64_at(&ph, 0x20));
            if size == 0 || size > 4096 {
                return None;
            }
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, offset).ok()?;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8(buf[..end].to_vec()).ok();
        }
    }
    None
}
