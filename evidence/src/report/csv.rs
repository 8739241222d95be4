//! The report as CSV: one table per file, a header row, RFC 4180 quoting (the `csv` crate),
//! UTF-8. Numbers are plain digits and times RFC 3339 UTC, for spreadsheets and scripts.

use std::io::Write;

use super::Report;
use crate::Error;

/// The tables, in the order of the report; each is written to `<name>.csv`.
pub const TABLES: &[&str] = &[
    "summary",
    "nodes",
    "days",
    "refusals_by_country",
    "refusals_by_asn",
    "refusals_by_rule",
    "clients_by_country",
    "peers_by_country",
    "outside",
    "databases",
    "policies",
    "node_events",
    "refused",
    "findings",
];

/// Writes table `name` of the report to `out`.
///
/// # Errors
///
/// Returns [`Error::Invalid`] for a name not in [`TABLES`], [`Error::Corrupt`] if writing
/// fails (the message names the table).
pub fn write_table(report: &Report, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let rows = rows(report, name).ok_or_else(|| {
        Error::Invalid(format!("no table {name:?}; tables: {}", TABLES.join(", ")))
    })?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    for row in rows {
        w.write_record(&row)
            .map_err(|e| Error::Corrupt(format!("writing table {name}: {e}")))?;
    }
    w.flush()
        .map_err(|e| Error::Corrupt(format!("writing table {name}: {e}")))?;
    Ok(())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn rows(r: &Report, name: &str) -> Option<Vec<Vec<String>>> {
    let head = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut out = Vec::new();
    match name {
        "summary" => {
            let s = &r.summary;
            out.push(head(&["key", "value"]));
            let kv = [
                ("period_from", r.period.from.to_string()),
                ("period_to", r.period.to.to_string()),
                ("generated_at", r.generated_at.to_string()),
                ("nodes", s.nodes.to_string()),
                ("sites", s.sites.join(";")),
                ("allocations", s.allocations.to_string()),
                ("allocations_inside", s.allocations_inside.to_string()),
                (
                    "allocations_inside_share",
                    s.allocations_inside_share.to_string(),
                ),
                ("packets", s.packets.to_string()),
                ("bytes", s.bytes.to_string()),
                ("bytes_inside", s.bytes_inside.to_string()),
                ("bytes_inside_share", s.bytes_inside_share.to_string()),
                ("all_inside", s.all_inside.to_string()),
                ("client_refusals", s.client_refusals.to_string()),
                ("peer_refusals", s.peer_refusals.to_string()),
                ("verified", s.verified.to_string()),
                ("failures", s.failures.to_string()),
                (
                    "key_fingerprints",
                    s.key_fingerprints
                        .iter()
                        .map(|k| k.to_hex())
                        .collect::<Vec<_>>()
                        .join(";"),
                ),
                ("oldest_record", opt(s.oldest_record)),
                ("pruned_up_to", opt(s.pruned_up_to)),
                ("retention_days", opt(s.retention_days)),
                ("within_retention", opt(s.within_retention)),
                ("verify_command", r.verify_command.clone()),
            ];
            out.extend(kv.into_iter().map(|(k, v)| vec![k.to_owned(), v]));
        }
        "nodes" => {
            out.push(head(&[
                "node",
                "dir",
                "site",
                "versions",
                "records",
                "allocations",
                "client_refusals",
                "peer_refusals",
                "packets",
                "bytes",
                "verified",
                "failures",
                "key_fingerprints",
                "oldest_record",
                "newest_record",
                "pruned_up_to_seq",
                "pruned_at",
                "retention_s",
            ]));
            for n in &r.nodes {
                out.push(vec![
                    n.node.clone(),
                    n.dir.clone(),
                    n.site.clone(),
                    n.versions.iter().cloned().collect::<Vec<_>>().join(";"),
                    n.records.to_string(),
                    n.allocations.to_string(),
                    n.refusals.to_string(),
                    n.peer_refusals.to_string(),
                    n.packets.to_string(),
                    n.bytes.to_string(),
                    n.verified.to_string(),
                    n.failures.to_string(),
                    n.key_fingerprints
                        .iter()
                        .map(|k| k.to_hex())
                        .collect::<Vec<_>>()
                        .join(";"),
                    opt(n.oldest_record),
                    opt(n.newest_record),
                    opt(n.pruned_up_to_seq),
                    opt(n.pruned_at),
                    opt(n.retention_s),
                ]);
            }
        }
        "days" => {
            out.push(head(&[
                "day",
                "allocations",
                "client_refusals",
                "peer_refusals",
                "bytes",
            ]));
            for d in &r.days {
                out.push(vec![
                    d.day.clone(),
                    d.allocations.to_string(),
                    d.refusals.to_string(),
                    d.peer_refusals.to_string(),
                    d.bytes.to_string(),
                ]);
            }
        }
        "refusals_by_country" => {
            out.push(head(&["country", "clients", "peers"]));
            for x in &r.refusals_by_country {
                out.push(vec![
                    x.country.clone(),
                    x.clients.to_string(),
                    x.peers.to_string(),
                ]);
            }
        }
        "refusals_by_asn" => {
            out.push(head(&["asn", "clients", "peers"]));
            for x in &r.refusals_by_asn {
                out.push(vec![opt(x.asn), x.clients.to_string(), x.peers.to_string()]);
            }
        }
        "refusals_by_rule" => {
            out.push(head(&["rule", "clients", "peers"]));
            for x in &r.refusals_by_rule {
                out.push(vec![
                    x.rule.clone(),
                    x.clients.to_string(),
                    x.peers.to_string(),
                ]);
            }
        }
        "clients_by_country" | "peers_by_country" => {
            let list = if name == "clients_by_country" {
                &r.clients_by_country
            } else {
                &r.peers_by_country
            };
            out.push(head(&["country", "inside", "count", "bytes"]));
            for c in list {
                out.push(vec![
                    c.country.clone(),
                    c.inside.to_string(),
                    c.count.to_string(),
                    c.bytes.to_string(),
                ]);
            }
        }
        "outside" => {
            out.push(head(&[
                "node",
                "time",
                "allocation",
                "client_country",
                "peer",
                "peer_country",
                "packets",
                "bytes",
                "known",
            ]));
            for o in &r.outside.items {
                out.push(vec![
                    o.node.clone(),
                    o.time.to_string(),
                    o.allocation.clone(),
                    opt(o.client_country.as_deref()),
                    o.peer.clone(),
                    opt(o.peer_country.as_deref()),
                    o.packets.to_string(),
                    o.bytes.to_string(),
                    o.known.to_string(),
                ]);
            }
        }
        "databases" => {
            out.push(head(&[
                "node",
                "type",
                "database_type",
                "build_time",
                "sha256",
                "loaded",
                "first_used",
                "last_used",
                "age_days_first_use",
                "age_days_last_use",
            ]));
            for d in &r.databases {
                out.push(vec![
                    d.node.clone(),
                    d.role.to_owned(),
                    d.database_type.clone(),
                    d.build_time.to_string(),
                    d.sha256.to_hex(),
                    d.loaded.to_string(),
                    opt(d.first_used),
                    opt(d.last_used),
                    opt(d.age_days_first_use),
                    opt(d.age_days_last_use),
                ]);
            }
        }
        "policies" => {
            out.push(head(&[
                "node",
                "time",
                "change",
                "regions",
                "rule_set_digest",
                "databases",
            ]));
            for p in &r.policies.items {
                out.push(vec![
                    p.node.clone(),
                    p.time.to_string(),
                    p.change.to_owned(),
                    p.regions.clone(),
                    p.rule_set_digest.to_hex(),
                    p.databases.to_string(),
                ]);
            }
        }
        "node_events" => {
            out.push(head(&[
                "node",
                "time",
                "event",
                "site",
                "version",
                "detail",
                "config_digest",
            ]));
            for e in &r.node_events.items {
                out.push(vec![
                    e.node.clone(),
                    e.time.to_string(),
                    e.event.to_owned(),
                    e.site.clone(),
                    e.version.clone(),
                    e.detail.clone(),
                    opt(e.config_digest.map(|d| d.to_hex())),
                ]);
            }
        }
        "refused" => {
            out.push(head(&[
                "node",
                "time",
                "subject",
                "stage",
                "allocation",
                "pseudonym",
                "user",
                "country",
                "asn",
                "rule",
            ]));
            for x in &r.refused.items {
                out.push(vec![
                    x.node.clone(),
                    x.time.to_string(),
                    x.subject.to_owned(),
                    x.stage.to_owned(),
                    opt(x.allocation.as_deref()),
                    x.pseudonym.clone(),
                    opt(x.user.as_deref()),
                    opt(x.country.as_deref()),
                    opt(x.asn),
                    x.rule.clone(),
                ]);
            }
        }
        "findings" => {
            out.push(head(&["node", "dir", "severity", "finding", "detail"]));
            for f in &r.findings {
                let sev = serde_json::to_value(f.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                out.push(vec![
                    f.node.clone(),
                    f.dir.clone(),
                    sev,
                    f.finding.clone(),
                    f.detail.clone(),
                ]);
            }
        }
        _ => return None,
    }
    Some(out)
}
