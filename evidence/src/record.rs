//! Evidence records, schema version 1: one JSON object per line.
//!
//! Field order on disk is the declaration order here (serde structs, never maps), so the same
//! record always serialises to the same bytes. Every kind rejects unknown fields when read.
//! `docs/evidence-format.md` documents each field; `docs/evidence/record.schema.json` is the
//! published schema.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::time::Timestamp;

/// The schema version written in every record's `v`.
pub const SCHEMA_VERSION: u32 = 1;

/// One evidence record: the envelope that chains it, and its kind-specific body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Sequence number, from 1 per node, continuing across segments and restarts.
    pub seq: u64,
    /// SHA-256 of the previous record's line (without its newline); zeros for the first.
    pub prev: Digest,
    /// When the recorded event happened.
    pub time: Timestamp,
    /// The relay node that wrote the record.
    pub node: String,
    /// The kind (`kind` on disk) and its fields.
    #[serde(flatten)]
    pub body: Body,
}

impl Record {
    /// Parses one record line (without the newline), rejecting unknown fields and versions.
    ///
    /// # Errors
    ///
    /// Returns the JSON error if the line is not a valid version-1 record.
    pub fn parse(line: &[u8]) -> Result<Self, serde_json::Error> {
        let record: Self = serde_json::from_slice(line)?;
        if record.v != SCHEMA_VERSION {
            return Err(serde::de::Error::custom(format!(
                "unsupported record version {}",
                record.v
            )));
        }
        Ok(record)
    }

    /// Returns the allocation id this record concerns, if any.
    pub fn allocation(&self) -> Option<&str> {
        match &self.body {
            Body::AllocationCreated(b) => Some(&b.allocation),
            Body::Permission(b) => Some(&b.allocation),
            Body::ChannelBound(b) => Some(&b.allocation),
            Body::AllocationEnded(b) => Some(&b.allocation),
            Body::AllocationRefused(b) => b.allocation.as_deref(),
            Body::NodeStarted(_)
            | Body::NodeStopped(_)
            | Body::PolicyInForce(_)
            | Body::ChainResumed(_)
            | Body::Pruned(_) => None,
        }
    }
}

/// The kind of a record and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Body {
    /// The node started writing evidence.
    NodeStarted(NodeStarted),
    /// The node stopped writing evidence.
    NodeStopped(NodeStopped),
    /// The policy and databases in force, at start and after every reload.
    PolicyInForce(PolicyInForce),
    /// An allocation was admitted.
    AllocationCreated(AllocationCreated),
    /// An allocation was refused by the policy.
    AllocationRefused(AllocationRefused),
    /// A peer permission was decided.
    Permission(Permission),
    /// A channel was bound to an allowed peer.
    ChannelBound(ChannelBound),
    /// An allocation ended, with its traffic per peer.
    AllocationEnded(AllocationEnded),
    /// The chain continues after a restart.
    ChainResumed(ChainResumed),
    /// Old segments were deleted by retention.
    Pruned(Pruned),
}

impl Body {
    /// Returns the `kind` string written on disk.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NodeStarted(_) => "node-started",
            Self::NodeStopped(_) => "node-stopped",
            Self::PolicyInForce(_) => "policy-in-force",
            Self::AllocationCreated(_) => "allocation-created",
            Self::AllocationRefused(_) => "allocation-refused",
            Self::Permission(_) => "permission",
            Self::ChannelBound(_) => "channel-bound",
            Self::AllocationEnded(_) => "allocation-ended",
            Self::ChainResumed(_) => "chain-resumed",
            Self::Pruned(_) => "pruned",
        }
    }
}

/// `node-started`: what is running and with which configuration and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStarted {
    /// The operator's site name (a data centre, a city).
    pub site: String,
    /// The relay's software version.
    pub version: String,
    /// SHA-256 of the effective configuration.
    pub config_digest: Digest,
    /// Fingerprint of the evidence signing key (SHA-256 of the raw public key).
    pub key_fingerprint: Digest,
    /// The configured retention in seconds, so that the evidence states it before any
    /// pruning has; absent when the writer was not told (older writers, tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_s: Option<u64>,
}

