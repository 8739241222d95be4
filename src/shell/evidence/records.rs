//! Core events → evidence records (`docs/evidence-format.md`). Pure mapping, no I/O: the
//! writer thread calls it with the log's pseudonymizer. Addresses and user ids leave here only
//! as the configured address mode writes them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::SystemTime;

use eeaturn_evidence::Error;
use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::pseudonym::Pseudonymizer;
use eeaturn_evidence::record::{
    AllocationCreated, AllocationEnded, AllocationRefused, Body, ChannelBound, DatabaseInfo,
    DatabaseRole, FactSource, PeerDecision, PeerTraffic, Permission, PermissionVia, PolicyInForce,
    RefusalStage, Traffic, Transport,
};

use crate::policy::{self, Facts, Policy, Rules, Subject};
use crate::relay::{self, AllocationId, Event, Stage, TrafficCounters};

/// What the writer remembers of a running allocation, for a refusal of it after a reload
/// (the core's event names only the allocation). Bounded by the allocation limit.
#[derive(Debug, Default)]
pub(super) struct Live {
    allocations: HashMap<AllocationId, (relay::Transport, String)>,
}

impl Live {
    /// Returns how many allocations are running, as far as the evidence knows.
    pub(super) fn len(&self) -> usize {
        self.allocations.len()
    }
}

/// Maps one core event to its record, or `None` for events that are not evidence
/// (refreshes).
///
/// # Errors
///
/// Returns the pseudonymizer's error (a day key that cannot be created).
pub(super) fn record(
    ev: &Event,
    live: &mut Live,
    p: &mut Pseudonymizer,
) -> Result<Option<(Body, SystemTime)>, Error> {
    let body = match ev {
        Event::AllocationCreated {
            id,
            at,
            transport,
            client,
            user,
            relayed,
            lifetime,
            rule,
            facts,
        } => {
            live.allocations.insert(*id, (*transport, user.clone()));
            Body::AllocationCreated(AllocationCreated {
                allocation: id.to_string(),
                client: p.address(client.ip(), *at)?,
                user: user_field(user, *at, p)?,
                country: country(facts),
                asn: facts.asn,
                rule: rule.id().to_owned(),
                fact_source: fact_source(facts),
                transport: transport_field(*transport),
                relayed: relayed.iter().map(ToString::to_string).collect(),
                lifetime_s: lifetime.as_secs(),
            })
        }
        Event::AllocationRefreshed { .. } => return Ok(None),
        Event::AllocationEnded {
            id,
            at,
            started,
            reason,
            traffic,
            peers,
        } => {
            live.allocations.remove(id);
            let mut list = Vec::with_capacity(peers.len());
            for peer in peers {
                let t = counters(&peer.traffic);
                list.push(PeerTraffic {
                    peer: p.address(peer.peer, *at)?,
                    packets_to_peer: t.packets_to_peer,
                    bytes_to_peer: t.bytes_to_peer,
                    packets_to_client: t.packets_to_client,
                    bytes_to_client: t.bytes_to_client,
                });
            }
            let duration = at.duration_since(*started).unwrap_or_default();
            Body::AllocationEnded(AllocationEnded {
                allocation: id.to_string(),
                reason: reason.name().to_owned(),
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                peers: list,
                totals: counters(traffic),
            })
        }
        Event::PermissionAllowed {
            id,
            at,
            peer,
            stage,
            rule,
            facts,
        } => Body::Permission(Permission {
            allocation: id.to_string(),
            decision: PeerDecision::Allowed,
            peer: p.address(*peer, *at)?,
            country: country(facts),
            asn: facts.asn,
            rule: rule.id().to_owned(),
            fact_source: fact_source(facts),
            via: via(stage),
        }),
        Event::ChannelBound {
            id,
            at,
            channel,
            peer,
            rule,
            facts,
        } => Body::ChannelBound(ChannelBound {
            allocation: id.to_string(),
            channel: channel.get(),
            peer: p.address(peer.ip(), *at)?,
            country: country(facts),
            asn: facts.asn,
            rule: rule.id().to_owned(),
        }),
        Event::Denied {
            id,
            at,
            stage,
            subject: Subject::Peer,
            addr,
            rule,
            facts,
        } => Body::Permission(Permission {
            allocation: id.map(|i| i.to_string()).unwrap_or_default(),
            decision: PeerDecision::Denied,
            peer: p.address(*addr, *at)?,
            country: country(facts),
            asn: facts.asn,
            rule: rule.id().to_owned(),
            fact_source: fact_source(facts),
            via: via(stage),
        }),
        Event::Denied {
            id,
            at,
            stage,
            subject: Subject::Client,
            addr,
            rule,
            facts,
        } => {
            let (stage, transport, user) = match stage {
                Stage::Allocate { transport, user } => {
                    (RefusalStage::Allocate, *transport, user.clone())
                }
                Stage::Connect { transport } => (RefusalStage::Connect, *transport, String::new()),
                // A reloaded policy refuses a running allocation at its next request.
                Stage::Refresh | Stage::CreatePermission | Stage::ChannelBind => {
                    let (transport, user) = id
                        .and_then(|i| live.allocations.get(&i).cloned())
                        .unwrap_or((relay::Transport::Udp, String::new()));
                    (RefusalStage::Allocate, transport, user)
                }
            };
            Body::AllocationRefused(AllocationRefused {
                stage,
                allocation: id.map(|i| i.to_string()),
                client: p.address(*addr, *at)?,
                user: user_field(&user, *at, p)?,
                country: country(facts),
                asn: facts.asn,
                rule: rule.id().to_owned(),
                fact_source: fact_source(facts),
                transport: transport_field(transport),
            })
        }
    };
    Ok(Some((body, event_time(ev))))
}

