//! Every visible string of the HTML report, one table per language, and the number and date
//! forms of each language.

use crate::time::Timestamp;

/// A report language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// German.
    De,
}

impl Lang {
    /// Parses `en` or `de`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "en" => Some(Self::En),
            "de" => Some(Self::De),
            _ => None,
        }
    }

    /// The BCP 47 tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::De => "de",
        }
    }

    /// The language's strings.
    pub fn text(self) -> &'static Text {
        match self {
            Self::En => &EN,
            Self::De => &DE,
        }
    }

    /// An integer with the language's thousands separator: `1,234,567` / `1.234.567`.
    pub fn int(self, n: u64) -> String {
        let sep = match self {
            Self::En => ',',
            Self::De => '.',
        };
        let digits = n.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(sep);
            }
            out.push(c);
        }
        out
    }

    /// A share as a percentage with up to two decimals, never rounded up to 100: anything
    /// short of everything shows as at most `99.99`.
    pub fn percent(self, part: u64, whole: u64) -> String {
        let (int, frac) = if whole == 0 || part >= whole {
            (100, 0)
        } else {
            let hundredths = (u128::from(part) * 10_000 / u128::from(whole)) as u64;
            (hundredths / 100, hundredths % 100)
        };
        let dec = match self {
            Self::En => '.',
            Self::De => ',',
        };
        let number = if frac == 0 {
            int.to_string()
        } else {
            format!("{int}{dec}{frac:02}")
        };
        // Both languages set a (narrow, non-breaking) space before the sign in this document.
        format!("{number}\u{202f}%")
    }

    /// A byte count in the largest fitting decimal unit, one decimal: `1.2 GB` / `1,2 GB`.
    pub fn bytes(self, n: u64) -> String {
        const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
        let mut unit = 0;
        let mut scaled = n as f64;
        while scaled >= 1000.0 && unit + 1 < UNITS.len() {
            scaled /= 1000.0;
            unit += 1;
        }
        if unit == 0 {
            return format!("{} B", self.int(n));
        }
        let s = format!("{scaled:.1}");
        let s = match self {
            Self::En => s,
            Self::De => s.replace('.', ","),
        };
        format!("{s}\u{a0}{}", UNITS[unit])
    }

    /// A date: `2026-12-06` / `06.12.2026`.
    pub fn date(self, t: Timestamp) -> String {
        self.day(&t.day())
    }

    /// A `YYYY-MM-DD` day in the language's form.
    pub fn day(self, day: &str) -> String {
        match (self, day.get(0..4), day.get(5..7), day.get(8..10)) {
            (Self::De, Some(y), Some(m), Some(d)) => format!("{d}.{m}.{y}"),
            _ => day.to_owned(),
        }
    }

    /// A time to the second, UTC: `2026-12-06 03:14:15 UTC` / `06.12.2026, 03:14:15 UTC`.
    pub fn time(self, t: Timestamp) -> String {
        let s = t.to_string();
        let clock = s.get(11..19).unwrap_or_default();
        match self {
            Self::En => format!("{} {clock} UTC", self.date(t)),
            Self::De => format!("{}, {clock} UTC", self.date(t)),
        }
    }
}

