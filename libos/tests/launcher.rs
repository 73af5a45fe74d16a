//! End-to-end tests of the launcher: real namespaces, real mounts, real Python.
//!
//! `unshare(CLONE_NEWNS)` needs a single-threaded process, which libtest's harness is not,
//! so this file has its own `main` (harness = false): each case re-executes this binary in
//! "launch" mode, which calls `libos::launcher::main` exactly as `pfs run` does, and checks
//! its exit status, output and the host's mount table. Nothing is skipped: when namespaces
//! cannot be created the cases fail.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libos::build::{BuildOptions, build};
use libos::template::{DefineValue, RenderOptions};

const LAUNCH: &str = "__libos_launch";

/// `(name, function)` pairs of test cases.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        &[$((stringify!($case), $case as fn())),*]
    };
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == LAUNCH) {
        let mut bind = BindMounter { log: std::env::var_os("LIBOS_TEST_BIND_MOUNTER").map(PathBuf::from) };
        let mut provider =
            FixedKeyProvider { log: std::env::var_os("LIBOS_TEST_KEY_PROVIDER").map(PathBuf::from) };
        let launcher = libos::launcher::Launcher {
            mounter: if bind.log.is_some() { Some(&mut bind) } else { None },
            key_provider: if provider.log.is_some() { Some(&mut provider) } else { None },
            quote_provider: None,
        };
        let code = libos::launcher::main(Path::new(&args[2]), &args[3..], launcher);
        std::process::exit(code.into());
    }
    let (filter, list) = libtest_args(&args[1..]);
    let cases: &[(&str, fn())] = cases![
        python_stdlib_program_in_chroot_view,
        exit_status_is_passed_through,
        modified_trusted_script_is_refused_at_open,
        host_change_after_verification_gives_eio,
        killed_launcher_takes_the_program_with_it,
        mounts_are_invisible_on_the_host_during_the_run,
        launcher_failures_have_named_exit_codes,
        cmdline_argv_and_unknown_keys_at_run_time,
        mountpoints_created_in_host_directories_are_removed,
        unprivileged_user_gets_a_user_namespace,
        allowed_output_files_in_the_root_reach_the_host,
        encrypted_mount_seam_directory_and_single_file,
        sigterm_is_forwarded_and_the_launcher_cleans_up,
        log_level_and_log_file,
        secret_provisioning_seam,
        pinned_launcher_is_checked,
        shell_script_finds_its_interpreters_like_gramine,
        system_directories_are_shadowed_not_modified,
        strict_policy_refuses_unlisted_files,
        allow_all_but_log_permits_unlisted_files_with_a_warning,
        unlisted_entrypoint_or_interpreter_is_refused,
        stale_staging_directories_are_removed,
        dev_attestation_keys_and_user_report_data,
        dev_attestation_mount_failure_stops_a_dcap_run_cleanly,
        trusted_tree_cost_follows_what_the_program_opens,
        trusted_shared_object_can_be_mapped_and_loaded,
        tutorial_mount_order_with_a_symlinked_venv_python,
    ];
    if list {
        for (name, _) in cases {
            println!("{name}: test");
        }
        return;
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        eprint!("test {name} ... ");
        let start = Instant::now();
        match std::panic::catch_unwind(case) {
            Ok(()) => eprintln!("ok ({:.2}s)", start.elapsed().as_secs_f64()),
            Err(_) => {
                eprintln!("FAILED");
                failed.push(*name);
            }
        }
    }
    no_pfs_mounts_on_host();
    eprintln!("\n{ran} launcher tests, {} failed", failed.len());
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(1);
    }
}

/// The name filter and `--list` from libtest-style arguments (values of libtest's options
/// are skipped, so `--test-threads 2` is not taken for a filter).
fn libtest_args(args: &[OsString]) -> (Option<String>, bool) {
    const WITH_VALUE: &[&str] = &[
        "--test-threads",
        "--skip",
        "--format",
        "--color",
        "--logfile",
        "-Z",
        "--shuffle-seed",
        "--report-time",
    ];
    let mut filter = None;
    let mut list = false;
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if arg == "--list" {
            list = true;
        } else if !arg.starts_with('-') && filter.is_none() {
            filter = Some(arg);
        }
    }
    (filter, list)
}

/// A working directory with a Python program and a manifest.
struct Work {
    dir: tempfile::TempDir,
}

struct Python {
    /// The interpreter's real path.
    exe: String,
    /// `sys.base_prefix`, mounted when not under /usr.
    prefix: String,
    /// The stdlib directory (trusted as a whole in the main test).
    stdlib: String,
}

fn python() -> Python {
    let exe = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".to_string()
    } else {
        "python3".into()
    };
    let out = Command::new(&exe)
        .args(["-I", "-c", "import os, sys, sysconfig; print(os.path.realpath(sys.executable)); print(sys.base_prefix); print(sysconfig.get_path('stdlib'))"])
        .output()
        .expect("python3 is required by the launcher tests");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(str::to_owned);
    Python { exe: lines.next().unwrap(), prefix: lines.next().unwrap(), stdlib: lines.next().unwrap() }
}

/// Mount entries that give Python its runtime inside the view.
fn runtime_mounts(py: &Python) -> String {
    let mut m = String::from(
        "  { path = \"/usr\", uri = \"file:/usr\" },\n  { path = \"/lib\", uri = \"file:/lib\" },\n  \
         { path = \"/lib64\", uri = \"file:/lib64\" },\n",
    );
    if !py.prefix.starts_with("/usr") {
        m.push_str(&format!("  {{ path = \"{0}\", uri = \"file:{0}\" }},\n", py.prefix));
    }
    m
}

/// `sgx.allowed_files` entries for [`runtime_mounts`]: the host's system directories are
/// allowed, not trusted (Gramine's manifests hash them as trusted files; under the simulated
/// TEE the host is trusted anyway, and the strict file policy needs them listed).
fn runtime_allowed(py: &Python) -> String {
    let mut a = String::from("  \"file:/usr/\",\n  \"file:/lib/\",\n  \"file:/lib64/\",\n");
    if !py.prefix.starts_with("/usr") {
        a.push_str(&format!("  \"file:{}/\",\n", py.prefix));
    }
    a
}

/// Adds `uri` to the `sgx.allowed_files` list of a template.
fn allow(template: &str, uri: &str) -> String {
    template.replacen("sgx.allowed_files = [\n", &format!("sgx.allowed_files = [\n  \"{uri}\",\n"), 1)
}

