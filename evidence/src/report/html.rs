//! The report as one self-contained HTML document: inline CSS, charts as inline SVG drawn
//! here, no script, no font or URL from outside (a Content-Security-Policy in the page says
//! so to the browser), and a print stylesheet for A4.
//!
//! Everything that comes from records passes through [`esc`].

use std::fmt::Write as _;

use super::text::{Lang, Text};
use super::{List, Report, UNKNOWN_COUNTRY};
use crate::time::Timestamp;

/// Renders the report in `lang`.
pub fn render(report: &Report, lang: Lang) -> String {
    let t = lang.text();
    let mut h = Html {
        out: String::with_capacity(64 << 10),
        lang,
        t,
    };
    h.document(report);
    h.out
}

struct Html {
    out: String,
    lang: Lang,
    t: &'static Text,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

use Align::{Left, Right};

impl Html {
    fn document(&mut self, r: &Report) {
        let t = self.t;
        let period = self.period(r);
        let _ = write!(
            self.out,
            "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{} \u{2013} {}</title>\n<style>\n{CSS}\n@page {{ @top-left {{ content: \"{}\"; }} \
             @top-right {{ content: \"{}\"; }} @bottom-right {{ content: \"{} \" counter(page) \" / \" counter(pages); }} }}\n\
             </style>\n</head>\n<body>\n",
            self.lang.tag(),
            esc(t.title),
            esc(&period),
            css_string(t.title),
            css_string(&period),
            css_string(t.page),
        );
        self.header(r, &period);
        if !r.summary.verified {
            let _ = writeln!(
                self.out,
                "<div class=\"banner fail\" id=\"verification-failed\"><div class=\"mark\">\u{2716}</div><div><p class=\"big\">{}</p><p>{}</p></div></div>",
                esc(t.verify_failed),
                esc(t.verify_failed_sub)
            );
        }
        self.verdict(r);
        self.figures(r);
        self.summary_table(r);
        self.how_to_read();
        self.section_start("nodes", t.nodes);
        self.how_to_verify(r);
        self.nodes(r);
        self.section_start("traffic", t.per_day);
        self.days(r);
        self.countries(r);
        self.outside(r);
        self.section_start("refusals", t.refusals);
        self.refusals(r);
        self.section_start("databases", t.databases);
        self.databases(r);
        self.policies(r);
        self.node_events(r);
        self.section_start("refused", t.refused_list);
        self.refused(r);
        self.section_start("findings", t.findings);
        self.findings(r);
        self.out.push_str("</body>\n</html>\n");
    }

    fn period(&self, r: &Report) -> String {
        // `to` is exclusive: show the last day inside the period.
        let last = Timestamp::from_unix_millis(r.period.to.unix_millis().saturating_sub(1));
        format!(
            "{} \u{2013} {}",
            self.lang.date(r.period.from),
            self.lang.date(last)
        )
    }

    fn header(&mut self, r: &Report, period: &str) {
        let t = self.t;
        let _ = write!(
            self.out,
            "<header class=\"doc\">\n<p class=\"kicker\">eeaturn</p>\n<h1>{}</h1>\n<p class=\"sub\">{}</p>\n\
             <dl class=\"meta\"><div><dt>{}</dt><dd id=\"period\">{}</dd></div>\
             <div><dt>{}</dt><dd>{}</dd></div><div><dt>{}</dt><dd>{}</dd></div></dl>\n</header>\n",
            esc(t.title),
            esc(t.subtitle),
            esc(t.period),
            esc(period),
            esc(t.nodes_and_sites),
            esc(&self.node_list(r)),
            esc(t.generated),
            esc(&self.lang.time(r.generated_at)),
        );
    }

