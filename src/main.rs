//! The `orderlake` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = orderlake::cli::Cli::parse();
    let settings = match orderlake::cli::settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", orderlake::redact::redact(&e.to_string()));
            return std::process::ExitCode::from(2);
        }
    };
    // deltalake logs every lost commit race at ERROR; orderlake retries those and says so itself.
    let filter = EnvFilter::try_from_env("ORDERLAKE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,orderlake={},deltalake_core::operations::merge=error,deltalake_core::kernel::transaction=off",
            settings.log_level
        ))
    });
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    match orderlake::cli::execute(cli, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", orderlake::redact::redact(&e.to_string()));
            std::process::ExitCode::from(match e {
                orderlake::Error::Config(_) => 2,
                _ => 1,
            })
        }
    }
}