impl Work {
    fn new() -> Work {
        Work { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// `pfs manifest` with the library: render, validate strictly, hash, write.
    fn manifest(&self, template: &str, defines: &[&str]) -> libos::build::Built {
        self.manifest_pinned(template, defines, None)
    }

    fn manifest_pinned(&self, template: &str, defines: &[&str], pin: Option<PathBuf>) -> libos::build::Built {
        let options = BuildOptions {
            render: RenderOptions {
                defines: defines.iter().map(|d| DefineValue::parse_define(d)).collect(),
                ..RenderOptions::default()
            },
            pin_launcher: pin,
        };
        let built = build("test.manifest.template", template, self.path(), &options)
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(self.path().join("app.manifest"), built.manifest.text()).unwrap();
        built
    }

    fn launch(&self, manifest: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg(LAUNCH)
            .arg(manifest)
            .args(args)
            .current_dir(self.path())
            .env("PFS_TEST_HOST_VAR", "leak")
            .env("PASSED", "leak");
        cmd
    }

    /// Starts a launch with its output captured.
    fn spawn(&self, cmd: &mut Command) -> Child {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    /// Waits for a launch and checks that it left nothing behind.
    fn finish(&self, child: Child) -> Output {
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert_clean_after(pid, self.path());
        out
    }

    /// Runs `pfs run app.manifest ARGS` and checks that it left nothing behind.
    fn run(&self, args: &[&str]) -> Output {
        let child = self.spawn(&mut self.launch("app.manifest", args));
        self.finish(child)
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Nothing of the run with launcher pid `pid` is mounted on the host or left in /tmp.
fn assert_clean_after(pid: u32, workdir: &Path) {
    let staging_prefix = format!("pfs-run-{pid}-");
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    for line in mounts.lines() {
        assert!(!line.contains(&staging_prefix), "mount left behind: {line}");
        assert!(!line.contains(workdir.to_str().unwrap()), "mount left behind: {line}");
    }
    let leftovers: Vec<_> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&staging_prefix))
        .collect();
    assert!(leftovers.is_empty(), "staging directory left behind: {leftovers:?}");
}

fn no_pfs_mounts_on_host() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let ours: Vec<&str> = mounts.lines().filter(|l| l.contains("pfs-run-")).collect();
    assert!(ours.is_empty(), "pfs mounts on the host: {ours:?}");
}

const MAIN_PY: &str = r#"
import errno, hashlib, json, os, sys
assert os.getcwd() == "/opt/app", os.getcwd()
assert open("/proc/self/cmdline").read().split("\0")[:-1] == ["python3", "main.py", "fixed-arg"]
env = {k: v for k, v in os.environ.items() if k != "LC_CTYPE"}
assert env == {"GREETING": "hi", "PASSED": "leak"}, env
with open("/srv/input.txt") as f:
    data = f.read()
with open("/tmp/scratch.txt", "w") as f:
    f.write(data.upper())
with open("/tmp/scratch.txt") as f:
    assert f.read() == "SECRET INPUT\n"
with open("/dev/null", "w") as f:
    f.write("x")
assert len(open("/dev/urandom", "rb").read(16)) == 16
assert "Pid" in open("/proc/self/status").read()
try:
    open("/opt/app/main.py", "a")
    raise SystemExit("a trusted file was writable")
except OSError as e:
    assert e.errno in (errno.EROFS, errno.EACCES), e
root = sorted(os.listdir("/"))
with open("/out/result.json", "w") as f:
    json.dump({"sha": hashlib.sha256(data.encode()).hexdigest(), "root": root}, f)
print("done")
"#;

fn python_stdlib_program_in_chroot_view() {
    let py = python();
    let w = Work::new();
    w.write("app/main.py", MAIN_PY);
    w.write("data/input.txt", "secret input\n");
    fs::create_dir(w.path().join("out")).unwrap();
    let template = format!(
        r#"libos.entrypoint = "{{{{ python }}}}"
loader.argv = ["python3", "main.py", "fixed-arg"]
loader.env.GREETING = "hi"
loader.env.PASSED = {{ passthrough = true }}
fs.start_dir = "/opt/app"
fs.mounts = [
{mounts}  {{ path = "/opt/app", uri = "file:app" }},
  {{ path = "/srv/input.txt", uri = "file:data/input.txt" }},
  {{ path = "/out", uri = "file:out" }},
  {{ type = "tmpfs", path = "/tmp" }},
]
sgx.trusted_files = [
  "file:app/main.py",
  "file:data/input.txt",
  "file:{{{{ stdlib }}}}/",
]
sgx.allowed_files = [
  "file:out/",
{allowed}]
"#,
        mounts = runtime_mounts(&py),
        allowed = runtime_allowed(&py)
    );
    let built = w.manifest(&template, &[&format!("python={}", py.exe), &format!("stdlib={}", py.stdlib)]);
    assert!(built.manifest.trusted_files.len() > 100, "the stdlib directory was expanded");
    // PASSED comes from the host through `passthrough`; other host variables must not leak.
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "done\n");
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with(libos::launcher::SIMULATED_TEE_WARNING), "{stderr}");
    let result: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("out/result.json")).unwrap()).unwrap();
    let mut expected =
        vec!["app", "app.manifest", "data", "dev", "lib", "lib64", "opt", "out", "proc", "srv", "tmp", "usr"];
    let prefix_top = py.prefix.trim_start_matches('/').split('/').next().unwrap().to_owned();
    if !expected.contains(&prefix_top.as_str()) {
        expected.push(&prefix_top);
        expected.sort();
    }
    assert_eq!(result["root"], serde_json::json!(expected), "the view's / holds fs.root and the mounts only");
    assert_eq!(result["sha"], serde_json::json!(libos_sha256_hex(b"secret input\n")));
    // The tmpfs is gone and wrote nothing to the host.
    assert!(!w.path().join("tmp").exists());
    // Mountpoints created in the tmpfs root did not touch the work directory.
    assert!(!w.path().join("opt").exists() && !w.path().join("srv").exists());
}

/// A mount of the work directory's `sync/` at `/sync`, for hand-shakes with the program.
const SYNC_MOUNT: &str = "{ path = \"/sync\", uri = \"file:sync\" }";

/// Python that signals `/sync/ready` and waits for `/sync/go`.
const WAIT_FOR_GO: &str = "import os, time\nopen('/sync/ready', 'w').close()\nwhile not os.path.exists('/sync/go'):\n    time.sleep(0.02)\n";

/// [`SYNC_MOUNT`] added to a [`simple_template`], and allowed (the program writes there).
fn with_sync(template: &str) -> String {
    allow(&with_mount(template, SYNC_MOUNT), "file:sync/")
}

/// Inserts a mount entry before the tmpfs of [`simple_template`].
fn with_mount(template: &str, entry: &str) -> String {
    template.replacen("  { type = \"tmpfs\"", &format!("  {entry},\n  {{ type = \"tmpfs\""), 1)
}

fn libos_sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn simple_template(py: &Python, script: &str, extra: &str) -> String {
    format!(
        "libos.entrypoint = \"{exe}\"\nloader.argv = [\"python3\", \"{script}\"]\nfs.mounts = [\n{mounts}  \
         {{ type = \"tmpfs\", path = \"/tmp\" }},\n]\nsgx.trusted_files = [ \"file:{script}\" ]\n\
         sgx.allowed_files = [\n{allowed}]\n{extra}",
        exe = py.exe,
        mounts = runtime_mounts(py),
        allowed = runtime_allowed(py)
    )
}

