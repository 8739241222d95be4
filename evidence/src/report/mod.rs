//! Residency reports: records in, report out.
//!
//! [`build`] verifies node directories with [`verify`](crate::verify::verify) (the same code
//! as `eeaturn evidence verify`), then streams their records once through a [`Builder`] that
//! folds each record into tables bounded by the number of days, countries, ASNs, rules,
//! databases and nodes, never by the number of records. The lists that would grow with the
//! records (refused attempts, traffic outside the region, node starts and stops) keep their
//! first [`ReportOptions::list_limit`] entries and count the rest. The one other state is
//! the allocations open at a given moment (to join an allocation's end with its client and
//! peers), bounded by the relay's concurrency.
//!
//! The [`Report`] is plain data; [`html`], [`csv`] and JSON (`serde_json` over [`Report`],
//! schema `docs/evidence/report.schema.json`) render it. No clock is read: the generation
//! time is an option, so the same evidence and options give byte-identical reports.
//!
//! This module reads files and does nothing else: no network, no relay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::Error;
use crate::digest::Digest;
use crate::record::{Body, DatabaseRole, PeerDecision, Record};
use crate::time::Timestamp;
use crate::verify::{self, Severity, VerifyOptions};

pub mod csv;
pub mod html;
mod read;
mod region;
pub mod text;

pub use read::read_records;
pub use region::region_countries;

/// The `schema` value of a JSON report.
pub const REPORT_SCHEMA: &str = "eeaturn-report/1";

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Start of the period (inclusive).
    pub from: Timestamp,
    /// End of the period (exclusive).
    pub to: Timestamp,
    /// When the report was made (written into it; never read from a clock here).
    pub generated_at: Timestamp,
    /// How many entries the growing lists keep (refused attempts, traffic outside the region,
    /// node events); the rest are counted. The CSV export writes everything up to this limit
    /// too, so pass a large one for a full CSV listing.
    pub list_limit: usize,
    /// The directories as the reader should see them in the "verify yourself" command.
    pub dirs_shown: Vec<String>,
    /// The public key files as shown in the "verify yourself" command.
    pub trust_shown: Vec<String>,
    /// The regions endpoints are judged against before a node's first `policy-in-force`
    /// record held (retention may have deleted it); `["EEA"]` for eeaturn.
    pub assumed_regions: Vec<String>,
}

/// Progress of a report, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Verifying: record bytes read so far.
    Verifying {
        /// Bytes read.
        bytes: u64,
    },
    /// Reading the records for the report: bytes read so far.
    Reading {
        /// Bytes read.
        bytes: u64,
    },
}