    fn node_list(&self, r: &Report) -> String {
        r.nodes
            .iter()
            .map(|n| {
                if n.site.is_empty() {
                    n.node.clone()
                } else {
                    format!("{} ({})", n.node, n.site)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn verdict(&mut self, r: &Report) {
        let t = self.t;
        let s = &r.summary;
        let (class, mark, head, sub) = if s.all_inside {
            ("ok", "\u{2714}", t.verdict_ok, t.verdict_ok_sub)
        } else {
            ("fail", "!", t.verdict_outside, t.verdict_outside_sub)
        };
        let dim = if s.verified { "" } else { " dim" };
        let _ = writeln!(
            self.out,
            "<div class=\"banner {class}{dim}\" id=\"verdict\"><div class=\"mark\">{mark}</div><div><p class=\"big\">{}</p><p>{}</p></div></div>",
            esc(head),
            esc(sub)
        );
    }

    fn figures(&mut self, r: &Report) {
        let t = self.t;
        let s = &r.summary;
        let l = self.lang;
        let cards = [
            (
                "fig-bytes-inside",
                t.bytes_inside,
                l.percent(s.bytes_inside, s.bytes),
                format!("{} / {}", l.bytes(s.bytes_inside), l.bytes(s.bytes)),
                s.bytes_inside == s.bytes,
            ),
            (
                "fig-allocations-inside",
                t.allocations_inside,
                l.percent(s.allocations_inside, s.allocations),
                format!("{} / {}", l.int(s.allocations_inside), l.int(s.allocations)),
                s.allocations_inside == s.allocations,
            ),
            (
                "fig-allocations",
                t.allocations,
                l.int(s.allocations),
                format!("{} {}", l.int(s.packets), noun(l, t.relayed_packets)),
                true,
            ),
            (
                "fig-refusals",
                t.refusals,
                l.int(s.client_refusals + s.peer_refusals),
                format!(
                    "{} {} \u{b7} {} {}",
                    l.int(s.client_refusals),
                    noun(l, t.clients),
                    l.int(s.peer_refusals),
                    noun(l, t.peers)
                ),
                true,
            ),
        ];
        self.out.push_str("<div class=\"figures\">\n");
        for (id, label, value, sub, good) in cards {
            let class = if good { "" } else { " bad" };
            let _ = writeln!(
                self.out,
                "<div class=\"figure{class}\"><p class=\"label\">{}</p><p class=\"value\" id=\"{id}\">{}</p><p class=\"subv\">{}</p></div>",
                esc(label),
                esc(&value),
                esc(&sub)
            );
        }
        self.out.push_str("</div>\n");
    }

    fn summary_table(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let s = &r.summary;
        let verification = if s.verified {
            format!(
                "<span class=\"good\">\u{2714} {}</span>",
                esc(t.verified_yes)
            )
        } else {
            format!(
                "<span class=\"badtext\">\u{2716} {} ({} {})</span>",
                esc(t.verified_no),
                l.int(s.failures),
                esc(t.findings)
            )
        };
        let keys = if s.key_fingerprints.is_empty() {
            esc(t.none)
        } else {
            s.key_fingerprints
                .iter()
                .map(|k| {
                    format!(
                        "<code class=\"fp\">sha256:{}</code>",
                        fingerprint(&k.to_hex())
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let retention = match s.retention_days {
            Some(1) => format!("1 {}", esc(t.day_unit)),
            Some(d) => format!("{} {}", l.int(d), esc(t.days_unit)),
            None => esc(t.not_stated),
        };
        let within = match s.within_retention {
            Some(true) => format!(
                "<br><span class=\"good\">{}</span>",
                esc(t.within_retention_yes)
            ),
            Some(false) => format!(
                "<br><span class=\"badtext\">{}</span>",
                esc(t.within_retention_no)
            ),
            None => String::new(),
        };
        let rows = [
            (
                t.relayed_bytes,
                format!("{} B ({})", l.int(s.bytes), l.bytes(s.bytes)),
            ),
            (t.relayed_packets, l.int(s.packets)),
            (t.verification, verification),
            (t.keys, keys),
            (
                t.oldest_record,
                s.oldest_record
                    .map_or_else(|| esc(t.none), |o| esc(&l.time(o))),
            ),
            (
                t.pruned_up_to,
                s.pruned_up_to
                    .map_or_else(|| esc(t.never_pruned), |o| esc(&l.time(o))),
            ),
            (t.configured_retention, format!("{retention}{within}")),
        ];
        let _ = write!(
            self.out,
            "<h2 class=\"inline\">{}</h2>\n<table class=\"kv\" id=\"summary\">\n",
            esc(t.summary)
        );
        for (k, v) in rows {
            let _ = writeln!(
                self.out,
                "<tr><th scope=\"row\">{}</th><td>{v}</td></tr>",
                esc(k)
            );
        }
        self.out.push_str("</table>\n");
    }

    fn how_to_read(&mut self) {
        let t = self.t;
        let _ = writeln!(
            self.out,
            "<aside class=\"box read\"><h3>{}</h3>",
            esc(t.how_to_read)
        );
        for p in t.how_to_read_body {
            // Our own strings, with <b> markup; nothing from records.
            let _ = writeln!(self.out, "<p>{p}</p>");
        }
        self.out.push_str("</aside>\n");
    }

    fn how_to_verify(&mut self, r: &Report) {
        let t = self.t;
        let _ = write!(
            self.out,
            "<aside class=\"box verify\" id=\"how-to-verify\"><h3>{}</h3>\n<p>{}</p>\n<pre>{}</pre>\n<p>{}</p>\n<ul>",
            esc(t.how_to_verify),
            esc(t.how_to_verify_body),
            esc(&r.verify_command),
            esc(t.how_to_verify_keys),
        );
        for k in &r.summary.key_fingerprints {
            let _ = write!(
                self.out,
                "<li><code class=\"fp\">sha256:{}</code></li>",
                fingerprint(&k.to_hex())
            );
        }
        let _ = write!(
            self.out,
            "</ul>\n<p>{}</p></aside>\n",
            esc(t.how_to_verify_exit)
        );
    }

    fn section_start(&mut self, id: &str, title: &str) {
        let _ = writeln!(
            self.out,
            "<section id=\"{id}\"><h2>{}</h2></section>",
            esc(title)
        );
    }

    fn nodes(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let rows = r
            .nodes
            .iter()
            .map(|n| {
                vec![
                    esc(&n.node),
                    esc(&n.site),
                    esc(&n.versions.iter().cloned().collect::<Vec<_>>().join(", ")),
                    l.int(n.records),
                    l.int(n.allocations),
                    l.int(n.refusals + n.peer_refusals),
                    l.int(n.bytes),
                    if n.verified {
                        format!("<span class=\"good\">\u{2714} {}</span>", esc(t.yes))
                    } else {
                        format!("<span class=\"badtext\">\u{2716} {}</span>", esc(t.no))
                    },
                    n.oldest_record
                        .map_or_else(String::new, |o| esc(&l.date(o))),
                ]
            })
            .collect();
        self.table(
            "nodes-table",
            &[
                (t.node, Left),
                (t.site, Left),
                (t.version, Left),
                (t.records, Right),
                (t.allocations, Right),
                (t.refusals, Right),
                (t.bytes, Right),
                (t.verified, Left),
                (t.oldest_record, Left),
            ],
            rows,
        );
    }

    fn days(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let _ = writeln!(
            self.out,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            day_chart(r, l),
            esc(t.chart_per_day)
        );
        let rows = r
            .days
            .iter()
            .map(|d| {
                vec![
                    esc(&l.day(&d.day)),
                    l.int(d.allocations),
                    l.int(d.refusals),
                    l.int(d.peer_refusals),
                    l.int(d.bytes),
                ]
            })
            .collect();
        self.table(
            "days-table",
            &[
                (t.day, Left),
                (t.allocations, Right),
                (t.client_refusals, Right),
                (t.peer_refusals, Right),
                (t.bytes, Right),
            ],
            rows,
        );
    }

    fn countries(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        for (id, title, list, count_label) in [
            (
                "clients-by-country",
                t.clients_by_country,
                &r.clients_by_country,
                t.allocations,
            ),
            (
                "peers-by-country",
                t.peers_by_country,
                &r.peers_by_country,
                t.permissions,
            ),
        ] {
            let _ = writeln!(self.out, "<h3>{}</h3>", esc(title));
            let rows = list
                .iter()
                .map(|c| {
                    vec![
                        self.country(&c.country),
                        if c.inside {
                            format!("<span class=\"good\">\u{2714} {}</span>", esc(t.yes))
                        } else {
                            format!("<span class=\"badtext\">\u{2716} {}</span>", esc(t.no))
                        },
                        l.int(c.count),
                        l.int(c.bytes),
                    ]
                })
                .collect();
            self.table(
                id,
                &[
                    (t.country, Left),
                    (t.in_region, Left),
                    (count_label, Right),
                    (t.bytes, Right),
                ],
                rows,
            );
        }
    }

    fn outside(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let _ = writeln!(self.out, "<h3 id=\"outside\">{}</h3>", esc(t.outside));
        if r.outside.total == 0 {
            let _ = writeln!(
                self.out,
                "<p class=\"good\">\u{2714} {}</p>",
                esc(t.outside_none)
            );
            return;
        }
        let rows = r
            .outside
            .items
            .iter()
            .map(|o| {
                vec![
                    esc(&l.time(o.time)),
                    esc(&o.node),
                    format!("<code>{}</code>", esc(&o.allocation)),
                    self.country_opt(o.client_country.as_deref()),
                    format!("<code>{}</code>", esc(&o.peer)),
                    self.country_opt(o.peer_country.as_deref()),
                    l.int(o.bytes),
                ]
            })
            .collect();
        self.table(
            "outside-table",
            &[
                (t.time, Left),
                (t.node, Left),
                (t.allocation, Left),
                (t.client_country, Left),
                (t.peer, Left),
                (t.peer_country, Left),
                (t.bytes, Right),
            ],
            rows,
        );
        self.more(&r.outside);
    }

    fn refusals(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let _ = writeln!(self.out, "<h3>{}</h3>", esc(t.refusals_by_rule));
        let _ = writeln!(self.out, "<figure>{}</figure>", rule_chart(r, l));
        let rows = r
            .refusals_by_rule
            .iter()
            .map(|x| {
                vec![
                    format!("<code>{}</code>", esc(&x.rule)),
                    l.int(x.clients),
                    l.int(x.peers),
                    l.int(x.clients + x.peers),
                ]
            })
            .collect();
        self.table(
            "refusals-by-rule",
            &[
                (t.rule, Left),
                (t.clients, Right),
                (t.peers, Right),
                (t.total, Right),
            ],
            rows,
        );
        let _ = writeln!(self.out, "<h3>{}</h3>", esc(t.refusals_by_country));
        let rows = r
            .refusals_by_country
            .iter()
            .map(|x| {
                vec![
                    self.country(&x.country),
                    l.int(x.clients),
                    l.int(x.peers),
                    l.int(x.clients + x.peers),
                ]
            })
            .collect();
        self.table(
            "refusals-by-country",
            &[
                (t.country, Left),
                (t.clients, Right),
                (t.peers, Right),
                (t.total, Right),
            ],
            rows,
        );
        let _ = writeln!(self.out, "<h3>{}</h3>", esc(t.refusals_by_asn));
        let rows = r
            .refusals_by_asn
            .iter()
            .map(|x| {
                vec![
                    x.asn.map_or_else(|| esc(t.unknown), |a| format!("AS{a}")),
                    l.int(x.clients),
                    l.int(x.peers),
                    l.int(x.clients + x.peers),
                ]
            })
            .collect();
        self.table(
            "refusals-by-asn",
            &[
                (t.asn, Left),
                (t.clients, Right),
                (t.peers, Right),
                (t.total, Right),
            ],
            rows,
        );
    }

    fn databases(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let rows = r
            .databases
            .iter()
            .map(|d| {
                vec![
                    esc(&d.node),
                    esc(t.word(d.role)),
                    esc(&d.database_type),
                    esc(&l.date(d.build_time)),
                    d.age_days_first_use.map_or_else(String::new, |a| l.int(a)),
                    d.age_days_last_use.map_or_else(String::new, |a| l.int(a)),
                    format!("<code class=\"hash\">{}</code>", d.sha256.to_hex()),
                ]
            })
            .collect();
        self.table(
            "databases-table",
            &[
                (t.node, Left),
                (t.db_role, Left),
                (t.db_type, Left),
                (t.built, Left),
                (t.age_first, Right),
                (t.age_last, Right),
                ("SHA-256", Left),
            ],
            rows,
        );
    }

    fn policies(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let _ = writeln!(self.out, "<h3>{}</h3>", esc(t.policies));
        let rows = r
            .policies
            .items
            .iter()
            .map(|p| {
                vec![
                    esc(&l.time(p.time)),
                    esc(&p.node),
                    esc(t.word(p.change)),
                    esc(&p.regions),
                    format!("<code class=\"hash\">{}</code>", p.rule_set_digest.to_hex()),
                ]
            })
            .collect();
        self.table(
            "policies-table",
            &[
                (t.time, Left),
                (t.node, Left),
                (t.change, Left),
                (t.regions, Left),
                (t.rule_set, Left),
            ],
            rows,
        );
        self.more(&r.policies);
    }

    fn node_events(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let _ = writeln!(self.out, "<h3>{}</h3>", esc(t.node_events));
        let rows = r
            .node_events
            .items
            .iter()
            .map(|e| {
                vec![
                    esc(&l.time(e.time)),
                    esc(&e.node),
                    esc(t.word(e.event)),
                    esc(&e.version),
                    esc(&e.detail),
                ]
            })
            .collect();
        self.table(
            "node-events-table",
            &[
                (t.time, Left),
                (t.node, Left),
                (t.event, Left),
                (t.version, Left),
                (t.detail, Left),
            ],
            rows,
        );
        self.more(&r.node_events);
    }

    fn refused(&mut self, r: &Report) {
        let t = self.t;
        let l = self.lang;
        let _ = writeln!(self.out, "<p class=\"note\">{}</p>", esc(t.refused_note));
        let rows = r
            .refused
            .items
            .iter()
            .map(|x| {
                vec![
                    esc(&l.time(x.time)),
                    esc(&x.node),
                    esc(t.word(x.subject)),
                    esc(t.word(x.stage)),
                    format!("<code>{}</code>", esc(&short(&x.pseudonym))),
                    self.country_opt(x.country.as_deref()),
                    x.asn.map_or_else(String::new, |a| format!("AS{a}")),
                    format!("<code>{}</code>", esc(&x.rule)),
                ]
            })
            .collect();
        self.table(
            "refused-table",
            &[
                (t.time, Left),
                (t.node, Left),
                (t.subject, Left),
                (t.stage, Left),
                (t.pseudonym, Left),
                (t.country, Left),
                (t.asn, Left),
                (t.rule, Left),
            ],
            rows,
        );
        self.more(&r.refused);
    }

    fn findings(&mut self, r: &Report) {
        let t = self.t;
        if r.findings.is_empty() {
            let _ = writeln!(
                self.out,
                "<p class=\"good\">\u{2714} {}</p>",
                esc(t.findings_none)
            );
            return;
        }
        let rows = r
            .findings
            .iter()
            .map(|f| {
                let sev = serde_json::to_value(f.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let cell = if sev == "failure" {
                    format!("<span class=\"badtext\">{}</span>", esc(t.word(&sev)))
                } else {
                    esc(t.word(&sev))
                };
                vec![
                    esc(&f.node),
                    cell,
                    format!("<code>{}</code>", esc(&f.finding)),
                    esc(&f.detail),
                ]
            })
            .collect();
        self.table(
            "findings-table",
            &[
                (t.node, Left),
                (t.severity, Left),
                (t.finding, Left),
                (t.detail, Left),
            ],
            rows,
        );
    }

    fn more<T>(&mut self, list: &List<T>) {
        if list.omitted > 0 {
            let _ = writeln!(
                self.out,
                "<p class=\"more\">\u{2026} {} {}</p>",
                self.lang.int(list.omitted),
                esc(self.t.more_not_listed)
            );
        }
    }

    fn country(&self, c: &str) -> String {
        if c == UNKNOWN_COUNTRY {
            format!("<i>{}</i>", esc(self.t.unknown))
        } else {
            esc(c)
        }
    }

    fn country_opt(&self, c: Option<&str>) -> String {
        self.country(c.unwrap_or(UNKNOWN_COUNTRY))
    }

    /// A table; cells are HTML already (escaped by the caller).
    fn table(&mut self, id: &str, head: &[(&str, Align)], rows: Vec<Vec<String>>) {
        if rows.is_empty() {
            let _ = writeln!(
                self.out,
                "<p class=\"empty\" id=\"{id}\">\u{2014} {} \u{2014}</p>",
                esc(self.t.none)
            );
            return;
        }
        let _ = write!(self.out, "<table class=\"data\" id=\"{id}\">\n<thead><tr>");
        for (h, a) in head {
            let class = if *a == Right { " class=\"num\"" } else { "" };
            let _ = write!(self.out, "<th scope=\"col\"{class}>{}</th>", esc(h));
        }
        self.out.push_str("</tr></thead>\n<tbody>\n");
        for row in rows {
            self.out.push_str("<tr>");
            for (cell, (_, a)) in row.iter().zip(head) {
                let class = if *a == Right { " class=\"num\"" } else { "" };
                let _ = write!(self.out, "<td{class}>{cell}</td>");
            }
            self.out.push_str("</tr>\n");
        }
        self.out.push_str("</tbody>\n</table>\n");
    }
}

/// A noun inside a sentence: lower case in English, as written in German.
fn noun(l: Lang, word: &str) -> String {
    match l {
        Lang::En => word.to_lowercase(),
        Lang::De => word.to_owned(),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A string inside a CSS `content: "..."` value.
fn css_string(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                let _ = write!(out, "\\{:x} ", c as u32);
            }
            '<' | '>' | '&' => {
                let _ = write!(out, "\\{:x} ", c as u32);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A fingerprint in groups of eight hex digits, so it can be compared by eye.
fn fingerprint(hex: &str) -> String {
    hex.as_bytes()
        .chunks(8)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\u{2009}")
}

/// A pseudonym shortened for the table (`p1:` + 12 hex digits + `…`); the CSV has it whole.
fn short(p: &str) -> String {
    if p.len() > 20 && p.is_char_boundary(15) {
        format!("{}\u{2026}", &p[..15])
    } else {
        p.to_owned()
    }
}

const BLUE: &str = "#2457a6";
const ORANGE: &str = "#d9822b";
const GREY: &str = "#8a94a6";

/// Bars per day: allocations and refusals (clients and peers) side by side.
fn day_chart(r: &Report, l: Lang) -> String {
    let (w, h) = (720.0_f64, 220.0_f64);
    let (left, right, top, bottom) = (56.0, 8.0, 12.0, 40.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = r
        .days
        .iter()
        .map(|d| d.allocations.max(d.refusals + d.peer_refusals))
        .max()
        .unwrap_or(0);
    let scale_max = nice_ceiling(max.max(1));
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(l.text().chart_per_day)
    );
    for i in 0..=4u64 {
        let v = scale_max * i / 4;
        let y = top + plot_h - plot_h * (v as f64) / (scale_max as f64);
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e3e7ee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" class=\"tick\">{}</text>",
            w - right,
            left - 6.0,
            y + 4.0,
            l.int(v)
        );
    }
    let n = r.days.len().max(1) as f64;
    let slot = plot_w / n;
    let bar = (slot * 0.38).clamp(0.5, 28.0);
    let label_every = (r.days.len() / 12).max(1);
    for (i, d) in r.days.iter().enumerate() {
        let x0 = left + slot * i as f64 + slot / 2.0;
        for (k, (value, color)) in [
            (d.allocations, BLUE),
            (d.refusals + d.peer_refusals, ORANGE),
        ]
        .into_iter()
        .enumerate()
        {
            let bh = plot_h * value as f64 / scale_max as f64;
            let x = if k == 0 { x0 - bar } else { x0 };
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{}: {}</title></rect>",
                top + plot_h - bh,
                esc(&l.day(&d.day)),
                l.int(value)
            );
        }
        if i % label_every == 0 {
            let day = l.day(&d.day);
            let label = match l {
                Lang::De => day.get(0..6).unwrap_or(&day).to_owned(),
                Lang::En => day.get(5..).unwrap_or(&day).to_owned(),
            };
            let _ = write!(
                s,
                "<text x=\"{x0:.1}\" y=\"{:.1}\" text-anchor=\"middle\" class=\"tick\">{}</text>",
                top + plot_h + 16.0,
                esc(&label)
            );
        }
    }
    let _ = write!(
        s,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{GREY}\"/>",
        w - right,
        top + plot_h,
        top + plot_h
    );
    // Legend.
    let t = l.text();
    let ly = h - 8.0;
    let _ = write!(
        s,
        "<rect x=\"{left}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{BLUE}\"/><text x=\"{}\" y=\"{ly}\" class=\"legend\">{}</text>\
         <rect x=\"{}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{ORANGE}\"/><text x=\"{}\" y=\"{ly}\" class=\"legend\">{}</text>",
        ly - 9.0,
        left + 14.0,
        esc(t.allocations),
        left + 160.0,
        ly - 9.0,
        left + 174.0,
        esc(t.refusals),
    );
    s.push_str("</svg>");
    s
}

/// Horizontal bars: refusals per rule, clients and peers stacked.
fn rule_chart(r: &Report, l: Lang) -> String {
    let rows = &r.refusals_by_rule;
    let row_h = 26.0_f64;
    let (w, label_w, top) = (720.0_f64, 200.0_f64, 8.0_f64);
    let h = top * 2.0 + row_h * rows.len().max(1) as f64 + 18.0;
    let max = rows
        .iter()
        .map(|x| x.clients + x.peers)
        .max()
        .unwrap_or(0)
        .max(1);
    let bar_w = w - label_w - 90.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(l.text().refusals_by_rule)
    );
    for (i, x) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let wc = bar_w * x.clients as f64 / max as f64;
        let wp = bar_w * x.peers as f64 / max as f64;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"label\">{}</text>\
             <rect x=\"{label_w}\" y=\"{:.1}\" width=\"{wc:.1}\" height=\"16\" fill=\"{BLUE}\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{wp:.1}\" height=\"16\" fill=\"{ORANGE}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{}</text>",
            label_w - 8.0,
            y + 13.0,
            esc(&x.rule),
            y + 1.0,
            label_w + wc,
            y + 1.0,
            label_w + wc + wp + 6.0,
            y + 13.0,
            l.int(x.clients + x.peers)
        );
    }
    let t = l.text();
    let ly = h - 6.0;
    let _ = write!(
        s,
        "<rect x=\"{label_w}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{BLUE}\"/><text x=\"{:.1}\" y=\"{ly}\" class=\"legend\">{}</text>\
         <rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{ORANGE}\"/><text x=\"{:.1}\" y=\"{ly}\" class=\"legend\">{}</text>",
        ly - 9.0,
        label_w + 14.0,
        esc(t.clients),
        label_w + 120.0,
        ly - 9.0,
        label_w + 134.0,
        esc(t.peers),
    );
    s.push_str("</svg>");
    s
}

/// Four times the smallest step of 1, 2 or 5 × 10ⁿ with four steps reaching `n`: the
/// axis top, so that the four grid lines fall on round numbers.
fn nice_ceiling(n: u64) -> u64 {
    let mut base = 1u64;
    loop {
        for m in [1, 2, 5] {
            let step = base.saturating_mul(m);
            if step.saturating_mul(4) >= n {
                return step.saturating_mul(4);
            }
        }
        base = base.saturating_mul(10);
    }
}

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const CSS: &str = r#"
:root { --ink: #1b2330; --muted: #5b6678; --rule: #d8dee8; --soft: #f4f6fa; --blue: #2457a6;
        --green: #1e7a46; --green-bg: #e8f5ee; --red: #b3261e; --red-bg: #fdecea; }
* { box-sizing: border-box; }
html { font-family: "Source Sans 3", "Source Sans Pro", "Segoe UI", "Noto Sans", "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: var(--ink); font-size: 10.5pt; line-height: 1.45; }
body { max-width: 190mm; margin: 0 auto; padding: 10mm 0 16mm; }
h1 { font-size: 24pt; line-height: 1.15; margin: 0 0 2mm; font-weight: 700; letter-spacing: -0.01em; }
h2 { font-size: 15pt; margin: 9mm 0 3mm; padding-bottom: 1.5mm; border-bottom: 2px solid var(--ink); }
h2.inline { margin-top: 7mm; }
h3 { font-size: 11.5pt; margin: 6mm 0 2mm; }
p { margin: 0 0 2mm; }
code { font-family: "DejaVu Sans Mono", "Noto Sans Mono", Menlo, Consolas, monospace; font-size: 8.5pt; }
code.hash { font-size: 7pt; word-break: break-all; }
code.fp { font-size: 8.5pt; }
header.doc { border-bottom: 1px solid var(--rule); padding-bottom: 4mm; margin-bottom: 5mm; }
.kicker { text-transform: uppercase; letter-spacing: 0.14em; font-size: 8.5pt; color: var(--blue); font-weight: 700; margin: 0 0 1mm; }
.sub { color: var(--muted); margin-bottom: 4mm; }
dl.meta { display: grid; grid-template-columns: auto 1fr; gap: 0.8mm 6mm; margin: 0; }
dl.meta div { display: contents; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; font-weight: 600; }
.banner { display: flex; gap: 5mm; align-items: center; border-radius: 3mm; padding: 5mm 6mm; margin: 4mm 0; border: 1.5px solid; }
.banner .mark { flex: none; width: 14mm; height: 14mm; border-radius: 50%; display: flex; align-items: center;
                justify-content: center; font-size: 20pt; font-weight: 700; color: #fff; }
.banner .big { font-size: 17pt; font-weight: 700; line-height: 1.2; margin-bottom: 1.5mm; }
.banner p { margin: 0; }
.banner.ok { background: var(--green-bg); border-color: var(--green); }
.banner.ok .mark { background: var(--green); }
.banner.ok .big { color: var(--green); }
.banner.fail { background: var(--red-bg); border-color: var(--red); }
.banner.fail .mark { background: var(--red); }
.banner.fail .big { color: var(--red); }
.banner.dim { opacity: 0.55; }
.figures { display: grid; grid-template-columns: repeat(4, 1fr); gap: 3mm; margin: 4mm 0; }
.figure { border: 1px solid var(--rule); border-radius: 2mm; padding: 3mm 3.5mm; background: var(--soft); }
.figure .label { font-size: 8.5pt; color: var(--muted); margin: 0 0 1mm; min-height: 2.6em; }
.figure .value { font-size: 18pt; font-weight: 700; margin: 0; font-variant-numeric: tabular-nums; white-space: nowrap; }
.figure .subv { font-size: 8pt; color: var(--muted); margin: 0.5mm 0 0; }
.figure.bad { background: var(--red-bg); border-color: var(--red); }
.figure.bad .value { color: var(--red); }
table { border-collapse: collapse; width: 100%; margin: 2mm 0 4mm; }
table.kv th { text-align: left; font-weight: 400; color: var(--muted); width: 38%; vertical-align: top; padding: 1.4mm 3mm 1.4mm 0; border-bottom: 1px solid var(--rule); }
table.kv td { padding: 1.4mm 0; border-bottom: 1px solid var(--rule); }
table.data { font-size: 9pt; }
table.data th { text-align: left; font-weight: 600; border-bottom: 1.5px solid var(--ink); padding: 1.2mm 2mm; vertical-align: bottom; }
table.data td { padding: 1mm 2mm; border-bottom: 1px solid var(--rule); vertical-align: top; }
table.data tbody tr:nth-child(even) td { background: #fafbfd; }
.num { text-align: right !important; font-variant-numeric: tabular-nums; white-space: nowrap; }
.good { color: var(--green); }
.badtext { color: var(--red); font-weight: 600; }
.box { border-radius: 2mm; padding: 4mm 5mm; margin: 5mm 0; }
.box h3 { margin-top: 0; }
.box.read { background: #eef3fb; border-left: 4px solid var(--blue); }
.box.verify { background: var(--soft); border-left: 4px solid var(--ink); }
.box pre { background: #fff; border: 1px solid var(--rule); padding: 3mm; white-space: pre-wrap; word-break: break-all;
           font-family: "DejaVu Sans Mono", "Noto Sans Mono", Menlo, Consolas, monospace; font-size: 8.5pt; margin: 2mm 0 3mm; }
.box ul { margin: 0 0 2mm; padding-left: 5mm; }
figure { margin: 2mm 0 4mm; }
figcaption { font-size: 8.5pt; color: var(--muted); }
svg.chart { width: 100%; height: auto; display: block; font-family: inherit; }
svg .tick { font-size: 10px; fill: #5b6678; }
svg .legend, svg .label, svg .value { font-size: 11px; fill: #1b2330; }
.more, .note, .empty { color: var(--muted); font-size: 9pt; }
section h2 { margin-top: 10mm; }
@page { size: A4; margin: 18mm 14mm 16mm;
        @top-left { font-size: 8pt; color: #5b6678; }
        @top-right { font-size: 8pt; color: #5b6678; }
        @bottom-right { font-size: 8pt; color: #5b6678; } }
@media print {
  html { font-size: 10pt; }
  body { max-width: none; padding: 0; }
  section { break-before: page; }
  section h2 { margin-top: 0; }
  h2, h3 { break-after: avoid; }
  tr, .figure, .banner, .box, figure { break-inside: avoid; }
  thead { display: table-header-group; }
  .banner, .figure, .box, table.data tbody tr:nth-child(even) td { print-color-adjust: exact; -webkit-print-color-adjust: exact; }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>\"x\" & 'y'"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn chart_scale_is_round() {
        assert_eq!(nice_ceiling(1), 4);
        assert_eq!(nice_ceiling(7), 8);
        assert_eq!(nice_ceiling(9), 20);
        assert_eq!(nice_ceiling(33), 40);
        assert_eq!(nice_ceiling(401), 800);
    }
}
