//! The `[server]` table: identity and listeners.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::{Error, duration, invalid};

/// `[server]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// The realm of the long-term credential mechanism.
    pub realm: String,
    /// Listener URLs, e.g. `"udp://0.0.0.0:3478"`.
    pub listen: Vec<String>,
    /// Value of the SOFTWARE attribute; empty omits it.
    #[serde(default = "default_software")]
    pub software: String,
    /// Data-path worker threads; 0 means one per CPU core.
    #[serde(default)]
    pub workers: usize,
    /// How long the first SIGTERM drains before the relay stops: new Allocates are sent to
    /// `alternate_servers` (300) or refused (508), running allocations keep relaying until
    /// they end or this passes. `"0s"` (the default) stops at once, ending every allocation.
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub drain_timeout: Duration,
    /// Where Allocates are sent while draining (`"IP:PORT"`, IPv6 in brackets): a client gets
    /// the first one of its own address family in ALTERNATE-SERVER.
    #[serde(default)]
    pub alternate_servers: Vec<String>,
}

/// The longest drain accepted: a stop must end in bounded time.
pub(super) const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn default_software() -> String {
    "eeaturn".to_owned()
}

/// One listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The transport.
    pub transport: ListenTransport,
    /// The local address.
    pub addr: SocketAddr,
}

/// Listener transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (TURNS).
    Tls,
}

impl ListenTransport {
    /// The URL scheme, as written in `server.listen`.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.transport.scheme(), self.addr)
    }
}

/// The validated `[server]` table.
pub(super) struct Server {
    pub(super) realm: String,
    pub(super) software: Option<String>,
    pub(super) listen: Vec<Listen>,
    pub(super) workers: usize,
    pub(super) drain_timeout: Duration,
    pub(super) alternate_servers: Vec<SocketAddr>,
}

/// Validates `[server]`.
pub(super) fn validate(raw: RawServer) -> Result<Server, Error> {
    let realm = raw.realm.trim().to_owned();
    if realm.is_empty() || realm.len() > 127 || !realm.is_ascii() {
        return Err(invalid(
            "server.realm",
            "must be 1 to 127 ASCII characters, e.g. \"turn.example.eu\"",
        ));
    }
    if raw.listen.is_empty() {
        return Err(invalid(
            "server.listen",
            "needs at least one listener, e.g. [\"udp://0.0.0.0:3478\"]",
        ));
    }
    let listen = raw
        .listen
        .iter()
        .map(|s| parse_listen(s))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, l) in listen.iter().enumerate() {
        if listen[..i].contains(l) {
            return Err(invalid("server.listen", format!("{l} is listed twice")));
        }
    }
    if raw.workers > 256 {
        return Err(invalid(
            "server.workers",
            "must be at most 256 (0 means one per CPU core)",
        ));
    }
    let workers = match raw.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let software = Some(raw.software).filter(|s| !s.is_empty());
    if software.as_ref().is_some_and(|s| s.len() > 127) {
        return Err(invalid("server.software", "must be at most 127 characters"));
    }
    if raw.drain_timeout > MAX_DRAIN_TIMEOUT {
        return Err(invalid(
            "server.drain_timeout",
            "must be at most 24h (\"0s\" stops at once)",
        ));
    }
    let mut alternate_servers = Vec::with_capacity(raw.alternate_servers.len());
    for s in &raw.alternate_servers {
        let a = SocketAddr::from_str(s.trim()).map_err(|_| {
            invalid(
                "server.alternate_servers",
                format!("{s:?} is not IP:PORT, e.g. \"192.0.2.2:3478\" or \"[2001:db8::2]:3478\""),
            )
        })?;
        if a.ip().is_unspecified() || a.port() == 0 {
            return Err(invalid(
                "server.alternate_servers",
                format!("{s:?}: name the other relay's public address and port"),
            ));
        }
        if let Some(own) = listen.iter().find(|l| l.addr == a) {
            return Err(invalid(
                "server.alternate_servers",
                format!(
                    "{s:?} is this relay's own listener {own}: a draining relay would send \
                     clients back to itself; name another node of the fleet"
                ),
            ));
        }
        alternate_servers.push(a);
    }
    Ok(Server {
        realm,
        software,
        listen,
        workers,
        drain_timeout: raw.drain_timeout,
        alternate_servers,
    })
}

fn parse_listen(s: &str) -> Result<Listen, Error> {
    let Some((scheme, addr)) = s.split_once("://") else {
        return Err(invalid(
            "server.listen",
            format!("{s:?} has no scheme; write e.g. \"udp://0.0.0.0:3478\""),
        ));
    };
    let transport = [
        ListenTransport::Udp,
        ListenTransport::Tcp,
        ListenTransport::Tls,
    ]
    .into_iter()
    .find(|t| t.scheme() == scheme)
    .ok_or_else(|| {
        invalid(
            "server.listen",
            format!("{s:?}: unknown scheme {scheme:?}; use udp://, tcp:// or tls://"),
        )
    })?;
    let addr = SocketAddr::from_str(addr).map_err(|_| {
        invalid(
            "server.listen",
            format!("{s:?}: {addr:?} is not IP:PORT (IPv6 in brackets, e.g. [::1]:3478)"),
        )
    })?;
    Ok(Listen { transport, addr })
}
