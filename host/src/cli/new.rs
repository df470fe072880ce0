//! `mend plugin new`: a ready plugin project that builds and answers
//! `mend plugin call` with no edits.
//!
//! The SDK is not on crates.io yet, so the project carries its own copy
//! (`vendor/mend-sdk`, the SDK this mend was built with, WIT included) unless
//! `--sdk PATH` points at a checkout. Python and JavaScript projects carry
//! `mend_sdk/` or `mend-sdk/` (`sdk/python`, `sdk/js`) and the WIT always;
//! their templates are files under `sdk/*/template`, with role blocks
//! (`# >>> action` ... `# <<< action`) kept or dropped by `--role`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;

/// The language of the project.
#[derive(Clone, Copy, ValueEnum)]
pub enum Lang {
    Rust,
    /// componentize-py 0.25.1.
    Python,
    /// componentize-js 0.23.0.
    Js,
}

/// What the plugin does.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Roles {
    Detector,
    Action,
    Both,
}

impl Roles {
    fn detector(self) -> bool {
        matches!(self, Roles::Detector | Roles::Both)
    }
    fn action(self) -> bool {
        matches!(self, Roles::Action | Roles::Both)
    }
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The plugin's name (its manifest name, what checks refer to):
    /// lowercase letters, digits and `-`.
    #[arg(value_name = "NAME")]
    name: String,
    /// The project's language.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// What the plugin does: detect, act, or both.
    #[arg(long, value_enum, default_value = "both")]
    role: Roles,
    /// Where to create the project [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Use the SDK of this mend checkout (`.../mend/sdk`) instead of a
    /// copy inside the project (Rust only).
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

/// The SDK this binary was built with, file by file.
const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    (
        "src/bindings.rs",
        include_str!("../../../sdk/src/bindings.rs"),
    ),
    ("src/config.rs", include_str!("../../../sdk/src/config.rs")),
    ("src/error.rs", include_str!("../../../sdk/src/error.rs")),
    (
        "src/finding.rs",
        include_str!("../../../sdk/src/finding.rs"),
    ),
    ("src/host.rs", include_str!("../../../sdk/src/host.rs")),
    ("src/http.rs", include_str!("../../../sdk/src/http.rs")),
    (
        "src/manifest.rs",
        include_str!("../../../sdk/src/manifest.rs"),
    ),
    (
        "src/outcome.rs",
        include_str!("../../../sdk/src/outcome.rs"),
    ),
    ("src/values.rs", include_str!("../../../sdk/src/values.rs")),
    (
        "wit/plugin.wit",
        include_str!("../../../sdk/wit/plugin.wit"),
    ),
    ("README.md", include_str!("../../../sdk/README.md")),
];

/// The vendored SDK's manifest: the workspace's `mend-sdk` with its
/// inherited fields written out.
const SDK_MANIFEST: &str = r#"[package]
name = "mend-sdk"
description = "Write mend detectors and recovery actions in plain Rust"
version = "{{version}}"
edition = "2024"
rust-version = "1.95"
license = "Apache-2.0"