/// Verifies `dirs`, then reads their records into a report.
///
/// The verification covers exactly the period, as `eeaturn evidence verify --from --to` does.
/// A report over evidence that does not verify is still made; its
/// summary ([`Summary::verified`] and the listed findings) says so.
///
/// # Errors
///
/// Returns [`Error::Io`] if a directory cannot be read.
pub fn build(
    dirs: &[PathBuf],
    trust: &VerifyOptions,
    opts: &ReportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, Error> {
    let vopts = VerifyOptions {
        from: Some(opts.from.to_system_time()),
        to: Some(opts.to.to_system_time()),
        trust: trust.trust.clone(),
    };
    let checked = verify::verify(dirs, &vopts, &mut |p| {
        progress(Progress::Verifying { bytes: p.bytes });
    });
    let mut builder = Builder::new(opts.clone());
    let mut bytes_before = 0;
    for (i, dir) in dirs.iter().enumerate() {
        builder.start_node(i);
        let read = read_records(dir, Some(opts.to), &mut |record, bytes| {
            builder.add(record);
            progress(Progress::Reading {
                bytes: bytes_before + bytes,
            });
        })?;
        bytes_before += read;
    }
    Ok(builder.finish(&checked))
}

/// Folds records into a [`Report`], one at a time.
#[derive(Debug)]
pub struct Builder {
    opts: ReportOptions,
    nodes: Vec<NodeAcc>,
    current: usize,
    days: BTreeMap<String, DayRow>,
    refusals_by_country: BTreeMap<String, RefusalCount>,
    refusals_by_asn: BTreeMap<Option<u32>, RefusalCount>,
    refusals_by_rule: BTreeMap<String, RefusalCount>,
    clients_by_country: BTreeMap<String, CountryTraffic>,
    peers_by_country: BTreeMap<String, CountryTraffic>,
    databases: BTreeMap<(String, Digest), DatabaseRow>,
    policies: Vec<PolicyRow>,
    policy_total: u64,
    node_events: Capped<NodeEventRow>,
    refused: Capped<RefusedRow>,
    outside: Capped<OutsideRow>,
    totals: Totals,
}

#[derive(Debug, Default)]
struct NodeAcc {
    row: NodeRow,
    /// Countries of the regions in force (from the last `policy-in-force`).
    region: BTreeSet<String>,
    /// The databases in force, to date their use.
    databases: Vec<(String, Digest)>,
    /// The policy in force (rule set digest and regions), to tell a change from a reload.
    policy: Option<(Digest, Vec<String>)>,
    open: BTreeMap<String, OpenAllocation>,
}

#[derive(Debug)]
struct OpenAllocation {
    client_country: Option<String>,
    client_inside: bool,
    counted: bool,
    /// Every peer allowed so far was inside the region.
    peers_inside: bool,
    /// Peer (as written) → its country, from permissions and channel bindings.
    peers: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    allocations: u64,
    allocations_inside: u64,
    allocations_ended: u64,
    packets: u64,
    bytes: u64,
    bytes_inside: u64,
    refusals: u64,
    peer_refusals: u64,
}

impl Builder {
    /// Starts an empty report.
    pub fn new(opts: ReportOptions) -> Self {
        let limit = opts.list_limit;
        Self {
            opts,
            nodes: Vec::new(),
            current: 0,
            days: BTreeMap::new(),
            refusals_by_country: BTreeMap::new(),
            refusals_by_asn: BTreeMap::new(),
            refusals_by_rule: BTreeMap::new(),
            clients_by_country: BTreeMap::new(),
            peers_by_country: BTreeMap::new(),
            databases: BTreeMap::new(),
            policies: Vec::new(),
            policy_total: 0,
            node_events: Capped::new(limit),
            refused: Capped::new(limit),
            outside: Capped::new(limit),
            totals: Totals::default(),
        }
    }

    /// Makes the records that follow belong to node directory number `index` (in the order
    /// given to [`finish`](Self::finish)'s verification).
    pub fn start_node(&mut self, index: usize) {
        while self.nodes.len() <= index {
            self.nodes.push(NodeAcc {
                region: region_countries(&self.opts.assumed_regions),
                ..NodeAcc::default()
            });
        }
        self.current = index;
    }

    /// Folds one record in. Records before the period still build the state that later ones
    /// need (open allocations, the policy in force); only those inside the period are counted.
    pub fn add(&mut self, record: &Record) {
        if self.nodes.is_empty() {
            self.start_node(0);
        }
        let in_period = record.time >= self.opts.from && record.time < self.opts.to;
        let t = record.time;
        let node_id = record.node.clone();
        let acc = &mut self.nodes[self.current];
        if acc.row.node.is_empty() {
            acc.row.node.clone_from(&record.node);
        }
        if acc.row.oldest_record.is_none() {
            acc.row.oldest_record = Some(t);
        }
        acc.row.newest_record = Some(t);
        if in_period {
            acc.row.records += 1;
        }
        match &record.body {
            Body::NodeStarted(b) => {
                acc.row.site.clone_from(&b.site);
                acc.row.versions.insert(b.version.clone());
                // The configured retention as the node last started with it; a later
                // `pruned` record states the one in force when it pruned.
                if let Some(r) = b.retention_s {
                    acc.row.retention_s = Some(r);
                }
                if in_period {
                    self.node_events.push(NodeEventRow {
                        node: node_id,
                        time: t,
                        event: "started",
                        site: b.site.clone(),
                        version: b.version.clone(),
                        detail: String::new(),
                        config_digest: Some(b.config_digest),
                    });
                }
            }
            Body::NodeStopped(b) => {
                if acc.row.site.is_empty() {
                    // The start may have been deleted by retention.
                    acc.row.site.clone_from(&b.site);
                }
                acc.row.versions.insert(b.version.clone());
                if in_period {
                    self.node_events.push(NodeEventRow {
                        node: node_id,
                        time: t,
                        event: "stopped",
                        site: b.site.clone(),
                        version: b.version.clone(),
                        detail: b.reason.clone(),
                        config_digest: Some(b.config_digest),
                    });
                }
                // A stopped node's open allocations ended with it (their end record came first
                // if it was written at all).
                let open = std::mem::take(&mut acc.open);
                for (_, a) in open {
                    Self::close_uncounted(&mut self.totals, a);
                }
            }
            Body::ChainResumed(b) => {
                if in_period {
                    let detail = match &b.torn_tail {
                        Some(torn) => format!(
                            "after seq {}; {} torn bytes in {}",
                            b.last_seq, torn.bytes, torn.file
                        ),
                        None => format!("after seq {}", b.last_seq),
                    };
                    let site = acc.row.site.clone();
                    self.node_events.push(NodeEventRow {
                        node: node_id,
                        time: t,
                        event: "resumed",
                        site,
                        version: String::new(),
                        detail,
                        config_digest: None,
                    });
                }
                // The previous run's allocations did not survive the restart.
                let open = std::mem::take(&mut acc.open);
                for (_, a) in open {
                    Self::close_uncounted(&mut self.totals, a);
                }
            }
            Body::PolicyInForce(b) => {
                acc.region = region_countries(&b.regions);
                let current = (b.rule_set_digest, b.regions.clone());
                let change = match &acc.policy {
                    None => "start",
                    Some(p) if *p == current => "reload",
                    Some(_) => "change",
                };
                acc.policy = Some(current);
                acc.databases = b
                    .databases
                    .iter()
                    .map(|d| (node_id.clone(), d.sha256))
                    .collect();
                for d in &b.databases {
                    let row = self
                        .databases
                        .entry((node_id.clone(), d.sha256))
                        .or_insert_with(|| DatabaseRow {
                            node: node_id.clone(),
                            role: match d.role {
                                DatabaseRole::Country => "country",
                                DatabaseRole::Asn => "asn",
                            },
                            database_type: d.database_type.clone(),
                            build_time: Timestamp::from_unix_millis(
                                d.build_epoch.saturating_mul(1000),
                            ),
                            sha256: d.sha256,
                            loaded: t,
                            first_used: None,
                            last_used: None,
                            age_days_first_use: None,
                            age_days_last_use: None,
                        });
                    if in_period {
                        row.note_use(t);
                    }
                }
                if in_period {
                    self.policy_total += 1;
                    if self.policies.len() < self.opts.list_limit {
                        self.policies.push(PolicyRow {
                            node: node_id,
                            time: t,
                            change,
                            regions: b.regions.join(", "),
                            rule_set_digest: b.rule_set_digest,
                            databases: b.databases.len() as u64,
                        });
                    }
                }
            }
            Body::AllocationCreated(b) => {
                let client_inside = inside(&acc.region, b.country.as_deref());
                acc.open.insert(
                    b.allocation.clone(),
                    OpenAllocation {
                        client_country: b.country.clone(),
                        client_inside,
                        counted: in_period,
                        peers_inside: true,
                        peers: BTreeMap::new(),
                    },
                );
                if in_period {
                    acc.row.allocations += 1;
                    self.totals.allocations += 1;
                    self.day(t).allocations += 1;
                    let c = self
                        .clients_by_country
                        .entry(country_key(b.country.as_deref()))
                        .or_default();
                    c.count += 1;
                    c.inside = client_inside;
                    let dbs = self.nodes[self.current].databases.clone();
                    for key in dbs {
                        if let Some(row) = self.databases.get_mut(&key) {
                            row.note_use(t);
                        }
                    }
                }
            }
            Body::AllocationRefused(b) => {
                if in_period {
                    acc.row.refusals += 1;
                    self.totals.refusals += 1;
                    self.day(t).refusals += 1;
                    let country = country_key(b.country.as_deref());
                    self.refusals_by_country.entry(country).or_default().clients += 1;
                    self.refusals_by_asn.entry(b.asn).or_default().clients += 1;
                    self.refusals_by_rule
                        .entry(b.rule.clone())
                        .or_default()
                        .clients += 1;
                    self.refused.push(RefusedRow {
                        node: node_id,
                        time: t,
                        subject: "client",
                        stage: match b.stage {
                            crate::record::RefusalStage::Allocate => "allocate",
                            crate::record::RefusalStage::Connect => "connect",
                        },
                        allocation: b.allocation.clone(),
                        pseudonym: b.client.clone(),
                        user: b.user.clone(),
                        country: b.country.clone(),
                        asn: b.asn,
                        rule: b.rule.clone(),
                    });
                }
            }
            Body::Permission(b) => match b.decision {
                PeerDecision::Allowed => {
                    let peer_inside = inside(&acc.region, b.country.as_deref());
                    if let Some(a) = acc.open.get_mut(&b.allocation) {
                        a.peers.insert(b.peer.clone(), b.country.clone());
                        a.peers_inside &= peer_inside;
                    }
                    if in_period {
                        let c = self
                            .peers_by_country
                            .entry(country_key(b.country.as_deref()))
                            .or_default();
                        c.count += 1;
                        c.inside = peer_inside;
                    }
                }
                PeerDecision::Denied => {
                    if in_period {
                        acc.row.peer_refusals += 1;
                        self.totals.peer_refusals += 1;
                        self.day(t).peer_refusals += 1;
                        let country = country_key(b.country.as_deref());
                        self.refusals_by_country.entry(country).or_default().peers += 1;
                        self.refusals_by_asn.entry(b.asn).or_default().peers += 1;
                        self.refusals_by_rule
                            .entry(b.rule.clone())
                            .or_default()
                            .peers += 1;
                        self.refused.push(RefusedRow {
                            node: node_id,
                            time: t,
                            subject: "peer",
                            stage: match b.via {
                                crate::record::PermissionVia::CreatePermission => {
                                    "create-permission"
                                }
                                crate::record::PermissionVia::ChannelBind => "channel-bind",
                                crate::record::PermissionVia::Send => "send",
                            },
                            allocation: Some(b.allocation.clone()),
                            pseudonym: b.peer.clone(),
                            user: None,
                            country: b.country.clone(),
                            asn: b.asn,
                            rule: b.rule.clone(),
                        });
                    }
                }
            },
            Body::ChannelBound(b) => {
                if let Some(a) = acc.open.get_mut(&b.allocation) {
                    a.peers
                        .entry(b.peer.clone())
                        .or_insert_with(|| b.country.clone());
                }
            }
            Body::AllocationEnded(b) => {
                let region = acc.region.clone();
                let open = acc.open.remove(&b.allocation);
                if in_period {
                    acc.row.packets += b.totals.packets_to_peer + b.totals.packets_to_client;
                    acc.row.bytes += b.totals.bytes_to_peer + b.totals.bytes_to_client;
                }
                self.end_allocation(node_id, t, in_period, b, open.as_ref(), &region);
            }
            Body::Pruned(b) => {
                acc.row.pruned_up_to_seq =
                    Some(b.up_to_seq.max(acc.row.pruned_up_to_seq.unwrap_or(0)));
                acc.row.pruned_at = Some(t);
                acc.row.retention_s = Some(b.retention_s);
            }
        }
    }

    fn close_uncounted(totals: &mut Totals, a: OpenAllocation) {
        // An allocation whose end was never recorded: judged by its client and peers.
        if a.counted && a.client_inside && a.peers_inside {
            totals.allocations_inside += 1;
        }
    }

    fn end_allocation(
        &mut self,
        node: String,
        t: Timestamp,
        in_period: bool,
        b: &crate::record::AllocationEnded,
        open: Option<&OpenAllocation>,
        region: &BTreeSet<String>,
    ) {
        let client_country = open.and_then(|a| a.client_country.clone());
        let client_inside = open.is_some_and(|a| a.client_inside);
        let mut all_inside = client_inside && open.is_some_and(|a| a.peers_inside);
        for p in &b.peers {
            let peer_country = open.and_then(|a| a.peers.get(&p.peer).cloned().flatten());
            let peer_inside = inside(region, peer_country.as_deref());
            let packets = p.packets_to_peer + p.packets_to_client;
            let bytes = p.bytes_to_peer + p.bytes_to_client;
            all_inside &= peer_inside;
            if !in_period {
                continue;
            }
            self.totals.packets += packets;
            self.totals.bytes += bytes;
            self.day(t).bytes += bytes;
            let pc = self
                .peers_by_country
                .entry(country_key(peer_country.as_deref()))
                .or_default();
            pc.bytes += bytes;
            pc.inside = peer_inside;
            let cc = self
                .clients_by_country
                .entry(country_key(client_country.as_deref()))
                .or_default();
            cc.bytes += bytes;
            cc.inside = client_inside;
            if client_inside && peer_inside {
                self.totals.bytes_inside += bytes;
            } else if bytes > 0 || !client_inside || !peer_inside {
                self.outside.push(OutsideRow {
                    node: node.clone(),
                    time: t,
                    allocation: b.allocation.clone(),
                    client_country: client_country.clone(),
                    peer: p.peer.clone(),
                    peer_country: peer_country.clone(),
                    packets,
                    bytes,
                    known: open.is_some(),
                });
            }
        }
        // Counters not broken down by peer (none expected) still count as relayed.
        let per_peer: u64 = b
            .peers
            .iter()
            .map(|p| p.bytes_to_peer + p.bytes_to_client)
            .sum();
        let total = b.totals.bytes_to_peer + b.totals.bytes_to_client;
        if in_period && total > per_peer {
            let rest = total - per_peer;
            self.totals.bytes += rest;
            self.day(t).bytes += rest;
            self.outside.push(OutsideRow {
                node,
                time: t,
                allocation: b.allocation.clone(),
                client_country,
                peer: String::new(),
                peer_country: None,
                packets: 0,
                bytes: rest,
                known: false,
            });
        }
        if in_period {
            self.totals.allocations_ended += 1;
        }
        // The allocation is judged in the period it was created in.
        if open.is_some_and(|a| a.counted) && all_inside {
            self.totals.allocations_inside += 1;
        }
    }

    fn day(&mut self, t: Timestamp) -> &mut DayRow {
        let day = t.day();
        self.days.entry(day.clone()).or_insert_with(|| DayRow {
            day,
            ..DayRow::default()
        })
    }

    /// Completes the report with the verification result of the same directories.
    pub fn finish(mut self, checked: &verify::VerifyReport) -> Report {
        // Allocations still open at the end of the evidence: judged by what is known.
        for acc in &mut self.nodes {
            let open = std::mem::take(&mut acc.open);
            for (_, a) in open {
                Self::close_uncounted(&mut self.totals, a);
            }
        }
        let mut keys = BTreeSet::new();
        let mut findings = Vec::new();
        let mut nodes = Vec::new();
        for (i, vnode) in checked.nodes.iter().enumerate() {
            let mut row = self.nodes.get(i).map(|a| a.row.clone()).unwrap_or_default();
            if row.node.is_empty() {
                row.node = vnode.node.clone().unwrap_or_default();
            }
            row.dir = vnode
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            row.key_fingerprints = vnode.key_fingerprints.iter().copied().collect();
            keys.extend(vnode.key_fingerprints.iter().copied());
            row.failures = vnode
                .findings
                .iter()
                .filter(|f| f.severity() == Severity::Failure)
                .count() as u64;
            row.verified = row.failures == 0;
            for f in &vnode.findings {
                findings.push(FindingRow::new(&row.node, &row.dir, f));
            }
            nodes.push(row);
        }
        let mut sites: Vec<String> = nodes.iter().map(|n| n.site.clone()).collect();
        sites.sort();
        sites.dedup();
        sites.retain(|s| !s.is_empty());
        let t = self.totals;
        let oldest = nodes.iter().filter_map(|n| n.oldest_record).min();
        let retention_s = nodes.iter().filter_map(|n| n.retention_s).max();
        let within_retention = match (retention_s, oldest) {
            (Some(r), Some(_)) => Some(nodes.iter().all(|n| n.within_retention(r))),
            _ => None,
        };
        let mut databases: Vec<DatabaseRow> = self.databases.into_values().collect();
        databases.sort_by(|a, b| {
            (a.first_used.is_none(), a.first_used, &a.node, a.role).cmp(&(
                b.first_used.is_none(),
                b.first_used,
                &b.node,
                b.role,
            ))
        });
        databases.retain(|d| d.first_used.is_some());
        for d in &mut databases {
            d.age_days_first_use = d.first_used.map(|u| age_days(d.build_time, u));
            d.age_days_last_use = d.last_used.map(|u| age_days(d.build_time, u));
        }
        let summary = Summary {
            nodes: nodes.len() as u64,
            sites,
            allocations: t.allocations,
            allocations_inside: t.allocations_inside,
            allocations_inside_share: share(t.allocations_inside, t.allocations),
            packets: t.packets,
            bytes: t.bytes,
            bytes_inside: t.bytes_inside,
            bytes_inside_share: share(t.bytes_inside, t.bytes),
            all_inside: t.allocations_inside == t.allocations && t.bytes_inside == t.bytes,
            client_refusals: t.refusals,
            peer_refusals: t.peer_refusals,
            verified: checked.ok,
            failures: checked.failures,
            key_fingerprints: keys.into_iter().collect(),
            oldest_record: oldest,
            pruned_up_to: nodes.iter().filter_map(|n| n.pruned_at).max(),
            retention_days: retention_s.map(|s| s / 86_400),
            within_retention,
        };
        let refusals_by_country = self
            .refusals_by_country
            .into_iter()
            .map(|(country, c)| RefusalByCountry {
                country,
                clients: c.clients,
                peers: c.peers,
            })
            .collect();
        let refusals_by_asn = self
            .refusals_by_asn
            .into_iter()
            .map(|(asn, c)| RefusalByAsn {
                asn,
                clients: c.clients,
                peers: c.peers,
            })
            .collect();
        let refusals_by_rule = self
            .refusals_by_rule
            .into_iter()
            .map(|(rule, c)| RefusalByRule {
                rule,
                clients: c.clients,
                peers: c.peers,
            })
            .collect();
        let by_country = |m: BTreeMap<String, CountryTraffic>| {
            m.into_iter()
                .map(|(country, c)| CountryRow {
                    country,
                    inside: c.inside,
                    count: c.count,
                    bytes: c.bytes,
                })
                .collect()
        };
        Report {
            schema: REPORT_SCHEMA,
            period: Period {
                from: self.opts.from,
                to: self.opts.to,
            },
            generated_at: self.opts.generated_at,
            list_limit: self.opts.list_limit as u64,
            verify_command: verify_command(&self.opts),
            summary,
            nodes,
            days: self.days.into_values().collect(),
            refusals_by_country,
            refusals_by_asn,
            refusals_by_rule,
            clients_by_country: by_country(self.clients_by_country),
            peers_by_country: by_country(self.peers_by_country),
            outside: self.outside.into_list(),
            databases,
            policies: List {
                total: self.policy_total,
                omitted: self.policy_total - self.policies.len() as u64,
                items: self.policies,
            },
            node_events: self.node_events.into_list(),
            refused: self.refused.into_list(),
            findings,
        }
    }
}

/// The report: what [`html`], [`csv`] and JSON render.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: &'static str,
    /// The period reported on.
    pub period: Period,
    /// When the report was made.
    pub generated_at: Timestamp,
    /// How many entries the growing lists keep.
    pub list_limit: u64,
    /// The command that checks the same evidence.
    pub verify_command: String,
    /// The figures that matter, first.
    pub summary: Summary,
    /// One row per node directory, in the order given.
    pub nodes: Vec<NodeRow>,
    /// Allocations, refusals and bytes per UTC day.
    pub days: Vec<DayRow>,
    /// Refusals by the country of the refused client or peer.
    pub refusals_by_country: Vec<RefusalByCountry>,
    /// Refusals by autonomous system.
    pub refusals_by_asn: Vec<RefusalByAsn>,
    /// Refusals by the rule that refused.
    pub refusals_by_rule: Vec<RefusalByRule>,
    /// Allocations and bytes by the client's country.
    pub clients_by_country: Vec<CountryRow>,
    /// Peer permissions and bytes by the peer's country.
    pub peers_by_country: Vec<CountryRow>,
    /// Relayed traffic with an endpoint outside the region (should be empty).
    pub outside: List<OutsideRow>,
    /// The GeoIP/ASN databases used to decide in the period.
    pub databases: Vec<DatabaseRow>,
    /// Policies put in force in the period: starts, reloads, changes.
    pub policies: List<PolicyRow>,
    /// Node starts, stops and restarts after a crash.
    pub node_events: List<NodeEventRow>,
    /// Refused clients and peers, by pseudonym.
    pub refused: List<RefusedRow>,
    /// Everything `verify` found (failures, warnings, notes).
    pub findings: Vec<FindingRow>,
}

