//! The Debian package, as `scripts/deb` builds it (from this build's
//! binary and plugins): its file list and control data, the default
//! config validating against the installed plugins, and the unit passing
//! `systemd-analyze verify` against the installed layout (unpacked into a
//! temporary root; no unit is started: PID 1 is not systemd here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn have(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The bundled plugins' wasm file names.
fn bundled_plugins() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("plugins"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let manifest = std::fs::read_to_string(e.path().join("Cargo.toml")).ok()?;
            let name = manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))?
                .trim_end_matches('"')
                .replace('-', "_");
            Some(format!("{name}.wasm"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_debian_package_holds_everything_an_install_needs() {
    if !have("dpkg-deb", &["--version"]) {
        println!("SKIPPED: dpkg-deb is not installed");
        return;
    }
    if !have("cargo", &["deb", "--version"]) {
        println!("SKIPPED: cargo-deb is not installed (scripts/test installs it)");
        return;
    }
    // This test binary's own build: target/debug/mend and the guests.
    let out = run(Command::new("bash")
        .arg(root().join("scripts/deb"))
        .args(["--debug", "--no-build"])
        .current_dir(root()));
    let deb = text(&out)
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(|l| root().join(l.trim()))
        .unwrap_or_else(|| panic!("no .deb named in {}", text(&out)));

    let files = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    let has = |path: &str| {
        files
            .lines()
            .any(|l| l.split_whitespace().last() == Some(path))
    };
    for path in [
        "./usr/bin/mend",
        "./usr/lib/systemd/system/mend.service",
        "./etc/mend/mend.toml",
        "./usr/share/doc/mend/service.md",
        "./usr/share/doc/mend/README.md",
        "./usr/share/doc/mend/configuration.md",
        "./usr/share/doc/mend/security.md",
        "./usr/share/doc/mend/fleet.md",
        "./usr/share/doc/mend/examples/quickstart.toml",
        "./usr/share/bash-completion/completions/mend",
        "./usr/share/zsh/vendor-completions/_mend",
        "./usr/share/fish/vendor_completions.d/mend.fish",
        "./usr/share/man/man1/mend.1.gz",
        "./usr/share/man/man1/mend-run.1.gz",
    ] {
        assert!(has(path), "{path} is not in the package:\n{files}");
    }
    let plugins = bundled_plugins();
    assert_eq!(plugins.len(), 11, "{plugins:?}");
    for p in &plugins {
        let path = format!("./usr/lib/mend/plugins/{p}");
        assert!(has(&path), "{path} is not in the package:\n{files}");
    }
    let control = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    assert!(control.contains("Package: mend"), "{control}");
    assert!(control.contains("Depends:"), "{control}");

    // Installed into a temporary root.
    let dest = tempfile::tempdir().unwrap();
    let r = dest.path();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(r));
    let ctl = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(ctl.path().join("DEBIAN")));
    let conf = std::fs::read_to_string(ctl.path().join("DEBIAN/conffiles")).unwrap_or_default();
    assert!(
        conf.lines().any(|l| l == "/etc/mend/mend.toml"),
        "conffiles: {conf}"
    );

    let mend = r.join("usr/bin/mend");
    let version = text(&run(Command::new(&mend).arg("--version")));
    assert!(version.starts_with("mend "), "{version}");

    // The default config validates against the installed plugins (its
    // plugins_dir pointed into the temporary root).
    let config = std::fs::read_to_string(r.join("etc/mend/mend.toml")).unwrap();
    assert!(
        config.contains("plugins_dir = \"/usr/lib/mend/plugins\""),
        "{config}"
    );
    let moved = dest.path().join("mend.toml");
    std::fs::write(
        &moved,
        config.replace(
            "\"/usr/lib/mend/plugins\"",
            &format!("\"{}\"", r.join("usr/lib/mend/plugins").display()),
        ),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = run(Command::new(&mend)
        .args(["check-config", "--config"])
        .arg(&moved)
        .env("MEND_STATE_DIR", state.path()));
    assert!(text(&out).contains(": ok (1 checks"), "{}", text(&out));

    // The unit: what it points at is installed, and systemd accepts it.
    let unit = std::fs::read_to_string(r.join("usr/lib/systemd/system/mend.service")).unwrap();
    let doc = unit
        .lines()
        .find_map(|l| l.strip_prefix("Documentation=file://"))
        .expect("a Documentation= file");
    assert!(
        r.join(doc.trim_start_matches('/')).exists(),
        "Documentation={doc} is not installed"
    );
    if !have("systemd-analyze", &["--version"]) {
        println!("SKIPPED systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    // The installed layout: this package over the system's own units (the
    // targets mend.service orders itself against) and /bin/kill.
    let system_units = Path::new("/lib/systemd/system");
    if !system_units.join("sysinit.target").exists() {
        println!("SKIPPED systemd-analyze verify: no systemd units in /lib/systemd/system");
        return;
    }
    std::fs::create_dir_all(r.join("lib/systemd")).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg(system_units)
        .arg(r.join("lib/systemd/")));
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    let verify = || {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .arg("/usr/lib/systemd/system/mend.service")
            .env("SYSTEMD_LOG_LEVEL", "notice")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned() + &text(&out);
        (out.status.success(), said)
    };
    let (ok, said) = verify();
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // It does look: without the binary the unit is refused.
    std::fs::remove_file(&mend).unwrap();
    let (ok, said) = verify();
    assert!(!ok && said.contains("/usr/bin/mend"), "{said}");
}