[dependencies]
wit-bindgen = { version = "=0.61.1", default-features = false, features = ["macros", "realloc", "std"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
humantime = "2"
serde_path_to_error = "0.1"
wasip2 = "1"
"#;

/// A Python or JavaScript project: its files, the SDK's, and the WIT.
struct Template {
    lang: &'static str,
    files: &'static [(&'static str, &'static str)],
    sdk: &'static [(&'static str, &'static str)],
    next: &'static str,
}

const WIT: &str = include_str!("../../../sdk/wit/plugin.wit");

/// The `plugin-http` world and the wasi:http WIT it imports (0.2.12, the
/// version the host's wasmtime-wasi-http serves).
const WIT_HTTP: &[(&str, &str)] = &[
    (
        "wit/http.wit",
        include_str!("../../../sdk/wit-http/http.wit"),
    ),
    (
        "wit/deps/cli/cli.wit",
        include_str!("../../../sdk/wit-http/deps/cli/cli.wit"),
    ),
    (
        "wit/deps/clocks/clocks.wit",
        include_str!("../../../sdk/wit-http/deps/clocks/clocks.wit"),
    ),
    (
        "wit/deps/filesystem/filesystem.wit",
        include_str!("../../../sdk/wit-http/deps/filesystem/filesystem.wit"),
    ),
    (
        "wit/deps/http/http.wit",
        include_str!("../../../sdk/wit-http/deps/http/http.wit"),
    ),
    (
        "wit/deps/io/io.wit",
        include_str!("../../../sdk/wit-http/deps/io/io.wit"),
    ),
    (
        "wit/deps/random/random.wit",
        include_str!("../../../sdk/wit-http/deps/random/random.wit"),
    ),
    (
        "wit/deps/sockets/sockets.wit",
        include_str!("../../../sdk/wit-http/deps/sockets/sockets.wit"),
    ),
];

const PYTHON: Template = Template {
    lang: "Python",
    files: &[
        (
            "app.py",
            include_str!("../../../sdk/python/template/app.py"),
        ),
        (
            "test_app.py",
            include_str!("../../../sdk/python/template/test_app.py"),
        ),
        (
            "Makefile",
            include_str!("../../../sdk/python/template/Makefile"),
        ),
        (
            "README.md",
            include_str!("../../../sdk/python/template/README.md"),
        ),
        (
            ".gitignore",
            include_str!("../../../sdk/python/template/gitignore"),
        ),
    ],
    sdk: &[
        (
            "mend_sdk/__init__.py",
            include_str!("../../../sdk/python/mend_sdk/__init__.py"),
        ),
        (
            "mend_sdk/host.py",
            include_str!("../../../sdk/python/mend_sdk/host.py"),
        ),
        (
            "mend_sdk/README.md",
            include_str!("../../../sdk/python/README.md"),
        ),
    ],
    next: "make test     # unit tests (python3 -m unittest)\n  make build    # build/{{name}}.wasm (componentize-py 0.25.1)\n  make call     # one sandboxed call through mend",
};

const JS: Template = Template {
    lang: "JavaScript",
    files: &[
        ("app.js", include_str!("../../../sdk/js/template/app.js")),
        (
            "judge.js",
            include_str!("../../../sdk/js/template/judge.js"),
        ),
        (
            "judge.test.js",
            include_str!("../../../sdk/js/template/judge.test.js"),
        ),
        (
            "package.json",
            include_str!("../../../sdk/js/template/package.json"),
        ),
        (
            "Makefile",
            include_str!("../../../sdk/js/template/Makefile"),
        ),
        (
            "README.md",
            include_str!("../../../sdk/js/template/README.md"),
        ),
        (
            ".gitignore",
            include_str!("../../../sdk/js/template/gitignore"),
        ),
    ],
    sdk: &[
        (
            "mend-sdk/index.js",
            include_str!("../../../sdk/js/mend-sdk/index.js"),
        ),
        (
            "mend-sdk/host.js",
            include_str!("../../../sdk/js/mend-sdk/host.js"),
        ),
        (
            "mend-sdk/README.md",
            include_str!("../../../sdk/js/README.md"),
        ),
    ],
    next: "make test     # unit tests (node --test)\n  make build    # build/{{name}}.wasm (componentize-js 0.23.0)\n  make call     # one sandboxed call through mend",
};

/// Keeps the blocks of the roles the plugin plays, drops the others, and
/// removes the markers.
fn select_roles(text: &str, role: Roles) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        let marker = line.trim_start_matches(['#', '/', ' ']).trim_end();
        if let Some(r) = marker.strip_prefix(">>> ") {
            skipping = match r {
                "detector" => !role.detector(),
                "action" => !role.action(),
                _ => false,
            };
            continue;
        }
        if marker.starts_with("<<< ") {
            skipping = false;
            continue;
        }
        if !skipping {
            out.push_str(line);
        }
    }
    out
}