fn exit_status_is_passed_through() {
    let py = python();
    let w = Work::new();
    w.write("exit.py", "import sys\nsys.exit(42)\n");
    w.manifest(&simple_template(&py, "exit.py", ""), &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(42), "{}", show(&out));

    w.write("crash.py", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n");
    w.manifest(&simple_template(&py, "crash.py", ""), &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(128 + 11), "{}", show(&out));

    w.write("killed.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n");
    w.manifest(&simple_template(&py, "killed.py", ""), &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(128 + 9), "{}", show(&out));
}

/// A trusted file changed before the program opens it: the open is refused (the
/// interpreter cannot read its script) and the launcher names the file.
fn modified_trusted_script_is_refused_at_open() {
    let py = python();
    let w = Work::new();
    fs::create_dir(w.path().join("out")).unwrap();
    w.write("app.py", "open('/out/started', 'w').write('yes')\n");
    let template = simple_template(&py, "app.py", "")
        .replace("  { type = \"tmpfs\"", "  { path = \"/out\", uri = \"file:out\" },\n  { type = \"tmpfs\"");
    w.manifest(&template, &[]);
    w.write("app.py", "open('/out/started', 'w').write('tampered')\n");
    let out = w.run(&[]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = text(&out.stderr);
    let named = format!("trusted file {}/app.py was modified", w.path().display());
    assert!(stderr.contains(&named), "{stderr}");
    assert!(stderr.contains("Permission denied"), "the open must fail with EACCES: {stderr}");
    assert!(!w.path().join("out/started").exists(), "the tampered script ran");
}

/// A trusted file changed on the host after its first open (which verified it): the
/// next read of a changed chunk fails with EIO, never returning the new bytes.
fn host_change_after_verification_gives_eio() {
    let py = python();
    let w = Work::new();
    fs::create_dir(w.path().join("sync")).unwrap();
    w.write("model.txt", "original model\n");
    w.write(
        "app.py",
        &format!(
            "f = open('model.txt', 'rb')\n{WAIT_FOR_GO}try:\n    print(f.read())\nexcept OSError as e:\n    \
             import errno\n    print(errno.errorcode[e.errno])\n"
        ),
    );
    let template = with_sync(&simple_template(&py, "app.py", "")).replace(
        "sgx.trusted_files = [ \"file:app.py\" ]",
        "sgx.trusted_files = [ \"file:app.py\", \"file:model.txt\" ]",
    );
    w.manifest(&template, &[]);
    let child = w.spawn(&mut w.launch("app.manifest", &[]));
    wait_for(&w.path().join("sync/ready"));
    // The host changes the trusted file after verification (an in-place write, same inode).
    fs::write(w.path().join("model.txt"), "tampered model!\n").unwrap();
    fs::write(w.path().join("sync/go"), "").unwrap();
    let out = w.finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "EIO\n", "a changed chunk must not be served: {}", show(&out));
    assert!(text(&out.stderr).contains("changed on the host after it was verified"), "{}", show(&out));
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "timed out waiting for {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn killed_launcher_takes_the_program_with_it() {
    let py = python();
    let w = Work::new();
    fs::create_dir(w.path().join("sync")).unwrap();
    w.write("app.py", "import os, time\nopen('/sync/pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n");
    let template = with_sync(&simple_template(&py, "app.py", ""));
    w.manifest(&template, &[]);
    let mut child =
        w.launch("app.manifest", &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid_file = w.path().join("sync/pid");
    wait_for(&pid_file);
    std::thread::sleep(Duration::from_millis(50));
    let app_pid: u32 = fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    child.kill().unwrap(); // SIGKILL: no cleanup code runs in the launcher.
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    // The program's pid is in the host's pid namespace; PDEATHSIG must have killed it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{app_pid}")).exists()
        && !fs::read_to_string(format!("/proc/{app_pid}/stat")).unwrap_or_default().contains(") Z")
    {
        assert!(Instant::now() < deadline, "the program survived its launcher");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The namespace died with its last process: nothing is mounted on the host. Only the
    // empty staging directory can remain after a SIGKILL; remove it like a cleaner would.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&format!("pfs-run-{}-", child.id())), "{mounts}");
    for e in fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("pfs-run-{}-", child.id())) {
            fs::remove_dir(e.path()).expect("the leftover staging directory is empty");
        }
    }
}

fn mounts_are_invisible_on_the_host_during_the_run() {
    let py = python();
    let w = Work::new();
    fs::create_dir(w.path().join("sync")).unwrap();
    w.write("app.py", WAIT_FOR_GO);
    let template = with_sync(&simple_template(&py, "app.py", ""));
    w.manifest(&template, &[]);
    let child = w.spawn(&mut w.launch("app.manifest", &[]));
    let pid = child.id();
    wait_for(&w.path().join("sync/ready"));
    let host_mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let ns_mounts = fs::read_to_string(format!("/proc/{pid}/mounts")).unwrap_or_default();
    fs::write(w.path().join("sync/go"), "").unwrap();
    let out = w.finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!host_mounts.contains("pfs-run-"), "view mounts leaked to the host: {host_mounts}");
    assert!(
        ns_mounts.contains(&format!("pfs-run-{pid}-")),
        "the launcher's namespace holds the view: {ns_mounts}"
    );
}

fn launcher_failures_have_named_exit_codes() {
    let py = python();
    let w = Work::new();
    w.write("app.py", "print('hi')\n");

    // Entrypoint missing from the view.
    w.manifest(&simple_template(&py, "app.py", "").replacen(&py.exe, "/nonexistent/python3", 1), &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::NOT_FOUND.into()), "{}", show(&out));
    assert!(text(&out.stderr).contains("/nonexistent/python3"), "{}", show(&out));

    // The entrypoint's mount is hidden by a later one (Gramine applies mounts in order).
    let hidden = simple_template(&py, "app.py", "")
        .replacen(&format!("\"{}\"", py.exe), "\"/opt/py/python3\"", 1)
        .replace(
            "  { type = \"tmpfs\", path = \"/tmp\" }",
            &format!("  {{ path = \"/opt/py/python3\", uri = \"file:{}\" }},\n  {{ type = \"tmpfs\", path = \"/opt\" }}", py.exe),
        );
    w.manifest(&hidden, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::NOT_FOUND.into()), "{}", show(&out));
    assert!(text(&out.stderr).contains("is listed later and hides it: list /opt first"), "{}", show(&out));

    // Encrypted mounts need pfs-fuse (no mounter given here).
    fs::create_dir(w.path().join("enc")).unwrap();
    let template =
        simple_template(&py, "app.py", "fs.insecure__keys.default = \"00112233445566778899aabbccddeeff\"\n")
            .replace(
                "  { type = \"tmpfs\"",
                "  { type = \"encrypted\", path = \"/data\", uri = \"file:enc/\" },\n  { type = \"tmpfs\"",
            );
    w.manifest(&template, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::VIEW.into()), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("needs pfs-fuse"), "{stderr}");
    assert!(stderr.contains("insecure configuration"), "{stderr}");

    // Invalid manifest.
    fs::write(w.path().join("app.manifest"), "libos.entrypoint = 3\n").unwrap();
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::MANIFEST.into()), "{}", show(&out));
    assert!(text(&out.stderr).contains("line 1: `libos.entrypoint`"), "{}", show(&out));

    // Missing manifest.
    fs::remove_file(w.path().join("app.manifest")).unwrap();
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::MANIFEST.into()), "{}", show(&out));
}

fn cmdline_argv_and_unknown_keys_at_run_time() {
    let py = python();
    let w = Work::new();
    w.write("args.py", "import sys\nprint(sys.argv[1:])\n");
    let template = format!(
        "libos.entrypoint = \"{exe}\"\nloader.insecure__use_cmdline_argv = true\nfs.mounts = [\n{mounts}]\n\
         sgx.trusted_files = [ \"file:args.py\" ]\nsgx.allowed_files = [\n{allowed}]\n",
        exe = py.exe,
        mounts = runtime_mounts(&py),
        allowed = runtime_allowed(&py)
    );
    let built = w.manifest(&template, &[]);
    // Gramine's runtime ignores unknown keys: add one after the build.
    fs::write(w.path().join("app.manifest"), format!("{}\n[future]\nfeature = 1\n", built.manifest.text()))
        .unwrap();
    // Gramine's NAME convention: `app` means `app.manifest`.
    let child = w.launch("app", &["args.py", "-x", "two words"]).output().unwrap();
    assert_eq!(child.status.code(), Some(0), "{}", show(&child));
    assert_eq!(text(&child.stdout), "['-x', 'two words']\n");
    assert!(text(&child.stderr).contains("`future`: unknown key, ignored"), "{}", show(&child));
}