/// A period: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Period {
    /// Start (inclusive).
    pub from: Timestamp,
    /// End (exclusive).
    pub to: Timestamp,
}

/// The summary.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Node directories.
    pub nodes: u64,
    /// Their sites.
    pub sites: Vec<String>,
    /// Allocations created in the period.
    pub allocations: u64,
    /// Of those, the ones whose client and every allowed peer were inside the region.
    pub allocations_inside: u64,
    /// `allocations_inside / allocations`, 1 when there were none.
    pub allocations_inside_share: f64,
    /// Packets relayed (both directions), counted when an allocation ended in the period.
    pub packets: u64,
    /// Payload bytes relayed (both directions), likewise.
    pub bytes: u64,
    /// Of those, bytes between a client and a peer both inside the region.
    pub bytes_inside: u64,
    /// `bytes_inside / bytes`, 1 when nothing was relayed.
    pub bytes_inside_share: f64,
    /// Every allocation and every byte stayed inside.
    pub all_inside: bool,
    /// Clients refused (at Allocate or at connection accept).
    pub client_refusals: u64,
    /// Peers refused (permission denied).
    pub peer_refusals: u64,
    /// The evidence verified: no finding of tampering or loss.
    pub verified: bool,
    /// Findings of severity failure.
    pub failures: u64,
    /// Fingerprints of the keys that signed the evidence.
    pub key_fingerprints: Vec<Digest>,
    /// The oldest record held, over all nodes.
    pub oldest_record: Option<Timestamp>,
    /// When retention last deleted records (over all nodes), if ever.
    pub pruned_up_to: Option<Timestamp>,
    /// The configured retention in days, as the last `node-started` or `pruned` record states
    /// it.
    pub retention_days: Option<u64>,
    /// No record is older than the retention allows (one day of tolerance for hourly
    /// pruning); `None` if the evidence does not state the retention.
    pub within_retention: Option<bool>,
}

