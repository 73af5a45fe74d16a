//! Gramine-style manifest templates, rendered with minijinja.
//!
//! The context keeps Gramine's names so templates port unchanged (spec §1):
//! `env`, every `-D name=value` define, `python.*`, `ldd(*binaries)`, `gramine.libos` and
//! `gramine.runtimedir()`. Undefined variables are errors; nothing is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Kwargs, Object, ObjectRepr, Rest, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, State, UndefinedBehavior};

/// A template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render template {name}: {message}")]
pub struct TemplateError {
    /// The template's name (its path).
    pub name: String,
    /// minijinja's message with the line and the offending expression.
    pub message: String,
}

/// Inputs of a rendering: the defines and where the helpers look.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// `-D name=value` defines; a bare `-D name` is `true`.
    pub defines: Vec<(String, DefineValue)>,
    /// The build-time environment, exposed as `env`.
    pub env: BTreeMap<String, String>,
    /// The interpreter queried for `python.*` (default `python3`, or `$PFS_PYTHON`).
    pub python: PathBuf,
    /// What `gramine.libos` returns (default: the running executable).
    pub libos: PathBuf,
}

/// The value of a `-D` define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefineValue {
    /// `-D name=value`.
    Str(String),
    /// `-D name`.
    True,
}

impl DefineValue {
    /// Parses one `-D` argument (`name=value` or `name`).
    pub fn parse_define(arg: &str) -> (String, DefineValue) {
        match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), DefineValue::Str(value.to_owned())),
            None => (arg.to_owned(), DefineValue::True),
        }
    }
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            defines: Vec::new(),
            env: std::env::vars().collect(),
            python: std::env::var_os("PFS_PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into()),
            libos: std::env::current_exe().unwrap_or_else(|_| "pfs".into()),
        }
    }
}

/// The most template instructions one rendering may execute (minijinja's fuel).
///
/// Jinja has no unbounded loop, but nested `range()` loops (each up to 100,000 items) or
/// recursive macros multiply, so without a bound a hostile or mistaken template could
/// keep `pfs manifest` busy for hours. The example templates (`examples/*/`) render
/// within 100 instructions, and a loop over `ldd()` output costs a few per library, so
/// real templates stay orders of magnitude below this; a runaway template stops after
/// well under a second (0.07 s for the unit test's nested loops, debug build).
pub const RENDER_FUEL: u64 = 1_000_000;

/// Renders template text. `name` is used in error messages.
///
/// A template that runs more than [`RENDER_FUEL`] instructions is refused with an error
/// that says so; memory is not bounded (a template can build huge strings in a few
/// instructions, as with Jinja itself: templates are the builder's own code).
pub fn render(name: &str, source: &str, options: &RenderOptions) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.set_fuel(Some(RENDER_FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("ldd", ldd);

    let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
    ctx.insert("env".into(), Value::from(options.env.clone()));
    let python = Python { interpreter: options.python.clone(), info: OnceLock::new() };
    if source.contains("python.") {
        // Ask the interpreter up front so that its failure is reported as such, not as an
        // undefined attribute.
        python.info().map_err(|e| TemplateError { name: name.to_owned(), message: e.to_string() })?;
    }
    ctx.insert("python".into(), Value::from_object(python));
    ctx.insert("gramine".into(), Value::from_object(Gramine { libos: options.libos.clone() }));
    for (name, value) in &options.defines {
        let value = match value {
            DefineValue::Str(s) => Value::from(s.clone()),
            DefineValue::True => Value::from(true),
        };
        ctx.insert(name.clone(), value);
    }
    env.render_named_str(name, source, ctx).map_err(|err| {
        let message = if err.kind() == ErrorKind::OutOfFuel {
            format!(
                "the template ran more than {RENDER_FUEL} instructions (nested loops or recursion?) \
                 and was stopped; simplify its loops ({})",
                describe(&err)
            )
        } else {
            describe(&err)
        };
        TemplateError { name: name.to_owned(), message }
    })
}

/// minijinja's message (kind, detail, `name:line`) and its causes. Not `{:#}`: that adds
/// minijinja's source excerpt, whose rendering panics on some errors (a span whose end
/// column precedes its start, e.g. `{%for in range(1)%}`; found by fuzzing).
fn describe(err: &minijinja::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn fail(message: impl Into<String>) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, message.into())
}