/// The `policy-in-force` record of `policy`.
pub(super) fn policy_in_force(policy: &Policy) -> Body {
    let geo = policy.geo();
    let databases = [
        (DatabaseRole::Country, geo.country.as_ref()),
        (DatabaseRole::Asn, geo.asn.as_ref()),
    ]
    .into_iter()
    .filter_map(|(role, db)| {
        let info = db?.info();
        Some(DatabaseInfo {
            role,
            database_type: info.database_type.clone(),
            build_epoch: info.build_epoch,
            sha256: Digest::from_hex(&info.sha256).unwrap_or(Digest::ZERO),
        })
    })
    .collect();
    Body::PolicyInForce(PolicyInForce {
        regions: policy.rules().regions.clone(),
        rule_set_digest: rule_set_digest(policy.rules()),
        databases,
    })
}

/// SHA-256 of the canonical rendering of the rules ([`canonical_rules`]).
pub(crate) fn rule_set_digest(rules: &Rules) -> Digest {
    Digest::of(canonical_rules(rules).as_bytes())
}

/// The canonical text of a rule set: one `key=value` line per rule field in a fixed order;
/// sets sorted (they are `BTreeSet`s), lists comma-separated in the order they apply
/// (networks most specific first), CIDRs with host bits cleared. Two configurations that
/// decide every address alike but are written differently (order of set items, spelling of
/// durations, comments) give the same digest. Documented in `docs/evidence-format.md`.
pub(crate) fn canonical_rules(rules: &Rules) -> String {
    fn join<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
        items
            .into_iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
    let mut out = String::from("eeaturn-rules-v1\n");
    let _ = writeln!(out, "regions={}", join(&rules.regions));
    let _ = writeln!(out, "region_countries={}", join(&rules.region_countries));
    let _ = writeln!(out, "allow_countries={}", join(&rules.allow_countries));
    let _ = writeln!(out, "deny_countries={}", join(&rules.deny_countries));
    let _ = writeln!(out, "allow_asns={}", join(&rules.allow_asns));
    let _ = writeln!(out, "deny_asns={}", join(&rules.deny_asns));
    let unknown = if rules.unknown_allowed {
        "allow"
    } else {
        "deny"
    };
    let _ = writeln!(out, "unknown={unknown}");
    let networks = rules.networks.iter().map(|n| {
        let asn = n.asn.map_or_else(String::new, |a| a.to_string());
        format!("{} {} {asn}", n.net.trunc(), n.country)
    });
    let _ = writeln!(out, "networks={}", join(networks));
    let _ = writeln!(
        out,
        "peer_deny={}",
        join(rules.peer_deny.iter().map(|n| n.trunc()))
    );
    let _ = writeln!(
        out,
        "peer_dangerous_allow={}",
        join(rules.peer_dangerous_allow.iter().map(|n| n.trunc()))
    );
    let _ = writeln!(
        out,
        "client_deny={}",
        join(rules.client_deny.iter().map(|n| n.trunc()))
    );
    out
}

fn event_time(ev: &Event) -> SystemTime {
    match ev {
        Event::AllocationCreated { at, .. }
        | Event::AllocationRefreshed { at, .. }
        | Event::AllocationEnded { at, .. }
        | Event::PermissionAllowed { at, .. }
        | Event::ChannelBound { at, .. }
        | Event::Denied { at, .. } => *at,
    }
}

fn user_field(user: &str, at: SystemTime, p: &mut Pseudonymizer) -> Result<Option<String>, Error> {
    if user.is_empty() {
        Ok(None)
    } else {
        p.user(user, at).map(Some)
    }
}

fn country(facts: &Facts) -> Option<String> {
    facts.country.map(|c| c.as_str().to_owned())
}

fn fact_source(facts: &Facts) -> FactSource {
    match facts.source {
        policy::FactSource::None => FactSource::None,
        policy::FactSource::Database => FactSource::Database,
        policy::FactSource::Override => FactSource::Override,
    }
}

fn transport_field(t: relay::Transport) -> Transport {
    match t {
        relay::Transport::Udp => Transport::Udp,
        relay::Transport::Tcp => Transport::Tcp,
        relay::Transport::Tls => Transport::Tls,
    }
}

/// `via` of a permission record. A permission withdrawn by a reloaded policy at a Refresh is
/// recorded as `create-permission`: that is how it had been installed or refreshed.
fn via(stage: &Stage) -> PermissionVia {
    match stage {
        Stage::ChannelBind => PermissionVia::ChannelBind,
        Stage::Allocate { .. }
        | Stage::Connect { .. }
        | Stage::Refresh
        | Stage::CreatePermission => PermissionVia::CreatePermission,
    }
}

fn counters(t: &TrafficCounters) -> Traffic {
    Traffic {
        packets_to_peer: t.packets_to_peer,
        bytes_to_peer: t.bytes_to_peer,
        packets_to_client: t.packets_to_client,
        bytes_to_client: t.bytes_to_client,
    }
}