/// One node directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeRow {
    /// The node id.
    pub node: String,
    /// Its directory's name.
    pub dir: String,
    /// Its site.
    pub site: String,
    /// Software versions that ran.
    pub versions: BTreeSet<String>,
    /// Records in the period.
    pub records: u64,
    /// Allocations created in the period.
    pub allocations: u64,
    /// Clients refused in the period.
    pub refusals: u64,
    /// Peers refused in the period.
    pub peer_refusals: u64,
    /// Packets relayed in the period.
    pub packets: u64,
    /// Bytes relayed in the period.
    pub bytes: u64,
    /// The evidence of this node verified.
    pub verified: bool,
    /// Its failures.
    pub failures: u64,
    /// Keys that signed it.
    pub key_fingerprints: Vec<Digest>,
    /// The oldest record held.
    pub oldest_record: Option<Timestamp>,
    /// The newest record read.
    pub newest_record: Option<Timestamp>,
    /// Records up to this seq were deleted by retention.
    pub pruned_up_to_seq: Option<u64>,
    /// When that deletion was recorded.
    pub pruned_at: Option<Timestamp>,
    /// The retention in force then, seconds.
    pub retention_s: Option<u64>,
}

impl NodeRow {
    fn within_retention(&self, retention_s: u64) -> bool {
        match (self.oldest_record, self.newest_record) {
            (Some(old), Some(new)) => {
                let allowed = (retention_s + 86_400) * 1000;
                new.unix_millis().saturating_sub(old.unix_millis()) <= allowed
            }
            _ => true,
        }
    }
}