fn mountpoints_created_in_host_directories_are_removed() {
    let py = python();
    let w = Work::new();
    // `/data` comes from fs.root (the work directory); mounting below it needs a
    // mountpoint inside the host directory, which must disappear after the run.
    fs::create_dir(w.path().join("data")).unwrap();
    w.write(
        "app.py",
        "import os\nassert os.listdir('/data/scratch') == []\nopen('/data/scratch/x', 'w').write('t')\n",
    );
    let template = simple_template(&py, "app.py", "").replace(
        "  { type = \"tmpfs\", path = \"/tmp\" }",
        "  { type = \"tmpfs\", path = \"/data/scratch/\" }",
    );
    w.manifest(&template, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let left: Vec<PathBuf> =
        fs::read_dir(w.path().join("data")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "mountpoint left in the host directory: {left:?}");
}

/// Not root: the launcher adds a user namespace (CI runs as root, so this case drops to
/// `nobody` with setpriv to exercise that path, including read-only remounts of trusted
/// files, which must keep the flags the kernel locks in a user namespace).
fn unprivileged_user_gets_a_user_namespace() {
    use std::os::unix::fs::PermissionsExt;
    let py = python();
    let w = Work::new();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o755)).unwrap();
    w.write("app.py", "import os\nprint(os.getuid(), open('/etc-data.txt').read().strip())\nopen('/tmp/t', 'w').write('x')\n");
    w.write("data.txt", "trusted data\n");
    let template = simple_template(&py, "app.py", "")
        .replace(
            "  { type = \"tmpfs\"",
            "  { path = \"/etc-data.txt\", uri = \"file:data.txt\" },\n  { type = \"tmpfs\"",
        )
        .replace(
            "sgx.trusted_files = [ \"file:app.py\" ]",
            "sgx.trusted_files = [ \"file:app.py\", \"file:data.txt\" ]",
        );
    w.manifest(&template, &[]);
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([LAUNCH, "app.manifest"])
        .current_dir(w.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) is needed to test the unprivileged path");
    let out = w.finish(child);
    // Trusted files are served by the launcher's FUSE view: without access to /dev/fuse
    // (mode 0600 on this machine) the run stops before the program starts, naming why.
    use std::os::unix::fs::MetadataExt;
    let fuse_for_others = fs::metadata("/dev/fuse").expect("/dev/fuse is needed").mode() & 0o006 == 0o006;
    if !fuse_for_others {
        assert_eq!(out.status.code(), Some(libos::exit::VIEW.into()), "{}", show(&out));
        assert!(text(&out.stderr).contains("mount the trusted-file view (FUSE)"), "{}", show(&out));
        assert!(out.stdout.is_empty(), "the program must not start: {}", show(&out));
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "0 trusted data\n", "root inside the user namespace");
}

/// The paper's non-confidential pattern: the program writes `result.txt` in its working
/// directory, which the manifest lists in `sgx.allowed_files`.
fn allowed_output_files_in_the_root_reach_the_host() {
    let py = python();
    let w = Work::new();
    w.write(
        "app.py",
        "open('result.txt', 'w').write('42\\n')\ntry:\n    open('/stray.txt', 'w').write('lost')\n\
         except PermissionError:\n    print('refused')\n",
    );
    let template = allow(&allow(&simple_template(&py, "app.py", ""), "file:result.txt"), "file:unused.txt");
    w.manifest(&template, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(fs::read_to_string(w.path().join("result.txt")).unwrap(), "42\n");
    assert!(!w.path().join("unused.txt").exists(), "an unused placeholder is removed");
    assert!(!w.path().join("stray.txt").exists());
    // Under the strict policy a new file in the view's `/` (a tmpfs) is not allowed; see
    // allow_all_but_log_permits_unlisted_files_with_a_warning for the warning about it.
    assert_eq!(text(&out.stdout), "refused\n", "{}", show(&out));
}

/// A stand-in for pfs-fuse that exercises the [`libos::launcher::EncryptedMounter`] seam: it
/// bind-mounts the backing directory in plaintext (with `mount(8)`, inside the launcher's
/// namespace) and logs each request. The real mounter is wired in by the `pfs` binary.
struct BindMounter {
    log: Option<PathBuf>,
}

struct BindMount(PathBuf);

impl libos::launcher::EncryptedMounter for BindMounter {
    fn mount(
        &mut self,
        r: &libos::launcher::EncryptedMountRequest<'_>,
    ) -> Result<Box<dyn libos::launcher::EncryptedMount>, libos::launcher::SeamError> {
        use std::io::Write;
        let line = format!("{} {} {} {}\n", r.view_path, r.uri, r.key_name, r.key.is_some());
        let mut f = fs::OpenOptions::new().append(true).create(true).open(self.log.as_ref().unwrap())?;
        f.write_all(line.as_bytes())?;
        let status = Command::new("mount").arg("--bind").arg(r.host_dir).arg(r.target).status()?;
        if !status.success() {
            return Err(format!("mount --bind failed: {status}").into());
        }
        Ok(Box::new(BindMount(r.target.to_owned())))
    }
}

impl libos::launcher::EncryptedMount for BindMount {
    fn unmount(self: Box<Self>) -> Result<(), libos::launcher::SeamError> {
        let status = Command::new("umount").arg(&self.0).status()?;
        if !status.success() {
            return Err(format!("umount failed: {status}").into());
        }
        Ok(())
    }
}

fn encrypted_mount_seam_directory_and_single_file() {
    let py = python();
    let w = Work::new();
    w.write("enc/input.txt", "input\n");
    w.write("enc2/model.bin", "model\n");
    w.write(
        "app.py",
        "open('/out/result.txt', 'w').write(open('/data/input.txt').read() + open('/model.bin').read())\n\
         open('/data/new.txt', 'w').write('new')\n",
    );
    let template = simple_template(
        &py,
        "app.py",
        "fs.insecure__keys.default = \"00112233445566778899aabbccddeeff\"\n",
    )
    .replace(
        "  { type = \"tmpfs\"",
        "  { type = \"encrypted\", path = \"/data/\", uri = \"file:enc/\" },\n  \
         { type = \"encrypted\", path = \"/out/result.txt\", uri = \"file:result.txt\", key_name = \"k2\" },\n  \
         { type = \"encrypted\", path = \"/model.bin\", uri = \"file:./enc2//model.bin\" },\n  { type = \"tmpfs\"",
    );
    w.manifest(&template, &[]);
    let log = w.path().join("mounter.log");
    let child = w.spawn(w.launch("app.manifest", &[]).env("LIBOS_TEST_BIND_MOUNTER", &log));
    let out = w.finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(fs::read_to_string(w.path().join("result.txt")).unwrap(), "input\nmodel\n");
    assert_eq!(fs::read_to_string(w.path().join("enc/new.txt")).unwrap(), "new");
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "/data enc default true\n/out/result.txt . k2 false\n/model.bin enc2 default true\n",
        "directory URIs without `/`, relative kept relative, one request per directory"
    );
}

fn sigterm_is_forwarded_and_the_launcher_cleans_up() {
    let py = python();
    let w = Work::new();
    fs::create_dir(w.path().join("sync")).unwrap();
    w.write(
        "app.py",
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n\
         open('/sync/ready', 'w').close()\ntime.sleep(60)\n",
    );
    let template = with_sync(&simple_template(&py, "app.py", ""));
    w.manifest(&template, &[]);
    let child = w.spawn(&mut w.launch("app.manifest", &[]));
    let pid = child.id();
    wait_for(&w.path().join("sync/ready"));
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let out = w.finish(child);
    assert_eq!(out.status.code(), Some(7), "the program's own exit status, after SIGTERM: {}", show(&out));
}

