//! `hold`: sets up N allocations over UDP, each with channel 0x4000 bound to one peer, prints
//! their 5-tuples as one JSON line on stdout, and keeps them (refreshing the allocation and
//! the channel, which refreshes the permission) until stdin closes, a SIGTERM or SIGINT
//! arrives, or `--seconds` pass; then releases them.
//!
//! For an external packet generator that sends the relayed traffic itself, as
//! `benches/veth-capacity.sh` does with `benches/xdpgen`: it needs only the client's address
//! and port, the relayed address and the channel of each allocation.

use std::io::Read as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::bounded;
use crate::load::{CHANNEL, release_all};
use crate::turn::{Conn, Dialer, Session};

/// How often the held allocations and channels are refreshed: well inside the permission's
/// 300 s (RFC 8656 §9), so that a run of any length keeps its paths.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// The allocation lifetime asked for at every refresh.
const LIFETIME: u32 = 600;

/// One held allocation, as printed.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Held {
    /// The client's transport address (this tool's socket).
    client: SocketAddr,
    /// The relayed transport address the server allocated.
    relayed: SocketAddr,
    /// The channel bound to the peer.
    channel: u16,
}

/// What `hold` prints once the allocations are up.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HoldReport {
    /// The peer every channel is bound to.
    pub(crate) peer: SocketAddr,
    /// The allocations.
    pub(crate) flows: Vec<Held>,
}

/// Sets up `n` allocations with a channel to `peer`, reports them through `ready`, and holds
/// them until stdin closes, a signal arrives or `limit` passes; returns the number released.
///
/// # Errors
///
/// Fails when an allocation cannot be set up, or a refresh fails.
pub(crate) async fn run(
    dialer: &Dialer,
    n: usize,
    concurrency: usize,
    peer: SocketAddr,
    limit: Duration,
    ready: impl FnOnce(&HoldReport) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let d = dialer.clone();
    let made = bounded(n, concurrency, move |i| {
        let d = d.clone();
        async move {
            let mut s = Session::open(&d, &format!("hold{i}")).await?;
            s.channel_bind(CHANNEL, peer).await?;
            Ok(s)
        }
    })
    .await;
    let mut sessions = Vec::with_capacity(n);
    let mut flows = Vec::with_capacity(n);
    for (i, s) in made.into_iter().enumerate() {
        let s = s.with_context(|| format!("setting up allocation {i}"))?;
        let Conn::Udp(sock) = &s.conn else {
            anyhow::bail!("hold runs over UDP only");
        };
        flows.push(Held {
            client: sock.local_addr()?,
            relayed: s.auth.relayed,
            channel: CHANNEL,
        });
        sessions.push(s);
    }
    ready(&HoldReport { peer, flows })?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    // A plain thread watches stdin (anything read is ignored; end of file or an error ends
    // the hold); the process does not wait for it when it exits.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let stdin_closed = async {
        let _ = closed_rx.await;
    };
    tokio::pin!(stdin_closed);
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            () = &mut deadline => break,
            () = &mut stdin_closed => break,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                for (i, s) in sessions.iter_mut().enumerate() {
                    s.refresh(LIFETIME)
                        .await
                        .with_context(|| format!("refreshing allocation {i}"))?;
                    s.channel_bind(CHANNEL, peer)
                        .await
                        .with_context(|| format!("refreshing the channel of allocation {i}"))?;
                }
            }
        }
    }
    Ok(release_all(sessions, concurrency).await)
}