/// One UTC day.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Allocations created.
    pub allocations: u64,
    /// Clients refused.
    pub refusals: u64,
    /// Peers refused.
    pub peer_refusals: u64,
    /// Bytes relayed (allocations that ended that day).
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct RefusalCount {
    clients: u64,
    peers: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct CountryTraffic {
    count: u64,
    bytes: u64,
    inside: bool,
}

/// Refusals of one country (`??` when unknown).
#[derive(Debug, Clone, Serialize)]
pub struct RefusalByCountry {
    /// ISO 3166-1 alpha-2, or `??`.
    pub country: String,
    /// Clients refused.
    pub clients: u64,
    /// Peers refused.
    pub peers: u64,
}

/// Refusals of one autonomous system.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalByAsn {
    /// The ASN, `null` when unknown.
    pub asn: Option<u32>,
    /// Clients refused.
    pub clients: u64,
    /// Peers refused.
    pub peers: u64,
}

/// Refusals by one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalByRule {
    /// The rule id.
    pub rule: String,
    /// Clients refused.
    pub clients: u64,
    /// Peers refused.
    pub peers: u64,
}

/// Clients or peers of one country.
#[derive(Debug, Clone, Serialize)]
pub struct CountryRow {
    /// ISO 3166-1 alpha-2, or `??`.
    pub country: String,
    /// Inside the region in force.
    pub inside: bool,
    /// Allocations (clients) or permissions granted (peers).
    pub count: u64,
    /// Bytes relayed.
    pub bytes: u64,
}