fn log_level_and_log_file() {
    let py = python();
    let w = Work::new();
    w.write("app.py", "print('out')\n");
    let template =
        simple_template(&py, "app.py", "loader.log_level = \"debug\"\nloader.log_file = \"launcher.log\"\n");
    w.manifest(&template, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stderr).lines().count(), 1, "only the simulated-TEE line: {}", show(&out));
    let log = fs::read_to_string(w.path().join("launcher.log")).unwrap();
    assert!(log.contains("pfs run: debug: simulated measurement (NOT an SGX MRENCLAVE): "), "{log}");
    assert!(log.contains("pfs run: debug: starting "), "{log}");
}

/// A stand-in for the attest client: releases a fixed key and logs what it was asked.
struct FixedKeyProvider {
    log: Option<PathBuf>,
}

impl libos::launcher::KeyProvider for FixedKeyProvider {
    fn provision(
        &mut self,
        r: &libos::launcher::ProvisionRequest<'_>,
    ) -> Result<libos::launcher::ProvisionedSecret, libos::launcher::SeamError> {
        let ca = fs::read_to_string(r.ca_chain_host_path.as_ref().ok_or("no CA path")?)?;
        let line = format!(
            "{:?} {:?} {:?} {} {}",
            r.servers,
            r.ca_chain_view_path,
            r.set_key,
            ca.trim(),
            r.measurement == &libos::measure(r.manifest)
        );
        fs::write(self.log.as_ref().unwrap(), line)?;
        Ok(libos::launcher::ProvisionedSecret::Key {
            name: r.set_key.ok_or("SECRET_PROVISION_SET_KEY missing")?.to_owned(),
            key: pfs_core::Key::from_bytes([9; 16]),
        })
    }
}

fn secret_provisioning_seam() {
    let py = python();
    let w = Work::new();
    w.write("ssl/ca.crt", "CA CERT\n");
    w.write("enc/in.txt", "x");
    w.write("app.py", "import os\nprint(os.environ.get('LD_PRELOAD'), os.path.exists('/data/in.txt'))\n");
    let template = simple_template(
        &py,
        "app.py",
        "loader.env.LD_PRELOAD = \"libsecret_prov_attest.so\"\n\
         loader.env.SECRET_PROVISION_CONSTRUCTOR = \"1\"\n\
         loader.env.SECRET_PROVISION_SET_KEY = \"default\"\n\
         loader.env.SECRET_PROVISION_CA_CHAIN_PATH = \"/ssl/ca.crt\"\n\
         loader.env.SECRET_PROVISION_SERVERS = \"localhost:4433\"\n",
    )
    .replace(
        "  { type = \"tmpfs\"",
        "  { path = \"/ssl/ca.crt\", uri = \"file:ssl/ca.crt\" },\n  \
         { type = \"encrypted\", path = \"/data\", uri = \"file:enc/\" },\n  { type = \"tmpfs\"",
    )
    .replace(
        "sgx.trusted_files = [ \"file:app.py\" ]",
        "sgx.trusted_files = [ \"file:app.py\", \"file:ssl/ca.crt\" ]",
    );
    w.manifest(&template, &[]);
    // The CA file changes after `pfs manifest`: the run must stop before any key server is asked.
    w.write("ssl/ca.crt", "EVIL CA\n");
    let (mounts, keys) = (w.path().join("mounter.log"), w.path().join("provider.log"));
    let run = || {
        w.finish(
            w.spawn(
                w.launch("app.manifest", &[])
                    .env("LIBOS_TEST_BIND_MOUNTER", &mounts)
                    .env("LIBOS_TEST_KEY_PROVIDER", &keys),
            ),
        )
    };
    let out = run();
    assert_eq!(out.status.code(), Some(libos::exit::TRUSTED_FILE.into()), "{}", show(&out));
    assert!(!keys.exists(), "the key provider was called before the trusted files were checked");

    w.write("ssl/ca.crt", "CA CERT\n");
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "None True\n", "LD_PRELOAD stripped, encrypted mount served");
    assert_eq!(
        fs::read_to_string(&keys).unwrap(),
        "[\"localhost:4433\"] Some(\"/ssl/ca.crt\") Some(\"default\") CA CERT true"
    );
    assert_eq!(
        fs::read_to_string(&mounts).unwrap(),
        "/data enc default true\n",
        "the provisioned key is used"
    );
}

/// `pfs manifest --pin-launcher`: the measurement covers the launcher binary and `pfs run`
/// refuses any other one.
fn pinned_launcher_is_checked() {
    let py = python();
    let w = Work::new();
    w.write("app.py", "print('ran')\n");
    let template = simple_template(&py, "app.py", "");
    let built = w.manifest_pinned(&template, &[], Some(std::env::current_exe().unwrap()));
    assert_ne!(built.measurement.launcher_digest, [0; 32]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "this very launcher is pinned: {}", show(&out));

    w.manifest_pinned(&template, &[], Some(PathBuf::from(&py.exe)));
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::LAUNCHER.into()), "{}", show(&out));
    assert!(text(&out.stderr).contains("the manifest pins launcher sha256"), "{}", show(&out));
    assert!(!text(&out.stdout).contains("ran"));
}

/// A `#!/bin/sh` script with only `/bin` and `/lib` mounted (no `/lib64`): the ELF
/// interpreter of `/bin/sh` is provided from the view's library directories, as Gramine
/// finds it by name.
fn shell_script_finds_its_interpreters_like_gramine() {
    use std::os::unix::fs::PermissionsExt;
    let w = Work::new();
    w.write("run.sh", "#!/bin/sh\necho \"sh says $1\"\nexit 5\n");
    fs::set_permissions(w.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    w.manifest(
        "libos.entrypoint = \"/app/run.sh\"\nloader.argv = [\"run.sh\", \"hi\"]\nfs.mounts = [\n  \
         { path = \"/bin\", uri = \"file:/bin\" },\n  { path = \"/lib\", uri = \"file:/lib\" },\n  \
         { path = \"/app/run.sh\", uri = \"file:run.sh\" },\n]\nsgx.trusted_files = [ \"file:run.sh\" ]\n\
         sgx.allowed_files = [ \"file:/bin/\", \"file:/lib/\" ]\n",
        &[],
    );
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert_eq!(text(&out.stdout), "sh says hi\n");
}

/// Gramine's Python and PyTorch templates mount the libc directory at `/lib` and then
/// `arch_libdir` (the same host directory) at `/lib/x86_64-linux-gnu`: the mountpoint must
/// be made in the view without creating anything in the host's system directory.
fn system_directories_are_shadowed_not_modified() {
    let py = python();
    let w = Work::new();
    fs::create_dir(w.path().join("sync")).unwrap();
    w.write("app.py", &format!("{WAIT_FOR_GO}import json\nprint(json.dumps({{'ok': 1}}))\n"));
    let runtime = libos::template::host_runtime_dir().display().to_string();
    // In the view, `{runtime}` lies below `/lib`, which shows the host's `{runtime}`.
    let below_lib = runtime.strip_prefix("/lib/").expect("the libc directory is below /lib");
    let nested = format!("{runtime}/{below_lib}");
    let template = format!(
        "libos.entrypoint = \"{exe}\"\nloader.argv = [\"python3\", \"app.py\"]\nfs.mounts = [\n  \
         {{ path = \"/lib\", uri = \"file:{{{{ gramine.runtimedir() }}}}\" }},\n  \
         {{ path = \"{runtime}\", uri = \"file:{runtime}\" }},\n  {{ path = \"/usr\", uri = \"file:/usr\" }},\n  \
         {{ path = \"{prefix}\", uri = \"file:{prefix}\" }},\n  {SYNC_MOUNT},\n]\nsgx.trusted_files = [ \"file:app.py\" ]\n\
         sgx.allowed_files = [ \"file:{{{{ gramine.runtimedir() }}}}/\", \"file:/usr/\", \"file:{prefix}/\", \"file:sync/\" ]\n",
        exe = py.exe,
        prefix = py.prefix,
    );
    w.manifest(&template, &[]);
    let child = w.spawn(&mut w.launch("app.manifest", &[]));
    wait_for(&w.path().join("sync/ready"));
    let created_on_host = Path::new(&nested).exists();
    fs::write(w.path().join("sync/go"), "").unwrap();
    let out = w.finish(child);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "{\"ok\": 1}\n");
    assert!(!created_on_host, "{nested} was created on the host during the run");
}