/// `node-stopped`: as [`NodeStarted`], plus why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStopped {
    /// The operator's site name.
    pub site: String,
    /// The relay's software version.
    pub version: String,
    /// SHA-256 of the effective configuration.
    pub config_digest: Digest,
    /// Fingerprint of the evidence signing key.
    pub key_fingerprint: Digest,
    /// Why it stopped (`shutdown`, `signal`, ...).
    pub reason: String,
}

/// `policy-in-force`: the rules and databases that decide from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInForce {
    /// The allowed regions (e.g. `EEA`), as configured.
    pub regions: Vec<String>,
    /// SHA-256 of the canonical rule set.
    pub rule_set_digest: Digest,
    /// The GeoIP/ASN databases loaded.
    pub databases: Vec<DatabaseInfo>,
}

/// One database in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseInfo {
    /// What the policy uses it for.
    #[serde(rename = "type")]
    pub role: DatabaseRole,
    /// `database_type` from the mmdb metadata (e.g. `GeoLite2-Country`).
    pub database_type: String,
    /// `build_epoch` from the mmdb metadata (seconds since the Unix epoch).
    pub build_epoch: u64,
    /// SHA-256 of the database file.
    pub sha256: Digest,
}

/// What a database is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseRole {
    /// Address → country.
    Country,
    /// Address → autonomous system.
    Asn,
}

/// Where the facts of a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FactSource {
    /// No lookup was needed (the decision came before it).
    None,
    /// The GeoIP/ASN databases.
    Database,
    /// A static network override from the configuration.
    Override,
}

/// The client's transport to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (TURNS).
    Tls,
}

/// `allocation-created`: a client was admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationCreated {
    /// Allocation id, unique per node.
    pub allocation: String,
    /// The client address, as the address mode writes it.
    pub client: String,
    /// The REST user id, pseudonymised unless the address mode is `full`; null if none.
    pub user: Option<String>,
    /// The client's country (ISO 3166-1 alpha-2), if known.
    pub country: Option<String>,
    /// The client's autonomous system number, if known.
    pub asn: Option<u32>,
    /// The id of the rule that admitted the client.
    pub rule: String,
    /// Where the country/ASN came from.
    pub fact_source: FactSource,
    /// The client's transport.
    pub transport: Transport,
    /// The relayed transport addresses (the relay's own, in clear).
    pub relayed: Vec<String>,
    /// The granted lifetime in seconds.
    pub lifetime_s: u64,
}

/// Where a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalStage {
    /// At the Allocate request.
    Allocate,
    /// At TCP/TLS connection accept.
    Connect,
}

/// `allocation-refused`: the policy refused a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationRefused {
    /// Where it was refused.
    pub stage: RefusalStage,
    /// The allocation id, when the refusal concerns an existing allocation (a reload).
    pub allocation: Option<String>,
    /// The client address, as the address mode writes it.
    pub client: String,
    /// The REST user id, pseudonymised unless the address mode is `full`; null if none.
    pub user: Option<String>,
    /// The client's country, if known.
    pub country: Option<String>,
    /// The client's ASN, if known.
    pub asn: Option<u32>,
    /// The id of the deciding rule.
    pub rule: String,
    /// Where the country/ASN came from.
    pub fact_source: FactSource,
    /// The client's transport.
    pub transport: Transport,
}

/// A policy decision on a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerDecision {
    /// Relaying to and from the peer is allowed.
    Allowed,
    /// The peer was refused (403).
    Denied,
}

/// The request that asked for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermissionVia {
    /// CreatePermission.
    CreatePermission,
    /// ChannelBind.
    ChannelBind,
    /// A Send indication.
    Send,
}

/// `permission`: a peer was allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// Allocation id.
    pub allocation: String,
    /// Allowed or denied.
    pub decision: PeerDecision,
    /// The peer address (IP only), as the address mode writes it.
    pub peer: String,
    /// The peer's country, if known.
    pub country: Option<String>,
    /// The peer's ASN, if known.
    pub asn: Option<u32>,
    /// The id of the deciding rule.
    pub rule: String,
    /// Where the country/ASN came from.
    pub fact_source: FactSource,
    /// The request that asked.
    pub via: PermissionVia,
}