/// Traffic with an endpoint outside the region, or whose endpoints cannot be placed.
#[derive(Debug, Clone, Serialize)]
pub struct OutsideRow {
    /// Node id.
    pub node: String,
    /// When the allocation ended.
    pub time: Timestamp,
    /// Allocation id.
    pub allocation: String,
    /// The client's country.
    pub client_country: Option<String>,
    /// The peer, as written (a pseudonym by default; empty: traffic not broken down by peer).
    pub peer: String,
    /// The peer's country.
    pub peer_country: Option<String>,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// The allocation's start was found (false: before the evidence held, or missing).
    pub known: bool,
}

/// A database used in the period on one node.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRow {
    /// Node id.
    pub node: String,
    /// `country` or `asn`.
    pub role: &'static str,
    /// `database_type` from its metadata.
    pub database_type: String,
    /// Its build time.
    pub build_time: Timestamp,
    /// SHA-256 of the file.
    pub sha256: Digest,
    /// When it was first put in force.
    pub loaded: Timestamp,
    /// First decision time in the period it was in force for.
    pub first_used: Option<Timestamp>,
    /// Last such time.
    pub last_used: Option<Timestamp>,
    /// Its age in whole days at first use.
    pub age_days_first_use: Option<u64>,
    /// Its age in whole days at last use.
    pub age_days_last_use: Option<u64>,
}