/// `ldd(*binaries)`: sorted unique absolute paths of the shared libraries `ldd` reports.
fn ldd(binaries: Rest<String>) -> Result<Vec<String>, minijinja::Error> {
    let mut libs = std::collections::BTreeSet::new();
    for bin in binaries.iter() {
        let out = Command::new("ldd").arg(bin).output().map_err(|e| fail(format!("cannot run ldd: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!("ldd {bin} failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            let path = match line.split_once(" => ") {
                Some((_, rest)) => rest.split(" (").next().unwrap_or(""),
                None => line.split(" (").next().unwrap_or(""),
            };
            if path.starts_with('/') {
                libs.insert(path.to_owned());
            }
        }
    }
    Ok(libs.into_iter().collect())
}

/// The host's libc directory: what `gramine.runtimedir()` means without a patched glibc.
pub fn host_runtime_dir() -> PathBuf {
    let arch = std::env::consts::ARCH;
    let candidates = [
        format!("/lib/{arch}-linux-gnu"),
        format!("/usr/lib/{arch}-linux-gnu"),
        "/lib64".into(),
        "/usr/lib64".into(),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("libc.so.6").exists())
        .unwrap_or_else(|| PathBuf::from("/lib"))
}

#[derive(Debug)]
struct Gramine {
    libos: PathBuf,
}

impl Object for Gramine {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "libos" => Some(Value::from(self.libos.display().to_string())),
            _ => None,
        }
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "runtimedir" => {
                // `runtimedir(libc='glibc')`: only glibc exists here.
                for arg in args {
                    if let Ok(kwargs) = Kwargs::try_from(arg.clone()) {
                        let libc: Option<String> = kwargs.get("libc")?;
                        if libc.as_deref().is_some_and(|l| l != "glibc") {
                            return Err(fail("gramine.runtimedir: only libc='glibc' is available"));
                        }
                    }
                }
                Ok(Value::from(host_runtime_dir().display().to_string()))
            }
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

const PYTHON_INFO: &str = r#"
import json, sys, sysconfig
try:
    distlib = sysconfig.get_path("purelib", "deb_system")
except Exception:
    distlib = sysconfig.get_path("purelib")
impl = sys.implementation
print(json.dumps({
    "stdlib": sysconfig.get_path("stdlib"),
    "platstdlib": sysconfig.get_path("platstdlib"),
    "purelib": sysconfig.get_path("purelib"),
    "distlib": distlib,
    "paths": sysconfig.get_paths(),
    "implementation": {"name": impl.name, "cache_tag": impl.cache_tag,
                       "version": ".".join(map(str, impl.version[:3]))},
}))
"#;

#[derive(Debug)]
struct Python {
    interpreter: PathBuf,
    info: OnceLock<Result<serde_json::Value, String>>,
}

impl Python {
    /// Runs the interpreter once and caches what it reported.
    fn info(&self) -> Result<&serde_json::Value, minijinja::Error> {
        self.info
            .get_or_init(|| run_json(&self.interpreter, PYTHON_INFO))
            .as_ref()
            .map_err(|e| fail(e.clone()))
    }

    fn field(&self, name: &str) -> Result<Value, minijinja::Error> {
        let info = self.info()?;
        Ok(Value::from_serialize(&info[name]))
    }
}

fn run_json(interpreter: &Path, script: &str) -> Result<serde_json::Value, String> {
    run_json_args(interpreter, script, "")
}

/// Runs `interpreter -I -c script arg` and parses the JSON it prints.
fn run_json_args(interpreter: &Path, script: &str, arg: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(interpreter)
        .args(["-I", "-c", script, arg])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", interpreter.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            interpreter.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{} printed invalid JSON: {e}", interpreter.display()))
}