/// The strings of one language.
#[derive(Debug)]
#[allow(missing_docs)]
pub struct Text {
    pub title: &'static str,
    pub subtitle: &'static str,
    pub period: &'static str,
    pub generated: &'static str,
    pub page: &'static str,
    pub verdict_ok: &'static str,
    pub verdict_ok_sub: &'static str,
    pub verdict_outside: &'static str,
    pub verdict_outside_sub: &'static str,
    pub verify_failed: &'static str,
    pub verify_failed_sub: &'static str,
    pub summary: &'static str,
    pub nodes_and_sites: &'static str,
    pub allocations: &'static str,
    pub allocations_inside: &'static str,
    pub relayed_packets: &'static str,
    pub relayed_bytes: &'static str,
    pub bytes_inside: &'static str,
    pub client_refusals: &'static str,
    pub peer_refusals: &'static str,
    pub verification: &'static str,
    pub verified_yes: &'static str,
    pub verified_no: &'static str,
    pub keys: &'static str,
    pub retention: &'static str,
    pub oldest_record: &'static str,
    pub pruned_up_to: &'static str,
    pub never_pruned: &'static str,
    pub configured_retention: &'static str,
    pub days_unit: &'static str,
    pub day_unit: &'static str,
    pub not_stated: &'static str,
    pub within_retention_yes: &'static str,
    pub within_retention_no: &'static str,
    pub how_to_read: &'static str,
    pub how_to_read_body: &'static [&'static str],
    pub how_to_verify: &'static str,
    pub how_to_verify_body: &'static str,
    pub how_to_verify_keys: &'static str,
    pub how_to_verify_exit: &'static str,
    pub nodes: &'static str,
    pub node: &'static str,
    pub site: &'static str,
    pub version: &'static str,
    pub records: &'static str,
    pub verified: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub per_day: &'static str,
    pub day: &'static str,
    pub refusals: &'static str,
    pub chart_per_day: &'static str,
    pub refusals_by_rule: &'static str,
    pub refusals_by_country: &'static str,
    pub refusals_by_asn: &'static str,
    pub rule: &'static str,
    pub country: &'static str,
    pub asn: &'static str,
    pub clients: &'static str,
    pub peers: &'static str,
    pub total: &'static str,
    pub clients_by_country: &'static str,
    pub peers_by_country: &'static str,
    pub permissions: &'static str,
    pub in_region: &'static str,
    pub outside: &'static str,
    pub outside_none: &'static str,
    pub allocation: &'static str,
    pub client_country: &'static str,
    pub peer: &'static str,
    pub peer_country: &'static str,
    pub bytes: &'static str,
    pub packets: &'static str,
    pub databases: &'static str,
    pub db_type: &'static str,
    pub db_role: &'static str,
    pub built: &'static str,
    pub age_first: &'static str,
    pub age_last: &'static str,
    pub in_use: &'static str,
    pub policies: &'static str,
    pub time: &'static str,
    pub change: &'static str,
    pub regions: &'static str,
    pub rule_set: &'static str,
    pub node_events: &'static str,
    pub event: &'static str,
    pub detail: &'static str,
    pub refused_list: &'static str,
    pub refused_note: &'static str,
    pub subject: &'static str,
    pub stage: &'static str,
    pub pseudonym: &'static str,
    pub findings: &'static str,
    pub findings_none: &'static str,
    pub severity: &'static str,
    pub finding: &'static str,
    pub more_not_listed: &'static str,
    pub none: &'static str,
    pub unknown: &'static str,
    pub contents: &'static str,
}

impl Text {
    /// A word of the data (`started`, `client`, `failure`, ...) in this language.
    pub fn word<'a>(&self, w: &'a str) -> &'a str {
        let table: &[(&str, &str)] = if std::ptr::eq(self, &DE) {
            WORDS_DE
        } else {
            WORDS_EN
        };
        table.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| v)
    }
}

const WORDS_EN: &[(&str, &str)] = &[
    ("started", "started"),
    ("stopped", "stopped"),
    ("resumed", "restarted after an interruption"),
    ("client", "client"),
    ("peer", "peer"),
    ("start", "at start"),
    ("reload", "reload, unchanged"),
    ("change", "change"),
    ("country", "country"),
    ("asn", "ASN"),
    ("failure", "failure"),
    ("warning", "warning"),
    ("info", "note"),
];

const WORDS_DE: &[(&str, &str)] = &[
    ("started", "gestartet"),
    ("stopped", "beendet"),
    ("resumed", "nach Unterbrechung neu gestartet"),
    ("client", "Client"),
    ("peer", "Gegenstelle"),
    ("start", "beim Start"),
    ("reload", "neu geladen, unverändert"),
    ("change", "Änderung"),
    ("country", "Land"),
    ("asn", "ASN"),
    ("failure", "Fehler"),
    ("warning", "Warnung"),
    ("info", "Hinweis"),
    ("allocate", "Allocate"),
    ("connect", "Verbindungsaufbau"),
];

