//! The `orderlake` binary: parse arguments, set up logging, hand over to the library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Query planning in the Delta/DataFusion stack recurses over filter expressions, and a batch that
/// touches thousands of orders builds big ones: 8 MiB of stack overflowed on the second 30,000-event
/// batch of the benchmark. Every thread that runs pipeline code gets this much instead.
const STACK: usize = 256 * 1024 * 1024;

/// Rust allocations go to jemalloc: glibc's malloc/free (consolidating and trimming its heaps)
/// was 30 % of orderlake's CPU in `perf`, and jemalloc cut the CPU of a fixed job by a quarter
/// for a peak RSS still under the 512 MiB target at 1,000,000 events (docs/performance.md,
/// session 10). mimalloc, tried before, was fast too but doubled the peak RSS.
#[cfg(not(any(target_env = "msvc", feature = "system-alloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the environment overrides them):
/// two arenas, as for glibc below, and freed pages handed back within a second rather than ten.
/// At 1,000,000 events that kept the peak RSS at glibc's (412 against 469 MiB with the defaults).
#[cfg(not(any(target_env = "msvc", feature = "system-alloc")))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&'static u8> = Some(&b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0]);

/// The C libraries (librdkafka) still allocate with glibc, which gives every thread that
/// allocates its own arena; two arenas keep what they free from staying resident per thread.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(STACK)
        .build()
        .expect("tokio runtime");
    std::thread::Builder::new()
        .name("orderlake-main".into())
        .stack_size(STACK)
        .spawn(move || runtime.block_on(run()))
        .expect("main thread")
        .join()
        .unwrap_or(std::process::ExitCode::FAILURE)
}

async fn run() -> std::process::ExitCode {
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
    let json = settings.log_format == orderlake::config::LogFormat::Json;
    if json {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        // Colours only on a terminal: log files and collectors get plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    }
    log_panics();
    match orderlake::cli::execute(cli, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = orderlake::redact::redact(&e.to_string());
            if json {
                tracing::error!(error = %message, "orderlake stopped");
            } else {
                eprintln!("error: {message}");
            }
            std::process::ExitCode::from(match e {
                orderlake::Error::Config(_) => 2,
                _ => 1,
            })
        }
    }
}

/// A panic is logged like everything else (one JSON line when the logs are JSON), with its thread
/// and place, instead of the default hook's free text on stderr. The pipeline turns a decoder's
/// panic into a dead letter and goes on, so this line is how a bug shows in the collected logs.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("no message");
        let thread = std::thread::current();
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        // Captured only when RUST_BACKTRACE asks for it, as the default hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace =
            (backtrace.status() == std::backtrace::BacktraceStatus::Captured).then(|| backtrace.to_string());
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = location.as_deref().unwrap_or("unknown"),
            backtrace = backtrace.as_deref(),
            "panicked: {message}"
        );
    }));
}