impl Object for Python {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            name @ ("stdlib" | "platstdlib" | "purelib" | "distlib" | "implementation") => {
                self.field(name).ok()
            }
            _ => None,
        }
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            // With keyword arguments (`scheme=`, `vars=`), ask the interpreter, as
            // `sysconfig.get_path(s)(**kwargs)` would answer.
            "get_paths" | "get_path" if args.iter().any(|a| Kwargs::try_from(a.clone()).is_ok()) => {
                let mut call = serde_json::Map::new();
                for arg in args {
                    match Kwargs::try_from(arg.clone()) {
                        Ok(kwargs) => {
                            for key in kwargs.args() {
                                let v: Value = kwargs.get(key)?;
                                let v = serde_json::to_value(&v).map_err(|e| fail(e.to_string()))?;
                                call.insert(key.to_owned(), v);
                            }
                        }
                        Err(_) => {
                            call.insert("name".into(), arg.to_string().into());
                        }
                    }
                }
                let script = format!(
                    "import json, sys, sysconfig\nkw = json.loads(sys.argv[1])\n\
                     print(json.dumps(sysconfig.{method}(**kw)))"
                );
                let out =
                    run_json_args(&self.interpreter, &script, &serde_json::Value::Object(call).to_string())
                        .map_err(fail)?;
                Ok(Value::from_serialize(&out))
            }
            "get_paths" => self.field("paths"),
            "get_path" => {
                let name =
                    args.first().and_then(|v| v.as_str()).ok_or_else(|| fail("python.get_path(name)"))?;
                let paths = &self.info()?["paths"];
                match paths.get(name) {
                    Some(p) => Ok(Value::from_serialize(p)),
                    None => Err(fail(format!("python.get_path: unknown path name {name:?}"))),
                }
            }
            "get_sys_path" => {
                let interp = match args.first() {
                    Some(v) => PathBuf::from(v.to_string()),
                    None => self.interpreter.clone(),
                };
                let paths =
                    run_json(&interp, "import json, sys; print(json.dumps(sys.path))").map_err(fail)?;
                let paths: Vec<Value> = paths
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str())
                    .filter(|p| !p.is_empty() && Path::new(p).exists())
                    .map(|p| Value::from_object(PathValue(PathBuf::from(p))))
                    .collect();
                Ok(Value::from(paths))
            }
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// A path returned by `python.get_sys_path()`: renders as the path, has `.is_dir()`,
/// `.is_file()` and `.exists()` like Python's `pathlib.Path`.
#[derive(Debug)]
struct PathValue(PathBuf);