const EN: Text = Text {
    title: "Data residency report",
    subtitle: "TURN relay eeaturn: where relayed media traffic went, with signed evidence",
    period: "Period",
    generated: "Generated",
    page: "Page",
    verdict_ok: "100\u{202f}% of relayed traffic stayed inside the region",
    verdict_ok_sub: "Every relayed byte and every allocation had its client and all of its peers inside the permitted region.",
    verdict_outside: "Not all relayed traffic stayed inside the region",
    verdict_outside_sub: "Some traffic had an endpoint outside the region or one that cannot be placed. Each case is listed in the section \u{201c}Traffic outside the region\u{201d}.",
    verify_failed: "The evidence does NOT verify",
    verify_failed_sub: "The signed evidence was changed, is incomplete or is signed by a key that was not trusted. The figures below cannot be relied on. The findings are listed at the end of this report.",
    summary: "Summary",
    nodes_and_sites: "Relay nodes and sites",
    allocations: "Allocations",
    allocations_inside: "Allocations inside the region",
    relayed_packets: "Relayed packets",
    relayed_bytes: "Relayed bytes",
    bytes_inside: "Bytes inside the region",
    client_refusals: "Refused clients",
    peer_refusals: "Refused peers",
    verification: "Verification",
    verified_yes: "verified: signatures and hash chain intact",
    verified_no: "failed",
    keys: "Signing keys (SHA-256 fingerprints)",
    retention: "Retention",
    oldest_record: "Oldest record held",
    pruned_up_to: "Last deletion by retention",
    never_pruned: "none so far",
    configured_retention: "Configured retention",
    days_unit: "days",
    day_unit: "day",
    not_stated: "not stated in the evidence (nothing has been deleted yet)",
    within_retention_yes: "No record is older than the retention period allows.",
    within_retention_no: "Records older than the retention period are still held.",
    how_to_read: "How to read this report",
    how_to_read_body: &[
        "A relay passes the encrypted audio and video of a call between two endpoints when they cannot reach each other directly. An <b>allocation</b> is one such relayed session of a client; its <b>peers</b> are the endpoints it talks to.",
        "For every allocation and every peer the relay looked up the country and decided by its policy. Endpoints outside the region are <b>refused</b> before any media flows; refusals are normal and show the policy working.",
        "The key figure is the share of relayed bytes and allocations whose client and every peer were inside the region. It must be 100\u{202f}%. Countries are judged again here from the recorded country codes, independently of the relay's decision.",
        "Addresses are never shown: clients and peers appear only as daily pseudonyms (p1:\u{2026}) that cannot be linked to a person once the day's key has been deleted.",
    ],
    how_to_verify: "How to verify this yourself",
    how_to_verify_body: "With the evidence directories and the public signing key(s) received from the operator, run:",
    how_to_verify_keys: "Check that the fingerprint printed in each public key file equals:",
    how_to_verify_exit: "Exit code 0 means the evidence is intact; 1 means something was changed or removed.",
    nodes: "Relay nodes",
    node: "Node",
    site: "Site",
    version: "Version",
    records: "Records",
    verified: "Verified",
    yes: "yes",
    no: "no",
    per_day: "Allocations and refusals per day",
    day: "Day (UTC)",
    refusals: "Refusals",
    chart_per_day: "Allocations (blue) and refusals (orange) per day",
    refusals_by_rule: "Refusals by rule",
    refusals_by_country: "Refusals by country",
    refusals_by_asn: "Refusals by network (ASN)",
    rule: "Rule",
    country: "Country",
    asn: "ASN",
    clients: "Clients",
    peers: "Peers",
    total: "Total",
    clients_by_country: "Clients by country",
    peers_by_country: "Peers by country",
    permissions: "Permissions",
    in_region: "In region",
    outside: "Traffic outside the region",
    outside_none: "None: all relayed traffic had both endpoints inside the region.",
    allocation: "Allocation",
    client_country: "Client country",
    peer: "Peer",
    peer_country: "Peer country",
    bytes: "Bytes",
    packets: "Packets",
    databases: "GeoIP and ASN databases in force",
    db_type: "Database",
    db_role: "Use",
    built: "Built",
    age_first: "Age at first use (days)",
    age_last: "Age at last use (days)",
    in_use: "In use",
    policies: "Policy changes and reloads",
    time: "Time",
    change: "Change",
    regions: "Regions",
    rule_set: "Rule set (SHA-256)",
    node_events: "Node starts and stops",
    event: "Event",
    detail: "Detail",
    refused_list: "Refused attempts",
    refused_note: "Clients and peers appear only as pseudonyms, never as addresses.",
    subject: "Who",
    stage: "Stage",
    pseudonym: "Pseudonym",
    findings: "Verification findings",
    findings_none: "No findings.",
    severity: "Severity",
    finding: "Finding",
    more_not_listed: "more not listed (the CSV export lists them all)",
    none: "none",
    unknown: "unknown",
    contents: "Details",
};