fn write_template(args: &NewArgs, dir: &Path, t: &Template) -> anyhow::Result<()> {
    if args.sdk.is_some() {
        bail!(
            "--sdk is for Rust projects; a {} project carries its SDK",
            t.lang
        );
    }
    let type_name = type_name(&args.name);
    // The Python class's bases (JavaScript infers roles from methods).
    let bases = match args.role {
        Roles::Detector => "mend_sdk.Detector",
        Roles::Action => "mend_sdk.Action",
        Roles::Both => "mend_sdk.Detector, mend_sdk.Action",
    };
    let fill = |text: &str| {
        select_roles(text, args.role)
            .replace("{{name}}", &args.name)
            .replace("{{type}}", &type_name)
            .replace("{{bases}}", bases)
            .replace("{{roles}}", roles_line(args.role))
    };
    for (file, text) in t.files {
        write(&dir.join(file), &fill(text))?;
    }
    for (file, text) in t.sdk {
        write(&dir.join(file), text)?;
    }
    write(&dir.join("wit/plugin.wit"), WIT)?;
    for (file, text) in WIT_HTTP {
        write(&dir.join(file), text)?;
    }
    println!(
        "created {} ({}, {})\n\nnext:\n  cd {}\n  {}",
        dir.display(),
        roles_line(args.role),
        t.lang,
        dir.display(),
        t.next.replace("{{name}}", &args.name),
    );
    Ok(())
}