/// Tries file operations in the view and records the errno name of each (or "ok"), then
/// exits with 13 if reading the unlisted file was refused.
const POLICY_PY: &str = r#"
import errno, json, os, sys
res = {}
def attempt(name, fn):
    try:
        fn()
        res[name] = "ok"
    except OSError as e:
        res[name] = errno.errorcode[e.errno]
def rw_allowed_dir():
    os.makedirs("/out/sub", exist_ok=True)
    with open("/out/sub/x.txt", "w") as f:
        f.write("hello")
    with open("/out/sub/x.txt", "a") as f:
        f.write(" world")
    assert open("/out/sub/x.txt").read() == "hello world"
    os.truncate("/out/sub/x.txt", 5)
    os.rename("/out/sub/x.txt", "/out/x.txt")
    with open("/out/tmp.txt", "w") as f:
        f.write("t")
    os.unlink("/out/tmp.txt")
def rw(path):
    with open(path, "w") as f:
        f.write("data")
    assert open(path).read() == "data"
attempt("read_unlisted", lambda: open("/data/secret.txt").read())
attempt("stat_unlisted", lambda: os.stat("/data/secret.txt"))
attempt("list_unlisted_dir", lambda: os.listdir("/data"))
attempt("create_in_unlisted_dir", lambda: open("/data/new.txt", "w"))
attempt("unlink_unlisted", lambda: os.unlink("/data/victim.txt"))
attempt("create_in_view_root", lambda: open("/stray.txt", "w").write("lost"))
attempt("read_trusted", lambda: open("/data/trusted.txt").read())
attempt("write_trusted", lambda: open("/data/trusted.txt", "a"))
attempt("allowed_file_in_unlisted_dir", lambda: open("/data/allowed.txt", "r+").write("changed"))
attempt("new_allowed_file", lambda: open("/data/later.txt", "w").write("later"))
attempt("allowed_dir", rw_allowed_dir)
attempt("tmpfs", lambda: rw("/tmp/t.txt"))
attempt("encrypted", lambda: rw("/enc/e.txt"))
attempt("dev_null", lambda: open("/dev/null", "w").write("x"))
attempt("dev_urandom", lambda: open("/dev/urandom", "rb").read(4))
attempt("proc", lambda: open("/proc/self/status").read())
json.dump(res, open("/out/result.json", "w"), sort_keys=True)
try:
    open("/data/secret.txt").read()
except PermissionError:
    sys.exit(13)
"#;

/// A manifest for [`POLICY_PY`]: `/data` is a chroot mount that is not allowed (one
/// trusted and two allowed files in it), `/out` an allowed directory, `/enc` an encrypted
/// mount (through the test's bind mounter) and `/tmp` a tmpfs.
fn policy_work(py: &Python, extra: &str) -> Work {
    let w = Work::new();
    w.write("app.py", POLICY_PY);
    w.write("data/secret.txt", "unlisted\n");
    w.write("data/victim.txt", "unlisted\n");
    w.write("data/trusted.txt", "trusted\n");
    w.write("data/allowed.txt", "allowed\n");
    fs::create_dir(w.path().join("out")).unwrap();
    fs::create_dir(w.path().join("enc")).unwrap();
    let template = simple_template(
        py,
        "app.py",
        &format!("fs.insecure__keys.default = \"00112233445566778899aabbccddeeff\"\n{extra}"),
    )
    .replace(
        "  { type = \"tmpfs\"",
        "  { path = \"/data\", uri = \"file:data\" },\n  { path = \"/out\", uri = \"file:out\" },\n  \
             { type = \"encrypted\", path = \"/enc/\", uri = \"file:enc/\" },\n  { type = \"tmpfs\"",
    )
    .replace(
        "sgx.trusted_files = [ \"file:app.py\" ]",
        "sgx.trusted_files = [ \"file:app.py\", \"file:data/trusted.txt\" ]",
    );
    let template =
        allow(&allow(&allow(&template, "file:out/"), "file:data/allowed.txt"), "file:data/later.txt");
    w.manifest(&template, &[]);
    w
}

fn run_policy(w: &Work) -> (Output, serde_json::Value) {
    let log = w.path().join("mounter.log");
    let out = w.finish(w.spawn(w.launch("app.manifest", &[]).env("LIBOS_TEST_BIND_MOUNTER", &log)));
    let result = fs::read_to_string(w.path().join("out/result.json"))
        .unwrap_or_else(|e| panic!("no result ({e}): {}", show(&out)));
    (out, serde_json::from_str(&result).unwrap())
}

/// Gramine's default `sgx.file_check_policy = "strict"`: files that are neither trusted,
/// allowed nor encrypted are refused with EACCES (enforced by Landlock); directories can
/// still be listed; allowed files and directories, tmpfs, encrypted mounts, `/dev` and
/// `/proc` work; trusted files cannot be written.
fn strict_policy_refuses_unlisted_files() {
    let py = python();
    let w = policy_work(&py, "");
    let (out, r) = run_policy(&w);
    assert_eq!(out.status.code(), Some(13), "the program saw EACCES and exited with 13: {}", show(&out));
    let expect = |name: &str, want: &[&str]| {
        let got = r[name].as_str().unwrap_or("missing");
        assert!(want.contains(&got), "{name}: got {got}, want one of {want:?}; all: {r}");
    };
    expect("read_unlisted", &["EACCES"]);
    expect("create_in_unlisted_dir", &["EACCES"]);
    expect("unlink_unlisted", &["EACCES"]);
    expect("create_in_view_root", &["EACCES"]);
    expect("write_trusted", &["EACCES", "EROFS"]);
    expect("stat_unlisted", &["ok"]);
    expect("list_unlisted_dir", &["ok"]);
    expect("read_trusted", &["ok"]);
    expect("allowed_file_in_unlisted_dir", &["ok"]);
    expect("new_allowed_file", &["ok"]);
    expect("allowed_dir", &["ok"]);
    expect("tmpfs", &["ok"]);
    expect("encrypted", &["ok"]);
    expect("dev_null", &["ok"]);
    expect("dev_urandom", &["ok"]);
    expect("proc", &["ok"]);
    // The host agrees: refused operations changed nothing, allowed ones landed.
    assert!(!w.path().join("data/new.txt").exists());
    assert_eq!(fs::read_to_string(w.path().join("data/secret.txt")).unwrap(), "unlisted\n");
    assert!(w.path().join("data/victim.txt").exists());
    assert_eq!(fs::read_to_string(w.path().join("data/trusted.txt")).unwrap(), "trusted\n");
    assert_eq!(fs::read_to_string(w.path().join("data/allowed.txt")).unwrap(), "changed\n");
    assert_eq!(fs::read_to_string(w.path().join("data/later.txt")).unwrap(), "later");
    assert_eq!(fs::read_to_string(w.path().join("out/x.txt")).unwrap(), "hello");
    assert_eq!(fs::read_to_string(w.path().join("enc/e.txt")).unwrap(), "data");
    assert!(!text(&out.stderr).contains("allow_all_but_log"), "{}", show(&out));
}

