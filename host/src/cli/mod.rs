//! The `mend` command line.

mod admin;
mod check_config;
mod client;
mod fleet;
mod plugin;
mod recorder;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "mend",
    version,
    about = "A self-healing engine for servers and services"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `mend=debug` (or set MEND_LOG).
    #[arg(long, global = true, env = "MEND_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine in the foreground until Ctrl-C or SIGTERM (SIGHUP
    /// reloads the config).
    Run {
        /// The config file.
        #[arg(long, short, default_value = "/etc/mend/mend.toml")]
        config: PathBuf,
    },
    /// Validate a config (and its plugins); list every problem.
    CheckConfig {
        /// The config file.
        file: PathBuf,
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
        #[arg(long, short, default_value = "/etc/mend/mend.toml")]
        config: PathBuf,
    },
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    // The API client needs no async runtime.
    let command = match cli.command {
        Command::Admin(cmd) => {
            return match admin::run(cmd) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("mend: {}", one_line(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Fleet(cmd) => {
            return match fleet::run(cmd) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("mend: {}", one_line(&format!("{e:#}")));
                    ExitCode::FAILURE
                }
            };
        }
        other => other,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match command {
            Command::Run { config } => run::run(&config).await,
            Command::CheckConfig { file } => check_config::check_config(&file).await,
            Command::Plugin(cmd) => plugin::run(cmd).await,
            Command::Recorder { config } => recorder::run(&config).await,
            Command::Admin(_) | Command::Fleet(_) => unreachable!("handled above"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mend: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Errors are printed on one line: scripts grep them, people read them.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub use crate::config::default_state_dir;