/// `disk-usage` -> `DiskUsagePlugin`: the plugin's type (never one of the
/// SDK's names).
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<String>()
        + "Plugin"
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    // A plugin name that is also a Cargo package name.
    let mut chars = args.name.chars();
    if !(chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && args.name.len() <= 64)
    {
        bail!(
            "`{}` cannot name a plugin project: use up to 64 lowercase letters, digits, `-` and `_`, starting with a letter",
            crate::text::truncate(&args.name, 80)
        );
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    match args.lang {
        Lang::Rust => {}
        Lang::Python => return write_template(&args, &dir, &PYTHON),
        Lang::Js => return write_template(&args, &dir, &JS),
    }
    let sdk_dep = match &args.sdk {
        Some(p) => {
            let p =
                std::fs::canonicalize(p).with_context(|| format!("the SDK at {}", p.display()))?;
            if !p.join("wit/plugin.wit").is_file() {
                bail!(
                    "{} is not mend's sdk directory (no wit/plugin.wit)",
                    p.display()
                );
            }
            p.display().to_string()
        }
        None => {
            let vendor = dir.join("vendor/mend-sdk");
            for (file, text) in SDK_FILES {
                write(&vendor.join(file), text)?;
            }
            write(
                &vendor.join("Cargo.toml"),
                &SDK_MANIFEST.replace("{{version}}", env!("CARGO_PKG_VERSION")),
            )?;
            "vendor/mend-sdk".into()
        }
    };
    let crate_name = args.name.replace('-', "_");
    let type_name = type_name(&args.name);
    let fill = |t: &str| {
        t.replace("{{name}}", &args.name)
            .replace("{{type}}", &type_name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk_dep)
            .replace("{{roles}}", roles_line(args.role))
    };
    write(&dir.join("Cargo.toml"), &fill(MANIFEST))?;
    write(&dir.join("src/lib.rs"), &fill(&lib_rs(args.role)))?;
    write(&dir.join("Makefile"), &fill(MAKEFILE))?;
    write(&dir.join("README.md"), &fill(&readme(args.role)))?;
    write(&dir.join(".gitignore"), "/target\n")?;
    println!(
        "created {} ({}, Rust)\n\nnext:\n  cd {}\n  make test     # unit tests\n  make build    # target/wasm32-wasip2/plugin/{crate_name}.wasm\n  make call     # one sandboxed call through mend",
        dir.display(),
        roles_line(args.role),
        dir.display(),
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn roles_line(r: Roles) -> &'static str {
    match r {
        Roles::Detector => "a detector",
        Roles::Action => "an action",
        Roles::Both => "a detector and an action",
    }
}

const MANIFEST: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
# The SDK needs Rust 1.95 or newer (edition 2024) and the wasm32-wasip2 target.
rust-version = "1.95"
description = "{{roles}} for mend: a file that grows past a size"

[lib]
# cdylib: the plugin; rlib: so `cargo test` can test its logic natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
mend-sdk = { path = "{{sdk}}" }
serde = { version = "1", features = ["derive"] }

# Not part of any enclosing workspace.
[workspace]

# `cargo build --target wasm32-wasip2 --profile plugin`: a smaller
# component (about 160 KB instead of 210 KB), same behaviour.
[profile.plugin]
inherits = "release"
lto = true
codegen-units = 1
strip = true
panic = "unwind"
"#;

const MAKEFILE: &str = "# make build: the plugin; make test: its unit tests; make call: one
# sandboxed call through `mend plugin call` (mend on PATH, or MEND=...).
MEND ?= mend
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
WASM = $(TARGET_DIR)/wasm32-wasip2/plugin/{{crate}}.wasm
DATA = $(CURDIR)/target/demo

.PHONY: build test call inspect

build:
\trustup target add wasm32-wasip2 >/dev/null 2>&1 || true
\tcargo build --target wasm32-wasip2 --profile plugin

test:
\tcargo test

inspect: build
\t$(MEND) plugin inspect $(WASM)

call: build
\tmkdir -p $(DATA) && head -c 2048 /dev/zero > $(DATA)/app.log
\t$(MEND) plugin call $(WASM) detect --grant-dir $(DATA):/data \\
\t  --config '{\"path\": \"/data/app.log\", \"max_bytes\": \"1KiB\"}'
";

fn lib_rs(role: Roles) -> String {
    let mut s = String::from(
        r#"//! {{name}}: {{roles}} for mend. The check fails when a file is larger
//! than `max_bytes`; the action truncates it (in a dry run it only says so).

use mend_sdk::{Access, Bytes, Context, Error, Finding, Needs, Plugin, Result};
use serde::Deserialize;

/// The operator's TOML table, checked by serde (unknown keys are refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The file, as the plugin sees it inside its granted directory.
    pub path: String,
    /// Larger than this fails the check: `1048576` or `"1MiB"`.
    pub max_bytes: Bytes,
}

pub struct {{type}};

impl Plugin for {{type}} {
    // Whichever directory the operator grants; writes only to act.
    fn needs() -> Needs {
        Needs::new().dir("*", Access::Read)
    }
}

/// The verdict on a file of `len` bytes: the logic worth unit-testing.
pub fn judge(path: &str, len: u64, max: u64) -> Finding {
    let finding = if len > max {
        Finding::fail("file.too_big", format!("{path} is {len} bytes, over {max}"))
    } else {
        Finding::ok("file.size_ok", format!("{path} is {len} bytes"))
    };
    finding.metric("bytes", len as f64).label("path", path)
}

fn size(path: &str) -> Result<u64> {
    Ok(std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len())
}
"#,
    );
    if role.detector() {
        s.push_str(
            r#"
impl mend_sdk::Detector for {{type}} {
    type Config = Config;

    fn detect(_cx: &Context, c: Config) -> Result<Vec<Finding>> {
        Ok(vec![judge(&c.path, size(&c.path)?, c.max_bytes.0)])
    }
}
"#,
        );
    }
    if role.action() {
        s.push_str(
            r#"
impl mend_sdk::Action for {{type}} {
    type Config = Config;

    fn remedy_needs() -> Needs {
        Needs::new().dir("*", Access::ReadWrite)
    }

    fn remedy(
        _cx: &Context,
        c: Config,
        _findings: &[Finding],
        dry_run: bool,
    ) -> Result<mend_sdk::Outcome> {
        let len = size(&c.path)?;
        let mut out = mend_sdk::Outcome::new();
        if len <= c.max_bytes.0 {
            return Ok(out.message(format!("{} is {len} bytes: nothing to do", c.path)));
        }
        out.step(format!("truncate {} ({len} bytes)", c.path));
        if dry_run {
            return Ok(out.message("dry run: nothing changed"));
        }
        std::fs::File::create(&c.path).map_err(|e| Error::io(&c.path, e))?;
        Ok(out.changed().message(format!("freed {len} bytes")))
    }
}
"#,
        );
    }
    s.push_str(match role {
        Roles::Detector => "\nmend_sdk::export!({{type}}: Detector);\n",
        Roles::Action => "\nmend_sdk::export!({{type}}: Action);\n",
        Roles::Both => "\nmend_sdk::export!({{type}}: Detector, Action);\n",
    });
    s.push_str(
        r#"
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_fails_and_one_under_passes() {
        let over = judge("/data/app.log", 2048, 1024);
        assert_eq!(over.code, "file.too_big");
        assert_eq!(over.get_metric("bytes"), Some(2048.0));
        assert_eq!(judge("/data/app.log", 10, 1024).code, "file.size_ok");
    }
}
"#,
    );
    s
}

