//! The named regions, compiled in from the reviewed files in `geo/regions/`.

use serde::Deserialize;

use crate::policy::CountryCode;

/// Names of the built-in regions.
pub(super) const NAMES: &[&str] = &["eea", "eu", "de"];

/// Returns the countries of a built-in region.
pub(super) fn countries(name: &str) -> Option<Vec<CountryCode>> {
    let text = match name {
        "eea" => include_str!("../../geo/regions/eea.toml"),
        "eu" => include_str!("../../geo/regions/eu.toml"),
        "de" => include_str!("../../geo/regions/de.toml"),
        _ => return None,
    };
    let file: RegionFile = toml::from_str(text).ok()?;
    file.countries
        .iter()
        .map(|c| CountryCode::parse(c))
        .collect()
}

/// The part of a region file the relay needs; the other keys document the data.
#[derive(Deserialize)]
struct RegionFile {
    countries: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_regions_parse() {
        let eea = countries("eea").unwrap();
        let eu = countries("eu").unwrap();
        assert_eq!(
            eu.len(),
            27 + 6 + 1,
            "EU-27, the outermost regions with own codes, and Åland"
        );
        assert_eq!(eea.len(), eu.len() + 3);
        for c in [
            "IS", "LI", "NO", "GR", "AX", "GP", "GF", "MQ", "YT", "RE", "MF", "DE", "FR",
        ] {
            assert!(eea.contains(&CountryCode::parse(c).unwrap()), "{c}");
        }
        for c in ["CH", "GB", "US", "EL", "UK"] {
            assert!(!eea.contains(&CountryCode::parse(c).unwrap()), "{c}");
        }
        assert_eq!(
            countries("de").unwrap(),
            vec![CountryCode::parse("DE").unwrap()]
        );
    }
}
