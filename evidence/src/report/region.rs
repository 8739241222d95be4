//! The countries of the regions a policy names, to judge each endpoint independently of the
//! relay's own decision.
//!
//! The lists are those of `geo/regions/*.toml` (a test keeps them equal). A region the
//! report does not know contributes no country, so its endpoints show as outside: the report
//! errs towards listing, never towards a 100 % it cannot back.

use std::collections::BTreeSet;

/// Returns the ISO 3166-1 alpha-2 codes of the named regions (case-insensitive names).
pub fn region_countries(regions: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in regions {
        let list: &[&str] = match r.to_ascii_lowercase().as_str() {
            "eea" => EEA,
            "eu" => EU,
            "de" => &["DE"],
            _ => &[],
        };
        out.extend(list.iter().map(|c| (*c).to_owned()));
    }
    out
}

/// EU-27 with outermost regions and Åland (`geo/regions/eu.toml`).
pub(crate) const EU: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "GP", "GF", "MQ", "YT", "RE",
    "MF", "AX",
];

/// The EU plus Iceland, Liechtenstein and Norway (`geo/regions/eea.toml`).
pub(crate) const EEA: &[&str] = &[
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "GP", "GF", "MQ", "YT", "RE",
    "MF", "AX", "IS", "LI", "NO",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The country codes of a `geo/regions/*.toml` file, read without a TOML parser: every
    /// quoted two-letter code inside `countries = [ ... ]`.
    fn countries_of(file: &str) -> BTreeSet<String> {
        let path = format!("{}/../geo/regions/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let list = text.split("countries = [").nth(1).unwrap();
        let list = list.split(']').next().unwrap();
        list.lines()
            .map(|l| l.split('#').next().unwrap())
            .flat_map(|l| l.split(','))
            .map(|c| c.trim().trim_matches('"').to_owned())
            .filter(|c| c.len() == 2)
            .collect()
    }

    #[test]
    fn lists_equal_the_region_files() {
        for (file, name) in [("eea.toml", "EEA"), ("eu.toml", "eu"), ("de.toml", "de")] {
            assert_eq!(
                region_countries(&[name.to_owned()]),
                countries_of(file),
                "{file}"
            );
        }
        assert!(region_countries(&["mars".to_owned()]).is_empty());
    }
}
