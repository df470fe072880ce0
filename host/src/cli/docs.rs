//! `mend completions SHELL` (clap_complete) and `mend man` (clap_mangen):
//! generated from the command line's own definition, so they never lag
//! behind it. The Debian package ships both.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::exit::Exit;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = super::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "mend", &mut out);
    out.flush().context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// `mend(1)` to stdout; with `dir`, every page (`mend.1`, `mend-run.1`,
/// ...) into it.
pub fn man(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match dir {
        None => {
            let mut out = std::io::stdout().lock();
            render(&mut out).context("writing the man page")?;
            out.flush().context("writing the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(super::command(), dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            let main = dir.join("mend.1");
            let mut f = std::fs::File::create(&main)
                .with_context(|| format!("writing {}", main.display()))?;
            render(&mut f).with_context(|| format!("writing {}", main.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What each exit code means (the man page's EXIT STATUS).
pub const EXIT_CODES: &[(Exit, &str)] = &[
    (Exit::Ok, "success; for status: every check is healthy"),
    (Exit::Error, "any other error"),
    (
        Exit::Usage,
        "bad usage: an unknown flag, a missing argument",
    ),
    (Exit::Unhealthy, "status: some check is not healthy"),
    (
        Exit::Refused,
        "refused: a heal that no policy started (409)",
    ),
    (
        Exit::NotFound,
        "not found: no such check, incident or endpoint (404)",
    ),
    (
        Exit::Unauthorized,
        "unauthorised: the token is missing or wrong, or none is configured (401, 403)",
    ),
    (Exit::Unreachable, "unreachable: mend's API does not answer"),
    (
        Exit::Config,
        "the config is invalid (run, check-config, reload)",
    ),
];

/// `mend(1)`: clap_mangen's page with an EXIT STATUS section.
pub fn render(out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = super::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd);
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for (exit, what) in EXIT_CODES {
        writeln!(out, ".TP\n{}\n{what}", exit.code())?;
    }
    man.render_version_section(out)?;
    Ok(())
}
