//! `pfs manifest` and `pfs run` as a user runs them (real namespace, real Python).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn pfs(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pfs")).args(args).current_dir(dir).output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// As in spec/manifest.md's worked example: the host's libc directory at /lib and nothing at
// /lib64; the launcher provides the ELF interpreter at its PT_INTERP path, as Gramine finds
// it by name in /lib.
const TEMPLATE: &str = r#"# A Gramine-style template.
libos.entrypoint = "/usr/bin/python3"
loader.argv = ["python3", "app.py"]
loader.env.ANSWER = "{{ answer }}"
fs.mounts = [
  { path = "/usr", uri = "file:/usr" },
  { path = "/lib", uri = "file:{{ gramine.runtimedir() }}" },
  { type = "tmpfs", path = "/tmp" },
]
sgx.trusted_files = [ "file:app.py" ]
# The strict file policy (the default) needs the system directories listed.
sgx.allowed_files = [ "file:/usr/", "file:{{ gramine.runtimedir() }}/" ]
"#;

#[test]
fn manifest_then_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("app.manifest.template"), TEMPLATE).unwrap();
    fs::write(d.join("app.py"), "import os, sys\nsys.exit(int(os.environ['ANSWER']))\n").unwrap();

    let out = pfs(d, &["manifest", "app.manifest.template", "app.manifest", "-D", "answer=42"]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = fs::read_to_string(d.join("app.manifest")).unwrap();
    let (manifest, _) = libos::Manifest::parse(&text, libos::Mode::Run).unwrap();
    let expected = format!("simulated measurement (NOT an SGX MRENCLAVE): {}", libos::measure(&manifest));
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(!stdout.to_lowercase().contains("mrenclave:"), "never presented as an MRENCLAVE: {stdout}");

    let out = pfs(d, &["run", "app"]);
    assert_eq!(out.status.code(), Some(42), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().next().unwrap().contains("simulated TEE"), "{stderr}");

    // A /lib64 mount whose link dangles in the view is explained, not just "not found".
    let with_lib64 = TEMPLATE.replace(
        "  { type = \"tmpfs\"",
        "  { path = \"/lib64\", uri = \"file:/lib64\" },\n  { type = \"tmpfs\"",
    );
    fs::write(d.join("app.manifest.template"), with_lib64).unwrap();
    let out = pfs(d, &["manifest", "app.manifest.template", "app.manifest", "-D", "answer=42"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = pfs(d, &["run", "app"]);
    if out.status.code() != Some(42) {
        assert_eq!(out.status.code(), Some(127), "{}", show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("ELF interpreter"), "{}", show(&out));
    }
}

#[test]
fn manifest_refuses_unknown_keys_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("t"), "libos.entrypoint = \"/x\"\n\nsgx.thread_num = 4\nsgx.nonsense = 1\n").unwrap();
    let out = pfs(d, &["manifest", "t", "out.manifest"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 3: `sgx.thread_num`: removed from Gramine; use `sgx.max_threads`"),
        "{stderr}"
    );
    assert!(stderr.contains("line 4: `sgx.nonsense`: unknown key"), "{stderr}");
    assert!(!d.join("out.manifest").exists());
}