/// `allow_all_but_log`: the same unlisted read works, one warning says that accesses are
/// not checked nor logged one by one, and trusted files stay read-only.
fn allow_all_but_log_permits_unlisted_files_with_a_warning() {
    let py = python();
    let w = policy_work(&py, "sgx.file_check_policy = \"allow_all_but_log\"\n");
    let (out, r) = run_policy(&w);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(r["read_unlisted"], "ok", "{r}");
    assert_eq!(r["create_in_unlisted_dir"], "ok", "{r}");
    assert_eq!(r["unlink_unlisted"], "ok", "{r}");
    assert_eq!(r["create_in_view_root"], "ok", "{r}");
    assert!(["EACCES", "EROFS"].contains(&r["write_trusted"].as_str().unwrap()), "{r}");
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches(libos::launcher::ALLOW_ALL_BUT_LOG_WARNING).count(),
        1,
        "one warning at start: {stderr}"
    );
    assert!(stderr.contains("created /stray.txt directly in the view's `/`"), "{stderr}");
    assert_eq!(fs::read_to_string(w.path().join("data/trusted.txt")).unwrap(), "trusted\n");
}

/// Gramine refuses to start an entrypoint that is neither trusted nor allowed; so does the
/// launcher, before the program starts, naming the file (also for a `#!` interpreter).
fn unlisted_entrypoint_or_interpreter_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let py = python();
    let w = Work::new();
    fs::create_dir(w.path().join("out")).unwrap();
    w.write("app.py", "open('/out/ran', 'w').write('yes')\n");
    // Python's directory is mounted but not allowed.
    let template = simple_template(&py, "app.py", "")
        .replace("  \"file:/usr/\",\n", "")
        .replace("  { type = \"tmpfs\"", "  { path = \"/out\", uri = \"file:out\" },\n  { type = \"tmpfs\"");
    let template = allow(&template, "file:out/");
    w.manifest(&template, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::EXEC.into()), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the entrypoint {0} (host file {0}) is neither a trusted nor an allowed file",
            py.exe
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("list file:{} in sgx.trusted_files or sgx.allowed_files", py.exe)),
        "{stderr}"
    );
    assert!(!w.path().join("out/ran").exists(), "the program ran");

    // A trusted script whose `#!` interpreter is not listed.
    w.write("run.sh", "#!/bin/sh\necho ran\n");
    fs::set_permissions(w.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    w.manifest(
        "libos.entrypoint = \"/app/run.sh\"\nfs.mounts = [\n  { path = \"/bin\", uri = \"file:/bin\" },\n  \
         { path = \"/lib\", uri = \"file:/lib\" },\n  { path = \"/app/run.sh\", uri = \"file:run.sh\" },\n]\n\
         sgx.trusted_files = [ \"file:run.sh\" ]\nsgx.allowed_files = [ \"file:/lib/\" ]\n",
        &[],
    );
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(libos::exit::EXEC.into()), "{}", show(&out));
    assert!(text(&out.stderr).contains("its #! interpreter /bin/sh (host file /bin/sh)"), "{}", show(&out));
    assert!(text(&out.stdout).is_empty(), "{}", show(&out));
}

/// A SIGKILLed launcher leaves its empty staging directory `/tmp/pfs-run-PID-N`; the next
/// launcher removes it when PID is gone, but never a non-empty one or one of a live PID.
fn stale_staging_directories_are_removed() {
    let py = python();
    let w = Work::new();
    w.write("app.py", "print('ok')\n");
    w.manifest(&simple_template(&py, "app.py", ""), &[]);
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let tmp = std::env::temp_dir();
    let stale = tmp.join(format!("pfs-run-{dead}-7"));
    let full = tmp.join(format!("pfs-run-{dead}-8"));
    let live = tmp.join(format!("pfs-run-{}-9", std::process::id()));
    for d in [&stale, &full, &live] {
        fs::create_dir(d).unwrap();
    }
    fs::write(full.join("keep"), "x").unwrap();
    let out = w.run(&[]);
    let (stale_left, full_left, live_left) = (stale.exists(), full.join("keep").exists(), live.exists());
    let _ = fs::remove_dir(&stale);
    let _ = fs::remove_dir_all(&full);
    let _ = fs::remove_dir(&live);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!stale_left, "the empty staging directory of a dead launcher was not removed");
    assert!(full_left, "a non-empty directory was removed");
    assert!(live_left, "the directory of a live process was removed");
}

/// Reads and writes `/dev/attestation` from a Python program (spec §7, §4.3).
const DEV_ATTESTATION_PY: &str = r#"
import errno, os, sys
d = "/dev/attestation"
mounts = [l.split() for l in open("/proc/self/mounts")]
assert any(m[1] == d and m[2].startswith("fuse") for m in mounts), mounts
print(open(d + "/attestation_type").read())
assert sorted(os.listdir(d)) == ["attestation_type", "keys", "user_report_data"], os.listdir(d)
assert not os.path.exists(d + "/quote")
assert sorted(os.listdir(d + "/keys")) == ["default", "k2"], os.listdir(d + "/keys")
assert os.stat(d + "/keys/default").st_mode & 0o777 == 0o600
assert open(d + "/keys/default", "rb").read() == bytes.fromhex("00112233445566778899aabbccddeeff")
assert open(d + "/keys/k2", "rb").read() == b"", "a registered name without a key reads empty"
try:
    open(d + "/keys/default", "wb")
    sys.exit("writing a key was accepted")
except OSError as e:
    assert e.errno == errno.EACCES, e
rd_path = d + "/user_report_data"
assert open(rd_path, "rb").read() == bytes(64)
rd = bytes(range(64))
with open(rd_path, "wb") as f:
    f.write(rd)
assert open(rd_path, "rb").read() == rd

def attempt(n):
    fd = os.open(rd_path, os.O_WRONLY)
    try:
        os.write(fd, b"x" * n)
    except OSError as e:
        os.close(fd)
        return e.errno
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0

assert attempt(10) == errno.EACCES, "10 bytes"
assert attempt(65) == errno.EACCES, "65 bytes"
assert attempt(64) == 0
assert open(rd_path, "rb").read() == b"x" * 64
print("ok")
"#;

fn dev_attestation_keys_and_user_report_data() {
    let py = python();
    let w = Work::new();
    w.write("app.py", DEV_ATTESTATION_PY);
    fs::create_dir(w.path().join("enc")).unwrap();
    let template = with_mount(
        &simple_template(&py, "app.py", "fs.insecure__keys.default = \"00112233445566778899aabbccddeeff\"\n"),
        "{ type = \"encrypted\", path = \"/data/\", uri = \"file:enc/\", key_name = \"k2\" }",
    );
    w.manifest(&template, &[]);
    let log = w.path().join("mounter.log");
    let run = || w.finish(w.spawn(w.launch("app.manifest", &[]).env("LIBOS_TEST_BIND_MOUNTER", &log)));
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "none\nok\n", "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("setting a key at run time is not supported"), "{stderr}");
    assert!(!stderr.contains("00112233445566778899aabbccddeeff"), "a key was logged: {stderr}");

    // Remote attestation asked for, but this launcher has no quote provider: said, not faked.
    w.manifest(&format!("{template}sgx.remote_attestation = \"dcap\"\n"), &[]);
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "none\nok\n", "{}", show(&out));
    assert!(text(&out.stderr).contains("this launcher has no attester"), "{}", show(&out));
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("pfs-attestation"), "left mounted: {mounts}");
}

