//! `eeaturn credentials`, `eeaturn secret` and `eeaturn api-key`: the relay's secrets and the
//! credentials and keys made from them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use eeaturn::config::{Config, parse_duration};

use crate::write_stdout;

#[derive(Subcommand)]
pub(crate) enum CredentialsCmd {
    /// Print a username/password pair signed with the current secret of `auth.secret_file`.
    Issue {
        /// The user id embedded in the username ("<expiry>:<user>"); no ':' allowed.
        #[arg(long, short)]
        user: String,
        /// How long the credential is valid, e.g. "10m", "1h" (at most auth.max_credential_ttl).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON object instead of lines for a shell.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum SecretCmd {
    /// Put a fresh random secret first in `auth.secret_file`: it signs new credentials after
    /// the next SIGHUP, and every older secret is still accepted until it is retired.
    Rotate {
        /// The TOML configuration file (its auth.secret_file is rewritten).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Remove all but the first KEEP secrets from `auth.secret_file`; credentials signed by the
    /// removed ones fail after the next SIGHUP. Wait auth.max_credential_ttl after a rotation.
    Retire {
        /// The TOML configuration file (its auth.secret_file is rewritten).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// How many secrets to keep, the signing secret first.
        #[arg(long, default_value_t = 1)]
        keep: usize,
    },
}

#[derive(Subcommand)]
pub(crate) enum ApiKeyCmd {
    /// Print a fresh API key and the [[api.keys]] table (holding only its SHA-256) to paste
    /// into the config; reload with SIGHUP. The key is shown once: hand it to the caller.
    New {
        /// The key's name, shown in logs, metrics and TURN usernames ([A-Za-z0-9_-], 1-64).
        #[arg(long)]
        name: String,
        /// What the key may do.
        #[arg(long, value_enum)]
        scope: ScopeArg,
    },
    /// Print the SHA-256 of a key read from standard input (for a key made elsewhere).
    Hash,
}

/// The scope of a new API key (`[[api.keys]] scope`).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ScopeArg {
    /// Signaling servers: POST /v1/credentials.
    Credentials,
    /// Compliance officers: the evidence endpoints (they come with the evidence store).
    Evidence,
}

impl ScopeArg {
    fn name(self) -> &'static str {
        match self {
            Self::Credentials => "credentials",
            Self::Evidence => "evidence",
        }
    }
}

pub(crate) fn credentials(cmd: CredentialsCmd) -> anyhow::Result<()> {
    match cmd {
        CredentialsCmd::Issue {
            user,
            ttl,
            config,
            json,
        } => issue(&user, &ttl, &config, json),
    }
}

pub(crate) fn secret(cmd: SecretCmd) -> anyhow::Result<()> {
    match cmd {
        SecretCmd::Rotate { config } => secret_rotate(&config),
        SecretCmd::Retire { config, keep } => secret_retire(&config, keep),
    }
}

pub(crate) fn api_key(cmd: ApiKeyCmd) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCmd::New { name, scope } => api_key_new(&name, scope),
        ApiKeyCmd::Hash => api_key_hash(),
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the CLI reads the wall clock to issue"
)]
fn issue(user: &str, ttl: &str, path: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let secrets = eeaturn::shell::load_secrets(&config)?;
    let ttl: Duration = parse_duration(ttl).map_err(|m| anyhow::anyhow!("--ttl: {m}"))?;
    let c = secrets
        .issue(
            user,
            ttl,
            config.max_credential_ttl,
            std::time::SystemTime::now(),
        )
        .map_err(|e| anyhow::anyhow!("cannot issue: {e}"))?;
    let out = if json {
        serde_json::to_string(&c)? + "\n"
    } else {
        format!(
            "username={}\npassword={}\nttl={}\nrealm={}\n",
            c.username, c.password, c.ttl, config.realm
        )
    };
    write_stdout(&out)
}

fn secret_rotate(path: &Path) -> anyhow::Result<()> {
    use rand::{RngCore as _, SeedableRng as _};
    let config = Config::load(path)?;
    let file = &config.secret_file;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read auth.secret_file {}", file.display()))?;
    let mut bytes = [0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut bytes);
    let new = hex::encode(bytes);
    let rotated = eeaturn::credentials::rotate_secret_file(&text, &new)
        .map_err(|e| anyhow::anyhow!("auth.secret_file {}: {e}", file.display()))?;
    write_secret_file(file, &rotated)?;
    let n = eeaturn::credentials::Secrets::parse(&rotated)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .len();
    write_stdout(&format!(
        "Rotated {}: a new signing secret is first; {n} secrets are accepted.\n\
         Next: send SIGHUP to eeaturn (systemctl reload eeaturn) so new credentials use it.\n\
         After auth.max_credential_ttl ({} s), when no credential signed by the old secret is\n\
         still valid, retire it: eeaturn secret retire --config {} && systemctl reload eeaturn\n",
        file.display(),
        config.max_credential_ttl.as_secs(),
        path.display()
    ))
}

fn secret_retire(path: &Path, keep: usize) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let file = &config.secret_file;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read auth.secret_file {}", file.display()))?;
    let (out, removed) = eeaturn::credentials::retire_secrets(&text, keep).map_err(|e| {
        anyhow::anyhow!(
            "auth.secret_file {}: {e} (--keep must be at least 1)",
            file.display()
        )
    })?;
    if removed == 0 {
        return write_stdout(&format!(
            "{} holds at most {keep} secret(s); nothing to retire.\n",
            file.display()
        ));
    }
    write_secret_file(file, &out)?;
    write_stdout(&format!(
        "Retired {removed} secret(s) from {}; {keep} remain.\n\
         Next: send SIGHUP to eeaturn (systemctl reload eeaturn); credentials signed by the\n\
         retired secrets are refused from then on.\n",
        file.display()
    ))
}

/// Replaces a secret file atomically (write a sibling, then rename), keeping its owner, group
/// and mode (at most 0640: e.g. `root:eeaturn 0640`, readable by the relay's group); a new
/// file is readable by its owner only.
fn write_secret_file(file: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let old = std::fs::metadata(file).ok();
    let mode = old
        .as_ref()
        .map_or(0o600, |m| m.permissions().mode() & 0o777);
    let tmp = file.with_extension("rotating");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o640)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Some(old) = &old {
        let new = f.metadata()?;
        if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
            std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid())).with_context(|| {
                format!(
                    "cannot give {} the owner and group of {} (run as its owner or root)",
                    tmp.display(),
                    file.display()
                )
            })?;
        }
        // The umask may have cleared group bits the old file had.
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o640))?;
    }
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

fn api_key_new(name: &str, scope: ScopeArg) -> anyhow::Result<()> {
    use rand::SeedableRng as _;
    if !eeaturn::config::valid_key_name(name) {
        anyhow::bail!(
            "--name must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-', and not \"none\" (the metrics label for requests without a key)"
        );
    }
    let key = eeaturn::api::generate_key(&mut rand::rngs::StdRng::from_os_rng());
    let hash = hex::encode(eeaturn::api::hash_key(&key));
    let scope = scope.name();
    write_stdout(&format!(
        "API key (shown once; give it to the caller, store it as a secret, never in a URL):\n\
         {key}\n\n\
         Paste into the config file, then reload (SIGHUP):\n\n\
         [[api.keys]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{hash}\"\n"
    ))
}

fn api_key_hash() -> anyhow::Result<()> {
    let mut key = String::new();
    std::io::stdin().read_line(&mut key)?;
    let key = key.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        anyhow::bail!("no key on standard input");
    }
    write_stdout(&format!("{}\n", hex::encode(eeaturn::api::hash_key(key))))
}