impl Object for PathValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, minijinja::Error> {
        match method {
            "is_dir" => Ok(Value::from(self.0.is_dir())),
            "is_file" => Ok(Value::from(self.0.is_file())),
            "exists" => Ok(Value::from(self.0.exists())),
            _ => Err(minijinja::Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(defines: &[&str]) -> RenderOptions {
        RenderOptions {
            defines: defines.iter().map(|d| DefineValue::parse_define(d)).collect(),
            env: [("HOME".to_string(), "/home/u".to_string())].into(),
            python: "python3".into(),
            libos: "/opt/pfs/bin/pfs".into(),
        }
    }

    #[test]
    fn defines_env_and_gramine_helpers() {
        let out = render(
            "t",
            "a = \"{{ entrypoint }}\"\nflag = {{ debug | lower }}\nh = \"{{ env.HOME }}\"\n\
             e = \"{{ env.get('EDMM', '0') }}\"\nl = \"{{ gramine.libos }}\"\nr = \"{{ gramine.runtimedir() }}\"\n\
             r2 = \"{{ gramine.runtimedir(libc='glibc') }}\"\nx = \"<&>\"\n",
            &opts(&["entrypoint=/usr/bin/python3", "debug"]),
        )
        .unwrap();
        let runtime = host_runtime_dir().display().to_string();
        assert_eq!(
            out,
            format!(
                "a = \"/usr/bin/python3\"\nflag = true\nh = \"/home/u\"\ne = \"0\"\nl = \"/opt/pfs/bin/pfs\"\n\
                 r = \"{runtime}\"\nr2 = \"{runtime}\"\nx = \"<&>\"\n"
            )
        );
    }

    #[test]
    fn jinja_features_used_by_gramine_templates() {
        let out = render(
            "t",
            "{{ '1' if env.get('EDMM', '0') == '1' else '0' }} {{ ['a', 'b'] | tojson }} \
             {% for x in [1, 2, 3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %} \
             {{ 'a:b'.split(':') | join('/') }}",
            &opts(&[]),
        )
        .unwrap();
        assert_eq!(out, "0 [\"a\",\"b\"] 13 a/b");
    }

    #[test]
    fn undefined_variables_are_errors() {
        let err = render("app.manifest.template", "a = 1\nb = \"{{ nope }}\"\n", &opts(&[])).unwrap_err();
        assert!(err.to_string().contains("app.manifest.template"), "{err}");
        assert!(err.message.contains("undefined"), "{err}");
        assert!(err.message.contains("app.manifest.template:2"), "{err}");
    }

    #[test]
    fn python_helpers_query_the_interpreter() {
        let out = render(
            "t",
            "{{ python.stdlib }}|{{ python.get_path('stdlib') }}|{{ python.implementation.name }}|\
             {% for p in python.get_sys_path('python3') %}{% if p.is_dir() %}[{{ p }}]{% endif %}{% endfor %}",
            &opts(&[]),
        )
        .unwrap();
        let parts: Vec<&str> = out.split('|').collect();
        assert!(parts[0].starts_with('/') && Path::new(parts[0]).join("os.py").is_file(), "{out}");
        assert_eq!(parts[0], parts[1]);
        assert_eq!(parts[2], "cpython");
        assert!(parts[3].contains(&format!("[{}]", parts[0])), "{out}");
    }

    #[test]
    fn python_get_path_with_keyword_arguments_asks_sysconfig() {
        // Gramine's PyTorch template: python.get_path('stdlib', vars={'installed_base': '/usr/local'}).
        let out = render(
            "t",
            "{{ python.get_path('stdlib', vars={'installed_base': '/usr/local', 'base': '/usr/local'}) }}|\
             {{ python.get_paths(vars={'base': '/x', 'installed_base': '/x'})['stdlib'] }}",
            &opts(&[]),
        )
        .unwrap();
        let (a, b) = out.split_once('|').unwrap();
        assert!(a.starts_with("/usr/local/lib/python3"), "{out}");
        assert!(b.starts_with("/x/lib/python3"), "{out}");
    }

    #[test]
    fn an_error_with_a_backwards_span_is_reported_not_a_panic() {
        // Found by the manifest_render fuzz target: minijinja's own debug-info rendering
        // (`{:#}` on its error) subtracts the span's columns and overflows for this one.
        let err = render("bad.template", "{%for in range(1)%}{%endfor%}", &opts(&[])).unwrap_err();
        assert!(err.to_string().contains("bad.template"), "{err}");
        assert!(err.message.contains("cannot unpack") && err.message.contains("bad.template:1"), "{err}");
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        // 10^10 iterations without the bound; each range() alone is within minijinja's limit.
        let err = render(
            "loop.template",
            "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            &opts(&[]),
        )
        .unwrap_err();
        assert!(err.message.contains("instructions"), "{err}");
        assert!(err.to_string().contains("loop.template"), "{err}");
        // A loop of ordinary size still renders.
        let out = render("t", "{% for a in range(1000) %}{{ a }},{% endfor %}", &opts(&[])).unwrap();
        assert!(out.starts_with("0,1,2,") && out.ends_with("999,"), "{out}");
    }

    #[test]
    fn ldd_lists_sorted_absolute_libraries() {
        let out = render("t", "{{ ldd('/bin/sh') | join(',') }}", &opts(&[])).unwrap();
        assert!(out.split(',').all(|p| p.starts_with('/')), "{out}");
        assert!(out.contains("libc.so.6"), "{out}");
        let list: Vec<&str> = out.split(',').collect();
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(list, sorted);
    }
}
