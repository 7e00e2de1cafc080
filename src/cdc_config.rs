//! CDC source configuration: which Debezium topic feeds which canonical table, how its columns
//! map onto canonical names, which columns carry PII and what to do with them, and what a
//! truncate means. The defaults are the reference OLTP schema in `infra/sql/`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::Entity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiRule {
    /// Keep the last 4 characters, replace the rest with `*`.
    Mask,
    /// Salted SHA-256, hex.
    Hash,
    /// Remove the column.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TruncateMode {
    /// Log a warning and change nothing (the default: a truncate is usually an operator action).
    #[default]
    Ignore,
    /// Delete every silver row of the table older than the truncate.
    Delete,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcFile {
    /// Topic prefix `<server>.<schema>`: enables `<prefix>.orders`, `.order_items`, `.products`, `.customers`.
    pub prefix: Option<String>,
    #[serde(default)]
    pub truncate: TruncateMode,
    /// Salt of the `hash` PII rule (or ORDERLAKE_PII_SALT).
    pub pii_salt: Option<String>,
    #[serde(default)]
    pub tables: BTreeMap<String, CdcTableFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcTableFile {
    pub topic: Option<String>,
    /// canonical column → source column
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// source column → rule
    #[serde(default)]
    pub pii: BTreeMap<String, PiiRule>,
    /// Set false to not consume this table.
    pub enabled: Option<bool>,
}

/// One CDC topic feeding one canonical table.
#[derive(Debug, Clone, PartialEq)]
pub struct CdcTable {
    pub entity: Entity,
    pub topic: String,
    /// canonical column → source column
    pub columns: BTreeMap<String, String>,
    /// source column → rule
    pub pii: BTreeMap<String, PiiRule>,
}

impl CdcTable {
    pub fn source<'a>(&'a self, canonical: &'a str) -> &'a str {
        self.columns.get(canonical).map_or(canonical, String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CdcSettings {
    pub tables: Vec<CdcTable>,
    pub truncate: TruncateMode,
    pub pii_salt: String,
}

/// Canonical columns of each table (besides `updated_at`, which maps from the source's
/// `updated_at` when there is one, else from the change's source timestamp).
pub fn canonical_columns(e: Entity) -> &'static [&'static str] {
    match e {
        Entity::Orders => &["order_id", "customer_id", "country", "order_date", "status", "updated_at"],
        Entity::OrderItems => &["item_id", "order_id", "product_id", "quantity", "unit_price", "updated_at"],
        Entity::Products => &["product_id", "name", "category", "price", "updated_at"],
        Entity::Customers => &["customer_id", "name", "email", "country", "updated_at"],
    }
}

impl CdcSettings {
    /// Builds the CDC settings; `None` when no CDC source is configured.
    pub fn from_file(f: CdcFile, prefix_override: Option<String>) -> Result<Option<CdcSettings>> {
        let prefix = prefix_override.or(f.prefix).filter(|p| !p.is_empty());
        for name in f.tables.keys() {
            if Entity::from_table(name).is_none() {
                return Err(Error::Config(format!(
                    "cdc.tables.{name}: unknown table; use orders, order_items, products or customers"
                )));
            }
        }
        let mut tables = Vec::new();
        for e in Entity::ALL {
            let tf = f.tables.get(e.table());
            if tf.and_then(|t| t.enabled) == Some(false) {
                continue;
            }
            let topic = match (tf.and_then(|t| t.topic.clone()), &prefix) {
                (Some(t), _) => t,
                (None, Some(p)) => format!("{p}.{}", e.table()),
                (None, None) => continue,
            };
            let columns = tf.map(|t| t.columns.clone()).unwrap_or_default();
            for c in columns.keys() {
                if !canonical_columns(e).contains(&c.as_str()) {
                    return Err(Error::Config(format!(
                        "cdc.tables.{}.columns.{c}: not a column of {}; use one of {}",
                        e.table(),
                        e.table(),
                        canonical_columns(e).join(", ")
                    )));
                }
            }
            let pii = tf.map(|t| t.pii.clone()).unwrap_or_default();
            // Silver merges by the key: masked keys of different rows collide, a dropped one is
            // missing, and a hashed one would still arrive in the clear in the Kafka key, which
            // bronze keeps and deletes fall back on.
            let key = columns.get(e.key_column()).map_or(e.key_column(), String::as_str);
            if pii.contains_key(key) {
                return Err(Error::Config(format!(
                    "cdc.tables.{}.pii.{key}: {key} is the table's key, which PII rules cannot rewrite; \
                     key the table on a column without personal data (cdc.tables.{}.columns.{} = \"<column>\")",
                    e.table(),
                    e.table(),
                    e.key_column()
                )));
            }
            tables.push(CdcTable { entity: e, topic, columns, pii });
        }
        if tables.is_empty() {
            return Ok(None);
        }
        let pii_salt = std::env::var("ORDERLAKE_PII_SALT").ok().or(f.pii_salt).unwrap_or_default();
        if tables.iter().any(|t| t.pii.values().any(|r| *r == PiiRule::Hash)) && pii_salt.len() < 8 {
            return Err(Error::Config(
                "cdc.pii_salt / ORDERLAKE_PII_SALT: a 'hash' PII rule needs a salt of at least 8 characters".into(),
            ));
        }
        Ok(Some(CdcSettings { tables, truncate: f.truncate, pii_salt }))
    }

    pub fn table_for_topic(&self, topic: &str) -> Option<&CdcTable> {
        self.tables.iter().find(|t| t.topic == topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_enables_the_four_reference_tables() {
        let s = CdcSettings::from_file(CdcFile::default(), Some("shop.public".into())).unwrap().unwrap();
        let topics: Vec<&str> = s.tables.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["shop.public.orders", "shop.public.order_items", "shop.public.products", "shop.public.customers"]
        );
        assert!(CdcSettings::from_file(CdcFile::default(), None).unwrap().is_none());
    }

    #[test]
    fn mapping_and_pii_are_checked() {
        let f: CdcFile = toml::from_str(
            "prefix = \"db.s\"\n[tables.customers]\ncolumns = { customer_id = \"id\" }\npii = { card = \"mask\" }\n",
        )
        .unwrap();
        let s = CdcSettings::from_file(f, None).unwrap().unwrap();
        let c = s.tables.iter().find(|t| t.entity == Entity::Customers).unwrap();
        assert_eq!(c.source("customer_id"), "id");
        assert_eq!(c.source("email"), "email");
        assert_eq!(c.pii["card"], PiiRule::Mask);
        let bad: CdcFile = toml::from_str("prefix = \"p\"\n[tables.orders]\ncolumns = { nope = \"x\" }\n").unwrap();
        assert!(CdcSettings::from_file(bad, None).unwrap_err().to_string().contains("cdc.tables.orders.columns.nope"));
        let hash: CdcFile = toml::from_str("prefix = \"p\"\n[tables.customers]\npii = { email = \"hash\" }\n").unwrap();
        assert!(CdcSettings::from_file(hash, None).unwrap_err().to_string().contains("pii_salt"));
    }

    #[test]
    fn a_pii_rule_on_a_tables_key_is_refused() {
        let err = |toml: &str| CdcSettings::from_file(toml::from_str(toml).unwrap(), None).unwrap_err().to_string();
        let e = err("prefix = \"p\"\n[tables.customers]\npii = { customer_id = \"mask\" }\n");
        assert!(
            e.starts_with("configuration: cdc.tables.customers.pii.customer_id: customer_id is the table's key"),
            "{e}"
        );
        // Through the column map: the source column that feeds the key.
        let e = err(
            "prefix = \"p\"\n[tables.customers]\ncolumns = { customer_id = \"email\" }\npii = { email = \"drop\" }\n",
        );
        assert!(e.contains("cdc.tables.customers.pii.email: email is the table's key"), "{e}");
        // The column map moved the key elsewhere: the old key column is an ordinary one.
        let ok = "prefix = \"p\"\npii_salt = \"long enough\"\n[tables.customers]\ncolumns = { customer_id = \"id\" }\npii = { customer_id = \"hash\" }\n";
        assert!(CdcSettings::from_file(toml::from_str(ok).unwrap(), None).unwrap().is_some());
    }
}