const DE: Text = Text {
    title: "Bericht zur Datenresidenz",
    subtitle: "TURN-Relay eeaturn: wohin weitergeleiteter Mediendatenverkehr ging, mit signierten Nachweisen",
    period: "Zeitraum",
    generated: "Erstellt",
    page: "Seite",
    verdict_ok: "100\u{202f}% des weitergeleiteten Datenverkehrs blieben in der Region",
    verdict_ok_sub: "Bei jedem weitergeleiteten Byte und jeder Allokation lagen der Client und alle Gegenstellen in der zulässigen Region.",
    verdict_outside: "Nicht der gesamte weitergeleitete Datenverkehr blieb in der Region",
    verdict_outside_sub: "Ein Teil des Datenverkehrs hatte einen Endpunkt außerhalb der Region oder einen, der sich nicht zuordnen lässt. Jeder Fall ist im Abschnitt \u{201e}Datenverkehr außerhalb der Region\u{201c} aufgeführt.",
    verify_failed: "Die Nachweise sind NICHT unversehrt",
    verify_failed_sub: "Die signierten Nachweise wurden verändert, sind unvollständig oder mit einem nicht vertrauenswürdigen Schlüssel signiert. Auf die folgenden Zahlen ist kein Verlass. Die Befunde stehen am Ende dieses Berichts.",
    summary: "Zusammenfassung",
    nodes_and_sites: "Relay-Knoten und Standorte",
    allocations: "Allokationen",
    allocations_inside: "Allokationen in der Region",
    relayed_packets: "Weitergeleitete Pakete",
    relayed_bytes: "Weitergeleitete Bytes",
    bytes_inside: "Bytes in der Region",
    client_refusals: "Abgewiesene Clients",
    peer_refusals: "Abgewiesene Gegenstellen",
    verification: "Prüfung",
    verified_yes: "bestanden: Signaturen und Hash-Kette unversehrt",
    verified_no: "nicht bestanden",
    keys: "Signaturschlüssel (SHA-256-Fingerabdrücke)",
    retention: "Aufbewahrung",
    oldest_record: "Ältester vorhandener Eintrag",
    pruned_up_to: "Letzte Löschung nach Aufbewahrungsfrist",
    never_pruned: "bisher keine",
    configured_retention: "Eingestellte Aufbewahrungsfrist",
    days_unit: "Tage",
    day_unit: "Tag",
    not_stated: "in den Nachweisen nicht angegeben (bisher wurde nichts gelöscht)",
    within_retention_yes: "Kein Eintrag ist älter, als die Aufbewahrungsfrist erlaubt.",
    within_retention_no: "Es sind noch Einträge vorhanden, die älter sind als die Aufbewahrungsfrist.",
    how_to_read: "So lesen Sie diesen Bericht",
    how_to_read_body: &[
        "Ein Relay leitet die verschlüsselten Audio- und Videodaten eines Gesprächs zwischen zwei Endpunkten weiter, wenn diese einander nicht direkt erreichen. Eine <b>Allokation</b> ist eine solche weitergeleitete Sitzung eines Clients; ihre <b>Gegenstellen</b> sind die Endpunkte, mit denen er spricht.",
        "Für jede Allokation und jede Gegenstelle hat das Relay das Land ermittelt und nach seiner Richtlinie entschieden. Endpunkte außerhalb der Region werden <b>abgewiesen</b>, bevor Mediendaten fließen; Abweisungen sind normal und zeigen, dass die Richtlinie greift.",
        "Die entscheidende Kennzahl ist der Anteil der weitergeleiteten Bytes und Allokationen, bei denen der Client und alle Gegenstellen in der Region lagen. Er muss 100\u{202f}% betragen. Die Länder werden hier anhand der aufgezeichneten Ländercodes erneut geprüft, unabhängig von der Entscheidung des Relays.",
        "Adressen werden nie angezeigt: Clients und Gegenstellen erscheinen nur als tägliche Pseudonyme (p1:\u{2026}), die nach dem Löschen des Tagesschlüssels keiner Person mehr zugeordnet werden können.",
    ],
    how_to_verify: "So prüfen Sie selbst",
    how_to_verify_body: "Mit den Nachweisverzeichnissen und dem öffentlichen Signaturschlüssel (bzw. den Schlüsseln), die Sie vom Betreiber erhalten haben, führen Sie aus:",
    how_to_verify_keys: "Prüfen Sie, dass der Fingerabdruck in jeder öffentlichen Schlüsseldatei übereinstimmt mit:",
    how_to_verify_exit: "Rückgabewert 0 bedeutet: Die Nachweise sind unversehrt; 1 bedeutet: Es wurde etwas verändert oder entfernt.",
    nodes: "Relay-Knoten",
    node: "Knoten",
    site: "Standort",
    version: "Version",
    records: "Einträge",
    verified: "Geprüft",
    yes: "ja",
    no: "nein",
    per_day: "Allokationen und Abweisungen pro Tag",
    day: "Tag (UTC)",
    refusals: "Abweisungen",
    chart_per_day: "Allokationen (blau) und Abweisungen (orange) pro Tag",
    refusals_by_rule: "Abweisungen nach Regel",
    refusals_by_country: "Abweisungen nach Land",
    refusals_by_asn: "Abweisungen nach Netz (ASN)",
    rule: "Regel",
    country: "Land",
    asn: "ASN",
    clients: "Clients",
    peers: "Gegenstellen",
    total: "Gesamt",
    clients_by_country: "Clients nach Land",
    peers_by_country: "Gegenstellen nach Land",
    permissions: "Freigaben",
    in_region: "In der Region",
    outside: "Datenverkehr außerhalb der Region",
    outside_none: "Keiner: Bei allem weitergeleiteten Datenverkehr lagen beide Endpunkte in der Region.",
    allocation: "Allokation",
    client_country: "Land des Clients",
    peer: "Gegenstelle",
    peer_country: "Land der Gegenstelle",
    bytes: "Bytes",
    packets: "Pakete",
    databases: "Verwendete GeoIP- und ASN-Datenbanken",
    db_type: "Datenbank",
    db_role: "Zweck",
    built: "Erstellt",
    age_first: "Alter bei erster Nutzung (Tage)",
    age_last: "Alter bei letzter Nutzung (Tage)",
    in_use: "In Gebrauch",
    policies: "Richtlinienänderungen und Neuladen",
    time: "Zeitpunkt",
    change: "Änderung",
    regions: "Regionen",
    rule_set: "Regelwerk (SHA-256)",
    node_events: "Start und Stopp der Knoten",
    event: "Ereignis",
    detail: "Einzelheiten",
    refused_list: "Abgewiesene Versuche",
    refused_note: "Clients und Gegenstellen erscheinen nur als Pseudonyme, nie als Adressen.",
    subject: "Wer",
    stage: "Schritt",
    pseudonym: "Pseudonym",
    findings: "Befunde der Prüfung",
    findings_none: "Keine Befunde.",
    severity: "Schwere",
    finding: "Befund",
    more_not_listed: "weitere nicht aufgeführt (der CSV-Export enthält alle)",
    none: "keine",
    unknown: "unbekannt",
    contents: "Einzelheiten",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_language() {
        assert_eq!(Lang::En.int(1_234_567), "1,234,567");
        assert_eq!(Lang::De.int(1_234_567), "1.234.567");
        assert_eq!(Lang::De.int(999), "999");
        assert_eq!(Lang::En.percent(5, 5), "100\u{202f}%");
        assert_eq!(Lang::En.percent(99_999, 100_000), "99.99\u{202f}%");
        assert_eq!(Lang::De.percent(1, 3), "33,33\u{202f}%");
        assert_eq!(Lang::De.bytes(1_260_000), "1,3\u{a0}MB");
        assert_eq!(Lang::De.day("2026-12-06"), "06.12.2026");
    }
}