fn readme(role: Roles) -> String {
    let mut s = String::from(
        r#"# {{name}}

{{roles}} for mend, made by `mend plugin new`.
The check fails (`file.too_big`) when a file is larger than `max_bytes`.

## Build, test, call

You need Rust 1.95 or newer and the `wasm32-wasip2` target (`make build`
adds it with rustup).

```sh
make test     # the unit tests, natively
make build    # target/wasm32-wasip2/plugin/{{crate}}.wasm
make call     # mend plugin call ... detect, on a 2 KiB file against 1 KiB
```

Then copy the `.wasm` into mend's `plugins_dir` and use it:

```toml
[[check]]
name = "app-log-size"
plugin = "{{name}}"
grants = { dirs = [{ host = "/var/log/app", guest = "/data" }] }
config = { path = "/data/app.log", max_bytes = "100MiB" }
```

## Config

| key | type | meaning |
|---|---|---|
| `path` | string | the file, inside the granted directory |
| `max_bytes` | bytes (`1048576` or `"1MiB"`) | larger fails the check |
"#,
    );
    if role.action() {
        s.push_str(
            r#"
## As an action

It truncates the file when it is over `max_bytes`; in a dry run it only
lists the step. The step needs the directory granted read-write:

```toml
[[policy]]
name = "trim-app-log"
check = "app-log-size"

[[policy.step]]
action = "{{name}}"
grants = { dirs = [{ host = "/var/log/app", guest = "/data", mode = "rw" }] }
config = { path = "/data/app.log", max_bytes = "100MiB" }
```
"#,
        );
    }
    s.push_str("\nThe SDK's guide is `vendor/mend-sdk/README.md` (or mend's `sdk/README.md`).\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_blocks_are_kept_or_dropped() {
        let t = "a\n# >>> detector\nd\n# <<< detector\n// >>> action\nx\n// <<< action\nb\n";
        assert_eq!(select_roles(t, Roles::Both), "a\nd\nx\nb\n");
        assert_eq!(select_roles(t, Roles::Detector), "a\nd\nb\n");
        assert_eq!(select_roles(t, Roles::Action), "a\nx\nb\n");
    }

    #[test]
    fn the_templates_carry_every_file_of_their_sdk() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        for (t, sdk) in [(&PYTHON, "python/mend_sdk"), (&JS, "js/mend-sdk")] {
            for entry in std::fs::read_dir(root.join(sdk)).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                if name.starts_with('_') && name != "__init__.py" || name.ends_with(".pyc") {
                    continue;
                }
                let dir = sdk.rsplit('/').next().unwrap();
                assert!(
                    t.sdk.iter().any(|(f, _)| *f == format!("{dir}/{name}")),
                    "{sdk}/{name} is not in the {} template",
                    t.lang
                );
            }
        }
    }

    #[test]
    fn the_vendored_sdk_has_every_file_of_the_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/src");
        for entry in std::fs::read_dir(&sdk).unwrap() {
            let name = format!("src/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(
                SDK_FILES.iter().any(|(f, _)| *f == name),
                "{name} is not in SDK_FILES: `mend plugin new` projects would not build"
            );
        }
    }
}
