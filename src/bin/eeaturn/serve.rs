//! `eeaturn serve`: the relay in the foreground.

use std::path::Path;

use anyhow::Context as _;
use eeaturn::config::Config;

/// Loads the configuration, starts logging and the async runtime, and runs the shell until
/// SIGINT or SIGTERM.
pub(crate) fn serve(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    eeaturn::pii::set_show_personal_data(config.log.log_ips);
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Install the handlers before anything is bound: a SIGTERM right after "ready" must
        // take the shutdown path, not the default action.
        let shutdown = shutdown_signal().context("installing signal handlers")?;
        eeaturn::shell::run(config, shutdown).await
    })
}

/// Returns a future that completes on SIGINT or SIGTERM; the handlers are installed now.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