impl DatabaseRow {
    fn note_use(&mut self, t: Timestamp) {
        if self.first_used.is_none() {
            self.first_used = Some(t);
        }
        self.last_used = Some(t);
    }
}

/// A policy put in force.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRow {
    /// Node id.
    pub node: String,
    /// When.
    pub time: Timestamp,
    /// `start` (first after the node's first record), `reload` (same rules) or `change`.
    pub change: &'static str,
    /// The regions, comma-separated.
    pub regions: String,
    /// SHA-256 of the rule set.
    pub rule_set_digest: Digest,
    /// Databases loaded.
    pub databases: u64,
}

/// A node start, stop or restart after a crash.
#[derive(Debug, Clone, Serialize)]
pub struct NodeEventRow {
    /// Node id.
    pub node: String,
    /// When.
    pub time: Timestamp,
    /// `started`, `stopped` or `resumed`.
    pub event: &'static str,
    /// Site.
    pub site: String,
    /// Version.
    pub version: String,
    /// Why it stopped, or what the restart found.
    pub detail: String,
    /// The configuration digest.
    pub config_digest: Option<Digest>,
}

/// A refused client or peer.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedRow {
    /// Node id.
    pub node: String,
    /// When.
    pub time: Timestamp,
    /// `client` or `peer`.
    pub subject: &'static str,
    /// Where: `allocate`, `connect`, `create-permission`, `channel-bind`, `send`.
    pub stage: &'static str,
    /// The allocation, if any.
    pub allocation: Option<String>,
    /// The address as written (a pseudonym unless the node records prefixes or addresses).
    pub pseudonym: String,
    /// The user id as written (a pseudonym), clients only.
    pub user: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// ASN.
    pub asn: Option<u32>,
    /// The rule that refused.
    pub rule: String,
}

