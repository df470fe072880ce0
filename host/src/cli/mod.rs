//! The `mend` command line. Exit codes are in `exit` (and the README).

mod admin;
mod check_config;
mod client;
mod docs;
pub mod exit;
mod fleet;
mod new;
mod plugin;
mod plugin_test;
mod recorder;
mod run;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use self::exit::Exit;

/// Where `run` and `check-config` look when no config is named.
const DEFAULT_CONFIG: &str = "/etc/mend/mend.toml";

#[derive(Parser)]
#[command(
    name = "mend",
    version,
    about = "A self-healing engine for servers and services",
    after_help = "Exit codes: 0 ok (status: all healthy), 1 error, 2 usage, 3 some check unhealthy, \
                  4 refused, 5 not found, 6 unauthorised, 7 unreachable, 78 config error."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

/// How a long-running mode (`run`, `recorder`) logs.
#[derive(Args)]
struct Logging {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `mend=debug`.
    #[arg(long, env = "MEND_LOG", value_name = "FILTER", default_value = "info")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine in the foreground until Ctrl-C or SIGTERM (SIGHUP
    /// reloads the config).
    Run {
        /// The config file.
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(flatten)]
        logging: Logging,
    },
    /// Validate a config (and its plugins); list every problem. Exits 78
    /// if there is one.
    CheckConfig {
        /// The config file [default: /etc/mend/mend.toml].
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The config file, as `--config` (kept for scripts).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
    },
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Fleet mode, as the running agent sees it.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Write the fleet's incident events to PostgreSQL (`[fleet.recorder]`);
    /// run any number of replicas.
    Recorder {
        /// The config file (its [fleet] and [fleet.recorder]).
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(flatten)]
        logging: Logging,
    },
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Print a shell completion script, e.g. `mend completions bash >
    /// /etc/bash_completion.d/mend`.
    Completions {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `mend man | man -l -`.
    Man {
        /// Write every page (mend.1, mend-run.1, ...) into this directory
        /// instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The command line's definition (for completions and the man page).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Colour only for a person: stderr is a terminal and `NO_COLOR` is
/// unset (https://no-color.org).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        crate::runtime::limit_malloc_arenas();
    } else {
        // A command whose output is piped into `head` ends quietly when
        // the reader goes, as Unix tools do (Rust ignores SIGPIPE, so a
        // write would fail and `println!` panic). Not the daemon: a
        // closed log pipe must not kill it.
        // SAFETY: setting a signal's disposition to the default before
        // any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Run { ref logging, .. } | Command::Recorder { ref logging, .. } => {
            init_logging(logging.log_format, &logging.log)
        }
        _ => init_logging(
            LogFormat::Pretty,
            &std::env::var("MEND_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    }
    let finish = |result: anyhow::Result<ExitCode>| match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "mend: {}",
                crate::text::escape(&one_line(&format!("{e:#}")))
            );
            exit::of(&e).into()
        }
    };
    // The API client and the doc generators need no async runtime.
    let command = match cli.command {
        Command::Admin(cmd) => return finish(admin::run(cmd)),
        Command::Fleet(cmd) => return finish(fleet::run(cmd)),
        Command::Completions { shell } => return finish(docs::completions(shell)),
        Command::Man { dir } => return finish(docs::man(dir.as_deref())),
        other => other,
    };
    // Named, so `/proc/PID/task/*/comm` tells mend's own threads apart
    // (wasmtime's are `mend-epoch`); idle blocking threads leave after 2 s
    // rather than 10, so a burst of plugin file I/O is handed back soon.
    // The blocking pool stays bounded at tokio's 512: a call stuck in a
    // syscall past its deadline holds one (see tests/chaos.rs).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mend-rt")
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mend: cannot start the async runtime: {e}");
            return Exit::Error.into();
        }
    };
    let result = rt.block_on(async {
        match command {
            Command::Run { config, .. } => run::run(&config).await,
            Command::CheckConfig { config, file } => {
                let path = config.or(file).unwrap_or_else(|| DEFAULT_CONFIG.into());
                check_config::check_config(&path).await
            }
            Command::Plugin(cmd) => plugin::run(cmd).await,
            Command::Recorder { config, .. } => recorder::run(&config).await,
            Command::Admin(_)
            | Command::Fleet(_)
            | Command::Completions { .. }
            | Command::Man { .. } => {
                unreachable!("handled above")
            }
        }
    });
    // Dropping a runtime waits for every blocking task, and one may be stuck
    // in a syscall no timer interrupts (a file on a hung mount): exit anyway.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    finish(result)
}

/// The bound on tokio's blocking pool (its default, made explicit).
const MAX_BLOCKING_THREADS: usize = 512;

/// Errors are printed on one line: scripts grep them, people read them.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub use crate::config::default_state_dir;

#[cfg(test)]
mod tests {
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        let cmd = super::command();
        walk(&cmd, "mend", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
        cmd.debug_assert();
    }
}
