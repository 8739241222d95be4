//! `eeaturn serve`: the relay in the foreground.

use std::path::Path;

use anyhow::Context as _;
use eeaturn::config::Config;

/// Loads the configuration, starts logging and the async runtime, and runs the shell until
/// SIGINT or SIGTERM (which drains first when `server.drain_timeout` is set).
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
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        eeaturn::shell::run(config, |relay| async move {
            // SIGTERM drains first (server.drain_timeout), a second one stops at once; SIGINT
            // stops at once.
            loop {
                tokio::select! {
                    Some(()) = int.recv() => {
                        tracing::info!(target: "eeaturn::shell", "SIGINT: stopping");
                        relay.stop();
                    }
                    Some(()) = term.recv() => {
                        tracing::info!(target: "eeaturn::shell", "SIGTERM: stopping");
                        relay.terminate();
                    }
                    else => break,
                }
            }
        })
        .await
    })
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only on a terminal: under systemd stderr goes to the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