/// `channel-bound`: a channel number now names an allowed peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelBound {
    /// Allocation id.
    pub allocation: String,
    /// The channel number (0x4000–0x7FFF: RFC 8656 allots 0x4000–0x4FFF, RFC 5766 clients use the rest).
    pub channel: u16,
    /// The peer address (IP only), as the address mode writes it.
    pub peer: String,
    /// The peer's country, if known.
    pub country: Option<String>,
    /// The peer's ASN, if known.
    pub asn: Option<u32>,
    /// The id of the rule that allowed the peer.
    pub rule: String,
}

/// Packets and payload bytes relayed each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
}

/// Traffic with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTraffic {
    /// The peer address (IP only), as the address mode writes it.
    pub peer: String,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
}

/// `allocation-ended`: why, after how long, and what was relayed to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationEnded {
    /// Allocation id.
    pub allocation: String,
    /// Why it ended (`released`, `expired`, `evidence-unavailable`, ...).
    pub reason: String,
    /// How long it lived, in milliseconds.
    pub duration_ms: u64,
    /// Traffic per peer.
    pub peers: Vec<PeerTraffic>,
    /// Traffic over all peers.
    pub totals: Traffic,
}

/// `chain-resumed`: the first record after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainResumed {
    /// The last intact record's sequence number.
    pub last_seq: u64,
    /// The last intact record's hash (this record's `prev`).
    pub last_head: Digest,
    /// The torn final record found, if any.
    pub torn_tail: Option<TornTail>,
}

/// Bytes at the end of a segment that are not an intact, chained record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TornTail {
    /// The segment, relative to the node directory (`segments/...jsonl`).
    pub file: String,
    /// Byte offset where the torn bytes start.
    pub offset: u64,
    /// How many bytes follow the last intact record.
    pub bytes: u64,
}

/// `pruned`: segments deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pruned {
    /// Segment files deleted (with their manifests and checkpoints).
    pub segments: Vec<String>,
    /// Every record up to and including this sequence number is gone.
    pub up_to_seq: u64,
    /// The hash of record `up_to_seq`: the `prev` of the oldest record kept.
    pub up_to_head: Digest,
    /// The hash of the last deleted manifest: the `prev_manifest` of the oldest kept.
    pub last_manifest: Digest,
    /// UTC days (`YYYY-MM-DD`) whose pseudonym keys were destroyed.
    pub key_days: Vec<String>,
    /// The retention in force, in seconds.
    pub retention_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            v: 1,
            seq: 7,
            prev: Digest::of(b"x"),
            time: Timestamp::from_unix_millis(1_796_526_855_123),
            node: "fra-1".into(),
            body: Body::ChannelBound(ChannelBound {
                allocation: "a1".into(),
                channel: 0x4001,
                peer: "p1:00".into(),
                country: Some("DE".into()),
                asn: None,
                rule: "eea".into(),
            }),
        }
    }

    #[test]
    fn envelope_comes_first_then_kind_then_fields() {
        let line = serde_json::to_string(&record()).unwrap();
        assert!(line.starts_with(
            "{\"v\":1,\"seq\":7,\"prev\":\"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\",\"time\":\"2026-12-06T03:14:15.123Z\",\"node\":\"fra-1\",\"kind\":\"channel-bound\",\"allocation\":\"a1\""
        ), "{line}");
        assert_eq!(Record::parse(line.as_bytes()).unwrap(), record());
    }

    #[test]
    fn unknown_fields_and_versions_are_rejected() {
        let line = serde_json::to_string(&record()).unwrap();
        let extra = line.replacen("\"rule\":", "\"password\":\"x\",\"rule\":", 1);
        assert!(Record::parse(extra.as_bytes()).is_err());
        let v2 = line.replacen("\"v\":1", "\"v\":2", 1);
        assert!(Record::parse(v2.as_bytes()).is_err());
        let kind = line.replacen("channel-bound", "channel-unbound", 1);
        assert!(Record::parse(kind.as_bytes()).is_err());
    }
}