/// One finding of the verification.
#[derive(Debug, Clone, Serialize)]
pub struct FindingRow {
    /// Node id.
    pub node: String,
    /// Directory name.
    pub dir: String,
    /// `failure`, `warning` or `info`.
    pub severity: Severity,
    /// The finding's kind (`record-edited`, ...).
    pub finding: String,
    /// Its fields, as `key=value` pairs.
    pub detail: String,
}

impl FindingRow {
    fn new(node: &str, dir: &str, f: &verify::Finding) -> Self {
        let value = serde_json::to_value(f).unwrap_or_default();
        let mut finding = String::new();
        let mut detail = Vec::new();
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                if k == "finding" {
                    finding = v.as_str().unwrap_or_default().to_owned();
                } else {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    detail.push(format!("{k}={v}"));
                }
            }
        }
        Self {
            node: node.to_owned(),
            dir: dir.to_owned(),
            severity: f.severity(),
            finding,
            detail: detail.join(" "),
        }
    }
}

/// A list kept to a limit, with the count of what did not fit.
#[derive(Debug, Clone, Serialize)]
pub struct List<T> {
    /// Entries in the period.
    pub total: u64,
    /// Entries not listed (beyond the limit).
    pub omitted: u64,
    /// The first entries, in record order.
    pub items: Vec<T>,
}

#[derive(Debug)]
struct Capped<T> {
    limit: usize,
    total: u64,
    items: Vec<T>,
}

impl<T> Capped<T> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            total: 0,
            items: Vec::new(),
        }
    }

    fn push(&mut self, item: T) {
        self.total += 1;
        if self.items.len() < self.limit {
            self.items.push(item);
        }
    }

    fn into_list(self) -> List<T> {
        List {
            total: self.total,
            omitted: self.total - self.items.len() as u64,
            items: self.items,
        }
    }
}

fn inside(region: &BTreeSet<String>, country: Option<&str>) -> bool {
    country.is_some_and(|c| region.contains(&c.to_ascii_uppercase()))
}

fn country_key(country: Option<&str>) -> String {
    country.map_or_else(|| UNKNOWN_COUNTRY.to_owned(), str::to_ascii_uppercase)
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

fn age_days(built: Timestamp, used: Timestamp) -> u64 {
    used.unix_millis().saturating_sub(built.unix_millis()) / 86_400_000
}

fn verify_command(opts: &ReportOptions) -> String {
    let mut cmd = String::from("eeaturn evidence verify");
    for t in &opts.trust_shown {
        cmd.push_str(" --trust ");
        cmd.push_str(&shell_word(t));
    }
    cmd.push_str(&format!(
        " --from {} --to {}",
        rfc3339_s(opts.from),
        rfc3339_s(opts.to)
    ));
    for d in &opts.dirs_shown {
        cmd.push(' ');
        cmd.push_str(&shell_word(d));
    }
    cmd
}

/// `2026-12-01T00:00:00Z`: what `--from`/`--to` accept.
fn rfc3339_s(t: Timestamp) -> String {
    let s = t.to_string();
    format!("{}Z", &s[..19])
}

fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=+@,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The country key of an unknown country.
pub const UNKNOWN_COUNTRY: &str = "??";