/// When `/dev/attestation` cannot be mounted (here: an unprivileged user who cannot open
/// `/dev/fuse`, mode 0600 on this machine), a manifest that asks for remote attestation
/// stops with the view error code and leaves nothing behind; one that does not runs
/// without it.
fn dev_attestation_mount_failure_stops_a_dcap_run_cleanly() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let py = python();
    let w = Work::new();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o755)).unwrap();
    w.write("app.py", "import os\nprint(os.path.exists('/dev/attestation/attestation_type'))\n");
    let template = simple_template(&py, "app.py", "");
    let fuse_for_others = fs::metadata("/dev/fuse").expect("/dev/fuse is needed").mode() & 0o006 == 0o006;
    let unprivileged = || {
        let child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(std::env::current_exe().unwrap())
            .args([LAUNCH, "app.manifest"])
            .current_dir(w.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux) is needed to test the unprivileged path");
        w.finish(child)
    };

    // Without trusted files, which need the FUSE trusted view themselves.
    let untrusted = allow(
        &template.replace("sgx.trusted_files = [ \"file:app.py\" ]", "sgx.trusted_files = [ ]"),
        "file:app.py",
    );
    assert_ne!(untrusted, template, "the template lists app.py as trusted");
    w.manifest(&format!("{untrusted}sgx.remote_attestation = \"dcap\"\n"), &[]);
    let out = unprivileged();
    if fuse_for_others {
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert_eq!(text(&out.stdout), "True\n");
    } else {
        assert_eq!(out.status.code(), Some(libos::exit::VIEW.into()), "{}", show(&out));
        assert!(text(&out.stderr).contains("mount /dev/attestation (FUSE)"), "{}", show(&out));
        assert!(out.stdout.is_empty(), "the program must not start: {}", show(&out));
    }

    // A run that does not ask for attestation goes on without /dev/attestation.
    w.manifest(&untrusted, &[]);
    let out = unprivileged();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), format!("{}\n", if fuse_for_others { "True" } else { "False" }));
    if !fuse_for_others {
        assert!(text(&out.stderr).contains("/dev/attestation is not available"), "{}", show(&out));
    }
}

/// The `verified trusted file HOST` debug lines of a run, for files below `dir`.
fn verified_below(stderr: &str, dir: &Path) -> Vec<String> {
    let prefix = format!("pfs run: debug: verified trusted file {}/", dir.display());
    stderr.lines().filter(|l| l.starts_with(&prefix)).map(str::to_owned).collect()
}

/// A trusted tree of 20,000 files: only what the program opens is hashed at run time
/// (the debug log names each verification), and listing a directory of it works.
fn trusted_tree_cost_follows_what_the_program_opens() {
    let py = python();
    let w = Work::new();
    let (dirs, per_dir) = (200, 100);
    for d in 0..dirs {
        let dir = w.path().join(format!("tree/d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            fs::write(dir.join(format!("f{f}.txt")), format!("{d}-{f}\n")).unwrap();
        }
    }
    w.write(
        "app.py",
        "import os\nprint(len(os.listdir('/tree/d7')))\nfor p in ['/tree/d0/f0.txt', '/tree/d7/f3.txt', \
         '/tree/d199/f99.txt']:\n    print(open(p).read(), end='')\n",
    );
    let template = with_mount(
        &simple_template(&py, "app.py", "loader.log_level = \"debug\"\n"),
        "{ path = \"/tree\", uri = \"file:tree\" }",
    )
    .replace(
        "sgx.trusted_files = [ \"file:app.py\" ]",
        "sgx.trusted_files = [ \"file:app.py\", \"file:tree/\" ]",
    );
    let built = w.manifest(&template, &[]);
    assert!(built.manifest.text().matches("tree/d").count() >= dirs * per_dir, "the tree was expanded");
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), format!("{per_dir}\n0-0\n7-3\n199-99\n"));
    let stderr = text(&out.stderr);
    let verified = verified_below(&stderr, &w.path().join("tree"));
    assert_eq!(verified.len(), 3, "only the three opened files are hashed: {verified:?}");
    let listed = dirs * per_dir + 1;
    assert!(stderr.contains(&format!("; {listed} listed;")), "summary line: {stderr}");
}

/// `mmap` and `dlopen` of a trusted shared object served by the trusted view.
fn trusted_shared_object_can_be_mapped_and_loaded() {
    let py = python();
    let w = Work::new();
    let so = Command::new(&py.exe).args(["-c", "import _ctypes; print(_ctypes.__file__)"]).output().unwrap();
    let so = PathBuf::from(text(&so.stdout).trim());
    assert!(so.is_file(), "a shared object of the interpreter: {}", so.display());
    fs::create_dir(w.path().join("native")).unwrap();
    fs::copy(&so, w.path().join("native/libcopy.so")).unwrap();
    w.write(
        "app.py",
        "import ctypes, mmap\nf = open('/native/libcopy.so', 'rb')\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n\
         print(m[:4] == b'\\x7fELF', len(m))\nlib = ctypes.CDLL('/native/libcopy.so')\nprint('loaded')\n",
    );
    let template = with_mount(
        &simple_template(&py, "app.py", "loader.log_level = \"debug\"\n"),
        "{ path = \"/native\", uri = \"file:native\" }",
    )
    .replace(
        "sgx.trusted_files = [ \"file:app.py\" ]",
        "sgx.trusted_files = [ \"file:app.py\", \"file:native/\" ]",
    );
    w.manifest(&template, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let size = fs::metadata(&so).unwrap().len();
    assert_eq!(text(&out.stdout), format!("True {size}\nloaded\n"), "{}", show(&out));
    assert_eq!(verified_below(&text(&out.stderr), &w.path().join("native")).len(), 1, "{}", show(&out));
}

/// Gramine's tutorial order: the entrypoint mounted first, the venv after it (hiding that
/// mount, as in Gramine, where it serves the same host file). The venv's `bin/python3` is
/// a symlink to an interpreter outside the view; like Gramine's chroot mounts, the trusted
/// view follows it on the host, and the trusted hash is the one of the link's path.
fn tutorial_mount_order_with_a_symlinked_venv_python() {
    let py = python();
    let w = Work::new();
    let base = tempfile::tempdir().unwrap();
    let real = base.path().join("python3");
    fs::copy(&py.exe, &real).unwrap();
    fs::create_dir_all(w.path().join("venv/bin")).unwrap();
    std::os::unix::fs::symlink(&real, w.path().join("venv/bin/python3")).unwrap();
    w.write("venv/pyvenv.cfg.txt", "not a venv config, just content\n");
    w.write(
        "app.py",
        &format!(
            "import os\nprint(os.path.exists({:?}), open('/venv/pyvenv.cfg.txt').read(), end='')\n",
            base.path().display().to_string()
        ),
    );
    let template = simple_template(&py, "app.py", "")
        .replace(&format!("libos.entrypoint = \"{}\"", py.exe), "libos.entrypoint = \"/venv/bin/python3\"")
        .replace(
            "fs.mounts = [\n",
            "fs.mounts = [\n  { path = \"/venv/bin/python3\", uri = \"file:venv/bin/python3\" },\n",
        )
        .replace(
            "sgx.trusted_files = [ \"file:app.py\" ]",
            "sgx.trusted_files = [ \"file:app.py\", \"file:venv/\" ]",
        );
    let template = with_mount(&template, "{ path = \"/venv\", uri = \"file:venv\" }");
    assert!(
        template.contains("/venv/bin/python3\"")
            && template.contains("libos.entrypoint = \"/venv/bin/python3\"")
    );
    w.manifest(&template, &[]);
    let out = w.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "False not a venv config, just content\n", "{}", show(&out));
}
